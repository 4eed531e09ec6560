//! One validation pass over a parsed header before anything trusts it, as redb's
//! `finalize` and cryptsetup's `LUKS2_hdr_validate` do.
//!
//! A header's checksum proves only that it was written whole, not who wrote it: whoever
//! can write the disk can write a header with valid checksums and any values (see
//! `docs/security.md`). So every number the rest of the crate will compute with is checked
//! here, once, against the device and the format's bounds: offsets and sizes fit the
//! device and do not overlap what they must not; sector, key, salt and digest sizes are
//! the ones the format allows; KDF parameters are in a range that neither panics OpenSSL
//! nor holds an unlock for hours; requirements, key modes, segment kinds and keyslot kinds
//! that atrest does not implement are refused by name instead of silently ignored; and a
//! conversion's recorded progress is consistent with the device. Everything allocated on
//! the strength of a header is bounded by these checks (at most a keyslot's 256 000 bytes
//! of stripes, a journal's 8 MiB hot zone, a 1 MiB park).
//!
//! What comes out is a [`Layout`]: the facts the crate reads, typed. Code past this point
//! takes its numbers from the layout, not from the JSON.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

use super::header::Header;
use super::keys::{DIGEST_LEN, MAX_ITERATIONS, MIN_ITERATIONS, SALT_LENS, STRIPES};
use super::metadata::{Digest, Keyslot};
use super::token::{self, AtrestToken, Conversion, Kind, State, REQUIREMENT};
use super::Luks2Error;
use crate::layout::{park_len, JOURNAL_END, JOURNAL_OFFSET, RECORD_LEN};

/// Most keyslots LUKS2 has.
pub const MAX_KEYSLOTS: usize = 32;
/// Most digests cryptsetup writes (`LUKS2_DIGEST_MAX`).
pub const MAX_DIGESTS: usize = 8;
/// Most tokens LUKS2 has.
pub const MAX_TOKENS: usize = 32;
/// Largest keyslots area cryptsetup allows (`LUKS2_MAX_KEYSLOTS_SIZE`).
pub const MAX_KEYSLOTS_SIZE: u64 = 128 << 20;
/// Sector sizes dm-crypt supports.
pub const SECTOR_SIZES: [u32; 4] = [512, 1024, 2048, 4096];

/// The device sizes a header is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Bytes on the header's device (the volume itself, or a detached header file).
    pub header_len: u64,
    /// Bytes on the data device.
    pub data_len: u64,
    /// True when the header has its own device.
    pub detached: bool,
}

/// The encrypted data, as the header places it on the data device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataArea {
    /// Byte offset of the first sector.
    pub offset: u64,
    /// Bytes of plaintext (a whole number of sectors).
    pub size: u64,
    /// 512, 1024, 2048 or 4096.
    pub sector_size: u32,
    /// Added to every sector's tweak, in 512-byte units (dm-crypt's `iv_offset`).
    pub iv_tweak: u64,
}

impl DataArea {
    /// The XTS tweak (in 512-byte units) of the sector at plaintext byte `pos`. Cannot
    /// overflow for a `pos` inside the area: validation bounds `iv_tweak + size / 512`.
    pub fn tweak(&self, pos: u64) -> u64 {
        self.iv_tweak + pos / 512
    }
}

/// A header that passed validation: what the rest of the crate reads from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The data segment.
    pub data: DataArea,
    /// The id of the digest bound to the data segment.
    pub digest: String,
    /// atrest's token, if the volume has one (a cryptsetup-made volume has none).
    pub token: Option<AtrestToken>,
    /// End of the keyslot material in use (at least the end of the two header copies).
    pub slots_end: u64,
    /// End of the keyslots area the header reserves (`2 * hdr_size + keyslots_size`).
    pub keyslots_end: u64,
    /// The header carries atrest's conversion requirement.
    pub fenced: bool,
}

impl Layout {
    /// The conversion in progress, if any.
    pub fn conversion(&self) -> Option<&State> {
        self.token.as_ref().and_then(|t| t.conversion.as_ref())
    }

    /// What kind of conversion fences the volume, if one does: refuse ordinary use.
    pub fn in_progress(&self) -> Option<Option<Kind>> {
        match self.conversion() {
            Some(s) => Some(Some(s.conversion.kind())),
            None if self.fenced => Some(None),
            None => None,
        }
    }
}

fn corrupt(field: &str, value: impl ToString, why: impl ToString) -> Luks2Error {
    Luks2Error::corrupt(field, value, why)
}

