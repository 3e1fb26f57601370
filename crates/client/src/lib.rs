//! A Rust client for Switchboard's native protocol (docs/protocol.md), built for
//! connections that must survive the network: it reconnects with exponential backoff and
//! full jitter, follows the server's close codes, rejoins every room from the last message
//! it delivered (no gap, no duplicate), resends unanswered requests with the same ids (the
//! server deduplicates them), keeps a bounded offline queue, detects dead connections with
//! heartbeats, and refreshes tokens.
//!
//! ```no_run
//! use switchboard_client::{Client, Config, Event, TokenProvider, TokenVia};
//!
//! # async fn demo() -> Result<(), switchboard_client::Error> {
//! let config = Config::new("ws://127.0.0.1:8080/ws")
//!     .token(TokenVia::Header, TokenProvider::new(|| async {
//!         // Ask your backend for a fresh JWT; called again after a 4001 and before `exp`.
//!         Ok::<_, String>("eyJ…".to_owned())
//!     }));
//! let (client, mut events) = Client::connect(config)?;
//! client.join("chat:general").await?;
//! let offset = client.publish("chat:general", serde_json::json!({"text": "hi"})).await?;
//! println!("stored at offset {offset}");
//! while let Some(event) = events.next().await {
//!     match event {
//!         Event::Message(m) => println!("{} #{:?}: {}", m.room, m.offset, m.data()),
//!         Event::Resync { room, .. } => println!("{room}: missed messages, reload it"),
//!         Event::State(state) => println!("{state:?}"),
//!         _ => {}
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! The close-code policy is in [`policy`]; what each setting does, in [`Config`].

mod backoff;
mod client;
mod config;
mod error;
mod pace;
pub mod policy;
mod token;
mod transport;
pub mod websocket;

pub use backoff::Backoff;
pub use client::{Client, Event, Events, History, Joined, Member, Message, Position, State};
pub use config::{Config, Format, TokenProvider, TokenVia};
pub use error::Error;
pub use pace::SendRate;
pub use websocket::{WebSocket, WsMessage};
