//! `edgetap replay` against a reference edge that was online before the replay began
//! (the lab case): the edge's own exchanges are skipped with the reason, every
//! exchange the platform starts is exercised. (Moved from replay.rs, unchanged.)

use std::sync::Arc;
use std::time::Duration;

use crate::common;
use crate::replay::{against_edge, assert_as_recorded, recording, settings};

use edgetap::broker::{self, BrokerSettings};
use edgetap::demo::quick_settings;
use edgetap::replay::{self, Outcome, ReplaySettings};
use edgetap::rules::RuleSet;
use edgetap::sim::edge::{self, Fault};
use edgetap::sim::Protocol;

/// A reference edge brought online before the replay, as in a lab where the device is
/// up before the job starts: the reference responder answers its EVENT_LINKUP and topo
/// requests and stops once the edge's start-up is over (topo add → update → delete
/// answered, alarm 3003 recovered by 3004). The edge keeps running (status reports,
/// commands answered) until its switch is set.
async fn online_edge(
    broker: &str,
    edge_id: &str,
    faults: Vec<Fault>,
) -> (
    tokio::sync::watch::Sender<bool>,
    tokio::task::JoinHandle<edge::EdgeStats>,
) {
    use edgetap::sim::{topic, Link};
    let probe_edge = format!("PROBE-{edge_id}");
    let filters = vec![
        topic(edge_id, "topo", "response"),
        topic(edge_id, "device", "data"),
        topic(&probe_edge, "device", "response"),
    ];
    let (watcher, mut rx) = Link::connect(
        broker,
        &format!("watch-{edge_id}"),
        Protocol::V4,
        &filters,
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    let (resp_stop, resp_rx) = tokio::sync::watch::channel(false);
    let responder = tokio::spawn({
        let broker = broker.to_string();
        async move { edgetap::sim::platform::respond(&broker, Protocol::V4, resp_rx).await }
    });
    // The responder answers once subscribed: a linkup of another edge id tells when.
    let probe = edgetap::sim::request(
        Some(edgetap::sim::next_mid()),
        "EVENT_LINKUP",
        Some(serde_json::json!({})),
    );
    let probe_topic = topic(&probe_edge, "device", "request");
    let answered = |m: &edgetap::sim::Incoming| m.topic.starts_with(&format!("/v1/{probe_edge}/"));
    wait_for(
        &mut rx,
        Duration::from_secs(10),
        "the responder's answer",
        answered,
        || {
            let (w, t, p) = (
                &watcher,
                probe_topic.clone(),
                serde_json::to_vec(&probe).unwrap(),
            );
            async move { w.publish(&t, p).await.unwrap() }
        },
    )
    .await;
    let (mut e, _) = quick_settings(broker, edge_id, Protocol::V4);
    e.faults = faults;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let edge_task = tokio::spawn(edge::run(e, stop_rx));
    let (mut topo_done, mut alarm_done) = (false, false);
    let startup_over = |m: &edgetap::sim::Incoming| {
        let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap_or_default();
        topo_done |= m.topic.ends_with("/topo/response") && v["type"] == "CMD_TOPO_DEL";
        alarm_done |= v["type"] == "EVENT_SYS_ALARM" && v["param"]["event"] == "3004";
        topo_done && alarm_done
    };
    wait_for(
        &mut rx,
        Duration::from_secs(10),
        "the edge's start-up",
        startup_over,
        || async {},
    )
    .await;
    let _ = resp_stop.send(true);
    responder.await.unwrap().unwrap();
    watcher.disconnect().await;
    (stop_tx, edge_task)
}

/// Receives until `done` holds (calling `poke` every 200 ms meanwhile); panics naming
/// `what` after `limit`.
async fn wait_for<F, P, Fut>(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<edgetap::sim::Incoming>,
    limit: Duration,
    what: &str,
    mut done: F,
    poke: P,
) where
    F: FnMut(&edgetap::sim::Incoming) -> bool,
    P: Fn() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        poke().await;
        let round = tokio::time::Instant::now() + Duration::from_millis(200);
        while let Ok(Some(m)) = tokio::time::timeout_at(round, rx.recv()).await {
            if done(&m) {
                return;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no sign of {what} within {limit:?}"
        );
    }
}

