//! Exit codes CI can trust (2 and 3): unreadable captures name file, frame and byte
//! offset; input without protocol messages judged nothing; filters that name nothing;
//! captures cut in two. (Moved from cli.rs, unchanged.)

use crate::cli::{analyze_json, capture, edgetap};
use crate::common;

/// A run of `analyze` with its exit code, stdout and stderr as text.
struct Run {
    code: Option<i32>,
    out: String,
    err: String,
}

fn analyze(args: &[&str]) -> Run {
    let mut all = vec!["analyze"];
    all.extend_from_slice(args);
    let o = edgetap(&all);
    Run {
        code: o.status.code(),
        out: String::from_utf8_lossy(&o.stdout).into_owned(),
        err: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// Deterministic noise (xorshift), so that a failure can be reproduced.
fn noise(n: usize, mut seed: u64) -> Vec<u8> {
    (0..n)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect()
}

fn pcap_header() -> Vec<u8> {
    let mut h = vec![];
    h.extend_from_slice(&0xA1B2_C3D4u32.to_le_bytes());
    h.extend_from_slice(&2u16.to_le_bytes());
    h.extend_from_slice(&4u16.to_le_bytes());
    h.extend_from_slice(&[0; 8]);
    h.extend_from_slice(&65535u32.to_le_bytes());
    h.extend_from_slice(&1u32.to_le_bytes());
    h
}

/// A little-endian pcapng block.
fn pcapng_block(kind: u32, body: &[u8]) -> Vec<u8> {
    let len = (12 + body.len()) as u32;
    let mut b = kind.to_le_bytes().to_vec();
    b.extend_from_slice(&len.to_le_bytes());
    b.extend_from_slice(body);
    b.extend_from_slice(&len.to_le_bytes());
    b
}

/// A section header and one Ethernet interface description: 48 bytes.
fn pcapng_head() -> Vec<u8> {
    let mut shb = 0x1A2B_3C4Du32.to_le_bytes().to_vec();
    shb.extend_from_slice(&1u16.to_le_bytes());
    shb.extend_from_slice(&0u16.to_le_bytes());
    shb.extend_from_slice(&(-1i64).to_le_bytes());
    let mut idb = 1u16.to_le_bytes().to_vec();
    idb.extend_from_slice(&0u16.to_le_bytes());
    idb.extend_from_slice(&65535u32.to_le_bytes());
    let mut file = pcapng_block(0x0A0D_0D0A, &shb);
    file.extend(pcapng_block(1, &idb));
    assert_eq!(file.len(), 48);
    file
}

/// Exit 2, the message on stderr names the file, the frame and the byte offset, and
/// the JSON report says the capture is unreadable.
fn assert_unreadable(name: &str, bytes: &[u8], place: &str) {
    let dir = common::temp_dir("hostile");
    let file = dir.join(name);
    std::fs::write(&file, bytes).unwrap();
    let r = analyze(&["--format", "json", file.to_str().unwrap()]);
    assert_eq!(r.code, Some(2), "{name}: stderr:\n{}", r.err);
    assert!(
        r.err.contains(&format!("{name}: {place}")),
        "{name}: stderr must name file, frame and byte offset ({place}):\n{}",
        r.err
    );
    let report: serde_json::Value = serde_json::from_str(&r.out).unwrap();
    let unreadable = report["summary"]["unreadable"].to_string();
    assert!(unreadable.contains(place), "{unreadable}");
    assert_eq!(report["summary"]["judged"], false);
}

#[test]
fn a_pcap_header_followed_by_random_bytes_exits_2_naming_the_place() {
    let mut file = pcap_header();
    file.extend(noise(4096, 7));
    assert_unreadable("random.pcap", &file, "frame 1 at byte offset 24");
}

#[test]
fn a_pcapng_with_garbage_after_its_interface_block_exits_2_naming_the_place() {
    let mut file = pcapng_head();
    file.extend(noise(4096, 11));
    assert_unreadable("garbage.pcapng", &file, "frame 1 at byte offset 48");
}

#[test]
fn a_pcapng_block_claiming_a_gigabyte_exits_2_naming_the_place() {
    let mut file = pcapng_head();
    file.extend_from_slice(&6u32.to_le_bytes());
    file.extend_from_slice(&(1u32 << 30).to_le_bytes());
    file.extend_from_slice(&[0; 200]);
    assert_unreadable("huge.pcapng", &file, "frame 1 at byte offset 48");
}

#[test]
fn a_capture_broken_after_good_frames_exits_2_but_one_cut_at_its_end_does_not() {
    let good = std::fs::read(capture("clean-session.pcap")).unwrap();
    // Broken framing before the end: a record header claiming 3 GB, then more bytes.
    let mut broken = good.clone();
    let at = broken.len();
    broken.extend_from_slice(&[0; 8]);
    broken.extend_from_slice(&0xC000_0000u32.to_le_bytes());
    broken.extend_from_slice(&0xC000_0000u32.to_le_bytes());
    broken.extend(noise(1000, 3));
    let dir = common::temp_dir("broken");
    let file = dir.join("broken.pcap");
    std::fs::write(&file, &broken).unwrap();
    let r = analyze(&[file.to_str().unwrap()]);
    assert_eq!(r.code, Some(2), "{}", r.err);
    assert!(
        r.err.contains(&format!("at byte offset {at}")) && r.err.contains("broken.pcap: frame"),
        "{}",
        r.err
    );
    assert!(r.out.contains("capture not read in full"), "{}", r.out);

    // A capture cut inside its last record (tcpdump killed): said, not fatal.
    let cut = &good[..good.len() - 5];
    let file = dir.join("cut.pcap");
    std::fs::write(&file, cut).unwrap();
    let r = analyze(&["--format", "json", file.to_str().unwrap()]);
    assert_ne!(r.code, Some(2), "{}", r.err);
    let report: serde_json::Value = serde_json::from_str(&r.out).unwrap();
    assert!(
        report["summary"]["incomplete"]
            .to_string()
            .contains("cut.pcap: frame"),
        "{}",
        report["summary"]
    );
    assert!(r.err.contains("not read in full"), "{}", r.err);
}

#[test]
fn an_empty_capture_exits_3_with_a_junit_failure() {
    let dir = common::temp_dir("empty");
    let file = dir.join("empty.pcap");
    std::fs::write(&file, pcap_header()).unwrap();
    let r = analyze(&["--format", "junit", file.to_str().unwrap()]);
    assert_eq!(r.code, Some(3), "{}", r.err);
    assert!(
        r.out.contains("<failure message=\"nothing judged"),
        "{}",
        r.out
    );
    assert!(r.err.contains("no packets"), "{}", r.err);
    assert!(r.err.contains("(exit code 3)"), "{}", r.err);
}

/// `mosquitto_pub -l` publishing each line written to it, on one connection.
struct LinePublisher {
    child: std::process::Child,
}

impl LinePublisher {
    fn connect(port: u16, topic: &str) -> LinePublisher {
        let child = std::process::Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"])
            .args(["-i", "edge-E1", "-t", topic, "-l"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("mosquitto_pub must be installed (apt-get install mosquitto-clients)");
        LinePublisher { child }
    }
    fn send(&mut self, line: &str) {
        use std::io::Write;
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }
    fn disconnect(mut self) {
        drop(self.child.stdin.take());
        assert!(self.child.wait().unwrap().success());
    }
}

/// `mosquitto_sub` printing what it receives, to know a message went through.
struct Subscriber {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Subscriber {
    fn start(port: u16, topic: &str) -> Subscriber {
        use std::io::BufRead;
        let mut child = std::process::Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"])
            .args(["-i", "observer", "-t", topic])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("mosquitto_sub must be installed");
        let out = std::io::BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Subscriber { child, lines }
    }
    /// Whether `text` is received within `within`.
    fn saw(&mut self, text: &str, within: std::time::Duration) -> bool {
        let until = std::time::Instant::now() + within;
        loop {
            let left = until.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(text) => return true,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
    }
    /// Waits until `text` is received: a minute at most, then the test fails
    /// naming it (a lost message must not hang the test run).
    fn wait_for(&mut self, text: &str) {
        assert!(
            self.saw(text, std::time::Duration::from_secs(60)),
            "mosquitto_sub did not receive {text} within 60 s"
        );
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn linkdown(n: u32) -> String {
    format!(
        r#"{{"type":"EVENT_LINKDOWN","timestamp":"2026-12-01 19:00:0{n}","param":{{"reason":"Reboot OS"}}}}"#
    )
}

#[test]
fn a_capture_started_after_the_devices_connected_on_an_odd_port_exits_3_naming_port() {
    let broker = common::Mosquitto::start();
    let port = broker.port;
    assert_ne!(port, 1883);
    let topic = "/v1/E1/device/data";
    let mut sub = Subscriber::start(port, "/v1/#");
    let mut edge = LinePublisher::connect(port, topic);
    // The first message proves both clients connected; only then the capture starts.
    // It is sent again until the subscriber has it: one published before the
    // subscription was in place never arrives (that hung a CI run).
    let mut tries = 0;
    loop {
        edge.send(&linkdown(0));
        if sub.saw("19:00:00", std::time::Duration::from_secs(1)) {
            break;
        }
        tries += 1;
        assert!(tries < 30, "mosquitto_sub never received the first message");
    }
    let dir = common::temp_dir("late-capture");
    let dump = common::tcpdump(port, dir.join("late.pcap"));
    edge.send(&linkdown(1));
    edge.send(&linkdown(2));
    sub.wait_for("19:00:02");
    edge.disconnect();
    let file = dump.stop();
    let file = file.to_str().unwrap();

    let r = analyze(&[file]);
    assert_eq!(r.code, Some(3), "stdout:\n{}\nstderr:\n{}", r.out, r.err);
    for text in [r.out.as_str(), r.err.as_str()] {
        assert!(text.contains("--port"), "{text}");
        // The broker's port comes first: it carried the traffic of both clients.
        assert!(
            text.contains(&format!("most traffic: {port} (")),
            "port {port}: {text}"
        );
    }
    let r = analyze(&["--format", "junit", file]);
    assert_eq!(r.code, Some(3));
    assert!(r.out.contains("<failure"), "{}", r.out);
    let r = analyze(&["--format", "json", file]);
    let report: serde_json::Value = serde_json::from_str(&r.out).unwrap();
    assert_eq!(report["summary"]["judged"], false);
    assert!(report["summary"]["not_judged_because"][0]
        .as_str()
        .unwrap()
        .contains("--port"));

    // With the broker's port named, the messages are judged.
    let r = analyze(&["--format", "json", "--port", &port.to_string(), file]);
    let report: serde_json::Value = serde_json::from_str(&r.out).unwrap();
    assert!(
        report["summary"]["messages"].as_u64().unwrap() >= 2,
        "{}",
        report["summary"]
    );
    assert_eq!(report["summary"]["judged"], true);
    assert_ne!(r.code, Some(3), "{}", r.err);
    assert_ne!(r.code, Some(2), "{}", r.err);
}

#[test]
fn mqtt_without_protocol_topics_exits_3_saying_so() {
    let broker = common::Mosquitto::start();
    let port = broker.port;
    let dir = common::temp_dir("no-protocol");
    let dump = common::tcpdump(port, dir.join("plain.pcap"));
    let st = std::process::Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"])
        .args(["-t", "sensors/temp", "-m", "21.5"])
        .status()
        .expect("mosquitto_pub");
    assert!(st.success());
    let file = dump.stop();
    let r = analyze(&[file.to_str().unwrap()]);
    assert_eq!(r.code, Some(3), "{}\n{}", r.out, r.err);
    assert!(r.err.contains("protocol topic"), "{}", r.err);
}

#[test]
fn analyze_help_documents_every_exit_code() {
    let out = edgetap(&["analyze", "--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for line in [
        "2  bad usage",
        "1  error findings",
        "3  nothing judged",
        "0  protocol",
    ] {
        assert!(help.contains(line), "{line:?} missing from:\n{help}");
    }
}

#[test]
fn a_stored_capture_without_protocol_messages_exits_3() {
    let dir = common::temp_dir("store-empty");
    let id = {
        let store = edgetap::store::Store::open(&dir).unwrap();
        let mut meta = edgetap::store::CaptureMeta {
            id: 0,
            name: "idle proxy".into(),
            started_us: 1_795_687_200_000_000,
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
        };
        let id = store.begin_capture(&mut meta).unwrap();
        store.flush().unwrap();
        id
    };
    let r = analyze(&[
        "--format",
        "junit",
        "--capture",
        &id.to_string(),
        "--store",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(r.code, Some(3), "{}", r.err);
    assert!(
        r.out.contains("<failure message=\"nothing judged"),
        "{}",
        r.out
    );
}

/// A filter that names nothing must not turn a failing capture into a pass: an
/// unknown --rule or a --clause no rule judges is refused (exit 2, saying what
/// exists); an --edge absent from the input judged nothing (exit 3, naming the
/// edges there are).
#[test]
fn a_filter_that_names_nothing_is_refused_or_judges_nothing() {
    let bad = capture("bad-envelope.pcap");
    let r = analyze(&["--rule", "t10.REP_SYS_STATU", &bad]);
    assert_eq!(r.code, Some(2), "{}", r.err);
    assert!(
        r.err.contains("--rule t10.REP_SYS_STATU: no rule"),
        "{}",
        r.err
    );
    let r = analyze(&["--clause", "6.1.3.1", &bad]);
    assert_eq!(r.code, Some(2), "{}", r.err);
    assert!(r.err.contains("6.1.1, 6.1.2"), "{}", r.err);
    // A parent clause and a rule prefix are fine.
    let r = analyze(&["--clause", "6.1", "--rule", "t10.", &bad]);
    assert_ne!(r.code, Some(2), "{}", r.err);
    let (code, all) = analyze_json(&[&bad]);
    assert_eq!(code, Some(1));
    let edge = all["edges"][0]["edge_id"].as_str().unwrap().to_string();
    let (code, r) = analyze_json(&["--edge", &edge.to_lowercase(), &bad]);
    assert_eq!(code, Some(3), "{}", r["summary"]);
    assert!(
        r["summary"]["not_judged_because"]
            .to_string()
            .contains(&format!("its edges are: {edge}")),
        "{}",
        r["summary"]
    );
    let (code, _) = analyze_json(&["--edge", &edge, &bad]);
    assert_eq!(code, Some(1));
}

/// Files given together are one session (a rotation, tcpdump -C/-G): a capture cut
/// in two at any frame gives the report of the whole, whichever packet the cut
/// falls in (connections carry on from one file into the next).
#[test]
fn a_capture_split_in_two_at_any_frame_is_judged_as_the_whole() {
    let whole = std::fs::read(capture("clean-session.pcap")).unwrap();
    let (code, all) = analyze_json(&[&capture("clean-session.pcap")]);
    assert_eq!(code, Some(0));
    let messages = all["summary"]["messages"].clone();
    // Record boundaries of the little-endian pcap.
    let mut cuts = vec![];
    let mut at = 24;
    while at + 16 <= whole.len() {
        let incl = u32::from_le_bytes(whole[at + 8..at + 12].try_into().unwrap()) as usize;
        at += 16 + incl;
        cuts.push(at);
    }
    assert!(cuts.len() > 10, "{} frames", cuts.len());
    let dir = common::temp_dir("split");
    for (i, &cut) in cuts[..cuts.len() - 1].iter().enumerate().step_by(3) {
        let (a, b) = (
            dir.join(format!("a{i}.pcap")),
            dir.join(format!("b{i}.pcap")),
        );
        std::fs::write(&a, &whole[..cut]).unwrap();
        let mut second = whole[..24].to_vec();
        second.extend_from_slice(&whole[cut..]);
        std::fs::write(&b, second).unwrap();
        let (code, r) = analyze_json(&[a.to_str().unwrap(), b.to_str().unwrap()]);
        assert_eq!(
            code,
            Some(0),
            "cut after frame {}: {}",
            i + 1,
            r["findings"]
        );
        assert_eq!(
            r["summary"]["messages"],
            messages,
            "cut after frame {}",
            i + 1
        );
    }
}
