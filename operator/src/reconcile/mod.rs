//! The reconcile pipeline, one step per file, in the order they run:
//!
//! 1. `validate` (no client),
//! 2. `dereference` (client),
//! 3. `build` (no client, in [`crate::build`]),
//! 4. `apply` (client),
//! 5. storage (client, [`crate::storage`]),
//! 6. `status` (pure build, client write, once per reconcile whichever step
//!    it stopped at).
//!
//! An invalid spec waits for a change; a transient failure requeues with
//! backoff. Deleting a policy needs no step: owner references remove the
//! workload, and nothing touches storage, so recordings stay and still
//! expire by their rule.

pub mod apply;
pub mod dereference;
pub mod placement;
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
use crate::storage::s3::Enforced;
use status::{Check, Observed, build_status, patch_status};
use validate::validate;

pub use crate::error::Error;

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
    let (result, ready) =
        tracing::Instrument::instrument(reconcile_inner(&policy, &ctx), span).await;
    ctx.metrics
        .observe_ready(&policy, &result, started.elapsed(), ready);
    if result.is_ok() {
        ctx.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key(&policy));
    }
    result
}

/// The reconcile's result, and whether the status it wrote says Ready.
async fn reconcile_inner(policy: &RecordingPolicy, ctx: &Context) -> (Result<Action, Error>, bool) {
    if policy.metadata.deletion_timestamp.is_some() {
        // Going away: owner references remove the workload; storage is left
        // alone so recordings stay and still expire by their rule.
        return (Ok(Action::await_change()), true);
    }
    let (observed, result) = run_steps(policy, ctx).await;
    // 6. status — pure build, client write: once per reconcile, whatever
    // step it stopped at.
    let policies: Api<RecordingPolicy> =
        Api::namespaced(ctx.client.clone(), &policy.namespace().unwrap_or_default());
    let status = build_status(policy.status.as_ref(), &observed, (ctx.now)());
    if let Err(e) = patch_status(&policies, &policy.name_any(), &status).await {
        return (Err(e), false);
    }
    let ready = result.is_ok()
        && status
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
    (result, ready)
}

