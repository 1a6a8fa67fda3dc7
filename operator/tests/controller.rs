//! The reconciler against kube's mocked API server (tower-test), in the
//! style of kube-rs's controller-rs fixtures: each scenario lists every
//! request the operator must make, in order — method, path, field manager and
//! body — and answers as the API server would. A missing or extra request
//! fails the test.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use earshot_crds::RecordingPolicy;
use earshot_operator::config::OperatorConfig;
use earshot_operator::metrics::OperatorMetrics;
use earshot_operator::reconcile::{Context, Error, error_policy, reconcile};
use earshot_operator::storage::Storage;
use earshot_operator::storage::lifecycle::PolicyRule;
use earshot_operator::storage::s3::{Enforced, Probed, S3Target, StorageError};
use http::{Request, Response};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::client::Body;
use kube::runtime::controller::Action;
use kube::runtime::events::{Recorder, Reporter};
use serde_json::{Value, json};

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// A store that records what it is asked.
#[derive(Default)]
struct FakeStorage {
    calls: Mutex<Vec<String>>,
    changed: bool,
    /// The recorders' key may read but not write.
    read_only: bool,
}

impl Storage for FakeStorage {
    fn enforce<'a>(
        &'a self,
        target: S3Target,
        bucket: &'a str,
        rule: &'a PolicyRule,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Enforced, StorageError>> + Send + 'a>,
    > {
        self.calls.lock().unwrap().push(format!(
            "enforce {} {bucket} {} {} {} as {}",
            target.endpoint, rule.id, rule.prefix, rule.days, target.access_key_id
        ));
        let changed = self.changed;
        Box::pin(async move {
            Ok(Enforced {
                changed,
                shorter: None,
            })
        })
    }

    fn probe<'a>(
        &'a self,
        target: S3Target,
        bucket: &'a str,
        prefix: &'a str,
        _nonce: u64,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Probed, StorageError>> + Send + 'a>,
    > {
        self.calls.lock().unwrap().push(format!(
            "probe {} {bucket} {prefix} as {}",
            target.endpoint, target.access_key_id
        ));
        let read_only = self.read_only;
        Box::pin(async move {
            if read_only {
                return Err(StorageError::ReadOnly {
                    bucket: bucket.into(),
                    prefix: prefix.into(),
                    status: 403,
                });
            }
            Ok(Probed {
                read_back: true,
                deleted: true,
            })
        })
    }
}

fn now() -> Time {
    Time("2026-11-28T12:00:00Z".parse().unwrap())
}

fn mk_policy(retention: i32, users: Value) -> RecordingPolicy {
    let mut v = json!({
        "apiVersion": "earshot.io/v1alpha1",
        "kind": "RecordingPolicy",
        "metadata": {"name": "office", "namespace": "acme", "uid": "u-1", "generation": 2},
        "spec": {
            "users": users,
            "defaultShortcode": "*5",
            "retentionDays": retention,
            "storage": {"endpoint": "http://garage:3900", "bucket": "recordings", "region": "garage", "credentialsSecret": {"name": "s3"}},
            "recorder": {"peers": [{"name": "pbx", "sources": ["10.0.0.0/24"], "nextHop": "trunk:5060"}]},
        },
    });
    // Defaults as the API server applies them.
    v["spec"]["storage"]["pathStyle"] = json!(true);
    v["spec"]["storage"]["credentialsSecret"]["accessKeyIdKey"] = json!("AWS_ACCESS_KEY_ID");
    v["spec"]["storage"]["credentialsSecret"]["secretAccessKeyKey"] =
        json!("AWS_SECRET_ACCESS_KEY");
    serde_json::from_value(v).unwrap()
}

fn users_a() -> Value {
    json!([{"extension": "008", "mode": "Always"}, {"extension": "012"}])
}

/// The platform of most scenarios: the tenants' store listed, with the
/// operator's own key for it in a directory that lives as long as the guard.
fn mk_ctx(storage: Arc<FakeStorage>) -> (Arc<Context>, Handle, earshot_tests::TempDir) {
    let (platform, key) = listed_with_own_key("http://garage:3900");
    let (ctx, handle) = mk_ctx_with(storage, platform);
    (ctx, handle, key)
}

fn listed_with_own_key(url: &str) -> (OperatorConfig, earshot_tests::TempDir) {
    let dir = earshot_tests::TempDir::new("operator-key");
    std::fs::write(dir.path().join("accessKeyId"), "GKPLATFORM\n").unwrap();
    std::fs::write(dir.path().join("secretAccessKey"), "platform-secret\n").unwrap();
    let platform = OperatorConfig {
        storage_endpoints: vec![earshot_operator::config::AllowedEndpoint {
            url: url.into(),
            lifecycle_credentials_dir: Some(dir.path().to_owned()),
        }],
        ..OperatorConfig::default()
    };
    (platform, dir)
}

fn mk_ctx_with(storage: Arc<FakeStorage>, platform: OperatorConfig) -> (Arc<Context>, Handle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "earshot-operator".into(),
            instance: None,
        },
    );
    let ctx = Context {
        client,
        operator: OperatorConfig {
            recorder_image: "earshot/recorder:test".into(),
            max_retention_days: 365,
            ..platform
        },
        storage,
        recorder,
        metrics: OperatorMetrics::new(),
        now,
        service_monitor: false,
        failures: Default::default(),
    };
    (Arc::new(ctx), handle)
}

