//! Names on the bus: the subjects records, findings and counts travel on, and the
//! escaping that makes any edge id one subject token.
//!
//! A NATS subject token may not hold `.` (the separator), `*` or `>` (wildcards) or
//! whitespace, and the standard does not restrict an edge id's characters. Each
//! byte outside `!`..`~` (whitespace, control, every byte of a non-ASCII character),
//! each of `.` `*` `>` and the escape character `%` itself is written `%XX` (hex,
//! upper case); everything else stays. Reversible: [`unescape`] of [`escape`] is the
//! id again, and an escaped token is never empty (an empty id is [`NO_EDGE`]).

use crate::finding::Actor;

/// Where watchers publish: `edgetap.msg.<edge>.<direction>`. The server maps it to
/// a partition (see [`super::config`]).
pub const MSG_PREFIX: &str = "edgetap.msg";
/// Where the partitioned records are stored: `edgetap.p.<partition>.<edge>.<direction>`.
pub const PARTITION_PREFIX: &str = "edgetap.p";
/// Findings: `edgetap.finding.<edge>`.
pub const FINDING_PREFIX: &str = "edgetap.finding";
/// Message counts per edge: `edgetap.count.<edge>`.
pub const COUNT_PREFIX: &str = "edgetap.count";
/// What a partition's judge exercised: `edgetap.coverage.p<partition>`.
pub const COVERAGE_PREFIX: &str = "edgetap.coverage";
/// The last record a partition's judge applied: `edgetap.cursor.p<partition>`.
pub const CURSOR_PREFIX: &str = "edgetap.cursor";

/// The token of a record or finding without an edge id (a topic outside
/// `/v1/{edgeId}/…`, a finding about no edge). [`escape`] never yields it: a `%`
/// it writes is always followed by two hex digits.
pub const NO_EDGE: &str = "%none";

/// Which way a message went: published by the edge (`up`: request, reply, data), by
/// the platform (`down`: command, response), or on a topic outside the protocol
/// (`other`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Up,
    Down,
    Other,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Up => "up",
            Direction::Down => "down",
            Direction::Other => "other",
        }
    }

    pub fn parse(s: &str) -> Option<Direction> {
        match s {
            "up" => Some(Direction::Up),
            "down" => Some(Direction::Down),
            "other" => Some(Direction::Other),
            _ => None,
        }
    }
}

/// The edge id and direction of an MQTT topic: the protocol's when it parses,
/// else the second level of `/v1/<edge>/…` (so one device's stray topics still
/// travel with its other messages), else none.
pub fn route(topic: &str) -> (Option<String>, Direction) {
    if let Some(t) = crate::protocol::parse_topic(topic) {
        let dir = match t.publisher {
            Actor::Edge => Direction::Up,
            Actor::Platform => Direction::Down,
        };
        return (Some(t.edge_id), dir);
    }
    let rest = topic.strip_prefix('/').unwrap_or(topic);
    let mut parts = rest.split('/');
    let edge = match (parts.next(), parts.next()) {
        (Some("v1"), Some(e)) if !e.is_empty() => Some(e.to_string()),
        _ => None,
    };
    (edge, Direction::Other)
}

fn kept(b: u8) -> bool {
    (0x21..=0x7e).contains(&b) && !matches!(b, b'.' | b'*' | b'>' | b'%')
}

/// `id` as one subject token (see the module doc); an empty id is [`NO_EDGE`].
pub fn escape(id: &str) -> String {
    if id.is_empty() {
        return NO_EDGE.to_string();
    }
    if id.bytes().all(kept) {
        return id.to_string();
    }
    let mut out = String::with_capacity(id.len() + 8);
    for b in id.bytes() {
        if kept(b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The id [`escape`] wrote as `token`; `None` for a token it cannot have written
/// (a `%` without two hex digits, bytes that are not UTF-8). [`NO_EDGE`] is `""`.
pub fn unescape(token: &str) -> Option<String> {
    if token == NO_EDGE {
        return Some(String::new());
    }
    let b = token.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = token.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else if kept(b[i]) {
            out.push(b[i]);
            i += 1;
        } else {
            return None;
        }
    }
    String::from_utf8(out).ok()
}

/// The subject a watcher publishes a record of `edge` on.
pub fn msg_subject(edge: Option<&str>, dir: Direction) -> String {
    format!(
        "{MSG_PREFIX}.{}.{}",
        escape(edge.unwrap_or("")),
        dir.as_str()
    )
}

/// The filter of partition `k`'s records.
pub fn partition_filter(k: u32) -> String {
    format!("{PARTITION_PREFIX}.{k}.>")
}

/// The subject of a finding about `edge`.
pub fn finding_subject(edge: Option<&str>) -> String {
    format!("{FINDING_PREFIX}.{}", escape(edge.unwrap_or("")))
}

/// The subject of `edge`'s message count.
pub fn count_subject(edge: &str) -> String {
    format!("{COUNT_PREFIX}.{}", escape(edge))
}

/// `(partition, edge token, direction)` of a stored record's subject.
pub fn parse_partition_subject(subject: &str) -> Option<(u32, &str, Direction)> {
    let rest = subject.strip_prefix(PARTITION_PREFIX)?.strip_prefix('.')?;
    let mut it = rest.split('.');
    let k = it.next()?.parse().ok()?;
    let edge = it.next()?;
    let dir = Direction::parse(it.next()?)?;
    match it.next() {
        None => Some((k, edge, dir)),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_ids_stay_and_awkward_ones_are_escaped_reversibly() {
        assert_eq!(escape("TTU-3301_A01"), "TTU-3301_A01");
        for id in [
            "E.1",
            "a*b>c",
            "with space",
            "tab\tnl\n",
            "100%",
            "%41",
            "变电站-1",
            "${edgeId}",
            "",
        ] {
            let token = escape(id);
            assert!(!token.is_empty(), "{id:?}");
            assert!(
                !token.contains(['.', '*', '>', ' ', '\t', '\n']),
                "{id:?} → {token:?}"
            );
            assert!(token.is_ascii(), "{id:?} → {token:?}");
            assert_eq!(unescape(&token).as_deref(), Some(id), "{id:?} → {token:?}");
        }
        assert_eq!(escape("E.1"), "E%2E1");
        assert_eq!(escape("100%"), "100%25");
    }

    #[test]
    fn a_token_escape_cannot_have_written_is_refused() {
        assert_eq!(unescape("E%2"), None);
        assert_eq!(unescape("E%ZZ"), None);
        assert_eq!(unescape("%FF"), None, "not UTF-8");
        assert_eq!(unescape("a b"), None);
    }

    #[test]
    fn topics_route_by_their_edge_and_publisher() {
        assert_eq!(
            route("/v1/E1/device/request"),
            (Some("E1".into()), Direction::Up)
        );
        assert_eq!(
            route("/v1/E1/device/command"),
            (Some("E1".into()), Direction::Down)
        );
        assert_eq!(route("/v1/E1/odd"), (Some("E1".into()), Direction::Other));
        assert_eq!(route("/v2/x"), (None, Direction::Other));
        assert_eq!(
            msg_subject(Some("E.1"), Direction::Up),
            "edgetap.msg.E%2E1.up"
        );
        assert_eq!(
            msg_subject(None, Direction::Other),
            "edgetap.msg.%none.other"
        );
        assert_eq!(
            parse_partition_subject("edgetap.p.3.E%2E1.down"),
            Some((3, "E%2E1", Direction::Down))
        );
        assert_eq!(parse_partition_subject("edgetap.p.x.E.up"), None);
    }
}
