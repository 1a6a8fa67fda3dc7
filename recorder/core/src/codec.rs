//! Decoding one side of a recorded call to PCM at the recording's rate.
//!
//! G.711 (µ-law, A-law) is decoded here; G.722 by the `audio-codec` crate
//! (a maintained, pure-Rust port of the SpanDSP/CMU reference decoder, so no
//! C library has to be packaged into the image); Opus by the reference
//! libopus (through `opusic-c`, built from its bundled sources: the decoder
//! every other implementation is measured against, with PLC and DTX),
//! decoding straight to the recording's rate, mono. A narrowband recording
//! (8 kHz) takes G.722's lower sub-band only, which is exactly its 0–4 kHz
//! audio; a wideband recording (16 kHz) takes both bands, and G.711 audio in
//! it is resampled 8 → 16 kHz. Each side keeps its own decoder state: a
//! codec change on a side starts a fresh decoder.
//!
//! Pure: bytes in, samples out.

use audio_codec::BoxedResampler;
use audio_codec::g722::G722Decoder;

use crate::g711::Law;

/// Sample rate of narrowband recordings.
pub const NARROWBAND: u32 = 8000;
/// Sample rate of recordings with a wideband side.
pub const WIDEBAND: u32 = 16000;

/// A codec the recorder can decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// G.711 µ-law or A-law.
    G711(Law),
    /// G.722 (16 kHz audio on an 8000 Hz RTP clock, RFC 3551).
    G722,
    /// Opus (RFC 7587: 48 kHz RTP clock, mono or stereo).
    Opus,
}

impl Codec {
    /// The codec of an SDP encoding name (any case), if the recorder decodes it.
    pub fn of(name: &str) -> Option<Codec> {
        if name.eq_ignore_ascii_case("G722") {
            Some(Codec::G722)
        } else if name.eq_ignore_ascii_case("OPUS") {
            Some(Codec::Opus)
        } else {
            Law::of(&name.to_ascii_uppercase()).map(Codec::G711)
        }
    }

    /// Whether its audio is wider than the telephone band.
    pub fn wideband(self) -> bool {
        matches!(self, Codec::G722 | Codec::Opus)
    }

    /// Its RTP timestamp clock, in Hz.
    pub fn clock_rate(self) -> u32 {
        match self {
            Codec::Opus => 48000,
            _ => 8000,
        }
    }

    /// Samples per second it decodes to at most (for a recording; Opus
    /// could give more, a call recording keeps 16 kHz).
    pub fn audio_rate(self) -> u32 {
        match self {
            Codec::G711(_) => NARROWBAND,
            Codec::G722 | Codec::Opus => WIDEBAND,
        }
    }
}

enum State {
    G711(Law),
    G722(Box<G722Decoder>),
    Opus {
        /// `None` when libopus refused to start (out of memory): undecodable.
        decoder: Option<Box<opusic_c::Decoder>>,
        /// Room for the longest packet (120 ms) at the decoder's rate.
        buf: Vec<u16>,
    },
}

/// The longest Opus packet: 120 ms.
const OPUS_MAX_MS: usize = 120;

impl State {
    /// Decodes one payload at the codec's own output rate, appending to `out`.
    fn decode(&mut self, payload: &[u8], out: &mut Vec<i16>) {
        match self {
            State::G711(law) => out.extend(payload.iter().map(|&b| law.decode(b))),
            State::G722(d) => {
                let start = out.len();
                out.resize(start + 2 * payload.len(), 0);
                let n = d.decode_frame_into(payload, &mut out[start..]).unwrap_or(0);
                out.truncate(start + n);
            }
            // A damaged packet decodes to nothing: the timeline keeps its
            // time as silence, as for a lost one.
            State::Opus {
                decoder: Some(d),
                buf,
            } if !payload.is_empty() => {
                if let Ok(n) = d.decode_to_slice(payload, buf, false) {
                    out.extend(buf[..n.min(buf.len())].iter().map(|&s| s as i16));
                }
            }
            State::Opus { .. } => {}
        }
    }
}

/// One side's decoder, producing samples at the recording's rate.
pub struct SideDecoder {
    codec: Codec,
    state: State,
    /// 8 → 16 kHz for narrowband audio in a wideband recording, with the
    /// narrowband samples of the packet in hand.
    upsample: Option<(Box<BoxedResampler>, Vec<i16>)>,
}

impl std::fmt::Debug for SideDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SideDecoder")
            .field("codec", &self.codec)
            .finish()
    }
}

/// The most samples one payload may decode to (a 2-second packet at 16
/// kHz): a hostile packet cannot make a side allocate more.
pub const MAX_SAMPLES: usize = 2 * WIDEBAND as usize;

