//! What Earshot's parts agree on, defined once: the recorder's config file
//! (which the operator renders and the recorder reads), the JSON sidecar of
//! every recording (which the recorder writes and the console reads), the
//! object-key layout of recordings, how a request names a bucket, how a
//! store is opened, and the names,
//! environment variables and ports the operator's pods and the binaries
//! share. Serde types and pure checks only: no sockets, no encoder.
#![forbid(unsafe_code)]

pub mod addressing;
pub mod config;
pub mod layout;
pub mod modes;
pub mod names;
pub mod net;
pub mod sidecar;
#[cfg(feature = "store")]
pub mod store;

pub use modes::{
    AnnouncementMode, AnnouncementTarget, ChannelLayout, PauseBehaviour, RecordingMode, Side,
    Transport,
};
pub use net::IpNet;
