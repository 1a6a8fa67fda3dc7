//! One recorded call's audio timeline: RTP packets from both sides placed at
//! their position in call time (from their RTP timestamps, anchored to the
//! arrival time of each stream's first packet), so lost packets, hold and
//! silence suppression become silence of the right length and minute 10 of
//! the call is minute 10 of the file. A short window absorbs reordering;
//! packets later than that are counted, never placed out of time.
//!
//! Pure: time comes in as `Instant`s, samples go out as PCM chunks.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::event::Side;
use earshot_contracts::{ChannelLayout, PauseBehaviour};

/// Samples per second of a narrowband recording (G.711); a recording with a
/// wideband side runs at [`crate::codec::WIDEBAND`].
pub const RATE: u32 = 8000;
/// How long the timeline waits for late packets before it writes a stretch out.
pub const REORDER_WINDOW: Duration = Duration::from_millis(300);
/// Largest distance between a stream's RTP clock and the wall clock before the
/// stream is re-anchored (a sender that reset its timestamps, e.g. after
/// hold), in seconds of samples.
const MAX_SKEW_SECONDS: u64 = 1;
/// Largest stretch one packet may extend the timeline by (bounds memory on
/// garbage timestamps), in seconds of samples.
const MAX_AHEAD_SECONDS: u64 = 2;

#[derive(Debug, Clone, Copy, Default)]
struct Clock {
    ssrc: Option<u32>,
    anchor_ts: u32,
    anchor_pos: u64,
}

/// PCM ready for the encoder: per-channel samples of equal length.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Chunk {
    /// Left (caller) or mono samples.
    pub left: Vec<i16>,
    /// Right (callee) samples; empty for mono.
    pub right: Vec<i16>,
}

impl Chunk {
    /// Samples per channel.
    pub fn len(&self) -> usize {
        self.left.len()
    }

    /// Whether the chunk is empty.
    pub fn is_empty(&self) -> bool {
        self.left.is_empty()
    }
}

/// The timeline of one recorded call.
#[derive(Debug)]
pub struct Timeline {
    start: Instant,
    rate: u32,
    pause: PauseBehaviour,
    layout: ChannelLayout,
    clocks: [Clock; 2],
    /// Sample position of `buf[0]`, in call time since `start`.
    base: u64,
    buf: [VecDeque<i16>; 2],
    /// Paused stretches in call time: (from, to); `to` is `None` while paused.
    pauses: Vec<(u64, Option<u64>)>,
    /// Samples written out so far (file length).
    written: u64,
    /// Packets that arrived after their stretch was written.
    pub late_packets: u64,
}

impl Timeline {
    /// Starts a narrowband (8 kHz) timeline when recording starts.
    pub fn new(start: Instant, pause: PauseBehaviour, layout: ChannelLayout) -> Self {
        Self::with_rate(start, pause, layout, RATE)
    }

    /// Starts a timeline of `rate` samples per second.
    pub fn with_rate(
        start: Instant,
        pause: PauseBehaviour,
        layout: ChannelLayout,
        rate: u32,
    ) -> Self {
        Self {
            start,
            rate: rate.max(1),
            pause,
            layout,
            clocks: [Clock::default(); 2],
            base: 0,
            buf: [VecDeque::new(), VecDeque::new()],
            pauses: Vec::new(),
            written: 0,
            late_packets: 0,
        }
    }

    fn wall(&self, at: Instant) -> u64 {
        let d = at.saturating_duration_since(self.start);
        (d.as_nanos() * u128::from(self.rate) / 1_000_000_000) as u64
    }

    /// Recording paused (`on = false`) or resumed at `at`.
    pub fn set_recording(&mut self, at: Instant, on: bool) {
        let pos = self.wall(at);
        match (on, self.pauses.last_mut()) {
            (false, Some((_, None))) => {}
            (false, _) => self.pauses.push((pos, None)),
            (true, Some((_, to @ None))) => *to = Some(pos),
            (true, _) => {}
        }
    }

