//! Stores written by earlier edgetap versions: a sled database in the store folder
//! (trees `captures`, `conns`, `findings`, and `log`, which indexes unframed batch
//! records in `chunks/CAP.bin`; older still, one key per event and per packet in
//! trees `events` and `packets`). Read only: new captures never go to sled. The
//! only module that imports sled.
//!
//! ```text
//! captures  cap:u64                                 → JSON CaptureMeta
//! conns     cap:u64 conn:u64                        → JSON ConnMeta
//! log       cap:u64 batch:u64                       → offset:u64 len:u64
//! findings  cap:u64 n:u64                           → JSON Finding
//! events    cap:u64 time:u64 seq:u64                → kind:u8 conn:u64 body
//! packets   cap:u64 …                               → JSON PacketRecord
//! ```

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::chunk::{decode_batch, parse_open, EV_DATA, EV_END, EV_FIN, EV_OPEN};
use super::findings::StoredFinding;
use super::{CaptureMeta, ConnMeta, Event, EventKind, PacketRecord, StoreError};
use crate::finding::{Finding, Side};

pub(crate) struct Legacy {
    db: sled::Db,
    chunk_dir: PathBuf,
    captures: sled::Tree,
    log: sled::Tree,
    conns: sled::Tree,
    events: sled::Tree,
    packets: sled::Tree,
    findings: sled::Tree,
}

/// Whether `dir` holds a sled database.
pub(crate) fn present(dir: &Path) -> bool {
    dir.join("db").is_file() && dir.join("conf").is_file()
}

fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Legacy {
    pub fn open(dir: &Path) -> Result<Legacy, StoreError> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(32 << 20)
            .open()
            .map_err(|e| StoreError::Legacy {
                dir: dir.to_path_buf(),
                detail: e.to_string(),
            })?;
        let t = |name: &str| {
            db.open_tree(name).map_err(|e| StoreError::Legacy {
                dir: dir.to_path_buf(),
                detail: e.to_string(),
            })
        };
        Ok(Legacy {
            chunk_dir: dir.join("chunks"),
            captures: t("captures")?,
            log: t("log")?,
            conns: t("conns")?,
            events: t("events")?,
            packets: t("packets")?,
            findings: t("findings")?,
            db,
        })
    }

    fn err(&self, e: sled::Error) -> StoreError {
        StoreError::Legacy {
            dir: self
                .chunk_dir
                .parent()
                .unwrap_or(Path::new("."))
                .to_path_buf(),
            detail: e.to_string(),
        }
    }

    fn corrupt(&self, tree: &str, k: &[u8], detail: String) -> StoreError {
        StoreError::Corrupt {
            file: self.chunk_dir.parent().unwrap_or(Path::new(".")).join("db"),
            at: format!("sled tree {tree}, key {}", hex(k)),
            detail,
        }
    }

    fn json<T: serde::de::DeserializeOwned>(
        &self,
        tree: &str,
        k: &[u8],
        v: &[u8],
    ) -> Result<T, StoreError> {
        serde_json::from_slice(v).map_err(|e| self.corrupt(tree, k, e.to_string()))
    }

    pub fn last_id(&self) -> Result<u64, StoreError> {
        Ok(self
            .captures
            .last()
            .map_err(|e| self.err(e))?
            .map(|(k, _)| be_u64(&k))
            .unwrap_or(0))
    }

    pub fn captures(&self) -> Result<Vec<CaptureMeta>, StoreError> {
        self.captures
            .iter()
            .map(|r| {
                let (k, v) = r.map_err(|e| self.err(e))?;
                self.json("captures", &k, &v)
            })
            .collect()
    }

    pub fn capture(&self, id: u64) -> Result<Option<CaptureMeta>, StoreError> {
        match self
            .captures
            .get(id.to_be_bytes())
            .map_err(|e| self.err(e))?
        {
            Some(v) => Ok(Some(self.json("captures", &id.to_be_bytes(), &v)?)),
            None => Ok(None),
        }
    }

    pub fn conns(&self, id: u64) -> Result<Vec<ConnMeta>, StoreError> {
        self.conns
            .scan_prefix(id.to_be_bytes())
            .map(|r| {
                let (k, v) = r.map_err(|e| self.err(e))?;
                self.json("conns", &k, &v)
            })
            .collect()
    }

    pub fn findings(&self, id: u64) -> Result<Vec<Finding>, StoreError> {
        self.findings
            .scan_prefix(id.to_be_bytes())
            .map(|r| {
                let (k, v) = r.map_err(|e| self.err(e))?;
                let f: StoredFinding = self.json("findings", &k, &v)?;
                Ok(f.into_finding())
            })
            .collect()
    }

    /// Events (`want_events`) or packets of a capture, in order.
    pub fn read(
        &self,
        id: u64,
        want_events: bool,
    ) -> Result<(Vec<Event>, Vec<PacketRecord>), StoreError> {
        let (mut events, mut packets) = (vec![], vec![]);
        if want_events {
            for r in self.events.scan_prefix(id.to_be_bytes()) {
                let (k, v) = r.map_err(|e| self.err(e))?;
                events.push(self.old_event(&k, &v)?);
            }
        } else {
            for r in self.packets.scan_prefix(id.to_be_bytes()) {
                let (k, v) = r.map_err(|e| self.err(e))?;
                packets.push(self.json("packets", &k, &v)?);
            }
        }
        let path = self.chunk_dir.join(format!("{id}.bin"));
        let mut file: Option<File> = None;
        for r in self.log.scan_prefix(id.to_be_bytes()) {
            let (k, v) = r.map_err(|e| self.err(e))?;
            if v.len() != 16 {
                return Err(self.corrupt("log", &k, "bad index entry".into()));
            }
            let (offset, len) = (be_u64(&v[..8]), be_u64(&v[8..]));
            let f = match &mut file {
                Some(f) => f,
                None => file.insert(File::open(&path).map_err(|e| StoreError::io(&path, e))?),
            };
            let size = f.metadata().map_err(|e| StoreError::io(&path, e))?.len();
            if offset.saturating_add(len) > size {
                return Err(StoreError::Corrupt {
                    file: path.clone(),
                    at: format!("batch at byte {offset}"),
                    detail: format!("{len} bytes indexed, the file ends at {size}"),
                });
            }
            let mut buf = vec![0u8; len as usize];
            f.read_exact_at(&mut buf, offset)
                .map_err(|e| StoreError::io(&path, e))?;
            let (e, p) = decode_batch(
                &path,
                &format!("batch at byte {offset}"),
                &Bytes::from(buf),
                want_events,
                !want_events,
            )?;
            events.extend(e);
            packets.extend(p);
        }
        Ok((events, packets))
    }

    /// An event of the oldest layout (tree `events`, bytes inline).
    fn old_event(&self, k: &[u8], v: &[u8]) -> Result<Event, StoreError> {
        let bad = |detail: &str| self.corrupt("events", k, detail.into());
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

    /// Removes a legacy capture's records (its chunk file is removed by the caller).
    pub fn delete(&self, id: u64) -> Result<bool, StoreError> {
        if self.capture(id)?.is_none() {
            return Ok(false);
        }
        for tree in [
            &self.conns,
            &self.log,
            &self.events,
            &self.packets,
            &self.findings,
        ] {
            let mut batch = sled::Batch::default();
            for k in tree.scan_prefix(id.to_be_bytes()).keys() {
                batch.remove(k.map_err(|e| self.err(e))?);
            }
            tree.apply_batch(batch).map_err(|e| self.err(e))?;
        }
        self.captures
            .remove(id.to_be_bytes())
            .map_err(|e| self.err(e))?;
        self.db.flush().map_err(|e| self.err(e))?;
        Ok(true)
    }
}
