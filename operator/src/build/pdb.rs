//! A PodDisruptionBudget so node drains take recorders down one at a time.

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{Validated, labels, meta};

/// The budget, only when there is more than one recorder to keep.
pub fn build_pdb(v: &Validated) -> Option<PodDisruptionBudget> {
    (v.policy.spec.recorder.replicas > 1).then(|| PodDisruptionBudget {
        metadata: meta(v),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(labels(&v.name)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    })
}
