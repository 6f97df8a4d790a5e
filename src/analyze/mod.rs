//! The offline front end: capture files → [`CaptureReader`] → [`Analyzer`] → [`Report`].

pub mod stored;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

use std::fmt::Write as _;

use crate::capture::{
    CaptureOptions, CaptureReader, FlowEvent, Stats as CaptureStats, MQTT_TLS_PORT,
};
use crate::finding::{ConnId, Finding};
use crate::pipeline::{Analyzer, At, Framer, Input, Judge, Push, Settings, Sink, Staged};
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

pub use crate::finding::CONN_STRIDE;

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
    let reads = read_files(settings, &mut analyzer, &mut collector, &mut |_| {})?;
    let summary = analyzer.finish(&mut collector);
    let mut report = Report::build(
        inputs(settings),
        &summary.stats,
        &summary.coverage,
        &rules,
        collector.collector.findings,
    );
    account_for_reading(&mut report, &reads, &settings.ports);
    Ok(report)
}

/// Rotated captures named out of order (a shell glob puts `s.pcap10` before
/// `s.pcap2`; `rot_00001.pcap rot_00000.pcap` typed by hand) are read as one
/// session only in the order they were written: `files` is put in the order of
/// their first frame's time (files without a frame last, ties as given). Returns
/// the note to show when the order changed. Left as given when one is no regular
/// file (a pipe cannot be read twice).
pub fn order_by_first_frame(files: &mut [PathBuf]) -> Result<Option<String>, AnalyzeError> {
    if files.len() < 2 || !files.iter().all(|f| f.is_file()) {
        return Ok(None);
    }
    let mut timed = Vec::with_capacity(files.len());
    for f in files.iter() {
        timed.push((
            crate::capture::first_frame_time(f)?.unwrap_or(i64::MAX),
            f.clone(),
        ));
    }
    timed.sort_by_key(|(t, _)| *t);
    let ordered: Vec<PathBuf> = timed.into_iter().map(|(_, f)| f).collect();
    if ordered == files {
        return Ok(None);
    }
    let names: Vec<String> = ordered.iter().map(|f| f.display().to_string()).collect();
    files.clone_from_slice(&ordered);
    Ok(Some(format!(
        "the captures were read in the order of their first packet's time, as one session: {}",
        names.join(" ")
    )))
}

/// Messages and findings handed from the reading thread to the judging one at a time.
const BATCH: usize = 256;

/// [`analyze_files`] on two threads, for a caller that wants the report only: one
/// reads the captures, reassembles TCP, decodes MQTT and parses payloads (the
/// [`Framer`]); the other runs the rule engine (the [`Judge`]) over what the first
/// staged, in order. Same report, findings in the same order.
pub fn analyze_files_parallel(
    rules: Arc<RuleSet>,
    settings: &AnalyzeSettings,
) -> Result<Report, AnalyzeError> {
    analyze_files_parallel_charted(rules, settings, false, None)
}

