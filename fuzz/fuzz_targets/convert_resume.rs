//! Resuming a conversion on a hostile device (header, conversion state, park record,
//! journal): errors, never panics, and nothing written on the strength of a record that
//! atrest did not tag under the key (the same bytes are also tried as a forged conversion
//! state in a real interrupted decryption, resumed with the right key).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    volume::fuzzing::convert_resume(data);
    volume::fuzzing::forged_state(data);
});
