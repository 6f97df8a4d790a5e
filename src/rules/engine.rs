//! The rule engine: takes protocol messages in order, applies every rule of the set,
//! and keeps the state that pairing and the sequences of clause 6 need (pending
//! requests, jobs, per-edge link state, assigned ids, active alarms, report times).
//!
//! It is sans-IO and time comes in with the messages: the same engine judges a pcap,
//! a live proxy session and a replay.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use crate::protocol::json::same_name;
use crate::protocol::{Envelope, Val, View};

use super::model::{Check, PathSel, Selector, Target, TypeDef};
use super::schema::{self, Violation};
use super::{Rule, RuleSet};
use crate::finding::{ConnId, Finding, Severity, Side};
use crate::protocol::{self, Actor, Class, Deviation, Message, PayloadError};

/// Where a transport-level finding happened.
#[derive(Debug, Clone, Default)]
pub struct Place {
    pub conn: Option<ConnId>,
    pub side: Option<Side>,
    pub packet: Option<u64>,
    pub time_us: Option<i64>,
    pub offset: Option<u64>,
    pub edge_id: Option<String>,
    pub topic: Option<String>,
}

impl Place {
    /// A place in the capture: front-end unit number and time.
    pub fn frame(packet: u64, time_us: i64) -> Place {
        Place {
            packet: Some(packet),
            time_us: Some(time_us),
            ..Place::default()
        }
    }

    /// The same place, on a connection and side, at a stream offset.
    pub fn on(self, conn: ConnId, side: Option<Side>, offset: Option<u64>) -> Place {
        Place {
            conn: Some(conn),
            side,
            offset,
            ..self
        }
    }
}

type Vars = Vec<(&'static str, String)>;

/// A request is answered on its own channel, by the other side, with its mid. The
/// edge's request mids and the platform's command mids are independent number
/// spaces, so the side that issued the request is part of the key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PairKey {
    edge: String,
    channel: String,
    requester: Actor,
    mid: u64,
}

/// Jobs are keyed by edge, the channel whose data topic carries their result, and
/// jobId: the standard never makes a jobId unique across job kinds.
type JobKey = (String, String, u64);

fn other(a: Actor) -> Actor {
    match a {
        Actor::Edge => Actor::Platform,
        Actor::Platform => Actor::Edge,
    }
}

fn actor_index(a: Actor) -> usize {
    match a {
        Actor::Edge => 0,
        Actor::Platform => 1,
    }
}

/// What a run saw of each clause: messages, and what it could not judge and why.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Coverage {
    /// Messages seen per clause: a clause with none is "not exercised".
    pub messages: BTreeMap<String, u64>,
    /// Per clause: checks that could not be made, with the reason and how often
    /// (the clause is then "partly exercised").
    pub unseen: BTreeMap<String, BTreeMap<String, u64>>,
}

/// Distinct reasons kept per clause; more are counted under one line.
const UNSEEN_REASONS_MAX: usize = 20;

impl Coverage {
    pub fn get(&self, clause: &str) -> Option<&u64> {
        self.messages.get(clause)
    }

    pub fn note(&mut self, clause: &str, reason: String) {
        let reasons = self.unseen.entry(clause.to_string()).or_default();
        let key = if reasons.len() >= UNSEEN_REASONS_MAX && !reasons.contains_key(&reason) {
            "(more of the same kind, for other edges or ids)".to_string()
        } else {
            reason
        };
        *reasons.entry(key).or_default() += 1;
    }

    /// Adds another part's counts (a run judged on two threads).
    pub fn merge(&mut self, other: &Coverage) {
        for (c, n) in &other.messages {
            *self.messages.entry(c.clone()).or_default() += n;
        }
        for (c, reasons) in &other.unseen {
            for (r, n) in reasons {
                *self.unseen.entry(c.clone()).or_default().entry(r.clone()).or_default() += n;
            }
        }
    }
}

#[derive(Debug, Clone)]
struct Pending {
    msg_type: String,
    time_us: i64,
    packet: u64,
    invalid: Option<String>,
    /// The request, for the fields its reply and job are judged by.
    env: Option<Envelope>,
    topic: String,
}

#[derive(Debug, Clone)]
struct Job {
    kind: String,
    /// The command's `policy`: seconds before the job starts (0 = now).
    policy_s: f64,
    result_channel: String,
    result_after: Vec<i64>,
    reply_optional: bool,
    reply_code: Option<i64>,
    results: u32,
    last: BTreeMap<String, f64>,
    packet: u64,
    time_us: i64,
    /// mid of the request that opened the job.
    mid: Option<u64>,
}

#[derive(Debug, Default)]
struct EdgeState {
    /// (rule index, connection) of `first_message` rules already judged.
    first_judged: HashSet<(usize, ConnId)>,
    /// An EVENT_LINKUP of this edge was seen: its session began inside the input.
    linked_up: bool,
    /// Per actor (edge, platform): a message it published on a connection whose
    /// start edgetap saw; everything it sent since is in the input.
    session_seen: [bool; 2],
    /// Rule ids of `silent_after` rules currently in force.
    silenced: HashSet<String>,
    /// Per rule id: ids assigned so far.
    assigned: HashMap<String, HashSet<String>>,
    /// Per rule id: active alarm values.
    alarms: HashMap<String, HashSet<String>>,
    /// Per rule id: (announced period in seconds, time of the last report).
    period: HashMap<String, (Option<f64>, Option<i64>)>,
}

/// What the code of a reply means for its request.
#[derive(Debug, Clone, PartialEq)]
enum CodeVerdict {
    Fine,
    Wrong {
        expected: Vec<i64>,
        basis: Option<Arc<str>>,
    },
    SuccessToInvalid,
    ErrorToValid,
}

/// The rules `content_checks` applies, found once per engine: most schema rules name
/// the types they judge, and testing some forty selectors on every message cost more
/// than the checks that applied.
#[derive(Default)]
struct ContentIndex {
    /// Payload and envelope rules, and schema rules for any type, in rule order.
    always: Vec<usize>,
    /// Schema rules naming their types, per type, in rule order.
    by_type: HashMap<String, Vec<usize>>,
}

impl ContentIndex {
    fn of(rules: &RuleSet) -> ContentIndex {
        let mut ix = ContentIndex::default();
        for (i, r) in rules.rules.iter().enumerate() {
            match &r.def.check {
                Check::Schema { when, .. } => match &when.types {
                    Some(types) => {
                        for t in types.values() {
                            let v = ix.by_type.entry(t.to_string()).or_default();
                            if v.last() != Some(&i) {
                                v.push(i);
                            }
                        }
                    }
                    None => ix.always.push(i),
                },
                Check::InvalidJson | Check::NotObject => ix.always.push(i),
                _ => {}
            }
        }
        ix
    }

