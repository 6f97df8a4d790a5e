//! Building a report: the summary from the pipeline's counters, a clause row per
//! clause of the rules, the findings grouped; then the counts, clause verdicts and
//! edges from the groups, again after a filter or a renumbering.

use super::clauses::{is_outcome_check, owner, unfinished_kind, unjudged_row, Tally, Unfinished};
use super::edges::edge_rows;
use super::filter::Filter;
use super::group::{self, Group};
use super::{timeline, NotListed, Report, Summary};
use crate::finding::{Finding, Severity};
use crate::pipeline::Stats;
use crate::rules::engine::Coverage;
use crate::rules::RuleSet;

impl Report {
    pub fn build(
        inputs: Vec<String>,
        stats: &Stats,
        exercised: &Coverage,
        rules: &RuleSet,
        findings: Vec<Finding>,
    ) -> Report {
        let groups = group::group(&findings);
        Report::build_grouped(inputs, stats, exercised, rules, findings, groups, None)
    }

    /// `groups` are of every finding, `findings` of those listed (all of them unless
    /// `not_listed`).
    pub(crate) fn build_grouped(
        inputs: Vec<String>,
        stats: &Stats,
        exercised: &Coverage,
        rules: &RuleSet,
        findings: Vec<Finding>,
        groups: Vec<Group>,
        not_listed: Option<NotListed>,
    ) -> Report {
        let summary = Summary {
            inputs,
            connections: stats.connections,
            mqtt_packets: stats.mqtt_packets,
            publishes: stats.publishes,
            messages: stats.messages,
            deliveries: stats.deliveries,
            unattributed: stats.unattributed,
            errors: 0,
            warnings: 0,
            infos: 0,
            filtered: None,
            judged: true,
            not_judged_because: vec![],
            incomplete: vec![],
            unreadable: vec![],
            not_listed,
        };
        let clauses = rules
            .clauses
            .iter()
            .map(|c| unjudged_row(&c.clause, &c.title, exercised))
            .collect();
        let outcome_rules = rules
            .rules
            .iter()
            .filter(|r| is_outcome_check(&r.def.check))
            .map(|r| r.def.id.clone())
            .collect();
        let unfinished_rules: std::collections::BTreeMap<String, Unfinished> = rules
            .rules
            .iter()
            .filter_map(|r| Some((r.def.id.clone(), unfinished_kind(&r.def.check)?)))
            .collect();
        let open_work = groups
            .iter()
            .filter(|g| unfinished_rules.contains_key(&g.rule))
            .cloned()
            .collect();
        let mut report = Report {
            summary,
            clauses,
            findings,
            rules: rules.files.clone(),
            groups,
            edges: vec![],
            outcome_rules,
            unfinished_rules,
            open_work,
            traffic: stats.edges.clone(),
            timeline: None,
            tz_offset_s: rules.tz(),
        };
        report.recount();
        report
    }

    /// The input file a finding came from, when the run read several: the
    /// connection ids of file `i` start at `i × CONN_STRIDE`.
    pub fn file_of(&self, f: &Finding) -> Option<&str> {
        if self.summary.inputs.len() < 2 {
            return None;
        }
        let i = usize::try_from(f.conn? / crate::finding::CONN_STRIDE).ok()?;
        self.summary.inputs.get(i).map(String::as_str)
    }

    /// Renumbers the findings (`packet`) with `frame_of`, e.g. a stored capture's
    /// chunk numbers as the frame numbers its pcapng export carries; groups follow
    /// when the report lists every finding (a bounded one's groups keep the numbers
    /// they were counted with: see [`Report::renumber_groups`]).
    pub fn renumber(&mut self, frame_of: impl Fn(&Finding) -> Option<u64>) {
        for f in &mut self.findings {
            if let Some(n) = frame_of(f) {
                f.packet = Some(n);
            }
        }
        if self.summary.not_listed.is_none() {
            self.groups = group::group(&self.findings);
        }
        self.recount();
    }

    /// [`Report::renumber`] of the chart: its messages through `frame_of_packet`
    /// (the frame a stored event starts), its findings through `frame_of`, so a
    /// message's "pkt" label is the frame number its findings cite.
    pub fn renumber_chart(
        &mut self,
        frame_of: impl Fn(&Finding) -> Option<u64>,
        frame_of_packet: impl Fn(u64) -> Option<u64>,
    ) {
        if let Some(t) = &mut self.timeline {
            std::sync::Arc::make_mut(t).renumber(&frame_of, &frame_of_packet);
        }
    }

