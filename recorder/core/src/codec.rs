//! Decoding one side of a recorded call to PCM at the recording's rate.
//!
//! G.711 (µ-law, A-law) is decoded here; G.722 by the `audio-codec` crate
//! (a maintained, pure-Rust port of the SpanDSP/CMU reference decoder, so no
//! C library has to be packaged into the image); Opus by the reference
//! libopus (through `opusic-c`, built from its bundled sources: the decoder
//! every other implementation is measured against, with PLC and DTX),
//! decoding straight to the recording's rate, mono; G.729 Annex A/B by
//! `g729-sys` (a pure-Rust port of bcg729, the decoder Linphone and
//! FreeSWITCH ship, with Annex B comfort noise; again nothing to package,
//! and safe Rust where a hostile packet lands). A narrowband recording
//! (8 kHz) takes G.722's lower sub-band only, which is exactly its 0–4 kHz
//! audio; a wideband recording (16 kHz) takes both bands, and G.711 audio in
//! it is resampled 8 → 16 kHz. Each side keeps its own decoder state: a
//! codec change on a side starts a fresh decoder.
//!
//! Pure: bytes in, samples out.

use audio_codec::g722::{G722Decoder, G722Encoder};
use audio_codec::{BoxedResampler, Encoder as _};

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
    /// G.729, Annex A and B (RFC 3551: 10-byte frames of 10 ms, a 2-byte
    /// SID frame for comfort noise).
    G729,
}

impl Codec {
    /// The codec of an SDP encoding name (any case), if the recorder decodes it.
    pub fn of(name: &str) -> Option<Codec> {
        if name.eq_ignore_ascii_case("G722") {
            Some(Codec::G722)
        } else if name.eq_ignore_ascii_case("OPUS") {
            Some(Codec::Opus)
        } else if ["G729", "G729A", "G729B", "G729AB"]
            .iter()
            .any(|n| name.eq_ignore_ascii_case(n))
        {
            // Annex A is bitstream-compatible, Annex B adds SID frames.
            Some(Codec::G729)
        } else {
            Law::of(name).map(Codec::G711)
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
            Codec::G711(_) | Codec::G729 => NARROWBAND,
            Codec::G722 | Codec::Opus => WIDEBAND,
        }
    }

    /// The longest payload decoded: at most [`MAX_SAMPLES`] at the
    /// recording's rate, whatever the codec's expansion.
    fn max_payload(self) -> usize {
        match self {
            // 10 bytes give 80 samples, upsampled ×2 in a wideband file.
            Codec::G729 => MAX_SAMPLES / 16,
            _ => MAX_SAMPLES / 2,
        }
    }
}

/// Bytes of a G.729 voice frame (10 ms).
const G729_FRAME: usize = 10;
/// Bytes of a G.729 Annex B SID frame.
const G729_SID: usize = 2;