/// One expected request and the answer.
struct Expect {
    method: &'static str,
    path: &'static str,
    status: u16,
    /// Checks the body; returns what to answer (None: echo the body).
    respond: Box<dyn FnOnce(Value) -> Option<Value> + Send>,
}

fn expect(
    method: &'static str,
    path: &'static str,
    respond: impl FnOnce(Value) -> Option<Value> + Send + 'static,
) -> Expect {
    Expect {
        method,
        path,
        status: 200,
        respond: Box::new(respond),
    }
}

fn not_found(method: &'static str, path: &'static str) -> Expect {
    Expect {
        method,
        path,
        status: 404,
        respond: Box::new(|_| {
            Some(
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"}),
            )
        }),
    }
}

fn event(reason: &'static str) -> Expect {
    expect(
        "POST",
        "/apis/events.k8s.io/v1/namespaces/acme/events",
        move |body| {
            assert_eq!(body["reason"], reason, "event reason");
            assert_eq!(body["regarding"]["name"], "office");
            None
        },
    )
}

/// What a reconcile of a new, valid policy asks the API server, in order:
/// its Secret, the workload, the Event of the new rule, then the status,
/// which `status` checks.
fn reconciled_steps(status: impl FnOnce(Value) + Send + 'static) -> Vec<Expect> {
    let mut steps = vec![expect("GET", "/api/v1/namespaces/acme/secrets/s3", |_| {
        Some(secret())
    })];
    steps.extend(workload_steps());
    steps.push(pods_listed());
    steps.push(event("RetentionEnforced"));
    steps.push(expect(
        "PATCH",
        "/apis/earshot.io/v1alpha1/namespaces/acme/recordingpolicies/office/status",
        move |b| {
            status(b);
            None
        },
    ));
    steps
}

/// Serves the expected requests in order, then checks none is left over.
async fn serve(mut handle: Handle, steps: Vec<Expect>) -> Vec<Value> {
    let mut bodies = Vec::new();
    for step in steps {
        let (req, send) = tokio::time::timeout(Duration::from_secs(5), handle.next_request())
            .await
            .unwrap_or_else(|_| {
                panic!("expected {} {} but no request came", step.method, step.path)
            })
            .expect("request");
        assert_eq!(
            req.method().as_str(),
            step.method,
            "method of {}",
            req.uri()
        );
        assert_eq!(req.uri().path(), step.path);
        // Every request is one the chart's RBAC grants.
        let call = earshot_operator::rbac::classify(req.method().as_str(), req.uri().path())
            .expect("an API resource path");
        assert!(
            earshot_operator::rbac::CLUSTER.iter().any(
                |(v, g, r)| (*v, *g, *r) == (call.0.as_str(), call.1.as_str(), call.2.as_str())
            ),
            "{call:?} is not in rbac::CLUSTER"
        );
        let query = req.uri().query().unwrap_or("").to_owned();
        if step.method == "PATCH" {
            assert!(
                query.contains("fieldManager=earshot-operator"),
                "server-side apply with our field manager: {query}"
            );
            assert!(query.contains("force=true"), "{query}");
            assert_eq!(
                req.headers()["content-type"],
                "application/apply-patch+yaml"
            );
        }
        let bytes = req.into_body().collect_bytes().await.unwrap();
        let body: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        bodies.push(body.clone());
        let status_patch = step.path.ends_with("/status");
        let mut answer = (step.respond)(body.clone()).unwrap_or(body);
        if status_patch {
            // The API server answers with the whole object.
            let mut full = serde_json::to_value(mk_policy(30, users_a())).unwrap();
            full["status"] = answer["status"].take();
            answer = full;
        }
        send.send_response(
            Response::builder()
                .status(step.status)
                .body(Body::from(serde_json::to_vec(&answer).unwrap()))
                .unwrap(),
        );
    }
    // Nothing more may arrive (the client closing is fine).
    if let Ok(Some((req, _))) =
        tokio::time::timeout(Duration::from_millis(200), handle.next_request()).await
    {
        panic!(
            "an unexpected extra request: {} {}",
            req.method(),
            req.uri()
        );
    }
    bodies
}

/// The recorder pods, listed for the status (none here: no kubelet).
fn pods_listed() -> Expect {
    expect("GET", "/api/v1/namespaces/acme/pods", |_| {
        Some(json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": []}))
    })
}

fn secret() -> Value {
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s3", "namespace": "acme"},
           "data": {"AWS_ACCESS_KEY_ID": "R0tBQkM=", "AWS_SECRET_ACCESS_KEY": "c2VjcmV0"}})
}

fn with_ready_replicas(mut body: Value) -> Option<Value> {
    body["status"] = json!({"readyReplicas": 1, "replicas": 1, "updatedReplicas": 1});
    Some(body)
}

