//! The capture reader on arbitrary bytes, through TCP reassembly and the whole
//! pipeline (MQTT decoding, protocol parsing, rule engine). It must not panic, must
//! account for every byte it says it read, and must name the place of any stop.
//!
//! The first input byte chooses what comes before the rest: 0 nothing (the rest is a
//! whole file, e.g. a seed capture), 1 a pcap header (Ethernet), 2 a pcapng section
//! header and Ethernet interface, 3 a pcap header (raw IP). Arbitrary bytes rarely
//! start with a magic number; this way the record and block framing is reached at once.
#![no_main]

use std::io::Cursor;
use std::sync::{Arc, OnceLock};

use edgetap::analyze::feed;
use edgetap::capture::{CaptureOptions, CaptureReader};
use edgetap::pipeline::{Analyzer, Settings, Sink};
use edgetap::rules::RuleSet;
use libfuzzer_sys::fuzz_target;

struct Quiet;
impl Sink for Quiet {}

/// AddressSanitizer keeps freed memory in a quarantine of 256 MiB by default, which
/// counts in the process's RSS: with `-rss_limit_mb=128` the run would stop on the
/// quarantine (every run frees the 1 MiB read buffer), not on a real leak or a buffer
/// sized from a header. 16 MiB still catches a use after free of a recent allocation.
#[no_mangle]
pub extern "C" fn __asan_default_options() -> *const std::ffi::c_char {
    c"quarantine_size_mb=16".as_ptr()
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

/// The file the input stands for.
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

fuzz_target!(|input: &[u8]| {
    let file = file_of(input);
    let len = file.len() as u64;
    let opts = CaptureOptions {
        ports: vec![1883],
        // Small, so that giving up holes is reached too.
        max_reorder_bytes: 4096,
    };
    let Ok(mut reader) = CaptureReader::from_reader(Cursor::new(file), "fuzz".into(), opts)
    else {
        return;
    };
    static RULES: OnceLock<Arc<RuleSet>> = OnceLock::new();
    let rules = RULES.get_or_init(|| Arc::new(RuleSet::builtin())).clone();
    let mut analyzer = Analyzer::new(rules, Settings { max_packet: 1 << 16 });
    let stats = reader
        .run(&mut |ev| feed(&mut analyzer, 0, ev, &mut Quiet))
        .expect("an in-memory capture has no I/O error");
    analyzer.finish(&mut Quiet);
    assert!(stats.bytes <= len, "read {} of {len} bytes", stats.bytes);
    if let Some(stop) = &stats.stopped {
        assert!(stop.offset <= len);
        assert!(
            stop.message
                .starts_with(&format!("fuzz: frame {} at byte offset {}: ", stop.frame, stop.offset)),
            "{}",
            stop.message
        );
    }
    assert_eq!(stats.truncated, stats.stopped.is_some());
});
