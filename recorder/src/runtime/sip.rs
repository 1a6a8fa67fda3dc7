//! SIP over UDP and TCP: the listeners that feed the core, and sending what
//! it produces — over UDP from the listening socket, over TCP on the
//! connection the peer opened or one we open to it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use earshot_recorder_core::sip::message::frame_stream;
use earshot_recorder_core::{Target, Transport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;

use super::{Shared, lock};

/// Reads SIP datagrams into the core.
pub(super) async fn udp_loop(shared: Arc<Shared>, sock: Arc<UdpSocket>) {
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
}

/// Accepts SIP TCP connections.
pub(super) async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
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
}

impl Shared {
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