enum State {
    G711(Law),
    G722(Box<G722Decoder>),
    Opus {
        /// `None` when libopus refused to start (out of memory): undecodable.
        decoder: Option<Box<opusic_c::Decoder>>,
        /// Room for the longest packet (120 ms) at the decoder's rate.
        buf: Vec<u16>,
    },
    G729(Box<g729_sys::Decoder>),
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
            // RFC 3551 §4.5.6: voice frames, then at most one SID frame;
            // any other tail is not G.729 and decodes to nothing.
            State::G729(d) => {
                let mut frames = payload.chunks_exact(G729_FRAME);
                for frame in frames.by_ref() {
                    out.extend_from_slice(&d.decode(frame, false, false, false));
                }
                let tail = frames.remainder();
                if tail.len() == G729_SID {
                    out.extend_from_slice(&d.decode(tail, false, true, false));
                }
            }
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
            Codec::G729 => State::G729(Box::default()),
        };
        let upsample = (wide && codec.audio_rate() < WIDEBAND)
            .then(upsampler)
            .flatten()
            .map(|r| (r, Vec::new()));
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

    /// Audio for packets lost just before `next`, `samples` long at the
    /// recording's rate, appended to `out`: Opus rebuilds it from the
    /// in-band FEC that `next` carries (RFC 7587 §3.1; libopus conceals the
    /// loss when it carries none). Other codecs have nothing to rebuild
    /// from: `false`, and the gap stays silence.
    pub fn recover(&mut self, next: &[u8], samples: usize, out: &mut Vec<i16>) -> bool {
        let State::Opus {
            decoder: Some(d),
            buf,
        } = &mut self.state
        else {
            return false;
        };
        // libopus rebuilds whole 2.5 ms frames, at most one packet (120 ms).
        let quantum = (buf.len() / (OPUS_MAX_MS * 2 / 5)).max(1);
        let samples = samples.min(buf.len()) / quantum * quantum;
        if samples == 0 || next.is_empty() {
            return false;
        }
        match d.decode_to_slice(next, &mut buf[..samples], true) {
            Ok(n) => {
                out.extend(buf[..n.min(samples)].iter().map(|&s| s as i16));
                true
            }
            Err(_) => false,
        }
    }

    /// Decodes one RTP payload, appending its samples to `out`.
    pub fn decode(&mut self, payload: &[u8], out: &mut Vec<i16>) {
        let payload = &payload[..payload.len().min(self.codec.max_payload())];
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

/// 8 → 16 kHz, for narrowband audio in a wideband recording and for
/// announcements into G.722.
fn upsampler() -> Option<Box<BoxedResampler>> {
    BoxedResampler::new(NARROWBAND as usize, WIDEBAND as usize)
        .ok()
        .map(Box::new)
}

/// Samples of one announcement frame: 20 ms at 8 kHz.
pub const FRAME_8K: usize = 160;

enum Enc {
    G711(Law),
    /// With its 8 → 16 kHz upsampler and that buffer.
    G722(Box<G722Encoder>, Box<BoxedResampler>, Vec<i16>),
    G729(Box<g729_sys::Encoder>),
    Opus(Box<opusic_c::Encoder>),
}

/// Encodes announcement audio (8 kHz) in the codec of the stream it is
/// played into, one 20 ms packet at a time: the receiver hears it in the
/// codec it negotiated, on that codec's RTP clock.
pub struct FrameEncoder {
    codec: Codec,
    enc: Enc,
}

impl std::fmt::Debug for FrameEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameEncoder")
            .field("codec", &self.codec)
            .finish()
    }
}

/// The most an Opus packet may take (RFC 6716 §3.4).
const OPUS_MAX_PACKET: usize = 1275;

impl FrameEncoder {
    /// An encoder for `codec`; `None` if its encoder cannot start (libopus
    /// out of memory).
    pub fn new(codec: Codec) -> Option<FrameEncoder> {
        let enc = match codec {
            Codec::G711(law) => Enc::G711(law),
            // Upsampled to 16 kHz and encoded in full (64 kbit/s). The
            // crate's own 8 kHz input mode is not used: in audio-codec
            // 0.4.13 it emits a constant code whatever the input.
            Codec::G722 => Enc::G722(
                Box::new(G722Encoder::new()),
                upsampler()?,
                Vec::with_capacity(2 * FRAME_8K + 64),
            ),
            // Annex B off: every frame is voice, no SID the receiver might
            // not expect.
            Codec::G729 => Enc::G729(Box::new(g729_sys::Encoder::new(false))),
            // Mono is valid in any Opus stream, stereo ones included (RFC 7587 §3.4).
            Codec::Opus => Enc::Opus(Box::new(
                opusic_c::Encoder::new(
                    opusic_c::Channels::Mono,
                    opusic_c::SampleRate::Hz8000,
                    opusic_c::Application::Voip,
                )
                .ok()?,
            )),
        };
        Some(FrameEncoder { codec, enc })
    }

    /// RTP timestamp units of one 20 ms packet.
    pub fn ts_per_frame(&self) -> u32 {
        self.codec.clock_rate() / 50
    }

