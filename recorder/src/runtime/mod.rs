//! The tokio shell around the sans-IO core, one file per listener or task:
//! [`sip`] (UDP and TCP listeners, sending), [`rtp`] (the relay's sockets),
//! [`timer`] (the core's timers), [`http`] (metrics and health), [`reload`]
//! (the config file watcher), [`shutdown`] (SIGTERM and the drain), [`log`]
//! (info-level call lines). The core sits behind one mutex that is never
//! held across an `.await`; every send happens after it is released.

mod http;
mod log;
mod reload;
mod rtp;
mod shutdown;
mod sip;
mod timer;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use earshot_recorder_core::{Output, Recorder, Transport};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;

use crate::config::Config;
use crate::events::{Clock, EventLog};
use crate::metrics::Metrics;

/// State shared by every task.
pub struct Shared {
    rec: Mutex<Recorder>,
    metrics: Mutex<Metrics>,
    sip_udp: Option<Arc<UdpSocket>>,
    /// Open SIP TCP connections by remote address: (connection id, writer).
    tcp: Mutex<HashMap<SocketAddr, TcpWriter>>,
    tcp_ids: std::sync::atomic::AtomicU64,
    tcp_open: Mutex<sip::TcpOpen>,
    tcp_limits: earshot_contracts::config::SipLimits,
    /// The peers' networks, for the ACL at TCP accept (updated on reload).
    acl: std::sync::RwLock<Vec<earshot_recorder_core::IpNet>>,
    rtp: Vec<Option<Arc<UdpSocket>>>,
    rtp_base: u16,
    events: Arc<crate::recording::EventBuffer>,
    spool: Arc<crate::spool::Spool>,
    recording: crate::recording::SettingsHandle,
    ready: AtomicBool,
    timer_wake: tokio::sync::Notify,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock would be a bug in the core; keep serving
    // rather than cascade it into every task.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn drain(rec: &mut Recorder) -> Vec<Output> {
    let mut out = Vec::new();
    loop {
        match rec.poll_output() {
            Output::Timeout(_) => return out,
            o => out.push(o),
        }
    }
}

impl Shared {
    /// Runs `f` on the core, then carries out what it produced.
    pub(super) fn with_core<R>(self: &Arc<Self>, f: impl FnOnce(&mut Recorder) -> R) -> R {
        let (r, outs, sooner) = {
            let mut rec = lock(&self.rec);
            let before = rec.next_timeout();
            let r = f(&mut rec);
            let after = rec.next_timeout();
            let sooner = after.is_some_and(|a| before.is_none_or(|b| a < b));
            (r, drain(&mut rec), sooner)
        };
        if sooner {
            // A timer earlier than the timer task sleeps for (an announcement
            // starting now): wake it.
            self.timer_wake.notify_one();
        }
        self.dispatch(outs);
        r
    }

    fn dispatch(self: &Arc<Self>, outs: Vec<Output>) {
        for o in outs {
            match o {
                Output::Sip { target, data } => self.send_sip(target, data),
                Output::Rtp { relay, data } => self.send_rtp(relay, &data),
                Output::Event(e) => self.events.push(e),
                Output::Timeout(_) => {}
            }
        }
    }
}

/// Everything bound and ready to run.
pub struct Server {
    shared: Arc<Shared>,
    config_path: PathBuf,
    config: Config,
    tcp_listener: Option<TcpListener>,
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
    let http_listener = tokio::net::TcpListener::bind(config.file.http.listen)
        .await
        .with_context(|| format!("cannot bind HTTP {}", config.file.http.listen))?;

    let wanted = config.rtp_ports();
    let base = wanted.first().copied().unwrap_or(0);
    let mut rtp: Vec<Option<Arc<UdpSocket>>> = vec![None; wanted.len() * 2];
    let mut bound = Vec::new();
    for &p in &wanted {
        let rtp_sock = UdpSocket::bind((config.file.rtp.bind, p)).await;
        let rtcp_sock = UdpSocket::bind((config.file.rtp.bind, p + 1)).await;
        if let (Ok(a), Ok(b)) = (rtp_sock, rtcp_sock) {
            let i = (p - base) as usize;
            rtp[i] = Some(Arc::new(a));
            rtp[i + 1] = Some(Arc::new(b));
            bound.push(p);
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
    let events_tx = Arc::new(crate::recording::EventBuffer::default());
    let events_rx = events_tx.clone();
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
    let shared = Arc::new(Shared {
        rec: Mutex::new(Recorder::new(core_cfg, &bound)),
        metrics: Mutex::new(metrics),
        sip_udp,
        tcp: Mutex::new(HashMap::new()),
        tcp_ids: std::sync::atomic::AtomicU64::new(0),
        tcp_open: Mutex::new(sip::TcpOpen::default()),
        tcp_limits: config.file.sip.limits,
        acl: std::sync::RwLock::new(acl_of(&config)),
        rtp,
        rtp_base: base,
        events: events_tx,
        spool,
        recording: dispatcher.settings(),
        ready: AtomicBool::new(false),
        timer_wake: tokio::sync::Notify::new(),
    });
    tracing::info!(
        sip = %config.file.sip.listen,
        http = %config.file.http.listen,
        rtp_pairs = bound.len(),
        peers = config.peers.len(),
        users = config.users.len(),
        "recorder listening"
    );
    for w in &config.warnings {
        tracing::error!("{w}");
    }
    Ok(Server {
        shared,
        config_path,
        config,
        tcp_listener,
        http_listener,
        events_rx,
        clock,
        dispatcher,
    })
}

impl Server {
    /// Serves until SIGTERM/SIGINT and the drain that follows complete.
    pub async fn run(self) -> anyhow::Result<()> {
        let Server {
            shared,
            config_path,
            config,
            tcp_listener,
            http_listener,
            events_rx,
            clock,
            dispatcher,
        } = self;

        // Call event log and info-level call lines (no numbers in them).
        let mut events = EventLog::open(
            config.file.events.path.as_deref(),
            clock,
            config.file.events.dtmf_digits,
        )
        .with_context(|| format!("cannot open event log {:?}", config.file.events.path))?;
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
            tokio::spawn(sip::accept_loop(shared.clone(), listener));
        }
        rtp::spawn_relays(&shared);
        tokio::spawn(timer::timer_loop(shared.clone()));
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
        shutdown::wait_for_signal().await;
        shutdown::drain(&shared, config.file.shutdown_grace).await;
        tracing::info!("recorder stopped");
        Ok(())
    }
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
