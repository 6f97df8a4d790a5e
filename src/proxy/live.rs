//! The live state of a running proxy, for `edgetap proxy --http`: what the analysis
//! thread has judged so far (findings, counters, the message sequence per edge), and
//! the views built from it on request (the HTML record, the JSON API, Prometheus
//! metrics). No I/O here: the HTTP server is [`crate::proxy::http`].
//!
//! The proxy's recorder feeds it through [`LiveView::recorded`] (after each batch),
//! its judge through [`LiveView::message`], [`LiveView::finding`] and
//! [`LiveView::judged`]; readers take a consistent snapshot
//! under one short lock. Memory is bounded: the latest [`LIVE_FINDINGS`] findings are
//! kept, every finding is counted in its group (so the record's counts and clause
//! verdicts are of them all), and the timeline has its own limits. It holds no
//! credentials: CONNECT user names and passwords never reach it.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::finding::{Finding, Severity};
use crate::pipeline::{Framer, Sink, Stats};
use crate::protocol::Message;
use crate::report::filter::Filter;
use crate::report::group::Grouper;
use crate::report::timeline::Timeline;
use crate::report::{NotListed, Report};
use crate::rules::engine::Coverage;
use crate::rules::RuleSet;
use crate::store::frames::FrameIndex;
use crate::store::Event;

/// Findings the live view keeps (the latest).
pub const LIVE_FINDINGS: usize = 50_000;
/// How often the analysis thread's counters are copied for readers at most.
const SNAPSHOT_EVERY: Duration = Duration::from_millis(200);

/// The capture being recorded, as the API lists it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LiveCapture {
    /// The store's capture id (0 when not recording).
    pub id: u64,
    pub name: String,
    pub listen: String,
    pub upstream: String,
    /// µs since the Unix epoch.
    pub started_us: i64,
    pub running: bool,
    pub connections: u64,
    pub bytes: u64,
    pub mqtt_packets: u64,
    pub messages: u64,
    pub findings: u64,
}

/// Counters for `/metrics` and the API.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Counters {
    pub messages: u64,
    pub errors: u64,
    pub warnings: u64,
    pub infos: u64,
    /// Bytes the proxy forwarded and the analysis read (both directions).
    pub bytes: u64,
    /// From a chunk's arrival to its analysis, for the latest batch and the most
    /// seen (µs).
    pub judge_lag_us: i64,
    pub judge_lag_max_us: i64,
    /// Messages the live judge skipped (it fell behind; the final report judges the
    /// capture again from the store).
    pub judge_skipped: u64,
}

struct State {
    capture: LiveCapture,
    counters: Counters,
    findings: VecDeque<Finding>,
    /// Every finding so far, grouped: what the record counts and judges by.
    groups: Grouper,
    timeline: Timeline,
    stats: Stats,
    /// Clauses as the recorder's analyzer (packets) and the judge's engine
    /// (messages) exercised them; the report merges both.
    exercised_recorded: Coverage,
    /// The judge finished: `exercised_judged` holds every clause of the run.
    judging_done: bool,
    exercised_judged: Coverage,
    recorded_at: Option<Instant>,
    judged_at: Option<Instant>,
    /// The frames of the capture's pcapng export, as recorded so far: what every
    /// view cites (the judge counts stored events), as `captures export`,
    /// `analyze --capture` and the final report do.
    frames: FrameIndex,
}

/// Shared between the proxy's analysis thread and the HTTP server.
pub struct LiveView {
    rules: Arc<RuleSet>,
    /// The store the proxy records into: its earlier captures are listed too
    /// (read through the store's read-only path, which works while recording).
    store_dir: Option<std::path::PathBuf>,
    state: Mutex<State>,
}

impl std::fmt::Debug for LiveView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LiveView")
    }
}

impl LiveView {
    pub fn new(rules: Arc<RuleSet>) -> LiveView {
        LiveView {
            rules,
            store_dir: None,
            state: Mutex::new(State {
                capture: LiveCapture::default(),
                counters: Counters::default(),
                findings: VecDeque::new(),
                groups: Grouper::default(),
                timeline: Timeline::new(),
                stats: Stats::default(),
                exercised_recorded: Coverage::default(),
                judging_done: false,
                exercised_judged: Coverage::default(),
                recorded_at: None,
                judged_at: None,
                frames: FrameIndex::default(),
            }),
        }
    }