/// Steps 1 to 5. Each check that a step could not make stays Unknown with
/// the reason it was not made; Events are published as the steps go.
async fn run_steps(policy: &RecordingPolicy, ctx: &Context) -> (Observed, Result<Action, Error>) {
    let ns = policy.namespace().unwrap_or_default();
    let prev = policy.status.as_ref();
    let mut observed = Observed {
        generation: policy.metadata.generation,
        recorder: Check::unknown("Reconciling", "not checked yet"),
        storage: Check::unknown("Reconciling", "not checked yet"),
        retention: Check::unknown("Reconciling", "not checked yet"),
        enforced_days: None,
        ready_replicas: prev.and_then(|p| p.ready_replicas),
        replicas: prev.map(|p| p.replicas.clone()).unwrap_or_default(),
        service_address: prev.and_then(|p| p.service_address.clone()),
        users: policy.spec.user_counts(),
    };

    // 1. validate — no client.
    let mut v = match validate(policy, &ctx.operator) {
        Ok(v) => v,
        Err(invalid) => {
            let msg = invalid.to_string();
            observed.recorder = Check::failed(invalid.reason(), msg.clone());
            observed.storage =
                Check::unknown("PolicyInvalid", "not checked while the policy is invalid");
            observed.retention =
                Check::unknown("PolicyInvalid", "not changed while the policy is invalid");
            event(ctx, policy, true, invalid.reason(), msg).await;
            // Waits for the policy to change; nothing else can fix it.
            return (observed, Ok(Action::await_change()));
        }
    };

    // 2. dereference — client. Host network: what the namespace allows,
    // the ports other policies hold on the same nodes, the nodes' addresses.
    if v.policy.spec.recorder.network.mode == earshot_crds::NetworkMode::Host {
        let refused = match placement::host_network_forbidden(&ctx.client, &ns).await {
            Ok(Some(level)) => Some(Error::HostNetworkForbidden(level)),
            Ok(None) => match placement::all_policies(&ctx.client).await {
                Ok(all) => placement::clash(policy, &all).map(Error::PortClash),
                Err(e) => return (observed, Err(e)),
            },
            Err(e) => return (observed, Err(e)),
        };
        if let Some(e) = refused {
            observed.recorder = Check::failed(e.reason(), e.to_string());
            observed.storage = Check::unknown(e.reason(), "not checked while no recorder can run");
            observed.retention =
                Check::unknown(e.reason(), "not changed while no recorder can run");
            event(ctx, policy, true, e.reason(), e.to_string()).await;
            return (observed, Err(e));
        }
        match placement::nodes(&ctx.client, &v.policy.spec.recorder.placement).await {
            Ok(nodes) => v.nodes = nodes,
            Err(e) => return (observed, Err(e)),
        }
    }
    // Without its prompt the recorder pods could
    // not start: nothing is applied, the recorders already running stay as
    // they are.
    let configmaps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
    if let Err(e) = dereference::prompt(&configmaps, &v).await {
        observed.recorder = Check::failed(e.reason(), e.to_string());
        if let Error::PromptMissing { .. } = e {
            event(ctx, policy, true, e.reason(), e.to_string()).await;
            observed.storage =
                Check::unknown("PromptMissing", "not checked until the prompt exists");
            observed.retention =
                Check::unknown("PromptMissing", "not changed until the prompt exists");
        }
        return (observed, Err(e));
    }
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    if let Err(e) = dereference::tls(&secrets, &configmaps, &v).await {
        observed.recorder = Check::failed(e.reason(), e.to_string());
        if let Error::TlsMissing(_) = e {
            event(ctx, policy, true, e.reason(), e.to_string()).await;
            observed.storage =
                Check::unknown(e.reason(), "not checked until the recorders can start");
            observed.retention =
                Check::unknown(e.reason(), "not changed until the recorders can start");
        }
        return (observed, Err(e));
    }
    let target = match dereference::storage_target(&secrets, &v).await {
        Ok(t) => Ok(t),
        Err(
            e @ (Error::SecretMissing(_)
            | Error::SecretKeyMissing { .. }
            | Error::OperatorKeyMissing(_)),
        ) => {
            event(ctx, policy, true, e.reason(), e.to_string()).await;
            observed.storage = Check::failed(e.reason(), e.to_string());
            observed.retention = Check::unknown(
                "StorageNotReady",
                "retention is enforced once storage is ready",
            );
            Err(e)
        }
        Err(e) => return (observed, Err(e)),
    };
    if target.is_ok() {
        match dereference::console_secret(&secrets, &v).await {
            Ok(Some(problem)) => event(ctx, policy, true, "ConsoleSecretMissing", problem).await,
            Ok(None) => {}
            Err(e) => return (observed, Err(e)),
        }
    }

    if let Some(why) = crate::build::console_expose_refused(&v) {
        event(ctx, policy, true, "ConsoleExposeRefused", why).await;
    }

    // 3 and 4. build — no client — and apply — client. The recorders run
    // even while their Secret is missing (it may arrive any moment).
    let recorders = match apply::apply_all(&ctx.client, &v, ctx.service_monitor).await {
        Ok(d) => d,
        Err(e) => {
            observed.recorder = Check::unknown(e.reason(), e.to_string());
            return (observed, Err(e));
        }
    };
    observed.recorder = recorder_check(&recorders, &v);
    let outside = placement::peers_outside(&v.policy);
    if !outside.is_empty() {
        let warning = format!(
            "peers {} send from outside the cluster's networks (spec.recorder.network.internalNetworks, default the private ranges): in Pod mode they cannot reach the pod's address it advertises; use network.mode Host (README, Deploying)",
            outside.join(", ")
        );
        event(ctx, policy, true, "PeerOutsideCluster", warning.clone()).await;
        observed.recorder.message = format!("{}; warning: {warning}", observed.recorder.message);
    }
    observed.ready_replicas = recorders.status.as_ref().and_then(|s| s.ready_replicas);
    let target = match target {
        Ok(t) => t,
        // Requeued with the Secret's backoff; the status says what is missing.
        Err(e) => return (observed, Err(e)),
    };
    match placement::replicas(&ctx.client, &v).await {
        Ok(r) => observed.replicas = r,
        Err(e) => return (observed, Err(e)),
    }
    observed.service_address = placement::service_address(&v, &observed.replicas);

    // 5. storage — client. First the recorders' own key: a probe object
    // written under the policy's prefix, read back and deleted, so
    // StorageReady means the recorders can store recordings.
    let probed = match ctx
        .storage
        .probe(
            target.recorders.clone(),
            &v.storage.bucket,
            &v.prefix,
            target.nonce,
        )
        .await
    {
        Ok(p) => p,
        Err(e) => {
            let e = Error::Storage(e);
            event(ctx, policy, true, e.reason(), e.to_string()).await;
            observed.storage = Check::failed(e.reason(), e.to_string());
            observed.retention = Check::unknown(
                "StorageNotReady",
                "retention is enforced once storage is ready",
            );
            return (observed, Err(e));
        }
    };
    let recorders_can_write = format!(
        "the recorders' key (Secret {}) stored a probe object in bucket {} under {}{}",
        v.storage.credentials_secret.name,
        v.storage.bucket,
        v.prefix,
        match (probed.read_back, probed.deleted) {
            (true, true) => ", read it back and deleted it",
            (true, false) =>
                " and read it back (it may not delete: the object expires by the lifecycle rule)",
            (false, _) => " (a write-only key: it could not read it back)",
        }
    );
    observed.storage = Check::ok("RecordersCanWrite", recorders_can_write.clone());
    let Some(target) = target.operator else {
        // No key of the operator's own for this store: the tenant's is never
        // used for lifecycle rules (it would have to be allowed to change
        // every tenant's retention), so no rule is set and the store is not
        // contacted. Only a change of the operator's settings (a restart,
        // which reconciles every policy) can fix it.
        let msg = format!(
            "the operator has no key of its own for object store {} (Helm storageEndpoints[].lifecycleCredentialsSecret) and never uses the tenant's for lifecycle rules: no rule is set, so recordings under {} are not deleted after {} days",
            v.storage.endpoint.chars().take(200).collect::<String>(),
            v.prefix,
            v.policy.spec.retention_days
        );
        event(ctx, policy, true, "NoOperatorKey", msg.clone()).await;
        observed.retention = Check::failed("NoOperatorKey", msg);
        return (observed, Ok(Action::await_change()));
    };

    // Then the lifecycle rule, with the operator's own key.
    let rule = PolicyRule {
        id: rule_id(&v.namespace, &v.name),
        prefix: v.prefix.clone(),
        days: v.policy.spec.retention_days,
    };
    match ctx.storage.enforce(target, &v.storage.bucket, &rule).await {
        Ok(Enforced { changed, shorter }) => {
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
            observed.storage = Check::ok(
                "BucketReachable",
                format!(
                    "bucket {} at {} accepts the operator's key, and {recorders_can_write}",
                    v.storage.bucket, v.storage.endpoint,
                ),
            );
            if let Some(other) = shorter {
                // S3 applies the earliest expiration that matches: ours is
                // set, but recordings would go sooner than the policy says.
                let msg = format!(
                    "lifecycle rule {} is set, but {}: recordings under {} would be deleted before {} days",
                    rule.id,
                    other.describe(),
                    rule.prefix,
                    rule.days
                );
                event(ctx, policy, true, "ShorterRuleInBucket", msg.clone()).await;
                observed.retention = Check::failed("ShorterRuleInBucket", msg);
            } else {
                observed.retention = Check::ok(
                    "LifecycleRuleSet",
                    format!(
                        "lifecycle rule {} expires objects under {} after {} days",
                        rule.id, rule.prefix, rule.days
                    ),
                );
                observed.enforced_days = Some(rule.days);
            }
            // Recheck now and then: a bucket's rules can be edited behind our back.
            (observed, Ok(Action::requeue(Duration::from_secs(600))))
        }
        Err(e) => {
            ctx.metrics.lifecycle_update(false, false);
            let e = Error::Storage(e);
            event(ctx, policy, true, e.reason(), e.to_string()).await;
            observed.storage = Check::failed(e.reason(), e.to_string());
            observed.retention = Check::unknown(
                "StorageNotReady",
                "retention is enforced once storage is ready",
            );
            (observed, Err(e))
        }
    }
}

