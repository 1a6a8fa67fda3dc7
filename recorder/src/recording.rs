//! From recording decisions to files in the store. The core's events reach a
//! dispatcher thread (never the packet path); each recorded call goes to one
//! encoder worker thread through a bounded queue, where its audio is placed
//! on a [`Timeline`], encoded by LAME and appended to a spool file as it goes.
//! At call end the worker writes the JSON sidecar; the uploader puts the MP3
//! and then the sidecar into the store and only then removes them from the
//! spool. On start, whatever an earlier crash left in the spool is uploaded
//! with a sidecar saying the recording was cut short.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::time::{Duration, Instant, SystemTime};

use earshot_recorder_core::timeline::{self, Chunk, Layout, Pause, Timeline};
use earshot_recorder_core::{Event, MediaFrame};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::events::Clock;
use crate::metrics::RecordingMetrics;
use crate::spool::{Spool, SpoolFile};
use crate::store::Store;

/// Recording settings in the config file.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RecordingConfig {
    /// `Skip` or `Silence` for paused time.
    #[serde(default)]
    pub pause_behaviour: PauseName,
    /// `Stereo` (left caller, right callee) or `Mono`.
    #[serde(default)]
    pub channels: ChannelsName,
    /// CBR bitrate in kbit/s.
    #[serde(default = "default_bitrate")]
    pub mp3_bitrate_kbps: u32,
    /// Encoder threads; defaults to the number of CPUs.
    #[serde(default)]
    pub encoder_threads: Option<usize>,
}

impl Default for RecordingConfig {
    fn default() -> Self {
        Self {
            pause_behaviour: PauseName::Skip,
            channels: ChannelsName::Stereo,
            mp3_bitrate_kbps: default_bitrate(),
            encoder_threads: None,
        }
    }
}

fn default_bitrate() -> u32 {
    32
}

/// Pause behaviour name.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
pub enum PauseName {
    /// Leave paused time out.
    #[default]
    Skip,
    /// Keep it as silence.
    Silence,
}

/// Channel layout name.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
pub enum ChannelsName {
    /// Two channels.
    #[default]
    Stereo,
    /// One channel.
    Mono,
}

/// Spool settings.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
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

/// Bitrates LAME offers at 8 kHz (MPEG-2.5 layer III).
pub const BITRATES: &[u32] = &[8, 16, 24, 32, 40, 48, 64, 80, 96, 112, 128, 160];

fn lame_bitrate(kbps: u32) -> mp3lame_encoder::Bitrate {
    use mp3lame_encoder::Bitrate::*;
    match kbps {
        8 => Kbps8,
        16 => Kbps16,
        24 => Kbps24,
        40 => Kbps40,
        48 => Kbps48,
        64 => Kbps64,
        80 => Kbps80,
        96 => Kbps96,
        112 => Kbps112,
        128 => Kbps128,
        160 => Kbps160,
        _ => Kbps32,
    }
}

/// A recording's file stem: `<UTC start>_<call hash>`, e.g. `20261128T112834Z_65baf6958949e3e9`.
fn stem(start: SystemTime, hash: &str) -> String {
    let t = humantime::format_rfc3339_seconds(start).to_string();
    format!("{}_{hash}", t.replace(['-', ':'], ""))
}

