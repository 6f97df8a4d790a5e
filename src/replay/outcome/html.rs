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
                match (&self.interrupted, self.failed()) {
                    (Some(why), _) => format!("{why}: the replay did not finish"),
                    (None, true) => "differences found".into(),
                    (None, false) => "as recorded".into(),
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
        let mut extras = vec![expectation_section(self, expectation)];
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
        if !self.injected_findings.is_empty() {
            extras.push(Section {
                id: "injected".into(),
                title: "Injected by the test (mutations): not the device's findings".into(),
                note: Some(
                    "the rules the engine raised on the messages the mutations made on \
                     purpose; they are not charged to the device (the clause table and the list of \
                     findings leave them out)"
                        .into(),
                ),
                columns: Column::all(["Mutation", "Severity", "Rule", "Finding"]),
                rows: self
                    .injected_findings
                    .iter()
                    .map(|f| {
                        SectionRow::new(
                            "injected",
                            vec![
                                f.mutation.clone().unwrap_or_default(),
                                f.severity.as_str().into(),
                                f.rule.clone(),
                                f.line.clone(),
                            ],
                            vec![],
                        )
                    })
                    .collect(),
                status_col: None,
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

/// The comparison with an expectation: each item compared, what the expectation
/// holds and what this run found; without one, a line that says so.
fn expectation_section(o: &Outcome, expectation: Option<&Expectation>) -> Section {
    let Some(e) = expectation else {
        return Section {
            id: "expectation".into(),
            title: "Expectation: none".into(),
            note: None,
            columns: Column::all(["", "What"]),
            rows: vec![SectionRow::new(
                "none",
                vec![
                    "no expectation".into(),
                    format!(
                        "no --expect file: each of the {} exchanges is compared with the \
                         recording itself",
                        o.exchanges.len()
                    ),
                ],
                vec![],
            )],
            status_col: None,
        };
    };
    let status = |s: &str| match s {
        "matched" => "pass",
        "diverges" => "fail",
        _ => "not exercised",
    };
    let mut rows: Vec<SectionRow> = e
        .compared
        .iter()
        .map(|c| {
            SectionRow::new(
                status(&c.status),
                vec![
                    c.status.clone(),
                    c.what.clone(),
                    c.expected.clone(),
                    c.found.clone(),
                ],
                vec![],
            )
        })
        .collect();
    // Divergences that concern no item compared one by one (counts, replies to
    // nothing sent, an expectation saved against silence).
    for d in &e.divergences {
        if !e.compared.iter().any(|c| d.starts_with(&c.what)) {
            rows.push(SectionRow::new(
                "fail",
                vec!["diverges".into(), d.clone(), String::new(), String::new()],
                vec![],
            ));
        }
    }
    Section {
        id: "expectation".into(),
        title: format!(
            "Expectation (--expect): {} divergence(s), {} item(s) compared",
            e.divergences.len(),
            e.compared.len()
        ),
        note: None,
        columns: Column::all(["", "What", "Expected", "Found"]),
        rows,
        status_col: Some(0),
    }
}
