//! What the core tells the shell: calls starting, being answered and ending,
//! recording switching on and off with the reason, DTMF digits, and the
//! audio of recorded calls with its RTP timing.

use std::time::Instant;

use crate::config::RecordingMode;
use crate::dtmf::DtmfMethod;

pub use earshot_contracts::Side;

/// A call's identity in events: a number for this process and a stable hash
/// of the SIP Call-ID that names its recording.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CallRef {
    /// Unique within this process.
    pub id: u64,
    /// 16 hex digits derived from the Call-ID (FNV-1a).
    pub hash: String,
}

/// A number on the call.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Party {
    /// The user part of the identifying URI (`008`).
    pub number: Option<String>,
    /// The display name, if the message carried one.
    pub display_name: Option<String>,
}

/// A policy user involved in a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvolvedUser {
    /// Their extension.
    pub extension: String,
    /// Display name from the policy.
    pub display_name: Option<String>,
    /// Their effective mode.
    pub mode: RecordingMode,
    /// Which side of the call they are on.
    pub side: Side,
}

/// Why recording changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordingReason {
    /// The call was answered with an `Always` user on it.
    Answered {
        /// The `Always` user.
        extension: String,
    },
    /// An `OnDemand` user keyed their shortcode.
    Shortcode {
        /// Who keyed it.
        extension: String,
        /// Their state after the toggle.
        on: bool,
    },
    /// The call ended.
    CallEnded,
    /// A SIPREC client paused the recording session (every stream
    /// `inactive` or gone, as SRCs do for a card number): nothing of the
    /// pause is recorded; the recording goes on when the streams do.
    SrcPaused,
}

/// Why a call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndReason {
    /// A BYE from one side.
    Bye(Side),
    /// CANCEL before answer.
    Cancelled,
    /// A final failure response to the INVITE.
    Rejected(u16),
    /// No final response, or no activity for the idle timeout.
    Timeout,
}

impl EndReason {
    /// Metric label for `earshot_calls_total{result}`.
    pub fn result_label(&self, answered: bool) -> &'static str {
        match (self, answered) {
            (_, true) => "answered",
            (EndReason::Cancelled, false) => "cancelled",
            (EndReason::Rejected(_), false) => "rejected",
            (EndReason::Timeout, false) => "timeout",
            (EndReason::Bye(_), false) => "cancelled",
        }
    }
}

/// Something that happened to a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// An initial INVITE was accepted and forwarded.
    CallStarted {
        /// The call.
        call: CallRef,
        /// When.
        at: Instant,
        /// Who calls.
        caller: Party,
        /// Who is called.
        callee: Party,
        /// Policy users on the call (empty: the call is never recorded).
        users: Vec<InvolvedUser>,
        /// The hash of the call this one replaces (an attended transfer's
        /// INVITE with `Replaces`, RFC 3891), linking the parts of one
        /// transferred conversation.
        replaces: Option<String>,
    },
    /// A party asked the other to call someone else (REFER, RFC 3515): the
    /// call is being transferred.
    Transfer {
        /// The call.
        call: CallRef,
        /// When.
        at: Instant,
        /// Who sent the REFER.
        by: Side,
    },
    /// The first 2xx to the initial INVITE.
    CallAnswered {
        /// The call.
        call: CallRef,
        /// When.
        at: Instant,
    },
    /// Recording started or stopped.
    Recording {
        /// The call.
        call: CallRef,
        /// When.
        at: Instant,
        /// True when recording from now on.
        on: bool,
        /// Why.
        reason: RecordingReason,
        /// Whether a side of the call negotiated a wideband codec (G.722):
        /// a recording started now runs at 16 kHz.
        wideband: bool,
    },
    /// A DTMF digit from one side.
    Dtmf {
        /// The call.
        call: CallRef,
        /// When.
        at: Instant,
        /// Who keyed it.
        side: Side,
        /// `0`-`9`, `*`, `#`, `A`-`D`.
        digit: char,
        /// How it arrived.
        method: DtmfMethod,
        /// Whether it is part of a shortcode: a `*`, or the digit that
        /// completes a shortcode of one of the call's users. Other digits
        /// may be a PIN or a card number.
        shortcode: bool,
    },
    /// One RTP audio packet of a recorded call.
    Media(MediaFrame),
    /// An announcement, beep or stop tone toward one party ended (or was skipped).
    Announcement {
        /// The call.
        call: CallRef,
        /// When it was asked for (recording started, reminder due, recording stopped).
        at: Instant,
        /// What it was.
        kind: crate::announce::Kind,
        /// Who it was played to.
        to: Side,
        /// How it ended.
        outcome: crate::announce::Outcome,
        /// How much of it was sent.
        played: std::time::Duration,
    },
    /// The call's media took a turn the recording cannot hold: the call
    /// goes on, relayed, and its recording is marked incomplete.
    MediaNote {
        /// The call.
        call: CallRef,
        /// When.
        at: Instant,
        /// What happened.
        note: MediaNote,
    },
    /// A SIPREC session's metadata, as it stands now (at the start and
    /// after each update).
    Siprec {
        /// The call.
        call: CallRef,
        /// When.
        at: Instant,
        /// What the SRC said.
        session: earshot_contracts::sidecar::Siprec,
    },
    /// The call is over.
    CallEnded {
        /// The call.
        call: CallRef,
        /// When.
        at: Instant,
        /// Why.
        reason: EndReason,
        /// Whether it had been answered.
        answered: bool,
    },
}

/// Why a recording cannot hold all of a call's media.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaNote {
    /// A fax (T.38 over UDPTL) took the call's media: relayed, not recorded.
    Fax,
    /// DTLS-SRTP: the keys are agreed end to end, never in the signalling
    /// the recorder sees; the media is relayed, not recorded.
    EncryptedDtls,
    /// SRTP without a key the recorder can use (no `a=crypto`, or one it
    /// does not support): relayed, not recorded.
    SrtpNoKey,
    /// SRTP whose packets stopped decrypting with the key from the SDP (a
    /// wrong key, keys changed outside this signalling): what did not
    /// decrypt is missing from the recording.
    SrtpUndecryptable,
    /// The kernel fast path relayed packets whose copies the recorder could
    /// not take in time (its ring was full): they are missing from the
    /// recording, though the parties heard them.
    CopiesLost,
}

impl MediaNote {
    /// The reason's name, in the sidecar and in metric labels.
    pub fn label(&self) -> &'static str {
        match self {
            MediaNote::Fax => "fax",
            MediaNote::EncryptedDtls => "encrypted_dtls_srtp",
            MediaNote::SrtpNoKey => "encrypted_srtp_without_key",
            MediaNote::SrtpUndecryptable => "srtp_not_decrypting",
            MediaNote::CopiesLost => "kernel_copies_lost",
        }
    }
}

/// Audio of a recorded call, as received from one side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaFrame {
    /// The call.
    pub call: CallRef,
    /// When it arrived.
    pub at: Instant,
    /// Who sent it.
    pub side: Side,
    /// Media stream index (m= line).
    pub stream: u8,
    /// RTP SSRC.
    pub ssrc: u32,
    /// RTP sequence number.
    pub seq: u16,
    /// RTP timestamp.
    pub timestamp: u32,
    /// RTP payload type.
    pub payload_type: u8,
    /// Codec name from SDP (`PCMU`, `PCMA`, ...), when known.
    pub codec: Option<String>,
    /// Its RTP clock rate from SDP (8000 for G.711 and G.722), 0 when unknown.
    pub clock_rate: u32,
    /// The RTP payload.
    pub payload: Vec<u8>,
}
