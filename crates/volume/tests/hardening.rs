//! Issue 10: a volume header is attacker-writable, so each defect the review found is
//! reproduced here with a header whose checksums are valid (written by atrest's own
//! header writer after the JSON was changed), and the fix is held to it:
//!
//! 1. no plaintext (or old ciphertext) is left outside the encrypted segment;
//! 2. hostile sizes, iterations and park records are refused by name, before any
//!    allocation they size and before any write, without a panic;
//! 3. a digest that could verify any key is refused, and a wrong key never unlocks;
//! 4. features atrest does not implement are refused by name, and `iv_tweak` is honoured;
//! 5. a device shorter than its header's segment is refused before anything is written.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use openssl::symm::{Cipher, Crypter, Mode};
use testkit::alloc::{watch, Watching};
use volume::backend::{BlockBackend, MemBackend};
use volume::convert::park::HeaderPlan;
use volume::convert::{self, Devices, Keys, Options, Outcome};
use volume::layout::DATA_OFFSET;
use volume::luks2::header;
use volume::luks2::metadata::Metadata;
use volume::luks2::Luks2Error;
use volume::volume::{format, status, unlock, FormatOptions, KeyMode, VolumeError};

/// The allocation watcher: hostile headers are held to [`ALLOCATION_BOUND`] with it.
#[global_allocator]
static ALLOC: Watching = Watching;

/// No header may make atrest allocate more than this at once (the largest legitimate
/// buffers are a 16 MiB conversion step and the 17 MiB test devices themselves).
const ALLOCATION_BOUND: usize = 64 << 20;

const KEY: [u8; 32] = *b"right-key-0123456789abcdef-RIGHT";
const WRONG: [u8; 32] = *b"wrong-key-0123456789abcdef-WRONG";
const NEW: [u8; 32] = *b"new-key-fedcba9876543210-NEW-KEY";
static NO_STOP: AtomicBool = AtomicBool::new(false);

fn opts(mode: KeyMode, key_len: usize, ss: u32) -> FormatOptions {
    FormatOptions {
        mode,
        volume_key_len: key_len,
        sector_size: ss,
        key_uid: "uid-7".into(),
        server_hint: Some("kms.example:5696".into()),
        data_size: None,
        detached: false,
    }
}

fn formatted(mode: KeyMode) -> Arc<MemBackend> {
    let dev = Arc::new(MemBackend::new(17 << 20));
    format(dev.as_ref(), &KEY, &opts(mode, 32, 512)).unwrap();
    dev
}

/// Lines of text, as an appliance's configuration and audit history hold them.
fn text(len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len + 100);
    let mut i = 0u64;
    while v.len() < len {
        v.extend_from_slice(
            format!(
                "2026-11-29T10:{:02}:{:02}Z session {i} opened by alice from 10.0.0.{}\n",
                i / 60 % 60,
                i % 60,
                i % 250
            )
            .as_bytes(),
        );
        i += 1;
    }
    v.truncate(len);
    v
}

fn plan(mode: KeyMode, key_len: usize, ss: u32) -> HeaderPlan {
    HeaderPlan {
        key_uid: "uid-7".into(),
        key_mode: mode,
        volume_key_len: key_len,
        sector_size: ss,
        server_hint: None,
    }
}

fn run(d: Devices<'_>, keys: Keys<'_>) -> Result<Outcome, convert::ConvertError> {
    convert::run(d, keys, Options { chunk: 512 << 10 }, &NO_STOP, &mut |_| {})
}

fn keys(current: &[u8]) -> Keys<'_> {
    Keys {
        current: Some(current),
        new: None,
    }
}

/// `plain` as a growable image whose encryption in place has begun (wrapped, 32-byte key,
/// 512-byte sectors) and not yet run.
fn encryption_begun(plain: &[u8]) -> FixedSize {
    let dev = FixedSize::growable(plain.to_vec());
    convert::begin_encrypt(
        &dev,
        &plan(KeyMode::Wrapped, 32, 512),
        plain.len() as u64,
        &KEY,
    )
    .unwrap();
    dev
}

