//! A CONNECT read by its framing: an MQTT 3.1 CONNECT rewritten as 3.1.1, and
//! where a password that is not UTF-8 lies.
//!
//! MQTT defines the password as Binary Data (3.1.1 §3.1.3.5, 5.0 §3.1.3.6), but the
//! codec reads it as a UTF-8 string and refuses the whole CONNECT when it is not.
//! [`password_range`] finds it, so `decoder` decodes such a CONNECT with the password's
//! bytes stood in for and a conforming client is not called malformed.

use std::ops::Range;

use bytes::BytesMut;

/// Turns an MQTT 3.1 CONNECT (protocol name "MQIsdp", level 3) into the equivalent
/// 3.1.1 CONNECT (name "MQTT", level 4): the rest of the packet is identical.
pub(super) fn rewrite_v31_connect(frame: &[u8], hlen: usize) -> Result<BytesMut, String> {
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

/// The byte range of the password's data in a whole CONNECT `frame` whose fixed
/// header is `hlen` bytes long, or `None` when it has no password or its fields do not add up.
pub(super) fn password_range(frame: &[u8], hlen: usize) -> Option<Range<usize>> {
    let mut r = Fields { b: frame, at: hlen };
    r.field()?; // protocol name ("MQTT", or "MQIsdp" for 3.1: the same layout)
    let level = r.byte()?;
    let flags = r.byte()?;
    r.skip(2)?; // keep alive
    let v5 = level == 5;
    if v5 {
        r.properties()?;
    }
    r.field()?; // client identifier
    if flags & 0x04 != 0 {
        if v5 {
            r.properties()?; // will properties
        }
        r.field()?; // will topic
        r.field()?; // will payload
    }
    if flags & 0x80 != 0 {
        r.field()?; // user name
    }
    if flags & 0x40 == 0 {
        return None;
    }
    r.field()
}

/// A cursor over a CONNECT's fields; every step checks the bounds.
struct Fields<'a> {
    b: &'a [u8],
    at: usize,
}

impl Fields<'_> {
    fn byte(&mut self) -> Option<u8> {
        let x = *self.b.get(self.at)?;
        self.at += 1;
        Some(x)
    }

    fn skip(&mut self, n: usize) -> Option<()> {
        let end = self.at.checked_add(n)?;
        (end <= self.b.len()).then(|| self.at = end)
    }

    /// A two-byte length and that many bytes; returns the bytes' range.
    fn field(&mut self) -> Option<Range<usize>> {
        let n = u16::from_be_bytes([self.byte()?, self.byte()?]) as usize;
        let start = self.at;
        self.skip(n)?;
        Some(start..self.at)
    }

    /// An MQTT 5 property block: a variable byte integer length and that many bytes.
    fn properties(&mut self) -> Option<()> {
        let mut n = 0usize;
        for i in 0..4 {
            let b = self.byte()?;
            n |= ((b & 0x7f) as usize) << (7 * i);
            if b & 0x80 == 0 {
                return self.skip(n);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::password_range;
    use crate::mqtt::encode;

    #[test]
    fn the_password_is_found_in_3_1_1_and_5_connects() {
        let f = encode::connect_login("c1", b"user", b"\xff\x00pw");
        let r = password_range(&f, 2).unwrap();
        assert_eq!(&f[r], b"\xff\x00pw");
        let f = encode::connect_v5("c1", &[0x11, 0, 0, 0, 10], b"u", b"\x80secret");
        let r = password_range(&f, 2).unwrap();
        assert_eq!(&f[r], b"\x80secret");
    }

    #[test]
    fn no_password_or_a_short_frame_gives_none() {
        assert_eq!(password_range(&encode::connect("c1"), 2), None);
        let f = encode::connect_login("c1", b"user", b"pw");
        assert_eq!(password_range(&f[..f.len() - 1], 2), None);
    }
}
