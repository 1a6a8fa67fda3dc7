//! SIPREC recording sessions in the core: an SRC's INVITE answered here
//! with `recvonly` streams; each stream's audio on the channel of the
//! participant the metadata names by label (never by m-line order); the
//! policy applied to the participants; the shortcode from the user's own
//! stream only; 2xx retransmitted until the ACK; a transfer's metadata
//! update; BYE; and what is refused (a peer that is no SRC, no SDP).

mod sim;

use std::time::{Duration, Instant};

use earshot_recorder_core::{Event, Peer, Recorder, Side};
use sim::*;

const SRC: &str = "10.0.2.5:5060";
const SRC_RTP_A: &str = "10.0.2.5:40000";
const SRC_RTP_B: &str = "10.0.2.5:40002";

fn mk_srs() -> Recorder {
    let mut cfg = mk_config();
    cfg.peers.push(Peer {
        siprec: true,
        name: "sbc".into(),
        sources: vec![earshot_recorder_core::IpNet::parse("10.0.2.0/24").unwrap()],
        // Only recording sessions come from it.
        next_hop: None,
    });
    let ports: Vec<u16> = (30000..30100).step_by(2).collect();
    Recorder::new(cfg, &ports)
}

/// `caller` and `callee` are AoR users; label 2 (the callee's stream) is
/// the first m-line, so m-line order would swap them.
fn metadata(caller: &str, callee: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<recording xmlns="urn:ietf:params:xml:ns:recording:1">
  <datamode>complete</datamode>
  <session session_id="s1"><sipSessionID>0123456789abcdef0123456789abcdef</sipSessionID></session>
  <participant participant_id="pa"><nameID aor="sip:{caller}@pbx.example.com"><name>A</name></nameID></participant>
  <participant participant_id="pb"><nameID aor="tel:{callee}"/></participant>
  <stream stream_id="sb" session_id="s1"><label>2</label></stream>
  <stream stream_id="sa" session_id="s1"><label>1</label></stream>
  <participantstreamassoc participant_id="pa"><send>sa</send><recv>sb</recv></participantstreamassoc>
  <participantstreamassoc participant_id="pb"><send>sb</send><recv>sa</recv></participantstreamassoc>
</recording>"#
    )
}

fn offer_sdp() -> String {
    "v=0\r\no=SRC 1 1 IN IP4 10.0.2.5\r\ns=-\r\nc=IN IP4 10.0.2.5\r\nt=0 0\r\n\
     m=audio 40002 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=label:2\r\na=sendonly\r\n\
     m=audio 40000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=label:1\r\na=sendonly\r\n"
        .to_owned()
}

fn multipart(sdp: &str, metadata: &str) -> String {
    format!(
        "--b1\r\nContent-Type: application/sdp\r\n\r\n{sdp}\r\n--b1\r\nContent-Type: application/rs-metadata+xml\r\nContent-Disposition: recording-session\r\n\r\n{metadata}\r\n--b1--\r\n"
    )
}

fn request(method: &str, call_id: &str, cseq: u32, to_tag: Option<&str>, body: &str) -> String {
    let to_tag = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
    let (ct, len) = if body.is_empty() {
        (String::new(), 0)
    } else {
        (
            "Content-Type: multipart/mixed;boundary=b1\r\n".to_owned(),
            body.len(),
        )
    };
    format!(
        "{method} sip:srs@10.0.0.9:5060 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 10.0.2.5:5060;branch=z9hG4bK-{call_id}-{cseq}-{method}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:src@sbc.example.com>;tag=src-{call_id}\r\n\
         To: <sip:srs@10.0.0.9>{to_tag}\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: {cseq} {method}\r\n\
         Contact: <sip:src@10.0.2.5:5060>;+sip.src\r\n\
         Require: siprec\r\n\
         {ct}Content-Length: {len}\r\n\r\n{body}"
    )
}

/// The ports of the answer's m-lines, in order.
fn answer_ports(msg: &earshot_recorder_core::sip::Message) -> Vec<u16> {
    String::from_utf8_lossy(&msg.body)
        .lines()
        .filter(|l| l.starts_with("m="))
        .map(|l| l.split(' ').nth(1).unwrap().parse().unwrap())
        .collect()
}

