//! The recorder's config file: the YAML the operator renders into a
//! ConfigMap from a `RecordingPolicy`, and a person writes by hand for a
//! standalone recorder. [`RecorderConfig::check`] applies every check that
//! needs nothing but the file, naming the field that is wrong, so the
//! operator, `earshot-recorder --check` and a reload refuse the same files
//! with the same words.

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::modes::{
    AnnouncementMode, AnnouncementTarget, ChannelLayout, PauseBehaviour, RecordingMode, Transport,
};
use crate::names;
use crate::net::IpNet;

/// MP3 bitrates LAME offers at 8 kHz (MPEG-2.5 layer III), kbit/s.
pub const MP3_BITRATES: &[u32] = &[8, 16, 24, 32, 40, 48, 64, 80, 96, 112, 128, 160];

/// The config file as written.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RecorderConfig {
    /// SIP listener.
    pub sip: SipConfig,
    /// Address written into Via, Record-Route and SDP. Defaults to
    /// `$EARSHOT_ADVERTISED_ADDRESS`, then to the SIP listen address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advertised_address: Option<IpAddr>,
    /// Split horizon: the address peers outside `internalNetworks` reach
    /// the recorder on (a node's public address), named in Via,
    /// Record-Route and SDP toward them; the advertised address toward the
    /// rest. Unset: one address for everybody.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_address: Option<IpAddr>,
    /// The networks that reach the advertised (internal) address when
    /// there is an external one. Empty: the private ranges (10/8,
    /// 172.16/12, 192.168/16, 100.64/10, fc00::/7) and loopback.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub internal_networks: Vec<String>,
    /// Host network: the addresses of each node a recorder may run on, by
    /// node name; `$EARSHOT_NODE_NAME` picks this recorder's. The operator
    /// renders them from the Nodes (InternalIP, and the
    /// `earshot.io/external-address` annotation or ExternalIP).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_addresses: BTreeMap<String, NodeAddresses>,
    /// RTP relay ports.
    pub rtp: RtpConfig,
    /// Media-path shards: each owns the calls whose Call-ID hashes to it and
    /// an equal share of the RTP ports, on its own thread, so a second core
    /// records more calls and one slow shard delays only its own calls.
    /// `0` (the default): one per CPU the process may use (its cgroup
    /// quota included).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub shards: u16,
    /// Metrics and health endpoints.
    #[serde(default)]
    pub http: HttpConfig,
    /// SIP peers and their next hops.
    pub peers: Vec<PeerConfig>,
    /// Mode of users without their own.
    #[serde(default)]
    pub default_mode: RecordingMode,
    /// Shortcode of users without their own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_shortcode: Option<String>,
    /// Policy users.
    #[serde(default)]
    pub users: Vec<UserConfig>,
    /// Call event log.
    #[serde(default, skip_serializing_if = "EventsConfig::is_off")]
    pub events: EventsConfig,
    /// How long SIGTERM waits for calls in progress before exiting.
    #[serde(default = "default_grace", with = "duration")]
    pub shutdown_grace: Duration,
    /// How recordings are made.
    #[serde(default)]
    pub recording: RecordingConfig,
    /// Local disk where recordings are written as calls go.
    #[serde(default)]
    pub spool: SpoolConfig,
    /// Where finished recordings are stored.
    #[serde(default)]
    pub storage: StorageConfig,
    /// Name of this recorder in sidecars; defaults to the host name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// What tells the parties the call is recorded.
    #[serde(default, skip_serializing_if = "AnnouncementConfig::is_off")]
    pub announcement: AnnouncementConfig,
}

fn is_zero(n: &u16) -> bool {
    *n == 0
}

fn default_grace() -> Duration {
    Duration::from_secs(3600)
}

/// `Duration` as a humantime string (`90s`, `1h`).
mod duration {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        if d.subsec_nanos() == 0 {
            s.serialize_str(&format!("{}s", d.as_secs()))
        } else {
            s.serialize_str(&humantime::format_duration(*d).to_string())
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(serde::de::Error::custom)
    }
}

