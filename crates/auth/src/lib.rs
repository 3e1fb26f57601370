//! Switchboard's authentication and authorization (SPEC §4), independent of any transport.
//!
//! What it is: credential extraction (`Authorization: Bearer`, `?token=`, `?ticket=`, a cookie;
//! the first-message `auth {token}` is handed in by the session), JWT verification (HS/RS/PS/
//! ES/EdDSA from secrets, PEM files or a JWKS file or URL), one-time connection tickets, a
//! connect proxy client for opaque session credentials, the `Origin` allowlist, and channel
//! permission rules. What it is not: it sends no close frames and writes no HTTP responses —
//! errors say which close code, reason and status to use, and the transport does the rest.
//!
//! One [`Authenticator`], built from an [`AuthConfig`], is shared by every transport:
//!
//! ```no_run
//! # async fn handshake(headers: http::HeaderMap, uri: http::Uri) -> Result<(), Box<dyn std::error::Error>> {
//! use switchboard_auth::{Action, AuthConfig, Authenticator, ConnectInfo};
//!
//! let config: AuthConfig = serde_json::from_str(r#"{"jwt": {"secrets": ["dev-secret"]}}"#)?;
//! let auth = Authenticator::new(&config)?;
//!
//! // At the handshake: origin first (403), then the credential.
//! if !auth.check_origin(&headers).is_allowed() { /* answer 403 */ }
//! let info = ConnectInfo { origin: None, client_ip: None, transport: "websocket" };
//! let who = match auth.authenticate_request(&headers, &uri, &info).await {
//!     Ok(who) => who, // None: anonymous
//!     // WebSocket: accept, then close with these; HTTP: answer `e.http_status()`.
//!     Err(e) => { let _ = (e.close_code(), e.close_reason()); return Ok(()) }
//! };
//! // On every message that touches a room:
//! if let Err(denied) = auth.authorize(who.as_ref(), Action::Publish, "chat:lobby") {
//!     // send `error {code: denied.code(), message: denied.message()}`; keep the connection
//! }
//! # Ok(()) }
//! ```
//!
//! The crate's README (`crates/auth/README.md`) describes how each transport is expected to
//! call it, including the first-message flow, refresh and expiry.

#![deny(unsafe_code)]
#![warn(missing_docs)]

mod authenticator;
mod config;
mod credential;
mod error;
mod http_client;
mod identity;
mod jwt;
mod origin;
mod permission;
mod proxy;
mod ticket;

pub use authenticator::{unix_now, Authenticator};
pub use config::{
    parse_duration, AuthConfig, ConnectProxyConfig, JwtConfig, SourcesConfig, TicketConfig,
};
pub use credential::{bearer, cookie, extract, Credential, CredentialSource};
pub use error::{AuthError, ConfigError, Denied, CLOSE_AUTH_FAILED, CLOSE_TRY_AGAIN_LATER};
pub use http_client::{FetchError, HttpClient};
pub use identity::{AuthMethod, Identity, CHANNELS_CLAIM, EXPIRE_AT_CLAIM};
pub use jsonwebtoken::Algorithm;
pub use jwt::{mint, mint_at, secret_bytes, JwtVerifier, MintError};
pub use origin::{OriginDecision, OriginPolicy};
pub use permission::{Action, Allow, PermissionRule, Permissions};
pub use proxy::{ConnectInfo, ConnectProxy};
pub use ticket::{new_ticket, BoxFuture, MemoryTicketStore, TicketError, TicketStore};
