//! The message sequence per edge, for the sequence charts of the HTML record and the
//! live view: a [`Sink`] that every front end feeds from the one pipeline (it decodes
//! nothing itself; it keeps what the pipeline already parsed).
//!
//! Bounded whatever the input: per edge it keeps the first [`HEAD`] messages and the
//! first exchange of each kind of message after them (the first message of its
//! channel, type and class, the reply to a kept request, the messages of a kept
//! job: every exchange a clause verdict rests on is on the chart), then
//! only the neighbourhood of each finding ([`CONTEXT`] messages before and after the
//! message it concerns; for a rule that fires again and again, of its first
//! [`PINS_PER_RULE`] findings per edge, of its first only for info), up to [`MAX_PER_EDGE`] messages per edge, [`MAX_KEPT`] in
//! all and [`MAX_EDGES`] edges; payloads are cut to [`PAYLOAD_EXCERPT`] bytes. What it
//! leaves out it counts, so a chart can say "1,234 messages not shown".

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use serde::Serialize;

use crate::finding::{ConnId, Finding, Side};
use crate::pipeline::Sink;
use crate::protocol::{Actor, Message, PayloadError};

/// Messages kept at the start of each edge.
pub const HEAD: u64 = 40;
/// Messages kept before and after each message that has a finding.
pub const CONTEXT: usize = 4;
/// Messages kept per edge.
pub const MAX_PER_EDGE: usize = 1500;
/// Messages kept over all edges.
pub const MAX_KEPT: usize = 20_000;
/// Edges charted; the messages of further edges are counted only.
pub const MAX_EDGES: usize = 400;
/// Payload bytes kept per message.
pub const PAYLOAD_EXCERPT: usize = 1024;
/// Findings marked per message (further ones are counted).
pub const MARKS_PER_MESSAGE: usize = 12;
/// Findings of one rule on one edge whose neighbourhood is kept: a rule that fires on
/// every message would otherwise fill the chart and hide a later, different one.
/// Info findings (unknown types, outcomes) keep the neighbourhood of their first.
pub const PINS_PER_RULE: u32 = 20;
/// Findings per edge that concern no charted message, listed under its chart.
pub const UNPLACED_PER_EDGE: usize = 50;
/// Requests remembered per edge to link their replies.
const OPEN_REQUESTS: usize = 4096;
/// Kinds of message (channel, type, class) and jobs remembered per edge to keep the
/// first exchange of each past [`HEAD`].
const KINDS_PER_EDGE: usize = 256;

/// One protocol message on an edge's chart.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    /// The message's index among the edge's messages (0-based): a jump between two
    /// entries is a run of messages left out.
    pub n: u64,
    pub time_us: i64,
    /// Frame (or store chunk) number, as findings cite it.
    pub packet: u64,
    pub conn: ConnId,
    /// Who published: "edge" or "platform".
    pub from: Actor,
    /// The leg seen: the publisher's (to the broker) or a broker delivery.
    pub side: Side,
    /// "request", "reply" or "report".
    pub class: &'static str,
    pub channel: String,
    pub msg_type: Option<String>,
    pub mid: Option<u64>,
    pub code: Option<i64>,
    pub job: Option<String>,
    pub topic: String,
    /// The payload (up to [`PAYLOAD_EXCERPT`] bytes) or why it is not JSON.
    pub payload: String,
    pub payload_len: usize,
    /// `n` of the request this reply answers (same channel and mid).
    pub reply_to: Option<u64>,
    /// Findings about this message (at most [`MARKS_PER_MESSAGE`]).
    pub findings: Vec<Finding>,
    /// Findings about it beyond those marked.
    pub more_findings: u64,
}

/// The chart data of one edge.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Lane {
    pub kept: Vec<Entry>,
    /// Messages of the edge, kept or not.
    pub messages: u64,
    /// Findings of the edge that concern no charted message.
    pub unplaced: Vec<Finding>,
    pub more_unplaced: u64,
    /// The limits stopped the chart at this message index.
    pub capped_at: Option<u64>,
    /// Messages seen since the last kept one, at most [`CONTEXT`] + 1, not yet kept.
    #[serde(skip)]
    recent: VecDeque<Entry>,
    /// Messages to keep after the last finding.
    #[serde(skip)]
    keep_next: usize,
    /// (channel, mid) of requests → their `n`.
    #[serde(skip)]
    open: HashMap<(String, u64), u64>,
    /// Findings per rule that kept their neighbourhood.
    #[serde(skip)]
    pins: HashMap<String, u32>,
    /// Kinds of message seen (channel, type, class): the first of each is kept,
    /// so every clause the edge exercised has an exchange on the chart.
    #[serde(skip)]
    kinds: HashSet<(String, Option<String>, &'static str)>,
    /// `n` of the kept requests: their replies are kept too.
    #[serde(skip)]
    kept_requests: HashSet<u64>,
    /// jobIds of kept messages: their status queries and results are kept too.
    #[serde(skip)]
    kept_jobs: HashSet<String>,
}

