//! The orders of clause 6 where they leave no finding but a note: what the input could
//! not show is said, and said right (the findings themselves are rule cases).

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
    assert!(said.iter().any(|n| n.contains("sent before the input began")), "{said:?}");
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
        said.iter().any(|n| n.contains("linked up again, with no reply seen")),
        "{said:?}"
    );
}
