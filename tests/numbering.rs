//! One numbering: a finding names its input file (with several inputs) and the frame
//! number Wireshark shows for it; for a stored capture, the frame number its pcapng
//! export carries; JSON carries RFC 3339 time (with the `--tz` offset) beside the
//! microseconds. Checked with tshark. And `captures show --payloads` prints a stored
//! capture's messages with each connection's client id, credentials redacted.

use std::path::Path;
use std::process::Command;

use edgetap::proxy::ProxySettings;
use edgetap::store::Store;
use serde_json::Value;

use crate::common;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_edgetap")
}

fn edgetap(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(bin()).args(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The MQTT PUBLISH payload of frame `n` of `file` as tshark decodes it (the broker
/// port `port` declared MQTT), as text.
fn tshark_payload(file: &str, n: u64, port: u16) -> String {
    let out = Command::new("tshark")
        .args(["-r", file, "-Y", &format!("frame.number=={n}")])
        .args(["-d", &format!("tcp.port=={port},mqtt")])
        .args(["-T", "fields", "-e", "mqtt.msg", "-e", "frame.comment"])
        .output()
        .expect("tshark must be installed");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut fields = text.trim_end_matches('\n').splitn(2, '\t');
    let hex = fields.next().unwrap_or("").split(',').next().unwrap_or("");
    let bytes: Vec<u8> = (0..hex.len() / 2)
        .filter_map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok())
        .collect();
    format!(
        "{}\t{}",
        String::from_utf8_lossy(&bytes),
        fields.next().unwrap_or("")
    )
}

fn repo(p: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(p)
        .display()
        .to_string()
}

#[test]
fn findings_of_several_files_name_the_file_and_the_frame_tshark_shows() {
    let a = repo("captures/bad-schema.pcap");
    let b = repo("captures/bad-pairing.pcap");
    let (_, out, err) = edgetap(&["analyze", &a, &b, "--format", "json"]);
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {err}"));
    let findings = v["findings"].as_array().unwrap();
    let mut checked = 0;
    for f in findings
        .iter()
        .filter(|f| f["mid"].is_u64() && f["conn"].is_u64())
    {
        let file = f["file"]
            .as_str()
            .expect("each finding of a connection names its file");
        assert!(file == a || file == b, "{f}");
        let frame = f["packet"].as_u64().unwrap();
        let shown = tshark_payload(file, frame, 18830);
        assert!(
            shown.contains(&f["mid"].as_u64().unwrap().to_string()),
            "{file} frame {frame} holds {shown}, finding {f}"
        );
        if let Some(t) = f["type"].as_str() {
            assert!(shown.contains(t), "{file} frame {frame}: {shown}");
        }
        checked += 1;
    }
    assert!(checked >= 3, "{out}");
    // One run over both files: findings of each file.
    for file in [&a, &b] {
        assert!(
            findings.iter().any(|f| f["file"] == file.as_str()),
            "{file}"
        );
    }
}

#[test]
fn json_time_is_rfc3339_with_the_tz_offset_beside_the_microseconds() {
    let a = repo("captures/bad-schema.pcap");
    for (tz, suffix) in [
        (None, "+08:00"),
        (Some("Z"), "Z"),
        (Some("+02:00"), "+02:00"),
    ] {
        let mut args = vec!["analyze", a.as_str(), "--format", "json"];
        if let Some(tz) = tz {
            args.extend(["--tz", tz]);
        }
        let (_, out, _) = edgetap(&args);
        let v: Value = serde_json::from_str(&out).unwrap();
        let f = &v["findings"][0];
        let us = f["time"].as_i64().unwrap();
        let text = f["time_rfc3339"].as_str().unwrap();
        assert!(text.ends_with(suffix), "{tz:?}: {text}");
        let back = chrono::DateTime::parse_from_rfc3339(text).unwrap();
        assert_eq!(back.timestamp_micros(), us, "{text}");
        // A single input names no file.
        assert!(f.get("file").is_none(), "{f}");
    }
}

/// A capture recorded by the proxy (mosquitto upstream, mosquitto_pub clients with a
/// login): `analyze --capture` cites the frame `captures export` carries, and tshark
/// finds the message and the finding's comment on that frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_finding_cites_the_frame_of_the_pcapng_export() {
    let m = common::Mosquitto::start();
    let dir = common::temp_dir("numbering").join("store");
    let store = Store::open(&dir).unwrap();
    let px = common::Proxy::start(
        ProxySettings {
            upstream: format!("127.0.0.1:{}", m.port),
            name: "numbering".into(),
            ..Default::default()
        },
        Some(store),
    )
    .await;
    let port = px.addr.port();
    let ts = edgetap::sim::cst_now();
    // A big status report first (frames before the finding's), then a CMD_CON_START
    // whose container is a number (table 36) and a request carrying a password.
    let lines = format!(
        "{{\"mid\":1000000000020001,\"type\":\"CMD_INFO_QUERY\",\"timestamp\":\"{ts}\"}}\n\
         {{\"mid\":1000000000020035,\"type\":\"CMD_CON_START\",\"timestamp\":\"{ts}\",\"param\":{{\"container\":1}}}}\n"
    );
    tokio::task::spawn_blocking(move || {
        common::publish_lines(
            port,
            &["-i", "platform-7", "-u", "alice", "-P", "hunter2"],
            "/v1/E7/container/command",
            &lines,
        );
        common::publish_lines(
            port,
            &["-i", "edge-E7"],
            "/v1/E7/device/request",
            &format!(
                "{{\"mid\":1000000000030001,\"type\":\"EVENT_LINKUP\",\"timestamp\":\"{ts}\",\"param\":{{\"devSN\":\"SN1\",\"password\":\"opensesame\",\"url\":\"ftp://bob:pw42@10.0.0.2/x\"}}}}\n"
            ),
        );
    })
    .await
    .unwrap();
    px.wait_closed(2).await;
    let (outcome, _) = px.finish().await;
    let id = outcome.capture.unwrap().to_string();
    drop(outcome);
    let store_dir = dir.display().to_string();

    let (_, out, err) = edgetap(&[
        "analyze",
        "--capture",
        &id,
        "--store",
        &store_dir,
        "--format",
        "json",
    ]);
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {err}"));
    let f = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["rule"] == "t36.CMD_CON_START")
        .unwrap_or_else(|| panic!("{out}"))
        .clone();
    let frame = f["packet"].as_u64().unwrap();
    assert!(
        f["time_rfc3339"].as_str().unwrap().ends_with("+08:00"),
        "{f}"
    );

    let pcapng = dir.parent().unwrap().join("export.pcapng");
    let (code, out, err) = edgetap(&[
        "captures",
        "export",
        &id,
        "--pcapng",
        pcapng.to_str().unwrap(),
        "--store",
        &store_dir,
    ]);
    assert_eq!(code, Some(0), "{out}{err}");
    // The export keeps the real upstream port: mosquitto's.
    let shown = tshark_payload(pcapng.to_str().unwrap(), frame, m.port);
    assert!(shown.contains("1000000000020035"), "frame {frame}: {shown}");
    assert!(shown.contains("CMD_CON_START"), "frame {frame}: {shown}");
    assert!(
        shown.contains("t36.CMD_CON_START"),
        "the comment is on frame {frame}: {shown}"
    );
    // One numbering: every comment cites the frame it is on (not the store's
    // event number), as Wireshark numbers it.
    let comments = Command::new("tshark")
        .args(["-r", pcapng.to_str().unwrap(), "-Y", "frame.comment"])
        .args(["-T", "fields", "-e", "frame.number", "-e", "frame.comment"])
        .output()
        .expect("tshark must be installed");
    let comments = String::from_utf8_lossy(&comments.stdout).into_owned();
    let mut cited = 0;
    for line in comments.lines() {
        let (n, text) = line.split_once('\t').unwrap();
        for c in text.split(',').filter(|c| c.contains(" packet ")) {
            let p = c
                .split(" packet ")
                .nth(1)
                .unwrap()
                .split(' ')
                .next()
                .unwrap();
            assert_eq!(p, n, "frame {n}'s comment cites packet {p}: {c}");
            cited += 1;
        }
    }
    assert!(cited >= 1, "{comments}");
    // The HTML record labels each charted message with the frame too: the
    // finding's message is "pkt FRAME", and every label is a frame tshark shows
    // carrying an MQTT PUBLISH.
    let (_, html, err) = edgetap(&[
        "analyze",
        "--capture",
        &id,
        "--store",
        &store_dir,
        "--format",
        "html",
    ]);
    assert!(html.contains(&format!("· pkt {frame}<")), "{err}{html}");
    let publishes = Command::new("tshark")
        .args(["-r", pcapng.to_str().unwrap()])
        .args(["-d", &format!("tcp.port=={},mqtt", m.port)])
        .args([
            "-Y",
            "mqtt.msgtype==3",
            "-T",
            "fields",
            "-e",
            "frame.number",
        ])
        .output()
        .unwrap();
    let publishes: Vec<String> = String::from_utf8_lossy(&publishes.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    let labels: Vec<&str> = html
        .split("· pkt ")
        .skip(1)
        .map(|s| s.split('<').next().unwrap())
        .collect();
    assert_eq!(labels.len(), 3, "{html}");
    for l in &labels {
        assert!(
            publishes.iter().any(|p| p == l),
            "pkt {l} is no PUBLISH frame: {publishes:?}"
        );
    }

    // captures show: the same frame number; --payloads prints the messages with
    // their client ids, credentials redacted.
    let (code, table, err) =
        edgetap(&["captures", "show", &id, "--store", &store_dir, "--payloads"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        // The stored finding groups cite the export's frames too.
        table.contains(&format!("[t36.CMD_CON_START] edge E7 packet {frame}")),
        "{table}"
    );
    assert!(table.contains("client id platform-7"), "{table}");
    assert!(table.contains("client id edge-E7"), "{table}");
    assert!(
        table.contains("(platform-7) client→server")
            && table.contains("\"type\":\"CMD_CON_START\""),
        "{table}"
    );
    assert!(table.contains("(edge-E7) client→server"), "{table}");
    for secret in ["hunter2", "opensesame", "pw42", "alice"] {
        assert!(!table.contains(secret), "{secret} shown:\n{table}");
    }
    assert!(table.contains("\"password\":\"<redacted>\""), "{table}");
    assert!(table.contains("ftp://<redacted>@10.0.0.2/x"), "{table}");
    let (_, json, _) = edgetap(&[
        "captures",
        "show",
        &id,
        "--store",
        &store_dir,
        "--payloads",
        "--format",
        "json",
    ]);
    let v: Value = serde_json::from_str(&json).unwrap();
    let msgs = v["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 3, "{json}");
    assert!(msgs.iter().any(|m| m["client_id"] == "edge-E7"), "{json}");
    let (_, shown, _) = edgetap(&[
        "captures",
        "show",
        &id,
        "--store",
        &store_dir,
        "--payloads",
        "--show-secrets",
    ]);
    assert!(shown.contains("opensesame"), "{shown}");
}
