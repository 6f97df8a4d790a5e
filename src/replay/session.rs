//! The session driver: connects to the broker, plays our side of the recording,
//! awaits the counterpart's answers, runs the mutations, and builds the [`Outcome`].

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::SeedableRng;
use serde_json::{Map, Value};
use tokio::sync::mpsc::UnboundedReceiver;

use super::judge::{self, Exchange, Noise};
use super::mutate::{self, Draft, Expect, Mutation, Verdict};
use super::rewrite;
use super::source::{self, Recorded};
use super::{FindingBrief, MutationResult, Outcome, Pacing, ReplayError, ReplaySettings};
use crate::finding::{Finding, Severity, Side};
use crate::pipeline::{Analyzer, Settings};
use crate::protocol::{Actor, Class};
use crate::report::Collector;
use crate::rules::RuleSet;
use crate::sim::{Incoming, Link, LinkState};

/// [`super::run`], telling `ready` once subscribed (before the first message is played), so
/// that a counterpart started then misses nothing.
pub async fn run_ready(
    s: ReplaySettings,
    rules: Arc<RuleSet>,
    ready: Option<tokio::sync::oneshot::Sender<()>>,
) -> Result<Outcome, ReplayError> {
    let rec = source::load(&s.source, rules.clone(), &s.ports)?;
    let mut recorded_edges: Vec<String> = vec![];
    for m in &rec.messages {
        if !recorded_edges.contains(&m.topic.edge_id) {
            recorded_edges.push(m.topic.edge_id.clone());
        }
    }
    let recorded_edge = match &s.pick_edge {
        None => recorded_edges[0].clone(),
        Some(e) if recorded_edges.contains(e) => e.clone(),
        Some(e) => {
            return Err(ReplayError::Source(format!(
                "{}: no edge {e:?}; the capture holds {}",
                s.source.describe(),
                recorded_edges.join(", ")
            )))
        }
    };
    let msgs: Vec<Recorded> = rec
        .messages
        .iter()
        .filter(|m| m.topic.edge_id == recorded_edge)
        .cloned()
        .enumerate()
        .map(|(i, mut m)| {
            m.index = i;
            m
        })
        .collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(s.seed);
    let mut specs: Vec<(String, Option<Mutation>)> = vec![];
    for name in &s.mutations {
        let p = std::path::Path::new(name);
        if p.is_file() {
            for m in mutate::load_file(p)? {
                specs.push((m.name.clone(), Some(m)));
            }
        } else {
            let m = mutate::named(name, &msgs, s.role.actor(), &mut rng)?;
            specs.push((name.clone(), m));
        }
    }
    let live_edge = s.edge_id.clone().unwrap_or_else(|| recorded_edge.clone());
    let mut sess = Session::start(&s, rules, &recorded_edge, &live_edge, &msgs).await?;
    if let Some(r) = ready {
        let _ = r.send(());
    }
    // Mutations of our replies and reports happen in place, during the replay.
    let mut later = vec![];
    for (n, (name, spec)) in specs.into_iter().enumerate() {
        let target = spec.as_ref().and_then(|m| {
            let c = m.select.class.as_deref().unwrap_or("request");
            (c != "request")
                .then(|| mutate::pick(&msgs, &m.select, s.role.actor()))
                .flatten()
        });
        match (spec, target) {
            (Some(m), Some(t)) => {
                sess.inline_at.insert(t.index, sess.inline.len());
                sess.inline.push(InlineRun {
                    order: n,
                    target: format!("{} on {}", t.msg_type().unwrap_or("?"), t.topic_name),
                    spec: m,
                    mids: vec![],
                    skipped: None,
                });
            }
            (spec, _) => later.push((n, name, spec)),
        }
    }
    sess.replay().await?;
    let baseline_end = sess.findings.len();
    let mut results = vec![];
    if !sess.inline.is_empty() && !sess.check_lost() {
        sess.watch = Some(vec![]);
        sess.inline_probe = Some(sess.probe().await?);
        sess.watch = None;
    }
    for (n, name, spec) in later {
        let r = sess.mutation(&name, spec).await?;
        results.push((n, r));
    }
    if let Some(lost) = sess.lost.clone() {
        // What ran after the loss proves nothing about the device.
        for (_, r) in results
            .iter_mut()
            .filter(|(_, r)| r.verdict != "not applicable")
        {
            if r.probe.is_empty() || r.verdict == "fail" {
                r.verdict = "not applicable".into();
                r.skipped = Some(format!("not exercised: {lost}"));
                r.detail = format!("not exercised: {lost}");
            }
        }
        for run in sess.inline.iter_mut().filter(|r| r.skipped.is_none()) {
            if sess.inline_probe.is_none() {
                run.skipped = Some(format!("not exercised: {lost}"));
            }
        }
    }
    let mut outcome = sess.finish(baseline_end, results, &rec.findings).await?;
    outcome.recorded_edges = recorded_edges;
    Ok(outcome)
}

/// Who sent a live message.
fn sender(topic: &crate::protocol::Topic) -> Actor {
    topic.publisher
}

/// A reply seen while a mutation is watched: (mid, code, msg).
type Answered = (Option<u64>, Option<i64>, String);

/// A mutation of one of our replies or reports, made during the replay.
struct InlineRun {
    order: usize,
    target: String,
    spec: Mutation,
    /// Mids it concerns: the message sent, the request it answers, a job result.
    mids: Vec<u64>,
    /// Why the message it changes was never sent.
    skipped: Option<String>,
}

/// As platform: what became of the edge's own session start, its first recorded
/// request (EVENT_LINKUP in a whole session).
#[derive(Debug, Clone, PartialEq)]
enum EdgeStart {
    /// Not awaited yet.
    Pending,
    /// The edge sent it: the exchanges the edge starts are judged like the others.
    Seen,
    /// It did not come within `edge_wait`: the edge was already online, and the
    /// exchanges it starts by itself that never come are not exercised.
    Missed { msg_type: String },
}

/// A duration for a message: "10 s", "0.5 s".
fn secs(d: Duration) -> String {
    format!("{} s", (d.as_secs_f64() * 1000.0).round() / 1000.0)
}

