//! The uploader: each finished recording's MP3, then its sidecar, into the
//! store, written once; only what the store confirmed leaves the spool.
//! Failures are retried with backoff and counted by reason.

use std::sync::Arc;
use std::time::Duration;

use earshot_contracts::layout::RecordingId;

use crate::metrics::RecordingMetrics;
use crate::spool::Spool;
use crate::store::{Store, StoreError};

/// Uploads the recordings whose stems arrive, one after another.
pub async fn upload_loop(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<String>,
    store: Store,
    spool: Arc<Spool>,
    metrics: RecordingMetrics,
) {
    while let Some(stem) = rx.recv().await {
        let mut backoff = Duration::from_secs(1);
        loop {
            match upload_one(&store, &spool, &stem).await {
                Ok(bytes) => {
                    metrics.upload_bytes.inc_by(bytes);
                    metrics.stored.inc();
                    for name in [format!("{stem}.mp3"), format!("{stem}.json")] {
                        if let Err(e) = spool.remove(&name) {
                            tracing::error!(recording = %stem, error = %e, "stored, but cannot remove it from the spool");
                        }
                    }
                    tracing::info!(recording = %stem, "recording stored");
                    break;
                }
                Err(e) => {
                    metrics
                        .upload_failures
                        .get_or_create(&vec![("reason", e.reason().to_owned())])
                        .inc();
                    tracing::warn!(recording = %stem, error = %e, retry_in = ?backoff, "upload failed; the recording stays in the spool");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(60));
                }
            }
        }
    }
}

async fn upload_one(store: &Store, spool: &Arc<Spool>, stem: &str) -> Result<u64, StoreError> {
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
    let sidecar = read(format!("{stem}.json")).await?;
    let total = (audio.len() + sidecar.len()) as u64;
    // The MP3 first: a sidecar in the store means its recording is there too.
    store.put_once(&id.mp3_name(), audio).await?;
    store.put_once(&id.sidecar_name(), sidecar).await?;
    Ok(total)
}
