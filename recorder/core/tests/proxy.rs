//! The recorder core between a caller and a callee, in simulated time:
//! every flow of the media-path issue, asserting the messages each party
//! receives and the recording decisions the core emits.

mod sim;

use std::time::{Duration, Instant};

use earshot_recorder_core::{EndReason, Event, RecordingMode, RecordingReason, Side};
use sim::*;

#[test]
fn invite_is_forwarded_with_via_record_route_and_rewritten_sdp() {
    let mut rec = mk_recorder();
    let t0 = Instant::now();
    let out = sip_in(
        &mut rec,
        t0,
        CALLER,
        &mk_invite(
            "008",
            "012",
            "c1",
            &sdp("10.0.0.1", 4000, "a=x-vendor:keep\r\n"),
        ),
    );
    assert_eq!(out.codes_to(CALLER), [100], "100 Trying at once");
    let fwd = out.to(CALLEE);
    let text = String::from_utf8(fwd.to_bytes()).unwrap();
    let branch = fwd.branch().unwrap();
    assert!(branch.starts_with("z9hG4bK-es"), "{branch}");
    let port = sdp_port(fwd);
    let body = format!(
        "v=0\r\no=- 1 1 IN IP4 10.0.0.9\r\ns=-\r\nc=IN IP4 10.0.0.9\r\nt=0 0\r\nm=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=x-vendor:keep\r\n"
    );
    let expected = format!(
        "INVITE sip:012@10.0.0.2:5060 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 10.0.0.9:5060;branch={branch}\r\n\
         Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-c1-1\r\n\
         Record-Route: <sip:10.0.0.9:5060;lr>\r\n\
         Max-Forwards: 69\r\n\
         From: \"Caller\" <sip:008@pbx.example>;tag=c-c1\r\n\
         To: <sip:012@pbx.example>\r\n\
         Call-ID: c1\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:008@10.0.0.1:5060>\r\n\
         Content-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    assert_eq!(text, expected);
    match &out.events[..] {
        [
            Event::CallStarted {
                caller,
                callee,
                users,
                ..
            },
        ] => {
            assert_eq!(caller.number.as_deref(), Some("008"));
            assert_eq!(caller.display_name.as_deref(), Some("Caller"));
            assert_eq!(callee.number.as_deref(), Some("012"));
            let u: Vec<(&str, RecordingMode, Side)> = users
                .iter()
                .map(|u| (u.extension.as_str(), u.mode, u.side))
                .collect();
            assert_eq!(
                u,
                [
                    ("008", RecordingMode::Always, Side::Caller),
                    ("012", RecordingMode::OnDemand, Side::Callee)
                ]
            );
        }
        other => panic!("expected CallStarted, got {other:?}"),
    }
}

#[test]
fn always_user_is_recorded_from_answer_to_bye_and_media_is_relayed_both_ways() {
    let mut rec = mk_recorder();
    let t0 = Instant::now();
    let call = establish(&mut rec, t0, "008", "500", "c2");
    assert!(
        matches!(call.events[1], Event::CallAnswered { .. }),
        "{:?}",
        call.events
    );
    match &call.events[2] {
        Event::Recording {
            on: true,
            reason: RecordingReason::Answered { extension },
            ..
        } => assert_eq!(extension, "008"),
        other => panic!("{other:?}"),
    }
    // Caller → recorder (port facing the caller) → callee's negotiated address, from the port facing the callee.
    let t1 = t0 + Duration::from_secs(2);
    let (relay, events) = rtp_in(
        &mut rec,
        t1,
        call.port_for_caller,
        CALLER_RTP,
        &rtp(0, 1, 160, 1, &[0xff; 160]),
    );
    let relay = relay.expect("relayed");
    assert_eq!(relay.to, addr(CALLEE_RTP));
    assert_eq!(relay.from_port, call.port_for_callee);
    match &events[..] {
        [Event::Media(f)] => {
            assert_eq!(
                (
                    f.side,
                    f.seq,
                    f.timestamp,
                    f.codec.as_deref(),
                    f.payload.len()
                ),
                (Side::Caller, 1, 160, Some("PCMU"), 160)
            );
        }
        other => panic!("{other:?}"),
    }
    let (relay, _) = rtp_in(
        &mut rec,
        t1,
        call.port_for_callee,
        CALLEE_RTP,
        &rtp(0, 9, 320, 2, &[0x7f; 160]),
    );
    assert_eq!(relay.unwrap().to, addr(CALLER_RTP));
    // RTCP on the odd port goes to the odd port of the other side.
    let (relay, _) = rtp_in(
        &mut rec,
        t1,
        call.port_for_caller + 1,
        "10.0.0.1:4001",
        &[0x80, 200, 0, 1, 0, 0, 0, 1],
    );
    assert_eq!(
        relay,
        Some(earshot_recorder_core::Relay {
            from_port: call.port_for_callee + 1,
            to: addr("10.0.0.2:6001")
        })
    );

    // BYE from the callee reaches the caller; recording stops and the call ends.
    let out = sip_in(
        &mut rec,
        t0 + Duration::from_secs(30),
        CALLEE,
        &mk_in_dialog("BYE", "c2", 1, false, "", ""),
    );
    let bye = out.to(CALLER);
    assert_eq!(bye.method(), Some("BYE"));
    assert!(bye.routes().is_empty(), "our Route is consumed");
    assert_eq!(out.recording(), [false]);
    assert!(matches!(
        out.events.last(),
        Some(Event::CallEnded {
            reason: EndReason::Bye(Side::Callee),
            answered: true,
            ..
        })
    ));
    let out = sip_in(
        &mut rec,
        t0 + Duration::from_secs(30),
        CALLER,
        &mk_in_dialog_response(bye, 200),
    );
    assert_eq!(out.codes_to(CALLEE), [200]);
    assert_eq!(rec.stats().calls.get("answered"), Some(&1));
    assert_eq!(
        rec.stats().rtp_packets.get("caller_to_callee"),
        Some(&2),
        "RTP and RTCP counted"
    );
}

#[test]
fn bye_from_the_caller_ends_the_call_too() {
    let mut rec = mk_recorder();
    let t0 = Instant::now();
    establish(&mut rec, t0, "008", "500", "c3");
    let out = sip_in(
        &mut rec,
        t0 + Duration::from_secs(5),
        CALLER,
        &mk_in_dialog("BYE", "c3", 2, true, "", ""),
    );
    assert_eq!(out.methods_to(CALLEE), ["BYE"]);
    assert!(matches!(
        out.events.last(),
        Some(Event::CallEnded {
            reason: EndReason::Bye(Side::Caller),
            ..
        })
    ));
    assert_eq!(rec.active_calls(), 0);
}

#[test]
fn never_and_unknown_users_are_not_recorded() {
    let mut rec = mk_recorder();
    let t0 = Instant::now();
    for (from, to, id) in [
        ("003", "500", "n1"),
        ("777", "888", "n2"),
        ("003", "777", "n3"),
    ] {
        let call = establish(&mut rec, t0, from, to, id);
        match &call.events[0] {
            Event::CallStarted { users, .. } => assert!(users.is_empty(), "{id}: {users:?}"),
            other => panic!("{other:?}"),
        }
        let (_, events) = rtp_in(
            &mut rec,
            t0,
            call.port_for_caller,
            CALLER_RTP,
            &rtp(0, 1, 160, 1, &[0; 160]),
        );
        assert!(events.is_empty(), "no media events for an unrecorded call");
        // Keying a shortcode on an unrecorded call records nothing either.
        let events = key_rfc4733(&mut rec, t0, call.port_for_caller, CALLER_RTP, "*5", 1000);
        assert!(
            !events.iter().any(|e| matches!(e, Event::Recording { .. })),
            "{id}"
        );
    }
    assert_eq!(rec.stats().recordings_started, 0);
}

#[test]
fn on_demand_user_toggles_with_own_shortcode_and_far_end_cannot() {
    let mut rec = mk_recorder();
    let t0 = Instant::now();
    // 012 (OnDemand, *5) calls 500.
    let call = establish(&mut rec, t0, "012", "500", "d1");
    assert!(
        !call
            .events
            .iter()
            .any(|e| matches!(e, Event::Recording { .. })),
        "OnDemand starts off"
    );

    // The far end keys *5: digits are seen, nothing toggles.
    let t = t0 + Duration::from_secs(2);
    let events = key_rfc4733(&mut rec, t, call.port_for_callee, CALLEE_RTP, "*5", 5000);
    let digits: Vec<(Side, char)> = events
        .iter()
        .filter_map(|e| match e {
            Event::Dtmf { side, digit, .. } => Some((*side, *digit)),
            _ => None,
        })
        .collect();
    assert_eq!(
        digits,
        [(Side::Callee, '*'), (Side::Callee, '5')],
        "each digit once despite 5 packets"
    );
    assert!(!events.iter().any(|e| matches!(e, Event::Recording { .. })));

    // The user keys *5: recording on.
    let t = t0 + Duration::from_secs(4);
    let events = key_rfc4733(&mut rec, t, call.port_for_caller, CALLER_RTP, "*5", 9000);
    let rec_events: Vec<_> = events
        .iter()
        .filter(|e| matches!(e, Event::Recording { .. }))
        .collect();
    match rec_events[..] {
        [
            Event::Recording {
                on: true,
                reason:
                    RecordingReason::Shortcode {
                        extension,
                        on: true,
                    },
                ..
            },
        ] => assert_eq!(extension, "012"),
        _ => panic!("{events:?}"),
    }
    // Audio now produces media frames.
    let (_, events) = rtp_in(
        &mut rec,
        t + Duration::from_secs(1),
        call.port_for_caller,
        CALLER_RTP,
        &rtp(0, 50, 99_000, 0xdead, &[0xff; 160]),
    );
    assert!(matches!(events[..], [Event::Media(_)]));

    // Again: off.
    let t = t0 + Duration::from_secs(8);
    let events = key_rfc4733(&mut rec, t, call.port_for_caller, CALLER_RTP, "*5", 20000);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Recording { on: false, .. })),
        "{events:?}"
    );
    assert_eq!(rec.stats().recording_toggles.get("on"), Some(&1));
    assert_eq!(rec.stats().recording_toggles.get("off"), Some(&1));
}

