//! The reconcile pipeline, one step per file:
//! `validate` (no client) → `dereference` (client) → `build` (no client, in
//! [`crate::build`]) → `apply` (client) → storage (client, [`crate::storage`])
//! → `status` (pure build, client write).
//!
//! An invalid spec waits for a change; a transient failure requeues with
//! backoff. Deleting a policy needs no step: owner references remove the
//! workload, and nothing touches storage, so recordings stay and still
//! expire by their rule.

pub mod apply;
pub mod dereference;
pub mod status;
pub mod validate;

use std::sync::Arc;
use std::time::Duration;

use earshot_crds::RecordingPolicy;
use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder};
use kube::{Api, Client, Resource, ResourceExt};

use crate::config::OperatorConfig;
use crate::metrics::OperatorMetrics;
use crate::storage::Storage;
use crate::storage::lifecycle::{PolicyRule, rule_id};
use crate::storage::s3::StorageError;
use status::{Check, Observed, build_status, patch_status};
use validate::{Invalid, validate};

/// Everything a reconcile needs.
pub struct Context {
    /// The API client.
    pub client: Client,
    /// Operator settings.
    pub operator: OperatorConfig,
    /// The object store.
    pub storage: Arc<dyn Storage>,
    /// Kubernetes Events.
    pub recorder: Recorder,
    /// Metrics.
    pub metrics: OperatorMetrics,
    /// The clock (an input, so tests are exact).
    pub now: fn() -> Time,
    /// Whether the cluster serves monitoring.coreos.com/v1 ServiceMonitor.
    pub service_monitor: bool,
    /// Consecutive failures per policy, for backoff.
    pub failures: std::sync::Mutex<std::collections::HashMap<String, u32>>,
}

fn key(p: &RecordingPolicy) -> String {
    format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any())
}

/// Delay before retry `n` (1-based): `base` doubling up to ten minutes.
pub fn backoff(base: Duration, n: u32) -> Duration {
    base.saturating_mul(1u32 << n.saturating_sub(1).min(10))
        .min(Duration::from_secs(600))
}

/// Why a reconcile did not finish.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An API call failed.
    #[error("failed to {what}: {source}")]
    Kube {
        /// What was attempted.
        what: String,
        /// The API error.
        source: kube::Error,
    },
    /// The policy cannot be reconciled as it is.
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// The credentials Secret is missing.
    #[error(
        "Secret {0} named in spec.storage.credentialsSecret does not exist in the policy's namespace"
    )]
    SecretMissing(String),
    /// A key is missing from the Secret.
    #[error("Secret {secret} has no key {key} (spec.storage.credentialsSecret)")]
    SecretKeyMissing {
        /// The Secret.
        secret: String,
        /// The key.
        key: String,
    },
    /// The announcement prompt's ConfigMap or key is missing.
    #[error(
        "ConfigMap {config_map} with key {key} named in spec.announcement.prompt does not exist in the policy's namespace"
    )]
    PromptMissing {
        /// The ConfigMap.
        config_map: String,
        /// The key.
        key: String,
    },
    /// The object store refused or could not be reached.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl Error {
    /// Label for `earshot_operator_reconcile_errors_total{category}` and Events.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Kube { .. } => "kubernetes",
            Error::Invalid(_) => "invalid_spec",
            Error::SecretMissing(_) | Error::SecretKeyMissing { .. } => "secret",
            Error::PromptMissing { .. } => "prompt",
            Error::Storage(e) if e.transient() => "storage_unavailable",
            Error::Storage(_) => "storage",
        }
    }

    /// The condition reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Kube { .. } => "ApiError",
            Error::Invalid(i) => i.reason(),
            Error::SecretMissing(_) => "SecretMissing",
            Error::SecretKeyMissing { .. } => "SecretKeyMissing",
            Error::PromptMissing { .. } => "PromptMissing",
            Error::Storage(StorageError::Denied { .. }) => "AccessDenied",
            Error::Storage(StorageError::NoBucket(_)) => "BucketMissing",
            Error::Storage(StorageError::Unreachable { .. }) => "StorageUnreachable",
            Error::Storage(StorageError::NotEnforced(_)) => "LifecycleNotSupported",
            Error::Storage(_) => "StorageError",
        }
    }
}

