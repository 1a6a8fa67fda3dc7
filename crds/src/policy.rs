//! The `RecordingPolicy` resource (`earshot.io/v1alpha1`): which users of a
//! tenant are recorded, how, where recordings go and how long they are kept.
//!
//! Every `///` comment here becomes the `description` that `kubectl explain`
//! prints, so they are written for a platform engineer, not for Rust readers.

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use earshot_contracts::{
    AnnouncementMode, AnnouncementTarget, ChannelLayout, PauseBehaviour, RecordingMode, Transport,
};

/// Smallest retention the product offers (the hosted-PBX manual's slider starts at 7).
pub const MIN_RETENTION_DAYS: i32 = 7;
/// Largest retention the CRD accepts; operators usually configure a lower maximum.
pub const MAX_RETENTION_DAYS: i32 = 3650;
/// Largest number of users in one policy. It bounds the cost of the CEL rules
/// the API server runs on every write (the real API server of
/// `operator/tests/cluster.rs` refuses a CRD over its cost budget).
/// Extensions are kept unique by `x-kubernetes-list-type: map`, which the API
/// server enforces in linear time, rather than by a quadratic CEL rule.
pub const MAX_USERS: usize = 1000;

/// A tenant's call-recording policy: the users whose calls are recorded, in
/// which mode, the DTMF shortcode that toggles on-demand recording, how many
/// days recordings are kept and where they are stored. The namespace is the
/// tenant. The operator runs recorder pods for each policy.
// Each printcolumn(...) repeats `type_ = ...`; clippy reads them as one attribute list.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "earshot.io",
    version = "v1alpha1",
    kind = "RecordingPolicy",
    namespaced,
    status = "RecordingPolicyStatus",
    shortname = "rp",
    category = "earshot",
    doc = "A tenant's call-recording policy: users, modes, shortcodes, retention and storage.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Whether the policy is fully applied"
    ),
    printcolumn(
        name = "Retention",
        type_ = "integer",
        json_path = ".spec.retentionDays",
        description = "Days recordings are kept"
    ),
    printcolumn(
        name = "Users",
        type_ = "integer",
        json_path = ".status.users.total",
        description = "Users in the policy"
    ),
    printcolumn(
        name = "Always",
        type_ = "integer",
        json_path = ".status.users.always",
        description = "Users recorded on every call"
    ),
    printcolumn(
        name = "OnDemand",
        type_ = "integer",
        json_path = ".status.users.onDemand",
        description = "Users who toggle recording with their shortcode"
    ),
    printcolumn(
        name = "Address",
        type_ = "string",
        json_path = ".status.serviceAddress",
        description = "Where PBXes and trunks send SIP"
    ),
    printcolumn(
        name = "Replicas",
        type_ = "string",
        json_path = ".status.replicas[*].summary",
        description = "Each recorder pod: node, addresses and readiness",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    // Every object of a policy is named `earshot-<policy>`, its console
    // `earshot-<policy>-console`: names ending in -console would share the
    // console's name of another policy, and Service names stop at 63.
    validation = Rule::new("self.metadata.name.size() <= 40 && !self.metadata.name.endsWith('-console')").message(
        "metadata.name must be at most 40 characters and must not end in -console (earshot-<name>-console is the name of that policy's console)"
    )
)]
#[x_kube(validation = Rule::new(
    "!has(self.users) || self.users.all(u, (has(u.mode) ? u.mode : self.defaultMode) != 'OnDemand' || has(u.shortcode) || has(self.defaultShortcode))"
).message(
    "every user whose mode is OnDemand (set directly or through defaultMode) needs a shortcode: set users[].shortcode or spec.defaultShortcode"
).reason(Reason::FieldValueRequired).field_path(".users"))]
#[serde(rename_all = "camelCase")]
pub struct RecordingPolicySpec {
    /// The users of this tenant whose calls the policy covers, by internal
    /// number (extension). A user who is not listed is never recorded;
    /// removing a user stops recording their calls and keeps every recording
    /// already made.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["extension"]))]
    pub users: Vec<PolicyUser>,

    /// Mode for users that do not set their own `mode`. Defaults to
    /// `OnDemand`, as a user added to the recording list starts on demand.
    #[serde(default)]
    pub default_mode: RecordingMode,

