//! The open-file limit a container gives (soft 1024 under containerd 2.x):
//! the recorder raises its soft limit to what its RTP range needs, binds
//! every port pair, and refuses to start — naming the limit — when even
//! the hard limit is too low. Before, binding silently stopped short.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use earshot_tests::{TempDir, free_ports, http_get};

/// A config for 1 000 RTP/RTCP ports (500 pairs: 1 000 sockets).
fn config(dir: &Path) -> (std::path::PathBuf, std::net::SocketAddr) {
    let base = free_ports(1002);
    let http = std::net::SocketAddr::from(([127, 0, 0, 1], base + 1));
    let path = dir.join("recorder.yaml");
    std::fs::write(
        &path,
        format!(
            "sip: {{ listen: \"127.0.0.1:{base}\" }}\nadvertisedAddress: 127.0.0.1\nrtp: {{ bind: 127.0.0.1, portMin: {}, portMax: {} }}\nhttp: {{ listen: \"{http}\" }}\npeers:\n  - {{ name: pbx, sources: [\"127.0.0.1/32\"], nextHop: \"127.0.0.1:5060\" }}\nspool: {{ dir: \"{}\" }}\nstorage: {{ filesystem: {{ path: \"{}\" }}, prefix: \"acme/office/\" }}\n",
            base + 2,
            base + 1001,
            dir.join("spool").display(),
            dir.join("store").display(),
        ),
    )
    .unwrap();
    (path, http)
}

fn start(limit: &str, config: &Path, log: &Path) -> std::process::Child {
    earshot_tests::require("prlimit");
    Command::new("prlimit")
        .arg(format!("--nofile={limit}"))
        .arg("--")
        .arg(BINARY)
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("start the recorder under prlimit")
}

#[test]
fn the_recorder_raises_its_open_file_limit_or_refuses_to_start_naming_it() {
    let dir = TempDir::new("limits");
    let (cfg, http) = config(dir.path());
    // Soft 1024 as a container gets it, the hard limit as it is here (20 000
    // on these machines; raising a hard limit needs CAP_SYS_RESOURCE): raised.
    let log = dir.path().join("raised.log");
    let mut child = start("1024:", &cfg, &log);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !matches!(http_get(http, "/readyz"), Ok((200, _))) {
        assert!(
            Instant::now() < deadline && child.try_wait().unwrap().is_none(),
            "not ready: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let text = std::fs::read_to_string(&log).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(text.contains("raised the open-file limit"), "{text}");
    assert!(text.contains("rtp_pairs=500"), "every pair bound: {text}");
    assert!(!text.contains("in use by other processes"), "{text}");

    // A hard limit below the need: it says so and stops (no crash loop of
    // a recorder relaying half its range).
    let log = dir.path().join("refused.log");
    let mut child = start("1024:2048", &cfg, &log);
    let status = child.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!status.success(), "{text}");
    assert_ne!(status.code(), Some(70), "an error, not a panic: {text}");
    assert!(text.contains("hard limit is 2048"), "{text}");
}
