//! The RTP/RTCP relay's sockets: one task per local port of a shard takes
//! every datagram waiting in the socket with one `recvmmsg`, feeds the
//! batch to the shard's core under one lock and relays what it says.
//!
//! Readiness is cleared by hand after a short batch (fewer datagrams than
//! asked for: the queue was empty), so a packet costs one receive call
//! instead of a receive and the `EAGAIN` that used to follow it. tokio's
//! readiness ticks keep this safe: readiness the reactor saw after the
//! batch began is not cleared.

use std::io::IoSliceMut;
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Instant;

use earshot_recorder_core::Relay;
use nix::errno::Errno;
use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrLike, SockaddrStorage, recvmmsg};
use tokio::io::unix::AsyncFd;

use super::shard::ShardRun;

/// A relay socket: non-blocking, registered for readability with its shard's runtime.
pub(super) type RtpSocket = AsyncFd<std::net::UdpSocket>;

/// Registers a bound, non-blocking relay socket with the current runtime.
#[allow(unsafe_code)]
pub(super) fn register(sock: std::net::UdpSocket) -> std::io::Result<RtpSocket> {
    // SAFETY: the `AsyncFd` takes ownership of the socket, so its
    // descriptor stays open and the same until the `AsyncFd` is dropped
    // (which deregisters it first); `as_raw_fd` of a `UdpSocket` never
    // changes. This is the I/O-safety contract `register_with_interest`
    // asks for.
    unsafe { AsyncFd::register_with_interest(sock, tokio::io::Interest::READABLE) }
        .map_err(std::io::Error::from)
}

/// Datagrams taken per receive call.
const BATCH: usize = 16;
/// Largest datagram kept whole; longer ones are cut to it (and then refused
/// by the core as malformed, or relayed cut, as any truncated packet).
const MAX_DATAGRAM: usize = 2048;

/// Starts one receive task per RTP/RTCP port the shard owns, on the
/// shard's `LocalSet`.
pub(super) fn spawn_relays(run: &Arc<ShardRun>) {
    for (i, sock) in run.rtp.iter().enumerate() {
        let Some(sock) = sock.clone() else { continue };
        let port = run.rtp_base + i as u16;
        // On the shard's own thread: a loop's receive headers (raw
        // pointers, allocated once) never leave it.
        tokio::task::spawn_local(rtp_loop(run.clone(), sock, port));
    }
}

impl ShardRun {
    /// Sends a datagram out of one of this shard's RTP/RTCP ports. A full
    /// socket buffer drops it, as the network would: media is not retried.
    pub(super) fn send_rtp(&self, relay: Relay, data: &[u8]) {
        let out = self
            .rtp
            .get(relay.from_port.wrapping_sub(self.rtp_base) as usize)
            .and_then(|s| s.as_ref());
        if let Some(out) = out {
            let _ = out.get_ref().send_to(data, relay.to);
        }
    }
}

fn to_std(a: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddrV4::from(*v4).into());
    }
    a.as_sockaddr_in6().map(|v6| SocketAddrV6::from(*v6).into())
}

/// One batch: how many datagrams, each one's length and source.
struct Batch {
    n: usize,
    got: [(usize, Option<SocketAddr>); BATCH],
}

/// Takes what the socket holds, up to [`BATCH`] datagrams, without waiting.
/// `headers` is the socket loop's own, allocated once.
fn receive(
    sock: &RtpSocket,
    headers: &mut MultiHeaders<SockaddrStorage>,
    bufs: &mut [[u8; MAX_DATAGRAM]; BATCH],
) -> nix::Result<Batch> {
    let mut slices = bufs.iter_mut();
    let mut iovs: [[IoSliceMut<'_>; 1]; BATCH] = std::array::from_fn(|_| {
        [IoSliceMut::new(
            slices.next().map_or(&mut [][..], |b| &mut b[..]),
        )]
    });
    let mut batch = Batch {
        n: 0,
        got: [(0, None); BATCH],
    };
    let msgs = recvmmsg(
        sock.as_raw_fd(),
        headers,
        iovs.iter_mut(),
        MsgFlags::MSG_DONTWAIT,
        None,
    )?;
    for (slot, m) in batch.got.iter_mut().zip(msgs) {
        let from = m
            .address
            .as_ref()
            .filter(|a| a.family().is_some())
            .and_then(to_std);
        *slot = (m.bytes.min(MAX_DATAGRAM), from);
        batch.n += 1;
    }
    Ok(batch)
}

async fn rtp_loop(run: Arc<ShardRun>, sock: Arc<RtpSocket>, port: u16) {
    let mut bufs = Box::new([[0u8; MAX_DATAGRAM]; BATCH]);
    let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
    let mut relays: [Option<Relay>; BATCH] = [None; BATCH];
    loop {
        let Ok(mut ready) = sock.readable().await else {
            // The runtime is shutting down.
            return;
        };
        let batch = match receive(&sock, &mut headers, &mut bufs) {
            Ok(b) => b,
            Err(Errno::EAGAIN) => {
                ready.clear_ready();
                continue;
            }
            // ICMP errors from earlier sends surface here; the socket is fine.
            Err(_) => continue,
        };
        if batch.n < BATCH {
            ready.clear_ready();
        }
        drop(ready);
        let now = Instant::now();
        run.with_core(|rec| {
            for (i, &(len, from)) in batch.got[..batch.n].iter().enumerate() {
                relays[i] =
                    from.and_then(|src| rec.handle_rtp(now, port, src, &mut bufs[i][..len]));
            }
        });
        for (i, relay) in relays[..batch.n].iter_mut().enumerate() {
            if let Some(r) = relay.take() {
                run.send_rtp(r, &bufs[i][..batch.got[i].0]);
            }
        }
    }
}
