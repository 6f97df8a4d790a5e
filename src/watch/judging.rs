//! The judging outlet of `watch`: every delivery goes to the shared
//! [`Analyzer`] as the PUBLISH the client decoded (one broker → watcher stream,
//! after a CONNECT of the watcher's own, as the sims' tap feeds it), on a thread of
//! its own behind the subscriber's bounded queue. What the pipeline emits goes to
//! the proxy's live console (first finding of each edge, rule and field path, then
//! "+N more"), to the findings stream (`--findings`) and to the final report, which
//! keeps the first [`LISTED_FINDINGS`] findings and counts every one in its group:
//! memory grows with the edges and the groups, not with the run's length.

use std::sync::Arc;

use super::{Delivery, Event, Outlet};
use crate::eve::FindingLog;
use crate::finding::{ConnId, Finding, Severity, Side};
use crate::pipeline::{Analyzer, At, Input, Settings, Sink};
use crate::proxy::judge::{Groups, Live, Snapshot};
use crate::proxy::live::LiveView;
use crate::report::{Collector, Report, LISTED_FINDINGS};
use crate::rules::engine::Coverage;
use crate::rules::RuleSet;

/// The watcher's one connection, as the pipeline numbers it.
const WATCH_CONN: ConnId = 1;

/// Said once, in clause 5.2's row: what a subscriber never sees.
pub const NOT_SEEN: &str = "not exercised by `watch`: a subscriber sees no CONNECT, \
     no client id, not the QoS a publisher used and not what the broker dropped \
     (judge the MQTT session with `proxy` or a capture of the devices' connections)";

/// Where a watch's findings go besides its report.
pub struct Outputs {
    /// The live console (the proxy's [`crate::proxy::console::Console`]).
    pub live: Box<dyn Live>,
    /// `--findings FILE|-`.
    pub log: Option<FindingLog>,
    /// Keep the message sequence per edge for the HTML record's charts.
    pub chart: bool,
    /// `--store DIR`: record what was received.
    pub store: Option<super::record::Recorder>,
    /// `--http`: the live view (HTML record, JSON API, /metrics) kept up to date.
    pub view: Option<Arc<LiveView>>,
}

/// What a watch comes to.
pub struct WatchOutcome {
    pub report: Report,
    /// Deliveries judged.
    pub deliveries: u64,
    /// From a delivery's arrival to its judging (µs): the most, and the mean.
    pub lag_max_us: i64,
    pub lag_mean_us: i64,
    /// The watcher's own outages ("from … to …: cause").
    pub outages: Vec<String>,
    /// Lines written to `--findings`, and its first write error.
    pub logged: u64,
    pub log_error: Option<std::io::Error>,
    /// `--store`: the capture's id, and the first write error.
    pub capture: Option<(u64, Option<String>)>,
}

/// What the pipeline emits, fanned out.
struct Out {
    collector: Collector,
    live: Box<dyn Live>,
    groups: Groups,
    snap: Snapshot,
    log: Option<FindingLog>,
    store: Option<super::record::Recorder>,
    view: Option<Arc<LiveView>>,
    /// The delivery being judged (its number and payload), for excerpts.
    current: Option<(u64, bytes::Bytes)>,
}

impl Sink for Out {
    fn message(&mut self, m: &crate::protocol::Message) {
        self.collector.message(m);
        if let Some(v) = &self.view {
            v.message(m);
        }
    }
    fn finding(&mut self, f: &Finding) {
        // The connection, side and stream offset are the watcher's own: not facts
        // about the edge.
        let mut f = f.clone();
        f.conn = None;
        f.side = None;
        f.offset = None;
        self.collector.finding(&f);
        let (g, first) = self.groups.add(&f);
        self.live.grouped(&f, g, first);
        self.snap.findings += 1;
        match f.severity {
            Severity::Error => self.snap.errors += 1,
            Severity::Warning => self.snap.warnings += 1,
            Severity::Info => {}
        }
        if let Some(r) = &mut self.store {
            r.finding(&f);
        }
        if let Some(v) = &self.view {
            v.finding(&f);
        }
        if let Some(log) = &mut self.log {
            let excerpt = self
                .current
                .as_ref()
                .filter(|(n, _)| Some(*n) == f.packet)
                .map(|(_, p)| crate::eve::excerpt(p));
            log.write(&f, excerpt.as_deref(), None);
        }
    }
}

