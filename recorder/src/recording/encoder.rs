//! Encoding PCM to MP3, behind a trait so the pipeline is tested with a
//! fake encoder in microseconds and runs LAME in production: CBR at the
//! call's rate, `-q 7`, no VBR tag. Also reads an MP3's length back from its
//! frame headers (for recordings a crash cut short).

use std::sync::Arc;

use earshot_contracts::ChannelLayout;
use earshot_recorder_core::timeline::{self, Chunk};

use super::Settings;

/// An MP3 encoder for one recording.
pub trait Encoder: Send {
    /// Encodes one chunk of PCM, appending whatever MP3 bytes are ready to `out`.
    fn encode(&mut self, chunk: &Chunk, out: &mut Vec<u8>) -> Result<(), String>;
    /// Encodes what is buffered and ends the stream.
    fn flush(&mut self, out: &mut Vec<u8>) -> Result<(), String>;
}

/// Makes the encoder of a new recording from its settings.
pub type EncoderFactory = Arc<dyn Fn(&Settings) -> Result<Box<dyn Encoder>, String> + Send + Sync>;

/// The production factory: LAME.
pub fn lame() -> EncoderFactory {
    Arc::new(|s: &Settings| Ok(Box::new(Lame::new(s.layout, s.bitrate)?) as Box<dyn Encoder>))
}

fn lame_bitrate(kbps: u32) -> mp3lame_encoder::Bitrate {
    use mp3lame_encoder::Bitrate::*;
    match kbps {
        8 => Kbps8,
        16 => Kbps16,
        24 => Kbps24,
        40 => Kbps40,
        48 => Kbps48,
        64 => Kbps64,
        80 => Kbps80,
        96 => Kbps96,
        112 => Kbps112,
        128 => Kbps128,
        160 => Kbps160,
        _ => Kbps32,
    }
}

/// LAME as the recorder uses it (CBR, 8 kHz, `-q 7`).
pub struct Lame(mp3lame_encoder::Encoder);

impl Lame {
    /// An encoder for the layout at `kbps`.
    pub fn new(layout: ChannelLayout, kbps: u32) -> Result<Lame, String> {
        let channels = if layout == ChannelLayout::Stereo {
            2
        } else {
            1
        };
        let mut b = mp3lame_encoder::Builder::new().ok_or("LAME builder")?;
        let e = |e: mp3lame_encoder::BuildError| format!("{e:?}");
        b.set_num_channels(channels).map_err(e)?;
        b.set_sample_rate(timeline::RATE).map_err(e)?;
        b.set_output_sample_rate(std::num::NonZeroU32::new(timeline::RATE))
            .map_err(e)?;
        b.set_brate(lame_bitrate(kbps)).map_err(e)?;
        b.set_mode(if channels == 2 {
            mp3lame_encoder::Mode::Stereo
        } else {
            mp3lame_encoder::Mode::Mono
        })
        .map_err(e)?;
        // -q 7: speech at 8 kHz loses nothing audible and costs half the CPU of the default.
        b.set_quality(mp3lame_encoder::Quality::Ok).map_err(e)?;
        b.set_to_write_vbr_tag(false).map_err(e)?;
        b.build().map(Lame).map_err(e)
    }
}

impl Encoder for Lame {
    fn encode(&mut self, chunk: &Chunk, out: &mut Vec<u8>) -> Result<(), String> {
        if chunk.is_empty() {
            return Ok(());
        }
        out.reserve(mp3lame_encoder::max_required_buffer_size(chunk.len()));
        let result = if chunk.right.is_empty() {
            self.0
                .encode_to_vec(mp3lame_encoder::MonoPcm(&chunk.left[..]), out)
        } else {
            self.0.encode_to_vec(
                mp3lame_encoder::DualPcm {
                    left: &chunk.left[..],
                    right: &chunk.right[..],
                },
                out,
            )
        };
        result.map(|_| ()).map_err(|e| format!("{e:?}"))
    }

    fn flush(&mut self, out: &mut Vec<u8>) -> Result<(), String> {
        out.reserve(7200);
        self.0
            .flush_to_vec::<mp3lame_encoder::FlushNoGap>(out)
            .map(|_| ())
            .map_err(|e| format!("{e:?}"))
    }
}

/// Duration of an MPEG audio stream by walking its frame headers (MPEG 1, 2
/// and 2.5 layer III), stopping at the first damaged or partial frame.
pub fn mp3_duration(data: &[u8]) -> f64 {
    let mut i = 0;
    let mut seconds = 0.0;
    while let Some(h) = data.get(i..i + 4) {
        let h = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
        if h >> 21 != 0x7ff || (h >> 17) & 3 != 1 {
            break;
        }
        let version = (h >> 19) & 3; // 0 = 2.5, 2 = 2, 3 = 1
        let rate_idx = ((h >> 10) & 3) as usize;
        let br_idx = ((h >> 12) & 0xf) as usize;
        let padding = ((h >> 9) & 1) as usize;
        let (rates, brs, samples): ([u32; 3], [u32; 15], u32) = match version {
            3 => (
                [44100, 48000, 32000],
                [
                    0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320,
                ],
                1152,
            ),
            2 => (
                [22050, 24000, 16000],
                [0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160],
                576,
            ),
            0 => (
                [11025, 12000, 8000],
                [0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160],
                576,
            ),
            _ => break,
        };
        if rate_idx == 3 || br_idx == 0 || br_idx == 15 {
            break;
        }
        let rate = rates[rate_idx];
        let size = (samples / 8 * brs[br_idx] * 1000 / rate) as usize + padding;
        if size < 4 || i + size > data.len() {
            break;
        }
        seconds += f64::from(samples) / f64::from(rate);
        i += size;
    }
    seconds
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mp3_duration_counts_frames_and_stops_at_damage() {
        let mut enc = Lame::new(ChannelLayout::Stereo, 32).unwrap();
        let chunk = Chunk {
            left: vec![1000i16; 8000 * 3],
            right: vec![1000i16; 8000 * 3],
        };
        let mut out = Vec::new();
        enc.encode(&chunk, &mut out).unwrap();
        enc.flush(&mut out).unwrap();
        let d = mp3_duration(&out);
        assert!((d - 3.0).abs() < 0.15, "{d}");
        let cut = mp3_duration(&out[..out.len() / 2]);
        assert!(
            (cut - 1.5).abs() < 0.15,
            "a truncated file still counts its whole frames: {cut}"
        );
        assert_eq!(mp3_duration(&[0xff, 0xfb]), 0.0);
    }
}
