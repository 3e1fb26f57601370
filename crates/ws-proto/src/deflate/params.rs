//! Negotiation of permessage-deflate parameters (RFC 7692 §5, §7.1).

use std::fmt::Write as _;

/// Server-side policy for permessage-deflate.
///
/// The defaults favour memory per idle connection and encode-once broadcasts: both directions
/// without context takeover, so no compressor or decompressor state survives between messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeflateConfig {
    /// Answer with `server_no_context_takeover` even when the client did not ask. Needed to
    /// compress a broadcast once for every recipient. Default `true`.
    pub server_no_context_takeover: bool,
    /// Ask the client not to keep its context (`client_no_context_takeover`), so we can drop
    /// the inflater between messages. Default `true`: a kept inflater costs ~45 KB per connection.
    pub client_no_context_takeover: bool,
    /// Largest LZ77 window we compress with (9..=15). Default 15.
    pub server_max_window_bits: u8,
    /// Messages shorter than this many bytes are sent uncompressed. Default 128.
    pub compression_threshold: usize,
    /// zlib compression level 0..=9. Default 1: most of the size gain for a fraction of the CPU.
    pub level: u32,
}

impl Default for DeflateConfig {
    fn default() -> Self {
        DeflateConfig {
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            server_max_window_bits: 15,
            compression_threshold: 128,
            level: 1,
        }
    }
}

/// The parameters agreed for one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeflateParams {
    /// The server resets its compressor after every message.
    pub server_no_context_takeover: bool,
    /// The client resets its compressor after every message.
    pub client_no_context_takeover: bool,
    /// Window the server compresses with.
    pub server_max_window_bits: u8,
    /// Window the client compresses with (15 when not limited).
    pub client_max_window_bits: u8,
}

impl Default for DeflateParams {
    fn default() -> Self {
        DeflateParams {
            server_no_context_takeover: false,
            client_no_context_takeover: false,
            server_max_window_bits: 15,
            client_max_window_bits: 15,
        }
    }
}

/// Why an extension header (or one offer in it) was not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NegotiationError {
    /// A parameter appeared twice.
    #[error("duplicate parameter {0}")]
    Duplicate(String),
    /// A parameter we do not know.
    #[error("unknown parameter {0}")]
    Unknown(String),
    /// A parameter value that is missing, present where none is allowed, or out of range.
    #[error("invalid value for {0}")]
    InvalidValue(String),
    /// The header is not a valid extension list.
    #[error("malformed extension header")]
    Malformed,
}

/// One extension of an extension list: a name and its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtensionOffer {
    /// Extension token, e.g. `permessage-deflate`.
    pub name: String,
    /// Parameters in order, value unquoted.
    pub params: Vec<(String, Option<String>)>,
}

/// Parse a `Sec-WebSocket-Extensions` value (RFC 6455 §9.1 grammar, quoted values allowed).
pub fn parse_extensions(header: &str) -> Result<Vec<ExtensionOffer>, NegotiationError> {
    let mut offers = Vec::new();
    for ext in split_outside_quotes(header, ',') {
        let ext = ext.trim();
        if ext.is_empty() {
            continue;
        }
        let mut parts = split_outside_quotes(ext, ';').into_iter();
        let name = parts.next().unwrap_or_default().trim();
        if !is_token(name) {
            return Err(NegotiationError::Malformed);
        }
        let mut params = Vec::new();
        for p in parts {
            let (key, value) = match p.split_once('=') {
                Some((k, v)) => (k.trim(), Some(unquote(v.trim())?)),
                None => (p.trim(), None),
            };
            if !is_token(key) {
                return Err(NegotiationError::Malformed);
            }
            params.push((key.to_ascii_lowercase(), value));
        }
        offers.push(ExtensionOffer {
            name: name.to_ascii_lowercase(),
            params,
        });
    }
    Ok(offers)
}

