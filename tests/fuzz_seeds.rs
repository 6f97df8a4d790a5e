//! Every fuzz target's property over its seeds (`fuzz/seeds/TARGET/`) and, where a
//! fuzzing run left one, its saved corpus (`fuzz/corpus/TARGET/`) and crash
//! artifacts (`fuzz/artifacts/TARGET/`): an ordinary test, so that a change that
//! breaks a target's property (or makes its check stale) fails the build.

use std::path::{Path, PathBuf};

fn inputs(target: &str) -> Vec<PathBuf> {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut files = vec![];
    for dir in ["seeds", "corpus", "artifacts"] {
        let Ok(entries) = std::fs::read_dir(fuzz.join(dir).join(target)) else {
            continue;
        };
        files.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_file()));
    }
    files.sort();
    files
}

/// Runs `check` over every input of `target`; a panic names the input.
fn over_inputs(target: &str, check: fn(&[u8])) {
    let files = inputs(target);
    assert!(!files.is_empty(), "fuzz/seeds/{target}/ has no seed");
    for f in files {
        let data = std::fs::read(&f).unwrap();
        let r = std::panic::catch_unwind(|| check(&data));
        assert!(r.is_ok(), "fuzz target {target} fails on {}", f.display());
    }
}

#[test]
fn fuzz_target_stream_decoder_holds_on_its_seeds_and_corpus() {
    over_inputs("stream_decoder", edgetap::fuzzcheck::stream_decoder);
}

#[test]
fn fuzz_target_protocol_holds_on_its_seeds_and_corpus() {
    over_inputs("protocol", edgetap::fuzzcheck::protocol);
}

#[test]
fn fuzz_target_capture_holds_on_its_seeds_and_corpus() {
    over_inputs("capture", edgetap::fuzzcheck::capture);
}
