//! Findings as the store keeps them: aggregated per (edge, rule, field path) with a
//! count, the first and last occurrence and a few example findings, in
//! `chunks/CAP.findings.json` (rewritten whole, by rename, when it changed). A device
//! that leaves ten fields out of 100,000 status reports leaves ten groups, not a
//! million records. Every occurrence can still be derived from the stored bytes:
//! `edgetap analyze --capture ID` runs them through the pipeline again.
//!
//! The field path is part of the finding's message; the key is the message with its
//! numbers and ids replaced by `#` ([`crate::finding::pattern`]), so each
//! missing field is its own group and mids, dates and job ids do not split them.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::finding::{Finding, Severity, Side};

/// Example findings kept per group.
pub const EXAMPLES: usize = 5;
/// Groups kept per capture; findings of further groups are only counted
/// (`FindingsFile::ungrouped`).
pub const MAX_GROUPS: usize = 2_000;

/// Where a finding occurred: the event (`packet`) number and the time.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Default)]
pub struct Occurrence {
    pub packet: Option<u64>,
    /// µs since the Unix epoch.
    pub time: Option<i64>,
}

/// Findings of one (edge, rule, field path) in a capture.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FindingGroup {
    pub rule: String,
    pub clause: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    pub severity: Severity,
    pub edge_id: Option<String>,
    /// The message with numbers and ids replaced by `#` (it names the field path).
    pub pattern: String,
    pub count: u64,
    pub first: Occurrence,
    pub last: Occurrence,
    /// The first [`EXAMPLES`] findings, whole.
    pub examples: Vec<Finding>,
}

#[derive(Deserialize)]
struct StoredGroup {
    rule: String,
    clause: String,
    #[serde(default)]
    table: Option<String>,
    severity: Severity,
    edge_id: Option<String>,
    pattern: String,
    count: u64,
    first: Occurrence,
    last: Occurrence,
    examples: Vec<StoredFinding>,
}

/// The content of `CAP.findings.json`.
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct FindingsFile {
    pub total: u64,
    /// Findings not grouped because the capture already had [`MAX_GROUPS`] groups.
    pub ungrouped: u64,
    pub groups: Vec<FindingGroup>,
}

#[derive(Deserialize)]
struct StoredFile {
    total: u64,
    #[serde(default)]
    ungrouped: u64,
    groups: Vec<StoredGroup>,
}

impl FindingsFile {
    /// Cites the frame numbers of `captures export` instead of the store's event
    /// numbers: the examples their own frame, first and last their event's first.
    pub fn renumber(&mut self, frames: &super::export::FrameIndex) {
        for g in &mut self.groups {
            for o in [&mut g.first, &mut g.last] {
                o.packet = o.packet.and_then(|p| frames.frame_of_event(p)).or(o.packet);
            }
            if let Some(f) = g.examples.first() {
                g.first.packet = frames.frame_of(f).or(g.first.packet);
            }
            for f in &mut g.examples {
                f.packet = frames.frame_of(f).or(f.packet);
            }
        }
    }

    pub(crate) fn parse(b: &[u8]) -> Result<FindingsFile, serde_json::Error> {
        let s: StoredFile = serde_json::from_slice(b)?;
        Ok(FindingsFile {
            total: s.total,
            ungrouped: s.ungrouped,
            groups: s
                .groups
                .into_iter()
                .map(|g| FindingGroup {
                    rule: g.rule,
                    clause: g.clause,
                    table: g.table,
                    severity: g.severity,
                    edge_id: g.edge_id,
                    pattern: g.pattern,
                    count: g.count,
                    first: g.first,
                    last: g.last,
                    examples: g.examples.into_iter().map(|f| f.into_finding()).collect(),
                })
                .collect(),
        })
    }

    /// The example findings of every group, in group order.
    pub fn examples(&self) -> Vec<Finding> {
        self.groups
            .iter()
            .flat_map(|g| g.examples.iter().cloned())
            .collect()
    }
}