fn sides_of(events: &[Event]) -> Vec<(Side, u8)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Media(f) => Some((f.side, f.payload[0])),
            _ => None,
        })
        .collect()
}

/// Starts a session with the given participants; returns (our To tag,
/// port for label 2 (first m-line), port for label 1).
fn start(
    rec: &mut Recorder,
    now: Instant,
    call_id: &str,
    caller: &str,
    callee: &str,
) -> (String, u16, u16, Out) {
    let body = multipart(&offer_sdp(), &metadata(caller, callee));
    let out = sip_in(rec, now, SRC, &request("INVITE", call_id, 1, None, &body));
    let ok = out.to(SRC);
    assert_eq!(ok.code(), Some(200), "{ok:?}");
    let text = String::from_utf8_lossy(&ok.body).into_owned();
    assert_eq!(text.matches("a=recvonly").count(), 2, "{text}");
    assert!(
        text.contains("a=label:2") && text.contains("a=label:1"),
        "{text}"
    );
    let ports = answer_ports(ok);
    let tag = ok.to_tag().unwrap();
    (tag, ports[0], ports[1], out)
}

#[test]
fn an_srcs_session_is_answered_and_each_stream_recorded_on_its_participants_channel() {
    let mut rec = mk_srs();
    let now = Instant::now();
    let (tag, port_b, port_a, out) = start(&mut rec, now, "rs-1", "008", "+15550100999");
    assert!(
        out.events
            .iter()
            .any(|e| matches!(e, Event::CallStarted { caller, users, .. }
        if caller.number.as_deref() == Some("008") && users.len() == 1))
    );
    assert_eq!(out.recording(), vec![true], "008 is Always");
    let session = out
        .events
        .iter()
        .find_map(|e| match e {
            Event::Siprec { session, .. } => Some(session),
            _ => None,
        })
        .expect("the SRC's metadata is told");
    assert_eq!(
        session.session_ids,
        vec!["0123456789abcdef0123456789abcdef"]
    );
    let roles: Vec<(&str, Option<Side>)> = session
        .participants
        .iter()
        .map(|p| (p.role.as_str(), p.channel))
        .collect();
    assert_eq!(
        roles,
        vec![
            ("caller", Some(Side::Caller)),
            ("callee", Some(Side::Callee))
        ]
    );
    assert_eq!(session.metadata.len(), 1);
    // The ACK stops the 2xx; nothing is resent after it.
    let out = sip_in(
        &mut rec,
        now,
        SRC,
        &request("ACK", "rs-1", 1, Some(&tag), ""),
    );
    assert!(out.sip.is_empty());
    rec.handle_timeout(now + Duration::from_secs(2));
    assert!(drain(&mut rec).sip.is_empty(), "no 2xx after the ACK");
    // Label 1 (the second m-line) is the caller's: left. Label 2: right.
    let (relay, events) = rtp_in(
        &mut rec,
        now,
        port_a,
        SRC_RTP_A,
        &rtp(0, 1, 160, 0xa, &[0x11; 160]),
    );
    assert_eq!(relay, None, "nothing is relayed");
    assert_eq!(sides_of(&events), vec![(Side::Caller, 0x11)]);
    let (_, events) = rtp_in(
        &mut rec,
        now,
        port_b,
        SRC_RTP_B,
        &rtp(0, 1, 160, 0xb, &[0x22; 160]),
    );
    assert_eq!(sides_of(&events), vec![(Side::Callee, 0x22)]);
    // Another source on the port is not taken.
    let (_, events) = rtp_in(
        &mut rec,
        now,
        port_a,
        "10.9.9.9:40000",
        &rtp(0, 2, 320, 0xa, &[0x33; 160]),
    );
    assert!(sides_of(&events).is_empty());
    // BYE ends it.
    let out = sip_in(
        &mut rec,
        now,
        SRC,
        &request("BYE", "rs-1", 2, Some(&tag), ""),
    );
    assert_eq!(out.codes_to(SRC), vec![200]);
    assert!(
        out.events
            .iter()
            .any(|e| matches!(e, Event::CallEnded { answered: true, .. }))
    );
    assert_eq!(rec.active_calls(), 0);
}

