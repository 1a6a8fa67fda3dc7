//! Telling the parties a call is recorded: a beep or a spoken prompt when
//! recording starts, reminder beeps while it goes on, a tone when it stops,
//! played *inside* the existing RTP stream toward a party.
//!
//! [`Onward`] is one direction of a call's media as the receiver sees it.
//! While an announcement plays it sends the announcement's packets in the
//! sender's stream (same SSRC, sequence numbers and timestamps continuing)
//! and holds the sender's own packets back (dropped, not queued). Afterwards
//! every packet of that stream is shifted by fixed offsets so the receiver
//! sees one continuous stream; RTCP is rewritten to match.
//!
//! Pure: packets in and out as bytes, time as `Instant`s.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::codec::FrameEncoder;
use crate::g711;
use earshot_contracts::{AnnouncementMode, AnnouncementTarget};

/// Samples per announcement packet (20 ms at 8 kHz).
pub const FRAME: usize = crate::codec::FRAME_8K;
/// Packet interval of announcement packets.
pub const PTIME: Duration = Duration::from_millis(20);
/// How long an announcement waits for the sender's first packet (to learn
/// its SSRC, sequence and timestamp) before it starts a stream of its own.
pub const WAIT_FOR_MEDIA: Duration = Duration::from_secs(1);

/// Frequency of the start beep and the reminder beeps.
pub const BEEP_HZ: f32 = 1400.0;
/// Length of the beep played when recording starts.
pub const BEEP_LEN: Duration = Duration::from_millis(500);
/// Length of a reminder beep.
pub const PERIODIC_BEEP_LEN: Duration = Duration::from_millis(200);
/// Frequency of the two short tones played when recording stops.
pub const STOP_HZ: f32 = 700.0;
/// Length of each of the two stop tones (with as long a pause between them).
pub const STOP_TONE_LEN: Duration = Duration::from_millis(150);
/// Peak amplitude of the generated tones (-12 dBFS).
const TONE_AMPLITUDE: f32 = 8192.0;
/// Fade in and out of each tone, so it does not click.
const FADE: Duration = Duration::from_millis(5);

/// The policy's announcement settings, with the prompt already decoded.
#[derive(Debug, Clone, Default)]
pub struct AnnouncementConfig {
    /// What plays when recording starts.
    pub mode: AnnouncementMode,
    /// The prompt as 8 kHz mono samples (`Prompt` mode).
    pub prompt: Option<Arc<[i16]>>,
    /// Who hears it.
    pub to: AnnouncementTarget,
    /// Interval of reminder beeps while recording; `None` for none.
    pub periodic: Option<Duration>,
    /// Whether a tone tells the parties an `OnDemand` user stopped recording.
    pub stop_tone: bool,
}

/// Kinds of announcement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// The beep when recording starts.
    Beep,
    /// The spoken prompt when recording starts.
    Prompt,
    /// A reminder beep while recording.
    PeriodicBeep,
    /// The tone when an `OnDemand` user stops recording.
    StopTone,
}

impl Kind {
    /// Every kind, for metrics that start at zero.
    pub const ALL: [Kind; 4] = [Kind::Beep, Kind::Prompt, Kind::PeriodicBeep, Kind::StopTone];

    /// Metric label and sidecar name.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Beep => "beep",
            Kind::Prompt => "prompt",
            Kind::PeriodicBeep => "periodic_beep",
            Kind::StopTone => "stop_tone",
        }
    }
}

/// What became of an announcement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Outcome {
    /// Played to the end.
    Played,
    /// Started and cut short (call ended, recording stopped, stop tone).
    Cut,
    /// The call's codec cannot be encoded by the recorder (it encodes G.711,
    /// G.722, G.729 and Opus).
    UnsupportedCodec,
    /// The receiver has no negotiated media address.
    NoMedia,
    /// The receiver is on hold (it does not take media now).
    OnHold,
    /// Another announcement was still playing toward that party.
    Overlap,
    /// The media is SRTP: the recorder injects nothing into an encrypted
    /// stream.
    Encrypted,
}

