//! The dispatcher: the core's events, gathered without waking anyone on the
//! packet path, routed call by call to the encoder workers in one batch per
//! round. It decides which calls become recordings (a policy user on the
//! call, recording switched on, a spool that takes new recordings) and
//! keeps the counts the alerts compare: expected, refused.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::time::{Duration, Instant};

use earshot_contracts::sidecar::{Party, User};
use earshot_recorder_core::Event;

use super::Shared;
use super::sidecar::{Announced, CallMeta};
use super::worker::{self, Job};

/// Core events on their way to the dispatcher. The packet path appends under
/// a short lock; the dispatcher takes the whole batch every 20 ms, so no
/// thread is woken per packet (a third of the recorder's CPU went to such
/// wake-ups before). One lane per shard: shards never wait on each other's
/// lock, and a call's events, all from one shard, stay in order.
///
/// Each lane holds at most [`LANE_MEDIA_MAX`] media frames: past that (the
/// dispatcher thread starved of CPU) frames are dropped from their own
/// recordings, counted and marked `behind`; call events are never dropped.
#[derive(Debug)]
pub struct EventBuffer {
    lanes: Vec<std::sync::Mutex<Lane>>,
    closed: AtomicBool,
    finished: AtomicBool,
}

/// Media frames one lane holds between two dispatch rounds (20 ms apart):
/// two seconds of 1000 recorded calls.
pub const LANE_MEDIA_MAX: usize = 100_000;

#[derive(Debug, Default)]
struct Lane {
    events: Vec<Event>,
    media: usize,
    /// Frames dropped since the last round, and the calls they belonged to.
    dropped: u64,
    dropped_calls: std::collections::HashSet<u64>,
}

impl Default for EventBuffer {
    fn default() -> Self {
        Self::new(1)
    }
}

impl EventBuffer {
    /// A buffer with `lanes` lanes (at least one).
    pub fn new(lanes: usize) -> Self {
        Self {
            lanes: (0..lanes.max(1)).map(|_| Default::default()).collect(),
            closed: AtomicBool::new(false),
            finished: AtomicBool::new(false),
        }
    }

    fn lane(&self, lane: usize) -> std::sync::MutexGuard<'_, Lane> {
        self.lanes[lane % self.lanes.len()]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Adds an event to the first lane.
    pub fn push(&self, e: Event) {
        self.push_to(0, e);
    }

    /// Adds an event to a shard's lane.
    pub fn push_to(&self, lane: usize, e: Event) {
        let mut lane = self.lane(lane);
        if let Event::Media(f) = &e {
            if lane.media >= LANE_MEDIA_MAX {
                lane.dropped += 1;
                // A set: this runs per dropped frame, while the lane is full.
                if lane.dropped_calls.len() < 4096 {
                    lane.dropped_calls.insert(f.call.id);
                }
                return;
            }
            lane.media += 1;
        }
        lane.events.push(e);
    }

    /// Adds several events to the first lane.
    pub fn extend(&self, es: impl IntoIterator<Item = Event>) {
        for e in es {
            self.push_to(0, e);
        }
    }

    /// Everything buffered, lane after lane, and the frames dropped since
    /// the last time with the calls they belonged to.
    fn take(&self) -> (Vec<Event>, u64, Vec<u64>) {
        let (mut all, mut dropped, mut calls) = (Vec::new(), 0, Vec::new());
        for lane in 0..self.lanes.len() {
            let mut l = self.lane(lane);
            let more = std::mem::take(&mut l.events);
            l.media = 0;
            dropped += std::mem::take(&mut l.dropped);
            calls.extend(l.dropped_calls.drain());
            drop(l);
            if all.is_empty() {
                all = more;
            } else {
                all.extend(more);
            }
        }
        calls.sort_unstable();
        (all, dropped, calls)
    }

