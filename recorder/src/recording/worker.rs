//! An encoder worker thread: the recordings of the calls the dispatcher
//! gives it, each a timeline, an encoder and a spool file that grows as the
//! call goes. At call end the file is synced and its sidecar written
//! atomically beside it; only then is it handed to the uploader.

use std::collections::HashMap;
use std::sync::mpsc::Receiver;
use std::time::{Instant, SystemTime};

use earshot_contracts::layout::RecordingId;
use earshot_recorder_core::MediaFrame;
use earshot_recorder_core::Side;
use earshot_recorder_core::codec::{self, Codec, SideDecoder};
use earshot_recorder_core::timeline::{Chunk, Timeline};
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
        /// The call (unique in this process; Call-IDs need not be).
        call: u64,
        /// What is known of the call.
        meta: CallMeta,
        /// When.
        at: Instant,
        /// A side negotiated a wideband codec: record at 16 kHz.
        wideband: bool,
    },
    /// Recording paused or resumed.
    Toggle {
        /// The call.
        call: u64,
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
        call: u64,
        /// When.
        at: Instant,
    },
    /// Write out what the reorder window has released by now.
    Tick(Instant),
    /// The call's media did something the recording cannot hold.
    Note {
        /// The call.
        call: u64,
        /// What (`fax`).
        note: &'static str,
    },
    /// A SIPREC session's metadata changed, for the sidecar.
    Siprec {
        /// The call.
        call: u64,
        /// What the SRC says now.
        session: earshot_contracts::sidecar::Siprec,
    },
    /// An announcement, for the sidecar.
    Announced {
        /// The call.
        call: u64,
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
    /// Samples per second of the file (8000, or 16000 with a wideband side).
    rate: u32,
    /// Each side's decoder (caller, callee), made for its current codec.
    /// Each side's decoders, the one in use first: a side that flips
    /// between codecs (payload types 0 and 8 on every packet, say) gets its
    /// earlier decoder back instead of a new one (and a new resampler: a
    /// 6 144-tap filter made per packet stalled every recording before).
    decoders: [Vec<SideDecoder>; 2],
    /// Each side's first decoded codec, for the sidecar.
    codecs: [Option<String>; 2],
    /// The samples of the packet in hand.
    pcm: Vec<i16>,
    /// Each side's latest packet: SSRC, sequence number, and the RTP
    /// timestamp where its audio ends (to see a single lost packet).
    last: [Option<(u32, u16, u32)>; 2],
    /// A lost packet's rebuilt samples.
    rebuilt: Vec<i16>,
    file: SpoolFile,
    codec: Option<String>,
    intervals: Vec<(SystemTime, Option<SystemTime>)>,
    announcements: Vec<Announced>,
    /// Packets in a codec the recorder cannot decode (silence in the file),
    /// and the first such codec's name as the SDP gave it (bounded).
    undecodable: u64,
    undecodable_codec: Option<String>,
    /// What the call's media did that the file cannot hold (`fax`).
    notes: Vec<&'static str>,
    out: Vec<u8>,
    /// When the file's data was last flushed to the disk.
    synced: Instant,
    /// When the timeline is next written out on a packet's arrival.
    next_drain: Instant,
}

/// How often a recording's file is flushed to the disk (`fdatasync`): what
/// a node losing power can take of a call, at most. (A process that dies
/// loses less: what is appended is in the kernel at once.)
pub const SYNC_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// How much audio is encoded at once: LAME and the spool file see a call
/// in blocks of this length, not per 20 ms packet (a fifth of the calls
/// into the encoder, 27 % fewer appends). What a crash loses grows by at
/// most this much, and stays about half a second (docs/recordings.md);
/// 250 ms would save 70 % of the appends for 0.7 s.
pub const BLOCK: std::time::Duration = std::time::Duration::from_millis(100);

/// Decoders kept per side of a recording (the codecs a side flips between).
const DECODERS_KEPT: usize = 3;

impl Active {
    /// Decodes one side's payload at the file's rate; `None` for a codec the
    /// recorder cannot decode. A side that changes codec gets a new decoder.
    /// The samples land in `self.pcm` (one buffer for every packet of the
    /// recording).
    fn decode(&mut self, side: Side, c: Codec, name: &str, payload: &[u8]) {
        let kept = &mut self.decoders[side.index()];
        match kept.iter().position(|d| d.codec() == c) {
            Some(0) => {}
            Some(i) => kept[..=i].rotate_right(1),
            None => {
                self.codecs[side.index()].get_or_insert_with(|| name.to_ascii_uppercase());
                kept.insert(0, SideDecoder::new(c, self.rate));
                kept.truncate(DECODERS_KEPT);
            }
        }
        self.pcm.clear();
        if let Some(d) = kept.first_mut() {
            d.decode(payload, &mut self.pcm);
        }
    }

