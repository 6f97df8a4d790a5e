//! Requests and their replies, jobs and their results: pairing keys, reply codes,
//! status queries, outcomes, and what the end of input leaves open.

use super::*;

/// A request is answered on its own channel, by the other side, with its mid. The
/// edge's request mids and the platform's command mids are independent number
/// spaces, so the side that issued the request is part of the key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct PairKey {
    pub(super) edge: String,
    pub(super) channel: String,
    pub(super) requester: Actor,
    pub(super) mid: u64,
}

/// Jobs are keyed by edge, the channel whose data topic carries their result, and
/// jobId: the standard never makes a jobId unique across job kinds.
pub(super) type JobKey = (String, String, u64);

#[derive(Debug, Clone)]
pub(super) struct Pending {
    pub(super) msg_type: String,
    pub(super) time_us: i64,
    pub(super) packet: u64,
    pub(super) invalid: Option<String>,
    /// The request, for the fields its reply and job are judged by.
    pub(super) env: Option<Envelope>,
    pub(super) topic: String,
}

#[derive(Debug, Clone)]
pub(super) struct Job {
    pub(super) kind: String,
    /// The command's `policy`: seconds before the job starts (0 = now).
    pub(super) policy_s: f64,
    pub(super) result_channel: String,
    pub(super) result_after: Vec<i64>,
    pub(super) reply_optional: bool,
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
                .map_or(true, |c| self.result_after.contains(&c))
    }
}

/// A reply or job result that matched no request or job seen. It may answer one
/// sent before the input began (the edge's own EVENT_LINKUP in the input does not
/// rule that out: a device re-links without EVENT_LINKDOWN, which is optional, and
/// answers what it held), so it is judged only at the end of input, and only when
/// something it could have been meant for is still open then: a request of its type
/// on its channel sent before it and never answered (a wrong mid), or a job that
/// never got its result (a wrong jobId or channel).
pub(super) struct Suspect {
    pub(super) wants: Wants,
    pub(super) time_us: i64,
    pub(super) findings: Vec<Finding>,
    /// Noted as not exercised, with this reason, when it is not judged.
    pub(super) clause: String,
    pub(super) note: String,
}

pub(super) enum Wants {
    /// A request of this type, sent by `requester` on this channel, unanswered.
    Request {
        edge: String,
        channel: String,
        requester: Actor,
        msg_type: String,
    },
    /// A job whose result comes on this channel, still without one.
    Job { edge: String, channel: String },
    /// This job of another channel, still without its result: the result was
    /// published on the wrong channel.
    JobOf(JobKey),
}

/// Suspects held at most; past this, an unmatched reply is noted as not judged.
const MAX_SUSPECTS: usize = 1024;

/// What the code of a reply means for its request.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum CodeVerdict {
    Fine,
    Wrong {
        expected: Vec<i64>,
        basis: Option<Arc<str>>,
    },
    SuccessToInvalid,
    ErrorToValid,
}

impl Engine {
    pub(super) fn on_request(&mut self, m: &Message, ctx: &Ctx, invalid: Option<String>) {
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
                        reply_optional: job.reply_optional
                            || job.reply_first_if_param.as_ref().is_some_and(|f| {
                                param.and_then(|p| p.get(f)).map_or(true, |v| v.is_null())
                            }),
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
        self.pending
            .entry(PairKey {
                edge: m.topic.edge_id.clone(),
                channel: m.topic.channel.clone(),
                requester: m.topic.publisher,
                mid,
            })
            .or_default()
            .push(Pending {
                msg_type: t,
                time_us: m.time_us,
                packet: m.packet,
                invalid,
                env: m.envelope().cloned(),
                topic: m.topic_name.clone(),
            });
    }

    /// The open request `key` answers: of several with its mid, the oldest of the
    /// reply's type, else the oldest.
    fn take_pending(&mut self, key: &PairKey, reply_type: Option<&str>) -> Option<Pending> {
        let open = self.pending.get_mut(key)?;
        let at = open
            .iter()
            .position(|p| Some(p.msg_type.as_str()) == reply_type)
            .unwrap_or(0);
        let req = open.remove(at);
        if open.is_empty() {
            self.pending.remove(key);
        }
        Some(req)
    }

