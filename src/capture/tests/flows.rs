//! Flows: which are MQTT (port, sniffed CONNECT, TLS), mid-stream starts, RST and
//! SYN on a known tuple, flows without payload, the busiest ports, and how a flow
//! closes.

use super::*;

#[test]
fn capture_starting_mid_stream() {
    // No handshake; the server speaks first in the capture, the client port is higher.
    let mut conv = Conv::new("10.0.0.2:50000", "10.0.0.1:1883");
    conv.s(100, b"\x20\x02")
        .s(102, b"\x00\x00")
        .c(200, b"\xc0\x00")
        .s(104, b"\xd0\x00");
    let events = read_default(pcap(DataLink::ETHERNET, &conv.frames(Link::Ethernet)));
    assert_eq!(
        events[0],
        Ev::Open {
            conn: 1,
            client: addr("10.0.0.2:50000"),
            server: addr("10.0.0.1:1883"),
            frame: 1,
            midstream: true
        }
    );
    assert_eq!(
        stream(&events, 1, Side::Server),
        "\x20\x02\x00\x00\u{fffd}\x00"
    );
    assert_eq!(
        chunks(&events, 1, Side::Client),
        vec![(3, "\u{fffd}\x00".into())]
    );
    assert_eq!(
        events.last(),
        Some(&Ev::Close {
            conn: 1,
            frame: 4,
            reset: false
        })
    );
}

#[test]
fn midstream_client_is_the_side_off_the_mqtt_port_even_if_higher() {
    let mut conv = Conv::new("10.0.0.2:1000", "10.0.0.1:1883");
    conv.c(0, b"\xc0\x00");
    let events = read_default(pcap(DataLink::ETHERNET, &conv.frames(Link::Ethernet)));
    assert_eq!(
        events[0],
        Ev::Open {
            conn: 1,
            client: addr("10.0.0.2:1000"),
            server: addr("10.0.0.1:1883"),
            frame: 1,
            midstream: true
        }
    );
}

#[test]
fn rst_closes_with_reset_and_new_syn_starts_a_new_flow() {
    let mut conv = Conv::new("10.0.0.2:50000", "10.0.0.1:1883");
    conv.handshake()
        .c(0, CONNECT)
        .seg(false, 0, b"", false, false, true, true);
    // A stray ACK after the RST belongs to the dead flow.
    conv.c(CONNECT.len() as u32, b"");
    let mut again = Conv::new("10.0.0.2:50000", "10.0.0.1:1883").isn(77_000, 88_000);
    again.handshake().c(0, b"\x10\x02\x00\x04");
    let mut frames = conv.frames(Link::Ethernet);
    frames.extend(again.frames(Link::Ethernet));
    let events = read_default(pcap(DataLink::ETHERNET, &frames));
    let opens: Vec<_> = events
        .iter()
        .filter_map(|e| {
            if let Ev::Open { conn, frame, .. } = e {
                Some((*conn, *frame))
            } else {
                None
            }
        })
        .collect();
    assert_eq!(opens, vec![(1, 1), (2, 7)]);
    assert!(
        events.contains(&Ev::Close {
            conn: 1,
            frame: 5,
            reset: true
        }),
        "{events:?}"
    );
    assert_eq!(stream(&events, 1, Side::Client), concat(&[CONNECT]));
    assert_eq!(stream(&events, 2, Side::Client), "\x10\x02\x00\x04");
    assert_eq!(
        events.last(),
        Some(&Ev::Close {
            conn: 2,
            frame: 10,
            reset: false
        })
    );
}

#[test]
fn syn_on_a_finished_tuple_is_a_new_flow() {
    let first = mqtt_session("10.0.0.2:50000", "10.0.0.1:1883");
    let second = mqtt_session("10.0.0.2:50000", "10.0.0.1:1883").isn(9, 99);
    let mut frames = first.frames(Link::Ethernet);
    frames.extend(second.frames(Link::Ethernet));
    let events = read_default(pcap(DataLink::ETHERNET, &frames));
    assert_eq!(count(&events, |e| matches!(e, Ev::Open { .. })), 2);
    assert_eq!(
        count(&events, |e| matches!(e, Ev::Close { reset: false, .. })),
        2
    );
    for conn in [1, 2] {
        assert_eq!(
            stream(&events, conn, Side::Client),
            concat(&[CONNECT, PUBLISH])
        );
        assert_eq!(stream(&events, conn, Side::Server), concat(&[CONNACK]));
    }
}

