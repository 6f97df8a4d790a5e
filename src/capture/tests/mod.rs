//! Tests of the capture reader on hand-built captures: frames built with etherparse,
//! written with pcap-file's writers into memory, read back through
//! `CaptureReader::from_reader`, and the events compared byte for byte.
//!
//! This file holds what the tests share (the events owned, frames and scripted TCP
//! conversations, pcap files); the tests are by subject: `reassembly`, `flows`,
//! `links`, `files` (reading a capture file whole) and `pcapng`.

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

mod files;
mod flows;
mod links;
mod pcapng;
mod reassembly;

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
