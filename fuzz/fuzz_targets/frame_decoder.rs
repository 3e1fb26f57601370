//! Server-side `Connection` fed arbitrary bytes in arbitrary chunks.
//!
//! Input layout: `[config] [chunking] [bytes from the client...]`
//! - `config` bit 0: permessage-deflate on; bit 1: client_no_context_takeover (the inflater is
//!   dropped after each message); bit 2: server_no_context_takeover; bits 3-4: the message size
//!   limit (64 KiB, 4 KiB, 125 B, 1 B: small limits reach the 1009 paths with short inputs);
//!   bits 5-7: server_max_window_bits (9 + n, capped at 15).
//! - `chunking`: see `Chunker` (0 = at once, 1 = byte by byte, n = random sizes 1..=n).
//!
//! Invariants: no panic; every event is within the limits (text is UTF-8, data <= limit,
//! control payloads <= 125); what the server queues is well-formed unmasked frames, one Pong
//! echoing each Ping; an `Err` happens at most once, leaves `is_closed()`, and the output then
//! ends with a Close frame carrying the error's code; after a Close event or an error nothing
//! more is decoded; the heap held while decoding stays within a few times the limit.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use switchboard_fuzz::{alloc, is_close, parse_frames, Chunker};
use switchboard_ws_proto::{
    CloseCode, Config, Connection, DeflateConfig, DeflateParams, Event, OpCode,
};

const LIMITS: [usize; 4] = [64 * 1024, 4 * 1024, 125, 1];

fuzz_target!(|data: &[u8]| {
    let [cfg, chunking, wire @ ..] = data else {
        return;
    };
    let max = LIMITS[(cfg >> 3 & 3) as usize];
    let config = Config {
        max_message_size: max,
    };
    let mut conn = Connection::server(&config);
    if cfg & 1 != 0 {
        let params = DeflateParams {
            client_no_context_takeover: cfg & 2 != 0,
            server_no_context_takeover: cfg & 4 != 0,
            server_max_window_bits: (9 + (cfg >> 5)).min(15),
            client_max_window_bits: 15,
        };
        conn = conn.with_deflate(params, &DeflateConfig::default());
    }

    // Heap allowed on top of what the input itself occupies: the assembled message (up to the
    // limit, twice while a Vec grows), the inflater (~45 KB zlib state + window), the 64 KiB
    // reserve step of the inflater, and slack.
    let baseline = alloc::live();
    alloc::reset_peak();
    let budget = 4 * max + 512 * 1024 + 4 * wire.len();

    let mut input = BytesMut::new();
    let mut failed = false;
    let mut closed_by_peer = false;
    for chunk in Chunker::new(wire, *chunking) {
        input.extend_from_slice(chunk);
        loop {
            let result = conn.handle_input(&mut input);
            let out = parse_frames(&conn.output().split());
            let done = check_step(&conn, &result, &out, max, failed || closed_by_peer);
            match result {
                Err(_) => failed = true,
                Ok(Some(Event::Close(_))) => closed_by_peer = true,
                _ => {}
            }
            let grown = alloc::peak().saturating_sub(baseline);
            assert!(
                grown <= budget,
                "heap grew by {grown} bytes (budget {budget}, limit {max})"
            );
            if done {
                break;
            }
        }
    }
});

/// Check one `handle_input` call. Returns whether to stop calling (need more input, or closed).
fn check_step(
    conn: &Connection,
    result: &Result<Option<Event>, switchboard_ws_proto::ProtocolError>,
    out: &[switchboard_fuzz::OutFrame],
    max: usize,
    was_closed: bool,
) -> bool {
    for f in out {
        assert!(f.header.mask.is_none(), "server frame masked");
        assert!(f.header.fin, "server frame not final");
        assert!(!f.header.rsv1, "server control frame with RSV1");
    }
    if was_closed {
        // After a Close event or an error the connection decodes and sends nothing.
        assert!(conn.is_closed());
        assert!(
            matches!(result, Ok(None)),
            "decoded after close: {result:?}"
        );
        assert!(out.is_empty(), "sent after close: {out:?}");
        return true;
    }
    match result {
        Err(e) => {
            assert!(conn.is_closed(), "not closed after {e:?}");
            let last = out
                .last()
                .unwrap_or_else(|| panic!("no Close queued after {e:?}"));
            assert!(
                is_close(last),
                "output does not end with Close after {e:?}: {out:?}"
            );
            let code = u16::from_be_bytes([last.payload[0], last.payload[1]]);
            assert_eq!(code, e.close_code().as_u16(), "close code for {e:?}");
            assert!(CloseCode::from_u16(code).is_allowed_on_wire());
            assert!(std::str::from_utf8(&last.payload[2..]).is_ok());
            assert!(
                out.len() == 1,
                "more than the Close queued with the error: {out:?}"
            );
            true
        }
        Ok(None) => {
            assert!(out.is_empty(), "output without an event: {out:?}");
            true
        }
        Ok(Some(event)) => {
            match event {
                Event::Text(t) => {
                    assert!(t.len() <= max, "text of {} > limit {max}", t.len());
                    assert!(std::str::from_utf8(t).is_ok(), "text event is not UTF-8");
                    assert!(out.is_empty());
                }
                Event::Binary(b) => {
                    assert!(b.len() <= max, "binary of {} > limit {max}", b.len());
                    assert!(out.is_empty());
                }
                Event::Ping(p) => {
                    assert!(p.len() <= 125);
                    assert_eq!(out.len(), 1, "one Pong per Ping: {out:?}");
                    assert_eq!(out[0].header.opcode, OpCode::Pong);
                    assert_eq!(&out[0].payload[..], &p[..], "Pong echoes the Ping");
                }
                Event::Pong(p) => {
                    assert!(p.len() <= 125);
                    assert!(out.is_empty());
                }
                Event::Close(frame) => {
                    assert!(conn.is_closed(), "not closed after the peer's Close");
                    assert_eq!(out.len(), 1, "one Close echoed: {out:?}");
                    assert!(is_close(&out[0]));
                    match frame {
                        None => assert!(out[0].payload.is_empty()),
                        Some(f) => {
                            assert!(f.code.is_allowed_on_wire());
                            assert_eq!(&out[0].payload[..], &f.code.as_u16().to_be_bytes());
                        }
                    }
                    return true;
                }
            }
            false
        }
    }
}
