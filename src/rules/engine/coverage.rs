//! What a run saw of each clause, and what it could not judge for want of history.

use super::*;

/// What a run saw of each clause: messages, and what it could not judge and why.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Coverage {
    /// Messages seen per clause: a clause with none is "not exercised".
    pub messages: BTreeMap<String, u64>,
    /// Per clause: checks that could not be made, with the reason and how often
    /// (the clause is then "partly exercised").
    pub unseen: BTreeMap<String, BTreeMap<String, u64>>,
}

/// Distinct reasons kept per clause; more are counted under one line.
pub(super) const UNSEEN_REASONS_MAX: usize = 20;

impl Coverage {
    pub fn get(&self, clause: &str) -> Option<&u64> {
        self.messages.get(clause)
    }

    /// One more message of `clause`.
    pub fn count(&mut self, clause: &str) {
        match self.messages.get_mut(clause) {
            Some(n) => *n += 1,
            None => {
                self.messages.insert(clause.to_string(), 1);
            }
        }
    }

    pub fn note(&mut self, clause: &str, reason: String) {
        let reasons = self.unseen.entry(clause.to_string()).or_default();
        let key = if reasons.len() >= UNSEEN_REASONS_MAX && !reasons.contains_key(&reason) {
            "(more of the same kind, for other edges or ids)".to_string()
        } else {
            reason
        };
        *reasons.entry(key).or_default() += 1;
    }

    /// Adds another part's counts (a run judged on two threads).
    pub fn merge(&mut self, other: &Coverage) {
        for (c, n) in &other.messages {
            *self.messages.entry(c.clone()).or_default() += n;
        }
        for (c, reasons) in &other.unseen {
            for (r, n) in reasons {
                *self
                    .unseen
                    .entry(c.clone())
                    .or_default()
                    .entry(r.clone())
                    .or_default() += n;
            }
        }
    }
}
