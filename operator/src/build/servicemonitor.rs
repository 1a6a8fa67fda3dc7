//! A Prometheus Operator ServiceMonitor for the recorders' metrics; applied
//! only when the cluster has that CRD. k8s-openapi has no type for it, so
//! the few fields used are typed here: a misspelled one does not compile.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use serde::Serialize;

use super::{Validated, labels, meta};

/// The ServiceMonitor API (monitoring.coreos.com/v1).
pub fn servicemonitor_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("monitoring.coreos.com", "v1", "ServiceMonitor"),
        "servicemonitors",
    )
}

/// `spec` of a ServiceMonitor, as far as Earshot sets it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ServiceMonitorSpec {
    selector: LabelSelector,
    endpoints: Vec<Endpoint>,
}

/// One scraped endpoint.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Endpoint {
    port: String,
    path: String,
    interval: String,
}

/// The ServiceMonitor scraping the recorder Service's `metrics` port.
pub fn build_servicemonitor(v: &Validated) -> DynamicObject {
    let mut obj = DynamicObject::new(&super::object_name(&v.name), &servicemonitor_resource())
        .within(&v.namespace);
    obj.metadata = meta(v);
    let spec = ServiceMonitorSpec {
        selector: LabelSelector {
            match_labels: Some(labels(&v.name)),
            ..LabelSelector::default()
        },
        endpoints: vec![Endpoint {
            port: "metrics".to_owned(),
            path: "/metrics".to_owned(),
            interval: "30s".to_owned(),
        }],
    };
    // A struct of strings and string maps always serialises.
    obj.data = serde_json::json!({ "spec": serde_json::to_value(spec).expect("spec serialises") });
    obj
}
