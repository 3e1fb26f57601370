//! The client: a handle ([`Client`]) and a stream of [`Event`]s, with one background task
//! that owns the connection, replaces it when it ends (backoff with full jitter, the
//! close-code policy of [`crate::policy`]), rejoins every room from its last position, and
//! resends what was not answered yet.
//!
//! Exactly-once delivery to the application across reconnects rests on two things: the
//! server replays a room from the position the client sends in `join … since` (no gap), and
//! the client drops a message whose offset it has already passed (no duplicate, e.g. a live
//! message that raced with the replay). A gap the server can not fill is reported as
//! [`Event::Resync`], never hidden.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::{json, Map, Value};
use switchboard_ws_proto::MessageKind;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_rustls::rustls;

use crate::backoff::unit_random;
use crate::config::{Config, Format, TokenVia};
use crate::error::{ConnectError, Error};
use crate::pace::Pacer;
use crate::policy::{after_close, Next, ABNORMAL};
use crate::transport::{self, Endpoint, Received, Upgrade, WsConn};

/// The connection's state, also sent as [`Event::State`] on every change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// An attempt is under way.
    Connecting,
    /// Connected (and authenticated): requests go out at once.
    Connected {
        /// The user id the server gave (`welcome` / `auth_success`).
        user_id: String,
    },
    /// Waiting `delay` before attempt `attempt` (1 for the first retry).
    Reconnecting {
        /// The attempt about to be made.
        attempt: u32,
        /// The wait before it.
        delay: Duration,
    },
    /// The connection ended (reconnection follows unless the state becomes `Closed` or
    /// `Failed`). `code` 1006: no Close frame (network, heartbeat timeout, failed attempt).
    Disconnected {
        /// The close code.
        code: u16,
        /// The close reason.
        reason: String,
    },
    /// Ended on purpose and for good: [`Client::close`], or the server's 1000 or 1008.
    Closed {
        /// The close code.
        code: u16,
        /// The close reason.
        reason: String,
    },
    /// Given up: `max_attempts` failed attempts in a row, authentication refused again with
    /// fresh tokens, or a refused upgrade (HTTP 403: origin, 400: bad request).
    Failed {
        /// Why.
        reason: String,
    },
}

/// Something the server sent, or a change of state.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The connection's state changed.
    State(State),
    /// A message of a joined room, in order, each offset once.
    Message(Message),
    /// `user_joined` / `user_left` in a joined room.
    Presence {
        /// The room.
        room: String,
        /// The user.
        user_id: String,
        /// `true` for `user_joined`.
        joined: bool,
    },
    /// The room's messages since the client's last position could not be replayed (the
    /// server answered `recovered: false`: history no longer reaches back, or its epoch
    /// changed). Live messages continue from `offset`; reload the room's state (e.g. with
    /// [`Client::history`]).
    Resync {
        /// The room.
        room: String,
        /// The room's offset the live messages follow.
        offset: u64,
    },
    /// The server dropped `missed` messages for this connection because it read too slowly
    /// (`lagged`): resync the rooms concerned.
    Lagged {
        /// How many.
        missed: u64,
    },
    /// The server refused to rejoin `room` after a reconnect (e.g. `forbidden`: the
    /// permissions or the token's claims changed): the room is no longer joined.
    Refused {
        /// The room.
        room: String,
        /// The error code.
        code: String,
        /// The message.
        message: String,
    },
    /// An `error` the server sent that answers no request (e.g. `rate_limited`).
    Error {
        /// The error code.
        code: String,
        /// The message.
        message: String,
    },
}

/// A message delivered to a room.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// The room.
    pub room: String,
    /// Its `type` (`publish` for [`Client::publish`] and the HTTP API's default).
    pub kind: String,
    /// The room's offset (`None` for a message that is not stored, which the server does
    /// not send today).
    pub offset: Option<u64>,
    /// The whole message as the server sent it: the sender's fields plus the stamped
    /// `userId`, `user`, `room`, `timestamp`, `offset` and `id`.
    pub body: Value,
}

impl Message {
    /// The `data` field (what [`Client::publish`] sent), or `Null`.
    pub fn data(&self) -> &Value {
        self.body.get("data").unwrap_or(&Value::Null)
    }
}

/// A room's position: what `join … since` resumes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// The last offset received.
    pub offset: u64,
    /// The room's history epoch.
    pub epoch: String,
}

/// The answer to [`Client::join`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    /// The room's latest offset when it was joined (live messages follow it).
    pub offset: u64,
    /// The room's epoch.
    pub epoch: String,
    /// With a position to resume from: whether everything after it is replayed.
    pub recovered: bool,
}

/// The answer to [`Client::history`].
#[derive(Debug, Clone, PartialEq)]
pub struct History {
    /// The messages, oldest first.
    pub messages: Vec<Value>,
    /// The room's latest offset.
    pub offset: u64,
    /// The room's epoch.
    pub epoch: String,
    /// More messages of the range remain: ask again from the last one's offset.
    pub more: bool,
}

/// One user in [`Client::presence`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The user id.
    pub user_id: String,
    /// The display name, when one was given.
    pub user: Option<String>,
    /// The user's connections in the room.
    pub connections: u64,
}

/// A handle to the client (cheap to clone; the connection lives as long as one handle or
/// the [`Events`] does).
#[derive(Clone)]
pub struct Client {
    commands: mpsc::UnboundedSender<Command>,
    state: watch::Receiver<State>,
    queued: Arc<AtomicUsize>,
    limit: usize,
    request_timeout: Duration,
}

/// The events of a [`Client`], in order. Read them, or drop this: while
/// [`Config::event_buffer`] events wait unread, the client stops reading its socket (the
/// server's backpressure applies: `lagged` or 4003) — and answers to requests, which arrive
/// on the same socket behind the messages, wait too. So read events in a task of their own:
/// a request awaited by the task that reads the events can wait forever once the buffer
/// fills. Dropped `Events`: events are discarded and nothing waits.
pub struct Events {
    rx: mpsc::Receiver<Event>,
}

impl Events {
    /// The next event; `None` once the client ended and every event was read.
    pub async fn next(&mut self) -> Option<Event> {
        self.rx.recv().await
    }
}

/// A connection up this long starts the backoff over.
const SETTLED: Duration = Duration::from_secs(5);

