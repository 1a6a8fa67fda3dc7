//! A policy's recordings as the store holds them: `<prefix>/YYYY/MM/DD/
//! <stamp>_<hash>.{mp3,json}`, listed newest first by walking the date
//! folders backwards and reading the JSON sidecars (cached: objects are
//! written once, so a sidecar read is never stale). Every id is checked
//! against that layout before it becomes a key, so a console can never
//! name an object outside its own prefix.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{GetOptions, GetRange, GetResult, ObjectStore};
use serde_json::Value;

/// Recordings per page in the console and `list`.
pub const PAGE: usize = 50;
/// Sidecars kept in memory (about 1 KiB each).
const CACHE_MAX: usize = 200_000;
/// Sidecars read at once.
const READ_AHEAD: usize = 32;

/// Why the catalog could not answer.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// Not an id of this layout (or outside the prefix).
    #[error("no recording {0}")]
    NotFound(String),
    /// The store failed.
    #[error("storage: {0}")]
    Store(#[from] object_store::Error),
    /// A sidecar that is not valid JSON.
    #[error("sidecar {key} is not valid JSON: {error}")]
    BadSidecar {
        /// Its key.
        key: String,
        /// What is wrong.
        error: String,
    },
}

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
    mp3_bytes: u64,
    sha256: Box<str>,
    extensions: Box<[Box<str>]>,
    intervals: Box<[(f64, Option<f64>)]>,
}

impl Recording {
    /// The fields of a parsed sidecar.
    pub fn from_sidecar(id: &str, v: &Value) -> Recording {
        let s = |v: &Value| -> Box<str> { v.as_str().unwrap_or("").into() };
        Recording {
            id: id.to_owned(),
            caller: s(&v["caller"]["number"]),
            caller_name: s(&v["caller"]["displayName"]),
            callee: s(&v["callee"]["number"]),
            callee_name: s(&v["callee"]["displayName"]),
            started: s(&v["startedAt"]),
            answered: s(&v["answeredAt"]),
            ended: s(&v["endedAt"]),
            duration: v["durationSeconds"].as_f64(),
            audio_seconds: v["audio"]["durationSeconds"].as_f64(),
            complete: v["complete"].as_bool().unwrap_or(false),
            mp3_bytes: v["mp3"]["bytes"].as_u64().unwrap_or(0),
            sha256: s(&v["mp3"]["sha256"]),
            extensions: v["users"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|u| u["extension"].as_str().map(Into::into))
                .collect(),
            intervals: v["recorded"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| (r["from"].as_f64().unwrap_or(0.0), r["to"].as_f64()))
                .collect(),
        }
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

/// Whether `s` is a day as the filters take it: `YYYY-MM-DD`.
pub fn valid_day(s: &str) -> bool {
    s.len() == 10
        && s.bytes().enumerate().all(|(i, c)| {
            if i == 4 || i == 7 {
                c == b'-'
            } else {
                c.is_ascii_digit()
            }
        })
}

/// What to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// A policy user on the call (extension, exact).
    pub user: Option<String>,
    /// First day, `YYYY-MM-DD` (inclusive).
    pub from: Option<String>,
    /// Last day, `YYYY-MM-DD` (inclusive).
    pub to: Option<String>,
    /// Caller or callee number containing this.
    pub number: Option<String>,
    /// Only complete (`true`) or only truncated (`false`) recordings.
    pub complete: Option<bool>,
}

impl Filter {
    /// The filter as given by a form or flags: blank fields dropped, days checked.
    pub fn checked(self) -> Result<Filter, String> {
        let given = |s: Option<String>| s.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
        let day = |s: Option<String>| match given(s) {
            Some(d) if !valid_day(&d) => Err(format!("{d:?} is not a date like 2026-12-02")),
            d => Ok(d),
        };
        Ok(Filter {
            user: given(self.user),
            from: day(self.from)?,
            to: day(self.to)?,
            number: given(self.number),
            complete: self.complete,
        })
    }

    fn reads_sidecars(&self) -> bool {
        self.user.is_some() || self.number.is_some() || self.complete.is_some()
    }

    fn day_in_range(&self, day: &str) -> bool {
        // `day` is YYYY/MM/DD; compare as YYYY-MM-DD strings.
        let d = day.replace('/', "-");
        self.from.as_deref().is_none_or(|f| d.as_str() >= f)
            && self.to.as_deref().is_none_or(|t| d.as_str() <= t)
    }