fn split_outside_quotes(s: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted) = (0, false);
    for (i, c) in s.char_indices() {
        if c == '"' {
            quoted = !quoted;
        } else if c == sep && !quoted {
            parts.push(&s[start..i]);
            start = i + 1;
        }
    }
    parts.push(&s[start..]);
    parts
}

fn unquote(v: &str) -> Result<String, NegotiationError> {
    let inner = match v.strip_prefix('"') {
        Some(rest) => rest.strip_suffix('"').ok_or(NegotiationError::Malformed)?,
        None => v,
    };
    if is_token(inner) {
        Ok(inner.to_owned())
    } else {
        Err(NegotiationError::Malformed)
    }
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn window_bits(name: &str, value: Option<&str>) -> Result<u8, NegotiationError> {
    let v = value.ok_or_else(|| NegotiationError::InvalidValue(name.to_owned()))?;
    // RFC 7692 §7.1.2: 1*DIGIT in 8..=15, no leading zeros.
    match v.parse::<u8>() {
        Ok(bits @ 8..=15) if v.bytes().all(|b| b.is_ascii_digit()) && !v.starts_with('0') => {
            Ok(bits)
        }
        _ => Err(NegotiationError::InvalidValue(name.to_owned())),
    }
}

/// What a client offered in one permessage-deflate offer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Offer {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: Option<u8>,
    /// `Some(None)`: offered without a value ("you may limit my window").
    client_max_window_bits: Option<Option<u8>>,
}

fn parse_offer(offer: &ExtensionOffer) -> Result<Offer, NegotiationError> {
    let mut o = Offer::default();
    let mut seen: Vec<&str> = Vec::new();
    for (key, value) in &offer.params {
        if seen.contains(&key.as_str()) {
            return Err(NegotiationError::Duplicate(key.clone()));
        }
        seen.push(key);
        let flag = |v: &Option<String>| match v {
            None => Ok(true),
            Some(_) => Err(NegotiationError::InvalidValue(key.clone())),
        };
        match key.as_str() {
            "server_no_context_takeover" => o.server_no_context_takeover = flag(value)?,
            "client_no_context_takeover" => o.client_no_context_takeover = flag(value)?,
            "server_max_window_bits" => {
                o.server_max_window_bits = Some(window_bits(key, value.as_deref())?)
            }
            "client_max_window_bits" => {
                o.client_max_window_bits = Some(match value {
                    None => None,
                    Some(v) => Some(window_bits(key, Some(v))?),
                })
            }
            _ => return Err(NegotiationError::Unknown(key.clone())),
        }
    }
    Ok(o)
}

/// Server side: pick the first acceptable permessage-deflate offer from the client's
/// `Sec-WebSocket-Extensions` values and build the response header value.
///
/// Offers we can not honour are skipped (RFC 7692 §5: the server declines an offer by not
/// answering it), so `None` means "no compression", not an error. A window of 8 bits can not be
/// produced by zlib's raw deflate, so an offer that demands `server_max_window_bits=8` is
/// declined and the next one considered.
pub fn negotiate_server(
    offered: &[ExtensionOffer],
    config: &DeflateConfig,
) -> Option<(DeflateParams, String)> {
    for ext in offered.iter().filter(|e| e.name == "permessage-deflate") {
        let Ok(offer) = parse_offer(ext) else {
            continue;
        };
        let server_bits = offer
            .server_max_window_bits
            .unwrap_or(15)
            .min(config.server_max_window_bits);
        if server_bits < 9 {
            continue;
        }
        let params = DeflateParams {
            server_no_context_takeover: offer.server_no_context_takeover
                || config.server_no_context_takeover,
            client_no_context_takeover: offer.client_no_context_takeover
                || config.client_no_context_takeover,
            server_max_window_bits: server_bits,
            client_max_window_bits: offer.client_max_window_bits.flatten().unwrap_or(15),
        };
        let mut response = String::from("permessage-deflate");
        if params.server_no_context_takeover {
            response.push_str("; server_no_context_takeover");
        }
        if params.client_no_context_takeover {
            response.push_str("; client_no_context_takeover");
        }
        if offer.server_max_window_bits.is_some() || server_bits < 15 {
            let _ = write!(response, "; server_max_window_bits={server_bits}");
        }
        if let Some(Some(bits)) = offer.client_max_window_bits {
            let _ = write!(response, "; client_max_window_bits={bits}");
        }
        return Some((params, response));
    }
    None
}

