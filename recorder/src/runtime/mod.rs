//! The tokio shell around the sans-IO core, one file per listener or task:
//! [`shard`] (the media path's shards, each its own core, thread and
//! timers), [`sip`] (UDP and TCP listeners routing by Call-ID, sending),
//! [`rtp`] (a shard's relay sockets), [`http`] (metrics and health),
//! [`reload`] (the config file watcher), [`shutdown`] (SIGTERM and the
//! drain), [`log`] (info-level call lines). The listeners, the HTTP server
//! and the reload run on the main thread; each shard's core is locked only
//! by its own thread (and briefly by a metrics scrape), never across an
//! `.await`; every send happens after it is released.

pub mod fastpath;
mod http;
mod log;
mod reload;
mod rtp;
mod shard;
mod shutdown;
mod sip;
#[cfg(test)]
mod tests;
mod tls;

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use earshot_recorder_core::{Recorder, Target, Transport};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;

use shard::{Input, Shard, ShardParts, ShardRun};

use crate::config::Config;
use crate::events::{Clock, EventLog};
use crate::metrics::Metrics;

/// State shared by every task and shard.
pub struct Shared {
    metrics: Mutex<Metrics>,
    sip_udp: Option<Arc<UdpSocket>>,
    /// Open SIP TCP and TLS connections by transport and remote address:
    /// (connection id, writer).
    tcp: Mutex<HashMap<Target, TcpWriter>>,
    /// SIP over TLS, when configured.
    tls: Option<Arc<tls::Tls>>,
    /// Inbound TLS connections by the address their peer's requests give
    /// as the top Via's sent-by (RFC 5923's alias: a TLS peer is reached
    /// on its own connection, where it may take none from us). One per
    /// connection, and only an address at the connection's own IP.
    tls_aliases: Mutex<HashMap<SocketAddr, Target>>,
    tcp_ids: std::sync::atomic::AtomicU64,
    tcp_open: Mutex<sip::TcpOpen>,
    tcp_limits: earshot_contracts::config::SipLimits,
    /// The peers' networks, for the ACL at TCP accept (updated on reload).
    acl: std::sync::RwLock<Vec<earshot_recorder_core::IpNet>>,
    /// The shards, and the keyed hash that routes a Call-ID to one (keyed
    /// per process, so no peer can aim its calls at one shard).
    shards: Vec<Arc<Shard>>,
    router: std::collections::hash_map::RandomState,
    /// New calls sent to another shard than their hash's, because that one
    /// had no port pair free, by the hash of their Call-ID.
    diverted: Mutex<Routes>,
    /// The main runtime: the listeners' sockets are registered with it, so
    /// sends that must wait are spawned on it, whichever thread asks.
    main: tokio::runtime::Handle,
    /// Start of the shards' heartbeat clock.
    epoch: Instant,
    events: Arc<crate::recording::EventBuffer>,
    spool: Arc<crate::spool::Spool>,
    recording: crate::recording::SettingsHandle,
    /// Whether the recording pipeline is behind (for `/readyz`).
    backlog: crate::recording::Backlog,
    ready: AtomicBool,
    /// The kernel fast path (or why there is none).
    fastpath: fastpath::FastPath,
}

