//! Requests for a session another node holds, run there (issue 13: no sticky sessions).
//!
//! A long-poll session (`/poll`) and a Socket.IO or Engine.IO polling session live on the
//! node that made them. Their ids name that node (the first four bytes of the random id
//! are its number; see [`owned_sid_bytes`]). A request that reaches a node which does not
//! hold the session, and whose id names another node, is sent to that node through the
//! deployment's [`Forwarder`] (Redis pub/sub) and runs there through the same router, as
//! if the client had reached it: its method, URI, headers, body and client address. The
//! answer comes back the same way. A client that goes away cancels the request at the
//! owner too, as a dropped connection would there (a cancelled Engine.IO GET closes its
//! session).
//!
//! Not forwarded: a WebSocket (an upgrade of a polling session that reaches another node
//! is refused as an unknown sid; Socket.IO clients stay on polling then).

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{header, HeaderName, HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Limited};
use tower_service::Service;

use crate::state::{AppState, PeerAddr};

/// What runs a request another node forwarded here.
pub type ForwardHandler =
    Arc<dyn Fn(Bytes) -> Pin<Box<dyn Future<Output = Bytes> + Send>> + Send + Sync>;

/// Why a forwarded request got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardFailed {
    /// The owner is gone (no node has its number any more).
    Gone,
    /// The owner did not answer in time, or the broker is down.
    Unavailable,
    /// The owner refused it: it runs as many requests for other nodes as it takes.
    Busy,
}

/// Carries requests to the node that owns their session ([`crate::config::Backends`]).
pub trait Forwarder: Send + Sync + fmt::Debug + 'static {
    /// This node's number (what session ids made here name).
    fn node(&self) -> u32;
    /// Run `request` (as [`encode_request`] made it) on node `owner`; its answer (as
    /// [`encode_response`] made it), within `timeout`. Dropping the future cancels it there.
    fn forward(
        &self,
        owner: u32,
        request: Bytes,
        timeout: Duration,
    ) -> Pin<Box<dyn Future<Output = Result<Bytes, ForwardFailed>> + Send>>;
    /// What runs the requests forwarded to this node (set once, when the router is built).
    fn serve(&self, handler: ForwardHandler);
}

/// The 16 random bytes of a session id made on this node: the first four name the node
/// when there is a forwarder (else they stay random).
pub(crate) fn owned_sid_bytes<const N: usize>(state: &AppState) -> Option<[u8; N]> {
    let mut bytes = [0u8; N];
    getrandom::getrandom(&mut bytes).ok()?;
    if let Some(forwarder) = state.forwarder() {
        bytes[..4].copy_from_slice(&forwarder.node().to_be_bytes());
    }
    Some(bytes)
}

/// The node named by a session id's first bytes, when it is not this one and forwarding
/// is on.
pub(crate) fn elsewhere(state: &AppState, id_bytes: &[u8]) -> Option<u32> {
    let forwarder = state.forwarder()?;
    let owner = u32::from_be_bytes(id_bytes.get(..4)?.try_into().ok()?);
    (owner != forwarder.node()).then_some(owner)
}

/// Requests and answers larger than this are not forwarded. They travel on the node's
/// pub/sub connection, with its rooms' messages: Redis cuts a subscriber whose output
/// buffer passes 8 MB for a minute (32 MB at once), so one message must stay far below.
/// An Engine.IO request or answer is at most `maxPayload` (1 MB by default); a long poll's
/// answer at most `history_reply_size`.
const MAX_FORWARDED_BODY: usize = 4 << 20;

/// The longest an owner works on a forwarded request (the longest hold is a poll's, 25 s
/// by default, or an Engine.IO GET's ping interval).
const OWNER_DEADLINE: Duration = Duration::from_secs(120);

/// The node a request was to be forwarded to does not exist (any more): the session is
/// gone with it, and the caller answers as for an unknown one.
#[derive(Debug)]
pub(crate) struct OwnerGone;

