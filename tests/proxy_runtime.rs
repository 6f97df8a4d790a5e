//! The proxy's runtime limits and live output, with real parts: mosquitto as the
//! broker, mosquitto_pub / mosquitto_sub as clients, the `edgetap` binary where the
//! console and logs are tested. No timed assertion: waits have generous deadlines
//! that only catch a hang.

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common;

use common::{
    assert_reports_complete, free_port, publish_lines, temp_dir, wait_exit, wait_until, Mosquitto,
    Proxy,
};
use edgetap::mqtt::encode;
use edgetap::pipeline::Settings;
use edgetap::proxy::judge::MAX_KEPT_FINDINGS;
use edgetap::proxy::ProxySettings;
use edgetap::rules::RuleSet;
use edgetap::store::{EventKind, Store};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn settings(upstream: u16) -> ProxySettings {
    ProxySettings {
        upstream: format!("127.0.0.1:{upstream}"),
        name: "runtime".into(),
        ..ProxySettings::default()
    }
}

/// How each connection of the capture ended, as stored.
fn ends(store: &Store, id: u64) -> Vec<String> {
    store
        .events(id)
        .filter_map(|e| match e.unwrap().kind {
            EventKind::End { how } => Some(how),
            _ => None,
        })
        .collect()
}

/// `mosquitto_sub` on `broker`, stopping after `count` messages, once subscribed.
fn subscriber(
    broker: &Mosquitto,
    topic: &str,
    count: usize,
    extra: &[&str],
) -> std::process::Child {
    let child = Command::new("mosquitto_sub")
        .args([
            "-p",
            &broker.port.to_string(),
            "-t",
            topic,
            "-C",
            &count.to_string(),
        ])
        .args(["-W", "60"])
        .args(extra)
        .stdout(Stdio::piped())
        .spawn()
        .expect("mosquitto_sub must be installed (apt-get install mosquitto-clients)");
    broker.wait_subscribed(topic);
    child
}

/// A client that starts a CONNECT, then says nothing more: the broker waits for the
/// rest of the packet, the proxy must not wait forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeout_closes_a_silent_half_open_connection() {
    let broker = Mosquitto::start();
    let dir = temp_dir("idle");
    let px = Proxy::start(
        ProxySettings {
            idle_timeout: Some(Duration::from_secs(1)),
            ..settings(broker.port)
        },
        Some(Store::open(&dir.join("store")).unwrap()),
    )
    .await;
    let mut c = TcpStream::connect(px.addr).await.unwrap();
    // CONNECT announcing 32 bytes, 6 sent; then nothing (a device that lost power,
    // a half-open TCP connection). Unfinished on purpose, so written by hand.
    c.write_all(&[0x10, 0x20, 0x00, 0x04, b'M', b'Q'])
        .await
        .unwrap();
    let mut rest = vec![];
    let closed = tokio::time::timeout(Duration::from_secs(60), c.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the proxy kept the silent connection open");
    let (out, _) = px.finish().await;
    let store = out.store.unwrap();
    let how = ends(&store, out.capture.unwrap());
    assert_eq!(how.len(), 1, "{how:?}");
    assert!(
        how[0].starts_with("idle timeout: no byte either way for 1 s (--idle-timeout)"),
        "{how:?}"
    );
    // The unfinished CONNECT is a finding of that connection.
    assert!(
        out.report
            .findings
            .iter()
            .any(|f| f.rule == "mqtt.malformed" && f.conn == Some(1)),
        "{:?}",
        out.report.findings
    );
}

