//! The Socket.IO state of one connection: namespaces, the connect timeout, ack ids.
//!
//! Sans-IO: no clock and no timers. The caller passes `now`, asks [`SocketState::poll_timeout`]
//! for the next deadline, calls [`SocketState::handle_timeout`] when it passes and drains
//! [`SocketState::poll_event`].

use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use crate::args::Args;
use crate::namespace::{AckId, Namespace};
use crate::packet::{EventName, Packet, PacketType};
use crate::reply::{self, ConnectErrorReason};

/// Settings of [`SocketState`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateConfig {
    /// How long a new connection may stay without any namespace connected (Socket.IO's
    /// `connectTimeout`). Default 45 s. Bounds connections that never speak Socket.IO.
    pub connect_timeout: Duration,
    /// Most namespaces connected (or connecting) at once on one connection. Default 32.
    /// Bounds the per-connection state a client can make the server keep.
    pub max_namespaces: usize,
    /// Most server → client emits waiting for their ack. Default 256. Bounds the bookkeeping
    /// of a client that never answers.
    pub max_pending_acks: usize,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            connect_timeout: Duration::from_secs(45),
            max_namespaces: 32,
            max_pending_acks: 256,
        }
    }
}

/// What a client packet asks of the server.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// A `CONNECT`: check the namespace and the credentials, then answer with
    /// [`SocketState::accept_connect`] or [`SocketState::reject_connect`] (possibly later,
    /// after an asynchronous auth check).
    Connect {
        /// The namespace.
        nsp: Namespace,
        /// The auth payload (`socket.handshake.auth`), if any.
        auth: Option<Map<String, Value>>,
    },
    /// An event on a connected namespace. When `ack` is set, answer with
    /// [`Packet::Ack`] carrying that id.
    Event {
        /// The namespace.
        nsp: Namespace,
        /// The event name.
        name: EventName,
        /// The arguments.
        args: Args,
        /// The ack id the client waits on.
        ack: Option<AckId>,
    },
    /// The client's answer to one of our emits (its pending entry is removed).
    Ack {
        /// The namespace.
        nsp: Namespace,
        /// The id [`SocketState::next_ack_id`] gave.
        id: AckId,
        /// The answer.
        args: Args,
    },
    /// The client left a namespace (its pending acks are cancelled, see
    /// [`StateEvent::AckCancelled`]).
    Disconnect {
        /// The namespace.
        nsp: Namespace,
    },
}

/// Something a deadline or a namespace leaving caused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateEvent {
    /// No namespace was connected within `connect_timeout`: close the connection.
    ConnectTimeout,
    /// An emit's ack did not come before its deadline.
    AckTimeout {
        /// The namespace.
        nsp: Namespace,
        /// The emit's ack id.
        id: AckId,
    },
    /// An emit's ack will never come: its namespace was left.
    AckCancelled {
        /// The namespace.
        nsp: Namespace,
        /// The emit's ack id.
        id: AckId,
    },
}

/// A client packet that is not allowed in the connection's state (the reference server closes
/// the connection), or a local misuse or limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// Peer: a packet for a namespace that is not connected.
    #[error("namespace {0} is not connected")]
    NotConnected(Namespace),
    /// Peer: a `CONNECT` for a namespace already connected or connecting.
    #[error("namespace {0} is already connected")]
    AlreadyConnected(Namespace),
    /// Peer: a packet type a client does not send (`CONNECT_ERROR`).
    #[error("unexpected {0:?} packet from the client")]
    UnexpectedPacket(PacketType),
    /// Peer/limit: more namespaces than `max_namespaces`.
    #[error("more than {limit} namespaces")]
    TooManyNamespaces {
        /// The configured limit.
        limit: usize,
    },
    /// Limit: more emits waiting for an ack than `max_pending_acks`; the emit's ack fails.
    #[error("more than {limit} acks pending")]
    TooManyPendingAcks {
        /// The configured limit.
        limit: usize,
    },
    /// Local misuse: accepting or refusing a namespace that has no `CONNECT` waiting.
    #[error("no CONNECT waiting for namespace {0}")]
    NotConnecting(Namespace),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Connecting,
    Connected,
}

#[derive(Debug)]
struct PendingAck {
    id: AckId,
    nsp: Namespace,
    deadline: Option<Instant>,
}