    /// Shortcode for users that do not set their own `shortcode`: `*`
    /// followed by one digit, e.g. `*5`. Required when any user's effective
    /// mode is `OnDemand` and that user sets no shortcode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^\*[0-9]$"))]
    pub default_shortcode: Option<String>,

    /// Days a recording is kept before it is deleted, counted from when it
    /// was stored. A change applies to all recordings of the policy, earlier
    /// ones included, from the moment of the change. Minimum 7; the operator
    /// may enforce a lower maximum than the 3650 the API accepts (see the
    /// `RetentionEnforced` condition).
    #[serde(default = "default_retention_days")]
    #[schemars(range(min = 7, max = 3650))]
    pub retention_days: i32,

    /// Where recordings are written. When omitted the operator's default
    /// storage (Helm value `defaultStorage`) is used, under the prefix
    /// `<namespace>/<policy name>/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageSpec>,

    /// How the recorder pods run: replicas, SIP listener, peers, RTP ports,
    /// networking, resources and recording format.
    #[serde(default)]
    pub recorder: RecorderSpec,

    /// How the parties are told the call is recorded: a beep or a spoken
    /// prompt when recording starts, reminder beeps while it goes on and a
    /// tone when an `OnDemand` user stops it, played by the recorder inside
    /// the call's audio. Off unless set.
    #[serde(default, skip_serializing_if = "AnnouncementSpec::is_off")]
    pub announcement: AnnouncementSpec,

    /// The tenant's recordings console: a read-only web page listing,
    /// playing and downloading this policy's recordings. Off unless enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console: Option<ConsoleSpec>,
}

fn default_retention_days() -> i32 {
    MIN_RETENTION_DAYS
}

/// One user of the tenant, identified by their internal number.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PolicyUser {
    /// The user's internal number (extension), e.g. `"008"`: the user part of
    /// the SIP URI in From, P-Asserted-Identity, To or the Request-URI that
    /// identifies this user on a call. Letters, digits and `.-_+`, 1 to 32
    /// characters. Unique within the policy.
    #[schemars(regex(pattern = r"^[A-Za-z0-9.\-_+]{1,32}$"))]
    pub extension: String,

    /// Name shown next to the number in recording reports, e.g. `Ralf Gerrits`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub display_name: Option<String>,

    /// `Always` records every call of this user, `OnDemand` lets the user
    /// start and stop recording with the shortcode during a call, `Never`
    /// records nothing. Defaults to `spec.defaultMode`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<RecordingMode>,

    /// DTMF code that toggles recording during a live call: `*` followed by
    /// one digit, e.g. `*5`. Keyed once it starts recording, again it stops,
    /// and so on. Only this user's own leg can toggle. Defaults to
    /// `spec.defaultShortcode`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^\*[0-9]$"))]
    pub shortcode: Option<String>,
}

/// An S3-compatible object store (AWS S3, MinIO, Garage, Ceph RGW) that
/// receives the recordings and enforces their retention with a lifecycle rule.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Endpoint URL of the S3 API, e.g. `https://s3.eu-west-1.amazonaws.com`
    /// or `http://garage.storage.svc:3900`.
    #[schemars(regex(pattern = r"^https?://[^\s/]+(/.*)?$"))]
    pub endpoint: String,

    /// Bucket that receives the recordings. It must exist; the operator never
    /// creates or deletes buckets.
    #[schemars(regex(pattern = r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$"))]
    pub bucket: String,

    /// Key prefix of this policy's recordings, ending in `/`. Defaults to
    /// `<namespace>/<policy name>/`. The lifecycle rule that enforces
    /// retention filters on this prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([A-Za-z0-9!\-_.*'()]+/)+$"))]
    pub prefix: Option<String>,

    /// Region name the store signs requests for, e.g. `eu-west-1` or
    /// `garage`. Defaults to `us-east-1`.
    #[serde(default = "default_region")]
    #[schemars(length(min = 1, max = 64))]
    pub region: String,

    /// Address buckets as `endpoint/bucket` (path style, needed by MinIO,
    /// Garage and Ceph RGW) instead of `bucket.endpoint`. Defaults to true.
    #[serde(default = "default_true")]
    pub path_style: bool,

    /// Secret in the policy's namespace holding the access key.
    pub credentials_secret: SecretKeys,
}

fn default_region() -> String {
    "us-east-1".to_owned()
}

