//! The outcome as JUnit suites: one case per exchange and per mutation, the rules the
//! replay raised, the replies to nothing sent, the broker connection, and the
//! comparison with an expectation.

use serde_json::Value;

use crate::report::junit::{Case, Suite, Verdict};

use super::{count, Expectation, Outcome};

impl Outcome {
    /// The JUnit cases: one per exchange, per mutation, the rules the replay raised,
    /// the replies to nothing sent, the broker connection (when lost) and, with an
    /// expectation, the outcome as saved. With an expectation, a case fails only where
    /// the run diverges from it: a recorded difference the expectation holds passes
    /// (its differences in `<system-out>`).
    pub(super) fn suites(&self, expectation: Option<&Expectation>) -> Vec<Suite> {
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
        if let Some(why) = &self.interrupted {
            let mut s = Suite::new("interruption");
            s.cases.push(Case::new(
                "replay.run",
                "replay ran to its end",
                Verdict::Error {
                    message: "replay interrupted".into(),
                    text: why.clone(),
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
        suites
    }
}