fn reference(p: &RecordingPolicy) -> ObjectReference {
    p.object_ref(&())
}

async fn event(ctx: &Context, p: &RecordingPolicy, warning: bool, reason: &str, note: String) {
    let ev = KubeEvent {
        type_: if warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: reason.into(),
        note: Some(note),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, &reference(p)).await {
        tracing::warn!(error = %e, "cannot publish event");
    }
}

/// Brings the cluster and the store in line with one policy.
pub async fn reconcile(policy: Arc<RecordingPolicy>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = std::time::Instant::now();
    let span = tracing::info_span!("reconcile", ns = %policy.namespace().unwrap_or_default(), name = %policy.name_any());
    let result = tracing::Instrument::instrument(reconcile_inner(&policy, &ctx), span).await;
    ctx.metrics.observe(&policy, &result, started.elapsed());
    if result.is_ok() {
        ctx.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key(&policy));
    }
    result
}

async fn reconcile_inner(policy: &RecordingPolicy, ctx: &Context) -> Result<Action, Error> {
    if policy.metadata.deletion_timestamp.is_some() {
        // Going away: owner references remove the workload; storage is left
        // alone so recordings stay and still expire by their rule.
        return Ok(Action::await_change());
    }
    let ns = policy.namespace().unwrap_or_default();
    let name = policy.name_any();
    let policies: Api<RecordingPolicy> = Api::namespaced(ctx.client.clone(), &ns);
    let prev = policy.status.as_ref();
    let users = policy.spec.user_counts();
    let generation = policy.metadata.generation;
    let observed = |recorder: Check, storage: Check, retention: Check| Observed {
        generation,
        recorder,
        storage,
        retention,
        enforced_days: None,
        ready_replicas: prev.and_then(|p| p.ready_replicas),
        service_address: prev.and_then(|p| p.service_address.clone()),
        users,
    };

    // validate — no client.
    let v = match validate(policy, &ctx.operator) {
        Ok(v) => v,
        Err(invalid) => {
            let msg = invalid.to_string();
            let o = observed(
                Check::failed(invalid.reason(), msg.clone()),
                Check::unknown("PolicyInvalid", "not checked while the policy is invalid"),
                Check::unknown("PolicyInvalid", "not changed while the policy is invalid"),
            );
            patch_status(&policies, &name, &build_status(prev, &o, (ctx.now)())).await?;
            event(ctx, policy, true, invalid.reason(), msg).await;
            // Waits for the policy to change; nothing else can fix it.
            return Ok(Action::await_change());
        }
    };

    // dereference — client. Without its prompt the recorder pods could not
    // start: nothing is applied, the recorders already running stay as they are.
    let configmaps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
    if let Err(e) = dereference::prompt(&configmaps, &v).await {
        if let Error::PromptMissing { .. } = e {
            event(ctx, policy, true, e.reason(), e.to_string()).await;
            let o = observed(
                Check::failed(e.reason(), e.to_string()),
                Check::unknown("PromptMissing", "not checked until the prompt exists"),
                Check::unknown("PromptMissing", "not changed until the prompt exists"),
            );
            patch_status(&policies, &name, &build_status(prev, &o, (ctx.now)())).await?;
        }
        return Err(e);
    }
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let target = match dereference::storage_target(&secrets, &v).await {
        Ok(t) => Some(t),
        Err(e @ (Error::SecretMissing(_) | Error::SecretKeyMissing { .. })) => {
            event(ctx, policy, true, e.reason(), e.to_string()).await;
            let storage = Check::failed(e.reason(), e.to_string());
            let retention = Check::unknown(
                "StorageNotReady",
                "retention is enforced once storage is ready",
            );
            // The recorders still run (the Secret may arrive any moment); status says what is missing.
            let deployment = apply::apply_all(&ctx.client, &v, ctx.service_monitor).await?;
            let o = Observed {
                ready_replicas: deployment.status.as_ref().and_then(|s| s.ready_replicas),
                ..observed(recorder_check(&deployment, &v), storage, retention)
            };
            patch_status(&policies, &name, &build_status(prev, &o, (ctx.now)())).await?;
            return Err(e);
        }
        Err(e) => return Err(e),
    };

    if let Some(problem) = dereference::console_secret(&secrets, &v).await? {
        event(ctx, policy, true, "ConsoleSecretMissing", problem).await;
    }

    // build + apply — client.
    let deployment = apply::apply_all(&ctx.client, &v, ctx.service_monitor).await?;

    // storage — client.
    let rule = PolicyRule {
        id: rule_id(&v.namespace, &v.name),
        prefix: v.prefix.clone(),
        days: v.policy.spec.retention_days,
    };
    let target = target.expect("dereference succeeded");
    let storage_result = ctx.storage.enforce(target, &v.storage.bucket, &rule).await;
    let (storage, retention, enforced_days, storage_err) = match storage_result {
        Ok(changed) => {
            ctx.metrics.lifecycle_update(true, changed);
            if changed {
                event(
                    ctx,
                    policy,
                    false,
                    "RetentionEnforced",
                    format!(
                        "recordings under {} now expire {} days after they were made",
                        rule.prefix, rule.days
                    ),
                )
                .await;
            }
            (
                Check::ok(
                    "BucketReachable",
                    format!(
                        "bucket {} at {} accepts the credentials",
                        v.storage.bucket, v.storage.endpoint
                    ),
                ),
                Check::ok(
                    "LifecycleRuleSet",
                    format!(
                        "lifecycle rule {} expires objects under {} after {} days",
                        rule.id, rule.prefix, rule.days
                    ),
                ),
                Some(rule.days),
                None,
            )
        }
        Err(e) => {
            ctx.metrics.lifecycle_update(false, false);
            let e = Error::Storage(e);
            event(ctx, policy, true, e.reason(), e.to_string()).await;
            (
                Check::failed(e.reason(), e.to_string()),
                Check::unknown(
                    "StorageNotReady",
                    "retention is enforced once storage is ready",
                ),
                None,
                Some(e),
            )
        }
    };

    // status — pure build, client write.
    let o = Observed {
        enforced_days,
        ready_replicas: deployment.status.as_ref().and_then(|s| s.ready_replicas),
        service_address: Some(format!(
            "{}.{}.svc:{}",
            crate::build::object_name(&v.name),
            v.namespace,
            v.policy.spec.recorder.sip.port
        )),
        ..observed(recorder_check(&deployment, &v), storage, retention)
    };
    patch_status(&policies, &name, &build_status(prev, &o, (ctx.now)())).await?;
    match storage_err {
        Some(e) => Err(e),
        // Recheck now and then: a bucket's rules can be edited behind our back.
        None => Ok(Action::requeue(Duration::from_secs(600))),
    }
}

