//! Reads the records of a pcap or pcapng file, one at a time, through a reusable read
//! buffer: the frame bytes handed out borrow that buffer, so nothing is copied and
//! nothing accumulates.
//!
//! Guarantees: frames are numbered from 1 as Wireshark numbers them (pcapng blocks that
//! are not packets get no number); every frame gets a time in microseconds since the
//! Unix epoch (pcap micro/nanosecond magic; pcapng `if_tsresol` and `if_tsoffset` of
//! the packet's interface); the byte offset of each record is known for messages. A
//! record cut by the end of the file, or a corrupt record header after which the file
//! cannot be followed, ends the stream with [`Record::End`] instead of an error. Only
//! an I/O error is an error.
//!
//! pcap-file parses the pcap file header and records. pcapng blocks are framed here:
//! pcap-file 2.0's `PcapNgReader` rejects option lists without an end-of-options
//! marker, which the pcapng specification allows (its readers "MUST NOT assume" one),
//! and stalls on any block it cannot parse; here a block's options are only read for
//! the two interface fields that matter, leniently.

use std::borrow::Cow;
use std::io::{self, ErrorKind, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use pcap_file::pcap::PcapParser;
use pcap_file::{Endianness, PcapError, TsResolution};

use super::CaptureError;

/// Read size; the buffer grows beyond it only for a bigger record. 128 KiB stays in
/// the core's L2 cache between the kernel's copy into it and the parsing of it
/// (against 1 MiB: 0.96 of the CPU and 0.93 of the wall time of `analyze` on the
/// benchmark capture).
const READ_CHUNK: usize = 1 << 17;
/// No capture tool writes a bigger frame (tcpdump's maximum snap length); a pcap record
/// header claiming more (beyond the file's own snap length) is corrupt, and the records
/// after it cannot be found.
const MAX_FRAME: u32 = 262_144;
/// The same for pcapng blocks (Wireshark refuses blocks over 16 MiB).
const MAX_BLOCK: u32 = 16 << 20;

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
    /// names the place; `frame` is the number the record would have had, `offset` its
    /// byte offset. `corrupt`: the framing is broken before the end of the file (bytes
    /// after it are not read), not merely cut by the end of the file. Nothing follows.
    End {
        frame: u64,
        offset: u64,
        time_us: i64,
        message: String,
        corrupt: bool,
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
        parser: PcapParser,
        big_endian: bool,
        link: u32,
        nanos: bool,
        snaplen: u32,
    },
    PcapNg {
        big_endian: bool,
        interfaces: Vec<Interface>,
    },
}

/// The bytes read ahead of the current record.
struct InputBuffer {
    reader: Box<dyn Read>,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
}

