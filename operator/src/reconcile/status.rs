//! Step 6 of the reconcile pipeline, written once per reconcile: the status a platform engineer reads
//! (`kubectl get rp`, `kubectl describe rp`). Building it is pure (time is an
//! input); writing it is a server-side apply of the status subresource.

use earshot_crds::{RecordingPolicy, RecordingPolicyStatus, UserCounts};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;

use super::Error;
use crate::config::FIELD_MANAGER;

/// One condition as a step found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// True, False, or None for Unknown (the step did not run).
    pub ok: Option<bool>,
    /// CamelCase reason.
    pub reason: String,
    /// What it means and what to do.
    pub message: String,
}

impl Check {
    /// A passing check.
    pub fn ok(reason: &str, message: impl Into<String>) -> Self {
        Self {
            ok: Some(true),
            reason: reason.into(),
            message: message.into(),
        }
    }

    /// A failing check.
    pub fn failed(reason: &str, message: impl Into<String>) -> Self {
        Self {
            ok: Some(false),
            reason: reason.into(),
            message: message.into(),
        }
    }

    /// A check that could not be made because an earlier step failed.
    pub fn unknown(reason: &str, message: impl Into<String>) -> Self {
        Self {
            ok: None,
            reason: reason.into(),
            message: message.into(),
        }
    }
}

/// What one reconcile found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// `metadata.generation` reconciled.
    pub generation: Option<i64>,
    /// The recorder workload.
    pub recorder: Check,
    /// Storage credentials and bucket.
    pub storage: Check,
    /// The retention lifecycle rule.
    pub retention: Check,
    /// Retention the rule enforces, when it does.
    pub enforced_days: Option<i32>,
    /// Ready recorder pods.
    pub ready_replicas: Option<i32>,
    /// Each recorder pod.
    pub replicas: Vec<earshot_crds::ReplicaStatus>,
    /// Where peers send SIP.
    pub service_address: Option<String>,
    /// Users per mode.
    pub users: UserCounts,
}

fn condition(
    prev: &[Condition],
    kind: &str,
    check: &Check,
    generation: Option<i64>,
    now: &Time,
) -> Condition {
    let status = match check.ok {
        Some(true) => "True",
        Some(false) => "False",
        None => "Unknown",
    };
    // The transition time moves only when the status does.
    let since = prev
        .iter()
        .find(|c| c.type_ == kind && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| now.clone());
    Condition {
        type_: kind.to_owned(),
        status: status.to_owned(),
        reason: check.reason.clone(),
        message: bounded(&check.message),
        observed_generation: generation,
        last_transition_time: since,
    }
}

/// Longest condition message, in characters: enough for every message the
/// operator writes, and a bound on whatever a message quotes.
pub const MAX_MESSAGE: usize = 1024;

/// A message cut to [`MAX_MESSAGE`] characters, with control characters
/// (a newline a store or a name smuggled in) turned into spaces.
pub fn bounded(message: &str) -> String {
    let mut out: String = message
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_MESSAGE)
        .collect();
    if message.chars().nth(MAX_MESSAGE).is_some() {
        out.pop();
        out.push('…');
    }
    out
}

/// The status for what was observed, given the previous one and the time.
pub fn build_status(
    prev: Option<&RecordingPolicyStatus>,
    o: &Observed,
    now: Time,
) -> RecordingPolicyStatus {
    let prev_conditions = prev.map(|p| p.conditions.as_slice()).unwrap_or_default();
    let all = [&o.recorder, &o.storage, &o.retention];
    let ready = if all.iter().all(|c| c.ok == Some(true)) {
        Check::ok(
            "Recording",
            "recorders are serving and recordings are stored and expire as the policy says",
        )
    } else {
        let first = all
            .iter()
            .find(|c| c.ok != Some(true))
            .expect("one check is not ok");
        Check::failed(&first.reason, first.message.clone())
    };
    let conditions = vec![
        condition(prev_conditions, "Ready", &ready, o.generation, &now),
        condition(
            prev_conditions,
            "RecorderAvailable",
            &o.recorder,
            o.generation,
            &now,
        ),
        condition(
            prev_conditions,
            "StorageReady",
            &o.storage,
            o.generation,
            &now,
        ),
        condition(
            prev_conditions,
            "RetentionEnforced",
            &o.retention,
            o.generation,
            &now,
        ),
    ];
    let (effective, since) = match (o.enforced_days, prev) {
        (Some(d), Some(p)) if p.effective_retention_days == Some(d) => {
            (Some(d), p.retention_effective_since.clone())
        }
        (Some(d), _) => (Some(d), Some(now.clone())),
        (None, Some(p)) => (
            p.effective_retention_days,
            p.retention_effective_since.clone(),
        ),
        (None, None) => (None, None),
    };
    RecordingPolicyStatus {
        observed_generation: o.generation,
        conditions,
        service_address: o.service_address.clone(),
        ready_replicas: o.ready_replicas,
        replicas: o.replicas.clone(),
        effective_retention_days: effective,
        retention_effective_since: since,
        users: Some(o.users),
    }
}

