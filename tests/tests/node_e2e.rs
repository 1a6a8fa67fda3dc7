//! A platform team's first hour, on a real node: `helm install` the chart
//! with the project's own images (no registry), the operator running as a
//! pod with the chart's RBAC, a policy in host-network mode, and a PBX and a
//! trunk in network namespaces of their own — outside the node, reaching
//! only its external address, as a PBX outside the cluster does — calling
//! through the address the policy's status gives. An oracle matches what
//! the bucket holds against the calls placed. Then what a cluster does to
//! pods: one deleted during a call, a change that rolls them, a drain with
//! calls in progress, and a tenant namespace that enforces Pod Security
//! `baseline`.
//!
//! `make e2e` (without KUBECONFIG) and `make test` run it; it writes
//! `target/e2e/summary.json`. Needs root and what `scripts/node.sh` and
//! `scripts/images.sh` build.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use earshot_contracts::sidecar::Sidecar;
use earshot_tests::garage::Garage;
use earshot_tests::node::{Cluster, NODE_NAME, Outside};
use earshot_tests::pcap::RtpStream;
use earshot_tests::{Sipp, SippProcess, TempDir, repo};
use serde_json::Value;

const PREFIX: &str = "acme/office/";
/// The media pool: the node's label and taint.
const PLACEMENT: &str = "    placement:\n      nodeSelector: { earshot.io/media: \"true\" }\n      tolerations: [{ key: earshot.io/media, operator: Exists, effect: NoSchedule }]\n";
/// How far a complete recording's length may be from the call's talk time
/// (the answer and the BYE travel through two SIPp processes).
const LENGTH_SLACK: f64 = 0.6;
/// Longest audio a killed recorder may take with it (docs/recordings.md:
/// the disk flush interval).
const CRASH_LOSS: f64 = 2.0;
/// The grace period of the pod deleted during a call.
const GRACE: f64 = 1.0;

/// What `make e2e` reports, for CI and users' pipelines.
#[derive(Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Summary {
    nodes: usize,
    images_built: Vec<String>,
    pods_ready: BTreeSet<String>,
    calls_placed: usize,
    recordings_stored: usize,
    recordings_missing: usize,
    recordings_truncated: usize,
    pod_deletion: Option<PodDeletion>,
    seconds: f64,
    passed: bool,
}

/// The call cut by a recorder pod's deletion, as the oracle found it.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct PodDeletion {
    /// Audio recorded when the deletion was asked for.
    recorded_at_delete_seconds: f64,
    /// The pod's grace period: SIGTERM, then SIGKILL this much later.
    grace_seconds: f64,
    /// What the replacement uploaded.
    stored_seconds: f64,
    /// Why the sidecar says it is incomplete.
    truncated: Option<String>,
    /// At most this much of the call before the kill is missing.
    lost_at_most_seconds: f64,
}

/// A call the oracle expects a recording of: the callee number is unique.
struct Placed {
    number: String,
    talk_ms: u64,
    /// Cut by a pod's deletion asked for at this time (1 s grace):
    /// truncated, with the audio up to the kill less at most `CRASH_LOSS`.
    cut_at: Option<SystemTime>,
}

struct Suite {
    c: Cluster,
    dir: PathBuf,
    garage: Garage,
    pbx: Outside,
    trunk: Outside,
    placed: Vec<Placed>,
    /// The trunk: one SIPp UAS on the trunk's 5060, for every call.
    uas: Option<SippProcess>,
    summary: Summary,
    started: Instant,
    next_port: u16,
}

impl Drop for Suite {
    fn drop(&mut self) {
        self.summary.seconds = self.started.elapsed().as_secs_f64();
        self.summary.passed = !std::thread::panicking();
        let out = repo().join("target/e2e");
        let _ = std::fs::create_dir_all(&out);
        let _ = std::fs::write(
            out.join("summary.json"),
            serde_json::to_vec_pretty(&self.summary).unwrap_or_default(),
        );
        if std::thread::panicking() {
            eprintln!("{}", self.diagnostics());
        }
    }
}

fn wait<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {secs} s");
        std::thread::sleep(Duration::from_millis(500));
    }
}

