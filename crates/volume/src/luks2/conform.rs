//! What makes a LUKS2 header LUKS2: the rules by which cryptsetup (2.6, Debian 12's) accepts
//! or refuses metadata when it reads a header, so that atrest reads exactly the headers
//! cryptsetup reads, and refuses the rest with the rule that was broken. It answers "is this
//! LUKS2?", not "can atrest open it?": `validate` asks that afterwards, of a header that
//! passed here. The differential test `volume/tests/conformance.rs` holds the two tools to
//! the same verdicts; `docs/format.md` lists where atrest is stricter on purpose.
//!
//! Written by hand from cryptsetup's `lib/luks2/luks2_json_metadata.c`,
//! `luks2_keyslot*.c` and `luks2_disk_metadata.c` (read to learn the rules, not copied): no
//! crate implements LUKS2 validation, and the rules are the format's, so they are this
//! product's own. Some rules depend on the order of an object's members (a regular segment
//! may not follow a backup segment), so the metadata is parsed here into [`J`], which keeps
//! the order json-c keeps; a key given twice keeps its first place and its last value, as
//! json-c does. Numbers follow json-c's types: an integer is an `int`, anything with a
//! fraction or exponent a `double`.

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use super::Luks2Error;

/// A JSON value with its members in document order.
#[derive(Debug, Clone, PartialEq)]
pub enum J {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// An integer (json-c's `int`).
    Int(i128),
    /// A number with a fraction or exponent (json-c's `double`).
    Double(f64),
    /// A string.
    Str(String),
    /// An array.
    Arr(Vec<J>),
    /// An object, in document order.
    Obj(Vec<(String, J)>),
}

impl<'de> Deserialize<'de> for J {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = J;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("JSON")
            }
            fn visit_unit<E>(self) -> Result<J, E> {
                Ok(J::Null)
            }
            fn visit_bool<E>(self, b: bool) -> Result<J, E> {
                Ok(J::Bool(b))
            }
            fn visit_i64<E>(self, n: i64) -> Result<J, E> {
                Ok(J::Int(n.into()))
            }
            fn visit_u64<E>(self, n: u64) -> Result<J, E> {
                Ok(J::Int(n.into()))
            }
            fn visit_f64<E>(self, n: f64) -> Result<J, E> {
                Ok(J::Double(n))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<J, E> {
                Ok(J::Str(s.to_owned()))
            }
            fn visit_string<E>(self, s: String) -> Result<J, E> {
                Ok(J::Str(s))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<J, A::Error> {
                let mut v = Vec::new();
                while let Some(x) = a.next_element()? {
                    v.push(x);
                }
                Ok(J::Arr(v))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<J, A::Error> {
                // An index, not a search per member: a header may hold a token with tens of
                // thousands of members (found by an outside review: quadratic, 40 s).
                let mut v: Vec<(String, J)> = Vec::new();
                let mut index: std::collections::HashMap<String, usize> =
                    std::collections::HashMap::new();
                while let Some((k, x)) = a.next_entry::<String, J>()? {
                    match index.get(&k) {
                        Some(&i) => v[i].1 = x,
                        None => {
                            index.insert(k.clone(), v.len());
                            v.push((k, x));
                        }
                    }
                }
                Ok(J::Obj(v))
            }
        }
        d.deserialize_any(V)
    }
}

