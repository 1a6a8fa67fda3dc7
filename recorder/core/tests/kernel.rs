//! The kernel fast path as the core decides it: which legs it hands over,
//! and that nothing of a call stays with the kernel once the call ended.

mod sim;

use std::time::{Duration, Instant};

use earshot_recorder_core::Recorder;
use earshot_recorder_core::engine::{KernelForward, KernelStream, OFFLOAD_AFTER};
use sim::*;

/// Sends `n` packets from each side; returns what the core told the kernel.
fn packets(
    rec: &mut Recorder,
    call: &Call,
    from: Instant,
    first: u32,
    n: u32,
) -> Vec<(KernelStream, Option<KernelForward>)> {
    let mut told = Vec::new();
    for k in first..first + n {
        let now = from + Duration::from_millis(20 * u64::from(k - first));
        for (port, addr_, ssrc) in [
            (call.port_for_caller, addr(CALLER_RTP), 0x1111u32),
            (call.port_for_callee, addr(CALLEE_RTP), 0x2222u32),
        ] {
            let mut p = rtp(0, k as u16, k * 160, ssrc, &[0xff; 160]);
            rec.handle_rtp(now, port, addr_, &mut p);
            told.extend(drain(rec).kernel);
        }
    }
    told
}

#[test]
fn an_ended_call_is_taken_back_and_never_handed_over_again() {
    let ports: Vec<u16> = (30000..30100).step_by(2).collect();
    let mut rec = Recorder::new(mk_config(), &ports);
    rec.set_kernel_relay(true);
    let t0 = Instant::now();
    let call = establish(&mut rec, t0, "008", "500", "kernel-end");
    let t1 = t0 + Duration::from_secs(2);
    // Each leg is handed over after OFFLOAD_AFTER packets through userspace.
    let told = packets(&mut rec, &call, t1, 0, OFFLOAD_AFTER + 2);
    let handed: Vec<_> = told.iter().filter(|(_, f)| f.is_some()).collect();
    assert_eq!(handed.len(), 2, "both legs: {told:?}");
    // Loopback or not, each goes to the other party's address.
    for (s, f) in &handed {
        let f = f.unwrap();
        assert!(
            (s.source.port() == 4000 && f.to.port() == 6000)
                || (s.source.port() == 6000 && f.to.port() == 4000),
            "{s:?} -> {f:?}"
        );
    }
    // The caller hangs up: both taken back.
    let bye = sip_in(
        &mut rec,
        t1 + Duration::from_secs(1),
        CALLER,
        &mk_in_dialog("BYE", "kernel-end", 2, true, "", ""),
    );
    let back: Vec<_> = bye.kernel.iter().filter(|(_, f)| f.is_none()).collect();
    assert_eq!(back.len(), 2, "{:?}", bye.kernel);
    // The callee's last packets (and more) while the call lingers: relayed
    // in userspace, never handed to the kernel again.
    let after = packets(
        &mut rec,
        &call,
        t1 + Duration::from_secs(1),
        100,
        OFFLOAD_AFTER * 3,
    );
    assert!(
        after.iter().all(|(_, f)| f.is_none()),
        "handed over after the call ended: {after:?}"
    );
    // And when the call is forgotten, nothing is left to take back.
    rec.handle_timeout(t1 + Duration::from_secs(60));
    assert!(drain(&mut rec).kernel.iter().all(|(_, f)| f.is_none()));
}
