//! End to end with a real softphone: baresip (Debian) as caller and callee
//! through a real recorder process — its own timers (packets 16–24 ms
//! apart, not a pcap's clock), its own SDP and RFC 4733 DTMF, PCMU, G.722
//! and Opus, and Kamailio as a trunk that challenges it. Each party's
//! decoded audio proves the relay; the MP3 is checked as a user would.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::*;
use earshot_tests::baresip::{Baresip, BaresipConfig, Source, read_wav};
use earshot_tests::kamailio::Kamailio;
use earshot_tests::{
    RecorderProcess, TempDir, decode_mp3_at, events_of, free_ports, tone_power_at,
};

/// Caller 440 Hz, callee 1 kHz, both on one recorder; `hop` is the
/// recorder's next hop given the callee's SIP address.
struct Phones {
    _dir: TempDir,
    recorder: RecorderProcess,
    caller: Baresip,
    callee: Baresip,
}

fn phones(
    name: &str,
    from: &str,
    codecs: &'static [&'static str],
    hop: impl FnOnce(&Path, SocketAddr) -> SocketAddr,
    auth: Option<(&'static str, &'static str)>,
    // The caller's and the callee's media encryption.
    (caller_enc, callee_enc): (Option<&'static str>, Option<&'static str>),
) -> Phones {
    earshot_tests::require("baresip");
    let dir = TempDir::new(name);
    let base = free_ports(40);
    let callee_sip = SocketAddr::from(([127, 0, 0, 1], base));
    let next_hop = hop(dir.path(), callee_sip);
    let recorder = RecorderProcess::start(Path::new(BINARY), dir.path(), next_hop, &users());
    let callee_dir = dir.path().join("callee");
    let caller_dir = dir.path().join("caller");
    std::fs::create_dir_all(&callee_dir).unwrap();
    std::fs::create_dir_all(&caller_dir).unwrap();
    let callee = Baresip::start(
        &callee_dir,
        &BaresipConfig {
            codecs,
            source: Source::Tone(1000),
            auto_answer: true,
            mediaenc: callee_enc,
            ..BaresipConfig::new("500", base)
        },
    );
    let caller = Baresip::start(
        &caller_dir,
        &BaresipConfig {
            codecs,
            source: Source::Tone(440),
            outbound_proxy: Some(recorder.sip),
            auth,
            mediaenc: caller_enc,
            ..BaresipConfig::new(from, base + 20)
        },
    );
    Phones {
        _dir: dir,
        recorder,
        caller,
        callee,
    }
}

impl Phones {
    /// Dials, talks `talk` (running `during` halfway), hangs up.
    fn call(&self, talk: Duration, during: impl FnOnce(&Baresip)) {
        self.caller.dial(&self.callee.uri());
        self.caller
            .expect_event("CALL_ESTABLISHED", Duration::from_secs(10));
        std::thread::sleep(talk / 2);
        during(&self.caller);
        std::thread::sleep(talk / 2);
        self.caller.hangup();
        self.caller
            .expect_event("CALL_CLOSED", Duration::from_secs(10));
        self.callee
            .expect_event("CALL_CLOSED", Duration::from_secs(10));
    }

    /// Each party heard the other's tone (decoded by baresip itself): the
    /// relay carried both directions.
    fn assert_each_heard_the_other(&self, what: &str) {
        for (who, phone, hz, other) in [
            ("caller", &self.caller, 1000.0, 440.0),
            ("callee", &self.callee, 440.0, 1000.0),
        ] {
            let wav = phone
                .decoded_wavs()
                .last()
                .map(|p| read_wav(p))
                .unwrap_or_else(|| panic!("{what}: no WAV from the {who}"));
            let mono = wav.channel(0);
            let rate = f64::from(wav.rate);
            let mid = &mono[mono.len() / 4..mono.len() * 3 / 4];
            assert!(
                tone_power_at(mid, hz, rate) > 10.0 * tone_power_at(mid, other, rate),
                "{what}: the {who} heard the other party ({hz} Hz)"
            );
        }
    }
}

