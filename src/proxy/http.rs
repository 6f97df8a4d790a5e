//! The live view's HTTP server (`edgetap proxy --http ADDR`): the HTML record of the
//! running proxy, a JSON API for scripts and Prometheus metrics, all read from a
//! [`LiveView`] the analysis thread keeps up to date.
//!
//! Routes (GET only):
//! - `/` the HTML record (reloads itself every [`REFRESH_S`] s);
//! - `/api/captures` the capture being recorded, with its counters, then the
//!   store's earlier captures;
//! - `/api/clauses`, `/api/edges`, `/api/findings` (`limit`, default 1000, the
//!   latest), `/api/report` (what `analyze --format json` gives);
//! - `/metrics` Prometheus text format.
//!
//! `/`, `/api/clauses`, `/api/edges`, `/api/findings` and `/api/report` take the
//! filters of the CLI as query parameters: `edge`, `severity`, `rule`, `clause`
//! (repeatable, or comma-separated).
//!
//! Access: it serves captured traffic, so it binds to loopback unless a token is
//! set ([`check_bind`]); with a token every request must carry it, as
//! `Authorization: Bearer TOKEN` or `?token=TOKEN`. It never serves credentials: the
//! live view holds none.
//!
//! The server is generic over [`Pages`]: the proxy's and `watch`'s [`LiveView`]
//! above, and `fleet --http`'s aggregate (`bus::fleet::page`), behind the same
//! admission, limits and token.
//!
//! It cannot hurt the MQTT side ([`serve`] says how): a connection cap of its own,
//! header timeout and request deadline, the token checked before anything is held,
//! pages built off the runtime threads, refusals counted rather than logged one by
//! one.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::{Body, Method, Request, Response, StatusCode};
use tokio::sync::Semaphore;

use super::admission::{Admission, Dropped, HttpLog, Slots, Ticket};

use crate::finding::Severity;
use crate::proxy::live::LiveView;
use crate::report::filter::Filter;
use crate::report::html::LiveLinks;
use crate::report::{self, Document, Format, Options};

/// Seconds between reloads of the live page.
pub const REFRESH_S: u32 = 5;
/// Findings `/api/findings` returns at most.
pub const MAX_FINDINGS: usize = crate::proxy::live::LIVE_FINDINGS;

/// What a live server answers: the pages of one running command. Called on a
/// blocking thread, [`HttpLimits::renders`] at a time, once the request carried the
/// token and is a GET or HEAD; `q` is the decoded query.
pub trait Pages: Send + Sync + 'static {
    fn page(&self, path: &str, q: &[(String, String)]) -> Response<Body>;
}

impl Pages for LiveView {
    fn page(&self, path: &str, q: &[(String, String)]) -> Response<Body> {
        live_page(path, q, self)
    }
}

/// The links of a live page (its reload, its JSON, its metrics), keeping the token
/// the page was opened with.
pub fn live_links(q: &[(String, String)]) -> LiveLinks {
    let suffix = q
        .iter()
        .find(|(k, _)| k == "token")
        .map(|(_, t)| {
            format!(
                "?{}",
                form_urlencoded::Serializer::new(String::new())
                    .append_pair("token", t)
                    .finish()
            )
        })
        .unwrap_or_default();
    LiveLinks {
        refresh_s: REFRESH_S,
        api: format!("/api/report{suffix}"),
        metrics: format!("/metrics{suffix}"),
    }
}

/// Refuses a non-loopback address without a token, with what to do instead.
pub fn check_bind(addr: &SocketAddr, token: Option<&str>) -> Result<(), String> {
    if addr.ip().is_loopback() || token.is_some_and(|t| !t.is_empty()) {
        return Ok(());
    }
    Err(format!(
        "--http {addr} is not a loopback address: the live view shows captured traffic, \
         so it needs a token: add --http-token TOKEN (clients then send \
         `Authorization: Bearer TOKEN` or `?token=TOKEN`), or bind to 127.0.0.1"
    ))
}

