//! One partition's judging, with no I/O: records in stream order go to one
//! [`Analyzer`] (the one pipeline, the decoded PUBLISH in through
//! `push(At, Input::Packet …)`), findings come out tagged with the record they
//! cite. The driver ([`super::run`]) reads, publishes and persists around it.
//!
//! Guarantee: a record whose stream sequence is not above [`PartitionJudge::applied`]
//! changes nothing ([`Applied::Skipped`]): a redelivery is never judged twice. The
//! same records in the same order give the same findings, counts and coverage,
//! whether judged live or replayed to rebuild the state after a restart.

use std::collections::HashMap;
use std::sync::Arc;

use crate::bus::record::{Record, RecordError};
use crate::bus::wire::{BusFinding, EdgeCount, PartitionState};
use crate::finding::{ConnId, Finding, Side};
use crate::pipeline::{Analyzer, At, EdgeTraffic, Input, Settings, Sink};
use crate::rules::RuleSet;

/// The judge's one stream per partition, as the pipeline numbers it.
const BUS_CONN: ConnId = 1;

/// Said once, in clause 5.2's row: what records from subscribers never show.
pub const NOT_SEEN: &str = "not exercised on the bus: watchers are subscribers and see no \
     CONNECT, no client id, not the QoS a publisher used and not what the broker dropped \
     (judge the MQTT session with `proxy` or a capture of the devices' connections)";

/// What became of one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Judged.
    Judged,
    /// At or below the last applied sequence: a redelivery, left alone.
    Skipped,
    /// Its headers could not be read: counted, skipped.
    Bad,
}

/// The state of one partition's edges.
pub struct PartitionJudge {
    partition: u32,
    analyzer: Analyzer,
    state: PartitionState,
    /// Counts as last published, to publish only what changed.
    published: HashMap<String, EdgeTraffic>,
    /// The watchers each edge's records came through (set-up finding).
    watcher_of: HashMap<String, EdgeWatchers>,
}

/// The watchers one edge's records came through: the one now, and those it took
/// over from (at most [`WATCHERS_KEPT`]).
#[derive(Debug, Default)]
struct EdgeWatchers {
    now: String,
    before: Vec<String>,
    /// The set-up finding was made for this edge (once is enough).
    said: bool,
}

/// Earlier watchers remembered per edge: a watcher restarted this often under new
/// client ids is then taken for a new one.
const WATCHERS_KEPT: usize = 8;

/// The pipeline's findings, gathered for one record (or dropped while rebuilding).
struct Gather<'a> {
    out: Option<&'a mut Vec<Finding>>,
}

impl Sink for Gather<'_> {
    fn finding(&mut self, f: &Finding) {
        if let Some(out) = &mut self.out {
            // The connection, side and stream offset are the judge's own: not facts
            // about the edge.
            let mut f = f.clone();
            f.conn = None;
            f.side = None;
            f.offset = None;
            out.push(f);
        }
    }
}

impl PartitionJudge {
    pub fn new(rules: Arc<RuleSet>, partition: u32) -> PartitionJudge {
        let mut analyzer = Analyzer::new(rules, Settings::default());
        // One subscriber's stream, as `watch` and the sims' tap feed it: opened, and
        // a CONNECT of the judge's own (the edges' sessions are not seen).
        let at = At::new(BUS_CONN, 0, 0);
        let mut sink = Gather { out: None };
        let open = Input::Open {
            client: None,
            server: None,
            midstream: false,
        };
        analyzer.push(at, open, &mut sink);
        let connect = crate::mqtt::encode::connect(&format!("edgetap-judge-p{partition}"));
        let data = Input::Data {
            side: Side::Client,
            bytes: &connect,
        };
        analyzer.push(at, data, &mut sink);
        PartitionJudge {
            partition,
            analyzer,
            state: PartitionState {
                partition,
                ..PartitionState::default()
            },
            published: HashMap::new(),
            watcher_of: HashMap::new(),
        }
    }

    /// The last stream sequence applied.
    pub fn applied(&self) -> u64 {
        self.state.applied
    }

    /// Records at or below `seq` are taken as applied (a restart whose stream no
    /// longer holds the oldest records: they are outside what can be rebuilt).
    pub fn assume_applied(&mut self, seq: u64) {
        self.state.applied = self.state.applied.max(seq);
    }

