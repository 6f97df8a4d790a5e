//! The analysis and recording task: one per proxy, on its own thread, off the
//! forwarding path. It numbers the chunks (`seq`), feeds them to the shared
//! [`Analyzer`] through [`crate::store::replay::feed`] (the path `analyze --capture`
//! takes too), reports findings live, and writes the store in batches.
//!
//! Writing and syncing a batch happens on a second thread (the writer), so analysis
//! goes on while the disk works: one batch can be written while the next fills, and
//! the analysis task waits only when a second finished batch would queue up.
//!
//! A chunk's buffer permit is released only once its batch is on disk, so a
//! connection never has more than `max_buffered` bytes that are not yet durable.
//! A batch is handed to the writer when it holds [`FLUSH_BYTES`] or a quarter of
//! `max_buffered`, whichever is less: a busy connection's next quarters are read
//! and analysed while the previous ones are synced, and the writer syncs whatever
//! has queued meanwhile at once, so forwarding does not stop at every fsync.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit};
use tokio::time::Instant;

use super::{Clock, LiveFindings, FLUSH_BYTES, FLUSH_INTERVAL};
use crate::finding::{ConnId, Finding};
use crate::pipeline::{Analyzer, PacketEvent, Settings, Sink};
use crate::report::Report;
use crate::rules::RuleSet;
use crate::store::replay::{feed, packet_record};
use crate::store::{
    CaptureMeta, ConnMeta, Event, EventKind, PacketRecord, Store, StoreError, WriteBatch,
};

/// One event from a forwarding task.
pub struct Tap {
    pub conn: ConnId,
    pub time_us: i64,
    pub kind: TapKind,
    /// Held until the chunk is durable.
    pub permit: Option<OwnedSemaphorePermit>,
}

pub enum TapKind {
    /// Recorded in the store and fed to the analyzer.
    Event(EventKind),
    /// The connection (or one direction) carries bytes the analyzer cannot read
    /// (TLS the proxy does not terminate, broken WebSocket framing): one
    /// `capture.not_decodable` finding; no event is recorded for it.
    NotDecodable {
        client: SocketAddr,
        server: SocketAddr,
        reason: String,
    },
}

pub(crate) type Outcome = Result<(Report, Option<Store>, CaptureMeta), StoreError>;

struct Collect<'a> {
    packets: Vec<PacketRecord>,
    findings: Vec<Finding>,
    live: &'a mut LiveFindings,
}

impl Sink for Collect<'_> {
    fn packet(&mut self, p: &PacketEvent<'_>) {
        self.packets.push(packet_record(p));
    }
    fn finding(&mut self, f: &Finding) {
        (self.live)(f);
        self.findings.push(f.clone());
    }
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn spawn(
    rx: mpsc::Receiver<Tap>,
    rules: Arc<RuleSet>,
    max_packet: usize,
    max_buffered: usize,
    store: Option<Store>,
    meta: CaptureMeta,
    clock: Clock,
    live: LiveFindings,
) -> oneshot::Receiver<Outcome> {
    let (done, result) = oneshot::channel();
    std::thread::Builder::new()
        .name("edgetap-tap".into())
        .spawn(move || {
            background_priority();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .expect("a current-thread runtime starts");
            let flush_bytes = FLUSH_BYTES.min((max_buffered / 4).max(1));
            let out = rt.block_on(analyze(
                rx,
                rules,
                max_packet,
                flush_bytes,
                store,
                meta,
                clock,
                live,
            ));
            let _ = done.send(out);
        })
        .expect("the analysis thread starts");
    result
}

/// Lowers the calling thread's scheduling priority (nice +10). Analysis and
/// recording are throughput work with backpressure; on a busy machine the
/// forwarding threads should win every wakeup against them, so that a batch being
/// encoded and written does not add latency to forwarded packets.
fn background_priority() {
    extern "C" {
        fn setpriority(which: i32, who: u32, prio: i32) -> i32;
    }
    const PRIO_PROCESS: i32 = 0;
    // On Linux, who = 0 with PRIO_PROCESS is the calling thread only. Failure is
    // harmless: the thread keeps the normal priority.
    #[cfg(target_os = "linux")]
    unsafe {
        setpriority(PRIO_PROCESS, 0, 10);
    }
}

