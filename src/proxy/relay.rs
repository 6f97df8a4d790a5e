//! One proxied connection: two pumps (device → upstream, upstream → device) that
//! forward each read at once, then hand a copy to the analysis task.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use super::tap::Tap;
use super::{upstream_guess, Shared, READ_BUF};
use crate::finding::{ConnId, Side};
use crate::store::EventKind;

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

    let budget = Arc::new(Semaphore::new(sh.settings.max_buffered));
    let (mut cr, mut cw) = client.into_split();
    let (mut ur, mut uw) = upstream.into_split();
    let end: Result<&'static str, Broken> = {
        let to_upstream = pump(&mut cr, &mut uw, Side::Client, conn, &sh, &budget);
        let to_client = pump(&mut ur, &mut cw, Side::Server, conn, &sh, &budget);
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
            }
            match (up, down) {
                (Some(Ended::Eof), Some(Ended::Eof)) => break Ok("closed"),
                (Some(_), Some(_)) => break Ok("shutdown"),
                _ => {}
            }
        }
    };
    let how = match end {
        Ok(how) => {
            // A normal close or the proxy stopping: FIN to both (dropping the halves).
            drop((cr, cw, ur, uw));
            how.to_string()
        }
        Err(b) => {
            let how = b.describe();
            tracing::info!("connection {conn} from {peer}: {how}; resetting both sides");
            reset(cr, cw);
            reset(ur, uw);
            how
        }
    };
    let t = sh.clock.now_us();
    tap(&sh, conn, t, EventKind::End { how }, None).await;
}

/// Closes a socket with RST instead of FIN.
fn reset(r: OwnedReadHalf, w: OwnedWriteHalf) {
    let _ = w.as_ref().set_zero_linger();
    // Without forget(), dropping the write half would send a FIN first.
    w.forget();
    drop(r);
}

async fn tap(
    sh: &Shared,
    conn: ConnId,
    time_us: i64,
    kind: EventKind,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
) {
    // The analysis task outlives every connection task; a send fails only if it
    // died, and then forwarding goes on without it.
    let _ = sh
        .tap
        .send(Tap {
            conn,
            time_us,
            kind,
            permit,
        })
        .await;
}

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
async fn pump(
    r: &mut OwnedReadHalf,
    w: &mut OwnedWriteHalf,
    side: Side,
    conn: ConnId,
    sh: &Shared,
    budget: &Arc<Semaphore>,
) -> Result<Ended, Broken> {
    // One read buffer per direction, reused: what is read is forwarded from it, then
    // copied into an exact-size chunk for analysis. (Handing out slices of the read
    // buffer instead would pin a whole READ_BUF allocation per small chunk until the
    // chunk is on disk, and free them in bursts from the writer thread.)
    let mut buf = BytesMut::with_capacity(READ_BUF);
    let mut warned = false;
    let mut stop = sh.stop.clone();
    let mut stopped = false;
    while !stopped {
        buf.clear();
        let n = tokio::select! {
            r = r.read_buf(&mut buf) => r.map_err(|e| Broken::Read(side, e))?,
            _ = stop.wait_for(|s| *s) => return Ok(Ended::Stopped),
        };
        let t = sh.clock.now_us();
        if n == 0 {
            w.shutdown().await.map_err(|e| Broken::Write(side, e))?;
            tap(sh, conn, t, EventKind::Fin { side }, None).await;
            return Ok(Ended::Eof);
        }
        // Forward first: analysis and recording never delay these bytes. A peer that
        // does not read cannot hold up a stopping proxy.
        tokio::select! {
            r = w.write_all(&buf) => r.map_err(|e| Broken::Write(side, e))?,
            _ = stop.wait_for(|s| *s) => stopped = true,
        }
        let chunk = Bytes::copy_from_slice(&buf);
        let want = n.min(sh.settings.max_buffered) as u32;
        let permit = match budget.clone().try_acquire_many_owned(want) {
            Ok(p) => p,
            Err(_) => {
                if !warned {
                    warned = true;
                    tracing::warn!(
                        "connection {conn}: {} bytes buffered for analysis and recording; \
                         forwarding {} waits for the store (lossless recording)",
                        sh.settings.max_buffered,
                        side.arrow()
                    );
                }
                budget
                    .clone()
                    .acquire_many_owned(want)
                    .await
                    .expect("budget semaphore never closed")
            }
        };
        tap(
            sh,
            conn,
            t,
            EventKind::Data { side, bytes: chunk },
            Some(permit),
        )
        .await;
    }
    Ok(Ended::Stopped)
}
