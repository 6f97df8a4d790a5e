//! The test record: a clause table (pass / fail / not exercised) and the findings,
//! as a terminal table, JSON (a contract other tools rely on) or JUnit XML.
//!
//! JSON contract (`edgetap analyze --format json`): `summary` {`mqtt_packets`,
//! `publishes`, `messages`, `unattributed`, `errors`, `warnings`, `judged` (false:
//! no protocol message was judged, exit code 3), `not_judged_because` (reasons, with
//! hints), `incomplete` (captures not read in full: file, frame, byte offset),
//! `unreadable` (the part of those that makes the input unreadable, exit code 2), …}; `clauses`
//! [{`clause`, `title`, `status` (pass, fail, partly exercised, not exercised),
//! `errors`, `warnings`, `outcomes`, `not_exercised` (reasons)}]; `findings` [{`rule`,
//! `clause`, `severity`, `edge_id`, `type`, `topic`, `mid`, `packet`, `time`,
//! `message`, `basis`, …}] (every finding shown, never grouped); `groups` [{`rule`,
//! `clause`, `severity`, `edge_id`, `pattern`, `count`, `first_packet`, `last_packet`,
//! `first_time`, `last_time`, `example`}] (the findings grouped, see [`group`]);
//! `edges` [{`edge_id`, `messages`, `errors`, `warnings`, `outcomes`, `first_time`,
//! `last_time`}]. A filtered report ([`filter`]) holds only the findings it shows and
//! says in `summary.filtered` what it left out.

mod clauses;
mod collector;
pub mod edges;
mod exit;
pub mod filter;
pub mod group;
pub mod html;
pub mod junit;
mod table;
pub mod timeline;

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::finding::{Finding, Severity};
use crate::pipeline::{EdgeTraffic, Stats};
use crate::rules::engine::Coverage;
use crate::rules::RuleSet;
use edges::{edge_rows, EdgeRow};
use filter::{Filter, FilterNote};
use group::Group;

pub use crate::finding::one_line;
use clauses::{is_outcome_check, owner, unjudged_row};
pub use clauses::{ClauseRow, Tally};
pub use collector::{Collector, LISTED_FINDINGS};
pub use exit::{EXIT_ERRORS, EXIT_NOTHING_JUDGED, EXIT_UNREADABLE};

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub inputs: Vec<String>,
    pub connections: u64,
    /// MQTT control packets decoded.
    pub mqtt_packets: u64,
    /// PUBLISH packets on the wire, every leg.
    pub publishes: u64,
    /// Logical protocol messages, each counted once.
    pub messages: u64,
    /// Broker deliveries recognised as copies of a message.
    pub deliveries: u64,
    /// PUBLISH packets that are no protocol message (a topic outside the standard,
    /// an unknown MQTT 5 topic alias): counted, reported, not judged.
    pub unattributed: u64,
    pub errors: u64,
    pub warnings: u64,
    pub infos: u64,
    /// What `--edge`, `--severity`, `--rule` or `--clause` left out; the counts above
    /// are of the findings shown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filtered: Option<FilterNote>,
    /// False when the run judged no protocol message: it proves nothing (exit code 3).
    pub judged: bool,
    /// Why nothing was judged, each with the hint that fits (empty when `judged`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_judged_because: Vec<String>,
    /// Captures not read in full: where reading stopped and why (file, frame, byte
    /// offset). The run's verdict covers only what was read.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub incomplete: Vec<String>,
    /// Those of `incomplete` that make the input unreadable (broken framing before the
    /// end of the file, or not a single frame read): exit code 2.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unreadable: Vec<String>,
    /// Findings counted above and in the groups but not listed one by one: a long
    /// capture's final report keeps the first findings and the first of each group.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_listed: Option<NotListed>,
}

/// Findings a report counts but does not list ([`Collector::bounded`]).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct NotListed {
    pub findings: u64,
    /// How to list every one (e.g. "`edgetap analyze --capture 3 --each` lists
    /// every one").
    pub hint: String,
}

/// Serialized by hand (see the `Serialize` impl below): each finding carries the
/// input file it came from and its time as RFC 3339 beside the microseconds.
#[derive(Debug, Clone)]
pub struct Report {
    pub summary: Summary,
    pub clauses: Vec<ClauseRow>,
    pub findings: Vec<Finding>,
    pub rules: Vec<String>,
    /// The findings grouped (rule, clause, edge, message without numbers and ids).
    pub groups: Vec<Group>,
    /// One row per edge.
    pub edges: Vec<EdgeRow>,
    /// Ids of the rules whose info findings are outcomes (refused commands, failed jobs).
    outcome_rules: BTreeSet<String>,
    /// Messages per edge, to count the edges again after a filter.
    traffic: BTreeMap<String, EdgeTraffic>,
    /// The message sequence per edge, for the HTML record's charts (when collected:
    /// [`Collector::charting`]).
    pub timeline: Option<std::sync::Arc<timeline::Timeline>>,
    /// Seconds east of UTC of the RFC 3339 times in JSON (`--tz`).
    tz_offset_s: i64,
}

