//! One recorder process the way it lives: hundreds of calls of every kind —
//! Always, On demand toggled once or twice, Never, unknown callers, the far
//! end keying the code, CANCEL, hold and resume, the callee hanging up,
//! challenged and retried, forked, 100rel/PRACK/UPDATE, delayed offer,
//! session refreshes, redirected, transferred,
//! PCMU, PCMA and G.722 with an A-law callee, SDES-SRTP (AES-CM and
//! AES-GCM) and SIP over TLS, one at a time and 50 at once — into a real S3 server,
//! with a `kill -9` and restart in the middle of a burst and the store
//! stopped for 30 s. An oracle reads the event log (each call whose
//! recording was switched on is an expected recording; its `on` intervals
//! are its expected length) and compares it one by one with what the bucket
//! holds: nothing missing, nothing twice, nothing unexpected, every length
//! within 0.2 s (the calls the kill cut: truncated, within the documented
//! loss), the bytes matching their sidecar.
//!
//! `make soak` runs the same mix for an hour or more ([`soak`]).

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use common::*;
use earshot_contracts::sidecar::Sidecar;
use earshot_recorder_core::srtp::{SdesKey, Suite};
use earshot_tests::baresip::tls_srtp_pair;
use earshot_tests::garage::Garage;
use earshot_tests::pcap::{RtpStream, ffmpeg_encode, ffmpeg_opus_with};
use earshot_tests::{RecorderProcess, Sipp, SippProcess, TestUser, free_ports, parse_metric};

/// Longest audio a process crash may take with it (docs/recordings.md
/// promises at most 2 s, the disk flush interval).
const CRASH_LOSS: f64 = 2.0;
/// How far a complete recording's length may be from its intervals.
const LENGTH_SLACK: f64 = 0.2;
const PREFIX: &str = "acme/office/";

fn lifetime_users() -> Vec<TestUser<'static>> {
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

