//! Shards: the media path split across threads. Each shard owns the calls
//! whose Call-ID hashes to it and every N-th RTP port pair, with its own
//! instance of the sans-IO core, on its own thread and runtime. SIP comes
//! to it through its inbox (the listeners route by Call-ID); RTP arrives on
//! its own sockets. Nothing on the packet path is locked by two shards: a
//! shard that is slow or stuck delays only its own calls.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use earshot_recorder_core::{CoreConfig, Output, Recorder, Target};
use tokio::sync::{Notify, mpsc};

use super::{Shared, lock};

/// SIP messages and commands a shard's inbox holds before the listeners
/// drop what comes for it (`sip_dropped{reason="shard_busy"}`): SIP over
/// UDP is retransmitted, so a stuck shard sheds load instead of holding
/// memory without bound.
pub(super) const INBOX: usize = 1024;

/// A shard stalls readiness when its timer round is this late.
pub(super) const STALLED_AFTER: Duration = Duration::from_secs(2);

/// What reaches a shard from outside its own sockets.
pub(super) enum Input {
    /// A SIP message from a listener; `done` is told once the core has
    /// taken it and what it answered is queued (a TCP connection closed
    /// after unframeable data waits for its 400).
    Sip {
        target: Target,
        data: Vec<u8>,
        done: Option<tokio::sync::oneshot::Sender<()>>,
        /// Handed over by another shard that had no ports for the call.
        diverted: bool,
    },
    /// A reloaded config for new calls.
    Config(Box<CoreConfig>),
    /// Refuse new calls (shutdown).
    Drain,
}

/// What the other threads see of a shard.
pub(super) struct Shard {
    pub(super) index: usize,
    /// The shard's core. Its own thread takes it for every input; the
    /// metrics endpoint takes it for a copy of the counters.
    pub(super) core: Mutex<Recorder>,
    pub(super) inbox: mpsc::Sender<Input>,
    /// When the shard last ran its timer round, in ms since `Shared::epoch`.
    heartbeat: AtomicU64,
    /// Calls in progress, as of the shard's last SIP message or timer round.
    active: AtomicUsize,
    /// Port pairs free, as of then.
    free_pairs: AtomicUsize,
}

impl Shard {
    pub(super) fn new(index: usize, core: Recorder) -> (Self, mpsc::Receiver<Input>) {
        let (tx, rx) = mpsc::channel(INBOX);
        let core_free = core.free_port_pairs();
        let shard = Self {
            index,
            core: Mutex::new(core),
            inbox: tx,
            heartbeat: AtomicU64::new(0),
            active: AtomicUsize::new(0),
            free_pairs: AtomicUsize::new(core_free),
        };
        (shard, rx)
    }

    /// Port pairs this shard has free for new calls.
    pub(super) fn free_pairs(&self) -> usize {
        self.free_pairs.load(Ordering::Relaxed)
    }

    /// Calls in progress on this shard.
    pub(super) fn active_calls(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// How long ago the shard last ran its timer round.
    pub(super) fn since_heartbeat(&self, epoch: Instant) -> Duration {
        let beat = Duration::from_millis(self.heartbeat.load(Ordering::Relaxed));
        epoch.elapsed().saturating_sub(beat)
    }
}

/// A shard's own half: everything only its thread touches.
pub(super) struct ShardRun {
    pub(super) shared: Arc<Shared>,
    pub(super) shard: Arc<Shard>,
    /// Its RTP/RTCP sockets by `port - rtp_base`; other shards' are `None`.
    pub(super) rtp: Vec<Option<Arc<super::rtp::RtpSocket>>>,
    pub(super) rtp_base: u16,
    timer_wake: Notify,
}

/// A shard ready to start: its runtime (its sockets registered with it) and inbox.
pub(super) struct ShardParts {
    pub(super) runtime: tokio::runtime::Runtime,
    pub(super) rtp: Vec<Option<Arc<super::rtp::RtpSocket>>>,
    pub(super) inbox: mpsc::Receiver<Input>,
}

fn drain_outputs(rec: &mut Recorder, out: &mut Vec<Output>) {
    loop {
        match rec.poll_output() {
            Output::Timeout(_) => return,
            o => out.push(o),
        }
    }
}

impl ShardRun {
    /// Starts the shard's thread: its RTP sockets, timers and inbox.
    pub(super) fn start(
        shared: Arc<Shared>,
        shard: Arc<Shard>,
        parts: ShardParts,
        rtp_base: u16,
    ) -> std::io::Result<()> {
        let ShardParts {
            runtime,
            rtp,
            inbox,
        } = parts;
        let run = Arc::new(ShardRun {
            shared,
            shard,
            rtp,
            rtp_base,
            timer_wake: Notify::new(),
        });
        std::thread::Builder::new()
            .name(format!("shard-{}", run.shard.index))
            .spawn(move || {
                let local = tokio::task::LocalSet::new();
                runtime.block_on(local.run_until(async move {
                    super::rtp::spawn_relays(&run);
                    if let Some(ring) = run.shared.fastpath.take_ring(run.shard.index) {
                        tokio::task::spawn_local(run.clone().copy_loop(ring));
                    }
                    tokio::spawn(run.clone().timer_loop());
                    run.inbox_loop(inbox).await;
                }))
            })?;
        Ok(())
    }

