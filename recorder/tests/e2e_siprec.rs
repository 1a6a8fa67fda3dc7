//! SIPREC end to end through a real recorder process: a session recording
//! client (the test, over UDP from an address of its own, as an SBC forks
//! a call) sends INVITEs whose multipart bodies hold the SDP and the
//! metadata, then the two parties' streams, each at its own 20 ms clock.
//! What a user checks: the MP3 has the caller on the left whatever the
//! m-line order, its length is the session's, the sidecar names the
//! participants and the SRC's identifiers and keeps the metadata as
//! received; a session of nobody the policy records is answered and not
//! recorded; one recorder takes several sessions one after the other.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use earshot_tests::pcap::RtpStream;
use earshot_tests::{RecorderProcess, TempDir, decode_mp3_at, tone_power_at};

/// An SBC with an address of its own on loopback.
const SRC_IP: [u8; 4] = [127, 0, 0, 2];

struct Src {
    sip: UdpSocket,
    /// The caller's stream (label 1) and the callee's (label 2).
    media: [UdpSocket; 2],
    recorder: SocketAddr,
}

impl Src {
    fn new(recorder: SocketAddr) -> Src {
        let bind = || UdpSocket::bind(SocketAddr::from((SRC_IP, 0))).unwrap();
        let sip = bind();
        sip.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        Src {
            sip,
            media: [bind(), bind()],
            recorder,
        }
    }

    fn send(&self, text: &str) {
        self.sip.send_to(text.as_bytes(), self.recorder).unwrap();
    }

    /// The next response within `wait`.
    fn response(&self, wait: Duration) -> Option<String> {
        let deadline = Instant::now() + wait;
        let mut buf = [0u8; 65536];
        while Instant::now() < deadline {
            if let Ok(n) = self.sip.recv(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                if text.starts_with("SIP/2.0") {
                    return Some(text);
                }
            }
        }
        None
    }

    fn request(&self, method: &str, call: &str, cseq: u32, to_tag: &str, body: &str) -> String {
        let local = self.sip.local_addr().unwrap();
        let to_tag = if to_tag.is_empty() {
            String::new()
        } else {
            format!(";tag={to_tag}")
        };
        let ct = if body.is_empty() {
            String::new()
        } else {
            "Content-Type: multipart/mixed;boundary=OSS-unique-boundary-42\r\n".to_owned()
        };
        format!(
            "{method} sip:srs@{rec} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-{call}-{cseq}{m}\r\nMax-Forwards: 70\r\nFrom: <sip:src@sbc.example.com>;tag=src-{call}\r\nTo: <sip:srs@{rec}>{to_tag}\r\nCall-ID: {call}\r\nCSeq: {cseq} {method}\r\nContact: <sip:src@{local}>;+sip.src\r\nRequire: siprec\r\n{ct}Content-Length: {len}\r\n\r\n{body}",
            rec = self.recorder,
            m = method.to_ascii_lowercase(),
            len = body.len()
        )
    }

    /// The INVITE's body: the callee's stream (label 2) first, so the
    /// m-line order says the opposite of the metadata.
    fn offer(&self, caller: &str, callee: &str) -> String {
        let port = |i: usize| self.media[i].local_addr().unwrap().port();
        let sdp = format!(
            "v=0\r\no=SBC 1 1 IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.2\r\nt=0 0\r\n\
             m=audio {} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=label:2\r\na=sendonly\r\n\
             m=audio {} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=label:1\r\na=sendonly\r\n",
            port(1),
            port(0)
        );
        let metadata = format!(
            r#"<?xml version='1.0' encoding='UTF-8'?>
<recording xmlns='urn:ietf:params:xml:ns:recording'>
  <datamode>complete</datamode>
  <session id="OegxHzZJT/5/85BANX/cAQ==">
    <extensiondata xmlns:apkt="http:/acmepacket.com/siprec/extensiondata">
      <apkt:ucid>00FA08001A2B3C4D5E6F70;encoding=hex</apkt:ucid>
    </extensiondata>
  </session>
  <participant id="callee-p" session="OegxHzZJT/5/85BANX/cAQ==">
    <nameID aor="sip:{callee}@carrier.example.net"><name>Far end</name></nameID>
    <send>stream-b</send>
  </participant>
  <participant id="caller-p" session="OegxHzZJT/5/85BANX/cAQ==">
    <nameID aor="sip:{caller}@pbx.example.com"><name>Front desk</name></nameID>
    <send>stream-a</send>
    <extensiondata xmlns:apkt="http://acmepacket.com/siprec/extensiondata">
      <apkt:callingParty>true</apkt:callingParty>
    </extensiondata>
  </participant>
  <stream id="stream-b" session="OegxHzZJT/5/85BANX/cAQ=="><label>2</label></stream>
  <stream id="stream-a" session="OegxHzZJT/5/85BANX/cAQ=="><label>1</label></stream>
</recording>"#
        );
        format!(
            "--OSS-unique-boundary-42\r\nContent-Type: application/sdp\r\n\r\n{sdp}\r\n--OSS-unique-boundary-42\r\nContent-Type: application/rs-metadata+xml\r\nContent-Disposition: recording-session\r\n\r\n{metadata}\r\n--OSS-unique-boundary-42--\r\n"
        )
    }

