//! A real Kubernetes control plane on loopback, as controller-runtime's
//! envtest runs one: etcd, kube-apiserver (generated serving certificate,
//! service-account keys, RBAC authorization, an admin token, an audit log
//! of every request) and kube-controller-manager with the garbage
//! collector, deployment, replicaset, namespace, serviceaccount and
//! clusterrole-aggregation controllers. No scheduler or kubelet: pods stay
//! Pending. Built from Go modules by `scripts/controlplane.sh`; everything
//! started here is stopped when the value drops.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::free_ports;

/// The pinned Kubernetes release (`tests/controlplane/go.mod`).
pub const VERSION: &str = "v1.35.4";

/// Where `scripts/controlplane.sh` installs the binaries.
pub fn bin_dir() -> PathBuf {
    std::env::var_os("EARSHOT_CONTROLPLANE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(format!("/usr/local/lib/earshot-controlplane/{VERSION}")))
        .join("bin")
}

/// The admin's bearer token (group `system:masters`).
pub const ADMIN_TOKEN: &str = "earshot-admin-token-for-tests";

/// The kube-controller-manager controllers `ControlPlane::start` runs.
pub const DEFAULT_CONTROLLERS: &str = "garbage-collector-controller,deployment-controller,replicaset-controller,namespace-controller,serviceaccount-controller,clusterrole-aggregation-controller";

/// How `ControlPlane::start_with` differs from `ControlPlane::start`; the
/// default is exactly what `start` does.
#[derive(Debug, Clone)]
pub struct Options {
    /// The address kube-apiserver listens on and advertises (127.0.0.1).
    /// A real node (`crate::node`) needs one it can reach from its network
    /// namespace: the host end of its veth.
    pub address: std::net::IpAddr,
    /// kube-controller-manager's `--controllers` (`DEFAULT_CONTROLLERS`;
    /// `*` for all of its default ones).
    pub controllers: String,
    /// More kube-apiserver flags, after the usual ones: a flag given again
    /// here overrides it (its last value wins).
    pub apiserver_args: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            address: std::net::IpAddr::from([127, 0, 0, 1]),
            controllers: DEFAULT_CONTROLLERS.to_owned(),
            apiserver_args: Vec::new(),
        }
    }
}

/// A running control plane.
pub struct ControlPlane {
    /// Its working directory: data, certificates, logs, kubeconfig.
    pub dir: PathBuf,
    /// The API server's address.
    pub api: SocketAddr,
    /// A kubeconfig for the admin.
    pub kubeconfig: PathBuf,
    /// The audit log: one JSON event per request.
    pub audit_log: PathBuf,
    children: Vec<(String, Child)>,
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn spawn(name: &str, dir: &Path, cmd: &mut Command) -> (String, Child) {
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    let child = cmd
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("start {name}: {e} (run scripts/controlplane.sh)"));
    (name.to_owned(), child)
}

impl ControlPlane {
    /// Starts etcd, the API server and the controller manager in `dir` and
    /// waits until the API server is ready.
    pub fn start(dir: &Path) -> ControlPlane {
        ControlPlane::start_with(dir, &Options::default())
    }

