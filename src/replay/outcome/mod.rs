//! What a replay found ([`Outcome`], the `--save-expect` file), how it reads (table,
//! JUnit, exit code), and its comparison with a saved one ([`Expectation`]).
//!
//! This file holds the outcome, its verdict (failed, nothing exercised, exit code) and
//! its [`Document`] for the renderers, made of: `text` (its table's text and its JSON
//! members), `junit` (its suites), `html` (its sections of the page); `expect`
//! compares it with a saved one.

mod expect;
mod html;
mod junit;
#[cfg(test)]
mod tests;
mod text;

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::finding::{Finding, Severity};
use crate::replay::judge::Exchange;
use crate::replay::mutate::Expect;
use crate::replay::Role;
use crate::report::{Document, Report, Standalone};

pub use expect::{check_expected, compare_expected, load_expected, Expectation};

/// A rule finding, short.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FindingBrief {
    pub rule: String,
    pub severity: Severity,
    pub line: String,
    /// The mutation that made the message it concerns: the test's doing, not the
    /// counterpart's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mutation: Option<String>,
}

impl FindingBrief {
    pub(super) fn of(f: &Finding) -> FindingBrief {
        FindingBrief {
            rule: f.rule.clone(),
            severity: f.severity,
            line: crate::report::one_line(f),
            mutation: None,
        }
    }

    /// A finding on a message the mutation `name` made.
    pub(super) fn injected(f: &Finding, name: &str) -> FindingBrief {
        FindingBrief {
            mutation: Some(name.to_string()),
            ..FindingBrief::of(f)
        }
    }
}

/// One mutation's result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MutationResult {
    pub name: String,
    pub about: String,
    /// The message mutated: type and topic, or why none.
    pub target: String,
    pub expect: Expect,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// What came back for the mutated message: "code 400 (msg)", or nothing.
    pub answers: Vec<String>,
    /// Rules the engine raised on the mutated message.
    pub engine: Vec<String>,
    /// The liveness probe: "answered 200" or what went wrong.
    pub probe: String,
    /// "pass", "fail" or "not applicable".
    pub verdict: String,
    pub detail: String,
    /// Why the mutation was not exercised: the message it changes was never sent,
    /// because the request it answers never came (verdict "not applicable").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}

/// What a replay found. Serialized, it is the `--save-expect` file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Outcome {
    pub source: String,
    pub role: Role,
    pub seed: u64,
    pub recorded_edge: String,
    /// Every edge the recording holds (the replay plays `recorded_edge`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recorded_edges: Vec<String>,
    pub live_edge: String,
    pub exchanges: Vec<Exchange>,
    pub mutations: Vec<MutationResult>,
    /// Rules (warning or error) the live replay raised that the recording did not.
    pub new_findings: Vec<FindingBrief>,
    /// Replies of the counterpart that answer nothing the replayer sent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub orphan_replies: Vec<Value>,
    /// Every finding of the live session (baseline and mutations) but those of
    /// `injected_findings`.
    pub live_findings: Vec<FindingBrief>,
    /// Findings on the messages the mutations made (and on the answers to them that
    /// are no error of the counterpart's): what the test injected, never charged to
    /// the counterpart; each names its mutation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub injected_findings: Vec<FindingBrief>,
    /// The broker connection was lost during the replay: why and when. The run
    /// proves nothing beyond that point (exit code 2), and the exchanges it cut off
    /// are not exercised, never the device's missing replies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker_lost: Option<String>,
    /// The run was interrupted (Ctrl-C, SIGTERM): which signal and when. The
    /// outcome covers what ran (exit code 130); the exchanges it cut off are not
    /// exercised.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interrupted: Option<String>,
    /// The counterpart published nothing at all during the replay: the differences
    /// are one cause (not online, another broker, another edge id), not many.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub counterpart_silent: bool,
    /// Requests the counterpart sent beyond the recording's (not answered: the
    /// recording holds no answer), e.g. EVENT_LINKUP again after a restart.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unexpected_requests: Vec<String>,
    /// The live session's test record (clauses, findings, message sequence), for
    /// `--format html`; not part of the saved expectation.
    #[serde(skip)]
    pub record: Option<crate::report::Report>,
}

