//! The XTS data path on VAES-512: four blocks per 512-bit register, four registers in
//! flight, the tweak XOR and the next tweaks (multiplication by α^4 per lane with a
//! carry-less multiply) kept in registers around the AES rounds. The portable path
//! computes a tweak array in memory, XORs it in, calls the block cipher and XORs again:
//! three passes over the data, which profiling showed costing twice the AES itself. No
//! crate offers XTS at this speed (`docs/design.md`), and the `aes` crate
//! does not expose its round keys, so the key schedule is expanded here as well, with
//! `aeskeygenassist` (no table indexed by key bytes).
//!
//! All `unsafe` here is calling functions compiled with `#[target_feature]`, and unaligned
//! loads and stores within slices whose lengths are checked first. [`Vaes::new`] returns
//! `None` unless the CPU has every feature those functions use, and it is the only way to
//! get a [`Vaes`]; that is what makes the calls sound.

use core::arch::x86_64::*;

use zeroize::Zeroize;

/// Expanded data-key schedules for encryption and decryption; zeroized on drop.
pub struct Vaes {
    enc: [[u8; 16]; 15],
    dec: [[u8; 16]; 15],
    rounds: usize,
}

impl Drop for Vaes {
    fn drop(&mut self) {
        self.enc.zeroize();
        self.dec.zeroize();
    }
}

/// One step of the AES-128 schedule, and the even steps of AES-256: `prev` XOR its own
/// prefix XORs (w[i] = w[i-4] ^ ... as a running XOR across the four words), then the
/// broadcast word `t` from `aeskeygenassist`.
#[target_feature(enable = "aes,sse2")]
fn schedule_step(prev: __m128i, t: __m128i) -> __m128i {
    let mut k = prev;
    k = _mm_xor_si128(k, _mm_slli_si128::<4>(k));
    k = _mm_xor_si128(k, _mm_slli_si128::<4>(k));
    k = _mm_xor_si128(k, _mm_slli_si128::<4>(k));
    _mm_xor_si128(k, t)
}

fn store(k: __m128i) -> [u8; 16] {
    let mut out = [0u8; 16];
    // SAFETY: 16-byte unaligned store into a 16-byte array; SSE2 is baseline on x86_64.
    unsafe { _mm_storeu_si128(out.as_mut_ptr().cast(), k) };
    out
}

/// FIPS-197 key expansion for a 16- or 32-byte key with the AES instructions: (round
/// keys, rounds). `aeskeygenassist` computes SubWord/RotWord in the AES unit, so no table
/// is indexed by key bytes (a table lookup's cache footprint depends on the key: the
/// S-box expansion this replaces was a cache-timing leak on a CPU that has AES-NI anyway).
#[target_feature(enable = "aes,sse2")]
fn expand(key: &[u8]) -> ([[u8; 16]; 15], usize) {
    // The round constant of `aeskeygenassist` is an immediate, hence the macro.
    macro_rules! assist {
        ($k:expr, $rcon:literal, $lane:literal) => {
            _mm_shuffle_epi32::<$lane>(_mm_aeskeygenassist_si128::<$rcon>($k))
        };
    }
    let mut rk = [[0u8; 16]; 15];
    // SAFETY: unaligned 16-byte loads within `key`, whose length is matched below.
    let load = |at: usize| unsafe { _mm_loadu_si128(key[at..at + 16].as_ptr().cast()) };
    match key.len() {
        16 => {
            let mut k = load(0);
            rk[0] = store(k);
            macro_rules! round {
                ($i:literal, $rcon:literal) => {
                    k = schedule_step(k, assist!(k, $rcon, 0xff));
                    rk[$i] = store(k);
                };
            }
            round!(1, 0x01);
            round!(2, 0x02);
            round!(3, 0x04);
            round!(4, 0x08);
            round!(5, 0x10);
            round!(6, 0x20);
            round!(7, 0x40);
            round!(8, 0x80);
            round!(9, 0x1b);
            round!(10, 0x36);
            (rk, 10)
        }
        32 => {
            let (mut a, mut b) = (load(0), load(16));
            rk[0] = store(a);
            rk[1] = store(b);
            macro_rules! pair {
                ($i:literal, $rcon:literal) => {
                    a = schedule_step(a, assist!(b, $rcon, 0xff));
                    rk[$i] = store(a);
                    // The odd words of AES-256 take SubWord without RotWord or rcon.
                    b = schedule_step(b, assist!(a, 0x00, 0xaa));
                    rk[$i + 1] = store(b);
                };
            }
            pair!(2, 0x01);
            pair!(4, 0x02);
            pair!(6, 0x04);
            pair!(8, 0x08);
            pair!(10, 0x10);
            pair!(12, 0x20);
            a = schedule_step(a, assist!(b, 0x40, 0xff));
            rk[14] = store(a);
            (rk, 14)
        }
        _ => (rk, 0),
    }
}

