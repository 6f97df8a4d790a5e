//! The pipeline on messages: MQTT 5 topic aliases, reply codes quoting their
//! sentence, redeliveries, device clocks, orphan replies, subscribers' deliveries,
//! and decoded publishes judged as their bytes are. (Moved from pipeline.rs, unchanged.)

use std::sync::Arc;

use bytes::BytesMut;
use edgetap::finding::Side;
use edgetap::pipeline::{Analyzer, At, Framer, Input, Settings};
use edgetap::report::Collector;
use edgetap::rules::RuleSet;

use crate::pipeline::{
    analyzer, connect, edge_and_subscriber, edge_connected, finding, judge_staged, publish,
    rules_of, Drive, LINKUP, T0,
};

/// MQTT 5 CONNECT and PUBLISH with a Topic Alias (empty topic: use the alias).
fn v5_connect(id: &str) -> Vec<u8> {
    use rumqttc::v5::mqttbytes::v5::Connect;
    let mut b = BytesMut::new();
    let c = Connect {
        keep_alive: 60,
        client_id: id.into(),
        clean_start: true,
        properties: None,
    };
    rumqttc::v5::mqttbytes::v5::Packet::Connect(c, None, None)
        .write(&mut b)
        .unwrap();
    b.to_vec()
}

fn v5_publish(topic: &str, alias: u16, payload: &str) -> Vec<u8> {
    use rumqttc::v5::mqttbytes::v5::{Publish, PublishProperties};
    let props = PublishProperties {
        topic_alias: Some(alias),
        ..Default::default()
    };
    let p = Publish::new(
        topic,
        rumqttc::v5::mqttbytes::QoS::AtMostOnce,
        payload.to_string(),
        Some(props),
    );
    let mut b = BytesMut::new();
    rumqttc::v5::mqttbytes::v5::Packet::Publish(p)
        .write(&mut b)
        .unwrap();
    b.to_vec()
}

#[test]
fn mqtt5_topic_aliases_resolve_per_connection_and_unknown_ones_are_reported() {
    let report = r#"{"type":"EVENT_LINKDOWN","timestamp":"2026-11-26 18:00:00","param":{"reason":"Power Off"}}"#;
    let mut a = analyzer(1 << 20);
    let mut s = Collector::default();
    a.open(1, None, None, false);
    a.data(1, Side::Client, T0, 1, &v5_connect("edge"), &mut s);
    a.data(
        1,
        Side::Client,
        T0,
        2,
        &v5_publish("/v1/E5/device/request", 1, LINKUP),
        &mut s,
    );
    a.data(
        1,
        Side::Client,
        T0,
        3,
        &v5_publish("/v1/E5/device/data", 2, report),
        &mut s,
    );
    a.data(1, Side::Client, T0, 4, &v5_publish("", 2, report), &mut s);
    a.data(1, Side::Client, T0, 5, &v5_publish("", 2, report), &mut s);
    assert_eq!(a.stats().publishes, 4);
    assert_eq!(a.stats().messages, 4, "{:?}", s.findings);
    assert_eq!(a.stats().unattributed, 0);

    // Another connection joined mid-session: alias 2 was set before the capture.
    a.open(2, None, None, true);
    a.data(2, Side::Client, T0, 6, &v5_connect("edge2"), &mut s);
    a.data(2, Side::Client, T0, 7, &v5_publish("", 2, report), &mut s);
    assert_eq!(
        a.stats().messages,
        4,
        "an alias of connection 1 is not connection 2's"
    );
    assert_eq!(a.stats().unattributed, 1);
    let f = finding(&s, "topic.unattributed");
    assert!(f.message.contains("alias 2"), "{}", f.message);
    assert_eq!((f.conn, f.packet), (Some(2), Some(7)));
}

#[test]
fn a_wrong_reply_code_quotes_the_sentence_that_sets_it() {
    let mut a = analyzer(1 << 20);
    let mut s = Collector::default();
    edge_and_subscriber(&mut a, &mut s);
    a.data(
        1,
        Side::Client,
        T0,
        3,
        &publish("/v1/E1/device/request", LINKUP),
        &mut s,
    );
    let cmd = r#"{"mid":9,"type":"CMD_SYS_UPGRADE","timestamp":"2026-11-26 18:00:01","param":{"jobId":1,"version":"2","upgradeType":0,"file":{}}}"#;
    a.data(
        2,
        Side::Client,
        T0 + 1,
        4,
        &publish("/v1/E1/device/command", cmd),
        &mut s,
    );
    let reply =
        r#"{"mid":9,"type":"CMD_SYS_UPGRADE","timestamp":"2026-11-26 18:00:01","code":200}"#;
    a.data(
        1,
        Side::Client,
        T0 + 2,
        5,
        &publish("/v1/E1/device/reply", reply),
        &mut s,
    );
    let f = finding(&s, "reply.code");
    let basis = f.basis.as_deref().unwrap();
    assert!(
        basis.starts_with("6.1.2.2") && basis.contains("202"),
        "{basis}"
    );
}