#[test]
fn the_2xx_is_sent_again_until_the_ack_and_a_retransmitted_invite_gets_the_same() {
    let mut rec = mk_srs();
    let now = Instant::now();
    let (tag, _, _, out) = start(&mut rec, now, "rs-2", "777", "778");
    assert_eq!(
        out.recording(),
        Vec::<bool>::new(),
        "no policy user: not recorded"
    );
    let first = out.to(SRC).to_bytes();
    rec.handle_timeout(now + Duration::from_millis(500));
    let again = drain(&mut rec);
    assert_eq!(again.to(SRC).to_bytes(), first, "the same 2xx after T1");
    let body = multipart(&offer_sdp(), &metadata("777", "778"));
    let out = sip_in(
        &mut rec,
        now,
        SRC,
        &request("INVITE", "rs-2", 1, None, &body),
    );
    assert_eq!(out.to(SRC).to_tag().as_deref(), Some(tag.as_str()));
    // Never acknowledged: the session ends after 64·T1.
    let mut t = now;
    for _ in 0..12 {
        t += Duration::from_secs(4);
        rec.handle_timeout(t);
        drain(&mut rec);
    }
    assert_eq!(rec.active_calls(), 0);
}

#[test]
fn the_shortcode_counts_only_on_the_users_own_stream_and_a_transfer_moves_a_stream() {
    let mut rec = mk_srs();
    let now = Instant::now();
    // 012 is OnDemand *5 and the caller; 500 is nobody's.
    let (tag, port_b, port_a, _) = start(&mut rec, now, "rs-3", "012", "500");
    sip_in(
        &mut rec,
        now,
        SRC,
        &request("ACK", "rs-3", 1, Some(&tag), ""),
    );
    // The far end keys *5 on its own stream: nothing.
    let events = key_rfc4733(&mut rec, now, port_b, SRC_RTP_B, "*5", 1000);
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::Recording { on: true, .. }))
    );
    // The user keys it on theirs: recording starts.
    let t = now + Duration::from_secs(2);
    let events = key_rfc4733(&mut rec, t, port_a, SRC_RTP_A, "*5", 1000);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Recording { on: true, .. })),
        "{events:?}"
    );
    // A transfer: 013 takes over the far end's stream (partial update).
    let update = r#"<recording xmlns="urn:ietf:params:xml:ns:recording:1"><datamode>partial</datamode>
      <participant participant_id="pc"><nameID aor="sip:013@pbx.example.com"/></participant>
      <participantstreamassoc participant_id="pc"><send>sb</send></participantstreamassoc>
      <participantstreamassoc participant_id="pb"><recv>sa</recv></participantstreamassoc></recording>"#;
    let body = multipart(&offer_sdp(), update);
    let out = sip_in(
        &mut rec,
        t,
        SRC,
        &request("INVITE", "rs-3", 2, Some(&tag), &body),
    );
    let ok = out.to(SRC);
    assert_eq!(ok.code(), Some(200));
    assert_eq!(answer_ports(ok), vec![port_b, port_a], "the same ports");
    // The far end's stream stays on the right.
    let (_, events) = rtp_in(
        &mut rec,
        t,
        port_b,
        SRC_RTP_B,
        &rtp(0, 9, 1600, 0xb, &[0x44; 160]),
    );
    assert_eq!(sides_of(&events), vec![(Side::Callee, 0x44)]);
}