impl Serialize for Report {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Out<'a> {
            summary: &'a Summary,
            clauses: &'a [ClauseRow],
            findings: Vec<Located<'a>>,
            rules: &'a [String],
            groups: &'a [Group],
            edges: &'a [EdgeRow],
        }
        /// A finding with where it is: the input file (with several inputs) and the
        /// time in RFC 3339 with the `--tz` offset.
        #[derive(Serialize)]
        struct Located<'a> {
            #[serde(flatten)]
            f: &'a Finding,
            #[serde(skip_serializing_if = "Option::is_none")]
            file: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            time_rfc3339: Option<String>,
        }
        Out {
            summary: &self.summary,
            clauses: &self.clauses,
            findings: self
                .findings
                .iter()
                .map(|f| Located {
                    f,
                    file: self.file_of(f),
                    time_rfc3339: f.time.and_then(|t| rfc3339(t, self.tz_offset_s)),
                })
                .collect(),
            rules: &self.rules,
            groups: &self.groups,
            edges: &self.edges,
        }
        .serialize(s)
    }
}

/// Microseconds since the epoch as RFC 3339 with the offset `tz_offset_s`.
pub fn rfc3339(us: i64, tz_offset_s: i64) -> Option<String> {
    let tz = chrono::FixedOffset::east_opt(i32::try_from(tz_offset_s).ok()?)?;
    let t = chrono::DateTime::from_timestamp_micros(us)?;
    Some(
        t.with_timezone(&tz)
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
    )
}

/// How the table lists findings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listing {
    /// One line per group of repeated findings.
    Grouped,
    /// One line per finding (`--each`).
    Each,
}

/// What a report shows: its filter and how its table lists findings.
#[derive(Debug, Clone)]
pub struct Shown {
    pub filter: Filter,
    pub listing: Listing,
}

impl Default for Shown {
    fn default() -> Shown {
        Shown {
            filter: Filter::default(),
            listing: Listing::Grouped,
        }
    }
}

impl Report {
    pub fn build(
        inputs: Vec<String>,
        stats: &Stats,
        exercised: &Coverage,
        rules: &RuleSet,
        findings: Vec<Finding>,
    ) -> Report {
        let groups = group::group(&findings);
        Report::build_grouped(inputs, stats, exercised, rules, findings, groups, None)
    }

    /// `groups` are of every finding, `findings` of those listed (all of them unless
    /// `not_listed`).
    pub(crate) fn build_grouped(
        inputs: Vec<String>,
        stats: &Stats,
        exercised: &Coverage,
        rules: &RuleSet,
        findings: Vec<Finding>,
        groups: Vec<Group>,
        not_listed: Option<NotListed>,
    ) -> Report {
        let summary = Summary {
            inputs,
            connections: stats.connections,
            mqtt_packets: stats.mqtt_packets,
            publishes: stats.publishes,
            messages: stats.messages,
            deliveries: stats.deliveries,
            unattributed: stats.unattributed,
            errors: 0,
            warnings: 0,
            infos: 0,
            filtered: None,
            judged: true,
            not_judged_because: vec![],
            incomplete: vec![],
            unreadable: vec![],
            not_listed,
        };
        let clauses = rules
            .clauses
            .iter()
            .map(|c| unjudged_row(&c.clause, &c.title, exercised))
            .collect();
        let outcome_rules = rules
            .rules
            .iter()
            .filter(|r| is_outcome_check(&r.def.check))
            .map(|r| r.def.id.clone())
            .collect();
        let mut report = Report {
            summary,
            clauses,
            findings,
            rules: rules.files.clone(),
            groups,
            edges: vec![],
            outcome_rules,
            traffic: stats.edges.clone(),
            timeline: None,
            tz_offset_s: rules.tz(),
        };
        report.recount();
        report
    }

    /// The input file a finding came from, when the run read several: the
    /// connection ids of file `i` start at `i × CONN_STRIDE`.
    pub fn file_of(&self, f: &Finding) -> Option<&str> {
        if self.summary.inputs.len() < 2 {
            return None;
        }
        let i = usize::try_from(f.conn? / crate::finding::CONN_STRIDE).ok()?;
        self.summary.inputs.get(i).map(String::as_str)
    }

