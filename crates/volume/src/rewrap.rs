//! Keyslot operations on a volume in use: placing a new keyslot in one of atrest's two
//! keyslot areas, and the rewrap (`atrest rekey` without `--deep`), which moves the volume
//! key to a keyslot opened by a new KMIP key in one header commit. No data moves, so this
//! is not a conversion; a deep rekey's start ([`crate::convert::begin_rekey`]) places its
//! new keyslot the same way. Errors are [`ConvertError`]s because the callers handle them
//! with the conversions' (a rewrap is refused while one runs), and `volume::convert::rewrap`
//! remains its path.

use zeroize::Zeroizing;

use crate::backend::BlockBackend;
use crate::convert::disk::{sync, zero};
use crate::convert::inspect::{read_layout, refuse_running};
use crate::convert::{ConvertError, Devices};
use crate::layout::{JOURNAL_END, JOURNAL_OFFSET, SLOT_AREAS, SLOT_AREA_LEN};
use crate::luks2::header::{self, Header};
use crate::luks2::keys;
use crate::luks2::metadata::Metadata;
use crate::luks2::token::{self, KeyMode};
use crate::luks2::validate::Layout;
use crate::volume::{volume_key, VolumeError};

/// A rekey without touching data (wrapped mode): the volume key moves to a new keyslot
/// opened by the new KMIP secret, one header commit records it with the new identifier,
/// and the old keyslot is wiped.
pub fn rewrap(
    d: Devices<'_>,
    old_secret: &[u8],
    new_secret: &[u8],
    new_key_uid: &str,
) -> Result<(), ConvertError> {
    let dev = d.header;
    let Rekeying {
        mut h, l, key: vk, ..
    } = open_for_rekey(d, old_secret, new_key_uid, false)?;
    let id = add_keyslot(dev, &mut h, &l, &vk, new_secret)?;
    let m = &mut h.metadata;
    // Only atrest's keyslots go: a bound volume's passphrase (or Clevis, TPM) keyslots
    // hold the same volume key and keep working.
    let (old, others) = atrest_keyslots(m, &l.digest);
    let old_areas: Vec<(u64, u64)> = old
        .iter()
        .filter_map(|k| m.keyslots.remove(k))
        .map(|k| (k.area.offset, k.area.size))
        .collect();
    if let Some(d) = m.digests.get_mut(&l.digest) {
        d.keyslots = others;
        d.keyslots.push(id.clone());
    }
    token::set_uid(m, new_key_uid);
    token::set_keyslots(m, std::slice::from_ref(&id));
    header::write(dev, &mut h)?;
    for (at, len) in old_areas {
        zero(dev, at, at + len)?;
    }
    sync(dev)
}

/// The keyslots of `digest` that atrest's token names, and the rest (a bound volume's
/// passphrase, Clevis or TPM keyslots). A token that names none is one atrest wrote when
/// it made the volume, before tokens named their keyslot: every keyslot is then atrest's.
pub(crate) fn atrest_keyslots(m: &Metadata, digest: &str) -> (Vec<String>, Vec<String>) {
    let all = m
        .digests
        .get(digest)
        .map(|d| d.keyslots.clone())
        .unwrap_or_default();
    let named = m
        .tokens
        .values()
        .find(|t| t.kind == crate::luks2::TOKEN_TYPE)
        .map(|t| t.keyslots.clone())
        .unwrap_or_default();
    if named.is_empty() {
        return (all, Vec::new());
    }
    all.into_iter().partition(|k| named.contains(k))
}

/// A volume opened for a rekey.
pub(crate) struct Rekeying {
    /// Its header, to be changed and committed.
    pub(crate) h: Header,
    pub(crate) l: Layout,
    pub(crate) mode: KeyMode,
    /// The volume key, opened with the old secret.
    pub(crate) key: Zeroizing<Vec<u8>>,
}

