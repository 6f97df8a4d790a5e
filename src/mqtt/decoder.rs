//! `StreamDecoder`: frames and decodes the MQTT control packets of one direction of
//! one connection, from byte chunks of any size.
//!
//! Guarantees:
//! - it never panics and never buffers more than one maximum-size packet plus one
//!   chunk: the announced remaining length is checked against the limit before a
//!   single byte of the body is buffered;
//! - "need more bytes" is not "malformed": an incomplete packet waits for the next
//!   chunk;
//! - a malformed packet becomes a [`Decoded::Malformed`] naming its stream offset and
//!   the codec's complaint, and decoding carries on with the next packet (the frame
//!   length is known once the fixed header parsed); an oversized packet is skipped
//!   whole ([`Decoded::Oversized`]), as Suricata does;
//! - after a gap in the stream (capture loss, mid-stream start, an unparseable fixed
//!   header) it resynchronises on the next offset where a plausible packet starts
//!   and another plausible packet (or the end of the buffer) follows.
//!
//! The codec is the copy of mqttbytes maintained inside rumqttc
//! (`rumqttc::mqttbytes::v4`, `rumqttc::v5::mqttbytes::v5`), not the mqttbytes 0.6.0
//! crate: 0.6.0 leaves a `dbg!` in its v5 UNSUBSCRIBE decoder that writes to stderr
//! for every such packet, even in release builds, and is no longer maintained, while
//! rumqttc is needed anyway for the simulated clients. Neither copy parses an
//! MQTT 3.1 CONNECT ("MQIsdp", level 3): `connect::rewrite_v31_connect` turns it into the
//! equivalent 3.1.1 CONNECT before decoding, and the connection is then decoded as
//! 3.1.1, whose other packets are the same on the wire.

use bytes::BytesMut;
use rumqttc::mqttbytes::{self as v4codec, v4};
use rumqttc::v5::mqttbytes::v5;

use super::packet::{Packet, Version};

/// MQTT's own limit: a remaining length of at most 268,435,455 bytes.
pub const MQTT_MAX_REMAINING: usize = 268_435_455;

/// One result of decoding.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    Packet {
        /// Stream offset of the packet's first byte.
        offset: u64,
        /// Whole frame length (fixed header included).
        len: usize,
        packet: Packet,
    },
    Malformed {
        offset: u64,
        len: usize,
        /// The first byte of the fixed header (type and flags).
        header: u8,
        error: String,
    },
    Oversized {
        offset: u64,
        announced: usize,
        limit: usize,
        /// The first byte of the fixed header (type and flags).
        header: u8,
        /// A PUBLISH's topic, when the bytes read so far hold it: the packet is
        /// not judged, but who it concerns is known.
        topic: Option<String>,
    },
    /// Bytes skipped while looking for the next packet boundary.
    Skipped { offset: u64, len: u64 },
}

/// The topic at the start of a PUBLISH's variable header `b`, if `b` holds it whole.
fn publish_topic(b: &[u8]) -> Option<String> {
    let n = usize::from(u16::from_be_bytes([*b.first()?, *b.get(1)?]));
    let t = b.get(2..2 + n)?;
    std::str::from_utf8(t).ok().map(str::to_string)
}

#[derive(Debug)]
pub struct StreamDecoder {
    buf: BytesMut,
    /// Stream offset of `buf[0]`.
    offset: u64,
    max_packet: usize,
    /// Bytes of an oversized packet still to discard.
    skip: u64,
    /// True after a gap: the buffer may not start at a packet boundary.
    resync: bool,
    /// The boundary a resync chose is a guess (payload bytes can look like packet
    /// headers) until a packet decodes there: a packet that does not decode while
    /// the guess stands is skipped, and the search goes on from the next byte, so
    /// that a capture joined late or cut by a gap never blames the sender for its
    /// own payload read as headers.
    tentative: bool,
}

impl StreamDecoder {
    pub fn new(max_packet: usize) -> Self {
        StreamDecoder {
            buf: BytesMut::new(),
            offset: 0,
            max_packet: max_packet.min(MQTT_MAX_REMAINING),
            skip: 0,
            resync: false,
            tentative: false,
        }
    }

