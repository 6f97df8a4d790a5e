//! Jobs and their results: the job a command starts, the reply that decides whether
//! a result must follow, results on data topics, status queries and their monotonic
//! fields, outcomes, and the jobs the end of input leaves without a result.

use super::*;

/// Jobs are keyed by edge, the channel whose data topic carries their result, and
/// jobId: the standard never makes a jobId unique across job kinds.
pub(super) type JobKey = (String, String, u64);

#[derive(Debug, Clone)]
pub(super) struct Job {
    pub(super) kind: String,
    /// The command's `policy`: seconds before the job starts (0 = now).
    pub(super) policy_s: f64,
    pub(super) result_channel: String,
    pub(super) result_after: Vec<i64>,
    /// The text makes the reply optional (an upgrade): a result without one is no
    /// finding, a reply after the result is.
    pub(super) reply_optional: bool,
    /// The reply must come before the result (false: a container install without
    /// withAPP installs, then answers).
    pub(super) reply_first: bool,
    /// The edge sent EVENT_LINKUP after the command: a reply not seen since may have
    /// been lost with the old connection.
    pub(super) relinked: bool,
    /// `job.result_early` findings held until a reply shows the order broken.
    pub(super) held_early: Vec<Finding>,
    pub(super) reply_code: Option<i64>,
    pub(super) results: u32,
    pub(super) last: BTreeMap<String, f64>,
    pub(super) packet: u64,
    pub(super) time_us: i64,
    /// mid of the request that opened the job.
    pub(super) mid: Option<u64>,
}

impl Job {
    /// The job still owes its result: none came yet, and its command was not
    /// refused (no reply yet, or one whose code starts the job).
    pub(super) fn awaits_result(&self) -> bool {
        self.results == 0
            && self
                .reply_code
                .is_none_or(|c| self.result_after.contains(&c))
    }
}

impl Engine {
    /// The job a request opens, when its type starts one and it names a jobId.
    pub(super) fn start_job(&mut self, m: &Message, ctx: &Ctx, t: &str, mid: u64) {
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
                        kind: t.to_string(),
                        policy_s,
                        result_channel: job.result_channel.clone(),
                        result_after: job.result_after.clone(),
                        reply_optional: job.reply_optional,
                        reply_first: !job.reply_first_if_param.as_ref().is_some_and(|f| {
                            param.and_then(|p| p.get(f)).is_none_or(|v| v.is_null())
                        }),
                        relinked: false,
                        held_early: vec![],
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
    }

    /// A job whose result comes on `edge`'s `channel`, begun at or before
    /// `time_us`, still awaits it: the earliest, named for a finding.
    pub(super) fn job_open(&self, edge: &str, channel: &str, time_us: i64) -> Option<String> {
        let k = self.open_job_key(edge, channel, time_us)?;
        let j = self.jobs.get(&k)?;
        let reply = j
            .reply_code
            .map_or_else(|| "no reply".into(), |c| format!("reply {c}"));
        Some(format!(
            "{} ({}, packet {}, {reply})",
            k.2, j.kind, j.packet
        ))
    }

    /// The key of the job [`Engine::job_open`] names.
    pub(super) fn open_job_key(&self, edge: &str, channel: &str, time_us: i64) -> Option<JobKey> {
        self.jobs
            .iter()
            .filter(|((e, c, _), j)| {
                e == edge && c == channel && j.awaits_result() && j.time_us <= time_us
            })
            .min_by_key(|(_, j)| j.packet)
            .map(|(k, _)| k.clone())
    }

    /// A reply to a request that opens a job: its code decides whether a result must
    /// follow. A reply that comes after its job's result breaks the order the text
    /// sets: the findings held at the result (see [`Engine::on_report`]) are out.
    pub(super) fn job_replied(
        &mut self,
        m: &Message,
        def: Option<&TypeDef>,
        req: &Pending,
        code: Option<i64>,
        out: &mut Vec<Finding>,
    ) {
        if let Some(jd) = def.and_then(|d| d.job.as_ref()) {
            if let Some(job_id) = param_u64(req.env.as_ref().and_then(|e| e.param()), "jobId") {
                let k = (m.topic.edge_id.clone(), jd.result_channel.clone(), job_id);
                if let Some(job) = self.jobs.get_mut(&k) {
                    job.reply_code = code;
                    out.append(&mut job.held_early);
                }
            }
        }
    }

