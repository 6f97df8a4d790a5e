//! The scale-out bus on a real nats-server (Debian's 2.9, started from the text of
//! `edgetap bus nats-config`): records through the bus to three judges give the
//! findings and message counts per edge that one pipeline gives judging the same
//! messages directly; a judge killed with SIGKILL and started again judges every
//! record once; `fleet --format json` shows every edge.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use edgetap::bus::publish::Publisher;
use edgetap::finding::{ConnId, Side};
use edgetap::pipeline::{Analyzer, At, Input, Settings, Sink};
use edgetap::rules::RuleSet;
use serde_json::Value;

use crate::common::{self, Output};
use crate::watch::WatchProcess;

const BIN: &str = env!("CARGO_BIN_EXE_edgetap");

/// nats-server with JetStream and the partition mapping, killed on drop.
struct Nats {
    child: Child,
    port: u16,
}

impl Nats {
    fn start(partitions: u32) -> Nats {
        let port = common::free_port();
        let dir = common::temp_dir("nats");
        let out = Command::new(BIN)
            .args([
                "bus",
                "nats-config",
                "--partitions",
                &partitions.to_string(),
            ])
            .args(["--port", &port.to_string()])
            .args(["--store-dir", "-"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let conf = dir.join("nats.conf");
        std::fs::write(&conf, &out.stdout).unwrap();
        let child = Command::new("nats-server")
            .args(["-js", "-sd", dir.join("js").to_str().unwrap()])
            .arg("-c")
            .arg(&conf)
            .args(["-a", "127.0.0.1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server (apt-get install nats-server)");
        common::wait_until(Duration::from_secs(20), "nats-server to listen", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Nats { child, port }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A protocol message as a watcher received it.
#[derive(Clone)]
struct Msg {
    topic: String,
    payload: Vec<u8>,
    time_us: i64,
}

/// The messages of every rule case (those with a topic), each case's edges renamed
/// `c<case>.<edge>` (a `.` to escape in subjects) and `round` prefixed, all cases
/// interleaved by their time: hundreds of edges, with findings of every kind.
fn fleet_messages(round: &str) -> Vec<Msg> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/rule_cases");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    let t0 = 1_795_000_000_000_000i64;
    let mut out = vec![];
    let mut case_no = 0;
    for f in files {
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
        for case in v["cases"].as_array().unwrap() {
            case_no += 1;
            for m in case["messages"].as_array().unwrap() {
                let Some(topic) = m["topic"].as_str() else {
                    continue;
                };
                let payload = match (&m["payload"], m["payload_raw"].as_str()) {
                    (Value::Null, Some(raw)) => raw.as_bytes().to_vec(),
                    (Value::Null, None) => vec![],
                    (v, _) => serde_json::to_vec(v).unwrap(),
                };
                let mut parts: Vec<String> = topic.split('/').map(String::from).collect();
                if parts.len() > 2 && parts[1] == "v1" {
                    parts[2] = format!("{round}c{case_no}.{}", parts[2]);
                }
                let t = m["t"].as_f64().unwrap();
                out.push(Msg {
                    topic: parts.join("/"),
                    payload,
                    time_us: t0 + (t * 1e6) as i64,
                });
            }
        }
    }
    // Stable: each case keeps its order.
    out.sort_by_key(|m| m.time_us);
    out
}

/// Findings per (edge, rule, severity) and messages per edge, of the messages
/// judged directly through one pipeline as `watch` feeds it.
type Judged = (
    BTreeMap<(String, String, String), u64>,
    BTreeMap<String, u64>,
);

fn judge_directly(msgs: &[Msg]) -> Judged {
    #[derive(Default)]
    struct Found(BTreeMap<(String, String, String), u64>);
    impl Sink for Found {
        fn finding(&mut self, f: &edgetap::Finding) {
            let key = (
                f.edge_id.clone().unwrap_or_default(),
                f.rule.clone(),
                f.severity.as_str().to_string(),
            );
            *self.0.entry(key).or_default() += 1;
        }
    }
    let rules = Arc::new(RuleSet::load(None, false).unwrap());
    let mut a = Analyzer::new(rules, Settings::default());
    let mut found = Found::default();
    const CONN: ConnId = 1;
    let open = Input::Open {
        client: None,
        server: None,
        midstream: false,
    };
    a.push(At::new(CONN, 0, 0), open, &mut found);
    let connect = edgetap::mqtt::encode::connect("direct");
    let data = Input::Data {
        side: Side::Client,
        bytes: &connect,
    };
    a.push(At::new(CONN, 0, 0), data, &mut found);
    for (i, m) in msgs.iter().enumerate() {
        let p = edgetap::mqtt::Packet::Publish(edgetap::mqtt::Publish {
            topic: m.topic.clone(),
            payload: m.payload.clone().into(),
            qos: 0,
            pkid: 0,
            retain: false,
            dup: false,
            topic_alias: None,
        });
        let input = Input::Packet {
            side: Side::Server,
            packet: p,
        };
        a.push(At::new(CONN, m.time_us, i as u64 + 1), input, &mut found);
    }
    let counts = a
        .stats()
        .edges
        .iter()
        .map(|(e, t)| (e.clone(), t.messages))
        .collect();
    (found.0, counts)
}

/// Publishes `msgs` as watcher `watcher`, every ack awaited.
fn publish(url: &str, watcher: &str, msgs: &[Msg]) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut p = Publisher::connect(url, watcher).await.unwrap();
        for m in msgs {
            p.send(m.topic.clone(), m.payload.clone().into(), m.time_us, false)
                .await
                .unwrap();
        }
        p.flush().await.unwrap();
        assert_eq!(p.stored, msgs.len() as u64);
    });
}

/// `edgetap judge --bus URL --partitions RANGE`, once it said which.
struct JudgeProcess {
    child: Child,
    stderr: Output,
}

impl JudgeProcess {
    fn start(url: &str, partitions: &str) -> JudgeProcess {
        JudgeProcess::with(url, partitions, &[])
    }

    fn with(url: &str, partitions: &str, args: &[&str]) -> JudgeProcess {
        let mut child = Command::new(BIN)
            .args([
                "judge",
                "--bus",
                url,
                "--partitions",
                partitions,
                "--report-ms",
                "100",
            ])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = Output::read(child.stderr.take().unwrap());
        stderr.wait_for(Duration::from_secs(20), "the judge to start", |t| {
            t.contains("edgetap judge: partitions")
        });
        JudgeProcess { child, stderr }
    }

    fn kill9(mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGKILL) };
        let _ = self.child.wait();
    }

