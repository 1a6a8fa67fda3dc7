//! A fixed workload for counting instructions (`make bench` runs it under
//! valgrind's callgrind): `CALLS` recorded calls of `SECONDS` each, both
//! sides in `CODEC` (PCMU, G722, G729 or OPUS; wideband ones make 16 kHz
//! files, as in a real call), go
//! through the recording pipeline the recorder runs — dispatcher, encoder
//! workers (decode, timeline, LAME), spool files, sidecars, the uploader
//! into a local directory — and the process exits once all are stored.
//!
//! Instruction counts, unlike seconds, repeat on a shared 2-core machine.
//! Two runs with different `CALLS` give the cost of one more recorded
//! call-minute, without the fixed cost of starting the process.
//!
//! `instructions <calls> <seconds> [<codec>]`

use std::sync::Arc;
use std::time::{Duration, Instant};

use earshot_contracts::config::{FilesystemConfig, RecordingConfig, SpoolConfig, StorageConfig};
use earshot_contracts::{RecordingMode, Side};
use earshot_recorder::events::Clock;
use earshot_recorder::metrics::Metrics;
use earshot_recorder::recording::dispatch::{EventBuffer, run_dispatcher};
use earshot_recorder::recording::{self, Parts};
use earshot_recorder::store::Store;
use earshot_recorder_core::codec::Codec;
use earshot_recorder_core::{
    CallRef, EndReason, Event, InvolvedUser, MediaFrame, Party, RecordingReason, call_hash,
};

#[path = "../benches/common/payloads.rs"]
mod payloads;
use payloads::payloads;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: u64| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    let (calls, seconds) = (arg(0, 4), arg(1, 30));
    let codec_name = args
        .get(2)
        .map_or("PCMU", String::as_str)
        .to_ascii_uppercase();
    let codec = Codec::of(&codec_name).expect("a codec the recorder decodes");
    let dir = std::env::temp_dir().join(format!("earshot-instructions-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("spool")).expect("spool dir");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let store = Store::open(&StorageConfig {
        filesystem: Some(FilesystemConfig {
            path: dir.join("store"),
            retention_days: None,
        }),
        s3: None,
        prefix: "acme/office/".into(),
    })
    .expect("store");
    let metrics = Metrics::new();
    let (dispatcher, _spool) = recording::start(
        &RecordingConfig {
            encoder_threads: Some(2),
            ..RecordingConfig::default()
        },
        &SpoolConfig {
            dir: dir.join("spool"),
            max_bytes: u64::MAX,
        },
        store,
        Clock::new(),
        "instructions-0".into(),
        metrics.recording.clone(),
        Parts::default(),
        rt.handle(),
    )
    .expect("pipeline");

    let events = Arc::new(EventBuffer::default());
    let feeder = events.clone();
    let dispatch = std::thread::spawn(move || run_dispatcher(dispatcher, feeder, |_| {}));
    let t0 = Instant::now();
    // A tone per side, so LAME has real work (silence is cheaper): one
    // second of packets made up front (440 and 1000 Hz repeat every second),
    // so the count is the pipeline's, not the fixture's.
    let tones = [payloads(codec, 440.0), payloads(codec, 1000.0)];
    let (pt, clock) = match codec {
        Codec::G711(_) => (0, 8000),
        Codec::G722 => (9, 8000),
        Codec::G729 => (18, 8000),
        Codec::Opus => (111, 48000),
    };
    for id in 0..calls {
        let call = CallRef {
            id,
            hash: call_hash(&format!("instructions-{id}")),
        };
        events.push(Event::CallStarted {
            call: call.clone(),
            at: t0,
            caller: Party {
                number: Some("008".into()),
                display_name: None,
            },
            callee: Party {
                number: Some("500".into()),
                display_name: None,
            },
            replaces: None,
            users: vec![InvolvedUser {
                extension: "008".into(),
                display_name: None,
                mode: RecordingMode::Always,
                side: Side::Caller,
            }],
        });
        events.push(Event::Recording {
            call: call.clone(),
            at: t0,
            on: true,
            reason: RecordingReason::Answered {
                extension: "008".into(),
            },
            wideband: codec.wideband(),
        });
    }
    // Packets in time order across calls, as a recorder sees them.
    let packets = seconds as usize * 50;
    for n in 0..packets {
        let at = t0 + Duration::from_millis(20 * n as u64);
        let frames: Vec<Event> = (0..calls)
            .flat_map(|id| {
                [Side::Caller, Side::Callee].map(|side| {
                    Event::Media(MediaFrame {
                        call: CallRef {
                            id,
                            hash: call_hash(&format!("instructions-{id}")),
                        },
                        at,
                        side,
                        stream: 0,
                        ssrc: side.index() as u32 + 1,
                        seq: n as u16,
                        timestamp: (n as u32).wrapping_mul(clock / 50),
                        payload_type: pt,
                        codec: Some(codec_name.clone()),
                        clock_rate: clock,
                        payload: tones[side.index()][n % 50].clone(),
                    })
                })
            })
            .collect();
        events.extend(frames);
    }
    let end = t0 + Duration::from_millis(20 * packets as u64);
    for id in 0..calls {
        events.push(Event::CallEnded {
            call: CallRef {
                id,
                hash: call_hash(&format!("instructions-{id}")),
            },
            at: end,
            reason: EndReason::Bye(Side::Caller),
            answered: true,
        });
    }
    events.close();
    dispatch.join().expect("dispatcher");
    // Stored: every sidecar in the directory store.
    let deadline = Instant::now() + Duration::from_secs(600);
    let stored = loop {
        let n = earshot_tests::sidecars_in(&dir.join("store")).len();
        if n >= calls as usize || Instant::now() > deadline {
            break n;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "{{\"codec\": \"{codec_name}\", \"calls\": {calls}, \"seconds\": {seconds}, \"stored\": {stored}, \"callMinutes\": {}}}",
        (calls * seconds) as f64 / 60.0
    );
    assert_eq!(stored, calls as usize, "every call stored");
}