/// Why an exchange the edge starts by itself (`msg_type`) was not exercised, when the
/// edge's first own request (`first`) did not come within `waited`.
pub(super) fn not_exercised_reason(msg_type: &str, first: &str, waited: Duration) -> String {
    let advice = "start the replay before the device powers on, or restart it";
    if msg_type == first {
        format!(
            "not exercised: the edge did not send {first} within {} — it was probably already online; {advice}",
            secs(waited)
        )
    } else {
        format!(
            "not exercised: the edge sends {msg_type} by itself, and it was already online when the replay began (no {first} within {}); {advice}",
            secs(waited)
        )
    }
}

/// Why the edge's own exchanges were not exercised when its first own request
/// (`first`) came, but only after the replay stopped waiting for it (`waited`).
fn late_start_reason(first: &str, waited: Duration) -> String {
    format!(
        "not exercised: the edge sent {first} only after the {} wait, when the replay had gone on without answering it; start the device sooner or wait longer (--edge-wait-ms)",
        secs(waited)
    )
}

struct Session<'a> {
    s: ReplaySettings,
    us: Actor,
    edge_start: EdgeStart,
    msgs: &'a [Recorded],
    link: Link,
    rx: UnboundedReceiver<Incoming>,
    rw: rewrite::Rewriter,
    noise: Noise,
    analyzer: Analyzer,
    findings: Vec<Finding>,
    /// The live session's message sequence, for the HTML record.
    chart: crate::report::timeline::Timeline,
    frames: Vec<(i64, Vec<u8>, bool)>,
    packet: u64,
    exchanges: Vec<Exchange>,
    /// Recorded message index → exchange of which it is the request.
    ex_of_request: HashMap<usize, usize>,
    /// Recorded message index of each exchange's reply and job result.
    ex_reply: HashMap<usize, usize>,
    ex_job: HashMap<usize, usize>,
    /// Recorded message indices matched by a live message.
    seen: HashSet<usize>,
    /// The counterpart published something during the replay (it is online).
    heard: bool,
    /// Live mid of a request we sent → exchange.
    sent: HashMap<u64, usize>,
    /// Live mid of each counterpart request matched to an exchange.
    their_mid: HashMap<usize, u64>,
    /// Live replies during a mutation: (mid, code, msg).
    watch: Option<Vec<Answered>>,
    /// Mids of mutated messages and probes, not part of any exchange.
    mutation_mids: HashSet<u64>,
    /// Live job ids started by mutations: their results belong to no exchange.
    mutation_jobs: HashSet<u64>,
    /// Job results that came for those jobs: the counterpart acted.
    mutation_results: Vec<u64>,
    /// Replies that answer nothing we sent, normalized.
    orphans: Vec<Value>,
    /// Requests of the counterpart beyond the recording's (a device that restarted
    /// and sent EVENT_LINKUP again): when and what, for the report.
    unexpected: Vec<String>,
    inline: Vec<InlineRun>,
    /// Recorded message index → its in-place mutation.
    inline_at: HashMap<usize, usize>,
    /// The liveness probe after the in-place mutations.
    inline_probe: Option<(bool, String)>,
    /// Recorded messages of ours already sent out of order.
    skip: HashSet<usize>,
    /// Recorded answers of the counterpart waited for in vain (not waited for again).
    gave_up: HashSet<usize>,
    /// The broker connection, to learn when it is lost.
    state: tokio::sync::watch::Receiver<LinkState>,
    /// When the replay began.
    began: Instant,
    /// Why and when the broker connection was lost: nothing after it is the device's.
    lost: Option<String>,
    progress: Option<indicatif::ProgressBar>,
}

