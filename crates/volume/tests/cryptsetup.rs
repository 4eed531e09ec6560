//! Interoperability with stock cryptsetup (Debian's cryptsetup-bin, which `.ci/run`
//! installs): it must accept every volume atrest writes, open it with the same secret, and
//! agree on the volume key; atrest must open what cryptsetup formats and read what
//! cryptsetup's offline `reencrypt --encrypt` wrote. Device-mapper is absent here, so
//! "open" means `--test-passphrase` and `--dump-volume-key`, which check the same things.

mod common;

use common::cryptsetup;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use openssl::symm::{Cipher, Crypter, Mode};
use volume::backend::{BlockBackend, FileBackend};
use volume::volume::{format, status, unlock, FormatOptions, KeyMode, VolumeError, DATA_OFFSET};

/// A scratch folder, removed when dropped (also when the test fails).
struct Tmp(tempfile::TempDir);

impl Tmp {
    fn new(name: &str) -> Self {
        let d = tempfile::Builder::new()
            .prefix(&format!("atrest-vol-{name}-"))
            .tempdir()
            .unwrap();
        Self(d)
    }

    fn file(&self, name: &str, len: u64) -> PathBuf {
        let p = self.0.path().join(name);
        let f = File::create(&p).unwrap();
        f.set_len(len).unwrap();
        p
    }

    /// A wrapped volume with 4 MiB of data space, formatted by atrest (secret `[7; 32]`).
    fn formatted(&self, name: &str) -> PathBuf {
        let img = self.file(name, DATA_OFFSET + (4 << 20));
        format(
            backend(&img).as_ref(),
            &[7; 32],
            &opts(KeyMode::Wrapped, 32, 512),
        )
        .unwrap();
        img
    }

    fn secret(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.0.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }
}

fn file_backend(p: &Path) -> FileBackend {
    FileBackend::new(OpenOptions::new().read(true).write(true).open(p).unwrap())
}

fn backend(p: &Path) -> Arc<dyn BlockBackend> {
    Arc::new(file_backend(p))
}

/// Asserts that a cryptsetup run succeeded, showing what it wrote to stderr if not.
fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `cryptsetup open --test-passphrase` of `img` with the key given by `key_args`: exit 0
/// when the key opens it, 2 when it does not.
fn test_passphrase(key_args: &[&str], img: &Path) -> Output {
    let mut a = vec!["open", "--test-passphrase"];
    a.extend_from_slice(key_args);
    a.push(img.to_str().unwrap());
    cryptsetup(&a)
}

/// `cryptsetup <command>` making a LUKS2 XTS-AES-128 volume (256-bit key) of `img` with
/// `sector_size`, its keyslot opened by `key_file` (PBKDF2, 1000 iterations: fast).
fn cryptsetup_luks2(command: &[&str], sector_size: &str, key_file: &Path, img: &Path) -> Output {
    let mut a = command.to_vec();
    a.extend_from_slice(&[
        "--type",
        "luks2",
        "--batch-mode",
        "--cipher",
        "aes-xts-plain64",
        "--key-size",
        "256",
        "--sector-size",
        sector_size,
        "--pbkdf",
        "pbkdf2",
        "--pbkdf-force-iterations",
        "1000",
        "--key-file",
        key_file.to_str().unwrap(),
        img.to_str().unwrap(),
    ]);
    cryptsetup(&a)
}

fn random(n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    openssl::rand::rand_bytes(&mut b).unwrap();
    b
}

/// The volume key as cryptsetup sees it.
fn dump_volume_key(dev: &Path, args: &[&str]) -> Vec<u8> {
    let mut a = vec!["luksDump", "--dump-volume-key", "--batch-mode"];
    a.extend_from_slice(args);
    a.push(dev.to_str().unwrap());
    let out = cryptsetup(&a);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = text.split("MK dump:").nth(1).expect("an MK dump");
    let hex: String = after
        .split_whitespace()
        .take_while(|w| w.len() == 2 && w.chars().all(|c| c.is_ascii_hexdigit()))
        .collect();
    hex::decode(hex).unwrap()
}

/// Independent decryption of one sector with OpenSSL (tweak in 512-byte units).
fn openssl_decrypt_sector(key: &[u8], ciphertext: &[u8], tweak: u64) -> Vec<u8> {
    let cipher = if key.len() == 32 {
        Cipher::aes_128_xts()
    } else {
        Cipher::aes_256_xts()
    };
    let iv = (tweak as u128).to_le_bytes();
    let mut c = Crypter::new(cipher, Mode::Decrypt, key, Some(&iv)).unwrap();
    let mut out = vec![0u8; ciphertext.len() + 32];
    let n = c.update(ciphertext, &mut out).unwrap();
    let m = c.finalize(&mut out[n..]).unwrap();
    out.truncate(n + m);
    out
}

fn opts(mode: KeyMode, key_len: usize, sector_size: u32) -> FormatOptions {
    FormatOptions {
        mode,
        volume_key_len: key_len,
        sector_size,
        key_uid: "kmip-uid-1234".into(),
        server_hint: Some("kms.example:5696".into()),
        data_size: None,
        detached: false,
    }
}

