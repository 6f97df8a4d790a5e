//! Verdicts on traffic edgetap did not make itself, with real tools: Debian's
//! mosquitto and mosquitto_pub, tcpdump, and the `edgetap` binary.
//!
//! * a capture that starts after the edge connected accuses no one: the checks that
//!   need the unseen history are "not exercised", with the reason;
//! * an MQTT 5 client using a Topic Alias has every PUBLISH judged;
//! * a C agent's NUL-terminated payloads are reported once per connection and judged
//!   as the JSON they carry.
//!
//! These tests FAIL when mosquitto, mosquitto_pub or tcpdump is missing: `.ci/run`
//! installs them.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::common;

use common::{publish_lines, tcpdump, temp_dir, Mosquitto};
use serde_json::Value;

fn edgetap() -> Command {
    Command::new(env!("CARGO_BIN_EXE_edgetap"))
}

/// `edgetap analyze --format json` of `pcap` (broker on `port`): exit code and report.
fn analyze(pcap: &Path, port: u16) -> (i32, Value) {
    let out = edgetap()
        .args(["analyze", "--format", "json", "--port", &port.to_string()])
        .arg(pcap)
        .output()
        .expect("run edgetap analyze");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "analyze printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), report)
}

fn findings<'a>(r: &'a Value, rule: &str) -> Vec<&'a Value> {
    r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["rule"] == rule)
        .collect()
}

fn at_least(r: &Value, severity: &str) -> Vec<String> {
    let rank = |s: &str| match s {
        "error" => 2,
        "warning" => 1,
        _ => 0,
    };
    r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| rank(f["severity"].as_str().unwrap()) >= rank(severity))
        .map(|f| format!("{} {}", f["rule"], f["message"]))
        .collect()
}

