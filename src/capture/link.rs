//! Slices a captured frame down to its TCP segment: link header (by link type), IP
//! (v4 or v6, with extension headers, through etherparse) and TCP header.
//!
//! Guarantees: never panics on any input; a frame that is not TCP over IP (ARP, UDP,
//! ICMP, other ethertypes) is [`Sliced::NotTcp`], quietly; a frame whose headers are
//! cut or invalid is an `Err` with a message saying which header and why. A segment
//! cut by the snap length still yields the bytes captured, and says how many are
//! missing, so that reassembly can report them as lost instead of waiting for them.

use std::net::{IpAddr, SocketAddr};

use etherparse::err::Layer;
use etherparse::{EtherType, IpNumber, LaxNetSlice, LaxSlicedPacket, TransportSlice};

/// Link-layer header types (tcpdump.org LINKTYPE_ / DLT_ values) understood here.
pub(crate) mod linktype {
    /// BSD loopback: 4-byte address family in the capturing host's byte order.
    pub const NULL: u32 = 0;
    pub const ETHERNET: u32 = 1;
    /// DLT_RAW as written by some BSDs (12) and OpenBSD (14).
    pub const RAW_BSD: u32 = 12;
    pub const RAW_OPENBSD: u32 = 14;
    pub const RAW: u32 = 101;
    /// OpenBSD loopback: 4-byte address family in network byte order.
    pub const LOOP: u32 = 108;
    pub const LINUX_SLL: u32 = 113;
    pub const IPV4: u32 = 228;
    pub const IPV6: u32 = 229;
    pub const LINUX_SLL2: u32 = 276;

    pub fn is_supported(link: u32) -> bool {
        matches!(
            link,
            NULL | ETHERNET
                | RAW_BSD
                | RAW_OPENBSD
                | RAW
                | LOOP
                | LINUX_SLL
                | IPV4
                | IPV6
                | LINUX_SLL2
        )
    }
}

/// The TCP segment of a frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TcpSegment<'a> {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub seq: u32,
    pub ack: u32,
    pub flag_syn: bool,
    pub flag_ack: bool,
    pub flag_fin: bool,
    pub flag_rst: bool,
    /// The payload bytes the frame holds.
    pub payload: &'a [u8],
    /// Payload bytes announced by the IP header but not captured (snap length).
    pub missing: u32,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Sliced<'a> {
    Tcp(TcpSegment<'a>),
    /// Not TCP over IP: ignored.
    NotTcp,
    /// An IP fragment: not reassembled, ignored.
    Fragment,
}

/// Slices one frame of the given link type. `Err` says what is wrong with it.
pub(crate) fn slice_frame(link: u32, frame: &[u8]) -> Result<Sliced<'_>, String> {
    use linktype::*;
    let packet = match link {
        ETHERNET => LaxSlicedPacket::from_ethernet(frame)
            .map_err(|e| format!("truncated Ethernet header: {e}"))?,
        LINUX_SLL => {
            // packet type (2), ARPHRD type (2), address length (2), address (8), protocol (2)
            let header = frame.get(..16).ok_or_else(|| {
                format!(
                    "truncated Linux cooked (SLL) header: {} of 16 bytes",
                    frame.len()
                )
            })?;
            from_ether_type(u16::from_be_bytes([header[14], header[15]]), &frame[16..])?
        }
        LINUX_SLL2 => {
            // protocol (2), reserved (2), interface index (4), ARPHRD type (2), packet
            // type (1), address length (1), address (8)
            let header = frame.get(..20).ok_or_else(|| {
                format!(
                    "truncated Linux cooked v2 (SLL2) header: {} of 20 bytes",
                    frame.len()
                )
            })?;
            from_ether_type(u16::from_be_bytes([header[0], header[1]]), &frame[20..])?
        }
        RAW | RAW_BSD | RAW_OPENBSD | IPV4 | IPV6 => from_ip(frame)?,
        NULL | LOOP => {
            let header = frame
                .get(..4)
                .ok_or_else(|| format!("truncated loopback header: {} of 4 bytes", frame.len()))?;
            let header = [header[0], header[1], header[2], header[3]];
            // NULL is in the byte order of the capturing host, which the file does not
            // record; the address family values are small, so either order is clear.
            let families = if link == LOOP {
                [u32::from_be_bytes(header); 2]
            } else {
                [u32::from_le_bytes(header), u32::from_be_bytes(header)]
            };
            // AF_INET is 2 everywhere; AF_INET6 is 24 (NetBSD, OpenBSD), 28 (FreeBSD),
            // 30 (macOS) or 10 (Linux).
            if !families
                .iter()
                .any(|af| matches!(af, 2 | 10 | 24 | 28 | 30))
            {
                return Ok(Sliced::NotTcp);
            }
            from_ip(&frame[4..])?
        }
        other => return Err(format!("unsupported link type {other}")),
    };
    tcp_of(packet, frame)
}

