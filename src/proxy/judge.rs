//! The judge: the rule engine of a running proxy, on a thread of its own, behind the
//! recorder ([`super::tap`]).
//!
//! Why a thread of its own (profile of the proxy before this split, `perf record -g`,
//! release build, 50,000 REP_SYS_STATUS of ~1 KB through `mosquitto_pub -l` at QoS 0,
//! each lacking most table 10 fields: about 5.5 error findings per message): the
//! proxy ran at 0.10 of direct. 40 % of the samples were the store writer putting one
//! sled record per finding occurrence (`Tree::apply_batch`, `Vec::clone`, malloc),
//! 26 % sled's I/O threads writing those 400 MB, 31 % the analysis thread, of which
//! about a third was printing one console line per finding to stdout and a tenth the
//! rule engine itself (`schema::object`, `engine::fill`, `Engine::on_message`). The
//! analysis thread waited for the writer; the tap queue filled; forwarding waited.
//! So: findings are printed in proportion (the console, [`super::console`]), and the
//! judging no longer sits between a read and its recording:
//!
//! - the recorder frames and decodes each chunk (the packet records the store needs)
//!   and writes it, then hands the decoded, unparsed messages ([`Staged`]) to the
//!   judge through an unbounded queue whose size it watches; it never waits for the
//!   judge, so the device never waits for it either;
//! - the judge parses the payloads, runs the rules, drives the live console and hands
//!   the findings back to the recorder, which stores them with its next batch;
//! - judging may run behind: [`View`] says by how many messages and how long (also
//!   printed by the console). Memory stays bounded: while the judge is more than
//!   [`MAX_BACKLOG_BYTES`] of messages behind (until it is back to half of that),
//!   the recorder stops handing it messages and counts them instead; the recording
//!   stays lossless and in order, the console says what was skipped, and the final
//!   report judges the whole capture again from the store (what `analyze --capture`
//!   does), so it is complete. Without a store to re-judge from, the recorder waits
//!   for the judge instead.
//!
//! After the split, the same run with finding records left out of the store showed
//! the judge's thread at 81 % of the samples: the rule engine building finding
//! messages (`engine::fill`, `format`), the grouping of findings (`group::pattern`,
//! now computed once per new wording, not per finding), JSON parsing, malloc. On a
//! machine where the judge gets a core of its own it keeps up with a
//! `mosquitto_pub -l` of finding-heavy reports; where it does not, it skips, as above.
//!
//! [`View`] is where the judge publishes its state (counts, lag, findings grouped by
//! edge, rule and field path) for whoever wants to show it while the proxy runs.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::finding::{ConnId, Finding, Severity};
use crate::pipeline::{Judge, Sink, Staged, Summary};
use crate::proxy::live::LiveView;
use crate::report::Collector;
use crate::rules::RuleSet;

use super::throttle::Throttle;

/// Bytes of messages (payload plus [`ITEM_OVERHEAD`] each) the judge may be behind
/// before the recorder stops handing it messages.
pub const MAX_BACKLOG_BYTES: usize = 16 << 20;
/// What a queued message costs besides its payload (its topic, the queue slot, the
/// read chunk it keeps alive), as measured: RSS grew about seven times the payload
/// bytes queued when only payloads were counted.
pub const ITEM_OVERHEAD: usize = 1024;
/// Findings the final report lists one by one (and the first of each later group);
/// it counts every finding in its group, so memory stays bounded however long the
/// proxy runs (`analyze --capture ID --each` lists them all).
pub const MAX_KEPT_FINDINGS: usize = crate::report::LISTED_FINDINGS;
/// Judged findings waiting for the recorder to store them before the judge waits.
pub const MAX_UNSTORED_FINDINGS: usize = 20_000;
/// How often the judge wakes with nothing to do (console summaries, the view).
pub const IDLE_TICK: Duration = Duration::from_millis(500);

