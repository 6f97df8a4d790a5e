//! Reading a capture back: its connections, its events and packet records in time
//! order (damaged spans of the chunk file skipped and listed), its findings. Reads
//! create and write nothing, and see what a running recorder synced so far.

use super::chunk::{self, Damage, REC_CONNS, REC_EVENTS, REC_LOST};
use super::{findings, ConnMeta, Event, FindingsFile, PacketRecord, Store, StoreError};
use crate::finding::Finding;

/// The events and packets of one batch record.
type Decoded = (Vec<Event>, Vec<PacketRecord>);

impl Store {
    fn reader(&self, id: u64, want: &'static [u8]) -> Result<Option<chunk::Reader>, StoreError> {
        let meta = self.capture(id)?;
        let path = self.chunk_path(id);
        if !path.exists() {
            return Ok(None);
        }
        chunk::Reader::open(&path, meta.ended_us.is_some(), want).map(Some)
    }

    pub fn conns(&self, id: u64) -> Result<Vec<ConnMeta>, StoreError> {
        if !self.is_file_capture(id) {
            return match self.legacy()? {
                Some(l) => l.conns(id),
                None => Err(StoreError::NoCapture(id)),
            };
        }
        let mut by_id: std::collections::BTreeMap<u64, ConnMeta> = Default::default();
        if let Some(rd) = self.reader(id, &[REC_CONNS])? {
            let path = self.chunk_path(id);
            for r in rd {
                if r.kind == REC_CONNS {
                    for c in chunk::decode_conns(&path, &r)? {
                        by_id.insert(c.conn, c);
                    }
                }
            }
        }
        Ok(by_id.into_values().collect())
    }

    /// The capture's events in time order. Damaged spans of the chunk file are
    /// skipped ([`Store::damage`] lists them).
    pub fn events(&self, id: u64) -> Box<dyn Iterator<Item = Result<Event, StoreError>> + '_> {
        self.batches(id, true, |(e, _)| e)
    }

    pub fn packets(
        &self,
        id: u64,
    ) -> Box<dyn Iterator<Item = Result<PacketRecord, StoreError>> + '_> {
        self.batches(id, false, |(_, p)| p)
    }

    fn batches<T: 'static>(
        &self,
        id: u64,
        want_events: bool,
        pick: fn(Decoded) -> Vec<T>,
    ) -> Box<dyn Iterator<Item = Result<T, StoreError>> + '_> {
        if !self.is_file_capture(id) {
            let r = match self.legacy() {
                Ok(Some(l)) => l.read(id, want_events).map(pick),
                // No such capture: nothing to iterate (callers ask `capture` first).
                Ok(None) => Ok(vec![]),
                Err(e) => Err(e),
            };
            return match r {
                Ok(v) => Box::new(v.into_iter().map(Ok)),
                Err(e) => Box::new(std::iter::once(Err(e))),
            };
        }
        let rd = match self.reader(id, &[REC_EVENTS]) {
            Ok(Some(rd)) => rd,
            Ok(None) => return Box::new(std::iter::empty()),
            Err(e) => return Box::new(std::iter::once(Err(e))),
        };
        let path = self.chunk_path(id);
        Box::new(rd.filter(|r| r.kind == REC_EVENTS).flat_map(move |r| {
            let at = format!("batch at byte {}", r.offset);
            match chunk::decode_batch(&path, &at, &r.body, want_events, !want_events) {
                Ok(x) => pick(x).into_iter().map(Ok).collect::<Vec<_>>(),
                Err(e) => vec![Err(e)],
            }
        }))
    }

    /// The damaged spans of a capture's chunk file (empty when it reads whole). A
    /// running capture's last record being written is not damage.
    pub fn damage(&self, id: u64) -> Result<Vec<Damage>, StoreError> {
        if !self.is_file_capture(id) {
            return Ok(vec![]);
        }
        let Some(mut rd) = self.reader(id, &[REC_EVENTS, REC_CONNS, REC_LOST])? else {
            return Ok(vec![]);
        };
        for _ in rd.by_ref() {}
        Ok(rd.damage)
    }

    /// The findings of a capture: for a capture in the file layout the example
    /// findings of each group ([`Store::finding_groups`] has the counts), for an
    /// older one every finding.
    pub fn findings(&self, id: u64) -> Result<Vec<Finding>, StoreError> {
        if !self.is_file_capture(id) {
            return match self.legacy()? {
                Some(l) => l.findings(id),
                None => Err(StoreError::NoCapture(id)),
            };
        }
        Ok(self.finding_groups(id)?.examples())
    }

    /// The capture's findings aggregated per (edge, rule, field path).
    pub fn finding_groups(&self, id: u64) -> Result<FindingsFile, StoreError> {
        if !self.is_file_capture(id) {
            let all = match self.legacy()? {
                Some(l) => l.findings(id)?,
                None => return Err(StoreError::NoCapture(id)),
            };
            let mut agg = findings::Aggregate::default();
            for f in &all {
                agg.add(f);
            }
            return Ok(agg.file);
        }
        let path = self.findings_path(id);
        match std::fs::read(&path) {
            Ok(b) => FindingsFile::parse(&b).map_err(|e| StoreError::Corrupt {
                file: path,
                at: "findings".into(),
                detail: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(FindingsFile::default()),
            Err(e) => Err(StoreError::io(&path, e)),
        }
    }
}
