//! The protocol layer and rule engine on arbitrary topics and payloads: parse the
//! topic and the envelope, then run a whole session of such messages through the
//! Analyzer. Nothing may panic.
#![no_main]

use std::sync::{Arc, OnceLock};

use edgetap::finding::Side;
use edgetap::pipeline::{Analyzer, Settings, Sink};
use edgetap::rules::RuleSet;
use libfuzzer_sys::fuzz_target;

struct Nothing;
impl Sink for Nothing {}

fn publish(topic: &[u8], payload: &[u8]) -> Vec<u8> {
    let body = 2 + topic.len() + payload.len();
    let mut v = vec![0x30];
    let mut x = body;
    loop {
        let mut b = (x % 128) as u8;
        x /= 128;
        if x > 0 {
            b |= 0x80;
        }
        v.push(b);
        if x == 0 {
            break;
        }
    }
    v.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    v.extend_from_slice(topic);
    v.extend_from_slice(payload);
    v
}

static RULES: OnceLock<Arc<RuleSet>> = OnceLock::new();

fuzz_target!(|input: &[u8]| {
    let rules = RULES.get_or_init(|| Arc::new(RuleSet::builtin())).clone();
    let mut a = Analyzer::new(rules, Settings::default());
    a.open(1, None, None, false);
    // Records: topic and payload separated by 0xff, records separated by 0xfe.
    for (i, rec) in input.split(|b| *b == 0xfe).enumerate() {
        let (topic, payload) = match rec.iter().position(|b| *b == 0xff) {
            Some(p) => (&rec[..p], &rec[p + 1..]),
            None => (&b"/v1/E1/device/request"[..], rec),
        };
        if topic.len() > 1000 {
            continue;
        }
        // Differential: the tape reads what serde_json's own tree reads.
        let tape = edgetap::protocol::parse_envelope(bytes::Bytes::copy_from_slice(payload));
        let tree = serde_json::from_slice::<serde_json::Value>(payload);
        match (&tape, &tree) {
            (Ok(e), Ok(v)) if e.deviations.is_empty() => assert_eq!(&e.root().to_serde(), v),
            (Ok(_), Err(_)) => panic!("tape accepted what serde_json refused"),
            (Err(edgetap::protocol::PayloadError::InvalidJson(_)), Ok(_)) => {
                panic!("tape refused what serde_json accepted")
            }
            _ => {}
        }
        let side = if i % 2 == 0 { Side::Client } else { Side::Server };
        a.data(1, side, i as i64 * 1_000_000, i as u64, &publish(topic, payload), &mut Nothing);
    }
    a.finish(&mut Nothing);
});
