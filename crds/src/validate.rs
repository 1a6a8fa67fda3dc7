//! Client-side admission of `RecordingPolicy` documents: the OpenAPI schema of
//! the CRD (types, patterns, enums, bounds) through a JSON Schema validator,
//! then its `x-kubernetes-validations` CEL rules through a CEL interpreter.
//! Both read the CRD itself, never a copy of its rules, so what passes here
//! passes the API server and what fails here fails there with the same message.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube_cel::{CompiledSchema, RootContext, Validator as CelValidator};
use serde_json::Value;

use crate::RecordingPolicy;

/// Why a validator could not be built from a CRD.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// The CRD has no served version with an OpenAPI schema.
    #[error("CRD {0} has no version with an openAPIV3Schema")]
    NoSchema(String),
    /// The schema is not a valid JSON Schema.
    #[error("CRD {crd} has an invalid schema: {message}")]
    InvalidSchema {
        /// The CRD's name.
        crd: String,
        /// What the JSON Schema compiler said.
        message: String,
    },
    /// A CEL rule in the CRD does not compile.
    #[error("CRD {crd} has a CEL rule that does not compile: {message}")]
    InvalidRule {
        /// The CRD's name.
        crd: String,
        /// What the CEL compiler said.
        message: String,
    },
}

/// Why a policy document was refused.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The file is not YAML or JSON.
    #[error("policy is not valid YAML: {0}")]
    Syntax(String),
    /// The document is not a RecordingPolicy of this API version.
    #[error("document is {found}, expected apiVersion earshot.io/v1alpha1 kind RecordingPolicy")]
    WrongKind {
        /// `apiVersion/kind` of the document.
        found: String,
    },
    /// The API server would refuse the policy.
    #[error("policy {name} is invalid:\n{}", .violations.iter().map(|v| format!("  - {v}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        /// `metadata.name` of the policy.
        name: String,
        /// Every rule the policy breaks.
        violations: Vec<Violation>,
    },
    /// Valid by the schema but not representable in the Rust types: a bug.
    #[error("policy passed validation but does not deserialize: {0}")]
    Deserialize(String),
}

/// One broken rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Path of the offending field, e.g. `spec.retentionDays`.
    pub field: String,
    /// What is wrong, in the words the API server would use.
    pub message: String,
    /// Which layer of the CRD caught it.
    pub source: ViolationSource,
}

/// Which part of the CRD's validation refused a document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViolationSource {
    /// The OpenAPI schema: type, pattern, enum, bounds, required fields.
    Schema,
    /// A CEL rule (`x-kubernetes-validations`).
    Rule,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

/// Validates documents against one CRD's schema and CEL rules.
pub struct PolicyValidator {
    raw_schema: Value,
    schema: jsonschema::Validator,
    rules: CompiledSchema,
    cel: CelValidator,
    root: RootContext,
}

impl PolicyValidator {
    /// A validator for the CRD compiled into this binary.
    pub fn new() -> Self {
        // The compiled-in CRD is checked by the crate's tests (`crd_rules_compile`),
        // so building a validator from it cannot fail in a released binary.
        Self::from_crd(&crate::crd()).expect("the built-in RecordingPolicy CRD compiles")
    }

    /// A validator for the storage version of `crd`.
    pub fn from_crd(crd: &CustomResourceDefinition) -> Result<Self, SchemaError> {
        let name = crd.metadata.name.clone().unwrap_or_default();
        let version = crd
            .spec
            .versions
            .iter()
            .find(|v| v.storage)
            .ok_or_else(|| SchemaError::NoSchema(name.clone()))?;
        let schema = version
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .ok_or_else(|| SchemaError::NoSchema(name.clone()))?;
        let schema = serde_json::to_value(schema).map_err(|e| SchemaError::InvalidSchema {
            crd: name.clone(),
            message: e.to_string(),
        })?;
        let validator =
            jsonschema::draft4::new(&schema).map_err(|e| SchemaError::InvalidSchema {
                crd: name.clone(),
                message: e.to_string(),
            })?;
        let rules = kube_cel::compile_schema(&schema);

        let compile_errors: Vec<String> = rules
            .compilation_errors()
            .iter()
            .map(|e| e.to_string())
            .collect();
        if !compile_errors.is_empty() {
            return Err(SchemaError::InvalidRule {
                crd: name,
                message: compile_errors.join("; "),
            });
        }
        Ok(Self {
            raw_schema: schema,
            schema: validator,
            rules,
            cel: CelValidator::new(),
            root: RootContext {
                api_version: format!("{}/{}", crd.spec.group, version.name),
                api_group: crd.spec.group.clone(),
                kind: crd.spec.names.kind.clone(),
            },
        })
    }

