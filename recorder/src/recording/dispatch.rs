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
#[derive(Debug)]
pub struct EventBuffer {
    lanes: Vec<std::sync::Mutex<Vec<Event>>>,
    closed: AtomicBool,
    finished: AtomicBool,
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

    fn lane(&self, lane: usize) -> std::sync::MutexGuard<'_, Vec<Event>> {
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
        self.lane(lane).push(e);
    }

    /// Adds several events to the first lane.
    pub fn extend(&self, es: impl IntoIterator<Item = Event>) {
        self.lane(0).extend(es);
    }

    /// Everything buffered, lane after lane.
    fn take(&self) -> Vec<Event> {
        let mut all = std::mem::take(&mut *self.lane(0));
        for lane in 1..self.lanes.len() {
            let more = std::mem::take(&mut *self.lane(lane));
            if all.is_empty() {
                all = more;
            } else {
                all.extend(more);
            }
        }
        all
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

/// Routes call events to encoder workers. Lives on its own thread.
pub struct Dispatcher {
    workers: Vec<SyncSender<Job>>,
    pending: Vec<Vec<Job>>,
    calls: HashMap<u64, Pending>,
    shared: Shared,
}

struct Pending {
    meta: CallMeta,
    /// What the call's media did that its recording cannot hold (`fax`),
    /// also before the recording started.
    notes: Vec<&'static str>,
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
            workers,
            calls: HashMap::new(),
            shared,
        })
    }

    /// The handle a config reload writes new recording settings to.
    pub fn settings(&self) -> super::SettingsHandle {
        self.shared.settings.clone()
    }

    fn send(&mut self, worker: usize, job: Job) {
        self.pending[worker].push(job);
    }

    /// Hands each encoder worker what this round gathered for it, in one batch.
    pub(super) fn flush(&mut self) {
        for (worker, jobs) in self.pending.iter_mut().enumerate() {
            if jobs.is_empty() {
                continue;
            }
            let batch = std::mem::take(jobs);
            let n = batch.len() as i64;
            let q = &self.workers[worker];
            // Counted before the send, so a worker never finishes a job the
            // gauge does not hold yet.
            self.shared.metrics.encoder_queue_depth.inc_by(n);
            let sent = match q.try_send(Job::Batch(batch)) {
                Ok(()) => true,
                Err(TrySendError::Full(job)) => {
                    // The encoder is behind: counted and logged, then we wait for
                    // room — the packet path is not waiting on this thread.
                    self.shared.metrics.encoder_overruns.inc();
                    tracing::warn!(worker, "encoder queue full; recording pipeline is behind");
                    q.send(job).is_ok()
                }
                Err(TrySendError::Disconnected(_)) => false,
            };
            if !sent {
                self.shared.metrics.encoder_queue_depth.dec_by(n);
                tracing::error!(worker, "encoder worker is gone");
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
                };
                self.calls.insert(
                    call.id,
                    Pending {
                        meta,
                        notes: Vec::new(),
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
        for e in events.take() {
            also(&e);
            d.handle(e);
        }
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
