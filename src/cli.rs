//! The command line: `serve`, `create-user`, `check-config`.

use std::{path::PathBuf, process::ExitCode};

use clap::{Args, Parser, Subcommand};

use crate::{
    config::Config,
    service::{Services, accounts::NewAccount},
    storage::Storage,
};

/// Exit code for a configuration that cannot be used.
const EXIT_BAD_CONFIG: u8 = 2;

#[derive(Parser)]
#[command(name = "myelin", version, about = "Myelin, a Matrix homeserver")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the homeserver until SIGINT or SIGTERM.
    Serve(ConfigArg),
    /// Create an account directly in the database (the server must be stopped).
    CreateUser {
        /// Localpart of the new user, e.g. `alice` for @alice:your.server.
        name: String,
        /// Make the user a server administrator.
        #[arg(long)]
        admin: bool,
        /// The password; asked for on the terminal (or read from stdin) when left out.
        #[arg(long)]
        password: Option<String>,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Load and validate the configuration, print a summary, and exit.
    CheckConfig(ConfigArg),
    /// Ask the running server's health endpoint; exit 0 when it answers OK (for container checks).
    Healthcheck(ConfigArg),
}

#[derive(Args)]
struct ConfigArg {
    /// TOML configuration file; `MYELIN_*` environment variables override it.
    #[arg(long, short)]
    config: Option<PathBuf>,
}

impl ConfigArg {
    fn load(&self) -> Result<Config, ExitCode> {
        Config::load(self.config.as_deref(), std::env::vars()).map_err(|e| {
            eprintln!("myelin: invalid configuration: {e}");
            ExitCode::from(EXIT_BAD_CONFIG)
        })
    }
}

pub fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Serve(arg) => serve(&arg),
        Command::CreateUser { name, admin, password, config } => create_user(&config, &name, admin, password),
        Command::Healthcheck(arg) => arg.load().and_then(|config| healthcheck(&config)),
        Command::CheckConfig(arg) => arg.load().map(|config| {
            println!(
                "configuration OK: server_name {}, client API on {}, database at {}, registration {}",
                config.server_name,
                config.listen.client,
                config.database.path.display(),
                if config.registration.enabled { "open" } else { "closed" },
            );
        }),
    };
    result.map_or_else(|code| code, |()| ExitCode::SUCCESS)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("starting the async runtime")
}

fn serve(arg: &ConfigArg) -> Result<(), ExitCode> {
    let config = arg.load()?;
    crate::logging::init(&config.log);
    runtime().block_on(crate::server::serve(config)).map_err(|e| {
        tracing::error!("{e}");
        eprintln!("myelin: {e}");
        ExitCode::FAILURE
    })
}

fn create_user(arg: &ConfigArg, name: &str, admin: bool, password: Option<String>) -> Result<(), ExitCode> {
    let config = arg.load()?;
    let fail = |message: String| {
        eprintln!("myelin: {message}");
        ExitCode::FAILURE
    };
    let password = match password {
        Some(password) => password,
        None => read_password().map_err(|e| fail(format!("reading the password: {e}")))?,
    };
    if password.is_empty() {
        return Err(fail("the password must not be empty".into()));
    }
    let storage = Storage::open(&config.database).map_err(|e| fail(e.to_string()))?;
    let registered = runtime()
        .block_on(async {
            let services = Services::new(config, storage).await?;
            let user_id = services.accounts.user_id_for_registration(name)?;
            let account = NewAccount { user_id: Some(user_id), password: Some(password), admin, ..Default::default() };
            let registered = services.accounts.register(account).await?;
            services.auto_join(&registered.user_id).await;
            Ok::<_, crate::error::Error>(registered)
        })
        .map_err(|e| fail(e.to_string()))?;
    println!("created {}{}", registered.user_id, if admin { " (admin)" } else { "" });
    Ok(())
}

/// `GET /health` on the client listener (a wildcard address is asked on loopback), within 5 s.
fn healthcheck(config: &Config) -> Result<(), ExitCode> {
    use std::{
        io::{Read, Write},
        net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream},
        time::Duration,
    };
    let mut address = config.listen.client;
    if address.ip().is_unspecified() {
        let loopback = match address.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        };
        address = SocketAddr::new(loopback, address.port());
    }
    let timeout = Duration::from_secs(5);
    let ask = || -> std::io::Result<String> {
        let mut stream = TcpStream::connect_timeout(&address, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.write_all(b"GET /health HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
        let mut reply = String::new();
        stream.take(4096).read_to_string(&mut reply)?;
        Ok(reply)
    };
    match ask() {
        Ok(reply) if reply.starts_with("HTTP/1.0 200") || reply.starts_with("HTTP/1.1 200") => Ok(()),
        Ok(reply) => {
            eprintln!("myelin: unhealthy: {}", reply.lines().next().unwrap_or("no answer"));
            Err(ExitCode::FAILURE)
        }
        Err(e) => {
            eprintln!("myelin: unhealthy: http://{address}/health: {e}");
            Err(ExitCode::FAILURE)
        }
    }
}

/// Asks twice on a terminal; reads one line from a pipe.
fn read_password() -> std::io::Result<String> {
    use std::io::IsTerminal;
    if !std::io::stdin().is_terminal() {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        return Ok(line.trim_end_matches(['\n', '\r']).to_owned());
    }
    loop {
        let first = rpassword::prompt_password("Password: ")?;
        let second = rpassword::prompt_password("Password (again): ")?;
        if first == second {
            return Ok(first);
        }
        eprintln!("The passwords differ; try again.");
    }
}
