//! A caller, the recorder core and a callee on a simulated network: messages
//! are text, time is an `Instant` the test moves forward, nothing touches a
//! socket. Factories are named `mk_*` as in linkerd2's tests.
#![allow(dead_code)] // each test binary uses a different part of the harness

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use earshot_recorder_core::sip::Message;
use earshot_recorder_core::{
    CoreConfig, EffectiveUser, Event, IpNet, Output, Peer, Recorder, RecordingMode, Relay,
    SipLimits, Target, Timers, Transport, UnknownSources,
};

pub const RECORDER: &str = "10.0.0.9:5060";
pub const CALLER: &str = "10.0.0.1:5060";
pub const CALLEE: &str = "10.0.0.2:5060";
pub const CALLER_RTP: &str = "10.0.0.1:4000";
pub const CALLEE_RTP: &str = "10.0.0.2:6000";

pub fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

pub fn udp(s: &str) -> Target {
    Target {
        transport: Transport::Udp,
        addr: addr(s),
    }
}

/// Users: 008 Always, 012 OnDemand *5, 013 OnDemand *5, 003 Never.
pub fn mk_config() -> CoreConfig {
    let mut users = BTreeMap::new();
    let user = |mode, shortcode| EffectiveUser {
        display_name: None,
        mode,
        shortcode,
    };
    users.insert("008".to_owned(), user(RecordingMode::Always, None));
    users.insert("012".to_owned(), user(RecordingMode::OnDemand, Some(5)));
    users.insert("013".to_owned(), user(RecordingMode::OnDemand, Some(5)));
    users.insert("003".to_owned(), user(RecordingMode::Never, None));
    CoreConfig {
        advertised: addr(RECORDER),
        split: None,
        tls_port: None,
        peers: vec![Peer {
            siprec: false,
            name: "pbx".into(),
            sources: vec![IpNet::parse("10.0.0.0/24").unwrap()],
            next_hop: Some(udp(CALLEE)),
        }],
        users,
        hosts: BTreeMap::new(),
        timers: Timers::default(),
        seed: [7; 32],
        unknown_sources: UnknownSources::Refuse,
        limits: SipLimits::default(),
        allow_local_media: false,
        refuse_video: false,
        refuse_unreadable_media: false,
        announcement: Default::default(),
    }
}

pub fn mk_recorder() -> Recorder {
    let ports: Vec<u16> = (30000..30100).step_by(2).collect();
    Recorder::new(mk_config(), &ports)
}

pub fn sdp(ip: &str, port: u16, extra: &str) -> String {
    format!(
        "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n{extra}"
    )
}