/// A PUBLISH larger than the analysis buffer (--max-buffered) still goes through
/// byte for byte; it is judged from its header, with a finding that says so, and
/// the connection's memory stays within the budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_packet_is_forwarded_byte_for_byte_and_judged_from_its_header() {
    let broker = Mosquitto::start();
    let dir = temp_dir("oversize");
    let budget = 64 << 10;
    let px = Proxy::start(
        ProxySettings {
            max_buffered: budget,
            ..settings(broker.port)
        },
        Some(Store::open(&dir.join("store")).unwrap()),
    )
    .await;
    // 1 MiB that no framing bug can fake.
    let mut x = 0x9e37_79b9u32;
    let big: Vec<u8> = (0..1 << 20)
        .map(|_| {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (x >> 24) as u8
        })
        .collect();
    let file = dir.join("big.bin");
    std::fs::write(&file, &big).unwrap();
    let sub =
        tokio::task::block_in_place(|| subscriber(&broker, "/v1/BIG1/device/data", 1, &["-N"]));
    let port = px.addr.port();
    let st = tokio::task::spawn_blocking(move || {
        Command::new("mosquitto_pub")
            .args([
                "-p",
                &port.to_string(),
                "-q",
                "1",
                "-t",
                "/v1/BIG1/device/data",
                "-f",
            ])
            .arg(&file)
            .status()
            .expect("mosquitto_pub must be installed")
    })
    .await
    .unwrap();
    assert!(st.success());
    let got = tokio::task::spawn_blocking(move || sub.wait_with_output().unwrap())
        .await
        .unwrap();
    assert!(
        got.stdout == big,
        "payload differs ({} bytes arrived)",
        got.stdout.len()
    );
    let (out, _) = px.finish().await;
    let f = out
        .report
        .findings
        .iter()
        .find(|f| f.rule == "mqtt.oversized")
        .unwrap_or_else(|| panic!("no mqtt.oversized: {:?}", out.report.findings));
    assert!(
        f.message.contains(&format!("over the {budget}-byte limit")),
        "{}",
        f.message
    );
    assert_eq!(f.conn, Some(1));
    // Judged from its header and the prefix read: the topic names the edge.
    assert!(
        f.message.contains("PUBLISH on /v1/BIG1/device/data"),
        "{}",
        f.message
    );
    assert_eq!(f.edge_id.as_deref(), Some("BIG1"));
    // Recorded whole: the bytes stored are the bytes forwarded.
    let store = out.store.unwrap();
    let id = out.capture.unwrap();
    let client_bytes: u64 = store
        .events(id)
        .filter_map(|e| match e.unwrap().kind {
            EventKind::Data {
                side: edgetap::finding::Side::Client,
                bytes,
            } => Some(bytes.len() as u64),
            _ => None,
        })
        .sum();
    assert!(client_bytes > 1 << 20, "{client_bytes}");
}

/// REP_SYS_STATUS reports whose param lacks every required field of table 10.
fn status_reports_lacking_fields(count: usize) -> String {
    (1..=count)
        .map(|mid| {
            format!(
                "{{\"type\":\"REP_SYS_STATUS\",\"mid\":{mid},\
                 \"timestamp\":\"2026-11-26 10:00:00\",\"param\":{{}}}}\n"
            )
        })
        .collect()
}

/// A burst of finding-heavy reports: every message reaches the broker, every one is
/// recorded, and the final report (judging may have lagged) counts every finding,
/// the same as `analyze --capture` of the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_heavy_burst_is_fully_forwarded_recorded_and_judged() {
    let broker = Mosquitto::start();
    let dir = temp_dir("burst");
    let px = Proxy::start(
        settings(broker.port),
        Some(Store::open(&dir.join("store")).unwrap()),
    )
    .await;
    let n = 5_000;
    let topic = "/v1/BURST1/device/data";
    let sub = tokio::task::block_in_place(|| subscriber(&broker, topic, n, &[]));
    let port = px.addr.port();
    tokio::task::spawn_blocking(move || {
        publish_lines(port, &["-q", "1"], topic, &status_reports_lacking_fields(n))
    })
    .await
    .unwrap();
    let got = tokio::task::spawn_blocking(move || sub.wait_with_output().unwrap())
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&got.stdout).lines().count(),
        n,
        "messages delivered through the proxy"
    );
    let (out, live) = px.finish().await;
    let (r, store, id) = assert_reports_complete(out, n);
    let r = &r;
    // Live output may have skipped messages had the judge fallen far behind; the
    // final report never does.
    assert!(live.len() as u64 <= r.total_findings());
    let again = edgetap::analyze::stored::analyze_capture(
        &store,
        id,
        Arc::new(RuleSet::builtin()),
        Settings::default(),
    )
    .unwrap();
    // The final report counts every finding `analyze --capture` lists, in the same
    // groups; it lists the first of them (and the first of each group), and says
    // how many it does not.
    assert_eq!(again.groups, r.groups);
    assert_eq!(again.summary.errors, r.summary.errors);
    let not_listed = r.summary.not_listed.as_ref().map_or(0, |n| n.findings);
    assert_eq!(
        r.findings.len() as u64 + not_listed,
        again.findings.len() as u64,
        "listed and not listed"
    );
    assert!(
        not_listed > 0 && r.findings.len() <= MAX_KEPT_FINDINGS + r.groups.len(),
        "{} findings listed of {}",
        r.findings.len(),
        again.findings.len()
    );
    let mut all = again.findings.iter();
    assert!(
        r.findings.iter().all(|f| all.any(|g| g == f)),
        "the listed findings are findings of the capture, in its order"
    );
    // The stored groups (what `captures show` lists) hold every finding of the
    // final report, also when the live judge skipped and the report re-judged.
    let groups = store.finding_groups(id).unwrap();
    assert_eq!(groups.total, r.total_findings(), "stored finding groups");
    assert_eq!(store.capture(id).unwrap().findings, r.total_findings());
}

