//! The rule engine: takes protocol messages in order, applies every rule of the set,
//! and keeps the state that pairing and the sequences of clause 6 need (pending
//! requests, jobs, per-edge link state, assigned ids, active alarms, report times).
//!
//! It is sans-IO and time comes in with the messages: the same engine judges a pcap,
//! a live proxy session and a replay.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use crate::protocol::json::same_name;
use crate::protocol::{Doc, Envelope, Val, View};

use super::model::{Check, PathSel, Selector, Target, TypeDef};
use super::schema::{self, Violation};
use super::{Rule, RuleSet};
use crate::finding::{ConnId, Finding, Severity, Side};
use crate::protocol::{self, Actor, Class, Deviation, Message, PayloadError};

mod content;
mod context;
mod coverage;
mod jobs;
mod pairing;
mod paths;
mod plan;
mod sequence;
mod shapes;

use content::*;
use context::*;
pub use coverage::Coverage;
use jobs::*;
use pairing::*;
use paths::*;
use plan::Plan;
use sequence::*;
use shapes::Shapes;

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

pub type Vars = Vec<(&'static str, String)>;

fn other(a: Actor) -> Actor {
    match a {
        Actor::Edge => Actor::Platform,
        Actor::Platform => Actor::Edge,
    }
}

pub struct Engine {
    rules: Arc<RuleSet>,
    content: ContentIndex,
    plan: Plan,
    /// Open requests; several under one key when a requester reuses a mid while
    /// its first request is still open (a mid counter per command type).
    pending: HashMap<PairKey, Vec<Pending>>,
    /// Replies and job results that matched nothing, until the end of input says
    /// whether they are orphans.
    suspects: Vec<Suspect>,
    answered: HashMap<PairKey, (u64, i64)>,
    jobs: HashMap<JobKey, Job>,
    /// Per edge (a hash of its own: looked up for every message).
    edges: EdgeMap,
    exercised: Coverage,
    /// (connection, rule id, deviation kind) already reported by a dialect rule.
    dialect_reported: HashSet<(ConnId, String, String)>,
    /// Time of the last message: what "the input ended" means for pending work.
    last_time_us: i64,
    last_prune_us: i64,
    /// Per key-naming rule: keys already found to conform.
    good_keys: HashMap<String, KeyCache>,
    /// Bytes were lost from the input (a capture gap, a frame cut or unreadable):
    /// a request or an answer may have been among them, so orphans are not judged.
    lost: bool,
    /// Shapes the schema rules found clean (a cache: the verdicts are the same
    /// without it).
    shapes: Shapes,
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
            plan: Plan::of(&rules),
            rules,
            pending: HashMap::new(),
            suspects: vec![],
            answered: HashMap::new(),
            jobs: HashMap::new(),
            edges: EdgeMap::default(),
            exercised: Coverage::default(),
            dialect_reported: HashSet::new(),
            last_time_us: i64::MIN,
            last_prune_us: 0,
            good_keys: HashMap::new(),
            lost: false,
            shapes: Default::default(),
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
        self.exercised.count(clause);
    }

    /// The input ends at `t` (µs) at the latest: pending work is judged against it.
    pub fn input_ends(&mut self, t: i64) {
        self.last_time_us = self.last_time_us.max(t);
    }

    /// Bytes of the input were lost (a capture gap, an unreadable frame).
    pub fn note_lost(&mut self) {
        self.lost = true;
    }

    /// A check of `clause` that needed history outside the input.
    fn unseen(&mut self, clause: &str, reason: String) {
        self.exercised.note(clause, reason);
    }

    /// Judges one message and updates the state.
    pub fn on_message(&mut self, m: &Message, out: &mut Vec<Finding>) {
        let rules = Arc::clone(&self.rules);
        let ctx = self.context(&rules, m);
        self.note_exercised("5.3");
        if let Some(c) = ctx.clause {
            if ctx.typedef.is_some() {
                self.note_exercised(c);
            }
        }
        let first = out.len();
        let env = m.envelope();
        self.last_time_us = self.last_time_us.max(m.time_us);

        // Content checks: their errors make a request invalid.
        let shape = self.content_checks(m, &ctx, out);
        let invalid = out[first..]
            .iter()
            .find(|f| f.severity == Severity::Error)
            .map(|f| f.message.clone());
        self.dialect(m, &ctx, out);

        // Naming, topic and time checks: they report, but do not make a request invalid.
        for rule in self.plan.topic.iter().map(|&i| &rules.rules[i]) {
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
        if let Some(t) = ctx.msg_type {
            for (ix, rule) in self.plan.typed.iter().map(|&i| (i, &rules.rules[i])) {
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
                        // One finding per message, naming the first long word: a type
                        // of 500 long words is one recommendation missed, not 500.
                        let mut long = t.split('_').filter(|w| w.chars().count() > *max);
                        if let Some(w) = long.next() {
                            let more = long.count();
                            let mut v = ctx.vars(m);
                            v.push(("seen", w.to_string()));
                            v.push(("expected", max.to_string()));
                            v.push((
                                "detail",
                                match more {
                                    0 => String::new(),
                                    1 => " (and 1 more word)".into(),
                                    n => format!(" (and {n} more words)"),
                                },
                            ));
                            out.push(ctx.finding(rule, m, v));
                        }
                    }
                    Check::KeyNaming { .. } => {
                        if let (Some(r), Some(env)) = (rule.regexes.get(""), env) {
                            // A shape whose names all matched before: the same names.
                            if shape.is_some_and(|e| self.shapes.names_ok(e, ix)) {
                                continue;
                            }
                            let mut bad = vec![];
                            let cache = slot(&mut self.good_keys, &rule.def.id);
                            cache.start();
                            if !all_keys_match(env, r, cache) {
                                bad_keys("", env.root(), r, &mut bad);
                            } else if let Some(e) = shape {
                                self.shapes.note_names_ok(e, ix);
                            }
                            for p in bad {
                                let mut v = ctx.vars(m);
                                v.push(("path", p));
                                out.push(ctx.finding(rule, m, v));
                            }
                        }
                    }
                    Check::Expired => {
                        if let Some(detail) = expired(m, self.rules.tz()) {
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

    /// The context `m` is judged in: its type, definition, clause, table, job kind.
    /// The clause and table are borrowed from `rules` (the engine's own set, held by
    /// the caller): nothing is copied per message.
    fn context<'m>(&self, rules: &'m RuleSet, m: &'m Message) -> Ctx<'m> {
        let msg_type = m.msg_type();
        let def = msg_type.and_then(|t| rules.types.get(t));
        let typedef = def.cloned();
        fn clause_of(d: Option<&Arc<TypeDef>>) -> &str {
            d.map_or("5.3", |d| d.clause.as_str())
        }
        let mut clause = msg_type.map(|_| clause_of(def));
        let mut job_of = None;
        let mut table = def.and_then(|d| d.table.as_deref());
        if let Some(def) = &typedef {
            if !def.ends_jobs.is_empty() {
                job_of = self.job_kind(m, def);
                if let Some(k) = &job_of {
                    let job_def = rules.types.get(k);
                    clause = Some(clause_of(job_def));
                    let job = job_def.and_then(|d| d.job.as_ref());
                    table = job.and_then(|j| j.result_table.as_deref()).or(table);
                }
            }
        }
        // A standard type on a topic of the wrong role (REP_SYS_STATUS on
        // device/request) is topic.mismatch's error; the other rules judge it as
        // what its type says it is, so that one fault is not reported as three
        // (a request type without mid, a request type not named CMD_/EVENT_).
        let class = match (typedef.as_ref().map(|d| d.role.as_str()), m.topic.class) {
            (Some("data"), Class::Request) => Class::Report,
            (Some("request" | "command"), Class::Report) => Class::Request,
            (_, c) => c,
        };
        Ctx {
            class,
            msg_type,
            typedef,
            clause,
            job_of,
            table,
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
                            Some(schema_violations(env, *target, fields, r, 0, None).len())
                        }
                        _ => None,
                    })
                    .sum::<usize>()
            })
            .cloned()
    }
}

/// The findings of every rule whose check `pick` selects, at a transport place (the
/// framer's: a malformed packet, a gap, a topic outside the standard).
pub fn transport_findings(
    rules: &RuleSet,
    pick: impl Fn(&Check) -> bool,
    place: &Place,
    vars: Vars,
    out: &mut Vec<Finding>,
) {
    for rule in rules.rules.iter().filter(|r| pick(&r.def.check)) {
        let cites = Cites {
            clause: rule.def.clause.clone().unwrap_or_else(|| "5.2".into()),
            table: rule.def.table.clone(),
            msg_type: None,
            mid: None,
            from: None,
        };
        out.push(build(rule, cites, place.clone(), &vars));
    }
}

/// Replaces `{name}` in a template with the variable's value.
pub fn fill(template: &str, vars: &Vars) -> String {
    let mut out = template.to_string();
    for (k, v) in vars {
        let pat = format!("{{{k}}}");
        if out.contains(&pat) {
            out = out.replace(&pat, &crate::finding::printable(v));
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
                .iter()
                .map(|&i| rules.rules[i].def.id.as_str())
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
                Check::InvalidJson | Check::NotObject | Check::TooDeep => true,
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
