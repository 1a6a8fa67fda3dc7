//! Property tests: whatever bytes arrive — random, or a valid message cut,
//! spliced or corrupted — the SIP, SDP, RTP and RFC 4733 paths answer or
//! drop, and never panic or send to an address that was not negotiated.

mod sim;

use std::time::{Duration, Instant};

use earshot_recorder_core::sdp::Sdp;
use earshot_recorder_core::sip::Message;
use earshot_recorder_core::{AnnouncementConfig, AnnouncementMode, Output, Recorder, dtmf};
use proptest::prelude::*;
use sim::*;

fn valid_messages() -> Vec<String> {
    vec![
        mk_invite("008", "012", "p1", &sdp("10.0.0.1", 4000, "a=sendonly\r\n")),
        mk_in_dialog("BYE", "p1", 2, true, "", ""),
        mk_in_dialog(
            "INFO",
            "p1",
            3,
            false,
            "Signal=5\r\n",
            "Content-Type: application/dtmf-relay\r\n",
        ),
    ]
}

/// Messages an attacker would shape: the call's own requests and responses
/// with addresses of other networks in them.
fn hostile_messages(call: &Call) -> Vec<String> {
    let mut v = valid_messages();
    v.push(
        mk_response(
            &call.invite_to_callee,
            200,
            "OK",
            &sdp("198.51.100.4", 7000, ""),
        )
        .replacen(
            "Via: ",
            "Via: SIP/2.0/UDP 198.51.100.1:5060;branch=z9hG4bKx\r\nVia: ",
            1,
        ),
    );
    v.push(
        mk_in_dialog(
            "UPDATE",
            &call.id,
            4,
            false,
            &sdp("172.16.9.9", 7100, ""),
            "",
        )
        .replace(
            "Route: <sip:10.0.0.9:5060;lr>",
            "Route: <sip:10.0.0.9:5060;lr>\r\nRoute: <sip:192.0.2.99:5060;lr>",
        ),
    );
    v
}