/// SIP listener settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SipConfig {
    /// Address and port to listen on.
    pub listen: SocketAddr,
    /// Transports to listen on.
    #[serde(default = "default_transports")]
    pub transports: Vec<Transport>,
    /// What a request from a source in no peer's networks gets: `Drop`
    /// (default: nothing, counted; no answer to reflect off the recorder)
    /// or `Refuse` (403).
    #[serde(default, skip_serializing_if = "UnknownSources::is_drop")]
    pub unknown_sources: UnknownSources,
    /// What one peer may take of the recorder.
    #[serde(default)]
    pub limits: SipLimits,
    /// SIP over TLS: certificate and key (PEM files, as a
    /// `kubernetes.io/tls` Secret mounts them), reloaded when they change;
    /// needed when `transports` lists `TLS` or a peer's next hop is TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
}

/// SIP over TLS.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsConfig {
    /// Port of the TLS listener (default 5061).
    #[serde(default = "default_tls_port")]
    pub port: u16,
    /// The certificate chain (PEM), e.g. `/etc/earshot/tls/tls.crt`.
    pub certificate: PathBuf,
    /// Its private key (PEM), e.g. `/etc/earshot/tls/tls.key`.
    pub key: PathBuf,
    /// CA certificates (PEM) next hops' certificates must chain to; their
    /// name (or IP) is verified against the next hop's host. Required for
    /// TLS next hops.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    /// Present the certificate to TLS next hops too (mutual TLS, as
    /// Microsoft Teams Direct Routing requires).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub client_certificate: bool,
    /// Ask TLS peers that connect for a certificate chaining to `ca`
    /// (connections without one are refused).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require_client_certificate: bool,
}

fn default_tls_port() -> u16 {
    5061
}

/// How requests from unknown sources are answered.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub enum UnknownSources {
    /// Not at all.
    #[default]
    Drop,
    /// With 403 Forbidden.
    Refuse,
}

impl UnknownSources {
    fn is_drop(&self) -> bool {
        *self == UnknownSources::Drop
    }
}

/// Resource limits per peer and on SIP over TCP. Beyond the per-peer ones
/// new requests get 503 with Retry-After, so one peer cannot take the
/// ports and the transactions every other peer needs.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct SipLimits {
    /// Calls in progress one peer may have.
    pub calls_per_peer: u32,
    /// Server transactions in progress one peer may have.
    pub transactions_per_peer: u32,
    /// New calls per second one peer may start (a burst of as many).
    pub invites_per_second_per_peer: u32,
    /// SIP TCP connections open at once.
    pub tcp_connections: u32,
    /// SIP TCP connections open at once from one source address.
    pub tcp_connections_per_source: u32,
    /// A TCP connection that carries nothing for this long is closed.
    pub tcp_idle_seconds: u32,
    /// A message started on a TCP connection must be complete within this.
    pub tcp_message_seconds: u32,
}

impl Default for SipLimits {
    fn default() -> Self {
        Self {
            calls_per_peer: 4000,
            transactions_per_peer: 8000,
            invites_per_second_per_peer: 200,
            tcp_connections: 2048,
            tcp_connections_per_source: 256,
            tcp_idle_seconds: 600,
            tcp_message_seconds: 10,
        }
    }
}

fn default_transports() -> Vec<Transport> {
    vec![Transport::Udp, Transport::Tcp]
}

/// RTP relay settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RtpConfig {
    /// Local address for RTP sockets.
    pub bind: IpAddr,
    /// First port (rounded up to even).
    pub port_min: u16,
    /// Last port.
    pub port_max: u16,
    /// Take SDP media addresses that are loopback or the recorder's own
    /// address (for a recorder tried out on one machine). Off by default: a
    /// peer naming one would make the relay send media there. Link-local
    /// addresses (cloud metadata services among them) are always refused.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_local_media: bool,
    /// What happens to video streams offered beside audio: `Relay` (the
    /// default: relayed, never recorded) or `Refuse` (port 0 in the SDP the
    /// other party gets, so the call goes on with audio only).
    #[serde(default, skip_serializing_if = "VideoPolicy::is_default")]
    pub video: VideoPolicy,
    /// What happens to a call whose audio the recorder cannot read because
    /// it is encrypted end to end (DTLS-SRTP, or SRTP without an `a=crypto`
    /// key it supports): `Relay` (the default: the call goes on, its
    /// recording is marked) or `Refuse` (the offer is answered 488, as a
    /// compliance platform that must record every call wants).
    #[serde(default, skip_serializing_if = "VideoPolicy::is_default")]
    pub unreadable_media: VideoPolicy,
    /// The kernel fast path: established streams relayed by an eBPF program
    /// at the interfaces' ingress, with a copy of each packet for the
    /// recording. `Off` (the default), `Auto` (used when the process may
    /// load it: CAP_BPF and CAP_NET_ADMIN, a kernel with TCX, a build with
    /// the program; else userspace, said at start and in `/metrics`) or
    /// `Required` (the recorder does not start without it).
    #[serde(default, skip_serializing_if = "KernelFastPath::is_off")]
    pub kernel_fast_path: KernelFastPath,
    /// Interfaces the fast path watches; empty: every interface up at start
    /// (one added later is relayed in userspace).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kernel_interfaces: Vec<String>,
    /// Bytes of each shard's ring of copies (rounded up to a power of two,
    /// at least a page); 0: 4 MiB, about 4 000 packets, 0.4 s of 100 calls
    /// at 20 ms. A full ring loses copies (counted, the recordings marked),
    /// never packets.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub kernel_ring_bytes: u32,
}

