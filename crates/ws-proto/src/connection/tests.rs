//! Transcript tests: a client peer sends raw frames, the server connection answers.

use bytes::BytesMut;

use super::*;
use crate::deflate::codec::compress_stateless;

const KEY: [u8; 4] = [0x11, 0x22, 0x33, 0x44];

/// A client frame, masked as the RFC requires unless `masked` is false.
fn frame(b0: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let h = FrameHeader {
        fin: b0 & 0x80 != 0,
        rsv1: b0 & 0x40 != 0,
        // Reserved opcodes are written over below.
        opcode: OpCode::from_u8(b0 & 0x0f).unwrap_or(OpCode::Binary),
        mask: masked.then_some(KEY),
        payload_len: payload.len() as u64,
    };
    let mut out = Vec::new();
    h.encode(&mut out);
    // Keep what the header type can't express (RSV2/3, reserved opcodes) as given.
    out[0] = b0;
    let start = out.len();
    out.extend_from_slice(payload);
    if masked {
        apply_mask(&mut out[start..], KEY, 0);
    }
    out
}

fn text(p: &str) -> Vec<u8> {
    frame(0x81, p.as_bytes(), true)
}

struct Peer {
    conn: Connection,
    input: BytesMut,
}

impl Peer {
    fn new() -> Peer {
        Peer::with(Config::default())
    }
    fn with(config: Config) -> Peer {
        Peer {
            conn: Connection::server(&config),
            input: BytesMut::new(),
        }
    }
    fn deflate(mut self) -> Peer {
        let params = DeflateParams {
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            ..DeflateParams::default()
        };
        let config = DeflateConfig {
            compression_threshold: 0,
            ..DeflateConfig::default()
        };
        self.conn = self.conn.with_deflate(params, &config);
        self
    }
    fn send(&mut self, bytes: &[u8]) -> Vec<Result<Event, ProtocolError>> {
        self.input.extend_from_slice(bytes);
        let mut events = Vec::new();
        loop {
            match self.conn.handle_input(&mut self.input) {
                Ok(Some(e)) => events.push(Ok(e)),
                Ok(None) => return events,
                Err(e) => {
                    events.push(Err(e));
                    return events;
                }
            }
        }
    }
    fn sent(&mut self) -> Vec<u8> {
        self.conn.output().split().to_vec()
    }
    /// The close code of the Close frame the server sent last.
    fn close_code_sent(&mut self) -> Option<u16> {
        let out = self.sent();
        let (h, n) = FrameHeader::parse(&out).ok()??;
        (h.opcode == OpCode::Close && out.len() >= n + 2)
            .then(|| u16::from_be_bytes([out[n], out[n + 1]]))
    }
}

#[test]
fn text_message_is_delivered_and_echo_is_unmasked() {
    let mut p = Peer::new();
    assert_eq!(p.send(&text("Hello")), [Ok(Event::Text("Hello".into()))]);
    p.conn.send(MessageKind::Text, b"Hello");
    assert_eq!(p.sent(), b"\x81\x05Hello");
}

#[test]
fn unmasked_client_frame_fails_with_1002() {
    let mut p = Peer::new();
    assert_eq!(
        p.send(&frame(0x81, b"hi", false)),
        [Err(ProtocolError::UnmaskedFrame)]
    );
    assert_eq!(p.close_code_sent(), Some(1002));
    assert!(p.conn.is_closed());
    assert!(p.send(&text("ignored")).is_empty());
}

#[test]
fn ping_during_fragmented_message_is_answered() {
    let mut p = Peer::new();
    let mut bytes = frame(0x01, b"Hel", true);
    bytes.extend(frame(0x89, b"x", true));
    bytes.extend(frame(0x80, b"lo", true));
    assert_eq!(
        p.send(&bytes),
        [Ok(Event::Ping("x".into())), Ok(Event::Text("Hello".into()))]
    );
    assert_eq!(p.sent(), b"\x8a\x01x");
}

