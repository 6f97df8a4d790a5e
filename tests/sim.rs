//! The reference sims end to end: the reference edge passes the clause 6 plan of the
//! reference platform; every `--fault` is caught by the plan and by `analyze` on a
//! capture of that run; the sims interoperate through the embedded broker and through
//! Debian's mosquitto, on MQTT 3.1.1 and 5. Mosquitto tests fail (not skip) when
//! mosquitto is missing.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::common;

use common::Mosquitto;
use edgetap::analyze::{analyze_files, AnalyzeSettings};
use edgetap::broker::{self, BrokerSettings, EmbeddedBroker};
use edgetap::demo::{quick_settings, run_pair};
use edgetap::pipeline::Sink;
use edgetap::rules::RuleSet;
use edgetap::sim::edge::Fault;
use edgetap::sim::package::{md5_hex, PackageSource};
use edgetap::sim::platform::{run_plan, PlanReport, ONLINE_HINT};
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
    common::temp_dir("sim").join(format!("{tag}.pcap"))
}

async fn plan(
    broker: &str,
    edge: &str,
    proto: Protocol,
    faults: &[Fault],
    capture: Option<PathBuf>,
) -> PlanReport {
    plan_with(
        broker,
        edge,
        proto,
        faults,
        capture,
        PackageSource::Placeholder,
    )
    .await
}

