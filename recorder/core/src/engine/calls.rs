//! Calls: who is on them (the policy users among caller and callee), their
//! answer and end, DTMF shortcodes keyed on a user's own leg, and the
//! decision whether the call is recorded now. Ended calls linger a few
//! seconds, then are forgotten with their ports; idle calls are ended.

use std::time::{Duration, Instant};

use crate::config::{RecordingMode, Target};
use crate::dtmf::{DtmfMethod, ShortcodeMatcher};
use crate::event::{CallRef, EndReason, Event, InvolvedUser, Party, RecordingReason, Side};
use crate::sip::message::{self, Message};
use crate::stats::Stats;
use earshot_contracts::AnnouncementTarget;
use earshot_contracts::layout::call_hash;

use super::announcing::AnnounceTimer;
use super::media::Stream;
use super::{Recorder, Timer};

/// How long an ended call keeps its ports, so late packets are not taken for a new call's.
const CALL_LINGER: Duration = Duration::from_secs(5);
/// Housekeeping interval: idle calls, lingering calls.
const SWEEP: Duration = Duration::from_secs(5);

/// A calls' timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum CallTimer {
    /// Housekeeping.
    Sweep,
}

pub(super) struct Involved {
    pub(super) extension: String,
    pub(super) display_name: Option<String>,
    pub(super) mode: RecordingMode,
    pub(super) shortcode: Option<u8>,
    pub(super) side: Side,
    pub(super) on: bool,
}

pub(super) struct Call {
    pub(super) r: CallRef,
    pub(super) call_id: String,
    pub(super) caller_tag: Option<String>,
    pub(super) involved: Vec<Involved>,
    pub(super) streams: Vec<Stream>,
    pub(super) matchers: [ShortcodeMatcher; 2],
    pub(super) answered: bool,
    pub(super) ended: Option<Instant>,
    pub(super) recording: bool,
    pub(super) last_activity: Instant,
    /// Generation of the announcement timer and of the reminder-beep timer;
    /// a timer of an older generation is stale.
    pub(super) inject_gen: u32,
    pub(super) periodic_gen: u32,
    /// The peer the call came from (for its limits).
    pub(super) peer: String,
    /// Where the caller's requests come from: the initial INVITE's source.
    pub(super) caller_from: Target,
    /// Where the callee's requests come from: where the INVITE went.
    pub(super) callee_at: Option<Target>,
}

impl Call {
    /// Whether a request from `source` really comes from the `side` leg:
    /// from that leg's address (when the two legs share an address, as a
    /// PBX calling through the recorder to itself does, the tags decide).
    pub(super) fn leg_is(&self, side: Side, source: Target) -> bool {
        let ip = source.addr.ip();
        let caller = self.caller_from.addr.ip() == ip;
        let callee = self.callee_at.is_some_and(|t| t.addr.ip() == ip);
        match side {
            Side::Caller => caller,
            Side::Callee => callee,
        }
    }

    pub(super) fn side_of_request(&self, msg: &Message) -> Side {
        match (&self.caller_tag, msg.from_tag()) {
            (Some(c), Some(f)) if *c == f => Side::Caller,
            (Some(_), Some(_)) => Side::Callee,
            _ => Side::Caller,
        }
    }

    pub(super) fn wants_recording(&self) -> Option<RecordingReason> {
        if !self.answered || self.ended.is_some() {
            return None;
        }
        if let Some(u) = self
            .involved
            .iter()
            .find(|u| u.mode == RecordingMode::Always)
        {
            return Some(RecordingReason::Answered {
                extension: u.extension.clone(),
            });
        }
        self.involved
            .iter()
            .find(|u| u.mode == RecordingMode::OnDemand && u.on)
            .map(|u| RecordingReason::Shortcode {
                extension: u.extension.clone(),
                on: true,
            })
    }

    /// The parties an announcement goes to: both, or those that are not a
    /// recorded policy user (`FarEnd`). `toggled` is the side of an
    /// `OnDemand` user who just stopped recording (still the near end).
    pub(super) fn announcement_receivers(
        &self,
        to: AnnouncementTarget,
        toggled: Option<Side>,
    ) -> Vec<Side> {
        [Side::Caller, Side::Callee]
            .into_iter()
            .filter(|&side| {
                to == AnnouncementTarget::Both
                    || (Some(side) != toggled
                        && !self
                            .involved
                            .iter()
                            .any(|u| u.side == side && (u.mode == RecordingMode::Always || u.on)))
            })
            .collect()
    }

    /// A new announcement timer for this call; earlier ones become stale.
    pub(super) fn inject_timer(&mut self) -> Timer {
        self.inject_gen = self.inject_gen.wrapping_add(1);
        Timer::Announce(AnnounceTimer::Inject(self.r.id, self.inject_gen))
    }

