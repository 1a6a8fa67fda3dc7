//! The three single messages that silenced a release build, each replayed
//! against the core (and the framing the TCP listener runs): none may
//! panic, stall or leak, and the recorder goes on serving the next call.

mod sim;

use std::time::{Duration, Instant};

use earshot_recorder_core::sip::message::{MAX_MESSAGE, ParseError, frame_stream};
use sim::*;

#[test]
fn a_content_length_near_2_to_the_64_is_refused_by_the_framing() {
    // head_end + 4 + length used to wrap to 0: the TCP loop then took zero
    // bytes off the buffer forever.
    let head = "OPTIONS sip:x@10.0.0.9 SIP/2.0\r\nVia: SIP/2.0/TCP 10.0.0.1;branch=z9hG4bK1\r\n";
    for length in [
        u64::MAX,
        u64::MAX - 100,
        (usize::MAX - 90) as u64,
        MAX_MESSAGE as u64,
    ] {
        let msg = format!("{head}Content-Length: {length}\r\n\r\n");
        assert_eq!(
            frame_stream(msg.as_bytes()),
            Err(ParseError::TooLarge),
            "Content-Length {length}"
        );
    }
    // The framing always moves forward: a whole message is never 0 bytes.
    let ok = format!("{head}Content-Length: 0\r\n\r\n");
    assert_eq!(frame_stream(ok.as_bytes()), Ok(Some(ok.len())));
}

/// An SDP whose m= line separates its fields with tabs (and a c= line with
/// several spaces), which the parser accepts.
fn tabbed_sdp(ip: &str, port: u16) -> String {
    format!(
        "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN  IP4   {ip}\r\nt=0 0\r\nm=audio\t{port}\tRTP/AVP\t0\r\na=rtpmap:0 PCMU/8000\r\n"
    )
}

#[test]
fn an_m_line_with_tabs_is_relayed_not_a_panic() {
    let mut rec = mk_recorder();
    let t0 = Instant::now();
    let out = sip_in(
        &mut rec,
        t0,
        CALLER,
        &mk_invite("008", "500", "tabs", &tabbed_sdp("10.0.0.1", 4000)),
    );
    let invite = out.to(CALLEE).clone();
    let offered = sdp_port(&invite);
    assert!(
        (30000..30100).contains(&offered),
        "the relay's port: {offered}"
    );
    // The answer with tabs too.
    let out = sip_in(
        &mut rec,
        t0,
        CALLEE,
        &mk_response(&invite, 200, "OK", &tabbed_sdp("10.0.0.2", 6000)),
    );
    let answer = out.to(CALLER);
    assert!((30000..30100).contains(&sdp_port(answer)));
    // Still serving: another call goes through.
    establish(
        &mut rec,
        t0 + Duration::from_secs(1),
        "008",
        "500",
        "after-tabs",
    );
}

#[test]
fn a_refused_stream_before_the_audio_then_cancel_frees_every_port() {
    let mut rec = mk_recorder();
    let t0 = Instant::now();
    let body = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=video 0 RTP/AVP 96\r\nm=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
    let out = sip_in(
        &mut rec,
        t0,
        CALLER,
        &mk_invite("008", "500", "port0", body),
    );
    let invite = out.to(CALLEE).clone();
    assert!(
        String::from_utf8_lossy(&invite.body).contains("m=video 0 "),
        "the refused stream stays refused"
    );
    sip_in(
        &mut rec,
        t0,
        CALLEE,
        &mk_response(&invite, 180, "Ringing", ""),
    );
    let cancel = mk_invite("008", "500", "port0", "")
        .replacen("INVITE sip", "CANCEL sip", 1)
        .replace("CSeq: 1 INVITE", "CSeq: 1 CANCEL");
    sip_in(&mut rec, t0, CALLER, &cancel);
    sip_in(
        &mut rec,
        t0,
        CALLEE,
        &mk_response(&invite, 487, "Request Terminated", ""),
    );
    // The call is forgotten with its ports (the sweep), and timers go on.
    for s in 1..=40 {
        rec.handle_timeout(t0 + Duration::from_secs(s));
        drain(&mut rec);
    }
    assert_eq!(rec.active_calls(), 0);
    // Every pair is free again: 25 calls of two pairs each fit in the 50.
    for n in 0..25 {
        establish(
            &mut rec,
            t0 + Duration::from_secs(41),
            "008",
            "500",
            &format!("after-{n}"),
        );
    }
}
