//! What the recorder does with messages an attacker would send, in
//! simulated time: requests from strangers get nothing (unless configured),
//! responses count only from where their request went and are never
//! reflected along their Via, requests are relayed only inside the peers'
//! networks, SIP INFO digits only from the user's own leg, one peer cannot
//! take every call, transaction or port, SDP cannot point the relay at
//! loopback or metadata addresses, and malformed requests get RFC 3261's
//! answers.

mod sim;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use earshot_recorder_core::{Event, Recorder, SipLimits, UnknownSources};
use sim::*;

fn mk_with(f: impl FnOnce(&mut earshot_recorder_core::CoreConfig)) -> Recorder {
    let mut cfg = mk_config();
    f(&mut cfg);
    // Room for 250 calls (each takes two pairs when it starts).
    let ports: Vec<u16> = (30000..31000).step_by(2).collect();
    Recorder::new(cfg, &ports)
}

fn dropped(rec: &Recorder, reason: &str) -> u64 {
    rec.stats().sip_dropped.get(reason).copied().unwrap_or(0)
}

#[test]
fn strangers_get_no_answer_by_default_and_a_403_when_configured() {
    let t0 = Instant::now();
    let invite = mk_invite("008", "500", "s1", &sdp("10.0.0.1", 4000, ""));
    let mut rec = mk_with(|c| c.unknown_sources = UnknownSources::Drop);
    for text in [
        invite.clone(),
        invite
            .replacen("INVITE sip", "CANCEL sip", 1)
            .replace("CSeq: 1 INVITE", "CSeq: 1 CANCEL"),
        invite
            .replacen("INVITE sip", "OPTIONS sip", 1)
            .replace("CSeq: 1 INVITE", "CSeq: 1 OPTIONS"),
    ] {
        let out = sip_in(&mut rec, t0, "192.0.2.7:5060", &text);
        assert!(out.sip.is_empty(), "nothing reflected: {:?}", out.sip);
        assert!(out.events.is_empty());
    }
    assert_eq!(dropped(&rec, "unknown_source"), 3);
    let mut rec = mk_with(|c| c.unknown_sources = UnknownSources::Refuse);
    let out = sip_in(&mut rec, t0, "192.0.2.7:5060", &invite);
    assert_eq!(out.codes_to("192.0.2.7:5060"), [403]);
}

#[test]
fn a_response_from_anywhere_but_the_request_s_destination_is_ignored() {
    let mut rec = mk_recorder();
    let t0 = Instant::now();
    let out = sip_in(
        &mut rec,
        t0,
        CALLER,
        &mk_invite("008", "500", "f1", &sdp("10.0.0.1", 4000, "")),
    );
    let invite = out.to(CALLEE).clone();
    // A host of the peer's own network forges the 200 (it can see nothing
    // but the branch, which it also cannot predict).
    let forged = mk_response(&invite, 200, "OK", &sdp("10.0.0.66", 7000, ""));
    let out = sip_in(&mut rec, t0, "10.0.0.66:5060", &forged);
    assert!(out.sip.is_empty(), "{:?}", out.sip);
    assert!(out.events.is_empty(), "no answer, no recording");
    assert_eq!(dropped(&rec, "response_from_elsewhere"), 1);
    // The callee's own answer goes through.
    let out = sip_in(
        &mut rec,
        t0,
        CALLEE,
        &mk_response(&invite, 200, "OK", &sdp("10.0.0.2", 6000, "")),
    );
    assert_eq!(out.codes_to(CALLER), [200]);
}

#[test]
fn responses_are_never_forwarded_along_the_via_they_carry() {
    let mut rec = mk_recorder();
    let t0 = Instant::now();
    // A 2xx for no transaction of ours, with a Via toward a victim.
    let stray = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bK-es0123456789abcdef\r\nVia: SIP/2.0/UDP 198.51.100.1:5060;branch=z9hG4bKvictim\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@x>;tag=2\r\nCall-ID: stray\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
    let out = sip_in(&mut rec, t0, CALLEE, stray);
    assert!(out.sip.is_empty(), "{:?}", out.sip);
    assert_eq!(dropped(&rec, "stray_response"), 1);
}

