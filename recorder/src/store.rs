//! Where recordings end up: an S3-compatible bucket or, as the embedded
//! default, a local directory — both through `object_store`. Objects are
//! written once: an existing object is never overwritten; finding the same
//! bytes already there (an upload confirmed just before a crash) counts as done.

use std::sync::Arc;

use earshot_contracts::config::StorageConfig;
use earshot_contracts::layout::Prefix;
use earshot_contracts::store::{OpenError, OpenedStore};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, PutMode, PutOptions, PutPayload, WriteMultipart};

/// Objects larger than this go up as multipart uploads (about 70 minutes
/// of a 32 kbit/s recording).
pub const MULTIPART_ABOVE: usize = 16 * 1024 * 1024;
/// Part size of multipart uploads.
const PART: usize = 8 * 1024 * 1024;

/// Why a store could not be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store could not be opened.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// A spool file could not be read for upload.
    #[error("spool: {0}")]
    Spool(String),
    /// An object exists with other content: a second recording with the same name.
    #[error("object {0} already exists with different content; not overwritten")]
    Conflict(String),
    /// The attempt took longer than its budget.
    #[error("upload did not finish within {0:?}")]
    TimedOut(std::time::Duration),
    /// The store refused or could not be reached.
    #[error("upload of {key} failed: {source}")]
    Put {
        /// Object key.
        key: String,
        /// What the store said.
        source: object_store::Error,
    },
}

impl StoreError {
    /// Metric label for `earshot_upload_failures_total{reason}`.
    pub fn reason(&self) -> &'static str {
        match self {
            StoreError::Open(_) => "config",
            StoreError::Spool(_) => "spool",
            StoreError::TimedOut(_) => "timeout",
            StoreError::Conflict(_) => "conflict",
            StoreError::Put { source, .. } => match source {
                object_store::Error::PermissionDenied { .. }
                | object_store::Error::Unauthenticated { .. } => "denied",
                object_store::Error::NotFound { .. } => "not_found",
                _ => "unavailable",
            },
        }
    }
}

/// An opened store, for writing recordings once each.
#[derive(Clone)]
pub struct Store {
    inner: Arc<dyn ObjectStore>,
    prefix: Prefix,
    /// Human-readable location for logs (no credentials).
    pub describe: String,
}

impl Store {
    /// Opens the configured store.
    pub fn open(cfg: &StorageConfig) -> Result<Store, StoreError> {
        let OpenedStore {
            store,
            prefix,
            describe,
        } = earshot_contracts::store::open(cfg)?;
        Ok(Store {
            inner: store,
            prefix,
            describe,
        })
    }

    /// The key prefix.
    pub fn prefix(&self) -> &Prefix {
        &self.prefix
    }

    /// The full key of a name under the prefix.
    pub fn key(&self, name: &str) -> String {
        self.prefix.key(name)
    }

    /// Writes an object once. Returns the key. An object already there
    /// with the same bytes (an upload confirmed just before a crash) counts
    /// as written; one with other bytes is a [`StoreError::Conflict`] and is
    /// never overwritten. Objects above [`MULTIPART_ABOVE`] go up in parts.
    pub async fn put_once(&self, name: &str, data: Vec<u8>) -> Result<String, StoreError> {
        let key = self.key(name);
        let path = ObjectPath::from(key.as_str());
        let put_err = |source| StoreError::Put {
            key: key.clone(),
            source,
        };
        if data.len() > MULTIPART_ABOVE {
            // Multipart uploads cannot be conditional: look first. A key
            // that may only write cannot look; the name is this
            // recording's own, so at worst its earlier upload is replaced
            // by the same bytes.
            return match self.inner.head(&path).await {
                Ok(_) => self.same_object(&key, &path, &data).await,
                Err(
                    object_store::Error::NotFound { .. }
                    | object_store::Error::PermissionDenied { .. },
                ) => {
                    let upload = self.inner.put_multipart(&path).await.map_err(put_err)?;
                    let mut parts = WriteMultipart::new_with_chunk_size(upload, PART);
                    parts.write(&data);
                    parts.finish().await.map_err(put_err)?;
                    Ok(key.clone())
                }
                Err(source) => Err(put_err(source)),
            };
        }
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        let payload = PutPayload::from(data.clone());
        match self.inner.put_opts(&path, payload, opts).await {
            Ok(_) => Ok(key),
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => {
                self.same_object(&key, &path, &data).await
            }
            Err(object_store::Error::NotImplemented) => {
                // No conditional writes on this store: look first, then write
                // (a write-only key cannot look: its own name, written again).
                match self.inner.head(&path).await {
                    Ok(_) => self.same_object(&key, &path, &data).await,
                    Err(
                        object_store::Error::NotFound { .. }
                        | object_store::Error::PermissionDenied { .. },
                    ) => self
                        .inner
                        .put(&path, PutPayload::from(data))
                        .await
                        .map(|_| key.clone())
                        .map_err(put_err),
                    Err(source) => Err(put_err(source)),
                }
            }
            Err(source) => Err(put_err(source)),
        }
    }