/// Object name of a spool file: `YYYY/MM/DD/<file>`.
fn object_name(file: &str) -> String {
    let d = &file[..8.min(file.len())];
    if d.len() == 8 && d.bytes().all(|b| b.is_ascii_digit()) {
        format!("{}/{}/{}/{file}", &d[..4], &d[4..6], &d[6..8])
    } else {
        format!("unknown-date/{file}")
    }
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// What the worker knows about a call when its recording starts.
#[derive(Debug, Clone)]
struct CallMeta {
    hash: String,
    started: SystemTime,
    answered: Option<SystemTime>,
    caller: Value,
    callee: Value,
    users: Value,
}

/// Core events on their way to the dispatcher. The packet path appends under
/// a short lock; the dispatcher takes the whole batch every 20 ms, so no
/// thread is woken per packet (a third of the recorder's CPU went to such
/// wake-ups before).
#[derive(Debug, Default)]
pub struct EventBuffer {
    events: std::sync::Mutex<Vec<Event>>,
    closed: std::sync::atomic::AtomicBool,
    finished: std::sync::atomic::AtomicBool,
}

impl EventBuffer {
    /// Adds an event.
    pub fn push(&self, e: Event) {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(e);
    }

    /// Adds several events.
    pub fn extend(&self, es: impl IntoIterator<Item = Event>) {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(es);
    }

    fn take(&self) -> Vec<Event> {
        std::mem::take(&mut *self.events.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// No more events will come; the dispatcher finishes what it has and stops.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
    }

    /// True once the dispatcher has handed its last jobs to the encoders.
    pub fn finished(&self) -> bool {
        self.finished.load(Ordering::Relaxed)
    }
}

/// How often the dispatcher takes the buffered events.
const DISPATCH_EVERY: Duration = Duration::from_millis(20);

enum Job {
    Batch(Vec<Job>),
    Start { meta: CallMeta, at: Instant },
    Toggle { hash: String, at: Instant, on: bool },
    Media(MediaFrame),
    End { hash: String, at: Instant },
    Tick(Instant),
    Announced { hash: String, record: Announced },
}

/// An announcement toward one party of a recorded call, for its sidecar.
#[derive(Debug, Clone)]
struct Announced {
    at: SystemTime,
    kind: &'static str,
    to: &'static str,
    result: &'static str,
    played: Duration,
}

/// How new recordings are made; a config reload replaces it, recordings in
/// progress keep the settings they started with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    pause: Pause,
    layout: Layout,
    bitrate: u32,
}

impl Settings {
    /// From the config file's `recording` section.
    pub fn from_config(rec: &RecordingConfig) -> Self {
        Self {
            pause: match rec.pause_behaviour {
                PauseName::Skip => Pause::Skip,
                PauseName::Silence => Pause::Silence,
            },
            layout: match rec.channels {
                ChannelsName::Stereo => Layout::Stereo,
                ChannelsName::Mono => Layout::Mono,
            },
            bitrate: rec.mp3_bitrate_kbps,
        }
    }
}

/// Where a reload puts new recording settings.
pub type SettingsHandle = Arc<std::sync::RwLock<Settings>>;

/// Settings every worker shares.
#[derive(Clone)]
struct Shared {
    spool: Arc<Spool>,
    /// The store's key for a name (prefix applied), for sidecars.
    store: Store,
    settings: SettingsHandle,
    clock: Clock,
    instance: String,
    metrics: RecordingMetrics,
    /// Stems of recordings ready for upload.
    uploads: tokio::sync::mpsc::UnboundedSender<String>,
}

/// Routes call events to encoder workers. Lives on its own thread.
pub struct Dispatcher {
    workers: Vec<SyncSender<Job>>,
    pending: Vec<Vec<Job>>,
    calls: HashMap<u64, Pending>,
    shared: Shared,
}

struct Pending {
    meta: CallMeta,
    recording: bool,
    refused: bool,
    worker: usize,
}

/// Starts the encoder workers and the uploader; returns the dispatcher.
pub fn start(
    rec: &RecordingConfig,
    spool: &SpoolConfig,
    store: Store,
    clock: Clock,
    instance: String,
    metrics: RecordingMetrics,
    runtime: &tokio::runtime::Handle,
) -> std::io::Result<(Dispatcher, Arc<Spool>)> {
    let spool = Spool::open(&spool.dir, spool.max_bytes)?;
    let (uploads_tx, uploads_rx) = tokio::sync::mpsc::unbounded_channel();
    let shared = Shared {
        spool: spool.clone(),
        store: store.clone(),
        settings: Arc::new(std::sync::RwLock::new(Settings::from_config(rec))),
        clock,
        instance,
        metrics: metrics.clone(),
        uploads: uploads_tx,
    };
    recover_spool(&shared)?;
    runtime.spawn(upload_loop(uploads_rx, store, spool.clone(), metrics));
    let threads = rec
        .encoder_threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
        .max(1);
    let mut workers = Vec::new();
    for i in 0..threads {
        // Batches of one dispatch round each: 256 rounds are five seconds of calls.
        let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(256);
        let shared = shared.clone();
        std::thread::Builder::new()
            .name(format!("encoder-{i}"))
            .spawn(move || worker(rx, shared))?;
        workers.push(tx);
    }
    let pending = workers.iter().map(|_| Vec::new()).collect();
    let dispatcher = Dispatcher {
        workers,
        pending,
        calls: HashMap::new(),
        shared,
    };
    Ok((dispatcher, spool))
}

impl Dispatcher {
    /// The handle a config reload writes new recording settings to.
    pub fn settings(&self) -> SettingsHandle {
        self.shared.settings.clone()
    }

    fn send(&mut self, worker: usize, job: Job) {
        self.pending[worker].push(job);
    }

    /// Hands each encoder worker what this round gathered for it, in one batch.
    fn flush(&mut self) {
        for (worker, jobs) in self.pending.iter_mut().enumerate() {
            if jobs.is_empty() {
                continue;
            }
            let batch = std::mem::take(jobs);
            let n = batch.len() as i64;
            let q = &self.workers[worker];
            // Counted before the send, so a worker never finishes a job the
            // gauge does not hold yet.
            self.shared.metrics.encoder_queue_depth.inc_by(n);
            let sent = match q.try_send(Job::Batch(batch)) {
                Ok(()) => true,
                Err(TrySendError::Full(job)) => {
                    // The encoder is behind: counted and logged, then we wait for
                    // room — the packet path is not waiting on this thread.
                    self.shared.metrics.encoder_overruns.inc();
                    tracing::warn!(worker, "encoder queue full; recording pipeline is behind");
                    q.send(job).is_ok()
                }
                Err(TrySendError::Disconnected(_)) => false,
            };
            if !sent {
                self.shared.metrics.encoder_queue_depth.dec_by(n);
                tracing::error!(worker, "encoder worker is gone");
            }
        }
    }

    /// Feeds one core event.
    pub fn handle(&mut self, event: Event) {
        match event {
            Event::CallStarted {
                call,
                at,
                caller,
                callee,
                users,
            } => {
                if users.is_empty() {
                    return;
                }
                let worker = (call.id as usize) % self.workers.len();
                let meta = CallMeta {
                    hash: call.hash.clone(),
                    started: self.shared.clock.system(at),
                    answered: None,
                    caller: json!({"number": caller.number, "displayName": caller.display_name}),
                    callee: json!({"number": callee.number, "displayName": callee.display_name}),
                    users: Value::Array(
                        users
                            .iter()
                            .map(|u| {
                                json!({"extension": u.extension, "displayName": u.display_name, "mode": u.mode.as_str(), "side": u.side.as_str()})
                            })
                            .collect(),
                    ),
                };
                self.calls.insert(
                    call.id,
                    Pending {
                        meta,
                        recording: false,
                        refused: false,
                        worker,
                    },
                );
            }
            Event::CallAnswered { call, at } => {
                if let Some(p) = self.calls.get_mut(&call.id) {
                    p.meta.answered = Some(self.shared.clock.system(at));
                }
            }
            Event::Recording { call, at, on, .. } => {
                let spool_full = self.shared.spool.full();
                let Some(p) = self.calls.get_mut(&call.id) else {
                    return;
                };
                if p.refused {
                    return;
                }
                if on && !p.recording {
                    p.recording = true;
                    self.shared.metrics.expected.inc();
                    if spool_full {
                        p.refused = true;
                        self.shared
                            .metrics
                            .recordings
                            .get_or_create(&vec![("result", "failed".to_owned())])
                            .inc();
                        tracing::error!(call = %call.hash, "spool is full: recording refused (nothing old is deleted; check uploads)");
                        return;
                    }
                    let (worker, meta) = (p.worker, p.meta.clone());
                    self.send(worker, Job::Start { meta, at });
                } else if p.recording {
                    let worker = p.worker;
                    self.send(
                        worker,
                        Job::Toggle {
                            hash: call.hash,
                            at,
                            on,
                        },
                    );
                }
            }
            Event::Media(frame) => {
                if let Some(p) = self.calls.get(&frame.call.id)
                    && p.recording
                    && !p.refused
                {
                    let worker = p.worker;
                    self.send(worker, Job::Media(frame));
                }
            }
            Event::CallEnded { call, at, .. } => {
                if let Some(p) = self.calls.remove(&call.id)
                    && p.recording
                    && !p.refused
                {
                    self.send(
                        p.worker,
                        Job::End {
                            hash: call.hash,
                            at,
                        },
                    );
                }
            }
            Event::Announcement {
                call,
                at,
                kind,
                to,
                outcome,
                played,
            } => {
                if let Some(p) = self.calls.get(&call.id)
                    && p.recording
                    && !p.refused
                {
                    let record = Announced {
                        at: self.shared.clock.system(at),
                        kind: kind.label(),
                        to: to.as_str(),
                        result: outcome.label(),
                        played,
                    };
                    let worker = p.worker;
                    self.send(
                        worker,
                        Job::Announced {
                            hash: call.hash,
                            record,
                        },
                    );
                }
            }
            Event::Dtmf { .. } => {}
        }
    }

    /// Lets workers write out what is older than the reorder window.
    pub fn tick(&mut self, now: Instant) {
        for w in 0..self.workers.len() {
            self.send(w, Job::Tick(now));
        }
    }
}

/// Runs the dispatcher: events from the core, a tick every second.
pub fn run_dispatcher(mut d: Dispatcher, events: Arc<EventBuffer>, mut also: impl FnMut(&Event)) {
    let mut last_tick = Instant::now();
    loop {
        std::thread::sleep(DISPATCH_EVERY);
        let closed = events.closed.load(Ordering::Relaxed);
        for e in events.take() {
            also(&e);
            d.handle(e);
        }
        if last_tick.elapsed() >= Duration::from_secs(1) {
            last_tick = Instant::now();
            d.tick(last_tick);
        }
        d.flush();
        if closed {
            break;
        }
    }
    // Shutdown: end every recording still open so its file is complete.
    let now = Instant::now();
    let open: Vec<(String, usize)> = d
        .calls
        .values()
        .filter(|p| p.recording && !p.refused)
        .map(|p| (p.meta.hash.clone(), p.worker))
        .collect();
    for (hash, worker) in open {
        d.send(worker, Job::End { hash, at: now });
    }
    d.flush();
    events.finished.store(true, Ordering::Relaxed);
}

struct Active {
    meta: CallMeta,
    settings: Settings,
    timeline: Timeline,
    encoder: mp3lame_encoder::Encoder,
    file: SpoolFile,
    stem: String,
    sha: Sha256,
    bytes: u64,
    codec: Option<String>,
    intervals: Vec<(SystemTime, Option<SystemTime>)>,
    announcements: Vec<Announced>,
    undecodable: u64,
    out: Vec<u8>,
}

/// A LAME encoder as the recorder uses it (CBR, 8 kHz, `-q 7`).
pub fn new_encoder(layout: Layout, kbps: u32) -> Result<mp3lame_encoder::Encoder, String> {
    let channels = if layout == Layout::Stereo { 2 } else { 1 };
    let mut b = mp3lame_encoder::Builder::new().ok_or("LAME builder")?;
    b.set_num_channels(channels).map_err(|e| format!("{e:?}"))?;
    b.set_sample_rate(timeline::RATE)
        .map_err(|e| format!("{e:?}"))?;
    b.set_output_sample_rate(std::num::NonZeroU32::new(timeline::RATE))
        .map_err(|e| format!("{e:?}"))?;
    b.set_brate(lame_bitrate(kbps))
        .map_err(|e| format!("{e:?}"))?;
    b.set_mode(if channels == 2 {
        mp3lame_encoder::Mode::Stereo
    } else {
        mp3lame_encoder::Mode::Mono
    })
    .map_err(|e| format!("{e:?}"))?;
    // -q 7: speech at 8 kHz loses nothing audible and costs half the CPU of the default.
    b.set_quality(mp3lame_encoder::Quality::Ok)
        .map_err(|e| format!("{e:?}"))?;
    b.set_to_write_vbr_tag(false)
        .map_err(|e| format!("{e:?}"))?;
    b.build().map_err(|e| format!("{e:?}"))
}

impl Active {
    fn encode(&mut self, chunk: &Chunk) -> std::io::Result<()> {
        if chunk.is_empty() {
            return Ok(());
        }
        self.out.clear();
        self.out
            .reserve(mp3lame_encoder::max_required_buffer_size(chunk.len()));
        let result = if chunk.right.is_empty() {
            self.encoder
                .encode_to_vec(mp3lame_encoder::MonoPcm(&chunk.left[..]), &mut self.out)
        } else {
            self.encoder.encode_to_vec(
                mp3lame_encoder::DualPcm {
                    left: &chunk.left[..],
                    right: &chunk.right[..],
                },
                &mut self.out,
            )
        };
        if let Err(e) = result {
            tracing::error!(call = %self.meta.hash, error = ?e, "MP3 encoding failed");
            return Ok(());
        }
        self.write_out()
    }

    fn write_out(&mut self) -> std::io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        // Appended as the call goes: a crash loses at most what LAME still buffers.
        self.file.append(&self.out)?;
        self.sha.update(&self.out);
        self.bytes += self.out.len() as u64;
        Ok(())
    }
}

