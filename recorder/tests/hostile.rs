//! Hostile input against a running recorder, as an attacker would send it,
//! over UDP and TCP: a corpus in the categories of RFC 4475 (valid but
//! tortuous, invalid, hostile), the three messages that once silenced a
//! release build, slowloris, hundreds of idle connections, strangers, and
//! responses forged from outside. After every message an OPTIONS probe
//! must be answered, and a call recorded all along must keep its RTP and
//! arrive whole. A peer that sends over TCP and never reads the answers is
//! disconnected and counted, never served with answers missing.
//!
//! Roles on loopback: SIPp's caller and callee at 127.0.0.1 (the peer
//! `sipp`), the attacker at 127.0.0.2 (the peer `hostile`, whose next hop is
//! a sink that never answers), a stranger at 127.0.0.3 (no peer).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use common::*;
use earshot_tests::pcap::RtpStream;

const ATTACKER: &str = "127.0.0.2";
const STRANGER: &str = "127.0.0.3";

/// What a message must get back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// This status code, first.
    Code(u16),
    /// No answer at all.
    Nothing,
    /// Whatever the proxy does with it (forwarded, 100 Trying): the probe
    /// after it is what matters.
    Any,
}

fn msg(start: &str, headers: &[&str], body: &str) -> Vec<u8> {
    let mut m = format!("{start}\r\n");
    for h in headers {
        m.push_str(h);
        m.push_str("\r\n");
    }
    m.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    m.into_bytes()
}

fn std_headers<'a>(call: &'a str, method: &'a str, cseq: &'a str) -> Vec<String> {
    vec![
        format!("Via: SIP/2.0/UDP {ATTACKER}:5060;branch=z9hG4bK-{call}"),
        "Max-Forwards: 70".into(),
        format!("From: <sip:777@{ATTACKER}>;tag=t-{call}"),
        "To: <sip:500@example.net>".into(),
        format!("Call-ID: {call}@{ATTACKER}"),
        format!("CSeq: {cseq} {method}"),
        format!("Contact: <sip:777@{ATTACKER}:5060>"),
    ]
}

fn request(method: &str, call: &str, extra: &[&str], body: &str) -> Vec<u8> {
    let hs = std_headers(call, method, "1");
    let mut all: Vec<&str> = hs.iter().map(String::as_str).collect();
    all.extend_from_slice(extra);
    if !body.is_empty() {
        all.push("Content-Type: application/sdp");
    }
    msg(&format!("{method} sip:500@example.net SIP/2.0"), &all, body)
}

fn sdp(ip: &str, extra: &str) -> String {
    format!("v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n{extra}")
}

