//! Cross-origin access (CORS) for the endpoints a browser page on another site uses:
//! `/events`, `/poll` and `/api/publish`. Only those: the backend API and the operations
//! endpoints stay same-origin, and WebSocket handshakes are checked against an origin
//! allowlist of their own (authentication issue), not by CORS, which browsers do not apply
//! to them.

use std::time::Duration;

use http::{header, HeaderName, HeaderValue, Method};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// The CORS layer for `origins` (`*`: any origin, without credentials), or `None` when no
/// origin is configured (same-origin pages only). Origins were validated with the settings;
/// one that is not a valid header value is skipped with a warning.
pub(crate) fn layer(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let layer = CorsLayer::new()
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("last-event-id"),
        ])
        // Preflights are cached by the browser for 10 minutes.
        .max_age(Duration::from_secs(600));
    if origins.iter().any(|o| o == "*") {
        // A wildcard can not be combined with credentials (the browser refuses it).
        return Some(layer.allow_origin(AllowOrigin::any()));
    }
    let list: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| match HeaderValue::from_str(o) {
            Ok(v) => Some(v),
            Err(_) => {
                tracing::warn!(origin = %o, "CORS origin is not a valid header value: skipped");
                None
            }
        })
        .collect();
    // Listed origins may send credentials (cookies, `withCredentials` EventSource).
    Some(
        layer
            .allow_origin(AllowOrigin::list(list))
            .allow_credentials(true),
    )
}