impl Vaes {
    /// The schedules for data key `k1` (16 or 32 bytes), if this CPU has AES-NI, AVX-512F and BW,
    /// VAES and VPCLMULQDQ; `None` otherwise (the portable path is used).
    pub fn new(k1: &[u8]) -> Option<Self> {
        let ok = is_x86_feature_detected!("aes")
            && is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("vaes")
            && is_x86_feature_detected!("vpclmulqdq");
        if !ok || !(k1.len() == 16 || k1.len() == 32) {
            return None;
        }
        // SAFETY: AES-NI is present (checked above); SSE2 is baseline on x86_64.
        let (enc, rounds) = unsafe { expand(k1) };
        let mut dec = [[0u8; 16]; 15];
        dec[0] = enc[rounds];
        dec[rounds] = enc[0];
        for i in 1..rounds {
            // SAFETY: AES-NI is present (checked above).
            dec[i] = unsafe { inv_mix_columns(enc[rounds - i]) };
        }
        Some(Self { enc, dec, rounds })
    }

    /// Encrypts or decrypts `data`, whole units of `unit` bytes (a multiple of 64), unit
    /// *i* starting from the already encrypted initial tweak `initial[i]`.
    pub fn process(&self, data: &mut [u8], unit: usize, initial: &[[u8; 16]], encrypt: bool) {
        assert!(
            unit.is_multiple_of(64)
                && data.len().is_multiple_of(unit)
                && data.len() / unit <= initial.len()
        );
        // SAFETY: a Vaes exists only if the CPU has every feature `units` is compiled for
        // (see `new`), and the lengths were checked just above.
        unsafe { units(self, data, unit, initial, encrypt) }
    }
}

/// How far ahead of the block being encrypted the data is prefetched.
const PREFETCH: usize = 2048;

#[target_feature(enable = "aes")]
fn inv_mix_columns(k: [u8; 16]) -> [u8; 16] {
    let mut out = [0u8; 16];
    // SAFETY: 16-byte unaligned load and store from and to 16-byte arrays.
    unsafe {
        let v = _mm_aesimc_si128(_mm_loadu_si128(k.as_ptr().cast()));
        _mm_storeu_si128(out.as_mut_ptr().cast(), v);
    }
    out
}

/// Multiplies each 128-bit lane (a tweak) by α^4: shift left by 4 across the lane, and
/// fold the 4 bits pushed out back in as their carry-less product with 0x87.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,vpclmulqdq")]
fn times_alpha4(t: __m512i, poly: __m512i) -> __m512i {
    let shifted = _mm512_slli_epi64::<4>(t);
    let out = _mm512_srli_epi64::<60>(t);
    let carry_in = _mm512_bslli_epi128::<8>(out);
    let carry_out = _mm512_bsrli_epi128::<8>(out);
    let reduced = _mm512_clmulepi64_epi128::<0x00>(carry_out, poly);
    _mm512_xor_si512(_mm512_xor_si512(shifted, carry_in), reduced)
}

#[inline]
#[target_feature(enable = "avx512f,vaes")]
fn rounds4(x: &mut [__m512i; 4], rk: &[__m512i; 15], rounds: usize, encrypt: bool) {
    for v in x.iter_mut() {
        *v = _mm512_xor_si512(*v, rk[0]);
    }
    for k in &rk[1..rounds] {
        for v in x.iter_mut() {
            *v = if encrypt {
                _mm512_aesenc_epi128(*v, *k)
            } else {
                _mm512_aesdec_epi128(*v, *k)
            };
        }
    }
    for v in x.iter_mut() {
        *v = if encrypt {
            _mm512_aesenclast_epi128(*v, rk[rounds])
        } else {
            _mm512_aesdeclast_epi128(*v, rk[rounds])
        };
    }
}