#[test]
fn a_late_digit_or_a_wrong_code_does_not_toggle() {
    let mut rec = mk_recorder();
    let t0 = Instant::now();
    let call = establish(&mut rec, t0, "012", "500", "d2");
    let mut events = key_rfc4733(
        &mut rec,
        t0 + Duration::from_secs(2),
        call.port_for_caller,
        CALLER_RTP,
        "*",
        1000,
    );
    // `5` 4 s after the star: outside the 3 s window.
    events.extend(key_rfc4733(
        &mut rec,
        t0 + Duration::from_secs(6),
        call.port_for_caller,
        CALLER_RTP,
        "5",
        40000,
    ));
    events.extend(key_rfc4733(
        &mut rec,
        t0 + Duration::from_secs(8),
        call.port_for_caller,
        CALLER_RTP,
        "*4",
        60000,
    ));
    assert!(
        !events.iter().any(|e| matches!(e, Event::Recording { .. })),
        "{events:?}"
    );
}

#[test]
fn sip_info_dtmf_toggles_on_the_users_own_leg_only() {
    let mut rec = mk_recorder();
    let t0 = Instant::now();
    // 500 calls 013 (OnDemand *5): the user is the callee.
    establish(&mut rec, t0, "500", "013", "i1");
    let info = |cseq, from_caller, digit: &str| {
        let body = format!("Signal={digit}\r\nDuration=160\r\n");
        mk_in_dialog(
            "INFO",
            "i1",
            cseq,
            from_caller,
            &body,
            "Content-Type: application/dtmf-relay\r\n",
        )
    };
    let t = t0 + Duration::from_secs(3);
    let mut events = sip_in(&mut rec, t, CALLER, &info(2, true, "*")).events;
    events.extend(sip_in(&mut rec, t, CALLER, &info(3, true, "5")).events);
    assert!(
        !events.iter().any(|e| matches!(e, Event::Recording { .. })),
        "the caller is the far end here"
    );
    let out = sip_in(&mut rec, t, CALLEE, &info(2, false, "*"));
    assert_eq!(out.methods_to(CALLER), ["INFO"], "INFO is still relayed");
    let out = sip_in(&mut rec, t, CALLEE, &info(3, false, "5"));
    assert_eq!(out.recording(), [true]);
    assert_eq!(rec.stats().dtmf_digits.get("sip_info"), Some(&4));
}