/// The judging outlet.
pub struct Judging {
    rules: Arc<RuleSet>,
    analyzer: Analyzer,
    out: Out,
    source: String,
    started_us: i64,
    deliveries: u64,
    /// Payload bytes received (the live view's counter).
    bytes: u64,
    lag_max_us: i64,
    lag_sum_us: i128,
    down_since: Option<(i64, String)>,
    outages: Vec<String>,
}

impl Judging {
    /// `source`: the broker and filters, as the report names its input.
    pub fn new(rules: Arc<RuleSet>, source: &str, client_id: &str, outputs: Outputs) -> Judging {
        let mut analyzer = Analyzer::new(rules.clone(), Settings::default());
        let mut out = Out {
            collector: match outputs.chart {
                true => {
                    let mut c = Collector::bounded(LISTED_FINDINGS);
                    c.timeline = Some(crate::report::timeline::Timeline::new());
                    c
                }
                false => Collector::bounded(LISTED_FINDINGS),
            },
            live: outputs.live,
            groups: Groups::default(),
            snap: Snapshot::default(),
            log: outputs.log,
            store: outputs.store,
            view: outputs.view,
            current: None,
        };
        let t = now_us();
        let at = At::new(WATCH_CONN, t, 0);
        let open = Input::Open {
            client: None,
            server: None,
            midstream: false,
        };
        analyzer.push(at, open, &mut out);
        let connect = crate::mqtt::encode::connect(client_id);
        let data = Input::Data {
            side: Side::Client,
            bytes: &connect,
        };
        analyzer.push(at, data, &mut out);
        if let Some(v) = &out.view {
            v.started(&crate::store::CaptureMeta {
                id: out.store.as_ref().map_or(0, |r| r.id()),
                name: format!("watch {source}"),
                listen: "watch (an MQTT subscription)".into(),
                upstream: source.to_string(),
                started_us: t,
                ..Default::default()
            });
        }
        Judging {
            rules,
            analyzer,
            out,
            source: source.to_string(),
            started_us: t,
            deliveries: 0,
            bytes: 0,
            lag_max_us: 0,
            lag_sum_us: 0,
            down_since: None,
            outages: vec![],
        }
    }

    fn judge(&mut self, d: Delivery) {
        self.deliveries += 1;
        self.bytes += d.payload.len() as u64;
        if let Some(r) = &mut self.out.store {
            r.delivery(&d);
        }
        let publish = crate::mqtt::Packet::Publish(crate::mqtt::Publish {
            topic: d.topic,
            payload: d.payload.clone(),
            // The watcher's QoS, not the publisher's: handed over as QoS 0 (the
            // publisher's QoS is among what a subscriber cannot see).
            qos: 0,
            pkid: 0,
            retain: d.retain,
            dup: false,
            topic_alias: None,
        });
        self.out.current = Some((d.n, d.payload));
        let input = Input::Packet {
            side: Side::Server,
            packet: publish,
        };
        self.analyzer
            .push(At::new(WATCH_CONN, d.time_us, d.n), input, &mut self.out);
        self.out.current = None;
        let lag = (now_us() - d.time_us).max(0);
        self.lag_max_us = self.lag_max_us.max(lag);
        self.lag_sum_us += i128::from(lag);
        self.out.snap.judged = self.deliveries;
        self.out.snap.lag_us = lag;
    }