impl Suite {
    fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
        self.c.cp.kubectl_result(args, stdin)
    }

    fn must(&self, args: &[&str], stdin: Option<&str>) -> String {
        self.kubectl(args, stdin)
            .unwrap_or_else(|e| panic!("kubectl {args:?}: {e}"))
    }

    fn json(&self, args: &[&str]) -> Option<Value> {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        self.kubectl(&a, None)
            .ok()
            .and_then(|s| serde_json::from_str(&s).ok())
    }

    fn diagnostics(&self) -> String {
        let mut out = String::new();
        for args in [
            &["get", "pods", "-A", "-o", "wide"][..],
            &["get", "rp", "-A", "-o", "wide"],
            &["get", "pvc,pv", "-A"],
            &["get", "events", "-A", "--sort-by=.lastTimestamp"],
            &[
                "logs",
                "-n",
                "earshot-system",
                "deploy/earshot-operator",
                "--tail=60",
            ],
            &["logs", "-n", "acme", "earshot-office-0", "--tail=60"],
        ] {
            out.push_str(&format!(
                "--- kubectl {}\n{}\n",
                args.join(" "),
                self.kubectl(args, None).unwrap_or_else(|e| e)
            ));
        }
        out.push_str(&self.c.node.log_tail("kubelet"));
        out
    }

    /// Ready pods are counted once each, by UID.
    fn note_ready_pods(&mut self) {
        let Some(pods) = self.json(&["get", "pods", "-A"]) else {
            return;
        };
        for p in pods["items"].as_array().into_iter().flatten() {
            let ready = p["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            if ready {
                self.summary.pods_ready.insert(format!(
                    "{}/{} {}",
                    p["metadata"]["namespace"].as_str().unwrap_or_default(),
                    p["metadata"]["name"].as_str().unwrap_or_default(),
                    p["metadata"]["uid"].as_str().unwrap_or_default()
                ));
            }
        }
    }

    fn pod_ready(&self, ns: &str, pod: &str) -> bool {
        self.c
            .pod_field(ns, pod, "{.status.conditions[?(@.type==\"Ready\")].status}")
            == "True"
    }

    fn policy_status(&self, ns: &str, name: &str) -> Value {
        self.json(&["get", "rp", name, "-n", ns])
            .map(|p| p["status"].clone())
            .unwrap_or(Value::Null)
    }

    fn condition(&self, ns: &str, name: &str, kind: &str) -> (String, String, String) {
        let s = self.policy_status(ns, name);
        let c = s["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == kind)
            .cloned()
            .unwrap_or(Value::Null);
        let f = |k: &str| c[k].as_str().unwrap_or_default().to_owned();
        (f("status"), f("reason"), f("message"))
    }

    /// Starts the trunk: a SIPp UAS on the trunk's port 5060 answering
    /// every call with 15 s of a 1 kHz tone, until the suite stops it.
    fn start_trunk(&mut self) {
        let callee = self.dir.join("callee.pcap");
        RtpStream::new(2)
            .tone(1000.0, 15_000)
            .write(&callee)
            .unwrap();
        self.uas = Some(
            Sipp {
                scenario: "uas.xml",
                vars: vec![("PCAP", callee.display().to_string())],
                args: vec![],
                port: 5060,
                media_port: 6000,
                control_port: 6006,
            }
            .spawn_in(
                &self.dir,
                "trunk",
                Some(&self.trunk.netns),
                IpAddr::V4(self.trunk.ip),
            ),
        );
        std::thread::sleep(Duration::from_millis(300));
    }

    /// Places a call to the recorder at `sip` from `from` (the PBX outside,
    /// or the host inside): caller 008 (Always) and a 440 Hz tone for
    /// `talk_ms`, callee `number` at the trunk.
    fn call_from(
        &mut self,
        from: (Option<&str>, IpAddr),
        sip: &str,
        number: &str,
        talk_ms: u64,
    ) -> SippProcess {
        let dir = self.dir.join(format!("call-{number}"));
        std::fs::create_dir_all(&dir).unwrap();
        let caller = dir.join("caller.pcap");
        RtpStream::new(1)
            .tone(440.0, talk_ms)
            .write(&caller)
            .unwrap();
        let base = self.next_port;
        self.next_port += 20;
        self.summary.calls_placed += 1;
        Sipp {
            scenario: "uac.xml",
            vars: vec![
                ("FROM", "008".to_owned()),
                ("PCAP", caller.display().to_string()),
                ("TALK_MS", talk_ms.to_string()),
            ],
            args: vec![
                "-rsa".into(),
                sip.to_owned(),
                "-s".into(),
                number.to_owned(),
                "-m".into(),
                "1".into(),
                format!("{}:5060", self.trunk.ip),
            ],
            port: base,
            media_port: base + 2,
            control_port: base + 6,
        }
        .spawn_in(&dir, "uac", from.0, from.1)
    }

    /// A call from the PBX outside.
    fn call(&mut self, sip: &str, number: &str, talk_ms: u64) -> SippProcess {
        let pbx = self.pbx.clone();
        self.call_from((Some(&pbx.netns), IpAddr::V4(pbx.ip)), sip, number, talk_ms)
    }

    fn expect(&mut self, number: &str, talk_ms: u64, cut_at: Option<SystemTime>) {
        self.placed.push(Placed {
            number: number.to_owned(),
            talk_ms,
            cut_at,
        });
    }

    /// The oracle: every placed call has exactly one recording (by its
    /// callee number), complete and as long as the call unless a pod's
    /// deletion cut it, its bytes as the sidecar says, the caller on the
    /// left and the callee on the right; nothing else is in the bucket.
    fn oracle(&mut self) {
        let wanted: BTreeSet<&str> = self.placed.iter().map(|p| p.number.as_str()).collect();
        let by_number = wait("every placed call stored", 120, || {
            let keys = self.garage.list(PREFIX).ok()?;
            // Nothing but recordings and their sidecars (no probe object
            // left behind, no MP3 without its sidecar).
            let named: BTreeSet<String> = keys
                .iter()
                .filter(|k| k.ends_with(".json"))
                .map(|k| k.trim_end_matches(".json").to_owned() + ".mp3")
                .collect();
            if keys
                .iter()
                .any(|k| !k.ends_with(".json") && !named.contains(k))
            {
                return None;
            }
            let mut m: BTreeMap<String, Vec<(Sidecar, Vec<u8>)>> = BTreeMap::new();
            for k in keys.iter().filter(|k| k.ends_with(".json")) {
                let s = Sidecar::from_json(&self.garage.get(k)).expect("a sidecar");
                let mp3 = self.garage.get(&s.mp3.object);
                m.entry(s.callee.number.clone().unwrap_or_default())
                    .or_default()
                    .push((s, mp3));
            }
            wanted.iter().all(|n| m.contains_key(*n)).then_some(m)
        });
        let unexpected: Vec<&String> = by_number
            .keys()
            .filter(|n| !wanted.contains(n.as_str()))
            .collect();
        assert!(
            unexpected.is_empty(),
            "recordings of calls never placed: {unexpected:?}"
        );
        let mut stored = 0;
        for p in &self.placed {
            let recs = &by_number[&p.number];
            assert_eq!(
                recs.len(),
                1,
                "{}: one recording, not {}",
                p.number,
                recs.len()
            );
            let (s, mp3) = &recs[0];
            stored += 1;
            assert_eq!(mp3.len() as u64, s.mp3.bytes, "{}: size", p.number);
            assert_eq!(
                earshot_tests::sha256_bytes(mp3),
                s.mp3.sha256,
                "{}: SHA-256",
                p.number
            );
            let got = s.audio.duration_seconds;
            let talk = p.talk_ms as f64 / 1000.0;
            match p.cut_at {
                None => {
                    assert!(s.complete, "{}: complete, not {:?}", p.number, s.truncated);
                    assert!(
                        (got - talk).abs() <= LENGTH_SLACK,
                        "{}: {got:.2} s stored of a {talk:.2} s call",
                        p.number
                    );
                }
                Some(cut_at) => {
                    assert!(!s.complete, "{}: cut by the pod's deletion", p.number);
                    // Built by the replacement from what the spool held
                    // (recovery's words), not finished by the dying pod.
                    assert!(
                        s.truncated
                            .as_deref()
                            .is_some_and(|t| t.contains("stopped during the call")),
                        "{}: recovered from the spool, not {:?}",
                        p.number,
                        s.truncated
                    );
                    let from = s
                        .recorded
                        .first()
                        .and_then(|i| i.from_at)
                        .expect("when recording began");
                    let before = cut_at
                        .duration_since(from)
                        .unwrap_or_default()
                        .as_secs_f64();
                    // SIGKILL comes after the grace period, once the
                    // kubelet acts on the deletion (a second or two).
                    assert!(
                        got >= before - CRASH_LOSS && got <= before + GRACE + 3.0,
                        "{}: {got:.2} s stored; {before:.2} s were recorded when the deletion was asked",
                        p.number
                    );
                    self.summary.recordings_truncated += 1;
                    self.summary.pod_deletion = Some(PodDeletion {
                        recorded_at_delete_seconds: before,
                        grace_seconds: GRACE,
                        stored_seconds: got,
                        truncated: s.truncated.clone(),
                        lost_at_most_seconds: (before + GRACE - got).max(0.0),
                    });
                }
            }
            let path = self.dir.join(format!("{}.mp3", p.number));
            std::fs::write(&path, mp3).unwrap();
            let (left, right) = earshot_tests::decode_mp3(&path);
            let skip = left.len().min(4000);
            let (l, r) = (&left[skip..], &right[skip.min(right.len())..]);
            assert!(
                earshot_tests::tone_power(l, 440.0) > earshot_tests::tone_power(l, 1000.0) * 10.0,
                "{}: the caller (440 Hz) on the left",
                p.number
            );
            assert!(
                earshot_tests::tone_power(r, 1000.0) > earshot_tests::tone_power(r, 440.0) * 10.0,
                "{}: the callee (1 kHz) on the right",
                p.number
            );
        }
        self.summary.recordings_stored = stored;
        self.summary.recordings_missing = self.placed.len() - stored;
    }
}

