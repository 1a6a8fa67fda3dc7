//! SIP as the field sends it, in simulated time: a trunk that challenges
//! (and redirects, asks for a longer session interval, answers 491), a
//! request that forks into several dialogs with early media from one,
//! reliable provisionals with PRACK and UPDATE, delayed offers, session
//! refreshes, fax and video re-offers, ICE, and a far end that tries to
//! speak for the caller's leg. Each test checks what reaches each party and
//! what is recorded.

mod sim;

use std::time::{Duration, Instant};

use earshot_recorder_core::sip::Message;
use earshot_recorder_core::{EndReason, Event, MediaNote, Recorder, Shard};
use sim::*;

/// A response with the callee side's tag `tag` (several forks answer one INVITE).
fn response_tagged(req: &Message, code: u16, reason: &str, tag: &str, body: &str) -> String {
    mk_response(req, code, reason, body).replace("tag=callee-tag", &format!("tag={tag}"))
}

/// The caller's in-dialog request to the dialog of `tag`.
fn caller_to(method: &str, id: &str, cseq: u32, tag: &str, body: &str, extra: &str) -> String {
    mk_in_dialog(method, id, cseq, true, body, extra)
        .replace("tag=callee-tag", &format!("tag={tag}"))
}

/// The caller's INVITE tried again in the same call: same Call-ID and From
/// tag, a new branch and CSeq, and whatever the refusal asked for.
fn retried_invite(from: &str, to: &str, id: &str, cseq: u32, extra: &str) -> String {
    mk_invite(from, to, id, &sdp("10.0.0.1", 4000, ""))
        .replace(
            &format!("branch=z9hG4bK-{id}-1"),
            &format!("branch=z9hG4bK-{id}-{cseq}"),
        )
        .replace("CSeq: 1 INVITE", &format!("{extra}CSeq: {cseq} INVITE"))
}

/// The caller's ACK for a non-2xx final answer (hop by hop: the INVITE's branch).
fn ack_for_failure(id: &str, cseq: u32, to_tag: &str) -> String {
    format!(
        "ACK sip:500@10.0.0.2:5060 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-{id}-{cseq}\r\n\
         Max-Forwards: 70\r\n\
         From: \"Caller\" <sip:008@pbx.example>;tag=c-{id}\r\n\
         To: <sip:500@pbx.example>;tag={to_tag}\r\n\
         Call-ID: {id}\r\nCSeq: {cseq} ACK\r\nContent-Length: 0\r\n\r\n"
    )
}

fn answered(events: &[Event]) -> bool {
    events
        .iter()
        .any(|e| matches!(e, Event::CallAnswered { .. }))
}

fn ended(events: &[Event]) -> Option<(Instant, EndReason)> {
    events.iter().find_map(|e| match e {
        Event::CallEnded { at, reason, .. } => Some((*at, reason.clone())),
        _ => None,
    })
}

fn started(events: &[Event]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, Event::CallStarted { .. }))
        .count()
}

/// RTP from the caller's phone and from the callee's, into the recorder's ports.
fn media_flows(rec: &mut Recorder, now: Instant, c: &Call, callee_rtp: &str, seq: u16) -> bool {
    let (a, _) = rtp_in(
        rec,
        now,
        c.port_for_caller,
        CALLER_RTP,
        &rtp(0, seq, 160 * seq as u32, 1, &[0xff; 160]),
    );
    let (b, _) = rtp_in(
        rec,
        now,
        c.port_for_callee,
        callee_rtp,
        &rtp(0, seq, 160 * seq as u32, 2, &[0xff; 160]),
    );
    a.is_some_and(|r| r.to.to_string() == callee_rtp) && b.is_some_and(|r| r.to == addr(CALLER_RTP))
}