/// Send `req` to node `owner` and answer what it answered. `body_limit` bounds the
/// request's body (413 beyond it); `timeout` the wait (a held poll's longest hold and
/// some).
pub(crate) async fn forward(
    state: &AppState,
    owner: u32,
    req: Request<Body>,
    body_limit: usize,
    timeout: Duration,
) -> Result<Response, OwnerGone> {
    let Some(forwarder) = state.forwarder() else {
        return Err(OwnerGone);
    };
    let peer = crate::ws::peer_addr(&req);
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, body_limit.min(MAX_FORWARDED_BODY))
        .collect()
        .await
    {
        Ok(body) => body.to_bytes(),
        Err(_) => {
            return Ok((
                StatusCode::PAYLOAD_TOO_LARGE,
                "request body too large or unreadable\n",
            )
                .into_response())
        }
    };
    let request = encode_request(&parts.method, &parts.uri, peer, &parts.headers, &body);
    state.metrics.forwarded_requests.inc();
    match forwarder.forward(owner, request, timeout).await {
        Ok(answer) => Ok(decode_response(answer).unwrap_or_else(|| {
            (
                StatusCode::BAD_GATEWAY,
                "malformed answer from the session's node\n",
            )
                .into_response()
        })),
        Err(ForwardFailed::Gone) => Err(OwnerGone),
        Err(ForwardFailed::Unavailable) => {
            state.metrics.forward_failures.inc();
            Ok((
                StatusCode::BAD_GATEWAY,
                "the node that holds this session did not answer\n",
            )
                .into_response())
        }
        Err(ForwardFailed::Busy) => {
            state.metrics.forward_failures.inc();
            Ok((
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, "1")],
                "the node that holds this session is busy; try again\n",
            )
                .into_response())
        }
    }
}

/// Let `forwarder` run forwarded requests through `router` (the answer's body is read
/// whole, at most [`MAX_FORWARDED_BODY`]). Only the polling routes (`/poll` and the
/// Engine.IO endpoints, whose paths start with one of `polling_paths`) run: nothing else
/// is ever forwarded, and the bytes come from whoever can publish on Redis.
pub(crate) fn serve_through(
    forwarder: &Arc<dyn Forwarder>,
    router: axum::Router,
    polling_paths: Vec<String>,
) {
    let polling_paths = Arc::new(polling_paths);
    forwarder.serve(Arc::new(move |bytes: Bytes| {
        let mut router = router.clone();
        let polling_paths = polling_paths.clone();
        Box::pin(async move {
            let Some(request) = decode_request(bytes) else {
                return encode_response(
                    StatusCode::BAD_REQUEST,
                    &[],
                    b"malformed forwarded request\n",
                );
            };
            if !is_polling_route(&request, &polling_paths) {
                return encode_response(StatusCode::FORBIDDEN, &[], b"not a forwarded route\n");
            }
            let Ok(Ok(response)) = tokio::time::timeout(OWNER_DEADLINE, router.call(request)).await
            else {
                return encode_response(StatusCode::GATEWAY_TIMEOUT, &[], b"no answer in time\n");
            };
            let (parts, body) = response.into_parts();
            match Limited::new(body, MAX_FORWARDED_BODY).collect().await {
                Ok(body) => {
                    let headers: Vec<(&HeaderName, &HeaderValue)> = parts.headers.iter().collect();
                    encode_response(parts.status, &headers, &body.to_bytes())
                }
                Err(_) => encode_response(StatusCode::BAD_GATEWAY, &[], b"answer too large\n"),
            }
        })
    }));
}

/// Whether `request` is a GET or POST of a polling route (`paths`: `/poll`, and Engine.IO
/// endpoint paths ending in `/`, which also match without it).
fn is_polling_route(request: &Request<Body>, paths: &[String]) -> bool {
    let path = request.uri().path();
    matches!(*request.method(), Method::GET | Method::POST)
        && paths.iter().any(|p| {
            path == p || path == p.trim_end_matches('/') || path.starts_with(p) && p.ends_with('/')
        })
}