#[test]
fn only_configured_srcs_get_a_session_and_a_session_needs_an_offer() {
    let mut rec = mk_srs();
    let now = Instant::now();
    // The PBX is a peer but no SRC: its SIPREC INVITE is proxied as any other.
    let body = multipart(&offer_sdp(), &metadata("008", "500"));
    let out = sip_in(
        &mut rec,
        now,
        CALLER,
        &request("INVITE", "rs-4", 1, None, &body).replace("10.0.2.5", "10.0.0.1"),
    );
    assert!(
        out.codes_to(CALLER).iter().all(|c| *c < 200),
        "not answered here: {:?}",
        out.sip
    );
    // The SRC's own INVITE that asks for no recording session: it has
    // no next hop to go to.
    let plain = request("INVITE", "rs-8", 1, None, "")
        .replace("Require: siprec\r\n", "")
        .replace(";+sip.src", "");
    assert_eq!(sip_in(&mut rec, now, SRC, &plain).codes_to(SRC), vec![403]);
    // No SDP part: 488.
    let only_meta = format!(
        "--b1\r\nContent-Type: application/rs-metadata+xml\r\n\r\n{}\r\n--b1--\r\n",
        metadata("008", "500")
    );
    let out = sip_in(
        &mut rec,
        now,
        SRC,
        &request("INVITE", "rs-5", 1, None, &only_meta),
    );
    assert_eq!(out.codes_to(SRC), vec![488]);
    // A body that is not multipart: 400.
    let out = sip_in(
        &mut rec,
        now,
        SRC,
        &request("INVITE", "rs-6", 1, None, "garbage")
            .replace("multipart/mixed;boundary=b1", "text/plain"),
    );
    assert_eq!(out.codes_to(SRC), vec![400]);
    // Draining: 503, so the SRC tries its next recording server.
    rec.drain();
    let out = sip_in(
        &mut rec,
        now,
        SRC,
        &request("INVITE", "rs-7", 1, None, &body),
    );
    assert_eq!(out.codes_to(SRC), vec![503]);
}

/// A session's dialog as RFC 3261 has it: a re-INVITE sent again gets the
/// same answer (not a second update), an older CSeq 500, a stream
/// re-offered with port 0 gives its port back and stays refused, an
/// `inactive` offer is answered `inactive` with the SDP version up, and a
/// session never acknowledged over TCP ends with our BYE to the SRC.
#[test]
fn a_sessions_dialog_keeps_rfc_3261s_rules() {
    let mut rec = mk_srs();
    let now = Instant::now();
    let (tag, port_b, _port_a, first) = start(&mut rec, now, "rs-10", "008", "500");
    let version = |m: &earshot_recorder_core::sip::Message| -> String {
        let body = String::from_utf8_lossy(&m.body).into_owned();
        body.lines()
            .find(|l| l.starts_with("o="))
            .unwrap()
            .split(' ')
            .nth(2)
            .unwrap()
            .to_owned()
    };
    let v1 = version(first.to(SRC));
    sip_in(
        &mut rec,
        now,
        SRC,
        &request("ACK", "rs-10", 1, Some(&tag), ""),
    );
    let free = rec.free_port_pairs();
    // The callee's stream (first m-line) re-offered with port 0, the rest inactive.
    let sdp = offer_sdp()
        .replacen("m=audio 40002", "m=audio 0", 1)
        .replace("a=sendonly", "a=inactive");
    let body = multipart(&sdp, &metadata("008", "500"));
    let reinvite = request("INVITE", "rs-10", 2, Some(&tag), &body);
    let out = sip_in(&mut rec, now, SRC, &reinvite);
    let ok = out.to(SRC).clone();
    let ports = answer_ports(&ok);
    assert_eq!(ports[0], 0, "a zeroed stream stays zeroed");
    assert_ne!(ports[1], 0);
    assert!(String::from_utf8_lossy(&ok.body).contains("a=inactive"));
    assert_ne!(version(&ok), v1, "a changed answer has a new version");
    assert_eq!(rec.free_port_pairs(), free + 1, "its port is given back");
    let (_, events) = rtp_in(
        &mut rec,
        now,
        port_b,
        SRC_RTP_B,
        &rtp(0, 5, 800, 0xb, &[0x55; 160]),
    );
    assert!(sides_of(&events).is_empty(), "nothing on a freed port");
    // The same re-INVITE again: the same answer, nothing applied twice.
    let again = sip_in(&mut rec, now, SRC, &reinvite);
    assert_eq!(again.to(SRC).to_bytes(), ok.to_bytes());
    assert!(again.events.is_empty(), "{:?}", again.events);
    sip_in(
        &mut rec,
        now,
        SRC,
        &request("ACK", "rs-10", 2, Some(&tag), ""),
    );
    // An older CSeq: out of order.
    let old = request("UPDATE", "rs-10", 1, Some(&tag), "");
    assert_eq!(sip_in(&mut rec, now, SRC, &old).codes_to(SRC), vec![500]);

    // Over TCP, an INVITE never acknowledged: the session ends after
    // 64·T1 with a BYE from us.
    let body = multipart(&offer_sdp(), &metadata("008", "500"));
    let tcp = earshot_recorder_core::Target {
        transport: earshot_recorder_core::Transport::Tcp,
        addr: addr(SRC),
    };
    rec.handle_sip(
        now,
        tcp,
        request("INVITE", "rs-11", 1, None, &body)
            .replace("SIP/2.0/UDP", "SIP/2.0/TCP")
            .as_bytes(),
    );
    assert_eq!(drain(&mut rec).codes_to(SRC), vec![200]);
    rec.handle_timeout(now + Duration::from_secs(1));
    assert!(drain(&mut rec).sip.is_empty(), "nothing is resent over TCP");
    rec.handle_timeout(now + Duration::from_secs(33));
    let out = drain(&mut rec);
    assert_eq!(out.methods_to(SRC), vec!["BYE".to_owned()], "{:?}", out.sip);
    let bye = out.to(SRC);
    assert_eq!(bye.call_id().as_deref(), Some("rs-11"));
    assert!(bye.header("From").unwrap().contains(";tag=es"));
    assert!(
        out.events
            .iter()
            .any(|e| matches!(e, Event::CallEnded { .. }))
    );
}

