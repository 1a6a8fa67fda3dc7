//! The enums every layer shares: in the `RecordingPolicy` API, in the
//! recorder config file, in the recorder's core and in sidecars. Their
//! serialised names are the API's.

use serde::{Deserialize, Serialize};

/// When a user's calls are recorded.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum RecordingMode {
    /// Every call of the user is recorded, from answer to hang-up.
    Always,
    /// The user toggles recording during the call with their shortcode.
    #[default]
    OnDemand,
    /// The user's calls are never recorded.
    Never,
}

impl RecordingMode {
    /// The name used in the API, the config file and events.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordingMode::Always => "Always",
            RecordingMode::OnDemand => "OnDemand",
            RecordingMode::Never => "Never",
        }
    }
}

/// A SIP transport.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum Transport {
    /// SIP over UDP.
    #[serde(rename = "UDP")]
    Udp,
    /// SIP over TCP.
    #[serde(rename = "TCP")]
    Tcp,
    /// SIP over TLS (RFC 3261 §26), on its own port.
    #[serde(rename = "TLS")]
    Tls,
}

impl Transport {
    /// The token in the API and in Via headers (`UDP`, `TCP`, `TLS`).
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
        }
    }
}

/// What a recording holds while it is paused.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum PauseBehaviour {
    /// Leave paused time out of the file.
    #[default]
    Skip,
    /// Keep paused time as silence.
    Silence,
}

/// Channel layout of the MP3.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum ChannelLayout {
    /// Left = caller, right = callee.
    #[default]
    Stereo,
    /// Both parties mixed into one channel.
    Mono,
}

/// What plays when recording starts.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum AnnouncementMode {
    /// Nothing.
    #[default]
    None,
    /// A beep.
    Beep,
    /// The prompt file.
    Prompt,
}

/// Who hears announcements.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum AnnouncementTarget {
    /// Only the party that is not the recorded policy user.
    FarEnd,
    /// Both parties.
    #[default]
    Both,
}

/// A party of a call, seen from the recorder.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// The party that sent the initial INVITE.
    Caller,
    /// The party it was sent to.
    Callee,
}

impl Side {
    /// Both sides, caller first.
    pub const BOTH: [Side; 2] = [Side::Caller, Side::Callee];

    /// The other party.
    pub fn other(self) -> Side {
        match self {
            Side::Caller => Side::Callee,
            Side::Callee => Side::Caller,
        }
    }

    /// 0 for the caller, 1 for the callee.
    pub fn index(self) -> usize {
        match self {
            Side::Caller => 0,
            Side::Callee => 1,
        }
    }

    /// Lower-case name for events, sidecars and labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Caller => "caller",
            Side::Callee => "callee",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialised_names_are_the_api_names() {
        let names = serde_json::to_value((
            RecordingMode::OnDemand,
            Transport::Udp,
            Transport::Tcp,
            PauseBehaviour::Silence,
            ChannelLayout::Mono,
            AnnouncementMode::Prompt,
            AnnouncementTarget::FarEnd,
        ))
        .unwrap();
        assert_eq!(
            names,
            serde_json::json!([
                "OnDemand", "UDP", "TCP", "Silence", "Mono", "Prompt", "FarEnd"
            ])
        );
        for m in [
            RecordingMode::Always,
            RecordingMode::OnDemand,
            RecordingMode::Never,
        ] {
            assert_eq!(serde_json::to_value(m).unwrap(), m.as_str());
        }
        assert_eq!(Transport::Tcp.as_str(), "TCP");
        assert_eq!(
            serde_json::to_value(Side::Callee).unwrap(),
            Side::Callee.as_str()
        );
    }
}