fn is_zero_u32(v: &u32) -> bool {
    *v == 0
}

/// Whether the relay uses the kernel fast path.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub enum KernelFastPath {
    /// Userspace only.
    #[default]
    Off,
    /// The kernel when it can be loaded, else userspace.
    Auto,
    /// The kernel, or no recorder.
    Required,
}

impl KernelFastPath {
    fn is_off(&self) -> bool {
        *self == KernelFastPath::Off
    }
}

/// What the relay does with media it does not record (video; audio it
/// cannot read).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub enum VideoPolicy {
    /// Relayed (not recorded).
    #[default]
    Relay,
    /// Refused: a video stream is disabled in the SDP (the call keeps its
    /// audio); an offer of unreadable audio is answered 488.
    Refuse,
}

impl VideoPolicy {
    fn is_default(&self) -> bool {
        *self == VideoPolicy::Relay
    }
}

impl RtpConfig {
    /// The even RTP ports of the range (each with its odd RTCP neighbour).
    pub fn ports(&self) -> Vec<u16> {
        let min = self.port_min.div_ceil(2) * 2;
        (min..self.port_max).step_by(2).collect()
    }
}

/// HTTP endpoint settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpConfig {
    /// Address of `/metrics`, `/healthz` and `/readyz`.
    pub listen: SocketAddr,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], names::RECORDER_HTTP_PORT)),
        }
    }
}

/// A SIP peer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PeerConfig {
    /// Name for logs.
    pub name: String,
    /// Source networks (CIDR).
    pub sources: Vec<String>,
    /// `host:port` of the next hop for this peer's new requests; may be
    /// empty for a SIPREC client (`siprec`), which only sends recording
    /// sessions.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub next_hop: String,
    /// Transport to the next hop.
    #[serde(default = "default_udp")]
    pub next_hop_transport: Transport,
    /// A session recording client (an SBC or PBX speaking SIPREC, RFC
    /// 7866): its SIPREC INVITEs are recording sessions the recorder
    /// answers and records, out of the call's media path.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub siprec: bool,
}

fn default_udp() -> Transport {
    Transport::Udp
}

/// A policy user.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UserConfig {
    /// Extension (SIP user part).
    pub extension: String,
    /// Name for reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Mode; defaults to `defaultMode`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<RecordingMode>,
    /// Shortcode `*N`; defaults to `defaultShortcode`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shortcode: Option<String>,
}

/// Where call events are written.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EventsConfig {
    /// A JSON-lines file that receives one line per call event; none when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// Which DTMF digits the log names: `Masked` (default) names only
    /// shortcode keys (`*` and the digit completing a shortcode) and writes
    /// every other digit as masked, since those may be PINs or card numbers
    /// (PCI DSS forbids keeping them); `All` names every digit. Digits of
    /// calls no policy user may record are never logged.
    #[serde(default, skip_serializing_if = "DtmfDigits::is_masked")]
    pub dtmf_digits: DtmfDigits,
}

/// Which DTMF digits the event log names.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub enum DtmfDigits {
    /// Shortcode keys only; other digits are masked.
    #[default]
    Masked,
    /// Every digit.
    All,
}

impl DtmfDigits {
    fn is_masked(&self) -> bool {
        *self == DtmfDigits::Masked
    }
}

impl EventsConfig {
    fn is_off(&self) -> bool {
        self.path.is_none() && self.dtmf_digits.is_masked()
    }
}

