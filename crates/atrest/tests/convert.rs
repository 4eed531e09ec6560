//! The real `atrest encrypt`, `rekey --deep` and `decrypt` killed with SIGKILL at random
//! moments, again and again, on a 64 MiB image of random data; then run once more to the
//! end. The result must hold the original data bit for bit, checked twice: through
//! atrest's `Volume` with the key fetched from KMIP, and independently, by stock
//! cryptsetup giving the volume key (`luksDump --dump-volume-key`) and pyca/cryptography
//! decrypting every sector. The final decrypt must give back the original file.
//!
//! `ATREST_KILLS` caps the kills per command (default 20, what CI runs; a command usually
//! finishes after 5–20), `ATREST_KILL_ROUNDS` repeats each case on fresh data
//! (`bench/kill-convert.sh` runs the long version). `ATREST_KILL_SEED` replays a run.
//! Also the operator's view: Ctrl-C stops at a safe point with exit status 3 and stock
//! cryptsetup refuses the half-converted volume; a key gone from the server, and a file
//! that may not grow (a real RLIMIT_FSIZE, the kernel's EFBIG), give clear errors and change
//! nothing.
//!
//! harness = false: one development KMS serves every case.

mod harness;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use harness::kms::{atrest_bin, free_port, Kms};
use harness::{assert_success, succeed};
use kmip::client::Client;
use volume::backend::{BlockBackend, FileBackend};

const SIZE: usize = 64 << 20;

struct Env {
    kms: Kms,
    dir: PathBuf,
    kills: u32,
    rounds: u32,
    total: std::cell::Cell<u32>,
    seed: std::cell::Cell<u64>,
}

impl Env {
    fn random(&self) -> u64 {
        let mut x = self.seed.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.seed.set(x);
        x
    }
}

fn venv_python() -> PathBuf {
    harness::pykmip::venv().join("bin/python")
}

/// Runs `atrest args… --json` and kills it with SIGKILL, again and again, until it has
/// been killed `env.kills` times or a run finishes; then runs it to the end if needed.
/// Each kill aims at a random fraction of the whole job (from the progress events) plus a
/// random delay of up to 8 ms, so kills land in start-up, mid-step, between steps and in
/// the final wipe alike. Returns the number of kills.
fn kill_repeatedly(env: &Env, args: &[&str], done: &dyn Fn() -> bool) -> u32 {
    let mut killed = 0;
    while killed < env.kills {
        // A kill can land after the last commit: then the job is done, and running the
        // command again would start a new one (a second rekey) or refuse (encrypt).
        if done() {
            return killed;
        }
        let target = (env.random() % 1050) as f64 / 1000.0;
        let extra = Duration::from_micros(env.random() % 8_000);
        let mut child = Command::new(atrest_bin())
            .args(args)
            .arg("--json")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut reached = false;
        for line in std::io::BufRead::lines(lines) {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line.unwrap()) else {
                continue;
            };
            if v["event"] == "progress" {
                let frac = v["done"].as_f64().unwrap() / v["total"].as_f64().unwrap().max(1.0);
                if frac >= target {
                    reached = true;
                    break;
                }
            }
        }
        if reached {
            std::thread::sleep(extra);
            if child.try_wait().unwrap().is_none() {
                child.kill().unwrap();
                child.wait().unwrap();
                killed += 1;
                continue;
            }
        }
        let out = child.wait_with_output().unwrap();
        assert_success(format_args!("{args:?}"), &out);
        return killed;
    }
    if !done() {
        let out = Command::new(atrest_bin()).args(args).output().unwrap();
        assert_success(format_args!("{args:?} after {killed} kills"), &out);
    }
    killed
}

fn finished(img: &Path) -> bool {
    try_status(img).is_some_and(|s| s["requirements"] == serde_json::json!([]))
}

