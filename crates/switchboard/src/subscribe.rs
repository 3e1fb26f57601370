//! `switchboard subscribe`: the channels' messages as JSON lines on stdout, through the Rust
//! client (reconnects and resumes on its own; Ctrl-C closes cleanly).

use std::io::Write;

use switchboard_client::{Client, Config, Event, Position, State, TokenProvider, TokenVia};

/// `switchboard subscribe` arguments.
#[derive(clap::Args, Debug)]
pub(crate) struct SubscribeArgs {
    /// A channel (room) to join (repeatable, or comma-separated).
    #[arg(long, value_name = "CHANNEL", required = true, value_delimiter = ',')]
    channel: Vec<String>,
    /// Start after this offset: every stored message after it is printed first (with
    /// several channels, the same offset for each).
    #[arg(long, value_name = "OFFSET")]
    since: Option<u64>,
    /// The WebSocket URL.
    #[arg(long, value_name = "URL", default_value = "ws://127.0.0.1:8080/ws")]
    url: String,
    /// A token (JWT or ticket) sent as `Authorization: Bearer`.
    #[arg(long, value_name = "TOKEN")]
    token: Option<String>,
    /// Exit after this many messages.
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// Print nothing on stderr (connection states, resyncs).
    #[arg(long)]
    quiet: bool,
}

pub(crate) async fn run(args: SubscribeArgs) -> Result<(), String> {
    let mut config = Config::new(&args.url);
    if let Some(token) = &args.token {
        config = config.token(TokenVia::Header, TokenProvider::fixed(token.clone()));
    }
    let (client, mut events) = Client::connect(config).map_err(|e| e.to_string())?;
    let note = |text: String| {
        if !args.quiet {
            eprintln!("{text}");
        }
    };
    // Joins are answered once connected; they are queued until then.
    for channel in &args.channel {
        let client = client.clone();
        let (channel, since) = (channel.clone(), args.since);
        tokio::spawn(async move {
            let since = since.map(|offset| Position {
                offset,
                epoch: String::new(),
            });
            if let Err(e) = client.join_from(&channel, since).await {
                eprintln!("error: joining {channel}: {e}");
            }
        });
    }
    let mut printed = 0;
    let stdout = std::io::stdout();
    loop {
        let event = tokio::select! {
            event = events.next() => event,
            _ = tokio::signal::ctrl_c() => {
                client.close().await;
                return Ok(());
            }
        };
        let Some(event) = event else {
            return Ok(());
        };
        match event {
            Event::Message(m) => {
                let mut out = stdout.lock();
                let _ = writeln!(out, "{}", m.body);
                let _ = out.flush();
                printed += 1;
                if args.count.is_some_and(|n| printed >= n) {
                    client.close().await;
                    return Ok(());
                }
            }
            Event::State(State::Failed { reason }) => return Err(reason),
            Event::State(State::Closed { code, reason }) => {
                return Err(format!("closed by the server ({code} {reason})"));
            }
            Event::State(state) => note(format!("{state:?}")),
            Event::Resync { room, offset } => note(format!(
                "{room}: messages before offset {offset} could not be replayed (recovered: false)"
            )),
            Event::Lagged { missed } => note(format!("lagged: {missed} messages dropped")),
            Event::Error { code, message } => note(format!("error {code}: {message}")),
            Event::Refused {
                room,
                code,
                message,
            } => note(format!(
                "{room}: the server refused to rejoin it ({code}: {message})"
            )),
            Event::Presence { .. } => {}
        }
    }
}
