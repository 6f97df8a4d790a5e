//! The test record as one self-contained HTML page (`--format html`, and the live
//! view of `edgetap proxy --http`): the clause table, the sections of a front end
//! (detection items, replay exchanges), the edges, the findings grouped by rule, and
//! a message sequence chart per edge from the report's [`Timeline`].
//!
//! Guarantees: the page loads nothing (no script, style sheet, font or image from
//! anywhere: CSS inline, the charts are HTML/CSS); every text from the input is
//! escaped by the template engine; the page's size is bounded by the timeline's
//! limits and [`MAX_GROUPS`], whatever the input.
//!
//! Template engine: minijinja. Its templates are plain Jinja text, loaded at run
//! time from a string compiled into the binary (no proc macro to build, unlike
//! askama, which matters on the small CI machines), it escapes HTML by default for
//! `.html` templates, and it renders any `serde::Serialize` value, which the report
//! already is.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::Serialize;

use super::Options;
use crate::finding::{Finding, Severity, Side};
use crate::protocol::Actor;
use crate::report::edges::show_time;
use crate::report::timeline::{self, Entry, Lane, Timeline};
use crate::report::{ClauseRow, Document, Report, Section};

/// Groups shown; the JSON holds them all.
pub const MAX_GROUPS: usize = 400;
/// Rows (messages and gaps) per page of a chart.
pub const PAGE_ROWS: usize = 100;

/// A [`Section`] as the page shows it.
#[derive(Serialize)]
struct Extra<'a> {
    id: &'a str,
    title: &'a str,
    note: Option<&'a str>,
    headers: Vec<&'a str>,
    rows: Vec<ExtraRow<'a>>,
    /// The column holding a status (coloured).
    status_col: Option<usize>,
}

#[derive(Serialize)]
struct ExtraRow<'a> {
    /// CSS class from the status: pass, fail, partly, none.
    class: &'static str,
    cells: &'a [String],
    /// Lines shown on demand under the row.
    more: &'a [String],
}

impl<'a> Extra<'a> {
    fn of(s: &'a Section) -> Extra<'a> {
        Extra {
            id: &s.id,
            title: &s.title,
            note: s.note.as_deref(),
            headers: s.columns.iter().map(|c| c.name.as_str()).collect(),
            rows: s
                .rows
                .iter()
                .map(|r| ExtraRow {
                    class: status_class(&r.status),
                    cells: &r.cells,
                    more: &r.more,
                })
                .collect(),
            status_col: s.status_col,
        }
    }
}

/// What the live view adds: how often the page reloads and where the API is.
#[derive(Debug, Clone, Serialize)]
pub struct LiveLinks {
    pub refresh_s: u32,
    pub api: String,
    pub metrics: String,
}

/// The page's CSS class of a status: pass, fail, partly, none.
pub fn status_class(status: &str) -> &'static str {
    match status {
        "pass" | "passed" | "matched" => "pass",
        "fail" | "failed" => "fail",
        "partly exercised" => "partly",
        _ => "none",
    }
}

fn env() -> &'static minijinja::Environment<'static> {
    static ENV: OnceLock<minijinja::Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = minijinja::Environment::new();
        env.add_template(
            "report.html",
            include_str!("../../../templates/report.html"),
        )
        .expect("the report template parses (a test renders it)");
        env
    })
}

