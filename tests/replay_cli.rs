//! `edgetap replay` through the binary, where the broker is the problem and where CI
//! reads the report: a broker that refuses the connection, refuses the login, accepts
//! and closes, accepts and stays silent, or dies during the replay is exit 2 with the
//! cause, never the device's missing replies; the README's CI example runs as written
//! against the golden files in `captures/replay/` and its JUnit is green.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_edgetap")
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn golden() -> PathBuf {
    repo().join("captures/replay/golden.pcap")
}

/// `edgetap replay golden.pcap --as platform --broker ADDR EXTRA…`, its output piped.
fn replay_command(addr: &str, extra: &[&str]) -> Command {
    let mut c = Command::new(bin());
    c.arg("replay")
        .arg(golden())
        .args(["--as", "platform", "--broker", addr])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// [`replay_command`] run to its end: (exit code, stdout, stderr).
fn replay(addr: &str, extra: &[&str]) -> (Option<i32>, String, String) {
    let out = replay_command(addr, extra).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_refused_connection_is_exit_2_with_its_cause() {
    let port = common::free_port();
    let (code, out, err) = replay(&format!("127.0.0.1:{port}"), &[]);
    assert_eq!(code, Some(2), "{out}{err}");
    assert!(err.contains("connection refused: nothing listens"), "{err}");
    assert!(!out.contains("missing reply"), "{out}");
}

#[test]
fn a_refused_login_names_the_connack_code() {
    // mosquitto takes the last allow_anonymous: no anonymous client gets in.
    let m = common::Mosquitto::with(common::free_port(), "allow_anonymous false\n");
    let (code, out, err) = replay(&format!("127.0.0.1:{}", m.port), &[]);
    assert_eq!(code, Some(2), "{out}{err}");
    assert!(
        err.contains("the broker refused the connection: CONNACK return code 5 (not authorized)"),
        "{err}"
    );
}

/// A TCP server that accepts and then closes (`hold` false) or keeps the connection
/// open without a word (`hold` true).
fn mute_server(hold: bool) -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut kept = vec![];
        for s in l.incoming().flatten() {
            if hold {
                kept.push(s);
            } else {
                drop(s);
            }
        }
    });
    port
}

#[test]
fn a_broker_that_accepts_and_closes_is_named_so() {
    let port = mute_server(false);
    let (code, out, err) = replay(&format!("127.0.0.1:{port}"), &[]);
    assert_eq!(code, Some(2), "{out}{err}");
    assert!(
        err.contains("accepted the TCP connection and closed it without a CONNACK"),
        "{err}"
    );
}

#[test]
fn a_broker_that_accepts_and_stays_silent_is_named_so() {
    let port = mute_server(true);
    let (code, out, err) = replay(&format!("127.0.0.1:{port}"), &[]);
    assert_eq!(code, Some(2), "{out}{err}");
    assert!(
        err.contains("accepted the TCP connection but sent no CONNACK"),
        "{err}"
    );
}

