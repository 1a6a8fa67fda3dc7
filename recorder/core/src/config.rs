//! What the core needs to know: its own address, the SIP peers, the policy
//! users and the protocol timers. Built by the shell from the config file.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// A SIP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// UDP datagrams.
    Udp,
    /// A TCP connection.
    Tcp,
}

impl Transport {
    /// The token used in Via headers.
    pub fn via_token(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
        }
    }
}

/// Where a SIP message goes or came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Target {
    /// The transport.
    pub transport: Transport,
    /// The remote address.
    pub addr: SocketAddr,
}

/// An IP network in CIDR form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// Parses `10.0.0.0/24`, `::1/128` or a bare address (a host route).
    pub fn parse(s: &str) -> Option<IpNet> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a.parse::<IpAddr>().ok()?, p.parse::<u8>().ok()?),
            None => {
                let a: IpAddr = s.parse().ok()?;
                (a, if a.is_ipv4() { 32 } else { 128 })
            }
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (prefix <= max).then_some(IpNet { addr, prefix })
    }

    /// True when `ip` is inside the network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - self.prefix as u32).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - self.prefix as u32).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// A SIP peer: requests from its networks are accepted and new ones
/// forwarded to its next hop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Name, for logs and metrics.
    pub name: String,
    /// Source networks.
    pub sources: Vec<IpNet>,
    /// Where this peer's initial requests go.
    pub next_hop: Target,
}

/// When a user's calls are recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// From answer to hang-up.
    Always,
    /// While the user has toggled it on with the shortcode.
    OnDemand,
    /// Never.
    Never,
}

impl Mode {
    /// The name used in the API and in events.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Always => "Always",
            Mode::OnDemand => "OnDemand",
            Mode::Never => "Never",
        }
    }
}

/// One policy user, by extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Display name for reports.
    pub display_name: Option<String>,
    /// Effective mode.
    pub mode: Mode,
    /// Effective shortcode digit (`*5` → 5).
    pub shortcode: Option<u8>,
}

/// SIP timers (RFC 3261 §17, Table 4) and housekeeping intervals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    /// RTT estimate.
    pub t1: Duration,
    /// Longest retransmit interval for non-INVITE requests and INVITE responses.
    pub t2: Duration,
    /// Timer C: how long a proxied INVITE may ring before it is cancelled.
    pub timer_c: Duration,
    /// A call with neither SIP nor RTP for this long is ended.
    pub call_idle: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        Self {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            timer_c: Duration::from_secs(180),
            call_idle: Duration::from_secs(2 * 3600),
        }
    }
}

impl Timers {
    /// Timer B/F/H: 64 × T1.
    pub fn transaction_timeout(&self) -> Duration {
        self.t1 * 64
    }
}

/// Everything the core needs.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// The address peers reach the recorder on: in Via, Record-Route and SDP.
    pub advertised: SocketAddr,
    /// Known peers.
    pub peers: Vec<Peer>,
    /// Policy users by extension.
    pub users: HashMap<String, User>,
    /// Host names in next hops and the addresses the shell resolved them to.
    pub hosts: HashMap<String, IpAddr>,
    /// Protocol timers.
    pub timers: Timers,
    /// Seed for branch and tag generation (time and randomness are inputs).
    pub seed: u64,
    /// Announcements and beeps that tell the parties the call is recorded.
    pub announcement: crate::announce::AnnouncementConfig,
}

impl CoreConfig {
    /// The peer a source address belongs to.
    pub fn peer_of(&self, ip: IpAddr) -> Option<&Peer> {
        self.peers
            .iter()
            .find(|p| p.sources.iter().any(|n| n.contains(ip)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_matching() {
        let n = IpNet::parse("10.1.2.0/24").unwrap();
        assert!(n.contains("10.1.2.200".parse().unwrap()));
        assert!(!n.contains("10.1.3.1".parse().unwrap()));
        assert!(
            IpNet::parse("0.0.0.0/0")
                .unwrap()
                .contains("192.0.2.1".parse().unwrap())
        );
        assert!(
            IpNet::parse("127.0.0.1")
                .unwrap()
                .contains("127.0.0.1".parse().unwrap())
        );
        assert!(
            !IpNet::parse("::1/128")
                .unwrap()
                .contains("127.0.0.1".parse().unwrap())
        );
        assert_eq!(IpNet::parse("10.0.0.0/33"), None);
        assert_eq!(IpNet::parse("pbx.example"), None);
    }
}