/// `plain` as a growable image, encrypted in place to the end.
fn encrypted(plain: &[u8]) -> FixedSize {
    let dev = encryption_begun(plain);
    run(Devices::attached(&dev), keys(&KEY)).unwrap();
    dev
}

/// Every offset outside `seg` at which `needle` occurs in `image`.
fn found_outside(image: &[u8], seg: std::ops::Range<usize>, needle: &[u8]) -> Vec<usize> {
    image
        .windows(needle.len())
        .enumerate()
        .filter(|(i, w)| !seg.contains(i) && *w == needle)
        .map(|(i, _)| i)
        .collect()
}

#[test]
fn r10_1_encrypt_leaves_no_plaintext_outside_the_segment() {
    let plain = text(3 << 20);
    for (mode, key_len, ss) in [
        (KeyMode::Wrapped, 32, 512),
        (KeyMode::Wrapped, 64, 4096),
        (KeyMode::Direct, 32, 512),
    ] {
        let what = format!("{mode} {}-bit {ss}", key_len * 8);
        // An image file (grows) and a block device (keeps its size, room at the end).
        for block_device in [false, true] {
            let mut img = plain.clone();
            if block_device {
                img.resize(plain.len() + (18 << 20), 0);
            }
            let dev = if block_device {
                FixedSize::new(img)
            } else {
                FixedSize::growable(img)
            };
            convert::begin_encrypt(&dev, &plan(mode, key_len, ss), plain.len() as u64, &KEY)
                .unwrap();
            assert_eq!(
                run(Devices::attached(&dev), keys(&KEY)).unwrap(),
                Outcome::Finished
            );
            let out = dev.0.contents();
            let d = DATA_OFFSET as usize;
            let hits = found_outside(&out, d..d + plain.len(), b"opened by alice");
            assert!(
                hits.is_empty(),
                "{what} (block device: {block_device}): plaintext at {hits:x?}"
            );
        }
        // A detached header: the header file holds no plaintext either (the journal of
        // the in-place encryption once held every hot zone's plaintext for a while; it
        // now holds salted checksums).
        let data = MemBackend::from_bytes(plain.clone());
        let hdr = MemBackend::new(16 << 20);
        let d = Devices::detached(&hdr, &data);
        convert::begin_encrypt_in_place(d, &plan(mode, key_len, ss), &KEY).unwrap();
        assert_eq!(run(d, keys(&KEY)).unwrap(), Outcome::Finished);
        let hits = found_outside(&hdr.contents(), 0..0, b"opened by alice");
        assert!(
            hits.is_empty(),
            "{what} --header: plaintext in the header file at {hits:x?}"
        );
        assert!(found_outside(&data.contents(), 0..0, b"opened by alice").is_empty());
    }
}

#[test]
fn r10_1_deep_rekey_leaves_no_old_ciphertext_in_the_journal() {
    let plain = text(3 << 20);
    let dev = encrypted(&plain);
    let before = dev.0.contents();
    let d = DATA_OFFSET as usize;
    convert::begin_rekey(Devices::attached(&dev), &KEY, &NEW, "uid-8").unwrap();
    let k = Keys {
        current: Some(&KEY),
        new: Some(&NEW),
    };
    assert_eq!(run(Devices::attached(&dev), k).unwrap(), Outcome::Finished);
    let after = dev.0.contents();
    // Any 64-byte run of the old ciphertext, anywhere outside the segment.
    for probe in (0..plain.len()).step_by(64 << 10) {
        let needle = &before[d + probe..d + probe + 64];
        let hits = found_outside(&after, d..d + plain.len(), needle);
        assert!(
            hits.is_empty(),
            "old ciphertext of byte {probe} left at {hits:x?}"
        );
    }
}

/// A device whose length only `set_len` changes (growable: an image file; fixed: a block
/// device).
struct FixedSize(MemBackend, bool);

impl FixedSize {
    fn new(b: Vec<u8>) -> Self {
        Self(MemBackend::from_bytes(b), false)
    }
    fn growable(b: Vec<u8>) -> Self {
        Self(MemBackend::from_bytes(b), true)
    }
}

