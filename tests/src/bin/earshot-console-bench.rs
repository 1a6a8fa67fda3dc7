//! `make bench`, console part: a month of a 200-user call centre (100 000
//! recordings by default) in Garage, and how fast `earshot-console` answers
//! over it: the first page cold and warm, a later page, a user's page and a
//! number search (which reads every sidecar), and the console's memory.
//!
//! Every recording is a copy of one a real recorder made (the MP3 unchanged,
//! the sidecar given its own day, time, user and callee). Figures go to
//! stdout and `target/bench/console.json`.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use earshot_tests::garage::Garage;
use earshot_tests::{free_ports, http_get, http_get_within, record_calls, repo};
use futures::StreamExt;
use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use serde_json::json;

fn binary(env: &str, name: &str) -> PathBuf {
    let p = std::env::var_os(env)
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/release").join(name));
    assert!(p.exists(), "{} not built: run `make bench`", p.display());
    p
}

fn timed(url: &std::net::SocketAddr, path: &str) -> (f64, usize) {
    let t = Instant::now();
    let (status, body) =
        http_get_within(*url, path, Duration::from_secs(600)).expect("console answers");
    assert_eq!(status, 200, "{path}: {body}");
    (
        t.elapsed().as_secs_f64(),
        body.matches("data-id=\"").count(),
    )
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

fn main() {
    let total: usize = std::env::var("EARSHOT_CONSOLE_BENCH_RECORDINGS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let (users, days) = (200usize, 30usize);
    let recorder = binary("EARSHOT_RECORDER", "earshot-recorder");
    let console = binary("EARSHOT_CONSOLE", "earshot-console");
    let dir = repo().join("target/bench-console");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();

    println!("Recording one real call to copy ...");
    let real = record_calls(
        &recorder,
        &dir.join("recorder"),
        &[("2000", "0612345678", 2000)],
    );
    let mp3 = std::fs::read(&real[0].0).unwrap();
    let base = real[0].1.clone();

    let garage = Garage::start(&dir.join("garage"), "recordings");
    let client = AmazonS3Builder::new()
        .with_endpoint(&garage.endpoint)
        .with_bucket_name(&garage.bucket)
        .with_region("garage")
        .with_access_key_id(&garage.key_id)
        .with_secret_access_key(&garage.secret)
        .with_allow_http(true)
        .with_virtual_hosted_style_request(false)
        .build()
        .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let per_day = total.div_ceil(days);
    println!(
        "Uploading {total} recordings ({users} users, {days} days, {per_day} a day; MP3 {} bytes each) ...",
        mp3.len()
    );
    let started = Instant::now();
    rt.block_on(async {
        let puts = (0..total).map(|n| {
            let (day, i) = (n / per_day + 1, n % per_day);
            // Spread over a 10-hour working day.
            let second = 8 * 3600 + i * 36_000 / per_day;
            let (h, m, s) = (second / 3600, second / 60 % 60, second % 60);
            let hash = format!("{:016x}", (n as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let id = format!("2026/11/{day:02}/202611{day:02}T{h:02}{m:02}{s:02}Z_{hash}");
            let user = format!("{}", 2000 + n % users);
            let mut sidecar = base.clone();
            sidecar["call"] = json!(hash);
            sidecar["caller"] = json!({"number": user, "displayName": format!("Agent {}", n % users)});
            sidecar["callee"] = json!({"number": format!("06{:08}", n * 7919 % 100_000_000), "displayName": null});
            sidecar["users"] = json!([{"extension": user, "displayName": null, "mode": "Always", "side": "caller"}]);
            sidecar["startedAt"] = json!(format!("2026-11-{day:02}T{h:02}:{m:02}:{s:02}.000Z"));
            sidecar["mp3"]["object"] = json!(format!("callcentre/agents/{id}.mp3"));
            let json = serde_json::to_vec(&sidecar).unwrap();
            let (client, mp3) = (&client, mp3.clone());
            async move {
                client
                    .put(&ObjectPath::from(format!("callcentre/agents/{id}.mp3")), mp3.into())
                    .await?;
                client
                    .put(&ObjectPath::from(format!("callcentre/agents/{id}.json")), json.into())
                    .await
            }
        });
        let mut s = futures::stream::iter(puts).buffer_unordered(64);
        let mut done = 0;
        while let Some(r) = s.next().await {
            r.expect("upload");
            done += 1;
            if done % 10_000 == 0 {
                println!("  {done} uploaded ({:.0} s)", started.elapsed().as_secs_f64());
            }
        }
    });
    let upload_s = started.elapsed().as_secs_f64();

    let port = free_ports(1);
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut child = Command::new(&console)
        .args([
            "--endpoint",
            &garage.endpoint,
            "--bucket",
            "recordings",
            "--region",
            "garage",
        ])
        .args([
            "--prefix",
            "callcentre/agents",
            "serve",
            "--listen",
            &addr.to_string(),
        ])
        .env("AWS_ACCESS_KEY_ID", &garage.key_id)
        .env("AWS_SECRET_ACCESS_KEY", &garage.secret)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start earshot-console");
    let deadline = Instant::now() + Duration::from_secs(20);
    while http_get(addr, "/healthz").is_err() {
        assert!(Instant::now() < deadline, "console did not start");
        std::thread::sleep(Duration::from_millis(50));
    }

    let (cold, rows) = timed(&addr, "/");
    assert_eq!(rows, 50);
    let warm = median((0..5).map(|_| timed(&addr, "/").0).collect());
    let (page10_cold, rows10) = timed(&addr, "/?page=10");
    assert_eq!(rows10, 50);
    let (user_cold, user_rows) = timed(&addr, "/?user=2042");
    let user_warm = median((0..5).map(|_| timed(&addr, "/?user=2042").0).collect());
    let (day_cold, _) = timed(&addr, "/?from=2026-11-15&to=2026-11-15");
    let (number_cold, number_rows) = timed(&addr, "/?number=0600000000");
    let (number_warm, _) = timed(&addr, "/?number=0600000000");
    let rss = rss_kib(child.id());
    let _ = child.kill();
    let _ = child.wait();

    let results = json!({
        "recordings": total, "users": users, "days": days, "uploadSeconds": upload_s,
        "firstPageColdSeconds": cold, "firstPageWarmMedianSeconds": warm,
        "page10ColdSeconds": page10_cold,
        "userPageColdSeconds": user_cold, "userPageWarmMedianSeconds": user_warm, "userPageRows": user_rows,
        "dayPageColdSeconds": day_cold,
        "numberSearchColdSeconds": number_cold, "numberSearchWarmSeconds": number_warm, "numberSearchRows": number_rows,
        "consoleRssKiB": rss,
    });
    let out = repo().join("target/bench");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(
        out.join("console.json"),
        serde_json::to_vec_pretty(&results).unwrap(),
    )
    .unwrap();
    println!();
    println!("Console over {total} recordings in Garage (uploaded in {upload_s:.0} s):");
    println!("  first page (50 newest), cold        {:>8.3} s", cold);
    println!("  first page, warm (median of 5)      {:>8.3} s", warm);
    println!(
        "  page 11, cold                       {:>8.3} s",
        page10_cold
    );
    println!(
        "  one user's first page, cold         {:>8.3} s  ({user_rows} rows)",
        user_cold
    );
    println!("  one user's first page, warm         {:>8.3} s", user_warm);
    println!("  one day's first page, cold          {:>8.3} s", day_cold);
    println!(
        "  number search (every sidecar), cold {:>8.3} s  ({number_rows} rows)",
        number_cold
    );
    println!(
        "  number search, warm                 {:>8.3} s",
        number_warm
    );
    println!("  console memory after                {:>8} KiB", rss);
}
