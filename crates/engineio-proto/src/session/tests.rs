//! Transcript tests: a client drives a session with exact bytes; every transmit, event and
//! refusal is checked.

use std::time::Duration;

use super::*;

const MS: Duration = Duration::from_millis(1);
/// The test suite's settings (engine.io-protocol's test-suite: 300 / 200 ms).
fn config() -> Config {
    Config {
        ping_interval: 300 * MS,
        ping_timeout: 200 * MS,
        upgrade_timeout: 1000 * MS,
        close_timeout: 2000 * MS,
        ..Config::default()
    }
}

struct Client {
    s: Session,
    t0: Instant,
}

fn text(s: &str) -> WsFrame {
    WsFrame::Text(Str::from(s))
}

fn poll(id: PollId, body: &str) -> Transmit {
    Transmit::Poll {
        id,
        body: Bytes::copy_from_slice(body.as_bytes()),
    }
}

fn ws_text(ws: WsId, s: &str) -> Transmit {
    Transmit::Ws { ws, frame: text(s) }
}

fn msg(s: &str) -> Event {
    Event::Message(Message::Text(Str::from(s)))
}

impl Client {
    /// A polling session; checks the handshake answer.
    fn polling() -> Client {
        Client::polling_with(config())
    }

    fn polling_with(config: Config) -> Client {
        let t0 = Instant::now();
        let (s, open) = Session::polling(Sid::new("SID").unwrap(), config, t0);
        assert!(open.starts_with(b"0{\"sid\":\"SID\""));
        Client { s, t0 }
    }

    /// A WebSocket session; returns its WebSocket.
    fn websocket() -> (Client, WsId) {
        let t0 = Instant::now();
        let (s, ws) = Session::websocket(Sid::new("SID").unwrap(), config(), t0);
        let mut c = Client { s, t0 };
        assert_eq!(
            c.transmits(),
            vec![ws_text(
                ws,
                r#"0{"sid":"SID","upgrades":[],"pingInterval":300,"pingTimeout":200,"maxPayload":1000000}"#
            )]
        );
        (c, ws)
    }

    fn at(&self, ms: u64) -> Instant {
        self.t0 + Duration::from_millis(ms)
    }

    fn transmits(&mut self) -> Vec<Transmit> {
        std::iter::from_fn(|| self.s.poll_transmit()).collect()
    }

    fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.s.poll_event()).collect()
    }

    fn get(&mut self, ms: u64) -> Result<GetOutcome, RequestError> {
        let now = self.at(ms);
        self.s.handle_get(now)
    }

    /// A GET that must be held.
    fn held_get(&mut self, ms: u64) -> PollId {
        match self.get(ms) {
            Ok(GetOutcome::Wait(id)) => id,
            other => panic!("expected a held GET, got {other:?}"),
        }
    }

    /// A GET that must be answered at once with `body`.
    fn get_now(&mut self, ms: u64, body: &str) {
        assert_eq!(
            self.get(ms),
            Ok(GetOutcome::Respond(Bytes::copy_from_slice(body.as_bytes())))
        );
    }

    fn post(&mut self, ms: u64, body: &str) -> Result<(), RequestError> {
        let now = self.at(ms);
        let id = self.s.handle_post_start(now)?;
        self.s
            .handle_post(id, Bytes::copy_from_slice(body.as_bytes()), false, now)
    }

    fn ws(&mut self, ws: WsId, ms: u64, frame: WsFrame) {
        let now = self.at(ms);
        self.s.handle_ws_message(ws, frame, now);
    }

    fn tick(&mut self, ms: u64) {
        let now = self.at(ms);
        self.s.on_deadline(now);
    }

    fn send(&mut self, s: &str) {
        self.s.send(Message::Text(Str::from(s))).unwrap();
    }

    /// Open a WebSocket for an upgrade and probe it.
    fn probe(&mut self, ms: u64) -> WsId {
        let ws = self.s.handle_ws_open(self.at(ms)).unwrap();
        assert_eq!(self.s.transport_state(), TransportState::Upgrading);
        self.ws(ws, ms, text("2probe"));
        assert_eq!(self.transmits().first(), Some(&ws_text(ws, "3probe")));
        ws
    }

    fn assert_closed(&mut self, reason: CloseReason) {
        assert!(self.s.is_closed());
        assert_eq!(self.s.close_reason(), Some(reason));
        // The last event is the close (unless the test drained the events already).
        if let Some(last) = self.events().last() {
            assert_eq!(last, &Event::Closed(reason));
        }
        assert_eq!(self.s.next_deadline(), None);
        // Every later request is for an unknown session.
        assert_eq!(self.get(10_000), Err(RequestError::UnknownSid));
        assert_eq!(self.post(10_000, "4x"), Err(RequestError::UnknownSid));
        assert_eq!(
            self.s.handle_ws_open(self.at(10_000)),
            Err(RequestError::UnknownSid)
        );
        assert!(matches!(
            self.s.send(Message::Text(Str::from("late"))),
            Err(SendError::Closed(_))
        ));
    }
}