fn workload_steps() -> Vec<Expect> {
    vec![
        expect(
            "PATCH",
            "/api/v1/namespaces/acme/configmaps/earshot-office",
            |b| {
                assert_eq!(b["kind"], "ConfigMap");
                assert!(
                    b["data"]["recorder.yaml"]
                        .as_str()
                        .unwrap()
                        .contains("extension: '008'")
                );
                None
            },
        ),
        expect(
            "PATCH",
            "/apis/apps/v1/namespaces/acme/statefulsets/earshot-office",
            |b| {
                assert_eq!(b["kind"], "StatefulSet");
                assert_eq!(
                    b["metadata"]["ownerReferences"][0]["uid"], "u-1",
                    "owned by the policy"
                );
                assert_eq!(
                    b["spec"]["template"]["spec"]["containers"][0]["image"],
                    "earshot/recorder:test"
                );
                assert_eq!(
                    b["spec"]["volumeClaimTemplates"][0]["metadata"]["name"],
                    "spool"
                );
                with_ready_replicas(b)
            },
        ),
        // The recorders' Deployment of before 0.2, if any, goes.
        not_found(
            "DELETE",
            "/apis/apps/v1/namespaces/acme/deployments/earshot-office",
        ),
        expect(
            "PATCH",
            "/api/v1/namespaces/acme/services/earshot-office",
            |b| {
                assert_eq!(b["spec"]["ports"][0]["protocol"], "UDP");
                None
            },
        ),
        not_found(
            "DELETE",
            "/apis/policy/v1/namespaces/acme/poddisruptionbudgets/earshot-office",
        ),
        // No console in this policy: nothing left of an earlier one.
        not_found(
            "DELETE",
            "/apis/apps/v1/namespaces/acme/deployments/earshot-office-console",
        ),
        not_found(
            "DELETE",
            "/api/v1/namespaces/acme/services/earshot-office-console",
        ),
        not_found(
            "DELETE",
            "/apis/networking.k8s.io/v1/namespaces/acme/networkpolicies/earshot-office-console",
        ),
    ]
}

fn condition<'a>(status: &'a Value, kind: &str) -> &'a Value {
    status["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == kind)
        .unwrap()
}

