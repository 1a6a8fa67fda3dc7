//! What the recorder's end-to-end suites share: a recorder process and SIPp
//! peers wired together on loopback.
#![allow(dead_code)] // each suite uses a different part

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use earshot_tests::pcap::RtpStream;
use earshot_tests::{
    RecorderProcess, Sipp, SippProcess, TempDir, TestUser, free_ports, parse_metric,
};

pub const BINARY: &str = env!("CARGO_BIN_EXE_earshot-recorder");

pub fn users() -> Vec<TestUser<'static>> {
    vec![
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
    ]
}

pub struct Setup {
    pub dir: TempDir,
    pub recorder: RecorderProcess,
    pub ports: u16,
}

pub fn setup(name: &str, users: &[TestUser]) -> Setup {
    setup_with(name, users, None, &[])
}

/// A setup whose recorder config gets `extra_yaml` (top-level sections) and
/// whose directory first gets `files` (name, bytes), e.g. a prompt.
pub fn setup_extra(
    name: &str,
    users: &[TestUser],
    extra_yaml: &str,
    files: &[(&str, &[u8])],
) -> Setup {
    earshot_tests::require("sipp");
    let dir = TempDir::new(name);
    for (file, bytes) in files {
        std::fs::write(dir.path().join(file), bytes).unwrap();
    }
    let ports = free_ports(32);
    let uas = SocketAddr::from(([127, 0, 0, 1], ports));
    let recorder = RecorderProcess::start_configured(
        Path::new(BINARY),
        dir.path(),
        uas,
        users,
        None,
        &[],
        510,
        extra_yaml,
    );
    Setup {
        dir,
        recorder,
        ports,
    }
}

/// A setup whose recorder's next hop is what `next_hop` makes of the
/// callee SIPp's port (a trunk in front of it, say).
pub fn setup_via(
    name: &str,
    users: &[TestUser],
    next_hop: impl FnOnce(u16) -> SocketAddr,
) -> Setup {
    earshot_tests::require("sipp");
    let dir = TempDir::new(name);
    let ports = free_ports(32);
    let hop = next_hop(ports);
    let recorder = RecorderProcess::start(Path::new(BINARY), dir.path(), hop, users);
    Setup {
        dir,
        recorder,
        ports,
    }
}

/// A setup whose recorder stores recordings as `storage` says (YAML), with extra environment.
pub fn setup_with(
    name: &str,
    users: &[TestUser],
    storage: Option<&str>,
    env: &[(&str, &str)],
) -> Setup {
    earshot_tests::require("sipp");
    let dir = TempDir::new(name);
    let ports = free_ports(32);
    let uas = SocketAddr::from(([127, 0, 0, 1], ports));
    let recorder =
        RecorderProcess::start_with(Path::new(BINARY), dir.path(), uas, users, storage, env);
    Setup {
        dir,
        recorder,
        ports,
    }
}

impl Setup {
    pub fn pcap(&self, name: &str, stream: &RtpStream) -> String {
        let path = self.dir.path().join(name);
        stream.write(&path).unwrap();
        path.display().to_string()
    }

    pub fn uas(&self, scenario: &str, pcap: &str, calls: usize) -> SippProcess {
        self.uas_with(scenario, pcap, calls, Vec::new())
    }

    /// The callee, with more scenario values (`PT`, `CODEC`).
    pub fn uas_with(
        &self,
        scenario: &str,
        pcap: &str,
        calls: usize,
        vars: Vec<(&str, String)>,
    ) -> SippProcess {
        let mut all = vec![("PCAP", pcap.to_owned())];
        all.extend(vars);
        let uas = Sipp {
            scenario,
            vars: all,
            args: vec!["-m".into(), calls.to_string()],
            port: self.ports,
            media_port: self.ports + 2,
            control_port: self.ports + 6,
        }
        .spawn(self.dir.path(), &format!("uas-{scenario}"));
        std::thread::sleep(Duration::from_millis(300));
        uas
    }

