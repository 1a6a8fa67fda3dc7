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
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::statefulset::{env_from_secret, hardened, http_probe, pod_security};
use super::{Validated, app_labels, meta, object_name};
use crate::config::ConsoleProxy;

/// `earshot-console serve --allow-loopback` as its environment (an exposed
/// console admits loopback connections only with it).
pub const ALLOW_LOOPBACK_ENV: &str = "EARSHOT_CONSOLE_ALLOW_LOOPBACK";

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

/// The platform's proxy, when the policy's console is enabled and exposed
/// and the platform configured a usable one: otherwise `expose` is refused
/// (the console stays on loopback, and the operator says why in an Event,
/// [`console_expose_refused`]).
pub fn console_exposed(v: &Validated) -> Option<&ConsoleProxy> {
    v.policy
        .spec
        .console
        .as_ref()
        .filter(|c| c.enabled && c.expose)?;
    v.operator
        .console_proxy
        .as_ref()
        .filter(|p| p.unusable().is_none())
}

/// Why the policy's `spec.console.expose` is not followed, when it is set
/// and not followed.
pub fn console_expose_refused(v: &Validated) -> Option<String> {
    v.policy
        .spec
        .console
        .as_ref()
        .filter(|c| c.enabled && c.expose)?;
    let why = match &v.operator.console_proxy {
        None => {
            "the platform has configured no authenticating proxy (console.proxy in the operator's Helm values)"
        }
        Some(p) => p.unusable()?,
    };
    Some(format!(
        "spec.console.expose is set, but {why}: the console stays reachable only with kubectl port-forward"
    ))
}

/// Host names an exposed console answers to: its Service's, and the
/// proxy's configured ones.
pub fn console_hosts(v: &Validated, proxy: &ConsoleProxy) -> Vec<String> {
    let service = console_name(&v.name);
    let ns = &v.namespace;
    let mut hosts = vec![
        service.clone(),
        format!("{service}.{ns}"),
        format!("{service}.{ns}.svc"),
        format!("{service}.{ns}.svc.cluster.local"),
    ];
    hosts.extend(proxy.hosts.iter().cloned());
    hosts
}

/// The console Deployment, when the policy enables it.
pub fn build_console_deployment(v: &Validated) -> Option<Deployment> {
    let c = v.policy.spec.console.as_ref().filter(|c| c.enabled)?;
    let s = &v.storage;
    let exposed = console_exposed(v);
    let listen = if exposed.is_some() {
        "0.0.0.0"
    } else {
        "127.0.0.1"
    };
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
    if let Some(proxy) = exposed {
        envs.push(env(
            console_env::IDENTITY_HEADER,
            proxy.identity_header.clone(),
        ));
        envs.push(env(console_env::TRUSTED_PROXIES, proxy.sources.join(",")));
        envs.push(env(
            console_env::ALLOWED_HOSTS,
            console_hosts(v, proxy).join(","),
        ));
        if proxy.allow_loopback {
            envs.push(env(ALLOW_LOOPBACK_ENV, "true"));
        }
    }
    let mut ports = vec![port("health", CONSOLE_HEALTH_PORT)];
    if exposed.is_some() {
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
    console_exposed(v)?;
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

/// The NetworkPolicy of an exposed console: its page admits only the
/// platform's proxy (by namespace and pod labels, or by its source CIDRs
/// when no labels are configured); health and metrics stay open to the
/// kubelet and Prometheus. A rule without peers would admit everyone, so
/// the page gets a rule only when there is a peer to name.
pub fn build_console_networkpolicy(v: &Validated) -> Option<NetworkPolicy> {
    let proxy = console_exposed(v)?;
    let labels = |m: &BTreeMap<String, String>| {
        (!m.is_empty()).then(|| LabelSelector {
            match_labels: Some(m.clone()),
            ..LabelSelector::default()
        })
    };
    let peers = if proxy.namespace_selector.is_empty() && proxy.pod_selector.is_empty() {
        proxy
            .sources
            .iter()
            .filter(|cidr| !cidr.trim().is_empty())
            .map(|cidr| NetworkPolicyPeer {
                ip_block: Some(IPBlock {
                    cidr: cidr.clone(),
                    except: None,
                }),
                ..NetworkPolicyPeer::default()
            })
            .collect()
    } else {
        vec![NetworkPolicyPeer {
            namespace_selector: labels(&proxy.namespace_selector),
            pod_selector: labels(&proxy.pod_selector),
            ..NetworkPolicyPeer::default()
        }]
    };
    let tcp = |name: &str| NetworkPolicyPort {
        port: Some(IntOrString::String(name.to_owned())),
        protocol: Some("TCP".to_owned()),
        ..NetworkPolicyPort::default()
    };
    Some(NetworkPolicy {
        metadata: console_meta(v),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(console_labels(&v.name)),
                ..LabelSelector::default()
            }),
            policy_types: Some(vec!["Ingress".to_owned()]),
            ingress: Some(
                (!peers.is_empty())
                    .then(|| NetworkPolicyIngressRule {
                        from: Some(peers),
                        ports: Some(vec![tcp("http")]),
                    })
                    .into_iter()
                    .chain([NetworkPolicyIngressRule {
                        from: None,
                        ports: Some(vec![tcp("health")]),
                    }])
                    .collect(),
            ),
            ..NetworkPolicySpec::default()
        }),
    })
}