/// What the console is told about connections, in stream order with the findings.
#[derive(Debug, Clone)]
pub enum ConnNote {
    Open {
        conn: ConnId,
        time_us: i64,
        client: SocketAddr,
        server: SocketAddr,
    },
    /// The client's CONNECT was decoded.
    Connect {
        conn: ConnId,
        time_us: i64,
        client_id: String,
        version: &'static str,
        keep_alive: u16,
    },
    Closed {
        conn: ConnId,
        time_us: i64,
        how: String,
    },
}

/// One item for the judge. (Nearly all are `Staged`: boxing it would cost an
/// allocation per message to save memory on the rare notes.)
#[allow(clippy::large_enum_variant)]
pub(crate) enum Item {
    Staged(Staged),
    Note(ConnNote),
    /// This many messages were not handed over (the judge was too far behind).
    Skipped(u64),
}

impl Item {
    fn bytes(&self) -> usize {
        match self {
            Item::Staged(Staged::Unparsed(u)) => u.payload_len() + ITEM_OVERHEAD,
            _ => 0,
        }
    }
}

/// Findings of one (edge, rule, field path): the key of the console and the view.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupKey {
    pub edge: Option<String>,
    pub rule: String,
    /// The finding's message with numbers and ids taken out
    /// ([`crate::report::group::pattern`]): names the field path.
    pub path: String,
}

impl GroupKey {
    pub fn of(f: &Finding) -> GroupKey {
        GroupKey {
            edge: f.edge_id.clone(),
            rule: f.rule.clone(),
            path: crate::report::group::pattern(&f.message),
        }
    }
}

/// One group of findings as the view shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GroupCount {
    pub edge: Option<String>,
    pub rule: String,
    pub path: String,
    pub severity: Severity,
    pub count: u64,
    pub first_us: Option<i64>,
    pub last_us: Option<i64>,
    /// The first finding of the group, as printed.
    pub example: String,
}

/// The judge's state, published after every batch it judges.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Snapshot {
    /// Messages judged so far.
    pub judged: u64,
    /// Messages (and other items) handed over but not judged yet.
    pub backlog: u64,
    pub backlog_bytes: u64,
    /// How far behind the judge is: now minus the time of the item it judged last,
    /// when items wait; 0 when it has caught up.
    pub lag_us: i64,
    /// Messages not judged live because the judge was too far behind (the final
    /// report re-judges the capture from the store).
    pub skipped: u64,
    pub findings: u64,
    pub errors: u64,
    pub warnings: u64,
    /// Grouped findings, in the order their first occurrence came.
    pub groups: Vec<GroupCount>,
    /// True once the proxy has stopped and the judge has judged everything.
    pub finished: bool,
}

/// Where the judge publishes its [`Snapshot`]; clone it before starting the proxy
/// and read it at any time.
#[derive(Debug, Clone, Default)]
pub struct View(Arc<Mutex<Snapshot>>);