/// The issue's case: the broker killed during the replay gave 19 "missing reply" and
/// "differences found". Now: exit 2, the loss with its time, an `<error>` case, and no
/// exchange blamed on the device.
#[test]
fn a_broker_killed_during_the_replay_is_exit_2_and_says_when() {
    let m = common::Mosquitto::start();
    let addr = format!("127.0.0.1:{}", m.port);
    let replies = common::Watcher::start(m.port, "/v1/KILL1/+/reply");
    let replay = replay_command(&addr, &["--edge-id", "KILL1", "--format", "junit"])
        .spawn()
        .unwrap();
    // The replay listens for the edge's link-up before the edge powers on.
    m.wait_subscribed("/v1/KILL1/device/request");
    let mut edge = Command::new(bin())
        .args(["sim", "edge", "--broker", &addr, "--edge-id", "KILL1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The replay is paced as recorded (about 3 s of commands after the link-up): the
    // broker dies once the edge answered the first.
    replies.wait_for(Duration::from_secs(20), "the edge's first reply", |_, _| {
        true
    });
    drop(m);
    let out = replay.wait_with_output().unwrap();
    let _ = edge.kill();
    let _ = edge.wait();
    let junit = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{junit}{err}");
    assert!(
        err.contains(&format!("the connection to the broker {addr} was lost")),
        "{err}"
    );
    assert!(err.contains("s into the replay, at 20"), "{err}");
    assert!(
        junit.contains("<error message=\"broker connection lost\">"),
        "{junit}"
    );
    assert!(!junit.contains("missing reply"), "{junit}");
    assert!(!junit.contains("<failure"), "{junit}");
    // Exchanges done before the loss passed; the ones it cut off are not exercised.
    assert!(
        junit.contains("<skipped message=\"not exercised: the connection to the broker"),
        "{junit}"
    );
}

/// Exchanges whose answer window closed before the broker was lost keep their
/// verdict: no device answers here, so the first commands are missing replies (the
/// counterpart's), and only the ones the loss cut off are not exercised.
#[test]
fn exchanges_unanswered_before_a_broker_loss_keep_their_missing_reply() {
    let m = common::Mosquitto::start();
    let addr = format!("127.0.0.1:{}", m.port);
    let commands = common::Watcher::start(m.port, "/v1/NOBODY1/+/command");
    let replay = replay_command(
        &addr,
        &["--edge-id", "NOBODY1", "--asap", "--timeout-ms", "300"],
    )
    .args(["--edge-wait-ms", "300", "--format", "json"])
    .spawn()
    .unwrap();
    // About 20 exchanges of 300 ms each, one after the other: the loss comes once
    // the second command is out (the first one's answer window closed).
    let mut sent = 0;
    commands.wait_for(
        Duration::from_secs(20),
        "the replay's second command",
        |_, _| {
            sent += 1;
            sent == 2
        },
    );
    drop(m);
    let out = replay.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let xs = v["exchanges"].as_array().unwrap();
    let missing = xs
        .iter()
        .filter(|x| x["diffs"].to_string().contains("missing reply"))
        .count();
    let cut = xs
        .iter()
        .filter(|x| {
            x["skipped"]
                .as_str()
                .is_some_and(|s| s.contains("connection to the broker"))
        })
        .count();
    assert!(missing > 0, "timed out before the loss: {}", v["exchanges"]);
    assert!(cut > 0, "cut off by the loss: {}", v["exchanges"]);
}

/// The script of the README's CI example (the yaml block after "replay-regression:"),
/// its items unfolded as YAML folds plain scalars, comments dropped.
fn readme_ci_script() -> String {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let start = readme
        .find("replay-regression:")
        .expect("the README holds the CI example");
    let block = &readme[start..readme[start..].find("```").unwrap() + start];
    let mut items: Vec<String> = vec![];
    let mut in_script = false;
    for line in block.lines() {
        let t = line.trim_start();
        if t.starts_with("script:") {
            in_script = true;
            continue;
        }
        if !in_script {
            continue;
        }
        let indent = line.len() - t.len();
        if indent <= 2 {
            break;
        }
        let text = match t.find(" #") {
            Some(i) => &t[..i],
            None => t,
        }
        .trim_end();
        match text.strip_prefix("- ") {
            Some(item) => items.push(item.to_string()),
            None => {
                let last = items.last_mut().expect("a continuation follows an item");
                last.push(' ');
                last.push_str(text);
            }
        }
    }
    assert!(items.len() >= 4, "{items:?}");
    items.join("\n")
}

/// Runs the README's CI script in a directory of its own, on a free port, with
/// `swap` applied to its text; returns the directory once the script has ended.
fn run_readme_ci(tag: &str, swap: &[(&str, &str)]) -> PathBuf {
    let script = readme_ci_script();
    assert!(
        script.contains("captures/replay/golden.expect.json"),
        "{script}"
    );
    for f in [
        "captures/replay/golden.pcap",
        "captures/replay/golden.expect.json",
    ] {
        assert!(repo().join(f).is_file(), "{f} is committed");
    }
    // The one change: a free port, so that the test does not depend on 1883.
    let port = common::free_port().to_string();
    let mut script = script.replace("1883", &port);
    for (from, to) in swap {
        assert!(script.contains(from), "{from}: {script}");
        script = script.replace(from, to);
    }
    let work = common::temp_dir(tag);
    std::os::unix::fs::symlink(repo().join("captures"), work.join("captures")).unwrap();
    let bin_dir = Path::new(bin()).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    use std::os::unix::process::CommandExt as _;
    // Its own process group, so that what the script leaves running (mosquitto, the
    // edge) is ended by the group's id afterwards. Output to files: what stays
    // running keeps a pipe open.
    let log = work.join("script.log");
    let mut child = Command::new("bash")
        .args(["-e", "-c", &script])
        .current_dir(&work)
        .env("PATH", path)
        .process_group(0)
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(work.join("script.err")).unwrap())
        .spawn()
        .unwrap();
    let pgid = child.id() as i32;
    let status = child.wait().unwrap();
    unsafe { libc::kill(-pgid, libc::SIGTERM) };
    let err = std::fs::read_to_string(work.join("script.err")).unwrap_or_default();
    let err: String = err
        .lines()
        .filter(|l| l.contains("edgetap"))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(status.success(), "the CI script failed: {status:?}\n{err}");
    work
}

#[test]
fn the_readme_ci_example_runs_as_written_and_its_junit_is_green() {
    let work = run_readme_ci("readme-ci", &[]);
    let junit = std::fs::read_to_string(work.join("replay.xml")).unwrap();
    let cases = junit.matches("<testcase ").count();
    assert!(cases >= 20, "{junit}");
    assert!(
        junit.contains(&format!(
            "<testsuites name=\"edgetap replay\" tests=\"{cases}\" failures=\"0\" errors=\"0\""
        )),
        "{junit}"
    );
    assert!(!junit.contains("<failure"), "{junit}");
    assert!(
        junit.contains("name=\"outcome as saved\"></testcase>"),
        "{junit}"
    );
    assert!(
        junit.contains("classname=\"replay.mutation\" name=\"drop-field\""),
        "{junit}"
    );
}

/// The README's CI example as an HTML record, against a conforming device: the
/// mutations' own messages (a command without its jobId, a payload cut short) are
/// the test's doing, shown as injected, never the device's errors; the
/// "Expectation" section says what was compared.
#[test]
fn the_readme_ci_example_as_html_charges_the_device_with_nothing_injected() {
    let work = run_readme_ci(
        "readme-ci-html",
        &[("--format junit > replay.xml", "--format html > replay.html")],
    );
    let html = std::fs::read_to_string(work.join("replay.html")).unwrap();
    assert!(
        html.contains("<span class=\"verdict pass\" id=\"verdict\">PASS"),
        "{}",
        &html[..html.len().min(4000)]
    );
    assert!(!html.contains(">FAIL<"), "a FAIL headline or status");
    // What the test injected, with its mutation and the rule it raised.
    let injected = &html[html
        .find("Injected by the test")
        .expect("the injected section")..];
    assert!(injected.contains("t34.CMD_CON_INSTALL"), "{injected}");
    assert!(injected.contains("payload.invalid_json"), "{injected}");
    assert!(injected.contains("drop-field"), "{injected}");
    // The expectation, item by item: never an empty table.
    let expect = &html[html.find("Expectation (--expect)").unwrap()..];
    let expect = &expect[..expect.find("</table>").unwrap()];
    assert!(expect.contains("exchange 6 CMD_SYS_UPGRADE"), "{expect}");
    assert!(expect.contains("mutation drop-field"), "{expect}");
    assert!(expect.contains("matched"), "{expect}");
}

/// `sim platform --format junit` holds one case per detection item (6.x.x.2) beside
/// the clause suites; the item an edge fault breaks fails, and the totals are the
/// counts of the cases written.
#[test]
fn the_plan_junit_holds_one_case_per_detection_item() {
    let m = common::Mosquitto::start();
    let out = common::plan_against_sim_edge(
        &m,
        "PLAN1",
        &["--format", "junit"],
        &[
            "--fault",
            "wrong-code",
            "--job-ms",
            "300",
            "--policy-ms",
            "100",
        ],
    );
    let junit = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{junit}");
    for (item, _, title, _) in edgetap::sim::platform::ITEMS {
        assert!(
            junit.contains(&format!("name=\"{item} {title}\"")),
            "{item}:\n{junit}"
        );
    }
    let suite = &junit[junit.find("detection items").unwrap()..];
    let upgrade = &suite[suite.find("6.1.2.2 Device upgrade test").unwrap()..];
    let case = &upgrade[..upgrade.find("</testcase>").unwrap()];
    assert!(case.contains("<failure"), "{case}");
    let cases = junit.matches("<testcase ").count();
    let failures = junit.matches("<failure").count();
    assert!(
        junit.contains(&format!(
            "<testsuites name=\"edgetap\" tests=\"{cases}\" failures=\"{failures}\">"
        )),
        "{junit}"
    );
}

/// A stored capture of two edges (the proxy between `sim edge --count 2` and the
/// broker, `sim platform --respond-only` answering): the report names both edges,
/// `--edge` picks the second, and an edge the capture does not hold is exit 2 with the
/// list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_picks_one_edge_of_a_multi_edge_capture() {
    use edgetap::sim::Protocol;
    let m = common::Mosquitto::start();
    let upstream = format!("127.0.0.1:{}", m.port);
    let dir = common::temp_dir("multi-edge").join("store");
    let store = edgetap::store::Store::open(&dir).unwrap();
    let px = common::Proxy::start(
        edgetap::proxy::ProxySettings {
            upstream: upstream.clone(),
            name: "two edges".into(),
            ..Default::default()
        },
        Some(store),
    )
    .await;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let responder = tokio::spawn({
        let upstream = upstream.clone();
        let stop = stop_rx.clone();
        async move { edgetap::sim::platform::respond(&upstream, Protocol::V4, stop).await }
    });
    common::responder_ready(&upstream).await;
    let mut e = edgetap::sim::edge::EdgeSettings::new(&px.addr.to_string(), "MULTI");
    e.count = 2;
    e.run_for = Some(Duration::from_millis(1500));
    edgetap::sim::edge::run(e, stop_rx).await;
    let _ = stop_tx.send(true);
    responder.await.unwrap().unwrap();
    let (outcome, _) = px.finish().await;
    let id = outcome.capture.unwrap().to_string();
    drop(outcome);
    let store_dir = dir.display().to_string();
    let run = |pick: &'static str| {
        let (id, store_dir, upstream) = (id.clone(), store_dir.clone(), upstream.clone());
        async move {
            let out = tokio::process::Command::new(bin())
                .args(["replay", &id, "--store", &store_dir, "--as", "platform"])
                .args(["--broker", &upstream, "--edge", pick, "--asap"])
                .args(["--edge-wait-ms", "300", "--timeout-ms", "300"])
                .output()
                .await
                .unwrap();
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        }
    };
    let (code, out, err) = run("MULTI-2").await;
    // No live edge answers here: its exchanges are not exercised (3), never a
    // usage error (2).
    assert!(matches!(code, Some(0 | 1 | 3)), "{out}{err}");
    assert!(
        out.contains("(recorded edge MULTI-2, live edge MULTI-2)"),
        "{out}"
    );
    // In the order they were first seen.
    let held = |s: &str| s.contains("MULTI-1, MULTI-2") || s.contains("MULTI-2, MULTI-1");
    assert!(out.contains("the capture holds 2 edges: MULTI-"), "{out}");
    assert!(
        out.contains("(--edge ID picks another)") && held(&out),
        "{out}"
    );
    let (code, out, err) = run("NOPE").await;
    assert_eq!(code, Some(2), "{out}{err}");
    assert!(
        err.contains("no edge \"NOPE\"; the capture holds MULTI-"),
        "{err}"
    );
    assert!(held(&err), "{err}");
}

