//! A Prometheus Operator ServiceMonitor for the recorders' metrics; applied
//! only when the cluster has that CRD.

use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::json;

use super::{Validated, labels, meta};

/// The ServiceMonitor API (monitoring.coreos.com/v1).
pub fn servicemonitor_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("monitoring.coreos.com", "v1", "ServiceMonitor"),
        "servicemonitors",
    )
}

/// The ServiceMonitor scraping the recorder Service's `metrics` port.
pub fn build_servicemonitor(v: &Validated) -> DynamicObject {
    let mut obj = DynamicObject::new(&super::object_name(&v.name), &servicemonitor_resource())
        .within(&v.namespace);
    obj.metadata = meta(v);
    obj.data = json!({
        "spec": {
            "selector": {"matchLabels": labels(&v.name)},
            "endpoints": [{"port": "metrics", "path": "/metrics", "interval": "30s"}],
        }
    });
    obj
}
