//! An outcome compared with a saved one (`--expect`): the divergences beyond the
//! noise rules, and what was not compared and why.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use serde::Serialize;
use serde_json::Value;

use crate::replay::judge::{self, Exchange};
use crate::replay::ReplayError;

use super::{count, Outcome};

/// An outcome compared with a saved one (`--expect`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Expectation {
    /// Differences beyond the noise rules: any one fails the run. Each starts with
    /// what it concerns ("exchange 3 CMD_X: …", "mutation NAME: …", "new rules: …").
    pub divergences: Vec<String>,
    /// What was not compared and why (an exchange or mutation not exercised in one of
    /// the two runs): never a divergence.
    pub notes: Vec<String>,
    /// Indices of the exchanges that diverge.
    pub exchanges: BTreeSet<usize>,
    /// Names of the mutations whose verdict diverges.
    pub mutations: BTreeSet<String>,
    /// The rules raised beyond the recording's diverge.
    pub new_rules: bool,
    /// The replies to nothing sent diverge.
    pub orphans: bool,
    /// Everything compared: what it is, what the expectation holds, what this run
    /// found (for the record's "Expectation" table).
    pub compared: Vec<Compared>,
}

/// One item compared with the expectation.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Compared {
    pub what: String,
    pub expected: String,
    pub found: String,
    /// "matched", "diverges" or "not compared".
    pub status: String,
}

/// An exchange as a line: passed, its differences from the recording, or not exercised.
fn summary(x: &Exchange) -> String {
    match &x.skipped {
        Some(why) => why.clone(),
        None if x.diffs.is_empty() => "as recorded".into(),
        None => format!("differs from the recording: {}", x.diffs.join("; ")),
    }
}

impl Expectation {
    /// The divergences that start with `prefix`.
    pub(super) fn about(&self, prefix: &str) -> Vec<String> {
        self.divergences
            .iter()
            .filter(|d| d.starts_with(prefix))
            .cloned()
            .collect()
    }

    /// The comparison as text: the divergences, then what was not compared.
    pub fn write(&self, s: &mut String) {
        let _ = writeln!(
            s,
            "\nExpectation: {}",
            count(self.divergences.len(), "divergence", "divergences")
        );
        for x in &self.divergences {
            let _ = writeln!(s, "  {x}");
        }
        if !self.notes.is_empty() {
            let _ = writeln!(s, "Not compared with the expectation:");
            for x in &self.notes {
                let _ = writeln!(s, "  {x}");
            }
        }
    }
}

/// Compares an outcome with a saved one, beyond the noise rules: each exchange's live
/// answers and differences, each mutation's verdict, the new rules. An exchange or
/// mutation not exercised in either run is not compared; a note says so.
pub fn check_expected(expected: &Outcome, got: &Outcome) -> Expectation {
    let mut x = Expectation::default();
    if expected.answered_nothing() {
        // Saved by an older edgetap, which kept an outcome of silence: it proves
        // nothing, and a run with no device at all would match it.
        x.divergences.push(format!(
            "expectation: saved while the {} answered nothing (no reply, request or job \
             result): it proves nothing; save it again against a counterpart that answers",
            counterpart(expected)
        ));
    }
    if expected.exchanges.len() != got.exchanges.len() {
        x.divergences.push(format!(
            "exchanges: expected {}, got {}",
            expected.exchanges.len(),
            got.exchanges.len()
        ));
    }
    for (e, g) in expected.exchanges.iter().zip(&got.exchanges) {
        let (diverged, notes) = (x.divergences.len(), x.notes.len());
        compare_exchange(e, g, &mut x);
        let status = if x.divergences.len() > diverged {
            "diverges"
        } else if x.notes.len() > notes {
            "not compared"
        } else {
            "matched"
        };
        x.compared.push(Compared {
            what: format!("exchange {} {}", g.index, g.request),
            expected: summary(e),
            found: summary(g),
            status: status.into(),
        });
    }
    if expected.orphan_replies != got.orphan_replies {
        x.orphans = true;
        x.divergences.push(format!(
            "replies to nothing sent: expected {}, got {}",
            expected.orphan_replies.len(),
            got.orphan_replies.len()
        ));
    }
    compare_mutations(expected, got, &mut x);
    let rules = |o: &Outcome| -> BTreeSet<String> {
        o.new_findings.iter().map(|f| f.rule.clone()).collect()
    };
    let show = |r: BTreeSet<String>| match r.is_empty() {
        true => "none".to_string(),
        false => r.into_iter().collect::<Vec<_>>().join(", "),
    };
    x.compared.push(Compared {
        what: "rules raised beyond the recording's".into(),
        expected: show(rules(expected)),
        found: show(rules(got)),
        status: if rules(expected) == rules(got) {
            "matched"
        } else {
            "diverges"
        }
        .into(),
    });
    if rules(expected) != rules(got) {
        x.new_rules = true;
        x.divergences.push(format!(
            "new rules: expected {:?}, got {:?}",
            rules(expected),
            rules(got)
        ));
    }
    x
}

