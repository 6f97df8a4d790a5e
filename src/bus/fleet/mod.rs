//! `edgetap fleet`: what the judges published, as one report. Findings from
//! `edgetap.finding.>`, message counts per edge and each partition's coverage from
//! the latest values of `edgetap.count.>` and `edgetap.coverage.>`, into the report
//! `analyze` and `watch` write (summary, clause table, findings, edges with their
//! message counts), plus a table of edges by label (vendor, site…) from the user's
//! map ([`super::labels`]).
//!
//! [`Fleet`] holds no I/O ([`read`] feeds it); its memory grows with the edges and
//! the finding groups, not with the findings (the report lists the first
//! [`LISTED_FINDINGS`] and counts every one).

pub mod page;
mod read;

pub use read::{read, read_into};

use std::collections::BTreeMap;

use super::labels::Labels;
use super::wire::{BusFinding, EdgeCount, PartitionState};
use crate::pipeline::{EdgeTraffic, Sink, Stats};
use crate::report::filter::Filter;
use crate::report::{Collector, Document, Report, LISTED_FINDINGS};
use crate::report::{Column, Section, SectionRow};
use crate::rules::engine::Coverage;
use crate::rules::RuleSet;

/// What the judges published so far (cloned for `fleet --http`'s pages: bounded,
/// as said above).
#[derive(Clone)]
pub struct Fleet {
    collector: Collector,
    counts: BTreeMap<String, EdgeCount>,
    partitions: BTreeMap<u32, PartitionState>,
    /// Findings read.
    pub findings: u64,
    /// Messages of the bus that could not be read (JSON), skipped.
    pub unreadable: u64,
}

impl Default for Fleet {
    fn default() -> Self {
        Fleet {
            collector: Collector::bounded(LISTED_FINDINGS),
            counts: BTreeMap::new(),
            partitions: BTreeMap::new(),
            findings: 0,
            unreadable: 0,
        }
    }
}

impl Fleet {
    pub fn finding(&mut self, f: BusFinding) {
        self.findings += 1;
        self.collector.finding(&f.finding);
    }

    /// The latest count of an edge (counts are cumulative).
    pub fn count(&mut self, c: EdgeCount) {
        match self.counts.get(&c.edge) {
            Some(old) if old.messages > c.messages => {}
            _ => {
                self.counts.insert(c.edge.clone(), c);
            }
        }
    }

    /// The latest state of a partition.
    pub fn partition(&mut self, s: PartitionState) {
        match self.partitions.get(&s.partition) {
            Some(old) if old.applied > s.applied => {}
            _ => {
                self.partitions.insert(s.partition, s);
            }
        }
    }

    /// Messages per edge so far.
    pub fn edges(&self) -> impl Iterator<Item = (&str, u64)> {
        self.counts.iter().map(|(e, c)| (e.as_str(), c.messages))
    }

    /// The report of `source` (the bus's address, as the report names its input).
    pub fn report(self, source: &str, rules: &RuleSet) -> Report {
        let mut stats = Stats::default();
        let mut coverage = Coverage::default();
        for s in self.partitions.values() {
            stats.publishes += s.publishes;
            stats.mqtt_packets += s.publishes;
            stats.messages += s.messages;
            stats.unattributed += s.unattributed;
            stats.malformed += s.malformed;
            coverage.merge(&Coverage {
                messages: s.clauses.clone(),
                unseen: s.unseen.clone(),
            });
        }
        coverage.note("5.2", super::judge::NOT_SEEN.to_string());
        for (edge, c) in &self.counts {
            stats.edges.insert(
                edge.clone(),
                EdgeTraffic {
                    messages: c.messages,
                    first_us: c.first_us,
                    last_us: c.last_us,
                },
            );
        }
        let partitions = self.partitions.len();
        let records: u64 = self.partitions.values().map(|s| s.records).sum();
        let input = format!("bus {source}: {records} records judged in {partitions} partitions");
        let mut report = Report::collected(
            vec![input],
            &stats,
            &coverage,
            rules,
            self.collector,
            || {
                "the stream EDGETAP_FINDINGS holds every one (`nats stream view EDGETAP_FINDINGS`)"
                    .into()
            },
        );
        let bad: u64 = self.partitions.values().map(|s| s.bad_records).sum();
        if bad > 0 {
            report.summary.incomplete.push(format!(
                "{bad} records on the bus could not be read (their headers) and were not judged"
            ));
        }
        if self.unreadable > 0 {
            report.summary.incomplete.push(format!(
                "{} messages of the judges could not be read and were left out",
                self.unreadable
            ));
        }
        report
    }
}

