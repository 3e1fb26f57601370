//! The `switchboard` binary's configuration handling, end to end: `switchboard config` with a
//! file, environment variables and flags, and the errors of `serve` and `config`.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::{Command, Output};

fn switchboard(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(args)
        // Nothing from the caller's environment (RUST_LOG, SWITCHBOARD_*) leaks in.
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

fn temp_file(name: &str, contents: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("switchboard-cli-{}-{name}", std::process::id()));
    std::fs::write(&path, contents).unwrap();
    path
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn config_prints_the_merged_configuration_with_sources_and_secrets_redacted() {
    let file = temp_file(
        "layers.toml",
        r#"
listen = "0.0.0.0:1111"
max_connections_per_ip = 5
heartbeat_interval = 30
api_keys = ["file-key-1"]

[[history.rooms]]
pattern = "chat:*"
max_messages = 500
"#,
    );
    let output = switchboard(
        &[
            "config",
            "--config",
            file.to_str().unwrap(),
            "--listen",
            "0.0.0.0:3333",
            "--no-deflate",
        ],
        &[
            ("SWITCHBOARD_LISTEN", "0.0.0.0:2222"),
            ("SWITCHBOARD_MAX_CONNECTIONS_PER_IP", "6"),
            ("SWITCHBOARD_API_KEY", "env-key-2"),
        ],
    );
    let _ = std::fs::remove_file(&file);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    let file = file.display().to_string();
    for line in [
        "listen = \"0.0.0.0:3333\"  # from --listen".to_owned(),
        "max_connections_per_ip = 6  # from SWITCHBOARD_MAX_CONNECTIONS_PER_IP".to_owned(),
        format!("heartbeat_interval = \"30s\"  # from {file}"),
        "api_keys = [\"[redacted]\"]  # from SWITCHBOARD_API_KEY".to_owned(),
        "deflate = false  # from --no-deflate".to_owned(),
        format!(
            "rooms = [{{ pattern = \"chat:*\", max_messages = 500, max_age = \"10m\" }}]  # from {file}"
        ),
        // Defaults, every key.
        "max_connections_per_user = 10".to_owned(),
        "max_message_size = \"1MiB\"".to_owned(),
        "rate_limit = \"100/10/20\"".to_owned(),
        "max_connections = \"unlimited\"".to_owned(),
        "# cert = (unset)".to_owned(),
    ] {
        assert!(text.lines().any(|l| l == line), "no line {line:?} in:\n{text}");
    }
    assert!(!text.contains("key-1") && !text.contains("key-2"), "{text}");
}

#[test]
fn config_output_is_a_valid_configuration_file() {
    let first = switchboard(&["config", "--rate-limit", "off", "--threads", "2"], &[]);
    assert!(first.status.success(), "{}", stderr(&first));
    let file = temp_file("roundtrip.toml", &stdout(&first));
    let second = switchboard(&["config", "--config", file.to_str().unwrap()], &[]);
    let _ = std::fs::remove_file(&file);
    assert!(second.status.success(), "{}", stderr(&second));
    let values = |o: &Output| -> Vec<String> {
        stdout(o)
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.split("  # from").next().unwrap_or(l).to_owned())
            .collect()
    };
    assert_eq!(values(&first), values(&second));
}

#[test]
fn an_invalid_file_exits_non_zero_naming_the_key() {
    let file = temp_file(
        "invalid.toml",
        "listen = \"0.0.0.0:1\"\nheartbeat_interval = \"soon\"\n",
    );
    for command in ["config", "serve"] {
        let output = switchboard(&[command, "--config", file.to_str().unwrap()], &[]);
        assert!(!output.status.success());
        assert_eq!(output.status.code(), Some(2));
        let err = stderr(&output);
        assert!(
            err.contains("invalid configuration: heartbeat_interval: expected a duration"),
            "{err}"
        );
        assert!(err.contains(&file.display().to_string()), "{err}");
        assert!(stdout(&output).is_empty());
    }
    let _ = std::fs::remove_file(&file);
}

#[test]
fn unknown_keys_and_variables_exit_non_zero_naming_them() {
    let file = temp_file("unknown.toml", "[tls]\ncert = \"c.pem\"\nkee = \"k.pem\"\n");
    let output = switchboard(&["config", "--config", file.to_str().unwrap()], &[]);
    let _ = std::fs::remove_file(&file);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("tls.kee: unknown key"),
        "{}",
        stderr(&output)
    );

    let output = switchboard(&["serve"], &[("SWITCHBOARD_MAX_CONECTIONS", "5")]);
    assert_eq!(output.status.code(), Some(2));
    let err = stderr(&output);
    assert!(
        err.contains("max_conections: unknown key (did you mean max_connections?) (from SWITCHBOARD_MAX_CONECTIONS)"),
        "{err}"
    );
}

#[test]
fn a_syntax_error_names_the_line() {
    let file = temp_file("syntax.toml", "listen = \"0.0.0.0:1\"\necho = \n");
    let output = switchboard(&["config", "--config", file.to_str().unwrap()], &[]);
    let _ = std::fs::remove_file(&file);
    assert_eq!(output.status.code(), Some(2));
    let err = stderr(&output);
    assert!(err.contains("invalid configuration: "), "{err}");
    assert!(err.contains("line 2"), "{err}");
}

#[test]
fn a_half_set_tls_pair_is_refused() {
    let output = switchboard(&["serve", "--tls-cert", "cert.pem"], &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("tls.key: missing"),
        "{}",
        stderr(&output)
    );
}