    /// Appends the payload of one 20 ms packet to `out`.
    pub fn encode(&mut self, pcm: &[i16; FRAME_8K], out: &mut Vec<u8>) {
        match &mut self.enc {
            Enc::G711(law) => out.extend(pcm.iter().map(|&s| law.encode(s))),
            Enc::G722(e, up, wide) => {
                wide.resize(up.max_output_samples(FRAME_8K), 0);
                let n = up.resample_into(pcm, wide).unwrap_or(0);
                // Exactly 320 samples in, 160 bytes out: the packet keeps its 20 ms.
                wide.truncate(n);
                wide.resize(2 * FRAME_8K, 0);
                let start = out.len();
                out.resize(start + e.max_encode_bytes(wide.len()), 0);
                let n = e.encode_into(wide, &mut out[start..]).unwrap_or(0);
                out.truncate(start + n);
            }
            Enc::G729(e) => {
                for half in pcm.chunks_exact(FRAME_8K / 2) {
                    let mut frame = [0i16; FRAME_8K / 2];
                    frame.copy_from_slice(half);
                    let mut bytes = [0u8; G729_FRAME];
                    let n = usize::from(e.encode_into(&frame, &mut bytes));
                    out.extend_from_slice(&bytes[..n.min(G729_FRAME)]);
                }
            }
            Enc::Opus(e) => {
                let input: [u16; FRAME_8K] = std::array::from_fn(|i| pcm[i] as u16);
                let start = out.len();
                out.resize(start + OPUS_MAX_PACKET, 0);
                let n = e.encode_to_slice(&input, &mut out[start..]).unwrap_or(0);
                out.truncate(start + n.min(OPUS_MAX_PACKET));
            }
        }
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
        assert_eq!(Codec::of("AMR-WB"), None);
        assert_eq!(Codec::of("iLBC"), None);
    }

    #[test]
    fn names_and_rates() {
        assert_eq!(Codec::of("g722"), Some(Codec::G722));
        assert_eq!(Codec::of("PCMA"), Some(Codec::G711(Law::Alaw)));
        assert_eq!(Codec::of("pcmu"), Some(Codec::G711(Law::Ulaw)));
        assert_eq!(Codec::of("g729"), Some(Codec::G729));
        assert_eq!(Codec::of("G729a"), Some(Codec::G729));
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
        let tone = power_at(tail, 1000.0, 16000.0);
        assert!(tone > 4e6 && tone > 100.0 * power_at(tail, 7000.0, 16000.0));
    }

    #[test]
    fn g729_frames_decode_to_their_tone_and_a_sid_frame_to_quiet_noise() {
        let mut enc = g729_sys::Encoder::new(false);
        let mut dec = SideDecoder::new(Codec::G729, NARROWBAND);
        let mut out = Vec::new();
        let mut n = 0usize;
        for _ in 0..50 {
            // 20 ms per packet: two frames of 80 samples.
            let mut payload = Vec::new();
            for _ in 0..2 {
                let frame: [i16; 80] = std::array::from_fn(|_| {
                    n += 1;
                    let w = 2.0 * std::f64::consts::PI * 1000.0 * n as f64 / 8000.0;
                    (8000.0 * w.sin()) as i16
                });
                payload.extend(enc.encode(&frame));
            }
            assert_eq!(payload.len(), 20);
            let before = out.len();
            dec.decode(&payload, &mut out);
            assert_eq!(out.len() - before, 160);
        }
        let tail = &out[1600..];
        let (tone, other) = (
            power_at(tail, 1000.0, 8000.0),
            power_at(tail, 440.0, 8000.0),
        );
        assert!(tone > 4e6 && tone > 100.0 * other, "{tone:.0} {other:.0}");
        // A packet with one voice frame and a SID frame: 20 ms, the SID part
        // comfort noise far below the tone.
        let before = out.len();
        dec.decode(&[0u8; 12][..], &mut out);
        assert_eq!(out.len() - before, 160);
        // A tail that is neither: only the whole frames count.
        let before = out.len();
        dec.decode(&[0x55; 15], &mut out);
        assert_eq!(out.len() - before, 80);
    }

    #[test]
    fn announcements_encode_in_each_codec_and_decode_back_to_their_tone() {
        let tone: Vec<i16> = (0..FRAME_8K * 25)
            .map(|n| {
                let w = 2.0 * std::f64::consts::PI * 1400.0 * n as f64 / 8000.0;
                (8000.0 * w.sin()) as i16
            })
            .collect();
        for (codec, bytes, ts) in [
            (Codec::G711(Law::Alaw), 160, 160),
            (Codec::G722, 160, 160),
            (Codec::G729, 20, 160),
            (Codec::Opus, 0, 960),
        ] {
            let mut enc = FrameEncoder::new(codec).unwrap();
            assert_eq!(enc.ts_per_frame(), ts, "{codec:?}");
            let mut dec = SideDecoder::new(codec, NARROWBAND);
            let mut pcm = Vec::new();
            for frame in tone.chunks_exact(FRAME_8K) {
                let mut payload = Vec::new();
                enc.encode(frame.try_into().unwrap(), &mut payload);
                if bytes > 0 {
                    assert_eq!(payload.len(), bytes, "{codec:?}");
                } else {
                    assert!((1..=OPUS_MAX_PACKET).contains(&payload.len()));
                }
                dec.decode(&payload, &mut pcm);
            }
            assert_eq!(pcm.len(), tone.len(), "{codec:?}: 20 ms per packet");
            // A sine of amplitude 8000 has power (8000/2)² = 1.6e7 at its frequency.
            let tail = &pcm[1600..];
            let (beep, other) = (
                power_at(tail, 1400.0, 8000.0),
                power_at(tail, 440.0, 8000.0),
            );
            assert!(
                beep > 4e6 && beep > 100.0 * other,
                "{codec:?} keeps the beep: {beep:.0} at 1400 Hz, {other:.0} at 440 Hz"
            );
        }
    }