#[tokio::test]
async fn a_new_policy_gets_its_workload_its_retention_rule_and_a_ready_status() {
    let storage = Arc::new(FakeStorage {
        changed: true,
        ..Default::default()
    });
    let (ctx, handle, _key) = mk_ctx(storage.clone());
    let steps = reconciled_steps(move |b| {
        for kind in [
            "Ready",
            "RecorderAvailable",
            "StorageReady",
            "RetentionEnforced",
        ] {
            assert_eq!(condition(&b, kind)["status"], "True", "{kind}: {b}");
        }
        assert_eq!(b["status"]["observedGeneration"], 2);
        assert_eq!(b["status"]["effectiveRetentionDays"], 30);
        assert_eq!(
            b["status"]["retentionEffectiveSince"],
            "2026-11-28T12:00:00Z"
        );
        assert_eq!(
            b["status"]["serviceAddress"],
            "earshot-office.acme.svc:5060"
        );
        assert_eq!(
            b["status"]["users"],
            json!({"total": 2, "always": 1, "onDemand": 1, "never": 0})
        );
    });
    let server = tokio::spawn(serve(handle, steps));
    let action = reconcile(Arc::new(mk_policy(30, users_a())), ctx.clone())
        .await
        .expect("reconciled");
    assert_eq!(action, Action::requeue(Duration::from_secs(600)));
    server.await.unwrap();
    assert_eq!(
        storage.calls.lock().unwrap().as_slice(),
        [
            "probe http://garage:3900 recordings acme/office/ as GKABC",
            "enforce http://garage:3900 recordings earshot/acme/office acme/office/ 30 as GKPLATFORM"
        ]
    );
    let metrics = ctx.metrics.encode();
    assert!(
        metrics.contains("earshot_operator_reconciles_total{result=\"ok\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("earshot_operator_policy_ready{namespace=\"acme\",policy=\"office\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_users_change_changes_the_configmap_and_not_the_workload() {
    let storage = Arc::new(FakeStorage::default());
    let mut bodies = Vec::new();
    for users in [
        users_a(),
        json!([{"extension": "008", "mode": "Never"}, {"extension": "013", "mode": "Always"}]),
    ] {
        let (ctx, handle, _key) = mk_ctx(storage.clone());
        let mut steps = vec![expect("GET", "/api/v1/namespaces/acme/secrets/s3", |_| {
            Some(secret())
        })];
        let mut workload = workload_steps();
        workload[0] = expect(
            "PATCH",
            "/api/v1/namespaces/acme/configmaps/earshot-office",
            |_| None,
        );
        steps.extend(workload);
        steps.push(pods_listed());
        // The rule was already in place: no event.
        steps.push(expect(
            "PATCH",
            "/apis/earshot.io/v1alpha1/namespaces/acme/recordingpolicies/office/status",
            |_| None,
        ));
        let server = tokio::spawn(serve(handle, steps));
        reconcile(Arc::new(mk_policy(30, users)), ctx)
            .await
            .expect("reconciled");
        bodies.push(server.await.unwrap());
    }
    let (first, second) = (&bodies[0], &bodies[1]);
    assert_ne!(first[1], second[1], "the ConfigMap carries the new users");
    assert!(
        second[1]["data"]["recorder.yaml"]
            .as_str()
            .unwrap()
            .contains("extension: '013'")
    );
    assert_eq!(
        first[2], second[2],
        "the Deployment is unchanged: no pod restarts"
    );
    assert_eq!(first[3], second[3], "the Service is unchanged");
}

#[tokio::test]
async fn an_invalid_policy_gets_a_status_and_no_workload() {
    let storage = Arc::new(FakeStorage::default());
    let (ctx, handle, _key) = mk_ctx(storage.clone());
    // The Event as the step finds the problem; the status, as always, last.
    let steps = vec![
        event("RetentionAboveMaximum"),
        expect(
            "PATCH",
            "/apis/earshot.io/v1alpha1/namespaces/acme/recordingpolicies/office/status",
            |b| {
                let ready = condition(&b, "Ready");
                assert_eq!(ready["status"], "False");
                assert_eq!(ready["reason"], "RetentionAboveMaximum");
                assert_eq!(
                    ready["message"],
                    "spec.retentionDays is 400 but this platform keeps recordings at most 365 days; lower it to 365 or less"
                );
                assert_eq!(condition(&b, "StorageReady")["status"], "Unknown");
                None
            },
        ),
    ];
    let server = tokio::spawn(serve(handle, steps));
    let action = reconcile(Arc::new(mk_policy(400, users_a())), ctx)
        .await
        .expect("an invalid spec is not an error to retry");
    assert_eq!(
        action,
        Action::await_change(),
        "waits for the policy to change"
    );
    server.await.unwrap();
    assert!(storage.calls.lock().unwrap().is_empty());
}

#[tokio::test]
async fn an_endpoint_the_platform_does_not_list_is_never_contacted() {
    let storage = Arc::new(FakeStorage::default());
    let platform = OperatorConfig {
        storage_endpoints: vec![earshot_operator::config::AllowedEndpoint {
            url: "http://garage.storage.svc:3900".into(),
            lifecycle_credentials_dir: None,
        }],
        ..OperatorConfig::default()
    };
    let (ctx, handle) = mk_ctx_with(storage.clone(), platform);
    // Not even the Secret is read: no key id can travel to that endpoint.
    let steps = vec![
        event("EndpointNotAllowed"),
        expect(
            "PATCH",
            "/apis/earshot.io/v1alpha1/namespaces/acme/recordingpolicies/office/status",
            |b| {
                let ready = condition(&b, "Ready");
                assert_eq!(ready["reason"], "EndpointNotAllowed");
                let msg = ready["message"].as_str().unwrap();
                assert!(msg.contains("\"http://garage:3900\""), "{msg}");
                assert!(msg.contains("http://garage.storage.svc:3900"), "{msg}");
                None
            },
        ),
    ];
    let server = tokio::spawn(serve(handle, steps));
    let action = reconcile(Arc::new(mk_policy(30, users_a())), ctx)
        .await
        .expect("an invalid spec is not an error to retry");
    assert_eq!(action, Action::await_change());
    server.await.unwrap();
    assert!(storage.calls.lock().unwrap().is_empty());
}

#[tokio::test]
async fn with_the_platform_s_own_key_the_tenant_s_key_only_probes_its_own_prefix() {
    let storage = Arc::new(FakeStorage {
        changed: true,
        ..Default::default()
    });
    let (platform, dir) = listed_with_own_key("http://GARAGE:3900/");
    let (ctx, handle) = mk_ctx_with(storage.clone(), platform);
    let steps = reconciled_steps(move |b| {
        let storage = condition(&b, "StorageReady");
        assert_eq!(storage["status"], "True", "{b}");
        assert!(
            storage["message"]
                .as_str()
                .unwrap()
                .contains("the operator's key"),
            "{b}"
        );
    });
    let server = tokio::spawn(serve(handle, steps));
    reconcile(Arc::new(mk_policy(30, users_a())), ctx.clone())
        .await
        .expect("reconciled");
    server.await.unwrap();
    assert_eq!(
        storage.calls.lock().unwrap().as_slice(),
        [
            "probe http://garage:3900 recordings acme/office/ as GKABC",
            "enforce http://garage:3900 recordings earshot/acme/office acme/office/ 30 as GKPLATFORM"
        ]
    );

    // The key file gone (a platform mistake): said so, nothing sent.
    std::fs::remove_file(dir.path().join("secretAccessKey")).unwrap();
    let (ctx, handle) = mk_ctx_with(storage.clone(), ctx.operator.clone());
    let mut steps = vec![expect("GET", "/api/v1/namespaces/acme/secrets/s3", |_| {
        Some(secret())
    })];
    steps.push(event("OperatorKeyMissing"));
    steps.extend(workload_steps());
    steps.push(expect(
        "PATCH",
        "/apis/earshot.io/v1alpha1/namespaces/acme/recordingpolicies/office/status",
        |b| {
            assert_eq!(
                condition(&b, "StorageReady")["reason"],
                "OperatorKeyMissing"
            );
            None
        },
    ));
    let server = tokio::spawn(serve(handle, steps));
    let err = reconcile(Arc::new(mk_policy(30, users_a())), ctx)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::OperatorKeyMissing(_)), "{err}");
    server.await.unwrap();
    assert_eq!(storage.calls.lock().unwrap().len(), 2, "nothing new sent");
}

#[tokio::test]
async fn a_missing_secret_says_so_and_requeues() {
    let storage = Arc::new(FakeStorage::default());
    let (ctx, handle, _key) = mk_ctx(storage.clone());
    let mut steps = vec![
        not_found("GET", "/api/v1/namespaces/acme/secrets/s3"),
        event("SecretMissing"),
    ];
    steps.extend(workload_steps());
    steps.push(expect(
        "PATCH",
        "/apis/earshot.io/v1alpha1/namespaces/acme/recordingpolicies/office/status",
        |b| {
            let storage = condition(&b, "StorageReady");
            assert_eq!(
                (storage["status"].as_str(), storage["reason"].as_str()),
                (Some("False"), Some("SecretMissing"))
            );
            assert!(
                storage["message"]
                    .as_str()
                    .unwrap()
                    .contains("Secret s3 named in spec.storage.credentialsSecret does not exist")
            );
            assert_eq!(condition(&b, "Ready")["status"], "False");
            assert_eq!(condition(&b, "RecorderAvailable")["status"], "True");
            None
        },
    ));
    let server = tokio::spawn(serve(handle, steps));
    let policy = Arc::new(mk_policy(30, users_a()));
    let err = reconcile(policy.clone(), ctx.clone()).await.unwrap_err();
    assert!(matches!(err, Error::SecretMissing(ref s) if s == "s3"));
    assert_eq!(
        error_policy(policy.clone(), &err, ctx.clone()),
        Action::requeue(Duration::from_secs(30))
    );
    assert_eq!(
        error_policy(policy.clone(), &err, ctx.clone()),
        Action::requeue(Duration::from_secs(60)),
        "backs off"
    );
    assert_eq!(
        error_policy(policy, &err, ctx.clone()),
        Action::requeue(Duration::from_secs(120))
    );
    server.await.unwrap();
    assert!(
        storage.calls.lock().unwrap().is_empty(),
        "no storage call without credentials"
    );
    assert!(ctx.metrics.encode().contains(
        "earshot_operator_reconcile_errors_total{category=\"secret\",namespace=\"acme\"} 1"
    ));
}

#[tokio::test]
async fn an_enabled_console_is_deployed_with_the_read_only_key() {
    let storage = Arc::new(FakeStorage::default());
    let (ctx, handle, _key) = mk_ctx(storage.clone());
    // The read-only key's Secret is missing: an Event says so, and the
    // console is deployed anyway (its pod starts once the Secret exists).
    let mut steps = vec![
        expect("GET", "/api/v1/namespaces/acme/secrets/s3", |_| {
            Some(secret())
        }),
        not_found("GET", "/api/v1/namespaces/acme/secrets/s3-read-only"),
        expect(
            "POST",
            "/apis/events.k8s.io/v1/namespaces/acme/events",
            |body| {
                assert_eq!(body["reason"], "ConsoleSecretMissing");
                assert!(body["note"].as_str().unwrap().contains(
                    "Secret s3-read-only named in spec.console.credentialsSecret does not exist"
                ));
                None
            },
        ),
    ];
    let mut workload = workload_steps();
    workload[5] = expect(
        "PATCH",
        "/apis/apps/v1/namespaces/acme/deployments/earshot-office-console",
        |b| {
            let c = &b["spec"]["template"]["spec"]["containers"][0];
            assert_eq!(c["args"], json!(["serve", "--log-json"]));
            assert!(
                c["env"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|e| e["name"] == "AWS_ACCESS_KEY_ID"
                        && e["valueFrom"]["secretKeyRef"]["name"] == "s3-read-only")
            );
            None
        },
    );
    steps.extend(workload);
    steps.push(pods_listed());
    steps.push(expect(
        "PATCH",
        "/apis/earshot.io/v1alpha1/namespaces/acme/recordingpolicies/office/status",
        |_| None,
    ));
    let server = tokio::spawn(serve(handle, steps));
    let mut policy = mk_policy(30, users_a());
    policy.spec.console = Some(
        serde_json::from_value(
            json!({"enabled": true, "credentialsSecret": {"name": "s3-read-only"}}),
        )
        .unwrap(),
    );
    reconcile(Arc::new(policy), ctx).await.unwrap();
    server.await.unwrap();
}

fn with_prompt(mut p: RecordingPolicy) -> RecordingPolicy {
    p.spec.announcement = serde_json::from_value(json!({
        "mode": "Prompt", "prompt": {"configMap": "prompts", "key": "notice.wav"}, "to": "FarEnd"
    }))
    .unwrap();
    p
}

#[tokio::test]
async fn a_missing_prompt_changes_nothing_and_says_so() {
    let storage = Arc::new(FakeStorage::default());
    let (ctx, handle, _key) = mk_ctx(storage.clone());
    // The ConfigMap exists but holds another key: as good as missing.
    let steps = vec![
        expect("GET", "/api/v1/namespaces/acme/configmaps/prompts", |_| {
            Some(
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "prompts", "namespace": "acme"},
                        "binaryData": {"other.wav": "UklGRg=="}}),
            )
        }),
        event("PromptMissing"),
        expect(
            "PATCH",
            "/apis/earshot.io/v1alpha1/namespaces/acme/recordingpolicies/office/status",
            |b| {
                let rec = condition(&b, "RecorderAvailable");
                assert_eq!(
                    (rec["status"].as_str(), rec["reason"].as_str()),
                    (Some("False"), Some("PromptMissing"))
                );
                assert!(rec["message"].as_str().unwrap().contains(
                    "ConfigMap prompts with key notice.wav named in spec.announcement.prompt does not exist"
                ));
                assert_eq!(condition(&b, "Ready")["status"], "False");
                None
            },
        ),
    ];
    let server = tokio::spawn(serve(handle, steps));
    let policy = Arc::new(with_prompt(mk_policy(30, users_a())));
    let err = reconcile(policy.clone(), ctx.clone()).await.unwrap_err();
    assert!(matches!(err, Error::PromptMissing { .. }));
    assert_eq!(
        error_policy(policy, &err, ctx.clone()),
        Action::requeue(Duration::from_secs(30))
    );
    server.await.unwrap();
    assert!(storage.calls.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_prompt_is_mounted_into_the_recorder() {
    let storage = Arc::new(FakeStorage::default());
    let (ctx, handle, _key) = mk_ctx(storage.clone());
    let mut steps = vec![
        expect("GET", "/api/v1/namespaces/acme/configmaps/prompts", |_| {
            Some(
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "prompts", "namespace": "acme"},
                        "binaryData": {"notice.wav": "UklGRg=="}}),
            )
        }),
        expect("GET", "/api/v1/namespaces/acme/secrets/s3", |_| {
            Some(secret())
        }),
    ];
    let mut workload = workload_steps();
    workload[1] = expect(
        "PATCH",
        "/apis/apps/v1/namespaces/acme/statefulsets/earshot-office",
        |b| {
            let pod = &b["spec"]["template"]["spec"];
            assert_eq!(
                pod["volumes"][1],
                json!({"name": "announcement", "configMap": {"name": "prompts", "items": [{"key": "notice.wav", "path": "notice.wav"}]}})
            );
            assert_eq!(
                pod["containers"][0]["volumeMounts"][2]["mountPath"],
                "/etc/earshot-prompt"
            );
            with_ready_replicas(b)
        },
    );
    workload[0] = expect(
        "PATCH",
        "/api/v1/namespaces/acme/configmaps/earshot-office",
        |b| {
            let cfg = b["data"]["recorder.yaml"].as_str().unwrap();
            assert!(
                cfg.contains("prompt: /etc/earshot-prompt/notice.wav"),
                "{cfg}"
            );
            assert!(cfg.contains("to: FarEnd"), "{cfg}");
            None
        },
    );
    steps.extend(workload);
    steps.push(pods_listed());
    steps.push(expect(
        "PATCH",
        "/apis/earshot.io/v1alpha1/namespaces/acme/recordingpolicies/office/status",
        |b| {
            assert_eq!(condition(&b, "Ready")["status"], "True");
            None
        },
    ));
    let server = tokio::spawn(serve(handle, steps));
    let policy = Arc::new(with_prompt(mk_policy(30, users_a())));
    reconcile(policy, ctx).await.unwrap();
    server.await.unwrap();
}

