//! The console's metrics: what was looked at and downloaded, and how much.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// Label of `earshot_console_accesses_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Action {
    /// `list`, `play`, `download`, `zip`, `sidecar`.
    pub action: String,
}

/// The console's counters.
pub struct Metrics {
    registry: Registry,
    accesses: Family<Action, Counter>,
    bytes: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("earshot_console");
        let accesses = Family::<Action, Counter>::default();
        let bytes = Counter::default();
        registry.register(
            "accesses",
            "Audited accesses: list (a page), play (a playback start), download (one MP3), zip (one recording in a ZIP), sidecar",
            accesses.clone(),
        );
        registry.register(
            "sent_bytes",
            "Recording bytes sent to browsers and scripts",
            bytes.clone(),
        );
        for action in ["list", "play", "download", "zip", "sidecar"] {
            let _ = accesses.get_or_create(&Action {
                action: action.to_owned(),
            });
        }
        Self {
            registry,
            accesses,
            bytes,
        }
    }
}

impl Metrics {
    /// Counts one audited access.
    pub fn access(&self, action: &str) {
        self.accesses
            .get_or_create(&Action {
                action: action.to_owned(),
            })
            .inc();
    }

    /// Counts bytes sent.
    pub fn sent(&self, n: u64) {
        self.bytes.inc_by(n);
    }

    /// The OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Encoding into a String cannot fail.
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("encode metrics");
        out
    }
}
