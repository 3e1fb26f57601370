//! The `switchboard` command: thin CLI over the server crate (no protocol logic here).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use switchboard_hub::{HistoryLimits, HubConfig, RoomPattern};
use switchboard_server::rate::RateLimit;
use switchboard_server::{Server, ServerConfig};
use tokio_util::sync::CancellationToken;

// mimalloc: size-segregated pages keep the per-connection allocations that outlive the HTTP
// handshake from being scattered among freed handshake buffers (measured: see
// docs/benchmarks.md, memory per idle connection).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "switchboard",
    version,
    about = "Self-hosted real-time messaging server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the server (defaults: 127.0.0.1:8080, in-memory everything).
    Serve(ServeArgs),
}

#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Enable the `/echo` WebSocket endpoint (conformance runs and benchmarks only).
    #[arg(long)]
    echo: bool,
    /// Largest accepted message in bytes, after decompression (close 1009 above it).
    #[arg(long, default_value_t = 1024 * 1024)]
    max_message_size: usize,
    /// Disable permessage-deflate.
    #[arg(long)]
    no_deflate: bool,
    /// Most WebSocket connections at once (503 above it). Default: unlimited.
    #[arg(long)]
    max_connections: Option<usize>,
    /// Most WebSocket connections from one IP address (429 above it).
    #[arg(long, default_value_t = 1000)]
    max_connections_per_ip: usize,
    /// API key for the HTTP API (`Authorization: Bearer KEY`); repeatable. Also read from
    /// SWITCHBOARD_API_KEY. Without one the API answers 401.
    #[arg(long = "api-key", env = "SWITCHBOARD_API_KEY")]
    api_keys: Vec<String>,
    /// Per-connection message rate limit on /ws: MESSAGES/SECONDS[/BURST] or `off`
    /// (error "Rate limit exceeded", then close 4002).
    #[arg(long, default_value = "100/10/20", value_parser = parse_rate_limit)]
    rate_limit: RateSetting,
    /// History retention for rooms matching a pattern: PATTERN=COUNT[/SECONDS], e.g.
    /// `chat:*=500/3600` (repeatable; first match wins). Default for other rooms: 100/600.
    #[arg(long = "history", value_parser = parse_history_rule)]
    history: Vec<(String, usize, u64)>,
    /// Runtime worker threads (default: one per core). 1 runs a single-threaded runtime.
    #[arg(long)]
    threads: Option<usize>,
}

/// `--rate-limit` value: a limit, or none.
#[derive(Debug, Clone, Copy)]
struct RateSetting(Option<RateLimit>);

/// `MESSAGES/SECONDS[/BURST]` or `off`.
fn parse_rate_limit(value: &str) -> Result<RateSetting, String> {
    if value == "off" {
        return Ok(RateSetting(None));
    }
    let parts: Vec<&str> = value.split('/').collect();
    let number = |s: &str| {
        s.parse::<u32>().ok().filter(|n| *n > 0).ok_or_else(|| {
            format!("expected MESSAGES/SECONDS[/BURST] (positive integers) or off, got {value:?}")
        })
    };
    let (messages, seconds, burst) = match parts[..] {
        [m, s] => (number(m)?, number(s)?, None),
        [m, s, b] => (number(m)?, number(s)?, Some(number(b)?)),
        _ => {
            return Err(format!(
                "expected MESSAGES/SECONDS[/BURST] or off, got {value:?}"
            ))
        }
    };
    Ok(RateSetting(Some(RateLimit {
        messages,
        per: Duration::from_secs(seconds as u64),
        burst: burst.unwrap_or(messages),
    })))
}

/// `PATTERN=COUNT[/SECONDS]`.
fn parse_history_rule(rule: &str) -> Result<(String, usize, u64), String> {
    let (pattern, limits) = rule
        .rsplit_once('=')
        .ok_or_else(|| format!("expected PATTERN=COUNT[/SECONDS], got {rule:?}"))?;
    let (count, secs) = match limits.split_once('/') {
        Some((c, s)) => (
            c,
            s.parse::<u64>()
                .map_err(|e| format!("bad SECONDS in {rule:?}: {e}"))?,
        ),
        None => (limits, 600),
    };
    let count = count
        .parse::<usize>()
        .map_err(|e| format!("bad COUNT in {rule:?}: {e}"))?;
    if pattern.is_empty() {
        return Err(format!("empty PATTERN in {rule:?}"));
    }
    Ok((pattern.to_owned(), count, secs))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match cli.command {
        Command::Serve(args) => serve(args),
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let runtime = match args.threads {
        Some(1) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
        Some(n) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n.max(1))
            .enable_all()
            .build()?,
        None => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?,
    };
    let config = ServerConfig {
        listen: args.listen,
        echo: args.echo,
        max_message_size: args.max_message_size,
        api_keys: args.api_keys.clone(),
        max_connections: args.max_connections,
        max_connections_per_ip: args.max_connections_per_ip,
        rate_limit: args.rate_limit.0,
        hub: HubConfig {
            history: args
                .history
                .iter()
                .map(|(pattern, count, secs)| {
                    (
                        RoomPattern::new(pattern),
                        HistoryLimits {
                            max_messages: *count,
                            max_age: Duration::from_secs(*secs),
                        },
                    )
                })
                .collect(),
            ..HubConfig::default()
        },
        deflate: if args.no_deflate {
            None
        } else {
            ServerConfig::default().deflate
        },
        ..ServerConfig::default()
    };
    runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        let server = Server::bind(config, shutdown.clone())
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        tracing::info!(addr = %server.local_addr()?, echo = args.echo, "switchboard listening");
        tokio::spawn(wait_for_signal(shutdown));
        let clean = server.run().await;
        tracing::info!(clean, "switchboard stopped");
        Ok(())
    })
}

async fn wait_for_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
    shutdown.cancel();
}
