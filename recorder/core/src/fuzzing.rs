//! Entry points for coverage-guided fuzzing (`make fuzz`, `recorder/core/fuzz/`)
//! and for replaying the committed corpus in `make test`: each takes
//! arbitrary bytes, feeds them to a parser or to the whole engine, and
//! panics only when an invariant breaks. None may panic otherwise: every
//! byte here is what the network could send.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::announce::{Onward, rewrite_rtcp};
use crate::config::{CoreConfig, EffectiveUser, IpNet, Peer, Target, Timers, Transport};
use crate::engine::{Output, Recorder};
use crate::sdp::Sdp;
use crate::sip::message::{Framed, Message, frame_stream_from};
use crate::{RecordingMode, SipLimits, UnknownSources, dtmf};

/// TCP framing, resumed over the input cut in pieces as a stream would be.
pub fn framing(data: &[u8]) {
    let Some((&step, data)) = data.split_first() else {
        return;
    };
    let step = usize::from(step).max(1);
    let mut buf: Vec<u8> = Vec::new();
    let mut resume = 0;
    for piece in data.chunks(step) {
        buf.extend_from_slice(piece);
        loop {
            match frame_stream_from(&buf, resume) {
                Ok(Framed::Message(len)) => {
                    assert!(len > 0 && len <= buf.len(), "a frame is inside the buffer");
                    buf.drain(..len);
                    resume = 0;
                }
                Ok(Framed::NeedMore { resume: r }) => {
                    assert!(r <= buf.len());
                    resume = r;
                    break;
                }
                Err(_) => return,
            }
        }
    }
}

/// SIP message parsing, and what the proxy does to a parsed message.
pub fn message(data: &[u8]) {
    let routed = crate::sip::message::call_id_of(data);
    if let Ok(mut m) = Message::parse(data) {
        assert_eq!(
            routed.as_deref(),
            m.call_id().as_deref(),
            "a message is routed by the Call-ID its shard parses"
        );
        let again = Message::parse(&m.to_bytes());
        assert!(again.is_ok(), "what the parser took, re-serialised, parses");
        let _ = (
            m.branch(),
            m.cseq(),
            m.from_tag(),
            m.to_tag(),
            m.request_uri(),
        );
        m.push_via("SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-fuzz".into());
        m.push_record_route("<sip:192.0.2.1;lr>".into());
        m.pop_via();
        m.pop_route();
        let _ = m.to_bytes();
    }
    let _ = Message::parse_unchecked(data);
}

/// SDP parsing and rewriting.
pub fn sdp(data: &[u8]) {
    let Ok(sdp) = Sdp::parse(data) else { return };
    let ports: Vec<u16> = (0..sdp.streams.len() as u16)
        .map(|i| 30000 + 2 * i)
        .collect();
    let out = sdp.rewrite("192.0.2.9".parse().expect("an address"), &ports);
    let again = Sdp::parse(&out).expect("a rewritten SDP parses");
    assert_eq!(again.streams.len(), sdp.streams.len(), "streams kept");
    for s in &sdp.streams {
        let _ = (s.telephone_event(), s.codec(0));
    }
}

/// RTP and RTCP as the relay looks at them: the RTP header, RFC 4733
/// events, G.711 decoding and the RTCP rewriting announcements need.
pub fn rtp(data: &[u8]) {
    if let Ok(r) = rtp_rs::RtpReader::new(data) {
        let _ = (
            r.payload_type(),
            r.ssrc(),
            r.timestamp(),
            r.sequence_number(),
        );
        let _ = dtmf::parse_telephone_event(r.payload());
        let mut out = Vec::new();
        for name in ["PCMU", "PCMA", "G722", "OPUS", "G729"] {
            for rate in [crate::codec::NARROWBAND, crate::codec::WIDEBAND] {
                if let Some(c) = crate::codec::Codec::of(name) {
                    let mut d = crate::codec::SideDecoder::new(c, rate);
                    d.decode(r.payload(), &mut out);
                    assert!(out.len() <= 2 * crate::codec::MAX_SAMPLES, "bounded");
                    out.clear();
                }
            }
        }
    }
    let _ = dtmf::parse_telephone_event(data);
    let _ = dtmf::parse_info("application/dtmf-relay", data);
    let _ = dtmf::parse_info("application/dtmf", data);
    let mut copy = data.to_vec();
    rewrite_rtcp(&mut copy, &Onward::default(), &Onward::default());
    assert_eq!(copy, data, "untouched streams leave RTCP as it is");
}

