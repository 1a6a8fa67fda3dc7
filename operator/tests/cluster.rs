//! The operator against a real Kubernetes API server: the control plane
//! `scripts/controlplane.sh` built from Go modules (etcd, kube-apiserver,
//! kube-controller-manager) started on loopback, or the cluster KUBECONFIG
//! names (`make e2e`). The chart is installed with the real `helm`, the
//! operator runs with the chart's ServiceAccount token (so exactly the
//! chart's RBAC), samples go through `kubectl apply`, and the recorder the
//! operator configures is started the way a kubelet would (ConfigMap →
//! file, Secret → environment) and records a real SIPp call into Garage.
//! There is no kubelet: pods stay Pending and nothing waits for them.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use earshot_contracts::config::RecorderConfig;
use earshot_tests::controlplane::{ControlPlane, kubectl_with};
use earshot_tests::garage::Garage;
use earshot_tests::pcap::RtpStream;
use earshot_tests::{Sipp, TempDir, free_ports, http_get, repo};
use serde_json::Value;

const OPERATOR: &str = env!("CARGO_BIN_EXE_earshot-operator");
const OPERATOR_SA: &str = "system:serviceaccount:earshot-system:earshot-operator";

/// A cluster for one test: the local control plane, or KUBECONFIG's.
///
/// On KUBECONFIG's cluster the chart is installed without operator pods
/// (the test runs its own operators), and what the test created goes at
/// drop, so `make e2e` runs the tests one at a time.
struct Cluster {
    dir: TempDir,
    cp: Option<ControlPlane>,
    kubeconfig: PathBuf,
    namespaces: std::cell::RefCell<Vec<String>>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.cp.is_some() {
            return; // the whole control plane goes with it
        }
        for ns in self.namespaces.borrow().iter() {
            let _ = self.try_kubectl(
                &["delete", "namespace", ns, "--wait=true", "--timeout=120s"],
                None,
            );
        }
        let _ = Command::new("helm")
            .args([
                "uninstall",
                "earshot",
                "--namespace",
                "earshot-system",
                "--wait",
            ])
            .arg(format!("--kubeconfig={}", self.kubeconfig.display()))
            .output();
    }
}

impl Cluster {
    fn start(name: &str) -> Cluster {
        let dir = TempDir::new(name);
        match std::env::var_os("KUBECONFIG") {
            Some(k) => Cluster {
                dir,
                cp: None,
                kubeconfig: PathBuf::from(k),
                namespaces: Default::default(),
            },
            None => {
                let cp = ControlPlane::start(&dir.path().join("controlplane"));
                Cluster {
                    kubeconfig: cp.kubeconfig.clone(),
                    dir,
                    cp: Some(cp),
                    namespaces: Default::default(),
                }
            }
        }
    }

    fn kubectl(&self, args: &[&str]) -> String {
        kubectl_with(&self.kubeconfig, args, None)
            .unwrap_or_else(|e| panic!("kubectl {args:?}: {e}"))
    }

    fn try_kubectl(&self, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
        kubectl_with(&self.kubeconfig, args, stdin)
    }

    /// The policy, once its condition `kind` has `reason` (within 60 s).
    fn wait_reason(&self, ns: &str, name: &str, kind: &str, reason: &str) -> Value {
        eventually(&format!("{ns}/{name}: {kind} with {reason}"), 60, || {
            let rp = self.json(&["get", "rp", name, "-n", ns])?;
            (condition(&rp, kind)["reason"] == reason).then_some(rp)
        })
    }

    /// A namespace for this test, deleted at drop on a shared cluster.
    fn namespace(&self, ns: &str) {
        self.kubectl(&["create", "namespace", ns]);
        self.namespaces.borrow_mut().push(ns.to_owned());
    }

    fn apply(&self, yaml: &str) {
        self.try_kubectl(&["apply", "-f", "-"], Some(yaml))
            .unwrap_or_else(|e| panic!("kubectl apply: {e}\n{yaml}"));
    }

    fn json(&self, args: &[&str]) -> Option<Value> {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        self.try_kubectl(&a, None)
            .ok()
            .and_then(|s| serde_json::from_str(&s).ok())
    }

