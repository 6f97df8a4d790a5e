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
                        schema::validate_object(t.prefix, members, fields, &rule.regexes, "", &mut out);
                    }
                }
                return out;
            }
        }
        let mut leaves = vec![];
        schema::validate_object_noting(t.prefix, t.obj, fields, &rule.regexes, &mut out, &mut leaves);
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
