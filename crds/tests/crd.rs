//! The generated CRD as the API server would see it: committed file in sync
//! with the code, structural, defaults valid, CEL rules compile and stay in
//! scope, and the samples accepted or refused for the right reason by the
//! very schema and rules in the committed file. The CEL cost budget is the
//! real API server's to judge: `operator/tests/cluster.rs` installs the CRD.

use std::path::{Path, PathBuf};

use earshot_crds::validate::{PolicyError, PolicyValidator, ViolationSource};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn committed_crd_text() -> String {
    std::fs::read_to_string(repo().join(earshot_crds::CRD_PATH))
        .expect("the generated CRD is committed; run `make generate`")
}

fn committed_crd() -> CustomResourceDefinition {
    serde_yaml::from_str(&committed_crd_text())
        .expect("committed CRD parses as a CustomResourceDefinition")
}

fn committed_validator() -> PolicyValidator {
    PolicyValidator::from_crd(&committed_crd()).expect("committed CRD compiles")
}

fn schema() -> Value {
    let crd = committed_crd();
    serde_json::to_value(
        crd.spec.versions[0]
            .schema
            .as_ref()
            .unwrap()
            .open_api_v3_schema
            .as_ref()
            .unwrap(),
    )
    .unwrap()
}

#[test]
fn committed_crd_matches_crdgen() {
    pretty_assertions::assert_eq!(
        committed_crd_text(),
        earshot_crds::crd_yaml(),
        "charts/earshot/crds is stale: run `make generate` and commit the result"
    );
}

#[test]
fn crd_names_scope_and_subresources() {
    let crd = committed_crd();
    assert_eq!(
        crd.metadata.name.as_deref(),
        Some("recordingpolicies.earshot.io")
    );
    assert_eq!(crd.spec.group, "earshot.io");
    assert_eq!(crd.spec.scope, "Namespaced");
    assert_eq!(crd.spec.names.kind, "RecordingPolicy");
    assert_eq!(crd.spec.names.short_names, Some(vec!["rp".to_owned()]));
    assert_eq!(crd.spec.names.categories, Some(vec!["earshot".to_owned()]));
    let version = &crd.spec.versions[0];
    assert_eq!(version.name, "v1alpha1");
    assert!(version.served && version.storage);
    assert!(
        version
            .subresources
            .as_ref()
            .and_then(|s| s.status.as_ref())
            .is_some(),
        "status subresource"
    );
    let columns: Vec<&str> = version
        .additional_printer_columns
        .as_ref()
        .unwrap()
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        columns,
        [
            "Ready",
            "Retention",
            "Users",
            "Always",
            "OnDemand",
            "Address",
            "Replicas",
            "Age"
        ]
    );
    // Each replica's node, addresses and readiness only with `-o wide`.
    let wide: Vec<&str> = version
        .additional_printer_columns
        .as_ref()
        .unwrap()
        .iter()
        .filter(|c| c.priority.unwrap_or(0) > 0)
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(wide, ["Replicas"]);
}

/// Walks every schema node with its JSON path.
fn walk<'a>(node: &'a Value, path: String, visit: &mut dyn FnMut(&str, &'a Value)) {
    visit(&path, node);
    if let Some(props) = node.get("properties").and_then(Value::as_object) {
        for (name, child) in props {
            walk(child, format!("{path}.{name}"), visit);
        }
    }
    if let Some(items) = node.get("items") {
        walk(items, format!("{path}[]"), visit);
    }
    if let Some(extra) = node.get("additionalProperties").filter(|v| v.is_object()) {
        walk(extra, format!("{path}{{}}"), visit);
    }
}

#[test]
fn schema_is_structural() {
    let schema = schema();
    let mut untyped = Vec::new();
    let mut forbidden = Vec::new();
    walk(&schema, String::new(), &mut |path, node| {
        let escapes = node.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true))
            || node.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
        if node.get("type").is_none() && !escapes {
            untyped.push(path.to_owned());
        }
        // Structural schemas may not use these at all (apiextensions validation).
        for key in ["$ref", "definitions", "anyOf", "oneOf", "allOf", "not"] {
            if node.get(key).is_some() && !escapes {
                forbidden.push(format!("{path}: {key}"));
            }
        }
        // Every description is kubectl-explain text: nothing documented may go without it.
        assert!(
            path.is_empty()
                || path.ends_with("[]")
                || path.ends_with("{}")
                || path.starts_with(".metadata")
                || node.get("description").is_some()
                || path.starts_with(".status.conditions")
                || path.starts_with(".spec.recorder.resources"),
            "{path} has no description for kubectl explain"
        );
    });
    assert!(untyped.is_empty(), "properties without a type: {untyped:?}");
    assert!(
        forbidden.is_empty(),
        "non-structural keywords: {forbidden:?}"
    );
}

