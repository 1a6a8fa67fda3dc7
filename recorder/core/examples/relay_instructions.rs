//! A fixed workload for counting the instructions the core spends per RTP
//! packet of a recorded call (`scripts/instructions.sh` runs it under
//! callgrind at two sizes; the difference is the per-packet cost without the
//! fixed start-up): one call of the Always user, `packets` G.711 packets
//! from each side, either relayed by the core (`userspace`: `handle_rtp`, as
//! the socket relay does) or read as the copies of packets the kernel fast
//! path relayed (`kernel`: `handle_rtp_copy`, as a shard does with its
//! ring). The recording events it emits are drained and dropped: the
//! recording pipeline's own cost is the other figure of the script.
//!
//! `relay_instructions <userspace|kernel> <packets per side>`

#[path = "../tests/sim/mod.rs"]
mod sim;

use std::time::{Duration, Instant};

use earshot_recorder_core::Recorder;
use sim::*;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let kernel = args.first().is_some_and(|m| m == "kernel");
    let packets: u32 = args.get(1).and_then(|n| n.parse().ok()).unwrap_or(3000);
    let ports: Vec<u16> = (30000..30100).step_by(2).collect();
    let mut rec = Recorder::new(mk_config(), &ports);
    let t0 = Instant::now();
    let call = establish(&mut rec, t0, "008", "500", "instructions-1");
    drain(&mut rec);
    let sides = [
        (call.port_for_caller, addr(CALLER_RTP), 0x1111u32),
        (call.port_for_callee, addr(CALLEE_RTP), 0x2222u32),
    ];
    let mut kept = 0usize;
    for n in 0..packets {
        let now = t0 + Duration::from_millis(1000 + 20 * u64::from(n));
        for &(port, from, ssrc) in &sides {
            let mut p = rtp(0, n as u16, n * 160, ssrc, &[0xff; 160]);
            // The first packets latch the leg in userspace, as in a call.
            if kernel && n >= earshot_recorder_core::engine::OFFLOAD_AFTER {
                rec.handle_rtp_copy(now, port, from, &mut p, 0);
            } else if rec.handle_rtp(now, port, from, &mut p).is_some() {
                kept += 1;
            }
        }
        kept += drain(&mut rec).events.len();
    }
    // Relayed packets and recording events: the work was done.
    assert!(kept as u32 >= packets * 2, "only {kept} packets and frames");
    println!("{kept}");
}
