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
use crate::layout::{SLOT_AREAS, SLOT_AREA_LEN};
use crate::luks2::header::{self, Header};
use crate::luks2::keys;
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
    let old: Vec<String> = m.digests[&l.digest].keyslots.clone();
    let old_areas: Vec<(u64, u64)> = old
        .iter()
        .filter_map(|k| m.keyslots.remove(k))
        .map(|k| (k.area.offset, k.area.size))
        .collect();
    if let Some(d) = m.digests.get_mut(&l.digest) {
        d.keyslots = vec![id];
    }
    token::set_uid(m, new_key_uid);
    header::write(dev, &mut h)?;
    for (at, len) in old_areas {
        zero(dev, at, at + len)?;
    }
    sync(dev)
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
    let id = free_id(h.metadata.keyslots.keys());
    let slot = keys::make_keyslot(dev, key, secret, free_area(h, l)?)?;
    h.metadata.keyslots.insert(id.clone(), slot);
    Ok(id)
}

/// One of atrest's two keyslot areas that no keyslot uses and that lies inside the
/// keyslots area this header reserves (a cryptsetup volume may reserve less).
fn free_area(h: &Header, l: &Layout) -> Result<u64, ConvertError> {
    SLOT_AREAS
        .into_iter()
        .find(|&a| {
            a + SLOT_AREA_LEN <= l.keyslots_end
                && h.metadata.keyslots.values().all(|k| {
                    let (o, n) = (k.area.offset, k.area.size);
                    a + SLOT_AREA_LEN <= o || o + n <= a
                })
        })
        .ok_or_else(|| {
            ConvertError::Refused(
                "no free keyslot area: both of atrest's are in use or outside this header's keyslots area".into(),
            )
        })
}
