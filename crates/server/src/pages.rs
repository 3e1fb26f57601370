//! The browser side served by the binary itself (no build step, no CDN): `/` a landing page
//! with a live room, `/client.js` the dependency-free browser client (source in
//! `clients/browser/`). On by default; `pages = false` turns them off.

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

const CLIENT_JS: &str = include_str!("../../../clients/browser/client.js");
const CLIENT_D_TS: &str = include_str!("../../../clients/browser/client.d.ts");
const INDEX_HTML: &str = include_str!("../../../clients/browser/pages/index.html");

/// The pages' routes; `landing`: with the landing page at `/` (not when embedded: `/` is
/// the application's).
pub(crate) fn routes<S: Clone + Send + Sync + 'static>(landing: bool) -> Router<S> {
    let router = Router::new();
    let router = if landing {
        router.route(
            "/",
            get(|| async { page("text/html; charset=utf-8", INDEX_HTML) }),
        )
    } else {
        router
    };
    router
        .route(
            "/client.js",
            get(|| async { page("text/javascript; charset=utf-8", CLIENT_JS) }),
        )
        .route(
            "/client.d.ts",
            get(|| async { page("application/typescript; charset=utf-8", CLIENT_D_TS) }),
        )
}

fn page(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            // Revalidate: a new binary may serve a new client.
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
}
