//! The live view (`proxy --http`) cannot hurt the MQTT side, and the proxy lives
//! within a field laptop's open-file limit: half-sent requests are dropped, a
//! request without the token holds nothing, a flood of silent connections neither
//! takes the devices' descriptors nor locks the operator out, and the soft
//! RLIMIT_NOFILE is raised at start.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use edgetap::proxy::http::{serve, HttpLimits};
use edgetap::proxy::live::LiveView;
use edgetap::rules::RuleSet;

use crate::common::{self, wait_until, Mosquitto, ProxyProcess, Watcher};

/// The live view's server on a free loopback port with `limits` (and `token`),
/// on a runtime of its own; stopped on drop.
struct LiveServer {
    port: u16,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _rt: tokio::runtime::Runtime,
}

impl LiveServer {
    fn start(limits: HttpLimits, token: Option<&str>) -> LiveServer {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let view = Arc::new(LiveView::new(Arc::new(RuleSet::builtin())));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let token = token.map(String::from);
        rt.spawn(async move {
            let stopped = async {
                let _ = stopped.await;
            };
            serve(listener, view, token, limits, stopped).await.unwrap();
        });
        LiveServer {
            port,
            stop: Some(stop),
            _rt: rt,
        }
    }
}

impl Drop for LiveServer {
    fn drop(&mut self) {
        let _ = self.stop.take().map(|s| s.send(()));
    }
}

/// A request whose head never ends (no empty line), as a slowloris client sends.
fn half_sent(port: u16) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    // (The server may have given it up already: a failed write is that.)
    let _ = s.write_all(b"GET /api/captures HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    s
}

/// Reads until the server closes: `(what it sent, how long it took)`; panics after
/// `limit`.
fn read_until_closed(s: &mut TcpStream, limit: Duration) -> (String, Duration) {
    let t = Instant::now();
    s.set_read_timeout(Some(limit)).unwrap();
    let mut out = vec![];
    match s.read_to_end(&mut out) {
        Ok(_) => {}
        // A reset is a close too.
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the server did not close within {limit:?}: {e}"),
    }
    (String::from_utf8_lossy(&out).into_owned(), t.elapsed())
}

/// One whole GET, `token` as a bearer: the status line's code and the response.
fn get(port: u16, path: &str, token: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}\r\n").unwrap();
    let (raw, _) = read_until_closed(&mut s, Duration::from_secs(20));
    let code = raw.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, raw)
}

#[test]
fn a_half_sent_request_is_dropped_at_the_header_timeout() {
    let limits = HttpLimits {
        header_timeout: Duration::from_millis(500),
        ..HttpLimits::default()
    };
    let live = LiveServer::start(limits, None);
    let mut slow = half_sent(live.port);
    // A whole request meanwhile is answered.
    assert_eq!(get(live.port, "/api/captures", None).0, 200);
    let (sent, took) = read_until_closed(&mut slow, Duration::from_secs(20));
    assert_eq!(sent, "", "closed unanswered");
    assert!(
        took >= Duration::from_millis(400),
        "not before the timeout: {took:?}"
    );
}

#[test]
fn a_request_without_the_token_is_refused_at_once_and_holds_nothing() {
    let limits = HttpLimits {
        max_connections: 2,
        ..HttpLimits::default()
    };
    let live = LiveServer::start(limits, Some("s3cret"));
    // Refused as soon as its head is read, and the connection closed (not held
    // for the header timeout of 5 s, nor kept alive).
    let t = Instant::now();
    let (code, raw) = get(live.port, "/api/report", None);
    assert_eq!(code, 401, "{raw}");
    assert!(raw.contains("WWW-Authenticate: Bearer") || raw.contains("www-authenticate: Bearer"));
    let (code, _) = get(live.port, "/api/report", Some("wrong!"));
    assert_eq!(code, 401);
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
    // Both slots taken by connections that never send a request: the one with the
    // token still gets in (the oldest silent one gives way) and is answered.
    let mut silent1 = TcpStream::connect(("127.0.0.1", live.port)).unwrap();
    let _silent2 = TcpStream::connect(("127.0.0.1", live.port)).unwrap();
    let (code, raw) = get(live.port, "/api/captures", Some("s3cret"));
    assert_eq!(code, 200, "{raw}");
    let (sent, took) = read_until_closed(&mut silent1, Duration::from_secs(20));
    assert_eq!(sent, "");
    assert!(
        took < Duration::from_secs(4),
        "given way, not timed out: {took:?}"
    );
}