    /// The chart, installed with the real helm (operator pods stay Pending).
    fn install_chart(&self) {
        let out = Command::new("helm")
            .arg("install")
            .arg("earshot")
            .arg(repo().join("charts/earshot"))
            .args(["--namespace", "earshot-system", "--create-namespace"])
            .args(if self.cp.is_none() {
                &["--set", "operator.replicas=0"][..]
            } else {
                &[]
            })
            .arg(format!("--kubeconfig={}", self.kubeconfig.display()))
            .output()
            .expect("helm");
        assert!(
            out.status.success(),
            "helm install: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.kubectl(&[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/recordingpolicies.earshot.io",
        ]);
    }

    /// A kubeconfig for the chart's ServiceAccount (a TokenRequest token).
    fn operator_kubeconfig(&self) -> PathBuf {
        let token = self
            .kubectl(&[
                "create",
                "token",
                "earshot-operator",
                "-n",
                "earshot-system",
                "--duration=2h",
            ])
            .trim()
            .to_owned();
        let path = self.dir.path().join("operator.kubeconfig");
        let text = std::fs::read_to_string(&self.kubeconfig).unwrap();
        let mut cfg: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        let ctx = cfg["current-context"].as_str().unwrap().to_owned();
        let user = cfg["contexts"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|c| c["name"].as_str() == Some(&ctx))
            .unwrap()["context"]["user"]
            .as_str()
            .unwrap()
            .to_owned();
        for u in cfg["users"].as_sequence_mut().unwrap() {
            if u["name"].as_str() == Some(&user) {
                u["user"] = serde_yaml::to_value(serde_json::json!({"token": token})).unwrap();
            }
        }
        std::fs::write(&path, serde_yaml::to_string(&cfg).unwrap()).unwrap();
        path
    }

    /// The operator of a single-tenant cluster: any store allowed (the
    /// opt-in), no key of its own, so no lifecycle rules.
    fn operator(&self, identity: &str, kubeconfig: &Path) -> Operator {
        self.operator_with(
            identity,
            kubeconfig,
            &[("EARSHOT_ALLOW_ANY_STORAGE_ENDPOINT", "true".to_owned())],
        )
    }

    /// The operator with the platform's settings (`storageEndpoints`,
    /// `console.proxy`) in its environment, as the chart renders them.
    fn operator_with(
        &self,
        identity: &str,
        kubeconfig: &Path,
        platform: &[(&str, String)],
    ) -> Operator {
        let http = SocketAddr::from(([127, 0, 0, 1], free_ports(1)));
        let log = self.dir.path().join(format!("{identity}.log"));
        LOGS.lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(log.clone());
        let child = Command::new(OPERATOR)
            // As the chart's Deployment runs it: `run`, configured by env.
            .arg("run")
            .env(
                "EARSHOT_RECORDER_IMAGE",
                "registry.example/earshot-recorder:test",
            )
            .env("EARSHOT_HTTP_ADDR", http.to_string())
            .env("KUBECONFIG", kubeconfig)
            .env("POD_NAMESPACE", "earshot-system")
            .env("POD_NAME", identity)
            .env("RUST_LOG", "info,earshot_operator=debug")
            .envs(platform.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start earshot-operator");
        Operator {
            child: Some(child),
            log,
            http,
        }
    }
}

struct Operator {
    child: Option<Child>,
    log: PathBuf,
    http: SocketAddr,
}

impl Operator {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg(c.id().to_string())
                .status();
            let _ = c.wait();
        }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn eventually<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("{what}: not within {secs} s\n{}", operator_logs());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The tail of every operator log this test process wrote, for a failure.
fn operator_logs() -> String {
    let logs = LOGS.lock().unwrap_or_else(|e| e.into_inner());
    logs.iter()
        .map(|p| {
            let text = std::fs::read_to_string(p).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(40)..].join("\n");
            format!("--- {}\n{tail}", p.display())
        })
        .collect::<Vec<_>>()
        .join("\n")
}

static LOGS: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

fn condition<'a>(rp: &'a Value, kind: &str) -> &'a Value {
    rp["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == kind))
        .unwrap_or(&Value::Null)
}

/// Ports the policy's recorder gets on loopback: SIP, then RTP.
struct RecorderPorts {
    sip: u16,
    rtp_min: u16,
    uas: u16,
}

