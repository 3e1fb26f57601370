//! The library surface for applications that want code on the Socket.IO side: typed event
//! handlers, emits and acks both ways, joins and leaves, and broadcasts into rooms.
//!
//! ```no_run
//! use serde::{Deserialize, Serialize};
//! use switchboard_server::socketio::{Ack, Data, Handlers, SocketRef};
//! use switchboard_server::{Embedded, ServerConfig};
//!
//! #[derive(Deserialize, Serialize)]
//! struct Order { id: u64, item: String }
//!
//! # fn demo() {
//! let handlers = Handlers::new()
//!     .on_connect("/", |socket: SocketRef| async move {
//!         let _ = socket.emit("hello", &"welcome");
//!     })
//!     .on("/", "order", |socket: SocketRef, Data(order): Data<Order>, ack: Ack| async move {
//!         // Joined once this resolves: the broadcast below reaches the socket too.
//!         let _ = socket.join(format!("order-{}", order.id)).await;
//!         let room = socket.io().to(format!("order-{}", order.id));
//!         let _ = room.emit("placed", &order).await;
//!         let _ = ack.send(&serde_json::json!({"accepted": order.id}));
//!     });
//! let mut config = ServerConfig::default();
//! config.socketio.handlers = handlers;
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! let switchboard = Embedded::start(config, shutdown);
//! let io = switchboard.socketio();
//! // From anywhere in the application (an HTTP handler, a job):
//! // io.to("order-7").emit("shipped", &serde_json::json!({"carrier": "post"})).await
//! # }
//! ```
//!
//! How it fits the rest of the server: an event with a handler goes to the handler instead of
//! the built-in room semantics (events without one keep them: `join_room`, relays, ...).
//! Handlers run as tokio tasks, so they may await (a database, an HTTP call); the socket's
//! emits, acks, joins and leaves go through a bounded mailbox to the connection's own task,
//! which applies them in order. Broadcasts ([`Io::to`]) are ordinary publishes: stamped,
//! stored in the room's history and delivered to every member on every transport (native
//! WebSocket, SSE, long polling and Socket.IO alike).

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};
use switchboard_auth::Identity;
use switchboard_hub::{ConnId, Hub, Outbox, RoomName, UserId};
use switchboard_session::{publish_from, PublishRequest, Published};
use switchboard_socketio_proto::{AckId, Args, Namespace};
use tokio::sync::oneshot;

use super::socket::namespace_room_name;
use crate::metrics::Metrics;

/// How much a socket's mailbox holds (bytes of queued emits, estimated as their JSON size):
/// an application that emits faster than the client reads gets [`EmitError::Full`] rather
/// than growing the server's memory.
const MAILBOX_BUDGET: usize = 1 << 20;

/// Handler tasks of one socket running at once; events beyond this are refused with
/// `too_many_pending` (a client flooding a slow handler cannot pile up tasks).
const MAX_RUNNING_HANDLERS: usize = 64;

/// The sender the server's own broadcasts are stamped with (`userId`), as the HTTP API's.
const SERVER_USER: &str = "server";

/// The typed arguments of an event: one argument is deserialized as `T`, none as JSON `null`
/// (use `Data<()>` or `Data<Option<_>>`), several as an array (use a tuple). Binary values
/// arrive as arrays of bytes (`Vec<u8>`, `serde_bytes::ByteBuf`).
#[derive(Debug, Clone, PartialEq)]
pub struct Data<T>(pub T);

/// The answer to an event the client sent with an acknowledgement callback. Dropping it
/// without sending leaves the client's callback uncalled (its timeout, if any, fires).
pub struct Ack {
    socket: SocketRef,
    id: Option<AckId>,
}

impl fmt::Debug for Ack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ack").field("id", &self.id).finish()
    }
}

impl Ack {
    /// Whether the client asked for an answer.
    pub fn requested(&self) -> bool {
        self.id.is_some()
    }

    /// Answer with `value` (one argument of the client's callback). Nothing is sent when the
    /// client did not ask ([`Ack::requested`]).
    pub fn send<T: Serialize + ?Sized>(self, value: &T) -> Result<(), EmitError> {
        let Some(id) = self.id else {
            return Ok(());
        };
        let value = serde_json::to_value(value).map_err(|e| EmitError::Encode(e.to_string()))?;
        self.socket
            .inner
            .post(Command::Ack(id, Args::from_values(vec![value])))
    }

