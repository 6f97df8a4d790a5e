//! Requests and their replies: pairing keys, pending requests, reply codes, the
//! replies and job results that matched nothing (suspects, judged at the end of
//! input), and the requests the end of input leaves unanswered. Jobs are in `jobs.rs`.

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
    /// This request of another edge, still unanswered: the reply was published on
    /// the wrong edge's topic.
    RequestOf { key: PairKey, msg_type: String },
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
            .is_none_or(|d| !d.reply_codes.is_empty());
        if !expects_reply {
            return;
        }
        self.start_job(m, ctx, &t, mid);
        self.pending
            .entry(PairKey {
                edge: m.topic.edge_id.clone(),
                channel: m.topic.channel.clone(),
                requester: m.topic.publisher,
                mid,
            })
            .or_default()
            .push(Pending {
                msg_type: t.to_string(),
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

    /// The open request of another edge that a reply under `key` would answer: same
    /// channel, requester, mid and type, sent at or before `time_us` (the earliest),
    /// with the packet it came in.
    fn open_elsewhere(
        &self,
        key: &PairKey,
        msg_type: &str,
        time_us: i64,
    ) -> Option<(PairKey, u64)> {
        self.pending
            .iter()
            .filter(|(k, _)| {
                k.edge != key.edge
                    && k.channel == key.channel
                    && k.requester == key.requester
                    && k.mid == key.mid
            })
            .filter_map(|(k, open)| {
                open.iter()
                    .filter(|p| p.msg_type == msg_type && p.time_us <= time_us)
                    .map(|p| p.packet)
                    .min()
                    .map(|packet| (k.clone(), packet))
            })
            .min_by_key(|(_, packet)| *packet)
    }

    fn still_wanted(&self, s: &Suspect) -> bool {
        match &s.wants {
            Wants::Request {
                edge,
                channel,
                requester,
                msg_type,
            } => self.request_open(edge, channel, *requester, msg_type, s.time_us),
            Wants::RequestOf { key, msg_type } => self.pending.get(key).is_some_and(|open| {
                open.iter()
                    .any(|p| p.msg_type == *msg_type && p.time_us <= s.time_us)
            }),
            Wants::Job { edge, channel } => self.job_open(edge, channel, s.time_us).is_some(),
            Wants::JobOf(k) => self.jobs.get(k).is_some_and(Job::awaits_result),
        }
    }

    /// Holds a suspect, or notes it as not judged when nothing it could be meant for
    /// is open (or too many are held).
    pub(super) fn suspect(&mut self, s: Suspect) {
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
    pub(super) fn prune_suspects(&mut self, touched: impl Fn(&Wants) -> bool) {
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
                let mut findings = s.findings;
                match &s.wants {
                    Wants::JobOf(k) => {
                        // Its result came, on the wrong channel: not also pending.
                        if let Some(job) = self.jobs.get_mut(k) {
                            job.results += 1;
                        }
                    }
                    Wants::RequestOf { key, msg_type } => {
                        // Its reply came, to the wrong edge: not also pending.
                        self.take_pending(key, Some(msg_type));
                    }
                    Wants::Job { edge, channel } => {
                        // Name the job that went unanswered. The result was meant
                        // for it, under a wrong jobId: one fault, so the job is
                        // not also pending (or missing) at the end.
                        if let Some(open) = self.job_open(edge, channel, s.time_us) {
                            let vars: Vars = vec![("expected", open)];
                            for f in &mut findings {
                                f.message = fill(&f.message, &vars);
                            }
                        }
                        if let Some(k) = self.open_job_key(edge, channel, s.time_us) {
                            if let Some(job) = self.jobs.get_mut(&k) {
                                job.results += 1;
                            }
                        }
                    }
                    Wants::Request { .. } => {}
                }
                out.extend(findings);
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
        let Some(req) = self.take_pending(&key, ctx.msg_type) else {
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
            // A request of another edge with its mid and type, still open: the reply
            // went to the wrong edge (judged where this edge's session is in the input,
            // so that it cannot answer a request of its own from before).
            let whole = self.whole_session(&m.topic.edge_id);
            let clause = ctx.clause.unwrap_or("5.3").to_string();
            if let (true, false, Some(t)) = (whole, m.retained, ctx.msg_type) {
                if let Some((other, packet)) = self.open_elsewhere(&key, t, m.time_us) {
                    let findings = rules
                        .rules
                        .iter()
                        .filter(|r| matches!(r.def.check, Check::ReplyWrongEdge))
                        .map(|r| {
                            let mut v = ctx.vars(m);
                            v.push(("expected", other.edge.clone()));
                            v.push(("detail", packet.to_string()));
                            ctx.finding(r, m, v)
                        })
                        .collect();
                    let note = format!(
                        "edge {}: a reply (mid {mid}) matched no request of its session; edge \
                         {}'s request with that mid was answered on its own topic",
                        m.topic.edge_id, other.edge
                    );
                    self.suspect(Suspect {
                        wants: Wants::RequestOf {
                            key: other,
                            msg_type: t.to_string(),
                        },
                        time_us: m.time_us,
                        findings,
                        clause,
                        note,
                    });
                    return;
                }
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
            let note = if whole {
                format!(
                    "edge {}: a reply (mid {mid}) matched no request of the edge's session, \
                     which the input holds from its EVENT_LINKUP, nor an open request of \
                     another edge; it answers a request of an earlier session (a device \
                     re-links without EVENT_LINKDOWN) or none, which the input cannot tell",
                    m.topic.edge_id
                )
            } else {
                format!(
                    "edge {}: a reply (mid {mid}) matched no request in the input; it may \
                     answer one sent before the input began or lost by the capture",
                    m.topic.edge_id
                )
            };
            match (&ctx.msg_type, m.retained) {
                (Some(t), false) => self.suspect(Suspect {
                    wants: Wants::Request {
                        edge: m.topic.edge_id.clone(),
                        channel: m.topic.channel.clone(),
                        requester,
                        msg_type: t.to_string(),
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
        self.prune_suspects(|w| match w {
            Wants::Request {
                edge,
                channel,
                requester: r,
                msg_type,
            } => {
                *edge == key.edge
                    && *channel == key.channel
                    && *r == key.requester
                    && *msg_type == req.msg_type
            }
            Wants::RequestOf { key: k, msg_type } => *k == key && *msg_type == req.msg_type,
            Wants::Job { .. } | Wants::JobOf(_) => false,
        });
        self.answered.insert(key, (m.packet, m.time_us));
        // Judge the reply as an answer to the request's type.
        let rctx = Ctx {
            msg_type: Some(&req.msg_type),
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
                    if let Some(seen) = ctx.msg_type {
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
        self.job_replied(m, def.as_deref(), &req, code, out);
        // Status queries: the reply's job and monotonic fields.
        if let (Some(q), Some(200 | 202)) = (def.as_ref().and_then(|d| d.queries_job.clone()), code)
        {
            self.status_reply(m, &rctx, &req, &q.monotonic, out);
        }
        // Sequences that read replies (assigned ids, announced periods).
        self.collect_assignments(m, &req.msg_type, Class::Reply);
    }

    /// End of input: requests not answered and jobs without their result. The
    /// standard sets no deadline for either: they are pending (info), unless a
    /// limit the user set (`--reply-timeout`, `--job-timeout`) passed while the
    /// input went on.
    pub fn finish(&mut self, out: &mut Vec<Finding>) {
        let rules = Arc::clone(&self.rules);
        let end = self.last_time_us;
        self.finish_sequences(out);
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
        self.finish_jobs(end, out);
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
        let cites = Cites {
            clause: rule.def.clause.clone().unwrap_or(clause),
            table: rule.def.table.clone(),
            msg_type: Some(msg_type.to_string()),
            mid,
            from: None,
        };
        let place = Place {
            edge_id: Some(edge.to_string()),
            topic: topic.map(str::to_string),
            ..Place::frame(packet, time_us)
        };
        build(rule, cites, place, vars)
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
    let errors = refusing_codes(rules);
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
        rc.if_param.as_ref().is_none_or(|f| {
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

/// The reply codes that refuse a request: the `reply.error_to_valid` rule's list, or
/// the standard's (400, 401, 403, 404, 600) when the rule set has no such rule.
pub(super) fn refusing_codes(rules: &RuleSet) -> Vec<i64> {
    rules
        .rules
        .iter()
        .find_map(|r| match &r.def.check {
            Check::ReplyErrorToValid { errors } => Some(errors.clone()),
            _ => None,
        })
        .unwrap_or_else(|| vec![400, 401, 403, 404, 600])
}
