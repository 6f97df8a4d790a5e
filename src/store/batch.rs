//! [`WriteBatch`]: what the recorder hands the store in one go (events, their
//! packet records, findings, connection records), with the credentials overwritten
//! before anything reaches the disk: found in the raw bytes by their framing
//! ([`super::scrub`]), and in the decoded packet records.

use std::collections::HashMap;

use bytes::Bytes;

use super::chunk::{self, LostSpan};
use super::record::{packet_fields, FILLER_STR};
use super::scrub::{Scrub, Withheld};
use super::{ConnMeta, Event, EventKind, PacketFields, PacketRecord, FILLER};
use crate::finding::Finding;
use crate::pipeline::PacketEvent;

/// What a writer hands the store in one go: appended as one record, then synced.
#[derive(Default)]
pub struct WriteBatch {
    /// Events with their packets, for the capture's chunk file.
    pub(super) log: Vec<Pending>,
    pub(super) findings: Vec<(u64, Finding)>,
    /// In order: a later record of a connection replaces an earlier one.
    pub(super) conns: Vec<(u64, Vec<u8>)>,
    /// Encoded packet records of all events (see `Pending::pk`): one buffer per
    /// batch, not one allocation per packet.
    pub(super) pk: Vec<u8>,
    /// The credential scanner of each (connection, side), fed every data event in
    /// stream order. Carried from batch to batch by [`WriteBatch::take`].
    scrubs: HashMap<(u64, u8), Scrub>,
    /// Bytes overwritten because where the credentials were could not be told:
    /// recorded as not recorded, with why.
    pub(super) withheld: Vec<LostSpan>,
    /// Store CONNECT passwords as sent (`--store-secrets`).
    pub keep_secrets: bool,
    /// Bytes of chunk data in the batch.
    pub data_bytes: usize,
    pub records: usize,
}

pub(super) struct Pending {
    pub(super) cap: u64,
    pub(super) time_us: i64,
    pub(super) seq: u64,
    pub(super) conn: u64,
    pub(super) kind: u8,
    pub(super) body: Bytes,
    /// The event's packet records: `WriteBatch::pk[pk.0..pk.1]`, each with its
    /// length prefix, `npk` of them.
    pub(super) pk: (usize, usize),
    pub(super) npk: u32,
}

impl WriteBatch {
    /// An empty batch; `keep_secrets` as [`WriteBatch::keep_secrets`].
    pub fn with_secrets(keep_secrets: bool) -> WriteBatch {
        WriteBatch {
            keep_secrets,
            ..WriteBatch::default()
        }
    }

    /// The batch so far, leaving an empty one with the same settings and
    /// credential scanners in its place.
    pub fn take(&mut self) -> WriteBatch {
        let fresh = WriteBatch {
            scrubs: std::mem::take(&mut self.scrubs),
            keep_secrets: self.keep_secrets,
            ..WriteBatch::default()
        };
        std::mem::replace(self, fresh)
    }

    /// An event of capture `cap`; its bytes (a data event's) are stored with the
    /// credentials among them overwritten, unless secrets are kept.
    pub fn event(&mut self, cap: u64, ev: &Event) {
        let (kind, body) = match &ev.kind {
            EventKind::Open { client, server } => {
                (chunk::EV_OPEN, Bytes::from(format!("{client} {server}")))
            }
            EventKind::Data { side, bytes } => {
                self.data_bytes += bytes.len();
                let body = match self.keep_secrets {
                    true => bytes.clone(),
                    false => self.scrub(ev, *side, bytes),
                };
                (chunk::EV_DATA + side.index() as u8, body)
            }
            EventKind::Opaque { side, bytes } => {
                self.data_bytes += bytes.len();
                (chunk::EV_OPAQUE + side.index() as u8, bytes.clone())
            }
            EventKind::Fin { side } => (chunk::EV_FIN + side.index() as u8, Bytes::new()),
            EventKind::End { how } => {
                self.scrubs.remove(&(ev.conn, 0));
                self.scrubs.remove(&(ev.conn, 1));
                (chunk::EV_END, Bytes::from(how.clone()))
            }
        };
        self.log.push(Pending {
            cap,
            time_us: ev.time_us,
            seq: ev.seq,
            conn: ev.conn,
            kind,
            body,
            pk: (self.pk.len(), self.pk.len()),
            npk: 0,
        });
        self.records += 1;
    }

    /// A packet decoded from event `seq` of the batch (given to [`Self::event`]
    /// before); packets of one event are kept in the order given (`idx`).
    pub fn packet(&mut self, cap: u64, seq: u64, idx: u32, p: &PacketRecord) {
        let _ = idx;
        self.packet_fields(cap, seq, p.fields());
    }

    /// [`Self::packet`] without building a [`PacketRecord`]: what the proxy's
    /// analysis task calls for each decoded packet.
    pub fn packet_event(&mut self, cap: u64, seq: u64, p: &PacketEvent<'_>) {
        self.packet_fields(cap, seq, packet_fields(p));
    }