// The encoding: length-prefixed fields (u32, big-endian), in order.
//   request:  method, uri, client address ("" if unknown), header count, (name, value)*, body
//   response: status (u16), header count, (name, value)*, body

/// Headers that describe one hop, not the request.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "transfer-encoding"
            | "te"
            | "trailer"
            | "upgrade"
            | "content-length"
    )
}

fn put_field(out: &mut BytesMut, field: &[u8]) {
    out.put_u32(field.len() as u32);
    out.put_slice(field);
}

fn take_field(input: &mut Bytes) -> Option<Bytes> {
    if input.remaining() < 4 {
        return None;
    }
    let len = input.get_u32() as usize;
    (input.remaining() >= len).then(|| input.split_to(len))
}

fn put_headers<'a>(
    out: &mut BytesMut,
    headers: impl Iterator<Item = (&'a HeaderName, &'a HeaderValue)>,
) {
    let headers: Vec<_> = headers.filter(|(name, _)| !is_hop_by_hop(name)).collect();
    out.put_u32(headers.len() as u32);
    for (name, value) in headers {
        put_field(out, name.as_str().as_bytes());
        put_field(out, value.as_bytes());
    }
}

fn take_headers(input: &mut Bytes) -> Option<Vec<(HeaderName, HeaderValue)>> {
    if input.remaining() < 4 {
        return None;
    }
    let count = input.get_u32() as usize;
    // Each header takes at least 8 bytes: a count beyond that is a lie, not an allocation.
    if count > input.remaining() / 8 {
        return None;
    }
    let mut headers = Vec::with_capacity(count);
    for _ in 0..count {
        let name = HeaderName::from_bytes(&take_field(input)?).ok()?;
        let value = HeaderValue::from_maybe_shared(take_field(input)?).ok()?;
        headers.push((name, value));
    }
    Some(headers)
}

pub(crate) fn encode_request(
    method: &Method,
    uri: &Uri,
    peer: Option<SocketAddr>,
    headers: &http::HeaderMap,
    body: &[u8],
) -> Bytes {
    let mut out = BytesMut::with_capacity(256 + body.len());
    put_field(&mut out, method.as_str().as_bytes());
    put_field(&mut out, uri.to_string().as_bytes());
    put_field(
        &mut out,
        peer.map(|p| p.to_string()).unwrap_or_default().as_bytes(),
    );
    put_headers(&mut out, headers.iter());
    put_field(&mut out, body);
    out.freeze()
}

pub(crate) fn decode_request(mut input: Bytes) -> Option<Request<Body>> {
    let method = Method::from_bytes(&take_field(&mut input)?).ok()?;
    let uri = Uri::try_from(take_field(&mut input)?.as_ref()).ok()?;
    let peer = take_field(&mut input)?;
    let peer: Option<SocketAddr> = std::str::from_utf8(&peer).ok()?.parse().ok();
    let headers = take_headers(&mut input)?;
    let body = take_field(&mut input)?;
    let mut request = Request::new(Body::from(body));
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    request.headers_mut().extend(headers);
    if let Some(peer) = peer {
        request.extensions_mut().insert(PeerAddr(peer));
    }
    Some(request)
}

pub(crate) fn encode_response(
    status: StatusCode,
    headers: &[(&HeaderName, &HeaderValue)],
    body: &[u8],
) -> Bytes {
    let mut out = BytesMut::with_capacity(64 + body.len());
    out.put_u16(status.as_u16());
    put_headers(&mut out, headers.iter().copied());
    put_field(&mut out, body);
    out.freeze()
}