    /// Indices of the rules for a message of type `t`, in rule order.
    fn rules_for(&self, t: Option<&str>) -> Vec<usize> {
        let typed = t.and_then(|t| self.by_type.get(t)).map_or(&[][..], |v| v);
        let mut out = Vec::with_capacity(self.always.len() + typed.len());
        let (mut a, mut b) = (self.always.iter().peekable(), typed.iter().peekable());
        loop {
            let next = match (a.peek(), b.peek()) {
                (Some(&&x), Some(&&y)) if x < y => a.next(),
                (Some(_), Some(_)) | (None, Some(_)) => b.next(),
                (Some(_), None) => a.next(),
                (None, None) => break,
            };
            out.extend(next.copied());
        }
        out
    }
}

pub struct Engine {
    rules: Arc<RuleSet>,
    content: ContentIndex,
    pending: HashMap<PairKey, Pending>,
    answered: HashMap<PairKey, (u64, i64)>,
    jobs: HashMap<JobKey, Job>,
    edges: HashMap<String, EdgeState>,
    exercised: Coverage,
    /// (connection, rule id, deviation kind) already reported by a dialect rule.
    dialect_reported: HashSet<(ConnId, String, String)>,
    /// Time of the last message: what "the input ended" means for pending work.
    last_time_us: i64,
    last_prune_us: i64,
    /// Per key-naming rule: keys already found to conform.
    good_keys: HashMap<String, KeyCache>,
}

/// Field names a naming rule accepted. Messages repeat the same few dozen names, and
/// a hash lookup costs a fraction of a regex match; bounded so that a stream of
/// distinct names cannot grow it.
#[derive(Default)]
struct KeyCache {
    known: HashSet<Box<str>, ahash::RandomState>,
    /// The keys of the last message in walk order, and the position in it: a
    /// message like the last one is checked by comparing names, without hashing.
    last: Vec<Box<str>>,
    at: usize,
}

impl KeyCache {
    const MAX: usize = 4096;

    fn start(&mut self) {
        self.at = 0;
    }

    fn conforms(&mut self, key: &str, r: &regex::Regex) -> bool {
        let at = self.at;
        self.at += 1;
        if self.last.get(at).is_some_and(|k| same_name(k, key)) {
            return true;
        }
        let ok = self.known.contains(key) || r.is_match(key);
        if ok {
            if self.known.len() < Self::MAX {
                self.known.insert(key.into());
            }
            if at < self.last.len() {
                self.last[at] = key.into();
            } else if at == self.last.len() && at < Self::MAX {
                self.last.push(key.into());
            }
        }
        ok
    }
}

/// The message that starts an edge's session (6.1.1: the access request a device
/// sends when it powers on): history-dependent rules judge an edge only once its
/// session began inside the input.
const SESSION_START: &str = "EVENT_LINKUP";

/// Answered requests are remembered this long to recognise duplicate replies; the
/// bound keeps memory flat over long captures.
const ANSWERED_RETENTION_US: i64 = 600 * 1_000_000;

impl Engine {
    pub fn new(rules: Arc<RuleSet>) -> Engine {
        Engine {
            content: ContentIndex::of(&rules),
            rules,
            pending: HashMap::new(),
            answered: HashMap::new(),
            jobs: HashMap::new(),
            edges: HashMap::new(),
            exercised: Coverage::default(),
            dialect_reported: HashSet::new(),
            last_time_us: i64::MIN,
            last_prune_us: 0,
            good_keys: HashMap::new(),
        }
    }

    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    /// Messages seen per clause (a clause with none is "not exercised"), and what
    /// could not be judged for want of history.
    pub fn exercised(&self) -> &Coverage {
        &self.exercised
    }

    pub fn note_exercised(&mut self, clause: &str) {
        match self.exercised.messages.get_mut(clause) {
            Some(n) => *n += 1,
            None => {
                self.exercised.messages.insert(clause.to_string(), 1);
            }
        }
    }

    /// The input ends at `t` (µs) at the latest: pending work is judged against it.
    pub fn input_ends(&mut self, t: i64) {
        self.last_time_us = self.last_time_us.max(t);
    }

    /// A check of `clause` that needed history outside the input.
    fn unseen(&mut self, clause: &str, reason: String) {
        self.exercised.note(clause, reason);
    }

    /// Emits a finding of every rule whose check `pick` selects, at a transport place.
    pub fn emit_at(
        &self,
        pick: impl Fn(&Check) -> bool,
        place: &Place,
        vars: Vars,
        out: &mut Vec<Finding>,
    ) {
        for rule in self.rules.rules.iter().filter(|r| pick(&r.def.check)) {
            out.push(Finding {
                rule: rule.def.id.clone(),
                clause: rule.def.clause.clone().unwrap_or_else(|| "5.2".into()),
                table: rule.def.table.clone(),
                severity: rule.def.severity,
                edge_id: place.edge_id.clone(),
                msg_type: None,
                topic: place.topic.clone(),
                mid: None,
                packet: place.packet,
                time: place.time_us,
                message: fill(&rule.def.message, &vars),
                conn: place.conn,
                side: place.side,
                offset: place.offset,
                basis: rule.def.basis.clone(),
            });
        }
    }

    /// Judges one message and updates the state.
    pub fn on_message(&mut self, m: &Message, out: &mut Vec<Finding>) {
        let rules = Arc::clone(&self.rules);
        let ctx = self.context(m);
        self.note_exercised("5.3");
        if let Some(c) = &ctx.clause {
            if ctx.typedef.is_some() {
                self.note_exercised(c);
            }
        }
        let first = out.len();
        let env = m.envelope();
        self.last_time_us = self.last_time_us.max(m.time_us);

        // Content checks: their errors make a request invalid.
        self.content_checks(m, &ctx, out);
        let invalid = out[first..]
            .iter()
            .find(|f| f.severity == Severity::Error)
            .map(|f| f.message.clone());
        self.dialect(m, &ctx, out);

        // Naming, topic and time checks: they report, but do not make a request invalid.
        for rule in &rules.rules {
            match &rule.def.check {
                Check::TopicMissingSlash if m.topic.missing_slash => {
                    out.push(ctx.finding(rule, m, ctx.vars(m)));
                }
                Check::TopicPlaceholder if m.topic.placeholder => {
                    let mut v = ctx.vars(m);
                    v.push(("seen", m.topic.edge_id.clone()));
                    out.push(ctx.finding(rule, m, v));
                }
                _ => {}
            }
        }
        if let Some(t) = ctx.msg_type.as_deref() {
            for rule in &rules.rules {
                match &rule.def.check {
                    Check::TypeUnknown if ctx.typedef.is_none() => {
                        out.push(ctx.finding(rule, m, ctx.vars(m)));
                    }
                    Check::TopicMismatch => {
                        if let Some(expected) = ctx.topic_mismatch(m) {
                            let mut v = ctx.vars(m);
                            v.push(("expected", expected));
                            out.push(ctx.finding(rule, m, v));
                        }
                    }
                    Check::TypeNaming { .. } => {
                        if let Some(r) = rule.regexes.get(ctx.class.as_str()) {
                            if !r.is_match(t) {
                                let mut v = ctx.vars(m);
                                v.push((
                                    "detail",
                                    format!(
                                        "a {} type must match /{}/",
                                        ctx.class.as_str(),
                                        r.as_str()
                                    ),
                                ));
                                out.push(ctx.finding(rule, m, v));
                            }
                        }
                    }
                    Check::TypeWordLength { max } => {
                        for w in t.split('_').filter(|w| w.chars().count() > *max) {
                            let mut v = ctx.vars(m);
                            v.push(("seen", w.to_string()));
                            v.push(("expected", max.to_string()));
                            out.push(ctx.finding(rule, m, v));
                        }
                    }
                    Check::KeyNaming { .. } => {
                        if let (Some(r), Some(env)) = (rule.regexes.get(""), env) {
                            let mut bad = vec![];
                            let cache = slot(&mut self.good_keys, &rule.def.id);
                            cache.start();
                            if !all_keys_match(env, r, cache) {
                                bad_keys("", env.root(), r, &mut bad);
                            }
                            for p in bad {
                                let mut v = ctx.vars(m);
                                v.push(("path", p));
                                out.push(ctx.finding(rule, m, v));
                            }
                        }
                    }
                    Check::Expired => {
                        if let Some(detail) = expired(m) {
                            let mut v = ctx.vars(m);
                            v.push(("detail", detail));
                            out.push(ctx.finding(rule, m, v));
                        }
                    }
                    _ => {}
                }
            }
        }

        self.sequences(m, &ctx, out);
        match ctx.class {
            Class::Request => self.on_request(m, &ctx, invalid),
            Class::Reply => self.on_reply(m, &ctx, out),
            Class::Report => self.on_report(m, &ctx, out),
        }
        self.prune(m.time_us);
    }

