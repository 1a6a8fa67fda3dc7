//! The recorder's configuration: the file's schema and the checks that need
//! only the file live in `earshot_contracts::config` (the operator renders
//! the same types); here the file is read, the announcement prompt decoded
//! and the result turned into what the core and the shell run on. A bad
//! file is refused with a message that names the field, and a running
//! recorder keeps its old config.

mod core;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use earshot_contracts::config::{Checked, EffectiveUser, PeerConfig, RecorderConfig};
use earshot_contracts::names::{ADVERTISED_ADDRESS_ENV, NODE_NAME_ENV};
use earshot_recorder_core::{AnnouncementConfig, IpNet};

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
    #[error("config {path}: {invalid}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The field and what is wrong with it.
        invalid: earshot_contracts::config::Invalid,
    },
}

/// A config that passed every check.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file as written.
    pub file: RecorderConfig,
    /// The address peers reach us on.
    pub advertised: IpAddr,
    /// The address peers outside `internal_networks` reach us on, if another.
    pub external: Option<IpAddr>,
    /// Who gets `advertised` when there is an external address.
    pub internal_networks: Vec<IpNet>,
    /// Users resolved to their effective mode and shortcode.
    pub users: BTreeMap<String, EffectiveUser>,
    /// Peers with parsed networks (next hops still unresolved).
    pub peers: Vec<(PeerConfig, Vec<IpNet>)>,
    /// Announcements, with the prompt decoded.
    pub announcement: AnnouncementConfig,
    /// What was wrong but not fatal (logged at every load).
    pub warnings: Vec<String>,
}

/// The prompt file of `Prompt` mode, relative to the config file's directory.
fn prompt_path(config: &Path, file: &RecorderConfig) -> Option<PathBuf> {
    let prompt = file.announcement.prompt_in_use()?;
    Some(match config.parent() {
        Some(dir) if prompt.is_relative() => dir.join(prompt),
        _ => prompt.clone(),
    })
}

/// The announcement settings with the prompt decoded. A prompt that cannot
/// be used must not stop recording: the parties hear the beep instead and
/// the error is logged at every load.
fn announcement(
    path: &Path,
    file: &RecorderConfig,
    warnings: &mut Vec<String>,
) -> AnnouncementConfig {
    let a = &file.announcement;
    let prompt = prompt_path(path, file).and_then(|p| match crate::prompt::load(&p) {
        Ok(samples) => Some(samples),
        Err(e) => {
            warnings.push(format!(
                "announcement.prompt: {e}; the beep is played instead"
            ));
            None
        }
    });
    AnnouncementConfig {
        mode: a.mode,
        prompt,
        to: a.to,
        periodic: (a.periodic_beep_seconds > 0)
            .then(|| Duration::from_secs(u64::from(a.periodic_beep_seconds))),
        stop_tone: a.stop_tone,
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
        Self::parse_on(
            path,
            text,
            std::env::var(ADVERTISED_ADDRESS_ENV).ok().as_deref(),
            std::env::var(NODE_NAME_ENV).ok().as_deref(),
        )
    }

    /// Like [`parse`](Self::parse), with the environment's advertised address given.
    pub fn parse_with_env(
        path: &Path,
        text: &str,
        advertised_env: Option<&str>,
    ) -> Result<Config, ConfigError> {
        Self::parse_on(path, text, advertised_env, None)
    }

    /// Like [`parse_with_env`](Self::parse_with_env), on the node `node` names.
    pub fn parse_on(
        path: &Path,
        text: &str,
        advertised_env: Option<&str>,
        node: Option<&str>,
    ) -> Result<Config, ConfigError> {
        let file = RecorderConfig::from_yaml(text).map_err(|message| ConfigError::Syntax {
            path: path.to_owned(),
            message,
        })?;
        let Checked {
            advertised,
            external,
            internal_networks,
            node_missing,
            users,
            peers,
        } = file
            .check_on(advertised_env, node)
            .map_err(|invalid| ConfigError::Invalid {
                path: path.to_owned(),
                invalid,
            })?;
        let mut warnings = Vec::new();
        if let Some(node) = node_missing {
            warnings.push(format!(
                "nodeAddresses has no entry for this node ({}={node:?}): advertising {advertised} to every peer until it has one (a reload adds it for new calls)",
                NODE_NAME_ENV
            ));
        }
        let announcement = announcement(path, &file, &mut warnings);
        Ok(Config {
            file,
            advertised,
            external,
            internal_networks,
            users,
            peers,
            announcement,
            warnings,
        })
    }

    /// Files besides the config file whose change reloads it (the prompt).
    pub fn watched_files(&self, path: &Path) -> Vec<PathBuf> {
        prompt_path(path, &self.file).into_iter().collect()
    }

    /// The even RTP ports of the range (each with its odd RTCP neighbour).
    pub fn rtp_ports(&self) -> Vec<u16> {
        self.file.rtp.ports()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use earshot_recorder_core::{AnnouncementMode, AnnouncementTarget};

    const GOOD: &str = r#"
sip: { listen: "127.0.0.1:5060" }
rtp: { bind: 127.0.0.1, portMin: 30001, portMax: 30100 }
peers:
  - { name: pbx, sources: ["127.0.0.0/8"], nextHop: "127.0.0.1:5070" }
defaultShortcode: "*5"
users:
  - { extension: "008", mode: Always }
"#;

    #[test]
    fn errors_name_the_file_and_the_field() {
        let err = Config::parse(Path::new("test.yaml"), &GOOD.replace("\"*5\"", "\"#5\""))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "config test.yaml: defaultShortcode: \"#5\" is not * followed by one digit"
        );
        let err = Config::parse(Path::new("test.yaml"), "sip: [")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("config test.yaml is not valid: "), "{err}");
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
        assert_eq!(c.announcement.to, AnnouncementTarget::FarEnd);
        assert_eq!(c.announcement.periodic, Some(Duration::from_secs(10)));
        assert!(c.announcement.stop_tone);
        assert_eq!(c.watched_files(&path), [dir.join("prompt.wav")]);
        assert!(c.warnings.is_empty());

        let c = Config::parse(&path, &text.replace("prompt.wav", "broken.wav")).unwrap();
        assert!(c.announcement.prompt.is_none());
        assert_eq!(c.announcement.mode, AnnouncementMode::Prompt);
        assert!(
            c.warnings[0].contains("broken.wav")
                && c.warnings[0].contains("the beep is played instead"),
            "{:?}",
            c.warnings
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
