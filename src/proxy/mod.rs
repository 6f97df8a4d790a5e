//! The inline proxy: the one module that does tokio networking.
//!
//! Guarantees:
//! - Bytes are forwarded unchanged and at once: each read is written to the other
//!   side before anything else happens to it; no MQTT framing on the forwarding path.
//! - Each half-close (FIN) is mirrored as a half-close; a reset or I/O error on either
//!   side resets both; an upstream that refuses or times out resets the client.
//! - A copy of every chunk (a shared, immutable `Bytes`) goes through one bounded
//!   queue to ONE recording thread per proxy ([`tap`]), woken once per batch of
//!   chunks rather than per chunk, which frames and decodes them with the shared
//!   [`crate::pipeline::Analyzer`] (deferred: no rules) and batches store writes.
//!   When it falls behind, the channel fills and forwarding waits: recording is
//!   lossless, never partial.
//! - The rules run on a thread of their own, the judge ([`judge`]), fed by the
//!   recorder without ever making it wait: judging may lag (published in
//!   [`judge::View`], said on the console), never the device. The judge's module
//!   doc has the profile that led to this split.
//! - The live output ([`console`]): connections opening, their CONNECT, closing (and
//!   why); the first finding of each (edge, rule, field path), naming its
//!   connection; "+N more" summaries.
//! - Caps: `max_connections` (a semaphore; accept waits when reached) and
//!   `max_buffered` bytes per connection not yet durable in the store (forwarding of
//!   that connection waits), which also bounds the analysis buffer (a larger packet
//!   is judged from its header). Each cap logs a rate-limited warning when reached.
//! - Idle timeout: a connection with no byte either way for `idle_timeout` (default
//!   from the CONNECT's keep-alive, [`idle_limit`]) is closed.
//! - Memory freed by closed connections goes back to the system every
//!   [`TRIM_EVERY`] closes (glibc `malloc_trim`).
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

mod admission;
pub mod console;
pub mod fds;
mod groups;
pub mod http;
pub mod judge;
pub mod live;
mod relay;
pub mod tap;
mod throttle;
pub mod tls;
pub mod websocket;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::finding::ConnId;
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
    /// The live view (`--http`) the analysis thread keeps up to date.
    pub live: Option<Arc<crate::proxy::live::LiveView>>,
    /// A connection with no byte in either direction for this long is closed.
    /// `None`: [`IDLE_KEEP_ALIVES`] times the keep-alive of the client's CONNECT
    /// (at least [`IDLE_MIN`], at most [`IDLE_MAX`]), or [`IDLE_FALLBACK`] before a
    /// CONNECT or with a keep-alive of 0.
    pub idle_timeout: Option<Duration>,
    /// Where the judge publishes its state while the proxy runs.
    pub view: judge::View,
    /// The share of one core the live judge may take when recording into a store
    /// (`throttle::Throttle`); `None`: no cap.
    pub judge_cpu: Option<f64>,
}

/// Idle timeout: this many times the client's MQTT keep-alive…
pub const IDLE_KEEP_ALIVES: u32 = 3;
/// …but not less than this…
pub const IDLE_MIN: Duration = Duration::from_secs(10);
/// …nor more than this (unless `--idle-timeout` says otherwise)…
///
/// Why 30 minutes: MQTT (3.1.1 §3.1.2.10, 5.0 §3.1.2.10) has the server close a
/// connection that sent nothing for 1.5 × its keep-alive, so a margin above that lets
/// the broker's own close be seen; but a keep-alive of 65535 s would hold a silent
/// (half-open) connection, two descriptors and its buffers, for 54.6 h at 3 ×. The
/// T/YQDEIF 003 text sets no keep-alive; the platforms devices meet cap theirs at
/// about 1200 s (1.5 × 1200 s = 1800 s), so a device inside that range is never
/// closed by the proxy before its broker would close it. A longer keep-alive is
/// named in the close reason ("capped at 1800 s"); `--idle-timeout` overrides.
pub const IDLE_MAX: Duration = Duration::from_secs(1800);
/// …and this without a CONNECT (a half-open or silent connection) or keep-alive 0.
pub const IDLE_FALLBACK: Duration = Duration::from_secs(300);

/// The idle timeout for a connection whose CONNECT announced `keep_alive` seconds
/// (0: none seen, or keep-alive off).
pub fn idle_limit(explicit: Option<Duration>, keep_alive: u32) -> Duration {
    match (explicit, keep_alive) {
        (Some(d), _) => d,
        (None, 0) => IDLE_FALLBACK,
        (None, k) => Duration::from_secs(u64::from(k) * u64::from(IDLE_KEEP_ALIVES))
            .clamp(IDLE_MIN, IDLE_MAX),
    }
}

