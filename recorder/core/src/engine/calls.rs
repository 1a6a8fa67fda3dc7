//! Calls: what users see and what is recorded. A call is one caller's
//! attempt to reach a callee: it spans an INVITE retried after a challenge,
//! a redirect, 422 or 491 (same Call-ID and From tag, a new transaction),
//! and every dialog the request forks into. It knows who is on it (the
//! policy users among caller and callee), which side a request comes from
//! (its tags *and* its source), its answer and end, DTMF shortcodes keyed
//! on a user's own leg, and whether it is recorded now. Ended calls linger
//! a few seconds, then are forgotten with their ports; idle calls are ended.

use std::time::{Duration, Instant};

use crate::config::Transport;

use crate::config::{RecordingMode, Target};
use crate::dtmf::{DtmfMethod, ShortcodeMatcher};
use crate::event::{CallRef, EndReason, Event, InvolvedUser, Party, RecordingReason, Side};
use crate::sip::message::{self, Message};
use crate::stats::Stats;
use earshot_contracts::AnnouncementTarget;
use earshot_contracts::layout::call_hash;

use super::announcing::AnnounceTimer;
use super::dialog::Dialogs;
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
    /// A recording session's 2xx (of a generation), sent again until its ACK.
    SrsOk(u64, u32),
}

pub(super) struct Involved {
    pub(super) extension: String,
    pub(super) display_name: Option<String>,
    pub(super) mode: RecordingMode,
    pub(super) shortcode: Option<u8>,
    pub(super) side: Side,
    pub(super) on: bool,
    /// When this user last toggled recording (toggles are rate-limited).
    pub(super) toggled_at: Option<Instant>,
}

/// The policy users on a call, as events name them.
pub(super) fn users_of(involved: &[Involved]) -> Vec<InvolvedUser> {
    involved
        .iter()
        .map(|u| InvolvedUser {
            extension: u.extension.clone(),
            display_name: u.display_name.clone(),
            mode: u.mode,
            side: u.side,
        })
        .collect()
}

impl Involved {
    /// A policy user found on a call, on `side`, not recording yet.
    pub(super) fn new(extension: String, user: &crate::config::EffectiveUser, side: Side) -> Self {
        Involved {
            extension,
            display_name: user.display_name.clone(),
            mode: user.mode,
            shortcode: user.shortcode,
            side,
            on: false,
            toggled_at: None,
        }
    }
}

/// Shortest time between two toggles of one user: a shortcode keyed faster
/// is a machine, and each toggle costs a pause in the recording.
const TOGGLE_EVERY: Duration = Duration::from_secs(1);

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
    /// The dialogs the INVITE created (several when it forked).
    pub(super) dialogs: Dialogs,
    /// The INVITE got a final failure the caller may answer with a new
    /// INVITE (a challenge, a redirect, 422, 491): the call waits for it.
    pub(super) retry: Option<Retry>,
    /// What the recording was said not to hold (a fax, encrypted media):
    /// each said once.
    pub(super) notes: Vec<crate::event::MediaNote>,
    /// A SIPREC recording session (answered here, nothing relayed).
    pub(super) srs: Option<Box<super::srs::SrsState>>,
}

/// A call waiting for its caller to retry a refused INVITE.
#[derive(Debug, Clone, Copy)]
pub(super) struct Retry {
    /// The refusal.
    pub(super) code: u16,
    /// When it came.
    pub(super) since: Instant,
}

/// Final answers to an INVITE that a caller answers with a new INVITE in
/// the same call: credentials (401, 407), a new target (3xx), a longer
/// session interval (422), after a pause (491), a security agreement (494),
/// or without an extension (420, 421).
pub(super) fn is_retryable(code: u16) -> bool {
    matches!(code, 300..=399 | 401 | 407 | 420 | 421 | 422 | 491 | 494)
}

/// Why a request does not fit the call its Call-ID names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Misfit {
    /// Its tags name no dialog of the call.
    UnknownDialog,
    /// Its tags claim one side, it came from the other side's leg (or from
    /// neither): a party trying to steer the other's media or shortcode.
    OtherLeg,
}

impl Call {
    /// A call just started from `source` (the caller's leg), nothing
    /// answered, negotiated or recorded yet.
    pub(super) fn new(
        r: CallRef,
        call_id: &str,
        caller_tag: Option<String>,
        involved: Vec<Involved>,
        now: Instant,
        peer: &str,
        source: Target,
    ) -> Call {
        Call {
            r,
            call_id: call_id.to_owned(),
            caller_tag,
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
            dialogs: Dialogs::default(),
            retry: None,
            notes: Vec::new(),
            srs: None,
        }
    }

