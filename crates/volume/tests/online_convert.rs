//! Conversions of a volume in use (issue 22): a deep rekey, and an encrypt and a decrypt
//! with a detached header. Writers and readers work on the served volume from several
//! threads for the whole conversion, each thread on its own stripe of sectors, checking
//! every read against what it wrote last; afterwards the volume reads back what the
//! threads wrote, through the served volume and from the disk alone (a fresh unlock, or
//! the raw plaintext), and the old side no longer reads it. Small steps, so that the I/O
//! meets many boundaries and hot zones.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use volume::backend::{BlockBackend, MemBackend};
use volume::convert::park::HeaderPlan;
use volume::convert::{self, Devices, Keys, Options, Outcome};
use volume::volume::{unlock, unlock_detached, KeyMode, Unlocked};

const OLD: [u8; 32] = [0x11; 32];
const NEW: [u8; 32] = [0x22; 32];
const SIZE: usize = 8 << 20;
const THREADS: u64 = 4;
/// A thread's block (it owns every THREADS-th one).
const BLOCK: u64 = 12 * 1024 + 512;

fn plan(sector_size: u32) -> HeaderPlan {
    HeaderPlan {
        key_uid: "old-key".into(),
        key_mode: KeyMode::Wrapped,
        volume_key_len: 32,
        sector_size,
        server_hint: None,
    }
}

