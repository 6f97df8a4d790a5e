//! The proxy with real parts: mosquitto as the broker, rumqttc / mosquitto_pub as
//! edge and platform clients, tcpdump for a reference capture. These tests FAIL when
//! mosquitto or tcpdump is missing: CI installs them (.ci/run).

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common;

use common::{free_port, tcpdump, temp_dir, Mosquitto, Proxy};
use edgetap::finding::Finding;
use edgetap::mqtt::encode;
use edgetap::pipeline::Settings;
use edgetap::proxy::ProxySettings;
use edgetap::rules::RuleSet;
use edgetap::store::Store;
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

fn settings(upstream: String) -> ProxySettings {
    ProxySettings {
        upstream,
        name: "test".into(),
        max_connections: 1024,
        // The 1 MiB payload below is judged whole (the analysis buffer is the budget).
        max_buffered: 4 << 20,
        ..ProxySettings::default()
    }
}

async fn proxy(upstream: String, store: Option<Store>) -> Proxy {
    Proxy::start(settings(upstream), store).await
}

/// A rumqttc client whose events arrive on a channel.
fn client(id: &str, port: u16) -> (AsyncClient, mpsc::UnboundedReceiver<Event>) {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_max_packet_size(4 << 20, 4 << 20);
    o.set_keep_alive(Duration::from_secs(30));
    let (c, mut ev): (AsyncClient, EventLoop) = AsyncClient::new(o, 64);
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(e) = ev.poll().await {
            if tx.send(e).is_err() {
                break;
            }
        }
    });
    (c, rx)
}

async fn wait_for(
    rx: &mut mpsc::UnboundedReceiver<Event>,
    what: &str,
    f: impl Fn(&Packet) -> bool,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(Event::Incoming(p))) if f(&p) => return,
            Ok(Some(_)) => {}
            _ => panic!("timed out waiting for {what}"),
        }
    }
}

