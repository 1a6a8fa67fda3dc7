//! The recorder's state machine: a stateful SIP proxy (RFC 3261 §16) that
//! puts itself in the media path of every call it forwards, relays RTP and
//! RTCP, watches DTMF and decides, call by call, when the call is recorded.
//!
//! Driven in the str0m style: [`Recorder::handle_sip`],
//! [`Recorder::handle_rtp`] and [`Recorder::handle_timeout`] take input with
//! the current `Instant`; [`Recorder::poll_output`] hands back what to send,
//! what happened and when to be woken next. Time is only ever an input.
//!
//! One layer a file, each firing its own timers:
//! * [`proxy`] — SIP in and out: requests in the proxy's steps, responses,
//!   CANCEL, local answers;
//! * [`transaction`] — server and client transactions and their timers
//!   (RFC 3261 §17: A/B/E/F, C, G, lingering);
//! * [`calls`] — calls: what users see and what is recorded, spanning an
//!   INVITE retried after a challenge or redirect and every dialog it forks
//!   into; who is on them, which side a request comes from (tags and
//!   source), answer, end, DTMF shortcodes, the recording decision,
//!   housekeeping of idle and ended calls;
//! * [`dialog`] — a call's dialogs (RFC 3261 §12), early and confirmed,
//!   and which one the callee's media leg follows;
//! * [`media`] — media streams and their ports: SDP through the relay, the
//!   RTP/RTCP relay with latching, DTMF and audio taps;
//! * [`announcing`] — announcements and reminder beeps in the call's streams;
//! * [`srs`] — SIPREC recording sessions from a session recording client,
//!   answered here and recorded out of the call's media path.

mod announcing;
mod calls;
mod dialog;
mod kernel;
mod media;
mod proxy;
mod srs;
mod transaction;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rand_chacha::ChaCha12Rng;
use rand_core::{RngCore, SeedableRng};

use crate::announce::Clips;
use crate::config::{CoreConfig, Target};
use crate::event::Event;
use crate::stats::Stats;

use announcing::AnnounceTimer;
use calls::{Call, CallTimer};
use media::PortPool;

pub use kernel::{Handback, KernelForward, KernelStream, OFFLOAD_AFTER, Shift};
use transaction::{ClientTxn, ServerTxn, TxnTimer};

/// What the shell must do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send a SIP message.
    Sip {
        /// Transport and address.
        target: Target,
        /// The message.
        data: Vec<u8>,
    },
    /// Send an RTP packet the core made (an announcement).
    Rtp {
        /// Out of which local port to whom.
        relay: Relay,
        /// The packet.
        data: Vec<u8>,
    },
    /// Something happened.
    Event(Event),
    /// A new call this shard has no RTP ports for: the shell hands the
    /// message to another shard's [`Recorder::handle_diverted_sip`] (the
    /// request passed this shard's access check and is no retransmission
    /// of a transaction it knows). Only when the core was made for one of
    /// several shards.
    Divert {
        /// Where it came from.
        source: Target,
        /// The message as received.
        data: Vec<u8>,
    },
    /// Hand a stream to the kernel fast path (`forward`), change how it
    /// relays it, or take it back (`None`). Only when the shell turned the
    /// fast path on ([`Recorder::set_kernel_relay`]).
    Kernel {
        /// The stream as the kernel recognises its packets.
        stream: KernelStream,
        /// How to relay them; `None`: leave them to userspace again.
        forward: Option<KernelForward>,
    },
    /// Nothing more to do until this instant (or new input); `None`: until
    /// new input.
    Timeout(Option<Instant>),
}

/// Where to send a relayed RTP/RTCP packet: out of which local port to whom.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Relay {
    /// Local port to send from.
    pub from_port: u16,
    /// Destination.
    pub to: SocketAddr,
}

/// A timer, by the layer that fires it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    /// A transaction's.
    Txn(TxnTimer),
    /// A call's, or the calls' housekeeping.
    Call(CallTimer),
    /// An announcement's.
    Announce(AnnounceTimer),
}

/// The recorder core.
pub struct Recorder {
    cfg: CoreConfig,
    out: VecDeque<Output>,
    timers: BinaryHeap<Reverse<(Instant, Timer)>>,
    server_keys: HashMap<String, u64>,
    servers: HashMap<u64, ServerTxn>,
    client_branches: HashMap<String, u64>,
    clients: HashMap<u64, ClientTxn>,
    call_ids: HashMap<String, u64>,
    calls: HashMap<u64, Call>,
    ports: PortPool,
    stats: Stats,
    next_id: u64,
    rng: ChaCha12Rng,
    draining: bool,
    sweep_armed: bool,
    clips: Clips,
    /// What each peer holds now, by peer name: shared by every shard of a
    /// process, so a peer's limits hold for the process as a whole.
    loads: PeerLoads,
    /// Ids are `shard + k·shards`: unique across the shards of a process.
    id_step: u64,
    /// Other shards can take a new call this one has no ports for.
    may_divert: bool,
    /// The message being handled was diverted here: it is not handed on.
    diverted_input: bool,
    /// Streams may be handed to the kernel fast path.
    kernel_relay: bool,
}

/// Which of a process's shards a core is, and what the shards share.
#[derive(Debug, Clone)]
pub struct Shard {
    /// This shard's index, `0..count`.
    pub index: u32,
    /// How many shards the process runs.
    pub count: u32,
    /// Every peer's load, one map for all the shards.
    pub loads: PeerLoads,
}

impl Default for Shard {
    /// The only shard of a process.
    fn default() -> Self {
        Self {
            index: 0,
            count: 1,
            loads: PeerLoads::default(),
        }
    }
}

