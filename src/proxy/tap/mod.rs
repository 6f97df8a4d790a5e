//! The analysis and recording task: one per proxy, on its own thread, off the
//! forwarding path. It numbers the chunks (`seq`), feeds them to the shared
//! [`Framer`] through [`crate::store::replay::input`] (the path `analyze --capture`
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
//!
//! Chunks reach this thread through a [`Handoff`]: a bounded queue (backpressure:
//! lossless) that the thread empties all at once. It is woken by a sender only
//! when it sleeps with nothing queued, or when the queue passes a quarter of its
//! capacity (or a quarter of the flush size in bytes, at most 64 KiB); otherwise
//! it collects what queued during [`TICK`]. Under load that is one wake-up per
//! tick, not one per chunk: fewer context switches, longer runs of analysis.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, Notify, OwnedSemaphorePermit};

use super::judge::{self, ConnNote, Item, JudgeHandle, View};
use super::{Clock, KeepAlives, FLUSH_BYTES, FLUSH_INTERVAL, TAP_QUEUE};
use crate::finding::{ConnId, Finding, Side};
use crate::mqtt::Packet;
use crate::pipeline::{At, Framer, Input, PacketEvent, Settings, Sink, Staged};
use crate::proxy::live::LiveView;
use crate::report::Report;
use crate::rules::RuleSet;
use crate::store::replay::input;
use crate::store::{CaptureMeta, ConnMeta, Event, EventKind, Store, StoreError, WriteBatch};

/// How long the analysis thread lets chunks queue before it takes them, unless
/// the queue fills up meanwhile or it had nothing to do. (10 ms rather than 2: on
/// 2 shared cores, `bench/proxy.sh`'s QoS 1 run went from 0.66 to 0.69 of direct
/// and QoS 0 from 0.87 to 0.90, medians of 11 turns each; `perf` had shown a
/// quarter of this thread's samples in futex waits and context switches.)
pub const TICK: Duration = Duration::from_millis(10);

mod writer;
use writer::Writer;

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

impl Tap {
    /// Chunk bytes carried.
    fn bytes(&self) -> usize {
        match &self.kind {
            TapKind::Event(EventKind::Data { bytes, .. } | EventKind::Opaque { bytes, .. }) => {
                bytes.len()
            }
            _ => 0,
        }
    }
}

pub(crate) type Outcome = Result<(Report, Option<Store>, CaptureMeta), StoreError>;

/// How the analysis thread waits.
#[derive(Clone, Copy, PartialEq)]
enum Waiting {
    /// Not waiting (working, or about to look at the queue again).
    No,
    /// Collecting for a tick: wake it only when the queue passes the thresholds.
    Tick,
    /// Nothing queued for a whole tick: wake it for the first chunk.
    Idle,
}

struct Queue {
    items: Vec<Tap>,
    bytes: usize,
    waiting: Waiting,
    /// A sender waits for room.
    blocked: bool,
    /// The sender is gone: take what is left and end.
    closed: bool,
    /// The analysis thread is gone (it panicked): events are dropped, forwarding
    /// goes on.
    dead: bool,
}

/// The bounded queue from the forwarding tasks to the analysis thread.
pub(crate) struct Handoff {
    q: Mutex<Queue>,
    wake: Condvar,
    room: Notify,
    wake_items: usize,
    wake_bytes: usize,
}

/// The forwarding side of a [`Handoff`] (one per proxy, shared); dropping it closes
/// the queue.
pub(crate) struct TapSender(Arc<Handoff>);

/// Sets up the queue: `flush_bytes` as for [`spawn`].
pub(crate) fn handoff(flush_bytes: usize) -> (TapSender, Arc<Handoff>) {
    let h = Arc::new(Handoff {
        q: Mutex::new(Queue {
            items: Vec::with_capacity(TAP_QUEUE),
            bytes: 0,
            waiting: Waiting::No,
            blocked: false,
            closed: false,
            dead: false,
        }),
        wake: Condvar::new(),
        room: Notify::new(),
        wake_items: (TAP_QUEUE / 4).max(1),
        wake_bytes: (flush_bytes / 4).clamp(1, 64 << 10),
    });
    (TapSender(h.clone()), h)
}