    /// Answer with several arguments, binary ones included (see [`Args`]).
    pub fn send_args(self, args: Args) -> Result<(), EmitError> {
        match self.id {
            Some(id) => self.socket.inner.post(Command::Ack(id, args)),
            None => Ok(()),
        }
    }
}

/// Why an emit, ack or join did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmitError {
    /// The socket is disconnected.
    #[error("the socket is disconnected")]
    Closed,
    /// The socket's mailbox is full: the client reads slower than the application emits.
    #[error("the socket's mailbox is full")]
    Full,
    /// The value could not be serialized as JSON.
    #[error("not serializable as JSON: {0}")]
    Encode(String),
    /// Not a valid room name.
    #[error("invalid room name: {0}")]
    InvalidRoom(String),
    /// The server refused a join (permissions, the room limit).
    #[error("refused: {0}")]
    Refused(String),
    /// The message store could not confirm a broadcast (a networked store that is down):
    /// it may or may not have been delivered.
    #[error("the message store is unavailable")]
    Unavailable,
}

/// Why an [`SocketRef::emit_with_ack`] got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AckError {
    /// The emit itself failed.
    #[error(transparent)]
    Emit(#[from] EmitError),
    /// No answer within the timeout.
    #[error("no acknowledgement within the timeout")]
    Timeout,
    /// The socket disconnected before answering.
    #[error("the socket disconnected before acknowledging")]
    Disconnected,
}

/// A connected socket, for handlers: cheap to clone, usable from any task. Its operations
/// are queued to the connection's task (in order) and fail with [`EmitError::Closed`] once
/// the socket is gone.
#[derive(Clone)]
pub struct SocketRef {
    inner: Arc<SocketInner>,
}

impl fmt::Debug for SocketRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SocketRef")
            .field("id", &self.inner.id)
            .field("nsp", &self.inner.nsp.as_str())
            .field("user", &self.inner.user.0)
            .finish()
    }
}

impl SocketRef {
    /// The socket id (`socket.id` on the client).
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// The namespace.
    pub fn ns(&self) -> &str {
        self.inner.nsp.as_str()
    }

    /// The user id (from the credentials, or generated for an anonymous client).
    pub fn user_id(&self) -> &str {
        &self.inner.user.0
    }

    /// The verified credentials, when the client gave some.
    pub fn identity(&self) -> Option<&Identity> {
        self.inner.identity.as_ref()
    }

    /// The server's broadcasts ([`Io::to`]), as from [`crate::Embedded::socketio`].
    pub fn io(&self) -> &Io {
        &self.inner.io
    }

    /// Address everyone in `room` but this socket (Socket.IO's `socket.to(room)`): a
    /// publish stamped with this socket's user, on every transport. The socket need not be
    /// a member.
    pub fn to(&self, room: impl Into<String>) -> RoomOperator {
        RoomOperator {
            io: self.inner.io.clone(),
            room: room.into(),
            from: Some((self.inner.user.clone(), self.inner.conn)),
        }
    }

    /// Address every other socket of this socket's namespace (Socket.IO's
    /// `socket.broadcast.emit`): [`Io::of`] without this socket, stamped with its user.
    pub fn broadcast(&self) -> RoomOperator {
        RoomOperator {
            io: self.inner.io.clone(),
            room: namespace_room_name(self.inner.nsp.as_str()),
            from: Some((self.inner.user.clone(), self.inner.conn)),
        }
    }

    /// Whether the socket is still connected.
    pub fn connected(&self) -> bool {
        !self.inner.lock().closed
    }

    /// Emit `event` with one argument to this socket.
    pub fn emit<T: Serialize + ?Sized>(&self, event: &str, value: &T) -> Result<(), EmitError> {
        let value = serde_json::to_value(value).map_err(|e| EmitError::Encode(e.to_string()))?;
        self.emit_args(event, Args::from_values(vec![value]))
    }