    /// A request of `msg_type` that `requester` sent on `edge`'s `channel` at or
    /// before `time_us` is still unanswered.
    fn request_open(
        &self,
        edge: &str,
        channel: &str,
        requester: Actor,
        msg_type: &str,
        time_us: i64,
    ) -> bool {
        self.pending.iter().any(|(k, open)| {
            k.edge == edge
                && k.channel == channel
                && k.requester == requester
                && open
                    .iter()
                    .any(|p| p.msg_type == msg_type && p.time_us <= time_us)
        })
    }

    /// A job whose result comes on `edge`'s `channel`, begun at or before
    /// `time_us`, still awaits it.
    fn job_open(&self, edge: &str, channel: &str, time_us: i64) -> bool {
        self.jobs.iter().any(|((e, c, _), j)| {
            e == edge && c == channel && j.awaits_result() && j.time_us <= time_us
        })
    }

    fn still_wanted(&self, s: &Suspect) -> bool {
        match &s.wants {
            Wants::Request {
                edge,
                channel,
                requester,
                msg_type,
            } => self.request_open(edge, channel, *requester, msg_type, s.time_us),
            Wants::Job { edge, channel } => self.job_open(edge, channel, s.time_us),
            Wants::JobOf(k) => self.jobs.get(k).is_some_and(Job::awaits_result),
        }
    }

    /// Holds a suspect, or notes it as not judged when nothing it could be meant for
    /// is open (or too many are held).
    fn suspect(&mut self, s: Suspect) {
        if self.suspects.len() < MAX_SUSPECTS && self.still_wanted(&s) {
            self.suspects.push(s);
        } else {
            self.unseen(&s.clause, s.note);
        }
    }

    /// Drops the suspects nothing open can explain any more, among those `touched`
    /// selects (what a request of their type being answered, or a job reporting,
    /// may have changed): they answer something from before the input. Only those
    /// are looked at again, so an answered request costs nothing when no suspect
    /// waits on its kind.
    fn prune_suspects(&mut self, touched: impl Fn(&Wants) -> bool) {
        if !self.suspects.iter().any(|s| touched(&s.wants)) {
            return;
        }
        let suspects = std::mem::take(&mut self.suspects);
        for s in suspects {
            if !touched(&s.wants) || self.still_wanted(&s) {
                self.suspects.push(s);
            } else {
                self.unseen(&s.clause, s.note);
            }
        }
    }

    /// End of input: a suspect that something open still explains is an orphan
    /// (unless bytes were lost: the answer may have been among them).
    fn judge_suspects(&mut self, out: &mut Vec<Finding>) {
        let suspects = std::mem::take(&mut self.suspects);
        for s in suspects {
            if !self.lost && self.still_wanted(&s) {
                if let Wants::JobOf(k) = &s.wants {
                    // Its result came, on the wrong channel: not also pending.
                    if let Some(job) = self.jobs.get_mut(k) {
                        job.results += 1;
                    }
                }
                out.extend(s.findings);
            } else {
                self.unseen(&s.clause, s.note);
            }
        }
    }

