//! The command line: version, help, configuration checks, create-user.

use std::{
    io::Write,
    process::{Command, Output, Stdio},
};

use serde_json::json;

use crate::server::{TestServer, binary};

fn myelin(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(binary()).args(args).env_clear().envs(env.iter().copied()).output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn version_and_help() {
    let output = myelin(&["--version"], &[]);
    assert!(output.status.success());
    assert_eq!(text(&output.stdout).trim(), format!("myelin {}", env!("CARGO_PKG_VERSION")));
    for command in [
        &["--help"][..],
        &["serve", "--help"],
        &["create-user", "--help"],
        &["check-config", "--help"],
        &["healthcheck", "--help"],
    ] {
        let output = myelin(command, &[]);
        assert!(output.status.success(), "{command:?}");
        assert!(text(&output.stdout).contains("Usage:"), "{command:?}");
    }
}

#[test]
fn check_config_accepts_a_file_with_environment_overrides() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("myelin.toml");
    std::fs::write(
        &file,
        "server_name = \"file.example\"\n[listen]\nclient = \"127.0.0.1:9999\"\n[registration]\nenabled = true\n",
    )
    .unwrap();
    let output =
        myelin(&["check-config", "--config", file.to_str().unwrap()], &[("MYELIN_SERVER_NAME", "env.example")]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let summary = text(&output.stdout);
    assert!(
        summary.contains("env.example") && summary.contains("127.0.0.1:9999") && summary.contains("open"),
        "{summary}"
    );
}

#[test]
fn invalid_configuration_is_one_line_naming_the_key_and_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "server_name = \"a.example\"\n[registration]\nenabeld = true\n").unwrap();
    /// Arguments, environment, and the key the error must name.
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (vec!["check-config"], vec![], "server_name"),
        (
            vec!["check-config"],
            vec![("MYELIN_SERVER_NAME", "a.example"), ("MYELIN_LISTEN__CLIENT", "not-an-address")],
            "listen.client",
        ),
        (
            vec!["check-config"],
            vec![("MYELIN_SERVER_NAME", "a.example"), ("MYELIN_REGISTRATION__ENABLED", "maybe")],
            "registration.enabled",
        ),
        (vec!["check-config"], vec![("MYELIN_SERVER_NAME", "bad name!")], "server_name"),
        (vec!["check-config"], vec![("MYELIN_SERVER_NAME", "a.example"), ("MYELIN_LOG__FORMAT", "xml")], "log.format"),
        (vec!["check-config", "--config", file.to_str().unwrap()], vec![], "enabeld"),
        (vec!["check-config", "--config", "/does/not/exist.toml"], vec![], "/does/not/exist.toml"),
        (vec!["serve"], vec![("MYELIN_SERVER_NAME", "a.example"), ("MYELIN_TLS__CERT", "/nope.pem")], "tls"),
    ];
    for (args, env, key) in cases {
        let output = myelin(&args, &env);
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?} {env:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains(key), "{key} not named in: {stderr}");
    }
}

#[tokio::test]
async fn create_user_works_on_a_stopped_server_and_refuses_a_running_one() {
    let mut server = TestServer::start().await;
    let db = server.database_path();
    let env = [("MYELIN_SERVER_NAME", "test.local"), ("MYELIN_DATABASE__PATH", db.to_str().unwrap())];

    let running = myelin(&["create-user", "root", "--password", "pw"], &env);
    assert!(!running.status.success());
    assert!(text(&running.stderr).contains("in use"), "{}", text(&running.stderr));

    assert!(server.terminate().success());
    let output = myelin(&["create-user", "Root", "--admin", "--password", "pw"], &env);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(text(&output.stdout).contains("@root:test.local (admin)"));
    // The password from standard input, as scripts give it.
    let mut child = Command::new(binary())
        .args(["create-user", "piped"])
        .env_clear()
        .envs(env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"from-stdin\n").unwrap();
    assert!(child.wait_with_output().unwrap().status.success());
    let taken = myelin(&["create-user", "root", "--password", "pw"], &env);
    assert!(!taken.status.success());
    assert!(text(&taken.stderr).contains("taken"), "{}", text(&taken.stderr));

    server.restart();
    server.login("root", "pw").await;
    server.login("piped", "from-stdin").await;
    let (status, _) = server
        .post(
            "/_matrix/client/v3/login",
            None,
            json!({ "type": "m.login.password", "user": "piped", "password": "from-stdin\n" }),
        )
        .await;
    assert_eq!(status, 403);
}

/// The example configuration is valid, and the reference names every one of its settings.
#[test]
fn example_configuration_and_reference_agree() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let example = root.join("config/myelin.toml");
    let output = myelin(&["check-config", "--config", example.to_str().unwrap()], &[]);
    assert!(output.status.success(), "{}", text(&output.stderr));

    let reference = std::fs::read_to_string(root.join("docs/configuration.md")).unwrap();
    let mut section = String::new();
    let mut checked = 0;
    for line in std::fs::read_to_string(&example).unwrap().lines() {
        // Settings, including the commented-out optional ones: `key = ...` or `# key = ...`.
        let line = line.trim_start_matches('#').trim();
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = format!("{}__", name.to_uppercase());
            continue;
        }
        let Some((key, _)) = line.split_once(" = ") else { continue };
        if key.contains(' ') {
            continue;
        }
        let variable = format!("MYELIN_{section}{}", key.to_uppercase());
        assert!(reference.contains(&variable), "docs/configuration.md does not mention {variable}");
        checked += 1;
    }
    assert!(checked >= 25, "only {checked} settings found in the example");
}

#[tokio::test]
async fn healthcheck_reports_whether_the_server_answers() {
    let mut server = TestServer::start().await;
    let port = server.base.rsplit(':').next().unwrap().to_owned();
    let env = [("MYELIN_SERVER_NAME", "test.local"), ("MYELIN_LISTEN__CLIENT", &*format!("0.0.0.0:{port}"))];
    let env: Vec<(&str, &str)> = env.to_vec();
    let healthy = myelin(&["healthcheck"], &env);
    assert!(healthy.status.success(), "{}", text(&healthy.stderr));
    assert!(server.terminate().success());
    let unhealthy = myelin(&["healthcheck"], &env);
    assert_eq!(unhealthy.status.code(), Some(1));
    assert!(text(&unhealthy.stderr).contains("unhealthy"));
}
