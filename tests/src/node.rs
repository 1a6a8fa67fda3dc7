//! One real Kubernetes node beside the test control plane: kube-scheduler,
//! containerd (with Debian's runc and CNI plugins), kubelet and kube-proxy,
//! built by `scripts/node.sh`, running the images `scripts/images.sh` builds.
//!
//! The node lives in namespaces and cgroups made for it by
//! `tests/node/run.sh` (which this module drives; it can be run by hand the
//! same way):
//! * a network namespace `earshot-node-N` with **no default route**: a veth
//!   pair to the host (host end 198.18.N.1/32, where the API server listens;
//!   node end 198.18.N.2/32, the node's InternalIP) and the pods' bridge
//!   `cni0` (198.19.N.0/24). Pods get routes to the service range and
//!   198.18.N.0/24 only. The host gets a route to 198.19.N.0/24 through the
//!   veth (the API server's replies to pods). Nothing else is addressed.
//! * a mount namespace of its own (slave of the host's): containerd's
//!   overlay mounts, the pods' volumes and network-namespace pins, and its
//!   private /run, /var/lib and /var/log (directories under the node's
//!   dir) never show on the host, and vanish with its last process.
//! * cgroups `/earshot-node-N` in every hierarchy (kubelet's `cgroupRoot` is
//!   `/earshot-node-N/pods`); stopping kills every process in them.
//!
//! Kernel settings stay as the machine has them: kubelet runs with
//! `protectKernelDefaults: true` (it only checks them), and inside the
//! node's mount namespace the ones it checks and this machine has otherwise
//! (`kernel.panic_on_oops`, `kernel.panic`, `vm.overcommit_memory`) read as
//! kubelet wants them, from files bound over `/proc/sys/...` there.
//! cgroup v1 machines: `failCgroupV1: false`, `cgroupDriver: cgroupfs`.
//! Without CAP_SYS_RESOURCE (these sandboxes), containerd's
//! `restrict_oom_score_adj` keeps runc from failing on kubelet's negative
//! OOM scores.
//!
//! Everything is stopped and removed when the value drops.

use std::ffi::OsStr;
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::controlplane::{self, ControlPlane};

/// The node's name (`--hostname-override`).
pub const NODE_NAME: &str = "earshot-node";

/// The sandbox image containerd pins (`scripts/images.sh` builds it).
pub const PAUSE_IMAGE: &str = "localhost/pause:3.10.1";

/// The recorder's image (`scripts/images.sh`).
pub const RECORDER_IMAGE: &str = "localhost/earshot-recorder:dev";

/// The operator's image (`scripts/images.sh`).
pub const OPERATOR_IMAGE: &str = "localhost/earshot-operator:dev";

fn script() -> PathBuf {
    crate::repo().join("tests/node/run.sh")
}

/// Where `scripts/images.sh` leaves the image archives.
pub fn images_dir() -> PathBuf {
    std::env::var_os("EARSHOT_IMAGES")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::repo().join("target/images"))
}

/// The image archives to import: the sandbox's, then the project's that
/// exist.
pub fn image_archives() -> Vec<PathBuf> {
    let dir = images_dir();
    let pause = dir.join("pause.tar");
    assert!(
        pause.exists(),
        "{} missing: run scripts/node.sh and scripts/images.sh",
        pause.display()
    );
    let mut out = vec![pause];
    for name in ["earshot-recorder", "earshot-operator"] {
        let p = dir.join(format!("{name}.tar"));
        if p.exists() {
            out.push(p);
        }
    }
    out
}