impl SideDecoder {
    /// A decoder of `codec` for a recording at `rate` (8000 or 16000).
    pub fn new(codec: Codec, rate: u32) -> SideDecoder {
        let wide = rate >= WIDEBAND;
        let state = match codec {
            Codec::G711(law) => State::G711(law),
            Codec::G722 => State::G722(Box::new(G722Decoder::with_options(
                audio_codec::g722::Bitrate::Mode1_64000,
                false,
                // Lower band only: the 8 kHz audio of a narrowband file.
                !wide,
            ))),
            Codec::Opus => {
                let (hz, samples) = if wide {
                    (opusic_c::SampleRate::Hz16000, WIDEBAND)
                } else {
                    (opusic_c::SampleRate::Hz8000, NARROWBAND)
                };
                State::Opus {
                    decoder: opusic_c::Decoder::new(opusic_c::Channels::Mono, hz)
                        .ok()
                        .map(Box::new),
                    buf: vec![0; samples as usize * OPUS_MAX_MS / 1000],
                }
            }
        };
        let upsample = (wide && codec.audio_rate() < WIDEBAND)
            .then(|| BoxedResampler::new(NARROWBAND as usize, WIDEBAND as usize).ok())
            .flatten()
            .map(|r| (Box::new(r), Vec::new()));
        SideDecoder {
            codec,
            state,
            upsample,
        }
    }

    /// The codec it decodes.
    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// Decodes one RTP payload, appending its samples to `out`.
    pub fn decode(&mut self, payload: &[u8], out: &mut Vec<i16>) {
        let payload = &payload[..payload.len().min(MAX_SAMPLES / 2)];
        let Some((up, narrow)) = self.upsample.as_mut() else {
            self.state.decode(payload, out);
            return;
        };
        narrow.clear();
        self.state.decode(payload, narrow);
        let start = out.len();
        out.resize(start + up.max_output_samples(narrow.len()), 0);
        let n = up.resample_into(narrow, &mut out[start..]).unwrap_or(0);
        out.truncate(start + n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn power_at(x: &[i16], freq: f64, rate: f64) -> f64 {
        let (mut re, mut im) = (0.0, 0.0);
        for (n, &s) in x.iter().enumerate() {
            let w = 2.0 * std::f64::consts::PI * freq * n as f64 / rate;
            re += f64::from(s) * w.cos();
            im += f64::from(s) * w.sin();
        }
        (re * re + im * im) / (x.len() as f64).powi(2)
    }

    #[test]
    fn decodes_g711_and_refuses_what_it_cannot() {
        let pcm = |name, bytes: &[u8]| {
            let mut out = Vec::new();
            SideDecoder::new(Codec::of(name).unwrap(), NARROWBAND).decode(bytes, &mut out);
            out
        };
        assert_eq!(pcm("PCMU", &[0xff, 0x80]), [0, 32124]);
        assert_eq!(pcm("PCMA", &[0xd5]), [8]);
        assert_eq!(Codec::of("G729"), None);
    }

    #[test]
    fn names_and_rates() {
        assert_eq!(Codec::of("g722"), Some(Codec::G722));
        assert_eq!(Codec::of("PCMA"), Some(Codec::G711(Law::Alaw)));
        assert_eq!(Codec::of("pcmu"), Some(Codec::G711(Law::Ulaw)));
        assert_eq!(Codec::of("G729"), None);
        assert_eq!(Codec::of("opus"), Some(Codec::Opus));
        assert_eq!(Codec::Opus.clock_rate(), 48000, "RFC 7587");
        assert!(Codec::G722.wideband() && !Codec::of("PCMU").unwrap().wideband());
        assert_eq!(Codec::G722.clock_rate(), 8000, "RFC 3551's G.722 clock");
    }

    #[test]
    fn g711_upsampled_into_a_wideband_recording_keeps_its_tone_and_length() {
        let law = Law::Ulaw;
        let mut d = SideDecoder::new(Codec::G711(law), WIDEBAND);
        let mut out = Vec::new();
        let mut phase = 0.0f64;
        for _ in 0..50 {
            let payload: Vec<u8> = (0..160)
                .map(|_| {
                    phase += 2.0 * std::f64::consts::PI * 1000.0 / 8000.0;
                    law.encode((8000.0 * phase.sin()) as i16)
                })
                .collect();
            let before = out.len();
            d.decode(&payload, &mut out);
            assert_eq!(
                out.len() - before,
                320,
                "exactly twice the samples per packet"
            );
        }
        let tail = &out[1600..];
        assert!(power_at(tail, 1000.0, 16000.0) > 100.0 * power_at(tail, 7000.0, 16000.0));
    }

    #[test]
    fn hostile_payloads_are_bounded() {
        for codec in [Codec::G722, Codec::G711(Law::Alaw), Codec::Opus] {
            for rate in [NARROWBAND, WIDEBAND] {
                let mut d = SideDecoder::new(codec, rate);
                let mut out = Vec::new();
                d.decode(&vec![0xff; 70_000], &mut out);
                assert!(
                    out.len() <= MAX_SAMPLES + 64,
                    "{codec:?} at {rate}: {}",
                    out.len()
                );
                d.decode(&[], &mut out);
            }
        }
    }
}
