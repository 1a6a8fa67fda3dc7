//! Split horizon: a recorder on a node's host network with an internal
//! address (the PBX's side, inside the cluster's networks) and an external
//! one (the trunk's side, outside). Each side is told the address it can
//! reach — in Via, Record-Route and SDP — and in-dialog requests that come
//! back through either address find their way.

mod sim;

use std::time::Instant;

use earshot_recorder_core::sip::Message;
use earshot_recorder_core::{IpNet, Peer, Recorder, SplitHorizon};
use sim::*;

const INTERNAL: &str = "10.0.0.9:5060";
const EXTERNAL: &str = "198.51.100.9:5060";
const PBX: &str = "10.0.0.1:5060";
const TRUNK: &str = "203.0.113.5:5060";

fn mk_split_recorder() -> Recorder {
    let mut cfg = mk_config();
    cfg.advertised = addr(INTERNAL);
    cfg.split = Some(SplitHorizon {
        external: addr(EXTERNAL).ip(),
        internal: vec![IpNet::parse("10.0.0.0/8").unwrap()],
    });
    cfg.peers = vec![
        Peer {
            siprec: false,
            name: "pbx".into(),
            sources: vec![IpNet::parse("10.0.0.0/24").unwrap()],
            next_hop: Some(udp(TRUNK)),
        },
        Peer {
            siprec: false,
            name: "trunk".into(),
            sources: vec![IpNet::parse("203.0.113.0/24").unwrap()],
            next_hop: Some(udp(PBX)),
        },
    ];
    let ports: Vec<u16> = (30000..30100).step_by(2).collect();
    Recorder::new(cfg, &ports)
}

fn sdp_address(msg: &Message) -> String {
    let body = String::from_utf8_lossy(&msg.body);
    body.lines()
        .find_map(|l| l.strip_prefix("c=IN IP4 "))
        .expect("a c= line")
        .trim()
        .to_owned()
}

fn top_via(msg: &Message) -> String {
    msg.headers_named("Via")[0].to_string()
}

#[test]
fn each_side_is_told_the_address_it_reaches_and_both_route_back() {
    let mut rec = mk_split_recorder();
    let now = Instant::now();
    let offer = sdp("10.0.0.1", 4000, "");
    let out = sip_in(
        &mut rec,
        now,
        PBX,
        &mk_invite("008", "0201234567", "split-1", &offer),
    );
    let invite = out.to(TRUNK).clone();
    // Toward the trunk: our external address in Via and SDP; two
    // Record-Routes, the trunk's face on top, the PBX's beneath.
    assert!(top_via(&invite).contains(EXTERNAL), "{}", top_via(&invite));
    assert_eq!(sdp_address(&invite), "198.51.100.9");
    assert_eq!(
        invite.headers_named("Record-Route"),
        vec![
            format!("<sip:{EXTERNAL};lr>"),
            format!("<sip:{INTERNAL};lr>")
        ]
    );

    // The trunk answers; the PBX is told our internal address.
    let answer = sdp("203.0.113.5", 6000, "");
    let ok = sip_in(
        &mut rec,
        now,
        TRUNK,
        &mk_response(&invite, 200, "OK", &answer),
    );
    let ok = ok.to(PBX);
    assert_eq!(ok.code(), Some(200));
    assert_eq!(sdp_address(ok), "10.0.0.9");
    assert_eq!(
        ok.headers_named("Record-Route").len(),
        2,
        "the PBX learns both entries (its route set reversed: ours internal first)"
    );

    // The trunk's BYE follows its route set: both of our entries, then the
    // PBX's Contact. It leaves toward the PBX with our internal Via.
    let bye = format!(
        "BYE sip:008@10.0.0.1:5060 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bK-trunk-bye\r\n\
         Max-Forwards: 70\r\n\
         Route: <sip:{EXTERNAL};lr>\r\n\
         Route: <sip:{INTERNAL};lr>\r\n\
         From: <sip:0201234567@pbx.example>;tag=callee-tag\r\n\
         To: \"Caller\" <sip:008@pbx.example>;tag=c-split-1\r\n\
         Call-ID: split-1\r\n\
         CSeq: 7 BYE\r\n\
         Content-Length: 0\r\n\r\n"
    );
    let out = sip_in(&mut rec, now, TRUNK, &bye);
    let fwd = out.to(PBX);
    assert_eq!(fwd.method(), Some("BYE"));
    assert!(
        fwd.headers_named("Route").is_empty(),
        "both of our Route entries stripped: {:?}",
        fwd.headers_named("Route")
    );
    assert!(top_via(fwd).contains(INTERNAL), "{}", top_via(fwd));
}

