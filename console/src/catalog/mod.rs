//! A policy's recordings as the store holds them: `<prefix>/YYYY/MM/DD/
//! <stamp>_<hash>.{mp3,json}`, listed newest first by walking the date
//! folders backwards and reading the JSON sidecars (cached: objects are
//! written once, so a sidecar read is never stale). Every id is checked
//! against that layout before it becomes a key, so a console can never
//! name an object outside its own prefix.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use earshot_contracts::layout::{Prefix, RecordingId};
use earshot_contracts::sidecar::Sidecar;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{GetOptions, GetRange, GetResult, ObjectStore};

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
    /// A sidecar that is not valid JSON (or not a sidecar).
    #[error("sidecar {key} is not a valid sidecar: {error}")]
    BadSidecar {
        /// Its key.
        key: String,
        /// What is wrong.
        error: String,
    },
}

mod filter;
mod recording;

pub use earshot_contracts::layout::valid_day;
pub use filter::Filter;
pub use recording::{Recording, clock, hms};

/// Whether `s` names a recording of the layout, `YYYY/MM/DD/<stem>`.
pub fn valid_id(s: &str) -> bool {
    RecordingId::parse_path(s).is_some()
}

/// A page of recordings, newest first.
#[derive(Debug, Clone)]
pub struct Page {
    /// The recordings.
    pub recordings: Vec<Arc<Recording>>,
    /// Whether a next page exists.
    pub more: bool,
}

/// One policy's recordings in one store.
pub struct Catalog {
    store: Arc<dyn ObjectStore>,
    prefix: Prefix,
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
    /// The recordings under `prefix` (may be empty: the store's root).
    pub fn new(store: Arc<dyn ObjectStore>, prefix: Prefix) -> Self {
        Self {
            store,
            prefix,
            cache: Mutex::new(HashMap::new()),
            listings: Mutex::new(HashMap::new()),
        }
    }

    /// The full key of a relative name.
    pub fn key(&self, rel: &str) -> ObjectPath {
        ObjectPath::from(self.prefix.key(rel))
    }

    async fn folders(&self, rel: Option<&str>) -> Result<Vec<String>, CatalogError> {
        let base = match (self.prefix.as_str().is_empty(), rel) {
            (true, None) => None,
            (false, None) => Some(ObjectPath::from(self.prefix.as_str())),
            (_, Some(r)) => Some(self.key(r)),
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
    pub async fn sidecar(&self, id: &str) -> Result<Sidecar, CatalogError> {
        let bytes = self.sidecar_bytes(id).await?;
        Sidecar::from_json(&bytes).map_err(|e| CatalogError::BadSidecar {
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
        let good = serde_json::json!({"caller": {"number": "008"}, "users": [{"extension": "008", "mode": "Always", "side": "caller"}], "complete": true});
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
        let catalog = Catalog::new(store, Prefix::new("/t/"));
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
