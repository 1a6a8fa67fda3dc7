//! SIGTERM and the drain that follows: new calls are refused with 503,
//! calls in progress finish within the grace period, then their recordings
//! are encoded, spooled and confirmed by the store before the process ends.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use super::{Shared, lock};

/// Returns on SIGTERM or SIGINT.
pub(super) async fn wait_for_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}

/// Refuses new calls, waits for the calls in progress and then for their
/// recordings, all within `grace`.
pub(super) async fn drain(shared: &Arc<Shared>, grace: Duration) {
    // Drain: refuse new calls, let calls in progress finish.
    shared.ready.store(false, Ordering::Relaxed);
    lock(&shared.metrics).set_draining();
    let deadline = Instant::now() + grace;
    // A stalled shard cannot hold the shutdown past its grace period.
    let untold = shared.tell_shards(|| super::Input::Drain, deadline).await;
    if !untold.is_empty() {
        tracing::error!(shards = ?untold, "stalled shards could not be told to drain");
    }
    let active = shared.active_calls();
    tracing::info!(active_calls = active, grace = ?grace, "draining: new calls are refused, calls in progress continue");
    let active = wait_until(deadline, || shared.active_calls()).await;
    if active > 0 {
        tracing::warn!(
            active_calls = active,
            "shutdown grace period over with calls still in progress"
        );
    }
    // No more events: the dispatcher finishes the recordings of any call
    // the grace period cut short, so they are stored complete as far as
    // they went instead of waiting for the next start.
    shared.events.close();
    // Then the recordings: encoded, spooled and confirmed by the store.
    // Until the dispatcher's last round is done, the encoders have
    // nothing queued and the store has every recording.
    let spooled = wait_until(deadline, || {
        let queued = lock(&shared.metrics)
            .recording
            .encoder_queue_depth
            .get()
            .max(0) as usize;
        let dispatching = usize::from(!shared.events.finished());
        dispatching + queued + shared.spool.usage(SystemTime::now()).recordings as usize
    })
    .await;
    if spooled > 0 {
        tracing::warn!(
            recordings = spooled,
            "shutdown grace period over with recordings still in the spool; they are uploaded at the next start"
        );
    }
}

/// Polls `left` every 200 ms until it reaches zero or the deadline passes;
/// returns what is left.
async fn wait_until(deadline: Instant, mut left: impl FnMut() -> usize) -> usize {
    loop {
        let n = left();
        if n == 0 || Instant::now() >= deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
