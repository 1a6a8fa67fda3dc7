//! The operator's own settings (Helm values → flags/environment).

use earshot_crds::StorageSpec;

/// Settings every reconcile uses.
#[derive(Debug, Clone, PartialEq)]
pub struct OperatorConfig {
    /// Recorder container image, e.g. `ghcr.io/earshot/recorder:0.1.0`.
    pub recorder_image: String,
    /// Largest retention the platform allows (policies above it are refused).
    pub max_retention_days: i32,
    /// Storage for policies without `spec.storage`.
    pub default_storage: Option<StorageSpec>,
    /// How long a recorder pod may take to let its calls finish on shutdown.
    pub termination_grace_seconds: i64,
}

impl Default for OperatorConfig {
    fn default() -> Self {
        Self {
            recorder_image: "ghcr.io/earshot/earshot-recorder:0.1.0".to_owned(),
            max_retention_days: 365,
            default_storage: None,
            // Four hours: the longest calls platforms usually see, so a rollout never cuts one.
            termination_grace_seconds: 4 * 3600,
        }
    }
}

/// The server-side apply field manager of every write.
pub const FIELD_MANAGER: &str = "earshot-operator";
