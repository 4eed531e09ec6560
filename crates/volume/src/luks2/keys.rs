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
            extra: Default::default(),
        },
        area: Area {
            kind: "raw".into(),
            offset: area_offset,
            size: area_size(ks),
            encryption: "aes-xts-plain64".into(),
            key_size: ks as u32,
            extra: Default::default(),
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

/// Most memory an argon2 keyslot may ask for: cryptsetup's own ceiling (4 GiB), in KiB.
pub const MAX_ARGON2_MEMORY_KIB: u32 = 4 << 20;
/// Most argon2 passes and lanes accepted (cryptsetup benchmarks to a few passes, 4 lanes).
pub const MAX_ARGON2_TIME: u32 = 1 << 16;
/// Most argon2 lanes accepted.
pub const MAX_ARGON2_LANES: u32 = 64;

/// Which KDFs a keyslot may be opened with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kdfs {
    /// pbkdf2-sha256 only: what a KMIP secret opens (atrest's keyslots). An argon2 slot is
    /// skipped, not run: it is someone's passphrase, and each try would cost its memory and
    /// time at every unlock.
    Pbkdf2,
    /// argon2i and argon2id as well: an operator's passphrase at `atrest bind`.
    Any,
}

/// The area key of `slot` from `passphrase` by its KDF, if `kdfs` allows that KDF.
fn area_key(
    slot: &Keyslot,
    passphrase: &[u8],
    kdfs: Kdfs,
) -> Result<Zeroizing<Vec<u8>>, Luks2Error> {
    let unsupported = |value: String| Luks2Error::Unsupported {
        what: "keyslot KDF",
        value: crate::text::shown(&value).into_owned(),
    };
    let salt = base64("keyslot salt", &slot.kdf.salt)?;
    let len = slot.area.key_size as usize;
    match slot.kdf.kind.as_str() {
        "pbkdf2" if slot.kdf.hash.as_deref() == Some("sha256") => {
            pbkdf2(passphrase, &salt, slot.kdf.iterations.unwrap_or(0), len)
        }
        kind @ ("argon2i" | "argon2id") if kdfs == Kdfs::Any => {
            let num = |k: &str| {
                slot.kdf
                    .extra
                    .get(k)
                    .and_then(serde_json::Value::as_u64)
                    .and_then(|n| u32::try_from(n).ok())
            };
            let (Some(t), Some(m), Some(p)) = (num("time"), num("memory"), num("cpus")) else {
                return Err(Luks2Error::corrupt(
                    "keyslot argon2 parameters",
                    "(time, memory, cpus)",
                    "missing or not 32-bit numbers",
                ));
            };
            if t == 0
                || t > MAX_ARGON2_TIME
                || m > MAX_ARGON2_MEMORY_KIB
                || p == 0
                || p > MAX_ARGON2_LANES
            {
                return Err(Luks2Error::corrupt(
                    "keyslot argon2 parameters",
                    format!("time {t}, memory {m} KiB, {p} lanes"),
                    format!("outside what cryptsetup makes (memory up to {MAX_ARGON2_MEMORY_KIB} KiB, time up to {MAX_ARGON2_TIME}, up to {MAX_ARGON2_LANES} lanes)"),
                ));
            }
            let algorithm = if kind == "argon2id" {
                argon2::Algorithm::Argon2id
            } else {
                argon2::Algorithm::Argon2i
            };
            let params = argon2::Params::new(m, t, p, Some(len)).map_err(|e| {
                Luks2Error::corrupt("keyslot argon2 parameters", e, "refused by argon2")
            })?;
            let mut out = Zeroizing::new(vec![0u8; len]);
            argon2::Argon2::new(algorithm, argon2::Version::V0x13, params)
                .hash_password_into(passphrase, &salt, &mut out)
                .map_err(|e| Luks2Error::corrupt("keyslot argon2", e, "the KDF failed"))?;
            Ok(out)
        }
        kind => Err(unsupported(format!(
            "{kind} {} (atrest opens pbkdf2-sha256 keyslots{})",
            slot.kdf.hash.as_deref().unwrap_or(""),
            if kdfs == Kdfs::Any {
                " and argon2i/argon2id ones"
            } else {
                " with a KMIP secret"
            }
        ))),
    }
}

/// Opens `slot` with `passphrase`: the candidate volume key (check it with [`verify`]).
pub fn open_keyslot(
    dev: &dyn BlockBackend,
    slot: &Keyslot,
    passphrase: &[u8],
) -> Result<Zeroizing<Vec<u8>>, Luks2Error> {
    open_keyslot_with(dev, slot, passphrase, Kdfs::Pbkdf2)
}

/// [`open_keyslot`], with the KDFs `kdfs` allows.
pub fn open_keyslot_with(
    dev: &dyn BlockBackend,
    slot: &Keyslot,
    passphrase: &[u8],
    kdfs: Kdfs,
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
    if slot.area.encryption != "aes-xts-plain64" {
        return Err(unsupported("keyslot cipher", slot.area.encryption.clone()));
    }
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
    let area_key = area_key(slot, passphrase, kdfs)?;
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
