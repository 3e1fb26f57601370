//! Exact bytes of every packet type and namespace form, binary packets, and every parse error.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

use bytes::Bytes;
use serde_json::{json, Map, Value};
use switchboard_socketio_proto::{
    parse, AckId, Args, Decoder, DecoderConfig, Encoded, EventName, Namespace, Packet, PacketType,
    ParseError,
};

fn nsp(name: &str) -> Namespace {
    Namespace::new(name).unwrap()
}

fn obj(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => panic!("not an object"),
    }
}

fn args(values: Value) -> Args {
    match values {
        Value::Array(items) => Args::from_values(items),
        _ => panic!("not an array"),
    }
}

/// Decodes to `packet` and encodes back to the same text.
fn exact(text: &str, packet: Packet) {
    assert_eq!(parse(text).as_ref(), Ok(&packet), "decoding {text}");
    assert_eq!(packet.encode().text, text, "encoding {packet:?}");
    assert!(packet.encode().attachments.is_empty());
}

#[test]
fn connect_packets() {
    exact(
        "0",
        Packet::Connect {
            nsp: Namespace::root(),
            data: None,
        },
    );
    exact(
        "0/admin,",
        Packet::Connect {
            nsp: nsp("/admin"),
            data: None,
        },
    );
    exact(
        r#"0{"token":"123"}"#,
        Packet::Connect {
            nsp: Namespace::root(),
            data: Some(obj(json!({"token":"123"}))),
        },
    );
    exact(
        r#"0/admin,{"token":"123"}"#,
        Packet::Connect {
            nsp: nsp("/admin"),
            data: Some(obj(json!({"token":"123"}))),
        },
    );
    // Server side: the CONNECT reply.
    exact(
        r#"0{"sid":"oSO0OpakMV_3jnilAAAA"}"#,
        Packet::Connect {
            nsp: Namespace::root(),
            data: Some(obj(json!({"sid":"oSO0OpakMV_3jnilAAAA"}))),
        },
    );
}

