//! `edgetap replay`: plays one side of a recorded session, as a real MQTT client of a
//! real broker, to a real counterpart, and waits for the counterpart's real answers in
//! place of the recorded ones.
//!
//! - [`source`]: the recorded session, decoded by the one pipeline (pcap or store).
//! - [`rewrite`]: fresh mids and timestamps, the live edge id, fresh job ids; the
//!   counterpart's answers mapped back into the recording's terms.
//! - pacing: before each message of ours, the answers the recording shows before it
//!   (replies, job results, the counterpart's requests) are awaited (up to
//!   `answer_timeout`); with `Pacing::Speed(f)` the recorded offsets divided by `f`
//!   are kept too.
//! - [`judge`]: each exchange compared with its recorded counterpart, with noise rules;
//!   the live session goes through a fresh [`Analyzer`] (the one rule engine) and its
//!   rules are compared with the recording's.
//! - [`mutate`]: a mutation of one of our requests is sent after the replay, watched
//!   for `mutation_window`, then a liveness probe (a valid request of the recording)
//!   must still be answered; a mutation of one of our replies or reports (a missing
//!   reply, a job result before its reply) is made in place during the replay and
//!   judged by the rules it must raise and the probe after the replay.
//!
//! The counterpart must be subscribed-to before it starts: start the replay, then
//! (re)start the device, so that its EVENT_LINKUP is part of the session. As platform,
//! the first request the edge starts by itself (EVENT_LINKUP) is awaited up to
//! `edge_wait`; when it does not come, the edge was already online: the exchanges the
//! edge starts by itself that never come are *not exercised* ([`Exchange::skipped`],
//! neither pass nor fail, JUnit `<skipped>`), its own later requests are not waited
//! for, and rules that judge an edge's session from its start stay silent (the
//! engine judges only history it saw). The platform's commands and their job results are
//! judged as always.
//!
//! A CI job (GitLab syntax; any CI runs the same two commands):
//!
//! ```yaml
//! replay-regression:            # the device build under test runs as DUT1
//!   script:
//!     - mosquitto -d -p 1883
//!     - edgetap replay captures/golden.pcap --as platform --broker 127.0.0.1:1883
//!       --edge-id DUT1 --asap --seed 42 --mutate drop-field --mutate invalid-json
//!       --expect captures/golden.expect.json --format junit > replay.xml & REPLAY=$!
//!     - sleep 2; ./build/edge-agent --broker 127.0.0.1:1883 --id DUT1 &
//!     - wait $REPLAY            # exit 1 on any divergence beyond the noise rules
//!   artifacts:
//!     when: always
//!     reports:
//!       junit: replay.xml
//! ```
//!
//! The outcome serializes to JSON; `--save-expect` writes it and `--expect` compares a
//! later run with it beyond the noise rules (regression mode).

pub mod judge;
pub mod mutate;
pub mod rewrite;
pub mod source;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::finding::{Finding, Severity, Side};
use crate::pipeline::{Analyzer, Settings};
use crate::protocol::{Actor, Class};
use crate::report::Collector;
use crate::rules::RuleSet;
use crate::sim::{Incoming, Link, Protocol, SimError};
use judge::{Exchange, Noise};
use mutate::{Draft, Expect, Mutation, Verdict};
use source::{Recorded, Source};

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("replay source: {0}")]
    Source(String),
    #[error("mutation: {0}")]
    Mutation(String),
    #[error("expectation file: {0}")]
    Expect(String),
    #[error(transparent)]
    Sim(#[from] SimError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Platform,
    Edge,
}