    /// Whether a request from `source` really comes from the `side` leg:
    /// the caller's requests come from where its INVITE came from, the
    /// callee's from where the INVITE went. When both legs share an
    /// address (a PBX calling itself through the recorder) the ports tell
    /// them apart over UDP; where even those agree, only the tags can.
    pub(super) fn leg_is(&self, side: Side, source: Target) -> bool {
        let leg = match side {
            Side::Caller => Some(self.caller_from),
            Side::Callee => self.callee_at,
        };
        let Some(leg) = leg else {
            return false;
        };
        if leg.addr.ip() != source.addr.ip() {
            return false;
        }
        let shared = self
            .callee_at
            .is_some_and(|c| c.addr.ip() == self.caller_from.addr.ip());
        let by_port = shared
            && self.callee_at.map(|c| c.addr) != Some(self.caller_from.addr)
            && leg.transport == Transport::Udp
            && source.transport == Transport::Udp;
        !by_port || leg.addr.port() == source.addr.port()
    }

    /// The side a request of this call comes from: the side its tags claim
    /// (the caller's tag in From, or in To), which must be the leg it came
    /// from. A request without a To tag is the caller's (its INVITE, or
    /// one retried).
    pub(super) fn side_of(&self, msg: &Message, source: Target) -> Result<Side, Misfit> {
        let (from, to) = (msg.from_tag(), msg.to_tag());
        let claimed = match (&self.caller_tag, from.as_deref(), to.as_deref()) {
            (_, _, None) => Side::Caller,
            (Some(c), Some(f), _) if c == f => Side::Caller,
            (Some(c), _, Some(t)) if c == t => Side::Callee,
            (Some(_), _, _) => return Err(Misfit::UnknownDialog),
            // A caller without a tag (RFC 2543): only the source can tell.
            (None, _, _) => {
                return if self.leg_is(Side::Caller, source) {
                    Ok(Side::Caller)
                } else if self.leg_is(Side::Callee, source) {
                    Ok(Side::Callee)
                } else {
                    Err(Misfit::OtherLeg)
                };
            }
        };
        if self.leg_is(claimed, source) {
            Ok(claimed)
        } else {
            Err(Misfit::OtherLeg)
        }
    }

    /// The callee side's tag of the dialog an in-dialog request belongs to.
    pub(super) fn dialog_tag(msg: &Message, side: Side) -> Option<String> {
        match side {
            Side::Caller => msg.to_tag(),
            Side::Callee => msg.from_tag(),
        }
    }