/// A challenged INVITE and its retry with credentials are one call: it is
/// answered, recorded, and keeps its ports however long it lasts (today's
/// main ended it at the 407 and freed its relay ports 5–10 s later).
#[test]
fn a_challenged_invite_retried_with_credentials_is_one_recorded_call() {
    for (code, reason, extra) in [
        (
            407,
            "Proxy Authentication Required",
            "Proxy-Authorization: Digest username=\"pbx\", realm=\"trunk\", nonce=\"n\", uri=\"sip:500@10.0.0.2\", response=\"0123456789abcdef0123456789abcdef\"\r\n",
        ),
        (
            401,
            "Unauthorized",
            "Authorization: Digest username=\"pbx\", realm=\"trunk\", nonce=\"n\", uri=\"sip:500@10.0.0.2\", response=\"0123456789abcdef0123456789abcdef\"\r\n",
        ),
        (302, "Moved Temporarily", ""),
        (
            422,
            "Session Interval Too Small",
            "Session-Expires: 1800\r\nMin-SE: 1800\r\n",
        ),
        (491, "Request Pending", ""),
    ] {
        let mut rec = mk_recorder();
        let t0 = Instant::now();
        let id = format!("ch{code}");
        let out = sip_in(
            &mut rec,
            t0,
            CALLER,
            &mk_invite("008", "500", &id, &sdp("10.0.0.1", 4000, "")),
        );
        let first = out.to(CALLEE).clone();
        let first_port = sdp_port(&first);
        assert_eq!(started(&out.events), 1);
        // The trunk refuses; the recorder ACKs it downstream and passes it up.
        let out = sip_in(
            &mut rec,
            t0,
            CALLEE,
            &response_tagged(&first, code, reason, "trunk-1", ""),
        );
        assert_eq!(out.codes_to(CALLER), [code]);
        assert_eq!(out.methods_to(CALLEE), ["ACK"]);
        assert!(
            ended(&out.events).is_none(),
            "{code}: the call waits for the retry"
        );
        // The caller's ACK is absorbed; its retry follows a moment later.
        let out = sip_in(&mut rec, t0, CALLER, &ack_for_failure(&id, 1, "trunk-1"));
        assert!(out.sip.is_empty(), "{code}: hop-by-hop ACK absorbed");
        let t1 = t0 + Duration::from_millis(300);
        let out = sip_in(
            &mut rec,
            t1,
            CALLER,
            &retried_invite("008", "500", &id, 2, extra),
        );
        assert_eq!(started(&out.events), 0, "{code}: no second call");
        let retry = out.to(CALLEE).clone();
        assert_ne!(retry.branch(), first.branch());
        assert_eq!(sdp_port(&retry), first_port, "{code}: the call's ports");
        if !extra.is_empty() {
            let name = extra.split(':').next().unwrap();
            assert!(retry.header(name).is_some(), "{code}: {name} forwarded");
        }
        // Long ringing: the sweep runs many times before the answer.
        let t2 = t1 + Duration::from_secs(20);
        rec.handle_timeout(t2);
        let out = sip_in(
            &mut rec,
            t2,
            CALLEE,
            &mk_response(&retry, 200, "OK", &sdp("10.0.0.2", 6000, "")),
        );
        let ok = out.to(CALLER).clone();
        assert!(answered(&out.events), "{code}");
        assert_eq!(
            out.recording(),
            [true],
            "{code}: the Always user is recorded"
        );
        let ack = mk_in_dialog("ACK", &id, 2, true, "", "");
        sip_in(&mut rec, t2, CALLER, &ack);
        let c = Call {
            id: id.clone(),
            port_for_callee: sdp_port(&retry),
            port_for_caller: sdp_port(&ok),
            invite_to_callee: retry,
            events: vec![],
        };
        // Media flows long after the refusal, through every sweep.
        for s in 0..20u16 {
            let t = t2 + Duration::from_secs(s as u64);
            rec.handle_timeout(t);
            assert!(
                media_flows(&mut rec, t, &c, CALLEE_RTP, s + 1),
                "{code}: media at {s} s"
            );
        }
        assert_eq!(rec.stats().invite_retries.get(&("retried", code)), Some(&1));
        let out = sip_in(
            &mut rec,
            t2 + Duration::from_secs(21),
            CALLER,
            &mk_in_dialog("BYE", &id, 3, true, "", ""),
        );
        assert!(matches!(ended(&out.events), Some((_, EndReason::Bye(_)))));
    }
}

