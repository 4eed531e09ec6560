//! Conversions survive a crash at every I/O operation. `PowerCut` is a backend that keeps
//! two images: what the program sees, and what is durable. At the chosen operation the
//! "power fails": every later call errors, and the surviving image is the durable one plus
//! none, a pseudo-random half, or all of the 512-byte sectors written since the last sync
//! (a disk may have written some of them, in any order; a process crash keeps them all in
//! the page cache). Then the conversion resumes on that image and the volume must read back
//! the original plaintext, bit for bit.
//!
//! This is a simulated fault on purpose: a real power cut at a chosen write is not
//! something a real peer can produce. `crates/atrest/tests/convert.rs` kills the real
//! binary.

use std::collections::HashSet;
use std::io;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use volume::backend::{BlockBackend, MemBackend};
use volume::convert::park::HeaderPlan;
use volume::convert::{self, ConvertError, Devices, Found, Keys, Options, Outcome};
use volume::layout::DATA_OFFSET;
use volume::volume::{unlock, KeyMode, VolumeError};

struct Disk {
    live: Vec<u8>,
    durable: Vec<u8>,
    pending: Vec<(u64, u64)>,
    ops: u64,
    cut_at: u64,
    fail_at: u64,
    resizable: bool,
    /// The length the device claims, when more than its bytes (0: its bytes): a window
    /// over a header file's copies that still reads as a whole header file.
    claimed: u64,
}

/// Power cut (and one-off error) injection over an in-memory disk.
struct PowerCut(Mutex<Disk>);

impl PowerCut {
    fn new(image: Vec<u8>, resizable: bool) -> Self {
        Self(Mutex::new(Disk {
            durable: image.clone(),
            live: image,
            pending: Vec::new(),
            ops: 0,
            cut_at: u64::MAX,
            fail_at: u64::MAX,
            resizable,
            claimed: 0,
        }))
    }

    /// A device holding `image` that claims `len` bytes (reads stay within `image`).
    fn claiming(image: Vec<u8>, len: u64) -> Self {
        let d = Self::new(image, false);
        d.disk().claimed = len;
        d
    }

    fn disk(&self) -> std::sync::MutexGuard<'_, Disk> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts an operation; errors once the power is off, or for the one failing op.
    fn tick(&self) -> io::Result<()> {
        let mut d = self.disk();
        d.ops += 1;
        if d.ops >= d.cut_at {
            return Err(io::Error::other("power cut"));
        }
        if d.ops == d.fail_at {
            return Err(io::Error::from_raw_os_error(28)); // ENOSPC / EIO alike to the caller
        }
        Ok(())
    }

    /// The image after the cut: durable bytes, plus the pending sectors `keep` picks.
    fn after_cut(&self, keep: &mut dyn FnMut(u64) -> bool) -> Vec<u8> {
        let d = self.disk();
        let mut img = d.durable.clone();
        for &(from, to) in &d.pending {
            for s in from / 512..to.div_ceil(512) {
                let at = (s * 512) as usize;
                if at + 512 <= img.len() && at + 512 <= d.live.len() && keep(s) {
                    img[at..at + 512].copy_from_slice(&d.live[at..at + 512]);
                }
            }
        }
        img
    }
}

impl BlockBackend for PowerCut {
    fn len(&self) -> io::Result<u64> {
        let d = self.disk();
        Ok((d.live.len() as u64).max(d.claimed))
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.tick()?;
        let d = self.disk();
        let at = offset as usize;
        buf.copy_from_slice(
            d.live
                .get(at..at + buf.len())
                .ok_or(io::ErrorKind::UnexpectedEof)?,
        );
        Ok(())
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.tick()?;
        let mut d = self.disk();
        let at = offset as usize;
        if at + buf.len() > d.live.len() {
            return Err(io::ErrorKind::WriteZero.into());
        }
        d.live[at..at + buf.len()].copy_from_slice(buf);
        d.pending.push((offset, offset + buf.len() as u64));
        Ok(())
    }
    fn sync(&self) -> io::Result<()> {
        self.tick()?;
        let mut d = self.disk();
        let pending = std::mem::take(&mut d.pending);
        let Disk { live, durable, .. } = &mut *d;
        for (from, to) in pending {
            let (from, to) = (from as usize, (to as usize).min(live.len()));
            durable[from..to].copy_from_slice(&live[from..to]);
        }
        Ok(())
    }
    fn resizable(&self) -> bool {
        self.disk().resizable
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.tick()?;
        let mut d = self.disk();
        if !d.resizable {
            return Err(io::ErrorKind::Unsupported.into());
        }
        // Like FileBackend: the new size and everything written so far become durable.
        d.live.resize(len as usize, 0);
        d.durable = d.live.clone();
        d.pending.clear();
        Ok(())
    }
}

