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
//! MQTT 3.1 CONNECT ("MQIsdp", level 3): [`rewrite_v31_connect`] turns it into the
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
    // Protocol level sits after the protocol name, which sits after the fixed header.
    let (hlen, _) = remaining_length(&frame).ok_or("bad remaining length")?;
    let name = frame.get(hlen + 2..hlen + 8);
    if name == Some(b"MQIsdp") {
        let rewritten = rewrite_v31_connect(&frame, hlen)?;
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

/// Turns an MQTT 3.1 CONNECT (protocol name "MQIsdp", level 3) into the equivalent
/// 3.1.1 CONNECT (name "MQTT", level 4): the rest of the packet is identical.
pub fn rewrite_v31_connect(frame: &[u8], hlen: usize) -> Result<BytesMut, String> {
    // fixed header | 0x00 0x06 "MQIsdp" | level 3 | flags | keep alive | payload
    let body = frame.get(hlen + 9..).ok_or("MQTT 3.1 CONNECT truncated")?;
    let remaining = 2 + 4 + 1 + body.len();
    let mut out = BytesMut::with_capacity(remaining + 5);
    out.extend_from_slice(&[0x10]);
    let mut x = remaining;
    loop {
        let mut b = (x % 128) as u8;
        x /= 128;
        if x > 0 {
            b |= 0x80;
        }
        out.extend_from_slice(&[b]);
        if x == 0 {
            break;
        }
    }
    out.extend_from_slice(b"\x00\x04MQTT\x04");
    out.extend_from_slice(body);
    Ok(out)
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
fn decode_chunks(data: &[u8], chunk: usize) -> Vec<Decoded> {
    let mut d = StreamDecoder::new(MQTT_MAX_REMAINING);
    let mut out = vec![];
    let mut version = None;
    for c in data.chunks(chunk) {
        d.feed(c);
        while let Some(x) = d.next(version) {
            if let Decoded::Packet {
                packet: Packet::Connect(c),
                ..
            } = &x
            {
                version = Some(c.version);
            }
            out.push(x);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mqtt::packet::Connect;

    /// MQTT 3.1 CONNECT from mosquitto_pub -V mqttv31.
    const CONNECT_V31: &[u8] = &[
        0x10, 0x16, // CONNECT, remaining length 22
        0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', // protocol name "MQIsdp"
        0x03, // protocol level 3
        0x02, // flags: clean session
        0x00, 0x3c, // keep alive 60
        0x00, 0x08, b'e', b'd', b'g', b'e', b'-', b'0', b'0', b'1', // client id
    ];

    /// PUBLISH QoS 0 to "a/b" with payload "hi".
    const PUBLISH_QOS0: &[u8] = &[
        0x30, 0x07, // PUBLISH, remaining length 7
        0x00, 0x03, b'a', b'/', b'b', // topic "a/b"
        b'h', b'i', // payload
    ];

    #[test]
    fn mqtt31_connect_is_decoded_and_the_connection_continues() {
        let mut data = CONNECT_V31.to_vec();
        data.extend_from_slice(PUBLISH_QOS0);
        let out = decode_chunks(&data, 1000);
        assert_eq!(out.len(), 2, "{out:?}");
        match &out[0] {
            Decoded::Packet {
                packet:
                    Packet::Connect(Connect {
                        version, client_id, ..
                    }),
                ..
            } => {
                assert_eq!(*version, Version::V31);
                assert_eq!(client_id, "edge-001");
            }
            other => panic!("{other:?}"),
        }
        match &out[1] {
            Decoded::Packet {
                offset,
                packet: Packet::Publish(p),
                ..
            } => {
                assert_eq!(*offset, CONNECT_V31.len() as u64);
                assert_eq!(p.topic, "a/b");
                assert_eq!(&p.payload[..], b"hi");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn byte_by_byte_equals_one_chunk() {
        let mut data = CONNECT_V31.to_vec();
        for _ in 0..5 {
            data.extend_from_slice(PUBLISH_QOS0);
        }
        assert_eq!(decode_chunks(&data, 1), decode_chunks(&data, data.len()));
        assert_eq!(decode_chunks(&data, 3).len(), 6);
    }

    #[test]
    fn qos3_publish_is_malformed_and_decoding_continues() {
        let mut data = vec![0x36, 0x07, 0x00, 0x03, b'a', b'/', b'b', b'h', b'i'];
        data.extend_from_slice(PUBLISH_QOS0);
        let out = decode_chunks(&data, 4);
        assert!(
            matches!(
                out[0],
                Decoded::Malformed {
                    offset: 0,
                    len: 9,
                    ..
                }
            ),
            "{out:?}"
        );
        assert!(matches!(out[1], Decoded::Packet { offset: 9, .. }));
    }

    #[test]
    fn oversized_packet_is_skipped_before_buffering() {
        let mut d = StreamDecoder::new(100);
        // PUBLISH announcing 200 bytes (0xc8 0x01), then the body in pieces.
        d.feed(&[0x30, 0xc8, 0x01]);
        assert!(matches!(
            d.next(None),
            Some(Decoded::Oversized {
                announced: 200,
                limit: 100,
                ..
            })
        ));
        d.feed(&[0u8; 150]);
        d.feed(&[0u8; 50]);
        assert_eq!(d.buffered(), 0);
        d.feed(PUBLISH_QOS0);
        assert!(matches!(
            d.next(None),
            Some(Decoded::Packet { offset: 203, .. })
        ));
    }

    #[test]
    fn an_oversized_publish_names_its_topic_when_the_bytes_read_hold_it() {
        let mut d = StreamDecoder::new(100);
        let mut big = vec![0x30, 0xc8, 0x01, 0, 5];
        big.extend_from_slice(b"/v1/E");
        big.extend_from_slice(&[b'x'; 20]);
        d.feed(&big);
        match d.next(None) {
            Some(Decoded::Oversized { topic, header, .. }) => {
                assert_eq!(topic.as_deref(), Some("/v1/E"));
                assert_eq!(header >> 4, 3);
            }
            other => panic!("{other:?}"),
        }
        // The header alone: no topic.
        let mut d = StreamDecoder::new(100);
        d.feed(&[0x30, 0xc8, 0x01, 0]);
        assert!(matches!(
            d.next(None),
            Some(Decoded::Oversized { topic: None, .. })
        ));
    }

    #[test]
    fn resync_after_gap_finds_next_packet() {
        let mut d = StreamDecoder::new(MQTT_MAX_REMAINING);
        d.feed(&PUBLISH_QOS0[..4]);
        assert_eq!(d.next(None), None);
        d.gap(10);
        // The tail of some packet, then two good packets.
        d.feed(&[b'x', b'y', b'z']);
        d.feed(PUBLISH_QOS0);
        d.feed(PUBLISH_QOS0);
        let first = d.next(None);
        assert!(
            matches!(first, Some(Decoded::Skipped { offset: 14, len: 3 })),
            "{first:?}"
        );
        assert!(matches!(
            d.next(None),
            Some(Decoded::Packet { offset: 17, .. })
        ));
        assert!(matches!(
            d.next(None),
            Some(Decoded::Packet { offset: 26, .. })
        ));
    }

    #[test]
    fn packet_type_zero_is_malformed_not_a_panic() {
        let mut data = vec![0x00, 0x02, 0x00, 0x01];
        data.extend_from_slice(PUBLISH_QOS0);
        let out = decode_chunks(&data, 2);
        assert!(
            matches!(out[0], Decoded::Malformed { len: 4, .. }),
            "{out:?}"
        );
        assert!(matches!(out[1], Decoded::Packet { .. }));
    }

    #[test]
    fn v5_disconnect_without_reason_code() {
        // DISCONNECT, remaining length 0: reason code 0 implied (MQTT 5, 3.14.2.1).
        let out = decode_frame(BytesMut::from(&[0xe0, 0x00][..]), Some(Version::V5));
        assert_eq!(out, Ok(Packet::Disconnect));
        // mosquitto_sub -V mqttv5 on SIGINT: reason code 0x04, no property length.
        let out = decode_frame(BytesMut::from(&[0xe0, 0x01, 0x04][..]), Some(Version::V5));
        assert_eq!(out, Ok(Packet::Disconnect));
    }

    #[test]
    fn a_remaining_length_claiming_megabytes_holds_only_the_bytes_fed() {
        // A PUBLISH announcing 200 MiB (under the limit), followed by 100 bytes: the
        // decoder waits for the rest holding what it got, never the announced size.
        let mut d = StreamDecoder::new(MQTT_MAX_REMAINING);
        let mut data = vec![0x30, 0x80, 0x80, 0x80, 0x64];
        data.extend_from_slice(&[b'x'; 100]);
        d.feed(&data);
        assert!(d.next(None).is_none());
        assert_eq!(d.buffered(), data.len());
        assert!(d.buf.capacity() < 64 << 10, "{} bytes", d.buf.capacity());
    }

    /// A PUBLISH QoS 1 of `payload` on a protocol topic.
    fn publish_json(pkid: u16, payload: &[u8]) -> Vec<u8> {
        let topic = b"/v1/E1/device/data";
        let rem = 2 + topic.len() + 2 + payload.len();
        let mut out = vec![0x32];
        let mut n = rem;
        loop {
            let b = (n % 128) as u8;
            n /= 128;
            out.push(if n > 0 { b | 0x80 } else { b });
            if n == 0 {
                break;
            }
        }
        out.extend_from_slice(&(topic.len() as u16).to_be_bytes());
        out.extend_from_slice(topic);
        out.extend_from_slice(&pkid.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn a_stream_joined_inside_a_payload_is_never_called_malformed() {
        // JSON whose text holds bytes that read as packet headers (' ' is a CONNACK,
        // '{' a remaining length of 123, '"' and 'n' invalid return codes): a capture
        // that starts inside it, or resumes there after a gap, must skip to the next
        // real packet, not blame the sender for payload read as headers.
        let json = br#"{"type":"REP_SYS_STATUS","mid":1,"timestamp":"2026-11-26 10:00:00", "param": {"cpuRate": 12.5, "linkState": [{"name": "eth0", "status": "up"}, {"name": "eth1", "status": "down"}], "note": "n n n { { {"}}"#;
        let mut stream = vec![];
        for pkid in 1..=8 {
            stream.extend(publish_json(pkid, json));
        }
        let first = publish_json(1, json).len();
        for cut in 1..first {
            let mut d = StreamDecoder::mid_stream(MQTT_MAX_REMAINING);
            d.feed(&stream[cut..]);
            let mut publishes = vec![];
            while let Some(x) = d.next(None) {
                match x {
                    Decoded::Malformed { .. } | Decoded::Oversized { .. } => {
                        panic!("cut at {cut}: {x:?}")
                    }
                    Decoded::Packet {
                        offset,
                        packet: Packet::Publish(p),
                        ..
                    } if p.topic == "/v1/E1/device/data" => publishes.push(offset),
                    _ => {}
                }
            }
            // Every packet after the cut's is read at its real place.
            let want: Vec<u64> = (1..8u64).map(|k| k * first as u64 - cut as u64).collect();
            assert!(
                want.iter().all(|o| publishes.contains(o)),
                "cut at {cut}: publishes at {publishes:?}, want {want:?}"
            );
        }
    }

    #[test]
    fn a_guessed_boundary_that_does_not_decode_is_skipped_not_malformed() {
        // ` {"n`: a CONNACK of 123 bytes (return code 'n' = 110, invalid) that chains
        // to a real PUBLISH right after it: the resync's first guess. (Old behaviour:
        // "malformed CONNACK … Invalid Connect return code: 110", an error finding.)
        let mut data = br#" {"n"#.to_vec();
        data.extend_from_slice(&[0u8; 121]);
        data.extend_from_slice(PUBLISH_QOS0);
        data.extend_from_slice(PUBLISH_QOS0);
        let mut d = StreamDecoder::mid_stream(MQTT_MAX_REMAINING);
        d.feed(&data);
        let mut out = vec![];
        while let Some(x) = d.next(None) {
            out.push(x);
        }
        assert!(
            !out.iter().any(|x| matches!(x, Decoded::Malformed { .. })),
            "{out:?}"
        );
        for at in [125, 134] {
            assert!(
                out.iter()
                    .any(|x| matches!(x, Decoded::Packet { offset, .. } if *offset == at)),
                "no packet at {at}: {out:?}"
            );
        }
        // Once a packet decoded, the stream is in step again: a broken packet after
        // it is the sender's.
        d.feed(&[0x20, 0x02, 0x00, 0x09]);
        assert!(matches!(d.next(None), Some(Decoded::Malformed { .. })));
    }

    #[test]
    fn bad_remaining_length_resyncs() {
        // five continuation bytes: no valid remaining length.
        let mut data = vec![0x30, 0xff, 0xff, 0xff, 0xff, 0xff];
        data.extend_from_slice(PUBLISH_QOS0);
        let out = decode_chunks(&data, data.len());
        assert!(matches!(out[0], Decoded::Malformed { offset: 0, .. }));
        assert!(out
            .iter()
            .any(|d| matches!(d, Decoded::Packet { offset: 6, .. })));
    }
}
