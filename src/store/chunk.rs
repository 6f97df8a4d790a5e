//! The chunk file of a capture (`chunks/CAP.bin`): framed, checksummed records,
//! appended by the one recording process and read by anyone, during the capture too.
//!
//! ```text
//! record  magic "EDGR" (4) kind:u8 len:u32 crc:u32 body[len]
//!         crc: CRC-32 (IEEE) of kind, len (big-endian) and body
//! kind    'E' a batch of events (layout below) · 'C' connection records (one JSON
//!         ConnMeta a line; a later one of a connection replaces an earlier one)
//!         · 'L' a span the recorder could not write (JSON LostSpan)
//! ```
//!
//! A reader walks the records from the start and stops at the end of the last whole
//! one: a record being appended is not yet there (it is written with one `writev`,
//! and its checksum covers it). A record whose magic, length or checksum is wrong is
//! damage: the reader looks for the next valid record after it and reports the span
//! it skipped ([`Damage`]), so a damaged chunk loses only what it held. A length is
//! never believed beyond the file's size.
//!
//! The body of an 'E' record is the batch layout of the sled-indexed files before it
//! (still read by [`super::legacy`]): events in `(time_us, seq)` order, each with the
//! MQTT packets decoded from it:
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
//! A packet record that starts with `{` is a JSON [`PacketRecord`] (files written
//! before the binary record; still read).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{ConnMeta, Event, EventKind, PacketRecord, StoreError};
use crate::finding::Side;

pub(crate) const MAGIC: &[u8; 4] = b"EDGR";
pub(crate) const HEADER: usize = 13;
pub(crate) const REC_EVENTS: u8 = b'E';
pub(crate) const REC_CONNS: u8 = b'C';
pub(crate) const REC_LOST: u8 = b'L';
/// No record is larger: a batch is at most a few MiB.
const MAX_RECORD: u64 = 1 << 30;

/// Event kinds as stored.
pub(crate) const EV_OPEN: u8 = 0;
pub(crate) const EV_DATA: u8 = 1;
pub(crate) const EV_FIN: u8 = 3;
pub(crate) const EV_END: u8 = 5;
pub(crate) const EV_OPAQUE: u8 = 6;

/// A span of a chunk file that could not be read: what was there is lost, what
/// comes before and after is read.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Damage {
    pub file: PathBuf,
    /// Byte offsets in the file: `from` inclusive, `to` exclusive.
    pub from: u64,
    pub to: u64,
    pub why: String,
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: bytes {}–{} ({} bytes) damaged, not read: {}",
            self.file.display(),
            self.from,
            self.to,
            self.to - self.from,
            self.why
        )
    }
}

/// What the recorder could not write (disk full or another write error): the
/// events it held are not in the store.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct LostSpan {
    /// µs since the Unix epoch: first and last event not recorded.
    pub from_us: i64,
    pub to_us: i64,
    /// Chunk bytes not recorded.
    pub bytes: u64,
    pub events: u64,
    /// MQTT packets decoded from those events (not in the store either).
    #[serde(default)]
    pub packets: u64,
    pub error: String,
}

/// The record header for `kind` and `body`.
pub(crate) fn header(kind: u8, body_len: usize, crc: u32) -> [u8; HEADER] {
    let mut h = [0u8; HEADER];
    h[..4].copy_from_slice(MAGIC);
    h[4] = kind;
    h[5..9].copy_from_slice(&(body_len as u32).to_be_bytes());
    h[9..13].copy_from_slice(&crc.to_be_bytes());
    h
}

/// CRC of a record: kind, length and the body's parts in order.
pub(crate) fn crc(kind: u8, parts: &[&[u8]]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    let len: usize = parts.iter().map(|p| p.len()).sum();
    h.update(&[kind]);
    h.update(&(len as u32).to_be_bytes());
    for p in parts {
        h.update(p);
    }
    h.finalize()
}

/// One record read back.
pub(crate) struct Record {
    pub kind: u8,
    pub offset: u64,
    pub body: Bytes,
}

/// Reads the records of a chunk file in order, skipping damaged spans (kept in
/// `damage`). `complete`: the capture has ended, so a cut tail is damage too (while
/// it runs, it is the record being written).
pub(crate) struct Reader {
    file: File,
    path: PathBuf,
    pos: u64,
    len: u64,
    complete: bool,
    /// Only records of these kinds are read whole; others are skipped by length
    /// (their checksum is not checked).
    want: &'static [u8],
    pub damage: Vec<Damage>,
}

impl Reader {
    pub fn open(path: &Path, complete: bool, want: &'static [u8]) -> Result<Reader, StoreError> {
        let file = File::open(path).map_err(|e| StoreError::io(path, e))?;
        let len = file.metadata().map_err(|e| StoreError::io(path, e))?.len();
        Ok(Reader {
            file,
            path: path.to_path_buf(),
            pos: 0,
            len,
            complete,
            want,
            damage: vec![],
        })
    }

