//! Host network, read from the cluster (client): the addresses of the
//! nodes a policy's recorders may run on, what its namespace's Pod Security
//! level allows, the ports other host-mode policies already hold on the
//! same nodes, and each recorder pod as the status reports it.
//!
//! Per node, two addresses: the **internal** one (the Node's InternalIP)
//! for peers in the cluster's networks, and the **external** one for peers
//! outside it — the node's `earshot.io/external-address` annotation (the
//! platform sets it where the public address is not on the Node, e.g. a
//! 1:1 NAT) or else its ExternalIP. The recorder picks its node's entry.

use std::collections::BTreeMap;
use std::net::IpAddr;

use earshot_contracts::config::NodeAddresses;
use earshot_crds::{NetworkMode, Placement, RecordingPolicy, ReplicaStatus};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};

use super::Error;
use crate::build::Validated;

/// The Node annotation with the address peers outside the cluster reach it on.
pub const EXTERNAL_ADDRESS_ANNOTATION: &str = "earshot.io/external-address";

/// The namespace label Pod Security admission enforces.
pub const POD_SECURITY_ENFORCE: &str = "pod-security.kubernetes.io/enforce";

fn kube(what: &str) -> impl FnOnce(kube::Error) -> Error + '_ {
    move |source| Error::Kube {
        what: what.to_owned(),
        source,
    }
}

/// A Node's addresses as recorders use them.
pub fn node_addresses(node: &Node) -> NodeAddresses {
    let of = |kind: &str| -> Option<IpAddr> {
        node.status
            .as_ref()?
            .addresses
            .as_ref()?
            .iter()
            .filter(|a| a.type_ == kind)
            .find_map(|a| a.address.parse().ok())
    };
    let annotated = node
        .annotations()
        .get(EXTERNAL_ADDRESS_ANNOTATION)
        .and_then(|a| a.trim().parse().ok());
    NodeAddresses {
        internal: of("InternalIP"),
        external: annotated.or_else(|| of("ExternalIP")),
    }
}

/// A change of what recorders take from a Node (its labels for placement,
/// its addresses): the operator reconciles every policy on one.
pub fn node_fingerprint(node: &Node) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    node.name_any().hash(&mut h);
    node.labels().hash(&mut h);
    let a = node_addresses(node);
    (a.internal, a.external).hash(&mut h);
    Some(h.finish())
}

