//! Tests of the capture reader on hand-built captures: frames built with etherparse,
//! written with pcap-file's writers into memory, read back through
//! `CaptureReader::from_reader`, and the events compared byte for byte.

use std::borrow::Cow;
use std::io::Cursor;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use etherparse::{IpHeaders, PacketBuilder, PacketBuilderStep};
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::blocks::simple_packet::SimplePacketBlock;
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::{DataLink, Endianness, TsResolution};

use super::*;

// ---------------------------------------------------------------- events, owned

#[derive(Clone, Debug, PartialEq, Eq)]
enum Ev {
    Open {
        conn: ConnId,
        client: SocketAddr,
        server: SocketAddr,
        frame: u64,
        midstream: bool,
    },
    Data {
        conn: ConnId,
        side: Side,
        frame: u64,
        data: Vec<u8>,
    },
    Gap {
        conn: ConnId,
        side: Side,
        frame: u64,
        lost: u64,
    },
    Close {
        conn: ConnId,
        frame: u64,
        reset: bool,
    },
    NotDecodable {
        conn: ConnId,
        frame: u64,
        reason: String,
    },
    Bad {
        frame: u64,
        message: String,
    },
    Continued {
        from: ConnId,
        conn: ConnId,
    },
}

fn own(e: FlowEvent<'_>) -> Ev {
    match e {
        FlowEvent::Open {
            conn,
            client,
            server,
            frame,
            midstream,
            ..
        } => Ev::Open {
            conn,
            client,
            server,
            frame,
            midstream,
        },
        FlowEvent::Data {
            conn,
            side,
            frame,
            data,
            ..
        } => Ev::Data {
            conn,
            side,
            frame,
            data: data.to_vec(),
        },
        FlowEvent::Gap {
            conn,
            side,
            frame,
            lost,
            ..
        } => Ev::Gap {
            conn,
            side,
            frame,
            lost,
        },
        FlowEvent::Close {
            conn, frame, reset, ..
        } => Ev::Close { conn, frame, reset },
        FlowEvent::NotDecodable {
            conn,
            frame,
            reason,
            ..
        } => Ev::NotDecodable {
            conn,
            frame,
            reason,
        },
        FlowEvent::BadFrame { frame, message, .. } => Ev::Bad { frame, message },
        FlowEvent::Continued { from, conn } => Ev::Continued { from, conn },
    }
}

fn read_all(bytes: Vec<u8>, opts: CaptureOptions) -> (Vec<Ev>, Stats) {
    let mut reader = CaptureReader::from_reader(Cursor::new(bytes), "test.pcap".to_string(), opts)
        .expect("readable capture");
    let mut events = Vec::new();
    let stats = reader.run(&mut |e| events.push(own(e))).expect("run");
    (events, stats)
}

fn read_default(bytes: Vec<u8>) -> Vec<Ev> {
    read_all(bytes, CaptureOptions::default()).0
}

/// One direction of one flow as text: data bytes (lossy UTF-8), gaps as `<gap N>`.
fn stream(events: &[Ev], conn: ConnId, side: Side) -> String {
    let mut s = String::new();
    for e in events {
        match e {
            Ev::Data {
                conn: c,
                side: d,
                data,
                ..
            } if *c == conn && *d == side => s.push_str(&String::from_utf8_lossy(data)),
            Ev::Gap {
                conn: c,
                side: d,
                lost,
                ..
            } if *c == conn && *d == side => s.push_str(&format!("<gap {lost}>")),
            _ => {}
        }
    }
    s
}

/// The data chunks of one direction, as emitted.
fn chunks(events: &[Ev], conn: ConnId, side: Side) -> Vec<(u64, String)> {
    events
        .iter()
        .filter_map(|e| match e {
            Ev::Data {
                conn: c,
                side: d,
                frame,
                data,
            } if *c == conn && *d == side => {
                Some((*frame, String::from_utf8_lossy(data).into_owned()))
            }
            _ => None,
        })
        .collect()
}

fn count(events: &[Ev], pred: impl Fn(&Ev) -> bool) -> usize {
    events.iter().filter(|e| pred(e)).count()
}

// ---------------------------------------------------------------- frames

/// Link framings under test, with their pcap link type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Link {
    Ethernet,
    EthernetVlan,
    Sll,
    Sll2,
    Raw,
    RawBsd,
    Ipv4Only,
    Ipv6Only,
    NullLittle,
    NullBig,
    Loop,
}

impl Link {
    fn datalink(self) -> DataLink {
        DataLink::from(match self {
            Link::Ethernet | Link::EthernetVlan => 1,
            Link::Sll => 113,
            Link::Sll2 => 276,
            Link::Raw => 101,
            Link::RawBsd => 12,
            Link::Ipv4Only => 228,
            Link::Ipv6Only => 229,
            Link::NullLittle | Link::NullBig => 0,
            Link::Loop => 108,
        })
    }
}