/// `atrest status --json` of `img` (with its detached header, if any): the header's facts,
/// or what atrest said when it could not read them.
fn status_of(img: &Path, header: Option<&Path>) -> Result<serde_json::Value, String> {
    let mut c = Command::new(atrest_bin());
    c.args(["status", "--json"]);
    if let Some(h) = header {
        c.arg("--header").arg(h);
    }
    let out = c.arg(img).output().unwrap();
    if out.status.success() {
        Ok(serde_json::from_slice(&out.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn status(img: &Path) -> serde_json::Value {
    status_of(img, None).unwrap_or_else(|e| panic!("{e}"))
}

/// The header's facts, or `None` when the device has no (atrest) header.
fn try_status(img: &Path) -> Option<serde_json::Value> {
    status_of(img, None).ok()
}

fn secret(env: &Env, uid: &str) -> Vec<u8> {
    let config = service::config::Config::load(&env.kms.dir.join("client.toml")).unwrap();
    Client::new(config.kmip)
        .unwrap()
        .get_symmetric_key(uid)
        .unwrap()
        .to_vec()
}

/// The volume's plaintext must be `original`: via `Volume`, and via cryptsetup + pyca.
fn check_volume(env: &Env, img: &Path, original: &Path) {
    let s = status(img);
    assert_eq!(
        s["requirements"],
        serde_json::json!([]),
        "conversion fence left behind"
    );
    let secret = secret(env, s["key_uid"].as_str().unwrap());
    // Writable: a kill during the last header commit leaves one copy torn (the other is
    // whole and newer), and unlocking repairs it, as cryptsetup does.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(img)
        .unwrap();
    let dev: Arc<dyn BlockBackend> = Arc::new(FileBackend::new(file));
    let vol = volume::volume::unlock(dev, &secret).unwrap();
    let want = std::fs::read(original).unwrap();
    let mut got = vec![0u8; vol.size() as usize];
    vol.read_at(&mut got, 0).unwrap();
    assert!(got == want, "Volume reads differ from the original");
    // Independently: the volume key from cryptsetup, every sector decrypted by pyca.
    let volume_key = if s["key_mode"] == "direct" {
        secret.clone()
    } else {
        harness::cryptsetup_volume_key(img, &secret)
    };
    let script = r#"
import hashlib, sys
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
img, off, size, ss, key, want = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), bytes.fromhex(sys.argv[5]), sys.argv[6]
h = hashlib.sha256()
with open(img, "rb") as f:
    f.seek(off)
    for i in range(size // ss):
        d = Cipher(algorithms.AES(key), modes.XTS((i * ss // 512).to_bytes(16, "little"))).decryptor()
        h.update(d.update(f.read(ss)) + d.finalize())
sys.exit(0 if h.hexdigest() == want else "pyca's plaintext differs: " + h.hexdigest())
"#;
    succeed(
        Command::new(venv_python())
            .args(["-c", script])
            .arg(img)
            .args([
                s["data_offset"].to_string(),
                s["data_size"].to_string(),
                s["sector_size"].to_string(),
                hex::encode(&volume_key),
                hex::encode(openssl::sha::sha256(&want)),
            ]),
    );
}

fn convert_under_kill(env: &Env, mode: &[&str], sector: &str) {
    let img = env.dir.join(format!("img-{}", sector));
    let original = env.dir.join(format!("orig-{}", sector));
    let mut data = vec![0u8; SIZE];
    openssl::rand::rand_bytes(&mut data).unwrap();
    std::fs::write(&original, &data).unwrap();
    std::fs::write(&img, &data).unwrap();
    let config = env.kms.dir.join("client.toml");
    let base = |cmd: &str| -> Vec<String> {
        let mut v = vec![cmd.to_owned(), "-c".into(), config.display().to_string()];
        v.push(img.display().to_string());
        v.extend(["--step".into(), "2M".into()]);
        v
    };
    let mut enc = base("encrypt");
    enc.extend(["--sector-size".into(), sector.into()]);
    enc.extend(mode.iter().map(|s| s.to_string()));
    let enc: Vec<&str> = enc.iter().map(String::as_str).collect();
    let k1 = kill_repeatedly(env, &enc, &|| finished(&img));
    println!("  encrypt {mode:?} {sector}: {k1} kills, then finished");
    check_volume(env, &img, &original);
    nothing_left_in_the_header_area(&img, &data, "encrypt");

    let mut rk = base("rekey");
    rk.push("--deep".into());
    let rk: Vec<&str> = rk.iter().map(String::as_str).collect();
    let before = status(&img)["key_uid"].clone();
    let k2 = kill_repeatedly(env, &rk, &|| {
        finished(&img) && status(&img)["key_uid"] != before
    });
    println!("  rekey --deep: {k2} kills, then finished");
    check_volume(env, &img, &original);
    nothing_left_in_the_header_area(&img, &data, "rekey --deep");

    let dec = base("decrypt");
    let dec: Vec<&str> = dec.iter().map(String::as_str).collect();
    // Decrypt is done when the header is gone and the park record with it (the file is
    // back to its size).
    let k3 = kill_repeatedly(env, &dec, &|| {
        try_status(&img).is_none() && std::fs::metadata(&img).unwrap().len() == SIZE as u64
    });
    println!("  decrypt: {k3} kills, then finished");
    env.total.set(env.total.get() + k1 + k2 + k3);
    assert!(
        k1 + k2 + k3 >= 3,
        "too few kills landed ({k1}, {k2}, {k3}) to show anything"
    );
    assert!(
        std::fs::read(&img).unwrap() == data,
        "decrypted image differs from the original"
    );
}

/// Issue 10, defect 1: after a conversion killed again and again, the 16 MiB header
/// area holds nothing of the original data (which sat there, at the same offsets, before
/// the encryption moved it up), and the journal area nothing at all (a deep rekey kept old
/// ciphertext there); only the file's tail beyond the volume was dropped.
fn nothing_left_in_the_header_area(img: &Path, data: &[u8], what: &str) {
    let image = std::fs::read(img).unwrap();
    let d = volume::layout::DATA_OFFSET as usize;
    assert_eq!(image.len(), d + data.len(), "{what}: the file keeps a tail");
    for at in (0..d).step_by(16) {
        let block = &image[at..at + 16];
        assert!(
            block.iter().all(|&b| b == 0) || block != &data[at..at + 16],
            "{what}: original data left at byte {at:#x}"
        );
    }
    let j = volume::layout::JOURNAL_OFFSET as usize..volume::layout::JOURNAL_END as usize;
    assert!(
        image[j].iter().all(|&b| b == 0),
        "{what}: the journal area was not wiped"
    );
}

fn wrapped_512(env: &Env) {
    for _ in 0..env.rounds {
        convert_under_kill(env, &[], "512");
    }
}

fn direct_4096(env: &Env) {
    for _ in 0..env.rounds {
        convert_under_kill(env, &["--direct"], "4096");
    }
}

fn atrest(env: &Env, args: &[&str], img: &Path) -> std::process::Output {
    Command::new(atrest_bin())
        .arg(args[0])
        .arg("-c")
        .arg(env.kms.dir.join("client.toml"))
        .args(&args[1..])
        .arg(img)
        .output()
        .unwrap()
}

fn sha(p: &Path) -> [u8; 32] {
    openssl::sha::sha256(&std::fs::read(p).unwrap())
}

fn random_image(env: &Env, name: &str, len: usize) -> (PathBuf, Vec<u8>) {
    let img = env.dir.join(name);
    let mut data = vec![0u8; len];
    openssl::rand::rand_bytes(&mut data).unwrap();
    std::fs::write(&img, &data).unwrap();
    (img, data)
}

fn cryptsetup_with_secret(args: &[&str], img: &Path, secret: &[u8]) -> std::process::Output {
    let mut c = Command::new("cryptsetup")
        .args(args)
        .arg("--key-file=-")
        .arg(img)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(secret).unwrap();
    c.wait_with_output().unwrap()
}

fn ctrl_c_stops_safely_and_cryptsetup_refuses_the_half_converted_volume(env: &Env) {
    let (img, data) = random_image(env, "ctrlc", 512 << 20);
    let mut child = Command::new(atrest_bin())
        .args(["encrypt", "-c"])
        .arg(env.kms.dir.join("client.toml"))
        .args(["--step", "1M", "--json"])
        .arg(&img)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
    for line in lines.by_ref() {
        let v: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
        if v["event"] == "progress" && v["done"].as_u64().unwrap() > 0 {
            break;
        }
    }
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let events: Vec<String> = lines.map(Result::unwrap).collect();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        events.last().unwrap().contains("\"event\":\"stopped\""),
        "{events:?}"
    );
    let s = status(&img);
    assert_eq!(
        s["requirements"],
        serde_json::json!(["atrest-conversion-v1"])
    );
    // Stock cryptsetup: the KMIP secret is right (test-passphrase), yet it refuses to
    // change or use the fenced volume.
    let secret = secret(env, s["key_uid"].as_str().unwrap());
    let out = cryptsetup_with_secret(&["open", "--test-passphrase"], &img, &secret);
    assert_success("cryptsetup open --test-passphrase", &out);
    let extra = env.dir.join("extra-pass");
    std::fs::write(&extra, b"another passphrase").unwrap();
    let out = Command::new("cryptsetup")
        .args([
            "luksAddKey",
            "--batch-mode",
            "--pbkdf",
            "pbkdf2",
            "--pbkdf-force-iterations",
            "1000",
            "--key-file=-",
        ])
        .arg(&img)
        .arg(&extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(&secret)?;
            c.wait_with_output()
        })
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("Unmet LUKS2 requirements"),
        "{err}"
    );
    // atrest's own reads refuse it too, and send the operator back to finish.
    let out = Command::new(atrest_bin())
        .args(["status"])
        .arg(&img)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("conversion is in progress"));
    let out = atrest(env, &["encrypt"], &img);
    assert_success("atrest encrypt", &out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("resuming"));
    let out = cryptsetup_with_secret(&["open", "--test-passphrase"], &img, &secret);
    assert!(out.status.success());
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&img)
        .unwrap();
    let dev: Arc<dyn BlockBackend> = Arc::new(FileBackend::new(file));
    let vol = volume::volume::unlock(dev, &secret).unwrap();
    let mut got = vec![0u8; data.len()];
    vol.read_at(&mut got, 0).unwrap();
    assert!(got == data);
}

fn a_key_gone_from_the_server_is_a_clear_error_and_changes_nothing(env: &Env) {
    let (img, _) = random_image(env, "gone", 64 << 20);
    let out = atrest(env, &["encrypt"], &img);
    assert_success("atrest encrypt", &out);
    let uid = status(&img)["key_uid"].as_str().unwrap().to_owned();
    let before = sha(&img);
    for op in ["revoke", "destroy"] {
        succeed(
            Command::new(atrest_bin())
                .args(["kmip", op, "-c"])
                .arg(env.kms.dir.join("client.toml"))
                .arg(&uid),
        );
    }
    for cmd in [&["decrypt"][..], &["rekey"], &["rekey", "--deep"]] {
        let out = atrest(env, cmd, &img);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{cmd:?}: {err}");
        assert!(err.contains(&uid) && err.contains("KMIP"), "{cmd:?}: {err}");
        assert_eq!(sha(&img), before, "{cmd:?} changed the device");
    }
}

/// A compromised key is handled as one: a rewrap would keep the volume key the compromise
/// may have exposed, so only a deep rekey is allowed, and the compromised key is not
/// revoked a second time (which would replace "Key Compromise" on the server).
fn a_compromised_key_is_only_rekeyed_deep(env: &Env) {
    let (img, data) = random_image(env, "compromised", 16 << 20);
    let out = atrest(env, &["encrypt"], &img);
    assert_success("atrest encrypt", &out);
    let uid = status(&img)["key_uid"].as_str().unwrap().to_owned();
    succeed(
        Command::new(atrest_bin())
            .args(["kmip", "revoke", "--reason", "key-compromise", "-c"])
            .arg(env.kms.dir.join("client.toml"))
            .arg(&uid),
    );
    let before = sha(&img);
    let out = atrest(env, &["rekey"], &img);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("Compromised") && err.contains("--deep"),
        "{err}"
    );
    assert_eq!(sha(&img), before, "a refused rewrap changed the device");
    let out = atrest(env, &["rekey", "--deep"], &img);
    assert_success("atrest rekey --deep", &out);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("already and is left as it is"), "{said}");
    assert_ne!(status(&img)["key_uid"].as_str().unwrap(), uid);
    let out = atrest(env, &["decrypt"], &img);
    assert_success("atrest decrypt", &out);
    assert!(
        std::fs::read(&img).unwrap() == data,
        "not the original data"
    );
}