    /// No more events will come; the dispatcher finishes what it has and stops.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
    }

    /// True once the dispatcher has handed its last jobs to the encoders.
    pub fn finished(&self) -> bool {
        self.finished.load(Ordering::Relaxed)
    }
}

/// How often the dispatcher takes the buffered events.
const DISPATCH_EVERY: Duration = Duration::from_millis(20);
/// How often workers are told to write out what the reorder window released.
const TICK_EVERY: Duration = Duration::from_secs(1);
/// Dispatch rounds a worker's queue holds: five seconds of calls.
const QUEUE_ROUNDS: usize = 256;
/// Media frames held for one worker whose queue is full before the oldest
/// are dropped from their recordings: about two seconds of 100 calls.
const HELD_MEDIA_MAX: usize = 10_000;
/// How long the pipeline may hold frames back before the recorder stops
/// reporting itself ready.
pub const BEHIND_UNREADY: Duration = Duration::from_secs(3);

/// Since when the recording pipeline has been holding frames back because
/// an encoder worker's queue is full: shared with `/readyz`.
#[derive(Debug, Clone)]
pub struct Backlog {
    epoch: Instant,
    /// Milliseconds since `epoch` + 1 when the backlog began; 0: none.
    since: Arc<std::sync::atomic::AtomicU64>,
}

impl Default for Backlog {
    fn default() -> Self {
        Self {
            epoch: Instant::now(),
            since: Default::default(),
        }
    }
}

impl Backlog {
    fn set(&self, behind: bool, now: Instant) {
        if !behind {
            self.since.store(0, Ordering::Relaxed);
        } else if self.since.load(Ordering::Relaxed) == 0 {
            let ms = now.saturating_duration_since(self.epoch).as_millis();
            self.since.store(
                u64::try_from(ms).unwrap_or(u64::MAX - 1) + 1,
                Ordering::Relaxed,
            );
        }
    }

    /// How long the pipeline has been behind, if it is.
    pub fn behind_for(&self, now: Instant) -> Option<Duration> {
        match self.since.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(now.saturating_duration_since(self.epoch + Duration::from_millis(ms - 1))),
        }
    }
}

/// Routes call events to encoder workers. Lives on its own thread.
pub struct Dispatcher {
    workers: Vec<SyncSender<Job>>,
    pending: Vec<Vec<Job>>,
    /// Jobs a worker's full queue could not take, tried again next round:
    /// the dispatcher never waits on a worker, so a slow encoder delays its
    /// own calls' audio and never the event lanes or other workers.
    held: Vec<Vec<Job>>,
    calls: HashMap<u64, Pending>,
    shared: Shared,
    backlog: Backlog,
}

struct Pending {
    meta: CallMeta,
    /// What the call's media did that its recording cannot hold (`fax`),
    /// also before the recording started.
    notes: Vec<&'static str>,
    /// Its recording was told it lost frames (told once: while a worker
    /// stays behind, shedding runs every round).
    behind: bool,
    recording: bool,
    refused: bool,
    worker: usize,
}

