//! The start of a plain TCP connection: when its first request opens an SSE stream, the
//! server reads that request itself and keeps the socket, instead of handing the connection
//! to hyper.
//!
//! Why: hyper serves a streaming response from the connection's task with its buffers and
//! dispatcher alive for the whole stream (measured ~10 KiB per idle stream, most of an idle
//! SSE client's cost). A stream is a response that never ends, so hyper's keep-alive is of
//! no use to it: our own driver ([`crate::sse::direct`]) writes the body straight to the
//! socket, close-delimited, and parks it without a task while idle, like a WebSocket.
//!
//! Only the first request of a connection, recognised from its first bytes
//! (`GET /events?` or `GET /events `), takes this path; everything else (other routes, a
//! stream requested after other requests on a kept-alive connection, TLS, HTTP/2) is hyper's.
//! The request still goes through the router (CORS, limits, the endpoint itself), so both
//! paths answer alike; the endpoint hands its stream over through a [`StreamSlot`].

use axum::body::Body;
use bytes::{BufMut, BytesMut};
use http::{HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tower_service::Service as _;

use crate::redact::redact_path_and_query;
use crate::sse::stream::SseStream;
use crate::state::{AppState, PeerAddr};

/// The first bytes of a request this module serves.
const STREAM_REQUESTS: [&[u8; 12]; 2] = [b"GET /events?", b"GET /events "];

/// A request head larger than this is refused (431), as hyper refuses its own.
const MAX_HEAD: usize = 16 * 1024;

/// At most this many header fields.
const MAX_HEADERS: usize = 64;

/// An error response's body is collected before it is written: never more than this.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// Where the endpoint puts its stream when the connection is ours (a request extension).
#[derive(Clone, Default)]
pub(crate) struct StreamSlot(Arc<Mutex<Option<SseStream>>>);

impl StreamSlot {
    /// Hand the stream to the front.
    pub(crate) fn put(&self, stream: SseStream) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(stream);
    }

    fn take(&self) -> Option<SseStream> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// Who serves a new connection, from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sniffed {
    /// Its first request opens a stream: [`serve_stream_request`].
    Stream,
    /// Anything else: hyper.
    Other,
    /// Nothing arrived before the deadline (slowloris).
    TimedOut,
    /// The peer left, or shutdown began, before sending anything.
    Gone,
}

/// Whether the connection's first request is one this module serves: looks at its first
/// bytes (without taking them) as soon as some arrive, before `deadline`.
pub(crate) async fn sniff(
    tcp: &TcpStream,
    deadline: Instant,
    shutdown: &tokio_util::sync::CancellationToken,
) -> Sniffed {
    let mut start = [0u8; 12];
    let peek = tokio::time::timeout_at(deadline, tcp.peek(&mut start));
    let peeked = tokio::select! {
        peeked = peek => peeked,
        () = shutdown.cancelled() => return Sniffed::Gone,
    };
    match peeked {
        Err(_) => Sniffed::TimedOut,
        Ok(Ok(0)) | Ok(Err(_)) => Sniffed::Gone,
        Ok(Ok(n)) if n == start.len() && STREAM_REQUESTS.contains(&&start) => Sniffed::Stream,
        // Fewer bytes than the prefix (a slow client) is hyper's too: always correct.
        Ok(Ok(_)) => Sniffed::Other,
    }
}

/// Serve the connection's first request (a stream request, per [`sniff`]): read its head,
/// run it through `router`, then drive the stream the endpoint handed over. When the endpoint
/// answered otherwise (an error), the answer is written and the connection is returned for
/// hyper to serve what follows (a client that keeps its connection alive).
pub(crate) async fn serve_stream_request(
    mut tcp: TcpStream,
    peer: SocketAddr,
    mut router: axum::Router,
    state: Arc<AppState>,
    deadline: Instant,
) -> Option<TcpStream> {
    let mut request = match read_head(&mut tcp, deadline).await {
        Ok(request) => request,
        Err(HeadError::Gone) => return None,
        Err(HeadError::TimedOut) => {
            state.metrics.handshake_timeouts.inc();
            return None;
        }
        Err(HeadError::Refused(status)) => {
            let response = Response::builder()
                .status(status)
                .body(Body::from(format!("{status}\n")))
                .unwrap_or_default();
            write_response(&mut tcp, response, true, &state).await;
            return None;
        }
    };
    tracing::debug!(
        %peer,
        method = %request.method(),
        target = %redact_path_and_query(
            request.uri().path_and_query().map_or("/", |p| p.as_str())
        ),
        "http request (stream)"
    );
    // The connection can serve another request after an error answer only if the client
    // wants that and nothing of this request is left in the socket (a body).
    let keep_alive = request.version() == http::Version::HTTP_11
        && !has_token(request.headers(), http::header::CONNECTION, "close")
        && !request.headers().contains_key(http::header::CONTENT_LENGTH)
        && !request
            .headers()
            .contains_key(http::header::TRANSFER_ENCODING);
    let slot = StreamSlot::default();
    request.extensions_mut().insert(PeerAddr(peer));
    request.extensions_mut().insert(slot.clone());
    let Ok(response) = router.call(request).await;
    if let Some(stream) = slot.take() {
        let head = response_head(&response);
        crate::sse::direct::start(tcp, stream, head).await;
        return None;
    }
    write_response(&mut tcp, response, !keep_alive, &state).await;
    keep_alive.then_some(tcp)
}