/// Plaintext that is not zeros, so a sector left unconverted shows.
fn noise(len: usize) -> Vec<u8> {
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn encrypted_image() -> Arc<MemBackend> {
    let dev = Arc::new(MemBackend::from_bytes(vec![0u8; SIZE]));
    let plan = plan(512);
    convert::begin_encrypt(dev.as_ref(), &plan, SIZE as u64, &OLD).unwrap();
    let keys = Keys {
        current: Some(&OLD),
        new: None,
    };
    let stop = AtomicBool::new(false);
    assert!(matches!(
        convert::run(
            Devices::attached(dev.as_ref()),
            keys,
            Options::default(),
            &stop,
            &mut |_| {}
        )
        .unwrap(),
        Outcome::Finished
    ));
    dev
}

/// The byte pattern of `thread`'s write number `n` to block `b`.
fn pattern(thread: u64, n: u64, b: u64) -> Vec<u8> {
    let mut v = vec![0u8; BLOCK as usize];
    let mut x = (thread + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ n.wrapping_mul(31) ^ b | 1;
    for byte in &mut v {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *byte = x as u8;
    }
    v
}

/// What each thread wrote last to each of its blocks.
type Lasts = Vec<Vec<Option<u64>>>;

/// Runs `convert` while THREADS threads write and read back `vol`; returns what each
/// wrote last, after checking every read on the way.
fn under_load(vol: &Unlocked, convert: impl FnOnce()) -> Lasts {
    let size = vol.size();
    let blocks = size / BLOCK;
    let running = AtomicBool::new(true);
    let ios = AtomicU64::new(0);
    let lasts = std::thread::scope(|s| {
        let mut workers = Vec::new();
        for t in 0..THREADS {
            let (running, ios) = (&running, &ios);
            workers.push(s.spawn(move || {
                let mut last: Vec<Option<u64>> = vec![None; blocks as usize];
                let mut n = 0u64;
                let mut buf = vec![0u8; BLOCK as usize];
                while running.load(Ordering::SeqCst) || n < 50 {
                    let b = (t + THREADS * (n * 7 % (blocks / THREADS))) % blocks;
                    if b % THREADS != t {
                        n += 1;
                        continue;
                    }
                    let at = b * BLOCK;
                    // Unaligned blocks on purpose: partial sectors at both ends.
                    vol.write_at(&pattern(t, n, b), at).unwrap();
                    last[b as usize] = Some(n);
                    vol.read_at(&mut buf, at).unwrap();
                    assert_eq!(
                        buf,
                        pattern(t, n, b),
                        "thread {t} block {b} right after its write"
                    );
                    n += 1;
                    // Only what ran while the conversion did counts.
                    if running.load(Ordering::SeqCst) {
                        ios.fetch_add(2, Ordering::Relaxed);
                    }
                }
                last
            }));
        }
        convert();
        running.store(false, Ordering::SeqCst);
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    assert!(
        ios.load(Ordering::Relaxed) > 200,
        "{} I/Os during the conversion",
        ios.load(Ordering::Relaxed)
    );
    lasts
}

/// What the volume must hold: what each thread wrote last, and `fill` (what it held
/// before) everywhere no thread wrote.
fn expected(lasts: &Lasts, fill: &[u8]) -> Vec<u8> {
    let mut want = fill.to_vec();
    for b in 0..fill.len() as u64 / BLOCK {
        let t = b % THREADS;
        if let Some(n) = lasts[t as usize][b as usize] {
            want[(b * BLOCK) as usize..((b + 1) * BLOCK) as usize]
                .copy_from_slice(&pattern(t, n, b));
        }
    }
    want
}

/// `v` reads back [`expected`].
fn check(v: &Unlocked, lasts: &Lasts, fill: &[u8]) {
    let want = expected(lasts, fill);
    let mut all = vec![0u8; v.size() as usize];
    v.read_at(&mut all, 0).unwrap();
    for (i, (a, b)) in all.chunks(4096).zip(want.chunks(4096)).enumerate() {
        assert!(a == b, "4 KiB block {i} differs");
    }
}

/// Runs the conversion `d` holds, online under `vol`, in small steps; asserts it finished
/// in many of them.
fn run_online(d: Devices<'_>, keys: Keys<'_>, vol: &Unlocked) {
    let stop = AtomicBool::new(false);
    let mut steps = 0;
    let out = convert::run_online(
        d,
        keys,
        Options { chunk: 256 << 10 },
        &stop,
        &mut |_| steps += 1,
        vol,
    )
    .unwrap();
    assert!(matches!(out, Outcome::Finished));
    assert!(steps > 20, "{steps} steps");
}

#[test]
fn a_deep_rekey_under_readers_and_writers_loses_nothing() {
    let dev = encrypted_image();
    let backend: Arc<dyn BlockBackend> = dev.clone();
    let vol = unlock(backend.clone(), &OLD).unwrap();
    let before = vec![0u8; vol.size() as usize];
    let lasts = under_load(&vol, || {
        let d = Devices::attached(dev.as_ref());
        convert::begin_rekey(d, &OLD, &NEW, "new-key").unwrap();
        convert::follow(&vol, d, Some(&NEW)).unwrap();
        let keys = Keys {
            current: Some(&OLD),
            new: Some(&NEW),
        };
        run_online(d, keys, &vol);
    });
    check(&vol, &lasts, &before);
    // From the disk alone, under the new key only.
    check(&unlock(backend.clone(), &NEW).unwrap(), &lasts, &before);
    assert!(
        unlock(backend.clone(), &OLD).is_err(),
        "the old secret still opens it"
    );
}

#[test]
fn an_encrypt_with_a_detached_header_under_readers_and_writers_loses_nothing() {
    for sector_size in [512, 4096] {
        let plain = noise(SIZE);
        let data = Arc::new(MemBackend::from_bytes(plain.clone()));
        let hdr = MemBackend::new(16 << 20);
        let backend: Arc<dyn BlockBackend> = data.clone();
        let vol = Unlocked::plaintext(backend.clone(), SIZE as u64);
        let lasts = under_load(&vol, || {
            let d = Devices::detached(&hdr, data.as_ref());
            convert::begin_encrypt_in_place(d, &plan(sector_size), &OLD).unwrap();
            convert::follow(&vol, d, Some(&OLD)).unwrap();
            let keys = Keys {
                current: Some(&OLD),
                new: None,
            };
            run_online(d, keys, &vol);
        });
        assert!(!vol.is_plaintext(), "the served volume still has no key");
        check(&vol, &lasts, &plain);
        check(
            &unlock_detached(&hdr, backend.clone(), &OLD).unwrap(),
            &lasts,
            &plain,
        );
        // No 512-byte sector of plaintext is left on the data device: neither what was
        // there nor what the threads wrote.
        let raw = data.contents();
        let want = expected(&lasts, &plain);
        for (i, (r, w)) in raw.chunks(512).zip(want.chunks(512)).enumerate() {
            assert!(
                r != w,
                "sector {i} in the clear ({sector_size}-byte sectors)"
            );
        }
    }
}

#[test]
fn a_decrypt_with_a_detached_header_under_readers_and_writers_loses_nothing() {
    // An encrypted volume with a detached header, from noise.
    let plain = noise(SIZE);
    let data = Arc::new(MemBackend::from_bytes(plain.clone()));
    let hdr = MemBackend::new(16 << 20);
    let d = Devices::detached(&hdr, data.as_ref());
    convert::begin_encrypt_in_place(d, &plan(4096), &OLD).unwrap();
    let keys = Keys {
        current: Some(&OLD),
        new: None,
    };
    let stop = AtomicBool::new(false);
    convert::run(d, keys, Options::default(), &stop, &mut |_| {}).unwrap();
    let backend: Arc<dyn BlockBackend> = data.clone();
    let vol = unlock_detached(&hdr, backend.clone(), &OLD).unwrap();
    let lasts = under_load(&vol, || {
        convert::begin_decrypt(d, &OLD).unwrap();
        convert::follow(&vol, d, None).unwrap();
        run_online(d, keys, &vol);
    });
    assert!(vol.is_plaintext(), "the served volume still has a key");
    check(&vol, &lasts, &plain);
    // The device alone holds the plaintext, and the header is wiped.
    check(&Unlocked::plaintext(backend, SIZE as u64), &lasts, &plain);
    assert!(
        hdr.contents().iter().all(|&b| b == 0),
        "the header file is not wiped"
    );
}

#[test]
fn encrypt_and_decrypt_with_the_header_on_the_volume_are_not_run_online() {
    let dev = encrypted_image();
    let backend: Arc<dyn BlockBackend> = dev.clone();
    let vol = unlock(backend, &OLD).unwrap();
    let d = Devices::attached(dev.as_ref());
    convert::begin_decrypt(d, &OLD).unwrap();
    let before = dev.contents();
    let stop = AtomicBool::new(false);
    let keys = Keys {
        current: Some(&OLD),
        new: None,
    };
    let e = convert::run_online(d, keys, Options::default(), &stop, &mut |_| {}, &vol)
        .err()
        .unwrap();
    assert!(matches!(e, convert::ConvertError::NotOnline(_)), "{e}");
    assert!(e.to_string().contains("detached header"), "{e}");
    assert!(dev.contents() == before, "the refusal wrote");
    // Nor can a served volume follow it.
    assert!(convert::follow(&vol, d, None).is_err());

    // An encrypt by moving the data, of a served plaintext volume.
    let data = Arc::new(MemBackend::from_bytes(noise(SIZE)));
    let plain = Unlocked::plaintext(data.clone(), SIZE as u64);
    convert::begin_encrypt(
        data.as_ref(),
        &plan(512),
        (SIZE - (32 << 20).min(SIZE / 2)) as u64,
        &OLD,
    )
    .unwrap();
    let d = Devices::attached(data.as_ref());
    assert!(convert::follow(&plain, d, Some(&OLD)).is_err());
}

/// A data device whose syncs fail once `fail` is set: a disk error in the middle of a
/// step (a real device cannot be made to fail on cue, so this one wrapper stands in).
struct FailingSync {
    inner: Arc<MemBackend>,
    fail: AtomicBool,
}

impl BlockBackend for FailingSync {
    fn len(&self) -> std::io::Result<u64> {
        self.inner.len()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        self.inner.write_at(buf, offset)
    }
    fn sync(&self) -> std::io::Result<()> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(std::io::Error::other("injected sync failure"));
        }
        self.inner.sync()
    }
}

#[test]
fn a_step_that_fails_halts_the_served_volume_and_the_resume_loses_nothing() {
    let plain = noise(SIZE);
    let data = Arc::new(FailingSync {
        inner: Arc::new(MemBackend::from_bytes(plain.clone())),
        fail: AtomicBool::new(false),
    });
    let hdr = MemBackend::new(16 << 20);
    let backend: Arc<dyn BlockBackend> = data.clone();
    let vol = Unlocked::plaintext(backend.clone(), SIZE as u64);
    let d = Devices::detached(&hdr, data.as_ref());
    convert::begin_encrypt_in_place(d, &plan(512), &OLD).unwrap();
    convert::follow(&vol, d, Some(&OLD)).unwrap();
    let keys = Keys {
        current: Some(&OLD),
        new: None,
    };
    let stop = AtomicBool::new(false);
    let mut steps = 0;
    let e = convert::run_online(
        d,
        keys,
        Options { chunk: 256 << 10 },
        &stop,
        &mut |_| {
            steps += 1;
            if steps == 5 {
                data.fail.store(true, Ordering::SeqCst);
            }
        },
        &vol,
    )
    .expect_err("the failing sync stops the run");
    assert!(e.to_string().contains("injected"), "{e}");
    // The served volume takes no more I/O, reads included: its hot zone is as a crash
    // left it.
    let why = vol.halted().expect("the volume is not halted");
    assert!(why.contains("injected"), "{why}");
    let mut buf = [0u8; 512];
    assert!(vol.read_at(&mut buf, 0).is_err());
    assert!(vol.write_at(&buf, SIZE as u64 - 512).is_err());
    // The resume (as at the next start) finishes it from the journal; every byte is there.
    data.fail.store(false, Ordering::SeqCst);
    convert::run(d, keys, Options::default(), &stop, &mut |_| {}).unwrap();
    let again = unlock_detached(&hdr, backend, &OLD).unwrap();
    let mut all = vec![0u8; SIZE];
    again.read_at(&mut all, 0).unwrap();
    assert!(all == plain, "the resumed encrypt lost data");
}
