//! The MessagePack parser: wire image, binary values inline, validation.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

use bytes::Bytes;
use serde_json::json;
use switchboard_socketio_proto::msgpack::{decode, encode};
use switchboard_socketio_proto::{AckId, Args, Namespace, Packet, ParseError};

fn mp(value: serde_json::Value) -> Vec<u8> {
    rmp_serde::to_vec(&value).unwrap()
}

#[test]
fn packets_round_trip_with_the_reference_layout() {
    let packet = Packet::Event {
        nsp: Namespace::root(),
        name: "hey".into(),
        args: Args::from_values(vec![json!("you")]),
        ack: None,
    };
    // {"type":2,"data":["hey","you"],"nsp":"/"}
    let bytes = encode(&packet);
    assert_eq!(
        bytes.as_ref(),
        b"\x83\xa4type\x02\xa4data\x92\xa3hey\xa3you\xa3nsp\xa1/"
    );
    assert_eq!(decode(&bytes), Ok(packet));

    // Binary inline: bin8, no placeholder on the wire.
    let mut args = Args::new();
    args.push(json!([]));
    args.push_binary(Bytes::from_static(b"asdf"));
    let packet = Packet::Event {
        nsp: Namespace::new("/chat").unwrap(),
        name: "binary".into(),
        args,
        ack: Some(AckId(3)),
    };
    let bytes = encode(&packet);
    assert_eq!(
        bytes.as_ref(),
        b"\x84\xa4type\x02\xa4data\x93\xa6binary\x90\xc4\x04asdf\xa2id\x03\xa3nsp\xa5/chat"
    );
    let decoded = decode(&bytes).unwrap();
    assert_eq!(decoded, packet);
    let Packet::Event { args, .. } = &decoded else {
        panic!()
    };
    assert_eq!(args.binary(&args.values()[1]).unwrap().as_ref(), b"asdf");

    for packet in [
        Packet::Connect {
            nsp: Namespace::root(),
            data: None,
        },
        Packet::Connect {
            nsp: Namespace::root(),
            data: Some(json!({"token":"t"}).as_object().unwrap().clone()),
        },
        Packet::Disconnect {
            nsp: Namespace::new("/a").unwrap(),
        },
        Packet::Ack {
            nsp: Namespace::root(),
            id: AckId(7),
            args: Args::from_values(vec![json!(42), json!(1.5)]),
        },
        Packet::ConnectError {
            nsp: Namespace::root(),
            data: json!({"message":"Invalid namespace"}),
        },
    ] {
        assert_eq!(decode(&encode(&packet)), Ok(packet));
    }
    // Integral floats go out as integers (as a JavaScript encoder writes numbers).
    let packet = Packet::Ack {
        nsp: Namespace::root(),
        id: AckId(0),
        args: Args::from_values(vec![json!(2.0)]),
    };
    assert_eq!(
        encode(&packet).as_ref(),
        b"\x84\xa4type\x03\xa4data\x91\x02\xa2id\x00\xa3nsp\xa1/"
    );
}

#[test]
fn javascript_client_packets_decode() {
    // socket.io-client adds `options`, and notepack writes `undefined` as fixext1 type 0.
    let mut bytes =
        b"\x84\xa4type\x00\xa4data\xd4\x00\x00\xa3nsp\xa1/\xa7options\x81\xa8compress\xc3".to_vec();
    assert_eq!(
        decode(&bytes),
        Ok(Packet::Connect {
            nsp: Namespace::root(),
            data: None
        })
    );
    bytes[6] = 0x01;
    // DISCONNECT with data: undefined is a DISCONNECT without data.
    assert_eq!(
        decode(&bytes),
        Ok(Packet::Disconnect {
            nsp: Namespace::root()
        })
    );
    // undefined inside arrays is null, inside maps absent.
    let bytes = b"\x83\xa4type\x02\xa4data\x93\xa1e\xd4\x00\x00\x81\xa1k\xd4\x00\x00\xa3nsp\xa1/";
    assert_eq!(
        decode(bytes),
        Ok(Packet::event(
            Namespace::root(),
            "e",
            Args::from_values(vec![json!(null), json!({})])
        ))
    );
}