/// What a session may not do: take a live call's Call-ID; be made of
/// nothing the recorder can read; and an SRC's keep-alive OPTIONS and a
/// request for a forgotten session are answered here.
#[test]
fn collisions_unreadable_offers_keepalives_and_forgotten_sessions() {
    let mut rec = mk_srs();
    let now = Instant::now();
    // A call the PBX makes through the recorder, in progress.
    let out = sip_in(
        &mut rec,
        now,
        CALLER,
        &mk_invite("008", "500", "rs-20", &sdp("10.0.0.1", 4000, "")),
    );
    assert_eq!(out.methods_to(CALLEE), vec!["INVITE".to_owned()]);
    // A recording session with its Call-ID never takes it over.
    let body = multipart(&offer_sdp(), &metadata("008", "500"));
    let clash = request("INVITE", "rs-20", 1, None, &body);
    assert_eq!(sip_in(&mut rec, now, SRC, &clash).codes_to(SRC), vec![482]);
    // Nor does a second INVITE of a session's Call-ID from its SRC.
    start(&mut rec, now, "rs-22", "008", "500");
    let merged = request("INVITE", "rs-22", 7, None, &body);
    assert_eq!(sip_in(&mut rec, now, SRC, &merged).codes_to(SRC), vec![482]);
    // Only DTLS-SRTP (keys never seen): nothing to record here or elsewhere.
    let srtp = offer_sdp().replace(
        "RTP/AVP 0 101\r\n",
        "UDP/TLS/RTP/SAVPF 0 101\r\na=fingerprint:sha-256 AB:CD\r\n",
    );
    let body = multipart(&srtp, &metadata("008", "500"));
    let out = sip_in(
        &mut rec,
        now,
        SRC,
        &request("INVITE", "rs-21", 1, None, &body),
    );
    assert_eq!(out.codes_to(SRC), vec![488]);
    // Keep-alive.
    let options = request("OPTIONS", "ka-1", 1, None, "");
    assert_eq!(
        sip_in(&mut rec, now, SRC, &options).codes_to(SRC),
        vec![200]
    );
    // A BYE for a session long gone (our tag, no session).
    let late = request("BYE", "rs-gone", 2, Some("es1234"), "");
    assert_eq!(sip_in(&mut rec, now, SRC, &late).codes_to(SRC), vec![481]);
}

