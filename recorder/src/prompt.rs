//! The announcement prompt: a WAV or MP3 file decoded once when the config
//! loads, mixed down to mono and resampled to the 8 kHz the calls use.

use std::io::Cursor;
use std::path::Path;
use std::sync::Arc;

use symphonia::core::codecs::audio::AudioDecoderOptions;
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, TrackType};
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;

/// Sample rate of the calls and so of the decoded prompt.
pub const RATE: u32 = 8000;
/// Longest prompt accepted: an announcement is a sentence, not a message.
pub const MAX_SECONDS: u32 = 60;

/// Decodes a prompt file into 8 kHz mono samples.
pub fn load(path: &Path) -> Result<Arc<[i16]>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    decode(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// Decodes WAV or MP3 bytes into 8 kHz mono samples.
pub fn decode(bytes: &[u8]) -> Result<Arc<[i16]>, String> {
    let mss = MediaSourceStream::new(Box::new(Cursor::new(bytes.to_vec())), Default::default());
    let mut format = symphonia::default::get_probe()
        .probe(
            &Hint::new(),
            mss,
            FormatOptions::default(),
            MetadataOptions::default(),
        )
        .map_err(|e| format!("not a WAV or MP3 file ({e})"))?;
    let track = format
        .default_track(TrackType::Audio)
        .ok_or("the file has no audio track")?;
    let track_id = track.id;
    let params = track
        .codec_params
        .as_ref()
        .and_then(|p| p.audio())
        .ok_or("the file has no audio track")?;
    let mut decoder = symphonia::default::get_codecs()
        .make_audio_decoder(params, &AudioDecoderOptions::default())
        .map_err(|e| format!("unsupported audio encoding ({e})"))?;
    let mut mono: Vec<f32> = Vec::new();
    let mut rate = 0;
    let mut interleaved: Vec<f32> = Vec::new();
    loop {
        let packet = match format.next_packet() {
            Ok(Some(p)) => p,
            Ok(None) => break,
            Err(SymphoniaError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                break;
            }
            Err(e) => return Err(format!("cannot read the audio ({e})")),
        };
        if packet.track_id != track_id {
            continue;
        }
        let buf = match decoder.decode(&packet) {
            Ok(b) => b,
            // A damaged frame: skip it, as players do.
            Err(SymphoniaError::DecodeError(_)) => continue,
            Err(e) => return Err(format!("cannot decode the audio ({e})")),
        };
        let channels = buf.spec().channels().count().max(1);
        if rate == 0 {
            rate = buf.spec().rate();
        } else if rate != buf.spec().rate() {
            return Err("the sample rate changes within the file".into());
        }
        interleaved.resize(buf.samples_interleaved(), 0.0);
        buf.copy_to_slice_interleaved(&mut interleaved);
        for frame in interleaved.chunks(channels) {
            mono.push(frame.iter().sum::<f32>() / channels as f32);
        }
        if rate > 0 && mono.len() as u64 > u64::from(rate) * u64::from(MAX_SECONDS) {
            return Err(format!("longer than {MAX_SECONDS} s"));
        }
    }
    if mono.is_empty() || rate == 0 {
        return Err("the file holds no audio".into());
    }
    Ok(resample(&mono, rate, RATE)
        .into_iter()
        .map(|s| (s * 32767.0).round().clamp(-32768.0, 32767.0) as i16)
        .collect())
}

/// Resamples with a Hann-windowed sinc low-pass at 95 % of the lower
/// Nyquist frequency, so a 44.1 kHz prompt does not alias into the call.
pub fn resample(input: &[f32], from: u32, to: u32) -> Vec<f32> {
    if from == to {
        return input.to_vec();
    }
    let ratio = f64::from(to) / f64::from(from);
    let scale = ratio.min(1.0);
    // Cut-off in cycles per input sample; kernel half-width in input samples.
    let cutoff = 0.5 * scale * 0.95;
    let half = 16.0 / scale;
    let out_len = (input.len() as f64 * ratio).round() as usize;
    let mut out = Vec::with_capacity(out_len);
    for n in 0..out_len {
        let x = n as f64 / ratio;
        let lo = (x - half).ceil().max(0.0) as usize;
        let hi = ((x + half).floor() as usize).min(input.len() - 1);
        let (mut acc, mut norm) = (0.0f64, 0.0f64);
        for (k, &s) in input.iter().enumerate().take(hi + 1).skip(lo) {
            let t = x - k as f64;
            let arg = 2.0 * cutoff * t;
            let sinc = if arg.abs() < 1e-9 {
                1.0
            } else {
                (std::f64::consts::PI * arg).sin() / (std::f64::consts::PI * arg)
            };
            let window = 0.5 + 0.5 * (std::f64::consts::PI * t / half).cos();
            let w = sinc * window;
            acc += f64::from(s) * w;
            norm += w;
        }
        out.push(if norm.abs() > 1e-12 {
            (acc / norm) as f32
        } else {
            0.0
        });
    }
    out
}

/// A 16-bit PCM WAV file of `samples` (interleaved), for tests.
#[cfg(test)]
pub(crate) fn wav(rate: u32, channels: u16, samples: &[i16]) -> Vec<u8> {
    let data_len = (samples.len() * 2) as u32;
    let mut b = Vec::new();
    b.extend_from_slice(b"RIFF");
    b.extend_from_slice(&(36 + data_len).to_le_bytes());
    b.extend_from_slice(b"WAVEfmt ");
    b.extend_from_slice(&16u32.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&channels.to_le_bytes());
    b.extend_from_slice(&rate.to_le_bytes());
    b.extend_from_slice(&(rate * u32::from(channels) * 2).to_le_bytes());
    b.extend_from_slice(&(channels * 2).to_le_bytes());
    b.extend_from_slice(&16u16.to_le_bytes());
    b.extend_from_slice(b"data");
    b.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        b.extend_from_slice(&s.to_le_bytes());
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(hz: f32, rate: u32, seconds: f32) -> Vec<f32> {
        (0..(rate as f32 * seconds) as usize)
            .map(|i| 0.5 * (2.0 * std::f32::consts::PI * hz * i as f32 / rate as f32).sin())
            .collect()
    }

    fn power_at(samples: &[f32], hz: f32, rate: u32) -> f32 {
        // Goertzel.
        let w = 2.0 * std::f32::consts::PI * hz / rate as f32;
        let (mut s1, mut s2) = (0.0f32, 0.0f32);
        for &x in samples {
            let s0 = x + 2.0 * w.cos() * s1 - s2;
            s2 = s1;
            s1 = s0;
        }
        (s1 * s1 + s2 * s2 - 2.0 * w.cos() * s1 * s2) / (samples.len() as f32).powi(2)
    }

    #[test]
    fn resampling_keeps_the_tone_and_the_length() {
        let input = sine(1000.0, 44_100, 1.0);
        let out = resample(&input, 44_100, 8000);
        assert_eq!(out.len(), 8000);
        let tone = power_at(&out[400..7600], 1000.0, 8000);
        let other = power_at(&out[400..7600], 1700.0, 8000);
        assert!((tone.sqrt() - 0.25).abs() < 0.02, "{}", tone.sqrt());
        assert!(other < tone / 1000.0);
    }

    #[test]
    fn resampling_removes_what_8_khz_cannot_carry() {
        // 6 kHz would alias to 2 kHz at 8 kHz; the low-pass takes it out.
        let input = sine(6000.0, 44_100, 1.0);
        let out = resample(&input, 44_100, 8000);
        let rms = (out[400..7600].iter().map(|s| s * s).sum::<f32>() / 7200.0).sqrt();
        assert!(rms < 0.01, "aliased energy {rms}");
    }

    #[test]
    fn decodes_a_stereo_16_khz_wav_to_8_khz_mono() {
        let left = sine(440.0, 16_000, 0.5);
        let samples: Vec<i16> = left
            .iter()
            .flat_map(|&s| [(s * 32767.0) as i16, (s * 32767.0) as i16])
            .collect();
        let out = decode(&wav(16_000, 2, &samples)).unwrap();
        assert_eq!(out.len(), 4000);
        let f: Vec<f32> = out.iter().map(|&s| f32::from(s) / 32767.0).collect();
        assert!(power_at(&f[200..3800], 440.0, 8000).sqrt() > 0.2);
    }

    #[test]
    fn refuses_what_is_not_audio() {
        let e = decode(b"this is not a sound file at all").unwrap_err();
        assert!(e.contains("not a WAV or MP3"), "{e}");
        let long = vec![0i16; 8000 * 61];
        let e = decode(&wav(8000, 1, &long)).unwrap_err();
        assert!(e.contains("longer than 60 s"), "{e}");
    }
}