    /// Rebuilds a single packet lost just before this one (in codec `c`) on
    /// its side, from this one (Opus FEC), into the timeline; true if it did.
    fn rebuild_lost(&mut self, f: &MediaFrame, c: Codec, clock: u32) -> bool {
        let i = f.side.index();
        let Some((ssrc, seq, end)) = self.last[i] else {
            return false;
        };
        if ssrc != f.ssrc || f.seq != seq.wrapping_add(2) {
            return false;
        }
        let gap = f.timestamp.wrapping_sub(end) as i32;
        // At most one packet's worth (120 ms), in the file's samples.
        if gap <= 0 || i64::from(gap) * 1000 > i64::from(clock) * 120 {
            return false;
        }
        let samples = (i64::from(gap) * i64::from(self.rate) / i64::from(clock.max(1))) as usize;
        // Only the decoder that decoded the packet before the loss.
        let Some(d) = self.decoders[i].first_mut().filter(|d| d.codec() == c) else {
            return false;
        };
        self.rebuilt.clear();
        if !d.recover(&f.payload, samples, &mut self.rebuilt) || self.rebuilt.is_empty() {
            return false;
        }
        self.timeline
            .push_clocked(f.side, f.at, f.ssrc, end, clock, &self.rebuilt);
        true
    }

    /// Remembers where this packet's audio ends on its side's RTP clock,
    /// unless it came late (reordered): the newest packet stays the mark.
    fn track(&mut self, f: &MediaFrame, clock: u32) {
        let slot = &mut self.last[f.side.index()];
        if let Some((ssrc, seq, _)) = *slot
            && ssrc == f.ssrc
            && f.seq.wrapping_sub(seq) as i16 <= 0
        {
            return;
        }
        let dur = (self.pcm.len() as u64 * u64::from(clock) / u64::from(self.rate.max(1))) as u32;
        *slot = Some((f.ssrc, f.seq, f.timestamp.wrapping_add(dur)));
    }

    /// Encodes a chunk and appends what the encoder gives back. After a
    /// failed append (the disk is full) nothing more is encoded: the file
    /// ends where the last whole append ended.
    fn encode(&mut self, chunk: &Chunk) {
        if chunk.is_empty() || self.file.failed().is_some() {
            return;
        }
        self.out.clear();
        if let Err(e) = self.encoder.encode(chunk, &mut self.out) {
            tracing::error!(call = %self.meta.call, error = %e, "MP3 encoding failed");
            return;
        }
        self.write_out();
    }

    fn write_out(&mut self) {
        if self.out.is_empty() || self.file.failed().is_some() {
            return;
        }
        // Appended as the call goes.
        match self.file.append(&self.out) {
            Ok(()) => {}
            Err(e) => {
                tracing::error!(call = %self.meta.call, error = %e, kept_bytes = self.file.len(), "cannot append to the spool file: the recording ends here");
            }
        }
    }

    fn sync_now_and_then(&mut self, now: Instant) {
        if now.saturating_duration_since(self.synced) >= SYNC_EVERY {
            self.synced = now;
            if let Err(e) = self.file.sync() {
                tracing::warn!(call = %self.meta.call, error = %e, "cannot flush the spool file to disk");
            }
        }
    }
}

