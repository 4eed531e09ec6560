//! XTS-AES (IEEE 1619) for the data path, as dm-crypt's `aes-xts-plain64` uses it.
//!
//! Written here on the `aes` crate rather than taken from a crate or OpenSSL: measured on
//! this machine (`docs/design.md`), `xts-mode` runs one block at a time
//! (~1 GB/s) and OpenSSL 3.0's EVP pays a context reset per sector (~2.5 GB/s at 512-byte
//! sectors), while the block cipher itself (VAES) is several times faster. So the whole
//! request is processed in bulk: the tweak of every 16-byte block of every sector is
//! computed first (the sector's initial tweak is one AES call with the second key, then
//! doublings in GF(2^128)), XORed in, the entire buffer goes through one `encrypt_blocks`
//! call, and the tweaks are XORed again. That portable path needs no `unsafe`. On CPUs with
//! VAES-512 (and VPCLMULQDQ), `vaes.rs` does the same work fused in registers, four blocks
//! per register (measured 1.3–2× faster; `bench/RESULTS.md`); it is the one module of the
//! crate allowed `unsafe`, for the intrinsics.
//!
//! Tweaks: the initial tweak of a sector is its number as a 128-bit little-endian integer
//! ("plain64"), counted in 512-byte units even for 4096-byte sectors, as cryptsetup does
//! for LUKS2 (sector *i* of size 4096 at segment start has tweak 8*i).

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod vaes;

use aes::cipher::{Array, BlockCipherDecrypt, BlockCipherEncrypt, KeyInit};
use aes::{Aes128, Aes256};

/// Why a key cannot be used for XTS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum XtsKeyError {
    /// Not 32 (XTS-AES-128) or 64 (XTS-AES-256) bytes.
    #[error("an XTS key is 32 bytes (XTS-AES-128) or 64 bytes (XTS-AES-256), not {0}")]
    Length(usize),
    /// Both halves equal: IEEE 1619-2018 and FIPS forbid it, and OpenSSL refuses it.
    #[error("the two halves of the XTS key are equal, which XTS forbids")]
    EqualHalves,
}

// The variants differ in size (AES-256's schedule is larger); boxing them would put the
// round keys outside the `Xts`, which is exactly what must not happen.
#[allow(clippy::large_enum_variant)]
enum Ciphers {
    // Inline, not boxed: an `Xts` kept in locked, never-dumped pages (`secmem::Locked`)
    // must carry its round keys inside itself.
    Aes128((Aes128, Aes128)),
    Aes256((Aes256, Aes256)),
}

/// An XTS-AES key schedule (data key, tweak key). The `aes` crate zeroizes its round keys
/// on drop (feature `zeroize`).
pub struct Xts {
    ciphers: Ciphers,
    /// The fused VAES-512 path, when the CPU has it (and `ATREST_XTS` is not `portable`).
    #[cfg(target_arch = "x86_64")]
    vaes: Option<vaes::Vaes>,
}

impl std::fmt::Debug for Xts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let bits = match self.ciphers {
            Ciphers::Aes128(_) => 128,
            Ciphers::Aes256(_) => 256,
        };
        write!(f, "Xts(AES-{bits}, key redacted)")
    }
}

type Block = Array<u8, aes::cipher::consts::U16>;

/// Buffers at least this large are encrypted on all cores: below it, starting threads
/// costs more than it saves (a thread start is ~10 µs; 1 MiB takes ~150 µs on one core).
pub const PARALLEL_MIN: usize = 1 << 20;

/// Multiplies a tweak by α in GF(2^128), little-endian as IEEE 1619 defines it.
#[inline]
fn double(t: u128) -> u128 {
    (t << 1) ^ ((t >> 127) * 0x87)
}

/// `REDUCE8[h]` is h·x^128 reduced modulo x^128 + x^7 + x^2 + x + 1, for the 8 bits h that
/// a shift by 8 pushes out: the carry-less product of h and 0x87.
const REDUCE8: [u16; 256] = {
    let mut t = [0u16; 256];
    let mut h = 0;
    while h < 256 {
        let mut r = 0u16;
        let mut bit = 0;
        while bit < 8 {
            if h & (1 << bit) != 0 {
                r ^= 0x87 << bit;
            }
            bit += 1;
        }
        t[h] = r;
        h += 1;
    }
    t
};

