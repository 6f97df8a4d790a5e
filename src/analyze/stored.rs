//! The front end of a stored capture: its recorded events through the one pipeline
//! ([`input`]) into a report. `edgetap analyze --capture ID` and the proxy's final
//! report (when its live judge fell behind) are built here, so a stored capture
//! yields the findings the proxy printed while it ran.

use std::sync::Arc;

use crate::finding::Finding;
use crate::pipeline::{Analyzer, Settings, Sink, Summary};
use crate::report::{Collector, Report};
use crate::rules::RuleSet;
use crate::store::findings::Aggregate;
use crate::store::replay::input;
use crate::store::{CaptureMeta, Recorder, Store, StoreError};

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
        &a.stats,
        &a.coverage,
        &rules,
        c.findings,
    )
    .with_timeline(c.timeline))
}

/// Runs capture `id`'s stored events through a fresh analyzer into `sink`: the
/// capture's meta and the run's summary (its stats and exercised clauses).
fn run_capture(
    store: &Store,
    id: u64,
    rules: &Arc<RuleSet>,
    settings: Settings,
    sink: &mut dyn Sink,
) -> Result<(CaptureMeta, Summary), StoreError> {
    let meta = store.capture(id)?;
    let mut a = Analyzer::new(rules.clone(), settings);
    for ev in store.events(id) {
        let ev = ev?;
        if let Some((at, input)) = input(&ev) {
            a.push(at, input, sink);
        }
    }
    Ok((meta, a.finish(sink)))
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
) -> Result<(Report, Aggregate), StoreError> {
    struct Both {
        report: Collector,
        stored: Aggregate,
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
        &a.stats,
        &a.coverage,
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

/// What a stored capture lacks, one line each: its recorder gone without closing
/// it, what the proxy forwarded but could not record (disk full, credentials that
/// could not be located), and the damaged spans of its chunk file. Every report of
/// a stored capture lists them (`summary.incomplete`).
pub fn gaps(store: &Store, id: u64) -> Result<Vec<String>, StoreError> {
    let meta = store.capture(id)?;
    let mut out = vec![];
    if store.recorder(&meta) == Recorder::Gone {
        out.push(format!("capture {id}: {}", Recorder::GONE));
    }
    if let Some(n) = &meta.not_recorded {
        out.push(format!("capture {id}: {}", n.line()));
    }
    for d in store.damage(id)? {
        out.push(format!("capture {id}: {d}"));
    }
    Ok(out)
}