/// The label selector of a placement's node selector.
fn selector(placement: &Placement) -> String {
    placement
        .node_selector
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The addresses of every node the policy's recorders may run on (its
/// node selector; taints and further affinity are left to the scheduler:
/// an extra entry costs nothing).
pub async fn nodes(
    client: &Client,
    placement: &Placement,
) -> Result<BTreeMap<String, NodeAddresses>, Error> {
    let api: Api<Node> = Api::all(client.clone());
    let list = api
        .list(&ListParams::default().labels(&selector(placement)))
        .await
        .map_err(kube("list nodes"))?;
    Ok(list
        .items
        .iter()
        .map(|n| (n.name_any(), node_addresses(n)))
        .collect())
}

/// Whether the namespace's enforced Pod Security level forbids host
/// network (`baseline` and `restricted` do; `privileged` or no label allow it).
pub async fn host_network_forbidden(client: &Client, ns: &str) -> Result<Option<String>, Error> {
    let api: Api<Namespace> = Api::all(client.clone());
    let n = api.get(ns).await.map_err(kube("get the namespace"))?;
    Ok(n.labels()
        .get(POD_SECURITY_ENFORCE)
        .filter(|l| matches!(l.as_str(), "baseline" | "restricted"))
        .cloned())
}

/// The node ports a host-mode policy's recorders hold: SIP, HTTP, RTP.
fn held_ports(p: &RecordingPolicy) -> Vec<(i32, i32, &'static str)> {
    let r = &p.spec.recorder;
    let mut held = vec![
        (r.sip.port, r.sip.port, "SIP"),
        (r.http_port, r.http_port, "HTTP"),
        (r.rtp_ports.min, r.rtp_ports.max, "RTP"),
    ];
    if let Some(t) = &r.sip.tls {
        held.push((t.port, t.port, "SIP TLS"));
    }
    held
}

/// Whether two placements can put pods on the same node: unless their node
/// selectors ask different values of one label, assume they can.
fn may_share_nodes(a: &Placement, b: &Placement) -> bool {
    !a.node_selector
        .iter()
        .any(|(k, v)| b.node_selector.get(k).is_some_and(|w| w != v))
}

/// The first clash of `policy`'s node ports with an older host-mode policy
/// that may share its nodes: the older one keeps its ports.
pub fn clash(policy: &RecordingPolicy, others: &[RecordingPolicy]) -> Option<String> {
    if policy.spec.recorder.network.mode != NetworkMode::Host {
        return None;
    }
    let age = |p: &RecordingPolicy| {
        (
            p.metadata.creation_timestamp.clone().map(|t| t.0),
            p.namespace().unwrap_or_default(),
            p.name_any(),
        )
    };
    let mine = age(policy);
    for other in others {
        let theirs = age(other);
        if theirs == mine
            || other.spec.recorder.network.mode != NetworkMode::Host
            || theirs > mine
            || !may_share_nodes(
                &policy.spec.recorder.placement,
                &other.spec.recorder.placement,
            )
        {
            continue;
        }
        for (a_min, a_max, a_kind) in held_ports(policy) {
            for (b_min, b_max, b_kind) in held_ports(other) {
                if a_min <= b_max && b_min <= a_max {
                    return Some(format!(
                        "its {a_kind} port(s) {a_min}-{a_max} clash with the {b_kind} port(s) {b_min}-{b_max} of host-network policy {}/{}, which may run on the same nodes; give this policy other ports (spec.recorder.sip.port, httpPort, rtpPorts) or nodes of its own (spec.recorder.placement.nodeSelector)",
                        theirs.1, theirs.2
                    ));
                }
            }
        }
    }
    None
}

/// Pod network: the peers whose sources lie outside the networks inside
/// the cluster (`internalNetworks`, default the private ranges). They
/// cannot reach a pod's address: such a policy wants host network.
pub fn peers_outside(policy: &RecordingPolicy) -> Vec<String> {
    let rec = &policy.spec.recorder;
    if rec.network.mode != NetworkMode::Pod {
        return Vec::new();
    }
    let parse = |v: &[String]| -> Vec<earshot_contracts::IpNet> {
        v.iter()
            .filter_map(|n| earshot_contracts::IpNet::parse(n))
            .collect()
    };
    let inside = if rec.network.internal_networks.is_empty() {
        earshot_contracts::config::DEFAULT_INTERNAL_NETWORKS
            .iter()
            .filter_map(|n| earshot_contracts::IpNet::parse(n))
            .collect()
    } else {
        parse(&rec.network.internal_networks)
    };
    rec.peers
        .iter()
        .filter(|p| {
            parse(&p.sources)
                .iter()
                .any(|n| !inside.iter().any(|i| i.covers(n)))
        })
        .map(|p| p.name.clone())
        .collect()
}

/// Every policy in the cluster (for the clash check).
pub async fn all_policies(client: &Client) -> Result<Vec<RecordingPolicy>, Error> {
    let api: Api<RecordingPolicy> = Api::all(client.clone());
    Ok(api
        .list(&ListParams::default())
        .await
        .map_err(kube("list recording policies"))?
        .items)
}

/// Each recorder pod of the policy, with the addresses it advertises.
pub async fn replicas(client: &Client, v: &Validated) -> Result<Vec<ReplicaStatus>, Error> {
    let api: Api<Pod> = Api::namespaced(client.clone(), &v.namespace);
    let pods = api
        .list(&ListParams::default().labels(&format!(
            "app.kubernetes.io/name=earshot-recorder,earshot.io/policy={}",
            v.name
        )))
        .await
        .map_err(kube("list the recorder pods"))?;
    let mut out: Vec<ReplicaStatus> = pods.items.iter().map(|p| replica(p, v)).collect();
    out.sort_by(|a, b| a.pod.cmp(&b.pod));
    if v.policy.spec.recorder.network.kernel_fast_path != earshot_crds::KernelFastPath::Off {
        for r in out.iter_mut().filter(|r| r.ready) {
            let Some(ip) = r.internal_address.clone() else {
                continue;
            };
            let relay = relay_of(&ip, v.policy.spec.recorder.http_port).await;
            r.summary.push_str(&format!(" relay={relay}"));
            r.relay = Some(relay.to_owned());
        }
    }
    Ok(out)
}

/// What relays a recorder's established streams, from its own metrics
/// (`earshot_kernel_fast_path`): the recorder has no API access, so this is
/// where it says so.
async fn relay_of(ip: &str, http_port: i32) -> &'static str {
    let url = format!("http://{}/metrics", join_host_port(ip, http_port));
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(2))
        .build();
    let Ok(client) = client else {
        return "unknown";
    };
    let Ok(text) = async { client.get(&url).send().await?.text().await }.await else {
        return "unknown";
    };
    relay_from_metrics(&text)
}