/// Multiplies a tweak by α^8: eight doublings in one step, so the tweaks of a sector form
/// eight independent chains instead of one long dependency chain.
#[inline]
fn times_alpha8(t: u128) -> u128 {
    (t << 8) ^ u128::from(REDUCE8[(t >> 120) as usize])
}

/// The tweaks of one data unit's blocks, from its initial (encrypted) tweak.
#[multiversion::multiversion(targets("x86_64+avx512f+avx512bw+avx2", "x86_64+avx2"))]
fn sector_tweaks(t0: u128, out: &mut [[u8; 16]]) {
    let mut t = t0;
    for slot in out.iter_mut().take(8) {
        *slot = t.to_le_bytes();
        t = double(t);
    }
    for i in 8..out.len() {
        out[i] = times_alpha8(u128::from_le_bytes(out[i - 8])).to_le_bytes();
    }
}

impl Xts {
    /// A key schedule from `key` = data key ‖ tweak key (32 or 64 bytes).
    pub fn new(key: &[u8]) -> Result<Self, XtsKeyError> {
        let half = key.len() / 2;
        let (k1, k2) = key.split_at(half);
        if key.len() != 32 && key.len() != 64 {
            return Err(XtsKeyError::Length(key.len()));
        }
        // Compared in constant time: the halves are secret.
        if openssl::memcmp::eq(k1, k2) {
            return Err(XtsKeyError::EqualHalves);
        }
        let ciphers = if key.len() == 32 {
            let a = Aes128::new_from_slice(k1).map_err(|_| XtsKeyError::Length(key.len()))?;
            let b = Aes128::new_from_slice(k2).map_err(|_| XtsKeyError::Length(key.len()))?;
            Ciphers::Aes128((a, b))
        } else {
            let a = Aes256::new_from_slice(k1).map_err(|_| XtsKeyError::Length(key.len()))?;
            let b = Aes256::new_from_slice(k2).map_err(|_| XtsKeyError::Length(key.len()))?;
            Ciphers::Aes256((a, b))
        };
        Ok(Self {
            ciphers,
            // ATREST_XTS=portable forces the portable path, for side-by-side benchmarks.
            #[cfg(target_arch = "x86_64")]
            vaes: if std::env::var_os("ATREST_XTS").is_some_and(|v| v == "portable") {
                None
            } else {
                vaes::Vaes::new(k1)
            },
        })
    }