    /// Whether digits keyed on `side` need in-band detection: an OnDemand
    /// user is on that side and no telephone-event was negotiated.
    pub(super) fn listens_for_shortcode(&self, side: Side) -> bool {
        self.involved
            .iter()
            .any(|u| u.side == side && u.mode == RecordingMode::OnDemand && u.shortcode.is_some())
    }
}

impl Recorder {
    pub(super) fn ensure_sweep(&mut self, now: Instant) {
        if !self.sweep_armed {
            self.sweep_armed = true;
            self.arm(now + SWEEP, Timer::Call(CallTimer::Sweep));
        }
    }

    pub(super) fn on_final(
        &mut self,
        now: Instant,
        cid: u64,
        method: &str,
        code: u16,
        _msg: &Message,
    ) {
        let Some(call) = self.calls.get(&cid) else {
            return;
        };
        let initial = method == "INVITE" && !call.answered;
        if initial && (200..300).contains(&code) {
            let call = self.calls.get_mut(&cid).expect("checked above");
            call.answered = true;
            let r = call.r.clone();
            self.emit(Event::CallAnswered { call: r, at: now });
            self.update_recording(now, cid, None);
        } else if initial && code >= 300 {
            let cancelled = self
                .clients
                .values()
                .any(|c| c.call == Some(cid) && c.cancelled);
            let reason = if code == 487 || cancelled {
                EndReason::Cancelled
            } else if code == 408 {
                EndReason::Timeout
            } else {
                EndReason::Rejected(code)
            };
            self.end_call(now, cid, reason);
        }
    }

    pub(super) fn start_call(
        &mut self,
        now: Instant,
        msg: &Message,
        call_id: &str,
        source: Target,
        peer: &str,
    ) -> u64 {
        let id = self.id();
        let from = msg.header("From").unwrap_or_default();
        let pai = msg.header("P-Asserted-Identity");
        let to = msg.header("To").unwrap_or_default();
        let caller = Party {
            number: pai
                .as_deref()
                .and_then(message::name_addr_user)
                .or_else(|| message::name_addr_user(&from)),
            display_name: pai
                .as_deref()
                .and_then(message::name_addr_display)
                .or_else(|| message::name_addr_display(&from)),
        };
        let callee = Party {
            number: msg
                .request_uri()
                .and_then(|u| u.user().map(str::to_owned))
                .or_else(|| message::name_addr_user(&to)),
            display_name: message::name_addr_display(&to),
        };
        // Every identity that can name a policy user on each side.
        let caller_ids = [
            pai.as_deref().and_then(message::name_addr_user),
            message::name_addr_user(&from),
        ];
        let callee_ids = [
            msg.request_uri().and_then(|u| u.user().map(str::to_owned)),
            message::name_addr_user(&to),
        ];
        let mut involved: Vec<Involved> = Vec::new();
        for (side, ids) in [(Side::Caller, caller_ids), (Side::Callee, callee_ids)] {
            for ext in ids.into_iter().flatten() {
                if involved
                    .iter()
                    .any(|u| u.extension == ext && u.side == side)
                {
                    continue;
                }
                if let Some(user) = self.cfg.users.get(&ext) {
                    if user.mode == RecordingMode::Never {
                        continue;
                    }
                    involved.push(Involved {
                        extension: ext,
                        display_name: user.display_name.clone(),
                        mode: user.mode,
                        shortcode: user.shortcode,
                        side,
                        on: false,
                    });
                }
            }
        }
        let r = CallRef {
            id,
            hash: call_hash(call_id),
        };
        let users = involved
            .iter()
            .map(|u| InvolvedUser {
                extension: u.extension.clone(),
                display_name: u.display_name.clone(),
                mode: u.mode,
                side: u.side,
            })
            .collect();
        self.calls.insert(
            id,
            Call {
                r: r.clone(),
                call_id: call_id.to_owned(),
                caller_tag: msg.from_tag(),
                involved,
                streams: Vec::new(),
                matchers: Default::default(),
                answered: false,
                ended: None,
                recording: false,
                last_activity: now,
                inject_gen: 0,
                periodic_gen: 0,
                peer: peer.to_owned(),
                caller_from: source,
                callee_at: None,
            },
        );
        self.loads
            .with(|l| l.entry(peer.to_owned()).or_default().calls += 1);
        self.call_ids.insert(call_id.to_owned(), id);
        self.stats.calls_active += 1;
        self.emit(Event::CallStarted {
            call: r,
            at: now,
            caller,
            callee,
            users,
        });
        id
    }

    pub(super) fn end_call(&mut self, now: Instant, cid: u64, reason: EndReason) {
        let Some(call) = self.calls.get_mut(&cid) else {
            return;
        };
        if call.ended.is_some() {
            return;
        }
        call.ended = Some(now);
        self.loads.with(|loads| {
            if let Some(l) = loads.get_mut(&call.peer) {
                l.calls = l.calls.saturating_sub(1);
            }
        });
        let answered = call.answered;
        let r = call.r.clone();
        self.cut_announcements(cid);
        self.update_recording(now, cid, Some(RecordingReason::CallEnded));
        self.stats.calls_active = self.stats.calls_active.saturating_sub(1);
        Stats::bump(&mut self.stats.calls, reason.result_label(answered));
        self.emit(Event::CallEnded {
            call: r,
            at: now,
            reason,
            answered,
        });
    }

