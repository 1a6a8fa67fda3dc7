//! The recorder workload: a StatefulSet, so each recorder pod has a spool
//! volume of its own that outlives it. A pod that is deleted, evicted or
//! lost with its node is replaced by one with the same name and the same
//! volume, which uploads whatever its predecessor left. Rollouts never cut
//! a live call: the old pod gets SIGTERM, refuses new calls with 503 (the
//! other replicas take them) and lets its calls finish and upload within
//! the termination grace period; then the new one starts. Config changes
//! the recorder reloads from its mounted file (users, modes, peers,
//! recording settings, node addresses) do not touch the pod template; those
//! it cannot (ports, storage, spool, TLS) change the restart annotation and
//! roll the pods. The volumes stay when the policy is deleted or scaled
//! down: nothing in a spool is ever thrown away by Earshot.

use earshot_contracts::Transport;
use earshot_contracts::names::{
    ACCESS_KEY_ID_ENV, ADVERTISED_ADDRESS_ENV, CONFIG_DIR, CONFIG_FILE, NODE_NAME_ENV, PROMPT_DIR,
    SECRET_ACCESS_KEY_ENV, SPOOL_DIR,
};
use earshot_crds::NetworkMode;
use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
    StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource,
    HTTPGetAction, KeyToPath, ObjectFieldSelector, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PodAffinityTerm, PodAntiAffinity, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile, SecretKeySelector,
    SecurityContext, Volume, VolumeMount, VolumeResourceRequirements,
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

/// The fast path the recorders are told to use: only with host network (a
/// rule of the CRD says so too).
pub fn kernel_fast_path(
    rec: &earshot_crds::RecorderSpec,
) -> earshot_contracts::config::KernelFastPath {
    use earshot_contracts::config::KernelFastPath as K;
    if rec.network.mode != earshot_crds::NetworkMode::Host {
        return K::Off;
    }
    match rec.network.kernel_fast_path {
        earshot_crds::KernelFastPath::Off => K::Off,
        earshot_crds::KernelFastPath::Auto => K::Auto,
        earshot_crds::KernelFastPath::Required => K::Required,
    }
}

/// The recorder container's security context: [`hardened`], and for the
/// kernel fast path root with CAP_BPF and CAP_NET_ADMIN alone (Kubernetes
/// does not raise added capabilities for a non-root user: they would stay
/// in the bounding set, unusable).
fn recorder_security(rec: &earshot_crds::RecorderSpec) -> SecurityContext {
    let mut ctx = hardened();
    if kernel_fast_path(rec) != earshot_contracts::config::KernelFastPath::Off {
        ctx.run_as_user = Some(0);
        ctx.run_as_group = Some(0);
        ctx.run_as_non_root = Some(false);
        if let Some(caps) = ctx.capabilities.as_mut() {
            caps.add = Some(vec!["BPF".to_owned(), "NET_ADMIN".to_owned()]);
        }
    }
    ctx
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

/// The pod template annotation whose value changes with every setting the
/// recorder cannot reload live, so such a change rolls the pods (users,
/// modes, peers, announcements and recording settings reload without one).
pub const RESTART_ANNOTATION: &str = "earshot.io/restart-config";

/// A hash of the recorder settings that need a restart: listeners and
/// addresses, the RTP range, shards, the HTTP port, event log, spool,
/// storage and instance name.
pub fn restart_checksum(v: &Validated) -> String {
    use sha2::Digest;
    let c = super::recorder_config(v);
    let mut restart = serde_json::json!([
        c.sip.listen,
        c.sip.transports,
        c.advertised_address,
        c.rtp.bind,
        c.rtp.port_min,
        c.rtp.port_max,
        c.shards,
        c.http,
        c.events,
        c.spool,
        c.storage,
        c.instance,
    ]);
    // TLS settings only when set: an operator upgrade rolls no pod of a
    // policy without TLS.
    if let (Some(tls), Some(list)) = (&c.sip.tls, restart.as_array_mut()) {
        list.push(serde_json::json!(tls));
    }
    hex::encode(&sha2::Sha256::digest(restart.to_string().as_bytes())[..8])
}

/// Requests and a memory limit sized from the calls the RTP range holds
/// (four ports a call: a pair per side), when the policy sets none: a pod
/// without them is BestEffort, the first evicted under pressure.
/// * CPU request: 1 millicore a call (the target is 1000 recorded calls a
///   core), at least 100m. No CPU limit: a throttled media path delays
///   packets, and the recorder runs one shard per CPU its cgroup allows.
/// * Memory: 64 MiB and 256 KiB a call requested (the target is under
///   192 KiB a call), twice that as the limit.
pub fn default_resources(min_port: i32, max_port: i32) -> ResourceRequirements {
    let calls = i64::from((max_port - min_port + 1).max(0)) / 4;
    let cpu = calls.max(100);
    let mem_mib = 64 + calls / 4;
    ResourceRequirements {
        requests: Some(
            [
                ("cpu".to_owned(), Quantity(format!("{cpu}m"))),
                ("memory".to_owned(), Quantity(format!("{mem_mib}Mi"))),
            ]
            .into(),
        ),
        limits: Some([("memory".to_owned(), Quantity(format!("{}Mi", mem_mib * 2)))].into()),
        ..ResourceRequirements::default()
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
        Transport::Tls => ("sip-tls", "TCP"),
    }
}

/// The port a transport listens on: TLS on its own.
pub fn sip_port_of(rec: &earshot_crds::RecorderSpec, t: Transport) -> i32 {
    match (t, &rec.sip.tls) {
        (Transport::Tls, Some(tls)) => tls.port,
        _ => rec.sip.port,
    }
}

/// Where the TLS Secret and the CA bundle are mounted.
pub const TLS_DIR: &str = "/etc/earshot/tls";
/// Where the CA bundle's ConfigMap is mounted.
pub const TLS_CA_DIR: &str = "/etc/earshot/tls-ca";

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        read_only: read_only.then_some(true),
        ..VolumeMount::default()
    }
}