#[tokio::test]
async fn a_deleted_policy_touches_nothing_and_storage_is_left_alone() {
    let storage = Arc::new(FakeStorage::default());
    let (ctx, handle, _key) = mk_ctx(storage.clone());
    let mut policy = mk_policy(30, users_a());
    policy.metadata.deletion_timestamp = Some(now());
    let server = tokio::spawn(serve(handle, vec![]));
    let action = reconcile(Arc::new(policy), ctx).await.unwrap();
    assert_eq!(action, Action::await_change());
    server.await.unwrap();
    // The Storage trait has no call that deletes; and none was made at all.
    assert!(storage.calls.lock().unwrap().is_empty());
}

#[test]
fn backoff_doubles_and_is_capped() {
    use earshot_operator::reconcile::backoff;
    let b: Vec<u64> = (1..=9)
        .map(|n| backoff(Duration::from_secs(5), n).as_secs())
        .collect();
    assert_eq!(b, [5, 10, 20, 40, 80, 160, 320, 600, 600]);
}

#[tokio::test]
async fn with_no_store_allowed_every_policy_is_refused_and_nothing_is_read() {
    // The defaults: no storageEndpoints, no defaultStorage, no opt-in.
    let storage = Arc::new(FakeStorage::default());
    let (ctx, handle) = mk_ctx_with(storage.clone(), OperatorConfig::default());
    let steps = vec![
        event("NoStorageEndpointsConfigured"),
        expect(
            "PATCH",
            "/apis/earshot.io/v1alpha1/namespaces/acme/recordingpolicies/office/status",
            |b| {
                let ready = condition(&b, "Ready");
                assert_eq!(ready["status"], "False");
                assert_eq!(ready["reason"], "NoStorageEndpointsConfigured");
                let msg = ready["message"].as_str().unwrap();
                assert!(
                    msg.contains("\"http://garage:3900\"")
                        && msg.contains("storageEndpoints")
                        && msg.contains("allowAnyStorageEndpoint: true"),
                    "{msg}"
                );
                None
            },
        ),
    ];
    let server = tokio::spawn(serve(handle, steps));
    let action = reconcile(Arc::new(mk_policy(30, users_a())), ctx.clone())
        .await
        .expect("an invalid spec is not an error to retry");
    assert_eq!(action, Action::await_change());
    server.await.unwrap();
    assert!(storage.calls.lock().unwrap().is_empty());
    // Not an error, but not Ready either: EarshotPolicyNotReady fires.
    let metrics = ctx.metrics.encode();
    assert!(
        metrics.contains("earshot_operator_policy_ready{namespace=\"acme\",policy=\"office\"} 0"),
        "{metrics}"
    );
}