/// What each peer holds of the process, for its limits. Shared by the
/// shards; its lock is held only to count a call or transaction in or out.
#[derive(Debug, Clone, Default)]
pub struct PeerLoads(Arc<Mutex<HashMap<String, PeerLoad>>>);

impl PeerLoads {
    fn with<R>(&self, f: impl FnOnce(&mut HashMap<String, PeerLoad>) -> R) -> R {
        // The counts stay usable even if a shard panicked while holding
        // the lock (the process exits on a panic anyway).
        f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// What one peer holds of the recorder, for its limits.
#[derive(Debug, Default)]
pub(crate) struct PeerLoad {
    calls: u32,
    transactions: u32,
    /// New calls it may still start now (a bucket refilled over time).
    tokens: f64,
    refilled: Option<Instant>,
}

impl PeerLoad {
    /// Takes one new call from the bucket of `per_second`; false when empty.
    fn take_invite(&mut self, now: Instant, per_second: u32) -> bool {
        let rate = f64::from(per_second);
        self.tokens = match self.refilled {
            None => rate,
            Some(t) => {
                (self.tokens + now.saturating_duration_since(t).as_secs_f64() * rate).min(rate)
            }
        };
        self.refilled = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

impl Recorder {
    /// A core with the given configuration and the even RTP ports (each with
    /// its odd RTCP neighbour) the shell has bound.
    pub fn new(cfg: CoreConfig, rtp_ports: &[u16]) -> Self {
        Self::new_shard(cfg, rtp_ports, Shard::default())
    }

    /// One shard of a process: its own calls, on its own ports, with ids
    /// no other shard gives and the peers' limits counted across shards.
    pub fn new_shard(cfg: CoreConfig, rtp_ports: &[u16], shard: Shard) -> Self {
        let step = u64::from(shard.count.max(1));
        let rng = ChaCha12Rng::from_seed(cfg.seed);
        Self {
            cfg,
            out: VecDeque::new(),
            timers: BinaryHeap::new(),
            server_keys: HashMap::new(),
            servers: HashMap::new(),
            client_branches: HashMap::new(),
            clients: HashMap::new(),
            call_ids: HashMap::new(),
            calls: HashMap::new(),
            ports: PortPool::new(rtp_ports),
            stats: Stats::default(),
            // Ids are `1 + index + k·step` (k ≥ 1): never 0, and each
            // shard's are its own residue modulo `step`.
            next_id: 1 + u64::from(shard.index) % step,
            rng,
            draining: false,
            sweep_armed: false,
            clips: Clips::default(),
            loads: shard.loads,
            id_step: step,
            may_divert: step > 1,
            diverted_input: false,
            kernel_relay: false,
        }
    }

    /// Replaces peers and users (config reload). Calls in progress keep the
    /// decisions made when they started.
    pub fn update_config(&mut self, cfg: CoreConfig) {
        self.cfg.peers = cfg.peers;
        self.cfg.users = cfg.users;
        self.cfg.hosts = cfg.hosts;
        self.cfg.timers = cfg.timers;
        self.cfg.announcement = cfg.announcement;
        self.cfg.unknown_sources = cfg.unknown_sources;
        self.cfg.limits = cfg.limits;
        self.cfg.allow_local_media = cfg.allow_local_media;
        self.cfg.refuse_video = cfg.refuse_video;
        self.cfg.refuse_unreadable_media = cfg.refuse_unreadable_media;
        // A node's external address that arrived after the start (the
        // operator rendered the node's entry later) adds a face for new
        // calls; calls in progress keep the address they were told, which
        // stays ours. A changed or removed address, or another advertised
        // one, waits for a restart (the shell says so).
        if self.cfg.split.is_none() && cfg.advertised == self.cfg.advertised {
            self.cfg.split = cfg.split;
        }
    }

    /// Stops taking new calls: new INVITEs get 503; calls in progress go on.
    pub fn drain(&mut self) {
        self.draining = true;
    }

    /// Calls not yet ended.
    pub fn active_calls(&self) -> usize {
        self.calls.values().filter(|c| c.ended.is_none()).count()
    }

    /// RTP/RTCP port pairs free for new streams (a call's audio takes two).
    pub fn free_port_pairs(&self) -> usize {
        self.ports.free.len()
    }

    /// The counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The next thing to do. Drain until it returns [`Output::Timeout`]:
    /// the instant of the next timer, or `None` when none is armed and only
    /// new input can give the core something to do.
    pub fn poll_output(&mut self) -> Output {
        if let Some(o) = self.out.pop_front() {
            return o;
        }
        Output::Timeout(self.next_timeout())
    }

    /// The next timer, if any (for shells that poll).
    pub fn next_timeout(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((t, _))| *t)
    }

    fn id(&mut self) -> u64 {
        self.next_id += self.id_step;
        self.next_id
    }

    fn random(&mut self) -> u64 {
        self.rng.next_u64()
    }

    fn arm(&mut self, at: Instant, t: Timer) {
        self.timers.push(Reverse((at, t)));
    }

    fn emit(&mut self, e: Event) {
        self.out.push_back(Output::Event(e));
    }

    /// Runs every timer due at `now`, each in its own layer.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(Reverse((at, _))) = self.timers.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((_, timer))) = self.timers.pop() else {
                break;
            };
            match timer {
                Timer::Txn(t) => self.fire_transaction(now, t),
                Timer::Call(t) => self.fire_call(now, t),
                Timer::Announce(t) => self.fire_announcement(now, t),
            }
        }
    }
}
