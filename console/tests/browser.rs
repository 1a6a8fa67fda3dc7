//! The console in a real browser: Debian's chromium, headless, driven by
//! playwright-core (tests/browser/console.mjs). It filters by a user, plays
//! a recording (the audio element's duration is the sidecar's), seeks (a
//! Range request), downloads two selected rows as a ZIP and saves a
//! screenshot to `target/artifacts/console.png`.

mod common;

use std::process::Command;

use common::*;
use earshot_tests::{TempDir, repo, require};

#[test]
fn filter_play_seek_and_download_two_rows_in_chromium() {
    require("node");
    require("chromium");
    let script = repo().join("tests/browser/console.mjs");
    assert!(
        repo()
            .join("tests/browser/node_modules/playwright-core")
            .is_dir(),
        "playwright-core is not installed: run `make test` (scripts/test-deps.sh installs it)"
    );
    let dir = TempDir::new("console-browser");
    let real = real_recordings(&dir.path().join("recorder"));
    let store = dir.path().join("store");
    let all = fixtures(&real, "acme/office", &["2026-11-30", "2026-12-01"], 4);
    write_dir(&store, "acme/office", &all);
    let console = Console::start(
        dir.path(),
        &["--dir", store.to_str().unwrap(), "--prefix", "acme/office"],
        &[],
    );

    let artifacts = repo().join("target/artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let out = Command::new("node")
        .arg(&script)
        .arg(&console.url)
        .arg(&artifacts)
        .arg("009")
        .output()
        .expect("run node");
    assert!(
        out.status.success(),
        "browser script failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        console.log_text()
    );
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();

    let mut newest: Vec<&Fixture> = all.iter().collect();
    newest.sort_by(|a, b| b.id.cmp(&a.id));
    let ids = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        ids(&seen["before"]),
        newest.iter().map(|f| f.id.clone()).collect::<Vec<_>>()
    );
    let of_009: Vec<&Fixture> = newest
        .iter()
        .copied()
        .filter(|f| f.sidecar["users"][0]["extension"] == "009")
        .collect();
    assert!(of_009.len() >= 2);
    assert_eq!(
        ids(&seen["ids"]),
        of_009.iter().map(|f| f.id.clone()).collect::<Vec<_>>()
    );

    // The player's duration is the recording's, as its sidecar gives it.
    let want = of_009[0].sidecar["audio"]["durationSeconds"]
        .as_f64()
        .unwrap();
    let duration = seen["played"]["duration"].as_f64().unwrap();
    assert!(
        (duration - want).abs() < 0.1,
        "audio element says {duration} s, sidecar {want} s"
    );
    assert!(seen["played"]["currentTime"].as_f64().unwrap() > 0.3);
    let (seeked, target) = (
        seen["seeked"].as_f64().unwrap(),
        seen["target"].as_f64().unwrap(),
    );
    assert!(
        (seeked - target).abs() < 0.05,
        "seeked to {seeked}, asked {target}"
    );
    assert!(
        seen["ranges"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r.as_str().is_some_and(|r| r.starts_with("bytes="))),
        "the browser used Range requests: {}",
        seen["ranges"]
    );
    assert!(console.log_text().contains("action=\"play\""));

    // The ZIP of the two selected rows.
    assert_eq!(seen["suggested"], "recordings-2.zip");
    let zip = std::fs::read(seen["zip"].as_str().unwrap()).unwrap();
    let entries = unzip(&zip, dir.path());
    assert_eq!(entries.len(), 4);
    for f in &of_009[..2] {
        let name = format!("{}/{}.mp3", f.id[..10].replace('/', "-"), &f.id[11..]);
        let mp3 = entries.iter().find(|e| e.0 == name).unwrap();
        assert_eq!(sha256(&mp3.1), f.sidecar["mp3"]["sha256"].as_str().unwrap());
    }

    let png = std::fs::read(artifacts.join("console.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "a screenshot was saved");
}