// ---- handshake and messages ----

#[test]
fn polling_handshake_exact_bytes() {
    let t0 = Instant::now();
    let (s, open) = Session::polling(Sid::new("lv_VI97HAXpY6yYWAAAC").unwrap(), config(), t0);
    assert_eq!(
        open,
        &br#"0{"sid":"lv_VI97HAXpY6yYWAAAC","upgrades":["websocket"],"pingInterval":300,"pingTimeout":200,"maxPayload":1000000}"#[..]
    );
    assert_eq!(s.transport_state(), TransportState::Polling);
    assert_eq!(s.sid().as_str(), "lv_VI97HAXpY6yYWAAAC");
    assert_eq!(
        s.next_deadline(),
        Some(t0 + 300 * MS),
        "first ping one interval later"
    );
}

#[test]
fn polling_one_text_packet_each_way() {
    let mut c = Client::polling();
    assert_eq!(c.post(1, "4hello"), Ok(()));
    assert_eq!(c.events(), vec![msg("hello")]);
    c.send("hello");
    c.get_now(2, "4hello");
}

#[test]
fn polling_queued_packets_flush_in_one_payload_per_get() {
    let mut c = Client::polling();
    assert_eq!(c.post(1, "4test1\x1e4test2\x1e4test3"), Ok(()));
    assert_eq!(c.events(), vec![msg("test1"), msg("test2"), msg("test3")]);
    for s in ["test1", "test2", "test3"] {
        c.send(s);
    }
    assert_eq!(c.s.queued_bytes(), 21, "each packet and a separator");
    c.get_now(2, "4test1\x1e4test2\x1e4test3");
    assert_eq!(c.s.queued_bytes(), 0);
    // Nothing left: the next GET is held.
    c.held_get(3);
}

#[test]
fn polling_text_and_binary() {
    let mut c = Client::polling();
    assert_eq!(c.post(1, "4hello\x1ebAQIDBA=="), Ok(()));
    assert_eq!(
        c.events(),
        vec![
            msg("hello"),
            Event::Message(Message::Binary(Bytes::from_static(&[1, 2, 3, 4])))
        ]
    );
    c.send("hello");
    c.s.send(Message::Binary(Bytes::from_static(&[1, 2, 3, 4])))
        .unwrap();
    c.get_now(2, "4hello\x1ebAQIDBA==");
}

#[test]
fn held_get_is_answered_by_the_first_send_and_the_rest_wait() {
    let mut c = Client::polling();
    let get = c.held_get(1);
    assert_eq!(c.s.held_get(), Some(get));
    c.send("a");
    c.send("b");
    c.send("c");
    assert_eq!(c.transmits(), vec![poll(get, "4a")]);
    c.get_now(2, "4b\x1e4c");
}

