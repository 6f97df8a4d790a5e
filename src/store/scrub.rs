//! Credentials found by MQTT framing alone, on the raw bytes of one direction of a
//! connection, read by read, before they reach the store ([`super::WriteBatch`]).
//!
//! Nothing here decodes: a [`Scrub`] follows the fixed headers (packet type,
//! remaining length) and, inside a CONNECT or an AUTH packet, the variable header's
//! flags and every length, so it finds the user name, the password and the
//! Authentication Data property (0x16, MQTT 5 §3.1.2.11.10, §3.15.2.2.3) whatever
//! their encoding (binary, not UTF-8), however large the packet (more than
//! `--max-buffered`, which the decoder never sees whole), however the bytes are split
//! across reads (one byte per read), after a PROXY protocol header (v1 or v2), and
//! after bytes that are not MQTT (it looks for a CONNECT's first bytes). Only the
//! data bytes are overwritten, never a length, so the stored stream keeps its framing
//! and still decodes. Each read is walked once, byte by byte only over headers and
//! lengths: data and payloads are skipped by their length.
//!
//! Where it cannot be certain where the credentials are (an unknown MQTT 5 property,
//! whose length it cannot know; an unknown protocol level; a field running past the
//! packet; bytes after the last field; a client stream that does not start with a
//! CONNECT), it withholds: the rest of that packet (or every byte until a CONNECT
//! starts) is overwritten too, and [`Withheld`] says how many bytes and why, which
//! the store records as not recorded. A credential is never stored in clear.

use std::collections::VecDeque;
use std::ops::Range;

/// Bytes the stream start is kept for, to tell a CONNECT from a PROXY header or
/// from bytes that are neither: a CONNECT's fixed header and protocol name take at
/// most 13; its first credential starts at byte 16 at the earliest, so these bytes
/// never hold one.
const START: usize = 16;

/// PROXY protocol v2 signature (haproxy's proxy-protocol.txt §2.2).
const PROXY_V2: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";
/// A PROXY v1 header's line is at most this long, CRLF included.
const PROXY_V1_MAX: usize = 107;

/// Authentication Data.
const AUTH_DATA: u8 = 0x16;

/// Bytes a [`Scrub`] overwrote without knowing they are credentials, and why.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Withheld {
    pub bytes: u64,
    pub why: String,
}

/// Which side's stream: a client sends CONNECT and AUTH, a server only AUTH.
#[derive(Clone, Copy, PartialEq)]
enum Dir {
    Client,
    Server,
}

/// One direction of one connection.
pub(crate) struct Scrub {
    dir: Dir,
    st: St,
}

enum St {
    /// The first bytes of the stream (or after a PROXY header), until it is clear
    /// what they are.
    Start(Vec<u8>),
    /// Inside a PROXY v1 line: bytes of it so far, and whether the last was CR.
    ProxyV1 { seen: usize, cr: bool },
    /// A PROXY v2 header: bytes left to skip.
    ProxyV2(u64),
    /// Not at a packet boundary to trust: every byte withheld until a CONNECT
    /// starts; the last bytes seen, to find one across reads.
    Hunt(Vec<u8>),
    /// Between packets: the fixed header so far (type byte, remaining length).
    Header { first: Option<u8>, len: u64, n: u32 },
    /// Inside a packet without credentials: bytes left.
    Skip(u64),
    /// Inside a CONNECT or AUTH.
    Walk(Walk),
    /// The rest of a packet withheld: bytes left.
    Withhold(u64),
    /// A server stream whose framing broke: nothing more is looked at.
    Lost,
}

/// The walk through a CONNECT or AUTH packet: what to read next.
struct Walk {
    /// Bytes of the packet left.
    left: u64,
    ops: VecDeque<Op>,
    /// A number being read: its value so far and bytes read.
    acc: u64,
    got: u32,
    level: u8,
    what: &'static str,
}

#[derive(Clone, Copy)]
enum Op {
    Byte(Tag),
    Two(Tag),
    Var(Tag),
    /// Data bytes: skipped, or overwritten when secret.
    Data {
        n: u64,
        secret: bool,
    },
    /// Properties until this many bytes of the packet are left.
    PropsUntil(u64),
}

