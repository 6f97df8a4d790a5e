//! The inline proxy: the one module that does tokio networking.
//!
//! Guarantees:
//! - Bytes are forwarded unchanged and at once: each read is written to the other
//!   side before anything else happens to it; no MQTT framing on the forwarding path.
//! - Each half-close (FIN) is mirrored as a half-close; a reset or I/O error on either
//!   side resets both; an upstream that refuses or times out resets the client.
//! - A copy of every chunk (a shared, immutable `Bytes`) goes through one bounded
//!   queue to ONE analysis thread per proxy ([`tap`]), woken once per batch of
//!   chunks rather than per chunk, which feeds the shared
//!   [`crate::pipeline::Analyzer`] and batches store writes. When that task falls
//!   behind, the channel fills and forwarding waits: recording is lossless, never
//!   partial.
//! - Caps: `max_connections` (a semaphore; accept waits when reached) and
//!   `max_buffered` bytes per connection not yet durable in the store (forwarding of
//!   that connection waits). Each cap logs a warning when reached.
//!
//! - What is analysed and recorded is the MQTT byte stream: with `websocket`, the
//!   payloads of the binary frames (the WebSocket framing is forwarded, not stored);
//!   with TLS terminated (`tls.accept`), the plaintext, re-encrypted toward the
//!   upstream when `tls.upstream` is set. A TLS flow the proxy does not terminate is
//!   forwarded untouched, recorded as it went by (opaque chunks: the export shows the
//!   TLS session) and reported once as not decodable; its bytes are not analysed.
//!
//! Flush window: the store is written and fsynced every [`FLUSH_INTERVAL`] (100 ms)
//! or every [`FLUSH_BYTES`] (1 MiB; a quarter of `max_buffered` when that is less)
//! of chunk data, whichever comes first, on a writer thread of its own. A process
//! killed with SIGKILL keeps everything read more than one window (plus the time of
//! one fsync) before the kill.

mod relay;
pub mod tap;
pub mod tls;
pub mod websocket;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::finding::Finding;
use crate::report::Report;
use crate::rules::RuleSet;
use crate::store::{CaptureMeta, Store, StoreError};

/// Store batches are written at least this often while data is pending.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(100);
/// …or as soon as this much chunk data is pending.
pub const FLUSH_BYTES: usize = 1 << 20;
/// Chunks in flight between the forwarding tasks and the analysis task.
pub const TAP_QUEUE: usize = 1024;
/// Bytes read at once from a socket.
pub const READ_BUF: usize = 16 * 1024;

#[derive(Debug, Clone)]
pub struct ProxySettings {
    /// `HOST:PORT` of the broker or platform.
    pub upstream: String,
    /// Name of the capture in the store.
    pub name: String,
    pub max_connections: usize,
    /// Bytes per connection read but not yet analyzed and stored.
    pub max_buffered: usize,
    pub max_packet: usize,
    pub connect_timeout: Duration,
    /// MQTT over WebSocket: the analysis copy of each direction goes through a
    /// [`websocket::Deframer`]; forwarding stays byte for byte.
    pub websocket: bool,
    /// TLS termination toward devices and re-origination toward the upstream.
    pub tls: tls::TlsSettings,
}