/// The message sequences of every charted edge.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Timeline {
    pub edges: BTreeMap<String, Lane>,
    /// Edges beyond [`MAX_EDGES`], not charted.
    pub uncharted_edges: u64,
    kept: usize,
}

impl Timeline {
    pub fn new() -> Timeline {
        Timeline::default()
    }

    /// Renumbers what the chart cites (a stored capture's event numbers → the
    /// frames of its pcapng export): each message by `frame_of_packet`, each
    /// finding by `frame_of`, as [`crate::report::Report::renumber`] does the list.
    pub fn renumber(
        &mut self,
        frame_of: &dyn Fn(&Finding) -> Option<u64>,
        frame_of_packet: &dyn Fn(u64) -> Option<u64>,
    ) {
        let finding = |f: &mut Finding| {
            if let Some(n) = frame_of(f) {
                f.packet = Some(n);
            }
        };
        for lane in self.edges.values_mut() {
            for e in &mut lane.kept {
                e.packet = frame_of_packet(e.packet).unwrap_or(e.packet);
                e.findings.iter_mut().for_each(finding);
            }
            lane.unplaced.iter_mut().for_each(finding);
        }
    }

    /// Messages kept over all edges.
    pub fn kept(&self) -> usize {
        self.kept
    }

    fn entry(m: &Message, n: u64) -> Entry {
        let (payload, payload_len) = match &m.body {
            Ok(env) => {
                let text = env.doc.text();
                // The chart is the record handed to a vendor: no credential in it.
                (excerpt(&crate::redact::redact_payload(text)), text.len())
            }
            Err(e) => {
                let why = match e {
                    PayloadError::InvalidJson(e) => format!("not JSON: {e}"),
                    PayloadError::NotObject(what) => format!("not a JSON object: {what}"),
                    PayloadError::TooDeep { depth, .. } => {
                        format!("JSON nested {depth} levels deep: not parsed")
                    }
                };
                // What was sent, escaped and cut: the vendor sees the bytes.
                match &m.raw {
                    Some(raw) => (
                        format!("({why})\n{}", crate::redact::redact_payload(&raw.escaped())),
                        raw.len,
                    ),
                    None => (format!("({why})"), 0),
                }
            }
        };
        let job = m
            .envelope()
            .and_then(|e| e.param())
            .and_then(|p| p.get("jobId"))
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string())
            });
        Entry {
            n,
            time_us: m.time_us,
            packet: m.packet,
            conn: m.conn,
            from: m.topic.publisher,
            side: m.side,
            class: m.topic.class.as_str(),
            channel: m.topic.channel.clone(),
            msg_type: m.msg_type().map(str::to_string),
            mid: m.mid(),
            code: m.envelope().and_then(|e| e.code),
            job,
            topic: m.topic_name.clone(),
            payload,
            payload_len,
            reply_to: None,
            findings: vec![],
            more_findings: 0,
        }
    }
}

/// The first [`PAYLOAD_EXCERPT`] bytes of `text`, cut at a character boundary.
fn excerpt(text: &str) -> String {
    if text.len() <= PAYLOAD_EXCERPT {
        return text.to_string();
    }
    let mut end = PAYLOAD_EXCERPT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes in all)", &text[..end], text.len())
}

impl Lane {
    /// Moves the recent messages into the chart.
    fn pin_recent(&mut self, kept: &mut usize) {
        while let Some(e) = self.recent.pop_front() {
            self.keep(e, kept);
        }
    }

    fn keep(&mut self, e: Entry, kept: &mut usize) {
        if self.kept.len() >= MAX_PER_EDGE || *kept >= MAX_KEPT {
            self.capped_at.get_or_insert(e.n);
            return;
        }
        *kept += 1;
        if e.class == "request" && self.kept_requests.len() < MAX_PER_EDGE {
            self.kept_requests.insert(e.n);
        }
        if let Some(j) = &e.job {
            if self.kept_jobs.len() < KINDS_PER_EDGE {
                self.kept_jobs.insert(j.clone());
            }
        }
        self.kept.push(e);
    }

    /// The exchange `e` belongs to is one a clause verdict rests on and the chart
    /// does not show yet: the first message of its kind (channel, type, class) on
    /// the edge, the reply to a kept request, a message of a kept job.
    fn first_of_kind(&mut self, e: &Entry) -> bool {
        let new_kind = self.kinds.len() < KINDS_PER_EDGE
            && self
                .kinds
                .insert((e.channel.clone(), e.msg_type.clone(), e.class));
        new_kind
            || e.reply_to.is_some_and(|r| self.kept_requests.contains(&r))
            || e.job.as_ref().is_some_and(|j| self.kept_jobs.contains(j))
    }