/// How long after an `unavailable` answer a request is sent again.
const RETRY_UNAVAILABLE: Duration = Duration::from_millis(250);

/// Fresh tokens refused with 4001 this many times in a row: give up.
const MAX_AUTH_FAILURES: u32 = 3;

impl Client {
    /// Start a client: returns at once, the connection is made in the background (watch
    /// [`Event::State`]). Needs a tokio runtime. Fails only on a bad configuration (URL,
    /// extra roots).
    pub fn connect(config: Config) -> Result<(Client, Events), Error> {
        let endpoint = Endpoint::parse(&config.url).map_err(Error::Invalid)?;
        let tls = transport::tls_for(&endpoint, &config.extra_roots).map_err(Error::Invalid)?;
        let (commands, commands_rx) = mpsc::unbounded_channel();
        let (events_tx, events_rx) = mpsc::channel(config.event_buffer.max(1));
        let (state_tx, state_rx) = watch::channel(State::Connecting);
        let queued = Arc::new(AtomicUsize::new(0));
        let client = Client {
            commands,
            state: state_rx,
            queued: queued.clone(),
            limit: config.offline_queue,
            request_timeout: config.request_timeout,
        };
        let mut prefix = [0u8; 6];
        getrandom::getrandom(&mut prefix).map_err(|e| Error::Invalid(e.to_string()))?;
        let actor = Actor {
            endpoint,
            tls,
            commands: commands_rx,
            events: events_tx,
            state: state_tx,
            queued,
            token: None,
            rooms: BTreeMap::new(),
            waiting: VecDeque::new(),
            sent: Vec::new(),
            retrying: Vec::new(),
            id_prefix: prefix.iter().map(|b| format!("{b:02x}")).collect(),
            next_id: 0,
            closing: None,
            commands_closed: false,
            outgoing: VecDeque::new(),
            pacer: config
                .send_rate
                .map(|rate| Pacer::new(rate, Instant::now())),
            config,
        };
        tokio::spawn(actor.run());
        Ok((client, Events { rx: events_rx }))
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state.borrow().clone()
    }

    /// Wait until the state is `Connected` (or the client ended: `Err`).
    pub async fn connected(&self) -> Result<String, Error> {
        let mut state = self.state.clone();
        loop {
            match &*state.borrow_and_update() {
                State::Connected { user_id } => return Ok(user_id.clone()),
                State::Closed { reason, .. } | State::Failed { reason } => {
                    return Err(Error::Closed(reason.clone()))
                }
                _ => {}
            }
            if state.changed().await.is_err() {
                return Err(Error::Closed("the client ended".into()));
            }
        }
    }

    /// Requests waiting for an answer or for a connection (bounded by
    /// [`Config::offline_queue`]).
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// Join `room` (and rejoin it after every reconnect, from the last message received).
    pub async fn join(&self, room: &str) -> Result<Joined, Error> {
        self.join_from(room, None).await
    }

    /// Join `room` resuming after `since`: every message after it is delivered first
    /// ([`Joined::recovered`] `false` and an [`Event::Resync`] when that is no longer
    /// possible). With `since.epoch` empty, the room's current epoch is assumed (asked with
    /// `history` first): for positions kept by hand, such as a `--since` flag.
    pub async fn join_from(&self, room: &str, since: Option<Position>) -> Result<Joined, Error> {
        check_room(room)?;
        let since = match since {
            Some(p) if p.epoch.is_empty() => {
                let page = self.history(room, None, Some(1)).await?;
                Some(Position {
                    offset: p.offset,
                    epoch: page.epoch,
                })
            }
            other => other,
        };
        let room = room.to_owned();
        match self
            .request(|reply| Command::Join { room, since, reply })
            .await?
        {
            Reply::Joined(j) => Ok(j),
            other => Err(unexpected(other)),
        }
    }

    /// Leave `room`.
    pub async fn leave(&self, room: &str) -> Result<(), Error> {
        check_room(room)?;
        let room = room.to_owned();
        self.request(|reply| Command::Leave { room, reply })
            .await
            .map(|_| ())
    }

    /// Publish `data` to `room` as `{"type":"publish","room","data","id"}`; answers the
    /// message's offset once the server stored it. The request carries an id: after a
    /// reconnect it is sent again with the same id, and the server's deduplication makes the
    /// retry harmless (one message, acknowledged again).
    pub async fn publish(&self, room: &str, data: Value) -> Result<u64, Error> {
        self.send(room, "publish", json!({ "data": data })).await
    }

    /// Send a message of any `kind` (`chat`, `typing`, …) to `room`: the fields of `body`
    /// (an object) are relayed as given, plus `type`, `room` and an id. Answers the offset.
    pub async fn send(&self, room: &str, kind: &str, body: Value) -> Result<u64, Error> {
        check_room(room)?;
        let Value::Object(mut fields) = body else {
            return Err(Error::Invalid("the body must be a JSON object".into()));
        };
        for reserved in ["type", "room", "channel", "id"] {
            fields.remove(reserved);
        }
        fields.insert("type".into(), Value::String(kind.to_owned()));
        fields.insert("room".into(), Value::String(room.to_owned()));
        match self
            .request(|reply| Command::Send {
                body: fields,
                reply,
            })
            .await?
        {
            Reply::Ack(offset) => Ok(offset),
            other => Err(unexpected(other)),
        }
    }

    /// One page of `room`'s history: messages after `since` (the newest `limit`).
    pub async fn history(
        &self,
        room: &str,
        since: Option<u64>,
        limit: Option<u64>,
    ) -> Result<History, Error> {
        check_room(room)?;
        let mut body = Map::new();
        body.insert("type".into(), "history".into());
        body.insert("room".into(), room.into());
        if let Some(since) = since {
            body.insert("since".into(), since.into());
        }
        if let Some(limit) = limit {
            body.insert("limit".into(), limit.into());
        }
        let room = room.to_owned();
        match self
            .request(|reply| Command::Read {
                kind: "history",
                room,
                body,
                reply,
            })
            .await?
        {
            Reply::History(h) => Ok(h),
            other => Err(unexpected(other)),
        }
    }

