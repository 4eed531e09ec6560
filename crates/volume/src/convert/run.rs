//! The steps of each conversion, in the order `docs/journal.md` proves safe. Every
//! function here either completes a step and commits it, or returns an error having
//! committed nothing new: the header then still describes the durable data. Nothing is
//! written before the header has been validated and a key proven against its digest (or,
//! with no header to ask, the park record's checksum verified).

use std::sync::atomic::{AtomicBool, Ordering};

use zeroize::Zeroizing;

use super::auth::RecordKey;
use super::park::{self, HeaderPlan, Record};
use super::state::{self, Kind, Park, State};
use super::{journal, ConvertError, Devices, Found, Keys, Options, Outcome, Pending, Progress};
use crate::backend::BlockBackend;
use crate::layout::{
    park_len, park_offset, DATA_OFFSET, JOURNAL_END, JOURNAL_OFFSET, MAX_HOTZONE, RECORD_LEN,
    SLOT_AREAS, SLOT_AREA_LEN,
};
use crate::luks2::header::{self, Header};
use crate::luks2::token::{self, KeyMode};
use crate::luks2::validate::{DataArea, Layout};
use crate::luks2::{keys, Luks2Error};
use crate::volume::{new_header, read_valid, volume_key, FormatOptions, VolumeError};
use crate::xts::Xts;

fn io(offset: u64) -> impl FnOnce(std::io::Error) -> ConvertError {
    move |source| ConvertError::Io { offset, source }
}

fn read(dev: &dyn BlockBackend, len: u64, at: u64) -> Result<Zeroizing<Vec<u8>>, ConvertError> {
    let mut b = Zeroizing::new(vec![0u8; len as usize]);
    dev.read_at(&mut b, at).map_err(io(at))?;
    Ok(b)
}

fn write(dev: &dyn BlockBackend, b: &[u8], at: u64) -> Result<(), ConvertError> {
    dev.write_at(b, at).map_err(io(at))
}

fn sync(dev: &dyn BlockBackend) -> Result<(), ConvertError> {
    dev.sync().map_err(io(0))
}

fn zero(dev: &dyn BlockBackend, from: u64, to: u64) -> Result<(), ConvertError> {
    let block = vec![0u8; 1 << 20];
    let mut at = from;
    while at < to {
        let n = (to - at).min(block.len() as u64);
        write(dev, &block[..n as usize], at)?;
        at += n;
    }
    Ok(())
}

fn cipher(key: &[u8]) -> Result<secmem::Locked<Xts>, ConvertError> {
    Ok(crate::volume::key_schedule(key)?)
}

/// Commits `s` (tagged under `rk`, bound to this header) or, with `None`, the end of the
/// conversion.
fn commit(
    dev: &dyn BlockBackend,
    h: &mut Header,
    s: Option<&State>,
    rk: &RecordKey,
) -> Result<(), ConvertError> {
    match s {
        Some(s) => {
            let mut s = s.clone();
            s.mac = String::new();
            state::set(&mut h.metadata, Some(&s));
            s.mac = rk.tag_state(h, &s)?;
            state::set(&mut h.metadata, Some(&s));
        }
        None => state::set(&mut h.metadata, None),
    }
    header::write(dev, h)?;
    Ok(())
}

/// The record key of a run: derived from the secret the conversion cannot do without (the
/// new key for a rekey, the volume's key otherwise).
fn record_key(kind: Kind, keys: Keys<'_>) -> Result<RecordKey, ConvertError> {
    let secret = match kind {
        Kind::Rekey => keys.new.ok_or(ConvertError::KeyNeeded("new"))?,
        _ => keys.current.ok_or(ConvertError::KeyNeeded("volume's"))?,
    };
    RecordKey::derive(secret)
}

/// The header of `d`, validated against its devices.
fn read_layout(d: Devices<'_>) -> Result<(Header, Layout), ConvertError> {
    let (r, l) = read_valid(d.header, d.data, d.is_detached())?;
    Ok((r.header, l))
}

