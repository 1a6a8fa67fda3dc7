//! The Helm chart and the monitoring, with the real tools: `helm lint` and
//! `helm template` (default and every option on, each document round-tripped
//! through its k8s-openapi type), the values schema refusing a typo, RBAC
//! equal to the calls the operator makes, `promtool` on the rules, every
//! metric the rules and dashboard use exported by the binaries, and a real
//! Prometheus scraping a recorder that records a call.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use earshot_tests::pcap::RtpStream;
use earshot_tests::{
    RecorderProcess, Sipp, TempDir, TestUser, free_ports, http_get, repo, require,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::Value;

fn chart() -> PathBuf {
    repo().join("charts/earshot")
}

const ALL_ON: &str = r#"
operator:
  replicas: 3
  logLevel: debug
  nodeSelector: {kubernetes.io/os: linux}
  tolerations: [{key: dedicated, operator: Equal, value: telephony, effect: NoSchedule}]
  affinity: {podAntiAffinity: {preferredDuringSchedulingIgnoredDuringExecution: [{weight: 100, podAffinityTerm: {topologyKey: kubernetes.io/hostname, labelSelector: {matchLabels: {app.kubernetes.io/name: earshot-operator}}}}]}}
recorder: {image: {repository: registry.example/earshot-recorder, tag: "1.2.3"}}
maxRetentionDays: 180
defaultStorage: {endpoint: "http://garage.storage:3900", bucket: recordings, region: garage, pathStyle: true, credentialsSecret: {name: earshot-s3}}
serviceMonitor: {enabled: true, interval: 15s}
prometheusRule: {enabled: true}
grafanaDashboard: {enabled: true}
"#;

fn helm(args: &[&str]) -> std::process::Output {
    require("helm");
    Command::new("helm").args(args).output().expect("run helm")
}

fn values_file(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

fn render(values: Option<&str>) -> Vec<Value> {
    let c = chart().display().to_string();
    let mut args = vec![
        "template",
        "earshot",
        &c,
        "--namespace",
        "earshot-system",
        "--include-crds",
    ];
    let dir = TempDir::new("helm");
    let file;
    if let Some(v) = values {
        file = values_file(dir.path(), "values.yaml", v);
        args.extend(["-f", &file]);
    }
    let out = helm(&args);
    assert!(
        out.status.success(),
        "helm template: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .split("\n---")
        .filter_map(|d| serde_yaml::from_str::<Value>(d).ok())
        .filter(|v| v.is_object())
        .collect()
}

/// Deserialises into the typed API and back; anything the type does not know
/// would be lost, so equality means no unknown field.
fn round_trip<T: serde::de::DeserializeOwned + serde::Serialize>(doc: &Value) {
    let typed: T =
        serde_json::from_value(doc.clone()).unwrap_or_else(|e| panic!("{}: {e}", doc["kind"]));
    assert_eq!(
        &serde_json::to_value(typed).unwrap(),
        doc,
        "{} has fields its type does not know",
        doc["kind"]
    );
}

#[test]
fn helm_lint_is_clean_with_defaults_and_with_everything_on() {
    let dir = TempDir::new("lint");
    let c = chart().display().to_string();
    for values in [None, Some(ALL_ON)] {
        let mut args = vec!["lint", "--strict", &c];
        let file;
        if let Some(v) = values {
            file = values_file(dir.path(), "v.yaml", v);
            args.extend(["-f", &file]);
        }
        let out = helm(&args);
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn every_rendered_document_is_a_valid_kubernetes_object() {
    for (values, expected) in [
        (
            None,
            vec![
                "ClusterRole",
                "ClusterRoleBinding",
                "CustomResourceDefinition",
                "Deployment",
                "Role",
                "RoleBinding",
                "Service",
                "ServiceAccount",
            ],
        ),
        (
            Some(ALL_ON),
            vec![
                "ClusterRole",
                "ClusterRoleBinding",
                "ConfigMap",
                "CustomResourceDefinition",
                "Deployment",
                "PrometheusRule",
                "Role",
                "RoleBinding",
                "Service",
                "ServiceAccount",
                "ServiceMonitor",
            ],
        ),
    ] {
        let docs = render(values);
        let mut kinds: Vec<String> = docs
            .iter()
            .map(|d| d["kind"].as_str().unwrap().to_owned())
            .collect();
        kinds.sort();
        assert_eq!(kinds, expected);
        for d in &docs {
            match d["kind"].as_str().unwrap() {
                "ClusterRole" => round_trip::<ClusterRole>(d),
                "ClusterRoleBinding" => round_trip::<ClusterRoleBinding>(d),
                "Role" => round_trip::<Role>(d),
                "RoleBinding" => round_trip::<RoleBinding>(d),
                "ServiceAccount" => round_trip::<ServiceAccount>(d),
                "Service" => round_trip::<Service>(d),
                "ConfigMap" => round_trip::<ConfigMap>(d),
                "Deployment" => round_trip::<Deployment>(d),
                "CustomResourceDefinition" => round_trip::<CustomResourceDefinition>(d),
                "ServiceMonitor" => {
                    assert_eq!(d["apiVersion"], "monitoring.coreos.com/v1");
                    assert_eq!(d["spec"]["endpoints"][0]["port"], "metrics");
                }
                "PrometheusRule" => {
                    let rules = std::fs::read_to_string(
                        repo().join("config/prometheus/earshot-rules.yaml"),
                    )
                    .unwrap();
                    let file: Value = serde_yaml::from_str(&rules).unwrap();
                    assert_eq!(
                        d["spec"]["groups"], file["groups"],
                        "the chart ships config/prometheus/earshot-rules.yaml"
                    );
                }
                other => panic!("unexpected kind {other}"),
            }
        }
        let deployment = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
        let pod = &deployment["spec"]["template"]["spec"];
        let c = &pod["containers"][0];
        assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
        assert_eq!(c["securityContext"]["capabilities"]["drop"][0], "ALL");
        assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"],
            "RuntimeDefault"
        );
        if values.is_some() {
            assert_eq!(deployment["spec"]["replicas"], 3);
            let env: Vec<(String, String)> = c["env"]
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
            assert!(env.contains(&(
                "EARSHOT_RECORDER_IMAGE".into(),
                "registry.example/earshot-recorder:1.2.3".into()
            )));
            assert!(env.contains(&("EARSHOT_MAX_RETENTION_DAYS".into(), "180".into())));
            let storage = &env
                .iter()
                .find(|(k, _)| k == "EARSHOT_DEFAULT_STORAGE")
                .unwrap()
                .1;
            let storage: earshot_crds::StorageSpec =
                serde_json::from_str(storage).expect("the operator can read the default storage");
            assert_eq!(storage.bucket, "recordings");
            let dashboard = docs.iter().find(|d| d["kind"] == "ConfigMap").unwrap();
            assert_eq!(dashboard["metadata"]["labels"]["grafana_dashboard"], "1");
            let json: Value =
                serde_json::from_str(dashboard["data"]["earshot.json"].as_str().unwrap()).unwrap();
            assert_eq!(json["uid"], "earshot");
        } else {
            assert_eq!(
                deployment["spec"]["replicas"], 2,
                "two replicas with leader election by default"
            );
        }
    }
}

#[test]
fn a_typo_in_values_is_refused_by_the_schema() {
    let dir = TempDir::new("badvalues");
    let c = chart().display().to_string();
    for (bad, words) in [
        (
            "operator: {replica: 3}\n",
            "additional properties 'replica' not allowed",
        ),
        ("maxRetentionDays: 3\n", "maxRetentionDays"),
        ("serviceMonitor: {enabled: yes-please}\n", "serviceMonitor"),
    ] {
        let f = values_file(dir.path(), "bad.yaml", bad);
        let out = helm(&["template", "earshot", &c, "-f", &f]);
        assert!(!out.status.success(), "{bad} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(words), "{bad}: {err}");
    }
}

#[test]
fn rbac_grants_exactly_the_calls_the_operator_makes() {
    let docs = render(None);
    let expand = |kind: &str| -> BTreeSet<(String, String, String)> {
        let role = docs.iter().find(|d| d["kind"] == kind).unwrap();
        let mut out = BTreeSet::new();
        for rule in role["rules"].as_array().unwrap() {
            for g in rule["apiGroups"].as_array().unwrap() {
                for r in rule["resources"].as_array().unwrap() {
                    for v in rule["verbs"].as_array().unwrap() {
                        let (g, r, v) = (
                            g.as_str().unwrap(),
                            r.as_str().unwrap(),
                            v.as_str().unwrap(),
                        );
                        assert!(g != "*" && r != "*" && v != "*", "no wildcards in {kind}");
                        out.insert((v.to_owned(), g.to_owned(), r.to_owned()));
                    }
                }
            }
        }
        out
    };
    let from_code = |calls: &[(&str, &str, &str)]| -> BTreeSet<(String, String, String)> {
        calls
            .iter()
            .map(|(v, g, r)| (v.to_string(), g.to_string(), r.to_string()))
            .collect()
    };
    assert_eq!(
        expand("ClusterRole"),
        from_code(earshot_operator::rbac::CLUSTER)
    );
    assert_eq!(
        expand("Role"),
        from_code(earshot_operator::rbac::OWN_NAMESPACE)
    );
}

#[test]
fn promtool_checks_and_unit_tests_the_rules_and_the_chart_ships_the_same_files() {
    require("promtool");
    let dir = repo().join("config/prometheus");
    let check = Command::new("promtool")
        .current_dir(&dir)
        .args(["check", "rules", "earshot-rules.yaml"])
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    let test = Command::new("promtool")
        .current_dir(&dir)
        .args(["test", "rules", "earshot-rules.test.yaml"])
        .output()
        .unwrap();
    assert!(
        test.status.success(),
        "{}{}",
        String::from_utf8_lossy(&test.stdout),
        String::from_utf8_lossy(&test.stderr)
    );
    for (config, chart_copy) in [
        (
            "config/prometheus/earshot-rules.yaml",
            "charts/earshot/files/earshot-rules.yaml",
        ),
        (
            "config/grafana/earshot.json",
            "charts/earshot/files/earshot-dashboard.json",
        ),
    ] {
        assert_eq!(
            std::fs::read_to_string(repo().join(config)).unwrap(),
            std::fs::read_to_string(repo().join(chart_copy)).unwrap(),
            "{chart_copy} is stale: run `make generate`"
        );
    }
    // Every alert has a runbook section.
    let runbook = std::fs::read_to_string(repo().join("docs/runbook.md")).unwrap();
    let rules: Value =
        serde_yaml::from_str(&std::fs::read_to_string(dir.join("earshot-rules.yaml")).unwrap())
            .unwrap();
    for group in rules["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            let name = rule["alert"].as_str().unwrap();
            assert!(
                runbook.contains(&format!("## {name}\n")),
                "{name} has no runbook section"
            );
            assert!(
                rule["annotations"]["runbook_url"]
                    .as_str()
                    .unwrap()
                    .ends_with(&format!("#{}", name.to_lowercase()))
            );
            assert!(
                rule["annotations"]["description"]
                    .as_str()
                    .unwrap()
                    .contains("{{ $labels.namespace }}")
            );
        }
    }
}

/// The recorder binary built by the same `cargo nextest run --workspace`.
fn recorder_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap();
    let bin = dir.join("earshot-recorder");
    assert!(
        bin.exists(),
        "{} not built: run the workspace tests (make test)",
        bin.display()
    );
    bin
}

/// Metric names (without `_total`/`_bucket`/... suffixes) used by PromQL text.
fn names_in(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(pos) = text[i..].find("earshot_") {
        let start = i + pos;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        out.insert(text[start..end].to_owned());
        i = end;
    }
    out
}

#[test]
fn every_metric_the_rules_and_dashboard_use_is_exported() {
    let dir = TempDir::new("names");
    let rec = RecorderProcess::start(
        &recorder_binary(),
        dir.path(),
        SocketAddr::from(([127, 0, 0, 1], 9)),
        &[],
    );
    let mut exported = BTreeSet::new();
    // The operator's per-policy gauge exists once a policy has been reconciled.
    let operator = earshot_operator::metrics::OperatorMetrics::new();
    let policy: earshot_crds::RecordingPolicy = serde_yaml::from_str(
        &std::fs::read_to_string(repo().join("config/samples/small-office.yaml")).unwrap(),
    )
    .unwrap();
    operator.observe(
        &policy,
        &Ok(kube::runtime::controller::Action::await_change()),
        Duration::from_millis(1),
    );
    // Per-tenant error series appear with a tenant's first failed reconcile.
    operator.observe(
        &policy,
        &Err(earshot_operator::reconcile::Error::SecretMissing(
            "s3".into(),
        )),
        Duration::from_millis(1),
    );
    for text in [rec.metrics_text(), operator.encode()] {
        for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
            let mut parts = line.split_whitespace().skip(2);
            let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
            exported.insert(name.to_owned());
            if kind == "counter" {
                exported.insert(format!("{name}_total"));
            }
            if kind == "histogram" {
                for s in ["_bucket", "_sum", "_count"] {
                    exported.insert(format!("{name}{s}"));
                }
            }
        }
    }
    let rules =
        std::fs::read_to_string(repo().join("config/prometheus/earshot-rules.yaml")).unwrap();
    let dashboard = std::fs::read_to_string(repo().join("config/grafana/earshot.json")).unwrap();
    let used: BTreeSet<String> = names_in(&rules)
        .union(&names_in(&dashboard))
        .cloned()
        .collect();
    assert!(used.len() >= 15, "{used:?}");
    let missing: Vec<&String> = used.iter().filter(|n| !exported.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "used but not exported: {missing:?}\nexported: {exported:?}"
    );
}

#[test]
fn a_real_prometheus_sees_a_recorded_call() {
    require("prometheus");
    require("sipp");
    let dir = TempDir::new("prometheus");
    let ports = free_ports(24);
    let users = [TestUser {
        extension: "008",
        mode: "Always",
        shortcode: None,
    }];
    let rec = RecorderProcess::start(
        &recorder_binary(),
        dir.path(),
        SocketAddr::from(([127, 0, 0, 1], ports)),
        &users,
    );

    let prom_port = ports + 20;
    std::fs::write(
        dir.path().join("prometheus.yml"),
        format!(
            "global: {{ scrape_interval: 1s, evaluation_interval: 1s }}\nscrape_configs:\n  - job_name: earshot-office\n    static_configs:\n      - targets: ['{}']\n        labels: {{ namespace: acme }}\n",
            rec.http
        ),
    )
    .unwrap();
    let mut prom = Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            dir.path().join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("prometheus.log")).unwrap())
        .spawn()
        .expect("start prometheus");
    let prom_addr = SocketAddr::from(([127, 0, 0, 1], prom_port));
    let query = |q: &str| -> Option<f64> {
        let path = format!(
            "/api/v1/query?query={}",
            q.replace(' ', "%20")
                .replace('{', "%7B")
                .replace('}', "%7D")
                .replace('"', "%22")
        );
        let (status, body) = http_get(prom_addr, &path).ok()?;
        if status != 200 {
            return None;
        }
        let v: Value = serde_json::from_str(&body).ok()?;
        v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    };
    let wait = |what: &str, f: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !f() {
            assert!(
                Instant::now() < deadline,
                "{what}: {}",
                std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    };
    wait("Prometheus scrapes the recorder", &|| {
        query("up{job=\"earshot-office\"}") == Some(1.0)
    });
    let before = query("sum(earshot_recordings_total)").unwrap_or(0.0);

    let write = |name: &str, s: &RtpStream| {
        let p = dir.path().join(name);
        s.write(&p).unwrap();
        p.display().to_string()
    };
    let mut uas = Sipp {
        scenario: "uas.xml",
        vars: vec![(
            "PCAP",
            write("callee.pcap", &RtpStream::new(2).tone(1000.0, 1000)),
        )],
        args: vec!["-m".into(), "1".into()],
        port: ports,
        media_port: ports + 2,
        control_port: ports + 6,
    }
    .spawn(dir.path(), "uas");
    std::thread::sleep(Duration::from_millis(300));
    let mut uac = Sipp {
        scenario: "uac.xml",
        vars: vec![
            ("FROM", "008".into()),
            (
                "PCAP",
                write("caller.pcap", &RtpStream::new(1).tone(440.0, 1000)),
            ),
            ("TALK_MS", "1500".into()),
        ],
        args: vec![
            "-rsa".into(),
            rec.sip.to_string(),
            "-s".into(),
            "500".into(),
            "-m".into(),
            "1".into(),
            format!("127.0.0.1:{ports}"),
        ],
        port: ports + 8,
        media_port: ports + 10,
        control_port: ports + 14,
    }
    .spawn(dir.path(), "uac");
    uac.wait_success(Duration::from_secs(30));
    uas.wait_success(Duration::from_secs(10));
    wait("earshot_recordings_total increased in Prometheus", &|| {
        query("sum(earshot_recordings_total{job=\"earshot-office\",namespace=\"acme\",result=\"completed\"})").is_some_and(|v| v >= before + 1.0)
    });
    let _ = prom.kill();
    let _ = prom.wait();
}
