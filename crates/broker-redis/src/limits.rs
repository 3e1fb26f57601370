//! [`RedisLimits`]: connections per address and per user counted over every node
//! (`limits.lua`: a hash per address or user with a field per node, so the sweep of a dead
//! node drops its share). Acquisitions and releases go through the ordered writer, so a
//! connection's release never overtakes its acquisition.
//!
//! The sweep finds a dead node's shares through the node's index of the hashes it counts in
//! (`sb:{nodes}:<node>:limits`). The index is not written by `limits.lua`: in a Redis
//! Cluster a script may touch only one slot. The node keeps it from its own books instead:
//! a hash enters the index (`SADD`, queued before the acquisition) when the node's first
//! connection there is being counted, and leaves it (`SREM`, queued after the release)
//! when its last one is gone. Both go to the index's slot in the order they were queued, so
//! the index holds every hash the node may have a share in.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use switchboard_hub::NodeId;
use tokio::sync::oneshot;

use crate::writer::Writer;
use crate::RedisLog;

/// Which limit refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limited {
    /// Connections from the address.
    Address,
    /// Connections of the user.
    User,
}

pub(crate) fn limit_key(what: &str, value: &str) -> String {
    format!("sb:limit:{what}:{value}")
}

pub(crate) fn node_limits_key(node: NodeId) -> String {
    format!("sb:{{nodes}}:{}:limits", node.0)
}

/// The shared counts (see the module docs). Made by [`crate::connect`].
#[derive(Clone)]
pub struct RedisLimits {
    pub(crate) log: RedisLog,
    pub(crate) writer: Writer,
    pub(crate) node: NodeId,
    /// Per hash: this node's acquisitions in flight or counted, not yet released.
    pub(crate) books: Arc<Mutex<HashMap<String, usize>>>,
}

impl std::fmt::Debug for RedisLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLimits")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

/// What one acquisition did.
enum Acquired {
    Counted,
    Refused,
    /// Redis did not answer.
    Unknown,
}

impl RedisLimits {
    fn command(&self, what: &str, value: &str, op: &str, max: usize) -> redis::Cmd {
        self.log.limits_command(
            &limit_key(what, value),
            &[op, &self.node.0.to_string(), &max.to_string()],
        )
    }

    fn books(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.books.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Count one more acquisition in the node's books; the first one puts the hash in the
    /// node's index (queued now: before the acquisition itself).
    fn enter(&self, what: &str, value: &str) {
        let counter = limit_key(what, value);
        let mut books = self.books();
        let count = books.entry(counter.clone()).or_insert(0);
        *count += 1;
        if *count == 1 {
            let mut add = redis::cmd("SADD");
            add.arg(node_limits_key(self.node)).arg(counter);
            self.writer.submit(add, Box::new(|_| {}));
        }
    }

    /// One acquisition less (refused, or released: queued after it); the last one takes
    /// the hash out of the node's index.
    fn leave(&self, what: &str, value: &str) {
        let counter = limit_key(what, value);
        let mut books = self.books();
        let Some(count) = books.get_mut(&counter) else {
            return;
        };
        *count -= 1;
        if *count == 0 {
            books.remove(&counter);
            let mut remove = redis::cmd("SREM");
            remove.arg(node_limits_key(self.node)).arg(counter);
            self.writer.submit(remove, Box::new(|_| {}));
        }
    }

    async fn acquire_one(&self, what: &str, value: &str, max: usize) -> Acquired {
        self.enter(what, value);
        let (tx, rx) = oneshot::channel();
        self.writer.submit(
            self.command(what, value, "acquire", max),
            Box::new(move |reply| drop(tx.send(reply))),
        );
        match rx.await {
            Ok(Ok(redis::Value::Int(1))) => Acquired::Counted,
            Ok(Ok(redis::Value::Int(0))) => {
                self.leave(what, value);
                Acquired::Refused
            }
            // (Followed by a release: `leave` comes with it.)
            _ => Acquired::Unknown,
        }
    }

    fn release_one(&self, what: &str, value: &str) {
        self.writer
            .submit(self.command(what, value, "release", 0), Box::new(|_| {}));
        self.leave(what, value);
    }

    /// Count a connection from `ip` of `user` (either optional) if neither is at its limit
    /// over every node: `Ok(true)` counted (release it with [`RedisLimits::release`]),
    /// `Ok(false)` not counted because Redis did not answer (the caller admits: availability
    /// first), `Err` the limit that refused it (nothing counted).
    pub async fn acquire(
        &self,
        ip: Option<&str>,
        user: Option<&str>,
        max_per_ip: usize,
        max_per_user: usize,
    ) -> Result<bool, Limited> {
        // An unanswered acquisition may still have counted (it only timed out): it is undone
        // with a release, sent after it on the same ordered queue. (Had it not counted, the
        // release under-counts this node by one: the safe side.)
        let ip_counted = match ip {
            Some(ip) => match self.acquire_one("ip", ip, max_per_ip).await {
                Acquired::Counted => true,
                Acquired::Refused => return Err(Limited::Address),
                Acquired::Unknown => {
                    self.release_one("ip", ip);
                    return Ok(false);
                }
            },
            None => false,
        };
        let Some(user) = user else {
            return Ok(true);
        };
        let undo = |this: &RedisLimits| {
            if let (true, Some(ip)) = (ip_counted, ip) {
                this.release_one("ip", ip);
            }
        };
        match self.acquire_one("user", user, max_per_user).await {
            Acquired::Counted => Ok(true),
            Acquired::Refused => {
                undo(self);
                Err(Limited::User)
            }
            Acquired::Unknown => {
                undo(self);
                self.release_one("user", user);
                Ok(false)
            }
        }
    }

    /// A connection counted by [`RedisLimits::acquire`] ended.
    pub fn release(&self, ip: Option<&str>, user: Option<&str>) {
        if let Some(ip) = ip {
            self.release_one("ip", ip);
        }
        if let Some(user) = user {
            self.release_one("user", user);
        }
    }
}
