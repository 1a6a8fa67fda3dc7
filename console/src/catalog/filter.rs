//! What the page, the CLI and the ZIP of a day select: a policy user,
//! a range of days, a number, complete or truncated.

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
        })
    }

    pub(super) fn reads_sidecars(&self) -> bool {
        self.user.is_some() || self.number.is_some() || self.complete.is_some()
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
    }
}