impl BlockBackend for FixedSize {
    fn len(&self) -> std::io::Result<u64> {
        self.0.len()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.0.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        self.0.write_at(buf, offset)
    }
    fn sync(&self) -> std::io::Result<()> {
        Ok(())
    }
    fn resizable(&self) -> bool {
        self.1
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        if !self.1 {
            return Err(std::io::ErrorKind::Unsupported.into());
        }
        self.0.set_len(len)
    }
}

/// Rewrites the header of `dev` after `edit` changed its JSON: the checksums are valid,
/// as an attacker with a copy of atrest (or of cryptsetup) would make them.
fn tamper(dev: &dyn BlockBackend, edit: impl FnOnce(&mut Metadata)) {
    let mut h = header::read(dev).unwrap().header;
    edit(&mut h.metadata);
    header::write_unchecked(dev, &mut h).unwrap();
}

/// Everything that reads a header, on a tampered device: each must refuse with an error
/// (whose text is returned), never panic, never write, never allocate beyond the bound.
fn refused_everywhere(dev: &MemBackend) -> String {
    let before = dev.contents();
    let shared: Arc<dyn BlockBackend> = Arc::new(MemBackend::from_bytes(before.clone()));
    let ((st, un, wrong, dec, rew, rek, res), largest) = watch(|| {
        let st = status(dev).map(|_| ()).unwrap_err().to_string();
        let un = unlock(shared.clone(), &KEY)
            .map(|_| ())
            .unwrap_err()
            .to_string();
        let wrong = unlock(shared, &WRONG).map(|_| ()).unwrap_err().to_string();
        let d = Devices::attached(dev);
        let dec = convert::begin_decrypt(d, &KEY).unwrap_err().to_string();
        let rew = convert::rewrap(d, &KEY, &NEW, "uid-8")
            .unwrap_err()
            .to_string();
        let rek = convert::begin_rekey(d, &KEY, &NEW, "uid-8")
            .unwrap_err()
            .to_string();
        let res = run(
            d,
            Keys {
                current: Some(&KEY),
                new: Some(&NEW),
            },
        )
        .map(|_| ())
        .unwrap_err()
        .to_string();
        let _ = convert::inspect(d);
        (st, un, wrong, dec, rew, rek, res)
    });
    assert!(
        largest <= ALLOCATION_BOUND,
        "a hostile header made atrest allocate {largest} bytes at once"
    );
    assert!(dev.contents() == before, "a refused header led to a write");
    for e in [&un, &wrong, &dec, &rew, &rek, &res] {
        assert!(!e.is_empty());
    }
    assert_eq!(un, wrong, "the error must not depend on the key");
    format!("{st} | {un} | {dec} | {res}")
}

#[test]
fn r10_2_hostile_segment_sizes_are_refused_before_anything_allocates_or_writes() {
    for size in [
        "18446744073709551615",
        "1",
        "511",
        "8388609",
        "0",
        "-5",
        "1e9",
        "99999999999999999999",
    ] {
        let dev = formatted(KeyMode::Wrapped);
        tamper(dev.as_ref(), |m| {
            m.segments.get_mut("0").unwrap().size = size.into()
        });
        let e = refused_everywhere(&dev);
        assert!(
            e.contains("segments.0.size") || e.contains("bytes are missing"),
            "size {size}: {e}"
        );
    }
    // Offsets inside the header area, unaligned, or past the end.
    for offset in [0u64, 4096, DATA_OFFSET + 100, u64::MAX - 511] {
        let dev = formatted(KeyMode::Wrapped);
        tamper(dev.as_ref(), |m| {
            m.segments.get_mut("0").unwrap().offset = offset
        });
        let e = refused_everywhere(&dev);
        assert!(
            e.contains("segments.0.offset") || e.contains("bytes are missing"),
            "offset {offset}: {e}"
        );
        // Found by an outside run: a segment starting past the device's end was reported
        // as exabytes "missing", as if the image were truncated.
        if offset > 17 << 20 {
            assert!(
                e.contains("past the end") && !e.contains("missing"),
                "offset {offset}: {e}"
            );
        }
    }
    for ss in [0u32, 16, 8192, 513] {
        let dev = formatted(KeyMode::Wrapped);
        tamper(dev.as_ref(), |m| {
            m.segments.get_mut("0").unwrap().sector_size = Some(ss)
        });
        let e = refused_everywhere(&dev);
        assert!(e.contains("sector_size"), "sector size {ss}: {e}");
    }
}