    /// Every rule `object` breaks; empty when the API server would accept it.
    /// Schema violations come first: like the API server, CEL rules only run
    /// on objects whose structure is valid.
    pub fn violations(&self, object: &Value) -> Vec<Violation> {
        let mut schema: Vec<Violation> = self
            .schema
            .iter_errors(object)
            .map(|e| schema_violation(&e))
            .collect();
        list_type_violations(&self.raw_schema, object, String::new(), &mut schema);
        if !schema.is_empty() {
            return schema;
        }
        match self
            .cel
            .validate_compiled_with_context(&self.rules, object, None, Some(&self.root))
        {
            Ok(()) => Vec::new(),
            Err(errors) => errors
                .iter()
                .map(|e| Violation {
                    field: e.field_path.clone(),
                    message: e.message.clone(),
                    source: ViolationSource::Rule,
                })
                .collect(),
        }
    }

    /// Parses a YAML (or JSON) document into a policy, refusing it with every
    /// violation when the API server would.
    pub fn parse(&self, text: &str) -> Result<RecordingPolicy, PolicyError> {
        let value: Value =
            serde_yaml::from_str(text).map_err(|e| PolicyError::Syntax(e.to_string()))?;
        self.check(value)
    }

    /// Like [`parse`](Self::parse), for a document already in JSON form.
    pub fn check(&self, value: Value) -> Result<RecordingPolicy, PolicyError> {
        let api_version = value
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or("");
        let kind = value.get("kind").and_then(Value::as_str).unwrap_or("");
        if api_version != self.root.api_version || kind != self.root.kind {
            return Err(PolicyError::WrongKind {
                found: format!("{api_version}/{kind}"),
            });
        }
        let violations = self.violations(&value);
        if !violations.is_empty() {
            let name = value
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("<unnamed>")
                .to_owned();
            return Err(PolicyError::Invalid { name, violations });
        }
        serde_json::from_value(value).map_err(|e| PolicyError::Deserialize(e.to_string()))
    }
}

impl Default for PolicyValidator {
    fn default() -> Self {
        Self::new()
    }
}

/// Duplicate keys in `x-kubernetes-list-type: map` lists and duplicate items
/// in `set` lists, which the API server refuses before any CEL rule runs
/// ("Duplicate value"). Driven by the schema's own list types.
fn list_type_violations(schema: &Value, value: &Value, path: String, out: &mut Vec<Violation>) {
    match value {
        Value::Object(fields) => {
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (name, child) in fields {
                    if let Some(child_schema) = props.get(name) {
                        let child_path = if path.is_empty() {
                            name.clone()
                        } else {
                            format!("{path}.{name}")
                        };
                        list_type_violations(child_schema, child, child_path, out);
                    }
                }
            }
        }
        Value::Array(items) => {
            let keys: Vec<&str> = schema
                .get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
                .map(|k| k.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let identity = |item: &Value| -> Value {
                match schema.get("x-kubernetes-list-type").and_then(Value::as_str) {
                    Some("map") => Value::Object(
                        keys.iter()
                            .filter_map(|k| item.get(*k).map(|v| ((*k).to_owned(), v.clone())))
                            .collect(),
                    ),
                    _ => item.clone(),
                }
            };
            if matches!(
                schema.get("x-kubernetes-list-type").and_then(Value::as_str),
                Some("map" | "set")
            ) {
                let mut seen = std::collections::HashSet::new();
                for (i, item) in items.iter().enumerate() {
                    let id = identity(item);
                    if !seen.insert(id.to_string()) {
                        out.push(Violation {
                            field: format!("{path}[{i}]"),
                            message: format!("Duplicate value: {id}"),
                            source: ViolationSource::Schema,
                        });
                    }
                }
            }
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    list_type_violations(item_schema, item, format!("{path}[{i}]"), out);
                }
            }
        }
        _ => {}
    }
}

