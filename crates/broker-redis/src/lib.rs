//! Switchboard on Redis (issue 13, in progress; design: docs/scale-out.md).
//!
//! Landed: [`RedisLog`], a room's history, offsets and dedup window in Redis, appended by one
//! server-side script per publish (dedup check, epoch, offset, `XADD`, `PUBLISH` in one
//! atomic step: two nodes publishing at once can neither reorder nor duplicate), and read
//! back by offset. Not yet: the hub's `Store`/`Broker` implementations on top of it, presence,
//! wiring (`--broker redis://…`).

mod conn;
pub mod envelope;
mod fanout;
mod forward;
mod limits;
mod records;
mod stats;
mod store;
pub mod template;
mod tickets;
mod writer;

pub use conn::{Conn, Target, CLUSTER_SCHEME};
pub use fanout::RedisBroker;
pub use forward::{ForwardError, ForwardHandler, ForwardLimits, RedisForwarder};
pub use limits::{Limited, RedisLimits};
pub use records::RedisRecords;
pub use store::{connect, Redis, RedisConfig, RedisStore};
pub use tickets::RedisTickets;

pub use envelope::{parse as parse_envelope, Envelope, Origin};
pub use template::{Template, TemplateError};

use std::time::Duration;

use bytes::Bytes;
use redis::streams::StreamRangeReply;

/// Limits of the rooms a [`RedisLog`] keeps.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// Messages kept per room (approximately: `XADD MAXLEN ~`).
    pub history_len: usize,
    /// How long a sender's message id is remembered for deduplication.
    pub dedup_window: Duration,
    /// A room with no publish for this long is forgotten (its keys expire; a later publish
    /// starts a new epoch).
    pub idle_expiry: Duration,
    /// The longest a Redis answer is waited for (the connection's response timeout; callers
    /// may wait less).
    pub timeout: Duration,
}

fn config_timeout(config: &LogConfig) -> Duration {
    config.timeout.max(Duration::from_millis(1))
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            history_len: 100,
            dedup_window: Duration::from_secs(120),
            idle_expiry: Duration::from_secs(24 * 3600),
            timeout: Duration::from_secs(2),
        }
    }
}

/// What an append did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Appended {
    /// Stored and published at `offset`.
    Published {
        /// Its offset.
        offset: u64,
        /// The room's epoch.
        epoch: String,
        /// The timestamp stamped into it (ms).
        timestamp_ms: u64,
    },
    /// The sender published this id within the dedup window: nothing was done.
    Duplicate {
        /// The first publish's offset.
        offset: u64,
        /// The room's epoch.
        epoch: String,
    },
}

/// A page of a room's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// `(offset, message)`, oldest first.
    pub messages: Vec<(u64, Bytes)>,
    /// The room's epoch (`None`: the room does not exist).
    pub epoch: Option<String>,
    /// The room's last offset.
    pub last_offset: u64,
}

/// A message as the history keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// Its offset.
    pub offset: u64,
    /// The connection it was published for everyone else, if any.
    pub origin: Option<Origin>,
    /// When it was appended (ms).
    pub timestamp_ms: u64,
    /// Its `type`.
    pub kind: String,
    /// Its JSON.
    pub message: Bytes,
}

/// An answer of [`RedisLog::read_range`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangePage {
    /// The messages, oldest first.
    pub entries: Vec<Stored>,
    /// The byte bound left some out: ask again after the last one.
    pub more: bool,
    /// The room's last offset.
    pub last_offset: u64,
    /// The room's epoch.
    pub epoch: String,
    /// The epoch asked for is the room's and every message after the offset asked for is
    /// still retained.
    pub covered: bool,
}

fn stored(entry: &redis::streams::StreamId) -> Result<Stored, Error> {
    let offset = entry
        .id
        .strip_prefix("0-")
        .and_then(|o| o.parse().ok())
        .ok_or(Error::Answer)?;
    let bytes = |field: &str| match entry.map.get(field) {
        Some(redis::Value::BulkString(b)) => Ok(b.clone()),
        _ => Err(Error::Answer),
    };
    // (Entries written before origins were kept have none.)
    let origin = match entry.map.get("o") {
        Some(redis::Value::BulkString(b)) => std::str::from_utf8(b)
            .ok()
            .and_then(envelope::parse_origin)
            .flatten(),
        _ => None,
    };
    Ok(Stored {
        offset,
        origin,
        timestamp_ms: String::from_utf8(bytes("t")?)
            .ok()
            .and_then(|t| t.parse().ok())
            .ok_or(Error::Answer)?,
        kind: String::from_utf8(bytes("k")?).map_err(|_| Error::Answer)?,
        message: Bytes::from(bytes("d")?),
    })
}

