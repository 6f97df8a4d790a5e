//! What a replay found ([`Outcome`], the `--save-expect` file), how it reads (table,
//! JUnit, exit code), and its comparison with a saved one ([`Expectation`]).

use std::collections::BTreeSet;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::judge::{self, Exchange};
use super::mutate::Expect;
use super::{ReplayError, Role};
use crate::finding::{Finding, Severity};

/// A rule finding, short.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FindingBrief {
    pub rule: String,
    pub severity: Severity,
    pub line: String,
}

impl FindingBrief {
    pub(super) fn of(f: &Finding) -> FindingBrief {
        FindingBrief {
            rule: f.rule.clone(),
            severity: f.severity,
            line: crate::report::one_line(f),
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
    /// Every finding of the live session (baseline and mutations).
    pub live_findings: Vec<FindingBrief>,
    /// The broker connection was lost during the replay: why and when. The run
    /// proves nothing beyond that point (exit code 2), and the exchanges it cut off
    /// are not exercised, never the device's missing replies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker_lost: Option<String>,
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

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// The report for scripts: the outcome (the form `--save-expect` writes), with
    /// `result`, the table's last line, and with an expectation its comparison
    /// (`expectation.divergences`, `notes`, the exchanges and mutations that diverge).
    pub fn to_json_with(&self, expectation: Option<&Expectation>) -> String {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if let Value::Object(o) = &mut v {
            o.insert(
                "result".into(),
                Value::from(
                    self.result_line(expectation)
                        .trim_start_matches("RESULT: ")
                        .to_string(),
                ),
            );
            if let Some(e) = expectation {
                o.insert(
                    "expectation".into(),
                    serde_json::to_value(e).unwrap_or_default(),
                );
            }
        }
        serde_json::to_string_pretty(&v).unwrap_or_default()
    }

    /// The report for people, without an expectation.
    pub fn to_table(&self) -> String {
        self.to_table_with(None)
    }

    /// The report for people. With an expectation, a difference from the recording
    /// that the expectation holds is shown as `known`, and the result line is the
    /// expectation's verdict.
    pub fn to_table_with(&self, expectation: Option<&Expectation>) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "replay of {} as {} (recorded edge {}, live edge {}), seed {}",
            self.source,
            self.role.as_str(),
            self.recorded_edge,
            self.live_edge,
            self.seed
        );
        if self.recorded_edges.len() > 1 {
            let _ = writeln!(
                s,
                "the capture holds {}: {} (--edge ID picks another)",
                count(self.recorded_edges.len(), "edge", "edges"),
                self.recorded_edges.join(", ")
            );
        }
        let _ = writeln!(s);
        if let Some(lost) = &self.broker_lost {
            let _ = writeln!(s, "BROKER CONNECTION LOST: {lost}\n");
        }
        self.write_exchanges(&mut s, expectation);
        if !self.orphan_replies.is_empty() {
            let _ = writeln!(s, "\nReplies to nothing the replayer sent:");
            for r in &self.orphan_replies {
                let _ = writeln!(s, "  {r}");
            }
        }
        if !self.new_findings.is_empty() {
            let _ = writeln!(s, "\nRules raised by the replay and not by the recording:");
            for f in &self.new_findings {
                let _ = writeln!(s, "  {}", f.line);
            }
        }
        if !self.mutations.is_empty() {
            let _ = writeln!(s, "\nMutations (seed {}):", self.seed);
            for m in &self.mutations {
                let _ = writeln!(
                    s,
                    "  {:<14} {:<24} {}  expect: {}",
                    m.verdict.to_uppercase(),
                    m.name,
                    m.target,
                    m.expect.describe()
                );
                let answers = if m.answers.is_empty() {
                    "none".to_string()
                } else {
                    m.answers.join("; ")
                };
                let _ = writeln!(
                    s,
                    "        answers: {answers}; probe: {}; rules: {}",
                    m.probe,
                    if m.engine.is_empty() {
                        "none".to_string()
                    } else {
                        m.engine.join(", ")
                    }
                );
                if !m.detail.is_empty() {
                    let _ = writeln!(s, "        {}", m.detail);
                }
            }
        }
        if let Some(e) = expectation {
            e.write(&mut s);
        }
        if !self.unexpected_requests.is_empty() {
            let who = match self.role {
                Role::Platform => "edge",
                Role::Edge => "platform",
            };
            let _ = writeln!(
                s,
                "\nRequests of the {who} the recording does not hold (not answered; a restart \
                 loses the device's state, so differences after one may have that cause):"
            );
            for r in &self.unexpected_requests {
                let _ = writeln!(s, "  {r}");
            }
        }
        if self.counterpart_silent && self.broker_lost.is_none() {
            let (who, id) = match self.role {
                Role::Platform => ("edge", format!(" (--edge-id {})", self.live_edge)),
                Role::Edge => ("platform", String::new()),
            };
            let _ = writeln!(
                s,
                "\nThe {who}{id} published nothing during the replay: is it online, on this \
                 broker, under this id? Its missing answers have that one cause."
            );
        }
        let _ = writeln!(s, "\n{}", self.result_line(expectation));
        s
    }

