//! Where recordings end up: an S3-compatible bucket or, as the embedded
//! default, a local directory — both through `object_store`. Objects are
//! written once: an existing object is never overwritten; finding the same
//! bytes already there (an upload confirmed just before a crash) counts as done.

use std::path::PathBuf;
use std::sync::Arc;

use object_store::aws::{AmazonS3Builder, S3ConditionalPut};
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, PutMode, PutOptions, PutPayload};
use serde::Deserialize;

/// Storage settings in the recorder's config file.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StorageConfig {
    /// A local directory (the embedded default).
    #[serde(default)]
    pub filesystem: Option<FilesystemConfig>,
    /// An S3-compatible bucket; credentials from `AWS_ACCESS_KEY_ID` and
    /// `AWS_SECRET_ACCESS_KEY` in the environment (the operator fills them
    /// from the policy's Secret).
    #[serde(default)]
    pub s3: Option<S3Config>,
    /// Key prefix of every object, e.g. `acme/office/`.
    #[serde(default)]
    pub prefix: String,
}

/// A local directory.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FilesystemConfig {
    /// The directory; created if missing.
    pub path: PathBuf,
    /// Days recordings are kept; the recorder deletes older ones at start and
    /// daily. (An S3 bucket does this itself with the operator's lifecycle rule.)
    #[serde(default)]
    pub retention_days: Option<u32>,
}

/// An S3-compatible bucket.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct S3Config {
    /// Endpoint URL.
    pub endpoint: String,
    /// Bucket.
    pub bucket: String,
    /// Signing region.
    #[serde(default = "default_region")]
    pub region: String,
    /// Path-style addressing (MinIO, Garage, Ceph RGW).
    #[serde(default = "default_true")]
    pub path_style: bool,
}

fn default_region() -> String {
    "us-east-1".to_owned()
}

fn default_true() -> bool {
    true
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            filesystem: Some(FilesystemConfig {
                path: PathBuf::from("recordings"),
                retention_days: None,
            }),
            s3: None,
            prefix: String::new(),
        }
    }
}

/// Why a store could not be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Neither or both kinds configured.
    #[error("storage: configure exactly one of filesystem or s3")]
    Ambiguous,
    /// The store could not be set up.
    #[error("storage: {0}")]
    Open(String),
    /// An object exists with other content: a second recording with the same name.
    #[error("object {0} already exists with different content; not overwritten")]
    Conflict(String),
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
            StoreError::Ambiguous | StoreError::Open(_) => "config",
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

/// An opened store.
#[derive(Clone)]
pub struct Store {
    inner: Arc<dyn ObjectStore>,
    prefix: String,
    /// Human-readable location for logs (no credentials).
    pub describe: String,
}

impl Store {
    /// Opens the configured store.
    pub fn open(cfg: &StorageConfig) -> Result<Store, StoreError> {
        let prefix = cfg.prefix.trim_matches('/').to_owned();
        match (&cfg.filesystem, &cfg.s3) {
            (Some(fs), None) => {
                std::fs::create_dir_all(&fs.path)
                    .map_err(|e| StoreError::Open(format!("{}: {e}", fs.path.display())))?;
                let local = LocalFileSystem::new_with_prefix(&fs.path)
                    .map_err(|e| StoreError::Open(e.to_string()))?;
                Ok(Store {
                    inner: Arc::new(local),
                    prefix,
                    describe: format!("directory {}", fs.path.display()),
                })
            }
            (None, Some(s3)) => {
                let builder = AmazonS3Builder::from_env()
                    .with_endpoint(&s3.endpoint)
                    .with_bucket_name(&s3.bucket)
                    .with_region(&s3.region)
                    .with_allow_http(s3.endpoint.starts_with("http://"))
                    .with_virtual_hosted_style_request(!s3.path_style)
                    .with_conditional_put(S3ConditionalPut::ETagMatch);
                let store = builder
                    .build()
                    .map_err(|e| StoreError::Open(e.to_string()))?;
                Ok(Store {
                    inner: Arc::new(store),
                    prefix,
                    describe: format!("bucket {} at {}", s3.bucket, s3.endpoint),
                })
            }
            _ => Err(StoreError::Ambiguous),
        }
    }

    /// The underlying object store (the console reads through it).
    pub fn object_store(&self) -> Arc<dyn ObjectStore> {
        self.inner.clone()
    }

    /// The key prefix, without slashes at either end (may be empty).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The full key of a name under the prefix.
    pub fn key(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{}/{name}", self.prefix)
        }
    }

    /// Writes an object once. Returns the key.
    pub async fn put_once(&self, name: &str, data: Vec<u8>) -> Result<String, StoreError> {
        let key = self.key(name);
        let path = ObjectPath::from(key.as_str());
        let len = data.len() as u64;
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self
            .inner
            .put_opts(&path, PutPayload::from(data.clone()), opts)
            .await
        {
            Ok(_) => Ok(key),
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => {
                self.same_object(&key, &path, len).await
            }
            Err(object_store::Error::NotImplemented) => {
                // No conditional writes on this store: look first, then write.
                match self.inner.head(&path).await {
                    Ok(_) => self.same_object(&key, &path, len).await,
                    Err(object_store::Error::NotFound { .. }) => self
                        .inner
                        .put(&path, PutPayload::from(data))
                        .await
                        .map(|_| key.clone())
                        .map_err(|source| StoreError::Put { key, source }),
                    Err(source) => Err(StoreError::Put { key, source }),
                }
            }
            Err(source) => Err(StoreError::Put { key, source }),
        }
    }

    async fn same_object(
        &self,
        key: &str,
        path: &ObjectPath,
        len: u64,
    ) -> Result<String, StoreError> {
        match self.inner.head(path).await {
            Ok(meta) if meta.size == len => Ok(key.to_owned()),
            Ok(_) => Err(StoreError::Conflict(key.to_owned())),
            Err(source) => Err(StoreError::Put {
                key: key.to_owned(),
                source,
            }),
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
