//! The HTML test record and the live view, in a real browser: Debian's headless
//! `chromium` parses each page and dumps its DOM, on traffic made by real tools
//! (mosquitto, tcpdump, mosquitto_pub, the `edgetap` sims and proxy).
//!
//! * `analyze --format html` of a tcpdump capture and `sim platform --format html`:
//!   every clause row, every detection item, one sequence chart per edge, findings
//!   marked on their message, payloads on demand, nothing loaded from anywhere;
//! * `proxy --http`: the same page served live, the JSON API with filters,
//!   `/metrics`, the token, and the refusal of a non-loopback address without one;
//!   then `analyze --capture` of what it recorded, as HTML.
//!
//! These tests FAIL when chromium, mosquitto, mosquitto_pub or tcpdump is missing:
//! `.ci/run` installs them.

use std::io::{Read, Write};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crate::common;

use common::{free_port, sim_edge_command, tcpdump, temp_dir, wait_until, Mosquitto};
use serde_json::Value;

fn edgetap() -> Command {
    Command::new(env!("CARGO_BIN_EXE_edgetap"))
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The DOM headless Chromium builds from `target` (a file path or a URL).
fn dom(target: &str) -> String {
    let profile = temp_dir("chromium");
    let out = Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--dump-dom"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(target)
        .stderr(Stdio::null())
        .output()
        .expect("chromium must be installed (apt-get install chromium)");
    assert!(out.status.success(), "chromium failed on {target}");
    let d = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(d.contains("</html>"), "no DOM from {target}: {d}");
    d
}

fn run(c: &mut Command) -> Output {
    c.output().expect("run edgetap")
}

/// The page asks for nothing over the network: no src/href/url() to http(s), no
/// @import, no script from anywhere.
fn assert_self_contained(page: &str) {
    let lower = page.to_ascii_lowercase();
    for bad in [
        "src=\"http",
        "href=\"http",
        "src='http",
        "href='http",
        "url(http",
        "url(\"http",
        "url('http",
        "@import",
        "<script src",
        "<link",
        "<img",
    ] {
        assert!(
            !lower.contains(bad),
            "the page references a resource: {bad}"
        );
    }
}

fn count(hay: &str, needle: &str) -> usize {
    hay.matches(needle).count()
}

/// Every clause row of the JSON report is a row of the page's clause table, and each
/// edge of the JSON with messages has its chart.
fn assert_clauses_and_charts(page: &str, json: &Value) {
    let clauses = json["clauses"].as_array().unwrap();
    assert!(!clauses.is_empty());
    assert_eq!(
        count(page, "<tr class=\"clause "),
        clauses.len(),
        "clause rows"
    );
    for c in clauses {
        let id = c["clause"].as_str().unwrap();
        let status = c["status"].as_str().unwrap();
        let row = format!("data-clause=\"{id}\"");
        let at = page
            .find(&row)
            .unwrap_or_else(|| panic!("no row for clause {id}"));
        let tail = &page[at..at + page[at..].find("</tr>").unwrap()];
        assert!(
            tail.contains(&format!("<td class=\"status\">{status}</td>")),
            "clause {id} should read {status}: {tail}"
        );
    }
    let edges: Vec<&str> = json["edges"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["messages"].as_u64().unwrap() > 0)
        .map(|e| e["edge_id"].as_str().unwrap())
        .collect();
    assert!(!edges.is_empty());
    assert_eq!(
        count(page, "<section class=\"chart\""),
        edges.len(),
        "charts"
    );
    for e in edges {
        assert!(
            page.contains(&format!(
                "class=\"chart\" id=\"edge-{e}\" data-edge=\"{e}\""
            )),
            "no chart for edge {e}"
        );
    }
}

/// Two sim edges on mosquitto, one answering an upgrade with the wrong code; the
/// platform sim runs its plan against the first while tcpdump records the broker.
#[test]
fn analyze_and_sim_platform_html_render_in_chromium_with_a_chart_per_edge() {
    let broker = Mosquitto::start();
    let dir = temp_dir("html-record");
    let addr = format!("127.0.0.1:{}", broker.port);
    let dump = tcpdump(broker.port, dir.join("run.pcap"));
    let sim_edge = |id: &str, fault: Option<&str>| {
        let mut c = sim_edge_command(&addr, id, fault.as_slice());
        c.args(["--duration-ms", "30000"]);
        Killed(c.spawn().expect("start sim edge"))
    };
    let e1 = sim_edge("HT1", Some("wrong-code"));
    let e2 = sim_edge("HT2", None);
    let plan = run(edgetap()
        .args(["sim", "platform", "--broker", &addr, "--edge-id", "HT1"])
        .args([
            "--edge-wait-ms",
            "2000",
            "--wait-ms",
            "3000",
            "--job-timeout",
            "5",
        ])
        .args(["--format", "html"]));
    drop((e1, e2));
    let pcap = dump.stop();

    // sim platform: its record, with the detection items.
    let plan_file = dir.join("plan.html");
    std::fs::write(&plan_file, &plan.stdout).unwrap();
    assert_eq!(plan.status.code(), Some(1), "the wrong code fails the plan");
    let page = dom(plan_file.to_str().unwrap());
    assert_self_contained(&String::from_utf8_lossy(&plan.stdout));
    assert!(page.contains("id=\"items\""), "no detection items table");
    for (item, ..) in edgetap::sim::platform::ITEMS {
        assert!(
            page.contains(&format!("<td>{item}</td>")),
            "item {item} missing"
        );
    }
    assert!(page.contains("<section class=\"chart\" id=\"edge-HT1\""));

    // analyze: the capture's record.
    let port = broker.port.to_string();
    let json = run(edgetap()
        .args(["analyze", "--format", "json", "--port", &port])
        .arg(&pcap));
    let json: Value = serde_json::from_slice(&json.stdout).expect("analyze JSON");
    let html = run(edgetap()
        .args(["analyze", "--format", "html", "--port", &port])
        .arg(&pcap));
    assert_eq!(
        html.status.code(),
        Some(1),
        "the wrong reply code is an error"
    );
    let text = String::from_utf8(html.stdout).unwrap();
    assert_self_contained(&text);
    let file = dir.join("record.html");
    std::fs::write(&file, &text).unwrap();
    let page = dom(file.to_str().unwrap());
    assert_clauses_and_charts(&page, &json);
    assert!(page.contains("<span class=\"verdict fail\" id=\"verdict\">FAIL</span>"));

    // The wrong code is marked on its arrow (the reply to CMD_SYS_UPGRADE of HT1),
    // with the payload on demand, and the group links to it.
    let f = json["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["rule"] == "reply.code" && f["edge_id"] == "HT1")
        .expect("a reply.code finding on HT1");
    let chart = &page[page.find("id=\"edge-HT1\"").unwrap()..];
    let chart = &chart[..chart.find("</section>").unwrap()];
    let at = chart
        .find(&format!("· pkt {}</div>", f["packet"]))
        .expect("the finding's packet is charted");
    let row_start = chart[..at].rfind("<div class=\"msg ").unwrap();
    let row = &chart[row_start..];
    let row = &row[..row.find("<div class=\"jobs\">").unwrap()];
    assert!(row.contains("<i class=\"mark error\""), "{row}");
    assert!(row.contains("has-error"), "{row}");
    assert!(row.contains(&format!("mid {}", f["mid"])), "{row}");
    assert!(
        row.contains("<details") && row.contains("<pre class=\"payload\">{"),
        "{row}"
    );
    assert!(
        row.contains("CMD_SYS_UPGRADE") && row.contains("[reply.code]"),
        "{row}"
    );
    let id = &row[row.find("id=\"").unwrap() + 4..];
    let id = &id[..id.find('"').unwrap()];
    assert!(
        page.contains(&format!("href=\"#{id}\"")),
        "the group links to {id}"
    );
    // Requests and replies are told apart, and replies name their request.
    assert!(chart.contains("class=\"msg request"));
    assert!(chart.contains("class=\"msg reply"));
    assert!(chart.contains("↩ #"));
    assert!(chart.contains("class=\"job "), "job lifecycles are drawn");

    // Filters apply to the page too: one edge, its chart only.
    let html = run(edgetap()
        .args([
            "analyze", "--format", "html", "--edge", "HT2", "--port", &port,
        ])
        .arg(&pcap));
    let text = String::from_utf8(html.stdout).unwrap();
    assert_eq!(count(&text, "<section class=\"chart\""), 1);
    assert!(text.contains("data-edge=\"HT2\"") && !text.contains("id=\"edge-HT1\""));
    assert!(!text.contains("mark error"), "HT2 is conforming");
}

/// A long capture stays usable: 3,000 messages of one edge (mosquitto_pub -l), all
/// of a vendor type (an info finding each), one broken report in the middle: the
/// chart keeps the start and the neighbourhoods of the first info finding and of the
/// error, and says how many messages it leaves out.
#[test]
fn a_long_capture_charts_the_start_and_the_neighbourhood_of_each_finding() {
    let broker = Mosquitto::start();
    let dir = temp_dir("html-long");
    let dump = tcpdump(broker.port, dir.join("long.pcap"));
    let mut lines = String::new();
    for i in 0..3000 {
        let ts = "2026-12-01 10:00:00";
        if i == 2000 {
            // The one broken report: no param.
            lines.push_str(&format!(
                "{{\"mid\":{i},\"type\":\"REP_SYS_STATUS\",\"timestamp\":\"{ts}\"}}\n"
            ));
        } else {
            lines.push_str(&format!(
                "{{\"mid\":{i},\"type\":\"EVENT_HEARTBEAT\",\"timestamp\":\"{ts}\",\"param\":{{}}}}\n"
            ));
        }
    }
    common::publish_lines(broker.port, &[], "/v1/LONG1/device/data", &lines);
    let pcap = dump.stop();
    let port = broker.port.to_string();
    let out = run(edgetap()
        .args(["analyze", "--format", "html", "--port", &port])
        .arg(&pcap));
    let text = String::from_utf8(out.stdout).unwrap();
    let rows = count(&text, "<div class=\"msg ");
    assert!(rows < 200, "{rows} message rows for 3000 messages");
    assert!(text.contains("message(s) not shown"), "the gap is said");
    assert!(
        text.contains("id=\"edge-LONG1-m2000\""),
        "the broken report is charted"
    );
    assert!(text.contains("id=\"edge-LONG1-m1996\"") && text.contains("id=\"edge-LONG1-m2004\""));
    assert!(!text.contains("id=\"edge-LONG1-m1000\""));
    let file = dir.join("long.html");
    std::fs::write(&file, &text).unwrap();
    let page = dom(file.to_str().unwrap());
    assert_eq!(count(&page, "<section class=\"chart\""), 1);
}

/// A GET over plain TCP: (status, headers, body).
fn get(port: u16, path: &str, auth: Option<&str>) -> (u16, String, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let auth = auth
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = vec![];
    s.read_to_end(&mut raw).unwrap();
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head[9..12].parse().unwrap();
    // hyper answers small bodies with Content-Length; a chunked one is de-chunked.
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    (status, head.to_string(), body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    loop {
        let (len, rest) = s.split_once("\r\n").unwrap();
        let n = usize::from_str_radix(len.trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
}

fn wait_for_port(port: u16) {
    wait_until(
        Duration::from_secs(10),
        &format!("something to listen on {port}"),
        || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
    );
}

/// `edgetap proxy --http`: the live page in Chromium, the API with a filter, the
/// metrics, then the recorded capture as HTML.
#[test]
fn the_proxy_serves_the_record_live_with_a_json_api_and_metrics() {
    let broker = Mosquitto::start();
    let dir = temp_dir("html-live");
    let (listen, http) = (free_port(), free_port());
    let store = dir.join("store");
    let mut proxy = Killed(
        edgetap()
            .args(["proxy", "--listen", &format!("127.0.0.1:{listen}")])
            .args(["--upstream", &format!("127.0.0.1:{}", broker.port)])
            .args(["--http", &format!("127.0.0.1:{http}")])
            .arg("--store")
            .arg(&store)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start edgetap proxy"),
    );
    common::wait_proxy_listening(&mut proxy.0, listen);
    // Two edges through the proxy: one conforming report, one request without
    // type and timestamp.
    common::publish_lines(
        listen,
        &[],
        "/v1/LV1/device/data",
        "{\"mid\":1,\"type\":\"EVENT_HEARTBEAT\",\"timestamp\":\"2026-12-01 10:00:00\",\"param\":{}}\n",
    );
    common::publish_lines(listen, &[], "/v1/LV2/device/request", "{\"mid\":9}\n");
    // The analysis thread publishes its counters within a flush interval.
    let mut captures = Value::Null;
    wait_until(
        Duration::from_secs(10),
        "the live view to count both connections' messages",
        || {
            let (code, _, body) = get(http, "/api/captures", None);
            assert_eq!(code, 200, "{body}");
            captures = serde_json::from_str(&body).unwrap();
            captures[0]["messages"] == 2 && captures[0]["connections"].as_u64().unwrap() >= 2
        },
    );
    assert_eq!(captures[0]["running"], true);
    let capture_id = captures[0]["id"].as_u64().unwrap();

    // The page, in a browser.
    let page = dom(&format!("http://127.0.0.1:{http}/"));
    assert_self_contained(&page);
    assert!(page.contains("edgetap live view"));
    assert!(page.contains("http-equiv=\"refresh\""), "it reloads itself");
    assert!(
        page.contains("id=\"latest\""),
        "the latest findings are listed"
    );
    assert!(page.contains("<tr class=\"latest\">"));
    let (_, _, report) = get(http, "/api/report", None);
    let report: Value = serde_json::from_str(&report).unwrap();
    assert_clauses_and_charts(&page, &report);
    let (_, head, _) = get(http, "/", None);
    assert!(head.contains("default-src 'none'"), "{head}");

    // Findings with the CLI's filters.
    let (code, _, body) = get(http, "/api/findings?edge=LV2&severity=error", None);
    assert_eq!(code, 200);
    let fs: Vec<Value> = serde_json::from_str(&body).unwrap();
    assert!(!fs.is_empty());
    assert!(fs
        .iter()
        .all(|f| f["edge_id"] == "LV2" && f["severity"] == "error"));
    let (_, _, none) = get(http, "/api/findings?edge=LV1&severity=error", None);
    assert_eq!(none.trim(), "[]");
    let (_, _, edges) = get(http, "/api/edges", None);
    let edges: Vec<Value> = serde_json::from_str(&edges).unwrap();
    let lv2 = edges.iter().find(|e| e["edge_id"] == "LV2").unwrap();
    assert_eq!(lv2["errors"].as_u64().unwrap() as usize, fs.len());
    let (_, _, clauses) = get(http, "/api/clauses?clause=5.3", None);
    let clauses: Vec<Value> = serde_json::from_str(&clauses).unwrap();
    assert_eq!(clauses.len(), 1);
    assert_eq!(clauses[0]["status"], "fail");
    let (code, _, body) = get(http, "/api/findings?severity=fatal", None);
    assert_eq!(code, 400);
    assert!(body.contains("severity=fatal"), "{body}");

    // Prometheus.
    let (code, head, metrics) = get(http, "/metrics", None);
    assert_eq!(code, 200);
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    assert!(metrics.contains("edgetap_messages_total 2\n"), "{metrics}");
    let errors = format!(
        "edgetap_findings_total{{severity=\"error\"}} {}\n",
        fs.len()
    );
    assert!(metrics.contains(&errors), "{metrics}");
    let bytes: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("edgetap_bytes_forwarded_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(bytes > 100, "{metrics}");
    assert!(metrics.contains("# TYPE edgetap_judge_lag_seconds gauge"));
    assert!(
        metrics.contains("edgetap_judge_skipped_total 0\n"),
        "{metrics}"
    );

    // What the live view numbers: its chart labels and its findings' packets.
    let (_, _, live_page) = get(http, "/", None);
    let live_labels = pkt_labels(&live_page);
    assert_eq!(live_labels.len(), 2, "{live_page}");
    let live_packets: Vec<u64> = fs.iter().map(|f| f["packet"].as_u64().unwrap()).collect();

    // Stop the proxy (SIGTERM): the store holds the capture; its record as HTML.
    unsafe { libc::kill(proxy.0.id() as i32, libc::SIGTERM) };
    let mut proxy = proxy;
    let _ = proxy.0.wait();
    let out = run(edgetap()
        .args([
            "analyze",
            "--format",
            "html",
            "--capture",
            &capture_id.to_string(),
        ])
        .arg("--store")
        .arg(&store));
    assert_eq!(out.status.code(), Some(1), "LV2's request is an error");
    let text = String::from_utf8(out.stdout).unwrap();
    assert_self_contained(&text);
    assert!(text.contains("<section class=\"chart\" id=\"edge-LV1\""));
    assert!(text.contains("<section class=\"chart\" id=\"edge-LV2\""));
    // One numbering: the live view cited the frames the stored record cites (the
    // export's), for the chart and the findings.
    assert_eq!(pkt_labels(&text), live_labels);
    let out = run(edgetap()
        .args([
            "analyze",
            "--format",
            "json",
            "--edge",
            "LV2",
            "--severity",
            "error",
        ])
        .args(["--capture", &capture_id.to_string()])
        .arg("--store")
        .arg(&store));
    let stored: Value = serde_json::from_slice(&out.stdout).unwrap();
    let stored: Vec<u64> = stored["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["packet"].as_u64().unwrap())
        .collect();
    assert_eq!(stored, live_packets);
}

/// The "pkt N" labels of a page's charts, in order.
fn pkt_labels(page: &str) -> Vec<String> {
    page.split("· pkt ")
        .skip(1)
        .map(|s| s.split('<').next().unwrap().to_string())
        .collect()
}

/// A token guards the live view; a non-loopback address without one is refused.
#[test]
fn the_live_view_needs_a_token_off_loopback() {
    let out = run(edgetap()
        .args([
            "proxy",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            "127.0.0.1:9",
        ])
        .args(["--http", &format!("0.0.0.0:{}", free_port())])
        .arg("--store")
        .arg(temp_dir("html-refused").join("store")));
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not a loopback address") && err.contains("--http-token"),
        "{err}"
    );

    let broker = Mosquitto::start();
    let (listen, http) = (free_port(), free_port());
    let _proxy = Killed(
        edgetap()
            .args(["proxy", "--listen", &format!("127.0.0.1:{listen}")])
            .args(["--upstream", &format!("127.0.0.1:{}", broker.port)])
            .args([
                "--http",
                &format!("0.0.0.0:{http}"),
                "--http-token",
                "s3cret",
            ])
            .arg("--store")
            .arg(temp_dir("html-token").join("store"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start edgetap proxy"),
    );
    wait_for_port(http);
    let (code, head, _) = get(http, "/metrics", None);
    assert_eq!(code, 401);
    assert!(head.contains("www-authenticate: Bearer") || head.contains("WWW-Authenticate: Bearer"));
    assert_eq!(get(http, "/metrics", Some("wrong")).0, 401);
    assert_eq!(get(http, "/metrics", Some("s3cret")).0, 200);
    let (code, _, page) = get(http, "/?token=s3cret", None);
    assert_eq!(code, 200);
    // The page's links carry the token it was opened with (`/` is escaped as &#x2f;).
    assert!(page.contains("metrics?token=s3cret\""), "{page}");
}

/// `replay --format html`: a session recorded by `sim platform --capture` (edgetap's
/// own pcap writer) replayed as the platform to an edge that answers an upgrade with
/// the wrong code: the exchanges, the difference, the live session's clause table
/// and its chart.
#[test]
fn a_replay_record_shows_its_exchanges_and_the_live_sessions_chart() {
    let broker = Mosquitto::start();
    let dir = temp_dir("html-replay");
    let addr = format!("127.0.0.1:{}", broker.port);
    let rec = dir.join("rec.pcap");
    let sim_edge = |id: &str, fault: Option<&str>| {
        let mut c = sim_edge_command(&addr, id, fault.as_slice());
        c.args(["--alarm-ms", "300", "--duration-ms", "30000"]);
        Killed(c.spawn().expect("start sim edge"))
    };
    let recorded = sim_edge("RP1", None);
    let plan = run(edgetap()
        .args(["sim", "platform", "--broker", &addr, "--edge-id", "RP1"])
        .args([
            "--edge-wait-ms",
            "3000",
            "--wait-ms",
            "3000",
            "--job-timeout",
            "5",
        ])
        .arg("--capture")
        .arg(&rec));
    assert_eq!(plan.status.code(), Some(0), "the recorded plan passes");
    drop(recorded);
    // The live edge is online (linked up) before the replay starts.
    let linkup = common::Watcher::start(broker.port, "/v1/RP2/device/request");
    let _live = sim_edge("RP2", Some("wrong-code"));
    linkup.wait_for_type("EVENT_LINKUP");
    let out = run(edgetap()
        .arg("replay")
        .arg(&rec)
        .args(["--as", "platform", "--broker", &addr, "--edge-id", "RP2"])
        .args(["--asap", "--timeout-ms", "2500", "--format", "html"]));
    assert_eq!(out.status.code(), Some(1), "the wrong code is a difference");
    let text = String::from_utf8(out.stdout).unwrap();
    assert_self_contained(&text);
    let file = dir.join("replay.html");
    std::fs::write(&file, &text).unwrap();
    let page = dom(file.to_str().unwrap());
    assert!(page.contains("edgetap replay record"));
    let table = &page[page.find("id=\"exchanges\"").expect("the exchanges table")..];
    let table = &table[..table.find("</table>").unwrap()];
    assert!(
        count(table, "<tr class=\"fail\">") >= 1,
        "a different exchange: {table}"
    );
    assert!(table.contains("CMD_SYS_UPGRADE"), "{table}");
    assert!(
        count(&page, "<tr class=\"clause ") >= 10,
        "the live session's clauses"
    );
    assert!(page.contains("<section class=\"chart\" id=\"edge-RP2\""));
    assert!(
        page.contains("[reply.code]"),
        "the wrong code is marked in the chart"
    );
}
