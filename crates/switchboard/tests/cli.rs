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

#[test]
fn socketio_flags_reach_config_and_a_colliding_path_stops_serve() {
    let output = switchboard(
        &[
            "config",
            "--socketio-ping-interval",
            "300ms",
            "--socketio-ping-timeout",
            "200ms",
            "--no-socketio",
        ],
        &[("SWITCHBOARD_SOCKETIO__NAMESPACES", "/,/game")],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    for line in [
        "[socketio]",
        "enabled = false  # from --no-socketio",
        "ping_interval = \"300ms\"  # from --socketio-ping-interval",
        "ping_timeout = \"200ms\"  # from --socketio-ping-timeout",
        "namespaces = [\"/\", \"/game\"]  # from SWITCHBOARD_SOCKETIO__NAMESPACES",
        "recovery = [\"/\", \"/game\"]",
        "path = \"/socket.io/\"",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "no line {line:?} in:\n{text}"
        );
    }

    let output = switchboard(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--socketio-path",
            "/events/",
        ],
        &[],
    );
    assert_eq!(output.status.code(), Some(2));
    let err = stderr(&output);
    assert!(
        err.contains(
            "invalid configuration: socketio.path: \"/events/\" collides with the server's \
             route /events"
        ) && err.contains("(from --socketio-path)"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// switchboard token

/// Verifies `token` with the auth crate's verifier for `secret`, at `now`.
fn verify(
    token: &str,
    config: switchboard_auth::JwtConfig,
    now: u64,
) -> Result<switchboard_auth::Identity, switchboard_auth::AuthError> {
    let verifier = switchboard_auth::JwtVerifier::new(&config).unwrap();
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(verifier.verify(token, now))
}

fn hs(secret: &str) -> switchboard_auth::JwtConfig {
    switchboard_auth::JwtConfig {
        secrets: vec![secret.to_owned()],
        ..Default::default()
    }
}

fn minted(output: &Output) -> String {
    assert!(output.status.success(), "{}", stderr(output));
    let text = stdout(output);
    assert!(
        text.ends_with('\n') && text.lines().count() == 1,
        "{text:?}"
    );
    text.trim_end().to_owned()
}

#[test]
fn token_mints_an_hs256_token_the_verifier_accepts_with_ttl_and_claims() {
    let now = switchboard_auth::unix_now();
    let output = switchboard(
        &[
            "token",
            "--sub",
            "alice",
            "--ttl",
            "15m",
            "--claim",
            r#"channels=["chat:*"]"#,
            "--claim",
            "level=5",
            "--claim",
            "admin=true",
            "--claim",
            "team=blue",
        ],
        &[("SWITCHBOARD_JWT_SECRET", "dev-secret")],
    );
    let token = minted(&output);
    let header = token.split('.').next().unwrap();
    let header: serde_json::Value = serde_json::from_slice(&base64_url_decode(header)).unwrap();
    assert_eq!(header["alg"], "HS256");

    let id = verify(&token, hs("dev-secret"), now).unwrap();
    assert_eq!(id.user_id(), "alice");
    let exp = id.token_expires_at().unwrap();
    assert!(
        (now + 900..=now + 902).contains(&exp),
        "exp {exp}, now {now}"
    );
    assert_eq!(id.channels(), Some(&["chat:*".to_owned()][..]));
    assert_eq!(id.claim("level"), Some(&serde_json::json!(5)));
    assert_eq!(id.claim("admin"), Some(&serde_json::json!(true)));
    assert_eq!(id.claim("team"), Some(&serde_json::json!("blue")));
    // The TTL is honoured: expired 15 minutes later (past the leeway).
    let err = verify(&token, hs("dev-secret"), exp + 60).unwrap_err();
    assert_eq!(err.close_reason(), "Token expired");
    // Signed with that secret, not another.
    assert!(verify(&token, hs("other-secret"), now).is_err());
}

/// Base64url without padding (a JWT segment).
fn base64_url_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in text.bytes() {
        let v = ALPHABET.iter().position(|&a| a == c).unwrap() as u32;
        bits = (bits << 6) | v;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
        }
    }
    out
}

