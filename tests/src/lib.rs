//! Test harness shared by Earshot's end-to-end suites: free loopback ports,
//! RTP pcap files synthesised from tones and DTMF, SIPp callers and callees
//! from the scenario templates in `tests/sipp/`, and an `earshot-recorder`
//! process with its metrics and event log. Everything runs on 127.0.0.1 and
//! is stopped when the test ends.
#![forbid(unsafe_code)]

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub mod baresip;
pub mod controlplane;
pub mod garage;
pub mod kamailio;
pub mod netns;
pub mod node;
pub mod pcap;
pub mod rtpengine;

/// The repository root.
pub fn repo() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    p.canonicalize().unwrap_or(p)
}

/// Whether a tool is on PATH; tests that need it fail loudly when it is not,
/// since `make test` installs it (scripts/test-deps.sh).
pub fn require(tool: &str) {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "{tool} is not installed: run `make test` (scripts/test-deps.sh installs it)"
    );
}

/// Port blocks of `config/recorder.siprec.example.yaml` (SIP 15062, HTTP
/// 19092, RTP 31400–31599), which a test runs as is.
const FIXED_BLOCKS: [u16; 4] = [15000, 19000, 31400, 31500];

/// A block of consecutive free UDP+TCP ports on 127.0.0.1, reserved for the
/// rest of this process across every test process on the machine.
///
/// Ports are handed out in 100-port blocks below the kernel's ephemeral range
/// (32768+), so no outgoing connection takes one. Each block is reserved by an
/// exclusive lock on `$TMPDIR/earshot-ports/<block>` held until the process
/// exits: a recorder's RTP range is bound lazily, call by call, so probing
/// alone would let a concurrent test hand the same ports to its SIPp.
pub fn free_ports(count: u16) -> u16 {
    const FIRST: u16 = 10_000;
    const BLOCK: u16 = 100;
    const BLOCKS: u16 = (32_700 - FIRST) / BLOCK;
    static HELD: std::sync::Mutex<Vec<std::fs::File>> = std::sync::Mutex::new(Vec::new());
    let dir = std::env::temp_dir().join("earshot-ports");
    std::fs::create_dir_all(&dir).expect("creating the port-lock directory");
    let need = count.max(1).div_ceil(BLOCK);
    let mut held = HELD.lock().unwrap_or_else(|e| e.into_inner());
    // Start where this pid points, so concurrent processes rarely contend.
    let start = (std::process::id() as u16).wrapping_mul(7919) % BLOCKS;
    for step in 0..BLOCKS {
        let first = (start + step) % BLOCKS;
        if first + need > BLOCKS {
            continue;
        }
        // The fixed ports of the example configs a test runs as is
        // (`hold_ports`) are never handed out here: that test would wait
        // on whatever long test holds them.
        if (first..first + need).any(|b| FIXED_BLOCKS.contains(&(FIRST + b * BLOCK))) {
            continue;
        }
        let mut locks = Vec::new();
        for b in first..first + need {
            let path = dir.join((FIRST + b * BLOCK).to_string());
            let Ok(file) = std::fs::File::create(&path) else {
                break;
            };
            if file.try_lock().is_err() {
                break;
            }
            locks.push(file);
        }
        if locks.len() != need as usize {
            continue;
        }
        let base = FIRST + first * BLOCK;
        let bindable = (base..base + count).all(|p| {
            UdpSocket::bind(("127.0.0.1", p)).is_ok()
                && std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()
        });
        if bindable {
            held.extend(locks);
            return base;
        }
    }
    panic!("no block of {count} free ports on 127.0.0.1 below 32700");
}

/// Holds the blocks of ports that `ports` fall in (a config with fixed
/// ports, such as an example config run as is: list its blocks in
/// `FIXED_BLOCKS` so `free_ports` never hands them out), waiting up to a
/// minute for another test that holds them; released when the test
/// process ends.
pub fn hold_ports(ports: &[u16]) {
    static HELD: std::sync::Mutex<Vec<std::fs::File>> = std::sync::Mutex::new(Vec::new());
    let dir = std::env::temp_dir().join("earshot-ports");
    std::fs::create_dir_all(&dir).expect("creating the port-lock directory");
    let mut blocks: Vec<u16> = ports.iter().map(|p| p / 100 * 100).collect();
    blocks.sort_unstable();
    blocks.dedup();
    let deadline = Instant::now() + Duration::from_secs(60);
    for b in blocks {
        let file = std::fs::File::create(dir.join(b.to_string())).unwrap();
        while file.try_lock().is_err() {
            assert!(Instant::now() < deadline, "ports {b}..{} stay held", b + 99);
            std::thread::sleep(Duration::from_millis(200));
        }
        HELD.lock().unwrap_or_else(|e| e.into_inner()).push(file);
    }
}

