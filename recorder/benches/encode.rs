//! MP3 encoding of one second of 8 kHz stereo as the recorder does it (LAME,
//! 32 kbit/s CBR, -q 7): the cost that bounds recorded calls per core.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use earshot_recorder::recording::encoder::{Encoder, Lame};
use earshot_recorder_core::ChannelLayout;
use earshot_recorder_core::timeline::Chunk;

fn bench(c: &mut Criterion) {
    let chunk = Chunk {
        left: (0..8000)
            .map(|i| ((i as f32 * 0.345).sin() * 8000.0) as i16)
            .collect(),
        right: (0..8000)
            .map(|i| ((i as f32 * 0.785).sin() * 8000.0) as i16)
            .collect(),
    };
    let mut enc = Lame::new(ChannelLayout::Stereo, 32, 8000).unwrap();
    let mut out = Vec::with_capacity(64 * 1024);
    c.bench_function(
        "mp3: encode 1 s of 8 kHz stereo (LAME, 32 kbit/s, -q 7)",
        |b| {
            b.iter(|| {
                out.clear();
                enc.encode(&chunk, &mut out).unwrap();
                black_box(out.len());
            })
        },
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