#[derive(Clone, Copy, PartialEq)]
enum Tag {
    Ignore,
    Level,
    ConnectFlags,
    PropsLen,
    PropId,
    /// A length; the data that follows is secret or not.
    Len(bool),
    /// AUTH's reason code: properties follow if the packet goes on.
    AuthReason,
}

/// What a step of the walk came to.
enum Next {
    Go,
    /// The packet is done.
    Done,
    /// Withhold the rest of the packet, for this reason.
    Withhold(String),
}

impl Scrub {
    pub(crate) fn client() -> Scrub {
        Scrub {
            dir: Dir::Client,
            st: St::Start(Vec::with_capacity(START)),
        }
    }

    pub(crate) fn server() -> Scrub {
        Scrub {
            dir: Dir::Server,
            st: St::Header {
                first: None,
                len: 0,
                n: 0,
            },
        }
    }

    /// Walks the next `bytes` of the stream: the ranges of them to overwrite are
    /// added to `mask` (in order, merged), what was withheld without being known
    /// for a credential to `withheld`.
    pub(crate) fn feed(
        &mut self,
        bytes: &[u8],
        mask: &mut Vec<Range<usize>>,
        withheld: &mut Vec<Withheld>,
    ) {
        let mut out = Out { mask, withheld };
        let mut i = 0;
        while i < bytes.len() {
            i = self.step(bytes, i, &mut out);
        }
    }

    /// One step from `bytes[i..]`; returns where the next starts.
    fn step(&mut self, bytes: &[u8], i: usize, out: &mut Out<'_>) -> usize {
        let rest = &bytes[i..];
        match &mut self.st {
            St::Start(seen) => {
                seen.push(rest[0]);
                match classify(seen) {
                    Class::NeedMore => {}
                    Class::ProxyV1 => {
                        let n = seen.len();
                        self.st = St::ProxyV1 { seen: n, cr: false };
                    }
                    Class::ProxyV2(len) => {
                        self.st = St::ProxyV2(len);
                    }
                    Class::Connect => {
                        // Walked again from its first byte: these bytes are gone
                        // already, and never hold a credential (see START).
                        let seen = std::mem::take(seen);
                        self.st = header();
                        self.replay(&seen, out.withheld);
                    }
                    Class::Other => {
                        // Not MQTT from the start: look for a CONNECT from the
                        // second byte on.
                        let seen = std::mem::take(seen);
                        self.st = St::Hunt(vec![]);
                        self.replay(&seen[1..], out.withheld);
                    }
                }
                i + 1
            }
            St::ProxyV1 { seen, cr } => {
                let b = rest[0];
                *seen += 1;
                if *cr && b == b'\n' {
                    self.st = St::Start(Vec::with_capacity(START));
                } else if *seen >= PROXY_V1_MAX {
                    self.st = St::Hunt(vec![]);
                } else {
                    *cr = b == b'\r';
                }
                i + 1
            }
            St::ProxyV2(left) => {
                let n = (*left).min(rest.len() as u64);
                *left -= n;
                if *left == 0 {
                    self.st = St::Start(Vec::with_capacity(START));
                }
                i + n as usize
            }
            St::Hunt(_) => i + self.hunt(rest, i, out),
            St::Header { first, len, n } => {
                let b = rest[0];
                match first {
                    None => *first = Some(b),
                    Some(t) => {
                        *len |= u64::from(b & 0x7f) << (7 * *n);
                        *n += 1;
                        if b & 0x80 != 0 {
                            if *n == 4 {
                                // Five length bytes: no MQTT framing any more.
                                self.st = match self.dir {
                                    Dir::Client => St::Hunt(vec![]),
                                    Dir::Server => St::Lost,
                                };
                            }
                            return i + 1;
                        }
                        let (t, len) = (*t >> 4, *len);
                        let walks = match self.dir {
                            Dir::Client => t == 1 || t == 15,
                            Dir::Server => t == 15,
                        };
                        self.st = if len == 0 {
                            St::Header {
                                first: None,
                                len: 0,
                                n: 0,
                            }
                        } else if walks {
                            St::Walk(Walk::new(t == 1, len))
                        } else {
                            St::Skip(len)
                        };
                    }
                }
                i + 1
            }
            St::Skip(left) => {
                let n = (*left).min(rest.len() as u64);
                *left -= n;
                if *left == 0 {
                    self.st = header();
                }
                i + n as usize
            }
            St::Withhold(left) => {
                let n = (*left).min(rest.len() as u64);
                out.mask(i, i + n as usize);
                *left -= n;
                if *left == 0 {
                    self.st = header();
                }
                i + n as usize
            }
            St::Walk(w) => {
                let (used, next) = w.step(rest, i, out);
                match next {
                    Next::Go if w.left > 0 => {}
                    // The packet ended (fields it announced are missing: the broker
                    // refuses it; nothing of them is here).
                    Next::Go | Next::Done => {
                        if w.left > 0 {
                            let why =
                                format!("{} bytes after the last field of a {}", w.left, w.what);
                            let left = w.left;
                            out.withhold(left, why);
                            self.st = St::Withhold(left);
                        } else {
                            self.st = header();
                        }
                    }
                    Next::Withhold(why) => {
                        let left = w.left;
                        out.withhold(left, why);
                        self.st = if left == 0 {
                            header()
                        } else {
                            St::Withhold(left)
                        };
                    }
                }
                i + used
            }
            St::Lost => bytes.len(),
        }
    }