/// The corpus: (name, bytes, what it must get back).
fn corpus() -> Vec<(&'static str, Vec<u8>, Expect)> {
    let audio = "m=audio 7000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
    let mut c: Vec<(&str, Vec<u8>, Expect)> = vec![
        // Valid but tortuous (RFC 4475 §3.1.1).
        (
            "wsinv: folding, compact forms, odd case and spacing",
            format!(
                "INVITE sip:vivekg@chair-dnrc.example.com;unknownparam SIP/2.0\r\nTO :\r\n sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n\r\nfrom   : \"J Rosenberg \\\\\\\"\"       <sip:jdrosen@example.com>\r\n  ;\r\n  tag = 98asjd8\r\nMaX-fOrWaRdS: 0068\r\nCall-ID: wsinv.ndaksdj@192.0.2.1\r\nContent-Length   : 0\r\ncseq: 0009\r\n  INVITE\r\nVia  : SIP  /   2.0\r\n /UDP\r\n    {ATTACKER};branch=390skdjuw\r\ns :\r\nNewFangledHeader:   newfangled value\r\n continued newfangled value\r\nUnknownHeaderWithUnusualValue: ;;,,;;,;\r\n\r\n"
            )
            .into_bytes(),
            Expect::Any,
        ),
        (
            "intmeth: a method of every token character",
            msg(
                "!interesting-Method0123456789_*+`.%indeed'~ sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com SIP/2.0",
                &[
                    &format!("Via: SIP/2.0/TCP {ATTACKER};branch=z9hG4bK-.!%66*_+`'~"),
                    "To: \"BEL:\\\u{7} NUL:\\\u{0} DEL:\\\u{7f}\" <sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*@example.com>",
                    "From: token1~` token2'+_ token3*%!.- <sip:mundane@example.com>;fromParam''~+*_!.-%=\"работающий\";tag=_token~1'+`*%!-.",
                    "Call-ID: intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{",
                    "CSeq: 139122385 !interesting-Method0123456789_*+`.%indeed'~",
                    "Max-Forwards: 255",
                ],
                "",
            ),
            Expect::Any,
        ),
        (
            "esc01: escaped characters in the URI and display name",
            msg(
                "INVITE sip:sips%3Auser%40example.com@example.net SIP/2.0",
                &[
                    "To: sip:%75se%72@example.com",
                    "From: <sip:I%20have%20spaces@example.net>;tag=938",
                    "Max-Forwards: 87",
                    "i: esc01.239409asdfakjkn23onasd0-3234",
                    "CSeq: 234234 INVITE",
                    &format!("Via: SIP/2.0/UDP {ATTACKER};branch=z9hG4bKkdjuw"),
                    "C: application/sdp",
                    "Contact: <sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31>",
                ],
                &sdp("192.0.2.20", audio),
            ),
            Expect::Code(100),
        ),
        (
            "longreq: a long header value and many Vias",
            {
                let long = "a".repeat(3000);
                let vias: Vec<String> = (0..40)
                    .map(|i| format!("Via: SIP/2.0/UDP 192.0.2.{i};branch=z9hG4bKlong{i}"))
                    .collect();
                let mut hs: Vec<String> = vec![format!(
                    "Via: SIP/2.0/UDP {ATTACKER};branch=z9hG4bK-longreq"
                )];
                hs.extend(vias);
                hs.extend([
                    "Max-Forwards: 70".to_owned(),
                    format!("X-Long: {long}"),
                    format!("From: <sip:777@{ATTACKER}>;tag=long"),
                    "To: <sip:500@example.net>".to_owned(),
                    "Call-ID: longreq@x".to_owned(),
                    "CSeq: 1 MESSAGE".to_owned(),
                ]);
                let refs: Vec<&str> = hs.iter().map(String::as_str).collect();
                msg("MESSAGE sip:500@example.net SIP/2.0", &refs, "")
            },
            Expect::Any,
        ),
        (
            // Issue 30: ~30 000 list elements cost a shard ~11 ms before the
            // parser bounded them while tokenizing; now it gives up after 256.
            "vialist: 60 KB of Via: a,a,a,... (refused while tokenizing)",
            {
                let list = vec!["a"; 30_000].join(",");
                msg(
                    "OPTIONS sip:500@example.net SIP/2.0",
                    &[
                        &format!("Via: SIP/2.0/UDP {ATTACKER};branch=z9hG4bK-vialist,{list}"),
                        "Max-Forwards: 70",
                        &format!("From: <sip:777@{ATTACKER}>;tag=vl"),
                        "To: <sip:500@example.net>",
                        "Call-ID: vialist@x",
                        "CSeq: 1 OPTIONS",
                    ],
                    "",
                )
            },
            Expect::Nothing,
        ),
        (
            "transports: Vias with transports nobody knows",
            request(
                "OPTIONS",
                "transports",
                &["Via: SIP/2.0/SCTP t1.example.com;branch=z9hG4bKkdjuw", "Via: SIP/2.0/TLS t2.example.com;branch=z9hG4bKkdjuw2"],
                "",
            ),
            Expect::Any,
        ),
        (
            "dblreq: two requests in one datagram (Content-Length ends the first)",
            {
                let mut two = request("OPTIONS", "dbl1", &[], "");
                two.extend(request("OPTIONS", "dbl2", &[], ""));
                two
            },
            Expect::Any,
        ),
        (
            "mpart01: a multipart body",
            request(
                "MESSAGE",
                "mpart",
                &["Content-Type: multipart/mixed;boundary=7a9cbec02ceef655"],
                "--7a9cbec02ceef655\r\nContent-Type: text/plain\r\n\r\nhello\r\n--7a9cbec02ceef655--\r\n",
            ),
            Expect::Any,
        ),
        // Invalid (RFC 4475 §3.1.2): the answers RFC 3261 asks for.
        (
            "badinv01: no Call-ID",
            msg(
                "INVITE sip:500@example.net SIP/2.0",
                &[
                    &format!("Via: SIP/2.0/UDP {ATTACKER};branch=z9hG4bK-nocallid"),
                    "Max-Forwards: 70",
                    "From: <sip:777@example.net>;tag=1",
                    "To: <sip:500@example.net>",
                    "CSeq: 1 INVITE",
                ],
                "",
            ),
            Expect::Code(400),
        ),
        (
            "insuf: no From, no To",
            msg(
                "OPTIONS sip:500@example.net SIP/2.0",
                &[
                    &format!("Via: SIP/2.0/UDP {ATTACKER};branch=z9hG4bK-insuf"),
                    "Call-ID: insuf@x",
                    "CSeq: 1 OPTIONS",
                ],
                "",
            ),
            Expect::Code(400),
        ),
        (
            "mismatch01: CSeq names another method",
            {
                let hs = std_headers("mismatch", "INVITE", "1");
                let refs: Vec<&str> = hs.iter().map(String::as_str).collect();
                msg("OPTIONS sip:500@example.net SIP/2.0", &refs, "")
            },
            Expect::Code(400),
        ),
        (
            "badvers: SIP/7.0",
            {
                let hs = std_headers("badvers", "OPTIONS", "1");
                let refs: Vec<&str> = hs.iter().map(String::as_str).collect();
                msg("OPTIONS sip:500@example.net SIP/7.0", &refs, "")
            },
            Expect::Code(505),
        ),
        (
            "scalar02: Max-Forwards that is not a number",
            request("OPTIONS", "scalar", &[], "")
                .replace_bytes(b"Max-Forwards: 70", b"Max-Forwards: 300000000000000000000"),
            Expect::Code(400),
        ),
        (
            "clerr: a Content-Length beyond the body",
            request("INVITE", "clerr", &[], "")
                .replace_bytes(b"Content-Length: 0", b"Content-Length: 9999"),
            Expect::Code(400),
        ),
        (
            "unksch: a Request-URI of no scheme the recorder knows",
            {
                let hs = std_headers("unksch", "OPTIONS", "1");
                let refs: Vec<&str> = hs.iter().map(String::as_str).collect();
                msg("OPTIONS NOTSIP:joe@example.com SIP/2.0", &refs, "")
            },
            Expect::Code(416),
        ),
        (
            "a loop: the recorder's own Via",
            request(
                "OPTIONS",
                "loop",
                &["Via: SIP/2.0/UDP 127.0.0.1:RECORDER_PORT;branch=z9hG4bK-es0011223344556677"],
                "",
            ),
            Expect::Code(482),
        ),
        (
            "Max-Forwards 0 toward someone else",
            request("MESSAGE", "maxfwd", &[], "").replace_bytes(b"Max-Forwards: 70", b"Max-Forwards: 0"),
            Expect::Code(483),
        ),
        // Hostile.
        (
            "crasher 2: an m= line separated by tabs",
            request(
                "INVITE",
                "tabs",
                &[],
                &sdp("192.0.2.30", "m=audio\t7000\tRTP/AVP\t0\r\n"),
            ),
            Expect::Code(100),
        ),
        (
            "crasher 3: a refused stream before the audio (then CANCEL, below)",
            request(
                "INVITE",
                "port0",
                &[],
                &sdp("192.0.2.31", &format!("m=video 0 RTP/AVP 96\r\n{audio}")),
            ),
            Expect::Code(100),
        ),
        (
            "CANCEL for the port-0 call",
            request("CANCEL", "port0", &[], ""),
            Expect::Code(200),
        ),
        (
            "SDP pointing the relay at the cloud's metadata service",
            request("INVITE", "metadata", &[], &sdp("169.254.169.254", audio)),
            Expect::Code(488),
        ),
        (
            "a stray 200 whose Via points at a victim",
            msg(
                "SIP/2.0 200 OK",
                &[
                    "Via: SIP/2.0/UDP 127.0.0.1:RECORDER_PORT;branch=z9hG4bK-es00000000deadbeef",
                    "Via: SIP/2.0/UDP 198.51.100.1:5060;branch=z9hG4bKvictim",
                    "From: <sip:a@x>;tag=1",
                    "To: <sip:b@x>;tag=2",
                    "Call-ID: stray@x",
                    "CSeq: 1 INVITE",
                ],
                "",
            ),
            Expect::Nothing,
        ),
        ("binary garbage", (0..1500u32).map(|i| (i * 37 % 251) as u8).collect(), Expect::Nothing),
        ("an empty datagram's worth of CRLFs", b"\r\n\r\n\r\n".to_vec(), Expect::Nothing),
    ];
    // Over UDP and TCP alike: Content-Length near 2^64 (crasher 1).
    c.push((
        "crasher 1: Content-Length 2^64 minus the head",
        request("OPTIONS", "huge", &[], "").replace_bytes(
            b"Content-Length: 0",
            b"Content-Length: 18446744073709551000",
        ),
        Expect::Code(400),
    ));
    c
}

