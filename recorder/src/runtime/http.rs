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
                        // Each shard's counters, taken off the main thread:
                        // a shard busy in its core delays the scrape, never
                        // the SIP listeners.
                        let stats = {
                            let shared = shared.clone();
                            tokio::task::spawn_blocking(move || {
                                let mut all = earshot_recorder_core::stats::Stats::default();
                                for s in &shared.shards {
                                    all.merge(lock(&s.core).stats());
                                }
                                all
                            })
                            .await
                            .unwrap_or_default()
                        };
                        let spool = shared.spool.usage(SystemTime::now());
                        let mut m = lock(&shared.metrics);
                        m.sync(&stats);
                        let f = &shared.fastpath;
                        m.set_kernel(f.state(), f.totals(), f.streams(), f.program_time());
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
                        if !shared.ready.load(Ordering::Relaxed) {
                            return (
                                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                                "not ready\n".to_owned(),
                            );
                        }
                        // Half alive is not ready: a shard that has not run
                        // its 20 ms timer round for seconds relays nothing.
                        // A spool that refuses new recordings is said, but
                        // stays ready: calls are still relayed, and taking
                        // the recorder out of service would stop them too.
                        // Recordings falling behind by seconds lose audio:
                        // a recorder in that state takes no more calls.
                        if let Some(late) = shared
                            .backlog
                            .behind_for(std::time::Instant::now())
                            .filter(|d| *d > crate::recording::BEHIND_UNREADY)
                        {
                            return (
                                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                                format!(
                                    "not ready: the recording pipeline has been behind for {:.1} s\n",
                                    late.as_secs_f64()
                                ),
                            );
                        }
                        match shared.stalled_shard() {
                            None => match shared.spool.refusal() {
                                None => (axum::http::StatusCode::OK, "ready\n".to_owned()),
                                Some(why) => (
                                    axum::http::StatusCode::OK,
                                    format!("ready; new recordings are refused: {why}\n"),
                                ),
                            },
                            Some((shard, late)) => (
                                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                                format!(
                                    "not ready: shard {shard} stalled for {:.1} s\n",
                                    late.as_secs_f64()
                                ),
                            ),
                        }
                    }
                }
            }),
        );
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "HTTP server stopped");
    }
}
