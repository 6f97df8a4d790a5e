//! Unit tests of the store as a whole: what is written is read back (packet records,
//! events in order, damaged records skipped), and CONNECT credentials overwritten.

use super::*;
use crate::finding::Side;
use bytes::Bytes;

fn rec(n: u64) -> PacketRecord {
    PacketRecord {
        conn: 7,
        side: if n.is_multiple_of(2) {
            "client"
        } else {
            "server"
        }
        .into(),
        chunk: n,
        time_us: if n == 3 {
            -5
        } else {
            1_795_687_200_000_000 + n as i64
        },
        offset: 300 * n,
        len: 1030,
        packet_type: "PUBLISH".into(),
        client_id: (n == 1).then(|| "dev-é".to_string()),
        version: (n == 1).then(|| "3.1.1".to_string()),
        username: (n == 1).then(|| "u".to_string()),
        password: (n == 1).then(String::new),
        topic: (n != 1).then(|| format!("t/{n}")),
        payload_len: (n != 1).then_some(1 << 40),
    }
}

pub(super) fn temp(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("edgetap-store-unit-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn binary_packet_records_round_trip_and_json_ones_still_read() {
    let p = Path::new("x");
    for n in 0..5 {
        let r = rec(n);
        let mut b = vec![];
        chunk::encode_packet(&r.fields(), &mut b);
        assert_eq!(chunk::decode_packet(p, "k", &b).unwrap(), r);
        let json = serde_json::to_vec(&r).unwrap();
        assert!(json.len() > b.len());
        assert_eq!(chunk::decode_packet(p, "k", &json).unwrap(), r);
        // Truncated binary records are reported, not misread.
        assert!(chunk::decode_packet(p, "k", &b[..b.len() - 1]).is_err());
    }
}

fn ev(seq: u64) -> Event {
    Event {
        time_us: seq as i64,
        seq,
        conn: 7,
        kind: EventKind::Data {
            side: Side::Client,
            bytes: Bytes::from(vec![seq as u8; 3]),
        },
    }
}

#[test]
fn packets_given_out_of_event_order_stay_with_their_event() {
    let dir = temp("order");
    let store = Store::open(&dir).unwrap();
    let mut meta = CaptureMeta::default();
    let cap = store.begin_capture(&mut meta).unwrap();
    // The bytes are not MQTT: stored as given only with secrets kept.
    let mut first = WriteBatch::with_secrets(true);
    first.event(cap, &ev(1));
    first.event(cap, &ev(2));
    first.packet(cap, 1, 0, &rec(1));
    first.packet(cap, 2, 0, &rec(2));
    first.packet(cap, 1, 1, &rec(3));
    let mut later = WriteBatch::with_secrets(true);
    later.event(cap, &ev(4));
    later.packet(cap, 4, 0, &rec(4));
    first.append(later);
    store.write(first, &meta).unwrap();
    let got: Vec<PacketRecord> = store.packets(cap).map(|p| p.unwrap()).collect();
    assert_eq!(got, vec![rec(1), rec(3), rec(2), rec(4)]);
    let evs: Vec<Event> = store.events(cap).map(|e| e.unwrap()).collect();
    assert_eq!(evs, vec![ev(1), ev(2), ev(4)]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Three batches; the middle one's bytes are overwritten (or the file is cut in
/// the last one): the other batches are read, the damaged span is reported.
#[test]
fn a_damaged_record_loses_only_its_own_events() {
    let dir = temp("damage");
    let store = Store::open(&dir).unwrap();
    let mut meta = CaptureMeta::default();
    let cap = store.begin_capture(&mut meta).unwrap();
    let mut ends = vec![];
    for seq in 1..=3 {
        let mut b = WriteBatch::with_secrets(true);
        b.event(cap, &ev(seq));
        store.write(b, &meta).unwrap();
        ends.push(std::fs::metadata(store.chunk_path(cap)).unwrap().len());
    }
    meta.ended_us = Some(9);
    store.put_meta(&meta).unwrap();
    let path = store.chunk_path(cap);
    let whole = std::fs::read(&path).unwrap();
    // One byte of the second record's body flipped: checksum mismatch.
    let mut bad = whole.clone();
    bad[ends[0] as usize + chunk::HEADER + 2] ^= 0xff;
    std::fs::write(&path, &bad).unwrap();
    let reader = Store::open_existing(&dir).unwrap();
    let seqs: Vec<u64> = reader.events(cap).map(|e| e.unwrap().seq).collect();
    assert_eq!(seqs, [1, 3]);
    let d = reader.damage(cap).unwrap();
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!((d[0].from, d[0].to), (ends[0], ends[1]));
    // The file cut in the middle of its last record.
    std::fs::write(&path, &whole[..ends[2] as usize - 3]).unwrap();
    let seqs: Vec<u64> = reader.events(cap).map(|e| e.unwrap().seq).collect();
    assert_eq!(seqs, [1, 2]);
    let d = reader.damage(cap).unwrap();
    assert_eq!((d[0].from, d[0].to), (ends[1], ends[2] - 3), "{d:?}");
    // While the capture runs, a cut tail is the record being written: no damage.
    meta.ended_us = None;
    store.put_meta(&meta).unwrap();
    assert!(reader.damage(cap).unwrap().is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn connect_credentials_are_overwritten_in_place_unless_secrets_are_kept() {
    for keep in [false, true] {
        let mut b = WriteBatch::with_secrets(keep);
        // CONNECT 3.1.1, client id "c", username "u", password "hunter2", sent in
        // two reads: the password spans both.
        let mut connect = vec![0x10, 0];
        connect.extend_from_slice(&[0, 4, b'M', b'Q', b'T', b'T', 4, 0xc2, 0, 60]);
        connect.extend_from_slice(&[0, 1, b'c', 0, 1, b'u', 0, 7]);
        connect.extend_from_slice(b"hunter2");
        connect[1] = (connect.len() - 2) as u8;
        let (a, z) = connect.split_at(connect.len() - 3);
        for (seq, part) in [(1, a), (2, z)] {
            b.event(
                1,
                &Event {
                    time_us: seq,
                    seq: seq as u64,
                    conn: 3,
                    kind: EventKind::Data {
                        side: Side::Client,
                        bytes: Bytes::copy_from_slice(part),
                    },
                },
            );
        }
        let mut r = PacketRecord {
            conn: 3,
            side: "client".into(),
            chunk: 2,
            offset: 0,
            len: connect.len() as u64,
            packet_type: "CONNECT".into(),
            username: Some("u".into()),
            password: Some("hunter2".into()),
            ..PacketRecord::default()
        };
        b.packet(1, 2, 0, &r);
        let bytes: Vec<u8> = b.log.iter().flat_map(|e| e.body.to_vec()).collect();
        let pk = &b.pk[4..];
        let rec = chunk::decode_packet(Path::new("x"), "k", pk).unwrap();
        if keep {
            assert_eq!(bytes, connect);
            assert_eq!(rec, r);
        } else {
            let n = connect.len();
            // The user name "u" (before the password's 2-byte length) and the
            // password: each overwritten by as many '*'; the rest as sent.
            let mut want = connect.clone();
            want[n - 10] = b'*';
            want[n - 7..].copy_from_slice(b"*******");
            assert_eq!(connect[n - 10], b'u');
            assert_eq!(bytes, want);
            r.password = Some("*******".into());
            r.username = Some("*".into());
            assert_eq!(rec, r);
        }
    }
}