impl Dispatcher {
    /// Starts `threads` encoder workers.
    pub fn start(shared: Shared, threads: usize) -> std::io::Result<Dispatcher> {
        let mut workers = Vec::new();
        for i in 0..threads {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(QUEUE_ROUNDS);
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("encoder-{i}"))
                .spawn(move || worker::run(rx, shared))?;
            workers.push(tx);
        }
        Ok(Dispatcher {
            pending: workers.iter().map(|_| Vec::new()).collect(),
            held: workers.iter().map(|_| Vec::new()).collect(),
            workers,
            calls: HashMap::new(),
            shared,
            backlog: Backlog::default(),
        })
    }

    /// Jobs other than media held for the workers (tests: they stay few
    /// however long a worker is behind).
    #[cfg(test)]
    pub(super) fn held_control_jobs(&self) -> usize {
        self.held
            .iter()
            .flatten()
            .filter(|j| !matches!(j, Job::Media(_)))
            .count()
    }

    /// The handle `/readyz` reads to see whether the pipeline is behind.
    pub fn backlog(&self) -> Backlog {
        self.backlog.clone()
    }

    /// The handle a config reload writes new recording settings to.
    pub fn settings(&self) -> super::SettingsHandle {
        self.shared.settings.clone()
    }

    fn send(&mut self, worker: usize, job: Job) {
        self.pending[worker].push(job);
    }

    /// Hands each encoder worker what this round gathered for it, in one
    /// batch, after what an earlier round could not hand over. A worker
    /// whose queue is full keeps its jobs here for the next round; past
    /// [`HELD_MEDIA_MAX`] frames the oldest media is dropped from the
    /// recordings it belongs to (each marked incomplete, `behind`), never a
    /// call's start, toggles or end.
    pub(super) fn flush(&mut self) {
        let now = Instant::now();
        let mut behind = false;
        for worker in 0..self.workers.len() {
            let mut batch = std::mem::take(&mut self.held[worker]);
            batch.append(&mut self.pending[worker]);
            if batch.is_empty() {
                continue;
            }
            let n = batch.len() as i64;
            // Counted before the send, so a worker never finishes a job the
            // gauge does not hold yet.
            self.shared.metrics.encoder_queue_depth.inc_by(n);
            match self.workers[worker].try_send(Job::Batch(batch)) {
                Ok(()) => {}
                Err(TrySendError::Full(Job::Batch(batch))) => {
                    self.shared.metrics.encoder_queue_depth.dec_by(n);
                    self.shared.metrics.encoder_overruns.inc();
                    if self.backlog.behind_for(now).is_none() {
                        tracing::warn!(worker, "encoder queue full; recording pipeline is behind");
                    }
                    self.held[worker] = batch;
                    self.shed(worker);
                    behind = true;
                }
                Err(TrySendError::Full(_)) => {}
                Err(TrySendError::Disconnected(_)) => {
                    self.shared.metrics.encoder_queue_depth.dec_by(n);
                    tracing::error!(worker, "encoder worker is gone");
                }
            }
        }
        self.backlog.set(behind, now);
    }

    /// Frames the event lanes could not hold: counted, and each recording
    /// they belonged to marked `behind`.
    fn lost_in_lanes(&mut self, dropped: u64, calls: &[u64]) {
        if dropped == 0 {
            return;
        }
        self.shared.metrics.frames_shed.inc_by(dropped);
        for &call in calls {
            if let Some(p) = self.calls.get_mut(&call)
                && p.recording
                && !p.refused
                && !p.behind
            {
                p.behind = true;
                let worker = p.worker;
                self.send(
                    worker,
                    Job::Note {
                        call,
                        note: "behind",
                    },
                );
            }
        }
    }

    /// Drops the oldest media a worker holds beyond [`HELD_MEDIA_MAX`],
    /// counted, and tells each recording it came from that it lost audio.
    fn shed(&mut self, worker: usize) {
        let held = &mut self.held[worker];
        let media = held.iter().filter(|j| matches!(j, Job::Media(_))).count();
        let Some(mut excess) = media.checked_sub(HELD_MEDIA_MAX).filter(|&e| e > 0) else {
            return;
        };
        let mut lost = std::collections::BTreeSet::new();
        held.retain(|j| match j {
            Job::Media(f) if excess > 0 => {
                excess -= 1;
                lost.insert(f.call.id);
                false
            }
            _ => true,
        });
        let dropped = media - HELD_MEDIA_MAX;
        self.shared.metrics.frames_shed.inc_by(dropped as u64);
        for call in lost {
            // Each recording is told once, so the held jobs other than
            // media stay bounded however long the worker stays behind.
            if let Some(p) = self.calls.get_mut(&call)
                && !p.behind
            {
                p.behind = true;
                self.held[worker].push(Job::Note {
                    call,
                    note: "behind",
                });
            }
        }
    }

    fn refused(&self) {
        self.shared
            .metrics
            .recordings
            .get_or_create(&vec![("result", "failed".to_owned())])
            .inc();
    }

    /// Feeds one core event.
    pub fn handle(&mut self, event: Event) {
        match event {
            Event::CallStarted {
                call,
                at,
                caller,
                callee,
                users,
                replaces,
            } => {
                if users.is_empty() {
                    return;
                }
                let worker = (call.id as usize) % self.workers.len();
                let party = |p: earshot_recorder_core::Party| Party {
                    number: p.number,
                    display_name: p.display_name,
                };
                let meta = CallMeta {
                    call: call.hash.clone(),
                    caller: party(caller),
                    callee: party(callee),
                    users: users
                        .into_iter()
                        .map(|u| User {
                            extension: u.extension,
                            display_name: u.display_name,
                            mode: u.mode,
                            side: u.side,
                        })
                        .collect(),
                    started_at: Some(self.shared.clock.system(at)),
                    answered_at: None,
                    recording_started_at: None,
                    replaces,
                    siprec: None,
                };
                self.calls.insert(
                    call.id,
                    Pending {
                        meta,
                        notes: Vec::new(),
                        behind: false,
                        recording: false,
                        refused: false,
                        worker,
                    },
                );
            }
            Event::CallAnswered { call, at } => {
                if let Some(p) = self.calls.get_mut(&call.id) {
                    p.meta.answered_at = Some(self.shared.clock.system(at));
                }
            }
            Event::Recording {
                call,
                at,
                on,
                wideband,
                ..
            } => {
                // Its limit reached, or it cannot be read or written.
                let refusal = self.shared.spool.refusal();
                let Some(p) = self.calls.get_mut(&call.id) else {
                    return;
                };
                if p.refused {
                    return;
                }
                if on && !p.recording {
                    p.recording = true;
                    self.shared.metrics.expected.inc();
                    if let Some(why) = refusal {
                        p.refused = true;
                        self.refused();
                        if self.shared.spool.trouble().is_some() {
                            tracing::error!(call = %call.hash, reason = %why, "spool cannot be written: recording refused, the call is relayed (nothing old is deleted; check the spool volume)");
                        } else {
                            tracing::error!(call = %call.hash, reason = %why, "spool is full: recording refused, the call is relayed (nothing old is deleted; check uploads)");
                        }
                        return;
                    }
                    let (worker, meta) = (p.worker, p.meta.clone());
                    let notes = p.notes.clone();
                    self.send(
                        worker,
                        Job::Start {
                            call: call.id,
                            meta,
                            at,
                            wideband,
                        },
                    );
                    for note in notes {
                        self.send(
                            worker,
                            Job::Note {
                                call: call.id,
                                note,
                            },
                        );
                    }
                } else if p.recording {
                    let worker = p.worker;
                    self.send(
                        worker,
                        Job::Toggle {
                            call: call.id,
                            at,
                            on,
                        },
                    );
                }
            }
            Event::Media(frame) => {
                if let Some(p) = self.calls.get(&frame.call.id)
                    && p.recording
                    && !p.refused
                {
                    let worker = p.worker;
                    self.send(worker, Job::Media(frame));
                }
            }
            Event::CallEnded { call, at, .. } => {
                if let Some(p) = self.calls.remove(&call.id)
                    && p.recording
                    && !p.refused
                {
                    self.send(p.worker, Job::End { call: call.id, at });
                }
            }
            Event::Announcement {
                call,
                at,
                kind,
                to,
                outcome,
                played,
            } => {
                if let Some(p) = self.calls.get(&call.id)
                    && p.recording
                    && !p.refused
                {
                    let record = Announced {
                        at: self.shared.clock.system(at),
                        kind: kind.label(),
                        to,
                        result: outcome.label(),
                        played,
                    };
                    let worker = p.worker;
                    self.send(
                        worker,
                        Job::Announced {
                            call: call.id,
                            record,
                        },
                    );
                }
            }
            Event::Siprec { call, session, .. } => {
                if let Some(p) = self.calls.get_mut(&call.id) {
                    p.meta.siprec = Some(Box::new(session.clone()));
                    if p.recording && !p.refused {
                        let worker = p.worker;
                        self.send(
                            worker,
                            Job::Siprec {
                                call: call.id,
                                session,
                            },
                        );
                    }
                }
            }
            Event::MediaNote { call, note, .. } => {
                let note = note.label();
                if let Some(p) = self.calls.get_mut(&call.id)
                    && !p.notes.contains(&note)
                {
                    p.notes.push(note);
                    if p.recording && !p.refused {
                        let worker = p.worker;
                        self.send(
                            worker,
                            Job::Note {
                                call: call.id,
                                note,
                            },
                        );
                    }
                }
            }
            Event::Dtmf { .. } | Event::Transfer { .. } => {}
        }
    }

    /// Lets workers write out what is older than the reorder window.
    pub fn tick(&mut self, now: Instant) {
        for w in 0..self.workers.len() {
            self.send(w, Job::Tick(now));
        }
    }

    /// Ends every recording still open (shutdown), so its file is complete.
    fn end_all(&mut self, now: Instant) {
        let open: Vec<(u64, usize)> = self
            .calls
            .iter()
            .filter(|(_, p)| p.recording && !p.refused)
            .map(|(&call, p)| (call, p.worker))
            .collect();
        for (call, worker) in open {
            self.send(worker, Job::End { call, at: now });
        }
    }
}

