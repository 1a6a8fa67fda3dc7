//! `make bench`: the same SIPp load through a real `earshot-recorder` and,
//! for comparison, through rtpengine behind Kamailio, ramping the number of
//! concurrent recorded calls (G.711 both ways, every call recorded) until RTP
//! is lost. For each step and target: CPU per recorded call-minute (from
//! /proc, all processes of the target; for rtpengine including making the
//! MP3s from its pcap recordings), the calls one core sustains at that cost,
//! packets relayed against what SIPp sends, resident memory per call, whether
//! every call produced one MP3 of the right length, and the delay the relay
//! adds (a probe call with its own SSRC, captured by tcpdump on both sides).
//!
//! The parties (SIPp) live in a network namespace of their own, joined to
//! the machine (where the targets run) by a veth pair with checksum offload
//! off: every packet crosses a real interface, as from a PBX on another
//! host, so the kernel fast path applies. Target `earshot-kernel` is
//! Earshot with `kernelFastPath: Required`; its CPU is the recorder
//! process's plus its eBPF program's run time as the kernel counts it
//! (`earshot_kernel_program_seconds_total`). Not counted, for any target:
//! the kernel's receive path in softirq context (charged to whichever
//! process runs), and for the fast path the transmit after its program
//! (for the userspace relays a send is in their system time). The machine's
//! busy time from /proc/stat was tried and read below a target's own CPU
//! in this VM, so it is not used.
//!
//! Target `earshot-srtp` is the same load as `earshot` with SDES-SRTP
//! (`AES_CM_128_HMAC_SHA1_80`) both ways: the pcaps encrypted under the keys
//! the SDP announces, the recorder decrypting a copy of every packet.
//!
//! `EARSHOT_BENCH_STEPS=50,100,200`, `EARSHOT_BENCH_CALL_SECONDS=30` and
//! `EARSHOT_BENCH_TARGETS=earshot-kernel,earshot,rtpengine` (or `earshot,earshot-srtp`)
//! tune it; results go to stdout and `target/bench/results.json`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use earshot_tests::netns::Veths;
use earshot_tests::pcap::{RtpStream, Tcpdump};
use earshot_tests::rtpengine::{RtpengineProxy, pcap_to_mp3};
use earshot_tests::{RecorderProcess, Sipp, SippProcess, free_ports, repo};
use serde_json::{Value, json};

const PROBE_SSRC: u32 = 0x7e57;

/// Values of a SIPp scenario's SDP placeholders.
type SdpValues = Vec<(&'static str, String)>;

fn proc_field(pid: u32, file: &str, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).ok()?;
    text.lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// utime + stime of a process, in seconds ("self" for this one).
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    ticks as f64 / 100.0
}

fn cpu_of(pids: &[u32]) -> f64 {
    pids.iter().map(|p| cpu_seconds(&p.to_string())).sum()
}

/// Where the parties and the targets are: the parties in a namespace of
/// their own, the targets on the machine's side of its veth pair.
struct Where {
    veths: Veths,
}

impl Where {
    fn ns(&self) -> &str {
        &self.veths.caller_ns
    }
    fn phones(&self) -> std::net::Ipv4Addr {
        self.veths.caller
    }
    fn host(&self) -> std::net::Ipv4Addr {
        self.veths.host_caller
    }
}

struct Load<'a> {
    call_s: u64,
    caller: &'a RtpStream,
    callee: &'a RtpStream,
    probe: &'a RtpStream,
    pcaps: (PathBuf, PathBuf, PathBuf),
    capture: bool,
    /// SDP values of the caller's and the callee's scenario (SRTP keys).
    sdp: (SdpValues, SdpValues),
    at: &'a Where,
}

