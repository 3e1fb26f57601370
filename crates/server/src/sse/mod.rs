//! Server-Sent Events on `GET /events` (SPEC §1.2): one stream subscribed to many rooms, on
//! the session core like every transport. The stream's position in each room travels as the
//! event id ([`cursor`]), so a browser's own reconnect (`Last-Event-ID`) replays exactly what
//! it missed in every room, or says `event: reset` for the rooms whose history no longer
//! covers the gap.
//!
//! The body is a hand-written [`HttpBody`]: hyper polls it only when the client can take
//! more, so a stalled reader leaves deliveries in its outbox, where the outbox budget and the
//! room's overflow policy bound them exactly as on WebSocket.

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
use http::{header, HeaderValue};
use hyper::body::Frame;
use switchboard_hub::{Delivery, EncodingKey, RoomName};
use switchboard_native_proto::{ServerMessage, Since, WireFormat};
use switchboard_session::{encode_delivery, CloseReason, Session};
use tokio_util::sync::WaitForCancellationFutureOwned;

use crate::api::{bad_request, ApiError, ApiQuery};
use crate::feed::cursor::{self, Position};
use crate::feed::{self, FeedSession, Output, RoomPositions};
use crate::state::{AppState, ConnectionGuard, TransportKind};

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

/// `GET /events?channels=a,b[&lastEventId=…]`.
pub(crate) async fn events_endpoint(
    State(state): State<Arc<AppState>>,
    ApiQuery(query): ApiQuery<StreamQuery>,
    req: Request,
) -> Result<Response, ApiError> {
    let rooms = feed::parse_channels(query.channels.as_deref(), query.channel.as_deref())?;
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
    feed::refuse_if_shutting_down(&state)?;
    let ip = crate::ws::peer_addr(&req).map(|a| a.ip());
    let guard = match state.admit(TransportKind::Sse, ip, None) {
        Ok(guard) => guard,
        Err(refusal) => return Ok(refusal.into_response()),
    };
    let since = feed::since_of(&state, &rooms, &positions).await?;
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
    session: FeedSession,
    feed: RoomPositions,
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
        let mut session = Session::anonymous(state.native.clone(), Instant::now());
        let replies = feed::join_all(&mut session, &rooms, since);
        let every = state.config.heartbeat_interval;
        let mut stream = SseStream {
            session,
            feed: RoomPositions::new(rooms, positions),
            out: BytesMut::new(),
            heartbeat: Box::pin(tokio::time::sleep(every)),
            heartbeat_every: every,
            shutdown: Box::pin(state.shutdown.clone().cancelled_owned()),
            guard,
            ended: None,
            finished: false,
        };
        frame::write_retry(&mut stream.out, RETRY_MS);
        // `joined` replies that came at once set the positions the `connected` event carries.
        for reply in &replies {
            stream.feed.apply_joined(reply);
        }
        let connected = feed::connected_message(&stream.session, stream.feed.rooms());
        let id = stream.feed.cursor();
        frame::write_event(
            &mut stream.out,
            Some(&id),
            Some("connected"),
            connected.to_string().as_bytes(),
        );
        stream.write_resets();
        stream
    }

    /// `event: reset` for the rooms whose gap the history no longer covers: the client
    /// reloads their state; the stream continues from the rooms' current offsets.
    fn write_resets(&mut self) {
        let rooms = self.feed.take_resets();
        if rooms.is_empty() {
            return;
        }
        let id = self.feed.cursor();
        frame::write_event(
            &mut self.out,
            Some(&id),
            Some("reset"),
            feed::reset_message(&rooms).to_string().as_bytes(),
        );
    }

    /// Move what the hub queued for this stream into `out`.
    fn drain(&mut self) {
        for output in feed::drain(&self.session) {
            match output {
                Output::Reply(message) => self.write_reply(&message),
                Output::Delivery(delivery) => self.write_delivery(&delivery),
                Output::Closed(reason) => self.end_for(reason),
            }
        }
    }

    fn write_reply(&mut self, message: &ServerMessage) {
        if let ServerMessage::Joined { .. } = message {
            // A late `joined`: move the client's last event id (no event is dispatched).
            if self.feed.apply_joined(message) {
                let id = self.feed.cursor();
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
            .as_ref()
        else {
            return;
        };
        // Written from the shared bytes (no per-stream clone: an atomic pair per recipient).
        if self.feed.advance(delivery) {
            let id = self.feed.cursor();
            self.out.extend_from_slice(b"id: ");
            self.out.extend_from_slice(id.as_bytes());
            self.out.extend_from_slice(b"\n");
        }
        self.out.extend_from_slice(shared);
        self.out.extend_from_slice(b"\n");
    }

    /// End the stream for `reason`, telling the client why first (`event: disconnect`: an
    /// event named `error` would reach EventSource's connection-error handlers).
    fn end_for(&mut self, reason: CloseReason) {
        let data = feed::disconnect_message(reason.code(), reason.text());
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
                let chunk = this.out.split().freeze();
                this.session
                    .shared()
                    .transport
                    .bytes_out
                    .add(chunk.len() as u64);
                return Poll::Ready(Some(Ok(Frame::data(chunk))));
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
