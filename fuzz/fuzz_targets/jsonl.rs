#![no_main]
//! `cargo +nightly fuzz run jsonl`; the body is `gradus_fuzz::jsonl` (see src/lib.rs).

libfuzzer_sys::fuzz_target!(|data: &[u8]| gradus_fuzz::jsonl(data));
