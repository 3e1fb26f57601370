//! The Autobahn|Testsuite `fuzzingserver` client: runs every case the server offers against
//! [`switchboard_client::WebSocket`], echoing each message, then asks for the reports.
//!
//! ```sh
//! cargo run --release -p switchboard-client --example autobahn -- ws://127.0.0.1:9001 [AGENT]
//! ```
//! `scripts/conformance-client.sh` starts the fuzzingserver and compares the results.

use switchboard_client::websocket::Options;
use switchboard_client::{WebSocket, WsMessage};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let base = args
        .next()
        .ok_or("usage: autobahn ws://HOST:PORT [AGENT]")?;
    let agent = args.next().unwrap_or_else(|| "switchboard-client".into());
    let options = Options {
        deflate: true,
        ..Options::default()
    };

    let mut ws = WebSocket::connect(&format!("{base}/getCaseCount"), &options).await?;
    let count: u32 = match ws.recv().await? {
        Some(WsMessage::Text(text)) => std::str::from_utf8(&text)?.trim().parse()?,
        other => return Err(format!("getCaseCount answered {other:?}").into()),
    };
    ws.close(1000, "").await;

    for case in 1..=count {
        let url = format!("{base}/runCase?case={case}&agent={agent}");
        let mut ws = match WebSocket::connect(&url, &options).await {
            Ok(ws) => ws,
            Err(e) => {
                eprintln!("case {case}: {e}");
                continue;
            }
        };
        loop {
            let echoed = match ws.recv().await {
                Ok(Some(WsMessage::Text(text))) => match std::str::from_utf8(&text) {
                    Ok(text) => ws.send_text(text).await,
                    Err(_) => break, // the decoder validated it: not reached
                },
                Ok(Some(WsMessage::Binary(bytes))) => ws.send_binary(&bytes).await,
                Ok(None) | Err(_) => break,
            };
            if echoed.is_err() {
                break;
            }
        }
        // Wait for the server to end the TCP connection (it closes first).
        ws.close(1000, "").await;
        if case % 50 == 0 {
            eprintln!("{case}/{count}");
        }
    }

    let ws = WebSocket::connect(&format!("{base}/updateReports?agent={agent}"), &options).await?;
    ws.close(1000, "").await;
    Ok(())
}