fn worker(rx: Receiver<Job>, shared: Shared) {
    let mut active: HashMap<String, Active> = HashMap::new();
    while let Ok(job) = rx.recv() {
        let jobs = match job {
            Job::Batch(jobs) => jobs,
            other => vec![other],
        };
        for job in jobs {
            run_job(&shared, &mut active, job);
            // After the job, so an empty queue means the work is done.
            shared.metrics.encoder_queue_depth.dec();
        }
    }
}

fn run_job(shared: &Shared, active: &mut HashMap<String, Active>, job: Job) {
    {
        match job {
            Job::Batch(jobs) => {
                for j in jobs {
                    run_job(shared, active, j);
                }
            }
            Job::Start { meta, at } => match begin(shared, meta.clone(), at) {
                Ok(a) => {
                    active.insert(meta.hash.clone(), a);
                }
                Err(e) => {
                    shared
                        .metrics
                        .recordings
                        .get_or_create(&vec![("result", "failed".to_owned())])
                        .inc();
                    tracing::error!(call = %meta.hash, error = %e, "cannot start recording in the spool");
                }
            },
            Job::Toggle { hash, at, on } => {
                if let Some(a) = active.get_mut(&hash) {
                    a.timeline.set_recording(at, on);
                    let t = shared.clock.system(at);
                    if on {
                        a.intervals.push((t, None));
                    } else if let Some(last) = a.intervals.last_mut() {
                        last.1.get_or_insert(t);
                    }
                }
            }
            Job::Media(f) => {
                let Some(a) = active.get_mut(&f.call.hash) else {
                    return;
                };
                let codec = f.codec.as_deref().unwrap_or("");
                match timeline::decode(codec, &f.payload) {
                    Some(samples) => {
                        a.codec.get_or_insert_with(|| codec.to_owned());
                        a.timeline.push(f.side, f.at, f.ssrc, f.timestamp, &samples);
                    }
                    None => {
                        if a.undecodable == 0 {
                            tracing::warn!(call = %f.call.hash, codec, "audio in a codec the recorder cannot decode is recorded as silence");
                        }
                        a.undecodable += 1;
                        shared.metrics.undecodable.inc();
                    }
                }
                let chunk = a.timeline.drain(f.at);
                if let Err(e) = a.encode(&chunk) {
                    tracing::error!(call = %f.call.hash, error = %e, "cannot append to spool file");
                }
            }
            Job::Tick(now) => {
                for a in active.values_mut() {
                    let chunk = a.timeline.drain(now);
                    if let Err(e) = a.encode(&chunk) {
                        tracing::error!(call = %a.meta.hash, error = %e, "cannot append to spool file");
                    }
                }
            }
            Job::End { hash, at } => {
                if let Some(a) = active.remove(&hash) {
                    finish(shared, a, at);
                }
            }
            Job::Announced { hash, record } => {
                if let Some(a) = active.get_mut(&hash) {
                    a.announcements.push(record);
                }
            }
        }
    }
}