#[derive(Hash, PartialEq, Eq)]
struct Key {
    rule: String,
    edge_id: Option<String>,
    severity: Severity,
    pattern: String,
}

/// A capture's groups as findings come, kept in memory by the recording process
/// (and by the proxy's final re-judging, `analyze::stored::rejudge_capture`).
#[derive(Default)]
pub struct Aggregate {
    pub(crate) file: FindingsFile,
    index: HashMap<Key, usize>,
    /// Changed since last written.
    pub(crate) dirty: bool,
}

impl Aggregate {
    pub fn add(&mut self, f: &Finding) {
        self.dirty = true;
        self.file.total += 1;
        let key = Key {
            rule: f.rule.clone(),
            edge_id: f.edge_id.clone(),
            severity: f.severity,
            pattern: crate::finding::pattern(&f.message),
        };
        let at = Occurrence {
            packet: f.packet,
            time: f.time,
        };
        match self.index.get(&key) {
            Some(&i) => {
                let g = &mut self.file.groups[i];
                g.count += 1;
                g.last = at;
                if g.examples.len() < EXAMPLES {
                    g.examples.push(f.clone());
                }
            }
            None if self.file.groups.len() >= MAX_GROUPS => self.file.ungrouped += 1,
            None => {
                self.file.groups.push(FindingGroup {
                    rule: f.rule.clone(),
                    clause: f.clause.clone(),
                    table: f.table.clone(),
                    severity: f.severity,
                    edge_id: f.edge_id.clone(),
                    pattern: key.pattern.clone(),
                    count: 1,
                    first: at,
                    last: at,
                    examples: vec![f.clone()],
                });
                self.index.insert(key, self.file.groups.len() - 1);
            }
        }
    }
}

impl FindingGroup {
    /// `error   6.1.3 [t10.X] edge E1 ×2000, first packet 8 (time), last 2007: <example>`
    pub fn line(&self) -> String {
        let mut s = format!(
            "{:<7} {} [{}]",
            self.severity.as_str(),
            self.clause,
            self.rule
        );
        if let Some(e) = &self.edge_id {
            s.push_str(&format!(" edge {e}"));
        }
        let p = |o: &Occurrence| o.packet.map_or("?".to_string(), |p| p.to_string());
        if self.count == 1 {
            s.push_str(&format!(" packet {}", p(&self.first)));
        } else {
            s.push_str(&format!(
                " ×{}, first packet {}, last {}",
                self.count,
                p(&self.first),
                p(&self.last)
            ));
        }
        let example = self
            .examples
            .first()
            .map_or(self.pattern.as_str(), |f| f.message.as_str());
        s.push_str(&format!(": {example}"));
        s
    }
}

/// [`Finding`] as read back (the report type only serialises).
#[derive(Deserialize)]
pub(crate) struct StoredFinding {
    rule: String,
    clause: String,
    table: Option<String>,
    severity: Severity,
    edge_id: Option<String>,
    #[serde(rename = "type")]
    msg_type: Option<String>,
    topic: Option<String>,
    mid: Option<u64>,
    packet: Option<u64>,
    time: Option<i64>,
    message: String,
    conn: Option<u64>,
    side: Option<String>,
    offset: Option<u64>,
    #[serde(default)]
    basis: Option<String>,
    #[serde(default)]
    from: Option<crate::protocol::Actor>,
}

impl StoredFinding {
    pub(crate) fn into_finding(self) -> Finding {
        Finding {
            rule: self.rule,
            clause: self.clause,
            table: self.table,
            severity: self.severity,
            edge_id: self.edge_id,
            msg_type: self.msg_type,
            topic: self.topic,
            mid: self.mid,
            packet: self.packet,
            time: self.time,
            message: self.message,
            conn: self.conn,
            side: self.side.map(|s| {
                if s == "server" {
                    Side::Server
                } else {
                    Side::Client
                }
            }),
            offset: self.offset,
            basis: self.basis.map(Into::into),
            from: self.from,
        }
    }
}