fn clause<'a>(r: &'a Value, c: &str) -> &'a Value {
    r["clauses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["clause"] == c)
        .unwrap_or_else(|| panic!("no clause {c}"))
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The usual field situation: the device has been online for a while when the
/// capture starts; the platform then runs the clause-6 plan against it.
#[test]
fn a_capture_that_joins_an_online_edge_accuses_no_one() {
    let broker = Mosquitto::start();
    let dir = temp_dir("verdict-joined");
    let addr = format!("127.0.0.1:{}", broker.port);
    let linkup = common::Watcher::start(broker.port, "/v1/JOIN1/device/request");
    let _edge = Killed(
        edgetap()
            .args(["sim", "edge", "--broker", &addr, "--edge-id", "JOIN1"])
            .args(["--duration-ms", "60000"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start sim edge"),
    );
    // The edge links up first (no platform answers it yet).
    linkup.wait_for_type("EVENT_LINKUP");
    let dump = tcpdump(broker.port, dir.join("joined.pcap"));
    let plan = edgetap()
        .args(["sim", "platform", "--broker", &addr, "--edge-id", "JOIN1"])
        .args(["--edge-wait-ms", "2000", "--wait-ms", "5000"])
        .output()
        .expect("run sim platform");
    assert!(
        plan.status.code().is_some(),
        "sim platform: {}",
        String::from_utf8_lossy(&plan.stderr)
    );
    let pcap = dump.stop();
    let (code, r) = analyze(&pcap, broker.port);
    let errors = at_least(&r, "error");
    assert!(
        errors.is_empty(),
        "errors on a conforming session:\n{}",
        errors.join("\n")
    );
    assert_eq!(code, 0, "exit code without error findings");
    assert!(
        r["summary"]["messages"].as_u64().unwrap() > 10,
        "{}",
        r["summary"]
    );
    // What could not be judged says why.
    let access = clause(&r, "6.1.1");
    assert_ne!(access["status"], "fail");
    let why = access["not_exercised"].to_string();
    assert!(
        why.contains("JOIN1")
            && (why.contains("CONNECT") || why.contains("linked up before the input")),
        "6.1.1 should say its link-up was not seen: {access}"
    );
    assert!(findings(&r, "seq.linkup_first").is_empty());
}

/// An edge publishing over MQTT 5 with Topic Alias 1: the topic travels only in the
/// first PUBLISH (MQTT 5.0 §3.3.2.3.4). mosquitto_pub does exactly that.
#[test]
fn mqtt5_topic_alias_every_report_is_judged() {
    let broker = Mosquitto::start();
    let dir = temp_dir("verdict-alias");
    let dump = tcpdump(broker.port, dir.join("alias.pcap"));
    // Each report lacks cpuRate: one t10 error per report proves each was judged.
    let lines: String = (1..=5)
        .map(|i| {
            format!(
                "{{\"type\":\"REP_SYS_STATUS\",\"timestamp\":\"2026-11-26 10:00:0{i}\",\"param\":\
                 {{\"memUsed\":{{\"phy\":40}},\"diskUsed\":30,\"tempValue\":41,\
                 \"devDateTime\":\"2026-11-26 10:00:0{i}\",\"devStDateTime\":\"2026-11-26 08:00:00\",\
                 \"devRunTime\":7200,\"linkState\":[]}}}}\n"
            )
        })
        .collect();
    publish_lines(
        broker.port,
        &["-V", "mqttv5", "-D", "publish", "topic-alias", "1"],
        "/v1/TA1/device/data",
        &lines,
    );
    let pcap = dump.stop();
    let (_, r) = analyze(&pcap, broker.port);
    assert_eq!(r["summary"]["publishes"], 5, "{}", r["summary"]);
    assert_eq!(r["summary"]["messages"], 5, "{}", r["summary"]);
    assert_eq!(r["summary"]["unattributed"], 0, "{}", r["summary"]);
    let t10 = findings(&r, "t10.REP_SYS_STATUS");
    assert_eq!(t10.len(), 5, "one missing cpuRate per report: {t10:?}");
    assert!(t10.iter().all(|f| f["topic"] == "/v1/TA1/device/data"));
}

/// A C agent publishing strlen + 1 bytes. Two reports, each from its own
/// connection (mosquitto_pub -f), and a third that is really not JSON.
#[test]
fn nul_terminated_payloads_are_reported_once_per_connection_and_judged() {
    let broker = Mosquitto::start();
    let dir = temp_dir("verdict-nul");
    let dump = tcpdump(broker.port, dir.join("nul.pcap"));
    let publish_file = |name: &str, body: &[u8]| {
        let f = dir.join(name);
        std::fs::write(&f, body).unwrap();
        let st = Command::new("mosquitto_pub")
            .args([
                "-p",
                &broker.port.to_string(),
                "-t",
                "/v1/NUL1/device/data",
                "-f",
            ])
            .arg(&f)
            .status()
            .expect("mosquitto_pub must be installed (apt-get install mosquitto-clients)");
        assert!(st.success());
    };
    for i in 1..=2 {
        let body = format!(
            "{{\"type\":\"EVENT_SYS_ALARM\",\"timestamp\":\"2026-11-26 10:00:0{i}\",\"param\":{{\"msg\":\"fan\"}}}}\0"
        );
        publish_file(&format!("alarm{i}.bin"), body.as_bytes());
    }
    publish_file("broken.bin", b"{\"type\":\"EVENT_SYS_ALARM\",\0}");
    let pcap = dump.stop();
    let (_, r) = analyze(&pcap, broker.port);
    assert_eq!(
        findings(&r, "payload.trailing_bytes").len(),
        2,
        "{}",
        r["findings"]
    );
    // Judged as the JSON it carries: the missing event field is found in both.
    let t19 = findings(&r, "t19.EVENT_SYS_ALARM");
    assert_eq!(t19.len(), 2, "{}", r["findings"]);
    // Every error says why, in the standard's words.
    assert!(
        t19[0]["basis"].as_str().unwrap().contains("表19"),
        "{}",
        t19[0]
    );
    // The NUL inside the third is no tolerated edge: not JSON.
    assert_eq!(
        findings(&r, "payload.invalid_json").len(),
        1,
        "{}",
        r["findings"]
    );
}

/// A subscriber that connects later receives retained messages: history replayed by
/// the broker, not a session happening now. A zero-length retained PUBLISH then
/// clears them: MQTT housekeeping, not a malformed protocol message.
#[test]
fn retained_history_and_its_clearing_accuse_no_one() {
    let broker = Mosquitto::start();
    let dir = temp_dir("verdict-retained");
    let port = broker.port.to_string();
    let linkup = r#"{"mid":1,"type":"EVENT_LINKUP","timestamp":"2026-11-26 10:00:00","param":{"dev":{"devSN":"1","devType":"t","devName":"n","mfgInfo":"m","devStatus":"ok"},"cpu":{},"mem":{},"disk":{},"os":{},"links":[]}}"#;
    let reply = r#"{"mid":99,"type":"CMD_SYS_STATUS","timestamp":"2026-11-26 10:00:05","code":200,"param":{"cpuRate":5,"memUsed":{"phy":40},"diskUsed":30,"tempValue":41,"devDateTime":"2026-11-26 10:00:05","devStDateTime":"2026-11-26 08:00:00","devRunTime":7200,"linkState":[]}}"#;
    for (topic, payload) in [
        ("/v1/R1/device/request", linkup),
        ("/v1/R1/device/reply", reply),
    ] {
        let st = Command::new("mosquitto_pub")
            .args(["-p", &port, "-r", "-t", topic, "-m", payload])
            .status()
            .expect("mosquitto_pub must be installed (apt-get install mosquitto-clients)");
        assert!(st.success());
    }
    let dump = tcpdump(broker.port, dir.join("retained.pcap"));
    let sub = Command::new("mosquitto_sub")
        .args(["-p", &port, "-t", "/v1/R1/#", "-C", "2", "-W", "5", "-v"])
        .output()
        .expect("mosquitto_sub must be installed");
    assert!(String::from_utf8_lossy(&sub.stdout).contains("CMD_SYS_STATUS"));
    for topic in ["/v1/R1/device/request", "/v1/R1/device/reply"] {
        let st = Command::new("mosquitto_pub")
            .args(["-p", &port, "-r", "-n", "-t", topic])
            .status()
            .unwrap();
        assert!(st.success());
    }
    let pcap = dump.stop();
    let (code, r) = analyze(&pcap, broker.port);
    let bad = at_least(&r, "warning");
    assert!(bad.is_empty(), "{}", bad.join("\n"));
    assert_eq!(code, 0);
    assert_eq!(r["summary"]["messages"], 2, "{}", r["summary"]);
    let cleared = findings(&r, "topic.unattributed");
    assert_eq!(cleared.len(), 2, "{}", r["findings"]);
    assert!(cleared[0]["message"]
        .as_str()
        .unwrap()
        .contains("zero-length retained"));
    // The retained link-up is no session start: the retained reply is not judged an
    // orphan, and the clause says why it could not be paired.
    assert!(findings(&r, "reply.orphan").is_empty());
    assert!(
        clause(&r, "6.1.3")["not_exercised"]
            .to_string()
            .contains("mid 99"),
        "{}",
        clause(&r, "6.1.3")
    );
}