fn default_true() -> bool {
    true
}

/// A Secret in the policy's namespace and the keys in it that hold the
/// S3 access key id and secret access key.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeys {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key holding the access key id. Defaults to `AWS_ACCESS_KEY_ID`.
    #[serde(default = "default_access_key_key")]
    pub access_key_id_key: String,
    /// Key holding the secret access key. Defaults to `AWS_SECRET_ACCESS_KEY`.
    #[serde(default = "default_secret_key_key")]
    pub secret_access_key_key: String,
}

fn default_access_key_key() -> String {
    "AWS_ACCESS_KEY_ID".to_owned()
}

fn default_secret_key_key() -> String {
    "AWS_SECRET_ACCESS_KEY".to_owned()
}

/// How the recorder pods of this policy run.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.rtpPorts.min <= self.rtpPorts.max").message("recorder.rtpPorts.min must not be greater than recorder.rtpPorts.max").field_path(".rtpPorts"))]
#[x_kube(validation = Rule::new("self.rtpPorts.min > self.rtpPorts.max || self.rtpPorts.max - self.rtpPorts.min >= 3").message("recorder.rtpPorts must hold at least 4 ports: each recorded media stream uses an RTP/RTCP pair per side").field_path(".rtpPorts"))]
#[x_kube(validation = Rule::new("!has(self.network) || !has(self.network.kernelFastPath) || self.network.kernelFastPath == 'Off' || (has(self.network.mode) && self.network.mode == 'Host')").message("recorder.network.kernelFastPath needs network.mode Host: the program attaches to the node's interfaces").field_path(".network.kernelFastPath"))]
pub struct RecorderSpec {
    /// Number of recorder pods. Calls are spread over them by the SIP
    /// Service; each call stays on the pod that took it. Defaults to 1.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 1, max = 100))]
    pub replicas: i32,

    /// The SIP listener.
    #[serde(default)]
    pub sip: SipListener,

    /// The SIP peers the recorder accepts requests from and where each
    /// peer's requests are forwarded (e.g. PBX → trunk, trunk → PBX). A
    /// request from a source that matches no peer is refused with `403`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub peers: Vec<SipPeer>,

    /// UDP port range for RTP and RTCP relaying. Each recorded media stream
    /// takes two pairs (one per side). Defaults to 20000-20999: outside
    /// Kubernetes' NodePort range (30000-32767), which a host-network
    /// recorder would clash with, and below Linux's ephemeral ports
    /// (32768-60999), which outgoing connections take.
    #[serde(default)]
    pub rtp_ports: PortRange,

    /// Pod network (default) or host network for PBXes outside the cluster.
    #[serde(default)]
    pub network: NetworkSpec,

    /// A call whose audio the recorder cannot read because it is
    /// encrypted end to end — DTLS-SRTP, or SRTP without an `a=crypto` key
    /// it supports: `Relay` (default) lets the call go on and marks its
    /// recording incomplete (`encrypted_dtls_srtp`); `Refuse` answers the
    /// offer 488, for platforms that must record every call they carry.
    #[serde(default, skip_serializing_if = "UnreadableMedia::is_relay")]
    pub unreadable_media: UnreadableMedia,

    /// Port of the recorder's health and metrics endpoint. Defaults to
    /// 9090. On host network it is a port of the node: host-mode policies
    /// that may share nodes must use different ones (the operator refuses
    /// a clash).
    #[serde(default = "default_http_port")]
    #[schemars(range(min = 1024, max = 65535))]
    pub http_port: i32,

    /// Where the recorder pods run: on host network, the nodes of the media
    /// pool (a label the platform gives them, and the taint that keeps
    /// other workloads off). One recorder of a policy per node.
    #[serde(default, skip_serializing_if = "Placement::is_empty")]
    pub placement: Placement,

    /// CPU and memory for each recorder pod. Encoding a recorded call to MP3
    /// costs about 2.5 ms of CPU per second of call. Unset, they are sized
    /// from the calls the RTP range holds (four ports a call): a request of
    /// 1m CPU a call (at least 100m) and 64 MiB + 256 KiB a call of memory,
    /// a memory limit of twice that, and no CPU limit (a throttled media
    /// path delays packets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// What a recording contains while an `OnDemand` user has paused it:
    /// `Skip` leaves the paused time out of the file, `Silence` keeps it as
    /// silence so the file's timeline matches the call. Defaults to `Skip`.
    #[serde(default)]
    pub pause_behaviour: PauseBehaviour,