/// Runs the dispatcher: events from the core every round, a tick every
/// second, until the buffer is closed; then ends what is open.
pub fn run_dispatcher(mut d: Dispatcher, events: Arc<EventBuffer>, mut also: impl FnMut(&Event)) {
    let mut last_tick = Instant::now();
    loop {
        std::thread::sleep(DISPATCH_EVERY);
        let closed = events.closed.load(Ordering::Relaxed);
        let (batch, dropped, calls) = events.take();
        for e in batch {
            also(&e);
            d.handle(e);
        }
        d.lost_in_lanes(dropped, &calls);
        if last_tick.elapsed() >= TICK_EVERY {
            last_tick = Instant::now();
            d.tick(last_tick);
        }
        d.flush();
        if closed {
            break;
        }
    }
    d.end_all(Instant::now());
    d.flush();
    events.finished.store(true, Ordering::Relaxed);
}

#[cfg(test)]
mod lane_tests {
    use super::*;
    use earshot_recorder_core::{CallRef, MediaFrame, Side};

    fn frame(call: u64) -> Event {
        Event::Media(MediaFrame {
            call: CallRef {
                id: call,
                hash: String::new(),
            },
            at: Instant::now(),
            side: Side::Caller,
            stream: 0,
            ssrc: 1,
            seq: 0,
            timestamp: 0,
            payload_type: 0,
            codec: None,
            clock_rate: 8000,
            payload: Vec::new(),
        })
    }

    #[test]
    fn a_lane_holds_a_bounded_number_of_frames_and_every_call_event() {
        let buf = EventBuffer::new(2);
        for _ in 0..LANE_MEDIA_MAX + 10 {
            buf.push_to(1, frame(5));
        }
        buf.push_to(1, frame(6));
        let end = Event::CallEnded {
            call: CallRef {
                id: 5,
                hash: String::new(),
            },
            at: Instant::now(),
            reason: earshot_recorder_core::EndReason::Timeout,
            answered: true,
        };
        buf.push_to(1, end.clone());
        let (events, dropped, calls) = buf.take();
        assert_eq!(events.len(), LANE_MEDIA_MAX + 1);
        assert_eq!(events.last(), Some(&end), "call events are never dropped");
        assert_eq!((dropped, calls), (11, vec![5, 6]));
        // The next round starts empty.
        buf.push_to(1, frame(5));
        assert_eq!(buf.take().0.len(), 1);
    }
}