/// A QoS 1 PUBLISH, as a broker redelivers it (dup flag set) or first sends it.
fn publish_qos1(topic: &str, payload: &str, pkid: u16, dup: bool) -> Vec<u8> {
    let mut p =
        rumqttc::mqttbytes::v4::Publish::new(topic, rumqttc::mqttbytes::QoS::AtLeastOnce, payload);
    p.pkid = pkid;
    p.dup = dup;
    let mut b = BytesMut::new();
    p.write(&mut b).unwrap();
    b.to_vec()
}

#[test]
fn a_redelivery_whose_first_sending_was_not_seen_is_judged_once() {
    let cmd = r#"{"mid":9,"type":"CMD_SYS_STATUS","timestamp":"2026-11-26 18:00:01"}"#;
    let (mut a, mut s) = edge_connected();
    // The broker redelivers, on the edge's new connection, a command it sent before.
    let redelivered = publish_qos1("/v1/E1/device/command", cmd, 7, true);
    a.data(1, Side::Server, T0, 2, &redelivered, &mut s);
    assert_eq!(
        a.stats().messages,
        1,
        "the first copy seen here is the message"
    );
    // Retransmitted again on the same connection: the same message, not judged twice.
    a.data(1, Side::Server, T0, 3, &redelivered, &mut s);
    assert_eq!(a.stats().messages, 1);
    // The edge acknowledges it; id 7 is free again, and a command the broker sends
    // with it later is a new message (in flight ids only: the set stays small).
    let puback = edgetap::mqtt::encode::puback(7);
    a.data(1, Side::Client, T0, 3, &puback, &mut s);
    let cmd2 = r#"{"mid":10,"type":"CMD_SYS_STATUS","timestamp":"2026-11-26 18:00:01"}"#;
    let next = publish_qos1("/v1/E1/device/command", cmd2, 7, true);
    a.data(1, Side::Server, T0, 3, &next, &mut s);
    assert_eq!(a.stats().messages, 2);
    let reply = r#"{"mid":9,"type":"CMD_SYS_STATUS","timestamp":"2026-11-26 18:00:02","code":200,"param":{"cpuRate":5,"memUsed":{"phy":40},"diskUsed":30,"tempValue":41,"devDateTime":"2026-11-26 18:00:02","devStDateTime":"2026-11-26 08:00:00","devRunTime":7200,"linkState":[]}}"#;
    a.data(
        1,
        Side::Client,
        T0 + 1,
        4,
        &publish("/v1/E1/device/reply", reply),
        &mut s,
    );
    a.finish(&mut s);
    assert!(
        !rules_of(&s.findings).contains(&"reply.orphan"),
        "{:?}",
        rules_of(&s.findings)
    );
}

#[test]
fn a_device_clock_on_utc_is_named_and_tz_reads_it() {
    // T0 is 2026-11-26 10:00:00 UTC; a device on UTC writes "10:00:00", which the
    // standard's clock (CST) reads as 02:00:00 UTC: 8 hours before it was seen.
    let report = r#"{"type":"EVENT_LINKDOWN","timestamp":"2026-11-26 10:00:00","expire":60,"param":{"reason":"Power Off"}}"#;
    let run = |tz: Option<i64>| {
        let mut rules = RuleSet::builtin();
        rules.tz_offset_s = tz;
        let mut a = Analyzer::new(Arc::new(rules), Settings::default());
        let mut s = Collector::default();
        a.open(1, None, None, false);
        a.data(1, Side::Client, T0, 1, &connect("edge"), &mut s);
        a.data(
            1,
            Side::Client,
            T0 + 1_000_000,
            2,
            &publish("/v1/E1/device/data", report),
            &mut s,
        );
        s.findings
            .into_iter()
            .filter(|f| f.rule == "message.expired")
            .collect::<Vec<_>>()
    };
    let cst = run(None);
    assert_eq!(cst.len(), 1);
    assert!(
        cst[0].message.contains("8 h behind") && cst[0].message.contains("--tz"),
        "{}",
        cst[0].message
    );
    assert!(
        run(Some(0)).is_empty(),
        "read on UTC, the report is on time"
    );
}

