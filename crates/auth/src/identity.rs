//! Who a connection is, as established by a JWT, a ticket or the connect proxy.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use switchboard_hub::RoomPattern;

/// The claim that gives a connection its own deadline, independent of the token's `exp`.
///
/// Same name and meaning as Centrifugo's: `exp` bounds when the token may be *presented*;
/// `expire_at` (unix seconds) bounds how long the connection it opened may *live*. `0` means the
/// connection never expires (the token still cannot be reused after `exp`). Absent: the
/// connection ends at `exp`.
pub const EXPIRE_AT_CLAIM: &str = "expire_at";

/// The claim holding the rooms a user may use under a `channels` permission rule: an array of
/// room patterns (`["chat:*", "news"]`).
pub const CHANNELS_CLAIM: &str = "channels";

/// How an identity was established (for logs and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// A verified JWT.
    Jwt,
    /// The application's connect proxy vouched for an opaque credential.
    Proxy,
}

/// An authenticated user. Serializable so a ticket store outside the process (Redis) can hold it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(into = "IdentityRepr", from = "IdentityRepr")]
pub struct Identity {
    user_id: String,
    claims: Map<String, Value>,
    token_expires_at: Option<u64>,
    connection_expires_at: Option<u64>,
    channels: Option<Vec<String>>,
    // Compiled once: `channels` rules run on every message.
    channel_patterns: Option<Vec<RoomPattern>>,
    method: AuthMethod,
}

impl Identity {
    /// An identity from verified claims. `sub` must already have been checked to be a string.
    ///
    /// `exp` and `expire_at` are read as unix seconds; `channels` as an array of strings
    /// (anything else there is ignored: it only ever grants, so ignoring it cannot widen access).
    pub fn from_claims(
        user_id: String,
        claims: Map<String, Value>,
        method: AuthMethod,
    ) -> Identity {
        let token_expires_at = claims.get("exp").and_then(unix_seconds);
        let connection_expires_at = match claims.get(EXPIRE_AT_CLAIM) {
            Some(value) => match unix_seconds(value) {
                Some(0) => None,
                Some(at) => Some(at),
                None => token_expires_at,
            },
            None => token_expires_at,
        };
        let channels = claims.get(CHANNELS_CLAIM).and_then(string_array);
        Identity::assemble(
            user_id,
            claims,
            token_expires_at,
            connection_expires_at,
            channels,
            method,
        )
    }

    /// An identity the connect proxy described.
    pub fn from_proxy(
        user_id: String,
        claims: Map<String, Value>,
        channels: Option<Vec<String>>,
        expire_at: Option<u64>,
    ) -> Identity {
        Identity::assemble(
            user_id,
            claims,
            None,
            expire_at.filter(|&at| at != 0),
            channels,
            AuthMethod::Proxy,
        )
    }

    fn assemble(
        user_id: String,
        claims: Map<String, Value>,
        token_expires_at: Option<u64>,
        connection_expires_at: Option<u64>,
        channels: Option<Vec<String>>,
        method: AuthMethod,
    ) -> Identity {
        let channel_patterns = channels
            .as_ref()
            .map(|list| list.iter().map(|p| RoomPattern::new(p)).collect());
        Identity {
            user_id,
            claims,
            token_expires_at,
            connection_expires_at,
            channels,
            channel_patterns,
            method,
        }
    }

    /// The user id (`sub`).
    pub fn user_id(&self) -> &str {
        &self.user_id
    }

    /// Every claim of the token (or the proxy's `claims` object), `sub` included.
    pub fn claims(&self) -> &Map<String, Value> {
        &self.claims
    }

    /// One claim.
    pub fn claim(&self, name: &str) -> Option<&Value> {
        self.claims.get(name)
    }

    /// The token's `exp` (unix seconds): after it the token cannot be presented again.
    pub fn token_expires_at(&self) -> Option<u64> {
        self.token_expires_at
    }

