//! The real node runs the project's own image: a control plane, one node
//! (tests/src/node.rs), and pods of `localhost/earshot-recorder:dev` that
//! exit 0, and that pass a readiness probe against the recorder's `/readyz`.
//!
//! Needs root and what `scripts/node.sh` and `scripts/images.sh` build.

use std::time::Duration;

use earshot_tests::TempDir;
use earshot_tests::node::{Cluster, RECORDER_IMAGE};

#[test]
fn the_recorder_image_runs_on_a_real_node() {
    let tmp = TempDir::new("node");
    let c = Cluster::start(tmp.path());

    // A container of the image runs and exits 0.
    c.cp.kubectl_result(
        &["apply", "-f", "-"],
        Some(&format!(
            r#"apiVersion: v1
kind: Pod
metadata: {{ name: recorder-help, namespace: default }}
spec:
  restartPolicy: Never
  containers:
    - name: recorder
      image: {RECORDER_IMAGE}
      imagePullPolicy: Never
      args: ["--help"]
"#
        )),
    )
    .expect("create the pod");
    c.wait_for(Duration::from_secs(60), "recorder-help Succeeded", || {
        c.pod_field("default", "recorder-help", "{.status.phase}") == "Succeeded"
    });
    assert_eq!(
        c.pod_field(
            "default",
            "recorder-help",
            "{.status.containerStatuses[0].state.terminated.exitCode}"
        ),
        "0"
    );

    // A recorder with a minimal configuration becomes Ready through its probe.
    let peer = c.net.host_ip;
    c.cp.kubectl_result(
        &["apply", "-f", "-"],
        Some(&format!(
            r#"apiVersion: v1
kind: ConfigMap
metadata: {{ name: recorder, namespace: default }}
data:
  recorder.yaml: |
    sip: {{ listen: "0.0.0.0:5060" }}
    advertisedAddress: 127.0.0.1
    rtp: {{ bind: 0.0.0.0, portMin: 40000, portMax: 40009 }}
    http: {{ listen: "0.0.0.0:9090" }}
    peers:
      - {{ name: pbx, sources: ["{peer}/32"], nextHop: "{peer}:5060" }}
    users: []
    spool: {{ dir: /spool }}
    storage: {{ filesystem: {{ path: /store }}, prefix: "acme/office/" }}
---
apiVersion: v1
kind: Pod
metadata: {{ name: recorder, namespace: default }}
spec:
  containers:
    - name: recorder
      image: {RECORDER_IMAGE}
      imagePullPolicy: Never
      args: ["--config", "/etc/earshot/recorder.yaml"]
      readinessProbe:
        httpGet: {{ path: /readyz, port: 9090 }}
        periodSeconds: 1
      volumeMounts:
        - {{ name: config, mountPath: /etc/earshot }}
        - {{ name: spool, mountPath: /spool }}
        - {{ name: store, mountPath: /store }}
  volumes:
    - {{ name: config, configMap: {{ name: recorder }} }}
    - {{ name: spool, emptyDir: {{}} }}
    - {{ name: store, emptyDir: {{}} }}
"#
        )),
    )
    .expect("create the recorder");
    c.wait_for(Duration::from_secs(60), "recorder Ready", || {
        c.pod_field(
            "default",
            "recorder",
            "{.status.conditions[?(@.type==\"Ready\")].status}",
        ) == "True"
    });
}
