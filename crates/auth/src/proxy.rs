//! The connect proxy: asks the application who an opaque credential (a session cookie, an
//! opaque token) belongs to; the seeds' `verifySession`.
//!
//! Request: `POST <url>` with `{"transport", "origin", "client_ip", "token"}` (or `"cookie"`
//! instead of `"token"` for a cookie credential). Answer: 2xx with
//! `{"user_id": "alice", "claims": {...}, "channels": ["chat:*"], "expire_at": 1700000000}`
//! (`userId` or `sub` accepted for `user_id`; all but the user id optional). Any other status
//! refuses the credential; a timeout, a connection failure or an unreadable 2xx answer means the
//! backend is unavailable, which is not the client's fault and is reported differently.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Uri};
use http_body_util::Full;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::time::Instant;

use crate::config::ConnectProxyConfig;
use crate::credential::{Credential, CredentialSource};
use crate::error::{AuthError, ConfigError};
use crate::http_client::{FetchError, HttpClient};
use crate::identity::Identity;

/// What the transport knows about the connection being authenticated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectInfo {
    /// The `Origin` header, if any.
    pub origin: Option<String>,
    /// The peer's address (after any trusted-proxy processing the server does).
    pub client_ip: Option<IpAddr>,
    /// `websocket`, `sse`, `poll`, `http` (for logs and the proxy's decisions).
    pub transport: &'static str,
}

/// The connect proxy client with its answer cache.
#[derive(Debug)]
pub struct ConnectProxy {
    url: Uri,
    client: HttpClient,
    timeout: Duration,
    max_response_bytes: usize,
    cache: AnswerCache,
}

impl ConnectProxy {
    /// A client for `config.url`.
    pub fn new(config: &ConnectProxyConfig) -> Result<ConnectProxy, ConfigError> {
        ConnectProxy::with_client(config, HttpClient::new())
    }

    pub(crate) fn with_client(
        config: &ConnectProxyConfig,
        client: HttpClient,
    ) -> Result<ConnectProxy, ConfigError> {
        let url: Uri = config.url.parse().map_err(|e| {
            ConfigError::Invalid(format!("connect_proxy.url {:?}: {e}", config.url))
        })?;
        if !matches!(url.scheme_str(), Some("http" | "https")) {
            return Err(ConfigError::Invalid(format!(
                "connect_proxy.url {:?}: must be http:// or https://",
                config.url
            )));
        }
        Ok(ConnectProxy {
            url,
            client,
            timeout: config.timeout,
            max_response_bytes: config.max_response_bytes,
            cache: AnswerCache::new(config.cache_ttl, config.cache_size),
        })
    }

    /// Who `credential` belongs to, from the cache or the application. `now` is unix seconds,
    /// to drop answers past their `expire_at`.
    ///
    /// Cancel safe: a cancelled call caches nothing.
    pub async fn authenticate(
        &self,
        credential: &Credential,
        info: &ConnectInfo,
        now: u64,
    ) -> Result<Identity, AuthError> {
        let key = cache_key(credential);
        if let Some(identity) = self.cache.get(&key, now) {
            return Ok(identity);
        }
        let identity = self.ask(credential, info).await?;
        if identity.connection_expires_at().is_some_and(|at| at <= now) {
            return Err(AuthError::Expired);
        }
        self.cache.put(key, identity.clone());
        Ok(identity)
    }

    async fn ask(
        &self,
        credential: &Credential,
        info: &ConnectInfo,
    ) -> Result<Identity, AuthError> {
        let is_cookie = credential.source() == CredentialSource::Cookie;
        let body = ProxyRequest {
            transport: info.transport,
            origin: info.origin.as_deref(),
            client_ip: info.client_ip.map(|ip| ip.to_string()),
            token: (!is_cookie).then_some(credential.secret()),
            cookie: is_cookie.then_some(credential.secret()),
        };
        let body =
            serde_json::to_vec(&body).map_err(|e| AuthError::BackendUnavailable(e.to_string()))?;
        let request = Request::post(self.url.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::ACCEPT, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| AuthError::BackendUnavailable(e.to_string()))?;
        let (status, body) = self
            .client
            .send(request, self.max_response_bytes, self.timeout)
            .await
            .map_err(|e| match e {
                FetchError::Timeout => {
                    AuthError::BackendUnavailable(format!("no answer within {:?}", self.timeout))
                }
                FetchError::Failed(why) => AuthError::BackendUnavailable(why),
            })?;
        if !status.is_success() {
            return Err(AuthError::Refused(status.as_u16()));
        }
        let answer: ProxyAnswer = serde_json::from_slice(&body)
            .map_err(|e| AuthError::BackendUnavailable(format!("unreadable answer: {e}")))?;
        if answer.user_id.is_empty() {
            return Err(AuthError::BackendUnavailable(
                "answer has an empty user_id".into(),
            ));
        }
        let mut claims = answer.claims.unwrap_or_default();
        claims
            .entry("sub")
            .or_insert_with(|| Value::String(answer.user_id.clone()));
        Ok(Identity::from_proxy(
            answer.user_id,
            claims,
            answer.channels,
            answer.expire_at,
        ))
    }
}

#[derive(Serialize)]
struct ProxyRequest<'a> {
    transport: &'a str,
    origin: Option<&'a str>,
    client_ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cookie: Option<&'a str>,
}

