//! Reads the records of a pcap or pcapng file, one at a time, through pcap-file's
//! fixed-size read buffer: the frame bytes handed out borrow that buffer, so nothing
//! is copied and nothing accumulates.
//!
//! Guarantees: frames are numbered from 1 as Wireshark numbers them (pcapng blocks that
//! are not packets get no number); every frame gets a time in microseconds since the
//! Unix epoch (pcap micro/nanosecond magic; pcapng `if_tsresol` and `if_tsoffset` of
//! the packet's interface); the byte offset of each record is known for messages. A
//! record cut by the end of the file, or a corrupt record header after which the file
//! cannot be followed, ends the stream with [`Record::End`] instead of an error.

use std::borrow::Cow;
use std::cell::Cell;
use std::io::{self, Cursor, ErrorKind, Read};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use pcap_file::pcap::PcapReader;
use pcap_file::pcapng::PcapNgReader;
use pcap_file::{PcapError, TsResolution};

use super::CaptureError;

/// pcap-file's read buffer: a record bigger than this cannot be read.
const READ_BUFFER: u64 = 8_000_000;
/// No capture tool writes a bigger frame (tcpdump's maximum snap length); a pcap record
/// header claiming more is corrupt, and the records after it cannot be found.
const MAX_FRAME: u32 = 262_144;

const PCAPNG_SHB: u32 = 0x0A0D_0D0A;
const PCAPNG_IDB: u32 = 0x0000_0001;
const PCAPNG_PB: u32 = 0x0000_0002;
const PCAPNG_SPB: u32 = 0x0000_0003;
const PCAPNG_EPB: u32 = 0x0000_0006;

/// One record of the capture.
pub(crate) enum Record<'a> {
    /// A packet: its number, byte offset, link type, time and captured bytes.
    Frame {
        frame: u64,
        offset: u64,
        link: u32,
        time_us: i64,
        data: &'a [u8],
    },
    /// A packet record that cannot be used (its frame number is consumed).
    Unreadable {
        frame: u64,
        time_us: i64,
        message: String,
    },
    /// A pcapng block that is not a packet (interface description, statistics...).
    NotAFrame,
    /// The file cannot be read further (cut inside a record, or corrupt): the message
    /// names the place; `frame` is the number the record would have had. Nothing
    /// follows.
    End {
        frame: u64,
        time_us: i64,
        message: String,
    },
}

/// A pcapng interface: what its packets' link type and timestamps mean.
#[derive(Clone, Copy, Debug)]
struct Interface {
    link: u32,
    snaplen: u32,
    /// Timestamp units per second (`if_tsresol`; microseconds by default).
    units_per_sec: u128,
    /// Seconds added to every timestamp (`if_tsoffset`).
    offset_s: i64,
}

enum Format {
    Pcap {
        reader: PcapReader<Box<dyn Read>>,
        link: u32,
        nanos: bool,
        snaplen: u32,
    },
    PcapNg {
        reader: PcapNgReader<Box<dyn Read>>,
        big_endian: bool,
        interfaces: Vec<Interface>,
    },
}

/// What the underlying reader has delivered so far: tells a record cut by the end of
/// the file from a record too big for the read buffer.
#[derive(Default)]
struct InputState {
    bytes: Cell<u64>,
    eof: Cell<bool>,
}

struct CountingReader {
    inner: Box<dyn Read>,
    state: Rc<InputState>,
}

impl Read for CountingReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.state.eof.set(true);
        }
        self.state.bytes.set(self.state.bytes.get() + n as u64);
        Ok(n)
    }
}

pub(crate) struct RecordSource {
    name: String,
    format: Format,
    input: Rc<InputState>,
    progress: Arc<AtomicU64>,
    /// Number of the last frame handed out (0 before the first).
    frame: u64,
    /// Byte offset of the next record.
    next_offset: u64,
    last_time_us: i64,
    ended: bool,
}