async fn plan_with(
    broker: &str,
    edge: &str,
    proto: Protocol,
    faults: &[Fault],
    capture: Option<PathBuf>,
    package: PackageSource,
) -> PlanReport {
    let (mut e, mut p) = quick_settings(broker, edge, proto);
    e.faults = faults.to_vec();
    p.capture = capture;
    p.package = package;
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
    // Both branches of 6.2.1.2 ran: with withAPP (202 and a job result) and without.
    let steps = &r.item("6.2.1.2").unwrap().steps;
    for label in [
        "CMD_CON_INSTALL with withAPP",
        "CMD_CON_INSTALL without withAPP",
    ] {
        assert!(
            steps
                .iter()
                .any(|s| s.what.starts_with(label) && s.status == "pass"),
            "{label}: {steps:?}"
        );
    }
    // The capture of the run, read by `analyze`, is clean too.
    let a = analyze(&cap);
    assert_eq!(
        a.summary.errors + a.summary.warnings,
        0,
        "{}",
        common::table(&edgetap::report::Document::of(&a))
    );
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
        if f.outcome() {
            // A refusal or a missing job result is an outcome the plan judges itself
            // (the engine reports it as information at most): the item says why.
            let why = match f {
                Fault::ErrorToValid => "CMD_APP_STOP refused: code 404",
                _ => "timed out",
            };
            assert!(
                item.detail.contains(why),
                "fault {}: {}",
                f.name(),
                item.detail
            );
        }
        assert!(
            r.report.findings.iter().any(|x| x.rule == f.caught_by()),
            "fault {}: the tap's analyzer should raise {}:\n{}",
            f.name(),
            f.caught_by(),
            common::table(&edgetap::report::Document::of(&r.report))
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
        // Offline, with the severity the standard's words give the rule: an error
        // for a broken 应 or table, a warning for an example, info for an outcome
        // or a heuristic (a second job result: no sentence forbids it).
        let offline = analyze(&cap);
        let severity = RuleSet::builtin().rule(f.caught_by()).unwrap().def.severity;
        assert!(
            !f.outcome() || severity == Severity::Info,
            "fault {}: an outcome is info, not {severity:?}",
            f.name()
        );
        assert!(
            offline
                .findings
                .iter()
                .any(|x| x.rule == f.caught_by() && x.severity == severity),
            "fault {}: analyze on the capture should raise {}:\n{}",
            f.name(),
            f.caught_by(),
            common::table(&edgetap::report::Document::of(&offline))
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
    let item = rf.item("6.3.1.2").unwrap();
    assert_eq!(item.status, "fail");
    assert!(item.detail.contains("timed out"), "{}", item.detail);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_answers_bad_commands_with_400_or_404_and_a_msg() {
    use serde_json::{json, Value};
    let b = embedded();
    let a = addr(&b, Protocol::V4);
    let (e, _) = quick_settings(&a, "E-BAD", Protocol::V4);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let filters = vec![
        "/v1/E-BAD/+/reply".to_string(),
        "/v1/E-BAD/device/request".to_string(),
    ];
    let (link, mut rx) = Link::connect(&a, "probe", Protocol::V4, &filters, Duration::from_secs(5))
        .await
        .unwrap();
    let edge = tokio::spawn(edgetap::sim::edge::run(e, stop_rx));
    // The edge publishes its link-up once subscribed to its commands.
    let linked = async {
        while let Some(m) = rx.recv().await {
            if m.topic.ends_with("/device/request") {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), linked)
        .await
        .expect("the edge links up");
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
    common::responder_ready(&a).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_against_an_edge_already_online_fails_nothing_and_gives_the_hint() {
    let b = embedded();
    let a = addr(&b, Protocol::V4);
    let edge_id = "E-ONLINE";
    // A platform that only answers link-up and topo brings the edge online...
    let (stop_resp, resp_rx) = tokio::sync::watch::channel(false);
    let a2 = a.clone();
    let resp =
        tokio::spawn(
            async move { edgetap::sim::platform::respond(&a2, Protocol::V4, resp_rx).await },
        );
    common::responder_ready(&a).await;
    let data = vec![format!("/v1/{edge_id}/device/data")];
    let (probe, mut seen) = Link::connect(
        &a,
        "probe-online",
        Protocol::V4,
        &data,
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    let (e, mut p) = quick_settings(&a, edge_id, Protocol::V4);
    let (stop_edge, edge_rx) = tokio::sync::watch::channel(false);
    let edge = tokio::spawn(edgetap::sim::edge::run(e, edge_rx));
    // ...and has raised and recovered its alarm (3004) before the plan starts.
    let recovered = async {
        while let Some(m) = seen.recv().await {
            if String::from_utf8_lossy(&m.payload).contains("\"3004\"") {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), recovered)
        .await
        .expect("the edge recovers its alarm");
    probe.disconnect().await;
    let _ = stop_resp.send(true);
    let _ = resp.await;

    p.edge_wait = Duration::from_millis(1500);
    let r = run_plan(p, Arc::new(RuleSet::builtin()), None, None)
        .await
        .unwrap();
    let _ = stop_edge.send(true);
    let _ = edge.await;

    let failed: Vec<String> = r
        .items
        .iter()
        .filter(|i| i.status == "fail")
        .map(|i| format!("{}: {}", i.item, i.detail))
        .collect();
    assert!(failed.is_empty(), "{failed:?}");
    assert!(r.passed(), "{}", common::table(&r.document()));
    for id in ["6.1.1.2", "6.1.4.2"] {
        let i = r.item(id).unwrap();
        assert_eq!(i.status, "not exercised", "{id}: {}", i.detail);
        assert!(i.detail.contains(ONLINE_HINT), "{id}: {}", i.detail);
    }
    // Monitoring ran its commands, but the reports and alarms the edge sent before
    // the plan were not seen: partly exercised (never a pass), with the hint.
    let m = r.item("6.1.3.2").unwrap();
    assert_eq!(m.status, "partly exercised", "{}", m.detail);
    assert!(m.detail.contains(ONLINE_HINT), "{}", m.detail);
    assert!(m.detail.contains("not exercised"), "{}", m.detail);
    let junit = common::junit(&r.document());
    assert!(
        junit.contains("<skipped message=\"partly exercised: "),
        "{junit}"
    );
    for i in r
        .items
        .iter()
        .filter(|i| !["6.1.1.2", "6.1.3.2", "6.1.4.2"].contains(&i.item.as_str()))
    {
        assert_eq!(i.status, "pass", "{} {}: {}", i.item, i.title, i.detail);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_command_fails_its_item_with_the_device_code_and_msg() {
    let b = embedded();
    let r = plan(
        &addr(&b, Protocol::V4),
        "E-REFUSE",
        Protocol::V4,
        &[Fault::ErrorToValid],
        None,
    )
    .await;
    let i = r.item("6.3.2.2").unwrap();
    assert_eq!(i.status, "fail", "{}", i.detail);
    assert!(
        i.detail
            .contains("CMD_APP_STOP refused: code 404, msg \"app not found\""),
        "{}",
        i.detail
    );
    assert!(!r.passed());
}

fn package_file(tag: &str, bytes: &[u8]) -> PathBuf {
    let path = common::temp_dir("pkg").join(format!("{tag}.bin"));
    std::fs::write(&path, bytes).unwrap();
    path
}

fn serve(path: &std::path::Path, md5: Option<&str>) -> PackageSource {
    PackageSource::Serve {
        path: path.to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
        advertise: None,
        md5: md5.map(String::from),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn served_package_is_downloaded_by_the_edge_and_its_md5_matches() {
    let b = embedded();
    let bytes: Vec<u8> = (0..50_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let path = package_file("good", &bytes);
    let r = plan_with(
        &addr(&b, Protocol::V4),
        "E-PKG",
        Protocol::V4,
        &[],
        None,
        serve(&path, None),
    )
    .await;
    let _ = std::fs::remove_file(&path);
    assert_clean(&r);
    let note = r.package.as_ref().unwrap();
    assert_eq!(note.source, "served");
    assert_eq!(note.file.md5, md5_hex(&bytes));
    assert_eq!(note.file.size, Some(bytes.len() as u64));
    assert!(
        note.file.url.starts_with("http://127.0.0.1:"),
        "{}",
        note.file.url
    );
    // CMD_SYS_UPGRADE, CMD_APP_INSTALL and CMD_APP_UPGRADE each fetched it.
    assert_eq!(note.downloads, Some(3), "{note:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_package_md5_fails_the_jobs_with_the_edge_info() {
    let b = embedded();
    let path = package_file("bad-md5", b"a package whose md5 the plan misstates");
    let wrong = "0123456789abcdef0123456789abcdef";
    let r = plan_with(
        &addr(&b, Protocol::V4),
        "E-PKG-MD5",
        Protocol::V4,
        &[],
        None,
        serve(&path, Some(wrong)),
    )
    .await;
    let _ = std::fs::remove_file(&path);
    assert!(!r.passed());
    for (id, field) in [
        ("6.1.2.2", "result 400, info"),
        ("6.3.1.2", "code 400, msg"),
        ("6.3.3.2", "result 400, info"),
    ] {
        let i = r.item(id).unwrap();
        assert_eq!(i.status, "fail", "{id}: {}", i.detail);
        assert!(i.detail.contains(field), "{id}: {}", i.detail);
        assert!(
            i.detail.contains("md5 check failed") && i.detail.contains(wrong),
            "{id}: {}",
            i.detail
        );
    }
    assert_eq!(r.package.as_ref().unwrap().downloads, Some(3));
}

/// `edgetap sim edge` on the embedded broker, with short timings; killed on drop.
struct EdgeProcess(std::process::Child);

impl EdgeProcess {
    fn start(broker: &str, edge_id: &str, fault: Option<&str>) -> EdgeProcess {
        let mut c = common::sim_edge_command(broker, edge_id, fault.as_slice());
        c.args(["--alarm-ms", "300"]);
        EdgeProcess(c.spawn().unwrap())
    }
}

impl Drop for EdgeProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `edgetap sim platform --format json`: (exit code, the JSON).
fn platform_cli(broker: &str, edge_id: &str) -> (i32, serde_json::Value) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_edgetap"))
        .args(["sim", "platform", "--broker", broker, "--edge-id", edge_id])
        .args([
            "--edge-wait-ms",
            "1500",
            "--wait-ms",
            "3000",
            "--job-timeout",
            "5",
        ])
        .args(["--format", "json"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let v = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{e}: {text}\n{}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code().unwrap_or(-1), v)
}

#[test]
fn cli_platform_started_after_the_edge_exits_0_and_a_refusal_exits_1() {
    let b = embedded();
    let a = addr(&b, Protocol::V4);
    // The edge runs alone first: its EVENT_LINKUP goes unanswered, as in the field when
    // `sim platform` starts after the device.
    let linkup = common::Watcher::start(b.v4.port(), "/v1/E-CLI-LATE/device/request");
    let _edge = EdgeProcess::start(&a, "E-CLI-LATE", None);
    linkup.wait_for_type("EVENT_LINKUP");
    let (code, v) = platform_cli(&a, "E-CLI-LATE");
    let plan = v["plan"].as_array().unwrap();
    let failed: Vec<&serde_json::Value> = plan.iter().filter(|i| i["status"] == "fail").collect();
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(code, 0, "{v}");
    let access = plan.iter().find(|i| i["item"] == "6.1.1.2").unwrap();
    assert_eq!(access["status"], "not exercised");
    assert!(
        access["detail"].as_str().unwrap().contains(ONLINE_HINT),
        "{access}"
    );
    assert_eq!(v["package"]["source"], "placeholder");

    let linkup = common::Watcher::start(b.v4.port(), "/v1/E-CLI-REFUSE/device/request");
    let _faulty = EdgeProcess::start(&a, "E-CLI-REFUSE", Some("error-to-valid"));
    linkup.wait_for_type("EVENT_LINKUP");
    let (code, v) = platform_cli(&a, "E-CLI-REFUSE");
    assert_eq!(code, 1, "{v}");
    let control = v["plan"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["item"] == "6.3.2.2")
        .unwrap();
    assert_eq!(control["status"], "fail");
}

/// `sim edge` that never reaches its broker exits 2 (an unreachable broker, as
/// `replay` and `sim platform` say it; 1 would read as findings), says why on
/// stderr, and gives up within --duration-ms.
#[test]
fn sim_edge_without_its_broker_exits_2_within_its_duration() {
    // A port bound and closed: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let t0 = std::time::Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_edgetap"))
        .args(["sim", "edge", "--broker", &format!("127.0.0.1:{port}")])
        .args(["--edge-id", "NOBROKER", "--duration-ms", "1500"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("could not connect"), "{err}");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("could not connect"),
        "the error goes to stderr"
    );
    // Not a timing target: a bound far above 1.5 s, far below the 10 s it took.
    assert!(t0.elapsed() < Duration::from_secs(8), "{:?}", t0.elapsed());
}

/// The sims (and replay, through the same client) log in to a broker that requires
/// it: `--broker USER@HOST:PORT` with the password in EDGETAP_MQTT_PASSWORD. A
/// password written into the address is refused without being echoed.
#[test]
fn sims_log_in_with_user_at_host_and_the_password_from_the_environment() {
    let dir = common::temp_dir("login");
    let passwd = dir.join("passwd");
    let st = std::process::Command::new("mosquitto_passwd")
        .arg("-c")
        .arg("-b")
        .arg(&passwd)
        .args(["lab", "Pw-Lab-1"])
        .status()
        .expect("mosquitto_passwd (Debian's mosquitto package)");
    assert!(st.success());
    // mosquitto reads it after dropping to its own user.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&passwd, std::fs::Permissions::from_mode(0o644)).unwrap();
    let port = common::free_port();
    let _broker = Mosquitto::with(
        port,
        &format!(
            "allow_anonymous false\npassword_file {}\n",
            passwd.display()
        ),
    );
    let edge = |broker: String, password: Option<&str>| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_edgetap"));
        c.args(["sim", "edge", "--broker", &broker])
            .args(["--edge-id", "LOGIN1", "--duration-ms", "1500"])
            .env_remove("EDGETAP_MQTT_PASSWORD");
        if let Some(p) = password {
            c.env("EDGETAP_MQTT_PASSWORD", p);
        }
        let out = c.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = edge(format!("lab@127.0.0.1:{port}"), Some("Pw-Lab-1"));
    assert_eq!(code, Some(0), "{err}");
    let (code, err) = edge(format!("lab@127.0.0.1:{port}"), Some("wrong"));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("not authorized"), "{err}");
    let (code, err) = edge(format!("lab:Pw-Lab-1@127.0.0.1:{port}"), None);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("EDGETAP_MQTT_PASSWORD"), "{err}");
    assert!(!err.contains("Pw-Lab-1"), "the password is echoed: {err}");
}