fn begin(shared: &Shared, meta: CallMeta, at: Instant) -> Result<Active, String> {
    let settings = *shared.settings.read().unwrap_or_else(|e| e.into_inner());
    let start = shared.clock.system(at);
    let stem = stem(start, &meta.hash);
    let start_json = json!({
        "schemaVersion": 1, "call": meta.hash, "caller": meta.caller, "callee": meta.callee, "users": meta.users,
        "startedAt": rfc3339(meta.started), "answeredAt": meta.answered.map(rfc3339), "recordingStartedAt": rfc3339(start),
    });
    let meta_name = format!("{stem}.start.json");
    shared
        .spool
        .write_atomic(&meta_name, start_json.to_string().as_bytes())
        .map_err(|e| format!("{meta_name}: {e}"))?;
    let name = format!("{stem}.mp3");
    let file = shared
        .spool
        .create(&name)
        .map_err(|e| format!("{name}: {e}"))?;
    Ok(Active {
        timeline: Timeline::new(at, settings.pause, settings.layout),
        encoder: new_encoder(settings.layout, settings.bitrate)?,
        settings,
        file,
        stem,
        sha: Sha256::new(),
        bytes: 0,
        codec: None,
        intervals: vec![(start, None)],
        announcements: Vec::new(),
        undecodable: 0,
        out: Vec::new(),
        meta,
    })
}

