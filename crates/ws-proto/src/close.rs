//! Close codes and close frame payloads (RFC 6455 §5.5.1, §7.4).

use std::fmt;

/// A close status code.
///
/// `Display` uses the spec's spelling, and [`CloseCode::is_allowed_on_wire`] says whether a peer
/// may send it (RFC 6455 §7.4.1 and the IANA registry: 1004–1006 and 1015 are reserved for local
/// use and must never appear in a Close frame).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseCode {
    /// 1000: normal closure.
    Normal,
    /// 1001: going away (server shutting down, page navigated away).
    Away,
    /// 1002: protocol error.
    Protocol,
    /// 1003: unsupported data type.
    Unsupported,
    /// 1005: no status code present (local use only).
    NoStatus,
    /// 1006: abnormal closure without a Close frame (local use only).
    Abnormal,
    /// 1007: invalid payload data (e.g. bad UTF-8 in a text message).
    InvalidPayload,
    /// 1008: policy violation.
    Policy,
    /// 1009: message too big.
    TooBig,
    /// 1010: the client expected an extension the server did not negotiate.
    MandatoryExtension,
    /// 1011: internal server error.
    Internal,
    /// 1012: service restart.
    Restart,
    /// 1013: try again later.
    TryAgainLater,
    /// 1014: bad gateway.
    BadGateway,
    /// 1015: TLS handshake failure (local use only).
    Tls,
    /// 3000–4999: registered (3xxx) or private (4xxx) application codes.
    Application(u16),
    /// Any other value: reserved or invalid, never valid on the wire.
    Reserved(u16),
}

impl CloseCode {
    /// Map a wire value to a code.
    pub fn from_u16(code: u16) -> CloseCode {
        match code {
            1000 => CloseCode::Normal,
            1001 => CloseCode::Away,
            1002 => CloseCode::Protocol,
            1003 => CloseCode::Unsupported,
            1005 => CloseCode::NoStatus,
            1006 => CloseCode::Abnormal,
            1007 => CloseCode::InvalidPayload,
            1008 => CloseCode::Policy,
            1009 => CloseCode::TooBig,
            1010 => CloseCode::MandatoryExtension,
            1011 => CloseCode::Internal,
            1012 => CloseCode::Restart,
            1013 => CloseCode::TryAgainLater,
            1014 => CloseCode::BadGateway,
            1015 => CloseCode::Tls,
            3000..=4999 => CloseCode::Application(code),
            _ => CloseCode::Reserved(code),
        }
    }

    /// The numeric value.
    pub fn as_u16(self) -> u16 {
        match self {
            CloseCode::Normal => 1000,
            CloseCode::Away => 1001,
            CloseCode::Protocol => 1002,
            CloseCode::Unsupported => 1003,
            CloseCode::NoStatus => 1005,
            CloseCode::Abnormal => 1006,
            CloseCode::InvalidPayload => 1007,
            CloseCode::Policy => 1008,
            CloseCode::TooBig => 1009,
            CloseCode::MandatoryExtension => 1010,
            CloseCode::Internal => 1011,
            CloseCode::Restart => 1012,
            CloseCode::TryAgainLater => 1013,
            CloseCode::BadGateway => 1014,
            CloseCode::Tls => 1015,
            CloseCode::Application(c) | CloseCode::Reserved(c) => c,
        }
    }

    /// Whether a peer may put this code in a Close frame.
    pub fn is_allowed_on_wire(self) -> bool {
        !matches!(
            self,
            CloseCode::NoStatus | CloseCode::Abnormal | CloseCode::Tls | CloseCode::Reserved(_)
        )
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            CloseCode::Normal => "Normal Closure",
            CloseCode::Away => "Going Away",
            CloseCode::Protocol => "Protocol error",
            CloseCode::Unsupported => "Unsupported Data",
            CloseCode::NoStatus => "No Status Rcvd",
            CloseCode::Abnormal => "Abnormal Closure",
            CloseCode::InvalidPayload => "Invalid frame payload data",
            CloseCode::Policy => "Policy Violation",
            CloseCode::TooBig => "Message Too Big",
            CloseCode::MandatoryExtension => "Mandatory Ext.",
            CloseCode::Internal => "Internal Error",
            CloseCode::Restart => "Service Restart",
            CloseCode::TryAgainLater => "Try Again Later",
            CloseCode::BadGateway => "Bad Gateway",
            CloseCode::Tls => "TLS handshake",
            CloseCode::Application(_) => "Application",
            CloseCode::Reserved(_) => "Reserved",
        };
        write!(f, "{} ({name})", self.as_u16())
    }
}

/// The payload of a Close frame: a code and a UTF-8 reason of at most 123 bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseFrame {
    /// The status code.
    pub code: CloseCode,
    /// Human-readable reason (may be empty).
    pub reason: String,
}

/// Why a Close frame payload was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClosePayloadError {
    /// A one-byte payload: a code needs two bytes.
    Truncated,
    /// The code is reserved or local-only.
    InvalidCode(u16),
    /// The reason is not valid UTF-8.
    InvalidUtf8,
}

impl CloseFrame {
    /// Build a close frame. The reason is cut at a character boundary to fit the 123-byte limit
    /// (a control frame carries at most 125 bytes, two of which are the code).
    pub fn new(code: CloseCode, reason: &str) -> CloseFrame {
        let mut end = reason.len().min(123);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        CloseFrame {
            code,
            reason: reason[..end].to_owned(),
        }
    }

    /// Parse a Close payload. An empty payload is a close without a code (`Ok(None)`).
    pub fn parse(payload: &[u8]) -> Result<Option<CloseFrame>, ClosePayloadError> {
        match payload {
            [] => Ok(None),
            [_] => Err(ClosePayloadError::Truncated),
            [hi, lo, reason @ ..] => {
                let raw = u16::from_be_bytes([*hi, *lo]);
                let code = CloseCode::from_u16(raw);
                if !code.is_allowed_on_wire() {
                    return Err(ClosePayloadError::InvalidCode(raw));
                }
                let reason =
                    std::str::from_utf8(reason).map_err(|_| ClosePayloadError::InvalidUtf8)?;
                Ok(Some(CloseFrame {
                    code,
                    reason: reason.to_owned(),
                }))
            }
        }
    }

    /// Append the wire payload (code, then reason) to `out`.
    pub fn encode_payload(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.code.as_u16().to_be_bytes());
        out.extend_from_slice(self.reason.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_only_and_unassigned_codes_are_rejected_on_the_wire() {
        for code in [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535] {
            let p = u16::to_be_bytes(code);
            assert_eq!(
                CloseFrame::parse(&p),
                Err(ClosePayloadError::InvalidCode(code))
            );
        }
        for code in [1000, 1001, 1002, 1003, 1007, 1011, 1014, 3000, 4999] {
            let p = u16::to_be_bytes(code);
            assert!(CloseFrame::parse(&p).is_ok(), "{code}");
        }
    }

    #[test]
    fn one_byte_payload_and_bad_utf8_reason_are_errors() {
        assert_eq!(CloseFrame::parse(&[3]), Err(ClosePayloadError::Truncated));
        assert_eq!(
            CloseFrame::parse(&[3, 232, 0xff]),
            Err(ClosePayloadError::InvalidUtf8)
        );
        assert_eq!(CloseFrame::parse(&[]), Ok(None));
    }

    #[test]
    fn reason_is_truncated_at_a_char_boundary() {
        let long = "é".repeat(100);
        let f = CloseFrame::new(CloseCode::Normal, &long);
        assert!(f.reason.len() <= 123);
        assert_eq!(f.reason.len() % 2, 0);
    }
}
