//! LUKS2 metadata behind a valid checksum: hostile JSON (geometry, keyslots, digests,
//! sizes) is an error, never a panic, and never unlocks with a wrong key.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| volume::fuzzing::luks2_json(data));
