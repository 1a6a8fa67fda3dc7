//! Who may use a console, over real HTTP: a DNS-rebinding Host is refused,
//! an identity header counts only from the configured proxy and only once,
//! and a ZIP request takes each recording once, within its limits.

mod common;

use common::*;
use earshot_tests::TempDir;
use reqwest::StatusCode;

fn audited_users(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains("earshot_console::audit") && l.contains("audit"))
        .filter_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            v["fields"]["who"].as_str().map(str::to_owned)
        })
        .collect()
}

#[test]
fn hosts_identity_and_zip_limits() {
    let dir = TempDir::new("console-access");
    let real = real_recordings(&dir.path().join("recorder"));
    let store = dir.path().join("store");
    let all = fixtures(&real, "acme/office", &["2026-12-01"], 4);
    write_dir(&store, "acme/office", &all);
    let storage = [
        "--dir",
        store.to_str().unwrap(),
        "--prefix",
        "acme/office",
        "--log-json",
    ];
    let http = reqwest::blocking::Client::new();

    // As the operator runs an unexposed console: no header trusted.
    let plain = Console::start_with(dir.path(), &storage, &["--zip-max-recordings", "3"], &[]);
    let r = http
        .get(&plain.url)
        .header("x-forwarded-user", "mallory")
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // DNS rebinding: the browser sends the attacker's name as Host.
    let r = http
        .get(&plain.url)
        .header("host", "rebind.attacker.example")
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::MISDIRECTED_REQUEST);
    let r = http
        .get(format!("{}/r/{}.mp3", plain.url, all[0].id))
        .header("host", "rebind.attacker.example:8080")
        .send()
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::MISDIRECTED_REQUEST,
        "no audio either"
    );
    // Health stays answerable for the kubelet, whatever its Host.
    let r = http
        .get(format!("{}/healthz", plain.url))
        .header("host", "10.1.2.3:8081")
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    // One id a thousand times: one recording in the archive.
    let same: Vec<(&str, &str)> = (0..1000).map(|_| ("id", all[0].id.as_str())).collect();
    let r = http
        .post(format!("{}/zip", plain.url))
        .form(&same)
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let entries = unzip(&r.bytes().unwrap(), dir.path());
    assert_eq!(entries.len(), 2, "one MP3 and its sidecar");
    // Over the limit, by selection or by day: refused with what to do.
    let four: Vec<(&str, &str)> = all.iter().map(|f| ("id", f.id.as_str())).collect();
    let r = http
        .post(format!("{}/zip", plain.url))
        .form(&four)
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(r.text().unwrap().contains("at most 3"));
    let r = plain.get("/zip?day=2026-12-01");
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let users = audited_users(&plain.log_text());
    assert!(
        !users.is_empty() && users.iter().all(|w| w == "-"),
        "mallory's own header is not an identity: {users:?}"
    );

    // Exposed behind a proxy (here on loopback): its header, once, counts.
    let exposed = Console::start_with(
        dir.path(),
        &storage,
        &[
            "--identity-header",
            "X-Forwarded-User",
            "--trusted-proxy",
            "127.0.0.1/32",
            "--allowed-host",
            "recordings.example.com",
        ],
        &[],
    );
    let page = |headers: &[(&str, &str)]| {
        let mut req = http
            .get(&exposed.url)
            .header("host", "recordings.example.com");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send().unwrap().status()
    };
    assert_eq!(page(&[("x-forwarded-user", "alice")]), StatusCode::OK);
    assert_eq!(page(&[]), StatusCode::UNAUTHORIZED);
    assert_eq!(
        page(&[
            ("x-forwarded-user", "mallory"),
            ("x-forwarded-user", "alice")
        ]),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        page(&[("x-remote-user", "alice")]),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(audited_users(&exposed.log_text()), ["alice"]);
}

#[test]
fn an_exposed_console_believes_no_loopback_client_unless_configured() {
    let dir = TempDir::new("console-loopback");
    let real = real_recordings(&dir.path().join("recorder"));
    let store = dir.path().join("store");
    write_dir(
        &store,
        "acme/office",
        &fixtures(&real, "acme/office", &["2026-12-01"], 1),
    );
    let storage = [
        "--dir",
        store.to_str().unwrap(),
        "--prefix",
        "acme/office",
        "--log-json",
    ];
    // Exposed as the operator runs it: the proxy is elsewhere, and this
    // test's client connects from loopback, as a port-forward or a sidecar
    // in the pod would.
    let exposed = [
        "--identity-header",
        "X-Forwarded-User",
        "--trusted-proxy",
        "10.42.7.0/24",
    ];
    let http = reqwest::blocking::Client::new();
    let as_alice = |c: &Console| {
        http.get(&c.url)
            .header("x-forwarded-user", "alice")
            .send()
            .unwrap()
            .status()
    };
    let closed = Console::start_with(dir.path(), &storage, &exposed, &[]);
    assert_eq!(as_alice(&closed), StatusCode::FORBIDDEN);
    assert!(audited_users(&closed.log_text()).is_empty());

    // Configured: loopback gets in, and still names nobody.
    let open = Console::start_with(
        dir.path(),
        &storage,
        &exposed,
        &[("EARSHOT_CONSOLE_ALLOW_LOOPBACK", "true")],
    );
    assert_eq!(as_alice(&open), StatusCode::OK);
    assert_eq!(audited_users(&open.log_text()), ["-"]);
}
