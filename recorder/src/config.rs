//! The recorder's configuration file: the YAML the operator renders into a
//! ConfigMap and a person writes by hand for a standalone recorder. Parsing
//! checks everything up front so a bad file is refused with a message that
//! says which field is wrong, and a running recorder keeps its old config.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use earshot_recorder_core::{
    AnnounceMode, AnnounceTo, AnnouncementConfig, CoreConfig, IpNet, Mode, Peer, Target, Timers,
    Transport, User,
};
use serde::Deserialize;

/// Environment variable that supplies the advertised address when the file
/// has none (the operator sets it from the pod or node IP).
pub const ADVERTISED_ENV: &str = "EARSHOT_ADVERTISED_ADDRESS";

/// Why a config file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not valid YAML for this schema.
    #[error("config {path} is not valid: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// What serde said, with line and column.
        message: String,
    },
    /// Valid YAML, wrong values.
    #[error("config {path}: {field}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The offending field.
        field: String,
        /// What is wrong.
        message: String,
    },
}

/// The file as written.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileConfig {
    /// SIP listener.
    pub sip: SipConfig,
    /// Address written into Via, Record-Route and SDP. Defaults to
    /// `$EARSHOT_ADVERTISED_ADDRESS`, then to the SIP listen address.
    #[serde(default)]
    pub advertised_address: Option<IpAddr>,
    /// RTP relay ports.
    pub rtp: RtpConfig,
    /// Metrics and health endpoints.
    #[serde(default)]
    pub http: HttpConfig,
    /// SIP peers and their next hops.
    pub peers: Vec<PeerConfig>,
    /// Mode of users without their own.
    #[serde(default = "default_mode")]
    pub default_mode: ModeName,
    /// Shortcode of users without their own.
    #[serde(default)]
    pub default_shortcode: Option<String>,
    /// Policy users.
    #[serde(default)]
    pub users: Vec<UserConfig>,
    /// Call event log.
    #[serde(default)]
    pub events: EventsConfig,
    /// How long SIGTERM waits for calls in progress before exiting.
    #[serde(default = "default_grace", with = "humantime_serde_compat")]
    pub shutdown_grace: Duration,
    /// How recordings are made.
    #[serde(default)]
    pub recording: crate::recording::RecordingConfig,
    /// Local disk where recordings are written as calls go.
    #[serde(default)]
    pub spool: crate::recording::SpoolConfig,
    /// Where finished recordings are stored.
    #[serde(default)]
    pub storage: crate::store::StorageConfig,
    /// Name of this recorder in sidecars; defaults to the host name.
    #[serde(default)]
    pub instance: Option<String>,
    /// What tells the parties the call is recorded.
    #[serde(default)]
    pub announcement: AnnouncementFileConfig,
}

/// Announcement settings as written (`spec.announcement` of the policy).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AnnouncementFileConfig {
    /// `None`, `Beep` or `Prompt`.
    #[serde(default)]
    pub mode: AnnounceModeName,
    /// The prompt file (WAV or MP3), for `Prompt`; relative paths are
    /// relative to the config file.
    #[serde(default)]
    pub prompt: Option<PathBuf>,
    /// `FarEnd` or `Both`.
    #[serde(default)]
    pub to: AnnounceToName,
    /// Reminder beep interval while recording; 0 for none, else at least 5.
    #[serde(default)]
    pub periodic_beep_seconds: u32,
    /// A tone when an OnDemand user stops recording.
    #[serde(default)]
    pub stop_tone: bool,
}

/// Announcement mode in the file.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
pub enum AnnounceModeName {
    /// Nothing.
    #[default]
    None,
    /// A beep.
    Beep,
    /// The prompt file.
    Prompt,
}

/// Who hears announcements, in the file.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
pub enum AnnounceToName {
    /// The party that is not the policy user.
    FarEnd,
    /// Both parties.
    #[default]
    Both,
}

fn default_mode() -> ModeName {
    ModeName::OnDemand
}

fn default_grace() -> Duration {
    Duration::from_secs(3600)
}