fn unsupported(what: &'static str, value: &str) -> Luks2Error {
    Luks2Error::Unsupported {
        what,
        value: crate::text::shown(value).into_owned(),
    }
}

fn parse_u64(field: &str, s: &str) -> Result<u64, Luks2Error> {
    if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(corrupt(field, s, "not a decimal 64-bit number"));
    }
    s.parse()
        .map_err(|_| corrupt(field, s, "not a decimal 64-bit number"))
}

fn decoded_len(
    field: &str,
    b64: &str,
    allowed: std::ops::RangeInclusive<usize>,
) -> Result<(), Luks2Error> {
    // Bounded by the JSON area (at most 4 MiB), so decoding to check is cheap enough.
    let n = B64
        .decode(b64)
        .map_err(|_| corrupt(field, b64, "not base64"))?
        .len();
    if !allowed.contains(&n) {
        return Err(corrupt(
            field,
            format!("{n} bytes"),
            if allowed.start() == allowed.end() {
                format!("must be {} bytes", allowed.start())
            } else {
                format!("must be {} to {} bytes", allowed.start(), allowed.end())
            },
        ));
    }
    Ok(())
}

fn check_iterations(field: &str, it: u32) -> Result<(), Luks2Error> {
    if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&it) {
        return Err(corrupt(
            field,
            it,
            format!("PBKDF2 iterations must be {MIN_ITERATIONS} to {MAX_ITERATIONS}"),
        ));
    }
    Ok(())
}

/// Checks `h` against `g`; the [`Layout`] it describes, or the first field at fault.
pub fn validate(h: &Header, g: Geometry) -> Result<Layout, Luks2Error> {
    let m = &h.metadata;
    // A cryptsetup reencryption in progress: cryptsetup's to finish (it also shows as an
    // opaque keyslot and two segments; said first, by what it is).
    let reencrypting = m.opaque.values().any(|(v, _)| v["type"] == "reencrypt")
        || m.config.requirements.as_ref().is_some_and(|r| {
            r.mandatory
                .iter()
                .any(|x| x.starts_with("online-reencrypt"))
        });
    if reencrypting {
        return Err(unsupported(
            "state",
            "a cryptsetup reencryption is in progress: finish it with `cryptsetup reencrypt --resume-only DEVICE` (`atrest status` shows its progress)",
        ));
    }
    // Valid LUKS2, with an object atrest does not model: readable, not for opening.
    if let Some(((kind, id), (_, why))) = m.opaque.iter().next() {
        return Err(unsupported("LUKS2 object", &format!("{kind}.{id}: {why}")));
    }
    let hdr_size = h.binary.hdr_size;
    let headers_end = 2 * hdr_size;

    // config
    let ks_size = m.config.keyslots_size;
    if !ks_size.is_multiple_of(4096) || ks_size > MAX_KEYSLOTS_SIZE {
        return Err(corrupt(
            "config.keyslots_size",
            ks_size,
            "must be a multiple of 4096 and at most 128 MiB",
        ));
    }
    let keyslots_end = headers_end + ks_size;
    if keyslots_end > g.header_len {
        return Err(corrupt(
            "config.keyslots_size",
            ks_size,
            format!(
                "the keyslots area would end at byte {keyslots_end}, past the header device's {} bytes",
                g.header_len
            ),
        ));
    }
    let mut fenced = false;
    if let Some(r) = &m.config.requirements {
        for req in &r.mandatory {
            if req == REQUIREMENT {
                fenced = true;
            } else {
                return Err(unsupported("mandatory requirement", req));
            }
        }
    }

    // counts
    if m.keyslots.len() > MAX_KEYSLOTS {
        return Err(corrupt(
            "keyslots",
            m.keyslots.len(),
            "more than 32 keyslots",
        ));
    }
    if m.digests.len() > MAX_DIGESTS {
        return Err(corrupt("digests", m.digests.len(), "more than 8 digests"));
    }
    if m.tokens.len() > MAX_TOKENS {
        return Err(corrupt("tokens", m.tokens.len(), "more than 32 tokens"));
    }

    let data = check_segment(h, g, keyslots_end)?;
    let slots_end = check_keyslots(m, g, headers_end, keyslots_end)?;

    // digests
    let mut segment_digest = None;
    for (id, d) in &m.digests {
        check_digest(id, d, m)?;
        if d.segments.iter().any(|s| s == "0") {
            if let Some(other) = segment_digest.replace(id.clone()) {
                return Err(corrupt(
                    "digests",
                    format!("{other} and {id}"),
                    "two digests claim segment 0",
                ));
            }
        }
    }
    let digest = segment_digest
        .ok_or_else(|| corrupt("digests", "(none)", "no digest is bound to segment 0"))?;

    let token = token::read(m)?;
    if let Some(s) = token.as_ref().and_then(|t| t.conversion.as_ref()) {
        check_state(&s.conversion, &data, g, m, &digest)?;
    }
    Ok(Layout {
        data,
        digest,
        token,
        slots_end,
        keyslots_end,
        fenced,
    })
}

