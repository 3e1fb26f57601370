//! The browser side served by the binary itself (no build step, no CDN): `/` a landing page
//! with a live room, `/chat` the demo chat, `/dashboard` the live dashboard (fed by
//! [`crate::stats_feed`]), `/admin` rooms, presence and disconnects through the HTTP API
//! (behind the API key the page asks for), and `/client.js` the dependency-free browser
//! client (sources in `clients/browser/`). On by default; `pages = false` turns them off.

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

const CLIENT_JS: &str = include_str!("../../../clients/browser/client.js");
const CLIENT_D_TS: &str = include_str!("../../../clients/browser/client.d.ts");
const INDEX_HTML: &str = include_str!("../../../clients/browser/pages/index.html");
const CHAT_HTML: &str = include_str!("../../../clients/browser/pages/chat.html");
const DASHBOARD_HTML: &str = include_str!("../../../clients/browser/pages/dashboard.html");
const ADMIN_HTML: &str = include_str!("../../../clients/browser/pages/admin.html");

/// The pages' routes; `html`: with the HTML pages (`/`, `/chat`, `/dashboard`, `/admin`);
/// not when embedded: those paths are the application's, which gets `/client.js` only.
pub(crate) fn routes<S: Clone + Send + Sync + 'static>(html_pages: bool) -> Router<S> {
    let router = Router::new();
    let router = if html_pages {
        router
            .route("/", get(|| async { html(INDEX_HTML) }))
            .route("/chat", get(|| async { html(CHAT_HTML) }))
            .route("/dashboard", get(|| async { html(DASHBOARD_HTML) }))
            .route("/admin", get(|| async { html(ADMIN_HTML) }))
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

fn html(body: &'static str) -> impl IntoResponse {
    page("text/html; charset=utf-8", body)
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
