//! The kernel fast path, as the core decides it: which established streams
//! the kernel relays, and when the core takes one back.
//!
//! The shell may load a TC program that relays a stream's packets in the
//! kernel and hands the core a copy of each ([`Recorder::handle_rtp_copy`]).
//! The core alone decides which streams it relays, by
//! [`Output::Kernel`]: a leg is handed over once its source is latched and
//! has sent [`OFFLOAD_AFTER`] packets through userspace, the stream is plain
//! RTP and nothing the core does would change its packets other than a
//! constant shift of their numbering (after an announcement). It is taken
//! back before anything else must touch them: an announcement toward its
//! receiver, new SDP, the call's end. A leg's state is compared with what
//! is installed after each packet userspace relays and after each change,
//! so what the kernel holds never outlives what the core knows.

use std::net::{SocketAddr, SocketAddrV4};
use std::time::Instant;

use crate::event::{MediaNote, Side};
use crate::stats::Stats;

use super::media::{Stream, encrypted};
use super::{Output, Recorder};

/// Packets a latched leg sends through userspace before the kernel takes it.
pub const OFFLOAD_AFTER: u32 = 10;

/// A stream as the kernel recognises it: our port its packets come to and
/// the source they must come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KernelStream {
    /// Our RTP port the leg sends to.
    pub local_port: u16,
    /// The leg's latched source.
    pub source: SocketAddrV4,
}

/// How the kernel relays a stream's packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelForward {
    /// Our port the packets leave from.
    pub from_port: u16,
    /// Where they go.
    pub to: SocketAddrV4,
    /// The destination is on this host (loopback, or an address of the
    /// recorder's): rewritten and delivered, not routed.
    pub local: bool,
    /// Offsets an announcement left on the numbering of one SSRC: packets
    /// of that SSRC are shifted by them, others go to userspace.
    pub shift: Option<Shift>,
}

/// A constant shift of one SSRC's RTP numbering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shift {
    /// The SSRC it applies to.
    pub ssrc: u32,
    /// Added to sequence numbers.
    pub seq: u16,
    /// Added to timestamps.
    pub timestamp: u32,
}

/// Why a leg was taken back from the kernel (the `earshot_kernel_handbacks_total` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handback {
    /// An announcement plays toward its receiver (or just ended).
    Announcement,
    /// New SDP, a new source or destination, a change of SSRC.
    Changed,
    /// The call ended.
    CallEnded,
}

impl Handback {
    fn label(self) -> &'static str {
        match self {
            Handback::Announcement => "announcement",
            Handback::Changed => "changed",
            Handback::CallEnded => "call_ended",
        }
    }
}

/// A leg's part in the fast path.
#[derive(Debug, Default)]
pub(super) struct LegKernel {
    /// What the kernel was told for this leg.
    pub(super) installed: Option<(KernelStream, KernelForward)>,
    /// Packets relayed in userspace since the leg latched.
    pub(super) userspace: u32,
    /// Copies the kernel lost for this leg, as of its last copy.
    pub(super) copies_lost: u32,
}

fn v4(a: SocketAddr) -> Option<SocketAddrV4> {
    match a {
        SocketAddr::V4(a) => Some(a),
        SocketAddr::V6(a) => a
            .ip()
            .to_ipv4_mapped()
            .map(|ip| SocketAddrV4::new(ip, a.port())),
    }
}

impl Stream {
    /// What the kernel should do with packets from `sender`, if anything.
    fn kernel_wanted(&self, sender: Side) -> Option<(KernelStream, KernelForward)> {
        let leg = &self.legs[sender.index()];
        let other = &self.legs[sender.other().index()];
        // Audio only: the program applies the audio rate limit, and video
        // is relayed, never recorded, so there is no copy to read.
        let audio = self
            .legs
            .iter()
            .all(|l| l.stream.as_ref().is_some_and(|s| s.media == "audio"));
        if self.ports[0] == 0 || !audio || !self.is_rtp() || encrypted(&self.legs) {
            return None;
        }
        if leg.kernel.userspace < OFFLOAD_AFTER {
            return None;
        }
        let source = v4(leg.latched?)?;
        let to = v4(other.latched.or(other.negotiated)?)?;
        // A loopback destination is delivered locally, which the stack
        // accepts only from loopback; anything else for the host itself
        // (the recorder's own address) stays in userspace.
        if to.ip().is_loopback() != source.ip().is_loopback() {
            return None;
        }
        let shift = match leg.onward.steady()? {
            (_, 0, 0) => None,
            (ssrc, seq, timestamp) => Some(Shift {
                ssrc: ssrc?,
                seq,
                timestamp,
            }),
        };
        Some((
            KernelStream {
                local_port: self.ports[sender.index()],
                source,
            },
            KernelForward {
                from_port: self.ports[sender.other().index()],
                to,
                local: to.ip().is_loopback(),
                shift,
            },
        ))
    }
}