impl RecordSource {
    /// Detects the format from the first bytes and reads the file header.
    pub(crate) fn new(
        mut r: Box<dyn Read>,
        name: String,
        progress: Arc<AtomicU64>,
    ) -> Result<RecordSource, CaptureError> {
        let mut head = [0u8; 12];
        let got = read_up_to(&mut r, &mut head).map_err(|source| CaptureError::Read {
            file: name.clone(),
            frame: 0,
            offset: 0,
            source,
        })?;
        let head = &head[..got];
        let input = Rc::new(InputState::default());
        let reader: Box<dyn Read> = Box::new(CountingReader {
            inner: Box::new(Cursor::new(head.to_vec()).chain(r)),
            state: input.clone(),
        });
        let not_capture = |detail: String| CaptureError::NotACapture {
            file: name.clone(),
            detail,
        };
        if got < 4 {
            return Err(not_capture(format!("the file holds only {got} bytes")));
        }
        let magic = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        let (format, header_len) = match magic {
            0xA1B2_C3D4 | 0xD4C3_B2A1 | 0xA1B2_3C4D | 0x4D3C_B2A1 => {
                let reader = PcapReader::new(reader).map_err(|e| CaptureError::BadHeader {
                    file: name.clone(),
                    format: "pcap",
                    detail: header_problem(e),
                })?;
                let header = reader.header();
                // The upper bits of the link type field carry FCS information.
                let link = u32::from(header.datalink) & 0xFFFF;
                let nanos = header.ts_resolution == TsResolution::NanoSecond;
                (
                    Format::Pcap {
                        reader,
                        link,
                        nanos,
                        snaplen: header.snaplen,
                    },
                    24,
                )
            }
            PCAPNG_SHB => {
                if got < 12 {
                    return Err(CaptureError::BadHeader {
                        file: name.clone(),
                        format: "pcapng",
                        detail: format!("the file holds only {got} bytes"),
                    });
                }
                let big_endian = match &head[8..12] {
                    [0x1A, 0x2B, 0x3C, 0x4D] => true,
                    [0x4D, 0x3C, 0x2B, 0x1A] => false,
                    _ => {
                        return Err(CaptureError::BadHeader {
                            file: name.clone(),
                            format: "pcapng",
                            detail: "bad byte-order magic in the section header".into(),
                        })
                    }
                };
                let shb_len = read_u32(&head[4..8], big_endian) as u64;
                let reader = PcapNgReader::new(reader).map_err(|e| CaptureError::BadHeader {
                    file: name.clone(),
                    format: "pcapng",
                    detail: header_problem(e),
                })?;
                (
                    Format::PcapNg {
                        reader,
                        big_endian,
                        interfaces: Vec::new(),
                    },
                    shb_len,
                )
            }
            0xA1B2_CD34 | 0x34CD_B2A1 => {
                return Err(not_capture(
                    "modified (Kuznetzov) pcap format is not supported; convert it with editcap"
                        .into(),
                ))
            }
            _ if head[..2] == [0x1F, 0x8B] => {
                return Err(not_capture(
                    "the file is gzip-compressed; decompress it first".into(),
                ))
            }
            _ => {
                return Err(not_capture(format!(
                    "unknown magic number {:02x} {:02x} {:02x} {:02x}",
                    head[0], head[1], head[2], head[3]
                )))
            }
        };
        progress.store(header_len, Ordering::Relaxed);
        Ok(RecordSource {
            name,
            format,
            input,
            progress,
            frame: 0,
            next_offset: header_len,
            last_time_us: 0,
            ended: false,
        })
    }

    /// Number of the last frame handed out.
    pub(crate) fn frame(&self) -> u64 {
        self.frame
    }
    /// Bytes consumed so far.
    pub(crate) fn offset(&self) -> u64 {
        self.next_offset
    }
    pub(crate) fn last_time_us(&self) -> i64 {
        self.last_time_us
    }