    /// Renumbers the findings (`packet`) with `frame_of`, e.g. a stored capture's
    /// chunk numbers as the frame numbers its pcapng export carries; groups follow
    /// when the report lists every finding (a bounded one's groups keep the numbers
    /// they were counted with: see [`Report::renumber_groups`]).
    pub fn renumber(&mut self, frame_of: impl Fn(&Finding) -> Option<u64>) {
        for f in &mut self.findings {
            if let Some(n) = frame_of(f) {
                f.packet = Some(n);
            }
        }
        if self.summary.not_listed.is_none() {
            self.groups = group::group(&self.findings);
        }
        self.recount();
    }

    /// For a bounded report (whose groups count findings it did not keep): the
    /// groups' first and last packet numbers through `frame_of_packet`.
    pub fn renumber_groups(&mut self, frame_of_packet: impl Fn(u64) -> Option<u64>) {
        if self.summary.not_listed.is_none() {
            return;
        }
        for g in &mut self.groups {
            for p in [&mut g.first_packet, &mut g.last_packet] {
                *p = p.map(|n| frame_of_packet(n).unwrap_or(n));
            }
        }
    }

    /// Keeps only the findings `filter` shows, counts again, and notes what it left
    /// out. The clause table keeps the clauses of `--clause`, the edges table the
    /// edges of `--edge`.
    pub fn apply(&mut self, filter: &Filter) {
        if filter.is_empty() {
            return;
        }
        // An --edge that names no edge of the input (a typo, a device that never
        // showed up) judged nothing: said so, and the exit code is 3, not a pass.
        if !filter.edges.is_empty()
            && filter
                .edges
                .iter()
                .all(|e| !self.edges.iter().any(|r| &r.edge_id == e))
        {
            let seen: Vec<&str> = self.edges.iter().map(|r| r.edge_id.as_str()).collect();
            self.summary.judged = false;
            self.summary.not_judged_because.push(format!(
                "no message of edge {} in the input; its edges are: {}",
                filter.edges.join(", "),
                if seen.is_empty() {
                    "none".to_string()
                } else {
                    seen.join(", ")
                }
            ));
        }
        self.findings.retain(|f| filter.keeps(f));
        let (shown, hidden): (Vec<Group>, Vec<Group>) = std::mem::take(&mut self.groups)
            .into_iter()
            .partition(|g| filter.keeps_group(g));
        self.groups = shown;
        self.recount();
        // What is not listed is what the groups count beyond the listed findings:
        // derived again, so it covers only what the filter shows.
        if let Some(n) = &mut self.summary.not_listed {
            n.findings =
                self.groups.iter().map(|g| g.count).sum::<u64>() - self.findings.len() as u64;
        }
        if self
            .summary
            .not_listed
            .as_ref()
            .is_some_and(|n| n.findings == 0)
        {
            self.summary.not_listed = None;
        }
        self.summary.filtered = Some(filter.note(&hidden));
        self.clauses.retain(|c| filter.shows_clause(&c.clause));
        self.edges.retain(|e| filter.shows_edge(&e.edge_id));
        if let Some(t) = &mut self.timeline {
            std::sync::Arc::make_mut(t).retain(|f| filter.keeps(f), |e| filter.shows_edge(e));
        }
    }

    /// The report with the message sequence `timeline` (from [`Collector::charting`]).
    pub fn with_timeline(mut self, timeline: Option<timeline::Timeline>) -> Report {
        self.timeline = timeline.map(std::sync::Arc::new);
        self
    }

    /// Counts, clause verdicts and edges from the groups (which count every
    /// finding, listed or not).
    fn recount(&mut self) {
        let count = |s: Severity| {
            self.groups
                .iter()
                .filter(|g| g.severity == s)
                .map(|g| g.count)
                .sum()
        };
        self.summary.errors = count(Severity::Error);
        self.summary.warnings = count(Severity::Warning);
        self.summary.infos = count(Severity::Info);
        let listed: Vec<String> = self.clauses.iter().map(|c| c.clause.clone()).collect();
        let mut tallies = vec![Tally::default(); listed.len()];
        for g in &self.groups {
            if let Some(i) = owner(&g.clause, &listed) {
                tallies[i].count(g.severity, self.outcome_rules.contains(&g.rule), g.count);
            }
        }
        for (row, t) in self.clauses.iter_mut().zip(tallies) {
            t.set(row);
        }
        let outcomes = &self.outcome_rules;
        self.edges = edge_rows(&self.traffic, &self.groups, |g| outcomes.contains(&g.rule));
    }

    /// Findings counted, listed or not.
    pub fn total_findings(&self) -> u64 {
        self.groups.iter().map(|g| g.count).sum()
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("report serialises")
    }
}
