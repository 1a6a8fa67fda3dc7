//! What the console's suites share: recordings made by a real recorder,
//! copied into a bigger fixture (several days, two tenants), and a console
//! process to query.
#![allow(dead_code)] // each suite uses a different part

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

pub const CONSOLE: &str = env!("CARGO_BIN_EXE_earshot-console");

/// The recorder binary built by the same workspace build.
pub fn recorder_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join("earshot-recorder");
    assert!(
        bin.exists(),
        "{} not built: run the workspace tests (make test)",
        bin.display()
    );
    bin
}

/// One recording of the fixture.
#[derive(Debug, Clone)]
pub struct Fixture {
    pub id: String,
    pub sidecar: Value,
    pub mp3: Vec<u8>,
}

/// Three real recordings: 008 to 501 (3 s), 009 to 502 (2 s), 008 to 503 (1 s).
pub fn real_recordings(dir: &Path) -> Vec<(Vec<u8>, Value)> {
    let recs = earshot_tests::record_calls(
        &recorder_binary(),
        dir,
        &[
            ("008", "501", 3000),
            ("009", "502", 2000),
            ("008", "503", 1000),
        ],
    );
    assert_eq!(recs.len(), 3);
    recs.into_iter()
        .map(|(mp3, sidecar)| (std::fs::read(mp3).unwrap(), sidecar))
        .collect()
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

/// `per_day` recordings on each of `days` (YYYY-MM-DD) under `prefix`,
/// cycling through the real ones: the MP3 unchanged (so its SHA-256 is the
/// sidecar's), the sidecar moved to its own day, time and callee number
/// (`5NN`, NN counting from 0 over the whole fixture), every tenth from the
/// eighth on marked truncated as a crash leaves it, every fifth from the
/// third with a G.722 caller and an A-law callee.
pub fn fixtures(
    real: &[(Vec<u8>, Value)],
    prefix: &str,
    days: &[&str],
    per_day: usize,
) -> Vec<Fixture> {
    let mut out = Vec::new();
    for (d, day) in days.iter().enumerate() {
        for i in 0..per_day {
            let n = d * per_day + i;
            let (mp3, base) = &real[n % real.len()];
            let (h, m, s) = (8 + i / 10, (i * 7) % 60, (i * 13) % 60);
            let compact = day.replace('-', "");
            let hash = format!("{:016x}", fnv(&format!("{prefix}/{day}/{i}")));
            let id = format!(
                "{}/{}/{}/{compact}T{h:02}{m:02}{s:02}Z_{hash}",
                &day[..4],
                &day[5..7],
                &day[8..10]
            );
            let duration = base["durationSeconds"].as_f64().unwrap();
            let at = |plus: f64| {
                let t = (h * 3600 + m * 60 + s) as f64 + plus;
                format!(
                    "{day}T{:02}:{:02}:{:06.3}Z",
                    (t / 3600.0) as u64,
                    (t / 60.0) as u64 % 60,
                    t % 60.0
                )
            };
            let mut sidecar = base.clone();
            sidecar["call"] = json!(hash);
            sidecar["callee"]["number"] = json!(format!("5{n:02}"));
            sidecar["startedAt"] = json!(at(0.0));
            sidecar["answeredAt"] = json!(at(0.5));
            sidecar["endedAt"] = json!(at(0.5 + duration));
            sidecar["mp3"]["object"] = json!(format!("{prefix}/{id}.mp3"));
            if n % 5 == 2 {
                // A desk phone in G.722 calling a trunk in A-law.
                sidecar["audio"]["codecs"] = json!({"caller": "G722", "callee": "PCMA"});
            }
            if n % 10 == 7 {
                sidecar["complete"] = json!(false);
                sidecar["truncated"] = json!(
                    "the recorder stopped during the call; the recording ends where it stopped"
                );
            }
            out.push(Fixture {
                id,
                sidecar,
                mp3: mp3.clone(),
            });
        }
    }
    out
}

/// Writes fixtures as the recorder lays them out, into an S3 bucket.
pub fn upload(garage: &earshot_tests::garage::Garage, prefix: &str, fixtures: &[Fixture]) {
    for f in fixtures {
        garage.put(&format!("{prefix}/{}.mp3", f.id), f.mp3.clone());
        garage.put(
            &format!("{prefix}/{}.json", f.id),
            serde_json::to_vec_pretty(&f.sidecar).unwrap(),
        );
    }
}

/// Writes fixtures into a directory store.
pub fn write_dir(root: &Path, prefix: &str, fixtures: &[Fixture]) {
    for f in fixtures {
        let mp3 = root.join(prefix).join(format!("{}.mp3", f.id));
        std::fs::create_dir_all(mp3.parent().unwrap()).unwrap();
        std::fs::write(&mp3, &f.mp3).unwrap();
        std::fs::write(
            mp3.with_extension("json"),
            serde_json::to_vec_pretty(&f.sidecar).unwrap(),
        )
        .unwrap();
    }
}

pub fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A running `earshot-console serve`.
pub struct Console {
    child: Child,
    pub url: String,
    pub log: PathBuf,
}

impl Console {
    /// Starts `earshot-console <storage args> serve` on a free port.
    pub fn start(dir: &Path, storage: &[&str], env: &[(&str, &str)]) -> Console {
        Self::start_with(dir, storage, &[], env)
    }

    /// As [`start`](Self::start), with more `serve` flags.
    pub fn start_with(
        dir: &Path,
        storage: &[&str],
        serve: &[&str],
        env: &[(&str, &str)],
    ) -> Console {
        let port = earshot_tests::free_ports(1);
        let log = dir.join(format!("console-{port}.log"));
        let child = Command::new(CONSOLE)
            .args(storage)
            .args(["serve", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .args(serve)
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start earshot-console");
        let c = Console {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while reqwest::blocking::get(format!("{}/healthz", c.url)).is_err() {
            assert!(
                Instant::now() < deadline,
                "console did not start: {}",
                std::fs::read_to_string(&c.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        c
    }

    pub fn get(&self, path: &str) -> reqwest::blocking::Response {
        reqwest::blocking::get(format!("{}{path}", self.url)).expect("console answers")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Ids of the rows of a console page, in order.
pub fn page_ids(html: &str) -> Vec<String> {
    html.split("data-id=\"")
        .skip(1)
        .filter_map(|s| s.split('"').next())
        .map(str::to_owned)
        .collect()
}

/// Entries of a ZIP (name, bytes), in order, read with Python's zipfile,
/// which also checks every entry's CRC-32.
pub fn unzip(zip: &[u8], dir: &Path) -> Vec<(String, Vec<u8>)> {
    let path = dir.join(format!("check-{}.zip", zip.len()));
    let out_dir = dir.join(format!("unzipped-{}", zip.len()));
    std::fs::write(&path, zip).unwrap();
    let out = Command::new("python3")
        .arg("-c")
        .arg(
            "import sys, zipfile\n\
             z = zipfile.ZipFile(sys.argv[1])\n\
             bad = z.testzip()\n\
             assert bad is None, bad\n\
             z.extractall(sys.argv[2])\n\
             print('\\n'.join(i.filename for i in z.infolist()))",
        )
        .arg(&path)
        .arg(&out_dir)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "not a valid ZIP: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|n| (n.to_owned(), std::fs::read(out_dir.join(n)).unwrap()))
        .collect()
}
