//! The few S3 calls the operator makes — HeadBucket to check credentials and
//! bucket, Get/PutBucketLifecycleConfiguration to keep the retention rule —
//! signed with SigV4 by `aws-sigv4`, sent with reqwest. **Client required.**

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    PayloadChecksumKind, SignableBody, SignableRequest, SigningSettings, sign,
};
use aws_sigv4::sign::v4;
use base64::Engine;
use md5::Digest;

use super::lifecycle::{self, PolicyRule};

/// Where and as whom to talk to the store.
#[derive(Clone)]
pub struct S3Target {
    /// Endpoint URL (`http://garage:3900`).
    pub endpoint: String,
    /// Signing region.
    pub region: String,
    /// Path-style addressing.
    pub path_style: bool,
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: String,
}

impl std::fmt::Debug for S3Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        f.debug_struct("S3Target")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .finish()
    }
}

/// Why a storage call failed, in words a platform engineer can act on.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// Network or TLS failure.
    #[error("object store at {endpoint} is unreachable: {message}")]
    Unreachable {
        /// Endpoint.
        endpoint: String,
        /// What failed.
        message: String,
    },
    /// 401/403.
    #[error(
        "object store refused the credentials for bucket {bucket} (HTTP {status}): check the access key in the Secret and its permissions on the bucket"
    )]
    Denied {
        /// Bucket.
        bucket: String,
        /// HTTP status.
        status: u16,
    },
    /// 404 on the bucket.
    #[error("bucket {0} does not exist: create it, Earshot never creates or deletes buckets")]
    NoBucket(String),
    /// Anything else the store answered.
    #[error("object store answered HTTP {status} to {action} on bucket {bucket}: {body}")]
    Unexpected {
        /// What was attempted.
        action: &'static str,
        /// Bucket.
        bucket: String,
        /// HTTP status.
        status: u16,
        /// Start of the body.
        body: String,
    },
    /// The lifecycle XML could not be read.
    #[error(transparent)]
    Lifecycle(#[from] lifecycle::LifecycleError),
    /// Written, but reading back does not show the rule.
    #[error(
        "bucket {0} does not keep the lifecycle rule that was written: the store may not support lifecycle rules"
    )]
    NotEnforced(String),
    /// The request could not be signed.
    #[error("cannot sign the request: {0}")]
    Signing(String),
}

impl StorageError {
    /// Whether retrying later may help.
    pub fn transient(&self) -> bool {
        matches!(
            self,
            StorageError::Unreachable { .. }
                | StorageError::Unexpected {
                    status: 500..=599,
                    ..
                }
        )
    }
}

/// A client for one store.
#[derive(Debug, Clone)]
pub struct S3Client {
    target: S3Target,
    http: reqwest::Client,
}

