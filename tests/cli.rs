//! The CLI contract: exit codes, `rules lint` naming file and rule id, `rules list`
//! as JSON, and the three report formats of `analyze`.

use std::path::Path;
use std::process::{Command, Output};

use crate::common;

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
fn analyze_json(args: &[&str]) -> (Option<i32>, serde_json::Value) {
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

// ------------------------------------------------ exit codes CI can trust (2 and 3)

/// A run of `analyze` with its exit code, stdout and stderr as text.
struct Run {
    code: Option<i32>,
    out: String,
    err: String,
}

fn analyze(args: &[&str]) -> Run {
    let mut all = vec!["analyze"];
    all.extend_from_slice(args);
    let o = edgetap(&all);
    Run {
        code: o.status.code(),
        out: String::from_utf8_lossy(&o.stdout).into_owned(),
        err: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// Deterministic noise (xorshift), so that a failure can be reproduced.
fn noise(n: usize, mut seed: u64) -> Vec<u8> {
    (0..n)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect()
}

fn pcap_header() -> Vec<u8> {
    let mut h = vec![];
    h.extend_from_slice(&0xA1B2_C3D4u32.to_le_bytes());
    h.extend_from_slice(&2u16.to_le_bytes());
    h.extend_from_slice(&4u16.to_le_bytes());
    h.extend_from_slice(&[0; 8]);
    h.extend_from_slice(&65535u32.to_le_bytes());
    h.extend_from_slice(&1u32.to_le_bytes());
    h
}

/// A little-endian pcapng block.
fn pcapng_block(kind: u32, body: &[u8]) -> Vec<u8> {
    let len = (12 + body.len()) as u32;
    let mut b = kind.to_le_bytes().to_vec();
    b.extend_from_slice(&len.to_le_bytes());
    b.extend_from_slice(body);
    b.extend_from_slice(&len.to_le_bytes());
    b
}

/// A section header and one Ethernet interface description: 48 bytes.
fn pcapng_head() -> Vec<u8> {
    let mut shb = 0x1A2B_3C4Du32.to_le_bytes().to_vec();
    shb.extend_from_slice(&1u16.to_le_bytes());
    shb.extend_from_slice(&0u16.to_le_bytes());
    shb.extend_from_slice(&(-1i64).to_le_bytes());
    let mut idb = 1u16.to_le_bytes().to_vec();
    idb.extend_from_slice(&0u16.to_le_bytes());
    idb.extend_from_slice(&65535u32.to_le_bytes());
    let mut file = pcapng_block(0x0A0D_0D0A, &shb);
    file.extend(pcapng_block(1, &idb));
    assert_eq!(file.len(), 48);
    file
}

/// Exit 2, the message on stderr names the file, the frame and the byte offset, and
/// the JSON report says the capture is unreadable.
fn assert_unreadable(name: &str, bytes: &[u8], place: &str) {
    let dir = common::temp_dir("hostile");
    let file = dir.join(name);
    std::fs::write(&file, bytes).unwrap();
    let r = analyze(&["--format", "json", file.to_str().unwrap()]);
    assert_eq!(r.code, Some(2), "{name}: stderr:\n{}", r.err);
    assert!(
        r.err.contains(&format!("{name}: {place}")),
        "{name}: stderr must name file, frame and byte offset ({place}):\n{}",
        r.err
    );
    let report: serde_json::Value = serde_json::from_str(&r.out).unwrap();
    let unreadable = report["summary"]["unreadable"].to_string();
    assert!(unreadable.contains(place), "{unreadable}");
    assert_eq!(report["summary"]["judged"], false);
}

#[test]
fn a_pcap_header_followed_by_random_bytes_exits_2_naming_the_place() {
    let mut file = pcap_header();
    file.extend(noise(4096, 7));
    assert_unreadable("random.pcap", &file, "frame 1 at byte offset 24");
}

#[test]
fn a_pcapng_with_garbage_after_its_interface_block_exits_2_naming_the_place() {
    let mut file = pcapng_head();
    file.extend(noise(4096, 11));
    assert_unreadable("garbage.pcapng", &file, "frame 1 at byte offset 48");
}

#[test]
fn a_pcapng_block_claiming_a_gigabyte_exits_2_naming_the_place() {
    let mut file = pcapng_head();
    file.extend_from_slice(&6u32.to_le_bytes());
    file.extend_from_slice(&(1u32 << 30).to_le_bytes());
    file.extend_from_slice(&[0; 200]);
    assert_unreadable("huge.pcapng", &file, "frame 1 at byte offset 48");
}

#[test]
fn a_capture_broken_after_good_frames_exits_2_but_one_cut_at_its_end_does_not() {
    let good = std::fs::read(capture("clean-session.pcap")).unwrap();
    // Broken framing before the end: a record header claiming 3 GB, then more bytes.
    let mut broken = good.clone();
    let at = broken.len();
    broken.extend_from_slice(&[0; 8]);
    broken.extend_from_slice(&0xC000_0000u32.to_le_bytes());
    broken.extend_from_slice(&0xC000_0000u32.to_le_bytes());
    broken.extend(noise(1000, 3));
    let dir = common::temp_dir("broken");
    let file = dir.join("broken.pcap");
    std::fs::write(&file, &broken).unwrap();
    let r = analyze(&[file.to_str().unwrap()]);
    assert_eq!(r.code, Some(2), "{}", r.err);
    assert!(
        r.err.contains(&format!("at byte offset {at}")) && r.err.contains("broken.pcap: frame"),
        "{}",
        r.err
    );
    assert!(r.out.contains("capture not read in full"), "{}", r.out);

    // A capture cut inside its last record (tcpdump killed): said, not fatal.
    let cut = &good[..good.len() - 5];
    let file = dir.join("cut.pcap");
    std::fs::write(&file, cut).unwrap();
    let r = analyze(&["--format", "json", file.to_str().unwrap()]);
    assert_ne!(r.code, Some(2), "{}", r.err);
    let report: serde_json::Value = serde_json::from_str(&r.out).unwrap();
    assert!(
        report["summary"]["incomplete"]
            .to_string()
            .contains("cut.pcap: frame"),
        "{}",
        report["summary"]
    );
    assert!(r.err.contains("not read in full"), "{}", r.err);
}

#[test]
fn an_empty_capture_exits_3_with_a_junit_failure() {
    let dir = common::temp_dir("empty");
    let file = dir.join("empty.pcap");
    std::fs::write(&file, pcap_header()).unwrap();
    let r = analyze(&["--format", "junit", file.to_str().unwrap()]);
    assert_eq!(r.code, Some(3), "{}", r.err);
    assert!(
        r.out.contains("<failure message=\"nothing judged"),
        "{}",
        r.out
    );
    assert!(r.err.contains("no packets"), "{}", r.err);
    assert!(r.err.contains("(exit code 3)"), "{}", r.err);
}

/// `mosquitto_pub -l` publishing each line written to it, on one connection.
struct LinePublisher {
    child: std::process::Child,
}

impl LinePublisher {
    fn connect(port: u16, topic: &str) -> LinePublisher {
        let child = std::process::Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"])
            .args(["-i", "edge-E1", "-t", topic, "-l"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("mosquitto_pub must be installed (apt-get install mosquitto-clients)");
        LinePublisher { child }
    }
    fn send(&mut self, line: &str) {
        use std::io::Write;
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }
    fn disconnect(mut self) {
        drop(self.child.stdin.take());
        assert!(self.child.wait().unwrap().success());
    }
}

/// `mosquitto_sub` printing what it receives, to know a message went through.
struct Subscriber {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Subscriber {
    fn start(port: u16, topic: &str) -> Subscriber {
        use std::io::BufRead;
        let mut child = std::process::Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"])
            .args(["-i", "observer", "-t", topic])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("mosquitto_sub must be installed");
        let out = std::io::BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Subscriber { child, lines }
    }
    /// Whether `text` is received within `within`.
    fn saw(&mut self, text: &str, within: std::time::Duration) -> bool {
        let until = std::time::Instant::now() + within;
        loop {
            let left = until.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(text) => return true,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
    }
    /// Waits until `text` is received: a minute at most, then the test fails
    /// naming it (a lost message must not hang the test run).
    fn wait_for(&mut self, text: &str) {
        assert!(
            self.saw(text, std::time::Duration::from_secs(60)),
            "mosquitto_sub did not receive {text} within 60 s"
        );
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn linkdown(n: u32) -> String {
    format!(
        r#"{{"type":"EVENT_LINKDOWN","timestamp":"2026-12-01 19:00:0{n}","param":{{"reason":"Reboot OS"}}}}"#
    )
}

#[test]
fn a_capture_started_after_the_devices_connected_on_an_odd_port_exits_3_naming_port() {
    let broker = common::Mosquitto::start();
    let port = broker.port;
    assert_ne!(port, 1883);
    let topic = "/v1/E1/device/data";
    let mut sub = Subscriber::start(port, "/v1/#");
    let mut edge = LinePublisher::connect(port, topic);
    // The first message proves both clients connected; only then the capture starts.
    // It is sent again until the subscriber has it: one published before the
    // subscription was in place never arrives (that hung a CI run).
    let mut tries = 0;
    loop {
        edge.send(&linkdown(0));
        if sub.saw("19:00:00", std::time::Duration::from_secs(1)) {
            break;
        }
        tries += 1;
        assert!(tries < 30, "mosquitto_sub never received the first message");
    }
    let dir = common::temp_dir("late-capture");
    let dump = common::tcpdump(port, dir.join("late.pcap"));
    edge.send(&linkdown(1));
    edge.send(&linkdown(2));
    sub.wait_for("19:00:02");
    edge.disconnect();
    let file = dump.stop();
    let file = file.to_str().unwrap();

    let r = analyze(&[file]);
    assert_eq!(r.code, Some(3), "stdout:\n{}\nstderr:\n{}", r.out, r.err);
    for text in [r.out.as_str(), r.err.as_str()] {
        assert!(text.contains("--port"), "{text}");
        // The broker's port comes first: it carried the traffic of both clients.
        assert!(
            text.contains(&format!("most traffic: {port} (")),
            "port {port}: {text}"
        );
    }
    let r = analyze(&["--format", "junit", file]);
    assert_eq!(r.code, Some(3));
    assert!(r.out.contains("<failure"), "{}", r.out);
    let r = analyze(&["--format", "json", file]);
    let report: serde_json::Value = serde_json::from_str(&r.out).unwrap();
    assert_eq!(report["summary"]["judged"], false);
    assert!(report["summary"]["not_judged_because"][0]
        .as_str()
        .unwrap()
        .contains("--port"));

    // With the broker's port named, the messages are judged.
    let r = analyze(&["--format", "json", "--port", &port.to_string(), file]);
    let report: serde_json::Value = serde_json::from_str(&r.out).unwrap();
    assert!(
        report["summary"]["messages"].as_u64().unwrap() >= 2,
        "{}",
        report["summary"]
    );
    assert_eq!(report["summary"]["judged"], true);
    assert_ne!(r.code, Some(3), "{}", r.err);
    assert_ne!(r.code, Some(2), "{}", r.err);
}

#[test]
fn mqtt_without_protocol_topics_exits_3_saying_so() {
    let broker = common::Mosquitto::start();
    let port = broker.port;
    let dir = common::temp_dir("no-protocol");
    let dump = common::tcpdump(port, dir.join("plain.pcap"));
    let st = std::process::Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"])
        .args(["-t", "sensors/temp", "-m", "21.5"])
        .status()
        .expect("mosquitto_pub");
    assert!(st.success());
    let file = dump.stop();
    let r = analyze(&[file.to_str().unwrap()]);
    assert_eq!(r.code, Some(3), "{}\n{}", r.out, r.err);
    assert!(r.err.contains("protocol topic"), "{}", r.err);
}

#[test]
fn analyze_help_documents_every_exit_code() {
    let out = edgetap(&["analyze", "--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for line in [
        "2  bad usage",
        "1  error findings",
        "3  nothing judged",
        "0  protocol",
    ] {
        assert!(help.contains(line), "{line:?} missing from:\n{help}");
    }
}

#[test]
fn a_stored_capture_without_protocol_messages_exits_3() {
    let dir = common::temp_dir("store-empty");
    let id = {
        let store = edgetap::store::Store::open(&dir).unwrap();
        let mut meta = edgetap::store::CaptureMeta {
            id: 0,
            name: "idle proxy".into(),
            started_us: 1_795_687_200_000_000,
            ended_us: None,
            listen: "127.0.0.1:1".into(),
            upstream: "10.0.0.1:1883".into(),
            rules_version: "test".into(),
            connections: 0,
            chunks: 0,
            bytes: 0,
            packets: 0,
            findings: 0,
            not_recorded: None,
        };
        let id = store.begin_capture(&mut meta).unwrap();
        store.flush().unwrap();
        id
    };
    let r = analyze(&[
        "--format",
        "junit",
        "--capture",
        &id.to_string(),
        "--store",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(r.code, Some(3), "{}", r.err);
    assert!(
        r.out.contains("<failure message=\"nothing judged"),
        "{}",
        r.out
    );
}

/// A filter that names nothing must not turn a failing capture into a pass: an
/// unknown --rule or a --clause no rule judges is refused (exit 2, saying what
/// exists); an --edge absent from the input judged nothing (exit 3, naming the
/// edges there are).
#[test]
fn a_filter_that_names_nothing_is_refused_or_judges_nothing() {
    let bad = capture("bad-envelope.pcap");
    let r = analyze(&["--rule", "t10.REP_SYS_STATU", &bad]);
    assert_eq!(r.code, Some(2), "{}", r.err);
    assert!(
        r.err.contains("--rule t10.REP_SYS_STATU: no rule"),
        "{}",
        r.err
    );
    let r = analyze(&["--clause", "6.1.3.1", &bad]);
    assert_eq!(r.code, Some(2), "{}", r.err);
    assert!(r.err.contains("6.1.1, 6.1.2"), "{}", r.err);
    // A parent clause and a rule prefix are fine.
    let r = analyze(&["--clause", "6.1", "--rule", "t10.", &bad]);
    assert_ne!(r.code, Some(2), "{}", r.err);
    let (code, all) = analyze_json(&[&bad]);
    assert_eq!(code, Some(1));
    let edge = all["edges"][0]["edge_id"].as_str().unwrap().to_string();
    let (code, r) = analyze_json(&["--edge", &edge.to_lowercase(), &bad]);
    assert_eq!(code, Some(3), "{}", r["summary"]);
    assert!(
        r["summary"]["not_judged_because"]
            .to_string()
            .contains(&format!("its edges are: {edge}")),
        "{}",
        r["summary"]
    );
    let (code, _) = analyze_json(&["--edge", &edge, &bad]);
    assert_eq!(code, Some(1));
}

/// Files given together are one session (a rotation, tcpdump -C/-G): a capture cut
/// in two at any frame gives the report of the whole, whichever packet the cut
/// falls in (connections carry on from one file into the next).
#[test]
fn a_capture_split_in_two_at_any_frame_is_judged_as_the_whole() {
    let whole = std::fs::read(capture("clean-session.pcap")).unwrap();
    let (code, all) = analyze_json(&[&capture("clean-session.pcap")]);
    assert_eq!(code, Some(0));
    let messages = all["summary"]["messages"].clone();
    // Record boundaries of the little-endian pcap.
    let mut cuts = vec![];
    let mut at = 24;
    while at + 16 <= whole.len() {
        let incl = u32::from_le_bytes(whole[at + 8..at + 12].try_into().unwrap()) as usize;
        at += 16 + incl;
        cuts.push(at);
    }
    assert!(cuts.len() > 10, "{} frames", cuts.len());
    let dir = common::temp_dir("split");
    for (i, &cut) in cuts[..cuts.len() - 1].iter().enumerate().step_by(3) {
        let (a, b) = (
            dir.join(format!("a{i}.pcap")),
            dir.join(format!("b{i}.pcap")),
        );
        std::fs::write(&a, &whole[..cut]).unwrap();
        let mut second = whole[..24].to_vec();
        second.extend_from_slice(&whole[cut..]);
        std::fs::write(&b, second).unwrap();
        let (code, r) = analyze_json(&[a.to_str().unwrap(), b.to_str().unwrap()]);
        assert_eq!(
            code,
            Some(0),
            "cut after frame {}: {}",
            i + 1,
            r["findings"]
        );
        assert_eq!(
            r["summary"]["messages"],
            messages,
            "cut after frame {}",
            i + 1
        );
    }
}
