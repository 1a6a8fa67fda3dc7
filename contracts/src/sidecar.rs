//! The JSON sidecar stored beside every recording's MP3: who called whom,
//! when, what of the call was recorded and why, the audio's format and the
//! MP3's size and SHA-256. The recorder writes it; the console and any
//! script read it (`docs/recordings.md` documents each field). A reader
//! accepts missing fields (defaults) so a damaged or older sidecar still
//! lists; the schema version says which fields a writer promised.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::modes::{ChannelLayout, PauseBehaviour, RecordingMode, Side};

/// The schema version this crate writes.
pub const SCHEMA_VERSION: u32 = 1;

/// One recording's sidecar.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct Sidecar {
    /// [`SCHEMA_VERSION`] of the writer.
    pub schema_version: u32,
    /// The call's hash (the recording's name ends in it).
    pub call: String,
    /// Who called.
    pub caller: Party,
    /// Who was called.
    pub callee: Party,
    /// The policy users on the call.
    pub users: Vec<User>,
    /// When the call started (its INVITE).
    #[serde(with = "time")]
    pub started_at: Option<SystemTime>,
    /// When it was answered.
    #[serde(with = "time")]
    pub answered_at: Option<SystemTime>,
    /// When it ended; `None` when the recorder stopped first.
    #[serde(with = "time")]
    pub ended_at: Option<SystemTime>,
    /// Answer (or start) to end, seconds.
    pub duration_seconds: Option<f64>,
    /// The recorded stretches, in order.
    pub recorded: Vec<Interval>,
    /// Announcements, beeps and stop tones played during the recording.
    pub announcements: Vec<Announcement>,
    /// What paused time became.
    pub pause_behaviour: PauseBehaviour,
    /// The audio file's format.
    pub audio: Audio,
    /// The MP3 object.
    pub mp3: Mp3,
    /// Whether the recording runs to the end of what was to be recorded.
    pub complete: bool,
    /// Why it does not, when it does not.
    pub truncated: Option<String>,
    /// The call this one replaces (an attended transfer's INVITE with
    /// `Replaces`): the hash of its Call-ID, as in the other call's object
    /// name, so the parts of one transferred conversation can be found.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replaces: Option<String>,
    /// The same, as names a program can filter on: `fax` (the call
    /// switched to T.38, relayed and not recorded), `undecodable` (audio in
    /// a codec the recorder cannot decode), `spool_full`, `crashed` (cut
    /// short by a crash and recovered), `kernel_copies_lost` (the kernel
    /// fast path relayed packets whose copies the recorder could not take
    /// in time). Empty when complete.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub incomplete_reasons: Vec<String>,
    /// Which recorder made it.
    pub recorder: Recorder,
    /// A SIPREC recording session's: what its session recording client
    /// said about the call (`None` for a call recorded in the media path).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub siprec: Option<Siprec>,
}

/// What a session recording client (RFC 7866) said about the recorded
/// call, from its recording metadata (RFC 7865).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct Siprec {
    /// The recorded call's Session-IDs (RFC 7989, `sipSessionID`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub session_ids: Vec<String>,
    /// The call's parties, as the metadata names them.
    pub participants: Vec<SiprecParticipant>,
    /// The SRC's own identifiers found in its extension data (element
    /// name and value: a UCID, a Cisco session id, a Genesys call UUID,
    /// BroadWorks' extTrackingID), so a search finds the call by the
    /// SBC's id.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub identifiers: Vec<SiprecIdentifier>,
    /// Each metadata document as received, in order (at most 8).
    pub metadata: Vec<String>,
    /// One stream carries both parties, mixed by the SRC (Metaswitch,
    /// BroadWorks' mixed mode): recorded on the left channel, the parties
    /// not apart.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub mixed: bool,
}

/// A party of a SIPREC session.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct SiprecParticipant {
    /// Address of record (`sip:`, `sips:` or `tel:` URI).
    pub aor: Option<String>,
    /// Display name.
    pub name: Option<String>,
    /// `caller` (recorded on the left) or `callee`.
    pub role: String,
    /// The channel its audio is on, when a stream it sends is mapped.
    pub channel: Option<Side>,
}

