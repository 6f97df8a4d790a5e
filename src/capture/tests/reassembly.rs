//! TCP reassembly: each byte once and in order whatever the capture's retransmissions,
//! overlaps, reordering and wrap-around; missing bytes as a gap of their length.

use super::*;

#[test]
fn in_order_session_gives_open_data_close_with_frames() {
    let conv = mqtt_session("10.0.0.2:50000", "10.0.0.1:1883");
    let (events, stats) = read_all(
        pcap(DataLink::ETHERNET, &conv.frames(Link::Ethernet)),
        CaptureOptions::default(),
    );
    let (client, server) = (addr("10.0.0.2:50000"), addr("10.0.0.1:1883"));
    assert_eq!(
        events,
        vec![
            Ev::Open {
                conn: 1,
                client,
                server,
                frame: 1,
                midstream: false
            },
            Ev::Data {
                conn: 1,
                side: Side::Client,
                frame: 4,
                data: CONNECT.to_vec()
            },
            Ev::Data {
                conn: 1,
                side: Side::Server,
                frame: 5,
                data: CONNACK.to_vec()
            },
            Ev::Data {
                conn: 1,
                side: Side::Client,
                frame: 6,
                data: PUBLISH.to_vec()
            },
            Ev::Close {
                conn: 1,
                frame: 8,
                reset: false
            },
        ]
    );
    assert_eq!(
        (
            stats.frames,
            stats.tcp_segments,
            stats.flows,
            stats.mqtt_flows
        ),
        (9, 9, 1, 1)
    );
    assert_eq!(stats.bad_frames + stats.gaps, 0);
}

#[test]
fn open_carries_time_of_first_segment_in_microseconds() {
    let conv = mqtt_session("10.0.0.2:50000", "10.0.0.1:1883");
    let mut reader = CaptureReader::from_reader(
        Cursor::new(pcap(DataLink::ETHERNET, &conv.frames(Link::Ethernet))),
        "t".into(),
        CaptureOptions::default(),
    )
    .unwrap();
    let mut times = Vec::new();
    reader
        .run(&mut |e| match e {
            FlowEvent::Open { time_us, .. }
            | FlowEvent::Data { time_us, .. }
            | FlowEvent::Close { time_us, .. } => times.push(time_us),
            _ => {}
        })
        .unwrap();
    assert_eq!(
        times,
        vec![
            T0_US,
            T0_US + 3000,
            T0_US + 4000,
            T0_US + 5000,
            T0_US + 7000
        ]
    );
}

#[test]
fn out_of_order_segments_are_held_until_contiguous() {
    let mut conv = Conv::new("10.0.0.2:50000", "10.0.0.1:1883");
    conv.handshake()
        .c(0, b"AAA")
        .c(6, b"CCC")
        .c(9, b"DDD")
        .c(3, b"BBB");
    let events = read_default(pcap(DataLink::ETHERNET, &conv.frames(Link::Ethernet)));
    assert_eq!(
        chunks(&events, 1, Side::Client),
        vec![
            (4, "AAA".into()),
            (7, "BBB".into()),
            (7, "CCC".into()),
            (7, "DDD".into())
        ]
    );
}

#[test]
fn retransmissions_and_overlaps_emit_each_byte_once() {
    let mut conv = Conv::new("10.0.0.2:50000", "10.0.0.1:1883");
    conv.handshake()
        .c(0, b"hello")
        .c(0, b"hello")
        .c(3, b"lo wor")
        .c(6, b"world")
        .c(2, b"l")
        .s(0, b"ok")
        .s(0, b"ok");
    let events = read_default(pcap(DataLink::ETHERNET, &conv.frames(Link::Ethernet)));
    assert_eq!(
        chunks(&events, 1, Side::Client),
        vec![(4, "hello".into()), (6, " wor".into()), (7, "ld".into())]
    );
    assert_eq!(stream(&events, 1, Side::Server), "ok");
}

#[test]
fn sequence_numbers_wrap_around() {
    let mut conv = Conv::new("10.0.0.2:50000", "10.0.0.1:1883").isn(u32::MAX - 3, u32::MAX);
    conv.handshake()
        .c(0, b"0123")
        .c(4, b"4567")
        .s(0, b"xy")
        .c(8, b"89")
        .fins();
    let events = read_default(pcap(DataLink::ETHERNET, &conv.frames(Link::Ethernet)));
    assert_eq!(stream(&events, 1, Side::Client), "0123456789");
    assert_eq!(stream(&events, 1, Side::Server), "xy");
    assert!(
        events.contains(&Ev::Close {
            conn: 1,
            frame: 9,
            reset: false
        }),
        "{events:?}"
    );
}

