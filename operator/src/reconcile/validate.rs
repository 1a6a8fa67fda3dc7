//! Step 1 of the reconcile pipeline, **no client required**: what the API
//! server cannot check — the platform's maximum retention, where recordings
//! go when the policy names no storage — turned into a [`Validated`] policy
//! or a reason a platform engineer can act on. An invalid policy waits for a
//! change; it is not retried.

use earshot_crds::RecordingPolicy;

use crate::build::Validated;
use crate::config::OperatorConfig;

/// Why a policy cannot be reconciled as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    /// `metadata.name` or `metadata.namespace` missing (only in files, never from the API).
    #[error("policy has no {0}")]
    Metadata(&'static str),
    /// Retention above what the platform allows.
    #[error(
        "spec.retentionDays is {requested} but this platform keeps recordings at most {maximum} days; lower it to {maximum} or less"
    )]
    RetentionAboveMaximum {
        /// What the policy asks.
        requested: i32,
        /// The operator's maximum.
        maximum: i32,
    },
    /// Neither the policy nor the operator names a store.
    #[error(
        "spec.storage is not set and the operator has no default storage; set spec.storage (endpoint, bucket, credentialsSecret)"
    )]
    NoStorage,
    /// An advertised address that is not an IP address (the API server's
    /// CEL rule refuses these; a policy file may not have been through it).
    #[error("spec.recorder.network.advertisedAddress {0:?} is not an IP address")]
    AdvertisedAddress(String),
    /// A spool too small to hold a call or two and what waits for the store.
    #[error(
        "spec.recorder.spool.size {0:?} is too small or not a size; give at least 1Gi (e.g. 10Gi)"
    )]
    SpoolSize(String),
}

/// Bytes of a volume size as the policy writes it (`512Mi`, `10Gi`, `2Ti`).
pub fn size_bytes(s: &str) -> Option<u64> {
    let (digits, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit())?);
    let n: u64 = digits.parse().ok()?;
    let scale: u64 = match unit {
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(scale)
}

/// The spool limit for a volume of `volume` bytes: new recordings are
/// refused above it, so what is being recorded still fits, with the
/// sidecars and the file system's own share: 10% of the volume, at least
/// 256 MiB, is kept free.
pub fn spool_limit(volume: u64) -> u64 {
    volume.saturating_sub((volume / 10).max(256 << 20))
}

impl Invalid {
    /// The condition reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Invalid::Metadata(_) => "InvalidMetadata",
            Invalid::RetentionAboveMaximum { .. } => "RetentionAboveMaximum",
            Invalid::NoStorage => "NoStorage",
            Invalid::AdvertisedAddress(_) => "InvalidAdvertisedAddress",
            Invalid::SpoolSize(_) => "SpoolTooSmall",
        }
    }
}

/// Checks a policy against the operator's settings.
pub fn validate(policy: &RecordingPolicy, operator: &OperatorConfig) -> Result<Validated, Invalid> {
    let name = policy
        .metadata
        .name
        .clone()
        .ok_or(Invalid::Metadata("metadata.name"))?;
    let namespace = policy
        .metadata
        .namespace
        .clone()
        .ok_or(Invalid::Metadata("metadata.namespace"))?;
    let requested = policy.spec.retention_days;
    if requested > operator.max_retention_days {
        return Err(Invalid::RetentionAboveMaximum {
            requested,
            maximum: operator.max_retention_days,
        });
    }
    let storage = policy
        .spec
        .storage
        .clone()
        .or_else(|| operator.default_storage.clone())
        .ok_or(Invalid::NoStorage)?;
    let prefix = storage
        .prefix
        .clone()
        .unwrap_or_else(|| format!("{namespace}/{name}/"));
    let advertised = match &policy.spec.recorder.network.advertised_address {
        Some(a) => Some(
            a.parse()
                .map_err(|_| Invalid::AdvertisedAddress(a.clone()))?,
        ),
        None => None,
    };
    let spool = &policy.spec.recorder.spool.size;
    let spool_bytes = size_bytes(spool)
        .filter(|&b| b >= 1 << 30)
        .ok_or_else(|| Invalid::SpoolSize(spool.clone()))?;
    Ok(Validated {
        advertised,
        spool_bytes,
        policy: policy.clone(),
        namespace,
        name,
        storage,
        prefix,
        operator: operator.clone(),
    })
}