fn a_file_that_cannot_grow_is_refused_before_any_data_moves(env: &Env) {
    let (img, data) = random_image(env, "nospace", 64 << 20);
    // A real limit from the kernel: RLIMIT_FSIZE (KiB) at the image's size, SIGXFSZ ignored, so
    // growing the file fails with EFBIG as a full disk fails with ENOSPC.
    let out = Command::new("bash")
        .arg("-c")
        .arg(r#"trap "" XFSZ; ulimit -f $((64 * 1024)); exec "$@""#)
        .arg("bash")
        .arg(atrest_bin())
        .args(["encrypt", "-c"])
        .arg(env.kms.dir.join("client.toml"))
        .arg(&img)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("File too large") && err.contains("revoked and destroyed"),
        "{err}"
    );
    assert!(std::fs::read(&img).unwrap() == data, "the image changed");
}

fn a_detached_header_converts_in_place_under_sigkill(env: &Env) {
    let (img, data) = random_image(env, "detached", 32 << 20);
    let hdr = env.dir.join("detached.hdr");
    let config = env.kms.dir.join("client.toml");
    let args = |cmd: &str, extra: &[&str]| -> Vec<String> {
        let mut v = vec![cmd.to_owned(), "-c".into(), config.display().to_string()];
        v.extend([
            "--header".into(),
            hdr.display().to_string(),
            "--step".into(),
            "2M".into(),
        ]);
        v.extend(extra.iter().map(|s| s.to_string()));
        v.push(img.display().to_string());
        v
    };
    let status = || status_of(&img, Some(&hdr)).ok();
    let enc = args("encrypt", &[]);
    let enc: Vec<&str> = enc.iter().map(String::as_str).collect();
    let k1 = kill_repeatedly(env, &enc, &|| {
        status().is_some_and(|s| s["requirements"] == serde_json::json!([]))
    });
    let s = status().unwrap();
    assert_eq!(s["data_offset"], 0, "{s}");
    assert_eq!(
        std::fs::metadata(&img).unwrap().len(),
        data.len() as u64,
        "the data device grew"
    );
    let secret = secret(env, s["key_uid"].as_str().unwrap());
    // Stock cryptsetup opens it with the header file.
    let mut c = Command::new("cryptsetup")
        .args(["open", "--test-passphrase", "--key-file=-", "--header"])
        .arg(&hdr)
        .arg(&img)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(&secret).unwrap();
    let out = c.wait_with_output().unwrap();
    assert_success("cryptsetup open --test-passphrase --header", &out);
    let h = FileBackend::new(
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&hdr)
            .unwrap(),
    );
    let dev: Arc<dyn BlockBackend> = Arc::new(FileBackend::new(std::fs::File::open(&img).unwrap()));
    let vol = volume::volume::unlock_detached(&h, dev, &secret).unwrap();
    let mut got = vec![0u8; data.len()];
    vol.read_at(&mut got, 0).unwrap();
    assert!(got == data, "the detached volume reads differently");
    let dec = args("decrypt", &[]);
    let dec: Vec<&str> = dec.iter().map(String::as_str).collect();
    let k2 = kill_repeatedly(env, &dec, &|| !hdr.exists() || status().is_none());
    if hdr.exists() {
        // A kill after the wipe but before the removal: the command says so, and data is fine.
        let out = Command::new(atrest_bin()).args(&dec).output().unwrap();
        assert!(String::from_utf8_lossy(&out.stderr).contains("holds no header"));
    }
    assert!(
        std::fs::read(&img).unwrap() == data,
        "decrypted data differs"
    );
    env.total.set(env.total.get() + k1 + k2);
    println!("  --header: encrypt {k1} kills, decrypt {k2} kills");
}