    /// The next record, `None` at the end of the file.
    pub(crate) fn next_record(&mut self) -> Result<Option<Record<'_>>, CaptureError> {
        if self.ended {
            return Ok(None);
        }
        let Self {
            name,
            format,
            input,
            progress,
            frame,
            next_offset,
            last_time_us,
            ended,
        } = self;
        let at = *next_offset;
        let place = |frame: u64| format!("{name}: frame {frame} at byte offset {at}");
        // A failed read: the end of the file inside a record, a record header that
        // cannot be followed, or an I/O error.
        let fail = |e: PcapError,
                    what: &str,
                    ended: &mut bool|
         -> Result<Option<Record<'static>>, CaptureError> {
            *ended = true;
            let place = format!("{name}: frame {} at byte offset {at}", *frame + 1);
            match e {
                PcapError::IoError(e) if e.kind() == ErrorKind::UnexpectedEof => {
                    let message = if input.eof.get() {
                        let left = input.bytes.get().saturating_sub(at);
                        format!("{place}: truncated {what}: the file ends {left} bytes into it")
                    } else {
                        format!("{place}: corrupt {what} header: it claims more than {READ_BUFFER} bytes; the rest of the file is not read")
                    };
                    Ok(Some(Record::End {
                        frame: *frame + 1,
                        time_us: *last_time_us,
                        message,
                    }))
                }
                PcapError::IoError(source) => Err(CaptureError::Read {
                    file: name.clone(),
                    frame: *frame + 1,
                    offset: at,
                    source,
                }),
                e => Ok(Some(Record::End {
                    frame: *frame + 1,
                    time_us: *last_time_us,
                    message: format!(
                        "{place}: corrupt {what}: {e}; the rest of the file is not read"
                    ),
                })),
            }
        };

        match format {
            Format::Pcap {
                reader,
                link,
                nanos,
                snaplen,
            } => {
                let packet = match reader.next_raw_packet() {
                    None => {
                        *ended = true;
                        return Ok(None);
                    }
                    Some(Err(e)) => return fail(e, "pcap record", ended),
                    Some(Ok(p)) => p,
                };
                *frame += 1;
                *next_offset = at + 16 + packet.incl_len as u64;
                progress.store(*next_offset, Ordering::Relaxed);
                let frac_us = if *nanos {
                    packet.ts_frac / 1000
                } else {
                    packet.ts_frac
                };
                let time_us = packet.ts_sec as i64 * 1_000_000 + frac_us as i64;
                *last_time_us = time_us;
                if packet.incl_len > MAX_FRAME.max(*snaplen) {
                    // Most likely not a record header at all: the file is damaged here,
                    // and the following "records" would be garbage.
                    *ended = true;
                    let message = format!("{}: corrupt pcap record header: captured length {} exceeds the snap length {}; the rest of the file is not read", place(*frame), packet.incl_len, snaplen);
                    return Ok(Some(Record::End {
                        frame: *frame,
                        time_us,
                        message,
                    }));
                }
                let Cow::Borrowed(data) = packet.data else {
                    return Ok(Some(Record::Unreadable {
                        frame: *frame,
                        time_us,
                        message: format!(
                            "{}: record data not borrowed from the read buffer",
                            place(*frame)
                        ),
                    }));
                };
                Ok(Some(Record::Frame {
                    frame: *frame,
                    offset: at,
                    link: *link,
                    time_us,
                    data,
                }))
            }
            Format::PcapNg {
                reader,
                big_endian,
                interfaces,
            } => {
                let block = match reader.next_raw_block() {
                    None => {
                        *ended = true;
                        return Ok(None);
                    }
                    Some(Err(e)) => return fail(e, "pcapng block", ended),
                    Some(Ok(b)) => b,
                };
                *next_offset = at + block.initial_len as u64;
                progress.store(*next_offset, Ordering::Relaxed);
                let Cow::Borrowed(body) = block.body else {
                    return Ok(Some(Record::NotAFrame));
                };
                let big = *big_endian;
                match block.type_ {
                    PCAPNG_SHB => {
                        // A new section: its own byte order, and interface numbering
                        // starts again.
                        *big_endian = body.get(..4) == Some(&[0x1A, 0x2B, 0x3C, 0x4D][..]);
                        interfaces.clear();
                        Ok(Some(Record::NotAFrame))
                    }
                    PCAPNG_IDB => {
                        interfaces.push(parse_interface(body, big));
                        Ok(Some(Record::NotAFrame))
                    }
                    PCAPNG_EPB | PCAPNG_PB | PCAPNG_SPB => {
                        *frame += 1;
                        let packet = match parse_packet_block(block.type_, body, big, interfaces) {
                            Ok(p) => p,
                            Err(what) => {
                                return Ok(Some(Record::Unreadable {
                                    frame: *frame,
                                    time_us: *last_time_us,
                                    message: format!("{}: {what}", place(*frame)),
                                }))
                            }
                        };
                        // A Simple Packet Block has no timestamp: it keeps the last one.
                        let time_us = packet.time_us.unwrap_or(*last_time_us);
                        *last_time_us = time_us;
                        Ok(Some(Record::Frame {
                            frame: *frame,
                            offset: at,
                            link: packet.link,
                            time_us,
                            data: packet.data,
                        }))
                    }
                    _ => Ok(Some(Record::NotAFrame)),
                }
            }
        }
    }
}

struct PacketBlock<'a> {
    link: u32,
    time_us: Option<i64>,
    data: &'a [u8],
}

