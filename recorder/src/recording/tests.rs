//! The pipeline with a fake encoder, in milliseconds: core events in,
//! spool files, sidecars and stored objects out. The fake writes one byte
//! per sample per channel pair and `END` at the flush, so a file's size
//! says exactly how much audio the timeline gave it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use earshot_contracts::config::{FilesystemConfig, RecordingConfig, StorageConfig};
use earshot_contracts::sidecar::Sidecar;
use earshot_contracts::{RecordingMode, Side};
use earshot_recorder_core::timeline::Chunk;
use earshot_recorder_core::{
    CallRef, EndReason, Event, InvolvedUser, MediaFrame, Party, RecordingReason, call_hash,
};

use super::encoder::{Encoder, EncoderFactory};
use super::{Dispatcher, Settings};
use crate::events::Clock;
use crate::metrics::Metrics;
use crate::spool::Spool;
use crate::store::Store;

struct Fake;

impl Encoder for Fake {
    fn encode(&mut self, chunk: &Chunk, out: &mut Vec<u8>) -> Result<(), String> {
        out.extend(std::iter::repeat_n(0x55, chunk.len()));
        Ok(())
    }
    fn flush(&mut self, out: &mut Vec<u8>) -> Result<(), String> {
        out.extend_from_slice(b"END");
        Ok(())
    }
    fn seconds(&self, file: &[u8]) -> f64 {
        file.strip_suffix(b"END").unwrap_or(file).len() as f64 / 8000.0
    }
}

fn fake() -> EncoderFactory {
    Arc::new(|_: &Settings, _rate: u32| Ok(Box::new(Fake) as Box<dyn Encoder>))
}

struct Rig {
    dir: PathBuf,
    dispatcher: Dispatcher,
    spool: Arc<Spool>,
    metrics: Metrics,
    _rt: tokio::runtime::Runtime,
    t0: Instant,
}

