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
}

impl Invalid {
    /// The condition reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Invalid::Metadata(_) => "InvalidMetadata",
            Invalid::RetentionAboveMaximum { .. } => "RetentionAboveMaximum",
            Invalid::NoStorage => "NoStorage",
            Invalid::AdvertisedAddress(_) => "InvalidAdvertisedAddress",
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
    Ok(Validated {
        advertised,
        policy: policy.clone(),
        namespace,
        name,
        storage,
        prefix,
        operator: operator.clone(),
    })
}