/// The worker's loop: jobs until the dispatcher is gone.
pub fn run(rx: Receiver<Job>, shared: Shared) {
    let mut active: HashMap<u64, Active> = HashMap::new();
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

fn run_job(shared: &Shared, active: &mut HashMap<u64, Active>, job: Job) {
    match job {
        Job::Batch(jobs) => {
            for j in jobs {
                run_job(shared, active, j);
            }
        }
        Job::Start {
            call,
            meta,
            at,
            wideband,
        } => {
            let hash = meta.call.clone();
            let rate = if wideband {
                codec::WIDEBAND
            } else {
                codec::NARROWBAND
            };
            match begin(shared, meta, at, rate) {
                Ok(a) => {
                    active.insert(call, a);
                }
                Err(e) => {
                    shared
                        .metrics
                        .recordings
                        .get_or_create(&vec![("result", "failed".to_owned())])
                        .inc();
                    tracing::error!(call = %hash, error = %e, "cannot start recording in the spool");
                }
            }
        }
        Job::Toggle { call, at, on } => {
            if let Some(a) = active.get_mut(&call) {
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
            let Some(a) = active.get_mut(&f.call.id) else {
                return;
            };
            let codec = f.codec.as_deref().unwrap_or("");
            // The codec's name is looked up once per packet.
            match Codec::of(codec) {
                Some(c) => {
                    // The SDP's clock, else the codec's own (RFC 3551, 7587).
                    let clock = if f.clock_rate > 0 {
                        f.clock_rate
                    } else {
                        c.clock_rate()
                    };
                    // Before this packet is decoded: the decoder rebuilds
                    // the lost one first (libopus keeps its state in order).
                    if a.rebuild_lost(&f, c, clock) {
                        shared.metrics.rebuilt.inc();
                    }
                    a.decode(f.side, c, codec, &f.payload);
                    a.codec.get_or_insert_with(|| codec.to_owned());
                    a.timeline
                        .push_clocked(f.side, f.at, f.ssrc, f.timestamp, clock, &a.pcm);
                    a.track(&f, clock);
                }
                // Comfort noise (RFC 3389) stands for silence: the gap it
                // leaves in the timeline is silence of the right length.
                None if codec.eq_ignore_ascii_case("CN") => {}
                None => {
                    if a.undecodable == 0 {
                        tracing::warn!(call = %f.call.hash, codec, "audio in a codec the recorder cannot decode is recorded as silence; the recording is marked incomplete");
                        a.undecodable_codec = Some(if codec.is_empty() {
                            // A sender using a payload type neither side's SDP maps.
                            format!(
                                "payload type {}, which the call's SDP does not map,",
                                f.payload_type
                            )
                        } else {
                            format!("codec {}", codec_name(codec))
                        });
                    }
                    a.undecodable += 1;
                    shared.metrics.undecodable.inc();
                }
            }
            if f.at >= a.next_drain {
                a.next_drain = f.at + BLOCK;
                let chunk = a.timeline.drain(f.at);
                a.encode(&chunk);
            }
        }
        Job::Tick(now) => {
            for a in active.values_mut() {
                let chunk = a.timeline.drain(now);
                a.encode(&chunk);
                a.sync_now_and_then(now);
            }
        }
        Job::End { call, at } => {
            if let Some(a) = active.remove(&call) {
                finish(shared, a, at);
            }
        }
        Job::Announced { call, record } => {
            if let Some(a) = active.get_mut(&call) {
                a.announcements.push(record);
            }
        }
        Job::Note { call, note } => {
            if let Some(a) = active.get_mut(&call)
                && !a.notes.contains(&note)
            {
                a.notes.push(note);
            }
        }
        Job::Siprec { call, session } => {
            if let Some(a) = active.get_mut(&call) {
                a.meta.siprec = Some(Box::new(session));
            }
        }
    }
}

fn begin(shared: &Shared, mut meta: CallMeta, at: Instant, rate: u32) -> Result<Active, String> {
    let settings = shared.settings_now();
    let start = shared.clock.system(at);
    meta.recording_started_at = Some(start);
    let id = RecordingId::new(start, &meta.call, rand::random());
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
        timeline: Timeline::with_rate(at, settings.pause, settings.layout, rate),
        encoder: (shared.encoders)(&settings, rate)?,
        rate,
        decoders: [Vec::new(), Vec::new()],
        codecs: [None, None],
        pcm: Vec::new(),
        last: [None, None],
        rebuilt: Vec::new(),
        settings,
        file,
        id,
        codec: None,
        intervals: vec![(start, None)],
        announcements: Vec::new(),
        undecodable: 0,
        undecodable_codec: None,
        notes: Vec::new(),
        out: Vec::new(),
        synced: at,
        next_drain: at,
        meta,
    })
}

/// A codec name from the SDP, fit for a sidecar and a log line: at most
/// 32 characters of the ones codec names use.
fn codec_name(codec: &str) -> String {
    let name: String = codec
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '/'))
        .take(32)
        .collect();
    if name.is_empty() {
        "unknown".to_owned()
    } else {
        name
    }
}

/// [`incomplete`]'s reasons by name, for programs.
fn incomplete_reasons(a: &Active) -> Vec<&'static str> {
    let mut why = Vec::new();
    if a.file.failed().is_some() {
        why.push("spool_full");
    }
    if a.undecodable > 0 {
        why.push("undecodable");
    }
    why.extend(a.notes.iter().copied());
    why
}