fn finish(shared: &Shared, mut a: Active, at: Instant) {
    let chunk = a.timeline.finish(at);
    let _ = a.encode(&chunk);
    a.out.clear();
    a.out.reserve(7200);
    if a.encoder
        .flush_to_vec::<mp3lame_encoder::FlushNoGap>(&mut a.out)
        .is_ok()
    {
        let _ = a.write_out();
    }
    if let Err(e) = a.file.sync() {
        tracing::error!(call = %a.meta.hash, error = %e, "cannot sync spool file");
    }
    let ended = shared.clock.system(at);
    if let Some(last) = a.intervals.last_mut() {
        last.1.get_or_insert(ended);
    }
    let seconds = a.timeline.written_samples() as f64 / timeline::RATE as f64;
    shared.metrics.recorded_seconds.inc_by(seconds);
    let sha = hex::encode(a.sha.finalize());
    let sidecar = sidecar(
        shared,
        &a.settings,
        &a.meta,
        &a.stem,
        Some(ended),
        &a.intervals,
        &a.announcements,
        a.codec.as_deref(),
        seconds,
        a.bytes,
        &sha,
        None,
    );
    let written = shared.spool.write_atomic(
        &format!("{}.json", a.stem),
        &serde_json::to_vec_pretty(&sidecar).unwrap_or_default(),
    );
    if let Err(e) = written {
        tracing::error!(call = %a.meta.hash, error = %e, "cannot write sidecar to spool");
        return;
    }
    let _ = shared.spool.remove(&format!("{}.start.json", a.stem));
    shared
        .metrics
        .recordings
        .get_or_create(&vec![("result", "completed".to_owned())])
        .inc();
    tracing::info!(call = %a.meta.hash, seconds = format!("{seconds:.1}"), bytes = a.bytes, "recording complete");
    let _ = shared.uploads.send(a.stem.clone());
}

