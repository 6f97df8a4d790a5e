//! Puts one direction of a TCP stream back in order.
//!
//! Guarantees: every stream byte is delivered at most once and in sequence order, as
//! [`Chunk::Data`]; bytes that will never be seen (a hole the peer acknowledged, a hole
//! given up when the reorder budget is exceeded, a segment cut by the snap length,
//! holes left at the end) are delivered as [`Chunk::Gap`] of their exact length at
//! their place, so that stream offsets stay right. In-order segments are delivered
//! straight from the caller's buffer; only out-of-order segments are copied, and at
//! most `limit` bytes of them are held. Sequence numbers are compared modulo 2^32, so
//! streams may wrap.

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;

/// A piece of the stream, in order.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Chunk<'a> {
    Data(&'a [u8]),
    Gap(u64),
}

/// A segment received ahead of a hole, waiting for the hole to fill.
struct Held {
    data: Vec<u8>,
    /// Bytes after `data` that belong to the segment but were not captured.
    lost_tail: u64,
}

/// One direction of a TCP stream. Positions are kept as 64-bit stream offsets (bytes
/// since the stream start) so that they never wrap; `next_seq` is the 32-bit sequence
/// number of `next_off`.
#[derive(Default)]
pub(crate) struct Reassembler {
    started: bool,
    next_seq: u32,
    /// Offset of the next byte to deliver: everything before it was delivered (as data
    /// or as a gap).
    next_off: u64,
    /// Offset just after the last byte, once a FIN was seen.
    fin_off: Option<u64>,
    /// All bytes up to the FIN were delivered.
    finished: bool,
    held: BTreeMap<u64, Held>,
    held_bytes: usize,
    /// Highest sequence number the peer acknowledged: bytes before it reached the
    /// peer, so a hole before it will not be filled by a retransmission.
    peer_acked: Option<u32>,
}

impl Reassembler {
    /// The stream starts at `seq` (known from the peer's acknowledgement), unless it
    /// has started already.
    pub(crate) fn start_at(&mut self, seq: u32) {
        if !self.started {
            self.started = true;
            self.next_seq = seq;
        }
    }

    pub(crate) fn is_started(&self) -> bool {
        self.started
    }

    /// Every byte up to the FIN was delivered.
    pub(crate) fn is_finished(&self) -> bool {
        self.finished
    }

    /// Takes one segment. A SYN starts the stream after its sequence number; without
    /// a SYN, the first segment starts it (a capture that begins mid-stream).
    /// `missing` counts payload bytes announced but not captured, right after `payload`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn segment(
        &mut self,
        seq: u32,
        syn: bool,
        fin: bool,
        payload: &[u8],
        missing: u32,
        limit: usize,
        out: &mut dyn FnMut(Chunk<'_>),
    ) {
        // SYN takes one sequence number before the first data byte.
        let data_seq = if syn { seq.wrapping_add(1) } else { seq };
        if !self.started {
            self.started = true;
            self.next_seq = data_seq;
        }
        if self.finished {
            return;
        }
        // Position relative to the next expected byte: within ±2 GiB, as TCP requires.
        let start = self.next_off as i128 + data_seq.wrapping_sub(self.next_seq) as i32 as i128;
        let end = start + payload.len() as i128 + missing as i128;
        if fin && self.fin_off.is_none() && end >= self.next_off as i128 {
            self.fin_off = Some(end as u64);
        }
        if end > self.next_off as i128 {
            if start <= self.next_off as i128 {
                self.deliver(start, payload, missing as u64, out);
                self.drain(out);
            } else {
                self.hold(start as u64, payload, missing as u64);
                self.skip_acked_holes(out);
                // Over budget: stop waiting for the oldest hole.
                while self.held_bytes > limit {
                    self.skip_hole(out);
                }
            }
        }
        self.check_fin();
    }

