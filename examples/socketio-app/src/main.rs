//! `cargo run -p socketio-app -- [ADDR]` — an axum application (default 127.0.0.1:3000) with
//! Switchboard mounted and Socket.IO handlers on the `/shop` namespace:
//!
//! - on connect, the server emits `welcome` `{id, user}`;
//! - `order` `{item, qty}` (typed: anything else is refused with `invalid_format`) joins the
//!   socket to `orders`, broadcasts `order_placed` to the room (every transport) and acks
//!   `{accepted, item, qty, offset}`; `qty: 0` is answered `{accepted: false}`;
//! - `confirm` asks the client (`emit_with_ack` "confirm?" within 2 s) and emits `confirmed`
//!   with the client's answer, or `confirm_timeout`;
//! - `chat` `text` goes to everyone in `orders` but the sender (`socket.to`), acked `true`;
//! - `upload` `(name, bytes)` acks `{name, size}` and the bytes reversed (binary);
//! - `leave` leaves `orders`; `bye` disconnects the socket from the server side;
//! - `POST /ship/{room}` broadcasts `shipped` `{by: "http"}` into `room` from an HTTP handler
//!   (400 with a message for a room name the server refuses);
//! - `GET /stats` counts the `/shop` connects and disconnects the handlers saw.
//!
//! The rest of Switchboard is there too (`/ws`, `/events`, `/socket.io/` built-in rooms on
//! `/`, the HTTP API). Ctrl-C or SIGTERM shuts down gracefully.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use switchboard_server::socketio::{Ack, Args, Data, EmitError, Handlers, Io, SocketRef};
use switchboard_server::{Embedded, ServerConfig};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Deserialize)]
struct Order {
    item: String,
    qty: u32,
}

#[derive(Default)]
struct Stats {
    connects: AtomicU64,
    disconnects: AtomicU64,
}

fn handlers(stats: Arc<Stats>) -> Handlers {
    let (on_connect, on_disconnect) = (stats.clone(), stats);
    Handlers::new()
        .on_connect("/shop", move |socket: SocketRef| {
            on_connect.connects.fetch_add(1, Ordering::Relaxed);
            async move {
                let _ = socket.emit("welcome", &json!({"id": socket.id(), "user": socket.user_id()}));
            }
        })
        .on_disconnect("/shop", move |_socket: SocketRef| {
            on_disconnect.disconnects.fetch_add(1, Ordering::Relaxed);
            async {}
        })
        .on("/shop", "order", |socket: SocketRef, Data(order): Data<Order>, ack: Ack| {
            async move {
                if order.qty == 0 {
                    let _ = ack.send(&json!({"accepted": false, "reason": "qty must be positive"}));
                    return;
                }
                let _ = socket.join("orders").await;
                let placed = socket
                    .io()
                    .to("orders")
                    .emit("order_placed", &json!({"item": order.item, "qty": order.qty, "by": socket.id()}))
                    .await;
                let offset = placed.map(|p| p.offset.0).ok();
                let _ = ack.send(&json!({"accepted": true, "item": order.item, "qty": order.qty, "offset": offset}));
            }
        })
        .on("/shop", "confirm", |socket: SocketRef, Data(what): Data<Value>, _ack: Ack| async move {
            match socket.emit_with_ack("confirm?", &what, Duration::from_secs(2)).await {
                Ok(answer) => {
                    let _ = socket.emit("confirmed", &answer);
                }
                Err(e) => {
                    let _ = socket.emit("confirm_timeout", &e.to_string());
                }
            }
        })
        .on("/shop", "upload", |_socket: SocketRef, Data((name, bytes)): Data<(String, Vec<u8>)>, ack: Ack| async move {
            let mut args = Args::new();
            args.push(json!({"name": name, "size": bytes.len()}));
            args.push_binary(bytes.into_iter().rev().collect::<Vec<u8>>().into());
            let _ = ack.send_args(args);
        })
        .on("/shop", "chat", |socket: SocketRef, Data(text): Data<String>, ack: Ack| async move {
            // Everyone in `orders` but the sender.
            let sent = socket.to("orders").emit("chat", &json!({"text": text})).await;
            let _ = ack.send(&sent.is_ok());
        })
        .on("/shop", "announce", |socket: SocketRef, Data(text): Data<String>, ack: Ack| async move {
            // Every other socket of `/shop`, joined to a room or not (`socket.broadcast.emit`).
            let sent = socket.broadcast().emit("announcement", &json!({"text": text})).await;
            let _ = ack.send(&sent.is_ok());
        })
        .on("/shop", "leave", |socket: SocketRef, Data(()): Data<()>, ack: Ack| async move {
            let _ = socket.leave("orders").await;
            let _ = ack.send(&"left");
        })
        .on("/shop", "bye", |socket: SocketRef, Data(()): Data<()>, _ack: Ack| async move {
            let _ = socket.disconnect();
        })
}

