//! Why a reconcile did not finish, with the category that labels metrics
//! and Events and the reason that goes into status conditions. At the crate
//! root so the reconcile steps and the metrics both use it without either
//! depending on the other.

use crate::reconcile::validate::Invalid;
use crate::storage::s3::StorageError;

/// Why a reconcile did not finish.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An API call failed.
    #[error("failed to {what}: {source}")]
    Kube {
        /// What was attempted.
        what: String,
        /// The API error.
        source: kube::Error,
    },
    /// The policy cannot be reconciled as it is.
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// The credentials Secret is missing.
    #[error(
        "Secret {0} named in spec.storage.credentialsSecret does not exist in the policy's namespace"
    )]
    SecretMissing(String),
    /// A key is missing from the Secret.
    #[error("Secret {secret} has no key {key} (spec.storage.credentialsSecret)")]
    SecretKeyMissing {
        /// The Secret.
        secret: String,
        /// The key.
        key: String,
    },
    /// The announcement prompt's ConfigMap or key is missing.
    #[error(
        "ConfigMap {config_map} with key {key} named in spec.announcement.prompt does not exist in the policy's namespace"
    )]
    PromptMissing {
        /// The ConfigMap.
        config_map: String,
        /// The key.
        key: String,
    },
    /// The platform's own key for the store is not where the Helm values
    /// say (a platform problem, not the tenant's).
    #[error(
        "the operator's own key for this object store cannot be read from {0}: check storageEndpoints[].lifecycleCredentialsSecret in the operator's Helm values"
    )]
    OperatorKeyMissing(String),
    /// The object store refused or could not be reached.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// SIP over TLS names a Secret or CA ConfigMap that is not there.
    #[error(
        "spec.recorder.sip.tls: {0} in the policy's namespace; the recorders start once it does"
    )]
    TlsMissing(String),
    /// Host network in a namespace whose Pod Security level forbids it.
    #[error(
        "spec.recorder.network.mode Host needs host network, which this namespace's Pod Security level {0:?} (label pod-security.kubernetes.io/enforce) forbids: no recorder pod could start. Put host-mode policies in a namespace the platform labels privileged for media (docs/deploying.md), or use mode Pod"
    )]
    HostNetworkForbidden(String),
    /// Host-network ports another policy holds on the same nodes.
    #[error("{0}")]
    PortClash(String),
}

impl Error {
    /// Label for `earshot_operator_reconcile_errors_total{category}` and Events.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Kube { .. } => "kubernetes",
            Error::Invalid(_) => "invalid_spec",
            Error::SecretMissing(_) | Error::SecretKeyMissing { .. } => "secret",
            Error::PromptMissing { .. } => "prompt",
            Error::TlsMissing(_) => "secret",
            Error::OperatorKeyMissing(_) => "platform",
            Error::HostNetworkForbidden(_) | Error::PortClash(_) => "placement",
            Error::Storage(e) if e.transient() => "storage_unavailable",
            Error::Storage(_) => "storage",
        }
    }

    /// The condition reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Kube { .. } => "ApiError",
            Error::Invalid(i) => i.reason(),
            Error::SecretMissing(_) => "SecretMissing",
            Error::SecretKeyMissing { .. } => "SecretKeyMissing",
            Error::PromptMissing { .. } => "PromptMissing",
            Error::TlsMissing(_) => "TlsSecretMissing",
            Error::OperatorKeyMissing(_) => "OperatorKeyMissing",
            Error::HostNetworkForbidden(_) => "HostNetworkForbidden",
            Error::PortClash(_) => "PortClash",
            Error::Storage(StorageError::Denied { .. } | StorageError::ReadOnly { .. }) => {
                "AccessDenied"
            }
            Error::Storage(StorageError::Address(_)) => "InvalidStorageAddress",
            Error::Storage(StorageError::NoBucket(_)) => "BucketMissing",
            Error::Storage(StorageError::Unreachable { .. }) => "StorageUnreachable",
            Error::Storage(StorageError::NotEnforced(_)) => "LifecycleNotSupported",
            Error::Storage(_) => "StorageError",
        }
    }
}