    /// Whether a recording passes the filters that need its sidecar.
    pub fn matches(&self, r: &Recording) -> bool {
        self.user
            .as_deref()
            .is_none_or(|u| r.extensions().any(|e| e == u))
            && self
                .number
                .as_deref()
                .is_none_or(|n| r.caller().contains(n) || r.callee().contains(n))
            && self.complete.is_none_or(|c| r.complete() == c)
    }
}

/// A page of recordings, newest first.
#[derive(Debug, Clone)]
pub struct Page {
    /// The recordings.
    pub recordings: Vec<Arc<Recording>>,
    /// Whether a next page exists.
    pub more: bool,
}

/// Whether `s` is `YYYY/MM/DD/YYYYMMDDTHHMMSSZ_<16 hex>` (a recording id).
pub fn valid_id(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| r.clone().all(|i| b[i].is_ascii_digit());
    b.len() == 11 + 16 + 1 + 16
        && digits(0..4)
        && b[4] == b'/'
        && digits(5..7)
        && b[7] == b'/'
        && digits(8..10)
        && b[10] == b'/'
        && digits(11..19)
        && b[19] == b'T'
        && digits(20..26)
        && b[26] == b'Z'
        && b[27] == b'_'
        && b[28..].iter().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        // The folder is the stamp's day.
        && b[0..4] == b[11..15]
        && b[5..7] == b[15..17]
        && b[8..10] == b[17..19]
}

/// One policy's recordings in one store.
pub struct Catalog {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    cache: Mutex<HashMap<String, Arc<Recording>>>,
    /// Day folder listings and when they were made (see [`Catalog::day_ids`]).
    listings: Mutex<HashMap<String, Listing>>,
}

/// A day folder's ids and when they were listed.
type Listing = (std::time::Instant, Arc<Vec<String>>);

/// How long a listing of the newest day folder is reused: new recordings
/// show up on the page within this.
const NEWEST_DAY_FRESH: std::time::Duration = std::time::Duration::from_secs(5);
/// How long a listing of an older day folder is reused: a long call's
/// recording lands in the day it started, after that day is over, and the
/// retention rule removes old ones.
const OLDER_DAY_FRESH: std::time::Duration = std::time::Duration::from_secs(60);

impl Catalog {
    /// The recordings under `prefix` (no slashes at the ends; may be empty).
    pub fn new(store: Arc<dyn ObjectStore>, prefix: &str) -> Self {
        Self {
            store,
            prefix: prefix.trim_matches('/').to_owned(),
            cache: Mutex::new(HashMap::new()),
            listings: Mutex::new(HashMap::new()),
        }
    }

    /// The full key of a relative name.
    pub fn key(&self, rel: &str) -> ObjectPath {
        if self.prefix.is_empty() {
            ObjectPath::from(rel)
        } else {
            ObjectPath::from(format!("{}/{rel}", self.prefix))
        }
    }

