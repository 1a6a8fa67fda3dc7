//! The recorder's config file, exactly as `earshot-recorder --config` reads
//! it, in a ConfigMap: the schema is `earshot_contracts::config`, the same
//! types the recorder parses. A change of users, modes, shortcodes or
//! recording settings changes only this object: recorders reload it
//! without restarting.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use earshot_contracts::config::{
    AnnouncementConfig, HttpConfig, PeerConfig, RecorderConfig, RecordingConfig, RtpConfig,
    S3Config, SipConfig, SpoolConfig, StorageConfig, TlsConfig, UserConfig, VideoPolicy,
};
use earshot_contracts::names::{CONFIG_FILE, PROMPT_DIR, SPOOL_DIR};
use k8s_openapi::api::core::v1::ConfigMap;

use super::{Validated, meta};

const ANY: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

/// Ports in the policy are checked by the API server (1-65535, 1024-65535).
fn port(p: i32) -> u16 {
    u16::try_from(p).unwrap_or(0)
}

/// The recorder config of a validated policy.
pub fn recorder_config(v: &Validated) -> RecorderConfig {
    let spec = &v.policy.spec;
    let rec = &spec.recorder;
    let a = &spec.announcement;
    RecorderConfig {
        sip: SipConfig {
            listen: SocketAddr::new(ANY, port(rec.sip.port)),
            transports: rec.sip.transports.clone(),
            unknown_sources: Default::default(),
            limits: Default::default(),
            tls: rec.sip.tls.as_ref().map(|t| TlsConfig {
                port: port(t.port),
                certificate: PathBuf::from(format!("{}/tls.crt", super::statefulset::TLS_DIR)),
                key: PathBuf::from(format!("{}/tls.key", super::statefulset::TLS_DIR)),
                ca: t
                    .ca_config_map
                    .as_ref()
                    .map(|_| PathBuf::from(format!("{}/ca.crt", super::statefulset::TLS_CA_DIR))),
                client_certificate: t.client_certificate,
                require_client_certificate: t.require_client_certificate,
            }),
        },
        // Pod mode advertises the pod IP and host mode the node IP, both given
        // to the container in EARSHOT_ADVERTISED_ADDRESS; an explicit address wins.
        advertised_address: v.advertised,
        // Host network: each pod picks its node's entry (EARSHOT_NODE_NAME)
        // and tells peers outside the internal networks the external one.
        external_address: None,
        internal_networks: rec.network.internal_networks.clone(),
        node_addresses: v.nodes.clone(),
        rtp: RtpConfig {
            bind: ANY,
            port_min: port(rec.rtp_ports.min),
            port_max: port(rec.rtp_ports.max),
            allow_local_media: rec.network.allow_local_media,
            video: Default::default(),
            unreadable_media: match rec.unreadable_media {
                earshot_crds::UnreadableMedia::Relay => VideoPolicy::Relay,
                earshot_crds::UnreadableMedia::Refuse => VideoPolicy::Refuse,
            },
            kernel_fast_path: super::statefulset::kernel_fast_path(rec),
            // Every interface of the node that is up when the pod starts.
            kernel_interfaces: Vec::new(),
            kernel_ring_bytes: 0,
        },
        // One shard per CPU the pod may use: the recorder reads its cgroup
        // quota, so the pod's CPU limit sets it.
        shards: 0,
        http: HttpConfig {
            listen: SocketAddr::new(ANY, port(rec.http_port)),
        },
        peers: rec
            .peers
            .iter()
            .map(|p| PeerConfig {
                name: p.name.clone(),
                sources: p.sources.clone(),
                next_hop: p.next_hop.clone().unwrap_or_default(),
                next_hop_transport: p.next_hop_transport,
                siprec: p.siprec,
            })
            .collect(),
        default_mode: spec.default_mode,
        default_shortcode: spec.default_shortcode.clone(),
        users: spec
            .users
            .iter()
            .map(|u| UserConfig {
                extension: u.extension.clone(),
                display_name: u.display_name.clone(),
                mode: Some(spec.effective_mode(u)),
                shortcode: spec.effective_shortcode(u).map(str::to_owned),
            })
            .collect(),
        events: Default::default(),
        shutdown_grace: Duration::from_secs(
            v.operator
                .termination_grace_seconds
                .saturating_sub(30)
                .max(30) as u64,
        ),
        recording: RecordingConfig {
            pause_behaviour: rec.pause_behaviour,
            channels: rec.channels,
            mp3_bitrate_kbps: u32::try_from(rec.mp3_bitrate_kbps).unwrap_or(32),
            encoder_threads: None,
        },
        spool: SpoolConfig {
            dir: PathBuf::from(SPOOL_DIR),
            max_bytes: crate::reconcile::validate::spool_limit(v.spool_bytes),
        },
        storage: StorageConfig {
            filesystem: None,
            s3: Some(S3Config {
                endpoint: v.storage.endpoint.clone(),
                bucket: v.storage.bucket.clone(),
                region: v.storage.region.clone(),
                path_style: v.storage.path_style,
            }),
            prefix: v.prefix.clone(),
        },
        instance: None,
        announcement: AnnouncementConfig {
            mode: a.mode,
            prompt: a
                .prompt_in_use()
                .map(|p| PathBuf::from(format!("{PROMPT_DIR}/{}", p.key))),
            to: a.to,
            periodic_beep_seconds: u32::try_from(a.periodic_beep_seconds).unwrap_or(0),
            stop_tone: a.stop_tone,
        },
    }
}

/// The ConfigMap holding the recorder config.
pub fn build_configmap(v: &Validated) -> ConfigMap {
    // A struct of strings, numbers, lists and maps always serialises to YAML.
    let yaml = serde_yaml::to_string(&recorder_config(v)).expect("config serialises to YAML");
    let header = format!(
        "# Rendered by earshot-operator from RecordingPolicy {}/{}. Edit the policy, not this file.\n",
        v.namespace, v.name
    );
    ConfigMap {
        metadata: meta(v),
        data: Some(BTreeMap::from([(
            CONFIG_FILE.to_owned(),
            format!("{header}{yaml}"),
        )])),
        ..ConfigMap::default()
    }
}
