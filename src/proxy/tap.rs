//! The analysis and recording task: one per proxy, on its own thread, off the
//! forwarding path. It numbers the chunks (`seq`), feeds them to the shared
//! [`Analyzer`] through [`crate::store::replay::feed`] (the path `analyze --capture`
//! takes too), reports findings live, and writes the store in batches.
//!
//! A chunk's buffer permit is released only once its batch is on disk, so a
//! connection never has more than `max_buffered` bytes that are not yet durable.

use std::collections::HashMap;
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
    pub kind: EventKind,
    /// Held until the chunk is durable.
    pub permit: Option<OwnedSemaphorePermit>,
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

pub(crate) fn spawn(
    rx: mpsc::Receiver<Tap>,
    rules: Arc<RuleSet>,
    max_packet: usize,
    store: Option<Store>,
    meta: CaptureMeta,
    clock: Clock,
    live: LiveFindings,
) -> oneshot::Receiver<Outcome> {
    let (done, result) = oneshot::channel();
    std::thread::Builder::new()
        .name("edgetap-tap".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .expect("a current-thread runtime starts");
            let out = rt.block_on(analyze(rx, rules, max_packet, store, meta, clock, live));
            let _ = done.send(out);
        })
        .expect("the analysis thread starts");
    result
}

struct Recorder {
    store: Option<Store>,
    meta: CaptureMeta,
    batch: WriteBatch,
    permits: Vec<OwnedSemaphorePermit>,
    conns: HashMap<ConnId, ConnMeta>,
}

impl Recorder {
    /// Writes the batch and releases the permits of its chunks. A store that fails
    /// stops recording (logged) but never stops forwarding.
    fn flush(&mut self) {
        let batch = std::mem::take(&mut self.batch);
        if let Some(s) = &self.store {
            if let Err(e) = s.write(batch, &self.meta) {
                tracing::error!("store write failed, recording stops (forwarding goes on): {e}");
                self.store = None;
            }
        }
        self.permits.clear();
    }
}

async fn analyze(
    mut rx: mpsc::Receiver<Tap>,
    rules: Arc<RuleSet>,
    max_packet: usize,
    store: Option<Store>,
    meta: CaptureMeta,
    clock: Clock,
    mut live: LiveFindings,
) -> Outcome {
    let mut a = Analyzer::new(rules.clone(), Settings { max_packet });
    let cap = meta.id;
    let mut rec = Recorder {
        store,
        meta,
        batch: WriteBatch::default(),
        permits: vec![],
        conns: HashMap::new(),
    };
    let mut all: Vec<Finding> = vec![];
    let mut seq = 0u64;
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
        seq += 1;
        let ev = Event {
            time_us: tap.time_us,
            seq,
            conn: tap.conn,
            kind: tap.kind,
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
        if rec.batch.data_bytes >= FLUSH_BYTES {
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
    let report = Report::build(
        vec![format!(
            "proxy {} → {}{}",
            rec.meta.listen,
            rec.meta.upstream,
            if rec.store.is_some() {
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
    Ok((report, rec.store, rec.meta))
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
