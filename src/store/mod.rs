//! The capture store: a folder of plain files that one process records into and any
//! number of processes read, during the recording too.
//!
//! Every proxy run is a capture. What the proxy forwarded is kept as a stream of
//! [`Event`]s (connection opened, chunk of bytes, half-close, end), next to the MQTT
//! packets decoded from them, so a capture can be analyzed again
//! (`analyze::stored::analyze_capture`) or exported ([`export::export_pcapng`]).
//!
//! ```text
//! STORE/                       0700
//!   chunks/                    0700
//!     CAP.bin                  0600  append-only framed records (see [`chunk`]):
//!                                    event batches, connection records, lost spans
//!     CAP.meta.json            0600  CaptureMeta, replaced whole (write + rename)
//!                                    after every batch
//!     CAP.findings.json        0600  findings aggregated per (edge, rule, field
//!                                    path), replaced whole when it changed, at
//!                                    most once a second (see [`findings`])
//!   db, conf, blobs/ …               a sled database of older edgetap versions,
//!                                    read only (see [`legacy`])
//! ```
//!
//! **Why no longer sled for new captures** (sled stays, read only, for stores of
//! older versions: [`legacy`]). The bytes already lived in chunk files beside sled;
//! sled held the index, the capture and connection records and one record per
//! finding. Three things of issue 10 could not be had with it: sled takes an
//! exclusive lock on the folder, so nothing could read a capture while the proxy
//! recorded it; it writes on open (its log and config), so a store on a full disk
//! could not even be opened to see what was recorded; and its per-key
//! copy-on-write cost (with one record per finding) made the store 9.6 bytes on disk
//! per byte forwarded on finding-heavy traffic, and the writer the proxy's
//! bottleneck. What is left to index (a few records per capture) needs no database:
//! checksummed append-only records and two small JSON files replaced by rename.
//!
//! **Reading while recording.** Nothing is locked: the recorder only appends to
//! `CAP.bin` (each record with one `writev`, behind a checksum) and replaces the
//! JSON files by rename, so a reader sees whole files and reads the chunk file up
//! to the last whole record. `captures list/show/export` and `analyze --capture`
//! work on a live capture and see what was synced so far (the last 100 ms may be
//! missing). Readers create and write nothing: a store on a full disk still opens.
//!
//! **Durability.** [`Store::write`] appends a batch and `fdatasync`s the chunk file
//! before it returns (the proxy then releases the chunks' buffer budget). The
//! meta and findings files are not synced each time: after a power cut they may be
//! older than the chunk file, which holds everything.
//!
//! **Write errors** (a full disk above all): a batch that cannot be written is cut
//! back off the file (so the next record starts where it should) and counted as not
//! recorded: bytes, events and time span, in [`CaptureMeta::not_recorded`] (and as
//! an 'L' record in the chunk file once writing works again). The next batch is
//! tried as usual, so recording resumes by itself when space returns. The caller
//! decides whether forwarding goes on (`--on-store-error`).
//!
//! **Secrets.** Unless [`WriteBatch::keep_secrets`] is set, a CONNECT's password and
//! user name are overwritten before they reach the disk, in the decoded packet
//! record and in the raw chunk bytes in place, by as many `*` as they had bytes
//! (the password is the last field of CONNECT and the user name comes right before
//! it, so the stream's framing and lengths stay valid and the capture still
//! decodes). The bytes are found by stream offset within the batch that holds the
//! CONNECT's last byte. An MQTT 5 CONNECT's or AUTH's Authentication Data is
//! overwritten the same way ([`secrets`]). A CONNECT sent in pieces may have its
//! first part in an earlier batch: before each batch goes to disk, the recorder has
//! the credentials that an incomplete CONNECT or AUTH already holds overwritten
//! ([`WriteBatch::mask_secrets`]), the rest when it comes.
//!
//! `seq` numbers the events of a capture in the order the analysis task received
//! them; it is the `packet` number findings carry. The proxy records `time_us` never
//! below the previous event's, so seq order is time order across batches too, and
//! within one direction of one connection both grow: stored order is stream order.

