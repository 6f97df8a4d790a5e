//! Shapes the schema rules found clean. A device sends the same report again and
//! again; a message of a shape ([`crate::protocol::json::Shape`]) a rule judged
//! clean before differs from that one only in its values, so the rule checks those
//! values alone ([`schema::leaves_hold`]). Only when one fails is the message
//! validated in full, for the exact violations: the verdicts are the same with or
//! without this cache (`tests::shapes`).

use super::*;
use crate::protocol::json::Shape;
use crate::rules::model::Fields;
use crate::rules::schema::Leaf;

/// Shapes kept: a few report types with a few array sizes each. The oldest gives
/// way to a new one.
const KEPT: usize = 16;

#[derive(Default)]
pub(super) struct Shapes {
    entries: Vec<Entry>,
    /// Where the next new shape goes once `entries` is full.
    next: usize,
}

struct Entry {
    shape: Shape,
    /// Per schema rule (by index) that found this shape clean: the values it checked.
    clean: Vec<(usize, Vec<Leaf>)>,
    /// Key-naming rules (by index) every member name of this shape matched.
    names_ok: Vec<usize>,
}

/// What a schema rule checks in one message.
pub(super) struct Target<'a> {
    pub(super) doc: &'a Doc,
    /// The checked object (the envelope or its `param`) and its path.
    pub(super) obj: Val<'a>,
    pub(super) prefix: &'a str,
    /// The entry of the message's shape, once looked up (by the first schema rule
    /// of the message; the others reuse it).
    pub(super) entry: &'a mut Option<Option<usize>>,
}

impl Shapes {
    /// Whether every member name of the shape of entry `e` matched key-naming rule
    /// `ix` before (the names are part of the shape).
    pub(super) fn names_ok(&self, e: usize, ix: usize) -> bool {
        self.entries
            .get(e)
            .is_some_and(|x| x.names_ok.contains(&ix))
    }

    pub(super) fn note_names_ok(&mut self, e: usize, ix: usize) {
        if let Some(x) = self.entries.get_mut(e) {
            if !x.names_ok.contains(&ix) {
                x.names_ok.push(ix);
            }
        }
    }

    /// The violations of schema rule `rule` (index `ix`) in `t`.
    pub(super) fn violations(
        &mut self,
        t: Target<'_>,
        fields: &Fields,
        rule: &Rule,
        ix: usize,
    ) -> Vec<Violation> {
        // A comparison of lengths for most entries, of bytes for the one that fits.
        let entries = &self.entries;
        let entry = *t
            .entry
            .get_or_insert_with(|| entries.iter().position(|e| t.doc.has_shape(&e.shape)));
        let mut out = vec![];
        if let Some(e) = entry {
            if let Some((_, leaves)) = self.entries[e].clean.iter().find(|(r, _)| *r == ix) {
                if !schema::leaves_hold(t.obj, leaves) {
                    if let Some(members) = t.obj.as_object() {
                        schema::validate_object(
                            t.prefix,
                            members,
                            fields,
                            &rule.regexes,
                            "",
                            &mut out,
                        );
                    }
                }
                return out;
            }
        }
        let mut leaves = vec![];
        schema::validate_object_noting(
            t.prefix,
            t.obj,
            fields,
            &rule.regexes,
            &mut out,
            &mut leaves,
        );
        if out.is_empty() {
            self.learn(t, entry, ix, leaves);
        }
        out
    }

    fn learn(&mut self, t: Target<'_>, entry: Option<usize>, ix: usize, leaves: Vec<Leaf>) {
        if let Some(e) = entry {
            self.entries[e].clean.push((ix, leaves));
            return;
        }
        let Some(shape) = t.doc.shape() else { return };
        let new = Entry {
            shape,
            clean: vec![(ix, leaves)],
            names_ok: vec![],
        };
        let at = if self.entries.len() < KEPT {
            self.entries.push(new);
            self.entries.len() - 1
        } else {
            let at = self.next;
            self.entries[at] = new;
            self.next = (at + 1) % KEPT;
            at
        };
        *t.entry = Some(Some(at));
    }
}

#[cfg(test)]
mod tests {
    use crate::finding::{Finding, Side};
    use crate::pipeline::{Analyzer, At, Input, Settings, Sink};
    use crate::protocol::Message;
    use crate::rules::model::Check;
    use crate::rules::{Engine, RuleSet};
    use std::sync::Arc;

    #[derive(Default)]
    struct Collect {
        messages: Vec<Message>,
        findings: Vec<Finding>,
    }
    impl Sink for Collect {
        fn message(&mut self, m: &Message) {
            self.messages.push(m.clone());
        }
        fn finding(&mut self, f: &Finding) {
            self.findings.push(f.clone());
        }
    }