    /// The peer acknowledged bytes up to `ack`. A hole it covers was lost by the capture,
    /// not by the network (the peer got the bytes): it is given up as soon as bytes
    /// after it are held (or its end is known from a FIN), instead of waiting for the
    /// end of the flow. A hole with nothing known after it is left alone: the
    /// acknowledged "byte" may be a FIN the capture missed.
    pub(crate) fn acked(&mut self, ack: u32, out: &mut dyn FnMut(Chunk<'_>)) {
        if !self.started || self.finished {
            return;
        }
        let newer = match self.peer_acked {
            Some(prev) => (ack.wrapping_sub(prev) as i32) > 0,
            None => true,
        };
        if newer {
            self.peer_acked = Some(ack);
        }
        self.skip_acked_holes(out);
        self.check_fin();
    }

    fn skip_acked_holes(&mut self, out: &mut dyn FnMut(Chunk<'_>)) {
        let Some(acked) = self.peer_acked else { return };
        let ahead = acked.wrapping_sub(self.next_seq) as i32;
        if ahead <= 0 {
            return;
        }
        let target = self.next_off + ahead as u64;
        while self.next_off < target {
            // The next position known to follow the hole: held bytes, or the FIN.
            let known = self
                .held
                .first_key_value()
                .map(|(&start, _)| start)
                .or(self.fin_off);
            let Some(start) = known else { break };
            let stop = start.min(target);
            if stop <= self.next_off && self.held.is_empty() {
                break;
            }
            if stop > self.next_off {
                out(Chunk::Gap(stop - self.next_off));
                self.advance_to(stop);
            }
            self.drain(out);
        }
    }

    /// End of the flow: whatever is held is delivered, with its holes as gaps.
    pub(crate) fn flush(&mut self, out: &mut dyn FnMut(Chunk<'_>)) {
        while !self.held.is_empty() {
            self.skip_hole(out);
        }
        // Bytes missing before a FIN seen.
        if let Some(fin) = self.fin_off {
            if fin > self.next_off && !self.finished {
                out(Chunk::Gap(fin - self.next_off));
                self.advance_to(fin);
            }
        }
        self.check_fin();
    }

    /// Forgets everything held (the flow is not decoded).
    pub(crate) fn clear(&mut self) {
        self.held = BTreeMap::new();
        self.held_bytes = 0;
    }

    /// Delivers the part of a segment starting at `start` (at or before `next_off`)
    /// that is new: captured bytes, then the uncaptured tail as a gap.
    fn deliver(
        &mut self,
        start: i128,
        data: &[u8],
        lost_tail: u64,
        out: &mut dyn FnMut(Chunk<'_>),
    ) {
        let data_end = start + data.len() as i128;
        if data_end > self.next_off as i128 {
            let skip = (self.next_off as i128 - start) as usize;
            out(Chunk::Data(&data[skip..]));
            self.advance_to(data_end as u64);
        }
        let end = data_end + lost_tail as i128;
        if end > self.next_off as i128 {
            out(Chunk::Gap(end as u64 - self.next_off));
            self.advance_to(end as u64);
        }
    }

    /// Delivers the held segments that have become contiguous.
    fn drain(&mut self, out: &mut dyn FnMut(Chunk<'_>)) {
        while let Some(entry) = self.held.first_entry() {
            let start = *entry.key();
            if start > self.next_off {
                break;
            }
            let held = entry.remove();
            self.held_bytes -= held.data.len();
            self.deliver(start as i128, &held.data, held.lost_tail, out);
        }
    }

    /// Gives up the hole before the first held segment: a gap, then what follows it.
    fn skip_hole(&mut self, out: &mut dyn FnMut(Chunk<'_>)) {
        let Some((&start, _)) = self.held.first_key_value() else {
            return;
        };
        if start > self.next_off {
            out(Chunk::Gap(start - self.next_off));
            self.advance_to(start);
        }
        self.drain(out);
    }

    fn hold(&mut self, start: u64, data: &[u8], lost_tail: u64) {
        if data.is_empty() && lost_tail == 0 {
            return;
        }
        match self.held.entry(start) {
            Entry::Vacant(slot) => {
                self.held_bytes += data.len();
                slot.insert(Held {
                    data: data.to_vec(),
                    lost_tail,
                });
            }
            // Same start twice (a retransmission, maybe repacketized): keep the longer.
            Entry::Occupied(mut slot) => {
                let held = slot.get_mut();
                if data.len() as u64 + lost_tail > held.data.len() as u64 + held.lost_tail
                    || data.len() > held.data.len()
                {
                    self.held_bytes = self.held_bytes - held.data.len() + data.len();
                    *held = Held {
                        data: data.to_vec(),
                        lost_tail,
                    };
                }
            }
        }
    }

    fn advance_to(&mut self, off: u64) {
        self.next_seq = self.next_seq.wrapping_add((off - self.next_off) as u32);
        self.next_off = off;
    }

    fn check_fin(&mut self) {
        if let Some(fin) = self.fin_off {
            if self.next_off >= fin {
                self.finished = true;
                self.clear();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds segments (seq, payload) and returns the chunks as owned values.
    fn run(segments: &[(u32, &[u8])], limit: usize, flush: bool) -> Vec<Result<Vec<u8>, u64>> {
        let mut r = Reassembler::default();
        let mut got = Vec::new();
        let mut out = |c: Chunk<'_>| match c {
            Chunk::Data(d) => got.push(Ok(d.to_vec())),
            Chunk::Gap(n) => got.push(Err(n)),
        };
        for (seq, data) in segments {
            r.segment(*seq, false, false, data, 0, limit, &mut out);
        }
        if flush {
            r.flush(&mut out);
        }
        got
    }

    #[test]
    fn in_order_out_of_order_and_duplicates() {
        let got = run(
            &[
                (100, b"ab"),
                (104, b"ef"),
                (102, b"cd"),
                (102, b"cd"),
                (101, b"bcdefg"),
            ],
            1 << 20,
            false,
        );
        assert_eq!(
            got,
            vec![
                Ok(b"ab".to_vec()),
                Ok(b"cd".to_vec()),
                Ok(b"ef".to_vec()),
                Ok(b"g".to_vec())
            ]
        );
    }

    #[test]
    fn sequence_wraps_around() {
        let got = run(
            &[(u32::MAX - 1, b"ab"), (1, b"d"), (0, b"c")],
            1 << 20,
            false,
        );
        assert_eq!(
            got,
            vec![Ok(b"ab".to_vec()), Ok(b"c".to_vec()), Ok(b"d".to_vec())]
        );
    }

    #[test]
    fn held_bytes_stay_within_the_budget_whatever_the_sequence_numbers_claim() {
        // Segments scattered over the whole sequence space, each leaving a hole of
        // gigabytes before it: only the bytes received are held, never the holes, and
        // never more than the budget.
        let mut r = Reassembler::default();
        let mut out = |_: Chunk<'_>| {};
        r.segment(0, false, false, b"ab", 0, 64, &mut out);
        let data = [7u8; 10];
        for i in 1..200u32 {
            r.segment(
                i.wrapping_mul(0x3FFF_FFF1),
                false,
                false,
                &data,
                0,
                64,
                &mut out,
            );
            assert!(r.held_bytes <= 64, "{} bytes held", r.held_bytes);
            let held: usize = r.held.values().map(|h| h.data.capacity()).sum();
            assert!(held <= 64 + data.len(), "{held} bytes allocated");
        }
    }

    #[test]
    fn reorder_budget_gives_up_the_hole() {
        // 3 bytes missing at 2..5; the budget is 4 bytes, exceeded by the second held
        // segment.
        let got = run(&[(0, b"ab"), (5, b"fgh"), (8, b"ij")], 4, false);
        assert_eq!(
            got,
            vec![
                Ok(b"ab".to_vec()),
                Err(3),
                Ok(b"fgh".to_vec()),
                Ok(b"ij".to_vec())
            ]
        );
    }

    #[test]
    fn flush_reports_remaining_holes() {
        let got = run(&[(0, b"ab"), (5, b"fg"), (10, b"k")], 1 << 20, true);
        assert_eq!(
            got,
            vec![
                Ok(b"ab".to_vec()),
                Err(3),
                Ok(b"fg".to_vec()),
                Err(3),
                Ok(b"k".to_vec())
            ]
        );
    }

    #[test]
    fn acknowledged_hole_is_given_up_once_bytes_follow_it() {
        let mut r = Reassembler::default();
        let mut got = Vec::new();
        r.segment(0, false, false, b"ab", 0, 100, &mut |c| {
            got.push(format!("{c:?}"))
        });
        // The peer has bytes up to 6, but nothing after the hole is held yet: wait.
        r.acked(6, &mut |c| got.push(format!("{c:?}")));
        assert_eq!(got, vec!["Data([97, 98])"]);
        r.segment(4, false, false, b"ef", 0, 100, &mut |c| {
            got.push(format!("{c:?}"))
        });
        r.segment(7, false, false, b"h", 0, 100, &mut |c| {
            got.push(format!("{c:?}"))
        });
        // The hole 2..4 is acknowledged: given up at once. 6..7 is not: held.
        assert_eq!(got, vec!["Data([97, 98])", "Gap(2)", "Data([101, 102])"]);
        r.acked(8, &mut |c| got.push(format!("{c:?}")));
        assert_eq!(got[3..], ["Gap(1)", "Data([104])"]);
    }

    #[test]
    fn acknowledged_hole_before_a_fin_is_given_up() {
        let mut r = Reassembler::default();
        let mut got = Vec::new();
        r.segment(0, false, false, b"ab", 0, 100, &mut |c| {
            got.push(format!("{c:?}"))
        });
        // 2..5 lost, then the FIN (sequence number 5).
        r.segment(5, false, true, b"", 0, 100, &mut |c| {
            got.push(format!("{c:?}"))
        });
        assert!(!r.is_finished());
        r.acked(6, &mut |c| got.push(format!("{c:?}")));
        assert_eq!(got, vec!["Data([97, 98])", "Gap(3)"]);
        assert!(r.is_finished());
    }

    #[test]
    fn flush_reports_bytes_missing_before_the_fin() {
        let mut r = Reassembler::default();
        let mut got = Vec::new();
        r.segment(0, false, false, b"ab", 0, 100, &mut |c| {
            got.push(format!("{c:?}"))
        });
        r.segment(5, false, true, b"", 0, 100, &mut |c| {
            got.push(format!("{c:?}"))
        });
        r.flush(&mut |c| got.push(format!("{c:?}")));
        assert_eq!(got, vec!["Data([97, 98])", "Gap(3)"]);
        assert!(r.is_finished());
    }

    #[test]
    fn acknowledged_fin_the_capture_missed_is_no_gap() {
        let mut r = Reassembler::default();
        let mut got = Vec::new();
        r.segment(0, false, false, b"ab", 0, 100, &mut |c| {
            got.push(format!("{c:?}"))
        });
        r.acked(3, &mut |c| got.push(format!("{c:?}")));
        assert_eq!(got, vec!["Data([97, 98])"]);
    }

    #[test]
    fn snaplen_cut_segment_is_a_gap_not_a_wait() {
        let mut r = Reassembler::default();
        let mut got = Vec::new();
        let mut out = |c: Chunk<'_>| got.push(format!("{c:?}"));
        r.segment(10, true, false, b"", 0, 100, &mut out);
        r.segment(11, false, false, b"abc", 2, 100, &mut out);
        r.segment(16, false, true, b"z", 0, 100, &mut out);
        assert_eq!(got, vec!["Data([97, 98, 99])", "Gap(2)", "Data([122])"]);
        assert!(r.is_finished());
    }
}