/// Finished batches waiting for the writer.
const WRITER_QUEUE: usize = 8;

/// A batch for the writer thread, with the permits of its chunks.
type Job = (WriteBatch, CaptureMeta, Vec<OwnedSemaphorePermit>);

/// The thread that writes and syncs batches, in order.
struct Writer {
    jobs: std::sync::mpsc::SyncSender<Job>,
    done: std::thread::JoinHandle<Option<Store>>,
}

impl Writer {
    fn spawn(store: Store) -> Writer {
        // Batches queue while one is written and synced; the writer then takes all
        // of them at once, with one sync (group commit). When the queue is full the
        // analysis task waits (and with it the tap queue and, in the end,
        // forwarding: lossless). Memory stays bounded by the connections' budgets.
        let (jobs, rx) = std::sync::mpsc::sync_channel::<Job>(WRITER_QUEUE);
        let done = std::thread::Builder::new()
            .name("edgetap-store".into())
            .spawn(move || {
                background_priority();
                let mut store = Some(store);
                while let Ok((mut batch, mut meta, mut permits)) = rx.recv() {
                    while let Ok((b, m, p)) = rx.try_recv() {
                        batch.append(b);
                        meta = m;
                        permits.extend(p);
                    }
                    if let Some(s) = &store {
                        if let Err(e) = s.write(batch, &meta) {
                            tracing::error!(
                                "store write failed, recording stops (forwarding goes on): {e}"
                            );
                            store = None;
                        }
                    }
                    drop(permits);
                }
                store
            })
            .expect("the store writer thread starts");
        Writer { jobs, done }
    }
}

struct Recorder {
    writer: Option<Writer>,
    meta: CaptureMeta,
    batch: WriteBatch,
    permits: Vec<OwnedSemaphorePermit>,
    conns: HashMap<ConnId, ConnMeta>,
}

impl Recorder {
    /// Hands the batch to the writer, which releases the permits of its chunks once
    /// they are on disk. A store that fails stops recording (logged) but never stops
    /// forwarding.
    fn flush(&mut self) {
        let batch = std::mem::take(&mut self.batch);
        let permits = std::mem::take(&mut self.permits);
        if let Some(w) = &self.writer {
            // Fails only if the writer thread died; its permits are released then.
            let _ = w.jobs.send((batch, self.meta.clone(), permits));
        }
    }

    /// Waits for every batch to be written; hands back the store if it still works.
    fn close(self) -> Option<Store> {
        let w = self.writer?;
        drop(w.jobs);
        w.done.join().ok().flatten()
    }
}