/// The recordings of a filesystem store under `root`: (MP3 path,
/// sidecar), in name order (oldest first).
pub fn sidecars_in(root: &Path) -> Vec<(PathBuf, serde_json::Value)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "json") {
                let v: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(&p).unwrap()).expect("sidecar is JSON");
                out.push((p.with_extension("mp3"), v));
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// A temporary directory removed at drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates a fresh directory under the system temp dir.
    pub fn new(name: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let p = std::env::temp_dir().join(format!("earshot-{name}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("EARSHOT_KEEP_TEST_FILES").is_none() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A policy user for the recorder config.
pub struct TestUser<'a> {
    /// Extension.
    pub extension: &'a str,
    /// `Always`, `OnDemand` or `Never`.
    pub mode: &'a str,
    /// `*N`, for OnDemand.
    pub shortcode: Option<&'a str>,
}

/// A running `earshot-recorder`.
pub struct RecorderProcess {
    child: Option<Child>,
    /// SIP address.
    pub sip: SocketAddr,
    /// HTTP address.
    pub http: SocketAddr,
    /// Config file.
    pub config: PathBuf,
    /// Event log.
    pub events: PathBuf,
    /// Where its stderr goes.
    pub log: PathBuf,
    /// The filesystem store (when the default storage is used).
    pub store: PathBuf,
    /// The spool directory.
    pub spool: PathBuf,
    /// Extra environment, given again at each restart.
    env: Vec<(String, String)>,
}

impl RecorderProcess {
    /// Writes a config for loopback and starts `binary`; returns when `/readyz` answers 200.
    pub fn start(binary: &Path, dir: &Path, next_hop: SocketAddr, users: &[TestUser]) -> Self {
        Self::start_with(binary, dir, next_hop, users, None, &[])
    }

    /// Like [`start`](Self::start), with a YAML `storage:` value (default: a
    /// directory `store/` beside the config, prefix `acme/office/`) and extra
    /// environment variables (S3 credentials).
    pub fn start_with(
        binary: &Path,
        dir: &Path,
        next_hop: SocketAddr,
        users: &[TestUser],
        storage: Option<&str>,
        env: &[(&str, &str)],
    ) -> Self {
        Self::start_sized(binary, dir, next_hop, users, storage, env, 1020)
    }

    /// Like [`start_with`](Self::start_with), with `rtp_ports` RTP/RTCP ports
    /// (four per concurrent call).
    pub fn start_sized(
        binary: &Path,
        dir: &Path,
        next_hop: SocketAddr,
        users: &[TestUser],
        storage: Option<&str>,
        env: &[(&str, &str)],
        rtp_ports: u16,
    ) -> Self {
        Self::start_configured(binary, dir, next_hop, users, storage, env, rtp_ports, "")
    }

    /// Like [`start_sized`](Self::start_sized), with more top-level YAML
    /// appended to the config (e.g. an `announcement:` section).
    #[allow(clippy::too_many_arguments)]
    pub fn start_configured(
        binary: &Path,
        dir: &Path,
        next_hop: SocketAddr,
        users: &[TestUser],
        storage: Option<&str>,
        env: &[(&str, &str)],
        rtp_ports: u16,
        extra_yaml: &str,
    ) -> Self {
        Self::start_full(
            binary, dir, next_hop, users, storage, env, rtp_ports, extra_yaml, "", "UDP", None,
        )
    }

    /// SIP over TLS: `tls_yaml` is the `sip.tls` value (a flow mapping
    /// with its port, certificate, key and CA), TLS among the transports,
    /// the next hop over `hop_transport`.
    pub fn start_tls(
        binary: &Path,
        dir: &Path,
        next_hop: SocketAddr,
        users: &[TestUser],
        tls_yaml: &str,
        hop_transport: &str,
    ) -> Self {
        Self::start_full(
            binary,
            dir,
            next_hop,
            users,
            None,
            &[],
            1020,
            "",
            &format!(", transports: [UDP, TCP, TLS], tls: {tls_yaml}"),
            hop_transport,
            None,
        )
    }

    /// Like [`start_with`](Self::start_with) (a store, an environment),
    /// with a TLS listener as [`start_tls`](Self::start_tls) gives it; the
    /// next hop over UDP until a test rewrites the config. `fast_path`:
    /// the relay's `kernelFastPath`.
    #[allow(clippy::too_many_arguments)]
    pub fn start_with_tls(
        binary: &Path,
        dir: &Path,
        next_hop: SocketAddr,
        users: &[TestUser],
        storage: Option<&str>,
        env: &[(&str, &str)],
        tls_yaml: &str,
        fast_path: &str,
    ) -> Self {
        Self::start_full(
            binary,
            dir,
            next_hop,
            users,
            storage,
            env,
            1020,
            "",
            &format!(", transports: [UDP, TCP, TLS], tls: {tls_yaml}"),
            "UDP",
            Some(fast_path),
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn start_full(
        binary: &Path,
        dir: &Path,
        next_hop: SocketAddr,
        users: &[TestUser],
        storage: Option<&str>,
        env: &[(&str, &str)],
        rtp_ports: u16,
        extra_yaml: &str,
        sip_extra: &str,
        hop_transport: &str,
        fast_path: Option<&str>,
    ) -> Self {
        // SIP, HTTP, then the RTP/RTCP ports (1020 by default: 255 concurrent calls, split across the shards; ended calls hold theirs for up to 10 s).
        let base = free_ports(rtp_ports + 2);
        let sip = SocketAddr::from(([127, 0, 0, 1], base));
        let http = SocketAddr::from(([127, 0, 0, 1], base + 1));
        let events = dir.join("events.jsonl");
        let users_yaml: String = users
            .iter()
            .map(|u| {
                let code = u
                    .shortcode
                    .map(|c| format!(", shortcode: \"{c}\""))
                    .unwrap_or_default();
                format!(
                    "  - {{ extension: \"{}\", mode: {}{code} }}\n",
                    u.extension, u.mode
                )
            })
            .collect();
        // `EARSHOT_KERNEL_FAST_PATH=Required` runs a suite's recorders
        // with the kernel fast path (make test runs some suites both ways).
        let fast_path = fast_path
            .map(str::to_owned)
            .or_else(|| std::env::var("EARSHOT_KERNEL_FAST_PATH").ok())
            .map(|v| format!(", kernelFastPath: {v}"))
            .unwrap_or_default();
        let yaml = format!(
            "sip: {{ listen: \"{sip}\"{sip_extra} }}\nadvertisedAddress: 127.0.0.1\nrtp: {{ bind: 127.0.0.1, portMin: {}, portMax: {}, allowLocalMedia: true{fast_path} }}\nhttp: {{ listen: \"{http}\" }}\npeers:\n  - {{ name: sipp, sources: [\"127.0.0.1/32\"], nextHop: \"{next_hop}\", nextHopTransport: {hop_transport} }}\nusers:\n{users_yaml}events: {{ path: \"{}\" }}\nshutdownGrace: 30s\nspool: {{ dir: \"{}\" }}\nstorage: {}\n{extra_yaml}",
            base + 2,
            base + 1 + rtp_ports,
            events.display(),
            dir.join("spool").display(),
            storage.unwrap_or(&format!(
                "{{ filesystem: {{ path: \"{}\" }}, prefix: \"acme/office/\" }}",
                dir.join("store").display()
            )),
        );
        Self::launch(binary, dir, &yaml, sip, http, env)
    }

    /// Writes `yaml` as `dir/recorder.yaml` (its events at
    /// `dir/events.jsonl`, spool `dir/spool`, store `dir/store`, as the
    /// config says) and starts `binary` on it; returns when `/readyz` at
    /// `http` answers 200.
    pub fn launch(
        binary: &Path,
        dir: &Path,
        yaml: &str,
        sip: SocketAddr,
        http: SocketAddr,
        env: &[(&str, &str)],
    ) -> Self {
        let config = dir.join("recorder.yaml");
        let events = dir.join("events.jsonl");
        std::fs::write(&config, yaml).unwrap();
        let log = dir.join("recorder.log");
        let child = Command::new(binary)
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start earshot-recorder");
        let mut p = Self {
            child: Some(child),
            sip,
            http,
            config,
            events,
            log,
            store: dir.join("store"),
            spool: dir.join("spool"),
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok((200, _)) = http_get(p.http, "/readyz") {
                return p;
            }
            if let Some(status) = p.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!(
                    "earshot-recorder exited with {status}: {}",
                    std::fs::read_to_string(&p.log).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "earshot-recorder not ready: {}",
                std::fs::read_to_string(&p.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Current value of a metric series, e.g. `earshot_calls_total{result="answered"}`; 0 when absent.
    pub fn metric(&self, series: &str) -> f64 {
        let (_, body) = http_get(self.http, "/metrics").expect("scrape /metrics");
        parse_metric(&body, series)
    }

    /// The whole `/metrics` text.
    pub fn metrics_text(&self) -> String {
        http_get(self.http, "/metrics").expect("scrape /metrics").1
    }

    /// Every event line so far.
    pub fn events(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.events)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("event line is JSON"))
            .collect()
    }

    /// Sends SIGTERM and waits for exit; returns the exit status.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return child.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// Recordings in the filesystem store: (MP3 path, sidecar), oldest first.
    pub fn recordings(&self) -> Vec<(PathBuf, serde_json::Value)> {
        sidecars_in(&self.store)
    }

    /// Waits until `n` recordings are in the filesystem store.
    pub fn wait_recordings(
        &self,
        n: usize,
        timeout: Duration,
    ) -> Vec<(PathBuf, serde_json::Value)> {
        let deadline = Instant::now() + timeout;
        loop {
            let r = self.recordings();
            if r.len() >= n {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {n} recordings stored after {timeout:?}; log:\n{}",
                r.len(),
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills the process with SIGKILL (a crash), without cleanup.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg(c.id().to_string())
                .status();
            let _ = c.wait();
        }
    }

    /// Starts the same binary again on the same config (after a crash).
    pub fn restart(&mut self, binary: &Path) {
        assert!(self.child.is_none(), "still running");
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.log)
            .unwrap();
        self.child = Some(
            Command::new(binary)
                .arg("--config")
                .arg(&self.config)
                .env("RUST_LOG", "info")
                .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("restart earshot-recorder"),
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while !matches!(http_get(self.http, "/readyz"), Ok((200, _))) {
            assert!(
                Instant::now() < deadline,
                "not ready after restart: {}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The recorder's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for RecorderProcess {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A minimal HTTP/1.1 GET on loopback: status and body.
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    http_get_within(addr, path, Duration::from_secs(5))
}

/// [`http_get`] waiting up to `timeout` for the answer.
pub fn http_get_within(
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(timeout))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// The value of one series in Prometheus text; 0 when absent. Label order as exported.
pub fn parse_metric(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok()).flatten()
        })
        .unwrap_or(0.0)
}

/// Which SIPp template to run and how.
pub struct Sipp<'a> {
    /// Template in tests/sipp/.
    pub scenario: &'a str,
    /// Placeholders (`@NAME@`) and their values.
    pub vars: Vec<(&'a str, String)>,
    /// Extra command-line arguments.
    pub args: Vec<String>,
    /// Local SIP port.
    pub port: u16,
    /// Media port.
    pub media_port: u16,
    /// Control port.
    pub control_port: u16,
}

/// A SIPp process.
pub struct SippProcess {
    child: Option<Child>,
    /// Its working directory (logs).
    pub dir: PathBuf,
    name: String,
}

impl<'a> Sipp<'a> {
    /// Renders the scenario into `dir` and starts SIPp there.
    pub fn spawn(self, dir: &Path, name: &str) -> SippProcess {
        self.spawn_at(dir, name, None)
    }

    /// Like `spawn`, inside network namespace `netns` (the machine's own
    /// when `None`) on its address `ip` (a host outside a test's cluster).
    pub fn spawn_in(self, dir: &Path, name: &str, netns: Option<&str>, ip: IpAddr) -> SippProcess {
        self.spawn_at(dir, name, Some((netns, ip)))
    }

    fn spawn_at(self, dir: &Path, name: &str, at: Option<(Option<&str>, IpAddr)>) -> SippProcess {
        require("sipp");
        let template = std::fs::read_to_string(repo().join("tests/sipp").join(self.scenario))
            .expect("scenario template");
        let mut xml = template;
        // Inserted scenario steps first: they carry placeholders of their own.
        let (steps, values): (Vec<_>, Vec<_>) =
            self.vars.iter().partition(|(k, _)| *k == "MIDCALL");
        for (k, v) in steps.into_iter().chain(values) {
            xml = xml.replace(&format!("@{k}@"), v);
        }
        // Defaults for optional placeholders.
        xml = xml
            .replace("@MIDCALL@", "")
            .replace("@NAME@", "Caller")
            .replace("@PT@", "0")
            .replace("@CODEC@", "PCMU")
            .replace("@CLOCK@", "8000")
            .replace("@EVENT_CLOCK@", "8000")
            .replace("@PROFILE@", "RTP/AVP")
            .replace("@SDP_EXTRA@", "");
        // Any `@NAME@` left means the test forgot a value.
        let parts: Vec<&str> = xml.split('@').collect();
        // Only text with an `@` on both sides can be a placeholder.
        let unfilled = parts
            .iter()
            .skip(1)
            .take(parts.len().saturating_sub(2))
            .copied()
            .find(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'));
        assert!(
            unfilled.is_none(),
            "unfilled placeholder @{}@ in {}",
            unfilled.unwrap_or_default(),
            self.scenario
        );
        let work = dir.join(name);
        std::fs::create_dir_all(&work).unwrap();
        let file = work.join(self.scenario);
        std::fs::write(&file, xml).unwrap();
        let ip = at.map_or("127.0.0.1".to_owned(), |(_, ip)| ip.to_string());
        let mut cmd = match at {
            Some((Some(netns), _)) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", netns, "sipp"]);
                c
            }
            _ => Command::new("sipp"),
        };
        cmd.current_dir(&work)
            .arg("-sf")
            .arg(&file)
            .args([
                "-i",
                &ip,
                "-mi",
                &ip,
                "-nostdin",
                "-trace_err",
                "-trace_stat",
                "-fd",
                "1",
            ])
            .args([
                "-p",
                &self.port.to_string(),
                "-mp",
                &self.media_port.to_string(),
                "-cp",
                &self.control_port.to_string(),
            ])
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(work.join("stdout.log")).unwrap())
            .stderr(std::fs::File::create(work.join("stderr.log")).unwrap());
        let child = cmd.spawn().expect("start sipp");
        SippProcess {
            child: Some(child),
            dir: work,
            name: name.to_owned(),
        }
    }
}

impl SippProcess {
    /// Waits for SIPp to finish; panics with its error log when it failed or hung.
    pub fn wait_success(&mut self, timeout: Duration) {
        let child = self.child.as_mut().expect("running");
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "sipp {} did not finish in {timeout:?}:\n{}",
                    self.name,
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        self.child = None;
        assert!(
            status.success(),
            "sipp {} failed ({status}):\n{}",
            self.name,
            self.logs()
        );
    }

    /// Error log and stderr, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for entry in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            let p = entry.path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if name.ends_with("errors.log") || name == "stderr.log" {
                let text = std::fs::read_to_string(&p).unwrap_or_default();
                out.push_str(&format!(
                    "--- {name}\n{}\n",
                    text.chars().take(4000).collect::<String>()
                ));
            }
        }
        out
    }

    /// The last value of a `-trace_stat` CSV column (e.g. `SuccessfulCall(C)`).
    pub fn stat(&self, column: &str) -> Option<u64> {
        let file = std::fs::read_dir(&self.dir)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| p.to_string_lossy().ends_with("_.csv"))?;
        let text = std::fs::read_to_string(file).ok()?;
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next()?.split(';').collect();
        let idx = header.iter().position(|h| *h == column)?;
        lines
            .rfind(|l| !l.trim().is_empty())?
            .split(';')
            .nth(idx)?
            .trim()
            .parse()
            .ok()
    }

    /// Kills SIPp if it is still running.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for SippProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Recording intervals per call (by call hash) from an event log: each
/// `recording on` paired with the next `recording off`, as wall-clock times.
pub fn recorded_intervals(
    events: &[serde_json::Value],
) -> std::collections::BTreeMap<String, Vec<(std::time::SystemTime, std::time::SystemTime)>> {
    let mut open: std::collections::HashMap<String, std::time::SystemTime> = Default::default();
    let mut out: std::collections::BTreeMap<String, Vec<_>> = Default::default();
    for e in events.iter().filter(|e| e["event"] == "recording") {
        let call = e["call"].as_str().unwrap_or_default().to_owned();
        let at =
            humantime::parse_rfc3339(e["time"].as_str().unwrap_or_default()).expect("event time");
        if e["on"] == true {
            open.entry(call).or_insert(at);
        } else if let Some(start) = open.remove(&call) {
            out.entry(call).or_default().push((start, at));
        }
    }
    assert!(open.is_empty(), "recordings never switched off: {open:?}");
    out
}

/// Events of one kind.
pub fn events_of<'a>(events: &'a [serde_json::Value], kind: &str) -> Vec<&'a serde_json::Value> {
    events.iter().filter(|e| e["event"] == kind).collect()
}

/// Decodes an MP3 with ffmpeg to 8 kHz 16-bit PCM: (left, right).
pub fn decode_mp3(path: &Path) -> (Vec<i16>, Vec<i16>) {
    decode_mp3_at(path, 8000)
}

/// An MP3 decoded by ffmpeg to stereo 16-bit PCM at `rate`: (left, right).
pub fn decode_mp3_at(path: &Path, rate: u32) -> (Vec<i16>, Vec<i16>) {
    require("ffmpeg");
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args(["-f", "s16le", "-ac", "2", "-ar", &rate.to_string(), "-"])
        .output()
        .expect("run ffmpeg");
    assert!(
        out.status.success(),
        "ffmpeg cannot decode {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let samples: Vec<i16> = out
        .stdout
        .chunks_exact(2)
        .map(|c| i16::from_le_bytes([c[0], c[1]]))
        .collect();
    let left = samples.iter().step_by(2).copied().collect();
    let right = samples.iter().skip(1).step_by(2).copied().collect();
    (left, right)
}

/// Power of one frequency in 8 kHz samples (Goertzel), normalised by length.
pub fn tone_power(samples: &[i16], freq: f64) -> f64 {
    tone_power_at(samples, freq, 8000.0)
}

/// Share of 8 kHz audio's power at `freq` (1.0 for a pure tone, 0 for silence).
pub fn tone_share(samples: &[i16], freq: f64) -> f64 {
    let total = rms(samples).powi(2);
    if total == 0.0 {
        0.0
    } else {
        tone_power(samples, freq) * 2.0 / total
    }
}

/// Power of one frequency in samples at `rate` (Goertzel), normalised by length.
pub fn tone_power_at(samples: &[i16], freq: f64, rate: f64) -> f64 {
    let coeff = 2.0 * (2.0 * std::f64::consts::PI * freq / rate).cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &x in samples {
        let s = x as f64 + coeff * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    (s1 * s1 + s2 * s2 - coeff * s1 * s2) / (samples.len().max(1) as f64).powi(2)
}

/// Root mean square of samples.
pub fn rms(samples: &[i16]) -> f64 {
    (samples.iter().map(|&s| (s as f64).powi(2)).sum::<f64>() / samples.len().max(1) as f64).sqrt()
}

/// SHA-256 of bytes, hex (with the system's `sha256sum`).
pub fn sha256_bytes(bytes: &[u8]) -> String {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sha256sum");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(bytes)
        .expect("write to sha256sum");
    let out = child.wait_with_output().expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// A TCP connection to `to` from a chosen local address (on loopback:
/// 127.0.0.2 and others stand for other hosts).
pub fn tcp_connect_from(from: SocketAddr, to: SocketAddr) -> TcpStream {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
        .expect("a TCP socket");
    sock.bind(&from.into()).expect("bind the source address");
    sock.connect_timeout(&to.into(), Duration::from_secs(2))
        .expect("connect");
    sock.into()
}

/// Resident memory of a process, KiB (`VmRSS`); 0 when it is gone.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Open file descriptors of a process (sockets included).
pub fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// SHA-256 of a file, hex.
pub fn sha256_hex(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// Records real calls for suites that need recordings (the console's): a
/// recorder with every caller of `calls` as an `Always` user and a
/// filesystem store in `dir`, one SIPp callee, and one SIPp caller per call
/// (from, to, talk ms; a 440 Hz caller and a 1 kHz callee), all at once.
/// Returns the stored recordings (MP3 path, sidecar), oldest first.
pub fn record_calls(
    recorder: &Path,
    dir: &Path,
    calls: &[(&str, &str, u64)],
) -> Vec<(PathBuf, serde_json::Value)> {
    let mut users: Vec<TestUser> = Vec::new();
    for (from, _, _) in calls {
        if !users.iter().any(|u| u.extension == *from) {
            users.push(TestUser {
                extension: from,
                mode: "Always",
                shortcode: None,
            });
        }
    }
    std::fs::create_dir_all(dir).unwrap();
    let ports = free_ports(8 + 8 * calls.len() as u16);
    let rec = RecorderProcess::start(
        recorder,
        dir,
        std::net::SocketAddr::from(([127, 0, 0, 1], ports)),
        &users,
    );
    let longest = calls.iter().map(|c| c.2).max().unwrap_or(0);
    let callee = dir.join("callee.pcap");
    pcap::RtpStream::new(0xc0de_0002)
        .tone(1000.0, longest)
        .write(&callee)
        .unwrap();
    let mut uas = Sipp {
        scenario: "uas.xml",
        vars: vec![("PCAP", callee.display().to_string())],
        args: vec!["-m".into(), calls.len().to_string()],
        port: ports,
        media_port: ports + 2,
        control_port: ports + 6,
    }
    .spawn(dir, "uas");
    std::thread::sleep(Duration::from_millis(300));
    let mut uacs = Vec::new();
    for (i, (from, to, talk)) in calls.iter().enumerate() {
        let caller = dir.join(format!("caller-{i}.pcap"));
        pcap::RtpStream::new(0xc0de_1000 + i as u32)
            .tone(440.0, *talk)
            .write(&caller)
            .unwrap();
        let base = ports + 8 + 8 * i as u16;
        uacs.push(
            Sipp {
                scenario: "uac.xml",
                vars: vec![
                    ("FROM", from.to_string()),
                    ("PCAP", caller.display().to_string()),
                    ("TALK_MS", talk.to_string()),
                ],
                args: vec![
                    "-rsa".into(),
                    rec.sip.to_string(),
                    "-s".into(),
                    to.to_string(),
                    "-m".into(),
                    "1".into(),
                    format!("127.0.0.1:{ports}"),
                ],
                port: base,
                media_port: base + 2,
                control_port: base + 6,
            }
            .spawn(dir, &format!("uac-{i}")),
        );
    }
    for mut u in uacs {
        u.wait_success(Duration::from_secs(60));
    }
    uas.wait_success(Duration::from_secs(20));
    rec.wait_recordings(calls.len(), Duration::from_secs(30))
}

/// A test CA and certificates it signed, made with `openssl` in `dir`:
/// `ca.crt`, and for each name `<name>.crt`, `<name>.key` and `<name>.pem`
/// (certificate then key, as baresip reads it), valid for 127.0.0.1 and
/// `localhost`.
pub fn test_certificates(dir: &Path, names: &[&str]) {
    require("openssl");
    std::fs::create_dir_all(dir).unwrap();
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=Earshot test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign",
    ]);
    for name in names {
        let (key, csr, crt) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.crt"),
        );
        run(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            &format!("/CN={name}"),
        ]);
        let ext = dir.join(format!("{name}.ext"));
        std::fs::write(
            &ext,
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n",
        )
        .unwrap();
        run(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &crt,
            "-days",
            "2",
            "-extfile",
            &ext.display().to_string(),
        ]);
        let pem = [
            std::fs::read(dir.join(&crt)).unwrap(),
            std::fs::read(dir.join(&key)).unwrap(),
        ]
        .concat();
        std::fs::write(dir.join(format!("{name}.pem")), pem).unwrap();
    }
}