    /// `Stereo` puts the caller on the left channel and the callee on the
    /// right; `Mono` mixes both. Defaults to `Stereo`.
    #[serde(default)]
    pub channels: ChannelLayout,

    /// Constant MP3 bitrate in kbit/s. Defaults to 32 (stereo 8 kHz speech).
    #[serde(default = "default_bitrate")]
    #[schemars(range(min = 8, max = 128))]
    pub mp3_bitrate_kbps: i32,

    /// The spool: each recorder pod's own persistent volume, where
    /// recordings are written as calls go and wait until the object store
    /// has them. A pod that is replaced (rollout, node loss) finds its
    /// predecessor's spool and uploads what is left in it.
    #[serde(default)]
    pub spool: SpoolSpec,
}

/// Each recorder pod's persistent spool volume.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SpoolSpec {
    /// Size of each recorder pod's spool volume, e.g. `10Gi` (default). The
    /// recorder refuses new recordings once the spool holds 90% of it (at
    /// least 256Mi less), so calls in progress and their sidecars still
    /// fit; at 32 kbit/s 1Gi holds about 70 hours of recordings waiting for
    /// the store. At least 1Gi.
    #[serde(default = "default_spool_size")]
    #[schemars(regex(pattern = r"^[1-9][0-9]*(Mi|Gi|Ti)$"))]
    pub size: String,
    /// StorageClass of the spool volumes; the cluster's default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub storage_class_name: Option<String>,
}

impl Default for SpoolSpec {
    fn default() -> Self {
        Self {
            size: default_spool_size(),
            storage_class_name: None,
        }
    }
}

fn default_spool_size() -> String {
    "10Gi".to_owned()
}

impl Default for RecorderSpec {
    fn default() -> Self {
        Self {
            replicas: default_replicas(),
            sip: SipListener::default(),
            peers: Vec::new(),
            rtp_ports: PortRange::default(),
            network: NetworkSpec::default(),
            http_port: default_http_port(),
            unreadable_media: UnreadableMedia::default(),
            placement: Placement::default(),
            resources: None,
            pause_behaviour: PauseBehaviour::default(),
            channels: ChannelLayout::default(),
            mp3_bitrate_kbps: default_bitrate(),
            spool: SpoolSpec::default(),
        }
    }
}

fn default_replicas() -> i32 {
    1
}

fn default_http_port() -> i32 {
    i32::from(earshot_contracts::names::RECORDER_HTTP_PORT)
}

/// What happens to a call whose audio the recorder cannot read.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UnreadableMedia {
    /// Relayed; the recording is marked incomplete.
    #[default]
    Relay,
    /// The offer is refused with 488.
    Refuse,
}

impl UnreadableMedia {
    fn is_relay(&self) -> bool {
        *self == UnreadableMedia::Relay
    }
}

/// Node placement of the recorder pods.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Placement {
    /// Labels a node must have, e.g. `{earshot.io/media: "true"}`.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub node_selector: std::collections::BTreeMap<String, String>,
    /// Taints of those nodes the recorder pods tolerate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub tolerations: Vec<k8s_openapi::api::core::v1::Toleration>,
    /// Further node affinity (zones, instance types).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_affinity: Option<k8s_openapi::api::core::v1::NodeAffinity>,
}

impl Placement {
    /// Nothing set: any node.
    pub fn is_empty(&self) -> bool {
        self.node_selector.is_empty() && self.tolerations.is_empty() && self.node_affinity.is_none()
    }
}

fn default_bitrate() -> i32 {
    32
}

/// The recorder's SIP listener.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SipListener {
    /// Port for SIP on every listed transport. Defaults to 5060.
    #[serde(default = "default_sip_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// Transports to listen on. Defaults to both `UDP` and `TCP`; `TLS`
    /// listens on `tls.port` and needs `tls`.
    #[serde(default = "default_transports")]
    #[schemars(length(min = 1, max = 3))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub transports: Vec<Transport>,
    /// SIP over TLS: the certificate, and the CA that next hops'
    /// certificates are checked against. Needed when `transports` lists
    /// `TLS` or a peer's `nextHopTransport` is `TLS` (Microsoft Teams
    /// Direct Routing, secure trunks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<SipTls>,
}