#[test]
fn send_all_goes_in_one_payload() {
    let mut c = Client::polling();
    let get = c.held_get(1);
    c.s.send_all(vec![
        Message::Text(Str::from("51-[\"e\",{\"_placeholder\":true,\"num\":0}]")),
        Message::Binary(Bytes::from_static(&[0xff])),
    ])
    .unwrap();
    assert_eq!(
        c.transmits(),
        vec![poll(
            get,
            "451-[\"e\",{\"_placeholder\":true,\"num\":0}]\x1eb/w=="
        )]
    );
}

#[test]
fn ignored_client_packets() {
    let mut c = Client::polling();
    assert_eq!(
        c.post(1, "0\x1e5\x1e6\x1e3"),
        Ok(()),
        "open, upgrade, noop, stray pong"
    );
    assert_eq!(c.events(), vec![]);
    assert!(!c.s.is_closed());
}

#[test]
fn websocket_text_and_binary() {
    let (mut c, ws) = Client::websocket();
    c.ws(ws, 1, text("4hello"));
    c.ws(ws, 1, WsFrame::Binary(Bytes::from_static(&[1, 2, 3, 4])));
    assert_eq!(
        c.events(),
        vec![
            msg("hello"),
            Event::Message(Message::Binary(Bytes::from_static(&[1, 2, 3, 4])))
        ]
    );
    c.send("hello");
    c.s.send(Message::Binary(Bytes::from_static(&[1, 2, 3, 4])))
        .unwrap();
    assert_eq!(
        c.transmits(),
        vec![
            ws_text(ws, "4hello"),
            Transmit::Ws {
                ws,
                frame: WsFrame::Binary(Bytes::from_static(&[1, 2, 3, 4]))
            }
        ]
    );
    assert_eq!(c.s.websocket_id(), Some(ws));
    assert_eq!(c.s.transport_state(), TransportState::WebSocket);
    assert_eq!(
        c.get(2),
        Err(RequestError::BadRequest),
        "no polling on a WebSocket session"
    );
    assert_eq!(c.post(2, "4x"), Err(RequestError::BadRequest));
    assert_eq!(c.s.handle_ws_open(c.at(2)), Err(RequestError::BadRequest));
    assert!(!c.s.is_closed());
}

// ---- heartbeat ----

#[test]
fn polling_ping_pong_three_times() {
    let mut c = Client::polling();
    let mut now = 0;
    for _ in 0..3 {
        let get = c.held_get(now + 1);
        c.tick(now + 299);
        assert_eq!(c.transmits(), vec![], "no ping before the interval");
        c.tick(now + 300);
        assert_eq!(c.transmits(), vec![poll(get, "2")]);
        assert_eq!(c.s.next_deadline(), Some(c.at(now + 500)));
        assert_eq!(c.post(now + 310, "3"), Ok(()));
        assert_eq!(
            c.s.next_deadline(),
            Some(c.at(now + 610)),
            "next ping an interval after the pong"
        );
        now += 310;
    }
    assert!(!c.s.is_closed());
}

#[test]
fn polling_ping_waits_for_the_next_get() {
    let mut c = Client::polling();
    c.tick(300);
    assert_eq!(c.transmits(), vec![]);
    c.get_now(301, "2");
}

#[test]
fn polling_ping_timeout_closes_and_answers_the_held_get_with_close() {
    let mut c = Client::polling();
    c.tick(300);
    c.get_now(301, "2");
    let get = c.held_get(302);
    c.tick(499);
    assert!(!c.s.is_closed());
    c.tick(500);
    assert_eq!(c.transmits(), vec![poll(get, "1")]);
    c.assert_closed(CloseReason::PingTimeout);
}

#[test]
fn websocket_ping_pong_and_timeout() {
    let (mut c, ws) = Client::websocket();
    c.tick(300);
    assert_eq!(c.transmits(), vec![ws_text(ws, "2")]);
    c.ws(ws, 350, text("3"));
    assert_eq!(c.s.next_deadline(), Some(c.at(650)));
    c.tick(650);
    assert_eq!(c.transmits(), vec![ws_text(ws, "2")]);
    c.tick(850);
    assert_eq!(c.transmits(), vec![Transmit::CloseWs { ws }]);
    c.assert_closed(CloseReason::PingTimeout);
}