/// The live view's own limits: what its clients may hold (see [`serve`]).
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// Connections held at once (`--http-max-connections`).
    pub max_connections: usize,
    /// From accepting a connection to having read its request head; a half-sent
    /// request is dropped then.
    pub header_timeout: Duration,
    /// From accepting a connection to the end of its response (slow bodies, slow
    /// readers).
    pub deadline: Duration,
    /// Pages and API answers built at once (each on a blocking thread).
    pub renders: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_connections: 64,
            header_timeout: Duration::from_secs(5),
            deadline: Duration::from_secs(30),
            renders: 2,
        }
    }
}

/// Request heads larger than this are refused (hyper answers 431).
const MAX_HEAD: usize = 16 * 1024;
/// Written to a connection refused at the cap, without waiting for it.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 5\r\n\
    Content-Length: 0\r\nConnection: close\r\n\r\n";

/// Serves `listener` until `shutdown` completes.
///
/// The HTTP is hyper's (in the build already through rumqttd; axum would add routing
/// this handful of GET paths does not need): parsing, `431` for huge heads,
/// `Connection: close`. The accept loop is ours, because hyper 0.14's `Server`
/// accepts without a cap and holds a connection as long as the client likes, which
/// is what let 1,100 half-sent requests starve the MQTT side of descriptors:
///
/// - at most [`HttpLimits::max_connections`]; when they are all taken the oldest one
///   that has not sent its request gives way ([`super::admission`]), and when all
///   are answering requests a newcomer gets `503` at once;
/// - a request head not complete within [`HttpLimits::header_timeout`] closes the
///   connection; the whole exchange ends by [`HttpLimits::deadline`]; no body is
///   ever read (GET only) and there is no keep-alive, so one connection is one
///   request: a reloading page reconnects, which costs nothing on a LAN;
/// - the token is the first thing checked once the head is read: a request without
///   it gets `401` and the connection closes; it takes no render slot and no lock of
///   the live view;
/// - pages are built on blocking threads, [`HttpLimits::renders`] at a time, never
///   on the runtime threads that forward MQTT;
/// - refusals are counted and logged as one summary line per 10 s.
pub async fn serve<P: Pages>(
    listener: std::net::TcpListener,
    view: Arc<P>,
    token: Option<String>,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let shared = Arc::new(Served {
        view,
        token: token.filter(|t| !t.is_empty()),
        limits,
        slots: Slots::new(limits.max_connections),
        renders: Arc::new(Semaphore::new(limits.renders.max(1))),
        log: HttpLog::new(limits.header_timeout),
    });
    let mut summary = tokio::time::interval(HttpLog::EVERY);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((sock, _peer)) => match shared.slots.admit() {
                    Admission::Admitted(t) => {
                        tokio::spawn(one_connection(sock, t, shared.clone()));
                    }
                    Admission::Evicting(t) => {
                        shared.log.note(Dropped::Evicted);
                        tokio::spawn(one_connection(sock, t, shared.clone()));
                    }
                    Admission::Full => {
                        let _ = sock.try_write(BUSY);
                        shared.log.note(Dropped::Full);
                    }
                },
                Err(_) => {
                    shared.log.note(Dropped::Accept);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = summary.tick() => shared.log.flush(),
            _ = &mut shutdown => break,
        }
    }
    shared.log.flush();
    Ok(())
}

/// What every connection of the live view shares.
struct Served<P> {
    view: Arc<P>,
    token: Option<String>,
    limits: HttpLimits,
    slots: Arc<Slots>,
    renders: Arc<Semaphore>,
    log: HttpLog,
}