fn mutate(base: &str, cut: usize, pos: usize, bytes: &[u8]) -> Vec<u8> {
    let mut data = base.as_bytes().to_vec();
    let pos = pos % (data.len() + 1);
    data.splice(pos..pos, bytes.iter().copied());
    data.truncate(data.len().saturating_sub(cut % 40));
    data
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn sip_parser_never_panics(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = Message::parse(&data);
        let _ = earshot_recorder_core::sip::message::frame_stream(&data);
    }

    /// Mutated messages from any of four sources (the two peers' hosts, a
    /// host elsewhere in the peer's network, a stranger), with addresses of
    /// other networks in their Via, Contact and Route: whatever the core
    /// sends goes to exactly the caller, the callee or back to the sender.
    #[test]
    fn mutated_sip_from_anywhere_goes_nowhere_it_should_not(
        which in 0usize..5,
        cut in 0usize..200,
        pos in any::<usize>(),
        bytes in proptest::collection::vec(any::<u8>(), 0..16),
        from in 0usize..4,
    ) {
        let mut rec = mk_recorder();
        let t0 = Instant::now();
        // A call first, so responses and in-dialog requests have one to hit.
        let call = establish(&mut rec, t0, "008", "500", "p1");
        let sources = [CALLER, CALLEE, "10.0.0.77:5060", "203.0.113.50:5060"];
        let source = sources[from];
        let data = mutate(&hostile_messages(&call)[which], cut, pos, &bytes);
        rec.handle_sip(t0, udp(source), &data);
        rec.handle_timeout(t0 + Duration::from_secs(40));
        loop {
            match rec.poll_output() {
                Output::Sip { target, .. } => prop_assert!(
                    [addr(CALLER), addr(CALLEE), addr(source)].contains(&target.addr),
                    "sent to {target:?}"
                ),
                Output::Event(_) | Output::Divert { .. } => {}
                Output::Rtp { relay, .. } => prop_assert!(
                    [addr(CALLER_RTP).ip(), addr(CALLEE_RTP).ip()].contains(&relay.to.ip()),
                    "RTP to {relay:?}"
                ),
                Output::Kernel { .. } => prop_assert!(false, "the kernel path is off"),
                Output::Timeout(_) => break,
            }
        }
    }

    /// SDP as peers really write it: tabs and runs of spaces, refused
    /// (port 0) streams before and after the audio, several streams; the
    /// parser and the rewrite agree, and the whole engine takes it.
    #[test]
    fn sdp_of_any_spacing_and_refused_streams_goes_through_the_engine(
        sep in proptest::collection::vec("[ \t]{1,3}", 8),
        streams in proptest::collection::vec((0usize..3, prop_oneof![Just(0u16), 1024u16..65535]), 1..5),
    ) {
        let media = ["audio", "video", "audio"];
        let mut body = format!("v=0\r\no=-{s}1{s}1{s}IN{s}IP4{s}10.0.0.1\r\ns=-\r\nc=IN{t}IP4{t}10.0.0.1\r\nt=0 0\r\n", s = sep[0], t = sep[1]);
        for (i, (kind, port)) in streams.iter().enumerate() {
            let s = &sep[2 + i % 6];
            body.push_str(&format!("m={}{s}{port}{s}RTP/AVP{s}0{s}101\r\na=rtpmap:101 telephone-event/8000\r\n", media[*kind]));
        }
        let sdp = Sdp::parse(body.as_bytes()).expect("peers' SDP parses");
        let ports: Vec<u16> = (0..sdp.streams.len() as u16).map(|i| 30000 + 2 * i).collect();
        let again = Sdp::parse(&sdp.rewrite("10.0.0.9".parse().unwrap(), &ports)).expect("the rewrite parses");
        prop_assert_eq!(again.streams.len(), sdp.streams.len());
        for (a, b) in sdp.streams.iter().zip(&again.streams) {
            prop_assert_eq!(a.port == 0, b.port == 0, "a refused stream stays refused");
        }
        let mut rec = mk_recorder();
        let t0 = Instant::now();
        let out = sip_in(&mut rec, t0, CALLER, &mk_invite("008", "500", "sdp-prop", &body));
        if let Some((_, invite)) = out.sip.iter().find(|(t, _)| t.addr == addr(CALLEE)) {
            let cancel = mk_invite("008", "500", "sdp-prop", "")
                .replacen("INVITE sip", "CANCEL sip", 1)
                .replace("CSeq: 1 INVITE", "CSeq: 1 CANCEL");
            sip_in(&mut rec, t0, CALLEE, &mk_response(invite, 180, "Ringing", ""));
            sip_in(&mut rec, t0, CALLER, &cancel);
            sip_in(&mut rec, t0, CALLEE, &mk_response(invite, 487, "Request Terminated", ""));
        }
        for s in 1..=12 {
            rec.handle_timeout(t0 + Duration::from_secs(5 * s));
            drain(&mut rec);
        }
        prop_assert_eq!(rec.active_calls(), 0);
    }

    #[test]
    fn sdp_parser_never_panics(text in "(v=0\r\n)?((c=IN IP[46] [0-9.:a-f]{1,20}|m=audio [0-9]{1,6}( RTP/AVP( [0-9]{1,3}){0,4})?|a=(rtpmap:[0-9]{1,3} [A-Za-z-]{1,16}/[0-9]{1,6}|sendonly|inactive|rtcp-mux|rtcp:[0-9]{1,6})|o=- 1 1 IN IP4 1.2.3.4)\r\n){0,12}") {
        if let Ok(sdp) = Sdp::parse(text.as_bytes()) {
            let ports = vec![30000u16; sdp.streams.len()];
            let _ = sdp.rewrite("10.0.0.9".parse().unwrap(), &ports);
        }
    }

    #[test]
    fn rtp_and_events_never_panic(mut data in proptest::collection::vec(any::<u8>(), 0..300), port_offset in 0u16..100) {
        let mut rec = mk_recorder();
        let t0 = Instant::now();
        let call = establish(&mut rec, t0, "012", "500", "rtp-prop");
        let port = 30000 + port_offset;
        if let Some(relay) = rec.handle_rtp(t0, port, addr(CALLER_RTP), &mut data) {
            // Only ever towards what was negotiated (or latched from it).
            prop_assert!(relay.to.ip() == addr(CALLEE_RTP).ip() || relay.to.ip() == addr(CALLER_RTP).ip());
        }
        let _ = rec.handle_rtp(t0, call.port_for_caller, addr(CALLER_RTP), &mut data);
        let _ = dtmf::parse_telephone_event(&data);
        let _ = dtmf::parse_info("application/dtmf-relay", &data);
    }

    #[test]
    fn rtp_and_rtcp_through_an_announcement_never_panic(
        packets in proptest::collection::vec((proptest::collection::vec(any::<u8>(), 0..200), 0u16..4, 0u64..60), 0..40),
    ) {
        let mut cfg = mk_config();
        cfg.announcement = AnnouncementConfig {
            mode: AnnouncementMode::Beep,
            periodic: Some(Duration::from_secs(5)),
            ..Default::default()
        };
        let ports: Vec<u16> = (30000..30100).step_by(2).collect();
        let mut rec = Recorder::new(cfg, &ports);
        let t0 = Instant::now();
        let call = establish(&mut rec, t0, "008", "500", "ann-prop");
        let mut valid = rtp(0, 1, 160, 9, &[0xff; 160]);
        let _ = rec.handle_rtp(t0, call.port_for_caller, addr(CALLER_RTP), &mut valid);
        for (mut data, which, ms) in packets {
            let now = t0 + Duration::from_millis(ms * 100);
            let (port, from) = match which {
                0 => (call.port_for_caller, CALLER_RTP),
                1 => (call.port_for_caller + 1, "10.0.0.1:4001"),
                2 => (call.port_for_callee, CALLEE_RTP),
                _ => (call.port_for_callee + 1, "10.0.0.2:6001"),
            };
            let _ = rec.handle_rtp(now, port, addr(from), &mut data);
            rec.handle_timeout(now);
            loop {
                match rec.poll_output() {
                    Output::Timeout(_) => break,
                    Output::Rtp { relay, .. } => prop_assert!(
                        relay.to.ip() == addr(CALLEE_RTP).ip() || relay.to.ip() == addr(CALLER_RTP).ip()
                    ),
                    _ => {}
                }
            }
        }
    }
}
