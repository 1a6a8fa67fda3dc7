//! The tokio shell around the sans-IO core: SIP over UDP and TCP, one task
//! per RTP/RTCP socket, a 20 ms timer tick, the HTTP endpoints, config
//! reload and the SIGTERM drain. The core sits behind one mutex that is
//! never held across an `.await`; every send happens after it is released.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use earshot_recorder_core::sip::message::frame_stream;
use earshot_recorder_core::{Event, Output, Recorder, Relay, Target, Transport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;

use crate::config::Config;
use crate::events::{Clock, EventLog};
use crate::metrics::Metrics;

/// State shared by every task.
pub struct Shared {
    rec: Mutex<Recorder>,
    metrics: Mutex<Metrics>,
    sip_udp: Option<Arc<UdpSocket>>,
    tcp: Mutex<HashMap<SocketAddr, mpsc::UnboundedSender<Vec<u8>>>>,
    rtp: Vec<Option<Arc<UdpSocket>>>,
    rtp_base: u16,
    events: Arc<crate::recording::EventBuffer>,
    spool: Arc<crate::spool::Spool>,
    recording: crate::recording::SettingsHandle,
    ready: AtomicBool,
    timer_wake: tokio::sync::Notify,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
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
    fn with_core<R>(self: &Arc<Self>, f: impl FnOnce(&mut Recorder) -> R) -> R {
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

    /// Sends a datagram out of one of our RTP/RTCP ports. A full socket
    /// buffer drops it, as the network would: media is not retried.
    fn send_rtp(&self, relay: Relay, data: &[u8]) {
        let out = self
            .rtp
            .get(relay.from_port.wrapping_sub(self.rtp_base) as usize)
            .and_then(|s| s.as_ref());
        if let Some(out) = out {
            let _ = out.try_send_to(data, relay.to);
        }
    }

    fn send_sip(self: &Arc<Self>, target: Target, data: Vec<u8>) {
        match target.transport {
            Transport::Udp => {
                let Some(sock) = self.sip_udp.clone() else {
                    tracing::warn!("SIP over UDP requested but the UDP listener is disabled");
                    return;
                };
                match sock.try_send_to(&data, target.addr) {
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        tokio::spawn(async move {
                            let _ = sock.send_to(&data, target.addr).await;
                        });
                    }
                    Err(e) => tracing::debug!(error = %e, "SIP send failed"),
                }
            }
            Transport::Tcp => {
                let existing = lock(&self.tcp).get(&target.addr).cloned();
                match existing {
                    Some(tx) if tx.send(data.clone()).is_ok() => {}
                    _ => {
                        let shared = self.clone();
                        tokio::spawn(async move {
                            match TcpStream::connect(target.addr).await {
                                Ok(stream) => {
                                    let tx = shared.clone().serve_tcp(stream, target.addr);
                                    let _ = tx.send(data);
                                }
                                Err(e) => {
                                    tracing::warn!(error = %e, "cannot open SIP TCP connection to next hop")
                                }
                            }
                        });
                    }
                }
            }
        }
    }

    /// Reads SIP messages from a TCP connection and registers its writer.
    fn serve_tcp(
        self: Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
    ) -> mpsc::UnboundedSender<Vec<u8>> {
        let _ = stream.set_nodelay(true);
        let (mut reader, mut writer) = stream.into_split();
        let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
        lock(&self.tcp).insert(peer, tx.clone());
        tokio::spawn(async move {
            while let Some(data) = rx.recv().await {
                if writer.write_all(&data).await.is_err() {
                    break;
                }
            }
        });
        let shared = self.clone();
        let own = tx.clone();
        tokio::spawn(async move {
            let mut buf: Vec<u8> = Vec::with_capacity(8192);
            let mut chunk = vec![0u8; 8192];
            'conn: loop {
                let n = match reader.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                buf.extend_from_slice(&chunk[..n]);
                loop {
                    // Keep-alive CRLFs between messages (RFC 5626 §3.5.1).
                    let skip = buf
                        .iter()
                        .take_while(|&&b| b == b'\r' || b == b'\n')
                        .count();
                    buf.drain(..skip);
                    match frame_stream(&buf) {
                        Ok(Some(len)) => {
                            let now = Instant::now();
                            let target = Target {
                                transport: Transport::Tcp,
                                addr: peer,
                            };
                            shared.with_core(|rec| rec.handle_sip(now, target, &buf[..len]));
                            buf.drain(..len);
                        }
                        Ok(None) => break,
                        Err(e) => {
                            tracing::info!(error = %e, "closing SIP TCP connection after unframeable data");
                            shared.with_core(|rec| {
                                rec.handle_sip(
                                    Instant::now(),
                                    Target {
                                        transport: Transport::Tcp,
                                        addr: peer,
                                    },
                                    &buf,
                                )
                            });
                            break 'conn;
                        }
                    }
                }
            }
            let mut map = lock(&shared.tcp);
            // A newer connection from the same address may have replaced ours.
            if map.get(&peer).is_some_and(|t| t.same_channel(&own)) {
                map.remove(&peer);
            }
        });
        tx
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
    let seed = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        ^ u64::from(std::process::id());
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
        crate::recording::lame(),
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
        let mut log = EventLog::open(config.file.events.path.as_deref(), clock)
            .with_context(|| format!("cannot open event log {:?}", config.file.events.path))?;
        // The dispatcher thread: event log, info lines, and the recording pipeline.
        std::thread::Builder::new()
            .name("dispatcher".into())
            .spawn(move || {
                crate::recording::run_dispatcher(dispatcher, events_rx, |e| {
                    log_event(e);
                    log.write(e);
                })
            })?;

        if let Some(sock) = shared.sip_udp.clone() {
            let shared = shared.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                loop {
                    match sock.recv_from(&mut buf).await {
                        Ok((n, src)) => {
                            let now = Instant::now();
                            let target = Target {
                                transport: Transport::Udp,
                                addr: src,
                            };
                            shared.with_core(|rec| rec.handle_sip(now, target, &buf[..n]));
                        }
                        Err(e) => tracing::debug!(error = %e, "SIP UDP receive error"),
                    }
                }
            });
        }
        if let Some(listener) = tcp_listener {
            let shared = shared.clone();
            tokio::spawn(async move {
                loop {
                    match listener.accept().await {
                        Ok((stream, peer)) => {
                            shared.clone().serve_tcp(stream, peer);
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "SIP TCP accept failed");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
            });
        }
        for (i, sock) in shared.rtp.iter().enumerate() {
            let Some(sock) = sock.clone() else { continue };
            let shared = shared.clone();
            let port = shared.rtp_base + i as u16;
            tokio::spawn(async move { rtp_loop(shared, sock, port).await });
        }
        {
            let shared = shared.clone();
            tokio::spawn(async move {
                // Wake for the core's next timer (announcement packets are
                // due every 20 ms on the dot), at least every 20 ms.
                loop {
                    let now = Instant::now();
                    let next = lock(&shared.rec).next_timeout();
                    let wake = next
                        .unwrap_or(now + Duration::from_millis(20))
                        .clamp(now, now + Duration::from_millis(20));
                    tokio::select! {
                        _ = tokio::time::sleep_until(wake.into()) => {}
                        _ = shared.timer_wake.notified() => {}
                    }
                    let now = Instant::now();
                    shared.with_core(|rec| rec.handle_timeout(now));
                }
            });
        }
        {
            let shared = shared.clone();
            let app = axum::Router::new()
                .route("/metrics", axum::routing::get({
                    let shared = shared.clone();
                    move || {
                        let shared = shared.clone();
                        async move {
                            let stats = lock(&shared.rec).stats().clone();
                            let spool = shared.spool.usage(SystemTime::now());
                            let mut m = lock(&shared.metrics);
                            m.sync(&stats);
                            m.set_spool(&spool);
                            (
                                [(axum::http::header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
                                m.encode(),
                            )
                        }
                    }
                }))
                .route("/healthz", axum::routing::get(|| async { "ok\n" }))
                .route("/readyz", axum::routing::get({
                    let shared = shared.clone();
                    move || {
                        let shared = shared.clone();
                        async move {
                            if shared.ready.load(Ordering::Relaxed) {
                                (axum::http::StatusCode::OK, "ready\n")
                            } else {
                                (axum::http::StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
                            }
                        }
                    }
                }));
            tokio::spawn(async move {
                if let Err(e) = axum::serve(http_listener, app).await {
                    tracing::error!(error = %e, "HTTP server stopped");
                }
            });
        }
        {
            let shared = shared.clone();
            let path = config_path.clone();
            let files = config.watched_files(&config_path);
            let running = config.file.clone();
            tokio::spawn(async move { watch_config(shared, path, files, running).await });
        }

        if let Some(fs) = config.file.storage.filesystem.clone()
            && let Some(days) = fs.retention_days
        {
            // At start and then daily, like a lifecycle rule would.
            tokio::spawn(async move {
                let mut day = tokio::time::interval(Duration::from_secs(86_400));
                loop {
                    day.tick().await;
                    match crate::store::expire_local(&fs.path, days, SystemTime::now()) {
                        Ok(n) => tracing::info!(
                            deleted = n,
                            retention_days = days,
                            "expired old recordings"
                        ),
                        Err(e) => tracing::error!(error = %e, "cannot expire old recordings"),
                    }
                }
            });
        }
        shared.ready.store(true, Ordering::Relaxed);
        wait_for_signal().await;

        // Drain: refuse new calls, let calls in progress finish.
        shared.ready.store(false, Ordering::Relaxed);
        lock(&shared.metrics).set_draining();
        let active = shared.with_core(|rec| {
            rec.drain();
            rec.active_calls()
        });
        tracing::info!(active_calls = active, grace = ?config.file.shutdown_grace, "draining: new calls are refused, calls in progress continue");
        let deadline = Instant::now() + config.file.shutdown_grace;
        let active = wait_until(deadline, || lock(&shared.rec).active_calls()).await;
        if active > 0 {
            tracing::warn!(
                active_calls = active,
                "shutdown grace period over with calls still in progress"
            );
        }
        // No more events: the dispatcher finishes the recordings of any call
        // the grace period cut short, so they are stored complete as far as
        // they went instead of waiting for the next start.
        shared.events.close();
        // Then the recordings: encoded, spooled and confirmed by the store.
        // Until the dispatcher's last round is done, the encoders have
        // nothing queued and the store has every recording.
        let spooled = wait_until(deadline, || {
            let queued = lock(&shared.metrics)
                .recording
                .encoder_queue_depth
                .get()
                .max(0) as usize;
            let dispatching = usize::from(!shared.events.finished());
            dispatching + queued + shared.spool.usage(SystemTime::now()).recordings as usize
        })
        .await;
        if spooled > 0 {
            tracing::warn!(
                recordings = spooled,
                "shutdown grace period over with recordings still in the spool; they are uploaded at the next start"
            );
        }
        tracing::info!("recorder stopped");
        Ok(())
    }
}

/// Polls `left` every 200 ms until it reaches zero or the deadline passes;
/// returns what is left.
async fn wait_until(deadline: Instant, mut left: impl FnMut() -> usize) -> usize {
    loop {
        let n = left();
        if n == 0 || Instant::now() >= deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn rtp_loop(shared: Arc<Shared>, sock: Arc<UdpSocket>, port: u16) {
    let mut buf = vec![0u8; 2048];
    loop {
        let (n, src) = match sock.recv_from(&mut buf).await {
            Ok(x) => x,
            // ICMP errors from earlier sends surface here; the socket is fine.
            Err(_) => continue,
        };
        let now = Instant::now();
        let relay = shared.with_core(|rec| rec.handle_rtp(now, port, src, &mut buf[..n]));
        if let Some(r) = relay {
            shared.send_rtp(r, &buf[..n]);
        }
    }
}

fn log_event(e: &Event) {
    match e {
        Event::CallStarted { call, users, .. } => {
            tracing::info!(call = %call.hash, policy_users = users.len(), "call started");
        }
        Event::CallAnswered { call, .. } => tracing::info!(call = %call.hash, "call answered"),
        Event::Recording {
            call, on, reason, ..
        } => {
            let why = match reason {
                earshot_recorder_core::RecordingReason::Answered { .. } => "always",
                earshot_recorder_core::RecordingReason::Shortcode { .. } => "shortcode",
                earshot_recorder_core::RecordingReason::CallEnded => "call_ended",
            };
            tracing::info!(call = %call.hash, recording = on, reason = why, "recording changed");
        }
        Event::CallEnded { call, answered, .. } => {
            tracing::info!(call = %call.hash, answered, "call ended")
        }
        Event::Dtmf {
            call, side, method, ..
        } => {
            tracing::debug!(call = %call.hash, side = side.as_str(), method = method.label(), "dtmf digit");
        }
        Event::Announcement {
            call,
            kind,
            to,
            outcome,
            played,
            ..
        } => {
            tracing::info!(call = %call.hash, kind = kind.label(), to = to.as_str(), result = outcome.label(), played_ms = played.as_millis() as u64, "announcement");
        }
        Event::Media(_) => {}
    }
}

async fn watch_config(
    shared: Arc<Shared>,
    path: PathBuf,
    mut files: Vec<PathBuf>,
    running: earshot_contracts::config::RecorderConfig,
) {
    // The config file and the files it names (the prompt): a change to any
    // of them reloads everything.
    let stamp = |files: &[PathBuf]| {
        files
            .iter()
            .map(|p| {
                std::fs::metadata(p)
                    .ok()
                    .map(|m| (m.modified().ok(), m.len()))
            })
            .collect::<Vec<_>>()
    };
    files.insert(0, path.clone());
    let mut last = stamp(&files);
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let now = stamp(&files);
        if now == last {
            continue;
        }
        let result = match Config::load(&path) {
            Ok(cfg) => cfg
                .core_config(0)
                .await
                .map_err(|e| e.to_string())
                .map(|core| (cfg, core)),
            Err(e) => Err(e.to_string()),
        };
        match result {
            Ok((cfg, core)) => {
                files = std::iter::once(path.clone())
                    .chain(cfg.watched_files(&path))
                    .collect();
                last = stamp(&files);
                shared.with_core(|rec| rec.update_config(core));
                *shared.recording.write().unwrap_or_else(|e| e.into_inner()) =
                    crate::recording::Settings::from_config(&cfg.file.recording);
                lock(&shared.metrics).reload(true);
                for w in &cfg.warnings {
                    tracing::error!("{w}");
                }
                let pending = cfg.file.needs_restart(&running);
                if !pending.is_empty() {
                    tracing::warn!(
                        settings = pending.join(", "),
                        "these config changes take effect at the next restart (a rollout); the rest is applied"
                    );
                }
                tracing::info!(
                    users = cfg.users.len(),
                    peers = cfg.peers.len(),
                    "config reloaded; calls in progress keep their settings"
                );
            }
            Err(e) => {
                last = now;
                lock(&shared.metrics).reload(false);
                tracing::error!(error = %e, "config change rejected; keeping the previous config");
            }
        }
    }
}

async fn wait_for_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}