fn check_segment(h: &Header, g: Geometry, keyslots_end: u64) -> Result<DataArea, Luks2Error> {
    let m = &h.metadata;
    if m.segments.len() != 1 {
        let ids: Vec<&str> = m.segments.keys().map(String::as_str).collect();
        return Err(unsupported(
            "segment layout",
            &format!(
                "{} segments ({}); atrest reads exactly one crypt segment (two mean a cryptsetup reencryption in progress: finish it with cryptsetup)",
                m.segments.len(),
                ids.join(", ")
            ),
        ));
    }
    let Some(seg) = m.segments.get("0") else {
        return Err(corrupt(
            "segments",
            "(no segment 0)",
            "the data segment must be segment 0",
        ));
    };
    if seg.kind != "crypt" {
        return Err(unsupported("segment type", &seg.kind));
    }
    let enc = seg.encryption.as_deref().unwrap_or("");
    if enc != "aes-xts-plain64" {
        return Err(unsupported("cipher", enc));
    }
    for key in ["integrity", "flags"] {
        match seg.extra.get(key) {
            None => {}
            Some(serde_json::Value::Array(a)) if a.is_empty() => {}
            Some(v) => {
                return Err(unsupported(
                    if key == "flags" {
                        "segment flags"
                    } else {
                        "integrity protection"
                    },
                    &v.to_string(),
                ))
            }
        }
    }
    let sector_size = seg.sector_size.unwrap_or(512);
    if !SECTOR_SIZES.contains(&sector_size) {
        return Err(corrupt(
            "segments.0.sector_size",
            sector_size,
            "must be 512, 1024, 2048 or 4096",
        ));
    }
    let ss = u64::from(sector_size);
    let offset = seg.offset;
    if offset % ss != 0 {
        return Err(corrupt(
            "segments.0.offset",
            offset,
            format!("not a multiple of the {ss}-byte sector size"),
        ));
    }
    if !g.detached && offset < keyslots_end {
        return Err(corrupt(
            "segments.0.offset",
            offset,
            format!("the data would overlap the header and keyslots area, which ends at byte {keyslots_end}"),
        ));
    }
    // A segment that starts past the device's end is not a truncated image: say so,
    // rather than counting exabytes "missing".
    if offset >= g.data_len {
        return Err(corrupt(
            "segments.0.offset",
            offset,
            format!(
                "past the end of the {}-byte device (a damaged or altered header, or the wrong device)",
                g.data_len
            ),
        ));
    }
    let iv_tweak = match seg.iv_tweak.as_deref() {
        None => 0,
        Some(t) => parse_u64("segments.0.iv_tweak", t)?,
    };
    if iv_tweak % (ss / 512) != 0 {
        return Err(corrupt(
            "segments.0.iv_tweak",
            iv_tweak,
            format!(
                "not a multiple of {} (the sector size in 512-byte units), which dm-crypt refuses",
                ss / 512
            ),
        ));
    }
    let size = match seg.size.as_str() {
        "dynamic" => {
            let need = offset.saturating_add(ss);
            if g.data_len < need {
                return Err(Luks2Error::DeviceTooShort {
                    need,
                    have: g.data_len,
                });
            }
            (g.data_len - offset) / ss * ss
        }
        n => {
            let size = parse_u64("segments.0.size", n)?;
            if size == 0 || size % ss != 0 {
                return Err(corrupt(
                    "segments.0.size",
                    size,
                    format!("must be a positive multiple of the {ss}-byte sector size"),
                ));
            }
            let end = offset
                .checked_add(size)
                .ok_or_else(|| corrupt("segments.0.size", size, "offset + size overflows"))?;
            if end > g.data_len {
                return Err(Luks2Error::DeviceTooShort {
                    need: end,
                    have: g.data_len,
                });
            }
            size
        }
    };
    if iv_tweak.checked_add(size / 512).is_none() {
        return Err(corrupt(
            "segments.0.iv_tweak",
            iv_tweak,
            "the last sector's tweak would overflow",
        ));
    }
    Ok(DataArea {
        offset,
        size,
        sector_size,
        iv_tweak,
    })
}