fn has_token(headers: &http::HeaderMap, name: HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

enum HeadError {
    /// The peer left, or the connection failed.
    Gone,
    /// The head did not arrive in time (slowloris).
    TimedOut,
    /// Malformed (400) or too large (431).
    Refused(StatusCode),
}

/// Read and parse the request head, taking exactly its bytes from the socket: what follows
/// (another request of a kept-alive connection) stays there for hyper.
async fn read_head(tcp: &mut TcpStream, deadline: Instant) -> Result<Request<Body>, HeadError> {
    let mut buf = BytesMut::with_capacity(1024);
    loop {
        let have = buf.len();
        if have >= MAX_HEAD {
            return Err(HeadError::Refused(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ));
        }
        // Look at what arrived without taking it, after what was already taken.
        buf.resize(MAX_HEAD.min(have + 4096), 0);
        let peeked = match tokio::time::timeout_at(deadline, tcp.peek(&mut buf[have..])).await {
            Err(_) => return Err(HeadError::TimedOut),
            Ok(Ok(0)) | Ok(Err(_)) => return Err(HeadError::Gone),
            Ok(Ok(n)) => n,
        };
        buf.truncate(have + peeked);
        let (request, take) = match parse_head(&buf)? {
            Some((request, len)) => (Some(request), len - have),
            // All of it is head: take it (peeking again would return at once, the socket
            // still being readable).
            None => (None, peeked),
        };
        buf.truncate(have);
        buf.resize(have + take, 0);
        if tcp.read_exact(&mut buf[have..]).await.is_err() {
            return Err(HeadError::Gone);
        }
        if let Some(request) = request {
            return Ok(request);
        }
    }
}

/// The request and the length of its head, once `buf` holds the whole head.
fn parse_head(buf: &[u8]) -> Result<Option<(Request<Body>, usize)>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let malformed = HeadError::Refused(StatusCode::BAD_REQUEST);
    let len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(HeadError::Refused(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ))
        }
        Err(_) => return Err(malformed),
    };
    let (Some(method), Some(path)) = (parsed.method, parsed.path) else {
        return Err(malformed);
    };
    let version = match parsed.version {
        Some(0) => http::Version::HTTP_10,
        _ => http::Version::HTTP_11,
    };
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .version(version)
        .body(Body::empty())
        .map_err(|_| HeadError::Refused(StatusCode::BAD_REQUEST))?;
    let map = request.headers_mut();
    for header in parsed.headers.iter() {
        let name = HeaderName::from_bytes(header.name.as_bytes())
            .map_err(|_| HeadError::Refused(StatusCode::BAD_REQUEST))?;
        let value = HeaderValue::from_bytes(header.value)
            .map_err(|_| HeadError::Refused(StatusCode::BAD_REQUEST))?;
        map.append(name, value);
    }
    Ok(Some((request, len)))
}

/// The status line and headers of a close-delimited response (no `Content-Length`, no
/// chunking: the body ends when the connection does).
fn response_head<B>(response: &Response<B>) -> BytesMut {
    let mut head = BytesMut::with_capacity(256);
    write_status_and_headers(&mut head, response);
    head.put_slice(b"connection: close\r\n\r\n");
    head
}

fn write_status_and_headers<B>(out: &mut BytesMut, response: &Response<B>) {
    let status = response.status();
    out.put_slice(b"HTTP/1.1 ");
    out.put_slice(status.as_str().as_bytes());
    out.put_u8(b' ');
    out.put_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.put_slice(b"\r\n");
    for (name, value) in response.headers() {
        if name == http::header::CONNECTION || name == http::header::CONTENT_LENGTH {
            continue;
        }
        out.put_slice(name.as_str().as_bytes());
        out.put_slice(b": ");
        out.put_slice(value.as_bytes());
        out.put_slice(b"\r\n");
    }
}

/// Write a whole (small) response; with `close`, say so and close the connection.
async fn write_response(
    tcp: &mut TcpStream,
    response: Response<Body>,
    close: bool,
    state: &AppState,
) {
    let (parts, body) = response.into_parts();
    let body = match http_body_util::Limited::new(body, MAX_ERROR_BODY)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(_) => bytes::Bytes::new(),
    };
    let response = Response::from_parts(parts, ());
    let mut out = BytesMut::with_capacity(256 + body.len());
    write_status_and_headers(&mut out, &response);
    out.put_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
    if close {
        out.put_slice(b"connection: close\r\n");
    }
    out.put_slice(b"\r\n");
    out.put_slice(&body);
    let close_timeout = state.config.close_timeout;
    let _ = tokio::time::timeout(close_timeout, async {
        tcp.write_all(&out).await?;
        state.metrics.bytes_out.add(out.len() as u64);
        if close {
            // Half-close, then let the client's FIN arrive: closing with unread input in
            // the socket would reset the connection and could destroy the response.
            tcp.shutdown().await?;
            let mut sink = [0u8; 1024];
            while tcp.read(&mut sink).await? > 0 {}
        }
        Ok::<(), std::io::Error>(())
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_complete_head_parses_and_a_partial_one_waits() {
        let head = b"GET /events?channels=a HTTP/1.1\r\nHost: x\r\nLast-Event-ID: 1-0000\r\n\r\n";
        let (request, len) = parse_head(head).ok().flatten().expect("complete");
        assert_eq!(len, head.len());
        assert_eq!(request.uri().path(), "/events");
        assert_eq!(request.uri().query(), Some("channels=a"));
        assert_eq!(request.headers()["last-event-id"], "1-0000");
        assert!(matches!(parse_head(&head[..20]), Ok(None)));
        assert!(matches!(
            parse_head(b"GET /events HTTP/1.1\r\nBad Header\r\n\r\n"),
            Err(HeadError::Refused(StatusCode::BAD_REQUEST))
        ));
    }

    #[test]
    fn a_stream_head_is_close_delimited() {
        let response = Response::builder()
            .header("content-type", "text/event-stream")
            .body(())
            .expect("response");
        let head = response_head(&response);
        assert_eq!(
            &head[..],
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n"
        );
    }
}