/// Each next hop's address with the host name its TLS certificate is
/// verified by (the host its `nextHop` names).
fn tls_names(
    config: &Config,
    core: &earshot_recorder_core::CoreConfig,
) -> HashMap<SocketAddr, String> {
    core.peers
        .iter()
        .zip(&config.peers)
        .filter_map(|(p, (c, _))| {
            let host = c.next_hop.rsplit_once(':')?.0.trim_matches(['[', ']']);
            Some((p.next_hop?.addr, host.to_owned()))
        })
        .collect()
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock would be a bug in the core; keep serving
    // rather than cascade it into every task.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    /// The shard that owns the call a SIP message belongs to: the shard
    /// a diverted call went to, else the one its Call-ID hashes to; a
    /// message without a Call-ID goes to the first shard, which answers or
    /// counts it as malformed. Nothing is parsed here beyond the Call-ID.
    fn shard_for(&self, data: &[u8]) -> &Arc<Shard> {
        let Some(id) = earshot_recorder_core::sip::message::call_id_of(data) else {
            return &self.shards[0];
        };
        let home = self.home_shard(&id);
        if self.shards.len() == 1 {
            return &self.shards[home];
        }
        let hash = earshot_recorder_core::call_hash(&id);
        let check = self.router.hash_one(&*id);
        let now = Instant::now();
        match lock(&self.diverted).lookup(&hash, check, now) {
            Some(shard) => &self.shards[shard],
            None => &self.shards[home],
        }
    }

    /// A new call shard `from` had no RTP ports for (the core said so,
    /// after its access check, and knows no transaction of it): it goes to
    /// the shard with the most pairs free and stays there, so a range sized
    /// for N calls takes N calls however they hash. With no shard free, or
    /// the route table full, it goes back to `from`, which answers 503.
    fn divert(&self, from: usize, source: Target, data: Vec<u8>) {
        let best = self
            .shards
            .iter()
            .filter(|s| s.index != from)
            .max_by_key(|s| s.free_pairs())
            .filter(|s| s.free_pairs() >= CALL_PAIRS);
        let routed = best.and_then(|best| {
            let id = earshot_recorder_core::sip::message::call_id_of(&data)?;
            let hash = earshot_recorder_core::call_hash(&id);
            let check = self.router.hash_one(&*id);
            if !lock(&self.diverted).insert(hash, check, best.index, Instant::now()) {
                lock(&self.metrics).route_table_full();
                return None;
            }
            Some(best)
        });
        let shard = routed.unwrap_or(&self.shards[from]);
        let input = Input::Sip {
            target: source,
            data,
            done: None,
            diverted: true,
        };
        if let Err(mpsc::error::TrySendError::Full(_)) = shard.inbox.try_send(input) {
            lock(&self.metrics).shard_busy();
        }
    }

    /// The shard a Call-ID hashes to.
    fn home_shard(&self, call_id: &str) -> usize {
        (self.router.hash_one(call_id) % self.shards.len() as u64) as usize
    }

    /// Follows a diverted call's start and end, so its route is kept while
    /// the call lasts and forgotten after.
    fn note_diverted(&self, e: &earshot_recorder_core::Event) {
        use earshot_recorder_core::Event;
        let (call, ended) = match e {
            Event::CallStarted { call, .. } => (call, false),
            Event::CallEnded { call, .. } => (call, true),
            _ => return,
        };
        let mut diverted = lock(&self.diverted);
        if let Some(d) = diverted.map.get_mut(&call.hash) {
            d.started = true;
            if ended {
                d.ended = Some(Instant::now());
            }
        }
    }

    /// Hands a SIP message to its shard. A shard whose inbox is full (it
    /// is stuck or far behind) loses the message, counted; the sender
    /// retransmits over UDP.
    fn route_sip(
        &self,
        target: Target,
        data: &[u8],
        done: Option<tokio::sync::oneshot::Sender<()>>,
    ) {
        let shard = self.shard_for(data);
        let input = Input::Sip {
            target,
            data: data.to_vec(),
            done,
            diverted: false,
        };
        if let Err(mpsc::error::TrySendError::Full(_)) = shard.inbox.try_send(input) {
            lock(&self.metrics).shard_busy();
        }
    }

    /// Sends a command to every shard, waiting for room in each inbox until
    /// `deadline`; returns the shards it could not tell (stuck, inbox full).
    async fn tell_shards(&self, input: impl Fn() -> Input, deadline: Instant) -> Vec<usize> {
        let mut untold = Vec::new();
        for shard in &self.shards {
            let sent = tokio::time::timeout_at(deadline.into(), shard.inbox.send(input())).await;
            if !matches!(sent, Ok(Ok(()))) {
                untold.push(shard.index);
            }
        }
        untold
    }

    /// Calls in progress across the shards.
    pub(super) fn active_calls(&self) -> usize {
        self.shards.iter().map(|s| s.active_calls()).sum()
    }

    /// The first shard whose timer round is late, and by how much.
    fn stalled_shard(&self) -> Option<(usize, Duration)> {
        self.shards.iter().find_map(|s| {
            let late = s.since_heartbeat(self.epoch);
            (late > shard::STALLED_AFTER).then_some((s.index, late))
        })
    }
}