#[test]
fn flows_without_payload_are_not_reported() {
    let mut probe = Conv::new("10.0.0.2:50000", "10.0.0.1:1883");
    probe.handshake().fins();
    let mut refused = Conv::new("10.0.0.2:50001", "10.0.0.1:1883");
    refused
        .seg(true, 0, b"", true, false, false, false)
        .seg(false, 0, b"", false, false, true, true);
    let mut frames = probe.frames(Link::Ethernet);
    frames.extend(refused.frames(Link::Ethernet));
    let (events, stats) = read_all(pcap(DataLink::ETHERNET, &frames), CaptureOptions::default());
    assert_eq!(events, vec![]);
    assert_eq!((stats.flows, stats.mqtt_flows), (2, 0));
}

#[test]
fn first_client_bytes_too_few_to_classify_are_still_emitted_at_the_end() {
    let mut conv = Conv::new("10.0.0.2:50000", "10.0.0.1:1883");
    conv.handshake().c(0, b"\x16\x03").fins();
    let events = read_default(pcap(DataLink::ETHERNET, &conv.frames(Link::Ethernet)));
    assert_eq!(
        events,
        vec![
            Ev::Open {
                conn: 1,
                client: addr("10.0.0.2:50000"),
                server: addr("10.0.0.1:1883"),
                frame: 1,
                midstream: false
            },
            Ev::Data {
                conn: 1,
                side: Side::Client,
                frame: 6,
                data: b"\x16\x03".to_vec()
            },
            Ev::Close {
                conn: 1,
                frame: 6,
                reset: false
            },
        ]
    );
}

#[test]
fn connect_on_another_port_is_sniffed_even_split_in_tiny_segments() {
    let mut conv = Conv::new("10.0.0.2:50000", "10.0.0.1:17501");
    conv.handshake()
        .c(0, &CONNECT[..1])
        .c(1, &CONNECT[1..5])
        .c(5, &CONNECT[5..])
        .s(0, CONNACK)
        .fins();
    let events = read_default(pcap(DataLink::ETHERNET, &conv.frames(Link::Ethernet)));
    assert_eq!(
        events[0],
        Ev::Open {
            conn: 1,
            client: addr("10.0.0.2:50000"),
            server: addr("10.0.0.1:17501"),
            frame: 1,
            midstream: false
        }
    );
    // The sniffed first bytes come out at once when the CONNECT is recognised.
    assert_eq!(
        chunks(&events, 1, Side::Client),
        vec![(6, concat(&[CONNECT]))]
    );
    assert_eq!(stream(&events, 1, Side::Server), concat(&[CONNACK]));
}

#[test]
fn other_traffic_on_other_ports_is_ignored() {
    let mut http = Conv::new("10.0.0.2:50001", "10.0.0.1:8080");
    http.handshake()
        .c(0, b"GET / HTTP/1.1\r\n\r\n")
        .s(0, b"HTTP/1.1 200 OK\r\n\r\n")
        .fins();
    let mut server_first = Conv::new("10.0.0.2:50002", "10.0.0.1:25");
    server_first.handshake().s(0, b"220 smtp\r\n").c(0, CONNECT);
    let mut frames = http.frames(Link::Ethernet);
    frames.extend(server_first.frames(Link::Ethernet));
    let (events, stats) = read_all(pcap(DataLink::ETHERNET, &frames), CaptureOptions::default());
    assert_eq!(events, vec![]);
    assert_eq!((stats.flows, stats.mqtt_flows), (2, 0));
    // Where to look instead: the server ports, the busiest first.
    let busiest = stats.busiest_ports(5);
    let http_bytes = (b"GET / HTTP/1.1\r\n\r\n".len() + b"HTTP/1.1 200 OK\r\n\r\n".len()) as u64;
    let smtp_bytes = (b"220 smtp\r\n".len() + CONNECT.len()) as u64;
    assert_eq!(
        busiest,
        vec![
            (
                8080,
                PortTraffic {
                    flows: 1,
                    bytes: http_bytes
                }
            ),
            (
                25,
                PortTraffic {
                    flows: 1,
                    bytes: smtp_bytes
                }
            ),
        ]
    );
}

