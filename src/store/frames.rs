//! The frame numbers of a stored capture's pcapng export ([`super::export`]), without
//! writing it: what `analyze --capture`, `captures show` and the proxy's reports cite,
//! so that a finding names the frame Wireshark shows.

use std::collections::HashMap;

use super::{EventKind, Store, StoreError};
use crate::finding::{Finding, Side};

/// Largest TCP payload in one synthesized frame (fits an IPv4 total length).
pub(super) const MAX_SEGMENT: usize = 65_000;

/// Where each stored event's bytes land in the pcapng [`super::export::export_pcapng`]
/// writes: the number (1-based, as Wireshark shows it) of the event's first frame,
/// and the stream range of each data frame. It follows the export's framing (a
/// handshake of three frames at open, one frame per [`MAX_SEGMENT`] bytes of data,
/// FIN or RST at the end), so a finding cites the frame the export carries
/// (`tests/numbering.rs` checks it with tshark).
///
/// Built one event at a time ([`FrameIndex::add`]): by [`frame_numbers`] from the
/// store, and by the proxy's live view as it records. Compact: almost every event
/// is one frame, so an event's first frame is its number plus an offset that only
/// changes at connection opens and ends and at events of several frames; those
/// changes are kept ([`MAX_STEPS`] at most, the oldest dropped), and the ranges of
/// events of several frames ([`MAX_SPLIT`] at most).
#[derive(Debug, Default, Clone)]
pub struct FrameIndex {
    /// (first event, its first frame − its number), ascending.
    steps: Vec<(u64, i64)>,
    /// Events of several data frames: their ranges.
    split: HashMap<u64, Vec<(Side, u64, u64)>>,
    /// Per connection: stream offset of each side, FIN seen on each side.
    flows: HashMap<u64, ([u64; 2], [bool; 2])>,
    /// The next frame's number (1-based; 0 before the first event).
    next: u64,
}

/// Offset changes a [`FrameIndex`] keeps (about two per connection).
pub const MAX_STEPS: usize = 1 << 20;
/// Events of several frames whose ranges a [`FrameIndex`] keeps.
pub const MAX_SPLIT: usize = 1 << 16;

impl FrameIndex {
    /// Follows one more stored event (in the store's order).
    pub fn add(&mut self, seq: u64, conn: u64, kind: &EventKind) {
        self.next = self.next.max(1);
        let first = self.next;
        let mut ranges = vec![];
        match kind {
            EventKind::Open { .. } => {
                self.flows.insert(conn, ([0, 0], [false, false]));
                self.next += 3;
            }
            EventKind::Data { side, bytes } | EventKind::Opaque { side, bytes } => {
                let Some((offset, _)) = self.flows.get_mut(&conn) else {
                    return;
                };
                for seg in bytes.chunks(MAX_SEGMENT) {
                    let i = side.index();
                    let start = offset[i];
                    offset[i] += seg.len() as u64;
                    ranges.push((*side, start, offset[i]));
                    self.next += 1;
                }
            }
            EventKind::Fin { side } => {
                let Some((_, fin)) = self.flows.get_mut(&conn) else {
                    return;
                };
                fin[side.index()] = true;
                self.next += 1;
            }
            EventKind::End { how } => {
                let Some((_, fin)) = self.flows.remove(&conn) else {
                    return;
                };
                self.next += if how == "closed" || how == "shutdown" {
                    fin.iter().filter(|f| !**f).count() as u64
                } else {
                    1
                };
            }
        }
        // An event without frames: its findings go on the next frame written.
        let delta = first as i64 - seq as i64;
        if self.steps.last().is_none_or(|(_, d)| *d != delta) {
            if self.steps.len() >= MAX_STEPS {
                self.steps.drain(..MAX_STEPS / 2);
            }
            self.steps.push((seq, delta));
        }
        if ranges.len() > 1 && self.split.len() < MAX_SPLIT {
            self.split.insert(seq, ranges);
        }
    }

    /// The export's first frame of stored event `seq` (`None` before the first
    /// event kept).
    pub fn frame_of_event(&self, seq: u64) -> Option<u64> {
        let i = self
            .steps
            .partition_point(|(s, _)| *s <= seq)
            .checked_sub(1)?;
        u64::try_from(seq as i64 + self.steps[i].1).ok()
    }

    /// The export's frame holding what `f` is about: the frame with its byte
    /// offset, else its event's first frame.
    pub fn frame_of(&self, f: &Finding) -> Option<u64> {
        let seq = f.packet?;
        let first = self.frame_of_event(seq)?;
        let at = self
            .split
            .get(&seq)
            .and_then(|ranges| {
                ranges
                    .iter()
                    .position(|(s, a, b)| match (f.side, f.offset) {
                        (Some(fs), Some(o)) => *s == fs && o >= *a && o < *b,
                        _ => false,
                    })
            })
            .unwrap_or(0);
        Some(first + at as u64)
    }
}

/// The [`FrameIndex`] of capture `id`.
pub fn frame_numbers(store: &Store, id: u64) -> Result<FrameIndex, StoreError> {
    let mut index = FrameIndex::default();
    for ev in store.events(id) {
        let ev = ev?;
        index.add(ev.seq, ev.conn, &ev.kind);
    }
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn events_map_to_the_frames_the_export_writes() {
        let mut ix = FrameIndex::default();
        let addr = "127.0.0.1:1".parse().unwrap();
        let data = |side, n: usize| EventKind::Data {
            side,
            bytes: Bytes::from(vec![b'x'; n]),
        };
        // seq 1: open (frames 1-3); 2: data (4); 3: data of two segments (5, 6);
        // 4: data on another, unopened connection (no frame); 5: FIN (7);
        // 6: end, closed (8: the server's FIN); 7: open (9-11).
        ix.add(
            1,
            1,
            &EventKind::Open {
                client: addr,
                server: addr,
            },
        );
        ix.add(2, 1, &data(Side::Client, 10));
        ix.add(3, 1, &data(Side::Server, MAX_SEGMENT + 1));
        ix.add(4, 9, &data(Side::Client, 10));
        ix.add(5, 1, &EventKind::Fin { side: Side::Client });
        ix.add(
            6,
            1,
            &EventKind::End {
                how: "closed".into(),
            },
        );
        ix.add(
            7,
            2,
            &EventKind::Open {
                client: addr,
                server: addr,
            },
        );
        let firsts: Vec<Option<u64>> = (0..=7).map(|s| ix.frame_of_event(s)).collect();
        assert_eq!(
            firsts,
            [
                None,
                Some(1),
                Some(4),
                Some(5),
                Some(6),
                Some(7),
                Some(8),
                Some(9)
            ]
        );
        let f = |offset| Finding {
            rule: "r".into(),
            clause: "5.2".into(),
            table: None,
            severity: crate::finding::Severity::Error,
            edge_id: None,
            msg_type: None,
            topic: None,
            mid: None,
            packet: Some(3),
            time: None,
            message: String::new(),
            conn: Some(1),
            side: Some(Side::Server),
            offset: Some(offset),
            basis: None,
            from: None,
        };
        assert_eq!(ix.frame_of(&f(0)), Some(5));
        assert_eq!(ix.frame_of(&f(MAX_SEGMENT as u64)), Some(6));
        // Only the offset changes are kept: 1 open, the split, the end, the open.
        assert!(ix.steps.len() <= 6, "{:?}", ix.steps);
    }
}