impl Role {
    fn actor(self) -> Actor {
        match self {
            Role::Platform => Actor::Platform,
            Role::Edge => Actor::Edge,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Platform => "platform",
            Role::Edge => "edge",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pacing {
    /// The recorded offsets divided by the factor (and never before the answers).
    Speed(f64),
    /// As fast as the answers allow.
    Asap,
}

#[derive(Debug, Clone)]
pub struct ReplaySettings {
    pub source: Source,
    pub role: Role,
    pub broker: String,
    /// The live edge id; the recorded one when `None`.
    pub edge_id: Option<String>,
    pub pacing: Pacing,
    /// Named mutations or mutation files, in order.
    pub mutations: Vec<String>,
    pub seed: u64,
    /// More noise fields (names or dotted paths).
    pub noise: Vec<String>,
    /// Send fresh job ids instead of the recorded ones.
    pub fresh_jobs: bool,
    pub protocol: Protocol,
    /// How long to wait for each awaited answer.
    pub answer_timeout: Duration,
    /// How long to watch the counterpart after a mutated message.
    pub mutation_window: Duration,
    /// Broker ports of the capture file.
    pub ports: Vec<u16>,
    /// Write the live session as a pcap.
    pub capture: Option<PathBuf>,
    /// As platform: how long to wait for the edge's first own request (EVENT_LINKUP)
    /// before concluding that the edge was already online; the exchanges the edge
    /// starts by itself are then not exercised (skipped, neither pass nor fail).
    pub edge_wait: Duration,
}

/// The default of [`ReplaySettings::edge_wait`].
pub const DEFAULT_EDGE_WAIT: Duration = Duration::from_secs(10);

impl ReplaySettings {
    pub fn new(source: Source, role: Role, broker: &str) -> ReplaySettings {
        ReplaySettings {
            source,
            role,
            broker: broker.into(),
            edge_id: None,
            pacing: Pacing::Speed(1.0),
            mutations: vec![],
            seed: 0,
            noise: vec![],
            fresh_jobs: true,
            protocol: Protocol::V4,
            answer_timeout: Duration::from_secs(5),
            mutation_window: Duration::from_secs(2),
            ports: vec![1883],
            capture: None,
            edge_wait: DEFAULT_EDGE_WAIT,
        }
    }
}

/// A rule finding, short.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FindingBrief {
    pub rule: String,
    pub severity: Severity,
    pub line: String,
}

impl FindingBrief {
    fn of(f: &Finding) -> FindingBrief {
        FindingBrief {
            rule: f.rule.clone(),
            severity: f.severity,
            line: crate::report::one_line(f),
        }
    }
}

/// One mutation's result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MutationResult {
    pub name: String,
    pub about: String,
    /// The message mutated: type and topic, or why none.
    pub target: String,
    pub expect: Expect,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// What came back for the mutated message: "code 400 (msg)", or nothing.
    pub answers: Vec<String>,
    /// Rules the engine raised on the mutated message.
    pub engine: Vec<String>,
    /// The liveness probe: "answered 200" or what went wrong.
    pub probe: String,
    /// "pass", "fail" or "not applicable".
    pub verdict: String,
    pub detail: String,
    /// Why the mutation was not exercised: the message it changes was never sent,
    /// because the request it answers never came (verdict "not applicable").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}

/// What a replay found. Serialized, it is the `--save-expect` file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Outcome {
    pub source: String,
    pub role: Role,
    pub seed: u64,
    pub recorded_edge: String,
    pub live_edge: String,
    pub exchanges: Vec<Exchange>,
    pub mutations: Vec<MutationResult>,
    /// Rules (warning or error) the live replay raised that the recording did not.
    pub new_findings: Vec<FindingBrief>,
    /// Replies of the counterpart that answer nothing the replayer sent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub orphan_replies: Vec<Value>,
    /// Every finding of the live session (baseline and mutations).
    pub live_findings: Vec<FindingBrief>,
    /// The live session's test record (clauses, findings, message sequence), for
    /// `--format html`; not part of the saved expectation.
    #[serde(skip)]
    pub record: Option<crate::report::Report>,
}

impl Outcome {
    /// The replay diverged from its recording or a mutation failed.
    pub fn failed(&self) -> bool {
        self.exchanges.iter().any(|x| !x.diffs.is_empty())
            || !self.new_findings.is_empty()
            || !self.orphan_replies.is_empty()
            || self.mutations.iter().any(|m| m.verdict == "fail")
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    pub fn to_table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "replay of {} as {} (recorded edge {}, live edge {}), seed {}\n",
            self.source,
            self.role.as_str(),
            self.recorded_edge,
            self.live_edge,
            self.seed
        );
        self.write_exchanges(&mut s);
        if !self.orphan_replies.is_empty() {
            let _ = writeln!(s, "\nReplies to nothing the replayer sent:");
            for r in &self.orphan_replies {
                let _ = writeln!(s, "  {r}");
            }
        }
        if !self.new_findings.is_empty() {
            let _ = writeln!(s, "\nRules raised by the replay and not by the recording:");
            for f in &self.new_findings {
                let _ = writeln!(s, "  {}", f.line);
            }
        }
        if !self.mutations.is_empty() {
            let _ = writeln!(s, "\nMutations (seed {}):", self.seed);
            for m in &self.mutations {
                let _ = writeln!(
                    s,
                    "  {:<14} {:<24} {}  expect: {}",
                    m.verdict.to_uppercase(),
                    m.name,
                    m.target,
                    m.expect.describe()
                );
                let answers = if m.answers.is_empty() {
                    "none".to_string()
                } else {
                    m.answers.join("; ")
                };
                let _ = writeln!(
                    s,
                    "        answers: {answers}; probe: {}; rules: {}",
                    m.probe,
                    if m.engine.is_empty() {
                        "none".to_string()
                    } else {
                        m.engine.join(", ")
                    }
                );
                if !m.detail.is_empty() {
                    let _ = writeln!(s, "        {}", m.detail);
                }
            }
        }
        let _ = writeln!(s, "\n{}", self.result_line());
        s
    }

