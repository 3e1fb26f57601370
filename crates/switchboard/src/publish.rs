//! `switchboard publish`: one message through the HTTP API (`POST /api/publish`), the way a
//! backend publishes.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use serde_json::{Map, Value};
use switchboard_auth::HttpClient;

/// `switchboard publish` arguments.
#[derive(clap::Args, Debug)]
pub(crate) struct PublishArgs {
    /// The channel (room).
    #[arg(long, value_name = "CHANNEL")]
    channel: String,
    /// The message's `data`, as JSON (a bare word that is not JSON is sent as a string).
    #[arg(long, value_name = "JSON")]
    data: String,
    /// The message's `type` [default: publish].
    #[arg(long = "type", value_name = "TYPE")]
    kind: Option<String>,
    /// An id: publishing the same id again within the dedup window stores nothing new.
    #[arg(long, value_name = "ID")]
    id: Option<String>,
    /// The server's base URL.
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// The API key (the server's `api_keys`; the same variable the server reads).
    #[arg(
        long,
        value_name = "KEY",
        env = "SWITCHBOARD_API_KEY",
        hide_env_values = true
    )]
    api_key: String,
}

/// Publish; prints the server's answer (`{"channel","offset","epoch","delivered"}`).
pub(crate) async fn run(args: PublishArgs) -> Result<(), String> {
    let data = serde_json::from_str(&args.data).unwrap_or(Value::String(args.data.clone()));
    let mut body = Map::new();
    body.insert("channel".into(), Value::String(args.channel));
    body.insert("data".into(), data);
    if let Some(kind) = args.kind {
        body.insert("type".into(), Value::String(kind));
    }
    if let Some(id) = args.id {
        body.insert("id".into(), Value::String(id));
    }
    let url = format!("{}/api/publish", args.url.trim_end_matches('/'));
    let request = http::Request::post(&url)
        .header("authorization", format!("Bearer {}", args.api_key))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(Value::Object(body).to_string())))
        .map_err(|e| format!("bad URL {url:?}: {e}"))?;
    let (status, answer) = HttpClient::new()
        .send(request, 1 << 20, Duration::from_secs(30))
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let text = String::from_utf8_lossy(&answer);
    if !status.is_success() {
        return Err(format!("{url}: HTTP {status}: {}", text.trim()));
    }
    println!("{}", text.trim());
    Ok(())
}
