//! The MQTT stream decoder on arbitrary bytes split at arbitrary points: it must not
//! panic, must make progress, and must give the same packets whatever the split.
#![no_main]

use edgetap::mqtt::{Decoded, Packet, StreamDecoder};
use libfuzzer_sys::fuzz_target;

fn decode(data: &[u8], split: usize) -> Vec<Decoded> {
    let mut d = StreamDecoder::new(1 << 16);
    let mut version = None;
    let mut out = vec![];
    for chunk in data.chunks(split.max(1)) {
        d.feed(chunk);
        while let Some(x) = d.next(version) {
            if let Decoded::Packet { packet: Packet::Connect(c), .. } = &x {
                version = Some(c.version);
            }
            out.push(x);
        }
    }
    out
}

fuzz_target!(|input: &[u8]| {
    if input.is_empty() {
        return;
    }
    let split = input[0] as usize % 17 + 1;
    let data = &input[1..];
    let whole = decode(data, data.len().max(1));
    let pieces = decode(data, split);
    // Until the stream loses sync, framing does not depend on how bytes arrive.
    // (After a broken fixed header, resynchronisation may decide on fewer bytes.)
    let synced = whole
        .iter()
        .all(|d| !matches!(d, Decoded::Malformed { len: 1, .. } | Decoded::Skipped { .. }));
    if synced {
        assert_eq!(whole, pieces);
    }
});
