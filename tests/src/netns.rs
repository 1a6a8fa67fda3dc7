//! Two network namespaces a test makes for a caller and a callee, each
//! joined to the host's network namespace (where the recorder runs) by a
//! veth pair, for the kernel fast path: packets really cross interfaces
//! (loopback short-cuts them), and with checksum offload off on both ends
//! a receiver drops any datagram whose checksum the relay got wrong.
//!
//! Net `n` (0-199, taken by a lock file like the test ports):
//! * `earshot-kc-n`: the caller at 10.250.n.2/24, the host end 10.250.n.1
//!   (`es-c-n`);
//! * `earshot-kb-n`: the callee at 10.251.n.2/24, the host end 10.251.n.1
//!   (`es-b-n`).
//!
//! The namespaces have no default route: a caller reaches 10.250.n.0/24,
//! a callee 10.251.n.0/24, nothing else. The host ends forward IPv4 (the
//! fast path looks up its routes as a router would); nothing else on the
//! machine changes. Everything is removed when the value drops.

use std::fs::File;
use std::net::Ipv4Addr;
use std::process::Command;

/// Nets the machine can hold at once.
const NETS: u8 = 200;

/// The two namespaces and their veth pairs.
pub struct Veths {
    /// Which net this is.
    pub n: u8,
    /// The caller's namespace.
    pub caller_ns: String,
    /// The callee's namespace.
    pub callee_ns: String,
    /// The host's address toward the caller.
    pub host_caller: Ipv4Addr,
    /// The caller's address.
    pub caller: Ipv4Addr,
    /// The host's address toward the callee.
    pub host_callee: Ipv4Addr,
    /// The callee's address.
    pub callee: Ipv4Addr,
    /// The host ends, toward the caller and the callee.
    pub host_ifaces: [String; 2],
    _lock: File,
}

fn run(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn quiet(args: &[&str]) {
    let _ = Command::new(args[0]).args(&args[1..]).output();
}

impl Veths {
    /// Makes both namespaces and pairs. Needs root (CAP_NET_ADMIN).
    pub fn new() -> Self {
        crate::require("ip");
        crate::require("ethtool");
        let dir = std::env::temp_dir().join("earshot-nets");
        std::fs::create_dir_all(&dir).expect("lock directory");
        let start = (std::process::id() % u32::from(NETS)) as u8;
        let (n, lock) = (0..NETS)
            .map(|k| (start + k) % NETS)
            .find_map(|n| {
                let f = File::create(dir.join(n.to_string())).ok()?;
                f.try_lock().ok()?;
                Some((n, f))
            })
            .expect("a free test net");
        let v = Veths {
            n,
            caller_ns: format!("earshot-kc-{n}"),
            callee_ns: format!("earshot-kb-{n}"),
            host_caller: Ipv4Addr::new(10, 250, n, 1),
            caller: Ipv4Addr::new(10, 250, n, 2),
            host_callee: Ipv4Addr::new(10, 251, n, 1),
            callee: Ipv4Addr::new(10, 251, n, 2),
            host_ifaces: [format!("es-c-{n}"), format!("es-b-{n}")],
            _lock: lock,
        };
        v.remove();
        for (ns, host_if, host_ip, ip) in [
            (&v.caller_ns, &v.host_ifaces[0], v.host_caller, v.caller),
            (&v.callee_ns, &v.host_ifaces[1], v.host_callee, v.callee),
        ] {
            run(&["ip", "netns", "add", ns]);
            run(&[
                "ip", "link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", ns,
            ]);
            run(&[
                "ip",
                "addr",
                "add",
                &format!("{host_ip}/24"),
                "dev",
                host_if,
            ]);
            run(&["ethtool", "-K", host_if, "tx", "off", "rx", "off"]);
            std::fs::write(format!("/proc/sys/net/ipv4/conf/{host_if}/forwarding"), "1")
                .expect("forwarding on the host end");
            run(&["ip", "link", "set", host_if, "up"]);
            let inside = |args: &[&str]| {
                let mut all = vec!["ip", "netns", "exec", ns];
                all.extend_from_slice(args);
                run(&all);
            };
            inside(&["ip", "addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
            inside(&["ethtool", "-K", "eth0", "tx", "off", "rx", "off"]);
            inside(&["ip", "link", "set", "eth0", "up"]);
            inside(&["ip", "link", "set", "lo", "up"]);
        }
        v
    }

    /// A UDP socket bound to `addr` inside namespace `ns` (made on a
    /// thread that enters it; the socket stays in the namespace).
    pub fn udp_socket_in(&self, ns: &str, addr: std::net::SocketAddr) -> std::net::UdpSocket {
        let path = format!("/run/netns/{ns}");
        std::thread::spawn(move || {
            let f = File::open(&path).expect("the namespace's file");
            nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            std::net::UdpSocket::bind(addr).expect("bind in the namespace")
        })
        .join()
        .expect("the socket thread")
    }

    fn remove(&self) {
        for ns in [&self.caller_ns, &self.callee_ns] {
            quiet(&["ip", "netns", "del", ns]);
        }
        for i in &self.host_ifaces {
            quiet(&["ip", "link", "del", i]);
        }
    }
}

impl Default for Veths {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Veths {
    fn drop(&mut self) {
        self.remove();
    }
}