impl View {
    pub fn snapshot(&self) -> Snapshot {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
    fn update(&self, f: impl FnOnce(&mut Snapshot)) {
        f(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// The live output of a proxy: findings as they are judged, connections opening and
/// closing, and a tick now and then (for summaries). A plain `FnMut(&Finding)` is a
/// `Live` that takes the findings only.
pub trait Live: Send {
    fn finding(&mut self, f: &Finding);
    /// The finding with its group: the index of its (edge, rule, field path) in
    /// [`Snapshot::groups`] (`None` past [`MAX_GROUPS`]) and whether it is the
    /// group's first. By default, [`Live::finding`].
    fn grouped(&mut self, f: &Finding, _group: Option<usize>, _first: bool) {
        self.finding(f)
    }
    fn connection(&mut self, _n: &ConnNote) {}
    /// Called after each batch and at least every [`IDLE_TICK`].
    fn tick(&mut self, _s: &Snapshot) {}
    /// Messages were not judged live: the judge had fallen too far behind.
    fn skipped(&mut self, _messages: u64) {}
    /// The proxy stopped; everything was judged.
    fn finish(&mut self, _s: &Snapshot) {}
}

impl<F: FnMut(&Finding) + Send> Live for F {
    fn finding(&mut self, f: &Finding) {
        self(f)
    }
}

struct Queue {
    items: VecDeque<(i64, Item)>,
    bytes: usize,
    closed: bool,
    /// Findings judged, waiting for the recorder to store them.
    judged: Vec<Finding>,
    /// The judge is judging a batch it took.
    working: bool,
}

struct Shared {
    q: Mutex<Queue>,
    /// Wakes the judge.
    work: Condvar,
    /// Wakes a recorder waiting for the backlog to shrink.
    room: Condvar,
    /// Wakes the judge waiting for the recorder to take its findings.
    taken: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.q.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The recorder's end of the judge.
pub(crate) struct JudgeHandle {
    sh: Arc<Shared>,
    thread: std::thread::JoinHandle<(Summary, Collector)>,
    /// Set once the recorder waited for the judge (logged once).
    waited: bool,
    /// Messages can be skipped when the judge falls behind: the final report then
    /// re-judges the capture from the store. Without a store the recorder waits.
    can_skip: bool,
    /// Skipping now; how many skipped in this stretch, and in all.
    skipping: bool,
    skipped_now: u64,
    skipped: u64,
}

/// `cpu_share`: the share of one core the judge may take (`--judge-cpu`), applied
/// only when `can_skip` (with a store: what it cannot judge live is judged again
/// from the store); `None` or without a store: no cap.
pub(crate) fn spawn(
    rules: Arc<RuleSet>,
    live: Box<dyn Live>,
    view: View,
    live_view: Option<Arc<LiveView>>,
    can_skip: bool,
    cpu_share: Option<f64>,
) -> JudgeHandle {
    let sh = Arc::new(Shared {
        q: Mutex::new(Queue {
            items: VecDeque::new(),
            bytes: 0,
            closed: false,
            judged: vec![],
            working: false,
        }),
        work: Condvar::new(),
        room: Condvar::new(),
        taken: Condvar::new(),
    });
    let s2 = sh.clone();
    let thread = std::thread::Builder::new()
        .name("edgetap-judge".into())
        .spawn(move || {
            super::tap::judge_priority();
            let throttle = cpu_share
                .filter(|s| can_skip && *s < 1.0)
                .map(Throttle::new);
            run(s2, rules, live, view, live_view, throttle)
        })
        .expect("the judge thread starts");
    JudgeHandle {
        sh,
        thread,
        waited: false,
        can_skip,
        skipping: false,
        skipped_now: 0,
        skipped: 0,
    }
}

impl JudgeHandle {
    /// Hands `items` (stamped with the time of the event they come from) to the
    /// judge. Never waits when messages can be skipped: while the judge is more
    /// than [`MAX_BACKLOG_BYTES`] behind (until it is back to half of that), the
    /// messages are not handed over but counted. Without a store, waits instead.
    pub(crate) fn send(&mut self, time_us: i64, items: impl Iterator<Item = Item>) {
        let mut q = self.sh.lock();
        let was_empty = q.items.is_empty();
        if self.skipping && q.bytes <= MAX_BACKLOG_BYTES / 2 {
            self.skipping = false;
            let n = std::mem::take(&mut self.skipped_now);
            q.items.push_back((time_us, Item::Skipped(n)));
        }
        if !self.skipping && q.bytes > MAX_BACKLOG_BYTES {
            if self.can_skip {
                self.skipping = true;
            } else {
                if !std::mem::replace(&mut self.waited, true) {
                    tracing::warn!(
                        "the judge is {} MiB of messages behind; without a store to \
                         re-judge from, recording (and with it forwarding) waits for it",
                        MAX_BACKLOG_BYTES >> 20
                    );
                }
                self.sh.work.notify_one();
                while q.bytes > MAX_BACKLOG_BYTES / 2 {
                    q = self.sh.room.wait(q).unwrap_or_else(|e| e.into_inner());
                }
            }
        }
        for it in items {
            if self.skipping && matches!(it, Item::Staged(Staged::Unparsed(_) | Staged::Message(_)))
            {
                self.skipped_now += 1;
                self.skipped += 1;
                continue;
            }
            q.bytes += it.bytes();
            q.items.push_back((time_us, it));
        }
        if was_empty && !q.items.is_empty() {
            self.sh.work.notify_one();
        }
    }

    /// The findings judged since the last call, for the store.
    pub(crate) fn take_findings(&self, out: &mut Vec<Finding>) {
        let mut q = self.sh.lock();
        if out.is_empty() {
            std::mem::swap(out, &mut q.judged);
        } else {
            out.append(&mut q.judged);
        }
        drop(q);
        self.sh.taken.notify_one();
    }

    /// Whether findings may still come from what was handed over so far: the
    /// recorder keeps looking for them.
    pub(crate) fn busy(&self) -> bool {
        let q = self.sh.lock();
        q.working || !q.items.is_empty() || !q.judged.is_empty()
    }

    /// No more items: waits until everything is judged; returns the summary (the
    /// report's counters and exercised clauses, framing's and judging's), the
    /// findings for the report (every one counted, the first [`MAX_KEPT_FINDINGS`]
    /// kept), the findings not yet taken for the store, and how many messages were
    /// skipped (not judged live).
    pub(crate) fn finish(self) -> (Summary, Collector, Vec<Finding>, u64) {
        {
            let mut q = self.sh.lock();
            if self.skipped_now > 0 {
                q.items.push_back((0, Item::Skipped(self.skipped_now)));
            }
            q.closed = true;
        }
        self.sh.work.notify_one();
        self.sh.taken.notify_one();
        let (summary, all) = self
            .thread
            .join()
            .unwrap_or_else(|_| panic!("the judge thread panicked"));
        let rest = std::mem::take(&mut self.sh.lock().judged);
        (summary, all, rest, self.skipped)
    }
}

/// Collects what the judge's engine emits; the live view (`--http`) sees each
/// message and finding too.
struct Out<'a> {
    found: &'a mut Vec<Finding>,
    live_view: Option<&'a LiveView>,
}

impl Sink for Out<'_> {
    fn message(&mut self, m: &crate::protocol::Message) {
        if let Some(v) = self.live_view {
            v.message(m);
        }
    }
    fn finding(&mut self, f: &Finding) {
        if let Some(v) = self.live_view {
            v.finding(f);
        }
        self.found.push(f.clone());
    }
}

/// The view's groups, kept in first-seen order. Most findings repeat one seen
/// before word for word: they are found by a hash of edge, rule and message, and the
/// message's pattern ([`GroupKey`]) is computed only for a new wording. (`watch`
/// groups its live findings with it too.)
#[derive(Default)]
pub struct Groups {
    exact: HashMap<u64, usize, ahash::RandomState>,
    index: HashMap<GroupKey, usize>,
    list: Vec<GroupCount>,
}

/// Distinct groups the view keeps; more count in the totals only.
pub const MAX_GROUPS: usize = 10_000;
/// Distinct wordings remembered (the cache is emptied when it is full).
const MAX_WORDINGS: usize = 100_000;

impl Groups {
    /// The groups so far, in the order their first finding came.
    pub fn list(&self) -> &[GroupCount] {
        &self.list
    }

    /// Counts `f` in its group: `(index, first of its group)`.
    pub fn add(&mut self, f: &Finding) -> (Option<usize>, bool) {
        let h =
            ahash::RandomState::with_seeds(5, 6, 7, 8).hash_one((&f.edge_id, &f.rule, &f.message));
        let (i, first) = match self.exact.get(&h) {
            Some(&i) => (i, false),
            None => {
                let key = GroupKey::of(f);
                let (i, first) = match self.index.get(&key) {
                    Some(&i) => (i, false),
                    None if self.list.len() < MAX_GROUPS => {
                        self.index.insert(key.clone(), self.list.len());
                        self.list.push(GroupCount {
                            edge: key.edge,
                            rule: key.rule,
                            path: key.path,
                            severity: f.severity,
                            count: 0,
                            first_us: f.time,
                            last_us: f.time,
                            example: crate::report::one_line(f),
                        });
                        (self.list.len() - 1, true)
                    }
                    None => return (None, false),
                };
                if self.exact.len() >= MAX_WORDINGS {
                    self.exact.clear();
                }
                self.exact.insert(h, i);
                (i, first)
            }
        };
        let g = &mut self.list[i];
        g.count += 1;
        if let Some(t) = f.time {
            g.first_us = Some(g.first_us.map_or(t, |x| x.min(t)));
            g.last_us = Some(g.last_us.map_or(t, |x| x.max(t)));
        }
        (Some(i), first)
    }
}

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

fn run(
    sh: Arc<Shared>,
    rules: Arc<RuleSet>,
    mut live: Box<dyn Live>,
    view: View,
    live_view: Option<Arc<LiveView>>,
    mut throttle: Option<Throttle>,
) -> (Summary, Collector) {
    let live_view = live_view.as_deref();
    let mut judge = Judge::new(rules);
    // For the final report: the first findings whole, every one counted.
    let mut all = Collector::bounded(MAX_KEPT_FINDINGS);
    let mut found: Vec<Finding> = vec![];
    let mut to_store: Vec<Finding> = vec![];
    let mut batch: VecDeque<(i64, Item)> = VecDeque::new();
    let mut groups = Groups::default();
    let mut snap = Snapshot::default();
    let mut last_tick = Instant::now();
    let mut last_trim = Instant::now();
    let mut had_backlog = false;
    loop {
        let closed = {
            let mut q = sh.lock();
            while q.items.is_empty() && !q.closed {
                let (g, t) = sh
                    .work
                    .wait_timeout(q, IDLE_TICK)
                    .unwrap_or_else(|e| e.into_inner());
                q = g;
                if t.timed_out() {
                    break;
                }
            }
            std::mem::swap(&mut batch, &mut q.items);
            q.bytes = 0;
            q.working = !batch.is_empty();
            sh.room.notify_all();
            q.closed && batch.is_empty()
        };
        if closed {
            break;
        }
        let queued = batch.len() as u64;
        had_backlog |= queued > TRIM_AFTER_BACKLOG;
        for (i, (time_us, item)) in batch.drain(..).enumerate() {
            if i % 4096 == 0 {
                snap.backlog = queued - i as u64;
                // (Saturating: the items of a run that saw no event carry i64::MIN.)
                snap.lag_us = now_us().saturating_sub(time_us).max(0);
            }
            if i % THROTTLE_EVERY == THROTTLE_EVERY - 1 {
                if let Some(t) = &mut throttle {
                    // Woken early only by the recorder closing the queue (or handing
                    // items to an empty queue: the throttle then looks again).
                    t.pause(&|d| {
                        let q = sh.lock();
                        q.closed || sh.work.wait_timeout(q, d).is_ok_and(|(q, _)| q.closed)
                    });
                }
            }
            match item {
                Item::Note(n) => live.connection(&n),
                Item::Skipped(n) => {
                    snap.skipped += n;
                    live.skipped(n);
                }
                Item::Staged(mut s) => {
                    if matches!(s, Staged::Message(_) | Staged::Unparsed(_)) {
                        snap.judged += 1;
                    }
                    judge.take(
                        &mut s,
                        &mut Out {
                            found: &mut found,
                            live_view,
                        },
                    );
                    for f in &found {
                        let (g, first) = groups.add(f);
                        live.grouped(f, g, first);
                        count(&mut snap, f);
                    }
                    keep(&mut all, &found);
                    to_store.append(&mut found);
                }
            }
        }
        {
            let mut q = sh.lock();
            q.judged.append(&mut to_store);
            q.working = false;
            // Findings the recorder has not stored yet are memory too: the judge waits
            // for it (and falls behind, which the recorder handles by skipping).
            while q.judged.len() > MAX_UNSTORED_FINDINGS && !q.closed {
                q = sh.taken.wait(q).unwrap_or_else(|e| e.into_inner());
            }
            snap.backlog = q.items.len() as u64;
            snap.backlog_bytes = q.bytes as u64;
        }
        if snap.backlog == 0 {
            snap.lag_us = 0;
            // Caught up after a backlog: what it held goes back to the system (the
            // proxy of bench/proxy.sh kept 137 MB after its throughput runs).
            if had_backlog && last_trim.elapsed() >= TRIM_EVERY {
                // A burst leaves the queues and buffers at their peak capacity (the
                // queue held up to MAX_BACKLOG_BYTES of items): free that first,
                // or there is little for the trim to hand back.
                release_burst(&mut batch, &mut found, &mut to_store, &mut sh.lock());
                super::trim_heap();
                last_trim = Instant::now();
                had_backlog = false;
            }
        }
        if last_tick.elapsed() >= IDLE_TICK || queued == 0 {
            snap.groups = groups.list.clone();
            view.update(|v| *v = snap.clone());
            if let Some(v) = live_view {
                v.judged(judge.exercised(), snap.lag_us, snap.skipped);
            }
            live.tick(&snap);
            last_tick = Instant::now();
        }
    }
    let summary = judge.finish(&mut Out {
        found: &mut found,
        live_view,
    });
    if let Some(v) = live_view {
        v.judged_all(&summary.coverage, snap.skipped);
    }
    for f in &found {
        let (g, first) = groups.add(f);
        live.grouped(f, g, first);
        count(&mut snap, f);
    }
    keep(&mut all, &found);
    sh.lock().judged.append(&mut found);
    snap.backlog = 0;
    snap.backlog_bytes = 0;
    snap.lag_us = 0;
    snap.finished = true;
    snap.groups = groups.list;
    view.update(|v| *v = snap.clone());
    live.finish(&snap);
    (summary, all)
}

/// Once the judge has taken a batch of more items than this (a backlog) and has
/// caught up, it returns free heap to the system, at most every [`TRIM_EVERY`].
const TRIM_AFTER_BACKLOG: u64 = 1_000;
const TRIM_EVERY: Duration = Duration::from_secs(10);
/// The capacity (in items or findings) the judge's queues keep after a burst.
pub(crate) const KEEP_CAPACITY: usize = 1024;

/// Shrinks the judge's queues and buffers to [`KEEP_CAPACITY`] once it has caught
/// up: after a burst they would stay at their peak size. (Measured with valgrind's
/// massif after 3 x 20,000 finding-heavy reports and a wait for the trim: the live
/// heap fell from 59 MB to 14 MB.)
fn release_burst(
    batch: &mut VecDeque<(i64, Item)>,
    found: &mut Vec<Finding>,
    to_store: &mut Vec<Finding>,
    q: &mut Queue,
) {
    batch.shrink_to(KEEP_CAPACITY);
    found.shrink_to(KEEP_CAPACITY);
    to_store.shrink_to(KEEP_CAPACITY);
    q.items.shrink_to(KEEP_CAPACITY);
    q.judged.shrink_to(KEEP_CAPACITY);
}

/// Items judged between two looks at the judge's CPU time (a system call).
const THROTTLE_EVERY: usize = 64;

/// Counts `found` for the final report, keeping the first [`MAX_KEPT_FINDINGS`].
fn keep(all: &mut Collector, found: &[Finding]) {
    for f in found {
        all.finding(f);
    }
}

fn count(s: &mut Snapshot, f: &Finding) {
    s.findings += 1;
    match f.severity {
        Severity::Error => s.errors += 1,
        Severity::Warning => s.warnings += 1,
        Severity::Info => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_s_capacity_is_given_back_once_caught_up() {
        let mut batch: VecDeque<(i64, Item)> = VecDeque::with_capacity(100_000);
        let mut found: Vec<Finding> = Vec::with_capacity(50_000);
        let mut to_store: Vec<Finding> = Vec::with_capacity(50_000);
        let mut q = Queue {
            items: VecDeque::with_capacity(100_000),
            bytes: 0,
            closed: false,
            working: false,
            judged: Vec::with_capacity(50_000),
        };
        release_burst(&mut batch, &mut found, &mut to_store, &mut q);
        for cap in [
            batch.capacity(),
            found.capacity(),
            to_store.capacity(),
            q.items.capacity(),
            q.judged.capacity(),
        ] {
            assert!(cap <= KEEP_CAPACITY + 64, "capacity {cap} kept");
        }
    }
}
