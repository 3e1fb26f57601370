//! [`RedisRecords`]: Socket.IO recovery records shared by the nodes (`sb:sio:<pid>`), so a
//! socket recovers on any node, also after the node that held it died. A live socket's
//! record has no short expiry (a day, as a safety net); its connection lost, it gets the
//! recovery window; its node dead, the other nodes' sweep gives it the window
//! (`sb:node:<node>:sio` lists a node's live records). Writes go through the ordered writer
//! (a record is never resurrected by a late write after its delete); a take is `GETDEL`
//! (a pid recovers once, on one node).

use std::time::Duration;

use switchboard_hub::NodeId;

use crate::writer::Writer;
use crate::{is_short_token, RedisLog};

/// A live record's expiry: only a safety net (records of live sockets are kept; this bounds
/// the leftovers of anything that went wrong).
const LIVE_EXPIRY: Duration = Duration::from_secs(24 * 3600);

pub(crate) fn record_key(pid: &str) -> String {
    format!("sb:sio:{pid}")
}

pub(crate) fn node_records_key(node: NodeId) -> String {
    format!("sb:node:{}:sio", node.0)
}

/// The shared records (see the module docs). Made by [`crate::connect`].
#[derive(Clone)]
pub struct RedisRecords {
    pub(crate) log: RedisLog,
    pub(crate) writer: Writer,
    pub(crate) node: NodeId,
    pub(crate) window: Duration,
    pub(crate) timeout: Duration,
}

impl std::fmt::Debug for RedisRecords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisRecords")
            .field("node", &self.node)
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

impl RedisRecords {
    fn send(&self, cmd: redis::Cmd) {
        self.writer.submit(cmd, Box::new(|_| {}));
    }

    /// Live socket `pid`'s record is now `record`.
    pub fn put(&self, pid: &str, record: &str) {
        if !is_short_token(pid) {
            return;
        }
        let mut set = redis::cmd("SET");
        set.arg(record_key(pid))
            .arg(record)
            .arg("PX")
            .arg(LIVE_EXPIRY.as_millis().to_string());
        self.send(set);
        let mut add = redis::cmd("SADD");
        add.arg(node_records_key(self.node)).arg(pid);
        self.send(add);
    }

    /// Socket `pid`'s connection was lost: its record lives for the recovery window.
    pub fn expire(&self, pid: &str) {
        if !is_short_token(pid) {
            return;
        }
        let mut expire = redis::cmd("PEXPIRE");
        expire
            .arg(record_key(pid))
            .arg(self.window.as_millis().max(1).to_string());
        self.send(expire);
        let mut remove = redis::cmd("SREM");
        remove.arg(node_records_key(self.node)).arg(pid);
        self.send(remove);
    }

    /// Socket `pid` ended on purpose: no record.
    pub fn delete(&self, pid: &str) {
        if !is_short_token(pid) {
            return;
        }
        let mut del = redis::cmd("DEL");
        del.arg(record_key(pid));
        self.send(del);
        let mut remove = redis::cmd("SREM");
        remove.arg(node_records_key(self.node)).arg(pid);
        self.send(remove);
    }

    /// Take `pid`'s record (once, on one node); `None` when there is none or Redis did not
    /// answer in time (the socket is then a new one: `recovered: false`, never a guess).
    pub async fn take(&self, pid: &str) -> Option<String> {
        if !is_short_token(pid) {
            return None;
        }
        let mut conn = self.log.connection();
        let mut cmd = redis::cmd("GETDEL");
        cmd.arg(record_key(pid));
        match tokio::time::timeout(self.timeout, cmd.query_async::<Option<String>>(&mut conn)).await
        {
            Ok(Ok(record)) => record,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "redis: cannot read a recovery record");
                None
            }
            Err(_) => None,
        }
    }
}
