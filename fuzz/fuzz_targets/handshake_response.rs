//! `ClientHandshake::parse_response` on arbitrary bytes, for the RFC 6455 sample key
//! (`dGhlIHNhbXBsZSBub25jZQ==`, accept `s3pPLMBiTxaQ9kYGzzhZRbK+xOo=`) so that seeds can hold a
//! valid answer.
//!
//! Invariants: no panic; an accepted head is no longer than the input and parses the same on
//! its own; only the offered subprotocol can be selected; deflate parameters are in range; a
//! client that did not offer deflate never accepts an extension.

#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_ws_proto::ClientHandshake;

const NONCE: [u8; 16] = *b"the sample nonce";

fuzz_target!(|data: &[u8]| {
    let hs = ClientHandshake::new(NONCE, &["a"], true);
    let with_deflate = hs.parse_response(data);
    match &with_deflate {
        Ok(Some((acc, len))) => {
            assert!(*len <= data.len());
            assert_eq!(hs.parse_response(&data[..*len]), with_deflate);
            if let Some(p) = &acc.protocol {
                assert_eq!(p, "a");
            }
            if let Some(d) = &acc.deflate {
                assert!((8..=15).contains(&d.server_max_window_bits));
                assert!((8..=15).contains(&d.client_max_window_bits));
            }
        }
        Ok(None) => assert!(data.len() <= 16 * 1024, "unbounded partial head"),
        Err(_) => {}
    }

    let plain = ClientHandshake::new(NONCE, &["a"], false).parse_response(data);
    if let Ok(Some((acc, _))) = &plain {
        assert_eq!(acc.deflate, None);
        // Without an extension header both clients agree.
        assert_eq!(&plain, &with_deflate);
    }
});