/// The name of the spool's volume claim template: pod `earshot-office-0`
/// mounts the claim `spool-earshot-office-0`.
pub const SPOOL_VOLUME: &str = "spool";

fn spool_claim(v: &Validated) -> PersistentVolumeClaim {
    let spool = &v.policy.spec.recorder.spool;
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(SPOOL_VOLUME.to_owned()),
            labels: Some(labels(&v.name)),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".to_owned()]),
            storage_class_name: spool.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some([("storage".to_owned(), Quantity(spool.size.clone()))].into()),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    }
}

/// The recorder StatefulSet.
pub fn build_statefulset(v: &Validated) -> StatefulSet {
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
            port(n, sip_port_of(rec, *t), p)
        })
        .collect();
    ports.push(port("metrics", rec.http_port, "TCP"));
    let mut mounts = vec![
        mount("config", CONFIG_DIR, true),
        mount(SPOOL_VOLUME, SPOOL_DIR, false),
    ];
    let mut volumes = vec![Volume {
        name: "config".to_owned(),
        config_map: Some(ConfigMapVolumeSource {
            name: name.clone(),
            ..ConfigMapVolumeSource::default()
        }),
        ..Volume::default()
    }];
    if let Some(tls) = &rec.sip.tls {
        volumes.push(Volume {
            name: "tls".to_owned(),
            secret: Some(k8s_openapi::api::core::v1::SecretVolumeSource {
                secret_name: Some(tls.secret_name.clone()),
                items: Some(
                    ["tls.crt", "tls.key"]
                        .into_iter()
                        .map(|k| KeyToPath {
                            key: k.to_owned(),
                            path: k.to_owned(),
                            ..KeyToPath::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Volume::default()
        });
        mounts.push(mount("tls", TLS_DIR, true));
        if let Some(ca) = &tls.ca_config_map {
            volumes.push(Volume {
                name: "tls-ca".to_owned(),
                config_map: Some(ConfigMapVolumeSource {
                    name: ca.clone(),
                    items: Some(vec![KeyToPath {
                        key: "ca.crt".to_owned(),
                        path: "ca.crt".to_owned(),
                        ..KeyToPath::default()
                    }]),
                    ..ConfigMapVolumeSource::default()
                }),
                ..Volume::default()
            });
            mounts.push(mount("tls-ca", TLS_CA_DIR, true));
        }
    }
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
            // Host network: picks this node's entry of nodeAddresses.
            env_from_field(NODE_NAME_ENV, "spec.nodeName"),
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
        resources: Some(
            rec.resources
                .clone()
                .unwrap_or_else(|| default_resources(rec.rtp_ports.min, rec.rtp_ports.max)),
        ),
        security_context: Some(recorder_security(rec)),
        volume_mounts: Some(mounts),
        ..Container::default()
    };
    let mut pod = PodSpec {
        termination_grace_period_seconds: Some(v.operator.termination_grace_seconds),
        security_context: Some(pod_security(true)),
        // The recorder never calls the API server: no token in an
        // internet-facing pod.
        automount_service_account_token: Some(false),
        containers: vec![container],
        volumes: Some(volumes),
        ..PodSpec::default()
    };
    let placement = &rec.placement;
    if !placement.node_selector.is_empty() {
        pod.node_selector = Some(placement.node_selector.clone());
    }
    if !placement.tolerations.is_empty() {
        pod.tolerations = Some(placement.tolerations.clone());
    }
    if placement.node_affinity.is_some() {
        pod.affinity = Some(Affinity {
            node_affinity: placement.node_affinity.clone(),
            ..Affinity::default()
        });
    }
    if host {
        pod.host_network = Some(true);
        pod.dns_policy = Some("ClusterFirstWithHostNet".to_owned());
        // Two recorders cannot share a node's ports: one per node, so a
        // rollout's new pod starts on another node while the old one drains.
        pod.affinity
            .get_or_insert_with(Affinity::default)
            .pod_anti_affinity = Some(PodAntiAffinity {
            required_during_scheduling_ignored_during_execution: Some(vec![PodAffinityTerm {
                label_selector: Some(LabelSelector {
                    match_labels: Some(selector.clone()),
                    ..LabelSelector::default()
                }),
                topology_key: "kubernetes.io/hostname".to_owned(),
                ..PodAffinityTerm::default()
            }]),
            ..PodAntiAffinity::default()
        });
    }
    StatefulSet {
        metadata: meta(v),
        spec: Some(StatefulSetSpec {
            replicas: Some(rec.replicas),
            service_name: Some(name),
            selector: LabelSelector {
                match_labels: Some(selector.clone()),
                ..LabelSelector::default()
            },
            // Pods start and stop independently: one that drains its calls
            // does not hold up the others.
            pod_management_policy: Some("Parallel".to_owned()),
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("RollingUpdate".to_owned()),
                ..StatefulSetUpdateStrategy::default()
            }),
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some("Retain".to_owned()),
                    when_scaled: Some("Retain".to_owned()),
                },
            ),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(selector),
                    // A change the recorder cannot reload rolls the pods.
                    annotations: Some(
                        [(RESTART_ANNOTATION.to_owned(), restart_checksum(v))].into(),
                    ),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod),
            },
            volume_claim_templates: Some(vec![spool_claim(v)]),
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    }
}