    /// Payload, envelope and schema checks of one message: what makes a request
    /// invalid. Reads no session state.
    fn content_checks(&self, m: &Message, ctx: &Ctx, out: &mut Vec<Finding>) {
        let rules = Arc::clone(&self.rules);
        let env = m.envelope();
        for i in self.content.rules_for(ctx.msg_type.as_deref()) {
            let rule = &rules.rules[i];
            let vars_base = || ctx.vars(m);
            match &rule.def.check {
                Check::InvalidJson => {
                    if let Err(PayloadError::InvalidJson(e)) = &m.body {
                        let mut v = vars_base();
                        v.push(("detail", e.clone()));
                        out.push(ctx.finding(rule, m, v));
                    }
                }
                Check::NotObject => {
                    if let Err(PayloadError::NotObject(t)) = &m.body {
                        let mut v = vars_base();
                        v.push(("seen", t.to_string()));
                        out.push(ctx.finding(rule, m, v));
                    }
                }
                Check::Schema {
                    when,
                    target,
                    fields,
                } => {
                    let Some(env) = env else { continue };
                    if !ctx.selects(when, m) {
                        continue;
                    }
                    // An error reply carries no result: the reply's param tables
                    // describe successful answers only.
                    let error_reply = ctx.class == Class::Reply
                        && env.code.is_some_and(|c| !(200..300).contains(&c));
                    if *target == Target::Param && error_reply {
                        continue;
                    }
                    for viol in schema_violations(env, *target, fields, rule) {
                        // A tolerated deviation (a string code, an epoch
                        // timestamp) is reported once per connection by its
                        // dialect rule, not on every message.
                        if *target == Target::Message
                            && env
                                .deviations
                                .iter()
                                .any(|d| d.field() == Some(viol.path.as_str()))
                        {
                            continue;
                        }
                        let mut v = vars_base();
                        v.push(("detail", viol.detail()));
                        v.push(("path", viol.path));
                        v.push(("expected", viol.expected));
                        v.push(("seen", viol.seen));
                        out.push(ctx.finding(rule, m, v));
                    }
                }
                _ => {}
            }
        }
    }

    /// Tolerated payload deviations: each reported once per connection, rule and
    /// kind; the message itself was read as the sender meant it.
    fn dialect(&mut self, m: &Message, ctx: &Ctx, out: &mut Vec<Finding>) {
        let Some(env) = m.envelope() else { return };
        if env.deviations.is_empty() {
            return;
        }
        let rules = Arc::clone(&self.rules);
        for rule in &rules.rules {
            let kinds: &[String] = match &rule.def.check {
                Check::Dialect { deviations } => deviations,
                Check::KeyWhitespace => &[],
                _ => continue,
            };
            for d in &env.deviations {
                let listed = kinds.iter().any(|k| k == d.kind())
                    || (matches!(rule.def.check, Check::KeyWhitespace)
                        && matches!(d, Deviation::KeyWhitespace { .. }));
                if !listed {
                    continue;
                }
                // Once per kind and envelope member: a string mid and a string
                // code are two things to fix.
                let what = format!("{}/{}", d.kind(), d.field().unwrap_or(""));
                let k = (m.conn, rule.def.id.clone(), what);
                if !self.dialect_reported.insert(k) {
                    continue;
                }
                let mut v = ctx.vars(m);
                v.push(("seen", d.seen()));
                v.push(("expected", d.read_as()));
                v.push(("detail", d.kind().to_string()));
                out.push(ctx.finding(rule, m, v));
            }
        }
    }

    /// Judges one message on its own, without a session: the content checks and
    /// expiry. A counterpart (the reference sims, a replayer) asks this to decide
    /// whether to reject a request, so that it rejects exactly what the rules reject.
    pub fn judge_alone(rules: &Arc<RuleSet>, m: &Message) -> Vec<Finding> {
        let engine = Engine::new(Arc::clone(rules));
        let ctx = engine.context(m);
        let mut out = vec![];
        engine.content_checks(m, &ctx, &mut out);
        if let Some(detail) = expired(m) {
            for rule in rules
                .rules
                .iter()
                .filter(|r| matches!(r.def.check, Check::Expired))
            {
                let mut v = ctx.vars(m);
                v.push(("detail", detail.clone()));
                out.push(ctx.finding(rule, m, v));
            }
        }
        out
    }

    fn on_request(&mut self, m: &Message, ctx: &Ctx, invalid: Option<String>) {
        let (Some(t), Some(mid)) = (ctx.msg_type.clone(), m.mid()) else {
            return;
        };
        let expects_reply = ctx
            .typedef
            .as_ref()
            .map_or(true, |d| !d.reply_codes.is_empty());
        if !expects_reply {
            return;
        }
        let param = m.envelope().and_then(|e| e.param());
        // An invalid request still opens its job: if the counterpart accepts it
        // (wrongly), its result belongs to that job.
        if let Some(def) = &ctx.typedef {
            if let (Some(job), Some(job_id)) = (&def.job, param_u64(param, "jobId")) {
                let policy_s = param
                    .and_then(|p| p.get("policy"))
                    .and_then(number_lenient)
                    .filter(|x| x.is_finite() && *x > 0.0)
                    .unwrap_or(0.0);
                self.jobs.insert(
                    (m.topic.edge_id.clone(), job.result_channel.clone(), job_id),
                    Job {
                        kind: t.clone(),
                        policy_s,
                        result_channel: job.result_channel.clone(),
                        result_after: job.result_after.clone(),
                        reply_optional: job.reply_optional,
                        reply_code: None,
                        results: 0,
                        last: BTreeMap::new(),
                        packet: m.packet,
                        time_us: m.time_us,
                        mid: Some(mid),
                    },
                );
            }
        }
        self.pending.insert(
            PairKey {
                edge: m.topic.edge_id.clone(),
                channel: m.topic.channel.clone(),
                requester: m.topic.publisher,
                mid,
            },
            Pending {
                msg_type: t,
                time_us: m.time_us,
                packet: m.packet,
                invalid,
                env: m.envelope().cloned(),
                topic: m.topic_name.clone(),
            },
        );
    }