#[derive(Deserialize)]
struct ProxyAnswer {
    #[serde(alias = "userId", alias = "sub")]
    user_id: String,
    #[serde(default)]
    claims: Option<Map<String, Value>>,
    #[serde(default)]
    channels: Option<Vec<String>>,
    #[serde(default)]
    expire_at: Option<u64>,
}

/// SHA-256 of the credential and its kind: the cache holds no raw credential, so a heap dump
/// shows no usable session ids.
type CacheKey = [u8; 32];

fn cache_key(credential: &Credential) -> CacheKey {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(if credential.source() == CredentialSource::Cookie {
        b"c"
    } else {
        b"t"
    });
    ctx.update(credential.secret().as_bytes());
    let mut key = [0u8; 32];
    key.copy_from_slice(ctx.finish().as_ref());
    key
}

/// Accepted answers for `ttl`, at most `capacity`, oldest evicted first. Refusals are not
/// cached: a refused user who logs in again presents a new credential anyway, and a cached
/// refusal would outlive an application's fix.
#[derive(Debug)]
struct AnswerCache {
    ttl: Duration,
    capacity: usize,
    // Held for map operations only, never across an await.
    inner: Mutex<CacheInner>,
}

#[derive(Debug, Default)]
struct CacheInner {
    map: HashMap<CacheKey, (Identity, Instant)>,
    // Insertion order = expiry order (one TTL for all), so the front is always the oldest.
    order: VecDeque<(CacheKey, Instant)>,
}

impl AnswerCache {
    fn new(ttl: Duration, capacity: usize) -> AnswerCache {
        AnswerCache {
            ttl,
            capacity,
            inner: Mutex::new(CacheInner::default()),
        }
    }

    fn enabled(&self) -> bool {
        !self.ttl.is_zero() && self.capacity > 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheInner> {
        // Each operation leaves map and order consistent between statements that cannot panic.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, key: &CacheKey, now_unix: u64) -> Option<Identity> {
        if !self.enabled() {
            return None;
        }
        let mut inner = self.lock();
        let (identity, until) = inner.map.get(key)?;
        if *until <= Instant::now()
            || identity
                .connection_expires_at()
                .is_some_and(|at| at <= now_unix)
        {
            inner.map.remove(key);
            return None;
        }
        Some(identity.clone())
    }

    fn put(&self, key: CacheKey, identity: Identity) {
        if !self.enabled() {
            return;
        }
        let now = Instant::now();
        let until = now + self.ttl;
        let mut inner = self.lock();
        // Drop expired entries from the front, then the oldest live ones while over capacity.
        while let Some(&(front, at)) = inner.order.front() {
            let over = inner.map.len() >= self.capacity;
            if at > now && !over {
                break;
            }
            inner.order.pop_front();
            // Only remove if the map still holds this very insertion (not a newer one).
            if inner.map.get(&front).is_some_and(|(_, u)| *u == at) {
                inner.map.remove(&front);
            }
        }
        inner.map.insert(key, (identity, until));
        inner.order.push_back((key, until));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(name: &str) -> Identity {
        Identity::from_proxy(name.into(), Map::new(), None, None)
    }

    fn key(n: u8) -> CacheKey {
        [n; 32]
    }

    #[tokio::test(start_paused = true)]
    async fn cache_entries_expire_after_the_ttl() {
        let cache = AnswerCache::new(Duration::from_secs(10), 10);
        cache.put(key(1), id("a"));
        assert_eq!(
            cache.get(&key(1), 0).map(|i| i.user_id().to_owned()),
            Some("a".into())
        );
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(cache.get(&key(1), 0).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn cache_is_bounded_and_evicts_the_oldest() {
        let cache = AnswerCache::new(Duration::from_secs(60), 2);
        cache.put(key(1), id("a"));
        cache.put(key(2), id("b"));
        cache.put(key(3), id("c"));
        assert_eq!(cache.len(), 2);
        assert!(cache.get(&key(1), 0).is_none());
        assert!(cache.get(&key(3), 0).is_some());
        // Re-inserting a key does not let its stale order entry evict the new value.
        cache.put(key(2), id("b2"));
        cache.put(key(4), id("d"));
        assert_eq!(
            cache.get(&key(2), 0).map(|i| i.user_id().to_owned()),
            Some("b2".into())
        );
    }

    #[test]
    fn an_answer_past_its_expire_at_is_not_served() {
        let cache = AnswerCache::new(Duration::from_secs(60), 2);
        cache.put(
            key(1),
            Identity::from_proxy("a".into(), Map::new(), None, Some(100)),
        );
        assert!(cache.get(&key(1), 99).is_some());
        assert!(cache.get(&key(1), 100).is_none());
    }

    #[test]
    fn cache_keys_depend_on_secret_and_kind() {
        let t = cache_key(&Credential::new("x", CredentialSource::Query));
        let h = cache_key(&Credential::new("x", CredentialSource::Header));
        let c = cache_key(&Credential::new("x", CredentialSource::Cookie));
        let other = cache_key(&Credential::new("y", CredentialSource::Query));
        assert_eq!(t, h);
        assert_ne!(t, c);
        assert_ne!(t, other);
    }
}
