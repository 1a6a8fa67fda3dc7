//! `make demo`: a recorder on loopback with a sample policy, three real SIP
//! calls through it from SIPp — an `Always` user, an `OnDemand` user who keys
//! `*5` twice, a `Never` user — and the report the hosted-PBX manual shows
//! (caller, callee, duration, start, answer, end) with what was recorded.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use earshot_tests::pcap::RtpStream;
use earshot_tests::{RecorderProcess, Sipp, TestUser, events_of, free_ports};

fn main() {
    let recorder_bin = std::env::var_os("EARSHOT_RECORDER")
        .map(PathBuf::from)
        .unwrap_or_else(|| earshot_tests::repo().join("target/release/earshot-recorder"));
    assert!(
        recorder_bin.exists(),
        "{} not built: run `make demo`",
        recorder_bin.display()
    );
    earshot_tests::require("sipp");

    let dir = earshot_tests::repo().join(".demo");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let ports = free_ports(64);
    let users = [
        TestUser {
            extension: "008",
            mode: "Always",
            shortcode: None,
        },
        TestUser {
            extension: "012",
            mode: "OnDemand",
            shortcode: Some("*5"),
        },
        TestUser {
            extension: "003",
            mode: "Never",
            shortcode: None,
        },
    ];
    println!(
        "Starting earshot-recorder with a policy: 008 Always, 012 OnDemand (*5), 003 Never; a beep tells both parties when recording starts"
    );
    let recorder = RecorderProcess::start_configured(
        &recorder_bin,
        &dir,
        SocketAddr::from(([127, 0, 0, 1], ports)),
        &users,
        None,
        &[],
        510,
        "announcement: { mode: Beep, to: Both }\n",
    );
    println!(
        "  SIP {}   metrics http://{}/metrics   events {}",
        recorder.sip,
        recorder.http,
        recorder.events.display()
    );

    let write = |name: &str, s: &RtpStream| {
        let p = dir.join(name);
        s.write(&p).unwrap();
        p.display().to_string()
    };
    let callee_pcap = write("callee.pcap", &RtpStream::new(2).tone(1000.0, 5000));
    let plain = write("caller.pcap", &RtpStream::new(1).tone(440.0, 5000));
    let keyed = write(
        "caller-keys.pcap",
        &RtpStream::new(3)
            .tone(440.0, 1000)
            .key('*', 100)
            .tone(0.0, 100)
            .key('5', 100)
            .tone(440.0, 2000)
            .key('*', 100)
            .tone(0.0, 100)
            .key('5', 100)
            .tone(440.0, 1400),
    );

    let mut callee = Sipp {
        scenario: "uas.xml",
        vars: vec![("PCAP", callee_pcap)],
        args: vec!["-m".into(), "3".into()],
        port: ports,
        media_port: ports + 2,
        control_port: ports + 6,
    }
    .spawn(&dir, "callee");
    std::thread::sleep(Duration::from_millis(300));
    let calls = [
        ("008", "Ralf Gerrits", "501", &plain, "always"),
        ("012", "Remi Harrevelt", "502", &keyed, "ondemand"),
        ("003", "Bauke van den Akker", "503", &plain, "never"),
    ];
    println!("Placing 3 calls of 5 s through it with SIPp (RTP and RFC 4733 DTMF from pcap) ...");
    let mut callers: Vec<_> = calls
        .iter()
        .enumerate()
        .map(|(i, (from, display, to, pcap, name))| {
            let off = 8 + 8 * i as u16;
            let mut args: Vec<String> = vec![
                "-rsa".into(),
                recorder.sip.to_string(),
                "-s".into(),
                (*to).into(),
                "-m".into(),
                "1".into(),
            ];
            args.push(format!("127.0.0.1:{ports}"));
            Sipp {
                scenario: "uac.xml",
                vars: vec![
                    ("FROM", (*from).to_owned()),
                    ("NAME", (*display).to_owned()),
                    ("PCAP", (*pcap).clone()),
                    ("TALK_MS", "5000".into()),
                ],
                args,
                port: ports + off,
                media_port: ports + off + 2,
                control_port: ports + off + 6,
            }
            .spawn(&dir, &format!("caller-{name}"))
        })
        .collect();
    for c in &mut callers {
        c.wait_success(Duration::from_secs(60));
    }
    callee.wait_success(Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(300));

    let recordings = recorder.wait_recordings(2, Duration::from_secs(20));
    let events = recorder.events();
    let clock = |v: &serde_json::Value| {
        v.as_str()
            .and_then(|t| humantime::parse_rfc3339(t).ok())
            .map(|t| humantime::format_rfc3339_seconds(t).to_string()[11..19].to_owned())
            .unwrap_or_else(|| "-".into())
    };
    let number = |p: &serde_json::Value| {
        let n = p["number"].as_str().unwrap_or("-");
        match p["displayName"].as_str() {
            Some(d) if d != n => format!("{d} {n}"),
            _ => n.to_owned(),
        }
    };
    let hms = |s: f64| {
        let s = s.round() as u64;
        format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    };
    println!();
    println!("Recordings (the manual's report; times UTC):");
    println!(
        "{:<24} {:<6} {:>8}  {:<8} {:<8} {:<8}  {:<10} File",
        "Caller", "Callee", "Duration", "Start", "Answer", "End", "Recorded"
    );
    for (mp3, side) in &recordings {
        let recorded: Vec<String> = side["recorded"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                format!(
                    "{:.1}-{:.1} s",
                    r["from"].as_f64().unwrap_or(0.0),
                    r["to"].as_f64().unwrap_or(0.0)
                )
            })
            .collect();
        println!(
            "{:<24} {:<6} {:>8}  {:<8} {:<8} {:<8}  {:<10} {}",
            number(&side["caller"]),
            number(&side["callee"]),
            hms(side["durationSeconds"].as_f64().unwrap_or(0.0)),
            clock(&side["startedAt"]),
            clock(&side["answeredAt"]),
            clock(&side["endedAt"]),
            recorded.join(", "),
            mp3.strip_prefix(earshot_tests::repo())
                .unwrap_or(mp3)
                .display()
        );
    }
    let calls = events_of(&events, "call_started").len();
    let beeps = events_of(&events, "announcement")
        .iter()
        .filter(|e| e["result"] == "played")
        .count();
    println!();
    println!(
        "{calls} calls, {} recorded: 008 (Always) from answer to hang-up, 012 (On demand) between its two *5 presses; 003 (Never) not at all.",
        recordings.len()
    );
    println!(
        "{beeps} beeps played inside the calls' audio when recording started (0.5 s, 1400 Hz, both parties); each recording starts with it."
    );
    println!("Each MP3 has a .json sidecar beside it (docs/recordings.md). Play one with:");
    if let Some((mp3, _)) = recordings.first() {
        let rel = mp3.strip_prefix(earshot_tests::repo()).unwrap_or(mp3);
        println!(
            "  ffplay -nodisp -autoexit {}     (or open it in any audio player)",
            rel.display()
        );
    }
    println!(
        "Call events: .demo/events.jsonl   Metrics: http://{}/metrics (while the demo runs)",
        recorder.http
    );
    println!();
    println!("Open the recordings console on them (list, filter, play, download one or a ZIP):");
    println!(
        "  target/release/earshot-console --dir .demo/store --prefix acme/office serve --listen 127.0.0.1:8080"
    );
    println!(
        "  then browse http://127.0.0.1:8080   (or script it: target/release/earshot-console --dir .demo/store --prefix acme/office list)"
    );
}