    fn on_reply(&mut self, m: &Message, ctx: &Ctx, out: &mut Vec<Finding>) {
        let rules = Arc::clone(&self.rules);
        let Some(mid) = m.mid() else { return };
        let requester = other(m.topic.publisher);
        let key = PairKey {
            edge: m.topic.edge_id.clone(),
            channel: m.topic.channel.clone(),
            requester,
            mid,
        };
        let Some(req) = self.pending.remove(&key) else {
            let dup = self.answered.get(&key).copied();
            // An orphan is certain only when edgetap saw every request this reply
            // could answer: the replier's or the requester's session from its
            // start, or the edge's link-up.
            let edge = edge_state(&mut self.edges, &m.topic.edge_id);
            // A retained reply replayed at subscription answers a request of the past.
            let history = !m.retained
                && (m.origin_seen || edge.session_seen[actor_index(requester)] || edge.linked_up);
            for rule in &rules.rules {
                match (&rule.def.check, dup) {
                    (Check::ReplyDuplicate, Some((packet, _))) => {
                        let mut v = ctx.vars(m);
                        v.push(("detail", packet.to_string()));
                        out.push(ctx.finding(rule, m, v));
                    }
                    (Check::ReplyOrphan, None) if history => {
                        out.push(ctx.finding(rule, m, ctx.vars(m)))
                    }
                    (Check::ReplyOrphan, None) => {
                        let clause = ctx.clause.clone().unwrap_or_else(|| "5.3".into());
                        self.unseen(
                            &clause,
                            format!(
                                "edge {}: a reply (mid {mid}) may answer a request sent before \
                                 the input began; start the capture before the device connects \
                                 to judge every pairing",
                                m.topic.edge_id
                            ),
                        );
                    }
                    _ => {}
                }
            }
            return;
        };
        self.answered.insert(key, (m.packet, m.time_us));
        // Judge the reply as an answer to the request's type.
        let rctx = Ctx {
            msg_type: Some(req.msg_type.clone()),
            ..ctx.clone()
        };
        let latency_s = (m.time_us - req.time_us) as f64 / 1e6;
        let def = self.rules.types.get(&req.msg_type).cloned();
        let verdict = m
            .envelope()
            .and_then(|e| e.code)
            .map(|code| (code, code_verdict(code, def.as_deref(), &req, &rules)));
        for rule in &rules.rules {
            let mut v = rctx.vars(m);
            match &rule.def.check {
                Check::ReplyType => {
                    if let Some(seen) = ctx.msg_type.as_deref() {
                        if seen != req.msg_type {
                            v.push(("seen", seen.to_string()));
                            v.push(("expected", req.msg_type.clone()));
                            out.push(rctx.finding(rule, m, v));
                        }
                    }
                }
                Check::ReplyLate { deadline_s } => {
                    // No deadline of the standard's: the type's (a vendor file)
                    // or the user's (--reply-timeout), else none.
                    let Some(deadline) = def.as_ref().and_then(|d| d.deadline_s).or(*deadline_s)
                    else {
                        continue;
                    };
                    if latency_s > deadline {
                        v.push(("seen", format!("{latency_s:.3}")));
                        v.push(("expected", format!("{deadline}")));
                        out.push(rctx.finding(rule, m, v));
                    }
                }
                Check::ReplyCode => {
                    if let Some((code, CodeVerdict::Wrong { expected, basis })) = &verdict {
                        v.push(("seen", code.to_string()));
                        v.push(("expected", join_codes(expected)));
                        let mut f = rctx.finding(rule, m, v);
                        // The sentence that sets this type's codes, when the catalog has it.
                        if basis.is_some() {
                            f.basis = basis.clone();
                        }
                        out.push(f);
                    }
                }
                Check::ReplySuccessToInvalid { .. } => {
                    if let Some((code, CodeVerdict::SuccessToInvalid)) = &verdict {
                        v.push(("seen", code.to_string()));
                        v.push(("detail", req.invalid.clone().unwrap_or_default()));
                        out.push(rctx.finding(rule, m, v));
                    }
                }
                Check::ReplyErrorToValid { .. } => {
                    if let Some((code, CodeVerdict::ErrorToValid)) = &verdict {
                        v.push(("seen", code.to_string()));
                        let said = m
                            .envelope()
                            .and_then(|e| e.get("msg"))
                            .and_then(|x| x.as_str().map(str::to_string))
                            .map_or_else(|| "no msg".into(), |s| format!("msg \"{s}\""));
                        v.push(("detail", said));
                        out.push(rctx.finding(rule, m, v));
                    }
                }
                _ => {}
            }
        }
        let code = verdict.as_ref().map(|(c, _)| *c);
        // Jobs: the reply decides whether a result must follow.
        if let Some(jd) = def.as_ref().and_then(|d| d.job.as_ref()) {
            if let Some(job_id) = param_u64(req.env.as_ref().and_then(|e| e.param()), "jobId") {
                let k = (m.topic.edge_id.clone(), jd.result_channel.clone(), job_id);
                if let Some(job) = self.jobs.get_mut(&k) {
                    job.reply_code = code;
                }
            }
        }
        // Status queries: the reply's job and monotonic fields.
        if let (Some(q), Some(200)) = (def.as_ref().and_then(|d| d.queries_job.clone()), code) {
            self.status_reply(m, &rctx, &req, &q.monotonic, out);
        }
        // Sequences that read replies (assigned ids, announced periods).
        self.collect_assignments(m, &req.msg_type, Class::Reply);
    }

    fn status_reply(
        &mut self,
        m: &Message,
        ctx: &Ctx,
        req: &Pending,
        monotonic: &[String],
        out: &mut Vec<Finding>,
    ) {
        let rules = Arc::clone(&self.rules);
        let param = m.envelope().and_then(|e| e.param());
        let asked = param_u64(req.env.as_ref().and_then(|e| e.param()), "jobId");
        let told = param_u64(param, "jobId");
        if let (Some(a), Some(t)) = (asked, told) {
            if a != t {
                for rule in rules
                    .rules
                    .iter()
                    .filter(|r| matches!(r.def.check, Check::JobStatusMismatch))
                {
                    let mut v = ctx.vars(m);
                    v.push((
                        "detail",
                        format!("param.jobId {t} differs from the query's {a}"),
                    ));
                    out.push(ctx.finding(rule, m, v));
                }
            }
        }
        let Some(job_id) = asked else { return };
        let k = (m.topic.edge_id.clone(), m.topic.channel.clone(), job_id);
        let Some(job) = self.jobs.get_mut(&k) else {
            return;
        };
        let now: BTreeMap<String, f64> = monotonic
            .iter()
            .filter_map(|path| {
                let x = param.as_ref()?.get(path).and_then(number_lenient)?;
                Some((path.clone(), x))
            })
            .collect();
        for (path, &x) in &now {
            // A value goes back only while the others stay: progress is a
            // percentage of the current phase, and 100 % "downloaded" then 10 %
            // "installing" is progress.
            let others_same = now
                .iter()
                .filter(|(p, _)| *p != path)
                .all(|(p, v)| job.last.get(p) == Some(v));
            if let (Some(prev), true) = (job.last.get(path), others_same) {
                if x < *prev {
                    for rule in rules
                        .rules
                        .iter()
                        .filter(|r| matches!(r.def.check, Check::JobStatusRegress))
                    {
                        let mut v = ctx.vars(m);
                        v.push(("detail", job_id.to_string()));
                        v.push(("path", path.clone()));
                        v.push(("expected", prev.to_string()));
                        v.push(("seen", x.to_string()));
                        out.push(ctx.finding(rule, m, v));
                    }
                }
            }
        }
        job.last.extend(now);
    }

