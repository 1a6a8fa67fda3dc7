//! The kernel fast path's shell: loads the eBPF program built from
//! `recorder/bpf/fastpath.bpf.c`, attaches it at the ingress of the
//! interfaces, writes what the cores decide into its `streams` map and
//! hands each shard the copies from its ring.
//!
//! Loaded with `aya` (0.14): pure Rust, no libbpf or bpftool at run time,
//! TCX links that the kernel detaches when the process exits (a crashed
//! recorder leaves no program relaying streams nobody records), and ring
//! buffers read through a memory map. libbpf-rs would link the C libbpf and
//! want a skeleton generated at build time for the same result.
//!
//! The program is only attached through TCX (kernel 6.6 or later; 6.7 for
//! the FIB lookup's source address the program asks for): a
//! netlink filter would outlive the process, and with it the forwarding of
//! streams whose calls nobody follows any more.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context;
use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf};
use aya::programs::{SchedClassifier, TcAttachType};
use earshot_contracts::config::{KernelFastPath, RtpConfig};
use earshot_recorder_core::engine::{KernelForward, KernelStream};

use super::lock;

/// The program, compiled by `build.rs` (empty when clang was missing).
static OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/fastpath.bpf.o"));

/// Rings the program has: shards beyond them relay in userspace.
pub(super) const RINGS: usize = 8;
/// Bytes of each shard's ring unless the config says: about 4 000 copies, 0.4 s of 100 calls.
const RING_BYTES: u32 = 4 << 20;
/// Longest packet the program copies (`MAX_COPY` in the C source).
const MAX_COPY: usize = 1024;
/// A copy record's header before the packet (`struct copy`).
const COPY_HEADER: usize = 24;
/// How often a shard reads its ring: copies are recorded, not relayed, so
/// a few milliseconds cost nothing, and one wake-up takes a batch.
pub(super) const READ_EVERY: Duration = Duration::from_millis(5);

const F_LOCAL: u8 = 1;
const F_SSRC: u8 = 2;
const F_BOUND: u8 = 4;

/// `struct stream_key`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Key {
    saddr: u32,
    sport: u16,
    dport: u16,
}

/// `struct stream_fwd`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct Fwd {
    saddr: u32,
    daddr: u32,
    sport: u16,
    dport: u16,
    ssrc: u32,
    ts_off: u32,
    seq_off: u16,
    ring: u8,
    flags: u8,
    window: u64,
    in_window: u64,
    packets: u64,
    bytes: u64,
    copy_drops: u64,
    rate_drops: u64,
}

// SAFETY: both are `repr(C)` plain integers without padding the kernel
// would read (Key: 4+2+2; Fwd: every field aligned, 72 bytes), matching the
// C structs field for field.
#[allow(unsafe_code)]
unsafe impl aya::Pod for Key {}
#[allow(unsafe_code)]
unsafe impl aya::Pod for Fwd {}

impl Key {
    fn of(s: KernelStream) -> Self {
        Key {
            saddr: u32::from_ne_bytes(s.source.ip().octets()),
            sport: s.source.port().to_be(),
            dport: s.local_port.to_be(),
        }
    }
}

/// Totals the program counts (indexes of its `totals` map).
pub const TOTALS: [&str; 5] = [
    "relayed",
    "to_userspace",
    "copies_lost",
    "no_route",
    "rate_limited",
];

/// What the recorder's relay runs on, for `/metrics` and the start line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Not asked for.
    Off,
    /// Asked for (`Auto`) and not possible here: why.
    Unavailable(String),
    /// Attached at these interfaces.
    Active(Vec<String>),
}

impl State {
    /// The `state` label of `earshot_kernel_fast_path`.
    pub fn label(&self) -> &'static str {
        match self {
            State::Off => "off",
            State::Unavailable(_) => "unavailable",
            State::Active(_) => "active",
        }
    }
}

struct Loaded {
    /// The program and its links: dropped with the process, which detaches it.
    ebpf: Mutex<aya::Ebpf>,
    /// Keeps the kernel counting the program's runs and their time
    /// (`BPF_ENABLE_STATS`, which needs CAP_SYS_ADMIN: `None` in a pod)
    /// while the process lives: about two clock reads per packet, for
    /// `earshot_kernel_program_seconds_total`.
    _stats: Option<std::os::fd::OwnedFd>,
    streams: Mutex<BpfHashMap<MapData, Key, Fwd>>,
    totals: Mutex<PerCpuArray<MapData, u64>>,
    rings: Mutex<Vec<Option<RingBuf<MapData>>>>,
    /// Our source address when the relay's sockets are bound to one.
    bind: Option<Ipv4Addr>,
}

/// The fast path of one process.
pub struct FastPath {
    state: State,
    loaded: Option<Loaded>,
}

