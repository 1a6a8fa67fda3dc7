//! The recorder's config file, exactly as `earshot-recorder --config` reads
//! it, in a ConfigMap. A change of users, modes, shortcodes or recording
//! settings changes only this object: recorders reload it without restarting.

use std::collections::BTreeMap;

use earshot_crds::{
    AnnouncementMode, AnnouncementTarget, ChannelLayout, PauseBehaviour, RecordingMode,
    SipTransport,
};
use k8s_openapi::api::core::v1::ConfigMap;
use serde_json::{Value, json};

use super::{Validated, meta};

/// Key of the config file in the ConfigMap (and its file name in the pod).
pub const CONFIG_FILE: &str = "recorder.yaml";

/// Spool directory inside the recorder pod.
pub const SPOOL_DIR: &str = "/var/spool/earshot";

/// Where the announcement prompt's ConfigMap is mounted in the recorder pod
/// (a volume of its own, so the kubelet updates the file in place and the
/// recorder reloads it).
pub const PROMPT_DIR: &str = "/etc/earshot-prompt";

fn transport(t: SipTransport) -> &'static str {
    match t {
        SipTransport::UDP => "UDP",
        SipTransport::TCP => "TCP",
    }
}

fn mode(m: RecordingMode) -> &'static str {
    match m {
        RecordingMode::Always => "Always",
        RecordingMode::OnDemand => "OnDemand",
        RecordingMode::Never => "Never",
    }
}

/// The recorder config as a JSON value (serialised to YAML in the ConfigMap).
pub fn recorder_config(v: &Validated) -> Value {
    let spec = &v.policy.spec;
    let rec = &spec.recorder;
    let users: Vec<Value> = spec
        .users
        .iter()
        .map(|u| {
            let mut o = json!({"extension": u.extension, "mode": mode(spec.effective_mode(u))});
            if let Some(n) = &u.display_name {
                o["displayName"] = json!(n);
            }
            if let Some(c) = spec.effective_shortcode(u) {
                o["shortcode"] = json!(c);
            }
            o
        })
        .collect();
    let peers: Vec<Value> = rec
        .peers
        .iter()
        .map(|p| {
            json!({
                "name": p.name, "sources": p.sources, "nextHop": p.next_hop,
                "nextHopTransport": transport(p.next_hop_transport),
            })
        })
        .collect();
    let mut config = json!({
        "sip": {
            "listen": format!("0.0.0.0:{}", rec.sip.port),
            "transports": rec.sip.transports.iter().map(|t| transport(*t)).collect::<Vec<_>>(),
        },
        "rtp": {"bind": "0.0.0.0", "portMin": rec.rtp_ports.min, "portMax": rec.rtp_ports.max},
        "http": {"listen": "0.0.0.0:9090"},
        "peers": peers,
        "defaultMode": mode(spec.default_mode),
        "users": users,
        "recording": {
            "pauseBehaviour": match rec.pause_behaviour { PauseBehaviour::Skip => "Skip", PauseBehaviour::Silence => "Silence" },
            "channels": match rec.channels { ChannelLayout::Stereo => "Stereo", ChannelLayout::Mono => "Mono" },
            "mp3BitrateKbps": rec.mp3_bitrate_kbps,
        },
        "spool": {"dir": SPOOL_DIR},
        "storage": {
            "s3": {
                "endpoint": v.storage.endpoint, "bucket": v.storage.bucket,
                "region": v.storage.region, "pathStyle": v.storage.path_style,
            },
            "prefix": v.prefix,
        },
        "shutdownGrace": format!("{}s", v.operator.termination_grace_seconds.saturating_sub(30).max(30)),
    });
    if let Some(code) = &spec.default_shortcode {
        config["defaultShortcode"] = json!(code);
    }
    let a = &spec.announcement;
    if !a.is_off() {
        let mut announcement = json!({
            "mode": match a.mode {
                AnnouncementMode::None => "None",
                AnnouncementMode::Beep => "Beep",
                AnnouncementMode::Prompt => "Prompt",
            },
            "to": match a.to { AnnouncementTarget::FarEnd => "FarEnd", AnnouncementTarget::Both => "Both" },
            "periodicBeepSeconds": a.periodic_beep_seconds,
            "stopTone": a.stop_tone,
        });
        if let Some(p) = a.prompt_in_use() {
            announcement["prompt"] = json!(format!("{PROMPT_DIR}/{}", p.key));
        }
        config["announcement"] = announcement;
    }
    // Pod mode advertises the pod IP and host mode the node IP, both given to
    // the container in EARSHOT_ADVERTISED_ADDRESS; an explicit address wins.
    if let Some(addr) = &rec.network.advertised_address {
        config["advertisedAddress"] = json!(addr);
    }
    config
}

/// The ConfigMap holding the recorder config.
pub fn build_configmap(v: &Validated) -> ConfigMap {
    // Serialising a JSON value with string keys to YAML cannot fail.
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
