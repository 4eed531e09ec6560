//! LUKS2 header parser: damaged, truncated or hostile images (JSON included) are errors,
//! never panics.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| volume::fuzzing::luks2_header(data));
