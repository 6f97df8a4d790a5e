//! Where a client's credentials sit in the raw bytes of a packet, so that the store
//! overwrites them before they reach the disk ([`super::WriteBatch`]), also when the
//! packet is still incomplete (a CONNECT sent in pieces, whose first part goes to
//! disk before the rest arrives).
//!
//! Secrets: the CONNECT's user name and password (MQTT 3.1, 3.1.1 and 5), and the
//! Authentication Data property (0x16) of an MQTT 5 CONNECT or AUTH packet (MQTT 5
//! §3.1.2.11.10, §3.15.2.2.3). Only the data bytes are named, never a length prefix,
//! so overwritten bytes leave the packet's framing intact and it still decodes.

use std::ops::Range;

/// MQTT 5 property identifiers of CONNECT and AUTH, and how long their values are.
enum Value {
    Fixed(usize),
    VarInt,
    /// A 2-byte length and that many bytes (UTF-8 string or binary data).
    Prefixed,
    /// Two of them (a user property).
    Pair,
}

fn property(id: u8) -> Option<Value> {
    Some(match id {
        0x01 | 0x17 | 0x19 => Value::Fixed(1),
        0x21 | 0x22 => Value::Fixed(2),
        0x02 | 0x11 | 0x18 | 0x27 => Value::Fixed(4),
        0x0B => Value::VarInt,
        0x03 | 0x08 | 0x09 | 0x12 | 0x15 | 0x16 | 0x1A | 0x1C | 0x1F => Value::Prefixed,
        0x26 => Value::Pair,
        _ => return None,
    })
}

/// AUTHENTICATION DATA.
const AUTH_DATA: u8 = 0x16;

/// A cursor over the bytes available so far; every read is `None` past their end.
struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
    /// Secret data ranges found, clipped to the bytes available.
    out: Vec<Range<usize>>,
}