    /// Exchanges not exercised (skipped).
    /// No exchange compared and no mutation exercised: nothing of the recording was
    /// played to the counterpart (an edge that only reported, a wrong --edge).
    pub fn nothing_exercised(&self) -> bool {
        self.exchanges.iter().all(|x| x.skipped.is_some())
            && self.mutations.iter().all(|m| m.verdict == "not applicable")
    }

    pub fn skipped_exchanges(&self) -> impl Iterator<Item = &Exchange> {
        self.exchanges.iter().filter(|x| x.skipped.is_some())
    }

    /// The exchange table: one line per exchange, its differences or why it was skipped.
    fn write_exchanges(&self, s: &mut String, expectation: Option<&Expectation>) {
        let skipped = self.skipped_exchanges().count();
        let different = self
            .exchanges
            .iter()
            .filter(|x| !x.diffs.is_empty())
            .count();
        let _ = writeln!(
            s,
            "Exchanges: {} compared, {} as recorded, {} different, {} not exercised",
            self.exchanges.len() - skipped,
            self.exchanges.len() - skipped - different,
            different,
            skipped
        );
        for x in &self.exchanges {
            let status = match (&x.skipped, x.diffs.is_empty(), expectation) {
                (Some(_), _, _) => "SKIP",
                (None, true, _) => "same",
                (None, false, Some(e)) if !e.exchanges.contains(&x.index) => "known",
                (None, false, _) => "DIFF",
            };
            let _ = writeln!(
                s,
                "  {:>3} {:<5} {:<8} {:<18} {}",
                x.index, status, x.from, x.request, x.topic
            );
            for d in x.skipped.iter().chain(&x.diffs) {
                let _ = writeln!(s, "              - {d}");
            }
        }
    }

    /// The last line of the table: the expectation's verdict when there is one.
    fn result_line(&self, expectation: Option<&Expectation>) -> String {
        if self.broker_lost.is_some() {
            return "RESULT: broker connection lost, the replay did not finish (exit code 2)"
                .into();
        }
        let skipped = self.skipped_exchanges().count();
        let not_exercised = match skipped {
            0 => String::new(),
            n => format!(
                " ({} started by the edge not exercised, see SKIP above)",
                count(n, "exchange", "exchanges")
            ),
        };
        let different = self
            .exchanges
            .iter()
            .filter(|x| !x.diffs.is_empty())
            .count();
        match expectation {
            Some(e) if e.divergences.is_empty() => format!(
                "RESULT: as expected{}{not_exercised}",
                match different {
                    0 => String::new(),
                    n => format!(
                        " ({} from the recording, as the expectation holds)",
                        count(n, "exchange differs", "exchanges differ")
                    ),
                }
            ),
            Some(e) => format!(
                "RESULT: {} from the expectation",
                count(e.divergences.len(), "divergence", "divergences")
            ),
            None if self.failed() => "RESULT: differences found".into(),
            None if self.nothing_exercised() => format!(
                "RESULT: nothing exercised: the recording holds no exchange of edge {} to \
                 play as {} (exit code 3); pick another edge with --edge, or the other role \
                 with --as",
                self.recorded_edge,
                self.role.as_str()
            ),
            None => format!("RESULT: as recorded{not_exercised}"),
        }
    }