    fn on_report(&mut self, m: &Message, ctx: &Ctx, out: &mut Vec<Finding>) {
        let rules = Arc::clone(&self.rules);
        let Some(def) = &ctx.typedef else { return };
        if def.ends_jobs.is_empty() {
            return;
        }
        let param = m.envelope().and_then(|e| e.param());
        let Some(job_id) = param_u64(param, "jobId") else {
            return;
        };
        let edge = m.topic.edge_id.clone();
        let key = (edge.clone(), m.topic.channel.clone(), job_id);
        // A result on another channel's data topic than its job's: found by jobId
        // among the edge's jobs of other channels.
        let key = if self.jobs.contains_key(&key) {
            key
        } else {
            self.jobs
                .keys()
                .filter(|(e, _, id)| *e == edge && *id == job_id)
                .min_by_key(|k| self.jobs[*k].packet)
                .cloned()
                .unwrap_or(key)
        };
        let platform_seen = self
            .edges
            .get(&edge)
            .is_some_and(|e| e.session_seen[actor_index(Actor::Platform)]);
        let clause = ctx.clause.clone().unwrap_or_else(|| "5.3".into());
        if !self.jobs.contains_key(&key) && !platform_seen {
            self.unseen(
                &clause,
                format!(
                    "edge {edge}: job {job_id} was started before the input began; its command \
                     and reply are not known"
                ),
            );
        }
        self.job_outcome(m, ctx, job_id, out);
        let job = self.jobs.get_mut(&key);
        let mut fire = |pick: fn(&Check) -> bool, extra: Vars| {
            for rule in rules.rules.iter().filter(|r| pick(&r.def.check)) {
                let mut v = ctx.vars(m);
                v.push(("detail", job_id.to_string()));
                v.extend(extra.iter().cloned());
                out.push(ctx.finding(rule, m, v));
            }
        };
        let Some(job) = job else {
            if platform_seen {
                fire(|c| matches!(c, Check::JobResultOrphan), vec![]);
            }
            return;
        };
        if job.reply_code.is_none() && !job.reply_optional {
            fire(
                |c| matches!(c, Check::JobResultEarly),
                vec![("expected", job.kind.clone())],
            );
        }
        if job.results >= 1 {
            fire(|c| matches!(c, Check::JobResultDuplicate), vec![]);
        }
        if m.topic.channel != job.result_channel {
            fire(
                |c| matches!(c, Check::JobResultChannel),
                vec![
                    ("seen", m.topic.channel.clone()),
                    ("expected", job.result_channel.clone()),
                    ("type", job.kind.clone()),
                ],
            );
        }
        job.results += 1;
    }

    /// A job result that reports failure: an outcome of the job, reported as such
    /// (info), with the device's own code and text.
    fn job_outcome(&self, m: &Message, ctx: &Ctx, job_id: u64, out: &mut Vec<Finding>) {
        let Some(param) = m.envelope().and_then(|e| e.param()) else {
            return;
        };
        for rule in &self.rules.rules {
            let Check::JobFailed {
                code,
                text,
                success,
            } = &rule.def.check
            else {
                continue;
            };
            let Some((name, value)) = code
                .iter()
                .find_map(|c| Some((c, param.get(c).and_then(|v| protocol::as_i64_lenient(&v))?)))
            else {
                continue;
            };
            if success.contains(&value) {
                continue;
            }
            let said = text
                .iter()
                .find_map(|t| Some(format!("{t} \"{}\"", param.get(t)?.as_str()?)))
                .unwrap_or_else(|| "no description".into());
            let mut v = ctx.vars(m);
            v.push(("detail", job_id.to_string()));
            v.push(("seen", format!("{name} {value}")));
            v.push(("expected", said));
            if let Some(k) = &ctx.job_of {
                v.push(("job", k.clone()));
            }
            out.push(ctx.finding(rule, m, v));
        }
    }