#[test]
fn missing_segment_is_a_gap_of_its_length_at_end_of_file() {
    let mut conv = Conv::new("10.0.0.2:50000", "10.0.0.1:1883");
    conv.handshake()
        .c(0, b"abc")
        .c(3, b"def")
        .c(6, b"ghi")
        .c(9, b"jk");
    conv.segs.remove(4); // "def" never captured
    let events = read_default(pcap(DataLink::ETHERNET, &conv.frames(Link::Ethernet)));
    assert_eq!(stream(&events, 1, Side::Client), "abc<gap 3>ghijk");
    // Held until the end of the file: reported then, with the last frame number.
    assert!(
        events.contains(&Ev::Gap {
            conn: 1,
            side: Side::Client,
            frame: 6,
            lost: 3
        }),
        "{events:?}"
    );
    assert_eq!(
        events.last(),
        Some(&Ev::Close {
            conn: 1,
            frame: 6,
            reset: false
        })
    );
}

#[test]
fn missing_segment_acknowledged_by_the_peer_is_a_gap_at_once() {
    let mut conv = Conv::new("10.0.0.2:50000", "10.0.0.1:1883");
    conv.handshake()
        .c(0, b"abc")
        .c(3, b"def")
        .c(6, b"ghi")
        .s(0, b"")
        .c(9, b"jk");
    conv.segs.remove(4); // "def" never captured, but the server acknowledges it
    let events = read_default(pcap(DataLink::ETHERNET, &conv.frames(Link::Ethernet)));
    assert_eq!(stream(&events, 1, Side::Client), "abc<gap 3>ghijk");
    assert!(
        events.contains(&Ev::Gap {
            conn: 1,
            side: Side::Client,
            frame: 6,
            lost: 3
        }),
        "{events:?}"
    );
    assert_eq!(
        chunks(&events, 1, Side::Client),
        vec![(4, "abc".into()), (6, "ghi".into()), (7, "jk".into())]
    );
}

#[test]
fn reorder_budget_overflow_gives_up_the_hole_at_once() {
    let mut conv = Conv::new("10.0.0.2:50000", "10.0.0.1:1883");
    conv.handshake()
        .c(0, b"abc")
        .c(3, b"def")
        .c(6, b"ghi")
        .c(9, b"jkl")
        .c(12, b"mn");
    conv.segs.remove(4);
    let opts = CaptureOptions {
        max_reorder_bytes: 5,
        ..Default::default()
    };
    let (events, stats) = read_all(pcap(DataLink::ETHERNET, &conv.frames(Link::Ethernet)), opts);
    assert_eq!(stream(&events, 1, Side::Client), "abc<gap 3>ghijklmn");
    // "ghi" (3 bytes) fits the budget; "jkl" makes 6 > 5: the gap is given up at frame 6.
    assert!(
        events.contains(&Ev::Gap {
            conn: 1,
            side: Side::Client,
            frame: 6,
            lost: 3
        }),
        "{events:?}"
    );
    assert_eq!(
        chunks(&events, 1, Side::Client),
        vec![
            (4, "abc".into()),
            (6, "ghi".into()),
            (6, "jkl".into()),
            (7, "mn".into())
        ]
    );
    assert_eq!((stats.gaps, stats.lost_bytes), (1, 3));
}

#[test]
fn segment_cut_by_snap_length_is_data_then_gap() {
    let mut conv = Conv::new("10.0.0.2:50000", "10.0.0.1:1883");
    conv.handshake()
        .c(0, b"0123456789")
        .c(10, b"abc")
        .s(0, b"ok");
    let mut frames = conv.frames(Link::Ethernet);
    let cut = frames[3].len() - 4;
    frames[3].truncate(cut); // the last 4 payload bytes not captured
    let events = read_default(pcap(DataLink::ETHERNET, &frames));
    assert_eq!(stream(&events, 1, Side::Client), "012345<gap 4>abc");
    // Known lost at once: the next segment is not held behind a hole.
    assert!(
        events.contains(&Ev::Gap {
            conn: 1,
            side: Side::Client,
            frame: 4,
            lost: 4
        }),
        "{events:?}"
    );
    assert_eq!(chunks(&events, 1, Side::Client)[1], (5, "abc".into()));
}

#[test]
fn lost_first_server_segment_after_handshake_is_a_gap() {
    // The SYN-ACK is missing, but the client's ACK says where the server starts.
    let mut conv = Conv::new("10.0.0.2:50000", "10.0.0.1:1883");
    conv.handshake()
        .c(0, CONNECT)
        .s(0, CONNACK)
        .s(4, b"\x30\x00");
    conv.segs.remove(4);
    conv.segs.remove(1);
    let events = read_default(pcap(DataLink::ETHERNET, &conv.frames(Link::Ethernet)));
    assert_eq!(stream(&events, 1, Side::Server), "<gap 4>0\x00");
}
