//! Server-Sent Events on `GET /events` (SPEC §1.2): one stream subscribed to many rooms, on
//! the session core like every transport. The stream's position in each room travels as the
//! event id ([`cursor`]), so a browser's own reconnect (`Last-Event-ID`) replays exactly what
//! it missed in every room, or says `event: reset` for the rooms whose history no longer
//! covers the gap.
//!
//! The body is a hand-written [`HttpBody`]: hyper polls it only when the client can take
//! more, so a stalled reader leaves deliveries in its outbox, where the outbox budget and the
//! room's overflow policy bound them exactly as on WebSocket.

pub(crate) mod cursor;
mod frame;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::{Body, HttpBody};
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use http::{header, HeaderValue, StatusCode};
use hyper::body::Frame;
use switchboard_hub::{Body as DeliveryBody, Delivery, EncodingKey, Epoch, Offset, RoomName};
use switchboard_native_proto::{ClientMessage, Incoming, ServerMessage, Since, WireFormat};
use switchboard_session::{encode_delivery, CloseReason, Note, Session, Sink};
use tokio_util::sync::WaitForCancellationFutureOwned;

use crate::api::{answer, bad_request, ApiError, ApiQuery};
use crate::metrics::Metrics;
use crate::state::{AppState, ConnectionGuard, TransportKind};
use cursor::{epoch_tag, Position};

/// At most this many rooms per stream.
const MAX_CHANNELS: usize = 100;

/// The reconnection delay the stream suggests to clients, in milliseconds.
const RETRY_MS: u64 = 2000;

/// A delivery's `event:` + `data:` lines, shared by every stream that sends it (the `id:` is
/// each stream's own).
static SSE_EVENT: LazyLock<EncodingKey<Option<Bytes>>> = LazyLock::new(EncodingKey::new);

#[derive(Debug, serde::Deserialize)]
pub(crate) struct StreamQuery {
    channels: Option<String>,
    channel: Option<String>,
    #[serde(rename = "lastEventId")]
    last_event_id: Option<String>,
}

/// The rooms of a `channels=a,b` (or `channel=a`) query: at least one, each valid, no
/// repeats, at most [`MAX_CHANNELS`].
pub(crate) fn parse_channels(
    channels: Option<&str>,
    channel: Option<&str>,
) -> Result<Vec<RoomName>, ApiError> {
    let list = channels.or(channel).unwrap_or("");
    let mut rooms: Vec<RoomName> = Vec::new();
    for name in list.split(',').filter(|s| !s.is_empty()) {
        if rooms.len() == MAX_CHANNELS {
            return Err(bad_request(format!(
                "at most {MAX_CHANNELS} channels per stream"
            )));
        }
        let room = RoomName::new(name).map_err(|e| bad_request(format!("invalid channel: {e}")))?;
        if !rooms.contains(&room) {
            rooms.push(room);
        }
    }
    if rooms.is_empty() {
        return Err(bad_request(
            "missing \"channels\" (comma-separated room names)",
        ));
    }
    Ok(rooms)
}

/// For each room with a position, the `since` to join with: the position's offset with the
/// room's current epoch when its tag matches (the store checks the gap), else an epoch that
/// matches nothing (history of another epoch: `recovered: false`, a reset).
pub(crate) async fn since_of(
    state: &AppState,
    rooms: &[RoomName],
    positions: &[Option<Position>],
) -> Result<Vec<Option<Since>>, ApiError> {
    let mut out = Vec::with_capacity(rooms.len());
    for (room, position) in rooms.iter().zip(positions) {
        let Some(p) = position else {
            out.push(None);
            continue;
        };
        let page = answer(|done| {
            state
                .hub
                .history(room, Some(Offset(u64::MAX)), Some(0), 0, done)
        })
        .await?;
        let epoch = if epoch_tag(&page.epoch) == p.tag {
            page.epoch.to_string()
        } else {
            String::from("~")
        };
        out.push(Some(Since {
            offset: p.offset.0,
            epoch,
        }));
    }
    Ok(out)
}

/// `GET /events?channels=a,b[&lastEventId=…]`.
pub(crate) async fn events_endpoint(
    State(state): State<Arc<AppState>>,
    ApiQuery(query): ApiQuery<StreamQuery>,
    req: Request,
) -> Result<Response, ApiError> {
    let rooms = parse_channels(query.channels.as_deref(), query.channel.as_deref())?;
    // The browser's reconnect header wins over the page's first-request parameter.
    let last_id = match req.headers().get("last-event-id") {
        Some(v) => v
            .to_str()
            .map_err(|_| bad_request("invalid Last-Event-ID"))?
            .trim()
            .to_owned(),
        None => query.last_event_id.unwrap_or_default(),
    };
    let positions = cursor::decode(&last_id, rooms.len())
        .map_err(|e| bad_request(format!("invalid Last-Event-ID: {e}")))?;
    if state.shutdown.is_cancelled() {
        return Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting down".into(),
        ));
    }
    let ip = crate::ws::peer_addr(&req).map(|a| a.ip());
    let guard = match state.admit(TransportKind::Sse, ip, None) {
        Ok(guard) => guard,
        Err(refusal) => return Ok(refusal.into_response()),
    };
    let since = since_of(&state, &rooms, &positions).await?;
    let stream = SseStream::open(&state, guard, rooms, positions, since);
    let mut response = Response::new(Body::new(stream));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // nginx and other proxies: do not buffer the stream.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// One SSE stream: the session, its rooms and positions, and what is ready to send.