impl Handoff {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.q.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `tap` if there is room (else hands it back), waking the analysis
    /// thread when it should be.
    fn try_push(&self, tap: Tap, blocked: bool) -> Result<(), Tap> {
        let mut q = self.lock();
        if q.dead {
            return Ok(());
        }
        if q.items.len() >= TAP_QUEUE {
            q.blocked |= blocked;
            return Err(tap);
        }
        q.bytes += tap.bytes();
        q.items.push(tap);
        let wake = match q.waiting {
            Waiting::No => false,
            Waiting::Idle => true,
            Waiting::Tick => q.items.len() >= self.wake_items || q.bytes >= self.wake_bytes,
        };
        if wake {
            q.waiting = Waiting::No;
            drop(q);
            self.wake.notify_one();
        }
        Ok(())
    }
}

impl TapSender {
    /// Queues `tap`; waits while the queue is full (lossless recording).
    pub(crate) async fn send(&self, tap: Tap) {
        let mut tap = match self.0.try_push(tap, true) {
            Ok(()) => return,
            Err(t) => t,
        };
        loop {
            let room = self.0.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            // Again, now that a wake-up for room cannot be missed.
            tap = match self.0.try_push(tap, true) {
                Ok(()) => return,
                Err(t) => t,
            };
            room.await;
        }
    }
}

impl Drop for TapSender {
    fn drop(&mut self) {
        self.0.lock().closed = true;
        self.0.wake.notify_one();
    }
}

/// Marks the queue dead when the analysis thread ends, however it ends.
struct Consumer(Arc<Handoff>);

impl Drop for Consumer {
    fn drop(&mut self) {
        let mut q = self.0.lock();
        q.dead = true;
        q.items.clear();
        drop(q);
        self.0.room.notify_waiters();
    }
}

/// What [`Handoff::take`] found.
enum Took {
    /// `out` holds the queued events, in order.
    Items,
    /// The deadline passed with nothing to take.
    Deadline,
    /// The sender is gone and everything was taken.
    Closed,
}

