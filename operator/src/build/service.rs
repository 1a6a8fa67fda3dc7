//! The SIP Service peers send calls to (UDP and TCP) and the metrics port.

use earshot_crds::SipTransport;
use k8s_openapi::api::core::v1::Service;
use serde_json::json;

use super::{Validated, labels, meta};

/// The recorder Service.
pub fn build_service(v: &Validated) -> Service {
    let rec = &v.policy.spec.recorder;
    let mut ports = Vec::new();
    for t in &rec.sip.transports {
        let (n, p) = match t {
            SipTransport::UDP => ("sip-udp", "UDP"),
            SipTransport::TCP => ("sip-tcp", "TCP"),
        };
        ports.push(
            json!({"name": n, "port": rec.sip.port, "targetPort": rec.sip.port, "protocol": p}),
        );
    }
    ports
        .push(json!({"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}));
    let svc = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta(v),
        "spec": {
            "type": "ClusterIP",
            "selector": labels(&v.name),
            "ports": ports,
            // A PBX keeps talking to one recorder; in-dialog requests follow
            // Record-Route to the pod itself.
            "sessionAffinity": "ClientIP",
        },
    });
    serde_json::from_value(svc).expect("service shape")
}
