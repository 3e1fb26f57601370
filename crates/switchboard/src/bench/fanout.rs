//! `bench fanout`: one publisher, N subscribers of one room, over the native protocol.
//! Each message carries its send time; a subscriber's latency is receipt minus that.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use serde_json::{json, Value};
use switchboard_client::websocket::Options;
use switchboard_client::{WebSocket, WsMessage};
use tokio::task::{JoinHandle, JoinSet};

use super::{Common, Run};

/// `switchboard bench fanout` arguments.
#[derive(clap::Args, Debug)]
pub(crate) struct FanoutArgs {
    #[command(flatten)]
    pub(crate) common: Common,
    /// Subscribers.
    #[arg(long, default_value_t = 100)]
    subscribers: usize,
    /// Messages published per second.
    #[arg(long, default_value_t = 100)]
    rate: u32,
    /// The room.
    #[arg(long, default_value = "bench")]
    room: String,
    /// Publish through the HTTP API with this key (POST /api/publish on the same host)
    /// instead of a WebSocket publisher (which the server's per-connection rate limit may
    /// cut off: `serve --rate-limit off`).
    #[arg(long, value_name = "KEY")]
    api_key: Option<String>,
    /// A token for every connection (Authorization: Bearer).
    #[arg(long, value_name = "TOKEN")]
    token: Option<String>,
}

pub(crate) async fn start(
    url: &str,
    args: &FanoutArgs,
    run: Arc<Run>,
) -> Result<JoinHandle<()>, String> {
    if args.rate == 0 {
        return Err("--rate must be at least 1".into());
    }
    let mut options = Options::default();
    if let Some(token) = &args.token {
        options
            .headers
            .push(("Authorization".into(), format!("Bearer {token}")));
    }
    let epoch = Instant::now();
    let mut joining = JoinSet::new();
    for _ in 0..args.subscribers {
        let (url, options, room) = (url.to_owned(), options.clone(), args.room.clone());
        joining.spawn(async move { joined(&url, &options, &room).await });
    }
    let mut subscribers = Vec::new();
    while let Some(done) = joining.join_next().await {
        subscribers.push(done.map_err(|e| e.to_string())??);
    }
    let publisher = match &args.api_key {
        Some(key) => Publisher::Http {
            url: api_url(url)?,
            key: key.clone(),
            client: switchboard_auth::HttpClient::new(),
        },
        None => Publisher::Ws(joined(url, &options, &args.room).await?),
    };
    let (room, interval) = (
        args.room.clone(),
        Duration::from_secs_f64(1.0 / f64::from(args.rate)),
    );
    Ok(tokio::spawn(async move {
        let mut tasks = JoinSet::new();
        for ws in subscribers {
            let (run, room) = (run.clone(), room.clone());
            tasks.spawn(subscribe(ws, room, epoch, run));
        }
        tasks.spawn(publish(publisher, room, interval, epoch, run));
        while tasks.join_next().await.is_some() {}
    }))
}

/// A connection that joined `room` (after `welcome`, `joined`).
async fn joined(url: &str, options: &Options, room: &str) -> Result<WebSocket, String> {
    let mut ws = WebSocket::connect(url, options)
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    ws.send_text(&json!({"type": "join", "room": room}).to_string())
        .await
        .map_err(|e| e.to_string())?;
    loop {
        match ws.recv().await {
            Ok(Some(WsMessage::Text(text))) => {
                let v: Value = serde_json::from_slice(&text).unwrap_or_default();
                match v["type"].as_str() {
                    Some("joined") => return Ok(ws),
                    Some("error") => return Err(format!("{url}: join refused: {v}")),
                    _ => {}
                }
            }
            Ok(_) => {}
            Err(e) => return Err(format!("{url}: {e}")),
        }
        if ws.close_code().is_some() {
            return Err(format!(
                "{url}: closed {:?} before joining",
                ws.close_code()
            ));
        }
    }
}

async fn subscribe(mut ws: WebSocket, room: String, epoch: Instant, run: Arc<Run>) {
    while !run.stopped() {
        match ws.recv().await {
            Ok(Some(WsMessage::Text(text))) => {
                let Ok(v) = serde_json::from_slice::<Value>(&text) else {
                    continue;
                };
                if v["room"].as_str() != Some(room.as_str()) {
                    continue;
                }
                if let Some(sent) = v["data"]["t"].as_u64() {
                    let now = epoch.elapsed();
                    run.record(now.saturating_sub(Duration::from_micros(sent)));
                }
            }
            Ok(Some(WsMessage::Binary(_))) => {}
            Ok(None) | Err(_) => {
                run.recorder.error();
                return;
            }
        }
    }
}

enum Publisher {
    Ws(WebSocket),
    Http {
        url: String,
        key: String,
        client: switchboard_auth::HttpClient,
    },
}

async fn publish(
    mut publisher: Publisher,
    room: String,
    interval: Duration,
    epoch: Instant,
    run: Arc<Run>,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    while !run.stopped() {
        tick.tick().await;
        let t = u64::try_from(epoch.elapsed().as_micros()).unwrap_or(u64::MAX);
        let ok = match &mut publisher {
            Publisher::Ws(ws) => {
                let message = json!({"type": "publish", "room": room, "data": {"t": t}});
                // The publisher's own copies and acks are read and dropped.
                let sent = ws.send_text(&message.to_string()).await.is_ok();
                while let Ok(Ok(Some(_))) = tokio::time::timeout(Duration::ZERO, ws.recv()).await {}
                sent
            }
            Publisher::Http { url, key, client } => {
                let body = json!({"channel": room, "data": {"t": t}}).to_string();
                let request = http::Request::post(url.as_str())
                    .header("authorization", format!("Bearer {key}"))
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(body)));
                match request {
                    Ok(request) => client
                        .send(request, 1 << 16, Duration::from_secs(10))
                        .await
                        .is_ok_and(|(status, _)| status.is_success()),
                    Err(_) => false,
                }
            }
        };
        if !ok {
            run.recorder.error();
        }
    }
}

/// `ws://host:port/anything` → `http://host:port/api/publish` (wss → https).
fn api_url(ws_url: &str) -> Result<String, String> {
    let uri: http::Uri = ws_url
        .parse()
        .map_err(|e| format!("bad URL {ws_url:?}: {e}"))?;
    let scheme = match uri.scheme_str() {
        Some("wss") => "https",
        Some("ws") => "http",
        _ => return Err(format!("bad URL {ws_url:?}: ws:// or wss://")),
    };
    let authority = uri.authority().ok_or("no host in the URL")?;
    Ok(format!("{scheme}://{authority}/api/publish"))
}

#[cfg(test)]
mod tests {
    use super::api_url;

    #[test]
    fn the_api_is_on_the_same_host() {
        assert_eq!(
            api_url("ws://127.0.0.1:8080/ws").as_deref(),
            Ok("http://127.0.0.1:8080/api/publish")
        );
        assert_eq!(
            api_url("wss://rt.example.com/ws").as_deref(),
            Ok("https://rt.example.com/api/publish")
        );
        assert!(api_url("http://x/").is_err());
    }
}
