//! The capture store: the only module that imports sled.
//!
//! Every proxy run is a capture. What the proxy forwarded is kept as a stream of
//! [`Event`]s (connection opened, chunk of bytes, half-close, end), next to the MQTT
//! packets decoded from them and the findings, so a capture can be analyzed again
//! ([`replay::analyze_capture`]) or exported ([`export::export_pcapng`]).
//!
//! Trees and keys (all integers big-endian, so sled iterates in order):
//!
//! ```text
//! captures  cap:u64                                 → JSON CaptureMeta
//! conns     cap:u64 conn:u64                        → JSON ConnMeta
//! log       cap:u64 batch:u64                       → offset:u64 len:u64
//! findings  cap:u64 n:u64                           → JSON Finding
//! ```
//!
//! Events and packets are not one sled key each: every sled insert is a log
//! reservation and a tree-node update (copy-on-write, splits, node rewrites that copy
//! the values again), which for a busy proxy cost more than everything else together.
//! Each written batch is instead one record appended to `chunks/CAP.bin` beside the
//! sled files, holding its events (chunk bytes inline) in `(time_us, seq)` order,
//! each with the MQTT packets decoded from it:
//!
//! ```text
//! event   time_us:u64 seq:u64 conn:u64 kind:u8 len:u32 body[len] npackets:u32
//!         (len:u32 packet)×npackets
//! kind    0 open ("CLIENT SERVER") · 1/2 data client/server · 3/4 fin · 5 end (how)
//!         · 6/7 opaque data client/server (forwarded, not analysed: untouched TLS)
//! packet  1:u8 fields:u8 side:u8 conn:v chunk:v time_us:z offset:v len:v type:s
//!         [client_id:s] [version:s] [username:s] [password:s] [topic:s]
//!         [payload_len:v]       (present as bit 0…5 of `fields` says)
//!         v: LEB128 u64 · z: zigzag LEB128 i64 · s: v length, UTF-8 bytes
//! ```
//!
//! A packet record that starts with `{` is a JSON [`PacketRecord`] (chunk files
//! written before the binary record; still read).
//!
//! and the `log` tree indexes the records. [`Store::write`] appends and syncs the
//! record before it applies the index entry (and the rest of the batch) to sled, so
//! an indexed record is always whole; a record written but not indexed when the
//! process died is ignored. Stores written before this layout (trees `events`,
//! `packets`: one key per event and per packet) are still read.
//!
//! `seq` numbers the events of a capture in the order the analysis task received
//! them; it is the `packet` number findings carry. The proxy records `time_us` never
//! below the previous event's, so seq order is time order across batches too, and
//! within one direction of one connection both grow: stored order is stream order.
//!
//! Credentials from CONNECT are stored as sent; [`PacketRecord::redacted`] and the
//! export hide them unless the caller asks for them.

pub mod export;
pub mod replay;

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::finding::{Finding, Severity, Side};
use crate::pipeline::PacketEvent;

/// Where `--store` points when not given.
pub const DEFAULT_DIR: &str = "edgetap-store";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {dir}: {source} (a store is open in one process at a time)")]
    Open { dir: String, source: sled::Error },
    #[error("store: {0}")]
    Db(#[from] sled::Error),
    #[error("capture {0} not found")]
    NoCapture(u64),
    #[error("store tree {tree}, key {key}: {detail}")]
    Corrupt {
        tree: &'static str,
        key: String,
        detail: String,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// One proxy run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CaptureMeta {
    pub id: u64,
    pub name: String,
    /// Microseconds since the Unix epoch.
    pub started_us: i64,
    /// None while running, or when the proxy was killed.
    pub ended_us: Option<i64>,
    pub listen: String,
    pub upstream: String,
    /// The rules the live analysis used: edgetap version and rule files.
    pub rules_version: String,
    pub connections: u64,
    pub chunks: u64,
    pub bytes: u64,
    /// MQTT control packets decoded.
    pub packets: u64,
    pub findings: u64,
}

/// One proxied connection: the client's address and the upstream's.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ConnMeta {
    pub conn: u64,
    pub client: String,
    pub server: String,
    pub opened_us: i64,
    pub ended_us: Option<i64>,
    /// "closed", "reset by client", "upstream refused: …", …
    pub end: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum EventKind {
    Open {
        client: SocketAddr,
        server: SocketAddr,
    },
    Data {
        side: Side,
        bytes: Bytes,
    },
    /// Bytes forwarded but not analysed: a TLS flow the proxy does not terminate. Kept
    /// so that the store holds everything forwarded (and the export shows it).
    Opaque {
        side: Side,
        bytes: Bytes,
    },
    /// That side finished sending (FIN), mirrored to the other.
    Fin {
        side: Side,
    },
    /// The connection is over; `how` says why.
    End {
        how: String,
    },
}

/// One recorded event of a capture.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub time_us: i64,
    pub seq: u64,
    pub conn: u64,
    pub kind: EventKind,
}

