//! Where recordings are in the store: `<prefix>/YYYY/MM/DD/<stem>.mp3` and
//! `<stem>.json` beside it, where the stem is `<UTC start>_<call hash>-<nonce>`,
//! e.g. `acme/office/2026/11/28/20261128T112834Z_65baf6958949e3e9-0c41d2e7.mp3`.
//! The nonce (8 hex digits, random per recording) keeps two recordings apart
//! that started in the same second with the same Call-ID (two peers may
//! reuse one; a call recorded twice). Names from before the nonce
//! (`<UTC start>_<call hash>`) still parse, so older recordings list. Tools like
//! `aws s3`, `rclone` or `mc` list a day by its folder. Names are built and
//! parsed here only, so the recorder's writes and the console's reads
//! cannot disagree, and nothing that does not parse becomes a key.

use std::time::SystemTime;

/// A key prefix: the path under which one policy's recordings live, kept
/// without slashes at either end (may be empty: the bucket's root).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Prefix(String);

impl Prefix {
    /// A prefix as written in a policy or config (`acme/office/`, `/acme/office`).
    pub fn new(s: &str) -> Prefix {
        Prefix(s.trim_matches('/').to_owned())
    }

    /// Without slashes at either end (`acme/office`); empty for the root.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// With the trailing slash S3 filters and listings use (`acme/office/`);
    /// empty for the root.
    pub fn with_slash(&self) -> String {
        if self.0.is_empty() {
            String::new()
        } else {
            format!("{}/", self.0)
        }
    }

    /// The full key of a name under the prefix.
    pub fn key(&self, name: &str) -> String {
        if self.0.is_empty() {
            name.to_owned()
        } else {
            format!("{}/{name}", self.0)
        }
    }
}

/// The name of one recording: its UTC start (to the second), the hash of
/// its call and a nonce of its own.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordingId {
    /// `YYYYMMDDTHHMMSSZ`.
    stamp: String,
    /// 16 lower-case hex digits.
    call: String,
    /// 8 lower-case hex digits; `None` in names from before nonces.
    nonce: Option<String>,
}

/// Length of the stamp, `YYYYMMDDTHHMMSSZ`.
const STAMP: usize = 16;
/// Length of a call hash.
const HASH: usize = 16;
/// Length of a nonce.
const NONCE: usize = 8;

fn digits(s: &[u8]) -> bool {
    s.iter().all(u8::is_ascii_digit)
}

fn lower_hex(s: &[u8]) -> bool {
    s.iter()
        .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
}

impl RecordingId {
    /// The id of a recording that started at `start`, of the call `call_hash`
    /// (16 lower-case hex digits; anything else is hashed to that form), with
    /// `nonce` drawn at random for it.
    pub fn new(start: SystemTime, call_hash: &str, nonce: u32) -> RecordingId {
        let t = humantime::format_rfc3339_seconds(start).to_string();
        let stamp: String = t.chars().filter(|c| !matches!(c, '-' | ':')).collect();
        let call = if call_hash.len() == HASH && lower_hex(call_hash.as_bytes()) {
            call_hash.to_owned()
        } else {
            format!("{:016x}", fnv1a(call_hash.as_bytes()))
        };
        RecordingId {
            stamp,
            call,
            nonce: Some(format!("{nonce:08x}")),
        }
    }

    /// Parses a stem, `YYYYMMDDTHHMMSSZ_<16 hex>-<8 hex>` (or, from before
    /// nonces, `YYYYMMDDTHHMMSSZ_<16 hex>`).
    pub fn parse_stem(stem: &str) -> Option<RecordingId> {
        let b = stem.as_bytes();
        let head = STAMP + 1 + HASH;
        let ok = b.len() >= head
            && digits(&b[0..8])
            && b[8] == b'T'
            && digits(&b[9..15])
            && b[15] == b'Z'
            && b[16] == b'_'
            && lower_hex(&b[17..head]);
        let nonce = match &b[head.min(b.len())..] {
            [] => None,
            [b'-', n @ ..] if n.len() == NONCE && lower_hex(n) => Some(stem[head + 1..].to_owned()),
            _ => return None,
        };
        ok.then(|| RecordingId {
            stamp: stem[..STAMP].to_owned(),
            call: stem[STAMP + 1..head].to_owned(),
            nonce,
        })
    }

    /// Parses a path relative to the prefix, `YYYY/MM/DD/<stem>`, whose day
    /// folder is the stamp's day; nothing else (no `..`, no extension).
    pub fn parse_path(path: &str) -> Option<RecordingId> {
        let (day, stem) = path.split_at_checked(10)?;
        let stem = stem.strip_prefix('/')?;
        let id = RecordingId::parse_stem(stem)?;
        (id.day_folder() == day).then_some(id)
    }