    /// Judges the record of stream sequence `seq`; its findings go to `out` (none
    /// while rebuilding).
    pub fn apply(
        &mut self,
        seq: u64,
        record: Result<Record, RecordError>,
        out: Option<&mut Vec<BusFinding>>,
    ) -> Applied {
        if seq <= self.state.applied {
            return Applied::Skipped;
        }
        self.state.applied = seq;
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("{e}; skipped");
                self.state.bad_records += 1;
                return Applied::Bad;
            }
        };
        self.state.records += 1;
        let mut found = vec![];
        let setup = self.note_watcher(&record, seq);
        let mut sink = Gather {
            out: out.is_some().then_some(&mut found),
        };
        let publish = crate::mqtt::Packet::Publish(crate::mqtt::Publish {
            topic: record.topic,
            payload: record.payload,
            // The watcher's QoS, not the publisher's: handed over as QoS 0, as
            // `watch` judges it.
            qos: 0,
            pkid: 0,
            retain: record.retain,
            dup: false,
            topic_alias: None,
        });
        let input = Input::Packet {
            side: Side::Server,
            packet: publish,
        };
        self.analyzer
            .push(At::new(BUS_CONN, record.time_us, seq), input, &mut sink);
        if let Some(out) = out {
            let stamp = &record.stamp;
            out.extend(setup.into_iter().chain(found).map(|finding| BusFinding {
                finding,
                partition: self.partition,
                stream_seq: seq,
                watcher: Some(stamp.watcher.clone()),
                watcher_seq: Some(stamp.seq),
            }));
        }
        Applied::Judged
    }

    /// Judges the end of input (requests never answered, replies nothing explained,
    /// jobs never finished) as if the stream ended at the cursor.
    pub fn finish(&mut self) -> Vec<BusFinding> {
        let mut found = vec![];
        let mut sink = Gather {
            out: Some(&mut found),
        };
        self.analyzer.finish(&mut sink);
        let seq = self.state.applied;
        found
            .into_iter()
            .map(|finding| BusFinding {
                finding,
                partition: self.partition,
                stream_seq: seq,
                watcher: None,
                watcher_seq: None,
            })
            .collect()
    }

    /// An edge whose records come through two watchers at once: the broker's shared
    /// subscription does not keep an edge on one watcher, so the order of its
    /// messages across watchers is not the order they were published in. Said once
    /// per edge, as a finding about the set-up (info: edgetap cannot tell whether
    /// the order changed). A watcher that takes over from another (a restart under a
    /// new client id, the default; a fail-over) keeps the order and is no finding:
    /// two watchers at once show when the edge's records come back to one it had
    /// left.
    fn note_watcher(&mut self, r: &Record, seq: u64) -> Option<Finding> {
        let (Some(edge), _) = r.route() else {
            return None;
        };
        let w = &r.stamp.watcher;
        let seen = self
            .watcher_of
            .entry(edge.clone())
            .or_insert_with(|| EdgeWatchers {
                now: w.clone(),
                ..EdgeWatchers::default()
            });
        if seen.said || seen.now == *w {
            return None;
        }
        if !seen.before.contains(w) {
            let left = std::mem::replace(&mut seen.now, w.clone());
            if seen.before.len() < WATCHERS_KEPT {
                seen.before.push(left);
            }
            return None;
        }
        let between = std::mem::replace(&mut seen.now, w.clone());
        seen.said = true;
        let message = format!(
            "set-up: the messages of edge {edge} arrive through several watchers at once \
             ({w}, then {between}, then {w} again): the broker's shared subscription does \
             not keep one edge on one watcher (mosquitto rotates per message; EMQX: \
             shared_subscription_strategy = hash_clientid or sticky), so their order \
             across watchers may not be the order they were published in"
        );
        Some(Finding {
            topic: Some(r.topic.clone()),
            packet: Some(seq),
            time: Some(r.time_us),
            ..Finding::about(
                "setup.several_watchers".into(),
                "setup".into(),
                crate::Severity::Info,
                &edge,
                message,
            )
        })
    }

    /// The partition's counters and coverage so far.
    pub fn state(&self) -> PartitionState {
        let mut s = self.state.clone();
        let stats = self.analyzer.stats();
        s.publishes = stats.publishes;
        s.messages = stats.messages;
        s.unattributed = stats.unattributed;
        s.malformed = stats.malformed;
        let mut coverage = self.analyzer.exercised();
        // The judge's own CONNECT exercised the MQTT session clause: nothing of the
        // edges' sessions was seen (`fleet` says so once, [`NOT_SEEN`]).
        coverage.messages.remove("5.2");
        s.clauses = coverage.messages;
        s.unseen = coverage.unseen;
        s
    }

    /// The message counts of the edges whose count changed since the last call.
    pub fn changed_counts(&mut self) -> Vec<EdgeCount> {
        let mut out = vec![];
        for (edge, t) in &self.analyzer.stats().edges {
            if self.published.get(edge) != Some(t) {
                self.published.insert(edge.clone(), *t);
                out.push(EdgeCount {
                    edge: edge.clone(),
                    partition: self.partition,
                    messages: t.messages,
                    first_us: t.first_us,
                    last_us: t.last_us,
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::record::Stamp;

    fn record(edge: &str, watcher: &str, seq: u64) -> Record {
        Record {
            topic: format!("/v1/{edge}/device/data"),
            payload: bytes::Bytes::from_static(b"{\"mid\":1}"),
            time_us: 1_800_000_000_000_000 + seq as i64,
            retain: false,
            stamp: Stamp {
                watcher: watcher.into(),
                run_us: 1,
                seq,
            },
        }
    }

    fn judge() -> PartitionJudge {
        PartitionJudge::new(Arc::new(RuleSet::load(None, false).unwrap()), 0)
    }

    fn setup_findings(out: &[BusFinding]) -> Vec<(Option<String>, u64)> {
        out.iter()
            .filter(|f| f.finding.rule == "setup.several_watchers")
            .map(|f| (f.finding.edge_id.clone(), f.stream_seq))
            .collect()
    }

    #[test]
    fn a_record_at_or_below_the_cursor_is_left_alone() {
        let mut j = judge();
        let mut out = vec![];
        assert_eq!(
            j.apply(5, Ok(record("E1", "w1", 1)), Some(&mut out)),
            Applied::Judged
        );
        let n = out.len();
        assert_eq!(
            j.apply(5, Ok(record("E1", "w1", 1)), Some(&mut out)),
            Applied::Skipped
        );
        assert_eq!(
            j.apply(3, Ok(record("E1", "w1", 1)), Some(&mut out)),
            Applied::Skipped
        );
        assert_eq!(out.len(), n, "nothing found twice");
        assert_eq!(j.state().records, 1);
        assert_eq!(j.changed_counts().len(), 1);
        assert!(
            j.changed_counts().is_empty(),
            "published once until it changes"
        );
    }

    #[test]
    fn an_edge_through_a_second_watcher_is_a_set_up_finding_once() {
        let mut j = judge();
        let mut out = vec![];
        j.apply(1, Ok(record("E1", "w1", 1)), Some(&mut out));
        j.apply(2, Ok(record("E2", "w2", 1)), Some(&mut out));
        j.apply(3, Ok(record("E1", "w1", 2)), Some(&mut out));
        assert!(setup_findings(&out).is_empty(), "one watcher per edge");
        j.apply(4, Ok(record("E1", "w2", 2)), Some(&mut out));
        assert!(setup_findings(&out).is_empty(), "w2 may have taken over");
        j.apply(5, Ok(record("E1", "w1", 3)), Some(&mut out));
        j.apply(6, Ok(record("E1", "w2", 3)), Some(&mut out));
        j.apply(7, Ok(record("E1", "w1", 4)), Some(&mut out));
        assert_eq!(setup_findings(&out), vec![(Some("E1".into()), 5)]);
        let f = out
            .iter()
            .find(|f| f.finding.rule == "setup.several_watchers")
            .unwrap();
        assert_eq!(f.watcher.as_deref(), Some("w1"));
        assert!(
            f.finding.message.contains("(w1, then w2, then w1 again)"),
            "{}",
            f.finding.message
        );
        assert!(
            f.finding.message.contains("hash_clientid"),
            "{}",
            f.finding.message
        );
    }

    #[test]
    fn a_watcher_taking_over_from_another_is_no_set_up_finding() {
        // `watch` restarted under its default client id (its process id), twice,
        // then a third watcher for good: each takes over, none comes back.
        let mut j = judge();
        let mut out = vec![];
        let watchers = [
            "edgetap-watch-100",
            "edgetap-watch-200",
            "edgetap-watch-300",
        ];
        let mut seq = 0;
        for w in watchers {
            for edge in ["E1", "E2", "E1", "E2"] {
                seq += 1;
                let applied = j.apply(seq, Ok(record(edge, w, seq)), Some(&mut out));
                assert_eq!(applied, Applied::Judged);
            }
        }
        assert!(
            setup_findings(&out).is_empty(),
            "{:?}",
            setup_findings(&out)
        );
        // The first one back while the third still delivers: two at once.
        j.apply(
            99,
            Ok(record("E2", "edgetap-watch-100", 99)),
            Some(&mut out),
        );
        assert_eq!(setup_findings(&out), vec![(Some("E2".into()), 99)]);
    }
}