fn helm(kubeconfig: &Path, args: &[String]) {
    let out = Command::new("helm")
        .args(args)
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .output()
        .expect("helm");
    assert!(
        out.status.success(),
        "helm {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn policy(ns: &str, name: &str, endpoint: &str, recorder: &str) -> String {
    format!(
        r#"apiVersion: earshot.io/v1alpha1
kind: RecordingPolicy
metadata: {{ name: {name}, namespace: {ns} }}
spec:
  users:
    - {{ extension: "008", mode: Always }}
  retentionDays: 30
  storage:
    endpoint: {endpoint}
    bucket: recordings
    region: garage
    credentialsSecret: {{ name: recordings-s3 }}
  recorder:
    spool: {{ size: 1Gi }}
{recorder}"#
    )
}

#[test]
fn the_chart_on_a_real_node_records_calls_from_outside_the_cluster() {
    let started = Instant::now();
    let tmp = TempDir::new("node-e2e");
    let c = Cluster::start(tmp.path());
    let n = c.net.index;
    let garage = Garage::start_on(
        &tmp.path().join("garage"),
        "recordings",
        IpAddr::V4(c.net.host_ip),
    );
    let pbx = c.net.outside(1);
    let trunk = c.net.outside(2);
    let images = std::fs::read_dir(earshot_tests::node::images_dir())
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_suffix(".tar").map(str::to_owned)
        })
        .collect();
    let mut s = Suite {
        dir: tmp.path().join("calls"),
        c,
        garage,
        pbx,
        trunk,
        placed: Vec::new(),
        uas: None,
        summary: Summary {
            nodes: 1,
            images_built: images,
            ..Summary::default()
        },
        started,
        next_port: 7000,
    };
    std::fs::create_dir_all(&s.dir).unwrap();
    let external = s.c.net.external_ip();
    let internal = s.c.net.node_ip;

    // The platform: spool volumes, the node's public address, the chart.
    s.c.local_volumes(4, "2Gi");
    s.must(
        &[
            "annotate",
            "node",
            NODE_NAME,
            &format!("earshot.io/external-address={external}"),
        ],
        None,
    );
    s.must(&["create", "namespace", "earshot-system"], None);
    s.must(
        &["apply", "-f", "-"],
        Some(&format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{ name: earshot-lifecycle, namespace: earshot-system }}\nstringData:\n  accessKeyId: {}\n  secretAccessKey: {}\n",
            s.garage.key_id, s.garage.secret
        )),
    );
    let endpoint = s.garage.endpoint.clone();
    helm(
        &s.c.cp.kubeconfig,
        &[
            "install".into(),
            "earshot".into(),
            repo().join("charts/earshot").display().to_string(),
            "--namespace".into(),
            "earshot-system".into(),
            "--set".into(),
            "operator.image.repository=localhost/earshot-operator".into(),
            "--set".into(),
            "operator.image.tag=dev".into(),
            "--set".into(),
            "operator.image.pullPolicy=Never".into(),
            "--set".into(),
            "operator.replicas=1".into(),
            "--set".into(),
            "recorder.image.repository=localhost/earshot-recorder".into(),
            "--set".into(),
            "recorder.image.tag=dev".into(),
            "--set".into(),
            format!("storageEndpoints[0].url={endpoint}"),
            "--set".into(),
            "storageEndpoints[0].lifecycleCredentialsSecret=earshot-lifecycle".into(),
        ],
    );
    wait("the operator pod Ready", 120, || {
        let pods = s.json(&["get", "pods", "-n", "earshot-system"])?;
        let ready = pods["items"].as_array()?.iter().any(|p| {
            p["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        });
        ready.then_some(())
    });
    s.note_ready_pods();
    // The node joins the media pool: labelled, and tainted so only what
    // tolerates it lands there from now on.
    s.must(&["label", "node", NODE_NAME, "earshot.io/media=true"], None);
    s.must(
        &[
            "taint",
            "node",
            NODE_NAME,
            "earshot.io/media=true:NoSchedule",
        ],
        None,
    );

    // The tenant: a Secret with the recorder's key and a host-network policy
    // whose PBX and trunk are outside; the host (the node network's other
    // end) is an internal peer.
    s.must(&["create", "namespace", "acme"], None);
    s.must(
        &["apply", "-f", "-"],
        Some(&format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{ name: recordings-s3, namespace: acme }}\nstringData:\n  AWS_ACCESS_KEY_ID: {}\n  AWS_SECRET_ACCESS_KEY: {}\n",
            s.garage.key_id, s.garage.secret
        )),
    );
    let (pbx_ip, trunk_ip, host_ip) = (s.pbx.ip, s.trunk.ip, s.c.net.host_ip);
    let office = |rtp_max: u16| {
        policy(
            "acme",
            "office",
            &endpoint,
            &format!(
                r#"    rtpPorts: {{ min: 20000, max: {rtp_max} }}
    httpPort: 9190
    network:
      mode: Host
      internalNetworks: ["198.18.{n}.0/25"]
      kernelFastPath: Required
{PLACEMENT}    peers:
      - {{ name: pbx, sources: ["{pbx_ip}/32", "{host_ip}/32"], nextHop: "{trunk_ip}:5060" }}
      - {{ name: trunk, sources: ["{trunk_ip}/32"], nextHop: "{pbx_ip}:5060" }}
"#
            ),
        )
    };
    s.must(&["apply", "-f", "-"], Some(&office(20199)));
    wait("policy office Ready with its replica", 180, || {
        let (status, _, _) = s.condition("acme", "office", "Ready");
        let st = s.policy_status("acme", "office");
        (status == "True" && st["serviceAddress"].as_str().is_some_and(|a| !a.is_empty()))
            .then_some(())
    });
    s.note_ready_pods();
    // The policy's status says what relays each replica's streams: the
    // kernel fast path, as the recorder reports it.
    wait("the replica's relay in the status", 60, || {
        let st = s.policy_status("acme", "office");
        (st["replicas"][0]["relay"] == "kernel").then_some(())
    });
    // The status gives the node's external address, and each replica's
    // two faces (`kubectl get rp -o wide`).
    let st = s.policy_status("acme", "office");
    assert_eq!(st["serviceAddress"], format!("{external}:5060"), "{st}");
    assert_eq!(st["replicas"][0]["internalAddress"], internal.to_string());
    assert_eq!(st["replicas"][0]["externalAddress"], external.to_string());
    let wide = s.must(&["get", "rp", "-n", "acme", "-o", "wide"], None);
    assert!(
        wide.contains(&format!(
            "earshot-office-0@{NODE_NAME} {internal}/{external} ready"
        )),
        "{wide}"
    );
    // The spool claim is bound to a local volume.
    assert_eq!(
        s.must(
            &[
                "get",
                "pvc",
                "spool-earshot-office-0",
                "-n",
                "acme",
                "-o",
                "jsonpath={.status.phase}"
            ],
            None
        ),
        "Bound"
    );
    // The headless Service names the replica: what DNS serves as SRV
    // `_sip-udp._udp.earshot-office.acme.svc` (the EndpointSlice).
    wait("the headless Service's endpoint", 60, || {
        let slices = s.json(&[
            "get",
            "endpointslices",
            "-n",
            "acme",
            "-l",
            "kubernetes.io/service-name=earshot-office",
        ])?;
        let ep = &slices["items"][0]["endpoints"][0];
        (ep["hostname"] == "earshot-office-0" && ep["addresses"][0] == internal.to_string())
            .then_some(())
    });
    let sip = st["serviceAddress"].as_str().unwrap().to_owned();
    s.start_trunk();

    // A second host-network policy on the same nodes with the same ports:
    // refused, naming the first, which goes on untouched.
    s.must(
        &["apply", "-f", "-"],
        Some(&policy(
            "acme",
            "annex",
            &endpoint,
            &format!(
                "    network: {{ mode: Host }}\n{PLACEMENT}    peers:\n      - {{ name: pbx, sources: [\"{pbx_ip}/32\"], nextHop: \"{trunk_ip}:5060\" }}\n"
            ),
        )),
    );
    wait("the clashing policy refused", 60, || {
        let (status, reason, message) = s.condition("acme", "annex", "RecorderAvailable");
        (status == "False" && reason == "PortClash" && message.contains("acme/office"))
            .then_some(())
    });
    assert!(
        s.kubectl(&["get", "statefulset", "earshot-annex", "-n", "acme"], None)
            .is_err(),
        "nothing applied for the clashing policy"
    );
    s.must(&["delete", "rp", "annex", "-n", "acme"], None);

    // Calls from outside, three at once.
    let calls: Vec<_> = (1..=3)
        .map(|i| {
            let number = format!("02010000{i:02}");
            s.expect(&number, 4000, None);
            s.call(&sip, &number, 4000)
        })
        .collect();
    for mut uac in calls {
        uac.wait_success(Duration::from_secs(60));
    }
    // The policy asked for the kernel fast path (`Required`): the pod the
    // operator made (root with CAP_BPF and CAP_NET_ADMIN only, seccomp
    // RuntimeDefault) loaded it at the node's interfaces, and the kernel
    // relayed the calls from outside.
    let metrics = earshot_tests::http_get(std::net::SocketAddr::from((internal, 9190)), "/metrics")
        .expect("the recorder's metrics on the node's address")
        .1;
    assert_eq!(
        earshot_tests::parse_metric(&metrics, "earshot_kernel_fast_path{state=\"active\"}"),
        1.0,
        "{metrics}"
    );
    let relayed =
        earshot_tests::parse_metric(&metrics, "earshot_kernel_packets_total{result=\"relayed\"}");
    assert!(
        relayed > 400.0,
        "the kernel relayed {relayed} packets of three 4 s calls"
    );

    // Split horizon: a PBX on the internal network (the host) calls the
    // trunk outside through the node's internal address; each side is
    // told the address it reaches, or its media would have nowhere to go.
    {
        let number = "0201000010";
        s.expect(number, 3000, None);
        let mut uac = s.call_from(
            (None, IpAddr::V4(host_ip)),
            &format!("{internal}:5060"),
            number,
            3000,
        );
        uac.wait_success(Duration::from_secs(60));
    }

    // A recorder pod deleted during a call (1 s grace: no time to drain):
    // its replacement, same name and spool, uploads the truncated recording.
    {
        let number = "0201000020";
        let mut uac = s.call(&sip, number, 12_000);
        std::thread::sleep(Duration::from_secs(5));
        let uid = s.c.pod_field("acme", "earshot-office-0", "{.metadata.uid}");
        s.must(
            &[
                "delete",
                "pod",
                "earshot-office-0",
                "-n",
                "acme",
                "--grace-period=1",
                "--wait=false",
            ],
            None,
        );
        // Killed at the latest when the grace period ends.
        s.expect(
            number,
            12_000,
            Some(SystemTime::now() + Duration::from_secs(1)),
        );
        wait("the replacement recorder Ready", 120, || {
            let now = s.c.pod_field("acme", "earshot-office-0", "{.metadata.uid}");
            (!now.is_empty() && now != uid && s.pod_ready("acme", "earshot-office-0")).then_some(())
        });
        s.note_ready_pods();
        uac.stop();
    }

    // A change the recorder cannot reload (the RTP range) rolls the pod;
    // status follows, and calls go on through the new one.
    {
        let before = s.c.pod_field("acme", "earshot-office-0", "{.metadata.uid}");
        let annotation = |s: &Suite| {
            s.must(
                &[
                    "get",
                    "statefulset",
                    "earshot-office",
                    "-n",
                    "acme",
                    "-o",
                    "jsonpath={.spec.template.metadata.annotations.earshot\\.io/restart-config}",
                ],
                None,
            )
        };
        let old = annotation(&s);
        s.must(&["apply", "-f", "-"], Some(&office(20179)));
        wait("the pod rolled to the new configuration", 180, || {
            let uid = s.c.pod_field("acme", "earshot-office-0", "{.metadata.uid}");
            (annotation(&s) != old
                && !uid.is_empty()
                && uid != before
                && s.pod_ready("acme", "earshot-office-0"))
            .then_some(())
        });
        wait("status ReplicasReady after the roll", 120, || {
            let (status, reason, _) = s.condition("acme", "office", "RecorderAvailable");
            (status == "True" && reason == "ReplicasReady").then_some(())
        });
        s.note_ready_pods();
        let number = "0201000030";
        s.expect(number, 3000, None);
        let mut uac = s.call(&sip, number, 3000);
        uac.wait_success(Duration::from_secs(60));
    }

    // Pod Security baseline in a tenant namespace: host network is refused
    // with a condition that says why (no pod could start there); the
    // pod-network recorder runs there, hardened as it is.
    {
        s.must(&["create", "namespace", "tenant-b"], None);
        s.must(
            &[
                "label",
                "namespace",
                "tenant-b",
                "pod-security.kubernetes.io/enforce=baseline",
            ],
            None,
        );
        s.must(
            &["apply", "-f", "-"],
            Some(&format!(
                "apiVersion: v1\nkind: Secret\nmetadata: {{ name: recordings-s3, namespace: tenant-b }}\nstringData:\n  AWS_ACCESS_KEY_ID: {}\n  AWS_SECRET_ACCESS_KEY: {}\n",
                s.garage.key_id, s.garage.secret
            )),
        );
        let peers = format!(
            "    peers:\n      - {{ name: pbx, sources: [\"{host_ip}/32\"], nextHop: \"{host_ip}:5060\" }}\n"
        );
        s.must(
            &["apply", "-f", "-"],
            Some(&policy(
                "tenant-b",
                "hosted",
                &endpoint,
                &format!("    network: {{ mode: Host }}\n{peers}"),
            )),
        );
        wait("host network refused under baseline", 60, || {
            let (status, reason, message) = s.condition("tenant-b", "hosted", "RecorderAvailable");
            (status == "False" && reason == "HostNetworkForbidden" && message.contains("baseline"))
                .then_some(())
        });
        assert!(
            s.kubectl(
                &["get", "statefulset", "earshot-hosted", "-n", "tenant-b"],
                None
            )
            .is_err(),
            "nothing applied for a policy no pod of could start"
        );
        s.must(
            &["apply", "-f", "-"],
            Some(&policy(
                "tenant-b",
                "pods",
                &endpoint,
                &format!("{PLACEMENT}{peers}"),
            )),
        );
        wait("the pod-network recorder Ready under baseline", 180, || {
            s.pod_ready("tenant-b", "earshot-pods-0").then_some(())
        });
        // Its peer is outside the cluster's networks: said in status.
        wait("a warning about the peer outside", 60, || {
            let (status, _, message) = s.condition("tenant-b", "pods", "RecorderAvailable");
            (status == "True" && message.contains("warning: peers pbx")).then_some(())
        });
        s.note_ready_pods();
    }

    // A drain with calls in progress: the recorder gets SIGTERM, lets
    // these finish and uploads them before it goes.
    {
        let drains: Vec<_> = (1..=2)
            .map(|i| {
                let number = format!("02010000{}", 40 + i);
                s.expect(&number, 8000, None);
                s.call(&sip, &number, 8000)
            })
            .collect();
        std::thread::sleep(Duration::from_secs(3));
        s.must(
            &[
                "drain",
                NODE_NAME,
                "--ignore-daemonsets",
                "--delete-emptydir-data",
                "--timeout=180s",
            ],
            None,
        );
        for mut uac in drains {
            uac.wait_success(Duration::from_secs(60));
        }
    }

    s.oracle();
    if let Some(mut t) = s.uas.take() {
        t.stop();
    }
}
