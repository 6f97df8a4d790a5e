//! The pipeline end to end without a capture file: broker legs, transport findings,
//! and the rules that need capture-level events.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use edgetap::finding::{Finding, Side};
use edgetap::pipeline::{Analyzer, At, Framer, Input, Push, Settings, Sink};
use edgetap::report::Collector;
use edgetap::rules::RuleSet;

pub(crate) fn publish(topic: &str, payload: &str) -> Vec<u8> {
    let mut b = BytesMut::new();
    rumqttc::mqttbytes::v4::Publish::new(topic, rumqttc::mqttbytes::QoS::AtMostOnce, payload)
        .write(&mut b)
        .unwrap();
    b.to_vec()
}

pub(crate) fn connect(id: &str) -> Vec<u8> {
    let mut b = BytesMut::new();
    rumqttc::mqttbytes::v4::Connect::new(id)
        .write(&mut b)
        .unwrap();
    b.to_vec()
}

pub(crate) const T0: i64 = 1_795_687_200_000_000;

/// The pipeline's one way in, spelled as the events these tests send: each call is
/// one `push`.
pub(crate) trait Drive: Push {
    fn open(
        &mut self,
        conn: u64,
        client: Option<SocketAddr>,
        server: Option<SocketAddr>,
        midstream: bool,
    ) {
        let input = Input::Open {
            client,
            server,
            midstream,
        };
        self.push(At::new(conn, 0, 0), input, &mut Collector::default());
    }
    fn data(&mut self, conn: u64, side: Side, t: i64, frame: u64, bytes: &[u8], s: &mut dyn Sink) {
        self.push(At::new(conn, t, frame), Input::Data { side, bytes }, s);
    }
    fn gap(&mut self, conn: u64, side: Side, t: i64, frame: u64, lost: u64, s: &mut dyn Sink) {
        self.push(At::new(conn, t, frame), Input::Gap { side, lost }, s);
    }
    fn close(&mut self, conn: u64, t: i64, frame: u64, s: &mut dyn Sink) {
        self.push(At::new(conn, t, frame), Input::Close, s);
    }
    #[allow(clippy::too_many_arguments)]
    fn not_decodable(
        &mut self,
        conn: u64,
        client: SocketAddr,
        server: SocketAddr,
        t: i64,
        frame: u64,
        reason: &str,
        s: &mut dyn Sink,
    ) {
        let input = Input::NotDecodable {
            client,
            server,
            reason,
        };
        self.push(At::new(conn, t, frame), input, s);
    }
    fn bad_frame(&mut self, t: i64, frame: u64, detail: &str, s: &mut dyn Sink) {
        self.push(At::new(0, t, frame), Input::BadFrame { detail }, s);
    }
    /// The end of input (an `Analyzer` judges it; a `Framer` stages it).
    fn end(&mut self, s: &mut dyn Sink);
}

impl Drive for Analyzer {
    fn end(&mut self, s: &mut dyn Sink) {
        self.finish(s);
    }
}

impl Drive for Framer {
    fn end(&mut self, _s: &mut dyn Sink) {
        self.finish();
    }
}
pub(crate) const LINKUP: &str = r#"{"mid":1,"type":"EVENT_LINKUP","timestamp":"2026-11-26 18:00:00","param":{"dev":{"devSN":"1","devType":"t","devName":"n","mfgInfo":"m","devStatus":"ok"},"cpu":{},"mem":{},"disk":{},"os":{},"links":[]}}"#;

pub(crate) fn analyzer(max_packet: usize) -> Analyzer {
    Analyzer::new(Arc::new(RuleSet::builtin()), Settings { max_packet })
}

/// An analyzer with connection 1 open and its client's CONNECT (frame 1) read.
pub(crate) fn edge_connected() -> (Analyzer, Collector) {
    let mut a = analyzer(1 << 20);
    let mut s = Collector::default();
    a.open(1, None, None, false);
    a.data(1, Side::Client, T0, 1, &connect("edge"), &mut s);
    (a, s)
}

pub(crate) fn rules_of(f: &[Finding]) -> Vec<&str> {
    f.iter().map(|f| f.rule.as_str()).collect()
}

/// Connection 1, the edge, and 2, a subscriber (the platform), both CONNECTed at T0
/// (packets 1 and 2).
/// What a deferred pipeline staged, judged as `analyze` and the proxy judge it.
pub(crate) fn judge_staged(
    staged: &mut [edgetap::pipeline::Staged],
    rules: &Arc<RuleSet>,
) -> Collector {
    let mut judge = edgetap::pipeline::Judge::new(rules.clone());
    let mut judged = Collector::default();
    for s in staged {
        judge.take(s, &mut judged);
    }
    judge.finish(&mut judged);
    judged
}