#[test]
fn invalid_packets() {
    assert_eq!(decode(b""), Err(ParseError::InvalidMessagePack));
    assert_eq!(decode(b"\xc1"), Err(ParseError::InvalidMessagePack));
    assert_eq!(decode(&mp(json!([1]))), Err(ParseError::InvalidMessagePack));
    let mut trailing = mp(json!({"type":1,"nsp":"/"}));
    trailing.push(0xc0);
    assert_eq!(decode(&trailing), Err(ParseError::InvalidMessagePack));
    // Other extension types, non-string keys, too deep.
    assert_eq!(
        decode(b"\x83\xa4type\x02\xa4data\x92\xa1e\xd4\x01\x00\xa3nsp\xa1/"),
        Err(ParseError::InvalidMessagePack)
    );
    assert_eq!(
        decode(b"\x83\xa4type\x02\xa4data\x92\xa1e\x81\x01\x02\xa3nsp\xa1/"),
        Err(ParseError::InvalidMessagePack)
    );
    let mut deep = b"\x83\xa4type\x02\xa3nsp\xa1/\xa4data\x92\xa1e".to_vec();
    deep.extend(std::iter::repeat_n(0x91, 200));
    deep.push(0xc0);
    assert_eq!(decode(&deep), Err(ParseError::InvalidMessagePack));

    for bad in [
        json!({}),
        json!({"type":"a"}),
        json!({"type":7}),
        json!({"type":5,"nsp":"/","data":[]}),
        json!({"type":-1}),
    ] {
        assert!(
            matches!(decode(&mp(bad.clone())), Err(ParseError::UnknownType(_))),
            "{bad}"
        );
    }
    for bad in [
        json!({"type":2}),
        json!({"type":2,"nsp":2}),
        json!({"type":2,"nsp":"chat","data":["a"]}),
        json!({"type":2,"nsp":"/a,b","data":["a"]}),
    ] {
        assert_eq!(
            decode(&mp(bad.clone())),
            Err(ParseError::InvalidNamespace),
            "{bad}"
        );
    }
    let cases = [
        (json!({"type":2,"nsp":"/"}), ParseError::InvalidEventPayload),
        (
            json!({"type":2,"nsp":"/","data":4}),
            ParseError::InvalidEventPayload,
        ),
        (
            json!({"type":2,"nsp":"/","data":[]}),
            ParseError::InvalidEventPayload,
        ),
        (
            json!({"type":2,"nsp":"/","data":[true]}),
            ParseError::InvalidEventName,
        ),
        (
            json!({"type":2,"nsp":"/","data":["disconnect"]}),
            ParseError::ReservedEventName("disconnect".into()),
        ),
        (
            json!({"type":2,"nsp":"/","data":["a"],"id":"a"}),
            ParseError::InvalidAckId,
        ),
        (
            json!({"type":2,"nsp":"/","data":["a"],"id":-1}),
            ParseError::InvalidAckId,
        ),
        (
            json!({"type":3,"nsp":"/","data":[]}),
            ParseError::MissingAckId,
        ),
        (
            json!({"type":3,"nsp":"/","id":1}),
            ParseError::InvalidAckPayload,
        ),
        (
            json!({"type":0,"nsp":"/","data":[]}),
            ParseError::InvalidConnectPayload,
        ),
        (
            json!({"type":1,"nsp":"/","data":{}}),
            ParseError::DisconnectWithPayload,
        ),
        (
            json!({"type":4,"nsp":"/","data":[]}),
            ParseError::InvalidConnectErrorPayload,
        ),
        (
            json!({"type":4,"nsp":"/"}),
            ParseError::InvalidConnectErrorPayload,
        ),
    ];
    for (bad, error) in cases {
        assert_eq!(decode(&mp(bad.clone())), Err(error), "{bad}");
    }
    // A literal placeholder with a bad index next to real binary values.
    let bytes = b"\x83\xa4type\x02\xa4data\x93\xa1e\xc4\x01x\x82\xac_placeholder\xc3\xa3num\x05\xa3nsp\xa1/";
    assert_eq!(decode(bytes), Err(ParseError::IllegalPlaceholder));
}
