//! Requests for a session that lives on another node, carried over pub/sub: what lets a
//! load balancer send a long poll to any node (issue 13, "no sticky sessions").
//!
//! Every node subscribes to its own channel `sb:fwd:<node>` on the pub/sub connection it
//! already has. A node that gets a request for a session it does not hold, whose id names
//! another node as its owner, publishes the request there and waits for the answer on its
//! own channel. The bytes of requests and answers are opaque here (the server encodes its
//! HTTP requests); this module only matches answers to requests.
//!
//! Messages (`<id>` is the asking node's request number, big-endian `u64`; `<node>` a
//! big-endian `u32`):
//! - `Q<node><id><request>`: a request from `<node>`;
//! - `R<id><answer>`: the answer to request `<id>` of the node whose channel it is on;
//! - `C<node><id>`: `<node>` stopped waiting for request `<id>` (its client went away): the
//!   owner drops the request's work, as it would if its own client had gone;
//! - `B<id>`: the owner refused request `<id>` without running it: it already runs as many
//!   requests for other nodes as it takes ([`ForwardLimits`]).
//!
//! A `PUBLISH` answers how many subscribers got the message: 0 means the owner is gone (it
//! died, or the id never named a node), and the request is answered at once as such, not
//! after a timeout.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use redis::Value;
use tokio::sync::oneshot;
use tokio::task::AbortHandle;

use crate::writer::Writer;

/// What runs a request another node forwarded here: its bytes in, the answer's bytes out.
pub type ForwardHandler =
    Arc<dyn Fn(Bytes) -> Pin<Box<dyn Future<Output = Bytes> + Send>> + Send + Sync>;

/// Why a forwarded request got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ForwardError {
    /// No node listens on the owner's channel: it is gone (or never was).
    #[error("the node that owns the session is gone")]
    Gone,
    /// Redis did not take the request, or the answer did not come in time.
    #[error("the node that owns the session did not answer")]
    Unavailable,
    /// The owner runs as many forwarded requests as it takes ([`ForwardLimits`]).
    #[error("the node that owns the session is busy")]
    Busy,
}

/// How much work a node takes on for other nodes at once: forwarded requests running here
/// (a held long poll is one for as long as it is held), and the bytes of their requests.
/// Each request is bounded in size and time by the asking node, but not their number: a
/// flood of clients landing on other nodes must not grow this node's memory without bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForwardLimits {
    /// Requests running at once.
    pub requests: usize,
    /// Bytes of the requests running at once.
    pub bytes: usize,
}

impl Default for ForwardLimits {
    /// 10 000 requests (held long polls of clients that reached another node), 64 MiB.
    fn default() -> ForwardLimits {
        ForwardLimits {
            requests: 10_000,
            bytes: 64 << 20,
        }
    }
}

/// The pub/sub channel of `node`'s forwarded requests.
pub(crate) fn channel(node: u32) -> String {
    format!("sb:fwd:{node}")
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

type Waiting = oneshot::Sender<Result<Bytes, ForwardError>>;

/// This node's side of forwarding: the requests it waits on, and the ones it runs for
/// others. Shared by the [`RedisForwarder`] handle and the pub/sub subscriber.
pub(crate) struct Inbox {
    me: u32,
    writer: Writer,
    next: AtomicU64,
    /// Requests this node sent, by id.
    waiting: Mutex<HashMap<u64, Waiting>>,
    /// Requests other nodes sent that run here.
    running: Mutex<RunningHere>,
    limits: ForwardLimits,
    handler: OnceLock<ForwardHandler>,
}

/// The requests other nodes sent that run here: by (node, id), with their sizes.
#[derive(Default)]
struct RunningHere {
    tasks: HashMap<(u32, u64), (AbortHandle, usize)>,
    bytes: usize,
}

impl RunningHere {
    fn remove(&mut self, key: &(u32, u64)) -> Option<AbortHandle> {
        let (task, size) = self.tasks.remove(key)?;
        self.bytes -= size;
        Some(task)
    }
}

impl Inbox {
    pub(crate) fn new(me: u32, writer: Writer, limits: ForwardLimits) -> Arc<Inbox> {
        Arc::new(Inbox {
            me,
            writer,
            next: AtomicU64::new(1),
            waiting: Mutex::new(HashMap::new()),
            running: Mutex::new(RunningHere::default()),
            limits,
            handler: OnceLock::new(),
        })
    }

    /// A message on this node's channel.
    pub(crate) fn received(self: &Arc<Self>, payload: Bytes) {
        match payload.first() {
            Some(b'Q') if payload.len() >= 13 => {
                let from = u32_at(&payload, 1);
                let id = u64_at(&payload, 5);
                self.run(from, id, payload.slice(13..));
            }
            Some(b'R') if payload.len() >= 9 => {
                let id = u64_at(&payload, 1);
                if let Some(waiting) = lock(&self.waiting).remove(&id) {
                    let _ = waiting.send(Ok(payload.slice(9..)));
                }
            }
            Some(b'C') if payload.len() >= 13 => {
                let key = (u32_at(&payload, 1), u64_at(&payload, 5));
                if let Some(task) = lock(&self.running).remove(&key) {
                    task.abort();
                }
            }
            Some(b'B') if payload.len() >= 9 => self.fail(u64_at(&payload, 1), ForwardError::Busy),
            _ => tracing::debug!("redis: malformed forwarded message ignored"),
        }
    }

    fn run(self: &Arc<Self>, from: u32, id: u64, request: Bytes) {
        let Some(handler) = self.handler.get().cloned() else {
            return; // not serving yet: the asking node times out
        };
        let inbox = self.clone();
        // Registered under the lock before the task can finish and remove itself.
        let mut running = lock(&self.running);
        let size = request.len();
        if running.tasks.len() >= self.limits.requests || running.bytes + size > self.limits.bytes {
            drop(running);
            tracing::warn!(
                from,
                "redis: a forwarded request refused: this node runs as many as it takes"
            );
            let mut message = BytesMut::with_capacity(9);
            message.put_u8(b'B');
            message.put_u64(id);
            self.publish(from, message.freeze(), Box::new(|_| {}));
            return;
        }
        let task = tokio::spawn(async move {
            // Forgotten however the work ends (answered, aborted, or a panic).
            let running = Running {
                inbox: inbox.clone(),
                key: (from, id),
            };
            let answer = handler(request).await;
            // Done before the answer goes: a late cancel finds nothing to stop.
            drop(running);
            let mut message = BytesMut::with_capacity(9 + answer.len());
            message.put_u8(b'R');
            message.put_u64(id);
            message.put_slice(&answer);
            inbox.publish(from, message.freeze(), Box::new(|_| {}));
        });
        // (A repeated key, which no asker sends, replaces the entry and its size.)
        if let Some((_, old)) = running
            .tasks
            .insert((from, id), (task.abort_handle(), size))
        {
            running.bytes -= old;
        }
        running.bytes += size;
    }

    /// Request `id` failed: tell its asker.
    fn fail(&self, id: u64, error: ForwardError) {
        if let Some(waiting) = lock(&self.waiting).remove(&id) {
            let _ = waiting.send(Err(error));
        }
    }

    fn publish(&self, node: u32, message: Bytes, reply: crate::writer::Reply) {
        self.writer.publish(&channel(node), &message, reply);
    }
}

/// Removes a request's entry from `running` when its task ends.
struct Running {
    inbox: Arc<Inbox>,
    key: (u32, u64),
}

impl Drop for Running {
    fn drop(&mut self) {
        lock(&self.inbox.running).remove(&self.key);
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(x)
}

/// Forwarding over Redis (see the module docs). Made by [`crate::connect`].
#[derive(Clone)]
pub struct RedisForwarder {
    pub(crate) inbox: Arc<Inbox>,
}

impl std::fmt::Debug for RedisForwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisForwarder")
            .field("node", &self.inbox.me)
            .finish_non_exhaustive()
    }
}