/// [`analyze_files_parallel`], the report holding the message sequence per edge
/// (its `timeline`, for the HTML record) when `chart`. With `keep`, the report
/// counts every finding in its group but keeps only the first `keep` (and the first
/// of each later group: [`Collector::bounded`]), so that memory does not grow with
/// the findings of a long capture from a device that breaks a rule in every
/// message; its summary's `not_listed` says how many it left out.
pub fn analyze_files_parallel_charted(
    rules: Arc<RuleSet>,
    settings: &AnalyzeSettings,
    chart: bool,
    keep: Option<usize>,
) -> Result<Report, AnalyzeError> {
    let mut framer = Framer::new(
        rules.clone(),
        Settings {
            max_packet: settings.max_packet,
        },
    );
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Staged>>(4);
    // Batches sent and not yet judged: while the judge has fewer than two, it has
    // time to parse payloads too, and the framer leaves them to it (the reading
    // thread is the busier one on a capture of many messages). Fewer than one gave
    // 1.06 of the wall time, fewer than three the same as two (benchmark capture).
    let queued = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    // Judged batches go back to be dropped where they were allocated: the system
    // allocator frees far faster on the allocating thread than on another (freeing
    // on the judging thread cost more than the parallelism gained).
    let (back_tx, back_rx) = std::sync::mpsc::channel::<Vec<Staged>>();
    let judging = {
        let rules = rules.clone();
        std::thread::Builder::new()
            .name("judge".into())
            .spawn({
                let queued = queued.clone();
                move || {
                    let mut judge = Judge::new(rules);
                    let mut collector = match keep {
                        Some(keep) => Collector::bounded(keep),
                        None => Collector::charting(chart),
                    };
                    for mut batch in rx {
                        for s in &mut batch {
                            judge.take(s, &mut collector);
                        }
                        queued.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                        let _ = back_tx.send(batch);
                    }
                    let summary = judge.finish(&mut collector);
                    (summary, collector)
                }
            })
            .expect("spawn the judging thread")
    };
    let send = |f: &mut Framer, at_least: usize| {
        if f.staged_len() >= at_least {
            let mut recycled = None;
            for mut done in back_rx.try_iter() {
                f.recycle(&mut done);
                recycled = Some(done);
            }
            let mut batch = recycled.unwrap_or_else(|| Vec::with_capacity(BATCH));
            f.take_staged(&mut batch);
            let waiting = queued.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            f.set_leaving_payloads(waiting < 2);
            // The judge only stops early by panicking; its join below reports that.
            let _ = tx.send(batch);
        }
    };
    let read = read_files(settings, &mut framer, &mut Quiet, &mut |f| send(f, BATCH));
    framer.finish();
    send(&mut framer, 1);
    drop(tx);
    let (summary, collector) = match judging.join() {
        Ok(r) => r,
        Err(panic) => std::panic::resume_unwind(panic),
    };
    let reads = read?;
    let mut report = Report::collected(
        inputs(settings),
        &summary.stats,
        &summary.coverage,
        &rules,
        collector,
        || "--each lists every one".into(),
    );
    account_for_reading(&mut report, &reads, &settings.ports);
    Ok(report)
}

/// Adds to the report what the capture reader knows: the captures not read in full
/// (and those unreadable), and, when no protocol message was judged, why.
pub fn account_for_reading(report: &mut Report, reads: &[CaptureStats], ports: &[u16]) {
    for stats in reads {
        if let Some(stop) = &stats.stopped {
            report.summary.incomplete.push(stop.message.clone());
        }
        if let Some(stop) = stats.unreadable() {
            report.summary.unreadable.push(stop.message.clone());
        }
    }
    if report.summary.messages == 0 {
        let total = sum_stats(reads);
        report.check_judged(capture_hints(&total, ports));
    }
}

/// The counters of several captures as one.
fn sum_stats(reads: &[CaptureStats]) -> CaptureStats {
    let mut total = CaptureStats::default();
    for s in reads {
        total.frames += s.frames;
        total.truncated |= s.truncated;
        total.flows += s.flows;
        total.mqtt_flows += s.mqtt_flows;
        total.not_decodable_flows += s.not_decodable_flows;
        total.midstream_flows += s.midstream_flows;
        total.unsupported_frames += s.unsupported_frames;
        for (port, t) in &s.ports {
            let sum = total.ports.entry(*port).or_default();
            sum.flows += t.flows;
            sum.bytes += t.bytes;
        }
    }
    total
}

/// Why the captures gave no protocol message, from what the reader saw, with the
/// hint that fits.
fn capture_hints(total: &CaptureStats, ports: &[u16]) -> Vec<String> {
    let mut hints = vec![];
    if total.frames == 0 && total.truncated {
        hints.push(
            "not a single frame could be read (see the unreadable capture above)".to_string(),
        );
        return hints;
    }
    if total.frames == 0 {
        hints.push("the capture holds no packets".to_string());
        return hints;
    }
    if total.unsupported_frames == total.frames {
        hints.push(format!(
            "none of the {} frame(s) has a link type edgetap reads (named in the warning above): it reads Ethernet, Linux cooked (`tcpdump -i any`), raw IP and BSD loopback; capture on such an interface",
            total.frames
        ));
        return hints;
    }
    if total.not_decodable_flows > 0 {
        hints.push(format!(
            "{} TLS flow(s) (server port {MQTT_TLS_PORT} or a TLS ClientHello): encrypted, not decodable; capture the plaintext side (e.g. through `edgetap proxy`)",
            total.not_decodable_flows
        ));
    }
    if total.mqtt_flows == 0 {
        hints.push(no_mqtt_flow_hint(total, ports));
    } else if total.midstream_flows > 0 {
        hints.push(format!(
            "the capture started mid-stream: {} of {} MQTT connection(s) were already open (no SYN, no CONNECT in the capture); start the capture before the devices connect",
            total.midstream_flows, total.mqtt_flows
        ));
    }
    hints
}

