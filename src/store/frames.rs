//! The frame numbers of a stored capture's pcapng export ([`super::export`]), without
//! writing it: what `analyze --capture`, `captures show` and the proxy's reports cite,
//! so that a finding names the frame Wireshark shows.

use std::collections::HashMap;

use super::{EventKind, Store, StoreError};
use crate::finding::{Finding, Side};

/// Largest TCP payload in one synthesized frame (fits an IPv4 total length).
pub(super) const MAX_SEGMENT: usize = 65_000;

/// Where each stored event's bytes land in the pcapng [`export_pcapng`] writes: the
/// number (1-based, as Wireshark shows it) of the event's first frame, and the stream
/// range of each data frame. It follows the export's framing (a handshake of three
/// frames at open, one frame per [`MAX_SEGMENT`] bytes of data, FIN or RST at the
/// end), so a finding cites the frame the export carries (`tests/replay_cli.rs`
/// checks it with tshark).
#[derive(Debug, Default)]
pub struct FrameIndex {
    events: HashMap<u64, EventFrames>,
}

/// An event's first frame and its data frames as (side, start, end) stream offsets.
type EventFrames = (u64, Vec<(Side, u64, u64)>);

impl FrameIndex {
    /// The export's first frame of stored event `seq`.
    pub fn frame_of_event(&self, seq: u64) -> Option<u64> {
        self.events.get(&seq).map(|(first, _)| *first)
    }

    /// The export's frame holding what `f` is about: the frame with its byte
    /// offset, else its event's first frame.
    pub fn frame_of(&self, f: &Finding) -> Option<u64> {
        let (first, ranges) = self.events.get(&f.packet?)?;
        let at = ranges
            .iter()
            .position(|(s, a, b)| match (f.side, f.offset) {
                (Some(fs), Some(o)) => *s == fs && o >= *a && o < *b,
                _ => false,
            })
            .unwrap_or(0);
        Some(first + at as u64)
    }
}

/// The [`FrameIndex`] of capture `id`.
pub fn frame_numbers(store: &Store, id: u64) -> Result<FrameIndex, StoreError> {
    let mut index = FrameIndex::default();
    // Per connection: stream offset of each side, FIN seen on each side.
    let mut flows: HashMap<u64, ([u64; 2], [bool; 2])> = HashMap::new();
    let mut next = 1u64;
    for ev in store.events(id) {
        let ev = ev?;
        let first = next;
        let mut ranges = vec![];
        match &ev.kind {
            EventKind::Open { .. } => {
                flows.insert(ev.conn, ([0, 0], [false, false]));
                next += 3;
            }
            EventKind::Data { side, bytes } | EventKind::Opaque { side, bytes } => {
                let Some((offset, _)) = flows.get_mut(&ev.conn) else {
                    continue;
                };
                for seg in bytes.chunks(MAX_SEGMENT) {
                    let i = side.index();
                    let start = offset[i];
                    offset[i] += seg.len() as u64;
                    ranges.push((*side, start, offset[i]));
                    next += 1;
                }
            }
            EventKind::Fin { side } => {
                let Some((_, fin)) = flows.get_mut(&ev.conn) else {
                    continue;
                };
                fin[side.index()] = true;
                next += 1;
            }
            EventKind::End { how } => {
                let Some((_, fin)) = flows.remove(&ev.conn) else {
                    continue;
                };
                next += if how == "closed" || how == "shutdown" {
                    fin.iter().filter(|f| !**f).count() as u64
                } else {
                    1
                };
            }
        }
        // An event without frames: its findings go on the next frame written.
        index.events.insert(ev.seq, (first, ranges));
    }
    Ok(index)
}