/// One decoded MQTT packet, as stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct PacketRecord {
    pub conn: u64,
    pub side: String,
    /// The event (chunk) `seq` in which the packet ended.
    pub chunk: u64,
    pub time_us: i64,
    /// Stream offset of the packet's first byte on its side.
    pub offset: u64,
    pub len: u64,
    #[serde(rename = "type")]
    pub packet_type: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub client_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub password: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub topic: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub payload_len: Option<u64>,
}

pub const REDACTED: &str = "<redacted>";

impl PacketRecord {
    /// The record with CONNECT credentials replaced, for output.
    pub fn redacted(&self) -> PacketRecord {
        let mut r = self.clone();
        if r.username.is_some() {
            r.username = Some(REDACTED.into());
        }
        if r.password.is_some() {
            r.password = Some(REDACTED.into());
        }
        r
    }
}

/// What a writer hands the store in one go; applied atomically per tree, then
/// flushed to disk.
#[derive(Default)]
pub struct WriteBatch {
    /// Events with their packets, for the capture's chunk file.
    log: Vec<Pending>,
    findings: Vec<([u8; 16], Vec<u8>)>,
    /// In order: a later record of a connection replaces an earlier one.
    conns: Vec<([u8; 16], Vec<u8>)>,
    /// Encoded packet records of all events (see `Pending::pk`): one buffer per
    /// batch, not one allocation per packet.
    pk: Vec<u8>,
    /// Bytes of chunk data in the batch.
    pub data_bytes: usize,
    pub records: usize,
}

struct Pending {
    cap: u64,
    time_us: i64,
    seq: u64,
    conn: u64,
    kind: u8,
    body: Bytes,
    /// The event's packet records: `WriteBatch::pk[pk.0..pk.1]`, each with its
    /// length prefix, `npk` of them.
    pk: (usize, usize),
    npk: u32,
}

/// Event kinds as stored.
const EV_OPEN: u8 = 0;
const EV_DATA: u8 = 1;
const EV_FIN: u8 = 3;
const EV_END: u8 = 5;
const EV_OPAQUE: u8 = 6;

impl WriteBatch {
    pub fn event(&mut self, cap: u64, ev: &Event) {
        let (kind, body) = match &ev.kind {
            EventKind::Open { client, server } => {
                (EV_OPEN, Bytes::from(format!("{client} {server}")))
            }
            EventKind::Data { side, bytes } => {
                self.data_bytes += bytes.len();
                (EV_DATA + side.index() as u8, bytes.clone())
            }
            EventKind::Opaque { side, bytes } => {
                self.data_bytes += bytes.len();
                (EV_OPAQUE + side.index() as u8, bytes.clone())
            }
            EventKind::Fin { side } => (EV_FIN + side.index() as u8, Bytes::new()),
            EventKind::End { how } => (EV_END, Bytes::from(how.clone())),
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
        self.packet_fields(cap, seq, &p.fields());
    }

    /// [`Self::packet`] without building a [`PacketRecord`]: what the proxy's
    /// analysis task calls for each decoded packet.
    pub fn packet_event(&mut self, cap: u64, seq: u64, p: &PacketEvent<'_>) {
        self.packet_fields(cap, seq, &replay::packet_fields(p));
    }

    fn packet_fields(&mut self, cap: u64, seq: u64, f: &PacketFields<'_>) {
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
        encode_packet(f, &mut self.pk);
        let len = (self.pk.len() - at - 4) as u32;
        self.pk[at..at + 4].copy_from_slice(&len.to_be_bytes());
        let e = &mut self.log[pos];
        e.pk.1 = self.pk.len();
        e.npk += 1;
        self.records += 1;
    }

    pub fn finding(&mut self, cap: u64, n: u64, f: &Finding) {
        self.findings.push((
            pair_key(cap, n),
            serde_json::to_vec(f).expect("finding serialises"),
        ));
        self.records += 1;
    }

    pub fn conn(&mut self, cap: u64, c: &ConnMeta) {
        self.conns.push((
            pair_key(cap, c.conn),
            serde_json::to_vec(c).expect("record serialises"),
        ));
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
        self.data_bytes += later.data_bytes;
        self.records += later.records;
    }
}

/// A capture's chunk file, open for appending.
struct ChunkFile {
    file: File,
    len: u64,
    next_batch: u64,
}

pub struct Store {
    db: sled::Db,
    /// `chunks/` beside the sled files: one `CAP.bin` per capture.
    chunk_dir: PathBuf,
    writers: Mutex<HashMap<u64, ChunkFile>>,
    captures: sled::Tree,
    log: sled::Tree,
    conns: sled::Tree,
    events: sled::Tree,
    packets: sled::Tree,
    findings: sled::Tree,
}

fn pair_key(a: u64, b: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&a.to_be_bytes());
    k[8..].copy_from_slice(&b.to_be_bytes());
    k
}

fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

impl Store {
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let db = sled::Config::new()
            .path(dir)
            // We flush ourselves at the end of every batch; sled's own timer is a
            // second line of defence.
            .flush_every_ms(Some(500))
            // sled's default page cache is 1 GB; the proxy must stay small.
            .cache_capacity(32 << 20)
            .open()
            .map_err(|source| StoreError::Open {
                dir: dir.display().to_string(),
                source,
            })?;
        let chunk_dir = dir.join("chunks");
        std::fs::create_dir_all(&chunk_dir)?;
        Ok(Store {
            chunk_dir,
            writers: Mutex::new(HashMap::new()),
            captures: db.open_tree("captures")?,
            log: db.open_tree("log")?,
            conns: db.open_tree("conns")?,
            events: db.open_tree("events")?,
            packets: db.open_tree("packets")?,
            findings: db.open_tree("findings")?,
            db,
        })
    }

    /// Registers a new capture; `meta.id` is replaced by the new id, returned.
    pub fn begin_capture(&self, meta: &mut CaptureMeta) -> Result<u64, StoreError> {
        let last = self.captures.last()?.map(|(k, _)| be_u64(&k)).unwrap_or(0);
        meta.id = last + 1;
        self.put_meta(meta)?;
        self.db.flush()?;
        Ok(meta.id)
    }

    pub fn put_meta(&self, meta: &CaptureMeta) -> Result<(), StoreError> {
        self.captures.insert(
            meta.id.to_be_bytes(),
            serde_json::to_vec(meta).expect("meta serialises"),
        )?;
        Ok(())
    }

    /// Applies a batch and the capture's counters, then waits until they are on disk.
    /// The batch's events go to the chunk file first (appended, synced), then its
    /// index entry and the rest to sled.
    pub fn write(&self, mut batch: WriteBatch, meta: &CaptureMeta) -> Result<(), StoreError> {
        if !batch.log.is_empty() {
            batch
                .log
                .sort_by_key(|e| (e.cap, e.time_us.max(0) as u64, e.seq));
            let mut writers = self.writers.lock().unwrap_or_else(|e| e.into_inner());
            let mut index = sled::Batch::default();
            let mut touched: Vec<u64> = vec![];
            let mut out: Vec<u8> = Vec::with_capacity(64 * batch.log.len());
            let mut i = 0;
            while i < batch.log.len() {
                let cap = batch.log[i].cap;
                let cf = match writers.entry(cap) {
                    std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                    std::collections::hash_map::Entry::Vacant(v) => {
                        v.insert(self.open_chunk_file(cap)?)
                    }
                };
                // Headers and packet records go to `out`; chunk bytes are written
                // from where they are (one writev), not copied once more.
                out.clear();
                let start = i;
                let mut cuts: Vec<usize> = vec![];
                while i < batch.log.len() && batch.log[i].cap == cap {
                    encode_event(&batch.log[i], &batch.pk, &mut out, &mut cuts);
                    i += 1;
                }
                let mut slices = Vec::with_capacity(2 * (i - start) + 1);
                let mut from = 0;
                for (e, cut) in batch.log[start..i].iter().zip(&cuts) {
                    if !e.body.is_empty() {
                        slices.push(std::io::IoSlice::new(&out[from..*cut]));
                        slices.push(std::io::IoSlice::new(&e.body));
                        from = *cut;
                    }
                }
                slices.push(std::io::IoSlice::new(&out[from..]));
                let len = write_all_vectored(&mut cf.file, &mut slices)?;
                let mut v = [0u8; 16];
                v[..8].copy_from_slice(&cf.len.to_be_bytes());
                v[8..].copy_from_slice(&len.to_be_bytes());
                index.insert(&pair_key(cap, cf.next_batch)[..], &v[..]);
                cf.len += len;
                cf.next_batch += 1;
                if !touched.contains(&cap) {
                    touched.push(cap);
                }
            }
            for cap in touched {
                writers[&cap].file.sync_data()?;
            }
            self.log.apply_batch(index)?;
        }
        for (tree, records) in [(&self.findings, batch.findings), (&self.conns, batch.conns)] {
            if !records.is_empty() {
                let mut b = sled::Batch::default();
                for (k, v) in records {
                    b.insert(&k[..], v);
                }
                tree.apply_batch(b)?;
            }
        }
        self.put_meta(meta)?;
        self.db.flush()?;
        Ok(())
    }

    fn chunk_path(&self, cap: u64) -> PathBuf {
        self.chunk_dir.join(format!("{cap}.bin"))
    }

    fn open_chunk_file(&self, cap: u64) -> Result<ChunkFile, StoreError> {
        let path = self.chunk_path(cap);
        let existed = path.exists();
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        if !existed {
            // The new name itself must survive a crash.
            File::open(&self.chunk_dir)?.sync_all()?;
        }
        let len = file.metadata()?.len();
        let next_batch = match self.log.scan_prefix(cap.to_be_bytes()).next_back() {
            Some(r) => be_u64(&r?.0[8..16]) + 1,
            None => 0,
        };
        Ok(ChunkFile {
            file,
            len,
            next_batch,
        })
    }

    pub fn captures(&self) -> Result<Vec<CaptureMeta>, StoreError> {
        self.captures
            .iter()
            .map(|r| {
                let (k, v) = r?;
                decode_json("captures", &k, &v)
            })
            .collect()
    }

    pub fn capture(&self, id: u64) -> Result<CaptureMeta, StoreError> {
        match self.captures.get(id.to_be_bytes())? {
            Some(v) => decode_json("captures", &id.to_be_bytes(), &v),
            None => Err(StoreError::NoCapture(id)),
        }
    }

    pub fn conns(&self, id: u64) -> Result<Vec<ConnMeta>, StoreError> {
        self.conns
            .scan_prefix(id.to_be_bytes())
            .map(|r| {
                let (k, v) = r?;
                decode_json("conns", &k, &v)
            })
            .collect()
    }

    /// The capture's events in time order.
    pub fn events(&self, id: u64) -> impl Iterator<Item = Result<Event, StoreError>> + '_ {
        // Stores from before the chunk file: one key per event.
        let old = self.events.scan_prefix(id.to_be_bytes()).map(|r| {
            let (k, v) = r?;
            decode_old_event(&k, &v)
        });
        let new = self.batches(id).flat_map(|b| {
            let items: Vec<Result<Event, StoreError>> = match b {
                Ok((k, buf)) => match decode_batch(&k, &buf, true, false) {
                    Ok((evs, _)) => evs.into_iter().map(Ok).collect(),
                    Err(e) => vec![Err(e)],
                },
                Err(e) => vec![Err(e)],
            };
            items
        });
        old.chain(new)
    }

    pub fn packets(&self, id: u64) -> impl Iterator<Item = Result<PacketRecord, StoreError>> + '_ {
        let old = self.packets.scan_prefix(id.to_be_bytes()).map(|r| {
            let (k, v) = r?;
            decode_json("packets", &k, &v)
        });
        let new = self.batches(id).flat_map(|b| {
            let items: Vec<Result<PacketRecord, StoreError>> = match b {
                Ok((k, buf)) => match decode_batch(&k, &buf, false, true) {
                    Ok((_, ps)) => ps.into_iter().map(Ok).collect(),
                    Err(e) => vec![Err(e)],
                },
                Err(e) => vec![Err(e)],
            };
            items
        });
        old.chain(new)
    }

    /// The capture's batch records, read from its chunk file, in order.
    fn batches(
        &self,
        id: u64,
    ) -> impl Iterator<Item = Result<(sled::IVec, Bytes), StoreError>> + '_ {
        let mut file: Option<File> = None;
        self.log.scan_prefix(id.to_be_bytes()).map(move |r| {
            let (k, v) = r?;
            if v.len() != 16 {
                return Err(StoreError::Corrupt {
                    tree: "log",
                    key: hex(&k),
                    detail: "bad index entry".into(),
                });
            }
            let (offset, len) = (be_u64(&v[..8]), be_u64(&v[8..]) as usize);
            let f = match &mut file {
                Some(f) => f,
                None => file.insert(File::open(self.chunk_path(id))?),
            };
            let mut buf = vec![0u8; len];
            f.read_exact_at(&mut buf, offset)
                .map_err(|e| StoreError::Corrupt {
                    tree: "log",
                    key: hex(&k),
                    detail: format!("chunk file at {offset}+{len}: {e}"),
                })?;
            Ok((k, Bytes::from(buf)))
        })
    }

    pub fn findings(&self, id: u64) -> Result<Vec<Finding>, StoreError> {
        self.findings
            .scan_prefix(id.to_be_bytes())
            .map(|r| {
                let (k, v) = r?;
                let f: StoredFinding = decode_json("findings", &k, &v)?;
                Ok(f.into_finding())
            })
            .collect()
    }

    /// Removes a capture and everything recorded with it.
    pub fn delete(&self, id: u64) -> Result<(), StoreError> {
        self.capture(id)?;
        for tree in [
            &self.conns,
            &self.log,
            &self.events,
            &self.packets,
            &self.findings,
        ] {
            let mut batch = sled::Batch::default();
            for k in tree.scan_prefix(id.to_be_bytes()).keys() {
                batch.remove(k?);
            }
            tree.apply_batch(batch)?;
        }
        self.captures.remove(id.to_be_bytes())?;
        self.db.flush()?;
        self.writers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        match std::fs::remove_file(self.chunk_path(id)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }
}

