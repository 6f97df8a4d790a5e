//! The sink a report is built from: [`Collector`] keeps the findings the pipeline
//! emits (all of them, or when bounded the first ones and the first of each group,
//! every one counted), and the message sequence per edge when charting.

use super::group;
use super::timeline;
use super::{NotListed, Report};
use crate::finding::Finding;
use crate::pipeline::{Sink, Stats};
use crate::rules::engine::Coverage;
use crate::rules::RuleSet;

/// Findings a report built by a bounded [`Collector`] lists one by one (and the
/// first of each later group): the proxy's final report, and `analyze` when it shows
/// groups. Every finding is counted in its group either way.
pub const LISTED_FINDINGS: usize = 20_000;

/// Collects findings as the pipeline emits them, and the message sequence per edge
/// when charting.
#[derive(Default, Clone)]
pub struct Collector {
    pub findings: Vec<Finding>,
    pub timeline: Option<timeline::Timeline>,
    /// When bounded: every finding counted in its group, and how many were not kept.
    bounded: Option<Bounded>,
}

#[derive(Clone)]
struct Bounded {
    keep: usize,
    groups: group::Grouper,
    not_kept: u64,
}

impl Collector {
    /// A collector that also keeps the message sequence (for `--format html`).
    pub fn charting(chart: bool) -> Collector {
        Collector {
            timeline: chart.then(timeline::Timeline::new),
            ..Collector::default()
        }
    }

    /// A collector that adds to the message sequence `timeline`.
    pub fn charting_into(timeline: timeline::Timeline) -> Collector {
        Collector {
            timeline: Some(timeline),
            ..Collector::default()
        }
    }

    /// A collector that keeps the first `keep` findings and the first finding of
    /// each later group, and counts the others in their groups: its memory grows
    /// with the groups, not with the findings (a proxy stopped after days in front of
    /// a device that breaks a rule in every message).
    pub fn bounded(keep: usize) -> Collector {
        Collector {
            bounded: Some(Bounded {
                keep,
                groups: group::Grouper::default(),
                not_kept: 0,
            }),
            ..Collector::default()
        }
    }
}

impl Sink for Collector {
    fn message(&mut self, m: &crate::protocol::Message) {
        if let Some(t) = &mut self.timeline {
            t.message(m);
        }
    }
    fn finding(&mut self, f: &Finding) {
        if let Some(t) = &mut self.timeline {
            t.finding(f);
        }
        if let Some(b) = &mut self.bounded {
            let new_group = b.groups.add(f);
            if self.findings.len() >= b.keep && !new_group {
                b.not_kept += 1;
                return;
            }
        }
        self.findings.push(f.clone());
    }
}

