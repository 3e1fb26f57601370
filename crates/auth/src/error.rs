//! Why a credential or a request was refused, and how each transport says so (SPEC §4, §10).

use http::StatusCode;

use crate::permission::Action;

/// Close code for every authentication failure, expiry included (SPEC §10: 4001).
pub const CLOSE_AUTH_FAILED: u16 = 4001;
/// Close code when the connect proxy could not answer (SPEC §10: 1013 "try again later"): the
/// credential may be fine, so telling the client its token is bad would make it throw it away.
pub const CLOSE_TRY_AGAIN_LATER: u16 = 1013;

/// Why a credential was not accepted.
///
/// The variants are precise for logs and metrics; what a peer learns is only
/// [`close_reason`](Self::close_reason) / [`http_status`](Self::http_status), so a probing client
/// cannot tell a bad signature from an unknown key or a wrong audience.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No credential from any enabled source, and anonymous access is off.
    #[error("no credential")]
    Missing,
    /// The token's `exp` (plus leeway) has passed.
    #[error("token expired")]
    Expired,
    /// The token's `nbf` (minus leeway) is still in the future.
    #[error("token not yet valid")]
    NotYetValid,
    /// Not a JWT, bad base64 or JSON, or a claim of the wrong type.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// The signature does not verify with the key the token names.
    #[error("bad signature")]
    BadSignature,
    /// The header's `alg` is `none`, unknown, outside the configured set, or of another family
    /// than the key (an HS token presented where only RS/ES/EdDSA keys exist: algorithm confusion).
    #[error("algorithm not allowed: {0}")]
    AlgorithmNotAllowed(String),
    /// No configured or published key has the token's `kid` (after the allowed refetch).
    #[error("unknown key id {0:?}")]
    UnknownKey(Option<String>),
    /// `iss` is not the configured issuer.
    #[error("wrong issuer")]
    WrongIssuer,
    /// `aud` does not name the configured audience, or the token has an `aud` and none is
    /// configured (RFC 7519 §4.1.3: a recipient not named must reject).
    #[error("wrong audience")]
    WrongAudience,
    /// A required claim (`sub`, `exp` when required) is absent.
    #[error("missing claim {0}")]
    MissingClaim(&'static str),
    /// A ticket that was never issued, was already used, or has expired.
    #[error("ticket unknown, used or expired")]
    BadTicket,
    /// The connect proxy answered with a non-2xx status.
    #[error("refused by the auth backend (HTTP {0})")]
    Refused(u16),
    /// The connect proxy timed out, was unreachable, or answered something unreadable.
    #[error("auth backend unavailable: {0}")]
    BackendUnavailable(String),
    /// A `refresh` token names another user than the connection's.
    #[error("refresh token names another user")]
    SubjectChanged,
    /// The credential came from a source that is disabled, or no verifier is configured for it
    /// (a token with neither JWT keys nor a connect proxy configured).
    #[error("credential source not accepted: {0}")]
    NotAccepted(&'static str),
}

impl AuthError {
    /// The WebSocket close code: 4001, or 1013 when the backend could not answer.
    pub fn close_code(&self) -> u16 {
        match self {
            AuthError::BackendUnavailable(_) => CLOSE_TRY_AGAIN_LATER,
            _ => CLOSE_AUTH_FAILED,
        }
    }

    /// The close reason a client sees. The seeds' reconnect logic refreshes its token on 4001,
    /// and tells expiry apart by this text, so expiry has its own.
    pub fn close_reason(&self) -> &'static str {
        match self {
            AuthError::Expired => "Token expired",
            AuthError::Missing => "Authentication required",
            AuthError::BackendUnavailable(_) => "Auth backend unavailable",
            _ => "Invalid token",
        }
    }

    /// The status a plain HTTP endpoint answers with (SPEC §4: 401; 503 when the backend is down).
    pub fn http_status(&self) -> StatusCode {
        match self {
            AuthError::BackendUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::UNAUTHORIZED,
        }
    }

    /// A short label for metrics (`reason="expired"`), never containing client data.
    pub fn metric_label(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::Expired => "expired",
            AuthError::NotYetValid => "not_yet_valid",
            AuthError::Malformed(_) => "malformed",
            AuthError::BadSignature => "bad_signature",
            AuthError::AlgorithmNotAllowed(_) => "algorithm",
            AuthError::UnknownKey(_) => "unknown_kid",
            AuthError::WrongIssuer => "issuer",
            AuthError::WrongAudience => "audience",
            AuthError::MissingClaim(_) => "missing_claim",
            AuthError::BadTicket => "bad_ticket",
            AuthError::Refused(_) => "refused",
            AuthError::BackendUnavailable(_) => "backend_unavailable",
            AuthError::SubjectChanged => "subject_changed",
            AuthError::NotAccepted(_) => "not_accepted",
        }
    }
}

/// A refused action on a room. The connection stays open (SPEC §4: every message is
/// authorised; a refusal is an `error {code, message}` for that message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} {action:?} in this room", if self.authenticated { "not allowed to" } else { "authentication required to" })]
pub struct Denied {
    /// What was attempted.
    pub action: Action,
    /// Whether the caller was authenticated: decides 401 against 403.
    pub authenticated: bool,
}

impl Denied {
    /// The `code` of the `error` message.
    pub fn code(&self) -> &'static str {
        if self.authenticated {
            "forbidden"
        } else {
            "unauthorized"
        }
    }

    /// The `message` of the `error` message (no room name: the session adds it if it wants).
    pub fn message(&self) -> &'static str {
        match (self.authenticated, self.action) {
            (false, _) => "Authentication required",
            (true, Action::Subscribe) => "Not allowed to join this room",
            (true, Action::Publish) => "Not allowed to publish in this room",
            (true, Action::History) => "Not allowed to read this room's history",
            (true, Action::Presence) => "Not allowed to see this room's presence",
        }
    }

    /// SPEC §4: 401 without credentials, 403 for a known user without the right.
    pub fn http_status(&self) -> StatusCode {
        if self.authenticated {
            StatusCode::FORBIDDEN
        } else {
            StatusCode::UNAUTHORIZED
        }
    }
}

/// A configuration that cannot be used: reported at startup, never at a connection.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A key file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A key, secret, URL or pattern is unusable.
    #[error("{0}")]
    Invalid(String),
}
