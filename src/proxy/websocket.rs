//! MQTT over WebSocket (RFC 6455, MQTT 3.1.1 §6): a sans-IO de-framer that turns one
//! direction of a WebSocket connection back into the MQTT byte stream it carries.
//!
//! The proxy forwards the WebSocket bytes untouched; only its analysis copy goes
//! through a [`Deframer`], one per direction. Guarantees:
//! - Output depends only on the bytes fed, never on how they were split into calls.
//! - The HTTP upgrade (request or response, up to the blank line) is skipped; a
//!   response other than `101` means no WebSocket follows, and is an error.
//! - Binary and continuation frame payloads are output in order, unmasked when the
//!   frame is masked (client → server frames are). Ping, pong and close carry no
//!   MQTT and are dropped; after a close frame nothing more is output.
//! - A text frame (MQTT-6.0.0-1 requires binary), a reserved opcode, or RSV bits (an
//!   extension such as permessage-deflate, whose payload is not MQTT as sent) is an
//!   error: the de-framer then outputs nothing more for that direction.
//!
//! Why not tungstenite: the crate's sans-IO part (`FrameHeader::parse`, in the 0.20
//! that rumqttd already pulls in) parses a header but leaves payload accumulation,
//! unmasking across splits and the HTTP preamble to the caller, and its
//! `FrameSocket`/`WebSocket` own a blocking stream. The frame header is a few dozen
//! lines; the tests below check it field by field, and tests/proxy_ws_tls.rs checks
//! it against tungstenite's client and rumqttd's server.
//!
//! ```text
//!  0               1               2               3
//!  0 1 2 3 4 5 6 7 0 1 2 3 4 5 6 7 0 1 2 3 4 5 6 7 0 1 2 3 4 5 6 7
//! +-+-+-+-+-------+-+-------------+-------------------------------+
//! |F|R|R|R| opcode|M| Payload len |    Extended payload length    |
//! |I|S|S|S|  (4)  |A|     (7)     |             (16/64)           |
//! |N|V|V|V|       |S|             |   (if payload len==126/127)   |
//! | |1|2|3|       |K|             |                               |
//! +-+-+-+-+-------+-+-------------+ - - - - - - - - - - - - - - - +
//! |     Extended payload length continued, if payload len == 127  |
//! + - - - - - - - - - - - - - - - +-------------------------------+
//! |                               |Masking-key, if MASK set to 1  |
//! +-------------------------------+-------------------------------+
//! | Masking-key (continued)       |          Payload Data         |
//! +-------------------------------- - - - - - - - - - - - - - - -+
//! ```

use crate::finding::Side;

/// Longest HTTP upgrade request or response accepted before the frames start.
pub const MAX_UPGRADE_HEADERS: usize = 16 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WsError {
    #[error("no end of the HTTP upgrade headers within {limit} bytes")]
    HeadersTooLong { limit: usize },
    #[error("not a WebSocket upgrade request: {line:?}")]
    NotUpgradeRequest { line: String },
    #[error("not an HTTP response: {line:?}")]
    NotUpgradeResponse { line: String },
    #[error("the upgrade was refused: {line:?}")]
    UpgradeRefused { line: String },
    #[error("text frame at stream offset {offset} (MQTT over WebSocket uses binary frames)")]
    TextFrame { offset: u64 },
    #[error("frame with RSV bits {rsv:#x} at stream offset {offset}: a WebSocket extension (compression?) is in use")]
    Extension { rsv: u8, offset: u64 },
    #[error("reserved opcode {opcode:#x} at stream offset {offset}")]
    ReservedOpcode { opcode: u8, offset: u64 },
}

enum State {
    /// Inside the HTTP upgrade; `seen` holds its bytes so far.
    Upgrade { seen: Vec<u8> },
    /// Collecting a frame header: `have[..n]`.
    Header { have: [u8; 14], n: usize },
    /// Inside a frame's payload.
    Payload {
        left: u64,
        mask: Option<[u8; 4]>,
        /// Payload bytes already passed (the mask index).
        done: u64,
        /// Binary or continuation: output; control frame: dropped.
        keep: bool,
    },
    /// After a close frame: the rest of the direction is dropped.
    Closed,
    /// After an error: nothing more is output.
    Failed,
}

/// One direction of a WebSocket connection → the MQTT bytes it carries.
pub struct Deframer {
    side: Side,
    state: State,
    /// Stream offset of the next byte fed, for errors.
    offset: u64,
}

impl Deframer {
    /// `side`: `Client` expects the upgrade request, `Server` the response.
    pub fn new(side: Side) -> Deframer {
        Deframer {
            side,
            state: State::Upgrade { seen: Vec::new() },
            offset: 0,
        }
    }

