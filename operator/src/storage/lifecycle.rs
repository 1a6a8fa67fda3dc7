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
    /// Whether it has an `Expiration.Date` (everything it covers goes then).
    pub dated: bool,
    /// Whether its filter names a tag (recordings carry none).
    pub tagged: bool,
    /// Where the `<Rule>…</Rule>` element is in the document.
    span: std::ops::Range<usize>,
}

/// A lifecycle configuration the store returned that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bucket lifecycle configuration is not valid XML: {0}")]
pub struct LifecycleError(pub String);

/// The rule ID of a policy: `earshot/<namespace>/<name>`. Neither name can
/// hold a `/`, so two policies never share one (the hyphenated IDs of
/// earlier releases did: `acme`/`eu-office` and `acme-eu`/`office`). S3
/// allows 255 characters; a namespace is at most 63, a policy name at most 40.
pub fn rule_id(namespace: &str, name: &str) -> String {
    format!("earshot/{namespace}/{name}")
}

/// The ID earlier releases gave the policy's rule. A rule with this ID and
/// the policy's own prefix is replaced by the policy's rule.
fn legacy_rule_id(ours: &PolicyRule) -> Option<String> {
    let mut parts = ours.id.strip_prefix("earshot/")?.splitn(2, '/');
    Some(format!("earshot-{}-{}", parts.next()?, parts.next()?))
}

/// The first enabled rule of `xml`, other than the policy's own, that would
/// delete some of its recordings before their retention ends: a shorter
/// `Expiration.Days` (or a fixed `Expiration.Date`) on a prefix that
/// overlaps the policy's (no prefix covers everything). S3 applies the
/// earliest expiration that matches, so the policy's rule alone is not
/// enough. Rules filtered by tag are not counted: recordings carry no tags.
pub fn shorter_rule(xml: &str, ours: &PolicyRule) -> Result<Option<FoundRule>, LifecycleError> {
    Ok(rules(xml)?.into_iter().find(|r| {
        let prefix = r.prefix.as_deref().unwrap_or("");
        r.id != ours.id
            && r.enabled
            && !r.tagged
            && (r.dated || r.days.is_some_and(|d| d < ours.days))
            && (ours.prefix.starts_with(prefix) || prefix.starts_with(&ours.prefix))
    }))
}

impl FoundRule {
    /// The rule for a status message: its ID, prefix and expiration, with
    /// what the store returned cut short and stripped to printable ASCII.
    pub fn describe(&self) -> String {
        let clean = |s: &str| -> String {
            s.chars()
                .filter(|c| c.is_ascii_graphic() || *c == ' ')
                .take(64)
                .collect()
        };
        let when = match (self.dated, self.days) {
            (true, _) => "on a fixed date".to_owned(),
            (false, Some(d)) => format!("after {d} days"),
            (false, None) => "early".to_owned(),
        };
        format!(
            "rule {:?} (prefix {:?}) expires objects {when}",
            clean(&self.id),
            clean(self.prefix.as_deref().unwrap_or(""))
        )
    }
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
                        dated: false,
                        tagged: false,
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
                        ["Expiration", "Date"] => r.dated = true,
                        ["Filter", "Tag", ..] | ["Filter", "And", "Tag", ..] => r.tagged = true,
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
    let legacy = legacy_rule_id(ours);
    let mine = |r: &&FoundRule| {
        r.id == ours.id
            || (legacy.as_deref() == Some(r.id.as_str())
                && r.prefix.as_deref() == Some(ours.prefix.as_str()))
    };
    if let Some(r) = found.iter().find(mine) {
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
    fn a_legacy_rule_of_the_policy_is_replaced_and_one_of_another_prefix_kept() {
        // FOREIGN holds `earshot-acme-office` on acme/office/: this policy's, by an earlier release.
        let merged = merge(Some(FOREIGN), &mk_rule(30)).unwrap();
        let ids: Vec<String> = rules(&merged).unwrap().into_iter().map(|r| r.id).collect();
        assert_eq!(ids, ["backups-tier", "earshot/acme/office"]);
        // The same legacy ID on another prefix is another policy's (acme-office/…?): kept.
        let other = FOREIGN.replace(
            "<Prefix>acme/office/</Prefix>",
            "<Prefix>acme-x/y/</Prefix>",
        );
        let merged = merge(Some(&other), &mk_rule(30)).unwrap();
        assert_eq!(rules(&merged).unwrap().len(), 3);
    }

    #[test]
    fn rule_ids_of_different_policies_differ() {
        let pairs = [
            (("acme", "eu-office"), ("acme-eu", "office")),
            (("a-b", "c"), ("a", "b-c")),
        ];
        for (x, y) in pairs {
            assert_ne!(rule_id(x.0, x.1), rule_id(y.0, y.1), "{x:?} {y:?}");
        }
    }

    #[test]
    fn a_shorter_rule_that_covers_the_prefix_is_found_and_others_are_not() {
        let doc = |rules: &str| {
            format!(
                "<LifecycleConfiguration>{rules}{}</LifecycleConfiguration>",
                rule_xml(&mk_rule(30))
            )
        };
        let rule = |id: &str, filter: &str, exp: &str| {
            format!(
                "<Rule><ID>{id}</ID><Filter>{filter}</Filter><Status>Enabled</Status><Expiration>{exp}</Expiration></Rule>"
            )
        };
        let found = |xml: String| shorter_rule(&xml, &mk_rule(30)).unwrap().map(|r| r.id);
        // Another tenant's rule on a parent prefix, a sub-prefix, the whole bucket, a date.
        for (id, filter, exp) in [
            ("evil", "<Prefix>acme/</Prefix>", "<Days>1</Days>"),
            (
                "sub",
                "<Prefix>acme/office/2026/</Prefix>",
                "<Days>7</Days>",
            ),
            ("all", "", "<Days>29</Days>"),
            (
                "dated",
                "<Prefix>acme</Prefix>",
                "<Date>2027-01-01T00:00:00Z</Date>",
            ),
        ] {
            assert_eq!(
                found(doc(&rule(id, filter, exp))).as_deref(),
                Some(id),
                "{id}"
            );
        }
        // Longer, elsewhere, tagged or disabled: harmless.
        for r in [
            rule("longer", "<Prefix>acme/</Prefix>", "<Days>90</Days>"),
            rule(
                "elsewhere",
                "<Prefix>acme/sales/</Prefix>",
                "<Days>1</Days>",
            ),
            rule(
                "tagged",
                "<And><Prefix>acme/</Prefix><Tag><Key>k</Key><Value>v</Value></Tag></And>",
                "<Days>1</Days>",
            ),
            rule("off", "<Prefix>acme/</Prefix>", "<Days>1</Days>").replace("Enabled", "Disabled"),
        ] {
            assert_eq!(found(doc(&r)), None, "{r}");
        }
        // What the store sent is cut short and stripped before it reaches a status.
        let long = format!("x&#10;y{}", "z".repeat(100));
        let evil = shorter_rule(
            &doc(&rule(&long, "<Prefix>acme/</Prefix>", "<Days>1</Days>")),
            &mk_rule(30),
        )
        .unwrap()
        .unwrap();
        let text = evil.describe();
        assert!(
            text.starts_with("rule \"xyzz")
                && text.ends_with("(prefix \"acme/\") expires objects after 1 days"),
            "{text}"
        );
        assert_eq!(text.matches('z').count(), 62, "{text}");
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