#[test]
fn fragmentation_order_is_enforced() {
    let mut p = Peer::new();
    assert_eq!(
        p.send(&frame(0x80, b"x", true)),
        [Err(ProtocolError::UnexpectedContinuation)]
    );
    let mut p = Peer::new();
    let mut bytes = frame(0x01, b"a", true);
    bytes.extend(frame(0x81, b"b", true));
    assert_eq!(p.send(&bytes), [Err(ProtocolError::ExpectedContinuation)]);
    assert_eq!(p.close_code_sent(), Some(1002));
}

#[test]
fn reserved_bits_and_opcodes_fail_with_1002() {
    for b0 in [0xA1u8, 0x91, 0xC1, 0x83, 0x8B] {
        let mut p = Peer::new();
        let events = p.send(&frame(b0, b"x", true));
        assert!(matches!(events[..], [Err(_)]), "{b0:#x}: {events:?}");
        assert_eq!(p.close_code_sent(), Some(1002), "{b0:#x}");
    }
}

#[test]
fn invalid_utf8_fails_with_1007_before_the_frame_is_complete() {
    let mut p = Peer::new();
    let bytes = frame(0x81, b"valid \xce\xba then \xff and more text", true);
    // Feed the frame byte by byte: the error must come when 0xff arrives.
    let bad_at = bytes.len() - b"\xff and more text".len() + 1;
    for (i, b) in bytes.iter().enumerate() {
        let events = p.send(&[*b]);
        if i + 1 < bad_at {
            assert!(events.is_empty(), "byte {i}: {events:?}");
        } else {
            assert_eq!(events, [Err(ProtocolError::InvalidUtf8)], "byte {i}");
            break;
        }
    }
    assert_eq!(p.close_code_sent(), Some(1007));
}

#[test]
fn text_split_across_fragments_and_reads_is_validated_incrementally() {
    let mut p = Peer::new();
    let word = "κόσμε".as_bytes();
    let mut bytes = frame(0x01, &word[..3], true);
    bytes.extend(frame(0x00, &word[3..7], true));
    bytes.extend(frame(0x80, &word[7..], true));
    let mut events = Vec::new();
    for chunk in bytes.chunks(3) {
        events.extend(p.send(chunk));
    }
    assert_eq!(events, [Ok(Event::Text(word.to_vec().into()))]);
}

#[test]
fn close_is_echoed_with_the_same_code() {
    let mut p = Peer::new();
    let events = p.send(&frame(0x88, b"\x03\xe8bye", true));
    assert_eq!(
        events,
        [Ok(Event::Close(Some(CloseFrame::new(
            CloseCode::Normal,
            "bye"
        ))))]
    );
    assert_eq!(p.sent(), b"\x88\x02\x03\xe8");
    assert!(p.conn.is_closed());
}

#[test]
fn empty_close_is_answered_with_empty_close() {
    let mut p = Peer::new();
    p.send(&frame(0x88, b"", true));
    assert_eq!(p.sent(), b"\x88\x00");
}

#[test]
fn bad_close_payloads_fail_with_1002_or_1007() {
    for (payload, code) in [
        (&b"\x03"[..], 1002),
        (b"\x03\xed", 1002), // 1005: local only
        (b"\x03\xe8\xff", 1007),
        (b"\x13\x88", 1002), // 5000
    ] {
        let mut p = Peer::new();
        let events = p.send(&frame(0x88, payload, true));
        assert!(matches!(events[..], [Err(_)]), "{payload:?}");
        assert_eq!(p.close_code_sent(), Some(code), "{payload:?}");
    }
}

