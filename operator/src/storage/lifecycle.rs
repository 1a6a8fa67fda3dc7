//! The bucket's lifecycle configuration, edited without disturbing what
//! Earshot does not own: rules are located in the XML as they are and kept
//! byte for byte; only the rule whose ID is the policy's is replaced or
//! added. **No client required.**

use quick_xml::Reader;
use quick_xml::events::Event;

/// The rule that enforces one policy's retention.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyRule {
    /// Rule ID derived from namespace and policy name.
    pub id: String,
    /// The policy's key prefix (ends in `/`).
    pub prefix: String,
    /// Days after creation an object expires.
    pub days: i32,
}

/// A rule found in a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundRule {
    /// Its ID (empty when it has none).
    pub id: String,
    /// Its prefix filter, if any.
    pub prefix: Option<String>,
    /// `Expiration.Days`, if set.
    pub days: Option<i32>,
    /// `Status`.
    pub enabled: bool,
    /// Where the `<Rule>…</Rule>` element is in the document.
    span: std::ops::Range<usize>,
}

/// A lifecycle configuration the store returned that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bucket lifecycle configuration is not valid XML: {0}")]
pub struct LifecycleError(pub String);

/// The rule ID of a policy: `earshot-<namespace>-<name>` (S3 allows 255 characters;
/// both names are DNS labels of at most 63, so it always fits).
pub fn rule_id(namespace: &str, name: &str) -> String {
    format!("earshot-{namespace}-{name}")
}

fn escape(s: &str) -> String {
    quick_xml::escape::escape(s).into_owned()
}

/// The XML of the policy's rule.
pub fn rule_xml(r: &PolicyRule) -> String {
    format!(
        "<Rule><ID>{}</ID><Filter><Prefix>{}</Prefix></Filter><Status>Enabled</Status><Expiration><Days>{}</Days></Expiration><AbortIncompleteMultipartUpload><DaysAfterInitiation>1</DaysAfterInitiation></AbortIncompleteMultipartUpload></Rule>",
        escape(&r.id),
        escape(&r.prefix),
        r.days
    )
}