    /// Lists the earlier captures of the store in `dir` too ([`LiveView::captures`]).
    pub fn with_store(mut self, dir: &std::path::Path) -> LiveView {
        self.store_dir = Some(dir.to_path_buf());
        self
    }

    /// `/api/captures`: the capture being recorded (with its live counters), then
    /// the store's other captures as `captures list --format json` gives them
    /// (`"running": false`). A store that cannot be read lists the live one only,
    /// with `"store_error"`.
    pub fn captures(&self) -> serde_json::Value {
        let live = self.capture();
        let mut out = vec![serde_json::to_value(&live).unwrap_or_default()];
        if let Some(dir) = &self.store_dir {
            match crate::store::Store::open_existing(dir).and_then(|s| s.captures()) {
                Ok(list) => out.extend(list.into_iter().filter(|m| m.id != live.id).map(|m| {
                    let mut v = serde_json::to_value(&m).unwrap_or_default();
                    v["running"] = serde_json::Value::Bool(false);
                    v
                })),
                Err(e) => out[0]["store_error"] = serde_json::Value::String(e.to_string()),
            }
        }
        serde_json::Value::Array(out)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic on the analysis thread leaves the counters as they were: still
        // worth showing.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The analysis thread starts recording `meta`.
    pub fn started(&self, meta: &crate::store::CaptureMeta) {
        let mut s = self.lock();
        s.capture = LiveCapture {
            id: meta.id,
            name: meta.name.clone(),
            listen: meta.listen.clone(),
            upstream: meta.upstream.clone(),
            started_us: meta.started_us,
            running: true,
            ..LiveCapture::default()
        };
    }

    /// The recorder stored `ev`: the export's frames follow it.
    pub fn event(&self, ev: &Event) {
        self.lock().frames.add(ev.seq, ev.conn, &ev.kind);
    }

    pub fn message(&self, m: &Message) {
        let mut s = self.lock();
        s.counters.messages += 1;
        s.timeline.message(m);
    }

    pub fn finding(&self, f: &Finding) {
        let mut s = self.lock();
        match f.severity {
            Severity::Error => s.counters.errors += 1,
            Severity::Warning => s.counters.warnings += 1,
            Severity::Info => s.counters.infos += 1,
        }
        s.timeline.finding(f);
        s.groups.add(f);
        if s.findings.len() >= LIVE_FINDINGS {
            s.findings.pop_front();
        }
        s.findings.push_back(f.clone());
    }

    /// The recorder after a batch: the bytes read so far and the analyzer's
    /// counters (copied at most every [`SNAPSHOT_EVERY`], unless `now`: when
    /// traffic pauses, so readers never keep a stale copy).
    pub fn recorded(&self, a: &Framer, bytes: u64, now: bool) {
        let mut s = self.lock();
        s.counters.bytes = bytes;
        if !now && s.recorded_at.is_some_and(|t| t.elapsed() < SNAPSHOT_EVERY) {
            return;
        }
        s.recorded_at = Some(Instant::now());
        s.stats = a.stats().clone();
        if !s.judging_done {
            s.exercised_recorded = a.coverage().clone();
        }
    }

    /// The judge (a thread of its own, behind the recorder) after a batch: the
    /// clauses its engine exercised and how far behind the recording it is.
    pub fn judged(&self, exercised: &Coverage, lag_us: i64, skipped: u64) {
        let mut s = self.lock();
        s.counters.judge_skipped = skipped;
        s.counters.judge_lag_us = lag_us.max(0);
        s.counters.judge_lag_max_us = s.counters.judge_lag_max_us.max(lag_us);
        if lag_us > 0 && s.judged_at.is_some_and(|t| t.elapsed() < SNAPSHOT_EVERY) {
            return;
        }
        s.judged_at = Some(Instant::now());
        s.exercised_judged = exercised.clone();
    }

    /// The judge finished: `exercised` is every clause of the run, the recorder's
    /// (framing) included.
    pub fn judged_all(&self, exercised: &Coverage, skipped: u64) {
        let mut s = self.lock();
        s.counters.judge_skipped = skipped;
        s.counters.judge_lag_us = 0;
        s.judged_at = Some(Instant::now());
        s.exercised_judged = exercised.clone();
        s.exercised_recorded = Coverage::default();
        s.judging_done = true;
    }

    /// The proxy stopped recording.
    pub fn stopped(&self) {
        self.lock().capture.running = false;
    }

    pub fn counters(&self) -> Counters {
        self.lock().counters
    }

    /// The capture being recorded, with its counters.
    pub fn capture(&self) -> LiveCapture {
        let s = self.lock();
        let mut c = s.capture.clone();
        c.connections = s.stats.connections;
        c.bytes = s.counters.bytes;
        c.mqtt_packets = s.stats.mqtt_packets;
        c.messages = s.counters.messages;
        c.findings = s.counters.errors + s.counters.warnings + s.counters.infos;
        c
    }

    /// The record so far, as `analyze` would give it, with `filter` applied.
    pub fn report(&self, filter: &Filter) -> Report {
        let s = self.lock();
        let findings: Vec<Finding> = s.findings.iter().cloned().collect();
        let mut input = format!(
            "proxy {} → {}{}",
            s.capture.listen,
            s.capture.upstream,
            match s.capture.id {
                0 => String::new(),
                id => format!(", capture {id}"),
            }
        );
        let seen = s.counters.errors + s.counters.warnings + s.counters.infos;
        let not_listed = (seen > findings.len() as u64).then(|| {
            let _ = write!(
                input,
                " (the latest {} of {seen} findings; `analyze --capture` has them all)",
                findings.len()
            );
            NotListed {
                findings: seen - findings.len() as u64,
                hint: match s.capture.id {
                    0 => "a proxy run with --store keeps every one".to_string(),
                    id => format!("`edgetap analyze --capture {id} --each` lists every one"),
                },
            }
        });
        // Copies under the lock; the report is built after it, off the analysis
        // thread's way.
        let (timeline, stats) = (s.timeline.clone(), s.stats.clone());
        // Numbered as the export is: only a recording proxy has frames.
        let frames = (s.capture.id != 0).then(|| s.frames.clone());
        let groups = s.groups.groups().to_vec();
        let mut exercised = s.exercised_recorded.clone();
        exercised.merge(&s.exercised_judged);
        drop(s);
        let mut r = Report::build_grouped(
            vec![input],
            &stats,
            &exercised,
            &self.rules,
            findings,
            groups,
            not_listed,
        )
        .with_timeline(Some(timeline));
        if let Some(frames) = frames {
            r.renumber(|f| frames.frame_of(f));
            r.renumber_groups(|p| frames.frame_of_event(p));
            r.renumber_chart(|f| frames.frame_of(f), |p| frames.frame_of_event(p));
        }
        r.apply(filter);
        r
    }

    /// The latest `limit` findings that `filter` shows, oldest first.
    pub fn findings(&self, filter: &Filter, limit: usize) -> Vec<Finding> {
        let s = self.lock();
        let mut out: Vec<Finding> = s
            .findings
            .iter()
            .rev()
            .filter(|f| filter.keeps(f))
            .take(limit)
            .cloned()
            .collect();
        out.reverse();
        if s.capture.id != 0 {
            for f in &mut out {
                f.packet = s.frames.frame_of(f).or(f.packet);
            }
        }
        out
    }

    /// Prometheus text exposition format (version 0.0.4).
    pub fn metrics(&self) -> String {
        let c = self.capture();
        let k = self.counters();
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, values: &[(&str, f64)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, v) in values {
                let _ = writeln!(out, "{name}{labels} {v}");
            }
        };
        metric(
            "edgetap_messages_total",
            "counter",
            "Protocol messages judged.",
            &[("", k.messages as f64)],
        );
        metric(
            "edgetap_mqtt_packets_total",
            "counter",
            "MQTT control packets decoded.",
            &[("", c.mqtt_packets as f64)],
        );
        metric(
            "edgetap_findings_total",
            "counter",
            "Findings by severity.",
            &[
                ("{severity=\"error\"}", k.errors as f64),
                ("{severity=\"warning\"}", k.warnings as f64),
                ("{severity=\"info\"}", k.infos as f64),
            ],
        );
        metric(
            "edgetap_bytes_forwarded_total",
            "counter",
            "Bytes forwarded by the proxy and read by the analysis, both directions.",
            &[("", k.bytes as f64)],
        );
        metric(
            "edgetap_connections_total",
            "counter",
            "Connections seen by the analysis.",
            &[("", c.connections as f64)],
        );
        metric(
            "edgetap_judge_lag_seconds",
            "gauge",
            "How far the judge is behind the recording, latest batch.",
            &[("", k.judge_lag_us as f64 / 1e6)],
        );
        metric(
            "edgetap_judge_lag_max_seconds",
            "gauge",
            "How far the judge is behind the recording, the most seen.",
            &[("", k.judge_lag_max_us as f64 / 1e6)],
        );
        metric(
            "edgetap_judge_skipped_total",
            "counter",
            "Messages not judged live: the judge fell behind (--judge-cpu); they are \
             recorded, and the final report judges the capture again from the store.",
            &[("", k.judge_skipped as f64)],
        );
        out
    }
}