pub fn with_body(head: &str, body: &str) -> String {
    if body.is_empty() {
        format!("{head}Content-Length: 0\r\n\r\n")
    } else {
        format!(
            "{head}Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    }
}

pub fn mk_invite(from: &str, to: &str, call_id: &str, body: &str) -> String {
    with_body(
        &format!(
            "INVITE sip:{to}@10.0.0.2:5060 SIP/2.0\r\n\
             Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-{call_id}-1\r\n\
             Max-Forwards: 70\r\n\
             From: \"Caller\" <sip:{from}@pbx.example>;tag=c-{call_id}\r\n\
             To: <sip:{to}@pbx.example>\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: 1 INVITE\r\n\
             Contact: <sip:{from}@10.0.0.1:5060>\r\n"
        ),
        body,
    )
}

/// A response from the callee to a request the recorder forwarded to it:
/// Via, From, To (with the callee's tag), Call-ID, CSeq and Record-Route echoed.
pub fn mk_response(req: &Message, code: u16, reason: &str, body: &str) -> String {
    let mut head = format!("SIP/2.0 {code} {reason}\r\n");
    for v in req.headers_named("Via") {
        head.push_str(&format!("Via: {v}\r\n"));
    }
    for rr in req.headers_named("Record-Route") {
        head.push_str(&format!("Record-Route: {rr}\r\n"));
    }
    head.push_str(&format!("From: {}\r\n", req.header("From").unwrap()));
    let to = req.header("To").unwrap();
    let to = if to.contains("tag=") || code == 100 {
        to
    } else {
        format!("{to};tag=callee-tag")
    };
    head.push_str(&format!("To: {to}\r\n"));
    head.push_str(&format!("Call-ID: {}\r\n", req.call_id().unwrap()));
    head.push_str(&format!("CSeq: {}\r\n", req.header("CSeq").unwrap()));
    if (200..300).contains(&code) {
        head.push_str("Contact: <sip:callee@10.0.0.2:5060>\r\n");
    }
    with_body(&head, body)
}

/// An in-dialog request from the caller (`from_caller`) or the callee,
/// routed through the recorder with the Record-Route it learned.
pub fn mk_in_dialog(
    method: &str,
    call_id: &str,
    cseq: u32,
    from_caller: bool,
    body: &str,
    extra: &str,
) -> String {
    let (uri, via, from, to) = if from_caller {
        (
            "sip:callee@10.0.0.2:5060",
            "SIP/2.0/UDP 10.0.0.1:5060",
            format!("\"Caller\" <sip:X@pbx.example>;tag=c-{call_id}"),
            "<sip:Y@pbx.example>;tag=callee-tag".to_owned(),
        )
    } else {
        (
            "sip:X@10.0.0.1:5060",
            "SIP/2.0/UDP 10.0.0.2:5060",
            "<sip:Y@pbx.example>;tag=callee-tag".to_owned(),
            format!("\"Caller\" <sip:X@pbx.example>;tag=c-{call_id}"),
        )
    };
    let head = format!(
        "{method} {uri} SIP/2.0\r\n\
         Via: {via};branch=z9hG4bK-{call_id}-{method}-{cseq}-{from_caller}\r\n\
         Route: <sip:{RECORDER};lr>\r\n\
         Max-Forwards: 70\r\n\
         From: {from}\r\n\
         To: {to}\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: {cseq} {method}\r\n{extra}"
    );
    if body.is_empty() || extra.contains("Content-Type") {
        format!("{head}Content-Length: {}\r\n\r\n{body}", body.len())
    } else {
        with_body(&head, body)
    }
}

/// A response to an in-dialog request that the recorder forwarded.
pub fn mk_in_dialog_response(req: &Message, code: u16) -> String {
    mk_in_dialog_answer(req, code, "")
}

/// [`mk_in_dialog_response`] carrying an SDP body (an offer or answer).
pub fn mk_in_dialog_answer(req: &Message, code: u16, sdp: &str) -> String {
    let mut head = format!("SIP/2.0 {code} OK\r\n");
    for v in req.headers_named("Via") {
        head.push_str(&format!("Via: {v}\r\n"));
    }
    for name in ["From", "To", "Call-ID", "CSeq"] {
        head.push_str(&format!("{name}: {}\r\n", req.header(name).unwrap()));
    }
    with_body(&head, sdp)
}

/// What came out of the core after one input.
#[derive(Default, Debug)]
pub struct Out {
    pub sip: Vec<(Target, Message)>,
    pub events: Vec<Event>,
    /// RTP packets the core made (announcements).
    pub rtp: Vec<(Relay, Vec<u8>)>,
    /// Messages handed to another shard.
    pub diverted: Vec<(Target, Vec<u8>)>,
    /// Streams handed to the kernel fast path or taken back.
    pub kernel: Vec<(
        earshot_recorder_core::engine::KernelStream,
        Option<earshot_recorder_core::engine::KernelForward>,
    )>,
}

impl Out {
    /// The only message sent to `to`.
    pub fn to(&self, to: &str) -> &Message {
        let sent: Vec<&Message> = self
            .sip
            .iter()
            .filter(|(t, _)| t.addr == addr(to))
            .map(|(_, m)| m)
            .collect();
        assert_eq!(
            sent.len(),
            1,
            "expected exactly one message to {to}, got {:#?}",
            self.sip
        );
        sent[0]
    }

    pub fn codes_to(&self, to: &str) -> Vec<u16> {
        self.sip
            .iter()
            .filter(|(t, _)| t.addr == addr(to))
            .filter_map(|(_, m)| m.code())
            .collect()
    }

    pub fn methods_to(&self, to: &str) -> Vec<String> {
        self.sip
            .iter()
            .filter(|(t, _)| t.addr == addr(to))
            .filter_map(|(_, m)| m.method().map(str::to_owned))
            .collect()
    }

    pub fn recording(&self) -> Vec<bool> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Recording { on, .. } => Some(*on),
                _ => None,
            })
            .collect()
    }
}

