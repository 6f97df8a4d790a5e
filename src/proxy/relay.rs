//! One proxied connection: two pumps (device → upstream, upstream → device) that
//! forward each read at once, then hand a copy to the analysis task. Either side may
//! be TLS (terminated or re-originated here); the pumps see plaintext streams.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::tap::{Tap, TapKind};
use super::websocket::Deframer;
use super::{idle_limit, more_times, upstream_guess, Shared, READ_BUF};
use crate::finding::{ConnId, Side};
use crate::mqtt::looks_like_tls;
use crate::store::EventKind;

/// A connected stream the relay can split into halves and reset.
trait Duplex: Send + 'static {
    type R: AsyncRead + Unpin + Send;
    type W: AsyncWrite + Unpin + Send;
    fn halves(self) -> (Self::R, Self::W);
    /// Closes with RST instead of FIN (and, for TLS, without close_notify).
    fn reset(r: Self::R, w: Self::W);
}

impl Duplex for TcpStream {
    // Plain TCP keeps tokio's lock-free owned halves.
    type R = OwnedReadHalf;
    type W = OwnedWriteHalf;
    fn halves(self) -> (OwnedReadHalf, OwnedWriteHalf) {
        self.into_split()
    }
    fn reset(r: OwnedReadHalf, w: OwnedWriteHalf) {
        let _ = w.as_ref().set_zero_linger();
        // Without forget(), dropping the write half would send a FIN first.
        w.forget();
        drop(r);
    }
}

macro_rules! tls_duplex {
    ($t:ty) => {
        impl Duplex for $t {
            type R = ReadHalf<$t>;
            type W = WriteHalf<$t>;
            fn halves(self) -> (Self::R, Self::W) {
                tokio::io::split(self)
            }
            fn reset(r: Self::R, w: Self::W) {
                let s = r.unsplit(w);
                let _ = s.get_ref().0.set_zero_linger();
                // Dropping a TLS stream writes nothing: the socket goes with an RST.
                drop(s);
            }
        }
    };
}
tls_duplex!(tokio_rustls::server::TlsStream<TcpStream>);
tls_duplex!(tokio_rustls::client::TlsStream<TcpStream>);

/// Why a pump stopped abnormally; the connection is reset on both sides.
enum Broken {
    /// Reading from `side` failed (typically a reset by that peer).
    Read(Side, std::io::Error),
    /// Writing toward the peer opposite `side` failed.
    Write(Side, std::io::Error),
}

impl Broken {
    fn describe(&self) -> String {
        let who = |s: Side| match s {
            Side::Client => "client",
            Side::Server => "upstream",
        };
        let other = |s: Side| match s {
            Side::Client => Side::Server,
            Side::Server => Side::Client,
        };
        match self {
            Broken::Read(s, e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                format!("reset by {}", who(*s))
            }
            Broken::Read(s, e) => format!("error reading from {}: {e}", who(*s)),
            Broken::Write(s, e) => format!("error writing to {}: {e}", who(other(*s))),
        }
    }
}

