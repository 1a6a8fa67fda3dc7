//! What the core needs to know: its own address, the SIP peers, the policy
//! users and the protocol timers. Built by the shell from the config file.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

pub use earshot_contracts::config::{EffectiveUser, SipLimits, UnknownSources};
pub use earshot_contracts::{IpNet, RecordingMode, Transport};

/// Where a SIP message goes or came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Target {
    /// The transport.
    pub transport: Transport,
    /// The remote address.
    pub addr: SocketAddr,
}

/// A SIP peer: requests from its networks are accepted and new ones
/// forwarded to its next hop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Name, for logs and metrics.
    pub name: String,
    /// Source networks.
    pub sources: Vec<IpNet>,
    /// Where this peer's initial requests go; `None` for a session
    /// recording client that only sends recording sessions.
    pub next_hop: Option<Target>,
    /// A session recording client (RFC 7866): its SIPREC INVITEs (`Require:
    /// siprec`, or a Contact with `+sip.src`) start recording sessions
    /// here, answered by the recorder, instead of being proxied.
    pub siprec: bool,
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
    /// Split horizon: peers outside the internal networks reach the
    /// recorder on another address (a node's public one), same port.
    pub split: Option<SplitHorizon>,
    /// The SIP over TLS port, when the recorder speaks TLS (in Via and
    /// Record-Route toward TLS peers).
    pub tls_port: Option<u16>,
    /// Known peers.
    pub peers: Vec<Peer>,
    /// Policy users by extension.
    pub users: BTreeMap<String, EffectiveUser>,
    /// Host names in next hops and the addresses the shell resolved them to.
    pub hosts: BTreeMap<String, IpAddr>,
    /// Protocol timers.
    pub timers: Timers,
    /// Seed of the generator of branches and tags (a CSPRNG: nothing the
    /// recorder sends lets a peer predict the next branch). The shell gives
    /// 32 bytes from the operating system; tests give fixed ones.
    pub seed: [u8; 32],
    /// How requests from unknown sources are answered.
    pub unknown_sources: UnknownSources,
    /// What one peer may take.
    pub limits: SipLimits,
    /// Whether SDP may name loopback, link-local or the recorder's own address.
    pub allow_local_media: bool,
    /// Whether video streams are refused (port 0) rather than relayed.
    pub refuse_video: bool,
    /// Whether an offer of audio the recorder could not read (DTLS-SRTP,
    /// SRTP without a usable key) is refused (488) rather than relayed.
    pub refuse_unreadable_media: bool,
    /// Announcements and beeps that tell the parties the call is recorded.
    pub announcement: crate::announce::AnnouncementConfig,
}

/// Two faces of one recorder: the advertised (internal) address for peers
/// in `internal`, `external` for every other peer. A request between the
/// two gets two Record-Routes (RFC 5658), each side's SDP and Via name the
/// address that side can reach.
#[derive(Debug, Clone, PartialEq)]
pub struct SplitHorizon {
    /// The address peers outside `internal` reach the recorder on.
    pub external: IpAddr,
    /// The networks that reach the advertised address.
    pub internal: Vec<IpNet>,
}

impl CoreConfig {
    /// The recorder's address as a peer at `ip` reaches it.
    pub fn facing(&self, ip: IpAddr) -> IpAddr {
        match &self.split {
            Some(s) if !s.internal.iter().any(|n| n.contains(ip)) => s.external,
            _ => self.advertised.ip(),
        }
    }

    /// Our port for a transport: the TLS listener's for TLS.
    pub fn port_for(&self, transport: Transport) -> u16 {
        match (transport, self.tls_port) {
            (Transport::Tls, Some(p)) => p,
            _ => self.advertised.port(),
        }
    }

    /// Whether `ip` is one of the recorder's own addresses.
    pub fn is_own(&self, ip: IpAddr) -> bool {
        ip == self.advertised.ip() || self.split.as_ref().is_some_and(|s| s.external == ip)
    }

    /// The peer a source address belongs to.
    pub fn peer_of(&self, ip: IpAddr) -> Option<&Peer> {
        self.peers
            .iter()
            .find(|p| p.sources.iter().any(|n| n.contains(ip)))
    }
}
