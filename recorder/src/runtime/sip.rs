//! SIP over UDP, TCP and TLS: the listeners that feed the core, and
//! sending what it produces — over UDP from the listening socket, over TCP
//! or TLS on the connection the peer opened or one we open to it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use earshot_recorder_core::sip::message::{Framed, frame_stream_from};
use earshot_recorder_core::{Target, Transport};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, watch};

use super::{Shared, lock};

/// Reads SIP datagrams into the core.
pub(super) async fn udp_loop(shared: Arc<Shared>, sock: Arc<UdpSocket>) {
    let mut buf = vec![0u8; 65536];
    loop {
        match sock.recv_from(&mut buf).await {
            Ok((n, src)) => {
                let target = Target {
                    transport: Transport::Udp,
                    addr: src,
                };
                shared.route_sip(target, &buf[..n], None);
            }
            Err(e) => tracing::debug!(error = %e, "SIP UDP receive error"),
        }
    }
}

/// Accepts SIP TCP (or, with `tls`, TLS) connections from peers, within
/// the connection limits; others are closed at once and counted
/// (`sip_dropped{reason="tcp_refused"}`). A TLS handshake must finish
/// within the per-message time (`sip.limits.tcpMessageSeconds`).
pub(super) async fn accept_loop(shared: Arc<Shared>, listener: TcpListener, tls: bool) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => match shared.admit_tcp(peer.ip()) {
                Some(slot) => {
                    let _ = stream.set_nodelay(true);
                    if !tls {
                        let target = Target {
                            transport: Transport::Tcp,
                            addr: peer,
                        };
                        shared.clone().serve_stream(stream, target, Some(slot));
                        continue;
                    }
                    let Some(t) = shared.tls.clone() else {
                        continue;
                    };
                    let shared = shared.clone();
                    let limit =
                        Duration::from_secs(u64::from(shared.tcp_limits.tcp_message_seconds));
                    tokio::spawn(async move {
                        match tokio::time::timeout(limit, t.acceptor.accept(stream)).await {
                            Ok(Ok(s)) => {
                                let target = Target {
                                    transport: Transport::Tls,
                                    addr: peer,
                                };
                                shared.serve_stream(s, target, Some(slot));
                            }
                            Ok(Err(e)) => {
                                lock(&shared.metrics).tls_handshake_failed();
                                tracing::debug!(error = %e, "SIP TLS handshake failed");
                            }
                            Err(_) => {
                                lock(&shared.metrics).tls_handshake_failed();
                                tracing::debug!("SIP TLS handshake not done in time");
                            }
                        }
                    });
                }
                None => {
                    lock(&shared.metrics).tcp_refused();
                    drop(stream);
                }
            },
            Err(e) => {
                tracing::warn!(error = %e, "SIP TCP accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// One accepted connection's place in the limits, given back when it closes.
pub(super) struct TcpSlot {
    shared: Arc<Shared>,
    ip: IpAddr,
}

impl Drop for TcpSlot {
    fn drop(&mut self) {
        let mut open = lock(&self.shared.tcp_open);
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.per_source.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.per_source.remove(&self.ip);
            }
        }
    }
}

/// SIP TCP connections open now.
#[derive(Debug, Default)]
pub(super) struct TcpOpen {
    total: u32,
    per_source: HashMap<IpAddr, u32>,
    /// Every open connection's (accepted or ours) close switch, by its id.
    closers: HashMap<u64, watch::Sender<bool>>,
}

/// Messages queued toward one connection before it is closed as a reader
/// that does not keep up.
const WRITE_QUEUE: usize = 256;
/// Messages of an inbound TLS connection searched for a request whose Via
/// gives its alias (each is parsed once more for it).
const ALIAS_TRIES: u8 = 4;

/// Returns once `switch` is thrown; never if it goes without being thrown
/// (the connection ended by itself and its last answers still go out).
async fn thrown(switch: &mut watch::Receiver<bool>) {
    if switch.wait_for(|closed| *closed).await.is_err() {
        std::future::pending::<()>().await;
    }
}