impl Recorder {
    /// Lets the core hand streams to the kernel (the shell loaded the fast
    /// path and reads this shard's copies). Off by default.
    pub fn set_kernel_relay(&mut self, on: bool) {
        self.kernel_relay = on;
    }

    /// Brings what the kernel holds for a call's streams in line with what
    /// the core knows now: hands over legs that became eligible, updates
    /// those whose forwarding changed, takes back the others.
    pub(super) fn kernel_sync(&mut self, cid: u64, why: Handback) {
        let Some(call) = self.calls.get_mut(&cid) else {
            return;
        };
        // An ended call lingers (its last packets still relayed) but the
        // kernel takes none of it again: `forget_call` frees its ports.
        let relay = self.kernel_relay && call.srs.is_none() && call.ended.is_none();
        for stream in call.streams.iter_mut() {
            for sender in [Side::Caller, Side::Callee] {
                let wanted = if relay {
                    stream.kernel_wanted(sender)
                } else {
                    None
                };
                let leg = &mut stream.legs[sender.index()];
                let installed = leg.kernel.installed;
                if installed == wanted {
                    continue;
                }
                match (installed, wanted) {
                    (Some((old, _)), Some((new, _))) if old != new => {
                        // Another key: the old entry goes first.
                        self.out.push_back(Output::Kernel {
                            stream: old,
                            forward: None,
                        });
                        Stats::bump(&mut self.stats.kernel, why.label());
                    }
                    (Some((old, _)), None) => {
                        self.out.push_back(Output::Kernel {
                            stream: old,
                            forward: None,
                        });
                        Stats::bump(&mut self.stats.kernel, why.label());
                    }
                    _ => {}
                }
                if let Some((key, forward)) = wanted {
                    if installed.is_none_or(|(k, _)| k != key) {
                        Stats::bump(&mut self.stats.kernel, "offloaded");
                        leg.kernel.copies_lost = 0;
                    }
                    self.out.push_back(Output::Kernel {
                        stream: key,
                        forward: Some(forward),
                    });
                }
                leg.kernel.installed = wanted;
            }
        }
    }

    /// Takes back every leg of a call the kernel relays (the call ended, or
    /// is forgotten).
    pub(super) fn kernel_forget(&mut self, cid: u64) {
        let Some(call) = self.calls.get_mut(&cid) else {
            return;
        };
        for stream in call.streams.iter_mut() {
            for leg in stream.legs.iter_mut() {
                if let Some((key, _)) = leg.kernel.installed.take() {
                    self.out.push_back(Output::Kernel {
                        stream: key,
                        forward: None,
                    });
                    Stats::bump(&mut self.stats.kernel, Handback::CallEnded.label());
                }
            }
        }
    }

    /// A copy of a packet the kernel relayed on `local_port` from `source`,
    /// as it arrived at `at`; `copies_lost` is how many copies the kernel
    /// could not hand over for this stream before this one. The core reads
    /// it as it reads a packet it relays (recording, DTMF, numbering after
    /// an announcement) and relays nothing.
    pub fn handle_rtp_copy(
        &mut self,
        at: Instant,
        local_port: u16,
        source: SocketAddr,
        data: &mut [u8],
        copies_lost: u32,
    ) {
        let Some(((cid, idx, facing), false)) = self.ports.owner(local_port) else {
            Stats::bump(&mut self.stats.rtp_dropped, "stale_copy");
            return;
        };
        let Some(leg) = self
            .calls
            .get_mut(&cid)
            .and_then(|c| c.streams.get_mut(idx as usize))
            .map(|s| &mut s.legs[facing.index()])
        else {
            Stats::bump(&mut self.stats.rtp_dropped, "stale_copy");
            return;
        };
        if leg.latched != Some(source) {
            // Relayed just before the core took the leg back for a new source.
            Stats::bump(&mut self.stats.rtp_dropped, "stale_copy");
            return;
        }
        let lost = copies_lost > leg.kernel.copies_lost;
        leg.kernel.copies_lost = leg.kernel.copies_lost.max(copies_lost);
        if lost {
            self.note_media(at, cid, MediaNote::CopiesLost);
        }
        self.rtp_in(at, local_port, source, data, true);
    }

    /// Copies the kernel lost for a leg it no longer relays (read from its
    /// counters when the shell took it back): the recording says so.
    pub fn kernel_copies_lost(&mut self, now: Instant, stream: KernelStream, lost: u32) {
        let Some(((cid, idx, facing), _)) = self.ports.owner(stream.local_port) else {
            return;
        };
        let seen = self
            .calls
            .get(&cid)
            .and_then(|c| c.streams.get(idx as usize))
            .map_or(u32::MAX, |s| s.legs[facing.index()].kernel.copies_lost);
        if lost > seen {
            self.note_media(now, cid, MediaNote::CopiesLost);
        }
    }
}
