//! `edgetap judge`: judges partitions of the bus, each through one
//! [`PartitionJudge`] (one [`crate::pipeline::Analyzer`] per partition: a
//! partition is the unit of order), and publishes what it finds.
//!
//! ## Nothing judged twice, nothing lost, across a SIGKILL
//!
//! The cursor of a partition is the last stream sequence it applied, kept on the
//! bus itself ([`super::CURSOR_STREAM`], subject `edgetap.cursor.p<k>`, the latest
//! message only, as a KV bucket keeps a key). A batch of records is
//! judged, then its findings are published (each with the `Nats-Msg-Id`
//! `p<k>.<stream sequence>.<n>`) and their acks awaited, then the cursor is put,
//! then the records are acked. A judge killed anywhere in between leaves either
//! the old cursor (the batch is judged again after the restart and its findings,
//! the same ids, are dropped by the stream's duplicate window) or the new one (the
//! batch is never judged again). The pairing and sequence state is not saved: at
//! start, the judge replays its partition from the stream up to the cursor into a
//! fresh analyzer, findings dropped, so the state is what it was, record for
//! record (the stream keeps records for `--retention`; older ones are outside what
//! can be rebuilt).
//!
//! Then it points its durable pull consumer (`judge-p<k>`, ack explicit, filtered
//! on `edgetap.p.<k>.>`) at the record after the cursor, deleting the one left by
//! the last run: the server would otherwise redeliver the records the killed judge
//! held only after their ack wait, behind newer ones, and pairing and sequences
//! need the edge's order. A record delivered again whose sequence is not above the
//! cursor is acked and left alone.
//!
//! The stream has no end, so a judge does not judge the end of input (requests
//! never answered, replies nothing explained, jobs never finished): those stay
//! pending, as in a `watch` that is still running. With `--finish` (a bounded run:
//! the watchers have stopped) a judge that is stopped judges it, as `watch` does
//! when it stops, and publishes those findings too (ids `p<k>.end.<cursor>.<n>`).
//!
//! What partitioning by edge changes, against one pipeline over the whole broker:
//! the pipeline reports a tolerated dialect once per connection, here once per
//! partition (a plain `watch`: once for the broker); and a check that relates two
//! edges (a reply on another edge's topic, `reply.wrong_edge`) sees both only when
//! they share a partition, else the request stays pending.

mod partition;

pub use partition::{Applied, PartitionJudge, NOT_SEEN};

use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, Context};
use futures_util::{FutureExt, StreamExt};
use tokio::sync::watch;

use super::record::Record;
use super::subject::{
    count_subject, finding_subject, partition_filter, COVERAGE_PREFIX, CURSOR_PREFIX,
};
use super::wire::PartitionState;
use super::{BusError, CURSOR_STREAM, MSG_STREAM};
use crate::rules::RuleSet;

/// How a judge runs.
#[derive(Debug, Clone)]
pub struct JudgeSettings {
    pub url: String,
    pub partitions: RangeInclusive<u32>,
    /// How often changed counts and coverage are published.
    pub report_every: Duration,
    /// How long the streams keep records (when the judge creates them).
    pub retention: Duration,
    /// Records judged between two cursor writes, at most.
    pub batch: usize,
    /// Judge the end of input when stopped.
    pub finish: bool,
}

impl JudgeSettings {
    pub fn new(url: &str, partitions: RangeInclusive<u32>) -> JudgeSettings {
        JudgeSettings {
            url: url.to_string(),
            partitions,
            report_every: Duration::from_secs(1),
            retention: super::DEFAULT_RETENTION,
            batch: 256,
            finish: false,
        }
    }
}

/// Counters of a running judge, all partitions together.
#[derive(Debug, Default)]
pub struct Progress {
    /// Records replayed at start to rebuild the state.
    pub rebuilt: AtomicU64,
    /// Records judged (each once).
    pub judged: AtomicU64,
    /// Deliveries at or below the cursor, acked and left alone.
    pub skipped: AtomicU64,
    pub findings: AtomicU64,
}

/// What a judge comes to.
#[derive(Debug)]
pub struct JudgeOutcome {
    pub partitions: Vec<PartitionState>,
}

/// The durable consumer of partition `k`.
pub fn consumer_name(k: u32) -> String {
    format!("judge-p{k}")
}

/// Judges `settings.partitions` until `stop` turns true; each partition on a task of
/// its own.
pub async fn run(
    settings: &JudgeSettings,
    rules: Arc<RuleSet>,
    progress: Arc<Progress>,
    stop: watch::Receiver<bool>,
) -> Result<JudgeOutcome, BusError> {
    let js = super::open(&settings.url, settings.retention).await?;
    let cursors = js
        .get_stream(CURSOR_STREAM)
        .await
        .map_err(|e| BusError::new(format!("opening the stream {CURSOR_STREAM}"), e))?;
    let mut tasks = vec![];
    for k in settings.partitions.clone() {
        let task = Partition {
            k,
            js: js.clone(),
            cursors: cursors.clone(),
            judge: PartitionJudge::new(rules.clone(), k),
            settings: settings.clone(),
            progress: progress.clone(),
            reported: None,
        };
        tasks.push(tokio::spawn(task.run(stop.clone())));
    }
    let mut partitions = vec![];
    for t in tasks {
        let state = t
            .await
            .map_err(|e| BusError::new("a partition's task", e))??;
        partitions.push(state);
    }
    Ok(JudgeOutcome { partitions })
}

