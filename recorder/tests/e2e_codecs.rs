//! Codecs other than G.711, through a real recorder with SIPp on both
//! sides: RTP made by ffmpeg's own encoders (G.722, A-law, libopus; G.729 by
//! g729-sys, checked by ffmpeg's G.729 decoder), the MP3s decoded back by
//! ffmpeg and measured. A wideband call is a 16 kHz file that keeps what
//! only wideband carries (a 6 kHz tone); each side is decoded by its own
//! codec; the start beep is heard in the stream's own codec; a codec the
//! recorder cannot decode makes an incomplete recording that says so, never
//! a silent "complete" one.

mod common;

use std::time::Duration;

use common::*;
use earshot_recorder_core::codec::{Codec, SideDecoder};
use earshot_tests::pcap::{
    Captured, RtpStream, ffmpeg_decode, ffmpeg_encode, ffmpeg_opus, ffmpeg_opus_with, g729_encode,
};
use earshot_tests::{decode_mp3, decode_mp3_at, tone_power, tone_power_at};

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
    let s = setup("amr", &users());
    // The bytes do not matter to a recorder that cannot decode AMR.
    let frames: Vec<u8> = (0..32 * 175).map(|i| (i * 7 % 251) as u8).collect();
    let caller = RtpStream::new(1).encoded(96, &frames, 32);
    let callee = RtpStream::new(2).encoded(96, &frames, 32);
    let party = |stream| Party {
        stream,
        sdp: sdp(96, "AMR"),
    };
    let (_, sidecar) = one_call(&s, "008", party(caller), party(callee), TALK_MS);
    let sidecar = &sidecar;
    assert_eq!(sidecar["complete"], false, "{sidecar}");
    let why = sidecar["truncated"].as_str().unwrap();
    assert!(
        why.contains("codec AMR") && why.contains("could not be decoded"),
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

/// G.729 at 20 ms per packet (two 10-byte frames), checked against
/// ffmpeg's own G.729 decoder first.
fn g729(hz: f64, seconds: f64, ssrc: u32) -> RtpStream {
    let bytes = g729_encode(&format!("0.4*sin(2*PI*{hz}*t)"), seconds);
    let back = ffmpeg_decode(&bytes, "g729");
    let mid = &back[4000..back.len() - 4000];
    assert!(
        tone_power(mid, hz) > 1e5 && tone_power(mid, hz) > 50.0 * tone_power(mid, 1400.0),
        "ffmpeg hears the fixture's {hz} Hz"
    );
    RtpStream::new(ssrc).encoded(18, &bytes, 20)
}

#[test]
fn a_g729_call_is_an_8_khz_recording_of_both_sides() {
    let s = setup("g729", &users());
    let seconds = TALK_MS as f64 / 1000.0 + 0.5;
    let party = |stream| Party {
        stream,
        sdp: sdp(18, "G729"),
    };
    let (mp3, sidecar) = one_call(
        &s,
        "008",
        party(g729(440.0, seconds, 1)),
        party(g729(1000.0, seconds, 2)),
        TALK_MS,
    );
    assert_eq!(sidecar["complete"], true, "{sidecar}");
    assert_eq!(sidecar["audio"]["sampleRate"], 8000, "{sidecar}");
    assert_eq!(
        sidecar["audio"]["codecs"],
        serde_json::json!({"caller": "G729", "callee": "G729"}),
        "{sidecar}"
    );
    let (left, right) = decode_mp3(&mp3);
    let file = left.len() as f64 / 8000.0;
    let call = sidecar["durationSeconds"].as_f64().unwrap();
    assert!(
        (file - call).abs() < 0.1,
        "file {file:.3} s, answered call {call:.3} s"
    );
    let (l, r) = (
        &left[4000..left.len() - 4000],
        &right[4000..right.len() - 4000],
    );
    assert!(tone_power(l, 440.0) > 1e5, "left 440 Hz");
    assert!(tone_power(l, 440.0) > 50.0 * tone_power(l, 1000.0));
    assert!(tone_power(r, 1000.0) > 1e5, "right 1 kHz");
    assert!(tone_power(r, 1000.0) > 50.0 * tone_power(r, 440.0));
    assert_eq!(s.metric("earshot_recording_undecodable_packets_total"), 0.0);
}

/// What one party heard: its packets of payload type `pt`, in order, each
/// decoded as the receiving phone would (8 kHz), with its header.
fn heard(packets: &[Captured], port: u16, pt: u8, codec: Codec) -> Vec<(u16, u32, u32, Vec<i16>)> {
    let mut dec = SideDecoder::new(codec, 8000);
    packets
        .iter()
        .filter(|p| p.dst_port == port && p.payload.len() > 12 && p.payload[1] & 0x7f == pt)
        .map(|p| {
            let b = &p.payload;
            let mut pcm = Vec::new();
            dec.decode(&b[12..], &mut pcm);
            (
                u16::from_be_bytes([b[2], b[3]]),
                u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
                u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
                pcm,
            )
        })
        .collect()
}

/// A 500 ms start beep to both parties of a call in `codec`: each hears it
/// first, in the other party's stream and codec (one SSRC, no sequence gap,
/// timestamps on the codec's clock), then the other party; the MP3 keeps it.
fn beep_in(name: &str, codec: Codec, raw_format: Option<&str>, caller: Party, callee: Party) {
    let s = setup_extra(
        name,
        &users(),
        "announcement: { mode: Beep, to: Both }\n",
        &[],
    );
    let pt = caller.sdp[0].1.parse::<u8>().unwrap();
    let cap = capture(&s);
    let (mp3, sidecar) = one_call(&s, "008", caller, callee, TALK_MS);
    std::thread::sleep(Duration::from_millis(300));
    let packets = cap.stop();
    let (callee_port, caller_port) = media_ports(&s);
    let step = codec.clock_rate() / 50;
    for (port, who, ssrc, other_hz) in [
        (callee_port, "callee", 1, 440.0),
        (caller_port, "caller", 2, 1000.0),
    ] {
        let got = heard(&packets, port, pt, codec);
        assert!(got.len() > 100, "{who} heard {} packets", got.len());
        for w in got.windows(2) {
            assert_eq!(w[1].2, ssrc, "{who}: one SSRC, the sender's");
            assert_eq!(w[1].0, w[0].0.wrapping_add(1), "{who}: no sequence gap");
            let ts = w[1].1.wrapping_sub(w[0].1);
            assert!(
                ts >= step && ts % step == 0 && ts < 50 * step,
                "{who}: timestamp step {ts}"
            );
        }
        let beep = |pcm: &[i16]| tone_power(pcm, 1400.0) > 4.0 * tone_power(pcm, other_hz);
        let other = |pcm: &[i16]| tone_power(pcm, other_hz) > 4.0 * tone_power(pcm, 1400.0);
        let beeps = got[..25].iter().filter(|g| beep(&g.3)).count();
        assert!(
            beeps >= 22,
            "{who}: the 500 ms beep first, {beeps} of 25 packets"
        );
        if let Some(format) = raw_format {
            // A decoder other than the recorder's hears the beep too.
            let payloads: Vec<u8> = packets
                .iter()
                .filter(|p| p.dst_port == port && p.payload.len() > 12 && p.payload[1] & 0x7f == pt)
                .take(25)
                .flat_map(|p| p.payload[12..].to_vec())
                .collect();
            let pcm = ffmpeg_decode(&payloads, format);
            let mid = &pcm[800..3200];
            assert!(
                tone_power(mid, 1400.0) > 1e6 && beep(mid),
                "{who}: ffmpeg's {format} decoder hears the beep: {:.0}",
                tone_power(mid, 1400.0)
            );
        }
        assert!(
            got[28..].iter().all(|g| other(&g.3)),
            "{who}: then only the other party"
        );
    }
    let rate = sidecar["audio"]["sampleRate"].as_u64().unwrap() as u32;
    let (left, right) = decode_mp3_at(&mp3, rate);
    let ms = |m: usize| m * rate as usize / 1000;
    for (channel, side, hz) in [(&left, "left", 440.0), (&right, "right", 1000.0)] {
        let b = &channel[ms(100)..ms(450)];
        let p = |x: &[i16], f| tone_power_at(x, f, f64::from(rate));
        assert!(
            p(b, 1400.0) > 10.0 * p(b, hz),
            "{side}: the beep is in the recording"
        );
        let talk = &channel[ms(1000)..ms(2000)];
        assert!(
            p(talk, hz) > 10.0 * p(talk, 1400.0),
            "{side}: then the party"
        );
    }
    assert_eq!(
        s.metric("earshot_announcements_total{kind=\"beep\",result=\"played\"}"),
        2.0,
        "{sidecar}"
    );
}

#[test]
fn the_start_beep_is_heard_in_g722() {
    let seconds = TALK_MS as f64 / 1000.0 + 0.5;
    let g722 = |hz: f64, ssrc| Party {
        stream: RtpStream::new(ssrc).encoded(
            9,
            &ffmpeg_encode(
                &format!("0.4*sin(2*PI*{hz}*t)"),
                16000,
                seconds,
                "g722",
                "g722",
            ),
            160,
        ),
        sdp: sdp(9, "G722"),
    };
    beep_in(
        "beep-g722",
        Codec::G722,
        Some("g722"),
        g722(440.0, 1),
        g722(1000.0, 2),
    );
}

#[test]
fn the_start_beep_is_heard_in_opus() {
    let seconds = TALK_MS as f64 / 1000.0 + 0.5;
    let party = |hz: f64, ssrc| Party {
        stream: opus(&format!("0.4*sin(2*PI*{hz}*t)"), seconds, ssrc),
        sdp: opus_vars(),
    };
    beep_in(
        "beep-opus",
        Codec::Opus,
        None,
        party(440.0, 1),
        party(1000.0, 2),
    );
}

#[test]
fn the_start_beep_is_heard_in_g729() {
    let seconds = TALK_MS as f64 / 1000.0 + 0.5;
    let party = |hz: f64, ssrc| Party {
        stream: g729(hz, seconds, ssrc),
        sdp: sdp(18, "G729"),
    };
    beep_in(
        "beep-g729",
        Codec::G729,
        Some("g729"),
        party(440.0, 1),
        party(1000.0, 2),
    );
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
    s: &Setup,
    from: &str,
    caller: &RtpStream,
    talk_ms: u64,
) -> (serde_json::Value, Vec<i16>, Vec<i16>) {
    let party = |stream: RtpStream| Party {
        stream,
        sdp: opus_vars(),
    };
    let callee = opus("0.4*sin(2*PI*1000*t)", talk_ms as f64 / 1000.0 + 0.5, 2);
    let (mp3, sidecar) = one_call(s, from, party(caller.clone()), party(callee), talk_ms);
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
    let s = setup("opus", &users());
    let (sidecar, left, right) = opus_call(&s, "008", &caller, TALK_MS);
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
fn a_lost_opus_packet_is_rebuilt_from_the_next_one_not_a_hole_in_the_recording() {
    // The caller's phone sends in-band FEC (libopus, as WebRTC does) and
    // every 10th packet is lost on the way.
    let packets = ffmpeg_opus_with(
        "0.4*sin(2*PI*440*t)",
        TALK_MS as f64 / 1000.0 + 0.5,
        &["-fec", "1", "-packet_loss", "10"],
    );
    let refs: Vec<&[u8]> = packets.iter().map(Vec::as_slice).collect();
    let caller = RtpStream::new(1)
        .clock(48000)
        .packets_of(111, &refs)
        .drop_every(10);
    let s = setup("opus-fec", &users());
    let (_, left, _) = opus_call(&s, "008", &caller, TALK_MS);
    // 20 ms windows of the caller's channel far below the tone: holes.
    let talk = middle(&left);
    let level = earshot_tests::rms(talk);
    let holes = talk
        .chunks_exact(320)
        .filter(|w| earshot_tests::rms(w) < 0.2 * level)
        .count();
    assert_eq!(holes, 0, "no 20 ms of silence where a packet was lost");
    let rebuilt = s.metric("earshot_recording_rebuilt_packets_total");
    assert!(rebuilt >= 10.0, "{rebuilt} packets rebuilt");
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
    let s = setup("opus-ondemand", &users());
    let (sidecar, left, _) = opus_call(&s, "012", &caller, 3900);
    let from = sidecar["recorded"][0]["from"].as_f64().unwrap();
    assert!(from > 1.0, "recording starts at the code: {sidecar}");
    let file = left.len() as f64 / 16000.0;
    let recorded = sidecar["durationSeconds"].as_f64().unwrap() - from;
    assert!(
        (file - recorded).abs() < 0.2,
        "file {file:.3} s, recorded {recorded:.3} s"
    );
}