    /// Who is in `room`.
    pub async fn presence(&self, room: &str) -> Result<Vec<Member>, Error> {
        check_room(room)?;
        let mut body = Map::new();
        body.insert("type".into(), "presence".into());
        body.insert("room".into(), room.into());
        let room = room.to_owned();
        match self
            .request(|reply| Command::Read {
                kind: "presence",
                room,
                body,
                reply,
            })
            .await?
        {
            Reply::Presence(m) => Ok(m),
            other => Err(unexpected(other)),
        }
    }

    /// Close the connection (1000) and end the client; pending requests fail with
    /// [`Error::Closed`].
    pub async fn close(&self) {
        let (reply, done) = oneshot::channel();
        if self.commands.send(Command::Close { reply }).is_ok() {
            let _ = done.await;
        }
    }

    async fn request(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<Reply, Error>>) -> Command,
    ) -> Result<Reply, Error> {
        // The bound is taken here, before the command exists: nothing beyond it is queued
        // anywhere (the command channel included).
        let taken = self
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.limit).then_some(n + 1)
            });
        if taken.is_err() {
            return Err(Error::QueueFull(self.limit));
        }
        let (reply, answer) = oneshot::channel();
        if self.commands.send(make(reply)).is_err() {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(Error::Closed("the client ended".into()));
        }
        match answer.await {
            Ok(result) => result,
            // The actor answers every request it took, even when it ends; a dropped sender
            // means it panicked.
            Err(_) => Err(Error::Closed("the client ended".into())),
        }
        .map_err(|e| match e {
            Error::Timeout(_) => Error::Timeout(self.request_timeout),
            other => other,
        })
    }
}

/// The server's rule for room names (docs/protocol.md): 1–255 bytes, no control characters.
/// Checked here because the server's refusal of a malformed request can not name the request.
fn check_room(room: &str) -> Result<(), Error> {
    if room.is_empty() || room.len() > 255 || room.chars().any(char::is_control) {
        return Err(Error::Invalid(format!(
            "bad room name {room:?}: 1 to 255 bytes, no control characters"
        )));
    }
    Ok(())
}

fn unexpected(reply: Reply) -> Error {
    Error::Invalid(format!("unexpected answer {reply:?}"))
}

#[derive(Debug)]
enum Reply {
    Joined(Joined),
    Left,
    Ack(u64),
    History(History),
    Presence(Vec<Member>),
}

type ReplyTx = oneshot::Sender<Result<Reply, Error>>;

enum Command {
    Join {
        room: String,
        since: Option<Position>,
        reply: ReplyTx,
    },
    Leave {
        room: String,
        reply: ReplyTx,
    },
    /// A relayed message (publish or any other type), acknowledged by `ack {id, offset}`.
    Send {
        body: Map<String, Value>,
        reply: ReplyTx,
    },
    /// `history` or `presence`, answered by a reply of that type for that room.
    Read {
        kind: &'static str,
        room: String,
        body: Map<String, Value>,
        reply: ReplyTx,
    },
    Close {
        reply: oneshot::Sender<()>,
    },
}

/// A request the client sends and keeps until it is answered.
struct Request {
    id: String,
    /// The message, `id` included (sent again, unchanged, after a reconnect).
    body: Map<String, Value>,
    /// For replies that carry no id: what answers it (`ack` answers by id).
    answered_by: Option<(&'static str, String)>,
    reply: ReplyTx,
    deadline: Instant,
}

/// A room the application joined.
struct Room {
    /// Where to resume from (`None` until the first `joined`).
    position: Option<Position>,
    /// Connected and joined on this connection.
    joined: bool,
    /// The `since` sent with the current join, if any.
    resuming: bool,
    /// The id of the join in flight on this connection (its `error` names it).
    join_id: Option<String>,
    /// Application calls waiting for `joined` / `left`.
    join_waiters: Vec<(ReplyTx, Instant)>,
    leave_waiters: Vec<(ReplyTx, Instant)>,
    /// Left by the application: forgotten once `left` arrives.
    leaving: bool,
}

struct Actor {
    config: Config,
    endpoint: Endpoint,
    /// `None` for `ws://`.
    tls: Option<Arc<rustls::ClientConfig>>,
    commands: mpsc::UnboundedReceiver<Command>,
    events: mpsc::Sender<Event>,
    state: watch::Sender<State>,
    queued: Arc<AtomicUsize>,
    /// The current token (`None`: ask the provider).
    token: Option<String>,
    rooms: BTreeMap<String, Room>,
    /// Requests not sent on the current connection yet, oldest first.
    waiting: VecDeque<Request>,
    /// Requests sent on the current connection, unanswered, oldest first.
    sent: Vec<Request>,
    /// Requests the server answered `unavailable` (its store could not confirm them: a
    /// networked store that is down or starting), sent again at the time given, with the
    /// same id (deduplicated if the first one was stored after all).
    retrying: Vec<(Instant, Request)>,
    /// Random per client: ids of different clients of one user never collide in the
    /// server's deduplication.
    id_prefix: String,
    next_id: u64,
    /// `Some` once the application closed the client.
    closing: Option<oneshot::Sender<()>>,
    /// Every `Client` handle is gone (the events may still be read).
    commands_closed: bool,
    /// Encoded messages waiting for the pacer.
    outgoing: VecDeque<(MessageKind, Vec<u8>)>,
    pacer: Option<Pacer>,
}

/// What woke the connected loop.
enum Step {
    Command(Option<Command>),
    Read(std::io::Result<usize>),
    Written(std::io::Result<()>),
    Fresh(Result<Result<String, String>, tokio::task::JoinError>),
    Wake,
}

/// How a connection ended.
struct End {
    code: u16,
    reason: String,
    /// It got as far as `welcome` (authentication worked).
    established: bool,
    /// How long it was connected (a connection that lasted starts the backoff over).
    lasted: Duration,
}

impl End {
    fn abnormal(reason: impl Into<String>, established: bool) -> End {
        End {
            code: ABNORMAL,
            reason: reason.into(),
            established,
            lasted: Duration::ZERO,
        }
    }
}

impl Actor {
    async fn run(mut self) {
        let mut attempt: u32 = 0;
        let mut auth_failures: u32 = 0;
        let mut reconnect_now_used = false;
        loop {
            self.set_state(State::Connecting).await;
            let end = self.attempt().await;
            if self.closing.is_some() {
                break self.finish(1000, "closed by the application", false).await;
            }
            // Only a connection that lasted (5 s, or the cap if smaller) starts the backoff
            // over: a server that welcomes and then closes at once (1011, 1013, a draining
            // node's 1001) must not be retried at full speed forever.
            if end.established && end.lasted >= self.config.backoff.cap.min(SETTLED) {
                attempt = 0;
                reconnect_now_used = false;
            }
            // Authentication worked: a later 4001 (an expired token) starts a new count.
            if end.established || end.code != 4001 {
                auth_failures = 0;
            }
            self.set_state(State::Disconnected {
                code: end.code,
                reason: end.reason.clone(),
            })
            .await;
            let backoff = self.config.backoff.delay(attempt, unit_random());
            let delay = match after_close(end.code) {
                Next::Stop => break self.finish(end.code, &end.reason, false).await,
                Next::ReconnectNow if !reconnect_now_used => {
                    reconnect_now_used = true;
                    Duration::ZERO
                }
                Next::RefreshToken => {
                    auth_failures += 1;
                    if auth_failures > MAX_AUTH_FAILURES {
                        let reason = format!("authentication refused: {}", end.reason);
                        break self.finish(end.code, &reason, true).await;
                    }
                    self.token = None;
                    if auth_failures == 1 {
                        Duration::ZERO
                    } else {
                        backoff
                    }
                }
                Next::SlowDown => backoff.max(self.config.rate_limit_pause),
                Next::ReconnectNow | Next::Backoff => backoff,
            };
            if end.code == 403 || end.code == 400 {
                // A refused upgrade (see `attempt`): trying again would be refused again.
                break self.finish(end.code, &end.reason, true).await;
            }
            attempt += 1;
            if self.config.max_attempts.is_some_and(|max| attempt > max) {
                let reason = format!("gave up after {} attempts: {}", attempt - 1, end.reason);
                break self.finish(end.code, &reason, true).await;
            }
            self.set_state(State::Reconnecting { attempt, delay }).await;
            if !self.wait_offline(delay).await {
                break self.finish(1000, "closed by the application", false).await;
            }
        }
    }