#[test]
fn any_packet_extends_the_pong_wait() {
    let (mut c, ws) = Client::websocket();
    c.tick(300);
    c.ws(ws, 450, text("4still here"));
    c.tick(500);
    assert!(!c.s.is_closed());
    assert_eq!(c.s.next_deadline(), Some(c.at(650)));
    c.tick(650);
    assert_eq!(c.s.close_reason(), Some(CloseReason::PingTimeout));
}

#[test]
fn client_ping_is_an_invalid_heartbeat_direction() {
    let mut c = Client::polling();
    let get = c.held_get(1);
    assert_eq!(c.post(2, "2"), Err(RequestError::BadRequest));
    assert_eq!(c.transmits(), vec![poll(get, "1")]);
    c.assert_closed(CloseReason::TransportError(
        TransportError::HeartbeatDirection,
    ));

    let (mut c, ws) = Client::websocket();
    c.ws(ws, 1, text("2probe"));
    assert_eq!(c.transmits(), vec![Transmit::CloseWs { ws }]);
    c.assert_closed(CloseReason::TransportError(
        TransportError::HeartbeatDirection,
    ));
}

// ---- error paths on polling ----

#[test]
fn duplicate_get_closes_the_session() {
    let mut c = Client::polling();
    let first = c.held_get(1);
    assert_eq!(c.get(6), Err(RequestError::BadRequest));
    assert_eq!(c.transmits(), vec![poll(first, "1")]);
    c.assert_closed(CloseReason::TransportError(TransportError::PollOverlap));
}

#[test]
fn cancelled_get_closes_the_session() {
    let mut c = Client::polling();
    let get = c.held_get(1);
    c.s.handle_poll_gone(get, c.at(6));
    assert_eq!(c.transmits(), vec![], "nobody to answer");
    c.assert_closed(CloseReason::TransportError(TransportError::PollCancelled));
}

#[test]
fn a_get_gone_after_its_answer_changes_nothing() {
    let mut c = Client::polling();
    let get = c.held_get(1);
    c.send("x");
    assert_eq!(c.transmits(), vec![poll(get, "4x")]);
    c.s.handle_poll_gone(get, c.at(2));
    assert!(!c.s.is_closed());
}

#[test]
fn invalid_packet_closes_the_session() {
    for (body, err) in [
        ("abc", DecodeError::UnknownType(b'a')),
        ("", DecodeError::Empty),
        ("4ok\x1e", DecodeError::Empty),
        ("b!!", DecodeError::InvalidBase64),
    ] {
        let mut c = Client::polling();
        let get = c.held_get(1);
        assert_eq!(c.post(2, body), Err(RequestError::BadRequest), "{body:?}");
        assert_eq!(c.transmits(), vec![poll(get, "1")]);
        assert_eq!(
            c.events().first(),
            Some(&Event::Closed(CloseReason::ParseError(err)))
        );
        c.assert_closed(CloseReason::ParseError(err));
    }
    // A body that is not UTF-8.
    let mut c = Client::polling();
    let id = c.s.handle_post_start(c.at(1)).unwrap();
    assert_eq!(
        c.s.handle_post(id, Bytes::from_static(b"4\xff"), false, c.at(1)),
        Err(RequestError::BadRequest)
    );
    c.assert_closed(CloseReason::ParseError(DecodeError::InvalidUtf8));
}

#[test]
fn invalid_payload_delivers_nothing() {
    let mut c = Client::polling();
    assert_eq!(c.post(1, "4first\x1ezzz"), Err(RequestError::BadRequest));
    let events = c.events();
    assert!(!events.iter().any(|e| matches!(e, Event::Message(_))));
}

