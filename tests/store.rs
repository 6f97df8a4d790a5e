//! The capture store: key order, delete, pcapng export checked by tshark, and
//! durability of a proxy killed with SIGKILL mid-traffic. tshark and mosquitto are
//! required (CI installs them); these tests fail without them.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common;

use bytes::{Bytes, BytesMut};
use common::{free_port, temp_dir, wait_until};
use edgetap::finding::Side;
use edgetap::mqtt::encode;
use edgetap::pipeline::{Analyzer, PacketEvent, Settings, Sink};
use edgetap::rules::RuleSet;
use edgetap::store::packet_record;
use edgetap::store::replay::input;
use edgetap::store::{CaptureMeta, Event, EventKind, PacketRecord, Store, WriteBatch};
use edgetap::Finding;

fn meta() -> CaptureMeta {
    CaptureMeta {
        id: 0,
        name: "t".into(),
        started_us: T0,
        ended_us: None,
        listen: "127.0.0.1:1".into(),
        upstream: "10.0.0.1:1883".into(),
        rules_version: "test".into(),
        connections: 0,
        chunks: 0,
        bytes: 0,
        packets: 0,
        findings: 0,
        not_recorded: None,
    }
}

const T0: i64 = 1_795_687_200_000_000;

#[derive(Default)]
struct Grab {
    packets: Vec<PacketRecord>,
    findings: Vec<Finding>,
}
impl Sink for Grab {
    fn packet(&mut self, p: &PacketEvent<'_>) {
        self.packets.push(packet_record(p));
    }
    fn finding(&mut self, f: &Finding) {
        self.findings.push(f.clone());
    }
}

/// Records events the way the proxy's analysis task does, without sockets.
fn record(store: &Store, events: Vec<(i64, u64, EventKind)>) -> (u64, Vec<Finding>, u64) {
    let mut m = meta();
    let cap = store.begin_capture(&mut m).unwrap();
    let mut a = Analyzer::new(Arc::new(RuleSet::builtin()), Settings::default());
    let mut batch = WriteBatch::default();
    let mut all = vec![];
    for (seq, (time_us, conn, kind)) in events.into_iter().enumerate() {
        let ev = Event {
            time_us,
            seq: seq as u64 + 1,
            conn,
            kind,
        };
        let mut g = Grab::default();
        if let Some((at, inp)) = input(&ev) {
            a.push(at, inp, &mut g);
        }
        batch.event(cap, &ev);
        for (i, p) in g.packets.iter().enumerate() {
            batch.packet(cap, ev.seq, i as u32, p);
        }
        for f in g.findings {
            batch.finding(cap, m.findings, &f);
            m.findings += 1;
            all.push(f);
        }
    }
    let mut g = Grab::default();
    a.finish(&mut g);
    for f in g.findings {
        batch.finding(cap, m.findings, &f);
        m.findings += 1;
        all.push(f);
    }
    m.packets = a.stats().mqtt_packets;
    store.write(batch, &m).unwrap();
    (cap, all, a.stats().mqtt_packets)
}

fn connect_with_login(id: &str, user: &str, pass: &str) -> Vec<u8> {
    let mut b = BytesMut::new();
    let mut c = rumqttc::mqttbytes::v4::Connect::new(id);
    c.set_login(user, pass);
    c.write(&mut b).unwrap();
    b.to_vec()
}

fn data(side: Side, b: Vec<u8>) -> EventKind {
    EventKind::Data {
        side,
        bytes: Bytes::from(b),
    }
}

#[test]
fn events_iterate_in_time_order_and_delete_removes_them() {
    let dir = temp_dir("order");
    let store = Store::open(&dir).unwrap();
    let mut m = meta();
    let cap = store.begin_capture(&mut m).unwrap();
    let mut b = WriteBatch::default();
    // Written out of time order; seq breaks ties.
    for (t, seq) in [
        (T0 + 300, 3u64),
        (T0 + 100, 1),
        (T0 + 100_000_000, 9),
        (T0 + 200, 2),
    ] {
        b.event(
            cap,
            &Event {
                time_us: t,
                seq,
                conn: 1,
                kind: data(Side::Client, vec![seq as u8]),
            },
        );
    }
    store.write(b, &m).unwrap();
    let seqs: Vec<u64> = store.events(cap).map(|e| e.unwrap().seq).collect();
    assert_eq!(seqs, [1, 2, 3, 9]);
    // A second capture does not mix in.
    let mut m2 = meta();
    let cap2 = store.begin_capture(&mut m2).unwrap();
    assert_eq!(cap2, cap + 1);
    assert_eq!(store.events(cap2).count(), 0);
    store.delete(cap).unwrap();
    assert_eq!(store.events(cap).count(), 0);
    assert!(store.capture(cap).is_err());
    assert_eq!(store.captures().unwrap().len(), 1);
}

