//! Request validation for the HTTP layer: the query (`EIO`, `transport`, `sid`), the method,
//! and the errors the reference server answers with (`400 {"code":N,"message":"…"}`).
//!
//! [`classify`] runs the reference server's checks in its order:
//!
//! 1. `transport` is `polling` or `websocket` (and enabled), else code 0 "Transport unknown".
//! 2. With a `sid` (an existing session): polling takes GET (receive) and POST (send);
//!    `websocket` must be a WebSocket upgrade request. Anything else is code 3 "Bad request".
//!    The server then looks the sid up: unknown → [`RequestError::UnknownSid`] (code 1); the
//!    [`Session`](crate::Session) refuses requests that do not fit its state (code 3).
//! 3. Without a `sid` (a handshake): the method must be GET, else code 2 "Bad handshake
//!    method"; `transport=websocket` must be an upgrade request (and `polling` must not be),
//!    else code 3.
//! 4. The server's own checks (origin, credentials) come here: a refusal is code 4
//!    "Forbidden" (`403`).
//! 5. `EIO` must be `4`, else code 5 "Unsupported protocol version" (a missing or other
//!    value included: the reference treats anything but `4` as v3, which it refuses unless
//!    configured for it).

use bytes::Bytes;

/// An Engine.IO transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// HTTP long-polling (`transport=polling`).
    Polling,
    /// WebSocket (`transport=websocket`).
    WebSocket,
}

impl Transport {
    /// The query value.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Polling => "polling",
            Transport::WebSocket => "websocket",
        }
    }
}

/// The request method, as far as Engine.IO cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// GET (handshake, poll, WebSocket upgrade).
    Get,
    /// POST (send on polling).
    Post,
    /// Anything else (OPTIONS preflights are the CORS layer's, before this).
    Other,
}

/// The Engine.IO parameters of a query string (raw values, not percent-decoded: the values
/// Engine.IO uses never need encoding). The first occurrence of a key wins; other keys (`t`,
/// application parameters) are ignored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Query<'a> {
    /// `EIO`.
    pub eio: Option<&'a str>,
    /// `transport`.
    pub transport: Option<&'a str>,
    /// `sid` (an empty value counts as absent, as in the reference).
    pub sid: Option<&'a str>,
}

impl<'a> Query<'a> {
    /// Read the query string (without the `?`).
    pub fn parse(query: &'a str) -> Query<'a> {
        let mut q = Query::default();
        for pair in query.split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let slot = match key {
                "EIO" => &mut q.eio,
                "transport" => &mut q.transport,
                "sid" => &mut q.sid,
                _ => continue,
            };
            if slot.is_none() {
                *slot = Some(value);
            }
        }
        if q.sid == Some("") {
            q.sid = None;
        }
        q
    }
}

/// What a valid request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineRequest<'a> {
    /// Open a session: a polling GET (answered with the handshake, see
    /// [`Session::polling`](crate::Session::polling)) or a WebSocket
    /// ([`Session::websocket`](crate::Session::websocket)).
    Handshake {
        /// The transport of the new session.
        transport: Transport,
    },
    /// A GET on a polling session: [`Session::handle_get`](crate::Session::handle_get).
    Poll {
        /// The session.
        sid: &'a str,
    },
    /// A POST on a polling session:
    /// [`Session::handle_post_start`](crate::Session::handle_post_start).
    Post {
        /// The session.
        sid: &'a str,
    },
    /// A WebSocket for an existing session (an upgrade from polling):
    /// [`Session::handle_ws_open`](crate::Session::handle_ws_open).
    Upgrade {
        /// The session.
        sid: &'a str,
    },
}

impl EngineRequest<'_> {
    /// The session the request is for (`None` for a handshake).
    pub fn sid(&self) -> Option<&str> {
        match self {
            EngineRequest::Handshake { .. } => None,
            EngineRequest::Poll { sid }
            | EngineRequest::Post { sid }
            | EngineRequest::Upgrade { sid } => Some(sid),
        }
    }
}

/// Which transports the endpoint serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transports {
    /// Serve HTTP long-polling.
    pub polling: bool,
    /// Serve WebSocket.
    pub websocket: bool,
}

impl Default for Transports {
    fn default() -> Self {
        Transports {
            polling: true,
            websocket: true,
        }
    }
}