#[test]
fn binary_post_body_closes_the_session() {
    let mut c = Client::polling();
    let id = c.s.handle_post_start(c.at(1)).unwrap();
    assert_eq!(
        c.s.handle_post(id, Bytes::from_static(b"4hi"), true, c.at(1)),
        Err(RequestError::BadRequest)
    );
    c.assert_closed(CloseReason::TransportError(TransportError::BinaryPostBody));
}

#[test]
fn post_above_max_payload_is_413_and_closes() {
    let mut c = Client::polling_with(Config {
        max_payload: 6,
        ..config()
    });
    assert_eq!(c.post(1, "4hello"), Ok(()), "exactly maxPayload is fine");
    assert_eq!(c.post(2, "4hello!"), Err(RequestError::PayloadTooLarge));
    assert_eq!(RequestError::PayloadTooLarge.status(), 413);
    c.assert_closed(CloseReason::TransportError(TransportError::PayloadTooLarge));

    // The server's bounded body reader gave up.
    let mut c = Client::polling();
    let get = c.held_get(1);
    let id = c.s.handle_post_start(c.at(1)).unwrap();
    assert_eq!(
        c.s.handle_post_too_large(id, c.at(2)),
        RequestError::PayloadTooLarge
    );
    assert_eq!(c.transmits(), vec![poll(get, "1")]);
    c.assert_closed(CloseReason::TransportError(TransportError::PayloadTooLarge));
}

#[test]
fn concurrent_post_closes_the_session() {
    let mut c = Client::polling();
    let first = c.s.handle_post_start(c.at(1)).unwrap();
    assert_eq!(
        c.s.handle_post_start(c.at(2)),
        Err(RequestError::BadRequest)
    );
    assert_eq!(
        c.s.handle_post(first, Bytes::from_static(b"4late"), false, c.at(3)),
        Err(RequestError::UnknownSid)
    );
    c.assert_closed(CloseReason::TransportError(TransportError::PostOverlap));
}

#[test]
fn aborted_post_closes_the_session() {
    let mut c = Client::polling();
    let id = c.s.handle_post_start(c.at(1)).unwrap();
    c.s.handle_post_aborted(id, c.at(2));
    c.assert_closed(CloseReason::TransportError(TransportError::PostCancelled));
}

#[test]
fn sequential_posts_are_fine_and_stale_ids_refused() {
    let mut c = Client::polling();
    let a = c.s.handle_post_start(c.at(1)).unwrap();
    c.s.handle_post(a, Bytes::from_static(b"4a"), false, c.at(1))
        .unwrap();
    let b = c.s.handle_post_start(c.at(2)).unwrap();
    c.s.handle_post(b, Bytes::from_static(b"4b"), false, c.at(2))
        .unwrap();
    assert_eq!(
        c.s.handle_post(a, Bytes::from_static(b"4a"), false, c.at(3)),
        Err(RequestError::BadRequest)
    );
    assert_eq!(c.events(), vec![msg("a"), msg("b")]);
    assert!(!c.s.is_closed());
}

// ---- close ----

#[test]
fn client_close_on_polling_answers_the_held_get_with_noop() {
    let mut c = Client::polling();
    let get = c.held_get(1);
    assert_eq!(c.post(2, "1"), Ok(()), "the POST itself is answered ok");
    assert_eq!(c.transmits(), vec![poll(get, "6")]);
    c.assert_closed(CloseReason::TransportClose);
}

#[test]
fn packets_after_a_close_packet_are_dropped() {
    let mut c = Client::polling();
    assert_eq!(c.post(1, "4a\x1e1\x1e4b"), Ok(()));
    assert_eq!(
        c.events(),
        vec![msg("a"), Event::Closed(CloseReason::TransportClose)]
    );
}

#[test]
fn client_close_on_websocket() {
    let (mut c, ws) = Client::websocket();
    c.ws(ws, 1, text("1"));
    assert_eq!(c.transmits(), vec![Transmit::CloseWs { ws }]);
    c.assert_closed(CloseReason::TransportClose);

    let (mut c, ws) = Client::websocket();
    c.s.handle_ws_closed(ws, c.at(1));
    c.assert_closed(CloseReason::TransportClose);
}

