//! Repeated findings as groups: a device that omits ten fields from every status
//! report makes ten findings per report, a reader wants ten lines. Findings group by
//! rule, clause, severity, edge and their message with the numbers and ids replaced
//! by `#` (the field path stays, so each missing field is its own group).

use std::collections::HashMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::finding::{Finding, Severity};

pub use crate::finding::pattern;

/// Findings that say the same thing about the same edge.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Group {
    pub rule: String,
    pub clause: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    pub severity: Severity,
    pub edge_id: Option<String>,
    /// Who published the messages its findings cite.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<crate::protocol::Actor>,
    /// The message with numbers and ids replaced by `#`: what the findings share.
    pub pattern: String,
    /// How many findings the group holds.
    pub count: u64,
    /// Lowest and highest packet (frame) number of its findings.
    pub first_packet: Option<u64>,
    pub last_packet: Option<u64>,
    /// Earliest and latest time of its findings, µs since the Unix epoch.
    pub first_time: Option<i64>,
    pub last_time: Option<i64>,
    /// The message of its first finding.
    pub example: String,
}

/// The key findings group by.
#[derive(Clone, Hash, PartialEq, Eq)]
struct Key {
    rule: String,
    clause: String,
    severity: Severity,
    edge_id: Option<String>,
    from: Option<crate::protocol::Actor>,
    pattern: String,
}

/// Groups `findings`, in the order of each group's first finding.
pub fn group(findings: &[Finding]) -> Vec<Group> {
    let mut g = Grouper::default();
    for f in findings {
        g.add(f);
    }
    g.groups
}

/// Groups findings one at a time, for a run that counts every finding but does not
/// keep every one (the proxy's final report of a long capture, its live view):
/// memory grows with the groups, not with the findings, and the groups stop at
/// [`MAX_GROUPS`].
#[derive(Default, Clone)]
pub struct Grouper {
    index: HashMap<Key, usize>,
    groups: Vec<Group>,
    /// Wordings seen before, by a hash of rule, clause, severity, edge and message:
    /// their group and the message (compared, so a hash collision is no mistake).
    /// Most findings repeat a wording word for word; those skip the pattern and the
    /// key's allocations (452 ns → about 100 ns a finding).
    wordings: HashMap<u64, (usize, Box<str>)>,
}

/// Wordings a [`Grouper`] remembers (emptied when full).
const MAX_WORDINGS: usize = 10_000;

/// Groups a [`Grouper`] opens; past them, findings of a new message pattern are
/// counted in one group per rule, clause, severity and edge ([`OTHER_PATTERNS`]),
/// so counts and verdicts stay exact.
pub const MAX_GROUPS: usize = 10_000;
/// The pattern of the groups past [`MAX_GROUPS`].
pub const OTHER_PATTERNS: &str = "(other messages: more than 10,000 groups)";

impl Grouper {
    /// Counts `f` in its group; true when it opened a new one.
    pub fn add(&mut self, f: &Finding) -> bool {
        let h = ahash::RandomState::with_seeds(1, 2, 3, 4).hash_one((
            &f.rule, &f.clause, f.severity, &f.edge_id, f.from, &f.message,
        ));
        if let Some((i, message)) = self.wordings.get(&h) {
            let g = &self.groups[*i];
            if **message == *f.message
                && g.rule == f.rule
                && g.clause == f.clause
                && g.severity == f.severity
                && g.edge_id == f.edge_id
                && g.from == f.from
            {
                self.groups[*i].add(f);
                return false;
            }
        }
        let mut key = Key {
            rule: f.rule.clone(),
            clause: f.clause.clone(),
            severity: f.severity,
            edge_id: f.edge_id.clone(),
            from: f.from,
            pattern: pattern(&f.message),
        };
        if self.groups.len() >= MAX_GROUPS && !self.index.contains_key(&key) {
            key.pattern = OTHER_PATTERNS.into();
        }
        let (i, new) = match self.index.get(&key) {
            Some(&i) => {
                self.groups[i].add(f);
                (i, false)
            }
            None => {
                let mut g = Group::start(f);
                g.pattern.clone_from(&key.pattern);
                self.index.insert(key, self.groups.len());
                self.groups.push(g);
                (self.groups.len() - 1, true)
            }
        };
        if self.wordings.len() >= MAX_WORDINGS {
            self.wordings.clear();
        }
        self.wordings.insert(h, (i, f.message.as_str().into()));
        new
    }

    /// The groups so far, in the order of their first finding.
    pub fn groups(&self) -> &[Group] {
        &self.groups
    }

    pub fn into_groups(self) -> Vec<Group> {
        self.groups
    }
}

impl Group {
    fn start(f: &Finding) -> Group {
        Group {
            rule: f.rule.clone(),
            clause: f.clause.clone(),
            table: f.table.clone(),
            severity: f.severity,
            edge_id: f.edge_id.clone(),
            from: f.from,
            pattern: pattern(&f.message),
            count: 1,
            first_packet: f.packet,
            last_packet: f.packet,
            first_time: f.time,
            last_time: f.time,
            example: f.message.clone(),
        }
    }

