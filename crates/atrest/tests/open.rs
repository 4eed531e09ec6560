//! `atrest open` (issue 12) with real peers: the development KMS and PyKMIP's server for
//! the keys; `nbdinfo`, `qemu-io`, `qemu-img`, `nbdcopy` and `fio` as NBD clients; FUSE
//! with `losetup`, `mkfs.ext4` and `mount` for a real filesystem; `cryptsetup` for the
//! dm-crypt road and as the oracle for what was written; `gdb`/`gcore` to look at the
//! memory of a process that holds a key. One set of servers for every case
//! (harness = false); every tool missing is a failure, not a skip.

mod harness;

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use harness::kms::{atrest_bin, free_port, Kms};
use harness::pykmip::{Pki, PyKmip};
use harness::{
    atrest, atrest_ok, format_volume, kill_if_running, qemu_img_read, random, signal, succeed,
    text, wait_for, Loop,
};

struct Env {
    dir: PathBuf,
    kms: Kms,
    /// A configuration for PyKMIP's server.
    pykmip_conf: PathBuf,
    _pykmip: PyKmip,
}

/// A new, formatted volume of `data_mib` MiB of data space under `config`.
fn volume(env: &Env, name: &str, data_mib: u64, config: &Path, extra: &[&str]) -> PathBuf {
    let img = env.dir.join(name);
    format_volume(config, &img, data_mib, extra);
    img
}

/// A running `atrest open`, ready when it printed its "ready" event.
struct Served {
    child: Child,
    at: String,
    stdout: BufReader<std::process::ChildStdout>,
}

impl Served {
    fn start(config: &Path, img: &Path, export: &[&str]) -> Self {
        Self::start_in(config, img, export, None)
    }