fn join_host_port(ip: &str, port: i32) -> String {
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

/// `kernel`, `userspace` or `unknown`, from a recorder's `/metrics` text.
pub fn relay_from_metrics(text: &str) -> &'static str {
    let on = |state: &str| {
        text.lines().any(|l| {
            l.strip_prefix(&format!("earshot_kernel_fast_path{{state=\"{state}\"}} "))
                .is_some_and(|v| v.trim() == "1")
        })
    };
    if on("active") {
        "kernel"
    } else if on("unavailable") || on("off") {
        "userspace"
    } else {
        "unknown"
    }
}

/// One pod as the status reports it.
pub fn replica(pod: &Pod, v: &Validated) -> ReplicaStatus {
    let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
    let status = pod.status.as_ref();
    // A pod being deleted (drained, rolled) takes no new calls.
    let ready = pod.metadata.deletion_timestamp.is_none()
        && status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    let host = v.policy.spec.recorder.network.mode == NetworkMode::Host;
    let fixed = v.advertised.map(|a| a.to_string());
    let (internal, external) = if host {
        let entry = node.as_ref().and_then(|n| v.nodes.get(n));
        (
            fixed
                .clone()
                .or_else(|| entry.and_then(|e| e.internal).map(|a| a.to_string()))
                .or_else(|| status.and_then(|s| s.host_ip.clone())),
            entry
                .and_then(|e| e.external)
                .map(|a| a.to_string())
                .filter(|e| Some(e) != fixed.as_ref()),
        )
    } else {
        (
            fixed.or_else(|| status.and_then(|s| s.pod_ip.clone())),
            None,
        )
    };
    let name = pod.name_any();
    let summary = format!(
        "{name}@{} {}{} {}",
        node.as_deref().unwrap_or("-"),
        internal.as_deref().unwrap_or("-"),
        external
            .as_deref()
            .map(|e| format!("/{e}"))
            .unwrap_or_default(),
        if ready { "ready" } else { "not-ready" }
    );
    ReplicaStatus {
        pod: name,
        node,
        internal_address: internal,
        external_address: external,
        ready,
        relay: None,
        summary,
    }
}