    /// The messages and findings of `payloads` published in turn on one data topic
    /// of a connection joined mid-session, judged by one engine.
    fn published(rules: &Arc<RuleSet>, payloads: &[String]) -> Collect {
        let mut a = Analyzer::new(rules.clone(), Settings::default());
        let mut got = Collect::default();
        let open = Input::Open {
            client: None,
            server: None,
            midstream: true,
        };
        a.push(At::new(1, 0, 0), open, &mut got);
        for (i, p) in payloads.iter().enumerate() {
            let bytes = crate::mqtt::encode::publish("/v1/E1/device/data", p.as_bytes());
            let input = Input::Data {
                side: Side::Client,
                bytes: &bytes,
            };
            a.push(At::new(1, i as i64, i as u64 + 1), input, &mut got);
        }
        got
    }

    fn status(cpu: &str, at: &str, links: usize) -> String {
        let links: Vec<String> = (0..links)
            .map(|i| format!(r#"{{"name":"eth{i}","status":"up"}}"#))
            .collect();
        format!(
            r#"{{"mid":{cpu}1,"type":"REP_SYS_STATUS","timestamp":"2026-12-07 10:00:00","deviceId":"E1","param":{{"cpuRate":{cpu},"memUsed":{{"phy":41}},"diskUsed":63,"tempValue":48,"devDateTime":"{at}","devStDateTime":"2026-12-01 08:00:00","devRunTime":5,"linkState":[{}]}}}}"#,
            links.join(",")
        )
    }

    /// The same messages judged by one engine (shapes learnt and reused) and each by
    /// a fresh engine (no shape known): the same schema findings, in the same order.
    #[test]
    fn shapes_change_no_verdict() {
        let ok = "2026-12-07 10:00:00";
        let payloads = [
            status("12", ok, 3),
            status("13", ok, 3),
            status("150", ok, 3),                    // same shape, out of range
            status("14", "2026-02-30 10:00:00", 3), // same shape, no such date
            status("150", "2026-02-30 10:00:00", 3),
            status("15", ok, 3),
            status("16", ok, 2), // another shape
            status("160", ok, 2),
            status("1.5", ok, 3), // a decimal: another shape
            status("-1", ok, 3),  // a negative: another shape, below range
            r#"{"mid":1,"type":"EVENT_SYS_ALARM","timestamp":"2026-12-07 10:00:00","param":{"event":"1001","msg":"m"}}"#.into(),
            r#"{"mid":2,"type":"EVENT_SYS_ALARM","timestamp":"2026-12-07 10:00:00","param":{"event":"9999","msg":"m"}}"#.into(),
            r#"{"mid":3,"type":"EVENT_SYS_ALARM","timestamp":"2026-12-07 10:00:00","param":{"event":"3010","msg":""}}"#.into(),
            r#"{"mid":4,"type":"EVENT_SYS_ALARM","timestamp":"2026-12-07 10:00:00","param":{"event":"3010","msg":"x"}}"#.into(),
        ];
        let rules = Arc::new(RuleSet::builtin());
        let schema_rule = |f: &Finding| {
            rules
                .rules
                .iter()
                .any(|r| r.def.id == f.rule && matches!(r.def.check, Check::Schema { .. }))
        };
        let got = published(&rules, &payloads);
        let cached: Vec<String> = got
            .findings
            .iter()
            .filter(|f| schema_rule(f))
            .map(|f| format!("{} {}", f.rule, f.message))
            .collect();
        assert_eq!(got.messages.len(), payloads.len());
        let fresh: Vec<String> = got
            .messages
            .iter()
            .flat_map(|m| Engine::judge_alone(&rules, m))
            .filter(|f| schema_rule(f))
            .map(|f| format!("{} {}", f.rule, f.message))
            .collect();
        assert_eq!(cached, fresh);
        // What the repeated shapes must not hide.
        for want in ["cpuRate", "devDateTime", "9999", "msg"] {
            assert!(
                cached.iter().any(|f| f.contains(want)),
                "no finding names {want}: {cached:#?}"
            );
        }
    }

    /// A shape whose names all matched the key-naming rule skips the walk over its
    /// names; a shape with a name it rejects is reported every time it comes.
    #[test]
    fn known_names_are_not_walked_again_and_bad_ones_still_reported() {
        let alarm = |name: &str| {
            format!(
                r#"{{"mid":1,"type":"EVENT_SYS_ALARM","timestamp":"2026-12-07 10:00:00","param":{{"event":"1001","msg":"m","{name}":1}}}}"#
            )
        };
        let payloads = [
            alarm("Bad_Key"),
            alarm("goodKey"),
            alarm("Bad_Key"),
            alarm("goodKey"),
            alarm("Bad_Key"),
        ];
        let rules = Arc::new(RuleSet::builtin());
        let got = published(&rules, &payloads);
        let named: Vec<u64> = got
            .findings
            .iter()
            .filter(|f| f.rule == "naming.key")
            .filter_map(|f| f.packet)
            .collect();
        assert_eq!(named, [1, 3, 5], "{:#?}", got.findings);
    }
}