/// The document as one page: its report under its title, its sections after the
/// clause table, then each appended document's clause table and sections (its
/// findings and charts are its own run's record).
pub fn render(doc: &Document, options: &Options) -> String {
    let appended = doc.appended_sections();
    let extras: Vec<Extra> = doc
        .sections
        .iter()
        .chain(&appended)
        .map(Extra::of)
        .collect();
    let page = Page::of(&doc.report, &doc.title, &extras, options.live);
    env()
        .get_template("report.html")
        .and_then(|t| t.render(&page))
        // The template is compiled in and its data is plain serde values: an error
        // here is a bug, shown in place of the page rather than a panic.
        .unwrap_or_else(|e| {
            format!(
                "<!DOCTYPE html><title>edgetap</title><pre>report template failed: {}</pre>",
                escape(&format!("{e:#}"))
            )
        })
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[derive(Serialize)]
struct Page<'a> {
    title: &'a str,
    inputs: String,
    generated: String,
    version: &'static str,
    rules: String,
    s: &'a crate::report::Summary,
    verdict: Verdict,
    filtered: Option<String>,
    problems: Vec<String>,
    clauses: Vec<ClauseView<'a>>,
    extras: &'a [Extra<'a>],
    edges: Vec<EdgeView<'a>>,
    findings_total: u64,
    rules_fired: usize,
    rule_sections: Vec<RuleSection>,
    groups: Vec<()>,
    groups_left: usize,
    charts: Vec<Chart>,
    uncharted_edges: u64,
    max_edges: usize,
    head: u64,
    context: usize,
    live: Option<&'a LiveLinks>,
    /// Live view: the latest findings, newest first.
    latest: Vec<Latest<'a>>,
}

#[derive(Serialize)]
struct Latest<'a> {
    time: String,
    f: &'a Finding,
}

/// Findings the live view lists as the latest.
const LATEST: usize = 25;

#[derive(Serialize)]
struct Verdict {
    class: &'static str,
    text: &'static str,
}

#[derive(Serialize)]
struct ClauseView<'a> {
    row: &'a ClauseRow,
    class: &'static str,
}

#[derive(Serialize)]
struct EdgeView<'a> {
    row: EdgeCounts<'a>,
    class: &'static str,
    first: String,
    last: String,
    chart: Option<String>,
}

#[derive(Serialize)]
struct EdgeCounts<'a> {
    edge_id: &'a str,
    messages: u64,
    errors: u64,
    warnings: u64,
    outcomes: u64,
}

#[derive(Serialize)]
struct RuleSection {
    rule: String,
    clause: String,
    severity: &'static str,
    count: u64,
    basis: Option<String>,
    groups: Vec<GroupView>,
}

#[derive(Serialize)]
struct GroupView {
    edge: String,
    count: u64,
    packets: String,
    first: String,
    last: String,
    example: String,
    /// The chart row of its first finding, when charted.
    href: Option<String>,
}

#[derive(Serialize)]
struct Chart {
    id: String,
    edge: String,
    messages: u64,
    shown: usize,
    capped: Option<String>,
    pages: Vec<ChartPage>,
    unplaced: Vec<Finding>,
}

#[derive(Serialize)]
struct ChartPage {
    first: u64,
    last: u64,
    open: bool,
    findings: usize,
    worst: &'static str,
    rows: Vec<Row>,
}

#[derive(Serialize, Default)]
struct Row {
    /// Messages left out before this row (a gap row when set).
    gap: Option<u64>,
    id: String,
    n: u64,
    time: String,
    packet: u64,
    class: &'static str,
    worst: Option<&'static str>,
    label: String,
    note: Option<String>,
    leg: String,
    topic: String,
    payload: String,
    payload_len: usize,
    segs: Vec<Seg>,
    mid_at: f32,
    mark_at: f32,
    marks: Vec<Finding>,
    more_findings: u64,
    jobs: Vec<JobBar>,
}

#[derive(Serialize)]
struct Seg {
    left: f32,
    width: f32,
    /// Arrowhead direction: r or l.
    dir: &'static str,
    dashed: bool,
    head: bool,
}

#[derive(Serialize, Clone)]
struct JobBar {
    slot: usize,
    /// start, mid, end or single.
    kind: &'static str,
    /// done, failed or open.
    state: &'static str,
    id: String,
}

/// Lane positions in percent of the chart's width.
const EDGE_X: f32 = 10.0;
const BROKER_X: f32 = 50.0;
const PLATFORM_X: f32 = 90.0;
/// Job lifecycles drawn side by side per page.
const JOB_SLOTS: usize = 4;

/// An id usable in a URL fragment and an HTML id, for any edge id.
fn anchor(edge: &str) -> String {
    let mut s = String::from("edge-");
    for c in edge.chars() {
        if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
            s.push(c);
        } else {
            s.push_str(&format!("_{:x}", c as u32));
        }
    }
    s
}