impl J {
    /// Member `key` of an object.
    pub fn get(&self, key: &str) -> Option<&J> {
        match self {
            J::Obj(m) => m.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    fn members(&self) -> &[(String, J)] {
        match self {
            J::Obj(m) => m,
            _ => &[],
        }
    }

    fn items(&self) -> &[J] {
        match self {
            J::Arr(a) => a,
            _ => &[],
        }
    }

    /// json-c's `json_object_get_string` of a string, as C reads it: up to its first NUL
    /// (other types are not asked here).
    fn text(&self) -> &str {
        match self {
            J::Str(s) => s.split('\0').next().unwrap_or_default(),
            _ => "",
        }
    }
}

/// A rule broken: the field as a JSON path, and what cryptsetup says of it.
fn broken(field: &str, why: impl ToString) -> Luks2Error {
    Luks2Error::corrupt(field, "(see why)", why)
}

#[derive(Clone, Copy)]
enum Ty {
    Obj,
    Arr,
    Str,
    Int,
}

impl Ty {
    fn name(self) -> &'static str {
        match self {
            Ty::Obj => "an object",
            Ty::Arr => "an array",
            Ty::Str => "a string",
            Ty::Int => "an integer",
        }
    }

    fn is(self, v: &J) -> bool {
        matches!(
            (self, v),
            (Ty::Obj, J::Obj(_))
                | (Ty::Arr, J::Arr(_))
                | (Ty::Str, J::Str(_))
                | (Ty::Int, J::Int(_))
        )
    }
}

/// `json_contains`: member `key` of `obj` exists and has type `ty`.
fn member<'a>(obj: &'a J, path: &str, key: &str, ty: Ty) -> Result<&'a J, Luks2Error> {
    match obj.get(key) {
        Some(v) if ty.is(v) => Ok(v),
        _ => Err(broken(
            &format!("{path}.{key}"),
            format!("missing, or not {}", ty.name()),
        )),
    }
}

/// `json_contains_string`: a non-empty string.
fn text<'a>(obj: &'a J, path: &str, key: &str) -> Result<&'a str, Luks2Error> {
    let s = member(obj, path, key, Ty::Str)?.text();
    if s.is_empty() {
        return Err(broken(&format!("{path}.{key}"), "an empty string"));
    }
    Ok(s)
}

/// `numbered`: only decimal digits (the empty string passes, as in cryptsetup).
fn numbered(path: &str, key: &str) -> Result<(), Luks2Error> {
    if key.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(broken(path, format!("{key:?} is not in numbered form")))
    }
}

/// C's `strtoull(s, &end, 10)` with `*end == 0` and no `ERANGE`: leading white space, an
/// optional sign (a minus negates, modulo 2^64), digits; the empty string is 0.
fn strtoull(s: &str) -> Option<u64> {
    let t = s.trim_start_matches([' ', '\t', '\n', '\x0b', '\x0c', '\r']);
    let (neg, digits) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    if digits.is_empty() {
        // No conversion: the end is the start, which must be the string's end.
        return s.is_empty().then_some(0);
    }
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(if neg { n.wrapping_neg() } else { n })
}

/// `json_str_to_uint64` of a member that must be a numbered string.
fn number(obj: &J, path: &str, key: &str) -> Result<u64, Luks2Error> {
    let s = text(obj, path, key)?;
    numbered(&format!("{path}.{key}"), s)?;
    strtoull(s).ok_or_else(|| broken(&format!("{path}.{key}"), "not a 64-bit number"))
}

/// `validate_json_uint32` of an integer.
fn uint32(v: &J, field: &str) -> Result<u32, Luks2Error> {
    match v {
        J::Int(n) if (0..=i128::from(u32::MAX)).contains(n) => Ok(*n as u32),
        _ => Err(broken(field, "not an unsigned 32-bit integer")),
    }
}

/// C's `atoi`: the number a key names where cryptsetup converts one (`strtol`, then
/// truncated to `int`).
fn atoi(s: &str) -> i32 {
    let t = s.trim_start();
    let (neg, rest) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let n: i64 = digits
        .parse::<i128>()
        .map_or(if digits.is_empty() { 0 } else { i64::MAX }, |n| {
            n.clamp(0, i64::MAX as i128) as i64
        });
    let n = if neg { n.wrapping_neg() } else { n };
    n as i32
}

/// Header sizes (binary header plus JSON area) LUKS2 allows.
const METADATA_SIZES: [u64; 9] = [
    0x4000, 0x8000, 0x10000, 0x20000, 0x40000, 0x80000, 0x100000, 0x200000, 0x400000,
];
const BINARY: u64 = 4096;
const MAX_KEYSLOTS_SIZE: u64 = 128 << 20;
/// Most objects in any one of keyslots, tokens, digests and segments.
const MAX_OBJECTS: usize = 1024;