pub fn drain(rec: &mut Recorder) -> Out {
    let mut out = Out::default();
    loop {
        match rec.poll_output() {
            Output::Sip { target, data } => {
                // Unchecked: a 400 to a request without a Call-ID has none either.
                let msg = Message::parse_unchecked(&data).unwrap_or_else(|e| {
                    panic!(
                        "core sent unparseable SIP ({e}): {}",
                        String::from_utf8_lossy(&data)
                    )
                });
                out.sip.push((target, msg));
            }
            Output::Event(e) => out.events.push(e),
            Output::Rtp { relay, data } => out.rtp.push((relay, data)),
            Output::Divert { source, data } => out.diverted.push((source, data)),
            Output::Kernel { stream, forward } => out.kernel.push((stream, forward)),
            Output::Timeout(_) => return out,
        }
    }
}

pub fn sip_in(rec: &mut Recorder, now: Instant, from: &str, text: &str) -> Out {
    rec.handle_sip(now, udp(from), text.as_bytes());
    drain(rec)
}

/// An RTP packet: version 2, payload type, sequence, timestamp, SSRC, payload.
pub fn rtp(pt: u8, seq: u16, ts: u32, ssrc: u32, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, pt];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// The audio port the recorder advertised in an SDP body.
pub fn sdp_port(msg: &Message) -> u16 {
    let body = String::from_utf8_lossy(&msg.body);
    let m = body
        .lines()
        .find(|l| l.starts_with("m=audio"))
        .expect("m=audio line");
    m.split(' ').nth(1).unwrap().parse().unwrap()
}

/// A call set up through the recorder: INVITE, 180, 200 OK, ACK.
pub struct Call {
    pub id: String,
    /// Our port the callee sends RTP to (from the forwarded offer).
    pub port_for_callee: u16,
    /// Our port the caller sends RTP to (from the forwarded answer).
    pub port_for_caller: u16,
    pub invite_to_callee: Message,
    pub events: Vec<Event>,
}

pub fn establish(rec: &mut Recorder, now: Instant, from: &str, to: &str, call_id: &str) -> Call {
    let out = sip_in(
        rec,
        now,
        CALLER,
        &mk_invite(from, to, call_id, &sdp("10.0.0.1", 4000, "")),
    );
    assert_eq!(out.codes_to(CALLER), [100]);
    let invite = out.to(CALLEE).clone();
    let mut events = out.events;
    let out = sip_in(rec, now, CALLEE, &mk_response(&invite, 180, "Ringing", ""));
    assert_eq!(out.codes_to(CALLER), [180]);
    events.extend(out.events);
    let out = sip_in(
        rec,
        now + Duration::from_secs(1),
        CALLEE,
        &mk_response(&invite, 200, "OK", &sdp("10.0.0.2", 6000, "")),
    );
    let ok = out.to(CALLER).clone();
    events.extend(out.events);
    let out = sip_in(
        rec,
        now + Duration::from_secs(1),
        CALLER,
        &mk_in_dialog("ACK", call_id, 1, true, "", ""),
    );
    assert_eq!(out.methods_to(CALLEE), ["ACK"]);
    Call {
        id: call_id.to_owned(),
        port_for_callee: sdp_port(&invite),
        port_for_caller: sdp_port(&ok),
        invite_to_callee: invite,
        events,
    }
}

/// Sends one RTP packet into the recorder on `port` from `from`; returns the relay decision and events.
pub fn rtp_in(
    rec: &mut Recorder,
    now: Instant,
    port: u16,
    from: &str,
    packet: &[u8],
) -> (Option<Relay>, Vec<Event>) {
    let mut packet = packet.to_vec();
    let relay = rec.handle_rtp(now, port, addr(from), &mut packet);
    (relay, drain(rec).events)
}

/// Sends `*` then `digit` as RFC 4733 events (with the usual repeated
/// end packets) from the given side into `port`.
pub fn key_rfc4733(
    rec: &mut Recorder,
    now: Instant,
    port: u16,
    from: &str,
    keys: &str,
    ts0: u32,
) -> Vec<Event> {
    let mut events = Vec::new();
    for (i, k) in keys.chars().enumerate() {
        let code = match k {
            '*' => 10,
            '#' => 11,
            d => d.to_digit(10).unwrap() as u8,
        };
        let ts = ts0 + i as u32 * 1600;
        for (n, end) in [(0u16, false), (1, false), (2, true), (3, true), (4, true)] {
            let duration = (160 * (n + 1)).to_be_bytes();
            let payload = [
                code,
                if end { 0x8a } else { 0x0a },
                duration[0],
                duration[1],
            ];
            let (_, ev) = rtp_in(
                rec,
                now + Duration::from_millis(200 * i as u64),
                port,
                from,
                &rtp(101, 100 + i as u16 * 5 + n, ts, 0xdead, &payload),
            );
            events.extend(ev);
        }
    }
    events
}