trait ReplaceBytes {
    fn replace_bytes(self, from: &[u8], to: &[u8]) -> Vec<u8>;
}

impl ReplaceBytes for Vec<u8> {
    fn replace_bytes(self, from: &[u8], to: &[u8]) -> Vec<u8> {
        match self.windows(from.len()).position(|w| w == from) {
            Some(i) => [&self[..i], to, &self[i + from.len()..]].concat(),
            None => panic!("{:?} not in the message", String::from_utf8_lossy(from)),
        }
    }
}

/// Responses a UDP socket receives within `wait`.
fn udp_answers(sock: &UdpSocket, wait: Duration) -> Vec<String> {
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let deadline = Instant::now() + wait;
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    while Instant::now() < deadline {
        if let Ok(n) = sock.recv(&mut buf) {
            out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    out
}

fn code(response: &str) -> Option<u16> {
    response.strip_prefix("SIP/2.0 ")?.get(..3)?.parse().ok()
}

/// What a TCP connection receives within `wait` (until the recorder closes it).
fn tcp_answers(stream: &mut TcpStream, wait: Duration) -> (Vec<u16>, bool) {
    stream
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let deadline = Instant::now() + wait;
    let mut text = Vec::new();
    let mut buf = [0u8; 65536];
    let mut closed = false;
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(n) => text.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
    let text = String::from_utf8_lossy(&text);
    let codes = text
        .split("SIP/2.0 ")
        .skip(1)
        .filter_map(|r| r.get(..3)?.parse().ok())
        .collect();
    (codes, closed)
}

/// An OPTIONS for the recorder itself, answered locally: the first
/// transmission must be answered within 400 ms.
fn probe(attacker: &UdpSocket, recorder: SocketAddr, n: usize) {
    probe_with(attacker, recorder, n, &[Duration::from_millis(400)]);
}

/// The same OPTIONS sent the way a UDP client does (RFC 3261 Timer E: again
/// after 500 ms, 1 s, 2 s): answered to one of them. For a recorder that may
/// still be working through a backlog it was right to accept.
fn probe_retransmitting(attacker: &UdpSocket, recorder: SocketAddr, n: usize) {
    let waits = [500, 1000, 2000, 4000].map(Duration::from_millis);
    probe_with(attacker, recorder, n, &waits);
}

fn probe_with(attacker: &UdpSocket, recorder: SocketAddr, n: usize, waits: &[Duration]) {
    let call = format!("probe-{n}");
    let hs = std_headers(&call, "OPTIONS", "1");
    let refs: Vec<&str> = hs.iter().map(String::as_str).collect();
    let options = msg(&format!("OPTIONS sip:{recorder} SIP/2.0"), &refs, "");
    let mut answers = Vec::new();
    for wait in waits {
        attacker.send_to(&options, recorder).unwrap();
        answers.extend(udp_answers(attacker, *wait));
        if answers
            .iter()
            .any(|a| code(a) == Some(200) && a.contains(&call))
        {
            return;
        }
    }
    panic!(
        "probe {n} unanswered after {} transmissions: {answers:?}",
        waits.len()
    );
}

#[test]
fn hostile_input_over_udp_and_tcp_never_silences_the_recorder_or_its_calls() {
    let s = setup("hostile", &users());
    // The attacker is a peer of its own whose next hop swallows everything;
    // the TCP limits are made small enough to reach (a restart applies them).
    let sink = UdpSocket::bind((ATTACKER, 0)).unwrap();
    let config = std::fs::read_to_string(&s.recorder.config).unwrap();
    let sip_line = config.lines().next().unwrap().to_owned();
    let config = config
        .replacen(
            &sip_line,
            &sip_line.replace(
                " }",
                ", limits: { tcpConnectionsPerSource: 50, tcpIdleSeconds: 3, tcpMessageSeconds: 2 } }",
            ),
            1,
        )
        .replacen(
            "peers:\n",
            &format!(
                "peers:\n  - {{ name: hostile, sources: [\"{ATTACKER}/32\"], nextHop: \"{}\" }}\n",
                sink.local_addr().unwrap()
            ),
            1,
        );
    std::fs::write(&s.recorder.config, config).unwrap();
    let mut s = s;
    s.recorder.kill9();
    s.recorder.restart(std::path::Path::new(BINARY));
    let recorder = s.recorder.sip;
    let port = recorder.port().to_string();

    // A call recorded all along.
    let talk_ms = 40_000;
    let caller = RtpStream::new(1).tone(440.0, talk_ms);
    let callee = RtpStream::new(2).tone(1000.0, talk_ms);
    let (mut uac, mut uas) = s.start_calls("008", "500", &caller, &callee, talk_ms, 1, 1, None);
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(2));

    let attacker = UdpSocket::bind((ATTACKER, 0)).unwrap();
    let mut n = 0;
    for (name, bytes, expect) in corpus() {
        let bytes = bytes.replace_bytes_all(b"RECORDER_PORT", port.as_bytes());
        // Over UDP.
        attacker.send_to(&bytes, recorder).unwrap();
        let answers = udp_answers(&attacker, Duration::from_millis(300));
        let codes: Vec<u16> = answers.iter().filter_map(|a| code(a)).collect();
        match expect {
            Expect::Code(c) => assert_eq!(codes.first(), Some(&c), "UDP {name}: {answers:?}"),
            Expect::Nothing => assert!(codes.is_empty(), "UDP {name}: {answers:?}"),
            Expect::Any => {}
        }
        probe(&attacker, recorder, n);
        n += 1;
        // Over TCP, a connection each.
        let via_tcp = bytes.replace_bytes_all(b"SIP/2.0/UDP 127.0.0.2", b"SIP/2.0/TCP 127.0.0.2");
        let local = std::net::SocketAddr::from(([127, 0, 0, 2], 0));
        let sock = socket2_connect(local, recorder);
        let mut stream = sock;
        stream.write_all(&via_tcp).unwrap();
        let (codes, _) = tcp_answers(&mut stream, Duration::from_millis(300));
        // Over a stream a Content-Length beyond what came means more is
        // coming (RFC 3261 §18.3): nothing to answer until the message's
        // time runs out and the connection is closed.
        let expect = if name.starts_with("clerr") {
            Expect::Nothing
        } else {
            expect
        };
        match expect {
            // The port-0 call exists already (its UDP INVITE): over TCP the
            // same Call-ID is a retransmission of nothing; no assertion.
            Expect::Code(c) if !name.contains("port-0") && !name.starts_with("CANCEL") => {
                assert_eq!(codes.first(), Some(&c), "TCP {name}: {codes:?}")
            }
            Expect::Nothing => assert!(codes.is_empty(), "TCP {name}: {codes:?}"),
            _ => {}
        }
        probe(&attacker, recorder, n);
        n += 1;
    }

    // A stranger gets nothing, over UDP or TCP (closed at accept).
    let stranger = UdpSocket::bind((STRANGER, 0)).unwrap();
    stranger
        .send_to(
            &request(
                "INVITE",
                "stranger",
                &[],
                &sdp("192.0.2.40", "m=audio 7000 RTP/AVP 0\r\n"),
            ),
            recorder,
        )
        .unwrap();
    assert!(udp_answers(&stranger, Duration::from_millis(300)).is_empty());
    let mut stream = socket2_connect(SocketAddr::from(([127, 0, 0, 3], 0)), recorder);
    let (_, closed) = tcp_answers(&mut stream, Duration::from_millis(500));
    assert!(closed, "a stranger's TCP connection is closed at once");

    // Slowloris: a request a byte at a time is cut off after 2 s.
    let mut slow = socket2_connect(SocketAddr::from(([127, 0, 0, 2], 0)), recorder);
    let t = Instant::now();
    let mut cut = false;
    for b in request("OPTIONS", "slow", &[], "") {
        if slow.write_all(&[b]).is_err() {
            cut = true;
            break;
        }
        let (_, closed) = tcp_answers(&mut slow, Duration::from_millis(250));
        if closed {
            cut = true;
            break;
        }
    }
    assert!(cut, "a message dribbled in is not waited for forever");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "cut after {:?}",
        t.elapsed()
    );
    probe(&attacker, recorder, n);
    n += 1;

    // Hundreds of idle connections: 50 are taken, the rest closed at once,
    // and the idle ones go after 3 s; the recorder answers throughout.
    let idle: Vec<TcpStream> = (0..600)
        .map(|_| socket2_connect(SocketAddr::from(([127, 0, 0, 2], 0)), recorder))
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    probe(&attacker, recorder, n);
    n += 1;
    let closed_early = idle
        .iter()
        .filter(|c| {
            let mut c = c.try_clone().unwrap();
            tcp_answers(&mut c, Duration::from_millis(5)).1
        })
        .count();
    assert!(
        closed_early >= 550,
        "{closed_early} of 600 closed past the limit of 50"
    );
    std::thread::sleep(Duration::from_secs(4));
    let still_open = idle
        .iter()
        .filter(|c| {
            let mut c = c.try_clone().unwrap();
            !tcp_answers(&mut c, Duration::from_millis(5)).1
        })
        .count();
    assert_eq!(still_open, 0, "idle connections are closed");
    // And a new connection is served again.
    let mut fresh = socket2_connect(SocketAddr::from(([127, 0, 0, 2], 0)), recorder);
    let hs = std_headers("fresh", "OPTIONS", "1");
    let refs: Vec<&str> = hs.iter().map(String::as_str).collect();
    fresh
        .write_all(
            &msg(&format!("OPTIONS sip:{recorder} SIP/2.0"), &refs, "")
                .replace_bytes_all(b"SIP/2.0/UDP", b"SIP/2.0/TCP"),
        )
        .unwrap();
    assert_eq!(
        tcp_answers(&mut fresh, Duration::from_millis(500))
            .0
            .first(),
        Some(&200)
    );
    probe(&attacker, recorder, n);

    // The recorded call went on untouched: every packet relayed, recorded whole.
    uac.wait_success(Duration::from_secs(90));
    uas.wait_success(Duration::from_secs(20));
    assert!(
        started.elapsed() > Duration::from_millis(talk_ms),
        "the call ran its length"
    );
    let text = s.recorder.metrics_text();
    let relayed = earshot_tests::parse_metric(
        &text,
        "earshot_rtp_packets_total{direction=\"caller_to_callee\"}",
    );
    assert_eq!(
        relayed as usize,
        caller.len(),
        "every caller packet relayed"
    );
    let recs = s.recorder.wait_recordings(1, Duration::from_secs(20));
    let seconds = recs[0].1["audio"]["durationSeconds"].as_f64().unwrap();
    let call = recs[0].1["durationSeconds"].as_f64().unwrap();
    assert!(
        (seconds - call).abs() < 0.2,
        "recorded {seconds:.2} s of a {call:.2} s call"
    );
    assert!(s.recorder.running(), "still running");
}