impl RedisForwarder {
    /// This node's id (what other nodes forward to).
    pub fn node(&self) -> u32 {
        self.inbox.me
    }

    /// Run `handler` for the requests other nodes forward here (once; later calls are
    /// ignored).
    pub fn serve(&self, handler: ForwardHandler) {
        let _ = self.inbox.handler.set(handler);
    }

    /// Send `request` to node `owner` and wait at most `timeout` for its answer. Dropping
    /// the future tells the owner to drop the request's work.
    pub fn request(
        &self,
        owner: u32,
        request: Bytes,
        timeout: Duration,
    ) -> impl Future<Output = Result<Bytes, ForwardError>> + Send + 'static {
        let inbox = self.inbox.clone();
        let id = inbox.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&inbox.waiting).insert(id, tx);
        let mut message = BytesMut::with_capacity(13 + request.len());
        message.put_u8(b'Q');
        message.put_u32(inbox.me);
        message.put_u64(id);
        message.put_slice(&request);
        let on_sent = {
            let inbox = inbox.clone();
            Box::new(move |sent: Result<Value, _>| match sent {
                Ok(Value::Int(0)) => {
                    // Nobody listens on the owner's channel. Gone, if its heartbeat is gone
                    // too; a live owner whose pub/sub connection is being made again is
                    // only unavailable for now (its session must not be given up).
                    let mut cmd = redis::cmd("EXISTS");
                    cmd.arg(crate::store::node_key(switchboard_hub::NodeId(owner)));
                    let checking = inbox.clone();
                    inbox.writer.submit(
                        cmd,
                        Box::new(move |alive| {
                            let error = match alive {
                                Ok(Value::Int(0)) => ForwardError::Gone,
                                _ => ForwardError::Unavailable,
                            };
                            checking.fail(id, error);
                        }),
                    );
                }
                Ok(Value::Int(_)) => {}
                _ => inbox.fail(id, ForwardError::Unavailable),
            })
        };
        inbox.publish(owner, message.freeze(), on_sent);
        let pending = Pending {
            inbox,
            owner,
            id,
            done: false,
        };
        async move {
            // The whole guard moves into the future (a closure would capture only the field
            // it assigns, and the guard would drop, cancelling, right away).
            let mut pending = pending;
            let answer = match tokio::time::timeout(timeout, rx).await {
                Ok(Ok(answer)) => answer,
                Ok(Err(_)) | Err(_) => Err(ForwardError::Unavailable),
            };
            // Answered (or refused): nothing runs there any more.
            pending.done = matches!(answer, Ok(_) | Err(ForwardError::Gone | ForwardError::Busy));
            answer
        }
    }
}

/// A request still waiting: when dropped unanswered, it is forgotten here and cancelled at
/// the owner.
struct Pending {
    inbox: Arc<Inbox>,
    owner: u32,
    id: u64,
    done: bool,
}

impl Drop for Pending {
    fn drop(&mut self) {
        lock(&self.inbox.waiting).remove(&self.id);
        if !self.done {
            let mut message = BytesMut::with_capacity(13);
            message.put_u8(b'C');
            message.put_u32(self.inbox.me);
            message.put_u64(self.id);
            self.inbox
                .publish(self.owner, message.freeze(), Box::new(|_| {}));
        }
    }
}