/// `reply.orphan` judges a reply that matches no request only when a request of its
/// type, sent before it, is never answered (a wrong mid), and no byte was lost: the
/// edge's EVENT_LINKUP in the input does not make it one (a device re-links without
/// the optional EVENT_LINKDOWN and answers what it held), and a gap may have held
/// the answer. Direct and deferred judging alike.
#[test]
fn an_orphan_reply_is_judged_only_when_a_request_of_its_type_stays_unanswered_and_nothing_was_lost()
{
    use edgetap::pipeline::Staged;
    let reply = r#"{"mid":5,"type":"CMD_SYS_STATUS","timestamp":"2026-11-26 18:00:02","code":200,"param":{"cpuRate":5,"memUsed":{"phy":40},"diskUsed":30,"tempValue":41,"devDateTime":"2026-11-26 18:00:02","devStDateTime":"2026-11-26 08:00:00","devRunTime":7200,"linkState":[]}}"#;
    // open: the platform's CMD_SYS_STATUS mid 4 reaches the edge and is never
    // answered; gap: bytes lost before the reply. The edge's EVENT_LINKUP opens the
    // input every time.
    let command = r#"{"mid":4,"type":"CMD_SYS_STATUS","timestamp":"2026-11-26 18:00:01"}"#;
    let feed = |a: &mut dyn Drive, s: &mut dyn edgetap::pipeline::Sink, open: bool, gap: bool| {
        a.open(1, None, None, false);
        a.data(1, Side::Client, T0, 1, &connect("edge"), s);
        let p = publish("/v1/E1/device/request", LINKUP);
        a.data(1, Side::Client, T0 + 1, 2, &p, s);
        if open {
            let p = publish("/v1/E1/device/command", command);
            a.data(1, Side::Server, T0 + 1, 2, &p, s);
        }
        if gap {
            a.gap(1, Side::Client, T0 + 2, 3, 100, s);
        }
        let p = publish("/v1/E1/device/reply", reply);
        a.data(1, Side::Client, T0 + 3, 4, &p, s);
        a.end(s);
    };
    let rules = Arc::new(RuleSet::builtin());
    for (open, gap, orphan) in [
        (true, false, true),
        (false, false, false),
        (true, true, false),
    ] {
        let mut direct = Collector::default();
        feed(&mut analyzer(1 << 20), &mut direct, open, gap);
        let mut a = Framer::new(
            rules.clone(),
            Settings {
                max_packet: 1 << 20,
            },
        );
        feed(&mut a, &mut Collector::default(), open, gap);
        let mut staged: Vec<Staged> = vec![];
        a.take_staged(&mut staged);
        let deferred = judge_staged(&mut staged, &rules);
        for (how, found) in [
            ("direct", &direct.findings),
            ("deferred", &deferred.findings),
        ] {
            assert_eq!(
                rules_of(found).contains(&"reply.orphan"),
                orphan,
                "{how}, open {open}, gap {gap}: {:?}",
                rules_of(found)
            );
        }
    }
}

/// A capture that stops while a packet is on the wire (Ctrl-C, `tcpdump -c`, the
/// first file of a rotation) holds no FIN or RST: the input ended, not the
/// connection. That is the capture's fact (`capture.ended`, info), never the
/// sender's `mqtt.malformed`; a connection that closes inside a packet still is.
#[test]
fn an_input_that_ends_inside_a_packet_is_the_captures_fact_not_malformed() {
    let (mut a, mut s) = edge_connected();
    let p = publish("/v1/E1/device/request", LINKUP);
    a.data(1, Side::Client, T0, 2, &p[..20], &mut s);
    a.finish(&mut s);
    assert_eq!(rules_of(&s.findings), ["capture.ended"], "{:?}", s.findings);
    let f = &s.findings[0];
    assert_eq!(f.severity, edgetap::finding::Severity::Info);
    assert_eq!(f.offset, Some(connect("edge").len() as u64));
}

/// A capture that holds the broker's deliveries of a message but not its
/// publisher's leg (the publisher on a listener not captured, a will message): the
/// copies to several subscribers are one message; a second sending on the same
/// connection is another.
#[test]
fn deliveries_to_several_subscribers_without_their_publisher_are_one_message() {
    let mut a = analyzer(1 << 20);
    let mut s = Collector::default();
    for c in [1, 2, 3] {
        a.open(c, None, None, false);
        a.data(c, Side::Client, T0, c, &connect(&format!("sub{c}")), &mut s);
    }
    let reply = r#"{"mid":2,"type":"CMD_SYS_STATUS","timestamp":"2026-11-26 18:00:01","code":400,"msg":"busy"}"#;
    let p = publish("/v1/E1/device/reply", reply);
    a.data(1, Side::Server, T0 + 10, 4, &p, &mut s);
    a.data(2, Side::Server, T0 + 11, 5, &p, &mut s);
    a.data(3, Side::Server, T0 + 12, 6, &p, &mut s);
    let st = a.stats().clone();
    assert_eq!((st.messages, st.deliveries), (1, 2));
    assert!(
        !rules_of(&s.findings).contains(&"reply.duplicate"),
        "{:?}",
        rules_of(&s.findings)
    );
    // Sent again later on a subscriber's connection: a message of its own.
    a.data(1, Side::Server, T0 + 20, 7, &p, &mut s);
    assert_eq!(a.stats().messages, 2);
}