    /// One session: INVITE, 200 (the ports of its m-lines), ACK, both
    /// streams for `talk`, BYE, 200.
    fn session(&self, call: &str, caller: &str, callee: &str, talk: Duration) {
        self.send(&self.request("INVITE", call, 1, "", &self.offer(caller, callee)));
        let ok = self
            .response(Duration::from_secs(3))
            .unwrap_or_else(|| panic!("{call}: no answer"));
        assert!(ok.starts_with("SIP/2.0 200"), "{call}: {ok}");
        let tag = ok
            .lines()
            .find(|l| l.starts_with("To:"))
            .and_then(|l| l.split(";tag=").nth(1))
            .expect("a To tag")
            .trim()
            .to_owned();
        let ports: Vec<u16> = ok
            .lines()
            .filter(|l| l.starts_with("m=audio"))
            .map(|l| l.split(' ').nth(1).unwrap().parse().unwrap())
            .collect();
        assert_eq!(ok.matches("a=recvonly").count(), 2, "{ok}");
        self.send(&self.request("ACK", call, 1, &tag, ""));
        // Label 2 (callee, 1 kHz) was the first m-line; label 1 (caller, 440 Hz) the second.
        let ms = talk.as_millis() as u64;
        let streams = [
            (RtpStream::new(0xca11).tone(440.0, ms), ports[1]),
            (RtpStream::new(0xca22).tone(1000.0, ms), ports[0]),
        ];
        let started = Instant::now();
        for i in 0..streams[0].0.packets.len() {
            for (k, (stream, port)) in streams.iter().enumerate() {
                let p = &stream.packets[i];
                let due = started + p.at;
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                let to = SocketAddr::new(self.recorder.ip(), *port);
                self.media[k].send_to(&p.rtp, to).unwrap();
            }
        }
        self.send(&self.request("BYE", call, 2, &tag, ""));
        let bye = self
            .response(Duration::from_secs(3))
            .expect("an answer to BYE");
        assert!(bye.starts_with("SIP/2.0 200"), "{call}: {bye}");
    }
}

