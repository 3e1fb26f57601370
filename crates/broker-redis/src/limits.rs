//! [`RedisLimits`]: connections per address and per user counted over every node
//! (`limits.lua`: a hash per address or user with a field per node, so the sweep of a dead
//! node drops its share). Acquisitions and releases go through the ordered writer, so a
//! connection's release never overtakes its acquisition.

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
    format!("sb:node:{}:limits", node.0)
}

/// The shared counts (see the module docs). Made by [`crate::connect`].
#[derive(Clone)]
pub struct RedisLimits {
    pub(crate) log: RedisLog,
    pub(crate) writer: Writer,
    pub(crate) node: NodeId,
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
            &node_limits_key(self.node),
            &[op, &self.node.0.to_string(), &max.to_string()],
        )
    }

    async fn acquire_one(&self, what: &str, value: &str, max: usize) -> Acquired {
        let (tx, rx) = oneshot::channel();
        self.writer.submit(
            self.command(what, value, "acquire", max),
            Box::new(move |reply| drop(tx.send(reply))),
        );
        match rx.await {
            Ok(Ok(redis::Value::Int(1))) => Acquired::Counted,
            Ok(Ok(redis::Value::Int(0))) => Acquired::Refused,
            _ => Acquired::Unknown,
        }
    }

    fn release_one(&self, what: &str, value: &str) {
        self.writer
            .submit(self.command(what, value, "release", 0), Box::new(|_| {}));
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