fn decode_json<T: serde::de::DeserializeOwned>(
    tree: &'static str,
    k: &[u8],
    v: &[u8],
) -> Result<T, StoreError> {
    serde_json::from_slice(v).map_err(|e| StoreError::Corrupt {
        tree,
        key: hex(k),
        detail: e.to_string(),
    })
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Encodes `e` without its body into `out`; `cuts` gets the position in `out`
/// where the body belongs.
fn encode_event(e: &Pending, pk: &[u8], out: &mut Vec<u8>, cuts: &mut Vec<usize>) {
    out.extend_from_slice(&(e.time_us.max(0) as u64).to_be_bytes());
    out.extend_from_slice(&e.seq.to_be_bytes());
    out.extend_from_slice(&e.conn.to_be_bytes());
    out.push(e.kind);
    out.extend_from_slice(&(e.body.len() as u32).to_be_bytes());
    cuts.push(out.len());
    out.extend_from_slice(&e.npk.to_be_bytes());
    out.extend_from_slice(&pk[e.pk.0..e.pk.1]);
}

/// A packet record's fields, borrowed: what [`encode_packet`] stores.
pub(crate) struct PacketFields<'a> {
    pub conn: u64,
    pub side: &'a str,
    pub chunk: u64,
    pub time_us: i64,
    pub offset: u64,
    pub len: u64,
    pub packet_type: &'a str,
    pub client_id: Option<&'a str>,
    pub version: Option<&'a str>,
    pub username: Option<&'a str>,
    pub password: Option<&'a str>,
    pub topic: Option<&'a str>,
    pub payload_len: Option<u64>,
}