    /// Exchanges not exercised (skipped).
    pub fn skipped_exchanges(&self) -> impl Iterator<Item = &Exchange> {
        self.exchanges.iter().filter(|x| x.skipped.is_some())
    }

    /// The exchange table: one line per exchange, its differences or why it was skipped.
    fn write_exchanges(&self, s: &mut String) {
        let skipped = self.skipped_exchanges().count();
        let different = self
            .exchanges
            .iter()
            .filter(|x| !x.diffs.is_empty())
            .count();
        let _ = writeln!(
            s,
            "Exchanges: {} compared, {} as recorded, {} different, {} not exercised",
            self.exchanges.len() - skipped,
            self.exchanges.len() - skipped - different,
            different,
            skipped
        );
        for x in &self.exchanges {
            let status = match (&x.skipped, x.diffs.is_empty()) {
                (Some(_), _) => "SKIP",
                (None, true) => "same",
                (None, false) => "DIFF",
            };
            let _ = writeln!(
                s,
                "  {:>3} {:<4} {:<8} {:<18} {}",
                x.index, status, x.from, x.request, x.topic
            );
            for d in x.skipped.iter().chain(&x.diffs) {
                let _ = writeln!(s, "             - {d}");
            }
        }
    }

    /// The last line of the table.
    fn result_line(&self) -> String {
        let skipped = self.skipped_exchanges().count();
        match (self.failed(), skipped) {
            (true, _) => "RESULT: differences found".into(),
            (false, 0) => "RESULT: as recorded".into(),
            (false, n) => format!(
                "RESULT: as recorded ({n} exchange(s) started by the edge not exercised, see SKIP above)"
            ),
        }
    }

