//! Resuming a conversion on a hostile device (header, conversion state, park record,
//! journal): errors, never panics.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| volume::fuzzing::convert_resume(data));
