//! The sans-IO core of the Earshot recorder: SIP proxy, SDP rewrite, RTP
//! relay, DTMF detection and recording decisions. It owns no socket and
//! reads no clock: the shell feeds it bytes and `Instant`s and carries out
//! what it returns (datagrams to send, timers, events).
#![forbid(unsafe_code)]

pub mod announce;
pub mod codec;
pub mod config;
pub mod dtmf;
pub mod engine;
pub mod event;
pub mod fuzzing;
pub mod g711;
pub mod sdp;
pub mod sip;
pub mod siprec;
pub mod srtp;
pub mod stats;
pub mod timeline;

pub use announce::AnnouncementConfig;
pub use config::{
    CoreConfig, EffectiveUser, IpNet, Peer, SipLimits, SplitHorizon, Target, Timers, UnknownSources,
};
pub use earshot_contracts::layout::call_hash;
pub use earshot_contracts::{
    AnnouncementMode, AnnouncementTarget, ChannelLayout, PauseBehaviour, RecordingMode, Side,
    Transport,
};
pub use engine::{Output, PeerLoads, Recorder, Relay, Shard};
pub use event::{
    CallRef, EndReason, Event, InvolvedUser, MediaFrame, MediaNote, Party, RecordingReason,
};
