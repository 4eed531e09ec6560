//! The XTS data path on VAES-512: four blocks per 512-bit register, four registers in
//! flight, the tweak XOR and the next tweaks (multiplication by α^4 per lane with a
//! carry-less multiply) kept in registers around the AES rounds. The portable path
//! computes a tweak array in memory, XORs it in, calls the block cipher and XORs again:
//! three passes over the data, which profiling showed costing twice the AES itself. No
//! crate offers XTS at this speed (`docs/design.md`), and the `aes` crate
//! does not expose its round keys, so the key schedule is expanded here as well.
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

const SBOX: [u8; 256] = {
    // The AES S-box, computed: multiplicative inverse in GF(2^8), then the affine map.
    let mut s = [0u8; 256];
    let mut x = 0;
    while x < 256 {
        let mut inv = 0u8;
        if x != 0 {
            let mut y = 1;
            while y < 256 {
                if gmul(x as u8, y as u8) == 1 {
                    inv = y as u8;
                    break;
                }
                y += 1;
            }
        }
        let b = inv;
        s[x] = b ^ b.rotate_left(1) ^ b.rotate_left(2) ^ b.rotate_left(3) ^ b.rotate_left(4) ^ 0x63;
        x += 1;
    }
    s
};

const fn gmul(mut a: u8, mut b: u8) -> u8 {
    let mut p = 0;
    while b != 0 {
        if b & 1 != 0 {
            p ^= a;
        }
        let hi = a & 0x80;
        a <<= 1;
        if hi != 0 {
            a ^= 0x1b;
        }
        b >>= 1;
    }
    p
}

/// FIPS-197 key expansion for a 16- or 32-byte key: (round keys, rounds).
fn expand(key: &[u8]) -> ([[u8; 16]; 15], usize) {
    let nk = key.len() / 4;
    let rounds = nk + 6;
    let mut w = [[0u8; 4]; 60];
    for (i, word) in key.chunks_exact(4).enumerate() {
        w[i].copy_from_slice(word);
    }
    let mut rcon = 1u8;
    for i in nk..4 * (rounds + 1) {
        let mut t = w[i - 1];
        if i % nk == 0 {
            t = [
                SBOX[t[1] as usize] ^ rcon,
                SBOX[t[2] as usize],
                SBOX[t[3] as usize],
                SBOX[t[0] as usize],
            ];
            rcon = gmul(rcon, 2);
        } else if nk > 6 && i % nk == 4 {
            t = t.map(|b| SBOX[b as usize]);
        }
        for j in 0..4 {
            w[i][j] = w[i - nk][j] ^ t[j];
        }
    }
    let mut rk = [[0u8; 16]; 15];
    for (r, k) in rk.iter_mut().enumerate().take(rounds + 1) {
        for j in 0..4 {
            k[4 * j..4 * j + 4].copy_from_slice(&w[4 * r + j]);
        }
    }
    w.zeroize();
    (rk, rounds)
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
        let (enc, rounds) = expand(k1);
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
        let mut first = [0u8; 64];
        let mut t = u128::from_le_bytes(*t0);
        for lane in first.chunks_exact_mut(16) {
            lane.copy_from_slice(&t.to_le_bytes());
            t = (t << 1) ^ ((t >> 127) * 0x87);
        }
        // SAFETY: 64-byte load from a 64-byte array.
        let mut tw = unsafe { _mm512_loadu_si512(first.as_ptr().cast()) };
        first.zeroize();
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
        let (rk, rounds) = expand(&key);
        assert_eq!(rounds, 10);
        assert_eq!(hex::encode(rk[10]), "d014f9a8c9ee2589e13f0cc8b6630ca6");
        // A.3, AES-256: the last round key.
        let key = hex::decode("603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4")
            .unwrap();
        let (rk, rounds) = expand(&key);
        assert_eq!(rounds, 14);
        assert_eq!(hex::encode(rk[14]), "fe4890d1e6188d0b046df344706c631e");
    }
}