#[test]
fn r10_2_hostile_kdf_and_keyslot_parameters_are_refused_without_a_panic() {
    for it in [0u32, 1, 999, u32::MAX, (1 << 24) + 1] {
        let dev = formatted(KeyMode::Wrapped);
        tamper(dev.as_ref(), |m| {
            m.digests.get_mut("0").unwrap().iterations = it
        });
        let e = refused_everywhere(&dev);
        assert!(
            e.contains("digests.0.iterations"),
            "digest iterations {it}: {e}"
        );
        let dev = formatted(KeyMode::Wrapped);
        tamper(dev.as_ref(), |m| {
            m.keyslots.get_mut("0").unwrap().kdf.iterations = Some(it)
        });
        let e = refused_everywhere(&dev);
        assert!(
            e.contains("keyslots.0.kdf.iterations"),
            "keyslot iterations {it}: {e}"
        );
    }
    type Edit = fn(&mut Metadata);
    let edits: [(&str, Edit); 8] = [
        ("keyslots.0.area", |m| {
            m.keyslots.get_mut("0").unwrap().area.offset = u64::MAX - 4096
        }),
        ("keyslots.0.area.offset", |m| {
            m.keyslots.get_mut("0").unwrap().area.offset = 100
        }),
        ("keyslots.0.area.size", |m| {
            m.keyslots.get_mut("0").unwrap().area.size = 4096
        }),
        ("keyslots.0.af.stripes", |m| {
            m.keyslots.get_mut("0").unwrap().af.stripes = u32::MAX
        }),
        ("keyslots.0.key_size", |m| {
            m.keyslots.get_mut("0").unwrap().key_size = 1 << 30
        }),
        ("keyslots.0.kdf.salt", |m| {
            m.keyslots.get_mut("0").unwrap().kdf.salt = "!!".into()
        }),
        ("config.keyslots_size", |m| {
            m.config.keyslots_size = u64::MAX - 4095
        }),
        ("digests.0.keyslots", |m| {
            m.digests.get_mut("0").unwrap().keyslots = vec!["9".into()]
        }),
    ];
    for (field, edit) in edits {
        let dev = formatted(KeyMode::Wrapped);
        tamper(dev.as_ref(), edit);
        let e = refused_everywhere(&dev);
        assert!(e.contains(field), "{field}: {e}");
    }
}

/// A volume in the middle of an encryption, stopped after its first committed step.
fn half_encrypted() -> FixedSize {
    let dev = encryption_begun(&text(3 << 20));
    let stop = AtomicBool::new(false);
    let out = convert::run(
        Devices::attached(&dev),
        keys(&KEY),
        Options { chunk: 512 << 10 },
        &stop,
        &mut |p| {
            if p.done > 0 {
                stop.store(true, Ordering::SeqCst)
            }
        },
    )
    .unwrap();
    assert!(matches!(out, Outcome::Stopped(_)));
    dev
}

fn edit_conversion(m: &mut Metadata, field: &str, value: serde_json::Value) {
    let t = m.tokens.get_mut("0").unwrap();
    let c = t.extra.get_mut("conversion").unwrap();
    let mut path = field.split('.').peekable();
    let mut at = c;
    while let Some(k) = path.next() {
        if path.peek().is_none() {
            at[k] = value;
            return;
        }
        at = &mut at[k];
    }
}

#[test]
fn r10_2_hostile_conversion_records_are_refused_and_no_retry_panics() {
    let cases: [(&str, serde_json::Value); 8] = [
        ("park.len", serde_json::json!("18446744073709551615")),
        ("park.offset", serde_json::json!("18446744073709551000")),
        ("park.len", serde_json::json!("0")),
        ("done", serde_json::json!("18446744073709551615")),
        ("done", serde_json::json!("511")),
        ("size", serde_json::json!("1")),
        ("park.sha256", serde_json::json!("zz")),
        ("in_place", serde_json::json!(true)),
    ];
    for (field, value) in cases {
        let dev = half_encrypted();
        tamper(&dev, |m| edit_conversion(m, field, value.clone()));
        let before = dev.0.contents();
        let ((), largest) = watch(|| {
            for _ in 0..2 {
                // Twice: a refused run must leave nothing that panics the next one.
                let e = run(Devices::attached(&dev), keys(&KEY))
                    .unwrap_err()
                    .to_string();
                assert!(
                    e.contains("conversion.") || e.contains("segments.0.size"),
                    "{field} = {value}: {e}"
                );
                assert!(status(&dev).is_err());
                let _ = convert::inspect(Devices::attached(&dev));
            }
        });
        assert!(
            largest <= ALLOCATION_BOUND,
            "{field}: allocated {largest} bytes at once"
        );
        assert!(
            dev.0.contents() == before,
            "{field}: a refused record led to a write"
        );
    }
}