fn policy(
    name: &str,
    ns: &str,
    secret: &str,
    g: &Garage,
    p: &RecorderPorts,
    users: &str,
) -> String {
    format!(
        r#"apiVersion: earshot.io/v1alpha1
kind: RecordingPolicy
metadata:
  name: {name}
  namespace: {ns}
spec:
  users:
{users}
  retentionDays: 30
  storage:
    endpoint: {endpoint}
    bucket: recordings
    region: garage
    credentialsSecret:
      name: {secret}
  recorder:
    sip: {{ port: {sip}, transports: [UDP] }}
    rtpPorts: {{ min: {rtp_min}, max: {rtp_max} }}
    network: {{ advertisedAddress: 127.0.0.1, allowLocalMedia: true }}
    peers:
      - name: sipp
        sources: ["127.0.0.1/32"]
        nextHop: "127.0.0.1:{uas}"
"#,
        endpoint = g.endpoint,
        sip = p.sip,
        rtp_min = p.rtp_min,
        rtp_max = p.rtp_min + 39,
        uas = p.uas,
    )
}

trait GarageExt {
    fn lifecycle_xml(&self) -> String;
}

impl GarageExt for Garage {
    /// The bucket's lifecycle configuration, read with the operator's own S3 client.
    fn lifecycle_xml(&self) -> String {
        use earshot_operator::storage::s3::{S3Client, S3Target};
        let client = S3Client::new(S3Target {
            endpoint: self.endpoint.clone(),
            region: "garage".into(),
            path_style: true,
            access_key_id: self.key_id.clone(),
            secret_access_key: self.secret.clone(),
            operator_key: true,
        });
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(client.get_lifecycle(&self.bucket))
            .unwrap()
            .unwrap_or_default()
    }
}

fn secret_yaml(ns: &str, name: &str, g: &Garage) -> String {
    secret_yaml_with(ns, name, &g.key_id, &g.secret)
}

fn secret_yaml_with(ns: &str, name: &str, id: &str, secret: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{ name: {name}, namespace: {ns} }}\nstringData:\n  AWS_ACCESS_KEY_ID: {id}\n  AWS_SECRET_ACCESS_KEY: {secret}\n"
    )
}

/// The kubelet's part for one recorder pod: the ConfigMap's file written
/// where the pod would mount it (with the pod's addresses and volume path
/// rewritten to this machine's loopback and a temporary directory), the
/// Secret's keys in the environment, and the real `earshot-recorder`.
struct Kubelet {
    dir: PathBuf,
    config: PathBuf,
    http: SocketAddr,
    env: Vec<(String, String)>,
    child: Option<Child>,
}

impl Kubelet {
    fn new(cluster: &Cluster, ns: &str, policy: &str, secret: &str) -> Kubelet {
        let dir = cluster.dir.path().join(format!("pod-{ns}-{policy}"));
        std::fs::create_dir_all(&dir).unwrap();
        let s = cluster
            .json(&["get", "secret", secret, "-n", ns])
            .expect("the Secret");
        let env = s["data"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), base64_decode(v.as_str().unwrap())))
            .collect();
        let mut k = Kubelet {
            config: dir.join("recorder.yaml"),
            http: SocketAddr::from(([127, 0, 0, 1], free_ports(1))),
            dir,
            env,
            child: None,
        };
        k.sync(cluster, ns, policy);
        k
    }

    /// Writes the ConfigMap's current file; true when it changed.
    fn sync(&mut self, cluster: &Cluster, ns: &str, policy: &str) -> bool {
        let cm = cluster
            .json(&["get", "configmap", &format!("earshot-{policy}"), "-n", ns])
            .expect("the recorder's ConfigMap");
        let text = cm["data"]["recorder.yaml"].as_str().unwrap();
        let mut cfg = RecorderConfig::from_yaml(text).expect("the recorder's config parses");
        cfg.sip.listen.set_ip([127, 0, 0, 1].into());
        cfg.rtp.bind = [127, 0, 0, 1].into();
        cfg.http.listen = self.http;
        cfg.spool.dir = self.dir.join("spool");
        cfg.events.path = Some(self.dir.join("events.jsonl"));
        let out = serde_yaml::to_string(&cfg).unwrap();
        if std::fs::read_to_string(&self.config).ok().as_deref() == Some(out.as_str()) {
            return false;
        }
        std::fs::write(&self.config, out).unwrap();
        true
    }

    fn start(&mut self) {
        let log = std::fs::File::create(self.dir.join("recorder.log")).unwrap();
        self.child = Some(
            Command::new(repo().join("target/debug/earshot-recorder"))
                .arg("--config")
                .arg(&self.config)
                .env("EARSHOT_ADVERTISED_ADDRESS", "127.0.0.1")
                .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("earshot-recorder (built by make test)"),
        );
        eventually("the recorder ready", 30, || {
            matches!(http_get(self.http, "/readyz"), Ok((200, _))).then_some(())
        });
    }

    fn metric(&self, series: &str) -> f64 {
        earshot_tests::parse_metric(&http_get(self.http, "/metrics").unwrap().1, series)
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn base64_decode(s: &str) -> String {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s)
        .expect("a Secret's data is base64");
    String::from_utf8(bytes).expect("the Secret's values are text")
}