struct SseStream {
    session: Session<Arc<Metrics>>,
    rooms: Box<[RoomName]>,
    /// The client's position in each room (the event id is their encoding).
    positions: Vec<Option<Position>>,
    /// The epoch each position's tag was made from (tags are computed once per epoch).
    epochs: Vec<Option<Epoch>>,
    /// Rooms whose join said the history did not cover the client's gap, not yet announced.
    resets: Vec<RoomName>,
    out: BytesMut,
    heartbeat: Pin<Box<tokio::time::Sleep>>,
    heartbeat_every: std::time::Duration,
    shutdown: Pin<Box<WaitForCancellationFutureOwned>>,
    guard: ConnectionGuard,
    /// Why the stream ends, once it must.
    ended: Option<(u16, &'static str)>,
    finished: bool,
}

impl SseStream {
    fn open(
        state: &Arc<AppState>,
        guard: ConnectionGuard,
        rooms: Vec<RoomName>,
        positions: Vec<Option<Position>>,
        since: Vec<Option<Since>>,
    ) -> SseStream {
        let session = Session::anonymous(state.native.clone(), Instant::now());
        let every = state.config.heartbeat_interval;
        let mut stream = SseStream {
            session,
            epochs: vec![None; rooms.len()],
            rooms: rooms.into_boxed_slice(),
            positions,
            resets: Vec::new(),
            out: BytesMut::new(),
            heartbeat: Box::pin(tokio::time::sleep(every)),
            heartbeat_every: every,
            shutdown: Box::pin(state.shutdown.clone().cancelled_owned()),
            guard,
            ended: None,
            finished: false,
        };
        frame::write_retry(&mut stream.out, RETRY_MS);
        let mut replies = Vec::new();
        for (room, since) in stream.rooms.clone().iter().zip(since) {
            let join = Incoming {
                message: ClientMessage::Join {
                    room: room.clone(),
                    since,
                    user: None,
                },
                id: None,
            };
            stream.session.handle(join, &mut Collect(&mut replies));
        }
        // `joined` replies that came at once set the positions the `connected` event carries.
        for reply in &replies {
            stream.apply_joined(reply);
        }
        let connected = serde_json::json!({
            "type": "connected",
            "connectionId": stream.session.connection_id().to_string(),
            "userId": &*stream.session.user().0,
            "channels": stream.rooms.iter().map(RoomName::as_str).collect::<Vec<_>>(),
        });
        let id = cursor::encode(&stream.positions);
        frame::write_event(
            &mut stream.out,
            Some(&id),
            Some("connected"),
            connected.to_string().as_bytes(),
        );
        stream.write_resets();
        stream
    }

    /// A `joined` reply: a room with no position (or one the history no longer covers)
    /// starts at the joined offset; a covered one keeps the client's (its replay follows).
    /// Returns whether the positions changed.
    fn apply_joined(&mut self, reply: &ServerMessage) -> bool {
        let ServerMessage::Joined {
            room,
            offset,
            epoch,
            recovered,
        } = reply
        else {
            return false;
        };
        let Some(i) = self.rooms.iter().position(|r| r == room) else {
            return false;
        };
        let had_position = self.positions[i].is_some();
        if had_position && *recovered {
            return false;
        }
        if had_position {
            self.resets.push(room.clone());
        }
        let epoch = Epoch::from(epoch.as_str());
        self.positions[i] = Some(Position {
            offset: Offset(*offset),
            tag: epoch_tag(&epoch),
        });
        self.epochs[i] = Some(epoch);
        true
    }

    /// `event: reset` for the rooms whose gap the history no longer covers: the client
    /// reloads their state; the stream continues from the rooms' current offsets.
    fn write_resets(&mut self) {
        if self.resets.is_empty() {
            return;
        }
        let rooms = std::mem::take(&mut self.resets);
        let data = serde_json::json!({
            "type": "reset",
            "channels": rooms.iter().map(RoomName::as_str).collect::<Vec<_>>(),
            "reason": "history no longer covers the gap",
        });
        let id = cursor::encode(&self.positions);
        frame::write_event(
            &mut self.out,
            Some(&id),
            Some("reset"),
            data.to_string().as_bytes(),
        );
    }