    /// The edge linked up again: the replies its open jobs have not had may have been
    /// lost with the connection it left.
    pub(super) fn jobs_relinked(&mut self, edge: &str) {
        for ((e, _, _), job) in self.jobs.iter_mut() {
            if e == edge && job.reply_code.is_none() {
                job.relinked = true;
            }
        }
    }

    pub(super) fn status_reply(
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

    pub(super) fn on_report(&mut self, m: &Message, ctx: &Ctx, out: &mut Vec<Finding>) {
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
        self.job_outcome(m, ctx, job_id, out);
        if !self.jobs.contains_key(&key) {
            self.unmatched_result(m, ctx, &key);
            return;
        }
        let Some(job) = self.jobs.get_mut(&key) else {
            return;
        };
        let fire = |pick: fn(&Check) -> bool, extra: Vars| -> Vec<Finding> {
            rules
                .rules
                .iter()
                .filter(|r| pick(&r.def.check))
                .map(|rule| {
                    let mut v = ctx.vars(m);
                    v.push(("detail", job_id.to_string()));
                    v.extend(extra.iter().cloned());
                    ctx.finding(rule, m, v)
                })
                .collect()
        };
        if job.reply_code.is_none() && job.reply_first && job.results == 0 {
            let mut early = fire(
                |c| matches!(c, Check::JobResultEarly),
                vec![("expected", job.kind.clone())],
            );
            // Where the reply is optional, or may have been lost with a connection the
            // edge left, the result is out of order only if a reply follows.
            if job.reply_optional || job.relinked {
                job.held_early.append(&mut early);
            } else {
                out.append(&mut early);
            }
        }
        if let (Some(code), Some(result)) = (job.reply_code, result_code(&rules, param)) {
            let (errors, success) = refusal_codes(&rules);
            if errors.contains(&code) && success.contains(&result) {
                out.extend(fire(
                    |c| matches!(c, Check::JobResultRefused),
                    vec![
                        ("seen", result.to_string()),
                        ("expected", code.to_string()),
                        ("job", job.kind.clone()),
                    ],
                ));
            }
        }
        if job.results >= 1 {
            out.extend(fire(|c| matches!(c, Check::JobResultDuplicate), vec![]));
        }
        job.results += 1;
        self.prune_suspects(|w| match w {
            Wants::Job { edge, channel } => *edge == key.0 && *channel == key.1,
            Wants::JobOf(k) => *k == key,
            Wants::Request { .. } | Wants::RequestOf { .. } => false,
        });
    }

    /// A job result whose jobId no job of its channel has: a suspect (see
    /// [`Suspect`]) of the wrong channel when another channel's job with that jobId
    /// awaits its result, else of a wrong jobId when a job of its channel does.
    fn unmatched_result(&mut self, m: &Message, ctx: &Ctx, key: &JobKey) {
        let rules = Arc::clone(&self.rules);
        let (edge, channel, job_id) = key.clone();
        let finding = |pick: fn(&Check) -> bool, extra: Vars| -> Vec<Finding> {
            rules
                .rules
                .iter()
                .filter(|r| pick(&r.def.check))
                .map(|r| {
                    let mut v = ctx.vars(m);
                    v.push(("detail", job_id.to_string()));
                    v.extend(extra.iter().cloned());
                    ctx.finding(r, m, v)
                })
                .collect()
        };
        // Another channel's job is a candidate only when the edge's session is in
        // the input: otherwise a job of this channel begun before may own the jobId.
        let whole = self.whole_session(&edge);
        let elsewhere = self
            .jobs
            .iter()
            .filter(|_| whole)
            .filter(|((e, c, id), j)| {
                *e == edge && *c != channel && *id == job_id && j.awaits_result()
            })
            .min_by_key(|(_, j)| j.packet)
            .map(|(k, j)| (k.clone(), j.kind.clone(), j.result_channel.clone()));
        let (wants, findings) = match elsewhere {
            Some((k, kind, expected)) => (
                Wants::JobOf(k),
                finding(
                    |c| matches!(c, Check::JobResultChannel),
                    vec![
                        ("seen", channel.clone()),
                        ("expected", expected),
                        ("type", kind),
                    ],
                ),
            ),
            // A wrong jobId is told from a job begun before the input only on a
            // session the input holds from its EVENT_LINKUP.
            None if !whole => {
                self.unseen(
                    ctx.clause.unwrap_or("5.3"),
                    format!(
                        "edge {edge}: job {job_id} may have been started before the input \
                         began (the edge's session is not in the input from its \
                         EVENT_LINKUP); its command and reply are not known"
                    ),
                );
                return;
            }
            None => (
                Wants::Job {
                    edge: edge.clone(),
                    channel: channel.clone(),
                },
                finding(|c| matches!(c, Check::JobResultOrphan), vec![]),
            ),
        };
        self.suspect(Suspect {
            wants,
            time_us: m.time_us,
            findings,
            clause: ctx.clause.unwrap_or("5.3").to_string(),
            note: format!(
                "edge {edge}: job {job_id} was started before the input began; its command \
                 and reply are not known"
            ),
        });
    }

    /// A job result that reports failure: an outcome of the job, reported as such
    /// (info), with the device's own code and text.
    pub(super) fn job_outcome(&self, m: &Message, ctx: &Ctx, job_id: u64, out: &mut Vec<Finding>) {
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

    /// End of input: jobs without their result. The standard sets no deadline: they
    /// are pending (info), unless the limit the user set (`--job-timeout`) passed
    /// while the input went on.
    pub(super) fn finish_jobs(&mut self, end: i64, out: &mut Vec<Finding>) {
        let rules = Arc::clone(&self.rules);
        let mut jobs: Vec<(JobKey, Job)> = self.jobs.drain().collect();
        jobs.sort_by_key(|(_, j)| j.packet);
        for ((edge, _, job_id), job) in jobs {
            if job.relinked && !job.held_early.is_empty() {
                self.unseen(
                    &self.clause_of_type(&job.kind),
                    format!(
                        "edge {edge}: job {job_id} ({}) reported its result after the edge \
                         linked up again, with no reply seen: whether a reply was lost with \
                         the connection it left is not known",
                        job.kind
                    ),
                );
            }
            let Some(code) = job.reply_code else { continue };
            if job.results > 0 || !job.result_after.contains(&code) {
                continue;
            }
            // Due once its policy delay has passed; overdue only by a user limit.
            let running_s = (end - job.time_us).max(0) as f64 / 1e6 - job.policy_s;
            let overdue = |after: &Option<f64>| after.is_some_and(|a| running_s > a);
            let fired = rules.rules.iter().any(
                |r| matches!(&r.def.check, Check::JobResultMissing { after_s } if overdue(after_s)),
            );
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
                    (
                        "path",
                        format!(
                            "{:.1} s after its command{policy}",
                            (end - job.time_us).max(0) as f64 / 1e6
                        ),
                    ),
                ];
                if let Some(l) = limit {
                    vars.push(("expected", format!("{l}")));
                }
                let mut f = self.end_finding(
                    rule,
                    clause,
                    &edge,
                    &job.kind,
                    None,
                    job.mid,
                    job.packet,
                    job.time_us,
                    &vars,
                );
                // It cites the platform's command that started the job.
                f.from = Some(Actor::Platform);
                out.push(f);
            }
        }
    }
}

/// The result code a job result reports: the first of the `job.failed` rule's code
/// members present (`result`, `code`).
fn result_code(rules: &RuleSet, param: Option<Val<'_>>) -> Option<i64> {
    let param = param?;
    let fields = rules
        .rules
        .iter()
        .find_map(|r| match &r.def.check {
            Check::JobFailed { code, .. } => Some(code.clone()),
            _ => None,
        })
        .unwrap_or_else(|| vec!["result".into(), "code".into()]);
    fields
        .iter()
        .find_map(|f| param.get(f).and_then(|v| protocol::as_i64_lenient(&v)))
}

/// The reply codes that refuse a command (the `reply.error_to_valid` rule's) and
/// the result codes that report success (the `job.failed` rule's).
fn refusal_codes(rules: &RuleSet) -> (Vec<i64>, Vec<i64>) {
    let errors = refusing_codes(rules);
    let success = rules
        .rules
        .iter()
        .find_map(|r| match &r.def.check {
            Check::JobFailed { success, .. } => Some(success.clone()),
            _ => None,
        })
        .unwrap_or_else(|| vec![200]);
    (errors, success)
}
