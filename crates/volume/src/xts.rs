//! XTS-AES (IEEE 1619) for the data path, as dm-crypt's `aes-xts-plain64` uses it.
//!
//! Written here on the `aes` crate rather than taken from a crate or OpenSSL: measured on
//! this machine (`../shared/notes/rust-crates.md`), `xts-mode` runs one block at a time
//! (~1 GB/s) and OpenSSL 3.0's EVP pays a context reset per sector (~2.5 GB/s at 512-byte
//! sectors), while the block cipher itself (VAES) is several times faster. So the whole
//! request is processed in bulk: the tweak of every 16-byte block of every sector is
//! computed first (the sector's initial tweak is one AES call with the second key, then
//! doublings in GF(2^128)), XORed in, the entire buffer goes through one `encrypt_blocks`
//! call, and the tweaks are XORed again. 512-byte sectors are then as fast as 4096-byte
//! ones, and no `unsafe` is needed.
//!
//! Tweaks: the initial tweak of a sector is its number as a 128-bit little-endian integer
//! ("plain64"), counted in 512-byte units even for 4096-byte sectors, as cryptsetup does
//! for LUKS2 (sector *i* of size 4096 at segment start has tweak 8*i).

use aes::cipher::{Array, BlockCipherDecrypt, BlockCipherEncrypt, KeyInit};
use aes::{Aes128, Aes256};
use zeroize::Zeroize;

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

enum Ciphers {
    Aes128(Box<(Aes128, Aes128)>),
    Aes256(Box<(Aes256, Aes256)>),
}

/// An XTS-AES key schedule (data key, tweak key). The `aes` crate zeroizes its round keys
/// on drop (feature `zeroize`).
pub struct Xts {
    ciphers: Ciphers,
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

/// Multiplies a tweak by α in GF(2^128), little-endian as IEEE 1619 defines it.
#[inline]
fn double(t: u128) -> u128 {
    (t << 1) ^ ((t >> 127) * 0x87)
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
            Ciphers::Aes128(Box::new((a, b)))
        } else {
            let a = Aes256::new_from_slice(k1).map_err(|_| XtsKeyError::Length(key.len()))?;
            let b = Aes256::new_from_slice(k2).map_err(|_| XtsKeyError::Length(key.len()))?;
            Ciphers::Aes256(Box::new((a, b)))
        };
        Ok(Self { ciphers })
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
    pub fn encrypt(&self, data: &mut [u8], sector_size: usize, first: u64) {
        self.process(data, sector_size, first, true)
    }

    /// Decrypts, as [`Xts::encrypt`] encrypts.
    pub fn decrypt(&self, data: &mut [u8], sector_size: usize, first: u64) {
        self.process(data, sector_size, first, false)
    }

    fn tweak(&self, n: u64) -> u128 {
        let mut b = Block::from((n as u128).to_le_bytes());
        match &self.ciphers {
            Ciphers::Aes128(c) => c.1.encrypt_block(&mut b),
            Ciphers::Aes256(c) => c.1.encrypt_block(&mut b),
        }
        u128::from_le_bytes(b.into())
    }

    fn process(&self, data: &mut [u8], sector_size: usize, first: u64, encrypt: bool) {
        assert!(
            sector_size >= 16
                && sector_size.is_multiple_of(16)
                && data.len().is_multiple_of(sector_size),
            "XTS over whole sectors of a multiple of 16 bytes"
        );
        let step = (sector_size / 512).max(1) as u64;
        // Chunks of at most 64 KiB keep the tweak buffer in L1/L2 while giving the AES
        // backend long runs of blocks.
        const CHUNK: usize = 64 * 1024;
        let per_chunk = (CHUNK / sector_size).max(1) * sector_size;
        let mut tweaks: Vec<u128> = Vec::with_capacity(per_chunk / 16);
        for (c, chunk) in data.chunks_mut(per_chunk).enumerate() {
            let sector0 = first + (c * per_chunk / sector_size) as u64 * step;
            tweaks.clear();
            for s in 0..chunk.len() / sector_size {
                let mut t = self.tweak(sector0 + s as u64 * step);
                for _ in 0..sector_size / 16 {
                    tweaks.push(t);
                    t = double(t);
                }
            }
            xor_tweaks(chunk, &tweaks);
            let (blocks, rest) = Block::slice_as_chunks_mut(chunk);
            debug_assert!(rest.is_empty());
            match (&self.ciphers, encrypt) {
                (Ciphers::Aes128(c), true) => c.0.encrypt_blocks(blocks),
                (Ciphers::Aes128(c), false) => c.0.decrypt_blocks(blocks),
                (Ciphers::Aes256(c), true) => c.0.encrypt_blocks(blocks),
                (Ciphers::Aes256(c), false) => c.0.decrypt_blocks(blocks),
            }
            xor_tweaks(chunk, &tweaks);
        }
        tweaks.zeroize();
    }
}

fn xor_tweaks(data: &mut [u8], tweaks: &[u128]) {
    for (block, t) in data.chunks_exact_mut(16).zip(tweaks) {
        let v = u128::from_le_bytes(block.try_into().unwrap_or([0; 16])) ^ t;
        block.copy_from_slice(&v.to_le_bytes());
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
            let iv = ((first + (i * sector_size / 512) as u64) as u128).to_le_bytes();
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
        // A 32-byte "sector": process via the block path directly.
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
    fn large_buffers_cross_chunk_boundaries_correctly() {
        let key = pattern(32, 9);
        let x = Xts::new(&key).unwrap();
        let plain = pattern(300 * 1024, 1);
        let mut data = plain.clone();
        x.encrypt(&mut data, 512, 5);
        assert_eq!(data, openssl_xts(&key, &plain, 512, 5, Mode::Encrypt));
    }

    #[test]
    fn rejects_equal_halves_and_wrong_lengths() {
        assert_eq!(Xts::new(&[7u8; 32]).unwrap_err(), XtsKeyError::EqualHalves);
        assert_eq!(Xts::new(&[7u8; 64]).unwrap_err(), XtsKeyError::EqualHalves);
        assert_eq!(Xts::new(&[7u8; 16]).unwrap_err(), XtsKeyError::Length(16));
        assert!(!format!("{:?}", Xts::new(&pattern(32, 1)).unwrap()).contains("0x"));
    }
}
