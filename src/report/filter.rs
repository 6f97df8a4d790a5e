//! What a report shows: `--edge`, `--severity`, `--rule` and `--clause` of
//! `edgetap analyze`. A filtered report counts, groups and judges only the findings
//! it shows (its exit code too), and its summary says what was left out.

use serde::Serialize;

use super::group::Group;
use crate::finding::{Finding, Severity};
use crate::rules::id_matches;

/// The findings to show; an empty filter shows every finding.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    /// Edge ids (any of them).
    pub edges: Vec<String>,
    /// The lowest severity shown.
    pub min_severity: Option<Severity>,
    /// Rule ids, or prefixes ending in `.` (any of them).
    pub rules: Vec<String>,
    /// Clauses, each with its sub-clauses: `6.1` holds `6.1.3` (any of them).
    pub clauses: Vec<String>,
}

/// What a filter left out, in the report's summary.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FilterNote {
    /// The filter, as the options that set it (`--severity error`, `--edge E1`…).
    pub applied: Vec<String>,
    /// Findings left out, by severity.
    pub hidden_errors: u64,
    pub hidden_warnings: u64,
    pub hidden_infos: u64,
}

impl Filter {
    pub fn is_empty(&self) -> bool {
        *self == Filter::default()
    }

    /// The finding is shown.
    pub fn keeps(&self, f: &Finding) -> bool {
        self.keeps_kind(f.severity, f.edge_id.as_deref(), &f.rule, &f.clause)
    }

    /// The group's findings are shown (a filter looks only at what a group shares).
    pub fn keeps_group(&self, g: &Group) -> bool {
        self.keeps_kind(g.severity, g.edge_id.as_deref(), &g.rule, &g.clause)
    }

    fn keeps_kind(&self, severity: Severity, edge: Option<&str>, rule: &str, clause: &str) -> bool {
        self.min_severity.is_none_or(|s| severity >= s)
            && any_or_none(&self.edges, |e| edge == Some(e))
            && any_or_none(&self.rules, |r| id_matches(r, rule))
            && any_or_none(&self.clauses, |c| within(clause, c))
    }

    /// The clause table row of `clause` is shown: it is inside a `--clause`, or holds
    /// one (`--clause 6.1.3.2` keeps the row 6.1.3).
    pub fn shows_clause(&self, clause: &str) -> bool {
        any_or_none(&self.clauses, |c| within(clause, c) || within(c, clause))
    }

    /// The per-edge row of `edge` is shown.
    pub fn shows_edge(&self, edge: &str) -> bool {
        any_or_none(&self.edges, |e| e == edge)
    }

    /// A `--rule` that names no rule, or a `--clause` inside which no rule judges,
    /// would show nothing and pass a CI gate: refused, with what exists.
    pub fn check(&self, rules: &crate::rules::RuleSet) -> Result<(), String> {
        let all = || rules.rules.iter().chain(&rules.disabled);
        for r in &self.rules {
            if !all().any(|x| id_matches(r, &x.def.id)) {
                return Err(format!(
                    "--rule {r}: no rule has this id{}; `edgetap rules list` shows them \
                     (a prefix ends with '.', e.g. --rule t10.)",
                    if r.ends_with('.') { " prefix" } else { "" }
                ));
            }
        }
        for c in &self.clauses {
            let judged = rules.clauses.iter().any(|k| within(&k.clause, c))
                || all().any(|x| x.def.clause.as_deref().is_some_and(|k| within(k, c)));
            if !judged {
                let known: Vec<&str> = rules.clauses.iter().map(|k| k.clause.as_str()).collect();
                return Err(format!(
                    "--clause {c}: no rule judges this clause or one inside it; the clauses \
                     are {}",
                    known.join(", ")
                ));
            }
        }
        Ok(())
    }

    /// The filter as the options that set it.
    pub fn describe(&self) -> Vec<String> {
        let mut out: Vec<String> = self.edges.iter().map(|e| format!("--edge {e}")).collect();
        if let Some(s) = self.min_severity {
            out.push(format!("--severity {}", s.as_str()));
        }
        out.extend(self.rules.iter().map(|r| format!("--rule {r}")));
        out.extend(self.clauses.iter().map(|c| format!("--clause {c}")));
        out
    }

