//! The outcome's sections of the HTML record: its result, the exchanges, mutations and
//! rules the replay raised, and the comparison with an expectation, above the live
//! session judged as `analyze` judges a capture (with its charts).

use crate::report::{Column, Section, SectionRow};

use super::{Expectation, Outcome};

impl Outcome {
    /// The sections of the replay's record: the comparison with an expectation, the
    /// exchanges, the mutations, the rules the replay raised.
    pub(super) fn sections(&self, expectation: Option<&Expectation>) -> Vec<Section> {
        let exchanges = Section {
            id: "exchanges".into(),
            title: "Replay: exchanges".into(),
            note: Some(format!(
                "replay of {} as {} (recorded edge {}, live edge {}), seed {}: {}",
                self.source,
                self.role.as_str(),
                self.recorded_edge,
                self.live_edge,
                self.seed,
                if self.failed() {
                    "differences found"
                } else {
                    "as recorded"
                }
            )),
            columns: Column::all(["#", "Status", "From", "Request", "Topic"]),
            rows: self
                .exchanges
                .iter()
                .map(|x| {
                    let status = match (&x.skipped, x.diffs.is_empty()) {
                        (Some(_), _) => "not exercised",
                        (None, true) => "pass",
                        (None, false) => "fail",
                    };
                    let label = match status {
                        "pass" => "same",
                        "fail" => "different",
                        s => s,
                    };
                    SectionRow::new(
                        status,
                        vec![
                            x.index.to_string(),
                            label.into(),
                            x.from.clone(),
                            x.request.clone(),
                            x.topic.clone(),
                        ],
                        x.skipped.iter().chain(&x.diffs).cloned().collect(),
                    )
                })
                .collect(),
            status_col: Some(1),
        };
        let mut extras = vec![];
        if let Some(e) = expectation {
            let mut rows: Vec<SectionRow> = e
                .divergences
                .iter()
                .map(|d| SectionRow::new("fail", vec!["divergence".into(), d.clone()], vec![]))
                .collect();
            rows.extend(e.notes.iter().map(|n| {
                SectionRow::new(
                    "not exercised",
                    vec!["not compared".into(), n.clone()],
                    vec![],
                )
            }));
            extras.push(Section {
                id: "expectation".into(),
                title: format!(
                    "Expectation (--expect): {} divergence(s)",
                    e.divergences.len()
                ),
                note: None,
                columns: Column::all(["", "What"]),
                rows,
                status_col: None,
            });
        }
        extras.push(exchanges);
        if !self.mutations.is_empty() {
            extras.push(Section {
                id: "mutations".into(),
                title: "Replay: mutations".into(),
                note: None,
                columns: Column::all(["Mutation", "Target", "Expected", "Verdict", "Detail"]),
                rows: self
                    .mutations
                    .iter()
                    .map(|m| {
                        let mut more = m.answers.clone();
                        more.extend(m.engine.iter().map(|r| format!("rule raised: {r}")));
                        more.push(format!("probe: {}", m.probe));
                        SectionRow::new(
                            &m.verdict,
                            vec![
                                m.name.clone(),
                                m.target.clone(),
                                m.expect.describe().into(),
                                m.verdict.clone(),
                                m.detail.clone(),
                            ],
                            more,
                        )
                    })
                    .collect(),
                status_col: Some(3),
            });
        }
        if !self.new_findings.is_empty() {
            extras.push(Section {
                id: "new-findings".into(),
                title: "Rules raised by the replay and not by the recording".into(),
                note: None,
                columns: Column::all(["Severity", "Rule", "Finding"]),
                rows: self
                    .new_findings
                    .iter()
                    .map(|f| {
                        SectionRow::new(
                            "fail",
                            vec![f.severity.as_str().into(), f.rule.clone(), f.line.clone()],
                            vec![],
                        )
                    })
                    .collect(),
                status_col: None,
            });
        }
        extras
    }
}