#[test]
fn extra_ports_are_decoded_without_connect() {
    let mut conv = Conv::new("10.0.0.2:50000", "10.0.0.1:17501");
    conv.c(0, PUBLISH);
    let opts = CaptureOptions {
        ports: vec![1883, 17501],
        ..Default::default()
    };
    let (events, _) = read_all(pcap(DataLink::ETHERNET, &conv.frames(Link::Ethernet)), opts);
    assert_eq!(stream(&events, 1, Side::Client), concat(&[PUBLISH]));
}

const CLIENT_HELLO: &[u8] = b"\x16\x03\x01\x00\x2f\x01\x00\x00\x2b\x03\x03rest-of-hello";

#[test]
fn tls_on_8883_is_not_decodable_at_once() {
    let mut conv = Conv::new("10.0.0.2:50000", "10.0.0.1:8883");
    conv.handshake()
        .c(0, CLIENT_HELLO)
        .s(0, b"\x16\x03\x03server")
        .fins();
    let events = read_default(pcap(DataLink::ETHERNET, &conv.frames(Link::Ethernet)));
    assert_eq!(
        events,
        vec![Ev::NotDecodable {
            conn: 1,
            frame: 1,
            reason: "TLS".into()
        }]
    );
}

#[test]
fn tls_client_hello_on_1883_is_not_decodable() {
    let mut tls = Conv::new("10.0.0.2:50000", "10.0.0.1:1883");
    // The ClientHello's first bytes arrive alone: 0x16 0x03 is not enough to decide.
    tls.handshake()
        .c(0, &CLIENT_HELLO[..2])
        .c(2, &CLIENT_HELLO[2..])
        .s(0, b"\x16\x03\x03server")
        .fins();
    let plain = mqtt_session("10.0.0.3:50000", "10.0.0.1:1883");
    let mut frames = tls.frames(Link::Ethernet);
    frames.extend(plain.frames(Link::Ethernet));
    let (events, stats) = read_all(pcap(DataLink::ETHERNET, &frames), CaptureOptions::default());
    assert_eq!(
        events[0],
        Ev::NotDecodable {
            conn: 1,
            frame: 1,
            reason: "TLS".into()
        }
    );
    assert!(
        !events.iter().any(|e| matches!(
            e,
            Ev::Data { conn: 1, .. } | Ev::Open { conn: 1, .. } | Ev::Close { conn: 1, .. }
        )),
        "{events:?}"
    );
    assert_eq!(
        stream(&events, 2, Side::Client),
        concat(&[CONNECT, PUBLISH])
    );
    assert_eq!((stats.not_decodable_flows, stats.mqtt_flows), (1, 1));
}

#[test]
fn busiest_ports_of_a_late_capture_off_the_mqtt_ports_put_the_shared_server_port_first() {
    // No SYN and no MQTT port: which side serves is unknown, and here the server port
    // is the higher one. Counted on both ports, the server's adds up both flows.
    let mut a = Conv::new("10.0.0.2:30001", "10.0.0.1:45000");
    a.c(0, b"0123456789").s(0, b"abc");
    let mut b = Conv::new("10.0.0.3:30002", "10.0.0.1:45000");
    b.c(0, b"0123456789");
    let mut frames = a.frames(Link::Ethernet);
    frames.extend(b.frames(Link::Ethernet));
    let (_, stats) = read_all(pcap(DataLink::ETHERNET, &frames), CaptureOptions::default());
    let busiest = stats.busiest_ports(3);
    assert_eq!(
        busiest[0],
        (
            45000,
            PortTraffic {
                flows: 2,
                bytes: 23
            }
        ),
        "{busiest:?}"
    );
}

/// A flow closed by its FINs and one still open when the capture ends are told apart:
/// the second's Close says the input ended (a packet cut there is the capture's).
#[test]
fn a_flow_open_at_the_end_of_the_capture_closes_with_input_ended() {
    let run = |fins: bool| {
        let mut conv = Conv::new("10.0.0.2:50000", "10.0.0.1:1883");
        conv.handshake().c(0, b"abc");
        if fins {
            conv.fins();
        }
        let bytes = pcap(DataLink::ETHERNET, &conv.frames(Link::Ethernet));
        let mut reader = CaptureReader::from_reader(
            Cursor::new(bytes),
            "test.pcap".to_string(),
            Default::default(),
        )
        .expect("readable capture");
        let mut ended = vec![];
        reader
            .run(&mut |e| {
                if let FlowEvent::Close { input_ended, .. } = e {
                    ended.push(input_ended);
                }
            })
            .expect("run");
        ended
    };
    assert_eq!(run(true), [false]);
    assert_eq!(run(false), [true]);
}
