//! [`WriteBatch`]: what the recorder hands the store in one go (events, their
//! packet records, findings, connection records), with the credentials overwritten
//! before anything reaches the disk ([`super::secrets`]).

use std::collections::HashMap;

use bytes::Bytes;

use super::chunk::{self, LostSpan};
use super::record::{packet_fields, FILLER_STR};
use super::{secrets, ConnMeta, Event, EventKind, PacketFields, PacketRecord, FILLER};
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
    /// Next stream offset of each (connection, side): where an event's bytes sit
    /// in the stream, to find a CONNECT's password among them. Carried from batch
    /// to batch by [`WriteBatch::take`].
    offsets: HashMap<(u64, u8), u64>,
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
    /// Stream offset of the body's first byte on its side (data events).
    pub(super) stream_at: u64,
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

    /// The batch so far, leaving an empty one with the same settings and stream
    /// offsets in its place.
    pub fn take(&mut self) -> WriteBatch {
        let fresh = WriteBatch {
            offsets: std::mem::take(&mut self.offsets),
            keep_secrets: self.keep_secrets,
            ..WriteBatch::default()
        };
        std::mem::replace(self, fresh)
    }

    pub fn event(&mut self, cap: u64, ev: &Event) {
        let mut stream_at = 0;
        let (kind, body) = match &ev.kind {
            EventKind::Open { client, server } => {
                (chunk::EV_OPEN, Bytes::from(format!("{client} {server}")))
            }
            EventKind::Data { side, bytes } => {
                self.data_bytes += bytes.len();
                let at = self
                    .offsets
                    .entry((ev.conn, side.index() as u8))
                    .or_default();
                stream_at = *at;
                *at += bytes.len() as u64;
                (chunk::EV_DATA + side.index() as u8, bytes.clone())
            }
            EventKind::Opaque { side, bytes } => {
                self.data_bytes += bytes.len();
                (chunk::EV_OPAQUE + side.index() as u8, bytes.clone())
            }
            EventKind::Fin { side } => (chunk::EV_FIN + side.index() as u8, Bytes::new()),
            EventKind::End { how } => {
                self.offsets.remove(&(ev.conn, 0));
                self.offsets.remove(&(ev.conn, 1));
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
            stream_at,
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
        if !self.keep_secrets && f.packet_type == "CONNECT" && f.side == "client" {
            // The password is CONNECT's last field; the user name comes right before
            // it, behind its 2-byte length (3.1, 3.1.1 and 5 alike).
            let end = f.offset + f.len;
            let pw = f.password.map_or(0, |p| p.len() as u64);
            if let Some(p) = f.password {
                self.overwrite(f.conn, end.saturating_sub(pw), end);
                // As many fillers as the password had bytes: the record still says
                // where the password sat (the export relies on it), not what it was.
                filler = FILLER_STR.repeat(p.len());
                f.password = Some(&filler);
            }
            if let Some(u) = f.username {
                let un_end = match f.password {
                    Some(_) => end.saturating_sub(pw + 2),
                    None => end,
                };
                self.overwrite(f.conn, un_end.saturating_sub(u.len() as u64), un_end);
                user_filler = FILLER_STR.repeat(u.len());
                f.username = Some(&user_filler);
            }
        }
        if !self.keep_secrets && f.side == "client" && matches!(f.packet_type, "CONNECT" | "AUTH") {
            // Everything else the packet holds that is a credential (MQTT 5
            // Authentication Data), when this batch has the packet from its start.
            if let Some(b) = self.client_bytes(f.conn, f.offset, f.offset + f.len) {
                self.mask_secrets(f.conn, f.offset, &b);
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

    /// Overwrites the credentials of the client packet whose bytes (from its first
    /// on, complete or not) are `packet`, starting at stream offset `at` of `conn`'s
    /// client side, in the data events of this batch that hold them: the proxy's
    /// recorder calls it before a batch goes to disk for each connection whose
    /// CONNECT (or AUTH) is still incomplete, so that its first part is not stored
    /// with the secrets it already holds. Nothing when secrets are kept.
    pub fn mask_secrets(&mut self, conn: u64, at: u64, packet: &[u8]) {
        if self.keep_secrets {
            return;
        }
        for r in secrets::secret_ranges(packet) {
            self.overwrite(conn, at + r.start as u64, at + r.end as u64);
        }
    }

    /// The bytes `from..to` of `conn`'s client stream that this batch holds, when
    /// it holds byte `from`.
    fn client_bytes(&self, conn: u64, from: u64, to: u64) -> Option<Vec<u8>> {
        let mut out = vec![];
        let mut next = from;
        for e in &self.log {
            if e.conn != conn || e.kind != chunk::EV_DATA {
                continue;
            }
            let (a, b) = (e.stream_at, e.stream_at + e.body.len() as u64);
            if a <= next && next < b {
                let hi = to.min(b);
                out.extend_from_slice(&e.body[(next - a) as usize..(hi - a) as usize]);
                next = hi;
                if next >= to {
                    break;
                }
            }
        }
        (!out.is_empty()).then_some(out)
    }

    /// Overwrites stream bytes `from..to` of `conn`'s client side with [`FILLER`],
    /// in the data events of this batch that hold them.
    fn overwrite(&mut self, conn: u64, from: u64, to: u64) {
        for e in &mut self.log {
            if e.conn != conn || e.kind != chunk::EV_DATA {
                continue;
            }
            let (a, b) = (e.stream_at, e.stream_at + e.body.len() as u64);
            let (lo, hi) = (from.max(a), to.min(b));
            if lo < hi {
                let mut v = e.body.to_vec();
                v[(lo - a) as usize..(hi - a) as usize].fill(FILLER);
                e.body = Bytes::from(v);
            }
        }
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
        self.offsets = later.offsets;
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
            error,
        }
    }
}
