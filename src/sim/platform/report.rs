//! The test record of a plan run ([`PlanReport`]): the analyzer's report plus the
//! detection items, as a table, JSON, JUnit and HTML.

use serde::Serialize;
use serde_json::Value;

use crate::report::html::{headers, render, Extra, ExtraRow};
use crate::report::Report;
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
}

impl PlanReport {
    pub fn passed(&self) -> bool {
        !self.report.has_errors() && self.items.iter().all(|i| i.status != "fail")
    }

    pub fn item(&self, id: &str) -> Option<&Item> {
        self.items.iter().find(|i| i.item == id)
    }

    pub fn to_table(&self) -> String {
        self.table(crate::report::Listing::Grouped)
    }

    /// The table, its findings listed as `listing` says.
    pub fn table(&self, listing: crate::report::Listing) -> String {
        #[derive(tabled::Tabled)]
        struct Row<'a> {
            item: &'a str,
            title: &'a str,
            status: String,
            detail: &'a str,
        }
        let rows: Vec<Row> = self
            .items
            .iter()
            .map(|i| Row {
                item: &i.item,
                title: &i.title,
                status: i.status.to_uppercase(),
                detail: &i.detail,
            })
            .collect();
        let package = self
            .package
            .as_ref()
            .map(|p| format!("{}\n", p.line()))
            .unwrap_or_default();
        format!(
            "{}\nDetection items (test plan of clause 6):\n{}\n{package}",
            self.report.table(listing),
            tabled::Table::new(rows).with(tabled::settings::Style::sharp())
        )
    }

    /// The `analyze` JSON (summary, clauses, findings, rules) with `plan` added.
    pub fn to_json(&self) -> String {
        let mut v = serde_json::to_value(&self.report).unwrap_or(Value::Null);
        if let Value::Object(o) = &mut v {
            o.insert(
                "plan".into(),
                serde_json::to_value(&self.items).unwrap_or(Value::Null),
            );
            if let Some(p) = &self.package {
                o.insert(
                    "package".into(),
                    serde_json::to_value(p).unwrap_or(Value::Null),
                );
            }
        }
        serde_json::to_string_pretty(&v).unwrap_or_default()
    }

    /// The clause suites of the report, then one suite of the detection items
    /// (6.x.x.2), one case each: a failed item fails with its detail and steps, an
    /// item not exercised is skipped with why.
    pub fn to_junit(&self) -> String {
        use crate::report::junit::{Case, Suite, Verdict};
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
                "not exercised" => Verdict::Skipped {
                    message: format!("not exercised: {}", i.detail),
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
        self.report.to_junit_with(&[suite])
    }

    /// The plan's record: the detection items (6.x.x.2) first, then the analysis.
    pub fn to_html(&self) -> String {
        let items = Extra {
            id: "items".into(),
            title: "Detection items (test plan of clause 6)".into(),
            note: self.package.as_ref().map(|p| p.line()),
            headers: headers(["Item", "Clause", "Title", "Status", "Detail"]),
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
                    ExtraRow::new(
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
        };
        render(
            &self.report,
            "edgetap sim platform — test plan record",
            &[items],
            None,
        )
    }
}
