//! An existing axum application with Switchboard mounted in it: the application keeps its own
//! routes (`/`, `/api/orders`) and gains Switchboard's (`/ws`, `/health`, `/api/publish`, …).

use axum::routing::get;
use axum::Router;
use switchboard_server::{Embedded, ServerConfig};
use tokio_util::sync::CancellationToken;

/// The application's router with Switchboard merged in, and the Switchboard handle (for
/// draining on shutdown).
pub fn app(config: ServerConfig, shutdown: CancellationToken) -> (Router, Embedded) {
    let switchboard = Embedded::start(config, shutdown);
    let app = Router::new()
        .route("/", get(|| async { "my application\n" }))
        .route("/api/orders", get(|| async { "[]" }))
        .merge(switchboard.router());
    (app, switchboard)
}