fn from_ether_type(ether_type: u16, payload: &[u8]) -> Result<LaxSlicedPacket<'_>, String> {
    Ok(LaxSlicedPacket::from_ether_type(
        EtherType(ether_type),
        payload,
    ))
}

fn from_ip(data: &[u8]) -> Result<LaxSlicedPacket<'_>, String> {
    LaxSlicedPacket::from_ip(data).map_err(|e| format!("invalid IP header: {e}"))
}

fn tcp_of<'a>(packet: LaxSlicedPacket<'a>, frame: &'a [u8]) -> Result<Sliced<'a>, String> {
    if let Some((err, layer)) = &packet.stop_err {
        return match layer {
            Layer::TcpHeader => Err(format!("truncated or invalid TCP header: {err}")),
            // A broken UDP or ICMP packet is not our business.
            Layer::UdpHeader
            | Layer::UdpPayload
            | Layer::Icmpv4
            | Layer::Icmpv4Timestamp
            | Layer::Icmpv4TimestampReply
            | Layer::Icmpv6 => Ok(Sliced::NotTcp),
            _ => Err(format!(
                "truncated or invalid {} header: {err}",
                layer_name(*layer)
            )),
        };
    }
    let Some(net) = &packet.net else {
        return Ok(Sliced::NotTcp);
    };
    let (src_ip, dst_ip, ip_start, declared_len, payload) = match net {
        LaxNetSlice::Ipv4(ip) => {
            let h = ip.header();
            (
                IpAddr::V4(h.source_addr()),
                IpAddr::V4(h.destination_addr()),
                h.slice().as_ptr(),
                h.total_len() as usize,
                ip.payload(),
            )
        }
        LaxNetSlice::Ipv6(ip) => {
            let h = ip.header();
            (
                IpAddr::V6(h.source_addr()),
                IpAddr::V6(h.destination_addr()),
                h.slice().as_ptr(),
                40 + h.payload_length() as usize,
                ip.payload(),
            )
        }
    };
    if payload.ip_number != IpNumber::TCP {
        return Ok(Sliced::NotTcp);
    }
    if payload.fragmented {
        return Ok(Sliced::Fragment);
    }
    let Some(TransportSlice::Tcp(tcp)) = &packet.transport else {
        return Ok(Sliced::NotTcp);
    };
    // The IP header announced more than the frame holds: the snap length cut it.
    let missing = if payload.incomplete {
        let captured = frame.as_ptr() as usize + frame.len() - ip_start as usize;
        declared_len.saturating_sub(captured).min(u32::MAX as usize) as u32
    } else {
        0
    };
    Ok(Sliced::Tcp(TcpSegment {
        src: SocketAddr::new(src_ip, tcp.source_port()),
        dst: SocketAddr::new(dst_ip, tcp.destination_port()),
        seq: tcp.sequence_number(),
        ack: tcp.acknowledgment_number(),
        flag_syn: tcp.syn(),
        flag_ack: tcp.ack(),
        flag_fin: tcp.fin(),
        flag_rst: tcp.rst(),
        payload: tcp.payload(),
        missing,
    }))
}

fn layer_name(layer: Layer) -> &'static str {
    match layer {
        Layer::LinuxSllHeader => "Linux cooked",
        Layer::Ethernet2Header => "Ethernet",
        Layer::VlanHeader => "VLAN",
        Layer::Ipv4Header | Layer::Ipv4Packet => "IPv4",
        Layer::Ipv6Header | Layer::Ipv6Packet => "IPv6",
        Layer::IpAuthHeader => "IP authentication",
        Layer::Ipv6ExtHeader
        | Layer::Ipv6HopByHopHeader
        | Layer::Ipv6DestOptionsHeader
        | Layer::Ipv6RouteHeader
        | Layer::Ipv6FragHeader => "IPv6 extension",
        _ => "IP",
    }
}
