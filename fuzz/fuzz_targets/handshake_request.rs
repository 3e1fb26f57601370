//! `handshake::server::parse_request` on arbitrary bytes.
//!
//! Invariants: no panic; an accepted head is no longer than the input and parses the same on
//! its own; a refusal has a 4xx status and a well-formed HTTP error response; the `101` built
//! by `accept` (with the default permessage-deflate policy) is accepted by our own client
//! handshake for the same key, with the same subprotocol and deflate parameters.

#![no_main]

use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use switchboard_ws_proto::handshake::generate_key;
use switchboard_ws_proto::handshake::server::{parse_request, MAX_REQUEST_HEAD};
use switchboard_ws_proto::{ClientHandshake, DeflateConfig};

const SUPPORTED: [&str; 2] = ["chat", "superchat"];

fuzz_target!(|data: &[u8]| {
    match parse_request(data) {
        Ok(None) => assert!(data.len() <= MAX_REQUEST_HEAD, "unbounded partial head"),
        Err(e) => {
            assert!(matches!(e.status(), 400 | 405 | 426));
            let resp = e.to_response();
            let mut headers = [httparse::EMPTY_HEADER; 16];
            let mut r = httparse::Response::new(&mut headers);
            let len = match r.parse(&resp) {
                Ok(httparse::Status::Complete(len)) => len,
                other => panic!("error response does not parse: {other:?}"),
            };
            assert_eq!(r.code, Some(e.status()));
            let body = &resp[len..];
            let content_length = r
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .map(|h| {
                    std::str::from_utf8(h.value)
                        .unwrap()
                        .parse::<usize>()
                        .unwrap()
                });
            assert_eq!(content_length, Some(body.len()));
        }
        Ok(Some((req, path, len))) => {
            assert!(len <= data.len() && len <= MAX_REQUEST_HEAD);
            assert!(!path.is_empty());
            // The head alone is the same request.
            let again = parse_request(&data[..len]);
            assert_eq!(again, Ok(Some((req.clone(), path, len))));

            let accepted = req.accept(&SUPPORTED, Some(&DeflateConfig::default()));
            if let Some(p) = &accepted.protocol {
                assert!(SUPPORTED.contains(&p.as_str()) && req.protocols.contains(p));
            }
            let resp = accepted.to_response();

            // Our client, holding the key this request carried, must accept the answer.
            let nonce = decode_key(&req.key);
            assert_eq!(generate_key(nonce), req.key, "key is not canonical base64");
            let protocols: Vec<&str> = req.protocols.iter().map(String::as_str).collect();
            let client = ClientHandshake::new(nonce, &protocols, true);
            match client.parse_response(&resp) {
                Ok(Some((ok, n))) => {
                    assert_eq!(n, resp.len());
                    assert_eq!(ok.protocol, accepted.protocol);
                    assert_eq!(ok.deflate, accepted.deflate);
                }
                other => panic!(
                    "our client rejects our 101: {other:?}\n{}",
                    String::from_utf8_lossy(&resp)
                ),
            }
        }
    }
});

/// Decode a validated `Sec-WebSocket-Key` (base64 of 16 bytes).
fn decode_key(key: &str) -> [u8; 16] {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(key)
        .unwrap_or_else(|e| panic!("accepted key {key:?} is not base64: {e}"));
    bytes
        .try_into()
        .unwrap_or_else(|b: Vec<u8>| panic!("accepted key of {} bytes", b.len()))
}