/// Replays as platform against a reference edge that was online before the replay.
async fn against_online_edge(s: ReplaySettings, faults: Vec<Fault>) -> Outcome {
    let edge_id = s.edge_id.clone().unwrap();
    let (stop, edge_task) = online_edge(&s.broker, &edge_id, faults).await;
    let outcome = replay::run(s, Arc::new(RuleSet::builtin())).await.unwrap();
    let _ = stop.send(true);
    let stats = edge_task.await.unwrap();
    assert!(stats.errors.is_empty(), "{:?}", stats.errors);
    outcome
}

/// Settings for an edge already online: a short wait for its EVENT_LINKUP.
fn online_settings(broker: &str, edge_id: &str) -> ReplaySettings {
    let mut s = settings(broker, edge_id);
    s.edge_wait = Duration::from_millis(1000);
    s
}

/// The exchanges the edge starts by itself are skipped with the reason; every
/// exchange the platform starts is exercised.
fn assert_edge_exchanges_skipped(o: &Outcome) {
    let linkup = o
        .exchanges
        .iter()
        .find(|x| x.request == "EVENT_LINKUP")
        .unwrap();
    let why = linkup
        .skipped
        .as_deref()
        .unwrap_or_else(|| panic!("{}", common::table(&o.document(None))));
    assert!(
        why.contains("did not send EVENT_LINKUP within 1 s") && why.contains("already online"),
        "{why}"
    );
    for x in &o.exchanges {
        match x.from.as_str() {
            "edge" => assert!(
                x.skipped.is_some(),
                "{} not skipped:\n{}",
                x.request,
                common::table(&o.document(None))
            ),
            _ => assert!(
                x.skipped.is_none() && x.live.reply.is_some(),
                "{} not exercised:\n{}",
                x.request,
                common::table(&o.document(None))
            ),
        }
    }
    assert!(o
        .exchanges
        .iter()
        .any(|x| x.request.starts_with("CMD_TOPO_")));
}

/// (a) A clean recording against a reference edge already online: nothing diverges,
/// the edge's own exchanges are reported as not exercised (table and JUnit), and an
/// expectation saved from a run that exercised them is still met.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_already_online_has_its_own_exchanges_skipped_not_failed() {
    let b = broker::start(&BrokerSettings::loopback().unwrap()).unwrap();
    let addr = b.v4.to_string();
    let expected = against_edge(settings(&addr, "LIVE-FRESH"), vec![]).await;
    assert_as_recorded(&expected);
    let mut s = online_settings(&addr, "LIVE-ONLINE");
    s.mutations = vec!["missing-reply".into()];
    let o = against_online_edge(s, vec![]).await;
    assert!(!o.failed(), "{}", common::table(&o.document(None)));
    assert_edge_exchanges_skipped(&o);
    assert!(
        o.exchanges.iter().all(|x| x.diffs.is_empty()),
        "{}",
        common::table(&o.document(None))
    );
    // Joining late is no rule violation of the edge.
    assert!(
        o.new_findings.iter().all(|f| f.rule != "seq.linkup_first"),
        "{}",
        common::table(&o.document(None))
    );
    let table = common::table(&o.document(None));
    assert!(table.contains(" SKIP  edge"), "{table}");
    assert!(table.contains("not exercised"), "{table}");
    let junit = common::junit(&o.document(None));
    assert!(
        junit.contains("<skipped message=\"not exercised: the edge did not send EVENT_LINKUP"),
        "{junit}"
    );
    assert!(!junit.contains("<failure"), "{junit}");
    // The in-place mutation of a reply to a request the edge never sent is not
    // exercised either.
    let m = &o.mutations[0];
    assert_eq!(
        m.verdict,
        "not applicable",
        "{}",
        common::table(&o.document(None))
    );
    assert!(
        m.skipped
            .as_deref()
            .is_some_and(|w| w.contains("did not send")),
        "{m:?}"
    );
    // The expectation recorded the linkup as passed: no divergence, a note says why.
    let e = replay::check_expected(&expected, &o);
    assert!(e.divergences.is_empty(), "{e:#?}");
    assert!(
        e.notes
            .iter()
            .any(|n| n.contains("EVENT_LINKUP") && n.contains("not counted as a divergence")),
        "{e:#?}"
    );
}