/// The first finding of `rule`.
pub(crate) fn finding<'a>(s: &'a Collector, rule: &str) -> &'a Finding {
    s.findings
        .iter()
        .find(|f| f.rule == rule)
        .unwrap_or_else(|| panic!("no {rule} finding: {:?}", rules_of(&s.findings)))
}

pub(crate) fn edge_and_subscriber(a: &mut Analyzer, s: &mut Collector) {
    a.open(1, None, None, false);
    a.open(2, None, None, false);
    a.data(1, Side::Client, T0, 1, &connect("edge"), s);
    a.data(2, Side::Client, T0, 2, &connect("platform"), s);
}

#[test]
fn broker_capture_counts_each_message_once() {
    let mut a = analyzer(1 << 20);
    let mut s = Collector::default();
    // conn 1: the edge publishes; conn 2: a subscriber gets the broker's delivery.
    edge_and_subscriber(&mut a, &mut s);
    let p = publish("/v1/E1/device/request", LINKUP);
    a.data(1, Side::Client, T0 + 1000, 3, &p, &mut s);
    a.data(2, Side::Server, T0 + 2000, 4, &p, &mut s);
    let st = a.stats().clone();
    assert_eq!((st.publishes, st.messages, st.deliveries), (2, 1, 1));
}

#[test]
fn legs_are_matched_before_and_after_the_first_delivery_and_expire() {
    // The table of recent publisher legs is built at the first PUBLISH from a
    // server (from the legs kept so far), then kept up to date: legs published
    // before it, after it, and past the delivery window all count right.
    let mut a = analyzer(1 << 20);
    let mut s = Collector::default();
    edge_and_subscriber(&mut a, &mut s);
    let p1 = publish("/v1/E1/device/request", LINKUP);
    let p2 = publish("/v1/E1/device/data", LINKUP);
    let p3 = publish("/v1/E1/device/reply", LINKUP);
    a.data(1, Side::Client, T0 + 1_000, 3, &p1, &mut s);
    a.data(1, Side::Client, T0 + 2_000, 4, &p2, &mut s);
    // First delivery: p2, published before the table existed.
    a.data(2, Side::Server, T0 + 3_000, 5, &p2, &mut s);
    assert_eq!(a.stats().deliveries, 1);
    // A leg published after the table was built.
    a.data(1, Side::Client, T0 + 4_000, 6, &p3, &mut s);
    a.data(2, Side::Server, T0 + 5_000, 7, &p3, &mut s);
    assert_eq!(a.stats().deliveries, 2);
    // p1's leg is past the window: its delivery now is a message of its own.
    let late = T0 + 1_000 + edgetap::pipeline::framer::DELIVERY_WINDOW_US + 1;
    a.data(2, Side::Server, late, 8, &p1, &mut s);
    let st = a.stats().clone();
    assert_eq!((st.publishes, st.messages, st.deliveries), (6, 4, 2));
}

#[test]
fn one_leg_capture_counts_deliveries_as_messages() {
    let mut a = analyzer(1 << 20);
    let mut s = Collector::default();
    // Taken at the device: the platform's commands arrive as deliveries only.
    a.open(1, None, None, false);
    a.data(1, Side::Client, T0, 1, &connect("edge"), &mut s);
    let cmd = r#"{"mid":2,"type":"CMD_SYS_STATUS","timestamp":"2026-11-26 18:00:01"}"#;
    a.data(
        1,
        Side::Server,
        T0 + 10,
        2,
        &publish("/v1/E1/device/command", cmd),
        &mut s,
    );
    a.data(
        1,
        Side::Server,
        T0 + 20,
        3,
        &publish("/v1/E1/device/command", cmd),
        &mut s,
    );
    assert_eq!(a.stats().messages, 2);
}

#[test]
fn capture_gap_is_a_finding_and_decoding_resumes() {
    let (mut a, mut s) = edge_connected();
    let p = publish("/v1/E1/device/request", LINKUP);
    a.data(1, Side::Client, T0, 2, &p[..10], &mut s);
    a.gap(1, Side::Client, T0, 3, 50, &mut s);
    a.data(1, Side::Client, T0, 4, &p[60..], &mut s);
    a.data(1, Side::Client, T0, 5, &p, &mut s);
    assert!(
        rules_of(&s.findings).contains(&"capture.gap"),
        "{:?}",
        s.findings
    );
    let gap = finding(&s, "capture.gap");
    assert_eq!(gap.offset, Some(connect("edge").len() as u64 + 10));
    assert_eq!(a.stats().messages, 1, "the packet after the gap is decoded");
}

