//! `earshot-operator render`: the objects a policy file produces, without a
//! cluster, for GitOps review and tests. A policy the API server would refuse
//! is refused here with the same message.

use earshot_crds::validate::{PolicyError, PolicyValidator};
use serde::Serialize;

use crate::build::{
    build_configmap, build_console_deployment, build_console_networkpolicy, build_console_service,
    build_pdb, build_service, build_statefulset,
};
use crate::config::OperatorConfig;
use crate::reconcile::validate::{Invalid, validate};

/// Why a policy file renders nothing.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// The API server would refuse it.
    #[error(transparent)]
    Admission(#[from] PolicyError),
    /// The operator would refuse it.
    #[error("{0}")]
    Invalid(#[from] Invalid),
}

fn doc<T: Serialize>(out: &mut String, obj: &T) {
    out.push_str("---\n");
    // Kubernetes objects serialise to YAML without error.
    out.push_str(&serde_yaml::to_string(obj).expect("object serialises"));
}

/// Every object of the policy in `text`, as a multi-document YAML stream.
pub fn render(text: &str, operator: &OperatorConfig) -> Result<String, RenderError> {
    let policy = PolicyValidator::new().parse(text)?;
    let v = validate(&policy, operator)?;
    let mut out = String::new();
    doc(&mut out, &build_configmap(&v));
    doc(&mut out, &build_statefulset(&v));
    doc(&mut out, &build_service(&v));
    if let Some(pdb) = build_pdb(&v) {
        doc(&mut out, &pdb);
    }
    if let Some(d) = build_console_deployment(&v) {
        doc(&mut out, &d);
    }
    if let Some(s) = build_console_service(&v) {
        doc(&mut out, &s);
    }
    if let Some(n) = build_console_networkpolicy(&v) {
        doc(&mut out, &n);
    }
    Ok(out)
}
