//! The outcome for people (the text of the table, its last line the result) and for
//! scripts (the JSON members, with the result and the comparison with an expectation).

use std::fmt::Write as _;

use serde_json::{Map, Value};

use crate::replay::Role;

use super::{count, Expectation, Outcome};

impl Outcome {
    /// The JSON members: the outcome (the form `--save-expect` writes), with
    /// `result`, the table's last line, and with an expectation its comparison
    /// (`expectation.divergences`, `notes`, the exchanges and mutations that diverge).
    pub(super) fn members(&self, expectation: Option<&Expectation>) -> Map<String, Value> {
        let mut o = match serde_json::to_value(self) {
            Ok(Value::Object(o)) => o,
            _ => Map::new(),
        };
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
        o
    }

    /// The report for people. With an expectation, a difference from the recording
    /// that the expectation holds is shown as `known`, and the result line is the
    /// expectation's verdict.
    pub(super) fn text(&self, expectation: Option<&Expectation>) -> String {
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
        if let Some(why) = &self.interrupted {
            let _ = writeln!(
                s,
                "INTERRUPTED {}; what follows is what ran\n",
                why.trim_start_matches("interrupted ")
            );
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
            if !self.injected_findings.is_empty() {
                let _ = writeln!(
                    s,
                    "  (rules: what the engine found in the messages the mutations made on \
                     purpose: the test's doing, never charged to the {})",
                    match self.role {
                        Role::Platform => "edge",
                        Role::Edge => "platform",
                    }
                );
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
                "\nRequests of the {who} the recording does not hold (a restart loses the \
                 device's state, so differences after one may have that cause):"
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
        if self.interrupted.is_some() {
            return "RESULT: interrupted, the replay did not finish (exit code 130)".into();
        }
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
}