    /// One connection, from the TCP connect to its end.
    async fn attempt(&mut self) -> End {
        let connect = tokio::time::timeout(self.config.connect_timeout, self.open());
        let (mut ws, user_id) = match connect.await {
            Ok(Ok(open)) => open,
            Ok(Err(e)) => return e,
            Err(_) => return End::abnormal("connect timed out", false),
        };
        let since = Instant::now();
        self.set_state(State::Connected { user_id }).await;
        self.resume();
        let mut end = self.session(&mut ws).await;
        end.lasted = since.elapsed();
        if self.closing.is_some() {
            ws.shutdown(1000, "").await;
        } else if end.code != ABNORMAL {
            let _ = tokio::time::timeout(Duration::from_secs(1), ws.flush()).await;
        }
        self.connection_lost();
        end
    }

    /// Connect, upgrade, authenticate: up to `welcome` / `auth_success`.
    async fn open(&mut self) -> Result<(WsConn, String), End> {
        let fail = |reason: String| End::abnormal(reason, false);
        let via = self.config.auth.as_ref().map(|(via, _)| *via);
        let token = match &self.config.auth {
            None => None,
            Some((via, provider)) => {
                if self.token.is_none() || *via == TokenVia::Ticket {
                    let fetched = provider
                        .fetch()
                        .await
                        .map_err(|e| fail(format!("token: {e}")))?;
                    self.token = Some(fetched);
                }
                self.token.clone()
            }
        };
        let mut target = self.endpoint.target.clone();
        let mut query = |name: &str, value: &str| {
            let value = percent_encoding::utf8_percent_encode(value, QUERY_VALUE);
            target.push(if target.contains('?') { '&' } else { '?' });
            target.push_str(&format!("{name}={value}"));
        };
        let bearer;
        let mut headers: Vec<(&str, &str)> = Vec::new();
        match (via, &token) {
            (Some(TokenVia::Query), Some(t)) => query("token", t),
            (Some(TokenVia::Ticket), Some(t)) => query("ticket", t),
            (Some(TokenVia::Header), Some(t)) => {
                bearer = format!("Bearer {t}");
                headers.push(("Authorization", &bearer));
            }
            _ => {}
        }
        let protocols: &[&str] = match self.config.format {
            Format::Json => &[],
            Format::MsgPack => &["switchboard.msgpack"],
        };
        let upgrade = Upgrade {
            target: &target,
            headers: &headers,
            protocols,
            deflate: self.config.deflate,
        };
        let mut ws = match transport::connect(&self.endpoint, &upgrade, self.tls.as_ref()).await {
            Ok(ws) => ws,
            // 403 (origin) and 400 are final; 401 means credentials the server will not take
            // (as 4001); 429/503 and the rest are worth another try.
            Err(ConnectError::Status(status @ (400 | 403))) => {
                return Err(End {
                    code: status,
                    reason: format!("the server refused the upgrade with HTTP {status}"),
                    established: false,
                    lasted: Duration::ZERO,
                })
            }
            Err(ConnectError::Status(401)) => {
                return Err(End {
                    code: 4001,
                    reason: "HTTP 401".into(),
                    established: false,
                    lasted: Duration::ZERO,
                })
            }
            Err(e) => return Err(fail(e.to_string())),
        };
        if self.config.format == Format::MsgPack && ws.protocol.is_none() {
            return Err(fail("the server did not agree to MessagePack".into()));
        }
        if let (Some(TokenVia::FirstMessage), Some(t)) = (via, &token) {
            let auth = json!({"type": "auth", "token": t});
            let (kind, bytes) = self.encode(&auth);
            ws.send(kind, &bytes);
        }
        // Up to the greeting: `welcome`, or `auth_success` for a first-message token.
        let expected = match via {
            Some(TokenVia::FirstMessage) => "auth_success",
            _ => "welcome",
        };
        loop {
            ws.flush().await.map_err(|e| fail(e.to_string()))?;
            while let Some(event) = ws.next_event().map_err(|(code, reason)| End {
                code,
                reason,
                established: false,
                lasted: Duration::ZERO,
            })? {
                match event {
                    Received::Closed(code, reason) => {
                        let _ = ws.flush().await;
                        return Err(End {
                            code,
                            reason,
                            established: false,
                            lasted: Duration::ZERO,
                        });
                    }
                    Received::Control => {}
                    Received::Text(b) | Received::Binary(b) => {
                        let Some(message) = decode(&b) else { continue };
                        if message.get("type").and_then(Value::as_str) == Some(expected) {
                            let user = message.get("userId").and_then(Value::as_str);
                            return Ok((ws, user.unwrap_or_default().to_owned()));
                        }
                    }
                }
            }
            match ws.read_more().await {
                Ok(0) => return Err(fail("the server closed the connection".into())),
                Ok(_) => {}
                Err(e) => return Err(fail(e.to_string())),
            }
        }
    }