/// The format options a header plan stands for.
fn plan_options(plan: &HeaderPlan, data_size: Option<u64>, detached: bool) -> FormatOptions {
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

/// What a validated header says.
fn found_in(l: &Layout) -> Found {
    let Some(t) = &l.token else {
        return Found::OtherLuks;
    };
    match &t.conversion {
        None => Found::Volume {
            key_uid: t.key_uid.clone(),
            key_mode: t.key_mode,
        },
        Some(s) => Found::InProgress(Pending {
            kind: s.kind,
            key_uid: t.key_uid.clone(),
            // The state's tag is verified under the volume's key (the new key's for a
            // rekey) before anything is written. A rekey whose every sector is under the
            // new key is proven by that key alone.
            needs_current: s.kind != Kind::Rekey || s.done < s.size,
            new_key_uid: s.new_key_uid.clone(),
            done: s.done,
            size: s.size,
        }),
    }
}

/// Reports what the devices hold.
pub fn inspect(d: Devices<'_>) -> Result<Found, ConvertError> {
    if d.is_detached() {
        // A detached header file with no valid copy: the data device was never touched
        // (data changes only after a header commit is durable), so it is plaintext. That
        // conclusion is drawn only from bytes actually read: an I/O error is an error, not
        // "no header", or a new encryption could overwrite a live header file.
        let len = d.header.len().map_err(io(0))?.min(DATA_OFFSET);
        let bytes = read(d.header, len, 0)?;
        let copy = crate::backend::MemBackend::from_bytes(bytes.to_vec());
        return match header::read(&copy) {
            Ok(_) => Ok(found_in(&read_layout(d)?.1)),
            Err(_) => Ok(Found::Plain),
        };
    }
    match header::read(d.header) {
        Ok(_) => Ok(found_in(&read_layout(d)?.1)),
        Err(e) => match park::read(d.data)? {
            Some(rec) => Ok(Found::InProgress(Pending {
                kind: rec.kind,
                key_uid: rec
                    .header
                    .as_ref()
                    .map(|p| p.key_uid.clone())
                    .or_else(|| rec.key_uid.clone())
                    .unwrap_or_default(),
                // The record's tag is verified under the key before anything is written
                // (and before encrypt's header exists the key is needed to write it).
                needs_current: true,
                new_key_uid: None,
                done: if rec.kind == Kind::Encrypt {
                    0
                } else {
                    rec.size
                },
                size: rec.size,
            })),
            None if matches!(e, Luks2Error::NotLuks { .. }) => Ok(Found::Plain),
            None => Err(e.into()),
        },
    }
}

/// Checks a header plan before anything is written for it.
fn check_plan(plan: &HeaderPlan) -> Result<(), ConvertError> {
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

/// Starts `atrest encrypt` on a plaintext device whose first `size` bytes are the data:
/// makes room at the end (growing a file; a block device must have it), parks the first
/// bytes there behind a record naming the key, and makes both durable. Nothing of the
/// plaintext has been overwritten when this returns; [`run`] writes the header next.
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
    let have = dev.len().map_err(io(0))?;
    if have < need {
        if !dev.resizable() {
            return Err(ConvertError::NoRoom {
                need,
                have,
                hint: format!(
                    "a block device keeps its size, so leave its last {} bytes unused (shrink the filesystem) and give --reduce-device-size",
                    need - size
                ),
            });
        }
        dev.set_len(need).map_err(|source| ConvertError::Io {
            offset: need,
            source,
        })?;
    }
    let len = dev.len().map_err(io(0))?;
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
        let s = State::start(Kind::Decrypt, size, true);
        return commit(d.header, &mut h, Some(&s), &rk);
    }
    let park_len = park_len(size);
    let need = offset + size + park_len + RECORD_LEN;
    let have = dev.len().map_err(io(0))?;
    if have < need {
        if !dev.resizable() {
            return Err(ConvertError::NoRoom {
                need,
                have,
                hint: "the data fills the block device; copy it out with `atrest` reads instead, or decrypt an image file".into(),
            });
        }
        dev.set_len(need).map_err(io(need))?;
    }
    let len = dev.len().map_err(io(0))?;
    // The size is fixed from now on: a growing device must not grow the volume.
    if let Some(seg) = h.metadata.segments.get_mut("0") {
        seg.size = size.to_string();
    }
    let s = State {
        park: Some(Park {
            offset: park_offset(len, park_len).unwrap_or(need - park_len - RECORD_LEN),
            len: park_len,
            sha256: String::new(),
        }),
        ..State::start(Kind::Decrypt, size, false)
    };
    commit(d.header, &mut h, Some(&s), &rk)
}