    fn add(&mut self, f: &Finding) {
        self.count += 1;
        self.first_packet = lowest(self.first_packet, f.packet);
        self.last_packet = highest(self.last_packet, f.packet);
        self.first_time = lowest(self.first_time, f.time);
        self.last_time = highest(self.last_time, f.time);
    }

    /// `error   6.1.3 table 10 [t10.X] edge E1 ×2000, packets 8–2007: <example>`
    pub fn line(&self) -> String {
        let mut s = format!("{:<7} {}", self.severity.as_str(), self.clause);
        if let Some(t) = &self.table {
            let _ = write!(s, " table {t}");
        }
        let _ = write!(s, " [{}]", self.rule);
        if let Some(e) = &self.edge_id {
            s.push_str(&crate::finding::edge_label(e, self.from));
        }
        match (self.count, self.first_packet, self.last_packet) {
            (1, Some(p), _) => {
                let _ = write!(s, " packet {p}");
            }
            (n, Some(a), Some(b)) if n > 1 => {
                let _ = write!(s, " ×{n}, packets {a}–{b}");
            }
            (n, _, _) if n > 1 => {
                let _ = write!(s, " ×{n}");
            }
            _ => {}
        }
        let _ = write!(s, ": {}", self.example);
        crate::finding::printable(&s).into_owned()
    }
}

fn lowest<T: Ord>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn highest<T: Ord>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(rule: &str, edge: &str, packet: u64, message: &str) -> Finding {
        Finding {
            rule: rule.into(),
            clause: "6.1.3".into(),
            table: Some("10".into()),
            severity: Severity::Error,
            edge_id: Some(edge.into()),
            msg_type: Some("REP_SYS_STATUS".into()),
            topic: None,
            mid: Some(packet),
            packet: Some(packet),
            time: Some(packet as i64 * 1000),
            message: message.into(),
            conn: None,
            side: None,
            offset: None,
            basis: None,
            from: None,
        }
    }

    #[test]
    fn findings_group_by_rule_edge_and_pattern_with_counts_and_packets() {
        let mut fs = vec![];
        for p in 1..=5 {
            fs.push(finding(
                "t10.X",
                "E1",
                p,
                &format!("mid {p}: param.cpuRate absent"),
            ));
            fs.push(finding(
                "t10.X",
                "E1",
                p,
                &format!("mid {p}: param.diskUsed absent"),
            ));
            fs.push(finding(
                "t10.X",
                "E2",
                p,
                &format!("mid {p}: param.cpuRate absent"),
            ));
        }
        fs.push(finding("t9.Y", "E1", 9, "mid 9: param.cpuRate absent"));
        let groups = group(&fs);
        assert_eq!(groups.len(), 4, "{groups:#?}");
        assert_eq!(groups.iter().map(|g| g.count).sum::<u64>(), fs.len() as u64);
        let g = &groups[0];
        assert_eq!(
            (g.rule.as_str(), g.edge_id.as_deref()),
            ("t10.X", Some("E1"))
        );
        assert_eq!(
            (g.count, g.first_packet, g.last_packet),
            (5, Some(1), Some(5))
        );
        assert_eq!((g.first_time, g.last_time), (Some(1000), Some(5000)));
        assert_eq!(g.example, "mid 1: param.cpuRate absent");
        assert!(
            g.line().contains("[t10.X] edge E1 ×5, packets 1–5: mid 1"),
            "{}",
            g.line()
        );
        assert!(
            groups[3].line().contains("packet 9: mid 9"),
            "{}",
            groups[3].line()
        );
    }

    #[test]
    fn groups_stop_at_the_limit_and_still_count_every_finding() {
        // A device that puts a new word in every message: each its own pattern.
        let words = |i: usize| -> String {
            let mut n = i;
            let mut w = String::from("field ");
            loop {
                w.push((b'a' + (n % 26) as u8) as char);
                n /= 26;
                if n == 0 {
                    break;
                }
            }
            w
        };
        let mut g = Grouper::default();
        for i in 0..MAX_GROUPS + 500 {
            g.add(&finding("t10.X", "E1", i as u64, &words(i)));
            g.add(&finding("t10.X", "E2", i as u64, &words(i)));
        }
        let groups = g.into_groups();
        // The first findings opened groups up to the limit; those of new patterns
        // after it count in one group per edge.
        assert_eq!(groups.len(), MAX_GROUPS + 2);
        let other: Vec<&Group> = groups
            .iter()
            .filter(|g| g.pattern == OTHER_PATTERNS)
            .collect();
        assert_eq!(other.len(), 2);
        assert_eq!(
            groups.iter().map(|g| g.count).sum::<u64>(),
            2 * (MAX_GROUPS as u64 + 500)
        );
        assert_eq!(
            other[0].count + other[1].count,
            2 * (MAX_GROUPS as u64 + 500) - MAX_GROUPS as u64
        );
    }
}
