//! `make demo`: a recorder on loopback with a sample policy, three real SIP
//! calls through it from SIPp — an `Always` user, an `OnDemand` user who keys
//! `*5` twice, a `Never` user — and the report the hosted-PBX manual shows
//! (caller, callee, duration, start, answer, end) with what was recorded.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use earshot_tests::pcap::RtpStream;
use earshot_tests::{RecorderProcess, Sipp, TestUser, events_of, free_ports, recorded_intervals};

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
    println!("Starting earshot-recorder with a policy: 008 Always, 012 OnDemand (*5), 003 Never");
    let recorder = RecorderProcess::start(
        &recorder_bin,
        &dir,
        SocketAddr::from(([127, 0, 0, 1], ports)),
        &users,
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
        ("008", "501", &plain, "always"),
        ("012", "502", &keyed, "ondemand"),
        ("003", "503", &plain, "never"),
    ];
    println!("Placing 3 calls of 5 s through it with SIPp (RTP and RFC 4733 DTMF from pcap) ...");
    let mut callers: Vec<_> = calls
        .iter()
        .enumerate()
        .map(|(i, (from, to, pcap, name))| {
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

    let events = recorder.events();
    let intervals = recorded_intervals(&events);
    let time = |v: &serde_json::Value| {
        humantime::parse_rfc3339(v["time"].as_str().unwrap_or_default()).ok()
    };
    let clock = |t: Option<SystemTime>| {
        t.map(|t| humantime::format_rfc3339_seconds(t).to_string()[11..19].to_owned())
            .unwrap_or_else(|| "-".into())
    };
    println!();
    println!(
        "{:<8} {:<8} {:>8}  {:<8} {:<8} {:<8}  Recorded",
        "Caller", "Callee", "Duration", "Start", "Answer", "End"
    );
    for started in events_of(&events, "call_started") {
        let call = started["call"].as_str().unwrap_or_default();
        let of = |kind| {
            events
                .iter()
                .find(|e| e["event"] == kind && e["call"] == call)
        };
        let (start, answer, end) = (
            time(started),
            of("call_answered").and_then(time),
            of("call_ended").and_then(time),
        );
        let duration = match (answer, end) {
            (Some(a), Some(e)) => e
                .duration_since(a)
                .map(|d| format!("{:.1} s", d.as_secs_f64()))
                .unwrap_or_default(),
            _ => "-".into(),
        };
        let recorded = match intervals.get(call) {
            Some(spans) => spans
                .iter()
                .map(|(on, off)| {
                    let from = answer
                        .and_then(|a| on.duration_since(a).ok())
                        .map_or(0.0, |d| d.as_secs_f64());
                    let len = off.duration_since(*on).map_or(0.0, |d| d.as_secs_f64());
                    format!("{len:.1} s from {from:.1} s")
                })
                .collect::<Vec<_>>()
                .join(", "),
            None => "not recorded".into(),
        };
        let why = started["users"]
            .as_array()
            .and_then(|u| u.first())
            .map(|u| {
                format!(
                    " ({} {})",
                    u["extension"].as_str().unwrap_or(""),
                    u["mode"].as_str().unwrap_or("")
                )
            })
            .unwrap_or_default();
        println!(
            "{:<8} {:<8} {:>8}  {:<8} {:<8} {:<8}  {recorded}{why}",
            started["caller"].as_str().unwrap_or("-"),
            started["callee"].as_str().unwrap_or("-"),
            duration,
            clock(start),
            clock(answer),
            clock(end)
        );
    }
    let rtp = recorder.metric("earshot_rtp_packets_total{direction=\"caller_to_callee\"}")
        + recorder.metric("earshot_rtp_packets_total{direction=\"callee_to_caller\"}");
    println!();
    println!(
        "RTP packets relayed: {rtp}; DTMF digits seen: {}",
        events_of(&events, "dtmf").len()
    );
    println!("Call events (JSON lines): {}", recorder.events.display());
    println!(
        "Times are UTC. Encoding the recorded intervals to MP3 in object storage is the next milestone (see README)."
    );
}