/// Port pairs a new call needs: one per side of its audio stream.
const CALL_PAIRS: usize = 2;

/// How long a diverted call's route outlives the call (or a call that never
/// started, its INVITE): its transactions' lifetime, 64 × T1 and more.
const DIVERTED_LINGER: Duration = Duration::from_secs(64);

/// Routes of diverted calls kept at most.
const MAX_DIVERTED: usize = 65_536;

/// The routes of diverted calls, by the short hash of their Call-ID: taken
/// only for calls a shard's core handed over (so after its access check),
/// checked against the Call-ID's keyed hash and for expiry on each lookup,
/// swept of expired routes at most once a second (never a scan per
/// message), and bounded: a full table takes no new route.
#[derive(Debug)]
struct Routes {
    map: HashMap<String, Diverted>,
    max: usize,
    swept: Option<Instant>,
}

impl Routes {
    fn new(max: usize) -> Self {
        Self {
            map: HashMap::new(),
            max,
            swept: None,
        }
    }

    /// The shard of a diverted call, if its route holds.
    fn lookup(&mut self, hash: &str, check: u64, now: Instant) -> Option<usize> {
        match self.map.get(hash) {
            Some(d) if d.expired(now) => {
                self.map.remove(hash);
                None
            }
            // The check is the Call-ID's keyed hash: a Call-ID made to
            // collide with another's short hash does not follow its route.
            Some(d) if d.check == check => Some(d.shard),
            _ => None,
        }
    }

    /// Takes a route; false when the table is full or another Call-ID
    /// with the same short hash holds one.
    fn insert(&mut self, hash: String, check: u64, shard: usize, now: Instant) -> bool {
        if self
            .swept
            .is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(1))
        {
            self.map.retain(|_, d| !d.expired(now));
            self.swept = Some(now);
        }
        match self.map.get(&hash) {
            Some(d) if !d.expired(now) && d.check != check => return false,
            None if self.map.len() >= self.max => return false,
            _ => {}
        }
        self.map.insert(
            hash,
            Diverted {
                shard,
                check,
                at: now,
                started: false,
                ended: None,
            },
        );
        true
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.len()
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// Where a diverted call went, and how far it is.
#[derive(Debug)]
struct Diverted {
    shard: usize,
    /// The Call-ID's keyed hash (the table is keyed by its short hash).
    check: u64,
    at: Instant,
    started: bool,
    ended: Option<Instant>,
}

impl Diverted {
    fn expired(&self, now: Instant) -> bool {
        match (self.started, self.ended) {
            (_, Some(t)) => now.saturating_duration_since(t) > DIVERTED_LINGER,
            (false, None) => now.saturating_duration_since(self.at) > DIVERTED_LINGER,
            (true, None) => false,
        }
    }
}

/// Raises the soft limit of open files to what the recorder needs: two
/// sockets per RTP port pair, the SIP TCP connections it may hold, and
/// room for the spool, the store and the runtime. A container starts with
/// a soft limit of 1024 under containerd 2.x: without this, binding the
/// RTP range stopped short (each failed bind looked like a port in use).
/// Refuses to start, naming the limit, when the hard limit is too low.
fn raise_fd_limit(pairs: usize, tcp: usize) -> anyhow::Result<()> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let need = (pairs * 2 + tcp + 256) as u64;
    let (soft, hard) =
        getrlimit(Resource::RLIMIT_NOFILE).context("cannot read the open-file limit")?;
    if soft >= need {
        return Ok(());
    }
    if hard < need {
        anyhow::bail!(
            "the recorder needs {need} open files ({pairs} RTP port pairs × 2, {tcp} SIP TCP connections, 256 more) but the hard limit is {hard} (ulimit -Hn): raise the container runtime's limit, or narrow the RTP port range or sip.limits.tcpConnections"
        );
    }
    setrlimit(Resource::RLIMIT_NOFILE, need, hard).context("cannot raise the open-file limit")?;
    tracing::info!(
        from = soft,
        to = need,
        hard,
        "raised the open-file limit for the RTP range"
    );
    Ok(())
}

