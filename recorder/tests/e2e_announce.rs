//! Announcements end to end: SIPp as both parties, the recorder in between,
//! tcpdump capturing what each party receives. The parties must hear the
//! beep or prompt inside the other party's stream (same SSRC, no sequence
//! gap), and the MP3 must hold what they heard.

mod common;

use std::time::Duration;

use common::*;
use earshot_recorder_core::g711;
use earshot_tests::pcap::{Captured, RtpStream};
use earshot_tests::{decode_mp3, rms, tone_power, tone_share};

const CALLER_HZ: f64 = 440.0;
const CALLEE_HZ: f64 = 660.0;
const CALLER_SSRC: u32 = 0x0a11_0001;
const CALLEE_SSRC: u32 = 0x0a11_0002;

/// One RTP packet a party received.
#[derive(Debug)]
struct Got {
    seq: u16,
    ts: u32,
    ssrc: u32,
    samples: Vec<i16>,
}

fn received(packets: &[Captured], port: u16) -> Vec<Got> {
    packets
        .iter()
        .filter(|p| p.dst_port == port && p.payload.len() > 12 && p.payload[1] & 0x7f == 0)
        .map(|p| {
            let b = &p.payload;
            Got {
                seq: u16::from_be_bytes([b[2], b[3]]),
                ts: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
                ssrc: u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
                samples: b[12..].iter().map(|&u| g711::ulaw_to_linear(u)).collect(),
            }
        })
        .collect()
}

/// Which of `freqs` carries most of a packet's audio, if any does.
fn dominant(samples: &[i16], freqs: &[f64]) -> Option<f64> {
    freqs
        .iter()
        .copied()
        .find(|&f| tone_share(samples, f) > 0.5)
}

/// One SSRC, sequence numbers +1 each packet, timestamps +160 (20 ms) or more.
fn assert_one_continuous_stream(got: &[Got], ssrc: u32, who: &str) {
    assert!(!got.is_empty(), "{who} received nothing");
    for w in got.windows(2) {
        assert_eq!(w[1].ssrc, ssrc, "{who}: one SSRC, the sender's");
        assert_eq!(
            w[1].seq,
            w[0].seq.wrapping_add(1),
            "{who}: no sequence gap or duplicate"
        );
        let step = w[1].ts.wrapping_sub(w[0].ts);
        assert!(
            step >= 160 && step % 160 == 0 && step < 8000,
            "{who}: timestamp step {step}"
        );
    }
    assert_eq!(got[0].ssrc, ssrc);
}

/// Runs of consecutive packets whose audio is `hz`: (first index, length).
fn runs_of(got: &[Got], hz: f64, others: &[f64]) -> Vec<(usize, usize)> {
    let mut freqs = vec![hz];
    freqs.extend_from_slice(others);
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for (i, g) in got.iter().enumerate() {
        if dominant(&g.samples, &freqs) == Some(hz) {
            match runs.last_mut() {
                Some((start, len)) if *start + *len == i => *len += 1,
                _ => runs.push((i, 1)),
            }
        }
    }
    runs
}

fn streams(seconds: u64) -> (RtpStream, RtpStream) {
    (
        RtpStream::new(CALLER_SSRC).tone(CALLER_HZ, seconds * 1000),
        RtpStream::new(CALLEE_SSRC).tone(CALLEE_HZ, seconds * 1000),
    )
}