#[test]
fn in_band_tones_toggle_when_no_telephone_event_was_negotiated() {
    use earshot_recorder_core::g711::linear_to_ulaw;
    let mut rec = mk_recorder();
    let t0 = Instant::now();
    let plain = |ip: &str, port: u16| {
        format!(
            "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP 0\r\n"
        )
    };
    let out = sip_in(
        &mut rec,
        t0,
        CALLER,
        &mk_invite("012", "500", "ib", &plain("10.0.0.1", 4000)),
    );
    let invite = out.to(CALLEE).clone();
    let out = sip_in(
        &mut rec,
        t0,
        CALLEE,
        &mk_response(&invite, 200, "OK", &plain("10.0.0.2", 6000)),
    );
    let port = sdp_port(out.to(CALLER));
    // `*` (941 + 1209 Hz) for 100 ms, 100 ms silence, `5` (770 + 1336 Hz) for 100 ms.
    let tone = |f1: f32, f2: f32, n: usize| -> Vec<u8> {
        (0..n)
            .map(|i| {
                let t = i as f32 / 8000.0;
                let v = 6000.0
                    * ((2.0 * std::f32::consts::PI * f1 * t).sin()
                        + (2.0 * std::f32::consts::PI * f2 * t).sin());
                linear_to_ulaw(v as i16)
            })
            .collect()
    };
    let mut audio = tone(941.0, 1209.0, 800);
    audio.extend(vec![0xff; 800]);
    audio.extend(tone(770.0, 1336.0, 800));
    audio.extend(vec![0xff; 800]);
    let mut events = Vec::new();
    for (i, chunk) in audio.chunks(160).enumerate() {
        let (relay, ev) = rtp_in(
            &mut rec,
            t0 + Duration::from_millis(20 * i as u64),
            port,
            CALLER_RTP,
            &rtp(0, i as u16, 160 * i as u32, 3, chunk),
        );
        assert!(relay.is_some(), "tones are relayed, not swallowed");
        events.extend(ev);
    }
    let digits: Vec<char> = events
        .iter()
        .filter_map(|e| match e {
            Event::Dtmf { digit, .. } => Some(*digit),
            _ => None,
        })
        .collect();
    assert_eq!(digits, ['*', '5']);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Recording { on: true, .. }))
    );
}