/// Why a finished recording is not what the call said, if it is not: the
/// spool refused more of it, some of its audio could not be decoded, or
/// its media took a turn no recording holds (a fax).
fn incomplete(a: &Active) -> Option<String> {
    let mut why = Vec::new();
    if a.notes.contains(&"behind") {
        why.push(
            "the recorder fell behind and left part of the audio out (earshot_recording_frames_shed_total)"
                .to_owned(),
        );
    }
    if a.notes.contains(&"fax") {
        why.push("the call switched to fax (T.38): the fax was relayed, not recorded".to_owned());
    }
    if a.notes.contains(&"encrypted_dtls_srtp") {
        why.push(
            "the media is DTLS-SRTP, whose keys are agreed end to end and never pass the recorder: relayed, not recorded (silence in the file)"
                .to_owned(),
        );
    }
    if a.notes.contains(&"encrypted_srtp_without_key") {
        why.push(
            "the media is SRTP without a key the recorder can use (no a=crypto, or a suite it does not support): relayed, not recorded (silence in the file)"
                .to_owned(),
        );
    }
    if a.notes.contains(&"srtp_not_decrypting") {
        why.push(
            "SRTP packets stopped decrypting with the key from the SDP (earshot_srtp_unprotect_failures_total): what did not decrypt is silence in the file"
                .to_owned(),
        );
    }
    if a.notes.contains(&"kernel_copies_lost") {
        why.push(
            "the kernel fast path relayed packets whose copies the recorder could not take in time (its ring was full: earshot_kernel_packets_total{result=\"copies_lost\"}): the parties heard them, the file has silence there"
                .to_owned(),
        );
    }
    if let Some(e) = a.file.failed() {
        why.push(format!(
            "the spool could not take more of the recording ({e}); it ends there"
        ));
    }
    if a.undecodable > 0 {
        why.push(format!(
            "{} packets in {} could not be decoded by this recorder and are silence in the file",
            a.undecodable,
            a.undecodable_codec.as_deref().unwrap_or("an unknown codec")
        ));
    }
    (!why.is_empty()).then(|| why.join("; "))
}

fn finish(shared: &Shared, mut a: Active, at: Instant) {
    let chunk = a.timeline.finish(at);
    a.encode(&chunk);
    a.out.clear();
    if a.file.failed().is_none() && a.encoder.flush(&mut a.out).is_ok() {
        a.write_out();
    }
    if let Some(header) = a.encoder.header()
        && let Err(e) = a.file.overwrite_start(&header)
    {
        tracing::warn!(call = %a.meta.call, error = %e, "cannot write the MP3's Info tag; players will count the encoder's delay");
    }
    if let Err(e) = a.file.sync() {
        tracing::error!(call = %a.meta.call, error = %e, "cannot sync spool file");
    }
    let ended = shared.clock.system(at);
    if let Some(last) = a.intervals.last_mut() {
        last.1.get_or_insert(ended);
    }
    let stem = a.id.stem();
    // The sidecar describes the file as it is on disk: its bytes, their
    // SHA-256 and the audio they hold.
    let (bytes, sha256, seconds) = match shared.spool.read(&format!("{stem}.mp3")) {
        Ok(data) => (
            data.len() as u64,
            hex::encode(Sha256::digest(&data)),
            a.encoder.seconds(&data),
        ),
        Err(e) => {
            tracing::error!(call = %a.meta.call, error = %e, "cannot read the spool file back");
            (a.file.len(), String::new(), 0.0)
        }
    };
    shared.metrics.recorded_seconds.inc_by(seconds);
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
            codecs: [a.codecs[0].as_deref(), a.codecs[1].as_deref()],
            rate: a.rate,
            bitrate: super::encoder::bitrate_at(a.settings.bitrate, a.rate),
            seconds,
            bytes,
            sha256,
            truncated: incomplete(&a),
            reasons: incomplete_reasons(&a),
        },
    );
    let json = sidecar.to_json();
    // A full disk may refuse the sidecar too: then it travels to the
    // uploader in memory (a crash before the upload rebuilds it from the
    // start record at the next start).
    let in_memory = match shared.spool.write_atomic(&format!("{stem}.json"), &json) {
        Ok(()) => None,
        Err(e) => {
            tracing::error!(call = %a.meta.call, error = %e, "cannot write the sidecar to the spool; uploading it from memory");
            Some(json)
        }
    };
    if in_memory.is_none() {
        let _ = shared.spool.remove(&format!("{stem}.start.json"));
    }
    let encrypted = a.notes.iter().any(|n| {
        matches!(
            *n,
            "encrypted_dtls_srtp" | "encrypted_srtp_without_key" | "srtp_not_decrypting"
        )
    });
    let result = if encrypted {
        "encrypted"
    } else if a.undecodable > 0 {
        "undecodable"
    } else if sidecar.complete {
        "completed"
    } else {
        "truncated"
    };
    shared
        .metrics
        .recordings
        .get_or_create(&vec![("result", result.to_owned())])
        .inc();
    tracing::info!(call = %a.meta.call, seconds = format!("{seconds:.1}"), bytes, result, "recording finished");
    let _ = shared.uploads.send(super::Ready {
        stem,
        sidecar: in_memory,
    });
}
