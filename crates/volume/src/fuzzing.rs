//! Properties checked by the cargo-fuzz targets (`luks2_header`, `luks2_json`,
//! `convert_resume`) and, on fixed inputs, by the test suite. For a device image of any
//! content: nothing panics; a key that is not the volume's never unlocks it; nothing is
//! written unless a key was proven against a validated header and the conversion record
//! verified under it (a forged record, whatever its checksums, writes nothing). The allocation bound is enforced
//! by running the targets with `-malloc_limit_mb=64` (and asserted in
//! `volume/tests/hardening.rs`).

use std::sync::Arc;

use crate::backend::{BlockBackend, MemBackend};
use crate::luks2::binary::{BinaryHeader, BINARY_SIZE};
use crate::luks2::header;

/// The key the fuzz targets try: never the key of a header the fuzzer made, since that
/// would take a PBKDF2 preimage.
const WRONG_KEY: [u8; 32] = *b"fuzz-key-0123456789abcdef-FUZZKY";

/// Tries to unlock `dev` with [`WRONG_KEY`]: it must fail, and write nothing.
fn never_unlocks(dev: &Arc<MemBackend>) {
    let before = dev.changes();
    let d: Arc<dyn BlockBackend> = dev.clone();
    assert!(
        crate::volume::unlock(d, &WRONG_KEY).is_err(),
        "a wrong key unlocked a fuzzed header"
    );
    assert_eq!(dev.changes(), before, "a failed unlock wrote to the device");
}

/// Reads `data` as a device: parse the header, and if it parses, validate it, derive the
/// status and try to unlock with a wrong key.
pub fn luks2_header(data: &[u8]) {
    let dev = Arc::new(MemBackend::from_bytes(data.to_vec()));
    if header::read(dev.as_ref()).is_ok() {
        let _ = crate::volume::status(dev.as_ref());
        never_unlocks(&dev);
    }
}

/// Treats `data` as the JSON area of an otherwise valid header with a correct checksum, so
/// the fuzzer reaches the metadata checks instead of stopping at the checksum; then tries to
/// unlock the result with a fixed key. Errors are fine; panics are not.
pub fn luks2_json(data: &[u8]) {
    const HDR: u64 = 0x4000;
    let json_len = (HDR as usize) - BINARY_SIZE;
    let mut json = data.to_vec();
    json.truncate(json_len);
    json.resize(json_len, 0);
    let bin = BinaryHeader {
        secondary: false,
        hdr_size: HDR,
        seqid: 1,
        label: String::new(),
        checksum_alg: "sha256".into(),
        salt: [0; 64],
        uuid: "00000000-0000-4000-8000-000000000000".into(),
        subsystem: String::new(),
        hdr_offset: 0,
        csum: [0; 64],
    };
    let csum = bin.checksum(&json);
    // The device: this header, then room for a keyslot area and a little data, all zero.
    // Its 2 MiB are recycled from one run to the next: a fresh allocation each time cost
    // more (mapping and faulting the pages in) than everything the run checks.
    thread_local! {
        static IMAGE: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
    }
    let mut image = IMAGE.take();
    image.clear();
    image.extend_from_slice(&bin.to_bytes(&csum));
    image.extend_from_slice(&json);
    image.resize(2 << 20, 0);
    let dev = Arc::new(MemBackend::from_bytes(image));
    if header::read(dev.as_ref()).is_ok() {
        let _ = crate::volume::status(dev.as_ref());
        never_unlocks(&dev);
    }
    if let Ok(dev) = Arc::try_unwrap(dev) {
        IMAGE.set(dev.into_bytes());
    }
}

