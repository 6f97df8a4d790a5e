//! The end of a session: late answers, the live session's last findings, each
//! exchange judged (or marked not exercised, with why), the rules the replay raised
//! that the recording did not, and the [`Outcome`].

use std::collections::HashSet;
use std::time::{Duration, Instant};

use crate::finding::{Finding, Severity};
use crate::protocol::Actor;
use crate::replay::judge;
use crate::replay::{FindingBrief, MutationResult, Outcome, ReplayError};

use super::Session;

impl Session<'_> {
    pub(super) async fn finish(
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
        let summary = self.analyzer.finish(&mut c);
        self.chart = c.timeline.unwrap_or_default();
        let finish_start = self.findings.len();
        self.findings.extend(c.findings);
        let mut mutations = mutations;
        for run in &self.inline {
            self.mutation_mids.extend(run.mids.iter().copied());
            for &m in &run.mids {
                self.injected_mids.insert(m, run.spec.name.clone());
            }
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
        // The test's own doing: findings on what the mutations made, and on the
        // counterpart's answers to it unless they are its errors.
        let counterpart = match self.us {
            Actor::Platform => Actor::Edge,
            Actor::Edge => Actor::Platform,
        };
        let injected = |f: &Finding| -> Option<String> {
            if let Some(name) = f.packet.and_then(|p| self.injected_packets.get(&p)) {
                return Some(name.clone());
            }
            let name = f.mid.and_then(|m| self.injected_mids.get(&m))?;
            (f.from != Some(counterpart) || f.severity < Severity::Warning).then(|| name.clone())
        };
        let injected_of: Vec<Option<String>> = self.findings.iter().map(injected).collect();
        let in_baseline = |n: usize, f: &Finding| {
            (n < baseline_end || n >= finish_start)
                && injected_of[n].is_none()
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
        // The record charges the counterpart with its own findings only; the
        // injected ones are listed as the test's (a section of the page), and
        // their marks leave the chart.
        let device: Vec<Finding> = self
            .findings
            .iter()
            .zip(&injected_of)
            .filter(|(_, i)| i.is_none())
            .map(|(f, _)| f.clone())
            .collect();
        let injected_findings: Vec<FindingBrief> = self
            .findings
            .iter()
            .zip(&injected_of)
            .filter_map(|(f, i)| i.as_ref().map(|name| FindingBrief::injected(f, name)))
            .collect();
        let mut chart = std::mem::take(&mut self.chart);
        for lane in chart.edges.values_mut() {
            for e in &mut lane.kept {
                e.findings.retain(|f| injected(f).is_none());
            }
            lane.unplaced.retain(|f| injected(f).is_none());
        }
        let record = crate::report::Report::build(
            vec![format!(
                "replay of {} (live session)",
                self.s.source.describe()
            )],
            &summary.stats,
            &summary.coverage,
            self.analyzer.rules(),
            device.clone(),
        )
        .with_timeline(Some(chart));
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
            live_findings: device.iter().map(FindingBrief::of).collect(),
            injected_findings,
            broker_lost: self.lost,
            interrupted: self.interrupted,
            counterpart_silent: !self.heard,
            unexpected_requests: self.unexpected,
        })
    }

    /// After a lost broker connection: each exchange still waiting for the
    /// counterpart is not exercised (the broker's fault, not the device's).
    fn mark_cut_off(&mut self) {
        let Some(lost) = self.stopped() else { return };
        let lost = lost.clone();
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