const RECORDER: &str = "10.0.0.9:5060";
/// Where input comes from: two peers' addresses and a stranger's.
const SOURCES: [&str; 4] = [
    "10.0.0.1:5060",
    "10.0.0.2:5060",
    "10.0.1.7:5060",
    "192.0.2.66:5060",
];
const BOUND: std::ops::Range<u16> = 30000..30040;

fn config() -> CoreConfig {
    let user = |mode, shortcode| EffectiveUser {
        display_name: None,
        mode,
        shortcode,
    };
    CoreConfig {
        advertised: RECORDER.parse().expect("an address"),
        split: None,
        tls_port: None,
        peers: vec![
            Peer {
                siprec: false,
                name: "pbx".into(),
                sources: vec![IpNet::parse("10.0.0.0/24").expect("a CIDR")],
                next_hop: Some(Target {
                    transport: Transport::Udp,
                    addr: SOURCES[1].parse().expect("an address"),
                }),
            },
            Peer {
                siprec: false,
                name: "trunk".into(),
                sources: vec![IpNet::parse("10.0.1.0/24").expect("a CIDR")],
                next_hop: Some(Target {
                    transport: Transport::Tcp,
                    addr: SOURCES[0].parse().expect("an address"),
                }),
            },
        ],
        users: [
            ("008".to_owned(), user(RecordingMode::Always, None)),
            ("012".to_owned(), user(RecordingMode::OnDemand, Some(5))),
            ("003".to_owned(), user(RecordingMode::Never, None)),
        ]
        .into(),
        hosts: Default::default(),
        timers: Timers::default(),
        seed: [3; 32],
        unknown_sources: UnknownSources::Refuse,
        limits: SipLimits::default(),
        allow_local_media: false,
        refuse_video: false,
        refuse_unreadable_media: false,
        announcement: crate::announce::AnnouncementConfig {
            mode: crate::AnnouncementMode::Beep,
            periodic: Some(Duration::from_secs(5)),
            stop_tone: true,
            ..Default::default()
        },
    }
}

/// Where SIP may go: a peer, or back to a source that sent something.
fn may_send_to(cfg: &CoreConfig, addr: SocketAddr) -> bool {
    cfg.peer_of(addr.ip()).is_some() || SOURCES.iter().any(|s| s.parse() == Ok(addr))
}

fn check_rtp(to: SocketAddr) {
    assert!(
        !matches!(to.ip(), IpAddr::V4(v4) if v4.is_link_local()),
        "RTP toward a link-local address"
    );
}

