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
    /// The object stores policies may use (Helm `storageEndpoints`), besides
    /// `default_storage`'s. Empty, with no default storage: none, unless
    /// `allow_any_storage_endpoint`.
    pub storage_endpoints: Vec<AllowedEndpoint>,
    /// Accept any endpoint a policy names (Helm `allowAnyStorageEndpoint`),
    /// for single-tenant clusters: the operator still never uses a tenant's
    /// key, so only listed stores with the operator's own key get a
    /// lifecycle rule.
    pub allow_any_storage_endpoint: bool,
    /// The authenticating proxy in front of exposed consoles (Helm
    /// `console.proxy`). `None`: `spec.console.expose` is refused.
    pub console_proxy: Option<ConsoleProxy>,
}

/// An object store the platform lets policies use.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AllowedEndpoint {
    /// Its URL, as policies write it in `spec.storage.endpoint`.
    pub url: String,
    /// A directory holding the operator's own key for this store (files
    /// `accessKeyId` and `secretAccessKey`, a mounted Secret), read at
    /// each reconcile so a rotated key is picked up. With it the operator
    /// checks buckets and keeps lifecycle rules as itself; without it, it
    /// sets no lifecycle rule on this store (it never uses a tenant's key).
    #[serde(default)]
    pub lifecycle_credentials_dir: Option<std::path::PathBuf>,
}

/// Whether two endpoint URLs name the same store: scheme and host are
/// case-insensitive, a trailing `/` does not matter.
pub fn same_endpoint(a: &str, b: &str) -> bool {
    let norm = |u: &str| u.trim().trim_end_matches('/').to_ascii_lowercase();
    norm(a) == norm(b)
}

/// The platform's authenticating proxy, the only client of an exposed
/// console.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConsoleProxy {
    /// The header in which the proxy names the signed-in user (for the
    /// audit log), e.g. `X-Forwarded-User`. Trusted only from `sources`.
    pub identity_header: String,
    /// Addresses (CIDRs) the proxy connects from.
    pub sources: Vec<String>,
    /// NetworkPolicy: labels of the proxy's namespace.
    #[serde(default)]
    pub namespace_selector: std::collections::BTreeMap<String, String>,
    /// NetworkPolicy: labels of the proxy's pods.
    #[serde(default)]
    pub pod_selector: std::collections::BTreeMap<String, String>,
    /// Host names the console answers to besides its Service's names.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Whether an exposed console also admits connections from inside its
    /// pod (loopback: `kubectl port-forward`, or a sidecar proxy such as a
    /// service mesh's, which would then bring in everyone it admits).
    /// Anonymous either way: the identity header is believed only from
    /// `sources`. Default: refused.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_loopback: bool,
}

impl ConsoleProxy {
    /// Why consoles cannot be exposed behind this proxy, if they cannot:
    /// without `sources` the NetworkPolicy would have no peer (which
    /// Kubernetes reads as "everyone") and the console no proxy to believe.
    pub fn unusable(&self) -> Option<&'static str> {
        self.sources
            .iter()
            .all(|s| s.trim().is_empty())
            .then_some("console.proxy.sources is empty, so no address may reach an exposed console")
    }
}

impl Default for OperatorConfig {
    fn default() -> Self {
        Self {
            recorder_image: "ghcr.io/earshot/earshot-recorder:0.1.0".to_owned(),
            max_retention_days: 365,
            default_storage: None,
            // Four hours: the longest calls platforms usually see, so a rollout never cuts one.
            termination_grace_seconds: 4 * 3600,
            storage_endpoints: Vec::new(),
            allow_any_storage_endpoint: false,
            console_proxy: None,
        }
    }
}

/// The server-side apply field manager of every write.
pub const FIELD_MANAGER: &str = "earshot-operator";