/// The Socket.IO state of one connection.
///
/// Call order:
/// 1. [`SocketState::new`] when the Engine.IO session opens.
/// 2. For every decoded packet, [`SocketState::handle_packet`]; act on the [`Incoming`]
///    (an error closes the connection).
/// 3. For a [`Incoming::Connect`], [`SocketState::accept_connect`] or
///    [`SocketState::reject_connect`], and send the text they return.
/// 4. To emit with an ack, [`SocketState::next_ack_id`], then send a [`Packet::Event`] with it.
/// 5. Wake at [`SocketState::poll_timeout`], call [`SocketState::handle_timeout`], and drain
///    [`SocketState::poll_event`] (also after steps 2 and 6).
/// 6. [`SocketState::disconnect`] to close a namespace from the server side.
#[derive(Debug)]
pub struct SocketState {
    /// The limits of [`StateConfig`], compact (the timeout is used once, at `new`): this is
    /// the state of every idle connection, paid per byte.
    limits: Limits,
    connect_deadline: Option<Instant>,
    namespaces: Vec<(Namespace, Phase)>,
    next_ack: u64,
    /// Sorted by id (ids are handed out in increasing order). `Vec`s, not `VecDeque`s: 8
    /// bytes fewer each in every idle connection; both are short (≤ `max_pending_acks`, and
    /// events are rare).
    pending: Vec<PendingAck>,
    events: Vec<StateEvent>,
}

/// [`StateConfig`]'s limits, saturated to 32 bits.
#[derive(Debug, Clone, Copy)]
struct Limits {
    max_namespaces: u32,
    max_pending_acks: u32,
}

impl SocketState {
    /// The state of a connection opened at `now`.
    pub fn new(config: StateConfig, now: Instant) -> SocketState {
        let saturate = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        SocketState {
            limits: Limits {
                max_namespaces: saturate(config.max_namespaces),
                max_pending_acks: saturate(config.max_pending_acks),
            },
            connect_deadline: Some(now + config.connect_timeout),
            namespaces: Vec::new(),
            next_ack: 0,
            pending: Vec::new(),
            events: Vec::new(),
        }
    }

    /// Give back the memory of empty queues (before the connection idles).
    pub fn release_idle_memory(&mut self) {
        if self.pending.is_empty() {
            self.pending = Vec::new();
        }
        if self.events.is_empty() {
            self.events = Vec::new();
        }
        self.namespaces.shrink_to_fit();
    }

    /// Whether `nsp` is connected.
    pub fn is_connected(&self, nsp: &Namespace) -> bool {
        self.phase(nsp) == Some(Phase::Connected)
    }

    /// The connected namespaces.
    pub fn connected(&self) -> impl Iterator<Item = &Namespace> {
        self.namespaces
            .iter()
            .filter(|(_, phase)| *phase == Phase::Connected)
            .map(|(nsp, _)| nsp)
    }

    /// Number of emits waiting for an ack.
    pub fn pending_acks(&self) -> usize {
        self.pending.len()
    }

    fn phase(&self, nsp: &Namespace) -> Option<Phase> {
        self.namespaces
            .iter()
            .find(|(n, _)| n == nsp)
            .map(|(_, phase)| *phase)
    }

    fn require_connected(&self, nsp: &Namespace) -> Result<(), StateError> {
        match self.phase(nsp) {
            Some(Phase::Connected) => Ok(()),
            _ => Err(StateError::NotConnected(nsp.clone())),
        }
    }

    fn remove(&mut self, nsp: &Namespace) {
        self.namespaces.retain(|(n, _)| n != nsp);
        let events = &mut self.events;
        self.pending.retain(|p| {
            if &p.nsp == nsp {
                events.push(StateEvent::AckCancelled {
                    nsp: p.nsp.clone(),
                    id: p.id,
                });
                false
            } else {
                true
            }
        });
    }

    /// Take a decoded client packet.
    ///
    /// `Ok(None)` for packets that need nothing: an ack whose id is not pending (late, after
    /// its timeout, or unknown; the reference server ignores those too).
    pub fn handle_packet(&mut self, packet: Packet) -> Result<Option<Incoming>, StateError> {
        match packet {
            Packet::Connect { nsp, data } => {
                if self.phase(&nsp).is_some() {
                    return Err(StateError::AlreadyConnected(nsp));
                }
                if self.namespaces.len() >= self.limits.max_namespaces as usize {
                    return Err(StateError::TooManyNamespaces {
                        limit: self.limits.max_namespaces as usize,
                    });
                }
                self.namespaces.push((nsp.clone(), Phase::Connecting));
                Ok(Some(Incoming::Connect { nsp, auth: data }))
            }
            Packet::Event {
                nsp,
                name,
                args,
                ack,
            } => {
                self.require_connected(&nsp)?;
                Ok(Some(Incoming::Event {
                    nsp,
                    name,
                    args,
                    ack,
                }))
            }
            Packet::Ack { nsp, id, args } => {
                self.require_connected(&nsp)?;
                let Ok(index) = self.pending.binary_search_by_key(&id, |p| p.id) else {
                    return Ok(None);
                };
                if self.pending[index].nsp != nsp {
                    return Ok(None);
                }
                self.pending.remove(index);
                Ok(Some(Incoming::Ack { nsp, id, args }))
            }
            Packet::Disconnect { nsp } => {
                if self.phase(&nsp).is_none() {
                    return Err(StateError::NotConnected(nsp));
                }
                self.remove(&nsp);
                Ok(Some(Incoming::Disconnect { nsp }))
            }
            Packet::ConnectError { .. } => {
                Err(StateError::UnexpectedPacket(PacketType::ConnectError))
            }
        }
    }

