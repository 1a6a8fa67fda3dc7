//! What the page, the CLI and the ZIP of a day select: a policy user,
//! a range of days, a number, complete or truncated, an SBC's id.

use earshot_contracts::layout::valid_day;

use super::Recording;

/// What to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// A policy user on the call (extension, exact).
    pub user: Option<String>,
    /// First day, `YYYY-MM-DD` (inclusive).
    pub from: Option<String>,
    /// Last day, `YYYY-MM-DD` (inclusive).
    pub to: Option<String>,
    /// Caller or callee number containing this.
    pub number: Option<String>,
    /// Only complete (`true`) or only truncated (`false`) recordings.
    pub complete: Option<bool>,
    /// An SBC's id of the call containing this: a SIPREC Session-ID or an
    /// identifier of the SRC's (a UCID, a Cisco session id).
    pub src_id: Option<String>,
}

impl Filter {
    /// The filter as given by a form or flags: blank fields dropped, days checked.
    pub fn checked(self) -> Result<Filter, String> {
        let given = |s: Option<String>| s.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
        let day = |s: Option<String>| match given(s) {
            Some(d) if !valid_day(&d) => Err(format!("{d:?} is not a date like 2026-12-02")),
            d => Ok(d),
        };
        Ok(Filter {
            user: given(self.user),
            from: day(self.from)?,
            to: day(self.to)?,
            number: given(self.number),
            complete: self.complete,
            src_id: given(self.src_id),
        })
    }

    pub(super) fn reads_sidecars(&self) -> bool {
        self.user.is_some()
            || self.number.is_some()
            || self.complete.is_some()
            || self.src_id.is_some()
    }

    pub(super) fn day_in_range(&self, day: &str) -> bool {
        // `day` is YYYY/MM/DD; compare as YYYY-MM-DD strings.
        let d = day.replace('/', "-");
        self.from.as_deref().is_none_or(|f| d.as_str() >= f)
            && self.to.as_deref().is_none_or(|t| d.as_str() <= t)
    }

    /// Whether a recording passes the filters that need its sidecar.
    pub fn matches(&self, r: &Recording) -> bool {
        self.user
            .as_deref()
            .is_none_or(|u| r.extensions().any(|e| e == u))
            && self
                .number
                .as_deref()
                .is_none_or(|n| r.caller().contains(n) || r.callee().contains(n))
            && self.complete.is_none_or(|c| r.complete() == c)
            && self
                .src_id
                .as_deref()
                .is_none_or(|id| r.src_ids().any(|s| s.contains(id)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use earshot_contracts::sidecar::{Sidecar, Siprec, SiprecIdentifier};

    /// A compliance search by the SBC's id finds the SIPREC recording and
    /// nothing recorded in the media path.
    #[test]
    fn an_sbcs_id_finds_its_siprec_recording() {
        let siprec = Sidecar {
            siprec: Some(Siprec {
                session_ids: vec!["ab30317f1a784dc48ff824d0d3715d86;remote=47755a9d".into()],
                identifiers: vec![SiprecIdentifier {
                    name: "ucid".into(),
                    value: "00FA08001A2B3C4D5E6F70;encoding=hex".into(),
                }],
                ..Siprec::default()
            }),
            ..Sidecar::default()
        };
        let a = Recording::from_sidecar("2026/12/06/a", &siprec);
        let b = Recording::from_sidecar("2026/12/06/b", &Sidecar::default());
        let by = |id: &str| {
            Filter {
                src_id: Some(id.into()),
                ..Default::default()
            }
            .checked()
            .unwrap()
        };
        for id in ["00FA08001A2B3C4D5E6F70", "ab30317f1a784dc4"] {
            assert!(by(id).reads_sidecars());
            assert!(by(id).matches(&a), "{id}");
            assert!(!by(id).matches(&b), "{id}");
        }
        assert!(!by("nothing-like-it").matches(&a));
        assert_eq!(a.src_ids().count(), 2);
    }
}
