//! The few S3 calls the operator makes — HeadBucket to check credentials and
//! bucket, Get/PutBucketLifecycleConfiguration to keep the retention rule,
//! and Put/Get/DeleteObject of one small probe object to check that the
//! recorders' key can write — signed with SigV4 by `aws-sigv4`, sent with
//! reqwest. Buckets are addressed by the rule the recorders follow too
//! ([`earshot_contracts::addressing`]). **Client required.**

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
    UriPathNormalizationMode, sign,
};
use aws_sigv4::sign::v4;
use base64::Engine;
use earshot_contracts::addressing::{AddressError, BucketUrl, bucket_url};
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
            .field("path_style", &self.path_style)
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
    /// The endpoint and bucket give no URL (the policy must change).
    #[error(transparent)]
    Address(#[from] AddressError),
    /// The recorders' key may read the bucket but not write to it.
    #[error(
        "the recorders' key (the access key in the Secret) may read bucket {bucket} but not write under {prefix} (HTTP {status} to PutObject): recordings could not be stored; give the key write permission there (s3:PutObject)"
    )]
    ReadOnly {
        /// Bucket.
        bucket: String,
        /// The policy's prefix.
        prefix: String,
        /// HTTP status of the refused write.
        status: u16,
    },
    /// The probe object read back with other bytes than were written.
    #[error(
        "object {key} in bucket {bucket} read back with other bytes than were written: the store does not keep what it is given"
    )]
    ProbeChanged {
        /// Bucket.
        bucket: String,
        /// The probe object's key.
        key: String,
    },
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
        Self::with_http(target, reqwest::Client::builder())
    }

    /// A client for `target` whose HTTP client starts from `http` (a proxy,
    /// extra root certificates, a host name pinned to an address as curl's
    /// `--resolve` does); the timeout and the refusal of redirects are set
    /// on top of it.
    pub fn with_http(target: S3Target, http: reqwest::ClientBuilder) -> Self {
        Self {
            target,
            http: http
                .timeout(std::time::Duration::from_secs(15))
                // A redirect would take the signed request elsewhere.
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap_or_default(),
        }
    }

    /// The bucket's URL, by the rule the recorders' uploads follow.
    fn bucket(&self, bucket: &str) -> Result<BucketUrl, StorageError> {
        Ok(bucket_url(
            &self.target.endpoint,
            bucket,
            self.target.path_style,
        )?)
    }

    async fn send(
        &self,
        action: &'static str,
        method: &str,
        url: &str,
        body: Vec<u8>,
        content_type: &str,
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
        // S3's own rules: the path is signed as sent (object keys are
        // percent-encoded once, by `BucketUrl::object`) and never normalised
        // (a key may hold `//` or `./`).
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
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
            // S3 requires an MD5 of the body for PutBucketLifecycleConfiguration
            // (and checks it on PutObject).
            let md5 = base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(&body));
            headers.push(("content-md5".into(), md5));
            headers.push(("content-type".into(), content_type.into()));
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
            _ => Err(self.refused(action, bucket, status, body)),
        }
    }

    /// What an answer other than the one expected means.
    fn refused(&self, action: &'static str, bucket: &str, status: u16, body: &str) -> StorageError {
        match status {
            401 | 403 => StorageError::Denied {
                bucket: bucket.into(),
                status,
                whose: if self.target.operator_key {
                    "the operator's own key for this store (Helm storageEndpoints)"
                } else {
                    "the access key in the Secret"
                },
            },
            404 if body.contains("NoSuchBucket") || action == "HeadBucket" => {
                StorageError::NoBucket(bucket.into())
            }
            _ => StorageError::Unexpected {
                action,
                bucket: bucket.into(),
                status,
                code: error_code(body).unwrap_or("no error code").to_owned(),
            },
        }
    }

    /// Checks that the credentials reach the bucket.
    pub async fn head_bucket(&self, bucket: &str) -> Result<(), StorageError> {
        let url = self.bucket(bucket)?.bucket_request("");
        let (status, body) = self
            .send("HeadBucket", "HEAD", &url, Vec::new(), XML)
            .await?;
        self.check("HeadBucket", bucket, status, &body)
    }

    /// The bucket's lifecycle configuration, `None` when it has none.
    pub async fn get_lifecycle(&self, bucket: &str) -> Result<Option<String>, StorageError> {
        let url = self.bucket(bucket)?.bucket_request("?lifecycle");
        let (status, body) = self
            .send(
                "GetBucketLifecycleConfiguration",
                "GET",
                &url,
                Vec::new(),
                XML,
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
        let url = self.bucket(bucket)?.bucket_request("?lifecycle");
        let (status, body) = self
            .send(
                "PutBucketLifecycleConfiguration",
                "PUT",
                &url,
                xml.as_bytes().to_vec(),
                XML,
            )
            .await?;
        self.check("PutBucketLifecycleConfiguration", bucket, status, &body)
    }

    /// Checks that this client's key can store objects under `prefix`, as
    /// the recorders do: writes `key` (under `prefix`), reads it back and
    /// deletes it. A key that may write but not read or delete (the
    /// recommended recorder key: `s3:PutObject` only) passes, and the probe
    /// object stays until the policy's lifecycle rule expires it; one that
    /// may read but not write is [`StorageError::ReadOnly`].
    pub async fn probe_write(
        &self,
        bucket: &str,
        prefix: &str,
        key: &str,
    ) -> Result<Probed, StorageError> {
        let url = self.bucket(bucket)?.object(key);
        let (status, body) = self
            .send("PutObject", "PUT", &url, PROBE_BODY.to_vec(), "text/plain")
            .await?;
        if matches!(status, 401 | 403) {
            // Refused: a key that may read finds the probe absent (404);
            // any other key is refused again.
            let (read, _) = self.send("GetObject", "GET", &url, Vec::new(), XML).await?;
            if read == 404 {
                return Err(StorageError::ReadOnly {
                    bucket: bucket.into(),
                    prefix: prefix.into(),
                    status,
                });
            }
        }
        self.check("PutObject", bucket, status, &body)?;

        let (status, body) = self.send("GetObject", "GET", &url, Vec::new(), XML).await?;
        let read_back = match status {
            // Write-only: nothing to compare.
            401 | 403 => false,
            200 if body.as_bytes() == PROBE_BODY => true,
            200 => {
                return Err(StorageError::ProbeChanged {
                    bucket: bucket.into(),
                    key: key.into(),
                });
            }
            _ => return Err(self.refused("GetObject", bucket, status, &body)),
        };

        let (status, body) = self
            .send("DeleteObject", "DELETE", &url, Vec::new(), XML)
            .await?;
        let deleted = match status {
            // Gone already counts: S3 answers 204 either way.
            200..=299 | 404 => true,
            401 | 403 => false,
            _ => return Err(self.refused("DeleteObject", bucket, status, &body)),
        };
        Ok(Probed { read_back, deleted })
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

/// The content type of the requests with an XML body (and of those with
/// none, where it is not sent).
const XML: &str = "application/xml";

/// What the write probe stores: small, and saying what it is to anyone who
/// finds one left behind.
pub const PROBE_BODY: &[u8] = b"earshot storage probe: the operator checks with it that the recorders' key can write here, then deletes it\n";

/// What the write probe found besides that the key can write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probed {
    /// Whether the key could read the object back (it then held exactly
    /// what was written); `false` for a write-only key.
    pub read_back: bool,
    /// Whether the key could delete it; when not, it stays until the
    /// policy's lifecycle rule (which covers the prefix) expires it.
    pub deleted: bool,
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
