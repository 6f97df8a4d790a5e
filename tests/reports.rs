//! Reports people read: a capture with 20,000 status reports that each lack the
//! required fields of table 10 (160,000 findings) reads in a short table, and the
//! groups account for every finding of the JSON.
//!
//! Made with real tools: mosquitto on a free port, `mosquitto_pub -l`, tcpdump on lo.
//! The test FAILS when one of them is missing.

use std::process::Command;
use std::sync::Arc;

use crate::common;

use common::{publish_lines, tcpdump, temp_dir, Mosquitto};
use serde_json::Value;

/// Reports per edge; two edges.
const REPORTS: usize = 10_000;
/// The table must stay under this many lines.
const MAX_TABLE_LINES: usize = 200;

fn edgetap() -> Command {
    Command::new(env!("CARGO_BIN_EXE_edgetap"))
}

/// `count` REP_SYS_STATUS reports with an empty `param`: every required field of
/// table 10 is missing from each.
fn status_reports_lacking_fields(count: usize) -> String {
    (1..=count)
        .map(|mid| {
            format!(
                "{{\"type\":\"REP_SYS_STATUS\",\"mid\":{mid},\
                 \"timestamp\":\"2026-11-26 10:00:00\",\"param\":{{}}}}\n"
            )
        })
        .collect()
}

fn analyze(args: &[&str]) -> std::process::Output {
    edgetap()
        .arg("analyze")
        .args(args)
        .output()
        .expect("run edgetap analyze")
}

#[test]
fn a_finding_heavy_capture_reads_in_a_short_table_and_groups_add_up() {
    let broker = Mosquitto::start();
    let dir = temp_dir("reports-heavy");
    let dump = tcpdump(broker.port, dir.join("heavy.pcap"));
    let lines = status_reports_lacking_fields(REPORTS);
    publish_lines(broker.port, &[], "/v1/HEAVY1/device/data", &lines);
    publish_lines(broker.port, &[], "/v1/HEAVY2/device/data", &lines);
    let pcap = dump.stop();
    let pcap = pcap.to_str().unwrap();
    let port = broker.port.to_string();

    let out = analyze(&["--format", "json", "--port", &port, pcap]);
    let r: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON report ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        r["summary"]["messages"],
        2 * REPORTS as u64,
        "{}",
        r["summary"]
    );
    let findings = r["findings"].as_array().unwrap().len() as u64;
    let t10 = r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["rule"] == "t10.REP_SYS_STATUS")
        .count();
    assert!(
        t10 >= 2 * REPORTS * 8,
        "8 missing fields per report: {t10} findings"
    );
    let groups = r["groups"].as_array().unwrap();
    let grouped: u64 = groups.iter().map(|g| g["count"].as_u64().unwrap()).sum();
    assert_eq!(grouped, findings, "the groups hold every finding once");
    assert!(
        groups.len() < 40,
        "{} groups: {}",
        groups.len(),
        r["groups"]
    );
    let cpu = groups
        .iter()
        .find(|g| g["edge_id"] == "HEAVY1" && g["example"].as_str().unwrap().contains("cpuRate"))
        .unwrap_or_else(|| panic!("no cpuRate group of HEAVY1: {}", r["groups"]));
    assert_eq!(cpu["count"], REPORTS as u64, "{cpu}");

    // The per-edge summary counts each edge's messages and findings.
    let edges = r["edges"].as_array().unwrap();
    assert_eq!(edges.len(), 2, "{}", r["edges"]);
    for e in edges {
        assert_eq!(e["messages"], REPORTS as u64, "{e}");
    }
    let errors: u64 = edges.iter().map(|e| e["errors"].as_u64().unwrap()).sum();
    assert_eq!(errors, r["summary"]["errors"].as_u64().unwrap());

    let out = analyze(&["--port", &port, pcap]);
    let table = String::from_utf8_lossy(&out.stdout);
    let n = table.lines().count();
    assert!(n < MAX_TABLE_LINES, "the table has {n} lines:\n{table}");
    assert!(
        table.contains(&format!("Findings ({findings} in {} groups", groups.len())),
        "{table}"
    );
    assert!(table.contains(&format!("×{REPORTS}")), "{table}");
    assert!(table.contains("HEAVY2"), "{table}");

    // JUnit keeps the failing clause and lists its groups, not every finding.
    let out = analyze(&["--format", "junit", "--port", &port, pcap]);
    let xml = String::from_utf8_lossy(&out.stdout);
    assert!(xml.contains("<failure message=\""), "{xml}");
    let n = xml.lines().count();
    assert!(n < MAX_TABLE_LINES, "the JUnit report has {n} lines");

    // --each lists every finding, as before the grouping.
    let out = analyze(&["--each", "--port", &port, pcap]);
    let each = String::from_utf8_lossy(&out.stdout).lines().count() as u64;
    assert!(
        each > findings,
        "--each printed {each} lines for {findings} findings"
    );

    // The table and JUnit are built from a report that keeps the first findings
    // and counts the rest in their groups (memory flat with the findings): the
    // same counts, clauses, groups and edges as the report that keeps them all.
    let settings = edgetap::analyze::AnalyzeSettings {
        files: vec![pcap.into()],
        ports: vec![broker.port],
        max_packet: 1 << 20,
        progress: false,
    };
    let rules = Arc::new(edgetap::rules::RuleSet::builtin());
    let run = |keep| {
        edgetap::analyze::analyze_files_parallel_charted(rules.clone(), &settings, false, keep)
            .expect("analyze the capture")
    };
    let (all, kept) = (run(None), run(Some(100)));
    assert_eq!(all.findings.len() as u64, findings);
    assert!(all.summary.not_listed.is_none());
    let listed = kept.findings.len() as u64;
    assert!(listed < 100 + groups.len() as u64, "{listed} findings kept");
    let not_listed = kept
        .summary
        .not_listed
        .as_ref()
        .expect("says what it left out");
    assert_eq!(listed + not_listed.findings, findings);
    assert_eq!(not_listed.hint, "--each lists every one");
    assert_eq!(kept.total_findings(), all.total_findings());
    assert_eq!(
        serde_json::to_value(&kept.groups).unwrap(),
        serde_json::to_value(&all.groups).unwrap()
    );
    assert_eq!(
        serde_json::to_value(&kept.clauses).unwrap(),
        serde_json::to_value(&all.clauses).unwrap()
    );
    assert_eq!(
        serde_json::to_value(&kept.edges).unwrap(),
        serde_json::to_value(&all.edges).unwrap()
    );
    assert_eq!(kept.summary.errors, all.summary.errors);
    assert_eq!(kept.exit_code(), all.exit_code());
}