/// Writes the status subresource.
pub async fn patch_status(
    api: &Api<RecordingPolicy>,
    name: &str,
    status: &RecordingPolicyStatus,
) -> Result<(), Error> {
    let body =
        json!({"apiVersion": "earshot.io/v1alpha1", "kind": "RecordingPolicy", "status": status});
    api.patch_status(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .map(|_| ())
    .map_err(|source| Error::Kube {
        what: format!("update status of RecordingPolicy {name}"),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Time {
        Time(s.parse().unwrap())
    }

    fn mk_observed(storage_ok: bool, days: Option<i32>) -> Observed {
        Observed {
            generation: Some(3),
            recorder: Check::ok("ReplicasReady", "1 of 1 recorder pods ready"),
            storage: if storage_ok {
                Check::ok("BucketReachable", "bucket recordings reachable")
            } else {
                Check::failed("SecretMissing", "Secret s3 not found")
            },
            retention: match days {
                Some(d) => Check::ok(
                    "LifecycleRuleSet",
                    format!("objects under acme/office/ expire after {d} days"),
                ),
                None => Check::unknown(
                    "StorageNotReady",
                    "retention is enforced once storage is ready",
                ),
            },
            enforced_days: days,
            ready_replicas: Some(1),
            replicas: Vec::new(),
            service_address: Some("earshot-office.acme.svc:5060".into()),
            users: UserCounts {
                total: 3,
                always: 1,
                on_demand: 1,
                never: 1,
            },
        }
    }

    #[test]
    fn ready_only_when_every_condition_holds_and_says_why_not() {
        let s = build_status(
            None,
            &mk_observed(true, Some(30)),
            at("2026-11-28T10:00:00Z"),
        );
        assert_eq!(s.conditions[0].type_, "Ready");
        assert_eq!(s.conditions[0].status, "True");
        let s = build_status(None, &mk_observed(false, None), at("2026-11-28T10:00:00Z"));
        assert_eq!(
            (
                s.conditions[0].status.as_str(),
                s.conditions[0].reason.as_str()
            ),
            ("False", "SecretMissing")
        );
        assert_eq!(s.conditions[3].status, "Unknown");
        assert_eq!(s.observed_generation, Some(3));
    }

    #[test]
    fn retention_since_moves_only_when_retention_changes() {
        let t1 = at("2026-11-28T10:00:00Z");
        let t2 = at("2026-11-29T10:00:00Z");
        let first = build_status(None, &mk_observed(true, Some(30)), t1.clone());
        assert_eq!(
            (
                first.effective_retention_days,
                first.retention_effective_since.clone()
            ),
            (Some(30), Some(t1.clone()))
        );
        let same = build_status(Some(&first), &mk_observed(true, Some(30)), t2.clone());
        assert_eq!(same.retention_effective_since, Some(t1.clone()));
        assert_eq!(
            same.conditions[0].last_transition_time, t1,
            "no transition, no new time"
        );
        let changed = build_status(Some(&same), &mk_observed(true, Some(14)), t2.clone());
        assert_eq!(
            (
                changed.effective_retention_days,
                changed.retention_effective_since.clone()
            ),
            (Some(14), Some(t2))
        );
        // A storage outage keeps reporting what the bucket last enforced.
        let outage = build_status(
            Some(&changed),
            &mk_observed(false, None),
            at("2026-11-30T10:00:00Z"),
        );
        assert_eq!(outage.effective_retention_days, Some(14));
    }
}
