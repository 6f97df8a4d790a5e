//! The CLI contract: exit codes, `rules lint` naming file and rule id, `rules list`
//! as JSON, and the three report formats of `analyze`.

use std::path::Path;
use std::process::{Command, Output};

mod common;

fn edgetap(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_edgetap"))
        .args(args)
        .output()
        .unwrap()
}

fn capture(name: &str) -> String {
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