    /// Emit `event` with any arguments, binary ones included.
    pub fn emit_args(&self, event: &str, args: Args) -> Result<(), EmitError> {
        self.inner.post(Command::Emit {
            event: event.to_owned(),
            args,
            answer: None,
        })
    }

    /// Emit `event` with one argument and wait for the client's acknowledgement (its
    /// callback's arguments; one argument as itself, several as an array) for at most
    /// `timeout`.
    pub async fn emit_with_ack<T: Serialize + ?Sized>(
        &self,
        event: &str,
        value: &T,
        timeout: Duration,
    ) -> Result<Value, AckError> {
        let value = serde_json::to_value(value).map_err(|e| EmitError::Encode(e.to_string()))?;
        let (tx, rx) = oneshot::channel();
        self.inner.post(Command::Emit {
            event: event.to_owned(),
            args: Args::from_values(vec![value]),
            answer: Some((timeout, tx)),
        })?;
        // The connection's task answers every registered emit: at the ack, at its deadline
        // or when the socket ends (a dropped sender means the connection is gone).
        rx.await.unwrap_or(Err(AckError::Disconnected))
    }

    /// Join `room`, as if the client had sent `join_room`: the socket's permissions and
    /// limits apply (a refusal is [`EmitError::Refused`], and the client also gets the
    /// `error` event). Resolves once the connection's task has joined: a broadcast made
    /// after it reaches the socket.
    pub async fn join(&self, room: impl Into<String>) -> Result<(), EmitError> {
        let room = room_name(room.into())?;
        let (tx, rx) = oneshot::channel();
        self.inner.post(Command::Join(room, tx))?;
        rx.await.unwrap_or(Err(EmitError::Closed))
    }

    /// Leave `room`; resolves once left.
    pub async fn leave(&self, room: impl Into<String>) -> Result<(), EmitError> {
        let room = room_name(room.into())?;
        let (tx, rx) = oneshot::channel();
        self.inner.post(Command::Leave(room, tx))?;
        rx.await.unwrap_or(Err(EmitError::Closed))
    }

    /// Disconnect the socket (the client gets a `DISCONNECT` for the namespace).
    pub fn disconnect(&self) -> Result<(), EmitError> {
        self.inner.post(Command::Disconnect)
    }
}

fn room_name(room: String) -> Result<RoomName, EmitError> {
    RoomName::new(room.as_str()).map_err(|e| EmitError::InvalidRoom(e.to_string()))
}

/// The server side of the application's Socket.IO: broadcasts from anywhere (HTTP handlers,
/// jobs). Get it from [`crate::Embedded::socketio`] or [`crate::Server::socketio`].
#[derive(Clone)]
pub struct Io {
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
}

impl fmt::Debug for Io {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Io").finish_non_exhaustive()
    }
}

impl Io {
    pub(crate) fn new(hub: Arc<Hub>, metrics: Arc<Metrics>) -> Io {
        Io { hub, metrics }
    }

    /// Address the members of `room` (on every transport).
    pub fn to(&self, room: impl Into<String>) -> RoomOperator {
        RoomOperator {
            io: self.clone(),
            room: room.into(),
            from: None,
        }
    }

    /// Address every socket of namespace `nsp` (Socket.IO's `io.of(nsp).emit`), on every
    /// node. The sockets of namespaces with handlers are members of the namespace's server
    /// room (`switchboard:sio:<nsp>`), so the broadcast has a room's guarantees: offsets,
    /// history, replay on recovery.
    pub fn of(&self, nsp: &str) -> RoomOperator {
        RoomOperator {
            io: self.clone(),
            room: namespace_room_name(nsp),
            from: None,
        }
    }

    /// Emit to every socket of the main namespace `/` (Socket.IO's `io.emit`); see
    /// [`Io::of`] and [`RoomOperator::emit`].
    pub async fn emit<T: Serialize + ?Sized>(
        &self,
        event: &str,
        value: &T,
    ) -> Result<Published, EmitError> {
        self.of("/").emit(event, value).await
    }

    /// Disconnect every connection of `user` (every transport); how many there were.
    pub fn disconnect_user(&self, user: &str) -> usize {
        self.hub.disconnect_user(&UserId(Arc::from(user)))
    }
}