    /// Per-edge sequences: link up/down, assigned ids, alarms, report spacing.
    fn sequences(&mut self, m: &Message, ctx: &Ctx, out: &mut Vec<Finding>) {
        let rules = Arc::clone(&self.rules);
        let Some(t) = ctx.msg_type.as_deref() else {
            return;
        };
        let edge = edge_state(&mut self.edges, &m.topic.edge_id);
        if m.origin_seen {
            edge.session_seen[actor_index(m.topic.publisher)] = true;
        }
        let by_edge = m.topic.publisher == Actor::Edge;
        let clause = ctx.clause.as_deref().unwrap_or("5.3");
        let mut unseen: Vec<(String, String)> = vec![];
        for (index, rule) in rules.rules.iter().enumerate() {
            let id = &rule.def.id;
            match &rule.def.check {
                Check::FirstMessage { msg_type } if by_edge => {
                    let first = edge.first_judged.insert((index, m.conn));
                    if !first || t == msg_type {
                        continue;
                    }
                    if !m.origin_seen {
                        // The connection began before the input: what the edge
                        // sent first is not known.
                        if !edge.linked_up {
                            unseen.push((
                                rule.def.clause.clone().unwrap_or_else(|| clause.to_string()),
                                format!(
                                    "edge {}: the input starts after its connection opened \
                                     (no CONNECT seen), so whether it sent {msg_type} first is \
                                     not known; start edgetap before the device powers on, or \
                                     restart the device",
                                    m.topic.edge_id
                                ),
                            ));
                        }
                    } else if !edge.linked_up {
                        // A reconnect of an edge already linked up is no power-on.
                        out.push(ctx.finding(rule, m, ctx.vars(m)));
                    }
                }
                Check::SilentAfter { msg_type, until } if by_edge => {
                    if t == *until {
                        edge.silenced.remove(id);
                    } else if edge.silenced.contains(id) {
                        out.push(ctx.finding(rule, m, ctx.vars(m)));
                    }
                    if t == *msg_type {
                        edge.silenced.insert(id.clone());
                    }
                }
                Check::IdAssigned { uses, .. } => {
                    let linked_up = edge.linked_up;
                    let known = slot(&mut edge.assigned, id);
                    for sel in uses.iter().filter(|s| path_sel_matches(s, &t, ctx.class)) {
                        for value in values_at(m, &sel.path) {
                            if known.contains(&value) {
                                continue;
                            }
                            if !linked_up {
                                unseen.push((
                                    rule.def.clause.clone().unwrap_or_else(|| clause.to_string()),
                                    format!(
                                        "edge {}: ids assigned before the input began are not \
                                         known (no EVENT_LINKUP seen), so {} was not checked",
                                        m.topic.edge_id, sel.path
                                    ),
                                ));
                                continue;
                            }
                            let mut v = ctx.vars(m);
                            v.push(("seen", value));
                            out.push(ctx.finding(rule, m, v));
                        }
                    }
                }
                Check::RecoveryFollows {
                    msg_type,
                    path,
                    pairs,
                } if t == *msg_type => {
                    let linked_up = edge.linked_up;
                    let active = edge.alarms.entry(id.clone()).or_default();
                    for value in values_at(m, path) {
                        if let Some(recovers) = pairs.get(&value) {
                            if active.remove(recovers) {
                                continue;
                            }
                            if !linked_up {
                                unseen.push((
                                    rule.def.clause.clone().unwrap_or_else(|| clause.to_string()),
                                    format!(
                                        "edge {}: alarms raised before the input began are not \
                                         known (no EVENT_LINKUP seen), so recovery {value} was \
                                         not checked",
                                        m.topic.edge_id
                                    ),
                                ));
                            } else {
                                let mut v = ctx.vars(m);
                                v.push(("seen", value.clone()));
                                v.push(("expected", recovers.clone()));
                                out.push(ctx.finding(rule, m, v));
                            }
                        } else {
                            active.insert(value);
                        }
                    }
                }
                Check::ReportPeriod {
                    msg_type,
                    period,
                    tolerance,
                } => {
                    let slot = slot(&mut edge.period, id);
                    if path_sel_matches(period, &t, ctx.class) {
                        if let Some(p) = values_at_json(m, &period.path)
                            .iter()
                            .find_map(|v| number_lenient(*v))
                        {
                            slot.0 = Some(p);
                        }
                    }
                    if t == *msg_type && ctx.class == Class::Report {
                        if let (Some(p), Some(last)) = (slot.0, slot.1) {
                            let dt = (m.time_us - last) as f64 / 1e6;
                            if p > 0.0 && (dt - p).abs() > tolerance * p {
                                let mut v = ctx.vars(m);
                                v.push(("seen", format!("{dt:.1}")));
                                v.push(("expected", format!("{p}")));
                                out.push(ctx.finding(rule, m, v));
                            }
                        }
                        slot.1 = Some(m.time_us);
                    }
                }
                _ => {}
            }
        }
        // A retained link-up replayed at subscription is history, not a session start.
        if by_edge && t == SESSION_START && !m.retained {
            edge.linked_up = true;
        }
        for (clause, reason) in unseen {
            self.unseen(&clause, reason);
        }
    }

    /// Records ids produced by a reply (e.g. deviceIds assigned by CMD_TOPO_ADD).
    fn collect_assignments(&mut self, m: &Message, msg_type: &str, class: Class) {
        let rules = Arc::clone(&self.rules);
        let edge = edge_state(&mut self.edges, &m.topic.edge_id);
        for rule in &rules.rules {
            if let Check::IdAssigned { assigns, .. } = &rule.def.check {
                for sel in assigns
                    .iter()
                    .filter(|s| path_sel_matches(s, msg_type, class))
                {
                    let set = slot(&mut edge.assigned, &rule.def.id);
                    set.extend(values_at(m, &sel.path));
                }
            }
        }
    }

    /// End of input: requests not answered and jobs without their result. The
    /// standard sets no deadline for either: they are pending (info), unless a
    /// limit the user set (`--reply-timeout`, `--job-timeout`) passed while the
    /// input went on.
    pub fn finish(&mut self, out: &mut Vec<Finding>) {
        let rules = Arc::clone(&self.rules);
        let end = self.last_time_us;
        let mut pending: Vec<(PairKey, Pending)> = self.pending.drain().collect();
        pending.sort_by_key(|(_, p)| p.packet);
        for (key, p) in pending {
            let waited_s = (end - p.time_us).max(0) as f64 / 1e6;
            let overdue = |after: &Option<f64>| after.is_some_and(|a| waited_s > a);
            let fired = rules.rules.iter().any(|r| {
                matches!(&r.def.check, Check::ReplyMissing { after_s } if overdue(after_s))
            });
            for rule in &rules.rules {
                let limit = match &rule.def.check {
                    Check::ReplyMissing { after_s } if overdue(after_s) => *after_s,
                    Check::ReplyPending if !fired => None,
                    _ => continue,
                };
                let clause = self.clause_of_type(&p.msg_type);
                let mut vars = vec![
                    ("type", p.msg_type.clone()),
                    ("mid", key.mid.to_string()),
                    ("edge_id", key.edge.clone()),
                    ("seen", format!("{waited_s:.1}")),
                ];
                if let Some(l) = limit {
                    vars.push(("expected", format!("{l}")));
                }
                out.push(self.end_finding(rule, clause, &key.edge, &p.msg_type, Some(&p.topic), Some(key.mid), p.packet, p.time_us, &vars));
            }
        }
        let mut jobs: Vec<(JobKey, Job)> = self.jobs.drain().collect();
        jobs.sort_by_key(|(_, j)| j.packet);
        for ((edge, _, job_id), job) in jobs {
            let Some(code) = job.reply_code else { continue };
            if job.results > 0 || !job.result_after.contains(&code) {
                continue;
            }
            // Due once its policy delay has passed; overdue only by a user limit.
            let running_s = (end - job.time_us).max(0) as f64 / 1e6 - job.policy_s;
            let overdue = |after: &Option<f64>| after.is_some_and(|a| running_s > a);
            let fired = rules.rules.iter().any(|r| {
                matches!(&r.def.check, Check::JobResultMissing { after_s } if overdue(after_s))
            });
            for rule in &rules.rules {
                let limit = match &rule.def.check {
                    Check::JobResultMissing { after_s } if overdue(after_s) => *after_s,
                    Check::JobPending if !fired => None,
                    _ => continue,
                };
                let clause = self.clause_of_type(&job.kind);
                let policy = if job.policy_s > 0.0 {
                    format!(", policy {} s", job.policy_s)
                } else {
                    String::new()
                };
                let mut vars = vec![
                    ("type", job.kind.clone()),
                    ("detail", job_id.to_string()),
                    ("seen", format!("{code}")),
                    ("edge_id", edge.clone()),
                    ("path", format!("{:.1} s after its command{policy}", (end - job.time_us).max(0) as f64 / 1e6)),
                ];
                if let Some(l) = limit {
                    vars.push(("expected", format!("{l}")));
                }
                out.push(self.end_finding(rule, clause, &edge, &job.kind, None, job.mid, job.packet, job.time_us, &vars));
            }
        }
    }

