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

/// The client's first bytes of a connection whose start was seen, until they tell
/// whether it opens with a CONNECT, as MQTT requires of a client's first packet.
#[derive(Debug, Default)]
pub struct Opening {
    seen: Vec<u8>,
    decided: bool,
}

/// Bytes of a client's opening kept to describe it.
const OPENING_SHOWN: usize = 16;

/// A connection that does not open with a CONNECT: what it opened with.
#[derive(Debug, Clone, PartialEq)]
pub struct NotConnect {
    /// Its first bytes, as text when they are text (`"GET /mqtt HTTP/1"`), else hex.
    pub shown: String,
    /// The protocol they are, when they are a known one other than MQTT ("an HTTP
    /// request …"): the connection is then not MQTT, and not for edgetap to judge
    /// (MQTT over WebSocket, a load balancer's header, TLS).
    pub other_protocol: Option<&'static str>,
}

impl Opening {
    /// The next client bytes: `Some` once they prove the connection does not open
    /// with a CONNECT (said once); `None` while they may still, or do.
    pub fn feed(&mut self, bytes: &[u8]) -> Option<NotConnect> {
        if self.decided {
            return None;
        }
        let room = OPENING_SHOWN.saturating_sub(self.seen.len());
        self.seen.extend_from_slice(&bytes[..bytes.len().min(room)]);
        let verdict = looks_like_connect(&self.seen);
        // Undecided only while the bytes are a prefix of a CONNECT's first 11.
        if verdict.is_some() || self.seen.len() >= OPENING_SHOWN {
            self.decided = true;
            let seen = std::mem::take(&mut self.seen);
            if verdict == Some(false) {
                return Some(NotConnect::of(&seen));
            }
        }
        None
    }
}

impl NotConnect {
    pub fn of(first: &[u8]) -> NotConnect {
        let text = first
            .iter()
            .take_while(|b| b.is_ascii_graphic() || **b == b' ')
            .count();
        let shown = if text >= 4 {
            format!("\"{}\"", String::from_utf8_lossy(&first[..text]))
        } else {
            let hex: Vec<String> = first.iter().map(|b| format!("{b:02x}")).collect();
            hex.join(" ")
        };
        let http = ["GET ", "POST ", "PUT ", "HEAD ", "OPTIONS ", "HTTP/"];
        let other_protocol = if http.iter().any(|m| first.starts_with(m.as_bytes())) {
            Some(
                "an HTTP request (MQTT over WebSocket is decoded by `edgetap proxy \
                 --websocket`, not from captures)",
            )
        } else if first.starts_with(b"PROXY ") || first.starts_with(b"\r\n\r\n\0\r\nQUIT\n") {
            Some("a PROXY protocol header from a load balancer")
        } else if first.starts_with(b"SSH-") {
            Some("SSH")
        } else if looks_like_tls(first) {
            Some("TLS")
        } else {
            None
        };
        NotConnect {
            shown,
            other_protocol,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_opening_is_judged_once_from_its_first_bytes() {
        let mut o = Opening::default();
        // A CONNECT split after its first byte, and after its protocol name.
        assert_eq!(o.feed(b"\x10"), None);
        assert_eq!(o.feed(b"\x0c\x00\x04MQ"), None);
        assert_eq!(o.feed(b"TT\x04\x02\x00\x3c"), None);
        assert_eq!(o.feed(b"GET /"), None, "decided: a CONNECT");

        let mut o = Opening::default();
        let http = o.feed(b"GET /mqtt HTTP/1.1\r\nHost: x\r\n").unwrap();
        assert_eq!(http.shown, "\"GET /mqtt HTTP/1\"");
        assert!(http.other_protocol.unwrap().starts_with("an HTTP request"));
        assert_eq!(o.feed(b"GET /"), None, "said once");

        let mut o = Opening::default();
        let publish = o.feed(b"\x30\x02\x00").unwrap();
        assert_eq!(
            (publish.shown.as_str(), publish.other_protocol),
            ("30 02 00", None)
        );
        let mut o = Opening::default();
        assert_eq!(o.feed(b"\xc0\x00").unwrap().shown, "c0 00");
        let proxy = NotConnect::of(b"PROXY TCP4 10.0.0.1 10.0.0.2 1 2\r\n");
        assert!(proxy.other_protocol.unwrap().contains("PROXY protocol"));
    }

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
