//! The CLI contract: exit codes, `rules lint` naming file and rule id, `rules list`
//! as JSON, and the three report formats of `analyze`.

use std::path::Path;
use std::process::{Command, Output};

use crate::common;

pub(crate) fn edgetap(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_edgetap"))
        .args(args)
        .output()
        .unwrap()
}

pub(crate) fn capture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("captures")
        .join(name)
        .display()
        .to_string()
}

#[test]
fn lint_accepts_the_repository_rules_and_names_file_and_rule_of_a_bad_one() {
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    let out = edgetap(&["rules", "lint", "--alone", rules.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let dir = common::temp_dir("lint");
    std::fs::write(
        dir.join("vendor.json"),
        r#"{"rules": [{"id": "vendor.bad", "severity": "warning", "message": "m",
            "check": {"kind": "schema", "when": {"type": "CMD_NOPE"}, "fields": {}}}]}"#,
    )
    .unwrap();
    let out = edgetap(&["rules", "lint", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("vendor.json") && err.contains("vendor.bad"),
        "{err}"
    );

    // A typo in a key is an error too (deny_unknown_fields), not silently ignored.
    std::fs::write(
        dir.join("vendor.json"),
        r#"{"rules": [{"id": "vendor.typo", "severity": "error", "mesage": "m", "check": {"kind": "reply_orphan"}}]}"#,
    )
    .unwrap();
    let out = edgetap(&["rules", "lint", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("mesage"));
}

#[test]
fn rules_list_json_has_every_rule_with_clause_and_severity() {
    let out = edgetap(&["rules", "list", "--format", "json"]);
    assert_eq!(out.status.code(), Some(0));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    assert!(rows.len() >= 70, "{}", rows.len());
    assert!(rows
        .iter()
        .any(|r| r["id"] == "t6.CMD_SYS_UPGRADE" && r["severity"] == "error"));
    // Every error rule shows the sentence of the standard it enforces.
    for r in rows.iter().filter(|r| r["severity"] == "error") {
        let basis = r["basis"].as_str().unwrap_or("");
        assert!(
            basis.chars().count() > 8 && basis != "—",
            "{}: basis {basis:?}",
            r["id"]
        );
    }
}

#[test]
fn lint_refuses_an_error_rule_without_basis() {
    let dir = common::temp_dir("lint-basis");
    let rule = |basis: &str| {
        format!(
            r#"{{"rules": [{{"id": "vendor.x", "severity": "error", {basis} "message": "m",
                "check": {{"kind": "schema", "when": {{"type": "CMD_SYS_UPGRADE"}}, "fields": {{}}}}}}]}}"#
        )
    };
    std::fs::write(dir.join("vendor.json"), rule("")).unwrap();
    let out = edgetap(&["rules", "lint", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("vendor.x") && err.contains("basis"), "{err}");
    std::fs::write(
        dir.join("vendor.json"),
        rule(r#""basis": "表6 \"jobId number 是\"","#),
    )
    .unwrap();
    let out = edgetap(&["rules", "lint", dir.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The same rule as a warning needs none.
    std::fs::write(
        dir.join("vendor.json"),
        rule("").replace("\"error\"", "\"warning\""),
    )
    .unwrap();
    let out = edgetap(&["rules", "lint", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn analyze_exit_codes_and_formats() {
    let clean = capture("clean-session.pcap");
    let bad = capture("bad-pairing.pcap");
    let out = edgetap(&["analyze", &clean]);
    assert_eq!(out.status.code(), Some(0));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("6.1.2") && table.contains("设备升级") && table.contains("PASS"));

    let out = edgetap(&["analyze", "--format", "junit", &bad]);
    assert_eq!(out.status.code(), Some(1));
    let xml = String::from_utf8_lossy(&out.stdout);
    assert!(
        xml.starts_with("<?xml") && xml.contains("<failure"),
        "{xml}"
    );
    // A warning fails no clause, and is in the JUnit all the same: a CI page shows
    // the report, not the exit code.
    let out = edgetap(&[
        "analyze",
        "--format",
        "junit",
        &capture("bad-envelope.pcap"),
    ]);
    let xml = String::from_utf8_lossy(&out.stdout);
    let out_lines: Vec<&str> = xml
        .split("<system-out>")
        .skip(1)
        .filter_map(|s| s.split("</system-out>").next())
        .collect();
    assert!(
        out_lines
            .iter()
            .any(|s| s.contains("warning") && s.contains("[topic.missing_slash]")),
        "{xml}"
    );

    let out = edgetap(&["analyze", "--format", "json", &bad]);
    assert_eq!(out.status.code(), Some(1));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for key in [
        "mqtt_packets",
        "publishes",
        "messages",
        "errors",
        "warnings",
    ] {
        assert!(r["summary"][key].is_u64(), "summary.{key}");
    }
    let f = &r["findings"][0];
    for key in [
        "rule", "clause", "severity", "edge_id", "type", "topic", "mid", "packet", "time",
        "message",
    ] {
        assert!(f.get(key).is_some(), "findings[].{key} missing: {f}");
    }
    assert!(r["clauses"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["status"] == "fail"));

    // Bad usage: exit 2.
    assert_eq!(edgetap(&["analyze"]).status.code(), Some(2));
    assert_eq!(
        edgetap(&["analyze", "--format", "xml", &clean])
            .status
            .code(),
        Some(2)
    );
}

/// `edgetap analyze --format json ARGS…`: exit code and report.
pub(crate) fn analyze_json(args: &[&str]) -> (Option<i32>, serde_json::Value) {
    let mut all = vec!["analyze", "--format", "json"];
    all.extend_from_slice(args);
    let out = edgetap(&all);
    let r = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{args:?}: no JSON report ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), r)
}

fn rules_of(r: &serde_json::Value) -> Vec<String> {
    r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["rule"].as_str().unwrap().to_string())
        .collect()
}

/// Each finding says who published the message it cites (by its topic's role): the
/// edge's reply with the wrong code, the platform's request that got no reply.
#[test]
fn findings_name_the_sender_of_the_message_they_cite() {
    let bad = capture("bad-pairing.pcap");
    let (_, r) = analyze_json(&[&bad]);
    let from = |rule: &str| -> Vec<String> {
        r["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["rule"] == rule)
            .map(|f| f["from"].as_str().unwrap_or("absent").to_string())
            .collect()
    };
    assert_eq!(from("reply.code"), ["edge"]);
    assert_eq!(from("reply.orphan"), ["edge"]);
    assert_eq!(from("reply.pending"), ["platform", "platform"]);
    let out = edgetap(&["analyze", &bad]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("[reply.pending] edge E1 (platform's message) packet"),
        "{table}"
    );
    assert!(table.contains("[reply.code] edge E1 packet"), "{table}");
}

/// bad-pairing.pcap: reply.code (6.2.2, error), reply.orphan (6.1.3, error) and
/// reply.pending (6.2.3 and 6.1.3, info), all of edge E1.
#[test]
fn filters_change_what_is_shown_and_the_exit_code_follows_it() {
    let bad = capture("bad-pairing.pcap");
    let (code, all) = analyze_json(&[&bad]);
    assert_eq!(code, Some(1));
    assert_eq!(
        all["findings"].as_array().unwrap().len(),
        4,
        "{}",
        all["findings"]
    );
    assert!(
        all["summary"].get("filtered").is_none(),
        "{}",
        all["summary"]
    );

    // A clause that holds only an info finding: the CI gate on it passes.
    let (code, r) = analyze_json(&["--clause", "6.2.3", &bad]);
    assert_eq!(code, Some(0), "{}", r["summary"]);
    assert_eq!(rules_of(&r), ["reply.pending"]);
    let clauses: Vec<&str> = r["clauses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["clause"].as_str().unwrap())
        .collect();
    assert_eq!(clauses, ["6.2.3"]);
    assert_eq!(r["summary"]["errors"], 0);
    assert_eq!(
        r["summary"]["filtered"]["hidden_errors"], 2,
        "{}",
        r["summary"]
    );
    assert_eq!(r["summary"]["filtered"]["applied"][0], "--clause 6.2.3");

    // A clause holds its sub-clauses.
    let (code, r) = analyze_json(&["--clause", "6.2", &bad]);
    assert_eq!(code, Some(1));
    assert_eq!(rules_of(&r), ["reply.code", "reply.pending"]);
    assert_eq!(r["summary"]["errors"], 1);

    let (code, r) = analyze_json(&["--severity", "error", &bad]);
    assert_eq!(code, Some(1));
    assert_eq!(rules_of(&r), ["reply.code", "reply.orphan"]);
    assert_eq!(r["summary"]["filtered"]["hidden_infos"], 2);

    let (code, r) = analyze_json(&["--rule", "reply.orphan", "--rule", "reply.pending", &bad]);
    assert_eq!(code, Some(1));
    assert_eq!(
        rules_of(&r),
        ["reply.orphan", "reply.pending", "reply.pending"]
    );
    let (_, r) = analyze_json(&["--rule", "reply.", &bad]);
    assert_eq!(
        rules_of(&r).len(),
        4,
        "a prefix ending in . names every reply rule"
    );

    // An edge the capture does not hold: nothing shown, nothing judged (exit 3, not
    // a pass), the table says what was left out.
    let (code, r) = analyze_json(&["--edge", "E2", &bad]);
    assert_eq!(code, Some(3));
    assert!(rules_of(&r).is_empty());
    assert!(r["edges"].as_array().unwrap().is_empty(), "{}", r["edges"]);
    let out = edgetap(&["analyze", "--edge", "E2", &bad]);
    assert_eq!(out.status.code(), Some(3));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("No findings."), "{table}");
    assert!(
        table.contains("filtered by --edge E2: 2 errors, 2 info not shown"),
        "{table}"
    );
    let (_, r) = analyze_json(&["--edge", "E1", &bad]);
    assert_eq!(rules_of(&r).len(), 4);
    assert_eq!(r["edges"][0]["edge_id"], "E1");

    // JUnit follows the filter too.
    let out = edgetap(&[
        "analyze",
        "--format",
        "junit",
        "--severity",
        "warning",
        "--rule",
        "reply.pending",
        &bad,
    ]);
    assert_eq!(out.status.code(), Some(0));
    let xml = String::from_utf8_lossy(&out.stdout);
    assert!(!xml.contains("<failure"), "{xml}");
    assert!(
        xml.contains(
            "<!-- filtered by severity warning rule reply.pending: 2 errors, 2 info not shown -->"
        ),
        "{xml}"
    );
}

#[test]
fn groups_and_edges_in_json_and_the_table_groups_unless_each() {
    let bad = capture("bad-envelope.pcap");
    let (_, r) = analyze_json(&[&bad]);
    let findings = r["findings"].as_array().unwrap().len() as u64;
    let groups = r["groups"].as_array().unwrap();
    assert!(!groups.is_empty());
    let grouped: u64 = groups.iter().map(|g| g["count"].as_u64().unwrap()).sum();
    assert_eq!(grouped, findings, "{}", r["groups"]);
    for key in [
        "rule",
        "clause",
        "severity",
        "edge_id",
        "pattern",
        "first_packet",
        "last_packet",
        "example",
    ] {
        assert!(
            groups[0].get(key).is_some(),
            "groups[0].{key}: {}",
            groups[0]
        );
    }
    let e1 = &r["edges"][0];
    assert_eq!(e1["edge_id"], "E1");
    assert_eq!(e1["errors"], r["summary"]["errors"]);
    assert_eq!(e1["messages"], r["summary"]["messages"]);

    let table = String::from_utf8_lossy(&edgetap(&["analyze", &bad]).stdout).into_owned();
    assert!(
        table.contains(&format!("Findings ({findings} in {} groups", groups.len())),
        "{table}"
    );
    assert!(table.contains("│ edge │ messages │ errors │"), "{table}");
    let each = String::from_utf8_lossy(&edgetap(&["analyze", "--each", &bad]).stdout).into_owned();
    assert!(
        each.contains("[topic.missing_slash] packet 124 edge E1"),
        "{each}"
    );
}

#[test]
fn disable_switches_a_rule_off_and_an_unknown_id_is_an_error() {
    let bad = capture("bad-envelope.pcap");
    let (code, r) = analyze_json(&["--disable", "topic.missing_slash", &bad]);
    assert_eq!(code, Some(1));
    let rules = rules_of(&r);
    assert!(
        !rules.contains(&"topic.missing_slash".to_string()),
        "{rules:?}"
    );
    assert_eq!(rules.len(), 4, "{rules:?}");
    assert!(
        r["summary"].get("filtered").is_none(),
        "disabling is no filter"
    );

    let out = edgetap(&["analyze", "--disable", "topic.missing_slsh", &bad]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("topic.missing_slsh"), "{err}");

    // A rules folder disables rules too; `rules list` shows them as disabled.
    let dir = common::temp_dir("disable");
    std::fs::write(
        dir.join("off.json"),
        r#"{"disable": ["naming.key", "envelope."]}"#,
    )
    .unwrap();
    let dir = dir.to_str().unwrap();
    let (code, r) = analyze_json(&["--rules", dir, &bad]);
    assert_eq!(code, Some(1), "payload.invalid_json is still an error");
    let rules = rules_of(&r);
    assert!(
        rules.iter().all(|x| !x.starts_with("envelope.")),
        "{rules:?}"
    );
    assert!(
        rules.contains(&"payload.invalid_json".to_string()),
        "{rules:?}"
    );

    let out = edgetap(&[
        "rules",
        "list",
        "--format",
        "json",
        "--rules",
        dir,
        "--disable",
        "reply.late",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let state = |id: &str| {
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == id)
            .unwrap_or_else(|| panic!("{id} not listed"))["state"]
            .clone()
    };
    assert_eq!(state("naming.key"), "disabled");
    assert_eq!(state("envelope.string_number"), "disabled");
    assert_eq!(state("reply.late"), "disabled");
    assert_eq!(state("naming.type"), "on");

    std::fs::write(
        std::path::Path::new(dir).join("typo.json"),
        r#"{"disable": ["naming.kee"]}"#,
    )
    .unwrap();
    let out = edgetap(&["rules", "list", "--rules", dir]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("typo.json") && err.contains("naming.kee"),
        "{err}"
    );
}
