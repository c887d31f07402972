//! Replays every saved fuzzing input (`fuzz/corpus/<target>/`, and the crash inputs kept in
//! `fuzz/regressions/<target>/`) through the function its fuzz target runs, on stable Rust
//! and on test threads, whose 2 MiB stacks are those of the node's workers: what the
//! fuzzer once found stays fixed, and CI needs no nightly. `fuzz/README.md` says how the
//! corpora were grown.

use std::path::{Path, PathBuf};

fn inputs(folder: &str, target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join(folder)
        .join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    entries
        .map(|entry| {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            (path, data)
        })
        .collect()
}

fn replay(target: &str, run: fn(&[u8])) {
    let corpus = inputs("corpus", target);
    assert!(!corpus.is_empty(), "no corpus for {target}");
    for (path, data) in corpus.iter().chain(&inputs("regressions", target)) {
        let outcome = std::panic::catch_unwind(|| run(data));
        assert!(outcome.is_ok(), "{} failed", path.display());
    }
}

/// The inputs that once crashed are refused with the documented message.
#[test]
fn crash_inputs_are_refused() {
    for (path, data) in inputs("regressions", "configuration") {
        let text = String::from_utf8_lossy(&data);
        let error = kuzzle_rt::config::parse_kuzzlerc(&text)
            .unwrap_err()
            .to_string();
        assert!(
            error.ends_with("objects and arrays nested deeper than 32 levels"),
            "{}: {error}",
            path.display()
        );
    }
    for (path, data) in inputs("regressions", "realtime_filter") {
        let filter: serde_json::Value = serde_json::from_slice(&data).unwrap();
        let error = kuzzle_rt::realtime::filter::Filter::compile(&filter, 100)
            .err()
            .unwrap_or_else(|| panic!("{} compiled", path.display()));
        assert!(
            error.contains("cannot parse regexp expression"),
            "{}: {error}",
            path.display()
        );
    }
}

#[test]
fn websocket_frames() {
    replay("websocket_frames", kuzzle_rt::fuzzing::websocket_frames);
}

#[test]
fn request_envelope() {
    replay("request_envelope", kuzzle_rt::fuzzing::request_envelope);
}

#[test]
fn realtime_filter() {
    replay("realtime_filter", kuzzle_rt::fuzzing::realtime_filter);
}

#[test]
fn http_body() {
    replay("http_body", kuzzle_rt::fuzzing::http_body);
}

#[test]
fn configuration() {
    replay("configuration", kuzzle_rt::fuzzing::configuration);
}