#[test]
fn token_uses_the_configured_secret_issuer_audience_and_algorithm_and_secret_overrides() {
    let now = switchboard_auth::unix_now();
    let file = temp_file(
        "token.toml",
        "[auth.jwt]\nsecrets = [\"file-secret\", \"old\"]\nissuer = \"me\"\naudience = \"sb\"\nalgorithms = [\"HS512\"]\n",
    );
    let config = |secret: &str| switchboard_auth::JwtConfig {
        secrets: vec![secret.to_owned()],
        issuer: vec!["me".to_owned()],
        audience: vec!["sb".to_owned()],
        algorithms: vec!["HS512".to_owned()],
        ..Default::default()
    };
    let token = minted(&switchboard(
        &["token", "--config", file.to_str().unwrap(), "--sub", "bob"],
        &[],
    ));
    let id = verify(&token, config("file-secret"), now).unwrap();
    assert_eq!(id.user_id(), "bob");
    assert_eq!(id.claim("iss"), Some(&serde_json::json!("me")));
    let exp = id.token_expires_at().unwrap();
    assert!((now + 3600..=now + 3602).contains(&exp), "default ttl 1h");

    // --secret wins over the configuration; --jwt-secret (a settings flag) works too.
    let token = minted(&switchboard(
        &[
            "token",
            "--config",
            file.to_str().unwrap(),
            "--sub",
            "bob",
            "--secret",
            "flag-secret",
        ],
        &[],
    ));
    assert!(verify(&token, config("file-secret"), now).is_err());
    verify(&token, config("flag-secret"), now).unwrap();
    let token = minted(&switchboard(
        &["token", "--sub", "carol", "--jwt-secret", "base64:c2VjcmV0"],
        &[],
    ));
    assert_eq!(
        verify(&token, hs("base64:c2VjcmV0"), now)
            .unwrap()
            .user_id(),
        "carol"
    );
    let _ = std::fs::remove_file(&file);
}

#[test]
fn token_without_a_secret_or_with_bad_arguments_exits_2() {
    let output = switchboard(&["token", "--sub", "alice"], &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stdout(&output).is_empty());
    let err = stderr(&output);
    assert!(err.contains("no JWT secret"), "{err}");
    assert!(
        err.contains("--secret") && err.contains("SWITCHBOARD_JWT_SECRET"),
        "{err}"
    );

    for (args, expected) in [
        (vec!["--ttl", "soon"], "--ttl: expected a duration"),
        (vec!["--ttl", "0"], "--ttl: must be at least 1s"),
        (vec!["--claim", "novalue"], "--claim: expected NAME=VALUE"),
        (vec!["--claim", "sub=bob"], "--sub"),
        (vec!["--claim", "exp=1"], "--ttl"),
        (
            vec!["--alg", "RS256"],
            "--alg: expected HS256, HS384 or HS512",
        ),
        (vec!["--secret", "base64:!!"], "bad base64"),
    ] {
        let mut all = vec!["token", "--sub", "alice"];
        if !args.contains(&"--secret") {
            all.extend(["--secret", "s"]);
        }
        all.extend(args);
        let output = switchboard(&all, &[]);
        assert_eq!(output.status.code(), Some(2), "{all:?}");
        assert!(stdout(&output).is_empty());
        assert!(
            stderr(&output).contains(expected),
            "{all:?}: {}",
            stderr(&output)
        );
    }
    // An invalid configuration is reported as for serve.
    let output = switchboard(
        &["token", "--sub", "alice", "--secret", "s"],
        &[("SWITCHBOARD_AUTH__JWT__LEEWAY", "soon")],
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("invalid configuration: auth.jwt.leeway"),
        "{}",
        stderr(&output)
    );
    // --sub is required (clap's usage error, also 2).
    let output = switchboard(&["token", "--secret", "s"], &[]);
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn serve_refuses_a_bad_auth_setting_with_exit_2_naming_it() {
    let output = switchboard(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--jwt-public-key",
            "/nonexistent/key.pem",
        ],
        &[],
    );
    assert_eq!(output.status.code(), Some(2));
    let err = stderr(&output);
    assert!(
        err.contains(
            "invalid configuration: auth.jwt.public_key_files[0]: reading /nonexistent/key.pem"
        ) && err.contains("(from --jwt-public-key)"),
        "{err}"
    );
}

#[test]
fn config_redacts_the_jwt_secret_and_proxy_credentials() {
    let output = switchboard(
        &[
            "config",
            "--connect-proxy",
            "https://app:pa55@app.example/connect",
        ],
        &[("SWITCHBOARD_JWT_SECRET", "hush-hush")],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(!text.contains("hush") && !text.contains("pa55"), "{text}");
    assert!(
        text.lines()
            .any(|l| l == "secrets = [\"[redacted]\"]  # from SWITCHBOARD_JWT_SECRET"),
        "{text}"
    );
}