#[test]
fn an_sbcs_recording_sessions_are_recorded_with_the_caller_left_and_its_ids_kept() {
    let dir = TempDir::new("siprec");
    let unused = SocketAddr::from(([127, 0, 0, 1], 9));
    let recorder = RecorderProcess::start(Path::new(BINARY), dir.path(), unused, &users());
    // The SBC becomes a peer of the recorder as a session recording client.
    let applied = "earshot_config_reloads_total{result=\"applied\"}";
    let config = std::fs::read_to_string(&recorder.config).unwrap();
    let config = config.replacen(
        "peers:\n",
        "peers:\n  - { name: sbc, sources: [\"127.0.0.2/32\"], siprec: true }\n",
        1,
    );
    std::fs::write(&recorder.config, config).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while recorder.metric(applied) < 1.0 {
        assert!(Instant::now() < deadline, "the config was not reloaded");
        std::thread::sleep(Duration::from_millis(200));
    }
    let src = Src::new(recorder.sip);
    src.session("siprec-1", "008", "+15550100999", Duration::from_secs(4));
    // Nobody the policy records (003 is Never, the other unknown): answered, not recorded.
    src.session("siprec-2", "003", "+15550100998", Duration::from_secs(1));
    src.session("siprec-3", "008", "+15550100997", Duration::from_secs(3));
    let recs = recorder.wait_recordings(2, Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(recorder.metric("earshot_recordings_expected_total"), 2.0);
    for ((mp3, side), talk) in recs.iter().zip([4.0, 3.0]) {
        let (left, right) = decode_mp3_at(mp3, 8000);
        let seconds = left.len() as f64 / 8000.0;
        let call = side["durationSeconds"].as_f64().unwrap();
        assert!(
            (seconds - call).abs() < 0.2,
            "{seconds:.2} s of a {call:.2} s session"
        );
        assert!(
            (talk - 0.3..talk + 1.0).contains(&seconds),
            "{seconds:.2} s of {talk} s"
        );
        let (l, r) = (
            &left[2000..left.len() - 2000],
            &right[2000..right.len() - 2000],
        );
        let p = |x: &[i16], hz| tone_power_at(x, hz, 8000.0);
        assert!(
            p(l, 440.0) > 10.0 * p(l, 1000.0),
            "the caller (label 1) is left"
        );
        assert!(
            p(r, 1000.0) > 10.0 * p(r, 440.0),
            "the callee (label 2) is right"
        );
        assert_eq!(side["complete"], true, "{side}");
        assert_eq!(side["caller"]["number"], "008");
        let siprec = &side["siprec"];
        let participants = siprec["participants"].as_array().unwrap();
        assert_eq!(participants.len(), 2, "{siprec}");
        let caller = participants
            .iter()
            .find(|p| p["role"] == "caller")
            .expect("a caller");
        assert_eq!(caller["aor"], "sip:008@pbx.example.com");
        assert_eq!(caller["channel"], "caller");
        assert!(
            siprec["identifiers"]
                .as_array()
                .unwrap()
                .iter()
                .any(|i| i["name"] == "ucid" && i["value"] == "00FA08001A2B3C4D5E6F70;encoding=hex"),
            "{siprec}"
        );
        assert!(
            siprec["metadata"][0]
                .as_str()
                .is_some_and(|m| m.contains("callingParty")),
            "the metadata as received"
        );
    }
    assert_eq!(
        recorder.metric("earshot_rtp_dropped_total{reason=\"siprec_unmapped\"}"),
        0.0
    );
}

/// A re-INVITE of the SRC's (CSeq `cseq`) with the m-lines `media` and, when
/// given, metadata of type `kind`; then its ACK.
fn reinvite(cseq: u32, media: &str, metadata: Option<(&str, &str)>) -> String {
    let meta = metadata
        .map(|(kind, xml)| {
            format!(
                "--vendorboundary\nContent-Type: {kind}\nContent-Disposition: recording-session\n\n{xml}\n"
            )
        })
        .unwrap_or_default();
    format!(
        r#"<send retrans="500"><![CDATA[
      INVITE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      [routes]
      From: <sip:src@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      [last_To:]
      Call-ID: [call_id]
      CSeq: {cseq} INVITE
      Contact: <sip:src@[local_ip]:[local_port]>;+sip.src
      Require: siprec
      Max-Forwards: 70
      Content-Type: multipart/mixed;boundary=vendorboundary
      Content-Length: [len]

      --vendorboundary
      Content-Type: application/sdp

      v=0
      o=src 1 {cseq} IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      {media}
      {meta}--vendorboundary--
    ]]></send>
  <recv response="200"/>
  <send><![CDATA[
      ACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      [routes]
      From: <sip:src@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      [last_To:]
      Call-ID: [call_id]
      CSeq: {cseq} ACK
      Contact: <sip:src@[local_ip]:[local_port]>;+sip.src
      Max-Forwards: 70
      Content-Length: 0
    ]]></send>"#
    )
}

/// An m-line SIPp owns, labelled `label`, in direction `dir`.
fn mline(port: &str, label: &str, dir: &str) -> String {
    format!(
        "m=audio [{port}] RTP/AVP 0 101\na=rtpmap:0 PCMU/8000\na=rtpmap:101 telephone-event/8000\na=label:{label}\na={dir}"
    )
}

/// RFC 7865 metadata: the caller `caller` sends stream `a` (label 1), the
/// callee 500 stream `b` (label 2) — or, `mixed`, both send `a`.
fn rfc_metadata(caller: &str, mixed: bool) -> String {
    let b = if mixed { "a" } else { "b" };
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<recording xmlns="urn:ietf:params:xml:ns:recording:1">
<datamode>complete</datamode>
<session session_id="s1"><sipSessionID>[call_id]</sipSessionID></session>
<participant participant_id="pa"><nameID aor="sip:{caller}@pbx.example.com"><name>Caller</name></nameID></participant>
<participant participant_id="pb"><nameID aor="sip:500@trunk.example.net"/></participant>
<stream stream_id="a" session_id="s1"><label>1</label></stream>
<stream stream_id="b" session_id="s1"><label>2</label></stream>
<participantstreamassoc participant_id="pa"><send>a</send></participantstreamassoc>
<participantstreamassoc participant_id="pb"><send>{b}</send></participantstreamassoc>
</recording>"#
    )
}

