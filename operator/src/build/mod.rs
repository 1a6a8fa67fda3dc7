//! Step 3 of the reconcile pipeline, **no client required**: the objects a
//! validated policy produces. Every `build_*` takes the validated input and
//! returns the object; none can fail.

mod configmap;
mod console;
mod pdb;
mod service;
mod servicemonitor;
mod statefulset;

pub use configmap::{build_configmap, recorder_config};
pub use console::{
    ALLOW_LOOPBACK_ENV, build_console_deployment, build_console_networkpolicy,
    build_console_service, console_expose_refused, console_exposed, console_hosts, console_name,
};
pub use earshot_contracts::names::{CONFIG_FILE, CONSOLE_HEALTH_PORT, CONSOLE_PORT};
pub use pdb::build_pdb;
pub use service::build_service;
pub use servicemonitor::{build_servicemonitor, servicemonitor_resource};
pub use statefulset::{RESTART_ANNOTATION, build_statefulset, restart_checksum};

use std::collections::BTreeMap;

use earshot_crds::{RecordingPolicy, StorageSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;

use crate::config::OperatorConfig;

/// A policy that passed validation, with everything the builders need.
#[derive(Debug, Clone)]
pub struct Validated {
    /// The policy.
    pub policy: RecordingPolicy,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Where recordings go (the policy's storage or the operator's default).
    pub storage: StorageSpec,
    /// The key prefix of its recordings, ending in `/`.
    pub prefix: String,
    /// The address the recorders advertise, when the policy sets one.
    pub advertised: Option<std::net::IpAddr>,
    /// Host network: the addresses of the nodes the recorders may run on
    /// (filled by the reconcile from the Nodes; empty in Pod mode).
    pub nodes: std::collections::BTreeMap<String, earshot_contracts::config::NodeAddresses>,
    /// The size of each recorder's spool volume, in bytes.
    pub spool_bytes: u64,
    /// The operator's own key for the store, when the platform gave one
    /// (a directory with `accessKeyId` and `secretAccessKey`).
    pub lifecycle_credentials: Option<std::path::PathBuf>,
    /// Operator settings.
    pub operator: OperatorConfig,
}

/// Name of every object of a policy: `earshot-<policy>`.
pub fn object_name(policy: &str) -> String {
    format!("earshot-{policy}")
}

/// Labels of every object of a policy; the StatefulSet selects on them.
pub fn labels(policy: &str) -> BTreeMap<String, String> {
    app_labels("earshot-recorder", policy)
}

/// Labels of a policy's objects for one app (`earshot-recorder`, `earshot-console`).
pub fn app_labels(app: &str, policy: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), app.to_owned()),
        ("app.kubernetes.io/instance".to_owned(), policy.to_owned()),
        (
            "app.kubernetes.io/managed-by".to_owned(),
            "earshot-operator".to_owned(),
        ),
        ("earshot.io/policy".to_owned(), policy.to_owned()),
    ])
}

/// Metadata with name, namespace, labels and the owner reference that lets
/// Kubernetes garbage-collect the object with its policy.
pub fn meta(v: &Validated) -> ObjectMeta {
    ObjectMeta {
        name: Some(object_name(&v.name)),
        namespace: Some(v.namespace.clone()),
        labels: Some(labels(&v.name)),
        owner_references: Some(vec![owner_reference(&v.policy)]),
        ..ObjectMeta::default()
    }
}

fn owner_reference(p: &RecordingPolicy) -> OwnerReference {
    OwnerReference {
        api_version: RecordingPolicy::api_version(&()).into_owned(),
        kind: RecordingPolicy::kind(&()).into_owned(),
        name: p.metadata.name.clone().unwrap_or_default(),
        uid: p.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}