impl<'a> Page<'a> {
    fn of(
        report: &'a Report,
        title: &'a str,
        extras: &'a [Extra<'a>],
        live: Option<&'a LiveLinks>,
    ) -> Page<'a> {
        let s = &report.summary;
        let verdict = if report.exit_code() == crate::report::EXIT_UNREADABLE {
            Verdict {
                class: "fail",
                text: "UNREADABLE INPUT",
            }
        } else if report.has_errors() {
            Verdict {
                class: "fail",
                text: "FAIL",
            }
        } else if !s.judged {
            Verdict {
                class: "none",
                text: "NOTHING JUDGED",
            }
        } else {
            Verdict {
                class: "pass",
                text: "PASS",
            }
        };
        let timeline = report.timeline.as_deref();
        let charted = |e: &str| timeline.is_some_and(|t| t.edges.contains_key(e));
        let mut edges: Vec<EdgeView> = report
            .edges
            .iter()
            .map(|e| EdgeView {
                row: EdgeCounts {
                    edge_id: &e.edge_id,
                    messages: e.messages,
                    errors: e.counts.errors,
                    warnings: e.counts.warnings,
                    outcomes: e.counts.outcomes,
                },
                class: if e.counts.errors > 0 {
                    "fail"
                } else if e.counts.warnings > 0 {
                    "partly"
                } else {
                    "pass"
                },
                first: show_time(e.first_time),
                last: show_time(e.last_time),
                chart: charted(&e.edge_id).then(|| anchor(&e.edge_id)),
            })
            .collect();
        edges.sort_by_key(|e| std::cmp::Reverse((e.row.errors, e.row.warnings)));
        let (rule_sections, groups_left) = rule_sections(report);
        let charts = timeline
            .map(|t| {
                t.edges
                    .iter()
                    .filter(|(_, lane)| lane.messages > 0)
                    .map(|(edge, lane)| chart(edge, lane))
                    .collect()
            })
            .unwrap_or_default();
        Page {
            title,
            inputs: s.inputs.join(", "),
            generated: show_time(Some(chrono::Utc::now().timestamp_micros())),
            version: env!("CARGO_PKG_VERSION"),
            rules: report.rules.join(", "),
            s,
            verdict,
            filtered: s.filtered.as_ref().map(|n| n.line()),
            problems: report.problems(),
            clauses: report
                .clauses
                .iter()
                .map(|row| ClauseView {
                    row,
                    class: status_class(&row.status),
                })
                .collect(),
            extras,
            edges,
            findings_total: report.total_findings(),
            rules_fired: rule_sections.len(),
            groups: vec![(); report.groups.len().min(MAX_GROUPS)],
            groups_left,
            rule_sections,
            charts,
            uncharted_edges: timeline.map_or(0, |t| t.uncharted_edges),
            max_edges: timeline::MAX_EDGES,
            head: timeline::HEAD,
            context: timeline::CONTEXT,
            latest: match live {
                Some(_) => report
                    .findings
                    .iter()
                    .rev()
                    .take(LATEST)
                    .map(|f| Latest {
                        time: show_time(f.time),
                        f,
                    })
                    .collect(),
                None => vec![],
            },
            live,
        }
    }
}