#[test]
fn cancel_before_answer() {
    let mut rec = mk_recorder();
    let t0 = Instant::now();
    let out = sip_in(
        &mut rec,
        t0,
        CALLER,
        &mk_invite("008", "500", "x1", &sdp("10.0.0.1", 4000, "")),
    );
    let invite = out.to(CALLEE).clone();
    sip_in(
        &mut rec,
        t0,
        CALLEE,
        &mk_response(&invite, 180, "Ringing", ""),
    );
    let cancel = mk_invite("008", "500", "x1", "")
        .replacen("INVITE sip", "CANCEL sip", 1)
        .replace("CSeq: 1 INVITE", "CSeq: 1 CANCEL");
    let out = sip_in(&mut rec, t0 + Duration::from_secs(1), CALLER, &cancel);
    assert_eq!(out.codes_to(CALLER), [200], "CANCEL answered hop by hop");
    let fwd = out.to(CALLEE);
    assert_eq!(fwd.method(), Some("CANCEL"));
    assert_eq!(
        fwd.branch(),
        invite.branch(),
        "CANCEL carries the INVITE's branch"
    );
    assert_eq!(fwd.headers_named("Via").len(), 1);
    // 487 from the callee: we ACK it ourselves and pass the 487 on.
    let out = sip_in(
        &mut rec,
        t0 + Duration::from_secs(1),
        CALLEE,
        &mk_response(&invite, 487, "Request Terminated", ""),
    );
    assert_eq!(out.methods_to(CALLEE), ["ACK"]);
    assert_eq!(out.codes_to(CALLER), [487]);
    assert!(matches!(
        out.events[..],
        [Event::CallEnded {
            reason: EndReason::Cancelled,
            answered: false,
            ..
        }]
    ));
    // The caller's ACK for the 487 is absorbed.
    let ack = mk_invite("008", "500", "x1", "")
        .replacen("INVITE sip", "ACK sip", 1)
        .replace("CSeq: 1 INVITE", "CSeq: 1 ACK")
        .replace(
            "To: <sip:500@pbx.example>",
            "To: <sip:500@pbx.example>;tag=callee-tag",
        );
    let out = sip_in(&mut rec, t0 + Duration::from_secs(1), CALLER, &ack);
    assert!(out.sip.is_empty(), "{:?}", out.sip);
    assert_eq!(rec.stats().calls.get("cancelled"), Some(&1));
    assert_eq!(rec.stats().recordings_started, 0);
}