    pub(super) fn on_reply(&mut self, m: &Message, ctx: &Ctx, out: &mut Vec<Finding>) {
        let rules = Arc::clone(&self.rules);
        let Some(mid) = m.mid() else { return };
        let requester = other(m.topic.publisher);
        let key = PairKey {
            edge: m.topic.edge_id.clone(),
            channel: m.topic.channel.clone(),
            requester,
            mid,
        };
        let Some(req) = self.take_pending(&key, ctx.msg_type.as_deref()) else {
            let dup = self.answered.get(&key).copied();
            for rule in &rules.rules {
                if let (Check::ReplyDuplicate, Some((packet, _))) = (&rule.def.check, dup) {
                    let mut v = ctx.vars(m);
                    v.push(("detail", packet.to_string()));
                    out.push(ctx.finding(rule, m, v));
                }
            }
            if dup.is_some() {
                return;
            }
            // No request seen has its mid. It may answer one sent before the input
            // (whatever the input holds of the edge's session), so it is an orphan
            // only if a request of its type, sent before it, is never answered: see
            // [`Suspect`]. A retained reply replayed at subscription answers a
            // request of the past.
            let findings: Vec<Finding> = rules
                .rules
                .iter()
                .filter(|r| matches!(r.def.check, Check::ReplyOrphan))
                .map(|r| ctx.finding(r, m, ctx.vars(m)))
                .collect();
            let note = format!(
                "edge {}: a reply (mid {mid}) matched no request in the input; it may answer \
                 one sent before the input began or lost by the capture",
                m.topic.edge_id
            );
            let clause = ctx.clause.clone().unwrap_or_else(|| "5.3".into());
            match (&ctx.msg_type, m.retained) {
                (Some(t), false) => self.suspect(Suspect {
                    wants: Wants::Request {
                        edge: m.topic.edge_id.clone(),
                        channel: m.topic.channel.clone(),
                        requester,
                        msg_type: t.clone(),
                    },
                    time_us: m.time_us,
                    findings,
                    clause,
                    note,
                }),
                _ => self.unseen(&clause, note),
            }
            return;
        };
        self.prune_suspects(|w| {
            matches!(w, Wants::Request { edge, channel, requester: r, msg_type }
                if *edge == key.edge && *channel == key.channel && *r == key.requester
                    && *msg_type == req.msg_type)
        });
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
        if let (Some(q), Some(200 | 202)) = (def.as_ref().and_then(|d| d.queries_job.clone()), code)
        {
            self.status_reply(m, &rctx, &req, &q.monotonic, out);
        }
        // Sequences that read replies (assigned ids, announced periods).
        self.collect_assignments(m, &req.msg_type, Class::Reply);
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
        let mut fire = |pick: fn(&Check) -> bool, extra: Vars| {
            for rule in rules.rules.iter().filter(|r| pick(&r.def.check)) {
                let mut v = ctx.vars(m);
                v.push(("detail", job_id.to_string()));
                v.extend(extra.iter().cloned());
                out.push(ctx.finding(rule, m, v));
            }
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
        job.results += 1;
        self.prune_suspects(|w| match w {
            Wants::Job { edge, channel } => *edge == key.0 && *channel == key.1,
            Wants::JobOf(k) => *k == key,
            Wants::Request { .. } => false,
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
            clause: ctx.clause.clone().unwrap_or_else(|| "5.3".into()),
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

    /// End of input: requests not answered and jobs without their result. The
    /// standard sets no deadline for either: they are pending (info), unless a
    /// limit the user set (`--reply-timeout`, `--job-timeout`) passed while the
    /// input went on.
    pub fn finish(&mut self, out: &mut Vec<Finding>) {
        let rules = Arc::clone(&self.rules);
        let end = self.last_time_us;
        self.judge_suspects(out);
        let mut pending: Vec<(PairKey, Pending)> = self
            .pending
            .drain()
            .flat_map(|(k, open)| open.into_iter().map(move |p| (k.clone(), p)))
            .collect();
        pending.sort_by_key(|(_, p)| p.packet);
        for (key, p) in pending {
            let waited_s = (end - p.time_us).max(0) as f64 / 1e6;
            // A reply the standard makes optional (可以: device and app upgrades, the
            // type catalog's reply_optional) is never missing, only pending.
            let optional = rules
                .types
                .get(&p.msg_type)
                .and_then(|d| d.job.as_ref())
                .is_some_and(|j| j.reply_optional);
            let overdue = |after: &Option<f64>| !optional && after.is_some_and(|a| waited_s > a);
            let fired = rules.rules.iter().any(
                |r| matches!(&r.def.check, Check::ReplyMissing { after_s } if overdue(after_s)),
            );
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
                let mut f = self.end_finding(
                    rule,
                    clause,
                    &key.edge,
                    &p.msg_type,
                    Some(&p.topic),
                    Some(key.mid),
                    p.packet,
                    p.time_us,
                    &vars,
                );
                // It cites the request: sent by the requester.
                f.from = Some(key.requester);
                out.push(f);
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

    /// A finding about what the end of input left open.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn end_finding(
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
            from: None,
        }
    }
}

pub(super) fn code_verdict(
    code: i64,
    def: Option<&TypeDef>,
    req: &Pending,
    rules: &RuleSet,
) -> CodeVerdict {
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
    // A code outside table 3 is envelope.reply's error; reply.code judges only a
    // success-class code other than the clause's.
    let judged = success.contains(&code) || errors.contains(&code);
    if expected.is_empty() || expected.contains(&code) || !judged {
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

pub(super) fn join_codes(c: &[i64]) -> String {
    c.iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(" or ")
}