/// A broadcast into one room ([`Io::to`]).
#[derive(Debug)]
pub struct RoomOperator {
    io: Io,
    room: String,
    /// For [`SocketRef::to`]: the sending socket's user and connection.
    from: Option<(UserId, ConnId)>,
}

impl RoomOperator {
    /// Publish `value` to the room as a message of type `event`: stamped (`userId` "server",
    /// or the sending socket's user for [`SocketRef::to`]; `timestamp`, `offset`, `id`),
    /// kept in the room's history, delivered to every member (but the sending socket).
    /// Socket.IO members get event `event` with the message object; an object `value` gives
    /// the message its fields, anything else is the message's `data`.
    pub async fn emit<T: Serialize + ?Sized>(
        self,
        event: &str,
        value: &T,
    ) -> Result<Published, EmitError> {
        let room = room_name(self.room)?;
        if event.is_empty() {
            return Err(EmitError::Encode("an empty event name".into()));
        }
        let value = serde_json::to_value(value).map_err(|e| EmitError::Encode(e.to_string()))?;
        let mut body = match value {
            Value::Object(fields) => fields,
            other => {
                let mut body = Map::new();
                body.insert("data".into(), other);
                body
            }
        };
        body.insert("type".into(), Value::from(event));
        let (sender, origin) = match self.from {
            Some((user, conn)) => (user, Some(conn)),
            None => (UserId(Arc::from(SERVER_USER)), None),
        };
        let (tx, rx) = oneshot::channel();
        publish_from(
            &self.io.hub,
            PublishRequest {
                room: &room,
                sender: &sender,
                sender_name: None,
                body,
                id: None,
            },
            origin,
            move |published| {
                let _ = tx.send(published);
            },
        );
        let published = rx
            .await
            .map_err(|_| EmitError::Unavailable)?
            .map_err(|_| EmitError::Unavailable)?;
        if published.dropped > 0 {
            self.io.metrics.dropped.add(published.dropped as u64);
        }
        Ok(published)
    }
}

// ---- Registration ----------------------------------------------------------------------

type EventFn = dyn Fn(SocketRef, Args, Ack) -> Result<(), String> + Send + Sync;
type SocketFn = dyn Fn(SocketRef) + Send + Sync;

#[derive(Default)]
struct NsHandlers {
    connect: Option<Arc<SocketFn>>,
    disconnect: Option<Arc<SocketFn>>,
    events: HashMap<String, Arc<EventFn>>,
}

/// The application's Socket.IO handlers, per namespace ([`crate::SocketIoConfig::handlers`]).
/// A namespace with handlers is served even if `namespaces` does not list it.
#[derive(Clone, Default)]
pub struct Handlers {
    namespaces: Arc<HashMap<String, NsHandlers>>,
}

impl fmt::Debug for Handlers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for (nsp, h) in self.namespaces.iter() {
            let events: Vec<&String> = h.events.keys().collect();
            map.entry(nsp, &events);
        }
        map.finish()
    }
}

impl Handlers {
    /// No handlers: the built-in behaviour everywhere.
    pub fn new() -> Handlers {
        Handlers::default()
    }

    fn ns_mut(&mut self, nsp: &str) -> &mut NsHandlers {
        let nsp = Namespace::new(nsp)
            .unwrap_or_else(|e| panic!("invalid Socket.IO namespace {nsp:?}: {e}"))
            .as_str()
            .to_owned();
        Arc::get_mut(&mut self.namespaces)
            .expect("handlers are registered before the server starts")
            .entry(nsp)
            .or_default()
    }