impl<'a> Session<'a> {
    async fn start(
        s: &ReplaySettings,
        rules: Arc<RuleSet>,
        recorded_edge: &str,
        live_edge: &str,
        msgs: &'a [Recorded],
    ) -> Result<Session<'a>, ReplayError> {
        let us = s.role.actor();
        let roles: &[&str] = match us {
            Actor::Platform => &["request", "reply", "data"],
            Actor::Edge => &["command", "response"],
        };
        let filters: Vec<String> = roles
            .iter()
            .map(|r| crate::sim::topic(live_edge, "+", r))
            .collect();
        let id = format!(
            "edgetap-replay-{}-{live_edge}-{}",
            s.role.as_str(),
            std::process::id()
        );
        // A broker that refuses, closes or ignores the connection is an error with its
        // cause at once (exit code 2), never a device that does not answer.
        let (link, rx) = Link::connect_with(
            &s.broker,
            &id,
            s.protocol,
            &filters,
            Duration::from_secs(10),
            true,
        )
        .await?;
        let state = link.state();
        let noise = Noise::new(&s.noise);
        let mut exchanges = vec![];
        let (mut ex_of_request, mut ex_reply, mut ex_job) =
            (HashMap::new(), HashMap::new(), HashMap::new());
        for (i, x) in judge::recorded_exchanges(msgs, us, &noise) {
            let n = exchanges.len();
            ex_of_request.insert(i, n);
            let req = &msgs[i];
            if let Some(mid) = req.mid() {
                if let Some(r) = msgs[i + 1..].iter().find(|r| {
                    r.class() == Class::Reply
                        && r.mid() == Some(mid)
                        && r.topic.channel == req.topic.channel
                }) {
                    ex_reply.insert(r.index, n);
                }
            }
            if let (Some(j), true) = (req.job_id(), x.recorded.job_result.is_some()) {
                if let Some(r) = msgs[i + 1..]
                    .iter()
                    .find(|r| r.msg_type() == Some("REP_JOB_RESULT") && r.job_id() == Some(j))
                {
                    ex_job.insert(r.index, n);
                }
            }
            exchanges.push(x);
        }
        let mut analyzer = Analyzer::new(rules, Settings::default());
        let mut c = Collector::charting(true);
        let t = crate::sim::now_us();
        let connect = crate::mqtt::encode::connect(&id);
        analyzer.open(1, None, None, false);
        analyzer.data(1, Side::Client, t, 1, &connect, &mut c);
        let mut rw = rewrite::Rewriter::new(recorded_edge, live_edge, s.fresh_jobs);
        if us == Actor::Edge {
            // The platform picks the job ids; they are learnt from its commands.
            rw.fresh_jobs = false;
        }
        Ok(Session {
            s: s.clone(),
            us,
            edge_start: EdgeStart::Pending,
            msgs,
            link,
            rx,
            rw,
            noise,
            analyzer,
            findings: c.findings,
            chart: c.timeline.unwrap_or_default(),
            frames: vec![(t, connect, true)],
            packet: 1,
            exchanges,
            ex_of_request,
            ex_reply,
            ex_job,
            seen: HashSet::new(),
            heard: false,
            sent: HashMap::new(),
            their_mid: HashMap::new(),
            watch: None,
            mutation_mids: HashSet::new(),
            mutation_jobs: HashSet::new(),
            mutation_results: vec![],
            orphans: vec![],
            unexpected: vec![],
            inline: vec![],
            inline_at: HashMap::new(),
            inline_probe: None,
            skip: HashSet::new(),
            gave_up: HashSet::new(),
            state,
            began: Instant::now(),
            lost: None,
            progress: progress_bar(
                s.progress,
                msgs.iter().filter(|m| m.publisher() == us).count(),
            ),
        })
    }

    /// The sink of the live session: its findings, and its message sequence.
    fn collector(&mut self) -> Collector {
        Collector::charting_into(std::mem::take(&mut self.chart))
    }

    /// True once the broker connection is lost; the first loss is described in
    /// `lost` (cause, when, how far into the replay).
    fn check_lost(&mut self) -> bool {
        if self.lost.is_none() {
            if let LinkState::Down { cause, at_us, .. } = &*self.state.borrow() {
                self.lost = Some(format!(
                    "the connection to the broker {} was lost {} into the replay, at {}: {cause}",
                    self.s.broker,
                    secs(self.began.elapsed()),
                    rfc3339(*at_us)
                ));
            }
        }
        self.lost.is_some()
    }

    /// Every protocol message of the live session goes to the rule engine, in the
    /// order this client saw it (like the sims' tap: one broker → client stream).
    fn judge_live(&mut self, topic: &str, payload: &[u8]) {
        self.packet += 1;
        let t = crate::sim::now_us();
        let b = crate::mqtt::encode::publish(topic, payload);
        let mut c = self.collector();
        self.analyzer
            .data(1, Side::Server, t, self.packet, &b, &mut c);
        self.chart = c.timeline.unwrap_or_default();
        self.findings.extend(c.findings);
        self.frames.push((t, b, false));
    }

    /// Sends one message, unless the broker connection is lost (then nothing more
    /// is sent: the replay stops and says so).
    async fn publish(&mut self, topic: &str, payload: Vec<u8>) -> Result<(), ReplayError> {
        if self.check_lost() {
            return Ok(());
        }
        self.judge_live(topic, &payload);
        self.link.publish(topic, payload).await?;
        Ok(())
    }

    /// Handles what arrived, until `done` holds or `deadline` passes; true when done.
    async fn wait_until(
        &mut self,
        deadline: Instant,
        done: &(dyn Fn(&Session<'_>) -> bool + Sync),
    ) -> bool {
        loop {
            while let Ok(m) = self.rx.try_recv() {
                self.incoming(m);
            }
            if done(self) {
                return true;
            }
            // Nothing more can come once the broker connection is lost.
            if self.check_lost() {
                return false;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            // Waits on `self.state` itself: `changed` marks the new state seen. (A
            // clone made here kept the version of the first state, so its `changed`
            // was ready at once after any change, and this loop spun a core until
            // the deadline. A closed link, `Err`, is seen by `check_lost`.)
            let state = &mut self.state;
            let got = tokio::select! {
                got = tokio::time::timeout(left, self.rx.recv()) => Some(got),
                changed = state.changed() => {
                    if changed.is_err() {
                        // The link's task ended: nothing will change again; wait for
                        // messages alone.
                        Some(tokio::time::timeout(left, self.rx.recv()).await)
                    } else {
                        None
                    }
                }
            };
            match got {
                Some(Ok(Some(m))) => self.incoming(m),
                Some(Ok(None) | Err(_)) => return done(self),
                None => {}
            }
        }
    }

    fn incoming(&mut self, m: Incoming) {
        self.judge_live(&m.topic, &m.payload);
        let Some(topic) = crate::protocol::parse_topic(&m.topic) else {
            return;
        };
        if sender(&topic) == self.us {
            return;
        }
        self.heard = true;
        let json = match serde_json::from_slice::<Value>(&m.payload) {
            Ok(Value::Object(o)) => o,
            _ => {
                if let Some(w) = &mut self.watch {
                    w.push((None, None, "a payload that is no JSON object".into()));
                }
                return;
            }
        };
        let mid = json.get("mid").and_then(crate::protocol::as_u64_lenient);
        let t = json
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        match topic.class {
            Class::Reply => {
                if let Some(w) = &mut self.watch {
                    if mid.is_some_and(|m| self.mutation_mids.contains(&m)) || mid.is_none() {
                        let code = json.get("code").and_then(crate::protocol::as_i64_lenient);
                        let msg = json.get("msg").and_then(Value::as_str).unwrap_or("");
                        w.push((mid, code, msg.to_string()));
                        return;
                    }
                }
                let norm = self.norm(&json);
                match mid.and_then(|m| self.sent.get(&m).copied()) {
                    Some(x) => {
                        if t == "CMD_TOPO_ADD" {
                            // The deviceIds the live platform assigned go into the
                            // messages that follow.
                            let rec = self
                                .ex_reply
                                .iter()
                                .find(|(_, &e)| e == x)
                                .and_then(|(&i, _)| self.msgs[i].json.as_ref());
                            if let Some(rec) = rec {
                                self.rw.learn_devices(rec, &json);
                            }
                        }
                        let norm = self.norm(&json);
                        let timeout = self.s.answer_timeout;
                        let ex = &mut self.exchanges[x];
                        if ex.live.reply.is_none() {
                            ex.live.reply = Some(norm);
                            if let Some((&i, _)) = self.ex_reply.iter().find(|(_, &e)| e == x) {
                                self.seen.insert(i);
                                // The replay gave up on it: late, wherever it sits
                                // in the recording.
                                if self.gave_up.contains(&i) {
                                    ex.late.push(format!(
                                        "late reply: it came after the replay stopped \
                                         waiting ({} ms, --timeout-ms)",
                                        timeout.as_millis()
                                    ));
                                }
                            }
                        } else {
                            ex.live.extra.push(norm);
                        }
                    }
                    None if mid.is_some_and(|m| self.mutation_mids.contains(&m)) => {}
                    None => {
                        // A reply to nothing we sent: the first open exchange of its
                        // type shows it, so the difference is reported where it belongs.
                        let open = self.exchanges.iter().position(|x| {
                            x.request == t && x.from == self.us_str() && x.live.reply.is_none()
                        });
                        match open {
                            Some(x) => self.exchanges[x].live.extra.push(norm),
                            None => self.orphans.push(norm),
                        }
                    }
                }
            }
            Class::Report if t == "REP_JOB_RESULT" => {
                let live_job = json
                    .get("param")
                    .and_then(|p| p.get("jobId"))
                    .and_then(crate::protocol::as_u64_lenient);
                if let Some(j) = live_job.filter(|j| self.mutation_jobs.contains(j)) {
                    self.mutation_results.push(j);
                    return;
                }
                let norm = self.norm(&json);
                let Some(j) = live_job.map(|j| self.rw.recorded_job(j)) else {
                    return;
                };
                let x = self.exchanges.iter().enumerate().position(|(n, _)| {
                    self.ex_of_request.iter().any(|(&i, &e)| {
                        e == n
                            && self.msgs[i].job_id() == Some(j)
                            && self.msgs[i].msg_type() != Some("CMD_STATUS_QUERY")
                    })
                });
                if let Some(x) = x {
                    let timeout = self.s.answer_timeout;
                    let ex = &mut self.exchanges[x];
                    if ex.live.job_result.is_none() {
                        ex.live.job_result = Some(norm);
                        if let Some((&i, _)) = self.ex_job.iter().find(|(_, &e)| e == x) {
                            self.seen.insert(i);
                            if self.gave_up.contains(&i) {
                                ex.late.push(format!(
                                    "late job result: it came after the replay stopped \
                                     waiting ({} ms, --timeout-ms)",
                                    timeout.as_millis()
                                ));
                            }
                        }
                    } else {
                        ex.live.extra.push(norm);
                    }
                }
            }
            Class::Request => {
                if self.watch.is_some() {
                    return;
                }
                // The n-th live request of a type is the n-th recorded one.
                let next = self
                    .ex_of_request
                    .iter()
                    .filter(|(&i, &x)| {
                        self.msgs[i].publisher() != self.us
                            && self.msgs[i].msg_type() == Some(t.as_str())
                            && !self.their_mid.contains_key(&x)
                    })
                    .map(|(&i, &x)| (i, x))
                    .min();
                let Some((i, x)) = next else {
                    // Not in the recording, so not answered: said in the report, as
                    // the likely cause of the differences that follow (a restart
                    // loses the device's state).
                    if self.watch.is_none() && self.unexpected.len() < 100 {
                        self.unexpected.push(format!(
                            "{t} at {} into the replay (mid {})",
                            secs(self.began.elapsed()),
                            mid.map_or("none".into(), |m| m.to_string())
                        ));
                    }
                    return;
                };
                if let (Some(rec), Some(live)) = (
                    self.msgs[i].job_id(),
                    json.get("param")
                        .and_then(|p| p.get("jobId"))
                        .and_then(crate::protocol::as_u64_lenient),
                ) {
                    self.rw.learn_job(rec, live);
                }
                let norm = self.norm(&json);
                self.exchanges[x].live.request = Some(norm);
                self.their_mid.insert(x, mid.unwrap_or(0));
                self.seen.insert(i);
            }
            Class::Report => {}
        }
    }

    fn us_str(&self) -> String {
        format!("{:?}", self.us).to_lowercase()
    }

    fn norm(&self, live: &Map<String, Value>) -> Value {
        self.noise.normalize(&Value::Object(self.rw.incoming(live)))
    }

    /// Plays our side of the recording.
    async fn replay(&mut self) -> Result<(), ReplayError> {
        let msgs = self.msgs;
        let t0 = Instant::now();
        let first_us = msgs.first().map_or(0, |m| m.time_us);
        let mut from = 0;
        // Periodic reports keep their recorded spacing even when the rest goes as
        // fast as the answers allow (a rule judges the period): type → (recorded µs,
        // sent at).
        let mut last_report: HashMap<String, (i64, Instant)> = HashMap::new();
        let factor = match self.s.pacing {
            Pacing::Speed(f) => f.max(1e-6),
            Pacing::Asap => 1.0,
        };
        // Playing the platform from a recording in which one of our commands comes
        // before any request of the edge's (taken after the edge came online): no
        // link-up to wait for, so before the first command wait, up to --edge-wait-ms, for the live
        // edge to publish anything: a command sent before it is online answers
        // nothing and would read as its missing reply.
        let ours_first = msgs.iter().position(|m| m.publisher() == self.us);
        let edge_first = (0..msgs.len()).find(|&i| self.edge_started(i));
        let unannounced = match (ours_first, edge_first) {
            (Some(o), Some(e)) => o < e,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if self.us == Actor::Platform && unannounced {
            let deadline = Instant::now() + self.s.edge_wait;
            if !self.wait_until(deadline, &|s| s.heard).await && !self.check_lost() {
                eprintln!(
                    "edgetap: replay: edge {} published nothing within {} (--edge-wait-ms); \
                     the first command goes out anyway: if the device is not online yet, its \
                     exchange reads as a missing reply",
                    self.rw.live_edge,
                    secs(self.s.edge_wait)
                );
            }
        }
        for (i, m) in msgs.iter().enumerate() {
            if m.publisher() != self.us || self.skip.contains(&i) {
                continue;
            }
            self.await_answers(from, i).await;
            if self.check_lost() {
                return Ok(());
            }
            if let Some(p) = &self.progress {
                p.inc(1);
            }
            from = i + 1;
            if let Pacing::Speed(f) = self.s.pacing {
                let at = t0
                    + Duration::from_micros(
                        ((m.time_us - first_us).max(0) as f64 / f.max(1e-6)) as u64,
                    );
                tokio::time::sleep_until(at.into()).await;
            }
            let Some(json) = m.json.clone() else {
                // A recorded payload that is no JSON object goes out as it was.
                let topic = self.rw.topic(&m.topic_name);
                self.publish(&topic, m.payload.clone()).await?;
                continue;
            };
            let topic = self.rw.topic(&m.topic_name);
            match m.class() {
                Class::Request => {
                    let mid = crate::sim::next_mid();
                    let out = self.rw.outgoing(&json, m.mid().map(|_| mid));
                    if let Some(&x) = self.ex_of_request.get(&i) {
                        self.sent.insert(mid, x);
                    }
                    self.publish(&topic, serde_json::to_vec(&out).unwrap_or_default())
                        .await?;
                }
                Class::Reply => {
                    // Answer the live request this recorded reply answered.
                    let x = msgs[..i]
                        .iter()
                        .rev()
                        .find(|r| {
                            r.class() == Class::Request
                                && r.publisher() != self.us
                                && r.mid() == m.mid()
                                && r.topic.channel == m.topic.channel
                        })
                        .and_then(|r| self.ex_of_request.get(&r.index).copied());
                    let Some(x) = x else { continue };
                    // A request already waited for in vain is not waited for again.
                    let waited = self
                        .ex_of_request
                        .iter()
                        .any(|(i, &e)| e == x && self.gave_up.contains(i));
                    let wait = if waited {
                        Duration::ZERO
                    } else {
                        self.request_wait()
                    };
                    let deadline = Instant::now() + wait;
                    self.wait_until(deadline, &|s| s.their_mid.contains_key(&x))
                        .await;
                    let Some(&live_mid) = self.their_mid.get(&x) else {
                        self.inline_not_sent(i, x);
                        continue;
                    };
                    let out = self.rw.outgoing(&json, Some(live_mid));
                    if self.inline_at.contains_key(&i) {
                        self.send_inline(i, topic, out, Some(live_mid), Some(x))
                            .await?;
                    } else {
                        self.publish(&topic, serde_json::to_vec(&out).unwrap_or_default())
                            .await?;
                    }
                }
                Class::Report => {
                    let t = m.msg_type().unwrap_or("").to_string();
                    // As edge: a job result only for a job the live platform started.
                    if t == "REP_JOB_RESULT"
                        && self.us == Actor::Edge
                        && m.job_id().is_some_and(|j| !self.rw.knows_job(j))
                    {
                        continue;
                    }
                    if t != "REP_JOB_RESULT" {
                        if let Some((rec, at)) = last_report.get(&t) {
                            let gap = (m.time_us - rec).max(0) as f64 / factor;
                            let due = *at + Duration::from_micros(gap as u64);
                            self.wait_until(due, &|_| false).await;
                        }
                        last_report.insert(t, (m.time_us, Instant::now()));
                    }
                    let mid = crate::sim::next_mid();
                    let out = self.rw.outgoing(&json, m.mid().map(|_| mid));
                    if self.inline_at.contains_key(&i) {
                        self.send_inline(i, topic, out, None, None).await?;
                    } else {
                        self.publish(&topic, serde_json::to_vec(&out).unwrap_or_default())
                            .await?;
                    }
                }
            }
        }
        self.await_answers(from, msgs.len()).await;
        if let Some(p) = self.progress.take() {
            p.finish_and_clear();
        }
        Ok(())
    }

    /// Sends recorded message `i` of ours (already rewritten as `out`) through its
    /// in-place mutation. `x`: the exchange whose request it answers.
    async fn send_inline(
        &mut self,
        i: usize,
        topic: String,
        out: Map<String, Value>,
        their_mid: Option<u64>,
        x: Option<usize>,
    ) -> Result<(), ReplayError> {
        let k = self.inline_at[&i];
        let spec = self.inline[k].spec.clone();
        if let Some(m) = out.get("mid").and_then(crate::protocol::as_u64_lenient) {
            self.inline[k].mids.push(m);
        }
        self.inline[k].mids.extend(their_mid);
        let draft = Draft {
            topic,
            json: out,
            raw: None,
            copies: 1,
            delay_ms: 0,
            after_probe: false,
        };
        let Verdict::Send(d) = mutate::apply(&spec.steps, draft, &self.rw.live_edge) else {
            self.inline[k].target.push_str(" (dropped)");
            return Ok(());
        };
        if spec.steps.contains(&mutate::Step::JobResultFirst) {
            if let Some(j) = x.and_then(|x| self.job_result_of(x)) {
                let rec = &self.msgs[j];
                if let Some(json) = &rec.json {
                    let jm = crate::sim::next_mid();
                    let early = self.rw.outgoing(json, rec.mid().map(|_| jm));
                    let t = self.rw.topic(&rec.topic_name);
                    self.publish(&t, serde_json::to_vec(&early).unwrap_or_default())
                        .await?;
                    self.inline[k].mids.push(jm);
                    self.skip.insert(j);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(d.delay_ms)).await;
        for _ in 0..d.copies {
            self.publish(&d.topic, d.payload()).await?;
        }
        Ok(())
    }

    /// Our recorded job result for the job the request of exchange `x` started.
    fn job_result_of(&self, x: usize) -> Option<usize> {
        let (&req, _) = self.ex_of_request.iter().find(|(_, &e)| e == x)?;
        let job = self.msgs[req].job_id()?;
        self.msgs[req + 1..]
            .iter()
            .find(|r| {
                r.publisher() == self.us
                    && r.msg_type() == Some("REP_JOB_RESULT")
                    && r.job_id() == Some(job)
            })
            .map(|r| r.index)
    }

    /// Waits for the live counterparts of the recorded answers in `msgs[from..to]`.
    async fn await_answers(&mut self, from: usize, to: usize) {
        let mut awaited: Vec<usize> = (from..to)
            .filter(|&i| {
                self.ex_reply.contains_key(&i)
                    || self.ex_job.contains_key(&i)
                    || (self.ex_of_request.contains_key(&i) && self.msgs[i].publisher() != self.us)
            })
            .filter(|&i| self.msgs[i].publisher() != self.us)
            .collect();
        if let Some(&first) = awaited.iter().find(|&&i| self.edge_started(i)) {
            self.await_edge_start(first).await;
            if self.edge_was_online() {
                awaited.retain(|&i| !self.edge_started(i));
            }
        }
        if awaited.is_empty() {
            while let Ok(m) = self.rx.try_recv() {
                self.incoming(m);
            }
            return;
        }
        let deadline = Instant::now() + self.s.answer_timeout;
        self.wait_until(deadline, &|s| awaited.iter().all(|i| s.seen.contains(i)))
            .await;
        // Given up only when the answer window closed: a wait the lost broker cut
        // short is the loss's, not the counterpart's missing answer.
        if self.check_lost() {
            return;
        }
        let missed: Vec<usize> = awaited
            .into_iter()
            .filter(|i| !self.seen.contains(i))
            .collect();
        self.gave_up.extend(missed);
    }

    /// Recorded message `i` is the request of an exchange the edge starts by itself
    /// (EVENT_LINKUP, topo requests), and we play the platform.
    fn edge_started(&self, i: usize) -> bool {
        self.us == Actor::Platform
            && self.ex_of_request.contains_key(&i)
            && self.msgs[i].publisher() != self.us
    }

    /// The edge's first own request did not come within `edge_wait`.
    fn edge_was_online(&self) -> bool {
        matches!(self.edge_start, EdgeStart::Missed { .. })
    }

    /// Once: waits up to `edge_wait` for the edge's first own request, recorded
    /// message `first`, and so learns whether the edge was already online.
    async fn await_edge_start(&mut self, first: usize) {
        if self.edge_start != EdgeStart::Pending {
            return;
        }
        let deadline = Instant::now() + self.s.edge_wait;
        let seen = self
            .wait_until(deadline, &|s| s.seen.contains(&first))
            .await;
        self.edge_start = if seen {
            EdgeStart::Seen
        } else {
            EdgeStart::Missed {
                msg_type: self.msgs[first].msg_type().unwrap_or("?").to_string(),
            }
        };
    }

    /// How long to wait for the counterpart's request a recorded reply of ours
    /// answers: not at all from an edge that was already online (its own requests
    /// were sent before the replay; one sent anyway has arrived or is not answered).
    fn request_wait(&self) -> Duration {
        if self.edge_was_online() {
            Duration::ZERO
        } else {
            self.s.answer_timeout
        }
    }

    /// Recorded reply `i` of ours was not sent: the counterpart's request of exchange
    /// `x` never came. Its in-place mutation, if any, is not exercised.
    fn inline_not_sent(&mut self, i: usize, x: usize) {
        let Some(&k) = self.inline_at.get(&i) else {
            return;
        };
        let who = match self.us {
            Actor::Platform => "edge",
            Actor::Edge => "platform",
        };
        self.inline[k].skipped = Some(format!(
            "not exercised: the reply it changes answers {}, which the {who} did not send",
            self.exchanges[x].request
        ));
    }

    /// With an edge already online: each exchange the edge starts by itself that
    /// never came is skipped, with why.
    fn mark_not_exercised(&mut self) {
        let EdgeStart::Missed { msg_type: first } = &self.edge_start else {
            return;
        };
        let us = self.us_str();
        let came_late = self
            .exchanges
            .iter()
            .any(|x| x.from != us && &x.request == first && x.live.request.is_some());
        for x in self
            .exchanges
            .iter_mut()
            .filter(|x| x.from != us && x.live.request.is_none())
        {
            x.skipped = Some(if came_late {
                late_start_reason(first, self.s.edge_wait)
            } else {
                not_exercised_reason(&x.request, first, self.s.edge_wait)
            });
        }
    }

    /// The valid command used as liveness probe.
    fn probe_message(&self) -> Option<&'a Recorded> {
        let ours = |m: &&Recorded| m.publisher() == self.us && m.class() == Class::Request;
        let msgs = self.msgs;
        ["CMD_SYS_STATUS", "CMD_INFO_QUERY"]
            .iter()
            .find_map(|t| msgs.iter().filter(ours).find(|m| m.msg_type() == Some(t)))
            .or_else(|| msgs.iter().filter(ours).find(|m| m.job_id().is_none()))
    }

    /// Sends one recorded request fresh and returns its mid.
    async fn send_fresh(&mut self, m: &Recorded) -> Result<Option<u64>, ReplayError> {
        let Some(json) = &m.json else { return Ok(None) };
        let mid = crate::sim::next_mid();
        self.mutation_mids.insert(mid);
        let out = self.rw.outgoing(json, Some(mid));
        let topic = self.rw.topic(&m.topic_name);
        self.publish(&topic, serde_json::to_vec(&out).unwrap_or_default())
            .await?;
        Ok(Some(mid))
    }

    async fn probe(&mut self) -> Result<(bool, String), ReplayError> {
        let Some(p) = self.probe_message() else {
            return Ok((true, "no valid command to probe with".into()));
        };
        let t = p.msg_type().unwrap_or("").to_string();
        let Some(mid) = self.send_fresh(p).await? else {
            return Ok((true, "no probe".into()));
        };
        let deadline = Instant::now() + self.s.answer_timeout;
        self.wait_until(deadline, &|s| {
            s.watch
                .as_ref()
                .is_some_and(|w| w.iter().any(|a| a.0 == Some(mid)))
        })
        .await;
        let code = self
            .watch
            .as_ref()
            .and_then(|w| w.iter().find(|a| a.0 == Some(mid)))
            .and_then(|a| a.1);
        if let Some(w) = &mut self.watch {
            w.retain(|a| a.0 != Some(mid));
        }
        Ok(match code {
            Some(200) => (true, format!("{t} answered 200")),
            Some(c) => (false, format!("{t} answered {c}")),
            None => (
                false,
                format!(
                    "{t} not answered within {} ms",
                    self.s.answer_timeout.as_millis()
                ),
            ),
        })
    }

    /// Sends one mutation, watches the answers, probes liveness, judges.
    async fn mutation(
        &mut self,
        name: &str,
        spec: Option<Mutation>,
    ) -> Result<MutationResult, ReplayError> {
        let na = |about: &str, expect| MutationResult {
            name: name.into(),
            about: about.into(),
            target: "(none)".into(),
            expect,
            rule: None,
            answers: vec![],
            engine: vec![],
            probe: String::new(),
            verdict: "not applicable".into(),
            detail: String::new(),
            skipped: None,
        };
        let Some(spec) = spec else {
            let n = mutate::LIBRARY.iter().find(|n| n.name == name);
            let mut r = na(
                n.map_or("", |n| n.about),
                n.map_or(Expect::Survive, |n| n.expect),
            );
            r.detail = "the recording holds no message it applies to".into();
            return Ok(r);
        };
        let Some(target) = mutate::pick(self.msgs, &spec.select, self.us) else {
            let mut r = na(&spec.about, spec.expect);
            r.detail = format!("no recorded message matches {:?}", spec.select);
            return Ok(r);
        };
        let Some(json) = &target.json else {
            let mut r = na(&spec.about, spec.expect);
            r.detail = "the selected message is no JSON object".into();
            return Ok(r);
        };
        let mid = crate::sim::next_mid();
        self.mutation_mids.insert(mid);
        if let Some(j) = target.job_id() {
            if target.msg_type() != Some("CMD_STATUS_QUERY") {
                self.rw.renew_job(j);
            }
        }
        let out = self.rw.outgoing(json, Some(mid));
        let live_job = out
            .get("param")
            .and_then(|p| p.get("jobId"))
            .and_then(crate::protocol::as_u64_lenient)
            .filter(|_| target.msg_type() != Some("CMD_STATUS_QUERY"));
        if let Some(j) = live_job {
            self.mutation_jobs.insert(j);
        }
        let draft = Draft {
            topic: self.rw.topic(&target.topic_name),
            json: out,
            raw: None,
            copies: 1,
            delay_ms: 0,
            after_probe: false,
        };
        self.watch = Some(vec![]);
        let first_finding = self.findings.len();
        let verdict = mutate::apply(&spec.steps, draft, &self.rw.live_edge);
        let mut probe = None;
        let mut copies = 0;
        if let Verdict::Send(d) = &verdict {
            if d.after_probe {
                probe = Some(self.probe().await?);
            }
            tokio::time::sleep(Duration::from_millis(d.delay_ms)).await;
            for _ in 0..d.copies {
                self.publish(&d.topic, d.payload()).await?;
            }
            copies = d.copies as usize;
        }
        let deadline = Instant::now() + self.s.mutation_window;
        self.wait_until(deadline, &|s| {
            copies > 0
                && s.watch
                    .as_ref()
                    .is_some_and(|w| w.iter().filter(|a| a.0 == Some(mid)).count() >= copies)
        })
        .await;
        let answers = self.watch.take().unwrap_or_default();
        self.watch = Some(vec![]);
        let (alive, probe_text) = match probe {
            Some(p) => p,
            None => self.probe().await?,
        };
        let late = self.watch.take().unwrap_or_default();
        let answers: Vec<_> = answers
            .into_iter()
            .chain(late.into_iter().filter(|a| a.0 == Some(mid)))
            .collect();
        let engine: Vec<String> = self.findings[first_finding..]
            .iter()
            .filter(|f| f.mid.is_none_or(|m| m == mid))
            .map(|f| f.rule.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let accepted = answers
            .iter()
            .filter(|a| a.0 == Some(mid) && matches!(a.1, Some(200) | Some(202)))
            .count();
        let mut problems = vec![];
        let results_of_job = live_job.map_or(0, |j| {
            self.mutation_results.iter().filter(|&&r| r == j).count()
        });
        let acted = results_of_job > 0;
        if acted && spec.expect == Expect::Reject {
            problems.push("acted on it: its job reported a result".to_string());
        }
        match spec.expect {
            Expect::Reject if accepted > 0 => problems.push(format!(
                "answered {} to an invalid message",
                answers
                    .iter()
                    .filter_map(|a| a.1)
                    .map(|c| c.to_string())
                    .collect::<Vec<_>>()
                    .join("/")
            )),
            // Acting is running the job twice: two results. A second 200/202 answers
            // the repeat (an idempotent EVENT_LINKUP acknowledged again, a QoS 1
            // redelivery) and acts on nothing; the standard says nothing of a
            // repeated mid.
            Expect::ActOnce if results_of_job > 1 => problems.push(format!(
                "acted on the repeat: its job reported {results_of_job} results"
            )),
            _ => {}
        }
        if !alive {
            problems.push(format!("liveness probe failed: {probe_text}"));
        }
        if let Some(r) = &spec.rule {
            if !engine.contains(r) {
                problems.push(format!("the rule engine did not raise {r}"));
            }
        }
        let target_desc = match &verdict {
            Verdict::Send(d) => format!("{} on {}", target.msg_type().unwrap_or("?"), d.topic),
            Verdict::Drop => format!("{} (dropped)", target.msg_type().unwrap_or("?")),
        };
        Ok(MutationResult {
            name: name.into(),
            about: spec.about.clone(),
            target: target_desc,
            expect: spec.expect,
            rule: spec.rule.clone(),
            answers: answers
                .iter()
                .map(|a| match (a.0 == Some(mid), a.1) {
                    (true, Some(c)) if a.2.is_empty() => format!("code {c}"),
                    (true, Some(c)) => format!("code {c} ({})", a.2),
                    (_, c) => format!("unmatched reply mid {:?} code {:?} {}", a.0, c, a.2),
                })
                .collect(),
            engine,
            probe: probe_text,
            verdict: if problems.is_empty() { "pass" } else { "fail" }.into(),
            detail: problems.join("; "),
            skipped: None,
        })
    }

    /// The judgement of one in-place mutation, after the replay.
    fn inline_result(&self, run: &InlineRun) -> MutationResult {
        let mut r = MutationResult {
            name: run.spec.name.clone(),
            about: run.spec.about.clone(),
            target: format!("{} (during the replay)", run.target),
            expect: run.spec.expect,
            rule: run.spec.rule.clone(),
            answers: vec![],
            engine: vec![],
            probe: String::new(),
            verdict: "not applicable".into(),
            detail: String::new(),
            skipped: run.skipped.clone(),
        };
        if let Some(why) = &run.skipped {
            r.detail = why.clone();
            return r;
        }
        r.engine = self
            .findings
            .iter()
            .filter(|f| f.mid.is_some_and(|m| run.mids.contains(&m)))
            .map(|f| f.rule.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let (alive, probe) = self
            .inline_probe
            .clone()
            .unwrap_or((true, "no probe".into()));
        let mut problems = vec![];
        if !alive {
            problems.push(format!("liveness probe failed: {probe}"));
        }
        if let Some(rule) = &run.spec.rule {
            if !r.engine.contains(rule) {
                problems.push(format!("the rule engine did not raise {rule}"));
            }
        }
        r.probe = probe;
        r.verdict = if problems.is_empty() { "pass" } else { "fail" }.into();
        r.detail = problems.join("; ");
        r
    }

    async fn finish(
        mut self,
        baseline_end: usize,
        mutations: Vec<(usize, MutationResult)>,
        recorded: &[Finding],
    ) -> Result<Outcome, ReplayError> {
        if let Some(p) = self.progress.take() {
            p.finish_and_clear();
        }
        // Late answers still count.
        let deadline = Instant::now() + Duration::from_millis(200);
        self.wait_until(deadline, &|_| false).await;
        // A lost connection's client may be retrying: do not wait on it.
        let _ = tokio::time::timeout(Duration::from_secs(1), self.link.disconnect()).await;
        self.check_lost();
        let mut c = self.collector();
        self.analyzer.finish(&mut c);
        self.chart = c.timeline.unwrap_or_default();
        let finish_start = self.findings.len();
        self.findings.extend(c.findings);
        let mut mutations = mutations;
        for run in &self.inline {
            self.mutation_mids.extend(run.mids.iter().copied());
        }
        for run in &self.inline {
            mutations.push((run.order, self.inline_result(run)));
        }
        mutations.sort_by_key(|(n, _)| *n);
        let mutations: Vec<MutationResult> = mutations.into_iter().map(|(_, m)| m).collect();
        self.mark_not_exercised();
        self.mark_cut_off();
        let same = judge::same_across_edges(&self.rw.recorded_edge, &self.rw.live_edge);
        for x in &mut self.exchanges {
            judge::judge_exchange(x, &same);
        }
        let in_baseline = |n: usize, f: &Finding| {
            (n < baseline_end || n >= finish_start)
                && !f.mid.is_some_and(|m| self.mutation_mids.contains(&m))
        };
        let recorded_rules: HashSet<&str> = recorded
            .iter()
            .filter(|f| f.severity >= Severity::Warning)
            .map(|f| f.rule.as_str())
            .collect();
        let mut seen_new = HashSet::new();
        // Rules that need the session's start stay silent in the engine when the
        // replay joined an edge already online (history-aware rules).
        let new_findings: Vec<FindingBrief> = self
            .findings
            .iter()
            .enumerate()
            .filter(|(n, f)| in_baseline(*n, f) && f.severity >= Severity::Warning)
            .filter(|(_, f)| !recorded_rules.contains(f.rule.as_str()))
            .filter(|(_, f)| seen_new.insert(f.rule.clone()))
            .map(|(_, f)| FindingBrief::of(f))
            .collect();
        if let Some(p) = &self.s.capture {
            crate::sim::tap::write_pcap(p, &self.frames)?;
        }
        let record = crate::report::Report::build(
            vec![format!(
                "replay of {} (live session)",
                self.s.source.describe()
            )],
            self.analyzer.stats(),
            self.analyzer.engine().exercised(),
            self.analyzer.rules(),
            self.findings.clone(),
        )
        .with_timeline(Some(std::mem::take(&mut self.chart)));
        Ok(Outcome {
            record: Some(record),
            source: self.s.source.describe(),
            role: self.s.role,
            seed: self.s.seed,
            recorded_edge: self.rw.recorded_edge.clone(),
            recorded_edges: vec![],
            live_edge: self.rw.live_edge.clone(),
            exchanges: self.exchanges,
            mutations,
            new_findings,
            orphan_replies: self.orphans,
            live_findings: self.findings.iter().map(FindingBrief::of).collect(),
            broker_lost: self.lost,
            counterpart_silent: !self.heard,
            unexpected_requests: self.unexpected,
        })
    }

    /// After a lost broker connection: each exchange still waiting for the
    /// counterpart is not exercised (the broker's fault, not the device's).
    fn mark_cut_off(&mut self) {
        let Some(lost) = &self.lost else { return };
        // Exchanges whose answer window had closed before the loss were exercised:
        // they keep their verdict (a missing reply is the counterpart's).
        let closed: HashSet<usize> = self
            .ex_of_request
            .iter()
            .chain(&self.ex_reply)
            .chain(&self.ex_job)
            .filter(|(i, _)| self.gave_up.contains(i))
            .map(|(_, &x)| x)
            .collect();
        for (n, x) in self.exchanges.iter_mut().enumerate() {
            if x.skipped.is_some() || closed.contains(&n) {
                continue;
            }
            let r = &x.recorded;
            let l = &x.live;
            let waiting = (r.request.is_some() && l.request.is_none())
                || (r.reply.is_some() && l.reply.is_none())
                || (r.job_result.is_some() && l.job_result.is_none());
            if waiting {
                x.skipped = Some(format!("not exercised: {lost}"));
            }
        }
    }
}

/// A progress bar of our messages sent, on a terminal only.
fn progress_bar(enabled: bool, total: usize) -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal as _;
    if !enabled || !std::io::stderr().is_terminal() || total == 0 {
        return None;
    }
    // indicatif draws and clears the bar itself and hides it when stderr is no
    // terminal; the crate is already in the build for `analyze`.
    let b = indicatif::ProgressBar::new(total as u64);
    b.set_style(
        indicatif::ProgressStyle::with_template("replay {bar:40} {pos}/{len} messages {elapsed}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    Some(b)
}

/// Microseconds since the epoch as RFC 3339 in the standard's clock (UTC+8).
fn rfc3339(us: i64) -> String {
    let cst = chrono::FixedOffset::east_opt(8 * 3600).expect("UTC+8 is a valid offset");
    chrono::DateTime::from_timestamp_micros(us)
        .map(|t| {
            t.with_timezone(&cst)
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        })
        .unwrap_or_else(|| us.to_string())
}
