//! The MQTT 3.1.1 packets edgetap writes itself (the sims' and the replayer's
//! recording taps), and the few more its tests write, in one place, with rumqttc's
//! codec.

use bytes::BytesMut;

/// A CONNECT with client id `id` (clean session, no credentials).
pub fn connect(id: &str) -> Vec<u8> {
    let mut b = BytesMut::new();
    // A CONNECT this crate writes itself cannot fail to encode.
    let _ = rumqttc::mqttbytes::v4::Connect::new(id).write(&mut b);
    b.to_vec()
}

/// A QoS 0 PUBLISH of `payload` on `topic`.
pub fn publish(topic: &str, payload: &[u8]) -> Vec<u8> {
    let mut b = BytesMut::new();
    let p = rumqttc::mqttbytes::v4::Publish::new(
        topic,
        rumqttc::mqttbytes::QoS::AtMostOnce,
        payload.to_vec(),
    );
    // Nor can a PUBLISH within the codec's limits.
    let _ = p.write(&mut b);
    b.to_vec()
}

/// A CONNACK accepting the connection (return code 0).
pub fn connack(session_present: bool) -> Vec<u8> {
    use rumqttc::mqttbytes::v4::{ConnAck, ConnectReturnCode};
    let mut b = BytesMut::new();
    // Fixed-size packets cannot fail to encode.
    let _ = ConnAck::new(ConnectReturnCode::Success, session_present).write(&mut b);
    b.to_vec()
}

/// A PUBACK of packet id `pkid`.
pub fn puback(pkid: u16) -> Vec<u8> {
    let mut b = BytesMut::new();
    let _ = rumqttc::mqttbytes::v4::PubAck::new(pkid).write(&mut b);
    b.to_vec()
}

/// A PINGREQ.
pub fn pingreq() -> Vec<u8> {
    let mut b = BytesMut::new();
    let _ = rumqttc::mqttbytes::v4::PingReq.write(&mut b);
    b.to_vec()
}

/// A DISCONNECT.
pub fn disconnect() -> Vec<u8> {
    let mut b = BytesMut::new();
    let _ = rumqttc::mqttbytes::v4::Disconnect.write(&mut b);
    b.to_vec()
}

/// The bytes of an MQTT variable byte integer (a remaining length).
pub fn varint(mut n: usize) -> Vec<u8> {
    let mut v = vec![];
    loop {
        let b = (n % 128) as u8;
        n /= 128;
        v.push(if n > 0 { b | 0x80 } else { b });
        if n == 0 {
            return v;
        }
    }
}

/// A packet of any kind, framed by hand: the first byte (type and flags), the
/// remaining length, `body`. For the packets tests need that the codec refuses to
/// write (binary or non-UTF-8 credentials, unknown MQTT 5 properties, AUTH).
pub fn frame(first: u8, body: &[u8]) -> Vec<u8> {
    let mut p = vec![first];
    p.extend(varint(body.len()));
    p.extend_from_slice(body);
    p
}

/// An MQTT 3.1.1 CONNECT with user name and password as given (any bytes).
pub fn connect_login(id: &str, user: &[u8], pass: &[u8]) -> Vec<u8> {
    let mut body = b"\x00\x04MQTT\x04\xc2\x00\x3c".to_vec();
    for f in [id.as_bytes(), user, pass] {
        body.extend((f.len() as u16).to_be_bytes());
        body.extend_from_slice(f);
    }
    frame(0x10, &body)
}

/// An MQTT 5 CONNECT (keep-alive 60) with CONNECT properties `props` (bytes as
/// given, their length put in front), user name and password.
pub fn connect_v5(id: &str, props: &[u8], user: &[u8], pass: &[u8]) -> Vec<u8> {
    let mut body = b"\x00\x04MQTT\x05\xc2\x00\x3c".to_vec();
    body.extend(varint(props.len()));
    body.extend_from_slice(props);
    for f in [id.as_bytes(), user, pass] {
        body.extend((f.len() as u16).to_be_bytes());
        body.extend_from_slice(f);
    }
    frame(0x10, &body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mqtt::{Decoded, Packet, StreamDecoder};

    #[test]
    fn what_is_written_decodes_back() {
        let mut d = StreamDecoder::new(1 << 20);
        d.feed(&connect("dev-1"));
        d.feed(&publish("/v1/E1/device/data", b"{}"));
        let mut got = vec![];
        while let Some(x) = d.next(None) {
            got.push(x);
        }
        assert!(
            matches!(&got[0], Decoded::Packet { packet: Packet::Connect(c), .. } if c.client_id == "dev-1"),
            "{got:?}"
        );
        assert!(
            matches!(&got[1], Decoded::Packet { packet: Packet::Publish(p), .. } if p.topic == "/v1/E1/device/data" && &p.payload[..] == b"{}"),
            "{got:?}"
        );
    }

    #[test]
    fn the_small_packets_decode_back() {
        let mut d = StreamDecoder::new(1 << 20);
        for p in [connack(false), puback(7), pingreq(), disconnect()] {
            d.feed(&p);
        }
        let mut got = vec![];
        while let Some(Decoded::Packet { packet, .. }) = d.next(None) {
            got.push(packet);
        }
        assert!(
            matches!(
                &got[..],
                [
                    Packet::ConnAck { code: 0 },
                    Packet::PubAck(7),
                    Packet::PingReq,
                    Packet::Disconnect
                ]
            ),
            "{got:?}"
        );
        // As MQTT 3.1.1 §3.2, §3.4, §3.12 and §3.14 spell them.
        assert_eq!(connack(false), [0x20, 0x02, 0x00, 0x00]);
        assert_eq!(connack(true), [0x20, 0x02, 0x01, 0x00]);
        assert_eq!(puback(7), [0x40, 0x02, 0x00, 0x07]);
        assert_eq!(pingreq(), [0xc0, 0x00]);
        assert_eq!(disconnect(), [0xe0, 0x00]);
    }
}