    /// The timeline's samples per second.
    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// Places a packet's samples from `side`, its RTP clock running at the
    /// timeline's rate.
    pub fn push(&mut self, side: Side, at: Instant, ssrc: u32, timestamp: u32, samples: &[i16]) {
        self.push_clocked(side, at, ssrc, timestamp, self.rate, samples);
    }

    /// Places a packet's samples (at the timeline's rate) from `side`, its
    /// RTP timestamps counting `clock_rate` per second (G.722: 8000 for
    /// 16 kHz audio).
    pub fn push_clocked(
        &mut self,
        side: Side,
        at: Instant,
        ssrc: u32,
        timestamp: u32,
        clock_rate: u32,
        samples: &[i16],
    ) {
        let wall = self.wall(at);
        let rate = i64::from(self.rate);
        let clock_rate = i64::from(clock_rate.max(1));
        let clock = &mut self.clocks[side.index()];
        let mut pos = None;
        if clock.ssrc == Some(ssrc) {
            let ticks = timestamp.wrapping_sub(clock.anchor_ts) as i32 as i64;
            let p = clock.anchor_pos as i64 + ticks * rate / clock_rate;
            if p >= 0 && (p as u64).abs_diff(wall) <= MAX_SKEW_SECONDS * rate as u64 {
                pos = Some(p as u64);
            }
        }
        let pos = pos.unwrap_or_else(|| {
            // A new stream, or one whose clock jumped: anchor it to now.
            *clock = Clock {
                ssrc: Some(ssrc),
                anchor_ts: timestamp,
                anchor_pos: wall,
            };
            wall
        });
        let end = pos + samples.len() as u64;
        if end <= self.base || end > wall + MAX_AHEAD_SECONDS * u64::from(self.rate) {
            self.late_packets += 1;
            return;
        }
        let skip = self.base.saturating_sub(pos) as usize;
        let offset = (pos.max(self.base) - self.base) as usize;
        let b = &mut self.buf[side.index()];
        let needed = offset + samples.len() - skip;
        if b.len() < needed {
            b.resize(needed, 0);
        }
        for (i, &s) in samples[skip..].iter().enumerate() {
            b[offset + i] = s;
        }
    }

    /// Writes out everything older than the reorder window at `now`.
    pub fn drain(&mut self, now: Instant) -> Chunk {
        let until = self
            .wall(now)
            .saturating_sub(self.wall(self.start + REORDER_WINDOW));
        self.take_until(until)
    }

    /// Writes out everything up to the end of the recording at `end`.
    pub fn finish(&mut self, end: Instant) -> Chunk {
        let until = self.wall(end).max(self.base);
        self.take_until(until)
    }

    /// Samples written so far, per channel (the file's length).
    pub fn written_samples(&self) -> u64 {
        self.written
    }

    fn paused(&self, pos: u64) -> bool {
        self.pauses
            .iter()
            .any(|&(from, to)| pos >= from && to.is_none_or(|t| pos < t))
    }

