//! pcapng export of a stored capture. The proxy saw TCP payload only, so each frame's
//! Ethernet/IP/TCP headers are synthesized: the real client and upstream addresses
//! and ports, a handshake at open, sequence and acknowledgement numbers that follow
//! the bytes, FIN and RST as the proxy mirrored them. Each finding becomes an
//! `opt_comment` on the frame holding the bytes it is about, so Wireshark shows it in
//! place (`pkt_comment` in display filters).
//!
//! Credentials (a CONNECT's user name and password, the Authentication Data of
//! CONNECT and AUTH) are found by their framing, as the recorder finds them
//! ([`super::scrub`]), and overwritten with `*` (same length, so sequence numbers
//! stay consistent) unless the caller asks for secrets: a store recorded with
//! `--store-secrets` holds them in clear, in whatever encoding the client sent.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use etherparse::PacketBuilder;
use pcap_file::pcapng::blocks::enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption};
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::DataLink;

use super::frames::MAX_SEGMENT;
pub use super::frames::{frame_numbers, FrameIndex};
use super::scrub::Scrub;
use super::{EventKind, Store, StoreError};
use crate::finding::{one_line, Finding, Side};

const MAC: [[u8; 6]; 2] = [[2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]];

#[derive(Debug, Default, Clone, PartialEq)]
pub struct ExportSummary {
    pub frames: u64,
    pub comments: u64,
}

struct Flow {
    addr: [SocketAddr; 2],
    /// Next sequence number of each side.
    next: [u32; 2],
    /// Stream offset of each side.
    offset: [u64; 2],
    fin: [bool; 2],
    /// Each side's credential scanner, unless secrets are shown: a store made with
    /// `--store-secrets` holds them in clear, and they are found by framing as the
    /// recorder finds them (any encoding, however split), not from decoded packets.
    scrub: Option<[Scrub; 2]>,
}

/// The stream bytes a data frame carries: its side and (start, end) offsets.
type Carried = (Side, u64, u64);

struct Frame {
    time_us: i64,
    data: Vec<u8>,
    comments: Vec<String>,
}

