//! The test record for people: the clause table, what could not be judged, the
//! edges, the findings (grouped, or one line each with `--each`), the standard's
//! words and the totals, then the sections of the front end. Device-chosen text in the
//! report is written printable.

use std::fmt::Write as _;

use super::{junit, Options};
use crate::finding::Severity;
use crate::report::edges::{show_time, EdgeRow};
use crate::report::group::Group;
use crate::report::{one_line, ClauseRow, Document, Listing, Report, Section};

/// The table shows at most this many groups and edges; the JSON holds them all.
const TABLE_GROUPS: usize = 60;
const TABLE_EDGES: usize = 40;

/// The document for people: the report's table and the front end's sections (or its
/// own text), then each appended document under its heading.
pub fn render(doc: &Document, options: &Options) -> String {
    let mut out = match &doc.standalone {
        Some(s) => s.text.clone(),
        None => {
            let mut out = doc.report.table(options.listing);
            for s in &doc.sections {
                write_section(&mut out, s);
            }
            out
        }
    };
    for a in &doc.appended {
        let _ = write!(
            out,
            "\n--- {} ---\n\n{}",
            a.heading,
            render(&a.doc, options)
        );
    }
    out
}

/// A section: its title, its table (headers in lower case, statuses in capitals,
/// without the page's own columns), its note.
fn write_section(out: &mut String, s: &Section) {
    let shown: Vec<usize> = (0..s.columns.len())
        .filter(|&i| !s.columns[i].page_only)
        .collect();
    let mut table = tabled::builder::Builder::new();
    table.push_record(shown.iter().map(|&i| s.columns[i].name.to_lowercase()));
    for row in &s.rows {
        table.push_record(shown.iter().map(|&i| {
            let cell = row.cells.get(i).map(String::as_str).unwrap_or("");
            match s.status_col == Some(i) {
                true => cell.to_uppercase(),
                false => cell.to_string(),
            }
        }));
    }
    let _ = writeln!(
        out,
        "\n{}:\n{}",
        s.title,
        table.build().with(tabled::settings::Style::sharp())
    );
    if let Some(note) = &s.note {
        let _ = writeln!(out, "{note}");
    }
}

impl Report {
    /// The table for people: the clause table, the edges, the findings as `listing`
    /// says, the standard's words, the totals.
    fn table(&self, listing: Listing) -> String {
        // Device-chosen text (edge ids, types, messages) never reaches a terminal raw.
        crate::finding::printable_text(&self.table_raw(listing))
    }

    fn table_raw(&self, listing: Listing) -> String {
        let mut out = String::new();
        let s = &self.summary;
        let _ = writeln!(
            out,
            "edgetap test record — {}\n{}, {} MQTT packets, {} PUBLISH ({} broker deliveries), {} protocol messages\n",
            s.inputs.join(", "),
            junit::count(s.connections as usize, "connection", "connections"),
            s.mqtt_packets,
            s.publishes,
            s.deliveries,
            s.messages
        );
        self.write_clause_table(&mut out);
        self.write_gaps(&mut out);
        self.write_edges(&mut out);
        if self.groups.is_empty() {
            let _ = writeln!(out, "\nNo findings.");
        } else {
            match listing {
                Listing::Grouped => self.write_groups(&mut out),
                Listing::Each => self.write_each(&mut out),
            }
            self.write_basis(&mut out);
        }
        let problems = self.problems();
        if !problems.is_empty() {
            let _ = writeln!(out);
            for p in problems {
                let _ = writeln!(out, "{p}");
            }
        }
        let _ = writeln!(
            out,
            "\n{}, {}, {} info",
            junit::count(s.errors as usize, "error", "errors"),
            junit::count(s.warnings as usize, "warning", "warnings"),
            s.infos
        );
        if let Some(note) = &s.filtered {
            let _ = writeln!(out, "{}", note.line());
        }
        out
    }

