//! `fleet --http ADDR`: the fleet's report while `fleet` reads, served by the live
//! view's server ([`crate::proxy::http::serve`]: its connection cap, timeouts and
//! token first). Routes (GET only):
//! - `/` the HTML page `fleet --format html` writes, of what was read so far
//!   (reloads itself every [`crate::proxy::http::REFRESH_S`] s);
//! - `/api/report` the JSON `fleet --format json` writes;
//! - `/metrics` Prometheus text format: findings read, edges, messages.
//!
//! `/` and `/api/report` take the live view's filters as query parameters (`edge`,
//! `severity`, `rule`, `clause`), on top of the command line's.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use hyper::{Body, Response, StatusCode};

use super::{Fleet, View};
use crate::proxy::http::{error, filter_of, live_links, respond, Pages};
use crate::report::{self, Format, Listing, Options};

/// What `fleet --http` serves: the fleet being read, shown as the final report is.
pub struct FleetPages {
    pub fleet: Arc<Mutex<Fleet>>,
    pub view: Arc<View>,
    /// How the HTML lists findings (`--each`).
    pub listing: Listing,
}

impl FleetPages {
    /// The fleet so far (a copy taken under the lock; the report is built after it).
    fn snapshot(&self) -> Fleet {
        self.fleet.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Pages for FleetPages {
    fn page(&self, path: &str, q: &[(String, String)]) -> Response<Body> {
        let filter = match filter_of(q) {
            Ok(f) => f,
            Err(e) => return error(StatusCode::BAD_REQUEST, &e),
        };
        let format = match path {
            "/" | "/index.html" => Format::Html,
            "/api/report" => Format::Json,
            "/metrics" => return metrics(&self.snapshot()),
            _ => {
                return error(
                    StatusCode::NOT_FOUND,
                    "not found: see /, /api/report, /metrics",
                )
            }
        };
        let mut report = self.view.report(self.snapshot());
        report.apply(&filter);
        let doc = self.view.document(&report);
        let links = live_links(q);
        let options = Options {
            live: (format == Format::Html).then_some(&links),
            ..Options::listing(self.listing)
        };
        let text = report::render(&doc, format, &options);
        match format {
            Format::Html => respond(StatusCode::OK, "text/html; charset=utf-8", text),
            _ => respond(StatusCode::OK, "application/json", text),
        }
    }
}

fn metrics(fleet: &Fleet) -> Response<Body> {
    let (mut edges, mut messages) = (0u64, 0u64);
    for (_, n) in fleet.edges() {
        edges += 1;
        messages += n;
    }
    let mut out = String::new();
    for (name, kind, help, v) in [
        (
            "edgetap_fleet_findings_total",
            "counter",
            "Findings read from the bus.",
            fleet.findings,
        ),
        (
            "edgetap_fleet_edges",
            "gauge",
            "Edges with a message count.",
            edges,
        ),
        (
            "edgetap_fleet_messages_total",
            "counter",
            "Messages judged, by the judges' latest counts.",
            messages,
        ),
        (
            "edgetap_fleet_unreadable_total",
            "counter",
            "Messages of the judges that could not be read.",
            fleet.unreadable,
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
        );
    }
    respond(
        StatusCode::OK,
        "text/plain; version=0.0.4; charset=utf-8",
        out,
    )
}
