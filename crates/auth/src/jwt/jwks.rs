//! A JWKS (file or URL), fetched on demand and cached.
//!
//! Fetch policy: the first use fetches; a token naming a `kid` we do not have, or a set older
//! than `max_age`, fetches again, but never sooner than `refetch_interval` after the previous
//! attempt (made-up `kid`s must not turn us into a amplifier against the key server). Fetches
//! are single-flight: concurrent misses wait for one fetch. A failed fetch keeps the old keys.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Uri};
use http_body_util::Full;
use tokio::time::Instant;

use super::keys::{jwks_keys, VerifyKey};
use crate::http_client::HttpClient;

/// Largest JWKS document read: real ones are a few KiB.
const MAX_JWKS_BYTES: usize = 1 << 20;

#[derive(Debug, Clone)]
pub(crate) enum JwksSource {
    File(PathBuf),
    Url(Uri),
}

#[derive(Debug)]
pub(crate) struct Jwks {
    source: JwksSource,
    client: HttpClient,
    refetch_interval: Duration,
    max_age: Duration,
    timeout: Duration,
    // Read on every verification, written after a fetch: a std RwLock, never held across await.
    state: RwLock<State>,
    // Single-flight: the fetching task holds it across the fetch.
    fetching: tokio::sync::Mutex<()>,
}

#[derive(Debug, Default)]
struct State {
    keys: Arc<Vec<VerifyKey>>,
    fetched_at: Option<Instant>,
    last_attempt: Option<Instant>,
    fetches: u64,
}

impl State {
    /// Whether a lookup for `kid` at `now` should fetch first (the pure part of the policy).
    fn wants_fetch(
        &self,
        kid: Option<&str>,
        now: Instant,
        refetch_interval: Duration,
        max_age: Duration,
    ) -> bool {
        if self
            .last_attempt
            .is_some_and(|at| now.saturating_duration_since(at) < refetch_interval)
        {
            return false;
        }
        let Some(fetched_at) = self.fetched_at else {
            return true;
        };
        let stale = now.saturating_duration_since(fetched_at) >= max_age;
        stale || self.lacks(kid)
    }

    /// Never fetched, or `kid` is not in the set.
    fn lacks(&self, kid: Option<&str>) -> bool {
        self.fetched_at.is_none()
            || kid.is_some_and(|kid| !self.keys.iter().any(|k| k.kid.as_deref() == Some(kid)))
    }
}

impl Jwks {
    pub(crate) fn new(
        source: JwksSource,
        client: HttpClient,
        refetch_interval: Duration,
        max_age: Duration,
        timeout: Duration,
    ) -> Jwks {
        Jwks {
            source,
            client,
            refetch_interval,
            max_age,
            timeout,
            state: RwLock::new(State::default()),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    /// The current keys, fetched first if the policy says so.
    ///
    /// Cancel safety: cancelling during a fetch abandons it; the next caller fetches again (the
    /// attempt is recorded before the fetch, so at most once per interval even then).
    pub(crate) async fn keys(&self, kid: Option<&str>) -> Arc<Vec<VerifyKey>> {
        let (keys, fetches, wants, missing) = {
            let state = self.read();
            (
                Arc::clone(&state.keys),
                state.fetches,
                state.wants_fetch(kid, Instant::now(), self.refetch_interval, self.max_age),
                state.lacks(kid),
            )
        };
        if !wants {
            // The interval forbids a fetch of our own, but one may be in flight right now (it
            // set `last_attempt` when it started): wait for it rather than fail on old keys.
            if missing && self.fetching.try_lock().is_err() {
                let _wait = self.fetching.lock().await;
                return Arc::clone(&self.read().keys);
            }
            return keys;
        }
        let _guard = self.fetching.lock().await;
        {
            // Someone fetched while we waited for the lock: use theirs, and let the interval
            // decide whether another fetch is still warranted.
            let mut state = self.write();
            if state.fetches != fetches
                || !state.wants_fetch(kid, Instant::now(), self.refetch_interval, self.max_age)
            {
                return Arc::clone(&state.keys);
            }
            state.last_attempt = Some(Instant::now());
            state.fetches += 1;
        }
        match self.fetch().await {
            Ok(fresh) => {
                let mut state = self.write();
                state.keys = Arc::new(fresh);
                state.fetched_at = Some(Instant::now());
                Arc::clone(&state.keys)
            }
            Err(e) => {
                tracing::warn!(source = %self.describe(), error = %e, "JWKS fetch failed; keeping the previous keys");
                Arc::clone(&self.read().keys)
            }
        }
    }

    /// How many fetches were attempted (tests and metrics).
    pub(crate) fn fetch_count(&self) -> u64 {
        self.read().fetches
    }

    async fn fetch(&self) -> Result<Vec<VerifyKey>, String> {
        let document: Bytes = match &self.source {
            JwksSource::File(path) => tokio::fs::read(path)
                .await
                .map_err(|e| e.to_string())?
                .into(),
            JwksSource::Url(uri) => {
                let request = Request::get(uri.clone())
                    .header(http::header::ACCEPT, "application/json")
                    .body(Full::new(Bytes::new()))
                    .map_err(|e| e.to_string())?;
                let (status, body) = self
                    .client
                    .send(request, MAX_JWKS_BYTES, self.timeout)
                    .await
                    .map_err(|e| e.to_string())?;
                if !status.is_success() {
                    return Err(format!("HTTP {status}"));
                }
                body
            }
        };
        jwks_keys(&document)
    }

    fn describe(&self) -> String {
        match &self.source {
            JwksSource::File(p) => p.display().to_string(),
            JwksSource::Url(u) => u.to_string(),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        // Every write replaces whole fields, so a poisoned lock still holds a consistent state.
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_fetches_first_then_on_unknown_kid_or_age_but_not_within_the_interval() {
        let interval = Duration::from_secs(30);
        let max_age = Duration::from_secs(3600);
        let t0 = Instant::now();
        let mut s = State::default();
        assert!(s.wants_fetch(None, t0, interval, max_age), "never fetched");
        s.last_attempt = Some(t0);
        s.fetched_at = Some(t0);
        assert!(
            !s.wants_fetch(None, t0 + Duration::from_secs(60), interval, max_age),
            "fresh, no kid"
        );
        assert!(
            !s.wants_fetch(Some("new"), t0 + Duration::from_secs(10), interval, max_age),
            "within interval"
        );
        assert!(
            s.wants_fetch(Some("new"), t0 + Duration::from_secs(31), interval, max_age),
            "unknown kid after interval"
        );
        assert!(
            s.wants_fetch(None, t0 + Duration::from_secs(3600), interval, max_age),
            "stale"
        );
    }
}
