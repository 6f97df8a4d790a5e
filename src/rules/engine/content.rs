//! Checks of one message on its own: payload, envelope and schema rules (what makes
//! a request invalid), tolerated dialects, key naming, expiry.

use super::*;

/// The rules `content_checks` applies, found once per engine: most schema rules name
/// the types they judge, and testing some forty selectors on every message cost more
/// than the checks that applied.
#[derive(Default)]
pub(super) struct ContentIndex {
    /// Payload and envelope rules, and schema rules for any type, in rule order.
    pub(super) always: Vec<usize>,
    /// Per type: the schema rules naming it and the rules of `always`, in rule order.
    pub(super) by_type: HashMap<String, Vec<usize>>,
}

impl ContentIndex {
    pub(super) fn of(rules: &RuleSet) -> ContentIndex {
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
                Check::InvalidJson | Check::NotObject | Check::TooDeep => ix.always.push(i),
                _ => {}
            }
        }
        // Each type's list holds the rules for any type too, in rule order: a
        // message's rules are one lookup, nothing merged or allocated per message.
        for v in ix.by_type.values_mut() {
            v.extend_from_slice(&ix.always);
            v.sort_unstable();
            v.dedup();
        }
        ix
    }

    /// Indices of the rules for a message of type `t`, in rule order.
    pub(super) fn rules_for(&self, t: Option<&str>) -> &[usize] {
        t.and_then(|t| self.by_type.get(t)).unwrap_or(&self.always)
    }
}

/// Field names a naming rule accepted. Messages repeat the same few dozen names, and
/// a hash lookup costs a fraction of a regex match; bounded so that a stream of
/// distinct names cannot grow it.
#[derive(Default)]
pub(super) struct KeyCache {
    pub(super) known: HashSet<Box<str>, ahash::RandomState>,
    /// The keys of the last message in walk order, and the position in it: a
    /// message like the last one is checked by comparing names, without hashing.
    pub(super) last: Vec<Box<str>>,
    pub(super) at: usize,
}

impl KeyCache {
    const MAX: usize = 4096;

    pub(super) fn start(&mut self) {
        self.at = 0;
    }