    /// Which data path runs: `vaes-512` or `portable`.
    pub fn engine(&self) -> &'static str {
        #[cfg(target_arch = "x86_64")]
        if self.vaes.is_some() {
            return "vaes-512";
        }
        "portable"
    }

    /// Key length in bytes (32 or 64).
    pub fn key_len(&self) -> usize {
        match self.ciphers {
            Ciphers::Aes128(_) => 32,
            Ciphers::Aes256(_) => 64,
        }
    }

    /// Encrypts `data`, a whole number of `sector_size`-byte sectors, in place. The first
    /// sector's tweak is `first` (in 512-byte units); each next sector adds sector_size/512.
    /// Buffers of [`PARALLEL_MIN`] bytes or more are shared among all cores.
    pub fn encrypt(&self, data: &mut [u8], sector_size: usize, first: u64) {
        self.run(data, sector_size, first, true)
    }

    /// Decrypts, as [`Xts::encrypt`] encrypts.
    pub fn decrypt(&self, data: &mut [u8], sector_size: usize, first: u64) {
        self.run(data, sector_size, first, false)
    }

    /// Encrypts on the calling thread only (for callers that parallelise themselves).
    pub fn encrypt_serial(&self, data: &mut [u8], sector_size: usize, first: u64) {
        self.process(data, sector_size, first, true)
    }

    /// Decrypts on the calling thread only.
    pub fn decrypt_serial(&self, data: &mut [u8], sector_size: usize, first: u64) {
        self.process(data, sector_size, first, false)
    }

    fn run(&self, data: &mut [u8], sector_size: usize, first: u64, encrypt: bool) {
        if data.len() < PARALLEL_MIN {
            return self.process(data, sector_size, first, encrypt);
        }
        // Asked once: std reads the cgroup's CPU quota from /sys on every call.
        static THREADS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
        let threads =
            *THREADS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        if threads < 2 {
            return self.process(data, sector_size, first, encrypt);
        }
        // Whole sectors per thread; each part starts at its own tweak.
        let sectors = data.len() / sector_size;
        let per = sectors.div_ceil(threads) * sector_size;
        let step = (sector_size / 512).max(1) as u64;
        std::thread::scope(|s| {
            for (i, part) in data.chunks_mut(per).enumerate() {
                let first = first + (i * per / sector_size) as u64 * step;
                s.spawn(move || self.process(part, sector_size, first, encrypt));
            }
        });
    }

    fn encrypt_tweak_blocks(&self, blocks: &mut [Block]) {
        match &self.ciphers {
            Ciphers::Aes128(c) => c.1.encrypt_blocks(blocks),
            Ciphers::Aes256(c) => c.1.encrypt_blocks(blocks),
        }
    }

    fn cipher_blocks(&self, blocks: &mut [Block], encrypt: bool) {
        match (&self.ciphers, encrypt) {
            (Ciphers::Aes128(c), true) => c.0.encrypt_blocks(blocks),
            (Ciphers::Aes128(c), false) => c.0.decrypt_blocks(blocks),
            (Ciphers::Aes256(c), true) => c.0.encrypt_blocks(blocks),
            (Ciphers::Aes256(c), false) => c.0.decrypt_blocks(blocks),
        }
    }

    fn process(&self, data: &mut [u8], sector_size: usize, first: u64, encrypt: bool) {
        assert!(
            sector_size >= 16
                && sector_size.is_multiple_of(16)
                && data.len().is_multiple_of(sector_size),
            "XTS over whole sectors of a multiple of 16 bytes"
        );
        // Every scratch area below is sized to the request and wiped once, at the end, by
        // a plain `memset` the compiler may not drop (`secmem::wipe`): a 4 KiB request
        // once paid for zeroing and wiping 16 KiB of tweaks byte by byte, plus a 16 KiB
        // stack wipe, ten times the cipher's own cost (`bench/RESULTS.md`, issue 25).
        #[cfg(target_arch = "x86_64")]
        if let Some(v) = self
            .vaes
            .as_ref()
            .filter(|_| sector_size.is_multiple_of(64))
        {
            self.process_vaes(v, data, sector_size, first, encrypt);
        } else {
            self.process_portable(data, sector_size, first, encrypt);
        }
        #[cfg(not(target_arch = "x86_64"))]
        self.process_portable(data, sector_size, first, encrypt);
        // The engines keep round keys in vector registers, which the compiler may spill
        // into their stack frames; those frames lay just below this one. `STACK_WIPE` is
        // several times their size (the VAES frame is under 2 KiB).
        secmem::wipe_stack_bytes::<STACK_WIPE>();
    }

    /// The initial tweaks of `n` sectors from `sector0` (in 512-byte units, `step` apart),
    /// encrypted with the tweak key in one batched call.
    fn initial_tweaks(&self, initial: &mut [Block], sector0: u64, step: u64) {
        for (s, b) in initial.iter_mut().enumerate() {
            *b = Block::from(u128::from(sector0 + s as u64 * step).to_le_bytes());
        }
        self.encrypt_tweak_blocks(initial);
    }

    #[cfg(target_arch = "x86_64")]
    fn process_vaes(
        &self,
        v: &vaes::Vaes,
        data: &mut [u8],
        sector_size: usize,
        first: u64,
        encrypt: bool,
    ) {
        let step = (sector_size / 512).max(1) as u64;
        let mut initial = [Block::default(); TWEAK_BATCH];
        let mut used = 0;
        for (c, chunk) in data.chunks_mut(TWEAK_BATCH * sector_size).enumerate() {
            let n = chunk.len() / sector_size;
            used = used.max(n);
            self.initial_tweaks(
                &mut initial[..n],
                first + (c * TWEAK_BATCH) as u64 * step,
                step,
            );
            v.process(
                chunk,
                sector_size,
                Block::cast_slice_to_core(&initial[..n]),
                encrypt,
            );
        }
        secmem::wipe(Block::slice_as_flattened_mut(&mut initial[..used]));
    }

    fn process_portable(&self, data: &mut [u8], sector_size: usize, first: u64, encrypt: bool) {
        let step = (sector_size / 512).max(1) as u64;
        let blocks_per_sector = sector_size / 16;
        // The data goes through in groups of about GROUP_BLOCKS blocks (16 KiB), rounded
        // to whole sectors, so tweaks, data and the AES pipeline all stay in L1.
        let group_sectors = (GROUP_BLOCKS / blocks_per_sector).max(1);
        let mut initial = [Block::default(); TWEAK_BATCH];
        // On the stack: a heap buffer here cost an allocation (and, in a hardened process,
        // two wiping passes) per request.
        let mut tweaks = [[0u8; 16]; GROUP_BLOCKS];
        debug_assert!(group_sectors * blocks_per_sector <= tweaks.len());
        let (mut used_initial, mut used_tweaks) = (0, 0);
        for (c, chunk) in data.chunks_mut(TWEAK_BATCH * sector_size).enumerate() {
            let n = chunk.len() / sector_size;
            used_initial = used_initial.max(n);
            self.initial_tweaks(
                &mut initial[..n],
                first + (c * TWEAK_BATCH) as u64 * step,
                step,
            );
            for (g, group) in chunk.chunks_mut(group_sectors * sector_size).enumerate() {
                let sectors = group.len() / sector_size;
                for s in 0..sectors {
                    let t0 = u128::from_le_bytes(initial[g * group_sectors + s].0);
                    sector_tweaks(
                        t0,
                        &mut tweaks[s * blocks_per_sector..(s + 1) * blocks_per_sector],
                    );
                }
                let count = sectors * blocks_per_sector;
                used_tweaks = used_tweaks.max(count);
                xor_tweaks(group, &tweaks[..count]);
                let (blocks, _) = Block::slice_as_chunks_mut(group);
                self.cipher_blocks(blocks, encrypt);
                xor_tweaks(group, &tweaks[..count]);
            }
        }
        secmem::wipe(tweaks[..used_tweaks].as_flattened_mut());
        secmem::wipe(Block::slice_as_flattened_mut(&mut initial[..used_initial]));
    }
}