/// SIP over TLS for a policy's recorders.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SipTls {
    /// A `kubernetes.io/tls` Secret in the policy's namespace (`tls.crt`,
    /// `tls.key`), e.g. what a cert-manager Certificate writes. A renewed
    /// certificate is picked up without a restart; calls are not dropped.
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: String,
    /// Port of the TLS listener. Defaults to 5061.
    #[serde(default = "default_tls_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// A ConfigMap in the policy's namespace whose key `ca.crt` holds the
    /// CA certificates (PEM) TLS next hops' certificates must chain to;
    /// their name is checked against the peer's `nextHop`. Required for
    /// TLS next hops and for `requireClientCertificate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub ca_config_map: Option<String>,
    /// Present the certificate to TLS next hops too (mutual TLS).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub client_certificate: bool,
    /// Refuse TLS peers without a certificate chaining to the CA.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require_client_certificate: bool,
}

fn default_tls_port() -> i32 {
    5061
}

impl Default for SipListener {
    fn default() -> Self {
        Self {
            port: default_sip_port(),
            transports: default_transports(),
            tls: None,
        }
    }
}

fn default_sip_port() -> i32 {
    5060
}

fn default_transports() -> Vec<Transport> {
    vec![Transport::Udp, Transport::Tcp]
}

/// A SIP peer: where its requests come from and where they are sent on.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.siprec) && self.siprec) || has(self.nextHop)").message("peers[].nextHop is required unless the peer is a SIPREC client (siprec: true)"))]
pub struct SipPeer {
    /// Name of the peer, e.g. `pbx` or `trunk`. Unique within the policy.
    #[schemars(regex(pattern = r"^[a-z0-9]([a-z0-9\-]{0,61}[a-z0-9])?$"))]
    pub name: String,
    /// Source networks of this peer in CIDR notation, e.g. `10.0.4.0/24` or
    /// `192.0.2.10/32`. A request whose source address is in one of them
    /// belongs to this peer.
    #[schemars(length(min = 1, max = 32), inner(length(min = 3, max = 49)))]
    #[x_kube(validation = Rule::new("self.all(c, isCIDR(c))").message("peers[].sources must be CIDRs such as 10.0.4.0/24 or 192.0.2.10/32"))]
    pub sources: Vec<String>,
    /// Where this peer's new requests are forwarded: `host:port` of the
    /// next hop, e.g. `trunk.example.net:5060` or `10.0.5.2:5060`.
    /// Required unless the peer is a SIPREC client (`siprec`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9.\-]+:[0-9]{1,5}$"))]
    pub next_hop: Option<String>,
    /// Transport towards the next hop. Defaults to `UDP`.
    #[serde(default = "default_transport")]
    pub next_hop_transport: Transport,
    /// This peer is a session recording client (SIPREC, RFC 7866): an SBC
    /// or PBX that forks its calls' media to a recording server. Its
    /// SIPREC INVITEs (`Require: siprec`) are answered by the recorder and
    /// recorded out of the call's media path: a recorder that fails never
    /// drops a call. Streams are matched to participants through the
    /// metadata; the policy's users by their AoR's user part.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub siprec: bool,
}

fn default_transport() -> Transport {
    Transport::Udp
}

/// An inclusive UDP port range.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PortRange {
    /// First port of the range. Defaults to 20000.
    #[serde(default = "default_rtp_min")]
    #[schemars(range(min = 1024, max = 65535))]
    pub min: i32,
    /// Last port of the range. Defaults to 20999.
    #[serde(default = "default_rtp_max")]
    #[schemars(range(min = 1024, max = 65535))]
    pub max: i32,
}

impl Default for PortRange {
    fn default() -> Self {
        Self {
            min: default_rtp_min(),
            max: default_rtp_max(),
        }
    }
}

fn default_rtp_min() -> i32 {
    20000
}

fn default_rtp_max() -> i32 {
    20999
}

