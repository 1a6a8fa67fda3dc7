//! Kamailio (Debian, 5.6) as a SIP trunk that challenges: every initial
//! request without valid digest credentials gets 407; an authenticated
//! INVITE is record-routed and relayed to the callee, as a carrier's trunk
//! does behind a recorder. The config is `tests/kamailio/trunk.cfg.in`; the
//! process runs in the foreground on 127.0.0.1 and is stopped when dropped.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running Kamailio.
pub struct Kamailio {
    child: Option<Child>,
    /// Where SIP goes (UDP).
    pub sip: SocketAddr,
    /// Its log (stderr): the script logs each 407 and each relayed request.
    pub log: PathBuf,
}

impl Kamailio {
    /// Starts a trunk on 127.0.0.1:`port` that accepts `user` / `pass`
    /// (realm `trunk.example`) and relays to `callee` (a 127.0.0.1 address).
    /// Runtime files go to `dir`; returns once it answers an OPTIONS.
    pub fn start_trunk(dir: &Path, port: u16, callee: SocketAddr, user: &str, pass: &str) -> Self {
        crate::require("kamailio");
        assert_eq!(
            callee.ip(),
            std::net::IpAddr::from([127, 0, 0, 1]),
            "the trunk relays to 127.0.0.1 only"
        );
        // Both go inside quoted config strings, where `$` starts a variable.
        for v in [user, pass] {
            assert!(
                !v.is_empty()
                    && v.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)),
                "trunk credentials must be plain: {v:?}"
            );
        }
        let run = dir.join("kamailio");
        std::fs::create_dir_all(&run).unwrap();
        let template = std::fs::read_to_string(crate::repo().join("tests/kamailio/trunk.cfg.in"))
            .expect("tests/kamailio/trunk.cfg.in");
        let cfg_text = template
            .replace("@PORT@", &port.to_string())
            .replace("@CALLEE_PORT@", &callee.port().to_string())
            .replace("@USER@", user)
            .replace("@PASS@", pass);
        let cfg = run.join("trunk.cfg");
        std::fs::write(&cfg, cfg_text).unwrap();

        let check = Command::new("kamailio")
            .arg("-c")
            .arg("-f")
            .arg(&cfg)
            .output()
            .expect("run kamailio -c");
        assert!(
            check.status.success(),
            "kamailio rejects {}:\n{}{}",
            cfg.display(),
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );

        let log = dir.join("kamailio.log");
        let child = Command::new("kamailio")
            .arg("-f")
            .arg(&cfg)
            // Foreground, log to stderr; runtime dir, pid file and small
            // memory pools (MB) of its own.
            .args(["-DD", "-E", "-m", "64", "-M", "8"])
            .arg("-w")
            .arg(&run)
            .arg("-Y")
            .arg(&run)
            .arg("-P")
            .arg(run.join("kamailio.pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start kamailio");
        let mut k = Kamailio {
            child: Some(child),
            sip: SocketAddr::from(([127, 0, 0, 1], port)),
            log,
        };
        k.wait_ready();
        k
    }

    /// What Kamailio has logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends OPTIONS until any response comes back (up to 10 s).
    fn wait_ready(&mut self) {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let local = sock.local_addr().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut buf = [0u8; 4096];
        for n in 1.. {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!("kamailio exited ({status}):\n{}", self.logs());
            }
            assert!(
                Instant::now() < deadline,
                "kamailio did not answer OPTIONS on {}:\n{}",
                self.sip,
                self.logs()
            );
            let options = format!(
                "OPTIONS sip:{sip} SIP/2.0\r\n\
                 Via: SIP/2.0/UDP {local};branch=z9hG4bK-ready-{n}\r\n\
                 From: <sip:probe@{local}>;tag=ready\r\n\
                 To: <sip:{sip}>\r\n\
                 Call-ID: ready-{port}@127.0.0.1\r\n\
                 CSeq: {n} OPTIONS\r\n\
                 Max-Forwards: 70\r\n\
                 Content-Length: 0\r\n\r\n",
                sip = self.sip,
                port = local.port(),
            );
            let _ = sock.send_to(options.as_bytes(), self.sip);
            if let Ok((len, _)) = sock.recv_from(&mut buf)
                && buf[..len].starts_with(b"SIP/2.0 ")
            {
                return;
            }
        }
    }
}

impl Drop for Kamailio {
    /// SIGTERM first: killing only the main process (SIGKILL) would leave its
    /// worker processes running with the SIP socket bound.
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}