    /// Handle `event` on namespace `nsp` with `handler(socket, Data<T>, ack)`. Arguments that
    /// do not deserialize as `T` are refused (`invalid_format`: the error ack, or an `error`
    /// event) without calling the handler. Panics on an invalid namespace (a programming
    /// error, found at startup).
    pub fn on<T, F, Fut>(mut self, nsp: &str, event: &str, handler: F) -> Handlers
    where
        T: DeserializeOwned + Send + 'static,
        F: Fn(SocketRef, Data<T>, Ack) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let erased = move |socket: SocketRef, args: Args, ack: Ack| -> Result<(), String> {
            let data = data_of::<T>(args).map_err(|e| e.to_string())?;
            let running = RunningGuard::enter(&socket.inner);
            let future = handler(socket, Data(data), ack);
            spawn(async move {
                future.await;
                drop(running);
            });
            Ok(())
        };
        self.ns_mut(nsp)
            .events
            .insert(event.to_owned(), Arc::new(erased));
        self
    }

    /// Run `handler(socket)` when a socket connects to `nsp` (after its `CONNECT` is
    /// accepted).
    pub fn on_connect<F, Fut>(mut self, nsp: &str, handler: F) -> Handlers
    where
        F: Fn(SocketRef) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.ns_mut(nsp).connect = Some(Arc::new(move |socket| spawn(handler(socket))));
        self
    }

    /// Run `handler(socket)` when a socket of `nsp` is gone (its client disconnected, the
    /// connection was lost or the server ended it); its operations fail with
    /// [`EmitError::Closed`] by then.
    pub fn on_disconnect<F, Fut>(mut self, nsp: &str, handler: F) -> Handlers
    where
        F: Fn(SocketRef) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.ns_mut(nsp).disconnect = Some(Arc::new(move |socket| spawn(handler(socket))));
        self
    }

    /// The namespaces with handlers.
    pub(crate) fn namespaces(&self) -> impl Iterator<Item = &str> {
        self.namespaces.keys().map(String::as_str)
    }

    /// Whether `nsp` has any handler (its sockets get a mailbox).
    pub(crate) fn covers(&self, nsp: &Namespace) -> bool {
        self.namespaces.contains_key(nsp.as_str())
    }

    pub(crate) fn has_event(&self, nsp: &Namespace, event: &str) -> bool {
        self.namespaces
            .get(nsp.as_str())
            .is_some_and(|h| h.events.contains_key(event))
    }

    /// Hand an event to its handler; `Err` with the refusal when its arguments do not fit or
    /// too many handlers of the socket are still running.
    pub(crate) fn dispatch(
        &self,
        socket: &Arc<SocketInner>,
        event: &str,
        args: Args,
        ack: Option<AckId>,
    ) -> Result<(), (&'static str, String)> {
        let Some(handler) = self
            .namespaces
            .get(socket.nsp.as_str())
            .and_then(|h| h.events.get(event))
        else {
            return Ok(());
        };
        if socket.running.load(Ordering::Relaxed) >= MAX_RUNNING_HANDLERS {
            return Err((
                "too_many_pending",
                "Too many requests waiting for an answer".to_owned(),
            ));
        }
        let socket = SocketRef {
            inner: socket.clone(),
        };
        let ack = Ack {
            socket: socket.clone(),
            id: ack,
        };
        handler(socket, args, ack).map_err(|e| ("invalid_format", e))
    }

    /// Run the namespace's `on_connect` handler for `socket`.
    pub(crate) fn connected(&self, socket: &Arc<SocketInner>) {
        self.run_socket_handler(socket, |h| h.connect.as_ref());
    }

    /// Run the namespace's `on_disconnect` handler for `socket`.
    pub(crate) fn disconnected(&self, socket: &Arc<SocketInner>) {
        self.run_socket_handler(socket, |h| h.disconnect.as_ref());
    }

    fn run_socket_handler(
        &self,
        socket: &Arc<SocketInner>,
        which: impl FnOnce(&NsHandlers) -> Option<&Arc<SocketFn>>,
    ) {
        if let Some(handler) = self.namespaces.get(socket.nsp.as_str()).and_then(which) {
            handler(SocketRef {
                inner: socket.clone(),
            });
        }
    }
}

/// Run a handler's future as a task of the runtime the server runs on (a socket dropped
/// outside it, at the very end of a shutdown, runs no handler).
fn spawn(future: impl Future<Output = ()> + Send + 'static) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(future);
    }
}

/// Counts a socket's running handler tasks.
struct RunningGuard(Arc<SocketInner>);

