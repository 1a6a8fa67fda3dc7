//! Object names two policies can never share: every object a policy
//! produces (and its StatefulSet's pods and volume claims, and its
//! lifecycle rule) is rendered for adversarial pairs of policy names and
//! namespaces, and no identity is produced twice. Names that would collide
//! are refused, by the CRD and by the operator.

use std::collections::BTreeMap;

use earshot_operator::config::OperatorConfig;
use earshot_operator::render::render;
use earshot_operator::storage::lifecycle::rule_id;
use serde_yaml::Value;

fn repo() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The sample policy (console on) as `namespace/name`, with two replicas
/// (so a PDB and two pods).
fn policy(ns: &str, name: &str) -> String {
    let sample = std::fs::read_to_string(repo().join("config/samples/small-office.yaml")).unwrap();
    let text = sample
        .replace("  name: office\n", &format!("  name: {name}\n"))
        .replace("  namespace: acme\n", &format!("  namespace: {ns}\n"))
        .replace("  recorder:\n", "  recorder:\n    replicas: 2\n");
    assert!(
        text.contains(&format!("name: {name}\n")) && text.contains("replicas: 2"),
        "{text}"
    );
    text
}

/// Every identity a policy claims: (kind, namespace, name) of each object,
/// of each pod and volume claim its StatefulSet makes, and its rule ID.
fn identities(ns: &str, name: &str) -> Result<Vec<(String, String, String)>, String> {
    let platform = OperatorConfig {
        allow_any_storage_endpoint: true,
        ..OperatorConfig::default()
    };
    let out = render(&policy(ns, name), &platform).map_err(|e| e.to_string())?;
    let mut ids = vec![("LifecycleRule".to_owned(), String::new(), rule_id(ns, name))];
    for doc in out.split("---\n").filter(|d| !d.trim().is_empty()) {
        let v: Value = serde_yaml::from_str(doc).unwrap();
        let kind = v["kind"].as_str().unwrap().to_owned();
        let obj = v["metadata"]["name"].as_str().unwrap().to_owned();
        assert_eq!(v["metadata"]["namespace"].as_str(), Some(ns));
        if kind == "StatefulSet" {
            let replicas = v["spec"]["replicas"].as_i64().unwrap();
            for i in 0..replicas {
                ids.push(("Pod".into(), ns.into(), format!("{obj}-{i}")));
                for claim in v["spec"]["volumeClaimTemplates"]
                    .as_sequence()
                    .into_iter()
                    .flatten()
                {
                    let claim = claim["metadata"]["name"].as_str().unwrap();
                    ids.push((
                        "PersistentVolumeClaim".into(),
                        ns.into(),
                        format!("{claim}-{obj}-{i}"),
                    ));
                }
            }
        }
        // Service names are DNS labels: at most 63 characters.
        assert!(obj.len() <= 63, "{kind} {obj} is too long for its name");
        ids.push((kind, ns.into(), obj));
    }
    Ok(ids)
}

#[test]
fn no_two_policies_share_an_object_a_pod_a_claim_or_a_rule() {
    let names = [
        "office",
        "console",
        "office-c",
        "a",
        "a-0",
        "a-1",
        "a-10",
        "a-1-0",
        "earshot",
        "earshot-office",
        "spool",
        "office-1",
        "sales-office",
        "eu-office",
        "office-consoles",
    ];
    let forty = "a".repeat(40);
    let mut claimed: BTreeMap<(String, String, String), String> = BTreeMap::new();
    let mut policies = 0;
    let spaces = [
        ("acme", names.to_vec()),
        ("acme-eu", vec!["office"]),
        ("acme", vec!["eu-office"]),
    ];
    for (ns, list) in spaces {
        for name in list.iter().copied().chain([forty.as_str()]) {
            let who = format!("{ns}/{name}");
            let Ok(ids) = identities(ns, name) else {
                panic!("{who} refused");
            };
            policies += 1;
            for id in ids {
                if let Some(other) = claimed.get(&id)
                    && *other != who
                {
                    panic!("{id:?} is claimed by {other} and {who}");
                }
                claimed.insert(id, who.clone());
            }
        }
    }
    assert!(policies >= 17, "{policies}");
}

#[test]
fn names_that_would_collide_are_refused() {
    for name in ["office-console", "a-console", &"a".repeat(41)] {
        let err = identities("acme", name).expect_err(name);
        assert!(err.contains("must not end in -console"), "{name}: {err}");
    }
}
