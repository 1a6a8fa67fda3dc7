//! What one recorded call-second costs per codec, both sides: decoding each
//! side's 50 RTP payloads to the file's rate (G.711 and G.722 at 8 kHz when
//! narrowband, G.722 and Opus at 16 kHz) and encoding the second to MP3 as
//! the recorder does. Times 60 is the CPU per recorded call-minute per
//! codec that BENCHMARKS.md reports. The payloads: `common/payloads.rs`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use earshot_recorder::recording::encoder::{Encoder, Lame, bitrate_at};
use earshot_recorder_core::ChannelLayout;
use earshot_recorder_core::codec::{Codec, NARROWBAND, SideDecoder, WIDEBAND};
use earshot_recorder_core::timeline::Chunk;

#[path = "common/payloads.rs"]
mod payloads;
use payloads::payloads;

fn bench(c: &mut Criterion) {
    for (name, rate) in [
        ("PCMU", NARROWBAND),
        ("G722", NARROWBAND),
        ("G729", NARROWBAND),
        ("G722", WIDEBAND),
        ("OPUS", WIDEBAND),
    ] {
        let codec = Codec::of(name).unwrap();
        let sides = [payloads(codec, 440.0), payloads(codec, 1000.0)];
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
