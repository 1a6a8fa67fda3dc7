//! The announcement glue: when recording starts, stops or a reminder is
//! due, which parties hear what, in which of the call's streams and codec;
//! the packets due are sent at their time and reported when each ends.

use std::time::{Duration, Instant};

use crate::announce::{self, Finished, Kind, Outcome};
use crate::codec::{Codec, FrameEncoder};
use crate::event::{CallRef, Event, MediaFrame, Side};
use crate::sdp;
use crate::stats::Stats;
use earshot_contracts::AnnouncementMode;

use super::media::Leg;
use super::{Output, Recorder, Relay, Timer};

/// An announcement's timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum AnnounceTimer {
    /// Send the announcement packets due (call, generation).
    Inject(u64, u32),
    /// A reminder beep is due (call, generation).
    Periodic(u64, u32),
}

impl Recorder {
    /// Plays what the policy asks for when recording starts or stops, and
    /// runs the reminder beeps while it goes on.
    pub(super) fn on_recording_changed(
        &mut self,
        now: Instant,
        cid: u64,
        on: bool,
        stopped_by: Option<Side>,
    ) {
        let a = &self.cfg.announcement;
        let (mode, to, periodic, stop_tone) = (a.mode, a.to, a.periodic, a.stop_tone);
        let Some(call) = self.calls.get_mut(&cid) else {
            return;
        };
        if call.srs.is_some() {
            // A recording session: the recorder sends nothing to anyone.
            return;
        }
        call.periodic_gen = call.periodic_gen.wrapping_add(1);
        let g = call.periodic_gen;
        if on {
            let receivers = call.announcement_receivers(to, None);
            if let Some(every) = periodic {
                self.arm(
                    now + every,
                    Timer::Announce(AnnounceTimer::Periodic(cid, g)),
                );
            }
            let kind = match mode {
                AnnouncementMode::None => return,
                AnnouncementMode::Prompt if self.cfg.announcement.prompt.is_some() => Kind::Prompt,
                // No usable prompt: the beep still tells the parties.
                AnnouncementMode::Beep | AnnouncementMode::Prompt => Kind::Beep,
            };
            self.announce(now, cid, kind, &receivers);
        } else if let Some(side) = stopped_by {
            // Recording stopped by a shortcode: the call goes on.
            let receivers = call.announcement_receivers(to, Some(side));
            self.cut_announcements(cid);
            if stop_tone {
                self.announce(now, cid, Kind::StopTone, &receivers);
            }
        }
    }

    /// Starts an announcement toward each receiver, in the call's first audio stream.
    pub(super) fn announce(&mut self, now: Instant, cid: u64, kind: Kind, receivers: &[Side]) {
        let samples = match (kind, &self.cfg.announcement.prompt) {
            (Kind::Prompt, Some(p)) => p.clone(),
            (Kind::Beep | Kind::Prompt, _) => self.clips.beep.clone(),
            (Kind::PeriodicBeep, _) => self.clips.periodic.clone(),
            (Kind::StopTone, _) => self.clips.stop.clone(),
        };
        let Some(call) = self.calls.get_mut(&cid) else {
            return;
        };
        let r = call.r.clone();
        let mut finished = Vec::new();
        let mut started = false;
        for &to in receivers {
            let sender = to.other();
            let stream = call.streams.iter_mut().find(|s| {
                s.ports[0] != 0
                    && s.legs
                        .iter()
                        .any(|l| l.stream.as_ref().is_some_and(|m| m.media == "audio"))
            });
            let skipped = |outcome| Finished {
                kind,
                at: now,
                played: Duration::ZERO,
                outcome,
            };
            let Some(stream) = stream else {
                finished.push((to, skipped(Outcome::NoMedia)));
                continue;
            };
            let receiver = &stream.legs[to.index()];
            if receiver.latched.or(receiver.negotiated).is_none() {
                finished.push((to, skipped(Outcome::NoMedia)));
                continue;
            }
            // SRTP: a clear packet in an encrypted stream would be dropped
            // by the receiver (or worse, shift its packet index).
            if super::media::encrypted(&stream.legs) {
                finished.push((to, skipped(Outcome::Encrypted)));
                continue;
            }
            if receiver.stream.as_ref().is_some_and(|m| {
                matches!(
                    m.direction,
                    sdp::Direction::SendOnly | sdp::Direction::Inactive
                )
            }) {
                finished.push((to, skipped(Outcome::OnHold)));
                continue;
            }
            // The codec the sender uses now, else the first the receiver
            // takes that both sides listed (the negotiated one).
            let sending = &stream.legs[sender.index()];
            let offered =
                |l: &Leg, pt: u8| l.stream.as_ref().is_some_and(|m| m.formats.contains(&pt));
            let pt = sending
                .onward
                .audio_pt()
                .filter(|&pt| offered(receiver, pt))
                .or_else(|| {
                    let m = receiver.stream.as_ref()?;
                    m.formats
                        .iter()
                        .copied()
                        .find(|&f| Some(f) != m.telephone_event() && offered(sending, f))
                });
            // Encoded in that codec; one Earshot cannot encode is skipped and counted.
            let enc = pt
                .and_then(|pt| Codec::of(&stream.codec_toward(to, pt)?.name))
                .and_then(FrameEncoder::new);
            let (Some(pt), Some(enc)) = (pt, enc) else {
                finished.push((to, skipped(Outcome::UnsupportedCodec)));
                continue;
            };
            let relayed_by_kernel = stream.legs[sender.index()].kernel.installed.is_some();
            let onward = &mut stream.legs[sender.index()].onward;
            match onward.start(now, kind, samples.clone(), pt, enc) {
                Ok(cut) => {
                    if relayed_by_kernel {
                        onward.start_at_next_packet();
                    }
                    started = true;
                    if let Some(cut) = cut {
                        finished.push((to, cut));
                    }
                }
                Err(refused) => finished.push((to, refused)),
            }
        }
        if started {
            let timer = call.inject_timer();
            self.arm(now, timer);
            if self.kernel_relay {
                // The kernel relays no packet an announcement replaces.
                self.kernel_sync(cid, super::Handback::Announcement);
            }
        }
        for (to, f) in finished {
            self.announced(&r, to, f);
        }
    }