pub(super) async fn serve(client: TcpStream, peer: SocketAddr, conn: ConnId, sh: Arc<Shared>) {
    let opened = sh.clock.now_us();
    let up = tokio::time::timeout(
        sh.settings.connect_timeout,
        TcpStream::connect(&sh.settings.upstream),
    )
    .await;
    let upstream = match up {
        Ok(Ok(u)) => u,
        other => {
            let why = match other {
                Ok(Err(e)) => format!("upstream refused: {e}"),
                _ => "upstream refused: connect timed out".to_string(),
            };
            tracing::warn!("connection {conn} from {peer}: {why}; closing the client's connection");
            let server = upstream_guess(&sh.settings.upstream);
            tap(
                &sh,
                conn,
                opened,
                EventKind::Open {
                    client: peer,
                    server,
                },
                None,
            )
            .await;
            // Mirror the refusal: the client sees a reset.
            let _ = client.set_zero_linger();
            drop(client);
            let t = sh.clock.now_us();
            tap(&sh, conn, t, EventKind::End { how: why }, None).await;
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let server = upstream
        .peer_addr()
        .unwrap_or_else(|_| upstream_guess(&sh.settings.upstream));
    tap(
        &sh,
        conn,
        opened,
        EventKind::Open {
            client: peer,
            server,
        },
        None,
    )
    .await;

    let keep_alive = sh.keep_alives.register(conn);
    let how = match handshakes(client, upstream, peer, server, conn, &sh, &keep_alive).await {
        Ok(how) | Err(how) => how,
    };
    sh.keep_alives.remove(conn);
    let t = sh.clock.now_us();
    tap(&sh, conn, t, EventKind::End { how }, None).await;
}

/// Runs the TLS handshakes the settings ask for, then relays. `Err`: a handshake
/// failed (both sockets are closed), with why.
async fn handshakes(
    client: TcpStream,
    upstream: TcpStream,
    peer: SocketAddr,
    server: SocketAddr,
    conn: ConnId,
    sh: &Arc<Shared>,
    keep_alive: &AtomicU32,
) -> Result<String, String> {
    let limit = sh.settings.connect_timeout;
    let tls = &sh.settings.tls;
    let failed = |what: &str, e: String| {
        let how = format!("TLS handshake with {what} failed: {e}");
        tracing::warn!("connection {conn} from {peer}: {how}; closing both sides");
        how
    };
    // Upstream first: a device is not told its TLS was accepted by a proxy that
    // cannot reach the broker's TLS.
    // Ok: TLS; Err: the plain socket.
    let up = match &tls.upstream {
        None => Err(upstream),
        Some(u) => {
            let c = TlsConnector::from(u.config.clone());
            match tokio::time::timeout(limit, c.connect(u.name.clone(), upstream)).await {
                Ok(Ok(s)) => Ok(s),
                Ok(Err(e)) => return Err(failed("the upstream", e.to_string())),
                Err(_) => return Err(failed("the upstream", "timed out".into())),
            }
        }
    };
    let dev = match &tls.accept {
        None => Err(client),
        Some(cfg) => {
            let a = TlsAcceptor::from(cfg.clone());
            match tokio::time::timeout(limit, a.accept(client)).await {
                Ok(Ok(s)) => Ok(s),
                Ok(Err(e)) => return Err(failed("the client", e.to_string())),
                Err(_) => return Err(failed("the client", "timed out".into())),
            }
        }
    };
    let how = match (dev, up) {
        (Err(d), Err(u)) => relay(d, u, peer, server, conn, sh, keep_alive).await,
        (Ok(d), Err(u)) => relay(d, u, peer, server, conn, sh, keep_alive).await,
        (Err(d), Ok(u)) => relay(d, u, peer, server, conn, sh, keep_alive).await,
        (Ok(d), Ok(u)) => relay(d, u, peer, server, conn, sh, keep_alive).await,
    };
    Ok(how)
}

/// Forwards both directions until both end; returns how the connection ended.
async fn relay<C: Duplex, U: Duplex>(
    client: C,
    upstream: U,
    peer: SocketAddr,
    server: SocketAddr,
    conn: ConnId,
    sh: &Arc<Shared>,
    keep_alive: &AtomicU32,
) -> String {
    let budget = Arc::new(Semaphore::new(sh.settings.max_buffered));
    // When a byte last went either way (µs of the run's clock).
    let activity = AtomicI64::new(sh.clock.now_us());
    let idle = async {
        loop {
            let limit = idle_limit(sh.settings.idle_timeout, keep_alive.load(Ordering::Relaxed));
            let quiet = (sh.clock.now_us() - activity.load(Ordering::Relaxed)).max(0) as u64;
            let quiet = Duration::from_micros(quiet);
            if quiet >= limit {
                return limit;
            }
            // Looked at again at least every IDLE_RECHECK: the limit changes when
            // the CONNECT's keep-alive becomes known.
            tokio::time::sleep((limit - quiet).min(IDLE_RECHECK)).await;
        }
    };
    tokio::pin!(idle);
    let opaque = AtomicBool::new(false);
    let (mut cr, mut cw) = client.halves();
    let (mut ur, mut uw) = upstream.halves();
    let end: Result<String, Broken> = {
        let mut to_up = View::new(Side::Client, peer, server, &opaque, sh);
        let mut to_down = View::new(Side::Server, peer, server, &opaque, sh);
        let to_upstream = pump(&mut cr, &mut uw, &mut to_up, conn, sh, &budget, &activity);
        let to_client = pump(&mut ur, &mut cw, &mut to_down, conn, sh, &budget, &activity);
        tokio::pin!(to_upstream, to_client);
        let (mut up, mut down) = (None, None);
        loop {
            tokio::select! {
                r = &mut to_upstream, if up.is_none() => match r {
                    Ok(e) => up = Some(e),
                    Err(b) => break Err(b),
                },
                r = &mut to_client, if down.is_none() => match r {
                    Ok(e) => down = Some(e),
                    Err(b) => break Err(b),
                },
                limit = &mut idle => {
                    let k = keep_alive.load(Ordering::Relaxed);
                    let why = match (sh.settings.idle_timeout, k) {
                        (Some(_), _) => "--idle-timeout".to_string(),
                        (None, 0) => "no CONNECT keep-alive seen: the fallback".to_string(),
                        (None, k) if super::idle_capped(None, k) => format!(
                            "{} × the CONNECT keep-alive of {k} s, capped at {} s",
                            super::IDLE_KEEP_ALIVES,
                            super::IDLE_MAX.as_secs()
                        ),
                        (None, k) => format!("{} × the CONNECT keep-alive of {k} s", super::IDLE_KEEP_ALIVES),
                    };
                    let half = match (up, down) {
                        (Some(_), None) => "; the client had half-closed",
                        (None, Some(_)) => "; the upstream had half-closed",
                        _ => "",
                    };
                    break Ok(format!(
                        "idle timeout: no byte either way for {} s ({why}){half}",
                        limit.as_secs_f64()
                    ));
                },
            }
            match (up, down) {
                // (Stored as such; the console explains them.)
                (Some(Ended::Eof), Some(Ended::Eof)) => break Ok("closed".to_string()),
                (Some(_), Some(_)) => break Ok("shutdown".to_string()),
                _ => {}
            }
        }
    };
    match end {
        Ok(how) => {
            // A normal close or the proxy stopping: FIN to both (dropping the halves).
            drop((cr, cw, ur, uw));
            how
        }
        Err(b) => {
            let how = b.describe();
            tracing::info!("connection {conn} from {peer}: {how}; resetting both sides");
            C::reset(cr, cw);
            U::reset(ur, uw);
            how
        }
    }
}

/// What the analysis sees of one direction: the bytes read, or the MQTT stream inside
/// them (WebSocket), or nothing once the flow turned out to be TLS it cannot read.
struct View<'a> {
    side: Side,
    peer: SocketAddr,
    server: SocketAddr,
    /// Client side, TLS not terminated here: the first bytes, held back until they
    /// show whether the flow is TLS.
    sniff: Option<Vec<u8>>,
    ws: Option<Deframer>,
    out: Vec<u8>,
    /// Set when the connection is TLS the proxy does not terminate: both directions
    /// stop handing bytes to the analysis.
    opaque: &'a AtomicBool,
}

impl<'a> View<'a> {
    fn new(
        side: Side,
        peer: SocketAddr,
        server: SocketAddr,
        opaque: &'a AtomicBool,
        sh: &Shared,
    ) -> View<'a> {
        let sniff = (side == Side::Client && sh.settings.tls.accept.is_none()).then(Vec::new);
        View {
            side,
            peer,
            server,
            sniff,
            ws: sh.settings.websocket.then(|| Deframer::new(side)),
            out: Vec::new(),
            opaque,
        }
    }

    /// The copy of what was read (`buf`, already forwarded) to record and analyse:
    /// `Ok(None)` when there is nothing to hand over yet, `Err(reason)` when this
    /// direction just became not decodable. A plain MQTT read is handed over as it
    /// is ([`take`]); `buf` is then empty.
    fn copy(&mut self, buf: &mut BytesMut) -> Result<Option<Copied>, String> {
        if self.opaque.load(Ordering::Relaxed) {
            return Ok(Some(Copied::Opaque(take(buf))));
        }
        if self.sniff.is_none() && self.ws.is_none() {
            return Ok((!buf.is_empty()).then(|| Copied::Mqtt(take(buf))));
        }
        let read: &[u8] = buf;
        let mut data = read;
        let held;
        if let Some(first) = &mut self.sniff {
            first.extend_from_slice(read);
            // A TLS record starts with 0x16; anything else is decided at once.
            if first.len() < 6 && first[0] == 0x16 {
                return Ok(None);
            }
            held = self.sniff.take().expect("present");
            if looks_like_tls(&held) {
                // Recorded as forwarded, not analysed; the analyzer reports the flow
                // as not decodable when it sees the first opaque chunk.
                self.opaque.store(true, Ordering::Relaxed);
                return Ok(Some(Copied::Opaque(Bytes::from(held))));
            }
            data = &held;
        }
        if let Some(d) = &mut self.ws {
            self.out.clear();
            d.feed(data, &mut self.out).map_err(|e| {
                format!(
                    "WebSocket without readable MQTT ({}: {e})",
                    self.side.arrow()
                )
            })?;
            data = &self.out;
        }
        Ok((!data.is_empty()).then(|| Copied::Mqtt(Bytes::copy_from_slice(data))))
    }
}

