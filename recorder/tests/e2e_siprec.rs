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