    /// `start` with `options`.
    pub fn start_with(dir: &Path, options: &Options) -> ControlPlane {
        let bin = bin_dir();
        assert!(
            bin.join("kube-apiserver").exists(),
            "{} missing: `make test` builds it (scripts/controlplane.sh)",
            bin.display()
        );
        std::fs::create_dir_all(dir).unwrap();
        let ports = free_ports(6);
        let (etcd_client, etcd_peer, api_port, kcm_port) = (ports, ports + 1, ports + 2, ports + 3);
        let api = SocketAddr::new(options.address, api_port);
        // Service-account signing keys, an admin token and an audit policy.
        run(Command::new("openssl")
            .args(["genrsa", "-out"])
            .arg(dir.join("sa.key"))
            .arg("2048"));
        run(Command::new("openssl")
            .args(["rsa", "-pubout", "-in"])
            .arg(dir.join("sa.key"))
            .arg("-out")
            .arg(dir.join("sa.pub")));
        std::fs::write(
            dir.join("tokens.csv"),
            format!("{ADMIN_TOKEN},admin,admin-uid,system:masters\n"),
        )
        .unwrap();
        std::fs::write(
            dir.join("audit-policy.yaml"),
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n  - level: Metadata\n",
        )
        .unwrap();
        let mut children = vec![spawn(
            "etcd",
            dir,
            Command::new(bin.join("etcd"))
                .arg("--data-dir")
                .arg(dir.join("etcd"))
                .args([
                    "--name",
                    "default",
                    "--listen-client-urls",
                    &format!("http://127.0.0.1:{etcd_client}"),
                    "--advertise-client-urls",
                    &format!("http://127.0.0.1:{etcd_client}"),
                    "--listen-peer-urls",
                    &format!("http://127.0.0.1:{etcd_peer}"),
                    "--initial-advertise-peer-urls",
                    &format!("http://127.0.0.1:{etcd_peer}"),
                    "--initial-cluster",
                    &format!("default=http://127.0.0.1:{etcd_peer}"),
                    "--listen-metrics-urls",
                    "",
                    "--log-level",
                    "warn",
                ]),
        )];
        let audit_log = dir.join("audit.log");
        children.push(spawn(
            "kube-apiserver",
            dir,
            Command::new(bin.join("kube-apiserver"))
                .arg(format!("--etcd-servers=http://127.0.0.1:{etcd_client}"))
                .arg(format!("--cert-dir={}", dir.join("certs").display()))
                .arg(format!("--secure-port={api_port}"))
                .arg(format!("--bind-address={}", options.address))
                .arg(format!("--advertise-address={}", options.address))
                .args([
                    "--service-cluster-ip-range=10.0.0.0/24",
                    "--service-account-issuer=https://kubernetes.default.svc",
                    "--authorization-mode=RBAC",
                    // As on OpenShift: setting blockOwnerDeletion needs
                    // `update` on the owner's finalizers.
                    "--enable-admission-plugins=OwnerReferencesPermissionEnforcement",
                    "--endpoint-reconciler-type=none",
                    "--audit-log-maxsize=1000",
                ])
                .arg(format!(
                    "--service-account-key-file={}",
                    dir.join("sa.pub").display()
                ))
                .arg(format!(
                    "--service-account-signing-key-file={}",
                    dir.join("sa.key").display()
                ))
                .arg(format!(
                    "--token-auth-file={}",
                    dir.join("tokens.csv").display()
                ))
                .arg(format!(
                    "--audit-policy-file={}",
                    dir.join("audit-policy.yaml").display()
                ))
                .arg(format!("--audit-log-path={}", audit_log.display()))
                // Without a kubelet no pod needs a token; a repeated
                // list flag would add to this one, not replace it.
                .args(
                    (!options
                        .apiserver_args
                        .iter()
                        .any(|a| a.starts_with("--disable-admission-plugins")))
                    .then_some("--disable-admission-plugins=ServiceAccount"),
                )
                .args(&options.apiserver_args),
        ));
        let kubeconfig = dir.join("kubeconfig");
        let mut cp = ControlPlane {
            dir: dir.to_owned(),
            api,
            kubeconfig: kubeconfig.clone(),
            audit_log,
            children,
        };
        cp.wait_ready();
        cp.write_kubeconfig(&kubeconfig, "admin", ADMIN_TOKEN);
        cp.children.push(spawn(
            "kube-controller-manager",
            dir,
            Command::new(bin.join("kube-controller-manager"))
                .arg(format!("--kubeconfig={}", kubeconfig.display()))
                .arg(format!(
                    "--authentication-kubeconfig={}",
                    kubeconfig.display()
                ))
                .arg(format!(
                    "--authorization-kubeconfig={}",
                    kubeconfig.display()
                ))
                .arg(format!("--secure-port={kcm_port}"))
                .args(["--bind-address=127.0.0.1", "--leader-elect=false"])
                .arg(format!("--controllers={}", options.controllers))
                .arg(format!(
                    "--service-account-private-key-file={}",
                    dir.join("sa.key").display()
                )),
        ));
        cp
    }