    /// SIGTERM: what it said.
    fn stop(mut self) -> String {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let st = common::wait_exit(&mut self.child, Duration::from_secs(30), "judge to stop");
        assert_eq!(st.code(), Some(0), "{}", self.stderr.all());
        self.stderr.all()
    }
}

impl Drop for JudgeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `edgetap fleet --bus URL --format json --duration-ms 0 ARGS`.
fn fleet_json(url: &str, args: &[&str]) -> Value {
    let out = Command::new(BIN)
        .args([
            "fleet",
            "--bus",
            url,
            "--format",
            "json",
            "--duration-ms",
            "0",
        ])
        .args(args)
        .output()
        .unwrap();
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "{:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Messages per edge of what the judges published so far (read no more often than
/// every 100 ms).
fn judged_counts(url: &str) -> BTreeMap<String, u64> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let f = edgetap::bus::fleet::read(url, None::<std::future::Pending<()>>, |_| {})
            .await
            .unwrap();
        f.edges().map(|(e, n)| (e.to_string(), n)).collect()
    })
}

fn wait_counts(url: &str, want: &BTreeMap<String, u64>, what: &str) {
    let mut last = Instant::now() - Duration::from_secs(1);
    let started = Instant::now();
    let mut said = false;
    common::wait_until(Duration::from_secs(120), what, || {
        if last.elapsed() < Duration::from_millis(100) {
            return false;
        }
        last = Instant::now();
        let got = judged_counts(url);
        if got != *want && started.elapsed() > Duration::from_secs(5) && !said {
            said = true;
            let missing: Vec<_> = want
                .iter()
                .filter(|(e, n)| got.get(*e) != Some(n))
                .take(5)
                .collect();
            eprintln!(
                "{what}: {} of {} edges, {} of {} messages; e.g. {missing:?} got {:?}",
                got.len(),
                want.len(),
                got.values().sum::<u64>(),
                want.values().sum::<u64>(),
                missing.iter().map(|(e, _)| got.get(*e)).collect::<Vec<_>>()
            );
        }
        got == *want
    });
}