#[test]
fn invalid_packet_on_websocket_closes() {
    let (mut c, ws) = Client::websocket();
    c.ws(ws, 1, text("abc"));
    assert_eq!(c.transmits(), vec![Transmit::CloseWs { ws }]);
    c.assert_closed(CloseReason::ParseError(DecodeError::UnknownType(b'a')));
}

#[test]
fn websocket_message_above_max_payload_closes() {
    let t0 = Instant::now();
    let cfg = Config {
        max_payload: 3,
        ..config()
    };
    let (s, ws) = Session::websocket(Sid::new("SID").unwrap(), cfg, t0);
    let mut c = Client { s, t0 };
    c.transmits();
    c.ws(ws, 1, text("4ab"));
    c.ws(ws, 1, WsFrame::Binary(Bytes::from_static(b"1234")));
    assert_eq!(c.transmits(), vec![Transmit::CloseWs { ws }]);
    assert_eq!(c.events().first(), Some(&msg("ab")));
    c.assert_closed(CloseReason::TransportError(TransportError::PayloadTooLarge));
}

#[test]
fn server_close_on_websocket() {
    let (mut c, ws) = Client::websocket();
    c.send("1"); // a Socket.IO disconnect, `41` on the wire
    c.s.close(c.at(1));
    assert_eq!(
        c.transmits(),
        vec![ws_text(ws, "41"), Transmit::CloseWs { ws }]
    );
    c.assert_closed(CloseReason::ForcedClose);
}

#[test]
fn server_close_on_polling_with_a_held_get() {
    let mut c = Client::polling();
    let get = c.held_get(1);
    c.send("a");
    c.send("1");
    c.s.close(c.at(2));
    assert_eq!(c.transmits(), vec![poll(get, "4a")], "the queue went first");
    assert_eq!(c.s.transport_state(), TransportState::Closing);
    c.get_now(3, "41\x1e1");
    c.assert_closed(CloseReason::ForcedClose);

    let mut c = Client::polling();
    let get = c.held_get(1);
    c.s.close(c.at(2));
    assert_eq!(c.transmits(), vec![poll(get, "1")]);
    c.assert_closed(CloseReason::ForcedClose);
}

#[test]
fn server_close_on_polling_waits_for_the_next_get_or_the_timeout() {
    let mut c = Client::polling();
    c.send("1");
    c.s.close(c.at(1));
    assert_eq!(c.s.transport_state(), TransportState::Closing);
    assert!(matches!(
        c.s.send(Message::Text("x".into())),
        Err(SendError::Closed(_))
    ));
    assert_eq!(
        c.post(2, "4ignored"),
        Ok(()),
        "packets after the server closed are ignored"
    );
    assert_eq!(c.events(), vec![]);
    assert_eq!(c.s.next_deadline(), Some(c.at(2001)));
    c.tick(300);
    assert_eq!(
        c.s.transport_state(),
        TransportState::Closing,
        "no pings while closing"
    );
    c.tick(2001);
    assert_eq!(c.transmits(), vec![]);
    c.assert_closed(CloseReason::ForcedClose);
}

// ---- upgrade ----

#[test]
fn upgrade_polling_to_websocket() {
    let mut c = Client::polling();
    let ws = c.probe(1);
    c.get_now(2, "6");
    c.ws(ws, 3, text("5"));
    assert_eq!(c.events(), vec![Event::Upgraded]);
    assert_eq!(c.s.transport_state(), TransportState::WebSocket);
    assert_eq!(c.s.websocket_id(), Some(ws));
    c.ws(ws, 4, text("4hello"));
    assert_eq!(c.events(), vec![msg("hello")]);
    c.send("hello");
    assert_eq!(c.transmits(), vec![ws_text(ws, "4hello")]);
}

#[test]
fn probe_answers_the_held_get_with_noop() {
    let mut c = Client::polling();
    let get = c.held_get(1);
    let ws = c.s.handle_ws_open(c.at(2)).unwrap();
    // Before the probe the poll is held as usual.
    c.ws(ws, 3, text("2probe"));
    assert_eq!(c.transmits(), vec![ws_text(ws, "3probe"), poll(get, "6")]);
}