/// Interfaces that are up, as the kernel lists them.
fn interfaces_up() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/sys/class/net") else {
        return Vec::new();
    };
    let mut up: Vec<String> = dir
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let flags = std::fs::read_to_string(e.path().join("flags")).ok()?;
            let flags = u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16).ok()?;
            (flags & 1 == 1).then_some(name)
        })
        .collect();
    up.sort();
    up
}

impl FastPath {
    /// Userspace only.
    pub fn off() -> Self {
        FastPath {
            state: State::Off,
            loaded: None,
        }
    }

    /// Loads and attaches the program as the config asks. `Auto` falls back
    /// to userspace with the reason; `Required` fails instead.
    pub fn start(rtp: &RtpConfig, shards: usize, ports: usize) -> anyhow::Result<Self> {
        if rtp.kernel_fast_path == KernelFastPath::Off {
            return Ok(Self::off());
        }
        match Self::load(rtp, shards, ports) {
            Ok(f) => Ok(f),
            Err(e) if rtp.kernel_fast_path == KernelFastPath::Auto => {
                let why = format!("{e:#}");
                tracing::warn!(reason = %why, "kernel fast path unavailable: relaying in userspace");
                Ok(FastPath {
                    state: State::Unavailable(why),
                    loaded: None,
                })
            }
            Err(e) => Err(e.context("kernelFastPath is Required")),
        }
    }

    fn load(rtp: &RtpConfig, shards: usize, ports: usize) -> anyhow::Result<Self> {
        if OBJECT.is_empty() {
            anyhow::bail!("this build has no eBPF program (clang was missing when it was built)");
        }
        let kernel =
            aya::util::KernelVersion::current().context("cannot read the kernel version")?;
        if kernel < aya::util::KernelVersion::new(6, 7, 0) {
            anyhow::bail!(
                "kernel {kernel:?} is older than 6.7 (TCX links, which go with the process, came in 6.6; the FIB lookup's source address in 6.7)"
            );
        }
        let mut loader = aya::EbpfLoader::new();
        // One entry per local port at most: the map cannot grow past the range.
        let entries = u32::try_from(ports.max(1)).unwrap_or(u32::MAX);
        loader.map_max_entries("streams", entries);
        let names: Vec<String> = (0..RINGS).map(|i| format!("ring{i}")).collect();
        let page = 4096;
        let ring_bytes = match rtp.kernel_ring_bytes {
            0 => RING_BYTES,
            n => n.max(page).checked_next_power_of_two().unwrap_or(1 << 30),
        };
        for (i, name) in names.iter().enumerate() {
            loader.map_max_entries(name, if i < shards { ring_bytes } else { page });
        }
        let mut ebpf = loader.load(OBJECT).context(
            "cannot load the eBPF program (CAP_BPF and CAP_NET_ADMIN, or root, are needed)",
        )?;
        let prog: &mut SchedClassifier = ebpf
            .program_mut("earshot_fastpath")
            .context("the object has no earshot_fastpath program")?
            .try_into()
            .context("earshot_fastpath is not a classifier")?;
        prog.load()
            .context("the kernel's verifier refused the program")?;
        let wanted = if rtp.kernel_interfaces.is_empty() {
            interfaces_up()
        } else {
            rtp.kernel_interfaces.clone()
        };
        let mut attached = Vec::new();
        for iface in &wanted {
            prog.attach(iface, TcAttachType::Ingress)
                .with_context(|| format!("cannot attach at the ingress of {iface}"))?;
            attached.push(iface.clone());
        }
        if attached.is_empty() {
            anyhow::bail!("no interface to attach to");
        }
        let streams = BpfHashMap::try_from(ebpf.take_map("streams").context("no streams map")?)?;
        let totals = PerCpuArray::try_from(ebpf.take_map("totals").context("no totals map")?)?;
        let mut rings = Vec::with_capacity(RINGS);
        for (i, name) in names.iter().enumerate() {
            let ring = if i < shards {
                let map = ebpf.take_map(name).context("a ring is missing")?;
                Some(RingBuf::try_from(map)?)
            } else {
                None
            };
            rings.push(ring);
        }
        let bind = match rtp.bind {
            IpAddr::V4(v4) if !v4.is_unspecified() => Some(v4),
            _ => None,
        };
        let stats = aya::sys::enable_stats(aya::sys::Stats::RunTime).ok();
        Ok(FastPath {
            state: State::Active(attached),
            loaded: Some(Loaded {
                ebpf: Mutex::new(ebpf),
                _stats: stats,
                streams: Mutex::new(streams),
                totals: Mutex::new(totals),
                rings: Mutex::new(rings),
                bind,
            }),
        })
    }

    /// What the relay runs on.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// Shard `index`'s ring, once: `None` when the fast path is not active
    /// or the shard has none (it then relays in userspace).
    pub(super) fn take_ring(&self, index: usize) -> Option<RingBuf<MapData>> {
        lock(&self.loaded.as_ref()?.rings).get_mut(index)?.take()
    }

