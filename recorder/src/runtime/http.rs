//! `/metrics`, `/healthz` and `/readyz`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use super::{Shared, lock};

/// Serves the endpoints until the process ends.
pub(super) async fn serve(shared: Arc<Shared>, listener: tokio::net::TcpListener) {
    let app = axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get({
                let shared = shared.clone();
                move || {
                    let shared = shared.clone();
                    async move {
                        let stats = lock(&shared.rec).stats().clone();
                        let spool = shared.spool.usage(SystemTime::now());
                        let mut m = lock(&shared.metrics);
                        m.sync(&stats);
                        m.set_spool(&spool);
                        (
                            [(
                                axum::http::header::CONTENT_TYPE,
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            )],
                            m.encode(),
                        )
                    }
                }
            }),
        )
        .route("/healthz", axum::routing::get(|| async { "ok\n" }))
        .route(
            "/readyz",
            axum::routing::get({
                let shared = shared.clone();
                move || {
                    let shared = shared.clone();
                    async move {
                        if shared.ready.load(Ordering::Relaxed) {
                            (axum::http::StatusCode::OK, "ready\n")
                        } else {
                            (axum::http::StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
                        }
                    }
                }
            }),
        );
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "HTTP server stopped");
    }
}