    pub(super) fn wants_recording(&self) -> Option<RecordingReason> {
        if !self.answered || self.ended.is_some() || self.srs.as_ref().is_some_and(|s| s.paused()) {
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

    /// The first final answer to a call's INVITE (`initial`: the one that
    /// set the call up, not a re-INVITE). A 2xx answers the call through
    /// the dialog of its To tag; a failure the caller may retry leaves the
    /// call waiting for the new INVITE; any other failure ends it.
    pub(super) fn on_final(
        &mut self,
        now: Instant,
        cid: u64,
        initial: bool,
        code: u16,
        msg: &Message,
    ) {
        let Some(call) = self.calls.get_mut(&cid) else {
            return;
        };
        if !initial || call.ended.is_some() {
            return;
        }
        if (200..300).contains(&code) {
            if let Some(tag) = msg.to_tag()
                && let Some(sdp) = call.dialogs.answered_by(&tag)
            {
                // Early media came from another fork: the leg follows the
                // dialog that answered.
                self.follow_sdp(cid, Side::Callee, &sdp);
            }
            let Some(call) = self.calls.get_mut(&cid) else {
                return;
            };
            if call.answered {
                return;
            }
            call.answered = true;
            let r = call.r.clone();
            self.emit(Event::CallAnswered { call: r, at: now });
            self.update_recording(now, cid, None);
            return;
        }
        if code < 300 || call.answered {
            return;
        }
        call.dialogs.end_early();
        let cancelled = self
            .clients
            .values()
            .any(|c| c.call == Some(cid) && c.cancelled);
        let reason = if code == 487 || cancelled {
            EndReason::Cancelled
        } else if code == 408 {
            EndReason::Timeout
        } else if is_retryable(code) {
            // The caller answers a challenge, redirect, 422 or 491 with a
            // new INVITE in the same call: keep the call (and its ports)
            // for it. The sweep ends it if none comes.
            Stats::bump(&mut self.stats.invite_retries, ("awaited", code));
            call.retry = Some(Retry { code, since: now });
            return;
        } else {
            EndReason::Rejected(code)
        };
        self.end_call(now, cid, reason);
    }

    /// A fax (T.38) was negotiated in the call: relayed, not recorded; the
    /// recording says so (once).
    pub(super) fn note_fax(&mut self, now: Instant, cid: u64) {
        self.note_media(now, cid, crate::event::MediaNote::Fax);
    }

    /// Media the recording cannot hold: the recording says so, once per
    /// kind of note.
    pub(super) fn note_media(&mut self, now: Instant, cid: u64, note: crate::event::MediaNote) {
        let Some(call) = self.calls.get_mut(&cid) else {
            return;
        };
        if call.notes.contains(&note) {
            return;
        }
        call.notes.push(note);
        let r = call.r.clone();
        self.emit(Event::MediaNote {
            call: r,
            at: now,
            note,
        });
    }

    /// A caller's new INVITE in a call waiting for one: the call goes on.
    pub(super) fn resume_call(&mut self, now: Instant, cid: u64) {
        let Some(call) = self.calls.get_mut(&cid) else {
            return;
        };
        if let Some(r) = call.retry.take() {
            Stats::bump(&mut self.stats.invite_retries, ("retried", r.code));
        }
        call.last_activity = now;
    }

    /// A dialog hung up (BYE from either side). The call ends with its
    /// last confirmed dialog; until then the media leg moves to one still up.
    pub(super) fn hang_up(&mut self, now: Instant, cid: u64, tag: Option<&str>, side: Side) {
        let Some(call) = self.calls.get_mut(&cid) else {
            return;
        };
        let tracked = tag.is_some_and(|t| call.dialogs.knows(t));
        if tracked {
            if let Some(sdp) = tag.and_then(|t| call.dialogs.hang_up(t)) {
                self.follow_sdp(cid, Side::Callee, &sdp);
            }
            let Some(call) = self.calls.get(&cid) else {
                return;
            };
            if call.dialogs.confirmed() > 0 {
                return;
            }
        }
        // The last dialog, or one the call never saw a response for (its
        // tag unknown: the call cannot tell what else is up).
        self.end_call(now, cid, EndReason::Bye(side));
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
                    involved.push(Involved::new(ext, user, side));
                }
            }
        }
        let r = CallRef {
            id,
            hash: call_hash(call_id),
        };
        let users = users_of(&involved);
        self.register_call(Call::new(
            r.clone(),
            call_id,
            msg.from_tag(),
            involved,
            now,
            peer,
            source,
        ));
        // An attended transfer's INVITE names the call it replaces.
        let replaces = msg
            .header("Replaces")
            .and_then(|v| v.split(';').next().map(|id| id.trim().to_owned()))
            .filter(|id| !id.is_empty())
            .map(|id| call_hash(&id));
        self.emit(Event::CallStarted {
            call: r,
            at: now,
            caller,
            callee,
            users,
            replaces,
        });
        id
    }

    /// A new call (or recording session) in the tables, counted for its peer.
    pub(super) fn register_call(&mut self, call: Call) {
        self.loads
            .with(|l| l.entry(call.peer.clone()).or_default().calls += 1);
        self.call_ids.insert(call.call_id.clone(), call.r.id);
        self.stats.calls_active += 1;
        self.calls.insert(call.r.id, call);
    }

    pub(super) fn end_call(&mut self, now: Instant, cid: u64, reason: EndReason) {
        let Some(call) = self.calls.get_mut(&cid) else {
            return;
        };
        if call.ended.is_some() {
            return;
        }
        call.ended = Some(now);
        // A recording session we end ourselves: the SRC is told.
        if call.srs.is_some() && !matches!(reason, EndReason::Bye(_)) {
            self.srs_bye(cid);
        }
        let Some(call) = self.calls.get_mut(&cid) else {
            return;
        };
        self.loads.with(|loads| {
            if let Some(l) = loads.get_mut(&call.peer) {
                l.calls = l.calls.saturating_sub(1);
            }
        });
        let answered = call.answered;
        let r = call.r.clone();
        self.cut_announcements(cid);
        self.kernel_forget(cid);
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
        // Nothing of the call stays in the kernel once its ports are free.
        self.kernel_forget(cid);
        if let Some(call) = self.calls.remove(&cid) {
            // A new call may have taken the Call-ID since (a caller trying
            // again after this one ended): its entry stays.
            if self.call_ids.get(&call.call_id) == Some(&cid) {
                self.call_ids.remove(&call.call_id);
            }
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
        let mut limited = false;
        for u in call.involved.iter_mut() {
            if u.side == side && u.mode == RecordingMode::OnDemand && u.shortcode == Some(code) {
                if u.toggled_at
                    .is_some_and(|t| now.saturating_duration_since(t) < TOGGLE_EVERY)
                {
                    limited = true;
                    continue;
                }
                u.toggled_at = Some(now);
                u.on = !u.on;
                toggled = Some((u.extension.clone(), u.on));
            }
        }
        if limited {
            Stats::bump(&mut self.stats.recording_toggles, "rate_limited");
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
            CallTimer::SrsOk(cid, generation) => self.srs_resend(now, cid, generation),
            CallTimer::Sweep => {
                self.sweep_armed = false;
                let idle = t.call_idle;
                let mut forget = Vec::new();
                let mut expire = Vec::new();
                let mut unretried = Vec::new();
                let retry_window = t.transaction_timeout();
                for (id, c) in &self.calls {
                    match (c.ended, c.retry) {
                        (Some(at), _) if now >= at + CALL_LINGER => forget.push(*id),
                        (None, Some(r)) if now >= r.since + retry_window => {
                            unretried.push((*id, r))
                        }
                        (None, _) if now >= c.last_activity + idle => expire.push(*id),
                        _ => {}
                    }
                }
                for id in expire {
                    self.end_call(now, id, EndReason::Timeout);
                }
                for (id, r) in unretried {
                    // Ended when it was refused: that is when the caller gave up.
                    self.end_call(r.since, id, EndReason::Rejected(r.code));
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
