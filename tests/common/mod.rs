//! Helpers shared by the integration tests: free ports, scratch folders, waits for a
//! condition, and a private Debian mosquitto (required: a test that needs it fails
//! when it is missing).
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use edgetap::proxy::ProxyOutcome;
use edgetap::store::Store;

mod proxy;
pub use proxy::*;

/// How often [`wait_until`] looks again.
const POLL: Duration = Duration::from_millis(10);

/// Waits until `cond` holds, looking every [`POLL`]; panics naming `what` (the
/// thing that did not happen) once `limit` has passed. Tests wait for what they
/// need, not for a fixed time.
pub fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        // The poll interval: the wait is for `cond`.
        std::thread::sleep(POLL);
    }
}

/// [`wait_until`] in an async test: the runtime's tasks go on while it waits.
pub async fn wait_until_async(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        // The poll interval: the wait is for `cond`.
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until `child` exits (see [`wait_until`]); kills it when it does not.
pub fn wait_exit(child: &mut Child, limit: Duration, what: &str) -> std::process::ExitStatus {
    /// Kills the child unless it exited: a panicking wait leaves no process behind.
    struct Guard<'a>(&'a mut Child, bool);
    impl Drop for Guard<'_> {
        fn drop(&mut self) {
            if !self.1 {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
    }
    let mut g = Guard(child, false);
    let mut status = None;
    wait_until(limit, what, || {
        status = g.0.try_wait().unwrap();
        status.is_some()
    });
    g.1 = true;
    status.unwrap()
}

/// A port free now, below Linux's ephemeral range (32768-60999): a port the kernel
/// handed out for `bind(0)` can be handed out again, before the test's server binds
/// it, as the source port of some connection of a test running beside it.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let base = std::process::id().wrapping_mul(7919);
    for _ in 0..1000 {
        let n = N.fetch_add(1, Ordering::Relaxed);
        let port = 20_000 + (base.wrapping_add(n.wrapping_mul(104_729)) % 12_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in 20000-31999")
}

/// A fresh, empty folder under the system temp folder.
pub fn temp_dir(tag: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let d = std::env::temp_dir().join(format!("edgetap-{tag}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// mosquitto on 127.0.0.1:`port`, killed on drop. It logs the subscriptions it
/// takes, so that a test can wait for a client to subscribe.
pub struct Mosquitto {
    child: Child,
    pub port: u16,
    log: PathBuf,
}

impl Mosquitto {
    /// Starts mosquitto on `port` and waits until it listens.
    pub fn on(port: u16) -> Mosquitto {
        Self::with(port, "")
    }

    /// Starts mosquitto on `port` with extra listener configuration lines (TLS files…).
    pub fn with(port: u16, extra: &str) -> Mosquitto {
        let dir = temp_dir("mosquitto");
        let conf = dir.join("mosquitto.conf");
        // Written by mosquitto, which started as root runs as user "mosquitto".
        let log = dir.join("mosquitto.log");
        std::fs::write(&log, "").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o666)).unwrap();
        std::fs::write(
            &conf,
            // max_queued_messages 0: mosquitto drops a QoS 1 subscriber's messages
            // past 1,000 queued by default, and a test's subscriber on a busy CI
            // machine falls that far behind (a run counted 2,960 of 3,020 forwarded).
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
                 max_queued_messages 0\nlog_dest file {}\nlog_type error\n\
                 log_type warning\nlog_type notice\nlog_type information\n\
                 log_type subscribe\nlog_type unsubscribe\n{extra}",
                log.display()
            ),
        )
        .unwrap();
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto must be installed (apt-get install mosquitto)");
        let m = Mosquitto { child, port, log };
        wait_until(
            Duration::from_secs(5),
            &format!("mosquitto to listen on {port}"),
            || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
        );
        m
    }

    /// Starts mosquitto on a free port.
    pub fn start() -> Mosquitto {
        Self::on(free_port())
    }

    /// The topic filters clients subscribed to so far, as mosquitto logged them
    /// ("1796631485: CLIENT QOS FILTER").
    pub fn subscriptions(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap()
            .lines()
            .filter_map(|l| {
                let (_, rest) = l.split_once(": ")?;
                let f: Vec<&str> = rest.split(' ').collect();
                (f.len() == 3 && ["0", "1", "2"].contains(&f[1])).then(|| f[2].to_string())
            })
            .collect()
    }

    /// Waits until some client has subscribed to a filter `topic` matches: a
    /// message published on `topic` from then on reaches it.
    pub fn wait_subscribed(&self, topic: &str) {
        wait_until(
            Duration::from_secs(20),
            &format!("a client to subscribe to {topic} on mosquitto"),
            || self.subscriptions().iter().any(|f| topic_matches(f, topic)),
        );
    }
}

/// Whether MQTT topic filter `filter` (with `+` and `#`) matches `topic`.
pub fn topic_matches(filter: &str, topic: &str) -> bool {
    let mut t = topic.split('/');
    for f in filter.split('/') {
        match (f, t.next()) {
            ("#", _) => return true,
            ("+", Some(_)) => {}
            (f, Some(level)) if f == level => {}
            _ => return false,
        }
    }
    t.next().is_none()
}

/// An MQTT client (3.1.1) subscribed to `filter` on 127.0.0.1:`port`, receiving on a
/// thread of its own: it sees what a device or a sim publishes, so that a test can
/// wait for that message.
pub struct Watcher {
    client: rumqttc::Client,
    rx: std::sync::mpsc::Receiver<(String, Vec<u8>)>,
}

impl Watcher {
    /// Returns once the broker acknowledged the subscription.
    pub fn start(port: u16, filter: &str) -> Watcher {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let id = format!(
            "edgetap-test-watch-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let mut o = rumqttc::MqttOptions::new(id, "127.0.0.1", port);
        o.set_keep_alive(Duration::from_secs(30));
        o.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut connection) = rumqttc::Client::new(o, 64);
        client
            .subscribe(filter, rumqttc::QoS::AtLeastOnce)
            .expect("the watcher's SUBSCRIBE is queued");
        let (tx, rx) = std::sync::mpsc::channel();
        let (sub_tx, sub_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use rumqttc::{Event, Packet};
            for e in connection.iter() {
                match e {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if tx.send((p.topic, p.payload.to_vec())).is_err() {
                            break;
                        }
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = sub_tx.send(());
                    }
                    Ok(_) => {}
                    // Disconnected (by drop) or the broker gone: no reconnection.
                    Err(_) => break,
                }
            }
        });
        sub_rx
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("the watcher did not subscribe to {filter} on {port}"));
        Watcher { client, rx }
    }

    /// Waits until a message for which `want(topic, payload)` holds arrives; panics
    /// naming `what` after `limit`.
    pub fn wait_for(&self, limit: Duration, what: &str, mut want: impl FnMut(&str, &[u8]) -> bool) {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok((topic, payload)) if want(&topic, &payload) => return,
                Ok(_) => {}
                Err(e) => panic!("waiting for {what}: {e} after {limit:?}"),
            }
        }
    }

    /// Waits for a message of type `msg_type` (the envelope's "type").
    pub fn wait_for_type(&self, msg_type: &str) {
        self.wait_for(
            Duration::from_secs(20),
            &format!("a {msg_type} message"),
            |_, payload| {
                serde_json::from_slice::<serde_json::Value>(payload)
                    .is_ok_and(|v| v["type"] == msg_type)
            },
        );
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.client.disconnect();
    }
}