impl Report {
    /// The report of what `c` collected; when it is bounded and did not keep every
    /// finding, `hint` says how to list every one (the summary's `not_listed`).
    pub fn collected(
        inputs: Vec<String>,
        stats: &Stats,
        exercised: &Coverage,
        rules: &RuleSet,
        c: Collector,
        hint: impl FnOnce() -> String,
    ) -> Report {
        let (findings, timeline) = (c.findings, c.timeline);
        let report = match c.bounded {
            Some(b) => {
                let not_listed = (b.not_kept > 0).then(|| NotListed {
                    findings: b.not_kept,
                    hint: hint(),
                });
                let groups = b.groups.into_groups();
                Report::build_grouped(
                    inputs, stats, exercised, rules, findings, groups, not_listed,
                )
            }
            None => Report::build(inputs, stats, exercised, rules, findings),
        };
        report.with_timeline(timeline)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::finding::Severity;
    use crate::report::filter::Filter;
    use crate::report::render::rendered;
    use crate::report::{Format, Listing};
    use crate::rules::engine::Coverage;

    fn finding(rule: &str, clause: &str, severity: Severity, edge: &str, i: u64) -> Finding {
        Finding {
            rule: rule.into(),
            clause: clause.into(),
            table: None,
            severity,
            edge_id: Some(edge.into()),
            msg_type: None,
            topic: None,
            mid: Some(i),
            packet: Some(i + 1),
            time: Some(1_800_000_000_000_000 + i as i64 * 1_000),
            message: format!("{rule}: param lacks a field (mid {i})"),
            conn: None,
            side: None,
            offset: None,
            basis: Some(format!("basis of {rule}").into()),
            from: None,
        }
    }

    /// 60 messages: two groups from the start, a third from message 45 on.
    fn findings() -> Vec<Finding> {
        let mut out = vec![];
        for i in 0..60 {
            out.push(finding(
                "t10.REP_SYS_STATUS",
                "6.1.3",
                Severity::Error,
                "E1",
                i,
            ));
            out.push(finding(
                "t9.REP_SYS_INFO",
                "6.1.3",
                Severity::Warning,
                "E2",
                i,
            ));
            if i >= 45 {
                out.push(finding("seq.late", "6.1.2", Severity::Warning, "E3", i));
            }
        }
        out
    }

    fn report(c: Collector) -> Report {
        Report::collected(
            vec!["capture 1".into()],
            &Stats::default(),
            &Coverage::default(),
            &RuleSet::builtin(),
            c,
            || "`edgetap analyze --capture 1 --each` lists every one".into(),
        )
    }

    fn collect(keep: Option<usize>) -> Report {
        let mut c = keep.map_or_else(Collector::default, Collector::bounded);
        for f in findings() {
            c.finding(&f);
        }
        report(c)
    }

    /// A device's type or msg holding ESC, BEL or NUL reaches no terminal and no
    /// JUnit XML raw: the table, `--each` and JUnit write them as escapes.
    #[test]
    fn control_characters_a_device_sent_are_written_as_escapes() {
        let mut f = finding(
            "t19.EVENT_SYS_ALARM",
            "6.1.3",
            Severity::Error,
            "E\u{1b}1",
            1,
        );
        f.msg_type = Some("EVENT_\u{1b}[2J".into());
        f.message = "msg \u{1b}]0;owned\u{7} and \u{0}".into();
        let mut c = Collector::default();
        c.finding(&f);
        let r = report(c);
        for (what, text) in [
            ("table", rendered(&r, Format::Table, Listing::Grouped)),
            ("--each", rendered(&r, Format::Table, Listing::Each)),
            ("junit", rendered(&r, Format::Junit, Listing::Grouped)),
        ] {
            assert!(
                !text
                    .chars()
                    .any(|c| c.is_control() && !matches!(c, '\n' | '\t' | '\r')),
                "{what}: {text:?}"
            );
            assert!(text.contains("\\u{1b}"), "{what}: {text}");
        }
    }

    #[test]
    fn a_bounded_report_counts_every_finding_and_lists_the_first() {
        let all = collect(None);
        let bounded = collect(Some(10));
        assert_eq!(all.findings.len(), 135);
        // The same groups, counts, clause verdicts and edges.
        assert_eq!(bounded.groups, all.groups);
        assert_eq!(bounded.clauses, all.clauses);
        assert_eq!(bounded.edges, all.edges);
        let counts = |r: &Report| (r.summary.errors, r.summary.warnings, r.summary.infos);
        assert_eq!(counts(&bounded), (60, 75, 0));
        assert_eq!(counts(&bounded), counts(&all));
        assert_eq!(bounded.total_findings(), 135);
        // The first 10, and the first of the group that began later.
        assert_eq!(bounded.findings[..10], all.findings[..10]);
        assert_eq!(bounded.findings.len(), 11);
        assert_eq!(bounded.findings[10].rule, "seq.late");
        let not_listed = bounded.summary.not_listed.as_ref().expect("not listed");
        assert_eq!(not_listed.findings, 124);
        assert!(all.summary.not_listed.is_none());
        // Every output says so.
        let grouped = rendered(&bounded, Format::Table, Listing::Grouped);
        assert!(
            grouped.contains(
                "Findings (135 in 3 groups; `edgetap analyze --capture 1 --each` lists every one)"
            ),
            "{grouped}"
        );
        // The standard's words of a rule whose findings began after the first 10.
        assert!(
            grouped.contains("[seq.late] basis of seq.late"),
            "{grouped}"
        );
        let each = rendered(&bounded, Format::Table, Listing::Each);
        assert!(
            each.contains("… 124 more findings, counted above but not kept: `edgetap analyze"),
            "{each}"
        );
        let json: serde_json::Value =
            serde_json::from_str(&rendered(&bounded, Format::Json, Listing::Grouped)).unwrap();
        assert_eq!(json["summary"]["not_listed"]["findings"], 124);
        assert_eq!(json["findings"].as_array().unwrap().len(), 11);
        assert!(serde_json::from_str::<serde_json::Value>(&rendered(
            &all,
            Format::Json,
            Listing::Grouped
        ))
        .unwrap()["summary"]
            .get("not_listed")
            .is_none());
    }

    #[test]
    fn a_filter_counts_a_bounded_report_as_a_whole_one() {
        let filter = Filter {
            min_severity: Some(Severity::Warning),
            edges: vec!["E2".into(), "E3".into()],
            ..Filter::default()
        };
        let mut all = collect(None);
        let mut bounded = collect(Some(10));
        all.apply(&filter);
        bounded.apply(&filter);
        assert_eq!(bounded.groups, all.groups);
        assert_eq!(bounded.summary.filtered, all.summary.filtered);
        let note = bounded.summary.filtered.as_ref().unwrap();
        assert_eq!((note.hidden_errors, note.hidden_warnings), (60, 0));
        assert_eq!(bounded.summary.warnings, 75);
        assert_eq!(bounded.summary.errors, 0);
        // Not listed: the shown warnings beyond those listed (E2's among the first 10,
        // and E3's first), not the hidden errors too.
        let listed = bounded.findings.len() as u64;
        assert_eq!(
            bounded.summary.not_listed.as_ref().map(|n| n.findings),
            Some(75 - listed)
        );
        assert!(bounded.findings.iter().all(|f| filter.keeps(f)));
    }

    #[test]
    fn a_bounded_collector_with_room_keeps_every_finding() {
        let all = collect(None);
        let roomy = collect(Some(1_000));
        assert_eq!(roomy.findings, all.findings);
        assert!(roomy.summary.not_listed.is_none());
    }
}