/// Whether `token` has the form of the ids clients hand us to look up (tickets, Socket.IO
/// pids: short URL-safe strings). Anything else is not sent to Redis: an attacker's megabyte
/// "ticket" costs nothing.
pub(crate) fn is_short_token(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= 64
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A fresh random epoch (hex: never the presence mark of an envelope).
pub fn new_epoch() -> String {
    format!("{:x}", template::sentinels().0)
}

/// Where and how a message is appended ([`RedisLog::append_call`]).
#[derive(Clone, Copy)]
pub struct AppendTarget<'a> {
    /// The room appended to.
    pub room: &'a str,
    /// The message's type.
    pub kind: &'a str,
    /// The connection it came from, so a replay can honour it.
    pub origin: Option<Origin>,
    /// `(sender, id)`: nothing happens if the sender published `id` here within the
    /// dedup window.
    pub once: Option<(&'a str, &'a str)>,
    /// The publishing node's position in the room (an epoch and the last offset it saw
    /// there): a room whose offset in that epoch is below it lost writes, and the script
    /// moves it to a new epoch first.
    pub floor: Option<(&'a str, u64)>,
    /// How many messages the room's stream keeps.
    pub history_len: usize,
}

/// A prepared publish ([`RedisLog::append_call`]).
#[derive(Debug, Clone)]
pub struct AppendCall {
    keys: [String; 3],
    args: Vec<Vec<u8>>,
}

/// Read the publish script's answer.
pub fn parse_appended(answer: redis::Value) -> Result<Appended, Error> {
    let redis::Value::Array(items) = answer else {
        return Err(Error::Answer);
    };
    let int = |v: Option<&redis::Value>| match v {
        Some(redis::Value::Int(i)) => u64::try_from(*i).ok(),
        _ => None,
    };
    let text = |v: Option<&redis::Value>| match v {
        Some(redis::Value::BulkString(b)) => String::from_utf8(b.clone()).ok(),
        _ => None,
    };
    let (offset, epoch) = (int(items.get(1)), text(items.get(2)));
    match (int(items.first()), offset, epoch) {
        (Some(1), Some(offset), Some(epoch)) => Ok(Appended::Published {
            offset,
            epoch,
            timestamp_ms: int(items.get(3)).ok_or(Error::Answer)?,
        }),
        (Some(0), Some(offset), Some(epoch)) => Ok(Appended::Duplicate { offset, epoch }),
        _ => Err(Error::Answer),
    }
}

/// Why a Redis operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Redis refused or could not be reached.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// The message could not be templated (see [`TemplateError`]).
    #[error(transparent)]
    Template(#[from] TemplateError),
    /// Redis answered something the script does not return.
    #[error("unexpected answer from redis")]
    Answer,
    /// The broker URL cannot be used.
    #[error("broker url: {0}")]
    Url(String),
}

/// The pub/sub channel of `room` (its keys' hash slot: cluster-safe with `SPUBLISH`).
pub fn channel(room: &str) -> String {
    format!("sb:{{{room}}}")
}

pub(crate) fn key(room: &str, what: &str) -> String {
    format!("sb:{{{room}}}:{what}")
}

/// Rooms' logs in one Redis or one Redis Cluster (a connection that reconnects by itself).
#[derive(Clone)]
pub struct RedisLog {
    conn: Conn,
    target: Target,
    publish: redis::Script,
    presence: redis::Script,
    limits: redis::Script,
    rollover: redis::Script,
    config: LogConfig,
}

impl std::fmt::Debug for RedisLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLog")
            .field("config", &self.config)
            .finish()
    }
}

impl RedisLog {
    /// Connect to the Redis at `url`: `redis://host:port/db`, or a cluster
    /// (`redis+cluster://host:port,host:port…`, see [`Target::parse`]).
    pub async fn connect(url: &str, config: LogConfig) -> Result<RedisLog, Error> {
        let target = Target::parse(url).map_err(Error::Url)?;
        let conn = target.connect(config_timeout(&config)).await?;
        Ok(RedisLog {
            conn,
            target,
            publish: redis::Script::new(include_str!("publish.lua")),
            presence: redis::Script::new(include_str!("presence.lua")),
            limits: redis::Script::new(include_str!("limits.lua")),
            rollover: redis::Script::new(include_str!("rollover.lua")),
            config,
        })
    }