/// One SIPp call through the recorder at `sip`, caller `from`, 3 s.
fn call(dir: &Path, tag: &str, sip: u16, uas_port: u16, from: &str) {
    let caller = dir.join(format!("{tag}-caller.pcap"));
    let callee = dir.join(format!("{tag}-callee.pcap"));
    RtpStream::new(1).tone(440.0, 3000).write(&caller).unwrap();
    RtpStream::new(2).tone(1000.0, 3000).write(&callee).unwrap();
    let mut uas = Sipp {
        scenario: "uas.xml",
        vars: vec![("PCAP", callee.display().to_string())],
        args: vec!["-m".into(), "1".into()],
        port: uas_port,
        media_port: uas_port + 2,
        control_port: uas_port + 6,
    }
    .spawn(dir, &format!("uas-{tag}"));
    std::thread::sleep(Duration::from_millis(300));
    let mut uac = Sipp {
        scenario: "uac.xml",
        vars: vec![
            ("FROM", from.to_owned()),
            ("PCAP", caller.display().to_string()),
            ("TALK_MS", "3000".into()),
        ],
        args: vec![
            "-rsa".into(),
            format!("127.0.0.1:{sip}"),
            "-s".into(),
            "500".into(),
            "-m".into(),
            "1".into(),
            format!("127.0.0.1:{uas_port}"),
        ],
        port: uas_port + 8,
        media_port: uas_port + 10,
        control_port: uas_port + 14,
    }
    .spawn(dir, &format!("uac-{tag}"));
    uac.wait_success(Duration::from_secs(60));
    uas.wait_success(Duration::from_secs(20));
}

fn users(always: &str) -> String {
    format!(
        "    - {{ extension: \"008\", mode: {always} }}\n    - {{ extension: \"012\", mode: OnDemand, shortcode: \"*5\" }}\n"
    )
}