/// `seq.linkup_first` judges the edge's first message in the input only: the same
/// device reconnecting (a new connection, its CONNECT seen) is no power-on.
#[test]
fn linkup_first_is_judged_once_per_edge_not_per_reconnect() {
    let report = r#"{"type":"REP_SYS_STATUS","timestamp":"2026-11-26 18:00:00","param":{"cpuRate":5,"memUsed":{"phy":40},"diskUsed":30,"tempValue":41,"devDateTime":"2026-11-26 18:00:02","devStDateTime":"2026-11-26 08:00:00","devRunTime":7200,"linkState":[]}}"#;
    let mut a = analyzer(1 << 20);
    let mut s = Collector::default();
    for c in [1, 2, 3] {
        a.open(c, None, None, false);
        a.data(
            c,
            Side::Client,
            T0 + c as i64,
            c * 2,
            &connect("edge"),
            &mut s,
        );
        let p = publish("/v1/E1/device/data", report);
        a.data(c, Side::Client, T0 + c as i64 + 1, c * 2 + 1, &p, &mut s);
        a.close(c, T0 + c as i64 + 2, c * 2 + 1, &mut s);
    }
    a.finish(&mut s);
    let n = s
        .findings
        .iter()
        .filter(|f| f.rule == "seq.linkup_first")
        .count();
    assert_eq!(n, 1, "{:?}", rules_of(&s.findings));
}

/// A QoS 1 reply whose PUBACK was lost with the link is sent again with DUP on the
/// device's next connection: the same message (MQTT's at-least-once), not a second
/// reply. Without DUP, the same bytes are a message of their own.
#[test]
fn a_dup_resend_after_a_reconnect_is_the_same_message() {
    let reply = r#"{"mid":5,"type":"CMD_CON_START","timestamp":"2026-11-26 18:00:02","code":200}"#;
    for (dup, messages) in [(true, 1), (false, 2)] {
        let mut a = analyzer(1 << 20);
        let mut s = Collector::default();
        for c in [1, 2] {
            a.open(c, None, None, false);
            a.data(
                c,
                Side::Client,
                T0 + c as i64 * 10,
                c * 3,
                &connect("edge"),
                &mut s,
            );
            let p = publish_qos1("/v1/E1/container/reply", reply, 77, c == 2 && dup);
            a.data(
                c,
                Side::Client,
                T0 + c as i64 * 10 + 1,
                c * 3 + 1,
                &p,
                &mut s,
            );
        }
        assert_eq!(a.stats().messages, messages, "dup {dup}");
    }
}

/// A PUBLISH a client library already decoded (the sims' tap, replay) is judged as
/// its bytes would be: the same findings, counters and clauses.
#[test]
fn a_decoded_publish_is_judged_as_its_bytes_are() {
    let bad = r#"{"mid":6,"type":"REP_SYS_STATUS","timestamp":"2026-11-26 18:00:00","param":{"cpuRate":"x"}}"#;
    let run = |decoded: bool| {
        let (mut a, mut s) = edge_connected();
        for (i, p) in [LINKUP, bad].iter().enumerate() {
            let topic = ["/v1/E1/device/request", "/v1/E1/device/data"][i];
            let at = At::new(1, T0 + 1000 * (i as i64 + 1), 2 + i as u64);
            if decoded {
                let packet = edgetap::mqtt::Packet::Publish(edgetap::mqtt::Publish {
                    topic: topic.into(),
                    payload: bytes::Bytes::from(p.to_string()),
                    qos: 0,
                    pkid: 0,
                    retain: false,
                    dup: false,
                    topic_alias: None,
                });
                let side = Side::Client;
                a.push(at, Input::Packet { side, packet }, &mut s);
            } else {
                let bytes = &publish(topic, p);
                a.push(
                    at,
                    Input::Data {
                        side: Side::Client,
                        bytes,
                    },
                    &mut s,
                );
            }
        }
        let summary = a.finish(&mut s);
        let found: Vec<String> = s
            .findings
            .iter()
            .map(|f| format!("{} {:?} {}", f.rule, f.packet, f.message))
            .collect();
        (
            found,
            summary.stats.messages,
            summary.stats.mqtt_packets,
            summary.coverage,
        )
    };
    let (from_bytes, from_packet) = (run(false), run(true));
    assert!(
        from_bytes
            .0
            .iter()
            .any(|f| f.starts_with("t10.REP_SYS_STATUS")),
        "{:?}",
        from_bytes.0
    );
    assert_eq!(from_bytes.1, 2);
    assert_eq!(from_packet, from_bytes);
}
