//! Retention rules against a real S3 server (Garage on loopback): foreign
//! rules survive, retention changes are reflected, two policies on one bucket
//! reconciled at once both keep their rule, a deleted policy's rule stays,
//! and a shorter rule over a policy's prefix is found.

use earshot_operator::storage::BucketLocks;
use earshot_operator::storage::lifecycle::{PolicyRule, rule_id, rules};
use earshot_operator::storage::s3::{S3Client, S3Target, StorageError};
use earshot_tests::TempDir;
use earshot_tests::garage::Garage;

fn mk_client(g: &Garage) -> S3Client {
    S3Client::new(S3Target {
        endpoint: g.endpoint.clone(),
        region: "garage".into(),
        path_style: true,
        access_key_id: g.key_id.clone(),
        secret_access_key: g.secret.clone(),
        operator_key: true,
    })
}

fn mk_rule(ns: &str, name: &str, days: i32) -> PolicyRule {
    PolicyRule {
        id: rule_id(ns, name),
        prefix: format!("{ns}/{name}/"),
        days,
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

const FOREIGN: &str = r#"<LifecycleConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Rule><ID>platform-tmp</ID><Filter><Prefix>tmp/</Prefix></Filter><Status>Enabled</Status><Expiration><Days>1</Days></Expiration></Rule></LifecycleConfiguration>"#;

#[test]
fn retention_rules_in_a_real_bucket() {
    let dir = TempDir::new("lifecycle");
    let g = Garage::start(dir.path(), "recordings");
    let s3 = mk_client(&g);
    rt().block_on(async {
        s3.head_bucket("recordings")
            .await
            .expect("credentials and bucket work");
        s3.put_lifecycle("recordings", FOREIGN)
            .await
            .expect("foreign rule set up");

        // A new policy: its rule is added, the foreign one kept.
        assert!(
            s3.ensure_rule("recordings", &mk_rule("acme", "office", 7))
                .await
                .unwrap().changed
        );
        let xml = s3.get_lifecycle("recordings").await.unwrap().unwrap();
        let found = rules(&xml).unwrap();
        let ids: Vec<&str> = found.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["platform-tmp", "earshot/acme/office"], "{xml}");
        assert_eq!(found[0].prefix.as_deref(), Some("tmp/"));
        assert_eq!(found[0].days, Some(1));

        // Retention 7 → 30 → 14 is what the bucket enforces each time.
        for days in [30, 14] {
            assert!(
                s3.ensure_rule("recordings", &mk_rule("acme", "office", days))
                    .await
                    .unwrap().changed
            );
            let xml = s3.get_lifecycle("recordings").await.unwrap().unwrap();
            let ours: Vec<_> = rules(&xml)
                .unwrap()
                .into_iter()
                .filter(|r| r.id == "earshot/acme/office")
                .collect();
            assert_eq!(ours.len(), 1);
            assert_eq!(ours[0].days, Some(days));
            assert_eq!(ours[0].prefix.as_deref(), Some("acme/office/"));
        }
        assert!(
            !s3.ensure_rule("recordings", &mk_rule("acme", "office", 14))
                .await
                .unwrap().changed,
            "no change, no write"
        );

        // Two policies reconciled at the same moment, serialized per bucket.
        let locks = BucketLocks::default();
        let tasks: Vec<_> = [("beta", "sales"), ("gamma", "support")]
            .into_iter()
            .map(|(ns, name)| {
                let (s3, locks, endpoint) = (s3.clone(), locks.clone(), g.endpoint.clone());
                tokio::spawn(async move {
                    let _turn = locks.lock(&endpoint, "recordings").await;
                    s3.ensure_rule("recordings", &mk_rule(ns, name, 90)).await
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let xml = s3.get_lifecycle("recordings").await.unwrap().unwrap();
        let ids: Vec<String> = rules(&xml).unwrap().into_iter().map(|r| r.id).collect();
        for id in [
            "platform-tmp",
            "earshot/acme/office",
            "earshot/beta/sales",
            "earshot/gamma/support",
        ] {
            assert!(ids.iter().any(|i| i == id), "{id} missing from {ids:?}");
        }

        // acme/office is deleted: the operator makes no storage call for it, and
        // the next policy's reconcile keeps its rule, so old recordings still expire.
        s3.ensure_rule("recordings", &mk_rule("delta", "ops", 7))
            .await
            .unwrap();
        let xml = s3.get_lifecycle("recordings").await.unwrap().unwrap();
        assert!(
            rules(&xml)
                .unwrap()
                .iter()
                .any(|r| r.id == "earshot/acme/office" && r.days == Some(14))
        );

        // Someone adds a 1-day rule on acme/ (a tenant with the bucket's key,
        // a platform mistake): ours stays, and the next check names it.
        let evil = xml.replace(
            "</LifecycleConfiguration>",
            "<Rule><ID>acme-cleanup</ID><Filter><Prefix>acme/</Prefix></Filter><Status>Enabled</Status><Expiration><Days>1</Days></Expiration></Rule></LifecycleConfiguration>",
        );
        s3.put_lifecycle("recordings", &evil).await.unwrap();
        let found = s3
            .ensure_rule("recordings", &mk_rule("acme", "office", 14))
            .await
            .unwrap();
        assert!(!found.changed);
        let shorter = found.shorter.expect("the 1-day rule on acme/ is found");
        assert_eq!((shorter.id.as_str(), shorter.days), ("acme-cleanup", Some(1)));
        let other = s3
            .ensure_rule("recordings", &mk_rule("beta", "sales", 90))
            .await
            .unwrap();
        assert_eq!(other.shorter, None, "beta/sales is not under acme/");
    });
}

#[test]
fn bad_credentials_and_missing_buckets_are_named() {
    let dir = TempDir::new("lifecycle-errors");
    let g = Garage::start(dir.path(), "recordings");
    let mut target = S3Target {
        endpoint: g.endpoint.clone(),
        region: "garage".into(),
        path_style: true,
        access_key_id: g.key_id.clone(),
        secret_access_key: "wrong".into(),
        operator_key: false,
    };
    rt().block_on(async {
        let err = S3Client::new(target.clone())
            .head_bucket("recordings")
            .await
            .unwrap_err();
        assert!(matches!(err, StorageError::Denied { .. }), "{err}");
        assert!(
            err.to_string()
                .contains("check the access key in the Secret")
        );
        target.secret_access_key = g.secret.clone();
        let err = S3Client::new(target.clone())
            .head_bucket("no-such-bucket")
            .await
            .unwrap_err();
        assert!(
            matches!(err, StorageError::NoBucket(_) | StorageError::Denied { .. }),
            "{err}"
        );
        target.endpoint = "http://127.0.0.1:1".into();
        let err = S3Client::new(target)
            .head_bucket("recordings")
            .await
            .unwrap_err();
        assert!(err.transient(), "unreachable is retried: {err}");
        assert!(err.to_string().contains("unreachable"));
    });
}

/// A store that answers every request with `answer`, counting connections.
fn hostile_store(answer: Vec<u8>) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut head = [0u8; 8192];
            let _ = conn.read(&mut head);
            let _ = conn.write_all(&answer);
        }
    });
    (url, seen)
}

fn hostile_client(url: &str) -> S3Client {
    S3Client::new(S3Target {
        endpoint: url.to_owned(),
        region: "garage".into(),
        path_style: true,
        access_key_id: "GKTENANT".into(),
        secret_access_key: "tenant-secret".into(),
        operator_key: false,
    })
}

#[test]
fn a_hostile_store_cannot_flood_echo_into_status_or_redirect_the_operator() {
    rt().block_on(async {
        // 64 MiB of lifecycle "configuration", without a length and with one.
        let mut flood = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n".to_vec();
        flood.extend(std::iter::repeat_n(b'<', 64 << 20));
        let (url, _) = hostile_store(flood);
        let err = hostile_client(&url)
            .get_lifecycle("recordings")
            .await
            .unwrap_err();
        assert!(matches!(err, StorageError::TooLarge { .. }), "{err}");
        let (url, _) = hostile_store(
            b"HTTP/1.1 200 OK\r\nContent-Length: 1073741824\r\n\r\n<".to_vec(),
        );
        let err = hostile_client(&url)
            .get_lifecycle("recordings")
            .await
            .unwrap_err();
        assert!(matches!(err, StorageError::TooLarge { .. }), "{err}");

        // An error that echoes the request and the key id back.
        let body = "<Error><Code>InternalError</Code><Message>Credential=GKTENANT/20261203 \
                    tenant-secret \u{1b}[31m</Message></Error>";
        let (url, _) = hostile_store(
            format!(
                "HTTP/1.1 500 Oops\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes(),
        );
        let err = hostile_client(&url)
            .get_lifecycle("recordings")
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("InternalError"), "{err}");
        for echoed in ["GKTENANT", "tenant-secret", "Credential", "\u{1b}"] {
            assert!(!err.contains(echoed), "{echoed:?} in {err:?}");
        }
        // A code that is not a code is not quoted either.
        assert_eq!(
            earshot_operator::storage::s3::error_code("<Code>see http://evil</Code>"),
            None
        );

        // A redirect elsewhere is not followed with the signed request.
        let (elsewhere, followed) = hostile_store(b"HTTP/1.1 200 OK\r\n\r\n".to_vec());
        let (url, _) = hostile_store(
            format!("HTTP/1.1 307 Temporary Redirect\r\nLocation: {elsewhere}/recordings\r\nContent-Length: 0\r\n\r\n")
                .into_bytes(),
        );
        let err = hostile_client(&url).head_bucket("recordings").await;
        assert!(err.is_err(), "a redirect is not an answer");
        assert_eq!(followed.load(std::sync::atomic::Ordering::SeqCst), 0);
    });
}

/// Two tenants in one bucket, each with a key that may only write, and the
/// operator with its own: neither tenant can change the bucket's rules,
/// read the other's recordings, or learn anything from the store.
#[test]
fn two_tenants_with_write_only_keys_share_a_bucket_the_operator_keeps_the_rules() {
    let dir = TempDir::new("two-tenants");
    let g = Garage::start(dir.path(), "recordings");
    // Garage::start's key is the platform's (owner): the operator's own.
    let operator = mk_client(&g);
    let (acme_id, acme_secret) = g.key_with("acme-recorders", &["--write"]);
    let (beta_id, beta_secret) = g.key_with("beta-recorders", &["--write"]);
    let tenant = |id: &str, secret: &str| {
        S3Client::new(S3Target {
            endpoint: g.endpoint.clone(),
            region: "garage".into(),
            path_style: true,
            access_key_id: id.to_owned(),
            secret_access_key: secret.to_owned(),
            operator_key: false,
        })
    };
    rt().block_on(async {
        operator
            .ensure_rule("recordings", &mk_rule("acme", "office", 30))
            .await
            .unwrap();
        operator
            .ensure_rule("recordings", &mk_rule("beta", "sales", 90))
            .await
            .unwrap();
        let before = operator.get_lifecycle("recordings").await.unwrap();

        // Beta, with its recorders' key, tries to shorten acme's retention.
        let evil = before.clone().unwrap().replace(
            "</LifecycleConfiguration>",
            "<Rule><ID>x</ID><Filter><Prefix>acme/</Prefix></Filter><Status>Enabled</Status><Expiration><Days>1</Days></Expiration></Rule></LifecycleConfiguration>",
        );
        let beta = tenant(&beta_id, &beta_secret);
        let refused = beta.put_lifecycle("recordings", &evil).await.unwrap_err();
        assert!(matches!(refused, StorageError::Denied { .. }), "{refused}");
        assert!(beta.get_lifecycle("recordings").await.is_err(), "nor read them");
        assert_eq!(operator.get_lifecycle("recordings").await.unwrap(), before);

    });
    // A recording acme's recorders stored: neither tenant's key reads
    // it (the recorder test stores one with such a key, for real).
    g.put("acme/office/2026/12/03/a.mp3", vec![7; 4000]);
    for (id, secret) in [(&beta_id, &beta_secret), (&acme_id, &acme_secret)] {
        let got = g.get_as("acme/office/2026/12/03/a.mp3", id, secret);
        assert!(got.is_err(), "read with a write-only key: {got:?}");
    }
}