    pub(super) fn forget_call(&mut self, cid: u64) {
        if let Some(call) = self.calls.remove(&cid) {
            self.call_ids.remove(&call.call_id);
            for s in &call.streams {
                for p in s.ports {
                    self.ports.give(p);
                }
            }
        }
    }

    pub(super) fn update_recording(
        &mut self,
        now: Instant,
        cid: u64,
        ended: Option<RecordingReason>,
    ) {
        let Some(call) = self.calls.get_mut(&cid) else {
            return;
        };
        let want = call.wants_recording();
        let on = want.is_some();
        if on == call.recording {
            return;
        }
        call.recording = on;
        if on {
            self.stats.recordings_active += 1;
            self.stats.recordings_started += 1;
        } else {
            self.stats.recordings_active = self.stats.recordings_active.saturating_sub(1);
        }
        let reason = want.or(ended).unwrap_or(RecordingReason::CallEnded);
        let r = call.r.clone();
        let stopped_by = match &reason {
            RecordingReason::Shortcode {
                extension,
                on: false,
            } => call
                .involved
                .iter()
                .find(|u| &u.extension == extension)
                .map(|u| u.side),
            _ => None,
        };
        let wideband = call.streams.iter().any(Stream::wideband);
        self.emit(Event::Recording {
            call: r,
            at: now,
            on,
            reason,
            wideband,
        });
        self.on_recording_changed(now, cid, on, stopped_by);
    }

    pub(super) fn on_digit(
        &mut self,
        now: Instant,
        cid: u64,
        side: Side,
        digit: char,
        method: DtmfMethod,
    ) {
        Stats::bump(&mut self.stats.dtmf_digits, method.label());
        let Some(call) = self.calls.get_mut(&cid) else {
            return;
        };
        let r = call.r.clone();
        let code = call.matchers[side.index()].key(now, digit);
        // Digits typed into IVRs are PINs and card numbers: they are
        // reported only on calls a policy user may record, and each says
        // whether it belongs to a shortcode (a `*`, or the digit completing
        // one of the call's shortcodes) so the log can mask the others.
        if call.involved.iter().any(|u| u.mode != RecordingMode::Never) {
            let shortcode = digit == '*'
                || code.is_some_and(|c| call.involved.iter().any(|u| u.shortcode == Some(c)));
            self.emit(Event::Dtmf {
                call: r,
                at: now,
                side,
                digit,
                method,
                shortcode,
            });
        }
        let Some(code) = code else { return };
        let Some(call) = self.calls.get_mut(&cid) else {
            return;
        };
        if !call.answered || call.ended.is_some() {
            return;
        }
        // Only the user's own leg toggles: the far end keying the same code is ignored.
        let mut toggled = None;
        for u in call.involved.iter_mut() {
            if u.side == side && u.mode == RecordingMode::OnDemand && u.shortcode == Some(code) {
                u.on = !u.on;
                toggled = Some((u.extension.clone(), u.on));
            }
        }
        let Some((extension, on)) = toggled else {
            return;
        };
        Stats::bump(
            &mut self.stats.recording_toggles,
            if on { "on" } else { "off" },
        );
        let was = call.recording;
        self.update_recording(
            now,
            cid,
            Some(RecordingReason::Shortcode {
                extension: extension.clone(),
                on,
            }),
        );
        // A toggle that does not change the call's state (an Always user is
        // also on it, or another OnDemand user still records) is still reported.
        let Some(call) = self.calls.get(&cid) else {
            return;
        };
        if call.recording == was {
            let r = call.r.clone();
            let recording = call.recording;
            let wideband = call.streams.iter().any(Stream::wideband);
            self.emit(Event::Recording {
                call: r,
                at: now,
                on: recording,
                reason: RecordingReason::Shortcode { extension, on },
                wideband,
            });
        }
    }

    /// Fires a calls' timer.
    pub(super) fn fire_call(&mut self, now: Instant, timer: CallTimer) {
        let t = self.cfg.timers;
        match timer {
            CallTimer::Sweep => {
                self.sweep_armed = false;
                let idle = t.call_idle;
                let mut forget = Vec::new();
                let mut expire = Vec::new();
                for (id, c) in &self.calls {
                    match c.ended {
                        Some(at) if now >= at + CALL_LINGER => forget.push(*id),
                        None if now >= c.last_activity + idle => expire.push(*id),
                        _ => {}
                    }
                }
                for id in expire {
                    self.end_call(now, id, EndReason::Timeout);
                }
                for id in forget {
                    self.forget_call(id);
                }
                if !self.calls.is_empty() || !self.servers.is_empty() {
                    self.ensure_sweep(now);
                }
            }
        }
    }
}