/// Starts `atrest encrypt --header FILE`: the header, with the conversion state, goes to
/// the (blank) header device first; then [`run`] encrypts the data device in place, each
/// hot zone journaled in the header device's keyslot area. Nothing of the data has
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
    let s = State::start(Kind::Encrypt, size, true);
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
    let (mut h, l) = read_layout(d)?;
    refuse_running(&l)?;
    let mode = l.token.as_ref().ok_or(VolumeError::NoToken)?.key_mode;
    token::check_uid("new key identifier", new_key_uid)?;
    let old_key = volume_key(dev, &h.metadata, &l.digest, old_secret)?;
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
    cipher(&new_key)?;
    h.metadata.digests.insert(
        new_digest.clone(),
        keys::make_digest(&new_key, slots, Vec::new())?,
    );
    let s = State {
        new_key_uid: Some(new_key_uid.to_owned()),
        new_digest: Some(new_digest),
        ..State::start(Kind::Rekey, l.data.size, true)
    };
    // What is about to be committed must itself pass validation (the journal needs its
    // area free of keyslots and before the data): refuse now rather than strand a rekey.
    let mut next = h.clone();
    state::set(&mut next.metadata, Some(&s));
    crate::luks2::validate::validate(
        &next,
        crate::volume::geometry(d.header, d.data, d.is_detached())?,
    )?;
    commit(dev, &mut h, Some(&s), &RecordKey::derive(new_secret)?)
}

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
    let (mut h, l) = read_layout(d)?;
    refuse_running(&l)?;
    if l.token.as_ref().ok_or(VolumeError::NoToken)?.key_mode == KeyMode::Direct {
        return Err(ConvertError::Refused(
            "a direct-mode volume: its KMIP key is the volume key, so a new key means re-encrypting every sector (use --deep)".into(),
        ));
    }
    token::check_uid("new key identifier", new_key_uid)?;
    let vk = volume_key(dev, &h.metadata, &l.digest, old_secret)?;
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

fn refuse_running(l: &Layout) -> Result<(), ConvertError> {
    match l.in_progress() {
        Some(Some(kind)) => Err(ConvertError::OtherInProgress { running: kind }),
        Some(None) => Err(VolumeError::ConversionInProgress { kind: None }.into()),
        None => Ok(()),
    }
}

fn free_id<'a>(used: impl Iterator<Item = &'a String> + Clone) -> String {
    (0..)
        .map(|i: u32| i.to_string())
        .find(|c| !used.clone().any(|u| u == c))
        .unwrap_or_default()
}