    /// Accept a waiting `CONNECT`: the namespace is connected, the connect timeout no longer
    /// applies, and the returned text is the reply to send (`0{"sid":…}`, with `"pid"` when
    /// recovery is on; see [`crate::connect_ok`]).
    pub fn accept_connect(
        &mut self,
        nsp: &Namespace,
        sid: &str,
        pid: Option<&str>,
    ) -> Result<String, StateError> {
        let entry = self
            .namespaces
            .iter_mut()
            .find(|(n, phase)| n == nsp && *phase == Phase::Connecting)
            .ok_or_else(|| StateError::NotConnecting(nsp.clone()))?;
        entry.1 = Phase::Connected;
        self.connect_deadline = None;
        Ok(reply::connect_ok(nsp, sid, pid))
    }

    /// Refuse a waiting `CONNECT`; the returned text is the `CONNECT_ERROR` to send. The
    /// connection stays open (the client may try another namespace) and the connect timeout
    /// still runs if no namespace is connected.
    pub fn reject_connect(
        &mut self,
        nsp: &Namespace,
        reason: &ConnectErrorReason,
        data: Option<&Value>,
    ) -> Result<String, StateError> {
        if self.phase(nsp) != Some(Phase::Connecting) {
            return Err(StateError::NotConnecting(nsp.clone()));
        }
        self.namespaces.retain(|(n, _)| n != nsp);
        Ok(reply::connect_error(nsp, reason, data))
    }

    /// Close a namespace from the server side: the returned `DISCONNECT` text is to be sent
    /// (`None` if it was not connected). Its pending acks are cancelled.
    pub fn disconnect(&mut self, nsp: &Namespace) -> Option<String> {
        if self.phase(nsp) != Some(Phase::Connected) {
            return None;
        }
        self.remove(nsp);
        Some(reply::disconnect(nsp))
    }

    /// An ack id for an emit on `nsp` that wants an answer, registered as pending until the
    /// client's `ACK` (an [`Incoming::Ack`]), the `deadline` ([`StateEvent::AckTimeout`]) or
    /// the namespace's end ([`StateEvent::AckCancelled`]). Ids increase monotonically over
    /// the connection, starting at 0.
    pub fn next_ack_id(
        &mut self,
        nsp: &Namespace,
        deadline: Option<Instant>,
    ) -> Result<AckId, StateError> {
        self.require_connected(nsp)?;
        if self.pending.len() >= self.limits.max_pending_acks as usize {
            return Err(StateError::TooManyPendingAcks {
                limit: self.limits.max_pending_acks as usize,
            });
        }
        let id = AckId(self.next_ack);
        self.next_ack += 1;
        self.pending.push(PendingAck {
            id,
            nsp: nsp.clone(),
            deadline,
        });
        Ok(id)
    }

    /// The next deadline: the connect timeout or an ack's.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.pending
            .iter()
            .filter_map(|p| p.deadline)
            .chain(self.connect_deadline)
            .min()
    }

    /// Act on the deadlines that passed by `now`; the results come from
    /// [`SocketState::poll_event`].
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.connect_deadline.is_some_and(|d| d <= now) {
            self.connect_deadline = None;
            if self.connected().next().is_none() {
                self.events.push(StateEvent::ConnectTimeout);
            }
        }
        let events = &mut self.events;
        self.pending.retain(|p| {
            if p.deadline.is_some_and(|d| d <= now) {
                events.push(StateEvent::AckTimeout {
                    nsp: p.nsp.clone(),
                    id: p.id,
                });
                false
            } else {
                true
            }
        });
    }

    /// The next event caused by a deadline or a namespace's end.
    pub fn poll_event(&mut self) -> Option<StateEvent> {
        (!self.events.is_empty()).then(|| self.events.remove(0))
    }
}