/// The stored MP3: caller's 440 Hz left, callee's 1 kHz right, as long as
/// the sidecar's call, and about `talk_s` long.
fn assert_mp3(what: &str, mp3: &Path, side: &serde_json::Value, talk_s: f64) {
    let rate = side["audio"]["sampleRate"].as_u64().unwrap_or(8000) as u32;
    let (left, right) = decode_mp3_at(mp3, rate);
    let file = left.len() as f64 / f64::from(rate);
    let call = side["durationSeconds"].as_f64().unwrap_or(f64::NAN);
    assert!(
        (file - call).abs() < 0.15,
        "{what}: file {file:.2} s, call {call:.2} s"
    );
    assert!(
        (talk_s - 0.5..talk_s + 1.5).contains(&file),
        "{what}: {file:.2} s of {talk_s} s"
    );
    let cut = (rate / 2) as usize;
    let (l, r) = (&left[cut..left.len() - cut], &right[cut..right.len() - cut]);
    let hz = f64::from(rate);
    assert!(
        tone_power_at(l, 440.0, hz) > 10.0 * tone_power_at(l, 1000.0, hz),
        "{what}: left is the caller"
    );
    assert!(
        tone_power_at(r, 1000.0, hz) > 10.0 * tone_power_at(r, 440.0, hz),
        "{what}: right is the callee"
    );
    assert_eq!(side["complete"], true, "{what}: {side}");
}

#[test]
fn a_softphone_call_in_pcmu_g722_and_opus_is_recorded() {
    for (codec, rate) in [
        ("pcmu/8000/1", 8000),
        ("g722/16000/1", 16000),
        ("opus/48000/2", 16000),
    ] {
        let codecs: &'static [&'static str] = match codec {
            "pcmu/8000/1" => &["pcmu/8000/1"],
            "g722/16000/1" => &["g722/16000/1"],
            _ => &["opus/48000/2"],
        };
        let p = phones(
            &format!("baresip-{}", &codec[..4]),
            "008",
            codecs,
            |_, callee| callee,
            None,
            (None, None),
        );
        p.call(Duration::from_secs(4), |_| {});
        p.assert_each_heard_the_other(codec);
        let recs = p.recorder.wait_recordings(1, Duration::from_secs(20));
        assert_eq!(recs.len(), 1, "{codec}");
        assert_eq!(recs[0].1["audio"]["sampleRate"], rate, "{codec}");
        assert_mp3(codec, &recs[0].0, &recs[0].1, 4.0);
    }
}

/// An On-demand user keys `*5` on baresip (RFC 4733, its own timing):
/// recording runs from the key to the hang-up.
#[test]
fn a_softphone_user_keys_the_shortcode() {
    let p = phones(
        "baresip-shortcode",
        "012",
        &["pcmu/8000/1"],
        |_, callee| callee,
        None,
        (None, None),
    );
    p.call(Duration::from_secs(6), |caller| caller.send_dtmf("*5"));
    let events = p.recorder.events();
    let recording = events_of(&events, "recording");
    assert_eq!(
        recording.first().map(|e| &e["reason"]),
        Some(&serde_json::json!("shortcode")),
        "{events:?}"
    );
    let recs = p.recorder.wait_recordings(1, Duration::from_secs(20));
    let side = &recs[0].1;
    // Keyed ~3 s into a 6 s call: about 3 s recorded.
    let span =
        side["recorded"][0]["to"].as_f64().unwrap() - side["recorded"][0]["from"].as_f64().unwrap();
    assert!(
        (2.2..3.8).contains(&span),
        "recorded {span:.2} s after the key: {side}"
    );
}

