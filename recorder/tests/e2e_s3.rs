//! Recordings into a real S3 server (Garage on loopback): the same call as the
//! filesystem suite, read back through the S3 API; and the store going away
//! mid-call and coming back — the recording arrives once, intact.

mod common;

use std::time::Duration;

use common::*;
use earshot_tests::garage::Garage;
use earshot_tests::pcap::RtpStream;
use earshot_tests::{decode_mp3, rms, tone_power};

fn wait_objects(g: &Garage, n: usize, timeout: Duration) -> Vec<String> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let keys = g.list("tenant-a/").unwrap_or_default();
        if keys.len() >= n {
            return keys;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} of {n} objects in the bucket after {timeout:?}",
            keys.len()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn setup_s3(name: &str, g: &Garage) -> Setup {
    let storage = g.storage_yaml("tenant-a/office/");
    let env = g.env();
    setup_with(name, &users(), Some(&storage), &env)
}

#[test]
fn a_recorded_call_lands_in_the_bucket_as_mp3_and_sidecar() {
    let dir = earshot_tests::TempDir::new("garage-call");
    let g = Garage::start(&dir.path().join("garage"), "recordings");
    let s = setup_s3("s3-call", &g);
    let caller = RtpStream::new(1).tone(440.0, 3000);
    let callee = RtpStream::new(2).tone(1000.0, 3000);
    s.call("008", "500", &caller, &callee, 3000, None);

    let keys = wait_objects(&g, 2, Duration::from_secs(20));
    let (_, left, right) = stored_recording(&g, &keys, "tenant-a/office/20", s.dir.path());
    let (l, r) = (
        &left[4000..left.len() - 4000],
        &right[4000..right.len() - 4000],
    );
    assert!(tone_power(l, 440.0) > 50.0 * tone_power(l, 1000.0));
    assert!(tone_power(r, 1000.0) > 50.0 * tone_power(r, 440.0));
    assert_eq!(s.metric("earshot_recordings_stored_total"), 1.0);
    assert_eq!(s.metric("earshot_spool_files"), 0.0);
}

#[test]
fn the_store_down_during_a_call_gets_the_recording_once_when_it_is_back() {
    let dir = earshot_tests::TempDir::new("garage-down");
    let mut g = Garage::start(&dir.path().join("garage"), "recordings");
    let s = setup_s3("s3-down", &g);
    let caller = RtpStream::new(1).tone(440.0, 3000);
    let callee = RtpStream::new(2).tone(1000.0, 3000);
    let (mut uac, mut uas) = s.start_calls("008", "500", &caller, &callee, 3000, 1, 1, None);
    std::thread::sleep(Duration::from_millis(1000));
    g.stop();
    uac.wait_success(Duration::from_secs(30));
    uas.wait_success(Duration::from_secs(10));
    // The upload fails and is retried; the recording waits in the spool.
    wait_for("upload failure counted", || {
        s.metric("earshot_upload_failures_total{reason=\"unavailable\"}") >= 1.0
    });
    assert_eq!(
        s.metric("earshot_spool_files"),
        1.0,
        "kept in the spool while the store is away"
    );
    assert_eq!(s.metric("earshot_recordings_stored_total"), 0.0);
    std::thread::sleep(Duration::from_secs(2));
    g.restart();
    let keys = wait_objects(&g, 2, Duration::from_secs(90));
    assert_eq!(keys.len(), 2, "one MP3 and one sidecar: {keys:?}");
    wait_for("spool emptied", || s.metric("earshot_spool_files") == 0.0);
    let json_key = keys.iter().find(|k| k.ends_with(".json")).unwrap();
    let sidecar: serde_json::Value = serde_json::from_slice(&g.get(json_key)).unwrap();
    let mp3 = g.get(sidecar["mp3"]["object"].as_str().unwrap());
    assert_eq!(sidecar["mp3"]["bytes"], mp3.len(), "intact");
    assert_eq!(sidecar["complete"], true);
    let local = s.dir.path().join("downloaded.mp3");
    std::fs::write(&local, &mp3).unwrap();
    let (left, _) = decode_mp3(&local);
    assert!(rms(&left[4000..left.len() - 4000]) > 1000.0);
    assert_eq!(s.metric("earshot_recordings_stored_total"), 1.0);
}
