#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use clap::{Args as _, FromArgMatches as _};
use switchboard_auth::{Action, Algorithm, Allow};

use super::keys::KEYS;
use super::*;

/// Flags as the CLI parses them.
fn flags(args: &[&str]) -> Flags {
    let cmd = Flags::augment_args(clap::Command::new("serve").no_binary_name(true));
    let matches = cmd.try_get_matches_from(args).unwrap();
    Flags::from_arg_matches(&matches).unwrap()
}

/// A file with `contents` in the temporary directory.
fn file(contents: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let path = std::env::temp_dir().join(format!(
        "switchboard-settings-{}-{}.toml",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&path, contents).unwrap();
    path
}

fn try_load(
    toml: Option<&str>,
    env: &[(&str, &str)],
    args: &[&str],
) -> Result<Loaded, ConfigError> {
    let path = toml.map(file);
    let result = load(path.as_deref(), env.iter().copied(), &flags(args));
    if let Some(path) = path {
        let _ = std::fs::remove_file(path);
    }
    result
}

fn settings(toml: Option<&str>, env: &[(&str, &str)], args: &[&str]) -> Settings {
    try_load(toml, env, args).unwrap().settings
}

fn error(toml: Option<&str>, env: &[(&str, &str)], args: &[&str]) -> String {
    try_load(toml, env, args).unwrap_err().to_string()
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[test]
fn defaults_are_the_server_defaults() {
    assert_eq!(
        format!("{:?}", Settings::default().server_config()),
        format!("{:?}", ServerConfig::default())
    );
    assert_eq!(settings(None, &[], &[]), Settings::default());
}

#[test]
fn defaults_are_the_limits_of_spec_section_6() {
    let s = Settings::default();
    assert_eq!(s.max_message_size, 1 << 20);
    assert_eq!(
        s.rate_limit,
        Some(RateLimit {
            messages: 100,
            per: secs(10),
            burst: 20
        })
    );
    assert_eq!(s.outbound_buffer, 1 << 20);
    assert_eq!(s.overflow.default, Policy::Drop);
    assert_eq!(s.max_connections_per_user, 10);
    assert_eq!(s.max_connections_per_ip, 1000);
    assert_eq!(s.max_connections, None);
    assert_eq!(s.auth_timeout, secs(5));
    assert_eq!(s.handshake_timeout, secs(10));
    assert_eq!(s.listen.to_string(), "127.0.0.1:8080");
}

#[test]
fn each_layer_alone_sets_a_key() {
    let addr = |s: Settings| s.listen.to_string();
    assert_eq!(
        addr(settings(Some("listen = \"0.0.0.0:1\""), &[], &[])),
        "0.0.0.0:1"
    );
    assert_eq!(
        addr(settings(None, &[("SWITCHBOARD_LISTEN", "0.0.0.0:2")], &[])),
        "0.0.0.0:2"
    );
    assert_eq!(
        addr(settings(None, &[], &["--listen", "0.0.0.0:3"])),
        "0.0.0.0:3"
    );
}

#[test]
fn flag_beats_env_beats_file_beats_default() {
    let toml = "listen = \"0.0.0.0:1\"\nmax_connections_per_ip = 5\necho = true\n";
    let env = [
        ("SWITCHBOARD_LISTEN", "0.0.0.0:2"),
        ("SWITCHBOARD_MAX_CONNECTIONS_PER_IP", "6"),
    ];
    let s = settings(Some(toml), &env, &["--listen", "0.0.0.0:3"]);
    assert_eq!(s.listen.to_string(), "0.0.0.0:3");
    assert_eq!(s.max_connections_per_ip, 6);
    assert!(s.echo);
    assert_eq!(s.max_connections_per_user, 10);

    let s = settings(Some(toml), &env, &[]);
    assert_eq!(s.listen.to_string(), "0.0.0.0:2");
    let s = settings(Some(toml), &[], &[]);
    assert_eq!(s.listen.to_string(), "0.0.0.0:1");
}

#[test]
fn sections_merge_key_by_key_and_lists_are_replaced_whole() {
    let toml =
        "[tls]\ncert = \"c.pem\"\n[history]\nmax_messages = 7\nrooms = [\"a:*=1\", \"b:*=2\"]\n";
    let s = settings(
        Some(toml),
        &[("SWITCHBOARD_TLS__KEY", "k.pem")],
        &["--history", "c:*=3"],
    );
    assert_eq!(s.tls.cert, Some(PathBuf::from("c.pem")));
    assert_eq!(s.tls.key, Some(PathBuf::from("k.pem")));
    assert_eq!(s.history.max_messages, 7);
    assert_eq!(s.history.rooms.len(), 1);
    assert_eq!(s.history.rooms[0].pattern, "c:*");
}

#[test]
fn durations_accept_seconds_and_unit_strings() {
    let s = settings(
        Some("heartbeat_interval = 30\nheartbeat_timeout = \"500ms\"\nclose_timeout = \"2m\"\ndedup_window = \"1h\"\nshutdown_timeout = 0"),
        &[("SWITCHBOARD_AUTH_TIMEOUT", "7")],
        &["--handshake-timeout", "3s"],
    );
    assert_eq!(s.heartbeat_interval, secs(30));
    assert_eq!(s.heartbeat_timeout, Duration::from_millis(500));
    assert_eq!(s.close_timeout, secs(120));
    assert_eq!(s.dedup_window, secs(3600));
    assert_eq!(s.shutdown_timeout, secs(0));
    assert_eq!(s.auth_timeout, secs(7));
    assert_eq!(s.handshake_timeout, secs(3));
}

#[test]
fn sizes_accept_bytes_and_unit_strings() {
    let s = settings(
        Some("max_message_size = 2048\nmax_pending_output = \"64KB\""),
        &[("SWITCHBOARD_OUTBOUND_BUFFER", "2MiB")],
        &["--max-message-size", "67108864"],
    );
    assert_eq!(s.max_message_size, 64 << 20);
    assert_eq!(s.max_pending_output, 64_000);
    assert_eq!(s.outbound_buffer, 2 << 20);
    let s = settings(Some("max_message_size = \"256KiB\""), &[], &[]);
    assert_eq!(s.max_message_size, 256 << 10);
}

#[test]
fn booleans_accept_native_and_string_forms() {
    assert!(settings(Some("echo = true"), &[], &[]).echo);
    assert!(settings(None, &[("SWITCHBOARD_ECHO", "true")], &[]).echo);
    assert!(settings(None, &[], &["--echo"]).echo);
    assert!(!settings(Some("echo = true"), &[], &["--echo=false"]).echo);
    assert!(!settings(None, &[], &["--no-deflate"]).deflate);
    assert!(!settings(None, &[], &["--deflate=false"]).deflate);
    assert!(!settings(None, &[("SWITCHBOARD_DEFLATE", "false")], &[]).deflate);
    assert!(settings(Some("deflate = false"), &[], &["--deflate"]).deflate);
    assert_eq!(
        settings(None, &[], &["--no-deflate"])
            .server_config()
            .deflate,
        None
    );
}

#[test]
fn counts_limits_and_threads_accept_their_words() {
    let s = settings(
        Some("max_connections = 500\nthreads = 2\ndedup_capacity = 0"),
        &[],
        &[],
    );
    assert_eq!(s.max_connections, Some(500));
    assert_eq!(s.threads, Some(2));
    assert_eq!(s.dedup_capacity, 0);
    let s = settings(
        Some("max_connections = 500\nthreads = 2"),
        &[("SWITCHBOARD_MAX_CONNECTIONS", "unlimited")],
        &["--threads", "auto"],
    );
    assert_eq!(s.max_connections, None);
    assert_eq!(s.threads, None);
    assert_eq!(
        settings(None, &[], &["--threads=1"]).threads,
        Some(1),
        "the benchmark driver's spelling"
    );
}

#[test]
fn rate_limit_accepts_text_off_false_and_table() {
    let limit = |m, s, b| {
        Some(RateLimit {
            messages: m,
            per: secs(s),
            burst: b,
        })
    };
    let rate = |toml: &str| settings(Some(toml), &[], &[]).rate_limit;
    assert_eq!(rate("rate_limit = \"50/5/10\""), limit(50, 5, 10));
    assert_eq!(rate("rate_limit = \"50/5\""), limit(50, 5, 50));
    assert_eq!(rate("rate_limit = \"off\""), None);
    assert_eq!(rate("rate_limit = false"), None);
    assert_eq!(
        rate("[rate_limit]\nmessages = 30\nper = \"1m\"\nburst = 5"),
        limit(30, 60, 5)
    );
    assert_eq!(
        rate("rate_limit = { messages = 30, per = 60 }"),
        limit(30, 60, 30)
    );
    assert_eq!(
        settings(None, &[], &["--rate-limit", "off"]).rate_limit,
        None
    );
}

#[test]
fn browser_settings_parse_and_bad_origins_name_the_key() {
    let s = settings(
        Some("anonymous_publish = [\"chat:*\"]"),
        &[(
            "SWITCHBOARD_CORS_ORIGINS",
            "https://app.example.com, http://127.0.0.1:3000",
        )],
        &[],
    );
    assert_eq!(s.anonymous_publish, ["chat:*"]);
    assert_eq!(
        s.cors_origins,
        ["https://app.example.com", "http://127.0.0.1:3000"]
    );
    let config = s.server_config();
    assert!(config.anonymous_publish[0].matches("chat:lobby"));
    assert_eq!(
        settings(None, &[], &["--cors-origin", "*"]).cors_origins,
        ["*"]
    );
    for bad in [
        "app.example.com",
        "https://app.example.com/",
        "ftp://x",
        "https://",
        "https://x:port",
    ] {
        let e = error(None, &[], &["--cors-origin", bad]);
        assert!(
            e.contains("cors_origins") && e.contains("not an origin"),
            "{bad}: {e}"
        );
    }
}

#[test]
fn api_keys_accept_arrays_comma_lists_and_the_singular_variable() {
    let keys = |s: Settings| s.api_keys;
    assert_eq!(
        keys(settings(Some("api_keys = [\"a\", \"b\"]"), &[], &[])),
        ["a", "b"]
    );
    assert_eq!(
        keys(settings(None, &[("SWITCHBOARD_API_KEYS", "a, b,")], &[])),
        ["a", "b"]
    );
    assert_eq!(
        keys(settings(None, &[("SWITCHBOARD_API_KEY", "x,y")], &[])),
        ["x,y"],
        "the singular variable is one key, taken whole"
    );
    assert_eq!(
        keys(settings(
            None,
            &[("SWITCHBOARD_API_KEY", "x")],
            &["--api-key", "a", "--api-key", "b,c"]
        )),
        ["a", "b,c"]
    );
    let e = error(
        None,
        &[("SWITCHBOARD_API_KEY", "x"), ("SWITCHBOARD_API_KEYS", "y")],
        &[],
    );
    assert!(
        e.contains("api_keys") && e.contains("SWITCHBOARD_API_KEY"),
        "{e}"
    );
}

#[test]
fn room_rules_accept_tables_strings_and_comma_lists() {
    let toml = r#"
[history]
max_messages = 50
max_age = "20m"
[[history.rooms]]
pattern = "chat:*"
max_messages = 500
max_age = "1h"
[[history.rooms]]
pattern = "news:*"
max_age = 60
[overflow]
default = "close"
[[overflow.rooms]]
pattern = "feed:*"
policy = "drop"
"#;
    let s = settings(Some(toml), &[], &[]);
    let hub = s.server_config().hub;
    assert_eq!(hub.history.len(), 2);
    assert!(hub.history[0].0.matches("chat:x"));
    assert_eq!(hub.history[0].1.max_messages, 500);
    assert_eq!(hub.history[0].1.max_age, secs(3600));
    // An unset limit inherits the default retention.
    assert_eq!(hub.history[1].1.max_messages, 50);
    assert_eq!(hub.history[1].1.max_age, secs(60));
    assert_eq!(hub.default_history.max_age, secs(1200));
    assert_eq!(hub.default_overflow, OverflowPolicy::Close);
    assert_eq!(hub.overflow.len(), 1);
    assert_eq!(hub.overflow[0].1, OverflowPolicy::Drop);

    let s = settings(
        Some("[history]\nrooms = [\"a:*=1/2\", { pattern = \"b:*\", max_messages = 3 }]"),
        &[("SWITCHBOARD_OVERFLOW__ROOMS", "x:*=close, y:*=drop")],
        &[],
    );
    assert_eq!(s.history.rooms.len(), 2);
    assert_eq!(s.history.rooms[0].max_age, Some(secs(2)));
    assert_eq!(s.overflow.rooms.len(), 2);
    assert_eq!(s.overflow.rooms[0].policy, Policy::Close);

    let s = settings(
        None,
        &[],
        &["--history", "short:*=2/600", "--overflow", "orders:*=close"],
    );
    let hub = s.server_config().hub;
    assert_eq!(hub.history[0].1.max_messages, 2);
    assert_eq!(hub.overflow[0].1, OverflowPolicy::Close);
}

#[test]
fn log_settings_read_rust_log_unless_switchboard_log_level_is_set() {
    let s = settings(None, &[("RUST_LOG", "debug")], &[]);
    assert_eq!(s.log_level, "debug");
    let s = settings(
        None,
        &[("RUST_LOG", "debug"), ("SWITCHBOARD_LOG_LEVEL", "warn")],
        &[],
    );
    assert_eq!(s.log_level, "warn");
    let s = settings(
        Some("log_level = \"error\"\nlog_format = \"json\""),
        &[("RUST_LOG", "debug")],
        &["--log-level", "info,switchboard_server=trace"],
    );
    assert_eq!(s.log_level, "info,switchboard_server=trace");
    assert_eq!(s.log_format, LogFormat::Json);
    let e = error(None, &[("RUST_LOG", "verbose")], &[]);
    assert!(
        e.starts_with("invalid configuration: log_level: expected a level"),
        "{e}"
    );
    assert!(e.ends_with("(from RUST_LOG)"), "{e}");
}

#[test]
fn environment_names_for_tooling_and_the_file_are_not_keys() {
    let path = file("listen = \"0.0.0.0:9\"");
    let env = [
        ("SWITCHBOARD_CONFIG", path.to_str().unwrap()),
        ("SWITCHBOARD_BIN", "/x"),
        ("SWITCHBOARD_URL", "ws://x"),
        ("SWITCHBOARD_HTTP", "http://x"),
        ("HOME", "/root"),
    ];
    let loaded = load(None, env, &Flags::default()).unwrap();
    assert_eq!(loaded.settings.listen.to_string(), "0.0.0.0:9");
    // --config wins over SWITCHBOARD_CONFIG.
    let other = file("listen = \"0.0.0.0:10\"");
    let loaded = load(Some(&other), env, &Flags::default()).unwrap();
    assert_eq!(loaded.settings.listen.to_string(), "0.0.0.0:10");
    let _ = std::fs::remove_file(path);
    let _ = std::fs::remove_file(other);
}

#[test]
fn unknown_keys_are_errors_naming_the_key_and_source() {
    let e = error(Some("listn = \"0.0.0.0:1\""), &[], &[]);
    assert!(
        e.starts_with("invalid configuration: listn: unknown key (did you mean listen?) (from "),
        "{e}"
    );
    let e = error(Some("[tls]\ncertificate = \"x\""), &[], &[]);
    assert!(e.contains("tls.certificate: unknown key"), "{e}");
    let e = error(
        Some("[[history.rooms]]\npattern = \"a\"\ncount = 3"),
        &[],
        &[],
    );
    assert!(e.contains("history.rooms[0].count: unknown key"), "{e}");
    let e = error(None, &[("SWITCHBOARD_NOPE", "1")], &[]);
    assert_eq!(
        e,
        "invalid configuration: nope: unknown key (from SWITCHBOARD_NOPE)"
    );
}

#[test]
fn wrong_types_and_bad_values_name_the_key() {
    let e = error(Some("echo = 3"), &[], &[]);
    assert!(
        e.starts_with("invalid configuration: echo: invalid type"),
        "{e}"
    );
    let e = error(Some("max_connections_per_ip = \"many\""), &[], &[]);
    assert!(
        e.contains("max_connections_per_ip: expected a positive integer"),
        "{e}"
    );
    let e = error(Some("heartbeat_interval = \"5 parsecs\""), &[], &[]);
    assert!(e.contains("heartbeat_interval: expected a duration"), "{e}");
    let e = error(None, &[("SWITCHBOARD_RATE_LIMIT", "abc")], &[]);
    assert_eq!(
        e,
        "invalid configuration: rate_limit: expected MESSAGES/SECONDS[/BURST] or \"off\", \
         got \"abc\" (from SWITCHBOARD_RATE_LIMIT)"
    );
    let e = error(None, &[], &["--max-message-size", "big"]);
    assert!(e.contains("max_message_size: expected a size"), "{e}");
    assert!(e.ends_with("(from --max-message-size)"), "{e}");
    let e = error(
        Some("[[history.rooms]]\npattern = \"a\"\n[[history.rooms]]\npattern = \"b\"\nmax_age = \"soon\""),
        &[],
        &[],
    );
    assert!(
        e.contains("history.rooms[1].max_age: expected a duration"),
        "{e}"
    );
    let e = error(None, &[], &["--overflow", "orders:*=explode"]);
    assert!(e.contains("overflow.rooms"), "{e}");
    let e = error(Some("log_format = \"xml\""), &[], &[]);
    assert!(e.contains("log_format: unknown variant `xml`"), "{e}");
    let e = error(Some("listen = \"localhost\""), &[], &[]);
    assert!(e.contains("listen: expected an address"), "{e}");
}

#[test]
fn out_of_range_values_are_errors() {
    for (toml, key) in [
        ("max_connections_per_ip = 0", "max_connections_per_ip"),
        ("max_connections = 0", "max_connections"),
        ("heartbeat_interval = 0", "heartbeat_interval"),
        ("[socketio]\nping_interval = 0", "socketio.ping_interval"),
        ("[socketio]\nping_timeout = \"0s\"", "socketio.ping_timeout"),
        (
            "[socketio]\nconnect_timeout = 0",
            "socketio.connect_timeout",
        ),
        ("[socketio]\nmax_payload = 0", "socketio.max_payload"),
        ("[broker]\ntimeout = 0", "broker.timeout"),
        ("max_message_size = 0", "max_message_size"),
        ("threads = 0", "threads"),
        ("dedup_capacity = -1", "dedup_capacity"),
        ("rate_limit = \"0/10\"", "rate_limit"),
        (
            "rate_limit = { messages = 0, per = 1 }",
            "rate_limit.messages",
        ),
    ] {
        let e = error(Some(toml), &[], &[]);
        assert!(
            e.starts_with(&format!("invalid configuration: {key}: ")),
            "{toml}: {e}"
        );
    }
}

#[test]
fn tls_needs_both_cert_and_key() {
    let e = error(None, &[], &["--tls-cert", "c.pem"]);
    assert_eq!(
        e,
        "invalid configuration: tls.key: missing: tls.cert is set, set both or neither"
    );
    let e = error(Some("[tls]\nkey = \"k.pem\""), &[], &[]);
    assert!(
        e.starts_with("invalid configuration: tls.cert: missing"),
        "{e}"
    );
    let s = settings(None, &[], &["--tls-cert", "c.pem", "--tls-key", "k.pem"]);
    let tls = s.server_config().tls.unwrap();
    assert_eq!(tls.cert_path, PathBuf::from("c.pem"));
    assert_eq!(tls.key_path, PathBuf::from("k.pem"));
}

#[test]
fn toml_syntax_errors_and_missing_files_are_reported() {
    let e = error(Some("listen = \"0.0.0.0:1"), &[], &[]);
    assert!(e.starts_with("invalid configuration: "), "{e}");
    assert!(e.contains("line 1"), "{e}");
    let missing = std::env::temp_dir().join("switchboard-settings-no-such-file.toml");
    let e = load(
        Some(&missing),
        Vec::<(String, String)>::new(),
        &Flags::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("cannot read"), "{e}");
}

#[test]
fn rendering_redacts_secrets_and_names_sources() {
    let loaded = try_load(
        Some("api_keys = [\"file-hush\"]\necho = true"),
        &[("SWITCHBOARD_API_KEY", "env-hush")],
        &["--listen", "0.0.0.0:7"],
    )
    .unwrap();
    let text = loaded.render();
    assert!(!text.contains("hush"), "{text}");
    assert!(
        text.contains("api_keys = [\"[redacted]\"]  # from SWITCHBOARD_API_KEY"),
        "{text}"
    );
    assert!(
        text.contains("listen = \"0.0.0.0:7\"  # from --listen"),
        "{text}"
    );
    assert!(text.contains("echo = true  # from "), "{text}");
    assert!(text.contains("\nmax_connections_per_ip = 1000\n"), "{text}");
}

#[test]
fn rendering_shows_every_key_and_reads_back_as_the_same_configuration() {
    // Two configurations between them set every optional key (`jwks_file` and `jwks_url`
    // exclude each other).
    let jwks = file("{\"keys\": []}");
    let first = try_load(
        Some(
            "[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n[[history.rooms]]\npattern = \"a:*\"\n[[overflow.rooms]]\npattern = \"b:*\"\npolicy = \"close\"\n[auth]\nanonymous = true\n[auth.jwt]\njwks_url = \"https://idp.example.com/jwks\"\n[auth.connect_proxy]\nurl = \"http://127.0.0.1:3000/connect\"\n[broker]\nurl = \"redis://127.0.0.1:6379/1\"\ntimeout = \"1500ms\"",
        ),
        &[],
        &["--rate-limit", "3/500ms", "--heartbeat-timeout", "1500ms", "--threads", "4",
          "--auth-permission", "user:*=match:user:{sub}", "--auth-permission", "news:*=anyone/subscribe+history"],
    )
    .unwrap();
    let second = try_load(
        None,
        &[("SWITCHBOARD_AUTH__JWT__JWKS_FILE", jwks.to_str().unwrap())],
        &["--auth-anonymous=false", "--ticket-ttl", "10s"],
    )
    .unwrap();
    let texts = [first.render(), second.render()];
    for key in KEYS {
        assert!(
            texts
                .iter()
                .any(|text| text.contains(&format!("\n{} = ", key.name()))),
            "{} missing:\n{}\n{}",
            key.path,
            texts[0],
            texts[1]
        );
    }
    for (loaded, text) in [first, second].iter().zip(&texts) {
        let again = settings(Some(text), &[], &[]);
        assert_eq!(
            format!("{:?}", again.server_config()),
            format!("{:?}", loaded.settings.server_config())
        );
        assert_eq!(again.auth, loaded.settings.auth);
        assert_eq!(again.threads, loaded.settings.threads);
        assert_eq!(again.broker, loaded.settings.broker);
    }
    let _ = std::fs::remove_file(jwks);
}

#[test]
fn the_example_file_parses() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../switchboard.example.toml");
    let loaded = load(
        Some(&path),
        Vec::<(String, String)>::new(),
        &Flags::default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    // It documents the defaults: apart from its rules (examples), it changes nothing.
    let mut s = loaded.settings;
    assert!(!s.history.rooms.is_empty() && !s.overflow.rooms.is_empty());
    s.history.rooms.clear();
    s.overflow.rooms.clear();
    assert_eq!(s, Settings::default());
}

#[test]
fn the_documentation_covers_every_key() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let docs = std::fs::read_to_string(root.join("docs/configuration.md")).unwrap();
    let example = std::fs::read_to_string(root.join("switchboard.example.toml")).unwrap();
    for key in KEYS {
        assert!(
            docs.contains(&format!("`{}`", key.path)),
            "docs: {}",
            key.path
        );
        assert!(
            docs.contains(&format!("`--{}", key.flag)),
            "docs: --{}",
            key.flag
        );
        assert!(docs.contains(&key.env()), "docs: {}", key.env());
        assert!(example.contains(key.name()), "example: {}", key.path);
    }
}

// ---------------------------------------------------------------------------------------------
// [socketio]

fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

#[test]
fn the_socketio_table_parses_from_the_file_into_the_servers_config() {
    let toml = r#"
[socketio]
enabled = false
path = "/rt/socket.io/"
ping_interval = "10s"
ping_timeout = 5
max_payload = "64KiB"
connect_timeout = "1m"
namespaces = ["/", "/chat", "/admin"]
recovery = ["/chat"]
recovery_window = "30s"
"#;
    let c = settings(Some(toml), &[], &[]).server_config().socketio;
    assert!(!c.enabled);
    assert_eq!(c.path, "/rt/socket.io/");
    assert_eq!(c.ping_interval, secs(10));
    assert_eq!(c.ping_timeout, secs(5));
    assert_eq!(c.max_payload, 64 << 10);
    assert_eq!(c.connect_timeout, secs(60));
    assert_eq!(c.namespaces, ["/", "/chat", "/admin"]);
    assert_eq!(c.recovery, ["/chat"]);
    assert_eq!(c.recovery_window, secs(30));
    // max_payload takes the sizes of the other size keys; its default is a decimal megabyte.
    let payload = |toml: &str| settings(Some(toml), &[], &[]).socketio.max_payload;
    assert_eq!(payload("[socketio]\nmax_payload = \"1MB\""), 1_000_000);
    assert_eq!(payload("[socketio]\nmax_payload = 2048"), 2048);
    assert_eq!(Settings::default().socketio.max_payload, 1_000_000);
}

#[test]
fn socketio_variables_and_flags_override_the_tables_fields() {
    let toml = "[socketio]\nping_interval = \"10s\"\nping_timeout = \"10s\"\npath = \"/file/\"\n\
                namespaces = [\"/file\"]\n";
    let env = [
        ("SWITCHBOARD_SOCKETIO__PING_INTERVAL", "1s"),
        ("SWITCHBOARD_SOCKETIO__PATH", "/env/"),
        ("SWITCHBOARD_SOCKETIO__NAMESPACES", "/, /env"),
        ("SWITCHBOARD_SOCKETIO__RECOVERY", "/env"),
        ("SWITCHBOARD_SOCKETIO__MAX_PAYLOAD", "1KiB"),
        ("SWITCHBOARD_SOCKETIO__CONNECT_TIMEOUT", "3s"),
        ("SWITCHBOARD_SOCKETIO__RECOVERY_WINDOW", "1h"),
        ("SWITCHBOARD_SOCKETIO__ENABLED", "false"),
    ];
    let s = settings(Some(toml), &env, &[]).socketio;
    assert!(!s.enabled);
    assert_eq!(s.ping_interval, secs(1));
    assert_eq!(s.ping_timeout, secs(10));
    assert_eq!(s.path, "/env/");
    assert_eq!(s.namespaces, ["/", "/env"]);
    assert_eq!(s.recovery(), ["/env"]);
    assert_eq!(s.max_payload, 1024);
    assert_eq!(s.connect_timeout, secs(3));
    assert_eq!(s.recovery_window, secs(3600));

    // The flags a test server starts with.
    let s = settings(
        Some(toml),
        &env,
        &[
            "--socketio-ping-interval",
            "300ms",
            "--socketio-ping-timeout",
            "200ms",
            "--socketio-max-payload",
            "100KB",
            "--socketio-connect-timeout",
            "500ms",
            "--socketio-path",
            "/flag/",
            "--socketio-namespace",
            "/",
            "--socketio-namespace",
            "/flag",
            "--socketio-recovery",
            "/flag",
            "--socketio-recovery-window",
            "2s",
            "--socketio",
        ],
    );
    let c = s.server_config().socketio;
    assert!(c.enabled);
    assert_eq!(c.ping_interval, ms(300));
    assert_eq!(c.ping_timeout, ms(200));
    assert_eq!(c.max_payload, 100_000);
    assert_eq!(c.connect_timeout, ms(500));
    assert_eq!(c.path, "/flag/");
    assert_eq!(c.namespaces, ["/", "/flag"]);
    assert_eq!(c.recovery, ["/flag"]);
    assert_eq!(c.recovery_window, secs(2));

    // On and off, in every spelling.
    let enabled = |toml: Option<&str>, env: &[(&str, &str)], args: &[&str]| {
        settings(toml, env, args).server_config().socketio.enabled
    };
    assert!(enabled(None, &[], &[]));
    assert!(!enabled(None, &[], &["--no-socketio"]));
    assert!(!enabled(None, &[], &["--socketio=false"]));
    assert!(!enabled(Some("[socketio]\nenabled = false"), &[], &[]));
    assert!(enabled(
        Some("[socketio]\nenabled = false"),
        &[],
        &["--socketio"]
    ));
    assert!(!enabled(
        None,
        &[("SWITCHBOARD_SOCKETIO__ENABLED", "true")],
        &["--no-socketio"]
    ));
    let cmd = Flags::augment_args(clap::Command::new("serve").no_binary_name(true));
    assert!(
        cmd.try_get_matches_from(["--no-socketio", "--socketio"])
            .is_err(),
        "--no-socketio and --socketio conflict"
    );
    let e = error(
        None,
        &[],
        &["--no-socketio", "--socketio-ping-interval", "0"],
    );
    assert!(
        e.ends_with("(from --socketio-ping-interval)"),
        "the other keys are still checked: {e}"
    );
}

#[test]
fn socketio_recovery_follows_the_namespaces_unless_set() {
    let c = |toml: Option<&str>, env: &[(&str, &str)], args: &[&str]| {
        settings(toml, env, args).server_config().socketio
    };
    // Default: every namespace, whichever they are.
    assert_eq!(c(None, &[], &[]).recovery, ["/", "/chat"]);
    let config = c(
        Some("[socketio]\nnamespaces = [\"/\", \"/admin\"]"),
        &[],
        &[],
    );
    assert_eq!(config.recovery, ["/", "/admin"]);
    let config = c(None, &[], &["--socketio-namespace", "/game"]);
    assert_eq!(config.namespaces, ["/game"]);
    assert_eq!(config.recovery, ["/game"]);
    // Off: an empty list.
    assert!(c(Some("[socketio]\nrecovery = []"), &[], &[])
        .recovery
        .is_empty());
    assert!(c(None, &[("SWITCHBOARD_SOCKETIO__RECOVERY", "")], &[])
        .recovery
        .is_empty());
    // A subset.
    assert_eq!(
        c(None, &[], &["--socketio-recovery", "/chat"]).recovery,
        ["/chat"]
    );
    // Only namespaces that are served.
    let e = error(
        Some("[socketio]\nnamespaces = [\"/\"]"),
        &[],
        &["--socketio-recovery", "/", "--socketio-recovery", "/chat"],
    );
    assert_eq!(
        e,
        "invalid configuration: socketio.recovery[1]: \"/chat\" is not one of \
         socketio.namespaces (\"/\") (from --socketio-recovery)"
    );
    let e = error(
        None,
        &[("SWITCHBOARD_SOCKETIO__NAMESPACES", "/a")],
        &["--socketio-recovery", "/"],
    );
    assert!(
        e.starts_with("invalid configuration: socketio.recovery[0]: \"/\" is not one of"),
        "{e}"
    );
}

#[test]
fn bad_socketio_settings_name_the_key_and_source() {
    for (toml, env, args, expected) in [
        (
            None,
            vec![],
            vec!["--socketio-path", "/ws/"],
            "invalid configuration: socketio.path: \"/ws/\" collides with the server's route /ws",
        ),
        (
            None,
            vec![("SWITCHBOARD_SOCKETIO__PATH", "/api/sio/")],
            vec![],
            "invalid configuration: socketio.path: \"/api/sio/\" collides with the server's \
             route /api/",
        ),
        (
            Some("[socketio]\npath = \"/engine.io/\""),
            vec![],
            vec![],
            "invalid configuration: socketio.path: \"/engine.io/\" collides with the server's \
             route /engine.io",
        ),
        (
            None,
            vec![],
            vec!["--socketio-path", "/metrics/"],
            "invalid configuration: socketio.path: \"/metrics/\" collides",
        ),
        (
            None,
            vec![],
            vec!["--socketio-path", "/socket.io"],
            "invalid configuration: socketio.path: must start and end with '/'",
        ),
        (
            None,
            vec![],
            vec!["--socketio-path", "socket.io/"],
            "invalid configuration: socketio.path: must start and end with '/'",
        ),
        (
            None,
            vec![],
            vec!["--socketio-path", "/"],
            "invalid configuration: socketio.path: \"/\" would take every route",
        ),
        (
            None,
            vec![],
            vec!["--socketio-path", "/a?b/"],
            "invalid configuration: socketio.path: \"/a?b/\" is not a plain path",
        ),
        (
            None,
            vec![],
            vec!["--socketio-ping-interval", "0"],
            "invalid configuration: socketio.ping_interval: must be greater than zero",
        ),
        (
            None,
            vec![("SWITCHBOARD_SOCKETIO__PING_TIMEOUT", "0ms")],
            vec![],
            "invalid configuration: socketio.ping_timeout: must be greater than zero",
        ),
        (
            Some("[socketio]\nconnect_timeout = 0"),
            vec![],
            vec![],
            "invalid configuration: socketio.connect_timeout: must be greater than zero",
        ),
        (
            None,
            vec![],
            vec!["--socketio-recovery-window", "0s"],
            "invalid configuration: socketio.recovery_window: must be greater than zero",
        ),
        (
            None,
            vec![],
            vec!["--socketio-ping-interval", "soon"],
            "invalid configuration: socketio.ping_interval: expected a duration",
        ),
        (
            None,
            vec![],
            vec!["--socketio-max-payload", "0"],
            "invalid configuration: socketio.max_payload: must be at least 1",
        ),
        (
            None,
            vec![],
            vec!["--socketio-max-payload", "lots"],
            "invalid configuration: socketio.max_payload: expected a size",
        ),
        (
            None,
            vec![],
            vec!["--socketio-namespace", "chat"],
            "invalid configuration: socketio.namespaces: \"chat\" is not a namespace: namespace \
             must start with '/'",
        ),
        (
            Some("[socketio]\nnamespaces = [\"/a,b\"]"),
            vec![],
            vec![],
            "invalid configuration: socketio.namespaces: \"/a,b\" is not a namespace: namespace \
             must not contain a comma",
        ),
        (
            None,
            vec![("SWITCHBOARD_SOCKETIO__NAMESPACES", "/, /chat, /")],
            vec![],
            "invalid configuration: socketio.namespaces: \"/\" is listed twice",
        ),
        (
            Some("[socketio]\nnamespaces = []"),
            vec![],
            vec![],
            "invalid configuration: socketio.namespaces: empty",
        ),
        (
            None,
            vec![],
            vec!["--socketio-recovery", "chat"],
            "invalid configuration: socketio.recovery: \"chat\" is not a namespace",
        ),
        (
            Some("[socketio]\nenabled = \"yes\""),
            vec![],
            vec![],
            "invalid configuration: socketio.enabled: expected true or false",
        ),
        (
            Some("[socketio]\nping_intervall = \"1s\""),
            vec![],
            vec![],
            "invalid configuration: socketio.ping_intervall: unknown key (did you mean \
             socketio.ping_interval?)",
        ),
        (
            None,
            vec![("SWITCHBOARD_SOCKETIO__NAMESPACE", "/")],
            vec![],
            "invalid configuration: socketio.namespace: unknown key (did you mean \
             socketio.namespaces?) (from SWITCHBOARD_SOCKETIO__NAMESPACE)",
        ),
    ] {
        let e = error(toml, &env, &args);
        assert!(e.starts_with(expected), "expected {expected:?}, got {e:?}");
        if let Some((var, _)) = env.first() {
            assert!(e.ends_with(&format!("(from {var})")), "{e}");
        }
        if let Some(flag) = args.first() {
            assert!(e.ends_with(&format!("(from {flag})")), "{e}");
        }
    }
}

#[test]
fn the_socketio_section_renders_effective_values_and_sources() {
    let loaded = try_load(
        Some("[socketio]\nnamespaces = [\"/\", \"/admin\"]"),
        &[("SWITCHBOARD_SOCKETIO__MAX_PAYLOAD", "2MiB")],
        &["--socketio-ping-interval", "300ms", "--no-socketio"],
    )
    .unwrap();
    let text = loaded.render();
    let at = |needle: &str| {
        text.find(needle)
            .unwrap_or_else(|| panic!("no {needle:?} in:\n{text}"))
    };
    assert!(at("\n[overflow]\n") < at("\n[socketio]\n"));
    assert!(at("\n[socketio]\n") < at("\n[auth]\n"));
    for line in [
        "enabled = false  # from --no-socketio",
        "path = \"/socket.io/\"",
        "ping_interval = \"300ms\"  # from --socketio-ping-interval",
        "ping_timeout = \"20s\"",
        "max_payload = \"2MiB\"  # from SWITCHBOARD_SOCKETIO__MAX_PAYLOAD",
        "connect_timeout = \"45s\"",
        "namespaces = [\"/\", \"/admin\"]  # from ",
        // Unset: the namespaces, and no source.
        "recovery = [\"/\", \"/admin\"]\n",
        "recovery_window = \"2m\"",
    ] {
        assert!(
            text.contains(&format!("\n{line}")),
            "no {line:?} in:\n{text}"
        );
    }
    // The default renders as a valid file that reads back the same.
    let text = try_load(None, &[], &[]).unwrap().render();
    assert!(text.contains("\nmax_payload = \"1000000\"\n"), "{text}");
    let again = settings(Some(&text), &[], &[]);
    assert_eq!(
        format!("{:?}", again.server_config().socketio),
        format!("{:?}", ServerConfig::default().socketio)
    );
}

// ---------------------------------------------------------------------------------------------
// [broker]

#[test]
fn broker_url_comes_from_the_flag_the_variable_or_the_file() {
    let url = |toml: Option<&str>, env: &[(&str, &str)], args: &[&str]| {
        settings(toml, env, args).broker.url
    };
    // Unset: one process, the in-memory store.
    assert_eq!(url(None, &[], &[]), None);
    assert_eq!(Settings::default().broker.url, None);
    let toml = Some("[broker]\nurl = \"redis://file:6379\"");
    let env = [("SWITCHBOARD_BROKER__URL", "redis://env:6379/1")];
    let args = ["--broker", "redis://:pw@flag:6379/2"];
    assert_eq!(url(toml, &[], &[]).as_deref(), Some("redis://file:6379"));
    assert_eq!(url(None, &env, &[]).as_deref(), Some("redis://env:6379/1"));
    assert_eq!(
        url(None, &[], &args).as_deref(),
        Some("redis://:pw@flag:6379/2")
    );
    // flag > environment > file.
    assert_eq!(
        url(toml, &env, &args).as_deref(),
        Some("redis://:pw@flag:6379/2")
    );
    assert_eq!(url(toml, &env, &[]).as_deref(), Some("redis://env:6379/1"));
    // The section merges key by key: the URL from one layer, the timeout from another.
    let s = settings(toml, &[("SWITCHBOARD_BROKER__TIMEOUT", "750ms")], &[]);
    assert_eq!(s.broker.url.as_deref(), Some("redis://file:6379"));
    assert_eq!(s.broker.timeout, ms(750));
    // The variable is the path's: a single underscore is an unknown key, with a hint.
    let e = error(None, &[("SWITCHBOARD_BROKER_URL", "redis://x:6379")], &[]);
    assert_eq!(
        e,
        "invalid configuration: broker_url: unknown key (did you mean broker.url?) \
         (from SWITCHBOARD_BROKER_URL)"
    );
}

#[test]
fn broker_timeout_defaults_to_two_seconds_and_parses_durations() {
    assert_eq!(Settings::default().broker.timeout, secs(2));
    assert_eq!(settings(None, &[], &[]).broker.timeout, secs(2));
    let timeout = |toml: Option<&str>, env: &[(&str, &str)], args: &[&str]| {
        settings(toml, env, args).broker.timeout
    };
    assert_eq!(timeout(Some("[broker]\ntimeout = 5"), &[], &[]), secs(5));
    assert_eq!(
        timeout(Some("[broker]\ntimeout = \"1m\""), &[], &[]),
        secs(60)
    );
    assert_eq!(
        timeout(None, &[("SWITCHBOARD_BROKER__TIMEOUT", "250ms")], &[]),
        ms(250)
    );
    assert_eq!(
        timeout(
            Some("[broker]\ntimeout = 5"),
            &[("SWITCHBOARD_BROKER__TIMEOUT", "250ms")],
            &["--broker-timeout", "3s"]
        ),
        secs(3)
    );
    // It applies with or without a URL (nothing to time out without one).
    assert_eq!(
        timeout(
            None,
            &[],
            &[
                "--broker",
                "redis://127.0.0.1:6379",
                "--broker-timeout",
                "100ms"
            ]
        ),
        ms(100)
    );
}

#[test]
fn bad_broker_settings_name_the_key_and_source() {
    for (toml, env, args, expected) in [
        (
            None,
            vec![],
            vec!["--broker", "http://127.0.0.1:6379"],
            "invalid configuration: broker.url: expected a Redis URL like \
             \"redis://[user:password@]host:port[/db] or \
             redis+cluster://[user:password@]host:port[,host:port…]\", got \"http://127.0.0.1:6379\"",
        ),
        (
            None,
            vec![("SWITCHBOARD_BROKER__URL", "rediss://redis.example.com:6380")],
            vec![],
            "invalid configuration: broker.url: \"rediss://redis.example.com:6380\": TLS to \
             Redis (rediss://) is not supported yet; use redis://",
        ),
        (
            Some("[broker]\nurl = \"\""),
            vec![],
            vec![],
            "invalid configuration: broker.url: expected a Redis URL like \
             \"redis://[user:password@]host:port[/db] or \
             redis+cluster://[user:password@]host:port[,host:port…]\", got an empty string",
        ),
        (
            None,
            vec![],
            vec!["--broker", ""],
            "invalid configuration: broker.url: expected a Redis URL",
        ),
        (
            None,
            vec![],
            vec!["--broker", "127.0.0.1:6379"],
            "invalid configuration: broker.url: expected a Redis URL",
        ),
        (
            None,
            vec![],
            vec!["--broker", "redis://"],
            "invalid configuration: broker.url: \"redis://\" names no host",
        ),
        (
            Some("[broker]\nurl = 6379"),
            vec![],
            vec![],
            "invalid configuration: broker.url: invalid type",
        ),
        (
            None,
            vec![],
            vec!["--broker-timeout", "0"],
            "invalid configuration: broker.timeout: must be greater than zero",
        ),
        (
            None,
            vec![("SWITCHBOARD_BROKER__TIMEOUT", "0ms")],
            vec![],
            "invalid configuration: broker.timeout: must be greater than zero",
        ),
        (
            None,
            vec![],
            vec!["--broker-timeout", "soon"],
            "invalid configuration: broker.timeout: expected a duration",
        ),
        (
            Some("[broker]\ntimeuot = \"1s\""),
            vec![],
            vec![],
            "invalid configuration: broker.timeuot: unknown key (did you mean broker.timeout?)",
        ),
    ] {
        let e = error(toml, &env, &args);
        assert!(e.starts_with(expected), "expected {expected:?}, got {e:?}");
        if let Some((var, _)) = env.first() {
            assert!(e.ends_with(&format!("(from {var})")), "{e}");
        }
        if let Some(flag) = args.first() {
            assert!(e.ends_with(&format!("(from {flag})")), "{e}");
        }
        if toml.is_some() {
            assert!(e.contains("(from ") && e.ends_with(".toml)"), "{e}");
        }
    }
    // A misspelt section (its origin is known only for the keys under it, so no source).
    let e = error(Some("[brokr]\nurl = \"redis://x\""), &[], &[]);
    assert_eq!(
        e,
        "invalid configuration: brokr: unknown key (did you mean broker?)"
    );
    // A refused URL is quoted without its password.
    for (args, expected) in [
        (
            ["--broker", "http://:hush@redis.internal:6379"],
            "got \"http://[redacted]@redis.internal:6379\" (from --broker)",
        ),
        (
            ["--broker", "rediss://app:hush@redis.internal:6380/1"],
            "\"rediss://[redacted]@redis.internal:6380/1\": TLS to Redis",
        ),
    ] {
        let e = error(None, &[], &args);
        assert!(!e.contains("hush"), "{e}");
        assert!(e.contains(expected), "expected {expected:?} in {e:?}");
    }
}

#[test]
fn the_broker_section_renders_with_the_password_redacted() {
    let loaded = try_load(
        Some("[broker]\nurl = \"redis://:file-hush@file.example:6379\""),
        &[],
        &[
            "--broker",
            "redis://app:hush@redis.internal:6379/2",
            "--broker-timeout",
            "500ms",
        ],
    )
    .unwrap();
    let text = loaded.render();
    assert!(!text.contains("hush"), "{text}");
    let at = |needle: &str| {
        text.find(needle)
            .unwrap_or_else(|| panic!("no {needle:?} in:\n{text}"))
    };
    assert!(at("\n[socketio]\n") < at("\n[broker]\n"));
    assert!(at("\n[broker]\n") < at("\n[auth]\n"));
    let url = at("\nurl = \"redis://[redacted]@redis.internal:6379/2\"  # from --broker\n");
    let timeout = at("\ntimeout = \"500ms\"  # from --broker-timeout\n");
    assert!(at("\n[broker]\n") < url && url < timeout && timeout < at("\n[auth]\n"));
    // The settings keep the real URL: only what is printed is redacted.
    assert_eq!(
        loaded.settings.broker.url.as_deref(),
        Some("redis://app:hush@redis.internal:6379/2")
    );

    // Without a password: as it is.
    let text = try_load(
        None,
        &[("SWITCHBOARD_BROKER__URL", "redis://10.0.0.5:6379/0")],
        &[],
    )
    .unwrap()
    .render();
    assert!(
        text.contains(
            "\n[broker]\nurl = \"redis://10.0.0.5:6379/0\"  # from SWITCHBOARD_BROKER__URL\n\
             timeout = \"2s\"\n"
        ),
        "{text}"
    );
    // Unset: a comment, and the default renders as a file that reads back the same.
    let text = try_load(None, &[], &[]).unwrap().render();
    assert!(
        text.contains("\n[broker]\n# url = (unset)\ntimeout = \"2s\"\n"),
        "{text}"
    );
    assert_eq!(
        settings(Some(&text), &[], &[]).broker,
        BrokerSettings::default()
    );
}

// ---------------------------------------------------------------------------------------------
// [auth]

fn test_key(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../auth/tests/keys")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

#[test]
fn the_auth_table_parses_into_the_auth_crates_config() {
    let toml = format!(
        r#"
[auth]
anonymous = false
cookie_name = "sid"
allowed_origins = ["https://app.example.com", "https://*.example.com"]

[[auth.permissions]]
rooms = "user:*"
allow = {{ match = "user:{{sub}}" }}
[[auth.permissions]]
rooms = "news:*"
actions = ["join", "history"]
allow = "anyone"

[auth.sources]
query = false

[auth.jwt]
secrets = ["dev-secret", "base64:c2VjcmV0"]
public_key_files = ["{ec}"]
algorithms = ["HS256", "ES256"]
leeway = "2m"
issuer = "https://idp.example.com"
audience = ["switchboard", "other"]
require_exp = false

[auth.tickets]
ttl = "10s"
max_outstanding = 5

[auth.connect_proxy]
url = "http://127.0.0.1:3000/connect"
timeout = "500ms"
cache_ttl = 0
cache_size = 7
max_response_bytes = "1KiB"
"#,
        ec = test_key("ec256.pub")
    );
    let loaded = try_load(Some(&toml), &[], &[]).unwrap();
    let c = loaded.settings.auth.config();
    assert_eq!(c.anonymous, Some(false));
    assert_eq!(c.cookie_name, "sid");
    assert_eq!(c.allowed_origins.len(), 2);
    assert_eq!(c.permissions.len(), 2);
    assert_eq!(c.permissions[0].allow, Allow::Match("user:{sub}".into()));
    assert_eq!(c.permissions[0].actions.len(), 4, "default: every action");
    assert_eq!(
        c.permissions[1].actions,
        [Action::Subscribe, Action::History]
    );
    assert!(!c.sources.query && c.sources.header && c.sources.first_message);
    assert_eq!(c.jwt.secrets, ["dev-secret", "base64:c2VjcmV0"]);
    assert_eq!(c.jwt.public_key_files.len(), 1);
    assert_eq!(c.jwt.algorithms, ["HS256", "ES256"]);
    assert_eq!(c.jwt.leeway, secs(120));
    assert_eq!(c.jwt.issuer, ["https://idp.example.com"]);
    assert_eq!(c.jwt.audience, ["switchboard", "other"]);
    assert!(!c.jwt.require_exp);
    assert_eq!(c.tickets.ttl, secs(10));
    assert_eq!(c.tickets.max_outstanding, 5);
    let proxy = c.connect_proxy.unwrap();
    assert_eq!(proxy.url, "http://127.0.0.1:3000/connect");
    assert_eq!(proxy.timeout, Duration::from_millis(500));
    assert_eq!(proxy.cache_ttl, secs(0));
    assert_eq!(proxy.cache_size, 7);
    assert_eq!(proxy.max_response_bytes, 1024);

    let auth = loaded.server_config().auth.expect("an authenticator");
    assert!(!auth.anonymous_allowed());
    assert!(auth.has_verifier());
    assert!(!auth.sources().query);
    assert_eq!(
        auth.jwt().unwrap().algorithms(),
        [Algorithm::HS256, Algorithm::ES256]
    );
}

#[test]
fn without_auth_settings_there_is_no_authenticator() {
    let loaded = try_load(None, &[], &[]).unwrap();
    assert!(loaded.authenticator.is_none());
    assert!(loaded.server_config().auth.is_none());
    // Defaults written out change nothing.
    let loaded = try_load(
        Some("[auth]\ncookie_name = \"session\"\n[auth.jwt]\nleeway = \"30s\""),
        &[],
        &[],
    )
    .unwrap();
    assert!(loaded.authenticator.is_none());
    // One setting is enough: a secret turns authentication on, anonymous access off.
    let loaded = try_load(None, &[("SWITCHBOARD_JWT_SECRET", "s3cret")], &[]).unwrap();
    let auth = loaded.authenticator.unwrap();
    assert!(auth.has_verifier() && !auth.anonymous_allowed());
    let loaded = try_load(None, &[], &["--jwt-secret", "s", "--auth-anonymous"]).unwrap();
    assert!(loaded.authenticator.unwrap().anonymous_allowed());
}

#[test]
fn auth_flags_and_variables_override_the_tables_fields() {
    let toml = "[auth]\ncookie_name = \"file\"\nallowed_origins = [\"https://file.example\"]\n\
                [auth.jwt]\nsecrets = [\"file-secret\"]\nissuer = \"file-iss\"\nleeway = 5\n\
                [auth.sources]\nquery = true\n[auth.connect_proxy]\nurl = \"http://file/\"\n";
    let s = settings(
        Some(toml),
        &[
            ("SWITCHBOARD_AUTH__COOKIE_NAME", "env"),
            ("SWITCHBOARD_AUTH__JWT__ISSUER", "env-iss-1, env-iss-2"),
            ("SWITCHBOARD_AUTH__JWT__LEEWAY", "1m"),
            ("SWITCHBOARD_AUTH__SOURCES__QUERY", "false"),
            ("SWITCHBOARD_AUTH__CONNECT_PROXY__TIMEOUT", "1s"),
            ("SWITCHBOARD_JWT_SECRET", "env,secret"),
        ],
        &[
            "--auth-cookie-name",
            "flag",
            "--allowed-origin",
            "https://flag.example",
            "--jwt-audience",
            "aud",
            "--auth-from-header=false",
            "--auth-permission",
            "chat:*=authenticated/publish",
        ],
    );
    let a = &s.auth;
    assert_eq!(a.cookie_name, "flag");
    assert_eq!(a.allowed_origins, ["https://flag.example"]);
    assert_eq!(a.jwt.issuer, ["env-iss-1", "env-iss-2"]);
    assert_eq!(a.jwt.leeway, secs(60));
    assert_eq!(
        a.jwt.secrets,
        ["env,secret"],
        "the singular variable: one secret, taken whole"
    );
    assert_eq!(a.jwt.audience, ["aud"]);
    assert!(!a.sources.query && !a.sources.header && a.sources.cookie);
    assert_eq!(a.connect_proxy.url.as_deref(), Some("http://file/"));
    assert_eq!(a.connect_proxy.timeout, secs(1));
    assert_eq!(a.permissions.len(), 1);
    assert_eq!(a.permissions[0].actions, [Action::Publish]);
    assert_eq!(a.permissions[0].allow, Allow::Authenticated);

    // Flags beat the variables; repeated flags form the list, unsplit.
    let s = settings(
        Some(toml),
        &[("SWITCHBOARD_AUTH__JWT__SECRETS", "a,b")],
        &["--jwt-secret", "x,y", "--jwt-secret", "z"],
    );
    assert_eq!(s.auth.jwt.secrets, ["x,y", "z"]);
    let s = settings(None, &[("SWITCHBOARD_AUTH__JWT__SECRETS", "a, b")], &[]);
    assert_eq!(s.auth.jwt.secrets, ["a", "b"]);
    let e = error(
        None,
        &[
            ("SWITCHBOARD_JWT_SECRET", "x"),
            ("SWITCHBOARD_AUTH__JWT__SECRETS", "y"),
        ],
        &[],
    );
    assert!(
        e.contains("auth.jwt.secrets")
            && e.contains("SWITCHBOARD_JWT_SECRET")
            && e.contains("SWITCHBOARD_AUTH__JWT__SECRETS"),
        "{e}"
    );
    // anonymous: true, false or auto, in every layer.
    let anonymous = |toml: Option<&str>, args: &[&str]| settings(toml, &[], args).auth.anonymous;
    assert_eq!(anonymous(Some("[auth]\nanonymous = true"), &[]), Some(true));
    assert_eq!(
        anonymous(Some("[auth]\nanonymous = true"), &["--auth-anonymous=auto"]),
        None
    );
    assert_eq!(anonymous(None, &["--auth-anonymous=false"]), Some(false));
}

#[test]
fn bad_auth_settings_name_the_key_and_source() {
    let missing = std::env::temp_dir().join("switchboard-settings-no-such-key.pem");
    let missing = missing.to_str().unwrap();
    for (toml, env, args, expected) in [
        (
            None,
            vec![],
            vec!["--jwt-public-key", missing],
            "invalid configuration: auth.jwt.public_key_files[0]: reading ",
        ),
        (
            None,
            vec![],
            vec!["--jwt-public-key", &test_key("ec256.key") as &str],
            "invalid configuration: auth.jwt.public_key_files[0]: ",
        ),
        (
            None,
            vec![("SWITCHBOARD_JWT_SECRET", "base64:!!!")],
            vec![],
            "invalid configuration: auth.jwt.secrets[0]: jwt secret: bad base64",
        ),
        (
            Some("[auth.jwt]\nsecrets = [\"\"]"),
            vec![],
            vec![],
            "invalid configuration: auth.jwt.secrets[0]: jwt secret is empty",
        ),
        (
            None,
            vec![],
            vec!["--jwt-algorithm", "none", "--jwt-secret", "s"],
            "invalid configuration: auth.jwt.algorithms: ",
        ),
        (
            None,
            vec![],
            vec!["--jwt-algorithm", "HS999"],
            "invalid configuration: auth.jwt.algorithms: unknown jwt algorithm",
        ),
        (
            None,
            vec![],
            vec!["--allowed-origin", "app.example.com"],
            "invalid configuration: auth.allowed_origins: origin pattern",
        ),
        (
            None,
            vec![("SWITCHBOARD_AUTH__CONNECT_PROXY__URL", "ftp://x/")],
            vec![],
            "invalid configuration: auth.connect_proxy.url: ",
        ),
        (
            None,
            vec![],
            vec!["--jwks-file", missing],
            "invalid configuration: auth.jwt.jwks_file: ",
        ),
        (
            None,
            vec![],
            vec!["--jwks-url", "not a url"],
            "invalid configuration: auth.jwt.jwks_url: ",
        ),
        (
            Some("[[auth.permissions]]\nrooms = \"a\"\nallow = \"everyone\""),
            vec![],
            vec![],
            "invalid configuration: auth.permissions[0].allow: unknown variant `everyone`",
        ),
        (
            Some("[[auth.permissions]]\nrooms = \"\"\nallow = \"anyone\""),
            vec![],
            vec![],
            "invalid configuration: auth.permissions[0].rooms: empty pattern",
        ),
        (
            None,
            vec![],
            vec!["--auth-permission", "x=anyone/shout"],
            "invalid configuration: auth.permissions[0]: expected an action",
        ),
        (
            Some("[auth]\nanonymous = \"maybe\""),
            vec![],
            vec![],
            "invalid configuration: auth.anonymous: expected true, false or \"auto\"",
        ),
        (
            None,
            vec![("SWITCHBOARD_AUTH__JWT__LEEWAY", "soon")],
            vec![],
            "invalid configuration: auth.jwt.leeway: expected a duration",
        ),
        (
            None,
            vec![],
            vec!["--ticket-max-outstanding", "0"],
            "invalid configuration: auth.tickets.max_outstanding: ",
        ),
        (
            Some("[auth.jwt]\nsecret = \"x\""),
            vec![],
            vec![],
            "invalid configuration: auth.jwt.secret: unknown key (did you mean auth.jwt.secrets?)",
        ),
        (
            None,
            vec![("SWITCHBOARD_AUTH__JWT__SECRET", "x")],
            vec![],
            "invalid configuration: auth.jwt.secret: unknown key (did you mean auth.jwt.secrets?) \
             (from SWITCHBOARD_AUTH__JWT__SECRET)",
        ),
    ] {
        let e = error(toml, &env, &args);
        assert!(e.starts_with(expected), "expected {expected:?}, got {e:?}");
        if let Some((var, _)) = env.first() {
            assert!(e.ends_with(&format!("(from {var})")), "{e}");
        }
        if let Some(flag) = args.first() {
            assert!(e.ends_with(&format!("(from {flag})")), "{e}");
        }
    }
    // Both JWKS sources.
    let jwks = file("{\"keys\": []}");
    let e = error(
        None,
        &[],
        &[
            "--jwks-file",
            jwks.to_str().unwrap(),
            "--jwks-url",
            "https://idp/jwks",
        ],
    );
    let _ = std::fs::remove_file(jwks);
    assert!(
        e.starts_with("invalid configuration: auth.jwt.jwks_url: set auth.jwt.jwks_file or"),
        "{e}"
    );
    // A usable public key loads.
    let loaded = try_load(None, &[], &["--jwt-public-key", &test_key("ec256.pub")]).unwrap();
    let auth = loaded.authenticator.unwrap();
    let algorithms = auth.jwt().unwrap().algorithms();
    assert!(algorithms.contains(&Algorithm::ES256), "{algorithms:?}");
    assert!(!algorithms.contains(&Algorithm::HS256), "{algorithms:?}");
}

#[test]
fn auth_errors_and_rendering_never_show_secrets_or_url_credentials() {
    let e = error(
        None,
        &[],
        &[
            "--connect-proxy",
            "ftp://user:pa55@proxy.example/connect?key=t0ken",
        ],
    );
    assert!(e.contains("auth.connect_proxy.url"), "{e}");
    assert!(!e.contains("pa55") && !e.contains("t0ken"), "{e}");
    let e = error(
        None,
        &[],
        &["--jwks-url", "gopher://user:pa55@idp.example/jwks"],
    );
    assert!(
        e.contains("auth.jwt.jwks_url") && !e.contains("pa55"),
        "{e}"
    );

    let loaded = try_load(
        Some("[auth.jwt]\nsecrets = [\"file-hush\", \"base64:aHVzaA==\"]\njwks_url = \"https://u:pa55@idp.example/jwks?k=t0ken\""),
        &[],
        &["--connect-proxy", "https://app:pa55@app.example/connect"],
    )
    .unwrap();
    let text = loaded.render();
    assert!(
        !text.contains("hush")
            && !text.contains("aHVzaA")
            && !text.contains("pa55")
            && !text.contains("t0ken"),
        "{text}"
    );
    assert!(
        text.contains("\nsecrets = [\"[redacted]\", \"[redacted]\"]  # from "),
        "{text}"
    );
    assert!(
        text.contains("\njwks_url = \"https://[redacted]@idp.example/jwks?[redacted]\"  # from "),
        "{text}"
    );
    assert!(
        text.contains("\nurl = \"https://[redacted]@app.example/connect\"  # from --connect-proxy"),
        "{text}"
    );
    // Nor does the authenticator's Debug (the server may log its configuration).
    let debug = format!("{:?}", loaded.server_config());
    assert!(
        !debug.contains("hush") && !debug.contains("pa55"),
        "{debug}"
    );
}

#[test]
fn the_auth_section_renders_in_file_order_with_permission_rules() {
    let loaded = try_load(
        None,
        &[(
            "SWITCHBOARD_AUTH__PERMISSIONS",
            "user:*=match:user:{sub}, news:*=anyone/subscribe+history",
        )],
        &["--jwt-secret", "s", "--jwt-issuer", "me"],
    )
    .unwrap();
    let text = loaded.render();
    let at = |needle: &str| {
        text.find(needle)
            .unwrap_or_else(|| panic!("no {needle:?} in:\n{text}"))
    };
    assert!(at("\n[overflow]\n") < at("\n[auth]\n"));
    assert!(at("\n[auth]\n") < at("\n[auth.sources]\n"));
    assert!(at("\n[auth.sources]\n") < at("\n[auth.jwt]\n"));
    assert!(at("\n[auth.jwt]\n") < at("\n[auth.tickets]\n"));
    assert!(at("\n[auth.tickets]\n") < at("\n[auth.connect_proxy]\n"));
    assert!(text.contains(
        "\npermissions = [{ rooms = \"user:*\", allow = { match = \"user:{sub}\" } }, \
         { rooms = \"news:*\", actions = [\"subscribe\", \"history\"], allow = \"anyone\" }]  \
         # from SWITCHBOARD_AUTH__PERMISSIONS\n"
    ));
    assert!(
        text.contains("\nissuer = [\"me\"]  # from --jwt-issuer\n"),
        "{text}"
    );
    assert!(text.contains("\nanonymous = \"auto\"\n"), "{text}");
    assert!(text.contains("\n# url = (unset)\n"), "{text}");
}
