//! The properties the fuzz targets check (`fuzz/fuzz_targets/*.rs` call these), in
//! the library so that an ordinary `cargo test` runs them over every seed and saved
//! corpus input (`tests/fuzz_seeds.rs`): a change that breaks a property, or makes a
//! check stale, fails the build, not only a fuzzing run nobody starts.
//!
//! Each function panics when its property does not hold; nothing else may panic.

use std::io::Cursor;
use std::sync::{Arc, OnceLock};

use crate::analyze::feed;
use crate::capture::{CaptureOptions, CaptureReader};
use crate::finding::Side;
use crate::mqtt::{Decoded, Packet, StreamDecoder};
use crate::pipeline::{Analyzer, At, Input, Settings, Sink};
use crate::protocol::{Deviation, PayloadError};
use crate::rules::RuleSet;

struct Quiet;
impl Sink for Quiet {}

fn rules() -> Arc<RuleSet> {
    static RULES: OnceLock<Arc<RuleSet>> = OnceLock::new();
    RULES.get_or_init(|| Arc::new(RuleSet::builtin())).clone()
}

/// `stream_decoder`: the MQTT stream decoder on `input[1..]` split every
/// `input[0] % 17 + 1` bytes must not panic, and until the stream loses sync it must
/// give the same packets as when fed at once. (An oversized PUBLISH names its topic
/// when the bytes read so far hold it, by design: that one field may depend on the
/// split, and is compared only when both name it.)
pub fn stream_decoder(input: &[u8]) {
    fn decode(data: &[u8], split: usize) -> Vec<Decoded> {
        let mut d = StreamDecoder::new(1 << 16);
        let mut version = None;
        let mut out = vec![];
        for chunk in data.chunks(split.max(1)) {
            d.feed(chunk);
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
    let Some((first, data)) = input.split_first() else {
        return;
    };
    let split = *first as usize % 17 + 1;
    let mut whole = decode(data, data.len().max(1));
    let mut pieces = decode(data, split);
    for (w, p) in whole.iter_mut().zip(pieces.iter_mut()) {
        if let (Decoded::Oversized { topic: tw, .. }, Decoded::Oversized { topic: tp, .. }) = (w, p)
        {
            if tw.is_none() || tp.is_none() {
                (*tw, *tp) = (None, None);
            }
        }
    }
    // (After a broken fixed header, resynchronisation may decide on fewer bytes.)
    let synced = whole.iter().all(|d| {
        !matches!(
            d,
            Decoded::Malformed { len: 1, .. } | Decoded::Skipped { .. }
        )
    });
    if synced {
        assert_eq!(whole, pieces);
    }
}

/// A PUBLISH (QoS 0) of `payload` on `topic`, as bytes.
fn publish(topic: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut v = vec![0x30];
    let mut x = 2 + topic.len() + payload.len();
    loop {
        let b = (x % 128) as u8;
        x /= 128;
        v.push(if x > 0 { b | 0x80 } else { b });
        if x == 0 {
            break;
        }
    }
    v.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    v.extend_from_slice(topic);
    v.extend_from_slice(payload);
    v
}

/// The JSON text of `payload` without what the tolerant reading drops around it (a
/// byte order mark before, NULs and other control characters after), written here
/// from the deviations' definition, not with the reader's own code.
fn without_tolerated_edges(payload: &[u8]) -> &[u8] {
    let p = payload.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(payload);
    let end = p
        .iter()
        .rposition(|b| !(*b < 0x20 || b.is_ascii_whitespace()))
        .map_or(0, |i| i + 1);
    &p[..end]
}

/// The envelope reader against serde_json on one payload. They agree, except where
/// the envelope reader reports a deviation: a byte order mark or trailing bytes
/// (`payload.trailing_bytes`) are read on purpose, and then what it read must be
/// what serde_json reads of the JSON text alone.
pub fn envelope_against_serde_json(payload: &[u8]) {
    if let Ok(text) = std::str::from_utf8(payload) {
        crate::protocol::json::check_fast_path(text);
    }
    let tape = crate::protocol::parse_envelope(bytes::Bytes::copy_from_slice(payload));
    let tree = serde_json::from_slice::<serde_json::Value>(payload);
    match (&tape, &tree) {
        (Ok(e), Ok(v)) if e.deviations.is_empty() => assert_eq!(&e.root().to_serde(), v),
        (Ok(e), Err(refused)) => {
            let edges = e
                .deviations
                .iter()
                .any(|d| matches!(d, Deviation::Bom | Deviation::TrailingBytes { .. }));
            assert!(
                edges,
                "tape accepted what serde_json refused ({refused}) and reported no \
                 deviation that explains it: {:?}",
                e.deviations
            );
            let text = without_tolerated_edges(payload);
            let v = serde_json::from_slice::<serde_json::Value>(text).unwrap_or_else(|e| {
                panic!("tape read a JSON text that serde_json refuses without its edges: {e}")
            });
            let only_edges = e
                .deviations
                .iter()
                .all(|d| matches!(d, Deviation::Bom | Deviation::TrailingBytes { .. }));
            if only_edges {
                assert_eq!(e.root().to_serde(), v);
            }
        }
        (Err(PayloadError::InvalidJson(_)), Ok(_)) => {
            panic!("tape refused what serde_json accepted")
        }
        _ => {}
    }
}

/// `protocol`: records of topic and payload (separated by 0xff; records by 0xfe)
/// through the envelope reader (checked against serde_json) and a whole `Analyzer`
/// session, rule engine included. Nothing may panic.
pub fn protocol(input: &[u8]) {
    let mut a = Analyzer::new(rules(), Settings::default());
    let open = Input::Open {
        client: None,
        server: None,
        midstream: false,
    };
    a.push(At::new(1, 0, 0), open, &mut Quiet);
    for (i, rec) in input.split(|b| *b == 0xfe).enumerate() {
        let (topic, payload) = match rec.iter().position(|b| *b == 0xff) {
            Some(p) => (&rec[..p], &rec[p + 1..]),
            None => (&b"/v1/E1/device/request"[..], rec),
        };
        if topic.len() > 1000 {
            continue;
        }
        envelope_against_serde_json(payload);
        let side = if i % 2 == 0 {
            Side::Client
        } else {
            Side::Server
        };
        let bytes = publish(topic, payload);
        let at = At::new(1, i as i64 * 1_000_000, i as u64);
        a.push(
            at,
            Input::Data {
                side,
                bytes: &bytes,
            },
            &mut Quiet,
        );
    }
    a.finish(&mut Quiet);
}

fn pcap_header(link: u32) -> Vec<u8> {
    let mut h = vec![];
    h.extend_from_slice(&0xA1B2_C3D4u32.to_le_bytes());
    h.extend_from_slice(&2u16.to_le_bytes());
    h.extend_from_slice(&4u16.to_le_bytes());
    h.extend_from_slice(&[0; 8]);
    h.extend_from_slice(&65535u32.to_le_bytes());
    h.extend_from_slice(&link.to_le_bytes());
    h
}

fn pcapng_block(kind: u32, body: &[u8]) -> Vec<u8> {
    let len = (12 + body.len()) as u32;
    let mut b = kind.to_le_bytes().to_vec();
    b.extend_from_slice(&len.to_le_bytes());
    b.extend_from_slice(body);
    b.extend_from_slice(&len.to_le_bytes());
    b
}

fn pcapng_head() -> Vec<u8> {
    let mut shb = 0x1A2B_3C4Du32.to_le_bytes().to_vec();
    shb.extend_from_slice(&[1, 0, 0, 0]);
    shb.extend_from_slice(&(-1i64).to_le_bytes());
    let mut idb = 1u16.to_le_bytes().to_vec();
    idb.extend_from_slice(&[0, 0]);
    idb.extend_from_slice(&65535u32.to_le_bytes());
    let mut file = pcapng_block(0x0A0D_0D0A, &shb);
    file.extend(pcapng_block(1, &idb));
    file
}

/// The capture file `input` stands for: its first byte chooses what comes before
/// the rest (0 nothing: the rest is a whole file, e.g. a seed capture; 1 a pcap
/// header, Ethernet; 2 a pcapng section header and Ethernet interface; 3 a pcap
/// header, raw IP). Arbitrary bytes rarely start with a magic number; this way the
/// record and block framing is reached at once.
fn file_of(input: &[u8]) -> Vec<u8> {
    let (mode, rest) = input.split_first().unwrap_or((&0, &[]));
    let mut file = match mode % 4 {
        0 => vec![],
        1 => pcap_header(1),
        2 => pcapng_head(),
        _ => pcap_header(101),
    };
    file.extend_from_slice(rest);
    file
}

/// `capture`: the capture reader on arbitrary bytes, through TCP reassembly and the
/// whole pipeline. It must not panic, must account for no more bytes than it was
/// given, and must name file, frame and byte offset when it stops early.
pub fn capture(input: &[u8]) {
    let file = file_of(input);
    let len = file.len() as u64;
    let opts = CaptureOptions {
        ports: vec![1883],
        // Small, so that giving up holes is reached too.
        max_reorder_bytes: 4096,
    };
    let Ok(mut reader) = CaptureReader::from_reader(Cursor::new(file), "fuzz".into(), opts) else {
        return;
    };
    let mut analyzer = Analyzer::new(
        rules(),
        Settings {
            max_packet: 1 << 16,
        },
    );
    let stats = reader
        .run(&mut |ev| feed(&mut analyzer, 0, ev, &mut Quiet))
        .expect("an in-memory capture has no I/O error");
    analyzer.finish(&mut Quiet);
    assert!(stats.bytes <= len, "read {} of {len} bytes", stats.bytes);
    if let Some(stop) = &stats.stopped {
        assert!(stop.offset <= len);
        let place = format!(
            "fuzz: frame {} at byte offset {}: ",
            stop.frame, stop.offset
        );
        assert!(stop.message.starts_with(&place), "{}", stop.message);
    }
    assert_eq!(stats.truncated, stats.stopped.is_some());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The stale check of issue 21: trailing bytes after the JSON text, which the
    /// envelope reader reads on purpose and reports, panicked as a disagreement.
    #[test]
    fn trailing_bytes_and_a_bom_are_deviations_not_disagreements() {
        envelope_against_serde_json(b"{\"mid\":1,\"type\":\"CMD_X\"}\x00");
        envelope_against_serde_json(b"{\"mid\":1}\n\x01\x02 ");
        envelope_against_serde_json(b"\xEF\xBB\xBF{\"mid\":1}");
        envelope_against_serde_json(b"[1,2]\x00\x00");
        // Still checked: a payload neither reads (garbage after the JSON) is fine,
        // and plain agreement is compared value for value.
        envelope_against_serde_json(b"{\"mid\":1}x");
        envelope_against_serde_json(b"{\"a\":[1,2.5,\"x\",null,true]}");
        assert_eq!(without_tolerated_edges(b"\xEF\xBB\xBF{}\x00\n\x07"), b"{}");
        assert_eq!(without_tolerated_edges(b"\x00"), b"");
    }
}
