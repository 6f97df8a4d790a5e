//! decode(encode(p)) == p: packets written by rumqttc's encoders (3.1.1 and 5), cut
//! into random chunks, come out of `StreamDecoder` unchanged. Seeded: a failure
//! prints its seed, and `ROUNDTRIP_SEED=N` replays it.

use bytes::BytesMut;
use edgetap::mqtt::{Decoded, Packet, StreamDecoder, Version, MQTT_MAX_REMAINING};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rumqttc::mqttbytes::QoS;

#[derive(Debug, Clone, PartialEq)]
struct Expect {
    topic: String,
    payload: Vec<u8>,
    qos: u8,
    pkid: u16,
    retain: bool,
}

fn random_publish(rng: &mut StdRng) -> Expect {
    let topic_len = rng.gen_range(1..40);
    let topic: String = (0..topic_len)
        .map(|_| match rng.gen_range(0..4) {
            0 => '/',
            1 => char::from(rng.gen_range(b'0'..=b'9')),
            2 => '电',
            _ => char::from(rng.gen_range(b'a'..=b'z')),
        })
        .collect();
    let payload_len = match rng.gen_range(0..10) {
        0 => 0,
        1 => rng.gen_range(16_000..70_000),
        _ => rng.gen_range(1..1200),
    };
    let qos = rng.gen_range(0..3u8);
    Expect {
        topic,
        payload: (0..payload_len).map(|_| rng.gen()).collect(),
        qos,
        pkid: if qos == 0 {
            0
        } else {
            rng.gen_range(1..=u16::MAX)
        },
        retain: rng.gen(),
    }
}

fn qos(q: u8) -> QoS {
    match q {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

fn encode(v: Version, e: &Expect, out: &mut BytesMut) {
    match v {
        Version::V5 => {
            let mut p = rumqttc::v5::mqttbytes::v5::Publish::new(
                e.topic.clone(),
                match e.qos {
                    0 => rumqttc::v5::mqttbytes::QoS::AtMostOnce,
                    1 => rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                    _ => rumqttc::v5::mqttbytes::QoS::ExactlyOnce,
                },
                e.payload.clone(),
                None,
            );
            p.pkid = e.pkid;
            p.retain = e.retain;
            p.write(out).unwrap();
        }
        _ => {
            let mut p =
                rumqttc::mqttbytes::v4::Publish::new(&e.topic, qos(e.qos), e.payload.clone());
            p.pkid = e.pkid;
            p.retain = e.retain;
            p.write(out).unwrap();
        }
    }
}

fn connect(v: Version) -> BytesMut {
    let mut b = BytesMut::new();
    match v {
        Version::V5 => {
            rumqttc::v5::mqttbytes::v5::Connect {
                keep_alive: 30,
                client_id: "edge".into(),
                clean_start: true,
                properties: None,
            }
            .write(&None, &None, &mut b)
            .unwrap();
        }
        _ => {
            rumqttc::mqttbytes::v4::Connect::new("edge")
                .write(&mut b)
                .unwrap();
        }
    }
    b
}

fn run(seed: u64, v: Version) {
    let mut rng = StdRng::seed_from_u64(seed);
    let expected: Vec<Expect> = (0..rng.gen_range(1..30))
        .map(|_| random_publish(&mut rng))
        .collect();
    let mut wire = connect(v);
    for e in &expected {
        encode(v, e, &mut wire);
    }
    let mut d = StreamDecoder::new(MQTT_MAX_REMAINING);
    let mut version = None;
    let mut got = vec![];
    let mut rest = &wire[..];
    while !rest.is_empty() {
        let n = rng.gen_range(1..=rest.len().min(3000));
        d.feed(&rest[..n]);
        rest = &rest[n..];
        while let Some(x) = d.next(version) {
            match x {
                Decoded::Packet {
                    packet: Packet::Connect(c),
                    ..
                } => version = Some(c.version),
                Decoded::Packet {
                    packet: Packet::Publish(p),
                    ..
                } => got.push(Expect {
                    topic: p.topic,
                    payload: p.payload.to_vec(),
                    qos: p.qos,
                    pkid: p.pkid,
                    retain: p.retain,
                }),
                other => panic!("seed {seed} {v:?}: unexpected {other:?}"),
            }
        }
    }
    assert_eq!(d.buffered(), 0, "seed {seed}");
    assert_eq!(got, expected, "seed {seed} {v:?}");
}

#[test]
fn publishes_survive_encode_then_chunked_decode() {
    if let Ok(seed) = std::env::var("ROUNDTRIP_SEED") {
        let seed: u64 = seed.parse().expect("ROUNDTRIP_SEED is a number");
        run(seed, Version::V311);
        run(seed, Version::V5);
        return;
    }
    for seed in 0..100 {
        run(seed, Version::V311);
        run(seed, Version::V5);
    }
}