#[test]
fn cancel_race_before_any_provisional_waits_for_one() {
    let mut rec = mk_recorder();
    let t0 = Instant::now();
    let out = sip_in(
        &mut rec,
        t0,
        CALLER,
        &mk_invite("008", "500", "x2", &sdp("10.0.0.1", 4000, "")),
    );
    let invite = out.to(CALLEE).clone();
    let cancel = mk_invite("008", "500", "x2", "")
        .replacen("INVITE sip", "CANCEL sip", 1)
        .replace("CSeq: 1 INVITE", "CSeq: 1 CANCEL");
    let out = sip_in(&mut rec, t0, CALLER, &cancel);
    assert_eq!(out.codes_to(CALLER), [200]);
    assert!(
        out.methods_to(CALLEE).is_empty(),
        "no CANCEL before a provisional (RFC 3261 §9.1)"
    );
    let out = sip_in(
        &mut rec,
        t0,
        CALLEE,
        &mk_response(&invite, 180, "Ringing", ""),
    );
    assert_eq!(out.methods_to(CALLEE), ["CANCEL"]);
    // The callee answered anyway (the 200 crossed the CANCEL): the call is up and recorded.
    let out = sip_in(
        &mut rec,
        t0,
        CALLEE,
        &mk_response(&invite, 200, "OK", &sdp("10.0.0.2", 6000, "")),
    );
    assert_eq!(out.codes_to(CALLER), [200]);
    assert_eq!(out.recording(), [true]);
}

#[test]
fn rejected_call_is_acked_and_ends() {
    let mut rec = mk_recorder();
    let t0 = Instant::now();
    let out = sip_in(
        &mut rec,
        t0,
        CALLER,
        &mk_invite("008", "500", "r1", &sdp("10.0.0.1", 4000, "")),
    );
    let invite = out.to(CALLEE).clone();
    let out = sip_in(
        &mut rec,
        t0,
        CALLEE,
        &mk_response(&invite, 486, "Busy Here", ""),
    );
    assert_eq!(out.methods_to(CALLEE), ["ACK"]);
    assert_eq!(out.codes_to(CALLER), [486]);
    assert!(matches!(
        out.events[..],
        [Event::CallEnded {
            reason: EndReason::Rejected(486),
            ..
        }]
    ));
    // A retransmitted 486 is ACKed again, not forwarded twice.
    let out = sip_in(
        &mut rec,
        t0,
        CALLEE,
        &mk_response(&invite, 486, "Busy Here", ""),
    );
    assert_eq!(out.methods_to(CALLEE), ["ACK"]);
    assert!(out.codes_to(CALLER).is_empty());
    // Until the caller ACKs, our 486 is retransmitted (Timer G).
    rec.handle_timeout(t0 + Duration::from_millis(600));
    assert_eq!(drain(&mut rec).codes_to(CALLER), [486]);
}

#[test]
fn hold_and_resume_by_re_invite_keep_the_relay_and_recording() {
    let mut rec = mk_recorder();
    let t0 = Instant::now();
    let call = establish(&mut rec, t0, "008", "500", "h1");
    let hold = mk_in_dialog(
        "INVITE",
        "h1",
        2,
        true,
        &sdp("10.0.0.1", 4000, "a=sendonly\r\n"),
        "",
    );
    let out = sip_in(&mut rec, t0 + Duration::from_secs(5), CALLER, &hold);
    let fwd = out.to(CALLEE);
    let body = String::from_utf8_lossy(&fwd.body).into_owned();
    assert!(body.contains("a=sendonly\r\n"), "{body}");
    assert_eq!(
        sdp_port(fwd),
        call.port_for_callee,
        "same relay ports across the re-INVITE"
    );
    assert_eq!(out.codes_to(CALLER), [100]);
    let out = sip_in(
        &mut rec,
        t0 + Duration::from_secs(5),
        CALLEE,
        &mk_response(fwd, 200, "OK", &sdp("10.0.0.2", 6000, "a=recvonly\r\n")),
    );
    assert_eq!(sdp_port(out.to(CALLER)), call.port_for_caller);
    assert!(
        out.recording().is_empty(),
        "hold does not stop the recording; the gap is kept as silence"
    );
    // Resume, with the callee moving its media to another port.
    let resume = mk_in_dialog("INVITE", "h1", 3, true, &sdp("10.0.0.1", 4000, ""), "");
    let out = sip_in(&mut rec, t0 + Duration::from_secs(15), CALLER, &resume);
    let fwd = out.to(CALLEE).clone();
    sip_in(
        &mut rec,
        t0 + Duration::from_secs(15),
        CALLEE,
        &mk_response(&fwd, 200, "OK", &sdp("10.0.0.2", 7000, "")),
    );
    let (relay, _) = rtp_in(
        &mut rec,
        t0 + Duration::from_secs(16),
        call.port_for_caller,
        CALLER_RTP,
        &rtp(0, 1, 160, 1, &[0; 160]),
    );
    assert_eq!(
        relay.unwrap().to,
        addr("10.0.0.2:7000"),
        "codec/port change followed"
    );
}