impl PacketRecord {
    pub(crate) fn fields(&self) -> PacketFields<'_> {
        PacketFields {
            conn: self.conn,
            side: &self.side,
            chunk: self.chunk,
            time_us: self.time_us,
            offset: self.offset,
            len: self.len,
            packet_type: &self.packet_type,
            client_id: self.client_id.as_deref(),
            version: self.version.as_deref(),
            username: self.username.as_deref(),
            password: self.password.as_deref(),
            topic: self.topic.as_deref(),
            payload_len: self.payload_len,
        }
    }
}

/// First byte of a binary packet record (a JSON one starts with `{`).
const PACKET_V1: u8 = 1;
/// The side byte of a packet record.
const SIDE_CLIENT: u8 = 0;
const SIDE_SERVER: u8 = 1;

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// Appends the binary packet record of `f` (layout in the module docs).
fn encode_packet(f: &PacketFields<'_>, out: &mut Vec<u8>) {
    let opts = [f.client_id, f.version, f.username, f.password, f.topic];
    let mut present = 0u8;
    for (i, o) in opts.iter().enumerate() {
        if o.is_some() {
            present |= 1 << i;
        }
    }
    if f.payload_len.is_some() {
        present |= 1 << 5;
    }
    out.push(PACKET_V1);
    out.push(present);
    out.push(match f.side {
        "client" => SIDE_CLIENT,
        "server" => SIDE_SERVER,
        // Not written by edgetap; kept anyway, as the type name is.
        _ => 2,
    });
    put_varint(out, f.conn);
    put_varint(out, f.chunk);
    put_varint(out, ((f.time_us << 1) ^ (f.time_us >> 63)) as u64);
    put_varint(out, f.offset);
    put_varint(out, f.len);
    put_str(out, f.packet_type);
    for s in opts.into_iter().flatten() {
        put_str(out, s);
    }
    if let Some(n) = f.payload_len {
        put_varint(out, n);
    }
}

