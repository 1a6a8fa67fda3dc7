//! Encoding PCM to MP3, behind a trait so the pipeline is tested with a
//! fake encoder in microseconds and runs LAME in production: CBR at the
//! call's rate, `-q 7`, flushed whole at the end (no audio is left in the
//! encoder), with LAME's Info tag in the first frame so players skip the
//! encoder's delay and padding and the file is exactly as long as the
//! audio. Also reads an MP3's length back from its frames and tag.

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
    /// After the flush: bytes to write over the start of the file (LAME's
    /// Info tag, in the place its first frame reserved), if any.
    fn header(&mut self) -> Option<Vec<u8>> {
        None
    }
    /// Seconds of audio in a whole file this encoder wrote.
    fn seconds(&self, file: &[u8]) -> f64 {
        mp3_duration(file)
    }
}

/// Makes the encoder of a new recording from its settings and sample rate.
pub type EncoderFactory =
    Arc<dyn Fn(&Settings, u32) -> Result<Box<dyn Encoder>, String> + Send + Sync>;

/// The production factory: LAME.
pub fn lame() -> EncoderFactory {
    Arc::new(|s: &Settings, rate: u32| {
        Ok(Box::new(Lame::new(s.layout, bitrate_at(s.bitrate, rate), rate)?) as Box<dyn Encoder>)
    })
}