/// The groups by rule, errors first, the largest first; with the standard's words.
fn rule_sections(report: &Report) -> (Vec<RuleSection>, usize) {
    let mut groups: Vec<&crate::report::group::Group> = report.groups.iter().collect();
    groups.sort_by_key(|g| std::cmp::Reverse((g.severity, g.count)));
    let left = groups.len().saturating_sub(MAX_GROUPS);
    groups.truncate(MAX_GROUPS);
    let basis: BTreeMap<&str, &str> = report
        .findings
        .iter()
        .filter_map(|f| f.basis.as_deref().map(|b| (f.rule.as_str(), b)))
        .collect();
    let first_of: BTreeMap<(&str, Option<&str>, Option<u64>), &Finding> = report
        .findings
        .iter()
        .map(|f| ((f.rule.as_str(), f.edge_id.as_deref(), f.packet), f))
        .collect();
    let mut order: Vec<String> = vec![];
    let mut by_rule: BTreeMap<String, RuleSection> = BTreeMap::new();
    for g in groups {
        let section = by_rule.entry(g.rule.clone()).or_insert_with(|| {
            order.push(g.rule.clone());
            RuleSection {
                rule: g.rule.clone(),
                clause: g.clause.clone(),
                severity: g.severity.as_str(),
                count: 0,
                basis: basis.get(g.rule.as_str()).map(|b| b.to_string()),
                groups: vec![],
            }
        });
        section.count += g.count;
        let packets = match (g.first_packet, g.last_packet) {
            (Some(a), Some(b)) if a != b => format!("{a}–{b}"),
            (Some(a), _) => a.to_string(),
            _ => "—".into(),
        };
        let href = g.edge_id.as_deref().and_then(|edge| {
            let f = first_of.get(&(g.rule.as_str(), Some(edge), g.first_packet))?;
            let lane = report.timeline.as_ref()?.edges.get(edge)?;
            let e = lane
                .kept
                .iter()
                .find(|e| e.findings.iter().any(|m| m == *f))?;
            Some(row_id(edge, e.n))
        });
        section.groups.push(GroupView {
            edge: g.edge_id.clone().unwrap_or_else(|| "—".into()),
            count: g.count,
            packets,
            first: show_time(g.first_time),
            last: show_time(g.last_time),
            example: g.example.clone(),
            href,
        });
    }
    let sections = order
        .into_iter()
        .filter_map(|r| by_rule.remove(&r))
        .collect();
    (sections, left)
}

fn row_id(edge: &str, n: u64) -> String {
    format!("{}-m{n}", anchor(edge))
}

/// `12:13:30.563` (UTC): the date is in the edges table.
fn clock_time(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .map(|t| t.format("%H:%M:%S%.3f").to_string())
        .unwrap_or_default()
}

fn worst(fs: &[Finding]) -> Option<Severity> {
    fs.iter().map(|f| f.severity).max()
}

/// The chart of one edge: its kept messages with a gap row where messages were left
/// out, cut into pages.
fn chart(edge: &str, lane: &Lane) -> Chart {
    let jobs = job_bars(&lane.kept);
    let mut rows: Vec<Row> = vec![];
    let mut next = 0u64;
    for (i, e) in lane.kept.iter().enumerate() {
        if e.n > next {
            rows.push(Row {
                gap: Some(e.n - next),
                ..Row::default()
            });
        }
        next = e.n + 1;
        rows.push(message_row(edge, e, jobs[i].clone()));
    }
    let end = lane.capped_at.unwrap_or(lane.messages);
    if end > next {
        rows.push(Row {
            gap: Some(end - next),
            ..Row::default()
        });
    }
    let mut pages: Vec<ChartPage> = vec![];
    let mut rest = rows.into_iter().peekable();
    while rest.peek().is_some() {
        let page: Vec<Row> = rest.by_ref().take(PAGE_ROWS).collect();
        let msgs = || page.iter().filter(|r| r.gap.is_none());
        let findings = msgs().map(|r| r.marks.len()).sum();
        let worst = msgs().filter_map(|r| r.worst).max_by_key(|w| match *w {
            "error" => 2,
            "warning" => 1,
            _ => 0,
        });
        pages.push(ChartPage {
            first: msgs().map(|r| r.n).min().unwrap_or(0),
            last: msgs().map(|r| r.n).max().unwrap_or(0),
            open: pages.is_empty(),
            findings,
            worst: worst.unwrap_or("info"),
            rows: page,
        });
    }
    Chart {
        id: anchor(edge),
        edge: edge.to_string(),
        messages: lane.messages,
        shown: lane.kept.len(),
        capped: lane.capped_at.map(|n| {
            format!(
                "the chart stops at message #{n} (at most {} messages per edge, {} in all); \
                 later findings are in the groups above",
                timeline::MAX_PER_EDGE,
                timeline::MAX_KEPT
            )
        }),
        pages,
        unplaced: lane.unplaced.clone(),
    }
}