/// Treats `data` as a device a conversion was interrupted on: looks at what it holds and
/// tries to resume with fixed keys (the park record, the conversion state and the journal
/// are all parsed from it). The park record's encoding must round-trip. Errors are fine;
/// panics are not.
pub fn convert_resume(data: &[u8]) {
    use crate::convert::{self, park, Keys, Options};
    if data.len() >= park::RECORD_LEN as usize {
        let tail = &data[data.len() - park::RECORD_LEN as usize..];
        if let Some(r) = park::decode(tail) {
            // Re-encoding may add defaulted fields and no longer fit; that is an error, not a
            // panic, and what does fit must decode to the same record.
            if let Ok(b) = park::encode(&r) {
                assert_eq!(park::decode(&b), Some(r));
            }
        }
    }
    // The record's JSON behind a valid magic, length and checksum, so the fuzzer reaches
    // the parser instead of stopping at the checksum.
    let json = &data[..data.len().min(park::RECORD_LEN as usize - 52)];
    if let Some(r) = convert::record::seal_bytes(park::MAGIC, json)
        .ok()
        .and_then(|block| park::decode(&block))
    {
        // Re-encoding may add defaulted fields and no longer fit; that is an error, not a
        // panic, and what does fit must decode to the same record.
        if let Ok(b) = park::encode(&r) {
            assert_eq!(park::decode(&b), Some(r));
        }
    }
    let dev = MemBackend::from_bytes(data.to_vec());
    let _ = convert::inspect(convert::Devices::attached(&dev));
    let keys = Keys {
        current: Some(&WRONG_KEY),
        new: Some(&WRONG_KEY),
    };
    let stop = std::sync::atomic::AtomicBool::new(false);
    let _ = convert::run(
        convert::Devices::attached(&dev),
        keys,
        Options::default(),
        &stop,
        &mut |_| {},
    );
    // Every record that steers a conversion (header state, park record, journal record)
    // must carry a tag under the key (`convert::auth`); the fuzzer can make every checksum
    // valid but cannot make a tag, so whatever it forged, nothing may be written.
    assert!(
        dev.contents() == data,
        "a conversion wrote on the strength of a record the fuzzer forged"
    );
}

/// The key of the conversion [`forged_state`] forges records for.
const RIGHT_KEY: [u8; 32] = *b"fuzz-right-key-0123456789abcdef-";

/// A real decryption of 2 MiB, stopped after its first committed step, made once under
/// [`RIGHT_KEY`].
fn stopped_decryption() -> Vec<u8> {
    use crate::convert::{self, park::HeaderPlan, Devices, Keys, Options, Outcome};
    use crate::luks2::token::KeyMode;
    let plain: Vec<u8> = (0..2u32 << 20).map(|i| (i % 251) as u8).collect();
    let dev = MemBackend::from_bytes(plain.clone());
    let plan = HeaderPlan {
        key_uid: "fuzz-key".into(),
        key_mode: KeyMode::Wrapped,
        volume_key_len: 32,
        sector_size: 512,
        server_hint: None,
    };
    let keys = Keys {
        current: Some(&RIGHT_KEY),
        new: None,
    };
    let stop = std::sync::atomic::AtomicBool::new(false);
    let opts = Options { chunk: 256 << 10 };
    convert::begin_encrypt(&dev, &plan, plain.len() as u64, &RIGHT_KEY).expect("encrypt");
    let out = convert::run(Devices::attached(&dev), keys, opts, &stop, &mut |_| {});
    assert_eq!(out.expect("encrypt"), Outcome::Finished);
    convert::begin_decrypt(Devices::attached(&dev), &RIGHT_KEY).expect("decrypt");
    let out = convert::run(Devices::attached(&dev), keys, opts, &stop, &mut |p| {
        if p.done > 0 {
            stop.store(true, std::sync::atomic::Ordering::SeqCst)
        }
    });
    assert!(matches!(out, Ok(Outcome::Stopped(_))));
    dev.into_bytes()
}

/// Treats `data` as the JSON of the `conversion` state that someone who can write the disk
/// puts into a real, interrupted decryption's header (checksums valid), then resumes with
/// the RIGHT key, as the daemon or the operator would: unless the state is the one atrest
/// wrote, nothing may be written.
pub fn forged_state(data: &[u8]) {
    thread_local! {
        static BASE: std::cell::OnceCell<Vec<u8>> = const { std::cell::OnceCell::new() };
    }
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let base = BASE.with(|b| b.get_or_init(stopped_decryption).clone());
    let dev = MemBackend::from_bytes(base);
    let Ok(read) = header::read(&dev) else {
        return;
    };
    let mut h = read.header;
    let Some(token) = h.metadata.tokens.get_mut("0") else {
        return;
    };
    if token.extra.get("conversion") == Some(&value) {
        return;
    }
    token.extra.insert("conversion".into(), value);
    if header::write(&dev, &mut h).is_err() {
        return;
    }
    let forged = dev.contents();
    let keys = crate::convert::Keys {
        current: Some(&RIGHT_KEY),
        new: Some(&RIGHT_KEY),
    };
    let stop = std::sync::atomic::AtomicBool::new(false);
    let _ = crate::convert::run(
        crate::convert::Devices::attached(&dev),
        keys,
        crate::convert::Options::default(),
        &stop,
        &mut |_| {},
    );
    assert!(
        dev.contents() == forged,
        "a forged conversion state led to a write under the right key"
    );
}