/// What a rekey of either kind does first: reads the header (refused while a conversion
/// runs, and in direct mode unless `deep`, as there the KMIP key is the volume key), checks
/// the new identifier, and opens the volume key with the old secret.
pub(crate) fn open_for_rekey(
    d: Devices<'_>,
    old_secret: &[u8],
    new_key_uid: &str,
    deep: bool,
) -> Result<Rekeying, ConvertError> {
    let (h, l) = read_layout(d)?;
    refuse_running(&l)?;
    let mode = l.token.as_ref().ok_or(VolumeError::NoToken)?.key_mode;
    if !deep && mode == KeyMode::Direct {
        return Err(ConvertError::Refused(
            "a direct-mode volume: its KMIP key is the volume key, so a new key means re-encrypting every sector (use --deep)".into(),
        ));
    }
    token::check_uid("new key identifier", new_key_uid)?;
    // A deep rekey makes a new volume key, which the keyslots atrest does not manage do not
    // hold: they would be removed. Refused, with what to do, rather than lock their owners
    // out.
    let (_, others) = atrest_keyslots(&h.metadata, &l.digest);
    if deep && !others.is_empty() {
        return Err(ConvertError::Refused(format!(
            "a volume with keyslots atrest does not manage ({}: a passphrase, Clevis or a TPM, added by `atrest bind`'s operator or by cryptsetup). A deep rekey gives the volume a new key, which they do not hold, so they would stop working: remove them first (`cryptsetup luksKillSlot DEVICE SLOT`), or rotate with a rewrap (`atrest rekey` without --deep), which keeps them",
            others.join(", ")
        )));
    }
    let key = volume_key(d.header, &h.metadata, &l.digest, old_secret)?;
    Ok(Rekeying { h, l, mode, key })
}

/// The lowest decimal id not in `used` (keyslot and digest ids are decimal strings).
pub(crate) fn free_id<'a>(used: impl Iterator<Item = &'a String> + Clone) -> String {
    (0..)
        .map(|i: u32| i.to_string())
        .find(|c| !used.clone().any(|u| u == c))
        .unwrap_or_default()
}

/// Writes a keyslot holding `key` under `secret` into a free area and adds it to the
/// metadata under a free id (not yet committed); returns the id.
pub(crate) fn add_keyslot(
    dev: &dyn BlockBackend,
    h: &mut Header,
    l: &Layout,
    key: &[u8],
    secret: &[u8],
) -> Result<String, ConvertError> {
    let id = free_id(
        h.metadata.keyslots.keys().chain(
            h.metadata
                .opaque
                .keys()
                .filter(|(k, _)| *k == "keyslots")
                .map(|(_, id)| id),
        ),
    );
    let slot = keys::make_keyslot(dev, key, secret, free_area(h, l, key.len())?)?;
    h.metadata.keyslots.insert(id.clone(), slot);
    Ok(id)
}

/// A free keyslot area for a key of `key_len` bytes: one of atrest's two areas if free,
/// otherwise the lowest 4096-aligned gap between the keyslots in use (a volume cryptsetup
/// made has its keyslots elsewhere), inside the keyslots area this header reserves, and
/// outside the journal of an in-place conversion where there is room elsewhere.
fn free_area(h: &Header, l: &Layout, key_len: usize) -> Result<u64, ConvertError> {
    let len = keys::area_size(key_len).max(SLOT_AREA_LEN);
    let m = &h.metadata;
    // Every area in use, atrest's model's keyslots and those it keeps opaque alike.
    let mut used: Vec<(u64, u64)> = m
        .keyslots
        .values()
        .map(|k| (k.area.offset, k.area.offset.saturating_add(k.area.size)))
        .collect();
    for ((kind, _), (v, _)) in &m.opaque {
        let n = |k: &str| v["area"][k].as_str().and_then(|s| s.parse::<u64>().ok());
        if let (&"keyslots", Some(o), Some(s)) = (kind, n("offset"), n("size")) {
            used.push((o, o.saturating_add(s)));
        }
    }
    let free = |a: u64| {
        a.checked_add(len).is_some_and(|e| e <= l.keyslots_end)
            && used.iter().all(|&(o, e)| a + len <= o || e <= a)
    };
    // Past both header copies, whatever their size (a cryptsetup volume with 256 KiB of
    // metadata has its copies where atrest's own areas would be).
    let start = 2 * h.binary.hdr_size;
    let gaps = std::iter::once(start).chain(used.iter().map(|&(_, e)| e.div_ceil(4096) * 4096));
    let mut candidates: Vec<u64> = SLOT_AREAS
        .into_iter()
        .chain(gaps)
        .filter(|&a| a >= start)
        .collect();
    // Outside the journal first, then anywhere.
    candidates.sort_by_key(|&a| (a < JOURNAL_END && JOURNAL_OFFSET < a + len, a));
    candidates.into_iter().find(|&a| free(a)).ok_or_else(|| {
        ConvertError::Refused(format!(
            "no free keyslot area of {len} bytes in this header's keyslots area (it ends at byte {})",
            l.keyslots_end
        ))
    })
}