    /// In [`St::Hunt`]: withholds `rest` (from `at` in the read) up to a CONNECT's
    /// first byte, if one starts in it; returns the bytes taken. Bytes that may be
    /// the beginning of a CONNECT (its type byte, a length, a part of the protocol
    /// name: nothing else) are stored as they are, so that a CONNECT split across
    /// reads is stored whole and still decodes.
    fn hunt(&mut self, rest: &[u8], at: usize, out: &mut Out<'_>) -> usize {
        let St::Hunt(tail) = &mut self.st else {
            unreachable!("hunt outside St::Hunt")
        };
        let keep = tail.len();
        let mut buf = std::mem::take(tail);
        buf.extend_from_slice(rest);
        let n = match find_connect(&buf) {
            // It starts in `rest`: what comes before is withheld, the CONNECT is
            // walked from its first byte.
            Some(s) if s >= keep => s - keep,
            // It started in the bytes kept: walked from there, `rest` live.
            Some(s) => {
                self.st = header();
                self.replay(&buf[s..keep], out.withheld);
                return 0;
            }
            None => {
                // The bytes from the first that may begin a CONNECT are kept.
                let from = (0..buf.len())
                    .find(|&s| connect_at(&buf, s).is_none())
                    .unwrap_or(buf.len());
                let n = from.saturating_sub(keep);
                out.mask(at, at + n);
                out.withhold(n as u64, NOT_MQTT.into());
                buf.drain(..from);
                self.st = St::Hunt(buf);
                return rest.len();
            }
        };
        out.mask(at, at + n);
        out.withhold(n as u64, NOT_MQTT.into());
        self.st = header();
        n
    }

    /// Walks bytes that are gone already (stored as they were, never a credential):
    /// what it would overwrite of them is dropped.
    fn replay(&mut self, bytes: &[u8], withheld: &mut Vec<Withheld>) {
        let mut mask = vec![];
        let mut out = Out {
            mask: &mut mask,
            withheld,
        };
        let mut j = 0;
        while j < bytes.len() {
            j = self.step(bytes, j, &mut out);
        }
    }
}

const NOT_MQTT: &str =
    "the client's bytes before it are not an MQTT CONNECT (nor a PROXY protocol header): \
     withheld, they may hold credentials in a form not known";

fn header() -> St {
    St::Header {
        first: None,
        len: 0,
        n: 0,
    }
}

/// Where a step's results go.
struct Out<'a> {
    mask: &'a mut Vec<Range<usize>>,
    withheld: &'a mut Vec<Withheld>,
}

impl Out<'_> {
    fn mask(&mut self, from: usize, to: usize) {
        if from >= to {
            return;
        }
        match self.mask.last_mut() {
            Some(last) if last.end == from => last.end = to,
            _ => self.mask.push(from..to),
        }
    }

    fn withhold(&mut self, bytes: u64, why: String) {
        if bytes == 0 {
            return;
        }
        match self.withheld.last_mut() {
            Some(w) if w.why == why => w.bytes += bytes,
            _ => self.withheld.push(Withheld { bytes, why }),
        }
    }
}