    fn start_in(config: &Path, img: &Path, export: &[&str], cwd: Option<&Path>) -> Self {
        // Through a shell that allows core dumps, so that the process's own refusal to
        // dump is what is tested.
        let mut cmd = Command::new("bash");
        cmd.args([
            "-c",
            "ulimit -c unlimited; exec \"$0\" \"$@\"",
            atrest_bin(),
        ])
        .args(["open", "--json", "--config"])
        .arg(config)
        .args(export)
        .arg(img)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
        if let Some(d) = cwd {
            cmd.current_dir(d);
        }
        let mut child = cmd.spawn().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        if line.is_empty() {
            let mut err = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            panic!("atrest open exited before it was ready: {err}");
        }
        let j: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert_eq!(j["event"], "ready", "{j}");
        // PR_SET_DUMPABLE 0, in the process's own words (see
        // keys_are_locked_never_dumped_and_gone_from_memory_images).
        assert_eq!(j["hardening"]["dumpable"], false, "{j}");
        Self {
            at: j["at"].as_str().unwrap().to_owned(),
            child,
            stdout,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM: must flush, close and exit 0 with a "stopped" event. Returns what it
    /// wrote to stderr.
    fn stop(mut self) -> String {
        signal(self.pid(), "TERM");
        let mut line = String::new();
        let _ = self.stdout.read_line(&mut line);
        let status = wait_for(&mut self.child, Duration::from_secs(30));
        let mut err = String::new();
        let _ = self.child.stderr.take().unwrap().read_to_string(&mut err);
        assert!(
            status.success(),
            "atrest open exited with {status} after SIGTERM: {err}"
        );
        assert!(line.contains("\"stopped\""), "{line}");
        err
    }

    fn kill9(mut self) {
        signal(self.pid(), "KILL");
        wait_for(&mut self.child, Duration::from_secs(10));
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        kill_if_running(&mut self.child);
    }
}

fn random_file(path: &Path, len: usize) -> Vec<u8> {
    let data = random(len);
    std::fs::write(path, &data).unwrap();
    data
}

fn status_json(img: &Path) -> serde_json::Value {
    serde_json::from_slice(&atrest_ok(&["status", "--json", img.to_str().unwrap()]).stdout).unwrap()
}

/// The KMIP key of `img`.
fn kmip_key(config: &Path, img: &Path) -> Vec<u8> {
    let uid = status_json(img)["key_uid"].as_str().unwrap().to_owned();
    atrest_ok(&[
        "kmip",
        "get",
        "--raw",
        "--config",
        config.to_str().unwrap(),
        &uid,
    ])
    .stdout
}

/// The KMIP key of a wrapped-mode `img`, and its volume key as cryptsetup dumps it.
fn keys_of(config: &Path, img: &Path) -> (Vec<u8>, Vec<u8>) {
    let secret = kmip_key(config, img);
    let volume_key = harness::cryptsetup_volume_key(img, &secret);
    (secret, volume_key)
}

/// fio's JSON report (fio may print notes before it).
fn fio_json(out: &Output) -> serde_json::Value {
    let s = String::from_utf8_lossy(&out.stdout);
    let at = s.find("\n{").map_or(0, |i| i + 1);
    serde_json::from_str(&s[at..]).unwrap_or_else(|e| panic!("{e}: {s}"))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(hay, needle)
}

// ---------------------------------------------------------------------------------------

fn nbd_serves_qemu_nbdcopy_and_fio_and_keeps_data_across_reopen(env: &Env) {
    let conf = env.kms.client_toml();
    let img = volume(env, "nbd.img", 272, &conf, &[]);
    let sock = env.dir.join("nbd.sock");
    let addr = format!("unix:{}", sock.display());
    let served = Served::start(&conf, &img, &["--nbd", &addr]);
    let uri = served.at.clone();
    assert!(uri.starts_with("nbd+unix://"), "{uri}");
    // nbdinfo shows the export with its size and the sector size as minimum block size.
    let info = succeed(Command::new("nbdinfo").args(["--json", &uri]));
    let j: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    let e = &j["exports"][0];
    assert_eq!(e["export-size"], 272u64 << 20, "{j}");
    assert_eq!(e["block_size_minimum"], 512, "{j}");
    // A pattern with qemu-io, aligned and not.
    succeed(Command::new("qemu-io").args([
        "-f",
        "raw",
        &uri,
        "-c",
        "write -P 0xab 0 4M",
        "-c",
        "write -P 0xcd 1000 7000",
        "-c",
        "flush",
    ]));
    served.stop();
    // Opened again (the key fetched again by its identifier): qemu-img reads it back.
    let served = Served::start(&conf, &img, &["--nbd", &addr]);
    let out = env.dir.join("nbd.out");
    qemu_img_read(&served.at, &out);
    let back = std::fs::read(&out).unwrap();
    assert_eq!(back.len(), 272 << 20);
    assert!(back[..1000].iter().all(|&b| b == 0xab));
    assert!(back[1000..8000].iter().all(|&b| b == 0xcd));
    assert!(back[8000..4 << 20].iter().all(|&b| b == 0xab));
    // nbdcopy 256 MiB in, and out again: byte-exact.
    let src = env.dir.join("random.bin");
    let data = random_file(&src, 256 << 20);
    succeed(Command::new("nbdcopy").args([src.to_str().unwrap(), &served.at]));
    let copy = env.dir.join("copy.bin");
    succeed(Command::new("nbdcopy").args([&served.at, copy.to_str().unwrap()]));
    let got = std::fs::read(&copy).unwrap();
    assert!(
        got[..data.len()] == data[..],
        "nbdcopy read back different bytes"
    );
    // fio's own NBD engine, random writes at queue depth 32, every block verified.
    let fio = succeed(Command::new("fio").args([
        "--name=verify",
        "--ioengine=nbd",
        &format!("--uri={}", served.at),
        "--rw=randwrite",
        "--bs=4k",
        "--iodepth=32",
        "--size=64m",
        "--verify=crc32c",
        "--verify_fatal=1",
        "--do_verify=1",
        "--verify_state_save=0",
        "--output-format=json",
    ]));
    let f = fio_json(&fio);
    assert_eq!(f["jobs"][0]["error"], 0, "{f}");
    served.stop();
    // What is on the disk is ciphertext: a sample of the plaintext is nowhere in the image,
    // and cryptsetup's volume key decrypts the sector to it.
    let raw = std::fs::read(&img).unwrap();
    let at = (100 << 20) + 12345;
    assert!(
        find(&raw, &data[at..at + 32]).is_none(),
        "plaintext found in the image"
    );
    let (_, vk) = keys_of(&conf, &img);
    let sector = at / 512 * 512;
    let ct = &raw[(16 << 20) + sector..(16 << 20) + sector + 512];
    let mut iv = [0u8; 16];
    iv[..8].copy_from_slice(&((sector / 512) as u64).to_le_bytes());
    let pt =
        openssl::symm::decrypt(openssl::symm::Cipher::aes_128_xts(), &vk, Some(&iv), ct).unwrap();
    assert!(
        pt == data[sector..sector + 512],
        "cryptsetup's key does not decrypt what NBD wrote"
    );
}

fn nbd_against_pykmip_keeps_data_across_reopen(env: &Env) {
    let conf = &env.pykmip_conf;
    let img = volume(env, "pykmip.img", 32, conf, &["--direct"]);
    let addr = format!("127.0.0.1:{}", free_port());
    let served = Served::start(conf, &img, &["--nbd", &addr]);
    assert!(served.at.starts_with("nbd://127.0.0.1:"), "{}", served.at);
    succeed(Command::new("qemu-io").args([
        "-f",
        "raw",
        &served.at,
        "-c",
        "write -P 0x5a 65536 1M",
    ]));
    // A TCP port has no owner: the operator is told who can reach the plaintext.
    let err = served.stop();
    assert!(err.contains("every local account"), "{err}");
    let served = Served::start(conf, &img, &["--nbd", &addr]);
    succeed(Command::new("qemu-io").args(["-f", "raw", &served.at, "-c", "read -P 0x5a 65536 1M"]));
    served.stop();
}

fn mountpoint(env: &Env, name: &str) -> PathBuf {
    let m = env.dir.join(name);
    std::fs::create_dir_all(&m).unwrap();
    m
}

/// Files of random content, name → SHA-256.
fn write_files(dir: &Path) -> Vec<(String, [u8; 32])> {
    (0..12)
        .map(|i| {
            let name = format!("recording-{i}.bin");
            let data = random_file(&dir.join(&name), 100_000 + i * 37_000);
            (name, openssl::sha::sha256(&data))
        })
        .collect()
}

fn check_files(dir: &Path, files: &[(String, [u8; 32])], what: &str) {
    for (name, sum) in files {
        let got = openssl::sha::sha256(&std::fs::read(dir.join(name)).unwrap());
        assert_eq!(&got, sum, "{what}: {name} differs");
    }
}

struct Mount(PathBuf);

impl Mount {
    fn new(dev: &str, at: &Path) -> Self {
        succeed(Command::new("mount").arg(dev).arg(at));
        Self(at.to_owned())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn fuse_carries_ext4_across_reopen_and_decrypt(env: &Env) {
    let conf = env.kms.client_toml();
    let img = volume(env, "fuse.img", 64, &conf, &[]);
    let fuse = mountpoint(env, "fuse");
    let mnt = mountpoint(env, "mnt");
    let served = Served::start(&conf, &img, &["--fuse", fuse.to_str().unwrap()]);
    assert_eq!(PathBuf::from(&served.at), fuse.join("volume"));
    // Asynchronous direct I/O at depth 32, as qemu or a database would send it (the kernel
    // runs it concurrently only with FUSE_ASYNC_DIO agreed): every block read back is the
    // block written, at unaligned offsets of the volume too.
    for (rw, offset) in [("randrw", "0"), ("write", "1536")] {
        let out = succeed(Command::new("fio").args([
            "--name=fuse-depth",
            "--ioengine=libaio",
            "--direct=1",
            "--iodepth=32",
            "--bs=4k",
            "--size=16m",
            &format!("--rw={rw}"),
            &format!("--offset={offset}"),
            "--verify=crc32c",
            "--verify_fatal=1",
            "--do_verify=1",
            "--verify_state_save=0",
            &format!("--filename={}", fuse.join("volume").display()),
        ]));
        assert!(
            text(&out).contains("err= 0"),
            "fio on the FUSE file at depth 32: {}",
            text(&out)
        );
    }
    let files = {
        let lo = Loop::attach(&fuse.join("volume"));
        succeed(Command::new("mkfs.ext4").args(["-q", "-F", &lo.0]));
        let _m = Mount::new(&lo.0, &mnt);
        let files = write_files(&mnt);
        succeed(&mut Command::new("sync"));
        files
    };
    served.stop();
    // The FUSE mount is gone with the process.
    assert!(
        !fuse.join("volume").exists(),
        "the FUSE mount outlived atrest open"
    );
    let served = Served::start(&conf, &img, &["--fuse", fuse.to_str().unwrap()]);
    {
        let lo = Loop::attach(&fuse.join("volume"));
        let _m = Mount::new(&lo.0, &mnt);
        check_files(&mnt, &files, "after reopening");
    }
    served.stop();
    // The image holds no plaintext of the files.
    let raw = std::fs::read(&img).unwrap();
    assert!(
        find(&raw, b"lost+found").is_none(),
        "ext4 plaintext in the encrypted image"
    );
    // Decrypted in place, the image is the plain ext4 filesystem with the same files.
    atrest_ok(&[
        "decrypt",
        "--config",
        conf.to_str().unwrap(),
        img.to_str().unwrap(),
    ]);
    assert_eq!(std::fs::metadata(&img).unwrap().len(), 64 << 20);
    let lo = Loop::attach(&img);
    let _m = Mount::new(&lo.0, &mnt);
    check_files(&mnt, &files, "after decrypt");
}

fn fio_job(uri: &str, rw: &str, offset: &str, size: &str, extra: &[&str]) -> Command {
    let mut c = Command::new("fio");
    c.args([
        "--name=crash",
        "--ioengine=nbd",
        &format!("--uri={uri}"),
        &format!("--rw={rw}"),
        "--bs=64k",
        "--iodepth=8",
        &format!("--offset={offset}"),
        &format!("--size={size}"),
        "--verify=crc32c",
        "--verify_fatal=1",
        "--verify_state_save=0",
        "--randseed=42",
    ]);
    c.args(extra);
    c
}

fn kill_9_during_writes_keeps_every_flushed_write(env: &Env) {
    let conf = env.kms.client_toml();
    let img = volume(env, "crash.img", 96, &conf, &[]);
    let addr = format!("unix:{}", env.dir.join("crash.sock").display());
    let served = Served::start(&conf, &img, &["--nbd", &addr]);
    // First 32 MiB written and flushed (end_fsync: a completed NBD FLUSH).
    succeed(&mut fio_job(
        &served.at,
        "write",
        "0",
        "32m",
        &["--do_verify=0", "--end_fsync=1"],
    ));
    // Then writes to the next 64 MiB, with the server killed half-way.
    let mut busy = fio_job(
        &served.at,
        "randwrite",
        "32m",
        "64m",
        &["--do_verify=0", "--time_based", "--runtime=30"],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    served.kill9();
    let status = wait_for(&mut busy, Duration::from_secs(60));
    assert!(!status.success(), "fio did not notice the server die");
    // Opened again: every flushed block reads back intact.
    let served = Served::start(&conf, &img, &["--nbd", &addr]);
    let v = succeed(&mut fio_job(
        &served.at,
        "write",
        "0",
        "32m",
        &["--verify_only", "--output-format=json"],
    ));
    let f = fio_json(&v);
    assert_eq!(f["jobs"][0]["error"], 0, "{f}");
    assert_eq!(
        f["jobs"][0]["read"]["io_bytes"],
        32u64 << 20,
        "not all of the flushed range was verified: {f}"
    );
    served.stop();
}

fn proc_field(pid: u32, field: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!("{field}:"))
                .map(|v| v.trim().to_owned())
        })
        .unwrap_or_default()
}

fn keys_are_locked_never_dumped_and_gone_from_memory_images(env: &Env) {
    let conf = env.kms.client_toml();
    let img = volume(env, "mem.img", 8, &conf, &[]);
    let (kmip_key, volume_key) = keys_of(&conf, &img);
    let uid = status_json(&img)["key_uid"].as_str().unwrap().to_owned();
    let addr = format!("unix:{}", env.dir.join("mem.sock").display());
    // Started where a core file would land, with core dumps allowed by the shell.
    let cwd = mountpoint(env, "cores");
    let served = Served::start_in(&conf, &img, &["--nbd", &addr], Some(&cwd));
    succeed(Command::new("qemu-io").args(["-f", "raw", &served.at, "-c", "write -P 0x11 0 1M"]));
    let pid = served.pid();
    // Locked in memory, and its own core size limit is 0.
    let locked: u64 = proc_field(pid, "VmLck")
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    assert!(locked > 0, "VmLck is 0: no key page is locked");
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let core_limit = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap()
        .split_whitespace()
        .skip(4)
        .take(2)
        .collect::<Vec<_>>();
    assert_eq!(core_limit, ["0", "0"], "core size limit: {limits}");
    // A memory image taken by root (gcore) holds neither key, raw or in hex: the key
    // schedule's pages are left out, and freed copies were wiped.
    let core = cwd.join("gcore");
    succeed(Command::new("gcore").args(["-o", core.to_str().unwrap(), &pid.to_string()]));
    let image = std::fs::read(format!("{}.{pid}", core.display())).unwrap();
    assert!(
        image.len() > 1 << 20,
        "the memory image is implausibly small"
    );
    // A control: the key's identifier (not a secret) is in memory, so the scan works.
    assert!(
        find(&image, uid.as_bytes()).is_some(),
        "the control string is missing from the image"
    );
    for (name, key) in [("KMIP key", &kmip_key), ("volume key", &volume_key)] {
        for part in key.chunks(16) {
            assert!(
                find(&image, part).is_none(),
                "the {name} is in the process's memory image"
            );
        }
        assert!(
            find(&image, hex::encode(key).as_bytes()).is_none(),
            "the {name} in hex"
        );
    }
    let _ = std::fs::remove_file(format!("{}.{pid}", core.display()));
    // PR_SET_DUMPABLE 0 itself is asserted by secmem's
    // `hardening_makes_the_process_undumpable`, and every `atrest open` here reports it in
    // its ready event (Served::start_in), as the daemon does in its status (serve.rs). It
    // cannot be read from outside here: gdb's `print prctl(...)` needs an inferior call,
    // which gdb 13 cannot make on CPUs whose extended register state it fails to write
    // back ("Couldn't write extended state status"), and this sandbox's kernel lets a
    // process without CAP_SYS_PTRACE read a non-dumpable process's /proc/PID/environ.
    // SIGABRT: the process dies without writing a core file.
    let mut child = served;
    signal(pid, "ABRT");
    let status = wait_for(&mut child.child, Duration::from_secs(10));
    assert!(!status.success());
    let cores: Vec<_> = std::fs::read_dir(&cwd).unwrap().collect();
    assert!(cores.is_empty(), "a core file was written: {cores:?}");
}

fn dm_road_hands_the_secret_over_a_pipe(env: &Env) {
    let conf = env.kms.client_toml();
    for mode in [&[][..], &["--direct"][..]] {
        let img = volume(env, "dm.img", 8, &conf, mode);
        let dm_works = Path::new("/dev/mapper/control").exists()
            && Command::new("dmsetup")
                .arg("version")
                .output()
                .is_ok_and(|o| o.status.success());
        if dm_works {
            // The kernel's mapping: it reads the plaintext of the fresh volume (zeros)
            // where the image holds ciphertext, and goes when atrest stops. (This machine
            // has no device-mapper; CI machines that have one run this branch.)
            let served = Served::start(&conf, &img, &["--dm", "atrest-test"]);
            let dev = Path::new("/dev/mapper/atrest-test");
            assert!(served.at.ends_with("atrest-test"), "{}", served.at);
            let mut plain = vec![0u8; 4096];
            std::fs::File::open(dev)
                .and_then(|mut f| f.read_exact(&mut plain))
                .unwrap();
            assert!(
                plain.iter().all(|&b| b == 0),
                "the mapping does not decrypt"
            );
            let mut stored = vec![0u8; 4096];
            std::fs::File::open(&img)
                .and_then(|f| std::os::unix::fs::FileExt::read_exact_at(&f, &mut stored, 16 << 20))
                .unwrap();
            assert!(stored != plain, "the image holds plaintext");
            served.stop();
            assert!(!dev.exists(), "the mapping outlived atrest open");
        } else {
            // No device-mapper: the command says so and what to use instead.
            let out = atrest(&[
                "open",
                "--config",
                conf.to_str().unwrap(),
                "--dm",
                "atrest-test",
                img.to_str().unwrap(),
            ]);
            let t = text(&out);
            assert_eq!(out.status.code(), Some(1), "{t}");
            assert!(
                t.contains("device-mapper is not available") && t.contains("--nbd or --fuse"),
                "{t}"
            );
        }
        // The same arguments, with --test-passphrase, prove the secret from the pipe
        // opens the volume, as cryptsetup itself checks it.
        let secret = kmip_key(&conf, &img);
        let mode = if mode.is_empty() {
            volume::volume::KeyMode::Wrapped
        } else {
            volume::volume::KeyMode::Direct
        };
        let loc = service::device::Location {
            path: img.clone(),
            header: None,
        };
        service::exports::dm::test(&loc, mode, &secret).unwrap_or_else(|e| panic!("{mode}: {e}"));
        let mut wrong = secret.clone();
        wrong[0] ^= 1;
        assert!(
            service::exports::dm::test(&loc, mode, &wrong).is_err(),
            "{mode}: a wrong key passed"
        );
    }
}

fn refuses_what_it_cannot_serve_safely(env: &Env) {
    let conf = env.kms.client_toml();
    let c = conf.to_str().unwrap();
    let img = volume(env, "refuse.img", 8, &conf, &[]);
    let i = img.to_str().unwrap();
    // Not on a non-loopback address: there is no TLS on this road.
    let t = text(&atrest(&[
        "open",
        "--config",
        c,
        "--nbd",
        "0.0.0.0:10809",
        i,
    ]));
    assert!(t.contains("not a loopback address"), "{t}");
    // Not twice at once.
    let addr = format!("unix:{}", env.dir.join("refuse.sock").display());
    let served = Served::start(&conf, &img, &["--nbd", &addr]);
    let t = text(&atrest(&[
        "open",
        "--config",
        c,
        "--nbd",
        &format!("{addr}2"),
        i,
    ]));
    assert!(t.contains("in use by another atrest process"), "{t}");
    // No conversion or format meanwhile either; status still reads the header.
    let t = text(&atrest(&["rekey", "--config", c, i]));
    assert!(t.contains("in use"), "{t}");
    atrest_ok(&["status", i]);
    served.stop();
    // A plaintext device.
    let plain = env.dir.join("plain.img");
    random_file(&plain, 20 << 20);
    let t = text(&atrest(&[
        "open",
        "--config",
        c,
        "--nbd",
        &addr,
        plain.to_str().unwrap(),
    ]));
    assert!(t.contains("not an atrest volume"), "{t}");
    // An encryption stopped half-way: open names the command that finishes it.
    let half = env.dir.join("half.img");
    random_file(&half, 40 << 20);
    let mut enc = Command::new(atrest_bin())
        .args([
            "encrypt",
            "--json",
            "--step",
            "1M",
            "--config",
            c,
            half.to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut r = BufReader::new(enc.stdout.take().unwrap());
    let mut line = String::new();
    while r.read_line(&mut line).unwrap() > 0 && !line.contains("\"progress\"") {
        line.clear();
    }
    signal(enc.id(), "INT");
    assert_eq!(wait_for(&mut enc, Duration::from_secs(30)).code(), Some(3));
    let t = text(&atrest(&[
        "open",
        "--config",
        c,
        "--nbd",
        &addr,
        half.to_str().unwrap(),
    ]));
    assert!(t.contains("run `atrest encrypt`"), "{t}");
}

fn main() {
    let scratch = harness::scratch("atrest-open-");
    let dir = scratch.path().to_owned();
    let venv = harness::pykmip::venv();
    let pki = Pki::create(&dir.join("pki"));
    let mut pykmip = PyKmip::start("open", &venv, &dir, &pki, "ec", "ec-server");
    pykmip.wait_ready();
    let pykmip_conf = dir.join("pki/pykmip.toml");
    std::fs::write(
        &pykmip_conf,
        format!(
            "[kmip]\nservers = [\"127.0.0.1:{}\"]\nca_cert = \"ec-ca.crt\"\nclient_cert = \"ec-client.crt\"\nclient_key = \"ec-client.key\"\n",
            pykmip.port
        ),
    )
    .unwrap();
    let env = Env {
        kms: Kms::start(&dir.join("kms"), free_port()),
        dir: dir.clone(),
        pykmip_conf,
        _pykmip: pykmip,
    };
    let cases: &[harness::Case<Env>] = &[
        (
            "nbd_serves_qemu_nbdcopy_and_fio_and_keeps_data_across_reopen",
            nbd_serves_qemu_nbdcopy_and_fio_and_keeps_data_across_reopen,
        ),
        (
            "nbd_against_pykmip_keeps_data_across_reopen",
            nbd_against_pykmip_keeps_data_across_reopen,
        ),
        (
            "fuse_carries_ext4_across_reopen_and_decrypt",
            fuse_carries_ext4_across_reopen_and_decrypt,
        ),
        (
            "kill_9_during_writes_keeps_every_flushed_write",
            kill_9_during_writes_keeps_every_flushed_write,
        ),
        (
            "keys_are_locked_never_dumped_and_gone_from_memory_images",
            keys_are_locked_never_dumped_and_gone_from_memory_images,
        ),
        (
            "dm_road_hands_the_secret_over_a_pipe",
            dm_road_hands_the_secret_over_a_pipe,
        ),
        (
            "refuses_what_it_cannot_serve_safely",
            refuses_what_it_cannot_serve_safely,
        ),
    ];
    let (conclusion, env) = harness::run(cases, env);
    harness::finish(conclusion, env, scratch);
}