/// SRTP on the recording session (SDES): the SRC's packets decrypt with
/// the key of its offer; the answer accepts that line with a key of ours;
/// a packet that does not decrypt is not recorded, and counted.
#[test]
fn an_srtp_recording_session_is_decrypted_and_recorded() {
    use earshot_recorder_core::srtp::{SdesKey, SrtpSender, Suite};
    let mut rec = mk_srs();
    let now = Instant::now();
    let suite = Suite::AesCm128HmacSha1_80;
    let key = |b: u8| SdesKey::new(1, suite, &[b; 30]).unwrap();
    let (a, b) = (key(0x11), key(0x22));
    let sdp = "v=0\r\no=SRC 1 1 IN IP4 10.0.2.5\r\ns=-\r\nc=IN IP4 10.0.2.5\r\nt=0 0\r\n"
        .to_owned()
        + &format!(
            "m=audio 40002 RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\na=crypto:{}\r\na=label:2\r\na=sendonly\r\n",
            b.to_attribute()
        )
        + &format!(
            "m=audio 40000 RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\na=crypto:{}\r\na=label:1\r\na=sendonly\r\n",
            a.to_attribute()
        );
    let body = multipart(&sdp, &metadata("008", "500"));
    let out = sip_in(
        &mut rec,
        now,
        SRC,
        &request("INVITE", "rs-srtp", 1, None, &body),
    );
    let ok = out.to(SRC);
    assert_eq!(ok.code(), Some(200));
    let text = String::from_utf8_lossy(&ok.body).into_owned();
    assert_eq!(text.matches("RTP/SAVP").count(), 2, "{text}");
    let crypto: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:"))
        .collect();
    assert_eq!(crypto.len(), 2, "{text}");
    assert!(
        !text.contains(&a.to_attribute()),
        "our own key, not the SRC's"
    );
    let ports = answer_ports(ok);
    let (port_b, port_a) = (ports[0], ports[1]);
    let mut caller = SrtpSender::new(&a);
    let packet = caller
        .protect_rtp(&rtp(0, 1, 160, 0xa, &[0x11; 160]))
        .unwrap();
    let (_, events) = rtp_in(&mut rec, now, port_a, SRC_RTP_A, &packet);
    assert_eq!(sides_of(&events), vec![(Side::Caller, 0x11)]);
    let mut callee = SrtpSender::new(&b);
    let packet = callee
        .protect_rtp(&rtp(0, 1, 160, 0xb, &[0x22; 160]))
        .unwrap();
    let (_, events) = rtp_in(&mut rec, now, port_b, SRC_RTP_B, &packet);
    assert_eq!(sides_of(&events), vec![(Side::Callee, 0x22)]);
    // Under the other stream's key: not read, counted.
    let packet = callee
        .protect_rtp(&rtp(0, 2, 320, 0xb, &[0x33; 160]))
        .unwrap();
    let (_, events) = rtp_in(&mut rec, now, port_a, SRC_RTP_A, &packet);
    assert!(sides_of(&events).is_empty());
    assert_eq!(rec.stats().srtp_failed.values().sum::<u64>(), 1);
}

/// A participant the SRC says left (RFC 7865 `disassociate-time`, as after
/// a transfer) is no longer a user of the session: the Always user who
/// left does not keep it recorded.
#[test]
fn a_user_who_left_the_session_stops_its_recording() {
    let mut rec = mk_srs();
    let now = Instant::now();
    let (tag, _, _, out) = start(&mut rec, now, "rs-40", "008", "500");
    assert_eq!(out.recording(), vec![true]);
    sip_in(
        &mut rec,
        now,
        SRC,
        &request("ACK", "rs-40", 1, Some(&tag), ""),
    );
    let left = r#"<recording xmlns="urn:ietf:params:xml:ns:recording:1"><datamode>partial</datamode>
      <participantsessionassoc participant_id="pa" session_id="s1">
        <disassociate-time>2026-12-06T10:00:05Z</disassociate-time>
      </participantsessionassoc></recording>"#;
    let body = multipart(&offer_sdp(), left);
    let out = sip_in(
        &mut rec,
        now,
        SRC,
        &request("INVITE", "rs-40", 2, Some(&tag), &body),
    );
    assert_eq!(out.codes_to(SRC), vec![200]);
    assert_eq!(out.recording(), vec![false], "{:?}", out.events);
}