/// Whether the request announces a body (a non-zero length, or a chunked one).
fn has_body(headers: &HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .is_some_and(|len| len.as_bytes() != b"0")
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr: SocketAddr = match std::env::args().nth(1) {
        Some(a) => a.parse().map_err(|e| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{a}: {e}"))
        })?,
        None => SocketAddr::from(([127, 0, 0, 1], 3000)),
    };
    let stats = Arc::new(Stats::default());
    let mut config = ServerConfig::default();
    config.socketio.handlers = handlers(stats.clone());
    // Connection state recovery on `/shop` too (the default covers `/` and `/chat`): a socket
    // that reconnects within the window gets its id, rooms and missed broadcasts back.
    config.socketio.recovery.push("/shop".to_owned());
    let shutdown = CancellationToken::new();
    let switchboard = Embedded::start(config, shutdown.clone());
    let io = switchboard.socketio();

    let app = Router::new()
        .route(
            "/ship/{room}",
            post(
                |State(io): State<Io>, Path(room): Path<String>| async move {
                    match io.to(room).emit("shipped", &json!({"by": "http"})).await {
                        Ok(p) => (
                            StatusCode::OK,
                            Json(json!({"offset": p.offset.0, "delivered": p.delivered})),
                        ),
                        // A room name the server refuses is the caller's mistake; a store
                        // that could not confirm is not.
                        Err(e @ EmitError::InvalidRoom(_)) => (
                            StatusCode::BAD_REQUEST,
                            Json(json!({"error": e.to_string()})),
                        ),
                        Err(e) => (
                            StatusCode::SERVICE_UNAVAILABLE,
                            Json(json!({"error": e.to_string()})),
                        ),
                    }
                },
            ),
        )
        .route(
            "/announce",
            post(|State(io): State<Io>, headers: HeaderMap| async move {
                // The route takes no input: a body would be ignored, so it is refused (at
                // once, from the headers: a body that never finishes holds nothing).
                if has_body(&headers) {
                    return (
                        StatusCode::BAD_REQUEST,
                        Json(json!({"error": "POST /announce takes no body"})),
                    );
                }
                // Every socket of `/shop` (`io.of("/shop").emit`), on every node.
                match io
                    .of("/shop")
                    .emit("announcement", &json!({"by": "http"}))
                    .await
                {
                    Ok(p) => (
                        StatusCode::OK,
                        Json(json!({"offset": p.offset.0, "delivered": p.delivered})),
                    ),
                    Err(e) => (
                        StatusCode::SERVICE_UNAVAILABLE,
                        Json(json!({"error": e.to_string()})),
                    ),
                }
            }),
        )
        .route(
            "/stats",
            get(move || async move {
                Json(json!({
                    "connects": stats.connects.load(Ordering::Relaxed),
                    "disconnects": stats.disconnects.load(Ordering::Relaxed),
                }))
            }),
        )
        .with_state(io)
        .merge(switchboard.router());

    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        stop.cancel();
    });
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown.cancelled_owned())
    .await?;
    switchboard.drain().await;
    Ok(())
}