    /// A finding about what the end of input left open.
    #[allow(clippy::too_many_arguments)]
    fn end_finding(
        &self,
        rule: &Rule,
        clause: String,
        edge: &str,
        msg_type: &str,
        topic: Option<&str>,
        mid: Option<u64>,
        packet: u64,
        time_us: i64,
        vars: &Vars,
    ) -> Finding {
        Finding {
            rule: rule.def.id.clone(),
            clause: rule.def.clause.clone().unwrap_or(clause),
            table: rule.def.table.clone(),
            severity: rule.def.severity,
            edge_id: Some(edge.to_string()),
            msg_type: Some(msg_type.to_string()),
            topic: topic.map(str::to_string),
            mid,
            packet: Some(packet),
            time: Some(time_us),
            message: fill(&rule.def.message, vars),
            conn: None,
            side: None,
            offset: None,
            basis: rule.def.basis.clone(),
        }
    }

    fn clause_of_type(&self, t: &str) -> String {
        self.rules
            .types
            .get(t)
            .map_or_else(|| "5.3".into(), |d| d.clause.clone())
    }

    fn prune(&mut self, now_us: i64) {
        if now_us - self.last_prune_us < ANSWERED_RETENTION_US {
            return;
        }
        self.last_prune_us = now_us;
        self.answered
            .retain(|_, (_, t)| now_us - *t < ANSWERED_RETENTION_US);
    }

    /// The context a message is judged in: its type, definition, clause, job kind.
    fn context(&self, m: &Message) -> Ctx {
        let msg_type = m.msg_type().map(str::to_string);
        let typedef = msg_type
            .as_deref()
            .and_then(|t| self.rules.types.get(t))
            .cloned();
        let mut clause = msg_type.as_deref().map(|t| self.clause_of_type(t));
        let mut job_of = None;
        if let Some(def) = &typedef {
            if !def.ends_jobs.is_empty() {
                job_of = self.job_kind(m, def);
                if let Some(k) = &job_of {
                    clause = Some(self.clause_of_type(k));
                }
            }
        }
        Ctx {
            class: m.topic.class,
            msg_type,
            typedef,
            clause,
            job_of,
        }
    }

    /// Which job a result ends: the job opened with its jobId, or, for a job this run
    /// did not see, the candidate of its channel whose schemas fit best.
    fn job_kind(&self, m: &Message, def: &TypeDef) -> Option<String> {
        let param = m.envelope().and_then(|e| e.param());
        if let Some(id) = param_u64(param, "jobId") {
            let k = (m.topic.edge_id.clone(), m.topic.channel.clone(), id);
            if let Some(job) = self.jobs.get(&k) {
                return Some(job.kind.clone());
            }
        }
        let candidates = def.ends_jobs.get(&m.topic.channel)?;
        if candidates.len() == 1 {
            return candidates.first().cloned();
        }
        let env = m.envelope()?;
        candidates
            .iter()
            .min_by_key(|k| {
                self.rules
                    .rules
                    .iter()
                    .filter_map(|r| match &r.def.check {
                        Check::Schema {
                            when,
                            target,
                            fields,
                        } if when.job_of.as_ref().is_some_and(|j| j.contains(k)) => {
                            Some(schema_violations(env, *target, fields, r).len())
                        }
                        _ => None,
                    })
                    .sum::<usize>()
            })
            .cloned()
    }
}

#[derive(Clone)]
struct Ctx {
    class: Class,
    msg_type: Option<String>,
    typedef: Option<Arc<TypeDef>>,
    clause: Option<String>,
    job_of: Option<String>,
}

impl Ctx {
    fn vars(&self, m: &Message) -> Vars {
        vec![
            ("type", self.msg_type.clone().unwrap_or_else(|| "?".into())),
            ("mid", m.mid().map_or_else(|| "-".into(), |x| x.to_string())),
            ("edge_id", m.topic.edge_id.clone()),
            ("topic", m.topic_name.clone()),
            ("channel", m.topic.channel.clone()),
            ("role", m.topic.role.clone()),
            ("class", self.class.as_str().to_string()),
        ]
    }

    fn finding(&self, rule: &Rule, m: &Message, vars: Vars) -> Finding {
        let msg_type = vars
            .iter()
            .find(|(k, _)| *k == "type")
            .map(|(_, v)| v.clone())
            .filter(|v| v != "?");
        Finding {
            rule: rule.def.id.clone(),
            clause: rule
                .def
                .clause
                .clone()
                .or_else(|| self.clause.clone())
                .unwrap_or_else(|| "5.3".into()),
            table: rule
                .def
                .table
                .clone()
                .or_else(|| self.typedef.as_ref().and_then(|d| d.table.clone())),
            severity: rule.def.severity,
            edge_id: Some(m.topic.edge_id.clone()),
            msg_type,
            topic: Some(m.topic_name.clone()),
            mid: m.mid(),
            packet: Some(m.packet),
            time: Some(m.time_us),
            message: fill(&rule.def.message, &vars),
            conn: Some(m.conn),
            side: Some(m.side),
            offset: None,
            basis: rule.def.basis.clone(),
        }
    }

    fn selects(&self, when: &Selector, m: &Message) -> bool {
        let t = self.msg_type.as_deref().unwrap_or("");
        when.types.as_ref().map_or(true, |x| x.contains(t))
            && when
                .class
                .as_ref()
                .map_or(true, |x| x.contains(self.class.as_str()))
            && when
                .channel
                .as_ref()
                .map_or(true, |x| x.contains(&m.topic.channel))
            && when.job_of.as_ref().map_or(true, |x| {
                self.job_of.as_deref().is_some_and(|j| x.contains(j))
            })
    }

    /// The expected "channel/role" when the message travels elsewhere.
    fn topic_mismatch(&self, m: &Message) -> Option<String> {
        let def = self.typedef.as_ref()?;
        let role = match self.class {
            Class::Reply => protocol::reply_role(&def.role)?,
            _ => def.role.as_str(),
        };
        let ok = def.channels.iter().any(|c| *c == m.topic.channel) && m.topic.role == role;
        (!ok).then(|| format!("{}/{}", def.channels.join("|"), role))
    }
}

fn code_verdict(code: i64, def: Option<&TypeDef>, req: &Pending, rules: &RuleSet) -> CodeVerdict {
    let success = rules
        .rules
        .iter()
        .find_map(|r| match &r.def.check {
            Check::ReplySuccessToInvalid { success } => Some(success.clone()),
            _ => None,
        })
        .unwrap_or_else(|| vec![200, 202]);
    let errors = rules
        .rules
        .iter()
        .find_map(|r| match &r.def.check {
            Check::ReplyErrorToValid { errors } => Some(errors.clone()),
            _ => None,
        })
        .unwrap_or_else(|| vec![400, 401, 403, 404, 600]);
    if req.invalid.is_some() {
        return if success.contains(&code) {
            CodeVerdict::SuccessToInvalid
        } else {
            CodeVerdict::Fine
        };
    }
    let Some(def) = def else {
        return CodeVerdict::Fine;
    };
    let entry = def.reply_codes.iter().find(|rc| {
        rc.if_param.as_ref().map_or(true, |f| {
            req.env
                .as_ref()
                .and_then(|e| e.param())
                .and_then(|p| p.get(f))
                .is_some_and(|v| !v.is_null())
        })
    });
    let expected = entry.map(|rc| rc.codes.clone()).unwrap_or_default();
    if expected.is_empty() || expected.contains(&code) {
        CodeVerdict::Fine
    } else if errors.contains(&code) {
        CodeVerdict::ErrorToValid
    } else {
        CodeVerdict::Wrong {
            expected,
            basis: entry.and_then(|rc| rc.basis.clone()),
        }
    }
}

