//! LUKS2 metadata read by atrest and by stock cryptsetup (`luksDump`) on the same bytes:
//! the verdicts must agree (issue 26). Needs cryptsetup; slow (a process per input), so it
//! runs outside CI (`bench/RESULTS.md` has the runs).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| volume::fuzzing::luks2_vs_cryptsetup(data));
