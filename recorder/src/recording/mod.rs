//! From recording decisions to files in the store. The core's events reach
//! a dispatcher thread (never the packet path) through an [`EventBuffer`];
//! the dispatcher hands each recorded call to one encoder worker thread
//! through a bounded queue ([`dispatch`]); the worker places its audio on a
//! [`Timeline`](earshot_recorder_core::timeline::Timeline), encodes it
//! ([`encoder`]) and appends it to a spool file as it goes, then writes the
//! sidecar at call end ([`worker`], [`sidecar`]); the uploader puts MP3 and
//! sidecar into the store and only then removes them from the spool
//! ([`upload`]). On start, whatever an earlier crash left in the spool is
//! uploaded with a sidecar saying the recording was cut short, and what
//! cannot be read is set aside ([`recovery`]). A spool that cannot take new
//! recordings (full, unreadable, refusing writes) never stops the start:
//! new recordings are refused, and a check every [`Parts::spool_check`]
//! finds when it can again.

pub mod dispatch;
pub mod encoder;
pub mod recovery;
pub mod sidecar;
pub mod upload;
pub mod worker;

use std::sync::Arc;

use earshot_contracts::config::{RecordingConfig, SpoolConfig};
use earshot_contracts::{ChannelLayout, PauseBehaviour};

pub use dispatch::{BEHIND_UNREADY, Backlog, Dispatcher, EventBuffer, run_dispatcher};
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
    /// How often a spool that refuses new recordings for trouble (not its
    /// limit) is looked at again.
    pub spool_check: std::time::Duration,
}

/// How often a spool in trouble is probed in production.
pub const SPOOL_CHECK: std::time::Duration = std::time::Duration::from_secs(5);

impl Default for Parts {
    fn default() -> Self {
        Self {
            encoders: lame(),
            backoff: upload::Backoff::default(),
            spool_check: SPOOL_CHECK,
        }
    }
}

/// Opens the spool, uploads what an earlier run left, starts the encoder
/// workers and the uploader; returns the dispatcher and the spool. A spool
/// that cannot be read or written is no error: it refuses new recordings
/// until it can take them (see [`crate::spool`]).
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
    let spool = Spool::open(&spool.dir, spool.max_bytes);
    start_on(rec, spool, store, clock, instance, metrics, parts, runtime)
}

/// [`start`] on a spool already open.
#[allow(clippy::too_many_arguments)]
pub fn start_on(
    rec: &RecordingConfig,
    spool: Arc<Spool>,
    store: Store,
    clock: Clock,
    instance: String,
    metrics: RecordingMetrics,
    parts: Parts,
    runtime: &tokio::runtime::Handle,
) -> std::io::Result<(Dispatcher, Arc<Spool>)> {
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
    if spool.scanned() {
        recovery::recover_spool(&shared);
    }
    {
        let shared = shared.clone();
        let every = parts.spool_check;
        std::thread::Builder::new()
            .name("spool-check".into())
            .spawn(move || {
                // Until the uploader is gone (only tests end it).
                while !shared.uploads.is_closed() {
                    std::thread::sleep(every);
                    check_spool(&shared);
                }
            })?;
    }
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

/// Looks again at a spool in trouble: a directory that could not be read
/// is read, and what an earlier run left recovered, before a probe says
/// whether new recordings may start. Runs on its own thread: disk I/O that
/// may block never holds up the dispatcher or the relay.
fn check_spool(shared: &Shared) {
    let spool = &shared.spool;
    if spool.trouble().is_none() {
        return;
    }
    if !spool.scanned() {
        if let Err(e) = spool.scan() {
            tracing::debug!(error = %e, "the spool directory still cannot be read");
            return;
        }
        recovery::recover_spool(shared);
    }
    spool.probe();
}

#[cfg(test)]
mod tests;