#[allow(clippy::too_many_arguments)]
fn sidecar(
    shared: &Shared,
    settings: &Settings,
    meta: &CallMeta,
    stem: &str,
    ended: Option<SystemTime>,
    intervals: &[(SystemTime, Option<SystemTime>)],
    announcements: &[Announced],
    codec: Option<&str>,
    seconds: f64,
    bytes: u64,
    sha256: &str,
    truncated: Option<&str>,
) -> Value {
    let origin = meta.answered.unwrap_or(meta.started);
    let since =
        |t: SystemTime| (t.duration_since(origin).unwrap_or_default().as_millis() as f64) / 1000.0;
    let stereo = settings.layout == Layout::Stereo;
    json!({
        "schemaVersion": 1,
        "call": meta.hash,
        "caller": meta.caller,
        "callee": meta.callee,
        "users": meta.users,
        "startedAt": rfc3339(meta.started),
        "answeredAt": meta.answered.map(rfc3339),
        "endedAt": ended.map(rfc3339),
        "durationSeconds": ended.map(&since),
        "recorded": intervals.iter().map(|(on, off)| json!({
            "from": since(*on), "to": off.map(since),
            "fromAt": rfc3339(*on), "toAt": off.map(rfc3339),
        })).collect::<Vec<_>>(),
        "announcements": announcements.iter().map(|a| json!({
            "kind": a.kind, "to": a.to, "result": a.result,
            "at": since(a.at), "atTime": rfc3339(a.at),
            "playedSeconds": a.played.as_millis() as f64 / 1000.0,
        })).collect::<Vec<_>>(),
        "pauseBehaviour": match settings.pause { Pause::Skip => "Skip", Pause::Silence => "Silence" },
        "audio": {
            "format": "mp3",
            "codec": codec,
            "sampleRate": timeline::RATE,
            "channels": if stereo { 2 } else { 1 },
            "channelMap": if stereo { json!({"left": "caller", "right": "callee"}) } else { json!({"mono": "caller+callee"}) },
            "bitrateKbps": settings.bitrate,
            "durationSeconds": (seconds * 1000.0).round() / 1000.0,
        },
        "mp3": {"object": shared.store.key(&object_name(&format!("{stem}.mp3"))), "bytes": bytes, "sha256": sha256},
        "complete": truncated.is_none(),
        "truncated": truncated,
        "recorder": {"instance": shared.instance, "version": env!("CARGO_PKG_VERSION")},
    })
}

