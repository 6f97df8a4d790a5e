//! Findings: the product of every stage. A decode failure is a finding too.

use std::fmt::Write as _;

use serde::Serialize;

/// Identifies one TCP connection inside one analysis run.
pub type ConnId = u64;

/// Who sent a chunk of bytes on a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// Bytes from the TCP client (the MQTT client) to the server (the broker).
    Client,
    /// Bytes from the server (the broker) to the client.
    Server,
}

impl Side {
    pub fn index(self) -> usize {
        match self {
            Side::Client => 0,
            Side::Server => 1,
        }
    }
    pub fn arrow(self) -> &'static str {
        match self {
            Side::Client => "client→server",
            Side::Server => "server→client",
        }
    }
}

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Error,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

/// One check that failed, with where it happened. Field names are the JSON contract
/// of `edgetap analyze --format json`, and read back from the bus (`edgetap fleet`).
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct Finding {
    pub rule: String,
    pub clause: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    pub severity: Severity,
    pub edge_id: Option<String>,
    #[serde(rename = "type")]
    pub msg_type: Option<String>,
    pub topic: Option<String>,
    pub mid: Option<u64>,
    /// Frame number in the capture (1-based, as Wireshark numbers them) or the
    /// chunk number in a proxy store: the unit the front end counts.
    pub packet: Option<u64>,
    /// Microseconds since the Unix epoch.
    pub time: Option<i64>,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conn: Option<ConnId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub side: Option<Side>,
    /// Byte offset in the connection's stream (that side) where the problem starts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// The sentence of the standard the rule enforces (its clause or table, and the
    /// text verbatim): why this is a finding.
    /// Shared with the rule: findings are many, the sentences few (serde's `rc`
    /// feature serialises it as a plain string).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub basis: Option<std::sync::Arc<str>>,
    /// Who published the message the finding cites: the edge or the platform (by
    /// its topic's role). With the platform under test, its faults are named as
    /// its own, not as the edge's whose topic carried them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<Actor>,
}

impl Finding {
    /// A finding no rule of the rule set makes (a set-up or a test plan's verdict):
    /// its id, clause, severity, edge and message, and nothing it could cite. The
    /// caller adds where it was seen (`..Finding::about(…)`).
    pub fn about(
        rule: String,
        clause: String,
        severity: Severity,
        edge: &str,
        message: String,
    ) -> Finding {
        Finding {
            rule,
            clause,
            table: None,
            severity,
            edge_id: Some(edge.to_string()),
            msg_type: None,
            topic: None,
            mid: None,
            packet: None,
            time: None,
            message,
            conn: None,
            side: None,
            offset: None,
            basis: None,
            from: None,
        }
    }
}

/// ` edge E1` in a finding's line, and ` edge E1 (platform's message)` when the
/// platform published the message it cites: the platform's faults are not read as
/// the edge's.
pub fn edge_label(edge: &str, from: Option<Actor>) -> String {
    match from {
        Some(Actor::Platform) => format!(" edge {edge} (platform's message)"),
        _ => format!(" edge {edge}"),
    }
}

/// `s` with every control character written as a `\u{..}` escape: device-chosen
/// text (a `type`, a `msg`, a topic) reaches terminals, logs and JUnit XML, where
/// an ESC could rewrite the operator's screen and a NUL makes the XML unreadable.
pub fn printable(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// [`printable`] of a piece of text ending with the newline or tab it keeps.
pub fn printable_line(piece: &str) -> std::borrow::Cow<'_, str> {
    match piece.char_indices().last() {
        Some((i, c @ ('\n' | '\r' | '\t'))) => {
            std::borrow::Cow::Owned(format!("{}{c}", printable(&piece[..i])))
        }
        _ => printable(piece),
    }
}

/// [`printable`] of a text of several lines: newlines and tabs are kept.
pub fn printable_text(s: &str) -> String {
    s.split_inclusive(['\n', '\r', '\t'])
        .map(printable_line)
        .collect()
}