    /// Carries out a core's decision for a stream. Returns the copies the
    /// kernel lost for a stream taken back (its last count).
    pub(super) fn apply(
        &self,
        shard: usize,
        stream: KernelStream,
        forward: Option<KernelForward>,
    ) -> Option<u32> {
        let loaded = self.loaded.as_ref()?;
        let key = Key::of(stream);
        let mut map = lock(&loaded.streams);
        let old = map.get(&key, 0).ok();
        let Some(f) = forward else {
            let _ = map.remove(&key);
            return old.map(|o| o.copy_drops.min(u64::from(u32::MAX)) as u32);
        };
        let mut v = old.unwrap_or_default();
        v.saddr = loaded.bind.map_or(0, |a| u32::from_ne_bytes(a.octets()));
        v.daddr = u32::from_ne_bytes(f.to.ip().octets());
        v.sport = f.from_port.to_be();
        v.dport = f.to.port().to_be();
        v.ring = shard as u8;
        v.flags = if f.local { F_LOCAL } else { 0 };
        if loaded.bind.is_some() {
            // Sockets bound to one address: only packets to it are ours.
            v.flags |= F_BOUND;
        }
        match f.shift {
            Some(s) => {
                v.flags |= F_SSRC;
                v.ssrc = s.ssrc.to_be();
                v.seq_off = s.seq;
                v.ts_off = s.timestamp;
            }
            None => {
                v.ssrc = 0;
                v.seq_off = 0;
                v.ts_off = 0;
            }
        }
        if let Err(e) = map.insert(key, v, 0) {
            // The stream stays in userspace: its packets reach the socket.
            tracing::warn!(error = %e, "cannot hand a stream to the kernel");
        }
        None
    }

    /// The program's totals, summed over the CPUs, in [`TOTALS`] order.
    pub fn totals(&self) -> [u64; 5] {
        let mut out = [0; 5];
        let Some(loaded) = self.loaded.as_ref() else {
            return out;
        };
        let totals = lock(&loaded.totals);
        for (i, o) in out.iter_mut().enumerate() {
            if let Ok(v) = totals.get(&(i as u32), 0) {
                *o = v.iter().sum();
            }
        }
        out
    }

    /// The program's runs and the CPU time they took, as the kernel counts
    /// them (zero where it cannot).
    pub fn program_time(&self) -> (u64, Duration) {
        let Some(loaded) = self.loaded.as_ref() else {
            return (0, Duration::ZERO);
        };
        let ebpf = lock(&loaded.ebpf);
        ebpf.program("earshot_fastpath")
            .and_then(|p| p.info().ok())
            .map_or((0, Duration::ZERO), |i| (i.run_count(), i.run_time()))
    }

    /// Streams the kernel relays now.
    pub fn streams(&self) -> usize {
        self.loaded
            .as_ref()
            .map_or(0, |l| lock(&l.streams).keys().count())
    }
}

/// One copy taken from a ring.
pub(super) struct Copy {
    pub(super) at: Instant,
    pub(super) local_port: u16,
    pub(super) source: SocketAddr,
    pub(super) lost: u32,
    pub(super) range: std::ops::Range<usize>,
}

/// The monotonic clock in nanoseconds, the clock of the program's
/// `bpf_ktime_get_ns` (and of `Instant` on Linux).
fn monotonic_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

/// Takes up to `max` copies from a ring into `arena`.
pub(super) fn read_copies(
    ring: &mut RingBuf<MapData>,
    arena: &mut Vec<u8>,
    copies: &mut Vec<Copy>,
    max: usize,
) {
    let now = Instant::now();
    let now_ns = monotonic_ns();
    while copies.len() < max {
        let Some(item) = ring.next() else {
            return;
        };
        let b: &[u8] = &item;
        if b.len() < COPY_HEADER {
            continue;
        }
        let at_ns = u64::from_ne_bytes(b[0..8].try_into().unwrap_or_default());
        let saddr = Ipv4Addr::from(<[u8; 4]>::try_from(&b[8..12]).unwrap_or_default());
        let sport = u16::from_be_bytes([b[12], b[13]]);
        let dport = u16::from_be_bytes([b[14], b[15]]);
        let lost = u32::from_ne_bytes(b[16..20].try_into().unwrap_or_default());
        let len = usize::from(u16::from_ne_bytes([b[20], b[21]]));
        let Some(data) = b.get(COPY_HEADER..COPY_HEADER + len.min(MAX_COPY)) else {
            continue;
        };
        let start = arena.len();
        arena.extend_from_slice(data);
        let age = Duration::from_nanos(now_ns.saturating_sub(at_ns));
        copies.push(Copy {
            at: now.checked_sub(age).unwrap_or(now),
            local_port: dport,
            source: SocketAddr::V4(SocketAddrV4::new(saddr, sport)),
            lost,
            range: start..arena.len(),
        });
    }
}
