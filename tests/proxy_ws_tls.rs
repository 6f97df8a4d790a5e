//! The proxy with WebSocket and TLS: rumqttd's WebSocket listener and mosquitto's TLS
//! listener as upstreams, tungstenite and rumqttc as clients, certificates made by
//! openssl at test time. These tests FAIL when mosquitto or openssl is missing.
//!
//! Why rumqttd for WebSocket: Debian's mosquitto 2.0.11 opens a `protocol websockets`
//! listener and then exits with "Unable to start any listening sockets" (its
//! libwebsockets build), so the WebSocket upstream is rumqttd, which edgetap already
//! depends on. rumqttc's own WebSocket transport needs a newer async-tungstenite than
//! the lock holds; the WebSocket client here is tungstenite 0.20 (a dev-dependency
//! already in the lock through rumqttd).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common;

use bytes::BytesMut;
use common::{free_port, temp_dir, wait_until, Mosquitto, Proxy};
use edgetap::finding::Finding;
use edgetap::proxy::tls::{server_config, upstream_config, TlsSettings};
use edgetap::proxy::ProxySettings;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
use tokio::sync::mpsc;

async fn proxy(settings: ProxySettings) -> Proxy {
    Proxy::start(settings, None).await
}

fn settings(upstream: String) -> ProxySettings {
    ProxySettings {
        upstream,
        name: "test".into(),
        ..ProxySettings::default()
    }
}

/// A protocol request missing type and timestamp: judged by the 5.3 rules.
const REQUEST_TOPIC: &str = "/v1/E1/device/request";
const REQUEST: &[u8] = br#"{"mid":1}"#;

fn rules_of(findings: &[Finding]) -> Vec<String> {
    findings.iter().map(|f| f.rule.clone()).collect()
}

// ---------------------------------------------------------------- certificates

/// A CA and a leaf for `localhost` / 127.0.0.1 signed by it, as PEM files in `dir`.
/// (A lone self-signed certificate does not do: rustls's webpki wants a
/// subjectAltName and refuses a CA certificate as the server's own.)
pub(crate) struct Certs {
    pub(crate) ca: PathBuf,
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl must be installed (apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub(crate) fn make_certs() -> Certs {
    let d = temp_dir("certs");
    openssl(
        &d,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=edgetap test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "1",
        ],
    );
    openssl(
        &d,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "k.pem",
            "-out",
            "c.csr",
        ],
    );
    std::fs::write(
        d.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    openssl(
        &d,
        &[
            "x509",
            "-req",
            "-in",
            "c.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "c.pem",
            "-days",
            "1",
            "-extfile",
            "ext.cnf",
        ],
    );
    // mosquitto started as root reads its files as user "mosquitto"; openssl
    // writes keys 0600. A throwaway test key may be world-readable.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(d.join("k.pem"), std::fs::Permissions::from_mode(0o644)).unwrap();
    Certs {
        ca: d.join("ca.pem"),
        cert: d.join("c.pem"),
        key: d.join("k.pem"),
    }
}

/// mosquitto with one TLS listener on 127.0.0.1, killed on drop.
pub(crate) fn tls_mosquitto(c: &Certs) -> Mosquitto {
    Mosquitto::with(
        free_port(),
        &format!(
            "cafile {}\ncertfile {}\nkeyfile {}\n",
            c.ca.display(),
            c.cert.display(),
            c.key.display()
        ),
    )
}

/// A rumqttc client over TLS trusting `ca`, whose events arrive on a channel.
fn tls_client(id: &str, port: u16, ca: &Path) -> (AsyncClient, mpsc::UnboundedReceiver<Event>) {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_max_packet_size(1 << 20, 1 << 20);
    o.set_keep_alive(Duration::from_secs(30));
    o.set_transport(Transport::tls_with_config(TlsConfiguration::Simple {
        ca: std::fs::read(ca).unwrap(),
        alpn: None,
        client_auth: None,
    }));
    let (c, mut ev) = AsyncClient::new(o, 64);
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

async fn wait_publish(rx: &mut mpsc::UnboundedReceiver<Event>, topic: &str) -> Vec<u8> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(Event::Incoming(Packet::Publish(p)))) if p.topic == topic => {
                return p.payload.to_vec()
            }
            Ok(Some(_)) => {}
            other => panic!("no PUBLISH on {topic}: {other:?}"),
        }
    }
}

