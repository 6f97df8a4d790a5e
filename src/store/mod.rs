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
//!     CAP.recording            0600  while a recorder has the capture open: a
//!                                    reserve of disk space, locked (see below)
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
//! user name, and the Authentication Data of an MQTT 5 CONNECT or AUTH (either
//! side), are overwritten by as many `*` before they reach the disk: in the raw
//! chunk bytes, found by the packets' framing alone as each read is added to a
//! batch ([`scrub`]: any encoding, any size, any split across reads, after a PROXY
//! header or garbage), and in the decoded packet record. Only data bytes are
//! overwritten, so the stream's framing stays valid and the capture still decodes.
//! Where the scanner cannot tell where the credentials are (an unknown MQTT 5
//! property, …), the rest of that packet is overwritten too and counted as not
//! recorded, with why ([`CaptureMeta::not_recorded`]).
//!
//! **Closing, and what readers believe.** A recorder creates `CAP.recording` with
//! the capture, fills it with [`meta::RESERVE`] bytes and holds a lock on it. After
//! the last batch it empties it, so that the lost spans, the findings and the meta
//! (its end, everything not recorded) are written even when the disk stayed full to
//! the end, then removes it. Readers believe the files ([`Store::recorder`]): a
//! capture with an end is closed; without one, it is being recorded while the lock
//! is held, and otherwise its recorder stopped without closing it (killed, or the
//! machine went down): incomplete, whatever else the files say.
//!
//! `seq` numbers the events of a capture in the order the analysis task received
//! them; it is the `packet` number findings carry. The proxy records `time_us` never
//! below the previous event's, so seq order is time order across batches too, and
//! within one direction of one connection both grow: stored order is stream order.
//!
//! Layout: this file opens a store and names its files; `meta` registers, lists and
//! describes captures, `write` appends batches ([`WriteBatch`], built in `batch`)
//! and `read` reads them back; `record` holds what the rest of edgetap sees
//! ([`CaptureMeta`], [`Event`], [`PacketRecord`]), [`chunk`] the binary format,
//! [`findings`] the aggregated findings file, `legacy` the older sled stores;
//! [`export`] writes pcapng and [`replay`] feeds stored events to the pipeline.

mod batch;
pub mod chunk;
pub mod export;
pub mod findings;
pub mod frames;
mod legacy;
mod meta;
mod read;
mod record;
pub mod replay;
mod scrub;
mod write;

pub use batch::WriteBatch;
pub use meta::Recorder;
pub use record::{
    packet_record, CaptureMeta, ConnMeta, Event, EventKind, NotRecorded, PacketRecord, FILLER,
    MAX_SPANS,
};

use std::collections::HashMap;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use chunk::PacketFields;
pub use chunk::{Damage, LostSpan};
pub use findings::{FindingGroup, FindingsFile};
use write::ChunkFile;

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

/// What the recording process keeps per capture.
#[derive(Default)]
struct Recording {
    findings: findings::Aggregate,
    lost: Option<NotRecorded>,
    /// Lost spans not yet noted in the chunk file.
    unnoted: Vec<LostSpan>,
    findings_written: Option<std::time::Instant>,
}

pub struct Store {
    dir: PathBuf,
    /// `chunks/`: the files of each capture.
    chunk_dir: PathBuf,
    /// The sled database of older versions, opened on first use.
    legacy: OnceLock<Option<Result<legacy::Legacy, String>>>,
    writers: Mutex<HashMap<u64, ChunkFile>>,
    recording: Mutex<HashMap<u64, Recording>>,
    /// The reserve file of each capture this process records (see
    /// [`Store::begin_capture`]), open and locked until the capture is closed.
    reserves: Mutex<HashMap<u64, std::fs::File>>,
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
            reserves: Mutex::new(HashMap::new()),
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

    /// `CAP.recording`: exists, holding [`meta::RESERVE`] bytes and locked, while a
    /// recorder has capture `cap` open.
    fn reserve_path(&self, cap: u64) -> PathBuf {
        self.chunk_dir.join(format!("{cap}.recording"))
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

    /// Whether `id` is in the file layout (else in the older sled database).
    fn is_file_capture(&self, id: u64) -> bool {
        self.meta_path(id).exists()
    }

    /// Removes a capture and everything recorded with it.
    pub fn delete(&self, id: u64) -> Result<(), StoreError> {
        if self.is_file_capture(id) {
            for p in [
                self.meta_path(id),
                self.findings_path(id),
                self.reserve_path(id),
            ] {
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

#[cfg(test)]
mod tests;