/// A platform that assigns deviceIds of its own (`uuid-N`, not the recorded ones) and
/// answers 404 for a deviceId it never assigned: `replay --as edge` sends the ids
/// the live CMD_TOPO_ADD reply assigned in CMD_TOPO_UPDATE and CMD_TOPO_DEL, so
/// both are answered 200 and every topo exchange is as recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_edge_the_device_ids_the_live_platform_assigns_are_used() {
    use edgetap::sim::{reply, topic, Link, Protocol};
    use serde_json::{json, Value};
    let b = edgetap::broker::start(&edgetap::broker::BrokerSettings::loopback().unwrap()).unwrap();
    let addr = b.v4.to_string();
    let filters = vec!["/v1/+/+/request".to_string()];
    let (link, mut rx) = Link::connect(
        &addr,
        "uuid-platform",
        Protocol::V4,
        &filters,
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    let responder = tokio::spawn(async move {
        // deviceId → nodeId, as this platform assigned them.
        let mut assigned: std::collections::HashMap<String, String> = Default::default();
        let mut next = 0;
        while let Some(m) = rx.recv().await {
            let t = edgetap::protocol::parse_topic(&m.topic).unwrap();
            let env: Value = serde_json::from_slice(&m.payload).unwrap();
            let (mid, ty) = (
                env["mid"].as_u64().unwrap(),
                env["type"].as_str().unwrap().to_string(),
            );
            let p = &env["param"];
            let data: Vec<Value> = match ty.as_str() {
                "EVENT_LINKUP" => vec![],
                "CMD_TOPO_ADD" => p["deviceInfos"].as_array().unwrap().iter().map(|d| {
                    next += 1;
                    let node = d["nodeId"].as_str().unwrap().to_string();
                    let dev = format!("uuid-{next}");
                    assigned.insert(dev.clone(), node.clone());
                    json!({"code": 200, "statusDesc": "added", "deviceId": dev, "nodeId": node})
                }).collect(),
                "CMD_TOPO_UPDATE" => p["deviceStatuses"].as_array().unwrap().iter().map(|d| {
                    let dev = d["deviceId"].as_str().unwrap();
                    let code = if assigned.contains_key(dev) { 200 } else { 404 };
                    json!({"code": code, "statusDesc": "updated", "deviceId": dev})
                }).collect(),
                "CMD_TOPO_DEL" => p["deviceIds"].as_array().unwrap().iter().map(|d| {
                    let dev = d.as_str().unwrap();
                    match assigned.remove(dev) {
                        Some(node) => json!({"code": 200, "statusDesc": "deleted", "nodeId": node, "deviceId": dev}),
                        None => json!({"code": 404, "statusDesc": "unknown deviceId", "nodeId": "", "deviceId": dev}),
                    }
                }).collect(),
                _ => continue,
            };
            let r = if ty == "EVENT_LINKUP" {
                reply(mid, &ty, 200, None, None)
            } else {
                reply(mid, &ty, 200, None, Some(json!({"data": data})))
            };
            let to = topic(&t.edge_id, &t.channel, "response");
            link.publish(&to, serde_json::to_vec(&r).unwrap())
                .await
                .unwrap();
        }
    });
    let mut s = edgetap::replay::ReplaySettings::new(
        edgetap::replay::source::Source::Pcap(golden()),
        edgetap::replay::Role::Edge,
        &addr,
    );
    s.edge_id = Some("UUID-EDGE".into());
    s.pacing = edgetap::replay::Pacing::Asap;
    s.answer_timeout = Duration::from_millis(300);
    let o = edgetap::replay::run(s, std::sync::Arc::new(edgetap::rules::RuleSet::builtin()))
        .await
        .unwrap();
    responder.abort();
    let topo: Vec<_> = o
        .exchanges
        .iter()
        .filter(|x| x.request.starts_with("CMD_TOPO_"))
        .collect();
    assert_eq!(topo.len(), 3, "{}", common::table(&o.document(None)));
    for x in topo {
        assert!(
            x.live.reply.is_some(),
            "{}",
            common::table(&o.document(None))
        );
        assert!(
            x.diffs.is_empty(),
            "{} differs:\n{}",
            x.request,
            common::table(&o.document(None))
        );
    }
    assert!(
        o.new_findings
            .iter()
            .all(|f| f.rule != "topo.unknown_device"),
        "{}",
        common::table(&o.document(None))
    );
}