#[test]
fn polls_during_a_probed_upgrade_get_noop_and_the_queue_waits_for_the_websocket() {
    let mut c = Client::polling();
    let ws = c.probe(1);
    c.send("a");
    c.get_now(2, "6");
    c.get_now(3, "6");
    c.send("b");
    assert_eq!(c.transmits(), vec![]);
    assert_eq!(
        c.post(4, "4from polling"),
        Ok(()),
        "an in-flight POST still lands"
    );
    c.ws(ws, 5, text("5"));
    assert_eq!(c.transmits(), vec![ws_text(ws, "4a"), ws_text(ws, "4b")]);
    assert_eq!(c.events(), vec![msg("from polling"), Event::Upgraded]);
}

#[test]
fn ping_during_upgrade_goes_out_on_the_websocket() {
    let mut c = Client::polling();
    let ws = c.probe(1);
    c.tick(300);
    assert_eq!(c.transmits(), vec![]);
    c.ws(ws, 310, text("5"));
    assert_eq!(c.transmits(), vec![ws_text(ws, "2")]);
    c.ws(ws, 320, text("3"));
    assert_eq!(c.s.next_deadline(), Some(c.at(620)));
}

#[test]
fn after_upgrade_polling_and_a_second_websocket_are_refused_and_the_first_works() {
    let mut c = Client::polling();
    let ws = c.probe(1);
    c.ws(ws, 2, text("5"));
    c.events();
    assert_eq!(c.get(3), Err(RequestError::BadRequest));
    assert_eq!(c.post(3, "4x"), Err(RequestError::BadRequest));
    assert_eq!(c.s.handle_ws_open(c.at(3)), Err(RequestError::BadRequest));
    assert!(!c.s.is_closed());
    c.ws(ws, 4, text("4hello"));
    assert_eq!(c.events(), vec![msg("hello")]);
    c.send("hello");
    assert_eq!(c.transmits(), vec![ws_text(ws, "4hello")]);
}

#[test]
fn second_websocket_during_an_upgrade_is_refused() {
    let mut c = Client::polling();
    let ws = c.s.handle_ws_open(c.at(1)).unwrap();
    assert_eq!(c.s.handle_ws_open(c.at(2)), Err(RequestError::BadRequest));
    c.ws(ws, 3, text("2probe"));
    assert_eq!(c.transmits(), vec![ws_text(ws, "3probe")]);
    assert!(!c.s.is_closed());
}

#[test]
fn a_wrong_packet_on_the_probe_ends_the_attempt_only() {
    for (first, second) in [
        ("4hello", None),
        ("5", None),
        ("2probe", Some("4early")),
        ("2probe", Some("2probe")),
    ] {
        let mut c = Client::polling();
        let ws = c.s.handle_ws_open(c.at(1)).unwrap();
        c.ws(ws, 2, text(first));
        if let Some(second) = second {
            c.ws(ws, 3, text(second));
        }
        let t = c.transmits();
        assert_eq!(
            t.last(),
            Some(&Transmit::CloseWs { ws }),
            "{first} {second:?}"
        );
        assert_eq!(c.s.transport_state(), TransportState::Polling);
        assert!(!c.s.is_closed());
        // Polling goes on, and a new attempt may start.
        c.send("x");
        c.get_now(4, "4x");
        assert!(c.s.handle_ws_open(c.at(5)).is_ok());
    }
}