#[allow(clippy::too_many_arguments)]
async fn analyze(
    mut rx: mpsc::Receiver<Tap>,
    rules: Arc<RuleSet>,
    max_packet: usize,
    flush_bytes: usize,
    store: Option<Store>,
    meta: CaptureMeta,
    clock: Clock,
    mut live: LiveFindings,
) -> Outcome {
    let mut a = Analyzer::new(rules.clone(), Settings { max_packet });
    let cap = meta.id;
    let mut rec = Recorder {
        writer: store.map(Writer::spawn),
        meta,
        batch: WriteBatch::default(),
        permits: vec![],
        conns: HashMap::new(),
    };
    let mut all: Vec<Finding> = vec![];
    let mut seq = 0u64;
    // Recorded times never go back: two connections' reads can reach this task in
    // the other order than their timestamps; the later one is recorded at the
    // earlier's time, so the store's order (time, seq) is the order analysed here.
    let mut last_time = i64::MIN;
    let mut deadline: Option<Instant> = None;
    loop {
        let tap = match deadline {
            None => rx.recv().await,
            Some(d) => match tokio::time::timeout_at(d, rx.recv()).await {
                Ok(t) => t,
                Err(_) => {
                    rec.flush();
                    deadline = None;
                    continue;
                }
            },
        };
        let Some(tap) = tap else { break };
        let kind = match tap.kind {
            TapKind::Event(k) => k,
            TapKind::NotDecodable {
                client,
                server,
                reason,
            } => {
                let mut sink = Collect {
                    packets: vec![],
                    findings: vec![],
                    live: &mut live,
                };
                let t = last_time.max(tap.time_us);
                a.not_decodable(tap.conn, client, server, t, seq, &reason, &mut sink);
                for f in &sink.findings {
                    rec.batch.finding(cap, rec.meta.findings, f);
                    rec.meta.findings += 1;
                }
                all.extend(sink.findings);
                if deadline.is_none() {
                    deadline = Some(Instant::now() + FLUSH_INTERVAL);
                }
                continue;
            }
        };
        seq += 1;
        last_time = last_time.max(tap.time_us);
        let ev = Event {
            time_us: last_time,
            seq,
            conn: tap.conn,
            kind,
        };
        let mut sink = Collect {
            packets: vec![],
            findings: vec![],
            live: &mut live,
        };
        feed(&mut a, &ev, &mut sink);
        let (packets, findings) = (sink.packets, sink.findings);
        record(&mut rec, cap, &ev, &packets, &findings);
        all.extend(findings);
        if let Some(p) = tap.permit {
            rec.permits.push(p);
        }
        if rec.batch.data_bytes >= flush_bytes {
            rec.flush();
            deadline = None;
        } else if deadline.is_none() {
            deadline = Some(Instant::now() + FLUSH_INTERVAL);
        }
    }
    // Every connection is closed; what the engine still holds are run-level findings.
    let mut sink = Collect {
        packets: vec![],
        findings: vec![],
        live: &mut live,
    };
    a.finish(&mut sink);
    for f in &sink.findings {
        rec.batch.finding(cap, rec.meta.findings, f);
        rec.meta.findings += 1;
    }
    all.extend(sink.findings);
    rec.meta.ended_us = Some(clock.now_us());
    rec.flush();
    let meta = rec.meta.clone();
    let store = rec.close();
    let report = Report::build(
        vec![format!(
            "proxy {} → {}{}",
            meta.listen,
            meta.upstream,
            if store.is_some() {
                format!(", capture {}", cap)
            } else {
                String::new()
            }
        )],
        a.stats(),
        a.engine().exercised(),
        &rules,
        all,
    );
    Ok((report, store, meta))
}

fn record(
    rec: &mut Recorder,
    cap: u64,
    ev: &Event,
    packets: &[PacketRecord],
    findings: &[Finding],
) {
    let m = &mut rec.meta;
    m.chunks += 1;
    m.packets += packets.len() as u64;
    match &ev.kind {
        EventKind::Open { client, server } => {
            m.connections += 1;
            let c = ConnMeta {
                conn: ev.conn,
                client: client.to_string(),
                server: server.to_string(),
                opened_us: ev.time_us,
                ended_us: None,
                end: None,
            };
            rec.batch.conn(cap, &c);
            rec.conns.insert(ev.conn, c);
        }
        EventKind::Data { bytes, .. } => m.bytes += bytes.len() as u64,
        EventKind::Fin { .. } => {}
        EventKind::End { how } => {
            if let Some(mut c) = rec.conns.remove(&ev.conn) {
                c.ended_us = Some(ev.time_us);
                c.end = Some(how.clone());
                rec.batch.conn(cap, &c);
            }
        }
    }
    rec.batch.event(cap, ev);
    for (i, p) in packets.iter().enumerate() {
        rec.batch.packet(cap, ev.seq, i as u32, p);
    }
    for f in findings {
        rec.batch.finding(cap, rec.meta.findings, f);
        rec.meta.findings += 1;
    }
}
