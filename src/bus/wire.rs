//! What judges publish, as JSON: a finding with where it came from, an edge's
//! message count, a partition's coverage. `fleet` reads the same types back.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::finding::Finding;

/// One finding, as the report's findings are, with the record it cites.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BusFinding {
    #[serde(flatten)]
    pub finding: Finding,
    pub partition: u32,
    /// The stream sequence of the record judged when it was found (also the
    /// finding's `packet`).
    pub stream_seq: u64,
    /// The watcher that received that record.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub watcher: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub watcher_seq: Option<u64>,
}

/// Messages of one edge so far (cumulative: the latest replaces the one before).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EdgeCount {
    pub edge: String,
    pub partition: u32,
    pub messages: u64,
    pub first_us: Option<i64>,
    pub last_us: Option<i64>,
}

/// A partition's counters and the clauses its judge exercised (cumulative).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct PartitionState {
    pub partition: u32,
    /// The last stream sequence applied.
    pub applied: u64,
    /// Records applied (each once).
    pub records: u64,
    /// Records that could not be read (their headers), skipped.
    pub bad_records: u64,
    pub publishes: u64,
    pub messages: u64,
    pub unattributed: u64,
    pub malformed: u64,
    /// Messages seen per clause.
    pub clauses: BTreeMap<String, u64>,
    /// Per clause: checks that could not be made, with the reason and how often.
    pub unseen: BTreeMap<String, BTreeMap<String, u64>>,
}