/// The attack: 2,000 half-sent requests against `--http` while the proxy
/// runs under `ulimit -n 1024` (soft and hard). The live view holds at most its
/// cap; a device connects through the proxy, gets its CONNACK, and its message
/// reaches the broker.
#[test]
fn two_thousand_half_open_http_connections_under_ulimit_1024_do_not_stop_a_device() {
    let n = 2000;
    // The test itself holds 2,000 sockets.
    let mine = edgetap::proxy::fds::raise_nofile().unwrap();
    assert!(
        mine.soft >= n + 200,
        "this test needs an open-file limit of {} (it is {}; raise the hard limit)",
        n + 200,
        mine.soft
    );
    let broker = Mosquitto::start();
    let dir = common::temp_dir("live-flood");
    let http = common::free_port();
    let proxy = ProxyProcess::start_after("ulimit -n 1024", |c| {
        c.args(["--upstream", &format!("127.0.0.1:{}", broker.port)])
            .args(["--http", &format!("127.0.0.1:{http}")])
            .arg("--store")
            .arg(dir.join("store"));
    });
    // The open-file limit cannot hold --max-connections 2048: said, and fitted.
    proxy.stderr.wait_for(
        Duration::from_secs(10),
        "the warning that --max-connections exceeds the open-file limit",
        |t| t.contains("--max-connections 2048 needs about") && t.contains("at most 448"),
    );
    let watcher = Watcher::start(broker.port, "/v1/FLOOD1/#");

    let mut held = Vec::with_capacity(n as usize);
    for _ in 0..n {
        held.push(half_sent(http));
    }
    let open_files = || {
        std::fs::read_dir(format!("/proc/{}/fd", proxy.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    wait_until(
        Duration::from_secs(20),
        "the live view to give up silent connections past its cap",
        || {
            proxy
                .stderr
                .text()
                .contains("given up for newer ones before sending a request")
        },
    );
    assert!(
        open_files() < 400,
        "the proxy holds {} descriptors",
        open_files()
    );

    // The device, during the flood: CONNACK (mosquitto_pub succeeds) and the
    // message forwarded.
    common::publish_lines(
        proxy.port,
        &["-i", "flood-device", "-q", "1"],
        "/v1/FLOOD1/device/data",
        "{\"mid\":1,\"type\":\"EVENT_HEARTBEAT\",\"timestamp\":\"2026-12-01 10:00:00\",\"param\":{}}\n",
    );
    watcher.wait_for(
        Duration::from_secs(20),
        "the device's message through the proxy",
        |topic, payload| topic == "/v1/FLOOD1/device/data" && payload.starts_with(b"{\"mid\":1,"),
    );
    // Still refused in bulk, not line by line.
    let said = proxy.stderr.text();
    let lines = said
        .lines()
        .filter(|l| l.contains("live view (--http)"))
        .count();
    assert!(lines <= 5, "{lines} live-view warning lines:\n{said}");
    assert!(!said.contains("Too many open files"), "{said}");
    drop(held);
    let (_, out, _) = proxy.stop();
    assert!(out.contains("CONNECT: MQTT"), "{out}");
}

#[test]
fn the_soft_open_file_limit_is_raised_to_the_hard_one_at_start() {
    let (_, hard) = edgetap::proxy::fds::nofile().unwrap();
    assert!(hard > 256, "the hard limit here is {hard}");
    let broker = Mosquitto::start();
    let dir = common::temp_dir("nofile");
    let proxy = ProxyProcess::start_after("ulimit -S -n 256", |c| {
        c.args(["--upstream", &format!("127.0.0.1:{}", broker.port)])
            .arg("--store")
            .arg(dir.join("store"));
    });
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", proxy.pid())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let nums: Vec<&str> = line.split_whitespace().skip(3).take(2).collect();
    let hard_s = if hard == u64::MAX {
        "unlimited".to_string()
    } else {
        hard.to_string()
    };
    assert_eq!(nums, [hard_s.as_str(), hard_s.as_str()], "{line}");
    // Enough for the default --max-connections, or said.
    let said = proxy.stderr.text();
    assert_eq!(
        said.contains("--max-connections 2048 needs"),
        hard < 2048 * 2 + 64,
        "{said}"
    );
}
