//! Property tests: the decoder against random input and random valid conversations, with the
//! input split at arbitrary (and at every) chunk boundaries.

use bytes::BytesMut;
use proptest::prelude::*;
use switchboard_ws_proto::header::FrameHeader;
use switchboard_ws_proto::utf8::Utf8Validator;
use switchboard_ws_proto::{
    Config, Connection, DeflateConfig, DeflateParams, Event, MessageKind, OpCode, ProtocolError,
};

/// One thing a client sends.
#[derive(Debug, Clone)]
enum Sent {
    Message(MessageKind, Vec<u8>),
    Ping(Vec<u8>),
}

fn sent_strategy() -> impl Strategy<Value = Sent> {
    prop_oneof![
        ".{0,40}".prop_map(|s| Sent::Message(MessageKind::Text, s.into_bytes())),
        proptest::collection::vec(any::<u8>(), 0..300)
            .prop_map(|b| Sent::Message(MessageKind::Binary, b)),
        proptest::collection::vec(any::<u8>(), 0..125).prop_map(Sent::Ping),
    ]
}

fn deflate_params() -> DeflateParams {
    DeflateParams {
        server_no_context_takeover: true,
        client_no_context_takeover: true,
        ..DeflateParams::default()
    }
}

fn pair(deflate: bool) -> (Connection, Connection) {
    let config = Config::default();
    let mut client = Connection::client(&config);
    let mut server = Connection::server(&config);
    if deflate {
        let dc = DeflateConfig {
            compression_threshold: 8,
            ..DeflateConfig::default()
        };
        client = client.with_deflate(deflate_params(), &dc);
        server = server.with_deflate(deflate_params(), &dc);
    }
    (client, server)
}

fn expected(sent: &[Sent]) -> Vec<Event> {
    sent.iter()
        .map(|s| match s {
            Sent::Message(MessageKind::Text, b) => Event::Text(b.clone().into()),
            Sent::Message(MessageKind::Binary, b) => Event::Binary(b.clone().into()),
            Sent::Ping(p) => Event::Ping(p.clone().into()),
        })
        .collect()
}

fn encode(client: &mut Connection, sent: &[Sent]) -> Vec<u8> {
    for s in sent {
        match s {
            Sent::Message(kind, b) => client.send(*kind, b),
            Sent::Ping(p) => client.send_ping(p),
        }
    }
    client.output().split().to_vec()
}

/// Feed `bytes` to `server` in chunks ending at `cuts` (sorted offsets).
fn decode_in_chunks(server: &mut Connection, bytes: &[u8], cuts: &[usize]) -> Vec<Event> {
    let mut input = BytesMut::new();
    let mut events = Vec::new();
    let mut start = 0;
    for &end in cuts.iter().chain(std::iter::once(&bytes.len())) {
        let end = end.clamp(start, bytes.len());
        input.extend_from_slice(&bytes[start..end]);
        start = end;
        while let Some(e) = server.handle_input(&mut input).expect("valid input") {
            events.push(e);
        }
    }
    events
}