impl InputBuffer {
    /// Makes `n` bytes available from the current position; false if the file ends
    /// before.
    fn fill(&mut self, n: usize) -> io::Result<bool> {
        while self.end - self.start < n {
            if self.eof {
                return Ok(false);
            }
            if self.start + n > self.buf.len() && self.start > 0 {
                // Move the unread bytes to the front.
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.end == self.buf.len() {
                // Grow only as bytes arrive (at most doubling what was read): a
                // record header that claims gigabytes the file does not hold costs no
                // memory.
                let grown = (self.buf.len() * 2).min(self.start + n);
                self.buf.resize(grown.max(self.end + 1), 0);
            }
            match self.reader.read(&mut self.buf[self.end..]) {
                Ok(0) => self.eof = true,
                Ok(got) => self.end += got,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    fn available(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Takes the next `n` bytes (which `fill` made available).
    fn take(&mut self, n: usize) -> &[u8] {
        let at = self.start;
        self.start += n;
        &self.buf[at..at + n]
    }
}

pub(crate) struct RecordSource {
    name: String,
    format: Format,
    input: InputBuffer,
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
        reader: Box<dyn Read>,
        name: String,
        progress: Arc<AtomicU64>,
    ) -> Result<RecordSource, CaptureError> {
        let mut input = InputBuffer {
            reader,
            buf: vec![0; READ_CHUNK],
            start: 0,
            end: 0,
            eof: false,
        };
        let read_error = |source| CaptureError::Read {
            file: name.clone(),
            frame: 0,
            offset: 0,
            source,
        };
        input.fill(24).map_err(read_error)?;
        let head = input.available();
        let got = head.len();
        let not_capture = |detail: String| CaptureError::NotACapture {
            file: name.clone(),
            detail,
        };
        let bad_header = |format: &'static str, detail: String| CaptureError::BadHeader {
            file: name.clone(),
            format,
            detail,
        };
        if got < 4 {
            return Err(not_capture(format!("the file holds only {got} bytes")));
        }
        let magic = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        let (format, header_len) =
            match magic {
                0xA1B2_C3D4 | 0xD4C3_B2A1 | 0xA1B2_3C4D | 0x4D3C_B2A1 => {
                    let (_, parser) = PcapParser::new(head).map_err(|e| match e {
                        PcapError::IncompleteBuffer => {
                            bad_header("pcap", "the file ends inside its header".into())
                        }
                        e => bad_header("pcap", e.to_string()),
                    })?;
                    let header = parser.header();
                    // The upper bits of the link type field carry FCS information.
                    let link = u32::from(header.datalink) & 0xFFFF;
                    let nanos = header.ts_resolution == TsResolution::NanoSecond;
                    let big_endian = header.endianness == Endianness::Big;
                    (
                        Format::Pcap {
                            parser,
                            big_endian,
                            link,
                            nanos,
                            snaplen: header.snaplen,
                        },
                        24,
                    )
                }
                PCAPNG_SHB => {
                    // The section header block is read as a block like the others; only
                    // check here that it is one.
                    if got < 12 {
                        return Err(bad_header(
                            "pcapng",
                            format!("the file holds only {got} bytes"),
                        ));
                    }
                    if byte_order_magic(&head[8..12]).is_none() {
                        return Err(bad_header(
                            "pcapng",
                            "bad byte-order magic in the section header".into(),
                        ));
                    }
                    (
                        Format::PcapNg {
                            big_endian: true,
                            interfaces: Vec::new(),
                        },
                        0,
                    )
                }
                0xA1B2_CD34 | 0x34CD_B2A1 => return Err(not_capture(
                    "modified (Kuznetzov) pcap format is not supported; convert it with editcap"
                        .into(),
                )),
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
        input.take(header_len as usize);
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
    /// Bytes held for reading ahead: bounded by what was read, never by what a
    /// header claims.
    #[cfg(test)]
    pub(crate) fn buffered_capacity(&self) -> usize {
        self.input.buf.len()
    }

    pub(crate) fn next_record(&mut self) -> Result<Option<Record<'_>>, CaptureError> {
        if self.ended {
            return Ok(None);
        }
        let at = self.next_offset;
        let len = match self.frame_record()? {
            Framing::Record(len) => len,
            Framing::EndOfFile => {
                self.ended = true;
                return Ok(None);
            }
            Framing::Stop { what, corrupt } => {
                self.ended = true;
                let frame = self.frame + 1;
                let message = format!("{}: frame {frame} at byte offset {at}: {what}", self.name);
                return Ok(Some(Record::End {
                    frame,
                    offset: at,
                    time_us: self.last_time_us,
                    message,
                    corrupt,
                }));
            }
        };
        self.next_offset = at + len as u64;
        self.progress.store(self.next_offset, Ordering::Relaxed);
        let Self {
            name,
            format,
            input,
            frame,
            last_time_us,
            ..
        } = self;
        let record = input.take(len);
        let decoded = match format {
            Format::Pcap {
                parser,
                nanos,
                link,
                ..
            } => {
                *frame += 1;
                decode_pcap_record(parser, *nanos, *link, record)
            }
            Format::PcapNg {
                big_endian,
                interfaces,
            } => match read_u32(&record[..4], *big_endian) {
                PCAPNG_SHB => {
                    // A new section: interface numbering starts again.
                    interfaces.clear();
                    return Ok(Some(Record::NotAFrame));
                }
                PCAPNG_IDB => {
                    interfaces.push(parse_interface(&record[8..len - 4], *big_endian));
                    return Ok(Some(Record::NotAFrame));
                }
                type_ @ (PCAPNG_EPB | PCAPNG_PB | PCAPNG_SPB) => {
                    *frame += 1;
                    parse_packet_block(type_, &record[8..len - 4], *big_endian, interfaces)
                }
                _ => return Ok(Some(Record::NotAFrame)),
            },
        };
        Ok(Some(match decoded {
            Ok(packet) => {
                // A Simple Packet Block has no timestamp: it keeps the last one.
                let time_us = packet.time_us.unwrap_or(*last_time_us);
                *last_time_us = time_us;
                Record::Frame {
                    frame: *frame,
                    offset: at,
                    link: packet.link,
                    time_us,
                    data: packet.data,
                }
            }
            Err(what) => Record::Unreadable {
                frame: *frame,
                time_us: *last_time_us,
                message: format!("{name}: frame {} at byte offset {at}: {what}", *frame),
            },
        }))
    }

    /// Finds the length of the next record and makes it available in the buffer; or
    /// says why the file cannot be followed further.
    fn frame_record(&mut self) -> Result<Framing, CaptureError> {
        let (at, frame) = (self.next_offset, self.frame + 1);
        let read_error = |source| CaptureError::Read {
            file: self.name.clone(),
            frame,
            offset: at,
            source,
        };
        let (header_len, what) = match self.format {
            Format::Pcap { .. } => (16, "pcap record"),
            Format::PcapNg { .. } => (12, "pcapng block"),
        };
        if !self.input.fill(header_len).map_err(read_error)? {
            return Ok(match self.input.available().len() {
                0 => Framing::EndOfFile,
                left => Framing::cut(format!(
                    "truncated {what}: the file ends {left} bytes into it"
                )),
            });
        }
        let head = self.input.available();
        let len = match &mut self.format {
            Format::Pcap {
                big_endian,
                snaplen,
                ..
            } => {
                let incl_len = read_u32(&head[8..12], *big_endian);
                if incl_len > MAX_FRAME.max(*snaplen) {
                    // Most likely not a record header at all: the file is damaged here,
                    // and the following "records" would be garbage.
                    return Ok(Framing::corrupt(format!(
                        "corrupt pcap record header: captured length {incl_len} exceeds the snap length {snaplen}; the rest of the file is not read"
                    )));
                }
                16 + incl_len as usize
            }
            Format::PcapNg { big_endian, .. } => {
                if read_u32(&head[..4], *big_endian) == PCAPNG_SHB {
                    // A section header sets the byte order of its own section.
                    match byte_order_magic(&head[8..12]) {
                        Some(big) => *big_endian = big,
                        None => return Ok(Framing::corrupt("corrupt pcapng section header: bad byte-order magic; the rest of the file is not read".into())),
                    }
                }
                let len = read_u32(&head[4..8], *big_endian);
                if len < 12 || !len.is_multiple_of(4) || len > MAX_BLOCK {
                    return Ok(Framing::corrupt(format!("corrupt pcapng block header: block length {len}; the rest of the file is not read")));
                }
                len as usize
            }
        };
        if !self.input.fill(len).map_err(read_error)? {
            let left = self.input.available().len();
            return Ok(Framing::cut(format!(
                "truncated {what}: the file ends after {left} of its {len} bytes"
            )));
        }
        if let Format::PcapNg { big_endian, .. } = self.format {
            if read_u32(&self.input.available()[len - 4..len], big_endian) != len as u32 {
                return Ok(Framing::corrupt(format!(
                    "corrupt pcapng block: its trailing length differs from its length {len}; the rest of the file is not read"
                )));
            }
        }
        Ok(Framing::Record(len))
    }
}

/// Where the next record is.
enum Framing {
    /// The next `len` bytes of the buffer.
    Record(usize),
    EndOfFile,
    /// Nowhere: the file is cut (`corrupt` false) or corrupt here, for this reason.
    Stop {
        what: String,
        corrupt: bool,
    },
}

impl Framing {
    /// The file ends inside the record: a partial capture, nothing after it.
    fn cut(what: String) -> Framing {
        Framing::Stop {
            what,
            corrupt: false,
        }
    }
    /// The record cannot be framed: the bytes after it are not read.
    fn corrupt(what: String) -> Framing {
        Framing::Stop {
            what,
            corrupt: true,
        }
    }
}

fn decode_pcap_record<'a>(
    parser: &PcapParser,
    nanos: bool,
    link: u32,
    record: &'a [u8],
) -> Result<DecodedPacket<'a>, String> {
    let (_, packet) = parser.next_raw_packet(record).map_err(|e| e.to_string())?;
    let frac_us = if nanos {
        packet.ts_frac / 1000
    } else {
        packet.ts_frac
    };
    let time_us = packet.ts_sec as i64 * 1_000_000 + frac_us as i64;
    match packet.data {
        Cow::Borrowed(data) => Ok(DecodedPacket {
            link,
            time_us: Some(time_us),
            data,
        }),
        Cow::Owned(_) => Err("record data not borrowed from the read buffer".into()),
    }
}

/// The byte order a section header's magic announces: `Some(true)` for big-endian.
fn byte_order_magic(b: &[u8]) -> Option<bool> {
    match b {
        [0x1A, 0x2B, 0x3C, 0x4D] => Some(true),
        [0x4D, 0x3C, 0x2B, 0x1A] => Some(false),
        _ => None,
    }
}

/// A packet record, decoded.
struct DecodedPacket<'a> {
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
) -> Result<DecodedPacket<'a>, String> {
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
        return Ok(DecodedPacket {
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
    Ok(DecodedPacket {
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
