//! TTLV decoder: never panics; what decodes re-encodes byte for byte, survives the XML form,
//! and reaches a fixed point in the typed message model.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| kmip::fuzzing::ttlv_roundtrip(data));
