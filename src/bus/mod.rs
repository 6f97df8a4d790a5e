//! The scale-out bus on NATS JetStream: watchers publish what they receive, judges
//! judge it partition by partition, `fleet` reads what the judges publish.
//!
//! ```text
//!  watch --bus ──► edgetap.msg.<edge>.<dir> ──(server mapping, partition(N,1))──►
//!      EDGETAP_MSG stream: edgetap.p.<k>.<edge>.<dir>
//!          └─ durable pull consumer judge-p<k> ──► judge --partitions K..M
//!                 ├─► EDGETAP_FINDINGS: edgetap.finding.<edge>   (one JSON finding each)
//!                 └─► EDGETAP_COUNTS:   edgetap.count.<edge>, edgetap.coverage.p<k>
//!                                        (latest value per subject)
//!                 └─► EDGETAP_CURSORS:  edgetap.cursor.p<k>      (the last record applied)
//!                                              └─► fleet: one report, edges labelled
//! ```
//!
//! Every record of one edge lands in one partition, in the order its watcher
//! published them; a partition is judged by one judge, through one
//! [`crate::pipeline::Analyzer`]. So pairing, jobs and sequences, which need an
//! edge's messages together and in order, are judged as one process would.
//! How a judge survives being killed is in [`judge`].
//!
//! The commands create the streams, the consumers and the judges' cursors
//! when missing ([`open`]); the mapping is the server's configuration
//! ([`config`]).

pub mod config;
pub mod fleet;
pub mod judge;
pub mod labels;
pub mod outlet;
pub mod publish;
pub mod record;
pub mod subject;
pub mod wire;

use std::time::Duration;

use async_nats::jetstream::{self, stream};

/// The stream of records, partitioned by the server's mapping.
pub const MSG_STREAM: &str = "EDGETAP_MSG";
/// The judges' findings.
pub const FINDING_STREAM: &str = "EDGETAP_FINDINGS";
/// The judges' counts and coverage, the latest per subject.
pub const COUNT_STREAM: &str = "EDGETAP_COUNTS";
/// The judges' cursors: the last stream sequence each partition applied, one
/// message per subject `edgetap.cursor.p<k>` (what a JetStream KV bucket is; the
/// client's KV create asks the server for account details in a form 2.9 does not
/// answer, so the bus keeps its own stream).
pub const CURSOR_STREAM: &str = "EDGETAP_CURSORS";

/// A publish repeated within this window (same `Nats-Msg-Id`) is stored once.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// What went wrong on the bus, and doing what.
#[derive(Debug, thiserror::Error)]
#[error("{doing}: {detail}")]
pub struct BusError {
    pub doing: String,
    pub detail: String,
}

impl BusError {
    pub fn new(doing: impl Into<String>, detail: impl std::fmt::Display) -> BusError {
        BusError {
            doing: doing.into(),
            detail: detail.to_string(),
        }
    }
}

/// How long records are kept: a restarted judge rebuilds its edges' state from
/// what the stream still holds (see [`judge`]).
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(24 * 3600);

/// Connects to `url` (`nats://HOST:PORT`) and makes sure the streams exist.
pub async fn open(url: &str, retention: Duration) -> Result<jetstream::Context, BusError> {
    let client = async_nats::ConnectOptions::new()
        .name("edgetap")
        .connect(url)
        .await
        .map_err(|e| BusError::new(format!("connecting to {url}"), e))?;
    let js = jetstream::new(client);
    let streams = [
        stream::Config {
            name: MSG_STREAM.into(),
            description: Some("edgetap: the watchers' records, by partition".into()),
            subjects: vec![format!("{}.>", subject::PARTITION_PREFIX)],
            duplicate_window: DUPLICATE_WINDOW,
            max_age: retention,
            ..Default::default()
        },
        stream::Config {
            name: FINDING_STREAM.into(),
            description: Some("edgetap: the judges' findings".into()),
            subjects: vec![format!("{}.>", subject::FINDING_PREFIX)],
            duplicate_window: DUPLICATE_WINDOW,
            max_age: retention,
            ..Default::default()
        },
        stream::Config {
            name: COUNT_STREAM.into(),
            description: Some("edgetap: messages per edge and clauses exercised".into()),
            subjects: vec![
                format!("{}.>", subject::COUNT_PREFIX),
                format!("{}.>", subject::COVERAGE_PREFIX),
            ],
            max_messages_per_subject: 1,
            ..Default::default()
        },
        stream::Config {
            name: CURSOR_STREAM.into(),
            description: Some("edgetap: the last record each partition's judge applied".into()),
            subjects: vec![format!("{}.>", subject::CURSOR_PREFIX)],
            max_messages_per_subject: 1,
            ..Default::default()
        },
    ];
    for config in streams {
        let name = config.name.clone();
        js.get_or_create_stream(config)
            .await
            .map_err(|e| BusError::new(format!("creating the stream {name} on {url}"), e))?;
    }
    Ok(js)
}
