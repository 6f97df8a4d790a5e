//! What a front end hands the renderers: a [`Document`], the [`Report`] plus what the
//! front end adds to it as data (titled tables, JUnit suites, JSON members, a document
//! that follows). [`super::render`] turns it into any format; no front end renders
//! itself.
//!
//! Guarantee: a document holds no format's text but the one a front end lays out
//! itself ([`Standalone::text`], the replay's terminal layout).

use std::borrow::Cow;

use serde_json::{Map, Value};

use super::junit::Suite;
use super::Report;

/// A report and what a front end adds to it.
#[derive(Debug, Clone)]
pub struct Document<'a> {
    /// Heads the HTML page ("edgetap test record", "edgetap replay record"…).
    pub title: String,
    /// The test record: clause table, findings, edges, charts.
    pub report: Cow<'a, Report>,
    /// Tables after the clause table on the page, and after the report in the
    /// terminal table (detection items, replay exchanges).
    pub sections: Vec<Section>,
    /// JUnit suites after the clause suites, counted in the totals.
    pub suites: Vec<Suite>,
    /// JSON members beside the report's (`plan`, `package`).
    pub members: Map<String, Value>,
    /// Set when the table, JSON and JUnit are the front end's own verdict and not the
    /// report's (the replay); the page still shows the report.
    pub standalone: Option<Standalone>,
    /// Documents that follow this one: in the table one after the other, in JSON
    /// under `appended`, in JUnit as more suites of the one document, on the HTML
    /// page as their clause tables and sections (the demo: the proxy's report after
    /// the plan's, the second run after the first).
    pub appended: Vec<Appended<'a>>,
}

impl<'a> Document<'a> {
    /// The report alone, as "edgetap test record" (analyze, the proxy's final report).
    pub fn of(report: &'a Report) -> Document<'a> {
        Document::owning(Cow::Borrowed(report))
    }

    /// [`Document::of`] a report borrowed or owned.
    pub fn owning(report: Cow<'a, Report>) -> Document<'a> {
        Document {
            title: "edgetap test record".into(),
            report,
            sections: vec![],
            suites: vec![],
            members: Map::new(),
            standalone: None,
            appended: vec![],
        }
    }

    /// The clause table and sections of the documents appended to this one, as
    /// sections (the HTML page shows them after its own).
    pub fn appended_sections(&self) -> Vec<Section> {
        let mut out = vec![];
        appended_sections(self, &mut out);
        out
    }

    /// The same document under another title.
    pub fn titled(mut self, title: &str) -> Document<'a> {
        self.title = title.into();
        self
    }
}

/// The clause table and sections of every document appended to `doc`, depth first.
fn appended_sections(doc: &Document, out: &mut Vec<Section>) {
    for a in &doc.appended {
        let id = format!(
            "appended-{}",
            a.label.replace(|c: char| !c.is_alphanumeric(), "-")
        );
        out.push(Section {
            id: id.clone(),
            title: a.heading.clone(),
            note: Some(format!(
                "{}: {} errors, {} warnings",
                a.label, a.doc.report.summary.errors, a.doc.report.summary.warnings
            )),
            columns: Column::all([
                "Clause", "Title", "Status", "Messages", "Errors", "Warnings",
            ]),
            rows: a
                .doc
                .report
                .clauses
                .iter()
                .map(|c| {
                    SectionRow::new(
                        &c.status,
                        vec![
                            c.clause.clone(),
                            c.title.clone(),
                            c.status.clone(),
                            c.messages.to_string(),
                            c.errors.to_string(),
                            c.warnings.to_string(),
                        ],
                        c.not_exercised.clone(),
                    )
                })
                .collect(),
            status_col: Some(2),
        });
        // Ids stay unique on the page: the second run has an items table too.
        out.extend(a.doc.sections.iter().map(|s| Section {
            id: format!("{id}-{}", s.id),
            ..s.clone()
        }));
        appended_sections(&a.doc, out);
    }
}

/// A titled table a front end adds (the plan's detection items, the replay's
/// exchanges and mutations).
#[derive(Debug, Clone, Default)]
pub struct Section {
    /// Its HTML id.
    pub id: String,
    pub title: String,
    /// A line under the title on the page, under the table in the terminal.
    pub note: Option<String>,
    pub columns: Vec<Column>,
    pub rows: Vec<SectionRow>,
    /// The column holding each row's status: coloured on the page, in capitals in
    /// the terminal.
    pub status_col: Option<usize>,
}

/// A column of a [`Section`].
#[derive(Debug, Clone)]
pub struct Column {
    /// Its header on the page; the terminal writes it in lower case.
    pub name: String,
    /// Shown on the page only (the terminal has less room).
    pub page_only: bool,
}

impl Column {
    /// Columns shown everywhere, by their names.
    pub fn all<const N: usize>(names: [&str; N]) -> Vec<Column> {
        names
            .iter()
            .map(|n| Column {
                name: n.to_string(),
                page_only: false,
            })
            .collect()
    }
}

/// A row of a [`Section`].
#[derive(Debug, Clone)]
pub struct SectionRow {
    /// pass, fail, partly exercised, not exercised… (the page colours the row by it).
    pub status: String,
    pub cells: Vec<String>,
    /// Lines shown on demand under the row.
    pub more: Vec<String>,
}

impl SectionRow {
    pub fn new(status: &str, cells: Vec<String>, more: Vec<String>) -> SectionRow {
        SectionRow {
            status: status.into(),
            cells,
            more,
        }
    }
}

/// A front end's own verdict standing in for the report in the table, JSON and
/// JUnit: the JSON is [`Document::members`] alone, the JUnit
/// [`Document::suites`] alone under `junit_name`, the table `text`.
#[derive(Debug, Clone)]
pub struct Standalone {
    pub junit_name: String,
    /// The terminal form, laid out by the front end: its columns, indents and
    /// result line are older than [`Section`] and kept byte for byte.
    pub text: String,
}

/// A document after another, under a heading in the terminal.
#[derive(Debug, Clone)]
pub struct Appended<'a> {
    pub heading: String,
    /// A short name that tells its JUnit suites from the others' ("run 2 proxy").
    pub label: String,
    pub doc: Document<'a>,
}