    pub(super) fn conforms(&mut self, key: &str, r: &regex::Regex) -> bool {
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

impl Engine {
    /// Payload, envelope and schema checks of one message: what makes a request
    /// invalid. Reads no session state.
    /// Returns the message's entry among the known shapes, when a schema rule looked
    /// it up.
    pub(super) fn content_checks(
        &mut self,
        m: &Message,
        ctx: &Ctx,
        out: &mut Vec<Finding>,
    ) -> Option<usize> {
        let rules = Arc::clone(&self.rules);
        let env = m.envelope();
        // The message's entry among the known shapes, once looked up.
        let mut shape_entry = None;
        for &i in self.content.rules_for(ctx.msg_type) {
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
                Check::TooDeep => {
                    if let Err(PayloadError::TooDeep { depth, checked }) = &m.body {
                        let mut v = vars_base();
                        v.push(("depth", depth.to_string()));
                        v.push(("limit", protocol::PARSE_DEPTH.to_string()));
                        v.push((
                            "validity",
                            if *checked {
                                "valid JSON".to_string()
                            } else {
                                format!(
                                    "JSON whose validity was not checked (deeper than {} levels)",
                                    protocol::MAX_VALIDATED_DEPTH
                                )
                            },
                        ));
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
                    let shapes = Some((&mut self.shapes, &mut shape_entry));
                    let viols = schema_violations(env, *target, fields, rule, i, shapes);
                    for viol in viols {
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
        shape_entry.flatten()
    }

    /// Tolerated payload deviations: each reported once per connection, rule and
    /// kind; the message itself was read as the sender meant it.
    pub(super) fn dialect(&mut self, m: &Message, ctx: &Ctx, out: &mut Vec<Finding>) {
        let Some(env) = m.envelope() else { return };
        if env.deviations.is_empty() {
            return;
        }
        let rules = Arc::clone(&self.rules);
        for rule in self.plan.dialect.iter().map(|&i| &rules.rules[i]) {
            let none: &[String] = &[];
            let (kinds, keys, except) = match &rule.def.check {
                Check::Dialect {
                    deviations,
                    keys,
                    except_keys,
                } => (
                    deviations.as_slice(),
                    keys.as_slice(),
                    except_keys.as_slice(),
                ),
                Check::KeyWhitespace => (none, none, none),
                _ => continue,
            };
            for d in &env.deviations {
                let listed = kinds.iter().any(|k| k == d.kind())
                    || (matches!(rule.def.check, Check::KeyWhitespace)
                        && matches!(d, Deviation::KeyWhitespace { .. }));
                let member = d.field().unwrap_or("");
                let keyed = (keys.is_empty() || keys.iter().any(|k| k == member))
                    && !except.iter().any(|k| k == member);
                if !listed || !keyed {
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
        let mut engine = Engine::new(Arc::clone(rules));
        let ctx = engine.context(rules, m);
        let mut out = vec![];
        let _ = engine.content_checks(m, &ctx, &mut out);
        if let Some(detail) = expired(m, rules.tz()) {
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
}

/// The violations of a schema rule (index `ix`) in a message; `shapes` (when given)
/// remembers the shapes the rule found clean, so that a repeated shape is judged by
/// its values alone.
pub(super) fn schema_violations(
    env: &protocol::Envelope,
    target: Target,
    fields: &crate::rules::model::Fields,
    rule: &Rule,
    ix: usize,
    shapes: Option<(&mut Shapes, &mut Option<Option<usize>>)>,
) -> Vec<Violation> {
    let (prefix, obj) = match target {
        Target::Message => ("", env.root()),
        Target::Param => match env.param().filter(|p| !p.is_null()) {
            Some(p) if p.is_object() => ("param", p),
            Some(p) => {
                return vec![Violation {
                    path: "param".into(),
                    expected: "object".into(),
                    seen: schema::describe(p),
                }]
            }
            None if fields.values().any(|f| f.required) => {
                return vec![Violation {
                    path: "param".into(),
                    expected: "required object".into(),
                    seen: "absent".into(),
                }]
            }
            None => return vec![],
        },
    };
    let mut out = vec![];
    match (shapes, obj.as_object()) {
        (Some((shapes, entry)), Some(_)) => {
            let t = shapes::Target {
                doc: &env.doc,
                obj,
                prefix,
                entry,
            };
            return shapes.violations(t, fields, rule, ix);
        }
        (None, Some(members)) => {
            schema::validate_object(prefix, members, fields, &rule.regexes, "", &mut out)
        }
        (_, None) => {}
    }
    out
}

pub(super) fn expired(m: &Message, tz_offset_s: i64) -> Option<String> {
    let env = m.envelope()?;
    let expire = env.expire()?.as_i64()?;
    if expire < 0 {
        return None;
    }
    let ts = env.timestamp()?;
    let at = protocol::timestamp_us_in(&ts, tz_offset_s)?;
    let deadline = at + expire * 1_000_000;
    (deadline < m.time_us).then(|| {
        let late_s = (m.time_us - deadline) as f64 / 1e6;
        let mut text = format!("{ts} + expire {expire} s is {late_s:.0} s before it was seen");
        // A gap of whole hours is a clock in another zone more often than a message
        // held that long.
        let gap_s = (m.time_us - at) as f64 / 1e6;
        let hours = (gap_s / 3600.0).round();
        if hours >= 1.0 && (gap_s - hours * 3600.0).abs() <= 120.0 {
            text.push_str(&format!(
                "; the timestamp is {hours:.0} h behind: the device's clock may run in another \
                 time zone (timestamps are read as UTC{:+}, see --tz)",
                tz_offset_s as f64 / 3600.0
            ));
        }
        text
    })
}

/// Paths of the member names `r` rejects, at any depth (objects in arrays too).
/// Runs only once [`all_keys_match`] found one.
pub(super) fn bad_keys(path: &str, v: Val<'_>, r: &regex::Regex, out: &mut Vec<String>) {
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

pub(super) fn all_keys_match(env: &Envelope, r: &regex::Regex, cache: &mut KeyCache) -> bool {
    env.doc.keys().all(|k| cache.conforms(k, r))
}