    /// `YYYYMMDDTHHMMSSZ_<hash>-<nonce>`: the file name without extension.
    pub fn stem(&self) -> String {
        match &self.nonce {
            Some(n) => format!("{}_{}-{n}", self.stamp, self.call),
            None => format!("{}_{}", self.stamp, self.call),
        }
    }

    /// `YYYY/MM/DD`.
    pub fn day_folder(&self) -> String {
        format!(
            "{}/{}/{}",
            &self.stamp[0..4],
            &self.stamp[4..6],
            &self.stamp[6..8]
        )
    }

    /// `YYYY/MM/DD/<stem>`: the id the console and the CLI use.
    pub fn path(&self) -> String {
        format!("{}/{}", self.day_folder(), self.stem())
    }

    /// The MP3's name under the prefix.
    pub fn mp3_name(&self) -> String {
        format!("{}.mp3", self.path())
    }

    /// The sidecar's name under the prefix.
    pub fn sidecar_name(&self) -> String {
        format!("{}.json", self.path())
    }

    /// The call hash.
    pub fn call_hash(&self) -> &str {
        &self.call
    }
}

/// Whether `s` is a day folder as the filters take it: `YYYY-MM-DD`.
pub fn valid_day(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 10
        && digits(&b[0..4])
        && b[4] == b'-'
        && digits(&b[5..7])
        && b[7] == b'-'
        && digits(&b[8..10])
}

/// The hash that names a call: FNV-1a of its SIP Call-ID, 16 hex digits.
pub fn call_hash(call_id: &str) -> String {
    format!("{:016x}", fnv1a(call_id.as_bytes()))
}

fn fnv1a(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_layout() {
        let t = humantime::parse_rfc3339("2026-11-28T11:28:34.500Z").unwrap();
        let id = RecordingId::new(t, "65baf6958949e3e9", 0x0c41d2e7);
        assert_eq!(id.stem(), "20261128T112834Z_65baf6958949e3e9-0c41d2e7");
        assert_eq!(
            id.mp3_name(),
            "2026/11/28/20261128T112834Z_65baf6958949e3e9-0c41d2e7.mp3"
        );
        assert_eq!(
            Prefix::new("/acme/office/").key(&id.sidecar_name()),
            "acme/office/2026/11/28/20261128T112834Z_65baf6958949e3e9-0c41d2e7.json"
        );
        assert_ne!(
            RecordingId::new(t, "65baf6958949e3e9", 1),
            RecordingId::new(t, "65baf6958949e3e9", 2),
            "the same call in the same second, recorded twice: two names"
        );
        assert_eq!(Prefix::new("").key("x"), "x");
        assert_eq!(Prefix::new("acme/office").with_slash(), "acme/office/");
        assert_eq!(RecordingId::parse_path(&id.path()), Some(id.clone()));
        assert_eq!(RecordingId::parse_stem(&id.stem()), Some(id));
    }

    #[test]
    fn ids_are_the_layout_and_nothing_else() {
        assert!(
            RecordingId::parse_path("2026/12/02/20261202T121757Z_3f2fe346e63c4a35-00ff00aa")
                .is_some()
        );
        let legacy =
            RecordingId::parse_path("2026/12/02/20261202T121757Z_3f2fe346e63c4a35").unwrap();
        assert_eq!(
            legacy.stem(),
            "20261202T121757Z_3f2fe346e63c4a35",
            "older names still read"
        );
        for bad in [
            "2026/12/03/20261202T121757Z_3f2fe346e63c4a35",
            "../other/12/02/20261202T121757Z_3f2fe346e63c4a35",
            "2026/12/02/20261202T121757Z_3f2fe346e63c4a3/",
            "2026/12/02/20261202T121757Z_3F2FE346E63C4A35",
            "2026/12/02/20261202T121757Z_3f2fe346e63c4a35.mp3",
            "2026/12/02/20261202T121757Z_3f2fe346e63c4a35-00ff00a",
            "2026/12/02/20261202T121757Z_3f2fe346e63c4a35-00FF00AA",
            "2026/12/02/20261202T121757Z_3f2fe346e63c4a35-00ff00aa.json",
            "2026/12/02/20261202T121757Z_3f2fe346e63c4a35_00ff00aa",
            "2026/12/02/20261202T121757Z_3f2fe346e63c4a3é",
            "é026/12/02/20261202T121757Z_3f2fe346e63c4a35",
            "",
        ] {
            assert!(RecordingId::parse_path(bad).is_none(), "{bad}");
        }
        assert!(valid_day("2026-12-02"));
        assert!(!valid_day("2026/12/02") && !valid_day("2026-12-2"));
    }

    #[test]
    fn call_hashes_are_fnv1a_of_the_call_id() {
        assert_eq!(call_hash(""), "cbf29ce484222325");
        assert_eq!(call_hash("a"), "af63dc4c8601ec8c");
        let t = SystemTime::UNIX_EPOCH;
        assert_eq!(
            RecordingId::new(t, "not hex", 0).call_hash(),
            call_hash("not hex")
        );
    }
}
