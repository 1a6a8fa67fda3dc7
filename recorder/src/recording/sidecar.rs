//! A recording's metadata: what is known of the call when its recording
//! starts ([`CallMeta`], also written to the spool as the `.start.json`
//! record so a crash cannot lose it) and the sidecar built from it at the
//! end ([`Ending`] → [`Sidecar`], the schema in `earshot_contracts`).

use std::time::{Duration, SystemTime};

use earshot_contracts::Side;
use earshot_contracts::layout::RecordingId;
use earshot_contracts::sidecar::{
    self, Announcement, Audio, Interval, Mp3, Party, Recorder, SCHEMA_VERSION, Sidecar, User,
};
use serde::{Deserialize, Serialize};

use super::Settings;

/// What the pipeline knows about a call when its recording starts; as the
/// `.start.json` record in the spool, what recovery knows after a crash.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CallMeta {
    /// The call's hash.
    pub call: String,
    /// Who called.
    pub caller: Party,
    /// Who was called.
    pub callee: Party,
    /// The policy users on the call.
    pub users: Vec<User>,
    /// When the call started.
    #[serde(with = "sidecar::time")]
    pub started_at: Option<SystemTime>,
    /// When it was answered.
    #[serde(with = "sidecar::time", default)]
    pub answered_at: Option<SystemTime>,
    /// When this recording started.
    #[serde(with = "sidecar::time", default)]
    pub recording_started_at: Option<SystemTime>,
    /// The call this one replaces (an attended transfer).
    #[serde(default)]
    pub replaces: Option<String>,
    /// A SIPREC session's metadata, as its SRC said it.
    #[serde(default)]
    pub siprec: Option<Box<earshot_contracts::sidecar::Siprec>>,
}

/// An announcement toward one party of a recorded call, for its sidecar.
#[derive(Debug, Clone, PartialEq)]
pub struct Announced {
    /// When it was asked for.
    pub at: SystemTime,
    /// Its kind's label.
    pub kind: &'static str,
    /// Who heard it.
    pub to: Side,
    /// How it ended, as a label.
    pub result: &'static str,
    /// How much of it played.
    pub played: Duration,
}

/// How a recording ended, for its sidecar.
#[derive(Debug, Clone)]
pub struct Ending<'a> {
    /// The settings it was made with.
    pub settings: Settings,
    /// When the call ended, if known.
    pub ended: Option<SystemTime>,
    /// Recorded stretches (on, off).
    pub intervals: &'a [(SystemTime, Option<SystemTime>)],
    /// Announcements during it.
    pub announcements: &'a [Announced],
    /// The codec the audio was in.
    pub codec: Option<&'a str>,
    /// Each side's codec (caller, callee).
    pub codecs: [Option<&'a str>; 2],
    /// The file's samples per second.
    pub rate: u32,
    /// Its CBR bitrate, kbit/s.
    pub bitrate: u32,
    /// Seconds of audio in the file.
    pub seconds: f64,
    /// The MP3's size.
    pub bytes: u64,
    /// Its SHA-256, hex.
    pub sha256: String,
    /// Why it is incomplete, if it is.
    pub truncated: Option<String>,
    /// The same as names (`fax`, `undecodable`, `spool_full`, `crashed`).
    pub reasons: Vec<&'static str>,
}

/// The sidecar of a recording.
pub fn build(
    meta: &CallMeta,
    id: &RecordingId,
    object: String,
    instance: &str,
    e: Ending<'_>,
) -> Sidecar {
    let origin = meta
        .answered_at
        .or(meta.started_at)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let since = |t: SystemTime| sidecar::seconds_since(origin, t);
    let (channels, channel_map) = Audio::channels_of(e.settings.layout);
    Sidecar {
        schema_version: SCHEMA_VERSION,
        call: id.call_hash().to_owned(),
        caller: meta.caller.clone(),
        callee: meta.callee.clone(),
        users: meta.users.clone(),
        replaces: meta.replaces.clone(),
        started_at: meta.started_at,
        answered_at: meta.answered_at,
        ended_at: e.ended,
        duration_seconds: e.ended.map(since),
        recorded: e
            .intervals
            .iter()
            .map(|&(on, off)| Interval {
                from: since(on),
                to: off.map(since),
                from_at: Some(on),
                to_at: off,
            })
            .collect(),
        announcements: e
            .announcements
            .iter()
            .map(|a| Announcement {
                kind: a.kind.to_owned(),
                to: a.to,
                result: a.result.to_owned(),
                at: since(a.at),
                at_time: Some(a.at),
                played_seconds: a.played.as_millis() as f64 / 1000.0,
            })
            .collect(),
        pause_behaviour: e.settings.pause,
        audio: Audio {
            format: "mp3".to_owned(),
            codec: e.codec.map(str::to_owned),
            codecs: ["caller", "callee"]
                .into_iter()
                .zip(e.codecs)
                .filter_map(|(side, c)| Some((side.to_owned(), c?.to_owned())))
                .collect(),
            sample_rate: e.rate,
            channels,
            channel_map,
            bitrate_kbps: e.bitrate,
            duration_seconds: (e.seconds * 1000.0).round() / 1000.0,
        },
        mp3: Mp3 {
            object,
            bytes: e.bytes,
            sha256: e.sha256,
        },
        complete: e.truncated.is_none(),
        truncated: e.truncated,
        incomplete_reasons: e.reasons.iter().map(|r| r.to_string()).collect(),
        recorder: Recorder {
            instance: instance.to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
        },
        siprec: meta.siprec.as_deref().cloned(),
    }
}
