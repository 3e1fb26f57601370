//! Switchboard's runtime layer: tokio + hyper/axum around the sans-IO protocol crates.
//!
//! - [`Server`] binds, accepts and shuts down gracefully;
//! - [`http::router`] is the axum `Router` with every endpoint (embeddable);
//! - [`ws`] upgrades HTTP requests and runs one driver task per WebSocket connection.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use switchboard_server::{Server, ServerConfig};
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! let server = Server::bind(ServerConfig::default(), shutdown.clone()).await?;
//! tokio::spawn(server.run());
//! shutdown.cancel(); // graceful: WebSockets get 1001 "Server shutting down"
//! # Ok(()) }
//! ```

// The public API is what an application needs to run or embed a server: the items
// re-exported below, `http::router`, `state::AppState` (what handlers share) and `metrics`.
// Everything else is internal.
mod access;
mod api;
mod browser;
mod cancel;
mod config;
mod cors;
pub mod http;
mod http2;
mod keepalive;
mod listener;
pub mod metrics;
mod native;
mod pages;
pub use switchboard_session::rate;
mod engineio;
mod feed;
pub mod forward;
mod front;
mod poll;
mod redact;
pub mod socketio;
mod sse;
pub mod state;
pub mod stats_feed;
mod tls;
pub mod ws;

pub use config::{Backends, ServerConfig, SocketIoConfig, TlsConfig};
pub use listener::{Embedded, Server};
pub use switchboard_session::SessionConfig;