/// Where peers send SIP. Pod network: the Service's name. Host network:
/// each ready replica's address, external where it has one (peers that
/// reach it are the reason for host network), comma-separated.
pub fn service_address(v: &Validated, replicas: &[ReplicaStatus]) -> Option<String> {
    let port = v.policy.spec.recorder.sip.port;
    if v.policy.spec.recorder.network.mode != NetworkMode::Host {
        return Some(format!(
            "{}.{}.svc:{port}",
            crate::build::object_name(&v.name),
            v.namespace
        ));
    }
    let addrs: Vec<String> = replicas
        .iter()
        .filter(|r| r.ready)
        .filter_map(|r| r.external_address.clone().or(r.internal_address.clone()))
        .map(|a| match a.parse::<IpAddr>() {
            Ok(IpAddr::V6(_)) => format!("[{a}]:{port}"),
            _ => format!("{a}:{port}"),
        })
        .collect();
    (!addrs.is_empty()).then(|| addrs.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeAddress, NodeStatus};

    fn node(name: &str, addrs: &[(&str, &str)], annotation: Option<&str>) -> Node {
        let mut n = Node {
            status: Some(NodeStatus {
                addresses: Some(
                    addrs
                        .iter()
                        .map(|(t, a)| NodeAddress {
                            type_: (*t).into(),
                            address: (*a).into(),
                        })
                        .collect(),
                ),
                ..NodeStatus::default()
            }),
            ..Node::default()
        };
        n.metadata.name = Some(name.into());
        if let Some(a) = annotation {
            n.annotations_mut()
                .insert(EXTERNAL_ADDRESS_ANNOTATION.into(), a.into());
        }
        n
    }

    #[test]
    fn the_annotation_wins_over_external_ip() {
        let a = node_addresses(&node(
            "n1",
            &[
                ("Hostname", "n1"),
                ("InternalIP", "10.0.0.5"),
                ("ExternalIP", "198.51.100.5"),
            ],
            None,
        ));
        assert_eq!(a.internal, Some("10.0.0.5".parse().unwrap()));
        assert_eq!(a.external, Some("198.51.100.5".parse().unwrap()));
        let b = node_addresses(&node(
            "n1",
            &[("InternalIP", "10.0.0.5"), ("ExternalIP", "198.51.100.5")],
            Some("203.0.113.7"),
        ));
        assert_eq!(b.external, Some("203.0.113.7".parse().unwrap()));
        let none = node_addresses(&node("n1", &[("InternalIP", "10.0.0.5")], Some("nonsense")));
        assert_eq!(none.external, None);
    }

    fn host_policy(name: &str, created: i64, yaml_recorder: &str) -> RecordingPolicy {
        let text = format!(
            "apiVersion: earshot.io/v1alpha1\nkind: RecordingPolicy\nmetadata: {{ name: {name}, namespace: t }}\nspec:\n  retentionDays: 30\n  recorder:\n    network: {{ mode: Host }}\n{yaml_recorder}"
        );
        let mut p: RecordingPolicy = serde_yaml::from_str(&text).unwrap();
        p.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::from_second(created).unwrap(),
        ));
        p
    }

    #[test]
    fn pod_mode_peers_outside_the_private_ranges_are_named() {
        let mut p = host_policy(
            "p",
            1,
            "    peers:\n      - { name: pbx, sources: [\"10.20.0.0/24\"], nextHop: \"a:5060\" }\n      - { name: trunk, sources: [\"198.51.100.0/28\"], nextHop: \"b:5060\" }\n",
        );
        assert!(
            peers_outside(&p).is_empty(),
            "host network: nothing to warn"
        );
        p.spec.recorder.network.mode = NetworkMode::Pod;
        assert_eq!(peers_outside(&p), vec!["trunk".to_owned()]);
        p.spec.recorder.network.internal_networks =
            vec!["198.51.100.0/24".into(), "10.20.0.0/16".into()];
        assert!(peers_outside(&p).is_empty());
    }

    #[test]
    fn the_younger_of_two_host_policies_on_shared_nodes_is_refused() {
        let old = host_policy("old", 100, "");
        let young = host_policy("young", 200, "    httpPort: 9091\n");
        let all = [old.clone(), young.clone()];
        assert_eq!(clash(&old, &all), None, "the older keeps its ports");
        let why = clash(&young, &all).expect("same SIP port on the same nodes");
        assert!(why.contains("SIP port(s) 5060-5060"), "{why}");
        assert!(why.contains("t/old"), "{why}");
        // Other ports everywhere: no clash.
        let apart = host_policy(
            "apart",
            300,
            "    httpPort: 9092\n    sip: { port: 5070 }\n    rtpPorts: { min: 21000, max: 21999 }\n",
        );
        assert_eq!(clash(&apart, &[old.clone(), apart.clone()]), None);
        // Same ports on other nodes: no clash.
        let pool_a = host_policy("a", 400, "    placement: { nodeSelector: { pool: a } }\n");
        let pool_b = host_policy("b", 500, "    placement: { nodeSelector: { pool: b } }\n");
        assert_eq!(clash(&pool_b, &[pool_a.clone(), pool_b.clone()]), None);
        // The RTP range overlapping another's HTTP port.
        let rtp = host_policy(
            "rtp",
            600,
            "    httpPort: 9093\n    sip: { port: 5080 }\n    rtpPorts: { min: 9000, max: 9999 }\n",
        );
        let why = clash(&rtp, &[old, rtp.clone()]).expect("9090 inside 9000-9999");
        assert!(
            why.contains("RTP port(s) 9000-9999 clash with the HTTP"),
            "{why}"
        );
    }
}

#[cfg(test)]
mod relay_tests {
    use super::relay_from_metrics;

    #[test]
    fn the_relay_is_read_from_the_recorders_own_metric() {
        let m = |active: u8, unavailable: u8, off: u8| {
            format!(
                "# TYPE earshot_kernel_fast_path gauge\nearshot_kernel_fast_path{{state=\"active\"}} {active}\nearshot_kernel_fast_path{{state=\"unavailable\"}} {unavailable}\nearshot_kernel_fast_path{{state=\"off\"}} {off}\n"
            )
        };
        assert_eq!(relay_from_metrics(&m(1, 0, 0)), "kernel");
        assert_eq!(relay_from_metrics(&m(0, 1, 0)), "userspace");
        assert_eq!(relay_from_metrics(&m(0, 0, 1)), "userspace");
        assert_eq!(relay_from_metrics("earshot_calls_active 0\n"), "unknown");
    }
}