    /// Judges the end of input (requests still unanswered, jobs unfinished) and
    /// builds the report.
    pub fn finish(mut self) -> WatchOutcome {
        let mut summary = self.analyzer.finish(&mut self.out);
        if let Some((at, cause)) = self.down_since.take() {
            self.outages.push(outage(at, None, &cause));
        }
        as_subscriber(&mut summary.coverage);
        if let Some(v) = &self.out.view {
            v.recorded(self.analyzer.framer(), self.bytes, true);
            v.judged_all(&summary.coverage, 0);
            v.stopped();
        }
        summary.stats.connections = 0;
        summary.stats.mqtt_packets = summary.stats.mqtt_packets.saturating_sub(1);
        let input = format!(
            "watch {} from {}",
            self.source,
            crate::report::rfc3339(self.started_us, 0).unwrap_or_default()
        );
        let collector = std::mem::take(&mut self.out.collector);
        let mut report = Report::collected(
            vec![input],
            &summary.stats,
            &summary.coverage,
            &self.rules,
            collector,
            || "`edgetap watch --findings FILE` writes every one".to_string(),
        );
        report
            .summary
            .incomplete
            .extend(self.outages.iter().cloned());
        self.out.snap.groups = self.out.groups.list().to_vec();
        self.out.snap.finished = true;
        self.out.snap.lag_us = 0;
        self.out.live.finish(&self.out.snap);
        let capture = self.out.store.take().map(|r| r.finish());
        if let Some((id, _)) = &capture {
            report
                .summary
                .inputs
                .push(format!("recorded as capture {id}"));
        }
        let (logged, log_error) = match self.out.log.as_mut() {
            Some(l) => {
                l.flush();
                (l.written, l.error.take())
            }
            None => (0, None),
        };
        WatchOutcome {
            report,
            deliveries: self.deliveries,
            lag_max_us: self.lag_max_us,
            lag_mean_us: match self.deliveries {
                0 => 0,
                n => (self.lag_sum_us / i128::from(n)) as i64,
            },
            outages: self.outages,
            logged,
            log_error,
            capture,
        }
    }
}

/// The clauses as a subscriber exercised them: the watcher's own CONNECT exercised
/// the MQTT session clause, but nothing of the edges' sessions was seen.
fn as_subscriber(c: &mut Coverage) {
    c.messages.remove("5.2");
    c.note("5.2", NOT_SEEN.to_string());
}

fn outage(from: i64, to: Option<i64>, cause: &str) -> String {
    let t = |us| crate::report::rfc3339(us, 0).unwrap_or_default();
    match to {
        Some(to) => format!(
            "the watcher's connection was down from {} to {} ({cause}): what was published meanwhile was not seen",
            t(from),
            t(to)
        ),
        None => format!(
            "the watcher's connection was down from {} to the end ({cause}): what was published meanwhile was not seen",
            t(from)
        ),
    }
}

impl Outlet for Judging {
    fn event(&mut self, ev: Event) {
        match ev {
            Event::Delivery(d) => self.judge(d),
            Event::Down { at_us, cause } => {
                tracing::warn!("the connection to the broker was lost: {cause}; retrying");
                self.down_since.get_or_insert((at_us, cause));
            }
            Event::Up { at_us } => {
                if let Some((from, cause)) = self.down_since.take() {
                    tracing::warn!("connected to the broker again");
                    self.outages.push(outage(from, Some(at_us), &cause));
                }
            }
            Event::Tick => {
                self.out.live.tick(&self.out.snap);
                if let Some(r) = &mut self.out.store {
                    r.tick();
                }
                if let Some(v) = &self.out.view {
                    // Every clause so far, as one figure: the judge runs here, on
                    // the same thread as the framing.
                    v.recorded(self.analyzer.framer(), self.bytes, false);
                    let mut c = self.analyzer.exercised();
                    as_subscriber(&mut c);
                    v.judged_all(&c, 0);
                }
            }
        }
    }

    fn idle(&mut self) {
        self.out.snap.lag_us = 0;
        if let Some(l) = &mut self.out.log {
            l.flush();
        }
    }
}

fn now_us() -> i64 {
    crate::sim::now_us()
}