#[test]
fn r10_3_an_empty_or_short_digest_never_lets_a_wrong_key_unlock() {
    for mode in [KeyMode::Wrapped, KeyMode::Direct] {
        for digest in ["", "AA==", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=="] {
            let dev = formatted(mode);
            tamper(dev.as_ref(), |m| {
                m.digests.get_mut("0").unwrap().digest = digest.into()
            });
            let d: Arc<dyn BlockBackend> = dev.clone();
            let e = unlock(d, &WRONG).map(|_| ()).unwrap_err();
            assert!(
                matches!(e, VolumeError::Header(Luks2Error::Corrupt { ref field, .. }) if field == "digests.0.digest"),
                "{mode} digest {digest:?}: {e}"
            );
            refused_everywhere(&dev);
        }
    }
    // And with an intact header a wrong key is refused as such, writing nothing.
    let dev = formatted(KeyMode::Direct);
    let before = dev.contents();
    let d: Arc<dyn BlockBackend> = dev.clone();
    assert!(matches!(unlock(d, &WRONG), Err(VolumeError::WrongKey)));
    assert!(dev.contents() == before);
}

#[test]
fn r10_4_unsupported_features_are_refused_by_name() {
    type Edit = fn(&mut Metadata);
    // Each makes a header that is LUKS2 by cryptsetup's rules (it reads them all), with
    // a feature atrest does not implement.
    let edits: [(&str, Edit); 6] = [
        ("mandatory requirement", |m| {
            m.config.requirements = Some(volume::luks2::metadata::Requirements {
                mandatory: vec!["mystery-v1".into()],
                extra: Default::default(),
            })
        }),
        ("key mode", |m| {
            m.tokens
                .get_mut("0")
                .unwrap()
                .extra
                .insert("key_mode".into(), "escrowed".into());
        }),
        ("segment layout", |m| {
            let mut s = m.segments["0"].clone();
            s.kind = "linear".into();
            s.offset += 1 << 20;
            s.size = "dynamic".into();
            s.iv_tweak = None;
            s.encryption = None;
            s.sector_size = None;
            m.segments.get_mut("0").unwrap().size = (1u64 << 20).to_string();
            m.segments.insert("1".into(), s);
        }),
        ("cipher", |m| {
            m.segments.get_mut("0").unwrap().encryption = Some("aes-cbc-essiv:sha256".into())
        }),
        ("integrity protection", |m| {
            m.segments.get_mut("0").unwrap().extra.insert(
                "integrity".into(),
                serde_json::json!({"type": "hmac(sha256)", "journal_encryption": "none",
                    "journal_integrity": "none"}),
            );
        }),
        ("keyslot", |m| {
            m.keyslots.get_mut("0").unwrap().kind = "mystery".into()
        }),
    ];
    for (name, edit) in edits {
        let dev = formatted(KeyMode::Wrapped);
        tamper(dev.as_ref(), edit);
        let e = refused_everywhere(&dev);
        assert!(e.contains(name) && e.contains("unsupported"), "{name}: {e}");
    }
}