#[test]
fn server_initiated_close_waits_for_the_peer_and_drops_data_meanwhile() {
    let mut p = Peer::new();
    p.conn.close(CloseCode::Away, "Server shutting down");
    let sent = p.sent();
    assert_eq!(&sent[..4], b"\x88\x16\x03\xe9");
    assert!(!p.conn.is_closed());
    assert!(p.send(&text("late")).is_empty());
    p.conn.send(MessageKind::Text, b"not sent");
    assert!(p.sent().is_empty());
    p.send(&frame(0x88, b"\x03\xe9", true));
    assert!(p.conn.is_closed());
    assert!(p.sent().is_empty(), "no second close frame");
}

#[test]
fn oversized_message_fails_at_the_header_with_1009() {
    let mut p = Peer::with(Config {
        max_message_size: 100,
    });
    // Only the header of a 1 MB frame: rejected before any payload arrives.
    let header = &frame(0x82, &vec![0; 1 << 20], true)[..14];
    assert_eq!(
        p.send(header),
        [Err(ProtocolError::MessageTooBig { limit: 100 })]
    );
    assert_eq!(p.close_code_sent(), Some(1009));
}

#[test]
fn fragments_adding_up_past_the_limit_fail_with_1009() {
    let mut p = Peer::with(Config {
        max_message_size: 100,
    });
    let mut bytes = frame(0x02, &[0; 40], true);
    bytes.extend(frame(0x00, &[0; 40], true));
    bytes.extend(frame(0x80, &[0; 40], true));
    assert_eq!(
        p.send(&bytes),
        [Err(ProtocolError::MessageTooBig { limit: 100 })]
    );
}

#[test]
fn control_frame_rules() {
    let mut p = Peer::new();
    assert_eq!(
        p.send(&frame(0x89, &[0; 126], true)),
        [Err(ProtocolError::ControlFrameTooLong)]
    );
    let mut p = Peer::new();
    assert_eq!(
        p.send(&frame(0x09, b"", true)),
        [Err(ProtocolError::FragmentedControlFrame)]
    );
}

#[test]
fn compressed_message_is_inflated_and_rsv1_without_deflate_is_an_error() {
    let mut z = Vec::new();
    assert!(compress_stateless(15, 6, b"Hello Hello Hello", &mut z));
    let mut p = Peer::new().deflate();
    assert_eq!(
        p.send(&frame(0xC1, &z, true)),
        [Ok(Event::Text("Hello Hello Hello".into()))]
    );
    let mut p = Peer::new();
    assert_eq!(
        p.send(&frame(0xC1, &z, true)),
        [Err(ProtocolError::ReservedBits)]
    );
}

#[test]
fn compressed_message_in_fragments_is_inflated() {
    let text = "a fragmented compressed message ".repeat(20);
    let mut z = Vec::new();
    assert!(compress_stateless(15, 6, text.as_bytes(), &mut z));
    let mut p = Peer::new().deflate();
    let mut bytes = frame(0x41, &z[..5], true);
    bytes.extend(frame(0x00, &z[5..10], true));
    bytes.extend(frame(0x80, &z[10..], true));
    assert_eq!(p.send(&bytes), [Ok(Event::Text(text.into()))]);
}

#[test]
fn compression_bomb_fails_with_1009() {
    let mut z = Vec::new();
    assert!(compress_stateless(15, 9, &vec![b'a'; 8 << 20], &mut z));
    let mut p = Peer::with(Config {
        max_message_size: 1 << 20,
    })
    .deflate();
    assert_eq!(
        p.send(&frame(0xC1, &z, true)),
        [Err(ProtocolError::MessageTooBig { limit: 1 << 20 })]
    );
    assert_eq!(p.close_code_sent(), Some(1009));
}