    /// Where the message `f` concerns is: (in `recent`, index). The same frame, and
    /// the same mid and type when the finding names them; else (a reply that never
    /// came, a job that never ended) the latest message with its mid and type.
    fn place(&self, f: &Finding) -> Option<(bool, usize)> {
        let same = |e: &Entry, by_packet: bool| {
            (!by_packet || f.packet == Some(e.packet))
                && (f.mid.is_none() || f.mid == e.mid)
                && (f.msg_type.is_none() || f.msg_type == e.msg_type)
        };
        for by_packet in [true, false] {
            if !by_packet && f.mid.is_none() {
                return None;
            }
            if let Some(i) = self.recent.iter().rposition(|e| same(e, by_packet)) {
                return Some((true, i));
            }
            // Findings come right after their message: look back a little only.
            let from = self.kept.len().saturating_sub(256);
            if let Some(i) = self.kept[from..].iter().rposition(|e| same(e, by_packet)) {
                return Some((false, from + i));
            }
        }
        None
    }
}

fn mark(e: &mut Entry, f: &Finding) {
    if e.findings.len() < MARKS_PER_MESSAGE {
        e.findings.push(f.clone());
    } else {
        e.more_findings += 1;
    }
}

impl Sink for Timeline {
    fn message(&mut self, m: &Message) {
        let edge = &m.topic.edge_id;
        if !self.edges.contains_key(edge) {
            if self.edges.len() >= MAX_EDGES {
                self.uncharted_edges += 1;
                return;
            }
            self.edges.insert(edge.clone(), Lane::default());
        }
        let kept = &mut self.kept;
        let lane = self.edges.get_mut(edge).expect("inserted above");
        let n = lane.messages;
        lane.messages += 1;
        let mut e = Timeline::entry(m, n);
        if let Some(mid) = e.mid {
            let key = (e.channel.clone(), mid);
            match m.topic.class {
                crate::protocol::Class::Request => {
                    if lane.open.len() >= OPEN_REQUESTS {
                        lane.open.clear();
                    }
                    lane.open.insert(key, n);
                }
                crate::protocol::Class::Reply => e.reply_to = lane.open.remove(&key),
                crate::protocol::Class::Report => {}
            }
        }
        let first_of_kind = lane.first_of_kind(&e);
        if n < HEAD || lane.keep_next > 0 || first_of_kind {
            lane.keep_next = lane.keep_next.saturating_sub(1);
            // The messages before it join too, in order: a finding on this message
            // (the first of its kind is often the odd one) has its context.
            lane.pin_recent(kept);
            lane.keep(e, kept);
        } else {
            lane.recent.push_back(e);
            // The newest (a finding may concern it) and the CONTEXT before it.
            if lane.recent.len() > CONTEXT + 1 {
                lane.recent.pop_front();
            }
        }
    }