    /// For a bounded report (whose groups count findings it did not keep): the
    /// groups' first and last packet numbers through `frame_of_packet`.
    pub fn renumber_groups(&mut self, frame_of_packet: impl Fn(u64) -> Option<u64>) {
        if self.summary.not_listed.is_none() {
            return;
        }
        for g in &mut self.groups {
            for p in [&mut g.first_packet, &mut g.last_packet] {
                *p = p.map(|n| frame_of_packet(n).unwrap_or(n));
            }
        }
    }

    /// Keeps only the findings `filter` shows, counts again, and notes what it left
    /// out. The clause table keeps the clauses of `--clause`, the edges table the
    /// edges of `--edge`.
    pub fn apply(&mut self, filter: &Filter) {
        if filter.is_empty() {
            return;
        }
        // An --edge that names no edge of the input (a typo, a device that never
        // showed up) judged nothing: said so, and the exit code is 3, not a pass.
        if !filter.edges.is_empty()
            && filter
                .edges
                .iter()
                .all(|e| !self.edges.iter().any(|r| &r.edge_id == e))
        {
            let seen: Vec<&str> = self.edges.iter().map(|r| r.edge_id.as_str()).collect();
            self.summary.judged = false;
            self.summary.not_judged_because.push(format!(
                "no message of edge {} in the input; its edges are: {}",
                filter.edges.join(", "),
                if seen.is_empty() {
                    "none".to_string()
                } else {
                    seen.join(", ")
                }
            ));
        }
        self.findings.retain(|f| filter.keeps(f));
        self.open_work
            .retain(|g| g.edge_id.as_deref().is_none_or(|e| filter.shows_edge(e)));
        let (shown, hidden): (Vec<Group>, Vec<Group>) = std::mem::take(&mut self.groups)
            .into_iter()
            .partition(|g| filter.keeps_group(g));
        self.groups = shown;
        self.recount();
        // What is not listed is what the groups count beyond the listed findings:
        // derived again, so it covers only what the filter shows.
        if let Some(n) = &mut self.summary.not_listed {
            n.findings =
                self.groups.iter().map(|g| g.count).sum::<u64>() - self.findings.len() as u64;
        }
        if self
            .summary
            .not_listed
            .as_ref()
            .is_some_and(|n| n.findings == 0)
        {
            self.summary.not_listed = None;
        }
        self.summary.filtered = Some(filter.note(&hidden));
        self.clauses.retain(|c| filter.shows_clause(&c.clause));
        self.edges.retain(|e| filter.shows_edge(&e.edge_id));
        if let Some(t) = &mut self.timeline {
            std::sync::Arc::make_mut(t).retain(|f| filter.keeps(f), |e| filter.shows_edge(e));
        }
    }

    /// The report with the message sequence `timeline` (from
    /// [`Collector::charting`](super::Collector::charting)).
    pub fn with_timeline(mut self, timeline: Option<timeline::Timeline>) -> Report {
        self.timeline = timeline.map(std::sync::Arc::new);
        self
    }

    /// Counts, clause verdicts and edges from the groups (which count every
    /// finding, listed or not).
    fn recount(&mut self) {
        let count = |s: Severity| {
            self.groups
                .iter()
                .filter(|g| g.severity == s)
                .map(|g| g.count)
                .sum()
        };
        self.summary.errors = count(Severity::Error);
        self.summary.warnings = count(Severity::Warning);
        self.summary.infos = count(Severity::Info);
        let listed: Vec<String> = self.clauses.iter().map(|c| c.clause.clone()).collect();
        let mut tallies = vec![Tally::default(); listed.len()];
        for g in &self.groups {
            if let Some(i) = owner(&g.clause, &listed) {
                tallies[i].count(g.severity, self.outcome_rules.contains(&g.rule), g.count);
            }
        }
        for g in &self.open_work {
            if let (Some(i), Some(kind)) = (
                owner(&g.clause, &listed),
                self.unfinished_rules.get(&g.rule),
            ) {
                tallies[i].count_unfinished(*kind, g.count);
            }
        }
        for (row, t) in self.clauses.iter_mut().zip(tallies) {
            t.set(row);
        }
        let outcomes = &self.outcome_rules;
        self.edges = edge_rows(&self.traffic, &self.groups, |g| outcomes.contains(&g.rule));
    }

    /// Findings counted, listed or not.
    pub fn total_findings(&self) -> u64 {
        self.groups.iter().map(|g| g.count).sum()
    }
}