    fn take_until(&mut self, until: u64) -> Chunk {
        if until <= self.base {
            return Chunk::default();
        }
        // Pauses over before what is written now never matter again: the
        // list holds only what can still overlap, so the lookup per sample
        // does not grow with the number of toggles in a call.
        let base = self.base;
        self.pauses.retain(|&(_, to)| to.is_none_or(|t| t > base));
        let n = (until - self.base) as usize;
        for b in &mut self.buf {
            if b.len() < n {
                b.resize(n, 0);
            }
        }
        let mut chunk = Chunk::default();
        let stereo = self.layout == ChannelLayout::Stereo;
        for i in 0..n {
            let pos = self.base + i as u64;
            let (l, r) = (self.buf[0][i], self.buf[1][i]);
            if self.pause == PauseBehaviour::Skip && self.paused(pos) {
                continue;
            }
            if stereo {
                chunk.left.push(l);
                chunk.right.push(r);
            } else {
                chunk.left.push(((l as i32 + r as i32) / 2) as i16);
            }
        }
        for b in &mut self.buf {
            b.drain(..n);
        }
        self.base = until;
        self.written += chunk.len() as u64;
        chunk
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Feeds `packets` 20 ms packets of a constant value from a side, skipping `lost`.
    fn feed(
        t: &mut Timeline,
        t0: Instant,
        side: Side,
        value: i16,
        from: u64,
        packets: u64,
        lost: &[u64],
    ) {
        for n in from..from + packets {
            if lost.contains(&n) {
                continue;
            }
            t.push(
                side,
                t0 + ms(20 * n),
                7 + side.index() as u32,
                1000 + 160 * n as u32,
                &[value; 160],
            );
        }
    }

    #[test]
    fn both_sides_land_on_their_channels_in_time() {
        let t0 = Instant::now();
        let mut t = Timeline::new(t0, PauseBehaviour::Skip, ChannelLayout::Stereo);
        feed(&mut t, t0, Side::Caller, 100, 0, 50, &[]);
        feed(&mut t, t0, Side::Callee, -100, 0, 50, &[]);
        let mut all = t.drain(t0 + ms(1000));
        let rest = t.finish(t0 + ms(1000));
        all.left.extend(rest.left);
        all.right.extend(rest.right);
        assert_eq!(all.len(), 8000, "1 s of call is 1 s of file");
        assert!(all.left.iter().all(|&s| s == 100));
        assert!(all.right.iter().all(|&s| s == -100));
    }

    #[test]
    fn loss_and_silence_keep_the_length_and_become_zeros() {
        let t0 = Instant::now();
        let mut t = Timeline::new(t0, PauseBehaviour::Skip, ChannelLayout::Stereo);
        feed(&mut t, t0, Side::Caller, 100, 0, 50, &[10, 11, 12]);
        let c = t.finish(t0 + ms(1000));
        assert_eq!(c.len(), 8000);
        assert!(
            c.left[1600..2080].iter().all(|&s| s == 0),
            "60 ms lost = 60 ms silence"
        );
        assert!(c.left[2080..2240].iter().all(|&s| s == 100));
        assert!(c.right.iter().all(|&s| s == 0), "a silent side is silence");
    }

    #[test]
    fn reordered_packets_inside_the_window_are_placed_right() {
        let t0 = Instant::now();
        let mut t = Timeline::new(t0, PauseBehaviour::Skip, ChannelLayout::Stereo);
        feed(&mut t, t0, Side::Caller, 1, 0, 10, &[5]);
        // Packet 5 arrives 100 ms late, still inside the window.
        t.push(Side::Caller, t0 + ms(200), 7, 1000 + 160 * 5, &[5; 160]);
        let c = t.finish(t0 + ms(200));
        assert!(c.left[800..960].iter().all(|&s| s == 5));
        assert_eq!(t.late_packets, 0);
    }

    #[test]
    fn packets_later_than_the_window_are_counted_not_misplaced() {
        let t0 = Instant::now();
        let mut t = Timeline::new(t0, PauseBehaviour::Skip, ChannelLayout::Stereo);
        feed(&mut t, t0, Side::Caller, 1, 0, 50, &[3]);
        let first = t.drain(t0 + ms(1000));
        assert_eq!(first.len(), 5600, "1 s minus the 300 ms window");
        t.push(Side::Caller, t0 + ms(1000), 7, 1000 + 160 * 3, &[9; 160]);
        assert_eq!(t.late_packets, 1);
        let rest = t.finish(t0 + ms(1000));
        assert!(!rest.left.contains(&9));
        assert!(first.left[480..640].iter().all(|&s| s == 0));
    }

    #[test]
    fn hold_with_a_new_stream_is_silence_of_the_hold_length() {
        let t0 = Instant::now();
        let mut t = Timeline::new(t0, PauseBehaviour::Skip, ChannelLayout::Stereo);
        feed(&mut t, t0, Side::Caller, 1, 0, 50, &[]);
        // 10 s of hold, then the phone resumes with a new SSRC and timestamps from 0.
        for n in 0..50u64 {
            t.push(
                Side::Caller,
                t0 + ms(11_000 + 20 * n),
                99,
                160 * n as u32,
                &[2; 160],
            );
        }
        let c = t.finish(t0 + ms(12_000));
        assert_eq!(c.len(), 96_000, "12 s of call, 12 s of file");
        assert!(c.left[8000..88_000].iter().all(|&s| s == 0));
        assert!(c.left[88_000..].iter().all(|&s| s == 2));
    }

    #[test]
    fn timestamps_that_keep_running_through_hold_are_followed() {
        let t0 = Instant::now();
        let mut t = Timeline::new(t0, PauseBehaviour::Skip, ChannelLayout::Stereo);
        feed(&mut t, t0, Side::Caller, 1, 0, 50, &[]);
        // Same SSRC, timestamps advanced by the 5 s the phone was silent.
        feed(&mut t, t0, Side::Caller, 3, 300, 50, &[]);
        let c = t.finish(t0 + ms(7000));
        assert_eq!(c.len(), 56_000);
        assert!(c.left[48_000..].iter().all(|&s| s == 3));
    }

    #[test]
    fn pause_skip_leaves_paused_time_out_and_silence_keeps_it() {
        for (pause, expected) in [
            (PauseBehaviour::Skip, 4 * 8000),
            (PauseBehaviour::Silence, 8 * 8000),
        ] {
            let t0 = Instant::now();
            let mut t = Timeline::new(t0, pause, ChannelLayout::Stereo);
            feed(&mut t, t0, Side::Caller, 1, 0, 100, &[]);
            t.set_recording(t0 + ms(2000), false);
            t.set_recording(t0 + ms(6000), true);
            feed(&mut t, t0, Side::Caller, 1, 300, 100, &[]);
            let mut n = t.drain(t0 + ms(5000)).len();
            n += t.finish(t0 + ms(8000)).len();
            assert_eq!(n, expected, "{pause:?}");
            assert_eq!(t.written_samples(), expected as u64);
        }
    }

    #[test]
    fn a_thousand_toggles_leave_a_short_pause_list() {
        let t0 = Instant::now();
        let mut t = Timeline::new(t0, PauseBehaviour::Skip, ChannelLayout::Stereo);
        for i in 0..1000u64 {
            t.set_recording(t0 + ms(20 * i), i % 2 == 1);
            if i % 10 == 0 {
                t.drain(t0 + ms(20 * i + 1000));
            }
        }
        assert!(t.pauses.len() <= 10, "{} pauses kept", t.pauses.len());
    }

    #[test]
    fn mono_mixes_both_sides() {
        let t0 = Instant::now();
        let mut t = Timeline::new(t0, PauseBehaviour::Skip, ChannelLayout::Mono);
        feed(&mut t, t0, Side::Caller, 100, 0, 5, &[]);
        feed(&mut t, t0, Side::Callee, 300, 0, 5, &[]);
        let c = t.finish(t0 + ms(100));
        assert!(c.right.is_empty());
        assert!(c.left.iter().all(|&s| s == 200));
    }

    #[test]
    fn garbage_timestamps_cannot_grow_memory() {
        let t0 = Instant::now();
        let mut t = Timeline::new(t0, PauseBehaviour::Skip, ChannelLayout::Stereo);
        t.push(Side::Caller, t0, 1, 0, &[1; 160]);
        t.push(Side::Caller, t0 + ms(20), 1, 0x7fff_0000, &[1; 160]);
        assert!(
            t.buf[0].len() < 2 * RATE as usize,
            "re-anchored, not extended by hours"
        );
    }
}
