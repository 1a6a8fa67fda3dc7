//! The RTP/RTCP relay's sockets: one task per local port feeds packets to
//! the core and relays them where it says; sending out of a given port.

use std::sync::Arc;
use std::time::Instant;

use earshot_recorder_core::Relay;
use tokio::net::UdpSocket;

use super::Shared;

/// Starts one receive task per bound RTP/RTCP port.
pub(super) fn spawn_relays(shared: &Arc<Shared>) {
    for (i, sock) in shared.rtp.iter().enumerate() {
        let Some(sock) = sock.clone() else { continue };
        let port = shared.rtp_base + i as u16;
        tokio::spawn(rtp_loop(shared.clone(), sock, port));
    }
}

impl Shared {
    /// Sends a datagram out of one of our RTP/RTCP ports. A full socket
    /// buffer drops it, as the network would: media is not retried.
    pub(super) fn send_rtp(&self, relay: Relay, data: &[u8]) {
        let out = self
            .rtp
            .get(relay.from_port.wrapping_sub(self.rtp_base) as usize)
            .and_then(|s| s.as_ref());
        if let Some(out) = out {
            let _ = out.try_send_to(data, relay.to);
        }
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