#[test]
fn branches_and_tags_come_from_a_seeded_csprng() {
    let branches = |seed: u8| {
        let mut rec = mk_with(|c| c.seed = [seed; 32]);
        let t0 = Instant::now();
        (0..200)
            .map(|n| {
                let out = sip_in(
                    &mut rec,
                    t0,
                    CALLER,
                    &mk_invite("777", "500", &format!("b{n}"), ""),
                );
                out.to(CALLEE).branch().unwrap()
            })
            .collect::<Vec<_>>()
    };
    let a = branches(1);
    assert_eq!(
        a,
        branches(1),
        "the same seed, the same sequence (tests repeat)"
    );
    assert!(a.iter().all(|b| b.len() == "z9hG4bK-es".len() + 16));
    assert_eq!(a.iter().collect::<HashSet<_>>().len(), 200);
    let b = branches(2);
    assert!(
        a.iter().zip(&b).all(|(x, y)| x != y),
        "another seed, other branches"
    );
}

#[test]
fn initial_requests_go_to_the_next_hop_and_in_dialog_ones_stay_inside_the_peers() {
    let mut rec = mk_recorder();
    let t0 = Instant::now();
    // A Route to a host outside every peer's networks is not followed.
    let routed = mk_invite("777", "500", "r1", &sdp("10.0.0.1", 4000, "")).replacen(
        "Max-Forwards: 70\r\n",
        "Route: <sip:203.0.113.9:5060;lr>\r\nMax-Forwards: 70\r\n",
        1,
    );
    let out = sip_in(&mut rec, t0, CALLER, &routed);
    assert_eq!(
        out.methods_to(CALLEE),
        ["INVITE"],
        "to the configured next hop"
    );
    assert!(
        out.sip
            .iter()
            .all(|(t, _)| t.addr.ip().to_string() != "203.0.113.9")
    );
    // An in-dialog request toward an outside address is refused.
    let c = establish(&mut rec, t0, "008", "500", "r2");
    let outside = mk_in_dialog("INFO", &c.id, 2, true, "", "")
        .replace("sip:callee@10.0.0.2:5060", "sip:callee@203.0.113.9:5060")
        .replace("Route: <sip:10.0.0.9:5060;lr>\r\n", "");
    let out = sip_in(&mut rec, t0 + Duration::from_secs(2), CALLER, &outside);
    assert_eq!(out.codes_to(CALLER), [403]);
    assert_eq!(out.sip.len(), 1, "nothing sent toward the outside address");
    assert_eq!(dropped(&rec, "target_outside_peers"), 1);
}

#[test]
fn sip_info_digits_count_only_from_the_leg_they_claim() {
    let mut rec = mk_recorder();
    let t0 = Instant::now();
    let c = establish(&mut rec, t0, "012", "500", "i1");
    let info = |digit: char, cseq: u32| {
        let body = format!("Signal={digit}\r\nDuration=100\r\n");
        mk_in_dialog(
            "INFO",
            "i1",
            cseq,
            true,
            &body,
            &format!(
                "Content-Type: application/dtmf-relay\r\nContent-Length: {}\r\n",
                body.len()
            ),
        )
    };
    // The far end sends the caller's INFO, tags and all, from its own
    // address: refused, not forwarded, not counted.
    let recorded = |out: &Out| {
        out.events
            .iter()
            .any(|e| matches!(e, Event::Recording { on: true, .. }))
    };
    let a = sip_in(&mut rec, t0 + Duration::from_secs(2), CALLEE, &info('*', 5));
    let b = sip_in(&mut rec, t0 + Duration::from_secs(2), CALLEE, &info('5', 6));
    assert!(
        !recorded(&a) && !recorded(&b),
        "the far end cannot toggle recording"
    );
    assert_eq!(dropped(&rec, "request_from_other_leg"), 2);
    assert_eq!(a.codes_to(CALLEE), [403]);
    assert!(a.methods_to(CALLER).is_empty() && b.methods_to(CALLER).is_empty());
    // From the caller's own address the same INFO toggles it.
    sip_in(&mut rec, t0 + Duration::from_secs(3), CALLER, &info('*', 7));
    let on = sip_in(&mut rec, t0 + Duration::from_secs(3), CALLER, &info('5', 8));
    assert!(recorded(&on), "{:?}", on.events);
    let _ = c;
}

