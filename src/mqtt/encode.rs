//! The MQTT 3.1.1 packets edgetap writes itself (the sims' and the replayer's
//! recording taps), in one place, with rumqttc's codec.

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
}