#[test]
fn an_always_call_starts_with_a_beep_both_parties_hear_and_the_mp3_keeps() {
    let s = setup_extra(
        "announce-beep",
        &users(),
        "announcement: { mode: Beep, to: Both }\n",
        &[],
    );
    let (caller, callee) = streams(4);
    let cap = capture(&s);
    s.call("008", "500", &caller, &callee, 4000, None);
    std::thread::sleep(Duration::from_millis(300));
    let packets = cap.stop();
    let (callee_port, caller_port) = media_ports(&s);

    for (port, who, ssrc, other_hz) in [
        (callee_port, "callee", CALLER_SSRC, CALLER_HZ),
        (caller_port, "caller", CALLEE_SSRC, CALLEE_HZ),
    ] {
        let got = received(&packets, port);
        assert_one_continuous_stream(&got, ssrc, who);
        let beeps = runs_of(&got, 1400.0, &[other_hz]);
        // 25 packets of 20 ms: the 500 ms beep, first thing heard.
        assert_eq!(beeps.len(), 1, "{who}: one beep, got runs {beeps:?}");
        assert_eq!(beeps[0].0, 0, "{who}: the beep comes first");
        assert!(
            (24..=25).contains(&beeps[0].1),
            "{who}: 500 ms of beep (24 full packets and a faded one), got {}",
            beeps[0].1
        );
        let voice = runs_of(&got, other_hz, &[1400.0]);
        assert_eq!(
            voice[0].0, 25,
            "{who}: the other party right after the beep"
        );
        assert_eq!(
            voice.iter().map(|r| r.1).sum::<usize>(),
            got.len() - 25,
            "{who}: then only the other party"
        );
    }

    let recs = s.recorder.wait_recordings(1, Duration::from_secs(20));
    let (mp3, sidecar) = &recs[0];
    let (left, right) = decode_mp3(mp3);
    // The file starts at the answer; the beep follows within a few packets.
    for (channel, name, hz) in [(&left, "left", CALLER_HZ), (&right, "right", CALLEE_HZ)] {
        let beep = &channel[800..3600];
        assert!(
            tone_power(beep, 1400.0) > 10.0 * tone_power(beep, hz),
            "{name}: the beep is in the recording where it was heard"
        );
        let talk = &channel[8000..16000];
        assert!(
            tone_power(talk, hz) > 10.0 * tone_power(talk, 1400.0),
            "{name}: then the party"
        );
    }
    let announcements = sidecar["announcements"].as_array().unwrap();
    let mut to: Vec<&str> = announcements
        .iter()
        .map(|a| {
            assert_eq!(a["kind"], "beep");
            assert_eq!(a["result"], "played");
            assert_eq!(a["playedSeconds"], 0.5);
            assert!(a["at"].as_f64().unwrap() < 0.2, "{a}");
            a["to"].as_str().unwrap()
        })
        .collect();
    to.sort();
    assert_eq!(to, ["callee", "caller"]);
    assert_eq!(
        s.metric("earshot_announcements_total{kind=\"beep\",result=\"played\"}"),
        2.0
    );
}