impl Walk {
    fn new(connect: bool, len: u64) -> Walk {
        let ops = if connect {
            // Protocol name, level, flags (the rest follows from them).
            [
                Op::Two(Tag::Len(false)),
                Op::Byte(Tag::Level),
                Op::Byte(Tag::ConnectFlags),
            ]
            .into()
        } else {
            [Op::Byte(Tag::AuthReason)].into()
        };
        Walk {
            left: len,
            ops,
            acc: 0,
            got: 0,
            level: 0,
            what: if connect { "CONNECT" } else { "AUTH" },
        }
    }

    /// Takes what the next op needs from `rest` (at `at` in the read).
    fn step(&mut self, rest: &[u8], at: usize, out: &mut Out<'_>) -> (usize, Next) {
        let Some(op) = self.ops.front().copied() else {
            return (0, Next::Done);
        };
        let avail = (rest.len() as u64).min(self.left) as usize;
        if avail == 0 {
            return (0, Next::Done);
        }
        match op {
            Op::Data { n, secret } => {
                if n > self.left && !secret {
                    return (
                        0,
                        Next::Withhold(format!(
                            "a field of a {} runs past the packet's end",
                            self.what
                        )),
                    );
                }
                let take = n.min(avail as u64);
                if secret {
                    out.mask(at, at + take as usize);
                }
                self.left -= take;
                if take == n {
                    self.ops.pop_front();
                } else if let Some(Op::Data { n, .. }) = self.ops.front_mut() {
                    *n -= take;
                }
                (take as usize, Next::Go)
            }
            Op::PropsUntil(end) => {
                if self.left == end {
                    self.ops.pop_front();
                    (0, Next::Go)
                } else if self.left < end {
                    (
                        0,
                        Next::Withhold(format!(
                            "a property of a {} runs past its property list",
                            self.what
                        )),
                    )
                } else {
                    self.ops.push_front(Op::Byte(Tag::PropId));
                    (0, Next::Go)
                }
            }
            Op::Byte(tag) | Op::Two(tag) | Op::Var(tag) => {
                let b = rest[0];
                self.left -= 1;
                let done = match op {
                    Op::Byte(_) => {
                        self.acc = u64::from(b);
                        true
                    }
                    Op::Two(_) => {
                        self.acc = (self.acc << 8) | u64::from(b);
                        self.got += 1;
                        self.got == 2
                    }
                    _ => {
                        self.acc |= u64::from(b & 0x7f) << (7 * self.got);
                        self.got += 1;
                        if b & 0x80 != 0 && self.got == 4 {
                            return (
                                1,
                                Next::Withhold(format!(
                                    "a malformed variable byte integer in a {}",
                                    self.what
                                )),
                            );
                        }
                        b & 0x80 == 0
                    }
                };
                if !done {
                    return (1, Next::Go);
                }
                let v = std::mem::take(&mut self.acc);
                self.got = 0;
                self.ops.pop_front();
                (1, self.value(tag, v))
            }
        }
    }

