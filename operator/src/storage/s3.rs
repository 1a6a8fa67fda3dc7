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
    /// Whether the key is the operator's own (from the Helm values) rather
    /// than the tenant's.
    pub operator_key: bool,
}

impl std::fmt::Debug for S3Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        f.debug_struct("S3Target")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("operator_key", &self.operator_key)
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
        "object store refused the credentials for bucket {bucket} (HTTP {status}): check {whose} and its permissions on the bucket"
    )]
    Denied {
        /// Bucket.
        bucket: String,
        /// HTTP status.
        status: u16,
        /// Whose key it was, in words.
        whose: &'static str,
    },
    /// 404 on the bucket.
    #[error("bucket {0} does not exist: create it, Earshot never creates or deletes buckets")]
    NoBucket(String),
    /// Anything else the store answered. Only the S3 error code is kept:
    /// a message could echo anything (the request, a key id) into status.
    #[error("object store answered HTTP {status} ({code}) to {action} on bucket {bucket}")]
    Unexpected {
        /// What was attempted.
        action: &'static str,
        /// Bucket.
        bucket: String,
        /// HTTP status.
        status: u16,
        /// The S3 `<Code>`, or `no error code`.
        code: String,
    },
    /// The store sent more than any answer to these calls needs.
    #[error("object store sent more than {limit} bytes in answer to {action}: refused")]
    TooLarge {
        /// What was attempted.
        action: &'static str,
        /// The limit, in bytes.
        limit: usize,
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
                // A redirect would take the signed request elsewhere.
                .redirect(reqwest::redirect::Policy::none())
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
        action: &'static str,
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
            .map_err(|e| self.unreachable(&e))?;
        let status = resp.status().as_u16();
        let body = read_limited(resp, action, MAX_BODY)
            .await
            .map_err(|e| e.unwrap_or_else(|e| self.unreachable(&e)))?;
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }

    fn unreachable(&self, e: &reqwest::Error) -> StorageError {
        // The kind of failure only: reqwest's text names the URL and the
        // chain of causes, which status does not need.
        let kind = if e.is_timeout() {
            "timed out"
        } else if e.is_connect() {
            "connection failed"
        } else if e.is_body() || e.is_decode() {
            "the answer broke off"
        } else {
            "request failed"
        };
        StorageError::Unreachable {
            endpoint: self.target.endpoint.chars().take(200).collect(),
            message: kind.to_owned(),
        }
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
                whose: if self.target.operator_key {
                    "the operator's own key for this store (Helm storageEndpoints)"
                } else {
                    "the access key in the Secret"
                },
            }),
            404 if body.contains("NoSuchBucket") || action == "HeadBucket" => {
                Err(StorageError::NoBucket(bucket.into()))
            }
            _ => Err(StorageError::Unexpected {
                action,
                bucket: bucket.into(),
                status,
                code: error_code(body).unwrap_or("no error code").to_owned(),
            }),
        }
    }

    /// Checks that the credentials reach the bucket.
    pub async fn head_bucket(&self, bucket: &str) -> Result<(), StorageError> {
        let (status, body) = self
            .send("HeadBucket", "HEAD", &self.url(bucket, ""), Vec::new())
            .await?;
        self.check("HeadBucket", bucket, status, &body)
    }

    /// The bucket's lifecycle configuration, `None` when it has none.
    pub async fn get_lifecycle(&self, bucket: &str) -> Result<Option<String>, StorageError> {
        let (status, body) = self
            .send(
                "GetBucketLifecycleConfiguration",
                "GET",
                &self.url(bucket, "?lifecycle"),
                Vec::new(),
            )
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
                "PutBucketLifecycleConfiguration",
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

/// The most the operator reads of any answer: a lifecycle configuration
/// holds at most 1000 rules of well under 1 KiB each.
pub const MAX_BODY: usize = 1 << 20;

/// Reads a body, refusing it once it passes `limit` bytes (so a hostile
/// or broken store cannot make the shared operator run out of memory).
/// `Err(Ok(_))` is the refusal, `Err(Err(_))` a transport failure.
async fn read_limited(
    mut resp: reqwest::Response,
    action: &'static str,
    limit: usize,
) -> Result<Vec<u8>, Result<StorageError, reqwest::Error>> {
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(Ok(StorageError::TooLarge { action, limit }));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(Err)? {
        if body.len() + chunk.len() > limit {
            return Err(Ok(StorageError::TooLarge { action, limit }));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The S3 error code of an error body (`<Code>NoSuchKey</Code>`), when it
/// is one: a short word, never free text the store may have echoed.
pub fn error_code(body: &str) -> Option<&str> {
    let start = body.find("<Code>")? + "<Code>".len();
    let code = &body[start..start + body[start..].find("</Code>")?];
    (!code.is_empty()
        && code.len() <= 64
        && code.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.'))
    .then_some(code)
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