#[test]
fn a_spoken_prompt_is_heard_by_the_far_end_only() {
    earshot_tests::require("espeak-ng");
    let dir = earshot_tests::TempDir::new("announce-prompt-wav");
    let wav = dir.path().join("prompt.wav");
    let status = std::process::Command::new("espeak-ng")
        .args(["-v", "en", "-s", "170", "-w"])
        .arg(&wav)
        .arg("This call is recorded.")
        .status()
        .expect("run espeak-ng");
    assert!(status.success());
    let bytes = std::fs::read(&wav).unwrap();
    let prompt = earshot_recorder::prompt::decode(&bytes).unwrap();
    let packets_of_prompt = prompt.len().div_ceil(160);
    assert!(
        (40..200).contains(&packets_of_prompt),
        "a sentence: {packets_of_prompt} packets"
    );

    let s = setup_extra(
        "announce-prompt",
        &users(),
        "announcement: { mode: Prompt, prompt: prompt.wav, to: FarEnd }\n",
        &[("prompt.wav", &bytes)],
    );
    let (caller, callee) = streams(6);
    let cap = capture(&s);
    // 008 (Always) calls 500: the far end is the callee.
    s.call("008", "500", &caller, &callee, 6000, None);
    std::thread::sleep(Duration::from_millis(300));
    let packets = cap.stop();
    let (callee_port, caller_port) = media_ports(&s);

    let to_callee = received(&packets, callee_port);
    assert_one_continuous_stream(&to_callee, CALLER_SSRC, "callee");
    // Exactly the prompt, as the recorder encoded it, then the caller.
    for (i, got) in to_callee.iter().take(packets_of_prompt).enumerate() {
        let want: Vec<i16> = (0..160)
            .map(|k| prompt.get(i * 160 + k).copied().unwrap_or(0))
            .map(|s| g711::ulaw_to_linear(g711::linear_to_ulaw(s)))
            .collect();
        assert_eq!(got.samples, want, "callee: prompt packet {i}");
    }
    let after = &to_callee[packets_of_prompt..];
    assert!(
        after
            .iter()
            .all(|g| dominant(&g.samples, &[CALLER_HZ]) == Some(CALLER_HZ)),
        "callee: the caller after the prompt"
    );

    let to_caller = received(&packets, caller_port);
    assert_one_continuous_stream(&to_caller, CALLEE_SSRC, "caller");
    assert!(
        to_caller
            .iter()
            .all(|g| dominant(&g.samples, &[CALLEE_HZ]) == Some(CALLEE_HZ)),
        "the policy user hears no prompt"
    );

    let recs = s.recorder.wait_recordings(1, Duration::from_secs(20));
    let (mp3, sidecar) = &recs[0];
    let (left, right) = decode_mp3(mp3);
    // Left is what the caller sent as the callee heard it: the prompt first.
    let spoken = &left[400..400 + prompt.len().min(8000) - 400];
    assert!(rms(spoken) > 500.0, "the prompt is in the recording");
    assert!(
        tone_share(spoken, CALLER_HZ) < 0.1,
        "and not the caller's tone"
    );
    assert!(
        tone_share(&right[800..4000], CALLEE_HZ) > 0.5,
        "the callee from the start"
    );
    let a = &sidecar["announcements"][0];
    assert_eq!(
        (a["kind"].as_str(), a["to"].as_str(), a["result"].as_str()),
        (Some("prompt"), Some("callee"), Some("played"))
    );
    assert_eq!(sidecar["announcements"].as_array().unwrap().len(), 1);
}

#[test]
fn reminder_beeps_every_ten_seconds_in_a_35_second_call() {
    let s = setup_extra(
        "announce-periodic",
        &users(),
        "announcement: { mode: None, periodicBeepSeconds: 10, to: Both }\n",
        &[],
    );
    let (caller, callee) = streams(35);
    let cap = capture(&s);
    s.call("008", "500", &caller, &callee, 35_000, None);
    std::thread::sleep(Duration::from_millis(300));
    let packets = cap.stop();
    let (callee_port, caller_port) = media_ports(&s);
    for (port, who, ssrc, other_hz) in [
        (callee_port, "callee", CALLER_SSRC, CALLER_HZ),
        (caller_port, "caller", CALLEE_SSRC, CALLEE_HZ),
    ] {
        let got = received(&packets, port);
        assert_one_continuous_stream(&got, ssrc, who);
        let beeps = runs_of(&got, 1400.0, &[other_hz]);
        assert_eq!(beeps.len(), 3, "{who}: three reminders, got {beeps:?}");
        for b in &beeps {
            assert!((9..=10).contains(&b.1), "{who}: 200 ms each, got {b:?}");
        }
        // 10 s apart: 500 packets, give or take three (the timer that
        // starts a beep may fire a packet or two late on a loaded machine;
        // a CI run beside the lifetime test saw 502).
        for w in beeps.windows(2) {
            let apart = w[1].0 - w[0].0;
            assert!((497..=503).contains(&apart), "{who}: {apart} packets apart");
        }
    }
    let recs = s.recorder.wait_recordings(1, Duration::from_secs(20));
    let announcements = recs[0].1["announcements"].as_array().unwrap().clone();
    assert_eq!(announcements.len(), 6);
    let mut at: Vec<f64> = announcements
        .iter()
        .map(|a| {
            assert_eq!(a["kind"], "periodic_beep");
            a["at"].as_f64().unwrap()
        })
        .collect();
    at.sort_by(f64::total_cmp);
    for (i, pair) in at.chunks(2).enumerate() {
        for t in pair {
            let want = 10.0 * (i + 1) as f64;
            assert!((t - want).abs() < 0.1, "reminder {i} at {t}s");
        }
    }
}
