//! The operator's metrics, prefix `earshot_operator_` (listed in docs/metrics.md).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use earshot_crds::RecordingPolicy;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::error::Error;

type Labels = Vec<(&'static str, String)>;

/// Metrics shared by every reconcile; cheap to clone.
#[derive(Clone)]
pub struct OperatorMetrics {
    registry: Arc<Registry>,
    reconciles: Family<Labels, Counter>,
    errors: Family<Labels, Counter>,
    duration: Histogram,
    policies: Family<Labels, Gauge>,
    policy_ready: Family<Labels, Gauge>,
    lifecycle: Family<Labels, Counter>,
    ready: Arc<Mutex<HashMap<String, bool>>>,
}

impl Default for OperatorMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl OperatorMetrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut root = Registry::default();
        let r = root.sub_registry_with_prefix("earshot_operator");
        let reconciles = Family::<Labels, Counter>::default();
        let errors = Family::<Labels, Counter>::default();
        let duration = Histogram::new([0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]);
        let policies = Family::<Labels, Gauge>::default();
        let policy_ready = Family::<Labels, Gauge>::default();
        let lifecycle = Family::<Labels, Counter>::default();
        r.register(
            "policy_ready",
            "1 when a policy's last reconcile found it Ready, per namespace and policy",
            policy_ready.clone(),
        );
        r.register(
            "reconciles",
            "Reconciles by result (ok, error)",
            reconciles.clone(),
        );
        r.register(
            "reconcile_errors",
            "Failed reconciles by category and policy namespace",
            errors.clone(),
        );
        r.register(
            "reconcile_duration_seconds",
            "Time one reconcile takes",
            duration.clone(),
        );
        r.register(
            "policies",
            "Policies by the Ready condition their last reconcile found",
            policies.clone(),
        );
        r.register(
            "lifecycle_updates",
            "Lifecycle rule checks by result (changed, unchanged, failed)",
            lifecycle.clone(),
        );
        // Known label values exist from the start at zero (alerts and rate()).
        for result in ["ok", "error"] {
            reconciles
                .get_or_create(&vec![("result", result.to_owned())])
                .inc_by(0);
        }
        for result in ["changed", "unchanged", "failed"] {
            lifecycle
                .get_or_create(&vec![("result", result.to_owned())])
                .inc_by(0);
        }
        for status in ["True", "False"] {
            policies
                .get_or_create(&vec![
                    ("condition", "Ready".to_owned()),
                    ("status", status.to_owned()),
                ])
                .set(0);
        }
        Self {
            registry: Arc::new(root),
            reconciles,
            errors,
            duration,
            policies,
            policy_ready,
            lifecycle,
            ready: Arc::default(),
        }
    }

    /// Records one reconcile, counting the policy Ready when it succeeded.
    pub fn observe(
        &self,
        policy: &RecordingPolicy,
        result: &Result<Action, Error>,
        took: Duration,
    ) {
        self.observe_ready(policy, result, took, result.is_ok());
    }

    /// Records one reconcile and whether the status it wrote says Ready: a
    /// policy refused (an invalid spec, a store not allowed, no operator
    /// key) finishes its reconcile without an error but is not Ready.
    pub fn observe_ready(
        &self,
        policy: &RecordingPolicy,
        result: &Result<Action, Error>,
        took: Duration,
        is_ready: bool,
    ) {
        self.duration.observe(took.as_secs_f64());
        let ok = result.is_ok();
        self.reconciles
            .get_or_create(&vec![(
                "result",
                if ok { "ok" } else { "error" }.to_owned(),
            )])
            .inc();
        if let Err(e) = result {
            self.errors
                .get_or_create(&vec![
                    ("category", e.category().to_owned()),
                    ("namespace", policy.namespace().unwrap_or_default()),
                ])
                .inc();
        }
        let key = format!(
            "{}/{}",
            policy.namespace().unwrap_or_default(),
            policy.name_any()
        );
        self.policy_ready
            .get_or_create(&vec![
                ("namespace", policy.namespace().unwrap_or_default()),
                ("policy", policy.name_any()),
            ])
            .set(i64::from(is_ready));
        let mut ready = self.ready.lock().unwrap_or_else(|e| e.into_inner());
        ready.insert(key, is_ready);
        let (t, f) = ready
            .values()
            .fold((0, 0), |(t, f), r| if *r { (t + 1, f) } else { (t, f + 1) });
        self.policies
            .get_or_create(&vec![
                ("condition", "Ready".to_owned()),
                ("status", "True".to_owned()),
            ])
            .set(t);
        self.policies
            .get_or_create(&vec![
                ("condition", "Ready".to_owned()),
                ("status", "False".to_owned()),
            ])
            .set(f);
    }

    /// Records one lifecycle rule check.
    pub fn lifecycle_update(&self, ok: bool, changed: bool) {
        let result = match (ok, changed) {
            (false, _) => "failed",
            (true, true) => "changed",
            (true, false) => "unchanged",
        };
        self.lifecycle
            .get_or_create(&vec![("result", result.to_owned())])
            .inc();
    }

    /// OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("encode metrics");
        out
    }
}