#[test]
fn media_from_elsewhere_is_dropped_and_latching_follows_the_real_port() {
    let mut rec = mk_recorder();
    let t0 = Instant::now();
    let call = establish(&mut rec, t0, "008", "500", "m1");
    // A stranger: dropped, counted, nothing sent anywhere.
    let (relay, _) = rtp_in(
        &mut rec,
        t0,
        call.port_for_caller,
        "192.0.2.66:4000",
        &rtp(0, 1, 160, 1, &[0; 160]),
    );
    assert_eq!(relay, None);
    assert_eq!(rec.stats().rtp_dropped.get("wrong_source"), Some(&1));
    // The caller's NAT changed its port: latched onto the real one...
    let (relay, _) = rtp_in(
        &mut rec,
        t0,
        call.port_for_caller,
        "10.0.0.1:4100",
        &rtp(0, 2, 320, 1, &[0; 160]),
    );
    assert!(relay.is_some());
    // ...and media for the caller now goes there.
    let (relay, _) = rtp_in(
        &mut rec,
        t0,
        call.port_for_callee,
        CALLEE_RTP,
        &rtp(0, 1, 160, 2, &[0; 160]),
    );
    assert!(relay.is_some());
    let (relay, _) = rtp_in(
        &mut rec,
        t0,
        call.port_for_callee,
        CALLEE_RTP,
        &rtp(0, 2, 320, 2, &[0; 160]),
    );
    assert_eq!(relay.unwrap().to, addr("10.0.0.1:4100"));
    // Once latched, the old port is a stranger too.
    let (relay, _) = rtp_in(
        &mut rec,
        t0,
        call.port_for_caller,
        CALLER_RTP,
        &rtp(0, 3, 480, 1, &[0; 160]),
    );
    assert_eq!(relay, None);
    // Garbage on a live port and anything on an unallocated port are dropped.
    let (relay, _) = rtp_in(
        &mut rec,
        t0,
        call.port_for_caller,
        "10.0.0.1:4100",
        &[1, 2, 3],
    );
    assert_eq!(relay, None);
    assert_eq!(rec.stats().rtp_dropped.get("malformed"), Some(&1));
    assert_eq!(
        rec.handle_rtp(t0, 30098, addr(CALLER_RTP), &mut [0x80, 0, 0, 0]),
        None
    );
    assert_eq!(rec.stats().rtp_dropped.get("unknown_port"), Some(&1));
}

#[test]
fn requests_are_refused_with_the_right_status() {
    let mut rec = mk_recorder();
    let t0 = Instant::now();
    // Unknown source.
    let out = sip_in(
        &mut rec,
        t0,
        "192.0.2.1:5060",
        &mk_invite("008", "500", "f1", &sdp("192.0.2.1", 4000, "")),
    );
    assert_eq!(out.codes_to("192.0.2.1:5060"), [403]);
    // Max-Forwards exhausted.
    let out = sip_in(
        &mut rec,
        t0,
        CALLER,
        &mk_invite("008", "500", "f2", "").replace("Max-Forwards: 70", "Max-Forwards: 0"),
    );
    assert_eq!(out.codes_to(CALLER), [483]);
    // A request that already went through us: a loop.
    let looped = mk_invite("008", "500", "f3", "").replace(
        "Max-Forwards: 70\r\n",
        "Max-Forwards: 70\r\nVia: SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bK-es0000000000000001\r\n",
    );
    let out = sip_in(&mut rec, t0, CALLER, &looped);
    assert_eq!(out.codes_to(CALLER), [482]);
    // SDP that lies (a port that is not a number).
    let out = sip_in(
        &mut rec,
        t0,
        CALLER,
        &mk_invite(
            "008",
            "500",
            "f4",
            "v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio many RTP/AVP 0\r\n",
        ),
    );
    assert_eq!(
        out.codes_to(CALLER),
        [488],
        "refused before anything is forwarded"
    );
    assert!(out.methods_to(CALLEE).is_empty());
    // A bad Content-Length still gets an answer.
    let bad_len =
        mk_invite("008", "500", "f5", "").replace("Content-Length: 0", "Content-Length: 5000");
    let out = sip_in(&mut rec, t0, CALLER, &bad_len);
    assert_eq!(out.codes_to(CALLER), [400]);
    // Garbage: counted, nothing sent.
    let out = sip_in(&mut rec, t0, CALLER, "\x00\x01garbage\r\n\r\n");
    assert!(out.sip.is_empty());
    assert_eq!(rec.stats().sip_parse_errors, 2);
    // Draining: new INVITEs get 503 with Retry-After.
    rec.drain();
    let out = sip_in(&mut rec, t0, CALLER, &mk_invite("008", "500", "f6", ""));
    assert_eq!(out.codes_to(CALLER), [503]);
    assert_eq!(out.to(CALLER).header("Retry-After").as_deref(), Some("5"));
}

