//! The offline front end: capture files → [`CaptureReader`] → [`Analyzer`] → [`Report`].

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

use crate::capture::{CaptureOptions, CaptureReader, FlowEvent};
use crate::finding::{ConnId, Finding};
use crate::pipeline::{Analyzer, Settings, Sink};
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
/// carry across files split by a capture tool's rotation).
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
            feed(&mut analyzer, base, ev, &mut collector);
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
    analyzer.finish(&mut collector);
    let inputs = settings
        .files
        .iter()
        .map(|f| f.display().to_string())
        .collect();
    Ok(Report::build(
        inputs,
        analyzer.stats(),
        analyzer.engine().exercised(),
        &rules,
        collector.collector.findings,
    ))
}

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
