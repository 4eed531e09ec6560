//! Starting a conversion: each `begin_*` checks what it can before anything is written,
//! prepares the room or the keys the conversion needs, and makes its start durable (a park
//! and its record for encrypt, a header commit for the others). No data byte has moved
//! when one returns; [`super::run`] takes it from there, and resumes it after a crash.

use zeroize::Zeroizing;

use super::auth::RecordKey;
use super::disk::{io, read, sync, write};
use super::inspect::{read_layout, refuse_running};
use super::park::{self, HeaderPlan, Record};
use super::state::{self, commit, Conversion, Kind, Park};
use super::{ConvertError, Devices};
use crate::backend::BlockBackend;
use crate::layout::{park_len, park_offset, DATA_OFFSET, RECORD_LEN};
use crate::luks2::keys;
use crate::luks2::token::KeyMode;
use crate::luks2::validate::DataArea;
use crate::rewrap::{add_keyslot, free_id, open_for_rekey, Rekeying};
use crate::volume::{new_header, volume_key, FormatOptions, VolumeError};

/// Checks a header plan before anything is written for it.
pub(super) fn check_plan(plan: &HeaderPlan) -> Result<(), ConvertError> {
    if ![512, 4096].contains(&plan.sector_size) {
        return Err(VolumeError::Invalid(format!(
            "sector size {} (use 512 or 4096)",
            plan.sector_size
        ))
        .into());
    }
    match (plan.key_mode, plan.volume_key_len) {
        (KeyMode::Wrapped, 32 | 64) | (KeyMode::Direct, 32) => Ok(()),
        (mode, n) => Err(VolumeError::Invalid(format!(
            "a {}-bit volume key in {mode} mode (direct mode uses the 256-bit KMIP key itself)",
            n * 8
        ))
        .into()),
    }
}

/// The format options a header plan stands for.
pub(super) fn plan_options(
    plan: &HeaderPlan,
    data_size: Option<u64>,
    detached: bool,
) -> FormatOptions {
    FormatOptions {
        mode: plan.key_mode,
        volume_key_len: plan.volume_key_len,
        sector_size: plan.sector_size,
        key_uid: plan.key_uid.clone(),
        server_hint: plan.server_hint.clone(),
        data_size,
        detached,
    }
}

/// Makes `dev` at least `need` bytes long for a park at its end, growing a file (a block
/// device must have the room already; `hint` says what to do when it has not), and returns
/// its length.
fn make_room(
    dev: &dyn BlockBackend,
    need: u64,
    hint: impl FnOnce() -> String,
) -> Result<u64, ConvertError> {
    let have = dev.len().map_err(io(0))?;
    if have < need {
        if !dev.resizable() {
            return Err(ConvertError::NoRoom {
                need,
                have,
                hint: hint(),
            });
        }
        dev.set_len(need).map_err(io(need))?;
    }
    dev.len().map_err(io(0))
}

/// Starts `atrest encrypt` on a plaintext device whose first `size` bytes are the data:
/// makes room at the end (growing a file; a block device must have it), parks the first
/// bytes there behind a record naming the key, and makes both durable. Nothing of the
/// plaintext has been overwritten when this returns; [`super::run`] writes the header next.
pub fn begin_encrypt(
    dev: &dyn BlockBackend,
    plan: &HeaderPlan,
    size: u64,
    secret: &[u8],
) -> Result<(), ConvertError> {
    check_plan(plan)?;
    let rk = RecordKey::derive(secret)?;
    if size == 0 || !size.is_multiple_of(u64::from(plan.sector_size)) {
        return Err(ConvertError::Refused(format!(
            "{size} bytes of data, which is not a whole number of {}-byte sectors: pad the image to a multiple of {} (e.g. `truncate -s %{}`) or choose --sector-size 512",
            plan.sector_size, plan.sector_size, plan.sector_size
        )));
    }
    let park_len = park_len(size);
    let need = size + DATA_OFFSET + park_len + RECORD_LEN;
    let len = make_room(dev, need, || {
        format!(
            "a block device keeps its size, so leave its last {} bytes unused (shrink the filesystem) and give --reduce-device-size",
            need - size
        )
    })?;
    let first = read(dev, park_len, 0)?;
    let at = park_offset(len, park_len).ok_or(ConvertError::NoRoom {
        need,
        have: len,
        hint: "the device shrank while being prepared".into(),
    })?;
    write(dev, &first, at)?;
    // The park must be durable before a record can vouch for it.
    sync(dev)?;
    let rec = Record {
        kind: Kind::Encrypt,
        size,
        data_offset: DATA_OFFSET,
        park_len,
        sha256: park::sha256_hex(&first),
        header: Some(plan.clone()),
        key_uid: None,
        mac: String::new(),
    }
    .sealed(&rk)?;
    write(dev, &park::encode(&rec).map_err(io(0))?, len - RECORD_LEN)?;
    sync(dev)
}