impl S3Client {
    /// A client for `target`.
    pub fn new(target: S3Target) -> Self {
        Self {
            target,
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(15))
                .build()
                .unwrap_or_default(),
        }
    }

    fn url(&self, bucket: &str, query: &str) -> String {
        let base = self.target.endpoint.trim_end_matches('/');
        if self.target.path_style {
            format!("{base}/{bucket}{query}")
        } else {
            let (scheme, host) = base.split_once("://").unwrap_or(("https", base));
            format!("{scheme}://{bucket}.{host}/{query}")
        }
    }

    async fn send(
        &self,
        method: &str,
        url: &str,
        body: Vec<u8>,
    ) -> Result<(u16, String), StorageError> {
        let identity = Credentials::new(
            &self.target.access_key_id,
            &self.target.secret_access_key,
            None,
            None,
            "earshot",
        )
        .into();
        let mut settings = SigningSettings::default();
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.target.region)
            .name("s3")
            .time(SystemTime::now())
            .settings(settings)
            .build()
            .map_err(|e| StorageError::Signing(e.to_string()))?
            .into();
        let mut headers: Vec<(String, String)> = Vec::new();
        if !body.is_empty() {
            // S3 requires an MD5 of the body for PutBucketLifecycleConfiguration.
            let md5 = base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(&body));
            headers.push(("content-md5".into(), md5));
            headers.push(("content-type".into(), "application/xml".into()));
        }
        let signable = SignableRequest::new(
            method,
            url,
            headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            SignableBody::Bytes(&body),
        )
        .map_err(|e| StorageError::Signing(e.to_string()))?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| StorageError::Signing(e.to_string()))?
            .into_parts();
        let mut req = http::Request::builder().method(method).uri(url);
        for (k, v) in &headers {
            req = req.header(k, v);
        }
        let mut req = req
            .body(body)
            .map_err(|e| StorageError::Signing(e.to_string()))?;
        instructions.apply_to_request_http1x(&mut req);
        let req =
            reqwest::Request::try_from(req).map_err(|e| StorageError::Signing(e.to_string()))?;
        let resp = self
            .http
            .execute(req)
            .await
            .map_err(|e| StorageError::Unreachable {
                endpoint: self.target.endpoint.clone(),
                message: e.to_string(),
            })?;
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        Ok((status, text))
    }

    fn check(
        &self,
        action: &'static str,
        bucket: &str,
        status: u16,
        body: &str,
    ) -> Result<(), StorageError> {
        match status {
            200..=299 => Ok(()),
            401 | 403 => Err(StorageError::Denied {
                bucket: bucket.into(),
                status,
            }),
            404 if body.contains("NoSuchBucket") || action == "HeadBucket" => {
                Err(StorageError::NoBucket(bucket.into()))
            }
            _ => Err(StorageError::Unexpected {
                action,
                bucket: bucket.into(),
                status,
                body: body.chars().take(300).collect(),
            }),
        }
    }

    /// Checks that the credentials reach the bucket.
    pub async fn head_bucket(&self, bucket: &str) -> Result<(), StorageError> {
        let (status, body) = self.send("HEAD", &self.url(bucket, ""), Vec::new()).await?;
        self.check("HeadBucket", bucket, status, &body)
    }

    /// The bucket's lifecycle configuration, `None` when it has none.
    pub async fn get_lifecycle(&self, bucket: &str) -> Result<Option<String>, StorageError> {
        let (status, body) = self
            .send("GET", &self.url(bucket, "?lifecycle"), Vec::new())
            .await?;
        if status == 404 && body.contains("NoSuchLifecycleConfiguration") {
            return Ok(None);
        }
        self.check("GetBucketLifecycleConfiguration", bucket, status, &body)?;
        Ok(Some(body))
    }

    /// Replaces the bucket's lifecycle configuration.
    pub async fn put_lifecycle(&self, bucket: &str, xml: &str) -> Result<(), StorageError> {
        let (status, body) = self
            .send(
                "PUT",
                &self.url(bucket, "?lifecycle"),
                xml.as_bytes().to_vec(),
            )
            .await?;
        self.check("PutBucketLifecycleConfiguration", bucket, status, &body)
    }

    /// Makes the bucket enforce `rule`, keeping every other rule, and reads it
    /// back to be sure. Says whether anything had to change and whether
    /// another rule expires some of the policy's recordings sooner.
    pub async fn ensure_rule(
        &self,
        bucket: &str,
        rule: &PolicyRule,
    ) -> Result<Enforced, StorageError> {
        let current = self.get_lifecycle(bucket).await?;
        if let Some(xml) = &current
            && lifecycle::enforces(xml, rule)?
        {
            return Ok(Enforced {
                changed: false,
                shorter: lifecycle::shorter_rule(xml, rule)?,
            });
        }
        let merged = lifecycle::merge(current.as_deref(), rule)?;
        self.put_lifecycle(bucket, &merged).await?;
        let back = self.get_lifecycle(bucket).await?.unwrap_or_default();
        if !lifecycle::enforces(&back, rule)? {
            return Err(StorageError::NotEnforced(bucket.into()));
        }
        Ok(Enforced {
            changed: true,
            shorter: lifecycle::shorter_rule(&back, rule)?,
        })
    }
}

/// What keeping a policy's lifecycle rule found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Enforced {
    /// Whether the bucket's configuration had to change.
    pub changed: bool,
    /// Another rule in the bucket that expires some of the policy's
    /// recordings before their retention ends.
    pub shorter: Option<lifecycle::FoundRule>,
}