#[test]
fn defaults_are_valid_against_their_schema() {
    let schema = schema();
    let mut checked = 0;
    walk(&schema, String::new(), &mut |path, node| {
        if let Some(default) = node.get("default") {
            let mut without = node.clone();
            without.as_object_mut().unwrap().remove("default");
            let validator = jsonschema::draft4::new(&without).unwrap();
            let errors: Vec<String> = validator
                .iter_errors(default)
                .map(|e| e.to_string())
                .collect();
            assert!(
                errors.is_empty(),
                "default of {path} is invalid: {errors:?}"
            );
            checked += 1;
        }
    });
    assert!(
        checked >= 10,
        "expected the schema's defaults to be checked, saw {checked}"
    );
}

#[test]
fn cel_rules_compile_and_stay_in_scope() {
    let schema = schema();
    let mut rules = 0;
    walk(&schema, String::new(), &mut |path, node| {
        let Some(list) = node
            .get("x-kubernetes-validations")
            .and_then(Value::as_array)
        else {
            return;
        };
        let compiled = kube_cel::compile_schema(node);
        assert!(
            compiled.compilation_errors().is_empty(),
            "{path}: {:?}",
            compiled.compilation_errors()
        );
        for rule in list {
            let text = rule["rule"].as_str().unwrap();
            assert!(
                rule.get("message").is_some(),
                "{path}: rule {text} has no message"
            );
            let warnings =
                kube_cel::analyze_rule(text, &compiled, kube_cel::ScopeContext::CrdValidation);
            // The analyser does not know macro-bound variables (`all(u, ...)`):
            // a scope warning is real only for a name no macro in the rule binds.
            let real: Vec<_> = warnings
                .iter()
                .filter(|w| {
                    w.kind != kube_cel::WarningKind::WrongScope
                        || !w
                            .message
                            .split('\'')
                            .nth(1)
                            .is_some_and(|var| text.contains(&format!("({var},")))
                })
                .collect();
            assert!(real.is_empty(), "{path}: rule {text}: {real:?}");
            rules += 1;
        }
    });
    assert_eq!(rules, 10, "every CEL rule of the CRD was analysed");
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn samples_are_accepted() {
    let validator = committed_validator();
    let files = yaml_files(&repo().join("config/samples"));
    assert!(files.len() >= 3, "at least three samples");
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let policy = validator
            .parse(&text)
            .unwrap_or_else(|e| panic!("{} is refused: {e}", file.display()));
        assert!(
            !policy.spec.users.is_empty(),
            "{} lists users",
            file.display()
        );
    }
}

#[test]
fn call_centre_sample_has_200_always_users() {
    let text = std::fs::read_to_string(repo().join("config/samples/call-centre.yaml")).unwrap();
    let policy = committed_validator().parse(&text).unwrap();
    let counts = policy.spec.user_counts();
    assert_eq!(
        (counts.total, counts.always, counts.on_demand, counts.never),
        (200, 200, 0, 0)
    );
}

#[test]
fn small_office_sample_has_the_three_modes_and_defaults_applied() {
    let text = std::fs::read_to_string(repo().join("config/samples/small-office.yaml")).unwrap();
    let policy = committed_validator().parse(&text).unwrap();
    let counts = policy.spec.user_counts();
    assert_eq!((counts.always, counts.on_demand, counts.never), (1, 1, 1));
    let user = &policy.spec.users[1];
    assert_eq!(policy.spec.effective_shortcode(user), Some("*5"));
    // Outside the NodePort range (30000-32767) and the ephemeral ports.
    assert_eq!(policy.spec.recorder.rtp_ports.min, 20000);
    assert_eq!(policy.spec.recorder.rtp_ports.max, 20999);
    assert_eq!(policy.spec.recorder.sip.port, 5060);
    let storage = policy.spec.storage.unwrap();
    assert_eq!(
        storage.credentials_secret.access_key_id_key,
        "AWS_ACCESS_KEY_ID"
    );
    assert!(storage.path_style);
}