/// No flow on the MQTT ports and none starting with a CONNECT: name `--port` and the
/// ports that carried the most traffic.
fn no_mqtt_flow_hint(total: &CaptureStats, ports: &[u16]) -> String {
    let listed: Vec<String> = ports.iter().map(u16::to_string).collect();
    let mut hint = format!(
        "no TCP flow on port {} and no flow starting with an MQTT CONNECT (a capture started after the devices connected holds none): if the broker listens on another port, name it with --port PORT",
        listed.join(", ")
    );
    let busiest = busiest_server_ports(total);
    if busiest.is_empty() {
        let _ = write!(
            hint,
            "; the capture holds {} TCP flow(s) and no TCP payload",
            total.flows
        );
    } else {
        let _ = write!(
            hint,
            "; TCP ports with the most traffic: {}",
            busiest.join(", ")
        );
    }
    hint
}

/// The ports that carried the most payload, for the `--port` hint. Which end of a
/// flow serves is unknown without its SYN, so both ends are counted; a port shared by
/// several flows is a server's, so when there is one, the ports of a single flow (the
/// clients' ephemeral ones) are left out.
fn busiest_server_ports(total: &CaptureStats) -> Vec<String> {
    let busiest: Vec<_> = total
        .busiest_ports(usize::MAX)
        .into_iter()
        .filter(|(_, t)| t.bytes > 0)
        .collect();
    let shared = busiest.iter().any(|(_, t)| t.flows > 1);
    busiest
        .into_iter()
        .filter(|(_, t)| !shared || t.flows > 1)
        .take(5)
        .map(|(port, t)| {
            let flows = if t.flows == 1 { "flow" } else { "flows" };
            format!("{port} ({} bytes, {} {flows})", t.bytes, t.flows)
        })
        .collect()
}

