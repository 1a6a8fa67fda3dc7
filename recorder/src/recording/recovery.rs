//! At start: every recording an earlier run left in the spool is queued for
//! upload. One the crash cut short (an MP3 without its sidecar) gets a
//! sidecar built from its `.start.json` record and what the MP3 holds,
//! saying it was cut short.

use std::time::SystemTime;

use earshot_contracts::layout::RecordingId;
use sha2::{Digest, Sha256};

use super::Shared;
use super::encoder::mp3_duration;
use super::sidecar::{self, CallMeta, Ending};

/// Why a recovered recording is incomplete.
pub const CUT_SHORT: &str =
    "the recorder stopped during the call; the recording ends where it stopped";

/// Queues every recording in the spool for upload; those a crash cut short
/// get a sidecar that says so.
pub fn recover_spool(shared: &Shared) -> std::io::Result<()> {
    let mut found = 0;
    for mp3 in shared.spool.names_ending(".mp3") {
        let stem = mp3.trim_end_matches(".mp3").to_owned();
        let Some(id) = RecordingId::parse_stem(&stem) else {
            tracing::warn!(file = %mp3, "not a recording's name; left in the spool");
            continue;
        };
        let json_name = format!("{stem}.json");
        if !shared.spool.contains(&json_name) {
            let data = shared.spool.read(&mp3)?;
            let start_name = format!("{stem}.start.json");
            let meta: Option<CallMeta> = shared
                .spool
                .read(&start_name)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
            let meta = meta.unwrap_or_else(|| CallMeta {
                call: id.call_hash().to_owned(),
                caller: Default::default(),
                callee: Default::default(),
                users: Vec::new(),
                started_at: None,
                answered_at: None,
                recording_started_at: None,
                replaces: None,
            });
            let recording_start = meta.recording_started_at.unwrap_or_else(SystemTime::now);
            let meta = CallMeta {
                started_at: meta.started_at.or(Some(recording_start)),
                ..meta
            };
            let ended = std::fs::metadata(shared.spool.path(&mp3))
                .and_then(|m| m.modified())
                .ok();
            let seconds = mp3_duration(&data);
            let settings = shared.settings_now();
            // The file says what it was made at (a wideband call: 16 kHz).
            let (rate, bitrate) = super::encoder::mp3_format(&data)
                .unwrap_or((earshot_recorder_core::codec::NARROWBAND, settings.bitrate));
            let sidecar = sidecar::build(
                &meta,
                &id,
                shared.store.key(&id.mp3_name()),
                &shared.instance,
                Ending {
                    settings,
                    ended,
                    intervals: &[(recording_start, ended)],
                    announcements: &[],
                    codec: None,
                    codecs: [None, None],
                    rate,
                    bitrate,
                    seconds,
                    bytes: data.len() as u64,
                    sha256: hex::encode(Sha256::digest(&data)),
                    truncated: Some(CUT_SHORT.to_owned()),
                    reasons: vec!["crashed"],
                },
            );
            shared.spool.write_atomic(&json_name, &sidecar.to_json())?;
            shared.spool.remove(&start_name)?;
            shared
                .metrics
                .recordings
                .get_or_create(&vec![("result", "truncated".to_owned())])
                .inc();
            tracing::warn!(call = %meta.call, seconds = format!("{seconds:.1}"), "recovered a recording cut short by a restart");
        }
        found += 1;
        // Expected by the process before this one and not stored yet: this
        // process owes it to the store, so `expected - stored` stays the
        // number of recordings not yet confirmed.
        shared.metrics.expected.inc();
        let _ = shared.uploads.send(super::Ready {
            stem,
            sidecar: None,
        });
    }
    if found > 0 {
        tracing::info!(recordings = found, "uploading recordings left in the spool");
    }
    Ok(())
}
