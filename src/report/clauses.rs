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
    /// history outside the input, or a request or job was still open when the input
    /// ended) or "not exercised".
    pub status: String,
    pub errors: u64,
    pub warnings: u64,
    pub messages: u64,
    /// Refused commands and failed jobs: conforming protocol, counted apart.
    pub outcomes: u64,
    /// What could not be judged and why (with how often), e.g. "edge E1: the
    /// input starts after its connection opened …", or "1 job had no result when
    /// the input ended (job.pending)".
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_exercised: Vec<String>,
    /// The reasons of `not_exercised` from the coverage alone: the unfinished work
    /// is counted again from the findings a filter keeps.
    #[serde(skip)]
    pub(super) unseen: Vec<String>,
}

impl ClauseRow {
    /// How many of `not_exercised` need history outside the input (the rest is
    /// work still open when it ended).
    pub(crate) fn unseen_len(&self) -> usize {
        self.unseen.len()
    }
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
        unseen: not_exercised.clone(),
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
    /// Requests without their reply and jobs without their result when the input
    /// ended (reply.pending, job.pending and their overdue forms): what the clause
    /// began and the input did not show finish.
    #[serde(skip)]
    pub unanswered: u64,
    #[serde(skip)]
    pub unfinished_jobs: u64,
}

/// What a rule's findings say was left open when the input ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unfinished {
    /// A request without its reply.
    Reply,
    /// A job without its result.
    Job,
}

/// Whether `check` reports work the input did not show finish.
pub(super) fn unfinished_kind(check: &Check) -> Option<Unfinished> {
    match check {
        Check::ReplyPending | Check::ReplyMissing { .. } => Some(Unfinished::Reply),
        Check::JobPending | Check::JobResultMissing { .. } => Some(Unfinished::Job),
        _ => None,
    }
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

    /// Counts `n` findings of work left open (`kind`).
    pub(crate) fn count_unfinished(&mut self, kind: Unfinished, n: u64) {
        match kind {
            Unfinished::Reply => self.unanswered += n,
            Unfinished::Job => self.unfinished_jobs += n,
        }
    }

    /// Writes the counts and the status they give into `row`: a clause whose
    /// request or job was still open when the input ended was not shown to work,
    /// so it is "partly exercised", never "pass".
    pub(super) fn set(self, row: &mut ClauseRow) {
        row.errors = self.errors;
        row.warnings = self.warnings;
        row.outcomes = self.outcomes;
        row.not_exercised = row.unseen.clone();
        if self.unanswered > 0 {
            row.not_exercised.push(format!(
                "{} had no reply when the input ended (reply.pending / reply.missing)",
                plural(self.unanswered, "request", "requests")
            ));
        }
        if self.unfinished_jobs > 0 {
            row.not_exercised.push(format!(
                "{} had no REP_JOB_RESULT when the input ended (job.pending / job.result_missing)",
                plural(self.unfinished_jobs, "job", "jobs")
            ));
        }
        row.status = status(self.errors, row.messages, &row.not_exercised).into();
    }
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
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