/// Reads a packet record written by [`encode_packet`] or, older, as JSON.
fn decode_packet(k: &[u8], b: &[u8]) -> Result<PacketRecord, StoreError> {
    if b.first() == Some(&b'{') {
        return decode_json("log", k, b);
    }
    let bad = |what: &str| StoreError::Corrupt {
        tree: "log",
        key: hex(k),
        detail: format!("packet record: {what}"),
    };
    let mut pos = 0usize;
    let byte = |pos: &mut usize| -> Result<u8, StoreError> {
        let v = *b.get(*pos).ok_or_else(|| bad("truncated"))?;
        *pos += 1;
        Ok(v)
    };
    let varint = |pos: &mut usize| -> Result<u64, StoreError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let x = byte(pos)?;
            v |= u64::from(x & 0x7f) << shift;
            if x & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(bad("varint too long"))
    };
    let string = |pos: &mut usize| -> Result<String, StoreError> {
        let n = varint(pos)? as usize;
        let end = pos.checked_add(n).filter(|e| *e <= b.len());
        let end = end.ok_or_else(|| bad("truncated"))?;
        let s = std::str::from_utf8(&b[*pos..end]).map_err(|_| bad("not UTF-8"))?;
        *pos = end;
        Ok(s.to_string())
    };
    if byte(&mut pos)? != PACKET_V1 {
        return Err(bad("unknown format"));
    }
    let present = byte(&mut pos)?;
    let side = match byte(&mut pos)? {
        SIDE_CLIENT => "client",
        SIDE_SERVER => "server",
        _ => "?",
    };
    let conn = varint(&mut pos)?;
    let chunk = varint(&mut pos)?;
    let z = varint(&mut pos)?;
    let time_us = ((z >> 1) as i64) ^ -((z & 1) as i64);
    let offset = varint(&mut pos)?;
    let len = varint(&mut pos)?;
    let packet_type = string(&mut pos)?;
    let mut opt = |bit: u8| -> Result<Option<String>, StoreError> {
        if present & (1 << bit) != 0 {
            string(&mut pos).map(Some)
        } else {
            Ok(None)
        }
    };
    let client_id = opt(0)?;
    let version = opt(1)?;
    let username = opt(2)?;
    let password = opt(3)?;
    let topic = opt(4)?;
    let payload_len = if present & (1 << 5) != 0 {
        Some(varint(&mut pos)?)
    } else {
        None
    };
    if pos != b.len() {
        return Err(bad("trailing bytes"));
    }
    Ok(PacketRecord {
        conn,
        side: side.to_string(),
        chunk,
        time_us,
        offset,
        len,
        packet_type,
        client_id,
        version,
        username,
        password,
        topic,
        payload_len,
    })
}

