//! A restart on a bad spool, as a pod meets it: the spool volume full (a
//! 1 MiB tmpfs), holding a recording a crash cut short and a recording the
//! recorder may not read (another user's files, mode 0600), the recorder
//! running as the chart's user (65532). It must start and relay, upload
//! the crashed recording (its sidecar from memory: the disk cannot take
//! it), set the unreadable one aside, refuse new recordings only while the
//! spool cannot take them, and say so.
//!
//! Needs root (to mount the tmpfs and switch users); CI runs as root.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::os::unix::fs::{MetadataExt, PermissionsExt, chown};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use earshot_tests::pcap::RtpStream;
use earshot_tests::{RecorderProcess, TempDir, free_ports, http_get};

/// The chart's recorder user.
const USER: u32 = 65532;

/// The tmpfs on the spool, unmounted at drop (after the recorder is
/// gone), then the test's directory removed.
struct Mounted {
    at: PathBuf,
    dir: PathBuf,
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.at).status();
        if std::env::var_os("EARSHOT_KEEP_TEST_FILES").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn write_as(path: &Path, bytes: &[u8], uid: u32, mode: u32) {
    std::fs::write(path, bytes).unwrap();
    chown(path, Some(uid), Some(uid)).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A recording's stem; its call hash is `000000005eed000<nonce>`.
fn stem(nonce: u32) -> String {
    let t = humantime::parse_rfc3339("2026-11-28T11:28:34Z").unwrap();
    let hash = format!("{:016x}", 0x5eed_0000_u64 + u64::from(nonce));
    earshot_contracts::layout::RecordingId::new(t, &hash, nonce).stem()
}

fn options(recorder: SocketAddr, n: usize) -> Option<String> {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let local = sock.local_addr().unwrap();
    let req = format!(
        "OPTIONS sip:{recorder} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-spool-{n}\r\nMax-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag=p{n}\r\nTo: <sip:{recorder}>\r\nCall-ID: spool-probe-{n}@127.0.0.1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    );
    sock.send_to(req.as_bytes(), recorder).unwrap();
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "{what} within {timeout:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_restart_on_a_full_spool_with_an_unreadable_recording_relays_uploads_and_sets_it_aside() {
    let uid = std::fs::metadata("/proc/self").map_or(u32::MAX, |m| m.uid());
    if uid != 0 {
        eprintln!(
            "SKIPPED a_restart_on_a_full_spool_...: needs root to mount a tmpfs and run the recorder as user {USER} (CI runs as root)"
        );
        return;
    }
    earshot_tests::require("sipp");
    earshot_tests::require("setpriv");
    let dir = TempDir::new("e2e-spool");
    chown(dir.path(), Some(USER), Some(USER)).unwrap();
    let spool = dir.path().join("spool");
    std::fs::create_dir(&spool).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o"])
        .arg(format!("size=1m,uid={USER},gid={USER},mode=0700"))
        .arg("tmpfs")
        .arg(&spool)
        .status()
        .unwrap();
    assert!(mounted.success(), "mount a tmpfs on {}", spool.display());
    let _mount = Mounted {
        at: spool.clone(),
        dir: dir.path().to_owned(),
    };

    // A recording a crash cut short (the recorder's own files).
    let cut = stem(1);
    write_as(
        &spool.join(format!("{cut}.mp3")),
        &[0x55; 100 * 1024],
        USER,
        0o600,
    );
    let start = r#"{"call":"000000005eed0001","caller":{"number":"008","displayName":null},"callee":{"number":"500","displayName":null},"users":[],"startedAt":"2026-11-28T11:28:34.000Z","recordingStartedAt":"2026-11-28T11:28:34.000Z"}"#;
    write_as(
        &spool.join(format!("{cut}.start.json")),
        start.as_bytes(),
        USER,
        0o600,
    );
    // A finished recording the recorder may not read: root's, mode 0600.
    let foreign = stem(2);
    write_as(
        &spool.join(format!("{foreign}.mp3")),
        &[0x66; 8 * 1024],
        0,
        0o600,
    );
    write_as(&spool.join(format!("{foreign}.json")), b"{}", 0, 0o600);
    // And the rest of the volume full.
    let ballast = spool.join("ballast.bin");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&ballast).unwrap();
        while f.write_all(&[0u8; 4096]).is_ok() {}
    }
    chown(&ballast, Some(USER), Some(USER)).unwrap();

    // The recorder, as the chart runs it: not root.
    let wrapper = dir.path().join("earshot-recorder-as-user.sh");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec setpriv --reuid={USER} --regid={USER} --clear-groups '{BINARY}' \"$@\"\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let ports = free_ports(32);
    let uas = SocketAddr::from(([127, 0, 0, 1], ports));
    let recorder =
        RecorderProcess::start_configured(&wrapper, dir.path(), uas, &users(), None, &[], 510, "");
    let mut s = Setup {
        dir,
        recorder,
        ports,
    };

    // Up, alive and relaying.
    assert!(s.recorder.running(), "{}", s.recorder.log_text());
    assert_eq!(http_get(s.recorder.http, "/healthz").unwrap().0, 200);
    let answer = options(s.recorder.sip, 1).expect("OPTIONS over UDP answered");
    assert!(answer.starts_with("SIP/2.0 200"), "{answer}");
    // Saying that new recordings are refused, and why.
    let (code, body) = http_get(s.recorder.http, "/readyz").unwrap();
    assert_eq!(code, 200, "calls are still relayed: ready");
    assert!(
        body.starts_with("ready; new recordings are refused: ")
            && body.contains("No space left on device"),
        "{body}"
    );

    // The crashed recording is stored, its sidecar from memory.
    let recs = s.recorder.wait_recordings(1, Duration::from_secs(20));
    assert_eq!(recs[0].1["complete"], false);
    assert_eq!(recs[0].1["caller"]["number"], "008");
    assert_eq!(recs[0].1["mp3"]["bytes"], 100 * 1024);
    wait_until(
        "the crashed recording leaves the spool",
        Duration::from_secs(10),
        || !spool.join(format!("{cut}.mp3")).exists(),
    );
    // The unreadable one is set aside, counted, and kept.
    assert_eq!(s.metric("earshot_spool_quarantined_total"), 1.0);
    assert_eq!(s.metric("earshot_spool_quarantined_files"), 2.0);
    for name in [format!("{foreign}.mp3"), format!("{foreign}.json")] {
        assert!(
            spool.join(format!("{name}.quarantined")).exists(),
            "{name} set aside"
        );
        assert!(!spool.join(&name).exists());
    }
    // The crash's 100 KiB went up; the spool still cannot take a recording.
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(s.metric("earshot_spool_accepting_recordings"), 0.0);

    // A recorded user's call meanwhile: relayed, its recording refused.
    let caller = RtpStream::new(1).tone(440.0, 2000);
    let callee = RtpStream::new(2).tone(1000.0, 2000);
    s.call("008", "500", &caller, &callee, 2000, None);
    wait_until("the refusal counted", Duration::from_secs(10), || {
        s.metric("earshot_recordings_total{result=\"failed\"}") == 1.0
    });
    assert_eq!(s.recorder.recordings().len(), 1);

    // Room again: within a check, new recordings are taken.
    std::fs::remove_file(&ballast).unwrap();
    wait_until(
        "the spool takes recordings again",
        Duration::from_secs(15),
        || s.metric("earshot_spool_accepting_recordings") == 1.0,
    );
    assert_eq!(
        http_get(s.recorder.http, "/readyz").unwrap(),
        (200, "ready\n".to_owned())
    );
    s.call("008", "500", &caller, &callee, 2000, None);
    let recs = s.recorder.wait_recordings(2, Duration::from_secs(20));
    assert!(
        recs.iter().any(|(_, r)| r["complete"] == true),
        "the new call recorded whole"
    );
    assert_eq!(s.metric("earshot_recordings_total{result=\"failed\"}"), 1.0);
    assert!(s.recorder.running(), "still running");
    let log = s.recorder.log_text();
    assert!(!log.contains("panicked"), "{log}");
}