/// The rules of a configuration document.
pub fn rules(xml: &str) -> Result<Vec<FoundRule>, LifecycleError> {
    let mut reader = Reader::from_str(xml);
    let mut out = Vec::new();
    let mut path: Vec<String> = Vec::new();
    let mut current: Option<FoundRule> = None;
    let mut text = String::new();
    let err = |e: &dyn std::fmt::Display| LifecycleError(e.to_string());
    loop {
        let before = reader.buffer_position() as usize;
        match reader.read_event().map_err(|e| err(&e))? {
            Event::Start(e) => {
                let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                if name == "Rule" && path.len() == 1 {
                    let start = before + xml[before..].find('<').unwrap_or(0);
                    current = Some(FoundRule {
                        id: String::new(),
                        prefix: None,
                        days: None,
                        enabled: false,
                        span: start..start,
                    });
                }
                path.push(name);
                text.clear();
            }
            Event::Text(t) => text.push_str(&t.decode().map_err(|e| err(&e))?),
            Event::CData(t) => text.push_str(&String::from_utf8_lossy(&t)),
            Event::GeneralRef(r) => {
                // Entities arrive as their own events: `&amp;` is "amp".
                let name = r.decode().map_err(|e| err(&e))?;
                let resolved = match name.as_ref() {
                    "amp" => "&".to_owned(),
                    "lt" => "<".to_owned(),
                    "gt" => ">".to_owned(),
                    "quot" => "\"".to_owned(),
                    "apos" => "'".to_owned(),
                    other => r
                        .resolve_char_ref()
                        .ok()
                        .flatten()
                        .map(String::from)
                        .unwrap_or_else(|| format!("&{other};")),
                };
                text.push_str(&resolved);
            }
            Event::End(_) => {
                if let Some(r) = current.as_mut() {
                    let inner: Vec<&str> = path.iter().skip(2).map(String::as_str).collect();
                    let value = text.trim().to_owned();
                    match inner.as_slice() {
                        ["ID"] => r.id = value,
                        ["Prefix"] | ["Filter", "Prefix"] | ["Filter", "And", "Prefix"] => {
                            r.prefix = Some(value)
                        }
                        ["Expiration", "Days"] => r.days = value.parse().ok(),
                        ["Status"] => r.enabled = value == "Enabled",
                        _ => {}
                    }
                }
                text.clear();
                let name = path.pop().unwrap_or_default();
                if name == "Rule"
                    && path.len() == 1
                    && let Some(mut r) = current.take()
                {
                    r.span.end = reader.buffer_position() as usize;
                    out.push(r);
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(out)
}

/// The configuration with the policy's rule in place: replaced where a rule
/// with its ID exists, appended otherwise; every other rule kept as it was.
pub fn merge(existing: Option<&str>, ours: &PolicyRule) -> Result<String, LifecycleError> {
    const EMPTY: &str = "<LifecycleConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"></LifecycleConfiguration>";
    let xml = existing.filter(|x| !x.trim().is_empty()).unwrap_or(EMPTY);
    let found = rules(xml)?;
    let new_rule = rule_xml(ours);
    if let Some(r) = found.iter().find(|r| r.id == ours.id) {
        return Ok(format!(
            "{}{new_rule}{}",
            &xml[..r.span.start],
            &xml[r.span.end..]
        ));
    }
    let close = xml
        .rfind("</LifecycleConfiguration>")
        .ok_or_else(|| LifecycleError("no </LifecycleConfiguration>".into()))?;
    Ok(format!("{}{new_rule}{}", &xml[..close], &xml[close..]))
}

/// Whether the configuration enforces the policy's rule as wanted.
pub fn enforces(xml: &str, ours: &PolicyRule) -> Result<bool, LifecycleError> {
    Ok(rules(xml)?.iter().any(|r| {
        r.id == ours.id
            && r.enabled
            && r.days == Some(ours.days)
            && r.prefix.as_deref() == Some(ours.prefix.as_str())
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FOREIGN: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<LifecycleConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Rule><ID>backups-tier</ID><Filter><And><Prefix>backups/</Prefix><Tag><Key>k</Key><Value>v</Value></Tag></And></Filter><Status>Enabled</Status><Transition><Days>30</Days><StorageClass>GLACIER</StorageClass></Transition></Rule>
  <Rule><ID>earshot-acme-office</ID><Filter><Prefix>acme/office/</Prefix></Filter><Status>Enabled</Status><Expiration><Days>7</Days></Expiration></Rule>
</LifecycleConfiguration>"#;

    fn mk_rule(days: i32) -> PolicyRule {
        PolicyRule {
            id: rule_id("acme", "office"),
            prefix: "acme/office/".into(),
            days,
        }
    }

    #[test]
    fn finds_rules_with_their_fields() {
        let found = rules(FOREIGN).unwrap();
        assert_eq!(found.len(), 2);
        assert_eq!(
            (
                found[0].id.as_str(),
                found[0].prefix.as_deref(),
                found[0].days
            ),
            ("backups-tier", Some("backups/"), None)
        );
        assert_eq!(
            (found[1].id.as_str(), found[1].days, found[1].enabled),
            ("earshot-acme-office", Some(7), true)
        );
    }

    #[test]
    fn replaces_only_our_rule_and_keeps_the_rest_byte_for_byte() {
        let merged = merge(Some(FOREIGN), &mk_rule(30)).unwrap();
        let foreign_rule = &FOREIGN
            [FOREIGN.find("<Rule><ID>backups").unwrap()..FOREIGN.find("</Rule>").unwrap() + 7];
        assert!(merged.contains(foreign_rule), "foreign rule untouched");
        assert!(enforces(&merged, &mk_rule(30)).unwrap());
        assert!(!enforces(&merged, &mk_rule(7)).unwrap());
        assert_eq!(rules(&merged).unwrap().len(), 2, "replaced, not duplicated");
        // Idempotent.
        assert_eq!(merge(Some(&merged), &mk_rule(30)).unwrap(), merged);
    }

    #[test]
    fn adds_to_an_empty_or_missing_configuration() {
        let merged = merge(None, &mk_rule(14)).unwrap();
        assert!(enforces(&merged, &mk_rule(14)).unwrap());
        let other = PolicyRule {
            id: rule_id("acme", "sales"),
            prefix: "acme/sales/".into(),
            days: 90,
        };
        let both = merge(Some(&merged), &other).unwrap();
        assert!(enforces(&both, &mk_rule(14)).unwrap() && enforces(&both, &other).unwrap());
    }

    #[test]
    fn escapes_and_refuses_garbage() {
        let odd = PolicyRule {
            id: "earshot-a-b".into(),
            prefix: "a&b/".into(),
            days: 7,
        };
        let xml = merge(None, &odd).unwrap();
        assert!(xml.contains("<Prefix>a&amp;b/</Prefix>"));
        assert!(enforces(&xml, &odd).unwrap());
        assert!(merge(Some("<LifecycleConfiguration><Rule>"), &mk_rule(7)).is_err());
    }
}