impl RunningGuard {
    fn enter(socket: &Arc<SocketInner>) -> RunningGuard {
        socket.running.fetch_add(1, Ordering::Relaxed);
        RunningGuard(socket.clone())
    }
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The event's arguments as `T` (see [`Data`]), binary placeholders replaced by their bytes.
fn data_of<T: DeserializeOwned>(args: Args) -> Result<T, serde_json::Error> {
    let value = {
        let resolve = |v: &Value| inline_binary(v, &args);
        match args.values() {
            [] => Value::Null,
            [one] => resolve(one),
            many => Value::Array(many.iter().map(resolve).collect()),
        }
    };
    serde_json::from_value(value)
}

fn inline_binary(value: &Value, args: &Args) -> Value {
    if let Some(bytes) = args.binary(value) {
        return Value::Array(bytes.iter().map(|b| Value::from(*b)).collect());
    }
    match value {
        Value::Array(items) => Value::Array(items.iter().map(|v| inline_binary(v, args)).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), inline_binary(v, args)))
                .collect(),
        ),
        other => other.clone(),
    }
}

// ---- The mailbox between handlers and the connection's task -----------------------------

/// What a handler asked of its socket, applied by the connection's task.
pub(crate) enum Command {
    Emit {
        event: String,
        args: Args,
        /// For an emit that waits for the client's ack: how long, and where the answer goes.
        answer: Option<(Duration, AckSender)>,
    },
    Ack(AckId, Args),
    Join(RoomName, Done),
    Leave(RoomName, Done),
    Disconnect,
}

/// Where the outcome of a join or leave goes.
pub(crate) type Done = oneshot::Sender<Result<(), EmitError>>;

pub(crate) type AckSender = oneshot::Sender<Result<Value, AckError>>;

/// A socket's side shared with its [`SocketRef`]s.
pub(crate) struct SocketInner {
    id: String,
    /// The connection (its hub id: broadcasts from this socket skip it).
    conn: ConnId,
    nsp: Namespace,
    user: UserId,
    identity: Option<Identity>,
    /// The connection's wake-up: a command posted notifies it.
    outbox: Arc<Outbox>,
    running: AtomicUsize,
    mailbox: Mutex<Mailbox>,
    /// The namespace's handlers (for `on_disconnect` when the socket ends).
    pub(crate) handlers: Handlers,
    io: Io,
}

#[derive(Default)]
struct Mailbox {
    commands: VecDeque<(Command, usize)>,
    bytes: usize,
    closed: bool,
    /// Emits waiting for the client's ack, by ack id.
    awaiting: Vec<(AckId, AckSender)>,
}