// Keys with unequal halves (XTS refuses equal ones).
const OLD: [u8; 32] = *b"old-key-0123456789abcdef-OLD-KEY";
const NEW: [u8; 32] = *b"new-key-fedcba9876543210-NEW-KEY";
static STOP: AtomicBool = AtomicBool::new(false);

fn opts() -> Options {
    // Small steps, so a 3 MiB image has several and every kind of step is cut.
    Options { chunk: 512 << 10 }
}

fn plan(mode: &str, sector_size: u32) -> HeaderPlan {
    HeaderPlan {
        key_uid: "old-key".into(),
        key_mode: if mode == "direct" {
            KeyMode::Direct
        } else {
            KeyMode::Wrapped
        },
        volume_key_len: 32,
        sector_size,
        server_hint: None,
    }
}

fn plaintext(len: usize, seed: u8) -> Vec<u8> {
    let mut v = vec![0u8; len];
    let mut x = u64::from(seed).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for b in &mut v {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    v
}

/// The plaintext a finished volume holds.
fn read_volume(image: Vec<u8>, secret: &[u8]) -> Result<Vec<u8>, VolumeError> {
    let dev: Arc<dyn BlockBackend> = Arc::new(MemBackend::from_bytes(image));
    let v = unlock(dev, secret)?;
    let mut out = vec![0u8; v.size() as usize];
    v.read_at(&mut out, 0)?;
    Ok(out)
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Job {
    Encrypt,
    Decrypt,
    Rekey,
}

/// Starts or resumes `job` on `dev` the way the CLI does, to the end.
fn drive(
    job: Job,
    dev: &dyn BlockBackend,
    mode: &str,
    ss: u32,
    size: u64,
) -> Result<(), ConvertError> {
    drive_on(job, Devices::attached(dev), mode, ss, size)
}

/// Starts or resumes `job` on `d` the way the CLI does, to the end; `size` is the plaintext
/// an attached-header encrypt converts (a detached one takes the whole data device).
fn drive_on(job: Job, d: Devices<'_>, mode: &str, ss: u32, size: u64) -> Result<(), ConvertError> {
    let keys = match convert::inspect(d)? {
        Found::Plain if job == Job::Decrypt => return Ok(()), // decrypt already finished
        Found::Plain => {
            assert_eq!(job, Job::Encrypt, "{job:?} found plaintext");
            if d.is_detached() {
                convert::begin_encrypt_in_place(d, &plan(mode, ss), &OLD)?;
            } else {
                convert::begin_encrypt(d.data, &plan(mode, ss), size, &OLD)?;
            }
            Keys {
                current: Some(&OLD),
                new: None,
            }
        }
        Found::Volume { .. } if job == Job::Decrypt => {
            convert::begin_decrypt(d, &OLD)?;
            Keys {
                current: Some(&OLD),
                new: None,
            }
        }
        Found::Volume { key_uid, .. } if job == Job::Rekey && key_uid == "new-key" => return Ok(()),
        Found::Volume { .. } if job == Job::Rekey => {
            convert::begin_rekey(d, &OLD, &NEW, "new-key")?;
            Keys {
                current: Some(&OLD),
                new: Some(&NEW),
            }
        }
        Found::Volume { .. } => return Ok(()), // encrypt already finished
        Found::InProgress(p) => {
            assert_eq!(p.kind.as_str(), format!("{job:?}").to_lowercase());
            Keys {
                current: Some(&OLD),
                new: Some(&NEW),
            }
        }
        Found::OtherLuks => panic!("a foreign LUKS header appeared"),
    };
    match convert::run(d, keys, opts(), &STOP, &mut |_| {})? {
        Outcome::Finished => Ok(()),
        Outcome::Stopped(p) => panic!("stopped without being asked: {p:?}"),
    }
}

/// The starting image of a job and the plaintext it must end with.
fn start(job: Job, mode: &str, ss: u32, plain: &[u8]) -> Vec<u8> {
    if job == Job::Encrypt {
        return plain.to_vec();
    }
    let dev = PowerCut::new(plain.to_vec(), true);
    drive(Job::Encrypt, &dev, mode, ss, plain.len() as u64).unwrap();
    let img = dev.disk().live.clone();
    img
}

/// The 16-byte blocks that must not survive a conversion outside the encrypted segment:
/// those of the plaintext, and for a rekey those of the old ciphertext too.
fn secrets_of(job: Job, image: &[u8], plain: &[u8], data_at: usize) -> HashSet<[u8; 16]> {
    let mut set: HashSet<[u8; 16]> = plain
        .chunks_exact(16)
        .map(|c| c.try_into().unwrap())
        .collect();
    if job == Job::Rekey {
        set.extend(
            image[data_at..data_at + plain.len()]
                .chunks_exact(16)
                .map(|c| <[u8; 16]>::try_from(c).unwrap()),
        );
    }
    set.remove(&[0u8; 16]);
    set
}

/// Issue 10, defect 1: after a conversion finishes, no byte of the original plaintext
/// (and after a deep rekey, no old ciphertext) is left anywhere outside the encrypted
/// segment `[seg_from, seg_to)`: not in the header area, the keyslots' unused tails, the
/// journal, the park or any padding. Every move is by whole sectors, so a leftover keeps
/// its 16-byte alignment and shows up as a block of `secrets`.
fn assert_nothing_left(
    image: &[u8],
    seg: std::ops::Range<usize>,
    secrets: &HashSet<[u8; 16]>,
    what: &str,
) {
    for (i, block) in image.chunks_exact(16).enumerate() {
        let at = i * 16;
        if seg.contains(&at) || block.iter().all(|&b| b == 0) {
            continue;
        }
        assert!(
            !secrets.contains(<&[u8; 16]>::try_from(block).unwrap()),
            "{what}: plaintext or old ciphertext left at byte {at:#x} (outside the segment {:#x}..{:#x})",
            seg.start,
            seg.end
        );
    }
}

fn check(job: Job, image: Vec<u8>, plain: &[u8], what: &str) {
    match job {
        Job::Decrypt => assert!(image == plain, "{what}: decrypted image differs"),
        Job::Encrypt => assert!(
            read_volume(image, &OLD).unwrap() == plain,
            "{what}: volume differs"
        ),
        Job::Rekey => {
            assert!(
                matches!(read_volume(image.clone(), &OLD), Err(VolumeError::WrongKey)),
                "{what}: old key still opens"
            );
            assert!(
                read_volume(image, &NEW).unwrap() == plain,
                "{what}: volume differs"
            );
        }
    }
}

/// What survives of the writes issued since the last sync when the run is cut short.
#[derive(Debug, Clone, Copy)]
enum Survivors {
    /// A power cut: only what was synced.
    SyncedOnly,
    /// A power cut on a disk that had written some of the rest, in any order: a
    /// pseudo-random half of the unsynced sectors.
    SomeUnsynced,
    /// A process crash (SIGKILL, OOM kill, panic): the page cache keeps every write that
    /// was issued, synced or not. `crates/atrest/tests/convert.rs` kills the real binary;
    /// this runs every cut point.
    AllIssued,
}

const SURVIVORS: [Survivors; 3] = [
    Survivors::SyncedOnly,
    Survivors::SomeUnsynced,
    Survivors::AllIssued,
];

impl Survivors {
    /// Whether an unsynced sector survives, `coin` being a fresh pseudo-random number.
    fn keeps(self, coin: u64) -> bool {
        match self {
            Self::SyncedOnly => false,
            Self::SomeUnsynced => coin & 1 == 1,
            Self::AllIssued => true,
        }
    }
}

/// Cuts the power at every operation of `job` in turn (and, in a second pass, keeps a
/// pseudo-random half of the unsynced sectors), resumes, and checks the result.
/// A line every 20 s on the real stderr (the harness captures only the print macros):
/// these runs take minutes, and CI's log should show that they move.
fn sign_of_life(last: &mut std::time::Instant, what: &str) {
    if last.elapsed() >= std::time::Duration::from_secs(20) {
        *last = std::time::Instant::now();
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "    ({what})");
    }
}

fn every_cut(job: Job, mode: &str, ss: u32) {
    let plain = plaintext(3 << 20, ss as u8);
    let size = plain.len() as u64;
    let image = start(job, mode, ss, &plain);
    // A clean run counts the operations.
    let clean = PowerCut::new(image.clone(), true);
    drive(job, &clean, mode, ss, size).unwrap();
    let total = clean.disk().ops;
    check(job, clean.disk().live.clone(), &plain, "clean run");
    let secrets = secrets_of(job, &image, &plain, DATA_OFFSET as usize);
    let leftovers = |img: &[u8], what: &str| {
        if job != Job::Decrypt {
            let d = DATA_OFFSET as usize;
            assert_nothing_left(img, d..d + plain.len(), &secrets, what);
        }
    };
    leftovers(&clean.disk().live, "clean run");
    let mut seed = 7u64;
    let mut alive = std::time::Instant::now();
    for survive in SURVIVORS {
        for cut in 1..=total {
            sign_of_life(
                &mut alive,
                &format!("{job:?} {mode} {ss}: power cut {cut} of {total}, {survive:?}"),
            );
            let dev = PowerCut::new(image.clone(), true);
            dev.disk().cut_at = cut;
            let first = drive(job, &dev, mode, ss, size);
            assert!(
                first.is_err(),
                "cut at {cut} of {total} did not stop the run"
            );
            let img = dev.after_cut(&mut |s| {
                seed ^= seed << 13 ^ s;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                survive.keeps(seed)
            });
            let what = format!("{job:?} {mode} {ss}: cut at op {cut} of {total} ({survive:?})");
            // Resume, and once in a while cut the resumed run too, then resume again.
            let again = PowerCut::new(img, true);
            if cut % 5 == 0 {
                again.disk().cut_at = 1 + cut % 37;
                let _ = drive(job, &again, mode, ss, size);
                let img = again.after_cut(&mut |_| false);
                let third = PowerCut::new(img, true);
                drive(job, &third, mode, ss, size)
                    .unwrap_or_else(|e| panic!("{what}, cut again: {e}"));
                check(job, third.disk().live.clone(), &plain, &what);
                leftovers(&third.disk().live, &what);
            } else {
                drive(job, &again, mode, ss, size).unwrap_or_else(|e| panic!("{what}: {e}"));
                check(job, again.disk().live.clone(), &plain, &what);
                leftovers(&again.disk().live, &what);
            }
        }
        eprintln!("{job:?} {mode} {ss}: {total} cut points ({survive:?}) resumed to the original");
    }
}

#[test]
fn encrypt_survives_a_power_cut_at_every_operation() {
    every_cut(Job::Encrypt, "wrapped", 4096);
    every_cut(Job::Encrypt, "direct", 512);
}

#[test]
fn decrypt_survives_a_power_cut_at_every_operation() {
    every_cut(Job::Decrypt, "wrapped", 512);
    every_cut(Job::Decrypt, "direct", 4096);
}

#[test]
fn deep_rekey_survives_a_power_cut_at_every_operation() {
    every_cut(Job::Rekey, "wrapped", 4096);
    every_cut(Job::Rekey, "direct", 512);
}

#[test]
fn a_failed_read_or_write_mid_way_stops_cleanly_and_resumes() {
    for job in [Job::Encrypt, Job::Decrypt, Job::Rekey] {
        let plain = plaintext(3 << 20, 3);
        let image = start(job, "wrapped", 4096, &plain);
        let clean = PowerCut::new(image.clone(), true);
        drive(job, &clean, "wrapped", 4096, plain.len() as u64).unwrap();
        let total = clean.disk().ops;
        let (mut failed, mut tried) = (0, 0);
        for fail in (2..total).step_by(7) {
            let dev = PowerCut::new(image.clone(), true);
            dev.disk().fail_at = fail;
            tried += 1;
            // A failed read while probing for a header copy that a plaintext device does
            // not have is absorbed; everything else must stop the run with the OS error.
            let r = drive(job, &dev, "wrapped", 4096, plain.len() as u64);
            if let Err(e) = r {
                failed += 1;
                assert!(
                    e.to_string().contains("No space left"),
                    "{job:?} op {fail}: {e}"
                );
            }
            // The same process (not a crash): the next attempt finishes the job.
            drive(job, &dev, "wrapped", 4096, plain.len() as u64)
                .unwrap_or_else(|e| panic!("{job:?} after failing op {fail}: {e}"));
            let what = format!("{job:?} failing op {fail}");
            check(job, dev.disk().live.clone(), &plain, &what);
            if job != Job::Decrypt {
                let d = DATA_OFFSET as usize;
                let secrets = secrets_of(job, &image, &plain, d);
                assert_nothing_left(&dev.disk().live, d..d + plain.len(), &secrets, &what);
            }
        }
        assert!(
            failed * 4 >= tried * 3,
            "{job:?}: only {failed} of {tried} injected faults stopped the run"
        );
    }
}

#[test]
fn a_wrong_key_on_resume_is_refused_and_changes_nothing() {
    let plain = plaintext(3 << 20, 5);
    let dev = PowerCut::new(plain.clone(), true);
    dev.disk().cut_at = 60;
    let _ = drive(Job::Encrypt, &dev, "wrapped", 4096, plain.len() as u64);
    let img = dev.after_cut(&mut |_| false);
    let dev = PowerCut::new(img.clone(), true);
    let e = convert::run(
        Devices::attached(&dev),
        Keys {
            current: Some(&NEW),
            new: None,
        },
        opts(),
        &STOP,
        &mut |_| {},
    )
    .unwrap_err();
    assert!(
        matches!(e, ConvertError::Volume(VolumeError::WrongKey)),
        "{e}"
    );
    assert!(dev.disk().live == img, "a wrong key changed the device");
    drive(Job::Encrypt, &dev, "wrapped", 4096, plain.len() as u64).unwrap();
    check(
        Job::Encrypt,
        dev.disk().live.clone(),
        &plain,
        "after the wrong key",
    );
}

#[test]
fn a_half_converted_volume_is_refused_for_ordinary_use() {
    let plain = plaintext(3 << 20, 6);
    let dev = PowerCut::new(plain.clone(), true);
    dev.disk().cut_at = 60;
    let _ = drive(Job::Encrypt, &dev, "wrapped", 4096, plain.len() as u64);
    let img = dev.after_cut(&mut |_| false);
    let e = read_volume(img, &OLD).unwrap_err();
    assert!(matches!(e, VolumeError::ConversionInProgress { .. }), "{e}");
    assert!(e.to_string().contains("atrest encrypt"), "{e}");
}

#[test]
fn stopping_on_request_ends_at_a_committed_step() {
    let plain = plaintext(3 << 20, 8);
    let dev = PowerCut::new(plain.clone(), true);
    convert::begin_encrypt(&dev, &plan("wrapped", 512), plain.len() as u64, &OLD).unwrap();
    let stop = AtomicBool::new(false);
    let mut steps = 0;
    let out = convert::run(
        Devices::attached(&dev),
        Keys {
            current: Some(&OLD),
            new: None,
        },
        opts(),
        &stop,
        &mut |p| {
            steps += 1;
            if p.done > 0 {
                stop.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        },
    )
    .unwrap();
    let Outcome::Stopped(p) = out else {
        panic!("did not stop")
    };
    assert_eq!(p.done, 512 << 10);
    assert_eq!(steps, 2);
    // What is durable is what was committed: a cut now loses nothing.
    let img = dev.after_cut(&mut |_| false);
    let again = PowerCut::new(img, true);
    drive(Job::Encrypt, &again, "wrapped", 512, plain.len() as u64).unwrap();
    check(
        Job::Encrypt,
        again.disk().live.clone(),
        &plain,
        "after stop",
    );
}

#[test]
fn a_block_device_without_room_at_its_end_is_refused_before_anything_is_written() {
    let plain = plaintext(3 << 20, 9);
    let dev = PowerCut::new(plain.clone(), false);
    let e =
        convert::begin_encrypt(&dev, &plan("wrapped", 4096), plain.len() as u64, &OLD).unwrap_err();
    assert!(e.to_string().contains("--reduce-device-size"), "{e}");
    assert!(dev.disk().live == plain);
    // With room (the last 18 MiB unused, as --reduce-device-size says), it converts.
    let mut img = plain.clone();
    img.resize((3 << 20) + (18 << 20), 0);
    let dev = PowerCut::new(img, false);
    drive(Job::Encrypt, &dev, "wrapped", 4096, plain.len() as u64).unwrap();
    let out = dev.disk().live.clone();
    assert_eq!(out.len(), (21 << 20), "a block device keeps its size");
    assert!(read_volume(out.clone(), &OLD).unwrap() == plain);
    let d = DATA_OFFSET as usize;
    assert_nothing_left(
        &out,
        d..d + plain.len(),
        &secrets_of(Job::Encrypt, &out, &plain, d),
        "block device",
    );
    // Then decrypts in place too, leaving the tail zeroed.
    drive(Job::Decrypt, &dev, "wrapped", 4096, 0).unwrap();
    let out = dev.disk().live.clone();
    assert!(out[..plain.len()] == plain[..]);
    assert!(
        out[plain.len()..].iter().all(|&b| b == 0),
        "the tail keeps leftovers"
    );
}

#[test]
fn resuming_a_damaged_half_converted_device_errs_but_never_panics() {
    // The fuzz target's property (`fuzz/fuzz_targets/convert_resume.rs`) on real
    // half-converted devices with bytes flipped in the header, the park and its record.
    let plain = plaintext(2 << 20, 11);
    for cut in [20, 60] {
        let dev = PowerCut::new(plain.clone(), true);
        dev.disk().cut_at = cut;
        let _ = drive(Job::Encrypt, &dev, "wrapped", 4096, plain.len() as u64);
        let img = dev.after_cut(&mut |_| false);
        let n = img.len();
        for at in [
            0,
            100,
            4096 + 30,
            0x4000 + 500,
            n - 4096 - 1000,
            n - 4000,
            n - 100,
            n - 1,
        ] {
            let mut bad = img.clone();
            bad[at] ^= 0x5a;
            volume::fuzzing::convert_resume(&bad);
        }
        volume::fuzzing::convert_resume(&img[..n / 2]);
    }
}

// Detached header (`--header FILE`): the data device and the header file are two windows
// of one `PowerCut` disk, so they share the power supply; a sync of one window makes only
// that window's writes durable, as a sync of one device does.

const HDR_FILE: usize = 16 << 20;

impl PowerCut {
    fn sync_range(&self, from: u64, to: u64) -> io::Result<()> {
        self.tick()?;
        let mut d = self.disk();
        let Disk {
            live,
            durable,
            pending,
            ..
        } = &mut *d;
        pending.retain(|&(a, b)| {
            if a >= from && a < to {
                durable[a as usize..b as usize].copy_from_slice(&live[a as usize..b as usize]);
                false
            } else {
                true
            }
        });
        Ok(())
    }
}

struct View<'a> {
    disk: &'a PowerCut,
    base: u64,
    len: u64,
}

impl BlockBackend for View<'_> {
    fn len(&self) -> io::Result<u64> {
        Ok(self.len)
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        if offset + buf.len() as u64 > self.len {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.disk.read_at(buf, self.base + offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        if offset + buf.len() as u64 > self.len {
            return Err(io::ErrorKind::WriteZero.into());
        }
        self.disk.write_at(buf, self.base + offset)
    }
    fn sync(&self) -> io::Result<()> {
        self.disk.sync_range(self.base, self.base + self.len)
    }
}

/// Data first, then the header file.
fn views(disk: &PowerCut, data_len: usize) -> (View<'_>, View<'_>) {
    let data = View {
        disk,
        base: 0,
        len: data_len as u64,
    };
    let hdr = View {
        disk,
        base: data_len as u64,
        len: HDR_FILE as u64,
    };
    (data, hdr)
}

fn drive_detached(
    job: Job,
    disk: &PowerCut,
    data_len: usize,
    mode: &str,
    ss: u32,
) -> Result<(), ConvertError> {
    let (data, hdr) = views(disk, data_len);
    drive_on(job, Devices::detached(&hdr, &data), mode, ss, 0)
}

fn check_detached(
    job: Job,
    image: &[u8],
    plain: &[u8],
    secrets: Option<&HashSet<[u8; 16]>>,
    what: &str,
) {
    let (data, hdr) = image.split_at(plain.len());
    if job == Job::Decrypt {
        assert!(data == plain, "{what}: decrypted data differs");
        // Keyslots and journal wiped; of the header copies at most torn remains (a cut
        // in their final wipe), never a valid one.
        assert!(
            hdr[32 << 10..].iter().all(|&b| b == 0),
            "{what}: the keyslots were not wiped"
        );
        let h = MemBackend::from_bytes(hdr.to_vec());
        assert!(
            volume::luks2::header::read(&h).is_err(),
            "{what}: a header survived"
        );
        return;
    }
    let key: &[u8] = if job == Job::Rekey { &NEW } else { &OLD };
    if let Some(secrets) = secrets {
        assert_nothing_left(image, 0..plain.len(), secrets, what);
    }
    let h = MemBackend::from_bytes(hdr.to_vec());
    let dev: Arc<dyn BlockBackend> = Arc::new(MemBackend::from_bytes(data.to_vec()));
    let v = volume::volume::unlock_detached(&h, dev, key).unwrap_or_else(|e| panic!("{what}: {e}"));
    let mut out = vec![0u8; v.size() as usize];
    v.read_at(&mut out, 0).unwrap();
    assert!(out == plain, "{what}: volume differs");
}

fn every_cut_detached(job: Job, mode: &str, ss: u32) {
    let plain = plaintext(3 << 20, 40 + ss as u8);
    let mut image = plain.clone();
    image.resize(plain.len() + HDR_FILE, 0);
    if job != Job::Encrypt {
        let disk = PowerCut::new(image, false);
        drive_detached(Job::Encrypt, &disk, plain.len(), mode, ss).unwrap();
        image = disk.disk().live.clone();
    }
    let secrets = secrets_of(job, &image, &plain, 0);
    let clean = PowerCut::new(image.clone(), false);
    drive_detached(job, &clean, plain.len(), mode, ss).unwrap();
    let total = clean.disk().ops;
    check_detached(
        job,
        &clean.disk().live.clone(),
        &plain,
        Some(&secrets),
        "clean run",
    );
    let mut seed = 11u64;
    let mut alive = std::time::Instant::now();
    for survive in SURVIVORS {
        for cut in 1..=total {
            sign_of_life(
                &mut alive,
                &format!("{job:?} {mode} {ss} detached: power cut {cut} of {total}, {survive:?}"),
            );
            let disk = PowerCut::new(image.clone(), false);
            disk.disk().cut_at = cut;
            assert!(drive_detached(job, &disk, plain.len(), mode, ss).is_err());
            let img = disk.after_cut(&mut |s| {
                seed ^= seed << 13 ^ s;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                survive.keeps(seed)
            });
            let what =
                format!("{job:?} --header {mode} {ss}: cut at op {cut} of {total} ({survive:?})");
            let again = PowerCut::new(img, false);
            drive_detached(job, &again, plain.len(), mode, ss)
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            check_detached(
                job,
                &again.disk().live.clone(),
                &plain,
                Some(&secrets),
                &what,
            );
        }
        eprintln!("{job:?} --header {mode} {ss}: {total} cut points ({survive:?}) resumed to the original");
    }
}

#[test]
fn detached_header_conversions_survive_a_power_cut_at_every_operation() {
    every_cut_detached(Job::Encrypt, "wrapped", 4096);
    every_cut_detached(Job::Rekey, "direct", 512);
    every_cut_detached(Job::Decrypt, "wrapped", 512);
}

/// A header write cut short, then the next one cut short too (a process killed twice in a
/// row, as `crates/atrest/tests/convert.rs` does): a read never returns an older header than
/// the read before it did. Found by that SIGKILL harness: a kill after the primary copy of
/// commit n+1 was whole but before the secondary was, then a kill inside the primary of
/// commit n+2, left only the secondary's commit n; a decryption resumed from there decrypted
/// already-plaintext chunks again (or, with the secondary half-written, found no header at
/// all and called the volume plaintext). Every pair and triple of cut points, for each kind
/// of survivor.
#[test]
fn interrupted_header_writes_never_roll_the_header_back() {
    use volume::luks2::header;
    let plain = plaintext(1 << 20, 77);
    let mut image = plain.clone();
    image.resize(plain.len() + HDR_FILE, 0);
    let disk = PowerCut::new(image, false);
    drive_detached(Job::Encrypt, &disk, plain.len(), "wrapped", 512).unwrap();
    // The two header copies are all a header write touches: a window over them that
    // claims the header file's length (a read checks the keyslots area fits the device).
    let base = disk.disk().live[plain.len()..plain.len() + (64 << 10)].to_vec();
    let claim = HDR_FILE as u64;
    let seqid = |img: &[u8]| -> Result<u64, String> {
        header::read(&PowerCut::claiming(img.to_vec(), claim))
            .map(|r| r.header.binary.seqid)
            .map_err(|e| e.to_string())
    };
    // One header write on `img`, from what a read finds there, cut at its `cut`-th
    // operation: the image that survives, and whether the write finished.
    let mut coin = 5u64;
    let mut write_cut = |img: &[u8], cut: u64, survive: Survivors| -> (Vec<u8>, bool) {
        let dev = PowerCut::claiming(img.to_vec(), claim);
        let mut h = header::read(&dev).unwrap().header;
        let start = dev.disk().ops;
        dev.disk().cut_at = start + cut;
        let finished = header::write(&dev, &mut h).is_ok();
        let out = dev.after_cut(&mut |s| {
            coin ^= coin << 13 ^ s;
            coin ^= coin >> 7;
            coin ^= coin << 17;
            survive.keeps(coin)
        });
        (out, finished)
    };
    let first = seqid(&base).unwrap();
    let mut cases = 0;
    for survive in SURVIVORS {
        for a in 1..=24 {
            let (img1, done1) = write_cut(&base, a, survive);
            let s1 = seqid(&img1).unwrap_or_else(|e| panic!("cut at {a} ({survive:?}): {e}"));
            assert!(
                s1 >= first && (!done1 || s1 == first + 1),
                "cut at {a}: {s1}"
            );
            for b in 1..=24 {
                let (img2, done2) = write_cut(&img1, b, survive);
                let what = format!("cuts at {a}, {b} ({survive:?})");
                let s2 = seqid(&img2).unwrap_or_else(|e| panic!("{what}: {e}"));
                assert!(s2 >= s1, "{what}: seqid {s1} read, then {s2}");
                assert!(!done2 || s2 == s1 + 1, "{what}: finished, yet {s2}");
                for c in [1, 2, 3, 5, 8, 13] {
                    let (img3, _) = write_cut(&img2, c, survive);
                    let s3 = seqid(&img3).unwrap_or_else(|e| panic!("{what}, {c}: {e}"));
                    assert!(s3 >= s2, "{what}, {c}: seqid {s2} read, then {s3}");
                    cases += 1;
                }
            }
        }
    }
    eprintln!("{cases} sequences of three interrupted header writes: no read went back");
}

/// Killed twice in a row: the first kill at every operation of a decryption, the second
/// early in the resumed run (where its first commits are), every issued write kept both
/// times; then the third run finishes and the data must be the original. The header test
/// above is the mechanism; this is what it protects.
#[test]
fn a_conversion_killed_twice_in_a_row_resumes() {
    let plain = plaintext(3 << 19, 91);
    let survive = |d: &PowerCut| d.after_cut(&mut |_| true);
    // Attached header.
    let image = start(Job::Decrypt, "wrapped", 4096, &plain);
    let clean = PowerCut::new(image.clone(), true);
    drive(Job::Decrypt, &clean, "wrapped", 4096, 0).unwrap();
    let total = clean.disk().ops;
    for cut in 1..=total {
        let dev = PowerCut::new(image.clone(), true);
        dev.disk().cut_at = cut;
        let _ = drive(Job::Decrypt, &dev, "wrapped", 4096, 0);
        let again = PowerCut::new(survive(&dev), true);
        again.disk().cut_at = 2 + (cut * 7) % 30;
        let _ = drive(Job::Decrypt, &again, "wrapped", 4096, 0);
        let third = PowerCut::new(survive(&again), true);
        let what = format!(
            "decrypt: cuts at {cut} of {total}, then {}",
            2 + (cut * 7) % 30
        );
        drive(Job::Decrypt, &third, "wrapped", 4096, 0).unwrap_or_else(|e| panic!("{what}: {e}"));
        check(Job::Decrypt, third.disk().live.clone(), &plain, &what);
    }
    // Detached header.
    let mut image = plain.clone();
    image.resize(plain.len() + HDR_FILE, 0);
    let disk = PowerCut::new(image, false);
    drive_detached(Job::Encrypt, &disk, plain.len(), "wrapped", 512).unwrap();
    let image = disk.disk().live.clone();
    let clean = PowerCut::new(image.clone(), false);
    drive_detached(Job::Decrypt, &clean, plain.len(), "wrapped", 512).unwrap();
    let total = clean.disk().ops;
    for cut in 1..=total {
        let disk = PowerCut::new(image.clone(), false);
        disk.disk().cut_at = cut;
        let _ = drive_detached(Job::Decrypt, &disk, plain.len(), "wrapped", 512);
        let again = PowerCut::new(survive(&disk), false);
        again.disk().cut_at = 2 + (cut * 7) % 30;
        let _ = drive_detached(Job::Decrypt, &again, plain.len(), "wrapped", 512);
        let third = PowerCut::new(survive(&again), false);
        let what = format!(
            "decrypt --header: cuts at {cut} of {total}, then {}",
            2 + (cut * 7) % 30
        );
        drive_detached(Job::Decrypt, &third, plain.len(), "wrapped", 512)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        check_detached(
            Job::Decrypt,
            &third.disk().live.clone(),
            &plain,
            None,
            &what,
        );
    }
}