    /// Append a message of type `kind` to `room` and publish it on the room's channel:
    /// `build(offset, timestamp_ms)` makes its bytes (called once, with placeholders: the
    /// real values are filled in by Redis). With `once = (sender, id)`, nothing happens if
    /// the sender published `id` to the room within the dedup window.
    pub async fn append(
        &self,
        room: &str,
        kind: &str,
        origin: Option<Origin>,
        once: Option<(&str, &str)>,
        build: impl FnOnce(u64, u64) -> Bytes,
    ) -> Result<Appended, Error> {
        let target = AppendTarget {
            room,
            kind,
            origin,
            once,
            floor: None,
            history_len: self.config.history_len,
        };
        let call = self.append_call(&target, build)?;
        let mut conn = self.conn.clone();
        let mut invocation = self.publish.prepare_invoke();
        for key in &call.keys {
            invocation.key(key);
        }
        for arg in &call.args {
            invocation.arg(&arg[..]);
        }
        let answer: redis::Value = invocation.invoke_async(&mut conn).await?;
        parse_appended(answer)
    }

    /// One publish, ready to send (see [`RedisLog::append`]): the script's keys and
    /// arguments. `build` is called here, once.
    pub fn append_call(
        &self,
        target: &AppendTarget<'_>,
        build: impl FnOnce(u64, u64) -> Bytes,
    ) -> Result<AppendCall, Error> {
        let AppendTarget {
            room,
            kind,
            origin,
            once,
            floor,
            history_len,
        } = *target;
        let (offset_sentinel, ts_sentinel) = template::sentinels();
        let template = template::cut(
            &build(offset_sentinel, ts_sentinel),
            offset_sentinel,
            ts_sentinel,
        )?;
        let dedup_key = match once {
            Some((sender, id)) => key(room, &format!("d:{}:{sender}:{id}", sender.len())),
            None => key(room, "d"),
        };
        let window = match once {
            Some(_) => self.config.dedup_window.as_millis().max(1),
            None => 0,
        };
        let epoch_candidate = new_epoch();
        let text = |s: &str| s.as_bytes().to_vec();
        Ok(AppendCall {
            keys: [key(room, "m"), key(room, "s"), dedup_key],
            args: vec![
                text(&epoch_candidate),
                template.prefix.to_vec(),
                template.between.to_vec(),
                template.suffix.to_vec(),
                text(if template.offset_first { "1" } else { "0" }),
                text(&history_len.to_string()),
                text(&window.to_string()),
                text(&channel(room)),
                envelope::head(origin, kind),
                text(&self.config.idle_expiry.as_millis().max(1).to_string()),
                text(kind),
                envelope::origin_text(origin).into_bytes(),
                text(floor.map_or("", |(epoch, _)| epoch)),
                text(&floor.map_or(0, |(_, offset)| offset).to_string()),
                text(self.publish_verb()),
            ],
        })
    }