    /// A decoder for a stream whose first byte may fall inside a packet.
    pub fn mid_stream(max_packet: usize) -> Self {
        let mut d = Self::new(max_packet);
        d.resync = true;
        d.tentative = true;
        d
    }

    /// Stream offset of the next byte to be fed.
    pub fn stream_offset(&self) -> u64 {
        self.offset + self.buf.len() as u64
    }

    /// Bytes buffered, waiting for the rest of a packet.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The first bytes of a packet still incomplete, with the stream offset of its
    /// first byte; `None` when nothing is buffered or the buffer is not known to
    /// start at a packet boundary.
    pub fn pending(&self) -> Option<(u64, &[u8])> {
        (!self.buf.is_empty() && !self.resync).then(|| (self.offset, &self.buf[..]))
    }

    /// Adds bytes to the stream.
    pub fn feed(&mut self, mut data: &[u8]) {
        if self.skip > 0 {
            let n = (self.skip as usize).min(data.len());
            self.skip -= n as u64;
            self.offset += n as u64;
            data = &data[n..];
        }
        self.buf.extend_from_slice(data);
    }

    /// `lost` bytes of the stream never arrived: drop the partial packet and look
    /// for the next boundary. Returns how many buffered bytes were dropped.
    pub fn gap(&mut self, lost: u64) -> usize {
        let dropped = self.buf.len();
        self.offset += dropped as u64 + lost;
        self.skip = self.skip.saturating_sub(lost);
        self.buf.clear();
        self.resync = self.skip == 0;
        self.tentative = self.resync;
        dropped
    }

    /// Takes the next complete result, or `None` when more bytes are needed.
    pub fn next(&mut self, version: Option<Version>) -> Option<Decoded> {
        if self.resync {
            match find_boundary(&self.buf, self.max_packet) {
                Boundary::At(0) => self.resync = false,
                Boundary::At(n) => {
                    let off = self.offset;
                    self.advance(n);
                    self.resync = false;
                    return Some(Decoded::Skipped {
                        offset: off,
                        len: n as u64,
                    });
                }
                Boundary::NeedMore => {
                    // Do not let an unsynchronised stream grow the buffer forever.
                    if self.buf.len() > self.max_packet.min(RESYNC_MAX_FRAME) + 8 {
                        let off = self.offset;
                        let n = self.buf.len();
                        self.advance(n);
                        return Some(Decoded::Skipped {
                            offset: off,
                            len: n as u64,
                        });
                    }
                    return None;
                }
            }
        }
        if self.buf.len() < 2 {
            return None;
        }
        let header = self.buf[0];
        let offset = self.offset;
        let fixed = match v4codec::check(self.buf.iter(), self.max_packet) {
            Ok(f) => f,
            Err(v4codec::Error::InsufficientBytes(_)) => return None,
            Err(v4codec::Error::PayloadSizeLimitExceeded(_)) if self.tentative => {
                return Some(self.guess_failed());
            }
            Err(v4codec::Error::PayloadSizeLimitExceeded(announced)) => {
                let (hlen, _) = remaining_length(&self.buf).unwrap_or((1, announced));
                let topic = match header >> 4 {
                    3 => publish_topic(self.buf.get(hlen..).unwrap_or_default()),
                    _ => None,
                };
                let total = hlen + announced;
                let now = total.min(self.buf.len());
                self.advance(now);
                self.skip = (total - now) as u64;
                return Some(Decoded::Oversized {
                    offset,
                    announced,
                    limit: self.max_packet,
                    header,
                    topic,
                });
            }
            Err(_) if self.tentative => return Some(self.guess_failed()),
            Err(e) => {
                // The fixed header itself is broken: the frame length is unknown.
                self.advance(1);
                self.resync = true;
                self.tentative = true;
                return Some(Decoded::Malformed {
                    offset,
                    len: 1,
                    header,
                    error: e.to_string(),
                });
            }
        };
        let len = fixed.frame_length();
        if self.tentative {
            // Decoded from a copy: when it fails, the search resumes one byte on.
            return Some(
                match decode_frame(BytesMut::from(&self.buf[..len]), version) {
                    Ok(packet) => {
                        self.tentative = false;
                        self.advance(len);
                        Decoded::Packet {
                            offset,
                            len,
                            packet,
                        }
                    }
                    Err(_) => self.guess_failed(),
                },
            );
        }
        let frame = self.buf.split_to(len);
        self.offset += len as u64;
        Some(match decode_frame(frame, version) {
            Ok(packet) => Decoded::Packet {
                offset,
                len,
                packet,
            },
            Err(error) => Decoded::Malformed {
                offset,
                len,
                header,
                error,
            },
        })
    }

