//! `edgetap replay` end to end. A session of the reference platform's plan against the
//! reference edge is recorded once (the sims' tap writes the pcap); replaying its
//! platform side against a fresh reference edge gives no differences; against an edge
//! with each `--fault` the difference is found; each built-in mutation gets the
//! judgement it expects; `--expect` passes on the same behaviour and fails on another.
//! Through the embedded broker and through mosquitto (required, not skipped).

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::common;

use edgetap::broker::{self, BrokerSettings};
use edgetap::demo::{quick_settings, run_pair};
use edgetap::replay::{self, Outcome, Pacing, ReplaySettings, Role};
use edgetap::rules::RuleSet;
use edgetap::sim::edge::{self, Fault};
use edgetap::sim::Protocol;

/// The recorded session (made once per test process).
pub(crate) fn recording() -> PathBuf {
    static REC: OnceLock<PathBuf> = OnceLock::new();
    REC.get_or_init(|| {
        std::thread::spawn(|| {
            let path = common::temp_dir("replay-rec").join("session.pcap");
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let b = broker::start(&BrokerSettings::loopback().unwrap()).unwrap();
                let (e, mut p) = quick_settings(&b.v4.to_string(), "REC-E1", Protocol::V4);
                p.capture = Some(path.clone());
                let (r, _) = run_pair(e, p, Arc::new(RuleSet::builtin())).await.unwrap();
                assert!(
                    r.passed(),
                    "the recorded plan must pass:\n{}",
                    common::table(&r.document())
                );
            });
            path
        })
        .join()
        .unwrap()
    })
    .clone()
}

pub(crate) fn settings(broker: &str, edge_id: &str) -> ReplaySettings {
    let mut s = ReplaySettings::new(
        replay::source::Source::Pcap(recording()),
        Role::Platform,
        broker,
    );
    s.edge_id = Some(edge_id.into());
    s.pacing = Pacing::Asap;
    s.seed = 7;
    s.answer_timeout = Duration::from_millis(2500);
    s.mutation_window = Duration::from_millis(700);
    s
}

/// Replays as platform against a reference edge with `faults`, started once the
/// replayer listens, stopped when the replay ends.
pub(crate) async fn against_edge(s: ReplaySettings, faults: Vec<Fault>) -> Outcome {
    let edge_id = s.edge_id.clone().unwrap();
    let (mut e, _) = quick_settings(&s.broker, &edge_id, s.protocol);
    e.faults = faults;
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let rules = Arc::new(RuleSet::builtin());
    let replay = tokio::spawn(replay::run_ready(s, rules, Some(ready_tx)));
    ready_rx.await.expect("the replayer connects");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let edge = tokio::spawn(edge::run(e, stop_rx));
    let outcome = replay.await.unwrap().unwrap();
    let _ = stop_tx.send(true);
    let stats = edge.await.unwrap();
    assert!(stats.errors.is_empty(), "{:?}", stats.errors);
    outcome
}