/// Writes a keyslot holding `key` under `secret` into a free area and adds it to the
/// metadata under a free id (not yet committed); returns the id.
fn add_keyslot(
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

/// Runs (or resumes) the conversion in progress on `dev` until it finishes or `stop` is
/// set; `progress` hears of every committed step.
pub fn run(
    d: Devices<'_>,
    keys: Keys<'_>,
    opts: Options,
    stop: &AtomicBool,
    progress: &mut dyn FnMut(Progress),
) -> Result<Outcome, ConvertError> {
    let dev = d.data;
    let (mut h, l) = match header::read(d.header) {
        Ok(_) => read_layout(d)?,
        Err(e) if d.is_detached() => return Err(e.into()),
        Err(e) => match park::read(dev)? {
            Some(rec) if rec.kind == Kind::Encrypt => {
                write_encrypt_header(
                    dev,
                    &rec,
                    keys.current.ok_or(ConvertError::KeyNeeded("volume's"))?,
                )?;
                read_layout(d)?
            }
            Some(rec) => {
                restore(dev, &rec, &record_key(rec.kind, keys)?)?;
                progress(Progress {
                    kind: Kind::Decrypt,
                    done: rec.size,
                    total: rec.size,
                });
                return Ok(Outcome::Finished);
            }
            None => return Err(e.into()),
        },
    };
    let s = match l.in_progress() {
        Some(Some(_)) => l
            .conversion()
            .cloned()
            .ok_or(ConvertError::NothingInProgress)?,
        Some(None) => return Err(VolumeError::ConversionInProgress { kind: None }.into()),
        None => return Err(ConvertError::NothingInProgress),
    };
    // Nothing the state says is acted on before its tag verifies under the key. A key
    // that is simply not the volume's is named as such first (the digest says so without
    // trusting the state), so an operator's mix-up does not read as an attack.
    let rk = record_key(s.kind, keys)?;
    prove_key(d.header, &h, &l, &s, keys)?;
    rk.verify_state(&h, &s)?;
    let mut cx = Step {
        hdr: d.header,
        dev,
        layout: &l,
        rk: &rk,
        stop,
        progress,
    };
    match (s.kind, s.in_place) {
        (Kind::Encrypt, false) => cx.encrypt(&mut h, s, keys, opts),
        (Kind::Decrypt, false) => cx.decrypt(&mut h, s, keys, opts),
        (Kind::Rekey, _) => cx.rekey(&mut h, s, keys, opts),
        (kind, true) => cx.in_place(&mut h, s, kind, keys, opts),
    }
}

/// Checks the key a run's record key comes from against its digest (read only). A
/// finished decryption is the exception: with a detached header its keyslots may already
/// be wiped, and the record's tag is what proves the key.
fn prove_key(
    dev: &dyn BlockBackend,
    h: &Header,
    l: &Layout,
    s: &State,
    keys: Keys<'_>,
) -> Result<(), ConvertError> {
    let (digest, secret) = match s.kind {
        Kind::Rekey => match &s.new_digest {
            Some(d) if h.metadata.digests.contains_key(d) => (d.as_str(), keys.new),
            _ => return Ok(()),
        },
        Kind::Decrypt if s.done >= s.size => return Ok(()),
        _ => (l.digest.as_str(), keys.current),
    };
    let secret = secret.ok_or(ConvertError::KeyNeeded("volume's"))?;
    volume_key(dev, &h.metadata, digest, secret)?;
    Ok(())
}

/// Encrypt before its header exists: checks the park, then writes the header (with the
/// conversion state) where the parked bytes were.
fn write_encrypt_header(
    dev: &dyn BlockBackend,
    rec: &Record,
    secret: &[u8],
) -> Result<(), ConvertError> {
    let plan = rec
        .header
        .as_ref()
        .ok_or_else(|| VolumeError::Invalid("encrypt's park record has no header plan".into()))?;
    check_plan(plan)?;
    let rk = RecordKey::derive(secret)?;
    rec.verify(&rk)?;
    let len = dev.len().map_err(io(0))?;
    let at = park::park_at(len, rec)?;
    if park::sha256_hex(&read(dev, rec.park_len, at)?) != rec.sha256 {
        return Err(ConvertError::ParkDamaged {
            offset: at,
            len: rec.park_len,
        });
    }
    let opts = plan_options(plan, Some(rec.size), false);
    let mut h = new_header(dev, secret, &opts)?;
    let s = State {
        park: Some(Park {
            offset: at,
            len: rec.park_len,
            sha256: rec.sha256.clone(),
        }),
        ..State::start(Kind::Encrypt, rec.size, false)
    };
    commit(dev, &mut h, Some(&s), &rk)
}

/// Decrypt's last step, when the header is gone or about to go: the parked plaintext
/// returns to the start, then the tail is dropped (a file) or wiped record first (a block
/// device, so a crash in the wipe never leaves a record over a half-wiped park).
fn restore(dev: &dyn BlockBackend, rec: &Record, rk: &RecordKey) -> Result<(), ConvertError> {
    rec.verify(rk)?;
    let len = dev.len().map_err(io(0))?;
    let at = park::park_at(len, rec)?;
    let first = read(dev, rec.park_len, at)?;
    if park::sha256_hex(&first) != rec.sha256 {
        return Err(ConvertError::ParkDamaged {
            offset: at,
            len: rec.park_len,
        });
    }
    write(dev, &first, 0)?;
    sync(dev)?;
    if dev.resizable() {
        dev.set_len(rec.size).map_err(io(rec.size))?;
    } else {
        zero(dev, len - RECORD_LEN, len)?;
        sync(dev)?;
        zero(dev, rec.size, len - RECORD_LEN)?;
        sync(dev)?;
    }
    Ok(())
}

/// One chunk the reader thread prepares: read `len` bytes at `at`, check them against
/// `sha256` if given (the park), transform them as the data at `logical`.
struct Chunk {
    at: u64,
    len: u64,
    logical: u64,
    sha256: Option<String>,
}

/// What the reader hands over: the chunk's index, the bytes as read (kept only when the
/// writer needs them, for the rekey journal), and the transformed bytes.
type Ready = (usize, Option<Vec<u8>>, Vec<u8>);

/// The writer's side: the chunk, its bytes as read (if kept) and as transformed; false
/// stops the pipeline.
type WriteChunk<'a> = dyn FnMut(&Chunk, Option<&[u8]>, &[u8]) -> Result<bool, ConvertError> + 'a;

/// Runs `chunks` through a reader thread (read, verify, transform: the XTS work spreads
/// over all cores) while this thread writes, syncs and commits the one before, so the
/// disk reads the next chunk while it writes this one. Reading ahead is safe because a
/// chunk's source is never an earlier chunk's destination (invariant 2). `write` returns
/// false to stop early. Buffers are recycled, and none needs zeroizing: they hold
/// ciphertext, or plaintext that is on the same disk in the clear anyway.
fn pipeline(
    dev: &dyn BlockBackend,
    chunks: &[Chunk],
    keep_source: bool,
    transform: &(dyn Fn(&mut [u8], u64) + Sync),
    write: &mut WriteChunk<'_>,
) -> Result<(), ConvertError> {
    use std::sync::mpsc::{channel, sync_channel};
    std::thread::scope(|scope| {
        let (ready_tx, ready_rx) = sync_channel::<Result<Ready, ConvertError>>(1);
        let (spare_tx, spare_rx) = channel::<Vec<u8>>();
        scope.spawn(move || {
            for (i, c) in chunks.iter().enumerate() {
                let mut buf = spare_rx.try_recv().unwrap_or_default();
                buf.resize(c.len as usize, 0);
                let r = dev
                    .read_at(&mut buf, c.at)
                    .map_err(io(c.at))
                    .and_then(|()| match &c.sha256 {
                        Some(want) if park::sha256_hex(&buf) != *want => {
                            Err(ConvertError::ParkDamaged {
                                offset: c.at,
                                len: c.len,
                            })
                        }
                        _ => Ok(()),
                    });
                let msg = r.map(|()| {
                    let source = keep_source.then(|| buf.clone());
                    transform(&mut buf, c.logical);
                    (i, source, buf)
                });
                let failed = msg.is_err();
                if ready_tx.send(msg).is_err() || failed {
                    return;
                }
            }
        });
        for msg in ready_rx {
            let (i, source, out) = msg?;
            let go_on = write(&chunks[i], source.as_deref(), &out)?;
            let _ = spare_tx.send(out);
            if !go_on {
                break;
            }
        }
        Ok(())
    })
}

/// The chunks of `[from, size)` in steps of `step`, each read where it lies on the data
/// device (`off` + its logical position).
fn forward_chunks(from: u64, size: u64, step: u64, off: u64) -> Vec<Chunk> {
    let mut chunks = Vec::new();
    let mut at = from;
    while at < size {
        let c = step.min(size - at);
        chunks.push(Chunk {
            at: off + at,
            len: c,
            logical: at,
            sha256: None,
        });
        at += c;
    }
    chunks
}

fn step_len(opts: Options, limit: u64, ss: u32) -> u64 {
    let ss = u64::from(ss);
    opts.chunk.min(limit).max(ss) / ss * ss
}

struct Step<'a> {
    /// Where the header (and a rekey's journal) lives.
    hdr: &'a dyn BlockBackend,
    /// Where the data lives (the same device unless the header is detached).
    dev: &'a dyn BlockBackend,
    /// The validated header as the run found it.
    layout: &'a Layout,
    /// Tags every state committed and every record written, verifies those read.
    rk: &'a RecordKey,
    stop: &'a AtomicBool,
    progress: &'a mut dyn FnMut(Progress),
}