/// Each invalid sample, the field the refusal names and words of its message.
const REFUSALS: &[(&str, ViolationSource, &str, &str)] = &[
    (
        "advertised-address-not-ip",
        ViolationSource::Rule,
        "advertisedAddress",
        "must be an IP address",
    ),
    (
        "advertised-address-too-long",
        ViolationSource::Schema,
        "spec.recorder.network.advertisedAddress",
        "Too long: may not be more than 45 bytes",
    ),
    (
        "announcement-prompt-missing",
        ViolationSource::Rule,
        "prompt",
        "needs announcement.prompt",
    ),
    (
        "default-ondemand-without-shortcode",
        ViolationSource::Rule,
        "users",
        "needs a shortcode",
    ),
    (
        "duplicate-extension",
        ViolationSource::Schema,
        "spec.users[1]",
        "Duplicate value: {\"extension\":\"008\"}",
    ),
    (
        "extension-format",
        ViolationSource::Schema,
        "spec.users[0].extension",
        "Invalid value: \"00 8\": spec.users[0].extension in body should match '^[A-Za-z0-9.\\-_+]{1,32}$'",
    ),
    (
        "extension-too-long",
        ViolationSource::Schema,
        "spec.users[0].extension",
        "in body should match",
    ),
    (
        "kernel-fast-path-without-host-network",
        ViolationSource::Rule,
        "network.kernelFastPath",
        "needs network.mode Host",
    ),
    (
        "mode-enum",
        ViolationSource::Schema,
        "spec.users[0].mode",
        "Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnDemand\", \"Never\"",
    ),
    (
        "name-ends-in-console",
        ViolationSource::Rule,
        "",
        "must not end in -console",
    ),
    (
        "ondemand-without-shortcode",
        ViolationSource::Rule,
        "users",
        "needs a shortcode",
    ),
    (
        "peer-source-not-cidr",
        ViolationSource::Rule,
        "sources",
        "must be CIDRs",
    ),
    (
        "peer-without-next-hop",
        ViolationSource::Rule,
        "peers",
        "nextHop is required",
    ),
    (
        "periodic-beep-too-short",
        ViolationSource::Rule,
        "periodicBeepSeconds",
        "must be 0 (off) or at least 5",
    ),
    (
        "retention-above-maximum",
        ViolationSource::Schema,
        "spec.retentionDays",
        "Invalid value: 4000: spec.retentionDays in body should be less than or equal to 3650",
    ),
    (
        "retention-below-minimum",
        ViolationSource::Schema,
        "spec.retentionDays",
        "Invalid value: 3: spec.retentionDays in body should be greater than or equal to 7",
    ),
    (
        "retention-not-a-number",
        ViolationSource::Schema,
        "spec.retentionDays",
        "Invalid value: \"string\": spec.retentionDays in body must be of type integer: \"string\"",
    ),
    (
        "rtp-range-inverted",
        ViolationSource::Rule,
        "rtpPorts",
        "min must not be greater than",
    ),
    (
        "shortcode-pattern",
        ViolationSource::Schema,
        "spec.users[0].shortcode",
        "Invalid value: \"#5\": spec.users[0].shortcode in body should match '^\\*[0-9]$'",
    ),
    (
        "storage-missing-bucket",
        ViolationSource::Schema,
        "spec.storage.bucket",
        "Required value",
    ),
];

#[test]
fn invalid_samples_are_refused_for_the_reason_their_name_gives() {
    let validator = committed_validator();
    let files = yaml_files(&repo().join("config/samples/invalid"));
    let names: Vec<String> = files
        .iter()
        .map(|f| f.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    let expected: Vec<&str> = REFUSALS.iter().map(|r| r.0).collect();
    assert_eq!(
        names, expected,
        "every invalid sample has an expected refusal and vice versa"
    );
    for (file, (name, source, field, words)) in files.iter().zip(REFUSALS) {
        let text = std::fs::read_to_string(file).unwrap();
        let err = validator.parse(&text).expect_err(name);
        let PolicyError::Invalid { violations, .. } = &err else {
            panic!("{name}: refused for the wrong reason: {err}");
        };
        assert_eq!(
            violations.len(),
            1,
            "{name}: exactly one violation, got {violations:?}"
        );
        let v = &violations[0];
        assert_eq!(v.source, *source, "{name}: {v}");
        assert!(
            v.field.contains(field),
            "{name}: field {:?} should name {field}",
            v.field
        );
        assert!(
            v.message.contains(words),
            "{name}: message {:?} should say {words:?}",
            v.message
        );
    }
}

#[test]
fn a_fixed_invalid_sample_is_accepted() {
    // The refusals come from the rules, not from something else in the files:
    // mending the one broken field makes each sample acceptable.
    let validator = committed_validator();
    let mend: &[(&str, &str, &str)] = &[
        ("shortcode-pattern", "\"#5\"", "\"*5\""),
        (
            "retention-below-minimum",
            "retentionDays: 3",
            "retentionDays: 7",
        ),
        (
            "duplicate-extension",
            "- extension: \"008\"\n      displayName: Ralf Gerrits (again)",
            "- extension: \"009\"\n      displayName: Ralf Gerrits (again)",
        ),
        (
            "ondemand-without-shortcode",
            "mode: OnDemand",
            "mode: OnDemand\n      shortcode: \"*1\"",
        ),
        ("rtp-range-inverted", "min: 31000", "min: 29000"),
        (
            "announcement-prompt-missing",
            "mode: Prompt",
            "mode: Prompt\n    prompt: {configMap: prompts, key: prompt.wav}",
        ),
        (
            "periodic-beep-too-short",
            "periodicBeepSeconds: 2",
            "periodicBeepSeconds: 5",
        ),
    ];
    for (name, from, to) in mend {
        let text =
            std::fs::read_to_string(repo().join(format!("config/samples/invalid/{name}.yaml")))
                .unwrap();
        assert!(text.contains(from), "{name} contains {from}");
        let fixed = text.replace(from, to);
        validator
            .parse(&fixed)
            .unwrap_or_else(|e| panic!("{name} mended is still refused: {e}"));
    }
}

#[test]
fn wrong_kind_and_garbage_are_refused_with_a_clear_error() {
    let validator = committed_validator();
    let err = validator
        .parse("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "document is v1/ConfigMap, expected apiVersion earshot.io/v1alpha1 kind RecordingPolicy"
    );
    assert!(matches!(
        validator.parse("spec: [unclosed"),
        Err(PolicyError::Syntax(_))
    ));
}