/// A CONNECT the capture lost (its start seen, then a gap: suricata-verify's
/// "missing connect" capture) is no fault of the client's: no `mqtt.connect_first`,
/// and what follows is decoded. Without the gap the same bytes are one.
#[test]
fn a_connect_the_capture_lost_is_not_the_clients_fault() {
    let sub = {
        let mut b = BytesMut::new();
        rumqttc::mqttbytes::v4::Subscribe::new(
            "/v1/E1/device/request",
            rumqttc::mqttbytes::QoS::AtMostOnce,
        )
        .write(&mut b)
        .unwrap();
        b.to_vec()
    };
    for lost in [true, false] {
        let mut a = analyzer(1 << 20);
        let mut s = Collector::default();
        a.open(1, None, None, false);
        if lost {
            a.gap(1, Side::Client, T0, 1, connect("edge").len() as u64, &mut s);
        }
        a.data(1, Side::Client, T0, 2, &sub, &mut s);
        a.data(
            1,
            Side::Client,
            T0,
            3,
            &publish("/v1/E1/device/request", LINKUP),
            &mut s,
        );
        a.finish(&mut s);
        let found = rules_of(&s.findings);
        assert_eq!(
            found.contains(&"mqtt.connect_first"),
            !lost,
            "lost {lost}: {found:?}"
        );
        assert_eq!(a.stats().messages, 1, "lost {lost}: the PUBLISH is judged");
        if !lost {
            let f = finding(&s, "mqtt.connect_first");
            assert!(
                f.message.contains("its first packet is a SUBSCRIBE"),
                "{}",
                f.message
            );
            assert_eq!((f.conn, f.offset), (Some(1), Some(0)));
        }
    }
}

/// First bytes that are no CONNECT, then a capture gap: the opening is named by its
/// bytes, never by the packet after the gap, and nothing after it is "not MQTT".
#[test]
fn an_opening_cut_by_a_gap_is_named_by_its_bytes() {
    let mut a = analyzer(1 << 20);
    let mut s = Collector::default();
    a.open(1, None, None, false);
    // A PUBLISH header announcing 16 bytes, 3 of them seen (cut on purpose, so
    // written by hand).
    a.data(1, Side::Client, T0, 1, &[0x30, 0x10, 0x00], &mut s);
    a.gap(1, Side::Client, T0, 2, 15, &mut s);
    a.data(
        1,
        Side::Client,
        T0,
        3,
        &publish("/v1/E1/device/request", LINKUP),
        &mut s,
    );
    a.finish(&mut s);
    let opened: Vec<&Finding> = s
        .findings
        .iter()
        .filter(|f| f.rule == "mqtt.connect_first")
        .collect();
    assert_eq!(opened.len(), 1, "{:#?}", s.findings);
    assert!(
        opened[0].message.ends_with("its first bytes are 30 10 00"),
        "{}",
        opened[0].message
    );
    assert_eq!(a.stats().messages, 1, "the PUBLISH after the gap is judged");
}

#[test]
fn no_gap_no_gap_finding() {
    let (mut a, mut s) = edge_connected();
    let p = publish("/v1/E1/device/request", LINKUP);
    for (i, c) in p.chunks(7).enumerate() {
        a.data(1, Side::Client, T0, 2 + i as u64, c, &mut s);
    }
    assert!(!rules_of(&s.findings).contains(&"capture.gap"));
    assert_eq!(a.stats().messages, 1);
}

#[test]
fn not_decodable_flow_is_reported_as_such() {
    let mut a = analyzer(1 << 20);
    let mut s = Collector::default();
    a.not_decodable(
        9,
        "10.0.0.2:50000".parse().unwrap(),
        "10.0.0.1:8883".parse().unwrap(),
        T0,
        7,
        "TLS",
        &mut s,
    );
    assert_eq!(rules_of(&s.findings), vec!["capture.not_decodable"]);
    assert!(s.findings[0].message.contains("TLS"));
    assert_eq!(s.findings[0].packet, Some(7));
}