/// Serves one connection (one request) within the limits.
async fn one_connection<P: Pages>(sock: tokio::net::TcpStream, ticket: Ticket, sh: Arc<Served<P>>) {
    let (seen_tx, mut seen_rx) = tokio::sync::oneshot::channel::<bool>();
    let mut seen_tx = Some(seen_tx);
    let ticket = Arc::new(ticket);
    let t = ticket.clone();
    let sh2 = sh.clone();
    let service = hyper::service::service_fn(move |req: Request<Body>| {
        // The head is read: this connection can no longer be given up for a newer one.
        let served = t.requested();
        if let Some(tx) = seen_tx.take() {
            let _ = tx.send(served);
        }
        let sh = sh2.clone();
        async move { Ok::<_, Infallible>(respond_to(req, &sh).await) }
    });
    let mut http = hyper::server::conn::Http::new();
    http.http1_only(true)
        .http1_keep_alive(false)
        .max_buf_size(MAX_HEAD);
    let conn = http.serve_connection(sock, service);
    tokio::pin!(conn);
    let head = tokio::time::sleep(sh.limits.header_timeout);
    tokio::pin!(head);
    let deadline = tokio::time::sleep(sh.limits.deadline);
    tokio::pin!(deadline);
    let mut requested = false;
    loop {
        tokio::select! {
            _ = &mut conn => return,
            r = &mut seen_rx, if !requested => match r {
                Ok(true) => requested = true,
                // Evicted while its head was read: closed unanswered.
                Ok(false) | Err(_) => return,
            },
            _ = &mut head, if !requested => {
                sh.log.note(Dropped::HeaderTimeout);
                return;
            }
            _ = ticket.evicted(), if !requested => return,
            _ = &mut deadline => {
                sh.log.note(Dropped::Deadline);
                return;
            }
        }
    }
}

/// The token first: a request without it is answered at once, holding nothing.
async fn respond_to<P: Pages>(req: Request<Body>, sh: &Served<P>) -> Response<Body> {
    let q = query(&req);
    if !authorized(&req, &q, sh.token.as_deref()) {
        sh.log.note(Dropped::Unauthorized);
        return error(
            StatusCode::UNAUTHORIZED,
            "this live view needs its token: send `Authorization: Bearer TOKEN` or add ?token=TOKEN",
        );
    }
    let Ok(_render) = sh.renders.clone().acquire_owned().await else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "the live view is stopping");
    };
    let view = sh.view.clone();
    let (parts, _body) = req.into_parts();
    tokio::task::spawn_blocking(move || answer(&parts.method, &parts.uri, &q, &*view))
        .await
        .unwrap_or_else(|e| error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()))
}

/// The query parameters, decoded.
fn query(req: &Request<Body>) -> Vec<(String, String)> {
    req.uri()
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}

fn authorized(req: &Request<Body>, q: &[(String, String)], token: Option<&str>) -> bool {
    let Some(token) = token else { return true };
    let bearer = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let given = bearer.or_else(|| {
        q.iter()
            .find(|(k, _)| k == "token")
            .map(|(_, v)| v.as_str())
    });
    given.is_some_and(|g| same(g.as_bytes(), token.as_bytes()))
}

/// Compares without stopping at the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The report filter of `edge`, `severity`, `rule` and `clause`.
pub fn filter_of(q: &[(String, String)]) -> Result<Filter, String> {
    let mut f = Filter::default();
    for (k, v) in q {
        let values = v.split(',').map(str::trim).filter(|s| !s.is_empty());
        match k.as_str() {
            "edge" => f.edges.extend(values.map(String::from)),
            "rule" => f.rules.extend(values.map(String::from)),
            "clause" => f.clauses.extend(values.map(String::from)),
            "severity" => {
                f.min_severity = Some(match v.as_str() {
                    "error" => Severity::Error,
                    "warning" => Severity::Warning,
                    "info" => Severity::Info,
                    other => {
                        return Err(format!(
                            "severity={other}: use error, warning or info (the lowest shown)"
                        ))
                    }
                })
            }
            _ => {}
        }
    }
    Ok(f)
}

pub fn respond(status: StatusCode, kind: &str, body: String) -> Response<Body> {
    let mut r = Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, kind)
        .header(hyper::header::CACHE_CONTROL, "no-store")
        // The page loads nothing; the browser is told so too.
        .header(
            "Content-Security-Policy",
            "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'",
        )
        .header("X-Content-Type-Options", "nosniff");
    if status == StatusCode::UNAUTHORIZED {
        r = r.header(hyper::header::WWW_AUTHENTICATE, "Bearer");
    }
    r.body(Body::from(body))
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