pub(crate) fn assert_as_recorded(o: &Outcome) {
    assert!(!o.failed(), "{}", common::table(&o.document(None)));
    assert!(
        o.exchanges.len() >= 15,
        "{}",
        common::table(&o.document(None))
    );
    assert!(o
        .exchanges
        .iter()
        .all(|x| x.live.reply.is_some() || x.live.request.is_some()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_against_reference_edge_has_no_differences_embedded_broker() {
    let b = broker::start(&BrokerSettings::loopback().unwrap()).unwrap();
    let o = against_edge(settings(&b.v4.to_string(), "LIVE-CLEAN"), vec![]).await;
    assert_as_recorded(&o);
    // The edge id is rewritten in topics and fields, and mapped back for comparison.
    assert_eq!(
        (o.recorded_edge.as_str(), o.live_edge.as_str()),
        ("REC-E1", "LIVE-CLEAN")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_through_mosquitto_mqtt5() {
    let m = common::Mosquitto::start();
    let mut s = settings(&format!("127.0.0.1:{}", m.port), "LIVE-MOSQ");
    s.protocol = Protocol::V5;
    // Paced as recorded, twice as fast (and never ahead of the answers).
    s.pacing = Pacing::Speed(2.0);
    let o = against_edge(s, vec![]).await;
    assert_as_recorded(&o);
}

/// Where each fault of the reference edge shows: an exchange's difference or a rule
/// the recording did not raise.
fn expected_difference(f: Fault) -> (&'static str, &'static str) {
    match f {
        Fault::WrongCode => ("CMD_SYS_UPGRADE", "reply code: recorded 202, live 200"),
        Fault::MissingField => ("CMD_SYS_STATUS", "tempValue: missing"),
        Fault::NoJobResult => ("CMD_APP_INSTALL", "missing job result"),
        Fault::WrongMid => ("CMD_INFO_QUERY", "missing reply"),
        Fault::WrongType => (
            "CMD_CON_START",
            "reply.type: recorded \"CMD_CON_START\", live \"CMD_CON_STARTED\"",
        ),
        Fault::BadTimestamp => ("rule", "envelope.request"),
        Fault::DuplicateResult => ("CMD_SYS_UPGRADE", "extra answer"),
        Fault::ErrorToValid => ("CMD_APP_STOP", "reply code: recorded 200, live 404"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_of_the_reference_edge_is_found() {
    let b = broker::start(&BrokerSettings::loopback().unwrap()).unwrap();
    let addr = b.v4.to_string();
    let mut runs = vec![];
    for f in Fault::ALL {
        let s = settings(&addr, &format!("LIVE-{}", f.name()));
        runs.push((f, tokio::spawn(against_edge(s, vec![f]))));
    }
    for (f, run) in runs {
        let o = run.await.unwrap();
        assert!(
            o.failed(),
            "fault {} not found:\n{}",
            f.name(),
            common::table(&o.document(None))
        );
        let (request, text) = expected_difference(f);
        let found = if request == "rule" {
            o.new_findings.iter().any(|x| x.rule == text)
        } else {
            o.exchanges
                .iter()
                .filter(|x| x.request == request)
                .any(|x| x.diffs.iter().any(|d| d.contains(text)))
        };
        assert!(
            found,
            "fault {}: no {text:?} on {request}:\n{}",
            f.name(),
            common::table(&o.document(None))
        );
    }
}

/// The judgement each built-in mutation gets from the reference edge. The reference
/// edge rejects what the shared rule engine rejects (expired commands included), so
/// every applicable mutation passes. Regression: the reference edge once answered 200
/// to expired commands; `expired` and `late` pin that.
const MUTATION_VERDICTS: &[(&str, &str)] = &[
    ("drop-field", "pass"),
    ("wrong-type", "pass"),
    ("out-of-range", "pass"),
    ("unknown-enum", "pass"),
    ("invalid-json", "pass"),
    ("long-msg", "pass"),
    ("unknown-type", "pass"),
    ("lower-case-type", "pass"),
    ("other-edge-id", "pass"),
    ("expired", "pass"),
    ("duplicate-mid", "pass"),
    ("late", "pass"),
    ("missing-reply", "pass"),
    ("job-result-before-reply", "not applicable"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_builtin_mutation_gets_its_judgement_and_the_edge_stays_alive() {
    let b = broker::start(&BrokerSettings::loopback().unwrap()).unwrap();
    let mut s = settings(&b.v4.to_string(), "LIVE-MUT");
    s.mutations = MUTATION_VERDICTS
        .iter()
        .map(|(n, _)| n.to_string())
        .collect();
    let o = against_edge(s, vec![]).await;
    // The replay before the mutations is as recorded.
    assert!(
        o.exchanges.iter().all(|x| x.diffs.is_empty()),
        "{}",
        common::table(&o.document(None))
    );
    for (name, verdict) in MUTATION_VERDICTS {
        let m = o.mutations.iter().find(|m| m.name == *name).unwrap();
        assert_eq!(
            m.verdict,
            *verdict,
            "{name}:\n{}",
            common::table(&o.document(None))
        );
        if *verdict != "not applicable" {
            assert!(
                m.probe.ends_with("answered 200"),
                "{name}: probe {}",
                m.probe
            );
        }
    }
    // Invalid commands are answered with an error code or not at all, never 200/202.
    let drop = o.mutations.iter().find(|m| m.name == "drop-field").unwrap();
    assert!(
        drop.answers.iter().all(|a| a.starts_with("code 400")),
        "{:?}",
        drop.answers
    );
    // The seed is in the report, and the same seed picks the same targets.
    assert!(common::table(&o.document(None)).contains("seed 7"));
    let junit = common::junit(&o.document(None));
    assert_eq!(
        junit.matches("classname=\"replay.mutation\"").count(),
        MUTATION_VERDICTS.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutation_file_and_regression_expectations() {
    let dir = common::temp_dir("replay-expect");
    let file = dir.join("mutations.json");
    std::fs::write(
        &file,
        r#"{"mutations": [
          {"name": "no-version", "select": {"type": "CMD_SYS_UPGRADE", "index": 0},
           "steps": [{"op": "remove", "path": "param.version"}],
           "expect": "reject", "rule": "t6.CMD_SYS_UPGRADE"},
          {"name": "garbage-then-probe", "select": {"type": "CMD_SYS_STATUS"},
           "steps": [{"op": "replace-raw", "raw": "{\"mid\": "}, {"op": "reorder"}],
           "expect": "reject"}
        ]}"#,
    )
    .unwrap();
    let b = broker::start(&BrokerSettings::loopback().unwrap()).unwrap();
    let addr = b.v4.to_string();
    let mut s = settings(&addr, "LIVE-EXP-1");
    s.mutations = vec![file.display().to_string()];
    let saved = against_edge(s.clone(), vec![]).await;
    assert!(!saved.failed(), "{}", common::table(&saved.document(None)));
    assert_eq!(saved.mutations.len(), 2);
    // The saved outcome round-trips and a like run matches it beyond the noise.
    let path = dir.join("expect.json");
    std::fs::write(&path, saved.to_json()).unwrap();
    let expected = replay::load_expected(&path).unwrap();
    s.edge_id = Some("LIVE-EXP-2".into());
    let again = against_edge(s.clone(), vec![]).await;
    let d = replay::compare_expected(&expected, &again);
    assert!(d.is_empty(), "{d:#?}");
    // An edge that answers one command differently diverges.
    s.edge_id = Some("LIVE-EXP-3".into());
    let other = against_edge(s, vec![Fault::ErrorToValid]).await;
    let d = replay::compare_expected(&expected, &other);
    assert!(d.iter().any(|x| x.contains("CMD_APP_STOP")), "{d:#?}");
}

#[test]
fn cli_lists_mutations_and_rejects_a_missing_source() {
    let bin = env!("CARGO_BIN_EXE_edgetap");
    let out = std::process::Command::new(bin)
        .args(["replay", "--list-mutations"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for (name, _) in MUTATION_VERDICTS {
        assert!(text.contains(name), "{name} missing from:\n{text}");
    }
    let out = std::process::Command::new(bin)
        .args([
            "replay",
            "/nonexistent.pcap",
            "--as",
            "platform",
            "--broker",
            "127.0.0.1:1",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// The edge side of the recording, replayed to the reference platform: the platform's
/// clause 6 plan passes on it, and every exchange is as recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_as_edge_passes_the_reference_platform_plan() {
    let b = broker::start(&BrokerSettings::loopback().unwrap()).unwrap();
    let addr = b.v4.to_string();
    let mut s = settings(&addr, "LIVE-AS-EDGE");
    s.role = Role::Edge;
    let (_, mut p) = quick_settings(&addr, "LIVE-AS-EDGE", Protocol::V4);
    p.wait = Duration::from_millis(2500);
    p.edge_wait = Duration::from_millis(2500);
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let plan = tokio::spawn(edgetap::sim::platform::run_plan(
        p,
        Arc::new(RuleSet::builtin()),
        None,
        Some(ready_tx),
    ));
    ready_rx.await.unwrap();
    let o = replay::run(s, Arc::new(RuleSet::builtin())).await.unwrap();
    assert!(!o.failed(), "{}", common::table(&o.document(None)));
    assert!(o
        .exchanges
        .iter()
        .filter(|x| x.from == "platform")
        .all(|x| x.live.request.is_some()));
    let r = plan.await.unwrap().unwrap();
    assert!(r.passed(), "{}", common::table(&r.document()));
}

/// A session recorded by `edgetap proxy` in the store (the edge behind the proxy, the
/// platform on the broker) is a replay source too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_capture_replays_like_a_pcap() {
    let b = broker::start(&BrokerSettings::loopback().unwrap()).unwrap();
    let addr = b.v4.to_string();
    let dir = common::temp_dir("replay-store").join("store");
    let store = edgetap::store::Store::open(&dir).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_addr = listener.local_addr().unwrap();
    let ps = edgetap::proxy::ProxySettings {
        upstream: addr.clone(),
        name: "replay-source".into(),
        ..Default::default()
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let px = tokio::spawn(edgetap::proxy::run(
        listener,
        ps,
        Arc::new(RuleSet::builtin()),
        Some(store),
        Box::new(|_: &edgetap::Finding| {}),
        async move {
            let _ = stop_rx.await;
        },
    ));
    let (mut e, p) = quick_settings(&addr, "STORE-E1", Protocol::V4);
    e.broker = proxy_addr.to_string();
    let (r, _) = run_pair(e, p, Arc::new(RuleSet::builtin())).await.unwrap();
    assert!(r.passed(), "{}", common::table(&r.document()));
    let _ = stop_tx.send(());
    let outcome = px.await.unwrap().unwrap();
    let id = outcome.capture.unwrap();
    drop(outcome);
    let mut s = settings(&addr, "LIVE-FROM-STORE");
    s.source = replay::source::Source::Stored {
        store: dir.clone(),
        id,
    };
    let o = against_edge(s, vec![]).await;
    assert_as_recorded(&o);
    assert_eq!(o.recorded_edge, "STORE-E1");
}

/// As edge, the mutations of our own replies happen during the replay, against the
/// reference platform's plan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_edge_in_place_mutations_against_the_reference_platform() {
    let b = broker::start(&BrokerSettings::loopback().unwrap()).unwrap();
    let addr = b.v4.to_string();
    let mut s = settings(&addr, "LIVE-EDGE-MUT");
    s.role = Role::Edge;
    s.mutations = ["job-result-before-reply", "long-msg", "missing-reply"]
        .map(String::from)
        .to_vec();
    let (_, mut p) = quick_settings(&addr, "LIVE-EDGE-MUT", Protocol::V4);
    p.wait = Duration::from_millis(2500);
    p.edge_wait = Duration::from_millis(2500);
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let plan = tokio::spawn(edgetap::sim::platform::run_plan(
        p,
        Arc::new(RuleSet::builtin()),
        None,
        Some(ready_tx),
    ));
    ready_rx.await.unwrap();
    let o = replay::run(s, Arc::new(RuleSet::builtin())).await.unwrap();
    let r = plan.await.unwrap().unwrap();
    for name in ["job-result-before-reply", "long-msg", "missing-reply"] {
        let m = o.mutations.iter().find(|m| m.name == name).unwrap();
        assert_eq!(
            m.verdict,
            "pass",
            "{name}:\n{}",
            common::table(&o.document(None))
        );
        assert!(m.target.contains("during the replay"), "{}", m.target);
    }
    // The platform's own record shows the unanswered command.
    assert!(!r.passed(), "{}", common::table(&r.document()));
}

/// As edge, our requests mutated against the reference platform's responder, which
/// rejects what the shared rule engine rejects: incomplete topo requests and expired
/// ones get 400 (they were once answered 200 with empty data).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_edge_request_mutations_against_the_reference_responder() {
    let b = broker::start(&BrokerSettings::loopback().unwrap()).unwrap();
    let addr = b.v4.to_string();
    let mut s = settings(&addr, "LIVE-EDGE-REQ");
    s.role = Role::Edge;
    s.answer_timeout = Duration::from_millis(400);
    let expected = [
        ("drop-field", "pass"),
        ("invalid-json", "pass"),
        ("unknown-type", "pass"),
        ("lower-case-type", "pass"),
        ("other-edge-id", "pass"),
        ("expired", "pass"),
        ("out-of-range", "not applicable"),
        // The reference platform acknowledges the repeated EVENT_LINKUP again: an
        // answer, no action (the standard says nothing of a repeated mid).
        ("duplicate-mid", "pass"),
    ];
    s.mutations = expected.iter().map(|(n, _)| n.to_string()).collect();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let responder = tokio::spawn({
        let addr = addr.clone();
        async move { edgetap::sim::platform::respond(&addr, Protocol::V4, stop_rx).await }
    });
    common::responder_ready(&addr).await;
    let o = replay::run(s, Arc::new(RuleSet::builtin())).await.unwrap();
    let _ = stop_tx.send(true);
    responder.await.unwrap().unwrap();
    for (name, verdict) in expected {
        let m = o.mutations.iter().find(|m| m.name == name).unwrap();
        assert_eq!(
            m.verdict,
            verdict,
            "{name}:\n{}",
            common::table(&o.document(None))
        );
    }
}

/// The CLI in regression mode: `--save-expect` on a clean run, then `--expect` exits 0
/// on a like edge and 1 on an edge that answers one command differently (JUnit shows
/// the divergence).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_expect_exit_codes() {
    // mosquitto: its log says when the replayer has subscribed.
    let m = common::Mosquitto::start();
    let addr = format!("127.0.0.1:{}", m.port);
    let dir = common::temp_dir("replay-cli");
    let expect = dir.join("expect.json");
    let rec = recording();
    let m = &m;
    let run = |edge: &'static str, faults: Vec<Fault>, extra: Vec<String>| {
        let addr = addr.clone();
        let rec = rec.clone();
        async move {
            let mut args: Vec<String> = [
                "replay",
                rec.to_str().unwrap(),
                "--as",
                "platform",
                "--broker",
                &addr,
                "--edge-id",
                edge,
                "--asap",
                "--seed",
                "7",
                "--timeout-ms",
                "2500",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            args.extend(extra);
            let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_edgetap"))
                .args(&args)
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            // The replayer subscribes (to the link-up among others); the edge links
            // up after it.
            tokio::task::block_in_place(|| {
                m.wait_subscribed(&format!("/v1/{edge}/device/request"))
            });
            let (mut e, _) = quick_settings(&addr, edge, Protocol::V4);
            e.faults = faults;
            let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
            let edge_task = tokio::spawn(edge::run(e, stop_rx));
            let out = child.wait_with_output().await.unwrap();
            let _ = stop_tx.send(true);
            edge_task.await.unwrap();
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
            )
        }
    };
    let save = vec!["--save-expect".to_string(), expect.display().to_string()];
    let (code, out) = run("CLI-1", vec![], save).await;
    assert_eq!(code, Some(0), "{out}");
    let check = vec![
        "--expect".to_string(),
        expect.display().to_string(),
        "--format".into(),
        "junit".into(),
    ];
    let (code, out) = run("CLI-2", vec![], check.clone()).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("classname=\"replay.exchange\""), "{out}");
    let (code, out) = run("CLI-3", vec![Fault::ErrorToValid], check).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("divergence"), "{out}");
}