    /// Runs `f` on the shard's core, then carries out what it produced.
    pub(super) fn with_core<R>(&self, f: impl FnOnce(&mut Recorder) -> R) -> R {
        let mut f = Some(f);
        let mut r = None;
        self.run_core(&mut |rec| r = f.take().map(|f| f(rec)));
        r.expect("run_core calls its function once")
    }

    /// [`with_core`](Self::with_core), not generic (it calls itself).
    fn run_core(&self, f: &mut dyn FnMut(&mut Recorder)) {
        let mut outs = Vec::new();
        let mut lost_copies = Vec::new();
        let sooner = {
            let mut rec = lock(&self.shard.core);
            let before = rec.next_timeout();
            f(&mut rec);
            let after = rec.next_timeout();
            drain_outputs(&mut rec, &mut outs);
            after.is_some_and(|a| before.is_none_or(|b| a < b))
        };
        if sooner {
            // A timer earlier than the timer task sleeps for (an announcement
            // starting now): wake it.
            self.timer_wake.notify_one();
        }
        for o in outs {
            match o {
                Output::Sip { target, data } => self.shared.send_sip(target, data),
                Output::Rtp { relay, data } => self.send_rtp(relay, &data),
                Output::Event(e) => {
                    self.shared.note_diverted(&e);
                    self.shared.events.push_to(self.shard.index, e)
                }
                Output::Divert { source, data } => {
                    self.shared.divert(self.shard.index, source, data)
                }
                Output::Kernel { stream, forward } => {
                    let lost = self
                        .shared
                        .fastpath
                        .apply(self.shard.index, stream, forward);
                    if let Some(n) = lost.filter(|&n| n > 0) {
                        lost_copies.push((stream, n));
                    }
                }
                Output::Timeout(_) => {}
            }
        }
        if !lost_copies.is_empty() {
            // Copies the kernel lost for streams just taken back.
            let now = Instant::now();
            self.run_core(&mut |rec| {
                for &(stream, n) in &lost_copies {
                    rec.kernel_copies_lost(now, stream, n);
                }
            });
        }
    }

    /// Reads the shard's ring every [`READ_EVERY`](super::fastpath::READ_EVERY)
    /// and gives the core the copies of what the kernel relayed, in batches.
    async fn copy_loop(self: Arc<Self>, mut ring: aya::maps::RingBuf<aya::maps::MapData>) {
        let mut arena = Vec::with_capacity(256 * 1024);
        let mut copies = Vec::with_capacity(1024);
        loop {
            tokio::time::sleep(super::fastpath::READ_EVERY).await;
            loop {
                arena.clear();
                copies.clear();
                super::fastpath::read_copies(&mut ring, &mut arena, &mut copies, 1024);
                if copies.is_empty() {
                    break;
                }
                self.with_core(|rec| {
                    for c in copies.iter() {
                        let data = &mut arena[c.range.clone()];
                        rec.handle_rtp_copy(c.at, c.local_port, c.source, data, c.lost);
                    }
                });
                if copies.len() < 1024 {
                    break;
                }
            }
        }
    }

    fn note_active(&self, rec: &Recorder) {
        self.shard
            .active
            .store(rec.active_calls(), Ordering::Relaxed);
        self.shard
            .free_pairs
            .store(rec.free_port_pairs(), Ordering::Relaxed);
    }

    /// SIP messages and commands, in the order they came.
    async fn inbox_loop(&self, mut inbox: mpsc::Receiver<Input>) {
        while let Some(input) = inbox.recv().await {
            let now = Instant::now();
            let mut done = None;
            self.with_core(|rec| {
                match input {
                    Input::Sip {
                        target,
                        data,
                        done: d,
                        diverted,
                    } => {
                        if diverted {
                            rec.handle_diverted_sip(now, target, &data);
                        } else {
                            rec.handle_sip(now, target, &data);
                        }
                        done = d;
                    }
                    Input::Config(cfg) => rec.update_config(*cfg),
                    Input::Drain => rec.drain(),
                }
                self.note_active(rec);
            });
            if let Some(d) = done {
                let _ = d.send(());
            }
        }
    }

    /// Wakes for the core's next timer (announcement packets are due every
    /// 20 ms on the dot), at least every 20 ms, or when new input armed an
    /// earlier one; each round is the shard's heartbeat.
    async fn timer_loop(self: Arc<Self>) {
        loop {
            let now = Instant::now();
            let next = lock(&self.shard.core).next_timeout();
            let wake = next
                .unwrap_or(now + Duration::from_millis(20))
                .clamp(now, now + Duration::from_millis(20));
            tokio::select! {
                _ = tokio::time::sleep_until(wake.into()) => {}
                _ = self.timer_wake.notified() => {}
            }
            let now = Instant::now();
            self.with_core(|rec| {
                rec.handle_timeout(now);
                self.note_active(rec);
            });
            let beat = now.saturating_duration_since(self.shared.epoch).as_millis();
            self.shard
                .heartbeat
                .store(u64::try_from(beat).unwrap_or(u64::MAX), Ordering::Relaxed);
        }
    }
}