impl Handoff {
    /// Waits for events (see the module docs) and swaps them into the empty `out`.
    /// `tick_until`: when the current tick ends; set anew when events are taken.
    fn take(
        &self,
        out: &mut Vec<Tap>,
        tick_until: &mut Instant,
        deadline: Option<Instant>,
    ) -> Took {
        let mut q = self.lock();
        loop {
            let now = Instant::now();
            let full = q.items.len() >= self.wake_items || q.bytes >= self.wake_bytes;
            if !q.items.is_empty() && (full || q.closed || now >= *tick_until) {
                std::mem::swap(out, &mut q.items);
                q.bytes = 0;
                q.waiting = Waiting::No;
                let blocked = std::mem::take(&mut q.blocked);
                drop(q);
                if blocked {
                    self.room.notify_waiters();
                }
                *tick_until = now + TICK;
                return Took::Items;
            }
            if q.closed {
                return Took::Closed;
            }
            if deadline.is_some_and(|d| now >= d) {
                q.waiting = Waiting::No;
                return Took::Deadline;
            }
            let (mode, until) = if now < *tick_until {
                (Waiting::Tick, Some(*tick_until))
            } else {
                (Waiting::Idle, None)
            };
            let until = match (until, deadline) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            q.waiting = mode;
            q = match until {
                None => self.wake.wait(q).unwrap_or_else(|e| e.into_inner()),
                Some(u) => {
                    self.wake
                        .wait_timeout(q, u.saturating_duration_since(now))
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
    }
}

/// The recorder's analyzer output for one event, straight into the batch: packets
/// encoded in place (no record built, no allocation per packet). Messages and
/// findings are staged for the judge ([`super::judge`]), not seen here.
struct Collect<'a> {
    /// None: packets are not recorded (not-decodable notices, the end of the run:
    /// no event of their own).
    batch: Option<&'a mut WriteBatch>,
    cap: u64,
    seq: u64,
    packets: u64,
    /// CONNECTs seen, for the console.
    notes: &'a mut Vec<ConnNote>,
    /// Where the relays learn each connection's MQTT keep-alive (idle timeout).
    keep_alives: &'a KeepAlives,
}

impl Sink for Collect<'_> {
    fn packet(&mut self, p: &PacketEvent<'_>) {
        if let Some(b) = &mut self.batch {
            b.packet_event(self.cap, self.seq, p);
            self.packets += 1;
        }
        if let (Packet::Connect(c), Side::Client) = (p.mqtt, p.side) {
            self.keep_alives.set(p.conn, c.keep_alive);
            self.notes.push(ConnNote::Connect {
                conn: p.conn,
                time_us: p.time_us,
                client_id: c.client_id.clone(),
                version: c.version.as_str(),
                keep_alive: c.keep_alive,
            });
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn spawn(
    rx: Arc<Handoff>,
    rules: Arc<RuleSet>,
    max_packet: usize,
    flush_bytes: usize,
    store: Option<Store>,
    meta: CaptureMeta,
    clock: Clock,
    live: Box<dyn judge::Live>,
    view: View,
    keep_alives: KeepAlives,
    live_view: Option<Arc<LiveView>>,
    judge_cpu: Option<f64>,
) -> oneshot::Receiver<Outcome> {
    let (done, result) = oneshot::channel();
    std::thread::Builder::new()
        .name("edgetap-tap".into())
        .spawn(move || {
            background_priority();
            let _consumer = Consumer(rx.clone());
            let judge = judge::spawn(
                rules.clone(),
                live,
                view,
                live_view.clone(),
                store.is_some(),
                judge_cpu,
            );
            let out = analyze(
                rx,
                rules,
                max_packet,
                flush_bytes,
                store,
                meta,
                clock,
                judge,
                &keep_alives,
                live_view.as_deref(),
            );
            let _ = done.send(out);
        })
        .expect("the analysis thread starts");
    result
}

/// The store batch size for a per-connection budget of `max_buffered`.
pub(crate) fn flush_bytes(max_buffered: usize) -> usize {
    FLUSH_BYTES.min((max_buffered / 4).max(1))
}

/// Lowers the calling thread's scheduling priority (nice +10). Analysis and
/// recording are throughput work with backpressure; on a busy machine the
/// forwarding threads should win every wakeup against them, so that a batch being
/// encoded and written does not add latency to forwarded packets.
fn background_priority() {
    set_nice(10);
}

/// The judge's priority: Linux's SCHED_IDLE (it runs only on CPU time nothing
/// else wants), else nice +19. It may fall behind by design (it skips and the
/// report re-judges from the store), the recorder may not (the forwarding waits for
/// it), so on a machine short of cores the judge yields to the recorder, the broker
/// and the devices, not the other way round. (A profile of a conforming QoS 0 run on
/// 2 cores at nice +19 still showed the judge with 48 % of edgetap's CPU time.)
pub(crate) fn judge_priority() {
    #[cfg(target_os = "linux")]
    {
        #[repr(C)]
        struct SchedParam {
            sched_priority: i32,
        }
        extern "C" {
            fn sched_setscheduler(pid: i32, policy: i32, param: *const SchedParam) -> i32;
        }
        const SCHED_IDLE: i32 = 5;
        let p = SchedParam { sched_priority: 0 };
        // SAFETY: pid 0 is the calling thread; `p` outlives the call.
        if unsafe { sched_setscheduler(0, SCHED_IDLE, &p) } == 0 {
            return;
        }
    }
    set_nice(19);
}

fn set_nice(prio: i32) {
    extern "C" {
        fn setpriority(which: i32, who: u32, prio: i32) -> i32;
    }
    const PRIO_PROCESS: i32 = 0;
    // On Linux, who = 0 with PRIO_PROCESS is the calling thread only. Failure is
    // harmless: the thread keeps the normal priority.
    #[cfg(target_os = "linux")]
    unsafe {
        setpriority(PRIO_PROCESS, 0, prio);
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
    /// they are on disk, or once writing them failed (counted as not recorded).
    /// The credentials among its bytes are overwritten already ([`WriteBatch`]).
    fn flush(&mut self) {
        let batch = self.batch.take();
        let permits = std::mem::take(&mut self.permits);
        if let Some(w) = &self.writer {
            // Fails only if the writer thread died; its permits are released then.
            let _ = w.jobs.send((batch, self.meta.clone(), permits));
        }
    }

    /// Waits for every batch to be written; hands back the store.
    fn close(self) -> Option<Store> {
        let w = self.writer?;
        drop(w.jobs);
        w.done.join().ok().flatten()
    }
}

#[allow(clippy::too_many_arguments)]
fn analyze(
    rx: Arc<Handoff>,
    rules: Arc<RuleSet>,
    max_packet: usize,
    flush_bytes: usize,
    store: Option<Store>,
    meta: CaptureMeta,
    clock: Clock,
    mut judge: JudgeHandle,
    keep_alives: &KeepAlives,
    live_view: Option<&LiveView>,
) -> Outcome {
    // Frames and decodes (the packet records); the judge parses and judges.
    let mut a = Framer::leaving_payloads(rules.clone(), Settings { max_packet });
    let cap = meta.id;
    if let Some(v) = live_view {
        v.started(&meta);
    }
    let keep_secrets = store.as_ref().is_some_and(|s| s.keeps_secrets());
    let mut rec = Recorder {
        writer: store.map(Writer::spawn),
        meta,
        batch: WriteBatch::with_secrets(keep_secrets),
        permits: vec![],
        conns: HashMap::new(),
    };
    let mut staged: Vec<Staged> = vec![];
    let mut notes: Vec<ConnNote> = vec![];
    let mut judged: Vec<Finding> = vec![];
    let mut seq = 0u64;
    // Recorded times never go back: two connections' reads can reach this task in
    // the other order than their timestamps; the later one is recorded at the
    // earlier's time, so the store's order (time, seq) is the order analysed here.
    let mut last_time = i64::MIN;
    let mut deadline: Option<Instant> = None;
    let mut taps: Vec<Tap> = Vec::with_capacity(TAP_QUEUE);
    let mut tick_until = Instant::now();
    loop {
        match rx.take(&mut taps, &mut tick_until, deadline) {
            Took::Items => {}
            Took::Deadline => {
                if let Some(v) = live_view {
                    v.recorded(&a, rec.meta.bytes, true);
                }
                judge.take_findings(&mut judged);
                store_findings(&mut rec, cap, &mut judged);
                if !rec.batch.is_empty() {
                    rec.flush();
                }
                // The judge's findings come after the events: keep collecting them.
                deadline = judge.busy().then(|| Instant::now() + FLUSH_INTERVAL);
                continue;
            }
            Took::Closed => break,
        }
        if let Some(v) = live_view {
            v.recorded(&a, rec.meta.bytes, false);
        }
        for tap in taps.drain(..) {
            let kind = match tap.kind {
                TapKind::Event(k) => k,
                TapKind::NotDecodable {
                    client,
                    server,
                    reason,
                } => {
                    let mut sink = Collect {
                        batch: None,
                        cap,
                        seq,
                        packets: 0,
                        notes: &mut notes,
                        keep_alives,
                    };
                    let t = last_time.max(tap.time_us);
                    let reason = reason.as_str();
                    let input = Input::NotDecodable {
                        client,
                        server,
                        reason,
                    };
                    a.push(At::new(tap.conn, t, seq), input, &mut sink);
                    a.take_staged(&mut staged);
                    judge.send(t, staged.drain(..).map(Item::Staged));
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
            // The event first: its packets are encoded right after it.
            record(&mut rec, cap, &ev);
            // The live view numbers by the export's frames, as the final report.
            if let Some(v) = live_view {
                v.event(&ev);
            }
            let mut sink = Collect {
                batch: Some(&mut rec.batch),
                cap,
                seq,
                packets: 0,
                notes: &mut notes,
                keep_alives,
            };
            if let Some((at, input)) = input(&ev) {
                a.push(at, input, &mut sink);
            }
            rec.meta.packets += sink.packets;
            a.take_staged(&mut staged);
            // What the console says of the connection, in order with its findings.
            let (before, after) = match &ev.kind {
                EventKind::Open { client, server } => (
                    Some(ConnNote::Open {
                        conn: ev.conn,
                        time_us: ev.time_us,
                        client: *client,
                        server: *server,
                    }),
                    None,
                ),
                EventKind::End { how } => (
                    None,
                    Some(ConnNote::Closed {
                        conn: ev.conn,
                        time_us: ev.time_us,
                        how: how.clone(),
                    }),
                ),
                _ => (None, None),
            };
            if before.is_some() || after.is_some() || !notes.is_empty() || !staged.is_empty() {
                judge.send(
                    ev.time_us,
                    before
                        .into_iter()
                        .chain(notes.drain(..))
                        .map(Item::Note)
                        .chain(staged.drain(..).map(Item::Staged))
                        .chain(after.into_iter().map(Item::Note)),
                );
            }
            if let Some(p) = tap.permit {
                rec.permits.push(p);
            }
            if rec.batch.data_bytes >= flush_bytes {
                judge.take_findings(&mut judged);
                store_findings(&mut rec, cap, &mut judged);
                rec.flush();
                // Findings of this batch's messages are still being judged: a
                // deadline collects them even if no more traffic comes.
                deadline = Some(Instant::now() + FLUSH_INTERVAL);
            } else if deadline.is_none() {
                deadline = Some(Instant::now() + FLUSH_INTERVAL);
            }
        }
    }
    // Every connection is closed; what the engine still holds are run-level findings.
    a.finish();
    a.take_staged(&mut staged);
    judge.send(last_time, staged.drain(..).map(Item::Staged));
    judge.take_findings(&mut judged);
    let (summary, all, mut rest, skipped) = judge.finish();
    judged.append(&mut rest);
    store_findings(&mut rec, cap, &mut judged);
    rec.meta.ended_us = Some(clock.now_us());
    if let Some(v) = live_view {
        v.recorded(&a, rec.meta.bytes, true);
        v.stopped();
    }
    rec.flush();
    let mut meta = rec.meta.clone();
    let store = rec.close();
    meta.not_recorded = store.as_ref().and_then(|s| s.not_recorded(cap));
    // Packets noted where they were decoded (here), messages where judged: both.
    let exercised = summary.coverage;
    // What lists every finding when the report keeps only the first ones.
    let each = |store: Option<&Store>| match store {
        Some(s) => format!(
            "`edgetap analyze --capture {cap} --store {} --each` lists every one",
            s.dir().display()
        ),
        None => "run the proxy with --store to list every one (`edgetap analyze --capture \
                 ID --each`)"
            .into(),
    };
    if skipped > 0 {
        if let Some(s) = &store {
            // The whole capture, judged again from the store, is the report
            // (complete, as `analyze --capture` gives it).
            tracing::warn!(
                "{skipped} messages were not judged live (the judge fell behind); judging \
                 capture {cap} again from the store for the final report"
            );
            let settings = Settings { max_packet };
            let (report, groups) = crate::analyze::stored::rejudge_capture(
                s,
                cap,
                rules.clone(),
                settings,
                judge::MAX_KEPT_FINDINGS,
                || each(Some(s)),
            )?;
            // The stored groups get the whole capture's findings too, so that
            // `captures show` is as complete as this report.
            meta.findings = report.total_findings();
            if let Err(e) = s
                .replace_findings(cap, groups)
                .and_then(|()| s.put_meta(&meta))
            {
                tracing::warn!("capture {cap}: the re-judged findings were not stored: {e}");
            }
            return Ok((report, store, meta));
        }
        // Without a store the recorder waits for the judge: nothing is skipped.
        tracing::warn!(
            "{skipped} messages were not judged live and there is no store to judge them \
             again from: the final report covers the others only"
        );
    }
    let report = Report::collected(
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
        &exercised,
        &rules,
        all,
        || each(store.as_ref()),
    );
    Ok((report, store, meta))
}

/// The findings the judge has handed back, into the batch (stored with it).
fn store_findings(rec: &mut Recorder, cap: u64, buf: &mut Vec<Finding>) {
    for f in buf.drain(..) {
        rec.batch.finding(cap, rec.meta.findings, &f);
        rec.meta.findings += 1;
    }
    // The buffer goes back to the judge at the next take (they are swapped): a
    // burst's capacity is not kept on either side.
    buf.shrink_to(judge::KEEP_CAPACITY);
}

/// The event itself and what it changes in the capture's and connections' records.
fn record(rec: &mut Recorder, cap: u64, ev: &Event) {
    let m = &mut rec.meta;
    m.chunks += 1;
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
        EventKind::Data { bytes, .. } | EventKind::Opaque { bytes, .. } => {
            m.bytes += bytes.len() as u64
        }
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
}