    fn finding(&mut self, f: &Finding) {
        let Some(edge) = f.edge_id.as_deref() else {
            return;
        };
        let kept = &mut self.kept;
        let Some(lane) = self.edges.get_mut(edge) else {
            return;
        };
        let limit = match f.severity {
            crate::finding::Severity::Info => 1,
            _ => PINS_PER_RULE,
        };
        let pinned = lane.pins.get(&f.rule).copied().unwrap_or(0);
        let pin = pinned < limit;
        if pin {
            lane.pins.insert(f.rule.clone(), pinned + 1);
        }
        match lane.place(f) {
            Some((true, i)) => {
                mark(&mut lane.recent[i], f);
                if pin {
                    // The message and those before it join the chart, and the next few.
                    lane.pin_recent(kept);
                    lane.keep_next = CONTEXT;
                }
            }
            Some((false, i)) => {
                mark(&mut lane.kept[i], f);
                if pin {
                    lane.keep_next = CONTEXT;
                }
            }
            None if lane.unplaced.len() < UNPLACED_PER_EDGE => lane.unplaced.push(f.clone()),
            None => lane.more_unplaced += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::finding::Severity;
    use crate::protocol::{parse_envelope, parse_topic};

    fn msg(seq: u64, topic: &str, payload: &str) -> Message {
        Message {
            seq,
            conn: 1,
            side: Side::Client,
            packet: seq + 1,
            time_us: seq as i64 * 1000,
            topic_name: topic.into(),
            topic: parse_topic(topic).unwrap(),
            body: parse_envelope(bytes::Bytes::from(payload.to_string())),
            raw: None,
            origin_seen: true,
            retained: false,
        }
    }

    fn finding(packet: u64, mid: u64) -> Finding {
        Finding {
            rule: "t10.X".into(),
            clause: "6.1.3".into(),
            table: None,
            severity: Severity::Error,
            edge_id: Some("E1".into()),
            msg_type: Some("REP_SYS_STATUS".into()),
            topic: None,
            mid: Some(mid),
            packet: Some(packet),
            time: None,
            message: "param.cpuRate absent".into(),
            conn: None,
            side: None,
            offset: None,
            basis: None,
            from: None,
        }
    }

    #[test]
    fn a_long_run_keeps_its_head_and_each_findings_neighbourhood_only() {
        let mut t = Timeline::new();
        for i in 0..10_000u64 {
            let m = msg(
                i,
                "/v1/E1/device/data",
                &format!(r#"{{"mid":{i},"type":"REP_SYS_STATUS","param":{{}}}}"#),
            );
            t.message(&m);
            if i == 5000 {
                t.finding(&finding(i + 1, i));
            }
        }
        let lane = &t.edges["E1"];
        assert_eq!(lane.messages, 10_000);
        let ns: Vec<u64> = lane.kept.iter().map(|e| e.n).collect();
        let around: Vec<u64> = (5000 - CONTEXT as u64..=5000 + CONTEXT as u64).collect();
        assert_eq!(ns.len(), HEAD as usize + around.len(), "{ns:?}");
        assert_eq!(&ns[HEAD as usize..], &around[..]);
        let marked = lane.kept.iter().find(|e| !e.findings.is_empty()).unwrap();
        assert_eq!((marked.n, marked.mid), (5000, Some(5000)));
    }

    #[test]
    fn a_rule_firing_on_every_message_pins_its_first_findings_only() {
        let mut t = Timeline::new();
        for i in 0..5_000u64 {
            let m = msg(
                i,
                "/v1/E1/device/data",
                &format!(r#"{{"mid":{i},"type":"REP_SYS_STATUS","param":{{}}}}"#),
            );
            t.message(&m);
            t.finding(&finding(i + 1, i));
            if i == 4000 {
                let mut other = finding(i + 1, i);
                other.rule = "t10.Y".into();
                t.finding(&other);
            }
        }
        let lane = &t.edges["E1"];
        let ns: Vec<u64> = lane.kept.iter().map(|e| e.n).collect();
        // The head, the first PINS_PER_RULE findings' neighbourhoods (inside the head
        // here), and the other rule's at 4000.
        assert!(ns.len() < 100, "{} kept", ns.len());
        assert!(ns.contains(&4000) && ns.contains(&3996) && ns.contains(&4004));
        assert!(!ns.contains(&2000));
        // Kept messages carry every finding about them.
        let at = lane.kept.iter().find(|e| e.n == 4000).unwrap();
        assert_eq!(at.findings.len(), 2);
    }

    #[test]
    fn charted_payloads_carry_no_credential() {
        let mut t = Timeline::new();
        t.message(&msg(
            0,
            "/v1/E1/device/command",
            r#"{"mid":7,"type":"CMD_SYS_UPGRADE","param":{"jobId":42,"file":{"url":"ftp://admin:Url-S3cret@10.0.0.2/fw.bin","password":"Fld-S3cret"}}}"#,
        ));
        let p = &t.edges["E1"].kept[0].payload;
        assert!(!p.contains("S3cret") && !p.contains("admin:"), "{p}");
        assert!(p.contains("ftp://<redacted>@10.0.0.2/fw.bin"), "{p}");
    }

    #[test]
    fn replies_link_to_their_request_and_payloads_are_cut() {
        let mut t = Timeline::new();
        t.message(&msg(
            0,
            "/v1/E1/device/command",
            r#"{"mid":7,"type":"CMD_SYS_UPGRADE","param":{"jobId":42}}"#,
        ));
        let long = format!(
            r#"{{"mid":7,"type":"CMD_SYS_UPGRADE","code":200,"x":"{}"}}"#,
            "é".repeat(2000)
        );
        t.message(&msg(1, "/v1/E1/device/reply", &long));
        let lane = &t.edges["E1"];
        assert_eq!(lane.kept[0].job.as_deref(), Some("42"));
        assert_eq!(lane.kept[1].reply_to, Some(0));
        assert_eq!(lane.kept[1].code, Some(200));
        assert!(lane.kept[1].payload.len() < PAYLOAD_EXCERPT + 40);
        assert!(lane.kept[1].payload.ends_with("bytes in all)"));
    }

    #[test]
    fn edges_beyond_the_limit_are_counted_not_charted() {
        let mut t = Timeline::new();
        for i in 0..(MAX_EDGES as u64 + 3) {
            t.message(&msg(i, &format!("/v1/E{i}/device/data"), r#"{"mid":1}"#));
        }
        assert_eq!(t.edges.len(), MAX_EDGES);
        assert_eq!(t.uncharted_edges, 3);
    }
}