    /// The JUnit cases: one per exchange, per mutation, the rules the replay raised,
    /// the replies to nothing sent, the broker connection (when lost) and, with an
    /// expectation, the outcome as saved. With an expectation, a case fails only where
    /// the run diverges from it: a recorded difference the expectation holds passes
    /// (its differences in `<system-out>`).
    pub fn to_junit(&self, expectation: Option<&Expectation>) -> String {
        use crate::report::junit::{render, Case, Suite, Verdict};
        let failed = |message: String, text: String| Verdict::Failed { message, text };
        let mut suites = vec![];
        if let Some(lost) = &self.broker_lost {
            let mut s = Suite::new("broker connection");
            s.cases.push(Case::new(
                "replay.broker",
                "connection kept to the end",
                Verdict::Error {
                    message: "broker connection lost".into(),
                    text: lost.clone(),
                },
            ));
            suites.push(s);
        }
        let mut ex = Suite::new("exchanges");
        for x in &self.exchanges {
            let name = format!("{:03} {} {}", x.index, x.request, x.topic);
            let diffs = x.diffs.join("\n");
            let (verdict, out) = match (&x.skipped, expectation) {
                (Some(why), _) => (
                    Verdict::Skipped {
                        message: why.clone(),
                    },
                    None,
                ),
                (None, Some(e)) if e.exchanges.contains(&x.index) => {
                    let mine = e.about(&format!("exchange {} ", x.index));
                    (
                        failed(
                            count(
                                mine.len(),
                                "divergence from the expectation",
                                "divergences from the expectation",
                            ),
                            mine.join("\n"),
                        ),
                        None,
                    )
                }
                (None, Some(_)) => (
                    Verdict::Passed,
                    (!x.diffs.is_empty()).then(|| {
                        format!("differs from the recording, as the expectation holds:\n{diffs}")
                    }),
                ),
                (None, None) if x.diffs.is_empty() => (Verdict::Passed, None),
                (None, None) => (
                    failed(count(x.diffs.len(), "difference", "differences"), diffs),
                    None,
                ),
            };
            ex.cases
                .push(Case::new("replay.exchange", &name, verdict).with_out(out));
        }
        suites.push(ex);
        if !self.mutations.is_empty() {
            let mut ms = Suite::new(&format!("mutations seed {}", self.seed));
            for m in &self.mutations {
                let text = format!("answers: {}; probe: {}", m.answers.join("; "), m.probe);
                let verdict = match (m.verdict.as_str(), expectation) {
                    ("not applicable", _) => Verdict::Skipped {
                        message: m
                            .skipped
                            .clone()
                            .unwrap_or_else(|| format!("not applicable: {}", m.detail)),
                    },
                    (_, Some(e)) if e.mutations.contains(&m.name) => {
                        failed(e.about(&format!("mutation {}:", m.name)).join("\n"), text)
                    }
                    (_, Some(_)) => Verdict::Passed,
                    ("fail", None) => failed(m.detail.clone(), text),
                    _ => Verdict::Passed,
                };
                let out = (m.verdict == "fail" && expectation.is_some())
                    .then(|| format!("failed, as the expectation holds: {}", m.detail));
                ms.cases
                    .push(Case::new("replay.mutation", &m.name, verdict).with_out(out));
            }
            suites.push(ms);
        }
        let mut rules = Suite::new("rules");
        let lines = self
            .new_findings
            .iter()
            .map(|f| f.line.clone())
            .collect::<Vec<_>>()
            .join("\n");
        let verdict = match expectation {
            Some(e) if e.new_rules => failed(e.about("new rules:").join("\n"), lines.clone()),
            Some(_) => Verdict::Passed,
            None if self.new_findings.is_empty() => Verdict::Passed,
            None => failed(
                count(
                    self.new_findings.len(),
                    "rule raised by the replay and not by the recording",
                    "rules raised by the replay and not by the recording",
                ),
                lines.clone(),
            ),
        };
        let out = (expectation.is_some() && !self.new_findings.is_empty())
            .then(|| format!("raised, as the expectation holds:\n{lines}"));
        rules.cases.push(
            Case::new("replay.rules", "no rule beyond the recording's", verdict).with_out(out),
        );
        let orphans = self
            .orphan_replies
            .iter()
            .map(Value::to_string)
            .collect::<Vec<_>>()
            .join("\n");
        let verdict = match expectation {
            Some(e) if e.orphans => failed(e.about("replies to nothing sent:").join("\n"), orphans),
            Some(_) => Verdict::Passed,
            None if self.orphan_replies.is_empty() => Verdict::Passed,
            None => failed(
                count(
                    self.orphan_replies.len(),
                    "reply to nothing sent",
                    "replies to nothing sent",
                ),
                orphans,
            ),
        };
        rules.cases.push(Case::new(
            "replay.replies",
            "every reply answers a request sent",
            verdict,
        ));
        suites.push(rules);
        if let Some(e) = expectation {
            let mut s = Suite::new("expectation");
            let verdict = match e.divergences.is_empty() {
                true => Verdict::Passed,
                false => failed(
                    count(e.divergences.len(), "divergence", "divergences"),
                    e.divergences.join("\n"),
                ),
            };
            s.cases.push(
                Case::new("replay.expect", "outcome as saved", verdict)
                    .with_out(Some(e.notes.join("\n"))),
            );
            suites.push(s);
        }
        render("edgetap replay", None, &suites)
    }