#[test]
fn options_is_answered_locally_and_other_methods_pass_through() {
    let mut rec = mk_recorder();
    let t0 = Instant::now();
    let options = "OPTIONS sip:10.0.0.9:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-o1\r\nFrom: <sip:monitor@pbx>;tag=m\r\nTo: <sip:10.0.0.9:5060>\r\nCall-ID: o1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
    let out = sip_in(&mut rec, t0, CALLER, options);
    assert_eq!(out.codes_to(CALLER), [200]);
    assert!(out.methods_to(CALLEE).is_empty());
    assert!(out.to(CALLER).header("Allow").unwrap().contains("INVITE"));
    // MESSAGE and an unknown method are proxied as they are, and so are their responses.
    for method in ["MESSAGE", "FOOBAR"] {
        let req = format!(
            "{method} sip:500@10.0.0.2 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-{method}\r\nMax-Forwards: 70\r\nFrom: <sip:008@pbx>;tag=m\r\nTo: <sip:500@pbx>\r\nCall-ID: {method}\r\nCSeq: 1 {method}\r\nX-Unknown: yes\r\nContent-Length: 5\r\n\r\nhello"
        );
        let out = sip_in(&mut rec, t0, CALLER, &req);
        let fwd = out.to(CALLEE);
        assert_eq!(fwd.method(), Some(method));
        assert_eq!(fwd.body, b"hello");
        assert_eq!(fwd.header("X-Unknown").as_deref(), Some("yes"));
        let out = sip_in(&mut rec, t0, CALLEE, &mk_in_dialog_response(fwd, 202));
        assert_eq!(out.codes_to(CALLER), [202]);
        assert_eq!(
            out.to(CALLER).headers_named("Via").len(),
            1,
            "our Via removed"
        );
    }
}

#[test]
fn retransmissions_and_timer_b() {
    let mut rec = mk_recorder();
    let t0 = Instant::now();
    let invite = mk_invite("008", "500", "t1", &sdp("10.0.0.1", 4000, ""));
    let out = sip_in(&mut rec, t0, CALLER, &invite);
    assert_eq!(out.methods_to(CALLEE), ["INVITE"]);
    // The caller retransmits: it gets our 100 again, the callee nothing new.
    let out = sip_in(&mut rec, t0 + Duration::from_millis(500), CALLER, &invite);
    assert_eq!(out.codes_to(CALLER), [100]);
    assert!(out.methods_to(CALLEE).is_empty());
    // The callee never answers: Timer A retransmits at 0.5, 1.5, 3.5 ... s.
    let mut sent = 0;
    let mut t = t0;
    let mut finals = Vec::new();
    while t < t0 + Duration::from_secs(40) {
        t += Duration::from_millis(100);
        rec.handle_timeout(t);
        let out = drain(&mut rec);
        sent += out.methods_to(CALLEE).len();
        finals.extend(out.codes_to(CALLER));
        if !out.events.is_empty() {
            assert!(matches!(
                out.events[..],
                [Event::CallEnded {
                    reason: EndReason::Timeout,
                    ..
                }]
            ));
        }
    }
    assert_eq!(sent, 6, "INVITE retransmitted 6 times before Timer B");
    assert_eq!(finals, [408], "Timer B: 408 to the caller after 32 s");
    assert_eq!(rec.stats().calls.get("timeout"), Some(&1));
}

#[test]
fn no_state_lives_forever() {
    let mut rec = mk_recorder();
    let t0 = Instant::now();
    for i in 0..20 {
        let id = format!("flood{i}");
        // INVITEs that are answered and then abandoned without a BYE.
        establish(&mut rec, t0, "008", "500", &id);
    }
    assert_eq!(rec.active_calls(), 20);
    let mut t = t0;
    while t < t0 + Duration::from_secs(3 * 3600) {
        t += Duration::from_secs(60);
        rec.handle_timeout(t);
        drain(&mut rec);
    }
    assert_eq!(rec.active_calls(), 0, "idle calls are ended");
    assert_eq!(
        rec.next_timeout(),
        None,
        "and every transaction and call forgotten"
    );
    // Their ports went back to the pool: 50 pairs, 20 calls × 2 taken and given back.
    for i in 0..25 {
        establish(&mut rec, t, "008", "500", &format!("again{i}"));
    }
}

