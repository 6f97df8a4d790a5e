//! The per-edge summary: for each edge id, its messages, its findings and when it
//! was heard, so a capture of many devices shows which ones fail.

use std::collections::BTreeMap;

use serde::Serialize;

use super::group::Group;
use crate::pipeline::EdgeTraffic;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EdgeRow {
    pub edge_id: String,
    /// Protocol messages on the edge's topics.
    pub messages: u64,
    #[serde(flatten)]
    pub counts: super::Tally,
    /// Earliest and latest message or finding, µs since the Unix epoch.
    pub first_time: Option<i64>,
    pub last_time: Option<i64>,
}

impl EdgeRow {
    fn new(edge_id: &str, traffic: EdgeTraffic) -> EdgeRow {
        EdgeRow {
            edge_id: edge_id.to_string(),
            messages: traffic.messages,
            counts: super::Tally::default(),
            first_time: traffic.first_us,
            last_time: traffic.last_us,
        }
    }

    fn count(&mut self, g: &Group, outcome: bool) {
        self.counts.count(g.severity, outcome, g.count);
        if let Some(t) = g.first_time {
            self.first_time = Some(self.first_time.map_or(t, |x| x.min(t)));
        }
        if let Some(t) = g.last_time {
            self.last_time = Some(self.last_time.map_or(t, |x| x.max(t)));
        }
    }
}

/// One row per edge that sent or received a message or has a finding (`groups` of
/// findings), by edge id.
pub fn edge_rows(
    traffic: &BTreeMap<String, EdgeTraffic>,
    groups: &[Group],
    is_outcome: impl Fn(&Group) -> bool,
) -> Vec<EdgeRow> {
    let mut rows: BTreeMap<&str, EdgeRow> = traffic
        .iter()
        .map(|(id, t)| (id.as_str(), EdgeRow::new(id, *t)))
        .collect();
    for g in groups {
        let Some(id) = g.edge_id.as_deref() else {
            continue;
        };
        rows.entry(id)
            .or_insert_with(|| EdgeRow::new(id, EdgeTraffic::default()))
            .count(g, is_outcome(g));
    }
    rows.into_values().collect()
}

/// A time for people: `2026-11-26 02:00:01.250` (UTC).
pub fn show_time(us: Option<i64>) -> String {
    us.and_then(chrono::DateTime::from_timestamp_micros)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S%.3f").to_string())
        .unwrap_or_else(|| "—".into())
}