/// Writes the capture as pcapng to `out`.
pub fn export_pcapng<W: Write>(
    store: &Store,
    id: u64,
    out: W,
    show_secrets: bool,
) -> Result<ExportSummary, StoreError> {
    store.capture(id)?;
    // Findings by the event they name; the rest go on the last frame.
    let mut by_seq: HashMap<u64, Vec<Finding>> = HashMap::new();
    let mut loose: Vec<String> = vec![];
    for f in store.findings(id)? {
        match f.packet {
            Some(s) if s > 0 => by_seq.entry(s).or_default().push(f),
            _ => loose.push(comment(&f)),
        }
    }

    let map = |e: pcap_file::PcapError| StoreError::Io(std::io::Error::other(e.to_string()));
    let mut w = PcapNgWriter::new(out).map_err(map)?;
    w.write_pcapng_block(InterfaceDescriptionBlock {
        linktype: DataLink::ETHERNET,
        snaplen: 0,
        // pcap-file writes timestamps in nanoseconds.
        options: vec![InterfaceDescriptionOption::IfTsResol(9)],
    })
    .map_err(map)?;

    let mut flows: HashMap<u64, Flow> = HashMap::new();
    let mut pending: Option<Frame> = None;
    // Findings of an event without frames, for the next frame written.
    let mut carry: Vec<Finding> = vec![];
    // The number (1-based, as Wireshark shows it) of the next frame: a comment
    // cites the frame it is on, as `analyze --capture` does (one numbering).
    let mut next_frame = 1u64;
    let mut summary = ExportSummary::default();
    let mut emit = |frame: Frame, w: &mut PcapNgWriter<W>| -> Result<(), StoreError> {
        if let Some(prev) = pending.replace(frame) {
            write_frame(w, prev, &mut summary).map_err(map)?;
        }
        Ok(())
    };

    for ev in store.events(id) {
        let ev = ev?;
        let findings = by_seq.remove(&ev.seq).unwrap_or_default();
        let mut frames: Vec<(Frame, Option<Carried>)> = vec![];
        let t = ev.time_us;
        match &ev.kind {
            EventKind::Open { client, server } => {
                let isn_c = (ev.conn as u32).wrapping_mul(2_654_435_761);
                let isn_s = isn_c ^ 0x5a5a_5a5a;
                let (c, s) = same_family(*client, *server);
                let fl = Flow {
                    addr: [c, s],
                    next: [isn_c.wrapping_add(1), isn_s.wrapping_add(1)],
                    offset: [0, 0],
                    fin: [false, false],
                    scrub: (!show_secrets).then(|| [Scrub::client(), Scrub::server()]),
                };
                frames.push((frame(t, c, s, 0, isn_c, None, Flags::Syn, &[]), None));
                frames.push((
                    frame(
                        t,
                        s,
                        c,
                        1,
                        isn_s,
                        Some(isn_c.wrapping_add(1)),
                        Flags::Syn,
                        &[],
                    ),
                    None,
                ));
                frames.push((
                    frame(t, c, s, 0, fl.next[0], Some(fl.next[1]), Flags::Plain, &[]),
                    None,
                ));
                flows.insert(ev.conn, fl);
            }
            EventKind::Data { side, bytes } | EventKind::Opaque { side, bytes } => {
                let Some(fl) = flows.get_mut(&ev.conn) else {
                    continue;
                };
                let i = side.index();
                let mut data = bytes.to_vec();
                // Opaque bytes (TLS the proxy did not terminate) hold no MQTT the
                // scanner could read; the recorder stores them as they are, too.
                let opaque = matches!(ev.kind, EventKind::Opaque { .. });
                if let Some(scrub) = fl.scrub.as_mut().filter(|_| !opaque) {
                    let (mut mask, mut withheld) = (vec![], vec![]);
                    scrub[i].feed(&data, &mut mask, &mut withheld);
                    for r in mask {
                        data[r].fill(b'*');
                    }
                }
                for seg in data.chunks(MAX_SEGMENT) {
                    let start = fl.offset[i];
                    let f = frame(
                        t,
                        fl.addr[i],
                        fl.addr[1 - i],
                        i,
                        fl.next[i],
                        Some(fl.next[1 - i]),
                        Flags::Psh,
                        seg,
                    );
                    fl.next[i] = fl.next[i].wrapping_add(seg.len() as u32);
                    fl.offset[i] += seg.len() as u64;
                    frames.push((f, Some((*side, start, fl.offset[i]))));
                }
            }
            EventKind::Fin { side } => {
                let Some(fl) = flows.get_mut(&ev.conn) else {
                    continue;
                };
                frames.push((fin(fl, *side, t), None));
            }
            EventKind::End { how } => {
                let Some(mut fl) = flows.remove(&ev.conn) else {
                    continue;
                };
                if how == "closed" || how == "shutdown" {
                    for side in [Side::Client, Side::Server] {
                        if !fl.fin[side.index()] {
                            frames.push((fin(&mut fl, side, t), None));
                        }
                    }
                } else {
                    let i = usize::from(how.contains("upstream"));
                    frames.push((
                        frame(
                            t,
                            fl.addr[i],
                            fl.addr[1 - i],
                            i,
                            fl.next[i],
                            Some(fl.next[1 - i]),
                            Flags::Rst,
                            &[],
                        ),
                        None,
                    ));
                }
            }
        }
        // Each finding goes on the frame holding its offset, else the event's first.
        let mut notes: Vec<Vec<String>> = vec![vec![]; frames.len()];
        for f in findings {
            let at = frames
                .iter()
                .position(|(_, r)| match (r, f.side, f.offset) {
                    (Some((s, a, b)), Some(fs), Some(o)) => *s == fs && o >= *a && o < *b,
                    _ => false,
                })
                .unwrap_or(0);
            if frames.is_empty() {
                carry.push(f);
            } else {
                notes[at].push(comment_at(&f, next_frame + at as u64));
            }
        }
        for ((mut f, _), n) in frames.into_iter().zip(notes) {
            f.comments
                .extend(carry.drain(..).map(|c| comment_at(&c, next_frame)));
            f.comments.extend(n);
            next_frame += 1;
            emit(f, &mut w)?;
        }
    }
    // Findings about events not stored (or about the end of the run).
    for (_, fs) in by_seq {
        loose.extend(fs.iter().map(comment));
    }
    if let Some(mut last) = pending.take() {
        let at = next_frame - 1;
        last.comments
            .extend(carry.drain(..).map(|c| comment_at(&c, at)));
        last.comments.append(&mut loose);
        write_frame(&mut w, last, &mut summary).map_err(map)?;
    }
    w.into_inner().flush()?;
    Ok(summary)
}

