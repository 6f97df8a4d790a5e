//! The mutations of our requests, sent after the replay and watched for
//! `mutation_window`, the liveness probe that follows each, and the verdicts of the
//! mutations made in place during the replay.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::protocol::Class;
use crate::replay::mutate::{self, Draft, Expect, Mutation, Verdict};
use crate::replay::source::Recorded;
use crate::replay::{MutationResult, ReplayError};

use super::{InlineRun, Session};

impl<'a> Session<'a> {
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
        let mid = self.rw.next_mid();
        self.mutation_mids.insert(mid);
        let out = self.rw.outgoing(json, Some(mid));
        let topic = self.rw.topic(&m.topic_name);
        self.publish(&topic, serde_json::to_vec(&out).unwrap_or_default())
            .await?;
        Ok(Some(mid))
    }

    pub(super) async fn probe(&mut self) -> Result<(bool, String), ReplayError> {
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
    pub(super) async fn mutation(
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
        let mid = self.rw.next_mid();
        self.mutation_mids.insert(mid);
        self.injected_mids.insert(mid, name.to_string());
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
                self.publish_injected(&d.topic, d.payload(), name).await?;
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
    pub(super) fn inline_result(&self, run: &InlineRun) -> MutationResult {
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
}