/// A batch of calls of one kind.
struct Phase<'a> {
    name: &'a str,
    uas: &'a str,
    uac: &'a str,
    from: &'a str,
    caller: RtpStream,
    callee: RtpStream,
    /// Caller talk time (uac.xml) or callee talk time (uas_bye.xml).
    talk_ms: u64,
    midcall: Option<String>,
    /// SDP values (`PT`, `CODEC`) of the caller's and the callee's
    /// scenario; empty for PCMU.
    caller_sdp: Vec<(&'static str, String)>,
    callee_sdp: Vec<(&'static str, String)>,
    calls: usize,
    at_once: usize,
}

/// The recorder, Garage and the SIPp port block, with what was seen so far.
struct Life {
    s: Setup,
    garage: Garage,
    /// The test CA and the recorder's and softphones' certificates.
    certs: std::path::PathBuf,
    /// The recorder's SIP-over-TLS port.
    tls_port: u16,
    /// When the recorder was killed, for the oracle.
    kills: Vec<SystemTime>,
    /// When calls with encrypted media were made (caller 440 Hz, callee
    /// 1 kHz): the oracle decodes their recordings.
    secure: Vec<(SystemTime, SystemTime)>,
    calls: usize,
    round: usize,
}

impl Life {
    fn start(name: &str) -> Life {
        earshot_tests::require("sipp");
        earshot_tests::require("baresip");
        let dir = earshot_tests::TempDir::new(&format!("{name}-garage"));
        let garage = Garage::start(&dir.path().join("garage"), "recordings");
        let storage = garage.storage_yaml(PREFIX);
        let env = garage.env();
        // The recorder listens for SIP over TLS too (the TLS phase).
        let work = earshot_tests::TempDir::new(name);
        let certs = work.path().join("certs");
        earshot_tests::test_certificates(&certs, &["recorder", "callee", "caller"]);
        let tls_port = free_ports(1);
        let tls = format!(
            "{{ port: {tls_port}, certificate: \"{}\", key: \"{}\", ca: \"{}\" }}",
            certs.join("recorder.crt").display(),
            certs.join("recorder.key").display(),
            certs.join("ca.crt").display()
        );
        let ports = free_ports(32);
        let recorder = RecorderProcess::start_with_tls(
            Path::new(BINARY),
            work.path(),
            SocketAddr::from(([127, 0, 0, 1], ports)),
            &lifetime_users(),
            Some(&storage),
            &env,
            &tls,
            // The whole life with established streams relayed in the
            // kernel (on loopback: rewritten and delivered, no route).
            "Required",
        );
        // SIPp is also a session recording client (the SIPREC phases).
        std::fs::write(
            &recorder.config,
            std::fs::read_to_string(&recorder.config).unwrap().replacen(
                "nextHopTransport: UDP }",
                "nextHopTransport: UDP, siprec: true }",
                1,
            ),
        )
        .unwrap();
        let s = Setup {
            dir: work,
            recorder,
            ports,
        };
        // The Garage data directory lives as long as the test.
        std::mem::forget(dir);
        Life {
            s,
            garage,
            certs,
            tls_port,
            kills: Vec::new(),
            secure: Vec::new(),
            calls: 0,
            round: 0,
        }
    }

    fn spawn(&self, phase: &Phase) -> (SippProcess, SippProcess) {
        let tag = format!("{}-{}", self.round, phase.name);
        let pcap = |who: &str, stream: &RtpStream| {
            let p = self.s.dir.path().join(format!("{tag}-{who}.pcap"));
            stream.write(&p).unwrap();
            p.display().to_string()
        };
        let mut uas_vars = vec![
            ("PCAP", pcap("callee", &phase.callee)),
            ("TALK_MS", phase.talk_ms.to_string()),
        ];
        uas_vars.extend(phase.callee_sdp.iter().cloned());
        let ports = self.s.ports;
        let uas = Sipp {
            scenario: phase.uas,
            vars: uas_vars,
            args: vec!["-m".into(), phase.calls.to_string()],
            port: ports,
            media_port: ports + 2,
            control_port: ports + 6,
        }
        .spawn(self.s.dir.path(), &format!("uas-{tag}"));
        std::thread::sleep(Duration::from_millis(300));
        let mut vars = vec![
            ("FROM", phase.from.to_owned()),
            ("PCAP", pcap("caller", &phase.caller)),
            ("TALK_MS", phase.talk_ms.to_string()),
        ];
        if let Some(m) = &phase.midcall {
            vars.push(("MIDCALL", m.clone()));
        }
        vars.extend(phase.caller_sdp.iter().cloned());
        let rate = (phase.at_once / 2).max(1);
        let uac = Sipp {
            scenario: phase.uac,
            vars,
            args: vec![
                "-rsa".into(),
                self.s.recorder.sip.to_string(),
                "-s".into(),
                "500".into(),
                "-m".into(),
                phase.calls.to_string(),
                "-l".into(),
                phase.at_once.to_string(),
                "-r".into(),
                rate.to_string(),
                SocketAddr::from(([127, 0, 0, 1], ports)).to_string(),
            ],
            port: ports + 8,
            media_port: ports + 10,
            control_port: ports + 14,
        }
        .spawn(self.s.dir.path(), &format!("uac-{tag}"));
        (uac, uas)
    }

    fn run(&mut self, phase: Phase) {
        let (mut uac, mut uas) = self.spawn(&phase);
        uac.wait_success(Duration::from_secs(180));
        uas.wait_success(Duration::from_secs(30));
        self.calls += phase.calls;
    }

    /// A burst whose recorder is killed (SIGKILL) once its calls are
    /// answered and recorded for a while, then started again.
    fn run_killed(&mut self, phase: Phase, after: Duration) {
        let (mut uac, mut uas) = self.spawn(&phase);
        std::thread::sleep(after);
        self.kills.push(SystemTime::now());
        self.s.recorder.kill9();
        // The calls it carried are gone with it.
        uac.stop();
        uas.stop();
        self.calls += phase.calls;
        self.s.recorder.restart(Path::new(BINARY));
    }

    /// `calls` softphone calls (baresip: its own packet clock, its own SDES
    /// keys) over SIP over TLS on both hops with SDES-SRTP, each talking
    /// `talk`: the
    /// recorder's next hop is switched to the callee's TLS port by a config
    /// reload, and back to SIPp after.
    fn run_tls(&mut self, calls: usize, talk: Duration) {
        let config = self.s.dir.path().join("recorder.yaml");
        let base = free_ports(40);
        let callee_tls = SocketAddr::from(([127, 0, 0, 1], base + 1));
        let sipp_hop = format!(
            "nextHop: \"127.0.0.1:{}\", nextHopTransport: UDP",
            self.s.ports
        );
        let tls_hop = format!("nextHop: \"{callee_tls}\", nextHopTransport: TLS");
        self.reconfigure(&config, &sipp_hop, &tls_hop);
        let dir = self.s.dir.path().join(format!("tls-{}", self.round));
        let proxy = SocketAddr::from(([127, 0, 0, 1], self.tls_port));
        let (callee, caller) = tls_srtp_pair(&dir, &self.certs, base, proxy);
        for _ in 0..calls {
            caller.dial(&callee.uri());
            caller.expect_event("CALL_ESTABLISHED", Duration::from_secs(10));
            std::thread::sleep(talk);
            caller.hangup();
            caller.expect_event("CALL_CLOSED", Duration::from_secs(10));
            callee.expect_event("CALL_CLOSED", Duration::from_secs(10));
        }
        drop((caller, callee));
        self.reconfigure(&config, &tls_hop, &sipp_hop);
        self.calls += calls;
    }

    /// `calls` SIPREC recording sessions, `at_once` at a time, from SIPp
    /// as a session recording client (the SIPp peer is marked `siprec`):
    /// the caller `from` talks `talk_ms` on the stream labelled 1.
    #[allow(clippy::too_many_arguments)]
    fn run_siprec(
        &mut self,
        name: &str,
        from: &str,
        calls: usize,
        at_once: usize,
        talk_ms: u64,
        srtp: Option<&SdesKey>,
        g722: bool,
    ) {
        let tag = format!("{}-{name}", self.round);
        let pcap = self.s.dir.path().join(format!("{tag}.pcap"));
        let stream = if g722 {
            let seconds = talk_ms as f64 / 1000.0;
            RtpStream::new(21).encoded(
                9,
                &ffmpeg_encode("0.3*sin(2*PI*440*t)", 16000, seconds, "g722", "g722"),
                160,
            )
        } else {
            tone(20, 440.0, talk_ms)
        };
        match srtp {
            Some(key) => stream.protected(key),
            None => stream,
        }
        .write(&pcap)
        .unwrap();
        let mut sdp = Vec::new();
        if g722 {
            sdp.extend(self::sdp(9, "G722"));
        }
        if let Some(key) = srtp {
            sdp.push(("PROFILE", "RTP/SAVP".to_owned()));
            sdp.push(("SDP_EXTRA", format!("\na=crypto:{}", key.to_attribute())));
        }
        let ports = self.s.ports;
        let mut src = Sipp {
            scenario: "uac_siprec.xml",
            vars: vec![
                ("FROM", from.to_owned()),
                ("CALLEE", "+15550100999".to_owned()),
                ("PCAP", pcap.display().to_string()),
                ("TALK_MS", talk_ms.to_string()),
            ]
            .into_iter()
            .chain(sdp)
            .collect(),
            args: vec![
                "-m".into(),
                calls.to_string(),
                "-l".into(),
                at_once.to_string(),
                "-r".into(),
                (at_once / 2).max(1).to_string(),
                self.s.recorder.sip.to_string(),
            ],
            port: ports + 8,
            media_port: ports + 10,
            control_port: ports + 14,
        }
        .spawn(self.s.dir.path(), &format!("src-{tag}"));
        src.wait_success(Duration::from_secs(120));
        self.calls += calls;
    }

    /// Replaces `from` by `to` in the config file and waits for the
    /// recorder to apply it.
    fn reconfigure(&self, path: &Path, from: &str, to: &str) {
        let applied = "earshot_config_reloads_total{result=\"applied\"}";
        let before = self.metric(applied);
        let text = std::fs::read_to_string(path).unwrap();
        assert!(text.contains(from), "{from} in the config");
        std::fs::write(path, text.replace(from, to)).unwrap();
        wait_for_within("the config reloaded", Duration::from_secs(15), || {
            self.metric(applied) > before
        });
    }

    fn metric(&self, series: &str) -> f64 {
        parse_metric(&self.s.recorder.metrics_text(), series)
    }
}

/// 1 s of talk, then the shortcode; optionally again after 2 s.
fn shortcode_caller(ssrc: u32, twice: bool) -> RtpStream {
    let on = RtpStream::new(ssrc)
        .tone(440.0, 1000)
        .key('*', 100)
        .tone(0.0, 100)
        .key('5', 100)
        .tone(440.0, 2000);
    if twice {
        on.key('*', 100)
            .tone(0.0, 100)
            .key('5', 100)
            .tone(440.0, 1000)
    } else {
        on.tone(440.0, 1300)
    }
}

fn sdp(pt: u8, codec: &str) -> Vec<(&'static str, String)> {
    vec![("PT", pt.to_string()), ("CODEC", codec.to_owned())]
}

fn tone(ssrc: u32, freq: f64, ms: u64) -> RtpStream {
    RtpStream::new(ssrc).tone(freq, ms)
}

/// One round of the mix; returns the calls it made.
fn round(life: &mut Life, with_kill: bool, with_outage: bool) {
    let always = |name, calls, at_once, talk_ms| Phase {
        name,
        uas: "uas.xml",
        uac: "uac.xml",
        from: "008",
        caller: tone(1, 440.0, talk_ms),
        callee: tone(2, 1000.0, talk_ms),
        talk_ms,
        midcall: None,
        caller_sdp: Vec::new(),
        callee_sdp: Vec::new(),
        calls,
        at_once,
    };
    life.run(always("one-at-a-time", 8, 1, 1200));
    life.run(always("fifty-at-once", 50, 50, 3000));
    life.run(Phase {
        caller_sdp: sdp(8, "PCMA"),
        callee_sdp: sdp(8, "PCMA"),
        // A-law from the first packet (`alaw` applies to what follows).
        caller: RtpStream::new(3).alaw().tone(440.0, 2500),
        callee: RtpStream::new(4).alaw().tone(1000.0, 2500),
        ..always("pcma", 30, 15, 2500)
    });
    // Wideband: a G.722 caller (ffmpeg's encoder) and an A-law callee, so
    // every round builds and drops 16 kHz decoders and resamplers.
    life.run(Phase {
        caller_sdp: sdp(9, "G722"),
        callee_sdp: sdp(8, "PCMA"),
        caller: RtpStream::new(10).encoded(
            9,
            &ffmpeg_encode("0.3*sin(2*PI*440*t)", 16000, 2.5, "g722", "g722"),
            160,
        ),
        callee: RtpStream::new(11).alaw().tone(1000.0, 2500),
        ..always("g722-pcma", 20, 10, 2400)
    });
    // Opus both ways (48 kHz clock), the caller sending in-band FEC with
    // every 10th packet lost: libopus decoders made and dropped, and lost
    // packets rebuilt, in the same long-lived process.
    let opus = |hz: f64, ssrc: u32, fec: &[&str]| {
        let packets = ffmpeg_opus_with(&format!("0.3*sin(2*PI*{hz}*t)"), 2.5, fec);
        let refs: Vec<&[u8]> = packets.iter().map(Vec::as_slice).collect();
        RtpStream::new(ssrc).clock(48000).packets_of(111, &refs)
    };
    let opus_sdp = || {
        vec![
            ("PT", "111".to_owned()),
            ("CODEC", "opus".to_owned()),
            ("CLOCK", "48000/2".to_owned()),
            ("EVENT_CLOCK", "48000".to_owned()),
        ]
    };
    let rebuilt = life.metric("earshot_recording_rebuilt_packets_total");
    life.run(Phase {
        caller_sdp: opus_sdp(),
        callee_sdp: opus_sdp(),
        caller: opus(440.0, 12, &["-fec", "1", "-packet_loss", "10"]).drop_every(10),
        callee: opus(1000.0, 13, &[]),
        ..always("opus-lossy", 20, 10, 2400)
    });
    assert!(
        life.metric("earshot_recording_rebuilt_packets_total") - rebuilt >= 20.0,
        "lost Opus packets rebuilt in this process"
    );
    life.run(Phase {
        from: "012",
        caller: shortcode_caller(5, true),
        callee: tone(6, 1000.0, 5000),
        ..always("on-demand-twice", 30, 15, 4600)
    });
    life.run(Phase {
        from: "012",
        caller: shortcode_caller(7, false),
        callee: tone(8, 1000.0, 5000),
        ..always("on-demand-once", 20, 10, 4600)
    });
    life.run(Phase {
        from: "003",
        ..always("never", 20, 20, 1500)
    });
    life.run(Phase {
        from: "777",
        ..always("unknown", 20, 20, 1500)
    });
    life.run(Phase {
        from: "012",
        // The far end keys the caller's code: nothing is recorded.
        callee: RtpStream::new(9)
            .tone(1000.0, 500)
            .key('*', 100)
            .tone(0.0, 100)
            .key('5', 100)
            .tone(1000.0, 1500),
        ..always("far-end-keys", 20, 10, 2500)
    });
    life.run(Phase {
        uas: "uas_ring.xml",
        uac: "uac_cancel.xml",
        ..always("cancel", 20, 10, 1000)
    });
    life.run(Phase {
        midcall: Some(hold_and_resume(1500, 1000)),
        ..always("hold-resume", 20, 10, 1000)
    });
    life.run(Phase {
        uas: "uas_bye.xml",
        uac: "uac_wait.xml",
        ..always("callee-hangs-up", 20, 10, 2000)
    });
    // Secure media as PBXes and trunks offer it: SDES-SRTP both ways from
    // pcaps encrypted under the key each side's SDP announces (AES-CM with
    // HMAC-SHA1-80, then AES-128-GCM), and optional keys (`RTP/AVP` with
    // `a=crypto`) answered without one, so plain RTP both ways. Every
    // packet decrypts; a recording that did not would be marked incomplete
    // and fail the oracle.
    let failures = "earshot_srtp_unprotect_failures_total";
    let encrypted = "earshot_recordings_total{result=\"encrypted\"}";
    let (failed_before, encrypted_before) = (life.metric(failures), life.metric(encrypted));
    let secure_from = SystemTime::now();
    let sdes = |suite: Suite, byte: u8| {
        let bytes = vec![byte; suite.master_key_len() + suite.master_salt_len()];
        SdesKey::new(1, suite, &bytes).unwrap()
    };
    let secure = |profile: &str, key: &SdesKey| {
        vec![
            ("PROFILE", profile.to_owned()),
            ("SDP_EXTRA", format!("\na=crypto:{}", key.to_attribute())),
        ]
    };
    for (name, suite, ssrc) in [
        ("srtp-aes-cm", Suite::AesCm128HmacSha1_80, 14),
        ("srtp-aes-gcm", Suite::AeadAes128Gcm, 16),
    ] {
        let (offer, answer) = (sdes(suite, 0x11), sdes(suite, 0x22));
        life.run(Phase {
            caller_sdp: secure("RTP/SAVP", &offer),
            callee_sdp: secure("RTP/SAVP", &answer),
            caller: tone(ssrc, 440.0, 2500).protected(&offer),
            callee: tone(ssrc + 1, 1000.0, 2500).protected(&answer),
            ..always(name, 10, 5, 2400)
        });
    }
    life.run(Phase {
        caller_sdp: secure("RTP/AVP", &sdes(Suite::AesCm128HmacSha1_80, 0x33)),
        ..always("sdes-declined", 10, 5, 2000)
    });
    life.run_tls(2, Duration::from_secs(3));
    life.secure.push((secure_from, SystemTime::now()));
    assert_eq!(life.metric(failures), failed_before, "SRTP failures");
    assert_eq!(life.metric(encrypted), encrypted_before, "marked encrypted");
    // SIP as the field sends it, through the same process.
    let vars = |v: &[(&'static str, &str)]| -> Vec<(&'static str, String)> {
        v.iter().map(|(k, x)| (*k, (*x).to_owned())).collect()
    };
    let auth = vars(&[("AUTH_USER", "pbx"), ("AUTH_PASS", "pw")]);
    life.run(Phase {
        uas: "uas_auth.xml",
        uac: "uac_auth.xml",
        caller_sdp: auth.clone(),
        callee_sdp: auth,
        ..always("challenged", 16, 8, 2000)
    });
    life.run(Phase {
        uas: "uas_fork.xml",
        uac: "uac_fork.xml",
        callee_sdp: vars(&[("RING_MS", "300")]),
        ..always("forked", 10, 5, 2000)
    });
    life.run(Phase {
        uas: "uas_prack.xml",
        uac: "uac_prack.xml",
        ..always("prack-update", 10, 5, 2000)
    });
    life.run(Phase {
        uas: "uas_delayed.xml",
        uac: "uac_delayed.xml",
        ..always("delayed-offer", 10, 5, 2000)
    });
    life.run(Phase {
        uas: "uas_timer.xml",
        uac: "uac_timer.xml",
        caller_sdp: vars(&[("REFRESH_MS", "600"), ("REFRESHES", "4")]),
        ..always("refreshes", 10, 5, 600)
    });
    life.run(Phase {
        uas: "uas_redirect.xml",
        uac: "uac_redirect.xml",
        callee_sdp: vars(&[("TARGET", "600")]),
        ..always("redirected", 10, 5, 2000)
    });
    life.run(Phase {
        uas: "uas_refer.xml",
        uac: "uac_refer.xml",
        callee_sdp: vars(&[("REFER_TARGET", "600")]),
        ..always("transferred", 10, 5, 2000)
    });
    // SIPREC: SIPp as an SBC forking its calls to the recorder, many
    // sessions at once, the same process recording them out of the path;
    // sessions of a Never user answered and not recorded.
    let sessions = life.metric("earshot_calls_total{result=\"answered\"}");
    let failed = life.metric("earshot_srtp_unprotect_failures_total");
    life.run_siprec("siprec", "008", 20, 10, 2000, None, false);
    life.run_siprec("siprec-never", "003", 10, 10, 1000, None, false);
    let key = SdesKey::new(1, Suite::AesCm128HmacSha1_80, &[0x44; 30]).unwrap();
    life.run_siprec("siprec-srtp", "008", 10, 5, 2000, Some(&key), false);
    // Wideband: G.722 from the SRC, a 16 kHz recording.
    life.run_siprec("siprec-g722", "008", 10, 5, 2400, None, true);
    assert_eq!(
        life.metric("earshot_calls_total{result=\"answered\"}") - sessions,
        50.0,
        "every recording session answered"
    );
    assert_eq!(
        life.metric("earshot_srtp_unprotect_failures_total"),
        failed,
        "the SRC's SRTP decrypted"
    );
    if with_kill {
        life.run_killed(always("killed", 20, 20, 10_000), Duration::from_secs(6));
    }
    if with_outage {
        // The store goes away for 30 s while calls are recorded.
        let down = Instant::now();
        life.garage.stop();
        life.run(always("store-down", 40, 20, 3000));
        wait_for_within(
            "recordings waiting in the spool",
            Duration::from_secs(30),
            || life.metric("earshot_spool_files") >= 40.0,
        );
        assert!(
            life.metric("earshot_upload_failures_total{reason=\"unavailable\"}") > 0.0,
            "uploads failed while the store was down"
        );
        std::thread::sleep(Duration::from_secs(30).saturating_sub(down.elapsed()));
        life.garage.restart();
    }
    life.round += 1;
}

fn wait_for_within(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// What the event log says should be in the store, by call hash.
#[derive(Debug, Default)]
struct Expected {
    /// Seconds recorded (the sum of the `on` intervals).
    seconds: f64,
    /// The recorder was killed while recording it.
    cut: bool,
}

/// Each call whose recording was switched on, with its on-time; an `on`
/// left open by a kill ends at the kill.
fn expected(events: &[serde_json::Value], kills: &[SystemTime]) -> BTreeMap<String, Expected> {
    let mut out: BTreeMap<String, Expected> = BTreeMap::new();
    let mut open: BTreeMap<String, SystemTime> = BTreeMap::new();
    let time = |e: &serde_json::Value| {
        humantime::parse_rfc3339(e["time"].as_str().unwrap()).expect("event time")
    };
    let mut kills = kills.to_vec();
    kills.sort();
    let mut next_kill = kills.into_iter().peekable();
    for e in events {
        let at = time(e);
        while let Some(&k) = next_kill.peek()
            && k <= at
        {
            // Everything open at the kill ends there, cut.
            for (call, on) in std::mem::take(&mut open) {
                let x = out.entry(call).or_default();
                x.seconds += k.duration_since(on).unwrap_or_default().as_secs_f64();
                x.cut = true;
            }
            next_kill.next();
        }
        if e["event"] != "recording" {
            continue;
        }
        let call = e["call"].as_str().unwrap().to_owned();
        if e["on"] == true {
            out.entry(call.clone()).or_default();
            open.entry(call).or_insert(at);
        } else if let Some(on) = open.remove(&call) {
            out.entry(call).or_default().seconds +=
                at.duration_since(on).unwrap_or_default().as_secs_f64();
        }
    }
    assert!(open.is_empty(), "recordings never switched off: {open:?}");
    out
}

/// What the oracle found: the figures the closing note and BENCHMARKS.md give.
#[derive(Debug, Default)]
struct Verdict {
    calls: usize,
    expected: usize,
    stored: usize,
    missing: Vec<String>,
    duplicates: Vec<String>,
    unexpected: Vec<String>,
    worst_length_error: f64,
    truncated: usize,
    /// Stored recordings by the caller's codec, as the sidecar names it.
    codecs: BTreeMap<String, usize>,
    /// Recordings of calls with encrypted media decoded and heard right.
    secure_heard: usize,
    /// Recordings of SIPREC sessions (their sidecar names the SRC's
    /// participants).
    siprec: usize,
}

fn check(life: &Life) -> Verdict {
    let want = expected(&life.s.recorder.events(), &life.kills);
    let keys = life.garage.list(PREFIX).unwrap();
    let mut stored: BTreeMap<String, Vec<Sidecar>> = BTreeMap::new();
    let mut v_secure_heard = 0;
    for key in keys.iter().filter(|k| k.ends_with(".json")) {
        let s = Sidecar::from_json(&life.garage.get(key)).expect("a sidecar");
        let mp3 = life.garage.get(&s.mp3.object);
        assert_eq!(
            mp3.len() as u64,
            s.mp3.bytes,
            "{key}: size as the sidecar says"
        );
        assert_eq!(
            earshot_tests::sha256_bytes(&mp3),
            s.mp3.sha256,
            "{key}: SHA-256 as the sidecar says"
        );
        let seconds = earshot_recorder::recording::mp3_duration(&mp3);
        assert!(
            (seconds - s.audio.duration_seconds).abs() < 0.05,
            "{key}: {seconds:.3} s of MP3 frames, the sidecar says {:.3}",
            s.audio.duration_seconds
        );
        let secure = s
            .started_at
            .is_some_and(|t| life.secure.iter().any(|(a, b)| (*a..=*b).contains(&t)));
        if secure {
            // Decrypted right: the caller's tone on the left, the callee's
            // on the right (noise from a wrong key would have neither).
            let file = life.s.dir.path().join("secure-check.mp3");
            std::fs::write(&file, &mp3).unwrap();
            let (left, right) = earshot_tests::decode_mp3_at(&file, 8000);
            let (l, r) = (
                &left[4000..left.len() - 4000],
                &right[4000..right.len() - 4000],
            );
            let power = |x: &[i16], hz| earshot_tests::tone_power_at(x, hz, 8000.0);
            assert!(
                power(l, 440.0) > 10.0 * power(l, 1000.0)
                    && power(r, 1000.0) > 10.0 * power(r, 440.0),
                "{key}: caller's tone left, callee's right"
            );
            v_secure_heard += 1;
        }
        stored.entry(s.call.clone()).or_default().push(s);
    }
    let mut v = Verdict {
        calls: life.calls,
        expected: want.len(),
        stored: stored.values().map(Vec::len).sum(),
        codecs: stored
            .values()
            .flatten()
            .filter_map(|s| s.audio.codecs.get("caller").cloned())
            .fold(BTreeMap::new(), |mut m, c| {
                *m.entry(c).or_default() += 1;
                m
            }),
        secure_heard: v_secure_heard,
        siprec: stored
            .values()
            .flatten()
            .filter(|s| s.siprec.as_ref().is_some_and(|x| x.participants.len() == 2))
            .count(),
        ..Verdict::default()
    };
    for (call, x) in &want {
        match stored.get(call).map(Vec::as_slice) {
            None | Some([]) => v.missing.push(call.clone()),
            Some([s]) => {
                let got = s.audio.duration_seconds;
                if x.cut {
                    v.truncated += 1;
                    assert!(!s.complete, "{call}: cut by the kill, so marked truncated");
                    assert!(
                        got <= x.seconds + LENGTH_SLACK && got >= x.seconds - CRASH_LOSS,
                        "{call}: {got:.2} s kept of {:.2} s before the kill",
                        x.seconds
                    );
                } else {
                    assert!(s.complete, "{call}: complete, not {:?}", s.truncated);
                    let err = (got - x.seconds).abs();
                    v.worst_length_error = v.worst_length_error.max(err);
                    assert!(
                        err <= LENGTH_SLACK,
                        "{call}: {got:.2} s stored, {:.2} s recorded",
                        x.seconds
                    );
                }
            }
            Some(_) => v.duplicates.push(call.clone()),
        }
    }
    v.unexpected = stored
        .keys()
        .filter(|c| !want.contains_key(*c))
        .cloned()
        .collect();
    v
}

fn settle(life: &Life) {
    // Everything expected by this process is stored (backoff after the
    // outage can be up to a minute), and the spool is empty.
    wait_for_within("every recording stored", Duration::from_secs(150), || {
        let text = life.s.recorder.metrics_text();
        let expected = parse_metric(&text, "earshot_recordings_expected_total");
        let stored = parse_metric(&text, "earshot_recordings_stored_total");
        expected > 0.0
            && expected == stored
            && parse_metric(&text, "earshot_spool_files") == 0.0
            && parse_metric(&text, "earshot_calls_active") == 0.0
    });
}

#[test]
fn one_recorder_through_hundreds_of_calls_a_kill_and_a_store_outage_loses_nothing() {
    let started = Instant::now();
    let mut life = Life::start("lifetime");
    round(&mut life, true, true);
    settle(&life);
    let v = check(&life);
    let rss = earshot_tests::rss_kib(life.s.recorder.pid().unwrap());
    eprintln!(
        "lifetime: {} calls, {} expected, {} stored, {} missing, {} duplicates, {} unexpected, {} truncated by the kill, worst length error {:.3} s, {:.0} s, RSS after {} KiB",
        v.calls,
        v.expected,
        v.stored,
        v.missing.len(),
        v.duplicates.len(),
        v.unexpected.len(),
        v.truncated,
        v.worst_length_error,
        started.elapsed().as_secs_f64(),
        rss
    );
    assert!(v.calls >= 250, "{} calls", v.calls);
    assert!(v.expected >= 200, "{} expected", v.expected);
    assert_eq!(v.missing, Vec::<String>::new(), "missing");
    assert_eq!(v.duplicates, Vec::<String>::new(), "duplicates");
    assert_eq!(
        v.unexpected,
        Vec::<String>::new(),
        "recorded without a reason"
    );
    assert_eq!(v.stored, v.expected);
    assert_eq!(v.truncated, 20, "the calls in progress at the kill");
    // Every A-law call was decoded as A-law (a stream that says PCMA but
    // sends another payload type is an incomplete recording, caught above).
    assert_eq!(v.codecs.get("PCMA"), Some(&30), "{:?}", v.codecs);
    // 20 in the media path, 10 SIPREC sessions.
    assert_eq!(v.codecs.get("G722"), Some(&30), "{:?}", v.codecs);
    assert_eq!(v.codecs.get("OPUS"), Some(&20), "{:?}", v.codecs);
    assert_eq!(v.siprec, 40, "the Always user's SIPREC sessions");
    assert_eq!(
        v.secure_heard, 32,
        "SRTP, declined-SDES and TLS recordings decoded"
    );
    let text = life.s.recorder.metrics_text();
    assert_eq!(
        parse_metric(&text, "earshot_recordings_expected_total")
            - parse_metric(&text, "earshot_recordings_stored_total"),
        0.0
    );
    assert_eq!(
        parse_metric(&text, "earshot_recordings_total{result=\"failed\"}"),
        0.0
    );
    assert_eq!(parse_metric(&text, "earshot_spool_bytes"), 0.0);
    assert!(!life.s.recorder.log_text().contains("spool is full"));
    // The kernel relayed established plain-RTP streams the whole life
    // (since the restart: the counters are the second process's); SRTP,
    // SIPREC sessions and announcements stayed in userspace.
    let kernel = parse_metric(&text, "earshot_kernel_packets_total{result=\"relayed\"}");
    let all = parse_metric(
        &text,
        "earshot_rtp_packets_total{direction=\"caller_to_callee\"}",
    ) + parse_metric(
        &text,
        "earshot_rtp_packets_total{direction=\"callee_to_caller\"}",
    );
    eprintln!(
        "lifetime: the kernel relayed {kernel} of the {all} packets counted since the restart"
    );
    assert!(kernel > all * 0.3, "the kernel relayed {kernel} of {all}");
    assert_eq!(
        parse_metric(&text, "earshot_kernel_streams"),
        0.0,
        "every stream taken back"
    );
    assert_eq!(
        parse_metric(
            &text,
            "earshot_kernel_packets_total{result=\"copies_lost\"}"
        ),
        0.0
    );
}

/// `make soak`: the same mix, round after round, for
/// `EARSHOT_SOAK_MINUTES` (default 60), with a store outage every fifth
/// round and one `kill -9` half-way, so each of the two processes lives
/// for half the run; resident memory, open files and spool bytes sampled
/// after each round. Prints the figures BENCHMARKS.md records.
#[test]
#[ignore = "an hour or more: run by `make soak`"]
fn soak() {
    let minutes: u64 = std::env::var("EARSHOT_SOAK_MINUTES")
        .ok()
        .and_then(|m| m.parse().ok())
        .unwrap_or(60);
    let started = Instant::now();
    let mut life = Life::start("soak");
    let mut samples = Vec::new();
    let sample = |life: &Life| {
        let pid = life.s.recorder.pid().unwrap();
        (
            started.elapsed().as_secs(),
            earshot_tests::rss_kib(pid),
            earshot_tests::open_files(pid),
            life.metric("earshot_spool_bytes") as u64,
        )
    };
    samples.push(sample(&life));
    let run = Duration::from_secs(minutes * 60);
    let mut before_kill = None;
    while started.elapsed() < run {
        let kill = before_kill.is_none() && started.elapsed() >= run / 2;
        if kill {
            before_kill = Some(sample(&life));
        }
        let outage = life.round % 5 == 4;
        round(&mut life, kill, outage);
        samples.push(sample(&life));
        eprintln!(
            "soak: round {} done, {} calls, sample {:?}",
            life.round,
            life.calls,
            samples.last()
        );
    }
    settle(&life);
    let v = check(&life);
    let first = samples.first().copied().unwrap_or_default();
    let last = sample(&life);
    let report = serde_json::json!({
        "minutes": started.elapsed().as_secs_f64() / 60.0,
        "rounds": life.round,
        "calls": v.calls,
        "expected": v.expected,
        "stored": v.stored,
        "missing": v.missing.len(),
        "duplicates": v.duplicates.len(),
        "unexpected": v.unexpected.len(),
        "truncatedByKills": v.truncated,
        "recordingsByCallerCodec": v.codecs,
        "worstLengthErrorSeconds": v.worst_length_error,
        "kills": life.kills.len(),
        "rssKiBStart": first.1,
        "rssKiBAfterFirstRound": samples.get(1).map(|s| s.1),
        "rssKiBBeforeKill": before_kill.map(|s| s.1),
        "rssKiBEnd": last.1,
        "openFilesStart": first.2,
        "openFilesEnd": last.2,
        "spoolBytesEnd": last.3,
        "samples": samples.iter().map(|(t, rss, fds, spool)| serde_json::json!({"s": t, "rssKiB": rss, "openFiles": fds, "spoolBytes": spool})).collect::<Vec<_>>(),
    });
    let out = earshot_tests::repo().join("target/soak.json");
    std::fs::write(&out, serde_json::to_vec_pretty(&report).unwrap()).unwrap();
    eprintln!("soak: {report}");
    assert!(v.missing.is_empty() && v.duplicates.is_empty() && v.unexpected.is_empty());
    assert_eq!(v.stored, v.expected);
}
