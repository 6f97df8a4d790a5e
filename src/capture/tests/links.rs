//! Link layers: every framing under test (Ethernet with and without VLAN, Linux
//! cooked v1 and v2, raw IP, BSD null and loop) gives the same streams, over IPv6
//! too; non-TCP frames, IP fragments, broken frames, an unsupported link type.

use super::*;

#[test]
fn every_link_type_yields_the_same_streams() {
    let links = [
        Link::Ethernet,
        Link::EthernetVlan,
        Link::Sll,
        Link::Sll2,
        Link::Raw,
        Link::RawBsd,
        Link::Ipv4Only,
        Link::NullLittle,
        Link::NullBig,
        Link::Loop,
    ];
    for link in links {
        let conv = mqtt_session("192.168.1.20:40000", "192.168.1.1:1883");
        let events = read_default(pcap(link.datalink(), &conv.frames(link)));
        assert_eq!(
            stream(&events, 1, Side::Client),
            concat(&[CONNECT, PUBLISH]),
            "{link:?}: {events:?}"
        );
        assert_eq!(
            stream(&events, 1, Side::Server),
            concat(&[CONNACK]),
            "{link:?}"
        );
        assert_eq!(
            count(&events, |e| matches!(e, Ev::Bad { .. })),
            0,
            "{link:?}"
        );
    }
}

#[test]
fn ipv6_over_every_link_type() {
    for link in [
        Link::Ethernet,
        Link::EthernetVlan,
        Link::Sll,
        Link::Sll2,
        Link::Raw,
        Link::Ipv6Only,
        Link::NullLittle,
        Link::NullBig,
        Link::Loop,
    ] {
        let conv = mqtt_session("[2001:db8::2]:40000", "[2001:db8::1]:1883");
        let events = read_default(pcap(link.datalink(), &conv.frames(link)));
        assert_eq!(
            events[0],
            Ev::Open {
                conn: 1,
                client: addr("[2001:db8::2]:40000"),
                server: addr("[2001:db8::1]:1883"),
                frame: 1,
                midstream: false
            },
            "{link:?}"
        );
        assert_eq!(
            stream(&events, 1, Side::Client),
            concat(&[CONNECT, PUBLISH]),
            "{link:?}"
        );
        assert_eq!(
            stream(&events, 1, Side::Server),
            concat(&[CONNACK]),
            "{link:?}"
        );
    }
}

#[test]
fn non_tcp_frames_are_ignored_quietly() {
    let arp = {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0x08, 0x06]);
        f.extend_from_slice(&[0; 28]);
        f
    };
    let mut udp = Vec::new();
    PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .udp(5683, 1883)
        .write(&mut udp, b"coap")
        .unwrap();
    let (events, stats) = read_all(
        pcap(DataLink::ETHERNET, &[arp, udp]),
        CaptureOptions::default(),
    );
    assert_eq!(events, vec![]);
    assert_eq!(
        (stats.frames, stats.tcp_segments, stats.bad_frames),
        (2, 0, 0)
    );
}

#[test]
fn ip_fragments_are_counted_not_decoded() {
    let conv = mqtt_session("10.0.0.2:50000", "10.0.0.1:1883");
    let mut frame = conv.frames(Link::Raw)[3].clone();
    frame[6] = 0x20; // more fragments
    let (events, stats) = read_all(pcap(DataLink::RAW, &[frame]), CaptureOptions::default());
    assert_eq!(events, vec![]);
    assert_eq!(stats.ip_fragments, 1);
}

#[test]
fn broken_frames_are_reported_and_reading_goes_on() {
    let conv = mqtt_session("10.0.0.2:50000", "10.0.0.1:1883");
    let mut frames = conv.frames(Link::Ethernet);
    frames.insert(3, frames[3][..14 + 20 + 10].to_vec()); // TCP header cut after 10 bytes
    frames.insert(0, vec![1, 2, 3]); // not even an Ethernet header
    let events = read_default(pcap(DataLink::ETHERNET, &frames));
    let bad: Vec<_> = events
        .iter()
        .filter_map(|e| {
            if let Ev::Bad { frame, message } = e {
                Some((*frame, message.clone()))
            } else {
                None
            }
        })
        .collect();
    assert_eq!(bad.len(), 2, "{bad:?}");
    assert_eq!(bad[0].0, 1);
    assert!(
        bad[0]
            .1
            .starts_with("test.pcap: frame 1 at byte offset 24: truncated Ethernet header"),
        "{}",
        bad[0].1
    );
    assert_eq!(bad[1].0, 5);
    assert!(
        bad[1].1.starts_with("test.pcap: frame 5 at byte offset ")
            && bad[1].1.contains("TCP header"),
        "{}",
        bad[1].1
    );
    assert_eq!(
        stream(&events, 1, Side::Client),
        concat(&[CONNECT, PUBLISH])
    );
}

#[test]
fn unsupported_link_type_is_reported_once() {
    let conv = mqtt_session("10.0.0.2:50000", "10.0.0.1:1883");
    let (events, stats) = read_all(
        pcap(DataLink::IEEE802_11_RADIOTAP, &conv.frames(Link::Ethernet)),
        CaptureOptions::default(),
    );
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(
        matches!(&events[0], Ev::Bad { frame: 1, message } if message.contains("unsupported link type 127")),
        "{events:?}"
    );
    assert_eq!(stats.unsupported_frames, stats.frames);
}