/// How many shards: the configured number, else one per CPU the process may
/// use; never more than there are RTP port pairs to give them.
fn shard_count(configured: u16, port_pairs: usize) -> usize {
    let wanted = match configured {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => usize::from(n),
    };
    wanted.clamp(1, port_pairs.max(1))
}

/// Everything bound and ready to run.
pub struct Server {
    shared: Arc<Shared>,
    shard_parts: Vec<ShardParts>,
    rtp_base: u16,
    config_path: PathBuf,
    config: Config,
    tcp_listener: Option<TcpListener>,
    tls_listener: Option<TcpListener>,
    http_listener: tokio::net::TcpListener,
    events_rx: Arc<crate::recording::EventBuffer>,
    clock: Clock,
    dispatcher: crate::recording::Dispatcher,
}

/// Binds every socket the config asks for.
pub async fn bind(config_path: PathBuf, config: Config) -> anyhow::Result<Server> {
    // The branch and tag generator's seed, from the operating system.
    let seed: [u8; 32] = rand::random();
    let core_cfg = config.core_config(seed).await.map_err(anyhow::Error::msg)?;
    let transports = &config.file.sip.transports;
    let sip_udp = if transports.contains(&Transport::Udp) {
        Some(Arc::new(
            UdpSocket::bind(config.file.sip.listen)
                .await
                .with_context(|| format!("cannot bind SIP UDP {}", config.file.sip.listen))?,
        ))
    } else {
        None
    };
    let tcp_listener = if transports.contains(&Transport::Tcp) {
        Some(
            TcpListener::bind(config.file.sip.listen)
                .await
                .with_context(|| format!("cannot bind SIP TCP {}", config.file.sip.listen))?,
        )
    } else {
        None
    };
    let tls = match &config.file.sip.tls {
        Some(t) => Some(Arc::new(tls::Tls::new(t, tls_names(&config, &core_cfg))?)),
        None => None,
    };
    let tls_listener = match (&config.file.sip.tls, transports.contains(&Transport::Tls)) {
        (Some(t), true) => {
            let addr = SocketAddr::new(config.file.sip.listen.ip(), t.port);
            Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot bind SIP TLS {addr}"))?,
            )
        }
        _ => None,
    };
    let http_listener = tokio::net::TcpListener::bind(config.file.http.listen)
        .await
        .with_context(|| format!("cannot bind HTTP {}", config.file.http.listen))?;

    let wanted = config.rtp_ports();
    raise_fd_limit(
        wanted.len(),
        config.file.sip.limits.tcp_connections as usize,
    )?;
    let base = wanted.first().copied().unwrap_or(0);
    let mut bound = Vec::new();
    for &p in &wanted {
        let rtp_sock = bind_udp(config.file.rtp.bind, p);
        let rtcp_sock = bind_udp(config.file.rtp.bind, p + 1);
        if let (Ok(a), Ok(b)) = (rtp_sock, rtcp_sock) {
            bound.push((p, a, b));
        }
    }
    if bound.is_empty() {
        anyhow::bail!(
            "no RTP port pair could be bound in {}-{}",
            config.file.rtp.port_min,
            config.file.rtp.port_max
        );
    }
    if bound.len() < wanted.len() {
        tracing::warn!(
            bound = bound.len(),
            wanted = wanted.len(),
            "some RTP port pairs are in use by other processes"
        );
    }
    // Port pair k goes to shard k mod N: every shard gets an equal share
    // of the range, each on its own runtime.
    let count = shard_count(config.file.shards, bound.len());
    let pairs = bound.len();
    let fastpath = fastpath::FastPath::start(&config.file.rtp, count, wanted.len())?;
    let mut split: Vec<Vec<_>> = (0..count).map(|_| Vec::new()).collect();
    for (k, pair) in bound.into_iter().enumerate() {
        split[k % count].push(pair);
    }
    // Storage and the spool before the shards' runtimes exist: an error
    // here returns from `bind` inside the main runtime, and a runtime
    // dropped there panics ("Cannot drop a runtime in a context where
    // blocking is not allowed"), which made a bad store a crash loop.
    let store =
        crate::store::Store::open(&config.file.storage).context("cannot open recording storage")?;
    let clock = Clock::new();
    let metrics = Metrics::new();
    let instance = config
        .file
        .instance
        .clone()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .unwrap_or_else(|| "earshot-recorder".to_owned());
    let (dispatcher, spool) = crate::recording::start(
        &config.file.recording,
        &config.file.spool,
        store.clone(),
        clock,
        instance,
        metrics.recording.clone(),
        crate::recording::Parts::default(),
        &tokio::runtime::Handle::current(),
    )
    .with_context(|| {
        format!(
            "cannot use spool directory {}",
            config.file.spool.dir.display()
        )
    })?;
    tracing::info!(storage = %store.describe, spool = %config.file.spool.dir.display(), "recordings go to storage through the spool");
    let loads = earshot_recorder_core::PeerLoads::default();
    let mut shards = Vec::with_capacity(count);
    let mut shard_parts = Vec::with_capacity(count);
    for (index, own) in split.into_iter().enumerate() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start a shard's runtime")?;
        let mut rtp: Vec<Option<Arc<rtp::RtpSocket>>> = vec![None; wanted.len() * 2];
        let mut ports = Vec::new();
        {
            let _in_its_runtime = runtime.enter();
            for (p, a, b) in own {
                let i = (p - base) as usize;
                rtp[i] = Some(Arc::new(rtp::register(a)?));
                rtp[i + 1] = Some(Arc::new(rtp::register(b)?));
                ports.push(p);
            }
        }
        // Each shard its own branch and tag generator, seeded by the system.
        let mut cfg = core_cfg.clone();
        cfg.seed = rand::random();
        let mut core = Recorder::new_shard(
            cfg,
            &ports,
            earshot_recorder_core::Shard {
                index: index as u32,
                count: count as u32,
                loads: loads.clone(),
            },
        );
        // A shard without a ring of its own relays in userspace.
        let kernel = matches!(fastpath.state(), fastpath::State::Active(_));
        core.set_kernel_relay(kernel && index < fastpath::RINGS);
        let (shard, inbox) = Shard::new(index, core);
        shards.push(Arc::new(shard));
        shard_parts.push(ShardParts {
            runtime,
            rtp,
            inbox,
        });
    }
    let events_tx = Arc::new(crate::recording::EventBuffer::new(count));
    let events_rx = events_tx.clone();
    let shared = Arc::new(Shared {
        metrics: Mutex::new(metrics),
        sip_udp,
        tcp: Mutex::new(HashMap::new()),
        tls,
        tls_aliases: Mutex::new(HashMap::new()),
        tcp_ids: std::sync::atomic::AtomicU64::new(0),
        tcp_open: Mutex::new(sip::TcpOpen::default()),
        tcp_limits: config.file.sip.limits,
        acl: std::sync::RwLock::new(acl_of(&config)),
        shards,
        router: std::collections::hash_map::RandomState::new(),
        diverted: Mutex::new(Routes::new(MAX_DIVERTED)),
        main: tokio::runtime::Handle::current(),
        epoch: Instant::now(),
        events: events_tx,
        spool,
        recording: dispatcher.settings(),
        backlog: dispatcher.backlog(),
        ready: AtomicBool::new(false),
        fastpath,
    });
    tracing::info!(
        sip = %config.file.sip.listen,
        http = %config.file.http.listen,
        rtp_pairs = pairs,
        shards = count,
        peers = config.peers.len(),
        users = config.users.len(),
        "recorder listening"
    );
    match shared.fastpath.state() {
        fastpath::State::Active(ifaces) => tracing::info!(
            interfaces = %ifaces.join(","),
            "relay: established streams in the kernel (eBPF fast path), the rest in userspace"
        ),
        fastpath::State::Unavailable(why) => {
            tracing::warn!(reason = %why, "relay: userspace only (kernel fast path unavailable)")
        }
        fastpath::State::Off => tracing::info!("relay: userspace only (kernel fast path off)"),
    }
    for w in &config.warnings {
        tracing::error!("{w}");
    }
    Ok(Server {
        shared,
        shard_parts,
        rtp_base: base,
        config_path,
        config,
        tcp_listener,
        tls_listener,
        http_listener,
        events_rx,
        clock,
        dispatcher,
    })
}