    /// One test case per exchange and per mutation.
    pub fn to_junit(&self, expectation: Option<&Expectation>) -> String {
        let xml = xml_escape;
        let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        let xf = self
            .exchanges
            .iter()
            .filter(|x| !x.diffs.is_empty())
            .count();
        let mf = self
            .mutations
            .iter()
            .filter(|m| m.verdict == "fail")
            .count();
        let _ = writeln!(
            out,
            "<testsuites name=\"edgetap replay\" tests=\"{}\" failures=\"{}\">",
            self.exchanges.len() + self.mutations.len(),
            xf + mf
        );
        let _ = writeln!(
            out,
            "  <testsuite name=\"exchanges\" tests=\"{}\" failures=\"{xf}\" skipped=\"{}\">",
            self.exchanges.len(),
            self.skipped_exchanges().count()
        );
        for x in &self.exchanges {
            let _ = write!(
                out,
                "    <testcase classname=\"replay.exchange\" name=\"{:03} {} {}\">",
                x.index,
                xml(&x.request),
                xml(&x.topic)
            );
            if let Some(why) = &x.skipped {
                let _ = write!(out, "<skipped message=\"{}\"/>", xml(why));
            } else if !x.diffs.is_empty() {
                let _ = write!(
                    out,
                    "<failure message=\"{} difference(s)\">{}</failure>",
                    x.diffs.len(),
                    xml(&x.diffs.join("\n"))
                );
            }
            out.push_str("</testcase>\n");
        }
        out.push_str("  </testsuite>\n");
        let _ = writeln!(
            out,
            "  <testsuite name=\"mutations seed {}\" tests=\"{}\" failures=\"{mf}\" skipped=\"{}\">",
            self.seed,
            self.mutations.len(),
            self.mutations
                .iter()
                .filter(|m| m.verdict == "not applicable")
                .count()
        );
        for m in &self.mutations {
            let _ = write!(
                out,
                "    <testcase classname=\"replay.mutation\" name=\"{}\">",
                xml(&m.name)
            );
            match m.verdict.as_str() {
                "fail" => {
                    let _ = write!(
                        out,
                        "<failure message=\"{}\">answers: {}; probe: {}</failure>",
                        xml(&m.detail),
                        xml(&m.answers.join("; ")),
                        xml(&m.probe)
                    );
                }
                "not applicable" => {
                    let why = m.skipped.as_deref().unwrap_or("not applicable");
                    let _ = write!(out, "<skipped message=\"{}\"/>", xml(why));
                }
                _ => {}
            }
            out.push_str("</testcase>\n");
        }
        out.push_str("  </testsuite>\n");
        if let Some(e) = expectation {
            write_expectation_case(&mut out, e);
        }
        out.push_str("</testsuites>\n");
        out
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The JUnit suite of `--expect`: one case, failed on any divergence; the notes (what
/// was not compared) in its system-out.
fn write_expectation_case(out: &mut String, e: &Expectation) {
    let d = &e.divergences;
    let _ = write!(
        out,
        "  <testsuite name=\"expectation\" tests=\"1\" failures=\"{}\">\n    <testcase classname=\"replay.expect\" name=\"outcome as saved\">",
        u8::from(!d.is_empty())
    );
    if !d.is_empty() {
        let _ = write!(
            out,
            "<failure message=\"{} divergence(s)\">{}</failure>",
            d.len(),
            xml_escape(&d.join("\n"))
        );
    }
    if !e.notes.is_empty() {
        let _ = write!(
            out,
            "<system-out>{}</system-out>",
            xml_escape(&e.notes.join("\n"))
        );
    }
    out.push_str("</testcase>\n  </testsuite>\n");
}

/// An outcome compared with a saved one (`--expect`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Expectation {
    /// Differences beyond the noise rules: any one fails the run.
    pub divergences: Vec<String>,
    /// What was not compared and why (an exchange or mutation not exercised in one of
    /// the two runs): never a divergence.
    pub notes: Vec<String>,
}

/// Compares an outcome with a saved one, beyond the noise rules: each exchange's live
/// answers and differences, each mutation's verdict, the new rules. An exchange or
/// mutation not exercised in either run is not compared; a note says so.
pub fn check_expected(expected: &Outcome, got: &Outcome) -> Expectation {
    let mut x = Expectation::default();
    if expected.exchanges.len() != got.exchanges.len() {
        x.divergences.push(format!(
            "exchanges: expected {}, got {}",
            expected.exchanges.len(),
            got.exchanges.len()
        ));
    }
    for (e, g) in expected.exchanges.iter().zip(&got.exchanges) {
        compare_exchange(e, g, &mut x);
    }
    if expected.orphan_replies != got.orphan_replies {
        x.divergences.push(format!(
            "replies to nothing sent: expected {}, got {}",
            expected.orphan_replies.len(),
            got.orphan_replies.len()
        ));
    }
    compare_mutations(expected, got, &mut x);
    let rules = |o: &Outcome| -> BTreeSet<String> {
        o.new_findings.iter().map(|f| f.rule.clone()).collect()
    };
    if rules(expected) != rules(got) {
        x.divergences.push(format!(
            "new rules: expected {:?}, got {:?}",
            rules(expected),
            rules(got)
        ));
    }
    x
}

/// [`check_expected`]'s divergences only.
pub fn compare_expected(expected: &Outcome, got: &Outcome) -> Vec<String> {
    check_expected(expected, got).divergences
}

/// "passed" or "failed", as an expectation file holds an exchange.
fn verdict_of(x: &Exchange) -> &'static str {
    if x.diffs.is_empty() {
        "passed"
    } else {
        "failed"
    }
}

/// One exchange of a saved outcome against the same exchange of this run.
fn compare_exchange(e: &Exchange, g: &Exchange, x: &mut Expectation) {
    let name = format!("exchange {} {}", g.index, g.request);
    if let Some(why) = &g.skipped {
        x.notes.push(format!(
            "{name}: {why}; the expectation has it {}: not counted as a divergence",
            verdict_of(e)
        ));
        return;
    }
    if e.skipped.is_some() {
        if g.diffs.is_empty() {
            x.notes.push(format!(
                "{name}: not exercised in the expectation, exercised in this run and as recorded"
            ));
        } else {
            x.divergences.push(format!(
                "{name}: not exercised in the expectation; in this run it differs from the recording: {}",
                g.diffs.join("; ")
            ));
        }
        return;
    }
    let mut v = vec![];
    let to = |a: &judge::Answer| serde_json::to_value(a).unwrap_or(Value::Null);
    judge::diff_values("live", &to(&e.live), &to(&g.live), &mut v);
    if e.request != g.request {
        v.push(format!(
            "request: expected {}, got {}",
            e.request, g.request
        ));
    }
    if e.diffs != g.diffs {
        v.push(format!(
            "differences from the recording: expected {:?}, got {:?}",
            e.diffs, g.diffs
        ));
    }
    x.divergences
        .extend(v.into_iter().map(|d| format!("{name}: {d}")));
}

/// Each mutation's verdict; one not exercised in either run is a note.
fn compare_mutations(expected: &Outcome, got: &Outcome, x: &mut Expectation) {
    let exercised = |o: &Outcome| -> Vec<(String, String)> {
        o.mutations
            .iter()
            .filter(|m| m.skipped.is_none())
            .map(|m| (m.name.clone(), m.verdict.clone()))
            .collect()
    };
    let not_exercised: BTreeSet<&str> = expected
        .mutations
        .iter()
        .chain(&got.mutations)
        .filter(|m| m.skipped.is_some())
        .map(|m| m.name.as_str())
        .collect();
    let compared = |o: &Outcome| -> Vec<(String, String)> {
        exercised(o)
            .into_iter()
            .filter(|(n, _)| !not_exercised.contains(n.as_str()))
            .collect()
    };
    if compared(expected) != compared(got) {
        x.divergences.push(format!(
            "mutations: expected {:?}, got {:?}",
            compared(expected),
            compared(got)
        ));
    }
    for m in got.mutations.iter().filter(|m| m.skipped.is_some()) {
        x.notes.push(format!(
            "mutation {}: {}: not counted as a divergence",
            m.name,
            m.skipped.as_deref().unwrap_or("")
        ));
    }
}

/// Loads a saved outcome.
pub fn load_expected(path: &std::path::Path) -> Result<Outcome, ReplayError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ReplayError::Expect(format!("{}: {e}", path.display())))?;
    serde_json::from_str(&text).map_err(|e| ReplayError::Expect(format!("{}: {e}", path.display())))
}

