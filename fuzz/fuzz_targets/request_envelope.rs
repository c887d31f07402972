#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kuzzle_rt::fuzzing::request_envelope(data));
