//! A whole NBD session (handshake, then requests) from a hostile client against in-memory
//! exports: no panic, bounded buffers, only well-formed replies (see nbd::fuzzing).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    nbd::fuzzing::session(data);
});