#[tokio::test]
async fn without_the_operator_s_own_key_no_rule_is_set_and_the_tenant_s_key_only_probes() {
    // The store listed without a key, and the single-tenant opt-in with the
    // store not listed: either way the tenant's key is never used for a
    // lifecycle rule, only to prove that the recorders can write.
    let listed = OperatorConfig {
        storage_endpoints: vec![earshot_operator::config::AllowedEndpoint {
            url: "http://garage:3900".into(),
            lifecycle_credentials_dir: None,
        }],
        ..OperatorConfig::default()
    };
    let any = OperatorConfig {
        allow_any_storage_endpoint: true,
        ..OperatorConfig::default()
    };
    for platform in [listed, any] {
        let storage = Arc::new(FakeStorage::default());
        let (ctx, handle) = mk_ctx_with(storage.clone(), platform);
        // The Secret is still checked (the recorders mount it); the
        // recorders run.
        let mut steps = vec![expect("GET", "/api/v1/namespaces/acme/secrets/s3", |_| {
            Some(secret())
        })];
        steps.extend(workload_steps());
        steps.push(pods_listed());
        steps.push(event("NoOperatorKey"));
        steps.push(expect(
            "PATCH",
            "/apis/earshot.io/v1alpha1/namespaces/acme/recordingpolicies/office/status",
            |b| {
                let retention = condition(&b, "RetentionEnforced");
                assert_eq!(
                    (retention["status"].as_str(), retention["reason"].as_str()),
                    (Some("False"), Some("NoOperatorKey")),
                    "{b}"
                );
                let msg = retention["message"].as_str().unwrap();
                assert!(
                    msg.contains("lifecycleCredentialsSecret")
                        && msg.contains("never uses the tenant's")
                        && msg.contains("acme/office/ are not deleted after 30 days"),
                    "{msg}"
                );
                assert_eq!(
                    condition(&b, "StorageReady")["reason"],
                    "RecordersCanWrite",
                    "{b}"
                );
                assert_eq!(condition(&b, "RecorderAvailable")["status"], "True");
                assert_eq!(condition(&b, "Ready")["reason"], "NoOperatorKey");
                assert_eq!(b["status"]["effectiveRetentionDays"], Value::Null);
                assert_eq!(
                    b["status"]["serviceAddress"],
                    "earshot-office.acme.svc:5060"
                );
                None
            },
        ));
        let server = tokio::spawn(serve(handle, steps));
        let action = reconcile(Arc::new(mk_policy(30, users_a())), ctx.clone())
            .await
            .expect("not an error to retry: only new settings can fix it");
        assert_eq!(action, Action::await_change());
        server.await.unwrap();
        assert!(
            ctx.metrics
                .encode()
                .contains("earshot_operator_policy_ready{namespace=\"acme\",policy=\"office\"} 0")
        );
        assert_eq!(
            storage.calls.lock().unwrap().as_slice(),
            ["probe http://garage:3900 recordings acme/office/ as GKABC"],
            "the tenant's key only for the probe under its prefix"
        );
    }
}