/// The whole engine, driven by a program in the input: SIP from any of the
/// sources (peers and a stranger), responses built from what it forwarded,
/// RTP to any local port, time passing. After each step the outputs are
/// checked: SIP goes only to a peer or back to a source that sent it,
/// and RTP never to a link-local address.
pub fn engine(data: &[u8]) {
    let cfg = config();
    let ports: Vec<u16> = BOUND.step_by(2).collect();
    let mut rec = Recorder::new(cfg.clone(), &ports);
    // What it would hand the kernel is checked like what it relays.
    rec.set_kernel_relay(true);
    let t0 = Instant::now();
    let mut now = t0;
    let mut forwarded: Vec<Message> = Vec::new();
    let mut input = data;
    let take = |input: &mut &[u8], n: usize| -> Vec<u8> {
        let n = n.min(input.len());
        let (a, b) = input.split_at(n);
        *input = b;
        a.to_vec()
    };
    while let Some((&op, rest)) = input.split_first() {
        input = rest;
        let arg = take(&mut input, 1).first().copied().unwrap_or(0);
        let source = SOURCES[usize::from(arg) % SOURCES.len()];
        let target = Target {
            transport: if arg & 0x80 == 0 {
                Transport::Udp
            } else {
                Transport::Tcp
            },
            addr: source.parse().expect("an address"),
        };
        match op % 7 {
            0 => {
                let len = usize::from(take(&mut input, 1).first().copied().unwrap_or(0)) * 8;
                let bytes = take(&mut input, len);
                rec.handle_sip(now, target, &bytes);
            }
            1 => {
                // A response to something the recorder forwarded.
                let Some(req) = forwarded.get(usize::from(arg) % forwarded.len().max(1)) else {
                    continue;
                };
                // Forks answer with other tags (the tag follows `arg`);
                // trunks challenge, redirect and ask for longer sessions.
                let code = [
                    100u16, 180, 183, 200, 200, 486, 487, 408, 503, 407, 401, 302, 422, 491,
                ][usize::from(arg >> 3) % 14];
                let body = if code == 200 || code == 183 {
                    format!(
                        "v=0\r\no=- 1 1 IN IP4 10.0.0.2\r\ns=-\r\nc=IN IP4 10.0.0.2\r\nt=0 0\r\nm=audio {} RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n",
                        6000 + u16::from(arg)
                    )
                } else {
                    String::new()
                };
                let mut r = Message {
                    start: crate::sip::StartLine::Response {
                        code,
                        reason: "Fuzz".into(),
                    },
                    headers: req.headers.clone(),
                    body: body.into_bytes(),
                };
                if code > 100
                    && let Some(to) = r.header("To")
                    && !to.contains("tag=")
                {
                    r.set_header("To", format!("{to};tag=fz{arg}"));
                }
                if !r.body.is_empty() {
                    r.set_header("Content-Type", "application/sdp".into());
                }
                let dest = Target {
                    transport: target.transport,
                    addr: SOURCES[1].parse().expect("an address"),
                };
                rec.handle_sip(now, dest, &r.to_bytes());
            }
            2 => {
                let port = BOUND.start + u16::from(arg) % (BOUND.end - BOUND.start + 4);
                let len = usize::from(take(&mut input, 1).first().copied().unwrap_or(0));
                let mut bytes = take(&mut input, len);
                let from: SocketAddr =
                    format!("{}:{}", &source[..source.len() - 5], 4000 + u16::from(arg))
                        .parse()
                        .expect("an address");
                if let Some(relay) = rec.handle_rtp(now, port, from, &mut bytes) {
                    check_rtp(relay.to);
                }
            }
            3 => {
                now += Duration::from_millis(u64::from(arg) * 250);
                rec.handle_timeout(now);
            }
            5 => {
                // The caller tries a forwarded INVITE again, as after a
                // challenge: same Call-ID and From tag, new branch and CSeq,
                // from where it came or from elsewhere.
                let Some(req) = forwarded
                    .iter()
                    .rev()
                    .find(|m| m.method() == Some("INVITE") && m.to_tag().is_none())
                else {
                    continue;
                };
                let mut retry = req.clone();
                retry.pop_via();
                retry.pop_via();
                retry.push_via(format!("SIP/2.0/UDP {source};branch=z9hG4bK-r{arg}"));
                let seq = req.cseq().map_or(1, |c| c.0).saturating_add(1);
                retry.set_header("CSeq", format!("{seq} INVITE"));
                retry.set_header("Proxy-Authorization", "Digest username=\"f\"".into());
                rec.handle_sip(now, target, &retry.to_bytes());
            }
            6 => {
                // An in-dialog request from either party (or a stranger
                // claiming to be one) in a dialog some response created.
                let Some(req) = forwarded.get(usize::from(arg) % forwarded.len().max(1)) else {
                    continue;
                };
                let method = ["BYE", "UPDATE", "PRACK", "INVITE", "INFO", "ACK", "REFER"]
                    [usize::from(arg >> 4) % 7];
                let (from, to) = (req.header("From"), req.header("To"));
                let (Some(from), Some(to)) = (from, to) else {
                    continue;
                };
                let to = if to.contains("tag=") {
                    to
                } else {
                    format!("{to};tag=fz{arg}")
                };
                let (from, to) = if arg & 1 == 0 { (from, to) } else { (to, from) };
                let body = if matches!(method, "UPDATE" | "INVITE" | "PRACK") {
                    format!(
                        "v=0\r\no=- 1 2 IN IP4 10.0.0.7\r\ns=-\r\nc=IN IP4 10.0.0.7\r\nt=0 0\r\nm=audio {} RTP/AVP 0\r\n",
                        7000 + u16::from(arg)
                    )
                } else {
                    String::new()
                };
                let text = format!(
                    "{method} sip:x@10.0.0.2 SIP/2.0\r\nVia: SIP/2.0/UDP {source};branch=z9hG4bK-d{arg}{op}\r\nRoute: <sip:10.0.0.9:5060;lr>\r\nMax-Forwards: 70\r\nFrom: {from}\r\nTo: {to}\r\nCall-ID: {}\r\nCSeq: {} {method}\r\n{}Content-Length: {}\r\n\r\n{body}",
                    req.call_id().unwrap_or_default(),
                    10 + u32::from(arg),
                    if body.is_empty() {
                        ""
                    } else {
                        "Content-Type: application/sdp\r\n"
                    },
                    body.len()
                );
                rec.handle_sip(now, target, text.as_bytes());
            }
            _ => {
                // A whole INVITE, to reach the states a call goes through.
                let sdp = format!(
                    "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio {} RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\n",
                    4000 + u16::from(arg)
                );
                let from = ["008", "012", "003", "777"][usize::from(arg) % 4];
                let invite = format!(
                    "INVITE sip:500@10.0.0.2 SIP/2.0\r\nVia: SIP/2.0/UDP {source};branch=z9hG4bK-f{arg}\r\nMax-Forwards: 70\r\nFrom: <sip:{from}@pbx>;tag=f{arg}\r\nTo: <sip:500@pbx>\r\nCall-ID: fz{arg}\r\nCSeq: 1 INVITE\r\nContact: <sip:{from}@{source}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
                    sdp.len()
                );
                rec.handle_sip(now, target, invite.as_bytes());
            }
        }
        loop {
            match rec.poll_output() {
                Output::Sip { target: to, data } => {
                    assert!(
                        may_send_to(&cfg, to.addr),
                        "SIP sent to an address only a message named: {to:?}"
                    );
                    if let Ok(m) = Message::parse_unchecked(&data)
                        && m.method().is_some()
                    {
                        forwarded.push(m);
                        if forwarded.len() > 16 {
                            forwarded.remove(0);
                        }
                    }
                }
                Output::Rtp { relay, .. } => check_rtp(relay.to),
                Output::Kernel { forward, .. } => {
                    if let Some(f) = forward {
                        check_rtp(SocketAddr::V4(f.to));
                    }
                }
                Output::Event(_) => {}
                // A new call handed to another shard: this core kept nothing of it.
                Output::Divert { source, .. } => {
                    assert!(may_send_to(&cfg, source.addr), "diverted from a stranger");
                }
                Output::Timeout(_) => break,
            }
        }
    }
}

/// SIPREC bodies: the multipart framing, each part (and the whole input)
/// read as recording metadata, its label lookups, user parts and updates.
pub fn siprec(data: &[u8]) {
    use crate::siprec::{MAX_PARTS, Metadata, multipart};
    let metadata = |bytes: &[u8]| {
        let Ok(m) = Metadata::parse(bytes) else {
            return;
        };
        for s in &m.streams {
            let _ = m.senders_of_label(&s.label);
        }
        for p in &m.participants {
            let _ = p.user();
        }
        let mut merged = m.clone();
        merged.apply(m);
    };
    if let Ok(parts) = multipart("multipart/mixed;boundary=foobar", data) {
        assert!(parts.len() <= MAX_PARTS, "parts are bounded");
        for p in parts {
            assert!(p.body.len() <= data.len(), "a part is inside the body");
            metadata(p.body);
        }
    }
    metadata(data);
}
