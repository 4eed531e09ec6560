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
/// Fewest PBKDF2 iterations accepted in a header: cryptsetup's own minimum, so no genuine
/// header has fewer (and 0 is no KDF at all).
pub const MIN_ITERATIONS: u32 = 1000;
/// Most PBKDF2 iterations accepted: cryptsetup's 2-second benchmark gives 2–8 million on
/// current CPUs; a hostile header asking for 4 billion would hold an unlock for hours.
pub const MAX_ITERATIONS: u32 = 1 << 24;
/// Length of a pbkdf2-sha256 digest (the HMAC size, as cryptsetup stores it).
pub const DIGEST_LEN: usize = 32;
/// Salt lengths accepted (cryptsetup writes 32 bytes).
pub const SALT_LENS: std::ops::RangeInclusive<usize> = 16..=64;

fn pbkdf2(
    secret: &[u8],
    salt: &[u8],
    iterations: u32,
    len: usize,
) -> Result<Zeroizing<Vec<u8>>, Luks2Error> {
    // Checked again here, not only in `validate`: OpenSSL takes an int and panics the
    // crate on zero, so nothing unchecked may reach it whatever the caller did.
    if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&iterations) {
        return Err(Luks2Error::corrupt(
            "pbkdf2 iterations",
            iterations,
            format!("outside {MIN_ITERATIONS} to {MAX_ITERATIONS}"),
        ));
    }
    let mut out = Zeroizing::new(vec![0u8; len]);
    openssl::pkcs5::pbkdf2_hmac(
        secret,
        salt,
        iterations as usize,
        openssl::hash::MessageDigest::sha256(),
        &mut out,
    )
    .map_err(|e| Luks2Error::corrupt("pbkdf2 parameters", iterations, e))?;
    Ok(out)
}

fn random(n: usize) -> Result<Vec<u8>, Luks2Error> {
    let mut b = vec![0u8; n];
    crate::random::fill(&mut b)?;
    Ok(b)
}

fn base64(field: &str, value: &str) -> Result<Vec<u8>, Luks2Error> {
    B64.decode(value)
        .map_err(|_| Luks2Error::corrupt(field, value, "not base64"))
}

/// A pbkdf2 digest of `volume_key` for the given keyslots and segments.
pub fn make_digest(
    volume_key: &[u8],
    keyslots: Vec<String>,
    segments: Vec<String>,
) -> Result<Digest, Luks2Error> {
    let salt = random(32)?;
    let d = pbkdf2(volume_key, &salt, ITERATIONS, DIGEST_LEN)?;
    Ok(Digest {
        kind: "pbkdf2".into(),
        keyslots,
        segments,
        hash: "sha256".into(),
        iterations: ITERATIONS,
        salt: B64.encode(&salt),
        digest: B64.encode(d.as_slice()),
        extra: Default::default(),
    })
}

/// True when `volume_key` is the key `digest` was made from. A digest that could verify
/// more than one key (an empty or short value) is an error, never a match.
pub fn verify(digest: &Digest, volume_key: &[u8]) -> Result<bool, Luks2Error> {
    if digest.kind != "pbkdf2" || digest.hash != "sha256" {
        return Err(Luks2Error::Unsupported {
            what: "digest",
            value: crate::text::shown(&format!("{} {}", digest.kind, digest.hash)).into_owned(),
        });
    }
    let salt = base64("digest salt", &digest.salt)?;
    let want = base64("digest value", &digest.digest)?;
    if want.len() != DIGEST_LEN {
        return Err(Luks2Error::corrupt(
            "digest value",
            format!("{} bytes", want.len()),
            format!("a pbkdf2-sha256 digest is {DIGEST_LEN} bytes; a shorter one would accept wrong keys"),
        ));
    }
    if !SALT_LENS.contains(&salt.len()) {
        return Err(Luks2Error::corrupt(
            "digest salt",
            format!("{} bytes", salt.len()),
            "outside 16 to 64 bytes",
        ));
    }
    let got = pbkdf2(volume_key, &salt, digest.iterations, want.len())?;
    Ok(openssl::memcmp::eq(&want, &got))
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
    let salt = random(32)?;
    let area_key = pbkdf2(passphrase, &salt, ITERATIONS, ks)?;
    let xts = Xts::new(&area_key).map_err(|e| Luks2Error::Unsupported {
        what: "keyslot key",
        value: e.to_string(),
    })?;
    let mut material = af::split(volume_key, STRIPES)?;
    let padded = (material.len()).div_ceil(512) * 512;
    material.resize(padded, 0);
    xts.encrypt(&mut material, 512, 0);
    // The whole area is written, not only the stripes: whatever it held before (the
    // plaintext of a device being encrypted in place) must not survive in its tail.
    material.resize(area_size(ks) as usize, 0);
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
    let unsupported = |what, value: String| Luks2Error::Unsupported {
        what,
        value: crate::text::shown(&value).into_owned(),
    };
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
    let salt = base64("keyslot salt", &slot.kdf.salt)?;
    let ks = slot.key_size as usize;
    let stripes = slot.af.stripes as usize;
    if !(1..=STRIPES).contains(&stripes)
        || ![32, 64].contains(&ks)
        || ![32, 64].contains(&slot.area.key_size)
    {
        return Err(Luks2Error::corrupt(
            "keyslot geometry",
            format!(
                "{ks}-byte key, {stripes} stripes, {}-byte area key",
                slot.area.key_size
            ),
            "atrest opens 32- or 64-byte keys in at most 4000 stripes",
        ));
    }
    let area_key = pbkdf2(
        passphrase,
        &salt,
        slot.kdf.iterations.unwrap_or(0),
        slot.area.key_size as usize,
    )?;
    let xts = Xts::new(&area_key).map_err(|e| unsupported("keyslot key", e.to_string()))?;
    let len = (ks * stripes).div_ceil(512) * 512;
    if len as u64 > slot.area.size {
        return Err(Luks2Error::corrupt(
            "keyslot area size",
            slot.area.size,
            format!("smaller than the {len} bytes of its key material"),
        ));
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
