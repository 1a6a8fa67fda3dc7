//! The SIP Service peers send calls to (UDP and TCP) and the metrics port.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::statefulset::sip_port_name;
use super::{Validated, labels, meta};
use earshot_crds::NetworkMode;

/// The recorder Service.
pub fn build_service(v: &Validated) -> Service {
    let rec = &v.policy.spec.recorder;
    let mut ports: Vec<ServicePort> = rec
        .sip
        .transports
        .iter()
        .map(|t| {
            let (name, protocol) = sip_port_name(*t);
            ServicePort {
                name: Some(name.to_owned()),
                port: super::statefulset::sip_port_of(rec, *t),
                target_port: Some(IntOrString::Int(super::statefulset::sip_port_of(rec, *t))),
                protocol: Some(protocol.to_owned()),
                ..ServicePort::default()
            }
        })
        .collect();
    ports.push(ServicePort {
        name: Some("metrics".to_owned()),
        port: rec.http_port,
        target_port: Some(IntOrString::String("metrics".to_owned())),
        protocol: Some("TCP".to_owned()),
        ..ServicePort::default()
    });
    let spec = if v.policy.spec.recorder.network.mode == NetworkMode::Host {
        // Host network: peers reach each node's address directly, so the
        // Service only names them: headless, one DNS record per ready pod
        // and SRV records `_sip-udp._udp.<service>` naming each pod
        // (`<pod>.<service>.<namespace>.svc`), the StatefulSet's governing
        // Service. A PBX or trunk group lists the replicas' addresses (the
        // policy's status) or follows the SRV records.
        ServiceSpec {
            type_: Some("ClusterIP".to_owned()),
            cluster_ip: Some("None".to_owned()),
            selector: Some(labels(&v.name)),
            ports: Some(ports),
            ..ServiceSpec::default()
        }
    } else {
        ServiceSpec {
            type_: Some("ClusterIP".to_owned()),
            selector: Some(labels(&v.name)),
            ports: Some(ports),
            // A PBX keeps talking to one recorder; in-dialog requests follow
            // Record-Route to the pod itself.
            session_affinity: Some("ClientIP".to_owned()),
            ..ServiceSpec::default()
        }
    };
    Service {
        metadata: meta(v),
        spec: Some(spec),
        ..Service::default()
    }
}
