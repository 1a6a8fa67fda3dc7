//! The operator binary as a GitOps pipeline would run it.

use std::process::Command;

const BINARY: &str = env!("CARGO_BIN_EXE_earshot-operator");

fn repo() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn check_accepts_every_sample() {
    let out = Command::new(BINARY)
        .current_dir(repo())
        .args([
            "check",
            // The samples name three stores: a single-tenant check.
            "--allow-any-storage-endpoint",
            "-f",
            "config/samples/small-office.yaml",
            "-f",
            "config/samples/call-centre.yaml",
            "-f",
            "config/samples/default-shortcode.yaml",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout
            .contains("acme/office ok: 3 users (1 Always, 1 OnDemand, 1 Never), retention 30 days"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "callcentre/agents ok: 200 users (200 Always, 0 OnDemand, 0 Never), retention 90 days"
        ),
        "{stdout}"
    );
}

#[test]
fn check_refuses_an_invalid_policy_with_the_api_servers_message() {
    let out = Command::new(BINARY)
        .current_dir(repo())
        .args([
            "check",
            "-f",
            "config/samples/invalid/ondemand-without-shortcode.yaml",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("policy no-shortcode is invalid:\n  - spec.users: every user whose mode is OnDemand (set directly or through defaultMode) needs a shortcode"),
        "{stderr}"
    );
}

#[test]
fn check_refuses_a_prefix_in_another_tenants_namespace() {
    let dir = earshot_tests::TempDir::new("check-prefix");
    let sample = std::fs::read_to_string(repo().join("config/samples/small-office.yaml")).unwrap();
    assert!(sample.contains("  storage:\n"), "{sample}");
    let evil = sample.replace("  storage:\n", "  storage:\n    prefix: beta/office/\n");
    let path = dir.path().join("evil.yaml");
    std::fs::write(&path, evil).unwrap();
    let out = Command::new(BINARY)
        .arg("check")
        .arg("-f")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("spec.storage.prefix \"beta/office/\" is outside this tenant's recordings; it must start with \"acme\" followed by /"),
        "{stderr}"
    );
}

#[test]
fn check_refuses_an_endpoint_the_platform_does_not_list() {
    let sample = repo().join("config/samples/small-office.yaml");
    let text = std::fs::read_to_string(&sample).unwrap();
    let endpoint = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("endpoint:"))
        .expect("the sample names an endpoint")
        .trim()
        .trim_matches('"')
        .to_owned();
    let run = |allowed: &str| {
        Command::new(BINARY)
            .arg("check")
            .arg("-f")
            .arg(&sample)
            .env("EARSHOT_STORAGE_ENDPOINTS", allowed)
            .output()
            .unwrap()
    };
    let listed = run(&format!(r#"[{{"url": "{endpoint}"}}]"#));
    assert_eq!(listed.status.code(), Some(0), "{listed:?}");
    let other = run(r#"[{"url": "http://garage.storage.svc:3900"}]"#);
    assert_eq!(other.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&other.stderr);
    assert!(
        stderr.contains(&endpoint) && stderr.contains("http://garage.storage.svc:3900"),
        "names what was asked and what is allowed: {stderr}"
    );
    let broken = run("[{");
    assert_eq!(broken.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&broken.stderr).contains("EARSHOT_STORAGE_ENDPOINTS is not valid")
    );
}

#[test]
fn check_without_the_platform_s_stores_refuses_every_store() {
    let sample = repo().join("config/samples/small-office.yaml");
    let run = |env: &[(&str, &str)]| {
        Command::new(BINARY)
            .arg("check")
            .arg("-f")
            .arg(&sample)
            .env_remove("EARSHOT_STORAGE_ENDPOINTS")
            .env_remove("EARSHOT_DEFAULT_STORAGE")
            .env_remove("EARSHOT_ALLOW_ANY_STORAGE_ENDPOINT")
            .envs(env.iter().copied())
            .output()
            .unwrap()
    };
    // As the operator with its defaults: no store is allowed, and it says
    // what to set.
    let bare = run(&[]);
    assert_eq!(bare.status.code(), Some(1), "{bare:?}");
    let stderr = String::from_utf8_lossy(&bare.stderr);
    assert!(
        stderr.contains("this platform lists no object stores")
            && stderr.contains("allowAnyStorageEndpoint: true"),
        "{stderr}"
    );
    // The default storage's endpoint is the platform's own.
    let default = run(&[(
        "EARSHOT_DEFAULT_STORAGE",
        r#"{"endpoint": "http://garage.storage.svc.cluster.local:3900", "bucket": "recordings", "credentialsSecret": {"name": "s3"}}"#,
    )]);
    assert_eq!(default.status.code(), Some(0), "{default:?}");
    // The single-tenant opt-in.
    let any = run(&[("EARSHOT_ALLOW_ANY_STORAGE_ENDPOINT", "true")]);
    assert_eq!(any.status.code(), Some(0), "{any:?}");
    let typo = run(&[("EARSHOT_ALLOW_ANY_STORAGE_ENDPOINT", "tru")]);
    assert_eq!(typo.status.code(), Some(2), "a typo is no opt-in: {typo:?}");
}

#[test]
fn crd_prints_the_chart_crd() {
    let out = Command::new(BINARY).arg("crd").output().unwrap();
    let committed = std::fs::read_to_string(repo().join(earshot_crds_path())).unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), committed);
}

fn earshot_crds_path() -> &'static str {
    "charts/earshot/crds/recordingpolicies.earshot.io.yaml"
}