    /// Whether the object at `path` holds exactly `data`: by content, not
    /// size (a CBR MP3's size says only how long it is).
    async fn same_object(
        &self,
        key: &str,
        path: &ObjectPath,
        data: &[u8],
    ) -> Result<String, StoreError> {
        let put_err = |source| StoreError::Put {
            key: key.to_owned(),
            source,
        };
        let stored = match self.inner.get(path).await {
            Ok(s) => s,
            Err(object_store::Error::PermissionDenied { .. }) => {
                // A write-only key (the recommended one) cannot compare. The
                // name holds this recording's unique id, so the object is
                // its own upload whose confirmation was lost.
                tracing::warn!(
                    key,
                    "object already stored and this key may not read it: counted as this recording's earlier upload"
                );
                return Ok(key.to_owned());
            }
            Err(source) => return Err(put_err(source)),
        };
        let bytes = stored.bytes().await.map_err(put_err)?;
        if bytes.as_ref() == data {
            Ok(key.to_owned())
        } else {
            Err(StoreError::Conflict(key.to_owned()))
        }
    }
}

/// Deletes recordings (`.mp3` and `.json`) older than `days` under `root`;
/// returns how many files went. Only the recorder's own file kinds are touched.
pub fn expire_local(
    root: &std::path::Path,
    days: u32,
    now: std::time::SystemTime,
) -> std::io::Result<u64> {
    let limit = now - std::time::Duration::from_secs(u64::from(days) * 86_400);
    let mut removed = 0;
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "mp3" || x == "json")
                && meta.modified().is_ok_and(|m| m < limit)
            {
                std::fs::remove_file(&p)?;
                removed += 1;
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn written_once_and_already_there_decided_by_content() {
        let root = std::env::temp_dir().join(format!("earshot-put-once-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let store = Store::open(&StorageConfig {
            filesystem: Some(earshot_contracts::config::FilesystemConfig {
                path: root.clone(),
                retention_days: None,
            }),
            s3: None,
            prefix: "acme/office".into(),
        })
        .unwrap();
        let key = store.put_once("a.mp3", vec![1; 1000]).await.unwrap();
        assert_eq!(key, "acme/office/a.mp3");
        // The same bytes again (a crash after the store confirmed): done.
        store.put_once("a.mp3", vec![1; 1000]).await.unwrap();
        // Other bytes of the same size: refused, the stored object untouched.
        let e = store.put_once("a.mp3", vec![2; 1000]).await.unwrap_err();
        assert!(matches!(e, StoreError::Conflict(_)), "{e}");
        assert_eq!(e.reason(), "conflict");
        assert_eq!(
            std::fs::read(root.join("acme/office/a.mp3")).unwrap(),
            vec![1; 1000]
        );
        // Large objects go up in parts, with the same rules.
        let big: Vec<u8> = (0..MULTIPART_ABOVE + 12_345).map(|i| i as u8).collect();
        store.put_once("big.mp3", big.clone()).await.unwrap();
        assert_eq!(
            std::fs::read(root.join("acme/office/big.mp3")).unwrap(),
            big
        );
        store.put_once("big.mp3", big.clone()).await.unwrap();
        let mut other = big;
        other[7] ^= 1;
        assert!(matches!(
            store.put_once("big.mp3", other).await,
            Err(StoreError::Conflict(_))
        ));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn expires_only_old_recordings() {
        let root = std::env::temp_dir().join(format!("earshot-expire-{}", std::process::id()));
        let day = root.join("acme/office/2026/10/01");
        std::fs::create_dir_all(&day).unwrap();
        let now = std::time::SystemTime::now();
        let old = now - std::time::Duration::from_secs(40 * 86_400);
        for (name, t) in [
            ("old.mp3", old),
            ("old.json", old),
            ("new.mp3", now),
            ("notes.txt", old),
        ] {
            let f = std::fs::File::create(day.join(name)).unwrap();
            f.set_modified(t).unwrap();
        }
        assert_eq!(expire_local(&root, 30, now).unwrap(), 2);
        assert!(!day.join("old.mp3").exists() && !day.join("old.json").exists());
        assert!(day.join("new.mp3").exists(), "within retention");
        assert!(
            day.join("notes.txt").exists(),
            "not a recording: not ours to delete"
        );
        std::fs::remove_dir_all(&root).unwrap();
    }
}
