//! `make bench`: SIPp load through a real `earshot-recorder` on loopback,
//! ramping the number of concurrent recorded calls (every call `Always`,
//! G.711 both ways, filesystem storage) until RTP is lost. For each step it
//! reports the recorder's CPU per recorded call-minute (from /proc), the
//! calls one core sustains at that cost, packets relayed and dropped (the
//! recorder's counters against what SIPp's pcaps send), resident memory per
//! call, and whether every call produced one complete MP3 of the right
//! length — a step whose output is wrong does not count.
//!
//! `EARSHOT_BENCH_STEPS=50,100,200` and `EARSHOT_BENCH_CALL_SECONDS=30` tune it;
//! results go to stdout and `target/bench/earshot.json`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use earshot_tests::pcap::RtpStream;
use earshot_tests::{RecorderProcess, Sipp, TestUser, free_ports, repo};
use serde_json::json;

fn proc_field(pid: u32, file: &str, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).ok()?;
    text.lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may contain spaces) start after ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    ticks as f64 / 100.0
}

fn main() {
    earshot_tests::require("sipp");
    let steps: Vec<usize> = std::env::var("EARSHOT_BENCH_STEPS")
        .unwrap_or_else(|_| "50,100,200".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let call_s: u64 = std::env::var("EARSHOT_BENCH_CALL_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let binary = std::env::var_os("EARSHOT_RECORDER")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/release/earshot-recorder"));
    let out_dir = repo().join("target/bench");
    let _ = std::fs::remove_dir_all(&out_dir);
    std::fs::create_dir_all(&out_dir).unwrap();

    let caller = RtpStream::new(1).tone(440.0, call_s * 1000 - 500);
    let callee = RtpStream::new(2).tone(1000.0, call_s * 1000 - 500);
    let (caller_pcap, callee_pcap) = (out_dir.join("caller.pcap"), out_dir.join("callee.pcap"));
    caller.write(&caller_pcap).unwrap();
    callee.write(&callee_pcap).unwrap();
    // One probe call per step with an SSRC of its own: its packets are
    // matched on both sides of the relay to measure the delay the relay adds.
    const PROBE_SSRC: u32 = 0x7e57;
    // As long as the load's calls, so the callee's answer to it is complete
    // too and every packet can be accounted for.
    let probe_s = call_s;
    let probe = RtpStream::new(PROBE_SSRC).tone(440.0, probe_s * 1000 - 500);
    let probe_pcap = out_dir.join("probe.pcap");
    probe.write(&probe_pcap).unwrap();
    let capture = std::process::Command::new("sh")
        .arg("-c")
        .arg("command -v tcpdump")
        .output()
        .is_ok_and(|o| o.status.success());
    if !capture {
        println!("tcpdump not installed: relay latency not measured (make bench installs it)");
    }
    println!(
        "earshot bench: {call_s} s calls, G.711 both ways, every call recorded; steps {steps:?}"
    );
    println!(
        "machine: {} CPUs, {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(
                |c| c.lines().find(|l| l.starts_with("model name")).map(|l| l
                    .split(':')
                    .nth(1)
                    .unwrap_or("")
                    .trim()
                    .to_owned())
            )
            .unwrap_or_default()
    );
    println!();
    println!(
        "{:>6} {:>12} {:>12} {:>10} {:>10} {:>8} {:>12} {:>9} {:>22}",
        "calls",
        "CPU s/callmin",
        "calls/core",
        "relayed",
        "expected",
        "dropped",
        "RSS/call KiB",
        "MP3s ok",
        "latency p50/p99/max µs"
    );

    let mut results = Vec::new();
    for &n in &steps {
        let dir = out_dir.join(format!("step-{n}"));
        std::fs::create_dir_all(&dir).unwrap();
        let ports = free_ports(32);
        let users = [TestUser {
            extension: "008",
            mode: "Always",
            shortcode: None,
        }];
        let rtp_ports = (n as u16) * 4 + 64;
        let rec = RecorderProcess::start_sized(
            &binary,
            &dir,
            SocketAddr::from(([127, 0, 0, 1], ports)),
            &users,
            None,
            &[],
            rtp_ports,
        );
        let pid = rec.pid().expect("the recorder is running");
        let rss0 = proc_field(pid, "status", "VmRSS:").unwrap_or(0);
        let mut uas = Sipp {
            scenario: "uas.xml",
            vars: vec![("PCAP", callee_pcap.display().to_string())],
            args: vec!["-m".into(), (n + 1).to_string()],
            port: ports,
            media_port: ports + 2,
            control_port: ports + 6,
        }
        .spawn(&dir, "uas");
        std::thread::sleep(Duration::from_millis(300));
        let cpu0 = cpu_seconds(pid);
        let rate = (n / 5).max(10);
        let mut uac = Sipp {
            scenario: "uac.xml",
            vars: vec![
                ("FROM", "008".into()),
                ("PCAP", caller_pcap.display().to_string()),
                ("TALK_MS", (call_s * 1000).to_string()),
            ],
            args: vec![
                "-rsa".into(),
                rec.sip.to_string(),
                "-s".into(),
                "500".into(),
                "-m".into(),
                n.to_string(),
                "-l".into(),
                n.to_string(),
                "-r".into(),
                rate.to_string(),
                format!("127.0.0.1:{ports}"),
            ],
            port: ports + 8,
            media_port: ports + 10,
            control_port: ports + 14,
        }
        .spawn(&dir, "uac");
        // Peak memory while the calls run; the probe call once all are up.
        let started = Instant::now();
        let ramp = Duration::from_secs((n / rate) as u64 + 2);
        let mut peak = rss0;
        let mut probe_run: Option<(std::process::Child, earshot_tests::SippProcess, PathBuf)> =
            None;
        while started.elapsed() < ramp + Duration::from_secs(call_s + 2) {
            peak = peak.max(proc_field(pid, "status", "VmRSS:").unwrap_or(0));
            if probe_run.is_none() && started.elapsed() >= ramp {
                let cap = dir.join("probe-capture.pcap");
                let tcpdump = std::process::Command::new(if capture { "tcpdump" } else { "true" })
                    .args([
                        "-i",
                        "lo",
                        "-n",
                        "-U",
                        "-B",
                        "16384",
                        "--time-stamp-precision=nano",
                        "-w",
                    ])
                    .arg(&cap)
                    .arg(format!(
                        "udp and (port {} or port {})",
                        ports + 18,
                        ports + 2
                    ))
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .expect("start tcpdump");
                std::thread::sleep(Duration::from_millis(500));
                let sipp = Sipp {
                    scenario: "uac.xml",
                    vars: vec![
                        ("FROM", "008".into()),
                        ("PCAP", probe_pcap.display().to_string()),
                        ("TALK_MS", (probe_s * 1000).to_string()),
                    ],
                    args: vec![
                        "-rsa".into(),
                        rec.sip.to_string(),
                        "-s".into(),
                        "500".into(),
                        "-m".into(),
                        "1".into(),
                        format!("127.0.0.1:{ports}"),
                    ],
                    port: ports + 16,
                    media_port: ports + 18,
                    control_port: ports + 22,
                }
                .spawn(&dir, "probe");
                probe_run = Some((tcpdump, sipp, cap));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        let mut latency = None;
        if let Some((mut tcpdump, mut sipp, cap)) = probe_run {
            sipp.wait_success(Duration::from_secs(probe_s + 60));
            std::thread::sleep(Duration::from_millis(500));
            let _ = std::process::Command::new("kill")
                .arg("-INT")
                .arg(tcpdump.id().to_string())
                .status();
            let _ = tcpdump.wait();
            if capture {
                let packets = earshot_tests::pcap::read_udp(&cap).unwrap_or_default();
                let d =
                    earshot_tests::pcap::relay_delays(&packets, PROBE_SSRC, ports + 18, ports + 2);
                if !d.is_empty() {
                    let q = |f: f64| d[((d.len() - 1) as f64 * f).round() as usize] as f64 / 1000.0;
                    latency = Some((d.len(), q(0.5), q(0.99), q(1.0)));
                }
                let _ = std::fs::remove_file(&cap);
            }
        }
        uac.wait_success(Duration::from_secs(call_s + 120));
        uas.wait_success(Duration::from_secs(60));
        let recs = rec.wait_recordings(n + 1, Duration::from_secs(120));
        let cpu = cpu_seconds(pid) - cpu0;
        let text = rec.metrics_text();
        let relayed = earshot_tests::parse_metric(
            &text,
            "earshot_rtp_packets_total{direction=\"caller_to_callee\"}",
        ) + earshot_tests::parse_metric(
            &text,
            "earshot_rtp_packets_total{direction=\"callee_to_caller\"}",
        );
        let dropped: f64 = text
            .lines()
            .filter(|l| l.starts_with("earshot_rtp_dropped_packets_total"))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum();
        // The load's packets, the probe's, and the callee's answer to the probe.
        let expected = (n * (caller.len() + callee.len()) + probe.len() + callee.len()) as f64;
        // Every call: one complete MP3 whose length matches the answered call.
        let good = recs
            .iter()
            .filter(|(mp3, s)| {
                let len = s["audio"]["durationSeconds"].as_f64().unwrap_or(0.0);
                let call = s["durationSeconds"].as_f64().unwrap_or(-1.0);
                s["complete"] == true
                    && (len - call).abs() < 0.2
                    && std::fs::metadata(mp3).map(|m| m.len()).unwrap_or(0) > 1000
            })
            .count();
        let decodes = recs
            .iter()
            .take(3)
            .all(|(mp3, _)| earshot_tests::decode_mp3(mp3).0.len() > 8000);
        let call_minutes = (n + 1) as f64 * call_s as f64 / 60.0;
        let per_min = cpu / call_minutes;
        let per_core = 60.0 / per_min;
        let rss_per_call = peak.saturating_sub(rss0) / n as u64;
        let total = n + 1;
        let valid = good == total && decodes && recs.len() == total;
        let lat = latency.map_or("-".to_owned(), |(_, a, b, c)| {
            format!("{a:.0}/{b:.0}/{c:.0}")
        });
        println!(
            "{n:>6} {per_min:>12.4} {per_core:>12.0} {relayed:>10.0} {expected:>10.0} {dropped:>8.0} {rss_per_call:>12} {:>9} {lat:>22}",
            format!("{good}/{total}")
        );
        results.push(json!({
            "concurrent_calls": n, "call_seconds": call_s, "cpu_seconds": cpu, "cpu_seconds_per_call_minute": per_min,
            "calls_per_core": per_core, "rtp_relayed": relayed, "rtp_expected": expected, "rtp_dropped": dropped,
            "rss_kib_per_call": rss_per_call, "recordings": recs.len(), "recordings_valid": good, "valid": valid,
            "latency_us": latency.map(|(count, p50, p99, max)| json!({"packets": count, "p50": p50, "p99": p99, "max": max})),
            "storage": "filesystem",
        }));
        drop(rec);
        if relayed < expected || dropped > 0.0 || !valid {
            println!(
                "stopping the ramp: {} at {n} calls",
                if valid {
                    "RTP loss"
                } else {
                    "invalid recordings"
                }
            );
            break;
        }
    }
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let date = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let report = json!({"date": date, "commit": commit, "recorder": "earshot", "steps": results});
    std::fs::write(
        out_dir.join("earshot.json"),
        serde_json::to_vec_pretty(&report).unwrap(),
    )
    .unwrap();
    println!();
    println!("results: {}", out_dir.join("earshot.json").display());
}