/// Feeds every file to `analyzer`; `after` runs after each capture event.
fn read_files<P: Push>(
    settings: &AnalyzeSettings,
    analyzer: &mut P,
    sink: &mut dyn Sink,
    after: &mut dyn FnMut(&mut P),
) -> Result<Vec<CaptureStats>, AnalyzeError> {
    let mut reads = vec![];
    // The files are one session (a rotation: tcpdump -C/-G): the flows still open at
    // the end of one go on in the next.
    let mut previous: Option<CaptureReader> = None;
    let last = settings.files.len().saturating_sub(1);
    for (i, file) in settings.files.iter().enumerate() {
        let mut reader = CaptureReader::open(
            file,
            CaptureOptions {
                ports: settings.ports.clone(),
                ..CaptureOptions::default()
            },
        )?;
        let base = CONN_STRIDE * i as ConnId;
        if let Some(prev) = previous.take() {
            reader.continue_from(prev, &mut |ev| feed(analyzer, base, ev, sink));
        }
        let bar = progress_bar(settings.progress, reader.total_bytes());
        let progress = reader.progress();
        let mut n = 0u64;
        let stats = reader.run_until(i == last, &mut |ev| {
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
        reads.push(stats);
        previous = Some(reader);
    }
    Ok(reads)
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

/// Hands one capture event to the pipeline (connection ids of file `i` start at
/// `base`, `i × CONN_STRIDE`).
pub fn feed(a: &mut dyn Push, base: ConnId, ev: FlowEvent<'_>, sink: &mut dyn Sink) {
    let (at, input) = match ev {
        FlowEvent::Open {
            conn,
            client,
            server,
            midstream,
            ..
        } => (
            At::new(base + conn, 0, 0),
            Input::Open {
                client: Some(client),
                server: Some(server),
                midstream,
            },
        ),
        FlowEvent::Data {
            conn,
            side,
            time_us,
            frame,
            data,
        } => (
            At::new(base + conn, time_us, frame),
            Input::Data { side, bytes: data },
        ),
        FlowEvent::Gap {
            conn,
            side,
            time_us,
            frame,
            lost,
        } => (
            At::new(base + conn, time_us, frame),
            Input::Gap { side, lost },
        ),
        FlowEvent::Close {
            conn,
            time_us,
            frame,
            input_ended,
            ..
        } => (
            At::new(base + conn, time_us, frame),
            if input_ended {
                Input::InputEnded
            } else {
                Input::Close
            },
        ),
        FlowEvent::NotDecodable {
            conn,
            client,
            server,
            time_us,
            frame,
            ref reason,
        } => {
            let at = At::new(base + conn, time_us, frame);
            let reason = reason.as_ref();
            let input = Input::NotDecodable {
                client,
                server,
                reason,
            };
            a.push(at, input, sink);
            return;
        }
        FlowEvent::BadFrame {
            frame,
            time_us,
            ref message,
        } => {
            let detail = message.as_ref();
            a.push(At::new(0, time_us, frame), Input::BadFrame { detail }, sink);
            return;
        }
        // Only from the second file on: `from` is of the file before.
        FlowEvent::Continued { from, conn } => (
            At::new(base + conn, 0, 0),
            Input::Continued {
                from: base.saturating_sub(CONN_STRIDE) + from,
            },
        ),
    };
    a.push(at, input, sink);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::PortTraffic;

    fn traffic(ports: &[(u16, u64, u64)]) -> CaptureStats {
        let mut s = CaptureStats {
            frames: 100,
            ..Default::default()
        };
        for &(port, flows, bytes) in ports {
            s.flows += flows;
            s.ports.insert(port, PortTraffic { flows, bytes });
        }
        s
    }

    #[test]
    fn no_mqtt_flow_names_port_and_the_busiest_ports_first() {
        let s = traffic(&[(22, 1, 100), (18830, 3, 5000), (443, 2, 900)]);
        let hints = capture_hints(&s, &[1883]);
        assert_eq!(hints.len(), 1, "{hints:?}");
        let h = &hints[0];
        assert!(
            h.contains("no TCP flow on port 1883") && h.contains("--port"),
            "{h}"
        );
        let at = |p: &str| h.find(p).unwrap_or_else(|| panic!("{p} missing: {h}"));
        assert!(at("18830 (5000 bytes, 3 flows)") < at("443 ("));
        // A port of a single flow is a client's ephemeral port when servers are known.
        assert!(!h.contains("22 ("), "{h}");
    }

    #[test]
    fn the_port_hint_leaves_out_clients_ephemeral_ports() {
        // A late capture: each client flow counted on its server's port and its own.
        let s = traffic(&[(24002, 3, 6056), (35958, 1, 2032), (35972, 1, 2026)]);
        let h = capture_hints(&s, &[1883]).join("; ");
        assert!(h.contains("24002 (6056 bytes, 3 flows)"), "{h}");
        assert!(!h.contains("35958") && !h.contains("35972"), "{h}");
        // With one flow, both ends are listed: either may serve.
        let s = traffic(&[(24002, 1, 600), (35958, 1, 600)]);
        let h = capture_hints(&s, &[1883]).join("; ");
        assert!(
            h.contains("24002 (600 bytes, 1 flow)") && h.contains("35958 (600 bytes, 1 flow)"),
            "{h}"
        );
    }

    #[test]
    fn a_capture_of_an_unread_link_type_says_so_not_port() {
        let mut s = traffic(&[]);
        s.unsupported_frames = s.frames;
        let h = capture_hints(&s, &[1883]).join("; ");
        assert!(h.contains("link type") && !h.contains("--port"), "{h}");
    }

    #[test]
    fn tls_flows_are_said_not_decodable() {
        let mut s = traffic(&[(8883, 2, 4000)]);
        s.not_decodable_flows = 2;
        let hints = capture_hints(&s, &[1883]);
        assert!(hints[0].contains("2 TLS flow(s)") && hints[0].contains("not decodable"));
    }

    #[test]
    fn mqtt_flows_without_messages_after_a_midstream_start_say_so() {
        let mut s = traffic(&[(1883, 2, 300)]);
        s.mqtt_flows = 2;
        s.midstream_flows = 1;
        let hints = capture_hints(&s, &[1883]);
        assert_eq!(hints.len(), 1, "{hints:?}");
        assert!(hints[0].contains("mid-stream: 1 of 2"), "{}", hints[0]);
    }

    #[test]
    fn an_empty_capture_and_an_unreadable_one_are_told_apart() {
        let mut s = CaptureStats::default();
        assert_eq!(
            capture_hints(&s, &[1883]),
            vec!["the capture holds no packets"]
        );
        s.truncated = true;
        assert!(capture_hints(&s, &[1883])[0].contains("not a single frame"));
    }
}
