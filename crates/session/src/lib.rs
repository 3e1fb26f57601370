//! The transport-neutral session core: the rules of the native protocol (SPEC §2, §3, §6) for
//! one client connection, whatever carries it.
//!
//! Sans-IO: no sockets, no tasks, no clock reads (the caller passes `now`). A transport
//! (WebSocket today; SSE, long polling and Socket.IO next) decodes client messages into
//! [`Incoming`](switchboard_native_proto::Incoming), hands them to [`Session::handle`] and
//! gets typed [`ServerMessage`](switchboard_native_proto::ServerMessage) replies and
//! [`CloseReason`]s back through a [`Sink`], which it encodes and frames its own way.
//! Deliveries from the hub (other members' messages) come through [`Session::drain`].
//!
//! [`publish`] is the one publish + dedup flow: client relays and the HTTP API both use it.
//!
//! # Authentication and authorization (SPEC §4)
//!
//! [`Shared::auth`] holds the server's `switchboard_auth::Authenticator`; `None` means no
//! authentication is configured and every session may do everything (and `auth`/`refresh`
//! are answered `auth_success` for the session's own user, as before).
//!
//! **Opening a session.** The transport does the handshake part (origin check, credential
//! extraction and verification; see `crates/auth/README.md`), then opens one of:
//! - [`Session::authenticated`]`(shared, identity, connect_info, now)`: the handshake named
//!   the user. Registered with the hub under `identity.user_id()`; send
//!   [`Session::welcome`].
//! - [`Session::awaiting_auth`]`(shared, connect_info, now)`: the first-message flow. Send no
//!   `welcome`; the client's `auth {token}` is verified (`CredentialSource::FirstMessage`),
//!   answered `auth_success {userId}`, and the messages that came before it, held (at most
//!   [`MAX_HELD_MESSAGES`] / [`MAX_HELD_BYTES`]; beyond that each is refused with
//!   `error {code: "auth_pending"}` and the connection stays open), are handled in order after
//!   it. A refused token closes with the `AuthError`'s code and reason
//!   ([`CloseReason::AuthFailed`]: 4001 "Invalid token" / "Token expired"; 1013 when the
//!   connect proxy is down). Until then the session sits in the hub under a placeholder
//!   anonymous id, in no room; on success its registration moves to the real user (presence,
//!   per-user disconnects). [`Session::is_authenticated`] is false until then: the
//!   transport closes with [`CloseReason::AuthTimeout`] (4000) after `auth_timeout`.
//! - [`Session::anonymous`]`(shared, now)`: no credential, anonymous access allowed. Such a
//!   session may still send `auth {token}` before joining a room (it is then verified as
//!   above); [`Session::with_connect_info`] says what the connect proxy is told then.
//!
//! **Every message is authorized** with `Authenticator::authorize(identity, action, room)`:
//! `join`/`subscribe` → `Subscribe`; the replay of a `join … since` → also `History` (without
//! it the join still happens, without the replay, answered `recovered: false`); `publish` and
//! relayed typed messages → `Publish`; `history` → `History`; `presence` → `Presence`;
//! `leave` is always allowed. A refusal is `error {code, message, id?}` (`Denied`'s
//! `forbidden`/`unauthorized` and text, the message's `id` when it had one), nothing reaches
//! the hub, and the connection stays open. Outside a session (the HTTP API with a user token)
//! use [`authorize`] and [`publish_as`].
//!
//! **Verifications that finish later.** `auth` and `refresh` are verified through
//! `Authenticator::authenticate_now_or_later` / `refresh_now_or_later`: a JWT checked against
//! configured secrets or PEM keys is answered at once and replied to within the same call. A
//! verification that must wait (a JWKS fetch, the connect proxy) runs on a task spawned on
//! the current tokio runtime (so call the session from within one); its result is left for
//! the session and the connection is woken through its outbox, exactly like a late store
//! answer: [`Session::poll_outbound`] turns ready (a parked connection is woken). When it
//! does, call [`Session::resume`]`(sink)` and then [`Session::drain`]. Meanwhile messages are
//! held (`auth`) or handled as usual (`refresh`; a second `refresh` before the first is
//! answered gets `error {code: "refresh_pending"}`). After `auth` succeeds the session's
//! outbox is a new one: poll [`Session::poll_outbound`] again (a driver loop does).
//!
//! **Expiry and refresh.** [`Session::expires_at`] is the identity's
//! `connection_expires_at()` (the token's `expire_at` claim, else `exp`) as a
//! [`SystemTime`](std::time::SystemTime); `None`: never. Arm a timer for it and, when it
//! fires, call [`Session::expire_if_due`]`(SystemTime::now(), sink)`: it closes with
//! [`CloseReason::TokenExpired`] (4001 "Token expired") and returns `true`, or returns
//! `false` when a `refresh` moved the deadline (re-arm at `expires_at()`). `refresh {token}`
//! needs a valid token for the same user: the identity is replaced and
//! `refreshed {exp}` sent; otherwise `error {code: "invalid_token" | "token_expired" |
//! "auth_unavailable", message, id?}` and the old deadline stands.

mod auth;
mod close;
mod encode;
mod later;
mod publish;
pub mod rate;
mod session;

pub use auth::{MAX_HELD_BYTES, MAX_HELD_MESSAGES};
pub use close::CloseReason;
pub use encode::encode_delivery;
pub use publish::{
    authorize, publish, publish_as, publish_from, PublishRequest, Published, Unavailable,
};
pub use session::{Note, Session, SessionConfig, Shared, Sink};
