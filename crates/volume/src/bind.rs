//! Enrolling a LUKS2 volume that atrest did not make (`atrest bind`), and the reverse
//! (`atrest unbind`). Bind opens the volume key with a passphrase the operator already has
//! (any keyslot of the data segment's digest: pbkdf2, argon2i or argon2id), adds a keyslot
//! that the KMIP secret opens and atrest's token naming the KMIP key, in one header commit;
//! every keyslot that was there stays, so the passphrase keeps working and cryptsetup keeps
//! reading the volume as before. Unbind removes that keyslot and the token, and refuses when
//! they are the only way in. No data is read or written by either.

use zeroize::Zeroizing;

use crate::convert::disk::{sync, zero};
use crate::convert::inspect::{read_layout, refuse_running};
use crate::convert::{ConvertError, Devices};
use crate::luks2::header;
use crate::luks2::keys::{self, Kdfs};
use crate::luks2::metadata::Metadata;
use crate::luks2::token::{self, KeyMode};
use crate::luks2::{Luks2Error, TOKEN_TYPE};
use crate::rewrap::{add_keyslot, atrest_keyslots, free_id};
use crate::volume::{volume_key, VolumeError};

/// What a bind added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bound {
    /// The keyslot the KMIP secret opens.
    pub keyslot: String,
    /// atrest's token.
    pub token: String,
    /// Bytes of the volume key (32: XTS-AES-128, 64: XTS-AES-256).
    pub key_len: usize,
}

/// What an unbind removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unbound {
    /// The KMIP key the token named.
    pub key_uid: String,
    /// The keyslots removed.
    pub keyslots: Vec<String>,
}

/// The volume key that `passphrase` opens in one of `digest`'s keyslots, by any KDF
/// cryptsetup writes. `None` when it opens none.
fn key_by_passphrase(
    dev: &dyn crate::backend::BlockBackend,
    m: &Metadata,
    digest: &str,
    passphrase: &[u8],
) -> Result<Option<Zeroizing<Vec<u8>>>, VolumeError> {
    let Some(d) = m.digests.get(digest) else {
        return Ok(None);
    };
    for id in &d.keyslots {
        let Some(slot) = m.keyslots.get(id) else {
            continue;
        };
        let candidate = match keys::open_keyslot_with(dev, slot, passphrase, Kdfs::Any) {
            Ok(c) => c,
            // A keyslot atrest cannot run is skipped, as cryptsetup skips one a
            // passphrase does not open.
            Err(Luks2Error::Unsupported { .. }) => continue,
            Err(e) => return Err(e.into()),
        };
        if keys::verify(d, &candidate)? {
            return Ok(Some(candidate));
        }
    }
    Ok(None)
}

/// The volume key, opened with the operator's passphrase: the proof [`bind`] needs, taken
/// before any key is made on the KMIP server (a wrong passphrase makes none).
pub struct Proven(Zeroizing<Vec<u8>>);

/// Checks that the volume on `d` can be bound (a LUKS2 volume atrest opens, not bound yet,
/// no conversion running) and that `passphrase` opens a keyslot of its data segment.
pub fn prove(d: Devices<'_>, passphrase: &[u8]) -> Result<Proven, ConvertError> {
    let (h, l) = read_layout(d)?;
    refuse_running(&l)?;
    if let Some(t) = &l.token {
        return Err(VolumeError::AlreadyBound {
            key_uid: crate::text::shown(&t.key_uid).into_owned(),
        }
        .into());
    }
    let vk = key_by_passphrase(d.header, &h.metadata, &l.digest, passphrase)?
        .ok_or(VolumeError::WrongPassphrase)?;
    Ok(Proven(vk))
}

