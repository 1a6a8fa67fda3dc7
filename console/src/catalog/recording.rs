//! One recording as the report shows it: the sidecar's fields the page,
//! the CLI and the filters use, kept compact (the cache holds up to 100 000
//! of them), and how they are formatted.

use std::time::SystemTime;

use earshot_contracts::sidecar::Sidecar;

/// One recording: its id and the sidecar's fields the report and the
/// filters use, kept compact (the cache holds up to 100 000 of them). The
/// whole sidecar is read again from the store when it is wanted
/// ([`Catalog::sidecar`]).
#[derive(Debug, Clone)]
pub struct Recording {
    /// `YYYY/MM/DD/<stamp>_<hash>`, relative to the prefix.
    pub id: String,
    caller: Box<str>,
    caller_name: Box<str>,
    callee: Box<str>,
    callee_name: Box<str>,
    started: Box<str>,
    answered: Box<str>,
    ended: Box<str>,
    duration: Option<f64>,
    audio_seconds: Option<f64>,
    complete: bool,
    codecs: Box<str>,
    mp3_bytes: u64,
    sha256: Box<str>,
    extensions: Box<[Box<str>]>,
    intervals: Box<[(f64, Option<f64>)]>,
    /// A SIPREC session's ids from its SRC: Session-IDs and identifier
    /// values (a UCID, a Cisco session id); empty otherwise.
    src_ids: Box<[Box<str>]>,
}

impl Recording {
    /// The fields of a parsed sidecar.
    pub fn from_sidecar(id: &str, v: &Sidecar) -> Recording {
        let s = |v: &Option<String>| -> Box<str> { v.as_deref().unwrap_or("").into() };
        let t = |t: &Option<SystemTime>| -> Box<str> {
            t.map(|t| humantime::format_rfc3339_millis(t).to_string())
                .unwrap_or_default()
                .into()
        };
        Recording {
            id: id.to_owned(),
            caller: s(&v.caller.number),
            caller_name: s(&v.caller.display_name),
            callee: s(&v.callee.number),
            callee_name: s(&v.callee.display_name),
            started: t(&v.started_at),
            answered: t(&v.answered_at),
            ended: t(&v.ended_at),
            duration: v.duration_seconds,
            audio_seconds: (!v.audio.format.is_empty()).then_some(v.audio.duration_seconds),
            complete: v.complete,
            codecs: codecs_text(&v.audio).into(),
            mp3_bytes: v.mp3.bytes,
            sha256: v.mp3.sha256.as_str().into(),
            extensions: v
                .users
                .iter()
                .map(|u| u.extension.as_str().into())
                .collect(),
            intervals: v.recorded.iter().map(|r| (r.from, r.to)).collect(),
            src_ids: v
                .siprec
                .iter()
                .flat_map(|s| {
                    s.session_ids
                        .iter()
                        .map(String::as_str)
                        .chain(s.identifiers.iter().map(|i| i.value.as_str()))
                })
                .map(Into::into)
                .collect(),
        }
    }

    /// A SIPREC recording's SRC ids (Session-IDs, UCIDs, ...); empty for a
    /// call recorded in the media path.
    pub fn src_ids(&self) -> impl Iterator<Item = &str> {
        self.src_ids.iter().map(|s| &**s)
    }

    /// Caller number.
    pub fn caller(&self) -> &str {
        &self.caller
    }
    /// Caller display name.
    pub fn caller_name(&self) -> &str {
        &self.caller_name
    }
    /// Callee number.
    pub fn callee(&self) -> &str {
        &self.callee
    }
    /// Callee display name.
    pub fn callee_name(&self) -> &str {
        &self.callee_name
    }
    /// RFC 3339 start of the call.
    pub fn started(&self) -> &str {
        &self.started
    }
    /// RFC 3339 answer, or empty.
    pub fn answered(&self) -> &str {
        &self.answered
    }
    /// RFC 3339 end, or empty.
    pub fn ended(&self) -> &str {
        &self.ended
    }
    /// Answered to ended, seconds.
    pub fn duration(&self) -> Option<f64> {
        self.duration
    }
    /// Length of the MP3, seconds.
    pub fn audio_seconds(&self) -> Option<f64> {
        self.audio_seconds
    }
    /// Whether the recording covers the call to its end.
    pub fn complete(&self) -> bool {
        self.complete
    }
    /// Each side's codec: `G722` when both sides spoke it, `G722 / PCMA`
    /// (caller / callee) when they differ; empty when nothing was decoded.
    pub fn codecs(&self) -> &str {
        &self.codecs
    }
    /// The MP3's size.
    pub fn mp3_bytes(&self) -> u64 {
        self.mp3_bytes
    }
    /// The MP3's SHA-256 (hex).
    pub fn sha256(&self) -> &str {
        &self.sha256
    }
    /// Extensions of the policy users on the call.
    pub fn extensions(&self) -> impl Iterator<Item = &str> {
        self.extensions.iter().map(|e| &**e)
    }
    /// Recorded intervals, seconds since answer.
    pub fn intervals(&self) -> &[(f64, Option<f64>)] {
        &self.intervals
    }
    /// The day folder, `YYYY-MM-DD`.
    pub fn day(&self) -> String {
        self.id[..10].replace('/', "-")
    }
    /// File name of the MP3 in downloads: `<stamp>_<hash>.mp3`.
    pub fn file_stem(&self) -> &str {
        &self.id[11..]
    }

    /// The recorded intervals as the report shows them: `0.0–5.0 s, 7.2–9.0 s`.
    pub fn recorded_text(&self) -> String {
        self.intervals
            .iter()
            .map(|(from, to)| match to {
                Some(t) => format!("{from:.1}–{t:.1} s"),
                None => format!("{from:.1} s–"),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Each side's codec as [`Recording::codecs`] shows it. Older sidecars
/// name only the call's first codec.
fn codecs_text(audio: &earshot_contracts::sidecar::Audio) -> String {
    let side = |s: &str| audio.codecs.get(s).map(String::as_str);
    match (side("caller"), side("callee")) {
        (Some(a), Some(b)) if a == b => a.to_owned(),
        (Some(a), Some(b)) => format!("{a} / {b}"),
        (Some(a), None) | (None, Some(a)) => a.to_owned(),
        (None, None) => audio.codec.clone().unwrap_or_default(),
    }
}

/// A duration in seconds as the report shows it: `00:01:05`, or `-`.
pub fn hms(seconds: Option<f64>) -> String {
    match seconds {
        Some(s) => {
            let s = s.round() as u64;
            format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
        }
        None => "-".into(),
    }
}

/// The time of day of an RFC 3339 timestamp (`HH:MM:SS`), or `-`.
pub fn clock(rfc3339: &str) -> &str {
    rfc3339.get(11..19).unwrap_or("-")
}