/// One identifier of the SRC's.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct SiprecIdentifier {
    /// The element's local name.
    pub name: String,
    /// Its value.
    pub value: String,
}

/// A number on the call.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct Party {
    /// The user part of its URI (`008`).
    pub number: Option<String>,
    /// Its display name, if the signalling carried one.
    pub display_name: Option<String>,
}

/// A policy user on the call.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct User {
    /// Their extension.
    pub extension: String,
    /// Their name in the policy.
    #[serde(default)]
    pub display_name: Option<String>,
    /// Their effective mode.
    pub mode: RecordingMode,
    /// Which side of the call they were on.
    pub side: Side,
}

/// One recorded stretch, in seconds since answer and as wall-clock times.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct Interval {
    /// Start, seconds since answer.
    pub from: f64,
    /// End, seconds since answer; `None` if the recorder stopped first.
    pub to: Option<f64>,
    /// Start, UTC.
    #[serde(with = "time")]
    pub from_at: Option<SystemTime>,
    /// End, UTC.
    #[serde(with = "time")]
    pub to_at: Option<SystemTime>,
}

/// An announcement toward one party.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Announcement {
    /// `beep`, `prompt`, `periodic_beep` or `stop_tone`.
    pub kind: String,
    /// Who heard it.
    pub to: Side,
    /// `played`, `cut`, `unsupported_codec`, `no_media`, `on_hold`, `overlap`.
    pub result: String,
    /// When it was asked for, seconds since answer.
    pub at: f64,
    /// Likewise, UTC.
    #[serde(with = "time", default)]
    pub at_time: Option<SystemTime>,
    /// How much of it was played, seconds.
    pub played_seconds: f64,
}

/// The audio's format.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct Audio {
    /// `mp3`.
    pub format: String,
    /// The codec the call carried (`PCMU`, `PCMA`, `G722`, ...): the first
    /// one decoded.
    pub codec: Option<String>,
    /// Each side's codec (`caller`, `callee`), as first decoded.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub codecs: BTreeMap<String, String>,
    /// Samples per second.
    pub sample_rate: u32,
    /// 2 (stereo) or 1.
    pub channels: u8,
    /// Which party is on which channel: `{left: caller, right: callee}` or
    /// `{mono: caller+callee}`.
    pub channel_map: BTreeMap<String, String>,
    /// CBR bitrate, kbit/s.
    pub bitrate_kbps: u32,
    /// The file's length, seconds.
    pub duration_seconds: f64,
}

impl Audio {
    /// The channel count and map of a layout.
    pub fn channels_of(layout: ChannelLayout) -> (u8, BTreeMap<String, String>) {
        let map = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        match layout {
            ChannelLayout::Stereo => (2, map(&[("left", "caller"), ("right", "callee")])),
            ChannelLayout::Mono => (1, map(&[("mono", "caller+callee")])),
        }
    }
}

/// The MP3 object.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct Mp3 {
    /// Its full key in the store.
    pub object: String,
    /// Its size.
    pub bytes: u64,
    /// Its SHA-256, lower-case hex.
    pub sha256: String,
}

/// The recorder that made a recording.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct Recorder {
    /// Its instance name (the pod's).
    pub instance: String,
    /// Its version.
    pub version: String,
}

impl Sidecar {
    /// The sidecar's JSON, as stored.
    pub fn to_json(&self) -> Vec<u8> {
        // A struct of strings, numbers and maps with string keys always serialises.
        serde_json::to_vec_pretty(self).expect("a sidecar serialises")
    }

    /// A stored sidecar.
    pub fn from_json(bytes: &[u8]) -> Result<Sidecar, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// Seconds from `origin` to `t`, to the millisecond (0 when `t` is earlier).
pub fn seconds_since(origin: SystemTime, t: SystemTime) -> f64 {
    t.duration_since(origin).unwrap_or_default().as_millis() as f64 / 1000.0
}

/// RFC 3339 UTC with milliseconds, `null` for none; a reader also takes
/// seconds without fraction.
pub mod time {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::SystemTime;