/// Findings per (edge, rule, severity), from a report's findings (all listed: the
/// test's findings are fewer than the report lists).
fn findings_of(report: &Value) -> BTreeMap<(String, String, String), u64> {
    let mut out = BTreeMap::new();
    for f in report["findings"].as_array().unwrap() {
        let key = (
            f["edge_id"].as_str().unwrap_or_default().to_string(),
            f["rule"].as_str().unwrap().to_string(),
            f["severity"].as_str().unwrap().to_string(),
        );
        *out.entry(key).or_default() += 1;
    }
    out
}

fn counts_of(report: &Value) -> BTreeMap<String, u64> {
    report["edges"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["messages"].as_u64().unwrap() > 0)
        .map(|e| {
            (
                e["edge_id"].as_str().unwrap().to_string(),
                e["messages"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn errors(f: &BTreeMap<(String, String, String), u64>) -> BTreeMap<(String, String, String), u64> {
    f.iter()
        .filter(|(k, _)| k.2 == "error")
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}

type Found = BTreeMap<(String, String, String), u64>;

/// The findings of the tolerated-dialect rules apart: the pipeline reports each
/// deviation once per connection, which is the whole broker for one pipeline and a
/// partition for a judge. And those of the one rule that relates two edges
/// (`reply.wrong_edge`, a reply on another edge's topic): a judge sees the other
/// edge only when both share its partition.
fn split_dialect(f: Found) -> (Found, Found) {
    let (f, cross) = split_cross_edge(f);
    let (same, dialect) = split_by_check(f, |c| {
        matches!(
            c,
            edgetap::rules::model::Check::Dialect { .. }
                | edgetap::rules::model::Check::KeyWhitespace
        )
    });
    (same, dialect.into_iter().chain(cross).collect())
}

fn split_cross_edge(f: Found) -> (Found, Found) {
    split_by_check(f, |c| {
        matches!(c, edgetap::rules::model::Check::ReplyWrongEdge)
    })
}

fn split_by_check(
    f: Found,
    apart: impl Fn(&edgetap::rules::model::Check) -> bool,
) -> (Found, Found) {
    let rules = RuleSet::load(None, false).unwrap();
    let dialect: std::collections::BTreeSet<String> = rules
        .rules
        .iter()
        .filter(|r| apart(&r.def.check))
        .map(|r| r.def.id.clone())
        .collect();
    f.into_iter().partition(|(k, _)| !dialect.contains(&k.1))
}

/// Every dialect finding of one pipeline is a judge's too (the first edge with a
/// deviation is the first of its partition), and the judges report each rule for no
/// more edges than there are partitions. A `reply.wrong_edge` of the bus is one
/// pipeline's too (not the other way round).
fn assert_dialect(bus: &Found, direct: &Found) {
    assert!(!direct.is_empty(), "the cases have tolerated deviations");
    let (bus, bus_cross) = split_cross_edge(bus.clone());
    let (direct, direct_cross) = split_cross_edge(direct.clone());
    let (bus, direct) = (&bus, &direct);
    for (k, n) in &bus_cross {
        assert_eq!(
            direct_cross.get(k),
            Some(n),
            "{k:?} of the bus, in one pipeline"
        );
    }
    for (k, n) in direct {
        assert_eq!(bus.get(k), Some(n), "{k:?} of one pipeline, on the bus");
    }
    let mut per_rule: BTreeMap<&str, u64> = BTreeMap::new();
    for (k, n) in bus {
        *per_rule.entry(k.1.as_str()).or_default() += n;
    }
    for (rule, n) in per_rule {
        let direct_n: u64 = direct
            .iter()
            .filter(|(k, _)| k.1 == rule)
            .map(|(_, n)| n)
            .sum();
        assert!(
            n <= direct_n * 8,
            "{rule}: {n} on the bus, {direct_n} in one pipeline"
        );
    }
}

#[test]
fn three_judges_on_the_bus_find_what_one_pipeline_finds() {
    let nats = Nats::start(8);
    let url = nats.url();
    let msgs = fleet_messages("");
    let (direct, counts) = judge_directly(&msgs);
    assert!(counts.len() > 100, "{} edges", counts.len());
    assert!(errors(&direct).len() > 50, "the cases break rules");
    let judges = [
        JudgeProcess::start(&url, "0..2"),
        JudgeProcess::start(&url, "3..5"),
        JudgeProcess::start(&url, "6..7"),
    ];
    publish(&url, "w1", &msgs);
    wait_counts(&url, &counts, "the judges to count every message");
    let report = fleet_json(&url, &[]);
    assert_eq!(counts_of(&report), counts, "messages per edge");
    let (bus, bus_dialect) = split_dialect(findings_of(&report));
    let (direct, direct_dialect) = split_dialect(direct);
    assert_eq!(errors(&bus), errors(&direct), "error findings");
    assert_eq!(bus, direct, "every finding");
    assert_dialect(&bus_dialect, &direct_dialect);
    // Every partition had a judge: each judged a share.
    for j in judges {
        let said = j.stop();
        let judged: u64 = said
            .split("edgetap judge: ")
            .nth(2)
            .and_then(|s| s.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{said}"));
        assert!(judged > 0 && judged < msgs.len() as u64, "{said}");
    }
}

#[test]
fn a_judge_killed_mid_stream_and_started_again_judges_every_record_once() {
    let nats = Nats::start(4);
    let url = nats.url();
    // Eight rounds of the cases: long enough that the kill comes mid-stream.
    let msgs: Vec<Msg> = (0..8)
        .flat_map(|r| fleet_messages(&format!("r{r}")))
        .collect();
    let (direct, counts) = judge_directly(&msgs);
    let half = msgs.len() / 2;
    publish(&url, "w1", &msgs[..half]);
    let judge = JudgeProcess::start(&url, "0..3");
    let mut last = Instant::now() - Duration::from_secs(1);
    common::wait_until(
        Duration::from_secs(60),
        "the judge to count some messages",
        || {
            if last.elapsed() < Duration::from_millis(20) {
                return false;
            }
            last = Instant::now();
            judged_counts(&url).values().sum::<u64>() > 0
        },
    );
    judge.kill9();
    let before: u64 = judged_counts(&url).values().sum();
    assert!(before < msgs.len() as u64);
    publish(&url, "w1", &msgs[half..]);
    let judge = JudgeProcess::start(&url, "0..3");
    wait_counts(&url, &counts, "the restarted judge to count every message");
    let said = judge.stop();
    let report = fleet_json(&url, &[]);
    assert_eq!(counts_of(&report), counts, "messages per edge");
    // One judge for the 4 partitions, before and after the kill: the same findings
    // as one pipeline, but the dialect rules' (once per partition, see above).
    let (bus, bus_dialect) = split_dialect(findings_of(&report));
    let (direct, direct_dialect) = split_dialect(direct);
    assert_eq!(bus, direct, "every finding once");
    assert_dialect(&bus_dialect, &direct_dialect);
    // Each record applied once: the partitions' record counts add up to what was
    // published.
    let input = report["summary"]["inputs"][0].as_str().unwrap();
    assert!(
        input.contains(&format!(": {} records judged in 4 partitions", msgs.len())),
        "{input}\n{said}"
    );
    // Counted: what the restarted judge rebuilt (up to the cursor the killed one
    // left) and what it judged add up to every record, none twice.
    let numbers: Vec<u64> = said
        .split("edgetap judge: ")
        .nth(2)
        .unwrap_or_else(|| panic!("{said}"))
        .split(' ')
        .filter_map(|w| w.parse().ok())
        .collect();
    let (judged, rebuilt) = (numbers[0], numbers[1]);
    eprintln!(
        "killed after {before} messages counted; restarted: {rebuilt} rebuilt, {judged} judged"
    );
    assert!(rebuilt > 0, "{said}");
    assert_eq!(judged + rebuilt, msgs.len() as u64, "{said}");
}

#[test]
fn fleet_shows_every_edge_with_its_labels() {
    let nats = Nats::start(2);
    let url = nats.url();
    let msgs = fleet_messages("");
    let (_, counts) = judge_directly(&msgs);
    let judge = JudgeProcess::start(&url, "0..1");
    publish(&url, "w1", &msgs);
    wait_counts(&url, &counts, "the judge to count every message");
    let dir = common::temp_dir("labels");
    let labels = dir.join("labels.csv");
    let first = counts.keys().next().unwrap();
    std::fs::write(&labels, format!("edge,vendor\n\"{first}\",Acme\n")).unwrap();
    let report = fleet_json(&url, &["--labels", labels.to_str().unwrap()]);
    assert_eq!(counts_of(&report), counts);
    let rows = report["labels"].as_array().unwrap();
    let acme = rows.iter().find(|r| r["value"] == "Acme").unwrap();
    assert_eq!(acme["edges"], 1);
    assert_eq!(acme["messages"], counts[first]);
    let rest = rows.iter().find(|r| r["value"] == "(unlabelled)").unwrap();
    assert_eq!(
        rest["edges"].as_u64().unwrap() as usize,
        report["edges"].as_array().unwrap().len() - 1
    );
    drop(judge);
}

/// Publishes `msgs` to mosquitto at QoS 0 on one connection, in order, and waits
/// for the PINGRESP after the last (mosquitto handled every PUBLISH before it).
fn publish_mqtt(port: u16, msgs: &[Msg]) {
    use edgetap::mqtt::encode;
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(&encode::connect("bus-test-publisher")).unwrap();
    let mut connack = [0u8; 4];
    s.read_exact(&mut connack).unwrap();
    assert_eq!(connack[0], 0x20, "CONNACK");
    let mut out = std::io::BufWriter::new(s.try_clone().unwrap());
    for m in msgs {
        out.write_all(&encode::publish(&m.topic, &m.payload))
            .unwrap();
    }
    out.write_all(&encode::pingreq()).unwrap();
    out.flush().unwrap();
    let mut pingresp = [0u8; 2];
    s.read_exact(&mut pingresp).unwrap();
    assert_eq!(pingresp, [0xD0, 0x00], "PINGRESP");
}

#[test]
fn watch_onto_the_bus_and_three_judges_report_what_a_plain_watch_reports() {
    let nats = Nats::start(8);
    let url = nats.url();
    let broker = common::Mosquitto::start();
    // The protocol's topics: what a subscription to /v1/# receives.
    let msgs: Vec<Msg> = fleet_messages("")
        .into_iter()
        .filter(|m| m.topic.starts_with("/v1/"))
        .collect();
    let (_, counts) = judge_directly(&msgs);
    // Stopped with the watchers, the judges judge the end of input as `watch` does.
    let judges = [
        JudgeProcess::with(&url, "0..2", &["--finish"]),
        JudgeProcess::with(&url, "3..5", &["--finish"]),
        JudgeProcess::with(&url, "6..7", &["--finish"]),
    ];
    let plain = WatchProcess::start(broker.port, &["--format", "json"]);
    let onto_bus = WatchProcess::start(broker.port, &["--bus", &url, "--client-id", "watcher-1"]);
    publish_mqtt(broker.port, &msgs);
    wait_counts(&url, &counts, "the judges to count every message");
    let (_, report, _) = plain.stop();
    let (_, _, said) = onto_bus.stop();
    let n = msgs.len();
    assert!(
        said.contains(&format!(
            "{n} deliveries received, {n} records stored on the bus"
        )),
        "{said}"
    );
    let plain: Value = serde_json::from_str(&report).unwrap();
    for j in judges {
        j.stop();
    }
    let fleet = fleet_json(&url, &[]);
    assert_eq!(counts_of(&fleet), counts_of(&plain), "messages per edge");
    let (bus, bus_dialect) = split_dialect(findings_of(&fleet));
    let (plain, plain_dialect) = split_dialect(findings_of(&plain));
    assert_eq!(errors(&bus), errors(&plain), "error findings");
    // Every finding too, but a request whose reply came on another edge's topic:
    // one pipeline pairs them (reply.wrong_edge), a judge without the other edge in
    // its partition leaves the request pending (info).
    let pending = |f: &Found| -> Found {
        f.iter()
            .filter(|(k, _)| k.1 != "reply.pending")
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    };
    assert_eq!(pending(&bus), pending(&plain), "every finding");
    assert_dialect(&bus_dialect, &plain_dialect);
}

/// One GET on 127.0.0.1:`port`, `token` as a bearer: the status code and the body.
fn http_get(port: u16, path: &str, token: Option<&str>) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}\r\n").unwrap();
    let mut raw = vec![];
    s.read_to_end(&mut raw).unwrap();
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let code = raw.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = raw
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (code, body)
}

#[test]
fn fleet_serves_the_report_so_far_over_http_with_its_token() {
    let nats = Nats::start(2);
    let url = nats.url();
    let msgs = fleet_messages("");
    let (_, counts) = judge_directly(&msgs);
    let judge = JudgeProcess::start(&url, "0..1");
    let port = common::free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut fleet = Command::new(BIN)
        .args(["fleet", "--bus", &url, "--http", &addr])
        .args(["--http-token", "s3cret"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = Output::read(fleet.stdout.take().unwrap());
    let stderr = Output::read(fleet.stderr.take().unwrap());
    stderr.wait_for(Duration::from_secs(30), "fleet's live page", |t| {
        t.contains(&format!("edgetap fleet: live page on http://{addr}/"))
    });
    // Nothing was published yet: what the page shows comes while fleet runs.
    let (code, body) = http_get(port, "/api/report", Some("s3cret"));
    assert_eq!(code, 200, "{body}");
    let before: Value = serde_json::from_str(&body).unwrap();
    assert!(counts_of(&before).is_empty(), "{body}");
    publish(&url, "w1", &msgs);
    common::wait_until(
        Duration::from_secs(60),
        "/api/report to count every edge's messages",
        || {
            let (code, body) = http_get(port, "/api/report", Some("s3cret"));
            assert_eq!(code, 200, "{body}");
            counts_of(&serde_json::from_str(&body).unwrap()) == counts
        },
    );
    let (code, body) = http_get(port, "/api/report", None);
    assert_eq!(code, 401, "without the token: {body}");
    let (code, body) = http_get(port, "/api/report", Some("wrong"));
    assert_eq!(code, 401, "a wrong token: {body}");
    let (code, page) = http_get(port, "/?token=s3cret", None);
    assert_eq!(code, 200, "{page}");
    let edge = counts.keys().next().unwrap();
    assert!(
        page.contains("edgetap fleet record")
            && page.contains("live, refreshed every 5 s")
            && page.contains("s3cret") // its links keep the token
            && page.contains(edge.as_str()),
        "{page}"
    );
    let (code, metrics) = http_get(port, "/metrics", Some("s3cret"));
    assert_eq!(code, 200);
    let edges = format!("edgetap_fleet_edges {}", counts.len());
    assert!(metrics.contains(&edges), "{metrics}");
    // Stopped, it writes the report of what it read, as without --http.
    unsafe { libc::kill(fleet.id() as i32, libc::SIGTERM) };
    let st = common::wait_exit(&mut fleet, Duration::from_secs(30), "fleet to stop");
    assert!(matches!(st.code(), Some(0 | 1)), "{}", stderr.all());
    assert!(stdout.all().contains(edge.as_str()), "{}", stdout.all());
    drop(judge);
}
