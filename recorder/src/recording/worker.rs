//! An encoder worker thread: the recordings of the calls the dispatcher
//! gives it, each a timeline, an encoder and a spool file that grows as the
//! call goes. At call end the file is synced and its sidecar written
//! atomically beside it; only then is it handed to the uploader.

use std::collections::HashMap;
use std::sync::mpsc::Receiver;
use std::time::{Instant, SystemTime};

use earshot_contracts::layout::RecordingId;
use earshot_recorder_core::MediaFrame;
use earshot_recorder_core::timeline::{self, Chunk, Timeline};
use sha2::{Digest, Sha256};

use super::encoder::Encoder;
use super::sidecar::{self, Announced, CallMeta, Ending};
use super::{Settings, Shared};
use crate::spool::SpoolFile;

/// What a worker is asked to do.
pub enum Job {
    /// Several jobs of one dispatch round.
    Batch(Vec<Job>),
    /// A call's recording starts.
    Start {
        /// What is known of the call.
        meta: CallMeta,
        /// When.
        at: Instant,
    },
    /// Recording paused or resumed.
    Toggle {
        /// The call.
        hash: String,
        /// When.
        at: Instant,
        /// Resumed (`true`) or paused.
        on: bool,
    },
    /// Audio of a recorded call.
    Media(MediaFrame),
    /// The call ended.
    End {
        /// The call.
        hash: String,
        /// When.
        at: Instant,
    },
    /// Write out what the reorder window has released by now.
    Tick(Instant),
    /// An announcement, for the sidecar.
    Announced {
        /// The call.
        hash: String,
        /// What played.
        record: Announced,
    },
}

/// One recording in progress.
struct Active {
    meta: CallMeta,
    id: RecordingId,
    settings: Settings,
    timeline: Timeline,
    encoder: Box<dyn Encoder>,
    file: SpoolFile,
    sha: Sha256,
    codec: Option<String>,
    intervals: Vec<(SystemTime, Option<SystemTime>)>,
    announcements: Vec<Announced>,
    undecodable: u64,
    out: Vec<u8>,
}

impl Active {
    /// Encodes a chunk and appends what the encoder gives back.
    fn encode(&mut self, chunk: &Chunk) -> std::io::Result<()> {
        if chunk.is_empty() {
            return Ok(());
        }
        self.out.clear();
        if let Err(e) = self.encoder.encode(chunk, &mut self.out) {
            tracing::error!(call = %self.meta.call, error = %e, "MP3 encoding failed");
            return Ok(());
        }
        self.write_out()
    }

    fn write_out(&mut self) -> std::io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        // Appended as the call goes: a crash loses at most what the encoder still buffers.
        self.file.append(&self.out)?;
        self.sha.update(&self.out);
        Ok(())
    }
}

/// The worker's loop: jobs until the dispatcher is gone.
pub fn run(rx: Receiver<Job>, shared: Shared) {
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
    match job {
        Job::Batch(jobs) => {
            for j in jobs {
                run_job(shared, active, j);
            }
        }
        Job::Start { meta, at } => {
            let call = meta.call.clone();
            match begin(shared, meta, at) {
                Ok(a) => {
                    active.insert(call, a);
                }
                Err(e) => {
                    shared
                        .metrics
                        .recordings
                        .get_or_create(&vec![("result", "failed".to_owned())])
                        .inc();
                    tracing::error!(call = %call, error = %e, "cannot start recording in the spool");
                }
            }
        }
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
                    tracing::error!(call = %a.meta.call, error = %e, "cannot append to spool file");
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

fn begin(shared: &Shared, mut meta: CallMeta, at: Instant) -> Result<Active, String> {
    let settings = shared.settings_now();
    let start = shared.clock.system(at);
    meta.recording_started_at = Some(start);
    let id = RecordingId::new(start, &meta.call);
    let stem = id.stem();
    let start_name = format!("{stem}.start.json");
    let record = serde_json::to_vec(&meta).map_err(|e| e.to_string())?;
    shared
        .spool
        .write_atomic(&start_name, &record)
        .map_err(|e| format!("{start_name}: {e}"))?;
    let name = format!("{stem}.mp3");
    let file = shared
        .spool
        .create(&name)
        .map_err(|e| format!("{name}: {e}"))?;
    Ok(Active {
        timeline: Timeline::new(at, settings.pause, settings.layout),
        encoder: (shared.encoders)(&settings)?,
        settings,
        file,
        id,
        sha: Sha256::new(),
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
    if a.encoder.flush(&mut a.out).is_ok() {
        let _ = a.write_out();
    }
    if let Err(e) = a.file.sync() {
        tracing::error!(call = %a.meta.call, error = %e, "cannot sync spool file");
    }
    let ended = shared.clock.system(at);
    if let Some(last) = a.intervals.last_mut() {
        last.1.get_or_insert(ended);
    }
    let seconds = a.timeline.written_samples() as f64 / f64::from(timeline::RATE);
    shared.metrics.recorded_seconds.inc_by(seconds);
    let bytes = a.file.len();
    let stem = a.id.stem();
    let sidecar = sidecar::build(
        &a.meta,
        &a.id,
        shared.store.key(&a.id.mp3_name()),
        &shared.instance,
        Ending {
            settings: a.settings,
            ended: Some(ended),
            intervals: &a.intervals,
            announcements: &a.announcements,
            codec: a.codec.as_deref(),
            seconds,
            bytes,
            sha256: hex::encode(a.sha.finalize()),
            truncated: None,
        },
    );
    if let Err(e) = shared
        .spool
        .write_atomic(&format!("{stem}.json"), &sidecar.to_json())
    {
        tracing::error!(call = %a.meta.call, error = %e, "cannot write sidecar to spool");
        return;
    }
    let _ = shared.spool.remove(&format!("{stem}.start.json"));
    shared
        .metrics
        .recordings
        .get_or_create(&vec![("result", "completed".to_owned())])
        .inc();
    tracing::info!(call = %a.meta.call, seconds = format!("{seconds:.1}"), bytes, "recording complete");
    let _ = shared.uploads.send(stem);
}
