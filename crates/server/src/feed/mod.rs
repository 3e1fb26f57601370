//! What the two HTTP feeds share — Server-Sent Events on `GET /events` ([`crate::sse`]) and
//! long polling on `GET /poll` ([`crate::poll`]): a session of the core subscribed to many
//! rooms, the client's position in each as one short cursor ([`cursor`], moved by
//! [`RoomPositions`]), and the messages that are not room messages (`connected`, `reset`,
//! `disconnect`), the same JSON on both.

pub(crate) mod cursor;
mod positions;

use std::sync::Arc;

use http::StatusCode;
use switchboard_hub::{Body as DeliveryBody, Delivery, Offset, RoomName};
use switchboard_native_proto::{ClientMessage, Incoming, ServerMessage, Since};
use switchboard_session::{CloseReason, Note, Session, Sink};

use crate::api::{answer, bad_request, ApiError};
use crate::metrics::Metrics;
use crate::state::AppState;
use cursor::{epoch_tag, Position};
pub(crate) use positions::RoomPositions;

/// At most this many rooms per feed.
pub(crate) const MAX_CHANNELS: usize = 100;

/// The session of a feed (anonymous until authentication lands).
pub(crate) type FeedSession = Session<Arc<Metrics>>;

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
        .await?
        .map_err(crate::api::unavailable)?;
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

/// Join `session` to each room (from `since`, when given); returns the replies that came at
/// once (`joined` with the memory store; a networked store's come later, through the outbox).
pub(crate) fn join_all(
    session: &mut FeedSession,
    rooms: &[RoomName],
    since: Vec<Option<Since>>,
) -> Vec<ServerMessage> {
    let mut replies = Vec::new();
    for (room, since) in rooms.iter().zip(since) {
        let join = Incoming {
            message: ClientMessage::Join {
                room: room.clone(),
                since,
                user: None,
            },
            id: None,
        };
        session.handle(join, &mut Collect(&mut replies));
    }
    replies
}

/// The first message of a feed: who the client is and which rooms it gets.
pub(crate) fn connected_message(session: &FeedSession, rooms: &[RoomName]) -> serde_json::Value {
    serde_json::json!({
        "type": "connected",
        "connectionId": session.connection_id().to_string(),
        "userId": &*session.user().0,
        "channels": rooms.iter().map(RoomName::as_str).collect::<Vec<_>>(),
    })
}

/// Rooms whose history no longer covers the client's gap: it reloads their state; the feed
/// goes on from their current offsets.
pub(crate) fn reset_message(rooms: &[RoomName]) -> serde_json::Value {
    serde_json::json!({
        "type": "reset",
        "channels": rooms.iter().map(RoomName::as_str).collect::<Vec<_>>(),
        "reason": "history no longer covers the gap",
    })
}

/// The server ends the feed, and why (the WebSocket close code it corresponds to).
pub(crate) fn disconnect_message(code: u16, reason: &str) -> serde_json::Value {
    serde_json::json!({"type": "disconnect", "code": code, "reason": reason})
}

/// New feeds are refused once shutdown began (503): clients retry elsewhere.
pub(crate) fn refuse_if_shutting_down(state: &AppState) -> Result<(), ApiError> {
    if state.shutdown.is_cancelled() {
        return Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting down".into(),
        ));
    }
    Ok(())
}

/// One item of a feed's output, in the order the client must get them.
pub(crate) enum Output {
    /// A reply of the session (at once, or late from the store: `joined` included).
    Reply(ServerMessage),
    /// A room's message or presence change.
    Delivery(Arc<Delivery>),
    /// The session must end (after what came before).
    Closed(CloseReason),
}

/// What the hub queued for `session`, in order: replies, then deliveries; or the end of the
/// session. A `lagged` notice is counted in the metrics.
pub(crate) fn drain(session: &FeedSession) -> Vec<Output> {
    let mut batch = Vec::new();
    let mut sink = DrainSink::default();
    session.drain(&mut batch, &mut sink);
    let mut out: Vec<Output> = sink.sent.into_iter().map(Output::Reply).collect();
    if let Some(reason) = sink.closed {
        out.push(Output::Closed(reason));
        return out;
    }
    let metrics = &session.shared().transport;
    if sink.lagged {
        metrics.lagged.inc();
    }
    // At most one clock read per drain: every delivery in it is handed over now.
    let mut now = None;
    let mut delivered = 0;
    for delivery in batch {
        if let DeliveryBody::Reply(message) = delivery.body() {
            out.push(Output::Reply(message.clone()));
            continue;
        }
        if Metrics::sample_latency(delivery.offset().map(|o| o.0)) {
            let now = *now.get_or_insert_with(std::time::Instant::now);
            metrics
                .delivery_latency
                .observe(now.saturating_duration_since(delivery.created()));
        }
        delivered += 1;
        out.push(Output::Delivery(delivery));
    }
    metrics.messages_out.add(delivered);
    out
}

/// Collects the session's replies while a feed opens.
struct Collect<'a>(&'a mut Vec<ServerMessage>);

impl Sink for Collect<'_> {
    fn send(&mut self, message: ServerMessage) {
        self.0.push(message);
    }
    fn close(&mut self, _reason: CloseReason) {}
}

/// The session's output during a drain.
#[derive(Default)]
pub(crate) struct DrainSink {
    sent: Vec<ServerMessage>,
    pub(crate) closed: Option<CloseReason>,
    lagged: bool,
}

impl Sink for DrainSink {
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