/// Queues every recording in the spool for upload; those a crash cut short
/// get a sidecar that says so.
fn recover_spool(shared: &Shared) -> std::io::Result<()> {
    let mut found = 0;
    for mp3 in shared.spool.names_ending(".mp3") {
        let stem = mp3.trim_end_matches(".mp3").to_owned();
        let json_name = format!("{stem}.json");
        if !shared.spool.contains(&json_name) {
            let data = shared.spool.read(&mp3)?;
            let start_name = format!("{stem}.start.json");
            let start: Value = shared
                .spool
                .read(&start_name)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or_else(|| json!({}));
            let parse = |k: &str| {
                start[k]
                    .as_str()
                    .and_then(|s| humantime::parse_rfc3339(s).ok())
            };
            let hash = stem.split('_').nth(1).unwrap_or(&stem).to_owned();
            let recording_start = parse("recordingStartedAt").unwrap_or(SystemTime::now());
            let ended = std::fs::metadata(shared.spool.path(&mp3))
                .and_then(|m| m.modified())
                .ok();
            let meta = CallMeta {
                hash,
                started: parse("startedAt").unwrap_or(recording_start),
                answered: parse("answeredAt"),
                caller: start["caller"].clone(),
                callee: start["callee"].clone(),
                users: start["users"].clone(),
            };
            let seconds = mp3_duration(&data);
            let sha = hex::encode(Sha256::digest(&data));
            let settings = *shared.settings.read().unwrap_or_else(|e| e.into_inner());
            let sidecar = sidecar(
                shared,
                &settings,
                &meta,
                &stem,
                ended,
                &[(recording_start, ended)],
                &[],
                None,
                seconds,
                data.len() as u64,
                &sha,
                Some("the recorder stopped during the call; the recording ends where it stopped"),
            );
            shared.spool.write_atomic(
                &json_name,
                &serde_json::to_vec_pretty(&sidecar).unwrap_or_default(),
            )?;
            shared.spool.remove(&start_name)?;
            shared
                .metrics
                .recordings
                .get_or_create(&vec![("result", "truncated".to_owned())])
                .inc();
            tracing::warn!(call = %meta.hash, seconds = format!("{seconds:.1}"), "recovered a recording cut short by a restart");
        }
        found += 1;
        // Expected by the process before this one and not stored yet: this
        // process owes it to the store, so `expected - stored` stays the
        // number of recordings not yet confirmed.
        shared.metrics.expected.inc();
        let _ = shared.uploads.send(stem);
    }
    if found > 0 {
        tracing::info!(recordings = found, "uploading recordings left in the spool");
    }
    Ok(())
}

/// Duration of an MPEG audio stream by walking its frame headers (MPEG 1, 2
/// and 2.5 layer III), stopping at the first damaged or partial frame.
pub fn mp3_duration(data: &[u8]) -> f64 {
    let mut i = 0;
    let mut seconds = 0.0;
    while i + 4 <= data.len() {
        let h = u32::from_be_bytes([data[i], data[i + 1], data[i + 2], data[i + 3]]);
        if h >> 21 != 0x7ff || (h >> 17) & 3 != 1 {
            break;
        }
        let version = (h >> 19) & 3; // 0 = 2.5, 2 = 2, 3 = 1
        let rate_idx = ((h >> 10) & 3) as usize;
        let br_idx = ((h >> 12) & 0xf) as usize;
        let padding = ((h >> 9) & 1) as usize;
        let (rates, brs, samples): ([u32; 3], [u32; 15], u32) = match version {
            3 => (
                [44100, 48000, 32000],
                [
                    0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320,
                ],
                1152,
            ),
            2 => (
                [22050, 24000, 16000],
                [0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160],
                576,
            ),
            0 => (
                [11025, 12000, 8000],
                [0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160],
                576,
            ),
            _ => break,
        };
        if rate_idx == 3 || br_idx == 0 || br_idx == 15 {
            break;
        }
        let rate = rates[rate_idx];
        let size = (samples / 8 * brs[br_idx] * 1000 / rate) as usize + padding;
        if size < 4 || i + size > data.len() {
            break;
        }
        seconds += samples as f64 / rate as f64;
        i += size;
    }
    seconds
}

