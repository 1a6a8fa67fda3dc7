//! The kernel fast path end to end: SIPp as caller and callee in network
//! namespaces of their own, joined to the recorder (on the machine's own
//! network) by veth pairs with checksum offload off, so every datagram
//! crosses real interfaces and a receiver's stack drops any whose checksum
//! the relay got wrong. The recorder runs with `kernelFastPath: Required`
//! (and `Off` for the comparison): the eBPF program at the veths' ingress
//! relays each established stream, the recorder reads the copies.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use common::BINARY;
use earshot_recorder_core::g711;
use earshot_tests::netns::Veths;
use earshot_tests::pcap::{Captured, RtpStream, Tcpdump};
use earshot_tests::{
    RecorderProcess, Sipp, SippProcess, TempDir, decode_mp3, free_ports, parse_metric, rms,
    tone_share,
};

const CALLER_HZ: f64 = 440.0;
const CALLEE_HZ: f64 = 1000.0;

/// A recorder between the two namespaces, and where its parties are.
struct Net {
    veths: Veths,
    dir: TempDir,
    recorder: RecorderProcess,
    /// SIP port of the recorder; the callee's SIP port (its media: +2).
    sip: u16,
    callee_port: u16,
    caller_port: u16,
}

/// A script in `dir` that runs the recorder under `setpriv` with `args`.
fn setpriv_wrapper(dir: &Path, name: &str, args: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let wrapper = dir.join(name);
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec setpriv {args} {} \"$@\"\n",
            Path::new(BINARY).display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    wrapper
}