/// A refused request, with the reference server's code, message and status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum RequestError {
    /// Code 0: `transport` missing, unknown or disabled.
    #[error("Transport unknown")]
    UnknownTransport,
    /// Code 1: no session with this `sid` (never existed, or closed).
    #[error("Session ID unknown")]
    UnknownSid,
    /// Code 2: a handshake that is not a GET.
    #[error("Bad handshake method")]
    BadHandshakeMethod,
    /// Code 3: a request that does not fit the protocol or the session's state (a second GET
    /// or POST, polling after an upgrade, an invalid payload, …).
    #[error("Bad request")]
    BadRequest,
    /// Code 4: refused by the server's own checks (origin, credentials); `403`.
    #[error("Forbidden")]
    Forbidden,
    /// Code 5: `EIO` is not `4`.
    #[error("Unsupported protocol version")]
    UnsupportedProtocolVersion,
    /// A POST body above `maxPayload`: `413` with an empty body (no Engine.IO code), as the
    /// reference answers.
    #[error("Payload too large")]
    PayloadTooLarge,
}

impl RequestError {
    /// The Engine.IO error code (`None` for [`RequestError::PayloadTooLarge`]).
    pub fn code(self) -> Option<u8> {
        Some(match self {
            RequestError::UnknownTransport => 0,
            RequestError::UnknownSid => 1,
            RequestError::BadHandshakeMethod => 2,
            RequestError::BadRequest => 3,
            RequestError::Forbidden => 4,
            RequestError::UnsupportedProtocolVersion => 5,
            RequestError::PayloadTooLarge => return None,
        })
    }

    /// The HTTP status: `403` for Forbidden, `413` for a too large POST, `400` otherwise.
    pub fn status(self) -> u16 {
        match self {
            RequestError::Forbidden => 403,
            RequestError::PayloadTooLarge => 413,
            _ => 400,
        }
    }

    /// The message, as the reference spells it.
    pub fn message(self) -> &'static str {
        match self {
            RequestError::UnknownTransport => "Transport unknown",
            RequestError::UnknownSid => "Session ID unknown",
            RequestError::BadHandshakeMethod => "Bad handshake method",
            RequestError::BadRequest => "Bad request",
            RequestError::Forbidden => "Forbidden",
            RequestError::UnsupportedProtocolVersion => "Unsupported protocol version",
            RequestError::PayloadTooLarge => "Payload too large",
        }
    }

    /// The `Content-Type` of [`RequestError::body`] (`None`: no body).
    pub fn content_type(self) -> Option<&'static str> {
        self.code().map(|_| "application/json")
    }

    /// The response body: compact JSON `{"code":N,"message":"…"}` (empty for `413`).
    pub fn body(self) -> Bytes {
        match self.code() {
            Some(code) => Bytes::from(format!(
                r#"{{"code":{code},"message":"{}"}}"#,
                self.message()
            )),
            None => Bytes::new(),
        }
    }
}