impl Outcome {
    /// Every outcome, for metrics that start at zero.
    pub const ALL: [Outcome; 7] = [
        Outcome::Played,
        Outcome::Cut,
        Outcome::UnsupportedCodec,
        Outcome::NoMedia,
        Outcome::OnHold,
        Outcome::Overlap,
        Outcome::Encrypted,
    ];

    /// Metric label and sidecar name.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Played => "played",
            Outcome::Cut => "cut",
            Outcome::UnsupportedCodec => "unsupported_codec",
            Outcome::NoMedia => "no_media",
            Outcome::OnHold => "on_hold",
            Outcome::Overlap => "overlap",
            Outcome::Encrypted => "encrypted",
        }
    }
}

/// Tones and pauses (`hz == 0.0`) at 8 kHz, each tone faded in and out.
pub fn tones(segments: &[(f32, Duration)]) -> Vec<i16> {
    let rate = g711::RATE as f32;
    let fade = (FADE.as_secs_f32() * rate) as usize;
    let mut out = Vec::new();
    for &(hz, len) in segments {
        let n = (len.as_secs_f32() * rate).round() as usize;
        for i in 0..n {
            if hz == 0.0 {
                out.push(0);
                continue;
            }
            let edge = i.min(n - 1 - i);
            let gain = if edge < fade {
                0.5 - 0.5 * (std::f32::consts::PI * edge as f32 / fade as f32).cos()
            } else {
                1.0
            };
            let phase = 2.0 * std::f32::consts::PI * hz * i as f32 / rate;
            out.push((TONE_AMPLITUDE * gain * phase.sin()) as i16);
        }
    }
    out
}

/// The start beep, a reminder beep and the stop tone.
pub struct Clips {
    /// [`BEEP_HZ`] for [`BEEP_LEN`].
    pub beep: Arc<[i16]>,
    /// [`BEEP_HZ`] for [`PERIODIC_BEEP_LEN`].
    pub periodic: Arc<[i16]>,
    /// Two [`STOP_HZ`] tones.
    pub stop: Arc<[i16]>,
}

impl Default for Clips {
    fn default() -> Self {
        Self {
            beep: tones(&[(BEEP_HZ, BEEP_LEN)]).into(),
            periodic: tones(&[(BEEP_HZ, PERIODIC_BEEP_LEN)]).into(),
            stop: tones(&[
                (STOP_HZ, STOP_TONE_LEN),
                (0.0, STOP_TONE_LEN),
                (STOP_HZ, STOP_TONE_LEN),
            ])
            .into(),
        }
    }
}

/// What to do with one of the sender's own packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Relay it (its header may have been rewritten).
    Forward,
    /// Drop it: an announcement plays in its place.
    Hold,
    /// Drop it, and the announcement that waited for this stream starts now.
    HoldAndStart,
}

/// An announcement that ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finished {
    /// What it was.
    pub kind: Kind,
    /// When it was asked for.
    pub at: Instant,
    /// How much of it was sent.
    pub played: Duration,
    /// How it ended.
    pub outcome: Outcome,
}

/// One announcement packet, for the relay and for the recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Injected {
    /// The whole RTP packet.
    pub packet: Vec<u8>,
    /// Its SSRC.
    pub ssrc: u32,
    /// Its sequence number.
    pub seq: u16,
    /// Its timestamp.
    pub timestamp: u32,
    /// Its payload type.
    pub payload_type: u8,
}

impl Injected {
    /// The G.711 payload.
    pub fn payload(&self) -> &[u8] {
        &self.packet[12..]
    }
}

/// What [`Onward::poll`] left to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Poll {
    /// Nothing is playing.
    Idle,
    /// Call again at this instant.
    At(Instant),
    /// The announcement ended.
    Done(Finished),
}

#[derive(Debug, Clone, Copy)]
struct Sent {
    seq: u16,
    ts: u32,
    at: Instant,
}