    /// A caller sending through the recorder; `offset` separates concurrent callers' ports.
    pub fn uac_at(
        &self,
        offset: u16,
        scenario: &str,
        from: &str,
        to: &str,
        vars: Vec<(&str, String)>,
        extra: &[&str],
    ) -> SippProcess {
        let mut all = vec![("FROM", from.to_owned())];
        all.extend(vars);
        let mut args: Vec<String> = vec![
            "-rsa".into(),
            self.recorder.sip.to_string(),
            "-s".into(),
            to.into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        args.push(format!("127.0.0.1:{}", self.ports));
        Sipp {
            scenario,
            vars: all,
            args,
            port: self.ports + 8 + offset,
            media_port: self.ports + 10 + offset,
            control_port: self.ports + 14 + offset,
        }
        .spawn(self.dir.path(), &format!("uac-{offset}-{from}-{to}"))
    }

    pub fn uac(
        &self,
        scenario: &str,
        from: &str,
        to: &str,
        vars: Vec<(&str, String)>,
        extra: &[&str],
    ) -> SippProcess {
        self.uac_at(0, scenario, from, to, vars, extra)
    }

    /// Starts `calls` calls from `from` to `to` through the recorder, at most
    /// `at_once` at a time: the callee plays `callee`, each caller plays
    /// `caller`, talks `talk_ms` (then `midcall` scenario steps, if any) and
    /// hangs up. Returns (caller, callee) SIPps without waiting for them.
    #[allow(clippy::too_many_arguments)]
    pub fn start_calls(
        &self,
        from: &str,
        to: &str,
        caller: &RtpStream,
        callee: &RtpStream,
        talk_ms: u64,
        calls: usize,
        at_once: usize,
        midcall: Option<String>,
    ) -> (SippProcess, SippProcess) {
        let uas = self.uas(
            "uas.xml",
            &self.pcap(&format!("callee-{from}.pcap"), callee),
            calls,
        );
        let mut vars = vec![
            ("PCAP", self.pcap(&format!("caller-{from}.pcap"), caller)),
            ("TALK_MS", talk_ms.to_string()),
        ];
        if let Some(m) = midcall {
            vars.push(("MIDCALL", m));
        }
        let (calls, at_once, rate) = (
            calls.to_string(),
            at_once.to_string(),
            (at_once / 2).max(1).to_string(),
        );
        let uac = self.uac(
            "uac.xml",
            from,
            to,
            vars,
            &["-m", &calls, "-l", &at_once, "-r", &rate],
        );
        (uac, uas)
    }

    /// One call, as [`start_calls`](Self::start_calls), waiting until both SIPps succeed.
    pub fn call(
        &self,
        from: &str,
        to: &str,
        caller: &RtpStream,
        callee: &RtpStream,
        talk_ms: u64,
        midcall: Option<String>,
    ) {
        let (mut uac, mut uas) = self.start_calls(from, to, caller, callee, talk_ms, 1, 1, midcall);
        uac.wait_success(Duration::from_secs(60));
        uas.wait_success(Duration::from_secs(10));
    }

    pub fn metric(&self, series: &str) -> f64 {
        self.recorder.metric(series)
    }

    pub fn assert_no_rtp_loss(&self, caller_packets: usize, callee_packets: usize, calls: usize) {
        // Give the last packets a moment to pass the relay.
        std::thread::sleep(Duration::from_millis(300));
        let text = self.recorder.metrics_text();
        let up = parse_metric(
            &text,
            "earshot_rtp_packets_total{direction=\"caller_to_callee\"}",
        );
        let down = parse_metric(
            &text,
            "earshot_rtp_packets_total{direction=\"callee_to_caller\"}",
        );
        let dropped: f64 = text
            .lines()
            .filter(|l| l.starts_with("earshot_rtp_dropped_packets_total"))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum();
        assert_eq!(
            up as usize,
            caller_packets * calls,
            "every caller packet relayed\n{text}"
        );
        assert_eq!(
            down as usize,
            callee_packets * calls,
            "every callee packet relayed\n{text}"
        );
        assert_eq!(dropped, 0.0, "no packet dropped\n{text}");
        if std::env::var_os("EARSHOT_KERNEL_FAST_PATH").is_some() {
            // With the fast path, the kernel relayed most of it: all but
            // the first packets of each stream, which latch it.
            let kernel = parse_metric(&text, "earshot_kernel_packets_total{result=\"relayed\"}");
            let all = up + down;
            let userspace_at_most =
                (2 * earshot_recorder_core::engine::OFFLOAD_AFTER as usize + 4) * calls;
            assert!(
                kernel >= all - userspace_at_most as f64,
                "the kernel relayed {kernel} of {all} packets\n{text}"
            );
        }
    }
}

/// The callee's and the caller's media ports (SIPp uas and uac of `Setup`).
pub fn media_ports(s: &Setup) -> (u16, u16) {
    (s.ports + 2, s.ports + 10)
}

/// tcpdump capturing what both parties receive.
pub fn capture(s: &Setup) -> earshot_tests::pcap::Tcpdump {
    let (callee, caller) = media_ports(s);
    earshot_tests::pcap::Tcpdump::start(
        &s.dir.path().join("heard.pcap"),
        &format!("udp and (dst port {callee} or dst port {caller})"),
    )
}

pub fn seconds(a: SystemTime, b: SystemTime) -> f64 {
    b.duration_since(a).unwrap_or_default().as_secs_f64()
}

pub fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !f() {
        assert!(Instant::now() < deadline, "{what}: not within 15 s");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Scenario steps for a hold (re-INVITE `sendonly`) lasting `hold_ms`, then a
/// resume (`sendrecv`) followed by `after_ms` of talk.
pub fn hold_and_resume(hold_ms: u64, after_ms: u64) -> String {
    let fragment =
        std::fs::read_to_string(earshot_tests::repo().join("tests/sipp/hold.fragment.xml"))
            .unwrap();
    let step = |cseq: &str, ver: &str, dir: &str, pause: u64| {
        fragment
            .replace("@CSEQ@", cseq)
            .replace("@SDPVER@", ver)
            .replace("@DIRECTION@", dir)
            .replace("@PAUSE_MS@", &pause.to_string())
    };
    format!(
        "{}{}",
        step("2", "2353687638", "sendonly", hold_ms),
        step("3", "2353687639", "sendrecv", after_ms)
    )
}

/// The one recording among `keys` (an MP3 and its sidecar) in `g`'s
/// bucket: under `prefix`, the sidecar naming the MP3 and its size, the MP3
/// (decoded by ffmpeg, downloaded into `dir`) as long as the sidecar's call.
/// Returns the sidecar and the decoded channels.
#[allow(dead_code)] // not every suite stores to S3
pub fn stored_recording(
    g: &earshot_tests::garage::Garage,
    keys: &[String],
    prefix: &str,
    dir: &Path,
) -> (serde_json::Value, Vec<i16>, Vec<i16>) {
    let mp3_key = keys.iter().find(|k| k.ends_with(".mp3")).expect("an MP3");
    let json_key = keys
        .iter()
        .find(|k| k.ends_with(".json"))
        .expect("a sidecar");
    assert!(mp3_key.starts_with(prefix), "{mp3_key}");
    let sidecar: serde_json::Value = serde_json::from_slice(&g.get(json_key)).unwrap();
    assert_eq!(sidecar["mp3"]["object"].as_str(), Some(mp3_key.as_str()));
    let mp3 = g.get(mp3_key);
    assert_eq!(sidecar["mp3"]["bytes"], mp3.len());
    let local = dir.join("downloaded.mp3");
    std::fs::write(&local, &mp3).unwrap();
    let (left, right) = earshot_tests::decode_mp3(&local);
    let file = left.len() as f64 / 8000.0;
    let call = sidecar["durationSeconds"].as_f64().unwrap();
    assert!(
        (file - call).abs() < 0.1,
        "file {file:.3} s, call {call:.3} s"
    );
    (sidecar, left, right)
}
