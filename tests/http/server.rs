//! A real Myelin process on an ephemeral port with a temporary database, and a small HTTP client
//! for talking to it.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

pub const SHARED_SECRET: &str = "test-shared-secret";
pub const SERVER_NAME: &str = "test.local";

pub struct TestServer {
    child: Option<Child>,
    pub base: String,
    /// `https://127.0.0.1:PORT` of the federation listener, when it is on.
    pub federation: Option<String>,
    /// The server name (`SERVER_NAME`, or `127.0.0.1:PORT` for federating servers).
    pub server_name: String,
    dir: tempfile::TempDir,
    stderr_log: PathBuf,
    env: Vec<(String, String)>,
    /// One client for all requests: building one loads the TLS roots, which costs tens of
    /// milliseconds, and reusing it keeps connections alive.
    client: reqwest::Client,
}

/// The built server binary.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_myelin")
}

/// The environment every test server starts with; tests add or override entries.
fn base_env(db: &Path) -> Vec<(String, String)> {
    [
        ("MYELIN_SERVER_NAME", SERVER_NAME),
        ("MYELIN_DATABASE__PATH", db.to_str().unwrap()),
        ("MYELIN_LISTEN__CLIENT", "127.0.0.1:0"),
        ("MYELIN_REGISTRATION__ENABLED", "true"),
        ("MYELIN_REGISTRATION__SHARED_SECRET", SHARED_SECRET),
        ("MYELIN_RATE_LIMITS__ENABLED", "false"),
        ("MYELIN_LOG__LEVEL", "info"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// Starts without some of the base settings (to test their defaults).
    pub async fn start_without(removed: &[&str]) -> Self {
        Self::start_env(removed, &[]).await
    }

    pub async fn start_with(overrides: &[(&str, &str)]) -> Self {
        Self::start_env(&[], overrides).await
    }

    /// Starts with the federation listener on a free loopback port, named `127.0.0.1:PORT`, with
    /// a certificate of the test CA, trusting that CA and allowed to reach loopback addresses.
    pub async fn start_federating(overrides: &[(&str, &str)]) -> Self {
        Self::start_full(&[], overrides, true).await
    }

    async fn start_env(removed: &[&str], overrides: &[(&str, &str)]) -> Self {
        Self::start_full(removed, overrides, false).await
    }

    async fn start_full(removed: &[&str], overrides: &[(&str, &str)], federating: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut env = base_env(&dir.path().join("db"));
        env.retain(|(k, _)| !removed.contains(&k.as_str()));
        if federating {
            let tls = test_tls();
            let path = |name: &str, pem: &str| {
                let path = dir.path().join(name);
                std::fs::write(&path, pem).unwrap();
                path.to_str().unwrap().to_owned()
            };
            let address = format!("127.0.0.1:{}", free_port());
            for (key, value) in [
                ("MYELIN_SERVER_NAME", address.clone()),
                ("MYELIN_LISTEN__FEDERATION", address.clone()),
                ("MYELIN_TLS__CERT", path("cert.pem", &tls.cert_pem)),
                ("MYELIN_TLS__KEY", path("key.pem", &tls.key_pem)),
                ("MYELIN_FEDERATION__TLS_CA_FILE", path("ca.pem", &tls.ca_pem)),
                ("MYELIN_FEDERATION__IP_RANGE_ALLOWLIST", "127.0.0.1".to_owned()),
            ] {
                env.retain(|(k, _)| k != key);
                env.push((key.to_owned(), value));
            }
        }
        for (key, value) in overrides {
            env.retain(|(k, _)| k != key);
            env.push((key.to_string(), value.to_string()));
        }
        let server_name =
            env.iter().find(|(k, _)| k == "MYELIN_SERVER_NAME").map_or(SERVER_NAME.to_owned(), |(_, v)| v.clone());
        let stderr_log = dir.path().join("stderr.log");
        let client = reqwest::Client::new();
        let mut server =
            Self { child: None, base: String::new(), federation: None, server_name, dir, stderr_log, env, client };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let stderr = std::fs::OpenOptions::new().create(true).append(true).open(&self.stderr_log).unwrap();
        let mut child = Command::new(binary())
            .arg("serve")
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("starting myelin");
        let stdout = child.stdout.take().unwrap();
        let (found, address) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("myelin: listening on ") {
                    let _ = found.send((false, url.to_owned()));
                } else if let Some(url) = line.strip_prefix("myelin: federation on ") {
                    let _ = found.send((true, url.to_owned()));
                }
            }
        });
        // The federation line, if any, comes first.
        loop {
            match address.recv_timeout(Duration::from_secs(30)) {
                Ok((true, url)) => self.federation = Some(url),
                Ok((false, url)) => {
                    self.base = url;
                    break;
                }
                Err(_) => {
                    let _ = child.kill();
                    panic!("myelin did not start; its log:\n{}", self.log());
                }
            }
        }
        self.child = Some(child);
    }

    /// What the server wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn database_path(&self) -> PathBuf {
        self.dir.path().join("db")
    }

    /// Sends SIGTERM and waits (bounded) for the process to exit; returns its exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("server is running");
        signal(child.id(), "TERM");
        wait_bounded(&mut child, Duration::from_secs(15))
    }

    /// Waits (bounded) for the process to exit after a signal was sent to it.
    pub fn wait_for_exit(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("server is running");
        wait_bounded(&mut child, Duration::from_secs(15))
    }

    /// Kills the process with SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        let mut child = self.child.take().expect("server is running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Starts the server again on the same database (after `terminate` or `kill`).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the server first");
        self.spawn();
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A request with an optional access token and JSON body; returns status and JSON body.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.client.request(method, self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request failed");
        let status = response.status();
        let text = response.text().await.unwrap();
        let json =
            if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
        (status, json)
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        self.request(Method::GET, path, token, None).await
    }

    /// `get` without a token, owning its path (handy in closures).
    pub async fn get_owned(&self, path: String) -> (StatusCode, Value) {
        self.get(&path, None).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (StatusCode, Value) {
        self.request(Method::POST, path, token, Some(body)).await
    }

    pub async fn put(&self, path: &str, token: Option<&str>, body: Value) -> (StatusCode, Value) {
        self.request(Method::PUT, path, token, Some(body)).await
    }

    /// Registers through `/register` with the dummy stage, in the two steps clients use.
    pub async fn register(&self, username: &str, password: &str) -> User {
        let body = json!({ "username": username, "password": password });
        let (status, challenge) = self.post("/_matrix/client/v3/register", None, body.clone()).await;
        assert_eq!(status, 401, "{challenge}");
        let mut body = body;
        body["auth"] = json!({ "type": "m.login.dummy", "session": challenge["session"] });
        let (status, reply) = self.post("/_matrix/client/v3/register", None, body).await;
        assert_eq!(status, 200, "{reply}");
        User::from_login(&reply, password)
    }

    pub async fn login(&self, user: &str, password: &str) -> User {
        let (status, reply) = self
            .post(
                "/_matrix/client/v3/login",
                None,
                json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": user }, "password": password }),
            )
            .await;
        assert_eq!(status, 200, "{reply}");
        User::from_login(&reply, password)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A logged-in user.
#[derive(Clone, Debug)]
pub struct User {
    pub user_id: String,
    pub token: String,
    pub device_id: String,
    pub password: String,
}

impl User {
    pub fn from_login(reply: &Value, password: &str) -> Self {
        Self {
            user_id: reply["user_id"].as_str().unwrap().to_owned(),
            token: reply["access_token"].as_str().unwrap().to_owned(),
            device_id: reply["device_id"].as_str().unwrap().to_owned(),
            password: password.to_owned(),
        }
    }

    pub fn tok(&self) -> Option<&str> {
        Some(&self.token)
    }

    /// The `auth` object of a password stage for this user.
    pub fn password_auth(&self) -> Value {
        json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": self.user_id }, "password": self.password })
    }
}

/// TLS material for federating test servers: a CA, and a certificate it signed for `localhost`
/// and `127.0.0.1` (every test server shares it: they all live on 127.0.0.1).
pub struct TestTls {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

/// Generated once per test process.
pub fn test_tls() -> &'static TestTls {
    static TLS: std::sync::OnceLock<TestTls> = std::sync::OnceLock::new();
    TLS.get_or_init(|| {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, "Myelin test CA");
        let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        let cert_pem = leaf.signed_by(&key, &issuer).unwrap().pem();
        TestTls { ca_pem, cert_pem, key_pem: key.serialize_pem() }
    })
}

/// A port nobody listens on right now (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub fn signal(pid: u32, name: &str) {
    let status = Command::new("kill").arg(format!("-{name}")).arg(pid.to_string()).status().unwrap();
    assert!(status.success());
}

pub fn wait_bounded(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("process {} did not exit within {limit:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Asserts a Matrix error: status and errcode.
#[track_caller]
pub fn assert_error(reply: &(StatusCode, Value), status: u16, errcode: &str) {
    assert_eq!(reply.0.as_u16(), status, "unexpected status; body: {}", reply.1);
    assert_eq!(reply.1["errcode"], errcode, "unexpected errcode; body: {}", reply.1);
    assert!(reply.1["error"].is_string(), "error message missing: {}", reply.1);
}
