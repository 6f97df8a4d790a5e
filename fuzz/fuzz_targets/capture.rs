//! The capture reader on arbitrary bytes, through TCP reassembly and the whole
//! pipeline (MQTT decoding, protocol parsing, rule engine). It must not panic, must
//! account for every byte it says it read, and must name the place of any stop. The
//! first input byte chooses what comes before the rest (see
//! [`edgetap::fuzzcheck::capture`], which `cargo test` also runs over the seeds and
//! saved corpus: tests/fuzz_seeds.rs).
#![no_main]

use libfuzzer_sys::fuzz_target;

/// AddressSanitizer keeps freed memory in a quarantine of 256 MiB by default, which
/// counts in the process's RSS: with `-rss_limit_mb=128` the run would stop on the
/// quarantine (every run frees the 1 MiB read buffer), not on a real leak or a buffer
/// sized from a header. 16 MiB still catches a use after free of a recent allocation.
#[no_mangle]
pub extern "C" fn __asan_default_options() -> *const std::ffi::c_char {
    c"quarantine_size_mb=16".as_ptr()
}

fuzz_target!(|input: &[u8]| edgetap::fuzzcheck::capture(input));