    #[test]
    fn a_lost_opus_packet_is_rebuilt_from_the_next_one_not_left_silent() {
        let mut enc = opusic_c::Encoder::new(
            opusic_c::Channels::Mono,
            opusic_c::SampleRate::Hz16000,
            opusic_c::Application::Voip,
        )
        .unwrap();
        enc.set_inband_fec(opusic_c::InbandFec::Mode1).unwrap();
        enc.set_packet_loss(20).unwrap();
        enc.set_bitrate(opusic_c::Bitrate::Value(32000)).unwrap();
        let packets: Vec<Vec<u8>> = (0..50)
            .map(|k| {
                let pcm: Vec<u16> = (0..320)
                    .map(|i| {
                        let w = 2.0 * std::f64::consts::PI * 440.0 * (k * 320 + i) as f64 / 16000.0;
                        (8000.0 * w.sin()) as i16 as u16
                    })
                    .collect();
                let mut out = vec![0u8; OPUS_MAX_PACKET];
                let n = enc.encode_to_slice(&pcm, &mut out).unwrap();
                out.truncate(n);
                out
            })
            .collect();
        let mut d = SideDecoder::new(Codec::Opus, WIDEBAND);
        let mut out = Vec::new();
        for p in &packets[..30] {
            d.decode(p, &mut out);
        }
        // Packet 30 is lost; 31 carries its FEC.
        let mut rebuilt = Vec::new();
        assert!(d.recover(&packets[31], 320, &mut rebuilt));
        assert_eq!(rebuilt.len(), 320, "exactly the lost 20 ms");
        let tone = power_at(&rebuilt, 440.0, 16000.0);
        assert!(tone > 1e6, "the lost packet's tone is back: {tone:.0}");
        d.decode(&packets[31], &mut out);
        // G.711 has nothing to rebuild from.
        let mut g711 = SideDecoder::new(Codec::G711(Law::Ulaw), NARROWBAND);
        assert!(!g711.recover(&[0xff; 160], 160, &mut rebuilt));
        // Hostile sizes are bounded by one packet.
        let mut big = Vec::new();
        d.recover(&packets[32], usize::MAX, &mut big);
        assert!(big.len() <= WIDEBAND as usize * OPUS_MAX_MS / 1000);
    }

    #[test]
    fn a_stereo_opus_stream_is_recorded_as_its_mono_downmix() {
        // opus/48000/2 with a softphone that really sends two channels.
        let mut enc = opusic_c::Encoder::new(
            opusic_c::Channels::Stereo,
            opusic_c::SampleRate::Hz48000,
            opusic_c::Application::Voip,
        )
        .unwrap();
        let mut d = SideDecoder::new(Codec::Opus, WIDEBAND);
        let mut out = Vec::new();
        for k in 0..50 {
            // Interleaved L/R: the same 440 Hz on both channels.
            let pcm: Vec<u16> = (0..960 * 2)
                .map(|i| {
                    let n = k * 960 + i / 2;
                    let w = 2.0 * std::f64::consts::PI * 440.0 * n as f64 / 48000.0;
                    (8000.0 * w.sin()) as i16 as u16
                })
                .collect();
            let mut packet = vec![0u8; OPUS_MAX_PACKET];
            let n = enc.encode_to_slice(&pcm, &mut packet).unwrap();
            d.decode(&packet[..n], &mut out);
        }
        assert_eq!(out.len(), 50 * 320, "20 ms at 16 kHz per packet");
        let tone = power_at(&out[3200..], 440.0, 16000.0);
        assert!(tone > 4e6, "{tone:.0}");
    }

    #[test]
    fn hostile_payloads_are_bounded() {
        for codec in [
            Codec::G722,
            Codec::G711(Law::Alaw),
            Codec::Opus,
            Codec::G729,
        ] {
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