fn message_row(edge: &str, e: &Entry, jobs: Vec<JobBar>) -> Row {
    let (from_x, to_x) = match e.from {
        Actor::Edge => (EDGE_X, PLATFORM_X),
        Actor::Platform => (PLATFORM_X, EDGE_X),
    };
    let dir = if to_x > from_x { "r" } else { "l" };
    let seg = |a: f32, b: f32, dashed: bool, head: bool| Seg {
        left: a.min(b),
        width: (a - b).abs(),
        dir,
        dashed,
        head,
    };
    // The leg seen is drawn solid; the other one (through the broker) dashed.
    let publisher_leg = e.side == Side::Client;
    let segs = vec![
        seg(from_x, BROKER_X, !publisher_leg, false),
        seg(BROKER_X, to_x, publisher_leg, true),
    ];
    let mut label = e.msg_type.clone().unwrap_or_else(|| "(no type)".into());
    if let Some(mid) = e.mid {
        label.push_str(&format!(" mid {mid}"));
    }
    if let Some(code) = e.code {
        label.push_str(&format!(" code {code}"));
    }
    if let Some(j) = &e.job {
        label.push_str(&format!(" job {j}"));
    }
    let note = match (e.class, e.reply_to) {
        ("reply", Some(r)) => Some(format!("↩ #{r}")),
        ("reply", None) => Some("↩ request not charted".into()),
        _ => None,
    };
    let leg = match (e.side, e.from) {
        (Side::Client, Actor::Edge) => "edge → broker (publisher's leg)",
        (Side::Client, Actor::Platform) => "platform → broker (publisher's leg)",
        (Side::Server, Actor::Edge) => "broker → platform (delivery)",
        (Side::Server, Actor::Platform) => "broker → edge (delivery)",
    };
    Row {
        gap: None,
        id: row_id(edge, e.n),
        n: e.n,
        time: clock_time(e.time_us),
        packet: e.packet,
        class: e.class,
        worst: worst(&e.findings).map(Severity::as_str),
        label,
        note,
        leg: format!("{leg}, conn {}", e.conn),
        topic: e.topic.clone(),
        payload: e.payload.clone(),
        payload_len: e.payload_len,
        segs,
        mid_at: (from_x + to_x) / 2.0,
        // Marks sit on the leg seen, near the broker.
        mark_at: if publisher_leg {
            (from_x + BROKER_X) / 2.0
        } else {
            (BROKER_X + to_x) / 2.0
        },
        marks: e.findings.clone(),
        more_findings: e.more_findings,
        jobs,
    }
}

