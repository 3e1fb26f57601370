//! One session's authentication state (SPEC §4): who it is, the first-message gate and the
//! messages it holds, and a verification in flight. Boxed behind one pointer in the session:
//! a connection without authentication pays 8 bytes for it, and nothing else.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::Value;
use switchboard_auth::{AuthError, ConnectInfo, Identity};
use switchboard_native_proto::{Incoming, MAX_DISPLAY_NAME};

/// Most messages held before `auth` succeeds (the bound of SPEC §2's first-message flow).
/// Beyond it (or [`MAX_HELD_BYTES`]) a message is refused with
/// `error {code: "auth_pending", message: "Too many messages before authentication", id}` and
/// the connection stays open (the `auth_timeout` still bounds how long it may wait).
pub const MAX_HELD_MESSAGES: usize = 16;

/// Most bytes (as received) of messages held before `auth` succeeds.
pub const MAX_HELD_BYTES: usize = 64 * 1024;

/// The result of a verification.
pub(crate) type Outcome = Result<Identity, AuthError>;

/// Where a verification that finished on another task leaves its result for the session.
#[derive(Debug, Default)]
pub(crate) struct Slot(Mutex<Option<Outcome>>);

impl Slot {
    fn lock(&self) -> MutexGuard<'_, Option<Outcome>> {
        // Each critical section is one assignment or `take`: never left half-done.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn put(&self, outcome: Outcome) {
        *self.lock() = Some(outcome);
    }

    pub(crate) fn take(&self) -> Option<Outcome> {
        self.lock().take()
    }
}

/// Where the session is in the first-message flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Messages are handled (authenticated, or anonymous).
    Open,
    /// Waiting for `auth {token}`: everything else is held.
    Awaiting,
    /// `auth {token}` is being verified: everything is held.
    Verifying,
    /// The credential was refused or expired: the connection is closing, nothing is handled.
    Failed,
}

/// What a verification in flight is for.
#[derive(Debug)]
pub(crate) enum Purpose {
    /// `auth {token}`.
    Auth,
    /// `refresh {token}`, with the message's `id` (for its error reply).
    Refresh { id: Option<String> },
}

/// A verification in flight.
#[derive(Debug)]
pub(crate) struct Pending {
    pub(crate) purpose: Purpose,
    pub(crate) slot: Arc<Slot>,
}

/// The authentication state of a session that has one.
#[derive(Debug)]
pub(crate) struct AuthState {
    /// Who the connection is (`None`: not authenticated yet).
    pub(crate) identity: Option<Arc<Identity>>,
    /// What the connect proxy is told about the connection (first-message auth, refresh).
    pub(crate) info: ConnectInfo,
    pub(crate) phase: Phase,
    /// Messages that came before authentication finished, oldest first.
    pub(crate) held: VecDeque<Incoming>,
    /// Their size as received.
    pub(crate) held_bytes: usize,
    /// A verification in flight (at most one: `auth` holds everything, a second `refresh`
    /// while one is verified is refused).
    pub(crate) pending: Option<Pending>,
}

impl AuthState {
    pub(crate) fn new(identity: Option<Arc<Identity>>, info: ConnectInfo, phase: Phase) -> Self {
        AuthState {
            identity,
            info,
            phase,
            held: VecDeque::new(),
            held_bytes: 0,
            pending: None,
        }
    }
}

/// The display name a token gives its user (`name` claim), if it is one `join` would accept.
pub(crate) fn display_name_claim(identity: &Identity) -> Option<Arc<str>> {
    match identity.claim("name") {
        Some(Value::String(s))
            if !s.is_empty() && s.len() <= MAX_DISPLAY_NAME && !s.chars().any(char::is_control) =>
        {
            Some(Arc::from(s.as_str()))
        }
        _ => None,
    }
}

/// The `code` of the `error` reply to a refused `refresh`.
pub(crate) fn refresh_error_code(error: &AuthError) -> &'static str {
    match error {
        AuthError::Expired => "token_expired",
        AuthError::BackendUnavailable(_) => "auth_unavailable",
        _ => "invalid_token",
    }
}
