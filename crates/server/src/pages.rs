//! The browser side served by the binary itself (no build step, no CDN): `/` a landing page
//! with a live room, `/chat` the demo chat, `/dashboard` the live dashboard (fed by
//! [`crate::stats_feed`]), `/admin` rooms, presence and disconnects through the HTTP API
//! (behind the API key the page asks for), and `/client.js` the dependency-free browser
//! client (sources in `clients/browser/`). On by default; `pages = false` turns them off.

use std::sync::LazyLock;

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

const CLIENT_JS: &str = include_str!("../../../clients/browser/client.js");

/// `/client.js` as served: the source without its comment lines (its opening comment, the
/// usage, kept): a third smaller gzipped, nothing else changed. The commented source is
/// `clients/browser/client.js`; the API is documented in `/client.d.ts`.
static CLIENT_JS_SERVED: LazyLock<String> = LazyLock::new(|| without_comment_lines(CLIENT_JS));
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
            get(|| async { page("text/javascript; charset=utf-8", CLIENT_JS_SERVED.as_str()) }),
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

/// `source` less its comment lines: lines that are only a `//` comment, `/* … */` blocks
/// that start a line (code after the block's end on its last line is kept), and blank lines.
/// The opening run of `//` lines stays. Never looks inside a line of code, so a `//` in a
/// string (a URL) is safe.
fn without_comment_lines(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut lines = source.lines().peekable();
    while let Some(line) = lines.next_if(|l| l.trim_start().starts_with("//")) {
        out.push_str(line);
        out.push('\n');
    }
    let mut in_block = false;
    for line in lines {
        let trimmed = line.trim_start();
        let code = if in_block {
            match trimmed.split_once("*/") {
                Some((_, rest)) => {
                    in_block = false;
                    rest
                }
                None => continue,
            }
        } else if let Some(block) = trimmed.strip_prefix("/*") {
            match block.split_once("*/") {
                Some((_, rest)) => rest,
                None => {
                    in_block = true;
                    continue;
                }
            }
        } else if trimmed.starts_with("//") {
            continue;
        } else {
            line
        };
        if code.trim().is_empty() {
            continue;
        }
        if std::ptr::eq(code, line) {
            out.push_str(line.trim_end());
        } else {
            // Code after a block comment: at the comment's indentation.
            out.push_str(&line[..line.len() - trimmed.len()]);
            out.push_str(code.trim());
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comment_lines_go_and_code_stays() {
        let source = "// usage\n// more\n\nconst a = 'http://x'; // kept: inside a line of code\n  // gone\n  /** gone\n   * too */\n  /* gone */ b();\n    c();\n";
        assert_eq!(
            without_comment_lines(source),
            "// usage\n// more\nconst a = 'http://x'; // kept: inside a line of code\n  b();\n    c();\n"
        );
    }

    #[test]
    fn the_served_client_is_the_source_less_its_comments() {
        let served = without_comment_lines(CLIENT_JS);
        assert!(
            served.len() < CLIENT_JS.len() * 9 / 10,
            "{} of {}",
            served.len(),
            CLIENT_JS.len()
        );
        // Every line of code is there, in order.
        let code = |s: &str| -> Vec<String> {
            s.lines()
                .map(str::trim)
                .filter(|l| {
                    !l.is_empty()
                        && !l.starts_with("//")
                        && !l.starts_with("/*")
                        && !l.starts_with('*')
                })
                .map(str::to_owned)
                .collect()
        };
        assert_eq!(code(&served), code(CLIENT_JS));
    }
}