#[test]
fn namespace_forms() {
    // Without the trailing comma (what some clients send for CONNECT).
    assert_eq!(
        parse("0/nsp"),
        Ok(Packet::Connect {
            nsp: nsp("/nsp"),
            data: None
        })
    );
    assert_eq!(parse("1/nsp"), Ok(Packet::Disconnect { nsp: nsp("/nsp") }));
    // `/` written out is the default namespace, which the encoder omits.
    assert_eq!(
        parse("0/,"),
        Ok(Packet::Connect {
            nsp: Namespace::root(),
            data: None
        })
    );
    assert_eq!(parse(r#"2/,["a"]"#).unwrap().encode().text, r#"2["a"]"#);
    // Nested paths and any character but a comma.
    exact(
        r#"2/a/b-é?x=1,["e"]"#,
        Packet::event(nsp("/a/b-é?x=1"), "e", Args::new()),
    );
    // Without a comma the namespace runs to the end: the JSON is part of it, no data.
    assert_eq!(
        parse(r#"0/chat{"a":1}"#),
        Ok(Packet::Connect {
            nsp: nsp(r#"/chat{"a":1}"#),
            data: None
        })
    );
}

#[test]
fn disconnect_packets() {
    exact(
        "1",
        Packet::Disconnect {
            nsp: Namespace::root(),
        },
    );
    exact("1/admin,", Packet::Disconnect { nsp: nsp("/admin") });
}

#[test]
fn event_packets() {
    exact(
        r#"2["message","hi"]"#,
        Packet::event(Namespace::root(), "message", args(json!(["hi"]))),
    );
    exact(
        r#"2["ping"]"#,
        Packet::event(Namespace::root(), "ping", Args::new()),
    );
    exact(
        r#"2["a",1,{},[],null,true,"x",1.5]"#,
        Packet::event(
            Namespace::root(),
            "a",
            args(json!([1, {}, [], null, true, "x", 1.5])),
        ),
    );
    exact(
        r#"2/chat,12["hello",{"text":"hi"}]"#,
        Packet::Event {
            nsp: nsp("/chat"),
            name: "hello".into(),
            args: args(json!([{"text":"hi"}])),
            ack: Some(AckId(12)),
        },
    );
    exact(
        r#"20["a"]"#,
        Packet::Event {
            nsp: Namespace::root(),
            name: "a".into(),
            args: Args::new(),
            ack: Some(AckId(0)),
        },
    );
    // A numeric event name, as the reference parser allows.
    let packet = parse(r#"2[1,"a",{}]"#).unwrap();
    let Packet::Event { name, .. } = &packet else {
        panic!()
    };
    assert_eq!(name, &EventName::Number(1.into()));
    assert_eq!(name.as_str(), "1");
    assert_eq!(packet.encode().text, r#"2[1,"a",{}]"#);
    // Reserved-looking names in other positions are fine; near-reserved names too.
    exact(
        r#"2["Connect","connect"]"#,
        Packet::event(Namespace::root(), "Connect", args(json!(["connect"]))),
    );
}

#[test]
fn ack_packets() {
    exact(
        r#"3/chat,12[{"ok":true}]"#,
        Packet::Ack {
            nsp: nsp("/chat"),
            id: AckId(12),
            args: args(json!([{"ok":true}])),
        },
    );
    exact(
        r#"31[]"#,
        Packet::Ack {
            nsp: Namespace::root(),
            id: AckId(1),
            args: Args::new(),
        },
    );
    exact(
        r#"3123["a",1,{}]"#,
        Packet::Ack {
            nsp: Namespace::root(),
            id: AckId(123),
            args: args(json!(["a", 1, {}])),
        },
    );
    // Without data: no arguments (encoded back with `[]`).
    assert_eq!(
        parse("3/chat,7"),
        Ok(Packet::Ack {
            nsp: nsp("/chat"),
            id: AckId(7),
            args: Args::new()
        })
    );
    exact(
        "318446744073709551615[]",
        Packet::Ack {
            nsp: Namespace::root(),
            id: AckId(u64::MAX),
            args: Args::new(),
        },
    );
}

#[test]
fn connect_error_packets() {
    exact(
        r#"4/admin,{"message":"Invalid namespace"}"#,
        Packet::ConnectError {
            nsp: nsp("/admin"),
            data: json!({"message":"Invalid namespace"}),
        },
    );
    exact(
        r#"4{"message":"Authentication failed"}"#,
        Packet::ConnectError {
            nsp: Namespace::root(),
            data: json!({"message":"Authentication failed"}),
        },
    );
    exact(
        r#"4"Unauthorized""#,
        Packet::ConnectError {
            nsp: Namespace::root(),
            data: json!("Unauthorized"),
        },
    );
}

#[test]
fn json_output_is_javascript_compact() {
    let packet = Packet::event(
        Namespace::root(),
        "m",
        args(json!([1.0, -0.0, 1e21, 0.000001, 1e-7, "é\u{1}\"\\/\u{2028}", {"b":1,"a":[]}])),
    );
    assert_eq!(
        packet.encode().text,
        "2[\"m\",1,0,1e+21,0.000001,1e-7,\"é\\u0001\\\"\\\\/\u{2028}\",{\"a\":[],\"b\":1}]"
    );
    // A float that came in as `2.0` goes out as `2`, like the reference server.
    assert_eq!(
        parse(r#"2["m",2.0,1E3]"#).unwrap().encode().text,
        r#"2["m",2,1000]"#
    );
}

fn binary_round_trip(text: &str, attachments: &[&'static [u8]], packet: Packet) {
    let mut decoder = Decoder::default();
    assert_eq!(decoder.decode_text(text), Ok(None), "{text}");
    for (i, data) in attachments.iter().enumerate() {
        assert!(decoder.is_reconstructing());
        let got = decoder.decode_binary(Bytes::from_static(data)).unwrap();
        if i + 1 < attachments.len() {
            assert_eq!(got, None);
        } else {
            assert_eq!(got.as_ref(), Some(&packet));
        }
    }
    assert!(!decoder.is_reconstructing());
    assert_eq!(
        packet.encode(),
        Encoded {
            text: text.to_owned(),
            attachments: attachments.iter().map(|a| Bytes::from_static(a)).collect(),
        }
    );
}

#[test]
fn binary_events_and_acks() {
    let mut a = Args::new();
    a.push_binary(Bytes::from_static(b"\x01\x02\x03"));
    binary_round_trip(
        r#"51-["hello",{"_placeholder":true,"num":0}]"#,
        &[b"\x01\x02\x03"],
        Packet::event(Namespace::root(), "hello", a),
    );

    let mut a = Args::new();
    a.push(json!("x"));
    let file = a.attach(Bytes::from_static(b"file"));
    a.push(json!({"name":"f","data": file}));
    a.push_binary(Bytes::from_static(b""));
    binary_round_trip(
        r#"52-/chat,7["upload","x",{"data":{"_placeholder":true,"num":0},"name":"f"},{"_placeholder":true,"num":1}]"#,
        &[b"file", b""],
        Packet::Event {
            nsp: nsp("/chat"),
            name: "upload".into(),
            args: a,
            ack: Some(AckId(7)),
        },
    );

    let mut a = Args::new();
    a.push_binary(Bytes::from_static(b"\xff"));
    binary_round_trip(
        r#"61-/chat,12[{"_placeholder":true,"num":0}]"#,
        &[b"\xff"],
        Packet::Ack {
            nsp: nsp("/chat"),
            id: AckId(12),
            args: a,
        },
    );
}

#[test]
fn decoded_binary_packets_are_canonical() {
    // Placeholders out of order, one used twice, one unused, an extra key: the values are
    // what the reference decoder reconstructs, renumbered as its encoder would write them.
    let mut decoder = Decoder::default();
    let text = r#"53-["e",{"_placeholder":true,"num":2,"x":1},[{"_placeholder":true,"num":0},{"_placeholder":true,"num":2}]]"#;
    assert_eq!(decoder.decode_text(text), Ok(None));
    assert_eq!(decoder.decode_binary(Bytes::from_static(b"a")), Ok(None));
    assert_eq!(
        decoder.decode_binary(Bytes::from_static(b"unused")),
        Ok(None)
    );
    let packet = decoder
        .decode_binary(Bytes::from_static(b"c"))
        .unwrap()
        .unwrap();
    let Packet::Event { args, .. } = &packet else {
        panic!()
    };
    assert_eq!(
        args.attachments(),
        &[
            Bytes::from_static(b"c"),
            Bytes::from_static(b"a"),
            Bytes::from_static(b"c")
        ]
    );
    assert_eq!(args.binary(&args.values()[0]).unwrap().as_ref(), b"c");
    assert_eq!(
        packet.encode().text,
        r#"53-["e",{"_placeholder":true,"num":0},[{"_placeholder":true,"num":1},{"_placeholder":true,"num":2}]]"#
    );
    // Announced attachments that no placeholder uses: a plain event once reconstructed.
    let mut decoder = Decoder::default();
    assert_eq!(decoder.decode_text(r#"51-["e"]"#), Ok(None));
    let packet = decoder
        .decode_binary(Bytes::from_static(b"x"))
        .unwrap()
        .unwrap();
    assert_eq!(packet.packet_type(), PacketType::Event);
    assert_eq!(packet.encode().text, r#"2["e"]"#);
}

#[test]
fn placeholders_in_plain_packets_are_plain_objects() {
    let text = r#"2["e",{"_placeholder":true,"num":0}]"#;
    let packet = parse(text).unwrap();
    let Packet::Event { args, .. } = &packet else {
        panic!()
    };
    assert!(!args.has_binary());
    assert_eq!(args.binary(&args.values()[0]), None);
    assert_eq!(packet.encode().text, text);
}

#[test]
fn decoder_accepts_packets_one_after_another() {
    let mut decoder = Decoder::default();
    assert!(decoder.decode_text(r#"2["a"]"#).unwrap().is_some());
    assert_eq!(
        decoder.decode_text(r#"51-["b",{"_placeholder":true,"num":0}]"#),
        Ok(None)
    );
    assert!(decoder
        .decode_binary(Bytes::from_static(b"1"))
        .unwrap()
        .is_some());
    assert!(decoder.decode_text(r#"2["c"]"#).unwrap().is_some());
    // reset() drops a partial packet.
    assert_eq!(decoder.decode_text(r#"51-["d"]"#), Ok(None));
    decoder.reset();
    assert!(decoder.decode_text(r#"2["e"]"#).unwrap().is_some());
}

fn error(text: &str, expected: ParseError) {
    assert_eq!(
        Decoder::default().decode_text(text),
        Err(expected),
        "{text:?}"
    );
}

#[test]
fn every_parse_error() {
    error("", ParseError::Empty);
    error("7", ParseError::UnknownType('7'));
    error("999", ParseError::UnknownType('9'));
    error("a", ParseError::UnknownType('a'));
    error(" 2[\"a\"]", ParseError::UnknownType(' '));
    for bad in [
        "5",
        "51",
        "50-",
        "5a-",
        "51.23-",
        "5-[\"a\"]",
        "5 1-[\"a\"]",
        "6-1[]",
        "5+1-[\"a\"]",
    ] {
        error(bad, ParseError::IllegalAttachments);
    }
    error(
        r#"511-["a"]"#,
        ParseError::TooManyAttachments {
            count: 11,
            limit: 10,
        },
    );
    error(
        "599999999999999999999999999-[\"a\"]",
        ParseError::TooManyAttachments {
            count: usize::MAX,
            limit: 10,
        },
    );
    error("2123456789012345678901[\"a\"]", ParseError::AckIdOutOfRange);
    // Not JSON (the reference parser's "invalid payload").
    for bad in [
        r#"442["some","data""#,
        r#"2/admin,"invalid"#,
        "2{",
        "0/admin,{",
        "2[\"a\"]x",
    ] {
        error(bad, ParseError::InvalidJson);
    }
    for bad in [r#"0/admin,"invalid""#, "0[]", "0null", "0true", "0\"s\""] {
        error(bad, ParseError::InvalidConnectPayload);
    }
    // An ack id on a CONNECT or DISCONNECT is read and ignored, as by the reference parser.
    assert_eq!(
        parse("01"),
        Ok(Packet::Connect {
            nsp: Namespace::root(),
            data: None
        })
    );
    assert_eq!(parse("1/a,5"), Ok(Packet::Disconnect { nsp: nsp("/a") }));
    error("1/admin,{}", ParseError::DisconnectWithPayload);
    error("1[]", ParseError::DisconnectWithPayload);
    for bad in ["2", "2/admin,", "2/admin,{}", "2[]", "2\"a\"", "21", "51-"] {
        // "51-" has no data: an event without a name.
        error(bad, ParseError::InvalidEventPayload);
    }
    for bad in [
        r#"2[{"toString":"foo"}]"#,
        r#"2[true,"foo"]"#,
        r#"2[null,"bar"]"#,
        r#"2[["a"]]"#,
    ] {
        error(bad, ParseError::InvalidEventName);
    }
    for name in [
        "connect",
        "connect_error",
        "disconnect",
        "disconnecting",
        "newListener",
        "removeListener",
    ] {
        error(
            &format!("2[\"{name}\",\"123\"]"),
            ParseError::ReservedEventName(name.to_owned()),
        );
    }
    error(r#"3["a"]"#, ParseError::MissingAckId);
    error(r#"3/chat,["a"]"#, ParseError::MissingAckId);
    for bad in ["31{}", "31\"a\"", "31null"] {
        error(bad, ParseError::InvalidAckPayload);
    }
    for bad in ["4", "4/admin,", "4[]", "41", "4null"] {
        error(bad, ParseError::InvalidConnectErrorPayload);
    }
    // Binary packets: bad placeholders once the attachments are in.
    for bad in [json!(1), json!(-1), json!(0.5), json!("0"), json!(null)] {
        let mut decoder = Decoder::default();
        let text = format!(r#"51-["e",{{"_placeholder":true,"num":{bad}}}]"#);
        assert_eq!(decoder.decode_text(&text), Ok(None));
        assert_eq!(
            decoder.decode_binary(Bytes::from_static(b"x")),
            Err(ParseError::IllegalPlaceholder),
            "{text}"
        );
    }
    // `parse` refuses binary headers (it cannot wait for attachments).
    assert_eq!(
        parse(r#"51-["a",{"_placeholder":true,"num":0}]"#),
        Err(ParseError::IllegalAttachments)
    );
}

#[test]
fn decoder_sequence_errors_and_limits() {
    let mut decoder = Decoder::default();
    assert_eq!(
        decoder.decode_binary(Bytes::from_static(b"x")),
        Err(ParseError::UnexpectedBinary)
    );
    assert_eq!(decoder.decode_text(r#"52-["a"]"#), Ok(None));
    assert_eq!(decoder.decode_binary(Bytes::from_static(b"x")), Ok(None));
    assert_eq!(
        decoder.decode_text(r#"2["a"]"#),
        Err(ParseError::UnexpectedText)
    );
    assert!(!decoder.is_reconstructing());

    let mut decoder = Decoder::new(DecoderConfig {
        max_attachments: 2,
        max_attachment_bytes: 10,
    });
    assert_eq!(
        decoder.decode_text(r#"53-["hello",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1},{"_placeholder":true,"num":2}]"#),
        Err(ParseError::TooManyAttachments { count: 3, limit: 2 })
    );
    assert_eq!(decoder.decode_text(r#"52-["a"]"#), Ok(None));
    assert_eq!(decoder.decode_binary(Bytes::from(vec![0; 6])), Ok(None));
    assert_eq!(
        decoder.decode_binary(Bytes::from(vec![0; 5])),
        Err(ParseError::AttachmentsTooLarge { limit: 10 })
    );
    assert!(!decoder.is_reconstructing());
    assert_eq!(decoder.decode_text(r#"52-["a"]"#), Ok(None));
    assert_eq!(decoder.decode_binary(Bytes::from(vec![0; 5])), Ok(None));
    assert!(decoder
        .decode_binary(Bytes::from(vec![0; 5]))
        .unwrap()
        .is_some());
}

#[test]
fn encoder_renumbers_hand_built_placeholders() {
    let args = Args::from_parts(
        vec![
            json!({"_placeholder":true,"num":1}),
            json!({"_placeholder":true,"num":0}),
        ],
        vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")],
    );
    let encoded = Packet::event(Namespace::root(), "e", args).encode();
    assert_eq!(
        encoded.text,
        r#"52-["e",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#
    );
    assert_eq!(
        encoded.attachments,
        [Bytes::from_static(b"b"), Bytes::from_static(b"a")]
    );
}
