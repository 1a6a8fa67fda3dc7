//! The uploader: each finished recording's MP3, then its sidecar, into the
//! store, each written once; only what the store confirmed leaves the
//! spool. Recordings go up [`CONCURRENT`] at a time, each with its own
//! retries and backoff, so one that cannot be stored (the store refuses
//! it, or it is too large for a slow link) never holds up the others. One
//! that has failed [`STUCK_AFTER`] times is counted in
//! `earshot_upload_stuck_recordings` and logged as an error until it goes.

use std::sync::Arc;
use std::time::Duration;

use earshot_contracts::layout::RecordingId;
use tokio::sync::Semaphore;

use super::Ready;
use crate::metrics::RecordingMetrics;
use crate::spool::Spool;
use crate::store::{Store, StoreError};

/// Recordings uploaded at once.
pub const CONCURRENT: usize = 4;
/// Failed attempts after which a recording counts as stuck.
pub const STUCK_AFTER: u32 = 5;

/// How long to wait between attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// After the first failure; doubled after each one.
    pub first: Duration,
    /// Longest wait for an upload the store may still take.
    pub max: Duration,
    /// Longest wait for an upload the store refused for its content (a
    /// different object of that name): retried rarely, in case a person
    /// clears the way.
    pub conflict: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            first: Duration::from_secs(1),
            max: Duration::from_secs(60),
            conflict: Duration::from_secs(600),
        }
    }
}

/// The time one attempt may take: a base for the round trips, and the
/// object's bytes at a slow link's 256 KiB/s.
pub fn attempt_budget(bytes: u64) -> Duration {
    Duration::from_secs(30) + Duration::from_millis(bytes / 256)
}

/// Uploads every recording that arrives, [`CONCURRENT`] at a time.
pub async fn upload_loop(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Ready>,
    store: Store,
    spool: Arc<Spool>,
    metrics: RecordingMetrics,
    backoff: Backoff,
) {
    let slots = Arc::new(Semaphore::new(CONCURRENT));
    while let Some(ready) = rx.recv().await {
        tokio::spawn(upload_with_retries(
            ready,
            store.clone(),
            spool.clone(),
            metrics.clone(),
            slots.clone(),
            backoff,
        ));
    }
}

async fn upload_with_retries(
    ready: Ready,
    store: Store,
    spool: Arc<Spool>,
    metrics: RecordingMetrics,
    slots: Arc<Semaphore>,
    policy: Backoff,
) {
    let stem = ready.stem.as_str();
    let mut backoff = policy.first;
    let mut failures = 0u32;
    loop {
        let result = {
            // The semaphore is never closed, so acquiring cannot fail.
            let _slot = slots.acquire().await.expect("upload slots stay open");
            let bytes =
                std::fs::metadata(spool.path(&format!("{stem}.mp3"))).map_or(0, |m| m.len());
            let budget = attempt_budget(bytes);
            match tokio::time::timeout(budget, upload_one(&store, &spool, &ready)).await {
                Ok(r) => r,
                Err(_) => Err(StoreError::TimedOut(budget)),
            }
        };
        match result {
            Ok(bytes) => {
                for name in [
                    format!("{stem}.mp3"),
                    format!("{stem}.json"),
                    format!("{stem}.start.json"),
                ] {
                    if let Err(e) = spool.remove(&name) {
                        tracing::error!(recording = %stem, error = %e, "stored, but cannot remove it from the spool");
                    }
                }
                // Counted once the spool is clean: `stored` means done.
                metrics.upload_bytes.inc_by(bytes);
                metrics.stored.inc();
                if failures >= STUCK_AFTER {
                    metrics.upload_stuck.dec();
                }
                tracing::info!(recording = %stem, attempts = failures + 1, "recording stored");
                return;
            }
            Err(e) => {
                failures += 1;
                metrics
                    .upload_failures
                    .get_or_create(&vec![("reason", e.reason().to_owned())])
                    .inc();
                let cap = if matches!(e, StoreError::Conflict(_)) {
                    policy.conflict
                } else {
                    policy.max
                };
                if failures == STUCK_AFTER {
                    metrics.upload_stuck.inc();
                }
                if failures >= STUCK_AFTER {
                    tracing::error!(recording = %stem, error = %e, attempts = failures, retry_in = ?backoff, "upload keeps failing; the recording stays in the spool and the others go on");
                } else {
                    tracing::warn!(recording = %stem, error = %e, retry_in = ?backoff, "upload failed; the recording stays in the spool");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(cap);
            }
        }
    }
}

async fn upload_one(store: &Store, spool: &Arc<Spool>, ready: &Ready) -> Result<u64, StoreError> {
    let stem = &ready.stem;
    let id = RecordingId::parse_stem(stem)
        .ok_or_else(|| StoreError::Spool(format!("{stem} is not a recording's name")))?;
    // Off the I/O thread: an hour-long recording is megabytes of disk reads.
    let read = |name: String| {
        let spool = spool.clone();
        async move {
            tokio::task::spawn_blocking(move || spool.read(&name).map_err(|e| (name, e)))
                .await
                .map_err(|e| StoreError::Spool(e.to_string()))?
                .map_err(|(n, e)| StoreError::Spool(format!("{n}: {e}")))
        }
    };
    let audio = read(format!("{stem}.mp3")).await?;
    let sidecar = match &ready.sidecar {
        Some(s) => s.clone(),
        None => read(format!("{stem}.json")).await?,
    };
    let total = (audio.len() + sidecar.len()) as u64;
    // The MP3 first: a sidecar in the store means its recording is there too.
    store.put_once(&id.mp3_name(), audio).await?;
    store.put_once(&id.sidecar_name(), sidecar).await?;
    Ok(total)
}
