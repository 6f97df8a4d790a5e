//! The filters and listing of `analyze` (`--edge`, `--severity`, `--rule`,
//! `--clause`, `--each`) shape the final reports of `proxy` and `sim platform` too;
//! `--disable` switches a rule off there as everywhere.

use std::io::Read as _;
use std::process::{Command, Stdio};

use crate::common;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_edgetap")
}

/// Stops a spawned `edgetap proxy` as a service manager does (SIGTERM): its exit
/// status and what it printed on stdout (the final report).
fn stop(proxy: &mut std::process::Child) -> (std::process::ExitStatus, String) {
    unsafe { libc::kill(proxy.id() as i32, libc::SIGTERM) };
    let mut out = String::new();
    proxy
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    (proxy.wait().unwrap(), out)
}

/// `edgetap proxy` toward `broker`, recording into `store`, with `extra` flags,
/// listening.
fn proxy_into(broker: u16, store: &std::path::Path, extra: &[&str]) -> common::ProxyProcess {
    common::ProxyProcess::start(|c| {
        c.args(["--upstream", &format!("127.0.0.1:{broker}")])
            .arg("--store")
            .arg(store)
            .args(extra);
    })
}

#[test]
fn sim_platform_report_takes_the_filters_and_each() {
    let m = common::Mosquitto::start();
    let out = common::plan_against_sim_edge(
        &m,
        "SHOWN1",
        &["--rule", "reply.code", "--each"],
        &[
            "--fault",
            "wrong-code",
            "--fault",
            "missing-field",
            "--job-ms",
            "300",
            "--policy-ms",
            "100",
        ],
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("filtered by --rule reply.code:"), "{table}");
    assert!(table.contains("[reply.code]"), "{table}");
    // --each: one line per finding under "Findings:", not the grouped heading; the
    // table 13 finding of missing-field is left out (the plan's items keep it).
    let findings = &table[table.find("\nFindings:\n").expect("--each lists findings")..];
    let findings = &findings[..findings.find("\nBasis").unwrap()];
    assert!(findings.contains("[reply.code]"), "{table}");
    assert!(!findings.contains("[t13."), "{table}");
    assert!(table.contains("1 exchange as expected"), "{table}");
    assert!(table.contains("Detection items"), "{table}");
}

#[test]
fn the_proxy_final_report_takes_the_filters() {
    let m = common::Mosquitto::start();
    let store = common::temp_dir("shown-proxy").join("store");
    let extra = ["--severity", "error", "--disable", "topic.missing_slash"];
    let proxy = proxy_into(m.port, &store, &extra);
    let port = proxy.port;
    let ts = edgetap::sim::cst_now();
    // An error (container a number, table 36), and a warning (no leading slash).
    common::publish_lines(
        port,
        &["-i", "platform"],
        "/v1/P1/container/command",
        &format!(
            "{{\"mid\":1000000000020035,\"type\":\"CMD_CON_START\",\"timestamp\":\"{ts}\",\"param\":{{\"container\":1}}}}\n"
        ),
    );
    common::publish_lines(
        port,
        &["-i", "edge"],
        "v1/P1/device/request",
        &format!("{{\"mid\":1000000000020036,\"type\":\"EVENT_LINKUP\",\"timestamp\":\"{ts}\"}}\n"),
    );
    proxy.wait_closed(2);
    let (status, out, _) = proxy.stop();
    assert_eq!(status.code(), Some(1), "{out}");
    let report = &out[out.find("edgetap test record").expect("the final report")..];
    assert!(report.contains("[t36.CMD_CON_START]"), "{report}");
    assert!(report.contains("filtered by --severity error"), "{report}");
    assert!(!report.contains("[topic.missing_slash]"), "{report}");
}

/// A proxy stopped before any protocol message came through proves nothing: exit 3
/// as `analyze`, the reason on stderr and in the report (here: no connection at all).
#[test]
fn a_proxy_that_judged_nothing_exits_3_saying_why() {
    use std::io::BufRead as _;
    let m = common::Mosquitto::start();
    let port = common::free_port();
    let mut proxy = Command::new(bin())
        .args(["proxy", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--upstream", &format!("127.0.0.1:{}", m.port)])
        .arg("--store")
        .arg(common::temp_dir("judged-nothing").join("store"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = std::io::BufReader::new(proxy.stderr.take().unwrap());
    let mut first = String::new();
    err.read_line(&mut first).unwrap();
    assert!(
        first.starts_with(&format!("edgetap proxy: 127.0.0.1:{port} ")),
        "{first}"
    );
    let (status, out) = stop(&mut proxy);
    let mut rest = String::new();
    err.read_to_string(&mut rest).unwrap();
    assert_eq!(status.code(), Some(3), "{out}\n{rest}");
    assert!(!rest.contains("panicked"), "{rest}");
    assert!(
        rest.contains("nothing judged") && rest.contains("no connection came through the proxy"),
        "{rest}"
    );
    assert!(out.contains("nothing judged"), "{out}");
}

/// One numbering: the proxy's final report cites the frame numbers of the capture's
/// `captures export`, as `analyze --capture` and `captures show` do (it counted
/// stored events, which are fewer: an opening is three frames of the export).
#[test]
fn the_proxy_final_report_cites_the_frames_analyze_capture_cites() {
    let m = common::Mosquitto::start();
    let store = common::temp_dir("numbering-proxy").join("store");
    let proxy = proxy_into(m.port, &store, &["--each", "--rule", "t36.CMD_CON_START"]);
    let port = proxy.port;
    let ts = edgetap::sim::cst_now();
    common::publish_lines(
        port,
        &["-i", "platform"],
        "/v1/P2/container/command",
        &format!(
            "{{\"mid\":1000000000020035,\"type\":\"CMD_CON_START\",\"timestamp\":\"{ts}\",\"param\":{{\"container\":1}}}}\n"
        ),
    );
    proxy.wait_closed(1);
    let (_, out, _) = proxy.stop();
    let report = &out[out.find("edgetap test record").expect("the final report")..];
    let at = report
        .find("[t36.CMD_CON_START] packet ")
        .expect("the finding")
        + 27;
    let proxy_packet: u64 = report[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let analyzed = Command::new(bin())
        .args(["analyze", "--capture", "1", "--format", "json", "--store"])
        .arg(&store)
        .output()
        .unwrap();
    let r: serde_json::Value = serde_json::from_slice(&analyzed.stdout).unwrap();
    let f = r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["rule"] == "t36.CMD_CON_START")
        .expect("analyze --capture finds it too");
    assert_eq!(f["packet"], proxy_packet, "{out}");
}