impl Outcome {
    /// The replay diverged from its recording, a mutation failed, or the broker
    /// connection was lost.
    pub fn failed(&self) -> bool {
        self.exchanges.iter().any(|x| !x.diffs.is_empty())
            || !self.new_findings.is_empty()
            || !self.orphan_replies.is_empty()
            || self.mutations.iter().any(|m| m.verdict == "fail")
            || self.broker_lost.is_some()
    }

    /// The outcome as saved (`--save-expect`), the file `--expect` reads.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// The replay's record for the renderers. Its table, JSON and JUnit are the
    /// replay's own verdict ([`Standalone`]: the text `text` lays out, the members of
    /// `members`, the suites of `junit`); its page is the live session's report (or,
    /// for an outcome read back from a file, an empty one) under the sections of
    /// `html`. With an expectation, every form says how the run compares with it.
    pub fn document(&self, expectation: Option<&Expectation>) -> Document<'_> {
        let report = match &self.record {
            Some(r) => Cow::Borrowed(r),
            None => Cow::Owned(Report::build(
                vec![self.source.clone()],
                &Default::default(),
                &Default::default(),
                &crate::rules::RuleSet::builtin(),
                vec![],
            )),
        };
        let mut doc = Document::owning(report).titled("edgetap replay record");
        doc.sections = self.sections(expectation);
        doc.suites = self.suites(expectation);
        doc.members = self.members(expectation);
        doc.standalone = Some(Standalone {
            junit_name: "edgetap replay".into(),
            text: self.text(expectation),
        });
        doc
    }

    /// No exchange compared and no mutation exercised: nothing of the recording was
    /// played to the counterpart (an edge that only reported, a wrong --edge).
    pub fn nothing_exercised(&self) -> bool {
        self.exchanges.iter().all(|x| x.skipped.is_some())
            && self.mutations.iter().all(|m| m.verdict == "not applicable")
    }

    /// The counterpart answered nothing: no live request, reply or job result in
    /// any exchange, no answer to any mutation (or it published nothing at all).
    /// Such an outcome is no expectation: it would pass with no device at all.
    pub fn answered_nothing(&self) -> bool {
        self.counterpart_silent
            || (self.exchanges.iter().all(|x| {
                let l = &x.live;
                l.request.is_none()
                    && l.reply.is_none()
                    && l.job_result.is_none()
                    && l.extra.is_empty()
            }) && self.mutations.iter().all(|m| m.answers.is_empty()))
    }

    /// Who answers this replay: "edge DUT1" or "platform".
    pub fn counterpart(&self) -> String {
        expect::counterpart(self)
    }

    /// Exchanges not exercised (skipped).
    pub fn skipped_exchanges(&self) -> impl Iterator<Item = &Exchange> {
        self.exchanges.iter().filter(|x| x.skipped.is_some())
    }

    /// The exit code: 2 when the broker connection was lost (the run proves nothing
    /// beyond it); with an expectation, 1 on a divergence from it; with
    /// `saved` (`--save-expect` wrote the outcome) 0; else 1 on any difference from
    /// the recording.
    pub fn exit_code(&self, expectation: Option<&Expectation>, saved: bool) -> u8 {
        if self.interrupted.is_some() {
            return EXIT_INTERRUPTED;
        }
        if self.broker_lost.is_some() {
            return crate::report::EXIT_UNREADABLE;
        }
        // A replay that compared nothing proves nothing (3, as `analyze`), unless
        // its expectation diverges (an expected exchange that did not happen).
        if self.nothing_exercised() && expectation.is_none_or(|e| e.divergences.is_empty()) {
            return crate::report::EXIT_NOTHING_JUDGED;
        }
        match expectation {
            Some(e) => u8::from(!e.divergences.is_empty()),
            None if saved => 0,
            None => u8::from(self.failed()),
        }
    }
}

/// Exit code of an interrupted replay: 130, as a shell reports a Ctrl-C.
pub const EXIT_INTERRUPTED: u8 = 130;

/// "1 exchange", "2 exchanges".
fn count(n: usize, one: &str, many: &str) -> String {
    crate::report::junit::count(n, one, many)
}
