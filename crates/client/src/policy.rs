//! What the client does after its connection ended, by close code (SPEC §9, §10). Pure: the
//! reconnection loop asks [`after_close`] and applies the answer.

/// The close code of a connection that ended without a Close frame (TCP reset, a dead
/// connection found by the heartbeat, a failed connect).
pub const ABNORMAL: u16 = 1006;

/// What to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Stay disconnected: the server or the application ended the session on purpose.
    Stop,
    /// Reconnect without waiting (the first time in a row; then with backoff).
    ReconnectNow,
    /// Ask the token provider for a fresh token, then reconnect at once (the first time in a
    /// row; then with backoff).
    RefreshToken,
    /// Reconnect after the backoff delay.
    Backoff,
    /// Reconnect after at least the rate-limit pause (and the backoff delay).
    SlowDown,
}

/// The policy for close `code`:
///
/// | code | meaning | next |
/// |---|---|---|
/// | 1000 | normal closure | stay closed |
/// | 1001 | server shutting down / going away | reconnect at once |
/// | 1008 | policy violation (forbidden origin, disconnected by the backend) | stay closed |
/// | 4001 | authentication failed / token expired | fresh token, then reconnect |
/// | 4002 | rate limit exceeded | wait the rate-limit pause, then reconnect |
/// | 4003 | buffer overflow (we read too slowly) | reconnect at once (the rooms resume) |
/// | 4000 | authentication timeout | backoff |
/// | 1006 | no Close frame (network, heartbeat) | backoff |
/// | anything else (1002, 1003, 1007, 1009, 1011, 1013, …) | | backoff |
pub fn after_close(code: u16) -> Next {
    match code {
        1000 | 1008 => Next::Stop,
        1001 | 4003 => Next::ReconnectNow,
        4001 => Next::RefreshToken,
        4002 => Next::SlowDown,
        _ => Next::Backoff,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_code_has_its_policy() {
        assert_eq!(after_close(1000), Next::Stop);
        assert_eq!(after_close(1008), Next::Stop);
        assert_eq!(after_close(1001), Next::ReconnectNow);
        assert_eq!(after_close(4003), Next::ReconnectNow);
        assert_eq!(after_close(4001), Next::RefreshToken);
        assert_eq!(after_close(4002), Next::SlowDown);
        for code in [4000, ABNORMAL, 1002, 1009, 1011, 1013, 4999] {
            assert_eq!(after_close(code), Next::Backoff, "{code}");
        }
    }
}