mod batch;
pub mod chunk;
pub mod export;
pub mod findings;
mod legacy;
mod record;
pub mod replay;
mod secrets;

use batch::Pending;
pub use batch::WriteBatch;
pub use record::{
    packet_record, CaptureMeta, ConnMeta, Event, EventKind, NotRecorded, PacketRecord, FILLER,
    MAX_SPANS,
};

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

pub use chunk::{Damage, LostSpan};
use chunk::{PacketFields, REC_CONNS, REC_EVENTS, REC_LOST};
pub use findings::{FindingGroup, FindingsFile};

use crate::finding::Finding;
pub use crate::redact::REDACTED;

/// Where `--store` points when not given.
pub const DEFAULT_DIR: &str = "edgetap-store";

/// What a store error says to do, by OS error.
fn io_hint(e: &std::io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(28) => " (the disk is full: free space; a proxy resumes recording by itself)",
        Some(13) | Some(1) => " (permission denied: run as the store's owner or fix its mode)",
        Some(2) => " (missing: the store folder is incomplete or the capture was deleted)",
        Some(30) => " (read-only file system)",
        _ => "",
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {0} does not exist: give --store the folder a proxy recorded into (`edgetap proxy --store DIR` creates one)")]
    Missing(PathBuf),
    #[error(
        "{0} is not an edgetap store (no chunks/ folder and no older sled database): check --store"
    )]
    NotAStore(PathBuf),
    /// The OS error is part of the message (not a source: it would print twice).
    #[error("{}: {err}{}", path.display(), io_hint(err))]
    File { path: PathBuf, err: std::io::Error },
    #[error("store {}: the older captures' sled database cannot be opened: {detail} (an older edgetap may be recording into it: stop it, or copy the folder and read the copy)", dir.display())]
    Legacy { dir: PathBuf, detail: String },
    #[error("capture {0} not found (`edgetap captures list` shows the ids)")]
    NoCapture(u64),
    #[error("{}, {at}: {detail}", file.display())]
    Corrupt {
        file: PathBuf,
        at: String,
        detail: String,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl StoreError {
    pub(crate) fn io(path: &Path, err: std::io::Error) -> StoreError {
        StoreError::File {
            path: path.to_path_buf(),
            err,
        }
    }

    /// The disk (or quota) is full.
    pub fn is_no_space(&self) -> bool {
        matches!(self, StoreError::File { err, .. } if err.raw_os_error() == Some(28) || err.raw_os_error() == Some(122))
    }
}

/// The events and packets of one batch record.
type Decoded = (Vec<Event>, Vec<PacketRecord>);

/// A capture's chunk file, open for appending.
/// The newest bytes of a chunk file the page cache keeps ([`ChunkFile::release_synced`]).
const KEEP_CACHED: u64 = 64 << 20;

struct ChunkFile {
    file: File,
    path: PathBuf,
    len: u64,
    /// The file's pages before this offset are synced and were handed back to the
    /// kernel ([`ChunkFile::release_synced`]).
    released: u64,
}

impl ChunkFile {
    /// Tells the kernel that the synced pages of the file more than `keep` bytes
    /// behind its end will not be read soon (`POSIX_FADV_DONTNEED`), so it frees
    /// them rather than keeping them cached.
    ///
    /// A recorder writes hundreds of megabytes that nobody reads back for a while;
    /// cached, they evict what the machine's other programs use, and every new write
    /// lands on a page the kernel has never touched. Freed, later batches reuse the
    /// same pages: the store writer's CPU time for 3 x 50,000 reports of 1 KB fell
    /// from 16-24 to 9-11 ticks (`bench/proxy.sh`'s payload, 2 shared cores), most
    /// of it `copy_folio_from_iter_atomic`. The last [`KEEP_CACHED`] stay cached:
    /// what a proxy re-reads at once (its final report, when the live judge
    /// skipped; `captures show` of the capture being recorded) comes from memory.
    /// Only advice: failure changes nothing but the cost.
    fn release_synced(&mut self, keep: u64) {
        const PAGE: u64 = 4096;
        let end = self.len.saturating_sub(keep) / PAGE * PAGE;
        if end <= self.released {
            return;
        }
        // The kernel frees only the cached folios wholly inside the range, and a
        // large folio (up to 2 MiB) may straddle the end of the last range: each
        // range starts that much before where the last one ended.
        let start = self.released.saturating_sub(2 << 20);
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            // SAFETY: plain system call on a descriptor this struct owns.
            unsafe {
                libc::posix_fadvise(
                    self.file.as_raw_fd(),
                    start as libc::off_t,
                    (end - start) as libc::off_t,
                    libc::POSIX_FADV_DONTNEED,
                );
            }
        }
        self.released = end;
    }
}

