//! From recording decisions to files in the store. The core's events reach
//! a dispatcher thread (never the packet path) through an [`EventBuffer`];
//! the dispatcher hands each recorded call to one encoder worker thread
//! through a bounded queue ([`dispatch`]); the worker places its audio on a
//! [`Timeline`](earshot_recorder_core::timeline::Timeline), encodes it
//! ([`encoder`]) and appends it to a spool file as it goes, then writes the
//! sidecar at call end ([`worker`], [`sidecar`]); the uploader puts MP3 and
//! sidecar into the store and only then removes them from the spool
//! ([`upload`]). On start, whatever an earlier crash left in the spool is
//! uploaded with a sidecar saying the recording was cut short ([`recovery`]).

pub mod dispatch;
pub mod encoder;
pub mod recovery;
pub mod sidecar;
pub mod upload;
pub mod worker;

use std::sync::Arc;

use earshot_contracts::config::{RecordingConfig, SpoolConfig};
use earshot_contracts::{ChannelLayout, PauseBehaviour};

pub use dispatch::{Dispatcher, EventBuffer, run_dispatcher};
pub use encoder::{EncoderFactory, lame, mp3_duration};

use crate::events::Clock;
use crate::metrics::RecordingMetrics;
use crate::spool::Spool;
use crate::store::Store;

/// How new recordings are made; a config reload replaces it, recordings in
/// progress keep the settings they started with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// What paused time becomes.
    pub pause: PauseBehaviour,
    /// Stereo or mono.
    pub layout: ChannelLayout,
    /// CBR bitrate, kbit/s.
    pub bitrate: u32,
}

impl Settings {
    /// From the config file's `recording` section.
    pub fn from_config(rec: &RecordingConfig) -> Self {
        Self {
            pause: rec.pause_behaviour,
            layout: rec.channels,
            bitrate: rec.mp3_bitrate_kbps,
        }
    }
}

/// Where a reload puts new recording settings.
pub type SettingsHandle = Arc<std::sync::RwLock<Settings>>;

/// What every part of the pipeline shares. Cheap to clone.
#[derive(Clone)]
pub struct Shared {
    /// The spool.
    pub spool: Arc<Spool>,
    /// The store (its prefix names objects in sidecars).
    pub store: Store,
    /// Settings for new recordings.
    pub settings: SettingsHandle,
    /// Instants to wall-clock times.
    pub clock: Clock,
    /// This recorder's name in sidecars.
    pub instance: String,
    /// The pipeline's metrics.
    pub metrics: RecordingMetrics,
    /// Recordings ready for upload.
    pub uploads: tokio::sync::mpsc::UnboundedSender<Ready>,
    /// Makes the encoder of each new recording.
    pub encoders: EncoderFactory,
}

impl Shared {
    /// The settings new recordings start with now.
    pub fn settings_now(&self) -> Settings {
        *self.settings.read().unwrap_or_else(|e| e.into_inner())
    }
}

/// A recording ready for upload: its spool files' stem, and its sidecar
/// when the spool could not take it.
#[derive(Debug)]
pub struct Ready {
    /// The stem of its spool files.
    pub stem: String,
    /// The sidecar, when it is not in the spool.
    pub sidecar: Option<Vec<u8>>,
}

/// How the pipeline is put together: production uses [`Parts::default`]
/// (LAME, the uploader's standard backoff); tests swap in a fake encoder
/// and quick retries.
#[derive(Clone)]
pub struct Parts {
    /// Makes the encoder of each new recording.
    pub encoders: EncoderFactory,
    /// The uploader's waits between attempts.
    pub backoff: upload::Backoff,
}

impl Default for Parts {
    fn default() -> Self {
        Self {
            encoders: lame(),
            backoff: upload::Backoff::default(),
        }
    }
}

/// Opens the spool, uploads what an earlier run left, starts the encoder
/// workers and the uploader; returns the dispatcher and the spool.
#[allow(clippy::too_many_arguments)]
pub fn start(
    rec: &RecordingConfig,
    spool: &SpoolConfig,
    store: Store,
    clock: Clock,
    instance: String,
    metrics: RecordingMetrics,
    parts: Parts,
    runtime: &tokio::runtime::Handle,
) -> std::io::Result<(Dispatcher, Arc<Spool>)> {
    let spool = Spool::open(&spool.dir, spool.max_bytes)?;
    let (uploads, queued) = tokio::sync::mpsc::unbounded_channel();
    let shared = Shared {
        spool: spool.clone(),
        store: store.clone(),
        settings: Arc::new(std::sync::RwLock::new(Settings::from_config(rec))),
        clock,
        instance,
        metrics: metrics.clone(),
        uploads,
        encoders: parts.encoders,
    };
    recovery::recover_spool(&shared)?;
    runtime.spawn(upload::upload_loop(
        queued,
        store,
        spool.clone(),
        metrics,
        parts.backoff,
    ));
    let threads = rec
        .encoder_threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
        .max(1);
    let dispatcher = Dispatcher::start(shared, threads)?;
    Ok((dispatcher, spool))
}

#[cfg(test)]
mod tests;
