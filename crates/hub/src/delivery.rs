//! A message on its way to many connections: encoded once, framed once per transport.

use std::any::Any;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use bytes::Bytes;

/// Number of transport encodings a delivery can cache (WebSocket frame, SSE event, ...).
pub const ENCODING_SLOTS: usize = 4;

/// One message as every recipient gets it. Shared by `Arc`: the JSON is serialized once, and
/// each transport frames it once (in a slot of its own) for all its connections.
pub struct Delivery {
    json: Bytes,
    offset: Option<u64>,
    created: Instant,
    encodings: [OnceLock<Arc<dyn Any + Send + Sync>>; ENCODING_SLOTS],
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("offset", &self.offset)
            .field("json_len", &self.json.len())
            .finish()
    }
}

impl Delivery {
    /// A message with its history offset (`None` for ephemeral events like `user_joined`).
    pub fn new(json: Bytes, offset: Option<u64>) -> Arc<Delivery> {
        Arc::new(Delivery {
            json,
            offset,
            created: Instant::now(),
            encodings: Default::default(),
        })
    }

    /// The JSON text.
    pub fn json(&self) -> &Bytes {
        &self.json
    }

    /// When it was published (for delivery-latency metrics).
    pub fn created(&self) -> Instant {
        self.created
    }

    /// The room offset, for messages kept in history.
    pub fn offset(&self) -> Option<u64> {
        self.offset
    }

    /// The transport encoding in `slot`, made by `make` on first use. A transport uses one
    /// slot and always the same type in it; `None` only if that rule is broken.
    pub fn encoding<T: Any + Send + Sync>(
        &self,
        slot: usize,
        make: impl FnOnce(&Bytes) -> T,
    ) -> Option<&T> {
        self.encodings
            .get(slot)?
            .get_or_init(|| Arc::new(make(&self.json)))
            .downcast_ref::<T>()
    }

    /// Bytes this delivery counts against an outbox budget.
    pub fn cost(&self) -> usize {
        self.json.len() + 64
    }
}