#[test]
fn one_address_for_peers_on_the_same_side() {
    // Both peers inside: one Record-Route, the internal address everywhere
    // (what every recorder without an external address does).
    let now = Instant::now();
    let mut cfg_rec = {
        let mut cfg = mk_config();
        cfg.split = Some(SplitHorizon {
            external: addr(EXTERNAL).ip(),
            internal: vec![IpNet::parse("10.0.0.0/8").unwrap()],
        });
        Recorder::new(cfg, &(30000..30100).step_by(2).collect::<Vec<u16>>())
    };
    let out = sip_in(
        &mut cfg_rec,
        now,
        CALLER,
        &mk_invite("008", "0201234567", "split-3", &sdp("10.0.0.1", 4000, "")),
    );
    let invite = out.to(CALLEE);
    assert_eq!(sdp_address(invite), "10.0.0.9");
    assert_eq!(
        invite.headers_named("Record-Route"),
        vec![format!("<sip:{RECORDER};lr>")]
    );
    assert!(top_via(invite).contains(RECORDER));
}

#[test]
fn media_naming_the_external_address_is_refused_like_our_own() {
    // SDP that names either of the recorder's addresses would loop media
    // through the relay to itself.
    let mut rec = mk_split_recorder();
    let out = sip_in(
        &mut rec,
        Instant::now(),
        PBX,
        &mk_invite(
            "008",
            "0201234567",
            "split-4",
            &sdp("198.51.100.9", 4000, ""),
        ),
    );
    assert_eq!(out.codes_to(PBX), vec![488]);
}

#[test]
fn a_tls_next_hop_gets_our_tls_face_and_a_record_route_of_its_own() {
    // The PBX over UDP, the trunk over TLS on its 5061: the trunk sees our
    // TLS port in Via and its Record-Route, the PBX our UDP one.
    let mut cfg = mk_config();
    cfg.tls_port = Some(5061);
    cfg.peers[0].next_hop = Some(earshot_recorder_core::Target {
        transport: earshot_recorder_core::Transport::Tls,
        addr: addr("10.0.0.2:5061"),
    });
    let mut rec = Recorder::new(cfg, &(30000..30100).step_by(2).collect::<Vec<u16>>());
    let now = Instant::now();
    let out = sip_in(
        &mut rec,
        now,
        CALLER,
        &mk_invite("008", "0201234567", "tls-1", &sdp("10.0.0.1", 4000, "")),
    );
    let (target, invite) = out
        .sip
        .iter()
        .find(|(t, m)| m.method() == Some("INVITE") && t.addr == addr("10.0.0.2:5061"))
        .cloned()
        .expect("the INVITE to the trunk");
    assert_eq!(target.transport, earshot_recorder_core::Transport::Tls);
    assert!(
        top_via(&invite).starts_with("SIP/2.0/TLS 10.0.0.9:5061;"),
        "{}",
        top_via(&invite)
    );
    assert_eq!(
        invite.headers_named("Record-Route"),
        vec![
            "<sip:10.0.0.9:5061;transport=tls;lr>".to_owned(),
            "<sip:10.0.0.9:5060;lr>".to_owned()
        ]
    );
    // The trunk's BYE through both entries to the PBX's Contact (UDP).
    let bye = "BYE sip:008@10.0.0.1:5060 SIP/2.0\r\n\
         Via: SIP/2.0/TLS 10.0.0.2:5061;branch=z9hG4bK-tls-bye\r\n\
         Max-Forwards: 70\r\n\
         Route: <sip:10.0.0.9:5061;transport=tls;lr>\r\n\
         Route: <sip:10.0.0.9:5060;lr>\r\n\
         From: <sip:0201234567@pbx.example>;tag=callee-tag\r\n\
         To: \"Caller\" <sip:008@pbx.example>;tag=c-tls-1\r\n\
         Call-ID: tls-1\r\n\
         CSeq: 7 BYE\r\n\
         Content-Length: 0\r\n\r\n";
    // The trunk answers on its TLS connection.
    rec.handle_sip(
        now,
        target,
        mk_response(&invite, 200, "OK", &sdp("10.0.0.2", 6000, "")).as_bytes(),
    );
    assert_eq!(drain(&mut rec).codes_to(CALLER), [200]);
    rec.handle_sip(now, target, bye.as_bytes());
    let out = drain(&mut rec);
    let fwd = out.to(CALLER);
    assert_eq!(fwd.method(), Some("BYE"));
    assert!(fwd.headers_named("Route").is_empty());
    assert!(top_via(fwd).starts_with("SIP/2.0/UDP 10.0.0.9:5060;"));
}