/// `edgetap replay --list-mutations`.
pub fn list_mutations() -> String {
    let mut s =
        String::from("Built-in mutations (--mutate NAME; --mutate FILE.json for custom ones):\n");
    for n in mutate::LIBRARY {
        let _ = writeln!(
            s,
            "  {:<24} {:<22} {}\n  {:<24} {:<22} expects: {}",
            n.name,
            n.roles,
            n.about,
            "",
            "",
            n.expect.describe()
        );
    }
    s
}

/// Runs a replay in a runtime of its own.
pub fn run_blocking(s: ReplaySettings, rules: Arc<RuleSet>) -> Result<Outcome, ReplayError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run(s, rules))
}

/// Loads the source, replays it, runs the mutations.
pub async fn run(s: ReplaySettings, rules: Arc<RuleSet>) -> Result<Outcome, ReplayError> {
    run_ready(s, rules, None).await
}

/// [`run`], telling `ready` once subscribed (before the first message is played), so
/// that a counterpart started then misses nothing.
pub async fn run_ready(
    s: ReplaySettings,
    rules: Arc<RuleSet>,
    ready: Option<tokio::sync::oneshot::Sender<()>>,
) -> Result<Outcome, ReplayError> {
    let rec = source::load(&s.source, rules.clone(), &s.ports)?;
    let recorded_edge = rec.messages[0].topic.edge_id.clone();
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
    if !sess.inline.is_empty() {
        sess.watch = Some(vec![]);
        sess.inline_probe = Some(sess.probe().await?);
        sess.watch = None;
    }
    for (n, name, spec) in later {
        results.push((n, sess.mutation(&name, spec).await?));
    }
    sess.finish(baseline_end, results, &rec.findings).await
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
fn not_exercised_reason(msg_type: &str, first: &str, waited: Duration) -> String {
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
    inline: Vec<InlineRun>,
    /// Recorded message index → its in-place mutation.
    inline_at: HashMap<usize, usize>,
    /// The liveness probe after the in-place mutations.
    inline_probe: Option<(bool, String)>,
    /// Recorded messages of ours already sent out of order.
    skip: HashSet<usize>,
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
        let (link, rx) = Link::connect(
            &s.broker,
            &id,
            s.protocol,
            &filters,
            Duration::from_secs(10),
        )
        .await?;
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
        let connect = connect_bytes(&id);
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
            sent: HashMap::new(),
            their_mid: HashMap::new(),
            watch: None,
            mutation_mids: HashSet::new(),
            mutation_jobs: HashSet::new(),
            mutation_results: vec![],
            orphans: vec![],
            inline: vec![],
            inline_at: HashMap::new(),
            inline_probe: None,
            skip: HashSet::new(),
        })
    }

    /// The sink of the live session: its findings, and its message sequence.
    fn collector(&mut self) -> Collector {
        Collector {
            findings: vec![],
            timeline: Some(std::mem::take(&mut self.chart)),
        }
    }

    /// Every protocol message of the live session goes to the rule engine, in the
    /// order this client saw it (like the sims' tap: one broker → client stream).
    fn judge_live(&mut self, topic: &str, payload: &[u8]) {
        self.packet += 1;
        let t = crate::sim::now_us();
        let b = publish_bytes(topic, payload);
        let mut c = self.collector();
        self.analyzer
            .data(1, Side::Server, t, self.packet, &b, &mut c);
        self.chart = c.timeline.unwrap_or_default();
        self.findings.extend(c.findings);
        self.frames.push((t, b, false));
    }

    async fn publish(&mut self, topic: &str, payload: Vec<u8>) -> Result<(), ReplayError> {
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
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            match tokio::time::timeout(left, self.rx.recv()).await {
                Ok(Some(m)) => self.incoming(m),
                Ok(None) | Err(_) => return done(self),
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
                        let ex = &mut self.exchanges[x];
                        if ex.live.reply.is_none() {
                            ex.live.reply = Some(norm);
                            if let Some((&i, _)) = self.ex_reply.iter().find(|(_, &e)| e == x) {
                                self.seen.insert(i);
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
                    let ex = &mut self.exchanges[x];
                    if ex.live.job_result.is_none() {
                        ex.live.job_result = Some(norm);
                        if let Some((&i, _)) = self.ex_job.iter().find(|(_, &e)| e == x) {
                            self.seen.insert(i);
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
        for (i, m) in msgs.iter().enumerate() {
            if m.publisher() != self.us || self.skip.contains(&i) {
                continue;
            }
            self.await_answers(from, i).await;
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
                    let deadline = Instant::now() + self.request_wait();
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
        let acted = live_job.is_some_and(|j| self.mutation_results.contains(&j));
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
            Expect::ActOnce if accepted > 1 => problems.push(format!(
                "acted on the repeat: {accepted} answers of 200/202"
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
        // Late answers still count.
        let deadline = Instant::now() + Duration::from_millis(200);
        self.wait_until(deadline, &|_| false).await;
        self.link.disconnect().await;
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
        for x in &mut self.exchanges {
            judge::judge_exchange(x);
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
            live_edge: self.rw.live_edge.clone(),
            exchanges: self.exchanges,
            mutations,
            new_findings,
            orphan_replies: self.orphans,
            live_findings: self.findings.iter().map(FindingBrief::of).collect(),
        })
    }
}

fn connect_bytes(id: &str) -> Vec<u8> {
    let mut b = bytes::BytesMut::new();
    // A CONNECT this crate writes itself cannot fail to encode.
    let _ = rumqttc::mqttbytes::v4::Connect::new(id).write(&mut b);
    b.to_vec()
}

fn publish_bytes(topic: &str, payload: &[u8]) -> Vec<u8> {
    let mut b = bytes::BytesMut::new();
    let p = rumqttc::mqttbytes::v4::Publish::new(
        topic,
        rumqttc::mqttbytes::QoS::AtMostOnce,
        payload.to_vec(),
    );
    let _ = p.write(&mut b);
    b.to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exchange(index: usize, from: &str, request: &str) -> Exchange {
        Exchange {
            index,
            from: from.into(),
            request: request.into(),
            topic: format!("/v1/E/device/{from}"),
            recorded: judge::Answer::default(),
            live: judge::Answer::default(),
            diffs: vec![],
            skipped: None,
        }
    }

    fn outcome(exchanges: Vec<Exchange>) -> Outcome {
        Outcome {
            source: "session.pcap".into(),
            role: Role::Platform,
            seed: 1,
            recorded_edge: "E".into(),
            live_edge: "E".into(),
            exchanges,
            mutations: vec![],
            new_findings: vec![],
            orphan_replies: vec![],
            live_findings: vec![],
            record: None,
        }
    }

    fn skipped_linkup() -> Exchange {
        let mut x = exchange(0, "edge", "EVENT_LINKUP");
        x.skipped = Some(not_exercised_reason(
            "EVENT_LINKUP",
            "EVENT_LINKUP",
            Duration::from_secs(10),
        ));
        x
    }

    #[test]
    fn the_reason_names_the_wait_and_the_remedy() {
        let first = not_exercised_reason("EVENT_LINKUP", "EVENT_LINKUP", Duration::from_secs(10));
        assert!(first.starts_with(
            "not exercised: the edge did not send EVENT_LINKUP within 10 s — it was probably already online"
        ));
        assert!(first.ends_with("start the replay before the device powers on, or restart it"));
        let topo =
            not_exercised_reason("CMD_TOPO_ADD", "EVENT_LINKUP", Duration::from_millis(1500));
        assert!(topo.contains("CMD_TOPO_ADD by itself"), "{topo}");
        assert!(topo.contains("no EVENT_LINKUP within 1.5 s"), "{topo}");
    }

    #[test]
    fn a_skipped_exchange_is_neither_pass_nor_fail() {
        let o = outcome(vec![
            skipped_linkup(),
            exchange(1, "platform", "CMD_SYS_STATUS"),
        ]);
        assert!(!o.failed());
        let table = o.to_table();
        assert!(
            table.contains("1 compared, 1 as recorded, 0 different, 1 not exercised"),
            "{table}"
        );
        assert!(table.contains("SKIP edge"), "{table}");
        assert!(
            table.contains("RESULT: as recorded (1 exchange(s) started by the edge not exercised"),
            "{table}"
        );
        let junit = o.to_junit(None);
        assert!(junit.contains("failures=\"0\" skipped=\"1\""), "{junit}");
        assert!(
            junit.contains(
                "<skipped message=\"not exercised: the edge did not send EVENT_LINKUP within 10 s"
            ),
            "{junit}"
        );
        assert!(!junit.contains("<failure"), "{junit}");
    }

    #[test]
    fn a_skipped_exchange_is_no_divergence_from_an_expectation_that_passed_it() {
        let expected = outcome(vec![exchange(0, "edge", "EVENT_LINKUP")]);
        let got = outcome(vec![skipped_linkup()]);
        let e = check_expected(&expected, &got);
        assert!(e.divergences.is_empty(), "{e:#?}");
        assert_eq!(e.notes.len(), 1);
        assert!(
            e.notes[0].contains("has it passed: not counted as a divergence"),
            "{e:#?}"
        );
        let junit = got.to_junit(Some(&e));
        assert!(
            junit.contains("<system-out>exchange 0 EVENT_LINKUP: not exercised"),
            "{junit}"
        );
    }

    #[test]
    fn an_exchange_skipped_in_the_expectation_still_fails_when_it_differs_now() {
        let expected = outcome(vec![skipped_linkup()]);
        let clean = outcome(vec![exchange(0, "edge", "EVENT_LINKUP")]);
        let e = check_expected(&expected, &clean);
        assert!(e.divergences.is_empty() && e.notes.len() == 1, "{e:#?}");
        let mut differs = exchange(0, "edge", "EVENT_LINKUP");
        differs.diffs = vec!["request.param.dev: missing".into()];
        let e = check_expected(&expected, &outcome(vec![differs]));
        assert_eq!(e.divergences.len(), 1, "{e:#?}");
        assert!(e.divergences[0].contains("request.param.dev: missing"));
    }

    #[test]
    fn an_expectation_file_without_skips_still_loads() {
        let v = serde_json::to_value(outcome(vec![exchange(0, "edge", "EVENT_LINKUP")])).unwrap();
        assert!(v["exchanges"][0].get("skipped").is_none());
        let o: Outcome = serde_json::from_value(v).unwrap();
        assert!(o.exchanges[0].skipped.is_none());
    }
}