#[test]
fn cryptsetup_accepts_wrapped_volumes_and_agrees_on_the_volume_key() {
    let t = Tmp::new("wrapped");
    for (key_len, sector_size) in [(32, 512), (32, 4096), (64, 4096)] {
        let img = t.file(&format!("w{key_len}-{sector_size}.img"), 20 << 20);
        let secret = random(32);
        let secret_file = t.secret("kmip.secret", &secret);
        let dev = backend(&img);
        format(
            dev.as_ref(),
            &secret,
            &opts(KeyMode::Wrapped, key_len, sector_size),
        )
        .unwrap();

        let dump = cryptsetup(&["luksDump", img.to_str().unwrap()]);
        let text = String::from_utf8_lossy(&dump.stdout);
        assert!(dump.status.success(), "{text}");
        assert!(
            text.contains("Version:       \t2") || text.contains("Version:"),
            "{text}"
        );
        assert!(text.contains("aes-xts-plain64"), "{text}");
        assert!(
            text.contains(&format!("sector: {sector_size} [bytes]")),
            "{text}"
        );
        assert!(text.contains("atrest-kmip"), "{text}");

        assert_ok(&test_passphrase(
            &["--key-file", secret_file.to_str().unwrap()],
            &img,
        ));
        let wrong = t.secret("wrong.secret", &random(32));
        let bad = test_passphrase(&["--key-file", wrong.to_str().unwrap()], &img);
        assert_eq!(bad.status.code(), Some(2), "a wrong secret must be refused");

        // Data written through atrest decrypts with the key cryptsetup extracts.
        let vol = unlock(dev.clone(), &secret).unwrap();
        let data = random(3 * sector_size as usize);
        vol.write_at(&data, 2 * u64::from(sector_size)).unwrap();
        vol.flush().unwrap();
        let vk = dump_volume_key(&img, &["--key-file", secret_file.to_str().unwrap()]);
        assert_eq!(vk.len(), key_len);
        let mut raw = vec![0u8; data.len()];
        dev.read_at(&mut raw, DATA_OFFSET + 2 * u64::from(sector_size))
            .unwrap();
        for (i, chunk) in raw.chunks(sector_size as usize).enumerate() {
            let tweak = (2 + i as u64) * u64::from(sector_size) / 512;
            assert_eq!(
                openssl_decrypt_sector(&vk, chunk, tweak),
                data[i * sector_size as usize..(i + 1) * sector_size as usize]
            );
        }
    }
}

#[test]
fn cryptsetup_accepts_direct_volumes_by_volume_key() {
    let t = Tmp::new("direct");
    let img = t.file("d.img", 20 << 20);
    let key = random(32);
    let key_file = t.secret("vk", &key);
    let dev = backend(&img);
    format(dev.as_ref(), &key, &opts(KeyMode::Direct, 32, 512)).unwrap();
    let by_volume_key = |f: &Path| {
        test_passphrase(
            &[
                "--key-size",
                "256",
                "--volume-key-file",
                f.to_str().unwrap(),
            ],
            &img,
        )
    };
    assert_ok(&by_volume_key(&key_file));
    let wrong = t.secret("wrong", &random(32));
    let bad = by_volume_key(&wrong);
    assert_eq!(bad.status.code(), Some(2));
    let s = status(dev.as_ref()).unwrap();
    assert_eq!(s.key_mode, KeyMode::Direct);
    assert_eq!(s.key_uid, "kmip-uid-1234");
    assert_eq!(s.data_offset, DATA_OFFSET);
    assert_eq!(s.data_size, 4 << 20);
}

#[test]
fn a_wrong_key_is_refused_and_writes_nothing() {
    let t = Tmp::new("wrongkey");
    let img = t.file("w.img", 20 << 20);
    let secret = random(32);
    let dev = backend(&img);
    format(dev.as_ref(), &secret, &opts(KeyMode::Wrapped, 32, 4096)).unwrap();
    let before = std::fs::read(&img).unwrap();
    assert!(matches!(
        unlock(dev.clone(), &random(32)),
        Err(VolumeError::WrongKey)
    ));
    assert_eq!(std::fs::read(&img).unwrap(), before);
}