fn check_keyslots(
    m: &super::metadata::Metadata,
    g: Geometry,
    headers_end: u64,
    keyslots_end: u64,
) -> Result<u64, Luks2Error> {
    let mut areas: Vec<(u64, u64, &str)> = Vec::new();
    for (id, k) in &m.keyslots {
        let f = |x: &str| format!("keyslots.{id}.{x}");
        if !id
            .parse::<u8>()
            .is_ok_and(|n| usize::from(n) < MAX_KEYSLOTS)
        {
            return Err(corrupt("keyslots", id, "keyslot ids are 0 to 31"));
        }
        check_keyslot(id, k)?;
        let (off, size) = (k.area.offset, k.area.size);
        let end = off
            .checked_add(size)
            .ok_or_else(|| corrupt(&f("area.size"), size, "offset + size overflows"))?;
        if off % 512 != 0 || off < headers_end || end > keyslots_end || end > g.header_len {
            return Err(corrupt(
                &f("area.offset"),
                off,
                format!("the area [{off}, {end}) must lie in the keyslots area [{headers_end}, {keyslots_end}), 512-byte aligned"),
            ));
        }
        let material = (u64::from(k.key_size) * u64::from(k.af.stripes)).div_ceil(512) * 512;
        if size < material {
            return Err(corrupt(
                &f("area.size"),
                size,
                format!("smaller than its {material} bytes of key material"),
            ));
        }
        if let Some((_, _, other)) = areas.iter().find(|(o, e, _)| off < *e && *o < end) {
            return Err(corrupt(
                &f("area.offset"),
                off,
                format!("overlaps keyslot {other}'s area"),
            ));
        }
        areas.push((off, end, id));
    }
    Ok(areas.iter().map(|a| a.1).fold(headers_end, u64::max))
}

fn check_keyslot(id: &str, k: &Keyslot) -> Result<(), Luks2Error> {
    let f = |x: &str| format!("keyslots.{id}.{x}");
    if k.kind != "luks2" {
        return Err(unsupported("keyslot type", &k.kind));
    }
    if ![32, 64].contains(&k.key_size) {
        return Err(corrupt(
            &f("key_size"),
            k.key_size,
            "atrest opens 32- and 64-byte volume keys",
        ));
    }
    if k.af.kind != "luks1" || k.af.hash != "sha256" {
        return Err(unsupported(
            "anti-forensic splitter",
            &format!("{} {}", k.af.kind, k.af.hash),
        ));
    }
    if !(1..=STRIPES as u32).contains(&k.af.stripes) {
        return Err(corrupt(&f("af.stripes"), k.af.stripes, "must be 1 to 4000"));
    }
    if k.area.kind != "raw" || k.area.encryption != "aes-xts-plain64" {
        return Err(unsupported(
            "keyslot area",
            &format!("{} {}", k.area.kind, k.area.encryption),
        ));
    }
    if ![32, 64].contains(&k.area.key_size) {
        return Err(corrupt(
            &f("area.key_size"),
            k.area.key_size,
            "must be 32 or 64",
        ));
    }
    // A keyslot with a KDF atrest cannot run (argon2) is kept and never opened; its
    // parameters are cryptsetup's business. A pbkdf2 one is checked now.
    if k.kdf.kind == "pbkdf2" {
        if k.kdf.hash.as_deref() != Some("sha256") {
            return Err(unsupported(
                "keyslot KDF hash",
                k.kdf.hash.as_deref().unwrap_or(""),
            ));
        }
        check_iterations(&f("kdf.iterations"), k.kdf.iterations.unwrap_or(0))?;
        decoded_len(&f("kdf.salt"), &k.kdf.salt, SALT_LENS)?;
    }
    Ok(())
}

