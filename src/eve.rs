//! Findings as a stream, one JSON object per line, in the shape of Suricata's EVE
//! log (`timestamp`, `event_type`, then the event's fields): what log shippers
//! (Vector, Filebeat, Logstash) take into Elasticsearch as they are.
//!
//! One line per finding:
//!
//! ```text
//! {"timestamp":"2026-12-07T09:41:02.518233Z","event_type":"finding","edge":"E1",
//!  "rule":"t10.REP_SYS_STATUS","severity":"error","clause":"6.1.3","table":"10",
//!  "basis":"表10 \"cpuRate number 是\" …","type":"REP_SYS_STATUS",
//!  "topic":"/v1/E1/device/data","mid":17,"message":"param.cpuRate: …",
//!  "excerpt":"{\"mid\":17,\"type\":\"REP_SYS_STATUS\",…",
//!  "seen":{"by":"watch","source":"127.0.0.1:1883","frame":412}}
//! ```
//!
//! `timestamp` is the time of the message the finding cites (RFC 3339, UTC, µs;
//! the time of writing for a finding that cites none);
//! `excerpt` the start of its payload when the front end had it at hand (at most
//! [`EXCERPT_CHARS`] characters, control characters escaped), else absent; `seen`
//! says where: which front end, its input (broker, capture file, store capture)
//! and the unit it counts (delivery, frame, event). Fields the finding lacks are
//! absent, never null. A [`FindingLog`] is a [`Sink`] of findings: any front end
//! hands it what its pipeline emits.

use std::io::Write;

use serde::Serialize;

use crate::finding::Finding;
use crate::pipeline::Sink;

/// Characters of a payload an excerpt keeps.
pub const EXCERPT_CHARS: usize = 200;

/// Where a finding was seen: the front end, its input, the unit it counts.
#[derive(Debug, Clone, Serialize)]
pub struct Seen<'a> {
    pub by: &'a str,
    pub source: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frame: Option<u64>,
}

#[derive(Serialize)]
struct Line<'a> {
    timestamp: String,
    event_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    edge: Option<&'a str>,
    rule: &'a str,
    severity: &'a str,
    clause: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    table: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    basis: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    msg_type: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    topic: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mid: Option<u64>,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    excerpt: Option<&'a str>,
    seen: Seen<'a>,
}

/// The start of a payload for a finding line: at most [`EXCERPT_CHARS`]
/// characters, invalid UTF-8 replaced, control characters escaped.
pub fn excerpt(payload: &[u8]) -> String {
    let text = String::from_utf8_lossy(&payload[..payload.len().min(EXCERPT_CHARS * 4)]);
    let cut: String = text.chars().take(EXCERPT_CHARS).collect();
    crate::finding::printable(&cut).into_owned()
}

/// Writes findings as EVE lines to a file or stdout.
pub struct FindingLog {
    out: Box<dyn Write + Send>,
    by: String,
    source: String,
    /// Lines written.
    pub written: u64,
    /// The first write error (the log stops there; the run goes on).
    pub error: Option<std::io::Error>,
}

impl FindingLog {
    /// `by`: the front end (`watch`, `proxy`, `analyze`); `source`: its input.
    pub fn new(out: Box<dyn Write + Send>, by: &str, source: &str) -> FindingLog {
        FindingLog {
            out,
            by: by.to_string(),
            source: source.to_string(),
            written: 0,
            error: None,
        }
    }

    /// `-` for stdout, else a file created (or truncated) at `path`.
    pub fn open(path: &std::path::Path, by: &str, source: &str) -> std::io::Result<FindingLog> {
        let out: Box<dyn Write + Send> = if path.as_os_str() == "-" {
            Box::new(std::io::BufWriter::new(std::io::stdout()))
        } else {
            Box::new(std::io::BufWriter::new(std::fs::File::create(path)?))
        };
        Ok(FindingLog::new(out, by, source))
    }

    /// One line for `f`, with the payload excerpt when known; `source` overrides
    /// the log's own (a capture of several files names the file).
    pub fn write(&mut self, f: &Finding, excerpt: Option<&str>, source: Option<&str>) {
        if self.error.is_some() {
            return;
        }
        let line = Line {
            timestamp: crate::report::rfc3339(
                f.time
                    .unwrap_or_else(|| chrono::Utc::now().timestamp_micros()),
                0,
            )
            .unwrap_or_default(),
            event_type: "finding",
            edge: f.edge_id.as_deref(),
            rule: &f.rule,
            severity: f.severity.as_str(),
            clause: &f.clause,
            table: f.table.as_deref(),
            basis: f.basis.as_deref(),
            msg_type: f.msg_type.as_deref(),
            topic: f.topic.as_deref(),
            mid: f.mid,
            message: &f.message,
            excerpt,
            seen: Seen {
                by: &self.by,
                source: source.unwrap_or(&self.source),
                frame: f.packet,
            },
        };
        let res = serde_json::to_writer(&mut self.out, &line)
            .map_err(std::io::Error::from)
            .and_then(|_| self.out.write_all(b"\n"));
        match res {
            Ok(()) => self.written += 1,
            Err(e) => self.error = Some(e),
        }
    }

    /// Pushes what is buffered to the file (a reader tailing it sees whole lines).
    pub fn flush(&mut self) {
        if self.error.is_none() {
            if let Err(e) = self.out.flush() {
                self.error = Some(e);
            }
        }
    }
}

impl Sink for FindingLog {
    fn finding(&mut self, f: &Finding) {
        self.write(f, None, None);
    }
}

impl Drop for FindingLog {
    fn drop(&mut self) {
        let _ = self.out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::finding::Severity;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn one_json_object_per_line_with_the_eve_fields_and_no_nulls() {
        let out = Shared::default();
        let mut log = FindingLog::new(Box::new(out.clone()), "watch", "127.0.0.1:1883");
        let f = Finding {
            rule: "t10.REP_SYS_STATUS".into(),
            clause: "6.1.3".into(),
            table: Some("10".into()),
            severity: Severity::Error,
            edge_id: Some("E1".into()),
            msg_type: Some("REP_SYS_STATUS".into()),
            topic: Some("/v1/E1/device/data".into()),
            mid: Some(7),
            packet: Some(12),
            time: Some(1_764_590_000_123_456),
            message: "param.cpuRate: expected required number, seen absent".into(),
            conn: None,
            side: None,
            offset: None,
            basis: Some("表10 \"cpuRate number 是\"".into()),
            from: None,
        };
        log.write(&f, Some(&excerpt(b"{\"mid\":7,\x1b\"type\"")), None);
        let mut bare = f.clone();
        bare.time = None;
        bare.mid = None;
        bare.basis = None;
        log.finding(&bare);
        log.flush();
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        let l = &lines[0];
        assert_eq!(l["timestamp"], "2025-12-01T11:53:20.123456Z");
        assert_eq!(l["event_type"], "finding");
        assert_eq!(l["edge"], "E1");
        assert_eq!(l["severity"], "error");
        assert_eq!(l["type"], "REP_SYS_STATUS");
        assert_eq!(l["seen"]["frame"], 12);
        assert_eq!(l["seen"]["by"], "watch");
        assert!(l["excerpt"].as_str().unwrap().contains("\\u{1b}"), "{l}");
        assert!(!text.contains("null"), "{text}");
        assert!(lines[1]["timestamp"].as_str().unwrap().ends_with('Z'));
        for k in ["mid", "basis", "excerpt"] {
            assert!(lines[1].get(k).is_none(), "{k} in {}", lines[1]);
        }
    }
}