fn payloads() -> Vec<(&'static str, Vec<u8>)> {
    let binary: Vec<u8> = (0..=255u8).cycle().take(1024).collect();
    // 1 MB that no compressor or framing bug can fake: a simple LCG.
    let mut x = 0x1234_5678u32;
    let big: Vec<u8> = (0..1 << 20)
        .map(|_| {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (x >> 24) as u8
        })
        .collect();
    vec![
        ("data/binary", binary),
        ("data/empty", vec![]),
        ("data/big", big),
        // Missing type and timestamp: two 5.3 findings.
        ("/v1/E1/device/request", br#"{"mid":1}"#.to_vec()),
    ]
}

fn key(f: &Finding) -> (String, String) {
    (f.rule.clone(), f.message.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payloads_arrive_byte_identical_and_store_matches_analyze() {
    let port = free_port();
    let _broker = Mosquitto::on(port);
    let dir = temp_dir("store");
    let dump = tcpdump(port, dir.join("run.pcap"));
    let store = Store::open(&dir.join("store")).unwrap();
    let px = proxy(format!("127.0.0.1:{port}"), Some(store)).await;

    let (platform, mut prx) = client("platform", port);
    wait_for(&mut prx, "platform CONNACK", |p| {
        matches!(p, Packet::ConnAck(_))
    })
    .await;
    platform
        .subscribe("data/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    platform.subscribe("/v1/#", QoS::AtLeastOnce).await.unwrap();
    wait_for(&mut prx, "SUBACK", |p| matches!(p, Packet::SubAck(_))).await;
    wait_for(&mut prx, "SUBACK", |p| matches!(p, Packet::SubAck(_))).await;

    let (edge, mut erx) = client("edge", px.addr.port());
    wait_for(&mut erx, "edge CONNACK", |p| {
        matches!(p, Packet::ConnAck(_))
    })
    .await;
    let sent = payloads();
    for (topic, payload) in &sent {
        edge.publish(*topic, QoS::AtLeastOnce, false, payload.clone())
            .await
            .unwrap();
    }
    let mut got: Vec<(String, Vec<u8>)> = vec![];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while got.len() < sent.len() {
        match tokio::time::timeout_at(deadline, prx.recv()).await {
            Ok(Some(Event::Incoming(Packet::Publish(p)))) => {
                got.push((p.topic, p.payload.to_vec()))
            }
            Ok(Some(_)) => {}
            _ => panic!("platform got {} of {} messages", got.len(), sent.len()),
        }
    }
    for (topic, payload) in &sent {
        let g = got
            .iter()
            .find(|(t, _)| t == topic)
            .unwrap_or_else(|| panic!("{topic} not delivered"));
        assert!(
            g.1 == *payload,
            "{topic}: payload differs ({} vs {} bytes)",
            g.1.len(),
            payload.len()
        );
    }
    // Let the PUBACKs through, then close the edge cleanly.
    for _ in 0..sent.len() {
        wait_for(&mut erx, "PUBACK", |p| matches!(p, Packet::PubAck(_))).await;
    }
    edge.disconnect().await.unwrap();
    px.wait_closed(1).await;
    let (out, live) = px.finish().await;
    platform.disconnect().await.ok();
    // The platform's connection ended (its event stream with it) before the
    // reference capture stops.
    tokio::time::timeout(Duration::from_secs(20), async {
        while prx.recv().await.is_some() {}
    })
    .await
    .expect("the platform's connection ends");
    let pcap = tokio::task::block_in_place(|| dump.stop());

    let report = &out.report;
    assert_eq!(live, report.findings, "live findings are the report's");
    assert_eq!(report.summary.publishes, 4);
    let store = out.store.expect("store handed back");
    let id = out.capture.unwrap();
    let packets: Vec<_> = store.packets(id).map(|p| p.unwrap()).collect();
    assert_eq!(
        packets.len() as u64,
        report.summary.mqtt_packets,
        "store holds every packet"
    );
    let stored_publishes: Vec<(String, u64)> = packets
        .iter()
        .filter(|p| p.packet_type == "PUBLISH")
        .map(|p| (p.topic.clone().unwrap(), p.payload_len.unwrap()))
        .collect();
    let want: Vec<(String, u64)> = sent
        .iter()
        .map(|(t, p)| (t.to_string(), p.len() as u64))
        .collect();
    assert_eq!(stored_publishes, want);
    // Every forwarded byte is stored, in order, per direction.
    let mut client_bytes = 0usize;
    for ev in store.events(id) {
        if let edgetap::store::EventKind::Data {
            side: edgetap::finding::Side::Client,
            bytes,
        } = ev.unwrap().kind
        {
            client_bytes += bytes.len();
        }
    }
    assert!(
        client_bytes > (1 << 20),
        "client bytes stored: {client_bytes}"
    );
    assert_eq!(
        store.findings(id).unwrap(),
        report.findings,
        "stored findings"
    );

    // `analyze --capture` gives the live report.
    let again = edgetap::analyze::stored::analyze_capture(
        &store,
        id,
        Arc::new(RuleSet::builtin()),
        Settings::default(),
    )
    .unwrap();
    assert_eq!(again.findings, report.findings);
    assert_eq!(again.clauses, report.clauses);
    assert!(
        report.findings.iter().any(|f| f.clause == "5.3"),
        "{:?}",
        report.findings
    );

    // A tcpdump capture of the same run (both legs at the broker) finds the same.
    let mut quiet = edgetap::report::Collector::default();
    let reference = edgetap::analyze::analyze_files(
        Arc::new(RuleSet::builtin()),
        &edgetap::analyze::AnalyzeSettings {
            files: vec![pcap],
            ports: vec![port],
            max_packet: edgetap::mqtt::MQTT_MAX_REMAINING,
            progress: false,
        },
        &mut quiet,
    )
    .unwrap();
    let mut a: Vec<_> = report.findings.iter().map(key).collect();
    let mut b: Vec<_> = reference.findings.iter().map(key).collect();
    a.sort();
    b.sort();
    assert_eq!(a, b, "proxy findings vs tcpdump capture findings");
    assert_eq!(reference.summary.messages, report.summary.messages);
}

/// The CONNACK a client reads (4 bytes), as read.
async fn connack(s: &mut TcpStream) -> Vec<u8> {
    let mut b = [0u8; 4];
    // Generous: 500 connections at once on a loaded 2-core machine.
    tokio::time::timeout(Duration::from_secs(20), s.read_exact(&mut b))
        .await
        .expect("CONNACK in time")
        .expect("CONNACK");
    b.to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_refusing_closes_the_client_and_the_proxy_keeps_serving() {
    let port = free_port();
    // The port is held (bound, not listening: connections to it are refused) so that
    // a test running beside this one cannot take it before the broker does.
    let hold = tokio::net::TcpSocket::new_v4().unwrap();
    hold.bind(([127, 0, 0, 1], port).into()).unwrap();
    let px = proxy(format!("127.0.0.1:{port}"), None).await;
    // Nobody listens upstream: the client's connection is closed (reset). The
    // reset may come before the client's connect call has returned (seen in CI):
    // that is the same refusal, mirrored sooner.
    match TcpStream::connect(px.addr).await {
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
        Ok(mut c) => {
            let _ = c.write_all(&encode::connect("edge")).await;
            let mut b = [0u8; 16];
            let r = tokio::time::timeout(Duration::from_secs(5), c.read(&mut b))
                .await
                .expect("the proxy closes the client promptly");
            assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
        }
    }
    // The broker comes up: the same proxy serves the next client.
    drop(hold);
    let _broker = Mosquitto::on(port);
    let mut c = TcpStream::connect(px.addr).await.unwrap();
    c.write_all(&encode::connect("edge")).await.unwrap();
    assert_eq!(connack(&mut c).await, encode::connack(false));
    drop(c);
    let (out, _) = px.finish().await;
    assert_eq!(out.accepted, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_vanishing_mid_packet_is_a_finding_and_others_go_on() {
    let port = free_port();
    let _broker = Mosquitto::on(port);
    // The live view's byte counter tells when the proxy has read what was sent.
    let view = Arc::new(edgetap::proxy::live::LiveView::new(Arc::new(
        RuleSet::builtin(),
    )));
    let px = Proxy::start(
        ProxySettings {
            live: Some(view.clone()),
            ..settings(format!("127.0.0.1:{port}"))
        },
        None,
    )
    .await;
    let mut c = TcpStream::connect(px.addr).await.unwrap();
    c.write_all(&encode::connect("edge")).await.unwrap();
    connack(&mut c).await;
    let p = encode::publish("data/x", &[7u8; 200]);
    // Half a PUBLISH, read by the proxy, then a reset.
    c.write_all(&p[..60]).await.unwrap();
    let read = (encode::connect("edge").len() + 4 + 60) as u64;
    common::wait_until_async(
        Duration::from_secs(20),
        "the proxy to read the CONNECT, the CONNACK and half a PUBLISH",
        || view.counters().bytes >= read,
    )
    .await;
    c.set_zero_linger().unwrap();
    drop(c);
    let mut c2 = TcpStream::connect(px.addr).await.unwrap();
    c2.write_all(&encode::connect("edge")).await.unwrap();
    assert_eq!(connack(&mut c2).await, encode::connack(false));
    drop(c2);
    px.wait_closed(2).await;
    let (out, live) = px.finish().await;
    assert!(
        live.iter()
            .any(|f| f.message.contains("ended inside") || f.message.contains("unfinished")),
        "{live:#?}"
    );
    assert_eq!(out.report.summary.connections, 2);
}

/// Traffic that is not MQTT on the MQTT port: a WebSocket client's HTTP upgrade (a
/// device configured for MQTT over WebSocket, a proxy without --websocket) and
/// random bytes. Each is forwarded as is and named once (the upgrade as another
/// protocol, the noise as a client that did not open with a CONNECT), never as
/// malformed or oversized MQTT; an MQTT client beside them is not accused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_that_is_not_mqtt_is_named_once_and_forwarded() {
    let port = free_port();
    let _broker = Mosquitto::on(port);
    let px = proxy(format!("127.0.0.1:{port}"), None).await;
    let upgrade = "GET /mqtt HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n\
                   Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                   Sec-WebSocket-Protocol: mqtt\r\nSec-WebSocket-Version: 13\r\n\r\n";
    // Bytes no MQTT packet starts with (type 0 is reserved): not a packet, on
    // purpose, so written by hand.
    let mut noise = vec![0x0f, 0x00];
    noise.extend((0..3000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    for bytes in [upgrade.as_bytes(), &noise] {
        let mut c = TcpStream::connect(px.addr).await.unwrap();
        c.write_all(bytes).await.unwrap();
        // mosquitto drops the connection; what it answers (nothing) comes back.
        let mut rest = vec![];
        let _ = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut rest)).await;
    }
    let out = Command::new("mosquitto_pub")
        .args([
            "-p",
            &px.addr.port().to_string(),
            "-t",
            "/v1/E1/device/data",
            "-m",
            "{}",
        ])
        .output()
        .expect("mosquitto_pub (apt-get install mosquitto-clients)");
    assert!(out.status.success(), "{out:?}");
    px.wait_closed(3).await;
    let (out, _live) = px.finish().await;
    let r = out.report;
    assert_eq!(r.summary.connections, 3);
    let rules: Vec<&str> = r.findings.iter().map(|f| f.rule.as_str()).collect();
    assert!(
        !rules.contains(&"mqtt.malformed") && !rules.contains(&"mqtt.oversized"),
        "{rules:?}"
    );
    // The upgrade is another protocol (info: nothing edgetap judges); the noise is
    // an MQTT client that did not open with a CONNECT (error).
    let of =
        |rule: &str| -> Vec<&Finding> { r.findings.iter().filter(|f| f.rule == rule).collect() };
    let http = of("capture.not_decodable");
    assert_eq!(http.len(), 1, "{:#?}", r.findings);
    assert!(
        http[0]
            .message
            .contains("\"GET /mqtt HTTP/1\", an HTTP request (MQTT over WebSocket")
            && http[0].severity == edgetap::finding::Severity::Info,
        "{}",
        http[0].message
    );
    let noise = of("mqtt.connect_first");
    assert_eq!(noise.len(), 1, "{:#?}", r.findings);
    assert!(
        noise[0].message.contains("its first bytes are 0f 00 ")
            && noise[0].message.contains("not MQTT"),
        "{}",
        noise[0].message
    );
    assert_eq!((http[0].conn, noise[0].conn), (Some(1), Some(2)));
    // The MQTT client's message was judged.
    assert_eq!(r.summary.messages, 1);
}

/// Raises the open-file limit to 8192 (or the hard limit): for the whole test
/// process, so it never lowers a higher limit the other tests run with.
fn raise_fd_limit() {
    unsafe {
        let mut l = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut l);
        l.rlim_cur = l.rlim_cur.max(l.rlim_max.min(8192));
        libc::setrlimit(libc::RLIMIT_NOFILE, &l);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_concurrent_connections() {
    raise_fd_limit();
    let port = free_port();
    let _broker = Mosquitto::on(port);
    let dir = temp_dir("store500");
    let px = proxy(
        format!("127.0.0.1:{port}"),
        Some(Store::open(&dir).unwrap()),
    )
    .await;
    let addr = px.addr;
    let n = 500;
    let barrier = Arc::new(tokio::sync::Barrier::new(n));
    let mut tasks = vec![];
    for i in 0..n {
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = TcpStream::connect(addr).await.unwrap();
            c.write_all(&encode::connect(&format!("c{i:04}")))
                .await
                .unwrap();
            let ack = connack(&mut c).await;
            // All 500 are open at once before any leaves. Bounded: a connection
            // that failed would otherwise leave the other 499 waiting for ever.
            tokio::time::timeout(Duration::from_secs(60), barrier.wait())
                .await
                .expect("all 500 connections open within 60 s");
            c.write_all(&encode::disconnect()).await.unwrap();
            ack
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), encode::connack(false));
    }
    px.wait_closed(n).await;
    let (out, _) = px.finish().await;
    assert_eq!(out.report.summary.connections, n as u64);
    // CONNECT, CONNACK, DISCONNECT each.
    assert_eq!(out.report.summary.mqtt_packets, 3 * n as u64);
    let store = out.store.unwrap();
    let meta = store.capture(out.capture.unwrap()).unwrap();
    assert_eq!((meta.connections, meta.packets), (n as u64, 3 * n as u64));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_31_311_and_5_clients_pass_through() {
    let port = free_port();
    let _broker = Mosquitto::on(port);
    let dir = temp_dir("versions");
    let px = proxy(
        format!("127.0.0.1:{port}"),
        Some(Store::open(&dir).unwrap()),
    )
    .await;
    for v in ["mqttv31", "mqttv311", "mqttv5"] {
        let st = tokio::process::Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &px.addr.port().to_string()])
            .args(["-V", v, "-q", "1", "-t", &format!("data/{v}"), "-m", v])
            .args(["-u", "dev", "-P", "s3cret"])
            .status()
            .await
            .expect("mosquitto_pub must be installed (apt-get install mosquitto-clients)");
        assert!(st.success(), "mosquitto_pub -V {v} through the proxy");
    }
    px.wait_closed(3).await;
    let (out, _) = px.finish().await;
    let store = out.store.unwrap();
    let packets: Vec<_> = store
        .packets(out.capture.unwrap())
        .map(|p| p.unwrap())
        .collect();
    let versions: Vec<_> = packets
        .iter()
        .filter(|p| p.packet_type == "CONNECT")
        .map(|p| p.version.clone().unwrap())
        .collect();
    assert_eq!(versions, ["3.1", "3.1.1", "5.0"]);
    let count = |t: &str| packets.iter().filter(|p| p.packet_type == t).count();
    assert_eq!(
        (count("PUBLISH"), count("PUBACK"), count("DISCONNECT")),
        (3, 3, 3)
    );
    // Overwritten before it reached the disk (as many '*' as it had bytes; the
    // store keeps it only with --store-secrets), redacted for output.
    let c = packets.iter().find(|p| p.packet_type == "CONNECT").unwrap();
    assert_eq!(c.password.as_deref(), Some("******"));
    assert_eq!(
        c.redacted().password.as_deref(),
        Some(edgetap::store::REDACTED)
    );
    assert!(!serde_json::to_string(&c.redacted())
        .unwrap()
        .contains("s3cret"));
}

/// Benchmark, not a timed test: `bench/proxy.sh` runs it and prints the numbers.
/// QoS 0 throughput and QoS 1 round-trip latency, straight to mosquitto and through
/// `edgetap proxy` (the binary, recording on), then peak RSS with 1,000 connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; run bench/proxy.sh"]
async fn bench_direct_vs_proxy() {
    raise_fd_limit();
    let n: usize = std::env::var("BENCH_MESSAGES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2_000);
    let port = free_port();
    let _broker = Mosquitto::on(port);
    let dir = temp_dir("bench");
    let pport = free_port();
    let mut px = Command::new(env!("CARGO_BIN_EXE_edgetap"))
        .args(["proxy", "--listen", &format!("127.0.0.1:{pport}")])
        .args([
            "--upstream",
            &format!("127.0.0.1:{port}"),
            "--name",
            "bench",
        ])
        .arg("--store")
        .arg(dir.join("store"))
        // BENCH_MAX_BUFFERED: the proxy's --max-buffered (per-connection budget).
        .args(
            std::env::var("BENCH_MAX_BUFFERED")
                .map(|b| vec!["--max-buffered".to_string(), b])
                .unwrap_or_default(),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    common::wait_until_async(
        Duration::from_secs(10),
        &format!("the proxy to listen on {pport}"),
        || std::net::TcpStream::connect(("127.0.0.1", pport)).is_ok(),
    )
    .await;
    let payload = vec![0x5au8; 1024];
    let mut results = vec![];
    // BENCH_PAIRS direct/proxied pairs, taking turns: on shared cores one run varies
    // by ±10 points with the neighbours' load, so best and median of several count.
    let pairs: usize = std::env::var("BENCH_PAIRS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let order: Vec<(&str, u16)> = (0..pairs)
        .flat_map(|_| [("direct", port), ("proxy", pport)])
        .collect();
    for (label, target) in order {
        // Throughput: N QoS 0 publishes, timed until the subscriber has them all.
        let (sub, mut srx) = client(&format!("sub-{label}"), port);
        wait_for(&mut srx, "CONNACK", |p| matches!(p, Packet::ConnAck(_))).await;
        sub.subscribe("bench/t", QoS::AtMostOnce).await.unwrap();
        wait_for(&mut srx, "SUBACK", |p| matches!(p, Packet::SubAck(_))).await;
        let (publ, mut prx) = client(&format!("pub-{label}"), target);
        wait_for(&mut prx, "CONNACK", |p| matches!(p, Packet::ConnAck(_))).await;
        let t = Instant::now();
        let p2 = publ.clone();
        let pl = payload.clone();
        tokio::spawn(async move {
            for _ in 0..n {
                p2.publish("bench/t", QoS::AtMostOnce, false, pl.clone())
                    .await
                    .unwrap();
            }
        });
        let mut got = 0;
        while got < n {
            match tokio::time::timeout(Duration::from_secs(2), srx.recv()).await {
                Ok(Some(Event::Incoming(Packet::Publish(_)))) => got += 1,
                Ok(Some(_)) => {}
                _ => break,
            }
        }
        let secs = t.elapsed().as_secs_f64();
        let rate = got as f64 / secs;
        // Latency: QoS 1 publish → PUBACK, one at a time.
        let mut lat = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            let t = Instant::now();
            publ.publish("bench/l", QoS::AtLeastOnce, false, payload.clone())
                .await
                .unwrap();
            wait_for(&mut prx, "PUBACK", |p| matches!(p, Packet::PubAck(_))).await;
            lat.push(t.elapsed().as_micros() as u64);
        }
        if std::env::var("BENCH_SLOW").is_ok() {
            let mut idx: Vec<(u64, usize)> = lat.iter().enumerate().map(|(i, l)| (*l, i)).collect();
            idx.sort();
            idx.reverse();
            println!("{label} slowest: {:?}", &idx[..30]);
        }
        lat.sort();
        let p50 = lat[lat.len() / 2];
        let p99 = lat[lat.len() * 99 / 100];
        println!("{label:6}: {got}/{n} msgs in {secs:.3} s = {rate:.0} msg/s; QoS1 RTT p50 {p50} µs p99 {p99} µs");
        results.push((label, rate, p50, p99));
        publ.disconnect().await.ok();
        sub.disconnect().await.ok();
        // The next turn starts once both clients' connections ended (their event
        // streams end with them).
        for rx in [&mut prx, &mut srx] {
            tokio::time::timeout(Duration::from_secs(20), async {
                while rx.recv().await.is_some() {}
            })
            .await
            .expect("the bench clients' connections end");
        }
    }
    let best = |l: &str, f: fn(&(&str, f64, u64, u64)) -> f64| {
        results
            .iter()
            .filter(|r| r.0 == l)
            .map(f)
            .fold(f64::NAN, f64::max)
    };
    let min = |l: &str, f: fn(&(&str, f64, u64, u64)) -> f64| {
        results
            .iter()
            .filter(|r| r.0 == l)
            .map(f)
            .fold(f64::NAN, f64::min)
    };
    let median = |l: &str| {
        let mut v: Vec<f64> = results.iter().filter(|r| r.0 == l).map(|r| r.1).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "throughput ratio proxy/direct: best runs {:.1}%, medians {:.1}% ({pairs} pairs)",
        100.0 * best("proxy", |r| r.1) / best("direct", |r| r.1),
        100.0 * median("proxy") / median("direct")
    );
    println!(
        "added latency (best runs): p50 {:.0} µs, p99 {:.0} µs",
        min("proxy", |r| r.2 as f64) - min("direct", |r| r.2 as f64),
        min("proxy", |r| r.3 as f64) - min("direct", |r| r.3 as f64)
    );
    // Peak RSS with 1,000 connections open through the proxy, each with a PUBLISH.
    let (rss_sub, mut rss_rx) = client("sub-rss", port);
    wait_for(&mut rss_rx, "CONNACK", |p| matches!(p, Packet::ConnAck(_))).await;
    rss_sub
        .subscribe("bench/rss", QoS::AtMostOnce)
        .await
        .unwrap();
    wait_for(&mut rss_rx, "SUBACK", |p| matches!(p, Packet::SubAck(_))).await;
    let mut conns = vec![];
    for i in 0..1000 {
        let mut c = TcpStream::connect(("127.0.0.1", pport)).await.unwrap();
        let mut b = encode::connect(&format!("rss{i}"));
        b.extend(encode::publish("bench/rss", &payload));
        c.write_all(&b).await.unwrap();
        conns.push(c);
    }
    for c in conns.iter_mut() {
        connack(c).await;
    }
    // The peak is read once every PUBLISH went through the proxy.
    for _ in 0..1000 {
        wait_for(&mut rss_rx, "a bench/rss PUBLISH", |p| {
            matches!(p, Packet::Publish(_))
        })
        .await;
    }
    let status = std::fs::read_to_string(format!("/proc/{}/status", px.id())).unwrap();
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM"))
        .unwrap_or("VmHWM ?");
    println!(
        "proxy peak RSS with 1000 connections: {}",
        hwm.trim_start_matches("VmHWM:").trim()
    );
    drop(conns);
    unsafe { libc::kill(px.id() as i32, libc::SIGTERM) };
    let _ = px.wait();
}