    /// The packet at a guessed boundary does not decode: not the sender's error but
    /// a wrong guess. Skips one byte and looks for the next boundary.
    fn guess_failed(&mut self) -> Decoded {
        let offset = self.offset;
        self.advance(1);
        self.resync = true;
        Decoded::Skipped { offset, len: 1 }
    }

    fn advance(&mut self, n: usize) {
        let _ = self.buf.split_to(n);
        self.offset += n as u64;
    }
}

/// Decodes one complete frame. `version` is the connection's version when known;
/// before CONNECT (a capture that starts mid-stream) 3.1.1 is tried, then 5.
pub fn decode_frame(frame: BytesMut, version: Option<Version>) -> Result<Packet, String> {
    let kind = frame[0] >> 4;
    if kind == 1 {
        return decode_connect(frame);
    }
    match version {
        Some(Version::V5) => decode_v5(frame),
        Some(_) => decode_v4(frame),
        None => {
            let copy = frame.clone();
            decode_v4(frame).or_else(|e4| decode_v5(copy).map_err(|_| e4))
        }
    }
}

fn decode_connect(frame: BytesMut) -> Result<Packet, String> {
    let (hlen, _) = remaining_length(&frame).ok_or("bad remaining length")?;
    let first = decode_connect_as_sent(frame.clone());
    let Err(e) = first else { return first };
    // A password that is not UTF-8 is still conforming (Binary Data); the codec
    // reads it as a string, so it decodes a copy with the password stood in for.
    let Some(r) = super::connect::password_range(&frame, hlen) else {
        return Err(e);
    };
    if std::str::from_utf8(&frame[r.clone()]).is_ok() {
        return Err(e);
    }
    let shown = String::from_utf8_lossy(&frame[r.clone()]).into_owned();
    let mut copy = frame;
    copy[r].fill(b'*');
    match decode_connect_as_sent(copy) {
        Ok(Packet::Connect(mut c)) => {
            c.password = Some(shown);
            Ok(Packet::Connect(c))
        }
        _ => Err(e),
    }
}

fn decode_connect_as_sent(frame: BytesMut) -> Result<Packet, String> {
    // Protocol level sits after the protocol name, which sits after the fixed header.
    let (hlen, _) = remaining_length(&frame).ok_or("bad remaining length")?;
    let name = frame.get(hlen + 2..hlen + 8);
    if name == Some(b"MQIsdp") {
        let rewritten = super::connect::rewrite_v31_connect(&frame, hlen)?;
        return decode_v4(rewritten).map(|p| match p {
            Packet::Connect(mut c) => {
                c.version = Version::V31;
                Packet::Connect(c)
            }
            other => other,
        });
    }
    match frame.get(hlen + 6) {
        Some(5) => decode_v5(frame),
        Some(4) => decode_v4(frame),
        Some(level) => Err(format!("unsupported protocol level {level}")),
        None => Err("CONNECT too short for a protocol level".into()),
    }
}

fn decode_v4(mut frame: BytesMut) -> Result<Packet, String> {
    let kind = frame[0] >> 4;
    let len = frame.len();
    let p = v4::read(&mut frame, len).map_err(|e| e.to_string())?;
    Ok(Packet::from_v4(p, kind))
}

fn decode_v5(mut frame: BytesMut) -> Result<Packet, String> {
    let kind = frame[0] >> 4;
    if kind == 15 {
        // AUTH exists only in MQTT 5 and the codec has no type for it.
        return Ok(Packet::Auth);
    }
    if kind == 14 && frame.len() <= 3 {
        // A v5 DISCONNECT may omit its reason code (0 implied), and with a remaining
        // length under 2 its property length (MQTT 5.0, 3.14.2.1 and 3.14.2.2.1); the
        // codec insists on both.
        return Ok(Packet::Disconnect);
    }
    let len = frame.len();
    let p = v5::Packet::read(&mut frame, Some(len)).map_err(|e| e.to_string())?;
    Ok(Packet::from_v5(p))
}

