//! The objects each sample policy produces: complete golden files (reviewed
//! by a person; `UPDATE_GOLDEN=1` rewrites them), a recorder config the
//! recorder itself accepts, documents that round-trip through k8s-openapi,
//! and the refusals a platform engineer sees.

use std::path::{Path, PathBuf};

use earshot_operator::build::{
    CONFIG_FILE, build_configmap, build_console_networkpolicy, build_pdb, build_statefulset,
};
use earshot_operator::config::OperatorConfig;
use earshot_operator::reconcile::validate::{Invalid, validate};
use earshot_operator::render::{RenderError, render};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn samples() -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = std::fs::read_dir(repo().join("config/samples"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .map(|p| {
            (
                p.file_stem().unwrap().to_string_lossy().into_owned(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

/// A shared platform: the samples' stores listed, a console proxy.
fn mk_operator() -> OperatorConfig {
    let store = |url: &str| earshot_operator::config::AllowedEndpoint {
        url: url.into(),
        lifecycle_credentials_dir: None,
    };
    OperatorConfig {
        recorder_image: "registry.example/earshot-recorder:test".into(),
        console_proxy: Some(proxy()),
        storage_endpoints: vec![
            store("http://garage.storage.svc.cluster.local:3900"),
            store("http://rgw.ceph.svc:7480"),
            store("https://s3.eu-west-1.amazonaws.com"),
        ],
        ..OperatorConfig::default()
    }
}

fn proxy() -> earshot_operator::config::ConsoleProxy {
    earshot_operator::config::ConsoleProxy {
        identity_header: "X-Forwarded-User".into(),
        sources: vec!["10.42.7.0/24".into()],
        namespace_selector: [("kubernetes.io/metadata.name".into(), "auth".into())].into(),
        pod_selector: [("app.kubernetes.io/name".into(), "oauth2-proxy".into())].into(),
        hosts: vec!["recordings.example.com".into()],
        allow_loopback: false,
    }
}

fn mk_validated(text: &str) -> earshot_operator::build::Validated {
    let policy = earshot_crds::validate::PolicyValidator::new()
        .parse(text)
        .unwrap();
    validate(&policy, &mk_operator()).unwrap()
}

#[test]
fn render_matches_the_golden_file_of_every_sample() {
    for (name, text) in samples() {
        let yaml = render(&text, &mk_operator()).unwrap();
        let golden = repo().join(format!("operator/tests/golden/{name}.yaml"));
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(&golden, &yaml).unwrap();
        }
        let expected = std::fs::read_to_string(&golden).unwrap_or_else(|_| {
            panic!(
                "{} missing: run with UPDATE_GOLDEN=1 and review it",
                golden.display()
            )
        });
        pretty_assertions::assert_eq!(yaml, expected, "{name}");
    }
}

#[test]
fn the_rendered_recorder_config_is_accepted_by_the_recorder() {
    for (name, text) in samples() {
        let v = mk_validated(&text);
        let cm = build_configmap(&v);
        let file = &cm.data.as_ref().unwrap()[CONFIG_FILE];
        let config = earshot_recorder::config::Config::parse_with_env(
            Path::new(&name),
            file,
            Some("10.1.2.3"),
        )
        .unwrap_or_else(|e| panic!("{name}: the recorder refuses the rendered config: {e}"));
        assert_eq!(config.users.len(), v.policy.spec.users.len(), "{name}");
        for u in &v.policy.spec.users {
            let rendered = &config.users[&u.extension];
            let mode = format!("{:?}", v.policy.spec.effective_mode(u));
            assert_eq!(rendered.mode.as_str(), mode, "{name} {}", u.extension);
            let code = v
                .policy
                .spec
                .effective_shortcode(u)
                .map(|c| c.as_bytes()[1] - b'0');
            assert_eq!(rendered.shortcode, code, "{name} {}", u.extension);
        }
        assert_eq!(
            config.advertised.to_string(),
            "10.1.2.3",
            "pods advertise the address the operator passes in"
        );
    }
}

#[test]
fn every_rendered_document_parses_back_into_its_kubernetes_type() {
    for (name, text) in samples() {
        let yaml = render(&text, &mk_operator()).unwrap();
        let mut kinds = Vec::new();
        for doc in yaml.split("---\n").filter(|d| !d.trim().is_empty()) {
            let value: serde_json::Value = serde_yaml::from_str(doc).unwrap();
            let kind = value["kind"].as_str().unwrap().to_owned();
            // Round trip: nothing in the document is unknown to the typed API.
            let back = match kind.as_str() {
                "ConfigMap" => serde_json::to_value(
                    serde_json::from_value::<ConfigMap>(value.clone()).unwrap(),
                ),
                "Deployment" => serde_json::to_value(
                    serde_json::from_value::<Deployment>(value.clone()).unwrap(),
                ),
                "StatefulSet" => serde_json::to_value(
                    serde_json::from_value::<StatefulSet>(value.clone()).unwrap(),
                ),
                "Service" => {
                    serde_json::to_value(serde_json::from_value::<Service>(value.clone()).unwrap())
                }
                "PodDisruptionBudget" => serde_json::to_value(
                    serde_json::from_value::<PodDisruptionBudget>(value.clone()).unwrap(),
                ),
                "NetworkPolicy" => serde_json::to_value(
                    serde_json::from_value::<k8s_openapi::api::networking::v1::NetworkPolicy>(
                        value.clone(),
                    )
                    .unwrap(),
                ),
                other => panic!("{name}: unexpected kind {other}"),
            }
            .unwrap();
            assert_eq!(back, value, "{name} {kind} round-trips");
            kinds.push(kind);
        }
        // A PDB exactly when replicas > 1; the console's Deployment when it
        // is enabled, its Service and NetworkPolicy when it is exposed.
        let expected: &[&str] = match name.as_str() {
            "call-centre" => &[
                "ConfigMap",
                "StatefulSet",
                "Service",
                "PodDisruptionBudget",
                "Deployment",
                "Service",
                "NetworkPolicy",
            ],
            "small-office" => &[
                "ConfigMap",
                "StatefulSet",
                "Service",
                "PodDisruptionBudget",
                "Deployment",
            ],
            _ => &["ConfigMap", "StatefulSet", "Service"],
        };
        assert_eq!(kinds, expected, "{name}");
    }
}

#[test]
fn the_workload_keeps_calls_alive_and_runs_hardened() {
    let v = mk_validated(
        &std::fs::read_to_string(repo().join("config/samples/call-centre.yaml")).unwrap(),
    );
    let d = serde_json::to_value(build_statefulset(&v)).unwrap();
    // Each pod's spool on a volume of its own, kept when the pod, the
    // policy or a replica goes.
    assert_eq!(
        d["spec"]["volumeClaimTemplates"][0]["spec"],
        serde_json::json!({"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "10Gi"}}})
    );
    assert_eq!(
        d["spec"]["persistentVolumeClaimRetentionPolicy"],
        serde_json::json!({"whenDeleted": "Retain", "whenScaled": "Retain"})
    );
    assert_eq!(d["spec"]["serviceName"], "earshot-agents");
    assert_eq!(d["spec"]["podManagementPolicy"], "Parallel");
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(pod["terminationGracePeriodSeconds"], 14400);
    assert_eq!(
        pod["hostNetwork"], true,
        "call-centre sample runs on the host network"
    );
    let c = &pod["containers"][0];
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["capabilities"]["drop"][0], "ALL");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert_eq!(
        c["env"][0]["valueFrom"]["fieldRef"]["fieldPath"],
        "status.hostIP"
    );
    assert_eq!(
        c["env"][1]["valueFrom"]["fieldRef"]["fieldPath"], "spec.nodeName",
        "host network: the recorder picks its node's addresses"
    );
    assert_eq!(
        c["env"][2]["valueFrom"]["secretKeyRef"]["name"],
        "rgw-credentials"
    );
    // The pod template does not depend on the recorder config, so a change of
    // users or modes never rolls the pods.
    let template = serde_json::to_string(pod).unwrap();
    assert!(
        !template.contains("2000"),
        "no user data in the pod template"
    );
    assert!(build_pdb(&v).is_some());
}

/// What the recorder cannot reload (its RTP range here) changes the pod
/// template's restart annotation, so the pods roll; what it reloads (users,
/// modes) leaves the template alone (`a_users_change_touches_only_the_configmap`).
#[test]
fn a_change_the_recorder_cannot_reload_rolls_the_pods() {
    let text = std::fs::read_to_string(repo().join("config/samples/small-office.yaml")).unwrap();
    let annotation = |text: &str| {
        let sts = build_statefulset(&mk_validated(text));
        sts.spec
            .unwrap()
            .template
            .metadata
            .unwrap()
            .annotations
            .unwrap()[earshot_operator::build::RESTART_ANNOTATION]
            .clone()
    };
    let before = annotation(&text);
    let ports = text.replace(
        "  recorder:\n",
        "  recorder:\n    rtpPorts: { min: 22000, max: 22999 }\n",
    );
    assert_ne!(ports, text, "the sample has a recorder section");
    assert_ne!(annotation(&ports), before, "a new RTP range rolls the pods");
    let users = text.replace("mode: Never", "mode: Always");
    assert_eq!(annotation(&users), before, "users reload without a roll");
    // Requiring client certificates is a listener setting: it rolls too.
    let tls = std::fs::read_to_string(repo().join("config/samples/secure-trunk.yaml")).unwrap();
    let strict = tls.replace(
        "clientCertificate: true",
        "clientCertificate: true
        requireClientCertificate: true",
    );
    assert_ne!(strict, tls);
    assert_ne!(
        annotation(&strict),
        annotation(&tls),
        "a TLS change rolls the pods"
    );
}

#[test]
fn a_users_change_touches_only_the_configmap() {
    let text = std::fs::read_to_string(repo().join("config/samples/small-office.yaml")).unwrap();
    let before = mk_validated(&text);
    let after = mk_validated(
        &text
            .replace("mode: Never", "mode: Always")
            .replace("retentionDays: 30", "retentionDays: 90"),
    );
    assert_ne!(build_configmap(&before), build_configmap(&after));
    assert_eq!(build_statefulset(&before), build_statefulset(&after));
}

#[test]
fn the_spool_limit_leaves_room_on_the_volume_and_a_tiny_spool_is_refused() {
    let text = std::fs::read_to_string(repo().join("config/samples/small-office.yaml")).unwrap();
    let with_spool = |size: &str, class: &str| {
        text.replace(
            "  recorder:\n",
            &format!("  recorder:\n    spool: {{ size: {size}{class} }}\n"),
        )
    };
    let limit = |text: &str| {
        let v = mk_validated(text);
        let cm = build_configmap(&v);
        let file = &cm.data.as_ref().unwrap()[CONFIG_FILE];
        let cfg = earshot_contracts::config::RecorderConfig::from_yaml(file).unwrap();
        (
            cfg.spool.max_bytes,
            serde_json::to_value(build_statefulset(&v)).unwrap(),
        )
    };
    let (max, d) = limit(&with_spool("20Gi", ", storageClassName: fast-local"));
    assert_eq!(max, 18 << 30, "20Gi less 10%");
    assert_eq!(
        d["spec"]["volumeClaimTemplates"][0]["spec"]["storageClassName"],
        "fast-local"
    );
    assert_eq!(
        d["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"],
        "20Gi"
    );
    let (max, _) = limit(&with_spool("1Gi", ""));
    assert_eq!(max, (1 << 30) - (256 << 20), "at least 256Mi kept free");
    let (max, _) = limit(&text);
    assert_eq!(max, 9 << 30, "10Gi by default");
    let err = render(&with_spool("512Mi", ""), &mk_operator()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "spec.recorder.spool.size \"512Mi\" is too small or not a size; give at least 1Gi (e.g. 10Gi)"
    );
}

#[test]
fn refusals_say_what_to_do() {
    let text = std::fs::read_to_string(repo().join("config/samples/call-centre.yaml")).unwrap();
    let strict = OperatorConfig {
        max_retention_days: 30,
        ..mk_operator()
    };
    let err = render(&text, &strict).unwrap_err();
    assert!(matches!(
        err,
        RenderError::Invalid(Invalid::RetentionAboveMaximum {
            requested: 90,
            maximum: 30
        })
    ));
    assert_eq!(
        err.to_string(),
        "spec.retentionDays is 90 but this platform keeps recordings at most 30 days; lower it to 30 or less"
    );
    let no_storage = text.split("  storage:").next().unwrap().to_owned();
    let err = render(&no_storage, &mk_operator()).unwrap_err();
    assert!(
        err.to_string().starts_with("spec.storage is not set"),
        "{err}"
    );
    let invalid =
        std::fs::read_to_string(repo().join("config/samples/invalid/shortcode-pattern.yaml"))
            .unwrap();
    let err = render(&invalid, &mk_operator()).unwrap_err();
    assert!(err.to_string().contains("spec.users[0].shortcode"), "{err}");
}

#[test]
fn the_servicemonitor_scrapes_the_recorders_metrics_port() {
    let v = mk_validated(
        &std::fs::read_to_string(repo().join("config/samples/small-office.yaml")).unwrap(),
    );
    let sm = serde_json::to_value(earshot_operator::build::build_servicemonitor(&v)).unwrap();
    pretty_assertions::assert_eq!(
        sm,
        serde_json::json!({
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "ServiceMonitor",
            "metadata": {
                "name": "earshot-office",
                "namespace": "acme",
                "labels": earshot_operator::build::labels("office"),
                "ownerReferences": [{"apiVersion": "earshot.io/v1alpha1", "kind": "RecordingPolicy", "name": "office", "uid": "", "controller": true, "blockOwnerDeletion": true}],
            },
            "spec": {
                "selector": {"matchLabels": earshot_operator::build::labels("office")},
                "endpoints": [{"port": "metrics", "path": "/metrics", "interval": "30s"}],
            },
        })
    );
}

#[test]
fn the_console_reads_only_its_prefix_with_the_read_only_key_and_listens_on_loopback() {
    use earshot_operator::build::{build_console_deployment, build_console_service};
    let v = mk_validated(
        &std::fs::read_to_string(repo().join("config/samples/small-office.yaml")).unwrap(),
    );
    let d = serde_json::to_value(build_console_deployment(&v).unwrap()).unwrap();
    assert_eq!(d["metadata"]["name"], "earshot-office-console");
    let pod = &d["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    let env: std::collections::BTreeMap<&str, &serde_json::Value> = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap(), e))
        .collect();
    assert_eq!(env["EARSHOT_CONSOLE_PREFIX"]["value"], "acme/office/");
    assert_eq!(env["EARSHOT_CONSOLE_LISTEN"]["value"], "127.0.0.1:8080");
    assert_eq!(
        env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"]["name"],
        "acme-recordings-read-only"
    );
    assert_eq!(c["command"][0], "/usr/local/bin/earshot-console");
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(pod["automountServiceAccountToken"], false);
    // Not selected by the recorder's Service or PDB.
    assert_eq!(
        d["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"],
        "earshot-console"
    );
    assert!(
        build_console_service(&v).is_none(),
        "not exposed by default"
    );

    // Exposed, behind the platform's proxy: on the pod network, trusting
    // only that proxy's header, answering only its names, and a
    // NetworkPolicy that lets only the proxy reach the page.
    let text = std::fs::read_to_string(repo().join("config/samples/call-centre.yaml")).unwrap();
    let v = mk_validated(&text);
    let d = serde_json::to_value(build_console_deployment(&v).unwrap()).unwrap();
    let env: std::collections::BTreeMap<String, String> =
        d["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| {
                Some((
                    e["name"].as_str()?.to_owned(),
                    e["value"].as_str()?.to_owned(),
                ))
            })
            .collect();
    assert_eq!(env["EARSHOT_CONSOLE_LISTEN"], "0.0.0.0:8080");
    assert_eq!(env["EARSHOT_CONSOLE_IDENTITY_HEADER"], "X-Forwarded-User");
    assert_eq!(env["EARSHOT_CONSOLE_TRUSTED_PROXIES"], "10.42.7.0/24");
    assert!(
        !env.contains_key("EARSHOT_CONSOLE_ALLOW_LOOPBACK"),
        "loopback (port-forward, a sidecar) refused unless the platform says so"
    );
    let hosts: Vec<&str> = env["EARSHOT_CONSOLE_ALLOWED_HOSTS"].split(',').collect();
    assert!(hosts.contains(&"recordings.example.com"), "{hosts:?}");
    assert!(hosts.iter().any(|h| h.ends_with(".svc")), "{hosts:?}");
    let s = serde_json::to_value(build_console_service(&v).unwrap()).unwrap();
    assert_eq!(s["spec"]["ports"][0]["targetPort"], "http");
    let np = serde_json::to_value(build_console_networkpolicy(&v).unwrap()).unwrap();
    assert_eq!(np["spec"]["policyTypes"], serde_json::json!(["Ingress"]));
    assert_eq!(
        np["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/name"],
        "earshot-console"
    );
    let page = &np["spec"]["ingress"][0];
    assert_eq!(page["ports"][0]["port"], "http");
    assert_eq!(
        page["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        "auth"
    );
    assert_eq!(
        page["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/name"],
        "oauth2-proxy"
    );
    assert_eq!(np["spec"]["ingress"][1]["ports"][0]["port"], "health");
    assert_eq!(np["spec"]["ingress"][1]["from"], serde_json::Value::Null);

    // The same policy on a platform without a proxy: expose is refused,
    // the console stays on loopback, nothing listens on the pod network.
    let policy = earshot_crds::validate::PolicyValidator::new()
        .parse(&text)
        .unwrap();
    let bare = OperatorConfig {
        console_proxy: None,
        ..mk_operator()
    };
    let v = validate(&policy, &bare).unwrap();
    let d = serde_json::to_value(build_console_deployment(&v).unwrap()).unwrap();
    let c = &d["spec"]["template"]["spec"]["containers"][0];
    assert!(
        c["env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "EARSHOT_CONSOLE_LISTEN" && e["value"] == "127.0.0.1:8080")
    );
    assert!(!c["env"].to_string().contains("IDENTITY_HEADER"));
    assert!(build_console_service(&v).is_none());
    assert!(build_console_networkpolicy(&v).is_none());
}

#[test]
fn a_proxy_without_sources_exposes_nothing_and_every_page_rule_names_its_peers() {
    let text = std::fs::read_to_string(repo().join("config/samples/call-centre.yaml")).unwrap();
    assert!(
        text.contains("expose: true"),
        "the sample exposes its console"
    );
    let with = |proxy: Option<earshot_operator::config::ConsoleProxy>| OperatorConfig {
        console_proxy: proxy,
        ..mk_operator()
    };
    // The golden render: the page's rule names the proxy; only health is open.
    let docs = |yaml: &str| -> Vec<serde_json::Value> {
        yaml.split("---\n")
            .filter(|d| !d.trim().is_empty())
            .map(|d| serde_yaml::from_str(d).unwrap())
            .collect()
    };
    let exposed = render(&text, &mk_operator()).unwrap();
    let np: Vec<serde_json::Value> = docs(&exposed)
        .into_iter()
        .filter(|d| d["kind"] == "NetworkPolicy")
        .collect();
    assert_eq!(np.len(), 1);
    for rule in np[0]["spec"]["ingress"].as_array().unwrap() {
        let page = rule["ports"][0]["port"] == "http";
        let peers = rule["from"].as_array().map_or(0, Vec::len);
        assert_eq!(page, peers > 0, "only the page's rule names peers: {rule}");
    }

    // A proxy without sources (Kubernetes reads a rule without peers as
    // "everyone", and the console would have no proxy to believe): the
    // console is not exposed, exactly as without a proxy.
    let unexposed = render(&text, &with(None)).unwrap();
    assert!(!unexposed.contains("kind: NetworkPolicy") && !unexposed.contains("0.0.0.0:8080"));
    for sources in [vec![], vec![" ".to_owned()]] {
        for selectors in [true, false] {
            let mut p = proxy();
            p.sources = sources.clone();
            if !selectors {
                p.namespace_selector.clear();
                p.pod_selector.clear();
            }
            pretty_assertions::assert_eq!(
                render(&text, &with(Some(p))).unwrap(),
                unexposed,
                "sources {sources:?}, selectors {selectors}"
            );
        }
    }

    // Loopback admitted only when the platform says so.
    let mut p = proxy();
    p.allow_loopback = true;
    let console = docs(&render(&text, &with(Some(p))).unwrap())
        .into_iter()
        .find(|d| d["kind"] == "Deployment")
        .unwrap();
    let env = &console["spec"]["template"]["spec"]["containers"][0]["env"];
    assert!(
        env.as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "EARSHOT_CONSOLE_ALLOW_LOOPBACK" && e["value"] == "true"),
        "{env}"
    );
}
