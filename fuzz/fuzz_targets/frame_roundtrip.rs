//! Structure-aware round trip: valid client traffic, encoded by a client-role `Connection`,
//! must decode on a server-role `Connection` to exactly the events that were sent, whatever
//! the fragmentation, interleaved control frames, compression parameters and read sizes.
//!
//! `Connection::send` writes a message as one frame; to fragment it, the target takes that
//! frame (compressed by the client's own deflater, so context takeover stays in step), unmasks
//! it and re-frames the payload into continuation frames cut at fuzzer-chosen points (inside
//! UTF-8 sequences too), each with a fresh mask, with Pings/Pongs in between.

#![no_main]

use arbitrary::Arbitrary;
use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use switchboard_fuzz::{parse_frames, Chunker};
use switchboard_ws_proto::header::FrameHeader;
use switchboard_ws_proto::mask::apply_mask;
use switchboard_ws_proto::{
    CloseCode, CloseFrame, Config, Connection, DeflateConfig, DeflateParams, Event, MessageKind,
    OpCode,
};

#[derive(Debug, Arbitrary)]
struct Input {
    seed: u64,
    deflate: Option<Deflate>,
    ops: Vec<Op>,
    close: Option<(u8, String)>,
    chunking: u8,
}

#[derive(Debug, Arbitrary)]
struct Deflate {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    /// client_max_window_bits = 8 + n % 8 (8 is compressed with 9, as zlib does).
    client_bits: u8,
    server_bits: u8,
    /// Messages at least this long are compressed (0: all of them).
    threshold: u8,
    level: u8,
}

#[derive(Debug, Arbitrary)]
enum Op {
    Text {
        text: String,
        /// The message is `text` repeated `1 + repeat` times (reaches 16- and 64-bit lengths).
        repeat: u8,
        fragments: Vec<Fragment>,
    },
    Binary {
        data: Vec<u8>,
        repeat: u8,
        fragments: Vec<Fragment>,
    },
    Ping(Vec<u8>),
    Pong(Vec<u8>),
}

/// Cut the payload after `len` more bytes, then send the control frames `between`.
#[derive(Debug, Arbitrary)]
struct Fragment {
    len: u16,
    between: Vec<Control>,
}

#[derive(Debug, Arbitrary)]
enum Control {
    Ping(Vec<u8>),
    Pong(Vec<u8>),
}

/// Close codes a client may send.
const CODES: [u16; 8] = [1000, 1001, 1002, 1003, 1007, 1011, 3000, 4999];

const MAX_MESSAGE: usize = 256 * 1024;

fuzz_target!(|input: Input| {
    let config = Config::default();
    let mut client = Connection::client(&config);
    let mut server = Connection::server(&config);
    if let Some(d) = &input.deflate {
        let params = DeflateParams {
            server_no_context_takeover: d.server_no_context_takeover,
            client_no_context_takeover: d.client_no_context_takeover,
            server_max_window_bits: 9 + d.server_bits % 7,
            client_max_window_bits: 8 + d.client_bits % 8,
        };
        let client_config = DeflateConfig {
            compression_threshold: d.threshold as usize,
            level: (d.level % 10) as u32,
            ..DeflateConfig::default()
        };
        client = client.with_deflate(params, &client_config);
        server = server.with_deflate(params, &DeflateConfig::default());
    }

    let mut wire = Vec::new();
    let mut expected = Vec::new();
    let mut key_rng = input.seed ^ 0x5851_f42d_4c95_7f2d;
    for op in &input.ops {
        match op {
            Op::Ping(p) => control(
                &mut client,
                &mut wire,
                &mut expected,
                &Control::Ping(p.clone()),
            ),
            Op::Pong(p) => control(
                &mut client,
                &mut wire,
                &mut expected,
                &Control::Pong(p.clone()),
            ),
            Op::Text {
                text,
                repeat,
                fragments,
            } => {
                let Some(payload) = repeated(text.as_bytes(), *repeat) else {
                    continue;
                };
                client.send(MessageKind::Text, &payload);
                let frame = take_one_frame(&mut client);
                refragment(
                    &mut client,
                    &mut wire,
                    &mut expected,
                    &mut key_rng,
                    frame,
                    fragments,
                );
                expected.push(Event::Text(Bytes::from(payload)));
            }
            Op::Binary {
                data,
                repeat,
                fragments,
            } => {
                let Some(payload) = repeated(data, *repeat) else {
                    continue;
                };
                client.send(MessageKind::Binary, &payload);
                let frame = take_one_frame(&mut client);
                refragment(
                    &mut client,
                    &mut wire,
                    &mut expected,
                    &mut key_rng,
                    frame,
                    fragments,
                );
                expected.push(Event::Binary(Bytes::from(payload)));
            }
        }
    }
    if let Some((code, reason)) = &input.close {
        let code = CloseCode::from_u16(CODES[*code as usize % CODES.len()]);
        client.close(code, reason);
        wire.extend_from_slice(&client.output().split());
        // `close` cuts the reason to 123 bytes at a character boundary, as `CloseFrame::new`.
        expected.push(Event::Close(Some(CloseFrame::new(code, reason))));
    }

    // Decode in chunks, as a socket would deliver them.
    let mut got = Vec::new();
    let mut pongs_sent = Vec::new();
    let mut buf = BytesMut::new();
    for chunk in Chunker::new(&wire, input.chunking) {
        buf.extend_from_slice(chunk);
        loop {
            match server.handle_input(&mut buf) {
                Ok(Some(event)) => got.push(event),
                Ok(None) => break,
                Err(e) => panic!(
                    "server rejected valid traffic: {e:?} after {} events (expected {:?})",
                    got.len(),
                    expected.get(got.len())
                ),
            }
        }
        pongs_sent.extend(parse_frames(&server.output().split()));
    }
    assert!(buf.is_empty(), "{} bytes left undecoded", buf.len());
    assert_eq!(got.len(), expected.len(), "event count");
    for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
        assert!(g == e, "event {i} differs: got {g:?}, sent {e:?}");
    }
    assert!(!server.is_mid_message());

    // The server answers each Ping with a Pong of the same payload (and the Close with a Close).
    let pings: Vec<&Bytes> = expected
        .iter()
        .filter_map(|e| match e {
            Event::Ping(p) => Some(p),
            _ => None,
        })
        .collect();
    let pongs: Vec<&[u8]> = pongs_sent
        .iter()
        .filter(|f| f.header.opcode == OpCode::Pong)
        .map(|f| &f.payload[..])
        .collect();
    assert_eq!(pings.len(), pongs.len(), "one Pong per Ping");
    for (ping, pong) in pings.iter().zip(&pongs) {
        assert_eq!(&ping[..], *pong);
    }
    if input.close.is_some() {
        assert!(server.is_closed());
        let last = pongs_sent.last().expect("Close echoed");
        assert_eq!(last.header.opcode, OpCode::Close);
    }
});

