//! The session driver: connects to the broker, plays our side of the recording,
//! awaits the counterpart's answers, runs the mutations, and builds the [`Outcome`].
//!
//! This file holds the session's state, its start and its link to the broker; each
//! step is a file of its own:
//! - `play`: our side of the recording, in order and paced, with the in-place
//!   mutations of our replies and reports;
//! - `answers`: waiting for the counterpart, and matching its live messages to the
//!   recorded exchanges;
//! - `mutation`: the mutations sent after the replay, and the liveness probe;
//! - `finish`: the verdicts, the rules the replay raised and the [`Outcome`].

mod answers;
mod finish;
mod mutation;
mod play;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::SeedableRng;
use serde_json::Value;
use tokio::sync::mpsc::UnboundedReceiver;

use super::judge::{self, Exchange, Noise};
use super::mutate::{self, Mutation};
use super::rewrite;
use super::source::{self, Recorded};
use super::{Outcome, ReplayError, ReplaySettings};
use crate::finding::{Finding, Side};
use crate::pipeline::{Analyzer, At, Input, Settings};
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
                    target: format!(
                        "{} on {}",
                        t.msg_type().unwrap_or("?"),
                        sess.rw.topic(&t.topic_name)
                    ),
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
    if let Some(lost) = sess.stopped().cloned() {
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
    /// Packets of the live session that a mutation made (the test's own doing, never
    /// the counterpart's): packet number → the mutation's name.
    injected_packets: HashMap<u64, String>,
    /// Mids of the messages a mutation made or answered → the mutation's name.
    injected_mids: HashMap<u64, String>,
    /// Replies that answer nothing we sent, normalized.
    orphans: Vec<Value>,
    /// Requests of the counterpart beyond the recording's (a device that restarted
    /// and sent EVENT_LINKUP again): when and what, for the report.
    unexpected: Vec<String>,
    /// Answers to send at the next wait: (topic, payload), our recorded replies to
    /// requests that came beyond the recording or after their answer was played.
    due: Vec<(String, Vec<u8>)>,
    /// The recorded message of ours being played (all of them once the replay ended).
    played: usize,
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
    /// The run's interruption, when asked for (`ReplaySettings::interrupt`).
    interrupt: Option<tokio::sync::watch::Receiver<Option<String>>>,
    /// Which signal interrupted the run, and when: nothing after it was played.
    interrupted: Option<String>,
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
        let open = Input::Open {
            client: None,
            server: None,
            midstream: false,
        };
        analyzer.push(At::new(1, t, 1), open, &mut c);
        let bytes = &connect;
        analyzer.push(
            At::new(1, t, 1),
            Input::Data {
                side: Side::Client,
                bytes,
            },
            &mut c,
        );
        let mut rw = rewrite::Rewriter::new(recorded_edge, live_edge, s.fresh_jobs);
        if us == Actor::Edge {
            // The platform picks the job ids; they are learnt from its commands.
            rw.fresh_jobs = false;
        }
        // The report names the topics this run used: the live edge's.
        for x in &mut exchanges {
            x.topic = rw.topic(&x.topic);
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
            injected_packets: HashMap::new(),
            injected_mids: HashMap::new(),
            orphans: vec![],
            unexpected: vec![],
            due: vec![],
            played: 0,
            inline: vec![],
            inline_at: HashMap::new(),
            inline_probe: None,
            skip: HashSet::new(),
            gave_up: HashSet::new(),
            state,
            began: Instant::now(),
            lost: None,
            interrupt: s.interrupt.clone(),
            interrupted: None,
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

    /// True once the broker connection is lost or the run interrupted: nothing more
    /// is sent or awaited. The first loss is described in `lost` (cause, when, how
    /// far into the replay), an interruption in `interrupted`.
    fn check_lost(&mut self) -> bool {
        if self.lost.is_none() && self.interrupted.is_none() {
            if let LinkState::Down { cause, at_us, .. } = &*self.state.borrow() {
                self.lost = Some(format!(
                    "the connection to the broker {} was lost {} into the replay, at {}: {cause}",
                    self.s.broker,
                    secs(self.began.elapsed()),
                    rfc3339(*at_us)
                ));
            } else if let Some(signal) = self.interrupt.as_ref().and_then(|r| r.borrow().clone()) {
                self.interrupted = Some(format!(
                    "interrupted by {signal} {} into the replay, at {}",
                    secs(self.began.elapsed()),
                    rfc3339(crate::sim::now_us())
                ));
            }
        }
        self.stopped().is_some()
    }

    /// Why the replay stopped before its end: the broker connection lost, or the
    /// run interrupted.
    fn stopped(&self) -> Option<&String> {
        self.lost.as_ref().or(self.interrupted.as_ref())
    }

    /// Every protocol message of the live session goes to the rule engine, in the
    /// order this client saw it (like the sims' tap: one broker → client stream).
    fn judge_live(&mut self, topic: &str, payload: &[u8]) {
        self.packet += 1;
        let t = crate::sim::now_us();
        let mut c = self.collector();
        // The PUBLISH as this client decoded it; its bytes only for `--capture`.
        let packet = crate::mqtt::Packet::Publish(crate::mqtt::Publish {
            topic: topic.to_string(),
            payload: bytes::Bytes::copy_from_slice(payload),
            qos: 0,
            pkid: 0,
            retain: false,
            dup: false,
            topic_alias: None,
        });
        let at = At::new(1, t, self.packet);
        let side = Side::Server;
        self.analyzer
            .push(at, Input::Packet { side, packet }, &mut c);
        self.chart = c.timeline.unwrap_or_default();
        self.findings.extend(c.findings);
        self.frames
            .push((t, crate::mqtt::encode::publish(topic, payload), false));
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

    /// Sends one message a mutation made: what the rule engine finds in it is the
    /// test's doing (the report shows it as injected), not the counterpart's.
    async fn publish_injected(
        &mut self,
        topic: &str,
        payload: Vec<u8>,
        mutation: &str,
    ) -> Result<(), ReplayError> {
        if self.check_lost() {
            return Ok(());
        }
        // `judge_live` numbers it next.
        self.injected_packets
            .insert(self.packet + 1, mutation.to_string());
        self.publish(topic, payload).await
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
