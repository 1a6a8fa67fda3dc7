//! The core's view of a checked config: next hops resolved through DNS.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use earshot_recorder_core::{CoreConfig, Peer, SplitHorizon, Target, Timers};

use super::Config;

impl Config {
    /// The core's config, with next hops resolved through DNS; `seed` feeds
    /// its branch and tag generator.
    pub async fn core_config(&self, seed: [u8; 32]) -> Result<CoreConfig, String> {
        let mut peers = Vec::new();
        let mut hosts = BTreeMap::new();
        for (p, nets) in &self.peers {
            // A session recording client may have no next hop.
            let next_hop = if p.next_hop.is_empty() && p.siprec {
                None
            } else {
                let addr = tokio::net::lookup_host(p.next_hop.as_str())
                    .await
                    .map_err(|e| format!("peer {}: cannot resolve next hop: {e}", p.name))?
                    .next()
                    .ok_or_else(|| format!("peer {}: next hop resolves to nothing", p.name))?;
                if let Some((host, _)) = p.next_hop.rsplit_once(':')
                    && host.parse::<IpAddr>().is_err()
                {
                    hosts.insert(host.to_owned(), addr.ip());
                }
                Some(Target {
                    transport: p.next_hop_transport,
                    addr,
                })
            };
            peers.push(Peer {
                siprec: p.siprec,
                name: p.name.clone(),
                sources: nets.clone(),
                next_hop,
            });
        }
        Ok(CoreConfig {
            advertised: SocketAddr::new(self.advertised, self.file.sip.listen.port()),
            tls_port: self
                .file
                .sip
                .tls
                .as_ref()
                .filter(|_| {
                    self.file
                        .sip
                        .transports
                        .contains(&earshot_contracts::Transport::Tls)
                        || self
                            .file
                            .peers
                            .iter()
                            .any(|p| p.next_hop_transport == earshot_contracts::Transport::Tls)
                })
                .map(|t| t.port),
            split: self.external.map(|external| SplitHorizon {
                external,
                internal: self.internal_networks.clone(),
            }),
            peers,
            users: self.users.clone(),
            hosts,
            timers: Timers::default(),
            seed,
            unknown_sources: self.file.sip.unknown_sources,
            limits: self.file.sip.limits,
            allow_local_media: self.file.rtp.allow_local_media,
            refuse_video: self.file.rtp.video == earshot_contracts::config::VideoPolicy::Refuse,
            refuse_unreadable_media: self.file.rtp.unreadable_media
                == earshot_contracts::config::VideoPolicy::Refuse,
            announcement: self.announcement.clone(),
        })
    }
}