    /// Whether an error stopped this de-framer.
    pub fn failed(&self) -> bool {
        matches!(self.state, State::Failed)
    }

    /// Feeds the next bytes of the direction and appends the MQTT bytes they complete
    /// to `out`. An error is returned once; later calls output nothing.
    pub fn feed(&mut self, mut bytes: &[u8], out: &mut Vec<u8>) -> Result<(), WsError> {
        while !bytes.is_empty() {
            let used = match self.step(bytes, out) {
                Ok(n) => n,
                Err(e) => {
                    self.state = State::Failed;
                    return Err(e);
                }
            };
            self.offset += used as u64;
            bytes = &bytes[used..];
        }
        Ok(())
    }

    /// Consumes a prefix of `bytes` (at least one byte unless the state drops all).
    fn step(&mut self, bytes: &[u8], out: &mut Vec<u8>) -> Result<usize, WsError> {
        match &mut self.state {
            State::Upgrade { seen } => {
                // Search from just before the new bytes: the blank line may straddle.
                let from = seen.len().saturating_sub(3);
                let before = seen.len();
                seen.extend_from_slice(&bytes[..bytes.len().min(MAX_UPGRADE_HEADERS + 4)]);
                // The first bytes already tell a stream that is no upgrade at all
                // (plain MQTT, TLS) from one that is: no waiting for a blank line.
                let start: &[u8] = match self.side {
                    Side::Client => b"GET ",
                    Side::Server => b"HTTP/",
                };
                let n = seen.len().min(start.len());
                if seen[..n] != start[..n] {
                    let line = first_line(seen);
                    return Err(match self.side {
                        Side::Client => WsError::NotUpgradeRequest { line },
                        Side::Server => WsError::NotUpgradeResponse { line },
                    });
                }
                let Some(end) = find_blank_line(&seen[from..]).map(|i| from + i + 4) else {
                    if seen.len() > MAX_UPGRADE_HEADERS {
                        return Err(WsError::HeadersTooLong {
                            limit: MAX_UPGRADE_HEADERS,
                        });
                    }
                    return Ok(seen.len() - before);
                };
                let line = first_line(seen);
                // "HTTP/1.1 101 Switching Protocols"
                if self.side == Side::Server && line.split(' ').nth(1) != Some("101") {
                    return Err(WsError::UpgradeRefused { line });
                }
                self.state = State::Header {
                    have: [0; 14],
                    n: 0,
                };
                Ok(end - before)
            }
            State::Header { have, n } => {
                // Byte 0 and 1 first: they say how long the rest of the header is.
                let need = if *n < 2 { 2 } else { header_len(have[1]) };
                let take = (need - *n).min(bytes.len());
                have[*n..*n + take].copy_from_slice(&bytes[..take]);
                *n += take;
                if *n < need || need == 2 && header_len(have[1]) > 2 {
                    return Ok(take);
                }
                let frame_at = self.offset + take as u64 - *n as u64;
                let (have, n) = (*have, *n);
                self.state = self.frame_start(&have[..n], frame_at)?;
                Ok(take)
            }
            State::Payload {
                left,
                mask,
                done,
                keep,
            } => {
                let take = (*left).min(bytes.len() as u64) as usize;
                if *keep {
                    let start = out.len();
                    out.extend_from_slice(&bytes[..take]);
                    if let Some(m) = mask {
                        // The key index runs on across calls: (done + i) mod 4.
                        for (i, b) in out[start..].iter_mut().enumerate() {
                            *b ^= m[((*done + i as u64) % 4) as usize];
                        }
                    }
                }
                *left -= take as u64;
                *done += take as u64;
                if *left == 0 {
                    self.state = State::Header {
                        have: [0; 14],
                        n: 0,
                    };
                }
                Ok(take)
            }
            State::Closed | State::Failed => Ok(bytes.len()),
        }
    }

    /// The state after the complete header `h` of a frame starting at `at`.
    fn frame_start(&self, h: &[u8], at: u64) -> Result<State, WsError> {
        let rsv = (h[0] >> 4) & 0x07;
        let opcode = h[0] & 0x0f;
        if rsv != 0 {
            return Err(WsError::Extension { rsv, offset: at });
        }
        let masked = h[1] & 0x80 != 0;
        // 7-bit length, or 126 → 16-bit, 127 → 64-bit, both big-endian.
        let (len, rest) = match h[1] & 0x7f {
            126 => (u16::from_be_bytes([h[2], h[3]]) as u64, &h[4..]),
            127 => (
                u64::from_be_bytes(h[2..10].try_into().expect("8 bytes")),
                &h[10..],
            ),
            l => (l as u64, &h[2..]),
        };
        let mask = masked.then(|| [rest[0], rest[1], rest[2], rest[3]]);
        let keep = match opcode {
            0x0 | 0x2 => true,
            0x1 => return Err(WsError::TextFrame { offset: at }),
            // Close: its payload and whatever follows are not part of the conversation.
            0x8 => return Ok(State::Closed),
            0x9 | 0xa => false,
            _ => return Err(WsError::ReservedOpcode { opcode, offset: at }),
        };
        Ok(if len == 0 {
            State::Header {
                have: [0; 14],
                n: 0,
            }
        } else {
            State::Payload {
                left: len,
                mask,
                done: 0,
                keep,
            }
        })
    }
}

