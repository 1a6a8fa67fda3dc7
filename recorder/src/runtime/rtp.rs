//! The RTP/RTCP relay's sockets: one task per local port of a shard feeds
//! packets to the shard's core and relays them where it says.

use std::sync::Arc;
use std::time::Instant;

use tokio::net::UdpSocket;

use super::shard::ShardRun;

/// Starts one receive task per RTP/RTCP port the shard owns.
pub(super) fn spawn_relays(run: &Arc<ShardRun>) {
    for (i, sock) in run.rtp.iter().enumerate() {
        let Some(sock) = sock.clone() else { continue };
        let port = run.rtp_base + i as u16;
        tokio::spawn(rtp_loop(run.clone(), sock, port));
    }
}

async fn rtp_loop(run: Arc<ShardRun>, sock: Arc<UdpSocket>, port: u16) {
    let mut buf = vec![0u8; 2048];
    loop {
        let (n, src) = match sock.recv_from(&mut buf).await {
            Ok(x) => x,
            // ICMP errors from earlier sends surface here; the socket is fine.
            Err(_) => continue,
        };
        let now = Instant::now();
        let relay = run.with_core(|rec| rec.handle_rtp(now, port, src, &mut buf[..n]));
        if let Some(r) = relay {
            run.send_rtp(r, &buf[..n]);
        }
    }
}