/// baresip answers the trunk's 407 with credentials; the retried INVITE's
/// call is recorded and both parties hear each other throughout.
#[test]
fn a_softphone_through_a_trunk_that_challenges() {
    let mut trunk = None;
    let p = phones(
        "baresip-trunk",
        "008",
        &["pcmu/8000/1"],
        |dir, callee| {
            let port = free_ports(2);
            let t = Kamailio::start_trunk(&dir.join("trunk"), port, callee, "pbx", "s3cret");
            let sip = t.sip;
            trunk = Some(t);
            sip
        },
        Some(("pbx", "s3cret")),
        (None, None),
    );
    p.call(Duration::from_secs(12), |_| {});
    p.assert_each_heard_the_other("challenged");
    let recs = p.recorder.wait_recordings(1, Duration::from_secs(20));
    assert_mp3("challenged", &recs[0].0, &recs[0].1, 12.0);
    let log = trunk.expect("started").logs();
    assert!(log.contains("407"), "{log}");
    assert_eq!(
        p.recorder
            .metric("earshot_invite_retries_total{outcome=\"retried\",code=\"407\"}"),
        1.0
    );
}

/// Both phones on SDES-SRTP (`mediaenc=srtp-mand`: `RTP/SAVP`, keys in
/// `a=crypto`): the recorder decrypts a copy of each packet with the key
/// each side's SDP gave and relays the packets untouched. Before, this
/// stored 8 s of noise marked complete.
#[test]
fn a_softphone_call_over_sdes_srtp_is_recorded_in_the_clear() {
    let p = phones(
        "baresip-srtp",
        "008",
        &["pcmu/8000/1"],
        |_, callee| callee,
        None,
        (Some("srtp-mand"), Some("srtp-mand")),
    );
    p.call(Duration::from_secs(6), |_| {});
    p.assert_each_heard_the_other("srtp");
    // The same recorder, a second call with new keys; the callee puts it
    // on hold and resumes (re-INVITEs from the other side, each with its
    // SDP and keys through the relay).
    p.call(Duration::from_secs(8), |_| {
        p.callee.command("hold", None).expect("hold");
        std::thread::sleep(Duration::from_millis(1500));
        p.callee.command("resume", None).expect("resume");
    });
    p.assert_each_heard_the_other("srtp after hold");
    let recs = p.recorder.wait_recordings(2, Duration::from_secs(20));
    assert_mp3("srtp", &recs[0].0, &recs[0].1, 6.0);
    // 8 s of talk and the 1.5 s hold in its middle (silence, kept).
    assert_mp3("srtp, held by the callee", &recs[1].0, &recs[1].1, 9.5);
    let metrics = p.recorder.metrics_text();
    assert!(
        !metrics
            .lines()
            .any(|l| l.starts_with("earshot_srtp_unprotect_failures_total") && !l.ends_with(" 0")),
        "every packet decrypted: {metrics}"
    );
}

/// SRTP on one side only, as keys kept end to end allow it (docs/sip.md):
/// a caller offering optional SDES (`mediaenc=srtp`: `RTP/AVP` with
/// `a=crypto`) to a callee without SRTP is answered without a key, so both
/// send plain RTP — relayed, heard, recorded complete. A caller that
/// insists (`srtp-mand`: `RTP/SAVP` only) is refused by the plain callee;
/// the recorder relays the refusal and records nothing.
#[test]
fn srtp_offered_by_one_side_only() {
    let p = phones(
        "baresip-srtp-one-side",
        "008",
        &["pcmu/8000/1"],
        |_, callee| callee,
        None,
        (Some("srtp"), None),
    );
    p.call(Duration::from_secs(5), |_| {});
    p.assert_each_heard_the_other("optional srtp declined");
    let recs = p.recorder.wait_recordings(1, Duration::from_secs(20));
    assert_mp3("optional srtp declined", &recs[0].0, &recs[0].1, 5.0);
    drop(p);
    let p = phones(
        "baresip-srtp-mandatory-to-plain",
        "008",
        &["pcmu/8000/1"],
        |_, callee| callee,
        None,
        (Some("srtp-mand"), None),
    );
    p.caller.dial(&p.callee.uri());
    let closed = p
        .caller
        .expect_event("CALL_CLOSED", Duration::from_secs(10));
    assert!(
        closed.to_string().contains("488"),
        "the plain callee refuses RTP/SAVP: {closed}"
    );
    std::thread::sleep(Duration::from_secs(1));
    for series in [
        "earshot_calls_active",
        "earshot_recordings_expected_total",
        "earshot_srtp_unprotect_failures_total",
    ] {
        assert_eq!(p.recorder.metric(series), 0.0, "{series}");
    }
}