/// Client side: the offer we send.
pub fn client_offer() -> &'static str {
    "permessage-deflate; client_max_window_bits"
}

/// Client side: check the server's response to [`client_offer`] and read the agreed parameters.
pub fn accept_client(response: &str) -> Result<Option<DeflateParams>, NegotiationError> {
    let exts = parse_extensions(response)?;
    let mut result = None;
    for ext in &exts {
        if ext.name != "permessage-deflate" || result.is_some() {
            // RFC 6455 §9.1: the server may only answer with extensions we offered, once.
            return Err(NegotiationError::Unknown(ext.name.clone()));
        }
        let o = parse_offer(ext)?;
        result = Some(DeflateParams {
            server_no_context_takeover: o.server_no_context_takeover,
            client_no_context_takeover: o.client_no_context_takeover,
            server_max_window_bits: o.server_max_window_bits.unwrap_or(15),
            client_max_window_bits: match o.client_max_window_bits {
                Some(Some(bits)) => bits,
                Some(None) => {
                    return Err(NegotiationError::InvalidValue(
                        "client_max_window_bits".into(),
                    ))
                }
                None => 15,
            },
        });
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(header: &str) -> Option<(DeflateParams, String)> {
        let offers = parse_extensions(header).unwrap();
        let config = DeflateConfig {
            client_no_context_takeover: false,
            server_no_context_takeover: false,
            ..DeflateConfig::default()
        };
        negotiate_server(&offers, &config)
    }

    #[test]
    fn plain_offer_is_accepted_as_is() {
        let (p, r) = server("permessage-deflate").unwrap();
        assert_eq!(r, "permessage-deflate");
        assert_eq!(p, DeflateParams::default());
    }

    #[test]
    fn all_four_parameters_are_negotiated() {
        let (p, r) = server(
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
             server_max_window_bits=10; client_max_window_bits=12",
        )
        .unwrap();
        assert!(p.server_no_context_takeover && p.client_no_context_takeover);
        assert_eq!(
            (p.server_max_window_bits, p.client_max_window_bits),
            (10, 12)
        );
        assert_eq!(
            r,
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
             server_max_window_bits=10; client_max_window_bits=12"
        );
    }

    #[test]
    fn invalid_offers_are_declined_and_the_next_one_is_used() {
        let (_, r) = server(
            "permessage-deflate; server_max_window_bits=16, permessage-deflate; foo, \
             permessage-deflate; server_max_window_bits=8, \
             permessage-deflate; client_max_window_bits=\"9\"",
        )
        .unwrap();
        assert_eq!(r, "permessage-deflate; client_max_window_bits=9");
        assert!(server("permessage-deflate; server_no_context_takeover=1").is_none());
        assert!(server(
            "permessage-deflate; client_no_context_takeover; client_no_context_takeover"
        )
        .is_none());
        assert!(server("x-webkit-deflate-frame").is_none());
    }

    #[test]
    fn default_config_asks_for_no_context_takeover_both_ways() {
        let offers = parse_extensions("permessage-deflate; client_max_window_bits").unwrap();
        let (p, r) = negotiate_server(&offers, &DeflateConfig::default()).unwrap();
        assert!(p.server_no_context_takeover && p.client_no_context_takeover);
        assert_eq!(
            r,
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        );
        assert_eq!(accept_client(&r).unwrap(), Some(p));
    }

    #[test]
    fn malformed_headers_are_errors() {
        assert!(parse_extensions("permessage-deflate; =3").is_err());
        assert!(parse_extensions("permessage-deflate; a=\"b").is_err());
        assert!(accept_client("permessage-deflate, permessage-deflate").is_err());
        assert!(accept_client("something-else").is_err());
    }
}
