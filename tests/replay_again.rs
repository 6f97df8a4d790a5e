//! A replay that can run again (issue 20, item 7): `--save-expect` then `--expect`
//! against one running reference edge (the second run assigns job ids of its own, so
//! the edge, which keeps the jobs it ran, accepts them); an expectation saved against
//! silence is refused and an old one of silence fails; Ctrl-C writes the report of
//! what ran (and `sim platform`'s too); a device restarted mid-replay has its second
//! EVENT_LINKUP answered; the report names the live topics.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use crate::common;

use edgetap::broker::{self, BrokerSettings};
use edgetap::demo::quick_settings;
use edgetap::replay::{self, Pacing, ReplaySettings, Role};
use edgetap::rules::RuleSet;
use edgetap::sim::{edge, Protocol};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_edgetap")
}

fn golden() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("captures/replay/golden.pcap")
}

/// `edgetap replay golden.pcap --as platform --broker ADDR --edge-id EDGE --asap EXTRA…`.
fn replay_command(addr: &str, edge_id: &str, extra: &[&str]) -> Command {
    let mut c = Command::new(bin());
    c.arg("replay")
        .arg(golden())
        .args(["--as", "platform", "--broker", addr, "--edge-id", edge_id])
        .arg("--asap")
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// A child process killed when the test ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `edgetap sim edge` as the README starts it (default timings, the recording's).
fn sim_edge(addr: &str, edge_id: &str) -> Running {
    Running(
        Command::new(bin())
            .args(["sim", "edge", "--broker", addr, "--edge-id", edge_id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// Output of a finished command: (exit code, stdout, stderr).
fn finished(c: Child) -> (Option<i32>, String, String) {
    let out = c.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The case: the expectation saved once (the replay started before the
/// device, as the README says), then checked against the same edge, still running
/// and not restarted. The replayed CMD_SYS_UPGRADE used to reuse the first run's job
/// id, and the edge answered 400 "job exists": exit 1, two JUnit failures.
#[test]
fn save_expect_then_expect_against_the_same_running_edge_is_green() {
    let m = common::Mosquitto::start();
    let addr = format!("127.0.0.1:{}", m.port);
    let dir = common::temp_dir("replay-again");
    let expect = dir.join("again.expect.json");
    let first = replay_command(
        &addr,
        "AGAIN1",
        &["--save-expect", expect.to_str().unwrap()],
    )
    .spawn()
    .unwrap();
    m.wait_subscribed("/v1/AGAIN1/device/request");
    let _edge = sim_edge(&addr, "AGAIN1");
    let (code, out, err) = finished(first);
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(expect.is_file(), "{err}");
    // Again, against the same edge: it is online (its own exchanges not exercised)
    // and holds the jobs of the first run.
    let (code, junit, err) = finished(
        replay_command(
            &addr,
            "AGAIN1",
            &[
                "--expect",
                expect.to_str().unwrap(),
                "--edge-wait-ms",
                "1000",
                "--format",
                "junit",
            ],
        )
        .spawn()
        .unwrap(),
    );
    assert_eq!(code, Some(0), "{junit}\n{err}");
    assert!(!junit.contains("<failure"), "{junit}");
    assert!(junit.contains("failures=\"0\" errors=\"0\""), "{junit}");
    let upgrade = &junit[junit.find("CMD_SYS_UPGRADE").unwrap()..];
    let case = &upgrade[..upgrade.find("</testcase>").unwrap()];
    assert!(!case.contains("<skipped"), "exercised: {case}");
    // The live topics, not the recording's (GOLD1).
    assert!(
        junit.contains("name=\"006 CMD_SYS_UPGRADE /v1/AGAIN1/device/command\""),
        "{junit}"
    );
    assert!(!junit.contains("/v1/GOLD1/"), "{junit}");
}

/// `--save-expect` while nothing answers: refused (exit 2, nothing saved). An
/// expectation of silence written anyway (an older edgetap did) fails `--expect`
/// even when nothing answers again.
#[test]
fn an_expectation_saved_against_silence_is_refused_and_never_passes() {
    let m = common::Mosquitto::start();
    let addr = format!("127.0.0.1:{}", m.port);
    let dir = common::temp_dir("replay-silence");
    let expect = dir.join("silence.expect.json");
    let quick = ["--edge-wait-ms", "300", "--timeout-ms", "150"];
    let mut args: Vec<&str> = quick.to_vec();
    args.extend(["--save-expect", expect.to_str().unwrap()]);
    let (code, out, err) = finished(replay_command(&addr, "NOBODY", &args).spawn().unwrap());
    assert_eq!(code, Some(2), "{out}\n{err}");
    assert!(
        err.contains("not saved: the edge NOBODY answered nothing"),
        "{err}"
    );
    assert!(!expect.exists());
    // The same outcome, as an older edgetap saved it.
    let mut args: Vec<&str> = quick.to_vec();
    args.extend(["--format", "json"]);
    let (_, json, _) = finished(replay_command(&addr, "NOBODY", &args).spawn().unwrap());
    std::fs::write(&expect, &json).unwrap();
    let mut args: Vec<&str> = quick.to_vec();
    args.extend(["--expect", expect.to_str().unwrap()]);
    let (code, out, err) = finished(replay_command(&addr, "NOBODY", &args).spawn().unwrap());
    assert_eq!(code, Some(1), "{out}\n{err}");
    assert!(
        out.contains("expectation: saved while the edge NOBODY answered nothing"),
        "{out}"
    );
    assert!(!out.contains("RESULT: as expected"), "{out}");
}

/// Ctrl-C in the middle of a replay: the report of what ran is written (the
/// exchanges played are judged, the rest not exercised), exit 130.
#[test]
fn sigint_mid_replay_writes_the_report_of_what_ran() {
    let m = common::Mosquitto::start();
    let addr = format!("127.0.0.1:{}", m.port);
    let _edge = sim_edge(&addr, "INT1");
    let watch = common::Watcher::start(m.port, "/v1/INT1/device/command");
    // Paced as recorded (no --asap): the plan takes seconds between its commands.
    let mut c = Command::new(bin());
    c.arg("replay")
        .arg(golden())
        .args(["--as", "platform", "--broker", &addr, "--edge-id", "INT1"])
        .args(["--edge-wait-ms", "500"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = c.spawn().unwrap();
    // The replay sent its second command, so it has judged the first (it waits for
    // the answers recorded before each message it sends): under way.
    watch.wait_for(Duration::from_secs(20), "CMD_INFO_QUERY sent", |_, p| {
        serde_json::from_slice::<serde_json::Value>(p).is_ok_and(|v| v["type"] == "CMD_INFO_QUERY")
    });
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let (code, out, err) = finished(child);
    assert_eq!(code, Some(130), "{out}\n{err}");
    assert!(out.contains("INTERRUPTED by SIGINT"), "{out}");
    assert!(
        out.contains("RESULT: interrupted, the replay did not finish"),
        "{out}"
    );
    let line = |t: &str| {
        out.lines()
            .find(|l| l.contains(t))
            .unwrap_or_else(|| panic!("{t}:\n{out}"))
            .to_string()
    };
    assert!(line("CMD_SYS_STATUS").contains(" same "), "{out}");
    assert!(line("CMD_CON_REMOVE").contains(" SKIP "), "{out}");
    assert!(
        out.contains("not exercised: interrupted by SIGINT"),
        "{out}"
    );
    assert!(err.contains("the report covers what ran"), "{err}");
}

/// Ctrl-C in the middle of `sim platform`: the plan's record of what ran, the
/// commands not sent not exercised, exit 130.
#[test]
fn sigint_mid_plan_writes_the_plan_record_of_what_ran() {
    let m = common::Mosquitto::start();
    let addr = format!("127.0.0.1:{}", m.port);
    let _edge = sim_edge(&addr, "PLANINT1");
    let watch = common::Watcher::start(m.port, "/v1/PLANINT1/device/command");
    let mut c = Command::new(bin());
    c.args([
        "sim",
        "platform",
        "--broker",
        &addr,
        "--edge-id",
        "PLANINT1",
    ])
    .args(["--edge-wait-ms", "500"])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let child = c.spawn().unwrap();
    // The upgrade was sent; its job takes seconds with the default timings.
    watch.wait_for(Duration::from_secs(20), "CMD_SYS_UPGRADE sent", |_, p| {
        serde_json::from_slice::<serde_json::Value>(p).is_ok_and(|v| v["type"] == "CMD_SYS_UPGRADE")
    });
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let (code, out, err) = finished(child);
    assert_eq!(code, Some(130), "{out}\n{err}");
    assert!(out.contains("INTERRUPTED by SIGINT"), "{out}");
    assert!(out.contains("the record covers what ran"), "{out}");
    assert!(
        out.contains("CMD_APP_INSTALL → 202: not sent: interrupted by SIGINT"),
        "{out}"
    );
    assert!(err.contains("the report covers what ran"), "{err}");
}

/// A device restarted in the middle of the replay: its second EVENT_LINKUP (and the
/// topo request that follows) is answered as the recording answered the first, and
/// the report says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_device_has_its_second_linkup_answered() {
    let b = broker::start(&BrokerSettings::loopback().unwrap()).unwrap();
    let addr = b.v4.to_string();
    let mut s = ReplaySettings::new(
        replay::source::Source::Pcap(golden()),
        Role::Platform,
        &addr,
    );
    s.edge_id = Some("RESTART1".into());
    // Paced as recorded: the restart comes while the replay still runs.
    s.pacing = Pacing::Speed(1.0);
    s.answer_timeout = Duration::from_millis(2500);
    let (watcher, mut rx) = edgetap::sim::Link::connect(
        &addr,
        "watch-restart1",
        Protocol::V4,
        &[edgetap::sim::topic("RESTART1", "+", "command")],
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let run = tokio::spawn(replay::run_ready(
        s,
        Arc::new(RuleSet::builtin()),
        Some(ready_tx),
    ));
    ready_rx.await.unwrap();
    let (e, _) = quick_settings(&addr, "RESTART1", Protocol::V4);
    let (stop1, stop_rx) = tokio::sync::watch::channel(false);
    let first = tokio::spawn(edge::run(e.clone(), stop_rx));
    // Restarted once the replay sent its first command.
    let cmd = tokio::time::timeout(Duration::from_secs(20), rx.recv()).await;
    assert!(matches!(cmd, Ok(Some(_))), "no command within 20 s");
    watcher.disconnect().await;
    let _ = stop1.send(true);
    first.await.unwrap();
    let (stop2, stop_rx) = tokio::sync::watch::channel(false);
    let second = tokio::spawn(edge::run(e, stop_rx));
    let o = run.await.unwrap().unwrap();
    let _ = stop2.send(true);
    let stats = second.await.unwrap();
    let table = common::table(&o.document(None));
    assert!(
        stats.replies >= 1,
        "the restarted edge got no answer:\n{table}"
    );
    assert!(
        o.unexpected_requests
            .iter()
            .any(|r| r.starts_with("EVENT_LINKUP")
                && r.ends_with("answered as the recording answered the first")),
        "{table}"
    );
    assert!(
        table.contains("answered as the recording answered the first"),
        "{table}"
    );
}