/// Waits until the reference responder (`edgetap::sim::platform::respond`) on
/// `broker` answers: it has subscribed. Asks with an EVENT_LINKUP of an edge of its
/// own, again every 200 ms until the answer comes.
pub async fn responder_ready(broker: &str) {
    use edgetap::sim::{next_mid, request, topic, Link, Protocol};
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let probe = format!(
        "PROBE-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let (link, mut rx) = Link::connect(
        broker,
        &format!("{probe}-watch"),
        Protocol::V4,
        &[topic(&probe, "device", "response")],
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    let linkup = request(
        Some(next_mid()),
        "EVENT_LINKUP",
        Some(serde_json::json!({})),
    );
    let linkup = serde_json::to_vec(&linkup).unwrap();
    let limit = Duration::from_secs(20);
    let deadline = Instant::now() + limit;
    loop {
        link.publish(&topic(&probe, "device", "request"), linkup.clone())
            .await
            .unwrap();
        // Before the responder subscribed, the link-up reached no one: ask again.
        if let Ok(m) = tokio::time::timeout(Duration::from_millis(200), rx.recv()).await {
            m.expect("the probe's link is up");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for the reference responder to answer"
        );
    }
    link.disconnect().await;
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// tcpdump on loopback (`tcp port PORT`), for reference captures; stopped with SIGINT
/// once it has written what the test sent ([`Tcpdump::stop`]).
pub struct Tcpdump {
    child: Child,
    file: PathBuf,
    /// Where [`Tcpdump::stop`] sends its markers (UDP, captured too).
    marker_port: u16,
}

pub fn tcpdump(port: u16, file: PathBuf) -> Tcpdump {
    use std::io::BufRead;
    let marker_port = free_port();
    let mut child = Command::new("tcpdump")
        .args([
            "-i",
            "lo",
            "-U",
            "--immediate-mode",
            "-B",
            "65536",
            "-s",
            "0",
            "-w",
        ])
        .arg(&file)
        .arg(format!(
            "tcp port {port} or (udp and dst host 127.0.0.1 and dst port {marker_port})"
        ))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tcpdump must be installed (apt-get install tcpdump)");
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        let n = err.read_line(&mut line).unwrap();
        assert!(n > 0, "tcpdump did not start (needs capture rights on lo)");
        if line.contains("listening on") {
            break;
        }
    }
    std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
    Tcpdump {
        child,
        file,
        marker_port,
    }
}

impl Tcpdump {
    /// Stops tcpdump once it has written every packet sent before: a UDP datagram
    /// sent now (a marker; edgetap skips frames that are not TCP) is in the file
    /// after them. A connection of the capture closed on one side only has packets
    /// still to come (the other side's FIN): then another marker, until none is.
    pub fn stop(mut self) -> PathBuf {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut n = 0u32;
        wait_until(
            Duration::from_secs(30),
            "the capture's half-closed connections to close",
            || {
                n += 1;
                let marker = format!("edgetap-test-marker-{}-{n}", std::process::id());
                udp.send_to(marker.as_bytes(), ("127.0.0.1", self.marker_port))
                    .unwrap();
                wait_until(
                    Duration::from_secs(10),
                    &format!("tcpdump to write marker {n} to {}", self.file.display()),
                    || {
                        std::fs::read(&self.file)
                            .is_ok_and(|b| b.windows(marker.len()).any(|w| w == marker.as_bytes()))
                    },
                );
                half_closed(&self.file) == Some(false)
            },
        );
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let _ = self.child.wait();
        self.file
    }
}

/// Whether a TCP connection of the pcap `file` (Ethernet frames, as tcpdump writes
/// for lo) has a FIN from one side only, and no reset; `None` when the file does
/// not read to its end (a packet being written).
fn half_closed(file: &std::path::Path) -> Option<bool> {
    use std::collections::{HashMap, HashSet};
    let f = std::fs::File::open(file).ok()?;
    let mut r = pcap_file::pcap::PcapReader::new(std::io::BufReader::new(f)).ok()?;
    // Per connection (its two ports): the ports that sent a FIN; reset or not.
    let mut fins: HashMap<(u16, u16), HashSet<u16>> = HashMap::new();
    let mut reset: HashSet<(u16, u16)> = HashSet::new();
    while let Some(p) = r.next_packet() {
        let p = p.ok()?;
        let Ok(s) = etherparse::SlicedPacket::from_ethernet(&p.data) else {
            continue;
        };
        let Some(etherparse::TransportSlice::Tcp(t)) = s.transport else {
            continue;
        };
        let (a, b) = (t.source_port(), t.destination_port());
        let key = (a.min(b), a.max(b));
        if t.rst() {
            reset.insert(key);
        }
        if t.fin() {
            fins.entry(key).or_default().insert(a);
        }
    }
    Some(
        fins.iter()
            .any(|(key, sides)| sides.len() == 1 && !reset.contains(key)),
    )
}

/// Waits until an `edgetap proxy` child (spawned with stderr piped) says it listens
/// on 127.0.0.1:`port`, the line it prints once bound; its stderr is drained from
/// then on. A connect() that succeeds is no such proof: a test's proxy once took a
/// connection check that no proxy saw, and the publish after it was refused.
pub fn wait_proxy_listening(child: &mut Child, port: u16) {
    use std::io::BufRead;
    let err = child.stderr.take().expect("the proxy's stderr is piped");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(err).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let want = format!("edgetap proxy: 127.0.0.1:{port} ");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = vec![];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.starts_with(&want) => return,
            Ok(line) => seen.push(line),
            Err(_) => panic!(
                "the proxy did not say it listens on port {port} within 30 s; its stderr:\n{}",
                seen.join("\n")
            ),
        }
    }
}