/// Validate a request to the Engine.IO path (see the module doc for the steps).
///
/// `websocket_upgrade`: whether the request asks for a WebSocket upgrade (the server's
/// WebSocket handshake validation decides that; a failed one is its own error).
pub fn classify(
    method: Method,
    query: &str,
    websocket_upgrade: bool,
    transports: Transports,
) -> Result<EngineRequest<'_>, RequestError> {
    let q = Query::parse(query);
    // 1. The transport.
    let transport = match q.transport {
        Some("polling") if transports.polling => Transport::Polling,
        Some("websocket") if transports.websocket => Transport::WebSocket,
        _ => return Err(RequestError::UnknownTransport),
    };
    // 2. An existing session.
    if let Some(sid) = q.sid {
        return match (transport, method, websocket_upgrade) {
            (Transport::Polling, Method::Get, false) => Ok(EngineRequest::Poll { sid }),
            (Transport::Polling, Method::Post, false) => Ok(EngineRequest::Post { sid }),
            (Transport::WebSocket, Method::Get, true) => Ok(EngineRequest::Upgrade { sid }),
            _ => Err(RequestError::BadRequest),
        };
    }
    // 3. A handshake.
    if method != Method::Get {
        return Err(RequestError::BadHandshakeMethod);
    }
    if websocket_upgrade != (transport == Transport::WebSocket) {
        return Err(RequestError::BadRequest);
    }
    // 5. The protocol version (4, the server's checks, is the caller's, before this).
    if q.eio != Some("4") {
        return Err(RequestError::UnsupportedProtocolVersion);
    }
    Ok(EngineRequest::Handshake { transport })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(query: &str) -> Result<EngineRequest<'_>, RequestError> {
        classify(Method::Get, query, false, Transports::default())
    }

    #[test]
    fn valid_requests() {
        assert_eq!(
            get("EIO=4&transport=polling"),
            Ok(EngineRequest::Handshake {
                transport: Transport::Polling
            })
        );
        assert_eq!(
            get("EIO=4&transport=polling&t=N8hyd6w&sid="),
            Ok(EngineRequest::Handshake {
                transport: Transport::Polling
            }),
            "an empty sid is no sid"
        );
        assert_eq!(
            classify(
                Method::Get,
                "EIO=4&transport=websocket",
                true,
                Transports::default()
            ),
            Ok(EngineRequest::Handshake {
                transport: Transport::WebSocket
            })
        );
        assert_eq!(
            get("EIO=4&transport=polling&sid=abc"),
            Ok(EngineRequest::Poll { sid: "abc" })
        );
        assert_eq!(
            classify(
                Method::Post,
                "EIO=4&transport=polling&sid=abc",
                false,
                Transports::default()
            ),
            Ok(EngineRequest::Post { sid: "abc" })
        );
        let up = classify(
            Method::Get,
            "EIO=4&transport=websocket&sid=abc",
            true,
            Transports::default(),
        );
        assert_eq!(up, Ok(EngineRequest::Upgrade { sid: "abc" }));
        assert_eq!(up.unwrap().sid(), Some("abc"));
        assert_eq!(
            get("sid=x&sid=y&EIO=4&transport=polling"),
            Ok(EngineRequest::Poll { sid: "x" }),
            "first occurrence wins"
        );
    }

    #[test]
    fn error_cases_in_reference_order() {
        use RequestError::*;
        // 1. transport
        assert_eq!(get("EIO=4"), Err(UnknownTransport));
        assert_eq!(get("EIO=4&transport=abc"), Err(UnknownTransport));
        assert_eq!(get("EIO=4&transport=Polling"), Err(UnknownTransport));
        assert_eq!(
            get("transport=abc&sid=x"),
            Err(UnknownTransport),
            "before the sid"
        );
        let polling_only = Transports {
            polling: true,
            websocket: false,
        };
        assert_eq!(
            classify(Method::Get, "EIO=4&transport=websocket", true, polling_only),
            Err(UnknownTransport)
        );
        // 2. existing session
        assert_eq!(
            classify(
                Method::Other,
                "EIO=4&transport=polling&sid=a",
                false,
                Transports::default()
            ),
            Err(BadRequest)
        );
        assert_eq!(
            get("EIO=4&transport=websocket&sid=a"),
            Err(BadRequest),
            "websocket without upgrade"
        );
        assert_eq!(
            classify(
                Method::Get,
                "EIO=4&transport=polling&sid=a",
                true,
                Transports::default()
            ),
            Err(BadRequest)
        );
        // 3. handshake
        assert_eq!(
            classify(
                Method::Post,
                "EIO=4&transport=polling",
                false,
                Transports::default()
            ),
            Err(BadHandshakeMethod)
        );
        assert_eq!(
            classify(
                Method::Other,
                "transport=polling",
                false,
                Transports::default()
            ),
            Err(BadHandshakeMethod),
            "method before version"
        );
        assert_eq!(get("EIO=4&transport=websocket"), Err(BadRequest));
        assert_eq!(
            classify(
                Method::Get,
                "EIO=4&transport=polling",
                true,
                Transports::default()
            ),
            Err(BadRequest)
        );
        // 5. version
        assert_eq!(get("transport=polling"), Err(UnsupportedProtocolVersion));
        assert_eq!(
            get("EIO=abc&transport=polling"),
            Err(UnsupportedProtocolVersion)
        );
        assert_eq!(
            get("EIO=3&transport=polling"),
            Err(UnsupportedProtocolVersion)
        );
        assert_eq!(
            get("EIO=5&transport=polling"),
            Err(UnsupportedProtocolVersion)
        );
    }

    #[test]
    fn error_responses_exact_bytes() {
        use RequestError::*;
        let cases = [
            (
                UnknownTransport,
                400,
                r#"{"code":0,"message":"Transport unknown"}"#,
            ),
            (
                UnknownSid,
                400,
                r#"{"code":1,"message":"Session ID unknown"}"#,
            ),
            (
                BadHandshakeMethod,
                400,
                r#"{"code":2,"message":"Bad handshake method"}"#,
            ),
            (BadRequest, 400, r#"{"code":3,"message":"Bad request"}"#),
            (Forbidden, 403, r#"{"code":4,"message":"Forbidden"}"#),
            (
                UnsupportedProtocolVersion,
                400,
                r#"{"code":5,"message":"Unsupported protocol version"}"#,
            ),
        ];
        for (err, status, body) in cases {
            assert_eq!(err.status(), status);
            assert_eq!(err.body(), body.as_bytes());
            assert_eq!(err.content_type(), Some("application/json"));
            assert_eq!(err.to_string(), err.message());
        }
        assert_eq!(PayloadTooLarge.status(), 413);
        assert_eq!(PayloadTooLarge.body(), &b""[..]);
        assert_eq!(PayloadTooLarge.content_type(), None);
        assert_eq!(PayloadTooLarge.code(), None);
    }
}