/// How the recorder pods attach to the network.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct NetworkSpec {
    /// `Pod` uses the pod network behind a Service (PBX inside the cluster);
    /// `Host` uses the node's network so PBXes outside the cluster reach the
    /// recorder's RTP ports directly. Defaults to `Pod`.
    #[serde(default)]
    pub mode: NetworkMode,
    /// Address written into SDP and Record-Route so peers send media and
    /// in-dialog requests to the recorder. Defaults to the pod IP (`Pod`) or
    /// the node IP (`Host`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 45))]
    #[x_kube(validation = Rule::new("isIP(self)").message("network.advertisedAddress must be an IP address"))]
    pub advertised_address: Option<String>,
    /// `Host`: networks inside the cluster (pod and node networks, a PBX's
    /// LAN): peers there are told the node's internal address; every
    /// other peer is told its external address (the node's
    /// `earshot.io/external-address` annotation, else its ExternalIP), and
    /// a call between the two gets two Record-Routes. Defaults to the
    /// private ranges (10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub internal_networks: Vec<String>,
    /// Accept SDP that names a loopback address or the recorder's own as
    /// media address: only for a cluster whose phones run on the same
    /// machine (a demo, a test). Off by default: a peer naming such an
    /// address could make the relay send media to the node itself.
    /// Link-local addresses are refused always.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_local_media: bool,
    /// The kernel fast path (`Host` only): an eBPF program at the node's
    /// interfaces relays each established stream in the kernel and hands
    /// the recorder a copy of every packet, instead of a receive and a send
    /// per packet in userspace. `Off` (the default), `Auto` (used where the
    /// node allows it: kernel 6.7 or later; else userspace, which the
    /// recorder logs at start and reports in `earshot_kernel_fast_path`,
    /// and the status in `replicas[].relay`) or
    /// `Required` (a recorder that cannot load it does not start). Asking
    /// for it runs the recorder container as root with only the
    /// capabilities BPF and NET_ADMIN (and a namespace that admits host
    /// network already allows them).
    #[serde(default, skip_serializing_if = "KernelFastPath::is_off")]
    pub kernel_fast_path: KernelFastPath,
}

/// Whether the recorders relay established streams in the kernel.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KernelFastPath {
    /// Userspace only.
    #[default]
    Off,
    /// The kernel where it can be loaded, else userspace.
    Auto,
    /// The kernel, or no recorder.
    Required,
}

impl KernelFastPath {
    fn is_off(&self) -> bool {
        *self == KernelFastPath::Off
    }
}

/// Network attachment of recorder pods.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NetworkMode {
    /// The pod network.
    #[default]
    Pod,
    /// The node's network (hostNetwork).
    Host,
}

/// The recordings console of a policy.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ConsoleSpec {
    /// Run the console (one pod, `earshot-<policy>-console`).
    #[serde(default)]
    pub enabled: bool,
    /// Secret in the policy's namespace with an access key that can only
    /// *read* the bucket: the console never needs more, and cannot delete
    /// or change a recording even if it wanted to.
    pub credentials_secret: SecretKeys,
    /// `false` (default): the page listens on 127.0.0.1 inside its pod and
    /// is reached with `kubectl port-forward` (RBAC on `pods/portforward`
    /// in the namespace is the access control). `true`: it listens on the
    /// pod network behind a Service `earshot-<policy>-console` on port 8080,
    /// for the cluster's ingress and an authenticating proxy (the user it
    /// names in `X-Forwarded-User` is written to the audit log).
    #[serde(default)]
    pub expose: bool,
}

/// Announcements that tell the parties a call is recorded.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[x_kube(validation = Rule::new("self.mode != 'Prompt' || has(self.prompt)").message("announcement.mode Prompt needs announcement.prompt: the ConfigMap key holding the WAV or MP3 file").reason(Reason::FieldValueRequired).field_path(".prompt"))]
#[serde(rename_all = "camelCase")]
pub struct AnnouncementSpec {
    /// What plays when recording starts (on answer for `Always` users, on
    /// the shortcode for `OnDemand` users): `None` (default), `Beep` (a
    /// 1400 Hz beep of half a second) or `Prompt` (the `prompt` file).
    #[serde(default)]
    pub mode: AnnouncementMode,
    /// The spoken prompt for `Prompt` mode: a key of a ConfigMap in the
    /// policy's namespace holding a WAV or MP3 file (in `binaryData`), at
    /// most 60 seconds. It is converted to 8 kHz mono for the call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<PromptRef>,
    /// Who hears announcements: `Both` parties (default) or only the
    /// `FarEnd`, the party that is not the recorded policy user.
    #[serde(default)]
    pub to: AnnouncementTarget,
    /// Seconds between reminder beeps (1400 Hz, 0.2 s) while a call is
    /// recorded; 0 (default) for none, otherwise at least 5.
    #[serde(default, skip_serializing_if = "is_zero")]
    #[schemars(range(min = 0, max = 3600))]
    #[x_kube(validation = Rule::new("self == 0 || self >= 5").message("announcement.periodicBeepSeconds must be 0 (off) or at least 5"))]
    pub periodic_beep_seconds: i32,
    /// Play two short 700 Hz tones when an `OnDemand` user stops recording.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stop_tone: bool,
}