#[test]
fn one_peer_cannot_take_every_call_or_start_them_without_limit() {
    let limits = SipLimits {
        calls_per_peer: 3,
        invites_per_second_per_peer: 5,
        ..SipLimits::default()
    };
    let mut rec = mk_with(|c| c.limits = limits);
    let t0 = Instant::now();
    let invite = |n: usize| mk_invite("777", "500", &format!("l{n}"), &sdp("10.0.0.1", 4000, ""));
    for n in 0..3 {
        assert_eq!(
            sip_in(&mut rec, t0, CALLER, &invite(n)).codes_to(CALLER),
            [100]
        );
    }
    let out = sip_in(&mut rec, t0, CALLER, &invite(3));
    assert_eq!(
        out.codes_to(CALLER),
        [503],
        "three calls is all this peer may have"
    );
    assert_eq!(out.to(CALLER).header("Retry-After").as_deref(), Some("5"));
    assert!(out.events.is_empty());

    let mut rec = mk_with(|c| {
        c.limits = SipLimits {
            invites_per_second_per_peer: 5,
            ..SipLimits::default()
        }
    });
    let codes: Vec<u16> = (0..8)
        .map(|n| sip_in(&mut rec, t0, CALLER, &invite(n)).codes_to(CALLER)[0])
        .collect();
    assert_eq!(
        codes,
        [100, 100, 100, 100, 100, 503, 503, 503],
        "5 a second"
    );
    let later = sip_in(&mut rec, t0 + Duration::from_secs(1), CALLER, &invite(9));
    assert_eq!(later.codes_to(CALLER), [100], "the bucket refills");
    assert_eq!(dropped(&rec, "peer_limit"), 3);
}

#[test]
fn sdp_cannot_point_the_relay_at_loopback_metadata_or_the_recorder() {
    let t0 = Instant::now();
    for ip in ["127.0.0.1", "169.254.169.254", "10.0.0.9"] {
        let mut rec = mk_recorder();
        let out = sip_in(
            &mut rec,
            t0,
            CALLER,
            &mk_invite("008", "500", "m1", &sdp(ip, 4000, "")),
        );
        assert_eq!(out.codes_to(CALLER), [488], "{ip}");
        assert!(out.methods_to(CALLEE).is_empty(), "{ip}");
    }
    let mut rec = mk_with(|c| c.allow_local_media = true);
    let out = sip_in(
        &mut rec,
        t0,
        CALLER,
        &mk_invite("008", "500", "m2", &sdp("127.0.0.1", 4000, "")),
    );
    assert_eq!(
        out.methods_to(CALLEE),
        ["INVITE"],
        "loopback when the config allows it"
    );
    let out = sip_in(
        &mut rec,
        t0,
        CALLER,
        &mk_invite("008", "500", "m3", &sdp("169.254.169.254", 4000, "")),
    );
    assert_eq!(out.codes_to(CALLER), [488], "link-local never");
}

#[test]
fn malformed_requests_get_the_answers_rfc_3261_asks_for() {
    let mut rec = mk_recorder();
    let t0 = Instant::now();
    let good = mk_invite("777", "500", "e1", "");
    let cases = [
        (good.replace("Call-ID: e1\r\n", ""), 400, "missing Call-ID"),
        (good.replace("CSeq: 1 INVITE\r\n", ""), 400, "missing CSeq"),
        (
            good.replace("To: <sip:500@pbx.example>\r\n", ""),
            400,
            "missing To",
        ),
        (good.replacen("From: ", "X-From: ", 1), 400, "missing From"),
        (
            good.replace("CSeq: 1 INVITE", "CSeq: 1 OPTIONS"),
            400,
            "CSeq method mismatch",
        ),
        (
            good.replacen(" SIP/2.0\r\n", " SIP/7.0\r\n", 1),
            505,
            "SIP/7.0",
        ),
        (
            good.replace("Max-Forwards: 70", "Max-Forwards: 0"),
            483,
            "no hops left",
        ),
        (
            good.replacen(
                "Via: ",
                "Via: SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bK-esloop\r\nVia: ",
                1,
            ),
            482,
            "our own Via: a loop",
        ),
    ];
    for (text, code, what) in cases {
        let out = sip_in(&mut rec, t0, CALLER, &text);
        assert_eq!(out.codes_to(CALLER), [code], "{what}");
        assert!(out.methods_to(CALLEE).is_empty(), "{what}: not forwarded");
    }
}