fn check_digest(id: &str, d: &Digest, m: &super::metadata::Metadata) -> Result<(), Luks2Error> {
    let f = |x: &str| format!("digests.{id}.{x}");
    if d.kind != "pbkdf2" || d.hash != "sha256" {
        return Err(unsupported("digest", &format!("{} {}", d.kind, d.hash)));
    }
    check_iterations(&f("iterations"), d.iterations)?;
    decoded_len(&f("salt"), &d.salt, SALT_LENS)?;
    // An empty or short digest would compare equal for many keys: exactly 32 bytes.
    decoded_len(&f("digest"), &d.digest, DIGEST_LEN..=DIGEST_LEN)?;
    for k in &d.keyslots {
        if !m.keyslots.contains_key(k) {
            return Err(corrupt(
                &f("keyslots"),
                k,
                "names a keyslot that does not exist",
            ));
        }
    }
    for s in &d.segments {
        if !m.segments.contains_key(s) {
            return Err(corrupt(
                &f("segments"),
                s,
                "names a segment that does not exist",
            ));
        }
    }
    Ok(())
}

/// Checks a conversion state against the device. Which fields go together is settled by
/// parsing ([`super::conversion`]); what is left are the numbers and names the device and
/// the other metadata must bear out.
fn check_state(
    s: &Conversion,
    data: &DataArea,
    g: Geometry,
    m: &super::metadata::Metadata,
    segment_digest: &str,
) -> Result<(), Luks2Error> {
    let f = |x: &str| format!("conversion.{x}");
    let ss = u64::from(data.sector_size);
    let (size, done) = (s.size(), s.done());
    if size != data.size {
        return Err(corrupt(
            &f("size"),
            size,
            format!(
                "the data segment holds {} bytes: the device changed size during the conversion",
                data.size
            ),
        ));
    }
    if done > size || !done.is_multiple_of(ss) {
        return Err(corrupt(
            &f("done"),
            done,
            format!("must be a multiple of {ss} no larger than the size {size}"),
        ));
    }
    let in_place = s.in_place();
    match s {
        Conversion::Encrypt { .. } | Conversion::Decrypt { .. } if g.detached => {
            return Err(corrupt(
                &f("in_place"),
                false,
                "a detached-header conversion works in place",
            ))
        }
        Conversion::EncryptInPlace { .. } | Conversion::DecryptInPlace { .. } if !g.detached => {
            return Err(corrupt(
                &f("in_place"),
                true,
                "an attached encrypt or decrypt moves the data",
            ))
        }
        _ => {}
    }
    if in_place {
        // The journal lives in the header device's keyslots area.
        let room = if g.detached {
            g.header_len
        } else {
            data.offset
        };
        if room < JOURNAL_END {
            return Err(corrupt(
                &f("in_place"),
                true,
                format!("the journal needs bytes {JOURNAL_OFFSET}..{JOURNAL_END} of the header device, which has {room} before the data"),
            ));
        }
        for (id, k) in &m.keyslots {
            if k.area.offset < JOURNAL_END && JOURNAL_OFFSET < k.area.offset + k.area.size {
                return Err(corrupt(
                    &format!("keyslots.{id}.area.offset"),
                    k.area.offset,
                    "lies in atrest's journal area: an in-place conversion would destroy it",
                ));
            }
        }
    }
    if let Some(p) = s.park() {
        if p.len != park_len(size) {
            return Err(corrupt(
                &f("park.len"),
                p.len,
                format!("must be {} for a {size}-byte volume", park_len(size)),
            ));
        }
        // Once an encrypt has converted everything, its last steps drop the file's tail
        // with the park; a crash between that and the final commit leaves a header that
        // names a park beyond the end. Nothing reads it any more.
        let tail_dropped = matches!(s, Conversion::Encrypt { .. }) && done == size;
        p.offset
            .checked_add(p.len)
            .and_then(|e| e.checked_add(RECORD_LEN))
            .filter(|&e| tail_dropped || e <= g.data_len)
            .ok_or_else(|| {
                corrupt(
                    &f("park.offset"),
                    p.offset,
                    format!(
                        "the park and its record must fit in the device's {} bytes",
                        g.data_len
                    ),
                )
            })?;
        if p.offset < data.offset + data.size {
            return Err(corrupt(
                &f("park.offset"),
                p.offset,
                "the park would overlap the data",
            ));
        }
    }
    if let Conversion::Rekey { new_digest, .. } = s {
        match m.digests.get(new_digest) {
            Some(d) if new_digest != segment_digest && d.segments.is_empty() => {}
            _ => {
                return Err(corrupt(
                    &f("new_digest"),
                    new_digest,
                    "must name a digest bound to no segment",
                ))
            }
        }
    }
    Ok(())
}