/// One TCP segment to build.
#[derive(Clone, Debug)]
struct Seg {
    src: SocketAddr,
    dst: SocketAddr,
    seq: u32,
    ack: Option<u32>,
    syn: bool,
    fin: bool,
    rst: bool,
    payload: Vec<u8>,
}

fn tcp(step: PacketBuilderStep<IpHeaders>, s: &Seg) -> Vec<u8> {
    let mut b = step.tcp(s.src.port(), s.dst.port(), s.seq, 64240);
    if s.syn {
        b = b.syn();
    }
    if s.fin {
        b = b.fin();
    }
    if s.rst {
        b = b.rst();
    }
    if let Some(ack) = s.ack {
        b = b.ack(ack);
    }
    if !s.payload.is_empty() {
        b = b.psh();
    }
    let mut out = Vec::with_capacity(b.size(s.payload.len()));
    b.write(&mut out, &s.payload).unwrap();
    out
}

/// The IP packet of a segment (no link header).
fn ip_packet(s: &Seg) -> Vec<u8> {
    match (s.src.ip(), s.dst.ip()) {
        (IpAddr::V4(a), IpAddr::V4(b)) => tcp(PacketBuilder::ipv4(a.octets(), b.octets(), 64), s),
        (IpAddr::V6(a), IpAddr::V6(b)) => tcp(PacketBuilder::ipv6(a.octets(), b.octets(), 64), s),
        _ => panic!("mixed address families"),
    }
}