    /// On a fresh connection: rejoin every room from its position, then send every request
    /// not answered yet, in order (the same ids). Paced like everything sent.
    fn resume(&mut self) {
        // What timed out while the connection was being made is not sent any more.
        self.expire(Instant::now());
        let rooms: Vec<String> = self.rooms.keys().cloned().collect();
        for room in rooms {
            self.send_join(&room);
        }
        let retries = std::mem::take(&mut self.retrying)
            .into_iter()
            .map(|(_, r)| r);
        let mut requests: Vec<Request> = std::mem::take(&mut self.waiting).into_iter().collect();
        requests.extend(retries);
        for request in requests {
            self.queue_out(&Value::Object(request.body.clone()));
            self.sent.push(request);
        }
    }

    fn send_join(&mut self, name: &str) {
        let id = self.fresh_id();
        let Some(room) = self.rooms.get_mut(name) else {
            return;
        };
        let mut body = json!({"type": "join", "room": name, "id": id});
        if let Some(p) = &room.position {
            body["since"] = json!({"offset": p.offset, "epoch": p.epoch});
        }
        if let Some(user) = &self.config.name {
            body["user"] = Value::String(user.clone());
        }
        room.resuming = room.position.is_some();
        room.join_id = Some(id);
        room.joined = false;
        self.queue_out(&body);
    }

    /// The connection is gone: what was sent and not answered is sent again on the next one.
    fn connection_lost(&mut self) {
        self.outgoing.clear();
        for request in std::mem::take(&mut self.sent).into_iter().rev() {
            self.waiting.push_front(request);
        }
        for room in self.rooms.values_mut() {
            room.joined = false;
            room.join_id = None;
        }
        // A room left while the connection went away is left: nothing to rejoin.
        let leaving: Vec<String> = self
            .rooms
            .iter()
            .filter(|(_, r)| r.leaving)
            .map(|(name, _)| name.clone())
            .collect();
        for name in leaving {
            self.drop_room(&name, || Err(Error::Closed("left before joined".into())));
        }
    }

    /// Forget `name`: its leave waiters are answered (it is left), its join waiters get
    /// `join_result`. Every waiter is answered exactly once (the queue count depends on it).
    fn drop_room(&mut self, name: &str, join_result: impl Fn() -> Result<Reply, Error>) {
        if let Some(room) = self.rooms.remove(name) {
            for (reply, _) in room.join_waiters {
                self.answer(reply, join_result());
            }
            for (reply, _) in room.leave_waiters {
                self.answer(reply, Ok(Reply::Left));
            }
        }
    }

    /// The connected loop: commands, the server's messages, paced sends, heartbeats and
    /// timeouts. Reading and writing go on side by side: a server that stops reading while
    /// we have output (its own backpressure) still gets read.
    async fn session(&mut self, ws: &mut WsConn) -> End {
        let ended = |code, reason| End {
            code,
            reason,
            established: true,
            lasted: Duration::ZERO,
        };
        let mut last_heard = Instant::now();
        let mut pinged = false;
        let mut refresh = self.refresh_deadline();
        let mut refreshing: Option<tokio::task::JoinHandle<Result<String, String>>> = None;
        let mut write_blocked_since: Option<Instant> = None;
        let stall = self.config.ping_interval + self.config.pong_timeout;
        loop {
            // Frames already read (e.g. a Close that came with `welcome`) first.
            loop {
                match ws.next_event() {
                    Ok(None) => break,
                    Ok(Some(Received::Closed(code, reason))) => return ended(code, reason),
                    Ok(Some(Received::Control)) => {}
                    Ok(Some(Received::Text(b) | Received::Binary(b))) => {
                        if let Some(message) = decode(&b) {
                            if self.incoming(message).await {
                                // The application was slow to take events; the silence
                                // was ours, not the server's.
                                last_heard = Instant::now();
                            }
                        }
                    }
                    Err((code, reason)) => return ended(code, reason),
                }
            }
            let now = Instant::now();
            self.pump(ws, now);
            if ws.has_output() {
                let since = *write_blocked_since.get_or_insert(now);
                if now.duration_since(since) > stall {
                    return End::abnormal("the server stopped reading", true);
                }
            } else {
                write_blocked_since = None;
            }
            let heartbeat = if pinged {
                last_heard + self.config.ping_interval + self.config.pong_timeout
            } else {
                last_heard + self.config.ping_interval
            };
            let paced = match (&mut self.pacer, self.outgoing.is_empty()) {
                (Some(pacer), false) => Some(pacer.next_at(now)),
                _ => None,
            };
            let write_stall = write_blocked_since.map(|t| t + stall);
            let wake = [
                Some(heartbeat),
                self.next_deadline(),
                refresh,
                paced,
                write_stall,
            ]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(heartbeat);
            let commands_open = !self.commands_closed;
            let writing = ws.has_output();
            // Reading and writing borrow disjoint halves of the connection.
            let step = {
                let (mut reader, mut writer) = ws.split_io();
                tokio::select! {
                    command = self.commands.recv(), if commands_open => Step::Command(command),
                    read = reader.read_more() => Step::Read(read),
                    written = writer.flush(), if writing => Step::Written(written),
                    fresh = async { refreshing.as_mut().expect("guarded").await }, if refreshing.is_some() => Step::Fresh(fresh),
                    () = tokio::time::sleep_until(wake) => Step::Wake,
                }
            };
            match step {
                Step::Command(Some(Command::Close { reply })) => {
                    self.closing = Some(reply);
                    return ended(1000, String::new());
                }
                Step::Command(Some(command)) => self.command(command, true),
                Step::Command(None) => {
                    // Every handle is gone: nobody can send or close any more. Without a
                    // reader of the events either, the client ends.
                    self.commands_closed = true;
                    if self.events.is_closed() {
                        return ended(1000, String::new());
                    }
                }
                Step::Read(Ok(0)) => {
                    return End::abnormal("the server closed the connection", true)
                }
                Step::Read(Ok(_)) => {
                    last_heard = Instant::now();
                    pinged = false;
                }
                Step::Read(Err(e)) => return End::abnormal(e.to_string(), true),
                Step::Written(Ok(())) => write_blocked_since = None,
                Step::Written(Err(e)) => return End::abnormal(e.to_string(), true),
                Step::Fresh(fresh) => {
                    refreshing = None;
                    match fresh {
                        Ok(Ok(token)) => {
                            let old = self.token.as_deref().and_then(crate::token::expires_at);
                            let new = crate::token::expires_at(&token);
                            // Re-armed only for a token that lives longer (a provider that
                            // hands out the same token would otherwise be asked in a loop).
                            refresh = match (old, new) {
                                (Some(old), Some(new)) if new > old => Some(
                                    Instant::now()
                                        + crate::token::refresh_in(new, SystemTime::now())
                                            .max(Duration::from_secs(1)),
                                ),
                                _ => None,
                            };
                            self.token = Some(token.clone());
                            self.queue_out(&json!({"type": "refresh", "token": token}));
                        }
                        // No fresh token: the server ends the session at `exp` (4001), and
                        // the provider is asked again then.
                        _ => refresh = None,
                    }
                }
                Step::Wake => {
                    let now = Instant::now();
                    if now >= heartbeat {
                        if pinged {
                            return End::abnormal("heartbeat timeout", true);
                        }
                        ws.ping();
                        pinged = true;
                    }
                    if refresh.is_some_and(|at| now >= at) && refreshing.is_none() {
                        refresh = None;
                        if let Some((_, provider)) = &self.config.auth {
                            refreshing = Some(tokio::spawn(provider.fetch()));
                        }
                    }
                    self.expire(now);
                    self.send_due_retries(now);
                }
            }
        }
    }

