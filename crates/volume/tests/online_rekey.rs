//! A deep rekey of a volume in use (issue 22): writers and readers work on the unlocked
//! volume from several threads for the whole rekey, each thread on its own stripe of
//! sectors, checking every read against what it wrote last; afterwards the volume reads
//! back, under the new key only, what the threads wrote, and the old secret no longer
//! opens it. Small steps, so that the I/O meets many boundaries and hot zones.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use volume::backend::{BlockBackend, MemBackend};
use volume::convert::park::HeaderPlan;
use volume::convert::{self, Devices, Keys, Options, Outcome};
use volume::volume::{unlock, KeyMode};

const OLD: [u8; 32] = [0x11; 32];
const NEW: [u8; 32] = [0x22; 32];
const SIZE: usize = 8 << 20;
const THREADS: u64 = 4;
/// A thread's block (it owns every THREADS-th one).
const BLOCK: u64 = 12 * 1024 + 512;

fn encrypted_image() -> Arc<MemBackend> {
    let dev = Arc::new(MemBackend::from_bytes(vec![0u8; SIZE]));
    let plan = HeaderPlan {
        key_uid: "old-key".into(),
        key_mode: KeyMode::Wrapped,
        volume_key_len: 32,
        sector_size: 512,
        server_hint: None,
    };
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

#[test]
fn a_deep_rekey_under_readers_and_writers_loses_nothing() {
    let dev = encrypted_image();
    let backend: Arc<dyn BlockBackend> = dev.clone();
    let vol = Arc::new(unlock(backend.clone(), &OLD).unwrap());
    let size = vol.size();
    let blocks = size / BLOCK;
    let running = AtomicBool::new(true);
    let ios = AtomicU64::new(0);
    std::thread::scope(|s| {
        let mut workers = Vec::new();
        for t in 0..THREADS {
            let (vol, running, ios) = (&vol, &running, &ios);
            workers.push(s.spawn(move || {
                // What this thread last wrote to each of its blocks.
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
                    ios.fetch_add(2, Ordering::Relaxed);
                }
                last
            }));
        }
        // The rekey, while they run.
        let d = Devices::attached(dev.as_ref());
        convert::begin_rekey(d, &OLD, &NEW, "new-key").unwrap();
        convert::follow_rekey(&vol, d, &NEW).unwrap();
        let stop = AtomicBool::new(false);
        let keys = Keys {
            current: Some(&OLD),
            new: Some(&NEW),
        };
        let mut steps = 0;
        let out = convert::run_online(
            d,
            keys,
            Options { chunk: 256 << 10 },
            &stop,
            &mut |_| steps += 1,
            vol.as_ref(),
        )
        .unwrap();
        assert!(matches!(out, Outcome::Finished));
        assert!(steps > 20, "{steps} steps");
        running.store(false, Ordering::SeqCst);
        let lasts: Vec<Vec<Option<u64>>> = workers.into_iter().map(|w| w.join().unwrap()).collect();
        // Everything each thread wrote last reads back, through the served volume ...
        let check = |v: &volume::volume::Unlocked| {
            let mut buf = vec![0u8; BLOCK as usize];
            for (t, last) in lasts.iter().enumerate() {
                for (b, n) in last.iter().enumerate() {
                    if let Some(n) = n {
                        v.read_at(&mut buf, b as u64 * BLOCK).unwrap();
                        assert_eq!(buf, pattern(t as u64, *n, b as u64), "thread {t} block {b}");
                    }
                }
            }
        };
        check(&vol);
        // ... and through a fresh unlock with the new secret, from the disk alone.
        let again = unlock(backend.clone(), &NEW).unwrap();
        check(&again);
        assert!(
            unlock(backend.clone(), &OLD).is_err(),
            "the old secret still opens it"
        );
    });
    assert!(
        ios.load(Ordering::Relaxed) > 200,
        "{} I/Os during the rekey",
        ios.load(Ordering::Relaxed)
    );
}

#[test]
fn encrypt_and_decrypt_are_not_run_online() {
    let dev = encrypted_image();
    let backend: Arc<dyn BlockBackend> = dev.clone();
    let vol = unlock(backend, &OLD).unwrap();
    let d = Devices::attached(dev.as_ref());
    convert::begin_decrypt(d, &OLD).unwrap();
    let stop = AtomicBool::new(false);
    let keys = Keys {
        current: Some(&OLD),
        new: None,
    };
    let e = convert::run_online(d, keys, Options::default(), &stop, &mut |_| {}, &vol)
        .err()
        .unwrap();
    assert!(matches!(e, convert::ConvertError::NotOnline(_)), "{e}");
}