impl Shared {
    /// A place for a connection from `ip`: a peer's address, within the
    /// total and per-source limits.
    fn admit_tcp(self: &Arc<Self>, ip: IpAddr) -> Option<TcpSlot> {
        let known = self
            .acl
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|n| n.contains(ip));
        if !known {
            return None;
        }
        let limits = self.tcp_limits;
        let mut open = lock(&self.tcp_open);
        let from_ip = open.per_source.get(&ip).copied().unwrap_or(0);
        if open.total >= limits.tcp_connections || from_ip >= limits.tcp_connections_per_source {
            return None;
        }
        open.total += 1;
        open.per_source.insert(ip, from_ip + 1);
        Some(TcpSlot {
            shared: self.clone(),
            ip,
        })
    }

    pub(super) fn send_sip(self: &Arc<Self>, target: Target, data: Vec<u8>) {
        match target.transport {
            Transport::Udp => {
                let Some(sock) = self.sip_udp.clone() else {
                    tracing::warn!("SIP over UDP requested but the UDP listener is disabled");
                    return;
                };
                match sock.try_send_to(&data, target.addr) {
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        self.main.spawn(async move {
                            let _ = sock.send_to(&data, target.addr).await;
                        });
                    }
                    Err(e) => tracing::debug!(error = %e, "SIP send failed"),
                }
            }
            Transport::Tcp | Transport::Tls => {
                let existing = {
                    let map = lock(&self.tcp);
                    map.get(&target).cloned().or_else(|| {
                        // A TLS peer that connected to us is reached on its
                        // connection when its Via named this address
                        // (RFC 5923's alias): it may take none from us. A
                        // next hop of ours is always reached where it is.
                        let next_hop = self
                            .tls
                            .as_ref()
                            .is_some_and(|t| t.is_next_hop(target.addr));
                        (target.transport == Transport::Tls && !next_hop)
                            .then(|| {
                                let conn = *lock(&self.tls_aliases).get(&target.addr)?;
                                map.get(&conn).cloned()
                            })
                            .flatten()
                    })
                };
                match existing.map(|(id, tx)| (id, tx.try_send(data.clone()))) {
                    Some((_, Ok(()))) => {}
                    Some((id, Err(mpsc::error::TrySendError::Full(_)))) => {
                        // The peer does not read what we send: the
                        // connection is closed, and its queue goes with it;
                        // it never goes on with messages missing. Counted
                        // once per connection.
                        {
                            let mut map = lock(&self.tcp);
                            if map.get(&target).is_some_and(|(i, _)| *i == id) {
                                map.remove(&target);
                            }
                        }
                        let closer = lock(&self.tcp_open).closers.remove(&id);
                        if let Some(closer) = closer {
                            let _ = closer.send(true);
                            lock(&self.metrics).tcp_slow_reader();
                            tracing::warn!(peer = %target.addr, queued = WRITE_QUEUE, "closing a SIP connection whose peer does not read what is sent to it");
                        }
                    }
                    _ => {
                        let shared = self.clone();
                        self.main.spawn(async move {
                            let limit = Duration::from_secs(u64::from(
                                shared.tcp_limits.tcp_message_seconds,
                            ));
                            let connect = tokio::time::timeout(limit, TcpStream::connect(target.addr));
                            let stream = match connect.await.unwrap_or_else(|_| {
                                Err(std::io::Error::new(
                                    std::io::ErrorKind::TimedOut,
                                    "no answer in time",
                                ))
                            }) {
                                Ok(s) => s,
                                Err(e) => {
                                    tracing::warn!(error = %e, transport = target.transport.as_str(), "cannot open a SIP connection to the next hop");
                                    return;
                                }
                            };
                            let _ = stream.set_nodelay(true);
                            if target.transport == Transport::Tcp {
                                let tx = shared.clone().serve_stream(stream, target, None);
                                let _ = tx.try_send(data);
                                return;
                            }
                            let Some(connector) =
                                shared.tls.as_ref().and_then(|t| t.connector.clone())
                            else {
                                tracing::warn!("SIP over TLS to a next hop needs sip.tls.ca");
                                return;
                            };
                            let name = shared
                                .tls
                                .as_ref()
                                .map(|t| t.server_name(target.addr))
                                .expect("checked above");
                            match tokio::time::timeout(limit, connector.connect(name, stream)).await
                            {
                                Ok(Ok(s)) => {
                                    let tx = shared.clone().serve_stream(s, target, None);
                                    let _ = tx.try_send(data);
                                }
                                Ok(Err(e)) => {
                                    lock(&shared.metrics).tls_handshake_failed();
                                    tracing::warn!(error = %e, "SIP TLS to the next hop failed (its certificate is checked against sip.tls.ca and its name)");
                                }
                                Err(_) => {
                                    lock(&shared.metrics).tls_handshake_failed();
                                    tracing::warn!("SIP TLS handshake with the next hop not done in time");
                                }
                            }
                        });
                    }
                }
            }
        }
    }

    /// Makes the inbound TLS connection `conn` reachable at the address the
    /// top Via of `message` (a request) gives, if that address is at the
    /// connection's own IP (a peer cannot claim another host's address)
    /// and is no next hop's. Returns the address once a request named one.
    fn tls_alias(&self, conn: Target, message: &[u8]) -> Option<std::net::SocketAddr> {
        let msg = earshot_recorder_core::sip::Message::parse(message).ok()?;
        msg.method()?;
        let addr = msg.top_via_addr()?;
        let next_hop = self.tls.as_ref().is_some_and(|t| t.is_next_hop(addr));
        if addr.ip() == conn.addr.ip() && addr != conn.addr && !next_hop {
            lock(&self.tls_aliases).insert(addr, conn);
        }
        Some(addr)
    }

    /// Reads SIP messages from a TCP connection and registers its writer.
    /// The connection is closed when nothing comes for the idle time, when
    /// a message started is not complete within its time (slowloris), on
    /// data that cannot be framed, or when its peer does not read what is
    /// sent to it (its write queue full: `sip_dropped{reason="tcp_slow_reader"}`).
    fn serve_stream<S>(
        self: Arc<Self>,
        stream: S,
        target: Target,
        slot: Option<TcpSlot>,
    ) -> mpsc::Sender<Vec<u8>>
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let (mut reader, mut writer) = tokio::io::split(stream);
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(WRITE_QUEUE);
        let id = self.tcp_ids.fetch_add(1, Ordering::Relaxed);
        let (closer, close) = watch::channel(false);
        lock(&self.tcp_open).closers.insert(id, closer);
        lock(&self.tcp).insert(target, (id, tx.clone()));
        // Both halves go when the switch is thrown, even in the middle of a
        // write the peer does not take: the connection closes.
        let mut closing = close.clone();
        tokio::spawn(async move {
            loop {
                let data = tokio::select! {
                    data = rx.recv() => match data {
                        Some(data) => data,
                        None => break,
                    },
                    () = thrown(&mut closing) => break,
                };
                tokio::select! {
                    written = async {
                        writer.write_all(&data).await?;
                        writer.flush().await
                    } => if written.is_err() {
                        break;
                    },
                    () = thrown(&mut closing) => break,
                }
            }
        });
        let mut closing = close;
        let shared = self.clone();
        let idle = Duration::from_secs(u64::from(self.tcp_limits.tcp_idle_seconds));
        let per_message = Duration::from_secs(u64::from(self.tcp_limits.tcp_message_seconds));
        // An inbound TLS connection: the address its peer's requests name
        // becomes its alias (tried on its first few messages).
        let mut alias_tries = if slot.is_some() && target.transport == Transport::Tls {
            ALIAS_TRIES
        } else {
            0
        };
        tokio::spawn(async move {
            let _slot = slot;
            let mut alias = None;
            let mut buf: Vec<u8> = Vec::with_capacity(8192);
            let mut chunk = vec![0u8; 8192];
            // When the message now in the buffer began, and where the
            // search for its end picks up.
            let mut started: Option<Instant> = None;
            let mut resume = 0;
            'conn: loop {
                let wait = started.map_or(idle, |t| {
                    (t + per_message).saturating_duration_since(Instant::now())
                });
                let read = tokio::select! {
                    read = tokio::time::timeout(wait, reader.read(&mut chunk)) => read,
                    () = thrown(&mut closing) => break,
                };
                let n = match read {
                    Err(_) => {
                        tracing::debug!(
                            idle = started.is_none(),
                            "closing a SIP TCP connection: nothing, or no whole message, in time"
                        );
                        break;
                    }
                    Ok(Ok(0)) | Ok(Err(_)) => break,
                    Ok(Ok(n)) => n,
                };
                buf.extend_from_slice(&chunk[..n]);
                loop {
                    // Keep-alive CRLFs between messages (RFC 5626 §3.5.1).
                    if started.is_none() {
                        let skip = buf
                            .iter()
                            .take_while(|&&b| b == b'\r' || b == b'\n')
                            .count();
                        buf.drain(..skip);
                        if buf.is_empty() {
                            break;
                        }
                        started = Some(Instant::now());
                        resume = 0;
                    }
                    match frame_stream_from(&buf, resume) {
                        Ok(Framed::Message(len)) => {
                            if alias_tries > 0 {
                                alias_tries -= 1;
                                alias = shared.tls_alias(target, &buf[..len]);
                                if alias.is_some() {
                                    alias_tries = 0;
                                }
                            }
                            shared.route_sip(target, &buf[..len], None);
                            buf.drain(..len);
                            started = None;
                        }
                        Ok(Framed::NeedMore { resume: r }) => {
                            resume = r;
                            break;
                        }
                        Err(e) => {
                            tracing::info!(error = %e, "closing SIP TCP connection after unframeable data");
                            // Its 400 is queued before the connection goes.
                            let (tx, rx) = tokio::sync::oneshot::channel();
                            shared.route_sip(target, &buf, Some(tx));
                            let _ = tokio::time::timeout(Duration::from_secs(1), rx).await;
                            break 'conn;
                        }
                    }
                }
            }
            lock(&shared.tcp_open).closers.remove(&id);
            if let Some(a) = alias {
                let mut aliases = lock(&shared.tls_aliases);
                if aliases.get(&a) == Some(&target) {
                    aliases.remove(&a);
                }
            }
            let mut map = lock(&shared.tcp);
            // A newer connection from the same address may have replaced ours.
            if map.get(&target).is_some_and(|(i, _)| *i == id) {
                map.remove(&target);
            }
        });
        tx
    }
}