pub fn json(value: &impl serde::Serialize) -> Response<Body> {
    match serde_json::to_string_pretty(value) {
        Ok(s) => respond(StatusCode::OK, "application/json", s + "\n"),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

pub fn error(status: StatusCode, message: &str) -> Response<Body> {
    let body = serde_json::json!({ "error": message }).to_string() + "\n";
    respond(status, "application/json", body)
}

/// The answer to an authorized request.
fn answer<P: Pages + ?Sized>(
    method: &Method,
    uri: &hyper::Uri,
    q: &[(String, String)],
    pages: &P,
) -> Response<Body> {
    if method != Method::GET && method != Method::HEAD {
        return error(StatusCode::METHOD_NOT_ALLOWED, "only GET is served");
    }
    pages.page(uri.path(), q)
}

/// The proxy's and `watch`'s live view.
fn live_page(path: &str, q: &[(String, String)], view: &LiveView) -> Response<Body> {
    let filter = match filter_of(q) {
        Ok(f) => f,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e),
    };
    match path {
        "/" | "/index.html" => {
            let links = live_links(q);
            let report = view.report(&filter);
            let page = report::render(
                &Document::of(&report).titled("edgetap live view"),
                Format::Html,
                &Options {
                    live: Some(&links),
                    ..Options::default()
                },
            );
            respond(StatusCode::OK, "text/html; charset=utf-8", page)
        }
        "/api" => json(&serde_json::json!({
            "endpoints": ["/api/captures", "/api/clauses", "/api/edges", "/api/findings",
                          "/api/report", "/metrics"],
            "filters": ["edge", "severity", "rule", "clause"],
        })),
        "/api/captures" => json(&view.captures()),
        "/api/clauses" => json(&view.report(&filter).clauses),
        "/api/edges" => json(&view.report(&filter).edges),
        "/api/report" => json(&view.report(&filter)),
        "/api/findings" => {
            let limit = match q.iter().find(|(k, _)| k == "limit") {
                None => 1000,
                Some((_, v)) => match v.parse::<usize>() {
                    Ok(n) => n.min(MAX_FINDINGS),
                    Err(_) => {
                        return error(StatusCode::BAD_REQUEST, "limit takes a number of findings")
                    }
                },
            };
            json(&view.findings(&filter, limit))
        }
        "/metrics" => respond(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            view.metrics(),
        ),
        _ => error(
            StatusCode::NOT_FOUND,
            "not found: see /, /api/captures, /api/clauses, /api/edges, /api/findings, /api/report, /metrics",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_loopback_needs_a_token() {
        let any: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        let lo: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let lo6: SocketAddr = "[::1]:8080".parse().unwrap();
        assert!(check_bind(&lo, None).is_ok());
        assert!(check_bind(&lo6, None).is_ok());
        let e = check_bind(&any, None).unwrap_err();
        assert!(e.contains("--http-token"), "{e}");
        assert!(check_bind(&any, Some("")).is_err());
        assert!(check_bind(&any, Some("s3cret")).is_ok());
    }

    #[test]
    fn filters_parse_like_the_cli_and_bad_severity_is_named() {
        let q = |s: &str| -> Vec<(String, String)> {
            form_urlencoded::parse(s.as_bytes()).into_owned().collect()
        };
        let f = filter_of(&q("edge=E1,E2&severity=warning&rule=t10.&clause=6.1.3")).unwrap();
        assert_eq!(f.edges, vec!["E1", "E2"]);
        assert_eq!(f.min_severity, Some(Severity::Warning));
        assert_eq!(
            (f.rules[0].as_str(), f.clauses[0].as_str()),
            ("t10.", "6.1.3")
        );
        assert!(filter_of(&q("severity=fatal"))
            .unwrap_err()
            .contains("severity=fatal"));
    }
}