    async fn folders(&self, rel: Option<&str>) -> Result<Vec<String>, CatalogError> {
        let base = match (self.prefix.is_empty(), rel) {
            (true, None) => None,
            (true, Some(r)) => Some(ObjectPath::from(r)),
            (false, None) => Some(ObjectPath::from(self.prefix.as_str())),
            (false, Some(r)) => Some(self.key(r)),
        };
        let listed = self.store.list_with_delimiter(base.as_ref()).await?;
        Ok(listed
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_owned))
            .collect())
    }

    /// Day folders (`YYYY/MM/DD`) in the filter's range, newest first.
    pub async fn days(&self, filter: &Filter) -> Result<Vec<String>, CatalogError> {
        let num = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
        let mut out = Vec::new();
        let mut years = self.folders(None).await?;
        years.retain(|y| num(y, 4));
        years.sort_unstable_by(|a, b| b.cmp(a));
        for y in years {
            let year_from = filter.from.as_deref().map(|f| &f[..4.min(f.len())]);
            let year_to = filter.to.as_deref().map(|t| &t[..4.min(t.len())]);
            if year_from.is_some_and(|f| y.as_str() < f) || year_to.is_some_and(|t| y.as_str() > t)
            {
                continue;
            }
            let mut months = self.folders(Some(&y)).await?;
            months.retain(|m| num(m, 2));
            months.sort_unstable_by(|a, b| b.cmp(a));
            for m in months {
                let mut days = self.folders(Some(&format!("{y}/{m}"))).await?;
                days.retain(|d| num(d, 2));
                days.sort_unstable_by(|a, b| b.cmp(a));
                out.extend(
                    days.into_iter()
                        .map(|d| format!("{y}/{m}/{d}"))
                        .filter(|d| filter.day_in_range(d)),
                );
            }
        }
        Ok(out)
    }

    /// Ids of one day's recordings (those with a sidecar), newest first.
    /// Listings are reused for a few seconds (the newest day) or a minute
    /// (older days), so paging and searches do not list every folder again.
    pub async fn day_ids(&self, day: &str) -> Result<Arc<Vec<String>>, CatalogError> {
        let now = std::time::Instant::now();
        {
            let listings = self.listings.lock().unwrap_or_else(|e| e.into_inner());
            let newest = listings.keys().max().is_none_or(|d| day >= d.as_str());
            let fresh = if newest {
                NEWEST_DAY_FRESH
            } else {
                OLDER_DAY_FRESH
            };
            if let Some((at, ids)) = listings.get(day)
                && now.duration_since(*at) < fresh
            {
                return Ok(ids.clone());
            }
        }
        let ids = Arc::new(self.list_day(day).await?);
        self.listings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(day.to_owned(), (now, ids.clone()));
        Ok(ids)
    }

    async fn list_day(&self, day: &str) -> Result<Vec<String>, CatalogError> {
        let mut ids: Vec<String> = self
            .store
            .list(Some(&self.key(day)))
            .try_filter_map(|m| async move {
                Ok(m.location
                    .filename()
                    .and_then(|f| f.strip_suffix(".json"))
                    .map(|stem| format!("{day}/{stem}"))
                    .filter(|id| valid_id(id)))
            })
            .try_collect()
            .await?;
        ids.sort_unstable_by(|a, b| b.cmp(a));
        Ok(ids)
    }

    /// One recording's sidecar (cached).
    pub async fn get(&self, id: &str) -> Result<Arc<Recording>, CatalogError> {
        if !valid_id(id) {
            return Err(CatalogError::NotFound(id.to_owned()));
        }
        if let Some(r) = self.lock().get(id) {
            return Ok(r.clone());
        }
        let sidecar = self.sidecar(id).await?;
        let r = Arc::new(Recording::from_sidecar(id, &sidecar));
        let mut cache = self.lock();
        if cache.len() >= CACHE_MAX {
            cache.clear();
        }
        cache.insert(id.to_owned(), r.clone());
        Ok(r)
    }

    /// The raw bytes of a recording's sidecar, as stored.
    pub async fn sidecar_bytes(&self, id: &str) -> Result<bytes::Bytes, CatalogError> {
        if !valid_id(id) {
            return Err(CatalogError::NotFound(id.to_owned()));
        }
        match self.store.get(&self.key(&format!("{id}.json"))).await {
            Ok(r) => Ok(r.bytes().await?),
            Err(object_store::Error::NotFound { .. }) => Err(CatalogError::NotFound(id.to_owned())),
            Err(e) => Err(e.into()),
        }
    }

    /// A recording's whole sidecar (read from the store, not cached).
    pub async fn sidecar(&self, id: &str) -> Result<Value, CatalogError> {
        let bytes = self.sidecar_bytes(id).await?;
        serde_json::from_slice(&bytes).map_err(|e| CatalogError::BadSidecar {
            key: self.key(&format!("{id}.json")).to_string(),
            error: e.to_string(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Recording>>> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The sidecars of `ids`, in order. One that vanished since the listing
    /// (expired by the retention rule in between) is left out; a sidecar
    /// that is not valid JSON is logged and left out, so one damaged object
    /// does not hide the rest.
    async fn read_all(&self, ids: &[String]) -> Result<Vec<Arc<Recording>>, CatalogError> {
        let results: Vec<Result<Arc<Recording>, CatalogError>> =
            futures::stream::iter(ids.to_vec())
                .map(|id| async move { self.get(&id).await })
                .buffered(READ_AHEAD)
                .collect()
                .await;
        let mut out = Vec::with_capacity(results.len());
        for r in results {
            match r {
                Ok(r) => out.push(r),
                Err(CatalogError::NotFound(_)) => {}
                Err(e @ CatalogError::BadSidecar { .. }) => {
                    tracing::warn!(error = %e, "sidecar skipped");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Page `page` (from 0) of the recordings the filter selects, `per_page` each.
    pub async fn page(
        &self,
        filter: &Filter,
        page: usize,
        per_page: usize,
    ) -> Result<Page, CatalogError> {
        let skip = page * per_page;
        if !filter.reads_sidecars() {
            // The folders alone say which recordings make the page: only
            // the page's own sidecars are read, all at once.
            let mut ids = Vec::with_capacity(per_page + 1);
            let mut seen = 0usize;
            'days: for day in self.days(filter).await? {
                let day_ids = self.day_ids(&day).await?;
                if seen + day_ids.len() <= skip {
                    seen += day_ids.len();
                    continue;
                }
                for id in day_ids.iter() {
                    if seen >= skip {
                        ids.push(id.clone());
                        if ids.len() > per_page {
                            break 'days;
                        }
                    }
                    seen += 1;
                }
            }
            let more = ids.len() > per_page;
            ids.truncate(per_page);
            return Ok(Page {
                recordings: self.read_all(&ids).await?,
                more,
            });
        }
        let mut found: Vec<Arc<Recording>> = Vec::new();
        let mut matched = 0usize;
        for day in self.days(filter).await? {
            let ids = self.day_ids(&day).await?;
            for chunk in ids.chunks(READ_AHEAD * 4) {
                for r in self.read_all(chunk).await? {
                    if !filter.matches(&r) {
                        continue;
                    }
                    if matched < skip {
                        matched += 1;
                        continue;
                    }
                    if found.len() == per_page {
                        return Ok(Page {
                            recordings: found,
                            more: true,
                        });
                    }
                    found.push(r);
                    matched += 1;
                }
            }
        }
        Ok(Page {
            recordings: found,
            more: false,
        })
    }

    /// Every recording the filter selects, newest first.
    pub async fn all(&self, filter: &Filter) -> Result<Vec<Arc<Recording>>, CatalogError> {
        let mut out = Vec::new();
        for day in self.days(filter).await? {
            let ids = self.day_ids(&day).await?;
            for r in self.read_all(&ids).await? {
                if filter.matches(&r) {
                    out.push(r);
                }
            }
        }
        Ok(out)
    }

    /// The MP3 of a recording, whole or a byte range.
    pub async fn mp3(&self, id: &str, range: Option<GetRange>) -> Result<GetResult, CatalogError> {
        if !valid_id(id) {
            return Err(CatalogError::NotFound(id.to_owned()));
        }
        let opts = GetOptions {
            range,
            ..Default::default()
        };
        match self
            .store
            .get_opts(&self.key(&format!("{id}.mp3")), opts)
            .await
        {
            Ok(r) => Ok(r),
            Err(object_store::Error::NotFound { .. }) => Err(CatalogError::NotFound(id.to_owned())),
            Err(e) => Err(e.into()),
        }
    }

    /// The size of a recording's MP3.
    pub async fn mp3_size(&self, id: &str) -> Result<u64, CatalogError> {
        if !valid_id(id) {
            return Err(CatalogError::NotFound(id.to_owned()));
        }
        match self.store.head(&self.key(&format!("{id}.mp3"))).await {
            Ok(m) => Ok(m.size),
            Err(object_store::Error::NotFound { .. }) => Err(CatalogError::NotFound(id.to_owned())),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_the_layout_and_nothing_else() {
        assert!(valid_id("2026/12/02/20261202T121757Z_3f2fe346e63c4a35"));
        for bad in [
            "2026/12/03/20261202T121757Z_3f2fe346e63c4a35",
            "../other/12/02/20261202T121757Z_3f2fe346e63c4a35",
            "2026/12/02/20261202T121757Z_3f2fe346e63c4a3/",
            "2026/12/02/20261202T121757Z_3F2FE346E63C4A35",
            "2026/12/02/20261202T121757Z_3f2fe346e63c4a35.mp3",
            "",
        ] {
            assert!(!valid_id(bad), "{bad}");
        }
    }

    #[tokio::test]
    async fn a_damaged_sidecar_does_not_hide_the_others() {
        use object_store::PutPayload;
        let store = Arc::new(object_store::memory::InMemory::new());
        let good = serde_json::json!({"caller": {"number": "008"}, "users": [{"extension": "008"}], "complete": true});
        for (name, body) in [
            (
                "t/2026/12/02/20261202T120000Z_00000000000000aa.json",
                good.to_string(),
            ),
            (
                "t/2026/12/02/20261202T130000Z_00000000000000bb.json",
                "{not json".to_owned(),
            ),
            (
                "t/2026/12/01/20261201T120000Z_00000000000000cc.json",
                good.to_string(),
            ),
            ("t/2026/12/01/notes.txt", "ignored".to_owned()),
        ] {
            store
                .put(&ObjectPath::from(name), PutPayload::from(body))
                .await
                .unwrap();
        }
        let catalog = Catalog::new(store, "/t/");
        let page = catalog.page(&Filter::default(), 0, 50).await.unwrap();
        let ids: Vec<&str> = page.recordings.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "2026/12/02/20261202T120000Z_00000000000000aa",
                "2026/12/01/20261201T120000Z_00000000000000cc"
            ]
        );
        assert!(!page.more);
        let user = Filter {
            user: Some("008".into()),
            ..Default::default()
        };
        assert_eq!(catalog.page(&user, 0, 1).await.unwrap().recordings.len(), 1);
        assert!(catalog.page(&user, 0, 1).await.unwrap().more);
    }

    #[test]
    fn date_range_compares_days() {
        let f = Filter {
            from: Some("2026-11-30".into()),
            to: Some("2026-12-01".into()),
            ..Default::default()
        };
        assert!(!f.day_in_range("2026/11/29"));
        assert!(f.day_in_range("2026/11/30"));
        assert!(f.day_in_range("2026/12/01"));
        assert!(!f.day_in_range("2026/12/02"));
    }
}
