//! What one recorded call-second costs per codec, both sides: decoding each
//! side's 50 RTP payloads to the file's rate (G.711 and G.722 at 8 kHz when
//! narrowband, G.722 and Opus at 16 kHz) and encoding the second to MP3 as
//! the recorder does. Times 60 is the CPU per recorded call-minute per
//! codec that BENCHMARKS.md reports. G.729 payloads come from the core's
//! announcement encoder (ffmpeg has no G.729 encoder).

use std::hint::black_box;

use audio_codec::Encoder as _;
use criterion::{Criterion, criterion_group, criterion_main};
use earshot_recorder::recording::encoder::{Encoder, Lame, bitrate_at};
use earshot_recorder_core::ChannelLayout;
use earshot_recorder_core::codec::{Codec, FrameEncoder, NARROWBAND, SideDecoder, WIDEBAND};
use earshot_recorder_core::g711::Law;
use earshot_recorder_core::timeline::Chunk;

/// One second of a tone at `rate`, as 50 frames of 20 ms.
fn frames(freq: f32, rate: usize) -> Vec<Vec<i16>> {
    let per = rate / 50;
    (0..50)
        .map(|f| {
            (0..per)
                .map(|i| {
                    let n = (f * per + i) as f32;
                    ((n * freq * std::f32::consts::TAU / rate as f32).sin() * 8000.0) as i16
                })
                .collect()
        })
        .collect()
}

fn payloads(codec: &str, freq: f32) -> Vec<Vec<u8>> {
    match codec {
        "PCMU" => frames(freq, 8000)
            .iter()
            .map(|f| f.iter().map(|&s| Law::Ulaw.encode(s)).collect())
            .collect(),
        "G722" => {
            let mut e = audio_codec::g722::G722Encoder::new();
            frames(freq, 16000).iter().map(|f| e.encode(f)).collect()
        }
        "G729" => {
            let mut e = FrameEncoder::new(Codec::G729).unwrap();
            frames(freq, 8000)
                .iter()
                .map(|f| {
                    let mut out = Vec::new();
                    e.encode(f.as_slice().try_into().unwrap(), &mut out);
                    out
                })
                .collect()
        }
        _ => {
            let mut e = opusic_c::Encoder::new(
                opusic_c::Channels::Mono,
                opusic_c::SampleRate::Hz48000,
                opusic_c::Application::Voip,
            )
            .unwrap();
            e.set_bitrate(opusic_c::Bitrate::Value(32000)).unwrap();
            frames(freq, 48000)
                .iter()
                .map(|f| {
                    let pcm: Vec<u16> = f.iter().map(|&s| s as u16).collect();
                    let mut out = vec![0u8; 1500];
                    let n = e.encode_to_slice(&pcm, &mut out).unwrap();
                    out.truncate(n);
                    out
                })
                .collect()
        }
    }
}

fn bench(c: &mut Criterion) {
    for (name, rate) in [
        ("PCMU", NARROWBAND),
        ("G722", NARROWBAND),
        ("G729", NARROWBAND),
        ("G722", WIDEBAND),
        ("OPUS", WIDEBAND),
    ] {
        let codec = Codec::of(name).unwrap();
        let sides = [payloads(name, 440.0), payloads(name, 1000.0)];
        let mut lame = Lame::new(ChannelLayout::Stereo, bitrate_at(32, rate), rate).unwrap();
        let mut out = Vec::with_capacity(64 * 1024);
        let mut decoders = [SideDecoder::new(codec, rate), SideDecoder::new(codec, rate)];
        c.bench_function(
            &format!("call-second: decode both sides of {name} and encode MP3 at {rate} Hz"),
            |b| {
                b.iter(|| {
                    let mut chunk = Chunk::default();
                    for p in &sides[0] {
                        decoders[0].decode(p, &mut chunk.left);
                    }
                    for p in &sides[1] {
                        decoders[1].decode(p, &mut chunk.right);
                    }
                    let n = chunk.left.len().min(chunk.right.len());
                    chunk.left.truncate(n);
                    chunk.right.truncate(n);
                    out.clear();
                    lame.encode(&chunk, &mut out).unwrap();
                    black_box(out.len());
                })
            },
        );
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
