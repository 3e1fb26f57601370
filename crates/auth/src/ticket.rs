//! One-time connection tickets: the seeds' "short-lived single-use tokens specifically for
//! WebSocket connection establishment". A client trades its real token for a ticket
//! (`POST /api/ticket`) and puts the ticket in the URL (`?ticket=`), where proxies log it: by
//! then it has been used, or it dies within seconds.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;
use tokio::time::Instant;

use crate::identity::Identity;

/// A boxed future, so [`TicketStore`] can be used as `dyn` and implemented by async backends.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a ticket could not be issued or redeemed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TicketError {
    /// The cap on outstanding tickets is reached: 503 / try again.
    #[error("too many outstanding tickets")]
    Full,
    /// The store could not be reached (for out-of-process stores).
    #[error("ticket store unavailable: {0}")]
    Unavailable(String),
    /// The random number generator failed.
    #[error("no randomness: {0}")]
    Random(String),
}

/// Where tickets live between issue and redemption.
///
/// The in-process [`MemoryTicketStore`] only works when the ticket is redeemed on the node that
/// issued it. A cluster needs a shared store: `switchboard_broker_redis::RedisTickets` does
/// `SET sb:ticket:<t> <identity json> NX PX <ttl>` to issue and `GETDEL` to redeem (atomic,
/// so still single-use across nodes).
pub trait TicketStore: Send + Sync + 'static {
    /// Stores `identity` under a fresh unguessable ticket valid for `ttl`, and returns it.
    fn issue(
        &self,
        identity: Identity,
        ttl: Duration,
    ) -> BoxFuture<'_, Result<String, TicketError>>;

    /// Takes the ticket's identity out: `Some` exactly once, and only before it expires.
    fn redeem<'a>(
        &'a self,
        ticket: &'a str,
    ) -> BoxFuture<'a, Result<Option<Identity>, TicketError>>;
}

/// Tickets in a map in this process.
///
/// Bounded: at most `max_outstanding` live tickets. Expired ones are swept lazily, when the map
/// is full (so a steady trickle never pays for a sweep, and a full map only refuses once every
/// remaining ticket is really live).
#[derive(Debug)]
pub struct MemoryTicketStore {
    // A std mutex: held for a map operation only, never across an await.
    tickets: Mutex<Tickets>,
    max_outstanding: usize,
}

#[derive(Debug, Default)]
struct Tickets {
    map: HashMap<String, Entry>,
    /// No ticket in `map` expires before this, so a full map with `earliest > now` is refused
    /// without a scan (a client hammering a full store costs O(1) per attempt).
    earliest: Option<Instant>,
}

#[derive(Debug)]
struct Entry {
    identity: Identity,
    expires: Instant,
}

impl MemoryTicketStore {
    /// A store holding at most `max_outstanding` live tickets.
    pub fn new(max_outstanding: usize) -> MemoryTicketStore {
        MemoryTicketStore {
            tickets: Mutex::new(Tickets::default()),
            max_outstanding,
        }
    }

    /// Live plus not yet swept tickets.
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    /// Whether no ticket is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tickets> {
        // A panic while holding the lock cannot leave the map half-updated (each operation is
        // one insert or remove), so a poisoned lock is still usable.
        self.tickets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn issue_now(&self, identity: Identity, ttl: Duration) -> Result<String, TicketError> {
        let ticket = new_ticket()?;
        let now = Instant::now();
        let expires = now + ttl;
        let mut tickets = self.lock();
        if tickets.map.len() >= self.max_outstanding {
            if tickets.earliest.is_some_and(|earliest| earliest > now) {
                return Err(TicketError::Full);
            }
            tickets.map.retain(|_, e| e.expires > now);
            tickets.earliest = tickets.map.values().map(|e| e.expires).min();
            if tickets.map.len() >= self.max_outstanding {
                return Err(TicketError::Full);
            }
        }
        tickets.earliest = Some(tickets.earliest.map_or(expires, |e| e.min(expires)));
        tickets
            .map
            .insert(ticket.clone(), Entry { identity, expires });
        Ok(ticket)
    }

    fn redeem_now(&self, ticket: &str) -> Option<Identity> {
        // Removed whether live or expired: either way it must never work again.
        // `earliest` may now be too early; that only costs one needless scan later.
        let entry = self.lock().map.remove(ticket)?;
        (entry.expires > Instant::now()).then_some(entry.identity)
    }
}

impl TicketStore for MemoryTicketStore {
    fn issue(
        &self,
        identity: Identity,
        ttl: Duration,
    ) -> BoxFuture<'_, Result<String, TicketError>> {
        let result = self.issue_now(identity, ttl);
        Box::pin(async move { result })
    }

    fn redeem<'a>(
        &'a self,
        ticket: &'a str,
    ) -> BoxFuture<'a, Result<Option<Identity>, TicketError>> {
        let result = Ok(self.redeem_now(ticket));
        Box::pin(async move { result })
    }
}

/// A fresh ticket: 32 random bytes (256 bits) from the OS, base64url without padding (43
/// URL-safe characters). For [`TicketStore`] implementations.
pub fn new_ticket() -> Result<String, TicketError> {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes).map_err(|e| TicketError::Random(e.to_string()))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use serde_json::Map;

    use super::*;

    fn alice() -> Identity {
        Identity::from_proxy("alice".into(), Map::new(), None, None)
    }

    #[tokio::test]
    async fn a_ticket_works_exactly_once() {
        let store = MemoryTicketStore::new(10);
        let t = store.issue(alice(), Duration::from_secs(30)).await.unwrap();
        assert_eq!(
            store
                .redeem(&t)
                .await
                .unwrap()
                .map(|i| i.user_id().to_owned()),
            Some("alice".into())
        );
        assert_eq!(store.redeem(&t).await.unwrap(), None);
        assert_eq!(store.redeem("never-issued").await.unwrap(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn an_expired_ticket_is_refused_and_forgotten() {
        let store = MemoryTicketStore::new(10);
        let t = store.issue(alice(), Duration::from_secs(30)).await.unwrap();
        tokio::time::advance(Duration::from_secs(31)).await;
        assert_eq!(store.redeem(&t).await.unwrap(), None);
        assert!(store.is_empty());
    }

    #[test]
    fn tickets_are_long_url_safe_and_distinct() {
        let a = new_ticket().unwrap();
        let b = new_ticket().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 43, "256 bits in base64url");
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'),
            "{a}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_cap_holds_until_expired_tickets_are_swept() {
        let store = MemoryTicketStore::new(2);
        store.issue(alice(), Duration::from_secs(10)).await.unwrap();
        store.issue(alice(), Duration::from_secs(60)).await.unwrap();
        assert_eq!(
            store.issue(alice(), Duration::from_secs(10)).await,
            Err(TicketError::Full)
        );
        tokio::time::advance(Duration::from_secs(11)).await;
        // The first ticket has expired: issuing sweeps it and succeeds.
        store.issue(alice(), Duration::from_secs(10)).await.unwrap();
        assert_eq!(store.len(), 2);
    }
}
