//! End to end, what a tenant downloads: calls through a real recorder with
//! SIPp on both sides, the MP3s decoded back with ffmpeg and measured — the
//! caller's tone on the left, the callee's on the right, the length of the
//! answered call — and the sidecars checked field by field. Storage here is
//! the embedded filesystem default; the S3 suite runs the same against Garage.

mod common;

use std::time::Duration;

use common::*;
use earshot_tests::pcap::RtpStream;
use earshot_tests::{decode_mp3, events_of, rms, sha256_hex, tone_power};

fn secs(v: &serde_json::Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

/// Answered → ended of the call as the sidecar reports it.
fn call_seconds(sidecar: &serde_json::Value) -> f64 {
    secs(&sidecar["durationSeconds"])
}

#[test]
fn a_recorded_call_is_a_stereo_mp3_with_the_caller_left_and_the_right_length() {
    let s = setup("tones", &users());
    let caller = RtpStream::new(1).tone(440.0, 4000);
    let callee = RtpStream::new(2).tone(1000.0, 4000);
    s.call("008", "500", &caller, &callee, 4000, None);

    let recs = s.recorder.wait_recordings(1, Duration::from_secs(15));
    assert_eq!(recs.len(), 1);
    let (mp3, side) = &recs[0];
    // Layout: <prefix>/YYYY/MM/DD/<UTC start>_<hash>-<nonce>.mp3
    let rel = mp3
        .strip_prefix(&s.recorder.store)
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let parts: Vec<&str> = rel.split('/').collect();
    assert_eq!(parts[..2], ["acme", "office"], "{rel}");
    assert_eq!(parts[2].len(), 4, "{rel}");
    let id = earshot_contracts::layout::RecordingId::parse_path(
        rel.trim_start_matches("acme/office/")
            .trim_end_matches(".mp3"),
    )
    .unwrap_or_else(|| panic!("{rel} is the layout"));
    assert_eq!(id.call_hash(), side["call"].as_str().unwrap(), "{rel}");

    let (left, right) = decode_mp3(mp3);
    let file_seconds = left.len() as f64 / 8000.0;
    let call = call_seconds(side);
    assert!(
        (file_seconds - call).abs() < 0.1,
        "file {file_seconds:.3} s, answered call {call:.3} s"
    );
    // The middle of the call, away from edges: 440 Hz dominates left, 1 kHz right.
    let mid = |v: &[i16]| v[8000..v.len() - 8000].to_vec();
    let (l, r) = (mid(&left), mid(&right));
    assert!(
        tone_power(&l, 440.0) > 50.0 * tone_power(&l, 1000.0),
        "left is the caller's 440 Hz"
    );
    assert!(
        tone_power(&r, 1000.0) > 50.0 * tone_power(&r, 440.0),
        "right is the callee's 1 kHz"
    );
    assert!(rms(&l) > 1000.0 && rms(&r) > 1000.0);

    // The sidecar, field by field.
    assert_eq!(side["schemaVersion"], 1);
    assert_eq!(side["caller"]["number"], "008");
    assert_eq!(side["callee"]["number"], "500");
    assert_eq!(side["users"][0]["extension"], "008");
    assert_eq!(side["users"][0]["mode"], "Always");
    assert_eq!(side["complete"], true);
    assert_eq!(side["truncated"], serde_json::Value::Null);
    assert_eq!(
        side["audio"]["channelMap"],
        serde_json::json!({"left": "caller", "right": "callee"})
    );
    assert_eq!(side["audio"]["codec"], "PCMU");
    assert_eq!(side["audio"]["sampleRate"], 8000);
    assert_eq!(side["audio"]["bitrateKbps"], 32);
    assert_eq!(side["mp3"]["bytes"], std::fs::metadata(mp3).unwrap().len());
    assert_eq!(side["mp3"]["sha256"], sha256_hex(mp3));
    assert_eq!(
        side["mp3"]["object"].as_str().unwrap(),
        rel,
        "the sidecar names the object's full key"
    );
    for k in ["startedAt", "answeredAt", "endedAt"] {
        assert!(
            humantime::parse_rfc3339(side[k].as_str().unwrap()).is_ok(),
            "{k}"
        );
    }
    let recorded = side["recorded"].as_array().unwrap();
    assert_eq!(recorded.len(), 1);
    assert!(secs(&recorded[0]["from"]) < 0.05, "recorded from answer");
    assert!((secs(&recorded[0]["to"]) - call).abs() < 0.05, "to hang-up");
    assert!(
        side["recorder"]["instance"]
            .as_str()
            .is_some_and(|i| !i.is_empty())
    );

    assert_eq!(
        s.metric("earshot_recordings_total{result=\"completed\"}"),
        1.0
    );
    assert_eq!(s.metric("earshot_recordings_expected_total"), 1.0);
    assert_eq!(s.metric("earshot_recordings_stored_total"), 1.0);
    assert!(s.metric("earshot_recorded_seconds_total") > 3.5);
    assert!(s.metric("earshot_upload_bytes_total") > 10_000.0);
    assert_eq!(
        s.metric("earshot_spool_files"),
        0.0,
        "the spool is empty once stored"
    );
}

/// 012 (OnDemand) keys *5 at ~2 s and again at ~6 s of an 8 s call.
fn on_demand_call(pause: &str) -> (Vec<i16>, serde_json::Value) {
    let mut users = users();
    users.truncate(2);
    let s = setup(&format!("pause-{pause}"), &users);
    let config = std::fs::read_to_string(&s.recorder.config).unwrap();
    std::fs::write(
        &s.recorder.config,
        format!("{config}recording: {{ pauseBehaviour: {pause} }}\n"),
    )
    .unwrap();
    wait_for("reload", || {
        s.metric("earshot_config_reloads_total{result=\"applied\"}") >= 1.0 || pause == "Skip"
    });
    let caller = RtpStream::new(1)
        .tone(440.0, 1800)
        .key('*', 100)
        .tone(440.0, 100)
        .key('5', 100)
        .tone(440.0, 3700)
        .key('*', 100)
        .tone(440.0, 100)
        .key('5', 100)
        .tone(440.0, 1800);
    let callee = RtpStream::new(2).tone(1000.0, 7900);
    s.call("012", "500", &caller, &callee, 8000, None);
    let recs = s.recorder.wait_recordings(1, Duration::from_secs(15));
    let (mp3, side) = recs[0].clone();
    let (left, _) = decode_mp3(&mp3);
    (left, side)
}

#[test]
fn on_demand_pause_skip_keeps_only_the_recorded_interval() {
    let (left, side) = on_demand_call("Skip");
    let recorded = side["recorded"].as_array().unwrap();
    assert_eq!(recorded.len(), 1, "{side}");
    let (from, to) = (secs(&recorded[0]["from"]), secs(&recorded[0]["to"]));
    assert!((1.9..2.6).contains(&from), "on at {from}");
    assert!((5.9..6.6).contains(&to), "off at {to}");
    let file = left.len() as f64 / 8000.0;
    assert!(
        (file - (to - from)).abs() < 0.15,
        "file {file:.2} s for an interval of {:.2} s",
        to - from
    );
    assert_eq!(side["pauseBehaviour"], "Skip");
}

#[test]
fn on_demand_pause_silence_keeps_the_call_timeline() {
    // With Silence the recording still starts at the first toggle, and the
    // time after the second toggle is silence up to the end of the call.
    let (left, side) = on_demand_call("Silence");
    let recorded = side["recorded"].as_array().unwrap();
    let (from, to) = (secs(&recorded[0]["from"]), secs(&recorded[0]["to"]));
    let file = left.len() as f64 / 8000.0;
    let expected = call_seconds(&side) - from;
    assert!(
        (file - expected).abs() < 0.15,
        "file {file:.2} s, call after the first toggle {expected:.2} s"
    );
    let at = |t: f64| (t * 8000.0) as usize;
    let talking = &left[at(0.5)..at(to - from - 0.5)];
    let paused = &left[at(to - from + 0.5)..left.len() - 800];
    assert!(
        rms(talking) > 1000.0,
        "recorded part has the caller's voice"
    );
    assert!(
        rms(paused) < 50.0,
        "paused part is silence: rms {}",
        rms(paused)
    );
    assert_eq!(side["pauseBehaviour"], "Silence");
}

#[test]
fn loss_and_a_hold_keep_the_length() {
    let s = setup("loss-hold", &users());
    // 3 s talk, 10 s of hold (no RTP from the caller), 3 s talk; 5 % loss, seeded.
    let caller = RtpStream::new(1)
        .tone(440.0, 3000)
        .gap(10_000)
        .tone(440.0, 3000)
        .lose(5, 42);
    let callee = RtpStream::new(2)
        .tone(1000.0, 3000)
        .gap(10_000)
        .tone(1000.0, 3000)
        .lose(5, 7);
    s.call(
        "008",
        "500",
        &caller,
        &callee,
        3000,
        Some(hold_and_resume(10000, 3000)),
    );
    let recs = s.recorder.wait_recordings(1, Duration::from_secs(15));
    let (mp3, side) = &recs[0];
    let (left, right) = decode_mp3(mp3);
    let file = left.len() as f64 / 8000.0;
    let call = call_seconds(side);
    assert!(
        (file - call).abs() < 0.1,
        "file {file:.3} s, call {call:.3} s"
    );
    // The hold is silence where it happened: seconds 4 to 12 of the call.
    let at = |t: f64| (t * 8000.0) as usize;
    assert!(rms(&left[at(4.0)..at(12.0)]) < 50.0 && rms(&right[at(4.0)..at(12.0)]) < 50.0);
    assert!(
        rms(&left[at(0.5)..at(2.5)]) > 1000.0,
        "talk before the hold"
    );
    assert!(
        rms(&left[at(file - 2.5)..at(file - 0.5)]) > 1000.0,
        "talk after the hold, in its place"
    );
}

#[test]
fn a_recorder_killed_mid_call_uploads_the_partial_recording_after_restart() {
    let mut s = setup("kill9", &users());
    let caller = RtpStream::new(1).tone(440.0, 8000);
    let callee = RtpStream::new(2).tone(1000.0, 8000);
    let (mut uac, mut uas) = s.start_calls("008", "500", &caller, &callee, 8000, 1, 1, None);
    wait_for("call answered", || {
        !events_of(&s.recorder.events(), "call_answered").is_empty()
    });
    std::thread::sleep(Duration::from_secs(4));
    s.recorder.kill9();
    uac.stop();
    uas.stop();
    assert!(
        s.recorder.recordings().is_empty(),
        "nothing stored before the restart"
    );
    s.recorder.restart(std::path::Path::new(BINARY));
    let recs = s.recorder.wait_recordings(1, Duration::from_secs(15));
    let (mp3, side) = &recs[0];
    assert_eq!(side["complete"], false);
    assert!(
        side["truncated"]
            .as_str()
            .unwrap()
            .contains("stopped during the call")
    );
    assert_eq!(
        side["caller"]["number"], "008",
        "the report fields survive the crash"
    );
    assert_eq!(side["mp3"]["sha256"], sha256_hex(mp3));
    let (left, _) = decode_mp3(mp3);
    let file = left.len() as f64 / 8000.0;
    // About 4 s were recorded; at most the last second or two (LAME's buffer and the reorder window) is lost.
    assert!(
        (2.0..4.6).contains(&file),
        "partial recording of {file:.2} s plays"
    );
    assert!(rms(&left[..left.len() / 2]) > 1000.0);
    assert_eq!(
        s.metric("earshot_recordings_total{result=\"truncated\"}"),
        1.0
    );
    assert_eq!(s.metric("earshot_spool_files"), 0.0);
}

#[test]
fn fifty_concurrent_recorded_calls_each_stored_once() {
    let s = setup("fifty", &users());
    let caller = RtpStream::new(1).tone(440.0, 3000);
    let callee = RtpStream::new(2).tone(1000.0, 3000);
    let (mut uac, mut uas) = s.start_calls("008", "500", &caller, &callee, 3000, 50, 50, None);
    uac.wait_success(Duration::from_secs(60));
    uas.wait_success(Duration::from_secs(20));
    let recs = s.recorder.wait_recordings(50, Duration::from_secs(30));
    assert_eq!(recs.len(), 50, "every MP3 present");
    let mut calls: Vec<&str> = recs
        .iter()
        .map(|(_, v)| v["call"].as_str().unwrap())
        .collect();
    calls.sort();
    calls.dedup();
    assert_eq!(calls.len(), 50, "none twice");
    for (mp3, side) in &recs {
        let size = std::fs::metadata(mp3).unwrap().len();
        assert!(size > 5_000, "{} is {size} bytes", mp3.display());
        assert_eq!(side["mp3"]["bytes"], size);
        assert_eq!(side["complete"], true);
    }
    assert_eq!(s.metric("earshot_recordings_stored_total"), 50.0);
    assert_eq!(s.metric("earshot_encoder_overruns_total"), 0.0);
}

#[test]
fn a_full_spool_refuses_new_recordings_loudly_and_deletes_nothing() {
    let s = setup("spool-full", &users());
    // 64 KiB of something else in the spool, and a limit of 1 KiB.
    std::fs::write(s.recorder.spool.join("ballast.bin"), vec![0u8; 65536]).unwrap();
    let config = std::fs::read_to_string(&s.recorder.config).unwrap();
    let limited = config.replace("spool: { dir:", "spool: { maxBytes: 1024, dir:");
    assert_ne!(config, limited);
    std::fs::write(&s.recorder.config, limited).unwrap();
    // The spool limit is read at start: restart on the new config.
    let mut s = s;
    s.recorder.kill9();
    s.recorder.restart(std::path::Path::new(BINARY));

    let caller = RtpStream::new(1).tone(440.0, 1500);
    let callee = RtpStream::new(2).tone(1000.0, 1500);
    s.call("008", "500", &caller, &callee, 1500, None);
    wait_for("refusal counted", || {
        s.metric("earshot_recordings_total{result=\"failed\"}") == 1.0
    });
    assert_eq!(
        s.metric("earshot_recordings_expected_total"),
        1.0,
        "the policy wanted it: it shows as missing"
    );
    assert_eq!(s.metric("earshot_recordings_stored_total"), 0.0);
    assert!(
        s.recorder
            .log_text()
            .contains("spool is full: recording refused")
    );
    assert!(
        s.recorder.spool.join("ballast.bin").exists(),
        "nothing in the spool is deleted to make room"
    );
    assert!(s.recorder.recordings().is_empty());
    s.assert_no_rtp_loss(caller.len(), callee.len(), 1);
}

#[test]
fn with_filesystem_storage_the_recorder_expires_old_recordings_at_start() {
    let dir = earshot_tests::TempDir::new("expire");
    let store = dir.path().join("own-store");
    let day = store.join("acme/office/2026/09/01");
    std::fs::create_dir_all(&day).unwrap();
    let now = std::time::SystemTime::now();
    let old = now - Duration::from_secs(40 * 86_400);
    for (name, t) in [
        ("20260901T100000Z_aaaa.mp3", old),
        ("20260901T100000Z_aaaa.json", old),
        ("20261120T100000Z_bbbb.mp3", now),
    ] {
        std::fs::File::create(day.join(name))
            .unwrap()
            .set_modified(t)
            .unwrap();
    }
    let storage = format!(
        "{{ filesystem: {{ path: \"{}\", retentionDays: 30 }}, prefix: \"acme/office/\" }}",
        store.display()
    );
    let s = setup_with("expire-rec", &users(), Some(&storage), &[]);
    wait_for("old recording expired", || {
        !day.join("20260901T100000Z_aaaa.mp3").exists()
    });
    assert!(!day.join("20260901T100000Z_aaaa.json").exists());
    assert!(
        day.join("20261120T100000Z_bbbb.mp3").exists(),
        "recordings within retention stay"
    );
    assert!(s.recorder.log_text().contains("expired old recordings"));
}

/// The bytes of the files in a directory as `du` counts them: `du -sb` of
/// the directory less the directory's own entry.
fn du_files(dir: &std::path::Path) -> f64 {
    let out = std::process::Command::new("du")
        .arg("-sb")
        .arg(dir)
        .output()
        .expect("du");
    let total: u64 = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .expect("du prints a size");
    (total - std::fs::metadata(dir).unwrap().len()) as f64
}

#[test]
fn one_recorder_records_call_after_call_and_its_spool_gauge_is_what_du_sees() {
    // One process through calls in a row: the bug this guards against
    // recorded the first call and refused every later one as "spool full".
    let s = setup("in-a-row", &users());
    let caller = RtpStream::new(1).tone(440.0, 1200);
    let callee = RtpStream::new(2).tone(1000.0, 1200);
    for n in 1..=4 {
        s.call("008", "500", &caller, &callee, 1200, None);
        s.recorder.wait_recordings(n, Duration::from_secs(15));
        assert_eq!(s.metric("earshot_spool_bytes"), du_files(&s.recorder.spool));
    }
    // The store becomes unusable (its directory is now a file): the next
    // recordings wait in the spool, and the gauge still equals the disk.
    std::fs::remove_dir_all(&s.recorder.store).unwrap();
    std::fs::write(&s.recorder.store, b"not a directory").unwrap();
    for _ in 0..3 {
        s.call("008", "500", &caller, &callee, 1200, None);
    }
    wait_for("three recordings waiting in the spool", || {
        s.metric("earshot_spool_files") == 3.0
            && s.metric("earshot_encoder_queue_depth") == 0.0
            && s.recorder.spool.read_dir().unwrap().count() == 6
    });
    let waiting = s.metric("earshot_spool_bytes");
    assert!(waiting > 3.0 * 4000.0, "three MP3s and sidecars: {waiting}");
    assert_eq!(waiting, du_files(&s.recorder.spool));
    assert!(s.metric("earshot_upload_failures_total{reason=\"unavailable\"}") >= 1.0);
    // A call now is still recorded: nothing is refused as "spool full".
    s.call("008", "500", &caller, &callee, 1200, None);
    std::fs::remove_file(&s.recorder.store).unwrap();
    std::fs::create_dir_all(&s.recorder.store).unwrap();
    let recs = s.recorder.wait_recordings(4, Duration::from_secs(40));
    assert_eq!(recs.len(), 4, "the four waiting recordings arrive");
    wait_for("spool empty", || s.metric("earshot_spool_files") == 0.0);
    assert_eq!(s.metric("earshot_spool_bytes"), 0.0);
    assert_eq!(du_files(&s.recorder.spool), 0.0);
    assert_eq!(s.metric("earshot_recordings_expected_total"), 8.0);
    assert_eq!(s.metric("earshot_recordings_stored_total"), 8.0);
    assert_eq!(s.metric("earshot_recordings_total{result=\"failed\"}"), 0.0);
    assert!(!s.recorder.log_text().contains("spool is full"));
}
