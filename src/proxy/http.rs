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

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use hyper::{Body, Method, Request, Response, StatusCode};

use crate::finding::Severity;
use crate::proxy::live::LiveView;
use crate::report::filter::Filter;
use crate::report::html::LiveLinks;
use crate::report::{self, Document, Format, Options};

/// Seconds between reloads of the live page.
pub const REFRESH_S: u32 = 5;
/// Findings `/api/findings` returns at most.
pub const MAX_FINDINGS: usize = crate::proxy::live::LIVE_FINDINGS;

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

/// Serves `listener` until `shutdown` completes.
pub async fn serve(
    listener: std::net::TcpListener,
    view: Arc<LiveView>,
    token: Option<String>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), hyper::Error> {
    // Set here: hyper takes the listener as it is.
    let _ = listener.set_nonblocking(true);
    let token = Arc::new(token.filter(|t| !t.is_empty()));
    let make = hyper::service::make_service_fn(move |_conn| {
        let (view, token) = (view.clone(), token.clone());
        async move {
            Ok::<_, Infallible>(hyper::service::service_fn(move |req| {
                let r = answer(&req, &view, token.as_deref());
                async move { Ok::<_, Infallible>(r) }
            }))
        }
    });
    hyper::Server::from_tcp(listener)?
        .serve(make)
        .with_graceful_shutdown(shutdown)
        .await
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

fn respond(status: StatusCode, kind: &str, body: String) -> Response<Body> {
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

fn json(value: &impl serde::Serialize) -> Response<Body> {
    match serde_json::to_string_pretty(value) {
        Ok(s) => respond(StatusCode::OK, "application/json", s + "\n"),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

fn error(status: StatusCode, message: &str) -> Response<Body> {
    let body = serde_json::json!({ "error": message }).to_string() + "\n";
    respond(status, "application/json", body)
}

fn answer(req: &Request<Body>, view: &LiveView, token: Option<&str>) -> Response<Body> {
    let q = query(req);
    if !authorized(req, &q, token) {
        return error(
            StatusCode::UNAUTHORIZED,
            "this live view needs its token: send `Authorization: Bearer TOKEN` or add ?token=TOKEN",
        );
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return error(StatusCode::METHOD_NOT_ALLOWED, "only GET is served");
    }
    let filter = match filter_of(&q) {
        Ok(f) => f,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e),
    };
    match req.uri().path() {
        "/" | "/index.html" => {
            // Links keep the token the page was opened with.
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
            let links = LiveLinks {
                refresh_s: REFRESH_S,
                api: format!("/api/report{suffix}"),
                metrics: format!("/metrics{suffix}"),
            };
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