#[test]
fn tcp_to_udp_double_record_routes() {
    use earshot_recorder_core::{Target, Transport};
    let mut rec = mk_recorder();
    let t0 = Instant::now();
    let tcp_caller = Target {
        transport: Transport::Tcp,
        addr: addr(CALLER),
    };
    rec.handle_sip(
        t0,
        tcp_caller,
        mk_invite("008", "500", "tcp1", &sdp("10.0.0.1", 4000, ""))
            .replace("SIP/2.0/UDP 10.0.0.1", "SIP/2.0/TCP 10.0.0.1")
            .as_bytes(),
    );
    let out = drain(&mut rec);
    let (target, fwd) = out
        .sip
        .iter()
        .find(|(t, _)| t.addr == addr(CALLEE))
        .unwrap();
    assert_eq!(target.transport, Transport::Udp);
    assert_eq!(
        fwd.headers_named("Record-Route"),
        [
            "<sip:10.0.0.9:5060;lr>",
            "<sip:10.0.0.9:5060;transport=tcp;lr>"
        ]
    );
    let (target, _) = out
        .sip
        .iter()
        .find(|(t, _)| t.addr == addr(CALLER))
        .unwrap();
    assert_eq!(
        target.transport,
        Transport::Tcp,
        "the 100 goes back on the caller's TCP connection"
    );
}

#[test]
fn out_of_rtp_ports_is_503_with_retry_after_and_frees_nothing_it_did_not_take() {
    let ports: Vec<u16> = vec![30000, 30002, 30004, 30006];
    let mut rec = earshot_recorder_core::Recorder::new(mk_config(), &ports);
    let t0 = Instant::now();
    establish(&mut rec, t0, "008", "500", "p1");
    establish(&mut rec, t0, "008", "500", "p2");
    let out = sip_in(
        &mut rec,
        t0,
        CALLER,
        &mk_invite("008", "500", "p3", &sdp("10.0.0.1", 4000, "")),
    );
    assert_eq!(out.codes_to(CALLER), [503]);
    assert_eq!(out.to(CALLER).header("Retry-After").as_deref(), Some("5"));
    assert!(out.methods_to(CALLEE).is_empty());
    assert_eq!(rec.stats().sip_refused.get(&503), Some(&1));
    // The two calls in progress keep relaying.
    assert_eq!(rec.active_calls(), 2);
}

/// DTMF events as (digit, part of a shortcode).
fn dtmf_of(events: &[Event]) -> Vec<(char, bool)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Dtmf {
                digit, shortcode, ..
            } => Some((*digit, *shortcode)),
            _ => None,
        })
        .collect()
}

#[test]
fn digits_are_reported_only_on_recordable_calls_and_say_which_are_shortcode_keys() {
    let info = |call: &str, cseq, digit: char| {
        let body = format!("Signal={digit}\r\nDuration=160\r\n");
        mk_in_dialog(
            "INFO",
            call,
            cseq,
            true,
            &body,
            "Content-Type: application/dtmf-relay\r\n",
        )
    };
    let keys = ['1', '2', '*', '5', '#', '*', '9', '4'];
    let mut rec = mk_recorder();
    let t0 = Instant::now();
    let t = t0 + Duration::from_secs(3);
    // 012 (OnDemand *5) types a PIN around its shortcode: only `*` and the
    // 5 that completes *5 are shortcode keys; *9 is no one's shortcode.
    establish(&mut rec, t0, "012", "500", "pin");
    let mut events = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        events.extend(sip_in(&mut rec, t, CALLER, &info("pin", 2 + i as u32, *k)).events);
    }
    assert_eq!(
        dtmf_of(&events),
        [
            ('1', false),
            ('2', false),
            ('*', true),
            ('5', true),
            ('#', false),
            ('*', true),
            ('9', false),
            ('4', false)
        ]
    );
    // A Never user's call and an unknown caller's: no digit event at all,
    // though the digits are relayed and counted.
    for (from, id) in [("003", "never"), ("777", "stranger")] {
        establish(&mut rec, t0, from, "500", id);
        let mut events = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            let out = sip_in(&mut rec, t, CALLER, &info(id, 2 + i as u32, *k));
            assert_eq!(out.methods_to(CALLEE), ["INFO"], "relayed");
            events.extend(out.events);
        }
        assert_eq!(dtmf_of(&events), [], "{from}");
    }
    assert_eq!(rec.stats().dtmf_digits.get("sip_info"), Some(&24));
}