/// `data` repeated `1 + repeat` times, or `None` if that is larger than we want to test.
fn repeated(data: &[u8], repeat: u8) -> Option<Vec<u8>> {
    let n = data.len().checked_mul(1 + repeat as usize)?;
    (n <= MAX_MESSAGE).then(|| data.repeat(1 + repeat as usize))
}

fn take_one_frame(client: &mut Connection) -> switchboard_fuzz::OutFrame {
    let mut frames = parse_frames(&client.output().split());
    assert_eq!(frames.len(), 1, "send() writes one frame");
    frames.pop().unwrap_or_else(|| unreachable!())
}

/// Queue a Ping/Pong through the client and record the event the server must report.
fn control(client: &mut Connection, wire: &mut Vec<u8>, expected: &mut Vec<Event>, c: &Control) {
    let event = match c {
        Control::Ping(p) => {
            client.send_ping(p);
            Event::Ping(Bytes::copy_from_slice(&p[..p.len().min(125)]))
        }
        Control::Pong(p) => {
            client.send_pong(p);
            Event::Pong(Bytes::copy_from_slice(&p[..p.len().min(125)]))
        }
    };
    wire.extend_from_slice(&client.output().split());
    expected.push(event);
}

/// Write `frame`'s payload as a fragmented message: first frame with the original opcode and
/// RSV1, continuations after, FIN on the last; control frames between fragments.
fn refragment(
    client: &mut Connection,
    wire: &mut Vec<u8>,
    expected: &mut Vec<Event>,
    key_rng: &mut u64,
    frame: switchboard_fuzz::OutFrame,
    fragments: &[Fragment],
) {
    let payload = &frame.payload[..];
    let mut pos = 0;
    let mut first = true;
    let mut cuts = fragments.iter();
    loop {
        let cut = cuts.next();
        let end = match cut {
            Some(f) => (pos + f.len as usize).min(payload.len()),
            None => payload.len(),
        };
        let fin = end == payload.len();
        let header = FrameHeader {
            fin,
            rsv1: first && frame.header.rsv1,
            opcode: if first {
                frame.header.opcode
            } else {
                OpCode::Continuation
            },
            mask: Some(next_key(key_rng)),
            payload_len: (end - pos) as u64,
        };
        let mut bytes = Vec::new();
        header.encode(&mut bytes);
        let start = bytes.len();
        bytes.extend_from_slice(&payload[pos..end]);
        if let Some(key) = header.mask {
            apply_mask(&mut bytes[start..], key, 0);
        }
        wire.extend_from_slice(&bytes);
        pos = end;
        first = false;
        if fin {
            return;
        }
        if let Some(f) = cut {
            for c in &f.between {
                control(client, wire, expected, c);
            }
        }
    }
}

fn next_key(x: &mut u64) -> [u8; 4] {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    (*x as u32).to_le_bytes()
}
