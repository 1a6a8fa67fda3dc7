//! Opening the store a config names, through `object_store`: a local
//! directory (the embedded default) or an S3-compatible bucket, with the
//! key prefix every name goes under. Reading and writing are the callers'
//! business: the console only reads, the recorder writes each object once.

use std::sync::Arc;

use object_store::aws::{AmazonS3Builder, S3ConditionalPut};
use object_store::local::LocalFileSystem;
use object_store::{ClientOptions, ObjectStore};

use crate::addressing::{AddressError, BucketUrl, bucket_url};
use crate::config::{S3Config, StorageConfig};
use crate::layout::Prefix;

/// Why a store could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// Neither or both kinds configured.
    #[error("storage: configure exactly one of filesystem or s3")]
    Ambiguous,
    /// The endpoint and bucket give no URL (see [`crate::addressing`]).
    #[error("storage: {0}")]
    Address(#[from] AddressError),
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
            let bucket = bucket_url(&s3.endpoint, &s3.bucket, s3.path_style)?;
            let store = s3_builder(AmazonS3Builder::from_env(), s3, &bucket)
                .build()
                .map_err(|e| OpenError::Setup(e.to_string()))?;
            Ok(OpenedStore {
                store: Arc::new(store),
                prefix,
                describe: format!("bucket {} at {bucket}", s3.bucket),
            })
        }
        _ => Err(OpenError::Ambiguous),
    }
}

/// `builder` (credentials already in it) set up for the bucket at `bucket`.
fn s3_builder(builder: AmazonS3Builder, s3: &S3Config, bucket: &BucketUrl) -> AmazonS3Builder {
    builder
        // First: these options replace every client option set before them
        // (allow_http included). The client's 30 s default cuts a long
        // recording's PUT on a slow link; callers bound each operation
        // themselves.
        .with_client_options(
            ClientOptions::new()
                .with_timeout(std::time::Duration::from_secs(600))
                .with_connect_timeout(std::time::Duration::from_secs(10)),
        )
        // With virtual-hosted requests on, object_store takes the endpoint
        // verbatim as the bucket's own URL (off, it appends `/<bucket>`).
        // Handed the URL `addressing` built, in either style, it has
        // nothing to add: it addresses the bucket exactly as the operator.
        .with_endpoint(bucket.as_str())
        .with_virtual_hosted_style_request(true)
        .with_bucket_name(&s3.bucket)
        .with_region(&s3.region)
        .with_allow_http(!bucket.is_https())
        .with_conditional_put(S3ConditionalPut::ETagMatch)
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::task::{Context, Poll, Waker};

    use object_store::signer::Signer;

    use super::*;

    /// The URL object_store sends a PUT of `key` to: a presigned URL is
    /// built by the same code as every request's (`path_url`), and with a
    /// static key it is ready at once.
    fn put_url(endpoint: &str, bucket: &str, path_style: bool, key: &str) -> String {
        let s3 = S3Config {
            endpoint: endpoint.into(),
            bucket: bucket.into(),
            region: "eu-west-1".into(),
            path_style,
        };
        let url = bucket_url(&s3.endpoint, &s3.bucket, s3.path_style).unwrap();
        let store = s3_builder(
            AmazonS3Builder::new()
                .with_access_key_id("AKIDEXAMPLE")
                .with_secret_access_key("secret"),
            &s3,
            &url,
        )
        .build()
        .unwrap();
        let path = object_store::path::Path::from(key);
        // `Signer` takes reqwest's `Method`, which contracts does not name.
        let signing = store.signed_url(
            "PUT".parse().expect("PUT is a method"),
            &path,
            std::time::Duration::from_secs(60),
        );
        let mut signing = std::pin::pin!(signing);
        match signing
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
        {
            Poll::Ready(signed) => {
                let mut signed = signed.unwrap();
                signed.set_query(None);
                signed.to_string()
            }
            Poll::Pending => panic!("a static key signs without waiting"),
        }
    }

    #[test]
    fn object_store_sends_to_the_bucket_url_in_both_styles() {
        let key = "acme/office/2026/12/06/x.mp3";
        assert_eq!(
            put_url(
                "https://s3.eu-west-1.amazonaws.com/",
                "recordings",
                false,
                key
            ),
            "https://recordings.s3.eu-west-1.amazonaws.com/acme/office/2026/12/06/x.mp3"
        );
        assert_eq!(
            put_url(
                "https://s3.eu-west-1.amazonaws.com/",
                "recordings",
                true,
                key
            ),
            "https://s3.eu-west-1.amazonaws.com/recordings/acme/office/2026/12/06/x.mp3"
        );
        assert_eq!(
            put_url("http://garage:3900", "recordings", false, key),
            "http://recordings.garage:3900/acme/office/2026/12/06/x.mp3"
        );
        assert_eq!(
            put_url("http://garage:3900/", "recordings", true, key),
            "http://garage:3900/recordings/acme/office/2026/12/06/x.mp3"
        );
        // The same encoding as the operator's (`BucketUrl::object`).
        let odd = "acme/it's (odd)/x.mp3";
        let url = bucket_url("http://garage:3900", "recordings", false).unwrap();
        assert_eq!(
            put_url("http://garage:3900", "recordings", false, odd),
            url.object(odd)
        );
    }

    #[test]
    fn an_endpoint_that_names_no_bucket_is_refused_before_any_request() {
        let cfg = StorageConfig {
            filesystem: None,
            s3: Some(S3Config {
                endpoint: "http://127.0.0.1:3900".into(),
                bucket: "recordings".into(),
                region: "garage".into(),
                path_style: false,
            }),
            prefix: "acme/office/".into(),
        };
        let err = open(&cfg).unwrap_err();
        assert_eq!(
            err,
            OpenError::Address(AddressError::IpHost("http://127.0.0.1:3900".into()))
        );
        assert!(
            err.to_string()
                .starts_with("storage: virtual-hosted addressing (pathStyle: false)"),
            "{err}"
        );
    }
}