/// For each kept message, the job lifecycles running through its row: a job runs
/// from its first to its last charted message; its state is failed when a result
/// or reply carried a code other than 200, done when a REP_JOB_RESULT came.
fn job_bars(kept: &[Entry]) -> Vec<Vec<JobBar>> {
    let mut span: BTreeMap<&str, (usize, usize, &'static str)> = BTreeMap::new();
    for (i, e) in kept.iter().enumerate() {
        let Some(j) = e.job.as_deref() else { continue };
        let s = span.entry(j).or_insert((i, i, "open"));
        s.1 = i;
        if e.msg_type.as_deref() == Some("REP_JOB_RESULT") {
            s.2 = "done";
        }
        if e.code.is_some_and(|c| c != 200) || job_result_failed(e) {
            s.2 = "failed";
        }
    }
    let mut spans: Vec<(&str, usize, usize, &'static str)> = span
        .into_iter()
        .map(|(j, (a, b, st))| (j, a, b, st))
        .collect();
    spans.sort_by_key(|s| s.1);
    // Slots by first fit; a job finding no free slot is not drawn.
    let mut slot_end: Vec<Option<usize>> = vec![None; JOB_SLOTS];
    let mut out: Vec<Vec<JobBar>> = vec![vec![]; kept.len()];
    for (id, a, b, state) in spans {
        let Some(slot) = slot_end.iter().position(|end| end.is_none_or(|x| x < a)) else {
            continue;
        };
        slot_end[slot] = Some(b);
        for (i, bars) in out.iter_mut().enumerate().take(b + 1).skip(a) {
            let kind = match (i == a, i == b) {
                (true, true) => "single",
                (true, false) => "start",
                (false, true) => "end",
                _ => "mid",
            };
            bars.push(JobBar {
                slot,
                kind,
                state,
                id: id.to_string(),
            });
        }
    }
    out
}

/// A REP_JOB_RESULT whose `result` is not 200 (read from the kept payload text).
fn job_result_failed(e: &Entry) -> bool {
    if e.msg_type.as_deref() != Some("REP_JOB_RESULT") {
        return false;
    }
    serde_json::from_str::<serde_json::Value>(&e.payload)
        .ok()
        .and_then(|v| v.get("param")?.get("result")?.as_i64())
        .is_some_and(|r| r != 200)
}

impl Timeline {
    /// Keeps the marks `keep` shows and the edges `edge` shows (report filters).
    pub fn retain(&mut self, keep: impl Fn(&Finding) -> bool, edge: impl Fn(&str) -> bool) {
        self.edges.retain(|e, _| edge(e));
        for lane in self.edges.values_mut() {
            for e in &mut lane.kept {
                e.findings.retain(&keep);
            }
            lane.unplaced.retain(&keep);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::finding::Side;
    use crate::pipeline::{Sink, Stats};
    use crate::protocol::{parse_envelope, parse_topic, Message};
    use crate::rules::engine::Coverage;
    use crate::rules::RuleSet;

    fn message(topic: &str, payload: &str) -> Message {
        Message {
            seq: 0,
            conn: 1,
            side: Side::Client,
            packet: 3,
            time_us: 1_764_000_000_000_000,
            topic_name: topic.into(),
            topic: parse_topic(topic).unwrap(),
            body: parse_envelope(bytes::Bytes::from(payload.to_string())),
            raw: None,
            origin_seen: true,
            retained: false,
        }
    }

    #[test]
    fn input_text_is_escaped_and_odd_edge_ids_get_safe_anchors() {
        let edge = "E<1>\"x";
        let topic = format!("/v1/{edge}/device/data");
        let payload = r#"{"mid":1,"type":"</pre><script>alert(1)</script>","param":{}}"#;
        let mut t = Timeline::new();
        t.message(&message(&topic, payload));
        let report = Report::build(
            vec!["<b>in</b>.pcap".into()],
            &Stats::default(),
            &Coverage::default(),
            &RuleSet::builtin(),
            vec![],
        )
        .with_timeline(Some(t));
        let page = render(&Document::of(&report), &Options::default());
        assert!(!page.contains("<script"), "{page}");
        assert!(!page.contains("<b>in</b>"));
        assert!(page.contains("&lt;&#x2f;pre&gt;&lt;script&gt;"), "{page}");
        assert!(page.contains("id=\"edge-E_3c1_3e_22x\""), "{page}");
        assert_eq!(page.matches("<section class=\"chart\"").count(), 1);
    }

    #[test]
    fn job_lifecycles_span_their_messages_and_show_failure() {
        let mut t = Timeline::new();
        let cmd = r#"{"mid":1,"type":"CMD_APP_INSTALL","param":{"jobId":7}}"#;
        let reply = r#"{"mid":1,"type":"CMD_APP_INSTALL","code":202,"param":{"jobId":7}}"#;
        let other = r#"{"mid":2,"type":"REP_SYS_STATUS","param":{}}"#;
        let result = r#"{"mid":3,"type":"REP_JOB_RESULT","param":{"jobId":7,"result":400}}"#;
        t.message(&message("/v1/E1/app/command", cmd));
        t.message(&message("/v1/E1/app/reply", reply));
        t.message(&message("/v1/E1/device/data", other));
        t.message(&message("/v1/E1/app/data", result));
        let bars = job_bars(&t.edges["E1"].kept);
        let kinds: Vec<&str> = bars.iter().map(|b| b[0].kind).collect();
        assert_eq!(kinds, ["start", "mid", "mid", "end"]);
        assert!(bars
            .iter()
            .all(|b| b[0].state == "failed" && b[0].id == "7"));
    }
}
