//! Feeding recorded events to the one pipeline. The proxy's live analysis and
//! `edgetap analyze --capture ID` both go through [`feed`], so a stored capture
//! yields the findings the proxy printed while it ran.

use std::sync::Arc;

use super::{Event, EventKind, Store, StoreError};
use crate::finding::Finding;
use crate::pipeline::{Analyzer, Settings, Sink};
use crate::report::{Collector, Report};
use crate::rules::RuleSet;

/// Why the proxy recorded a flow's bytes without analysing them.
pub const OPAQUE_REASON: &str = "TLS (not terminated: no --tls-cert/--tls-key)";

/// Hands one event to the analyzer. `seq` is the `packet` number of findings.
pub fn feed(a: &mut Analyzer, ev: &Event, sink: &mut dyn Sink) {
    match &ev.kind {
        EventKind::Open { client, server } => a.open(ev.conn, Some(*client), Some(*server), false),
        EventKind::Data { side, bytes } => a.data(ev.conn, *side, ev.time_us, ev.seq, bytes, sink),
        EventKind::Opaque { .. } => a.opaque(ev.conn, ev.time_us, ev.seq, OPAQUE_REASON, sink),
        // The analyzer judges each direction's bytes; a half-close changes nothing
        // until the connection ends.
        EventKind::Fin { .. } => {}
        EventKind::End { .. } => a.close(ev.conn, ev.time_us, ev.seq, sink),
    }
}

/// Runs a stored capture through the pipeline: the same report `analyze` gives for a
/// pcap of the same traffic.
pub fn analyze_capture(
    store: &Store,
    id: u64,
    rules: Arc<RuleSet>,
    settings: Settings,
) -> Result<Report, StoreError> {
    analyze_capture_charted(store, id, rules, settings, false)
}

/// [`analyze_capture`], the report holding the message sequence per edge (for the
/// HTML record) when `chart`.
pub fn analyze_capture_charted(
    store: &Store,
    id: u64,
    rules: Arc<RuleSet>,
    settings: Settings,
    chart: bool,
) -> Result<Report, StoreError> {
    let mut c = Collector::charting(chart);
    let (meta, a) = run_capture(store, id, &rules, settings, &mut c)?;
    Ok(Report::build(
        vec![format!("capture {} ({})", meta.id, meta.name)],
        a.stats(),
        a.engine().exercised(),
        &rules,
        c.findings,
    )
    .with_timeline(c.timeline))
}

/// Runs capture `id`'s stored events through a fresh analyzer into `sink`: the
/// capture's meta and the analyzer (its stats and exercised clauses).
fn run_capture(
    store: &Store,
    id: u64,
    rules: &Arc<RuleSet>,
    settings: Settings,
    sink: &mut dyn Sink,
) -> Result<(super::CaptureMeta, Analyzer), StoreError> {
    let meta = store.capture(id)?;
    let mut a = Analyzer::new(rules.clone(), settings);
    for ev in store.events(id) {
        feed(&mut a, &ev?, sink);
    }
    a.finish(sink);
    Ok((meta, a))
}

/// The proxy's final report of capture `id`, judged again from the store (its live
/// judge fell behind), and the capture's findings groups for the store: both built
/// as the findings come, so memory grows with the groups, not with the findings of
/// a capture that ran for days. The report lists the first `keep` findings and the
/// first of each group, and counts every one; `hint` says how to list them all.
pub fn rejudge_capture(
    store: &Store,
    id: u64,
    rules: Arc<RuleSet>,
    settings: Settings,
    keep: usize,
    hint: impl FnOnce() -> String,
) -> Result<(Report, super::findings::Aggregate), StoreError> {
    struct Both {
        report: Collector,
        stored: super::findings::Aggregate,
    }
    impl Sink for Both {
        fn message(&mut self, m: &crate::protocol::Message) {
            self.report.message(m);
        }
        fn finding(&mut self, f: &Finding) {
            self.report.finding(f);
            self.stored.add(f);
        }
    }
    let mut sink = Both {
        report: Collector::bounded(keep),
        stored: Default::default(),
    };
    let (meta, a) = run_capture(store, id, &rules, settings, &mut sink)?;
    let report = Report::collected(
        vec![format!("capture {} ({})", meta.id, meta.name)],
        a.stats(),
        a.engine().exercised(),
        &rules,
        sink.report,
        hint,
    );
    Ok((report, sink.stored))
}

/// Findings of a capture as stored live, in emission order.
pub fn stored_findings(store: &Store, id: u64) -> Result<Vec<Finding>, StoreError> {
    store.findings(id)
}

/// What a stored capture lacks, one line each: what the proxy forwarded but could
/// not record (disk full), and the damaged spans of its chunk file. Every report of
/// a stored capture lists them (`summary.incomplete`).
pub fn gaps(store: &Store, id: u64) -> Result<Vec<String>, StoreError> {
    let meta = store.capture(id)?;
    let mut out = vec![];
    if let Some(n) = &meta.not_recorded {
        out.push(format!("capture {id}: {}", n.line()));
    }
    for d in store.damage(id)? {
        out.push(format!("capture {id}: {d}"));
    }
    Ok(out)
}
