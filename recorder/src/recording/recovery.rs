//! At start: every recording an earlier run left in the spool is queued for
//! upload. One the crash cut short (an MP3 without its sidecar) gets a
//! sidecar built from its `.start.json` record and what the MP3 holds,
//! saying it was cut short. One that cannot be read is set aside (renamed
//! `*.quarantined`) for an operator: it never stops the start.

use std::time::SystemTime;

use earshot_contracts::layout::RecordingId;
use sha2::{Digest, Sha256};

use super::Shared;
use super::encoder::mp3_duration;
use super::sidecar::{self, CallMeta, Ending};
use crate::spool::QUARANTINE_SUFFIX;

/// Why a recovered recording is incomplete.
pub const CUT_SHORT: &str =
    "the recorder stopped during the call; the recording ends where it stopped";

/// Queues every recording in the spool for upload; those a crash cut short
/// get a sidecar that says so (kept in memory for the upload when the
/// spool cannot take it). A recording whose files cannot be read is set
/// aside ([`quarantine`]), counted and logged: nothing in the spool can
/// stop the start.
pub fn recover_spool(shared: &Shared) {
    let mut found = 0;
    let mut set_aside = 0;
    for mp3 in shared.spool.names_ending(".mp3") {
        let stem = mp3.trim_end_matches(".mp3").to_owned();
        let Some(id) = RecordingId::parse_stem(&stem) else {
            tracing::warn!(file = %mp3, "not a recording's name; left in the spool");
            continue;
        };
        let sidecar = match recover_one(shared, &stem, &id) {
            Ok(sidecar) => sidecar,
            Err(e) => {
                quarantine(shared, &stem, &e);
                set_aside += 1;
                continue;
            }
        };
        found += 1;
        // Expected by the process before this one and not stored yet: this
        // process owes it to the store, so `expected - stored` stays the
        // number of recordings not yet confirmed.
        shared.metrics.expected.inc();
        let _ = shared.uploads.send(super::Ready { stem, sidecar });
    }
    if found > 0 {
        tracing::info!(recordings = found, "uploading recordings left in the spool");
    }
    if set_aside > 0 {
        tracing::error!(
            recordings = set_aside,
            suffix = QUARANTINE_SUFFIX,
            "recordings in the spool that cannot be read were set aside for an operator"
        );
    }
}

/// Checks that a recording left in the spool can be uploaded, and gives one
/// the crash cut short its sidecar. `Ok(Some(json))`: the sidecar, which
/// the spool could not take; `Err`: a file of the recording cannot be read.
fn recover_one(shared: &Shared, stem: &str, id: &RecordingId) -> std::io::Result<Option<Vec<u8>>> {
    let mp3 = format!("{stem}.mp3");
    let json_name = format!("{stem}.json");
    if shared.spool.contains(&json_name) {
        // Finished: the uploader reads both files.
        shared.spool.check_readable(&mp3)?;
        shared.spool.check_readable(&json_name)?;
        return Ok(None);
    }
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
        siprec: None,
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
        id,
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
    let json = sidecar.to_json();
    // A full disk refuses the sidecar: it travels to the uploader in memory,
    // and the start record stays, so a crash before the upload rebuilds it.
    let in_memory = match shared.spool.write_atomic(&json_name, &json) {
        Ok(()) => {
            if let Err(e) = shared.spool.remove(&start_name) {
                tracing::warn!(file = %start_name, error = %e, "cannot remove a start record from the spool");
            }
            None
        }
        Err(e) => {
            tracing::error!(call = %meta.call, error = %e, "cannot write a recovered recording's sidecar to the spool; uploading it from memory");
            Some(json)
        }
    };
    shared
        .metrics
        .recordings
        .get_or_create(&vec![("result", "truncated".to_owned())])
        .inc();
    tracing::warn!(call = %meta.call, seconds = format!("{seconds:.1}"), "recovered a recording cut short by a restart");
    Ok(in_memory)
}

/// Sets a recording that cannot be read aside: each of its files renamed
/// with [`QUARANTINE_SUFFIX`] in the spool, never uploaded, kept for an
/// operator; counted in `earshot_spool_quarantined_total`.
fn quarantine(shared: &Shared, stem: &str, why: &std::io::Error) {
    shared.metrics.quarantined.inc();
    let mut renamed = Vec::new();
    for name in [
        format!("{stem}.mp3"),
        format!("{stem}.json"),
        format!("{stem}.start.json"),
    ] {
        if !shared.spool.contains(&name) {
            continue;
        }
        match shared.spool.quarantine(&name) {
            Ok(to) => renamed.push(to),
            Err(e) => {
                tracing::error!(file = %name, error = %e, "cannot rename a file of a recording set aside; it stays as it is and is not uploaded")
            }
        }
    }
    tracing::error!(recording = %stem, error = %why, files = ?renamed, "a recording in the spool cannot be read: set aside for an operator, not uploaded");
}