/// Parses the remaining length: (fixed header length, remaining length).
pub fn remaining_length(buf: &[u8]) -> Option<(usize, usize)> {
    let mut value = 0usize;
    for i in 0..4 {
        let b = *buf.get(1 + i)?;
        value |= ((b & 0x7f) as usize) << (7 * i);
        if b & 0x80 == 0 {
            return Some((2 + i, value));
        }
    }
    None
}

enum Boundary {
    At(usize),
    NeedMore,
}

/// Is `b` a first byte that a valid MQTT packet may start with?
fn plausible_header(b: u8) -> bool {
    let flags = b & 0x0f;
    match b >> 4 {
        3 => (flags >> 1) & 0b11 != 0b11,
        6 | 8 | 10 => flags == 0b0010,
        1 | 2 | 4 | 5 | 7 | 9 | 11 | 12 | 13 | 14 | 15 => flags == 0,
        _ => false,
    }
}

/// Resynchronisation never waits for a candidate packet longer than this.
const RESYNC_MAX_FRAME: usize = 16 << 20;

enum Chain {
    /// Consecutive plausible frames reach exactly the end of the buffer.
    Complete(usize),
    /// Plausible frames, the last one not complete yet.
    Incomplete(usize),
    Invalid,
}

/// Walks plausible frames from `pos` to the end of the buffer.
fn chain(buf: &[u8], mut pos: usize, max: usize) -> Chain {
    let mut frames = 0;
    loop {
        if pos == buf.len() {
            return Chain::Complete(frames);
        }
        let b = buf[pos];
        if !plausible_header(b) {
            return Chain::Invalid;
        }
        let Some((hlen, rem)) = remaining_length(&buf[pos..]) else {
            return if buf.len() - pos < 5 {
                Chain::Incomplete(frames)
            } else {
                Chain::Invalid
            };
        };
        if rem > max || !plausible_body(b, rem, &buf[pos + hlen..]) {
            return Chain::Invalid;
        }
        let end = pos + hlen + rem;
        if end > buf.len() {
            return Chain::Incomplete(frames);
        }
        frames += 1;
        pos = end;
    }
}

/// Is a body of `rem` bytes (of which `avail` arrived) plausible for header `b`?
fn plausible_body(b: u8, rem: usize, avail: &[u8]) -> bool {
    match b >> 4 {
        1 => rem >= 10,
        2 | 4 | 5 | 6 | 7 | 11 => rem >= 2,
        8 => rem >= 5,
        9 => rem >= 3,
        10 => rem >= 4,
        12 | 13 => rem == 0,
        3 => {
            // topic length, then a UTF-8 topic without wildcards or NUL.
            let qos_extra = if b & 0b0110 != 0 { 2 } else { 0 };
            let Some(len) = avail
                .get(..2)
                .map(|x| u16::from_be_bytes([x[0], x[1]]) as usize)
            else {
                return rem >= 2;
            };
            if 2 + len + qos_extra > rem || len == 0 {
                return false;
            }
            let topic = &avail[2..avail.len().min(2 + len)];
            if topic.iter().any(|&c| c == 0 || c == b'#' || c == b'+') {
                return false;
            }
            match std::str::from_utf8(topic) {
                Ok(_) => true,
                Err(e) => e.error_len().is_none(),
            }
        }
        _ => true,
    }
}

/// Finds the first offset from which plausible packets chain to the end of the
/// buffer. A candidate whose first packet is still incomplete makes it wait.
fn find_boundary(buf: &[u8], max: usize) -> Boundary {
    let max = max.min(RESYNC_MAX_FRAME);
    for start in 0..buf.len() {
        match chain(buf, start, max) {
            Chain::Complete(n) | Chain::Incomplete(n) if n >= 1 => return Boundary::At(start),
            Chain::Incomplete(_) => return Boundary::NeedMore,
            _ => {}
        }
    }
    if buf.is_empty() {
        Boundary::NeedMore
    } else {
        Boundary::At(buf.len())
    }
}

/// Splits `data` as if it arrived in the given chunk sizes: test helper.
#[cfg(test)]
#[path = "decoder_tests.rs"]
mod tests;