/// A refusal the caller does not retry ends the call when the retry window
/// closes, dated when the refusal came; a refusal no caller retries (486)
/// ends it at once.
#[test]
fn a_challenge_never_answered_ends_the_call_at_the_refusal() {
    let mut rec = mk_recorder();
    let t0 = Instant::now();
    let out = sip_in(
        &mut rec,
        t0,
        CALLER,
        &mk_invite("008", "500", "nr", &sdp("10.0.0.1", 4000, "")),
    );
    let invite = out.to(CALLEE).clone();
    sip_in(
        &mut rec,
        t0,
        CALLEE,
        &response_tagged(&invite, 407, "Proxy Authentication Required", "t", ""),
    );
    let free = rec.free_port_pairs();
    rec.handle_timeout(t0 + Duration::from_secs(20));
    assert!(ended(&drain(&mut rec).events).is_none());
    rec.handle_timeout(t0 + Duration::from_secs(40));
    let (at, reason) = ended(&drain(&mut rec).events).expect("ended after the window");
    assert_eq!((at, reason), (t0, EndReason::Rejected(407)));
    rec.handle_timeout(t0 + Duration::from_secs(50));
    assert_eq!(rec.free_port_pairs(), free + 2, "its ports come back");

    let out = sip_in(
        &mut rec,
        t0,
        CALLER,
        &mk_invite("008", "500", "busy", &sdp("10.0.0.1", 4000, "")),
    );
    let invite = out.to(CALLEE).clone();
    let out = sip_in(
        &mut rec,
        t0,
        CALLEE,
        &mk_response(&invite, 486, "Busy Here", ""),
    );
    assert_eq!(ended(&out.events), Some((t0, EndReason::Rejected(486))));
    // A caller trying again after that (same Call-ID) places a new call.
    let out = sip_in(
        &mut rec,
        t0 + Duration::from_secs(1),
        CALLER,
        &retried_invite("008", "500", "busy", 2, ""),
    );
    assert_eq!(started(&out.events), 1);
    assert_eq!(out.methods_to(CALLEE), ["INVITE"]);
}

/// The far end sends a re-INVITE carrying the caller's tag from its own
/// address, to point the caller's media leg at itself: refused, and the
/// media keeps flowing between the real parties (today's main applied it:
/// the callee heard the attacker and the recording took its audio).
#[test]
fn the_far_end_cannot_take_over_the_callers_media_leg() {
    let mut rec = mk_recorder();
    let t0 = Instant::now();
    let c = establish(&mut rec, t0, "008", "500", "steal");
    assert!(media_flows(&mut rec, t0, &c, CALLEE_RTP, 1));
    let hijack = mk_in_dialog("INVITE", "steal", 2, true, &sdp("10.0.0.2", 7000, ""), "");
    let out = sip_in(&mut rec, t0 + Duration::from_secs(2), CALLEE, &hijack);
    assert_eq!(out.codes_to(CALLEE), [403]);
    assert!(
        out.methods_to(CALLER).is_empty(),
        "nothing reaches the caller"
    );
    assert_eq!(
        rec.stats().sip_dropped.get("request_from_other_leg"),
        Some(&1)
    );
    // The attacker's packets to the caller-facing port are not relayed;
    // the caller's are, to the callee.
    let (r, _) = rtp_in(
        &mut rec,
        t0,
        c.port_for_caller,
        "10.0.0.2:7000",
        &rtp(0, 9, 9, 3, &[0; 160]),
    );
    assert!(r.is_none());
    assert!(media_flows(
        &mut rec,
        t0 + Duration::from_secs(3),
        &c,
        CALLEE_RTP,
        2
    ));
    // A BYE with the caller's tags from the callee's address does not end the call.
    let bye = mk_in_dialog("BYE", "steal", 3, true, "", "");
    let out = sip_in(&mut rec, t0 + Duration::from_secs(4), CALLEE, &bye);
    assert_eq!(out.codes_to(CALLEE), [403]);
    assert!(ended(&out.events).is_none());
    // Tags naming no dialog of the call: 481.
    let stray = mk_in_dialog("INVITE", "steal", 4, false, &sdp("10.0.0.2", 6000, ""), "")
        .replace("tag=callee-tag", "tag=nobody");
    let stray = stray.replace("tag=c-steal", "tag=nobody-else");
    let out = sip_in(&mut rec, t0 + Duration::from_secs(4), CALLEE, &stray);
    assert_eq!(out.codes_to(CALLEE), [481]);
}

