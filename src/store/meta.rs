//! Capture metadata: registering a new capture (claiming its id), its meta file
//! replaced whole with what could not be recorded, and the captures of a store
//! (the file layout's and the older sled database's) listed and looked up.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;

use super::{legacy, CaptureMeta, NotRecorded, Recording, Store, StoreError};

/// Disk space a recorder keeps back for closing a capture (its meta, findings and
/// lost spans) on a disk that is full: 256 KiB hold a meta with [`super::MAX_SPANS`]
/// lost spans many times over.
pub(super) const RESERVE: usize = 256 << 10;

/// Whether a capture is being recorded, as its files tell any reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorder {
    /// Its recorder closed it: it has an end.
    Closed,
    /// A recorder holds it open now.
    Recording,
    /// No end and no recorder: it stopped without closing it (killed, the
    /// machine went down). What it forwarded last may be missing.
    Gone,
}

impl Recorder {
    /// What readers say of a capture whose recorder is gone.
    pub const GONE: &'static str =
        "INCOMPLETE: the recorder stopped without closing it (killed, or the machine went down): \
         what it forwarded last may be missing";
}

impl Store {
    /// Registers a new capture; `meta.id` is replaced by the new id, returned.
    pub fn begin_capture(&self, meta: &mut CaptureMeta) -> Result<u64, StoreError> {
        // The older database is opened only to learn its last id, then closed: the
        // recorder holds no lock that readers would wait for.
        let legacy_last = if legacy::present(&self.dir) {
            match self.legacy.get() {
                Some(_) => self.legacy()?.map_or(Ok(0), |l| l.last_id())?,
                None => legacy::Legacy::open(&self.dir)?.last_id()?,
            }
        } else {
            0
        };
        let mut id = legacy_last.max(self.file_ids()?.last().copied().unwrap_or(0)) + 1;
        loop {
            meta.id = id;
            let path = self.meta_path(id);
            // create_new claims the id, even against another recorder.
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
            {
                Ok(mut f) => {
                    f.write_all(&serde_json::to_vec_pretty(meta).expect("meta serialises"))
                        .and_then(|_| f.sync_all())
                        .map_err(|e| StoreError::io(&path, e))?;
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => id += 1,
                Err(e) => return Err(StoreError::io(&path, e)),
            }
        }
        self.reserve(id);
        File::open(&self.chunk_dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| StoreError::io(&self.chunk_dir, e))?;
        self.recording
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, Recording::default());
        Ok(id)
    }

    /// Creates capture `id`'s reserve file, locked (see the module docs of
    /// [`crate::store`]). Without it (no room even for that) the capture is
    /// recorded all the same; readers will call it unclosed until it ends.
    fn reserve(&self, id: u64) {
        let path = self.reserve_path(id);
        let r = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .and_then(|mut f| {
                // SAFETY: flock on a descriptor `f` owns.
                if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                f.write_all(&vec![0u8; RESERVE])?;
                f.sync_data()?;
                Ok(f)
            });
        match r {
            Ok(f) => {
                self.reserves
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(id, f);
            }
            Err(e) => tracing::warn!(
                "{}: {e}: no disk space is kept back to close capture {id} on a full disk",
                path.display()
            ),
        }
    }

    /// Who has capture `meta` open, as the files say.
    pub fn recorder(&self, meta: &CaptureMeta) -> Recorder {
        if meta.ended_us.is_some() {
            return Recorder::Closed;
        }
        let Ok(f) = File::open(self.reserve_path(meta.id)) else {
            return Recorder::Gone;
        };
        // SAFETY: flock on a descriptor `f` owns (closing it releases the lock).
        match unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) } {
            0 => Recorder::Gone,
            _ => Recorder::Recording,
        }
    }

    /// Writes the capture's meta, with what was not recorded.
    pub fn put_meta(&self, meta: &CaptureMeta) -> Result<(), StoreError> {
        let mut m = meta.clone();
        if let Some(r) = self
            .recording
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&meta.id)
        {
            m.not_recorded = r.lost.clone();
        }
        // Packets of batches that were not written are not in the store.
        if let Some(n) = &m.not_recorded {
            m.packets = m.packets.saturating_sub(n.packets);
        }
        self.replace(
            &self.meta_path(meta.id),
            &serde_json::to_vec_pretty(&m).expect("meta serialises"),
        )
    }

    /// What could not be recorded into capture `id` by this process.
    pub fn not_recorded(&self, id: u64) -> Option<NotRecorded> {
        self.recording
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .and_then(|r| r.lost.clone())
    }

    pub fn captures(&self) -> Result<Vec<CaptureMeta>, StoreError> {
        let mut out = match self.legacy()? {
            Some(l) => l.captures()?,
            None => vec![],
        };
        for id in self.file_ids()? {
            match self.file_meta(id) {
                Ok(m) => out.push(m),
                // Deleted meanwhile.
                Err(StoreError::NoCapture(_)) => {}
                // One damaged meta file does not hide the other captures.
                Err(e @ StoreError::Corrupt { .. }) => {
                    tracing::warn!("capture {id} left out: {e}");
                }
                Err(e) => return Err(e),
            }
        }
        out.sort_by_key(|m| m.id);
        Ok(out)
    }

    fn file_meta(&self, id: u64) -> Result<CaptureMeta, StoreError> {
        let path = self.meta_path(id);
        let b = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::NoCapture(id))
            }
            Err(e) => return Err(StoreError::io(&path, e)),
        };
        serde_json::from_slice(&b).map_err(|e| StoreError::Corrupt {
            file: path,
            at: "capture meta".into(),
            detail: e.to_string(),
        })
    }

    pub fn capture(&self, id: u64) -> Result<CaptureMeta, StoreError> {
        match self.file_meta(id) {
            Err(StoreError::NoCapture(_)) => {}
            r => return r,
        }
        match self.legacy()? {
            Some(l) => l.capture(id)?.ok_or(StoreError::NoCapture(id)),
            None => Err(StoreError::NoCapture(id)),
        }
    }
}