async fn wait_suback(rx: &mut mpsc::UnboundedReceiver<Event>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(Event::Incoming(Packet::SubAck(_)))) => return,
            Ok(Some(_)) => {}
            other => panic!("no SUBACK: {other:?}"),
        }
    }
}

/// Subscribes and publishes `REQUEST` and a binary payload on one TLS connection
/// through `port`; both come back intact.
async fn round_trip_over_tls(port: u16, ca: &Path) {
    let (c, mut rx) = tls_client("tls-edge", port, ca);
    c.subscribe("#", QoS::AtLeastOnce).await.unwrap();
    wait_suback(&mut rx).await;
    c.publish(REQUEST_TOPIC, QoS::AtLeastOnce, false, REQUEST)
        .await
        .unwrap();
    assert_eq!(wait_publish(&mut rx, REQUEST_TOPIC).await, REQUEST);
    let binary: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    c.publish("data/binary", QoS::AtLeastOnce, false, binary.clone())
        .await
        .unwrap();
    assert_eq!(wait_publish(&mut rx, "data/binary").await, binary);
    c.disconnect().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_not_terminated_is_forwarded_untouched_and_not_decodable() {
    let certs = make_certs();
    let broker = tls_mosquitto(&certs);
    let dir = temp_dir("tls-store");
    let store = edgetap::store::Store::open(&dir.join("store")).unwrap();
    let p = Proxy::start(settings(format!("127.0.0.1:{}", broker.port)), Some(store)).await;
    // The client's TLS goes through to mosquitto: the proxy only forwards.
    round_trip_over_tls(p.addr.port(), &certs.ca).await;
    // The DISCONNECT through before the proxy stops.
    p.wait_closed(1).await;
    let (out, live) = p.finish().await;
    let rules = rules_of(&live);
    assert_eq!(
        rules
            .iter()
            .filter(|r| *r == "capture.not_decodable")
            .count(),
        1,
        "{rules:?}"
    );
    assert!(
        !rules.iter().any(|r| r.starts_with("mqtt.")),
        "TLS bytes were read as MQTT: {rules:?}"
    );
    let f = live
        .iter()
        .find(|f| f.rule == "capture.not_decodable")
        .unwrap();
    assert!(f.message.contains("TLS"), "{}", f.message);
    assert_eq!(out.accepted, 1);
    assert_eq!(out.report.summary.publishes, 0);
    assert_eq!(rules_of(&out.report.findings), rules);

    // Nothing forwarded is lost: the TLS bytes are in the store, both ways, as
    // opaque chunks (never as MQTT data), ...
    use edgetap::store::EventKind;
    let store = out.store.expect("store handed back");
    let id = out.capture.expect("a capture");
    let (mut up, mut down, mut mqtt) = (0usize, 0usize, 0usize);
    for ev in store.events(id) {
        match ev.unwrap().kind {
            EventKind::Opaque { side, bytes } => match side {
                edgetap::finding::Side::Client => up += bytes.len(),
                edgetap::finding::Side::Server => down += bytes.len(),
            },
            EventKind::Data { .. } => mqtt += 1,
            _ => {}
        }
    }
    assert_eq!(mqtt, 0, "TLS stored as MQTT data");
    // The client sent the 70,000-byte payload encrypted; the broker sent it back.
    assert!(up > 70_000 && down > 70_000, "stored {up} up, {down} down");
    // ... a stored capture analysed again reports the flow as the live run did, ...
    let again = edgetap::analyze::stored::analyze_capture(
        &store,
        id,
        std::sync::Arc::new(edgetap::rules::RuleSet::builtin()),
        edgetap::pipeline::Settings::default(),
    )
    .unwrap();
    assert_eq!(rules_of(&again.findings), rules);
    // ... and the export is a TLS session to tshark: records in order, intact.
    let pcapng = dir.join("tls.pcapng");
    edgetap::store::export::export_pcapng(
        &store,
        id,
        std::fs::File::create(&pcapng).unwrap(),
        false,
    )
    .unwrap();
    let out = Command::new("tshark")
        .arg("-r")
        .arg(&pcapng)
        .args(["-d", &format!("tcp.port=={},tls", broker.port)])
        .args([
            "-Y",
            "tls.handshake.type == 1",
            "-T",
            "fields",
            "-e",
            "frame.number",
        ])
        .output()
        .expect("tshark runs (a test dependency)");
    let hellos = String::from_utf8_lossy(&out.stdout).lines().count();
    assert_eq!(
        hellos,
        1,
        "ClientHello in the export: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_terminated_and_reoriginated_is_decoded() {
    let certs = make_certs();
    let broker = tls_mosquitto(&certs);
    let upstream = format!("127.0.0.1:{}", broker.port);
    let mut s = settings(upstream.clone());
    s.tls = TlsSettings {
        accept: Some(server_config(&certs.cert, &certs.key).unwrap()),
        upstream: Some(upstream_config(&upstream, Some(&certs.ca)).unwrap()),
    };
    let p = proxy(s).await;
    round_trip_over_tls(p.addr.port(), &certs.ca).await;
    p.wait_closed(1).await;
    let (out, live) = p.finish().await;
    let rules = rules_of(&live);
    assert!(
        !rules.iter().any(|r| r == "capture.not_decodable"),
        "{rules:?}"
    );
    assert!(!rules.iter().any(|r| r.starts_with("mqtt.")), "{rules:?}");
    // The request's missing type and timestamp are judged from the plaintext.
    assert!(
        live.iter()
            .any(|f| f.clause == "5.3" && f.topic.as_deref() == Some(REQUEST_TOPIC)),
        "{rules:?}"
    );
    let s = &out.report.summary;
    // Two PUBLISHes each way (the broker's deliveries count as legs).
    assert_eq!(s.publishes, 4, "{s:?}");
    assert!(s.messages >= 1, "{s:?}");
}

#[test]
fn bad_tls_files_say_which_file() {
    let d = temp_dir("badtls");
    let junk = d.join("junk.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    let e = server_config(&junk, &junk).unwrap_err().to_string();
    assert!(e.contains("junk.pem") && e.contains("certificate"), "{e}");
    let e = upstream_config("127.0.0.1:8883", Some(&d.join("missing.pem")))
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing.pem"), "{e}");
}

// ---------------------------------------------------------------- WebSocket

/// rumqttd with a WebSocket listener (MQTT 3.1.1), on a thread for the rest of the
/// process (rumqttd has no shutdown).
fn rumqttd_ws() -> SocketAddr {
    let s = edgetap::broker::BrokerSettings::loopback().unwrap();
    let mut cfg = edgetap::broker::config(&s).unwrap();
    let ws: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut server = cfg.v4.as_ref().unwrap()["1"].clone();
    server.name = "ws-1".into();
    server.listen = ws;
    cfg.ws = Some([("1".to_string(), server)].into_iter().collect());
    std::thread::spawn(move || {
        let _ = rumqttd::Broker::new(cfg).start();
    });
    wait_until(
        Duration::from_secs(5),
        &format!("rumqttd to listen on {ws}"),
        || std::net::TcpStream::connect(ws).is_ok(),
    );
    ws
}

type Ws = tungstenite::WebSocket<std::net::TcpStream>;

/// A WebSocket connection with subprotocol `mqtt` (tungstenite masks client frames).
fn ws_connect(addr: SocketAddr) -> Ws {
    use tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://{addr}/mqtt").into_client_request().unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "mqtt".parse().unwrap());
    let tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let (ws, resp) = tungstenite::client::client(req, tcp).expect("WebSocket handshake");
    assert_eq!(resp.status(), 101);
    ws
}

fn send(ws: &mut Ws, p: impl FnOnce(&mut BytesMut)) {
    let mut b = BytesMut::new();
    p(&mut b);
    ws.send(tungstenite::Message::Binary(b.to_vec())).unwrap();
}

/// MQTT packets from the binary messages, until `want` says stop.
fn recv_until(
    ws: &mut Ws,
    buf: &mut BytesMut,
    mut want: impl FnMut(&rumqttc::mqttbytes::v4::Packet) -> bool,
) {
    loop {
        while let Ok(p) = rumqttc::mqttbytes::v4::read(buf, 1 << 20) {
            if want(&p) {
                return;
            }
        }
        match ws.read().expect("WebSocket message") {
            tungstenite::Message::Binary(b) => buf.extend_from_slice(&b),
            tungstenite::Message::Ping(_) | tungstenite::Message::Pong(_) => {}
            other => panic!("unexpected WebSocket message {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_mqtt_is_forwarded_and_decoded() {
    let upstream = rumqttd_ws();
    let mut s = settings(upstream.to_string());
    s.websocket = true;
    let p = proxy(s).await;
    ws_round_trip(p.addr).await;
    p.wait_closed(1).await;
    let (out, live) = p.finish().await;
    let rules = rules_of(&live);
    assert!(!rules.iter().any(|r| r.starts_with("mqtt.")), "{rules:?}");
    assert!(
        !rules.iter().any(|r| r == "capture.not_decodable"),
        "{rules:?}"
    );
    // The request on /v1/E1/device/request was judged: type and timestamp missing.
    assert!(
        live.iter()
            .any(|f| f.clause == "5.3" && f.topic.as_deref() == Some(REQUEST_TOPIC)),
        "{rules:?}"
    );
    let s = &out.report.summary;
    // CONNECT, CONNACK, SUBSCRIBE, SUBACK, 2 × PUBLISH each way, DISCONNECT.
    assert!(s.mqtt_packets >= 9, "{s:?}");
    assert_eq!(s.publishes, 4, "{s:?}");
    assert!(s.messages >= 1, "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_mqtt_through_a_websocket_proxy_is_not_decodable() {
    // A device that speaks plain MQTT to a proxy started with --websocket: forwarded,
    // reported once, not read as frames.
    let broker = common::Mosquitto::start();
    let mut s = settings(format!("127.0.0.1:{}", broker.port));
    s.websocket = true;
    let p = proxy(s).await;
    let out = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &p.addr.port().to_string()])
        .args(["-t", "data/x", "-m", "hello", "-i", "plain"])
        .output()
        .expect("mosquitto_pub must be installed (apt-get install mosquitto-clients)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_out, live) = p.finish().await;
    let nd: Vec<_> = live
        .iter()
        .filter(|f| f.rule == "capture.not_decodable")
        .collect();
    assert_eq!(nd.len(), 2, "{:?}", rules_of(&live));
    assert!(nd[0].message.contains("WebSocket"), "{}", nd[0].message);
}

/// Over WebSocket through `addr`: CONNECT, SUBSCRIBE, a ping, then `REQUEST` and a
/// 70,000-byte binary payload, each coming back intact; DISCONNECT.
async fn ws_round_trip(addr: SocketAddr) {
    use rumqttc::mqttbytes::v4::{Connect, Packet as P, Publish, Subscribe};
    let binary: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    let b2 = binary.clone();
    tokio::task::spawn_blocking(move || {
        let mut ws = ws_connect(addr);
        let mut buf = BytesMut::new();
        send(&mut ws, |b| {
            Connect::new("ws-edge").write(b).unwrap();
        });
        recv_until(&mut ws, &mut buf, |p| matches!(p, P::ConnAck(_)));
        send(&mut ws, |b| {
            Subscribe::new("#", rumqttc::mqttbytes::QoS::AtMostOnce)
                .write(b)
                .unwrap();
        });
        recv_until(&mut ws, &mut buf, |p| matches!(p, P::SubAck(_)));
        // A ping between the data frames: the de-framer drops it.
        ws.send(tungstenite::Message::Ping(b"x".to_vec())).unwrap();
        for (topic, payload) in [(REQUEST_TOPIC, REQUEST.to_vec()), ("data/binary", b2)] {
            send(&mut ws, |b| {
                Publish::new(topic, rumqttc::mqttbytes::QoS::AtMostOnce, payload.clone())
                    .write(b)
                    .unwrap();
            });
            let mut got = None;
            recv_until(&mut ws, &mut buf, |p| match p {
                P::Publish(p) if p.topic == topic => {
                    got = Some(p.payload.to_vec());
                    true
                }
                _ => false,
            });
            assert_eq!(got.as_deref(), Some(&payload[..]), "payload of {topic}");
        }
        send(&mut ws, |b| {
            rumqttc::mqttbytes::v4::Disconnect.write(b).unwrap();
        });
        let _ = ws.close(None);
        let _ = ws.flush();
    })
    .await
    .unwrap();
}

/// `edgetap proxy --websocket` through the real binary, in front of rumqttd's
/// WebSocket listener: frames relayed, MQTT decoded from them, judged on SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_websocket_flag_relays_and_decodes() {
    let upstream = rumqttd_ws();
    let dir = temp_dir("cli-ws");
    let px = CliProxy::start(|c| {
        c.arg("--websocket")
            .args(["--upstream", &upstream.to_string(), "--store"])
            .arg(dir.join("store"));
    });
    ws_round_trip(SocketAddr::from(([127, 0, 0, 1], px.port()))).await;
    px.wait_closed(1).await;
    px.stop().judged_the_plaintext();
}

/// The TLS flags end to end through the real binary: `edgetap proxy --tls-cert
/// --tls-key --upstream-tls --upstream-ca` in front of mosquitto on TLS; a TLS client
/// round-trips through it, and on SIGTERM the proxy prints what it judged from the
/// plaintext.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_tls_flags_terminate_and_reoriginate() {
    let certs = make_certs();
    let broker = tls_mosquitto(&certs);
    let dir = temp_dir("cli-tls");
    let px = CliProxy::start(|c| {
        c.args(["--upstream", &format!("127.0.0.1:{}", broker.port)])
            .arg("--tls-cert")
            .arg(&certs.cert)
            .arg("--tls-key")
            .arg(&certs.key)
            .arg("--upstream-tls")
            .arg("--upstream-ca")
            .arg(&certs.ca)
            .arg("--store")
            .arg(dir.join("store"));
    });
    round_trip_over_tls(px.port(), &certs.ca).await;
    px.wait_closed(1).await;
    px.stop().judged_the_plaintext();
}

/// `edgetap proxy --listen 127.0.0.1:PORT …`, the real binary, for the CLI tests.
struct CliProxy(common::ProxyProcess);

impl CliProxy {
    /// Starts it with the arguments `args` adds, and waits until it listens.
    fn start(args: impl FnOnce(&mut Command)) -> CliProxy {
        CliProxy(common::ProxyProcess::start(args))
    }

    fn port(&self) -> u16 {
        self.0.port
    }

    /// Waits until it has seen `n` connections close.
    async fn wait_closed(&self, n: usize) {
        tokio::task::block_in_place(|| self.0.wait_closed(n))
    }

    /// SIGTERM, as an operator stops it; its exit code must say "findings" or "none".
    fn stop(self) -> CliOutput {
        let (status, stdout, stderr) = self.0.stop();
        let o = CliOutput { stdout, stderr };
        assert!(
            matches!(status.code(), Some(0) | Some(1)),
            "exit {status:?}\n{}",
            o.stderr
        );
        o
    }
}

struct CliOutput {
    stdout: String,
    stderr: String,
}

impl CliOutput {
    /// The session `REQUEST` came in readable: judged by the 5.3 envelope rule (no
    /// type, no timestamp), with the clause table, and nothing read as garbage.
    fn judged_the_plaintext(&self) {
        let (stdout, stderr) = (&self.stdout, &self.stderr);
        assert!(
            stdout.contains("[envelope.request]") && stdout.contains("edge E1 mid 1"),
            "stdout:\n{stdout}\nstderr:\n{stderr}"
        );
        assert!(stdout.contains("│ clause │"), "no clause table:\n{stdout}");
        assert!(!stdout.contains("not_decodable"), "{stdout}");
        assert!(!stdout.contains("mqtt.malformed"), "{stdout}");
    }
}

/// A device that ends its TLS session by closing TCP without close_notify has closed
/// its side, like a FIN: the proxy mirrors a close, not a reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_peer_closing_without_close_notify_is_a_close() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let certs = make_certs();
    let broker = Mosquitto::on(free_port());
    let mut s = settings(format!("127.0.0.1:{}", broker.port));
    s.tls = TlsSettings {
        accept: Some(server_config(&certs.cert, &certs.key).unwrap()),
        upstream: None,
    };
    let dir = temp_dir("tls-eof");
    let store = edgetap::store::Store::open(&dir.join("store")).unwrap();
    let p = Proxy::start(s, Some(store)).await;
    // The proxy's own client-side TLS setup, pointed at the proxy.
    let client = upstream_config(&p.addr.to_string(), Some(&certs.ca)).unwrap();
    let tcp = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(client.config)
        .connect(client.name, tcp)
        .await
        .expect("TLS handshake with the proxy");
    tls.write_all(&edgetap::mqtt::encode::connect("no-notify"))
        .await
        .unwrap();
    let mut connack = [0u8; 4];
    tls.read_exact(&mut connack).await.unwrap();
    assert_eq!(connack[0], 0x20, "CONNACK");
    // Close the TCP side under the TLS session: FIN, no close_notify.
    let (mut tcp, _) = tls.into_inner();
    tcp.shutdown().await.unwrap();
    let mut rest = vec![];
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut rest)).await;
    let (out, _) = p.finish().await;
    let store = out.store.expect("store handed back");
    let ends: Vec<String> = store
        .events(out.capture.expect("a capture"))
        .filter_map(|e| match e.unwrap().kind {
            edgetap::store::EventKind::End { how } => Some(how),
            _ => None,
        })
        .collect();
    assert_eq!(ends, ["closed"], "how the connection ended");
}

/// Field devices connect by IP address: `mosquitto_pub -h 127.0.0.1 --cafile` sends
/// "127.0.0.1" as SNI (RFC 6066 does not allow it; OpenSSL clients do it anyway).
/// The proxy terminating TLS accepts it, forwards and judges the plaintext.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_termination_accepts_a_client_connecting_by_ip_address() {
    let certs = make_certs();
    let broker = Mosquitto::start();
    let dir = temp_dir("tls-ip");
    let px = CliProxy::start(|c| {
        c.args(["--upstream", &format!("127.0.0.1:{}", broker.port)])
            .arg("--tls-cert")
            .arg(&certs.cert)
            .arg("--tls-key")
            .arg(&certs.key)
            .arg("--store")
            .arg(dir.join("store"));
    });
    let out = tokio::process::Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &px.port().to_string()])
        .arg("--cafile")
        .arg(&certs.ca)
        .args(["-q", "1", "-t", REQUEST_TOPIC, "-m"])
        .arg(std::str::from_utf8(REQUEST).unwrap())
        .output()
        .await
        .expect("mosquitto_pub must be installed (apt-get install mosquitto-clients)");
    if out.status.success() {
        px.wait_closed(1).await;
    }
    let o = px.stop();
    assert!(
        out.status.success(),
        "mosquitto_pub by IP through the TLS proxy: {}\nproxy stderr:\n{}",
        String::from_utf8_lossy(&out.stderr),
        o.stderr
    );
    assert!(!o.stderr.contains("SNI"), "{}", o.stderr);
    o.judged_the_plaintext();
}