/// A 20 MiB sparse image cryptsetup formatted (pbkdf2, its default 16 KiB of metadata and
/// keyslots area), made once per process, and its two header copies; `None` where
/// cryptsetup is not installed.
fn cryptsetup_base() -> Option<&'static (std::path::PathBuf, Vec<u8>)> {
    static BASE: std::sync::OnceLock<Option<(std::path::PathBuf, Vec<u8>)>> =
        std::sync::OnceLock::new();
    BASE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("atrest-fuzz-cs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).ok()?;
        let img = dir.join("case.img");
        let key = dir.join("key");
        std::fs::write(&key, b"fuzz").ok()?;
        std::fs::File::create(&img).ok()?.set_len(20 << 20).ok()?;
        let ok = std::process::Command::new("cryptsetup")
            .args(["luksFormat", "--type", "luks2", "-q", "--pbkdf", "pbkdf2"])
            .args(["--pbkdf-force-iterations", "1000", "--key-file"])
            .args([&key, &img])
            .output()
            .ok()?
            .status
            .success();
        if !ok {
            return None;
        }
        let mut head = vec![0u8; 2 * 0x4000];
        use std::os::unix::fs::FileExt;
        std::fs::File::open(&img)
            .ok()?
            .read_exact_at(&mut head, 0)
            .ok()?;
        Some((img, head))
    })
    .as_ref()
}

/// The differential property against stock cryptsetup (issue 26), where it is installed:
/// `data` becomes the JSON area of both copies of a cryptsetup-made header, checksums fixed
/// up; `cryptsetup luksDump` and atrest's reader must agree. The one allowed difference is
/// JSON that json-c reads and standard JSON does not (comments, trailing commas, single
/// quotes, bytes that are not UTF-8: `docs/format.md`). Slow (a process per input): run it
/// outside CI.
pub fn luks2_vs_cryptsetup(data: &[u8]) {
    use crate::backend::FileBackend;
    use std::os::unix::fs::FileExt;
    let Some((path, base)) = cryptsetup_base() else {
        return;
    };
    const MD: usize = 0x4000;
    let mut img = base.clone();
    for at in [0, MD] {
        let area = &mut img[at + BINARY_SIZE..at + MD];
        area.fill(0);
        let n = data.len().min(area.len());
        area[..n].copy_from_slice(&data[..n]);
        img[at + 448..at + 512].fill(0);
        let sum = openssl::sha::sha256(&img[at..at + MD]);
        img[at + 448..at + 480].copy_from_slice(&sum);
    }
    let written = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|f| f.write_all_at(&img, 0));
    if written.is_err() {
        return;
    }
    // atrest first: luksDump may rewrite a copy it finds damaged.
    let ours = std::fs::File::open(path)
        .map(FileBackend::new)
        .map(|dev| header::read(&dev));
    let Ok(ours) = ours else { return };
    let Ok(out) = std::process::Command::new("cryptsetup")
        .args(["luksDump", "--disable-locks"])
        .arg(path)
        .output()
    else {
        return;
    };
    let theirs = out.status.success();
    match (&ours, theirs) {
        (Ok(_), false) => panic!(
            "atrest reads a header cryptsetup refuses: {}",
            String::from_utf8_lossy(&data[..data.len().min(4000)])
        ),
        (Err(crate::luks2::Luks2Error::Json { .. }), true) => {}
        (Err(crate::luks2::Luks2Error::BothCopiesDamaged { primary, .. }), true)
            if primary.contains("JSON metadata") => {}
        (Err(e), true) => panic!(
            "atrest refuses a header cryptsetup reads ({e}): {}",
            String::from_utf8_lossy(&data[..data.len().min(4000)])
        ),
        _ => {}
    }
}