/// What the recording process keeps per capture.
#[derive(Default)]
struct Recording {
    findings: findings::Aggregate,
    lost: Option<NotRecorded>,
    /// Lost spans not yet noted in the chunk file.
    unnoted: Vec<LostSpan>,
    findings_written: Option<std::time::Instant>,
}

/// How often a recording capture's findings file is rewritten (when it changed).
const FINDINGS_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

pub struct Store {
    dir: PathBuf,
    /// `chunks/`: the files of each capture.
    chunk_dir: PathBuf,
    /// The sled database of older versions, opened on first use.
    legacy: OnceLock<Option<Result<legacy::Legacy, String>>>,
    writers: Mutex<HashMap<u64, ChunkFile>>,
    recording: Mutex<HashMap<u64, Recording>>,
    /// Store CONNECT passwords as sent (`--store-secrets`).
    keep_secrets: AtomicBool,
    /// Notified at every failed write (for `--on-store-error stop`).
    failed: Arc<tokio::sync::Notify>,
    /// The last summary files write failed (said once).
    meta_failing: AtomicBool,
}

impl Store {
    /// Opens the store in `dir` for recording, creating it (0700) when missing.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        for d in [dir.to_path_buf(), dir.join("chunks")] {
            if !d.is_dir() {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&d)
                    .map_err(|e| StoreError::io(&d, e))?;
            }
            // A store holds what devices sent: its folders are the owner's alone.
            let mode = std::fs::metadata(&d)
                .map_err(|e| StoreError::io(&d, e))?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700))
                    .map_err(|e| StoreError::io(&d, e))?;
            }
            // Files an older edgetap wrote readable by all (best effort).
            for f in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                if let Ok(m) = f.metadata() {
                    if m.is_file() && m.permissions().mode() & 0o077 != 0 {
                        let _ = std::fs::set_permissions(
                            f.path(),
                            std::fs::Permissions::from_mode(0o600),
                        );
                    }
                }
            }
        }
        Ok(Store::new(dir))
    }

    /// Opens an existing store for reading; creates and writes nothing. A missing
    /// folder is an error (a typo must not look like an empty store).
    pub fn open_existing(dir: &Path) -> Result<Store, StoreError> {
        if !dir.exists() {
            return Err(StoreError::Missing(dir.to_path_buf()));
        }
        if !dir.is_dir() || (!dir.join("chunks").is_dir() && !legacy::present(dir)) {
            return Err(StoreError::NotAStore(dir.to_path_buf()));
        }
        Ok(Store::new(dir))
    }

    fn new(dir: &Path) -> Store {
        Store {
            dir: dir.to_path_buf(),
            chunk_dir: dir.join("chunks"),
            legacy: OnceLock::new(),
            writers: Mutex::new(HashMap::new()),
            recording: Mutex::new(HashMap::new()),
            keep_secrets: AtomicBool::new(false),
            failed: Arc::new(tokio::sync::Notify::new()),
            meta_failing: AtomicBool::new(false),
        }
    }

    /// Store CONNECT passwords as sent (`--store-secrets`); by default they are
    /// overwritten before they reach the disk.
    pub fn set_keep_secrets(&self, keep: bool) {
        self.keep_secrets.store(keep, Ordering::Relaxed);
    }

    pub fn keeps_secrets(&self) -> bool {
        self.keep_secrets.load(Ordering::Relaxed)
    }

    /// Completes (once per failure; a failure before the wait is kept) when a write
    /// fails.
    pub fn failures(&self) -> Arc<tokio::sync::Notify> {
        self.failed.clone()
    }

    /// Called by the recorder when a write failed.
    pub fn signal_failure(&self) {
        self.failed.notify_one();
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn legacy(&self) -> Result<Option<&legacy::Legacy>, StoreError> {
        let l = self.legacy.get_or_init(|| {
            legacy::present(&self.dir)
                .then(|| legacy::Legacy::open(&self.dir).map_err(|e| e.to_string()))
        });
        match l {
            None => Ok(None),
            Some(Ok(l)) => Ok(Some(l)),
            Some(Err(e)) => Err(StoreError::Legacy {
                dir: self.dir.clone(),
                detail: e.clone(),
            }),
        }
    }

    fn meta_path(&self, cap: u64) -> PathBuf {
        self.chunk_dir.join(format!("{cap}.meta.json"))
    }

    fn findings_path(&self, cap: u64) -> PathBuf {
        self.chunk_dir.join(format!("{cap}.findings.json"))
    }

    pub fn chunk_path(&self, cap: u64) -> PathBuf {
        self.chunk_dir.join(format!("{cap}.bin"))
    }

    /// Ids of the captures in the file layout.
    fn file_ids(&self) -> Result<Vec<u64>, StoreError> {
        let rd = match std::fs::read_dir(&self.chunk_dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(StoreError::io(&self.chunk_dir, e)),
        };
        let mut ids = vec![];
        for ent in rd {
            let ent = ent.map_err(|e| StoreError::io(&self.chunk_dir, e))?;
            let name = ent.file_name();
            if let Some(id) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".meta.json"))
                .and_then(|n| n.parse::<u64>().ok())
            {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        Ok(ids)
    }

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
        File::open(&self.chunk_dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| StoreError::io(&self.chunk_dir, e))?;
        self.recording
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, Recording::default());
        Ok(id)
    }

    /// Replaces `path` with `bytes` whole (a reader sees the old or the new file).
    fn replace(&self, path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
        let tmp = path.with_extension("tmp");
        let r = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| f.write_all(bytes))
            .and_then(|_| std::fs::rename(&tmp, path));
        if let Err(e) = r {
            let _ = std::fs::remove_file(&tmp);
            return Err(StoreError::io(path, e));
        }
        Ok(())
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

    /// Appends a batch, syncs it, then writes the capture's meta and findings. A
    /// batch that cannot be written is counted as not recorded (see the module
    /// docs) and the error returned; the store stays usable for the next one.
    pub fn write(&self, mut batch: WriteBatch, meta: &CaptureMeta) -> Result<(), StoreError> {
        // Findings are kept in memory, so none is lost with a failed batch.
        {
            let mut rec = self.recording.lock().unwrap_or_else(|e| e.into_inner());
            for (cap, f) in batch.findings.drain(..) {
                rec.entry(cap).or_default().findings.add(&f);
            }
        }
        if let Err(e) = self.append(&mut batch) {
            let span = batch.lost_span(e.to_string(), meta.ended_us.unwrap_or(meta.started_us));
            {
                let mut rec = self.recording.lock().unwrap_or_else(|e| e.into_inner());
                let r = rec.entry(meta.id).or_default();
                r.lost
                    .get_or_insert_with(NotRecorded::default)
                    .add(span.clone());
                r.unnoted.push(span);
            }
            // Small files may still fit; best effort.
            let _ = self.put_meta(meta);
            return Err(e);
        }
        // The bytes are safe; the summary files are only rewritten at the next
        // batch if this fails (said once, not at every batch).
        match self
            .put_findings(meta.id, meta.ended_us.is_some())
            .and_then(|_| self.put_meta(meta))
        {
            Ok(()) => {
                if self.meta_failing.swap(false, Ordering::Relaxed) {
                    tracing::warn!("capture {}: summary files written again", meta.id);
                }
            }
            Err(e) => {
                if !self.meta_failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "capture {}: {e}; the recorded bytes are safe, the capture's summary (meta, findings) is retried with every batch",
                        meta.id
                    );
                }
            }
        }
        Ok(())
    }

    /// Replaces capture `cap`'s stored findings with the groups `agg`: the proxy's
    /// final report judged the capture again from the store because its live judge
    /// fell behind (skipped messages), so the live groups lack some.
    pub fn replace_findings(
        &self,
        cap: u64,
        mut agg: findings::Aggregate,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_vec(&agg.file).expect("findings serialise");
        if let Some(r) = self
            .recording
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(&cap)
        {
            agg.dirty = false;
            r.findings = agg;
        }
        self.replace(&self.findings_path(cap), &json)
    }

    /// Writes what the once-a-second limit held back (the findings files of the
    /// captures being recorded), for a recorder that has gone quiet.
    pub fn catch_up(&self) -> Result<(), StoreError> {
        let caps: Vec<u64> = self
            .recording
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .copied()
            .collect();
        for cap in caps {
            self.put_findings(cap, false)?;
        }
        Ok(())
    }

    /// Rewrites the findings file when it changed, at most every
    /// [`FINDINGS_EVERY`] (and at the end of the capture, `last`).
    fn put_findings(&self, cap: u64, last: bool) -> Result<(), StoreError> {
        let json = {
            let mut rec = self.recording.lock().unwrap_or_else(|e| e.into_inner());
            match rec.get_mut(&cap) {
                Some(r)
                    if r.findings.dirty
                        && (last
                            || r.findings_written
                                .is_none_or(|t| t.elapsed() >= FINDINGS_EVERY)) =>
                {
                    r.findings.dirty = false;
                    r.findings_written = Some(std::time::Instant::now());
                    serde_json::to_vec(&r.findings.file).expect("findings serialise")
                }
                _ => return Ok(()),
            }
        };
        let r = self.replace(&self.findings_path(cap), &json);
        if r.is_err() {
            if let Some(r) = self
                .recording
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_mut(&cap)
            {
                r.findings.dirty = true;
            }
        }
        r
    }

    /// Appends the batch's records to the chunk files and syncs them.
    fn append(&self, batch: &mut WriteBatch) -> Result<(), StoreError> {
        batch
            .log
            .sort_by_key(|e| (e.cap, e.time_us.max(0) as u64, e.seq));
        let mut caps: Vec<u64> = batch.log.iter().map(|e| e.cap).collect();
        caps.extend(batch.conns.iter().map(|c| c.0));
        caps.dedup();
        caps.sort_unstable();
        caps.dedup();
        let mut writers = self.writers.lock().unwrap_or_else(|e| e.into_inner());
        for cap in caps {
            if let std::collections::hash_map::Entry::Vacant(v) = writers.entry(cap) {
                v.insert(self.open_chunk_file(cap)?);
            }
            let cf = writers.get_mut(&cap).expect("just inserted");
            let unnoted: Vec<LostSpan> = self
                .recording
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&cap)
                .map(|r| r.unnoted.clone())
                .unwrap_or_default();
            let r = append_records(cf, batch, cap, &unnoted).and_then(|n| {
                cf.file
                    .sync_data()
                    .map(|_| n)
                    .map_err(|e| StoreError::io(&cf.path, e))
            });
            match r {
                Ok(n) => {
                    cf.len += n;
                    cf.release_synced(KEEP_CACHED);
                    if let Some(r) = self
                        .recording
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .get_mut(&cap)
                    {
                        r.unnoted.clear();
                    }
                }
                Err(e) => {
                    // Cut a partial record off, so the next one starts where it
                    // should (a reader would skip it anyway: its checksum fails).
                    let _ = cf.file.set_len(cf.len);
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    fn open_chunk_file(&self, cap: u64) -> Result<ChunkFile, StoreError> {
        let path = self.chunk_path(cap);
        let existed = path.exists();
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| StoreError::io(&path, e))?;
        if !existed {
            // The new name itself must survive a crash.
            File::open(&self.chunk_dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| StoreError::io(&self.chunk_dir, e))?;
        }
        let len = file.metadata().map_err(|e| StoreError::io(&path, e))?.len();
        Ok(ChunkFile {
            file,
            path,
            len,
            released: 0,
        })
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

    /// Whether `id` is in the file layout (else in the older sled database).
    fn is_file_capture(&self, id: u64) -> bool {
        self.meta_path(id).exists()
    }

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

    /// Removes a capture and everything recorded with it.
    pub fn delete(&self, id: u64) -> Result<(), StoreError> {
        if self.is_file_capture(id) {
            for p in [self.meta_path(id), self.findings_path(id)] {
                match std::fs::remove_file(&p) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(StoreError::io(&p, e))
                    }
                    _ => {}
                }
            }
        } else if !self.legacy()?.map_or(Ok(false), |l| l.delete(id))? {
            return Err(StoreError::NoCapture(id));
        }
        self.writers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        let path = self.chunk_path(id);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(StoreError::io(&path, e)),
            _ => Ok(()),
        }
    }

    /// Every write is synced as it is made; kept for callers of the older API.
    pub fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Appends capture `cap`'s records of `batch` (lost spans first, then events, then