fn comment(f: &Finding) -> String {
    format!("edgetap: {}", one_line(f))
}

/// The comment of `f` on frame `frame`: it cites that frame, not the store's event.
fn comment_at(f: &Finding, frame: u64) -> String {
    let mut f = f.clone();
    f.packet = Some(frame);
    comment(&f)
}

fn write_frame<W: Write>(
    w: &mut PcapNgWriter<W>,
    f: Frame,
    summary: &mut ExportSummary,
) -> Result<(), pcap_file::PcapError> {
    summary.frames += 1;
    summary.comments += f.comments.len() as u64;
    w.write_pcapng_block(EnhancedPacketBlock {
        interface_id: 0,
        timestamp: Duration::from_micros(f.time_us.max(0) as u64),
        original_len: f.data.len() as u32,
        data: Cow::Owned(f.data),
        options: f
            .comments
            .into_iter()
            .map(|c| EnhancedPacketOption::Comment(Cow::Owned(c)))
            .collect(),
    })?;
    Ok(())
}

#[derive(Clone, Copy, PartialEq)]
enum Flags {
    Plain,
    Syn,
    Psh,
    Fin,
    Rst,
}

fn fin(fl: &mut Flow, side: Side, t: i64) -> Frame {
    let i = side.index();
    let f = frame(
        t,
        fl.addr[i],
        fl.addr[1 - i],
        i,
        fl.next[i],
        Some(fl.next[1 - i]),
        Flags::Fin,
        &[],
    );
    fl.next[i] = fl.next[i].wrapping_add(1);
    fl.fin[i] = true;
    f
}

/// Mixed families (IPv4 client, IPv6 upstream) become IPv4-mapped IPv6.
fn same_family(a: SocketAddr, b: SocketAddr) -> (SocketAddr, SocketAddr) {
    match (a, b) {
        (SocketAddr::V4(_), SocketAddr::V4(_)) | (SocketAddr::V6(_), SocketAddr::V6(_)) => (a, b),
        _ => {
            let six = |s: SocketAddr| match s.ip() {
                IpAddr::V4(v) => SocketAddr::new(IpAddr::V6(v.to_ipv6_mapped()), s.port()),
                IpAddr::V6(_) => s,
            };
            (six(a), six(b))
        }
    }
}

/// One synthesized frame from side `from` (0 client, 1 server).
#[allow(clippy::too_many_arguments)]
fn frame(
    t: i64,
    src: SocketAddr,
    dst: SocketAddr,
    from: usize,
    seq: u32,
    ack: Option<u32>,
    flags: Flags,
    payload: &[u8],
) -> Frame {
    let eth = PacketBuilder::ethernet2(MAC[from], MAC[1 - from]);
    let ip = match (src.ip(), dst.ip()) {
        (IpAddr::V4(a), IpAddr::V4(b)) => eth.ipv4(a.octets(), b.octets(), 64),
        (IpAddr::V6(a), IpAddr::V6(b)) => eth.ipv6(a.octets(), b.octets(), 64),
        // same_family() made both sides one family.
        (a, b) => {
            let six = |x: IpAddr| match x {
                IpAddr::V4(v) => v.to_ipv6_mapped().octets(),
                IpAddr::V6(v) => v.octets(),
            };
            eth.ipv6(six(a), six(b), 64)
        }
    };
    let mut tcp = ip.tcp(src.port(), dst.port(), seq, 65_535);
    tcp = match flags {
        Flags::Plain => tcp,
        Flags::Syn => tcp.syn(),
        Flags::Psh => tcp.psh(),
        Flags::Fin => tcp.fin(),
        Flags::Rst => tcp.rst(),
    };
    if let Some(a) = ack {
        tcp = tcp.ack(a);
    }
    let mut data = Vec::with_capacity(tcp.size(payload.len()));
    tcp.write(&mut data, payload)
        .expect("a synthesized frame is within IP limits");
    Frame {
        time_us: t,
        data,
        comments: vec![],
    }
}
