//! Codecs other than G.711, through a real recorder with SIPp on both
//! sides: RTP made by ffmpeg's own encoders (G.722, A-law, libopus), the MP3s decoded
//! back by ffmpeg and measured. A wideband call is a 16 kHz file that keeps
//! what only wideband carries (a 6 kHz tone); each side is decoded by its
//! own codec; a codec the recorder cannot decode makes an incomplete
//! recording that says so, never a silent "complete" one.

mod common;

use std::time::Duration;

use common::*;
use earshot_tests::pcap::{RtpStream, ffmpeg_encode, ffmpeg_opus};
use earshot_tests::{decode_mp3_at, tone_power_at};

const TALK_MS: u64 = 3000;

/// One party of a test call: what it sends and the SDP values (`PT`,
/// `CODEC`, `CLOCK`, `EVENT_CLOCK`) its scenario offers or answers with.
struct Party {
    stream: RtpStream,
    sdp: Vec<(&'static str, String)>,
}

fn sdp(pt: u8, codec: &str) -> Vec<(&'static str, String)> {
    vec![("PT", pt.to_string()), ("CODEC", codec.to_owned())]
}

/// One call from `from` to 500 through the recorder; waits for both SIPps
/// and the recording: (MP3, sidecar).
fn one_call(
    s: &Setup,
    from: &str,
    caller: Party,
    callee: Party,
    talk_ms: u64,
) -> (std::path::PathBuf, serde_json::Value) {
    let mut uas = s.uas_with(
        "uas.xml",
        &s.pcap("callee.pcap", &callee.stream),
        1,
        callee.sdp,
    );
    let mut vars = vec![
        ("PCAP", s.pcap("caller.pcap", &caller.stream)),
        ("TALK_MS", talk_ms.to_string()),
    ];
    vars.extend(caller.sdp);
    let mut uac = s.uac("uac.xml", from, "500", vars, &["-m", "1"]);
    uac.wait_success(Duration::from_secs(60));
    uas.wait_success(Duration::from_secs(10));
    s.recorder
        .wait_recordings(1, Duration::from_secs(15))
        .remove(0)
}

/// The caller says 440 Hz and 6 kHz at once (G.722 carries both, G.711
/// only the first).
fn caller_g722() -> RtpStream {
    let bytes = ffmpeg_encode(
        "0.3*sin(2*PI*440*t)+0.3*sin(2*PI*6000*t)",
        16000,
        TALK_MS as f64 / 1000.0 + 0.5,
        "g722",
        "g722",
    );
    RtpStream::new(1).encoded(9, &bytes, 160)
}

fn callee(codec: &str) -> (Party, &'static str) {
    let seconds = TALK_MS as f64 / 1000.0 + 0.5;
    let tone = "0.4*sin(2*PI*1000*t)";
    let (pt, bytes, name) = match codec {
        "G722" => (
            9,
            ffmpeg_encode(tone, 16000, seconds, "g722", "g722"),
            "G722",
        ),
        _ => (
            8,
            ffmpeg_encode(tone, 8000, seconds, "pcm_alaw", "alaw"),
            "PCMA",
        ),
    };
    let party = Party {
        stream: RtpStream::new(2).encoded(pt, &bytes, 160),
        sdp: sdp(pt, name),
    };
    (party, name)
}

/// One Always call (008 → 500): the caller in G.722, the callee in `codec`.
fn wideband_call(name: &str, codec: &str) -> (serde_json::Value, Vec<i16>, Vec<i16>) {
    let s = setup(name, &users());
    let (callee, callee_codec) = callee(codec);
    let caller = Party {
        stream: caller_g722(),
        sdp: sdp(9, "G722"),
    };
    let (mp3, sidecar) = one_call(&s, "008", caller, callee, TALK_MS);
    assert_eq!(sidecar["audio"]["sampleRate"], 16000, "{sidecar}");
    assert_eq!(
        sidecar["audio"]["codecs"],
        serde_json::json!({"caller": "G722", "callee": callee_codec}),
        "{sidecar}"
    );
    assert_eq!(sidecar["complete"], true, "{sidecar}");
    assert_eq!(s.metric("earshot_recording_undecodable_packets_total"), 0.0);
    let (left, right) = decode_mp3_at(&mp3, 16000);
    let file = left.len() as f64 / 16000.0;
    let call = sidecar["durationSeconds"].as_f64().unwrap();
    assert!(
        (file - call).abs() < 0.1,
        "file {file:.3} s, answered call {call:.3} s"
    );
    (sidecar, left, right)
}

fn middle(v: &[i16]) -> &[i16] {
    &v[8000..v.len() - 8000]
}

#[test]
fn a_g722_call_is_a_16_khz_recording_with_the_wide_band_kept() {
    let (_, left, right) = wideband_call("g722", "G722");
    let (l, r) = (middle(&left), middle(&right));
    let p = |x: &[i16], f| tone_power_at(x, f, 16000.0);
    // The caller's two tones on the left, 6 kHz included; the callee's on
    // the right; no crosstalk; not silence.
    assert!(p(l, 440.0) > 1e5, "left 440 Hz: {}", p(l, 440.0));
    assert!(
        p(l, 6000.0) > 0.1 * p(l, 440.0),
        "6 kHz kept: {} vs {}",
        p(l, 6000.0),
        p(l, 440.0)
    );
    assert!(p(l, 440.0) > 50.0 * p(l, 1000.0));
    assert!(p(r, 1000.0) > 1e5, "right 1 kHz: {}", p(r, 1000.0));
    assert!(p(r, 1000.0) > 50.0 * p(r, 440.0));
    assert!(p(r, 1000.0) > 50.0 * p(r, 6000.0));
}

#[test]
fn a_g722_caller_and_an_a_law_callee_are_each_decoded_by_their_codec() {
    let (_, left, right) = wideband_call("g722-pcma", "PCMA");
    let (l, r) = (middle(&left), middle(&right));
    let p = |x: &[i16], f| tone_power_at(x, f, 16000.0);
    assert!(p(l, 440.0) > 1e5 && p(l, 6000.0) > 0.1 * p(l, 440.0));
    assert!(p(r, 1000.0) > 1e5, "A-law upsampled into the 16 kHz file");
    assert!(p(r, 1000.0) > 50.0 * p(r, 440.0));
    // A-law has nothing above 4 kHz: its upsampling adds no image at 7 kHz.
    assert!(
        p(r, 1000.0) > 1000.0 * p(r, 7000.0),
        "image at 7 kHz: {}",
        p(r, 7000.0)
    );
}

#[test]
fn audio_in_a_codec_the_recorder_cannot_decode_is_an_incomplete_recording() {
    let s = setup("g729", &users());
    // G.729 frames are 10 bytes per 10 ms; the bytes themselves do not
    // matter to a recorder that cannot decode them.
    let frames: Vec<u8> = (0..20 * 175).map(|i| (i * 7 % 251) as u8).collect();
    let caller = RtpStream::new(1).encoded(18, &frames, 20);
    let callee = RtpStream::new(2).encoded(18, &frames, 20);
    let party = |stream| Party {
        stream,
        sdp: sdp(18, "G729"),
    };
    let (_, sidecar) = one_call(&s, "008", party(caller), party(callee), TALK_MS);
    let sidecar = &sidecar;
    assert_eq!(sidecar["complete"], false, "{sidecar}");
    let why = sidecar["truncated"].as_str().unwrap();
    assert!(
        why.contains("codec G729") && why.contains("could not be decoded"),
        "{why}"
    );
    assert_eq!(
        s.metric("earshot_recordings_total{result=\"undecodable\"}"),
        1.0
    );
    assert!(s.metric("earshot_recording_undecodable_packets_total") > 200.0);
    // The call itself went through untouched.
    assert_eq!(s.metric("earshot_calls_total{result=\"answered\"}"), 1.0);
}

#[test]
fn an_on_demand_user_in_g722_turns_recording_on_with_the_shortcode() {
    let s = setup("g722-ondemand", &users());
    let talk = |seconds: f64| {
        ffmpeg_encode(
            "0.3*sin(2*PI*440*t)+0.3*sin(2*PI*6000*t)",
            16000,
            seconds,
            "g722",
            "g722",
        )
    };
    // 1 s of talk, *5 as RFC 4733 events on the G.722 stream's 8000 Hz
    // clock, then 2.5 s recorded.
    let caller = RtpStream::new(1)
        .encoded(9, &talk(1.0), 160)
        .key('*', 100)
        .gap(100)
        .key('5', 100)
        .encoded(9, &talk(2.5), 160);
    let (callee, _) = callee("G722");
    let caller = Party {
        stream: caller,
        sdp: sdp(9, "G722"),
    };
    let (mp3, sidecar) = &one_call(&s, "012", caller, callee, 3900);
    assert_eq!(
        sidecar["recorded"][0]["from"].as_f64().map(|f| f > 1.0),
        Some(true),
        "{sidecar}"
    );
    assert_eq!(sidecar["audio"]["sampleRate"], 16000);
    let (left, _) = decode_mp3_at(mp3, 16000);
    let file = left.len() as f64 / 16000.0;
    let recorded = sidecar["durationSeconds"].as_f64().unwrap()
        - sidecar["recorded"][0]["from"].as_f64().unwrap();
    assert!(
        (file - recorded).abs() < 0.2,
        "file {file:.3} s, recorded {recorded:.3} s"
    );
    let l = &left[4000..left.len() - 4000];
    assert!(
        tone_power_at(l, 6000.0, 16000.0) > 1e5,
        "wideband after the toggle"
    );
}

/// Opus on both sides (RFC 7587: a 48 kHz RTP clock, `opus/48000/2`),
/// telephone events on the same clock.
fn opus_vars() -> Vec<(&'static str, String)> {
    vec![
        ("PT", "111".into()),
        ("CODEC", "opus".into()),
        ("CLOCK", "48000/2".into()),
        ("EVENT_CLOCK", "48000".into()),
    ]
}

fn opus(expr: &str, seconds: f64, ssrc: u32) -> RtpStream {
    let packets = ffmpeg_opus(expr, seconds);
    let refs: Vec<&[u8]> = packets.iter().map(Vec::as_slice).collect();
    RtpStream::new(ssrc).clock(48000).packets_of(111, &refs)
}

fn opus_call(
    name: &str,
    from: &str,
    caller: &RtpStream,
    talk_ms: u64,
) -> (serde_json::Value, Vec<i16>, Vec<i16>) {
    let s = setup(name, &users());
    let party = |stream: RtpStream| Party {
        stream,
        sdp: opus_vars(),
    };
    let callee = opus("0.4*sin(2*PI*1000*t)", talk_ms as f64 / 1000.0 + 0.5, 2);
    let (mp3, sidecar) = one_call(&s, from, party(caller.clone()), party(callee), talk_ms);
    assert_eq!(sidecar["audio"]["sampleRate"], 16000, "{sidecar}");
    assert_eq!(
        sidecar["audio"]["codecs"],
        serde_json::json!({"caller": "OPUS", "callee": "OPUS"}),
        "{sidecar}"
    );
    assert_eq!(sidecar["complete"], true, "{sidecar}");
    let (left, right) = decode_mp3_at(&mp3, 16000);
    (sidecar, left, right)
}

#[test]
fn an_opus_call_is_a_16_khz_recording_of_both_sides() {
    let caller = opus(
        "0.3*sin(2*PI*440*t)+0.3*sin(2*PI*6000*t)",
        TALK_MS as f64 / 1000.0 + 0.5,
        1,
    );
    let (sidecar, left, right) = opus_call("opus", "008", &caller, TALK_MS);
    let file = left.len() as f64 / 16000.0;
    let call = sidecar["durationSeconds"].as_f64().unwrap();
    assert!(
        (file - call).abs() < 0.1,
        "file {file:.3} s, answered call {call:.3} s"
    );
    let (l, r) = (middle(&left), middle(&right));
    let p = |x: &[i16], f| tone_power_at(x, f, 16000.0);
    assert!(p(l, 440.0) > 1e5, "left 440 Hz: {}", p(l, 440.0));
    assert!(p(l, 6000.0) > 0.1 * p(l, 440.0), "6 kHz kept");
    assert!(p(l, 440.0) > 50.0 * p(l, 1000.0));
    assert!(p(r, 1000.0) > 1e5, "right 1 kHz: {}", p(r, 1000.0));
    assert!(p(r, 1000.0) > 50.0 * p(r, 440.0));
}

#[test]
fn an_on_demand_user_in_opus_keys_the_shortcode_on_the_48_khz_clock() {
    let tone = "0.3*sin(2*PI*440*t)";
    let first = ffmpeg_opus(tone, 1.0);
    let rest = ffmpeg_opus(tone, 2.5);
    let (a, b): (Vec<&[u8]>, Vec<&[u8]>) = (
        first.iter().map(Vec::as_slice).collect(),
        rest.iter().map(Vec::as_slice).collect(),
    );
    let caller = RtpStream::new(1)
        .clock(48000)
        .packets_of(111, &a)
        .key('*', 100)
        .gap(100)
        .key('5', 100)
        .packets_of(111, &b);
    let (sidecar, left, _) = opus_call("opus-ondemand", "012", &caller, 3900);
    let from = sidecar["recorded"][0]["from"].as_f64().unwrap();
    assert!(from > 1.0, "recording starts at the code: {sidecar}");
    let file = left.len() as f64 / 16000.0;
    let recorded = sidecar["durationSeconds"].as_f64().unwrap() - from;
    assert!(
        (file - recorded).abs() < 0.2,
        "file {file:.3} s, recorded {recorded:.3} s"
    );
}
