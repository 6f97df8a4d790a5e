//! The reference sims end to end: the reference edge passes the clause 6 plan of the
//! reference platform; every `--fault` is caught by the plan and by `analyze` on a
//! capture of that run; the sims interoperate through the embedded broker and through
//! Debian's mosquitto, on MQTT 3.1.1 and 5. Mosquitto tests fail (not skip) when
//! mosquitto is missing.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

mod common;

use common::Mosquitto;
use edgetap::analyze::{analyze_files, AnalyzeSettings};
use edgetap::broker::{self, BrokerSettings, EmbeddedBroker};
use edgetap::demo::{quick_settings, run_pair};
use edgetap::pipeline::Sink;
use edgetap::rules::RuleSet;
use edgetap::sim::edge::Fault;
use edgetap::sim::platform::PlanReport;
use edgetap::sim::{Link, Protocol};
use edgetap::Severity;

struct Quiet;
impl Sink for Quiet {}

fn embedded() -> EmbeddedBroker {
    broker::start(&BrokerSettings::loopback().unwrap()).unwrap()
}

fn addr(b: &EmbeddedBroker, p: Protocol) -> String {
    match p {
        Protocol::V4 => b.v4.to_string(),
        Protocol::V5 => b.v5.to_string(),
    }
}

fn capture_path(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("edgetap-sim-{}-{tag}.pcap", std::process::id()))
}

async fn plan(
    broker: &str,
    edge: &str,
    proto: Protocol,
    faults: &[Fault],
    capture: Option<PathBuf>,
) -> PlanReport {
    let (mut e, mut p) = quick_settings(broker, edge, proto);
    e.faults = faults.to_vec();
    p.capture = capture;
    let (r, stats) = run_pair(e, p, Arc::new(RuleSet::builtin())).await.unwrap();
    assert!(stats.errors.is_empty(), "{:?}", stats.errors);
    r
}

fn assert_clean(r: &PlanReport) {
    let bad: Vec<String> = r
        .report
        .findings
        .iter()
        .filter(|f| f.severity >= Severity::Warning)
        .map(edgetap::report::one_line)
        .collect();
    assert!(
        bad.is_empty(),
        "findings on a clean run:\n{}",
        bad.join("\n")
    );
    for i in &r.items {
        assert_eq!(i.status, "pass", "{} {}: {}", i.item, i.title, i.detail);
    }
    for c in &r.report.clauses {
        assert_eq!(c.status, "pass", "clause {} {}", c.clause, c.title);
    }
}