impl Default for ProxySettings {
    fn default() -> Self {
        ProxySettings {
            upstream: String::new(),
            name: "proxy".into(),
            max_connections: 2048,
            max_buffered: 1 << 20,
            max_packet: crate::mqtt::MQTT_MAX_REMAINING,
            connect_timeout: Duration::from_secs(10),
            websocket: false,
            tls: tls::TlsSettings::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("proxy listener: {0}")]
    Listener(std::io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("analysis task ended abnormally")]
    Analysis,
}

/// What a finished proxy run leaves.
pub struct ProxyOutcome {
    /// The capture id, when recording.
    pub capture: Option<u64>,
    pub report: Report,
    /// The store, handed back (sled allows one opener per process).
    pub store: Option<Store>,
    pub accepted: u64,
}

/// Called on the analysis task for each finding, as it happens.
pub type LiveFindings = Box<dyn FnMut(&Finding) + Send>;

/// Wall-clock microseconds that never go backwards within a run.
#[derive(Clone, Copy)]
pub(crate) struct Clock {
    base_us: i64,
    start: Instant,
}

impl Clock {
    fn new() -> Clock {
        let base_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as i64)
            .unwrap_or(0);
        Clock {
            base_us,
            start: Instant::now(),
        }
    }
    pub(crate) fn now_us(&self) -> i64 {
        self.base_us + self.start.elapsed().as_micros() as i64
    }
}

pub(crate) struct Shared {
    pub settings: ProxySettings,
    pub clock: Clock,
    pub tap: tap::TapSender,
    pub stop: watch::Receiver<bool>,
}

/// Serves `listener` until `shutdown` completes, then closes every connection,
/// drains and flushes the store, and returns the run's report.
pub async fn run(
    listener: TcpListener,
    settings: ProxySettings,
    rules: Arc<RuleSet>,
    store: Option<Store>,
    live: LiveFindings,
    shutdown: impl Future,
) -> Result<ProxyOutcome, ProxyError> {
    let clock = Clock::new();
    let listen = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let mut meta = CaptureMeta {
        id: 0,
        name: settings.name.clone(),
        started_us: clock.now_us(),
        ended_us: None,
        listen,
        upstream: settings.upstream.clone(),
        rules_version: format!(
            "edgetap {}; {}",
            env!("CARGO_PKG_VERSION"),
            rules.files.join(", ")
        ),
        connections: 0,
        chunks: 0,
        bytes: 0,
        packets: 0,
        findings: 0,
        not_recorded: None,
    };
    let capture = match &store {
        Some(s) => Some(s.begin_capture(&mut meta)?),
        None => None,
    };
    let flush_bytes = tap::flush_bytes(settings.max_buffered);
    let (tx, rx) = tap::handoff(flush_bytes);
    let (stop_tx, stop_rx) = watch::channel(false);
    let analysis = tap::spawn(
        rx,
        rules,
        settings.max_packet,
        flush_bytes,
        store,
        meta,
        clock,
        live,
    );
    let shared = Arc::new(Shared {
        settings: settings.clone(),
        clock,
        tap: tx,
        stop: stop_rx,
    });

    let limit = Arc::new(Semaphore::new(settings.max_connections));
    let next_conn = AtomicU64::new(1);
    let mut accepted = 0u64;
    tokio::pin!(shutdown);
    loop {
        let permit = match limit.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                tracing::warn!(
                    "connection limit reached ({} open); new connections wait until one closes",
                    settings.max_connections
                );
                tokio::select! {
                    p = limit.clone().acquire_owned() => p.expect("semaphore never closed"),
                    _ = &mut shutdown => break,
                }
            }
        };
        let (sock, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of descriptors and the like: keep serving the others.
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        accepted += 1;
        let conn = next_conn.fetch_add(1, Ordering::Relaxed);
        let shared = shared.clone();
        tokio::spawn(async move {
            relay::serve(sock, peer, conn, shared).await;
            drop(permit);
        });
    }
    drop(listener);
    // Tell every connection to close; the analysis task ends when the last sender
    // (one per connection task, plus ours) is gone.
    let _ = stop_tx.send(true);
    drop(shared);
    let (report, store, capture_meta) = analysis.await.map_err(|_| ProxyError::Analysis)??;
    let _ = capture_meta;
    Ok(ProxyOutcome {
        capture,
        report,
        store,
        accepted,
    })
}

/// The upstream address as recorded when no connection was made to it.
pub(crate) fn upstream_guess(upstream: &str) -> SocketAddr {
    use std::net::ToSocketAddrs;
    upstream
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)))
}