/// A retransmitted INVITE (its 100 Trying lost) on a shard whose ports the
/// INVITE itself used up is the same transaction, answered from it: never
/// handed to another shard as a second call (today's main forwarded it on
/// a second branch). A new call there is handed over, before any state.
#[test]
fn a_retransmitted_invite_on_a_full_shard_stays_one_call() {
    let cfg = mk_config();
    let mut rec = Recorder::new_shard(
        cfg,
        &[30000, 30002],
        Shard {
            index: 0,
            count: 2,
            loads: Default::default(),
        },
    );
    let t0 = Instant::now();
    let invite = mk_invite("008", "500", "rt", &sdp("10.0.0.1", 4000, ""));
    let out = sip_in(&mut rec, t0, CALLER, &invite);
    assert_eq!(out.methods_to(CALLEE), ["INVITE"]);
    assert_eq!(rec.free_port_pairs(), 0);
    let out = sip_in(&mut rec, t0 + Duration::from_millis(500), CALLER, &invite);
    assert_eq!(out.codes_to(CALLER), [100], "answered from its transaction");
    assert!(out.diverted.is_empty() && out.methods_to(CALLEE).is_empty());
    // A new call finds no ports here: handed over whole, nothing kept.
    let other = mk_invite("008", "500", "rt2", &sdp("10.0.0.1", 4000, ""));
    let out = sip_in(&mut rec, t0, CALLER, &other);
    assert_eq!(out.diverted.len(), 1);
    assert_eq!(out.diverted[0].1, other.as_bytes());
    assert!(out.sip.is_empty() && out.events.is_empty());
    // Handed back (no shard had room): refused here, never handed on again.
    rec.handle_diverted_sip(t0, udp(CALLER), other.as_bytes());
    let out = drain(&mut rec);
    assert_eq!(out.codes_to(CALLER), [503]);
    assert!(out.diverted.is_empty());
}

/// A request that forks: 180 from one branch, 183 with early media from
/// another, the 200 from the first, then a second 200 from the other fork
/// (the caller ACKs and hangs it up). The media follows the early dialog,
/// then the answered one; hanging up the extra fork leaves the call up.
#[test]
fn a_forked_call_follows_early_media_then_the_answer_and_survives_the_extra_fork() {
    let mut rec = mk_recorder();
    let t0 = Instant::now();
    let out = sip_in(
        &mut rec,
        t0,
        CALLER,
        &mk_invite("008", "500", "fk", &sdp("10.0.0.1", 4000, "")),
    );
    let invite = out.to(CALLEE).clone();
    let port_for_callee = sdp_port(&invite);
    sip_in(
        &mut rec,
        t0,
        CALLEE,
        &response_tagged(&invite, 180, "Ringing", "fork-a", ""),
    );
    let out = sip_in(
        &mut rec,
        t0,
        CALLEE,
        &response_tagged(
            &invite,
            183,
            "Session Progress",
            "fork-b",
            &sdp("10.0.0.2", 6100, ""),
        ),
    );
    let early = out.to(CALLER).clone();
    let port_for_caller = sdp_port(&early);
    // Early media from fork B reaches the caller; nothing is recorded yet.
    let (r, ev) = rtp_in(
        &mut rec,
        t0,
        port_for_callee,
        "10.0.0.2:6100",
        &rtp(0, 1, 160, 5, &[1; 160]),
    );
    assert_eq!(
        r.map(|r| r.to),
        Some(addr(CALLER_RTP)),
        "early media relayed"
    );
    assert!(
        !ev.iter().any(|e| matches!(e, Event::Media(_))),
        "not recorded before the answer"
    );
    // Fork A answers.
    let out = sip_in(
        &mut rec,
        t0 + Duration::from_secs(1),
        CALLEE,
        &response_tagged(&invite, 200, "OK", "fork-a", &sdp("10.0.0.2", 6000, "")),
    );
    assert!(answered(&out.events));
    assert_eq!(sdp_port(out.to(CALLER)), port_for_caller);
    let c = Call {
        id: "fk".into(),
        port_for_callee,
        port_for_caller,
        invite_to_callee: invite.clone(),
        events: vec![],
    };
    sip_in(
        &mut rec,
        t0,
        CALLER,
        &caller_to("ACK", "fk", 1, "fork-a", "", ""),
    );
    assert!(media_flows(
        &mut rec,
        t0 + Duration::from_secs(1),
        &c,
        "10.0.0.2:6000",
        2
    ));
    let (r, _) = rtp_in(
        &mut rec,
        t0,
        port_for_callee,
        "10.0.0.2:6100",
        &rtp(0, 3, 480, 5, &[1; 160]),
    );
    assert!(r.is_none(), "fork B's media stops counting once A answered");
    // Fork B answers too: forwarded (the caller must ACK and BYE it).
    let out = sip_in(
        &mut rec,
        t0 + Duration::from_secs(1),
        CALLEE,
        &response_tagged(&invite, 200, "OK", "fork-b", &sdp("10.0.0.2", 6100, "")),
    );
    assert_eq!(out.codes_to(CALLER), [200]);
    let out = sip_in(
        &mut rec,
        t0,
        CALLER,
        &caller_to("ACK", "fk", 1, "fork-b", "", ""),
    );
    assert_eq!(out.methods_to(CALLEE), ["ACK"]);
    let out = sip_in(
        &mut rec,
        t0 + Duration::from_secs(2),
        CALLER,
        &caller_to("BYE", "fk", 2, "fork-b", "", ""),
    );
    assert_eq!(out.methods_to(CALLEE), ["BYE"]);
    assert!(
        ended(&out.events).is_none(),
        "the answered dialog is still up"
    );
    assert!(media_flows(
        &mut rec,
        t0 + Duration::from_secs(3),
        &c,
        "10.0.0.2:6000",
        4
    ));
    let out = sip_in(
        &mut rec,
        t0 + Duration::from_secs(5),
        CALLER,
        &caller_to("BYE", "fk", 3, "fork-a", "", ""),
    );
    assert!(matches!(ended(&out.events), Some((_, EndReason::Bye(_)))));
}