fn analyze(path: &std::path::Path) -> edgetap::report::Report {
    let s = AnalyzeSettings {
        files: vec![path.to_path_buf()],
        ports: vec![1883],
        max_packet: edgetap::mqtt::MQTT_MAX_REMAINING,
        progress: false,
    };
    analyze_files(Arc::new(RuleSet::builtin()), &s, &mut Quiet).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_edge_passes_plan_embedded_broker_mqtt311() {
    let b = embedded();
    let cap = capture_path("clean-v4");
    let r = plan(
        &addr(&b, Protocol::V4),
        "E-CLEAN-4",
        Protocol::V4,
        &[],
        Some(cap.clone()),
    )
    .await;
    assert_clean(&r);
    // The capture of the run, read by `analyze`, is clean too.
    let a = analyze(&cap);
    assert_eq!(a.summary.errors + a.summary.warnings, 0, "{}", a.to_table());
    assert!(a.summary.messages > 30);
    let _ = std::fs::remove_file(cap);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_edge_passes_plan_embedded_broker_mqtt5() {
    let b = embedded();
    let r = plan(
        &addr(&b, Protocol::V5),
        "E-CLEAN-5",
        Protocol::V5,
        &[],
        None,
    )
    .await;
    assert_clean(&r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_is_caught_by_plan_and_by_analyze() {
    let b = embedded();
    let a = addr(&b, Protocol::V4);
    let runs = Fault::ALL.iter().map(|f| {
        let a = a.clone();
        let f = *f;
        async move {
            let cap = capture_path(f.name());
            let r = plan(
                &a,
                &format!("E-FAULT-{}", f.name()),
                Protocol::V4,
                &[f],
                Some(cap.clone()),
            )
            .await;
            (f, r, cap)
        }
    });
    for (f, r, cap) in futures_join_all(runs).await {
        let item = r.item(f.item()).unwrap();
        assert_eq!(
            item.status,
            "fail",
            "fault {}: item {} should fail: {}",
            f.name(),
            f.item(),
            item.detail
        );
        assert!(!r.passed(), "fault {}", f.name());
        assert!(
            r.report.findings.iter().any(|x| x.rule == f.caught_by()),
            "fault {}: the tap's analyzer should raise {}:\n{}",
            f.name(),
            f.caught_by(),
            r.report.to_table()
        );
        let other: Vec<&str> = r
            .items
            .iter()
            .filter(|i| i.status == "fail" && i.item != f.item())
            .map(|i| i.item.as_str())
            .collect();
        assert!(
            other.is_empty(),
            "fault {} fails other items too: {other:?}",
            f.name()
        );
        let offline = analyze(&cap);
        assert!(
            offline
                .findings
                .iter()
                .any(|x| x.rule == f.caught_by() && x.severity == Severity::Error),
            "fault {}: analyze on the capture should raise {}:\n{}",
            f.name(),
            f.caught_by(),
            offline.to_table()
        );
        let _ = std::fs::remove_file(cap);
    }
}

/// A tiny join_all: run the futures on the runtime, collect in order.
async fn futures_join_all<F, T>(futs: impl Iterator<Item = F>) -> Vec<T>
where
    F: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = vec![];
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sims_interoperate_through_mosquitto_mqtt311_and_5() {
    let m = Mosquitto::start();
    let a = format!("127.0.0.1:{}", m.port);
    let r4 = plan(&a, "E-MOSQ-4", Protocol::V4, &[], None).await;
    assert_clean(&r4);
    let r5 = plan(&a, "E-MOSQ-5", Protocol::V5, &[], None).await;
    assert_clean(&r5);
    // A fault is caught through mosquitto as well.
    let rf = plan(&a, "E-MOSQ-F", Protocol::V5, &[Fault::NoJobResult], None).await;
    assert_eq!(rf.item("6.3.1.2").unwrap().status, "fail");
    assert!(rf
        .report
        .findings
        .iter()
        .any(|x| x.rule == "job.result_missing"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_answers_bad_commands_with_400_or_404_and_a_msg() {
    use serde_json::{json, Value};
    let b = embedded();
    let a = addr(&b, Protocol::V4);
    let (e, _) = quick_settings(&a, "E-BAD", Protocol::V4);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let filters = vec!["/v1/E-BAD/+/reply".to_string()];
    let (link, mut rx) = Link::connect(&a, "probe", Protocol::V4, &filters, Duration::from_secs(5))
        .await
        .unwrap();
    let edge = tokio::spawn(edgetap::sim::edge::run(e, stop_rx));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cases = [
        ("device", "CMD_SYS_UPGRADE", json!({"version": "1"}), 400),
        ("device", "CMD_STATUS_QUERY", json!({"jobId": 424242}), 404),
        (
            "container",
            "CMD_CON_START",
            json!({"container": "nope"}),
            404,
        ),
        ("container", "CMD_CON_STOP", json!({}), 400),
        (
            "app",
            "CMD_APP_START",
            json!({"container": "nope", "app": "x"}),
            404,
        ),
        (
            "app",
            "CMD_APP_INSTALL",
            json!({"jobId": 1, "container": "nope", "version": "1", "file": {}, "enable": "1", "app": "x"}),
            404,
        ),
        ("app", "CMD_APP_FLY", json!({}), 400),
    ];
    for (i, (ch, t, p, code)) in cases.iter().enumerate() {
        let mid = 7_000_000_000_000_000u64 + i as u64;
        let v = edgetap::sim::request(Some(mid), t, Some(p.clone()));
        link.publish(
            &format!("/v1/E-BAD/{ch}/command"),
            serde_json::to_vec(&v).unwrap(),
        )
        .await
        .unwrap();
        let m = tokio::time::timeout(Duration::from_secs(3), rx.recv())
            .await
            .unwrap()
            .unwrap();
        let r: Value = serde_json::from_slice(&m.payload).unwrap();
        assert_eq!(r["mid"].as_u64(), Some(mid), "{t}");
        assert_eq!(r["code"].as_i64(), Some(*code), "{t}: {r}");
        assert!(
            r["msg"]
                .as_str()
                .is_some_and(|s| !s.is_empty() && s.len() <= 256),
            "{t}: {r}"
        );
    }
    let _ = stop_tx.send(true);
    edge.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_edges_report_replies_and_latency() {
    let b = embedded();
    let a = addr(&b, Protocol::V4);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (a2, rx2) = (a.clone(), stop_rx.clone());
    let resp =
        tokio::spawn(async move { edgetap::sim::platform::respond(&a2, Protocol::V4, rx2).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (mut e, _) = quick_settings(&a, "E-MANY", Protocol::V4);
    e.count = 50;
    e.run_for = Some(Duration::from_millis(1500));
    let stats = edgetap::sim::edge::run(e, stop_rx).await;
    let _ = stop_tx.send(true);
    let _ = resp.await;
    assert_eq!(stats.connected, 50, "{:?}", stats.errors);
    // LINKUP and three topo requests per edge are answered.
    assert_eq!(stats.replies, 200, "{}", stats.summary());
    assert!(stats.latency.quantile_ms(0.99).is_some());
}
