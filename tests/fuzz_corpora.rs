//! Replays every saved fuzzing input (`fuzz/corpus/<target>/`) through the function its
//! fuzz target runs, on stable Rust: what the fuzzer once found stays fixed, and CI needs
//! no nightly. `fuzz/README.md` says how the corpora were grown.

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut inputs = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let outcome = std::panic::catch_unwind(|| run(&data));
        assert!(outcome.is_ok(), "{} failed", path.display());
        inputs += 1;
    }
    assert!(inputs > 0, "no corpus in {}", dir.display());
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
