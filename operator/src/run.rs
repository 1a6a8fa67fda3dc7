//! `earshot-operator run`: the controller, in a cluster or with KUBECONFIG.
//! Replicas elect a leader through a `coordination.k8s.io` Lease; only the
//! leader reconciles, and it exits if it loses the lease so the other takes
//! over cleanly. `/metrics`, `/healthz` and `/readyz` are served by every replica.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use earshot_crds::RecordingPolicy;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Node, Service};
use kube::runtime::Controller;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};

use crate::config::OperatorConfig;
use crate::metrics::OperatorMetrics;
use crate::reconcile::{Context, error_policy, reconcile};
use crate::storage::S3Storage;

/// Where the operator runs.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Address of `/metrics`, `/healthz`, `/readyz`.
    pub http: std::net::SocketAddr,
    /// Namespace of the leader-election Lease (the operator's own).
    pub lease_namespace: String,
    /// This replica's identity (the pod name).
    pub identity: String,
}

/// Runs until SIGTERM, or until this replica loses leadership.
pub async fn run(operator: OperatorConfig, opts: RunOptions) -> anyhow::Result<()> {
    let client = Client::try_default()
        .await
        .context("cannot reach the Kubernetes API (in cluster or KUBECONFIG)")?;
    let metrics = OperatorMetrics::new();
    let leading = Arc::new(AtomicBool::new(false));
    serve_http(opts.http, metrics.clone(), leading.clone()).await?;

    let manager = kube_lease_manager::LeaseManagerBuilder::new(client.clone(), "earshot-operator")
        .with_namespace(&opts.lease_namespace)
        .with_identity(&opts.identity)
        .with_duration(15)
        .with_grace(5)
        .build()
        .await
        .context("cannot set up the leader-election Lease")?;
    let (mut lease, lease_task) = manager.watch().await;
    tracing::info!(identity = %opts.identity, "waiting to lead");
    while !*lease.borrow_and_update() {
        lease.changed().await.context("leader election stopped")?;
    }
    leading.store(true, Ordering::Relaxed);
    tracing::info!(identity = %opts.identity, "leading: reconciling RecordingPolicies");

    // ServiceMonitors only where the Prometheus Operator is installed.
    let service_monitor = kube::discovery::Discovery::new(client.clone())
        .filter(&["monitoring.coreos.com"])
        .run()
        .await
        .map(|d| {
            d.groups()
                .any(|g| g.recommended_kind("ServiceMonitor").is_some())
        })
        .unwrap_or(false);
    tracing::info!(service_monitor, "cluster capabilities discovered");
    let ctx = Arc::new(Context {
        client: client.clone(),
        operator,
        storage: Arc::new(S3Storage::default()),
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: "earshot-operator".into(),
                instance: Some(opts.identity.clone()),
            },
        ),
        metrics,
        now: || {
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now())
        },
        service_monitor,
        failures: Default::default(),
    });
    let controller = Controller::new(
        Api::<RecordingPolicy>::all(client.clone()),
        watcher::Config::default(),
    )
    .owns(
        Api::<ConfigMap>::all(client.clone()),
        watcher::Config::default().labels("app.kubernetes.io/managed-by=earshot-operator"),
    )
    .owns(
        Api::<StatefulSet>::all(client.clone()),
        watcher::Config::default().labels("app.kubernetes.io/managed-by=earshot-operator"),
    )
    .owns(
        Api::<Deployment>::all(client.clone()),
        watcher::Config::default().labels("app.kubernetes.io/managed-by=earshot-operator"),
    )
    .owns(
        Api::<Service>::all(client.clone()),
        watcher::Config::default().labels("app.kubernetes.io/managed-by=earshot-operator"),
    )
    // A node's addresses or labels changed: host-network recorders'
    // config follows (status heartbeats change neither, and are filtered).
    .reconcile_all_on(
        watcher(Api::<Node>::all(client.clone()), watcher::Config::default())
            .applied_objects()
            .predicate_filter(
                crate::reconcile::placement::node_fingerprint,
                Default::default(),
            )
            .filter_map(|n| std::future::ready(n.ok().map(|_| ()))),
    )
    .shutdown_on_signal()
    .run(reconcile, error_policy, ctx)
    .for_each(|res| async move {
        if let Err(e) = res {
            tracing::debug!(error = %e, "reconcile attempt ended with an error");
        }
    });
    tokio::select! {
        _ = controller => tracing::info!("controller stopped"),
        lost = async { while lease.changed().await.is_ok() { if !*lease.borrow() { return true } } false } => {
            if lost {
                anyhow::bail!("lost the leader-election Lease; exiting so the new leader reconciles alone");
            }
        }
    }
    drop(lease);
    let _ = lease_task.await;
    Ok(())
}

async fn serve_http(
    addr: std::net::SocketAddr,
    metrics: OperatorMetrics,
    leading: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot bind {addr}"))?;
    let app = axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(move || {
                let m = metrics.clone();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        m.encode(),
                    )
                }
            }),
        )
        .route("/healthz", axum::routing::get(|| async { "ok\n" }))
        // A standby replica is ready too: it serves metrics and waits to lead.
        .route(
            "/readyz",
            axum::routing::get(move || {
                let leading = leading.load(Ordering::Relaxed);
                async move { if leading { "leading\n" } else { "standby\n" } }
            }),
        );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "HTTP server stopped");
        }
    });
    Ok(())
}