/// The SIPREC example config run as is (its own ports, its store under the
/// working directory), and SIPp as SRCs of several vendors' shapes through
/// it, each recording checked as an in-path one is: RFC 7866's; AudioCodes'
/// older type and namespace with an `ac:` Genesys id; label order unlike
/// participant order; one mixed stream; a metadata update on a transfer; a
/// pause by `a=inactive`.
#[test]
fn the_siprec_example_config_records_vendor_shaped_sessions_from_sipp() {
    earshot_tests::require("sipp");
    earshot_tests::hold_ports(&[15062, 19092, 31400, 31599]);
    let dir = TempDir::new("siprec-example");
    let config = earshot_tests::repo().join("config/recorder.siprec.example.yaml");
    let log = std::fs::File::create(dir.path().join("recorder.log")).unwrap();
    let mut recorder = std::process::Command::new(BINARY)
        .arg("--config")
        .arg(&config)
        .current_dir(dir.path())
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let http = SocketAddr::from(([127, 0, 0, 1], 19092));
    let deadline = Instant::now() + Duration::from_secs(20);
    while earshot_tests::http_get(http, "/readyz")
        .map(|r| r.0)
        .unwrap_or(0)
        != 200
    {
        assert!(
            Instant::now() < deadline,
            "the example config did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let ports = earshot_tests::free_ports(16);
    let run = |name: &str, talk_ms: u64, after_ms: u64, vars: Vec<(&'static str, String)>| {
        let pcap = dir.path().join(format!("{name}.pcap"));
        RtpStream::new(0xca11)
            .tone(440.0, talk_ms + after_ms + 2000)
            .write(&pcap)
            .unwrap();
        let mut all = vec![
            ("PCAP", pcap.display().to_string()),
            ("TALK_MS", talk_ms.to_string()),
            ("AFTER_MS", after_ms.to_string()),
        ];
        all.extend(vars);
        let mut src = earshot_tests::Sipp {
            scenario: "uac_siprec_vendor.xml",
            vars: all,
            args: vec!["-m".into(), "1".into(), "127.0.0.1:15062".into()],
            port: ports,
            media_port: ports + 2,
            control_port: ports + 6,
        }
        .spawn(dir.path(), name);
        src.wait_success(Duration::from_secs(60));
    };
    let rfc_type = ("METADATA_TYPE", "application/rs-metadata+xml".to_owned());
    let two = format!(
        "{}\n{}",
        mline("media_port", "1", "sendonly"),
        mline("media_port+2", "2", "sendonly")
    );
    // 1. RFC 7866's shape.
    run(
        "rfc7866",
        2500,
        0,
        vec![
            ("MEDIA", two.clone()),
            rfc_type.clone(),
            ("METADATA", rfc_metadata("008", false)),
            ("MIDCALL", String::new()),
        ],
    );
    // 2. AudioCodes (in front of Genesys): the older content type and
    //    namespace, the Genesys call UUID in an `ac:` element.
    let audiocodes = r#"<?xml version="1.0" encoding="UTF-8"?>
<recording xmlns="urn:ietf:params:xml:ns:recording">
<datamode>complete</datamode>
<session id="s1"><ac:GenesysUUID xmlns:ac="http://AudioCodes">4BOKLLA3VH66JF112M1CC9VHKS14F0KP</ac:GenesysUUID></session>
<participant id="pa" session="s1"><nameID aor="sip:008@pbx.example.com"/><send>a</send></participant>
<participant id="pb" session="s1"><nameID aor="sip:500@trunk.example.net"/><send>b</send></participant>
<stream id="a" session="s1"><label>1</label></stream>
<stream id="b" session="s1"><label>2</label></stream>
</recording>"#;
    run(
        "audiocodes",
        2500,
        0,
        vec![
            ("MEDIA", two.clone()),
            ("METADATA_TYPE", "application/rs-metadata".to_owned()),
            ("METADATA", audiocodes.to_owned()),
            ("MIDCALL", String::new()),
        ],
    );
    // 3. The callee's stream (label 2) first: SIPp plays into it.
    let swapped = format!(
        "{}\n{}",
        mline("media_port", "2", "sendonly"),
        mline("media_port+2", "1", "sendonly")
    );
    run(
        "label-order",
        2500,
        0,
        vec![
            ("MEDIA", swapped),
            rfc_type.clone(),
            ("METADATA", rfc_metadata("008", false)),
            ("MIDCALL", String::new()),
        ],
    );
    // 4. One mixed stream.
    run(
        "mixed",
        2500,
        0,
        vec![
            ("MEDIA", mline("media_port", "1", "sendonly")),
            rfc_type.clone(),
            ("METADATA", rfc_metadata("008", true)),
            ("MIDCALL", String::new()),
        ],
    );
    // 5. A transfer: 013 takes over the callee's stream (partial update).
    let transfer = r#"<recording xmlns="urn:ietf:params:xml:ns:recording:1"><datamode>partial</datamode>
<participant participant_id="pc"><nameID aor="sip:013@pbx.example.com"><name>Transferred to</name></nameID></participant>
<participantstreamassoc participant_id="pc"><send>b</send></participantstreamassoc>
<participantstreamassoc participant_id="pb"><recv>a</recv></participantstreamassoc></recording>"#;
    run(
        "transfer",
        1500,
        1500,
        vec![
            ("MEDIA", two.clone()),
            rfc_type.clone(),
            ("METADATA", rfc_metadata("008", false)),
            (
                "MIDCALL",
                reinvite(2, &two, Some(("application/rs-metadata+xml", transfer))),
            ),
        ],
    );
    // 6. A pause: every stream inactive for a second, then sending again.
    let inactive = format!(
        "{}\n{}",
        mline("media_port", "1", "inactive"),
        mline("media_port+2", "2", "inactive")
    );
    let pause = format!(
        "{}\n<pause milliseconds=\"1000\"/>\n{}",
        reinvite(2, &inactive, None),
        reinvite(3, &two, None)
    );
    run(
        "pause",
        1500,
        1500,
        vec![
            ("MEDIA", two.clone()),
            rfc_type,
            ("METADATA", rfc_metadata("008", false)),
            ("MIDCALL", pause),
        ],
    );

    let store = dir.path().join("recordings");
    let deadline = Instant::now() + Duration::from_secs(20);
    let recs = loop {
        let r = earshot_tests::sidecars_in(&store);
        if r.len() >= 6 {
            break r;
        }
        assert!(Instant::now() < deadline, "{} of 6 recordings", r.len());
        std::thread::sleep(Duration::from_millis(200));
    };
    let _ = recorder.kill();
    let _ = recorder.wait();
    let names = [
        "rfc7866",
        "audiocodes",
        "label-order",
        "mixed",
        "transfer",
        "pause",
    ];
    for ((mp3, side), name) in recs.iter().zip(names) {
        let (left, right) = decode_mp3_at(mp3, 8000);
        let seconds = left.len() as f64 / 8000.0;
        let recorded = side["audio"]["durationSeconds"].as_f64().unwrap();
        assert!(
            (seconds - recorded).abs() < 0.1,
            "{name}: {seconds:.2} s of MP3, sidecar {recorded:.2}"
        );
        assert_eq!(side["complete"], true, "{name}: {side}");
        let (l, r) = (
            &left[1000..left.len() - 1000],
            &right[1000..right.len() - 1000],
        );
        let tone = |x: &[i16]| tone_power_at(x, 440.0, 8000.0);
        let siprec = &side["siprec"];
        match name {
            "label-order" => assert!(
                tone(r) > 10.0 * tone(l),
                "{name}: the callee's stream is right"
            ),
            _ => assert!(
                tone(l) > 10.0 * tone(r),
                "{name}: the caller's stream is left"
            ),
        }
        match name {
            "audiocodes" => assert!(
                siprec["identifiers"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|i| i["value"] == "4BOKLLA3VH66JF112M1CC9VHKS14F0KP"),
                "{name}: {siprec}"
            ),
            "mixed" => assert_eq!(siprec["mixed"], true, "{name}: {siprec}"),
            "transfer" => {
                let aors: Vec<&str> = siprec["participants"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter_map(|p| p["aor"].as_str())
                    .collect();
                assert!(
                    aors.contains(&"sip:013@pbx.example.com"),
                    "{name}: {aors:?}"
                );
                assert_eq!(siprec["metadata"].as_array().unwrap().len(), 2, "{name}");
                assert!((2.6..3.6).contains(&seconds), "{name}: {seconds:.2} s");
            }
            "pause" => {
                // Skip (the example's pauseBehaviour): the paused second is
                // left out of the file.
                assert_eq!(
                    side["recorded"].as_array().unwrap().len(),
                    2,
                    "{name}: {side}"
                );
                assert!((2.6..3.6).contains(&seconds), "{name}: {seconds:.2} s");
            }
            _ => assert!((2.3..3.2).contains(&seconds), "{name}: {seconds:.2} s"),
        }
    }
}