/// The requirement flags cryptsetup knows.
#[derive(Default)]
struct Reqs {
    online_reencrypt: bool,
    candidate: bool,
}

fn mandatory(j: &J) -> &[J] {
    j.get("config")
        .and_then(|c| c.get("requirements"))
        .and_then(|r| r.get("mandatory"))
        .map_or(&[], J::items)
}

/// `reencrypt_candidate_flag`.
fn reencrypt_candidate(flag: &str) -> bool {
    flag == "online-reencrypt"
        || flag
            .strip_prefix("online-reencrypt-v")
            .is_some_and(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
}

fn reqs(j: &J) -> Reqs {
    let mut r = Reqs::default();
    for m in mandatory(j) {
        let f = m.text();
        if matches!(
            f,
            "online-reencrypt" | "online-reencrypt-v2" | "online-reencrypt-v3"
        ) {
            r.online_reencrypt = true;
        }
        r.candidate |= reencrypt_candidate(f);
    }
    r
}

/// Checks the metadata `j` of a header whose JSON area holds `area_len` bytes. The first
/// rule broken is the error. (That the header copies and keyslots area fit the device is
/// checked by the reader, on the copy it chooses.)
pub fn check(j: &J, area_len: u64) -> Result<(), Luks2Error> {
    if !matches!(j, J::Obj(_)) {
        return Err(broken("JSON area", "not a JSON object"));
    }
    // Deliberately stricter than cryptsetup, which reads any number: some rules compare
    // every pair of keyslots or segments, and a hostile 4 MiB area holds tens of
    // thousands (no tool makes more than 32 keyslots and tokens, 8 digests).
    for section in ["keyslots", "tokens", "digests", "segments"] {
        let n = j.get(section).map_or(0, |s| s.members().len());
        if n > MAX_OBJECTS {
            return Err(broken(
                section,
                format!("{n} objects; atrest reads at most {MAX_OBJECTS} (cryptsetup uses 32 keyslots and tokens, 8 digests)"),
            ));
        }
    }
    requirements(j)?;
    tokens(j)?;
    digests(j)?;
    segments(j)?;
    keyslots(j)?;
    config(j)?;
    areas(j)?;
    let json_size = strtoull(
        j.get("config")
            .and_then(|c| c.get("json_size"))
            .map_or("", J::text),
    );
    if json_size != Some(area_len) {
        return Err(broken(
            "config.json_size",
            format!("does not match the binary header's JSON area of {area_len} bytes"),
        ));
    }
    keyslot_kinds(j)?;
    Ok(())
}

fn requirements(j: &J) -> Result<(), Luks2Error> {
    let config = member(j, "", "config", Ty::Obj)?;
    if config.get("requirements").is_some() {
        let r = member(config, "config", "requirements", Ty::Obj)?;
        if r.get("mandatory").is_some() {
            let m = member(r, "config.requirements", "mandatory", Ty::Arr)?;
            let mut online = 0;
            for x in m.items() {
                if !Ty::Str.is(x) {
                    return Err(broken(
                        "config.requirements.mandatory",
                        "holds a value that is not a string",
                    ));
                }
                online += usize::from(reencrypt_candidate(x.text()));
            }
            if online > 1 {
                return Err(broken(
                    "config.requirements.mandatory",
                    "more than one online reencryption requirement",
                ));
            }
        }
    }
    Ok(())
}

/// `validate_keyslots_array` / `validate_segments_array`: strings naming members of
/// `section`.
fn references(arr: &J, field: &str, section: &J, what: &str) -> Result<(), Luks2Error> {
    for (i, x) in arr.items().iter().enumerate() {
        if !Ty::Str.is(x) {
            return Err(broken(&format!("{field}.{i}"), "not a string"));
        }
        if !matches!(section.get(x.text()), Some(J::Obj(_))) {
            return Err(broken(
                &format!("{field}.{i}"),
                format!("names {what} {:?}, which does not exist", x.text()),
            ));
        }
    }
    Ok(())
}

fn tokens(j: &J) -> Result<(), Luks2Error> {
    let tokens = member(j, "", "tokens", Ty::Obj)?;
    for (id, t) in tokens.members() {
        let path = format!("tokens.{id}");
        numbered("tokens", id)?;
        let Some(keyslots) = j.get("keyslots") else {
            return Err(broken("keyslots", "missing"));
        };
        text(t, &path, "type")?;
        let arr = member(t, &path, "keyslots", Ty::Arr)?;
        references(arr, &format!("{path}.keyslots"), keyslots, "keyslot")?;
    }
    Ok(())
}

fn digests(j: &J) -> Result<(), Luks2Error> {
    let digests = member(j, "", "digests", Ty::Obj)?;
    let keyslots = member(j, "", "keyslots", Ty::Obj)?;
    let segments = member(j, "", "segments", Ty::Obj)?;
    for (id, d) in digests.members() {
        let path = format!("digests.{id}");
        numbered("digests", id)?;
        text(d, &path, "type")?;
        let ks = member(d, &path, "keyslots", Ty::Arr)?;
        let segs = member(d, &path, "segments", Ty::Arr)?;
        references(ks, &format!("{path}.keyslots"), keyslots, "keyslot")?;
        references(segs, &format!("{path}.segments"), segments, "segment")?;
    }
    Ok(())
}

fn flags_of(seg: &J) -> impl Iterator<Item = &str> {
    seg.get("flags")
        .map_or(&[][..], J::items)
        .iter()
        .map(J::text)
}

fn is_backup(seg: &J) -> bool {
    flags_of(seg).any(|f| f.starts_with("backup-"))
}

/// `crypt_jobj_get_uint64` of a member: its value, or 0.
fn u64_or_zero(v: Option<&J>) -> u64 {
    v.and_then(|v| strtoull(v.text())).unwrap_or(0)
}

fn segments(j: &J) -> Result<(), Luks2Error> {
    let segments = member(j, "", "segments", Ty::Obj)?;
    let count = segments.members().len();
    if count < 1 {
        return Err(broken("segments", "empty"));
    }
    let Some(digests) = j.get("digests") else {
        return Err(broken("digests", "missing"));
    };
    // C's sentinel, kept: a backup whose id reads as negative (`atoi` of a huge key) counts
    // as none, as in cryptsetup.
    let mut first_backup: i32 = -1;
    for (id, s) in segments.members() {
        let path = format!("segments.{id}");
        numbered("segments", id)?;
        let kind = text(s, &path, "type")?;
        let offset = number(s, &path, "offset")?;
        let size_text = text(s, &path, "size")?;
        let size = if size_text == "dynamic" {
            0
        } else {
            numbered(&format!("{path}.size"), size_text)?;
            match strtoull(size_text) {
                Some(n) if n != 0 => n,
                _ => {
                    return Err(broken(
                        &format!("{path}.size"),
                        "not a positive 64-bit number",
                    ))
                }
            }
        };
        if offset % 512 != 0 {
            return Err(broken(&format!("{path}.offset"), "not a multiple of 512"));
        }
        if size % 512 != 0 {
            return Err(broken(&format!("{path}.size"), "not a multiple of 512"));
        }
        if s.get("flags").is_some() {
            let f = member(s, &path, "flags", Ty::Arr)?;
            if !f.items().iter().all(|x| Ty::Str.is(x)) {
                return Err(broken(
                    &format!("{path}.flags"),
                    "holds a value that is not a string",
                ));
            }
        }
        let i = atoi(id);
        if is_backup(s) {
            if first_backup < 0 || i < first_backup {
                first_backup = i;
            }
        } else if first_backup >= 0 && i >= first_backup {
            return Err(broken(&path, "a regular segment behind a backup segment"));
        }
        if kind == "crypt" {
            crypt_segment(s, &path, id, digests, size)?;
        }
    }
    let first_backup = match first_backup {
        0 => return Err(broken("segments", "no regular segment")),
        b if b >= 0 && b as usize >= count => {
            return Err(broken(
                "segments",
                format!("a gap before the backup segment {b}"),
            ))
        }
        b if b < 0 => count,
        b => b as usize,
    };
    let mut intervals = Vec::with_capacity(first_backup);
    for i in 0..first_backup {
        let Some(s) = segments.get(&i.to_string()) else {
            return Err(broken("segments", format!("a gap at segment {i}")));
        };
        let len = u64_or_zero(s.get("size"));
        intervals.push((
            u64_or_zero(s.get("offset")),
            if len == 0 { u64::MAX } else { len },
        ));
    }
    for (i, &(off, len)) in intervals.iter().enumerate() {
        if len == u64::MAX && i != intervals.len() - 1 {
            return Err(broken(
                &format!("segments.{i}.size"),
                "only the last regular segment may be dynamic",
            ));
        }
        for (k, &(o2, l2)) in intervals.iter().enumerate() {
            if k == i {
                continue;
            }
            if l2 != u64::MAX && o2 > u64::MAX - l2 {
                return Err(broken(&format!("segments.{k}"), "offset + size overflows"));
            }
            if off >= o2 && (l2 == u64::MAX || off < o2 + l2) {
                return Err(broken(
                    &format!("segments.{i}"),
                    format!("overlaps segment {k}"),
                ));
            }
        }
    }
    for i in first_backup..count {
        if segments.get(&i.to_string()).is_none() {
            return Err(broken("segments", format!("a gap at segment {i}")));
        }
    }
    reencrypt_segments(j, segments, first_backup, count)
}

fn crypt_segment(s: &J, path: &str, id: &str, digests: &J, size: u64) -> Result<(), Luks2Error> {
    let iv = text(s, path, "iv_tweak")?;
    text(s, path, "encryption")?;
    let ss = member(s, path, "sector_size", Ty::Int)?;
    if s.get("integrity").is_some() {
        let i = member(s, path, "integrity", Ty::Obj)?;
        let ip = format!("{path}.integrity");
        for k in ["type", "journal_encryption", "journal_integrity"] {
            text(i, &ip, k)?;
        }
    }
    let ss = uint32(ss, &format!("{path}.sector_size"))?;
    if ss == 0 || ss % 512 != 0 {
        return Err(broken(
            &format!("{path}.sector_size"),
            format!("{ss} is not a multiple of 512"),
        ));
    }
    if !iv.bytes().all(|b| b.is_ascii_digit()) || strtoull(iv).is_none() {
        return Err(broken(
            &format!("{path}.iv_tweak"),
            "not a numbered 64-bit value",
        ));
    }
    if !size.is_multiple_of(u64::from(ss)) {
        return Err(broken(
            &format!("{path}.size"),
            format!("not a multiple of the sector size {ss}"),
        ));
    }
    let has_digest = digests.members().iter().any(|(_, d)| {
        d.get("segments")
            .map_or(&[][..], J::items)
            .iter()
            .any(|x| x.text() == id)
    });
    if !has_digest {
        return Err(broken(path, "a crypt segment that no digest is bound to"));
    }
    Ok(())
}

/// `json_segment_cmp`: same type, and for crypt the same sector size and cipher.
fn same_segment(a: &J, b: &J) -> bool {
    let (Some(J::Str(ta)), Some(J::Str(tb))) = (a.get("type"), b.get("type")) else {
        return false;
    };
    if ta != tb {
        return false;
    }
    if ta != "crypt" {
        return true;
    }
    // json-c's `json_object_get_int`: saturated to 32 bits; a negative one reads as 512.
    let ss = |s: &J| match s.get("sector_size") {
        Some(J::Int(n)) if *n >= 0 => (*n).min(i128::from(i32::MAX)) as i64,
        Some(J::Int(_)) | None => 512,
        // json-c's get_int of another type: a double truncates, a string parses.
        Some(J::Double(d)) => *d as i64,
        Some(J::Str(t)) => t.trim().parse::<i64>().unwrap_or(0),
        Some(_) => 0,
    };
    let cipher = |s: &J| {
        s.get("encryption")
            .map_or("null".to_owned(), |e| e.text().to_owned())
    };
    ss(a) == ss(b) && cipher(a) == cipher(b)
}

fn reencrypt_segments(
    j: &J,
    segments: &J,
    first_backup: usize,
    count: usize,
) -> Result<(), Luks2Error> {
    if !reqs(j).online_reencrypt {
        return Ok(());
    }
    let (mut fin, mut prev) = (None, None);
    for i in first_backup..count {
        let Some(s) = segments.get(&i.to_string()) else {
            return Err(broken("segments", format!("a gap at segment {i}")));
        };
        if flags_of(s).any(|f| f == "backup-final") {
            fin = Some(s);
        } else if flags_of(s).any(|f| f == "backup-previous") {
            prev = Some(s);
        }
    }
    let (Some(fin), Some(prev)) = (fin, prev) else {
        return Err(broken(
            "segments",
            "a reencryption's backup segment is missing",
        ));
    };
    for i in 0..first_backup {
        let Some(s) = segments.get(&i.to_string()) else {
            return Err(broken("segments", format!("a gap at segment {i}")));
        };
        let ok = if flags_of(s).any(|f| f == "in-reencryption") {
            same_segment(s, fin)
        } else {
            same_segment(s, fin) || same_segment(s, prev)
        };
        if !ok {
            return Err(broken(
                &format!("segments.{i}"),
                "matches neither backup segment",
            ));
        }
    }
    Ok(())
}

fn keyslots(j: &J) -> Result<(), Luks2Error> {
    let keyslots = member(j, "", "keyslots", Ty::Obj)?;
    for (id, k) in keyslots.members() {
        let path = format!("keyslots.{id}");
        numbered("keyslots", id)?;
        text(k, &path, "type")?;
        let ks = member(k, &path, "key_size", Ty::Int)?;
        uint32(ks, &format!("{path}.key_size"))?;
    }
    Ok(())
}

fn config(j: &J) -> Result<(), Luks2Error> {
    let c = member(j, "", "config", Ty::Obj)?;
    let json_size = strtoull(text(c, "config", "json_size")?)
        .ok_or_else(|| broken("config.json_size", "not a 64-bit number"))?;
    let ks = strtoull(text(c, "config", "keyslots_size")?)
        .ok_or_else(|| broken("config.keyslots_size", "not a 64-bit number"))?;
    let md = json_size.wrapping_add(BINARY);
    if !METADATA_SIZES.contains(&md) {
        return Err(broken(
            "config.json_size",
            format!("a header of {md} bytes is not a LUKS2 size (16 KiB to 4 MiB, powers of two)"),
        ));
    }
    if ks % 4096 != 0 || ks > MAX_KEYSLOTS_SIZE {
        return Err(broken(
            "config.keyslots_size",
            "not a multiple of 4096 of at most 128 MiB",
        ));
    }
    // Between the two header copies and the first data segment (none: detached).
    let (mut first, mut which) = (u64::MAX, "");
    for (id, s) in j.get("segments").map_or(&[][..], J::members) {
        if is_backup(s) {
            continue;
        }
        let off = u64_or_zero(s.get("offset"));
        if off == 0 {
            first = 0;
            break;
        }
        if off < first {
            (first, which) = (off, id);
        }
    }
    if first != 0 && (first < ks || first - ks < 2 * md) {
        return Err(broken(
            &format!("segments.{which}.offset"),
            format!(
                "the data at byte {first} leaves no room for the header copies ({} bytes) and {ks} bytes of keyslots (config.keyslots_size)",
                2 * md
            ),
        ));
    }
    if c.get("flags").is_some() {
        let f = member(c, "config", "flags", Ty::Arr)?;
        if !f.items().iter().all(|x| Ty::Str.is(x)) {
            return Err(broken("config.flags", "holds a value that is not a string"));
        }
    }
    Ok(())
}

fn areas(j: &J) -> Result<(), Luks2Error> {
    let (Some(keyslots), Some(_)) = (j.get("keyslots"), j.get("segments")) else {
        return Err(broken("keyslots", "missing"));
    };
    let c = j.get("config");
    let md = u64_or_zero(c.and_then(|c| c.get("json_size"))).wrapping_add(BINARY);
    let end = md
        .wrapping_mul(2)
        .wrapping_add(u64_or_zero(c.and_then(|c| c.get("keyslots_size"))));
    let mut intervals = Vec::new();
    for (id, k) in keyslots.members() {
        let path = format!("keyslots.{id}");
        let area = member(k, &path, "area", Ty::Obj)?;
        let ap = format!("{path}.area");
        text(area, &ap, "type")?;
        let off = number(area, &ap, "offset")?;
        let len = number(area, &ap, "size")?;
        intervals.push((off, len, id));
    }
    for &(off, len, id) in &intervals {
        let path = format!("keyslots.{id}.area");
        if off < md.wrapping_mul(2) {
            return Err(broken(
                &format!("{path}.offset"),
                "inside the header copies",
            ));
        }
        if len == 0 {
            return Err(broken(&format!("{path}.size"), "zero"));
        }
        if off > u64::MAX - len {
            return Err(broken(&path, "offset + size overflows"));
        }
        if off + len > end {
            return Err(broken(
                &path,
                format!("ends past the keyslots area, which ends at byte {end}"),
            ));
        }
        for &(o2, l2, other) in &intervals {
            if other == id {
                continue;
            }
            if o2 > u64::MAX - l2 {
                return Err(broken(
                    &format!("keyslots.{other}.area"),
                    "offset + size overflows",
                ));
            }
            if off >= o2 && off < o2 + l2 {
                return Err(broken(&path, format!("overlaps keyslot {other}'s area")));
            }
        }
    }
    Ok(())
}

/// `LUKS2_keyslots_validate`, after cryptsetup's repair (which drops a KDF's members
/// beyond the ones its type has): each keyslot of a type cryptsetup knows, checked by its
/// kind; a `luks2` keyslot bound to exactly one digest; at most one reencryption keyslot,
/// present exactly when the requirements say a reencryption runs.
fn keyslot_kinds(j: &J) -> Result<(), Luks2Error> {
    let r = reqs(j);
    let digests = j.get("digests");
    let mut reencrypt = 0;
    for (id, k) in j.get("keyslots").map_or(&[][..], J::members) {
        let path = format!("keyslots.{id}");
        match k.get("type").map(J::text) {
            Some("luks2") => {
                luks2_keyslot(k, &path)?;
                let name = (atoi(id) as u32).to_string();
                let n = digests.map_or(&[][..], J::members).iter().filter(|(_, d)| {
                    d.get("keyslots")
                        .map_or(&[][..], J::items)
                        .iter()
                        .any(|x| x.text() == name)
                });
                if n.count() != 1 {
                    return Err(broken(&path, "not bound to exactly one digest"));
                }
            }
            Some("reencrypt") => {
                reencrypt_keyslot(k, &path)?;
                reencrypt += 1;
            }
            _ => {}
        }
    }
    if r.online_reencrypt && reencrypt == 0 {
        return Err(broken(
            "keyslots",
            "a reencryption is required, but there is no reencryption keyslot",
        ));
    }
    if reencrypt > 0 && !r.candidate {
        return Err(broken(
            "config.requirements",
            "a reencryption keyslot without the reencryption requirement",
        ));
    }
    if reencrypt > 1 {
        return Err(broken("keyslots", "more than one reencryption keyslot"));
    }
    Ok(())
}

fn luks2_keyslot(k: &J, path: &str) -> Result<(), Luks2Error> {
    let kdf = member(k, path, "kdf", Ty::Obj)?;
    let af = member(k, path, "af", Ty::Obj)?;
    let area = member(k, path, "area", Ty::Obj)?;
    let kp = format!("{path}.kdf");
    match text(kdf, &kp, "type")? {
        "pbkdf2" => {
            text(kdf, &kp, "hash")?;
            member(kdf, &kp, "iterations", Ty::Int)?;
            text(kdf, &kp, "salt")?;
        }
        "argon2i" | "argon2id" => {
            for m in ["time", "memory", "cpus"] {
                member(kdf, &kp, m, Ty::Int)?;
            }
            text(kdf, &kp, "salt")?;
        }
        _ => {}
    }
    let afp = format!("{path}.af");
    if text(af, &afp, "type")? != "luks1" {
        return Err(broken(&format!("{afp}.type"), "not luks1"));
    }
    text(af, &afp, "hash")?;
    member(af, &afp, "stripes", Ty::Int)?;
    let ap = format!("{path}.area");
    if text(area, &ap, "type")? != "raw" {
        return Err(broken(&format!("{ap}.type"), "not raw"));
    }
    text(area, &ap, "encryption")?;
    member(area, &ap, "key_size", Ty::Int)?;
    text(area, &ap, "offset")?;
    text(area, &ap, "size")?;
    Ok(())
}

fn reencrypt_keyslot(k: &J, path: &str) -> Result<(), Luks2Error> {
    let Some(area) = k.get("area") else {
        return Err(broken(path, "no area"));
    };
    let kind = area.get("type").map_or("", J::text);
    let ks = member(k, path, "key_size", Ty::Int)?;
    let mode = text(k, path, "mode")?;
    let direction = text(k, path, "direction")?;
    if uint32(ks, &format!("{path}.key_size"))? != 1 {
        return Err(broken(
            &format!("{path}.key_size"),
            "a reencryption keyslot's key size is 1",
        ));
    }
    if !matches!(mode, "reencrypt" | "encrypt" | "decrypt") {
        return Err(broken(
            &format!("{path}.mode"),
            format!("{mode:?} is no reencryption mode"),
        ));
    }
    if !matches!(direction, "forward" | "backward") {
        return Err(broken(
            &format!("{path}.direction"),
            format!("{direction:?} is no direction"),
        ));
    }
    let ap = format!("{path}.area");
    if matches!(kind, "checksum" | "datashift-checksum") {
        text(area, &ap, "hash")?;
        let ss = member(area, &ap, "sector_size", Ty::Int)?;
        let ss = uint32(ss, &format!("{ap}.sector_size"))?;
        if ss < 512 || !ss.is_power_of_two() {
            return Err(broken(
                &format!("{ap}.sector_size"),
                "not a power of two of at least 512",
            ));
        }
    } else if matches!(kind, "datashift" | "datashift-journal") {
        let shift = strtoull(text(area, &ap, "shift_size")?).unwrap_or(0);
        if shift == 0 || !shift.is_multiple_of(512) {
            return Err(broken(
                &format!("{ap}.shift_size"),
                "not a positive multiple of 512",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strtoull_is_cs() {
        assert_eq!(strtoull(""), Some(0));
        assert_eq!(strtoull(" 12"), Some(12));
        assert_eq!(strtoull("+12"), Some(12));
        assert_eq!(strtoull("-1"), Some(u64::MAX));
        assert_eq!(strtoull("1.5"), None);
        assert_eq!(strtoull("0x10"), None);
        assert_eq!(strtoull(" "), None);
        assert_eq!(strtoull("18446744073709551615"), Some(u64::MAX));
        assert_eq!(strtoull("18446744073709551616"), None);
    }

    #[test]
    fn atoi_is_cs() {
        assert_eq!(atoi("01"), 1);
        assert_eq!(atoi(""), 0);
        assert_eq!(atoi("4294967296"), 0);
        assert_eq!(atoi("4294967297"), 1);
        assert_eq!(atoi("-1"), -1);
    }

    #[test]
    fn members_keep_document_order_and_the_last_value() {
        let j: J = serde_json::from_str(r#"{"b":1,"a":2,"b":3}"#).unwrap();
        assert_eq!(
            j,
            J::Obj(vec![("b".into(), J::Int(3)), ("a".into(), J::Int(2))])
        );
    }
}