/// Runs `n` calls plus the probe through `sip`; samples `rss_pid` for peak
/// memory; returns (peak RSS KiB, latency (packets, p50, p99, max) in µs).
fn drive(
    load: &Load,
    dir: &Path,
    ports: u16,
    sip: SocketAddr,
    n: usize,
    rss_pid: u32,
) -> (u64, Option<(usize, f64, f64, f64)>) {
    let mut uas = Sipp {
        scenario: "uas.xml",
        vars: [("PCAP", load.pcaps.1.display().to_string())]
            .into_iter()
            .chain(load.sdp.1.iter().cloned())
            .collect(),
        args: vec!["-m".into(), (n + 1).to_string()],
        port: ports,
        media_port: ports + 2,
        control_port: ports + 6,
    }
    .spawn_in(dir, "uas", Some(load.at.ns()), load.at.phones().into());
    std::thread::sleep(Duration::from_millis(300));
    let rate = (n / 5).max(10);
    let uac = |pcap: &Path, calls: usize, port: u16, name: &str| -> SippProcess {
        Sipp {
            scenario: "uac.xml",
            vars: [
                ("FROM", "008".into()),
                ("PCAP", pcap.display().to_string()),
                ("TALK_MS", (load.call_s * 1000).to_string()),
            ]
            .into_iter()
            .chain(load.sdp.0.iter().cloned())
            .collect(),
            args: vec![
                "-rsa".into(),
                sip.to_string(),
                "-s".into(),
                "500".into(),
                "-m".into(),
                calls.to_string(),
                "-l".into(),
                calls.to_string(),
                "-r".into(),
                rate.to_string(),
                format!("{}:{ports}", load.at.phones()),
            ],
            port,
            media_port: port + 2,
            control_port: port + 6,
        }
        .spawn_in(dir, name, Some(load.at.ns()), load.at.phones().into())
    };
    let mut calls = uac(&load.pcaps.0, n, ports + 8, "uac");
    let started = Instant::now();
    let ramp = Duration::from_secs((n / rate) as u64 + 2);
    let mut peak = 0;
    let mut probe_run: Option<(Option<Tcpdump>, SippProcess)> = None;
    while started.elapsed() < ramp + Duration::from_secs(load.call_s + 2) {
        peak = peak.max(proc_field(rss_pid, "status", "VmRSS:").unwrap_or(0));
        if probe_run.is_none() && started.elapsed() >= ramp {
            let capture = load.capture.then(|| {
                Tcpdump::start_on(
                    Some(load.at.ns()),
                    "eth0",
                    &dir.join("probe-capture.pcap"),
                    &format!("udp and (port {} or port {})", ports + 18, ports + 2),
                )
            });
            probe_run = Some((capture, uac(&load.pcaps.2, 1, ports + 16, "probe")));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    calls.wait_success(Duration::from_secs(load.call_s + 120));
    let mut latency = None;
    if let Some((capture, mut probe)) = probe_run {
        probe.wait_success(Duration::from_secs(load.call_s + 60));
        std::thread::sleep(Duration::from_millis(500));
        if let Some(capture) = capture {
            let packets = capture.stop();
            let d = earshot_tests::pcap::relay_delays(&packets, PROBE_SSRC, ports + 18, ports + 2);
            if !d.is_empty() {
                let q = |f: f64| d[((d.len() - 1) as f64 * f).round() as usize] as f64 / 1000.0;
                latency = Some((d.len(), q(0.5), q(0.99), q(1.0)));
            }
            let _ = std::fs::remove_file(dir.join("probe-capture.pcap"));
        }
    }
    uas.wait_success(Duration::from_secs(60));
    (peak, latency)
}

// One table row: the figures of one target at one step.
#[allow(clippy::too_many_arguments)]
fn report(
    target: &str,
    n: usize,
    load: &Load,
    cpu: f64,
    relayed: f64,
    rss_per_call: u64,
    good: usize,
    latency: Option<(usize, f64, f64, f64)>,
) -> Value {
    let total = n + 1;
    let expected =
        (n * (load.caller.len() + load.callee.len()) + load.probe.len() + load.callee.len()) as f64;
    let per_min = cpu / (total as f64 * load.call_s as f64 / 60.0);
    let per_core = 60.0 / per_min;
    let lat = latency.map_or("-".to_owned(), |(_, a, b, c)| {
        format!("{a:.0}/{b:.0}/{c:.0}")
    });
    println!(
        "{target:>14} {n:>6} {per_min:>12.4} {per_core:>11.0} {relayed:>10.0} {expected:>10.0} {rss_per_call:>12} {:>9} {lat:>22}",
        format!("{good}/{total}")
    );
    json!({
        "target": target, "concurrent_calls": n, "call_seconds": load.call_s, "cpu_seconds": cpu,
        "cpu_seconds_per_call_minute": per_min, "calls_per_core": per_core, "rtp_relayed": relayed,
        "rtp_expected": expected, "rss_kib_per_call": rss_per_call, "recordings_valid": good, "recordings_expected": total,
        "valid": good == total && relayed >= expected,
        "latency_us": latency.map(|(count, p50, p99, max)| json!({"packets": count, "p50": p50, "p99": p99, "max": max})),
    })
}

fn step_earshot(
    name: &str,
    load: &Load,
    binary: &Path,
    dir: &Path,
    n: usize,
    fast_path: &str,
) -> Value {
    let ports = free_ports(32);
    let rtp_ports = (n as u16) * 4 + 64;
    let base = free_ports(rtp_ports + 2);
    let (host, phones) = (load.at.host(), load.at.phones());
    let sip = SocketAddr::from((host, base));
    let http = SocketAddr::from(([127, 0, 0, 1], base + 1));
    let yaml = format!(
        "sip: {{ listen: \"{sip}\" }}
advertisedAddress: {host}
rtp: {{ bind: 0.0.0.0, portMin: {}, portMax: {}, kernelFastPath: {fast_path}, kernelInterfaces: [{}] }}
http: {{ listen: \"{http}\" }}
peers:
  - {{ name: sipp, sources: [\"{phones}/32\"], nextHop: \"{phones}:{ports}\" }}
users:
  - {{ extension: \"008\", mode: Always }}
events: {{ path: \"{}\" }}
spool: {{ dir: \"{}\" }}
storage: {{ filesystem: {{ path: \"{}\" }}, prefix: \"acme/office/\" }}
",
        base + 2,
        base + 1 + rtp_ports,
        load.at.veths.host_ifaces[0],
        dir.join("events.jsonl").display(),
        dir.join("spool").display(),
        dir.join("store").display(),
    );
    let rec = RecorderProcess::launch(binary, dir, &yaml, sip, http, &[]);
    let pid = rec.pid().expect("the recorder is running");
    let rss0 = proc_field(pid, "status", "VmRSS:").unwrap_or(0);
    let program = |t: &str| earshot_tests::parse_metric(t, "earshot_kernel_program_seconds_total");
    let program0 = program(&rec.metrics_text());
    let cpu0 = cpu_seconds(&pid.to_string());
    let (peak, latency) = drive(load, dir, ports, rec.sip, n, pid);
    let recs = rec.wait_recordings(n + 1, Duration::from_secs(120));
    let text = rec.metrics_text();
    let kernel_cpu = program(&text) - program0;
    let cpu = cpu_seconds(&pid.to_string()) - cpu0 + kernel_cpu;
    let relayed = earshot_tests::parse_metric(
        &text,
        "earshot_rtp_packets_total{direction=\"caller_to_callee\"}",
    ) + earshot_tests::parse_metric(
        &text,
        "earshot_rtp_packets_total{direction=\"callee_to_caller\"}",
    );
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
    let rss_per_call = peak.saturating_sub(rss0) / n as u64;
    let srtp_failures = earshot_tests::parse_metric(&text, "earshot_srtp_unprotect_failures_total");
    if srtp_failures > 0.0 {
        println!("{name}: {srtp_failures} SRTP packets did not decrypt");
    }
    let kernel_relayed =
        earshot_tests::parse_metric(&text, "earshot_kernel_packets_total{result=\"relayed\"}");
    let mut v = report(
        name,
        n,
        load,
        cpu,
        relayed,
        rss_per_call,
        if decodes && srtp_failures == 0.0 {
            good
        } else {
            0
        },
        latency,
    );
    v["cpu_seconds_kernel_program"] = json!(kernel_cpu);
    v["kernel_relayed"] = json!(kernel_relayed);
    if fast_path != "Off" {
        println!(
            "{:>14} {n:>6}   the kernel relayed {kernel_relayed:.0} of {relayed:.0} packets; its program took {kernel_cpu:.3} CPU-s",
            ""
        );
    }
    v
}

fn step_rtpengine(load: &Load, dir: &Path, n: usize) -> Value {
    let ports = free_ports(32);
    let rtp_count = (n as u16) * 4 + 64;
    let rtp = free_ports(rtp_count);
    let proxy =
        RtpengineProxy::start_on(dir, ports + 26, (rtp, rtp + rtp_count - 1), load.at.host());
    let rtpe = proxy.rtpengine_pid().expect("rtpengine runs");
    let rss0 = proc_field(rtpe, "status", "VmRSS:").unwrap_or(0);
    let pids = proxy.pids();
    let cpu0 = cpu_of(&pids);
    let (peak, latency) = drive(load, dir, ports, proxy.sip, n, rtpe);
    std::thread::sleep(Duration::from_secs(2));
    let relay_cpu = cpu_of(&pids) - cpu0;
    let relayed = proxy.relayed_packets().unwrap_or(0) as f64;
    // The recordings: rtpengine's pcaps made into the same MP3s, CPU counted.
    let self0 = cpu_seconds("self");
    let mut good = 0;
    for (i, e) in std::fs::read_dir(proxy.recordings.join("pcaps"))
        .into_iter()
        .flatten()
        .flatten()
        .enumerate()
    {
        let mp3 = dir.join(format!("rtpengine-{i}.mp3"));
        if let Ok((len, span)) = pcap_to_mp3(&e.path(), &mp3, &[1, PROBE_SSRC])
            && (len - span).abs() < 0.2
            && len > 1.0
        {
            good += 1;
        }
    }
    let convert_cpu = cpu_seconds("self") - self0;
    let rss_per_call = peak.saturating_sub(rss0) / n as u64;
    let mut v = report(
        "rtpengine",
        n,
        load,
        relay_cpu + convert_cpu,
        relayed,
        rss_per_call,
        good,
        latency,
    );
    v["cpu_seconds_relay"] = json!(relay_cpu);
    v["cpu_seconds_mp3"] = json!(convert_cpu);
    v
}

fn main() {
    earshot_tests::require("sipp");
    let steps: Vec<usize> = std::env::var("EARSHOT_BENCH_STEPS")
        .unwrap_or_else(|_| "50,100,200".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let targets: Vec<String> = std::env::var("EARSHOT_BENCH_TARGETS")
        .unwrap_or_else(|_| "earshot-kernel,earshot,rtpengine".into())
        .split(',')
        .map(|s| s.trim().to_owned())
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
    // As long as the load's calls, so the callee's answer to it is complete too.
    let probe = RtpStream::new(PROBE_SSRC).tone(440.0, call_s * 1000 - 500);
    let pcaps = (
        out_dir.join("caller.pcap"),
        out_dir.join("callee.pcap"),
        out_dir.join("probe.pcap"),
    );
    caller.write(&pcaps.0).unwrap();
    callee.write(&pcaps.1).unwrap();
    probe.write(&pcaps.2).unwrap();
    // The same streams under SDES-SRTP keys, for `earshot-srtp`.
    let suite = earshot_recorder_core::srtp::Suite::AesCm128HmacSha1_80;
    let key = |byte: u8| {
        let bytes = vec![byte; suite.master_key_len() + suite.master_salt_len()];
        earshot_recorder_core::srtp::SdesKey::new(1, suite, &bytes).unwrap()
    };
    let (offer, answer) = (key(0x11), key(0x22));
    let secure = |k: &earshot_recorder_core::srtp::SdesKey| {
        vec![
            ("PROFILE", "RTP/SAVP".to_owned()),
            ("SDP_EXTRA", format!("\na=crypto:{}", k.to_attribute())),
        ]
    };
    let srtp_pcaps = (
        out_dir.join("caller-srtp.pcap"),
        out_dir.join("callee-srtp.pcap"),
        out_dir.join("probe-srtp.pcap"),
    );
    for (stream, k, path) in [
        (&caller, &offer, &srtp_pcaps.0),
        (&callee, &answer, &srtp_pcaps.1),
        (&probe, &offer, &srtp_pcaps.2),
    ] {
        stream.clone().protected(k).write(path).unwrap();
    }
    let capture = std::process::Command::new("sh")
        .arg("-c")
        .arg("command -v tcpdump")
        .output()
        .is_ok_and(|o| o.status.success());
    if !capture {
        println!("tcpdump not installed: relay latency not measured (make bench installs it)");
    }
    let at = Where {
        veths: Veths::new(),
    };
    let load = Load {
        at: &at,
        call_s,
        caller: &caller,
        callee: &callee,
        probe: &probe,
        pcaps,
        capture,
        sdp: (Vec::new(), Vec::new()),
    };
    let srtp_load = Load {
        at: &at,
        call_s,
        caller: &caller,
        callee: &callee,
        probe: &probe,
        pcaps: srtp_pcaps,
        capture,
        sdp: (secure(&offer), secure(&answer)),
    };

    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    println!(
        "bench: {call_s} s calls, G.711 both ways, every call recorded; steps {steps:?}; targets {targets:?}"
    );
    println!(
        "machine: {} CPUs, {cpu_model}",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!();
    println!(
        "{:>14} {:>6} {:>12} {:>11} {:>10} {:>10} {:>12} {:>9} {:>22}",
        "target",
        "calls",
        "CPU s/callmin",
        "calls/core",
        "relayed",
        "expected",
        "RSS/call KiB",
        "MP3s ok",
        "latency p50/p99/max µs"
    );
    let mut results = Vec::new();
    for &n in &steps {
        let mut stop = false;
        for target in &targets {
            let dir = out_dir.join(format!("{target}-{n}"));
            std::fs::create_dir_all(&dir).unwrap();
            let r = match target.as_str() {
                "earshot" => step_earshot("earshot", &load, &binary, &dir, n, "Off"),
                "earshot-kernel" => {
                    step_earshot("earshot-kernel", &load, &binary, &dir, n, "Required")
                }
                "earshot-srtp" => step_earshot("earshot-srtp", &srtp_load, &binary, &dir, n, "Off"),
                "rtpengine" => step_rtpengine(&load, &dir, n),
                other => panic!("unknown target {other}"),
            };
            stop |= r["valid"] != true;
            results.push(r);
        }
        let per = |t: &str| {
            results
                .iter()
                .rev()
                .find(|r| r["target"] == t && r["concurrent_calls"] == n)
                .and_then(|r| r["cpu_seconds_per_call_minute"].as_f64())
        };
        if let (Some(e), Some(r)) = (per("earshot"), per("rtpengine")) {
            println!(
                "{:>10} {n:>6}   Earshot/rtpengine CPU per call-minute {:.2}, calls per core {:.2}",
                "ratio",
                e / r,
                r / e
            );
        }
        if let (Some(k), Some(r)) = (per("earshot-kernel"), per("rtpengine")) {
            println!(
                "{:>14} {n:>6}   Earshot with the kernel fast path / rtpengine CPU per call-minute {:.2}",
                "ratio",
                k / r
            );
        }
        if let (Some(k), Some(e)) = (per("earshot-kernel"), per("earshot")) {
            println!(
                "{:>14} {n:>6}   kernel fast path / userspace CPU per call-minute {:.2}",
                "ratio",
                k / e
            );
        }
        if let (Some(e), Some(x)) = (per("earshot"), per("earshot-srtp")) {
            println!(
                "{:>10} {n:>6}   SRTP/plain CPU per call-minute {:.2}",
                "ratio",
                x / e
            );
        }
        if stop {
            println!("stopping the ramp at {n} calls: RTP loss or invalid recordings");
            break;
        }
    }
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let date = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let report = json!({"date": date, "commit": commit, "machine": {"cpus": std::thread::available_parallelism().map_or(0, |n| n.get()), "model": cpu_model}, "steps": results});
    std::fs::write(
        out_dir.join("results.json"),
        serde_json::to_vec_pretty(&report).unwrap(),
    )
    .unwrap();
    println!();
    println!("results: {}", out_dir.join("results.json").display());
}