/// Starts `atrest decrypt`: checks the key, makes room at the end for the park (growing a
/// file), and commits the start. From here cryptsetup refuses the volume.
pub fn begin_decrypt(d: Devices<'_>, secret: &[u8]) -> Result<(), ConvertError> {
    let dev = d.data;
    let (mut h, l) = read_layout(d)?;
    refuse_running(&l)?;
    let DataArea { offset, size, .. } = l.data;
    volume_key(d.header, &h.metadata, &l.digest, secret)?;
    let rk = RecordKey::derive(secret)?;
    if d.is_detached() {
        // In place, journaled; the data keeps its device and its size.
        let s = Conversion::DecryptInPlace { size, done: 0 };
        return commit(d.header, &mut h, Some(&s), &rk);
    }
    let park_len = park_len(size);
    let need = offset + size + park_len + RECORD_LEN;
    let len = make_room(dev, need, || {
        "the data fills the block device; copy it out with `atrest` reads instead, or decrypt an image file".into()
    })?;
    // The size is fixed from now on: a growing device must not grow the volume.
    if let Some(seg) = h.metadata.segments.get_mut("0") {
        seg.size = size.to_string();
    }
    let s = Conversion::Decrypt {
        size,
        park: Park {
            offset: park_offset(len, park_len).unwrap_or(need - park_len - RECORD_LEN),
            len: park_len,
        },
        parked: None,
    };
    commit(d.header, &mut h, Some(&s), &rk)
}

/// Starts `atrest encrypt --header FILE`: the header, with the conversion state, goes to
/// the (blank) header device first; then [`super::run`] encrypts the data device in place,
/// each hot zone journaled in the header device's keyslot area. Nothing of the data has
/// changed when this returns.
pub fn begin_encrypt_in_place(
    d: Devices<'_>,
    plan: &HeaderPlan,
    secret: &[u8],
) -> Result<(), ConvertError> {
    check_plan(plan)?;
    let size = d.data.len().map_err(io(0))?;
    if size == 0 || !size.is_multiple_of(u64::from(plan.sector_size)) {
        return Err(ConvertError::Refused(format!(
            "{size} bytes of data, which is not a whole number of {}-byte sectors",
            plan.sector_size
        )));
    }
    let opts = plan_options(plan, None, true);
    let mut h = new_header(d.header, secret, &opts)?;
    let s = Conversion::EncryptInPlace { size, done: 0 };
    commit(d.header, &mut h, Some(&s), &RecordKey::derive(secret)?)
}

/// Starts a deep rekey: the new volume key (wrapped: random, in a new keyslot opened by
/// the new KMIP secret; direct: the new KMIP secret) gets its own digest, and the start is
/// committed. No sector has changed when this returns.
pub fn begin_rekey(
    d: Devices<'_>,
    old_secret: &[u8],
    new_secret: &[u8],
    new_key_uid: &str,
) -> Result<(), ConvertError> {
    let dev = d.header;
    let Rekeying {
        mut h,
        l,
        mode,
        key: old_key,
    } = open_for_rekey(d, old_secret, new_key_uid, true)?;
    let new_digest = free_id(h.metadata.digests.keys());
    let (new_key, slots) = match mode {
        KeyMode::Direct => (Zeroizing::new(new_secret.to_vec()), Vec::new()),
        KeyMode::Wrapped => {
            let mut k = Zeroizing::new(vec![0u8; old_key.len()]);
            crate::random::fill(&mut k).map_err(VolumeError::from)?;
            let id = add_keyslot(dev, &mut h, &l, &k, new_secret)?;
            (k, vec![id])
        }
    };
    // A key XTS refuses (equal halves) is refused before it is committed to.
    crate::volume::key_schedule(&new_key)?;
    h.metadata.digests.insert(
        new_digest.clone(),
        keys::make_digest(&new_key, slots, Vec::new())?,
    );
    let s = Conversion::Rekey {
        size: l.data.size,
        done: 0,
        new_key_uid: new_key_uid.to_owned(),
        new_digest,
    };
    // What is about to be committed must itself pass validation (the journal needs its
    // area free of keyslots and before the data): refuse now rather than strand a rekey.
    let mut next = h.clone();
    state::set(&mut next.metadata, Some(&state::State::untagged(s.clone())));
    crate::luks2::validate::validate(
        &next,
        crate::volume::geometry(d.header, d.data, d.is_detached())?,
    )?;
    commit(dev, &mut h, Some(&s), &RecordKey::derive(new_secret)?)
}