/// "edge DUT1" or "platform": who answers a replay of this outcome's role.
pub(super) fn counterpart(o: &Outcome) -> String {
    match o.role {
        crate::replay::Role::Platform => format!("edge {}", o.live_edge),
        crate::replay::Role::Edge => "platform".into(),
    }
}

/// [`check_expected`]'s divergences only.
pub fn compare_expected(expected: &Outcome, got: &Outcome) -> Vec<String> {
    check_expected(expected, got).divergences
}

/// "passed" or "failed", as an expectation file holds an exchange.
fn verdict_of(x: &Exchange) -> &'static str {
    if x.diffs.is_empty() {
        "passed"
    } else {
        "failed"
    }
}

/// One exchange of a saved outcome against the same exchange of this run.
fn compare_exchange(e: &Exchange, g: &Exchange, x: &mut Expectation) {
    let name = format!("exchange {} {}", g.index, g.request);
    if let Some(why) = &g.skipped {
        x.notes.push(format!(
            "{name}: {why}; the expectation has it {}: not counted as a divergence",
            verdict_of(e)
        ));
        return;
    }
    if e.skipped.is_some() {
        if g.diffs.is_empty() {
            x.notes.push(format!(
                "{name}: not exercised in the expectation, exercised in this run and as recorded"
            ));
        } else {
            x.exchanges.insert(g.index);
            x.divergences.push(format!(
                "{name}: not exercised in the expectation; in this run it differs from the recording: {}",
                g.diffs.join("; ")
            ));
        }
        return;
    }
    let mut v = vec![];
    let to = |a: &judge::Answer| serde_json::to_value(a).unwrap_or(Value::Null);
    judge::diff_expected("live", &to(&e.live), &to(&g.live), &mut v);
    if e.request != g.request {
        v.push(format!(
            "request: expected {}, got {}",
            e.request, g.request
        ));
    }
    if e.diffs != g.diffs {
        v.push(format!(
            "differences from the recording: expected {:?}, got {:?}",
            e.diffs, g.diffs
        ));
    }
    if !v.is_empty() {
        x.exchanges.insert(g.index);
    }
    x.divergences
        .extend(v.into_iter().map(|d| format!("{name}: {d}")));
}

/// Each mutation's verdict; one not exercised in either run is a note.
fn compare_mutations(expected: &Outcome, got: &Outcome, x: &mut Expectation) {
    let not_exercised: BTreeSet<&str> = expected
        .mutations
        .iter()
        .chain(&got.mutations)
        .filter(|m| m.skipped.is_some())
        .map(|m| m.name.as_str())
        .collect();
    let verdicts = |o: &Outcome| -> std::collections::BTreeMap<String, String> {
        o.mutations
            .iter()
            .filter(|m| !not_exercised.contains(m.name.as_str()))
            .map(|m| (m.name.clone(), m.verdict.clone()))
            .collect()
    };
    let (e, g) = (verdicts(expected), verdicts(got));
    let names: BTreeSet<&String> = e.keys().chain(g.keys()).collect();
    for n in names {
        let (a, b) = (e.get(n), g.get(n));
        let show = |v: Option<&String>| v.map_or("not run".to_string(), |v| v.clone());
        x.compared.push(Compared {
            what: format!("mutation {n}"),
            expected: show(a),
            found: show(b),
            status: if a == b { "matched" } else { "diverges" }.into(),
        });
        if a != b {
            x.mutations.insert(n.clone());
            x.divergences.push(format!(
                "mutation {n}: expected {}, got {}",
                show(a),
                show(b)
            ));
        }
    }
    for m in got.mutations.iter().filter(|m| m.skipped.is_some()) {
        x.compared.push(Compared {
            what: format!("mutation {}", m.name),
            expected: "-".into(),
            found: m.skipped.clone().unwrap_or_default(),
            status: "not compared".into(),
        });
        x.notes.push(format!(
            "mutation {}: {}: not counted as a divergence",
            m.name,
            m.skipped.as_deref().unwrap_or("")
        ));
    }
}

/// Loads a saved outcome.
pub fn load_expected(path: &std::path::Path) -> Result<Outcome, ReplayError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ReplayError::Expect(format!("{}: {e}", path.display())))?;
    serde_json::from_str(&text).map_err(|e| ReplayError::Expect(format!("{}: {e}", path.display())))
}