#[test]
fn shards_share_a_peer_s_limits_and_never_share_a_call_id() {
    // Two shards of one process, as the shell runs them: calls_per_peer
    // holds for the process, whichever shard each call lands on.
    let limits = SipLimits {
        calls_per_peer: 3,
        ..SipLimits::default()
    };
    let loads = earshot_recorder_core::PeerLoads::default();
    let mut shards: Vec<Recorder> = (0..2)
        .map(|index| {
            let mut cfg = mk_config();
            cfg.limits = limits;
            // Each shard its own ports, as the shell splits them.
            let ports: Vec<u16> = (30000 + 100 * index as u16..30100 + 100 * index as u16)
                .step_by(2)
                .collect();
            let shard = earshot_recorder_core::Shard {
                index,
                count: 2,
                loads: loads.clone(),
            };
            Recorder::new_shard(cfg, &ports, shard)
        })
        .collect();
    let t0 = Instant::now();
    let invite = |n: usize| mk_invite("777", "500", &format!("s{n}"), &sdp("10.0.0.1", 4000, ""));
    let mut ids = HashSet::new();
    let mut codes = Vec::new();
    for n in 0..5 {
        let out = sip_in(&mut shards[n % 2], t0, CALLER, &invite(n));
        codes.push(out.codes_to(CALLER)[0]);
        for e in &out.events {
            if let Event::CallStarted { call, .. } = e {
                assert!(ids.insert(call.id), "call id {} given twice", call.id);
            }
        }
    }
    assert_eq!(
        codes,
        [100, 100, 100, 503, 503],
        "three calls across both shards"
    );
    assert_eq!(ids.len(), 3);
    assert_eq!(
        ids.iter().map(|id| id % 2).collect::<HashSet<_>>().len(),
        2,
        "each shard's ids are its own: {ids:?}"
    );
}

/// One party flooding its leg (far above any codec's packet rate) is
/// clipped to 250 packets a second, counted: its own call's audio, never
/// every recording's pipeline. Shortcode toggles faster than one a second
/// are ignored and counted.
#[test]
fn a_flooding_leg_is_clipped_and_toggles_are_rate_limited() {
    let mut rec = mk_recorder();
    let t0 = Instant::now();
    let c = establish(&mut rec, t0, "012", "500", "fl");
    let mut relayed = 0;
    for i in 0..1000u16 {
        let at = t0 + Duration::from_micros(900 * u64::from(i));
        let (r, _) = rtp_in(
            &mut rec,
            at,
            c.port_for_caller,
            CALLER_RTP,
            &rtp(0, i, 160 * u32::from(i), 1, &[0xff; 160]),
        );
        relayed += usize::from(r.is_some());
    }
    // 1000 packets in 0.9 s: 250 pass in that second.
    assert_eq!(relayed, 250);
    assert_eq!(rec.stats().rtp_dropped.get("rate_limited"), Some(&750));
    // The next second the leg is back to normal.
    let (r, _) = rtp_in(
        &mut rec,
        t0 + Duration::from_secs(2),
        c.port_for_caller,
        CALLER_RTP,
        &rtp(0, 2000, 0, 1, &[0xff; 160]),
    );
    assert!(r.is_some());
    // *5 on, then *5 again 400 ms later: ignored.
    let t = t0 + Duration::from_secs(3);
    let on = key_rfc4733(&mut rec, t, c.port_for_caller, CALLER_RTP, "*5", 10_000);
    let again = key_rfc4733(
        &mut rec,
        t + Duration::from_millis(400),
        c.port_for_caller,
        CALLER_RTP,
        "*5",
        30_000,
    );
    let toggles = |ev: &[Event]| {
        ev.iter()
            .filter(|e| matches!(e, Event::Recording { .. }))
            .count()
    };
    assert_eq!((toggles(&on), toggles(&again)), (1, 0));
    assert_eq!(rec.stats().recording_toggles.get("rate_limited"), Some(&1));
    let later = key_rfc4733(
        &mut rec,
        t + Duration::from_secs(3),
        c.port_for_caller,
        CALLER_RTP,
        "*5",
        50_000,
    );
    assert_eq!(toggles(&later), 1, "a second later it toggles");
}

/// A stranger's request costs one address look-up: it is dropped before
/// it is parsed (counted as `unknown_source`, never as a parse error), a
/// 60 KB list header included. A peer's is refused while tokenizing.
#[test]
fn a_stranger_s_request_is_dropped_before_it_is_parsed() {
    let mut rec = mk_with(|c| c.unknown_sources = UnknownSources::Drop);
    let t0 = Instant::now();
    let flood = format!(
        "OPTIONS sip:x@10.0.0.9 SIP/2.0\r\nVia: {}\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:x@y>\r\nCall-ID: w\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
        vec!["a"; 30_000].join(",")
    );
    let out = sip_in(&mut rec, t0, "203.0.113.50:5060", &flood);
    assert!(out.sip.is_empty());
    assert_eq!(dropped(&rec, "unknown_source"), 1);
    assert_eq!(rec.stats().sip_parse_errors, 0, "not parsed");
    let out = sip_in(&mut rec, t0, CALLER, &flood);
    assert!(out.sip.is_empty(), "no Via left to answer to");
    assert_eq!(rec.stats().sip_parse_errors, 1);
}