/// Recording settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RecordingConfig {
    /// `Skip` or `Silence` for paused time.
    #[serde(default)]
    pub pause_behaviour: PauseBehaviour,
    /// `Stereo` (left caller, right callee) or `Mono`.
    #[serde(default)]
    pub channels: ChannelLayout,
    /// CBR bitrate in kbit/s, one of [`MP3_BITRATES`].
    #[serde(default = "default_bitrate")]
    pub mp3_bitrate_kbps: u32,
    /// Encoder threads; defaults to the number of CPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoder_threads: Option<usize>,
}

impl Default for RecordingConfig {
    fn default() -> Self {
        Self {
            pause_behaviour: PauseBehaviour::Skip,
            channels: ChannelLayout::Stereo,
            mp3_bitrate_kbps: default_bitrate(),
            encoder_threads: None,
        }
    }
}

fn default_bitrate() -> u32 {
    32
}

/// Spool settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SpoolConfig {
    /// Directory on local disk.
    #[serde(default = "default_spool")]
    pub dir: PathBuf,
    /// Above this many bytes new recordings are refused (old ones are never deleted).
    #[serde(default = "default_spool_max")]
    pub max_bytes: u64,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        Self {
            dir: default_spool(),
            max_bytes: default_spool_max(),
        }
    }
}

fn default_spool() -> PathBuf {
    PathBuf::from("spool")
}

fn default_spool_max() -> u64 {
    10 * 1024 * 1024 * 1024
}

/// Storage settings: exactly one of `filesystem` and `s3`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StorageConfig {
    /// A local directory (the embedded default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filesystem: Option<FilesystemConfig>,
    /// An S3-compatible bucket; credentials from `AWS_ACCESS_KEY_ID` and
    /// `AWS_SECRET_ACCESS_KEY` in the environment (the operator fills them
    /// from the policy's Secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Config>,
    /// Key prefix of every object, e.g. `acme/office/`.
    #[serde(default)]
    pub prefix: String,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            filesystem: Some(FilesystemConfig {
                path: PathBuf::from("recordings"),
                retention_days: None,
            }),
            s3: None,
            prefix: String::new(),
        }
    }
}

/// A local directory.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FilesystemConfig {
    /// The directory; created if missing.
    pub path: PathBuf,
    /// Days recordings are kept; the recorder deletes older ones at start and
    /// daily. (An S3 bucket does this itself with the operator's lifecycle rule.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_days: Option<u32>,
}

/// An S3-compatible bucket.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct S3Config {
    /// Endpoint URL.
    pub endpoint: String,
    /// Bucket.
    pub bucket: String,
    /// Signing region.
    #[serde(default = "default_region")]
    pub region: String,
    /// Path-style addressing (MinIO, Garage, Ceph RGW).
    #[serde(default = "default_true")]
    pub path_style: bool,
}

fn default_region() -> String {
    "us-east-1".to_owned()
}

fn default_true() -> bool {
    true
}

/// Announcement settings (`spec.announcement` of the policy).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AnnouncementConfig {
    /// `None`, `Beep` or `Prompt`.
    #[serde(default)]
    pub mode: AnnouncementMode,
    /// The prompt file (WAV or MP3), for `Prompt`; relative paths are
    /// relative to the config file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<PathBuf>,
    /// `FarEnd` or `Both`.
    #[serde(default)]
    pub to: AnnouncementTarget,
    /// Reminder beep interval while recording; 0 for none, else at least 5.
    #[serde(default)]
    pub periodic_beep_seconds: u32,
    /// A tone when an OnDemand user stops recording.
    #[serde(default)]
    pub stop_tone: bool,
}

impl AnnouncementConfig {
    /// Whether nothing is ever played.
    pub fn is_off(&self) -> bool {
        self.mode == AnnouncementMode::None && self.periodic_beep_seconds == 0 && !self.stop_tone
    }

    /// The prompt file, when `Prompt` mode plays one.
    pub fn prompt_in_use(&self) -> Option<&PathBuf> {
        self.prompt
            .as_ref()
            .filter(|_| self.mode == AnnouncementMode::Prompt)
    }
}

/// A field of the file with the wrong value, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct Invalid {
    /// The field, e.g. `users[2].extension`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> Invalid {
    Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// A user with the mode and shortcode that apply to them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EffectiveUser {
    /// Display name for reports.
    pub display_name: Option<String>,
    /// Effective mode.
    pub mode: RecordingMode,
    /// Effective shortcode digit (`*5` → 5).
    pub shortcode: Option<u8>,
}

