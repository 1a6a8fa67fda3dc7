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

    #[test]
    fn mutated_sip_through_the_core_never_panics(which in 0usize..3, cut in 0usize..200, pos in any::<usize>(), bytes in proptest::collection::vec(any::<u8>(), 0..16)) {
        let mut rec = mk_recorder();
        let t0 = Instant::now();
        let data = mutate(&valid_messages()[which], cut, pos, &bytes);
        rec.handle_sip(t0, udp(CALLER), &data);
        rec.handle_timeout(t0 + Duration::from_secs(40));
        loop {
            match rec.poll_output() {
                Output::Sip { target, .. } => prop_assert!(target.addr.ip().to_string().starts_with("10.0.0."), "sent to {target:?}"),
                Output::Event(_) => {}
                Output::Rtp { relay, .. } => prop_assert!(relay.to.ip().to_string().starts_with("10.0.0."), "sent to {relay:?}"),
                Output::Timeout(_) => break,
            }
        }
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