/// `Duration` as a humantime string (`90s`, `1h`).
mod humantime_serde_compat {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(serde::de::Error::custom)
    }
}

/// SIP listener settings.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SipConfig {
    /// Address and port to listen on.
    pub listen: SocketAddr,
    /// Transports to listen on.
    #[serde(default = "default_transports")]
    pub transports: Vec<TransportName>,
}

fn default_transports() -> Vec<TransportName> {
    vec![TransportName::UDP, TransportName::TCP]
}

/// A transport name in the file.
#[allow(clippy::upper_case_acronyms)] // the SIP tokens, as in the CRD
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Hash)]
pub enum TransportName {
    /// UDP.
    UDP,
    /// TCP.
    TCP,
}

impl From<TransportName> for Transport {
    fn from(t: TransportName) -> Self {
        match t {
            TransportName::UDP => Transport::Udp,
            TransportName::TCP => Transport::Tcp,
        }
    }
}

/// RTP relay settings.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RtpConfig {
    /// Local address for RTP sockets.
    pub bind: IpAddr,
    /// First port (rounded up to even).
    pub port_min: u16,
    /// Last port.
    pub port_max: u16,
}

/// HTTP endpoint settings.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpConfig {
    /// Address of `/metrics`, `/healthz` and `/readyz`.
    pub listen: SocketAddr,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 9090)),
        }
    }
}

/// A SIP peer.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PeerConfig {
    /// Name for logs.
    pub name: String,
    /// Source networks (CIDR).
    pub sources: Vec<String>,
    /// `host:port` of the next hop for this peer's new requests.
    pub next_hop: String,
    /// Transport to the next hop.
    #[serde(default = "default_udp")]
    pub next_hop_transport: TransportName,
}

fn default_udp() -> TransportName {
    TransportName::UDP
}

/// A recording mode in the file.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub enum ModeName {
    /// Always.
    Always,
    /// On demand.
    OnDemand,
    /// Never.
    Never,
}

impl From<ModeName> for Mode {
    fn from(m: ModeName) -> Self {
        match m {
            ModeName::Always => Mode::Always,
            ModeName::OnDemand => Mode::OnDemand,
            ModeName::Never => Mode::Never,
        }
    }
}

/// A policy user.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UserConfig {
    /// Extension (SIP user part).
    pub extension: String,
    /// Name for reports.
    #[serde(default)]
    pub display_name: Option<String>,
    /// Mode; defaults to `defaultMode`.
    #[serde(default)]
    pub mode: Option<ModeName>,
    /// Shortcode `*N`; defaults to `defaultShortcode`.
    #[serde(default)]
    pub shortcode: Option<String>,
}

/// Where call events are written.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EventsConfig {
    /// A JSON-lines file that receives one line per call event; none when unset.
    #[serde(default)]
    pub path: Option<PathBuf>,
}

/// A config that passed every check.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file as written.
    pub file: FileConfig,
    /// The address peers reach us on.
    pub advertised: IpAddr,
    /// Users resolved to their effective mode and shortcode.
    pub users: HashMap<String, User>,
    /// Peers with parsed networks (next hops still unresolved).
    pub peers: Vec<(PeerConfig, Vec<IpNet>)>,
    /// Announcements, with the prompt decoded.
    pub announcement: AnnouncementConfig,
    /// What was wrong but not fatal (logged at every load).
    pub warnings: Vec<String>,
}

fn invalid(path: &Path, field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        path: path.to_owned(),
        field: field.into(),
        message: message.into(),
    }
}

impl FileConfig {
    /// Settings that differ from `running` and only take effect at the
    /// next start (sockets, storage, spool, event log, shutdown grace): a
    /// reload applies users, peers, recording settings and announcements.
    pub fn needs_restart(&self, running: &FileConfig) -> Vec<&'static str> {
        let mut out = Vec::new();
        let mut check = |changed: bool, name: &'static str| {
            if changed {
                out.push(name);
            }
        };
        check(self.sip != running.sip, "sip");
        check(
            self.advertised_address != running.advertised_address,
            "advertisedAddress",
        );
        check(self.rtp != running.rtp, "rtp");
        check(self.http != running.http, "http");
        check(self.events != running.events, "events");
        check(self.spool != running.spool, "spool");
        check(self.storage != running.storage, "storage");
        check(self.instance != running.instance, "instance");
        check(
            self.shutdown_grace != running.shutdown_grace,
            "shutdownGrace",
        );
        out
    }
}