    /// The note on `hidden`, the groups of the findings this filter left out.
    pub fn note(&self, hidden: &[Group]) -> FilterNote {
        let count = |s: Severity| {
            hidden
                .iter()
                .filter(|g| g.severity == s)
                .map(|g| g.count)
                .sum()
        };
        FilterNote {
            applied: self.describe(),
            hidden_errors: count(Severity::Error),
            hidden_warnings: count(Severity::Warning),
            hidden_infos: count(Severity::Info),
        }
    }
}

impl FilterNote {
    /// `filtered by --severity error: 3 warnings, 1 info not shown`
    pub fn line(&self) -> String {
        let hidden = [
            (self.hidden_errors, "error", "errors"),
            (self.hidden_warnings, "warning", "warnings"),
            (self.hidden_infos, "info", "info"),
        ];
        let parts: Vec<String> = hidden
            .iter()
            .filter(|(n, _, _)| *n > 0)
            .map(|(n, one, many)| super::junit::count(*n as usize, one, many))
            .collect();
        let left_out = if parts.is_empty() {
            "no finding left out".to_string()
        } else {
            format!("{} not shown", parts.join(", "))
        };
        format!("filtered by {}: {left_out}", self.applied.join(" "))
    }
}

/// True when `items` is empty (no such filter) or one item passes `test`.
fn any_or_none(items: &[String], test: impl Fn(&str) -> bool) -> bool {
    items.is_empty() || items.iter().any(|i| test(i))
}

/// `clause` is `parent` or one of its sub-clauses (`6.1.3.2` is within `6.1.3` and
/// `6.1`, not within `6.1.30`).
pub fn within(clause: &str, parent: &str) -> bool {
    clause
        .strip_prefix(parent)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(rule: &str, clause: &str, severity: Severity, edge: Option<&str>) -> Finding {
        Finding {
            rule: rule.into(),
            clause: clause.into(),
            table: None,
            severity,
            edge_id: edge.map(Into::into),
            msg_type: None,
            topic: None,
            mid: None,
            packet: None,
            time: None,
            message: "m".into(),
            conn: None,
            side: None,
            offset: None,
            basis: None,
            from: None,
        }
    }

    #[test]
    fn each_filter_keeps_only_what_it_names() {
        let f = finding("t10.REP_SYS_STATUS", "6.1.3", Severity::Warning, Some("E1"));
        assert!(Filter::default().keeps(&f));
        let by = |filter: Filter| filter.keeps(&f);
        assert!(by(Filter {
            edges: vec!["E2".into(), "E1".into()],
            ..Filter::default()
        }));
        assert!(!by(Filter {
            edges: vec!["E2".into()],
            ..Filter::default()
        }));
        assert!(by(Filter {
            min_severity: Some(Severity::Warning),
            ..Filter::default()
        }));
        assert!(!by(Filter {
            min_severity: Some(Severity::Error),
            ..Filter::default()
        }));
        assert!(by(Filter {
            rules: vec!["t10.".into()],
            ..Filter::default()
        }));
        assert!(!by(Filter {
            rules: vec!["t10".into()],
            ..Filter::default()
        }));
        assert!(by(Filter {
            clauses: vec!["6.1".into()],
            ..Filter::default()
        }));
        assert!(!by(Filter {
            clauses: vec!["6.1.30".into()],
            ..Filter::default()
        }));
        let clause_6 = Filter {
            clauses: vec!["6".into()],
            ..Filter::default()
        };
        assert!(clause_6.keeps(&finding("x", "6.1", Severity::Info, None)));
        assert!(!clause_6.keeps(&finding("x", "5.2", Severity::Error, None)));
        assert!(clause_6.shows_clause("6.1.3") && !clause_6.shows_clause("5.3"));
        let deep = Filter {
            clauses: vec!["6.1.3.2".into()],
            ..Filter::default()
        };
        assert!(deep.shows_clause("6.1.3") && !deep.shows_clause("6.1.2"));
    }

    #[test]
    fn the_note_counts_what_was_left_out() {
        let filter = Filter {
            min_severity: Some(Severity::Error),
            ..Filter::default()
        };
        let hidden = [
            finding("a", "5.3", Severity::Warning, None),
            finding("b", "5.3", Severity::Info, None),
            finding("c", "5.3", Severity::Warning, None),
        ];
        let note = filter.note(&crate::report::group::group(&hidden));
        assert_eq!(
            (note.hidden_errors, note.hidden_warnings, note.hidden_infos),
            (0, 2, 1)
        );
        assert_eq!(
            note.line(),
            "filtered by --severity error: 2 warnings, 1 info not shown"
        );
    }
}
