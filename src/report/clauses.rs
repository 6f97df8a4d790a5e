//! Clause verdicts: each clause row's messages, what could not be judged, its
//! findings counted by what they mean ([`Tally`]) and the status they give (pass,
//! fail, partly exercised, not exercised).

use serde::Serialize;

use super::filter::within;
use crate::finding::Severity;
use crate::rules::engine::Coverage;
use crate::rules::model::Check;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ClauseRow {
    pub clause: String,
    pub title: String,
    /// "pass", "fail", "partly exercised" (no error, but some checks needed
    /// history outside the input) or "not exercised".
    pub status: String,
    pub errors: u64,
    pub warnings: u64,
    pub messages: u64,
    /// Refused commands and failed jobs: conforming protocol, counted apart.
    pub outcomes: u64,
    /// What could not be judged and why (with how often), e.g. "edge E1: the
    /// input starts after its connection opened …".
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_exercised: Vec<String>,
}

/// A clause row before the findings are counted: its messages and what could not
/// be judged.
pub(super) fn unjudged_row(clause: &str, title: &str, exercised: &Coverage) -> ClauseRow {
    let not_exercised: Vec<String> = exercised
        .unseen
        .get(clause)
        .map(|reasons| {
            reasons
                .iter()
                .map(|(r, n)| {
                    if *n > 1 {
                        format!("{r} ({n}×)")
                    } else {
                        r.clone()
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    ClauseRow {
        clause: clause.to_string(),
        title: title.to_string(),
        status: String::new(),
        errors: 0,
        warnings: 0,
        messages: exercised.get(clause).copied().unwrap_or(0),
        outcomes: 0,
        not_exercised,
    }
}

/// The index of the most specific listed clause that holds `clause`: a finding of
/// 6.1.3.2 belongs to the row 6.1.3, not to 6.1.
pub(super) fn owner(clause: &str, listed: &[String]) -> Option<usize> {
    listed
        .iter()
        .enumerate()
        .filter(|(_, c)| within(clause, c))
        .max_by_key(|(_, c)| c.len())
        .map(|(i, _)| i)
}

/// Findings counted by what they mean: for a clause row and for an edge.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Tally {
    pub errors: u64,
    pub warnings: u64,
    /// Refused commands and failed jobs (info findings of outcome rules).
    pub outcomes: u64,
}

impl Tally {
    /// Counts `n` findings of `severity` (`outcome`: of an outcome rule).
    pub(crate) fn count(&mut self, severity: Severity, outcome: bool, n: u64) {
        match severity {
            Severity::Error => self.errors += n,
            Severity::Warning => self.warnings += n,
            Severity::Info if outcome => self.outcomes += n,
            Severity::Info => {}
        }
    }

    /// Writes the counts and the status they give into `row`.
    pub(super) fn set(self, row: &mut ClauseRow) {
        row.errors = self.errors;
        row.warnings = self.warnings;
        row.outcomes = self.outcomes;
        row.status = status(self.errors, row.messages, &row.not_exercised).into();
    }
}

fn status(errors: u64, messages: u64, not_exercised: &[String]) -> &'static str {
    if errors > 0 {
        "fail"
    } else if messages > 0 && !not_exercised.is_empty() {
        "partly exercised"
    } else if messages > 0 {
        "pass"
    } else {
        "not exercised"
    }
}

/// A refused command or a failed job: conforming protocol whose meaning the test
/// plan decides.
pub(super) fn is_outcome_check(check: &Check) -> bool {
    matches!(
        check,
        Check::ReplyErrorToValid { .. } | Check::JobFailed { .. }
    )
}
