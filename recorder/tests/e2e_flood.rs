//! One party flips its codec on every packet (PCMU, PCMA, PCMU, ...) for
//! 30 s in a wideband call — each flip once rebuilt a 6 144-tap 8→16 kHz
//! resampler, and the encoder queue grew to 47 571 entries with every
//! recording falling behind — while ten other recorded calls run
//! alongside. Their recordings must come out whole; the recorder's queue,
//! overruns and memory are printed for the closing note.

mod common;

use std::time::{Duration, Instant};

use common::*;
use earshot_tests::pcap::{RtpStream, ffmpeg_encode};
use earshot_tests::{http_get, rss_kib};

#[test]
fn a_codec_flip_flood_from_one_party_costs_the_other_recordings_nothing() {
    let s = setup("flood", &users());
    let g722 = ffmpeg_encode("0.3*sin(2*PI*1000*t)", 16000, 36.0, "g722", "g722");
    let callee = RtpStream::new(2).encoded(9, &g722, 160);
    let uas = s.uas_with(
        "uas.xml",
        &s.pcap("callee.pcap", &callee),
        11,
        vec![("PT", "9".to_owned()), ("CODEC", "G722".to_owned())],
    );
    // 30 s alternating µ-law and A-law packets of a 440 Hz tone.
    let mu = ffmpeg_encode("0.3*sin(2*PI*440*t)", 8000, 30.0, "pcm_mulaw", "mulaw");
    let al = ffmpeg_encode("0.3*sin(2*PI*440*t)", 8000, 30.0, "pcm_alaw", "alaw");
    let mut flip = RtpStream::new(1);
    for (i, (m, a)) in mu.chunks_exact(160).zip(al.chunks_exact(160)).enumerate() {
        flip = if i % 2 == 0 {
            flip.packets_of(0, &[m])
        } else {
            flip.packets_of(8, &[a])
        };
    }
    let pid = s.recorder.pid().expect("running");
    let rss_before = rss_kib(pid);
    let mut flooder = s.uac_at(
        0,
        "uac_flip.xml",
        "008",
        "500",
        vec![
            ("PCAP", s.pcap("flip.pcap", &flip)),
            ("TALK_MS", "30000".to_owned()),
        ],
        &["-m", "1"],
    );
    std::thread::sleep(Duration::from_secs(2));
    let mut others = s.uac_at(
        16,
        "uac.xml",
        "008",
        "500",
        vec![
            (
                "PCAP",
                s.pcap("other.pcap", &RtpStream::new(3).tone(440.0, 8000)),
            ),
            ("TALK_MS", "8000".to_owned()),
        ],
        &["-m", "10", "-l", "5", "-r", "5"],
    );
    let (mut depth, mut unready, mut rss_max) = (0.0f64, 0, rss_before);
    let until = Instant::now() + Duration::from_secs(30);
    while Instant::now() < until {
        depth = depth.max(s.metric("earshot_encoder_queue_depth"));
        rss_max = rss_max.max(rss_kib(pid));
        if !matches!(http_get(s.recorder.http, "/readyz"), Ok((200, _))) {
            unready += 1;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    flooder.wait_success(Duration::from_secs(30));
    others.wait_success(Duration::from_secs(60));
    let mut uas = uas;
    uas.wait_success(Duration::from_secs(30));
    let recs = s.recorder.wait_recordings(11, Duration::from_secs(30));
    let overruns = s.metric("earshot_encoder_overruns_total");
    let shed = s.metric("earshot_recording_frames_shed_total");
    println!(
        "flood: 30 s of codec flips from one party beside 10 recorded calls: max encoder queue depth {depth}, overruns {overruns}, frames shed {shed}, unready polls {unready}, RSS {rss_before} KiB before, {rss_max} KiB at most (+{} KiB)",
        rss_max.saturating_sub(rss_before)
    );
    assert_eq!(recs.len(), 11);
    let (flood, rest): (Vec<_>, Vec<_>) = recs
        .iter()
        .partition(|(_, side)| side["durationSeconds"].as_f64().unwrap_or(0.0) > 20.0);
    assert_eq!(
        (flood.len(), rest.len()),
        (1, 10),
        "one long flood call, ten others"
    );
    for (_, side) in &rest {
        assert_eq!(side["complete"], true, "{side}");
        assert_eq!(side["audio"]["sampleRate"], 16000, "{side}");
    }
    // The flood's own recording is whole too: the flips are decoded.
    assert_eq!(flood[0].1["complete"], true, "{}", flood[0].1);
    assert_eq!(shed, 0.0, "nothing was left out");
    // Flips reuse each side's decoders: the queue stays near empty (it
    // reached 47 571 entries when each flip built a new resampler).
    assert!(depth < 2000.0, "encoder queue reached {depth}");
    assert_eq!(unready, 0, "the recorder stayed ready");
    assert!(
        rss_max.saturating_sub(rss_before) < 40 * 1024,
        "memory grew by {} KiB",
        rss_max - rss_before
    );
}