fn recorder_check(
    d: &k8s_openapi::api::apps::v1::StatefulSet,
    v: &crate::build::Validated,
) -> Check {
    let want = v.policy.spec.recorder.replicas;
    let ready = d
        .status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0);
    // A change the recorder cannot reload rolls its pods (the restart
    // annotation): until every pod runs the new template, status says so.
    let status = d.status.as_ref();
    let generation = d.metadata.generation.unwrap_or(0);
    let observed = status.and_then(|s| s.observed_generation).unwrap_or(0);
    let updated = status.and_then(|s| s.updated_replicas).unwrap_or(0);
    let revisions = status.map(|s| (s.current_revision.clone(), s.update_revision.clone()));
    let rolling = observed < generation
        || updated < want
        || revisions.is_some_and(|(c, u)| c.is_some() && u.is_some() && c != u);
    if ready >= 1 && rolling {
        Check::ok(
            "Rolling",
            format!(
                "{ready} of {want} recorder pods ready, {updated} of {want} on the new configuration (a change that needs a restart is rolling out)"
            ),
        )
    } else if ready >= 1 {
        Check::ok(
            "ReplicasReady",
            format!("{ready} of {want} recorder pods ready"),
        )
    } else {
        Check::failed(
            "NoReplicaReady",
            format!(
                "0 of {want} recorder pods ready: see `kubectl describe statefulset {}`",
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
        Error::SecretMissing(_)
        | Error::SecretKeyMissing { .. }
        | Error::PromptMissing { .. }
        | Error::TlsMissing(_)
        | Error::OperatorKeyMissing(_) => Action::requeue(backoff(Duration::from_secs(30), n)),
        // Another policy or the namespace may change: look again.
        Error::HostNetworkForbidden(_) | Error::PortClash(_) => {
            Action::requeue(backoff(Duration::from_secs(30), n))
        }
        Error::Storage(e) if !e.transient() => Action::requeue(backoff(Duration::from_secs(60), n)),
        _ => Action::requeue(backoff(Duration::from_secs(5), n)),
    }
}

#[cfg(test)]
mod roll_tests {
    use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetStatus};

    fn validated() -> crate::build::Validated {
        let text = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../config/samples/small-office.yaml"),
        )
        .unwrap();
        let policy = earshot_crds::validate::PolicyValidator::new()
            .parse(&text)
            .unwrap();
        let operator = crate::config::OperatorConfig {
            allow_any_storage_endpoint: true,
            ..Default::default()
        };
        super::validate::validate(&policy, &operator).unwrap()
    }

    fn sts(ready: i32, updated: i32, current: &str, update: &str) -> StatefulSet {
        StatefulSet {
            status: Some(StatefulSetStatus {
                replicas: 2,
                ready_replicas: Some(ready),
                updated_replicas: Some(updated),
                current_revision: Some(current.into()),
                update_revision: Some(update.into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// Status waits for a roll: while pods run an older template it says
    /// so (still available: calls go on through the ready pods).
    #[test]
    fn a_rolling_recorder_says_so_until_every_pod_is_on_the_new_template() {
        let mut v = validated();
        v.policy.spec.recorder.replicas = 2;
        let rolling = super::recorder_check(&sts(2, 1, "r1", "r2"), &v);
        assert_eq!(
            (rolling.ok, rolling.reason.as_str()),
            (Some(true), "Rolling")
        );
        assert!(
            rolling.message.contains("1 of 2 on the new configuration"),
            "{}",
            rolling.message
        );
        let done = super::recorder_check(&sts(2, 2, "r2", "r2"), &v);
        assert_eq!(done.reason, "ReplicasReady");
        let down = super::recorder_check(&sts(0, 0, "r2", "r2"), &v);
        assert_eq!(
            (down.ok, down.reason.as_str()),
            (Some(false), "NoReplicaReady")
        );
    }
}
