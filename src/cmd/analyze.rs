//! `edgetap analyze`: captures (or a stored capture) → report → exit code.

use std::io::Write;
use std::sync::Arc;

use super::{analyze_exit_code, load_rules, shown};
use crate::cli;
use edgetap::analyze::{analyze_files, AnalyzeSettings};
use edgetap::pipeline::Sink;
use edgetap::report::{render, Document, Options};
use edgetap::rules::RuleSet;

struct NoSink;
impl Sink for NoSink {}

pub fn run(args: cli::AnalyzeArgs, stdout: &mut dyn Write) -> anyhow::Result<u8> {
    let rules = Arc::new(load_rules(&args.rules)?);
    let inputs = match args.capture {
        Some(id) => format!("capture {id} of {}", args.store_dir.display()),
        None => args
            .files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(" "),
    };
    let edgetap::report::Shown { filter, listing } = shown(&args.shown, &rules)?;
    let mut files = args.files;
    if let Some(note) = edgetap::analyze::order_by_first_frame(&mut files)? {
        eprintln!("edgetap: {note}");
    }
    let settings = AnalyzeSettings {
        files,
        ports: args.ports,
        max_packet: args.max_packet_size,
        progress: !args.no_progress,
    };
    // The HTML record charts the message sequence of each edge.
    let chart = args.format.charts();
    let mut report = match args.capture {
        Some(id) => analyze_capture(&args.store_dir, id, rules, args.max_packet_size, chart)?,
        // EDGETAP_THREADS=1: one thread (the benchmark compares both).
        None if std::env::var("EDGETAP_THREADS").as_deref() == Ok("1") => {
            let mut timeline = edgetap::report::timeline::Timeline::new();
            let sink: &mut dyn Sink = match chart {
                true => &mut timeline,
                false => &mut NoSink,
            };
            let report = analyze_files(rules, &settings, sink)?;
            report.with_timeline(chart.then_some(timeline))
        }
        None => {
            // Every finding is listed only where the output lists them: the
            // JSON, --each, and the HTML record's charts. The table and JUnit
            // show groups, so they keep the first findings and count the rest
            // (memory flat however many findings a capture holds).
            let lists_all = args.format.lists_every_finding()
                || listing == edgetap::report::Listing::Each
                || args.findings.is_some();
            let keep = (!lists_all).then_some(edgetap::report::LISTED_FINDINGS);
            edgetap::analyze::analyze_files_parallel_charted(rules, &settings, chart, keep)?
        }
    };
    report.apply(&filter);
    let text = render(
        &Document::of(&report),
        args.format,
        &Options::listing(listing),
    );
    match &args.findings {
        Some(path) => {
            write_findings(&report, path, &inputs)?;
            // With --findings -, stdout carries the finding lines only.
            match path.as_os_str() == "-" {
                true => std::io::stderr().write_all(text.as_bytes())?,
                false => stdout.write_all(text.as_bytes())?,
            }
        }
        None => stdout.write_all(text.as_bytes())?,
    }
    Ok(analyze_exit_code(&report))
}

/// `--findings`: each finding of the report (every one is kept when it is asked
/// for) as an EVE line, citing its capture file and frame.
fn write_findings(
    report: &edgetap::report::Report,
    path: &std::path::Path,
    inputs: &str,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let mut log = edgetap::eve::FindingLog::open(path, "analyze", inputs)
        .with_context(|| format!("--findings {}", path.display()))?;
    for f in &report.findings {
        log.write(f, None, report.file_of(f));
    }
    log.flush();
    match log.error.take() {
        Some(e) => Err(anyhow::Error::new(e).context(format!("--findings {}", path.display()))),
        None => Ok(()),
    }
}

fn analyze_capture(
    dir: &std::path::Path,
    id: u64,
    rules: Arc<RuleSet>,
    max_packet: usize,
    chart: bool,
) -> anyhow::Result<edgetap::report::Report> {
    let store = edgetap::store::Store::open_existing(dir)?;
    let settings = edgetap::pipeline::Settings { max_packet };
    let mut report =
        edgetap::analyze::stored::analyze_capture_charted(&store, id, rules, settings, chart)?;
    // Findings cite the frame numbers `captures export` gives, not the store's chunks.
    let frames = edgetap::store::export::frame_numbers(&store, id)?;
    report.renumber(|f| frames.frame_of(f));
    report.renumber_chart(|f| frames.frame_of(f), |p| frames.frame_of_event(p));
    // What is not in the store: never recorded (disk full) or damaged since.
    report
        .summary
        .incomplete
        .extend(edgetap::analyze::stored::gaps(&store, id)?);
    report.check_judged(vec![]);
    Ok(report)
}
