//! Property tests: packets and payloads survive an encode/decode round trip, and no input
//! makes the decoders panic.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use switchboard_engineio_proto::{decode_payload, encode_payload, Packet, Str};

/// Text without the record separator (the protocol assumes data never contains it).
fn text() -> impl Strategy<Value = String> {
    "[^\u{1e}]{0,40}"
}

fn packet() -> impl Strategy<Value = Packet> {
    prop_oneof![
        text().prop_map(|s| Packet::Open(Str::from(s))),
        Just(Packet::Close),
        text().prop_map(|s| Packet::Ping(Str::from(s))),
        text().prop_map(|s| Packet::Pong(Str::from(s))),
        text().prop_map(Packet::text),
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(Packet::binary),
        Just(Packet::Upgrade),
        Just(Packet::Noop),
    ]
}

proptest! {
    #[test]
    fn payload_round_trip(packets in proptest::collection::vec(packet(), 1..12)) {
        let body = encode_payload(&packets);
        prop_assert_eq!(decode_payload(&body, usize::MAX).unwrap(), packets);
    }

    #[test]
    fn packet_round_trip_text_and_websocket(p in packet()) {
        let mut out = BytesMut::new();
        p.encode_text(&mut out);
        prop_assert_eq!(out.len(), p.encoded_len());
        let s = Str::from_utf8(out.freeze()).unwrap();
        prop_assert_eq!(&Packet::decode_text(&s).unwrap(), &p);
        prop_assert_eq!(&Packet::decode_ws(&p.encode_ws()).unwrap(), &p);
    }

    #[test]
    fn arbitrary_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = decode_payload(&Bytes::from(body), 100);
    }
}
