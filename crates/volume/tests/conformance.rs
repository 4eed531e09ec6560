//! LUKS2 conformance (issue 26): a differential test against stock cryptsetup. Each case
//! is one mutation of a header that cryptsetup made (the JSON metadata, the binary header,
//! one copy or both, at every metadata size from 16 KiB to 4 MiB); checksums are fixed up
//! unless the case is about them. Then `cryptsetup luksDump` and atrest's reader
//! (`luks2::header::read`, what `atrest status` reads) run on the same bytes, and their
//! verdicts must agree, or the case must be in [`DELIBERATE`], the documented list of
//! places where atrest is stricter on purpose (`docs/format.md`), and differ in that
//! direction. Most cases come from walking the metadata: every member deleted, and every
//! value replaced by values of the other JSON types and by the integer edge cases; the rest
//! are written by hand for the rules between objects (references, overlapping areas,
//! limits) and for the binary header.

mod common;

use common::cryptsetup;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use volume::backend::FileBackend;
use volume::luks2::header;

/// Cases where atrest refuses what cryptsetup reads, on purpose, and why (the same list is
/// in `docs/format.md`). Each must still differ in that direction, or the test fails.
const DELIBERATE: &[(&str, &str)] = &[
    (
        "JSON text not UTF-8",
        "atrest reads the metadata as JSON text, which is UTF-8 (RFC 8259); json-c does not check",
    ),
    (
        "JSON text with a comment",
        "json-c accepts comments; atrest reads standard JSON, which cryptsetup writes",
    ),
    (
        "JSON text with a trailing comma",
        "json-c accepts trailing commas; atrest reads standard JSON",
    ),
    (
        "JSON text with single quotes",
        "json-c accepts single-quoted strings; atrest reads standard JSON",
    ),
    (
        "2000 tokens",
        "atrest reads at most 1024 objects per section: some rules compare every pair, and no tool makes more than 32",
    ),
    (
        "an integer literal beyond 64 bits",
        "json-c saturates it to a 64-bit integer; atrest's JSON parser reads it as a float, not an integer",
    ),
];

const BINARY: usize = 4096;

/// `cryptsetup reencrypt --init-only`, fast KDF.
const REENCRYPT_INIT: [&str; 7] = [
    "reencrypt",
    "--init-only",
    "-q",
    "--pbkdf",
    "pbkdf2",
    "--pbkdf-force-iterations",
    "1000",
];

/// A header cryptsetup made: the image's bytes (header copies and keyslots area, then a
/// little data), its metadata size, and its JSON.
struct Base {
    md: usize,
    bytes: Vec<u8>,
    json: Value,
}

/// `cryptsetup luksFormat` at metadata size `md`, pbkdf2 (fast), one keyslot, plus an
/// atrest token, so that tokens are covered too.
fn make_base(dir: &Path, md: usize) -> Base {
    make_base_then(dir, md, &[])
}