#[test]
fn outgoing_messages_are_compressed_above_the_threshold() {
    let mut p = Peer::new().deflate();
    p.conn.send(
        MessageKind::Text,
        "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzz".as_bytes(),
    );
    let out = p.sent();
    assert_eq!(out[0], 0xC1, "FIN + RSV1 + text");
    // A client connection with the same parameters reads it back.
    let mut client = Connection::client(&Config::default()).with_deflate(
        DeflateParams {
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            ..DeflateParams::default()
        },
        &DeflateConfig::default(),
    );
    let mut input = BytesMut::from(&out[..]);
    assert_eq!(
        client.handle_input(&mut input),
        Ok(Some(Event::Text("zzzzzzzzzzzzzzzzzzzzzzzzzzzzzz".into())))
    );
}

#[test]
fn client_role_masks_and_rejects_masked_server_frames() {
    let mut client = Connection::client(&Config::default());
    client.send(MessageKind::Binary, b"abc");
    let out = client.output().split();
    assert_eq!(out[1] & 0x80, 0x80, "mask bit set");
    let mut server = Connection::server(&Config::default());
    let mut input = BytesMut::from(&out[..]);
    assert_eq!(
        server.handle_input(&mut input),
        Ok(Some(Event::Binary("abc".into())))
    );
    let mut input = BytesMut::from(&frame(0x82, b"x", true)[..]);
    assert_eq!(
        client.handle_input(&mut input),
        Err(ProtocolError::MaskedFrame)
    );
}

#[test]
fn prepared_message_is_shared_and_compressed_once() {
    let msg = PreparedMessage::new(MessageKind::Text, "x".repeat(300).into());
    let plain = Connection::server(&Config::default());
    let a = Peer::new().deflate();
    let b = Peer::new().deflate();
    let fa = a.conn.prepared_frame(&msg);
    let fb = b.conn.prepared_frame(&msg);
    assert_eq!(fa.as_ptr(), fb.as_ptr(), "same buffer for both recipients");
    assert_eq!(fa[0], 0xC1);
    assert_eq!(plain.prepared_frame(&msg)[0], 0x81);
}

#[test]
fn only_complete_valid_pings_and_pongs_count_as_only_heartbeats() {
    let mut conn = Connection::server(&Config::default());
    let pong = frame(0x8a, b"hi", true);
    assert!(conn.is_only_heartbeats(&pong));
    let mixed: Vec<u8> = [pong.clone(), frame(0x89, b"ping", true)].concat();
    assert!(conn.is_only_heartbeats(&mixed));
    assert!(!conn.is_only_heartbeats(&[]));
    assert!(
        !conn.is_only_heartbeats(&pong[..pong.len() - 1]),
        "incomplete"
    );
    assert!(
        !conn.is_only_heartbeats(&[pong.clone(), text("x")].concat()),
        "then data"
    );
    assert!(
        !conn.is_only_heartbeats(&frame(0x8a, b"hi", false)),
        "unmasked"
    );
    assert!(!conn.is_only_heartbeats(&frame(0xca, b"hi", true)), "RSV1");
    assert!(!conn.is_only_heartbeats(&frame(0x88, b"", true)), "a Close");
    assert!(
        !conn.is_only_heartbeats(&frame(0x0a, b"hi", true)),
        "not final"
    );
    // What the promise is for: decoding them yields heartbeats only, and answers the Ping.
    let mut input = BytesMut::from(&mixed[..]);
    assert_eq!(
        conn.handle_input(&mut input).unwrap(),
        Some(Event::Pong("hi".into()))
    );
    assert_eq!(
        conn.handle_input(&mut input).unwrap(),
        Some(Event::Ping("ping".into()))
    );
    assert_eq!(conn.handle_input(&mut input).unwrap(), None);
    assert_eq!(conn.output().to_vec(), [&[0x8a, 4][..], b"ping"].concat());

    // Not while a fragmented message is being assembled.
    let mut mid = Connection::server(&Config::default());
    let mut input = BytesMut::from(&frame(0x01, b"part", true)[..]);
    assert_eq!(mid.handle_input(&mut input).unwrap(), None);
    assert!(!mid.is_only_heartbeats(&pong));

    // Nor once the close handshake started.
    let mut closing = Connection::server(&Config::default());
    closing.close(CloseCode::Normal, "");
    assert!(!closing.is_only_heartbeats(&pong));
}

