//! Against a real cluster (kind, k3d) when KUBECONFIG points at one: `make e2e`.
//! Installs the CRD, runs `earshot-operator run` against the cluster, applies
//! a policy and follows it through a users change, a refused retention and
//! deletion. Not part of `make test`: no API server can run on the build
//! machines, and a skipped test must not count as a pass.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use earshot_crds::RecordingPolicy;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

struct Operator(Child);

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn eventually<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within 120 s");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[tokio::test]
async fn a_policy_through_its_life_in_a_real_cluster() {
    let client = Client::try_default()
        .await
        .expect("KUBECONFIG points at a reachable cluster");
    let ssa = PatchParams::apply("earshot-e2e").force();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.patch(
        "recordingpolicies.earshot.io",
        &ssa,
        &Patch::Apply(earshot_crds::crd()),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;

    let ns = format!("earshot-e2e-{}", std::process::id());
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap(),
        )
        .await
        .unwrap();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    secrets
        .create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "acme-recordings-s3"}, "stringData": {"AWS_ACCESS_KEY_ID": "id", "AWS_SECRET_ACCESS_KEY": "secret"}})).unwrap())
        .await
        .unwrap();

    let _operator = Operator(
        Command::new(env!("CARGO_BIN_EXE_earshot-operator"))
            .args([
                "run",
                "--recorder-image",
                "earshot/recorder:e2e",
                "--http",
                "127.0.0.1:0",
                "--lease-namespace",
                &ns,
                "--identity",
                "e2e",
            ])
            .spawn()
            .expect("start the operator"),
    );

    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../config/samples/small-office.yaml"
    ))
    .unwrap();
    let mut policy: serde_json::Value = serde_yaml::from_str(&text).unwrap();
    policy["metadata"]["namespace"] = json!(ns);
    let policies: Api<RecordingPolicy> = Api::namespaced(client.clone(), &ns);

    // The API server itself refuses a retention beyond the CRD's bound.
    let mut too_long = policy.clone();
    too_long["spec"]["retentionDays"] = json!(4000);
    let err = policies
        .patch("office", &ssa, &Patch::Apply(&too_long))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("retentionDays"), "{err}");

    policies
        .patch("office", &ssa, &Patch::Apply(&policy))
        .await
        .unwrap();
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let recorders: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
    let cm = eventually("ConfigMap", async || {
        configmaps.get_opt("earshot-office").await.ok().flatten()
    })
    .await;
    assert!(cm.data.unwrap()["recorder.yaml"].contains("extension: '008'"));
    let d = eventually("StatefulSet", async || {
        recorders.get_opt("earshot-office").await.ok().flatten()
    })
    .await;
    assert_eq!(
        d.metadata.owner_references.unwrap()[0].kind,
        "RecordingPolicy"
    );
    // The sample enables the tenant's console.
    let console = eventually("console Deployment", async || {
        deployments
            .get_opt("earshot-office-console")
            .await
            .ok()
            .flatten()
    })
    .await;
    assert_eq!(
        console.metadata.owner_references.unwrap()[0].kind,
        "RecordingPolicy"
    );
    let status = eventually("status", async || {
        policies
            .get("office")
            .await
            .ok()
            .and_then(|p| p.status)
            .filter(|s| s.observed_generation.is_some())
    })
    .await;
    let types: Vec<String> = status.conditions.iter().map(|c| c.type_.clone()).collect();
    assert_eq!(
        types,
        [
            "Ready",
            "RecorderAvailable",
            "StorageReady",
            "RetentionEnforced"
        ]
    );
    assert_eq!(status.users.unwrap().total, 3);

    // A users change reaches the ConfigMap and leaves the pods alone.
    let generation = d.metadata.generation;
    policy["spec"]["users"][2]["mode"] = json!("Always");
    policies
        .patch("office", &ssa, &Patch::Apply(&policy))
        .await
        .unwrap();
    eventually("ConfigMap updated", async || {
        let cm = configmaps.get("earshot-office").await.ok()?;
        let file = cm.data?.get("recorder.yaml")?.clone();
        let cfg = earshot_contracts::config::RecorderConfig::from_yaml(&file).ok()?;
        cfg.users
            .iter()
            .any(|u| {
                u.extension == "003" && u.mode == Some(earshot_contracts::RecordingMode::Always)
            })
            .then_some(())
    })
    .await;
    assert_eq!(
        recorders
            .get("earshot-office")
            .await
            .unwrap()
            .metadata
            .generation,
        generation
    );

    // Deleting the policy removes its workload (garbage collection).
    policies
        .delete("office", &DeleteParams::default())
        .await
        .unwrap();
    eventually("workload collected", async || {
        recorders
            .get_opt("earshot-office")
            .await
            .ok()
            .flatten()
            .is_none()
            .then_some(())
    })
    .await;
    namespaces
        .delete(&ns, &DeleteParams::default())
        .await
        .unwrap();
}
