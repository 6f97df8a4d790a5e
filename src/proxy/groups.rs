//! Findings grouped by (edge, rule, field path) for the proxy's console and view:
//! the judge ([`super::judge`]) counts each finding in its group as it is judged.

use std::collections::HashMap;

use crate::finding::{Finding, Severity};

/// Findings of one (edge, rule, field path): the key of the console and the view.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupKey {
    pub edge: Option<String>,
    pub rule: String,
    /// The finding's message with numbers and ids taken out
    /// ([`crate::report::group::pattern`]): names the field path.
    pub path: String,
}

impl GroupKey {
    pub fn of(f: &Finding) -> GroupKey {
        GroupKey {
            edge: f.edge_id.clone(),
            rule: f.rule.clone(),
            path: crate::report::group::pattern(&f.message),
        }
    }
}

/// One group of findings as the view shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GroupCount {
    pub edge: Option<String>,
    pub rule: String,
    pub path: String,
    pub severity: Severity,
    pub count: u64,
    pub first_us: Option<i64>,
    pub last_us: Option<i64>,
    /// The first finding of the group, as printed.
    pub example: String,
}

/// The view's groups, kept in first-seen order. Most findings repeat one seen
/// before word for word: they are found by a hash of edge, rule and message, and the
/// message's pattern ([`GroupKey`]) is computed only for a new wording. (`watch`
/// groups its live findings with it too.)
#[derive(Default)]
pub struct Groups {
    exact: HashMap<u64, usize, ahash::RandomState>,
    index: HashMap<GroupKey, usize>,
    pub(crate) list: Vec<GroupCount>,
}

/// Distinct groups the view keeps; more count in the totals only.
pub const MAX_GROUPS: usize = 10_000;
/// Distinct wordings remembered (the cache is emptied when it is full).
const MAX_WORDINGS: usize = 100_000;

impl Groups {
    /// The groups so far, in the order their first finding came.
    pub fn list(&self) -> &[GroupCount] {
        &self.list
    }

    /// Counts `f` in its group: `(index, first of its group)`.
    pub fn add(&mut self, f: &Finding) -> (Option<usize>, bool) {
        let h =
            ahash::RandomState::with_seeds(5, 6, 7, 8).hash_one((&f.edge_id, &f.rule, &f.message));
        let (i, first) = match self.exact.get(&h) {
            Some(&i) => (i, false),
            None => {
                let key = GroupKey::of(f);
                let (i, first) = match self.index.get(&key) {
                    Some(&i) => (i, false),
                    None if self.list.len() < MAX_GROUPS => {
                        self.index.insert(key.clone(), self.list.len());
                        self.list.push(GroupCount {
                            edge: key.edge,
                            rule: key.rule,
                            path: key.path,
                            severity: f.severity,
                            count: 0,
                            first_us: f.time,
                            last_us: f.time,
                            example: crate::report::one_line(f),
                        });
                        (self.list.len() - 1, true)
                    }
                    None => return (None, false),
                };
                if self.exact.len() >= MAX_WORDINGS {
                    self.exact.clear();
                }
                self.exact.insert(h, i);
                (i, first)
            }
        };
        let g = &mut self.list[i];
        g.count += 1;
        if let Some(t) = f.time {
            g.first_us = Some(g.first_us.map_or(t, |x| x.min(t)));
            g.last_us = Some(g.last_us.map_or(t, |x| x.max(t)));
        }
        (Some(i), first)
    }
}
