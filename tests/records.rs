//! Records that never pass what was not shown (issue 20): a clause whose job or
//! request was still open when the input ended is "partly exercised" in every
//! format, …
//!
//! Each test has a case that fires and one that holds.

use std::process::{Command, Output};

use serde_json::Value;

use crate::common;

fn edgetap() -> Command {
    Command::new(env!("CARGO_BIN_EXE_edgetap"))
}

fn capture(name: &str) -> String {
    format!("{}/captures/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn analyze(args: &[&str]) -> Output {
    edgetap()
        .arg("analyze")
        .args(args)
        .output()
        .expect("run edgetap analyze")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The status of `clause` in each format: (table line, JSON status and reasons,
/// JUnit test case, HTML row).
fn clause_in_every_format(pcap: &str, clause: &str) -> (String, Value, String, String) {
    let pcap = capture(pcap);
    let table = stdout(&analyze(&[&pcap]));
    let row = table
        .lines()
        .find(|l| l.starts_with(&format!("│ {clause} ")))
        .unwrap_or_else(|| panic!("no row {clause}:\n{table}"))
        .to_string();
    let json: Value = serde_json::from_slice(&analyze(&["--format", "json", &pcap]).stdout)
        .expect("one JSON document");
    let c = json["clauses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["clause"] == clause)
        .unwrap()
        .clone();
    let junit = stdout(&analyze(&["--format", "junit", &pcap]));
    let case = junit
        .split("<testsuite ")
        .find(|s| s.starts_with(&format!("name=\"{clause} ")))
        .unwrap_or_else(|| panic!("no suite {clause}:\n{junit}"))
        .to_string();
    let html = stdout(&analyze(&["--format", "html", &pcap]));
    let tr = html
        .split("<tr ")
        .find(|s| s.contains(&format!("data-clause=\"{clause}\"")))
        .unwrap_or_else(|| panic!("no HTML row {clause}"))
        .to_string();
    (row, c, case, tr)
}

#[test]
fn a_clause_whose_only_job_is_pending_is_partly_exercised_in_every_format() {
    // bad-sequence.pcap: CMD_SYS_UPGRADE accepted with 202, no REP_JOB_RESULT.
    let (row, json, junit, html) = clause_in_every_format("bad-sequence.pcap", "6.1.2");
    assert!(row.contains("PARTLY EXERCISED"), "{row}");
    assert_eq!(json["status"], "partly exercised", "{json}");
    let why = json["not_exercised"].to_string();
    assert!(why.contains("1 job had no REP_JOB_RESULT"), "{why}");
    assert!(junit.contains("skipped=\"1\""), "{junit}");
    assert!(
        junit.contains("<skipped message=\"partly exercised: 1 job had no REP_JOB_RESULT"),
        "{junit}"
    );
    assert!(html.contains("class=\"clause partly\""), "{html}");
    assert!(html.contains("1 job had no REP_JOB_RESULT"), "{html}");
}

#[test]
fn an_unanswered_request_makes_its_clause_partly_exercised_not_pass() {
    // bad-pairing.pcap: CMD_CON_STOP is never answered (reply.pending).
    let (row, json, junit, _) = clause_in_every_format("bad-pairing.pcap", "6.2.3");
    assert!(row.contains("PARTLY EXERCISED"), "{row}");
    assert_eq!(json["status"], "partly exercised", "{json}");
    assert!(
        json["not_exercised"]
            .to_string()
            .contains("1 request had no reply"),
        "{json}"
    );
    assert!(
        junit.contains("<skipped message=\"partly exercised"),
        "{junit}"
    );
    // An error still fails the clause that also holds a pending request.
    let (row, json, _, _) = clause_in_every_format("bad-pairing.pcap", "6.1.3");
    assert!(row.contains("FAIL"), "{row}");
    assert_eq!(json["status"], "fail");
}

#[test]
fn a_clause_whose_job_finished_passes() {
    let (row, json, junit, html) = clause_in_every_format("clean-session.pcap", "6.1.2");
    assert!(row.contains("PASS"), "{row}");
    assert_eq!(json["status"], "pass");
    assert!(json.get("not_exercised").is_none(), "{json}");
    assert!(
        junit.contains("skipped=\"0\"") && !junit.contains("<skipped"),
        "{junit}"
    );
    assert!(html.contains("class=\"clause pass\""), "{html}");
}

#[test]
fn an_edge_filter_keeps_the_edges_pending_work() {
    // The pending job is edge E1's: another edge's view of 6.1.2 holds nothing open.
    let pcap = capture("bad-sequence.pcap");
    let json: Value =
        serde_json::from_slice(&analyze(&["--format", "json", "--edge", "E1", &pcap]).stdout)
            .unwrap();
    let c = json["clauses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["clause"] == "6.1.2")
        .unwrap();
    assert_eq!(c["status"], "partly exercised", "{c}");
}

/// Runs `edgetap ARGS` until it exits (it must, within 20 s): (code, stderr).
fn run_to_exit(args: &[&str]) -> (Option<i32>, String) {
    let mut child = edgetap()
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run edgetap");
    let status = common::wait_exit(
        &mut child,
        std::time::Duration::from_secs(20),
        "edgetap to exit",
    );
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    (status.code(), err)
}

#[test]
fn a_broker_on_a_port_in_use_exits_2_naming_the_port() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = held.local_addr().unwrap().to_string();
    let v5 = format!("127.0.0.1:{}", common::free_port());
    let (code, err) = run_to_exit(&["broker", "--listen", &addr, "--listen-v5", &v5]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains(&format!("cannot listen on {addr}")), "{err}");

    // The MQTT 5 listener's port too.
    let v4 = format!("127.0.0.1:{}", common::free_port());
    let (code, err) = run_to_exit(&["broker", "--listen", &v4, "--listen-v5", &addr]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains(&format!("cannot listen on {addr}")), "{err}");
}

#[test]
fn a_broker_on_free_ports_listens_and_says_so() {
    let v4 = format!("127.0.0.1:{}", common::free_port());
    let v5 = format!("127.0.0.1:{}", common::free_port());
    let mut child = edgetap()
        .args(["broker", "--listen", &v4, "--listen-v5", &v5])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = common::Output::read(child.stdout.take().unwrap());
    out.wait_for(
        std::time::Duration::from_secs(20),
        "the broker's line",
        |t| t.contains(&format!("MQTT 3.1.1 on {v4}")),
    );
    assert!(child.try_wait().unwrap().is_none(), "the broker exited");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn a_proxy_on_a_port_in_use_exits_2_naming_it() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = held.local_addr().unwrap().to_string();
    let store = common::temp_dir("records-proxy-bind");
    let upstream = format!("127.0.0.1:{}", common::free_port());
    let (code, err) = run_to_exit(&[
        "proxy",
        "--listen",
        &addr,
        "--upstream",
        &upstream,
        "--store",
        store.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains(&addr) && err.contains("in use"), "{err}");
}

#[test]
fn demo_writes_one_document_per_format_and_its_lines_to_stderr() {
    let out = edgetap()
        .args(["demo", "--format", "json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    // The whole of stdout is one JSON document: the first run, the second appended.
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("not one JSON document ({e}):\n{}", stdout(&out));
    });
    let labels: Vec<&str> = doc["appended"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["label"].as_str().unwrap())
        .collect();
    assert_eq!(labels, ["run 1 proxy", "run 2"]);
    assert_eq!(
        doc["appended"][1]["document"]["appended"][0]["label"],
        "run 2 proxy"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("the plan catches the fault"), "{err}");

    let out = edgetap()
        .args(["demo", "--format", "junit"])
        .output()
        .unwrap();
    let xml = stdout(&out);
    assert_eq!(xml.matches("<?xml").count(), 1, "{xml}");
    assert_eq!(xml.matches("<testsuites ").count(), 1, "{xml}");
    assert!(xml.contains("<testsuite name=\"run 2: "), "{xml}");
    // The totals count every suite of the one document.
    let suites = xml.matches("<testsuite ").count();
    assert!(suites > 13 * 2, "{xml}");
    let failures: usize = xml
        .lines()
        .filter(|l| l.starts_with("  <testsuite "))
        .map(|l| {
            let i = l.find(" failures=\"").unwrap() + 11;
            l[i..i + l[i..].find('"').unwrap()]
                .parse::<usize>()
                .unwrap()
        })
        .sum();
    assert!(failures > 0, "the fault run fails something:\n{xml}");
    assert!(
        xml.contains(&format!(" failures=\"{failures}\"")),
        "the header counts {failures} failures:\n{xml}"
    );
}

#[test]
fn demo_table_keeps_both_runs_and_its_result_line_on_stdout() {
    let out = edgetap().arg("demo").output().unwrap();
    let text = stdout(&out);
    assert!(
        text.contains("=== Run 1:") && text.contains("=== Run 2:"),
        "{text}"
    );
    assert!(text.contains("\nrun 1: every clause passes"), "{text}");
}

/// A report (charted) of `messages` (topic, payload) published by one edge connection.
fn report_of(messages: &[(&str, &[u8])]) -> edgetap::report::Report {
    use crate::pipeline::Drive;
    use edgetap::finding::Side;
    use edgetap::mqtt::encode;
    use edgetap::pipeline::{Analyzer, Settings};
    use edgetap::report::{Collector, Report};
    use edgetap::rules::RuleSet;
    use std::sync::Arc;
    let rules = Arc::new(RuleSet::builtin());
    let mut a = Analyzer::new(rules.clone(), Settings::default());
    let mut sink = Collector::charting(true);
    let t0 = 1_764_122_400_000_000;
    a.open(1, None, None, false);
    a.data(1, Side::Client, t0, 1, &encode::connect("E7"), &mut sink);
    for (i, (topic, payload)) in messages.iter().enumerate() {
        let bytes = encode::publish(topic, payload);
        a.data(
            1,
            Side::Client,
            t0 + i as i64 * 1000,
            i as u64 + 2,
            &bytes,
            &mut sink,
        );
    }
    let s = a.finish(&mut sink);
    Report::collected(
        vec!["t".into()],
        &s.stats,
        &s.coverage,
        &rules,
        sink,
        String::new,
    )
}

const STATUS: &str =
    r#"{"type":"REP_SYS_STATUS","timestamp":"2026-11-26 10:00:01","param":{"cpuRate":35.5}}"#;

#[test]
fn a_finding_on_a_topic_in_the_wrong_case_keeps_its_edge_through_an_edge_filter() {
    let mut r = report_of(&[("/v1/E7/Device/Data", STATUS.as_bytes())]);
    let shape: Vec<_> = r
        .findings
        .iter()
        .filter(|f| f.rule == "topic.shape")
        .collect();
    assert_eq!(shape.len(), 1, "{:?}", r.findings);
    assert_eq!(shape[0].edge_id.as_deref(), Some("E7"));
    r.apply(&edgetap::report::filter::Filter {
        edges: vec!["E7".into()],
        ..Default::default()
    });
    assert!(r.summary.judged, "{:?}", r.summary.not_judged_because);
    assert!(r.findings.iter().any(|f| f.rule == "topic.shape"));
    assert!(r.has_errors(), "the per-edge gate fails");
}

#[test]
fn a_finding_on_a_topic_outside_the_tree_names_no_edge() {
    assert_eq!(
        edgetap::protocol::edge_id_named("/V1/E7/device/data/"),
        Some("E7")
    );
    assert_eq!(edgetap::protocol::edge_id_named("v1/E7"), Some("E7"));
    assert_eq!(edgetap::protocol::edge_id_named("/v1//device/data"), None);
    assert_eq!(edgetap::protocol::edge_id_named("/vendor/E7/status"), None);
    // Another edge's filter leaves the finding out.
    let mut r = report_of(&[("/v1/E7/Device/Data", STATUS.as_bytes())]);
    r.apply(&edgetap::report::filter::Filter {
        edges: vec!["E8".into()],
        ..Default::default()
    });
    assert!(!r.findings.iter().any(|f| f.rule == "topic.shape"));
}

fn html_of(r: &edgetap::report::Report) -> String {
    use edgetap::report::{render, Document, Format, Options};
    render(&Document::of(r), Format::Html, &Options::default())
}

#[test]
fn an_invalid_json_payload_shows_its_bytes_escaped_and_bounded_in_the_html() {
    // A missing comma, a control byte, a byte that is no UTF-8, a credential, and
    // more than the excerpt holds.
    let tail = "x".repeat(600);
    let payload = format!(
        "{{\"type\":\"REP_SYS_STATUS\" \"param\":{{\"password\":\"hunter2\",\"v\":\"<b>\u{1}\"}},\"pad\":\"{tail}\"}}"
    );
    let mut bytes = payload.into_bytes();
    bytes.insert(60, 0xff);
    let r = report_of(&[("/v1/E7/device/data", &bytes)]);
    assert!(
        r.findings.iter().any(|f| f.rule == "payload.invalid_json"),
        "{:?}",
        r.findings
    );
    let html = html_of(&r);
    let len = bytes.len();
    assert!(
        html.contains(&format!("{len} bytes")),
        "the length is shown"
    );
    assert!(html.contains("(not JSON: "), "why");
    assert!(
        html.contains("REP_SYS_STATUS&quot; &quot;param"),
        "the bytes are shown"
    );
    assert!(html.contains("\\xff") && html.contains("\\u{1}"), "escaped");
    assert!(html.contains("\\xff&lt;b&gt;"), "HTML-escaped");
    assert!(!html.contains("hunter2"), "no credential");
    assert!(html.contains(&format!("… ({len} bytes in all)")), "bounded");
    assert!(!html.contains(&"x".repeat(300)), "bounded");
}

#[test]
fn a_valid_payload_shows_as_json_without_an_excerpt_note() {
    let r = report_of(&[("/v1/E7/device/data", STATUS.as_bytes())]);
    let html = html_of(&r);
    assert!(!html.contains("not JSON"));
    assert!(html.contains(&format!("{} bytes", STATUS.len())));
}

/// clean-session.pcap split by editcap into rotated files of 80 packets.
fn rotated(tag: &str) -> Vec<String> {
    let dir = common::temp_dir(tag);
    let status = Command::new("editcap")
        .args(["-c", "80", &capture("clean-session.pcap")])
        .arg(dir.join("rot.pcap"))
        .status()
        .expect("editcap (wireshark-common) is required");
    assert!(status.success());
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path().display().to_string())
        .collect();
    files.sort();
    assert!(files.len() >= 3, "{files:?}");
    files
}

fn messages_of(files: &[String]) -> (u64, Value, String) {
    let out = analyze(
        &[
            &["--format", "json"],
            &files.iter().map(String::as_str).collect::<Vec<_>>()[..],
        ]
        .concat(),
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    (
        v["summary"]["messages"].as_u64().unwrap(),
        v["summary"]["inputs"].clone(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn rotated_captures_given_out_of_order_are_read_in_the_order_of_their_first_packet() {
    let files = rotated("records-rot-shuffled");
    let mut shuffled = files.clone();
    shuffled.swap(0, 1);
    let last = shuffled.len() - 1;
    shuffled.swap(2, last);
    let (n, inputs, err) = messages_of(&shuffled);
    assert_eq!(n, 49, "every message of the session: {err}");
    assert_eq!(inputs, serde_json::json!(files), "inputs in time order");
    assert!(
        err.contains("in the order of their first packet's time"),
        "{err}"
    );
}

#[test]
fn rotated_captures_in_order_are_read_as_given_without_a_note() {
    let files = rotated("records-rot-ordered");
    let (n, inputs, err) = messages_of(&files);
    assert_eq!(n, 49);
    assert_eq!(inputs, serde_json::json!(files));
    assert!(!err.contains("first packet"), "{err}");
}

/// The chart of `pcap`: per edge (messages, kept message types).
fn chart_of(files: &[&str]) -> std::collections::BTreeMap<String, (u64, Vec<String>)> {
    let settings = edgetap::analyze::AnalyzeSettings {
        files: files.iter().map(std::path::PathBuf::from).collect(),
        ports: vec![],
        max_packet: 1 << 20,
        progress: false,
    };
    let rules = std::sync::Arc::new(edgetap::rules::RuleSet::builtin());
    let r = edgetap::analyze::analyze_files_parallel_charted(rules, &settings, true, None).unwrap();
    let t = r.timeline.expect("charted");
    t.edges
        .iter()
        .map(|(e, lane)| {
            let types = lane
                .kept
                .iter()
                .map(|x| format!("{} {}", x.msg_type.as_deref().unwrap_or("?"), x.class))
                .collect();
            (e.clone(), (lane.messages, types))
        })
        .collect()
}

#[test]
fn the_chart_keeps_the_exchanges_of_every_clause_past_its_first_40_messages() {
    // clean-session: 49 messages on one edge; 6.3.3's CMD_APP_UPGRADE, its 202 and
    // its REP_JOB_RESULT come after the 40th.
    let chart = chart_of(&[&capture("clean-session.pcap")]);
    let (messages, kept) = &chart["E1"];
    assert_eq!(*messages, 49);
    for want in [
        "CMD_APP_UPGRADE request",
        "CMD_APP_UPGRADE reply",
        "EVENT_LINKDOWN report",
    ] {
        assert!(kept.iter().any(|k| k == want), "{want} missing: {kept:?}");
    }
    let results = kept
        .iter()
        .filter(|k| *k == "REP_JOB_RESULT report")
        .count();
    assert_eq!(
        results, 4,
        "every job's result (upgrade, container, app install, app upgrade): {kept:?}"
    );
    // Each message of this session is the first of its exchange: all are charted.
    assert_eq!(kept.len(), 49);
}

#[test]
fn the_chart_still_leaves_out_repeats_of_a_kind_past_its_head() {
    // 120 status reports of one edge: the first 40 and nothing of the same kind after.
    let mut msgs: Vec<(String, Vec<u8>)> = vec![];
    for i in 0..120 {
        msgs.push((
            "/v1/E7/device/data".into(),
            format!(
                r#"{{"type":"REP_SYS_STATUS","timestamp":"2026-11-26 10:00:{:02}","param":{{}}}}"#,
                i % 60
            )
            .into_bytes(),
        ));
    }
    let borrowed: Vec<(&str, &[u8])> = msgs.iter().map(|(t, p)| (t.as_str(), &p[..])).collect();
    let r = report_of(&borrowed);
    let lane = &r.timeline.as_ref().unwrap().edges["E7"];
    assert_eq!(lane.messages, 120);
    // The findings on every report pin their neighbourhoods (PINS_PER_RULE each
    // rule): the chart is bounded, not the whole run.
    assert!(lane.kept.len() < 120, "{}", lane.kept.len());
}

#[test]
fn a_severity_filter_keeps_a_pending_clause_partly_exercised_and_another_edge_drops_it() {
    let pcap = capture("bad-sequence.pcap");
    let status = |args: &[&str]| -> Value {
        let out = analyze(&[&["--format", "json"], args, &[&pcap]].concat());
        let json: Value = serde_json::from_slice(&out.stdout).unwrap();
        json["clauses"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["clause"] == "6.1.2")
            .map(|c| c["status"].clone())
            .unwrap()
    };
    // --severity error hides the info job.pending, not the fact it was pending.
    assert_eq!(status(&["--severity", "error"]), "partly exercised");
    assert_eq!(status(&["--edge", "E1"]), "partly exercised");
    // An edge without the pending job: its view of 6.1.2 holds no open work.
    assert_ne!(status(&["--edge", "E9"]), "partly exercised");
}
