//! The tenant's recordings console: one pod running `earshot-console serve`
//! from the recorder image, reading only the policy's prefix with the
//! read-only key the policy names. By default its page listens on loopback
//! inside the pod (reached with `kubectl port-forward`); `expose` puts it
//! behind a Service for an ingress and an authenticating proxy. Health and
//! metrics listen on the pod network either way.

use std::collections::BTreeMap;

use earshot_contracts::names::{
    ACCESS_KEY_ID_ENV, CONSOLE_HEALTH_PORT, CONSOLE_PORT, SECRET_ACCESS_KEY_ENV, console_env,
};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, PodSpec, PodTemplateSpec, ResourceRequirements, Service,
    ServicePort, ServiceSpec,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::statefulset::{env_from_secret, hardened, http_probe, pod_security};
use super::{Validated, app_labels, meta, object_name};

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

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.into()),
        ..EnvVar::default()
    }
}

fn port(name: &str, number: u16) -> ContainerPort {
    ContainerPort {
        name: Some(name.to_owned()),
        container_port: i32::from(number),
        protocol: Some("TCP".to_owned()),
        ..ContainerPort::default()
    }
}

/// The console Deployment, when the policy enables it.
pub fn build_console_deployment(v: &Validated) -> Option<Deployment> {
    let c = v.policy.spec.console.as_ref().filter(|c| c.enabled)?;
    let s = &v.storage;
    let listen = if c.expose { "0.0.0.0" } else { "127.0.0.1" };
    let key = &c.credentials_secret;
    let mut envs = vec![
        env(console_env::ENDPOINT, s.endpoint.clone()),
        env(console_env::BUCKET, s.bucket.clone()),
        env(console_env::REGION, s.region.clone()),
        env(console_env::PREFIX, v.prefix.clone()),
        env(console_env::LISTEN, format!("{listen}:{CONSOLE_PORT}")),
        env(
            console_env::HEALTH_LISTEN,
            format!("0.0.0.0:{CONSOLE_HEALTH_PORT}"),
        ),
        env_from_secret(ACCESS_KEY_ID_ENV, &key.name, &key.access_key_id_key),
        env_from_secret(SECRET_ACCESS_KEY_ENV, &key.name, &key.secret_access_key_key),
    ];
    if !s.path_style {
        envs.push(env(console_env::VIRTUAL_HOSTED, "true"));
    }
    let mut ports = vec![port("health", CONSOLE_HEALTH_PORT)];
    if c.expose {
        ports.insert(0, port("http", CONSOLE_PORT));
    }
    let probe = http_probe("/healthz", "health", 10, None);
    let selector = console_labels(&v.name);
    let quantity = |q: &str| Quantity(q.to_owned());
    let container = Container {
        name: "console".to_owned(),
        image: Some(v.operator.recorder_image.clone()),
        command: Some(vec!["/usr/local/bin/earshot-console".to_owned()]),
        args: Some(vec!["serve".to_owned(), "--log-json".to_owned()]),
        env: Some(envs),
        ports: Some(ports),
        readiness_probe: Some(probe.clone()),
        liveness_probe: Some(probe),
        // The sidecar cache holds up to 100 000 recordings.
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_owned(), quantity("10m")),
                ("memory".to_owned(), quantity("64Mi")),
            ])),
            limits: Some(BTreeMap::from([("memory".to_owned(), quantity("512Mi"))])),
            ..ResourceRequirements::default()
        }),
        security_context: Some(hardened()),
        ..Container::default()
    };
    Some(Deployment {
        metadata: console_meta(v),
        spec: Some(DeploymentSpec {
            replicas: Some(1),
            selector: LabelSelector {
                match_labels: Some(selector.clone()),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(selector),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    security_context: Some(pod_security(false)),
                    automount_service_account_token: Some(false),
                    containers: vec![container],
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    })
}

/// The console Service, when the policy exposes the console.
pub fn build_console_service(v: &Validated) -> Option<Service> {
    v.policy
        .spec
        .console
        .as_ref()
        .filter(|c| c.enabled && c.expose)?;
    Some(Service {
        metadata: console_meta(v),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_owned()),
            selector: Some(console_labels(&v.name)),
            ports: Some(vec![ServicePort {
                name: Some("http".to_owned()),
                port: i32::from(CONSOLE_PORT),
                target_port: Some(IntOrString::String("http".to_owned())),
                protocol: Some("TCP".to_owned()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    })
}
