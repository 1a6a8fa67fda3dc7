//! The console against Garage, with a read-only key, over recordings made
//! by a real recorder: listing and paging, filters, Range requests, ZIPs
//! whose MP3s hash to their sidecars, and one tenant's console that cannot
//! reach another's recordings.

mod common;

use std::collections::BTreeSet;

use common::*;
use earshot_tests::TempDir;
use earshot_tests::garage::Garage;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_RANGE, RANGE};

#[test]
fn the_console_lists_filters_streams_and_zips_one_tenants_recordings_read_only() {
    let dir = TempDir::new("console-garage");
    let real = real_recordings(&dir.path().join("recorder"));
    let garage = Garage::start(&dir.path().join("garage"), "recordings");
    // Tenant acme: 60 recordings over three days; tenant bobs: 2.
    let acme = fixtures(
        &real,
        "acme/office",
        &["2026-11-29", "2026-11-30", "2026-12-01"],
        20,
    );
    let bobs = fixtures(&real, "bobs/shop", &["2026-12-01"], 2);
    upload(&garage, "acme/office", &acme);
    upload(&garage, "bobs/shop", &bobs);
    let (ro_id, ro_secret) = garage.read_only_key();
    // One tenant's console: the bucket and that tenant's prefix.
    let storage = |prefix: &'static str| {
        [
            "--endpoint",
            garage.endpoint.as_str(),
            "--bucket",
            "recordings",
            "--region",
            "garage",
            "--prefix",
            prefix,
        ]
    };
    let env = [
        ("AWS_ACCESS_KEY_ID", ro_id.as_str()),
        ("AWS_SECRET_ACCESS_KEY", ro_secret.as_str()),
    ];
    let console = Console::start(dir.path(), &storage("acme/office"), &env);

    // Newest first, 50 a page.
    let mut newest: Vec<&Fixture> = acme.iter().collect();
    newest.sort_by(|a, b| b.id.cmp(&a.id));
    let page0 = console.get("/").text().unwrap();
    let ids0 = page_ids(&page0);
    assert_eq!(ids0.len(), 50);
    assert_eq!(
        ids0,
        newest[..50]
            .iter()
            .map(|f| f.id.clone())
            .collect::<Vec<_>>()
    );
    assert!(page0.contains("Older →"));
    let page1 = console.get("/?page=1").text().unwrap();
    assert_eq!(
        page_ids(&page1),
        newest[50..]
            .iter()
            .map(|f| f.id.clone())
            .collect::<Vec<_>>()
    );
    assert!(!page1.contains("Older →") && page1.contains("← Newer"));
    // The manual's columns, from the sidecar.
    let first = &newest[0].sidecar;
    for field in ["startedAt", "answeredAt", "endedAt"] {
        let t = &first[field].as_str().unwrap()[11..19];
        assert!(page0.contains(t), "{field} {t} shown");
    }
    assert!(page0.contains(first["callee"]["number"].as_str().unwrap()));
    // Each side's codec: one name when both spoke it, caller / callee when not.
    let row = |id: &str| {
        let at = page0.find(&format!("data-id=\"{id}\"")).expect("row shown");
        page0[at..at + page0[at..].find("</tr>").unwrap()].to_owned()
    };
    for f in &newest[..50] {
        let want = match f.sidecar["audio"]["codecs"]["caller"].as_str() {
            Some("G722") => "<td>G722 / PCMA</td>",
            _ => "<td>PCMU</td>",
        };
        assert!(row(&f.id).contains(want), "{want} in {}", row(&f.id));
    }

    // Filters.
    let count = |q: &str| page_ids(&console.get(&format!("/?{q}")).text().unwrap());
    let by_009: Vec<&Fixture> = newest
        .iter()
        .copied()
        .filter(|f| f.sidecar["users"][0]["extension"] == "009")
        .collect();
    assert_eq!(
        count("user=009"),
        by_009.iter().map(|f| f.id.clone()).collect::<Vec<_>>()
    );
    assert_eq!(count("from=2026-11-30&to=2026-11-30").len(), 20);
    assert!(
        count("from=2026-11-30&to=2026-11-30")
            .iter()
            .all(|id| id.starts_with("2026/11/30/"))
    );
    assert_eq!(count("number=512").len(), 1);
    assert_eq!(count("status=truncated").len(), 6);
    assert_eq!(count("status=complete&from=2026-12-01").len(), 18);
    assert_eq!(
        console.get("/?from=yesterday").status(),
        StatusCode::BAD_REQUEST
    );

    // Range requests: 206 with exactly the bytes asked for.
    let f = newest[3];
    let size = f.mp3.len();
    let http = reqwest::blocking::Client::new();
    let ranged = |range: &str| {
        http.get(format!("{}/r/{}.mp3", console.url, f.id))
            .header(RANGE, range)
            .send()
            .unwrap()
    };
    let r = ranged("bytes=100-1099");
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        r.headers()[CONTENT_RANGE].to_str().unwrap(),
        format!("bytes 100-1099/{size}")
    );
    assert_eq!(r.bytes().unwrap().as_ref(), &f.mp3[100..1100]);
    let r = ranged("bytes=-500");
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.bytes().unwrap().as_ref(), &f.mp3[size - 500..]);
    let r = ranged(&format!("bytes={}-", size - 10));
    assert_eq!(r.bytes().unwrap().as_ref(), &f.mp3[size - 10..]);
    let r = ranged(&format!("bytes={size}-"));
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(
        r.headers()[CONTENT_RANGE].to_str().unwrap(),
        format!("bytes */{size}")
    );
    let whole = console.get(&format!("/r/{}.mp3", f.id));
    assert_eq!(whole.status(), StatusCode::OK);
    assert_eq!(whole.headers()["accept-ranges"], "bytes");
    assert_eq!(
        sha256(&whole.bytes().unwrap()),
        f.sidecar["mp3"]["sha256"].as_str().unwrap()
    );

    // Two selected rows as one ZIP: each MP3 hashes to its sidecar's SHA-256.
    let picked = [newest[0], newest[7]];
    let form: Vec<(&str, &str)> = picked.iter().map(|f| ("id", f.id.as_str())).collect();
    let r = http
        .post(format!("{}/zip", console.url))
        .form(&form)
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "application/zip");
    let entries = unzip(&r.bytes().unwrap(), dir.path());
    assert_eq!(entries.len(), 4);
    for f in picked {
        let stem = format!("{}/{}", f.id[..10].replace('/', "-"), &f.id[11..]);
        let mp3 = entries
            .iter()
            .find(|e| e.0 == format!("{stem}.mp3"))
            .unwrap();
        assert_eq!(sha256(&mp3.1), f.sidecar["mp3"]["sha256"].as_str().unwrap());
        let json = entries
            .iter()
            .find(|e| e.0 == format!("{stem}.json"))
            .unwrap();
        let sidecar: serde_json::Value = serde_json::from_slice(&json.1).unwrap();
        assert_eq!(sidecar, f.sidecar);
    }
    // A whole day.
    let r = console.get("/zip?day=2026-11-30");
    let entries = unzip(&r.bytes().unwrap(), dir.path());
    assert_eq!(entries.len(), 40);
    let names: BTreeSet<&str> = entries.iter().map(|e| e.0.as_str()).collect();
    for f in acme.iter().filter(|f| f.id.starts_with("2026/11/30")) {
        assert!(names.contains(format!("2026-11-30/{}.mp3", &f.id[11..]).as_str()));
    }

    // Tenant isolation: bobs' recordings are not acme's console's to show.
    for b in &bobs {
        assert!(!page0.contains(&b.id[11..]));
        assert_eq!(
            console.get(&format!("/r/{}.mp3", b.id)).status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            console.get(&format!("/r/{}.json", b.id)).status(),
            StatusCode::NOT_FOUND
        );
    }
    for path in [
        "/r/..%2F..%2Fbobs%2Fshop%2F2026/12/01/x.mp3",
        "/r/2026/12/01/..%2F..%2F..%2F..%2Fbobs%2Fshop%2F2026%2F12%2F01%2Fx.mp3",
        "/r/2026/12/01/recorder.yaml",
    ] {
        let status = console.get(path).status();
        assert!(status == StatusCode::NOT_FOUND, "{path}: {status}");
    }
    let r = http
        .post(format!("{}/zip", console.url))
        .form(&[("id", bobs[0].id.as_str())])
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // The other tenant's own console sees exactly its two.
    let bobs_console = Console::start(dir.path(), &storage("bobs/shop"), &env);
    assert_eq!(page_ids(&bobs_console.get("/").text().unwrap()).len(), 2);

    // Every play and download was audited and counted.
    let log = console.log_text();
    assert!(log.contains("action=\"zip\""), "{log}");
    assert!(log.contains("action=\"play\""), "{log}");
    let metrics = console.get("/metrics").text().unwrap();
    assert!(
        metrics.contains("earshot_console_accesses_total{action=\"zip\"} 22"),
        "{metrics}"
    );
}
