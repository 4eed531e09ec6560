//! OASIS XML reader: never panics; what reads survives TTLV encoding unchanged.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| kmip::fuzzing::xml_read(data));