/// connection records) with one `writev`. Returns the bytes written.
fn append_records(
    cf: &mut ChunkFile,
    batch: &WriteBatch,
    cap: u64,
    unnoted: &[LostSpan],
) -> Result<u64, StoreError> {
    let mut heads: Vec<Vec<u8>> = vec![];
    // Lost spans, one 'L' record each.
    let lost: Vec<Vec<u8>> = unnoted
        .iter()
        .map(|s| serde_json::to_vec(s).expect("span serialises"))
        .collect();
    for l in &lost {
        heads.push(chunk::header(REC_LOST, l.len(), chunk::crc(REC_LOST, &[l])).to_vec());
    }
    // Events: headers and packet records in `out`, chunk bytes from where they are.
    let evs: Vec<&Pending> = batch.log.iter().filter(|e| e.cap == cap).collect();
    let mut out: Vec<u8> = Vec::with_capacity(64 * evs.len());
    let mut cuts: Vec<usize> = vec![];
    for e in &evs {
        encode_event(e, &batch.pk, &mut out, &mut cuts);
    }
    let mut parts: Vec<&[u8]> = vec![];
    let mut from = 0;
    for (e, cut) in evs.iter().zip(&cuts) {
        if !e.body.is_empty() {
            parts.push(&out[from..*cut]);
            parts.push(&e.body);
            from = *cut;
        }
    }
    parts.push(&out[from..]);
    let ev_len: usize = parts.iter().map(|p| p.len()).sum();
    let ev_head = chunk::header(REC_EVENTS, ev_len, chunk::crc(REC_EVENTS, &parts));
    let conns: Vec<u8> = batch
        .conns
        .iter()
        .filter(|c| c.0 == cap)
        .flat_map(|c| c.1.iter().copied())
        .collect();
    let c_head = chunk::header(REC_CONNS, conns.len(), chunk::crc(REC_CONNS, &[&conns]));

    let mut slices: Vec<std::io::IoSlice<'_>> = vec![];
    for (h, l) in heads.iter().zip(&lost) {
        slices.push(std::io::IoSlice::new(h));
        slices.push(std::io::IoSlice::new(l));
    }
    if !evs.is_empty() {
        slices.push(std::io::IoSlice::new(&ev_head));
        slices.extend(parts.iter().map(|p| std::io::IoSlice::new(p)));
    }
    if !conns.is_empty() {
        slices.push(std::io::IoSlice::new(&c_head));
        slices.push(std::io::IoSlice::new(&conns));
    }
    write_all_vectored(&mut cf.file, &mut slices).map_err(|e| StoreError::io(&cf.path, e))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::finding::Side;
    use bytes::Bytes;

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

    fn temp(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("edgetap-store-unit-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn binary_packet_records_round_trip_and_json_ones_still_read() {
        let p = Path::new("x");
        for n in 0..5 {
            let r = rec(n);
            let mut b = vec![];
            chunk::encode_packet(&r.fields(), &mut b);
            assert_eq!(chunk::decode_packet(p, "k", &b).unwrap(), r);
            let json = serde_json::to_vec(&r).unwrap();
            assert!(json.len() > b.len());
            assert_eq!(chunk::decode_packet(p, "k", &json).unwrap(), r);
            // Truncated binary records are reported, not misread.
            assert!(chunk::decode_packet(p, "k", &b[..b.len() - 1]).is_err());
        }
    }

    fn ev(seq: u64) -> Event {
        Event {
            time_us: seq as i64,
            seq,
            conn: 7,
            kind: EventKind::Data {
                side: Side::Client,
                bytes: Bytes::from(vec![seq as u8; 3]),
            },
        }
    }

    #[test]
    fn packets_given_out_of_event_order_stay_with_their_event() {
        let dir = temp("order");
        let store = Store::open(&dir).unwrap();
        let mut meta = CaptureMeta::default();
        let cap = store.begin_capture(&mut meta).unwrap();
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
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Three batches; the middle one's bytes are overwritten (or the file is cut in
    /// the last one): the other batches are read, the damaged span is reported.
    #[test]
    fn a_damaged_record_loses_only_its_own_events() {
        let dir = temp("damage");
        let store = Store::open(&dir).unwrap();
        let mut meta = CaptureMeta::default();
        let cap = store.begin_capture(&mut meta).unwrap();
        let mut ends = vec![];
        for seq in 1..=3 {
            let mut b = WriteBatch::default();
            b.event(cap, &ev(seq));
            store.write(b, &meta).unwrap();
            ends.push(std::fs::metadata(store.chunk_path(cap)).unwrap().len());
        }
        meta.ended_us = Some(9);
        store.put_meta(&meta).unwrap();
        let path = store.chunk_path(cap);
        let whole = std::fs::read(&path).unwrap();
        // One byte of the second record's body flipped: checksum mismatch.
        let mut bad = whole.clone();
        bad[ends[0] as usize + chunk::HEADER + 2] ^= 0xff;
        std::fs::write(&path, &bad).unwrap();
        let reader = Store::open_existing(&dir).unwrap();
        let seqs: Vec<u64> = reader.events(cap).map(|e| e.unwrap().seq).collect();
        assert_eq!(seqs, [1, 3]);
        let d = reader.damage(cap).unwrap();
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!((d[0].from, d[0].to), (ends[0], ends[1]));
        // The file cut in the middle of its last record.
        std::fs::write(&path, &whole[..ends[2] as usize - 3]).unwrap();
        let seqs: Vec<u64> = reader.events(cap).map(|e| e.unwrap().seq).collect();
        assert_eq!(seqs, [1, 2]);
        let d = reader.damage(cap).unwrap();
        assert_eq!((d[0].from, d[0].to), (ends[1], ends[2] - 3), "{d:?}");
        // While the capture runs, a cut tail is the record being written: no damage.
        meta.ended_us = None;
        store.put_meta(&meta).unwrap();
        assert!(reader.damage(cap).unwrap().is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn connect_credentials_are_overwritten_in_place_unless_secrets_are_kept() {
        for keep in [false, true] {
            let mut b = WriteBatch::with_secrets(keep);
            // CONNECT 3.1.1, client id "c", username "u", password "hunter2", sent in
            // two reads: the password spans both.
            let mut connect = vec![0x10, 0];
            connect.extend_from_slice(&[0, 4, b'M', b'Q', b'T', b'T', 4, 0xc2, 0, 60]);
            connect.extend_from_slice(&[0, 1, b'c', 0, 1, b'u', 0, 7]);
            connect.extend_from_slice(b"hunter2");
            connect[1] = (connect.len() - 2) as u8;
            let (a, z) = connect.split_at(connect.len() - 3);
            for (seq, part) in [(1, a), (2, z)] {
                b.event(
                    1,
                    &Event {
                        time_us: seq,
                        seq: seq as u64,
                        conn: 3,
                        kind: EventKind::Data {
                            side: Side::Client,
                            bytes: Bytes::copy_from_slice(part),
                        },
                    },
                );
            }
            let mut r = PacketRecord {
                conn: 3,
                side: "client".into(),
                chunk: 2,
                offset: 0,
                len: connect.len() as u64,
                packet_type: "CONNECT".into(),
                username: Some("u".into()),
                password: Some("hunter2".into()),
                ..PacketRecord::default()
            };
            b.packet(1, 2, 0, &r);
            let bytes: Vec<u8> = b.log.iter().flat_map(|e| e.body.to_vec()).collect();
            let pk = &b.pk[4..];
            let rec = chunk::decode_packet(Path::new("x"), "k", pk).unwrap();
            if keep {
                assert_eq!(bytes, connect);
                assert_eq!(rec, r);
            } else {
                let n = connect.len();
                // The user name "u" (before the password's 2-byte length) and the
                // password: each overwritten by as many '*'; the rest as sent.
                let mut want = connect.clone();
                want[n - 10] = b'*';
                want[n - 7..].copy_from_slice(b"*******");
                assert_eq!(connect[n - 10], b'u');
                assert_eq!(bytes, want);
                r.password = Some("*******".into());
                r.username = Some("*".into());
                assert_eq!(rec, r);
            }
        }
    }

    /// Which pages of the file's first `len` bytes the kernel holds in its cache.
    #[cfg(target_os = "linux")]
    fn cached_pages(path: &Path, len: usize) -> Vec<bool> {
        use std::os::fd::AsRawFd;
        let f = File::open(path).unwrap();
        let pages = len.div_ceil(4096);
        let mut vec = vec![0u8; pages];
        // SAFETY: a read-only shared mapping of `len` bytes of an open file, unmapped
        // before returning; mincore writes one byte per page into `vec`.
        unsafe {
            let at = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            );
            assert_ne!(at, libc::MAP_FAILED);
            assert_eq!(libc::mincore(at, len, vec.as_mut_ptr()), 0);
            libc::munmap(at, len);
        }
        vec.iter().map(|&b| b & 1 == 1).collect()
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn synced_chunk_pages_are_handed_back_to_the_kernel_but_the_newest() {
        const MIB: usize = 1 << 20;
        let dir = temp("release");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("0.bin");
        let mut file = File::create(&path).unwrap();
        // SAFETY: statfs fills the struct it is given.
        let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
        let c = std::ffi::CString::new(dir.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::statfs(c.as_ptr(), &mut fs) }, 0);
        if fs.f_type == libc::TMPFS_MAGIC {
            // tmpfs pages are the file itself: there is nothing to hand back.
            eprintln!("skipped: {} is on tmpfs", dir.display());
            return;
        }
        let cached = |path: &Path, from: usize, to: usize| {
            cached_pages(path, to)[from / 4096..]
                .iter()
                .filter(|&&c| c)
                .count()
        };
        // 8 MiB and a partial page, synced: all cached.
        let len = 8 * MIB + 100;
        file.write_all(&vec![7u8; len]).unwrap();
        file.sync_data().unwrap();
        assert_eq!(cached(&path, 0, len), 2049, "written pages are cached");
        let mut cf = ChunkFile {
            file,
            path,
            len: len as u64,
            released: 0,
        };
        // Keep the last MiB: the first 5 MiB go (a large folio may straddle the
        // boundary at 7 MiB), the kept MiB stays.
        cf.release_synced(MIB as u64);
        assert_eq!(cf.released, 7 * MIB as u64);
        assert_eq!(cached(&cf.path, 0, 5 * MIB), 0, "old pages are freed");
        assert_eq!(cached(&cf.path, 7 * MIB, len), 257, "the newest MiB stays");
        // Keep nothing: only the partial last page stays.
        cf.release_synced(0);
        assert_eq!(
            cached(&cf.path, 0, len),
            1,
            "only the partial last page stays"
        );
        // The next batch completes that page: it goes too.
        cf.file.write_all(&vec![8u8; 4096]).unwrap();
        cf.file.sync_data().unwrap();
        cf.len += 4096;
        cf.release_synced(0);
        assert_eq!(cached(&cf.path, 0, cf.len as usize), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
