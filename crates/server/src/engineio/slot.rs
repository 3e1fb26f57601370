//! A session that HTTP requests reach by its sid (one opened by a polling handshake): the
//! engine behind a lock, with the answers waiting for the requests and the WebSocket that
//! carry them.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};
use std::task::Waker;
use std::time::Instant;

use bytes::Bytes;
use switchboard_engineio_proto::{PollId, Transmit, WsFrame, WsId};

use super::app::{App, Engine};
use crate::state::ConnectionGuard;

/// The shared session (see the module doc).
pub(crate) struct Slot<A> {
    inner: Mutex<Shared<A>>,
}

/// What a WebSocket of the session is to write.
#[derive(Debug)]
pub(crate) enum WsOut {
    Frame(WsId, WsFrame),
    Close(WsId),
}

pub(crate) struct Shared<A> {
    pub(crate) engine: Engine<A>,
    /// The answer to the held GET, once the session gave it.
    pub(crate) answer: Option<(PollId, Bytes)>,
    /// The held GET's waker.
    pub(crate) get_waker: Option<Waker>,
    /// Frames and closes for the session's WebSocket (an upgrading or upgraded one).
    pub(crate) ws_out: VecDeque<WsOut>,
    /// The WebSocket driver's waker (while it waits for `ws_out` or the application).
    pub(crate) ws_waker: Option<Waker>,
    /// The deadline the endpoint's timer holds for this session (see `Timers`).
    pub(crate) armed: Option<Instant>,
    /// The session's admission (connection limits and gauges), released with it.
    pub(crate) _guard: Option<ConnectionGuard>,
}

impl<A: App> Slot<A> {
    pub(crate) fn new(engine: Engine<A>, guard: ConnectionGuard) -> Slot<A> {
        Slot {
            inner: Mutex::new(Shared {
                engine,
                answer: None,
                get_waker: None,
                ws_out: VecDeque::new(),
                ws_waker: None,
                armed: None,
                _guard: Some(guard),
            }),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Shared<A>> {
        // Every update leaves the state consistent; a poisoned lock's data is still good.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<A: App> Shared<A> {
    /// Move what the session wants written to where its requests and WebSocket take it,
    /// and wake them.
    pub(crate) fn route(&mut self) {
        let mut wake_get = false;
        let mut wake_ws = false;
        while let Some(transmit) = self.engine.session.poll_transmit() {
            match transmit {
                Transmit::Poll { id, body } => {
                    self.answer = Some((id, body));
                    wake_get = true;
                }
                Transmit::Ws { ws, frame } => {
                    self.ws_out.push_back(WsOut::Frame(ws, frame));
                    wake_ws = true;
                }
                Transmit::CloseWs { ws } => {
                    self.ws_out.push_back(WsOut::Close(ws));
                    wake_ws = true;
                }
            }
        }
        if wake_get {
            if let Some(waker) = self.get_waker.take() {
                waker.wake();
            }
        }
        if wake_ws {
            if let Some(waker) = self.ws_waker.take() {
                waker.wake();
            }
        }
    }

    /// Whether the session is closed (the endpoint forgets it).
    pub(crate) fn is_closed(&self) -> bool {
        self.engine.session.is_closed()
    }
}
