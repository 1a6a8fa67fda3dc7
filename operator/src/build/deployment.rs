//! The recorder workload. Rollouts never cut a live call: a new pod starts
//! before an old one stops (maxUnavailable 0), the old one gets SIGTERM,
//! refuses new calls with 503 and lets its calls finish and upload within the
//! termination grace period. Config changes do not touch the pod template
//! (the recorder reloads its mounted file), so they roll nothing.

use earshot_crds::{NetworkMode, SipTransport};
use k8s_openapi::api::apps::v1::Deployment;
use serde_json::json;

use super::configmap::{CONFIG_FILE, PROMPT_DIR, SPOOL_DIR};
use super::{Validated, labels, meta, object_name};

/// The recorder Deployment.
pub fn build_deployment(v: &Validated) -> Deployment {
    let rec = &v.policy.spec.recorder;
    let host = rec.network.mode == NetworkMode::Host;
    let name = object_name(&v.name);
    let selector = labels(&v.name);
    let advertised_from = if host {
        "status.hostIP"
    } else {
        "status.podIP"
    };
    let secret = &v.storage.credentials_secret;
    let mut ports = Vec::new();
    for t in &rec.sip.transports {
        let (n, p) = match t {
            SipTransport::UDP => ("sip-udp", "UDP"),
            SipTransport::TCP => ("sip-tcp", "TCP"),
        };
        ports.push(json!({"name": n, "containerPort": rec.sip.port, "protocol": p}));
    }
    ports.push(json!({"name": "metrics", "containerPort": 9090, "protocol": "TCP"}));
    let probe = |path: &str, period: i32| json!({"httpGet": {"path": path, "port": "metrics"}, "periodSeconds": period, "timeoutSeconds": 2, "failureThreshold": 3});
    let mut pod_spec = json!({
        "terminationGracePeriodSeconds": v.operator.termination_grace_seconds,
        "securityContext": {
            "runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532, "fsGroup": 65532,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [{
            "name": "recorder",
            "image": v.operator.recorder_image,
            "args": ["--config", format!("/etc/earshot/{CONFIG_FILE}"), "--log-json"],
            "env": [
                {"name": "EARSHOT_ADVERTISED_ADDRESS", "valueFrom": {"fieldRef": {"fieldPath": advertised_from}}},
                {"name": "AWS_ACCESS_KEY_ID", "valueFrom": {"secretKeyRef": {"name": secret.name, "key": secret.access_key_id_key}}},
                {"name": "AWS_SECRET_ACCESS_KEY", "valueFrom": {"secretKeyRef": {"name": secret.name, "key": secret.secret_access_key_key}}},
            ],
            "ports": ports,
            "readinessProbe": probe("/readyz", 5),
            "livenessProbe": probe("/healthz", 10),
            "resources": rec.resources.clone().unwrap_or_default(),
            "securityContext": {
                "allowPrivilegeEscalation": false,
                "readOnlyRootFilesystem": true,
                "capabilities": {"drop": ["ALL"]},
            },
            "volumeMounts": [
                {"name": "config", "mountPath": "/etc/earshot", "readOnly": true},
                {"name": "spool", "mountPath": SPOOL_DIR},
            ],
        }],
        "volumes": [
            {"name": "config", "configMap": {"name": name}},
            {"name": "spool", "emptyDir": {"sizeLimit": v.operator.spool_size}},
        ],
    });
    if let Some(p) = v.policy.spec.announcement.prompt_in_use() {
        // Only the prompt's key, not the whole ConfigMap.
        pod_spec["volumes"]
            .as_array_mut()
            .expect("volumes")
            .push(json!({
                "name": "announcement",
                "configMap": {"name": p.config_map, "items": [{"key": p.key, "path": p.key}]},
            }));
        pod_spec["containers"][0]["volumeMounts"]
            .as_array_mut()
            .expect("mounts")
            .push(json!({"name": "announcement", "mountPath": PROMPT_DIR, "readOnly": true}));
    }
    if host {
        pod_spec["hostNetwork"] = json!(true);
        pod_spec["dnsPolicy"] = json!("ClusterFirstWithHostNet");
        // Two recorders cannot share a node's ports: one per node, so a
        // rollout's new pod starts on another node while the old one drains.
        pod_spec["affinity"] = json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": selector}, "topologyKey": "kubernetes.io/hostname"}
        ]}});
    }
    let deployment = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta(v),
        "spec": {
            "replicas": rec.replicas,
            "selector": {"matchLabels": selector},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": selector},
                "spec": pod_spec,
            },
        },
    });
    // The shape above is fixed and matches apps/v1; the golden tests pin it.
    serde_json::from_value(deployment).expect("deployment shape")
}
