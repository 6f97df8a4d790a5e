//! Third-party captures (../shared/pcaps, see its MANIFEST.tsv): each is analyzed
//! without a panic, and edgetap's `publishes` equals tshark's count of PUBLISH
//! packets. tshark is a required test tool (`.ci/run` installs it): missing, the test
//! fails.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common;

/// `../shared/pcaps` beside the checkout, or `/work/shared/pcaps` for a clone elsewhere
/// (CI clones main into a fresh folder), or `$EDGETAP_SHARED_PCAPS`.
fn pcap_dir() -> PathBuf {
    let candidates = [
        std::env::var("EDGETAP_SHARED_PCAPS")
            .map(PathBuf::from)
            .ok(),
        Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/pcaps")),
        Some(PathBuf::from("/work/shared/pcaps")),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|p| p.join("MANIFEST.tsv").exists())
        .expect("third-party captures not found: set EDGETAP_SHARED_PCAPS")
}

fn pcaps() -> Vec<PathBuf> {
    let dir = pcap_dir();
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "pcap" || x == "pcapng"))
        .collect();
    v.sort();
    assert!(
        v.len() >= 40,
        "expected the shared captures, found {}",
        v.len()
    );
    v
}

/// MQTT's port of a capture: ndpi_coap_mqtt runs MQTT on 17501.
fn port_of(p: &Path) -> u16 {
    if p.to_string_lossy().contains("ndpi_coap_mqtt") {
        17501
    } else {
        1883
    }
}

fn tshark_publishes(p: &Path, port: u16) -> usize {
    let out = Command::new("tshark")
        .args(["-r"])
        .arg(p)
        .args(["-d", &format!("tcp.port=={port},mqtt")])
        .args(["-T", "fields", "-e", "mqtt.msgtype"])
        .output()
        .expect("tshark is required for this test (apt-get install tshark)");
    String::from_utf8_lossy(&out.stdout)
        .split(|c| c == ',' || c == '\n')
        .filter(|t| t.trim() == "3")
        .count()
}

fn edgetap_json(p: &Path, port: u16) -> (i32, serde_json::Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_edgetap"))
        .args(["analyze", "--format", "json", "--port", &port.to_string()])
        .arg(p)
        .output()
        .unwrap();
    let code = out
        .status
        .code()
        .expect("edgetap exited by signal (panic?)");
    // 3: nothing judged, as for any MQTT capture without T/YQDEIF 003-2022 topics.
    assert!(
        code == 0 || code == 1 || code == 3,
        "{}: exit {code}: {}",
        p.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("panicked"),
        "{}: panic",
        p.display()
    );
    (code, serde_json::from_slice(&out.stdout).unwrap())
}

#[test]
fn every_third_party_capture_matches_tshark_publish_count() {
    let mut diffs = vec![];
    for p in pcaps() {
        let port = port_of(&p);
        let (_, report) = edgetap_json(&p, port);
        let ours = report["summary"]["publishes"].as_u64().unwrap() as usize;
        let theirs = tshark_publishes(&p, port);
        if ours != theirs {
            diffs.push(format!("{}: edgetap {ours}, tshark {theirs}", p.display()));
        }
    }
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
}

#[test]
fn malformed_captures_yield_findings_not_failures() {
    let dir = pcap_dir();
    for (name, rule) in [
        ("sv_mqtt-events-invalid-qos__input.pcap", "mqtt.malformed"),
        (
            "sv_mqtt-events-unassigned-msgtype__input.pcap",
            "mqtt.malformed",
        ),
        ("sv_mqtt5-excessiveproplen__input.pcap", "mqtt.malformed"),
    ] {
        let (code, report) = edgetap_json(&dir.join(name), 1883);
        let rules: Vec<&str> = report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["rule"].as_str().unwrap())
            .collect();
        assert!(rules.contains(&rule), "{name}: {rules:?}");
        assert_eq!(code, 1, "{name}: error findings exit 1");
        let f = report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["rule"] == rule)
            .unwrap();
        assert!(f["packet"].is_u64() && f["offset"].is_u64(), "{name}: {f}");
    }
    // A clean third-party session: no error; its topics are none of the standard's, so
    // nothing is judged (exit 3, not 0: a run that judged nothing proves nothing).
    let (code, report) = edgetap_json(&dir.join("sv_mqtt311-pub-qos1__input.pcap"), 1883);
    assert_eq!(code, 3);
    assert_eq!(report["summary"]["errors"], 0);
    assert_eq!(report["summary"]["judged"], false);
}

#[test]
fn unreadable_input_exits_2_naming_the_file() {
    let out = Command::new(env!("CARGO_BIN_EXE_edgetap"))
        .args(["analyze", "/nonexistent/x.pcap"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/nonexistent/x.pcap"), "{stderr}");
    // The OS's reason once, not once per level of the error chain.
    assert_eq!(
        stderr.matches("No such file or directory").count(),
        1,
        "{stderr}"
    );
    // A directory is named as such, not as a read error of frame 0.
    let out = Command::new(env!("CARGO_BIN_EXE_edgetap"))
        .args(["analyze", env!("CARGO_MANIFEST_DIR")])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("a directory"), "{stderr}");
    assert!(!stderr.contains("frame 0"), "{stderr}");
    let junk = common::temp_dir("junk").join("edgetap-junk.pcap");
    std::fs::write(&junk, b"this is not a capture at all").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_edgetap"))
        .args(["analyze"])
        .arg(&junk)
        .output()
        .unwrap();
    std::fs::remove_file(&junk).ok();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("edgetap-junk"));
}