#[test]
fn small_text_frames_the_caller_accepts_count_as_heartbeats() {
    let conn = Connection::server(&Config::default());
    let is_pong = |p: &[u8]| p == b"3";
    let pong3 = frame(0x81, b"3", true);
    assert!(conn.is_only_heartbeats_with(&pong3, is_pong));
    assert!(
        !conn.is_only_heartbeats(&pong3),
        "not without the predicate"
    );
    let mixed: Vec<u8> = [pong3.clone(), frame(0x8a, b"", true), pong3.clone()].concat();
    assert!(conn.is_only_heartbeats_with(&mixed, is_pong));
    assert!(!conn.is_only_heartbeats_with(&frame(0x81, b"4x", true), is_pong));
    assert!(
        !conn.is_only_heartbeats_with(&frame(0x82, b"3", true), is_pong),
        "binary"
    );
    assert!(
        !conn.is_only_heartbeats_with(&frame(0x01, b"3", true), is_pong),
        "not final"
    );
    assert!(
        !conn.is_only_heartbeats_with(&frame(0xc1, b"3", true), is_pong),
        "compressed"
    );
    assert!(
        !conn.is_only_heartbeats_with(&frame(0x81, b"3", false), is_pong),
        "unmasked"
    );
    let long = vec![b'3'; MAX_TEXT_HEARTBEAT + 1];
    assert!(
        !conn.is_only_heartbeats_with(&frame(0x81, &long, true), |_| true),
        "too long"
    );
    assert!(
        !conn.is_only_heartbeats_with(&pong3[..pong3.len() - 1], is_pong),
        "incomplete"
    );
}

#[test]
fn only_a_connection_between_messages_with_nothing_to_write_takes_its_idle_form() {
    // Mid-message: a fragment is held.
    let mut p = Peer::new();
    p.send(&frame(0x01, b"part", true));
    let conn = p.conn.into_idle().expect_err("a message is in progress");
    // Output waiting: the echo of a message not yet written.
    let mut p = Peer {
        conn,
        input: BytesMut::new(),
    };
    p.send(&frame(0x80, b"-end", true));
    p.conn.send(MessageKind::Text, b"reply");
    let mut conn = p.conn.into_idle().expect_err("output is waiting");
    assert!(!conn.output().is_empty());
    let _ = conn.output().split();
    // Between messages: idle, and back with its counters and state.
    let idle = conn.into_idle().expect("idle");
    let mut p = Peer {
        conn: idle.into_active(),
        input: BytesMut::new(),
    };
    assert_eq!(p.conn.messages_sent(), 1);
    assert_eq!(
        p.send(&text("again")),
        vec![Ok(Event::Text(Bytes::from_static(b"again")))]
    );
}

#[test]
fn deflate_and_the_close_handshake_survive_the_idle_form() {
    let mut p = Peer::new().deflate();
    let idle = p.conn.into_idle().expect("idle");
    p.conn = idle.into_active();
    let mut z = Vec::new();
    assert!(compress_stateless(15, 6, b"Hello Hello Hello", &mut z));
    assert_eq!(
        p.send(&frame(0xC1, &z, true)),
        [Ok(Event::Text("Hello Hello Hello".into()))]
    );
    p.conn.close(CloseCode::Normal, "bye");
    assert_eq!(p.close_code_sent(), Some(1000));
    let idle = p.conn.into_idle().expect("idle");
    assert_eq!(idle.close_code(), Some(1000));
    p.conn = idle.into_active();
    assert!(!p.conn.is_open() && !p.conn.is_closed(), "still closing");
    // The peer's Close completes the handshake: nothing more is sent.
    p.send(&frame(0x88, &1000u16.to_be_bytes(), true));
    assert!(p.conn.is_closed());
}