    /// The `EVALSHA` command of a prepared publish (answered `NOSCRIPT` until the script is
    /// loaded: [`RedisLog::load_scripts`]).
    pub fn append_command(&self, call: &AppendCall) -> redis::Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(self.publish.get_hash()).arg(call.keys.len());
        for key in &call.keys {
            cmd.arg(key);
        }
        for arg in &call.args {
            cmd.arg(&arg[..]);
        }
        cmd
    }

    /// Load the server-side scripts (after a Redis restart, which forgets them).
    pub async fn load_scripts(&self) -> Result<(), Error> {
        let mut conn = self.conn.clone();
        self.publish.load_async(&mut conn).await?;
        self.presence.load_async(&mut conn).await?;
        self.limits.load_async(&mut conn).await?;
        Ok(())
    }

    /// The `EVALSHA` command of a shared connection count (`limits.lua`).
    pub fn limits_command(&self, counter: &str, args: &[&str]) -> redis::Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(self.limits.get_hash()).arg(1).arg(counter);
        for arg in args {
            cmd.arg(*arg);
        }
        cmd
    }

    /// The `EVALSHA` command of a presence change of `room` for `node` (`presence.lua`:
    /// `args` starts with the operation).
    pub fn presence_command(&self, room: &str, node: u32, args: &[&str]) -> redis::Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(self.presence.get_hash())
            .arg(5)
            .arg(key(room, "p"))
            .arg(key(room, &format!("p:{node}")))
            .arg(key(room, "n"))
            .arg(key(room, "c"))
            .arg(key(room, &format!("q:{node}")));
        for arg in args {
            cmd.arg(*arg);
        }
        cmd
    }

    /// Who is in `room`: `(user, connections on every node, display name)`.
    pub async fn presence(&self, room: &str) -> Result<Vec<(String, u64, Option<String>)>, Error> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("HGETALL")
            .arg(key(room, "p"))
            .cmd("HGETALL")
            .arg(key(room, "n"));
        let (counts, names): (
            std::collections::HashMap<String, i64>,
            std::collections::HashMap<String, String>,
        ) = self.query_atomic(&pipe, &key(room, "p")).await?;
        let mut names = names;
        Ok(counts
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .map(|(user, n)| {
                let name = names.remove(&user);
                (user, n as u64, name)
            })
            .collect())
    }

    /// Run a transaction (`MULTI` … `EXEC`) whose keys share `key`'s slot. In a cluster, a
    /// transaction sent to a shard that no longer owns the slot is aborted with `MOVED`
    /// inside `EXEC`, which the client neither follows nor learns from: a plain command on
    /// the key is sent first (the client follows its `MOVED` and learns the new owner),
    /// then the transaction once more.
    async fn query_atomic<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
        key: &str,
    ) -> Result<T, Error> {
        let mut conn = self.conn.clone();
        match pipe.query_async(&mut conn).await {
            Err(e) if self.target.is_cluster() => {
                tracing::debug!(error = %e, key, "redis: transaction refused; asking for the slot's owner");
                let _: redis::Value = redis::cmd("EXISTS").arg(key).query_async(&mut conn).await?;
                Ok(pipe.query_async(&mut conn).await?)
            }
            answer => Ok(answer?),
        }
    }

    /// A connection to this Redis (multiplexed, reconnecting by itself).
    pub fn connection(&self) -> Conn {
        self.conn.clone()
    }

    /// Where this Redis is.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// How a room's channel is published to: `SPUBLISH` in a cluster (sharded pub/sub: the
    /// message goes only to the shard that owns the room's slot, where its subscribers
    /// are), `PUBLISH` on one server.
    pub fn publish_verb(&self) -> &'static str {
        if self.target.is_cluster() {
            "SPUBLISH"
        } else {
            "PUBLISH"
        }
    }

    /// Publish `payload` on a room's channel (or another sharded channel, like a node's
    /// forwarding inbox): see [`RedisLog::publish_verb`].
    pub fn publish_command(&self, channel: &str, payload: &[u8]) -> redis::Cmd {
        let mut cmd = redis::cmd(self.publish_verb());
        cmd.arg(channel).arg(payload);
        cmd
    }

    /// The settings.
    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// What the hub's store reads ([`Stored`] entries): of the messages after `after`, the
    /// newest `limit`, oldest first, cut to `max_bytes` (at least one; `more` says the cut
    /// left some out), with the room's last offset and epoch, and whether the room's history
    /// still covers everything after `after` in `epoch` (`covered`). One atomic snapshot
    /// (`MULTI`). `None`: the room does not exist (never published, or lost by Redis).
    pub async fn read_range(
        &self,
        room: &str,
        after: u64,
        epoch: Option<&str>,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Option<RangePage>, Error> {
        self.read_range_or_open(room, None, after, epoch, limit, max_bytes)
            .await
    }

    /// [`RedisLog::read_range`] of a room that has members: one that does not exist is
    /// made first (in the same snapshot), in epoch `new_epoch`, so that its members learn the
    /// epoch the next publish will use. Keeps the room from expiring for another idle expiry.
    pub async fn open_range(
        &self,
        room: &str,
        new_epoch: &str,
        after: u64,
        epoch: Option<&str>,
        limit: usize,
        max_bytes: usize,
    ) -> Result<RangePage, Error> {
        self.read_range_or_open(room, Some(new_epoch), after, epoch, limit, max_bytes)
            .await?
            .ok_or(Error::Answer)
    }

    async fn read_range_or_open(
        &self,
        room: &str,
        open: Option<&str>,
        after: u64,
        epoch: Option<&str>,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Option<RangePage>, Error> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        if let Some(new_epoch) = open {
            pipe.cmd("HSETNX")
                .arg(key(room, "m"))
                .arg("epoch")
                .arg(new_epoch)
                .ignore()
                .cmd("PEXPIRE")
                .arg(key(room, "m"))
                .arg(self.config.idle_expiry.as_millis().max(1).to_string())
                .ignore();
        }
        pipe.cmd("HMGET")
            .arg(key(room, "m"))
            .arg("epoch")
            .arg("offset")
            .cmd("XREVRANGE")
            .arg(key(room, "s"))
            .arg("+")
            .arg(format!("(0-{after}"))
            .arg("COUNT")
            .arg(limit.max(1))
            .cmd("XRANGE")
            .arg(key(room, "s"))
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(1);
        let (meta, newest, oldest): (
            (Option<String>, Option<u64>),
            StreamRangeReply,
            StreamRangeReply,
        ) = self.query_atomic(&pipe, &key(room, "m")).await?;
        let (Some(room_epoch), last) = meta else {
            return Ok(None);
        };
        let last_offset = last.unwrap_or(0);
        let mut entries = Vec::new();
        if limit > 0 {
            for entry in newest.ids.into_iter().rev() {
                entries.push(stored(&entry)?);
            }
        }
        // Oldest first, as many as fit (at least one).
        let mut used = 0;
        let mut kept = 0;
        for e in &entries {
            if kept > 0 && used + e.message.len() > max_bytes {
                break;
            }
            used += e.message.len();
            kept += 1;
        }
        let more = kept < entries.len();
        entries.truncate(kept);
        let oldest_retained = match oldest.ids.first() {
            Some(entry) => Some(stored(entry)?.offset),
            None => None,
        };
        // A position past the room's last offset in the same epoch was never handed out by
        // this store as it is now: Redis lost its last writes (a crash between fsyncs, a
        // failover to a lagging replica). Not covered: the client resyncs instead of
        // skipping the reused offsets as already seen.
        let covered = epoch == Some(room_epoch.as_str())
            && (after == last_offset
                || (after < last_offset && oldest_retained.is_some_and(|o| o <= after + 1)));
        Ok(Some(RangePage {
            entries,
            more,
            last_offset,
            epoch: room_epoch,
            covered,
        }))
    }

    /// `room` lost its last writes: its offset in `epoch` is below `floor`, a position a
    /// node saw. Move it to a new epoch (rollover.lua), unless that happened already; the
    /// room's epoch afterwards (`None`: Redis no longer has the room).
    pub async fn roll_over(
        &self,
        room: &str,
        epoch: &str,
        floor: u64,
    ) -> Result<Option<String>, Error> {
        let mut conn = self.conn.clone();
        let epoch: Option<String> = self
            .rollover
            .key(key(room, "m"))
            .key(key(room, "s"))
            .arg(epoch)
            .arg(floor)
            .arg(new_epoch())
            .arg(self.config.idle_expiry.as_millis().max(1).to_string())
            .invoke_async(&mut conn)
            .await?;
        if epoch.is_some() {
            tracing::warn!(
                room,
                floor,
                "redis lost the room's last writes: moved to a new epoch"
            );
        }
        Ok(epoch)
    }

    /// Up to `limit` messages of `room` after offset `after`, oldest first, with the room's
    /// epoch and last offset.
    pub async fn read(&self, room: &str, after: u64, limit: usize) -> Result<Page, Error> {
        let mut conn = self.conn.clone();
        let (epoch, last): (Option<String>, Option<u64>) = redis::cmd("HMGET")
            .arg(key(room, "m"))
            .arg("epoch")
            .arg("offset")
            .query_async(&mut conn)
            .await?;
        let range: StreamRangeReply = redis::cmd("XRANGE")
            .arg(key(room, "s"))
            .arg(format!("(0-{after}"))
            .arg("+")
            .arg("COUNT")
            .arg(limit)
            .query_async(&mut conn)
            .await?;
        let mut messages = Vec::with_capacity(range.ids.len());
        for entry in range.ids {
            let offset = entry
                .id
                .strip_prefix("0-")
                .and_then(|o| o.parse().ok())
                .ok_or(Error::Answer)?;
            let Some(redis::Value::BulkString(data)) = entry.map.get("d") else {
                return Err(Error::Answer);
            };
            messages.push((offset, Bytes::from(data.clone())));
        }
        Ok(Page {
            messages,
            epoch,
            last_offset: last.unwrap_or(0),
        })
    }
}