#[tokio::test]
async fn a_proxy_without_sources_exposes_no_console() {
    let storage = Arc::new(FakeStorage::default());
    let (mut platform, _key) = listed_with_own_key("http://garage:3900");
    platform.console_proxy = Some(earshot_operator::config::ConsoleProxy {
        identity_header: "X-Forwarded-User".into(),
        sources: vec![],
        ..Default::default()
    });
    let (ctx, handle) = mk_ctx_with(storage, platform);
    let mut steps = vec![
        expect("GET", "/api/v1/namespaces/acme/secrets/s3", |_| {
            Some(secret())
        }),
        expect(
            "GET",
            "/api/v1/namespaces/acme/secrets/s3-read-only",
            |_| {
                Some(
                    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s3-read-only", "namespace": "acme"},
                       "data": {"AWS_ACCESS_KEY_ID": "R0tSTw==", "AWS_SECRET_ACCESS_KEY": "cm8="}}),
                )
            },
        ),
        expect(
            "POST",
            "/apis/events.k8s.io/v1/namespaces/acme/events",
            |body| {
                assert_eq!(body["reason"], "ConsoleExposeRefused");
                assert!(
                    body["note"]
                        .as_str()
                        .unwrap()
                        .contains("console.proxy.sources is empty"),
                    "{body}"
                );
                None
            },
        ),
    ];
    // The console runs on loopback; no Service, no NetworkPolicy (a
    // NetworkPolicy rule without peers would admit everyone).
    let mut workload = workload_steps();
    workload[5] = expect(
        "PATCH",
        "/apis/apps/v1/namespaces/acme/deployments/earshot-office-console",
        |b| {
            let env = &b["spec"]["template"]["spec"]["containers"][0]["env"];
            assert!(
                env.as_array().unwrap().iter().any(
                    |e| e["name"] == "EARSHOT_CONSOLE_LISTEN" && e["value"] == "127.0.0.1:8080"
                ),
                "{env}"
            );
            assert!(!env.to_string().contains("TRUSTED_PROXIES"), "{env}");
            None
        },
    );
    steps.extend(workload);
    steps.push(pods_listed());
    steps.push(expect(
        "PATCH",
        "/apis/earshot.io/v1alpha1/namespaces/acme/recordingpolicies/office/status",
        |_| None,
    ));
    let server = tokio::spawn(serve(handle, steps));
    let mut policy = mk_policy(30, users_a());
    policy.spec.console = Some(
        serde_json::from_value(
            json!({"enabled": true, "expose": true, "credentialsSecret": {"name": "s3-read-only"}}),
        )
        .unwrap(),
    );
    reconcile(Arc::new(policy), ctx).await.unwrap();
    server.await.unwrap();
}

