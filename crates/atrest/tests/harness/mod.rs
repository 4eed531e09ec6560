//! The runner shared by the test binaries that set up real servers once (harness = false):
//! named cases over one environment, run in order by libtest-mimic (so the command line and
//! the summary are the standard harness's). Also their scratch space, which goes when the
//! run ends, whether it passed or not.

pub mod kms;
pub mod pykmip;

use std::path::Path;
use std::process::{Command, Output};

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

/// Runs `cmd` and asserts it succeeded; on failure the panic shows its whole output.
#[allow(dead_code)]
pub fn succeed(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs the atrest binary under test with `args` and asserts it succeeded.
#[allow(dead_code)]
pub fn atrest_ok(args: &[&str]) -> Output {
    succeed(Command::new(kms::atrest_bin()).args(args))
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
pub fn print_logs(dir: &Path) {
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