pub(crate) fn decode_response(mut input: Bytes) -> Option<Response> {
    if input.remaining() < 2 {
        return None;
    }
    let status = StatusCode::from_u16(input.get_u16()).ok()?;
    let headers = take_headers(&mut input)?;
    let body = take_field(&mut input)?;
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    // The owner's CORS headers are dropped: this node's own CORS layer adds them to the
    // answer it gives (the client's origin is checked on both).
    let headers = headers
        .into_iter()
        .filter(|(name, _)| name != header::VARY && !name.as_str().starts_with("access-control-"));
    response.headers_mut().extend(headers);
    // A forwarded answer is never cached on the way (polls are answered once).
    response
        .headers_mut()
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    Some(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_survives_its_encoding() {
        let mut headers = http::HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_static("a=b"));
        headers.append("x-two", HeaderValue::from_static("1"));
        headers.append("x-two", HeaderValue::from_static("2"));
        headers.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        let uri: Uri = "/socket.io/?EIO=4&transport=polling&sid=abc"
            .parse()
            .unwrap();
        let peer: SocketAddr = "127.0.0.7:4242".parse().unwrap();
        let bytes = encode_request(&Method::POST, &uri, Some(peer), &headers, b"4hello");
        let request = decode_request(bytes).unwrap();
        assert_eq!(request.method(), Method::POST);
        assert_eq!(request.uri(), &uri);
        assert_eq!(request.headers()[header::COOKIE], "a=b");
        let twos: Vec<_> = request.headers().get_all("x-two").iter().collect();
        assert_eq!(twos, ["1", "2"]);
        // One hop's headers stay on that hop.
        assert!(!request.headers().contains_key(header::CONNECTION));
        assert_eq!(request.extensions().get::<PeerAddr>().unwrap().0, peer);
    }

    #[test]
    fn a_response_survives_its_encoding() {
        let (name, value) = (header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        let bytes = encode_response(StatusCode::BAD_REQUEST, &[(&name, &value)], b"\x00bin");
        let response = decode_response(bytes).unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "text/plain");
        // CORS headers are this node's to give, not the owner's.
        let cors = [
            (header::VARY, HeaderValue::from_static("origin")),
            (
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("https://a.example"),
            ),
        ];
        let cors: Vec<_> = cors.iter().map(|(n, v)| (n, v)).collect();
        let response = decode_response(encode_response(StatusCode::OK, &cors, b"")).unwrap();
        assert!(response.headers().get(header::VARY).is_none());
        assert!(response
            .headers()
            .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
            .is_none());
    }

    #[test]
    fn only_polling_routes_run_for_other_nodes() {
        let paths = ["/poll".to_owned(), "/socket.io/".to_owned()];
        let run = |method: Method, uri: &str| {
            let mut request = Request::new(Body::empty());
            *request.method_mut() = method;
            *request.uri_mut() = uri.parse().unwrap();
            is_polling_route(&request, &paths)
        };
        assert!(run(Method::GET, "/poll?channels=a"));
        assert!(run(
            Method::POST,
            "/socket.io/?EIO=4&transport=polling&sid=x"
        ));
        assert!(run(Method::GET, "/socket.io?EIO=4"));
        assert!(!run(Method::GET, "/api/publish"));
        assert!(!run(Method::POST, "/pollx"));
        assert!(!run(Method::GET, "/events?channels=a"));
        assert!(!run(Method::DELETE, "/poll"));
        assert!(!run(Method::GET, "/metrics"));
    }

    #[test]
    fn truncated_or_lying_encodings_are_refused() {
        let uri: Uri = "/poll".parse().unwrap();
        let full = encode_request(&Method::GET, &uri, None, &http::HeaderMap::new(), b"x");
        for cut in 0..full.len() {
            assert!(decode_request(full.slice(..cut)).is_none(), "cut at {cut}");
        }
        // A header count of 4 billion with nothing behind it.
        let mut lying = BytesMut::new();
        lying.put_u16(200);
        lying.put_u32(u32::MAX);
        assert!(decode_response(lying.freeze()).is_none());
    }
}
