//! A PodDisruptionBudget so node drains take recorders down one at a time.

use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use serde_json::json;

use super::{Validated, labels, meta};

/// The budget, only when there is more than one recorder to keep.
pub fn build_pdb(v: &Validated) -> Option<PodDisruptionBudget> {
    (v.policy.spec.recorder.replicas > 1).then(|| {
        let pdb = json!({
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": meta(v),
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": labels(&v.name)}},
        });
        serde_json::from_value(pdb).expect("pdb shape")
    })
}