fn frame(link: Link, s: &Seg) -> Vec<u8> {
    let (mac_a, mac_b) = ([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
    let v6 = s.src.is_ipv6();
    let ether_type: u16 = if v6 { 0x86DD } else { 0x0800 };
    let ip = ip_packet(s);
    let mut f = Vec::new();
    match link {
        Link::Ethernet => {
            let eth = PacketBuilder::ethernet2(mac_a, mac_b);
            return match (s.src.ip(), s.dst.ip()) {
                (IpAddr::V4(a), IpAddr::V4(b)) => tcp(eth.ipv4(a.octets(), b.octets(), 64), s),
                (IpAddr::V6(a), IpAddr::V6(b)) => tcp(eth.ipv6(a.octets(), b.octets(), 64), s),
                _ => panic!("mixed address families"),
            };
        }
        Link::EthernetVlan => {
            f.extend_from_slice(&mac_b);
            f.extend_from_slice(&mac_a);
            f.extend_from_slice(&[0x81, 0x00, 0x03, 0xF0]); // 802.1Q, VLAN 1008
            f.extend_from_slice(&ether_type.to_be_bytes());
        }
        Link::Sll => {
            f.extend_from_slice(&[0, 0, 0, 1, 0, 6]); // incoming, ARPHRD_ETHER, 6-byte address
            f.extend_from_slice(&mac_a);
            f.extend_from_slice(&[0, 0]);
            f.extend_from_slice(&ether_type.to_be_bytes());
        }
        Link::Sll2 => {
            f.extend_from_slice(&ether_type.to_be_bytes());
            f.extend_from_slice(&[0, 0, 0, 0, 0, 2, 0, 1, 0, 6]); // reserved, ifindex 2, ARPHRD_ETHER, incoming, 6
            f.extend_from_slice(&mac_a);
            f.extend_from_slice(&[0, 0]);
        }
        Link::Raw | Link::RawBsd | Link::Ipv4Only | Link::Ipv6Only => {}
        Link::NullLittle => f.extend_from_slice(&(if v6 { 30u32 } else { 2 }).to_le_bytes()),
        Link::NullBig => f.extend_from_slice(&(if v6 { 28u32 } else { 2 }).to_be_bytes()),
        Link::Loop => f.extend_from_slice(&(if v6 { 24u32 } else { 2 }).to_be_bytes()),
    }
    f.extend_from_slice(&ip);
    f
}

/// A TCP connection to script: sequence numbers are given as offsets in each side's
/// stream; acknowledgements follow what the peer sent.
struct Conv {
    client: SocketAddr,
    server: SocketAddr,
    cisn: u32,
    sisn: u32,
    sent: [u32; 2],
    segs: Vec<Seg>,
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

impl Conv {
    fn new(client: &str, server: &str) -> Conv {
        Conv {
            client: addr(client),
            server: addr(server),
            cisn: 1000,
            sisn: 5000,
            sent: [0; 2],
            segs: Vec::new(),
        }
    }
    fn isn(mut self, cisn: u32, sisn: u32) -> Conv {
        self.cisn = cisn;
        self.sisn = sisn;
        self
    }
    #[allow(clippy::too_many_arguments)]
    fn seg(
        &mut self,
        client: bool,
        off: u32,
        payload: &[u8],
        syn: bool,
        fin: bool,
        rst: bool,
        ack: bool,
    ) -> &mut Self {
        let (src, dst, isn, peer_isn, me, peer) = if client {
            (self.client, self.server, self.cisn, self.sisn, 0, 1)
        } else {
            (self.server, self.client, self.sisn, self.cisn, 1, 0)
        };
        let seq = if syn {
            isn
        } else {
            isn.wrapping_add(1).wrapping_add(off)
        };
        let ack = ack.then(|| peer_isn.wrapping_add(1).wrapping_add(self.sent[peer]));
        self.sent[me] = self.sent[me].max(off + payload.len() as u32);
        self.segs.push(Seg {
            src,
            dst,
            seq,
            ack,
            syn,
            fin,
            rst,
            payload: payload.to_vec(),
        });
        self
    }
    fn handshake(&mut self) -> &mut Self {
        self.seg(true, 0, b"", true, false, false, false)
            .seg(false, 0, b"", true, false, false, true)
            .seg(true, 0, b"", false, false, false, true)
    }
    fn c(&mut self, off: u32, payload: &[u8]) -> &mut Self {
        self.seg(true, off, payload, false, false, false, true)
    }
    fn s(&mut self, off: u32, payload: &[u8]) -> &mut Self {
        self.seg(false, off, payload, false, false, false, true)
    }
    fn fins(&mut self) -> &mut Self {
        let (c, s) = (self.sent[0], self.sent[1]);
        self.seg(true, c, b"", false, true, false, true)
            .seg(false, s, b"", false, true, false, true)
            .seg(true, c + 1, b"", false, false, false, true)
    }
    fn frames(&self, link: Link) -> Vec<Vec<u8>> {
        self.segs.iter().map(|s| frame(link, s)).collect()
    }
}

/// A pcap file (microsecond, big-endian unless told) holding these frames, one
/// millisecond apart from 2023-11-14T22:13:20Z.
fn pcap(link: DataLink, frames: &[Vec<u8>]) -> Vec<u8> {
    pcap_with(link, frames, TsResolution::MicroSecond, Endianness::Big)
}

const T0_US: i64 = 1_700_000_000_000_000;

fn pcap_with(
    link: DataLink,
    frames: &[Vec<u8>],
    ts_resolution: TsResolution,
    endianness: Endianness,
) -> Vec<u8> {
    let header = PcapHeader {
        datalink: link,
        ts_resolution,
        endianness,
        snaplen: 65535,
        ..Default::default()
    };
    let mut w = PcapWriter::with_header(Vec::new(), header).unwrap();
    for (i, f) in frames.iter().enumerate() {
        let ts = Duration::from_micros((T0_US + i as i64 * 1000) as u64) + Duration::from_nanos(7);
        w.write_packet(&PcapPacket::new(ts, f.len() as u32, f))
            .unwrap();
    }
    w.into_writer()
}

const CONNECT: &[u8] = b"\x10\x10\x00\x04MQTT\x04\x02\x00\x3c\x00\x04edge";
const CONNACK: &[u8] = b"\x20\x02\x00\x00";
const PUBLISH: &[u8] = b"\x30\x0b\x00\x03a/bhello!!";

fn mqtt_session(client: &str, server: &str) -> Conv {
    let mut c = Conv::new(client, server);
    c.handshake()
        .c(0, CONNECT)
        .s(0, CONNACK)
        .c(CONNECT.len() as u32, PUBLISH)
        .fins();
    c
}

fn concat(parts: &[&[u8]]) -> String {
    String::from_utf8_lossy(&parts.concat()).into_owned()
}

// ---------------------------------------------------------------- reassembly

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

// ---------------------------------------------------------------- link types

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

// ---------------------------------------------------------------- flow selection

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

// ---------------------------------------------------------------- file formats

#[test]
fn pcap_nanosecond_and_little_endian_variants() {
    let conv = mqtt_session("10.0.0.2:50000", "10.0.0.1:1883");
    for (res, end) in [
        (TsResolution::NanoSecond, Endianness::Little),
        (TsResolution::NanoSecond, Endianness::Big),
        (TsResolution::MicroSecond, Endianness::Little),
    ] {
        let bytes = pcap_with(DataLink::ETHERNET, &conv.frames(Link::Ethernet), res, end);
        let mut reader =
            CaptureReader::from_reader(Cursor::new(bytes), "t".into(), CaptureOptions::default())
                .unwrap();
        let mut opens = Vec::new();
        let mut client = Vec::new();
        reader
            .run(&mut |e| match e {
                FlowEvent::Open { time_us, .. } => opens.push(time_us),
                FlowEvent::Data {
                    side: Side::Client,
                    data,
                    ..
                } => client.extend_from_slice(data),
                _ => {}
            })
            .unwrap();
        assert_eq!(opens, vec![T0_US], "{res:?} {end:?}");
        assert_eq!(client, [CONNECT, PUBLISH].concat(), "{res:?} {end:?}");
    }
}

#[test]
fn pcapng_interfaces_with_own_link_types_and_time_resolutions() {
    let eth = mqtt_session("10.0.0.2:50000", "10.0.0.1:1883");
    let raw = mqtt_session("10.0.0.3:50000", "10.0.0.1:1883");
    let mut w = PcapNgWriter::new(Vec::new()).unwrap();
    // Interface 0: Ethernet, nanoseconds. Interface 1: raw IP, default microseconds,
    // offset by 10 s. Interface 2 (SPB only uses interface 0).
    w.write_pcapng_block(InterfaceDescriptionBlock {
        linktype: DataLink::ETHERNET,
        snaplen: 0,
        options: vec![InterfaceDescriptionOption::IfTsResol(9)],
    })
    .unwrap();
    w.write_pcapng_block(InterfaceDescriptionBlock {
        linktype: DataLink::RAW,
        snaplen: 0,
        options: vec![InterfaceDescriptionOption::IfTsOffset(10)],
    })
    .unwrap();
    let (ef, rf) = (eth.frames(Link::Ethernet), raw.frames(Link::Raw));
    for i in 0..ef.len() {
        // pcap-file writes the raw timestamp units through Duration::as_nanos.
        let ns = Duration::from_nanos((T0_US as u64 + i as u64) * 1000 + 999);
        w.write_pcapng_block(EnhancedPacketBlock {
            interface_id: 0,
            timestamp: ns,
            original_len: ef[i].len() as u32,
            data: Cow::Borrowed(&ef[i]),
            options: vec![],
        })
        .unwrap();
        let us = Duration::from_nanos(T0_US as u64 + i as u64);
        w.write_pcapng_block(EnhancedPacketBlock {
            interface_id: 1,
            timestamp: us,
            original_len: rf[i].len() as u32,
            data: Cow::Borrowed(&rf[i]),
            options: vec![],
        })
        .unwrap();
    }
    // A Simple Packet Block (interface 0, no timestamp): a retransmission, odd length.
    w.write_pcapng_block(SimplePacketBlock {
        original_len: ef[3].len() as u32,
        data: Cow::Borrowed(&ef[3]),
    })
    .unwrap();
    let mut reader = CaptureReader::from_reader(
        Cursor::new(w.into_inner()),
        "t.pcapng".into(),
        CaptureOptions::default(),
    )
    .unwrap();
    let mut events = Vec::new();
    let mut opens = Vec::new();
    let stats = reader
        .run(&mut |e| {
            if let FlowEvent::Open { time_us, .. } = e {
                opens.push(time_us);
            }
            events.push(own(e))
        })
        .unwrap();
    assert_eq!(opens, vec![T0_US, T0_US + 10_000_000]);
    assert_eq!(stats.frames, 19);
    for conn in [1, 2] {
        assert_eq!(
            stream(&events, conn, Side::Client),
            concat(&[CONNECT, PUBLISH]),
            "{events:?}"
        );
        assert_eq!(stream(&events, conn, Side::Server), concat(&[CONNACK]));
    }
    assert_eq!(
        count(&events, |e| matches!(e, Ev::Bad { .. })),
        0,
        "{events:?}"
    );
}

#[test]
fn pcapng_simple_packet_block_data_excludes_padding() {
    let mut conv = Conv::new("10.0.0.2:50000", "10.0.0.1:1883");
    conv.c(0, b"\xc0\x00\x01"); // odd length: the block is padded
    let f = &conv.frames(Link::Raw)[0];
    let mut w = PcapNgWriter::new(Vec::new()).unwrap();
    w.write_pcapng_block(InterfaceDescriptionBlock {
        linktype: DataLink::RAW,
        snaplen: 0,
        options: vec![],
    })
    .unwrap();
    w.write_pcapng_block(SimplePacketBlock {
        original_len: f.len() as u32,
        data: Cow::Borrowed(f),
    })
    .unwrap();
    let events = read_default(w.into_inner());
    assert_eq!(stream(&events, 1, Side::Client), "\u{fffd}\x00\x01");
}

#[test]
fn not_a_capture_is_an_error_naming_the_file() {
    for (bytes, want) in [
        (b"this is not a capture file at all".to_vec(), "garbage.bin: not a pcap or pcapng capture: unknown magic number 74 68 69 73"),
        (vec![], "garbage.bin: not a pcap or pcapng capture: the file holds only 0 bytes"),
        (vec![0x1f, 0x8b, 8, 0, 0, 0], "garbage.bin: not a pcap or pcapng capture: the file is gzip-compressed; decompress it first"),
        (vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0], "garbage.bin: unreadable pcap file header: the file ends inside its header"),
    ] {
        let err = CaptureReader::from_reader(Cursor::new(bytes), "garbage.bin".into(), CaptureOptions::default()).err().expect("an error");
        assert_eq!(err.to_string(), want);
    }
    let err = CaptureReader::open(
        Path::new("/nonexistent/capture.pcap"),
        CaptureOptions::default(),
    )
    .err()
    .expect("an error");
    assert!(
        err.to_string()
            .starts_with("/nonexistent/capture.pcap: cannot open"),
        "{err}"
    );
}

#[test]
fn truncated_last_record_is_reported_then_flows_close() {
    let conv = mqtt_session("10.0.0.2:50000", "10.0.0.1:1883");
    let frames = conv.frames(Link::Ethernet);
    let mut bytes = pcap(DataLink::ETHERNET, &frames[..6]);
    let last_offset = bytes.len() - (16 + frames[5].len());
    bytes.truncate(bytes.len() - 5);
    let (events, stats) = read_all(bytes, CaptureOptions::default());
    let want = format!("test.pcap: frame 6 at byte offset {last_offset}: truncated pcap record: the file ends after {} of its {} bytes", 16 + frames[5].len() - 5, 16 + frames[5].len());
    assert!(
        events.contains(&Ev::Bad {
            frame: 6,
            message: want
        }),
        "{events:?}"
    );
    assert_eq!(stream(&events, 1, Side::Client), concat(&[CONNECT]));
    assert_eq!(
        events.last(),
        Some(&Ev::Close {
            conn: 1,
            frame: 5,
            reset: false
        })
    );
    assert!(stats.truncated);
    assert_eq!(stats.frames, 5);
}

#[test]
fn truncated_pcapng_block_is_reported() {
    let conv = mqtt_session("10.0.0.2:50000", "10.0.0.1:1883");
    let mut w = PcapNgWriter::new(Vec::new()).unwrap();
    w.write_pcapng_block(InterfaceDescriptionBlock {
        linktype: DataLink::ETHERNET,
        snaplen: 0,
        options: vec![],
    })
    .unwrap();
    for f in &conv.frames(Link::Ethernet)[..5] {
        w.write_pcapng_block(EnhancedPacketBlock {
            interface_id: 0,
            timestamp: Duration::from_nanos(T0_US as u64),
            original_len: f.len() as u32,
            data: Cow::Borrowed(f),
            options: vec![],
        })
        .unwrap();
    }
    let mut bytes = w.into_inner();
    bytes.truncate(bytes.len() - 3);
    let (events, stats) = read_all(bytes, CaptureOptions::default());
    assert!(events.iter().any(|e| matches!(e, Ev::Bad { frame: 5, message } if message.contains("frame 5 at byte offset") && message.contains("truncated pcapng block"))), "{events:?}");
    assert!(stats.truncated);
    assert_eq!(stream(&events, 1, Side::Client), concat(&[CONNECT]));
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
fn progress_reaches_the_file_size() {
    let conv = mqtt_session("10.0.0.2:50000", "10.0.0.1:1883");
    let bytes = pcap(DataLink::ETHERNET, &conv.frames(Link::Ethernet));
    let size = bytes.len() as u64;
    let mut reader =
        CaptureReader::from_reader(Cursor::new(bytes), "t".into(), CaptureOptions::default())
            .unwrap();
    let progress = reader.progress();
    let mut seen = Vec::new();
    let stats = reader
        .run(&mut |_| seen.push(progress.bytes_read()))
        .unwrap();
    assert!(
        seen.windows(2).all(|w| w[0] <= w[1]) && seen[0] > 24,
        "{seen:?}"
    );
    assert_eq!((reader.bytes_read(), stats.bytes), (size, size));
}

/// Whatever the bytes, the reader neither panics nor loops: a valid capture with
/// random corruption and random cuts.
#[test]
fn corrupted_captures_never_panic() {
    let mut conv = mqtt_session("10.0.0.2:50000", "10.0.0.1:1883");
    conv.c(40, b"late").s(9, b"x");
    let good = pcap(DataLink::ETHERNET, &conv.frames(Link::Ethernet));
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for round in 0..400 {
        let mut bytes = good.clone();
        for _ in 0..(next() % 8) {
            let i = 24 + (next() as usize % (bytes.len() - 24));
            bytes[i] = next() as u8;
        }
        if round % 3 == 0 {
            bytes.truncate(24 + next() as usize % (bytes.len() - 24));
        }
        let opts = CaptureOptions {
            ports: vec![1883],
            max_reorder_bytes: (next() % 64) as usize,
        };
        if let Ok(mut reader) = CaptureReader::from_reader(Cursor::new(bytes), "fuzz".into(), opts)
        {
            let _ = reader.run(&mut |_| {});
        }
    }
}

// ---------------------------------------------------------------- pcapng by hand

/// A pcapng block, little-endian: type, length, body padded to 4 bytes, length.
fn block_le(type_: u32, body: &[u8]) -> Vec<u8> {
    let padded = (body.len() + 3) & !3;
    let len = (12 + padded) as u32;
    let mut b = type_.to_le_bytes().to_vec();
    b.extend_from_slice(&len.to_le_bytes());
    b.extend_from_slice(body);
    b.resize(8 + padded, 0);
    b.extend_from_slice(&len.to_le_bytes());
    b
}

fn epb_le(interface: u32, ts_units: u64, data: &[u8]) -> Vec<u8> {
    let mut body = interface.to_le_bytes().to_vec();
    body.extend_from_slice(&((ts_units >> 32) as u32).to_le_bytes());
    body.extend_from_slice(&(ts_units as u32).to_le_bytes());
    body.extend_from_slice(&(data.len() as u32).to_le_bytes());
    body.extend_from_slice(&(data.len() as u32).to_le_bytes());
    body.extend_from_slice(data);
    block_le(6, &body)
}

#[test]
fn pcapng_option_lists_without_end_marker_are_read() {
    // The specification lets a writer end an option list at the end of the block,
    // without opt_endofopt; pcap-file 2.0's reader rejects that, this one must not.
    let conv = mqtt_session("10.0.0.2:50000", "10.0.0.1:1883");
    let mut shb = vec![0x4D, 0x3C, 0x2B, 0x1A, 1, 0, 0, 0];
    shb.extend_from_slice(&(-1i64).to_le_bytes());
    shb.extend_from_slice(&[1, 0, 5, 0]); // opt_comment, 5 bytes, not UTF-8
    shb.extend_from_slice(&[0xff, 0xfe, 0xfd, 0xfc, 0xfb, 0, 0, 0]);
    let mut bytes = block_le(0x0A0D_0D0A, &shb);
    let mut idb = vec![1, 0, 0, 0, 0, 0, 4, 0]; // Ethernet, snaplen 262144
    idb.extend_from_slice(&[9, 0, 1, 0, 3, 0, 0, 0]); // if_tsresol = 3 (milliseconds)
    bytes.extend(block_le(1, &idb));
    bytes.extend(block_le(0x0000_0BAD, b"an unknown block type")); // skipped
    for (i, f) in conv.frames(Link::Ethernet).iter().enumerate() {
        bytes.extend(epb_le(0, 1_700_000_000_000 + i as u64, f));
    }
    let mut reader = CaptureReader::from_reader(
        Cursor::new(bytes),
        "t.pcapng".into(),
        CaptureOptions::default(),
    )
    .unwrap();
    let mut events = Vec::new();
    let mut open_time = None;
    reader
        .run(&mut |e| {
            if let FlowEvent::Open { time_us, .. } = e {
                open_time = Some(time_us);
            }
            events.push(own(e))
        })
        .unwrap();
    assert_eq!(open_time, Some(T0_US));
    assert_eq!(
        stream(&events, 1, Side::Client),
        concat(&[CONNECT, PUBLISH]),
        "{events:?}"
    );
    assert!(
        matches!(
            events.last(),
            Some(Ev::Close {
                conn: 1,
                frame: 8,
                reset: false
            })
        ),
        "{events:?}"
    );
}

#[test]
fn pcapng_sections_of_both_byte_orders_follow_each_other() {
    let first = mqtt_session("10.0.0.2:50000", "10.0.0.1:1883");
    let second = mqtt_session("10.0.0.3:50000", "10.0.0.1:1883");
    let mut bytes = Vec::new();
    for (conv, endianness) in [(&first, Endianness::Little), (&second, Endianness::Big)] {
        let mut w = PcapNgWriter::with_endianness(Vec::new(), endianness).unwrap();
        w.write_pcapng_block(InterfaceDescriptionBlock {
            linktype: DataLink::ETHERNET,
            snaplen: 0,
            options: vec![],
        })
        .unwrap();
        for f in conv.frames(Link::Ethernet) {
            w.write_pcapng_block(EnhancedPacketBlock {
                interface_id: 0,
                timestamp: Duration::from_nanos(T0_US as u64),
                original_len: f.len() as u32,
                data: Cow::Borrowed(&f),
                options: vec![],
            })
            .unwrap();
        }
        bytes.extend(w.into_inner());
    }
    let (events, stats) = read_all(bytes, CaptureOptions::default());
    assert_eq!(stats.frames, 18);
    for conn in [1, 2] {
        assert_eq!(
            stream(&events, conn, Side::Client),
            concat(&[CONNECT, PUBLISH]),
            "{events:?}"
        );
    }
}

#[test]
fn pcapng_packet_naming_an_unknown_interface_is_a_bad_frame() {
    let conv = mqtt_session("10.0.0.2:50000", "10.0.0.1:1883");
    let mut w = PcapNgWriter::new(Vec::new()).unwrap();
    w.write_pcapng_block(InterfaceDescriptionBlock {
        linktype: DataLink::ETHERNET,
        snaplen: 0,
        options: vec![],
    })
    .unwrap();
    let mut bytes = w.into_inner();
    let frames = conv.frames(Link::Ethernet);
    bytes.extend(epb_le(3, 0, &frames[0]));
    let (events, _) = read_all(bytes, CaptureOptions::default());
    assert!(
        matches!(&events[..], [Ev::Bad { frame: 1, message }] if message.contains("names interface 3, but the section describes 1")),
        "{events:?}"
    );
}

/// A reader handing out a few bytes at a time, as a pipe may.
struct Trickle(Cursor<Vec<u8>>);

impl std::io::Read for Trickle {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(7);
        self.0.read(&mut buf[..n])
    }
}

#[test]
fn short_reads_change_nothing() {
    let conv = mqtt_session("10.0.0.2:50000", "10.0.0.1:1883");
    let pcap_bytes = pcap(DataLink::ETHERNET, &conv.frames(Link::Ethernet));
    let mut w = PcapNgWriter::new(Vec::new()).unwrap();
    w.write_pcapng_block(InterfaceDescriptionBlock {
        linktype: DataLink::ETHERNET,
        snaplen: 0,
        options: vec![],
    })
    .unwrap();
    for f in conv.frames(Link::Ethernet) {
        w.write_pcapng_block(EnhancedPacketBlock {
            interface_id: 0,
            timestamp: Duration::ZERO,
            original_len: f.len() as u32,
            data: Cow::Borrowed(&f),
            options: vec![],
        })
        .unwrap();
    }
    for bytes in [pcap_bytes, w.into_inner()] {
        let whole = read_default(bytes.clone());
        let mut reader = CaptureReader::from_reader(
            Trickle(Cursor::new(bytes)),
            "pipe".into(),
            CaptureOptions::default(),
        )
        .unwrap();
        let mut trickled = Vec::new();
        reader.run(&mut |e| trickled.push(own(e))).unwrap();
        assert_eq!(trickled, whole);
        assert_eq!(stream(&whole, 1, Side::Client), concat(&[CONNECT, PUBLISH]));
    }
}

#[test]
fn corrupted_pcapng_never_panics() {
    let mut conv = mqtt_session("10.0.0.2:50000", "10.0.0.1:1883");
    conv.c(40, b"late").s(9, b"x");
    let mut w = PcapNgWriter::new(Vec::new()).unwrap();
    w.write_pcapng_block(InterfaceDescriptionBlock {
        linktype: DataLink::ETHERNET,
        snaplen: 0,
        options: vec![InterfaceDescriptionOption::IfTsResol(9)],
    })
    .unwrap();
    for f in conv.frames(Link::Ethernet) {
        w.write_pcapng_block(EnhancedPacketBlock {
            interface_id: 0,
            timestamp: Duration::ZERO,
            original_len: f.len() as u32,
            data: Cow::Borrowed(&f),
            options: vec![],
        })
        .unwrap();
    }
    let good = w.into_inner();
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for round in 0..400 {
        let mut bytes = good.clone();
        for _ in 0..(next() % 6) {
            let i = next() as usize % bytes.len();
            bytes[i] = next() as u8;
        }
        if round % 3 == 0 {
            bytes.truncate(next() as usize % bytes.len());
        }
        if let Ok(mut reader) =
            CaptureReader::from_reader(Cursor::new(bytes), "fuzz".into(), CaptureOptions::default())
        {
            let _ = reader.run(&mut |_| {});
        }
    }
}

/// A little-endian pcapng section header and one Ethernet interface: 48 bytes.
fn pcapng_head_le() -> Vec<u8> {
    let block = |kind: u32, body: &[u8]| {
        let len = (12 + body.len()) as u32;
        let mut b = kind.to_le_bytes().to_vec();
        b.extend_from_slice(&len.to_le_bytes());
        b.extend_from_slice(body);
        b.extend_from_slice(&len.to_le_bytes());
        b
    };
    let mut shb = 0x1A2B_3C4Du32.to_le_bytes().to_vec();
    shb.extend_from_slice(&[1, 0, 0, 0]);
    shb.extend_from_slice(&(-1i64).to_le_bytes());
    let mut idb = 1u16.to_le_bytes().to_vec();
    idb.extend_from_slice(&[0, 0]);
    idb.extend_from_slice(&65535u32.to_le_bytes());
    let mut file = block(0x0A0D_0D0A, &shb);
    file.extend(block(1, &idb));
    assert_eq!(file.len(), 48);
    file
}

/// The records of `file` up to the `Record::End` that stops it: (message, corrupt),
/// and the bytes the source held for reading ahead.
fn read_to_end(file: Vec<u8>, name: &str) -> (Option<(String, bool)>, usize) {
    let mut src =
        source::RecordSource::new(Box::new(Cursor::new(file)), name.into(), Default::default())
            .unwrap();
    loop {
        match src.next_record().unwrap() {
            None => return (None, src.buffered_capacity()),
            Some(source::Record::End {
                message, corrupt, ..
            }) => return (Some((message, corrupt)), src.buffered_capacity()),
            Some(_) => {}
        }
    }
}

#[test]
fn a_pcapng_block_claiming_sixteen_megabytes_costs_no_memory() {
    // Just under the largest block accepted (16 MiB): framing is not refused, so only
    // the read-ahead buffer's growth bound keeps memory near what was read. The file
    // holds 1.5 MiB, more than the first read chunk, so the buffer has to grow.
    let mut file = pcapng_head_le();
    file.extend_from_slice(&6u32.to_le_bytes());
    file.extend_from_slice(&((16u32 << 20) - 4).to_le_bytes());
    file.resize(3 << 19, 0);
    let (end, held) = read_to_end(file, "hostile.pcapng");
    let (message, corrupt) = end.expect("the lying block must end the capture");
    assert!(message.contains("ends after") && !corrupt, "{message}");
    assert!(held <= 4 << 20, "{held} bytes held for a 1.5 MiB file");
}

#[test]
fn a_pcapng_block_claiming_a_gigabyte_is_broken_framing_named_by_offset() {
    let mut file = pcapng_head_le();
    file.extend_from_slice(&6u32.to_le_bytes());
    file.extend_from_slice(&(1u32 << 30).to_le_bytes());
    file.extend_from_slice(&[0; 200]);
    let (end, held) = read_to_end(file, "hostile.pcapng");
    let (message, corrupt) = end.expect("the lying block must end the capture");
    assert!(corrupt, "{message}");
    assert!(
        message.starts_with("hostile.pcapng: frame 1 at byte offset 48: ")
            && message.contains("1073741824"),
        "{message}"
    );
    assert!(held <= 1 << 20, "{held} bytes held");
}

#[test]
fn a_capture_cut_inside_its_last_record_is_cut_not_corrupt() {
    let mut file = pcapng_head_le();
    // An enhanced packet block of 64 bytes, of which the file holds 40.
    file.extend_from_slice(&6u32.to_le_bytes());
    file.extend_from_slice(&64u32.to_le_bytes());
    file.extend_from_slice(&[0; 32]);
    let (end, _) = read_to_end(file, "cut.pcapng");
    let (message, corrupt) = end.expect("the cut block ends the capture");
    assert!(
        !corrupt && message.contains("ends after 40 of its 64 bytes"),
        "{message}"
    );
}

#[test]
fn stats_say_where_reading_stopped_and_which_ports_carried_traffic() {
    let mut file = pcapng_head_le();
    file.extend_from_slice(&[0xFF; 64]);
    let mut reader =
        CaptureReader::from_reader(Cursor::new(file), "bad.pcapng".into(), Default::default())
            .unwrap();
    let stats = reader.run(&mut |_| {}).unwrap();
    let stop = stats
        .unreadable()
        .expect("broken framing makes it unreadable");
    assert_eq!((stop.frame, stop.offset, stop.corrupt), (1, 48, true));
    assert!(stop
        .message
        .contains("bad.pcapng: frame 1 at byte offset 48"));
}

#[test]
fn a_pcap_record_claiming_gigabytes_in_a_file_bigger_than_one_read_costs_no_memory() {
    // A file (1.5 MiB) bigger than the first read chunk, so the buffer has to grow: it
    // fails if the buffer is sized from the header (the old reader held 4 GB here).
    let mut file = vec![];
    file.extend_from_slice(&0xA1B2_C3D4u32.to_le_bytes());
    file.extend_from_slice(&2u16.to_le_bytes());
    file.extend_from_slice(&4u16.to_le_bytes());
    file.extend_from_slice(&[0; 8]);
    file.extend_from_slice(&u32::MAX.to_le_bytes());
    file.extend_from_slice(&1u32.to_le_bytes());
    file.extend_from_slice(&[0; 8]);
    file.extend_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
    file.extend_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
    file.resize(3 << 19, 0);
    let (end, held) = read_to_end(file, "hostile.pcap");
    let (message, corrupt) = end.expect("the lying record must end the capture");
    assert!(message.contains("ends after") && !corrupt, "{message}");
    assert!(held <= 4 << 20, "{held} bytes held for a 1.5 MiB file");
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