fn net(name: &str, fast_path: &str, extra_rtp: &str, extra_yaml: &str) -> Net {
    earshot_tests::require("sipp");
    earshot_tests::require("setpriv");
    let veths = Veths::new();
    let dir = TempDir::new(name);
    let base = free_ports(96);
    let (sip, http, rtp_min, rtp_max) = (base, base + 1, base + 2, base + 65);
    let (callee_port, caller_port) = (base + 70, base + 80);
    let n = veths.n;
    let yaml = format!(
        "sip: {{ listen: \"0.0.0.0:{sip}\" }}
advertisedAddress: {host_callee}
externalAddress: {host_caller}
internalNetworks: [\"10.251.{n}.0/24\"]
rtp: {{ bind: 0.0.0.0, portMin: {rtp_min}, portMax: {rtp_max}, kernelFastPath: {fast_path}, kernelInterfaces: [{a}, {b}]{extra_rtp} }}
http: {{ listen: \"127.0.0.1:{http}\" }}
peers:
  - {{ name: pbx, sources: [\"{caller}/32\"], nextHop: \"{callee}:{callee_port}\" }}
  - {{ name: trunk, sources: [\"{callee}/32\"], nextHop: \"{caller}:{caller_port}\" }}
users:
  - {{ extension: \"008\", mode: Always }}
  - {{ extension: \"012\", mode: OnDemand, shortcode: \"*5\" }}
events: {{ path: \"{events}\" }}
shutdownGrace: 30s
spool: {{ dir: \"{spool}\" }}
storage: {{ filesystem: {{ path: \"{store}\" }}, prefix: \"acme/office/\" }}
{extra_yaml}",
        host_callee = veths.host_callee,
        host_caller = veths.host_caller,
        a = veths.host_ifaces[0],
        b = veths.host_ifaces[1],
        caller = veths.caller,
        callee = veths.callee,
        events = dir.path().join("events.jsonl").display(),
        spool = dir.path().join("spool").display(),
        store = dir.path().join("store").display(),
    );
    // With the capabilities the operator grants a recorder pod and no
    // other (root, CAP_BPF and CAP_NET_ADMIN: no CAP_SYS_ADMIN or
    // CAP_PERFMON, so the verifier's stricter rules apply).
    let wrapper = setpriv_wrapper(
        dir.path(),
        "as-a-pod.sh",
        "--bounding-set=-all,+bpf,+net_admin --inh-caps=-all",
    );
    let recorder = RecorderProcess::launch(
        &wrapper,
        dir.path(),
        &yaml,
        SocketAddr::from(([127, 0, 0, 1], sip)),
        SocketAddr::from(([127, 0, 0, 1], http)),
        &[],
    );
    Net {
        veths,
        dir,
        recorder,
        sip,
        callee_port,
        caller_port,
    }
}

impl Net {
    fn pcap(&self, name: &str, stream: &RtpStream) -> String {
        let path = self.dir.path().join(name);
        stream.write(&path).unwrap();
        path.display().to_string()
    }

    /// The callee answering `calls` calls with `callee`.
    fn uas(&self, callee: &RtpStream, calls: usize) -> SippProcess {
        let uas = Sipp {
            scenario: "uas.xml",
            vars: vec![("PCAP", self.pcap("callee.pcap", callee))],
            args: vec!["-m".into(), calls.to_string()],
            port: self.callee_port,
            media_port: self.callee_port + 2,
            control_port: self.callee_port + 6,
        }
        .spawn_in(
            self.dir.path(),
            "uas",
            Some(&self.veths.callee_ns),
            IpAddr::V4(self.veths.callee),
        );
        std::thread::sleep(Duration::from_millis(300));
        uas
    }

    /// `calls` calls from `from`, `at_once` at a time, each `talk_ms` long.
    fn uac(
        &self,
        from: &str,
        caller: &RtpStream,
        talk_ms: u64,
        calls: usize,
        at_once: usize,
    ) -> SippProcess {
        let recorder = SocketAddr::from((self.veths.host_caller, self.sip));
        Sipp {
            scenario: "uac.xml",
            vars: vec![
                ("FROM", from.to_owned()),
                ("PCAP", self.pcap("caller.pcap", caller)),
                ("TALK_MS", talk_ms.to_string()),
            ],
            args: vec![
                "-rsa".into(),
                recorder.to_string(),
                "-s".into(),
                "500".into(),
                "-m".into(),
                calls.to_string(),
                "-l".into(),
                at_once.to_string(),
                "-r".into(),
                at_once.max(2).div_ceil(2).to_string(),
                format!("{}:{}", self.veths.callee, self.callee_port),
            ],
            port: self.caller_port,
            media_port: self.caller_port + 2,
            control_port: self.caller_port + 6,
        }
        .spawn_in(
            self.dir.path(),
            "uac",
            Some(&self.veths.caller_ns),
            IpAddr::V4(self.veths.caller),
        )
    }

    fn metric(&self, series: &str) -> f64 {
        self.recorder.metric(series)
    }

    fn kernel(&self, result: &str) -> f64 {
        self.metric(&format!(
            "earshot_kernel_packets_total{{result=\"{result}\"}}"
        ))
    }

    /// A capture of what the callee's namespace receives on UDP port `port`.
    fn capture_callee(&self, port: u16) -> Tcpdump {
        Tcpdump::start_on(
            Some(&self.veths.callee_ns),
            "eth0",
            &self.dir.path().join("heard-callee.pcap"),
            &format!("udp and dst port {port}"),
        )
    }

    /// The same at the caller.
    fn capture_caller(&self, port: u16) -> Tcpdump {
        Tcpdump::start_on(
            Some(&self.veths.caller_ns),
            "eth0",
            &self.dir.path().join("heard-caller.pcap"),
            &format!("udp and dst port {port}"),
        )
    }
}

/// The SSRC of a captured RTP packet.
fn ssrc_of(p: &Captured) -> Option<u32> {
    Some(u32::from_be_bytes(p.payload.get(8..12)?.try_into().ok()?))
}

/// Relayed RTP packets both ways, from the core's counters.
fn relayed(n: &Net) -> (f64, f64) {
    let text = n.recorder.metrics_text();
    (
        parse_metric(
            &text,
            "earshot_rtp_packets_total{direction=\"caller_to_callee\"}",
        ),
        parse_metric(
            &text,
            "earshot_rtp_packets_total{direction=\"callee_to_caller\"}",
        ),
    )
}

/// One recorded call: both channels, 8 kHz.
fn only_recording(n: &Net) -> (serde_json::Value, Vec<i16>, Vec<i16>) {
    let recs = n.recorder.wait_recordings(1, Duration::from_secs(20));
    assert_eq!(recs.len(), 1);
    let (mp3, sidecar) = recs.into_iter().next().unwrap();
    let (left, right) = decode_mp3(&mp3);
    (sidecar, left, right)
}

/// The same call through the relay in userspace and through the kernel:
/// the parties get every packet with good checksums, the recordings are
/// the same, and the kernel relayed all but each stream's first packets.
#[test]
fn the_kernel_relays_established_streams_and_the_recording_is_the_one_userspace_makes() {
    let caller = RtpStream::new(0x1111).tone(CALLER_HZ, 3000);
    let callee = RtpStream::new(0x2222).tone(CALLEE_HZ, 3000);
    let mut made = Vec::new();
    for mode in ["Off", "Required"] {
        let n = net(&format!("fastpath-{mode}"), mode, "", "");
        let heard = [
            n.capture_caller(n.caller_port + 2),
            n.capture_callee(n.callee_port + 2),
        ];
        let mut uas = n.uas(&callee, 1);
        let mut uac = n.uac("008", &caller, 3000, 1, 1);
        uac.wait_success(Duration::from_secs(30));
        uas.wait_success(Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(300));
        // Each side got the other's every packet, each with a right
        // checksum (offload is off: the relay's checksums are what counts).
        let [at_caller, at_callee] = heard.map(|c| c.stop());
        for (who, ssrc, sent, got) in [
            ("caller", 0x2222, callee.len(), &at_caller),
            ("callee", 0x1111, caller.len(), &at_callee),
        ] {
            let rtp: Vec<_> = got.iter().filter(|p| ssrc_of(p) == Some(ssrc)).collect();
            assert_eq!(rtp.len(), sent, "{mode}: RTP packets the {who} got");
            assert!(
                rtp.iter().all(|p| p.checksum_ok),
                "{mode}: a packet to the {who} with a wrong UDP checksum"
            );
        }
        let (up, down) = relayed(&n);
        assert_eq!(up as usize, caller.len(), "{mode}");
        assert_eq!(down as usize, callee.len(), "{mode}");
        let kernel = n.kernel("relayed");
        if mode == "Off" {
            assert_eq!(kernel, 0.0);
            assert_eq!(n.metric("earshot_kernel_fast_path{state=\"off\"}"), 1.0);
        } else {
            assert_eq!(n.metric("earshot_kernel_fast_path{state=\"active\"}"), 1.0);
            let userspace = (up + down) - kernel;
            // Each stream latches and runs OFFLOAD_AFTER packets in
            // userspace; a few more may pass while the kernel takes it.
            let most = 2.0 * f64::from(earshot_recorder_core::engine::OFFLOAD_AFTER) + 6.0;
            assert!(
                userspace <= most,
                "the kernel relayed {kernel} of {} packets",
                up + down
            );
            assert_eq!(
                n.metric("earshot_kernel_handoffs_total{event=\"offloaded\"}"),
                2.0
            );
            assert_eq!(
                n.metric("earshot_kernel_handoffs_total{event=\"call_ended\"}"),
                2.0
            );
            assert_eq!(n.metric("earshot_kernel_streams"), 0.0, "all taken back");
        }
        let (sidecar, left, right) = only_recording(&n);
        assert_eq!(sidecar["complete"], true, "{mode}: {sidecar}");
        assert!(
            tone_share(&left, CALLER_HZ) > 0.8,
            "{mode}: the caller on the left"
        );
        assert!(
            tone_share(&right, CALLEE_HZ) > 0.8,
            "{mode}: the callee on the right"
        );
        made.push((sidecar, left, right));
    }
    let (off, on) = (&made[0], &made[1]);
    let secs = |s: &[i16]| s.len() as f64 / 8000.0;
    assert!(
        (secs(&off.1) - secs(&on.1)).abs() < 0.05,
        "userspace {:.3} s, kernel {:.3} s",
        secs(&off.1),
        secs(&on.1)
    );
    for (ch, a, b) in [("left", &off.1, &on.1), ("right", &off.2, &on.2)] {
        let (ra, rb) = (rms(a), rms(b));
        assert!(
            (ra - rb).abs() / ra < 0.03,
            "{ch}: rms {ra:.0} in userspace, {rb:.0} through the kernel"
        );
    }
}

/// RTP packets of `ssrc` a capture holds, in order: (seq, timestamp, G.711 samples).
fn rtp_of(packets: &[Captured], ssrc: u32) -> Vec<(u16, u32, Vec<i16>)> {
    packets
        .iter()
        .filter(|p| p.payload.len() > 12 && p.payload[1] & 0x7f == 0)
        .filter(|p| u32::from_be_bytes(p.payload[8..12].try_into().unwrap()) == ssrc)
        .map(|p| {
            let b = &p.payload;
            (
                u16::from_be_bytes([b[2], b[3]]),
                u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
                b[12..].iter().map(|&u| g711::ulaw_to_linear(u)).collect(),
            )
        })
        .collect()
}

/// Reminder beeps every 5 s: the recorder takes the caller's stream back
/// from the kernel for each beep and hands it over again after it, and the
/// callee hears one stream, its numbering continuous across all of it.
#[test]
fn announcements_take_the_stream_back_and_the_kernel_continues_its_numbering() {
    let n = net(
        "fastpath-announce",
        "Required",
        "",
        "announcement: { mode: None, periodicBeepSeconds: 5, to: Both }\n",
    );
    let caller = RtpStream::new(0x3333).tone(CALLER_HZ, 12000);
    let callee = RtpStream::new(0x4444).tone(CALLEE_HZ, 12000);
    let cap = n.capture_callee(n.callee_port + 2);
    let mut uas = n.uas(&callee, 1);
    let mut uac = n.uac("008", &caller, 12000, 1, 1);
    uac.wait_success(Duration::from_secs(30));
    uas.wait_success(Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(300));
    let got = rtp_of(&cap.stop(), 0x3333);
    assert!(got.len() > 550, "{} packets reached the callee", got.len());
    for w in got.windows(2) {
        assert_eq!(w[1].0, w[0].0.wrapping_add(1), "no sequence gap or repeat");
        let step = w[1].1.wrapping_sub(w[0].1);
        assert!(
            step >= 160 && step % 160 == 0 && step < 8000,
            "timestamp step {step}"
        );
    }
    let beeps = got
        .iter()
        .filter(|(_, _, s)| tone_share(s, 1400.0) > 0.5)
        .count();
    // Two beeps of 200 ms (10 packets) at 5 and 10 s.
    assert!((15..=25).contains(&beeps), "{beeps} beep packets");
    // Each beep goes both ways: both legs are taken back, and handed over
    // again after it.
    let back = n.metric("earshot_kernel_handoffs_total{event=\"announcement\"}");
    let offloaded = n.metric("earshot_kernel_handoffs_total{event=\"offloaded\"}");
    assert_eq!(back, 4.0, "taken back for two beeps both ways");
    assert_eq!(
        offloaded,
        2.0 + back,
        "handed over at first and after each beep"
    );
    assert!(n.kernel("relayed") > 800.0, "{}", n.kernel("relayed"));
}

/// A packet from any source but the latched one is refused while the
/// kernel relays the stream: it reaches the recorder's socket (the program
/// passes what is not its stream's) and is dropped there.
#[test]
fn a_packet_from_an_unlatched_source_is_refused_while_the_kernel_relays() {
    let n = net("fastpath-spoof", "Required", "", "");
    let caller = RtpStream::new(0x5555).tone(CALLER_HZ, 4000);
    let callee = RtpStream::new(0x6666).tone(CALLEE_HZ, 4000);
    let cap = n.capture_callee(n.callee_port + 2);
    let mut uas = n.uas(&callee, 1);
    let mut uac = n.uac("008", &caller, 4000, 1, 1);
    // Once the kernel has the streams, a stranger in the caller's network
    // (the caller's own address, another port) sends to every RTP port.
    std::thread::sleep(Duration::from_millis(2000));
    assert!(n.kernel("relayed") > 0.0);
    let stranger = n.veths.udp_socket_in(
        &n.veths.caller_ns,
        SocketAddr::from((n.veths.caller, n.caller_port + 20)),
    );
    let mut spoof = vec![0x80, 0, 0, 1, 0, 0, 0, 160];
    spoof.extend_from_slice(&0xbad0_bad0u32.to_be_bytes());
    spoof.extend_from_slice(&[0xff; 160]);
    let ports = n.sip + 2..n.sip + 66;
    for port in ports.clone().step_by(2) {
        stranger
            .send_to(&spoof, SocketAddr::from((n.veths.host_caller, port)))
            .unwrap();
    }
    uac.wait_success(Duration::from_secs(30));
    uas.wait_success(Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        rtp_of(&cap.stop(), 0xbad0_bad0).is_empty(),
        "a stranger's packet reached the callee"
    );
    let wrong = n.metric("earshot_rtp_dropped_packets_total{reason=\"wrong_source\"}");
    let unknown = n.metric("earshot_rtp_dropped_packets_total{reason=\"unknown_port\"}");
    assert_eq!(wrong + unknown, ports.len().div_ceil(2) as f64);
    assert!(wrong >= 1.0, "the caller's port refused it");
    let (sidecar, left, _) = only_recording(&n);
    assert_eq!(sidecar["complete"], true);
    assert!(tone_share(&left, CALLER_HZ) > 0.8);
}

/// A ring far too small for the load loses copies: every packet still
/// reaches the callee (a full ring never stalls forwarding), the loss is
/// counted and each recording that lost some says so.
#[test]
fn a_full_ring_loses_copies_not_packets_and_the_recordings_say_so() {
    let n = net(
        "fastpath-ring",
        "Required",
        ", kernelRingBytes: 4096",
        "shards: 1\n",
    );
    let calls = 12;
    let caller = RtpStream::new(0x7777).tone(CALLER_HZ, 3000);
    let callee = RtpStream::new(0x8888).tone(CALLEE_HZ, 3000);
    let heard = n.capture_callee(n.callee_port + 2);
    let mut uas = n.uas(&callee, calls);
    let mut uac = n.uac("008", &caller, 3000, calls, calls);
    uac.wait_success(Duration::from_secs(60));
    uas.wait_success(Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(300));
    let got: Vec<_> = heard
        .stop()
        .into_iter()
        .filter(|p| ssrc_of(p) == Some(0x7777))
        .collect();
    assert_eq!(
        got.len(),
        caller.len() * calls,
        "every packet reached the callee"
    );
    assert!(got.iter().all(|p| p.checksum_ok), "every checksum right");
    let lost = n.kernel("copies_lost");
    assert!(lost > 0.0, "a 4 KiB ring held every copy of {calls} calls");
    let recs = n.recorder.wait_recordings(calls, Duration::from_secs(30));
    let marked = recs
        .iter()
        .filter(|(_, s)| {
            s["complete"] == false
                && s["incompleteReasons"]
                    .as_array()
                    .is_some_and(|r| r.iter().any(|w| w == "kernel_copies_lost"))
                && s["truncated"]
                    .as_str()
                    .is_some_and(|t| t.contains("kernel fast path"))
        })
        .count();
    assert!(marked >= 1, "no recording says it lost copies: {recs:?}");
    assert_eq!(
        n.metric("earshot_recordings_total{result=\"completed\"}") as usize + marked,
        calls,
        "every recording either complete or marked"
    );
}

/// A loopback config with the fast path `mode`, for a process without the
/// capabilities.
fn unprivileged_config(dir: &Path, mode: &str) -> (String, SocketAddr, SocketAddr) {
    let base = free_ports(16);
    let (sip, http) = (
        SocketAddr::from(([127, 0, 0, 1], base)),
        SocketAddr::from(([127, 0, 0, 1], base + 1)),
    );
    let yaml = format!(
        "sip: {{ listen: \"{sip}\" }}
advertisedAddress: 127.0.0.1
rtp: {{ bind: 127.0.0.1, portMin: {}, portMax: {}, kernelFastPath: {mode} }}
http: {{ listen: \"{http}\" }}
peers:
  - {{ name: pbx, sources: [\"127.0.0.1/32\"], nextHop: \"127.0.0.1:{}\" }}
users:
  - {{ extension: \"008\", mode: Always }}
events: {{ path: \"{}\" }}
spool: {{ dir: \"{}\" }}
storage: {{ filesystem: {{ path: \"{}\" }} }}
",
        base + 2,
        base + 9,
        base + 12,
        dir.join("events.jsonl").display(),
        dir.join("spool").display(),
        dir.join("store").display(),
    );
    (yaml, sip, http)
}

/// Without CAP_BPF and CAP_NET_ADMIN (the recorder as `nobody`): `Auto`
/// relays in userspace and says so at start and in `/metrics`; `Required`
/// does not start, and says why.
#[test]
fn without_the_capabilities_auto_falls_back_and_required_does_not_start() {
    earshot_tests::require("setpriv");
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("fastpath-unprivileged");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let wrapper = setpriv_wrapper(
        dir.path(),
        "as-nobody.sh",
        "--reuid=65534 --regid=65534 --clear-groups --inh-caps=-all --bounding-set=-all",
    );

    let (yaml, sip, http) = unprivileged_config(dir.path(), "Auto");
    let mut auto = RecorderProcess::launch(&wrapper, dir.path(), &yaml, sip, http, &[]);
    assert_eq!(
        auto.metric("earshot_kernel_fast_path{state=\"unavailable\"}"),
        1.0
    );
    assert_eq!(
        auto.metric("earshot_kernel_fast_path{state=\"active\"}"),
        0.0
    );
    let log = auto.log_text();
    assert!(
        log.contains("kernel fast path unavailable") && log.contains("userspace"),
        "{log}"
    );
    auto.terminate();

    let (yaml, _, _) = unprivileged_config(dir.path(), "Required");
    let config = dir.path().join("required.yaml");
    std::fs::write(&config, yaml).unwrap();
    let out = std::process::Command::new(&wrapper)
        .arg("--config")
        .arg(&config)
        .output()
        .expect("run the recorder");
    assert!(!out.status.success(), "a Required fast path it cannot load");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("kernelFastPath is Required") && err.contains("CAP_BPF"),
        "{err}"
    );
}