async fn upload_loop(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<String>,
    store: Store,
    spool: Arc<Spool>,
    metrics: RecordingMetrics,
) {
    while let Some(stem) = rx.recv().await {
        let mut backoff = Duration::from_secs(1);
        loop {
            match upload_one(&store, &spool, &stem).await {
                Ok(bytes) => {
                    metrics.upload_bytes.inc_by(bytes);
                    metrics.stored.inc();
                    for name in [format!("{stem}.mp3"), format!("{stem}.json")] {
                        if let Err(e) = spool.remove(&name) {
                            tracing::error!(recording = %stem, error = %e, "stored, but cannot remove it from the spool");
                        }
                    }
                    tracing::info!(recording = %stem, "recording stored");
                    break;
                }
                Err(e) => {
                    metrics
                        .upload_failures
                        .get_or_create(&vec![("reason", e.reason().to_owned())])
                        .inc();
                    tracing::warn!(recording = %stem, error = %e, retry_in = ?backoff, "upload failed; the recording stays in the spool");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(60));
                }
            }
        }
    }
}

async fn upload_one(
    store: &Store,
    spool: &Arc<Spool>,
    stem: &str,
) -> Result<u64, crate::store::StoreError> {
    // Off the I/O thread: an hour-long recording is megabytes of disk reads.
    let read = |name: String| {
        let spool = spool.clone();
        async move {
            tokio::task::spawn_blocking(move || spool.read(&name).map_err(|e| (name, e)))
                .await
                .map_err(|e| crate::store::StoreError::Open(e.to_string()))?
                .map_err(|(n, e)| crate::store::StoreError::Open(format!("{n}: {e}")))
        }
    };
    let audio = read(format!("{stem}.mp3")).await?;
    let sidecar = read(format!("{stem}.json")).await?;
    let total = (audio.len() + sidecar.len()) as u64;
    // The MP3 first: a sidecar in the store means its recording is there too.
    store
        .put_once(&object_name(&format!("{stem}.mp3")), audio)
        .await?;
    store
        .put_once(&object_name(&format!("{stem}.json")), sidecar)
        .await?;
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_layout() {
        let t = humantime::parse_rfc3339("2026-11-28T11:28:34.500Z").unwrap();
        let s = stem(t, "65baf6958949e3e9");
        assert_eq!(s, "20261128T112834Z_65baf6958949e3e9");
        assert_eq!(
            object_name(&format!("{s}.mp3")),
            "2026/11/28/20261128T112834Z_65baf6958949e3e9.mp3"
        );
    }

    #[test]
    fn mp3_duration_counts_frames_and_stops_at_damage() {
        let mut enc = new_encoder(Layout::Stereo, 32).unwrap();
        let pcm = vec![1000i16; 8000 * 3];
        let mut out = Vec::with_capacity(mp3lame_encoder::max_required_buffer_size(pcm.len()));
        enc.encode_to_vec(
            mp3lame_encoder::DualPcm {
                left: &pcm[..],
                right: &pcm[..],
            },
            &mut out,
        )
        .unwrap();
        out.reserve(7200);
        enc.flush_to_vec::<mp3lame_encoder::FlushNoGap>(&mut out)
            .unwrap();
        let d = mp3_duration(&out);
        assert!((d - 3.0).abs() < 0.15, "{d}");
        let cut = mp3_duration(&out[..out.len() / 2]);
        assert!(
            (cut - 1.5).abs() < 0.15,
            "a truncated file still counts its whole frames: {cut}"
        );
    }
}