/// The CBR bitrate of a recording at `rate`: the configured one for 8 kHz,
/// twice that (at most 160 kbit/s) for 16 kHz, so the wider band is kept
/// as well as the narrow one is.
pub fn bitrate_at(kbps: u32, rate: u32) -> u32 {
    if rate > timeline::RATE {
        (kbps * 2).min(160)
    } else {
        kbps
    }
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

/// LAME as the recorder uses it (CBR, 8 or 16 kHz, `-q 7`).
pub struct Lame(mp3lame_encoder::Encoder);

impl Lame {
    /// An encoder for the layout at `kbps`, `rate` samples per second.
    pub fn new(layout: ChannelLayout, kbps: u32, rate: u32) -> Result<Lame, String> {
        let channels = if layout == ChannelLayout::Stereo {
            2
        } else {
            1
        };
        let mut b = mp3lame_encoder::Builder::new().ok_or("LAME builder")?;
        let e = |e: mp3lame_encoder::BuildError| format!("{e:?}");
        b.set_num_channels(channels).map_err(e)?;
        b.set_sample_rate(rate).map_err(e)?;
        b.set_output_sample_rate(std::num::NonZeroU32::new(rate))
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
        // The first frame is kept for the Info tag, written at the end; a
        // file a crash cut short keeps it as one silent frame.
        b.set_to_write_vbr_tag(true).map_err(e)?;
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
        // FlushGap, not FlushNoGap: the no-gap flush keeps the last frame
        // or so in the encoder (up to 0.2 s of the call's end).
        out.reserve(7200);
        self.0
            .flush_to_vec::<mp3lame_encoder::FlushGap>(out)
            .map(|_| ())
            .map_err(|e| format!("{e:?}"))
    }

    fn header(&mut self) -> Option<Vec<u8>> {
        let mut tag = Vec::with_capacity(self.0.lame_tag_size());
        self.0.lame_tag_encode_to_vec(&mut tag)?;
        Some(tag)
    }
}

/// Samples per MPEG-2/2.5 layer III frame.
const SAMPLES_PER_FRAME: u32 = 576;

/// Encoder delay and padding from a LAME Info/Xing tag in `frame`.
fn lame_gaps(frame: &[u8]) -> Option<(u32, u32)> {
    let xing = frame
        .windows(4)
        .position(|w| w == b"Info" || w == b"Xing")?;
    // Xing header: id, flags, frames, bytes, 100-byte TOC, quality; then
    // LAME's: 9-byte version, 12 more bytes, 3 bytes of delay and padding.
    let lame = frame.get(xing + 120..xing + 124)?;
    if lame != b"LAME" && lame != b"Lavc" {
        return None;
    }
    let d = frame.get(xing + 141..xing + 144)?;
    let delay = (u32::from(d[0]) << 4) | (u32::from(d[1]) >> 4);
    let padding = ((u32::from(d[1]) & 0xf) << 8) | u32::from(d[2]);
    Some((delay, padding))
}

/// Sample rate, bitrate (kbit/s) and samples per frame of an MPEG audio
/// layer III frame header, `None` when it is not one.
fn frame_header(h: u32) -> Option<(u32, u32, u32)> {
    if h >> 21 != 0x7ff || (h >> 17) & 3 != 1 {
        return None;
    }
    let version = (h >> 19) & 3; // 0 = 2.5, 2 = 2, 3 = 1
    let rate_idx = ((h >> 10) & 3) as usize;
    let br_idx = ((h >> 12) & 0xf) as usize;
    const LOW: [u32; 15] = [0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160];
    let (rates, brs, per_frame): ([u32; 3], [u32; 15], u32) = match version {
        3 => (
            [44100, 48000, 32000],
            [
                0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320,
            ],
            1152,
        ),
        2 => ([22050, 24000, 16000], LOW, SAMPLES_PER_FRAME),
        0 => ([11025, 12000, 8000], LOW, SAMPLES_PER_FRAME),
        _ => return None,
    };
    if rate_idx == 3 || br_idx == 0 || br_idx == 15 {
        return None;
    }
    Some((rates[rate_idx], brs[br_idx], per_frame))
}

/// Sample rate and bitrate (kbit/s) of an MP3, from its first frame.
pub fn mp3_format(data: &[u8]) -> Option<(u32, u32)> {
    let h = data.get(0..4)?;
    frame_header(u32::from_be_bytes([h[0], h[1], h[2], h[3]])).map(|(r, k, _)| (r, k))
}

/// Seconds of audio in an MPEG audio stream (MPEG 1, 2 and 2.5 layer III),
/// by walking its frame headers and stopping at the first damaged or
/// partial frame. A first frame holding a LAME Info tag is not audio: its
/// encoder delay and padding are taken off, as players do.
pub fn mp3_duration(data: &[u8]) -> f64 {
    let mut i = 0;
    let mut samples = 0u64;
    let mut rate = 0u32;
    let mut gaps = None;
    let mut first = true;
    while let Some(h) = data.get(i..i + 4) {
        let h = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
        let Some((frame_rate, kbps, per_frame)) = frame_header(h) else {
            break;
        };
        rate = frame_rate;
        let padding = ((h >> 9) & 1) as usize;
        let size = (per_frame / 8 * kbps * 1000 / rate) as usize + padding;
        if size < 4 || i + size > data.len() {
            break;
        }
        let tag = if first {
            lame_gaps(&data[i..i + size])
        } else {
            None
        };
        first = false;
        match tag {
            Some(g) => gaps = Some(g),
            None => samples += u64::from(per_frame),
        }
        i += size;
    }
    if rate == 0 {
        return 0.0;
    }
    let (delay, padding) = gaps.unwrap_or((0, 0));
    samples.saturating_sub(u64::from(delay + padding)) as f64 / f64::from(rate)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// LAME's output as the worker writes it: encoded, flushed, the tag
    /// written over the first frame.
    fn encoded(samples: usize) -> Vec<u8> {
        encode(samples, true)
    }

    fn encode(samples: usize, tagged: bool) -> Vec<u8> {
        let mut enc = Lame::new(ChannelLayout::Stereo, 32, timeline::RATE).unwrap();
        let chunk = Chunk {
            left: vec![1000i16; samples],
            right: vec![1000i16; samples],
        };
        let mut out = Vec::new();
        enc.encode(&chunk, &mut out).unwrap();
        enc.flush(&mut out).unwrap();
        if tagged {
            let tag = enc.header().expect("an Info tag");
            out[..tag.len()].copy_from_slice(&tag);
        }
        out
    }

    #[test]
    fn the_file_is_as_long_as_the_audio_to_the_sample() {
        for samples in [8000, 9648, 24_000, 80_400] {
            let d = mp3_duration(&encoded(samples));
            assert_eq!(d, samples as f64 / 8000.0, "{samples} samples");
        }
    }

    #[test]
    fn mp3_duration_counts_frames_and_stops_at_damage() {
        let out = encoded(8000 * 3);
        let d = mp3_duration(&out);
        assert!((d - 3.0).abs() < 0.001, "{d}");
        // What a crash leaves: the first frame still LAME's placeholder,
        // the rest cut anywhere; it counts its whole frames (the encoder's
        // delay of about 0.14 s included, with no tag to take it off).
        let raw = encode(8000 * 3, false);
        let cut = mp3_duration(&raw[..raw.len() / 2]);
        assert!(
            (1.4..1.75).contains(&cut),
            "a truncated file still counts its whole frames: {cut}"
        );
        assert_eq!(mp3_duration(&[0xff, 0xfb]), 0.0);
    }
}