#[test]
fn a_tcp_peer_that_never_reads_is_disconnected_and_counted_while_others_are_answered() {
    let s = setup("slow-reader", &users());
    let recorder = s.recorder.sip;
    let slow_reader = "earshot_sip_dropped_total{reason=\"tcp_slow_reader\"}";
    assert_eq!(s.recorder.metric(slow_reader), 0.0);
    // A peer's connection (SIPp's address) that sends OPTIONS for the
    // recorder and never reads one answer: the kernel's buffers fill, then
    // the connection's write queue.
    let mut lazy = TcpStream::connect(recorder).unwrap();
    lazy.set_write_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let options = |n: usize| {
        let call = format!("lazy-{n}");
        let hs = std_headers(&call, "OPTIONS", "1");
        let refs: Vec<&str> = hs.iter().map(String::as_str).collect();
        msg(&format!("OPTIONS sip:{recorder} SIP/2.0"), &refs, "")
            .replace_bytes_all(b"SIP/2.0/UDP", b"SIP/2.0/TCP")
    };
    let started = Instant::now();
    let mut sent = 0;
    let cut = loop {
        // Paced, so no shard's inbox overflows: every request is answered.
        let batch: Vec<u8> = (sent..sent + 100).flat_map(options).collect();
        if lazy.write_all(&batch).is_err() {
            break true;
        }
        sent += 100;
        if sent % 2000 == 0 && s.recorder.metric(slow_reader) > 0.0 {
            break true;
        }
        if started.elapsed() > Duration::from_secs(90) {
            break false;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    assert!(cut, "{sent} requests sent, never disconnected");
    assert_eq!(
        s.recorder.metric(slow_reader),
        1.0,
        "counted once, after {sent} requests"
    );
    // The connection is closed: what the buffers held, then its end.
    lazy.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = vec![0u8; 1 << 16];
    let deadline = Instant::now() + Duration::from_secs(20);
    let closed = loop {
        match lazy.read(&mut buf) {
            Ok(0) => break true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
            Err(_) => break false,
        }
        if Instant::now() > deadline {
            break false;
        }
    };
    assert!(
        closed,
        "the connection of a peer that does not read is closed"
    );
    // Others are answered: OPTIONS over UDP, and a new connection.
    // The shards may still be answering (into a closed connection) what the
    // lazy peer had sent, so the probe retransmits as a UDP client does.
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    probe_retransmitting(&udp, recorder, 0);
    let mut fresh = TcpStream::connect(recorder).unwrap();
    fresh.write_all(&options(sent + 1)).unwrap();
    assert_eq!(
        tcp_answers(&mut fresh, Duration::from_millis(500))
            .0
            .first(),
        Some(&200)
    );
    let mut s = s;
    assert!(s.recorder.running(), "still running");
}

trait ReplaceAll {
    fn replace_bytes_all(&self, from: &[u8], to: &[u8]) -> Vec<u8>;
}

impl ReplaceAll for Vec<u8> {
    fn replace_bytes_all(&self, from: &[u8], to: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len());
        let mut i = 0;
        while i < self.len() {
            if self[i..].starts_with(from) {
                out.extend_from_slice(to);
                i += from.len();
            } else {
                out.push(self[i]);
                i += 1;
            }
        }
        out
    }
}

/// A TCP connection to `to` from the loopback address of `from`.
fn socket2_connect(from: SocketAddr, to: SocketAddr) -> TcpStream {
    earshot_tests::tcp_connect_from(from, to)
}