/// The prompt file of `Prompt` mode, relative to the config file's directory.
fn prompt_path(config: &Path, a: &AnnouncementFileConfig) -> Option<PathBuf> {
    let file = a
        .prompt
        .as_ref()
        .filter(|_| a.mode == AnnounceModeName::Prompt)?;
    Some(match config.parent() {
        Some(dir) if file.is_relative() => dir.join(file),
        _ => file.clone(),
    })
}

/// Checks the announcement settings and decodes the prompt.
fn announcement(
    path: &Path,
    a: &AnnouncementFileConfig,
    warnings: &mut Vec<String>,
) -> Result<AnnouncementConfig, ConfigError> {
    if a.periodic_beep_seconds != 0 && a.periodic_beep_seconds < 5 {
        return Err(invalid(
            path,
            "announcement.periodicBeepSeconds",
            format!(
                "{} is neither 0 (off) nor at least 5",
                a.periodic_beep_seconds
            ),
        ));
    }
    if a.mode == AnnounceModeName::Prompt && a.prompt.is_none() {
        return Err(invalid(
            path,
            "announcement.prompt",
            "mode Prompt needs a prompt file",
        ));
    }
    // A prompt that cannot be used must not stop recording: the parties
    // hear the beep instead and the error is logged at every load.
    let prompt = prompt_path(path, a).and_then(|file| match crate::prompt::load(&file) {
        Ok(samples) => Some(samples),
        Err(e) => {
            warnings.push(format!(
                "announcement.prompt: {e}; the beep is played instead"
            ));
            None
        }
    });
    Ok(AnnouncementConfig {
        mode: match a.mode {
            AnnounceModeName::None => AnnounceMode::None,
            AnnounceModeName::Beep => AnnounceMode::Beep,
            AnnounceModeName::Prompt => AnnounceMode::Prompt,
        },
        prompt,
        to: match a.to {
            AnnounceToName::FarEnd => AnnounceTo::FarEnd,
            AnnounceToName::Both => AnnounceTo::Both,
        },
        periodic: (a.periodic_beep_seconds > 0)
            .then(|| Duration::from_secs(u64::from(a.periodic_beep_seconds))),
        stop_tone: a.stop_tone,
    })
}

fn shortcode_digit(s: &str) -> Option<u8> {
    match s.as_bytes() {
        [b'*', d @ b'0'..=b'9'] => Some(d - b'0'),
        _ => None,
    }
}