fn recorder_check(
    d: &k8s_openapi::api::apps::v1::Deployment,
    v: &crate::build::Validated,
) -> Check {
    let want = v.policy.spec.recorder.replicas;
    let ready = d
        .status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0);
    if ready >= 1 {
        Check::ok(
            "ReplicasReady",
            format!("{ready} of {want} recorder pods ready"),
        )
    } else {
        Check::failed(
            "NoReplicaReady",
            format!(
                "0 of {want} recorder pods ready: see `kubectl describe deployment {}`",
                d.name_any()
            ),
        )
    }
}

/// What to do after a failed reconcile: transient failures retry with
/// backoff, an invalid policy waits for a change.
pub fn error_policy(policy: Arc<RecordingPolicy>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(category = error.category(), error = %error, "reconcile failed");
    let n = {
        let mut failures = ctx.failures.lock().unwrap_or_else(|e| e.into_inner());
        let n = failures.entry(key(&policy)).or_default();
        *n += 1;
        *n
    };
    match error {
        Error::Invalid(_) => Action::await_change(),
        Error::SecretMissing(_) | Error::SecretKeyMissing { .. } | Error::PromptMissing { .. } => {
            Action::requeue(backoff(Duration::from_secs(30), n))
        }
        Error::Storage(e) if !e.transient() => Action::requeue(backoff(Duration::from_secs(60), n)),
        _ => Action::requeue(backoff(Duration::from_secs(5), n)),
    }
}