impl Server {
    /// Serves until SIGTERM/SIGINT and the drain that follows complete.
    pub async fn run(self) -> anyhow::Result<()> {
        let grace = self.config.file.shutdown_grace;
        let shared = self.start()?;
        shutdown::wait_for_signal().await;
        shutdown::drain(&shared, grace).await;
        tracing::info!("recorder stopped");
        Ok(())
    }

    /// Starts every listener, shard and task on the current runtime and
    /// reports ready.
    fn start(self) -> anyhow::Result<Arc<Shared>> {
        let Server {
            shared,
            shard_parts,
            rtp_base,
            config_path,
            config,
            tcp_listener,
            tls_listener,
            http_listener,
            events_rx,
            clock,
            dispatcher,
        } = self;

        // Call event log and info-level call lines (no numbers in them).
        let opened = EventLog::open(
            config.file.events.path.as_deref(),
            clock,
            config.file.events.dtmf_digits,
        )
        .with_context(|| format!("cannot open event log {:?}", config.file.events.path));
        let mut events = match opened {
            Ok(events) => events,
            Err(e) => {
                // Dropping the shards' runtimes here, inside the main one,
                // would panic instead of reporting the error.
                for p in shard_parts {
                    p.runtime.shutdown_background();
                }
                return Err(e);
            }
        };
        // The dispatcher thread: event log, info lines, and the recording pipeline.
        std::thread::Builder::new()
            .name("dispatcher".into())
            .spawn(move || {
                crate::recording::run_dispatcher(dispatcher, events_rx, |e| {
                    log::log_event(e);
                    events.write(e);
                })
            })?;

        if let Some(sock) = shared.sip_udp.clone() {
            tokio::spawn(sip::udp_loop(shared.clone(), sock));
        }
        if let Some(listener) = tcp_listener {
            tokio::spawn(sip::accept_loop(shared.clone(), listener, false));
        }
        if let Some(listener) = tls_listener {
            tokio::spawn(sip::accept_loop(shared.clone(), listener, true));
        }
        if let Some(t) = shared.tls.clone() {
            let s = shared.clone();
            tokio::spawn(t.watch(move |ok| lock(&s.metrics).tls_reloaded(ok)));
        }
        for (shard, parts) in shared.shards.iter().zip(shard_parts) {
            ShardRun::start(shared.clone(), shard.clone(), parts, rtp_base)
                .context("cannot start a shard's thread")?;
        }
        tokio::spawn(http::serve(shared.clone(), http_listener));
        tokio::spawn(reload::watch_config(
            shared.clone(),
            config_path.clone(),
            config.watched_files(&config_path),
            config.file.clone(),
        ));
        if let Some(fs) = config.file.storage.filesystem.clone()
            && let Some(days) = fs.retention_days
        {
            tokio::spawn(expire_daily(fs.path, days));
        }
        shared.ready.store(true, Ordering::Relaxed);
        Ok(shared)
    }
}

/// A non-blocking UDP socket, to be registered with a shard's runtime.
fn bind_udp(ip: std::net::IpAddr, port: u16) -> std::io::Result<std::net::UdpSocket> {
    let sock = std::net::UdpSocket::bind((ip, port))?;
    sock.set_nonblocking(true)?;
    Ok(sock)
}

/// An open SIP TCP connection's writer: its id and the queue toward it.
type TcpWriter = (u64, mpsc::Sender<Vec<u8>>);

/// Every peer's source networks.
pub(super) fn acl_of(config: &Config) -> Vec<earshot_recorder_core::IpNet> {
    config
        .peers
        .iter()
        .flat_map(|(_, nets)| nets.iter().copied())
        .collect()
}

/// Deletes recordings past their retention from a filesystem store, at
/// start and then daily, as a lifecycle rule would in a bucket.
async fn expire_daily(root: PathBuf, days: u32) {
    let mut day = tokio::time::interval(Duration::from_secs(86_400));
    loop {
        day.tick().await;
        match crate::store::expire_local(&root, days, SystemTime::now()) {
            Ok(n) => tracing::info!(deleted = n, retention_days = days, "expired old recordings"),
            Err(e) => tracing::error!(error = %e, "cannot expire old recordings"),
        }
    }
}
