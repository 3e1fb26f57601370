//! `Sec-WebSocket-Extensions` parsing and permessage-deflate negotiation.
//!
//! Input: `[policy] [header value...]`; `policy` picks the server's `DeflateConfig` (context
//! takeover flags and the window cap) so negotiation paths beyond the default are reached.
//!
//! Invariants: no panic; parsed names and parameter keys are lower-case tokens; whatever the
//! server agrees to is in range, and its response header, read by our client (`accept_client`),
//! yields exactly the agreed parameters; `accept_client` never accepts out-of-range windows.
//! With `--features strict`: a window size is accepted only as RFC 7692 spells it (1*DIGIT);
//! today `server_max_window_bits=+9` is accepted, because `u8::from_str` takes a leading `+`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_ws_proto::deflate::params::{
    accept_client, negotiate_server, parse_extensions, ExtensionOffer,
};
use switchboard_ws_proto::DeflateConfig;

fuzz_target!(|data: &[u8]| {
    let [policy, header @ ..] = data else {
        return;
    };
    let Ok(header) = std::str::from_utf8(header) else {
        return;
    };

    if let Ok(offers) = parse_extensions(header) {
        for o in &offers {
            assert!(is_lower_token(&o.name), "name {:?}", o.name);
            for (k, _) in &o.params {
                assert!(is_lower_token(k), "key {k:?}");
            }
        }
        let custom = DeflateConfig {
            server_no_context_takeover: policy & 1 != 0,
            client_no_context_takeover: policy & 2 != 0,
            server_max_window_bits: 9 + (policy >> 2) % 7,
            ..DeflateConfig::default()
        };
        for config in [DeflateConfig::default(), custom] {
            let Some((params, response)) = negotiate_server(&offers, &config) else {
                continue;
            };
            assert!((9..=config.server_max_window_bits).contains(&params.server_max_window_bits));
            assert!((8..=15).contains(&params.client_max_window_bits));
            assert!(params.server_no_context_takeover || !config.server_no_context_takeover);
            assert!(params.client_no_context_takeover || !config.client_no_context_takeover);
            assert_eq!(
                accept_client(&response),
                Ok(Some(params)),
                "client reads the response {response:?} differently"
            );
        }
        if cfg!(feature = "strict") {
            for o in &offers {
                if negotiate_server(std::slice::from_ref(o), &DeflateConfig::default()).is_some() {
                    assert!(windows_are_digits(o), "accepted offer {o:?}");
                }
            }
        }
    }

    if let Ok(Some(p)) = accept_client(header) {
        assert!((8..=15).contains(&p.server_max_window_bits));
        assert!((8..=15).contains(&p.client_max_window_bits));
        if cfg!(feature = "strict") {
            let offers = parse_extensions(header).expect("accept_client parsed it");
            assert!(offers.iter().all(windows_are_digits), "accepted {header:?}");
        }
    }
});

/// Every `*_max_window_bits` value of `o` is 1*DIGIT (RFC 7692 §7.1.2).
fn windows_are_digits(o: &ExtensionOffer) -> bool {
    o.params.iter().all(|(k, v)| {
        !k.ends_with("_max_window_bits")
            || v.as_deref()
                .is_none_or(|v| v.bytes().all(|b| b.is_ascii_digit()))
    })
}

fn is_lower_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| {
            (b.is_ascii_alphanumeric() && !b.is_ascii_uppercase())
                || b"!#$%&'*+-.^_`|~".contains(&b)
        })
}
