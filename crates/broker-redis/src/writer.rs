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
        tokio::spawn(run(log, receiver, queued.clone(), timeout, stats));
        Writer {
            queue,
            queued,
            limit,
        }
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
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while receiver.recv_many(&mut batch, MAX_BATCH).await > 0 {
        queued.fetch_sub(batch.len(), Ordering::Relaxed);
        let pipe = pipeline(batch.iter().map(|op| &op.cmd));
        let mut replies = send(&log, pipe, batch.len(), timeout, &stats).await;
        // Redis forgot the scripts (it restarted): nothing answered NOSCRIPT ran, so load
        // them and send those again, in order.
        if let Ok(values) = &replies {
            if values.iter().any(is_noscript) && log.load_scripts().await.is_ok() {
                let again: Vec<usize> = (0..values.len())
                    .filter(|i| is_noscript(&values[*i]))
                    .collect();
                let retry = pipeline(again.iter().map(|i| &batch[*i].cmd));
                if let (Ok(mut values), Ok(retried)) = (
                    replies,
                    send(&log, retry, again.len(), timeout, &stats).await,
                ) {
                    for (i, value) in again.into_iter().zip(retried) {
                        values[i] = value;
                    }
                    replies = Ok(values);
                } else {
                    replies = Err(Unavailable);
                }
            }
        }
        match replies {
            Ok(values) => {
                for (op, value) in batch.drain(..).zip(values) {
                    (op.reply)(Ok(value));
                }
            }
            Err(Unavailable) => {
                for op in batch.drain(..) {
                    (op.reply)(Err(Unavailable));
                }
            }
        }
    }
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