    fn packet_fields(&mut self, cap: u64, seq: u64, given: PacketFields<'_>) {
        let filler: String;
        let mut f = given;
        let pos = match self.log.last() {
            // The usual case: a packet of the event just added.
            Some(e) if e.cap == cap && e.seq == seq => self.log.len() - 1,
            _ => match self.log.iter().rposition(|e| e.cap == cap && e.seq == seq) {
                Some(i) => i,
                None => {
                    panic!("WriteBatch::packet: event {seq} of capture {cap} is not in the batch")
                }
            },
        };
        let user_filler: String;
        // The raw bytes are overwritten where the event was added (`scrub`); the
        // decoded record says where the credentials sat, not what they were.
        if !self.keep_secrets && f.packet_type == "CONNECT" && f.side == "client" {
            if let Some(p) = f.password {
                // As many fillers as the password had bytes (the export relies on it).
                filler = FILLER_STR.repeat(p.len());
                f.password = Some(&filler);
            }
            if let Some(u) = f.username {
                user_filler = FILLER_STR.repeat(u.len());
                f.username = Some(&user_filler);
            }
        }
        let (start, end) = self.log[pos].pk;
        if end != self.pk.len() {
            // Not the last records of the buffer: move this event's records to the
            // end, so they stay contiguous (the old place is left unused).
            let moved = self.pk.len();
            self.pk.extend_from_within(start..end);
            self.log[pos].pk = (moved, self.pk.len());
        }
        let at = self.pk.len();
        self.pk.extend_from_slice(&[0; 4]);
        chunk::encode_packet(&f, &mut self.pk);
        let len = (self.pk.len() - at - 4) as u32;
        self.pk[at..at + 4].copy_from_slice(&len.to_be_bytes());
        let e = &mut self.log[pos];
        e.pk.1 = self.pk.len();
        e.npk += 1;
        self.records += 1;
    }

    /// `bytes` of `ev`'s `side` with the credentials the side's scanner finds in
    /// them overwritten (a copy only when there are some); what it withheld
    /// without knowing is noted as not recorded.
    fn scrub(&mut self, ev: &Event, side: crate::finding::Side, bytes: &Bytes) -> Bytes {
        let key = (ev.conn, side.index() as u8);
        let s = self.scrubs.entry(key).or_insert_with(|| match side {
            crate::finding::Side::Client => Scrub::client(),
            crate::finding::Side::Server => Scrub::server(),
        });
        let mut mask = vec![];
        let mut withheld: Vec<Withheld> = vec![];
        s.feed(bytes, &mut mask, &mut withheld);
        for w in withheld {
            let error = format!(
                "connection {} ({}): {} (overwritten: never stored in clear)",
                ev.conn,
                side.arrow(),
                w.why
            );
            match self.withheld.last_mut() {
                Some(l) if l.error == error => {
                    l.bytes += w.bytes;
                    l.to_us = ev.time_us;
                }
                _ => self.withheld.push(LostSpan {
                    from_us: ev.time_us,
                    to_us: ev.time_us,
                    bytes: w.bytes,
                    events: 0,
                    packets: 0,
                    error,
                }),
            }
        }
        if mask.is_empty() {
            return bytes.clone();
        }
        let mut v = bytes.to_vec();
        for r in mask {
            v[r].fill(FILLER);
        }
        Bytes::from(v)
    }

    /// A finding of capture `cap`; `n` is its number in the capture (unused: the
    /// store keeps findings aggregated, see [`super::findings`]).
    pub fn finding(&mut self, cap: u64, n: u64, f: &Finding) {
        let _ = n;
        self.findings.push((cap, f.clone()));
        self.records += 1;
    }

    pub fn conn(&mut self, cap: u64, c: &ConnMeta) {
        let mut line = serde_json::to_vec(c).expect("record serialises");
        line.push(b'\n');
        self.conns.push((cap, line));
        self.records += 1;
    }

    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// Adds a later batch to this one, so that both are written with one sync.
    pub fn append(&mut self, later: WriteBatch) {
        let shift = self.pk.len();
        self.pk.extend_from_slice(&later.pk);
        self.log.extend(later.log.into_iter().map(|mut e| {
            e.pk = (e.pk.0 + shift, e.pk.1 + shift);
            e
        }));
        self.findings.extend(later.findings);
        self.conns.extend(later.conns);
        self.scrubs = later.scrubs;
        self.withheld.extend(later.withheld);
        self.data_bytes += later.data_bytes;
        self.records += later.records;
    }

    /// What is lost if this batch is not written.
    pub(super) fn lost_span(&self, error: String, fallback_us: i64) -> LostSpan {
        let times = self.log.iter().map(|e| e.time_us);
        LostSpan {
            from_us: times.clone().min().unwrap_or(fallback_us),
            to_us: times.max().unwrap_or(fallback_us),
            bytes: self.data_bytes as u64,
            events: self.log.len() as u64,
            packets: self.log.iter().map(|e| u64::from(e.npk)).sum(),
            error,
        }
    }
}