#[test]
fn export_pcapng_tshark_counts_what_edgetap_counts_and_shows_findings() {
    let dir = temp_dir("export");
    let store = Store::open(&dir.join("store")).unwrap();
    let client: SocketAddr = "10.0.0.2:40000".parse().unwrap();
    let server: SocketAddr = "10.0.0.1:1883".parse().unwrap();
    let mut connack = encode::connack(false);
    let big: Vec<u8> = (0..150_000u32).map(|i| (i % 251) as u8).collect();
    // Two packets in one chunk, and one packet split over chunks.
    let mut two = encode::publish("data/a", b"one");
    two.extend(encode::publish("/v1/E1/device/request", br#"{"mid":1}"#));
    let bigp = encode::publish("data/big", &big);
    let (head, tail) = bigp.split_at(70_000);
    let events = vec![
        (T0, 1, EventKind::Open { client, server }),
        (
            T0 + 10,
            1,
            data(Side::Client, connect_with_login("edge", "alice", "hunter2")),
        ),
        (T0 + 20, 1, data(Side::Server, std::mem::take(&mut connack))),
        (T0 + 30, 1, data(Side::Client, two)),
        (T0 + 40, 1, data(Side::Client, head.to_vec())),
        (T0 + 50, 1, data(Side::Client, tail.to_vec())),
        (T0 + 60, 1, data(Side::Client, encode::disconnect())),
        (T0 + 70, 1, EventKind::Fin { side: Side::Client }),
        (T0 + 80, 1, EventKind::Fin { side: Side::Server }),
        (
            T0 + 90,
            1,
            EventKind::End {
                how: "closed".into(),
            },
        ),
    ];
    let (cap, findings, mqtt_packets) = record(&store, events);
    assert_eq!(mqtt_packets, 6);
    assert!(!findings.is_empty());

    let file = dir.join("out.pcapng");
    let s = edgetap::store::export::export_pcapng(
        &store,
        cap,
        std::io::BufWriter::new(std::fs::File::create(&file).unwrap()),
        false,
    )
    .unwrap();
    assert_eq!(s.comments, findings.len() as u64);
    let bytes = std::fs::read(&file).unwrap();
    let has = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    assert!(!has(b"hunter2") && !has(b"alice"), "credentials redacted");

    let tshark = |args: &[&str]| -> String {
        let out = Command::new("tshark")
            .arg("-r")
            .arg(&file)
            .args(args)
            .stderr(Stdio::null())
            .output()
            .expect("tshark must be installed (apt-get install tshark)");
        assert!(out.status.success(), "tshark {args:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let types = tshark(&["-Y", "mqtt", "-T", "fields", "-e", "mqtt.msgtype"]);
    let count = types
        .lines()
        .flat_map(|l| l.split(','))
        .filter(|s| !s.is_empty())
        .count();
    assert_eq!(count as u64, mqtt_packets, "tshark's MQTT count: {types}");
    let comments = tshark(&["-Y", "frame.comment", "-T", "fields", "-e", "frame.comment"]);
    for f in &findings {
        assert!(
            comments.contains(&f.message),
            "comment for {}: {comments}",
            f.rule
        );
    }
    // No TCP complaints: sequence numbers are consistent.
    let bad = tshark(&["-Y", "tcp.analysis.flags && !tcp.analysis.window_update"]);
    assert_eq!(bad.trim(), "", "tshark TCP analysis");
    let user = tshark(&[
        "-Y",
        "mqtt.msgtype == 1",
        "-T",
        "fields",
        "-e",
        "mqtt.username",
    ]);
    assert_eq!(user.trim(), "*****");
}

/// Kills `edgetap proxy` with SIGKILL while a client publishes through it, then
/// checks that the store opens and holds every message acknowledged more than one
/// flush window (100 ms, plus 150 ms for the fsync) before the kill.
#[test]
fn sigkill_mid_traffic_keeps_everything_up_to_the_flush_window() {
    let dir = temp_dir("sigkill");
    let broker = common::Mosquitto::start();
    let mport = broker.port;
    let pport = free_port();
    let store_dir = dir.join("store");
    let mut proxy = Command::new(env!("CARGO_BIN_EXE_edgetap"))
        .args(["proxy", "--listen", &format!("127.0.0.1:{pport}")])
        .args([
            "--upstream",
            &format!("127.0.0.1:{mport}"),
            "--name",
            "killed",
        ])
        .arg("--store")
        .arg(&store_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    for port in [mport, pport] {
        wait_until(
            Duration::from_secs(5),
            &format!("port {port} to listen"),
            || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
        );
    }

    let acked: Arc<Mutex<Vec<(u32, Instant)>>> = Arc::default();
    let acked2 = acked.clone();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let publisher = rt.spawn(async move {
        let opts = rumqttc::MqttOptions::new("edge", "127.0.0.1", pport);
        let (c, mut ev) = rumqttc::AsyncClient::new(opts, 16);
        let mut sent: std::collections::HashMap<u16, u32> = Default::default();
        let mut n = 0u32;
        c.publish(
            format!("seq/{n}"),
            rumqttc::QoS::AtLeastOnce,
            false,
            vec![1u8; 512],
        )
        .await
        .unwrap();
        loop {
            match ev.poll().await {
                Ok(rumqttc::Event::Outgoing(rumqttc::Outgoing::Publish(pkid))) => {
                    sent.insert(pkid, n);
                }
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(a))) => {
                    if let Some(k) = sent.remove(&a.pkid) {
                        acked2.lock().unwrap().push((k, Instant::now()));
                    }
                    n += 1;
                    let c = c.clone();
                    let topic = format!("seq/{n}");
                    tokio::spawn(async move {
                        let _ = c
                            .publish(topic, rumqttc::QoS::AtLeastOnce, false, vec![1u8; 512])
                            .await;
                    });
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    });
    // The flush window plus the time of a sync and of the writer thread (nice +10)
    // getting a core: a CI run with two tests at once once took longer than 150 ms.
    let window = edgetap::proxy::FLUSH_INTERVAL + Duration::from_millis(600);
    // Traffic goes on until more than 20 messages were acknowledged longer than a
    // window ago (the store must hold those after the kill), then the kill.
    wait_until(
        Duration::from_secs(30),
        "more than 20 messages acknowledged longer than the flush window ago",
        || {
            let acked = acked.lock().unwrap();
            acked.iter().filter(|(_, t)| t.elapsed() > window).count() > 20
        },
    );
    unsafe { libc::kill(proxy.id() as i32, libc::SIGKILL) };
    let killed = Instant::now();
    let _ = proxy.wait();
    rt.block_on(async {
        let _ = tokio::time::timeout(Duration::from_secs(2), publisher).await;
    });
    drop(broker);

    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 20,
        "only {} messages went through",
        acked.len()
    );
    let must: Vec<u32> = acked
        .iter()
        .filter(|(_, t)| killed.duration_since(*t) > window)
        .map(|(n, _)| *n)
        .collect();
    assert!(!must.is_empty());

    let store = Store::open(&store_dir).expect("the store opens after SIGKILL");
    let caps = store.captures().unwrap();
    assert_eq!(caps.len(), 1);
    assert_eq!(caps[0].ended_us, None, "a killed run has no end");
    // Every stored event decodes: nothing half-written.
    let events: Vec<Event> = store.events(caps[0].id).map(|e| e.unwrap()).collect();
    assert!(!events.is_empty());
    let stored: std::collections::HashSet<String> = store
        .packets(caps[0].id)
        .map(|p| p.unwrap())
        .filter_map(|p| p.topic)
        .collect();
    let missing: Vec<u32> = must
        .iter()
        .copied()
        .filter(|n| !stored.contains(&format!("seq/{n}")))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} messages acked more than {window:?} before the kill are missing: {:?}",
        missing.len(),
        must.len(),
        &missing[..missing.len().min(10)]
    );
    // `analyze --capture` works on the killed capture.
    let r = edgetap::analyze::stored::analyze_capture(
        &store,
        caps[0].id,
        Arc::new(RuleSet::builtin()),
        Settings::default(),
    )
    .unwrap();
    assert!(r.summary.publishes >= must.len() as u64);
}
