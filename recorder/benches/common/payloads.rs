//! One second of a tone as the 50 RTP payloads (20 ms each) a phone would
//! send in a codec, by that codec's reference encoder: the input of the
//! codec bench and of the instruction-count workload
//! (`examples/instructions.rs`), which both include this file.

use audio_codec::Encoder as _;
use earshot_recorder_core::codec::{Codec, FrameEncoder};

/// One second of `freq` Hz at `rate`, as 50 frames of 20 ms.
fn frames(freq: f64, rate: usize) -> Vec<Vec<i16>> {
    let per = rate / 50;
    (0..50)
        .map(|f| {
            (0..per)
                .map(|i| {
                    let t = (f * per + i) as f64 / rate as f64;
                    (8000.0 * (std::f64::consts::TAU * freq * t).sin()) as i16
                })
                .collect()
        })
        .collect()
}

/// The 50 payloads of one second of `freq` Hz in `codec`: G.711 and G.729
/// from 8 kHz, G.722 from 16 kHz, Opus from 48 kHz at 32 kbit/s (as a
/// WebRTC client sends). 440 and 1000 Hz repeat every second exactly.
pub fn payloads(codec: Codec, freq: f64) -> Vec<Vec<u8>> {
    match codec {
        Codec::G711(law) => frames(freq, 8000)
            .iter()
            .map(|f| f.iter().map(|&s| law.encode(s)).collect())
            .collect(),
        Codec::G722 => {
            let mut e = audio_codec::g722::G722Encoder::new();
            frames(freq, 16000).iter().map(|f| e.encode(f)).collect()
        }
        Codec::G729 => {
            let mut e = FrameEncoder::new(Codec::G729).expect("G.729 encoder");
            frames(freq, 8000)
                .iter()
                .map(|f| {
                    let mut out = Vec::new();
                    e.encode(f.as_slice().try_into().expect("160 samples"), &mut out);
                    out
                })
                .collect()
        }
        Codec::Opus => {
            let mut e = opusic_c::Encoder::new(
                opusic_c::Channels::Mono,
                opusic_c::SampleRate::Hz48000,
                opusic_c::Application::Voip,
            )
            .expect("libopus");
            e.set_bitrate(opusic_c::Bitrate::Value(32000))
                .expect("bitrate");
            frames(freq, 48000)
                .iter()
                .map(|f| {
                    let pcm: Vec<u16> = f.iter().map(|&s| s as u16).collect();
                    let mut out = vec![0u8; 1500];
                    let n = e.encode_to_slice(&pcm, &mut out).expect("opus");
                    out.truncate(n);
                    out
                })
                .collect()
        }
    }
}