    fn write_clause_table(&self, out: &mut String) {
        use tabled::settings::Style;
        #[derive(tabled::Tabled)]
        struct Row<'a> {
            clause: &'a str,
            title: &'a str,
            status: String,
            /// Protocol messages; for 5.2 (the MQTT transport), MQTT packets.
            messages: String,
            errors: u64,
            warnings: u64,
            outcomes: u64,
        }
        let rows: Vec<Row> = self
            .clauses
            .iter()
            .map(|c| Row {
                clause: &c.clause,
                title: &c.title,
                status: c.status.to_uppercase(),
                messages: match c.clause.as_str() {
                    "5.2" => format!("{} packets", c.messages),
                    _ => c.messages.to_string(),
                },
                errors: c.errors,
                warnings: c.warnings,
                outcomes: c.outcomes,
            })
            .collect();
        let _ = writeln!(out, "{}", tabled::Table::new(rows).with(Style::sharp()));
        if self.summary.unattributed > 0 {
            let _ = writeln!(
                out,
                "{} PUBLISH packets were no protocol message (topic outside the standard, \
                 or an unknown MQTT 5 topic alias): counted, not judged (see [topic.unattributed]).",
                self.summary.unattributed
            );
        }
    }

    /// What could not be judged, and why.
    fn write_gaps(&self, out: &mut String) {
        let gaps: Vec<&ClauseRow> = self
            .clauses
            .iter()
            .filter(|c| !c.not_exercised.is_empty())
            .collect();
        if !gaps.is_empty() {
            // Reasons of history outside the input, and since issue 20 work still
            // open when it ended: the heading names what the lines hold.
            let open = gaps.iter().any(|c| c.not_exercised.len() > c.unseen_len());
            let _ = writeln!(
                out,
                "\nNot exercised ({}):",
                if open {
                    "history outside the input, or unfinished when it ended"
                } else {
                    "history outside the input"
                }
            );
            for c in gaps {
                for r in &c.not_exercised {
                    let _ = writeln!(out, "  {} {}: {r}", c.clause, c.title);
                }
            }
        }
    }

    /// The per-edge table, the edges with the most errors first. An edge id longer
    /// than [`CELL_CHARS`] is cut in its cell (whole in the finding lines and JSON):
    /// one 1,000-character id would widen every row.
    fn write_edges(&self, out: &mut String) {
        use tabled::settings::Style;
        #[derive(tabled::Tabled)]
        struct Row {
            edge: String,
            messages: u64,
            errors: u64,
            warnings: u64,
            outcomes: u64,
            first: String,
            last: String,
        }
        if self.edges.is_empty() {
            return;
        }
        let mut edges: Vec<&EdgeRow> = self.edges.iter().collect();
        edges.sort_by_key(|e| std::cmp::Reverse((e.counts.errors, e.counts.warnings)));
        let rows: Vec<Row> = edges
            .iter()
            .take(TABLE_EDGES)
            .map(|e| Row {
                edge: cell(&e.edge_id),
                messages: e.messages,
                errors: e.counts.errors,
                warnings: e.counts.warnings,
                outcomes: e.counts.outcomes,
                first: show_time(e.first_time),
                last: show_time(e.last_time),
            })
            .collect();
        let _ = writeln!(out, "\nEdges (times UTC):");
        let _ = writeln!(out, "{}", tabled::Table::new(rows).with(Style::sharp()));
        if edges.len() > TABLE_EDGES {
            let _ = writeln!(
                out,
                "… {} more edges, fewer errors: see them with --edge ID or --format json",
                edges.len() - TABLE_EDGES
            );
        }
    }

    /// One line per group, errors first, the largest groups first.
    fn write_groups(&self, out: &mut String) {
        let mut groups: Vec<&Group> = self.groups.iter().collect();
        groups.sort_by_key(|g| std::cmp::Reverse((g.severity, g.count)));
        let _ = writeln!(
            out,
            "\nFindings ({} in {} groups; {}):",
            self.total_findings(),
            groups.len(),
            match &self.summary.not_listed {
                Some(n) => n.hint.as_str(),
                None => "--each lists every one",
            }
        );
        for g in groups.iter().take(TABLE_GROUPS) {
            let _ = writeln!(out, "  {}", g.line());
        }
        if groups.len() > TABLE_GROUPS {
            let rest = &groups[TABLE_GROUPS..];
            let _ = writeln!(
                out,
                "  … {} more groups ({} findings): narrow with --edge, --severity, --rule or \
                 --clause, or see them with --format json",
                rest.len(),
                rest.iter().map(|g| g.count).sum::<u64>()
            );
        }
    }

    fn write_each(&self, out: &mut String) {
        let _ = writeln!(out, "\nFindings:");
        for f in &self.findings {
            match self.file_of(f) {
                Some(file) => {
                    let _ = writeln!(out, "  {file}: {}", one_line(f));
                }
                None => {
                    let _ = writeln!(out, "  {}", one_line(f));
                }
            }
        }
        if let Some(n) = &self.summary.not_listed {
            let _ = writeln!(
                out,
                "  … {} more findings, counted above but not kept: {}",
                n.findings, n.hint
            );
        }
    }

    /// Why: the standard's own words, once per rule that fired.
    fn write_basis(&self, out: &mut String) {
        let mut why: Vec<(&str, &str)> = vec![];
        for f in self
            .findings
            .iter()
            .filter(|f| f.severity >= Severity::Warning)
        {
            if let Some(b) = &f.basis {
                if !why.iter().any(|(r, _)| *r == f.rule) {
                    why.push((&f.rule, b));
                }
            }
        }
        if !why.is_empty() {
            let _ = writeln!(out, "\nBasis (the standard's words):");
            for (rule, basis) in why {
                let _ = writeln!(out, "  [{rule}] {basis}");
            }
        }
    }
}

/// The widest an edge id is shown in a table cell, in characters.
const CELL_CHARS: usize = 40;

/// `s` for a table cell: printable, and cut to [`CELL_CHARS`] with an ellipsis.
fn cell(s: &str) -> String {
    let s = crate::finding::printable(s);
    if s.chars().count() <= CELL_CHARS {
        return s.into_owned();
    }
    let mut cut: String = s.chars().take(CELL_CHARS - 1).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::Stats;
    use crate::rules::engine::Coverage;
    use crate::rules::RuleSet;

    #[test]
    fn a_long_edge_id_is_cut_in_its_table_cell_only() {
        let long = "E".repeat(1000);
        let c = cell(&long);
        assert_eq!(c.chars().count(), CELL_CHARS);
        assert!(c.ends_with('…'));
        assert_eq!(cell("边设备01"), "边设备01");
    }

    #[test]
    fn the_transport_row_counts_packets_and_says_so() {
        let mut seen = Coverage::default();
        seen.messages.insert("5.2".into(), 833);
        seen.messages.insert("5.3".into(), 114);
        let r = Report::build(
            vec!["x.pcap".into()],
            &Stats {
                messages: 114,
                ..Default::default()
            },
            &seen,
            &RuleSet::builtin(),
            vec![],
        );
        let table = r.table(Listing::Grouped);
        let row = |c: &str| {
            table
                .lines()
                .find(|l| l.starts_with(&format!("│ {c} ")))
                .unwrap_or_else(|| panic!("{table}"))
                .to_string()
        };
        assert!(row("5.2").contains("│ 833 packets "), "{table}");
        assert!(row("5.3").contains("│ 114 "), "{table}");
        assert!(!row("5.3").contains("packets"), "{table}");
    }
}
