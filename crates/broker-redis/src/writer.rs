//! Commands whose order matters (publishes, presence changes), sent in the order they were
//! submitted, pipelined: one task takes everything queued, sends it as one pipeline, and
//! answers each command from the replies before sending the next batch. Under load the
//! batches grow, so one round trip carries many publishes; idle, a publish waits for no one.
//!
//! Spawning a task per publish would not do: tasks run in any order, and a client's two
//! messages to a room must get increasing offsets.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::cluster_routing::Slot;
use redis::{Cmd, Value};
use switchboard_hub::Unavailable;
use tokio::sync::mpsc;

use crate::stats::Stats;
use crate::RedisLog;

/// How many commands go in one pipeline at most.
const MAX_BATCH: usize = 1024;

/// What a command's sender gets: Redis's reply (possibly an error reply), or
/// [`Unavailable`] when the pipeline got no answer in time.
pub(crate) type Reply = Box<dyn FnOnce(Result<Value, Unavailable>) + Send>;

struct Op {
    cmd: Cmd,
    reply: Reply,
}

/// The sending side of the ordered queue.
#[derive(Clone)]
pub(crate) struct Writer {
    queue: mpsc::UnboundedSender<Op>,
    queued: Arc<AtomicUsize>,
    limit: usize,
    log: RedisLog,
}

impl Writer {
    /// Start the task that sends `log`'s ordered commands (on the current runtime). A batch
    /// without an answer within `timeout` is answered [`Unavailable`]; at most `limit`
    /// commands wait (more are answered [`Unavailable`] at once: Redis is not keeping up,
    /// and an unbounded queue would only turn that into memory).
    pub(crate) fn start(
        log: RedisLog,
        timeout: Duration,
        limit: usize,
        stats: Arc<Stats>,
    ) -> Writer {
        let (queue, receiver) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        tokio::spawn(run(log.clone(), receiver, queued.clone(), timeout, stats));
        Writer {
            queue,
            queued,
            limit,
            log,
        }
    }

    /// Publish `payload` on a room's channel or a node's inbox (sharded pub/sub in a
    /// cluster: [`RedisLog::publish_verb`]), after everything submitted before it.
    pub(crate) fn publish(&self, channel: &str, payload: &[u8], reply: Reply) {
        self.submit(self.log.publish_command(channel, payload), reply);
    }

    /// Send `cmd` after everything submitted before it; `reply` gets the answer.
    pub(crate) fn submit(&self, cmd: Cmd, reply: Reply) {
        if self.queued.fetch_add(1, Ordering::Relaxed) >= self.limit {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            return reply(Err(Unavailable));
        }
        if let Err(mpsc::error::SendError(op)) = self.queue.send(Op { cmd, reply }) {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            (op.reply)(Err(Unavailable));
        }
    }
}

fn is_noscript(value: &Value) -> bool {
    matches!(value, Value::ServerError(e) if e.code() == "NOSCRIPT")
}

async fn run(
    log: RedisLog,
    mut receiver: mpsc::UnboundedReceiver<Op>,
    queued: Arc<AtomicUsize>,
    timeout: Duration,
    stats: Arc<Stats>,
) {
    let cluster = log.target().is_cluster();
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while receiver.recv_many(&mut batch, MAX_BATCH).await > 0 {
        queued.fetch_sub(batch.len(), Ordering::Relaxed);
        let cmds: Vec<&Cmd> = batch.iter().map(|op| &op.cmd).collect();
        let replies = if cluster {
            send_per_slot(&log, &cmds, timeout, &stats).await
        } else {
            match send_in_order(&log, &cmds, timeout, &stats).await {
                Ok(values) => values.into_iter().map(Ok).collect(),
                Err(Unavailable) => vec![Err(Unavailable); cmds.len()],
            }
        };
        for (op, reply) in batch.drain(..).zip(replies) {
            (op.reply)(reply);
        }
    }
}