/// Delayed offer (how CUBE and many trunks call): no SDP in the INVITE,
/// the offer in the 200, the answer in the ACK; then a re-INVITE without
/// SDP the same way. Media flows through the relay and is recorded.
#[test]
fn delayed_offer_and_a_re_invite_without_sdp() {
    let mut rec = mk_recorder();
    let t0 = Instant::now();
    let out = sip_in(&mut rec, t0, CALLER, &mk_invite("008", "500", "do", ""));
    let invite = out.to(CALLEE).clone();
    assert!(invite.body.is_empty());
    let out = sip_in(
        &mut rec,
        t0,
        CALLEE,
        &mk_response(&invite, 200, "OK", &sdp("10.0.0.2", 6000, "")),
    );
    let offer = out.to(CALLER).clone();
    assert!(answered(&out.events));
    let port_for_caller = sdp_port(&offer);
    let out = sip_in(
        &mut rec,
        t0,
        CALLER,
        &mk_in_dialog("ACK", "do", 1, true, &sdp("10.0.0.1", 4000, ""), ""),
    );
    let answer = out.to(CALLEE).clone();
    let port_for_callee = sdp_port(&answer);
    assert!(String::from_utf8_lossy(&answer.body).contains("c=IN IP4 10.0.0.9"));
    let c = Call {
        id: "do".into(),
        port_for_callee,
        port_for_caller,
        invite_to_callee: invite,
        events: vec![],
    };
    assert!(media_flows(&mut rec, t0, &c, CALLEE_RTP, 1));
    // re-INVITE without SDP: the callee offers a new address, the ACK answers.
    let out = sip_in(
        &mut rec,
        t0 + Duration::from_secs(5),
        CALLER,
        &mk_in_dialog("INVITE", "do", 2, true, "", ""),
    );
    let reinvite = out.to(CALLEE).clone();
    let out = sip_in(
        &mut rec,
        t0 + Duration::from_secs(5),
        CALLEE,
        &mk_in_dialog_answer(&reinvite, 200, &sdp("10.0.0.2", 6200, "")),
    );
    assert_eq!(sdp_port(out.to(CALLER)), port_for_caller);
    sip_in(
        &mut rec,
        t0 + Duration::from_secs(5),
        CALLER,
        &mk_in_dialog("ACK", "do", 2, true, &sdp("10.0.0.1", 4000, ""), ""),
    );
    assert!(media_flows(
        &mut rec,
        t0 + Duration::from_secs(6),
        &c,
        "10.0.0.2:6200",
        2
    ));
}