/// The real binary with stdout and stderr redirected to files, as a service runs it.
#[test]
fn redirected_logs_have_no_colour_and_finding_lines_name_the_connection() {
    let broker = Mosquitto::start();
    let dir = temp_dir("logs");
    let port = free_port();
    let out_file = std::fs::File::create(dir.join("out.log")).unwrap();
    let err_file = std::fs::File::create(dir.join("err.log")).unwrap();
    let mut px = Command::new(env!("CARGO_BIN_EXE_edgetap"))
        .args(["proxy", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--upstream", &format!("127.0.0.1:{}", broker.port)])
        .args(["--max-connections", "1"])
        .arg("--store")
        .arg(dir.join("store"))
        .stdout(out_file)
        .stderr(err_file)
        .spawn()
        .unwrap();
    let log = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();
    // The line it prints once bound (a connection to check would take the one
    // connection allowed).
    let listening = format!("edgetap proxy: 127.0.0.1:{port} ");
    wait_until(
        Duration::from_secs(10),
        "the proxy to say it listens",
        || log("err.log").contains(&listening),
    );
    // One connection held open: the next ones wait (a warning, once).
    let mut holder = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    use std::io::Write;
    holder.write_all(&encode::connect("holder")).unwrap();
    let mut ack = [0u8; 4];
    holder.read_exact(&mut ack).unwrap();
    let waiting: Vec<_> = (0..3)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    wait_until(
        Duration::from_secs(10),
        "the proxy to warn that it reached its connection limit",
        || log("err.log").contains("connection limit reached"),
    );
    drop(waiting);
    holder.write_all(&encode::disconnect()).unwrap();
    drop(holder);
    // The holder's connection, then the three that waited, accepted and closed.
    wait_until(
        Duration::from_secs(10),
        "the proxy to see the held and the waiting connections close",
        || common::closed_lines(&log("out.log")) >= 4,
    );
    // Findings: two reports lacking table 10 fields, from a known client id.
    publish_lines(
        port,
        &["-i", "dev-logs"],
        "/v1/LOG1/device/data",
        &status_reports_lacking_fields(2),
    );
    wait_until(
        Duration::from_secs(10),
        "the proxy to see the publisher's connection close",
        || common::closed_lines(&log("out.log")) >= 5,
    );
    unsafe { libc::kill(px.id() as i32, libc::SIGTERM) };
    px.wait().unwrap();
    let stdout = std::fs::read_to_string(dir.join("out.log")).unwrap();
    let stderr = std::fs::read_to_string(dir.join("err.log")).unwrap();
    let all = format!("{stdout}{stderr}");
    assert!(
        !all.contains('\x1b'),
        "colour codes in a redirected log:\n{all}"
    );
    assert_eq!(
        stderr.matches("connection limit reached").count(),
        1,
        "rate-limited:\n{stderr}"
    );
    // Live lines: each starts with its time; findings name the connection and peer.
    let live: Vec<&str> = stdout.lines().take_while(|l| !l.is_empty()).collect();
    assert!(!live.is_empty(), "{stdout}");
    for l in &live {
        let t = l.split(' ').next().unwrap();
        assert!(
            chrono::DateTime::parse_from_rfc3339(t).is_ok(),
            "line without its time: {l}"
        );
    }
    let (summaries, findings): (Vec<&&str>, Vec<&&str>) = live
        .iter()
        .filter(|l| l.contains("[t10."))
        .partition(|l| l.contains(" more ("));
    // The second report's findings are counted in a summary, not printed again.
    assert!(
        !summaries.is_empty() && summaries.iter().all(|l| l.contains("+1 more (2 in all)")),
        "{stdout}"
    );
    assert!(!findings.is_empty(), "{stdout}");
    for l in &findings {
        assert!(
            l.contains("(127.0.0.1:") && l.contains("client \"dev-logs\")"),
            "finding line without its connection: {l}"
        );
    }
    assert!(live.iter().all(|l| !l.contains("mid 2:")), "{stdout}");
    assert!(
        live.iter()
            .any(|l| l.contains("CONNECT: MQTT 3.1.1") && l.contains("\"dev-logs\"")),
        "{stdout}"
    );
    assert!(live.iter().any(|l| l.contains("closed after")), "{stdout}");
}

/// An upstream that accepts and never reads: once the socket buffers are full, the
/// forwarding waits for it, the log says it is the upstream that does not read (not
/// edgetap), and SIGTERM still stops the proxy at once: a write that cannot finish
/// does not hold up stopping. Every byte it did forward is recorded.
#[test]
fn an_upstream_that_never_reads_is_named_and_does_not_hold_up_stopping() {
    use std::io::Write;
    let upstream = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let up_port = upstream.local_addr().unwrap().port();
    // Accepts and keeps the socket, reading nothing.
    let held = std::thread::spawn(move || upstream.accept().map(|(s, _)| s));
    let dir = temp_dir("not-reading");
    let port = free_port();
    let err_path = dir.join("err.log");
    let mut px = Command::new(env!("CARGO_BIN_EXE_edgetap"))
        .args(["proxy", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--upstream", &format!("127.0.0.1:{up_port}")])
        .arg("--store")
        .arg(dir.join("store"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    let mut client = None;
    wait_until(Duration::from_secs(10), "the proxy to listen", || {
        client = std::net::TcpStream::connect(("127.0.0.1", port)).ok();
        client.is_some()
    });
    let mut client = client.unwrap();
    let _held = held.join().unwrap().unwrap();
    // Far more than the loopback socket buffers hold; the writer blocks for good.
    // (A CONNECT, then filler bytes that frame as PUBLISH packets: the upstream reads
    // none of them. A stream that does not start with a CONNECT would be withheld
    // from the store, see store/scrub.rs.)
    client
        .set_write_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    client
        .write_all(&edgetap::mqtt::encode::connect("never-read"))
        .unwrap();
    let block = vec![0x30u8; 1 << 16];
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut warned = String::new();
    while Instant::now() < deadline {
        let _ = client.write(&block);
        warned = std::fs::read_to_string(&err_path).unwrap();
        if warned.contains("has not read") {
            break;
        }
    }
    assert!(
        warned.contains("the upstream has not read for 2 s")
            && warned.contains("waits for it (not for edgetap)"),
        "no wait warning naming the upstream:\n{warned}"
    );
    unsafe { libc::kill(px.id() as i32, libc::SIGTERM) };
    let status = wait_exit(
        &mut px,
        Duration::from_secs(10),
        "the proxy to stop after SIGTERM",
    );
    assert!(status.code().is_some(), "{status:?}");
    let store = Store::open(&dir.join("store")).unwrap();
    let meta = store.capture(1).unwrap();
    assert!(meta.bytes > 0, "{meta:?}");
    assert!(meta.not_recorded.is_none(), "{meta:?}");
}
