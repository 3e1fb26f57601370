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

pub mod api;
pub mod config;
pub mod http;
pub mod keepalive;
pub mod listener;
pub mod metrics;
pub mod native;
pub use switchboard_session::rate;
pub mod redact;
pub mod state;
pub mod tls;
pub mod ws;

pub use config::{ServerConfig, TlsConfig};
pub use listener::Server;
pub use switchboard_session::SessionConfig;