/// (b) An edge already online that answers a command with a wrong success code still
/// fails the replay: only the edge's own exchanges are skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_already_online_with_a_wrong_code_still_diverges() {
    let b = broker::start(&BrokerSettings::loopback().unwrap()).unwrap();
    let o = against_online_edge(
        online_settings(&b.v4.to_string(), "LIVE-ONLINE-WC"),
        vec![Fault::WrongCode],
    )
    .await;
    assert!(o.failed(), "{}", common::table(&o.document(None)));
    assert_edge_exchanges_skipped(&o);
    let upgrade = o
        .exchanges
        .iter()
        .find(|x| x.request == "CMD_SYS_UPGRADE")
        .unwrap();
    assert!(
        upgrade
            .diffs
            .iter()
            .any(|d| d.contains("reply code: recorded 202, live 200")),
        "{}",
        common::table(&o.document(None))
    );
}

/// (c) The advised fix: the edge (online before) is restarted after the replay began;
/// its EVENT_LINKUP and topo requests are then exercised and pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_restarted_after_the_replay_began_has_its_linkup_exercised() {
    let b = broker::start(&BrokerSettings::loopback().unwrap()).unwrap();
    let addr = b.v4.to_string();
    let (stop, first_run) = online_edge(&addr, "LIVE-RESTART", vec![]).await;
    let _ = stop.send(true);
    first_run.await.unwrap();
    let o = against_edge(online_settings(&addr, "LIVE-RESTART"), vec![]).await;
    assert_as_recorded(&o);
    assert_eq!(
        o.skipped_exchanges().count(),
        0,
        "{}",
        common::table(&o.document(None))
    );
    let linkup = o
        .exchanges
        .iter()
        .find(|x| x.request == "EVENT_LINKUP")
        .unwrap();
    assert!(linkup.live.request.is_some() && linkup.diffs.is_empty());
}

/// `edgetap sim edge` started before the replay (its EVENT_LINKUP sent, and seen,
/// before the replayer subscribes); stopped on drop.
async fn sim_edge_process(broker: &str, edge_id: &str, faults: &[&str]) -> tokio::process::Child {
    use edgetap::sim::{topic, Link};
    let filters = vec![topic(edge_id, "device", "request")];
    let (watcher, mut rx) = Link::connect(
        broker,
        &format!("watch-{edge_id}"),
        Protocol::V4,
        &filters,
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    // The timings of the recording (`quick_settings`).
    let mut c = common::sim_edge_command(broker, edge_id, faults);
    c.args(["--alarm-ms", "300"])
        .stderr(std::process::Stdio::inherit());
    let child = tokio::process::Command::from(c)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let linkup = |m: &edgetap::sim::Incoming| {
        let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap_or_default();
        v["type"] == "EVENT_LINKUP"
    };
    wait_for(
        &mut rx,
        Duration::from_secs(10),
        "the edge's EVENT_LINKUP",
        linkup,
        || async {},
    )
    .await;
    watcher.disconnect().await;
    child
}

/// The CLI against `edgetap sim edge` started before the replay (the case):
/// exit 0 with the skipped exchanges named, exit 1 with `--fault wrong-code`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_exit_codes_against_an_edge_already_online() {
    let m = common::Mosquitto::start();
    let addr = format!("127.0.0.1:{}", m.port);
    let rec = recording();
    for (edge_id, faults, code) in [
        ("CLI-ONLINE", vec![], 0),
        ("CLI-ONLINE-WC", vec!["wrong-code"], 1),
    ] {
        let mut edge = sim_edge_process(&addr, edge_id, &faults).await;
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_edgetap"))
            .args([
                "replay",
                rec.to_str().unwrap(),
                "--as",
                "platform",
                "--broker",
                &addr,
                "--edge-id",
                edge_id,
                "--asap",
                "--timeout-ms",
                "2500",
                "--edge-wait-ms",
                "1000",
            ])
            .output()
            .await
            .unwrap();
        edge.kill().await.unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(code), "{edge_id}:\n{text}");
        assert!(
            text.contains("not exercised: the edge did not send EVENT_LINKUP within 1 s"),
            "{text}"
        );
        if code == 1 {
            assert!(
                text.contains("reply code: recorded 202, live 200"),
                "{text}"
            );
        }
    }
}