impl SocketInner {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        id: &str,
        conn: ConnId,
        nsp: Namespace,
        user: UserId,
        identity: Option<Identity>,
        outbox: Arc<Outbox>,
        handlers: Handlers,
        io: Io,
    ) -> Arc<SocketInner> {
        Arc::new(SocketInner {
            id: id.to_owned(),
            conn,
            nsp,
            user,
            identity,
            outbox,
            running: AtomicUsize::new(0),
            mailbox: Mutex::new(Mailbox::default()),
            handlers,
            io,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Mailbox> {
        // Every method leaves the mailbox consistent: a poisoned lock is still usable.
        self.mailbox.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn post(&self, command: Command) -> Result<(), EmitError> {
        let cost = cost_of(&command);
        let mut mailbox = self.lock();
        if mailbox.closed {
            return Err(EmitError::Closed);
        }
        if !mailbox.commands.is_empty() && mailbox.bytes + cost > MAILBOX_BUDGET {
            return Err(EmitError::Full);
        }
        mailbox.bytes += cost;
        mailbox.commands.push_back((command, cost));
        drop(mailbox);
        self.outbox.notify();
        Ok(())
    }

    /// The commands posted since the last call, in order.
    pub(crate) fn take_commands(&self) -> VecDeque<Command> {
        let mut mailbox = self.lock();
        mailbox.bytes = 0;
        std::mem::take(&mut mailbox.commands)
            .into_iter()
            .map(|(c, _)| c)
            .collect()
    }

    /// Remember where the answer to ack `id` goes.
    pub(crate) fn await_ack(&self, id: AckId, answer: AckSender) {
        let mut mailbox = self.lock();
        if mailbox.closed {
            let _ = answer.send(Err(AckError::Disconnected));
            return;
        }
        mailbox.awaiting.push((id, answer));
    }

    /// The client answered ack `id` (or it timed out: `Err`).
    pub(crate) fn answer_ack(&self, id: AckId, result: Result<Value, AckError>) {
        let sender = {
            let mut mailbox = self.lock();
            let i = mailbox.awaiting.iter().position(|(a, _)| *a == id);
            i.map(|i| mailbox.awaiting.swap_remove(i).1)
        };
        if let Some(sender) = sender {
            let _ = sender.send(result);
        }
    }

    /// The socket is gone: refuse further commands, fail the emits waiting for acks.
    pub(crate) fn close(&self) {
        let awaiting = {
            let mut mailbox = self.lock();
            mailbox.closed = true;
            mailbox.commands.clear();
            mailbox.bytes = 0;
            std::mem::take(&mut mailbox.awaiting)
        };
        for (_, sender) in awaiting {
            let _ = sender.send(Err(AckError::Disconnected));
        }
    }
}

/// The ack's arguments as one value: one argument as itself, none as `null`, several as an
/// array (binary values as arrays of bytes).
pub(crate) fn ack_value(args: Args) -> Value {
    data_of::<Value>(args).unwrap_or(Value::Null)
}

/// Roughly what a command holds in memory (its JSON size and binary bytes).
fn cost_of(command: &Command) -> usize {
    let args = match command {
        Command::Emit { args, event, .. } => return event.len() + args_cost(args),
        Command::Ack(_, args) => args,
        Command::Join(room, _) | Command::Leave(room, _) => return room.as_str().len() + 16,
        Command::Disconnect => return 16,
    };
    args_cost(args)
}

fn args_cost(args: &Args) -> usize {
    let json: usize = args.values().iter().map(json_size).sum();
    let binary: usize = args.attachments().iter().map(Bytes::len).sum();
    16 + json + binary
}

fn json_size(value: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Order {
        id: u64,
        blob: Vec<u8>,
    }

    #[test]
    fn data_takes_one_argument_as_itself_and_binary_as_bytes() {
        let mut args = Args::new();
        let placeholder = args.attach(Bytes::from_static(&[1, 2, 255]));
        args.push(serde_json::json!({"id": 7, "blob": placeholder}));
        let order: Order = data_of(args).unwrap();
        assert_eq!(
            order,
            Order {
                id: 7,
                blob: vec![1, 2, 255]
            }
        );
    }

    #[test]
    fn data_takes_several_arguments_as_a_tuple_and_none_as_null() {
        let args = Args::from_values(vec![Value::from("a"), Value::from(2)]);
        let (a, b): (String, u32) = data_of(args).unwrap();
        assert_eq!((a.as_str(), b), ("a", 2));
        let nothing: Option<u32> = data_of(Args::new()).unwrap();
        assert_eq!(nothing, None);
        assert!(data_of::<u32>(Args::from_values(vec![Value::from("x")])).is_err());
    }

    #[test]
    fn a_full_mailbox_refuses_and_a_closed_one_says_so() {
        let inner = SocketInner::new(
            "sid",
            ConnId(1),
            Namespace::root(),
            UserId(Arc::from("u")),
            None,
            Outbox::new(1024),
            Handlers::new(),
            Io::new(
                Hub::new(Default::default()),
                Arc::new(Metrics::new(Hub::new(Default::default()))),
            ),
        );
        let big = Args::from_values(vec![Value::from("x".repeat(MAILBOX_BUDGET / 2))]);
        let emit = |args: Args| Command::Emit {
            event: "e".into(),
            args,
            answer: None,
        };
        assert_eq!(inner.post(emit(big.clone())), Ok(()));
        assert_eq!(inner.post(emit(big.clone())), Err(EmitError::Full));
        assert_eq!(inner.take_commands().len(), 1);
        assert_eq!(inner.post(emit(big)), Ok(()));
        let (tx, mut rx) = oneshot::channel();
        inner.await_ack(AckId(0), tx);
        inner.close();
        assert_eq!(rx.try_recv().unwrap(), Err(AckError::Disconnected));
        assert_eq!(
            inner.post(Command::Disconnect),
            Err(EmitError::Closed),
            "a closed socket takes nothing"
        );
    }
}
