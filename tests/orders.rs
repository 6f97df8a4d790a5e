//! The orders of clause 6 beyond the rule cases: where they leave no finding but a
//! note, what the input could not show is said, and said right; and a reply and its
//! job result in one TCP segment of a capture are judged in stream order.

use std::sync::Arc;

use edgetap::finding::Side;
use edgetap::mqtt::encode;
use edgetap::pipeline::{Analyzer, Settings, Summary};
use edgetap::report::Collector;
use edgetap::rules::RuleSet;

use crate::pipeline::Drive;

const T0: i64 = 1_795_687_200_000_000;
const LINKUP: &str = r#"{"mid":1,"type":"EVENT_LINKUP","timestamp":"2026-11-26 18:00:00","param":{"dev":{"devSN":"1","devType":"t","devName":"n","mfgInfo":"m","devStatus":"ok"},"cpu":{},"mem":{},"disk":{},"os":{},"links":[]}}"#;

/// Runs (connection, topic, payload) publishes, connection 1 the edge's and 2 the
/// platform's, both seen from their CONNECT, one per 100 ms.
fn run(msgs: &[(u64, &str, &str)]) -> (Collector, Summary) {
    let mut a = Analyzer::new(Arc::new(RuleSet::builtin()), Settings::default());
    let mut sink = Collector::default();
    for (conn, id) in [(1, "edge"), (2, "platform")] {
        a.open(conn, None, None, false);
        a.data(conn, Side::Client, T0, 0, &encode::connect(id), &mut sink);
    }
    for (i, (conn, topic, payload)) in msgs.iter().enumerate() {
        let t = T0 + 100_000 * (i as i64 + 1);
        let bytes = encode::publish(topic, payload.as_bytes());
        a.data(*conn, Side::Client, t, i as u64 + 1, &bytes, &mut sink);
    }
    let summary = a.finish(&mut sink);
    (sink, summary)
}

fn notes(s: &Summary, clause: &str) -> Vec<String> {
    s.coverage
        .unseen
        .get(clause)
        .map(|r| r.keys().cloned().collect())
        .unwrap_or_default()
}

#[test]
fn a_stray_reply_on_a_session_seen_from_its_linkup_is_not_said_to_predate_the_input() {
    let reply = r#"{"mid":9,"type":"CMD_TOPO_ADD","timestamp":"2026-11-26 18:00:01","code":200,"param":{"data":[{"code":200,"deviceId":"D1","nodeId":"n1"}]}}"#;
    let (sink, summary) = run(&[
        (1, "/v1/E1/device/request", LINKUP),
        (2, "/v1/E1/topo/response", reply),
    ]);
    assert!(sink.findings.iter().all(|f| f.rule != "reply.orphan"));
    let said = notes(&summary, "6.1.4");
    assert_eq!(said.len(), 1, "{said:?}");
    assert!(
        said[0].contains("which the input holds from its EVENT_LINKUP")
            && !said[0].contains("sent before the input began"),
        "{}",
        said[0]
    );
    // Without the link-up in the input, the reply may answer an earlier request.
    let (_, summary) = run(&[(2, "/v1/E1/topo/response", reply)]);
    let said = notes(&summary, "6.1.4");
    assert!(
        said.iter()
            .any(|n| n.contains("sent before the input began")),
        "{said:?}"
    );
}

#[test]
fn a_result_held_across_a_relink_is_noted_when_no_reply_follows() {
    let install = r#"{"mid":5,"type":"CMD_APP_INSTALL","timestamp":"2026-11-26 18:00:01","param":{"jobId":300,"container":"c1","version":"1","file":{},"enable":"1","app":"a"}}"#;
    let result = r#"{"type":"REP_JOB_RESULT","timestamp":"2026-11-26 18:00:09","param":{"jobId":300,"code":200}}"#;
    let (sink, summary) = run(&[
        (1, "/v1/E1/device/request", LINKUP),
        (2, "/v1/E1/app/command", install),
        (1, "/v1/E1/device/request", LINKUP),
        (1, "/v1/E1/app/data", result),
    ]);
    assert!(sink.findings.iter().all(|f| f.rule != "job.result_early"));
    let said = notes(&summary, "6.3.1");
    assert!(
        said.iter()
            .any(|n| n.contains("linked up again, with no reply seen")),
        "{said:?}"
    );
}

/// A pcap of one subscriber's connection (the tap's view): its CONNECT, then the
/// broker's deliveries, each `Vec` of payloads in one TCP segment.
fn one_leg_pcap(path: &std::path::Path, segments: &[Vec<(&str, &str)>]) {
    let mut frames = vec![(T0, encode::connect("tap"), true)];
    for (i, seg) in segments.iter().enumerate() {
        let bytes: Vec<u8> = seg
            .iter()
            .flat_map(|(topic, payload)| encode::publish(topic, payload.as_bytes()))
            .collect();
        frames.push((T0 + 100_000 * (i as i64 + 1), bytes, false));
    }
    edgetap::sim::tap::write_pcap(path, &frames).unwrap();
}

fn analyze_rules(pcap: &std::path::Path) -> Vec<String> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_edgetap"))
        .args(["analyze", "--format", "json"])
        .arg(pcap)
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON ({e}): {}", String::from_utf8_lossy(&out.stderr)));
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["severity"] != "info")
        .map(|f| f["rule"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_reply_and_its_job_result_in_one_tcp_segment_keep_their_order_in_a_capture() {
    let dir = crate::common::temp_dir("orders-segment");
    let install = r#"{"mid":5,"type":"CMD_APP_INSTALL","timestamp":"2026-11-26 18:00:01","param":{"jobId":300,"container":"c1","version":"1","file":{"name":"p","fileType":"tar","url":"https://x/p","size":1,"md5":"d41d8cd98f00b204e9800998ecf8427e"},"enable":"1","app":"a"}}"#;
    let reply =
        r#"{"mid":5,"type":"CMD_APP_INSTALL","timestamp":"2026-11-26 18:00:01","code":202}"#;
    let result = r#"{"type":"REP_JOB_RESULT","timestamp":"2026-11-26 18:00:01","param":{"jobId":300,"code":200}}"#;
    let linkup = [("/v1/E1/device/request", LINKUP)];
    let linkup_reply =
        r#"{"mid":1,"type":"EVENT_LINKUP","timestamp":"2026-11-26 18:00:00","code":200}"#;
    let head = vec![
        linkup.to_vec(),
        vec![("/v1/E1/device/response", linkup_reply)],
        vec![("/v1/E1/app/command", install)],
    ];
    // The 202, then the result, one segment, one timestamp: in order.
    let mut segs = head.clone();
    segs.push(vec![
        ("/v1/E1/app/reply", reply),
        ("/v1/E1/app/data", result),
    ]);
    let pcap = dir.join("reply-first.pcap");
    one_leg_pcap(&pcap, &segs);
    let seen = analyze_rules(&pcap);
    assert!(seen.is_empty(), "{seen:?}");
    // The same two the other way round: the result came first.
    let mut segs = head;
    segs.push(vec![
        ("/v1/E1/app/data", result),
        ("/v1/E1/app/reply", reply),
    ]);
    let pcap = dir.join("result-first.pcap");
    one_leg_pcap(&pcap, &segs);
    assert_eq!(analyze_rules(&pcap), vec!["job.result_early".to_string()]);
}
