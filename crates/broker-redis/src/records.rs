//! [`RedisRecords`]: Socket.IO recovery records shared by the nodes (`sb:sio:<pid>`), so a
//! socket recovers on any node, also after the node that held it died. A live socket's
//! record has no short expiry (a day, as a safety net); its connection lost, it gets the
//! recovery window; its node dead, the other nodes' sweep gives it the window
//! (`sb:{nodes}:<node>:sio` lists a node's live records). Writes go through the ordered writer
//! (a record is never resurrected by a late write after its delete); a take is `GETDEL`
//! (a pid recovers once, on one node). A record names its owner node (`<node>\n<record>`):
//! an expiry or delete applies only while that node still owns it (`records.lua`), so the
//! late expiry of a socket's old node cannot shorten the record of the node where it
//! recovered.

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
    format!("sb:{{nodes}}:{}:sio", node.0)
}

/// The owner-checked expiry or delete (see the module docs).
const OWNED: &str = include_str!("records.lua");

/// What a record owned by `node` starts with.
fn owner_prefix(node: NodeId) -> String {
    format!("{}\n", node.0)
}

/// `record` without its owner prefix (a record without one is returned whole).
fn without_owner(record: String) -> String {
    match record.split_once('\n') {
        Some((owner, rest)) if !owner.is_empty() && owner.bytes().all(|b| b.is_ascii_digit()) => {
            rest.to_owned()
        }
        _ => record,
    }
}

/// Expire (`Some(window)`) or delete (`None`) the record of `pid` if `node` owns it.
pub(crate) fn owned_cmd(pid: &str, node: NodeId, expiry: Option<Duration>) -> redis::Cmd {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(OWNED)
        .arg(1)
        .arg(record_key(pid))
        .arg(owner_prefix(node))
        .arg(expiry.map_or(String::new(), |window| {
            window.as_millis().max(1).to_string()
        }));
    cmd
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
            .arg(format!("{}{record}", owner_prefix(self.node)))
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
        self.send(owned_cmd(pid, self.node, Some(self.window)));
        let mut remove = redis::cmd("SREM");
        remove.arg(node_records_key(self.node)).arg(pid);
        self.send(remove);
    }

    /// Socket `pid` ended on purpose: no record.
    pub fn delete(&self, pid: &str) {
        if !is_short_token(pid) {
            return;
        }
        self.send(owned_cmd(pid, self.node, None));
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
            Ok(Ok(record)) => record.map(without_owner),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "redis: cannot read a recovery record");
                None
            }
            Err(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_owner_prefix_is_taken_off_and_only_it() {
        let record = format!("{}{{\"a\":1}}", owner_prefix(NodeId(42)));
        assert_eq!(without_owner(record), "{\"a\":1}");
        assert_eq!(without_owner("{\"a\":1}".into()), "{\"a\":1}");
        assert_eq!(without_owner("x\n{}".into()), "x\n{}");
    }
}
