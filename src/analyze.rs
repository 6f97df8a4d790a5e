//! The offline front end: capture files → [`CaptureReader`] → [`Analyzer`] → [`Report`].

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::capture::{CaptureOptions, CaptureReader, FlowEvent};
use crate::finding::{ConnId, Finding};
use crate::pipeline::{Analyzer, Judge, Settings, Sink, Staged};
use crate::report::{Collector, Report};
use crate::rules::RuleSet;

#[derive(Debug, Clone)]
pub struct AnalyzeSettings {
    pub files: Vec<PathBuf>,
    pub ports: Vec<u16>,
    pub max_packet: usize,
    pub progress: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum AnalyzeError {
    #[error(transparent)]
    Capture(#[from] crate::capture::CaptureError),
}

/// Connection ids restart in every file; the analyzer sees them as distinct.
const CONN_STRIDE: ConnId = 1 << 40;

/// Analyzes the files in order, as one run (one engine, so pairing and sequences
/// carry across files split by a capture tool's rotation). `sink` sees every packet,
/// message and finding.
pub fn analyze_files(
    rules: Arc<RuleSet>,
    settings: &AnalyzeSettings,
    sink: &mut dyn Sink,
) -> Result<Report, AnalyzeError> {
    let mut analyzer = Analyzer::new(
        rules.clone(),
        Settings {
            max_packet: settings.max_packet,
        },
    );
    let mut collector = Tee {
        collector: Collector::default(),
        inner: sink,
    };
    read_files(settings, &mut analyzer, &mut collector, &mut |_| {})?;
    analyzer.finish(&mut collector);
    Ok(Report::build(
        inputs(settings),
        analyzer.stats(),
        analyzer.engine().exercised(),
        &rules,
        collector.collector.findings,
    ))
}

/// Messages and findings handed from the reading thread to the judging one at a time.
const BATCH: usize = 256;

/// [`analyze_files`] on two threads, for a caller that wants the report only: one
/// reads the captures, reassembles TCP, decodes MQTT and parses payloads (a deferred
/// [`Analyzer`]); the other runs the rule engine (a [`Judge`]) over what the first
/// staged, in order. Same report, findings in the same order.
pub fn analyze_files_parallel(
    rules: Arc<RuleSet>,
    settings: &AnalyzeSettings,
) -> Result<Report, AnalyzeError> {
    let mut analyzer = Analyzer::deferred(
        rules.clone(),
        Settings {
            max_packet: settings.max_packet,
        },
    );
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Staged>>(4);
    // Judged batches go back to be dropped where they were allocated: the system
    // allocator frees far faster on the allocating thread than on another (freeing
    // on the judging thread cost more than the parallelism gained).
    let (back_tx, back_rx) = std::sync::mpsc::channel::<Vec<Staged>>();
    // Batches sent and not yet judged. Parsing a payload costs about what judging it
    // does, so it goes to whichever thread is behind: the reader parses while the
    // judge has work queued and leaves payloads raw for it when it has little.
    let in_flight = Arc::new(AtomicUsize::new(0));
    let judging = {
        let rules = rules.clone();
        let in_flight = in_flight.clone();
        std::thread::Builder::new()
            .name("judge".into())
            .spawn(move || {
                let mut judge = Judge::new(rules);
                let mut collector = Collector::default();
                for mut batch in rx {
                    for s in &mut batch {
                        judge.take(s, &mut collector);
                    }
                    in_flight.fetch_sub(1, Ordering::Relaxed);
                    let _ = back_tx.send(batch);
                }
                let engine = judge.finish(&mut collector);
                (engine.exercised().clone(), collector.findings)
            })
            .expect("spawn the judging thread")
    };
    let send = |a: &mut Analyzer, at_least: usize| {
        if a.staged_len() >= at_least {
            let mut recycled = None;
            for mut done in back_rx.try_iter() {
                done.clear();
                recycled = Some(done);
            }
            let mut batch = recycled.unwrap_or_else(|| Vec::with_capacity(BATCH));
            a.take_staged(&mut batch);
            in_flight.fetch_add(1, Ordering::Relaxed);
            // The judge only stops early by panicking; its join below reports that.
            let _ = tx.send(batch);
            a.parse_payloads(in_flight.load(Ordering::Relaxed) >= 3);
        }
    };
    let read = read_files(settings, &mut analyzer, &mut Quiet, &mut |a| send(a, BATCH));
    analyzer.finish(&mut Quiet);
    send(&mut analyzer, 1);
    drop(tx);
    let (judged, findings) = match judging.join() {
        Ok(r) => r,
        Err(panic) => std::panic::resume_unwind(panic),
    };
    read?;
    // Transport clauses (5.2) were counted while reading, message clauses by the judge.
    let mut exercised = analyzer.engine().exercised().clone();
    exercised.merge(&judged);
    Ok(Report::build(
        inputs(settings),
        analyzer.stats(),
        &exercised,
        &rules,
        findings,
    ))
}

/// Feeds every file to `analyzer`; `after` runs after each capture event.
fn read_files(
    settings: &AnalyzeSettings,
    analyzer: &mut Analyzer,
    sink: &mut dyn Sink,
    after: &mut dyn FnMut(&mut Analyzer),
) -> Result<(), AnalyzeError> {
    for (i, file) in settings.files.iter().enumerate() {
        let mut reader = CaptureReader::open(
            file,
            CaptureOptions {
                ports: settings.ports.clone(),
                ..CaptureOptions::default()
            },
        )?;
        let base = CONN_STRIDE * i as ConnId;
        let bar = progress_bar(settings.progress, reader.total_bytes());
        let progress = reader.progress();
        let mut n = 0u64;
        reader.run(&mut |ev| {
            feed(analyzer, base, ev, sink);
            after(analyzer);
            n += 1;
            if n % 4096 == 0 {
                if let Some(b) = &bar {
                    b.set_position(progress.bytes_read());
                }
            }
        })?;
        if let Some(b) = bar {
            b.finish_and_clear();
        }
    }
    Ok(())
}

fn inputs(settings: &AnalyzeSettings) -> Vec<String> {
    settings
        .files
        .iter()
        .map(|f| f.display().to_string())
        .collect()
}

struct Quiet;
impl Sink for Quiet {}

/// Hands one capture event to the pipeline.
pub fn feed(a: &mut Analyzer, base: ConnId, ev: FlowEvent<'_>, sink: &mut dyn Sink) {
    match ev {
        FlowEvent::Open {
            conn,
            client,
            server,
            midstream,
            ..
        } => a.open(base + conn, Some(client), Some(server), midstream),
        FlowEvent::Data {
            conn,
            side,
            time_us,
            frame,
            data,
        } => a.data(base + conn, side, time_us, frame, data, sink),
        FlowEvent::Gap {
            conn,
            side,
            time_us,
            frame,
            lost,
        } => a.gap(base + conn, side, time_us, frame, lost, sink),
        FlowEvent::Close {
            conn,
            time_us,
            frame,
            ..
        } => a.close(base + conn, time_us, frame, sink),
        FlowEvent::NotDecodable {
            conn,
            client,
            server,
            time_us,
            frame,
            reason,
        } => a.not_decodable(base + conn, client, server, time_us, frame, &reason, sink),
        FlowEvent::BadFrame {
            frame,
            time_us,
            message,
        } => a.bad_frame(time_us, frame, &message, sink),
    }
}

struct Tee<'a> {
    collector: Collector,
    inner: &'a mut dyn Sink,
}

impl Sink for Tee<'_> {
    fn packet(&mut self, p: &crate::pipeline::PacketEvent<'_>) {
        self.inner.packet(p)
    }
    fn message(&mut self, m: &crate::protocol::Message) {
        self.inner.message(m)
    }
    fn finding(&mut self, f: &Finding) {
        self.collector.finding(f);
        self.inner.finding(f)
    }
}

fn progress_bar(enabled: bool, total: Option<u64>) -> Option<indicatif::ProgressBar> {
    let total = total?;
    if !enabled || !std::io::stderr().is_terminal() || total < 16 << 20 {
        return None;
    }
    let b = indicatif::ProgressBar::new(total);
    b.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    Some(b)
}
