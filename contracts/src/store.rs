//! Opening the store a config names, through `object_store`: a local
//! directory (the embedded default) or an S3-compatible bucket, with the
//! key prefix every name goes under. Reading and writing are the callers'
//! business: the console only reads, the recorder writes each object once.

use std::sync::Arc;

use object_store::aws::{AmazonS3Builder, S3ConditionalPut};
use object_store::local::LocalFileSystem;
use object_store::{ClientOptions, ObjectStore};

use crate::config::StorageConfig;
use crate::layout::Prefix;

/// Why a store could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// Neither or both kinds configured.
    #[error("storage: configure exactly one of filesystem or s3")]
    Ambiguous,
    /// The store could not be set up.
    #[error("storage: {0}")]
    Setup(String),
}

/// An opened store and the prefix of the policy's recordings in it.
#[derive(Clone)]
pub struct OpenedStore {
    /// The store.
    pub store: Arc<dyn ObjectStore>,
    /// The key prefix.
    pub prefix: Prefix,
    /// Where it is, for logs (no credentials).
    pub describe: String,
}

impl std::fmt::Debug for OpenedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenedStore")
            .field("prefix", &self.prefix)
            .field("describe", &self.describe)
            .finish()
    }
}

/// Opens the configured store. S3 credentials come from
/// `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` in the environment.
pub fn open(cfg: &StorageConfig) -> Result<OpenedStore, OpenError> {
    let prefix = Prefix::new(&cfg.prefix);
    match (&cfg.filesystem, &cfg.s3) {
        (Some(fs), None) => {
            std::fs::create_dir_all(&fs.path)
                .map_err(|e| OpenError::Setup(format!("{}: {e}", fs.path.display())))?;
            let local = LocalFileSystem::new_with_prefix(&fs.path)
                .map_err(|e| OpenError::Setup(e.to_string()))?;
            Ok(OpenedStore {
                store: Arc::new(local),
                prefix,
                describe: format!("directory {}", fs.path.display()),
            })
        }
        (None, Some(s3)) => {
            let store = AmazonS3Builder::from_env()
                // First: these options replace every client option set
                // before them (allow_http included). The client's 30 s
                // default cuts a long recording's PUT on a slow link;
                // callers bound each operation themselves.
                .with_client_options(
                    ClientOptions::new()
                        .with_timeout(std::time::Duration::from_secs(600))
                        .with_connect_timeout(std::time::Duration::from_secs(10)),
                )
                .with_endpoint(&s3.endpoint)
                .with_bucket_name(&s3.bucket)
                .with_region(&s3.region)
                .with_allow_http(s3.endpoint.starts_with("http://"))
                .with_virtual_hosted_style_request(!s3.path_style)
                .with_conditional_put(S3ConditionalPut::ETagMatch)
                .build()
                .map_err(|e| OpenError::Setup(e.to_string()))?;
            Ok(OpenedStore {
                store: Arc::new(store),
                prefix,
                describe: format!("bucket {} at {}", s3.bucket, s3.endpoint),
            })
        }
        _ => Err(OpenError::Ambiguous),
    }
}