/// Reliable provisionals (RFC 3262) with the answer in the 183, PRACK, and
/// UPDATE (RFC 3311) with SDP before and after the answer; session
/// refreshes by re-INVITE and UPDATE every 30 s keep one recording going.
#[test]
fn prack_update_and_session_refreshes_keep_one_recording() {
    let mut rec = mk_recorder();
    let t0 = Instant::now();
    let out = sip_in(
        &mut rec,
        t0,
        CALLER,
        &mk_invite("008", "500", "pr", &sdp("10.0.0.1", 4000, "")),
    );
    let invite = out.to(CALLEE).clone();
    let port_for_callee = sdp_port(&invite);
    let prov = mk_response(&invite, 183, "Session Progress", &sdp("10.0.0.2", 6000, ""))
        .replace("CSeq:", "Require: 100rel\r\nRSeq: 1\r\nCSeq:");
    let out = sip_in(&mut rec, t0, CALLEE, &prov);
    let port_for_caller = sdp_port(out.to(CALLER));
    let out = sip_in(
        &mut rec,
        t0,
        CALLER,
        &mk_in_dialog("PRACK", "pr", 2, true, "", "RAck: 1 1 INVITE\r\n"),
    );
    let prack = out.to(CALLEE).clone();
    let out = sip_in(&mut rec, t0, CALLEE, &mk_in_dialog_response(&prack, 200));
    assert_eq!(out.codes_to(CALLER), [200]);
    // UPDATE in the early dialog: the caller moves its media.
    let out = sip_in(
        &mut rec,
        t0,
        CALLER,
        &mk_in_dialog("UPDATE", "pr", 3, true, &sdp("10.0.0.1", 4100, ""), ""),
    );
    let update = out.to(CALLEE).clone();
    assert_eq!(sdp_port(&update), port_for_callee);
    sip_in(&mut rec, t0, CALLEE, &mk_in_dialog_response(&update, 200));
    let out = sip_in(
        &mut rec,
        t0 + Duration::from_secs(1),
        CALLEE,
        &mk_response(&invite, 200, "OK", ""),
    );
    assert_eq!(out.recording(), [true]);
    sip_in(
        &mut rec,
        t0,
        CALLER,
        &mk_in_dialog("ACK", "pr", 1, true, "", ""),
    );
    let c = Call {
        id: "pr".into(),
        port_for_callee,
        port_for_caller,
        invite_to_callee: invite,
        events: vec![],
    };
    let caller_now = "10.0.0.1:4100";
    let flows = |rec: &mut Recorder, t, seq: u16| {
        let (a, _) = rtp_in(
            rec,
            t,
            c.port_for_caller,
            caller_now,
            &rtp(0, seq, 160 * seq as u32, 1, &[0xff; 160]),
        );
        let (b, _) = rtp_in(
            rec,
            t,
            c.port_for_callee,
            CALLEE_RTP,
            &rtp(0, seq, 160 * seq as u32, 2, &[0xff; 160]),
        );
        a.is_some() && b.is_some_and(|r| r.to.to_string() == caller_now)
    };
    assert!(flows(&mut rec, t0 + Duration::from_secs(1), 1));
    let mut recording = Vec::new();
    for n in 0..6u32 {
        let t = t0 + Duration::from_secs(30 * (n as u64 + 1));
        rec.handle_timeout(t);
        let refresh = if n % 2 == 0 {
            mk_in_dialog(
                "INVITE",
                "pr",
                10 + n,
                true,
                &sdp("10.0.0.1", 4100, ""),
                "Session-Expires: 90;refresher=uac\r\n",
            )
        } else {
            mk_in_dialog(
                "UPDATE",
                "pr",
                10 + n,
                true,
                "",
                "Session-Expires: 90;refresher=uac\r\n",
            )
        };
        let out = sip_in(&mut rec, t, CALLER, &refresh);
        let fwd = out.to(CALLEE).clone();
        let body = if n % 2 == 0 {
            sdp("10.0.0.2", 6000, "")
        } else {
            String::new()
        };
        let resp = mk_in_dialog_answer(&fwd, 200, &body);
        let out = sip_in(&mut rec, t, CALLEE, &resp);
        recording.extend(out.recording());
        if n % 2 == 0 {
            sip_in(
                &mut rec,
                t,
                CALLER,
                &mk_in_dialog("ACK", "pr", 10 + n, true, "", ""),
            );
        }
        assert!(flows(&mut rec, t, 2 + n as u16), "media after refresh {n}");
    }
    assert!(
        recording.is_empty(),
        "refreshes never stop or restart the recording"
    );
}

