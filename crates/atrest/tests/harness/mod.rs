//! The runner shared by the test binaries that set up real servers once (harness = false):
//! named cases over one environment, run in order by libtest-mimic (so the command line and
//! the summary are the standard harness's). Also their scratch space, which goes when the
//! run ends, whether it passed or not.

pub mod kms;
pub mod pykmip;

use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output};
use std::time::{Duration, Instant};

/// A named case over an environment `E`.
pub type Case<E> = (&'static str, fn(&E));

/// Runs `cases` against `env` through libtest-mimic (the standard test harness's
/// command line: a name filter, `--exact`, `--list`, `--nocapture`; and its summary line),
/// one at a time and in order, since they share the servers in `env`; `env` comes back
/// with the conclusion.
pub fn run<E: Send + 'static>(cases: &[Case<E>], env: E) -> (libtest_mimic::Conclusion, E) {
    let mut args = libtest_mimic::Arguments::from_args();
    args.test_threads = Some(1);
    let env = std::sync::Arc::new(std::sync::Mutex::new(env));
    let trials = cases
        .iter()
        .map(|&(name, case)| {
            let env = env.clone();
            libtest_mimic::Trial::test(name, move || {
                let env = env.lock().unwrap_or_else(|p| p.into_inner());
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| case(&env))).map_err(|p| {
                    p.downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "panicked".into())
                        .into()
                })
            })
        })
        .collect();
    let conclusion = libtest_mimic::run(&args, trials);
    // The trials, and with them every other handle on `env`, are gone.
    let env = std::sync::Arc::try_unwrap(env)
        .ok()
        .expect("the trials are done")
        .into_inner()
        .unwrap_or_else(|p| p.into_inner());
    (conclusion, env)
}

/// Ends a binary's run: stops the servers in `env` (dropping it, so their logs are
/// complete), prints their logs if a case failed, removes `scratch`, and exits with the
/// run's status (`exit` runs no destructors, hence the drops first).
#[allow(dead_code)]
pub fn finish<E>(conclusion: libtest_mimic::Conclusion, env: E, scratch: tempfile::TempDir) -> ! {
    drop(env);
    if conclusion.has_failed() {
        print_logs(scratch.path());
    }
    drop(scratch);
    conclusion.exit()
}

/// Asserts that `out`, the output of `what`, is a success; on failure the panic shows its
/// exit status and its whole output.
#[allow(dead_code)]
pub fn assert_success(what: impl std::fmt::Display, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `cmd` and asserts it succeeded; on failure the panic shows its whole output.
#[allow(dead_code)]
pub fn succeed(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert_success(format_args!("{cmd:?}"), &out);
    out
}

/// Runs the atrest binary under test with `args`, whatever its outcome.
#[allow(dead_code)]
pub fn atrest(args: &[&str]) -> Output {
    Command::new(kms::atrest_bin()).args(args).output().unwrap()
}

/// What a command printed, standard output then standard error.
#[allow(dead_code)]
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Runs the atrest binary under test with `args` and asserts it succeeded.
#[allow(dead_code)]
pub fn atrest_ok(args: &[&str]) -> Output {
    succeed(Command::new(kms::atrest_bin()).args(args))
}

/// Formats `img`, made anew with room for a header and `data_mib` MiB of data, with
/// `atrest format --config config [extra]`.
#[allow(dead_code)]
pub fn format_volume(config: &Path, img: &Path, data_mib: u64, extra: &[&str]) {
    std::fs::File::create(img)
        .unwrap()
        .set_len((16 + data_mib) << 20)
        .unwrap();
    let mut args = vec!["format", "--config", config.to_str().unwrap()];
    args.extend_from_slice(extra);
    args.push(img.to_str().unwrap());
    atrest_ok(&args);
}

/// Sends signal `sig` (a name: "TERM", "KILL", "HUP") to process `pid`.
#[allow(dead_code)]
pub fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status();
}

/// Waits for `child` to exit, failing the test after `limit`; its exit status.
#[allow(dead_code)]
pub fn wait_for(child: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(Instant::now() < deadline, "still running after {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Kills `child` unless it has exited (for `Drop`: also while unwinding from a panic).
#[allow(dead_code)]
pub fn kill_if_running(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// `len` random bytes.
#[allow(dead_code)]
pub fn random(len: usize) -> Vec<u8> {
    let mut d = vec![0u8; len];
    openssl::rand::rand_bytes(&mut d).unwrap();
    d
}

/// `qemu-io -c cmd` on the raw image at `uri` (an NBD export).
#[allow(dead_code)]
pub fn qemu_io(uri: &str, cmd: &str) -> Output {
    Command::new("qemu-io")
        .args(["-f", "raw", uri, "-c", cmd])
        .output()
        .unwrap()
}

/// Copies the raw image at `uri` (an NBD export) into the file `out` with
/// `qemu-img convert`, and asserts it succeeded.
#[allow(dead_code)]
pub fn qemu_img_read(uri: &str, out: &Path) {
    succeed(
        Command::new("qemu-img")
            .args(["convert", "-f", "raw", "-O", "raw", uri])
            .arg(out),
    );
}

/// The volume key of the LUKS2 image `img`, as stock cryptsetup recovers it with the
/// KMIP secret `secret` (an independent check of atrest's key wrapping).
#[allow(dead_code)]
pub fn cryptsetup_volume_key(img: &Path, secret: &[u8]) -> Vec<u8> {
    use std::io::Write;
    use std::process::Stdio;
    let mut c = Command::new("cryptsetup")
        .args([
            "luksDump",
            "--dump-volume-key",
            "--batch-mode",
            "--key-file=-",
        ])
        .arg(img)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cryptsetup (installed by scripts/setup-peers.sh)");
    c.stdin.take().unwrap().write_all(secret).unwrap();
    let out = c.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hex: String = text
        .split("MK dump:")
        .nth(1)
        .expect("an MK dump")
        .split_whitespace()
        .take_while(|w| w.len() == 2 && w.chars().all(|c| c.is_ascii_hexdigit()))
        .collect();
    hex::decode(hex).unwrap()
}

/// A loop device on a file, detached when dropped (also while unwinding from a panic).
#[allow(dead_code)]
pub struct Loop(pub String);

#[allow(dead_code)]
impl Loop {
    pub fn attach(file: &Path) -> Self {
        let out = succeed(Command::new("losetup").args(["-f", "--show"]).arg(file));
        Self(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

/// A folder with a random name under the system's temporary directory, removed when the
/// returned guard drops: at the end of the run, or while unwinding from a panic.
#[allow(dead_code)]
pub fn scratch(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("creating a scratch directory")
}

/// The last lines of every `*.log` under `dir` (the servers' logs), printed after a failed
/// run so that the failure can be read from the output once the scratch folder is gone.
#[allow(dead_code)]
fn print_logs(dir: &Path) {
    const LINES: usize = 40;
    let mut logs = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else if p.extension().is_some_and(|x| x == "log") {
                logs.push(p);
            }
        }
    }
    logs.sort();
    for log in logs {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.len().saturating_sub(LINES);
        let name = log.strip_prefix(dir).unwrap_or(&log);
        println!(
            "---- {} (last {} lines)",
            name.display(),
            lines.len() - from
        );
        for l in &lines[from..] {
            println!("{l}");
        }
    }
}
