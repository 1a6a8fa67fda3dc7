//! The operator's S3 client against a real Garage with both addressings:
//! lifecycle rules and the recorders' write probe reach the bucket the
//! policy names, path style (`<endpoint>/<bucket>`) and virtual-hosted
//! (`<bucket>.<endpoint host>`). Garage serves virtual-hosted requests for
//! its `root_domain` (`s3.garage.localhost`) and takes the bucket from the
//! `Host` header alone: a request for a bucket that does not exist fails
//! there, whatever its path.
//!
//! `*.s3.garage.localhost` is in no resolver of this machine, and no machine
//! file is touched: the client pins the names the tests use to Garage's
//! address (reqwest's `resolve`, as curl's `--resolve`). It still connects
//! by name, so URL, `Host` and signature are those a DNS name would give.

use earshot_operator::storage::lifecycle::PolicyRule;
use earshot_operator::storage::probe_key;
use earshot_operator::storage::s3::{Probed, S3Client, S3Target, StorageError};
use earshot_tests::garage::Garage;

const BUCKET: &str = "recordings";
/// A bucket no test creates.
const MISSING: &str = "missing";

fn mk_target(g: &Garage, path_style: bool, (id, secret): (&str, &str)) -> S3Target {
    S3Target {
        endpoint: if path_style {
            g.endpoint.clone()
        } else {
            g.virtual_hosted_endpoint()
        },
        region: "garage".into(),
        path_style,
        access_key_id: id.into(),
        secret_access_key: secret.into(),
        operator_key: false,
    }
}

/// A client for `target` whose HTTP client finds the virtual hosts of
/// `BUCKET` and `MISSING` at Garage's address.
fn mk_client(g: &Garage, target: S3Target) -> S3Client {
    let addr = g.s3_addr();
    let mut http = reqwest::Client::builder();
    for bucket in [BUCKET, MISSING] {
        // The port comes from the URL; reqwest ignores this one.
        http = http.resolve(&format!("{bucket}.{}", Garage::ROOT_DOMAIN), addr);
    }
    S3Client::with_http(target, http)
}

/// Runs one request to its end (the Garage helpers block on their own
/// runtime, so the tests are not async themselves).
fn block<T>(request: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(request)
}

fn mk_garage(name: &str) -> (earshot_tests::TempDir, Garage) {
    let dir = earshot_tests::TempDir::new(name);
    let g = Garage::start(&dir.path().join("garage"), BUCKET);
    (dir, g)
}

fn style(path_style: bool) -> &'static str {
    if path_style {
        "path style"
    } else {
        "virtual-hosted"
    }
}

#[test]
fn lifecycle_rules_reach_the_named_bucket_both_ways() {
    let (_dir, g) = mk_garage("style-lifecycle");
    let key = (g.key_id.as_str(), g.secret.as_str());
    for (path_style, prefix) in [(true, "acme/path/"), (false, "acme/vhost/")] {
        let client = mk_client(&g, mk_target(&g, path_style, key));
        block(client.head_bucket(BUCKET)).unwrap_or_else(|e| panic!("{}: {e}", style(path_style)));
        let rule = PolicyRule {
            id: format!(
                "earshot/acme/{}",
                prefix.trim_end_matches('/').replace('/', "-")
            ),
            prefix: prefix.into(),
            days: 7,
        };
        let enforced = block(client.ensure_rule(BUCKET, &rule))
            .unwrap_or_else(|e| panic!("{}: {e}", style(path_style)));
        assert!(enforced.changed, "{}", style(path_style));
    }
    // Each style reads the rule the other wrote: one bucket.
    for path_style in [true, false] {
        let xml = block(mk_client(&g, mk_target(&g, path_style, key)).get_lifecycle(BUCKET))
            .unwrap()
            .expect("a lifecycle configuration");
        for prefix in ["acme/path/", "acme/vhost/"] {
            assert!(
                xml.contains(&format!("<Prefix>{prefix}</Prefix>")),
                "{}: {xml}",
                style(path_style)
            );
        }
    }
}

