use super::*;
use crate::mqtt::encode;

/// `stream` fed to `s` in reads of `split` bytes: the bytes as stored, and what was
/// withheld.
fn run(mut s: Scrub, stream: &[u8], split: usize) -> (Vec<u8>, Vec<Withheld>) {
    let mut stored = vec![];
    let mut withheld = vec![];
    for read in stream.chunks(split) {
        let mut mask = vec![];
        s.feed(read, &mut mask, &mut withheld);
        let mut b = read.to_vec();
        let mut last = 0;
        for r in mask {
            assert!(
                r.start >= last && r.end <= b.len(),
                "masks in order, in the read"
            );
            last = r.end;
            b[r].fill(b'*');
        }
        stored.extend(b);
    }
    (stored, withheld)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The client stream stored, whole and one byte per read (the same both ways).
fn client(stream: &[u8]) -> (Vec<u8>, Vec<Withheld>) {
    let whole = run(Scrub::client(), stream, usize::MAX);
    for split in [1, 2, 7] {
        let (b, w) = run(Scrub::client(), stream, split);
        assert_eq!(b, whole.0, "split {split}");
        let n: u64 = w.iter().map(|w| w.bytes).sum();
        assert_eq!(
            n,
            whole.1.iter().map(|w| w.bytes).sum::<u64>(),
            "split {split}"
        );
    }
    whole
}

fn connect_v4(user: &[u8], pass: &[u8]) -> Vec<u8> {
    encode::connect_login("dev1", user, pass)
}

/// CONNECT 5 with `props` (the CONNECT properties), a will, user name and password.
fn connect_v5(props: &[u8], user: &[u8], pass: &[u8]) -> Vec<u8> {
    let mut body = b"\x00\x04MQTT\x05\xc6\x00\x3c".to_vec();
    body.extend(encode::varint(props.len()));
    body.extend(props);
    body.extend_from_slice(b"\x00\x04dev5");
    body.extend_from_slice(b"\x02\x01\x01"); // will properties: payload format 1
    body.extend_from_slice(b"\x00\x01t\x00\x02wp");
    body.extend((user.len() as u16).to_be_bytes());
    body.extend(user);
    body.extend((pass.len() as u16).to_be_bytes());
    body.extend(pass);
    frame(0x10, &body)
}

use encode::{frame, publish};

const USER: &[u8] = b"us\xff\xfeer";
const PASS: &[u8] = b"\x00\xffpw-s3cret\x80";

fn no_secret(stored: &[u8]) {
    assert!(!contains(stored, USER), "user name stored");
    assert!(!contains(stored, PASS), "password stored");
    assert!(!contains(stored, b"s3cret"), "password stored");
}

#[test]
fn binary_credentials_are_overwritten_and_the_framing_kept() {
    let mut stream = connect_v4(USER, PASS);
    let publish = publish(
        "/v1/dev1/device/data",
        br#"{"password-like":"x","a":"s3cre"}"#,
    );
    stream.extend(&publish);
    let (stored, withheld) = client(&stream);
    no_secret(&stored);
    assert!(withheld.is_empty(), "{withheld:?}");
    assert_eq!(stored.len(), stream.len());
    // Only the data: lengths and everything else as sent.
    let diff: Vec<usize> = (0..stream.len())
        .filter(|&i| stored[i] != stream[i])
        .collect();
    let star = |b: &[u8]| b.iter().filter(|&&x| x == b'*').count();
    assert_eq!(
        diff.len(),
        USER.len() + PASS.len() - star(USER) - star(PASS)
    );
    assert!(stored.ends_with(&publish));
}

#[test]
fn credentials_of_mqtt5_connect_and_auth_are_found_behind_their_properties() {
    let mut props = vec![0x11, 0, 0, 0, 10];
    props.extend_from_slice(b"\x26\x00\x01k\x00\x01v");
    props.extend_from_slice(b"\x15\x00\x05SCRAM");
    props.extend_from_slice(b"\x16\x00\x06AUTHDT");
    let mut stream = connect_v5(&props, USER, PASS);
    let mut auth = b"\x18".to_vec();
    let ap = b"\x15\x00\x05SCRAM\x16\x00\x06AUTHD2";
    auth.push(ap.len() as u8);
    auth.extend_from_slice(ap);
    stream.extend(frame(0xF0, &auth));
    stream.extend(frame(0xE0, &[])); // DISCONNECT
    let (stored, withheld) = client(&stream);
    no_secret(&stored);
    assert!(!contains(&stored, b"AUTHDT") && !contains(&stored, b"AUTHD2"));
    assert!(contains(&stored, b"SCRAM") && contains(&stored, b"dev5"));
    assert!(withheld.is_empty(), "{withheld:?}");
    // The server's AUTH too.
    let (stored, _) = run(Scrub::server(), &frame(0xF0, &auth), 1);
    assert!(!contains(&stored, b"AUTHD2") && contains(&stored, b"SCRAM"));
}

#[test]
fn a_connect_larger_than_any_buffer_is_walked_read_by_read() {
    // 5 MB of user properties before the credentials.
    let mut props = vec![];
    for _ in 0..80 {
        props.extend_from_slice(b"\x26\x00\x01k");
        props.extend_from_slice(&u16::MAX.to_be_bytes());
        props.extend(std::iter::repeat_n(b'v', u16::MAX as usize));
    }
    let stream = connect_v5(&props, USER, PASS);
    assert!(stream.len() > 5_000_000);
    let (stored, withheld) = run(Scrub::client(), &stream, 4096);
    no_secret(&stored);
    assert!(withheld.is_empty());
    let (stored, _) = run(Scrub::client(), &stream, 65536 + 3);
    no_secret(&stored);
}

#[test]
fn an_unknown_property_withholds_the_rest_of_the_connect_only() {
    let props = b"\x11\x00\x00\x00\x0a\x7f\x00\x01";
    let mut stream = connect_v5(props, USER, PASS);
    let rest_at = stream.len();
    let publish = publish("t", b"after");
    stream.extend(&publish);
    let (stored, withheld) = client(&stream);
    no_secret(&stored);
    assert!(stored.ends_with(&publish), "the next packet is stored");
    assert_eq!(withheld.len(), 1, "{withheld:?}");
    assert!(
        withheld[0].why.contains("unknown MQTT 5 property 0x7f"),
        "{withheld:?}"
    );
    let at = stream
        .windows(3)
        .position(|w| w == b"\x7f\x00\x01")
        .unwrap();
    assert_eq!(withheld[0].bytes, (rest_at - at - 1) as u64);
}

#[test]
fn the_connect_is_found_after_garbage_and_after_proxy_headers() {
    let connect = connect_v4(USER, PASS);
    for lead in [
        &b"\x00"[..],
        b"\x10",
        b"P",
        b"\r\n",
        b"GET / HTTP/1.1\r\n\r\n\x10\x10",
    ] {
        let mut stream = lead.to_vec();
        stream.extend(&connect);
        // Bytes before the CONNECT that may have begun one are stored as they are
        // when they come alone: the same CONNECT is stored however it is split.
        let whole = run(Scrub::client(), &stream, usize::MAX).0;
        for split in [1, 2, 7, usize::MAX] {
            let (stored, withheld) = run(Scrub::client(), &stream, split);
            no_secret(&stored);
            assert_eq!(
                stored[lead.len()..],
                whole[lead.len()..],
                "{lead:?} split {split}"
            );
            let n: u64 = withheld.iter().map(|w| w.bytes).sum();
            assert!(n <= lead.len() as u64, "{withheld:?}");
        }
        assert!(
            contains(&whole, b"dev1"),
            "the CONNECT is walked, not withheld"
        );
        let head = &connect[..8];
        assert_eq!(
            whole[lead.len()..lead.len() + 8],
            *head,
            "its header stored"
        );
    }
    let v1 = b"PROXY TCP4 10.0.0.1 10.0.0.2 40000 1883\r\n";
    let mut v2 = PROXY_V2.to_vec();
    v2.extend_from_slice(b"\x21\x11\x00\x0c");
    v2.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2, 0x9c, 0x40, 0x07, 0x5b]);
    for head in [&v1[..], &v2] {
        let mut stream = head.to_vec();
        stream.extend(&connect);
        let (stored, withheld) = client(&stream);
        no_secret(&stored);
        assert!(withheld.is_empty(), "{withheld:?}");
        assert_eq!(stored[..head.len()], *head);
    }
    // Never a CONNECT: all withheld.
    let junk = b"\x00\x01\x02 USER us\xff\xfeer PASS pw";
    let (stored, withheld) = client(junk);
    assert!(!contains(&stored, b"us\xff\xfeer"));
    assert!(withheld[0].why.contains("not an MQTT CONNECT"));
}

#[test]
fn payloads_and_other_packets_are_left_alone() {
    let mut stream = connect_v4(b"u", b"p");
    // A payload holding what looks like a CONNECT, and a second (refused) CONNECT.
    let p = publish("t", &connect_v4(b"x", b"y"));
    stream.extend(&p);
    let (stored, _) = client(&stream);
    assert!(stored.ends_with(&p));
    assert_eq!(
        stored[..stream.len() - p.len()]
            .iter()
            .filter(|&&b| b == b'*')
            .count(),
        2
    );
}
