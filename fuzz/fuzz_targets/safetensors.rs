#![no_main]
//! `cargo +nightly fuzz run safetensors`; the body is `gradus_fuzz::safetensors` (see src/lib.rs).

libfuzzer_sys::fuzz_target!(|data: &[u8]| gradus_fuzz::safetensors(data));
