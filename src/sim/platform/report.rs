//! The test record of a plan run ([`PlanReport`]): the analyzer's report plus the
//! detection items, handed to the renderers as a [`Document`].

use serde::Serialize;
use serde_json::Value;

use crate::report::junit::{Case, Suite, Verdict};
use crate::report::{Column, Document, Report, Section, SectionRow};
use crate::sim::package::PackageNote;

use super::items::{Item, Step};

/// The test record of a plan run: the analyzer's report (clause table, findings,
/// the `analyze` JSON contract) plus the detection items.
#[derive(Debug, Clone, Serialize)]
pub struct PlanReport {
    pub report: Report,
    pub items: Vec<Item>,
    /// The file the upgrade and install commands pointed at.
    pub package: Option<PackageNote>,
    /// The run was interrupted (Ctrl-C, SIGTERM): which signal and when. The
    /// record covers what ran; the steps it cut off are not exercised.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interrupted: Option<String>,
}

impl PlanReport {
    pub fn passed(&self) -> bool {
        !self.report.has_errors() && self.items.iter().all(|i| i.status != "fail")
    }

    pub fn item(&self, id: &str) -> Option<&Item> {
        self.items.iter().find(|i| i.item == id)
    }

    /// The plan's record: the report, the detection items (6.x.x.2) as a section
    /// (first on the page), as a JUnit suite and as the JSON member `plan`, the
    /// package as the section's note and the member `package`.
    pub fn document(&self) -> Document<'_> {
        let mut doc = Document::of(&self.report).titled("edgetap sim platform — test plan record");
        doc.sections.push(self.items_section());
        doc.suites.push(self.items_suite());
        doc.members.insert(
            "plan".into(),
            serde_json::to_value(&self.items).unwrap_or(Value::Null),
        );
        if let Some(why) = &self.interrupted {
            doc.members
                .insert("interrupted".into(), Value::from(why.clone()));
        }
        if let Some(p) = &self.package {
            doc.members.insert(
                "package".into(),
                serde_json::to_value(p).unwrap_or(Value::Null),
            );
        }
        doc
    }

    /// One suite of the detection items, one case each: a failed item fails with its
    /// detail and steps, an item not (or partly) exercised is skipped with why.
    fn items_suite(&self) -> Suite {
        let mut suite = Suite::new("detection items (test plan of clause 6)");
        for i in &self.items {
            let steps: Vec<String> = i.steps.iter().map(Step::line).collect();
            let mut text = steps.join("\n");
            if !i.findings.is_empty() {
                text.push_str("\nrules: ");
                text.push_str(&i.findings.join("; "));
            }
            let verdict = match i.status.as_str() {
                "fail" => Verdict::Failed {
                    message: i.detail.clone(),
                    text: text.clone(),
                },
                "not exercised" | "partly exercised" => Verdict::Skipped {
                    message: format!("{}: {}", i.status, i.detail),
                },
                _ => Verdict::Passed,
            };
            let out = (i.status != "fail").then_some(text);
            suite.cases.push(
                Case::new(
                    &format!("plan.{}", i.clause),
                    &format!("{} {}", i.item, i.title),
                    verdict,
                )
                .with_out(out),
            );
        }
        suite
    }

    /// The detection items as a table (the clause is on the page only), their steps
    /// and findings under each row, the package as its note.
    fn items_section(&self) -> Section {
        Section {
            id: "items".into(),
            title: "Detection items (test plan of clause 6)".into(),
            note: match (&self.interrupted, &self.package) {
                (Some(why), p) => Some(format!(
                    "INTERRUPTED {}; the record covers what ran{}",
                    why.trim_start_matches("interrupted "),
                    p.as_ref()
                        .map_or(String::new(), |p| format!(" — {}", p.line()))
                )),
                (None, p) => p.as_ref().map(|p| p.line()),
            },
            columns: vec![
                column("Item", false),
                column("Clause", true),
                column("Title", false),
                column("Status", false),
                column("Detail", false),
            ],
            rows: self
                .items
                .iter()
                .map(|i| {
                    let mut more: Vec<String> = i
                        .steps
                        .iter()
                        .map(|s| format!("{}: {}", s.status, s.line()))
                        .collect();
                    more.extend(i.findings.iter().cloned());
                    SectionRow::new(
                        &i.status,
                        vec![
                            i.item.clone(),
                            i.clause.clone(),
                            i.title.clone(),
                            i.status.clone(),
                            i.detail.clone(),
                        ],
                        more,
                    )
                })
                .collect(),
            status_col: Some(3),
        }
    }
}

fn column(name: &str, page_only: bool) -> Column {
    Column {
        name: name.into(),
        page_only,
    }
}
