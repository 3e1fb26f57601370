//! `[broker]`: the shared store that lets several nodes serve the same rooms (Redis; issue
//! 13, docs/scale-out.md). Unset `url`: one process with the in-memory store.
//!
//! Read by `main.rs`, which connects the Redis backend before the server starts.

use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::Deserialize;

use super::auth::redact_url;
use super::values;

/// A Redis operation slower than this is answered `unavailable`.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// The hub's presence expiry default (`HubConfig::presence_expiry`).
const DEFAULT_PRESENCE_TTL: Duration = Duration::from_secs(90);

/// `[broker]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct BrokerSettings {
    /// `redis://[user:password@]host:port[/db]`, or a Redis Cluster's
    /// `redis+cluster://[user:password@]host:port[,host:port…]`; `None`: one process,
    /// in-memory store. May hold a password: `switchboard config` and errors print it
    /// redacted.
    #[serde(deserialize_with = "url")]
    pub(crate) url: Option<String>,
    #[serde(deserialize_with = "values::positive_duration")]
    pub(crate) timeout: Duration,
    /// A node whose heartbeat is older is taken for dead (its presence entries dropped).
    #[serde(deserialize_with = "values::positive_duration")]
    pub(crate) presence_ttl: Duration,
}

impl Default for BrokerSettings {
    fn default() -> Self {
        BrokerSettings {
            url: None,
            timeout: DEFAULT_TIMEOUT,
            presence_ttl: DEFAULT_PRESENCE_TTL,
        }
    }
}

const FORM: &str =
    "redis://[user:password@]host:port[/db] or redis+cluster://[user:password@]host:port[,host:port…]";

/// A Redis URL: `redis://` and a host. The value is quoted redacted: it may hold a password.
pub(crate) fn check_url(text: &str) -> Result<String, String> {
    if text.trim().is_empty() {
        return Err(format!(
            "expected a Redis URL like \"{FORM}\", got an empty string (leave broker.url unset \
             for one process with the in-memory store)"
        ));
    }
    let shown = redact_url(text);
    if text.starts_with("rediss://") {
        return Err(format!(
            "{shown:?}: TLS to Redis (rediss://) is not supported yet; use redis://"
        ));
    }
    if text.starts_with(switchboard_broker_redis::CLUSTER_SCHEME) {
        return match switchboard_broker_redis::Target::parse(text) {
            Ok(_) => Ok(text.to_owned()),
            Err(e) => Err(format!("{shown:?}: {e}")),
        };
    }
    let Some(rest) = text.strip_prefix("redis://") else {
        return Err(format!(
            "expected a Redis URL like \"{FORM}\", got {shown:?}"
        ));
    };
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    if host.is_empty() || host.starts_with(':') {
        return Err(format!(
            "{shown:?} names no host: expected \"{FORM}\", like \"redis://127.0.0.1:6379\""
        ));
    }
    Ok(text.to_owned())
}

fn url<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    check_url(&values::string(d)?)
        .map(Some)
        .map_err(de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_redis_urls_with_a_host() {
        for good in [
            "redis://127.0.0.1:6379",
            "redis://localhost",
            "redis://redis.internal:6380/2",
            "redis://:s3cret@10.0.0.5:6379",
            "redis://app:s3cret@[::1]:6379/0",
            "redis+cluster://127.0.0.1:7001,127.0.0.1:7002",
            "redis+cluster://:pw@r1:6379",
        ] {
            assert_eq!(check_url(good).as_deref(), Ok(good));
        }
        for (bad, expected) in [
            ("", "got an empty string"),
            ("  ", "got an empty string"),
            ("http://127.0.0.1:6379", "expected a Redis URL like"),
            ("REDIS://x", "expected a Redis URL like"),
            ("127.0.0.1:6379", "expected a Redis URL like"),
            ("unix:///run/redis.sock", "expected a Redis URL like"),
            (
                "rediss://x:6379",
                "TLS to Redis (rediss://) is not supported yet",
            ),
            ("redis://", "names no host"),
            ("redis://:6379", "names no host"),
            ("redis://:pw@/0", "names no host"),
            ("redis+cluster://", "names no host"),
            ("redis+cluster://r1:6379/2", "only database 0"),
        ] {
            let e = check_url(bad).expect_err(bad);
            assert!(e.contains(expected), "{bad:?}: {e}");
        }
        // The password is never quoted back.
        for bad in [
            "http://:s3cret@x",
            "rediss://u:s3cret@x",
            "redis://:s3cret@",
            "redis+cluster://:s3cret@r1/4",
        ] {
            let e = check_url(bad).expect_err(bad);
            assert!(!e.contains("s3cret") && e.contains("[redacted]"), "{e}");
        }
    }
}
