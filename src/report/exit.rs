//! What a run proves: whether it judged any protocol message (and if not, why),
//! what kept it from reading its input in full, and the exit code that says so.

use super::Report;

/// Exit code of a run that read its input but judged no protocol message.
pub const EXIT_NOTHING_JUDGED: u8 = 3;
/// Exit code of a run whose input is unreadable (or of bad usage).
pub const EXIT_UNREADABLE: u8 = 2;
/// Exit code of a run with error findings.
pub const EXIT_ERRORS: u8 = 1;

impl Report {
    pub fn has_errors(&self) -> bool {
        self.summary.errors > 0
    }

    /// Marks the run as having judged nothing when it holds no protocol message;
    /// `hints` say why, most specific first (the generic reasons from the counters
    /// follow). Returns whether it did.
    pub fn check_judged(&mut self, hints: Vec<String>) -> bool {
        if self.summary.messages > 0 {
            return false;
        }
        let mut why = hints;
        why.extend(self.reasons_from_counters());
        if why.is_empty() {
            why.push("the input holds no protocol message".into());
        }
        self.summary.judged = false;
        self.summary.not_judged_because = why;
        true
    }

    /// Why no message was judged, as far as the MQTT counters tell.
    fn reasons_from_counters(&self) -> Vec<String> {
        let s = &self.summary;
        if s.unattributed > 0 {
            vec![format!(
                "MQTT seen ({} PUBLISH packets) but none on a protocol topic (/v1/{{edgeId}}/{{channel}}/{{role}}): nothing to judge",
                s.unattributed
            )]
        } else if s.mqtt_packets > 0 {
            vec![format!(
                "MQTT seen ({} packets on {} connections) but no PUBLISH on a protocol topic (/v1/{{edgeId}}/{{channel}}/{{role}})",
                s.mqtt_packets, s.connections
            )]
        } else {
            vec![]
        }
    }

    /// The exit code of `analyze`: 2 unreadable input, else 1 error findings, else 3
    /// nothing judged, else 0.
    pub fn exit_code(&self) -> u8 {
        if !self.summary.unreadable.is_empty() {
            EXIT_UNREADABLE
        } else if self.has_errors() {
            EXIT_ERRORS
        } else if !self.summary.judged {
            EXIT_NOTHING_JUDGED
        } else {
            0
        }
    }

    /// The lines that say why the run cannot be trusted as it stands: the input not
    /// read in full, nothing judged. Empty for a run that read and judged its input.
    pub fn problems(&self) -> Vec<String> {
        let s = &self.summary;
        let mut out: Vec<String> = s
            .incomplete
            .iter()
            .map(|m| format!("capture not read in full: {m}"))
            .collect();
        if !s.judged {
            out.push("nothing judged: no protocol message in the input".into());
            out.extend(s.not_judged_because.iter().map(|r| format!("  {r}")));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::Stats;
    use crate::report::render::rendered;
    use crate::report::{Format, Listing};
    use crate::rules::engine::Coverage;
    use crate::rules::RuleSet;

    fn empty_report(stats: Stats) -> Report {
        let rules = RuleSet::builtin();
        Report::build(
            vec!["x.pcap".into()],
            &stats,
            &Coverage::default(),
            &rules,
            vec![],
        )
    }

    #[test]
    fn exit_codes_in_order_unreadable_errors_nothing_judged() {
        let judged = empty_report(Stats {
            messages: 3,
            ..Default::default()
        });
        let mut r = judged.clone();
        assert!(!r.check_judged(vec![]));
        assert_eq!(r.exit_code(), 0);

        let mut r = empty_report(Stats::default());
        assert!(r.check_judged(vec!["hint".into()]));
        assert_eq!(r.exit_code(), EXIT_NOTHING_JUDGED);
        r.summary.errors = 1;
        assert_eq!(r.exit_code(), EXIT_ERRORS);
        r.summary
            .unreadable
            .push("x.pcap: frame 1 at byte offset 24: corrupt".into());
        assert_eq!(r.exit_code(), EXIT_UNREADABLE);
    }

    #[test]
    fn nothing_judged_is_a_junit_failure_and_a_json_field_with_reasons() {
        let mut r = empty_report(Stats {
            mqtt_packets: 4,
            publishes: 2,
            unattributed: 2,
            connections: 1,
            ..Default::default()
        });
        r.check_judged(vec![]);
        let xml = rendered(&r, Format::Junit, Listing::Grouped);
        assert!(xml.contains("<failure message=\"nothing judged"), "{xml}");
        assert!(xml.contains("none on a protocol topic"), "{xml}");
        let json: serde_json::Value =
            serde_json::from_str(&rendered(&r, Format::Json, Listing::Grouped)).unwrap();
        assert_eq!(json["summary"]["judged"], false);
        assert!(json["summary"]["not_judged_because"][0]
            .as_str()
            .unwrap()
            .contains("2 PUBLISH packets"));
        assert!(rendered(&r, Format::Table, Listing::Grouped).contains("nothing judged"));
    }
}
