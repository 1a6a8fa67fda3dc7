//! `earshot-console list|get|download` for scripts, over a directory store
//! of real recordings: table and JSON output with the page's filters, and a
//! bulk download that, interrupted, resumes without fetching again what it
//! already has.

mod common;

use std::process::Command;
use std::time::SystemTime;

use common::*;
use earshot_tests::TempDir;

fn console(store: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(CONSOLE)
        .arg("--dir")
        .arg(store)
        .args(["--prefix", "acme/office"])
        .args(args)
        .output()
        .expect("run earshot-console");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn mtime(p: &std::path::Path) -> SystemTime {
    std::fs::metadata(p).unwrap().modified().unwrap()
}

#[test]
fn list_get_and_a_resumable_bulk_download() {
    let dir = TempDir::new("console-cli");
    let real = real_recordings(&dir.path().join("recorder"));
    let store = dir.path().join("store");
    let all = fixtures(&real, "acme/office", &["2026-11-30", "2026-12-01"], 6);
    write_dir(&store, "acme/office", &all);

    // list: JSON carries the sidecar and the id; filters as on the page.
    let (ok, out, err) = console(
        &store,
        &["list", "--output", "json", "--from", "2026-12-01"],
    );
    assert!(ok, "{err}");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let mut want: Vec<&Fixture> = all
        .iter()
        .filter(|f| f.id.starts_with("2026/12/01"))
        .collect();
    want.sort_by(|a, b| b.id.cmp(&a.id));
    assert_eq!(
        rows.iter()
            .map(|r| r["id"].as_str().unwrap())
            .collect::<Vec<_>>(),
        want.iter().map(|f| f.id.as_str()).collect::<Vec<_>>()
    );
    assert_eq!(rows[0]["mp3"]["sha256"], want[0].sidecar["mp3"]["sha256"]);
    let (ok, out, _) = console(&store, &["list", "--number", "507"]);
    assert!(ok);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines[0].starts_with("CALLER"));
    assert!(
        lines[1].contains(" 507 ")
            && lines[1].contains(" G722 / PCMA ")
            && lines[1].ends_with("(truncated)"),
        "{out}"
    );
    let (ok, _, err) = console(&store, &["list", "--from", "30-11-2026"]);
    assert!(
        !ok && err.contains("is not a date like 2026-12-02"),
        "{err}"
    );

    // get: one MP3, its bytes exactly.
    let target = dir.path().join("one.mp3");
    let (ok, _, err) = console(
        &store,
        &["get", &want[1].id, "-o", target.to_str().unwrap()],
    );
    assert!(ok, "{err}");
    assert_eq!(std::fs::read(&target).unwrap(), want[1].mp3);
    let (ok, _, err) = console(&store, &["get", "2026/12/01/nope"]);
    assert!(!ok && err.contains("no recording 2026/12/01/nope"), "{err}");

    // download: the first run is interrupted by a write error on one file...
    let into = dir.path().join("download");
    let mut newest: Vec<&Fixture> = all.iter().collect();
    newest.sort_by(|a, b| b.id.cmp(&a.id));
    let path = |f: &Fixture, ext: &str| {
        into.join(f.id[..10].replace('/', "-"))
            .join(format!("{}.{ext}", &f.id[11..]))
    };
    let blocked = path(newest[4], "mp3");
    std::fs::create_dir_all(blocked.join("in-the-way")).unwrap();
    let (ok, out, err) = console(&store, &["download", "--into", into.to_str().unwrap()]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("11 downloaded, 0 already present, 1 failed"),
        "{out}"
    );
    assert!(
        err.contains("run the same command again to resume"),
        "{err}"
    );
    for f in &all {
        if path(f, "mp3") != blocked {
            assert_eq!(
                sha256(&std::fs::read(path(f, "mp3")).unwrap()),
                f.sidecar["mp3"]["sha256"].as_str().unwrap()
            );
            let sidecar: serde_json::Value =
                serde_json::from_slice(&std::fs::read(path(f, "json")).unwrap()).unwrap();
            assert_eq!(sidecar, f.sidecar);
        }
    }
    // ...and a file damaged since (a disk error) must be fetched again too.
    let damaged = path(newest[9], "mp3");
    std::fs::write(&damaged, b"not the recording").unwrap();
    let before: Vec<(std::path::PathBuf, SystemTime)> = all
        .iter()
        .map(|f| path(f, "mp3"))
        .filter(|p| *p != blocked && *p != damaged)
        .map(|p| (p.clone(), mtime(&p)))
        .collect();
    std::fs::remove_dir_all(&blocked).unwrap();
    let (ok, out, err) = console(&store, &["download", "--into", into.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(
        out.contains("2 downloaded, 10 already present, 0 failed"),
        "{out}"
    );
    for (p, t) in before {
        assert_eq!(mtime(&p), t, "{} not downloaded again", p.display());
    }
    for f in [newest[4], newest[9]] {
        assert_eq!(
            sha256(&std::fs::read(path(f, "mp3")).unwrap()),
            f.sidecar["mp3"]["sha256"].as_str().unwrap()
        );
    }
    assert!(
        !walk(&into)
            .iter()
            .any(|p| p.to_string_lossy().ends_with(".part")),
        "no partial file left"
    );

    // download --zip: one archive of a filtered set.
    let zip = dir.path().join("day.zip");
    let (ok, out, err) = console(
        &store,
        &["download", "--zip", zip.to_str().unwrap(), "--user", "008"],
    );
    assert!(ok, "{err}");
    let n_008 = all
        .iter()
        .filter(|f| f.sidecar["users"][0]["extension"] == "008")
        .count();
    assert!(out.contains(&format!("{n_008} recordings in")), "{out}");
    let entries = unzip(&std::fs::read(&zip).unwrap(), dir.path());
    assert_eq!(entries.len(), 2 * n_008);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
