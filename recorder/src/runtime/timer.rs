//! The core's timers: retransmissions, timeouts, announcement packets.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Shared, lock};

/// Wakes for the core's next timer (announcement packets are due every
/// 20 ms on the dot), at least every 20 ms, or when new input armed an
/// earlier one.
pub(super) async fn timer_loop(shared: Arc<Shared>) {
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
}