#[test]
fn a_policy_through_its_life_with_the_chart_s_rbac_and_a_real_recorder() {
    let c = Cluster::start("cluster-life");
    c.install_chart();
    // What the chart stored: its RBAC and its operator Deployment.
    assert!(
        c.json(&["get", "clusterrole", "earshot-operator"])
            .is_some()
    );
    assert!(
        c.json(&[
            "get",
            "deployment",
            "earshot-operator",
            "-n",
            "earshot-system"
        ])
        .is_some()
    );
    // kubectl explain reads the CRD's field docs.
    // The server publishes a new CRD's OpenAPI a moment after it is
    // Established, so explain may need a few tries.
    let explain = eventually("kubectl explain recordingpolicy.spec.users", 30, || {
        c.try_kubectl(&["explain", "recordingpolicy.spec.users"], None)
            .ok()
    });
    assert!(explain.contains("The users of this tenant"), "{explain}");
    assert!(explain.contains("shortcode"), "{explain}");

    // ServiceMonitors exist in this cluster (a CRD of their own), so the
    // operator applies one per policy.
    c.apply(include_str!("fixtures/servicemonitor-crd.yaml"));
    c.kubectl(&[
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/servicemonitors.monitoring.coreos.com",
    ]);

    let g = Garage::start(&c.dir.path().join("garage"), "recordings");
    c.namespace("acme");
    let sa = c.operator_kubeconfig();
    // A shared platform: the store is allow-listed, the operator keeps the
    // lifecycle rules with its own key (the bucket owner's), the tenant's
    // recorders get a key that may only write, and exposed consoles sit
    // behind the platform's proxy.
    let own = c.dir.path().join("lifecycle-0");
    std::fs::create_dir_all(&own).unwrap();
    std::fs::write(own.join("accessKeyId"), &g.key_id).unwrap();
    std::fs::write(own.join("secretAccessKey"), &g.secret).unwrap();
    let (tenant_id, tenant_secret) = g.key_with("acme-recorders", &["--write"]);
    let op = c.operator_with(
        "operator-a",
        &sa,
        &[
            (
                "EARSHOT_STORAGE_ENDPOINTS",
                serde_json::json!([{"url": g.endpoint, "lifecycleCredentialsDir": own}])
                    .to_string(),
            ),
            (
                "EARSHOT_CONSOLE_PROXY",
                serde_json::json!({
                    "identityHeader": "X-Forwarded-User",
                    "sources": ["10.42.7.0/24"],
                    "podSelector": {"app.kubernetes.io/name": "oauth2-proxy"},
                })
                .to_string(),
            ),
        ],
    );

    // A policy whose Secret does not exist yet: the condition says so.
    let ports = free_ports(60);
    let p = RecorderPorts {
        sip: ports,
        rtp_min: ports + 2,
        uas: ports + 42,
    };
    c.apply(&policy(
        "office",
        "acme",
        "acme-s3",
        &g,
        &p,
        &users("Always"),
    ));
    let rp = c.wait_reason("acme", "office", "StorageReady", "SecretMissing");
    assert!(
        condition(&rp, "StorageReady")["message"]
            .as_str()
            .unwrap()
            .contains("acme-s3"),
        "{rp}"
    );
    let events = c.kubectl(&[
        "get",
        "events",
        "-n",
        "acme",
        "--field-selector",
        "reason=SecretMissing",
    ]);
    assert!(events.contains("SecretMissing"), "{events}");
    // The objects exist anyway, owned by the policy, by the operator's manager.
    let sts = eventually("the recorder StatefulSet", 30, || {
        c.json(&[
            "get",
            "statefulset",
            "earshot-office",
            "-n",
            "acme",
            "--show-managed-fields",
        ])
    });
    assert_eq!(
        sts["metadata"]["ownerReferences"][0]["kind"],
        "RecordingPolicy"
    );
    let managers: Vec<&str> = sts["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["manager"].as_str())
        .collect();
    assert!(managers.contains(&"earshot-operator"), "{managers:?}");
    for kind in ["configmap", "service", "servicemonitor"] {
        let o = c
            .json(&["get", kind, "earshot-office", "-n", "acme"])
            .unwrap_or_else(|| panic!("{kind} earshot-office"));
        assert_eq!(
            o["metadata"]["ownerReferences"][0]["name"], "office",
            "{kind}"
        );
    }

    // The Secret arrives: storage ready against Garage, the rule in the bucket.
    c.apply(&secret_yaml_with(
        "acme",
        "acme-s3",
        &tenant_id,
        &tenant_secret,
    ));
    let rp = eventually("StorageReady=True", 120, || {
        let rp = c.json(&["get", "rp", "office", "-n", "acme"])?;
        (condition(&rp, "RetentionEnforced")["status"] == "True").then_some(rp)
    });
    assert_eq!(condition(&rp, "StorageReady")["status"], "True");
    assert_eq!(rp["status"]["effectiveRetentionDays"], 30);
    let rules = g.lifecycle_xml();
    assert!(
        rules.contains("<Prefix>acme/office/</Prefix>") && rules.contains("<Days>30</Days>"),
        "{rules}"
    );
    let table = c.kubectl(&["get", "rp", "-n", "acme"]);
    for column in ["READY", "RETENTION", "USERS", "ALWAYS", "ONDEMAND", "AGE"] {
        assert!(table.contains(column), "{table}");
    }

    // A field someone else manages survives the next reconcile.
    c.kubectl(&[
        "annotate",
        "statefulset",
        "earshot-office",
        "-n",
        "acme",
        "--field-manager=platform-team",
        "platform.example/owner=voice",
    ]);

    // Operator → recorder, for real: the kubelet's part, then a call.
    let mut pod = Kubelet::new(&c, "acme", "office", "acme-s3");
    pod.start();
    call(c.dir.path(), "first", p.sip, p.uas, "008");
    let first = eventually("the first recording in Garage", 60, || {
        let keys = g.list("acme/office/").ok()?;
        keys.iter().any(|k| k.ends_with(".json")).then_some(keys)
    });
    assert_eq!(first.len(), 2, "{first:?}");

    // A users change applied with kubectl: 008 becomes Never. The file
    // changes, the recorder reloads, the next call is not recorded.
    c.apply(&policy(
        "office",
        "acme",
        "acme-s3",
        &g,
        &p,
        &users("Never"),
    ));
    eventually("the ConfigMap updated", 60, || {
        pod.sync(&c, "acme", "office").then_some(())
    });
    eventually("the recorder reloaded", 30, || {
        (pod.metric("earshot_config_reloads_total{result=\"applied\"}") >= 1.0).then_some(())
    });
    call(c.dir.path(), "second", p.sip, p.uas, "008");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        g.list("acme/office/").unwrap().len(),
        2,
        "the Never call is not recorded"
    );
    assert_eq!(pod.metric("earshot_calls_total{result=\"answered\"}"), 2.0);

    let sts = c
        .json(&["get", "statefulset", "earshot-office", "-n", "acme"])
        .unwrap();
    assert_eq!(
        sts["metadata"]["annotations"]["platform.example/owner"], "voice",
        "another manager's field survives the operator's apply"
    );

    // Replicas 2 and back: the PDB comes and goes; the console likewise,
    // exposed behind the platform's proxy with its NetworkPolicy.
    let two = policy("office", "acme", "acme-s3", &g, &p, &users("Never"))
        .replace("  recorder:\n", "  recorder:\n    replicas: 2\n")
        .replace(
            "  storage:\n",
            "  console: { enabled: true, expose: true, credentialsSecret: { name: acme-s3 } }\n  storage:\n",
        );
    c.apply(&two);
    let np = eventually("the PDB and the exposed console", 60, || {
        c.json(&["get", "pdb", "earshot-office", "-n", "acme"])?;
        c.json(&["get", "deployment", "earshot-office-console", "-n", "acme"])?;
        c.json(&["get", "service", "earshot-office-console", "-n", "acme"])?;
        c.json(&[
            "get",
            "networkpolicy",
            "earshot-office-console",
            "-n",
            "acme",
        ])
    });
    assert_eq!(
        np["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/name"],
        "oauth2-proxy",
        "{np}"
    );
    c.apply(&policy(
        "office",
        "acme",
        "acme-s3",
        &g,
        &p,
        &users("Never"),
    ));
    eventually("the PDB and the console gone", 60, || {
        (c.json(&["get", "pdb", "earshot-office", "-n", "acme"])
            .is_none()
            && c.json(&["get", "deployment", "earshot-office-console", "-n", "acme"])
                .is_none()
            && c.json(&[
                "get",
                "networkpolicy",
                "earshot-office-console",
                "-n",
                "acme",
            ])
            .is_none())
        .then_some(())
    });

    // Another tenant tries, through the real API server and the operator,
    // to write into acme's prefix (and so set retention over it), and to
    // make the operator call a store the platform does not list.
    c.namespace("beta");
    c.apply(&secret_yaml("beta", "beta-s3", &g));
    let lifecycle_before = g.lifecycle_xml();
    c.apply(
        &policy("intruder", "beta", "beta-s3", &g, &p, &users("Always")).replace(
            "    bucket: recordings\n",
            "    bucket: recordings\n    prefix: acme/office/\n",
        ),
    );
    let rp = c.wait_reason("beta", "intruder", "Ready", "PrefixOutsideNamespace");
    assert!(
        condition(&rp, "Ready")["message"]
            .as_str()
            .unwrap()
            .contains("must start with \"beta\""),
        "{rp}"
    );
    let decoy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    decoy.set_nonblocking(true).unwrap();
    let decoy_url = format!("http://{}", decoy.local_addr().unwrap());
    c.apply(
        &policy("exfil", "beta", "beta-s3", &g, &p, &users("Always")).replace(
            &format!("endpoint: {}", g.endpoint),
            &format!("endpoint: {decoy_url}"),
        ),
    );
    c.wait_reason("beta", "exfil", "Ready", "EndpointNotAllowed");
    for name in ["earshot-intruder", "earshot-exfil"] {
        assert!(
            c.json(&["get", "statefulset", name, "-n", "beta"])
                .is_none(),
            "{name}: a refused policy gets no workload"
        );
    }
    assert!(
        decoy.accept().is_err(),
        "the operator never connected to the store it was not allowed"
    );
    assert_eq!(
        g.lifecycle_xml(),
        lifecycle_before,
        "acme's rules untouched"
    );

    // A prompt the namespace does not have: the policy says which, and the
    // recorders already running stay as they are.
    let prompt = policy("office", "acme", "acme-s3", &g, &p, &users("Never")).replace(
        "  storage:\n",
        "  announcement: { mode: Prompt, prompt: { configMap: prompts, key: notice.wav } }\n  storage:\n",
    );
    c.apply(&prompt);
    let rp = c.wait_reason("acme", "office", "Ready", "PromptMissing");
    assert!(
        condition(&rp, "Ready")["message"]
            .as_str()
            .unwrap()
            .contains("ConfigMap prompts with key notice.wav"),
        "{rp}"
    );
    assert!(
        c.json(&["get", "statefulset", "earshot-office", "-n", "acme"])
            .is_some()
    );

    // Host network in a namespace that enforces Pod Security baseline: no
    // recorder pod could start there, so nothing is applied and the
    // condition says why.
    c.namespace("tenant-b");
    c.kubectl(&[
        "label",
        "namespace",
        "tenant-b",
        "pod-security.kubernetes.io/enforce=baseline",
    ]);
    c.apply(
        &policy(
            "hosted",
            "tenant-b",
            "tenant-b-s3",
            &g,
            &p,
            &users("Always"),
        )
        .replace(
            "network: { advertisedAddress: 127.0.0.1, allowLocalMedia: true }",
            "network: { mode: Host }",
        ),
    );
    let rp = c.wait_reason(
        "tenant-b",
        "hosted",
        "RecorderAvailable",
        "HostNetworkForbidden",
    );
    assert!(
        condition(&rp, "RecorderAvailable")["message"]
            .as_str()
            .unwrap()
            .contains("\"baseline\""),
        "{rp}"
    );
    assert!(
        c.json(&["get", "statefulset", "earshot-hosted", "-n", "tenant-b"])
            .is_none()
    );

    // Deleting the policy: the garbage collector removes what it owned;
    // the recordings and the lifecycle rule stay.
    c.kubectl(&["delete", "rp", "office", "-n", "acme"]);
    eventually("the workload garbage-collected", 90, || {
        (c.json(&["get", "statefulset", "earshot-office", "-n", "acme"])
            .is_none()
            && c.json(&["get", "configmap", "earshot-office", "-n", "acme"])
                .is_none()
            && c.json(&["get", "service", "earshot-office", "-n", "acme"])
                .is_none())
        .then_some(())
    });
    assert_eq!(g.list("acme/office/").unwrap().len(), 2, "recordings stay");
    assert!(
        g.lifecycle_xml().contains("<Prefix>acme/office/</Prefix>"),
        "the rule stays"
    );

    // The chart's RBAC is exactly what the operator needed: nothing it did
    // was refused, and every verb the chart grants was used.
    if let Some(cp) = &c.cp {
        let seen: Vec<_> = cp
            .audited()
            .into_iter()
            .filter(|a| a.user == OPERATOR_SA)
            .collect();
        let refused: Vec<_> = seen.iter().filter(|a| a.code == 403).collect();
        assert!(
            refused.is_empty(),
            "refused by RBAC: {refused:?}\n{}",
            op.log()
        );
        // A server-side apply that created its object (201) was authorized
        // for `create` as well as `patch`; the audit log names only `patch`.
        let used: BTreeSet<(String, String, String)> = seen
            .iter()
            .flat_map(|a| {
                let created = (a.verb == "patch" && a.code == 201)
                    .then(|| ("create".to_owned(), a.group.clone(), a.resource.clone()));
                std::iter::once((a.verb.clone(), a.group.clone(), a.resource.clone()))
                    .chain(created)
            })
            .collect();
        let granted: BTreeSet<(String, String, String)> = earshot_operator::rbac::CLUSTER
            .iter()
            .chain(earshot_operator::rbac::OWN_NAMESPACE)
            .map(|(v, g, r)| ((*v).to_owned(), (*g).to_owned(), (*r).to_owned()))
            .collect();
        // What admission checks is used without a request of its own (the
        // refused-apply check above proves it is needed).
        let admission: BTreeSet<(String, String, String)> = earshot_operator::rbac::ADMISSION_ONLY
            .iter()
            .map(|(v, g, r)| ((*v).to_owned(), (*g).to_owned(), (*r).to_owned()))
            .collect();
        let unused: Vec<_> = granted
            .difference(&used)
            .filter(|g| !admission.contains(*g))
            .collect();
        assert!(unused.is_empty(), "granted but never used: {unused:?}");
        let ungranted: Vec<_> = used.difference(&granted).collect();
        assert!(
            ungranted.is_empty(),
            "used but not in rbac.rs: {ungranted:?}"
        );
    } else {
        eprintln!("cluster: the RBAC comparison needs the local control plane's audit log");
    }
    drop(op);
}

