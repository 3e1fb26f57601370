//! What browsers may do over plain HTTP besides reading feeds: publish without the backend's
//! API key (SPEC §1.2: client → server goes through `POST /api/publish`), where the
//! configuration allows it, and under a per-address rate limit — the HTTP counterpart of
//! the per-connection limit a WebSocket client has.
//!
//! Until authentication lands, such a publisher is anonymous: the rooms it may publish to
//! are `anonymous_publish` patterns, and its messages carry the user id `anonymous`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

use http::StatusCode;
use switchboard_hub::{RoomName, RoomPattern};
use switchboard_session::rate::{RateLimit, TokenBucket, Verdict};

use crate::api::ApiError;

/// The user id of anonymous HTTP publishers.
pub(crate) const ANONYMOUS_USER: &str = "anonymous";

/// At most this many addresses' buckets are remembered; beyond it, buckets that refilled
/// are forgotten (a full bucket is the state of an address never seen), so a scan of many
/// addresses costs bounded memory.
const MAX_TRACKED_ADDRESSES: usize = 50_000;

/// Anonymous publishing: where it is allowed, and each address's rate.
#[derive(Debug)]
pub(crate) struct AnonymousPublish {
    rooms: Vec<RoomPattern>,
    limit: Option<RateLimit>,
    buckets: Mutex<HashMap<IpAddr, TokenBucket>>,
}

impl AnonymousPublish {
    pub(crate) fn new(rooms: Vec<RoomPattern>, limit: Option<RateLimit>) -> AnonymousPublish {
        AnonymousPublish {
            rooms,
            limit,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// May an anonymous client at `ip` publish to `room` now? 401 when anonymous
    /// publishing is off (the API key is what is missing), 403 for a room it does not
    /// cover, 429 over the rate.
    pub(crate) fn admit(
        &self,
        room: &RoomName,
        ip: Option<IpAddr>,
        now: Instant,
    ) -> Result<(), ApiError> {
        if self.rooms.is_empty() {
            return Err(ApiError(
                StatusCode::UNAUTHORIZED,
                "missing Authorization: Bearer <API key>".into(),
            ));
        }
        if room.is_system() || !self.rooms.iter().any(|p| p.matches(room.as_str())) {
            return Err(ApiError(
                StatusCode::FORBIDDEN,
                format!("anonymous users may not publish to \"{}\"", room.as_str()),
            ));
        }
        let (Some(limit), Some(ip)) = (&self.limit, ip) else {
            return Ok(());
        };
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= MAX_TRACKED_ADDRESSES && !buckets.contains_key(&ip) {
            buckets.retain(|_, bucket| !bucket.is_full(limit, now));
        }
        let bucket = buckets
            .entry(ip)
            .or_insert_with(|| TokenBucket::new(limit, now));
        match bucket.check(limit, now) {
            Verdict::Accept => Ok(()),
            _ => Err(ApiError(
                StatusCode::TOO_MANY_REQUESTS,
                "Rate limit exceeded".into(),
            )),
        }
    }

    /// How many addresses are tracked (for tests).
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.buckets.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn room(name: &str) -> RoomName {
        RoomName::new(name).unwrap()
    }

    #[test]
    fn rooms_are_allowed_by_pattern_and_each_address_is_rate_limited() {
        let limit = RateLimit {
            messages: 2,
            per: Duration::from_secs(1),
            burst: 2,
        };
        let anon = AnonymousPublish::new(vec![RoomPattern::new("chat:*")], Some(limit));
        let (a, b): (IpAddr, IpAddr) = ([10, 0, 0, 1].into(), [10, 0, 0, 2].into());
        let t0 = Instant::now();
        let status = |r: Result<(), ApiError>| r.err().map(|e| e.0);
        assert_eq!(
            status(anon.admit(&room("orders"), Some(a), t0)),
            Some(StatusCode::FORBIDDEN)
        );
        assert_eq!(status(anon.admit(&room("chat:x"), Some(a), t0)), None);
        assert_eq!(status(anon.admit(&room("chat:x"), Some(a), t0)), None);
        assert_eq!(
            status(anon.admit(&room("chat:x"), Some(a), t0)),
            Some(StatusCode::TOO_MANY_REQUESTS)
        );
        assert_eq!(
            status(anon.admit(&room("chat:x"), Some(b), t0)),
            None,
            "per address"
        );
        let later = t0 + Duration::from_secs(1);
        assert_eq!(
            status(anon.admit(&room("chat:x"), Some(a), later)),
            None,
            "refilled"
        );
        let off = AnonymousPublish::new(Vec::new(), Some(limit));
        assert_eq!(
            status(off.admit(&room("chat:x"), Some(a), t0)),
            Some(StatusCode::UNAUTHORIZED)
        );
    }

    #[test]
    fn the_buckets_of_many_addresses_stay_bounded() {
        let limit = RateLimit::default();
        let anon = AnonymousPublish::new(vec![RoomPattern::new("*")], Some(limit));
        let t0 = Instant::now();
        for i in 0..(MAX_TRACKED_ADDRESSES as u32 + 1000) {
            let ip: IpAddr = std::net::Ipv4Addr::from(i).into();
            anon.admit(&room("r"), Some(ip), t0).unwrap();
        }
        // Every bucket refilled a minute later: they are forgotten when the map is full.
        let later = t0 + Duration::from_secs(60);
        anon.admit(&room("r"), Some([1, 2, 3, 4].into()), later)
            .unwrap();
        assert!(
            anon.tracked() <= MAX_TRACKED_ADDRESSES,
            "{}",
            anon.tracked()
        );
    }
}