    /// A number read: what follows from it.
    fn value(&mut self, tag: Tag, v: u64) -> Next {
        match tag {
            Tag::Ignore => {}
            Tag::Len(secret) => {
                if v > 0 {
                    self.ops.push_front(Op::Data { n: v, secret });
                }
            }
            Tag::Level => {
                self.level = v as u8 & 0x7f;
                if !matches!(self.level, 3..=5) {
                    return Next::Withhold(format!(
                        "protocol level {v} of a CONNECT is not known (where its fields \
                         are cannot be told)"
                    ));
                }
            }
            Tag::ConnectFlags => {
                let v5 = self.level == 5;
                let flags = v as u8;
                self.ops.push_back(Op::Two(Tag::Ignore)); // keep-alive
                if v5 {
                    self.ops.push_back(Op::Var(Tag::PropsLen));
                }
                self.ops.push_back(Op::Two(Tag::Len(false))); // client id
                if flags & 0x04 != 0 {
                    if v5 {
                        self.ops.push_back(Op::Var(Tag::PropsLen));
                    }
                    self.ops.push_back(Op::Two(Tag::Len(false))); // will topic
                    self.ops.push_back(Op::Two(Tag::Len(false))); // will payload
                }
                if flags & 0x80 != 0 {
                    self.ops.push_back(Op::Two(Tag::Len(true))); // user name
                }
                if flags & 0x40 != 0 {
                    self.ops.push_back(Op::Two(Tag::Len(true))); // password
                }
            }
            Tag::AuthReason => {
                if self.left > 0 {
                    self.ops.push_back(Op::Var(Tag::PropsLen));
                }
            }
            Tag::PropsLen => {
                if v > self.left {
                    return Next::Withhold(format!(
                        "the property list of a {} runs past the packet's end",
                        self.what
                    ));
                }
                self.ops.push_front(Op::PropsUntil(self.left - v));
            }
            Tag::PropId => {
                let value: &[Op] = match v as u8 {
                    0x01 | 0x17 | 0x19 => &[Op::Data {
                        n: 1,
                        secret: false,
                    }],
                    0x21 | 0x22 => &[Op::Data {
                        n: 2,
                        secret: false,
                    }],
                    0x02 | 0x11 | 0x18 | 0x27 => &[Op::Data {
                        n: 4,
                        secret: false,
                    }],
                    0x0B => &[Op::Var(Tag::Ignore)],
                    AUTH_DATA => &[Op::Two(Tag::Len(true))],
                    0x03 | 0x08 | 0x09 | 0x12 | 0x15 | 0x1A | 0x1C | 0x1F => {
                        &[Op::Two(Tag::Len(false))]
                    }
                    0x26 => &[Op::Two(Tag::Len(false)), Op::Two(Tag::Len(false))],
                    _ => {
                        return Next::Withhold(format!(
                            "unknown MQTT 5 property 0x{v:02x} in a {} (how long its value \
                             is cannot be told)",
                            self.what
                        ))
                    }
                };
                for op in value.iter().rev() {
                    self.ops.push_front(*op);
                }
            }
        }
        Next::Go
    }
}

/// What the first bytes of a client stream are.
enum Class {
    NeedMore,
    ProxyV1,
    /// A PROXY v2 header of this many bytes, of which 16 are seen.
    ProxyV2(u64),
    Connect,
    Other,
}

fn classify(b: &[u8]) -> Class {
    let proxy_v1 = b"PROXY ";
    let n = b.len();
    if n <= proxy_v1.len() && proxy_v1.starts_with(b) || n < 16 && prefix_of(b, PROXY_V2) {
        return Class::NeedMore;
    }
    if b.starts_with(proxy_v1) {
        return Class::ProxyV1;
    }
    if n == 16 && b.starts_with(PROXY_V2) {
        return Class::ProxyV2(u64::from(u16::from_be_bytes([b[14], b[15]])));
    }
    match connect_at(b, 0) {
        Some(true) => Class::Connect,
        Some(false) => Class::Other,
        None if n < START => Class::NeedMore,
        None => Class::Other,
    }
}

/// Whether `b` is `whole` or a beginning of it, or starts with it.
fn prefix_of(b: &[u8], whole: &[u8]) -> bool {
    let k = b.len().min(whole.len());
    b[..k] == whole[..k]
}

/// The protocol names of MQTT 3.1.1 and 5, and of 3.1, with their length.
const NAMES: [&[u8]; 2] = [b"\x00\x04MQTT", b"\x00\x06MQIsdp"];

/// Whether a CONNECT starts at `b[at]`: its type byte, a remaining length, a
/// protocol name. None: the bytes so far fit, more are needed.
fn connect_at(b: &[u8], at: usize) -> Option<bool> {
    let b = &b[at..];
    match b.first() {
        None => return None,
        Some(&0x10) => {}
        Some(_) => return Some(false),
    }
    let mut i = 1;
    loop {
        let &x = b.get(i)?;
        i += 1;
        if x & 0x80 == 0 {
            break;
        }
        if i == 5 {
            return Some(false);
        }
    }
    let rest = &b[i..];
    let mut need_more = false;
    for name in NAMES {
        if rest.len() >= name.len() {
            if rest.starts_with(name) {
                return Some(true);
            }
        } else if name.starts_with(rest) {
            need_more = true;
        }
    }
    if need_more {
        None
    } else {
        Some(false)
    }
}

/// Where the first whole CONNECT beginning in `b` starts.
fn find_connect(b: &[u8]) -> Option<usize> {
    (0..b.len()).find(|&s| connect_at(b, s) == Some(true))
}

#[cfg(test)]
#[path = "scrub_tests.rs"]
mod tests;