/// Reads at least this large are handed to the analysis as the read buffer itself
/// (the buffer is replaced); smaller ones are copied into a chunk of their size.
const HAND_OVER_MIN: usize = READ_BUF / 4;

/// The bytes of a forwarded read as a chunk for the analysis. A large read keeps its
/// buffer (no copy: the pump reads into a new one next), so each chunk holds at most
/// 4 times its size until it is on disk; a small one is copied, so that a 4-byte
/// PUBACK does not hold a 16 KiB buffer. (`perf` of a QoS 0 run: copying every read
/// was 4.5 % of the forwarding threads' samples.)
fn take(buf: &mut BytesMut) -> Bytes {
    if buf.len() >= HAND_OVER_MIN {
        let b = buf.split().freeze();
        buf.reserve(READ_BUF);
        b
    } else {
        Bytes::copy_from_slice(buf)
    }
}

/// What a forwarded read hands to the analysis task.
enum Copied {
    /// The MQTT byte stream (the read itself, or a WebSocket frame's payload).
    Mqtt(Bytes),
    /// Bytes the proxy cannot read (TLS it does not terminate): recorded only.
    Opaque(Bytes),
}

async fn tap(
    sh: &Shared,
    conn: ConnId,
    time_us: i64,
    kind: EventKind,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
) {
    // The analysis thread outlives every connection task; if it died, the event is
    // dropped and forwarding goes on without it.
    sh.tap
        .send(Tap {
            conn,
            time_us,
            kind: TapKind::Event(kind),
            permit,
        })
        .await;
}

