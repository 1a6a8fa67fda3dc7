//! The recorder workload. Rollouts never cut a live call: a new pod starts
//! before an old one stops (maxUnavailable 0), the old one gets SIGTERM,
//! refuses new calls with 503 and lets its calls finish and upload within the
//! termination grace period. Config changes do not touch the pod template
//! (the recorder reloads its mounted file), so they roll nothing.

use earshot_contracts::Transport;
use earshot_contracts::names::{
    ACCESS_KEY_ID_ENV, ADVERTISED_ADDRESS_ENV, CONFIG_DIR, CONFIG_FILE, PROMPT_DIR,
    RECORDER_HTTP_PORT, SECRET_ACCESS_KEY_ENV, SPOOL_DIR,
};
use earshot_crds::NetworkMode;
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource,
    EnvVar, EnvVarSource, HTTPGetAction, KeyToPath, ObjectFieldSelector, PodAffinityTerm,
    PodAntiAffinity, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, SeccompProfile,
    SecretKeySelector, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{Validated, labels, meta, object_name};

/// The recorder pods' user and group: a non-root user of the distroless image.
pub const RUN_AS: i64 = 65532;

/// An environment variable from a field of the pod.
pub fn env_from_field(name: &str, field: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: field.to_owned(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

/// An environment variable from a key of a Secret.
pub fn env_from_secret(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.to_owned(),
                key: key.to_owned(),
                optional: None,
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

/// An HTTP GET probe on a named port.
pub fn http_probe(path: &str, port: &str, period: i32, failures: Option<i32>) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String(port.to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(2),
        failure_threshold: failures,
        ..Probe::default()
    }
}

/// A container that runs as a non-root user, cannot escalate, has no
/// capabilities and a read-only root filesystem.
pub fn hardened() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            ..Capabilities::default()
        }),
        ..SecurityContext::default()
    }
}

/// The pod security context of Earshot's pods.
pub fn pod_security(fs_group: bool) -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(RUN_AS),
        run_as_group: Some(RUN_AS),
        fs_group: fs_group.then_some(RUN_AS),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_owned(),
            ..SeccompProfile::default()
        }),
        ..PodSecurityContext::default()
    }
}

fn port(name: &str, number: i32, protocol: &str) -> ContainerPort {
    ContainerPort {
        name: Some(name.to_owned()),
        container_port: number,
        protocol: Some(protocol.to_owned()),
        ..ContainerPort::default()
    }
}

/// The named ports of the recorder container: SIP per transport, metrics.
pub fn sip_port_name(t: Transport) -> (&'static str, &'static str) {
    match t {
        Transport::Udp => ("sip-udp", "UDP"),
        Transport::Tcp => ("sip-tcp", "TCP"),
    }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        read_only: read_only.then_some(true),
        ..VolumeMount::default()
    }
}

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
    let mut ports: Vec<ContainerPort> = rec
        .sip
        .transports
        .iter()
        .map(|t| {
            let (n, p) = sip_port_name(*t);
            port(n, rec.sip.port, p)
        })
        .collect();
    ports.push(port("metrics", i32::from(RECORDER_HTTP_PORT), "TCP"));
    let mut mounts = vec![
        mount("config", CONFIG_DIR, true),
        mount("spool", SPOOL_DIR, false),
    ];
    let mut volumes = vec![
        Volume {
            name: "config".to_owned(),
            config_map: Some(ConfigMapVolumeSource {
                name: name.clone(),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: "spool".to_owned(),
            empty_dir: Some(EmptyDirVolumeSource {
                size_limit: Some(Quantity(v.operator.spool_size.clone())),
                ..EmptyDirVolumeSource::default()
            }),
            ..Volume::default()
        },
    ];
    if let Some(p) = v.policy.spec.announcement.prompt_in_use() {
        // Only the prompt's key, not the whole ConfigMap.
        volumes.push(Volume {
            name: "announcement".to_owned(),
            config_map: Some(ConfigMapVolumeSource {
                name: p.config_map.clone(),
                items: Some(vec![KeyToPath {
                    key: p.key.clone(),
                    path: p.key.clone(),
                    ..KeyToPath::default()
                }]),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        });
        mounts.push(mount("announcement", PROMPT_DIR, true));
    }
    let container = Container {
        name: "recorder".to_owned(),
        image: Some(v.operator.recorder_image.clone()),
        args: Some(vec![
            "--config".to_owned(),
            format!("{CONFIG_DIR}/{CONFIG_FILE}"),
            "--log-json".to_owned(),
        ]),
        env: Some(vec![
            env_from_field(ADVERTISED_ADDRESS_ENV, advertised_from),
            env_from_secret(ACCESS_KEY_ID_ENV, &secret.name, &secret.access_key_id_key),
            env_from_secret(
                SECRET_ACCESS_KEY_ENV,
                &secret.name,
                &secret.secret_access_key_key,
            ),
        ]),
        ports: Some(ports),
        readiness_probe: Some(http_probe("/readyz", "metrics", 5, Some(3))),
        liveness_probe: Some(http_probe("/healthz", "metrics", 10, Some(3))),
        resources: Some(rec.resources.clone().unwrap_or_default()),
        security_context: Some(hardened()),
        volume_mounts: Some(mounts),
        ..Container::default()
    };
    let mut pod = PodSpec {
        termination_grace_period_seconds: Some(v.operator.termination_grace_seconds),
        security_context: Some(pod_security(true)),
        containers: vec![container],
        volumes: Some(volumes),
        ..PodSpec::default()
    };
    if host {
        pod.host_network = Some(true);
        pod.dns_policy = Some("ClusterFirstWithHostNet".to_owned());
        // Two recorders cannot share a node's ports: one per node, so a
        // rollout's new pod starts on another node while the old one drains.
        pod.affinity = Some(Affinity {
            pod_anti_affinity: Some(PodAntiAffinity {
                required_during_scheduling_ignored_during_execution: Some(vec![PodAffinityTerm {
                    label_selector: Some(LabelSelector {
                        match_labels: Some(selector.clone()),
                        ..LabelSelector::default()
                    }),
                    topology_key: "kubernetes.io/hostname".to_owned(),
                    ..PodAffinityTerm::default()
                }]),
                ..PodAntiAffinity::default()
            }),
            ..Affinity::default()
        });
    }
    Deployment {
        metadata: meta(v),
        spec: Some(DeploymentSpec {
            replicas: Some(rec.replicas),
            selector: LabelSelector {
                match_labels: Some(selector.clone()),
                ..LabelSelector::default()
            },
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".to_owned()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_unavailable: Some(IntOrString::Int(0)),
                    max_surge: Some(IntOrString::Int(1)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(selector),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}
