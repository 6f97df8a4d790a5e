//! Tests of the stream decoder (moved out of decoder.rs, unchanged).

use super::*;

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
            packet: Packet::Connect(Connect {
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

#[test]
fn a_binary_password_is_conforming_and_decodes() {
    for frame in [
        crate::mqtt::encode::connect_login("c1", b"user", b"\xff\xfe\x00pw"),
        crate::mqtt::encode::connect_v5("c1", &[], b"user", b"\xff\xfe\x00pw"),
    ] {
        let out = decode_chunks(&frame, 3);
        match &out[..] {
            [Decoded::Packet {
                packet: Packet::Connect(c),
                ..
            }] => {
                assert_eq!(c.username.as_deref(), Some("user"));
                assert_eq!(c.password.as_deref(), Some("\u{fffd}\u{fffd}\0pw"));
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn a_user_name_that_is_not_utf8_stays_malformed() {
    let frame = crate::mqtt::encode::connect_login("c1", b"\xffuser", b"pw");
    assert!(matches!(
        decode_chunks(&frame, 64)[..],
        [Decoded::Malformed { .. }]
    ));
}
