//! The capture store: the only module that imports sled.
//!
//! Every proxy run is a capture. What the proxy forwarded is kept as a stream of
//! [`Event`]s (connection opened, chunk of bytes, half-close, end), next to the MQTT
//! packets decoded from them and the findings, so a capture can be analyzed again
//! ([`replay::analyze_capture`]) or exported ([`export::export_pcapng`]).
//!
//! Trees and keys (all integers big-endian, so sled iterates a capture in time order):
//!
//! ```text
//! captures  cap:u64                                 → JSON CaptureMeta
//! conns     cap:u64 conn:u64                        → JSON ConnMeta
//! events    cap:u64 time_us:u64 seq:u64             → kind:u8 conn:u64 body…
//! packets   cap:u64 time_us:u64 seq:u64 idx:u32     → JSON PacketRecord
//! findings  cap:u64 n:u64                           → JSON Finding
//! ```
//!
//! `seq` numbers the events of a capture in the order the analysis task received
//! them; it is the `packet` number findings carry. Within one direction of one
//! connection, time and seq both grow, so key order is stream order.
//!
//! Credentials from CONNECT are stored as sent; [`PacketRecord::redacted`] and the
//! export hide them unless the caller asks for them.

pub mod export;
pub mod replay;

use std::net::SocketAddr;
use std::path::Path;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::finding::{Finding, Severity, Side};

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
    events: sled::Batch,
    packets: sled::Batch,
    findings: sled::Batch,
    conns: sled::Batch,
    /// Bytes of chunk data in the batch.
    pub data_bytes: usize,
    pub records: usize,
}

impl WriteBatch {
    pub fn event(&mut self, cap: u64, ev: &Event) {
        let key = event_key(cap, ev.time_us, ev.seq);
        let mut v = Vec::with_capacity(16);
        let (kind, body): (u8, &[u8]);
        let text;
        match &ev.kind {
            EventKind::Open { client, server } => {
                text = format!("{client} {server}");
                (kind, body) = (0, text.as_bytes());
            }
            EventKind::Data { side, bytes } => {
                self.data_bytes += bytes.len();
                (kind, body) = (1 + side.index() as u8, bytes);
            }
            EventKind::Fin { side } => (kind, body) = (3 + side.index() as u8, &[]),
            EventKind::End { how } => (kind, body) = (5, how.as_bytes()),
        }
        v.push(kind);
        v.extend_from_slice(&ev.conn.to_be_bytes());
        v.extend_from_slice(body);
        self.events.insert(key.to_vec(), v);
        self.records += 1;
    }

    pub fn packet(&mut self, cap: u64, seq: u64, idx: u32, p: &PacketRecord) {
        let mut key = event_key(cap, p.time_us, seq).to_vec();
        key.extend_from_slice(&idx.to_be_bytes());
        self.packets
            .insert(key, serde_json::to_vec(p).expect("record serialises"));
        self.records += 1;
    }

    pub fn finding(&mut self, cap: u64, n: u64, f: &Finding) {
        self.findings.insert(
            pair_key(cap, n).to_vec(),
            serde_json::to_vec(f).expect("finding serialises"),
        );
        self.records += 1;
    }

    pub fn conn(&mut self, cap: u64, c: &ConnMeta) {
        self.conns.insert(
            pair_key(cap, c.conn).to_vec(),
            serde_json::to_vec(c).expect("record serialises"),
        );
        self.records += 1;
    }

    pub fn is_empty(&self) -> bool {
        self.records == 0
    }
}

pub struct Store {
    db: sled::Db,
    captures: sled::Tree,
    conns: sled::Tree,
    events: sled::Tree,
    packets: sled::Tree,
    findings: sled::Tree,
}

fn event_key(cap: u64, time_us: i64, seq: u64) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[..8].copy_from_slice(&cap.to_be_bytes());
    k[8..16].copy_from_slice(&(time_us.max(0) as u64).to_be_bytes());
    k[16..].copy_from_slice(&seq.to_be_bytes());
    k
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
        Ok(Store {
            captures: db.open_tree("captures")?,
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
    pub fn write(&self, batch: WriteBatch, meta: &CaptureMeta) -> Result<(), StoreError> {
        self.events.apply_batch(batch.events)?;
        self.packets.apply_batch(batch.packets)?;
        self.findings.apply_batch(batch.findings)?;
        self.conns.apply_batch(batch.conns)?;
        self.put_meta(meta)?;
        self.db.flush()?;
        Ok(())
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
        self.events.scan_prefix(id.to_be_bytes()).map(|r| {
            let (k, v) = r?;
            decode_event(&k, &v)
        })
    }

    pub fn packets(&self, id: u64) -> impl Iterator<Item = Result<PacketRecord, StoreError>> + '_ {
        self.packets.scan_prefix(id.to_be_bytes()).map(|r| {
            let (k, v) = r?;
            decode_json("packets", &k, &v)
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
        for tree in [&self.conns, &self.events, &self.packets, &self.findings] {
            let mut batch = sled::Batch::default();
            for k in tree.scan_prefix(id.to_be_bytes()).keys() {
                batch.remove(k?);
            }
            tree.apply_batch(batch)?;
        }
        self.captures.remove(id.to_be_bytes())?;
        self.db.flush()?;
        Ok(())
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

fn decode_event(k: &[u8], v: &[u8]) -> Result<Event, StoreError> {
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
        0 => {
            let text = std::str::from_utf8(body).map_err(|_| bad("open: not UTF-8"))?;
            let mut it = text.split(' ').map(|s| s.parse::<SocketAddr>());
            match (it.next(), it.next()) {
                (Some(Ok(client)), Some(Ok(server))) => EventKind::Open { client, server },
                _ => return Err(bad("open: bad addresses")),
            }
        }
        1 | 2 => EventKind::Data {
            side: side(v[0] - 1),
            bytes: Bytes::copy_from_slice(body),
        },
        3 | 4 => EventKind::Fin {
            side: side(v[0] - 3),
        },
        5 => EventKind::End {
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
        }
    }
}