/// A schema error in the API server's words (apiextensions-apiserver's
/// `kubeOpenAPIResultToFieldErrors` over kube-openapi's messages), so that
/// `earshot-operator check` and `kubectl apply` print the same line.
fn schema_violation(e: &jsonschema::ValidationError<'_>) -> Violation {
    use jsonschema::error::ValidationErrorKind as Kind;
    let mut field = json_pointer_to_path(&e.instance_path().to_string());
    let value = e.instance();
    let bad = go_value(value);
    let num = |v: &Value| match v.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
        _ => v.to_string(),
    };
    let message = match e.kind() {
        Kind::Required { property } => {
            let name = property
                .as_str()
                .map_or_else(|| property.to_string(), str::to_owned);
            field = if field.is_empty() {
                name
            } else {
                format!("{field}.{name}")
            };
            "Required value".to_owned()
        }
        Kind::Enum { options } => {
            let values: Vec<String> = options
                .as_array()
                .map(|o| {
                    o.iter()
                        .map(|v| match v.as_str() {
                            Some(s) => Value::String(s.to_owned()).to_string(),
                            None => Value::String(v.to_string()).to_string(),
                        })
                        .collect()
                })
                .unwrap_or_default();
            format!(
                "Unsupported value: {bad}: supported values: {}",
                values.join(", ")
            )
        }
        Kind::MaxLength { limit } => {
            let unit = if *limit == 1 { "byte" } else { "bytes" };
            format!("Too long: may not be more than {limit} {unit}")
        }
        Kind::MaxItems { limit } => {
            let unit = if *limit == 1 { "item" } else { "items" };
            let actual = value.as_array().map_or(0, Vec::len);
            format!("Too many: {actual}: must have at most {limit} {unit}")
        }
        Kind::MaxProperties { limit } => {
            let actual = value.as_object().map_or(0, |o| o.len());
            format!("Too many: {actual}: must have at most {limit} items")
        }
        Kind::Type { kind } => {
            let want = match kind {
                jsonschema::error::TypeKind::Single(t) => t.to_string(),
                jsonschema::error::TypeKind::Multiple(set) => format!("{set:?}"),
            };
            // kube-openapi reports the value's type, not the value, as bad.
            let got = json_type(value);
            format!("Invalid value: \"{got}\": {field} in body must be of type {want}: \"{got}\"")
        }
        Kind::Pattern { pattern } => {
            format!("Invalid value: {bad}: {field} in body should match '{pattern}'")
        }
        Kind::Minimum { limit } => format!(
            "Invalid value: {bad}: {field} in body should be greater than or equal to {}",
            num(limit)
        ),
        Kind::Maximum { limit } => format!(
            "Invalid value: {bad}: {field} in body should be less than or equal to {}",
            num(limit)
        ),
        Kind::ExclusiveMinimum { limit } => format!(
            "Invalid value: {bad}: {field} in body should be greater than {}",
            num(limit)
        ),
        Kind::ExclusiveMaximum { limit } => format!(
            "Invalid value: {bad}: {field} in body should be less than {}",
            num(limit)
        ),
        Kind::MinLength { limit } => {
            format!("Invalid value: {bad}: {field} in body should be at least {limit} chars long")
        }
        Kind::MinItems { limit } => {
            format!("Invalid value: {bad}: {field} in body should have at least {limit} items")
        }
        _ => format!("Invalid value: {bad}: {e}"),
    };
    Violation {
        field,
        message,
        source: ViolationSource::Schema,
    }
}

/// A bad value as Go's field errors print it: numbers and booleans bare,
/// strings quoted, anything else as JSON.
fn go_value(v: &Value) -> String {
    match v {
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::String(_) => v.to_string(),
        Value::Null => "\"\"".to_owned(),
        _ => serde_json::to_string(v).unwrap_or_default(),
    }
}

/// The JSON type name kube-openapi reports for a value.
fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// `/spec/users/0/extension` → `spec.users[0].extension`, the form `kubectl` prints.
fn json_pointer_to_path(pointer: &str) -> String {
    let mut out = String::new();
    for part in pointer.split('/').filter(|p| !p.is_empty()) {
        if part.chars().all(|c| c.is_ascii_digit()) {
            out.push_str(&format!("[{part}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&part.replace("~1", "/").replace("~0", "~"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointer_paths_read_like_kubectl() {
        assert_eq!(
            json_pointer_to_path("/spec/users/3/extension"),
            "spec.users[3].extension"
        );
        assert_eq!(json_pointer_to_path(""), "");
    }
}