    fn send_due_retries(&mut self, now: Instant) {
        let (due, later): (Vec<_>, Vec<_>) =
            self.retrying.drain(..).partition(|(at, _)| *at <= now);
        self.retrying = later;
        for (_, request) in due {
            self.queue_out(&Value::Object(request.body.clone()));
            self.sent.push(request);
        }
    }

    /// Queue `message` for sending (paced; see [`Pacer`]).
    fn queue_out(&mut self, message: &Value) {
        let encoded = self.encode(message);
        self.outgoing.push_back(encoded);
    }

    /// Hand the queued messages the pacer allows to the connection.
    fn pump(&mut self, ws: &mut WsConn, now: Instant) {
        while !self.outgoing.is_empty() {
            if let Some(pacer) = &mut self.pacer {
                if !pacer.take(now) {
                    break;
                }
            }
            if let Some((kind, bytes)) = self.outgoing.pop_front() {
                ws.send(kind, &bytes);
            }
        }
    }

    /// When to ask for a fresh token: before the current JWT's `exp` (not for tickets,
    /// which authenticate the connect only).
    fn refresh_deadline(&self) -> Option<Instant> {
        match &self.config.auth {
            Some((TokenVia::Ticket, _)) | None => None,
            Some(_) => {
                let exp = crate::token::expires_at(self.token.as_deref()?)?;
                Some(Instant::now() + crate::token::refresh_in(exp, SystemTime::now()))
            }
        }
    }

    /// Handle the application's command; `ws` when connected.
    fn command(&mut self, command: Command, connected: bool) {
        let deadline = Instant::now() + self.config.request_timeout;
        match command {
            Command::Join { room, since, reply } => {
                let entry = self.rooms.entry(room.clone()).or_insert_with(|| Room {
                    position: None,
                    joined: false,
                    resuming: false,
                    join_id: None,
                    join_waiters: Vec::new(),
                    leave_waiters: Vec::new(),
                    leaving: false,
                });
                entry.leaving = false;
                if since.is_some() {
                    entry.position = since;
                }
                entry.join_waiters.push((reply, deadline));
                if connected {
                    self.send_join(&room);
                }
            }
            Command::Leave { room, reply } => match self.rooms.get_mut(&room) {
                Some(entry) if connected => {
                    entry.leaving = true;
                    entry.leave_waiters.push((reply, deadline));
                    let id = self.fresh_id();
                    self.queue_out(&json!({"type": "leave", "room": room, "id": id}));
                }
                // Offline, or not joined: nothing to tell the server.
                _ => {
                    self.drop_room(&room, || Err(Error::Closed("left before joined".into())));
                    self.answer(reply, Ok(Reply::Left));
                }
            },
            Command::Send { mut body, reply } => {
                let id = self.fresh_id();
                body.insert("id".into(), Value::String(id.clone()));
                self.submit(
                    Request {
                        id,
                        body,
                        answered_by: None,
                        reply,
                        deadline,
                    },
                    connected,
                );
            }
            Command::Read {
                kind,
                room,
                mut body,
                reply,
            } => {
                let id = self.fresh_id();
                body.insert("id".into(), Value::String(id.clone()));
                self.submit(
                    Request {
                        id,
                        body,
                        answered_by: Some((kind, room)),
                        reply,
                        deadline,
                    },
                    connected,
                );
            }
            Command::Close { reply } => self.closing = Some(reply),
        }
    }

    fn submit(&mut self, request: Request, connected: bool) {
        if connected {
            self.queue_out(&Value::Object(request.body.clone()));
            self.sent.push(request);
        } else {
            self.waiting.push_back(request);
        }
    }

