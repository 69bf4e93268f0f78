#![no_main]
//! `cargo +nightly fuzz run config`; the body is `gradus_fuzz::config` (see src/lib.rs).

libfuzzer_sys::fuzz_target!(|data: &[u8]| gradus_fuzz::config(data));