/// How often an idle connection's limit is looked at again.
const IDLE_RECHECK: Duration = Duration::from_secs(5);

/// A write to a peer that takes this long means that peer is not reading.
const SLOW_READER: Duration = Duration::from_secs(2);

#[derive(Clone, Copy, PartialEq)]
enum Ended {
    /// The sender half-closed; mirrored.
    Eof,
    /// The proxy is stopping.
    Stopped,
}

/// Forwards one direction until end of stream (mirrored as a half-close), the proxy
/// stopping, or an error. Stopping is noticed only between chunks, so every chunk
/// forwarded is also handed to the analysis task.
async fn pump<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    r: &mut R,
    w: &mut W,
    view: &mut View<'_>,
    conn: ConnId,
    sh: &Shared,
    budget: &Arc<Semaphore>,
    activity: &AtomicI64,
) -> Result<Ended, Broken> {
    // One read buffer per direction, reused: what is read is forwarded from it, then
    // copied into an exact-size chunk for analysis. (Handing out slices of the read
    // buffer instead would pin a whole READ_BUF allocation per small chunk until the
    // chunk is on disk, and free them in bursts from the writer thread.)
    let side = view.side;
    let mut buf = BytesMut::with_capacity(READ_BUF);
    let mut warned = false;
    let mut stop = sh.stop.clone();
    // One wait for the proxy to stop, for the pump's whole life: made once, not at
    // every read and write (each would register with the watch and drop out again).
    let stopping = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    tokio::pin!(stopping);
    let mut stopped = false;
    while !stopped {
        buf.clear();
        let n = tokio::select! {
            r = r.read_buf(&mut buf) => match r {
                Ok(n) => n,
                // A TLS peer that closes its TCP side without close_notify (small
                // devices often do) has closed, not failed: mirrored like a FIN.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
                Err(e) => return Err(Broken::Read(side, e)),
            },
            _ = &mut stopping => return Ok(Ended::Stopped),
        };
        let t = sh.clock.now_us();
        activity.store(t, Ordering::Relaxed);
        if n == 0 {
            w.shutdown().await.map_err(|e| Broken::Write(side, e))?;
            tap(sh, conn, t, EventKind::Fin { side }, None).await;
            return Ok(Ended::Eof);
        }
        // Forward first: analysis and recording never delay these bytes. A peer that
        // does not read cannot hold up a stopping proxy.
        // (flush: a TLS writer may hold records back; for TCP it does nothing.)
        let forward = async {
            w.write_all(&buf).await?;
            w.flush().await
        };
        tokio::pin!(forward);
        // Nearly always the socket takes the bytes at once: then no timer is set
        // and no wait is registered.
        let at_once = std::future::poll_fn(|cx| {
            std::task::Poll::Ready(match forward.as_mut().poll(cx) {
                std::task::Poll::Ready(r) => Some(r),
                std::task::Poll::Pending => None,
            })
        })
        .await;
        match at_once {
            Some(r) => r.map_err(|e| Broken::Write(side, e))?,
            None => {
                let mut waited = false;
                loop {
                    tokio::select! {
                        r = &mut forward => {
                            r.map_err(|e| Broken::Write(side, e))?;
                            break;
                        }
                        _ = &mut stopping => {
                            stopped = true;
                            break;
                        }
                        // The receiver is not reading: say so (once per write), and keep waiting.
                        _ = tokio::time::sleep(SLOW_READER), if !waited => {
                            waited = true;
                            let who = match side {
                                Side::Client => "the upstream",
                                Side::Server => "the client",
                            };
                            let hit = sh.wait_warning.lock().unwrap_or_else(|e| e.into_inner()).hit();
                            if let Some(more) = hit {
                                tracing::warn!(
                                    "connection {conn} from {}: {who} has not read for {} s; \
                                     forwarding {} waits for it (not for edgetap){}",
                                    view.peer,
                                    SLOW_READER.as_secs(),
                                    side.arrow(),
                                    more_times(more)
                                );
                            }
                        }
                    }
                }
            }
        }
        let (chunk, opaque) = match view.copy(&mut buf) {
            Ok(Some(Copied::Mqtt(c))) => (c, false),
            Ok(Some(Copied::Opaque(c))) => (c, true),
            Ok(None) => continue,
            Err(reason) => {
                tracing::info!("connection {conn}: not decodable: {reason}");
                let kind = TapKind::NotDecodable {
                    client: view.peer,
                    server: view.server,
                    reason,
                };
                sh.tap
                    .send(Tap {
                        conn,
                        time_us: t,
                        kind,
                        permit: None,
                    })
                    .await;
                continue;
            }
        };
        let want = chunk.len().min(sh.settings.max_buffered) as u32;
        let permit = match budget.clone().try_acquire_many_owned(want) {
            Ok(p) => p,
            Err(_) => {
                let hit = if warned {
                    None
                } else {
                    warned = true;
                    sh.wait_warning
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .hit()
                };
                if let Some(more) = hit {
                    tracing::warn!(
                        "connection {conn} from {}: {} bytes read are not yet on disk \
                         (--max-buffered); forwarding {} waits for the store to write them \
                         (lossless recording){}",
                        view.peer,
                        sh.settings.max_buffered,
                        side.arrow(),
                        more_times(more)
                    );
                }
                budget
                    .clone()
                    .acquire_many_owned(want)
                    .await
                    .expect("budget semaphore never closed")
            }
        };
        let kind = if opaque {
            EventKind::Opaque { side, bytes: chunk }
        } else {
            EventKind::Data { side, bytes: chunk }
        };
        tap(sh, conn, t, kind, Some(permit)).await;
    }
    Ok(Ended::Stopped)
}