    /// The CA bundle the API server's self-signed serving certificate
    /// chains to (the cert file holds the certificate and its CA).
    fn ca_pem(&self) -> Vec<u8> {
        let certs = self.dir.join("certs");
        let file = std::fs::read_dir(&certs)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "crt"))
            .expect("the serving certificate");
        std::fs::read(file).unwrap()
    }

    /// Writes a kubeconfig for `user` authenticating with `token`.
    pub fn write_kubeconfig(&self, path: &Path, user: &str, token: &str) {
        use base64::Engine;
        let ca = base64::engine::general_purpose::STANDARD.encode(self.ca_pem());
        std::fs::write(
            path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: earshot-test\n  cluster:\n    server: https://{}\n    certificate-authority-data: {ca}\nusers:\n- name: {user}\n  user:\n    token: {token}\ncontexts:\n- name: {user}\n  context:\n    cluster: earshot-test\n    user: {user}\ncurrent-context: {user}\n",
                self.api
            ),
        )
        .unwrap();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            // Before the kubeconfig exists (its CA comes from the server).
            let ok = Command::new(bin_dir().join("kubectl"))
                .arg(format!("--server=https://{}", self.api))
                .arg("--insecure-skip-tls-verify")
                .arg(format!("--token={ADMIN_TOKEN}"))
                .args(["get", "--raw", "/readyz"])
                .output()
                .is_ok_and(|o| o.status.success());
            if ok {
                return;
            }
            for (name, c) in &mut self.children {
                if let Ok(Some(status)) = c.try_wait() {
                    panic!(
                        "{name} exited with {status}: {}",
                        std::fs::read_to_string(self.dir.join(format!("{name}.log")))
                            .unwrap_or_default()
                    );
                }
            }
            assert!(
                Instant::now() < deadline,
                "kube-apiserver not ready: {}",
                std::fs::read_to_string(self.dir.join("kube-apiserver.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// `kubectl` against this control plane as the admin; panics on failure.
    pub fn kubectl(&self, args: &[&str]) -> String {
        let out = self.kubectl_result(args, None);
        match out {
            Ok(s) => s,
            Err(e) => panic!("kubectl {args:?}: {e}"),
        }
    }

    /// `kubectl` with optional stdin; stdout, or stderr as the error.
    pub fn kubectl_result(&self, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
        kubectl_with(&self.kubeconfig, args, stdin)
    }
}

/// `kubectl` with a kubeconfig; stdout, or stderr as the error.
pub fn kubectl_with(
    kubeconfig: &Path,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<String, String> {
    use std::io::Write;
    let mut child = Command::new(bin_dir().join("kubectl"))
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        for (_, c) in self.children.iter_mut().rev() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// One request of the audit log.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Audited {
    /// The user (`system:serviceaccount:ns:name`).
    pub user: String,
    /// Kubernetes verb: get, list, watch, create, patch, update, delete.
    pub verb: String,
    /// API group ("" for core).
    pub group: String,
    /// Resource, with `/subresource`.
    pub resource: String,
    /// HTTP status code of the answer.
    pub code: u16,
}

impl ControlPlane {
    /// Every request the audit log holds so far.
    pub fn audited(&self) -> Vec<Audited> {
        std::fs::read_to_string(&self.audit_log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            // A watch is audited when its response starts (it completes
            // only when the watch ends); everything else when it completes.
            .filter(|e| {
                e["stage"] == "ResponseComplete"
                    || (e["stage"] == "ResponseStarted" && e["verb"] == "watch")
            })
            .filter_map(|e| {
                let r = &e["objectRef"];
                let resource = r["resource"].as_str()?;
                let resource = match r["subresource"].as_str() {
                    Some(sub) => format!("{resource}/{sub}"),
                    None => resource.to_owned(),
                };
                Some(Audited {
                    user: e["user"]["username"].as_str()?.to_owned(),
                    verb: e["verb"].as_str()?.to_owned(),
                    group: r["apiGroup"].as_str().unwrap_or("").to_owned(),
                    resource,
                    code: e["responseStatus"]["code"].as_u64().unwrap_or(0) as u16,
                })
            })
            .collect()
    }
}