/// `error 6.1.2 t6 [t6.CMD_SYS_UPGRADE] packet 17 E1 CMD_SYS_UPGRADE mid 7: …`
pub fn one_line(f: &Finding) -> String {
    let mut s = format!("{:<7} {}", f.severity.as_str(), f.clause);
    if let Some(t) = &f.table {
        let _ = write!(s, " table {t}");
    }
    let _ = write!(s, " [{}]", f.rule);
    if let Some(p) = f.packet {
        let _ = write!(s, " packet {p}");
    }
    if let Some(o) = f.offset {
        let _ = write!(s, " offset {o}");
    }
    if let Some(e) = &f.edge_id {
        s.push_str(&edge_label(e, f.from));
    }
    if let Some(t) = &f.msg_type {
        let _ = write!(s, " {t}");
    }
    if let Some(m) = f.mid {
        let _ = write!(s, " mid {m}");
    }
    let _ = write!(s, ": {}", f.message);
    printable(&s).into_owned()
}

/// Ids of 8 characters or more that hold a digit (job ids, dates, hashes) become `#`.
const ID_LEN: usize = 8;

/// `message` with its numbers and ids replaced by `#`: "mid 17" and "mid 18", or
/// job "a1b2c3d4e5" and job "f6a7b8c9d0", read the same. Words without digits (field
/// names, message types) stay, so "param.cpuRate" and "param.diskUsed" differ.
pub fn pattern(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut word = String::new();
    for ch in message.chars() {
        if ch.is_ascii_alphanumeric() || ch == '_' || ch == '-' {
            word.push(ch);
        } else {
            push_word(&mut out, &word);
            word.clear();
            out.push(ch);
        }
    }
    push_word(&mut out, &word);
    out
}

/// Appends `word` with its digits stripped: an id-like word becomes one `#`, each run
/// of digits in a shorter word becomes `#` (`E12` → `E#`, `10-12` → `#-#`).
fn push_word(out: &mut String, word: &str) {
    if !word.chars().any(|c| c.is_ascii_digit()) {
        out.push_str(word);
    } else if word.len() >= ID_LEN {
        out.push('#');
    } else {
        let mut in_digits = false;
        for c in word.chars() {
            if c.is_ascii_digit() {
                if !in_digits {
                    out.push('#');
                }
                in_digits = true;
            } else {
                out.push(c);
                in_digits = false;
            }
        }
    }
}

/// Who publishes on a topic role (also a finding's `from`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Actor {
    Edge,
    Platform,
}

/// Connection ids restart in every capture file; the analyzer sees them as distinct:
/// the ids of file `i` start at `i × CONN_STRIDE`.
pub const CONN_STRIDE: ConnId = 1 << 40;

#[cfg(test)]
mod printable_tests {
    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        assert_eq!(
            super::printable("type \u{1b}[2J 电\0"),
            "type \\u{1b}[2J 电\\u{0}"
        );
        assert!(matches!(
            super::printable("plain"),
            std::borrow::Cow::Borrowed(_)
        ));
        assert_eq!(super::printable_line("a\u{7}b\n"), "a\\u{7}b\n");
    }
}

#[cfg(test)]
mod pattern_tests {
    use super::pattern;

    #[test]
    fn numbers_and_ids_are_stripped_field_names_stay() {
        assert_eq!(
            pattern("param.cpuRate: expected number, seen 17 at mid 4 (tables 10-12)"),
            "param.cpuRate: expected number, seen # at mid # (tables #-#)"
        );
        assert_eq!(
            pattern("job 3f2a9c11-77 of E12 at 2026-11-26 10:00:01"),
            "job # of E# at # #:#:#"
        );
        assert_ne!(
            pattern("param.cpuRate missing"),
            pattern("param.diskUsed missing")
        );
        assert_eq!(pattern("linkState[0].ip"), pattern("linkState[12].ip"));
    }
}