fn is_zero(v: &i32) -> bool {
    *v == 0
}

impl AnnouncementSpec {
    /// Whether nothing is ever played.
    pub fn is_off(&self) -> bool {
        self.mode == AnnouncementMode::None && self.periodic_beep_seconds == 0 && !self.stop_tone
    }

    /// The prompt, when `Prompt` mode plays one.
    pub fn prompt_in_use(&self) -> Option<&PromptRef> {
        self.prompt
            .as_ref()
            .filter(|_| self.mode == AnnouncementMode::Prompt)
    }
}

/// A key of a ConfigMap in the policy's namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PromptRef {
    /// The ConfigMap's name.
    #[schemars(length(min = 1, max = 253))]
    pub config_map: String,
    /// The key holding the file, e.g. `prompt.wav`.
    #[schemars(length(min = 1, max = 253))]
    #[schemars(regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: String,
}

/// What the operator last did with the policy.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RecordingPolicyStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `RecorderAvailable`, `StorageReady` and `RetentionEnforced`,
    /// each with a reason and a message saying what to fix.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Address PBXes and trunks send SIP to (`host:port`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_address: Option<String>,
    /// Recorder pods ready to take calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    /// Each recorder pod: where it runs, the addresses it advertises and
    /// whether it is ready (`kubectl get rp -o wide`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["pod"]))]
    pub replicas: Vec<ReplicaStatus>,
    /// Retention the storage lifecycle rule enforces now, in days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective_retention_days: Option<i32>,
    /// When the effective retention last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_effective_since: Option<Time>,
    /// Users in the policy per effective mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users: Option<UserCounts>,
}

/// One recorder pod as the status reports it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaStatus {
    /// The pod.
    pub pod: String,
    /// Its node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The address peers inside the cluster's networks reach it on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub internal_address: Option<String>,
    /// The address peers outside reach it on (host network, a node with one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_address: Option<String>,
    /// Whether it takes calls.
    pub ready: bool,
    /// What relays its established streams, when the policy asks for the
    /// kernel fast path: `kernel`, `userspace` (`Auto` where it cannot
    /// load: the recorder's log says why) or `unknown` (its metrics did not
    /// answer), as the recorder reports it (`earshot_kernel_fast_path`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay: Option<String>,
    /// One line: `pod@node internal/external ready|not-ready`, and the
    /// relay when the policy asks for the kernel fast path.
    pub summary: String,
}

/// Users in a policy per effective mode.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct UserCounts {
    /// All users listed.
    pub total: i32,
    /// Users recorded on every call.
    pub always: i32,
    /// Users who toggle recording with their shortcode.
    pub on_demand: i32,
    /// Users never recorded.
    pub never: i32,
}

impl RecordingPolicySpec {
    /// The mode that applies to `user`: their own, or the policy default.
    pub fn effective_mode(&self, user: &PolicyUser) -> RecordingMode {
        user.mode.unwrap_or(self.default_mode)
    }

    /// The shortcode that applies to `user`: their own, or the policy default.
    pub fn effective_shortcode<'a>(&'a self, user: &'a PolicyUser) -> Option<&'a str> {
        user.shortcode
            .as_deref()
            .or(self.default_shortcode.as_deref())
    }

    /// Users per effective mode, as reported in the status.
    pub fn user_counts(&self) -> UserCounts {
        let mut counts = UserCounts {
            total: self.users.len() as i32,
            ..UserCounts::default()
        };
        for user in &self.users {
            match self.effective_mode(user) {
                RecordingMode::Always => counts.always += 1,
                RecordingMode::OnDemand => counts.on_demand += 1,
                RecordingMode::Never => counts.never += 1,
            }
        }
        counts
    }
}