/// Sectors whose initial tweaks are encrypted in one batched call.
const TWEAK_BATCH: usize = 128;

/// Blocks per AES call on the portable path (16 KiB).
const GROUP_BLOCKS: usize = 1024;

/// Stack wiped below `process` after each call (see there).
const STACK_WIPE: usize = 4096;

/// XORs each 16-byte block of `data` with its tweak; written over plain byte arrays so the
/// compiler turns it into vector instructions, compiled for AVX-512 and AVX2 as well as the
/// baseline and chosen at run time (`multiversion` does the detection, so no `unsafe` here).
#[multiversion::multiversion(targets("x86_64+avx512f+avx512bw+avx2", "x86_64+avx2"))]
fn xor_tweaks(data: &mut [u8], tweaks: &[[u8; 16]]) {
    let (blocks, _) = data.as_chunks_mut::<16>();
    for (block, t) in blocks.iter_mut().zip(tweaks) {
        for (b, x) in block.iter_mut().zip(t) {
            *b ^= x;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::symm::{Cipher, Crypter, Mode};

    fn openssl_xts(key: &[u8], data: &[u8], sector_size: usize, first: u64, mode: Mode) -> Vec<u8> {
        let cipher = if key.len() == 32 {
            Cipher::aes_128_xts()
        } else {
            Cipher::aes_256_xts()
        };
        let mut out = Vec::new();
        for (i, sector) in data.chunks(sector_size).enumerate() {
            let iv = ((first + (i * (sector_size / 512).max(1)) as u64) as u128).to_le_bytes();
            let mut c = Crypter::new(cipher, mode, key, Some(&iv)).unwrap();
            let mut buf = vec![0u8; sector.len() + 32];
            let n = c.update(sector, &mut buf).unwrap();
            let m = c.finalize(&mut buf[n..]).unwrap();
            out.extend_from_slice(&buf[..n + m]);
        }
        out
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    #[test]
    fn ieee_1619_vector_2_passes() {
        // IEEE P1619 Annex B, vector 2: 32-byte data unit, sequence number 0x3333333333.
        let key = [[0x11u8; 16], [0x22u8; 16]].concat();
        let mut data = [0x44u8; 32];
        let x = Xts::new(&key).unwrap();
        // A 32-byte data unit.
        x.process(&mut data, 32, 0x3333333333, true);
        assert_eq!(
            hex::encode(data),
            "c454185e6a16936e39334038acef838bfb186fff7480adc4289382ecd6d394f0"
        );
    }

    #[test]
    fn agrees_with_openssl_for_both_key_sizes_and_sector_sizes() {
        for key_len in [32, 64] {
            let key = pattern(key_len, 7);
            let x = Xts::new(&key).unwrap();
            for sector_size in [512, 4096] {
                let plain = pattern(sector_size * 40, 3);
                for first in [0u64, 8, 123_456_789_000] {
                    let mut data = plain.clone();
                    x.encrypt(&mut data, sector_size, first);
                    assert_eq!(
                        data,
                        openssl_xts(&key, &plain, sector_size, first, Mode::Encrypt),
                        "key {key_len} sector {sector_size} first {first}"
                    );
                    x.decrypt(&mut data, sector_size, first);
                    assert_eq!(data, plain);
                }
            }
        }
    }

    #[test]
    fn both_data_paths_agree_with_openssl_at_every_unit_size() {
        // The VAES path where the CPU has it, and the portable path always; units of 64
        // bytes (one register) to 4096. On a CPU with VAES-512 the fast path must be the
        // VAES one (a detection that silently fell back would test the portable path twice).
        #[cfg(target_arch = "x86_64")]
        {
            let has_vaes = is_x86_feature_detected!("aes")
                && is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("vaes")
                && is_x86_feature_detected!("vpclmulqdq");
            let forced = std::env::var_os("ATREST_XTS").is_some_and(|v| v == "portable");
            let engine = Xts::new(&pattern(32, 1)).unwrap().engine();
            if has_vaes && !forced {
                assert_eq!(engine, "vaes-512", "this CPU has VAES-512");
            } else {
                assert_eq!(engine, "portable");
            }
        }
        for key_len in [32, 64] {
            let key = pattern(key_len, 11);
            let fast = Xts::new(&key).unwrap();
            #[allow(unused_mut)]
            let mut portable = Xts::new(&key).unwrap();
            #[cfg(target_arch = "x86_64")]
            {
                portable.vaes = None;
            }
            assert_eq!(portable.engine(), "portable");
            for unit in [64, 128, 256, 320, 512, 1024, 4096] {
                let plain = pattern(unit * 37, 5);
                for first in [0u64, 1, 1 << 40] {
                    let want = openssl_xts(&key, &plain, unit, first, Mode::Encrypt);
                    for x in [&fast, &portable] {
                        let mut data = plain.clone();
                        x.process(&mut data, unit, first, true);
                        assert!(
                            data == want,
                            "{} key {key_len} unit {unit} first {first}",
                            x.engine()
                        );
                        x.process(&mut data, unit, first, false);
                        assert!(data == plain, "{} decrypt, unit {unit}", x.engine());
                    }
                }
            }
        }
    }

    #[test]
    fn large_buffers_cross_chunk_boundaries_correctly() {
        let key = pattern(32, 9);
        let x = Xts::new(&key).unwrap();
        let plain = pattern(300 * 1024, 1);
        let mut data = plain.clone();
        x.encrypt(&mut data, 512, 5);
        assert_eq!(data, openssl_xts(&key, &plain, 512, 5, Mode::Encrypt));
    }

    #[test]
    fn the_parallel_path_gives_the_serial_result() {
        let key = pattern(64, 5);
        let x = Xts::new(&key).unwrap();
        for sector_size in [512, 4096] {
            let plain = pattern(3 * PARALLEL_MIN + sector_size * 3, 2);
            let mut a = plain.clone();
            let mut b = plain.clone();
            x.encrypt(&mut a, sector_size, 77);
            x.encrypt_serial(&mut b, sector_size, 77);
            assert!(a == b);
            x.decrypt(&mut a, sector_size, 77);
            assert!(a == plain);
        }
    }

    #[test]
    fn times_alpha8_is_eight_doublings() {
        let mut t = 0x8123_4567_89ab_cdef_fedc_ba98_7654_3210u128;
        for _ in 0..1000 {
            let mut d = t;
            for _ in 0..8 {
                d = double(d);
            }
            assert_eq!(times_alpha8(t), d);
            t = t
                .wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835)
                .rotate_left(17);
        }
    }

    #[test]
    fn rejects_equal_halves_and_wrong_lengths() {
        assert_eq!(Xts::new(&[7u8; 32]).unwrap_err(), XtsKeyError::EqualHalves);
        assert_eq!(Xts::new(&[7u8; 64]).unwrap_err(), XtsKeyError::EqualHalves);
        assert_eq!(Xts::new(&[7u8; 16]).unwrap_err(), XtsKeyError::Length(16));
        assert!(!format!("{:?}", Xts::new(&pattern(32, 1)).unwrap()).contains("0x"));
    }
}