    /// The record at `at`, if one is whole and valid there: (kind, body len,
    /// body when wanted or when `check`).
    fn try_at(&self, at: u64, check: bool) -> Result<Option<(u8, u64, Option<Bytes>)>, String> {
        if self.len - at < HEADER as u64 {
            return Err("cut inside a record header".into());
        }
        let mut h = [0u8; HEADER];
        self.file
            .read_exact_at(&mut h, at)
            .map_err(|e| e.to_string())?;
        if &h[..4] != MAGIC {
            return Err("no record starts here".into());
        }
        let kind = h[4];
        let body_len = u64::from(u32::from_be_bytes(h[5..9].try_into().unwrap()));
        if body_len > MAX_RECORD {
            return Err(format!("record length {body_len} too large"));
        }
        if body_len > self.len - at - HEADER as u64 {
            return Err(format!(
                "record of {body_len} bytes cut at the end of the file"
            ));
        }
        if !check && !self.want.contains(&kind) {
            return Ok(Some((kind, body_len, None)));
        }
        let mut body = vec![0u8; body_len as usize];
        self.file
            .read_exact_at(&mut body, at + HEADER as u64)
            .map_err(|e| e.to_string())?;
        let want = u32::from_be_bytes(h[9..13].try_into().unwrap());
        if crc(kind, &[&body]) != want {
            return Err("checksum mismatch".into());
        }
        Ok(Some((kind, body_len, Some(Bytes::from(body)))))
    }

    /// The next valid record at or after `from` (where a resync may start).
    fn resync(&self, from: u64) -> Option<u64> {
        let mut at = from;
        let mut window = vec![0u8; 64 << 10];
        while at + (HEADER as u64) <= self.len {
            let n = ((self.len - at) as usize).min(window.len());
            if self.file.read_exact_at(&mut window[..n], at).is_err() {
                return None;
            }
            let mut i = 0;
            while i + 4 <= n {
                if &window[i..i + 4] == MAGIC {
                    let cand = at + i as u64;
                    if matches!(self.try_at(cand, true), Ok(Some(_))) {
                        return Some(cand);
                    }
                }
                i += 1;
            }
            // Keep 3 bytes of overlap: a magic may straddle two windows.
            at += (n.saturating_sub(3)).max(1) as u64;
        }
        None
    }
}

impl Iterator for Reader {
    type Item = Record;

    fn next(&mut self) -> Option<Record> {
        while self.pos < self.len {
            match self.try_at(self.pos, false) {
                Ok(Some((kind, body_len, body))) => {
                    let offset = self.pos;
                    self.pos += HEADER as u64 + body_len;
                    match body {
                        Some(body) => {
                            return Some(Record { kind, offset, body });
                        }
                        None => continue,
                    }
                }
                Ok(None) => return None,
                Err(why) => match self.resync(self.pos + 1) {
                    Some(next) => {
                        self.damage.push(Damage {
                            file: self.path.clone(),
                            from: self.pos,
                            to: next,
                            why,
                        });
                        self.pos = next;
                    }
                    None => {
                        // Nothing valid after it: the file's tail.
                        if self.complete {
                            self.damage.push(Damage {
                                file: self.path.clone(),
                                from: self.pos,
                                to: self.len,
                                why,
                            });
                        }
                        self.pos = self.len;
                        return None;
                    }
                },
            }
        }
        None
    }
}

/// Connection records of a 'C' body.
pub(crate) fn decode_conns(path: &Path, r: &Record) -> Result<Vec<ConnMeta>, StoreError> {
    r.body
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            serde_json::from_slice(l).map_err(|e| StoreError::Corrupt {
                file: path.to_path_buf(),
                at: format!("connection record at byte {}", r.offset),
                detail: e.to_string(),
            })
        })
        .collect()
}

fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
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
pub(crate) fn encode_packet(f: &PacketFields<'_>, out: &mut Vec<u8>) {
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

/// Reads a packet record written by [`encode_packet`] or, older, as JSON. `at`
/// says where it is, for errors.
pub(crate) fn decode_packet(path: &Path, at: &str, b: &[u8]) -> Result<PacketRecord, StoreError> {
    let bad = |what: &str| StoreError::Corrupt {
        file: path.to_path_buf(),
        at: at.to_string(),
        detail: format!("packet record: {what}"),
    };
    if b.first() == Some(&b'{') {
        return serde_json::from_slice(b).map_err(|e| bad(&e.to_string()));
    }
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

/// The events and/or packets of one batch body (`at` names it, for errors).
pub(crate) fn decode_batch(
    path: &Path,
    at: &str,
    buf: &Bytes,
    want_events: bool,
    want_packets: bool,
) -> Result<(Vec<Event>, Vec<PacketRecord>), StoreError> {
    let bad = |detail: String| StoreError::Corrupt {
        file: path.to_path_buf(),
        at: at.to_string(),
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
                packets.push(decode_packet(path, at, &buf[r])?);
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

pub(crate) fn parse_open(body: &[u8]) -> Option<EventKind> {
    let text = std::str::from_utf8(body).ok()?;
    let mut it = text.split(' ').map(|s| s.parse::<std::net::SocketAddr>());
    match (it.next(), it.next()) {
        (Some(Ok(client)), Some(Ok(server))) => Some(EventKind::Open { client, server }),
        _ => None,
    }
}
