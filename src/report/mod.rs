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
//!
//! Layout: this file holds the report's data and how it serialises; [`Collector`] is
//! the sink a report is built from, `build` builds and counts it, `clauses` gives each
//! clause its verdict, `exit` says what the run proves (its exit code). Front ends
//! hand back a [`Document`] (`document`: the report plus their tables, suites and
//! JSON members as data); [`render()`] writes it in any [`Format`], one file per
//! format under `render/`, from the [`group`]s, [`edges`] and [`timeline`] it holds.

mod build;
mod clauses;
mod collector;
mod document;
pub mod edges;
mod exit;
pub mod filter;
pub mod group;
pub mod render;
pub mod timeline;

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::finding::Finding;
use crate::pipeline::EdgeTraffic;
use edges::EdgeRow;
use filter::{Filter, FilterNote};
use group::Group;

pub use crate::finding::one_line;
pub use clauses::{ClauseRow, Tally};
pub use collector::{Collector, LISTED_FINDINGS};
pub use document::{Appended, Column, Document, Section, SectionRow, Standalone};
pub use exit::{EXIT_ERRORS, EXIT_NOTHING_JUDGED, EXIT_UNREADABLE};
pub use render::{html, junit, render, Format, Options};

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
    /// Ids of the rules whose findings are work the input did not show finish
    /// (pending requests and jobs): their clause is partly exercised.
    unfinished_rules: BTreeMap<String, clauses::Unfinished>,
    /// The groups of those rules, of the edges a filter shows: a clause's work left
    /// open stays "partly exercised" under `--severity` or `--rule` (they choose
    /// the findings listed, not what the input showed).
    open_work: Vec<Group>,
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Listing {
    /// One line per group of repeated findings.
    #[default]
    Grouped,
    /// One line per finding (`--each`).
    Each,
}

/// What a report shows: its filter and how its table lists findings.
#[derive(Debug, Clone, Default)]
pub struct Shown {
    pub filter: Filter,
    pub listing: Listing,
}