/// Header length from the second header byte: 2, plus 2 or 8 for an extended length,
/// plus 4 for a masking key.
fn header_len(b1: u8) -> usize {
    let ext = match b1 & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    2 + ext + if b1 & 0x80 != 0 { 4 } else { 0 }
}

fn find_blank_line(b: &[u8]) -> Option<usize> {
    b.windows(4).position(|w| w == b"\r\n\r\n")
}

fn first_line(b: &[u8]) -> String {
    let end = b
        .windows(2)
        .position(|w| w == b"\r\n")
        .unwrap_or(b.len())
        .min(200);
    String::from_utf8_lossy(&b[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQUEST: &[u8] = b"GET /mqtt HTTP/1.1\r\nHost: b\r\nUpgrade: websocket\r\n\
        Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Sec-WebSocket-Protocol: mqtt\r\nSec-WebSocket-Version: 13\r\n\r\n";
    const RESPONSE: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
        Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
        Sec-WebSocket-Protocol: mqtt\r\n\r\n";

    /// MQTT 3.1.1 CONNECT, client id "a".
    const CONNECT: &[u8] = &[
        0x10, 0x0d, // CONNECT, remaining length 13
        0x00, 0x04, b'M', b'Q', b'T', b'T', // protocol name
        0x04, // level 4
        0x02, // clean session
        0x00, 0x3c, // keep-alive 60
        0x00, 0x01, b'a', // client id
    ];

    fn run(side: Side, input: &[u8]) -> Result<Vec<u8>, WsError> {
        let mut d = Deframer::new(side);
        let mut out = vec![];
        d.feed(input, &mut out)?;
        Ok(out)
    }

    /// Feeds `input` split at every position (two calls) and byte by byte; every way
    /// must give the same output as one call.
    fn all_splits(side: Side, input: &[u8]) -> Vec<u8> {
        let whole = run(side, input).expect("valid input");
        for cut in 0..=input.len() {
            let mut d = Deframer::new(side);
            let mut out = vec![];
            d.feed(&input[..cut], &mut out).unwrap();
            d.feed(&input[cut..], &mut out).unwrap();
            assert_eq!(out, whole, "split at {cut}");
        }
        let mut d = Deframer::new(side);
        let mut out = vec![];
        for b in input {
            d.feed(std::slice::from_ref(b), &mut out).unwrap();
        }
        assert_eq!(out, whole, "byte by byte");
        whole
    }

    fn masked(payload: &[u8], key: [u8; 4]) -> Vec<u8> {
        payload
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ key[i % 4])
            .collect()
    }

    #[test]
    fn masked_binary_frame_after_the_request() {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        let mut s = REQUEST.to_vec();
        s.extend_from_slice(&[
            0x82,      // FIN, opcode 2 (binary)
            0x80 | 15, // MASK, payload length 15
            0x37,
            0xfa,
            0x21,
            0x3d, // masking key
        ]);
        s.extend_from_slice(&masked(CONNECT, key));
        assert_eq!(all_splits(Side::Client, &s), CONNECT);
    }

    #[test]
    fn unmasked_frames_after_the_response_with_fragments() {
        let mut s = RESPONSE.to_vec();
        s.extend_from_slice(&[
            0x02, // no FIN, opcode 2 (binary): first fragment
            0x02, // no MASK, length 2
            0x20, 0x02, // CONNACK, remaining length 2
            0x80, // FIN, opcode 0 (continuation)
            0x02, // length 2
            0x00, 0x00, // session present 0, return code 0
        ]);
        assert_eq!(all_splits(Side::Server, &s), [0x20, 0x02, 0x00, 0x00]);
    }

    #[test]
    fn sixteen_bit_length() {
        let payload: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
        let key = [1, 2, 3, 4];
        let mut s = REQUEST.to_vec();
        s.extend_from_slice(&[
            0x82,       // FIN, binary
            0x80 | 126, // MASK, 16-bit length follows
            0x01,
            0x2c, // length 300
            1,
            2,
            3,
            4, // masking key
        ]);
        s.extend_from_slice(&masked(&payload, key));
        assert_eq!(all_splits(Side::Client, &s), payload);
    }

    #[test]
    fn sixty_four_bit_length() {
        let payload: Vec<u8> = (0..70_000u32).map(|i| (i * 7) as u8).collect();
        let mut s = RESPONSE.to_vec();
        s.extend_from_slice(&[
            0x82, // FIN, binary
            127,  // no MASK, 64-bit length follows
            0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x11, 0x70, // length 70000
        ]);
        s.extend_from_slice(&payload);
        // Two-call splits at every byte of the header, byte by byte overall.
        let head = RESPONSE.len() + 10;
        assert_eq!(all_splits(Side::Server, &s[..head + 5])[..], payload[..5]);
        assert_eq!(run(Side::Server, &s).unwrap(), payload);
    }

    #[test]
    fn control_frames_interleaved_are_dropped() {
        let key = [0xa1, 0xb2, 0xc3, 0xd4];
        let mut s = REQUEST.to_vec();
        s.extend_from_slice(&[
            0x02,     // no FIN, binary: first fragment
            0x80 | 4, // MASK, length 4
            0xa1,
            0xb2,
            0xc3,
            0xd4, // masking key
        ]);
        s.extend_from_slice(&masked(&CONNECT[..4], key));
        s.extend_from_slice(&[
            0x89,     // FIN, ping
            0x80 | 3, // MASK, length 3
            9,
            9,
            9,
            9, // masking key
            b'p' ^ 9,
            b'i' ^ 9,
            b'n' ^ 9, // "pin", masked
            0x8a,     // FIN, pong
            0x80,     // MASK, length 0
            0,
            0,
            0,
            0,         // masking key
            0x80,      // FIN, continuation: the rest of the CONNECT
            0x80 | 11, // MASK, length 11
            0xa1,
            0xb2,
            0xc3,
            0xd4, // masking key
        ]);
        s.extend_from_slice(&masked(&CONNECT[4..], key));
        s.extend_from_slice(&[
            0x88,     // FIN, close
            0x80 | 2, // MASK, length 2
            0,
            0,
            0,
            0, // masking key
            0x03,
            0xe8, // status 1000
            0x82,
            0x02,
            0xc0,
            0x00, // a frame after close: dropped
        ]);
        assert_eq!(all_splits(Side::Client, &s), CONNECT);
    }

    #[test]
    fn refused_upgrade_is_an_error() {
        let s = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n";
        assert!(matches!(
            run(Side::Server, s),
            Err(WsError::UpgradeRefused { .. })
        ));
    }

    #[test]
    fn plain_mqtt_is_no_upgrade_from_its_first_byte() {
        // CONNECT's first byte alone is not "G": decided at once.
        assert!(matches!(
            run(Side::Client, &CONNECT[..1]),
            Err(WsError::NotUpgradeRequest { .. })
        ));
        // CONNACK from the server is no "HTTP/" response.
        assert!(matches!(
            run(Side::Server, &[0x20, 0x02, 0x00, 0x00]),
            Err(WsError::NotUpgradeResponse { .. })
        ));
        // A split inside "GET " waits.
        assert_eq!(run(Side::Client, b"GE"), Ok(vec![]));
    }

    #[test]
    fn text_frame_rsv_and_reserved_opcode_stop_the_direction() {
        let at = RESPONSE.len() as u64;
        for (frame, want) in [
            // FIN, text, length 1
            ([0x81, 0x01, b'x'], WsError::TextFrame { offset: at }),
            // FIN, RSV1 (permessage-deflate), binary, length 1
            (
                [0xc2, 0x01, 0x00],
                WsError::Extension { rsv: 4, offset: at },
            ),
            // FIN, opcode 3 (reserved), length 1
            (
                [0x83, 0x01, 0x00],
                WsError::ReservedOpcode {
                    opcode: 3,
                    offset: at,
                },
            ),
        ] {
            let mut d = Deframer::new(Side::Server);
            let mut out = vec![];
            let mut s = RESPONSE.to_vec();
            s.extend_from_slice(&frame);
            assert_eq!(d.feed(&s, &mut out), Err(want));
            assert!(d.failed());
            // Later binary frames give nothing: the direction is not decodable.
            d.feed(&[0x82, 0x02, 0xc0, 0x00], &mut out).unwrap();
            assert!(out.is_empty());
        }
    }

    #[test]
    fn endless_headers_are_an_error() {
        let mut d = Deframer::new(Side::Client);
        let mut out = vec![];
        d.feed(b"GET / HTTP/1.1\r\n", &mut out).unwrap();
        let line = b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
        let mut err = None;
        for _ in 0..1000 {
            if let Err(e) = d.feed(line, &mut out) {
                err = Some(e);
                break;
            }
        }
        assert_eq!(
            err,
            Some(WsError::HeadersTooLong {
                limit: MAX_UPGRADE_HEADERS
            })
        );
    }
}