/// `analyze --capture ID` (a capture recorded by `edgetap proxy`) takes the same
/// filters and groups as a pcap.
#[test]
fn a_stored_capture_is_filtered_and_grouped_like_a_pcap() {
    let broker = Mosquitto::start();
    let store = temp_dir("reports-store");
    let store = store.to_str().unwrap();
    let proxy = common::ProxyProcess::start(|c| {
        c.args(["--upstream", &format!("127.0.0.1:{}", broker.port)])
            .args(["--store", store]);
    });
    publish_lines(
        proxy.port,
        &[],
        "/v1/CAP1/device/data",
        &status_reports_lacking_fields(50),
    );
    proxy.wait_closed(1);
    let (_, text, _) = proxy.stop();
    assert!(text.contains("capture 1 stored"), "{text}");

    let json = |extra: &[&str]| {
        let mut args = vec!["--capture", "1", "--store", store, "--format", "json"];
        args.extend_from_slice(extra);
        let out = analyze(&args);
        let r: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("no JSON ({e}): {}", String::from_utf8_lossy(&out.stderr)));
        (out.status.code(), r)
    };
    let (code, all) = json(&[]);
    assert_eq!(code, Some(1));
    let findings = all["findings"].as_array().unwrap().len() as u64;
    assert!(findings >= 50 * 8, "{findings} findings");
    let grouped: u64 = all["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["count"].as_u64().unwrap())
        .sum();
    assert_eq!(grouped, findings);
    assert_eq!(all["edges"][0]["edge_id"], "CAP1");
    assert_eq!(all["edges"][0]["messages"], 50);

    // An edge the capture does not hold judged nothing: exit 3, not a pass.
    let (code, r) = json(&["--edge", "NOT-THERE"]);
    assert_eq!(code, Some(3), "nothing judged: {}", r["summary"]);
    assert!(
        r["summary"]["not_judged_because"]
            .to_string()
            .contains("no message of edge NOT-THERE in the input; its edges are: CAP1"),
        "{}",
        r["summary"]
    );
    assert!(r["findings"].as_array().unwrap().is_empty());
    assert_eq!(
        r["summary"]["filtered"]["hidden_errors"],
        all["summary"]["errors"]
    );

    let (code, r) = json(&["--rule", "t10.", "--severity", "error"]);
    assert_eq!(code, Some(1));
    let shown = r["findings"].as_array().unwrap();
    assert_eq!(shown.len(), 50 * 8, "{}", r["groups"]);
    assert!(shown.iter().all(|f| f["rule"] == "t10.REP_SYS_STATUS"));
}