fn main() {
    let scratch = harness::scratch("atrest-kill-");
    let dir = scratch.path().to_owned();
    let seed = std::env::var("ATREST_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    let kills = std::env::var("ATREST_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let rounds = std::env::var("ATREST_KILL_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    println!("kill harness: up to {kills} kills per command, {rounds} round(s) per case, ATREST_KILL_SEED={seed}");
    let env = Env {
        kms: Kms::start(&dir.join("kms"), free_port()),
        dir: dir.clone(),
        kills,
        rounds,
        total: std::cell::Cell::new(0),
        seed: std::cell::Cell::new(seed),
    };
    let cases: &[harness::Case<Env>] = &[
        (
            "ctrl_c_stops_safely_and_cryptsetup_refuses_the_half_converted_volume",
            ctrl_c_stops_safely_and_cryptsetup_refuses_the_half_converted_volume,
        ),
        (
            "a_key_gone_from_the_server_is_a_clear_error_and_changes_nothing",
            a_key_gone_from_the_server_is_a_clear_error_and_changes_nothing,
        ),
        (
            "a_compromised_key_is_only_rekeyed_deep",
            a_compromised_key_is_only_rekeyed_deep,
        ),
        (
            "a_file_that_cannot_grow_is_refused_before_any_data_moves",
            a_file_that_cannot_grow_is_refused_before_any_data_moves,
        ),
        (
            "a_detached_header_converts_in_place_under_sigkill",
            a_detached_header_converts_in_place_under_sigkill,
        ),
        (
            "encrypt_rekey_decrypt_survive_sigkill_wrapped_512",
            wrapped_512,
        ),
        (
            "encrypt_rekey_decrypt_survive_sigkill_direct_4096",
            direct_4096,
        ),
    ];
    let (conclusion, env) = harness::run(cases, env);
    println!(
        "SIGKILLs in all: {}, every run resumed to the original data",
        env.total.get()
    );
    harness::finish(conclusion, env, scratch);
}