#[test]
fn samples_are_accepted_and_invalid_ones_refused_with_the_words_check_prints() {
    let c = Cluster::start("cluster-samples");
    c.install_chart();
    let samples = repo().join("config/samples");
    // Each tenant's namespace, as the samples name them.
    let mut namespaces = std::collections::BTreeSet::new();
    for dir in [samples.clone(), samples.join("invalid")] {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            for l in text.lines() {
                if let Some(ns) = l.trim().strip_prefix("namespace:") {
                    namespaces.insert(ns.trim().to_owned());
                }
            }
        }
    }
    for ns in &namespaces {
        c.namespace(ns);
    }
    for e in std::fs::read_dir(&samples).unwrap().flatten() {
        let path = e.path();
        if path.extension().is_none_or(|x| x != "yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        c.try_kubectl(&["apply", "--dry-run=server", "-f", "-"], Some(&text))
            .unwrap_or_else(|e| panic!("{} refused: {e}", path.display()));
    }
    let mut n = 0;
    let mut mismatches = Vec::new();
    for e in std::fs::read_dir(samples.join("invalid"))
        .unwrap()
        .flatten()
    {
        let path = e.path();
        let text = std::fs::read_to_string(&path).unwrap();
        let server = c
            .try_kubectl(&["apply", "--dry-run=server", "-f", "-"], Some(&text))
            .expect_err(&format!("{} accepted", path.display()));
        let check = Command::new(OPERATOR)
            .args(["check", "-f"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            !check.status.success(),
            "{}: check accepts it",
            path.display()
        );
        let ours = String::from_utf8_lossy(&check.stdout).into_owned()
            + &String::from_utf8_lossy(&check.stderr);
        // The API server's message for the field, as `check` prints it.
        // `check` prints "  - <field>: <message>" per violation.
        let message = ours
            .lines()
            .find_map(|l| l.strip_prefix("  - "))
            .map(|l| l.split_once(": ").map_or(l, |(_, m)| m).trim().to_owned())
            .unwrap_or_default();
        if message.is_empty() || !server.contains(&message) {
            mismatches.push(format!(
                "{}:\n  server: {server}\n  check:  {ours}",
                path.display()
            ));
        }
        n += 1;
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    assert!(n >= 10, "{n} invalid samples");
}

#[test]
fn when_the_leader_is_killed_the_other_operator_takes_over() {
    let c = Cluster::start("cluster-leader");
    c.install_chart();
    let g = Garage::start(&c.dir.path().join("garage"), "recordings");
    c.namespace("acme");
    c.apply(&secret_yaml("acme", "acme-s3", &g));
    let sa = c.operator_kubeconfig();
    let mut a = c.operator("operator-a", &sa);
    let ports = free_ports(60);
    let p = RecorderPorts {
        sip: ports,
        rtp_min: ports + 2,
        uas: ports + 42,
    };
    c.apply(&policy(
        "first",
        "acme",
        "acme-s3",
        &g,
        &p,
        &users("Always"),
    ));
    eventually("the first policy reconciled", 60, || {
        c.json(&["get", "configmap", "earshot-first", "-n", "acme"])
    });
    let mut b = c.operator("operator-b", &sa);
    std::thread::sleep(Duration::from_secs(3));
    let lease = c
        .json(&["get", "lease", "earshot-operator", "-n", "earshot-system"])
        .expect("the Lease");
    assert_eq!(lease["spec"]["holderIdentity"], "operator-a");
    let killed = Instant::now();
    a.kill9();
    c.apply(&policy(
        "second",
        "acme",
        "acme-s3",
        &g,
        &p,
        &users("Always"),
    ));
    eventually("the second policy reconciled by the new leader", 45, || {
        c.json(&["get", "configmap", "earshot-second", "-n", "acme"])
    });
    let took = killed.elapsed();
    let lease = c
        .json(&["get", "lease", "earshot-operator", "-n", "earshot-system"])
        .unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "operator-b", "{}", b.log());
    // Lease duration 15 s (operator/src/run.rs) plus a few seconds.
    assert!(took < Duration::from_secs(25), "took over after {took:?}");
    eprintln!("cluster: operator-b led and reconciled {took:?} after operator-a was killed");
    let _ = &mut b;
    let _ = (a.http, b.http);
}
