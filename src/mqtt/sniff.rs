//! Cheap looks at the first bytes of a TCP stream: is it MQTT, is it TLS?
//! Used to pick which flows of a capture to decode, whatever their port.

/// Does `first` (the first client bytes of a flow) start an MQTT CONNECT?
/// `None` while too few bytes have arrived to tell.
pub fn looks_like_connect(first: &[u8]) -> Option<bool> {
    // byte 0: CONNECT (type 1, flags 0); then a 1–4 byte remaining length;
    // then protocol name length (0x00 0x04 "MQTT" or 0x00 0x06 "MQIsdp").
    if first.is_empty() {
        return None;
    }
    if first[0] != 0x10 {
        return Some(false);
    }
    let mut i = 1;
    loop {
        let Some(&b) = first.get(i) else { return None };
        i += 1;
        if b & 0x80 == 0 {
            break;
        }
        if i > 4 {
            return Some(false);
        }
    }
    let rest = &first[i..];
    let want: [&[u8]; 2] = [b"\x00\x04MQTT", b"\x00\x06MQIsdp"];
    for name in want {
        let n = rest.len().min(name.len());
        if rest[..n] == name[..n] {
            return if n == name.len() { Some(true) } else { None };
        }
    }
    Some(false)
}

/// Does `first` (the first client bytes of a flow) start a TLS handshake record?
pub fn looks_like_tls(first: &[u8]) -> bool {
    // record type 22 (handshake), version 3.x, then a ClientHello (type 1).
    first.len() >= 6 && first[0] == 0x16 && first[1] == 0x03 && first[5] == 0x01
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_v311_v31_and_not() {
        // 0x10 CONNECT, remaining length 0x0c, 0x00 0x04 "MQTT", level 4
        assert_eq!(looks_like_connect(b"\x10\x0c\x00\x04MQTT\x04"), Some(true));
        assert_eq!(
            looks_like_connect(b"\x10\x0e\x00\x06MQIsdp\x03"),
            Some(true)
        );
        assert_eq!(looks_like_connect(b"\x10\x0c\x00\x04MQ"), None);
        assert_eq!(looks_like_connect(b"\x30\x0c\x00\x04MQTT"), Some(false));
        assert_eq!(looks_like_connect(b"GET / HTTP/1.1"), Some(false));
        assert_eq!(looks_like_connect(b"\x10\x0c\x00\x05HELLO"), Some(false));
    }

    #[test]
    fn tls_client_hello() {
        assert!(looks_like_tls(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00]));
        assert!(!looks_like_tls(b"\x10\x0c\x00\x04MQTT\x04"));
    }
}