#[test]
fn the_host_names_the_bucket_with_virtual_hosted_requests() {
    let (_dir, g) = mk_garage("style-host");
    let key = (g.key_id.as_str(), g.secret.as_str());
    let client = mk_client(&g, mk_target(&g, false, key));
    // Same endpoint, same key, same path (`/`): only the Host differs.
    block(client.head_bucket(BUCKET)).unwrap();
    match block(client.head_bucket(MISSING)) {
        Err(StorageError::NoBucket(b)) => assert_eq!(b, MISSING),
        other => panic!("{other:?}"),
    }
    match block(client.probe_write(MISSING, "acme/office/", "acme/office/x")) {
        Err(StorageError::NoBucket(b)) => assert_eq!(b, MISSING),
        other => panic!("{other:?}"),
    }
    match block(client.get_lifecycle(MISSING)) {
        Err(StorageError::NoBucket(b)) => assert_eq!(b, MISSING),
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_recorders_key_passes_the_write_probe_both_ways() {
    let (_dir, g) = mk_garage("style-probe");
    let read_write = (g.key_id.clone(), g.secret.clone());
    // Garage's write permission includes delete, not read: the recorders'
    // recommended key, as near as Garage grants it.
    let write_only = g.key_with("earshot-write-only", &["--write"]);
    for path_style in [true, false] {
        for ((id, secret), want) in [
            (
                &read_write,
                Probed {
                    read_back: true,
                    deleted: true,
                },
            ),
            (
                &write_only,
                Probed {
                    read_back: false,
                    deleted: true,
                },
            ),
        ] {
            let client = mk_client(&g, mk_target(&g, path_style, (id, secret)));
            // Every character a policy's prefix may hold: keys are signed
            // as they are sent.
            for prefix in ["acme/office/", "acme/it's-(odd)!*~/"] {
                let key = probe_key(prefix, 0x5eed);
                let got = block(client.probe_write(BUCKET, prefix, &key))
                    .unwrap_or_else(|e| panic!("{} {prefix}: {e}", style(path_style)));
                assert_eq!(got, want, "{} {id} {prefix}", style(path_style));
            }
        }
    }
    // Every probe deleted itself.
    assert_eq!(g.list("acme/").unwrap(), Vec::<String>::new());
}

#[test]
fn the_write_probe_works_on_its_key_in_the_named_bucket() {
    let (_dir, g) = mk_garage("style-probe-key");
    g.create_bucket("acme");
    let key = (g.key_id.as_str(), g.secret.as_str());
    let probe = probe_key("acme/office/", 42);
    assert_eq!(probe, "acme/office/.earshot-probe/000000000000002a");
    // Another client (object_store, path style) puts an object at the
    // probe's key in the bucket. The virtual-hosted probe overwrites it,
    // reads its own bytes back and deletes it, so it is gone; a probe that
    // went elsewhere — e.g. without the bucket in host or path, into
    // bucket `acme` as key `office/...` — would leave it there.
    g.put(&probe, b"placeholder".to_vec());
    let client = mk_client(&g, mk_target(&g, false, key));
    let got = block(client.probe_write(BUCKET, "acme/office/", &probe)).unwrap();
    assert_eq!(
        got,
        Probed {
            read_back: true,
            deleted: true
        }
    );
    assert_eq!(g.list("acme/").unwrap(), Vec::<String>::new());
    assert_eq!(g.list_bucket("acme", "").unwrap(), Vec::<String>::new());
}

#[test]
fn a_key_that_can_only_read_fails_the_probe_clearly() {
    let (_dir, g) = mk_garage("style-read-only");
    let read_only = g.read_only_key();
    for path_style in [true, false] {
        let client = mk_client(&g, mk_target(&g, path_style, (&read_only.0, &read_only.1)));
        // It reaches the bucket: only writing is refused.
        block(client.head_bucket(BUCKET)).unwrap();
        let err = block(client.probe_write(BUCKET, "acme/office/", &probe_key("acme/office/", 1)))
            .unwrap_err();
        assert!(
            matches!(&err, StorageError::ReadOnly { bucket, prefix, status: 403 }
                if bucket == BUCKET && prefix == "acme/office/"),
            "{}: {err:?}",
            style(path_style)
        );
        assert_eq!(
            err.to_string(),
            "the recorders' key (the access key in the Secret) may read bucket recordings but not write under acme/office/ (HTTP 403 to PutObject): recordings could not be stored; give the key write permission there (s3:PutObject)"
        );
        assert!(!err.transient());
    }
    assert_eq!(g.list("acme/").unwrap(), Vec::<String>::new());
}

#[test]
fn a_wrong_secret_is_refused_as_the_secrets_key() {
    let (_dir, g) = mk_garage("style-denied");
    for path_style in [true, false] {
        let client = mk_client(
            &g,
            mk_target(&g, path_style, (&g.key_id, "0".repeat(64).as_str())),
        );
        let err = block(client.probe_write(BUCKET, "acme/office/", &probe_key("acme/office/", 2)))
            .unwrap_err();
        match &err {
            StorageError::Denied { bucket, whose, .. } => {
                assert_eq!(bucket, BUCKET);
                assert_eq!(*whose, "the access key in the Secret");
            }
            other => panic!("{}: {other:?}", style(path_style)),
        }
    }
}

#[test]
fn addresses_that_cannot_work_are_refused_before_any_request() {
    // `.invalid` never resolves: an attempt would be Unreachable.
    for (endpoint, bucket, path_style) in [
        ("https://s3.invalid", "acme.recordings", false),
        ("http://192.0.2.1:3900", "recordings", false),
        ("s3.invalid", "recordings", true),
    ] {
        let client = S3Client::new(S3Target {
            endpoint: endpoint.into(),
            region: "garage".into(),
            path_style,
            access_key_id: "GK".into(),
            secret_access_key: "secret".into(),
            operator_key: true,
        });
        for err in [
            block(client.head_bucket(bucket)).unwrap_err(),
            block(client.probe_write(bucket, "acme/office/", "acme/office/x")).unwrap_err(),
        ] {
            assert!(
                matches!(err, StorageError::Address(_)),
                "{endpoint} {bucket}: {err:?}"
            );
            assert!(!err.transient());
        }
    }
}