/// How `fleet` shows what it read: the bus (the report's input), the rules, the
/// filter of the command line, the labels. One for the final report and the pages.
pub struct View {
    pub source: String,
    pub rules: RuleSet,
    pub filter: Filter,
    pub labels: Option<Labels>,
}

impl View {
    /// The report of `fleet`, filtered, saying when nothing was judged.
    pub fn report(&self, fleet: Fleet) -> Report {
        let mut report = fleet.report(&self.source, &self.rules);
        report.apply(&self.filter);
        report.check_judged(vec![format!(
            "no judge published a message count on {}: are `edgetap judge` and `watch --bus` running?",
            self.source
        )]);
        report
    }

    /// The document of `report`: titled, with the table of edges by label.
    pub fn document<'a>(&self, report: &'a Report) -> Document<'a> {
        let mut doc = Document::of(report).titled("edgetap fleet record");
        if let Some(labels) = &self.labels {
            let section = label_section(report, labels);
            doc.members.insert("labels".into(), label_rows(&section));
            doc.sections.push(section);
        }
        doc
    }
}

/// The edges of `report` by label: per label name and value, how many edges, their
/// messages and findings. Edges the map does not name count under `(unlabelled)`.
pub fn label_section(report: &Report, labels: &Labels) -> Section {
    #[derive(Default)]
    struct Row {
        edges: u64,
        messages: u64,
        errors: u64,
        warnings: u64,
    }
    let names: std::collections::BTreeSet<&str> = labels
        .values()
        .flat_map(|l| l.keys().map(String::as_str))
        .collect();
    let mut rows: BTreeMap<(&str, &str), Row> = BTreeMap::new();
    for e in &report.edges {
        let of_edge = labels.get(&e.edge_id);
        for name in &names {
            let value = of_edge
                .and_then(|l| l.get(*name))
                .map_or("(unlabelled)", String::as_str);
            let r = rows.entry((name, value)).or_default();
            r.edges += 1;
            r.messages += e.messages;
            r.errors += e.counts.errors;
            r.warnings += e.counts.warnings;
        }
    }
    Section {
        id: "labels".into(),
        title: "Edges by label".into(),
        note: Some(format!(
            "{} edges labelled by the map, {} in the report",
            labels.len(),
            report.edges.len()
        )),
        columns: Column::all([
            "status", "label", "value", "edges", "messages", "errors", "warnings",
        ]),
        rows: rows
            .into_iter()
            .map(|((name, value), r)| {
                let status = if r.errors > 0 { "fail" } else { "pass" };
                SectionRow::new(
                    status,
                    vec![
                        status.to_string(),
                        name.to_string(),
                        value.to_string(),
                        r.edges.to_string(),
                        r.messages.to_string(),
                        r.errors.to_string(),
                        r.warnings.to_string(),
                    ],
                    vec![],
                )
            })
            .collect(),
        status_col: Some(0),
    }
}

/// [`label_section`] as JSON rows (the `labels` member of `fleet --format json`).
pub fn label_rows(section: &Section) -> serde_json::Value {
    let names: Vec<&str> = section.columns.iter().map(|c| c.name.as_str()).collect();
    serde_json::Value::Array(
        section
            .rows
            .iter()
            .map(|r| {
                let mut o = serde_json::Map::new();
                for (n, v) in names.iter().zip(&r.cells).skip(1) {
                    let v = match v.parse::<u64>() {
                        Ok(x) => serde_json::Value::from(x),
                        Err(_) => serde_json::Value::from(v.clone()),
                    };
                    o.insert(n.to_string(), v);
                }
                serde_json::Value::Object(o)
            })
            .collect(),
    )
}