/// One node's addresses (host network).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeAddresses {
    /// The address inside the cluster's networks (the Node's InternalIP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub internal: Option<IpAddr>,
    /// The address peers outside reach the node on, if it has another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<IpAddr>,
}

/// The networks `internalNetworks` defaults to: private and shared
/// address space, unique-local IPv6, loopback.
pub const DEFAULT_INTERNAL_NETWORKS: &[&str] = &[
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "fc00::/7",
    "::1/128",
];

/// What the checks resolved: the values the recorder runs on.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    /// The address peers reach the recorder on.
    pub advertised: IpAddr,
    /// The address peers outside `internal_networks` reach it on, if another.
    pub external: Option<IpAddr>,
    /// The networks that get `advertised` when there is an external address.
    pub internal_networks: Vec<IpNet>,
    /// `nodeAddresses` is set and has no entry for this node (named).
    pub node_missing: Option<String>,
    /// Users by extension, with their effective mode and shortcode.
    pub users: BTreeMap<String, EffectiveUser>,
    /// Peers with their parsed source networks.
    pub peers: Vec<(PeerConfig, Vec<IpNet>)>,
}

/// The digit of a shortcode `*N`.
pub fn shortcode_digit(s: &str) -> Option<u8> {
    match s.as_bytes() {
        [b'*', d @ b'0'..=b'9'] => Some(d - b'0'),
        _ => None,
    }
}

/// Whether `s` can be a policy user's extension (a SIP user part).
pub fn valid_extension(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-_+".contains(&b))
}

impl RecorderConfig {
    /// Parses the file's text; the message names the line and column.
    pub fn from_yaml(text: &str) -> Result<RecorderConfig, String> {
        serde_yaml::from_str(text).map_err(|e| e.to_string())
    }

    /// Every check that needs only the file (and the advertised address the
    /// environment gives, if any), in the order a reader meets the fields.
    pub fn check(&self, advertised_env: Option<&str>) -> Result<Checked, Invalid> {
        self.check_on(advertised_env, None)
    }