#[test]
fn oversized_packet_is_reported_and_skipped() {
    let mut a = analyzer(100);
    let mut s = Collector::default();
    a.open(1, None, None, false);
    a.data(1, Side::Client, T0, 1, &connect("edge"), &mut s);
    let big = publish("/v1/E1/device/request", &"x".repeat(500));
    a.data(1, Side::Client, T0, 2, &big, &mut s);
    let small = publish("a/b", "hi");
    a.data(1, Side::Client, T0, 3, &small, &mut s);
    // "a/b" is no protocol topic: counted and reported (info), not judged.
    assert_eq!(
        rules_of(&s.findings),
        vec!["mqtt.oversized", "topic.unattributed"]
    );
    assert_eq!(a.stats().unattributed, 1);
    assert_eq!(a.stats().publishes, 1, "the next packet is decoded");

    // Under the limit: silent.
    let (mut a, mut s) = edge_connected();
    a.data(1, Side::Client, T0, 2, &small, &mut s);
    assert!(!rules_of(&s.findings).contains(&"mqtt.oversized"));
}

#[test]
fn connection_ending_inside_a_packet_is_malformed() {
    let (mut a, mut s) = edge_connected();
    let p = publish("/v1/E1/device/request", LINKUP);
    a.data(1, Side::Client, T0, 2, &p[..20], &mut s);
    a.close(1, T0, 3, &mut s);
    let f = finding(&s, "mqtt.malformed");
    assert_eq!(f.offset, Some(connect("edge").len() as u64));
    assert_eq!(f.side, Some(Side::Client));
}

#[test]
fn unreadable_frame_is_a_finding_naming_the_frame() {
    let mut a = analyzer(1 << 20);
    let mut s = Collector::default();
    a.bad_frame(T0, 12, "truncated IPv4 header", &mut s);
    assert_eq!(rules_of(&s.findings), vec!["capture.bad_frame"]);
    assert_eq!(s.findings[0].packet, Some(12));
    assert!(s.findings[0].message.contains("truncated IPv4 header"));
    // A readable session has none.
    let (mut a, mut s) = edge_connected();
    a.finish(&mut s);
    assert!(s.findings.is_empty(), "{:?}", s.findings);
}

/// A deferred analyzer and a judge give the findings of the one-piece analyzer, in
/// the same order, whether the payloads are parsed by the reader or by the judge.
#[test]
fn deferred_judging_finds_what_direct_judging_finds() {
    use edgetap::pipeline::Staged;
    let rules = Arc::new(RuleSet::builtin());
    // A session with findings of several kinds: a request without linkup first, a
    // bad payload, an unanswered request, and a malformed packet at the end.
    let feed = |a: &mut dyn Drive, s: &mut dyn edgetap::pipeline::Sink| {
        a.open(1, None, None, false);
        a.data(1, Side::Client, T0, 1, &connect("edge"), s);
        let msgs = [
            (
                "/v1/E1/device/request",
                r#"{"mid":5,"type":"CMD_SYS_STATUS","timestamp":"2026-11-26 18:00:00","param":{}}"#,
            ),
            ("/v1/E1/device/request", LINKUP),
            (
                "/v1/E1/device/data",
                r#"{"mid":6,"type":"REP_SYS_STATUS","param":{"cpuRate":"x"}}"#,
            ),
            ("/v1/E1/device/data", "not json"),
            (
                "/v1/E1/app/request",
                r#"{"mid":7,"type ":"EVENT_APP_X","Bad_Key":1}"#,
            ),
        ];
        for (i, (t, p)) in msgs.iter().enumerate() {
            a.data(
                1,
                Side::Client,
                T0 + 1000 * (i as i64 + 1),
                2 + i as u64,
                &publish(t, p),
                s,
            );
        }
        // A PUBLISH the input ends inside (cut on purpose, so written by hand).
        a.data(1, Side::Client, T0 + 9000, 9, &[0x30, 0x05, 0x00], s);
        a.end(s);
    };
    let mut direct = Collector::default();
    feed(&mut analyzer(1 << 20), &mut direct);
    assert!(
        direct.findings.len() >= 5,
        "{:?}",
        rules_of(&direct.findings)
    );
    for parse_at_reader in [true, false] {
        let settings = Settings {
            max_packet: 1 << 20,
        };
        let mut a = match parse_at_reader {
            true => Framer::new(rules.clone(), settings),
            false => Framer::leaving_payloads(rules.clone(), settings),
        };
        let mut staged: Vec<Staged> = vec![];
        feed(&mut a, &mut Collector::default());
        a.take_staged(&mut staged);
        assert!(staged.iter().any(|s| matches!(s, Staged::Unparsed(_))) != parse_at_reader);
        let judged = judge_staged(&mut staged, &rules);
        let key = |f: &Vec<Finding>| -> Vec<String> {
            f.iter()
                .map(|f| format!("{} {:?} {}", f.rule, f.packet, f.message))
                .collect()
        };
        assert_eq!(
            key(&judged.findings),
            key(&direct.findings),
            "parse at reader: {parse_at_reader}"
        );
    }
}