fn openssl_xts(key: &[u8], data: &[u8], ss: usize, first: u64, mode: Mode) -> Vec<u8> {
    let cipher = if key.len() == 32 {
        Cipher::aes_128_xts()
    } else {
        Cipher::aes_256_xts()
    };
    let mut out = Vec::new();
    for (i, sector) in data.chunks(ss).enumerate() {
        let mut iv = [0u8; 16];
        iv[..8].copy_from_slice(&(first + (i * ss / 512) as u64).to_le_bytes());
        let mut c = Crypter::new(cipher, mode, key, Some(&iv)).unwrap();
        let mut buf = vec![0u8; ss + 32];
        let n = c.update(sector, &mut buf).unwrap();
        let m = c.finalize(&mut buf[n..]).unwrap();
        out.extend_from_slice(&buf[..n + m]);
    }
    out
}

#[test]
fn r10_4_a_nonzero_iv_tweak_is_honoured_as_dm_crypt_honours_it() {
    // Direct mode: the KMIP key is the volume key, so OpenSSL can play dm-crypt.
    for ss in [512u32, 4096] {
        let dev = Arc::new(MemBackend::new(17 << 20));
        format(dev.as_ref(), &KEY, &opts(KeyMode::Direct, 32, ss)).unwrap();
        let tweak = 8 * 1000 + 24;
        tamper(dev.as_ref(), |m| {
            m.segments.get_mut("0").unwrap().iv_tweak = Some(tweak.to_string())
        });
        let plain = text(64 << 10);
        let d = DATA_OFFSET as usize;
        let ct = openssl_xts(&KEY, &plain, ss as usize, tweak, Mode::Encrypt);
        dev.write_at(&ct, DATA_OFFSET).unwrap();
        let d2: Arc<dyn BlockBackend> = dev.clone();
        let v = unlock(d2, &KEY).unwrap();
        let mut back = vec![0u8; plain.len()];
        v.read_at(&mut back, 0).unwrap();
        assert!(back == plain, "{ss}: atrest read with the wrong tweak");
        // And what atrest writes, dm-crypt (OpenSSL) reads.
        let more = text(8192);
        v.write_at(&more, 4 * u64::from(ss)).unwrap();
        let mut raw = vec![0u8; more.len()];
        dev.read_at(&mut raw, DATA_OFFSET + 4 * u64::from(ss))
            .unwrap();
        let first = tweak + 4 * u64::from(ss) / 512;
        assert!(openssl_xts(&KEY, &raw, ss as usize, first, Mode::Decrypt) == more);
        let _ = d;
        // The digest does not cover the tweak, so status shows it for the operator to see.
        assert_eq!(status(dev.as_ref()).unwrap().iv_tweak, tweak);
    }
    // A tweak dm-crypt would refuse (not a whole number of 4096-byte sectors).
    let dev = Arc::new(MemBackend::new(17 << 20));
    format(dev.as_ref(), &KEY, &opts(KeyMode::Direct, 32, 4096)).unwrap();
    tamper(dev.as_ref(), |m| {
        m.segments.get_mut("0").unwrap().iv_tweak = Some("3".into())
    });
    assert!(refused_everywhere(&dev).contains("iv_tweak"));
}

#[test]
fn r10_5_a_truncated_image_is_refused_before_anything_is_written() {
    let dev = encrypted(&text(3 << 20));
    // The image loses its last MiB (a copy cut short, a full disk).
    let full = dev.0.contents();
    let cut = FixedSize::growable(full[..full.len() - (1 << 20)].to_vec());
    let before = cut.0.contents();
    let e = convert::begin_decrypt(Devices::attached(&cut), &KEY)
        .unwrap_err()
        .to_string();
    assert!(e.contains("1048576 bytes are missing"), "{e}");
    assert!(
        cut.0.contents() == before,
        "decrypt wrote to a truncated image"
    );
    let e = status(&cut).unwrap_err().to_string();
    assert!(e.contains("1048576 bytes are missing"), "{e}");
}

#[test]
fn the_fuzz_properties_hold_on_hostile_headers() {
    // The cargo-fuzz targets' properties (`volume::fuzzing`) on the tampered devices above.
    let dev = formatted(KeyMode::Wrapped);
    tamper(dev.as_ref(), |m| {
        m.digests.get_mut("0").unwrap().digest = String::new()
    });
    volume::fuzzing::luks2_header(&dev.contents());
    volume::fuzzing::convert_resume(&dev.contents()[..(17 << 20)]);
    let h = half_encrypted();
    volume::fuzzing::convert_resume(&h.0.contents());
}