    pub(super) fn announced(&mut self, call: &CallRef, to: Side, f: Finished) {
        Stats::bump(
            &mut self.stats.announcements,
            (f.kind.label(), f.outcome.label()),
        );
        self.emit(Event::Announcement {
            call: call.clone(),
            at: f.at,
            kind: f.kind,
            to,
            outcome: f.outcome,
            played: f.played,
        });
    }

    /// Ends every announcement of the call now.
    pub(super) fn cut_announcements(&mut self, cid: u64) {
        let Some(call) = self.calls.get_mut(&cid) else {
            return;
        };
        let r = call.r.clone();
        let mut cut = Vec::new();
        for stream in call.streams.iter_mut() {
            for sender in [Side::Caller, Side::Callee] {
                if let Some(f) = stream.legs[sender.index()].onward.cut() {
                    cut.push((sender.other(), f));
                }
            }
        }
        for (to, f) in cut {
            self.announced(&r, to, f);
        }
    }

    /// Sends the announcement packets due and schedules the next ones.
    pub(super) fn inject(&mut self, now: Instant, cid: u64) {
        let seed = self.random();
        let Some(call) = self.calls.get_mut(&cid) else {
            return;
        };
        let mut next: Option<Instant> = None;
        let mut finished = Vec::new();
        let mut packets = Vec::new();
        for (idx, stream) in call.streams.iter_mut().enumerate() {
            for sender in [Side::Caller, Side::Callee] {
                let to = sender.other();
                let onward = &mut stream.legs[sender.index()].onward;
                if !onward.playing() {
                    continue;
                }
                let mut sent = Vec::new();
                match onward.poll(now, seed, &mut sent) {
                    announce::Poll::Idle => {}
                    announce::Poll::At(t) => next = Some(next.map_or(t, |n| n.min(t))),
                    announce::Poll::Done(f) => finished.push((to, f)),
                }
                let receiver = &stream.legs[to.index()];
                let dest = receiver.latched.or(receiver.negotiated);
                for p in sent {
                    if call.recording {
                        let codec = stream.codec_toward(to, p.payload_type);
                        let frame = MediaFrame {
                            call: call.r.clone(),
                            at: now,
                            side: sender,
                            stream: idx as u8,
                            ssrc: p.ssrc,
                            seq: p.seq,
                            timestamp: p.timestamp,
                            payload_type: p.payload_type,
                            codec: codec.map(|c| c.name.clone()),
                            clock_rate: codec.map_or(0, |c| c.clock_rate),
                            payload: p.payload().to_vec(),
                        };
                        packets.push(Output::Event(Event::Media(frame)));
                    }
                    if let Some(to) = dest {
                        let relay = Relay {
                            from_port: stream.ports[sender.other().index()],
                            to,
                        };
                        packets.push(Output::Rtp {
                            relay,
                            data: p.packet,
                        });
                    }
                }
            }
        }
        let r = call.r.clone();
        if let Some(t) = next {
            let timer = call.inject_timer();
            self.arm(t, timer);
        }
        self.out.extend(packets);
        for (to, f) in finished {
            self.announced(&r, to, f);
        }
    }

    /// Fires an announcement's timer.
    pub(super) fn fire_announcement(&mut self, now: Instant, timer: AnnounceTimer) {
        match timer {
            AnnounceTimer::Inject(cid, g) => {
                if self.calls.get(&cid).is_some_and(|c| c.inject_gen == g) {
                    self.inject(now, cid);
                }
            }
            AnnounceTimer::Periodic(cid, g) => {
                let every = self.cfg.announcement.periodic;
                let to = self.cfg.announcement.to;
                let Some(call) = self.calls.get(&cid) else {
                    return;
                };
                if call.periodic_gen != g || !call.recording {
                    return;
                }
                let receivers = call.announcement_receivers(to, None);
                if let Some(every) = every {
                    self.arm(
                        now + every,
                        Timer::Announce(AnnounceTimer::Periodic(cid, g)),
                    );
                }
                self.announce(now, cid, Kind::PeriodicBeep, &receivers);
            }
        }
    }
}
