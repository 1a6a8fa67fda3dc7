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