    /// A message from the server. Returns whether handing an event to the application had
    /// to wait.
    async fn incoming(&mut self, message: Value) -> bool {
        let Value::Object(body) = message else {
            return false;
        };
        let kind = body.get("type").and_then(Value::as_str).unwrap_or_default();
        let room = body.get("room").and_then(Value::as_str).map(str::to_owned);
        // A room message carries the relay's stamps, whatever its `type`: the server relays
        // any type, `joined` and `error` included, and only its own replies lack them.
        let stamped = body.get("timestamp").is_some_and(Value::is_u64)
            && body.get("offset").is_some_and(Value::is_u64);
        if let (true, Some(room)) = (stamped, &room) {
            let (room, kind) = (room.clone(), kind.to_owned());
            return self.delivered(room, kind, body).await;
        }
        let int = |name: &str| body.get(name).and_then(Value::as_u64);
        let text = |name: &str| {
            body.get(name)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        match kind {
            "joined" => {
                let room = room.unwrap_or_default();
                self.joined(
                    &room,
                    int("offset").unwrap_or(0),
                    text("epoch"),
                    body.get("recovered") != Some(&Value::Bool(false)),
                )
                .await
            }
            "left" => {
                let room = room.unwrap_or_default();
                if self.rooms.get(&room).is_some_and(|r| r.leaving) {
                    self.drop_room(&room, || Err(Error::Closed("left before joined".into())));
                }
                false
            }
            "ack" => {
                let id = id_text(body.get("id"));
                if let Some(request) = self.take_sent(|r| Some(&r.id) == id.as_ref()) {
                    self.answer(request.reply, Ok(Reply::Ack(int("offset").unwrap_or(0))));
                }
                false
            }
            "history" | "presence" => {
                let room = room.unwrap_or_default();
                let Some(request) = self.take_sent(|r| {
                    r.answered_by
                        .as_ref()
                        .is_some_and(|(k, rm)| *k == kind && *rm == room)
                }) else {
                    return false;
                };
                let reply = if kind == "history" {
                    Reply::History(History {
                        messages: body
                            .get("messages")
                            .and_then(Value::as_array)
                            .cloned()
                            .unwrap_or_default(),
                        offset: int("offset").unwrap_or(0),
                        epoch: text("epoch"),
                        more: body.get("more") == Some(&Value::Bool(true)),
                    })
                } else {
                    Reply::Presence(members(body.get("members")))
                };
                self.answer(request.reply, Ok(reply));
                false
            }
            "error" => self.error(&body).await,
            "user_joined" | "user_left" => {
                self.emit(Event::Presence {
                    room: room.unwrap_or_default(),
                    user_id: text("userId"),
                    joined: kind == "user_joined",
                })
                .await
            }
            "lagged" => {
                self.emit(Event::Lagged {
                    missed: int("missed").unwrap_or(0),
                })
                .await
            }
            "pong" | "welcome" | "auth_success" | "refreshed" => false,
            _ => match room {
                Some(room) => self.delivered(room, kind.to_owned(), body).await,
                None => false,
            },
        }
    }

    async fn joined(&mut self, name: &str, offset: u64, epoch: String, recovered: bool) -> bool {
        let Some(room) = self.rooms.get_mut(name) else {
            return false;
        };
        // Unasked (no join of ours pending): the room's history moved to a new epoch while
        // we were in it (a networked store lost it); our position means nothing any more.
        let unasked = room.joined && room.join_id.is_none() && room.join_waiters.is_empty();
        room.joined = true;
        room.join_id = None;
        let resync = !recovered && (room.resuming || unasked);
        if !(room.resuming && recovered) {
            // A fresh join, or a resume that could not be: live messages follow `offset`.
            room.position = Some(Position {
                offset,
                epoch: epoch.clone(),
            });
        }
        room.resuming = false;
        let joined = Joined {
            offset,
            epoch,
            recovered,
        };
        for (reply, _) in std::mem::take(&mut room.join_waiters) {
            self.answer(reply, Ok(Reply::Joined(joined.clone())));
        }
        if resync {
            return self
                .emit(Event::Resync {
                    room: name.to_owned(),
                    offset,
                })
                .await;
        }
        false
    }

    async fn delivered(&mut self, room: String, kind: String, body: Map<String, Value>) -> bool {
        let offset = body.get("offset").and_then(Value::as_u64);
        let Some(entry) = self.rooms.get_mut(&room) else {
            return false; // left meanwhile
        };
        if let (Some(offset), Some(position)) = (offset, &mut entry.position) {
            if offset <= position.offset {
                return false; // already delivered (a replay racing with a live copy)
            }
            position.offset = offset;
        }
        self.emit(Event::Message(Message {
            room,
            kind,
            offset,
            body: Value::Object(body),
        }))
        .await
    }

    async fn error(&mut self, body: &Map<String, Value>) -> bool {
        let code = body
            .get("code")
            .and_then(Value::as_str)
            .unwrap_or("error")
            .to_owned();
        let message = body
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let error = Error::Server {
            code: code.clone(),
            message: message.clone(),
        };
        if let Some(id) = id_text(body.get("id")) {
            if let Some(request) = self.take_sent(|r| r.id == id) {
                if code == "unavailable" && Instant::now() + RETRY_UNAVAILABLE < request.deadline {
                    self.retrying
                        .push((Instant::now() + RETRY_UNAVAILABLE, request));
                } else {
                    self.answer(request.reply, Err(error));
                }
                return false;
            }
            // A refused join: the room is not joined, and not rejoined later.
            let refused = self
                .rooms
                .iter()
                .find(|(_, r)| r.join_id.as_deref() == Some(id.as_str()))
                .map(|(name, _)| name.clone());
            if let Some(name) = refused {
                let asked = self
                    .rooms
                    .get(&name)
                    .is_some_and(|r| !r.join_waiters.is_empty());
                self.drop_room(&name, || Err(error.clone()));
                if !asked {
                    // A rejoin after a reconnect: nobody waits for it, so say it.
                    return self
                        .emit(Event::Refused {
                            room: name,
                            code,
                            message,
                        })
                        .await;
                }
                return false;
            }
        }
        self.emit(Event::Error { code, message }).await
    }

    fn take_sent(&mut self, matches: impl Fn(&Request) -> bool) -> Option<Request> {
        let i = self.sent.iter().position(matches)?;
        Some(self.sent.remove(i))
    }

    /// The earliest request deadline.
    fn next_deadline(&self) -> Option<Instant> {
        let retrying = self.retrying.iter().map(|(at, _)| *at);
        let requests = self
            .waiting
            .iter()
            .chain(&self.sent)
            .map(|r| r.deadline)
            .chain(retrying);
        let rooms = self.rooms.values().flat_map(|r| {
            r.join_waiters
                .iter()
                .chain(&r.leave_waiters)
                .map(|(_, d)| *d)
        });
        requests.chain(rooms).min()
    }

    /// Fail the requests whose time is up.
    fn expire(&mut self, now: Instant) {
        let timeout = Error::Timeout(self.config.request_timeout);
        let (expired_w, kept): (Vec<_>, Vec<_>) =
            self.waiting.drain(..).partition(|r| r.deadline <= now);
        self.waiting = kept.into();
        let (expired_s, kept): (Vec<_>, Vec<_>) =
            self.sent.drain(..).partition(|r| r.deadline <= now);
        self.sent = kept;
        let (expired_r, kept): (Vec<_>, Vec<_>) = self
            .retrying
            .drain(..)
            .partition(|(_, r)| r.deadline <= now);
        self.retrying = kept;
        let expired_r = expired_r.into_iter().map(|(_, r)| r);
        for request in expired_w.into_iter().chain(expired_s).chain(expired_r) {
            self.answer(request.reply, Err(timeout.clone()));
        }
        let mut late = Vec::new();
        for room in self.rooms.values_mut() {
            for waiters in [&mut room.join_waiters, &mut room.leave_waiters] {
                let (expired, kept): (Vec<_>, Vec<_>) =
                    waiters.drain(..).partition(|(_, d)| *d <= now);
                *waiters = kept;
                late.extend(expired.into_iter().map(|(reply, _)| reply));
            }
        }
        for reply in late {
            self.answer(reply, Err(timeout.clone()));
        }
    }

    /// Between connections: take commands (queued until the next connection) for `delay`.
    /// `false` when the application closed the client.
    async fn wait_offline(&mut self, delay: Duration) -> bool {
        let until = Instant::now() + delay;
        // Offline, retries wait for the connection like everything else.
        let retries = std::mem::take(&mut self.retrying)
            .into_iter()
            .map(|(_, r)| r);
        self.waiting.extend(retries);
        loop {
            let wake = self.next_deadline().map_or(until, |d| d.min(until));
            let commands_open = !self.commands_closed;
            tokio::select! {
                command = self.commands.recv(), if commands_open => match command {
                    Some(Command::Close { reply }) => {
                        self.closing = Some(reply);
                        return false;
                    }
                    Some(command) => self.command(command, false),
                    None if self.events.is_closed() => return false,
                    None => self.commands_closed = true,
                },
                () = tokio::time::sleep_until(wake) => {
                    self.expire(Instant::now());
                    if Instant::now() >= until {
                        return true;
                    }
                }
            }
        }
    }

    /// The end: every pending request fails, the final state is set.
    async fn finish(&mut self, code: u16, reason: &str, failed: bool) {
        let error = Error::Closed(reason.to_owned());
        let retrying = std::mem::take(&mut self.retrying)
            .into_iter()
            .map(|(_, r)| r);
        for request in std::mem::take(&mut self.waiting)
            .into_iter()
            .chain(std::mem::take(&mut self.sent))
            .chain(retrying)
        {
            self.answer(request.reply, Err(error.clone()));
        }
        for room in std::mem::take(&mut self.rooms).into_values() {
            for (reply, _) in room.join_waiters.into_iter().chain(room.leave_waiters) {
                self.answer(reply, Err(error.clone()));
            }
        }
        let state = if failed {
            State::Failed {
                reason: reason.to_owned(),
            }
        } else {
            State::Closed {
                code,
                reason: reason.to_owned(),
            }
        };
        // Not waiting for room in the events: the task awaiting `close()` may be the one
        // that reads them.
        self.state.send_replace(state.clone());
        let _ = self.events.try_send(Event::State(state));
        // Requests that arrive from now on fail too.
        self.commands.close();
        while let Ok(command) = self.commands.try_recv() {
            match command {
                Command::Close { reply } => {
                    let _ = reply.send(());
                }
                Command::Join { reply, .. }
                | Command::Leave { reply, .. }
                | Command::Send { reply, .. }
                | Command::Read { reply, .. } => self.answer(reply, Err(error.clone())),
            }
        }
        if let Some(reply) = self.closing.take() {
            let _ = reply.send(());
        }
    }

    fn answer(&self, reply: ReplyTx, result: Result<Reply, Error>) {
        self.queued.fetch_sub(1, Ordering::AcqRel);
        let _ = reply.send(result);
    }

    async fn set_state(&mut self, state: State) {
        self.state.send_replace(state.clone());
        self.emit(Event::State(state)).await;
    }

    /// Hand `event` to the application; returns whether that had to wait.
    async fn emit(&self, event: Event) -> bool {
        match self.events.try_send(event) {
            Ok(()) => false,
            Err(mpsc::error::TrySendError::Full(event)) => {
                let _ = self.events.send(event).await;
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    fn fresh_id(&mut self) -> String {
        self.next_id += 1;
        format!("{}-{}", self.id_prefix, self.next_id)
    }

    /// `message` in the connection's wire format.
    fn encode(&self, message: &Value) -> (MessageKind, Vec<u8>) {
        match self.config.format {
            Format::Json => (MessageKind::Text, message.to_string().into_bytes()),
            // A `Value` always encodes (string keys, no foreign types).
            Format::MsgPack => (
                MessageKind::Binary,
                rmp_serde::to_vec_named(message).unwrap_or_default(),
            ),
        }
    }
}

/// Characters escaped in a query value.
const QUERY_VALUE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// A server message: JSON text or MessagePack.
fn decode(bytes: &[u8]) -> Option<Value> {
    match bytes.first() {
        Some(b'{') => serde_json::from_slice(bytes).ok(),
        Some(_) => rmp_serde::from_slice(bytes).ok(),
        None => None,
    }
}

/// An id as text (the server echoes ids as sent: ours are strings).
fn id_text(id: Option<&Value>) -> Option<String> {
    match id? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn members(value: Option<&Value>) -> Vec<Member> {
    value
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .map(|m| Member {
                    user_id: m
                        .get("userId")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned(),
                    user: m.get("user").and_then(Value::as_str).map(str::to_owned),
                    connections: m.get("connections").and_then(Value::as_u64).unwrap_or(0),
                })
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_decode_from_json_and_msgpack() {
        let v = json!({"type": "joined", "room": "a", "offset": 3});
        assert_eq!(decode(v.to_string().as_bytes()), Some(v.clone()));
        let packed = rmp_serde::to_vec_named(&v).expect("encode");
        assert_eq!(decode(&packed), Some(v));
        assert_eq!(decode(b""), None);
        assert_eq!(decode(b"{not json"), None);
    }
}