/// [`make_base`], then the cryptsetup command `then` (its device and key file appended).
fn make_base_then(dir: &Path, md: usize, then: &[&str]) -> Base {
    let ks = 1usize << 20;
    let offset = 2 * md + ks;
    let img = dir.join(format!("base-{md}-{}.img", then.len()));
    let f = std::fs::File::create(&img).unwrap();
    f.set_len((offset + (1 << 20)) as u64).unwrap();
    drop(f);
    let key = dir.join("key");
    std::fs::write(&key, b"conformance").unwrap();
    let out = cryptsetup(&[
        "luksFormat",
        "--type",
        "luks2",
        "-q",
        "--pbkdf",
        "pbkdf2",
        "--pbkdf-force-iterations",
        "1000",
        "--luks2-metadata-size",
        &md.to_string(),
        "--luks2-keyslots-size",
        &ks.to_string(),
        "--offset",
        &(offset / 512).to_string(),
        "--key-file",
        key.to_str().unwrap(),
        img.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = dir.join("token.json");
    std::fs::write(
        &token,
        json!({"type": "atrest-kmip", "keyslots": ["0"], "key_uid": "conformance-key",
               "key_mode": "wrapped"})
        .to_string(),
    )
    .unwrap();
    let out = cryptsetup(&[
        "token",
        "import",
        "--json-file",
        token.to_str().unwrap(),
        img.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    if !then.is_empty() {
        let mut args = then.to_vec();
        args.extend(["--key-file", key.to_str().unwrap(), img.to_str().unwrap()]);
        let out = cryptsetup(&args);
        assert!(
            out.status.success(),
            "{then:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let bytes = std::fs::read(&img).unwrap();
    let area = &bytes[BINARY..md];
    let end = area.iter().position(|&b| b == 0).unwrap();
    let json = serde_json::from_slice(&area[..end]).unwrap();
    Base { md, bytes, json }
}

type JsonEdit = Box<dyn Fn(&mut Value)>;
type AreaEdit = Box<dyn Fn(&Value) -> Vec<u8>>;
type BytesEdit = Box<dyn Fn(&mut [u8])>;
type ImageEdit = Box<dyn Fn(&mut Vec<u8>, usize)>;

/// What a case does to the base.
enum Edit {
    /// The metadata of both copies.
    Json(JsonEdit),
    /// The metadata of one copy (0: primary, 1: secondary).
    JsonCopy(usize, JsonEdit),
    /// The JSON area's bytes of both copies, as given (zero-padded, cut to the area).
    Area(AreaEdit),
    /// The binary header of a copy, checksum fixed up afterwards (`true`) or not.
    Binary(usize, bool, BytesEdit),
    /// Anything, on the whole image; checksums are not touched.
    Raw(ImageEdit),
}

struct Case {
    name: String,
    /// Which base (its metadata size).
    md: usize,
    edit: Edit,
}

/// Fixes up the checksum of the copy at `at`, with the algorithm its header names.
fn checksum(bytes: &mut [u8], at: usize, md: usize) {
    bytes[at + 448..at + 512].fill(0);
    let alg = &bytes[at + 72..at + 104];
    let name = String::from_utf8_lossy(&alg[..alg.iter().position(|&c| c == 0).unwrap_or(32)])
        .to_ascii_lowercase();
    let md_alg = openssl::hash::MessageDigest::from_name(&name)
        .unwrap_or_else(openssl::hash::MessageDigest::sha256);
    let sum = openssl::hash::hash(md_alg, &bytes[at..at + md]).unwrap();
    bytes[at + 448..at + 448 + sum.len()].copy_from_slice(&sum);
}

fn put_area(bytes: &mut [u8], at: usize, md: usize, json: &[u8]) {
    let area = &mut bytes[at + BINARY..at + md];
    area.fill(0);
    let n = json.len().min(area.len());
    area[..n].copy_from_slice(&json[..n]);
}

/// The image a case describes.
fn image(base: &Base, edit: &Edit) -> Vec<u8> {
    let mut b = base.bytes.clone();
    let md = base.md;
    match edit {
        Edit::Json(f) => {
            let mut j = base.json.clone();
            f(&mut j);
            let text = serde_json::to_vec(&j).unwrap();
            for at in [0, md] {
                put_area(&mut b, at, md, &text);
                checksum(&mut b, at, md);
            }
        }
        Edit::JsonCopy(copy, f) => {
            let mut j = base.json.clone();
            f(&mut j);
            let at = copy * md;
            put_area(&mut b, at, md, &serde_json::to_vec(&j).unwrap());
            checksum(&mut b, at, md);
        }
        Edit::Area(f) => {
            let text = f(&base.json);
            for at in [0, md] {
                put_area(&mut b, at, md, &text);
                checksum(&mut b, at, md);
            }
        }
        Edit::Binary(copy, fix, f) => {
            let at = copy * md;
            f(&mut b[at..at + BINARY]);
            if *fix {
                // The checksum covers hdr_size bytes as the (possibly edited) header says;
                // sizes the image cannot hold keep the old one.
                let size = u64::from_be_bytes(b[at + 8..at + 16].try_into().unwrap()) as usize;
                if size >= BINARY && at + size <= b.len() {
                    checksum(&mut b, at, size);
                }
            }
        }
        Edit::Raw(f) => f(&mut b, md),
    }
    b
}

/// cryptsetup's verdict and atrest's on `bytes`: accepted, or the reason refused.
fn verdicts(path: &Path, bytes: &[u8]) -> (Result<(), String>, Result<(), String>) {
    std::fs::write(path, bytes).unwrap();
    // atrest first: luksDump rewrites a damaged copy from the good one.
    let dev = FileBackend::new(std::fs::File::open(path).unwrap());
    let ours = header::read(&dev).map(|_| ()).map_err(|e| e.to_string());
    drop(dev);
    let out = cryptsetup(&["luksDump", "--debug", path.to_str().unwrap()]);
    let theirs = if out.status.success() {
        Ok(())
    } else {
        // The reason is in the debug lines, before the generic "not a valid LUKS device".
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        const BORING: [&str; 15] = [
            "Releasing",
            "Closing",
            "lock released",
            "header read failed",
            "validation failed",
            "Repairing",
            "Trying",
            "Reusing",
            "Opening",
            "Verifying",
            "Detected kernel",
            "Checksum:",
            "header version",
            "not a valid LUKS",
            "Unloading",
        ];
        let why = text
            .lines()
            .rfind(|l| l.starts_with("# ") && !BORING.iter().any(|b| l.contains(b)))
            .unwrap_or("(no reason given)")
            .to_owned();
        Err(why)
    };
    (theirs, ours)
}

// ------------------------------------------------------------------------------------
// The cases.

/// Every path in `v` to a member or element, with the value there.
fn paths(v: &Value, prefix: &mut Vec<String>, out: &mut Vec<(Vec<String>, Value)>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                prefix.push(k.clone());
                out.push((prefix.clone(), x.clone()));
                paths(x, prefix, out);
                prefix.pop();
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                prefix.push(i.to_string());
                out.push((prefix.clone(), x.clone()));
                paths(x, prefix, out);
                prefix.pop();
            }
        }
        _ => {}
    }
}

fn at<'a>(v: &'a mut Value, path: &[String]) -> &'a mut Value {
    path.iter().fold(v, |v, k| match v {
        // A member the base lacks is added (a case that sets it).
        Value::Object(m) => m.entry(k.clone()).or_insert(Value::Null),
        Value::Array(a) => &mut a[k.parse::<usize>().unwrap()],
        _ => unreachable!("a path into a scalar"),
    })
}

fn set(path: &str, value: Value) -> JsonEdit {
    let p: Vec<String> = path.split('.').map(str::to_owned).collect();
    Box::new(move |j| *at(j, &p) = value.clone())
}

fn del(path: &str) -> JsonEdit {
    let p: Vec<String> = path.split('.').map(str::to_owned).collect();
    Box::new(move |j| {
        let (last, parent) = p.split_last().unwrap();
        match at(j, parent) {
            Value::Object(m) => {
                m.remove(last);
            }
            Value::Array(a) => {
                a.remove(last.parse::<usize>().unwrap());
            }
            _ => unreachable!(),
        }
    })
}

/// Values of other types, and edge cases of the same type, for a member holding `v`.
fn replacements(v: &Value) -> Vec<(&'static str, Value)> {
    let mut r = vec![("null", Value::Null), ("true", json!(true))];
    match v {
        Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => r.extend([
            ("number", json!(s.parse::<u64>().unwrap_or(1))),
            ("negative", json!("-1")),
            ("fraction", json!("1.5")),
            ("space", json!(" 1")),
            ("hex", json!("0x10")),
            ("empty", json!("")),
            ("u64-max", json!("18446744073709551615")),
            ("u64-overflow", json!("18446744073709551616")),
            ("zero", json!("0")),
        ]),
        Value::String(_) => r.extend([
            ("number", json!(1)),
            ("empty", json!("")),
            ("array", json!([])),
            ("object", json!({})),
            ("other", json!("unknown-value")),
        ]),
        Value::Number(_) => r.extend([
            ("string", json!(v.to_string())),
            ("zero", json!(0)),
            ("negative", json!(-1)),
            ("fraction", json!(1.5)),
            ("u32-overflow", json!(4294967296u64)),
            ("i32-max+1", json!(2147483648u64)),
        ]),
        Value::Array(_) => r.extend([
            ("string", json!("0")),
            ("object", json!({})),
            ("empty", json!([])),
            ("numbers", json!([0])),
            ("unknown-id", json!(["9"])),
            ("not-numbered", json!(["x"])),
        ]),
        Value::Object(_) => r.extend([("array", json!([])), ("string", json!("x"))]),
        _ => {}
    }
    r
}

fn walked(base: &Base) -> Vec<Case> {
    let mut all = Vec::new();
    paths(&base.json, &mut Vec::new(), &mut all);
    let mut cases = Vec::new();
    for (path, value) in all {
        let name = path.join(".");
        cases.push(Case {
            name: format!("delete {name}"),
            md: base.md,
            edit: Edit::Json(del(&name)),
        });
        for (what, r) in replacements(&value) {
            cases.push(Case {
                name: format!("{name} = {what}"),
                md: base.md,
                edit: Edit::Json(set(&name, r)),
            });
        }
    }
    cases
}

fn json_case(name: &str, md: usize, f: impl Fn(&mut Value) + 'static) -> Case {
    Case {
        name: name.into(),
        md,
        edit: Edit::Json(Box::new(f)),
    }
}

fn n(v: &Value) -> u64 {
    v.as_str().unwrap().parse().unwrap()
}

/// The rules between objects, areas and limits, written by hand.
fn by_hand(md: usize) -> Vec<Case> {
    let mut c = Vec::new();
    let mut j = |name: &str, f: JsonEdit| {
        c.push(Case {
            name: name.into(),
            md,
            edit: Edit::Json(f),
        })
    };
    // References.
    j(
        "a keyslot no digest references",
        Box::new(|v| {
            v["digests"]["0"]["keyslots"] = json!([]);
        }),
    );
    j(
        "a digest naming a missing keyslot",
        set("digests.0.keyslots", json!(["0", "5"])),
    );
    j(
        "a digest naming a missing segment",
        set("digests.0.segments", json!(["0", "3"])),
    );
    j(
        "a digest with no segment",
        set("digests.0.segments", json!([])),
    );
    j(
        "a token naming a missing keyslot",
        set("tokens.0.keyslots", json!(["7"])),
    );
    j(
        "a token with no keyslot",
        set("tokens.0.keyslots", json!([])),
    );
    j(
        "a second digest for the same keyslot",
        Box::new(|v| {
            let d = v["digests"]["0"].clone();
            v["digests"]["1"] = d;
        }),
    );
    j(
        "a second digest, no keyslots, no segments",
        Box::new(|v| {
            let mut d = v["digests"]["0"].clone();
            d["keyslots"] = json!([]);
            d["segments"] = json!([]);
            v["digests"]["1"] = d;
        }),
    );
    j("no digests at all", set("digests", json!({})));
    j(
        "no keyslots at all",
        Box::new(|v| {
            v["keyslots"] = json!({});
            v["digests"]["0"]["keyslots"] = json!([]);
            v["tokens"]["0"]["keyslots"] = json!([]);
        }),
    );
    j(
        "no segments at all",
        Box::new(|v| {
            v["segments"] = json!({});
            v["digests"]["0"]["segments"] = json!([]);
        }),
    );
    // Ids.
    for id in ["32", "31", "-1", "01", "a", "", "4294967296"] {
        j(
            &format!("keyslot id {id:?}"),
            Box::new(move |v| {
                let k = v["keyslots"].as_object_mut().unwrap().remove("0").unwrap();
                v["keyslots"][id] = k;
                v["digests"]["0"]["keyslots"] = json!([id]);
                v["tokens"]["0"]["keyslots"] = json!([id]);
            }),
        );
        j(
            &format!("token id {id:?}"),
            Box::new(move |v| {
                let t = v["tokens"].as_object_mut().unwrap().remove("0").unwrap();
                v["tokens"][id] = t;
            }),
        );
        j(
            &format!("digest id {id:?}"),
            Box::new(move |v| {
                let d = v["digests"].as_object_mut().unwrap().remove("0").unwrap();
                v["digests"][id] = d;
            }),
        );
        j(
            &format!("segment id {id:?}"),
            Box::new(move |v| {
                let s = v["segments"].as_object_mut().unwrap().remove("0").unwrap();
                v["segments"][id] = s;
                v["digests"]["0"]["segments"] = json!([id]);
            }),
        );
    }
    // Segments.
    j(
        "a segment of an unknown type",
        Box::new(|v| {
            v["segments"]["0"]["type"] = json!("mystery");
        }),
    );
    j(
        "a linear segment",
        Box::new(|v| {
            let s = &mut v["segments"]["0"];
            s["type"] = json!("linear");
            for k in ["iv_tweak", "encryption", "sector_size"] {
                s.as_object_mut().unwrap().remove(k);
            }
        }),
    );
    j(
        "two segments, the second a linear one after the first",
        Box::new(|v| {
            let off = n(&v["segments"]["0"]["offset"]);
            v["segments"]["0"]["size"] = json!("524288");
            v["segments"]["1"] = json!({"type": "linear", "offset": (off + 524288).to_string(),
            "size": "dynamic"});
        }),
    );
    j(
        "two segments, the first dynamic",
        Box::new(|v| {
            let off = n(&v["segments"]["0"]["offset"]);
            v["segments"]["1"] = json!({"type": "linear", "offset": (off + 524288).to_string(),
            "size": "dynamic"});
        }),
    );
    j(
        "two overlapping segments",
        Box::new(|v| {
            let off = n(&v["segments"]["0"]["offset"]);
            v["segments"]["0"]["size"] = json!("524288");
            v["segments"]["1"] = json!({"type": "linear", "offset": (off + 4096).to_string(),
            "size": "4096"});
        }),
    );
    j(
        "segments 0 and 2 (a gap)",
        Box::new(|v| {
            let off = n(&v["segments"]["0"]["offset"]);
            v["segments"]["0"]["size"] = json!("524288");
            v["segments"]["2"] = json!({"type": "linear", "offset": (off + 524288).to_string(),
            "size": "dynamic"});
        }),
    );
    j(
        "segment flags with a backup segment",
        Box::new(|v| {
            let mut b = v["segments"]["0"].clone();
            b["flags"] = json!(["backup-previous"]);
            v["segments"]["1"] = b;
        }),
    );
    j(
        "segment flags of an unknown kind",
        set("segments.0.flags", json!(["mystery"])),
    );
    j(
        "segment flags not strings",
        set("segments.0.flags", json!([1])),
    );
    j(
        "segment integrity object",
        set(
            "segments.0.integrity",
            json!({"type": "hmac(sha256)", "journal_encryption": "none", "journal_integrity": "none"}),
        ),
    );
    j(
        "segment sector_size 8192",
        set("segments.0.sector_size", json!(8192)),
    );
    j(
        "segment sector_size 256",
        set("segments.0.sector_size", json!(256)),
    );
    j(
        "segment sector_size 4096",
        set("segments.0.sector_size", json!(4096)),
    );
    j(
        "segment sector_size 1024",
        set("segments.0.sector_size", json!(1024)),
    );
    j(
        "segment offset not sector aligned",
        Box::new(|v| {
            let off = n(&v["segments"]["0"]["offset"]);
            v["segments"]["0"]["offset"] = json!((off + 512).to_string());
            v["segments"]["0"]["sector_size"] = json!(4096);
        }),
    );
    j(
        "segment offset inside the keyslots area",
        Box::new(|v| {
            let off = n(&v["segments"]["0"]["offset"]);
            v["segments"]["0"]["offset"] = json!((off - 4096).to_string());
        }),
    );
    j(
        "segment offset inside the header copies",
        set("segments.0.offset", json!("4096")),
    );
    j("segment offset 0", set("segments.0.offset", json!("0")));
    j(
        "segment offset past the device",
        set("segments.0.offset", json!("1099511627776")),
    );
    j(
        "segment offset at the device end",
        Box::new(move |v| {
            let off = n(&v["segments"]["0"]["offset"]);
            v["segments"]["0"]["offset"] = json!((off + (1 << 20)).to_string());
        }),
    );
    j(
        "segment size past the device",
        set("segments.0.size", json!("1099511627776")),
    );
    j(
        "segment size not whole sectors",
        set("segments.0.size", json!("1000")),
    );
    j("segment size 0", set("segments.0.size", json!("0")));
    j(
        "segment offset + size overflows",
        Box::new(|v| {
            v["segments"]["0"]["size"] = json!("18446744073709551104");
        }),
    );
    j(
        "segment iv_tweak u64 max",
        set("segments.0.iv_tweak", json!("18446744073709551615")),
    );
    j(
        "segment iv_tweak not a multiple of the sector",
        Box::new(|v| {
            v["segments"]["0"]["sector_size"] = json!(4096);
            v["segments"]["0"]["iv_tweak"] = json!("1");
        }),
    );
    j(
        "segment encryption another cipher",
        set("segments.0.encryption", json!("serpent-xts-plain64")),
    );
    j(
        "segment encryption nonsense",
        set("segments.0.encryption", json!("%%%")),
    );
    // Keyslots.
    j(
        "keyslot area before the keyslots area",
        set("keyslots.0.area.offset", json!("4096")),
    );
    j(
        "keyslot area past the keyslots area",
        Box::new(move |v| {
            let ks = n(&v["config"]["keyslots_size"]);
            v["keyslots"]["0"]["area"]["offset"] = json!((2 * md as u64 + ks).to_string());
        }),
    );
    j(
        "keyslot area ending past the keyslots area",
        Box::new(move |v| {
            let ks = n(&v["config"]["keyslots_size"]);
            v["keyslots"]["0"]["area"]["offset"] = json!((2 * md as u64 + ks - 4096).to_string());
        }),
    );
    j(
        "keyslot area not 4096-aligned",
        Box::new(|v| {
            let off = n(&v["keyslots"]["0"]["area"]["offset"]);
            v["keyslots"]["0"]["area"]["offset"] = json!((off + 512).to_string());
        }),
    );
    j(
        "keyslot area too small for its key",
        set("keyslots.0.area.size", json!("4096")),
    );
    j(
        "keyslot area size 0",
        set("keyslots.0.area.size", json!("0")),
    );
    j(
        "two keyslots with overlapping areas",
        Box::new(|v| {
            let k = v["keyslots"]["0"].clone();
            v["keyslots"]["1"] = k;
            v["digests"]["0"]["keyslots"] = json!(["0", "1"]);
        }),
    );
    j(
        "two keyslots side by side",
        Box::new(|v| {
            let mut k = v["keyslots"]["0"].clone();
            let off = n(&k["area"]["offset"]);
            let size = n(&k["area"]["size"]);
            k["area"]["offset"] = json!((off + size).to_string());
            v["keyslots"]["1"] = k;
            v["digests"]["0"]["keyslots"] = json!(["0", "1"]);
        }),
    );
    j(
        "keyslot of an unknown type",
        set("keyslots.0.type", json!("mystery")),
    );
    j(
        "keyslot kdf argon2id",
        Box::new(|v| {
            v["keyslots"]["0"]["kdf"] = json!({"type": "argon2id", "time": 4, "memory": 32,
            "cpus": 1, "salt": v["keyslots"]["0"]["kdf"]["salt"].clone()});
        }),
    );
    j(
        "keyslot kdf argon2i without memory",
        Box::new(|v| {
            v["keyslots"]["0"]["kdf"] = json!({"type": "argon2i", "time": 4, "cpus": 1,
            "salt": v["keyslots"]["0"]["kdf"]["salt"].clone()});
        }),
    );
    j(
        "keyslot kdf of an unknown type",
        set("keyslots.0.kdf.type", json!("scrypt")),
    );
    j(
        "keyslot kdf hash sha1",
        set("keyslots.0.kdf.hash", json!("sha1")),
    );
    j(
        "keyslot kdf hash unknown",
        set("keyslots.0.kdf.hash", json!("nohash")),
    );
    j(
        "keyslot af stripes 1",
        set("keyslots.0.af.stripes", json!(1)),
    );
    j(
        "keyslot af hash sha512",
        set("keyslots.0.af.hash", json!("sha512")),
    );
    j(
        "keyslot area encryption another cipher",
        set("keyslots.0.area.encryption", json!("aes-cbc-essiv:sha256")),
    );
    j("keyslot key_size 64", set("keyslots.0.key_size", json!(64)));
    j("keyslot key_size 1", set("keyslots.0.key_size", json!(1)));
    j("keyslot priority 2", set("keyslots.0.priority", json!(2)));
    j("keyslot priority 3", set("keyslots.0.priority", json!(3)));
    j("keyslot priority -1", set("keyslots.0.priority", json!(-1)));
    j(
        "keyslot priority string",
        set("keyslots.0.priority", json!("1")),
    );
    j(
        "keyslot with an extra member",
        set("keyslots.0.mystery", json!("x")),
    );
    // Digests.
    j(
        "digest of an unknown type",
        set("digests.0.type", json!("mystery")),
    );
    j("digest hash sha512", set("digests.0.hash", json!("sha512")));
    j(
        "digest salt not base64",
        set("digests.0.salt", json!("!!!!")),
    );
    j(
        "digest digest not base64",
        set("digests.0.digest", json!("!!!!")),
    );
    j(
        "digest digest 8 bytes",
        set("digests.0.digest", json!("AAAAAAAAAAA=")),
    );
    // Tokens.
    j(
        "a token of an unknown type",
        set("tokens.0.type", json!("mystery")),
    );
    j(
        "a luks2-keyring token without key_description",
        Box::new(|v| {
            v["tokens"]["1"] = json!({"type": "luks2-keyring", "keyslots": ["0"]});
        }),
    );
    j(
        "a luks2-keyring token",
        Box::new(|v| {
            v["tokens"]["1"] = json!({"type": "luks2-keyring", "keyslots": ["0"],
            "key_description": "atrest:test"});
        }),
    );
    j(
        "a token naming a keyslot twice",
        set("tokens.0.keyslots", json!(["0", "0"])),
    );
    // Config.
    j(
        "config json_size not the area's",
        Box::new(move |v| {
            v["config"]["json_size"] = json!(((md - BINARY) / 2).to_string());
        }),
    );
    j(
        "config keyslots_size not 4096-aligned",
        Box::new(|v| {
            let ks = n(&v["config"]["keyslots_size"]);
            v["config"]["keyslots_size"] = json!((ks - 512).to_string());
        }),
    );
    j(
        "config keyslots_size past the data",
        Box::new(|v| {
            let ks = n(&v["config"]["keyslots_size"]);
            v["config"]["keyslots_size"] = json!((ks + 4096).to_string());
        }),
    );
    j(
        "config keyslots_size 0",
        set("config.keyslots_size", json!("0")),
    );
    j(
        "config keyslots_size 129 MiB",
        set("config.keyslots_size", json!((129u64 << 20).to_string())),
    );
    j(
        "config flags known",
        set(
            "config.flags",
            json!(["allow-discards", "no-read-workqueue"]),
        ),
    );
    j(
        "config flags unknown",
        set("config.flags", json!(["mystery"])),
    );
    j("config flags not strings", set("config.flags", json!([1])));
    j(
        "config requirements mandatory unknown",
        set("config.requirements", json!({"mandatory": ["mystery-v1"]})),
    );
    j(
        "config requirements mandatory atrest",
        set(
            "config.requirements",
            json!({"mandatory": ["atrest-conversion-v1"]}),
        ),
    );
    j(
        "config requirements mandatory online-reencrypt",
        set(
            "config.requirements",
            json!({"mandatory": ["online-reencrypt-v2"]}),
        ),
    );
    j(
        "config requirements mandatory not strings",
        set("config.requirements", json!({"mandatory": [1]})),
    );
    j(
        "config requirements not an object",
        set("config.requirements", json!(["x"])),
    );
    j(
        "config requirements optional",
        set("config.requirements", json!({"optional": ["mystery"]})),
    );
    // The object as a whole.
    j(
        "an unknown top-level member",
        set("mystery", json!({"a": 1})),
    );
    j(
        "the JSON is an array",
        Box::new(|v| *v = json!([v.clone()])),
    );
    c.extend(area_cases(md));
    c.extend(binary_cases(md));
    c
}

/// The JSON area's bytes: its text, terminator and padding.
fn area_cases(md: usize) -> Vec<Case> {
    let text = |j: &Value| serde_json::to_vec(j).unwrap();
    let mut c = Vec::new();
    let mut a = |name: &str, f: AreaEdit| {
        c.push(Case {
            name: name.into(),
            md,
            edit: Edit::Area(f),
        })
    };
    a(
        "JSON text filling the area with no NUL",
        Box::new(move |j| {
            let mut t = text(j);
            t.resize(md - BINARY, b' ');
            t
        }),
    );
    a(
        "JSON text followed by garbage after its NUL",
        Box::new(move |j| {
            let mut t = text(j);
            t.push(0);
            t.extend_from_slice(b"garbage");
            t
        }),
    );
    a(
        "JSON text followed by spaces, then NUL",
        Box::new(move |j| {
            let mut t = text(j);
            t.extend_from_slice(b"    ");
            t
        }),
    );
    a(
        "JSON text with a second object after it",
        Box::new(move |j| {
            let mut t = text(j);
            t.extend_from_slice(b"{}");
            t
        }),
    );
    a(
        "JSON text with leading spaces",
        Box::new(move |j| {
            let mut t = b"  ".to_vec();
            t.extend(text(j));
            t
        }),
    );
    a(
        "JSON text with a duplicate key",
        Box::new(move |j| {
            let t = String::from_utf8(text(j)).unwrap();
            t.replacen("{", "{\"config\":{},", 1).into_bytes()
        }),
    );
    a(
        "JSON text cut short",
        Box::new(move |j| {
            let t = text(j);
            t[..t.len() / 2].to_vec()
        }),
    );
    a("an empty JSON area", Box::new(|_| Vec::new()));
    a(
        "JSON text with a comment",
        Box::new(move |j| {
            let t = String::from_utf8(text(j)).unwrap();
            t.replacen("{", "{/* atrest */", 1).into_bytes()
        }),
    );
    a(
        "JSON text with a trailing comma",
        Box::new(move |j| {
            let mut t = text(j);
            t.pop();
            t.extend_from_slice(b",}");
            t
        }),
    );
    a(
        "JSON text with single quotes",
        Box::new(move |j| {
            let t = String::from_utf8(text(j)).unwrap();
            t.replacen("\"conformance-key\"", "'conformance-key'", 1)
                .into_bytes()
        }),
    );
    a(
        "an integer literal beyond 64 bits",
        Box::new(move |j| {
            let t = String::from_utf8(text(j)).unwrap();
            t.replacen(
                "\"stripes\":4000",
                "\"stripes\":100000000000000000000000",
                1,
            )
            .into_bytes()
        }),
    );
    a(
        "JSON text with an escaped NUL in a string",
        Box::new(move |j| {
            let t = String::from_utf8(text(j)).unwrap();
            t.replacen("conformance-key", "conformance\\u0000key", 1)
                .into_bytes()
        }),
    );
    a(
        "JSON text with an escaped NUL as a type",
        Box::new(move |j| {
            let t = String::from_utf8(text(j)).unwrap();
            t.replacen("\"atrest-kmip\"", "\"\\u0000x\"", 1)
                .into_bytes()
        }),
    );
    a(
        "JSON text not UTF-8",
        Box::new(move |j| {
            let t = String::from_utf8(text(j)).unwrap();
            let mut b = t
                .replacen("conformance-key", "conformance-\u{0}", 1)
                .into_bytes();
            let at = b.windows(12).position(|w| w == b"conformance-").unwrap() + 12;
            b[at] = 0xff;
            b
        }),
    );
    c
}

fn be(v: u64) -> [u8; 8] {
    v.to_be_bytes()
}

/// The binary header: magic, version, sizes, offsets, checksums, the two copies.
fn binary_cases(md: usize) -> Vec<Case> {
    let mut c = Vec::new();
    let mut b = |name: &str, copy: usize, fix: bool, f: BytesEdit| {
        c.push(Case {
            name: name.into(),
            md,
            edit: Edit::Binary(copy, fix, f),
        })
    };
    for copy in [0, 1] {
        let which = ["primary", "secondary"][copy];
        b(
            &format!("{which}: checksum wrong"),
            copy,
            false,
            Box::new(|h| h[448] ^= 1),
        );
        b(
            &format!("{which}: magic wrong"),
            copy,
            true,
            Box::new(|h| h[0] ^= 1),
        );
        b(
            &format!("{which}: version 1"),
            copy,
            true,
            Box::new(|h| h[6..8].copy_from_slice(&[0, 1])),
        );
        b(
            &format!("{which}: version 3"),
            copy,
            true,
            Box::new(|h| h[6..8].copy_from_slice(&[0, 3])),
        );
        b(
            &format!("{which}: hdr_size 8 KiB"),
            copy,
            true,
            Box::new(|h| h[8..16].copy_from_slice(&be(8192))),
        );
        b(
            &format!("{which}: hdr_size not a power of two"),
            copy,
            true,
            Box::new(|h| h[8..16].copy_from_slice(&be(0x6000))),
        );
        b(
            &format!("{which}: hdr_size 8 MiB"),
            copy,
            true,
            Box::new(|h| h[8..16].copy_from_slice(&be(8 << 20))),
        );
        b(
            &format!("{which}: hdr_offset wrong"),
            copy,
            true,
            Box::new(|h| {
                let off = u64::from_be_bytes(h[256..264].try_into().unwrap());
                h[256..264].copy_from_slice(&be(off + 4096))
            }),
        );
        b(
            &format!("{which}: checksum_alg sha512, checksum by it"),
            copy,
            true,
            Box::new(|h| {
                h[72..104].fill(0);
                h[72..78].copy_from_slice(b"sha512")
            }),
        );
        b(
            &format!("{which}: checksum_alg SHA256 in capitals"),
            copy,
            true,
            Box::new(|h| {
                h[72..104].fill(0);
                h[72..78].copy_from_slice(b"SHA256")
            }),
        );
        b(
            &format!("{which}: checksum field bytes past the digest"),
            copy,
            false,
            Box::new(|h| h[480..512].fill(0xff)),
        );
        b(
            &format!("{which}: checksum_alg sha1"),
            copy,
            true,
            Box::new(|h| {
                h[72..104].fill(0);
                h[72..76].copy_from_slice(b"sha1")
            }),
        );
        b(
            &format!("{which}: checksum_alg unknown"),
            copy,
            true,
            Box::new(|h| {
                h[72..104].fill(0);
                h[72..79].copy_from_slice(b"mystery")
            }),
        );
        b(
            &format!("{which}: checksum_alg not terminated"),
            copy,
            true,
            Box::new(|h| h[72..104].fill(b'a')),
        );
        b(
            &format!("{which}: label not terminated"),
            copy,
            true,
            Box::new(|h| h[24..72].fill(b'L')),
        );
        b(
            &format!("{which}: subsystem not terminated"),
            copy,
            true,
            Box::new(|h| h[208..256].fill(b'S')),
        );
        b(
            &format!("{which}: uuid not terminated"),
            copy,
            true,
            Box::new(|h| h[168..208].fill(b'u')),
        );
        b(
            &format!("{which}: uuid empty"),
            copy,
            true,
            Box::new(|h| h[168..208].fill(0)),
        );
        b(
            &format!("{which}: padding not zero"),
            copy,
            true,
            Box::new(|h| h[300] = 1),
        );
        b(
            &format!("{which}: seqid + 1"),
            copy,
            true,
            Box::new(|h| {
                let s = u64::from_be_bytes(h[16..24].try_into().unwrap());
                h[16..24].copy_from_slice(&be(s + 1))
            }),
        );
    }
    b(
        "primary: hdr_size another allowed size",
        0,
        true,
        Box::new(move |h| {
            let other = if md == 0x4000 { 0x8000u64 } else { 0x4000 };
            h[8..16].copy_from_slice(&be(other))
        }),
    );
    // The copies disagree.
    let mut r = |name: &str, f: ImageEdit| {
        c.push(Case {
            name: name.into(),
            md,
            edit: Edit::Raw(f),
        })
    };
    r(
        "both checksums wrong",
        Box::new(|b, md| {
            b[448] ^= 1;
            b[md + 448] ^= 1;
        }),
    );
    r(
        "no primary at all (zeroed)",
        Box::new(|b, md| b[..md].fill(0)),
    );
    r(
        "no secondary at all (zeroed)",
        Box::new(|b, md| b[md..2 * md].fill(0)),
    );
    r("neither copy", Box::new(|b, md| b[..2 * md].fill(0)));
    r(
        "the secondary where the primary should be",
        Box::new(|b, md| {
            let s = b[md..2 * md].to_vec();
            b[..md].copy_from_slice(&s);
        }),
    );
    r(
        "the primary's magic in the secondary",
        Box::new(|b, md| {
            b[md..md + 6].copy_from_slice(b"LUKS\xba\xbe");
            checksum(b, md, md);
        }),
    );
    c.push(Case {
        name: "the copies differ, the secondary newer".into(),
        md,
        edit: Edit::Raw(Box::new(|b, md| {
            let area = &b[BINARY..md];
            let end = area.iter().position(|&x| x == 0).unwrap();
            let mut j: Value = serde_json::from_slice(&area[..end]).unwrap();
            j["tokens"]["0"]["key_uid"] = json!("newer-key");
            put_area(b, md, md, &serde_json::to_vec(&j).unwrap());
            let s = u64::from_be_bytes(b[md + 16..md + 24].try_into().unwrap());
            b[md + 16..md + 24].copy_from_slice(&be(s + 1));
            checksum(b, md, md);
        })),
    });
    c.push(Case {
        name: "the copies differ, same seqid".into(),
        md,
        edit: Edit::JsonCopy(1, set("tokens.0.key_uid", json!("other-key"))),
    });
    c.push(Case {
        name: "the primary's JSON invalid, the secondary fine".into(),
        md,
        edit: Edit::JsonCopy(0, set("segments.0.offset", json!("x"))),
    });
    c.push(Case {
        name: "the secondary's JSON invalid, the primary fine".into(),
        md,
        edit: Edit::JsonCopy(1, set("segments.0.offset", json!("x"))),
    });
    c
}

#[test]
fn atrest_reads_exactly_the_headers_cryptsetup_reads() {
    let dir = tempfile::Builder::new()
        .prefix("atrest-conformance-")
        .tempdir()
        .unwrap();
    let mds = [
        0x4000usize,
        0x8000,
        0x10000,
        0x20000,
        0x40000,
        0x80000,
        0x100000,
        0x200000,
        0x400000,
    ];
    let mut bases: BTreeMap<usize, Base> = mds
        .iter()
        .map(|&md| (md, make_base(dir.path(), md)))
        .collect();
    // A header in the middle of a cryptsetup reencryption (`reencrypt --init-only`: two
    // more segments, a reencrypt keyslot, the online-reencrypt-v2 requirement), filed
    // under a key no other base uses (the 16 KiB metadata size plus one).
    const REENCRYPT: usize = 0x4000 + 1;
    bases.insert(
        REENCRYPT,
        make_base_then(dir.path(), 0x4000, &REENCRYPT_INIT),
    );
    let mut cases = Vec::new();
    // Every case at 16 KiB (cryptsetup's default size); the walk and the hand-written rules
    // again at 4 MiB; the header-level cases at every size.
    cases.extend(walked(&bases[&0x4000]));
    let mut reencrypting = walked(&bases[&REENCRYPT]);
    for c in &mut reencrypting {
        c.name = format!("reencrypting: {}", c.name);
        c.md = REENCRYPT;
    }
    cases.extend(reencrypting);
    cases.push(json_case("reencrypting: unchanged", REENCRYPT, |_| {}));
    cases.extend(by_hand(0x4000));
    cases.extend(by_hand(0x400000));
    // Only 4 MiB of metadata holds this many (cryptsetup reads it; atrest, deliberately, not).
    cases.push(json_case("2000 tokens", 0x400000, |v| {
        for i in 1..2000 {
            v["tokens"][i.to_string()] = json!({"type": "mystery", "keyslots": []});
        }
    }));
    for &md in &mds[1..mds.len() - 1] {
        cases.extend(binary_cases(md));
        cases.push(json_case("unchanged", md, |_| {}));
    }
    cases.push(json_case("unchanged", 0x4000, |_| {}));
    let path: PathBuf = dir.path().join("case.img");
    let deliberate: BTreeMap<&str, &str> = DELIBERATE.iter().copied().collect();
    let (mut agree, mut accepted, mut differ) = (0, 0, Vec::new());
    let mut deliberate_seen = 0;
    for case in &cases {
        let base = &bases[&case.md];
        let (theirs, ours) = verdicts(&path, &image(base, &case.edit));
        let label = format!("[{} KiB] {}", base.md >> 10, case.name);
        match (&theirs, &ours) {
            (Ok(()), Ok(())) | (Err(_), Err(_)) => {
                agree += 1;
                accepted += usize::from(theirs.is_ok());
                assert!(
                    !deliberate.contains_key(case.name.as_str()),
                    "{label}: listed as a deliberate difference, but both now agree"
                );
            }
            (Ok(()), Err(why)) if deliberate.contains_key(case.name.as_str()) => {
                deliberate_seen += 1;
                let _ = why;
            }
            _ => differ.push(format!(
                "{label}: cryptsetup {}, atrest {}",
                match &theirs {
                    Ok(()) => "reads it".to_owned(),
                    Err(e) => format!("refuses it ({e})"),
                },
                match &ours {
                    Ok(()) => "reads it".to_owned(),
                    Err(e) => format!("refuses it ({e})"),
                }
            )),
        }
    }
    println!(
        "{} cases: {agree} agree ({accepted} read by both, {} refused by both), {deliberate_seen} deliberate differences, {} disagreements",
        cases.len(),
        agree - accepted,
        differ.len()
    );
    assert!(
        differ.is_empty(),
        "{} disagreements:\n{}",
        differ.len(),
        differ.join("\n")
    );
    assert!(cases.len() >= 400, "only {} cases", cases.len());
}

/// `atrest status` on what cryptsetup makes: every KDF, several keyslots, a detached header,
/// a reencryption in progress (by `reencrypt --init-only`, both a reencryption and an
/// encryption with a data shift). Each is described, said not to be atrest's, and for the
/// reencryptions, refused for opening with what to run.
#[test]
fn cryptsetup_volumes_of_every_kind_are_described() {
    use volume::describe::describe;
    let dir = tempfile::Builder::new()
        .prefix("atrest-describe-")
        .tempdir()
        .unwrap();
    let d = dir.path();
    let key = d.join("key");
    std::fs::write(&key, b"describe").unwrap();
    let key2 = d.join("key2");
    std::fs::write(&key2, b"describe-2").unwrap();
    let k = key.to_str().unwrap();
    let file = |name: &str, len: u64| {
        let p = d.join(name);
        std::fs::File::create(&p).unwrap().set_len(len).unwrap();
        p
    };
    let run = |args: &[&str]| {
        let out = cryptsetup(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let view = |hdr: &Path, data: &Path, detached: bool| {
        let h = FileBackend::new(std::fs::File::open(hdr).unwrap());
        let dd = FileBackend::new(std::fs::File::open(data).unwrap());
        describe(&h, &dd, detached).unwrap()
    };
    let fast = ["--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"];
    // argon2id and pbkdf2 keyslots on one volume.
    let a = file("argon.img", 40 << 20);
    let a_s = a.to_str().unwrap();
    run(&[
        "luksFormat",
        "--type",
        "luks2",
        "-q",
        "--pbkdf",
        "argon2id",
        "--pbkdf-memory",
        "32768",
        "--pbkdf-force-iterations",
        "4",
        "--key-file",
        k,
        a_s,
    ]);
    let mut add = vec!["luksAddKey", "-q"];
    add.extend(fast);
    add.extend(["--key-file", k, a_s, key2.to_str().unwrap()]);
    run(&add);
    let v = view(&a, &a, false);
    assert_eq!(v.keyslots.len(), 2, "{v:?}");
    let kdf = |i: usize| v.keyslots[i].kdf.clone().unwrap();
    assert!(
        kdf(0).starts_with("argon2id, time 4, memory 32768 KiB"),
        "{v:?}"
    );
    assert!(
        kdf(1).starts_with("pbkdf2-sha256, 1000 iterations"),
        "{v:?}"
    );
    assert_eq!(v.keyslots[0].key_bits, Some(512));
    assert_eq!(v.atrest_key_uid, None);
    assert_eq!(v.digests[0].2, ["0", "1"]);
    assert!(v.reencryption.is_none() && v.refused.is_none(), "{v:?}");
    // A detached header.
    let b = file("detached.img", 8 << 20);
    let h = d.join("detached.hdr");
    let mut fmt = vec!["luksFormat", "--type", "luks2", "-q"];
    fmt.extend(fast);
    let mut args = fmt.clone();
    args.extend([
        "--header",
        h.to_str().unwrap(),
        "--key-file",
        k,
        b.to_str().unwrap(),
    ]);
    run(&args);
    let v = view(&h, &b, true);
    assert_eq!(
        (v.segments[0].offset.as_str(), v.segments[0].size.as_str()),
        ("0", "dynamic")
    );
    assert!(v.refused.is_none(), "{v:?}");
    // A reencryption, initialised: nothing done yet, forward, checksum resilience.
    let r = file("reencrypt.img", 40 << 20);
    let r_s = r.to_str().unwrap();
    let mut args = fmt.clone();
    args.extend(["--key-file", k, r_s]);
    run(&args);
    let mut args = REENCRYPT_INIT.to_vec();
    args.extend(["--key-file", k, r_s]);
    run(&args);
    let v = view(&r, &r, false);
    let re = v.reencryption.as_ref().expect("no reencryption seen");
    assert_eq!(
        (
            re.mode.as_str(),
            re.direction.as_str(),
            re.resilience.as_str(),
            re.done,
            re.total
        ),
        (
            "reencrypt",
            "forward",
            "checksum",
            0,
            (40 << 20) - (16 << 20)
        ),
        "{v:?}"
    );
    assert_eq!(v.requirements, ["online-reencrypt-v2"]);
    assert!(
        v.segments.iter().any(|s| s.flags == ["backup-final"]),
        "{v:?}"
    );
    let why = v.refused.as_deref().unwrap();
    assert!(
        why.contains("reencryption is in progress") && why.contains("--resume-only"),
        "{why}"
    );
    // An encryption with a data shift, initialised: backward, datashift.
    let e = file("encrypt.img", 64 << 20);
    let e_s = e.to_str().unwrap();
    let mut args = vec![
        "reencrypt",
        "--encrypt",
        "--type",
        "luks2",
        "--init-only",
        "-q",
        "--reduce-device-size",
        "32M",
    ];
    args.extend(fast);
    args.extend(["--key-file", k, e_s]);
    run(&args);
    let v = view(&e, &e, false);
    let re = v.reencryption.as_ref().expect("no encryption seen");
    assert_eq!(
        (
            re.mode.as_str(),
            re.direction.as_str(),
            re.resilience.as_str(),
            re.done
        ),
        ("encrypt", "backward", "datashift", 0),
        "{v:?}"
    );
    assert!(v
        .refused
        .as_deref()
        .unwrap()
        .contains("reencryption is in progress"));
}