/// A fax re-INVITE (T.38 over UDPTL) is relayed, its packets passed as
/// they come; the recording is told. Video beside audio is relayed, not
/// recorded. ICE candidates never reach the other party.
#[test]
fn fax_video_and_ice() {
    let mut rec = mk_recorder();
    let t0 = Instant::now();
    let av = format!(
        "{}m=video 4002 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=candidate:1 1 UDP 2130706431 192.0.2.77 4002 typ host\r\n",
        sdp(
            "10.0.0.1",
            4000,
            "a=ice-ufrag:abcd\r\na=ice-pwd:0123456789abcdefghijkl\r\na=candidate:1 1 UDP 2130706431 192.0.2.77 4000 typ host\r\n"
        )
    );
    let out = sip_in(&mut rec, t0, CALLER, &mk_invite("008", "500", "fx", &av));
    let invite = out.to(CALLEE).clone();
    let body = String::from_utf8_lossy(&invite.body).into_owned();
    assert!(
        !body.contains("candidate") && !body.contains("192.0.2.77") && !body.contains("ice-"),
        "{body}"
    );
    let video_for_callee: u16 = body
        .lines()
        .find(|l| l.starts_with("m=video"))
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let answer = format!(
        "{}m=video 6002 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n",
        sdp("10.0.0.2", 6000, "")
    );
    let out = sip_in(
        &mut rec,
        t0,
        CALLEE,
        &mk_response(&invite, 200, "OK", &answer),
    );
    assert_eq!(out.recording(), [true]);
    sip_in(
        &mut rec,
        t0,
        CALLER,
        &mk_in_dialog("ACK", "fx", 1, true, "", ""),
    );
    let (r, ev) = rtp_in(
        &mut rec,
        t0,
        video_for_callee,
        "10.0.0.2:6002",
        &rtp(96, 1, 3000, 9, &[7; 900]),
    );
    assert_eq!(
        r.map(|r| r.to),
        Some(addr("10.0.0.1:4002")),
        "video relayed: {:?}",
        rec.stats().rtp_dropped
    );
    assert!(
        !ev.iter().any(|e| matches!(e, Event::Media(_))),
        "video not recorded"
    );
    // The fax machine answers: T.38 re-INVITE from the callee.
    let t38 = "v=0\r\no=- 1 2 IN IP4 10.0.0.2\r\ns=-\r\nc=IN IP4 10.0.0.2\r\nt=0 0\r\nm=audio 0 RTP/AVP 0\r\nm=image 6004 udptl t38\r\na=T38FaxVersion:0\r\na=T38FaxRateManagement:transferredTCF\r\n";
    let out = sip_in(
        &mut rec,
        t0 + Duration::from_secs(3),
        CALLEE,
        &mk_in_dialog("INVITE", "fx", 1, false, t38, ""),
    );
    let reinvite = out.to(CALLER).clone();
    assert!(out.events.iter().any(|e| matches!(
        e,
        Event::MediaNote {
            note: MediaNote::Fax,
            ..
        }
    )));
    let image_for_caller: u16 = String::from_utf8_lossy(&reinvite.body)
        .lines()
        .find(|l| l.starts_with("m=image"))
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let t38_answer = "v=0\r\no=- 1 2 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 0 RTP/AVP 0\r\nm=image 4004 udptl t38\r\na=T38FaxVersion:0\r\n";
    let resp = mk_in_dialog_answer(&reinvite, 200, t38_answer);
    sip_in(&mut rec, t0 + Duration::from_secs(3), CALLER, &resp);
    // A UDPTL packet (not RTP: version bits 0) passes as it came.
    let udptl = [0x00u8, 0x01, 0x02, 0x03, 0x04];
    let (r, _) = rtp_in(
        &mut rec,
        t0 + Duration::from_secs(4),
        image_for_caller,
        "10.0.0.1:4004",
        &udptl,
    );
    assert_eq!(
        r.map(|r| r.to),
        Some(addr("10.0.0.2:6004")),
        "UDPTL relayed"
    );
}