    /// Like [`check`](Self::check), on the node `node` names
    /// (`$EARSHOT_NODE_NAME`): its `nodeAddresses` entry gives the
    /// advertised and external addresses unless the file sets them.
    pub fn check_on(
        &self,
        advertised_env: Option<&str>,
        node: Option<&str>,
    ) -> Result<Checked, Invalid> {
        if !MP3_BITRATES.contains(&self.recording.mp3_bitrate_kbps) {
            return Err(invalid(
                "recording.mp3BitrateKbps",
                format!(
                    "{} is not one of {MP3_BITRATES:?}",
                    self.recording.mp3_bitrate_kbps
                ),
            ));
        }
        if self.storage.filesystem.is_some() == self.storage.s3.is_some() {
            return Err(invalid("storage", "set exactly one of filesystem or s3"));
        }
        if self.sip.transports.is_empty() {
            return Err(invalid("sip.transports", "at least one of UDP, TCP, TLS"));
        }
        let tls_used = self.sip.transports.contains(&Transport::Tls)
            || self
                .peers
                .iter()
                .any(|p| p.next_hop_transport == Transport::Tls);
        if tls_used && !self.sip.transports.contains(&Transport::Tls) {
            return Err(invalid(
                "sip.transports",
                "a peer's next hop is TLS: list TLS too, so its in-dialog requests reach the TLS port our Record-Route names",
            ));
        }
        if tls_used && self.sip.tls.is_none() {
            return Err(invalid(
                "sip.tls",
                "TLS is listed (sip.transports or a peer's nextHopTransport): give sip.tls.certificate and sip.tls.key",
            ));
        }
        if let Some(t) = &self.sip.tls {
            if t.port == self.sip.listen.port() {
                return Err(invalid(
                    "sip.tls.port",
                    "must differ from sip.listen's port (UDP and TCP listen there)",
                ));
            }
            let tls_hops = self
                .peers
                .iter()
                .any(|p| p.next_hop_transport == Transport::Tls);
            if (tls_hops || t.require_client_certificate) && t.ca.is_none() {
                return Err(invalid(
                    "sip.tls.ca",
                    "TLS next hops and required client certificates are verified against a CA bundle: give sip.tls.ca",
                ));
            }
        }
        let on_node = node.and_then(|n| self.node_addresses.get(n));
        let node_missing = match node {
            Some(n) if !self.node_addresses.is_empty() && on_node.is_none() => Some(n.to_owned()),
            None if !self.node_addresses.is_empty() => Some(String::new()),
            _ => None,
        };
        // An explicit advertised address (a VIP in front of the nodes) wins
        // over the node's: its external one is taken only without it.
        let external = self.external_address.or_else(|| {
            on_node
                .filter(|_| self.advertised_address.is_none())
                .and_then(|a| a.external)
        });
        let internal_networks = if self.internal_networks.is_empty() {
            DEFAULT_INTERNAL_NETWORKS
                .iter()
                .filter_map(|n| IpNet::parse(n))
                .collect()
        } else {
            self.internal_networks
                .iter()
                .enumerate()
                .map(|(i, n)| {
                    IpNet::parse(n).ok_or_else(|| {
                        invalid(
                            format!("internalNetworks[{i}]"),
                            format!("{n:?} is not a CIDR"),
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()?
        };
        let advertised = match self
            .advertised_address
            .or_else(|| on_node.and_then(|a| a.internal))
        {
            Some(a) => a,
            None => match advertised_env {
                Some(v) => v.parse().map_err(|_| {
                    invalid(
                        names::ADVERTISED_ADDRESS_ENV,
                        format!("{v:?} is not an IP address"),
                    )
                })?,
                None => self.sip.listen.ip(),
            },
        };
        if advertised.is_unspecified() {
            return Err(invalid(
                "advertisedAddress",
                "required when sip.listen is a wildcard address: peers must be told where to send media",
            ));
        }
        let (min, max) = (self.rtp.port_min.div_ceil(2) * 2, self.rtp.port_max);
        if min < 1024 || max < min || max - min < 3 {
            return Err(invalid(
                "rtp",
                "portMin..portMax must be at least 4 ports from 1024 up",
            ));
        }
        if self.peers.is_empty() {
            return Err(invalid(
                "peers",
                "at least one peer: requests from unknown sources are refused",
            ));
        }
        let mut peers = Vec::new();
        for (i, p) in self.peers.iter().enumerate() {
            let nets = p
                .sources
                .iter()
                .map(|s| {
                    IpNet::parse(s).ok_or_else(|| {
                        invalid(
                            format!("peers[{i}].sources"),
                            format!("{s:?} is not a CIDR"),
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            if nets.is_empty() {
                return Err(invalid(
                    format!("peers[{i}].sources"),
                    "at least one source network",
                ));
            }
            if p.next_hop.is_empty() && !p.siprec {
                return Err(invalid(
                    format!("peers[{i}].nextHop"),
                    "required (only a SIPREC client, siprec: true, may have none)",
                ));
            }
            if !p.next_hop.is_empty()
                && p.next_hop
                    .rsplit_once(':')
                    .and_then(|(_, port)| port.parse::<u16>().ok())
                    .is_none()
            {
                return Err(invalid(
                    format!("peers[{i}].nextHop"),
                    format!("{:?} is not host:port", p.next_hop),
                ));
            }
            peers.push((p.clone(), nets));
        }
        if let Some(code) = &self.default_shortcode
            && shortcode_digit(code).is_none()
        {
            return Err(invalid(
                "defaultShortcode",
                format!("{code:?} is not * followed by one digit"),
            ));
        }
        let mut users = BTreeMap::new();
        let mut seen = HashSet::new();
        for (i, u) in self.users.iter().enumerate() {
            let field = format!("users[{i}]");
            if !valid_extension(&u.extension) {
                return Err(invalid(
                    format!("{field}.extension"),
                    format!("{:?} is not a SIP user part", u.extension),
                ));
            }
            if !seen.insert(u.extension.as_str()) {
                return Err(invalid(
                    format!("{field}.extension"),
                    format!("{:?} is listed twice", u.extension),
                ));
            }
            let mode = u.mode.unwrap_or(self.default_mode);
            let shortcode = match u.shortcode.as_ref().or(self.default_shortcode.as_ref()) {
                Some(c) => Some(shortcode_digit(c).ok_or_else(|| {
                    invalid(
                        format!("{field}.shortcode"),
                        format!("{c:?} is not * followed by one digit"),
                    )
                })?),
                None => None,
            };
            if mode == RecordingMode::OnDemand && shortcode.is_none() {
                return Err(invalid(
                    format!("{field}.shortcode"),
                    "an OnDemand user needs a shortcode (or set defaultShortcode)",
                ));
            }
            users.insert(
                u.extension.clone(),
                EffectiveUser {
                    display_name: u.display_name.clone(),
                    mode,
                    shortcode,
                },
            );
        }
        let a = &self.announcement;
        if a.periodic_beep_seconds != 0 && a.periodic_beep_seconds < 5 {
            return Err(invalid(
                "announcement.periodicBeepSeconds",
                format!(
                    "{} is neither 0 (off) nor at least 5",
                    a.periodic_beep_seconds
                ),
            ));
        }
        if a.mode == AnnouncementMode::Prompt && a.prompt.is_none() {
            return Err(invalid(
                "announcement.prompt",
                "mode Prompt needs a prompt file",
            ));
        }
        // An external address equal to the internal one is no split.
        let external = external.filter(|e| *e != advertised);
        Ok(Checked {
            advertised,
            external,
            internal_networks,
            node_missing,
            users,
            peers,
        })
    }

    /// Settings that differ from `running` and only take effect at the next
    /// start (sockets, storage, spool, event log, shutdown grace): a reload
    /// applies users, peers, recording settings and announcements.
    pub fn needs_restart(&self, running: &RecorderConfig) -> Vec<&'static str> {
        let (a, b) = (&self.sip, &running.sip);
        let tcp = |l: &SipLimits| {
            (
                l.tcp_connections,
                l.tcp_connections_per_source,
                l.tcp_idle_seconds,
                l.tcp_message_seconds,
            )
        };
        let changed = [
            (
                a.listen != b.listen || a.transports != b.transports || a.tls != b.tls,
                "sip",
            ),
            (tcp(&a.limits) != tcp(&b.limits), "sip.limits.tcp*"),
            (
                self.advertised_address != running.advertised_address,
                "advertisedAddress",
            ),
            (self.rtp != running.rtp, "rtp"),
            (self.shards != running.shards, "shards"),
            (self.http != running.http, "http"),
            (self.events != running.events, "events"),
            (self.spool != running.spool, "spool"),
            (self.storage != running.storage, "storage"),
            (self.instance != running.instance, "instance"),
            (
                self.shutdown_grace != running.shutdown_grace,
                "shutdownGrace",
            ),
        ];
        changed
            .into_iter()
            .filter_map(|(c, name)| c.then_some(name))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
sip: { listen: "127.0.0.1:5060" }
rtp: { bind: 127.0.0.1, portMin: 30001, portMax: 30100 }
peers:
  - { name: pbx, sources: ["127.0.0.0/8"], nextHop: "127.0.0.1:5070" }
defaultShortcode: "*5"
users:
  - { extension: "008", mode: Always }
  - { extension: "012" }
  - { extension: "003", mode: Never }
"#;

    fn check(text: &str) -> Result<Checked, String> {
        RecorderConfig::from_yaml(text)?
            .check(None)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn resolves_defaults() {
        let f = RecorderConfig::from_yaml(GOOD).unwrap();
        let c = f.check(None).unwrap();
        assert_eq!(c.users["012"].mode, RecordingMode::OnDemand);
        assert_eq!(c.users["012"].shortcode, Some(5));
        assert_eq!(c.users["008"].mode, RecordingMode::Always);
        assert_eq!(f.rtp.ports().first(), Some(&30002));
        assert_eq!(f.rtp.ports().last(), Some(&30098));
        assert_eq!(f.shutdown_grace, Duration::from_secs(3600));
        assert_eq!(c.advertised.to_string(), "127.0.0.1");
        let env = f.check(Some("10.1.2.3")).unwrap();
        assert_eq!(env.advertised.to_string(), "10.1.2.3");
    }

    #[test]
    fn a_node_s_entry_gives_its_addresses_unless_the_file_sets_them() {
        let mut f = RecorderConfig::from_yaml(GOOD).unwrap();
        f.advertised_address = None;
        f.node_addresses.insert(
            "node-a".into(),
            NodeAddresses {
                internal: Some("10.0.0.5".parse().unwrap()),
                external: Some("203.0.113.5".parse().unwrap()),
            },
        );
        let c = f.check_on(Some("10.9.9.9"), Some("node-a")).unwrap();
        assert_eq!(c.advertised.to_string(), "10.0.0.5");
        assert_eq!(
            c.external.map(|e| e.to_string()).as_deref(),
            Some("203.0.113.5")
        );
        assert!(c.node_missing.is_none());
        assert!(
            c.internal_networks
                .iter()
                .any(|n| n.contains("10.0.0.1".parse().unwrap()))
        );
        assert!(
            !c.internal_networks
                .iter()
                .any(|n| n.contains("203.0.113.1".parse().unwrap()))
        );
        // Another node: the environment's address, no split, named as missing.
        let c = f.check_on(Some("10.9.9.9"), Some("node-b")).unwrap();
        assert_eq!(c.advertised.to_string(), "10.9.9.9");
        assert_eq!(c.external, None);
        assert_eq!(c.node_missing.as_deref(), Some("node-b"));
        // The file's own addresses win; an external equal to the internal is no split.
        f.advertised_address = Some("203.0.113.5".parse().unwrap());
        let c = f.check_on(None, Some("node-a")).unwrap();
        assert_eq!(c.external, None);
        f.internal_networks = vec!["nonsense".into()];
        assert_eq!(
            f.check_on(None, Some("node-a")).unwrap_err().to_string(),
            "internalNetworks[0]: \"nonsense\" is not a CIDR"
        );
    }

    #[test]
    fn refuses_with_the_field_named() {
        let cases = [
            (
                GOOD.replace("defaultShortcode: \"*5\"", ""),
                "users[1].shortcode: an OnDemand user needs a shortcode",
            ),
            (
                GOOD.replace("\"003\"", "\"008\""),
                "users[2].extension: \"008\" is listed twice",
            ),
            (
                GOOD.replace("\"*5\"", "\"#5\""),
                "defaultShortcode: \"#5\" is not * followed by one digit",
            ),
            (
                GOOD.replace("127.0.0.0/8", "pbx"),
                "peers[0].sources: \"pbx\" is not a CIDR",
            ),
            (
                GOOD.replace("portMax: 30100", "portMax: 30002"),
                "rtp: portMin..portMax",
            ),
            (
                GOOD.replace("mode: Never", "mode: Sometimes"),
                "unknown variant `Sometimes`",
            ),
            (GOOD.replace("sip:", "sipp:"), "unknown field `sipp`"),
            (
                format!("{GOOD}announcement: {{ mode: Beep, periodicBeepSeconds: 3 }}\n"),
                "announcement.periodicBeepSeconds: 3 is neither 0 (off) nor at least 5",
            ),
            (
                format!("{GOOD}announcement: {{ mode: Prompt }}\n"),
                "announcement.prompt: mode Prompt needs a prompt file",
            ),
            (
                GOOD.replace("127.0.0.1:5060", "0.0.0.0:5060"),
                "advertisedAddress: required",
            ),
            (
                format!("{GOOD}recording: {{ mp3BitrateKbps: 33 }}\n"),
                "recording.mp3BitrateKbps: 33 is not one of",
            ),
        ];
        for (text, words) in cases {
            let err = check(&text).expect_err(words);
            assert!(err.contains(words), "{err:?} should contain {words:?}");
        }
    }

    #[test]
    fn what_is_written_reads_back_the_same() {
        let mut f = RecorderConfig::from_yaml(GOOD).unwrap();
        f.shutdown_grace = Duration::from_secs(14_370);
        f.announcement.mode = AnnouncementMode::Beep;
        f.storage = StorageConfig {
            filesystem: None,
            s3: Some(S3Config {
                endpoint: "http://127.0.0.1:3900".into(),
                bucket: "recordings".into(),
                region: "garage".into(),
                path_style: true,
            }),
            prefix: "acme/office/".into(),
        };
        let text = serde_yaml::to_string(&f).unwrap();
        assert!(text.contains("shutdownGrace: 14370s"), "{text}");
        assert_eq!(RecorderConfig::from_yaml(&text).unwrap(), f);
    }

    #[test]
    fn a_reload_names_what_needs_a_restart() {
        let a = RecorderConfig::from_yaml(GOOD).unwrap();
        let b = RecorderConfig::from_yaml(
            &GOOD
                .replace("portMax: 30100", "portMax: 30200")
                .replace("mode: Never", "mode: Always"),
        )
        .unwrap();
        assert_eq!(b.needs_restart(&a), ["rtp"]);
        assert!(a.needs_restart(&a).is_empty());
    }
}