/// `mosquitto_pub -l`: each line of `lines` one PUBLISH on `topic`, one connection.
pub fn publish_lines(port: u16, extra: &[&str], topic: &str, lines: &str) {
    use std::io::Write;
    let mut child = Command::new("mosquitto_pub")
        .args(["-p", &port.to_string(), "-t", topic, "-l"])
        .args(extra)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mosquitto_pub must be installed (apt-get install mosquitto-clients)");
    // mosquitto_pub says why it failed on stderr; a broken pipe here is the same
    // failure, seen earlier.
    let _ = child.stdin.take().unwrap().write_all(lines.as_bytes());
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "mosquitto_pub to port {port} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `edgetap sim platform --edge-id EDGE` (with the usual waits and `plan_args`)
/// against `edgetap sim edge` with `edge_args` (faults, job timing), both through
/// `broker`: the plan's output once it ends.
pub fn plan_against_sim_edge(
    broker: &Mosquitto,
    edge: &str,
    plan_args: &[&str],
    edge_args: &[&str],
) -> std::process::Output {
    let addr = format!("127.0.0.1:{}", broker.port);
    let bin = env!("CARGO_BIN_EXE_edgetap");
    let plan = Command::new(bin)
        .args(["sim", "platform", "--broker", &addr, "--edge-id", edge])
        .args([
            "--wait-ms",
            "3000",
            "--edge-wait-ms",
            "3000",
            "--job-timeout",
            "10",
        ])
        .args(plan_args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The plan subscribes first (to its link-up among others); the edge then powers on.
    broker.wait_subscribed(&format!("/v1/{edge}/device/request"));
    let mut sim_edge = Command::new(bin)
        .args(["sim", "edge", "--broker", &addr, "--edge-id", edge])
        .args(edge_args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = plan.wait_with_output().unwrap();
    let _ = sim_edge.kill();
    let _ = sim_edge.wait();
    out
}

/// A proxy's outcome for `n` REP_SYS_STATUS reports that each lack the same table 10
/// fields: every report judged in the final report (complete, however far the live
/// judge fell behind), the same number of table 10 findings for each, and every one
/// recorded as a PUBLISH. Hands back the report, the store and the capture id.
pub fn assert_reports_complete(
    out: ProxyOutcome,
    n: usize,
) -> (edgetap::report::Report, Store, u64) {
    let r = out.report;
    assert_eq!(r.summary.messages, n as u64);
    // Counted in the groups: the report lists only the first findings of a long run.
    let t10: u64 = r
        .groups
        .iter()
        .filter(|g| g.rule == "t10.REP_SYS_STATUS")
        .map(|g| g.count)
        .sum();
    let n64 = n as u64;
    assert!(
        t10 >= n64 && t10 % n64 == 0,
        "{t10} table 10 findings for {n} reports"
    );
    let store = out.store.expect("the proxy recorded into a store");
    let id = out.capture.expect("a capture id");
    let publishes = store
        .packets(id)
        .filter(|p| p.as_ref().unwrap().packet_type == "PUBLISH")
        .count();
    assert_eq!(publishes, n, "PUBLISH packets recorded");
    (r, store, id)
}

/// `edgetap sim edge` against `broker` with the short timings the tests record with
/// (a report every 500 ms, jobs of 300 ms, policies of 100 ms), output discarded,
/// and a `--fault` for each of `faults`. Callers add what else they need.
pub fn sim_edge_command(broker: &str, edge_id: &str, faults: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_edgetap"));
    c.args(["sim", "edge", "--broker", broker, "--edge-id", edge_id])
        .args([
            "--period-ms",
            "500",
            "--job-ms",
            "300",
            "--policy-ms",
            "100",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for f in faults {
        c.args(["--fault", f]);
    }
    c
}

/// A document as the terminal table (assertion messages, text checks).
pub fn table(doc: &edgetap::report::Document) -> String {
    edgetap::report::render(doc, edgetap::report::Format::Table, &Default::default())
}

/// A document as JUnit.
pub fn junit(doc: &edgetap::report::Document) -> String {
    edgetap::report::render(doc, edgetap::report::Format::Junit, &Default::default())
}