/// Binds the volume on `d` to the KMIP key `key_uid` whose secret is `kmip_secret`, with
/// the volume key `proven` by the operator's passphrase. The header is committed once.
pub fn bind(
    d: Devices<'_>,
    proven: &Proven,
    kmip_secret: &[u8],
    key_uid: &str,
    server_hint: Option<&str>,
) -> Result<Bound, ConvertError> {
    let (mut h, l) = read_layout(d)?;
    refuse_running(&l)?;
    if l.token.is_some() {
        return Err(VolumeError::AlreadyBound {
            key_uid: "(bound meanwhile)".into(),
        }
        .into());
    }
    token::check_uid("key identifier", key_uid)?;
    let vk = &proven.0;
    let dg = h
        .metadata
        .digests
        .get(&l.digest)
        .ok_or(VolumeError::WrongPassphrase)?;
    if !keys::verify(dg, vk)? {
        return Err(VolumeError::WrongPassphrase.into());
    }
    let slot = add_keyslot(d.header, &mut h, &l, vk, kmip_secret)?;
    let m = &mut h.metadata;
    if let Some(dg) = m.digests.get_mut(&l.digest) {
        dg.keyslots.push(slot.clone());
    }
    let tid = free_id(
        m.tokens.keys().chain(
            m.opaque
                .keys()
                .filter(|(k, _)| *k == "tokens")
                .map(|(_, id)| id),
        ),
    );
    let mut t = token::new(key_uid, KeyMode::Wrapped, server_hint);
    t.keyslots = vec![slot.clone()];
    m.tokens.insert(tid.clone(), t);
    header::write(d.header, &mut h)?;
    // Proven from the disk: the KMIP secret opens what was committed.
    let (h, l) = read_layout(d)?;
    volume_key(d.header, &h.metadata, &l.digest, kmip_secret)?;
    Ok(Bound {
        keyslot: slot,
        token: tid,
        key_len: vk.len(),
    })
}

/// Removes atrest's token and the keyslots it names from the volume on `d`. Refused when no
/// other keyslot of the data segment would remain (the volume would have no way in), and
/// for a direct-mode volume (its KMIP key is the volume key: there is no keyslot to
/// remove). The areas of the removed keyslots are wiped after the commit.
pub fn unbind(d: Devices<'_>) -> Result<Unbound, ConvertError> {
    let (mut h, l) = read_layout(d)?;
    refuse_running(&l)?;
    let Some(t) = &l.token else {
        return Err(VolumeError::NoToken.into());
    };
    if t.key_mode == KeyMode::Direct {
        return Err(ConvertError::Refused(
            "a direct-mode volume: its KMIP key is the volume key, and there is no keyslot to remove; decrypt it, or keep it".into(),
        ));
    }
    let key_uid = t.key_uid.clone();
    let m = &mut h.metadata;
    let tid = m
        .tokens
        .iter()
        .find(|(_, t)| t.kind == TOKEN_TYPE)
        .map(|(id, _)| id.clone())
        .ok_or(VolumeError::NoToken)?;
    let (ours, left) = atrest_keyslots(m, &l.digest);
    if left.is_empty() {
        return Err(ConvertError::Refused(format!(
            "atrest's keyslot is the only way into this volume: unbinding would lock everyone out. Add a passphrase first, opening atrest's keyslot with the KMIP secret: `atrest kmip get --raw {} | cryptsetup luksAddKey --key-file - DEVICE NEW-KEY-FILE` (docs/operations.md)",
            crate::text::shown(&key_uid)
        )));
    }
    let areas: Vec<(u64, u64)> = ours
        .iter()
        .filter_map(|k| m.keyslots.remove(k))
        .map(|k| (k.area.offset, k.area.size))
        .collect();
    for dg in m.digests.values_mut() {
        dg.keyslots.retain(|k| !ours.contains(k));
    }
    for other in m.tokens.values_mut() {
        other.keyslots.retain(|k| !ours.contains(k));
    }
    m.tokens.remove(&tid);
    header::write(d.header, &mut h)?;
    for (at, len) in areas {
        zero(d.header, at, at + len)?;
    }
    sync(d.header)?;
    Ok(Unbound {
        key_uid,
        keyslots: ours,
    })
}