/// Enhanced, obsolete and Simple Packet Blocks, read from the raw block body (so that
/// an odd option never makes a packet unreadable).
fn parse_packet_block<'a>(
    type_: u32,
    body: &'a [u8],
    big: bool,
    interfaces: &[Interface],
) -> Result<PacketBlock<'a>, String> {
    let kind = match type_ {
        PCAPNG_EPB => "enhanced packet block",
        PCAPNG_PB => "packet block",
        _ => "simple packet block",
    };
    if type_ == PCAPNG_SPB {
        let iface = interfaces
            .first()
            .ok_or_else(|| format!("{kind} before any interface description block"))?;
        if body.len() < 4 {
            return Err(format!("{kind} shorter than its header"));
        }
        let orig_len = read_u32(&body[..4], big) as usize;
        // The captured length is implicit: the original length cut by the snap length
        // (the block body also holds up to 3 padding bytes).
        let mut caplen = orig_len.min(body.len() - 4);
        if iface.snaplen != 0 {
            caplen = caplen.min(iface.snaplen as usize);
        }
        return Ok(PacketBlock {
            link: iface.link,
            time_us: None,
            data: &body[4..4 + caplen],
        });
    }
    if body.len() < 20 {
        return Err(format!("{kind} shorter than its header"));
    }
    let iface_id = if type_ == PCAPNG_PB {
        read_u16(&body[..2], big) as u32
    } else {
        read_u32(&body[..4], big)
    };
    let iface = interfaces.get(iface_id as usize).ok_or_else(|| {
        format!(
            "{kind} names interface {iface_id}, but the section describes {} interface(s)",
            interfaces.len()
        )
    })?;
    let raw_ts = (read_u32(&body[4..8], big) as u64) << 32 | read_u32(&body[8..12], big) as u64;
    let caplen = read_u32(&body[12..16], big) as usize;
    let data = body
        .get(20..20usize.saturating_add(caplen))
        .ok_or_else(|| format!("{kind}: captured length {caplen} exceeds the block"))?;
    Ok(PacketBlock {
        link: iface.link,
        time_us: Some(iface.time_us(raw_ts)),
        data,
    })
}

impl Interface {
    fn time_us(&self, raw: u64) -> i64 {
        let us = if self.units_per_sec == 1_000_000 {
            raw as u128
        } else {
            raw as u128 * 1_000_000 / self.units_per_sec
        };
        (us.min(i64::MAX as u128) as i64).saturating_add(self.offset_s.saturating_mul(1_000_000))
    }
}

/// The interface description block fields that matter here; unknown or malformed
/// options are skipped.
fn parse_interface(body: &[u8], big: bool) -> Interface {
    let mut iface = Interface {
        link: 0,
        snaplen: 0,
        units_per_sec: 1_000_000,
        offset_s: 0,
    };
    if body.len() < 8 {
        return iface;
    }
    iface.link = read_u16(&body[..2], big) as u32;
    iface.snaplen = read_u32(&body[4..8], big);
    let mut opts = &body[8..];
    while opts.len() >= 4 {
        let code = read_u16(&opts[..2], big);
        let len = read_u16(&opts[2..4], big) as usize;
        let Some(value) = opts.get(4..4 + len) else {
            break;
        };
        match (code, len) {
            (0, _) => break,
            // if_tsresol: 10^-n seconds, or 2^-n when the top bit is set.
            (9, 1) => {
                let n = value[0];
                let units = if n & 0x80 == 0 {
                    10u128.checked_pow(n as u32)
                } else {
                    2u128.checked_pow((n & 0x7F) as u32)
                };
                iface.units_per_sec = units.filter(|&u| u > 0).unwrap_or(1_000_000);
            }
            // if_tsoffset: seconds to add to every timestamp.
            (14, 8) => {
                iface.offset_s = if big {
                    i64::from_be_bytes(value.try_into().unwrap())
                } else {
                    i64::from_le_bytes(value.try_into().unwrap())
                }
            }
            _ => {}
        }
        let padded = (4 + len + 3) & !3;
        opts = opts.get(padded..).unwrap_or(&[]);
    }
    iface
}

fn read_u32(b: &[u8], big: bool) -> u32 {
    let b = [b[0], b[1], b[2], b[3]];
    if big {
        u32::from_be_bytes(b)
    } else {
        u32::from_le_bytes(b)
    }
}

fn read_u16(b: &[u8], big: bool) -> u16 {
    let b = [b[0], b[1]];
    if big {
        u16::from_be_bytes(b)
    } else {
        u16::from_le_bytes(b)
    }
}

fn read_up_to(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

fn header_problem(e: PcapError) -> String {
    match e {
        PcapError::IoError(e) if e.kind() == ErrorKind::UnexpectedEof => {
            "the file ends inside its header".to_string()
        }
        e => e.to_string(),
    }
}