/// The stop channel closed without a stop (the judge is going down on an error).
fn stop_failed(stop: &watch::Receiver<bool>) -> bool {
    !*stop.borrow()
}

struct Partition {
    k: u32,
    js: Context,
    cursors: jetstream::stream::Stream,
    judge: PartitionJudge,
    settings: JudgeSettings,
    progress: Arc<Progress>,
    /// The cursor when counts and coverage were last published.
    reported: Option<u64>,
}

impl Partition {
    fn cursor_subject(&self) -> String {
        format!("{CURSOR_PREFIX}.p{}", self.k)
    }

    /// The last stream sequence applied, 0 for none.
    async fn read_cursor(&self) -> Result<u64, BusError> {
        use jetstream::stream::LastRawMessageErrorKind as Kind;
        let doing = || format!("partition {}: reading its cursor", self.k);
        match self
            .cursors
            .get_last_raw_message_by_subject(&self.cursor_subject())
            .await
        {
            Ok(m) => std::str::from_utf8(&m.payload)
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| BusError::new(doing(), "not a number")),
            Err(e) if e.kind() == Kind::NoMessageFound => Ok(0),
            Err(e) => Err(BusError::new(doing(), e)),
        }
    }

    async fn run(mut self, mut stop: watch::Receiver<bool>) -> Result<PartitionState, BusError> {
        let k = self.k;
        let doing = |what: &str| format!("partition {k}: {what}");
        let cursor = self.read_cursor().await?;
        let stream = self
            .js
            .get_stream(MSG_STREAM)
            .await
            .map_err(|e| BusError::new(doing("opening the stream"), e))?;
        if cursor > 0 {
            self.rebuild(&stream, cursor).await?;
        }
        let name = consumer_name(k);
        // Gone or not: it is made again at the cursor.
        let _ = stream.delete_consumer(&name).await;
        let consumer = stream
            .create_consumer(consumer::pull::Config {
                durable_name: Some(name.clone()),
                description: Some(format!("edgetap judge of partition {k}")),
                filter_subject: partition_filter(k),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: Duration::from_secs(60),
                max_ack_pending: 10_000,
                deliver_policy: match cursor {
                    0 => consumer::DeliverPolicy::All,
                    c => consumer::DeliverPolicy::ByStartSequence {
                        start_sequence: c + 1,
                    },
                },
                ..Default::default()
            })
            .await
            .map_err(|e| BusError::new(doing(&format!("creating the consumer {name}")), e))?;
        let mut messages = consumer
            .stream()
            .max_messages_per_batch(self.settings.batch)
            .messages()
            .await
            .map_err(|e| BusError::new(doing("pulling"), e))?;
        let mut tick = tokio::time::interval(self.settings.report_every);
        loop {
            let first = tokio::select! {
                _ = stop.changed() => break,
                _ = tick.tick() => {
                    self.publish_counts().await?;
                    continue;
                }
                m = messages.next() => m,
            };
            let Some(first) = first else { break };
            let mut batch = vec![first];
            while batch.len() < self.settings.batch {
                match messages.next().now_or_never() {
                    Some(Some(m)) => batch.push(m),
                    _ => break,
                }
            }
            let batch: Vec<jetstream::Message> = batch
                .into_iter()
                .filter_map(|m| match m {
                    Ok(m) => Some(m),
                    Err(e) => {
                        tracing::warn!("partition {k}: pulling: {e}");
                        None
                    }
                })
                .collect();
            self.commit(batch).await?;
        }
        if self.settings.finish && !stop_failed(&stop) {
            self.publish_end().await?;
        }
        self.publish_counts().await?;
        Ok(self.judge.state())
    }

    /// The end of input's findings.
    async fn publish_end(&mut self) -> Result<(), BusError> {
        let k = self.k;
        let found = self.judge.finish();
        let cursor = self.judge.applied();
        let mut acks = vec![];
        for (n, f) in found.iter().enumerate() {
            let id = format!("p{k}.end.{cursor}.{n}");
            acks.push(
                self.publish_json(finding_subject(f.finding.edge_id.as_deref()), Some(id), f)
                    .await?,
            );
        }
        for a in acks {
            a.await
                .map_err(|e| BusError::new(format!("partition {k}: publishing a finding"), e))?;
        }
        self.progress
            .findings
            .fetch_add(found.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Replays the partition up to `cursor` into the analyzer, findings dropped.
    async fn rebuild(
        &mut self,
        stream: &jetstream::stream::Stream,
        cursor: u64,
    ) -> Result<(), BusError> {
        let k = self.k;
        let doing = |what: &str| format!("partition {k}: rebuilding its state: {what}");
        let replay = stream
            .create_consumer(consumer::pull::Config {
                filter_subject: partition_filter(k),
                ack_policy: consumer::AckPolicy::None,
                deliver_policy: consumer::DeliverPolicy::All,
                inactive_threshold: Duration::from_secs(60),
                ..Default::default()
            })
            .await
            .map_err(|e| BusError::new(doing("creating a consumer"), e))?;
        'read: loop {
            let mut batch = replay
                .fetch()
                .max_messages(1000)
                .messages()
                .await
                .map_err(|e| BusError::new(doing("fetching"), e))?;
            let mut n = 0;
            while let Some(m) = batch.next().await {
                let m = m.map_err(|e| BusError::new(doing("fetching"), e))?;
                n += 1;
                let seq = m
                    .info()
                    .map_err(|e| BusError::new(doing("a record"), e))?
                    .stream_sequence;
                if seq > cursor {
                    break 'read;
                }
                let r = Record::read(m.headers.as_ref(), m.payload.clone(), seq);
                self.judge.apply(seq, r, None);
                self.progress.rebuilt.fetch_add(1, Ordering::Relaxed);
                if seq == cursor {
                    break 'read;
                }
            }
            if n == 0 {
                break;
            }
        }
        if let Ok(info) = replay.get_info().await {
            let _ = stream.delete_consumer(&info.name).await;
        }
        // Records the stream no longer holds are outside what can be rebuilt.
        self.judge.assume_applied(cursor);
        Ok(())
    }

    /// Judges `batch`, publishes its findings, moves the cursor, acks.
    async fn commit(&mut self, batch: Vec<jetstream::Message>) -> Result<(), BusError> {
        let k = self.k;
        let mut found = vec![];
        let mut judged = 0;
        for m in &batch {
            let seq = match m.info() {
                Ok(i) => i.stream_sequence,
                Err(e) => {
                    tracing::warn!("partition {k}: a delivery without its stream sequence: {e}");
                    continue;
                }
            };
            let r = Record::read(m.headers.as_ref(), m.payload.clone(), seq);
            match self.judge.apply(seq, r, Some(&mut found)) {
                Applied::Skipped => {
                    self.progress.skipped.fetch_add(1, Ordering::Relaxed);
                }
                Applied::Judged | Applied::Bad => judged += 1,
            }
        }
        let mut acks = Vec::with_capacity(found.len());
        let mut n_of_seq = (0u64, 0u32);
        for f in &found {
            n_of_seq = match n_of_seq.0 == f.stream_seq {
                true => (f.stream_seq, n_of_seq.1 + 1),
                false => (f.stream_seq, 0),
            };
            let id = format!("p{k}.{}.{}", f.stream_seq, n_of_seq.1);
            acks.push(
                self.publish_json(finding_subject(f.finding.edge_id.as_deref()), Some(id), f)
                    .await?,
            );
        }
        for a in acks {
            a.await
                .map_err(|e| BusError::new(format!("partition {k}: publishing a finding"), e))?;
        }
        if judged > 0 {
            let ack = self
                .js
                .publish(
                    self.cursor_subject(),
                    self.judge.applied().to_string().into(),
                )
                .await
                .map_err(|e| BusError::new(format!("partition {k}: writing its cursor"), e))?;
            ack.await
                .map_err(|e| BusError::new(format!("partition {k}: writing its cursor"), e))?;
        }
        for m in &batch {
            if let Err(e) = m.ack().await {
                tracing::warn!("partition {k}: ack: {e}");
            }
        }
        self.progress.judged.fetch_add(judged, Ordering::Relaxed);
        self.progress
            .findings
            .fetch_add(found.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    async fn publish_json<T: serde::Serialize>(
        &self,
        subject: String,
        id: Option<String>,
        value: &T,
    ) -> Result<jetstream::context::PublishAckFuture, BusError> {
        let body = serde_json::to_vec(value).map_err(|e| BusError::new("encoding JSON", e))?;
        let mut p = jetstream::message::PublishMessage::build().payload(body.into());
        if let Some(id) = id {
            p = p.message_id(id);
        }
        self.js
            .send_publish(subject.clone(), p)
            .await
            .map_err(|e| BusError::new(format!("publishing to {subject}"), e))
    }

    /// Publishes the counts that changed and the partition's coverage.
    async fn publish_counts(&mut self) -> Result<(), BusError> {
        let counts = self.judge.changed_counts();
        let mut acks = vec![];
        for c in &counts {
            acks.push(self.publish_json(count_subject(&c.edge), None, c).await?);
        }
        // The coverage when something was applied since the last time (or never
        // published): an idle judge publishes nothing.
        if counts.is_empty() && self.reported == Some(self.judge.applied()) {
            return Ok(());
        }
        self.reported = Some(self.judge.applied());
        let state = self.judge.state();
        let subject = format!("{COVERAGE_PREFIX}.p{}", self.k);
        acks.push(self.publish_json(subject, None, &state).await?);
        for a in acks {
            a.await.map_err(|e| {
                BusError::new(format!("partition {}: publishing counts", self.k), e)
            })?;
        }
        Ok(())
    }
}