impl Step<'_> {
    fn report(&mut self, s: &State) {
        (self.progress)(Progress {
            kind: s.kind,
            done: s.done,
            total: s.size,
        });
    }

    fn stopped(&self, s: &State) -> Option<Outcome> {
        self.stop
            .load(Ordering::SeqCst)
            .then_some(Outcome::Stopped(Progress {
                kind: s.kind,
                done: s.done,
                total: s.size,
            }))
    }

    fn key(
        &self,
        h: &Header,
        digest: &str,
        secret: Option<&[u8]>,
        which: &'static str,
    ) -> Result<secmem::Locked<Xts>, ConvertError> {
        let secret = secret.ok_or(ConvertError::KeyNeeded(which))?;
        cipher(&volume_key(self.hdr, &h.metadata, digest, secret)?)
    }

    /// Runs `chunks` through the pipeline: each is written at `dest(chunk)` and synced,
    /// then `done = advance(chunk)` is committed. `Some` when stopped on request.
    #[allow(clippy::too_many_arguments)]
    fn convert(
        &mut self,
        h: &mut Header,
        s: &mut State,
        chunks: &[Chunk],
        transform: &(dyn Fn(&mut [u8], u64) + Sync),
        advance: &dyn Fn(&Chunk) -> u64,
        dest: &dyn Fn(&Chunk) -> u64,
    ) -> Result<Option<Outcome>, ConvertError> {
        let dev = self.dev;
        let mut stopped = None;
        pipeline(dev, chunks, false, transform, &mut |c, _, out| {
            if let Some(o) = self.stopped(s) {
                stopped = Some(o);
                return Ok(false);
            }
            write(dev, out, dest(c))?;
            sync(dev)?;
            s.done = advance(c);
            commit(self.hdr, h, Some(s), self.rk)?;
            self.report(s);
            Ok(true)
        })?;
        Ok(stopped)
    }

    /// Backward from the end: chunk `[low - c, low)` of the plaintext goes, encrypted, to
    /// `data_offset + low - c`; the last chunk comes from the park.
    fn encrypt(
        &mut self,
        h: &mut Header,
        mut s: State,
        keys: Keys<'_>,
        opts: Options,
    ) -> Result<Outcome, ConvertError> {
        let dev = self.dev;
        let data = self.layout.data;
        let (off, ss) = (data.offset, data.sector_size);
        let park = s
            .park
            .clone()
            .ok_or_else(|| VolumeError::Invalid("encrypt without a park".into()))?;
        let chunk = step_len(opts, off, ss);
        // The key proves the header before anything is written, even when only the final
        // wipes remain.
        let xts = self.key(h, &self.layout.digest, keys.current, "volume's")?;
        self.report(&s);
        if s.done < s.size {
            let mut chunks = Vec::new();
            let mut low = s.size - s.done;
            while low > park.len {
                let c = chunk.min(low - park.len);
                chunks.push(Chunk {
                    at: low - c,
                    len: c,
                    logical: low - c,
                    sha256: None,
                });
                low -= c;
            }
            if low > 0 {
                chunks.push(Chunk {
                    at: park.offset,
                    len: park.len,
                    logical: 0,
                    sha256: Some(park.sha256.clone()),
                });
            }
            let size = s.size;
            let transform = |b: &mut [u8], at: u64| xts.encrypt(b, ss as usize, data.tweak(at));
            let advance = |c: &Chunk| size - c.logical;
            let dest = |c: &Chunk| off + c.logical;
            if let Some(o) = self.convert(h, &mut s, &chunks, &transform, &advance, &dest)? {
                return Ok(o);
            }
        }
        // Wipe what the plaintext left in the header area and the park, drop the tail of
        // a file, then lift the fence. Each of these may run again after a crash.
        zero(dev, self.layout.slots_end, off)?;
        let len = dev.len().map_err(io(0))?;
        let end = off + s.size;
        if len <= end {
            // An earlier run got as far as dropping the tail.
        } else if dev.resizable() {
            zero(dev, park.offset, park.offset + park.len)?;
            sync(dev)?;
            dev.set_len(end).map_err(io(end))?;
        } else {
            zero(dev, len - RECORD_LEN, len)?;
            sync(dev)?;
            zero(dev, end, len - RECORD_LEN)?;
        }
        sync(dev)?;
        commit(dev, h, None, self.rk)?;
        Ok(Outcome::Finished)
    }

    /// Forward: first the first bytes go to the park, then chunk `[done, done + c)` comes
    /// down from `data_offset + done`, decrypted; last, the park returns to the start.
    fn decrypt(
        &mut self,
        h: &mut Header,
        mut s: State,
        keys: Keys<'_>,
        opts: Options,
    ) -> Result<Outcome, ConvertError> {
        let dev = self.dev;
        let data = self.layout.data;
        let (off, ss) = (data.offset, data.sector_size);
        let mut park = s
            .park
            .clone()
            .ok_or_else(|| VolumeError::Invalid("decrypt without a park".into()))?;
        let chunk = step_len(opts, off, ss);
        self.report(&s);
        if s.done < s.size {
            let xts = self.key(h, &self.layout.digest, keys.current, "volume's")?;
            if s.done == 0 {
                let mut first = read(dev, park.len, off)?.to_vec();
                xts.decrypt(&mut first, ss as usize, data.tweak(0));
                write(dev, &first, park.offset)?;
                sync(dev)?;
                park.sha256 = park::sha256_hex(&first);
                let rec = Record {
                    kind: Kind::Decrypt,
                    size: s.size,
                    data_offset: off,
                    park_len: park.len,
                    sha256: park.sha256.clone(),
                    header: None,
                    key_uid: self.layout.token.as_ref().map(|t| t.key_uid.clone()),
                    mac: String::new(),
                }
                .sealed(self.rk)?;
                write(
                    dev,
                    &park::encode(&rec).map_err(io(0))?,
                    park.offset + park.len,
                )?;
                sync(dev)?;
                s.done = park.len;
                s.park = Some(park.clone());
                commit(dev, h, Some(&s), self.rk)?;
                self.report(&s);
            }
            let chunks = forward_chunks(s.done, s.size, chunk, off);
            let transform = |b: &mut [u8], at: u64| xts.decrypt(b, ss as usize, data.tweak(at));
            let advance = |c: &Chunk| c.logical + c.len;
            let dest = |c: &Chunk| c.logical;
            if let Some(o) = self.convert(h, &mut s, &chunks, &transform, &advance, &dest)? {
                return Ok(o);
            }
        }
        let rec = park::read(dev)?.ok_or(ConvertError::ParkDamaged {
            offset: park.offset,
            len: park.len,
        })?;
        restore(dev, &rec, self.rk)?;
        Ok(Outcome::Finished)
    }

    /// In place, forward, one journaled hot zone at a time: `from` removes the old
    /// encryption (`None`: the data is plaintext), `to` applies the new one (`None`: to
    /// plaintext). The journal lives on the header's device. `Some` when stopped.
    #[allow(clippy::too_many_arguments)]
    fn journaled(
        &mut self,
        h: &mut Header,
        s: &mut State,
        run_id: &str,
        from: Option<&Xts>,
        to: Option<&Xts>,
        opts: Options,
    ) -> Result<Option<Outcome>, ConvertError> {
        let (hdr, dev) = (self.hdr, self.dev);
        let data = self.layout.data;
        let (off, ss) = (data.offset, data.sector_size);
        let hot = step_len(opts, MAX_HOTZONE, ss);
        let transform = |b: &mut [u8], at: u64| {
            if let Some(x) = from {
                x.decrypt(b, ss as usize, data.tweak(at));
            }
            if let Some(x) = to {
                x.encrypt(b, ss as usize, data.tweak(at));
            }
        };
        // The hot zone a crash interrupted is redone from the journal's copy of its old
        // content: the disk's may be half old, half new.
        if let Some(mut b) = journal::load(hdr, run_id, s.done, self.rk)?
            .filter(|d| !d.is_empty() && s.done + d.len() as u64 <= s.size)
        {
            transform(&mut b, s.done);
            write(dev, &b, off + s.done)?;
            sync(dev)?;
            s.done += b.len() as u64;
            commit(hdr, h, Some(s), self.rk)?;
            self.report(s);
        }
        let chunks = forward_chunks(s.done, s.size, hot, off);
        let mut stopped = None;
        // Each hot zone: its old content to the journal (synced), then the new content in
        // place (synced), then the commit.
        pipeline(dev, &chunks, true, &transform, &mut |c, source, out| {
            if let Some(o) = self.stopped(s) {
                stopped = Some(o);
                return Ok(false);
            }
            let source = source.unwrap_or_default();
            let rec = journal::Record {
                run: run_id.to_owned(),
                pos: c.logical,
                len: c.len,
                sha256: park::sha256_hex(source),
                mac: String::new(),
            };
            journal::save(hdr, &rec, source, self.rk)?;
            write(dev, out, c.at)?;
            sync(dev)?;
            s.done = c.logical + c.len;
            commit(hdr, h, Some(s), self.rk)?;
            self.report(s);
            Ok(true)
        })?;
        Ok(stopped)
    }

    /// Encrypt or decrypt with a detached header: the data stays where it is.
    fn in_place(
        &mut self,
        h: &mut Header,
        mut s: State,
        kind: Kind,
        keys: Keys<'_>,
        opts: Options,
    ) -> Result<Outcome, ConvertError> {
        let hdr = self.hdr;
        let run_id = format!("{}:{}", kind.as_str(), h.binary.uuid);
        // The key proves the header before anything is written. A decryption with every
        // byte converted is the exception: what remains is wiping the header file itself
        // (its keyslots may already be gone), and the data device is not written again.
        let xts = match (kind, s.done < s.size) {
            (Kind::Decrypt, false) => None,
            _ => Some(self.key(h, &self.layout.digest, keys.current, "volume's")?),
        };
        self.report(&s);
        if let Some(xts) = xts.as_ref().filter(|_| s.done < s.size) {
            let (from, to) = match kind {
                Kind::Encrypt => (None, Some(&**xts)),
                _ => (Some(&**xts), None),
            };
            if let Some(o) = self.journaled(h, &mut s, &run_id, from, to, opts)? {
                return Ok(o);
            }
        }
        zero(hdr, JOURNAL_OFFSET, JOURNAL_END)?;
        sync(hdr)?;
        if kind == Kind::Encrypt {
            commit(hdr, h, None, self.rk)?;
        } else {
            // The data is plaintext again: the header file has nothing left to say. The
            // keyslots go first, the two header copies last, so a crash before the end
            // leaves a copy that still says "finished" and leads here again.
            let len = hdr.len().map_err(io(0))?;
            let headers_end = 2 * h.binary.hdr_size;
            zero(hdr, headers_end, len)?;
            sync(hdr)?;
            zero(hdr, 0, headers_end)?;
            sync(hdr)?;
        }
        Ok(Outcome::Finished)
    }

    /// Every sector re-encrypted under a new volume key, in place.
    fn rekey(
        &mut self,
        h: &mut Header,
        mut s: State,
        keys: Keys<'_>,
        opts: Options,
    ) -> Result<Outcome, ConvertError> {
        let hdr = self.hdr;
        let run_id = s.new_key_uid.clone().unwrap_or_default();
        let new_digest = s
            .new_digest
            .clone()
            .ok_or_else(|| VolumeError::Invalid("rekey without a new digest".into()))?;
        let old_digest = self.layout.digest.clone();
        let new = self.key(h, &new_digest, keys.new, "new")?;
        self.report(&s);
        if s.done < s.size {
            let old = self.key(h, &old_digest, keys.current, "volume's current")?;
            if let Some(o) = self.journaled(h, &mut s, &run_id, Some(&*old), Some(&*new), opts)? {
                return Ok(o);
            }
        }
        // Every sector is under the new key: wipe the journal and the old keyslots, then
        // one commit makes the new key the volume's.
        zero(hdr, JOURNAL_OFFSET, JOURNAL_END)?;
        let m = &mut h.metadata;
        let old_slots: Vec<String> = m
            .digests
            .get(&old_digest)
            .map(|d| d.keyslots.clone())
            .unwrap_or_default();
        for k in &old_slots {
            if let Some(slot) = m.keyslots.get(k) {
                let (a, l) = (slot.area.offset, slot.area.size);
                zero(hdr, a, a + l)?;
            }
        }
        sync(hdr)?;
        let m = &mut h.metadata;
        for k in &old_slots {
            m.keyslots.remove(k);
        }
        m.digests.remove(&old_digest);
        if let Some(d) = m.digests.get_mut(&new_digest) {
            d.segments = vec!["0".into()];
        }
        token::set_uid(&mut h.metadata, &run_id);
        commit(hdr, h, None, self.rk)?;
        Ok(Outcome::Finished)
    }
}
