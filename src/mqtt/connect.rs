//! A CONNECT read by its framing: an MQTT 3.1 CONNECT rewritten as 3.1.1.

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