impl Rig {
    fn new(name: &str, max_spool: u64) -> Rig {
        let dir = std::env::temp_dir().join(format!(
            "earshot-pipeline-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("spool")).unwrap();
        Self::open(dir, max_spool)
    }

    fn open(dir: PathBuf, max_spool: u64) -> Rig {
        Self::open_with(dir, max_spool, |_| {})
    }

    /// A rig whose spool `prepare` gives faults before recovery runs.
    fn open_with(dir: PathBuf, max_spool: u64, prepare: impl FnOnce(&Spool)) -> Rig {
        Self::open_full(dir, max_spool, prepare, fake())
    }

    /// A rig whose encoders `encoders` makes.
    fn with_encoders(name: &str, encoders: EncoderFactory) -> Rig {
        let dir = std::env::temp_dir().join(format!(
            "earshot-pipeline-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("spool")).unwrap();
        Self::open_full(dir, u64::MAX, |_| {}, encoders)
    }

    fn open_full(
        dir: PathBuf,
        max_spool: u64,
        prepare: impl FnOnce(&Spool),
        encoders: EncoderFactory,
    ) -> Rig {
        let spool = Spool::open(&dir.join("spool"), max_spool);
        prepare(&spool);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let store = Store::open(&StorageConfig {
            filesystem: Some(FilesystemConfig {
                path: dir.join("store"),
                retention_days: None,
            }),
            s3: None,
            prefix: "acme/office/".into(),
        })
        .unwrap();
        let metrics = Metrics::new();
        let (dispatcher, spool) = super::start_on(
            &RecordingConfig {
                encoder_threads: Some(2),
                ..RecordingConfig::default()
            },
            spool,
            store,
            Clock::new(),
            "test-0".into(),
            metrics.recording.clone(),
            super::Parts {
                encoders,
                backoff: super::upload::Backoff {
                    first: Duration::from_millis(5),
                    max: Duration::from_millis(20),
                    conflict: Duration::from_millis(20),
                },
                spool_check: Duration::from_millis(20),
            },
            rt.handle(),
        )
        .unwrap();
        Rig {
            dir,
            dispatcher,
            spool,
            metrics,
            _rt: rt,
            t0: Instant::now(),
        }
    }

    fn at(&self, ms: u64) -> Instant {
        self.t0 + Duration::from_millis(ms)
    }

    fn feed(&mut self, events: Vec<Event>) {
        for e in events {
            self.dispatcher.handle(e);
        }
        self.dispatcher.flush();
    }

    fn sidecars(&self) -> Vec<Sidecar> {
        earshot_tests::sidecars_in(&self.dir.join("store"))
            .into_iter()
            .map(|(_, v)| serde_json::from_value(v).unwrap())
            .collect()
    }

    /// Waits for `n` stored recordings and an empty encoder queue.
    fn wait_stored(&self, n: u64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.metrics.recording.stored.get() < n
            || self.metrics.recording.encoder_queue_depth.get() != 0
        {
            assert!(Instant::now() < deadline, "{n} recordings not stored");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn wait_idle(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.metrics.recording.encoder_queue_depth.get() != 0 {
            assert!(Instant::now() < deadline, "encoders busy");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn call(id: u64, call_id: &str) -> CallRef {
    CallRef {
        id,
        hash: call_hash(call_id),
    }
}

fn started(c: &CallRef, at: Instant, mode: Option<RecordingMode>) -> Event {
    Event::CallStarted {
        call: c.clone(),
        at,
        caller: Party {
            number: Some("008".into()),
            display_name: Some("Ralf".into()),
        },
        callee: Party {
            number: Some("500".into()),
            display_name: None,
        },
        replaces: None,
        users: mode
            .map(|mode| InvolvedUser {
                extension: "008".into(),
                display_name: None,
                mode,
                side: Side::Caller,
            })
            .into_iter()
            .collect(),
    }
}

fn recording(c: &CallRef, at: Instant, on: bool) -> Event {
    Event::Recording {
        call: c.clone(),
        at,
        on,
        reason: RecordingReason::Shortcode {
            extension: "008".into(),
            on,
        },
        wideband: false,
    }
}

/// 20 ms PCMU packets from both sides between `from_ms` and `to_ms`.
fn media(c: &CallRef, rig: &Rig, from_ms: u64, to_ms: u64) -> Vec<Event> {
    let mut out = Vec::new();
    for (i, ms) in (from_ms..to_ms).step_by(20).enumerate() {
        for (side, ssrc) in [(Side::Caller, 1), (Side::Callee, 2)] {
            out.push(Event::Media(MediaFrame {
                call: c.clone(),
                at: rig.at(ms),
                side,
                stream: 0,
                ssrc,
                seq: i as u16,
                timestamp: (i * 160) as u32,
                payload_type: 0,
                codec: Some("PCMU".into()),
                clock_rate: 8000,
                payload: vec![0x7f; 160],
            }));
        }
    }
    out
}

fn ended(c: &CallRef, at: Instant) -> Event {
    Event::CallEnded {
        call: c.clone(),
        at,
        reason: EndReason::Bye(Side::Caller),
        answered: true,
    }
}

#[test]
fn a_recorded_call_reaches_the_store_with_its_sidecar_and_leaves_the_spool() {
    let mut rig = Rig::new("one", u64::MAX);
    let c = call(7, "c1@pbx");
    let (t1, t4) = (rig.at(1000), rig.at(4000));
    let mut events = vec![
        started(&c, rig.at(0), Some(RecordingMode::Always)),
        Event::CallAnswered {
            call: c.clone(),
            at: t1,
        },
        recording(&c, t1, true),
    ];
    events.extend(media(&c, &rig, 1000, 4000));
    events.push(ended(&c, t4));
    rig.feed(events);
    rig.wait_stored(1);

    let s = &rig.sidecars()[0];
    assert_eq!(s.caller.number.as_deref(), Some("008"));
    assert_eq!(s.users[0].mode, RecordingMode::Always);
    assert_eq!(s.call, c.hash);
    assert_eq!(s.duration_seconds, Some(3.0));
    assert_eq!((s.recorded[0].from, s.recorded[0].to), (0.0, Some(3.0)));
    // 3 s at 8 kHz: 24 000 samples, one fake byte each, then END.
    assert_eq!(s.audio.duration_seconds, 3.0);
    assert_eq!(s.mp3.bytes, 24_000 + 3);
    assert!(s.mp3.object.starts_with("acme/office/"), "{}", s.mp3.object);
    let name = s
        .mp3
        .object
        .trim_start_matches("acme/office/")
        .trim_end_matches(".mp3");
    let id = earshot_contracts::layout::RecordingId::parse_path(name).expect("the layout");
    assert_eq!(id.call_hash(), c.hash);
    let stored = std::fs::read(rig.dir.join("store").join(&s.mp3.object)).unwrap();
    assert_eq!(stored.len() as u64, s.mp3.bytes);
    assert_eq!(
        s.mp3.sha256,
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&stored))
    );
    assert!(s.complete && s.truncated.is_none());
    assert_eq!(rig.spool.bytes(), 0, "nothing left in the spool");
    let m = &rig.metrics.recording;
    assert_eq!((m.expected.get(), m.stored.get()), (1, 1));
}

#[test]
fn audio_the_recorder_cannot_decode_is_never_silently_complete() {
    let mut rig = Rig::new("undecodable", u64::MAX);
    let (amr, cn) = (call(8, "amr@pbx"), call(9, "cn@pbx"));
    let mut events = Vec::new();
    for c in [&amr, &cn] {
        events.push(started(c, rig.at(0), Some(RecordingMode::Always)));
        events.push(recording(c, rig.at(0), true));
    }
    // The caller speaks AMR (under a hostile name); the callee G.711. On the other call the
    // callee sends comfort noise between bursts: that is silence, not loss.
    let mut frames = media(&amr, &rig, 0, 2000);
    frames.extend(media(&cn, &rig, 0, 2000));
    for f in &mut frames {
        if let Event::Media(m) = f {
            match (m.call.id, m.side) {
                (8, Side::Caller) => {
                    m.payload_type = 96;
                    m.codec = Some("AMR\u{1b}[31m and a very long tail that goes on".into());
                    m.payload = vec![0x11; 20];
                }
                (9, Side::Callee) if m.seq % 10 == 5 => {
                    m.payload_type = 13;
                    m.codec = Some("CN".into());
                    m.payload = vec![0x40];
                }
                _ => {}
            }
        }
    }
    events.extend(frames);
    events.push(ended(&amr, rig.at(2000)));
    events.push(ended(&cn, rig.at(2000)));
    rig.feed(events);
    rig.wait_stored(2);

    let sidecars = rig.sidecars();
    let of = |c: &CallRef| sidecars.iter().find(|s| s.call == c.hash).unwrap();
    let bad = of(&amr);
    assert!(!bad.complete);
    let why = bad.truncated.as_deref().unwrap();
    assert!(
        why.starts_with(
            "100 packets in codec AMR31mandaverylongtailthatgoeson could not be decoded"
        ),
        "{why}"
    );
    let good = of(&cn);
    assert!(
        good.complete && good.truncated.is_none(),
        "{:?}",
        good.truncated
    );
    let counted = |result: &str| {
        rig.metrics
            .recording
            .recordings
            .get_or_create(&vec![("result", result.to_owned())])
            .get()
    };
    assert_eq!((counted("undecodable"), counted("completed")), (1, 1));
    assert_eq!(rig.metrics.recording.undecodable.get(), 100);
}

#[test]
fn a_payload_type_the_sdp_does_not_map_is_an_incomplete_recording_that_says_which() {
    let mut rig = Rig::new("unmapped", u64::MAX);
    let c = call(11, "unmapped@pbx");
    let mut events = vec![
        started(&c, rig.at(0), Some(RecordingMode::Always)),
        recording(&c, rig.at(0), true),
    ];
    // The callee's phone sends PT 0 where the SDP said PCMA only.
    let mut frames = media(&c, &rig, 0, 1000);
    for f in &mut frames {
        if let Event::Media(m) = f
            && m.side == Side::Callee
        {
            m.codec = None;
            m.clock_rate = 0;
        }
    }
    events.extend(frames);
    events.push(ended(&c, rig.at(1000)));
    rig.feed(events);
    rig.wait_stored(1);
    let s = &rig.sidecars()[0];
    assert!(!s.complete);
    assert_eq!(
        s.truncated.as_deref(),
        Some(
            "50 packets in payload type 0, which the call's SDP does not map, could not be decoded by this recorder and are silence in the file"
        )
    );
}

#[test]
fn a_codec_change_mid_stream_continues_the_same_file_on_the_same_timeline() {
    let mut rig = Rig::new("switch", u64::MAX);
    let c = call(10, "switch@pbx");
    let mut events = vec![
        started(&c, rig.at(0), Some(RecordingMode::Always)),
        recording(&c, rig.at(0), true),
    ];
    // 1 s of PCMU, then the caller's phone switches to G.722 (same SSRC,
    // timestamps running on); the callee stays on PCMU.
    let mut frames = media(&c, &rig, 0, 2000);
    for f in &mut frames {
        if let Event::Media(m) = f
            && m.side == Side::Caller
            && m.seq >= 50
        {
            m.payload_type = 9;
            m.codec = Some("G722".into());
        }
    }
    events.extend(frames);
    events.push(ended(&c, rig.at(2000)));
    rig.feed(events);
    rig.wait_stored(1);
    let s = &rig.sidecars()[0];
    assert!(s.complete, "{:?}", s.truncated);
    assert_eq!(
        s.audio.duration_seconds, 2.0,
        "no gap, no overlap at the switch"
    );
    assert_eq!(
        s.audio.codecs["caller"], "PCMU",
        "the first codec of each side"
    );
    assert_eq!(rig.metrics.recording.undecodable.get(), 0);
}

#[test]
fn a_single_lost_opus_packet_is_rebuilt_once_and_a_late_one_is_not_a_loss() {
    let mut rig = Rig::new("opus-loss", u64::MAX);
    let c = call(11, "opus-loss@pbx");
    let mut events = vec![
        started(&c, rig.at(0), Some(RecordingMode::Always)),
        recording(&c, rig.at(0), true),
    ];
    let mut enc = opusic_c::Encoder::new(
        opusic_c::Channels::Mono,
        opusic_c::SampleRate::Hz8000,
        opusic_c::Application::Voip,
    )
    .unwrap();
    let mut frames = media(&c, &rig, 0, 2000);
    for f in &mut frames {
        if let Event::Media(m) = f
            && m.side == Side::Caller
        {
            let mut out = vec![0u8; 400];
            let n = enc.encode_to_slice(&[0x0100; 160], &mut out).unwrap();
            out.truncate(n);
            m.payload = out;
            m.payload_type = 111;
            m.codec = Some("opus".into());
            m.clock_rate = 48000;
            m.timestamp = u32::from(m.seq) * 960;
        }
    }
    let caller =
        |f: &Event, seq| matches!(f, Event::Media(m) if m.side == Side::Caller && m.seq == seq);
    // Packet 30 lost; 61 arrives before 60.
    frames.retain(|f| !caller(f, 30));
    let p60 = frames.iter().position(|f| caller(f, 60)).unwrap();
    let p61 = frames.iter().position(|f| caller(f, 61)).unwrap();
    frames.swap(p60, p61);
    events.extend(frames);
    events.push(ended(&c, rig.at(2000)));
    rig.feed(events);
    rig.wait_stored(1);
    // 30 rebuilt; 60 looked lost when 61 came (rebuilt, then overwritten by
    // the real one); 62 after the late 60 is no loss.
    assert_eq!(rig.metrics.recording.rebuilt.get(), 2);
    let s = &rig.sidecars()[0];
    assert!(s.complete, "{:?}", s.truncated);
    assert_eq!(s.audio.duration_seconds, 2.0);
}

#[test]
fn calls_the_policy_does_not_record_leave_nothing() {
    let mut rig = Rig::new("none", u64::MAX);
    // No policy user; a user whose recording never switched on.
    let (a, b) = (call(1, "a"), call(2, "b"));
    let mut events = vec![
        started(&a, rig.at(0), None),
        recording(&a, rig.at(100), true),
        started(&b, rig.at(0), Some(RecordingMode::OnDemand)),
    ];
    events.extend(media(&a, &rig, 100, 500));
    events.extend(media(&b, &rig, 100, 500));
    events.extend([ended(&a, rig.at(500)), ended(&b, rig.at(500))]);
    rig.feed(events);
    rig.wait_idle();
    std::thread::sleep(Duration::from_millis(50));
    assert!(rig.sidecars().is_empty());
    assert_eq!(rig.spool.bytes(), 0);
    assert_eq!(rig.metrics.recording.expected.get(), 0);
}

#[test]
fn pausing_and_resuming_gives_two_intervals_and_skips_the_pause() {
    let mut rig = Rig::new("pause", u64::MAX);
    let c = call(3, "p");
    let mut events = vec![
        started(&c, rig.at(0), Some(RecordingMode::OnDemand)),
        Event::CallAnswered {
            call: c.clone(),
            at: rig.at(0),
        },
        recording(&c, rig.at(1000), true),
    ];
    events.extend(media(&c, &rig, 0, 1000));
    events.extend(media(&c, &rig, 1000, 2000));
    events.push(recording(&c, rig.at(2000), false));
    events.extend(media(&c, &rig, 2000, 3000));
    events.push(recording(&c, rig.at(3000), true));
    events.extend(media(&c, &rig, 3000, 4000));
    events.push(ended(&c, rig.at(4000)));
    rig.feed(events);
    rig.wait_stored(1);
    let s = &rig.sidecars()[0];
    let intervals: Vec<_> = s.recorded.iter().map(|r| (r.from, r.to)).collect();
    assert_eq!(intervals, [(1.0, Some(2.0)), (3.0, Some(4.0))]);
    // Skip: the paused second is left out.
    assert_eq!(s.mp3.bytes, 16_000 + 3);
}

#[test]
fn a_full_spool_refuses_the_recording_and_deletes_nothing() {
    let dir = std::env::temp_dir().join(format!("earshot-pipeline-full-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("spool")).unwrap();
    std::fs::write(dir.join("spool/ballast.bin"), [0u8; 100]).unwrap();
    let mut rig = Rig::open(dir, 100);
    let c = call(4, "full");
    let mut events = vec![
        started(&c, rig.at(0), Some(RecordingMode::Always)),
        recording(&c, rig.at(0), true),
    ];
    events.extend(media(&c, &rig, 0, 500));
    events.push(ended(&c, rig.at(500)));
    rig.feed(events);
    rig.wait_idle();
    let failed = rig
        .metrics
        .recording
        .recordings
        .get_or_create(&vec![("result", "failed".to_owned())])
        .get();
    assert_eq!((rig.metrics.recording.expected.get(), failed), (1, 1));
    assert!(rig.dir.join("spool/ballast.bin").exists());
    assert_eq!(rig.spool.bytes(), 100);
}

#[test]
fn what_a_crash_left_is_recovered_marked_truncated_and_stored() {
    let mut rig = Rig::new("crash", u64::MAX);
    let c = call(5, "crash");
    let mut events = vec![
        started(&c, rig.at(0), Some(RecordingMode::Always)),
        Event::CallAnswered {
            call: c.clone(),
            at: rig.at(0),
        },
        recording(&c, rig.at(0), true),
    ];
    events.extend(media(&c, &rig, 0, 2000));
    rig.feed(events);
    rig.dispatcher.tick(rig.at(2000));
    rig.dispatcher.flush();
    rig.wait_idle();
    // The process dies here: the spool holds the MP3 so far and its start record.
    let dir = rig.dir.clone();
    let left = std::fs::read_dir(dir.join("spool")).unwrap().count();
    assert_eq!(left, 2, "the MP3 and its .start.json");
    std::mem::forget(rig);
    let rig = Rig::open(dir, u64::MAX);
    rig.wait_stored(1);
    let s = &rig.sidecars()[0];
    assert!(!s.complete);
    assert_eq!(s.truncated.as_deref(), Some(super::recovery::CUT_SHORT));
    assert_eq!(
        s.caller.number.as_deref(),
        Some("008"),
        "the start record survives"
    );
    assert_eq!(
        rig.metrics.recording.expected.get(),
        1,
        "owed by this process"
    );
    assert!(SystemTime::now() >= s.started_at.unwrap());
}

#[test]
fn two_calls_with_one_call_id_become_two_recordings_that_do_not_mix() {
    // Two peers may send the same Call-ID: the core keeps them apart by its
    // own ids, and so must every part of the pipeline.
    let mut rig = Rig::new("same-call-id", u64::MAX);
    let (a, b) = (call(10, "dup@pbx"), call(11, "dup@pbx"));
    assert_eq!(a.hash, b.hash);
    let mut events = Vec::new();
    for c in [&a, &b] {
        events.push(started(c, rig.at(0), Some(RecordingMode::Always)));
        events.push(Event::CallAnswered {
            call: c.clone(),
            at: rig.at(0),
        });
        events.push(recording(c, rig.at(0), true));
    }
    events.extend(media(&a, &rig, 0, 1000));
    events.extend(media(&b, &rig, 0, 2000));
    events.push(ended(&a, rig.at(1000)));
    events.push(ended(&b, rig.at(2000)));
    rig.feed(events);
    rig.wait_stored(2);
    let mut sizes: Vec<u64> = rig.sidecars().iter().map(|s| s.mp3.bytes).collect();
    sizes.sort();
    assert_eq!(
        sizes,
        [8_000 + 3, 16_000 + 3],
        "each its own audio, nothing mixed"
    );
    let objects: std::collections::HashSet<String> =
        rig.sidecars().into_iter().map(|s| s.mp3.object).collect();
    assert_eq!(objects.len(), 2, "two names");
}

#[test]
fn a_full_disk_ends_the_recording_where_it_was_with_a_hash_of_what_was_kept() {
    let mut rig = Rig::new("disk-full", u64::MAX);
    rig.spool
        .disk_full_at
        .store(10_000, std::sync::atomic::Ordering::Relaxed);
    let c = call(12, "full-disk");
    let mut events = vec![
        started(&c, rig.at(0), Some(RecordingMode::Always)),
        Event::CallAnswered {
            call: c.clone(),
            at: rig.at(0),
        },
        recording(&c, rig.at(0), true),
    ];
    for ms in (0..3000).step_by(100) {
        events.extend(media(&c, &rig, ms, ms + 100));
    }
    events.push(ended(&c, rig.at(3000)));
    rig.feed(events);
    rig.wait_stored(1);
    let s = &rig.sidecars()[0];
    assert!(!s.complete);
    assert!(
        s.truncated
            .as_deref()
            .is_some_and(|t| t.contains("spool could not take more")),
        "{:?}",
        s.truncated
    );
    let stored = std::fs::read(rig.dir.join("store").join(&s.mp3.object)).unwrap();
    assert!(
        stored.len() <= 10_000 && stored.len() > 5_000,
        "{}",
        stored.len()
    );
    assert_eq!(s.mp3.bytes, stored.len() as u64);
    assert_eq!(
        s.mp3.sha256,
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&stored))
    );
    let truncated = rig
        .metrics
        .recording
        .recordings
        .get_or_create(&vec![("result", "truncated".to_owned())])
        .get();
    assert_eq!(truncated, 1);
}

#[test]
fn a_recording_the_store_refuses_does_not_hold_up_the_others() {
    let dir = std::env::temp_dir().join(format!("earshot-pipeline-stuck-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("spool")).unwrap();
    // A finished recording left in the spool, whose name the store already
    // holds with other bytes: it can never be stored as it is.
    let t = humantime::parse_rfc3339("2026-11-28T11:28:34Z").unwrap();
    let id = earshot_contracts::layout::RecordingId::new(t, &call_hash("old"), 7);
    std::fs::write(dir.join(format!("spool/{}.mp3", id.stem())), b"mine").unwrap();
    std::fs::write(dir.join(format!("spool/{}.json", id.stem())), b"{}").unwrap();
    let taken = dir.join("store/acme/office").join(id.mp3_name());
    std::fs::create_dir_all(taken.parent().unwrap()).unwrap();
    std::fs::write(&taken, b"someone else's").unwrap();

    let mut rig = Rig::open(dir, u64::MAX);
    let c = call(13, "new");
    let mut events = vec![
        started(&c, rig.at(0), Some(RecordingMode::Always)),
        Event::CallAnswered {
            call: c.clone(),
            at: rig.at(0),
        },
        recording(&c, rig.at(0), true),
    ];
    events.extend(media(&c, &rig, 0, 500));
    events.push(ended(&c, rig.at(500)));
    rig.feed(events);
    rig.wait_stored(1);
    let m = &rig.metrics.recording;
    let deadline = Instant::now() + Duration::from_secs(10);
    while m.upload_stuck.get() != 1 {
        assert!(
            Instant::now() < deadline,
            "the refused recording counts as stuck"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let conflicts = m
        .upload_failures
        .get_or_create(&vec![("reason", "conflict".to_owned())])
        .get();
    assert!(
        conflicts >= u64::from(super::upload::STUCK_AFTER),
        "{conflicts}"
    );
    assert_eq!(
        std::fs::read(&taken).unwrap(),
        b"someone else's",
        "never overwritten"
    );
    assert!(
        rig.spool.contains(&format!("{}.mp3", id.stem())),
        "kept in the spool"
    );
    assert_eq!(m.stored.get(), 1, "the new call's recording went past it");
}

/// What a crash leaves of a recording in `spool`: its MP3 so far and its
/// start record. Returns its stem.
fn crashed_recording(spool: &std::path::Path, call_id: &str, nonce: u32) -> String {
    let t = humantime::parse_rfc3339("2026-11-28T11:28:34Z").unwrap();
    let id = earshot_contracts::layout::RecordingId::new(t, &call_hash(call_id), nonce);
    let stem = id.stem();
    let meta = super::sidecar::CallMeta {
        call: call_hash(call_id),
        caller: earshot_contracts::sidecar::Party {
            number: Some("008".into()),
            display_name: None,
        },
        callee: Default::default(),
        users: Vec::new(),
        started_at: Some(t),
        answered_at: Some(t),
        recording_started_at: Some(t),
        replaces: None,
        siprec: None,
    };
    std::fs::write(spool.join(format!("{stem}.mp3")), [0x55; 4000]).unwrap();
    std::fs::write(
        spool.join(format!("{stem}.start.json")),
        serde_json::to_vec(&meta).unwrap(),
    )
    .unwrap();
    stem
}

/// A recorded call of `ms` milliseconds.
fn a_call(rig: &Rig, id: u64, call_id: &str, ms: u64) -> Vec<Event> {
    let c = call(id, call_id);
    let mut events = vec![
        started(&c, rig.at(0), Some(RecordingMode::Always)),
        recording(&c, rig.at(0), true),
    ];
    events.extend(media(&c, rig, 0, ms));
    events.push(ended(&c, rig.at(ms)));
    events
}

fn failed(rig: &Rig) -> u64 {
    rig.metrics
        .recording
        .recordings
        .get_or_create(&vec![("result", "failed".to_owned())])
        .get()
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn recordings_that_cannot_be_read_are_set_aside_and_the_others_stored() {
    let dir = std::env::temp_dir().join(format!(
        "earshot-pipeline-quarantine-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let spool_dir = dir.join("spool");
    std::fs::create_dir_all(&spool_dir).unwrap();
    // One a crash cut short that can be read; one a crash cut short, and
    // one finished, whose MP3 the recorder may not read (another user's,
    // mode 0600).
    let good = crashed_recording(&spool_dir, "good", 1);
    let cut = crashed_recording(&spool_dir, "cut", 2);
    let finished = crashed_recording(&spool_dir, "finished", 3);
    std::fs::rename(
        spool_dir.join(format!("{finished}.start.json")),
        spool_dir.join(format!("{finished}.json")),
    )
    .unwrap();
    let unreadable = [format!("{cut}.mp3"), format!("{finished}.mp3")];
    let mut rig = Rig::open_with(dir, u64::MAX, |s| {
        s.unreadable.lock().unwrap().extend(unreadable.clone())
    });
    rig.wait_stored(1);
    let stored = rig.sidecars();
    assert_eq!(stored.len(), 1, "only the one that can be read");
    assert_eq!(stored[0].call, call_hash("good"));
    assert!(!stored[0].complete);
    let m = &rig.metrics.recording;
    assert_eq!(m.quarantined.get(), 2, "two recordings set aside");
    assert_eq!(m.expected.get(), 1, "only what will be stored is owed");
    // Kept under new names, for an operator; never picked up again.
    let mut left: Vec<String> = std::fs::read_dir(rig.dir.join("spool"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    let mut expected = vec![
        format!("{cut}.mp3.quarantined"),
        format!("{cut}.start.json.quarantined"),
        format!("{finished}.json.quarantined"),
        format!("{finished}.mp3.quarantined"),
    ];
    expected.sort();
    assert_eq!(left, expected);
    assert!(!left.iter().any(|n| n.starts_with(&good)));
    let usage = rig.spool.usage(SystemTime::now());
    assert_eq!((usage.recordings, usage.quarantined_files), (0, 4));
    let on_disk: u64 = std::fs::read_dir(rig.dir.join("spool"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert_eq!(usage.bytes, on_disk, "still counted: they take room");
    assert!(
        usage.accepting,
        "set aside, the rest of the spool is usable"
    );
    // And new calls are recorded.
    let events = a_call(&rig, 20, "after", 500);
    rig.feed(events);
    rig.wait_stored(2);
}

#[test]
fn a_sidecar_the_full_spool_refuses_at_start_is_uploaded_from_memory_and_new_recordings_wait() {
    let dir = std::env::temp_dir().join(format!(
        "earshot-pipeline-recover-full-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("spool")).unwrap();
    crashed_recording(&dir.join("spool"), "cut", 1);
    // The disk is full: the rebuilt sidecar cannot be written.
    let mut rig = Rig::open_with(dir, u64::MAX, |s| {
        s.writes_fail
            .store(true, std::sync::atomic::Ordering::Relaxed)
    });
    rig.wait_stored(1);
    let s = &rig.sidecars()[0];
    assert_eq!(s.truncated.as_deref(), Some(super::recovery::CUT_SHORT));
    assert_eq!(s.caller.number.as_deref(), Some("008"));
    assert_eq!(rig.spool.bytes(), 0, "stored, so gone from the spool");
    // While the spool cannot be written, new recordings are refused, and
    // it says why.
    let why = rig.spool.refusal().expect("refusing");
    assert!(why.contains("No space left on device"), "{why}");
    assert!(!rig.spool.usage(SystemTime::now()).accepting);
    let events = a_call(&rig, 21, "refused", 500);
    rig.feed(events);
    rig.wait_idle();
    assert_eq!(failed(&rig), 1);
    assert_eq!(rig.spool.bytes(), 0, "nothing of it in the spool");
    // Room again: the check finds it, and new calls are recorded.
    rig.spool
        .writes_fail
        .store(false, std::sync::atomic::Ordering::Relaxed);
    wait_for("the spool takes recordings again", || {
        rig.spool.refusal().is_none()
    });
    let events = a_call(&rig, 22, "recorded", 500);
    rig.feed(events);
    rig.wait_stored(2);
    assert_eq!(failed(&rig), 1);
}

#[test]
fn a_spool_directory_that_cannot_be_read_at_start_is_recovered_once_it_can() {
    let dir =
        std::env::temp_dir().join(format!("earshot-pipeline-no-spool-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // A file where the directory should be: nothing can be read or written.
    std::fs::write(dir.join("spool"), b"not a directory").unwrap();
    let mut rig = Rig::open(dir.clone(), u64::MAX);
    let why = rig.spool.refusal().expect("refusing");
    assert!(why.starts_with("cannot read the spool directory"), "{why}");
    let events = a_call(&rig, 23, "refused", 500);
    rig.feed(events);
    rig.wait_idle();
    assert_eq!(failed(&rig), 1);
    // The volume comes back, with a recording a crash left.
    std::fs::remove_file(dir.join("spool")).unwrap();
    std::fs::create_dir_all(dir.join("spool")).unwrap();
    crashed_recording(&dir.join("spool"), "left", 1);
    rig.wait_stored(1);
    wait_for("the spool takes recordings again", || {
        rig.spool.refusal().is_none()
    });
    let events = a_call(&rig, 24, "recorded", 500);
    rig.feed(events);
    rig.wait_stored(2);
}

/// An encoder worker stuck on one call (its encoder never returns, as a
/// 6 144-tap resampler rebuilt per packet nearly did) costs that worker's
/// calls their audio, counted and marked `behind`; the dispatcher never
/// waits on it, the other worker's call is recorded whole, and the
/// pipeline says it is behind (`/readyz` reads it) until it catches up.
#[test]
fn a_stuck_encoder_costs_its_own_calls_audio_and_never_blocks_the_dispatcher() {
    let (release, gate) = std::sync::mpsc::channel::<()>();
    let gate = std::sync::Mutex::new(gate);
    // Wideband recordings (the stuck call's) wait at the gate once.
    let factory: EncoderFactory = Arc::new(move |_: &Settings, rate: u32| {
        if rate != 8000 {
            let _ = gate.lock().unwrap().recv();
        }
        Ok(Box::new(Fake) as Box<dyn Encoder>)
    });
    let mut rig = Rig::with_encoders("stuck", factory);
    // Call 1 goes to worker 1 and is stuck there; call 2 to worker 0.
    let (stuck, fine) = (call(1, "stuck@pbx"), call(2, "fine@pbx"));
    let mut opening = Vec::new();
    for (c, wideband) in [(&stuck, true), (&fine, false)] {
        opening.push(started(c, rig.at(0), Some(RecordingMode::Always)));
        opening.push(Event::Recording {
            call: c.clone(),
            at: rig.at(0),
            on: true,
            reason: RecordingReason::Answered {
                extension: "008".into(),
            },
            wideband,
        });
    }
    rig.feed(opening);
    let (a, b) = (
        media(&stuck, &rig, 0, 280_000),
        media(&fine, &rig, 0, 280_000),
    );
    let started = Instant::now();
    for (x, y) in a.chunks(40).zip(b.chunks(40)) {
        let mut round = x.to_vec();
        round.extend_from_slice(y);
        rig.feed(round);
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the dispatcher never waits on the stuck worker"
    );
    let shed = rig.metrics.recording.frames_shed.get();
    assert!(shed > 5_000, "{shed} frames shed");
    // Shedding ran every round since the queue filled; the stuck call was
    // told once: what is held besides media stays a handful of jobs.
    assert!(
        rig.dispatcher.held_control_jobs() < 20,
        "{} control jobs held",
        rig.dispatcher.held_control_jobs()
    );
    let backlog = rig.dispatcher.backlog();
    assert!(backlog.behind_for(Instant::now()).is_some());
    release.send(()).unwrap();
    rig.feed(vec![
        ended(&stuck, rig.at(280_000)),
        ended(&fine, rig.at(280_000)),
    ]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while rig.metrics.recording.stored.get() < 2
        || rig.metrics.recording.encoder_queue_depth.get() != 0
    {
        assert!(
            Instant::now() < deadline,
            "both recordings stored once the worker is free"
        );
        rig.dispatcher.flush();
        std::thread::sleep(Duration::from_millis(5));
    }
    rig.dispatcher.flush();
    assert!(backlog.behind_for(Instant::now()).is_none(), "caught up");
    let sidecars = rig.sidecars();
    let of = |hash: &str| sidecars.iter().find(|s| s.call == hash).unwrap().clone();
    let (s1, s2) = (of(&stuck.hash), of(&fine.hash));
    assert!(
        !s1.complete && s1.incomplete_reasons == ["behind"],
        "{s1:?}"
    );
    assert!(s2.complete && s2.incomplete_reasons.is_empty(), "{s2:?}");
}
