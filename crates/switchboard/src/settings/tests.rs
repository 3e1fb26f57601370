#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use clap::{Args as _, FromArgMatches as _};

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
        Some("api_keys = [\"file-secret\"]\necho = true"),
        &[("SWITCHBOARD_API_KEY", "env-secret")],
        &["--listen", "0.0.0.0:7"],
    )
    .unwrap();
    let text = loaded.render();
    assert!(!text.contains("secret"), "{text}");
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
    let loaded = try_load(
        Some(
            "[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n[[history.rooms]]\npattern = \"a:*\"\n[[overflow.rooms]]\npattern = \"b:*\"\npolicy = \"close\"",
        ),
        &[],
        &["--rate-limit", "3/500ms", "--heartbeat-timeout", "1500ms", "--threads", "4"],
    )
    .unwrap();
    let text = loaded.render();
    for key in KEYS {
        assert!(
            text.contains(&format!("\n{} = ", key.name())),
            "{} missing:\n{text}",
            key.path
        );
    }
    let again = settings(Some(&text), &[], &[]);
    assert_eq!(
        format!("{:?}", again.server_config()),
        format!("{:?}", loaded.settings.server_config())
    );
    assert_eq!(again.threads, Some(4));
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