    /// Writes RFC 3339 with milliseconds.
    pub fn serialize<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&humantime::format_rfc3339_millis(*t).to_string()),
            None => s.serialize_none(),
        }
    }

    /// Reads RFC 3339; anything else is `None`, so one odd field does not
    /// make the whole sidecar unreadable.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SystemTime>, D::Error> {
        let v = Option::<serde_json::Value>::deserialize(d)?;
        Ok(v.as_ref()
            .and_then(|v| v.as_str())
            .and_then(|s| humantime::parse_rfc3339_weak(s).ok()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_sidecar() -> Sidecar {
        let t = humantime::parse_rfc3339("2026-11-28T11:28:34.500Z").unwrap();
        let (channels, channel_map) = Audio::channels_of(ChannelLayout::Stereo);
        Sidecar {
            schema_version: SCHEMA_VERSION,
            call: "65baf6958949e3e9".into(),
            caller: Party {
                number: Some("008".into()),
                display_name: Some("Ralf".into()),
            },
            callee: Party {
                number: Some("500".into()),
                display_name: None,
            },
            users: vec![User {
                extension: "008".into(),
                display_name: None,
                mode: RecordingMode::Always,
                side: Side::Caller,
            }],
            started_at: Some(t),
            answered_at: Some(t),
            ended_at: Some(t + std::time::Duration::from_secs(4)),
            duration_seconds: Some(4.0),
            recorded: vec![Interval {
                from: 0.0,
                to: Some(4.0),
                from_at: Some(t),
                to_at: Some(t + std::time::Duration::from_secs(4)),
            }],
            announcements: vec![],
            pause_behaviour: PauseBehaviour::Skip,
            audio: Audio {
                format: "mp3".into(),
                codec: Some("PCMU".into()),
                codecs: BTreeMap::new(),
                sample_rate: 8000,
                channels,
                channel_map,
                bitrate_kbps: 32,
                duration_seconds: 4.0,
            },
            mp3: Mp3 {
                object: "acme/office/2026/11/28/20261128T112834Z_65baf6958949e3e9.mp3".into(),
                bytes: 16000,
                sha256: "ab".repeat(32),
            },
            complete: true,
            truncated: None,
            incomplete_reasons: Vec::new(),
            replaces: None,
            recorder: Recorder {
                instance: "earshot-office-0".into(),
                version: "0.1.0".into(),
            },
            siprec: None,
        }
    }

    #[test]
    fn the_documented_fields_and_names() {
        let v: serde_json::Value = serde_json::from_slice(&mk_sidecar().to_json()).unwrap();
        assert_eq!(v["schemaVersion"], 1);
        assert_eq!(v["startedAt"], "2026-11-28T11:28:34.500Z");
        assert_eq!(v["answeredAt"], "2026-11-28T11:28:34.500Z");
        assert_eq!(v["users"][0]["mode"], "Always");
        assert_eq!(v["users"][0]["side"], "caller");
        assert_eq!(v["users"][0]["displayName"], serde_json::Value::Null);
        assert_eq!(v["recorded"][0]["toAt"], "2026-11-28T11:28:38.500Z");
        assert_eq!(
            v["audio"]["channelMap"],
            serde_json::json!({"left": "caller", "right": "callee"})
        );
        assert_eq!(v["pauseBehaviour"], "Skip");
        assert_eq!(v["truncated"], serde_json::Value::Null);
        assert_eq!(
            Sidecar::from_json(&mk_sidecar().to_json()).unwrap(),
            mk_sidecar()
        );
    }

    #[test]
    fn a_damaged_or_partial_sidecar_still_reads() {
        let s = Sidecar::from_json(
            br#"{"caller": {"number": "008"}, "startedAt": "yesterday", "complete": true}"#,
        )
        .unwrap();
        assert_eq!(s.caller.number.as_deref(), Some("008"));
        assert_eq!(s.started_at, None);
        assert!(s.complete);
        assert!(Sidecar::from_json(b"{not json").is_err());
    }
}
