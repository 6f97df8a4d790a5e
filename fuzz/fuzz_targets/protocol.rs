//! The protocol layer and rule engine on arbitrary topics and payloads: the envelope
//! reader against serde_json (a deviation it reports, such as trailing bytes, is
//! not a disagreement), then a whole session of such messages through the Analyzer.
//! Nothing may panic. The property is [`edgetap::fuzzcheck::protocol`], which
//! `cargo test` also runs over the seeds and saved corpus (tests/fuzz_seeds.rs).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| edgetap::fuzzcheck::protocol(input));
