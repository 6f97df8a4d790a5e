//! `edgetap watch`: one subscription judges a fleet as `analyze` judges a capture
//! of the same run (tcpdump on the broker's port), the findings stream holds every
//! finding, and a watch that sees nothing or cannot connect says so in its exit code.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::{self, Mosquitto, Output};

const BIN: &str = env!("CARGO_BIN_EXE_edgetap");

/// `edgetap watch --broker 127.0.0.1:PORT ARGS`, once it says it subscribed.
pub(crate) struct WatchProcess {
    child: std::process::Child,
    stdout: Output,
    stderr: Output,
}

impl WatchProcess {
    pub(crate) fn start(port: u16, args: &[&str]) -> WatchProcess {
        let mut child = Command::new(BIN)
            .args(["watch", "--broker", &format!("127.0.0.1:{port}")])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start edgetap watch");
        let stdout = Output::read(child.stdout.take().unwrap());
        let stderr = Output::read(child.stderr.take().unwrap());
        stderr.wait_for(Duration::from_secs(30), "watch to subscribe", |t| {
            t.contains("edgetap watch: subscribed to ")
        });
        WatchProcess {
            child,
            stdout,
            stderr,
        }
    }

    /// SIGTERM: its exit code, stdout and stderr.
    pub(crate) fn stop(mut self) -> (Option<i32>, String, String) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let st = common::wait_exit(
            &mut self.child,
            Duration::from_secs(60),
            "watch to stop after SIGTERM",
        );
        (st.code(), self.stdout.all(), self.stderr.all())
    }
}

impl Drop for WatchProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Error findings per (edge, rule), counted from a JSON report's groups.
fn errors(report: &serde_json::Value) -> BTreeMap<(String, String), u64> {
    let mut out = BTreeMap::new();
    for g in report["groups"].as_array().unwrap() {
        if g["severity"] == "error" {
            let key = (
                g["edge_id"].as_str().unwrap_or("").to_string(),
                g["rule"].as_str().unwrap().to_string(),
            );
            *out.entry(key).or_default() += g["count"].as_u64().unwrap();
        }
    }
    out
}