impl Cursor<'_> {
    fn byte(&mut self) -> Option<u8> {
        let v = *self.b.get(self.at)?;
        self.at += 1;
        Some(v)
    }

    fn u16(&mut self) -> Option<usize> {
        Some((usize::from(self.byte()?) << 8) | usize::from(self.byte()?))
    }

    fn varint(&mut self) -> Option<usize> {
        let mut v = 0usize;
        for i in 0..4 {
            let b = self.byte()?;
            v |= usize::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    fn skip(&mut self, n: usize) -> Option<()> {
        self.at = self.at.checked_add(n)?;
        (self.at <= self.b.len()).then_some(())
    }

    /// A 2-byte length and its data; the data is secret when `secret` (noted as far
    /// as it is available, also when it runs past the end).
    fn prefixed(&mut self, secret: bool) -> Option<()> {
        let n = self.u16()?;
        if secret && n > 0 {
            let end = (self.at + n).min(self.b.len());
            if self.at < end {
                self.out.push(self.at..end);
            }
        }
        self.skip(n)
    }

    /// An MQTT 5 property list (its length first), noting Authentication Data.
    fn properties(&mut self) -> Option<()> {
        let len = self.varint()?;
        let end = self.at.checked_add(len)?;
        while self.at < end {
            let id = self.byte()?;
            match property(id)? {
                Value::Fixed(n) => self.skip(n)?,
                Value::VarInt => {
                    self.varint()?;
                }
                Value::Prefixed => self.prefixed(id == AUTH_DATA)?,
                Value::Pair => {
                    self.prefixed(false)?;
                    self.prefixed(false)?;
                }
            }
        }
        Some(())
    }
}

/// The byte ranges of credentials in `packet`: the bytes of one client packet from
/// its first byte, complete or not. Ranges are clipped to the bytes given; a field
/// whose position depends on bytes not given yet is not named (it is not in them).
/// Any packet but CONNECT and AUTH has none. Malformed input gives what was found
/// before the fault.
pub(crate) fn secret_ranges(packet: &[u8]) -> Vec<Range<usize>> {
    let mut c = Cursor {
        b: packet,
        at: 0,
        out: vec![],
    };
    let _ = match packet.first().map(|b| b >> 4) {
        Some(1) => connect(&mut c),
        Some(15) => auth(&mut c),
        _ => None,
    };
    c.out
}

fn connect(c: &mut Cursor<'_>) -> Option<()> {
    c.byte()?;
    c.varint()?;
    // Protocol name ("MQTT", or "MQIsdp" for 3.1), level, flags, keep-alive.
    c.prefixed(false)?;
    let level = c.byte()?;
    let flags = c.byte()?;
    c.skip(2)?;
    let v5 = level == 5;
    if v5 {
        c.properties()?;
    }
    // Client identifier.
    c.prefixed(false)?;
    if flags & 0x04 != 0 {
        if v5 {
            c.properties()?;
        }
        c.prefixed(false)?; // will topic
        c.prefixed(false)?; // will payload
    }
    if flags & 0x80 != 0 {
        c.prefixed(true)?; // user name
    }
    if flags & 0x40 != 0 {
        c.prefixed(true)?; // password
    }
    Some(())
}

fn auth(c: &mut Cursor<'_>) -> Option<()> {
    c.byte()?;
    let remaining = c.varint()?;
    if remaining == 0 {
        return Some(());
    }
    c.byte()?; // reason code
    c.properties()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pick<'a>(b: &'a [u8], r: &[Range<usize>]) -> Vec<&'a [u8]> {
        r.iter().map(|r| &b[r.clone()]).collect()
    }

    /// CONNECT, MQTT 3.1.1, user name "user", password "s3cret".
    fn connect_v4() -> Vec<u8> {
        let mut body = b"\x00\x04MQTT\x04\xc2\x00\x3c".to_vec();
        body.extend_from_slice(b"\x00\x04dev1\x00\x04user\x00\x06s3cret");
        let mut p = vec![0x10, body.len() as u8];
        p.extend(body);
        p
    }

    /// CONNECT, MQTT 5, with will, user property, auth method and data, user name
    /// and password.
    fn connect_v5() -> Vec<u8> {
        let mut props = vec![0x11, 0, 0, 0, 10];
        props.extend_from_slice(b"\x26\x00\x01k\x00\x01v");
        props.extend_from_slice(b"\x15\x00\x05SCRAM");
        props.extend_from_slice(b"\x16\x00\x04AUTH");
        let mut body = b"\x00\x04MQTT\x05\xc6\x00\x3c".to_vec();
        body.push(props.len() as u8);
        body.extend(props);
        body.extend_from_slice(b"\x00\x04dev5");
        body.extend_from_slice(b"\x02\x01\x01"); // will properties: payload format 1
        body.extend_from_slice(b"\x00\x01t\x00\x02wp");
        body.extend_from_slice(b"\x00\x04user\x00\x06s3cret");
        let mut p = vec![0x10, body.len() as u8];
        p.extend(body);
        p
    }

    #[test]
    fn connect_credentials_are_found_in_3_1_1_and_5() {
        let p = connect_v4();
        assert_eq!(pick(&p, &secret_ranges(&p)), [&b"user"[..], &b"s3cret"[..]]);
        let p = connect_v5();
        assert_eq!(
            pick(&p, &secret_ranges(&p)),
            [&b"AUTH"[..], &b"user"[..], &b"s3cret"[..]]
        );
    }

    #[test]
    fn an_incomplete_connect_names_what_it_holds_so_far() {
        let p = connect_v5();
        let pw_at = p.len() - 6;
        // Cut inside the password: its first two bytes are named.
        let cut = &p[..pw_at + 2];
        assert_eq!(
            pick(cut, &secret_ranges(cut)),
            [&b"AUTH"[..], &b"user"[..], &b"s3"[..]]
        );
        // Cut inside the user name's length: only what came before it.
        let user_len_at = pw_at - 2 - 4 - 2;
        let cut = &p[..user_len_at + 1];
        assert_eq!(pick(cut, &secret_ranges(cut)), [&b"AUTH"[..]]);
        // Cut inside the auth data.
        let auth_at = p.windows(4).position(|w| w == b"AUTH").unwrap();
        let cut = &p[..auth_at + 1];
        assert_eq!(pick(cut, &secret_ranges(cut)), [&b"A"[..]]);
        // Cut in the fixed header: nothing yet.
        assert!(secret_ranges(&p[..1]).is_empty());
    }

    #[test]
    fn auth_data_of_an_auth_packet_is_found_and_other_packets_have_none() {
        let mut props = b"\x15\x00\x05SCRAM".to_vec();
        props.extend_from_slice(b"\x16\x00\x03xyz");
        let mut p = vec![0xF0, (props.len() + 2) as u8, 0x18, props.len() as u8];
        p.extend(props);
        assert_eq!(pick(&p, &secret_ranges(&p)), [&b"xyz"[..]]);
        assert!(secret_ranges(&[0xF0, 0]).is_empty());
        let publish = b"\x30\x08\x00\x01tuser";
        assert!(secret_ranges(publish).is_empty());
        // An unknown property stops the walk: what was found before stays.
        let bad = b"\xF0\x06\x18\x04\x7f\x00\x00\x00";
        assert!(secret_ranges(bad).is_empty());
    }
}