/// The analysis thread's sink for the live view (messages and findings).
impl Sink for &LiveView {
    fn message(&mut self, m: &Message) {
        LiveView::message(self, m)
    }
    fn finding(&mut self, f: &Finding) {
        LiveView::finding(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{CaptureMeta, Store};

    fn finding(rule: &str, clause: &str, severity: Severity, i: u64) -> Finding {
        Finding {
            rule: rule.into(),
            clause: clause.into(),
            table: None,
            severity,
            edge_id: Some("E1".into()),
            msg_type: None,
            topic: None,
            mid: Some(i),
            packet: Some(i),
            time: Some(i as i64),
            message: format!("{rule}: mid {i}"),
            conn: None,
            side: None,
            offset: None,
            basis: None,
            from: None,
        }
    }

    /// Errors early in a long capture, then only warnings: the record keeps the
    /// latest findings, and still counts and judges by every one (6.1.3 fails).
    #[test]
    fn the_record_judges_by_every_finding_not_the_latest_kept() {
        let view = LiveView::new(Arc::new(RuleSet::builtin()));
        for i in 0..10 {
            view.finding(&finding("t10.REP_SYS_STATUS", "6.1.3", Severity::Error, i));
        }
        for i in 10..LIVE_FINDINGS as u64 + 10 {
            view.finding(&finding("naming.key", "5.3", Severity::Warning, i));
        }
        let r = view.report(&Filter::default());
        assert_eq!(r.findings.len(), LIVE_FINDINGS);
        assert!(r.findings.iter().all(|f| f.severity == Severity::Warning));
        assert_eq!(r.summary.errors, 10);
        assert_eq!(r.summary.warnings, LIVE_FINDINGS as u64);
        let row = r.clauses.iter().find(|c| c.clause == "6.1.3").unwrap();
        assert_eq!((row.status.as_str(), row.errors), ("fail", 10));
        assert_eq!(r.summary.not_listed.as_ref().map(|n| n.findings), Some(10));
        let only_errors = Filter {
            min_severity: Some(Severity::Error),
            ..Filter::default()
        };
        let r = view.report(&only_errors);
        assert_eq!((r.summary.errors, r.summary.warnings), (10, 0));
        assert_eq!(r.groups.len(), 1);
    }

    #[test]
    fn api_captures_lists_the_live_capture_then_the_stores_earlier_ones() {
        let dir = std::env::temp_dir().join(format!("edgetap-live-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Store::open(&dir).unwrap();
        let mut earlier = CaptureMeta {
            name: "yesterday".into(),
            ..Default::default()
        };
        store.begin_capture(&mut earlier).unwrap();
        let mut now = CaptureMeta {
            name: "today".into(),
            ..Default::default()
        };
        store.begin_capture(&mut now).unwrap();
        let view = LiveView::new(Arc::new(RuleSet::builtin())).with_store(&dir);
        view.started(&now);
        let v = view.captures();
        let names: Vec<(&str, bool)> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (c["name"].as_str().unwrap(), c["running"].as_bool().unwrap()))
            .collect();
        assert_eq!(names, [("today", true), ("yesterday", false)], "{v}");
        // Without a store: the live capture only.
        let alone = LiveView::new(Arc::new(RuleSet::builtin()));
        alone.started(&now);
        assert_eq!(alone.captures().as_array().unwrap().len(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