/// Whether [`IDLE_MAX`] cut the idle limit of keep-alive `keep_alive`.
pub fn idle_capped(explicit: Option<Duration>, keep_alive: u32) -> bool {
    explicit.is_none()
        && Duration::from_secs(u64::from(keep_alive) * u64::from(IDLE_KEEP_ALIVES)) > IDLE_MAX
}

/// Each open connection's MQTT keep-alive as its CONNECT announced it: written by
/// the recorder, which decodes the CONNECT, read by the relay for its idle timeout.
#[derive(Clone, Default)]
pub(crate) struct KeepAlives(Arc<Mutex<HashMap<ConnId, Arc<AtomicU32>>>>);

impl KeepAlives {
    fn register(&self, conn: ConnId) -> Arc<AtomicU32> {
        let a = Arc::new(AtomicU32::new(0));
        self.lock().insert(conn, a.clone());
        a
    }
    fn remove(&self, conn: ConnId) {
        self.lock().remove(&conn);
    }
    pub(crate) fn set(&self, conn: ConnId, keep_alive: u16) {
        if let Some(a) = self.lock().get(&conn) {
            a.store(u32::from(keep_alive), Ordering::Relaxed);
        }
    }
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ConnId, Arc<AtomicU32>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A warning that may repeat: logged the first time, then at most once per
/// [`RateLimited::EVERY`] with how many times it happened meanwhile.
pub(crate) struct RateLimited {
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimited {
    pub(crate) const EVERY: Duration = Duration::from_secs(10);
    pub(crate) const fn new() -> RateLimited {
        RateLimited {
            last: None,
            suppressed: 0,
        }
    }
    /// `Some(times suppressed since the last one logged)` when this one should be
    /// logged.
    pub(crate) fn hit(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self.last.is_some_and(|l| now - l < Self::EVERY) {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// " (N more times in the last 10 s)", or nothing.
pub(crate) fn more_times(n: u64) -> String {
    if n == 0 {
        String::new()
    } else {
        format!(" ({n} more times since the last such warning)")
    }
}

impl Default for ProxySettings {
    fn default() -> Self {
        ProxySettings {
            upstream: String::new(),
            name: "proxy".into(),
            max_connections: 2048,
            max_buffered: 4 << 20,
            max_packet: crate::mqtt::MQTT_MAX_REMAINING,
            connect_timeout: Duration::from_secs(10),
            websocket: false,
            tls: tls::TlsSettings::default(),
            live: None,
            idle_timeout: None,
            view: judge::View::default(),
            judge_cpu: None,
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

/// Called on the judge's thread for each finding, as it is judged. ([`run_live`]
/// takes a full [`judge::Live`] instead: connections, ticks, grouping.)
pub type LiveFindings = Box<dyn FnMut(&crate::finding::Finding) + Send>;

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
    pub keep_alives: KeepAlives,
    /// "forwarding waits" warnings, rate-limited across connections.
    pub wait_warning: Mutex<RateLimited>,
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
    run_live(listener, settings, rules, store, Box::new(live), shutdown).await
}

/// [`run`] with a full live output ([`console::Console`] for `edgetap proxy`).
pub async fn run_live(
    listener: TcpListener,
    settings: ProxySettings,
    rules: Arc<RuleSet>,
    store: Option<Store>,
    live: Box<dyn judge::Live>,
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
    let keep_alives = KeepAlives::default();
    let analysis = tap::spawn(
        rx,
        rules,
        // A packet larger than a connection's budget is not buffered for analysis:
        // forwarded byte for byte, judged from its header (mqtt.oversized).
        settings.max_packet.min(settings.max_buffered.max(1)),
        flush_bytes,
        store,
        meta,
        clock,
        live,
        settings.view.clone(),
        keep_alives.clone(),
        settings.live.clone(),
        settings.judge_cpu,
    );
    let shared = Arc::new(Shared {
        settings: settings.clone(),
        clock,
        tap: tx,
        stop: stop_rx,
        keep_alives,
        wait_warning: Mutex::new(RateLimited::new()),
    });

    let limit = Arc::new(Semaphore::new(settings.max_connections));
    let next_conn = AtomicU64::new(1);
    let mut accepted = 0u64;
    let mut limit_warning = RateLimited::new();
    let mut accept_warning = RateLimited::new();
    tokio::pin!(shutdown);
    loop {
        let permit = match limit.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                if let Some(n) = limit_warning.hit() {
                    tracing::warn!(
                        "connection limit reached ({} open, --max-connections); new connections \
                         wait until one closes{}",
                        settings.max_connections,
                        more_times(n)
                    );
                }
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
                    // Out of descriptors and the like: keep serving the others, and
                    // say so once per period with a count (1,875 lines under a
                    // flood before).
                    if let Some(n) = accept_warning.hit() {
                        tracing::warn!(
                            "accept: {e}; new connections wait in the listen backlog{}",
                            more_times(n)
                        );
                    }
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
            release_memory();
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

/// Connections closed since the allocator last gave memory back.
static CLOSED_SINCE_TRIM: AtomicU64 = AtomicU64::new(0);
/// Every this many closed connections, freed heap goes back to the system.
pub const TRIM_EVERY: u64 = 256;

/// Returns freed heap to the system now and then (glibc keeps what short
/// connections freed in its arenas otherwise: RSS crept from 44 to 86 MB over
/// 24,000 connections before this).
fn release_memory() {
    if CLOSED_SINCE_TRIM.fetch_add(1, Ordering::Relaxed) + 1 < TRIM_EVERY {
        return;
    }
    CLOSED_SINCE_TRIM.store(0, Ordering::Relaxed);
    tokio::task::spawn_blocking(trim_heap);
}

/// At most two glibc malloc arenas for the proxy's threads (unless the user set
/// `MALLOC_ARENA_MAX`). Call before any thread starts.
///
/// glibc gives each thread that meets contention an arena of its own, up to eight
/// per core, and memory freed into one arena serves only that arena: the chunks the
/// forwarding threads allocate are freed by the store writer, the findings the judge
/// makes by the recorder. After five bursts of 50,000 finding-heavy reports (1 KB)
/// the proxy's RSS settled at 111 MB with the default, 81 MB with two arenas, 74 MB
/// with one, with the heap trimmed each time; throughput through the proxy was the
/// same with two (A/B, medians of 7 turns: QoS 0 0.89 vs 0.92 of direct, QoS 1
/// 0.71 vs 0.71).
pub fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
            return;
        }
        extern "C" {
            fn mallopt(param: i32, value: i32) -> i32;
        }
        const M_ARENA_MAX: i32 = -8;
        // SAFETY: a glibc tunable, set before the proxy's threads start.
        unsafe {
            mallopt(M_ARENA_MAX, 2);
        }
    }
}

/// Hands the heap's free memory back to the system (glibc's `malloc_trim`; nothing
/// elsewhere). Blocking: call it off the forwarding threads.
pub(crate) fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> i32;
        }
        // SAFETY: glibc's malloc_trim only releases free memory; any thread may call it.
        unsafe {
            malloc_trim(0);
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_limit_follows_the_keep_alive_with_a_floor_a_cap_and_a_fallback() {
        let s = Duration::from_secs;
        assert_eq!(idle_limit(None, 60), s(180));
        assert_eq!(idle_limit(None, 1), IDLE_MIN);
        assert_eq!(idle_limit(None, 0), IDLE_FALLBACK);
        assert_eq!(idle_limit(Some(s(7)), 60), s(7));
        // The largest keep-alive MQTT allows is capped (it was 54.6 h), and says so.
        assert_eq!(idle_limit(None, 65_535), IDLE_MAX);
        assert!(idle_capped(None, 65_535));
        // Up to the platforms' usual maximum keep-alive (1200 s), the broker's own
        // 1.5 × close comes first.
        assert!(idle_limit(None, 1200) >= s(1800));
        assert!(!idle_capped(None, 600) && !idle_capped(Some(s(9)), 65_535));
        assert_eq!(idle_limit(None, 601), IDLE_MAX);
    }

    #[test]
    fn a_repeated_warning_is_logged_once_then_counted() {
        let mut w = RateLimited::new();
        assert_eq!(w.hit(), Some(0));
        assert_eq!(w.hit(), None);
        assert_eq!(w.hit(), None);
        assert_eq!(w.suppressed, 2);
        // Once the period is over, the next one is logged with the count.
        w.last = Some(Instant::now() - RateLimited::EVERY);
        assert_eq!(w.hit(), Some(2));
        assert_eq!(more_times(2), " (2 more times since the last such warning)");
        assert_eq!(more_times(0), "");
    }
}
