//! The volume key's digest and the luks2 keyslot: how a key from KMIP is checked, and how
//! (in wrapped mode) it opens the keyslot holding the volume key.
//!
//! Iterations are the minimum cryptsetup accepts (1000): the "passphrase" is a 256-bit
//! random secret from the key manager, not something a person chose, so slowing a guesser
//! down buys nothing, and unlocking at start stays fast (systemd-cryptenroll reasons alike).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use zeroize::Zeroizing;

use super::af;
use super::metadata::{Af, Area, Digest, Kdf, Keyslot};
use super::Luks2Error;
use crate::backend::BlockBackend;
use crate::xts::Xts;

/// PBKDF2 iterations for the digest and keyslots.
pub const ITERATIONS: u32 = 1000;
/// AF stripes, as cryptsetup writes.
pub const STRIPES: usize = 4000;

fn pbkdf2(secret: &[u8], salt: &[u8], iterations: u32, len: usize) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(vec![0u8; len]);
    openssl::pkcs5::pbkdf2_hmac(
        secret,
        salt,
        iterations as usize,
        openssl::hash::MessageDigest::sha256(),
        &mut out,
    )
    .expect("PBKDF2 with valid parameters");
    out
}

fn random(n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    openssl::rand::rand_bytes(&mut b).expect("system random number generator");
    b
}

/// A pbkdf2 digest of `volume_key` for the given keyslots and segments.
pub fn make_digest(volume_key: &[u8], keyslots: Vec<String>, segments: Vec<String>) -> Digest {
    let salt = random(32);
    let d = pbkdf2(volume_key, &salt, ITERATIONS, 32);
    Digest {
        kind: "pbkdf2".into(),
        keyslots,
        segments,
        hash: "sha256".into(),
        iterations: ITERATIONS,
        salt: B64.encode(&salt),
        digest: B64.encode(d.as_slice()),
        extra: Default::default(),
    }
}

/// True when `volume_key` is the key `digest` was made from.
pub fn verify(digest: &Digest, volume_key: &[u8]) -> Result<bool, Luks2Error> {
    if digest.kind != "pbkdf2" || digest.hash != "sha256" {
        return Err(Luks2Error::Unsupported {
            what: "digest",
            value: format!("{} {}", digest.kind, digest.hash),
        });
    }
    let bad = |f: &'static str| Luks2Error::Corrupt {
        offset: 0,
        field: f,
        value: "not base64".into(),
    };
    let salt = B64.decode(&digest.salt).map_err(|_| bad("digest salt"))?;
    let want = B64
        .decode(&digest.digest)
        .map_err(|_| bad("digest value"))?;
    let got = pbkdf2(volume_key, &salt, digest.iterations, want.len());
    Ok(want.len() == got.len() && openssl::memcmp::eq(&want, &got))
}

/// Bytes of keyslot area a key of `key_len` bytes needs: the AF material rounded up to
/// whole 4096-byte blocks, as cryptsetup allocates it.
pub fn area_size(key_len: usize) -> u64 {
    ((key_len * STRIPES) as u64).div_ceil(4096) * 4096
}

/// Writes a keyslot holding `volume_key`, opened by `passphrase`, at `area_offset`.
pub fn make_keyslot(
    dev: &dyn BlockBackend,
    volume_key: &[u8],
    passphrase: &[u8],
    area_offset: u64,
) -> Result<Keyslot, Luks2Error> {
    let ks = volume_key.len();
    let salt = random(32);
    let area_key = pbkdf2(passphrase, &salt, ITERATIONS, ks);
    let xts = Xts::new(&area_key).map_err(|e| Luks2Error::Unsupported {
        what: "keyslot key",
        value: e.to_string(),
    })?;
    let mut material = af::split(volume_key, STRIPES);
    let padded = (material.len()).div_ceil(512) * 512;
    material.resize(padded, 0);
    xts.encrypt(&mut material, 512, 0);
    dev.write_at(&material, area_offset)
        .map_err(|source| Luks2Error::Io {
            offset: area_offset,
            source,
        })?;
    Ok(Keyslot {
        kind: "luks2".into(),
        key_size: ks as u32,
        af: Af {
            kind: "luks1".into(),
            stripes: STRIPES as u32,
            hash: "sha256".into(),
        },
        area: Area {
            kind: "raw".into(),
            offset: area_offset,
            size: area_size(ks),
            encryption: "aes-xts-plain64".into(),
            key_size: ks as u32,
        },
        kdf: Kdf {
            kind: "pbkdf2".into(),
            hash: Some("sha256".into()),
            iterations: Some(ITERATIONS),
            salt: B64.encode(&salt),
            extra: Default::default(),
        },
        extra: Default::default(),
    })
}

/// Opens `slot` with `passphrase`: the candidate volume key (check it with [`verify`]).
pub fn open_keyslot(
    dev: &dyn BlockBackend,
    slot: &Keyslot,
    passphrase: &[u8],
) -> Result<Zeroizing<Vec<u8>>, Luks2Error> {
    let unsupported = |what, value: String| Luks2Error::Unsupported { what, value };
    if slot.kind != "luks2" || slot.af.kind != "luks1" || slot.af.hash != "sha256" {
        return Err(unsupported(
            "keyslot",
            format!("{} / af {} {}", slot.kind, slot.af.kind, slot.af.hash),
        ));
    }
    if slot.kdf.kind != "pbkdf2" || slot.kdf.hash.as_deref() != Some("sha256") {
        return Err(unsupported(
            "keyslot KDF",
            format!("{} (atrest opens pbkdf2-sha256 keyslots)", slot.kdf.kind),
        ));
    }
    if slot.area.encryption != "aes-xts-plain64" {
        return Err(unsupported("keyslot cipher", slot.area.encryption.clone()));
    }
    let salt = B64
        .decode(&slot.kdf.salt)
        .map_err(|_| Luks2Error::Corrupt {
            offset: 0,
            field: "keyslot salt",
            value: "not base64".into(),
        })?;
    let ks = slot.key_size as usize;
    let stripes = slot.af.stripes as usize;
    if !(1..=4096).contains(&stripes) || !(16..=128).contains(&ks) {
        return Err(Luks2Error::Corrupt {
            offset: slot.area.offset,
            field: "keyslot geometry",
            value: format!("{ks} bytes × {stripes} stripes"),
        });
    }
    let area_key = pbkdf2(
        passphrase,
        &salt,
        slot.kdf.iterations.unwrap_or(ITERATIONS),
        slot.area.key_size as usize,
    );
    let xts = Xts::new(&area_key).map_err(|e| unsupported("keyslot key", e.to_string()))?;
    let len = (ks * stripes).div_ceil(512) * 512;
    if len as u64 > slot.area.size {
        return Err(Luks2Error::Corrupt {
            offset: slot.area.offset,
            field: "keyslot area size",
            value: slot.area.size.to_string(),
        });
    }
    let mut material = Zeroizing::new(vec![0u8; len]);
    dev.read_at(&mut material, slot.area.offset)
        .map_err(|source| Luks2Error::Io {
            offset: slot.area.offset,
            source,
        })?;
    xts.decrypt(&mut material, 512, 0);
    Ok(af::merge(&material, ks, stripes))
}
