//! `--findings FILE|-` on `analyze` and `proxy`: one JSON object per finding (EVE
//! style), the same findings the report holds, citing where each was seen.
//! (`watch --findings` is tested in `watch.rs`.)

use std::process::Command;

use crate::common;

const BIN: &str = env!("CARGO_BIN_EXE_edgetap");

fn lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn analyze_findings_to_stdout_are_the_reports_findings_one_per_line() {
    let file = "captures/bad-schema.pcap";
    let out = Command::new(BIN)
        .args(["analyze", "--no-progress", "--findings", "-", file])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stream = lines(&String::from_utf8_lossy(&out.stdout));
    // The report went to stderr.
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("edgetap test record"), "{err}");
    let json = Command::new(BIN)
        .args(["analyze", "--no-progress", "--format", "json", file])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let findings = report["findings"].as_array().unwrap();
    assert!(!findings.is_empty());
    assert_eq!(stream.len(), findings.len());
    for (l, f) in stream.iter().zip(findings) {
        assert_eq!(l["event_type"], "finding");
        assert_eq!(l["rule"], f["rule"]);
        assert_eq!(l["severity"], f["severity"]);
        assert_eq!(l["seen"]["frame"], f["packet"]);
        assert_eq!(l["seen"]["by"], "analyze");
        assert_eq!(l["seen"]["source"], file);
    }
    // A filter shows fewer findings: the stream holds those shown.
    let out = Command::new(BIN)
        .args([
            "analyze",
            "--no-progress",
            "--severity",
            "error",
            "--findings",
            "-",
            file,
        ])
        .output()
        .unwrap();
    let errors = lines(&String::from_utf8_lossy(&out.stdout));
    assert!(!errors.is_empty() && errors.iter().all(|l| l["severity"] == "error"));
    assert!(errors.len() < stream.len() || stream.iter().all(|l| l["severity"] == "error"));
}

#[test]
fn proxy_findings_file_gets_each_finding_as_it_is_judged() {
    let m = common::Mosquitto::start();
    let dir = common::temp_dir("proxy-findings");
    let log = dir.join("findings.jsonl");
    let proxy = common::ProxyProcess::start(|c| {
        c.args(["--upstream", &format!("127.0.0.1:{}", m.port)])
            .arg("--store")
            .arg(dir.join("store"))
            .arg("--findings")
            .arg(&log);
    });
    let ts = edgetap::sim::cst_now();
    // container must be a string (table 36): one error, twice.
    let bad = format!(
        "{{\"mid\":1000000000020035,\"type\":\"CMD_CON_START\",\"timestamp\":\"{ts}\",\"param\":{{\"container\":1}}}}\n"
    );
    common::publish_lines(
        proxy.port,
        &["-i", "platform"],
        "/v1/P1/container/command",
        &format!("{bad}{bad}"),
    );
    // Before the proxy stops: the stream is written as findings are judged.
    common::wait_until(
        std::time::Duration::from_secs(30),
        "two t36 lines in the findings file",
        || std::fs::read_to_string(&log).is_ok_and(|t| t.matches("t36.CMD_CON_START").count() == 2),
    );
    let (status, out, _) = proxy.stop();
    assert_eq!(status.code(), Some(1), "{out}");
    let stream = lines(&std::fs::read_to_string(&log).unwrap());
    let t36: Vec<_> = stream
        .iter()
        .filter(|l| l["rule"] == "t36.CMD_CON_START")
        .collect();
    assert_eq!(t36.len(), 2);
    assert_eq!(t36[0]["edge"], "P1");
    assert_eq!(t36[0]["seen"]["by"], "proxy");
    assert_eq!(t36[0]["topic"], "/v1/P1/container/command");
}