proptest! {
    #[test]
    fn valid_conversations_decode_to_what_was_sent(
        sent in proptest::collection::vec(sent_strategy(), 0..12),
        mut cuts in proptest::collection::vec(0usize..4000, 0..20),
        deflate in any::<bool>(),
    ) {
        let (mut client, mut server) = pair(deflate);
        let bytes = encode(&mut client, &sent);
        cuts.sort_unstable();
        prop_assert_eq!(decode_in_chunks(&mut server, &bytes, &cuts), expected(&sent));
    }

    #[test]
    fn fragmented_messages_with_interleaved_pings_reassemble(
        text in ".{1,60}",
        pieces in 1usize..6,
        ping in proptest::collection::vec(any::<u8>(), 0..10),
    ) {
        // Build the fragments by hand: the encoder only sends whole messages.
        let bytes = text.as_bytes();
        let step = bytes.len().div_ceil(pieces);
        let mut wire = Vec::new();
        for (i, chunk) in bytes.chunks(step).enumerate() {
            let last = (i + 1) * step >= bytes.len();
            let opcode = if i == 0 { OpCode::Text } else { OpCode::Continuation };
            push_frame(&mut wire, opcode, last, chunk);
            push_frame(&mut wire, OpCode::Ping, true, &ping);
        }
        let (_, mut server) = pair(false);
        let events = decode_in_chunks(&mut server, &wire, &[]);
        let texts: Vec<Event> = events.into_iter().filter(|e| matches!(e, Event::Text(_))).collect();
        prop_assert_eq!(texts, vec![Event::Text(text.clone().into())]);
    }

    #[test]
    fn random_bytes_never_panic_and_errors_leave_a_close_frame(
        bytes in proptest::collection::vec(any::<u8>(), 0..2000),
        mut cuts in proptest::collection::vec(0usize..2000, 0..10),
        deflate in any::<bool>(),
    ) {
        let (_, mut server) = pair(deflate);
        cuts.sort_unstable();
        let mut input = BytesMut::new();
        let mut start = 0;
        for &end in cuts.iter().chain(std::iter::once(&bytes.len())) {
            let end = end.clamp(start, bytes.len());
            input.extend_from_slice(&bytes[start..end]);
            start = end;
            loop {
                match server.handle_input(&mut input) {
                    Ok(Some(_)) => continue,
                    Ok(None) => break,
                    Err(e) => {
                        prop_assert!(server.is_closed());
                        // The Close is the last frame queued (a Pong may precede it).
                        let out = server.output().to_vec();
                        let mut pos = 0;
                        let (mut h, mut n) = FrameHeader::parse(&out).unwrap().unwrap();
                        while pos + n + h.payload_len as usize != out.len() {
                            pos += n + h.payload_len as usize;
                            (h, n) = FrameHeader::parse(&out[pos..]).unwrap().unwrap();
                        }
                        let n = pos + n;
                        prop_assert_eq!(h.opcode, OpCode::Close);
                        let code = u16::from_be_bytes([out[n], out[n + 1]]);
                        prop_assert_eq!(code, e.close_code().as_u16());
                        return Ok(());
                    }
                }
            }
        }
    }

    #[test]
    fn header_encode_parse_roundtrip(
        opcode in prop_oneof![Just(OpCode::Text), Just(OpCode::Binary), Just(OpCode::Continuation)],
        fin in any::<bool>(), rsv1 in any::<bool>(),
        mask in proptest::option::of(any::<[u8; 4]>()),
        len in prop_oneof![0u64..126, 126u64..=65535, 65536u64..(1 << 40)],
    ) {
        let h = FrameHeader { fin, rsv1, opcode, mask, payload_len: len };
        let mut buf = Vec::new();
        h.encode(&mut buf);
        prop_assert_eq!(FrameHeader::parse(&buf), Ok(Some((h, buf.len()))));
        for i in 0..buf.len() {
            prop_assert_eq!(FrameHeader::parse(&buf[..i]), Ok(None));
        }
    }

    #[test]
    fn utf8_validator_agrees_with_std_however_split(
        bytes in proptest::collection::vec(prop_oneof![any::<u8>(), 0x80u8..0xc0], 0..40),
        mut cuts in proptest::collection::vec(0usize..40, 0..6),
    ) {
        cuts.sort_unstable();
        let mut v = Utf8Validator::new();
        let mut ok = true;
        let mut start = 0;
        for &end in cuts.iter().chain(std::iter::once(&bytes.len())) {
            let end = end.clamp(start, bytes.len());
            ok &= v.feed(&bytes[start..end]).is_ok();
            start = end;
        }
        ok &= v.finish().is_ok();
        prop_assert_eq!(ok, std::str::from_utf8(&bytes).is_ok());
    }
}

fn push_frame(out: &mut Vec<u8>, opcode: OpCode, fin: bool, payload: &[u8]) {
    let key = [9, 8, 7, 6];
    FrameHeader {
        fin,
        rsv1: false,
        opcode,
        mask: Some(key),
        payload_len: payload.len() as u64,
    }
    .encode(out);
    let start = out.len();
    out.extend_from_slice(payload);
    switchboard_ws_proto::mask::apply_mask(&mut out[start..], key, 0);
}

#[test]
fn a_conversation_split_at_every_byte_boundary_decodes_the_same() {
    let sent = vec![
        Sent::Message(MessageKind::Text, "héllo wörld".into()),
        Sent::Ping(b"p".to_vec()),
        Sent::Message(MessageKind::Binary, vec![0, 1, 2, 255]),
        Sent::Message(MessageKind::Text, "x".repeat(200).into_bytes()),
    ];
    for deflate in [false, true] {
        let (mut client, _) = pair(deflate);
        let bytes = encode(&mut client, &sent);
        for cut in 0..=bytes.len() {
            let (_, mut server) = pair(deflate);
            assert_eq!(
                decode_in_chunks(&mut server, &bytes, &[cut]),
                expected(&sent),
                "cut at {cut}, deflate {deflate}"
            );
        }
        // And byte by byte.
        let (_, mut server) = pair(deflate);
        let every: Vec<usize> = (0..bytes.len()).collect();
        assert_eq!(
            decode_in_chunks(&mut server, &bytes, &every),
            expected(&sent)
        );
    }
}

#[test]
fn errors_map_to_the_spec_close_codes() {
    assert_eq!(ProtocolError::InvalidUtf8.close_code().as_u16(), 1007);
    assert_eq!(
        ProtocolError::MessageTooBig { limit: 1 }
            .close_code()
            .as_u16(),
        1009
    );
    assert_eq!(ProtocolError::UnmaskedFrame.close_code().as_u16(), 1002);
}