/// DTLS-SRTP: the keys never pass the recorder. The handshake and the
/// media are relayed untouched (each party hears the other); the
/// recording holds no ciphertext and says why it is incomplete.
#[test]
fn a_dtls_srtp_call_is_relayed_and_its_recording_says_it_is_encrypted() {
    let p = phones(
        "baresip-dtls",
        "008",
        &["pcmu/8000/1"],
        |_, callee| callee,
        None,
        (Some("dtls_srtp"), Some("dtls_srtp")),
    );
    p.call(Duration::from_secs(6), |_| {});
    p.assert_each_heard_the_other("dtls-srtp");
    let recs = p.recorder.wait_recordings(1, Duration::from_secs(20));
    let side = &recs[0].1;
    assert_eq!(side["complete"], false, "{side}");
    assert!(
        side["incompleteReasons"]
            .as_array()
            .is_some_and(|r| r.iter().any(|r| r == "encrypted_dtls_srtp")),
        "{side}"
    );
}

/// A secure trunk end to end: SIP over TLS from the caller to the recorder
/// and from the recorder to the callee (its certificate checked against
/// the CA by the address the next hop names), SDES-SRTP media both ways.
/// The recorder listens for TLS only on its TLS port and the callee only on
/// its own, so the call connects only if both hops really are TLS.
#[test]
fn a_call_over_tls_and_srtp_is_recorded() {
    earshot_tests::require("baresip");
    let dir = TempDir::new("baresip-tls");
    let certs = dir.path().join("certs");
    earshot_tests::test_certificates(&certs, &["recorder", "callee", "caller"]);
    let base = free_ports(40);
    let callee_tls = SocketAddr::from(([127, 0, 0, 1], base + 1));
    let tls_port = free_ports(1);
    let recorder = RecorderProcess::start_tls(
        Path::new(BINARY),
        dir.path(),
        callee_tls,
        &users(),
        &format!(
            "{{ port: {tls_port}, certificate: \"{}\", key: \"{}\", ca: \"{}\" }}",
            certs.join("recorder.crt").display(),
            certs.join("recorder.key").display(),
            certs.join("ca.crt").display()
        ),
        "TLS",
    );
    let proxy = SocketAddr::from(([127, 0, 0, 1], tls_port));
    let (callee, caller) = earshot_tests::baresip::tls_srtp_pair(dir.path(), &certs, base, proxy);
    let p = Phones {
        _dir: dir,
        recorder,
        caller,
        callee,
    };
    p.call(Duration::from_secs(6), |_| {});
    p.assert_each_heard_the_other("tls+srtp");
    // A second call on the same TLS connections, both ways.
    p.call(Duration::from_secs(4), |_| {});
    p.assert_each_heard_the_other("tls+srtp, second call");
    let recs = p.recorder.wait_recordings(2, Duration::from_secs(20));
    assert_mp3("tls+srtp", &recs[0].0, &recs[0].1, 6.0);
    assert_mp3("tls+srtp, second call", &recs[1].0, &recs[1].1, 4.0);
    assert_eq!(
        p.recorder
            .metric("earshot_sip_dropped_total{reason=\"tls_handshake_failed\"}"),
        0.0
    );
}