/// Writes every slice, in order; returns the bytes written.
fn write_all_vectored(f: &mut File, mut bufs: &mut [std::io::IoSlice<'_>]) -> std::io::Result<u64> {
    let total: usize = bufs.iter().map(|b| b.len()).sum();
    std::io::IoSlice::advance_slices(&mut bufs, 0);
    while !bufs.is_empty() {
        // IOV_MAX is 1024 on Linux.
        let n = match f.write_vectored(&bufs[..bufs.len().min(1024)]) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            r => r?,
        };
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        std::io::IoSlice::advance_slices(&mut bufs, n);
    }
    Ok(total as u64)
}

/// The events and/or packets of one batch record (`k` is its `log` key, for errors).
fn decode_batch(
    k: &[u8],
    buf: &Bytes,
    want_events: bool,
    want_packets: bool,
) -> Result<(Vec<Event>, Vec<PacketRecord>), StoreError> {
    let bad = |detail: String| StoreError::Corrupt {
        tree: "log",
        key: hex(k),
        detail,
    };
    let pos = std::cell::Cell::new(0usize);
    let take = |n: usize| -> Result<std::ops::Range<usize>, StoreError> {
        let p = pos.get();
        if buf.len() - p < n {
            return Err(bad(format!("record truncated at byte {p}")));
        }
        pos.set(p + n);
        Ok(p..p + n)
    };
    let u32_at = |r: std::ops::Range<usize>| u32::from_be_bytes(buf[r].try_into().unwrap());
    let (mut events, mut packets) = (vec![], vec![]);
    while pos.get() < buf.len() {
        let time_us = be_u64(&buf[take(8)?]) as i64;
        let seq = be_u64(&buf[take(8)?]);
        let conn = be_u64(&buf[take(8)?]);
        let kind = buf[take(1)?][0];
        let len = u32_at(take(4)?) as usize;
        let body = take(len)?;
        let n = u32_at(take(4)?);
        for _ in 0..n {
            let len = u32_at(take(4)?) as usize;
            let r = take(len)?;
            if want_packets {
                packets.push(decode_packet(k, &buf[r])?);
            }
        }
        if want_events {
            let side = |i: u8| if i == 0 { Side::Client } else { Side::Server };
            let kind = match kind {
                EV_OPEN => {
                    parse_open(&buf[body]).ok_or_else(|| bad("open: bad addresses".into()))?
                }
                1 | 2 => EventKind::Data {
                    side: side(kind - EV_DATA),
                    bytes: buf.slice(body),
                },
                3 | 4 => EventKind::Fin {
                    side: side(kind - EV_FIN),
                },
                EV_END => EventKind::End {
                    how: String::from_utf8_lossy(&buf[body]).into_owned(),
                },
                6 | 7 => EventKind::Opaque {
                    side: side(kind - EV_OPAQUE),
                    bytes: buf.slice(body),
                },
                _ => return Err(bad(format!("unknown event kind {kind}"))),
            };
            events.push(Event {
                time_us,
                seq,
                conn,
                kind,
            });
        }
    }
    Ok((events, packets))
}

fn parse_open(body: &[u8]) -> Option<EventKind> {
    let text = std::str::from_utf8(body).ok()?;
    let mut it = text.split(' ').map(|s| s.parse::<SocketAddr>());
    match (it.next(), it.next()) {
        (Some(Ok(client)), Some(Ok(server))) => Some(EventKind::Open { client, server }),
        _ => None,
    }
}

/// An event of the older layout (tree `events`, bytes inline).
fn decode_old_event(k: &[u8], v: &[u8]) -> Result<Event, StoreError> {
    let bad = |detail: &str| StoreError::Corrupt {
        tree: "events",
        key: hex(k),
        detail: detail.into(),
    };
    if k.len() != 24 || v.len() < 9 {
        return Err(bad("short record"));
    }
    let time_us = be_u64(&k[8..16]) as i64;
    let seq = be_u64(&k[16..24]);
    let conn = be_u64(&v[1..9]);
    let body = &v[9..];
    let side = |i: u8| if i == 0 { Side::Client } else { Side::Server };
    let kind = match v[0] {
        EV_OPEN => parse_open(body).ok_or_else(|| bad("open: bad addresses"))?,
        1 | 2 => EventKind::Data {
            side: side(v[0] - EV_DATA),
            bytes: Bytes::copy_from_slice(body),
        },
        3 | 4 => EventKind::Fin {
            side: side(v[0] - EV_FIN),
        },
        EV_END => EventKind::End {
            how: String::from_utf8_lossy(body).into_owned(),
        },
        _ => return Err(bad("unknown event kind")),
    };
    Ok(Event {
        time_us,
        seq,
        conn,
        kind,
    })
}