/// Protocol messages per edge.
fn messages(report: &serde_json::Value) -> BTreeMap<String, u64> {
    report["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["edge_id"].as_str().unwrap().to_string(),
                e["messages"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn sim_edges(port: u16, id: &str, count: usize, extra: &[&str]) -> std::process::Child {
    Command::new(BIN)
        .args(["sim", "edge", "--broker", &format!("127.0.0.1:{port}")])
        .args(["--edge-id", id, "--count", &count.to_string()])
        .args(["--period-ms", "100", "--alarm-ms", "300", "--job-ms", "100"])
        .args(["--duration-ms", "2500"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sim edge")
}

#[test]
fn watch_reports_the_error_findings_and_message_counts_analyze_finds_in_a_capture_of_the_same_run()
{
    let broker = Mosquitto::start();
    let port = broker.port;
    let dir = common::temp_dir("watch-fleet");
    let dump = common::tcpdump(port, dir.join("run.pcap"));
    let log = dir.join("findings.jsonl");
    let store = dir.join("store");
    let watch = WatchProcess::start(
        port,
        &[
            "--format",
            "json",
            "--findings",
            log.to_str().unwrap(),
            "--store",
            store.to_str().unwrap(),
        ],
    );
    // Answers every edge's EVENT_LINKUP and topo requests.
    let mut platform = Command::new(BIN)
        .args(["sim", "platform", "--respond-only"])
        .args(["--broker", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // (Its own filter: watch's /v1/# matches every topic.)
    common::wait_until(Duration::from_secs(20), "the platform to subscribe", || {
        broker
            .subscriptions()
            .iter()
            .any(|f| f == "/v1/+/topo/request")
    });
    // 200 edges, as the issue asks: conforming ones over MQTT 3.1.1, and edges with
    // a bad timestamp over MQTT 5.
    let (n_good, n_bad) = (188, 12);
    let mut good = sim_edges(port, "W", n_good, &[]);
    let mut bad = sim_edges(port, "F", n_bad, &["--fault", "bad-timestamp", "--mqtt5"]);
    for (what, child) in [("good edges", &mut good), ("faulty edges", &mut bad)] {
        let st = common::wait_exit(child, Duration::from_secs(60), what);
        assert!(st.success(), "{what}: {st}");
    }
    // A last message after every edge's: once watch has judged it (its finding is
    // in the stream), it has judged everything before it.
    common::publish_lines(port, &[], "/v1/ZZMARKER/device/data", "not json\n");
    common::wait_until(
        Duration::from_secs(30),
        "the marker's finding in the findings stream",
        || std::fs::read_to_string(&log).is_ok_and(|t| t.contains("ZZMARKER")),
    );
    let (code, out, err) = watch.stop();
    let _ = platform.kill();
    let _ = platform.wait();
    let pcap = dump.stop();
    let watched: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}\n{err}"));
    assert_eq!(code, Some(1), "error findings: exit 1\n{err}");

    let analyzed = Command::new(BIN)
        .args(["analyze", "--format", "json", "--no-progress"])
        .args(["--port", &port.to_string()])
        .arg(&pcap)
        .output()
        .unwrap();
    let analyzed: serde_json::Value = serde_json::from_slice(&analyzed.stdout).unwrap();

    // The faults planted, and nothing else, as errors: the same as analyze's.
    let errs = errors(&watched);
    assert_eq!(errs, errors(&analyzed), "watch vs analyze of the capture");
    for i in 1..=n_bad {
        let key = (format!("F-{i}"), "envelope.request".to_string());
        assert!(errs.get(&key).is_some_and(|n| *n > 0), "F-{i}: {errs:?}");
    }
    assert!(
        errs.keys()
            .all(|(e, _)| e.starts_with("F-") || e == "ZZMARKER"),
        "{errs:?}"
    );
    // Every message the edges (and the platform) published was judged.
    let counts = messages(&watched);
    assert_eq!(counts, messages(&analyzed));
    assert_eq!(counts.len(), n_good + n_bad + 1, "{counts:?}");
    assert!(
        counts.iter().all(|(e, n)| e == "ZZMARKER" || *n >= 3),
        "{counts:?}"
    );
    assert_eq!(
        watched["summary"]["messages"],
        analyzed["summary"]["messages"]
    );
    // --store: the capture it recorded judges the same.
    let id = err
        .split("recorded as capture ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .unwrap_or_else(|| panic!("no capture id in {err}"));
    let stored = Command::new(BIN)
        .args(["analyze", "--format", "json", "--capture", id, "--store"])
        .arg(&store)
        .output()
        .unwrap();
    let stored: serde_json::Value = serde_json::from_slice(&stored.stdout).unwrap();
    assert_eq!(errors(&stored), errs, "analyze --capture {id}");
    assert_eq!(messages(&stored), counts);
    // Said once: what a subscriber cannot see.
    let c52 = watched["clauses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["clause"] == "5.2")
        .unwrap();
    assert_eq!(c52["status"], "not exercised", "{c52}");
    assert!(c52["not_exercised"][0]
        .as_str()
        .unwrap()
        .contains("a subscriber sees no CONNECT"));

    // The findings stream: one JSON object per finding of the report.
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let s = &watched["summary"];
    let total = s["errors"].as_u64().unwrap()
        + s["warnings"].as_u64().unwrap()
        + s["infos"].as_u64().unwrap();
    assert_eq!(lines.len() as u64, total);
    let bad_ts = lines
        .iter()
        .find(|l| l["rule"] == "envelope.request")
        .expect("a bad timestamp in the stream");
    for k in [
        "timestamp",
        "edge",
        "severity",
        "clause",
        "basis",
        "type",
        "topic",
    ] {
        assert!(bad_ts.get(k).is_some_and(|v| !v.is_null()), "{k}: {bad_ts}");
    }
    assert_eq!(bad_ts["event_type"], "finding");
    assert_eq!(bad_ts["seen"]["by"], "watch");
    assert!(
        bad_ts["excerpt"]
            .as_str()
            .is_some_and(|e| e.contains(&bad_ts["mid"].to_string())),
        "{bad_ts}"
    );
}

#[test]
fn watch_over_mqtt5_that_sees_no_protocol_message_exits_3_saying_why() {
    let broker = Mosquitto::start();
    let watch = WatchProcess::start(broker.port, &["--mqtt5", "--findings", "-"]);
    common::publish_lines(broker.port, &[], "sensors/temp", "21.5\n");
    let (code, out, err) = watch.stop();
    assert_eq!(code, Some(3), "{out}\n{err}");
    // stdout holds the finding lines only (none here); the report went to stderr.
    assert!(out.trim().is_empty(), "{out}");
    assert!(
        err.contains("do the edges publish to this broker?"),
        "{err}"
    );
}

#[test]
fn watch_that_cannot_connect_exits_2_naming_the_cause() {
    let port = common::free_port();
    let out = Command::new(BIN)
        .args(["watch", "--broker", &format!("127.0.0.1:{port}")])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("connection refused"), "{err}");
}

/// A GET over plain TCP, the body (a small one, as /metrics is).
fn get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = vec![];
    s.read_to_end(&mut raw).unwrap();
    let raw = String::from_utf8_lossy(&raw).into_owned();
    raw.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or(raw)
}

#[test]
fn watch_http_live_view_counts_the_findings_while_it_runs() {
    let broker = Mosquitto::start();
    let http = common::free_port();
    let watch = WatchProcess::start(broker.port, &["--http", &format!("127.0.0.1:{http}")]);
    common::publish_lines(broker.port, &[], "/v1/H1/device/data", "not json\n");
    common::wait_until(
        Duration::from_secs(30),
        "the live view to count the invalid JSON",
        || get(http, "/metrics").contains("edgetap_findings_total{severity=\"error\"} 1"),
    );
    let report = get(http, "/api/report");
    assert!(report.contains("payload.invalid_json"), "{report}");
    let (code, out, _) = watch.stop();
    assert_eq!(code, Some(1), "{out}");
}

/// TLS (`--tls-ca`) and a login (`USER@HOST:PORT`, the password from the
/// environment): the watcher connects as the sims and `replay` do; a wrong password
/// is refused at once, naming the CONNACK code.
#[test]
fn watch_over_tls_with_a_login_judges_and_a_wrong_password_exits_2() {
    let certs = crate::proxy_ws_tls::make_certs();
    let dir = common::temp_dir("watch-login");
    let pw = dir.join("passwd");
    let st = Command::new("mosquitto_passwd")
        .args(["-c", "-b"])
        .arg(&pw)
        .args(["ops", "s3cret"])
        .status()
        .expect("mosquitto_passwd (mosquitto)");
    assert!(st.success());
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o644)).unwrap();
    let port = common::free_port();
    let broker = Mosquitto::with(
        port,
        &format!(
            "cafile {}\ncertfile {}\nkeyfile {}\npassword_file {}\nallow_anonymous false\n",
            certs.ca.display(),
            certs.cert.display(),
            certs.key.display(),
            pw.display()
        ),
    );
    let addr = format!("ops@127.0.0.1:{}", broker.port);
    let ca = certs.ca.to_str().unwrap();
    let refused = Command::new(BIN)
        .args(["watch", "--broker", &addr, "--tls-ca", ca])
        .env("EDGETAP_MQTT_PASSWORD", "wrong")
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("CONNACK return code"), "{err}");
    assert!(!err.contains("wrong"), "the password is never shown: {err}");

    let mut child = Command::new(BIN)
        .args([
            "watch", "--broker", &addr, "--tls-ca", ca, "--format", "json",
        ])
        .env("EDGETAP_MQTT_PASSWORD", "s3cret")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = Output::read(child.stdout.take().unwrap());
    let stderr = Output::read(child.stderr.take().unwrap());
    stderr.wait_for(Duration::from_secs(30), "watch to subscribe", |t| {
        t.contains("subscribed to")
    });
    // A device publishing over TLS with its own login.
    let st = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &broker.port.to_string()])
        .args(["--cafile", ca, "-u", "ops", "-P", "s3cret"])
        .args(["-t", "/v1/T1/device/data", "-m", "not json"])
        .status()
        .unwrap();
    assert!(st.success());
    stderr.wait_for(Duration::from_secs(30), "the finding on the console", |t| {
        t.contains("payload.invalid_json")
    });
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = common::wait_exit(&mut child, Duration::from_secs(60), "watch to stop");
    assert_eq!(status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_str(&stdout.all()).unwrap();
    assert_eq!(report["summary"]["messages"], 1);
}

/// The broker restarts under the watcher: it connects again, subscribes again,
/// judges what comes after, and the report names the outage (what was published
/// meanwhile was not seen) rather than passing over it.
#[test]
fn a_broker_restart_is_reported_as_an_outage_and_watching_goes_on() {
    let port = common::free_port();
    let broker = Mosquitto::on(port);
    let watch = WatchProcess::start(port, &["--format", "json"]);
    drop(broker);
    watch
        .stderr
        .wait_for(Duration::from_secs(30), "the outage on stderr", |t| {
            t.contains("connection to the broker was lost")
        });
    let broker = Mosquitto::on(port);
    watch
        .stderr
        .wait_for(Duration::from_secs(30), "watch to connect again", |t| {
            t.contains("connected to the broker again")
        });
    common::wait_until(Duration::from_secs(20), "watch to subscribe again", || {
        broker.subscriptions().iter().any(|f| f == "/v1/#")
    });
    common::publish_lines(port, &[], "/v1/R1/device/data", "not json\n");
    watch.stderr.wait_for(
        Duration::from_secs(30),
        "the finding after the restart",
        |t| t.contains("payload.invalid_json"),
    );
    let (code, out, err) = watch.stop();
    assert_eq!(code, Some(1), "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let incomplete = report["summary"]["incomplete"].to_string();
    assert!(
        incomplete.contains("the watcher's connection was down from"),
        "{incomplete}"
    );
}