#[derive(Debug)]
struct Playback {
    kind: Kind,
    samples: Arc<[i16]>,
    payload_type: u8,
    enc: Box<FrameEncoder>,
    asked: Instant,
    /// When the first packet is due; `None` while waiting for the sender's stream.
    first: Option<(Instant, u16, u32)>,
    frames: u32,
}

impl Playback {
    fn total_frames(&self) -> u32 {
        self.samples.len().div_ceil(FRAME) as u32
    }

    fn finish(&self, outcome: Outcome) -> Finished {
        Finished {
            kind: self.kind,
            at: self.asked,
            played: PTIME * self.frames,
            outcome,
        }
    }
}

/// RTP timestamp units in a stretch of wall time, in whole packets of
/// `per_packet` units, at least one.
fn ts_step(elapsed: Duration, per_packet: u32) -> u32 {
    let frames =
        (elapsed.as_micros() as u64 + PTIME.as_micros() as u64 / 2) / PTIME.as_micros() as u64;
    (frames.max(1) as u32).wrapping_mul(per_packet)
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

/// One direction of a call's media as its receiver sees it.
#[derive(Debug, Default)]
pub struct Onward {
    /// The stream the receiver currently gets and how it is rewritten.
    n: Numbering,
    /// The newest packet sent onward.
    last: Option<Sent>,
    /// The next original packet continues after an announcement.
    resync: bool,
    /// The payload type of the sender's latest audio packet.
    audio_pt: Option<u8>,
    /// RTP timestamp units per 20 ms of the codec last announced in (its
    /// clock): how far the sender's stream moves on after it.
    step: u32,
    play: Option<Playback>,
}

/// One SSRC as the receiver sees it: the offsets applied to its sequence
/// numbers and timestamps, and the announcement packets sent and original
/// packets held back in it (for its RTCP sender reports).
#[derive(Debug, Default, Clone, Copy)]
struct Numbering {
    ssrc: Option<u32>,
    seq_off: u16,
    ts_off: u32,
    injected: u32,
    held: u32,
    injected_octets: u32,
    held_octets: u32,
}

impl Numbering {
    /// A stream the receiver has not seen before: nothing to shift.
    fn fresh(ssrc: u32) -> Self {
        Self {
            ssrc: Some(ssrc),
            ..Self::default()
        }
    }
}

impl Onward {
    /// Whether an announcement is playing (or waiting for the stream) now.
    pub fn playing(&self) -> bool {
        self.play.is_some()
    }

    /// The payload type of the sender's latest audio packet.
    pub fn audio_pt(&self) -> Option<u8> {
        self.audio_pt
    }

    /// Whether packets pass unchanged (no announcement ever touched this stream).
    pub fn is_identity(&self) -> bool {
        self.n.seq_off == 0
            && self.n.ts_off == 0
            && self.n.injected == 0
            && self.n.held == 0
            && !self.resync
            && self.play.is_none()
    }

    /// The numbering packets get while nothing plays and nothing is about
    /// to continue after an announcement: (SSRC, sequence offset, timestamp
    /// offset). `None` while one plays or the next packet resynchronises.
    pub fn steady(&self) -> Option<(Option<u32>, u16, u32)> {
        (self.play.is_none() && !self.resync).then_some((
            self.n.ssrc,
            self.n.seq_off,
            self.n.ts_off,
        ))
    }

    /// One of the sender's packets that was relayed already (by the
    /// kernel), with the numbering [`steady`](Self::steady) gave when it
    /// was handed over. Read as [`original`](Self::original) reads a packet
    /// it forwards; if an announcement started meanwhile, its packets
    /// continue after this one instead of taking its place.
    pub fn relayed(&mut self, now: Instant, packet: &mut [u8], audio: bool) {
        if self.play.is_none() && !self.resync {
            self.original(now, packet, audio);
            return;
        }
        let pt = packet[1] & 0x7f;
        let ssrc = be32(packet, 8);
        if audio {
            self.audio_pt = Some(pt);
        }
        let (seq, ts) = if self.n.ssrc == Some(ssrc) {
            (
                be16(packet, 2).wrapping_add(self.n.seq_off),
                be32(packet, 4).wrapping_add(self.n.ts_off),
            )
        } else {
            (be16(packet, 2), be32(packet, 4))
        };
        let step = self.step;
        if let Some(play) = self.play.as_mut()
            && play.frames == 0
            && let Some((at, seq0, _)) = play.first
            && (seq.wrapping_sub(seq0) as i16) >= 0
        {
            play.first = Some((
                at.max(now + PTIME),
                seq.wrapping_add(1),
                ts.wrapping_add(step),
            ));
        }
        if self
            .last
            .is_none_or(|l| (seq.wrapping_sub(l.seq) as i16) > 0)
        {
            self.last = Some(Sent { seq, ts, at: now });
        }
    }

    /// One of the sender's own RTP packets (at least a 12-byte header,
    /// already validated). `audio` tells whether it carries audio (not a
    /// telephone-event or comfort noise). Rewrites the header in place.
    pub fn original(&mut self, now: Instant, packet: &mut [u8], audio: bool) -> Verdict {
        let pt = packet[1] & 0x7f;
        let seq = be16(packet, 2);
        let ts = be32(packet, 4);
        let ssrc = be32(packet, 8);
        if audio {
            self.audio_pt = Some(pt);
        }
        if let Some(play) = self.play.as_mut() {
            let mut verdict = Verdict::Hold;
            if play.first.is_none() {
                // The sender's first packet: the announcement takes its place
                // and the sender's stream continues after it. A stream the
                // receiver already gets (relayed elsewhere until now: by
                // the kernel) keeps its numbering; any other starts afresh.
                match self.last {
                    Some(last) if self.n.ssrc == Some(ssrc) => {
                        play.first = Some((
                            now,
                            last.seq.wrapping_add(1),
                            last.ts.wrapping_add(ts_step(
                                now.saturating_duration_since(last.at),
                                self.step,
                            )),
                        ));
                    }
                    _ => {
                        self.n = Numbering::fresh(ssrc);
                        play.first = Some((now, seq, ts));
                    }
                }
                verdict = Verdict::HoldAndStart;
            }
            if self.n.ssrc == Some(ssrc) {
                self.n.held = self.n.held.wrapping_add(1);
                self.n.held_octets = self
                    .n
                    .held_octets
                    .wrapping_add(packet.len().saturating_sub(12) as u32);
            }
            return verdict;
        }
        if self.n.ssrc != Some(ssrc) {
            // A new source: the receiver sees a new stream, there is nothing
            // to continue and its own numbering passes unchanged.
            self.n = Numbering::fresh(ssrc);
            self.resync = false;
            self.last = None;
        } else if self.resync {
            self.resync = false;
            if let Some(last) = self.last {
                let out_seq = last.seq.wrapping_add(1);
                let out_ts = last
                    .ts
                    .wrapping_add(ts_step(now.saturating_duration_since(last.at), self.step));
                self.n.seq_off = out_seq.wrapping_sub(seq);
                self.n.ts_off = out_ts.wrapping_sub(ts);
                // The timestamps jumped: mark the start of a talkspurt.
                packet[1] |= 0x80;
            }
        }
        let out_seq = seq.wrapping_add(self.n.seq_off);
        let out_ts = ts.wrapping_add(self.n.ts_off);
        if self.n.seq_off != 0 || self.n.ts_off != 0 {
            packet[2..4].copy_from_slice(&out_seq.to_be_bytes());
            put32(packet, 4, out_ts);
        }
        let newer = self
            .last
            .is_none_or(|l| (out_seq.wrapping_sub(l.seq) as i16) > 0);
        if newer {
            self.last = Some(Sent {
                seq: out_seq,
                ts: out_ts,
                at: now,
            });
        }
        Verdict::Forward
    }

    /// Starts an announcement toward the receiver, encoded by `enc` (the
    /// stream's codec, payload type `payload_type`). If one is already
    /// playing, a stop tone replaces it (the old one is returned, cut);
    /// anything else is refused with [`Outcome::Overlap`].
    pub fn start(
        &mut self,
        now: Instant,
        kind: Kind,
        samples: Arc<[i16]>,
        payload_type: u8,
        enc: FrameEncoder,
    ) -> Result<Option<Finished>, Finished> {
        let mut cut = None;
        if let Some(p) = &self.play {
            if kind != Kind::StopTone {
                return Err(Finished {
                    kind,
                    at: now,
                    played: Duration::ZERO,
                    outcome: Outcome::Overlap,
                });
            }
            cut = Some(p.finish(Outcome::Cut));
            self.play = None;
        }
        self.step = enc.ts_per_frame();
        let first = match (self.n.ssrc, self.last) {
            // The stream is flowing: continue it.
            (Some(_), Some(last)) => {
                // Keep the stream's cadence: the first packet is due one
                // packet time after the last one sent, or now if that is past.
                let at = now.max(last.at + PTIME);
                let seq = last.seq.wrapping_add(1);
                let ts = last.ts.wrapping_add(ts_step(at - last.at, self.step));
                Some((at, seq, ts))
            }
            _ => None,
        };
        self.play = Some(Playback {
            kind,
            samples,
            payload_type,
            enc: Box::new(enc),
            asked: now,
            first,
            frames: 0,
        });
        Ok(cut)
    }

    /// Makes the announcement just started wait for the sender's next
    /// packet to reach the core before it takes the stream's place: while
    /// the kernel relayed the stream, packets it sent may not have been
    /// read yet, and the announcement must continue after the last of them.
    pub fn start_at_next_packet(&mut self) {
        if let Some(p) = self.play.as_mut()
            && p.frames == 0
        {
            p.first = None;
        }
    }

    /// Ends the announcement now, if one plays.
    pub fn cut(&mut self) -> Option<Finished> {
        let p = self.play.take()?;
        self.resync = p.first.is_some();
        Some(p.finish(Outcome::Cut))
    }

    /// Produces the announcement packets due by `now`. `random` gives the
    /// SSRC, sequence and timestamp of a stream of its own when the sender
    /// sent nothing within [`WAIT_FOR_MEDIA`].
    pub fn poll(&mut self, now: Instant, random: u64, out: &mut Vec<Injected>) -> Poll {
        let Some(play) = self.play.as_mut() else {
            return Poll::Idle;
        };
        if play.first.is_none() {
            let deadline = play.asked + WAIT_FOR_MEDIA;
            if now < deadline {
                return Poll::At(deadline);
            }
            self.n = Numbering::fresh(random as u32);
            play.first = Some((
                now,
                (random >> 32) as u16,
                ((random >> 48) as u32).wrapping_mul(self.step),
            ));
        }
        let Some((first_at, seq0, ts0)) = play.first else {
            return Poll::Idle;
        };
        let ssrc = self.n.ssrc.unwrap_or_default();
        let total = play.total_frames();
        while play.frames < total {
            let due = first_at + PTIME * play.frames;
            if due > now {
                return Poll::At(due);
            }
            let k = play.frames;
            let seq = seq0.wrapping_add(k as u16);
            let ts = ts0.wrapping_add(k.wrapping_mul(self.step));
            let mut packet = Vec::with_capacity(12 + FRAME);
            packet.push(0x80);
            packet.push(play.payload_type | if k == 0 { 0x80 } else { 0 });
            packet.extend_from_slice(&seq.to_be_bytes());
            packet.extend_from_slice(&ts.to_be_bytes());
            packet.extend_from_slice(&ssrc.to_be_bytes());
            let from = k as usize * FRAME;
            let frame: [i16; FRAME] =
                std::array::from_fn(|i| play.samples.get(from + i).copied().unwrap_or(0));
            play.enc.encode(&frame, &mut packet);
            let octets = (packet.len() - 12) as u32;
            out.push(Injected {
                packet,
                ssrc,
                seq,
                timestamp: ts,
                payload_type: play.payload_type,
            });
            play.frames += 1;
            self.n.injected = self.n.injected.wrapping_add(1);
            self.n.injected_octets = self.n.injected_octets.wrapping_add(octets);
            self.last = Some(Sent { seq, ts, at: due });
        }
        let done = play.finish(Outcome::Played);
        self.play = None;
        self.resync = true;
        Poll::Done(done)
    }
}

/// Rewrites a (compound) RTCP packet from a sender so it matches what the
/// receiver got: sender reports about `sent` carry the shifted RTP
/// timestamp and counts that include the announcement, and report blocks
/// about `received` (the stream coming back the other way) carry sequence
/// numbers in the original sender's numbering. Malformed packets are left
/// as they are.
pub fn rewrite_rtcp(data: &mut [u8], sent: &Onward, received: &Onward) {
    let mut at = 0;
    while at + 8 <= data.len() {
        let count = (data[at] & 0x1f) as usize;
        let pt = data[at + 1];
        let len = (be16(data, at + 2) as usize + 1) * 4;
        if data[at] >> 6 != 2 || at + len > data.len() {
            return;
        }
        let blocks_at = match pt {
            200 if len >= 28 => {
                if sent.n.ssrc == Some(be32(data, at + 4)) {
                    let ts = be32(data, at + 16).wrapping_add(sent.n.ts_off);
                    put32(data, at + 16, ts);
                    let packets = be32(data, at + 20)
                        .wrapping_add(sent.n.injected)
                        .wrapping_sub(sent.n.held);
                    put32(data, at + 20, packets);
                    let octets = be32(data, at + 24)
                        .wrapping_add(sent.n.injected_octets)
                        .wrapping_sub(sent.n.held_octets);
                    put32(data, at + 24, octets);
                }
                Some(at + 28)
            }
            201 => Some(at + 8),
            _ => None,
        };
        if let Some(mut b) = blocks_at {
            for _ in 0..count {
                if b + 24 > at + len {
                    break;
                }
                if received.n.ssrc == Some(be32(data, b)) && received.n.seq_off != 0 {
                    // Extended highest sequence: undo the shift, signed.
                    let delta = received.n.seq_off as i16 as i32 as u32;
                    let ext = be32(data, b + 8).wrapping_sub(delta);
                    put32(data, b + 8, ext);
                }
                b += 24;
            }
        }
        at += len;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(seq: u16, ts: u32, ssrc: u32) -> Vec<u8> {
        let mut p = vec![0x80, 0];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&ts.to_be_bytes());
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend_from_slice(&[0xff; 160]);
        p
    }

    #[test]
    fn tones_have_their_length_and_fade() {
        let clips = Clips::default();
        assert_eq!(clips.beep.len(), 4000);
        assert_eq!(clips.periodic.len(), 1600);
        assert_eq!(clips.stop.len(), 3600);
        assert_eq!(clips.beep[0], 0);
        let peak = clips.beep.iter().map(|s| s.unsigned_abs()).max().unwrap();
        assert!((8000..=8192).contains(&peak), "{peak}");
        // The pause between the stop tones is silent.
        assert!(clips.stop[1200..2400].iter().all(|&s| s == 0));
    }

    #[test]
    fn identity_until_an_announcement() {
        let t0 = Instant::now();
        let mut o = Onward::default();
        let mut p = pkt(7, 1000, 42);
        let before = p.clone();
        assert_eq!(o.original(t0, &mut p, true), Verdict::Forward);
        assert_eq!(p, before);
        assert!(o.is_identity());
    }

    #[test]
    fn rewrite_rtcp_leaves_garbage_alone() {
        let a = Onward::default();
        let mut junk = vec![0x81, 200, 0xff, 0xff, 1, 2, 3];
        let copy = junk.clone();
        rewrite_rtcp(&mut junk, &a, &a);
        assert_eq!(junk, copy);
    }
}