impl Config {
    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Checks config text (`path` names it in errors).
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        Self::parse_with_env(path, text, std::env::var(ADVERTISED_ENV).ok().as_deref())
    }

    /// Like [`parse`](Self::parse), with the environment's advertised address given.
    pub fn parse_with_env(
        path: &Path,
        text: &str,
        advertised_env: Option<&str>,
    ) -> Result<Config, ConfigError> {
        let file: FileConfig = serde_yaml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        if !crate::recording::BITRATES.contains(&file.recording.mp3_bitrate_kbps) {
            return Err(invalid(
                path,
                "recording.mp3BitrateKbps",
                format!(
                    "{} is not one of {:?}",
                    file.recording.mp3_bitrate_kbps,
                    crate::recording::BITRATES
                ),
            ));
        }
        if file.storage.filesystem.is_some() == file.storage.s3.is_some() {
            return Err(invalid(
                path,
                "storage",
                "set exactly one of filesystem or s3",
            ));
        }
        if file.sip.transports.is_empty() {
            return Err(invalid(path, "sip.transports", "at least one of UDP, TCP"));
        }
        let advertised = match file.advertised_address {
            Some(a) => a,
            None => match advertised_env {
                Some(v) => v.parse().map_err(|_| {
                    invalid(path, ADVERTISED_ENV, format!("{v:?} is not an IP address"))
                })?,
                None => file.sip.listen.ip(),
            },
        };
        if advertised.is_unspecified() {
            return Err(invalid(
                path,
                "advertisedAddress",
                "required when sip.listen is a wildcard address: peers must be told where to send media",
            ));
        }
        let (min, max) = (file.rtp.port_min.div_ceil(2) * 2, file.rtp.port_max);
        if min < 1024 || max < min || max - min < 3 {
            return Err(invalid(
                path,
                "rtp",
                "portMin..portMax must be at least 4 ports from 1024 up",
            ));
        }
        if file.peers.is_empty() {
            return Err(invalid(
                path,
                "peers",
                "at least one peer: requests from unknown sources are refused",
            ));
        }
        let mut peers = Vec::new();
        for (i, p) in file.peers.iter().enumerate() {
            let nets = p
                .sources
                .iter()
                .map(|s| {
                    IpNet::parse(s).ok_or_else(|| {
                        invalid(
                            path,
                            format!("peers[{i}].sources"),
                            format!("{s:?} is not a CIDR"),
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            if nets.is_empty() {
                return Err(invalid(
                    path,
                    format!("peers[{i}].sources"),
                    "at least one source network",
                ));
            }
            if p.next_hop
                .rsplit_once(':')
                .and_then(|(_, port)| port.parse::<u16>().ok())
                .is_none()
            {
                return Err(invalid(
                    path,
                    format!("peers[{i}].nextHop"),
                    format!("{:?} is not host:port", p.next_hop),
                ));
            }
            peers.push((p.clone(), nets));
        }
        if let Some(code) = &file.default_shortcode
            && shortcode_digit(code).is_none()
        {
            return Err(invalid(
                path,
                "defaultShortcode",
                format!("{code:?} is not * followed by one digit"),
            ));
        }
        let mut users = HashMap::new();
        let mut seen = HashSet::new();
        for (i, u) in file.users.iter().enumerate() {
            let field = format!("users[{i}]");
            let ext_ok = !u.extension.is_empty()
                && u.extension.len() <= 32
                && u.extension
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-_+".contains(&b));
            if !ext_ok {
                return Err(invalid(
                    path,
                    format!("{field}.extension"),
                    format!("{:?} is not a SIP user part", u.extension),
                ));
            }
            if !seen.insert(u.extension.clone()) {
                return Err(invalid(
                    path,
                    format!("{field}.extension"),
                    format!("{:?} is listed twice", u.extension),
                ));
            }
            let mode: Mode = u.mode.unwrap_or(file.default_mode).into();
            let code = u.shortcode.as_ref().or(file.default_shortcode.as_ref());
            let shortcode = match code {
                Some(c) => Some(shortcode_digit(c).ok_or_else(|| {
                    invalid(
                        path,
                        format!("{field}.shortcode"),
                        format!("{c:?} is not * followed by one digit"),
                    )
                })?),
                None => None,
            };
            if mode == Mode::OnDemand && shortcode.is_none() {
                return Err(invalid(
                    path,
                    format!("{field}.shortcode"),
                    "an OnDemand user needs a shortcode (or set defaultShortcode)",
                ));
            }
            users.insert(
                u.extension.clone(),
                User {
                    display_name: u.display_name.clone(),
                    mode,
                    shortcode,
                },
            );
        }
        let mut warnings = Vec::new();
        let announcement = announcement(path, &file.announcement, &mut warnings)?;
        Ok(Config {
            file,
            advertised,
            users,
            peers,
            announcement,
            warnings,
        })
    }

    /// Files besides the config file whose change reloads it (the prompt).
    pub fn watched_files(&self, path: &Path) -> Vec<PathBuf> {
        prompt_path(path, &self.file.announcement)
            .into_iter()
            .collect()
    }

    /// The even RTP ports of the range (each with its odd RTCP neighbour).
    pub fn rtp_ports(&self) -> Vec<u16> {
        let min = self.file.rtp.port_min.div_ceil(2) * 2;
        (min..self.file.rtp.port_max).step_by(2).collect()
    }

    /// The core's view, with next hops resolved through DNS.
    pub async fn core_config(&self, seed: u64) -> Result<CoreConfig, String> {
        let mut peers = Vec::new();
        let mut hosts = HashMap::new();
        for (p, nets) in &self.peers {
            let addr = tokio::net::lookup_host(p.next_hop.as_str())
                .await
                .map_err(|e| format!("peer {}: cannot resolve next hop: {e}", p.name))?
                .next()
                .ok_or_else(|| format!("peer {}: next hop resolves to nothing", p.name))?;
            if let Some((host, _)) = p.next_hop.rsplit_once(':')
                && host.parse::<IpAddr>().is_err()
            {
                hosts.insert(host.to_owned(), addr.ip());
            }
            peers.push(Peer {
                name: p.name.clone(),
                sources: nets.clone(),
                next_hop: Target {
                    transport: p.next_hop_transport.into(),
                    addr,
                },
            });
        }
        Ok(CoreConfig {
            advertised: SocketAddr::new(self.advertised, self.file.sip.listen.port()),
            peers,
            users: self.users.clone(),
            hosts,
            timers: Timers::default(),
            seed,
            announcement: self.announcement.clone(),
        })
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

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("test.yaml"), text)
    }

    #[test]
    fn resolves_defaults() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.users["012"].mode, Mode::OnDemand);
        assert_eq!(c.users["012"].shortcode, Some(5));
        assert_eq!(c.users["008"].mode, Mode::Always);
        assert_eq!(c.rtp_ports().first(), Some(&30002));
        assert_eq!(c.rtp_ports().last(), Some(&30098));
        assert_eq!(c.file.shutdown_grace, Duration::from_secs(3600));
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
        ];
        for (text, words) in cases {
            let err = parse(&text).expect_err(words).to_string();
            assert!(err.contains(words), "{err:?} should contain {words:?}");
        }
    }

    #[test]
    fn prompt_is_decoded_relative_to_the_config_and_a_bad_one_falls_back_to_the_beep() {
        let dir = std::env::temp_dir().join(format!("earshot-prompt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // 0.25 s of 16 kHz mono silence as a WAV file.
        let wav = crate::prompt::wav(16_000, 1, &[0; 4000]);
        std::fs::write(dir.join("prompt.wav"), &wav).unwrap();
        std::fs::write(dir.join("broken.wav"), b"RIFF nonsense").unwrap();
        let text = format!(
            "{GOOD}announcement: {{ mode: Prompt, prompt: prompt.wav, to: FarEnd, periodicBeepSeconds: 10, stopTone: true }}\n"
        );
        let path = dir.join("recorder.yaml");
        let c = Config::parse(&path, &text).unwrap();
        assert_eq!(c.announcement.prompt.as_ref().map(|p| p.len()), Some(2000));
        assert_eq!(c.announcement.to, AnnounceTo::FarEnd);
        assert_eq!(c.announcement.periodic, Some(Duration::from_secs(10)));
        assert!(c.announcement.stop_tone);
        assert_eq!(c.watched_files(&path), [dir.join("prompt.wav")]);
        assert!(c.warnings.is_empty());

        let c = Config::parse(&path, &text.replace("prompt.wav", "broken.wav")).unwrap();
        assert!(c.announcement.prompt.is_none());
        assert_eq!(c.announcement.mode, AnnounceMode::Prompt);
        assert!(
            c.warnings[0].contains("broken.wav")
                && c.warnings[0].contains("the beep is played instead"),
            "{:?}",
            c.warnings
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_reload_names_what_needs_a_restart() {
        let a = parse(GOOD).unwrap().file;
        let b = parse(
            &GOOD
                .replace("portMax: 30100", "portMax: 30200")
                .replace("mode: Never", "mode: Always"),
        )
        .unwrap()
        .file;
        assert_eq!(b.needs_restart(&a), ["rtp"]);
        assert!(a.needs_restart(&a).is_empty());
    }
}
