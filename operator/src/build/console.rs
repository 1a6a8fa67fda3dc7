//! The tenant's recordings console: one pod running `earshot-console serve`
//! from the recorder image, reading only the policy's prefix with the
//! read-only key the policy names. By default its page listens on loopback
//! inside the pod (reached with `kubectl port-forward`); `expose` puts it
//! behind a Service for an ingress and an authenticating proxy. Health and
//! metrics listen on the pod network either way.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::json;

use super::{Validated, app_labels, meta, object_name};

/// Port of the console's page.
pub const CONSOLE_PORT: u16 = 8080;
/// Port of its /healthz and /metrics.
pub const CONSOLE_HEALTH_PORT: u16 = 8081;

/// Name of the console's Deployment and Service: `earshot-<policy>-console`.
pub fn console_name(policy: &str) -> String {
    format!("{}-console", object_name(policy))
}

/// Labels of the console pod (not matched by the recorder's selector).
pub fn console_labels(policy: &str) -> BTreeMap<String, String> {
    app_labels("earshot-console", policy)
}

fn console_meta(v: &Validated) -> ObjectMeta {
    ObjectMeta {
        name: Some(console_name(&v.name)),
        labels: Some(console_labels(&v.name)),
        ..meta(v)
    }
}

/// The console Deployment, when the policy enables it.
pub fn build_console_deployment(v: &Validated) -> Option<Deployment> {
    let c = v.policy.spec.console.as_ref().filter(|c| c.enabled)?;
    let s = &v.storage;
    let listen = if c.expose { "0.0.0.0" } else { "127.0.0.1" };
    let mut env = vec![
        json!({"name": "EARSHOT_CONSOLE_ENDPOINT", "value": s.endpoint}),
        json!({"name": "EARSHOT_CONSOLE_BUCKET", "value": s.bucket}),
        json!({"name": "EARSHOT_CONSOLE_REGION", "value": s.region}),
        json!({"name": "EARSHOT_CONSOLE_PREFIX", "value": v.prefix}),
        json!({"name": "EARSHOT_CONSOLE_LISTEN", "value": format!("{listen}:{CONSOLE_PORT}")}),
        json!({"name": "EARSHOT_CONSOLE_HEALTH_LISTEN", "value": format!("0.0.0.0:{CONSOLE_HEALTH_PORT}")}),
        json!({"name": "AWS_ACCESS_KEY_ID", "valueFrom": {"secretKeyRef": {"name": c.credentials_secret.name, "key": c.credentials_secret.access_key_id_key}}}),
        json!({"name": "AWS_SECRET_ACCESS_KEY", "valueFrom": {"secretKeyRef": {"name": c.credentials_secret.name, "key": c.credentials_secret.secret_access_key_key}}}),
    ];
    if !s.path_style {
        env.push(json!({"name": "EARSHOT_CONSOLE_VIRTUAL_HOSTED", "value": "true"}));
    }
    let mut ports =
        vec![json!({"name": "health", "containerPort": CONSOLE_HEALTH_PORT, "protocol": "TCP"})];
    if c.expose {
        ports.insert(
            0,
            json!({"name": "http", "containerPort": CONSOLE_PORT, "protocol": "TCP"}),
        );
    }
    let probe = json!({"httpGet": {"path": "/healthz", "port": "health"}, "periodSeconds": 10, "timeoutSeconds": 2});
    let selector = console_labels(&v.name);
    let d = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": console_meta(v),
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {"labels": selector},
                "spec": {
                    "securityContext": {
                        "runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "automountServiceAccountToken": false,
                    "containers": [{
                        "name": "console",
                        "image": v.operator.recorder_image,
                        "command": ["/usr/local/bin/earshot-console"],
                        "args": ["serve", "--log-json"],
                        "env": env,
                        "ports": ports,
                        "readinessProbe": probe,
                        "livenessProbe": probe,
                        // The sidecar cache holds up to 100 000 recordings.
                        "resources": {"requests": {"cpu": "10m", "memory": "64Mi"}, "limits": {"memory": "512Mi"}},
                        "securityContext": {
                            "allowPrivilegeEscalation": false,
                            "readOnlyRootFilesystem": true,
                            "capabilities": {"drop": ["ALL"]},
                        },
                    }],
                },
            },
        },
    });
    Some(serde_json::from_value(d).expect("console deployment shape"))
}

/// The console Service, when the policy exposes the console.
pub fn build_console_service(v: &Validated) -> Option<Service> {
    let c = v
        .policy
        .spec
        .console
        .as_ref()
        .filter(|c| c.enabled && c.expose)?;
    let _ = c;
    let svc = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": console_meta(v),
        "spec": {
            "type": "ClusterIP",
            "selector": console_labels(&v.name),
            "ports": [{"name": "http", "port": CONSOLE_PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    });
    Some(serde_json::from_value(svc).expect("console service shape"))
}