/// A second INVITE for a call in progress on a new branch (a merged or
/// looped request) is 482; an INVITE inside a dialog no call here has
/// is 481 (it would set up media around the relay).
#[test]
fn merged_and_unknown_dialog_invites_are_refused() {
    let mut rec = mk_recorder();
    let t0 = Instant::now();
    sip_in(
        &mut rec,
        t0,
        CALLER,
        &mk_invite("008", "500", "mg", &sdp("10.0.0.1", 4000, "")),
    );
    let merged = mk_invite("008", "500", "mg", &sdp("10.0.0.1", 4000, ""))
        .replace("branch=z9hG4bK-mg-1", "branch=z9hG4bK-other");
    let out = sip_in(&mut rec, t0, CALLER, &merged);
    assert_eq!(out.codes_to(CALLER), [482]);
    assert!(out.methods_to(CALLEE).is_empty());
    let out = sip_in(
        &mut rec,
        t0,
        CALLER,
        &mk_in_dialog("INVITE", "nobody", 2, true, &sdp("10.0.0.1", 4000, ""), ""),
    );
    assert_eq!(out.codes_to(CALLER), [481]);
    assert!(out.methods_to(CALLEE).is_empty());
}

/// A peer that reuses a branch for a new request (SIPp's `[branch]` in a
/// scenario loop does) still gets each request forwarded: a new CSeq is no
/// retransmission. A real retransmission (same CSeq) is answered from the
/// transaction.
#[test]
fn a_reused_branch_with_a_new_cseq_is_a_new_request() {
    let mut rec = mk_recorder();
    let t0 = Instant::now();
    establish(&mut rec, t0, "008", "500", "rb");
    let refresh = |cseq: u32| {
        mk_in_dialog("UPDATE", "rb", cseq, true, "", "")
            .replace(&format!("-UPDATE-{cseq}-true"), "-UPDATE-loop")
    };
    let out = sip_in(&mut rec, t0, CALLER, &refresh(2));
    let first = out.to(CALLEE).clone();
    sip_in(&mut rec, t0, CALLEE, &mk_in_dialog_response(&first, 200));
    let again = sip_in(&mut rec, t0, CALLER, &refresh(2));
    assert!(again.methods_to(CALLEE).is_empty(), "a retransmission");
    assert_eq!(again.codes_to(CALLER), [200]);
    let out = sip_in(&mut rec, t0 + Duration::from_secs(1), CALLER, &refresh(3));
    assert_eq!(
        out.methods_to(CALLEE),
        ["UPDATE"],
        "a new request on the same branch"
    );
}

/// With video refused by config, the video stream reaches the other party
/// disabled (port 0), takes no ports, and the call keeps its audio.
#[test]
fn video_refused_by_config_keeps_the_audio() {
    let mut cfg = mk_config();
    cfg.refuse_video = true;
    let ports: Vec<u16> = (30000..30100).step_by(2).collect();
    let mut rec = Recorder::new(cfg, &ports);
    let t0 = Instant::now();
    let av = format!(
        "{}m=video 4002 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n",
        sdp("10.0.0.1", 4000, "")
    );
    let free = rec.free_port_pairs();
    let out = sip_in(&mut rec, t0, CALLER, &mk_invite("008", "500", "nv", &av));
    let body = String::from_utf8_lossy(&out.to(CALLEE).body).into_owned();
    assert!(body.contains("m=video 0 RTP/AVP 96"), "{body}");
    assert!(!body.contains("m=audio 0 "), "{body}");
    assert_eq!(rec.free_port_pairs(), free - 2, "audio's two pairs only");
}