/// [`Finding`] as read back (the report type only serialises).
#[derive(Deserialize)]
struct StoredFinding {
    rule: String,
    clause: String,
    table: Option<String>,
    severity: Severity,
    edge_id: Option<String>,
    #[serde(rename = "type")]
    msg_type: Option<String>,
    topic: Option<String>,
    mid: Option<u64>,
    packet: Option<u64>,
    time: Option<i64>,
    message: String,
    conn: Option<u64>,
    side: Option<String>,
    offset: Option<u64>,
    #[serde(default)]
    basis: Option<String>,
}

impl StoredFinding {
    fn into_finding(self) -> Finding {
        Finding {
            rule: self.rule,
            clause: self.clause,
            table: self.table,
            severity: self.severity,
            edge_id: self.edge_id,
            msg_type: self.msg_type,
            topic: self.topic,
            mid: self.mid,
            packet: self.packet,
            time: self.time,
            message: self.message,
            conn: self.conn,
            side: self.side.map(|s| {
                if s == "server" {
                    Side::Server
                } else {
                    Side::Client
                }
            }),
            offset: self.offset,
            basis: self.basis.map(Into::into),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(n: u64) -> PacketRecord {
        PacketRecord {
            conn: 7,
            side: if n.is_multiple_of(2) {
                "client"
            } else {
                "server"
            }
            .into(),
            chunk: n,
            time_us: if n == 3 {
                -5
            } else {
                1_795_687_200_000_000 + n as i64
            },
            offset: 300 * n,
            len: 1030,
            packet_type: "PUBLISH".into(),
            client_id: (n == 1).then(|| "dev-é".to_string()),
            version: (n == 1).then(|| "3.1.1".to_string()),
            username: (n == 1).then(|| "u".to_string()),
            password: (n == 1).then(String::new),
            topic: (n != 1).then(|| format!("t/{n}")),
            payload_len: (n != 1).then_some(1 << 40),
        }
    }

    #[test]
    fn binary_packet_records_round_trip_and_json_ones_still_read() {
        for n in 0..5 {
            let r = rec(n);
            let mut b = vec![];
            encode_packet(&r.fields(), &mut b);
            assert_eq!(decode_packet(b"k", &b).unwrap(), r);
            let json = serde_json::to_vec(&r).unwrap();
            assert!(json.len() > b.len());
            assert_eq!(decode_packet(b"k", &json).unwrap(), r);
            // Truncated binary records are reported, not misread.
            assert!(decode_packet(b"k", &b[..b.len() - 1]).is_err());
        }
    }

    #[test]
    fn packets_given_out_of_event_order_stay_with_their_event() {
        let dir = std::env::temp_dir().join(format!("edgetap-store-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Store::open(&dir).unwrap();
        let mut meta = CaptureMeta {
            id: 0,
            name: "u".into(),
            started_us: 0,
            ended_us: None,
            listen: String::new(),
            upstream: String::new(),
            rules_version: String::new(),
            connections: 0,
            chunks: 0,
            bytes: 0,
            packets: 0,
            findings: 0,
        };
        let cap = store.begin_capture(&mut meta).unwrap();
        let ev = |seq: u64| Event {
            time_us: seq as i64,
            seq,
            conn: 7,
            kind: EventKind::Data {
                side: Side::Client,
                bytes: Bytes::from(vec![seq as u8; 3]),
            },
        };
        let mut first = WriteBatch::default();
        first.event(cap, &ev(1));
        first.event(cap, &ev(2));
        first.packet(cap, 1, 0, &rec(1));
        first.packet(cap, 2, 0, &rec(2));
        first.packet(cap, 1, 1, &rec(3));
        let mut later = WriteBatch::default();
        later.event(cap, &ev(4));
        later.packet(cap, 4, 0, &rec(4));
        first.append(later);
        store.write(first, &meta).unwrap();
        let got: Vec<PacketRecord> = store.packets(cap).map(|p| p.unwrap()).collect();
        assert_eq!(got, vec![rec(1), rec(3), rec(2), rec(4)]);
        let evs: Vec<Event> = store.events(cap).map(|e| e.unwrap()).collect();
        assert_eq!(evs, vec![ev(1), ev(2), ev(4)]);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