    /// Move what the hub queued for this stream into `out`.
    fn drain(&mut self) {
        let mut batch = Vec::new();
        let mut sink = StreamSink::default();
        self.session.drain(&mut batch, &mut sink);
        for message in sink.sent {
            self.write_reply(&message);
        }
        if let Some(reason) = sink.closed {
            self.end_for(reason);
            return;
        }
        if sink.lagged {
            self.session.shared().transport.lagged.inc();
        }
        for delivery in &batch {
            match delivery.body() {
                DeliveryBody::Reply(message) => self.write_reply(message),
                _ => self.write_delivery(delivery),
            }
        }
    }

    fn write_reply(&mut self, message: &ServerMessage) {
        if let ServerMessage::Joined { .. } = message {
            // A late `joined`: move the client's last event id (no event is dispatched).
            if self.apply_joined(message) {
                let id = cursor::encode(&self.positions);
                frame::write_event(&mut self.out, Some(&id), None, b"");
            }
            self.write_resets();
            return;
        }
        // Never `event: error`: EventSource dispatches that name to its connection-error
        // handlers.
        let kind = match message.kind() {
            "error" => "server_error",
            kind => kind,
        };
        frame::write_event(&mut self.out, None, Some(kind), &message.to_json());
    }

    fn write_delivery(&mut self, delivery: &Delivery) {
        let Some(shared) = delivery
            .encoding(&SSE_EVENT, |d| {
                encode_delivery(WireFormat::Json, d).map(|json| frame::shared_part(d.kind(), &json))
            })
            .clone()
        else {
            return;
        };
        if let (Some(offset), Some(epoch)) = (delivery.offset(), delivery.epoch()) {
            if let Some(i) = self.rooms.iter().position(|r| r == delivery.room()) {
                let tag = match &self.epochs[i] {
                    Some(e) if e == epoch => {
                        self.positions[i].map_or_else(|| epoch_tag(epoch), |p| p.tag)
                    }
                    _ => {
                        self.epochs[i] = Some(epoch.clone());
                        epoch_tag(epoch)
                    }
                };
                self.positions[i] = Some(Position { offset, tag });
                let id = cursor::encode(&self.positions);
                self.out.extend_from_slice(b"id: ");
                self.out.extend_from_slice(id.as_bytes());
                self.out.extend_from_slice(b"\n");
            }
        }
        self.out.extend_from_slice(&shared);
        self.out.extend_from_slice(b"\n");
    }

    /// End the stream for `reason`, telling the client why first (`event: disconnect`: an
    /// event named `error` would reach EventSource's connection-error handlers).
    fn end_for(&mut self, reason: CloseReason) {
        let data = serde_json::json!({
            "type": "disconnect", "code": reason.code(), "reason": reason.text(),
        });
        frame::write_event(
            &mut self.out,
            None,
            Some("disconnect"),
            data.to_string().as_bytes(),
        );
        if reason == CloseReason::BufferOverflow {
            self.session.shared().transport.overflow_closes.inc();
        }
        self.ended = Some((reason.code(), reason.text()));
    }
}

impl HttpBody for SseStream {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        loop {
            if !this.out.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(this.out.split().freeze()))));
            }
            if let Some((code, reason)) = this.ended {
                if !this.finished {
                    this.finished = true;
                    this.guard.count_disconnect(code, reason);
                }
                return Poll::Ready(None);
            }
            if this.shutdown.as_mut().poll(cx).is_ready() {
                // Clients reconnect elsewhere (EventSource does by itself), with their
                // Last-Event-ID: nothing is lost.
                this.ended = Some((1001, "Server shutting down"));
                continue;
            }
            if this.session.poll_outbound(cx).is_ready() {
                this.drain();
                continue;
            }
            if this.heartbeat.as_mut().poll(cx).is_ready() {
                frame::write_comment(&mut this.out, "heartbeat");
                let next = tokio::time::Instant::now() + this.heartbeat_every;
                this.heartbeat.as_mut().reset(next);
                continue;
            }
            return Poll::Pending;
        }
    }
}

impl Drop for SseStream {
    fn drop(&mut self) {
        if !self.finished {
            // The client went away (or the server dropped the response).
            self.guard.count_disconnect(1006, "Connection lost");
        }
    }
}

/// Collects the session's replies while the stream opens.
struct Collect<'a>(&'a mut Vec<ServerMessage>);

impl Sink for Collect<'_> {
    fn send(&mut self, message: ServerMessage) {
        self.0.push(message);
    }
    fn close(&mut self, _reason: CloseReason) {}
}

/// The session's output during a drain.
#[derive(Default)]
struct StreamSink {
    sent: Vec<ServerMessage>,
    closed: Option<CloseReason>,
    lagged: bool,
}

impl Sink for StreamSink {
    fn send(&mut self, message: ServerMessage) {
        self.sent.push(message);
    }
    fn close(&mut self, reason: CloseReason) {
        self.closed.get_or_insert(reason);
    }
    fn note(&mut self, note: Note) {
        if note == Note::Lagged {
            self.lagged = true;
        }
    }
}