#[target_feature(enable = "aes,avx512f,avx512bw,vaes,vpclmulqdq")]
unsafe fn units(keys: &Vaes, data: &mut [u8], unit: usize, initial: &[[u8; 16]], encrypt: bool) {
    let schedule = if encrypt { &keys.enc } else { &keys.dec };
    let mut rk = [_mm512_setzero_si512(); 15];
    for (r, k) in rk.iter_mut().zip(schedule.iter()).take(keys.rounds + 1) {
        // SAFETY: 16-byte load from a 16-byte array.
        *r = _mm512_broadcast_i32x4(unsafe { _mm_loadu_si128(k.as_ptr().cast()) });
    }
    let poly = _mm512_set1_epi64(0x87);
    for (sector, t0) in data.chunks_exact_mut(unit).zip(initial) {
        // The first four tweaks (t0·α^0..3) in one register; each later register is the
        // one before times α^4.
        // Built in registers, not through a stack array that would then need wiping.
        let d = |t: u128| (t << 1) ^ ((t >> 127) * 0x87);
        let t0 = u128::from_le_bytes(*t0);
        let (t1, t2, t3) = (d(t0), d(d(t0)), d(d(d(t0))));
        let half = |t: u128, high: bool| (if high { t >> 64 } else { t }) as u64 as i64;
        let mut tw = _mm512_set_epi64(
            half(t3, true),
            half(t3, false),
            half(t2, true),
            half(t2, false),
            half(t1, true),
            half(t1, false),
            half(t0, true),
            half(t0, false),
        );
        let mut groups = sector.chunks_exact_mut(256);
        for g in groups.by_ref() {
            let p = g.as_mut_ptr();
            // Hardware prefetch alone left large buffers at ~60 % of memory speed; a hint
            // never faults, whatever the address.
            for line in 0..4 {
                _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(PREFETCH + 64 * line).cast());
            }
            let mut tws = [tw; 4];
            for i in 1..4 {
                tws[i] = times_alpha4(tws[i - 1], poly);
            }
            tw = times_alpha4(tws[3], poly);
            let mut x = [_mm512_setzero_si512(); 4];
            for i in 0..4 {
                // SAFETY: g is 256 bytes; register i covers bytes 64i..64i+64.
                x[i] =
                    _mm512_xor_si512(unsafe { _mm512_loadu_si512(p.add(64 * i).cast()) }, tws[i]);
            }
            rounds4(&mut x, &rk, keys.rounds, encrypt);
            for i in 0..4 {
                // SAFETY: as for the load.
                unsafe {
                    _mm512_storeu_si512(p.add(64 * i).cast(), _mm512_xor_si512(x[i], tws[i]))
                };
            }
        }
        for g in groups.into_remainder().chunks_exact_mut(64) {
            let p = g.as_mut_ptr();
            // SAFETY: g is 64 bytes.
            let mut x = [
                _mm512_xor_si512(unsafe { _mm512_loadu_si512(p.cast()) }, tw),
                _mm512_setzero_si512(),
                _mm512_setzero_si512(),
                _mm512_setzero_si512(),
            ];
            rounds4(&mut x, &rk, keys.rounds, encrypt);
            // SAFETY: g is 64 bytes.
            unsafe { _mm512_storeu_si512(p.cast(), _mm512_xor_si512(x[0], tw)) };
            tw = times_alpha4(tw, poly);
        }
    }
    // The broadcast round keys on the stack: plain stores to a dead local would be
    // optimised away, volatile ones are not.
    for k in rk.iter_mut() {
        // SAFETY: `k` is a valid, aligned, exclusive reference to a local.
        unsafe { core::ptr::write_volatile(k, _mm512_setzero_si512()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_expansion_matches_fips_197() {
        // FIPS-197 Appendix A.1: the last round key of 2b7e1516 28aed2a6 abf71588 09cf4f3c.
        let key = hex::decode("2b7e151628aed2a6abf7158809cf4f3c").unwrap();
        if !is_x86_feature_detected!("aes") {
            eprintln!(
                "no AES-NI on this CPU: the VAES path (and its key expansion) never runs here"
            );
            return;
        }
        // SAFETY: AES-NI is present (checked just above).
        let (rk, rounds) = unsafe { expand(&key) };
        assert_eq!(rounds, 10);
        assert_eq!(hex::encode(rk[1]), "a0fafe1788542cb123a339392a6c7605");
        assert_eq!(hex::encode(rk[10]), "d014f9a8c9ee2589e13f0cc8b6630ca6");
        // A.3, AES-256: the last round key.
        let key = hex::decode("603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4")
            .unwrap();
        // SAFETY: as above.
        let (rk, rounds) = unsafe { expand(&key) };
        assert_eq!(rounds, 14);
        assert_eq!(hex::encode(rk[2]), "9ba354118e6925afa51a8b5f2067fcde");
        assert_eq!(hex::encode(rk[3]), "a8b09c1a93d194cdbe49846eb75d5b9a");
        assert_eq!(hex::encode(rk[14]), "fe4890d1e6188d0b046df344706c631e");
    }
}