    /// The exit code: 2 when the broker connection was lost (the run proves nothing
    /// beyond it); with an expectation, 1 on a divergence from it; with
    /// `saved` (`--save-expect` wrote the outcome) 0; else 1 on any difference from
    /// the recording.
    pub fn exit_code(&self, expectation: Option<&Expectation>, saved: bool) -> u8 {
        if self.broker_lost.is_some() {
            return crate::report::EXIT_UNREADABLE;
        }
        // A replay that compared nothing proves nothing (3, as `analyze`), unless
        // its expectation diverges (an expected exchange that did not happen).
        if self.nothing_exercised() && expectation.map_or(true, |e| e.divergences.is_empty()) {
            return crate::report::EXIT_NOTHING_JUDGED;
        }
        match expectation {
            Some(e) => u8::from(!e.divergences.is_empty()),
            None if saved => 0,
            None => u8::from(self.failed()),
        }
    }
}

/// "1 exchange", "2 exchanges".
fn count(n: usize, one: &str, many: &str) -> String {
    crate::report::junit::count(n, one, many)
}

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
}

impl Expectation {
    /// The divergences that start with `prefix`.
    fn about(&self, prefix: &str) -> Vec<String> {
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
    if expected.exchanges.len() != got.exchanges.len() {
        x.divergences.push(format!(
            "exchanges: expected {}, got {}",
            expected.exchanges.len(),
            got.exchanges.len()
        ));
    }
    for (e, g) in expected.exchanges.iter().zip(&got.exchanges) {
        compare_exchange(e, g, &mut x);
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
        if a != b {
            x.mutations.insert(n.clone());
            let show = |v: Option<&String>| v.map_or("not run".to_string(), |v| v.clone());
            x.divergences.push(format!(
                "mutation {n}: expected {}, got {}",
                show(a),
                show(b)
            ));
        }
    }
    for m in got.mutations.iter().filter(|m| m.skipped.is_some()) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replay::session::not_exercised_reason;
    use std::time::Duration;

    fn exchange(index: usize, from: &str, request: &str) -> Exchange {
        Exchange {
            index,
            from: from.into(),
            request: request.into(),
            topic: format!("/v1/E/device/{from}"),
            recorded: judge::Answer::default(),
            live: judge::Answer::default(),
            diffs: vec![],
            skipped: None,
            late: vec![],
        }
    }

    fn outcome(exchanges: Vec<Exchange>) -> Outcome {
        Outcome {
            source: "session.pcap".into(),
            role: Role::Platform,
            seed: 1,
            recorded_edge: "E".into(),
            recorded_edges: vec![],
            live_edge: "E".into(),
            exchanges,
            mutations: vec![],
            new_findings: vec![],
            orphan_replies: vec![],
            live_findings: vec![],
            broker_lost: None,
            counterpart_silent: false,
            unexpected_requests: vec![],
            record: None,
        }
    }

    fn skipped_linkup() -> Exchange {
        let mut x = exchange(0, "edge", "EVENT_LINKUP");
        x.skipped = Some(not_exercised_reason(
            "EVENT_LINKUP",
            "EVENT_LINKUP",
            Duration::from_secs(10),
        ));
        x
    }

    #[test]
    fn the_reason_names_the_wait_and_the_remedy() {
        let first = not_exercised_reason("EVENT_LINKUP", "EVENT_LINKUP", Duration::from_secs(10));
        assert!(first.starts_with(
            "not exercised: the edge did not send EVENT_LINKUP within 10 s — it was probably already online"
        ));
        assert!(first.ends_with("start the replay before the device powers on, or restart it"));
        let topo =
            not_exercised_reason("CMD_TOPO_ADD", "EVENT_LINKUP", Duration::from_millis(1500));
        assert!(topo.contains("CMD_TOPO_ADD by itself"), "{topo}");
        assert!(topo.contains("no EVENT_LINKUP within 1.5 s"), "{topo}");
    }

    #[test]
    fn a_skipped_exchange_is_neither_pass_nor_fail() {
        let o = outcome(vec![
            skipped_linkup(),
            exchange(1, "platform", "CMD_SYS_STATUS"),
        ]);
        assert!(!o.failed());
        let table = o.to_table();
        assert!(
            table.contains("1 compared, 1 as recorded, 0 different, 1 not exercised"),
            "{table}"
        );
        assert!(table.contains("SKIP  edge"), "{table}");
        assert!(
            table.contains("RESULT: as recorded (1 exchange started by the edge not exercised"),
            "{table}"
        );
        let junit = o.to_junit(None);
        assert!(
            junit.contains("failures=\"0\" errors=\"0\" skipped=\"1\""),
            "{junit}"
        );
        assert!(
            junit.contains(
                "<skipped message=\"not exercised: the edge did not send EVENT_LINKUP within 10 s"
            ),
            "{junit}"
        );
        assert!(!junit.contains("<failure"), "{junit}");
    }

    #[test]
    fn the_json_report_carries_the_result_and_the_expectation() {
        let o = outcome(vec![exchange(0, "platform", "CMD_SYS_STATUS")]);
        let e = Expectation {
            divergences: vec![
                "exchange 0 CMD_SYS_STATUS: reply.code: expected 200, got 404".into(),
            ],
            ..Expectation::default()
        };
        let v: Value = serde_json::from_str(&o.to_json_with(Some(&e))).unwrap();
        assert_eq!(v["result"], "1 divergence from the expectation", "{v}");
        assert_eq!(
            v["expectation"]["divergences"][0],
            "exchange 0 CMD_SYS_STATUS: reply.code: expected 200, got 404"
        );
        let v: Value = serde_json::from_str(&o.to_json_with(None)).unwrap();
        assert_eq!(v["result"], "as recorded", "{v}");
        assert!(v.get("expectation").is_none());
        // What --save-expect writes reads back as an outcome.
        let _: Outcome = serde_json::from_str(&o.to_json()).unwrap();
    }

    #[test]
    fn requests_beyond_the_recording_are_listed() {
        let mut o = outcome(vec![exchange(0, "platform", "CMD_SYS_STATUS")]);
        o.unexpected_requests = vec!["EVENT_LINKUP at 6.5 s into the replay (mid 9)".into()];
        let t = o.to_table();
        assert!(
            t.contains("Requests of the edge the recording does not hold"),
            "{t}"
        );
        assert!(
            t.contains("  EVENT_LINKUP at 6.5 s into the replay (mid 9)"),
            "{t}"
        );
        let v: Value = serde_json::from_str(&o.to_json()).unwrap();
        assert_eq!(
            v["unexpected_requests"][0],
            "EVENT_LINKUP at 6.5 s into the replay (mid 9)"
        );
    }

    #[test]
    fn a_silent_counterpart_is_named_as_the_one_cause() {
        let mut o = outcome(vec![exchange(0, "platform", "CMD_SYS_STATUS")]);
        assert!(!o.to_table().contains("published nothing"));
        o.counterpart_silent = true;
        let t = o.to_table();
        assert!(
            t.contains("The edge (--edge-id E) published nothing during the replay"),
            "{t}"
        );
    }

    #[test]
    fn a_replay_that_exercised_nothing_exits_3_not_0() {
        let none = outcome(vec![]);
        assert_eq!(
            none.exit_code(None, false),
            crate::report::EXIT_NOTHING_JUDGED
        );
        assert!(none.to_table().contains("RESULT: nothing exercised"));
        let skipped = outcome(vec![skipped_linkup()]);
        assert_eq!(
            skipped.exit_code(None, false),
            crate::report::EXIT_NOTHING_JUDGED
        );
        let one = outcome(vec![exchange(0, "platform", "CMD_SYS_STATUS")]);
        assert_eq!(one.exit_code(None, false), 0);
    }

    #[test]
    fn a_skipped_exchange_is_no_divergence_from_an_expectation_that_passed_it() {
        let expected = outcome(vec![exchange(0, "edge", "EVENT_LINKUP")]);
        let got = outcome(vec![skipped_linkup()]);
        let e = check_expected(&expected, &got);
        assert!(e.divergences.is_empty(), "{e:#?}");
        assert_eq!(e.notes.len(), 1);
        assert!(
            e.notes[0].contains("has it passed: not counted as a divergence"),
            "{e:#?}"
        );
        let junit = got.to_junit(Some(&e));
        assert!(
            junit.contains("<system-out>exchange 0 EVENT_LINKUP: not exercised"),
            "{junit}"
        );
    }

    #[test]
    fn an_exchange_skipped_in_the_expectation_still_fails_when_it_differs_now() {
        let expected = outcome(vec![skipped_linkup()]);
        let clean = outcome(vec![exchange(0, "edge", "EVENT_LINKUP")]);
        let e = check_expected(&expected, &clean);
        assert!(e.divergences.is_empty() && e.notes.len() == 1, "{e:#?}");
        let mut differs = exchange(0, "edge", "EVENT_LINKUP");
        differs.diffs = vec!["request.param.dev: missing".into()];
        let e = check_expected(&expected, &outcome(vec![differs]));
        assert_eq!(e.divergences.len(), 1, "{e:#?}");
        assert!(e.divergences[0].contains("request.param.dev: missing"));
    }

    fn differing(index: usize, request: &str, diff: &str) -> Exchange {
        let mut x = exchange(index, "platform", request);
        x.diffs = vec![diff.into()];
        x
    }

    /// The report: `--expect` matched, exit 0, yet the JUnit said
    /// `failures="20"` and its `tests` disagreed with its cases.
    #[test]
    fn recorded_differences_the_expectation_holds_are_no_junit_failures() {
        let o = outcome(vec![
            differing(0, "CMD_SYS_STATUS", "reply code: recorded 200, live 400"),
            exchange(1, "platform", "CMD_INFO_QUERY"),
            differing(2, "CMD_CON_START", "missing job result"),
        ]);
        let e = check_expected(&o.clone(), &o);
        assert!(e.divergences.is_empty(), "{e:#?}");
        let junit = o.to_junit(Some(&e));
        assert!(!junit.contains("<failure"), "{junit}");
        assert!(junit.contains("failures=\"0\""), "{junit}");
        let cases = junit.matches("<testcase ").count();
        assert!(
            junit.contains(&format!(
                "<testsuites name=\"edgetap replay\" tests=\"{cases}\""
            )),
            "{junit}"
        );
        assert!(
            junit.contains("as the expectation holds:\nreply code: recorded 200, live 400"),
            "{junit}"
        );
        assert_eq!(o.exit_code(Some(&e), false), 0);
        let table = o.to_table_with(Some(&e));
        assert!(!table.contains("differences found"), "{table}");
        assert!(table.contains("Expectation: 0 divergences"), "{table}");
        assert!(
            table.contains("RESULT: as expected (2 exchanges differ from the recording, as the expectation holds)"),
            "{table}"
        );
        assert!(table.contains("known platform CMD_SYS_STATUS"), "{table}");
    }

    #[test]
    fn only_the_exchange_that_diverges_from_the_expectation_fails() {
        let expected = outcome(vec![
            differing(0, "CMD_SYS_STATUS", "reply code: recorded 200, live 400"),
            exchange(1, "platform", "CMD_INFO_QUERY"),
        ]);
        let got = outcome(vec![
            differing(0, "CMD_SYS_STATUS", "reply code: recorded 200, live 400"),
            differing(1, "CMD_INFO_QUERY", "missing reply"),
        ]);
        let e = check_expected(&expected, &got);
        assert_eq!(e.exchanges, BTreeSet::from([1]), "{e:#?}");
        let junit = got.to_junit(Some(&e));
        // The diverging exchange and the whole-outcome case.
        assert_eq!(junit.matches("<failure").count(), 2, "{junit}");
        assert!(
            junit.contains(
                "<failure message=\"1 divergence from the expectation\">exchange 1 CMD_INFO_QUERY"
            ),
            "{junit}"
        );
        assert_eq!(got.exit_code(Some(&e), false), 1);
        let table = got.to_table_with(Some(&e));
        assert!(table.contains("Expectation: 1 divergence\n"), "{table}");
        assert!(
            table.contains("RESULT: 1 divergence from the expectation"),
            "{table}"
        );
    }

    #[test]
    fn without_an_expectation_differences_fail_and_save_expect_exits_0() {
        let o = outcome(vec![differing(0, "CMD_SYS_STATUS", "missing reply")]);
        let junit = o.to_junit(None);
        assert!(
            junit.contains("<failure message=\"1 difference\">missing reply</failure>"),
            "{junit}"
        );
        assert_eq!(o.exit_code(None, false), 1);
        assert_eq!(o.exit_code(None, true), 0);
        assert!(o.to_table().contains("RESULT: differences found"));
    }

    #[test]
    fn a_lost_broker_is_an_error_case_and_exit_code_2() {
        let mut o = outcome(vec![exchange(0, "platform", "CMD_SYS_STATUS")]);
        o.broker_lost = Some("the connection to the broker B was lost 3 s into the replay".into());
        let junit = o.to_junit(None);
        assert!(junit.contains("errors=\"1\""), "{junit}");
        assert!(junit.contains("<error message=\"broker connection lost\">the connection to the broker B was lost 3 s"), "{junit}");
        assert_eq!(o.exit_code(None, true), 2);
        let e = check_expected(&o.clone(), &o);
        assert_eq!(o.exit_code(Some(&e), false), 2);
        let table = o.to_table();
        assert!(
            table.contains("BROKER CONNECTION LOST: the connection"),
            "{table}"
        );
        assert!(table.contains("RESULT: broker connection lost"), "{table}");
    }

    #[test]
    fn new_rules_are_a_test_case_of_their_own() {
        let mut o = outcome(vec![exchange(0, "platform", "CMD_SYS_STATUS")]);
        o.new_findings.push(FindingBrief {
            rule: "envelope.request".into(),
            severity: Severity::Error,
            line: "error 5.3 [envelope.request]".into(),
        });
        let junit = o.to_junit(None);
        assert!(junit.contains("name=\"no rule beyond the recording's\"><failure message=\"1 rule raised by the replay and not by the recording\""), "{junit}");
        let e = check_expected(&o.clone(), &o);
        assert!(!o.to_junit(Some(&e)).contains("<failure"));
    }

    #[test]
    fn an_expectation_file_without_skips_still_loads() {
        let v = serde_json::to_value(outcome(vec![exchange(0, "edge", "EVENT_LINKUP")])).unwrap();
        assert!(v["exchanges"][0].get("skipped").is_none());
        let o: Outcome = serde_json::from_value(v).unwrap();
        assert!(o.exchanges[0].skipped.is_none());
    }
}