#[test]
fn upgrade_timeout_closes_the_probe_websocket() {
    let mut c = Client::polling();
    let ws = c.probe(1);
    assert_eq!(c.s.next_deadline(), Some(c.at(300)), "the ping comes first");
    c.tick(300);
    assert_eq!(c.s.next_deadline(), Some(c.at(500)));
    c.post(310, "3").unwrap();
    assert_eq!(c.s.next_deadline(), Some(c.at(610)));
    // Pong received at 310: next ping at 610, before the upgrade deadline at 1001.
    c.tick(610);
    c.post(620, "3").unwrap();
    c.tick(920);
    c.post(930, "3").unwrap();
    assert_eq!(c.s.next_deadline(), Some(c.at(1001)));
    c.tick(1001);
    assert_eq!(c.transmits(), vec![Transmit::CloseWs { ws }]);
    assert_eq!(c.s.transport_state(), TransportState::Polling);
    // Pings that waited for the WebSocket go out on polling again.
    c.get_now(1002, "2\x1e2\x1e2");
}

#[test]
fn probe_websocket_closing_leaves_the_session_on_polling() {
    let mut c = Client::polling();
    let ws = c.probe(1);
    c.s.handle_ws_closed(ws, c.at(2));
    assert_eq!(c.s.transport_state(), TransportState::Polling);
    c.send("x");
    c.get_now(3, "4x");
    // A message for the closed probe: it is told to close again, nothing else.
    c.ws(ws, 4, text("5"));
    assert_eq!(c.transmits(), vec![Transmit::CloseWs { ws }]);
    assert_eq!(c.s.transport_state(), TransportState::Polling);
}

#[test]
fn session_closing_during_upgrade_closes_the_probe() {
    let mut c = Client::polling();
    let ws = c.probe(1);
    assert_eq!(c.post(2, "1"), Ok(()));
    assert_eq!(c.transmits(), vec![Transmit::CloseWs { ws }]);
    c.assert_closed(CloseReason::TransportClose);
}

#[test]
fn upgrades_disabled() {
    let mut c = Client::polling_with(Config {
        allow_upgrades: false,
        ..config()
    });
    assert_eq!(c.s.handle_ws_open(c.at(1)), Err(RequestError::BadRequest));
}

// ---- send queue ----

#[test]
fn send_queue_is_bounded_and_hands_messages_back() {
    let mut c = Client::polling_with(Config {
        max_queued_bytes: 10,
        ..config()
    });
    c.send("abcdefgh"); // "4abcdefgh" + separator = 10 bytes
    let back = c.s.send(Message::Text("x".into()));
    assert_eq!(back, Err(SendError::Full(Message::Text("x".into()))));
    assert_eq!(
        c.s.send_all(vec![Message::Text("y".into())]),
        Err(vec![Message::Text("y".into())])
    );
    c.get_now(1, "4abcdefgh");
    c.send("x");
    c.get_now(2, "4x");
}

#[test]
fn send_all_is_all_or_nothing() {
    let mut c = Client::polling_with(Config {
        max_queued_bytes: 8,
        ..config()
    });
    let batch = vec![Message::Text("abc".into()), Message::Text("def".into())];
    assert_eq!(c.s.send_all(batch.clone()), Err(batch), "10 bytes > 8");
    assert_eq!(c.s.queued_bytes(), 0);
}

#[test]
fn a_framed_text_goes_out_as_is_on_websocket_and_as_its_message_on_polling() {
    let t0 = Instant::now();
    let (mut ws_session, ws) = Session::websocket(Sid::new("w").unwrap(), Config::default(), t0);
    let _open = ws_session.poll_transmit();
    ws_session
        .send_framed_text(Str::from("42[\"e\",1]"))
        .unwrap();
    assert_eq!(
        ws_session.poll_transmit(),
        Some(Transmit::Ws {
            ws,
            frame: WsFrame::Text(Str::from("42[\"e\",1]"))
        })
    );
    assert!(
        ws_session.send_framed_text(Str::from("x")).is_err(),
        "not a message packet"
    );
    let (mut polling, _) = Session::polling(Sid::new("p").unwrap(), Config::default(), t0);
    polling.send_framed_text(Str::from("42[\"e\",1]")).unwrap();
    assert_eq!(
        polling.handle_get(t0).unwrap(),
        GetOutcome::Respond(bytes::Bytes::from_static(b"42[\"e\",1]"))
    );
}