fn schema_violations(
    env: &protocol::Envelope,
    target: Target,
    fields: &super::model::Fields,
    rule: &Rule,
) -> Vec<Violation> {
    let mut out = vec![];
    match target {
        Target::Message => {
            if let Some(root) = env.root().as_object() {
                schema::validate_object("", root, fields, &rule.regexes, "", &mut out)
            }
        }
        Target::Param => match env.param().filter(|p| !p.is_null()) {
            Some(p) => match p.as_object() {
                Some(obj) => {
                    schema::validate_object("param", obj, fields, &rule.regexes, "", &mut out)
                }
                None => out.push(Violation {
                    path: "param".into(),
                    expected: "object".into(),
                    seen: schema::describe(p),
                }),
            },
            None => {
                if fields.values().any(|f| f.required) {
                    out.push(Violation {
                        path: "param".into(),
                        expected: "required object".into(),
                        seen: "absent".into(),
                    });
                }
            }
        },
    }
    out
}

fn path_sel_matches(sel: &PathSel, msg_type: &str, class: Class) -> bool {
    sel.msg_type == msg_type && sel.class.as_deref().map_or(true, |c| c == class.as_str())
}

/// Values at a path like `param.data[].deviceId`, as strings.
fn values_at(m: &Message, path: &str) -> Vec<String> {
    values_at_json(m, path)
        .into_iter()
        .filter_map(|v| match v.as_str() {
            Some(s) => Some(s.to_string()),
            None => v.is_number().then(|| v.to_string()),
        })
        .collect()
}

fn values_at_json<'m>(m: &'m Message, path: &str) -> Vec<Val<'m>> {
    let Some(env) = m.envelope() else {
        return vec![];
    };
    let mut segs = path.split('.');
    let Some(first) = segs.next() else {
        return vec![];
    };
    let step = |v: Val<'m>, each: bool, out: &mut Vec<Val<'m>>| {
        if each {
            out.extend(v.as_array().into_iter().flatten());
        } else {
            out.push(v);
        }
    };
    // The first segment is a member of the envelope itself.
    let (name, each) = first
        .strip_suffix("[]")
        .map_or((first, false), |n| (n, true));
    let mut cur = vec![];
    if let Some(v) = env.get(name) {
        step(v, each, &mut cur);
    }
    for seg in segs {
        let (name, each) = seg.strip_suffix("[]").map_or((seg, false), |n| (n, true));
        let mut next = vec![];
        for v in &cur {
            if let Some(x) = v.get(name) {
                step(x, each, &mut next);
            }
        }
        cur = next;
    }
    cur
}

fn param_u64(param: Option<Val<'_>>, name: &str) -> Option<u64> {
    param
        .and_then(|p| p.get(name))
        .and_then(|v| protocol::as_u64_lenient(&v))
}

fn number_lenient(v: Val<'_>) -> Option<f64> {
    v.as_f64().or_else(|| v.as_str()?.trim().parse().ok())
}

fn expired(m: &Message) -> Option<String> {
    let env = m.envelope()?;
    let expire = env.get("expire")?.as_i64()?;
    if expire < 0 {
        return None;
    }
    let ts = env.get("timestamp")?;
    let at = protocol::timestamp_us(&ts)?;
    let deadline = at + expire * 1_000_000;
    (deadline < m.time_us).then(|| {
        format!(
            "{ts} + expire {expire} s is {:.0} s before it was seen",
            (m.time_us - deadline) as f64 / 1e6
        )
    })
}

/// Paths of the member names `r` rejects, at any depth (objects in arrays too).
/// Runs only once [`all_keys_match`] found one.
fn bad_keys(path: &str, v: Val<'_>, r: &regex::Regex, out: &mut Vec<String>) {
    match v.view() {
        View::Obj(members) => {
            for (k, v) in members {
                let p = if path.is_empty() {
                    k.to_string()
                } else {
                    format!("{path}.{k}")
                };
                if !r.is_match(k) {
                    out.push(p.clone());
                }
                bad_keys(&p, v, r, out);
            }
        }
        View::Arr(items) => {
            for (i, x) in items.enumerate() {
                bad_keys(&format!("{path}[{i}]"), x, r, out);
            }
        }
        _ => {}
    }
}

fn all_keys_match(env: &Envelope, r: &regex::Regex, cache: &mut KeyCache) -> bool {
    env.doc.keys().all(|k| cache.conforms(k, r))
}

/// The per-edge state, created on first sight without cloning the id each time.
fn edge_state<'a>(edges: &'a mut HashMap<String, EdgeState>, edge: &str) -> &'a mut EdgeState {
    if !edges.contains_key(edge) {
        edges.insert(edge.to_string(), EdgeState::default());
    }
    edges.get_mut(edge).expect("inserted above")
}

/// A per-rule slot of an edge's state, created on first use.
fn slot<'a, T: Default>(map: &'a mut HashMap<String, T>, id: &str) -> &'a mut T {
    if !map.contains_key(id) {
        map.insert(id.to_string(), T::default());
    }
    map.get_mut(id).expect("inserted above")
}

fn join_codes(c: &[i64]) -> String {
    c.iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(" or ")
}

/// Replaces `{name}` in a template with the variable's value.
pub fn fill(template: &str, vars: &Vars) -> String {
    let mut out = template.to_string();
    for (k, v) in vars {
        let pat = format!("{{{k}}}");
        if out.contains(&pat) {
            out = out.replace(&pat, v);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_rules_of_a_type_come_in_rule_order_once_each() {
        let rules = RuleSet::builtin();
        let ix = ContentIndex::of(&rules);
        let ids = |t: Option<&str>| -> Vec<&str> {
            ix.rules_for(t)
                .into_iter()
                .map(|i| rules.rules[i].def.id.as_str())
                .collect()
        };
        let all = ids(Some("REP_SYS_STATUS"));
        let none = ids(None);
        // Every rule of the index, and only those, in the rule files' order.
        let want: Vec<&str> = rules
            .rules
            .iter()
            .filter(|r| match &r.def.check {
                Check::Schema { when, .. } => when
                    .types
                    .as_ref()
                    .map_or(true, |t| t.contains("REP_SYS_STATUS")),
                Check::InvalidJson | Check::NotObject => true,
                _ => false,
            })
            .map(|r| r.def.id.as_str())
            .collect();
        assert_eq!(all, want);
        assert!(all.contains(&"t10.REP_SYS_STATUS"));
        assert!(!none.contains(&"t10.REP_SYS_STATUS"));
        assert!(none.len() < all.len() && none.iter().all(|r| all.contains(r)));
    }
}