#[tokio::test]
async fn a_recorders_key_that_cannot_write_is_storage_not_ready() {
    // The key reads the bucket but may not write: the recorders would
    // lose every recording; status says so before the first call does.
    let storage = Arc::new(FakeStorage {
        read_only: true,
        ..Default::default()
    });
    let (ctx, handle, _key) = mk_ctx(storage.clone());
    let mut steps = vec![expect("GET", "/api/v1/namespaces/acme/secrets/s3", |_| {
        Some(secret())
    })];
    steps.extend(workload_steps());
    steps.push(pods_listed());
    steps.push(event("AccessDenied"));
    steps.push(expect(
        "PATCH",
        "/apis/earshot.io/v1alpha1/namespaces/acme/recordingpolicies/office/status",
        |b| {
            let storage = condition(&b, "StorageReady");
            assert_eq!(
                (storage["status"].as_str(), storage["reason"].as_str()),
                (Some("False"), Some("AccessDenied")),
                "{b}"
            );
            assert!(
                storage["message"]
                    .as_str()
                    .unwrap()
                    .contains("acme/office/"),
                "{b}"
            );
            assert_eq!(condition(&b, "Ready")["status"], "False");
            None
        },
    ));
    let server = tokio::spawn(serve(handle, steps));
    let err = reconcile(Arc::new(mk_policy(30, users_a())), ctx)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Storage(_)), "{err}");
    server.await.unwrap();
    assert_eq!(
        storage.calls.lock().unwrap().as_slice(),
        ["probe http://garage:3900 recordings acme/office/ as GKABC"],
        "no lifecycle rule before the recorders can write"
    );
}

#[tokio::test]
async fn a_missing_tls_secret_changes_nothing_and_says_so() {
    // SIP over TLS whose Secret lacks its key: no recorder could start, so
    // nothing is applied and the condition names what is missing.
    let storage = Arc::new(FakeStorage::default());
    let (ctx, handle, _key) = mk_ctx(storage.clone());
    let mut p = mk_policy(30, users_a());
    p.spec.recorder.sip.transports =
        vec![earshot_crds::Transport::Udp, earshot_crds::Transport::Tls];
    p.spec.recorder.sip.tls =
        serde_json::from_value(json!({"secretName": "sip-tls", "port": 5061})).unwrap();
    let steps = vec![
        expect("GET", "/api/v1/namespaces/acme/secrets/sip-tls", |_| {
            Some(
                json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "sip-tls", "namespace": "acme"},
                        "type": "kubernetes.io/tls", "data": {"tls.crt": "Q0VSVA=="}}),
            )
        }),
        event("TlsSecretMissing"),
        expect(
            "PATCH",
            "/apis/earshot.io/v1alpha1/namespaces/acme/recordingpolicies/office/status",
            |b| {
                let rec = condition(&b, "RecorderAvailable");
                assert_eq!(
                    (rec["status"].as_str(), rec["reason"].as_str()),
                    (Some("False"), Some("TlsSecretMissing"))
                );
                assert!(
                    rec["message"]
                        .as_str()
                        .unwrap()
                        .contains("Secret sip-tls has no key tls.key"),
                    "{b}"
                );
                None
            },
        ),
    ];
    let server = tokio::spawn(serve(handle, steps));
    let policy = Arc::new(p);
    let err = reconcile(policy.clone(), ctx.clone()).await.unwrap_err();
    assert!(matches!(err, Error::TlsMissing(_)), "{err}");
    assert_eq!(
        error_policy(policy, &err, ctx.clone()),
        Action::requeue(Duration::from_secs(30))
    );
    server.await.unwrap();
    assert!(storage.calls.lock().unwrap().is_empty());
}
