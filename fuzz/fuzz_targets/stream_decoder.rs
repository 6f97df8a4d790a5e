//! The MQTT stream decoder on arbitrary bytes split at arbitrary points: it must not
//! panic, must make progress, and must give the same packets whatever the split.
//! The property is [`edgetap::fuzzcheck::stream_decoder`], which `cargo test` also
//! runs over the seeds and saved corpus (tests/fuzz_seeds.rs).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| edgetap::fuzzcheck::stream_decoder(input));