    /// When the connection must end (unix seconds) unless refreshed: `expire_at` if the token
    /// carries it (`0`: never), else `exp`. See [`EXPIRE_AT_CLAIM`].
    pub fn connection_expires_at(&self) -> Option<u64> {
        self.connection_expires_at
    }

    /// The `channels` allowlist, if the token or proxy gave one.
    pub fn channels(&self) -> Option<&[String]> {
        self.channels.as_deref()
    }

    pub(crate) fn channel_patterns(&self) -> Option<&[RoomPattern]> {
        self.channel_patterns.as_deref()
    }

    /// How the identity was established.
    pub fn method(&self) -> AuthMethod {
        self.method
    }
}

/// Claims are JSON numbers; RFC 7519 allows fractions, which we round down.
fn unix_seconds(value: &Value) -> Option<u64> {
    value.as_u64().or_else(|| {
        value
            .as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0)
            .map(|f| f as u64)
    })
}

fn string_array(value: &Value) -> Option<Vec<String>> {
    value.as_array().map(|items| {
        items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect()
    })
}

/// The stored form: everything but the compiled patterns.
#[derive(Serialize, Deserialize)]
struct IdentityRepr {
    user_id: String,
    claims: Map<String, Value>,
    token_expires_at: Option<u64>,
    connection_expires_at: Option<u64>,
    channels: Option<Vec<String>>,
    method: AuthMethod,
}

impl From<Identity> for IdentityRepr {
    fn from(id: Identity) -> IdentityRepr {
        IdentityRepr {
            user_id: id.user_id,
            claims: id.claims,
            token_expires_at: id.token_expires_at,
            connection_expires_at: id.connection_expires_at,
            channels: id.channels,
            method: id.method,
        }
    }
}

impl From<IdentityRepr> for Identity {
    fn from(r: IdentityRepr) -> Identity {
        Identity::assemble(
            r.user_id,
            r.claims,
            r.token_expires_at,
            r.connection_expires_at,
            r.channels,
            r.method,
        )
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn claims(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }

    #[test]
    fn connection_expiry_defaults_to_exp_and_expire_at_overrides_it() {
        let plain = Identity::from_claims("a".into(), claims(json!({"exp": 100})), AuthMethod::Jwt);
        assert_eq!(plain.token_expires_at(), Some(100));
        assert_eq!(plain.connection_expires_at(), Some(100));

        let longer = Identity::from_claims(
            "a".into(),
            claims(json!({"exp": 100, "expire_at": 500})),
            AuthMethod::Jwt,
        );
        assert_eq!(longer.connection_expires_at(), Some(500));

        let never = Identity::from_claims(
            "a".into(),
            claims(json!({"exp": 100, "expire_at": 0})),
            AuthMethod::Jwt,
        );
        assert_eq!(never.connection_expires_at(), None);
        assert_eq!(never.token_expires_at(), Some(100));
    }

    #[test]
    fn channels_claim_keeps_only_strings() {
        let id = Identity::from_claims(
            "a".into(),
            claims(json!({"channels": ["chat:*", 3, "news"]})),
            AuthMethod::Jwt,
        );
        assert_eq!(
            id.channels(),
            Some(&["chat:*".to_owned(), "news".to_owned()][..])
        );
        assert_eq!(id.channel_patterns().map(<[_]>::len), Some(2));
    }

    #[test]
    fn identity_survives_a_serde_round_trip_with_its_patterns() {
        let id = Identity::from_claims(
            "bob".into(),
            claims(json!({"sub": "bob", "channels": ["a:*"]})),
            AuthMethod::Jwt,
        );
        let text = serde_json::to_string(&id).unwrap();
        let back: Identity = serde_json::from_str(&text).unwrap();
        assert_eq!(back, id);
        assert!(back.channel_patterns().is_some_and(|p| p[0].matches("a:b")));
    }
}