fn run_script(args: &[&OsStr]) -> Result<(), String> {
    let out = Command::new("bash")
        .arg(script())
        .args(args)
        .output()
        .map_err(|e| format!("run.sh: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "run.sh {args:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// The node's network: its namespace, the veth pair and the pod bridge.
/// Made before the control plane, whose API server listens on `host_ip`.
pub struct Network {
    /// The node's working directory (`run.sh` state, logs, configs).
    pub dir: PathBuf,
    /// N: names and addresses derive from it.
    pub index: u8,
    /// The network namespace (`/run/netns/<netns>`).
    pub netns: String,
    /// The host end of the veth: the API server's address.
    pub host_ip: Ipv4Addr,
    /// The node end: the node's InternalIP.
    pub node_ip: Ipv4Addr,
    /// The pods' range (CNI host-local on `cni0`).
    pub pod_net: String,
    // Held while the index is in use, across test processes.
    _lock: File,
}

impl Network {
    /// Takes a free index (a lock under `$TMPDIR/earshot-nodes`) and makes
    /// the network in `dir`.
    pub fn create(dir: &Path) -> Network {
        std::fs::create_dir_all(dir).unwrap();
        let locks = std::env::temp_dir().join("earshot-nodes");
        std::fs::create_dir_all(&locks).unwrap();
        let start = (std::process::id() % 255) as u8;
        let (index, lock) = (0..255u16)
            .map(|i| ((start as u16 + i) % 255) as u8)
            .find_map(|n| {
                let f = File::create(locks.join(n.to_string())).ok()?;
                f.try_lock().ok()?;
                Some((n, f))
            })
            .expect("a free node index (0..254)");
        let net = Network {
            dir: dir.to_owned(),
            index,
            netns: format!("earshot-node-{index}"),
            host_ip: Ipv4Addr::new(198, 18, index, 1),
            node_ip: Ipv4Addr::new(198, 18, index, 2),
            pod_net: format!("198.19.{index}.0/24"),
            _lock: lock,
        };
        let n = index.to_string();
        if let Err(e) = run_script(&[OsStr::new("network"), dir.as_os_str(), OsStr::new(&n)]) {
            panic!("the node's network: {e}");
        }
        net
    }

    /// The control plane a node needs: the API server on `host_ip`,
    /// kube-controller-manager with all its default controllers
    /// (StatefulSet, PV binder, node lifecycle, garbage collector, ...), and
    /// what pods need of the API server: the `kubernetes` Service's
    /// endpoint kept (`lease`), service-account tokens mounted (the
    /// ServiceAccount admission plugin), privileged pods allowed, kubelet
    /// reached by its InternalIP (logs, exec).
    pub fn control_plane_options(&self) -> controlplane::Options {
        controlplane::Options {
            address: IpAddr::V4(self.host_ip),
            controllers: "*".to_owned(),
            apiserver_args: vec![
                "--endpoint-reconciler-type=lease".to_owned(),
                "--disable-admission-plugins=".to_owned(),
                "--allow-privileged=true".to_owned(),
                "--kubelet-preferred-address-types=InternalIP".to_owned(),
            ],
        }
    }

    /// The node's external address: its end of the second network, where
    /// hosts outside the cluster reach it (`outside`).
    pub fn external_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, self.index, 129)
    }

    /// A host outside the cluster, number `k` (0..60): a network namespace
    /// on the node's second network that reaches the node's external
    /// address and nothing else. Removed with the node.
    pub fn outside(&self, k: u8) -> Outside {
        let n = self.index.to_string();
        let k = k.to_string();
        let out = Command::new("bash")
            .arg(script())
            .args([OsStr::new("outside"), self.dir.as_os_str()])
            .args([&n, &k])
            .output()
            .expect("run.sh outside");
        assert!(
            out.status.success(),
            "run.sh outside: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let mut words = text.split_whitespace();
        Outside {
            netns: words.next().expect("netns").to_owned(),
            ip: words.next().and_then(|w| w.parse().ok()).expect("address"),
        }
    }

    fn stop(&self) {
        let n = self.index.to_string();
        if let Err(e) = run_script(&[OsStr::new("stop"), self.dir.as_os_str(), OsStr::new(&n)]) {
            eprintln!("stopping the node: {e}");
        }
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A host outside the cluster (`Network::outside`).
#[derive(Debug, Clone)]
pub struct Outside {
    /// Its network namespace (for `ip netns exec`).
    pub netns: String,
    /// Its address.
    pub ip: Ipv4Addr,
}

/// The node's processes: containerd, kubelet, kube-proxy (in its
/// namespaces) and kube-scheduler (on the host).
pub struct Node {
    /// The node's working directory; logs in `logs/`.
    pub dir: PathBuf,
    /// containerd's socket (for `ctr -n k8s.io`).
    pub containerd: PathBuf,
    index: u8,
}

impl Node {
    /// Starts the node on `net` against `cp` (started with
    /// `net.control_plane_options()`), imports `images` (docker archives)
    /// and waits until the node is Ready.
    pub fn start(net: &Network, cp: &ControlPlane, images: &[PathBuf]) -> Node {
        let n = net.index.to_string();
        let mut args = vec![
            OsStr::new("start"),
            net.dir.as_os_str(),
            OsStr::new(&n),
            cp.kubeconfig.as_os_str(),
        ];
        args.extend(images.iter().map(|p| p.as_os_str()));
        let node = Node {
            dir: net.dir.clone(),
            containerd: net.dir.join("containerd/containerd.sock"),
            index: net.index,
        };
        if let Err(e) = run_script(&args) {
            panic!("starting the node: {e}\n{}", node.log_tail("containerd"));
        }
        node.wait_ready(cp, Duration::from_secs(90));
        node
    }

    /// The last lines of one of the node's logs (`kubelet`, `containerd`,
    /// `kube-proxy`, `kube-scheduler`).
    pub fn log_tail(&self, name: &str) -> String {
        let text = std::fs::read_to_string(self.dir.join("logs").join(format!("{name}.log")))
            .unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        format!(
            "--- {name}.log\n{}",
            lines[lines.len().saturating_sub(40)..].join("\n")
        )
    }

    fn wait_ready(&self, cp: &ControlPlane, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let ready = cp
                .kubectl_result(
                    &[
                        "get",
                        "node",
                        NODE_NAME,
                        "-o",
                        "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
                    ],
                    None,
                )
                .is_ok_and(|s| s.trim() == "True");
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node {NODE_NAME} not Ready after {timeout:?}\n{}\n{}",
                self.log_tail("kubelet"),
                self.log_tail("containerd")
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// The node's index (its network's).
    pub fn index(&self) -> u8 {
        self.index
    }
}

/// A control plane with one real node: made in order (network, control
/// plane, node) and dropped in reverse.
pub struct Cluster {
    // Field order is drop order: the node's processes first (the script's
    // `stop` also removes the network; `Network`'s drop repeats it
    // harmlessly), then the control plane, then the index lock.
    /// The node.
    pub node: Node,
    /// The control plane (admin kubeconfig in `cp.kubeconfig`).
    pub cp: ControlPlane,
    /// The node's network.
    pub net: Network,
}

impl Cluster {
    /// Starts everything under `dir` (`dir/cp`, `dir/node`) with the image
    /// archives of `image_archives()`, and waits until the node is Ready
    /// and the `default` namespace's ServiceAccount exists (pods are
    /// refused before it does).
    pub fn start(dir: &Path) -> Cluster {
        let net = Network::create(&dir.join("node"));
        let cp = ControlPlane::start_with(&dir.join("cp"), &net.control_plane_options());
        let node = Node::start(&net, &cp, &image_archives());
        let cluster = Cluster { node, cp, net };
        cluster.wait_for(
            Duration::from_secs(60),
            "the default ServiceAccount",
            || {
                cluster
                    .cp
                    .kubectl_result(&["get", "serviceaccount", "default", "-n", "default"], None)
                    .is_ok()
            },
        );
        cluster
    }

    /// Polls `ok` every 250 ms until it holds; panics after `timeout`.
    pub fn wait_for(&self, timeout: Duration, what: &str, mut ok: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        while !ok() {
            assert!(
                Instant::now() < deadline,
                "{what}: not after {timeout:?}\n{}",
                self.node.log_tail("kubelet")
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// `count` local persistent volumes of `size` on the node, in the
    /// StorageClass `earshot-local` (the cluster's default; bound when a
    /// pod that claims one is scheduled), as a platform without a
    /// provisioner offers them. Directories under the node's dir.
    pub fn local_volumes(&self, count: usize, size: &str) {
        let mut yaml = String::from(
            "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata:\n  name: earshot-local\n  annotations: {storageclass.kubernetes.io/is-default-class: \"true\"}\nprovisioner: kubernetes.io/no-provisioner\nvolumeBindingMode: WaitForFirstConsumer\nreclaimPolicy: Retain\n",
        );
        for i in 0..count {
            let path = self.net.dir.join("volumes").join(format!("pv-{i}"));
            std::fs::create_dir_all(&path).unwrap();
            yaml.push_str(&format!(
                "---\napiVersion: v1\nkind: PersistentVolume\nmetadata: {{ name: local-{i} }}\nspec:\n  capacity: {{ storage: {size} }}\n  accessModes: [ReadWriteOnce]\n  persistentVolumeReclaimPolicy: Retain\n  storageClassName: earshot-local\n  local: {{ path: {} }}\n  nodeAffinity:\n    required:\n      nodeSelectorTerms:\n        - matchExpressions:\n            - {{ key: kubernetes.io/hostname, operator: In, values: [{NODE_NAME}] }}\n",
                path.display()
            ));
        }
        self.cp
            .kubectl_result(&["apply", "-f", "-"], Some(&yaml))
            .unwrap_or_else(|e| panic!("local volumes: {e}"));
    }

    /// A pod's `jsonpath` field (empty when the pod or field is missing).
    pub fn pod_field(&self, namespace: &str, pod: &str, jsonpath: &str) -> String {
        self.cp
            .kubectl_result(
                &[
                    "get",
                    "pod",
                    pod,
                    "-n",
                    namespace,
                    "-o",
                    &format!("jsonpath={jsonpath}"),
                ],
                None,
            )
            .unwrap_or_default()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Node processes, mounts, cgroups and netns before the control
        // plane, so nothing talks to a dying API server.
        self.net.stop();
    }
}