#[test]
fn atrest_opens_a_volume_cryptsetup_formatted() {
    let t = Tmp::new("csformat");
    let img = t.file("c.img", 20 << 20);
    let secret = random(32);
    let secret_file = t.secret("s", &secret);
    assert_ok(&cryptsetup_luks2(
        &["luksFormat"],
        "4096",
        &secret_file,
        &img,
    ));
    let dev = backend(&img);
    let vol = unlock(dev.clone(), &secret).unwrap();
    assert_eq!(vol.sector_size(), 4096);
    let data = random(10_000);
    vol.write_at(&data, 12_345).unwrap();
    let mut back = vec![0u8; data.len()];
    vol.read_at(&mut back, 12_345).unwrap();
    assert_eq!(back, data);
    // And cryptsetup's volume key decrypts what atrest wrote.
    let vk = dump_volume_key(&img, &["--key-file", secret_file.to_str().unwrap()]);
    let seg_offset = {
        let dump =
            String::from_utf8_lossy(&cryptsetup(&["luksDump", img.to_str().unwrap()]).stdout)
                .into_owned();
        let line = dump
            .lines()
            .find(|l| l.trim_start().starts_with("offset:"))
            .unwrap()
            .to_owned();
        line.split_whitespace()
            .nth(1)
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    let mut raw = vec![0u8; 4096];
    // Byte 12 345 is 57 bytes into the fourth 4096-byte sector, whose tweak is 24.
    dev.read_at(&mut raw, seg_offset + 12_288).unwrap();
    let plain = openssl_decrypt_sector(&vk, &raw, 24);
    assert_eq!(&plain[57..], &data[..4096 - 57]);
}

#[test]
fn atrest_reads_what_cryptsetup_reencrypt_encrypt_wrote() {
    let t = Tmp::new("reencrypt");
    let img = t.file("r.img", 48 << 20);
    let plain = random(8 << 20);
    std::fs::write(&img, [plain.clone(), vec![0u8; 40 << 20]].concat()).unwrap();
    let secret = random(32);
    let secret_file = t.secret("s", &secret);
    assert_ok(&cryptsetup_luks2(
        &[
            "reencrypt",
            "--encrypt",
            "--force-offline-reencrypt",
            "--reduce-device-size",
            "32M",
        ],
        "512",
        &secret_file,
        &img,
    ));
    let vol = unlock(backend(&img), &secret).unwrap();
    let mut back = vec![0u8; plain.len()];
    vol.read_at(&mut back, 0).unwrap();
    assert!(
        back == plain,
        "atrest reads different plaintext than cryptsetup encrypted"
    );
}

/// Issue 19, item 8. While atrest holds a volume (as `atrest serve` does for its whole
/// serving time), `cryptsetup luksDump` must answer at once: atrest's own device lock is
/// not the lock cryptsetup waits on. Two atrest holders still exclude each other.
#[test]
fn cryptsetup_reads_a_volume_that_atrest_holds() {
    use volume::backend::{Access, OpenError};
    let t = Tmp::new("held");
    let img = t.formatted("held.img");
    let held = FileBackend::open(&img, Access::Exclusive).unwrap();
    let started = std::time::Instant::now();
    let out = Command::new("timeout")
        .args(["20", "cryptsetup", "luksDump", img.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "luksDump of a held volume: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("atrest-kmip"), "{text}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "luksDump waited {:?}",
        started.elapsed()
    );
    // atrest's own exclusion is unchanged, within one process as between two.
    assert!(matches!(
        FileBackend::open(&img, Access::Exclusive),
        Err(OpenError::Busy { .. })
    ));
    let out = Command::new("timeout")
        .args([
            "20",
            "flock",
            "--nonblock",
            "--exclusive",
            img.to_str().unwrap(),
            "true",
        ])
        .status()
        .unwrap();
    assert!(
        out.success(),
        "atrest must not hold cryptsetup's flock while it merely holds the device"
    );
    drop(held);
}

/// While another process holds cryptsetup's metadata lock exclusively (as cryptsetup does
/// while it writes a header; here util-linux `flock`, which takes the same lock), atrest
/// neither reads nor writes the header: it waits, then gives up naming the lock, and the
/// device is unchanged. Once the lock is released, the same write goes through.
#[test]
fn atrest_waits_for_cryptsetups_metadata_lock_and_changes_nothing() {
    let t = Tmp::new("mdlock");
    let img = t.formatted("mdlock.img");
    let before = std::fs::read(&img).unwrap();
    let dev = file_backend(&img).with_metadata_wait(std::time::Duration::from_millis(500));
    let mut h = volume::luks2::header::read(&dev).unwrap().header;
    let mut holder = Command::new("flock")
        .args([
            "--no-fork",
            "--exclusive",
            img.to_str().unwrap(),
            "sleep",
            "30",
        ])
        .spawn()
        .unwrap();
    // Wait (bounded) until the holder has the lock: a non-blocking shared flock fails.
    let probe = File::open(&img).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while rustix::fs::flock(&probe, rustix::fs::FlockOperation::NonBlockingLockShared).is_ok() {
        rustix::fs::flock(&probe, rustix::fs::FlockOperation::Unlock).unwrap();
        assert!(
            std::time::Instant::now() < deadline,
            "flock never took the lock"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let e = volume::luks2::header::read(&dev).unwrap_err().to_string();
    assert!(
        e.contains("metadata lock") && e.contains("nothing was read"),
        "{e}"
    );
    let e = volume::luks2::header::write(&dev, &mut h.clone())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("metadata lock") && e.contains("nothing was written"),
        "{e}"
    );
    assert!(
        std::fs::read(&img).unwrap() == before,
        "a write went through the lock"
    );
    holder.kill().unwrap();
    holder.wait().unwrap();
    volume::luks2::header::write(&dev, &mut h).unwrap();
    assert!(std::fs::read(&img).unwrap() != before);
}