/// In a Redis Cluster a pipeline must stay within one hash slot (the client refuses it
/// otherwise): the batch goes as one pipeline per slot, all at once. Order is kept within
/// a slot, which is all that matters: everything of a room (its publishes, presence
/// changes, the channel its presence goes out on) shares the room's slot, and node-level
/// keys share `{nodes}`.
async fn send_per_slot(
    log: &RedisLog,
    cmds: &[&Cmd],
    timeout: Duration,
    stats: &Stats,
) -> Vec<Result<Value, Unavailable>> {
    // (A batch holds up to MAX_BATCH commands over as many slots: indexed, not searched.)
    let mut groups: Vec<(Slot, Vec<usize>)> = Vec::new();
    let mut group_of: std::collections::HashMap<Slot, usize> = std::collections::HashMap::new();
    for (i, cmd) in cmds.iter().enumerate() {
        let slot = slot_of(cmd);
        let g = *group_of.entry(slot).or_insert_with(|| {
            groups.push((slot, Vec::new()));
            groups.len() - 1
        });
        groups[g].1.push(i);
    }
    let sent = futures_util::future::join_all(groups.iter().map(|(_, members)| {
        let group: Vec<&Cmd> = members.iter().map(|i| cmds[*i]).collect();
        async move { send_in_order(log, &group, timeout, stats).await }
    }))
    .await;
    let mut replies = vec![Err(Unavailable); cmds.len()];
    for ((_, members), answer) in groups.into_iter().zip(sent) {
        if let Ok(values) = answer {
            for (i, value) in members.into_iter().zip(values) {
                replies[i] = Ok(value);
            }
        }
    }
    replies
}

/// The hash slot of a command's first key: the third argument of `EVAL`/`EVALSHA` (after
/// the script and the key count), the first one of the other commands we queue (a
/// channel's name, for `PUBLISH`/`SPUBLISH`).
fn slot_of(cmd: &Cmd) -> Slot {
    let mut args = cmd.args_iter().filter_map(|arg| match arg {
        redis::Arg::Simple(bytes) => Some(bytes),
        _ => None,
    });
    let name = args.next().unwrap_or_default();
    let key = if name.eq_ignore_ascii_case(b"EVALSHA") || name.eq_ignore_ascii_case(b"EVAL") {
        args.nth(2)
    } else {
        args.next()
    };
    Slot::for_key(key.unwrap_or_default())
}

/// Send `cmds` as one pipeline, in order; what Redis answered `NOSCRIPT` (it restarted and
/// forgot the scripts: nothing of it ran) is sent again, in order, once they are loaded.
async fn send_in_order(
    log: &RedisLog,
    cmds: &[&Cmd],
    timeout: Duration,
    stats: &Stats,
) -> Result<Vec<Value>, Unavailable> {
    let mut values = send(
        log,
        pipeline(cmds.iter().copied()),
        cmds.len(),
        timeout,
        stats,
    )
    .await?;
    if values.iter().any(is_noscript) {
        if log.load_scripts().await.is_err() {
            return Err(Unavailable);
        }
        let again: Vec<usize> = (0..values.len())
            .filter(|i| is_noscript(&values[*i]))
            .collect();
        let retry = pipeline(again.iter().map(|i| cmds[*i]));
        let retried = send(log, retry, again.len(), timeout, stats).await?;
        for (i, value) in again.into_iter().zip(retried) {
            values[i] = value;
        }
    }
    Ok(values)
}

fn pipeline<'a>(cmds: impl Iterator<Item = &'a Cmd>) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    for cmd in cmds {
        pipe.add_command(cmd.clone());
    }
    pipe
}

async fn send(
    log: &RedisLog,
    pipe: redis::Pipeline,
    count: usize,
    timeout: Duration,
    stats: &Stats,
) -> Result<Vec<Value>, Unavailable> {
    let mut conn = log.connection();
    let started = std::time::Instant::now();
    let answer = tokio::time::timeout(timeout, pipe.query_async::<Vec<Value>>(&mut conn)).await;
    match answer {
        Ok(Ok(values)) if values.len() == count => {
            stats.observe(started.elapsed());
            return Ok(values);
        }
        Ok(Ok(_)) => tracing::warn!("redis: a pipeline answered the wrong number of replies"),
        Ok(Err(e)) => tracing::warn!(error = %e, "redis: pipeline failed"),
        Err(_) => tracing::warn!(?timeout, "redis: no answer in time"),
    }
    stats.error();
    Err(Unavailable)
}
