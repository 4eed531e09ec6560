//! `atrest serve` (issue 13) as an appliance lives it, with real peers: the development
//! KMS and PyKMIP's server for the keys, `qemu-io`/`qemu-img` as NBD clients, FUSE, the
//! daemon's own control API and audit log, systemd's readiness protocol on a socket of
//! ours. One set of servers for every case (harness = false).

mod harness;

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use harness::kms::{atrest_bin, free_port, Kms};
use harness::pykmip::{Pki, PyKmip};
use harness::{
    atrest_ok, format_volume, kill_if_running, qemu_img_read, qemu_io, random, signal, succeed,
    wait_for, Loop,
};
use serde_json::Value;

struct Env {
    dir: PathBuf,
    kms: std::cell::RefCell<Kms>,
    kms_port: u16,
    pykmip_port: u16,
    pki: Pki,
    _pykmip: PyKmip,
    /// Every KMIP key the cases made (identifier → bytes), for the final scan.
    keys: std::cell::RefCell<HashMap<String, Vec<u8>>>,
}

/// The `[kmip]` table of the development KMS's client.toml with absolute paths, for
/// configurations written elsewhere; `servers` replaced when given.
fn kms_kmip(env: &Env, servers: Option<&[String]>, timeout: u64) -> String {
    let d = env.kms.borrow().dir.clone();
    let servers = servers.map_or_else(
        || format!("[\"127.0.0.1:{}\"]", env.kms_port),
        |s| {
            format!(
                "[{}]",
                s.iter()
                    .map(|x| format!("\"{x}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        },
    );
    format!(
        "[kmip]\nservers = {servers}\nca_cert = \"{0}/pki/ca.crt\"\nclient_cert = \"{0}/pki/client.p12\"\npassphrase_file = \"{0}/client.pass\"\nusername = \"appliance\"\npassword_file = \"{0}/kmip.pass\"\ntimeout_secs = {timeout}\n",
        d.display()
    )
}

fn pykmip_kmip(env: &Env) -> String {
    format!(
        "[kmip]\nservers = [\"127.0.0.1:{}\"]\nca_cert = \"{}\"\nclient_cert = \"{}\"\nclient_key = \"{}\"\n",
        env.pykmip_port,
        env.pki.path("ec-ca.crt"),
        env.pki.path("ec-client.crt"),
        env.pki.path("ec-client.key")
    )
}

/// A folder of its own for one case, with the daemon's configuration in it.
struct Case {
    dir: PathBuf,
    conf: PathBuf,
}

impl Case {
    fn new(env: &Env, name: &str) -> Self {
        let dir = env.dir.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        Self {
            conf: dir.join("atrest.toml"),
            dir,
        }
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("run/api.sock")
    }

    fn audit(&self) -> PathBuf {
        self.dir.join("log/audit.jsonl")
    }

    /// Writes the configuration: `kmip`, a [serve] table, and `volumes` (TOML tables).
    fn write(&self, kmip: &str, key_check_secs: u64, retry_max_secs: u64, volumes: &[String]) {
        let text = format!(
            "{kmip}\n[serve]\napi_socket = \"run/api.sock\"\naudit_log = \"log/audit.jsonl\"\nkey_check_secs = {key_check_secs}\nretry_max_secs = {retry_max_secs}\n\n{}",
            volumes.join("\n")
        );
        std::fs::write(&self.conf, text).unwrap();
    }

    /// Adds `lines` to the `[serve]` table that [`Self::write`] wrote.
    fn serve_extra(&self, lines: &str) {
        let conf = std::fs::read_to_string(&self.conf).unwrap();
        std::fs::write(
            &self.conf,
            conf.replace("[serve]\n", &format!("[serve]\n{lines}")),
        )
        .unwrap();
    }

    fn audit_lines(&self) -> Vec<Value> {
        std::fs::read_to_string(self.audit())
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("audit line {l:?}: {e}")))
            .collect()
    }
}

/// A running `atrest serve`, with systemd's notify socket played by the test.
struct Daemon {
    child: Child,
    notify: UnixDatagram,
    socket: PathBuf,
    started: Instant,
}

impl Daemon {
    fn start(case: &Case) -> Self {
        let notify_path = case.dir.join("notify.sock");
        let _ = std::fs::remove_file(&notify_path);
        let notify = UnixDatagram::bind(&notify_path).unwrap();
        notify
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(case.dir.join("serve.log"))
            .unwrap();
        let started = Instant::now();
        let child = Command::new(atrest_bin())
            .args(["serve", "--config"])
            .arg(&case.conf)
            .env("NOTIFY_SOCKET", &notify_path)
            .stdout(Stdio::null())
            .stderr(log)
            .process_group(0)
            .spawn()
            .unwrap();
        Self {
            child,
            notify,
            socket: case.socket(),
            started,
        }
    }

    /// Waits for READY=1; the time it took from the start.
    fn ready(&mut self, limit: Duration) -> Duration {
        let mut buf = [0u8; 4096];
        loop {
            if let Ok(n) = self.notify.recv(&mut buf) {
                if String::from_utf8_lossy(&buf[..n])
                    .lines()
                    .any(|l| l == "READY=1")
                {
                    return self.started.elapsed();
                }
            }
            if let Ok(Some(s)) = self.child.try_wait() {
                panic!("atrest serve exited with {s} before it was ready");
            }
            assert!(
                self.started.elapsed() < limit,
                "not READY within {limit:?}: {}",
                self.status()
            );
        }
    }

    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match service::daemon::client::call(&self.socket, method, path, body) {
                Ok(r) => return r,
                Err(e) if Instant::now() > deadline => panic!("{method} {path}: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    fn status(&self) -> Value {
        self.call("GET", "/v1/status", None).1
    }

    fn volume(&self, name: &str) -> Value {
        self.status()["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == name)
            .cloned()
            .unwrap_or(Value::Null)
    }

    /// Waits until `done` holds of the daemon's status, woken by the daemon's event feed
    /// (a long poll), not by a timer; the status then.
    fn until(&self, what: &str, limit: Duration, done: impl Fn(&Value) -> bool) -> Value {
        let t = Instant::now();
        let mut last = 0;
        loop {
            let s = self.status();
            if done(&s) {
                return s;
            }
            assert!(t.elapsed() < limit, "not {what} within {limit:?}: {s}");
            let (_, feed) = self.call("GET", &format!("/v1/events?after={last}&wait=1"), None);
            last = feed["last"].as_u64().unwrap_or(last);
        }
    }

    /// Where the event feed stands now.
    fn feed_position(&self) -> u64 {
        let (_, feed) = self.call("GET", "/v1/events?after=0&wait=0", None);
        feed["last"].as_u64().unwrap_or(0)
    }

    /// Waits for `n` events that `pick` selects, counted from now; the last of them.
    fn events(&self, n: usize, limit: Duration, pick: impl Fn(&Value) -> bool) -> Value {
        self.events_from(self.feed_position(), n, limit, pick)
    }

    /// Waits for `n` events that `pick` selects after feed position `from`.
    fn events_from(
        &self,
        from: u64,
        n: usize,
        limit: Duration,
        pick: impl Fn(&Value) -> bool,
    ) -> Value {
        let t = Instant::now();
        let mut last = from;
        let mut seen = Vec::new();
        while seen.len() < n {
            assert!(
                t.elapsed() < limit,
                "{} of {n} events within {limit:?}: {seen:?}",
                seen.len()
            );
            let (_, feed) = self.call("GET", &format!("/v1/events?after={last}&wait=1"), None);
            last = feed["last"].as_u64().unwrap_or(last);
            for e in feed["events"].as_array().into_iter().flatten() {
                if pick(e) {
                    seen.push(e.clone());
                }
            }
        }
        seen.pop().unwrap_or(Value::Null)
    }

    /// Waits until `name` is in `state`; its status then.
    fn wait_state(&self, name: &str, state: &str, limit: Duration) -> Value {
        let pick = |s: &Value| {
            s["volumes"]
                .as_array()
                .and_then(|v| v.iter().find(|v| v["name"] == name).cloned())
                .unwrap_or(Value::Null)
        };
        pick(&self.until(&format!("{name} {state}"), limit, |s| {
            pick(s)["state"] == state
        }))
    }

    fn export(&self, name: &str, kind: &str) -> String {
        let v = self.volume(name);
        v["exports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["kind"] == kind)
            .unwrap_or_else(|| panic!("{name} has no {kind} export: {v}"))["at"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// SIGTERM: exports closed, exit 0.
    fn stop(mut self) {
        self.signal("TERM");
        let s = wait_for(&mut self.child, Duration::from_secs(60));
        assert!(s.success(), "atrest serve exited with {s} after SIGTERM");
    }

    fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn signal(&self, sig: &str) {
        signal(self.child.id(), sig);
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        kill_if_running(&mut self.child);
    }
}

fn remember_key(env: &Env, kmip_conf: &Path, uid: &str) {
    let key = atrest_ok(&[
        "kmip",
        "get",
        "--raw",
        "--config",
        kmip_conf.to_str().unwrap(),
        uid,
    ])
    .stdout;
    env.keys.borrow_mut().insert(uid.to_owned(), key);
}

// ---------------------------------------------------------------------------------------

/// Three volumes as an appliance has them (configuration, audit history with 4096-byte
/// sectors, recordings with a detached header, encrypted in place from existing data),
/// written through their exports, the daemon stopped and started again from the
/// configuration and the disks alone.
fn reboot(env: &Env, case_name: &str, kmip: &str) {
    let case = Case::new(env, case_name);
    let kconf = case.dir.join("kmip.toml");
    std::fs::write(&kconf, kmip).unwrap();
    let d = &case.dir;
    format_volume(&kconf, &d.join("config.img"), 24, &[]);
    format_volume(&kconf, &d.join("audit.img"), 48, &["--sector-size", "4096"]);
    let recordings = random(40 << 20);
    std::fs::write(d.join("recordings.img"), &recordings).unwrap();
    atrest_ok(&[
        "encrypt",
        "--config",
        kconf.to_str().unwrap(),
        "--header",
        d.join("recordings.hdr").to_str().unwrap(),
        d.join("recordings.img").to_str().unwrap(),
    ]);
    let tcp = format!("127.0.0.1:{}", free_port());
    let volumes = [
        "[[volume]]\nname = \"config\"\npath = \"config.img\"\nnbd = \"unix:run/config.sock\"\n".to_string(),
        format!("[[volume]]\nname = \"audit\"\npath = \"audit.img\"\nnbd = \"{tcp}\"\n"),
        "[[volume]]\nname = \"recordings\"\npath = \"recordings.img\"\nheader = \"recordings.hdr\"\nfuse = \"fuse-recordings\"\n".to_owned(),
    ];
    case.write(kmip, 300, 5, &volumes);
    let mut daemon = Daemon::start(&case);
    let t = daemon.ready(Duration::from_secs(60));
    println!(
        "  {case_name}: three volumes unlocked and exported {:.0} ms after start",
        t.as_secs_f64() * 1000.0
    );
    for v in ["config", "audit", "recordings"] {
        let s = daemon.wait_state(v, "unlocked", Duration::from_secs(5));
        remember_key(env, &kconf, s["key_uid"].as_str().unwrap());
    }
    // Hygiene of the daemon itself: key pages locked, not dumpable.
    let pid = daemon.child.id();
    let vmlck = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(!vmlck.contains("VmLck:\t       0 kB"), "no locked key page");
    assert_eq!(daemon.status()["daemon"]["hardening"]["dumpable"], false);
    // Write through every export.
    let cfg = daemon.export("config", "nbd");
    let aud = daemon.export("audit", "nbd");
    assert!(aud.starts_with("nbd://127.0.0.1:"), "{aud}");
    assert!(qemu_io(&cfg, "write -P 0x42 1M 2M").status.success());
    assert!(qemu_io(&aud, "write -P 0x43 8M 4M").status.success());
    let file = PathBuf::from(daemon.export("recordings", "fuse"));
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&file)
        .unwrap();
    let new = random(3 << 20);
    f.write_all_at(&new, 5 << 20).unwrap();
    f.sync_all().unwrap();
    drop(f);
    daemon.stop();
    assert!(!file.exists(), "the FUSE export outlived the daemon");
    // "Reboot": nothing but the configuration and the disks.
    let mut daemon = Daemon::start(&case);
    daemon.ready(Duration::from_secs(60));
    assert!(
        qemu_io(&daemon.export("config", "nbd"), "read -P 0x42 1M 2M")
            .status
            .success()
    );
    assert!(
        qemu_io(&daemon.export("audit", "nbd"), "read -P 0x43 8M 4M")
            .status
            .success()
    );
    let back = std::fs::read(daemon.export("recordings", "fuse")).unwrap();
    let mut want = recordings.clone();
    want[5 << 20..8 << 20].copy_from_slice(&new);
    assert!(back == want, "the recordings volume reads back differently");
    daemon.stop();
    // The audit log: each volume's key fetched and the volume unlocked, twice; never a key.
    let lines = case.audit_lines();
    for v in ["config", "audit", "recordings"] {
        let gets = lines
            .iter()
            .filter(|l| l["volume"] == v && l["operation"] == "get" && l["result"] == "ok")
            .count();
        let unlocks = lines
            .iter()
            .filter(|l| l["volume"] == v && l["operation"] == "unlocked")
            .count();
        assert_eq!((gets, unlocks), (2, 2), "{v}: {lines:?}");
        assert!(lines
            .iter()
            .any(|l| l["volume"] == v && l["server"].is_string() && l["latency_ms"].is_number()));
    }
}

fn reboot_against_the_development_kms(env: &Env) {
    reboot(env, "reboot-kms", &kms_kmip(env, None, 10));
}

fn reboot_against_pykmip(env: &Env) {
    reboot(env, "reboot-pykmip", &pykmip_kmip(env));
}

fn one_volume(case: &Case, kmip: &str, name: &str, key_check: u64, retry_max: u64) -> String {
    let kconf = case.dir.join("kmip.toml");
    std::fs::write(&kconf, kmip).unwrap();
    format_volume(&kconf, &case.dir.join(format!("{name}.img")), 8, &[]);
    let v = format!(
        "[[volume]]\nname = \"{name}\"\npath = \"{name}.img\"\nnbd = \"unix:run/{name}.sock\"\n"
    );
    case.write(kmip, key_check, retry_max, std::slice::from_ref(&v));
    v
}

/// The key server is down when the daemon starts: each volume waits with its reason; the
/// server comes up; every volume is unlocked within the backoff cap.
fn an_outage_at_start_ends_within_the_backoff_cap(env: &Env) {
    let case = Case::new(env, "outage");
    let kmip = kms_kmip(env, None, 2);
    let kconf = case.dir.join("kmip.toml");
    std::fs::write(&kconf, &kmip).unwrap();
    let mut volumes = Vec::new();
    for n in ["a", "b", "c"] {
        format_volume(&kconf, &case.dir.join(format!("{n}.img")), 8, &[]);
        volumes.push(format!(
            "[[volume]]\nname = \"{n}\"\npath = \"{n}.img\"\nnbd = \"unix:run/{n}.sock\"\n"
        ));
    }
    let cap = 4;
    case.write(&kmip, 300, cap, &volumes);
    env.kms.borrow_mut().terminate();
    let mut daemon = Daemon::start(&case);
    // Waiting volumes have their reason: READY comes, and the status says why.
    daemon.ready(Duration::from_secs(30));
    for n in ["a", "b", "c"] {
        let v = daemon.wait_state(n, "waiting", Duration::from_secs(10));
        let why = v["reason"].as_str().unwrap();
        assert!(
            why.contains("refused") || why.contains("TCP connect") || why.contains("Connection"),
            "{why}"
        );
    }
    // Until each volume's third wait, whose nominal length is the cap (1, 2, 4 s).
    daemon.until("backing off at the cap", Duration::from_secs(30), |s| {
        s["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|v| v["attempts"].as_u64().unwrap_or(0) >= 3)
    });
    let up = Instant::now();
    *env.kms.borrow_mut() = Kms::start(&env.dir.join("kms"), env.kms_port);
    for n in ["a", "b", "c"] {
        daemon.wait_state(n, "unlocked", Duration::from_secs(cap + 3));
    }
    let took = up.elapsed();
    println!(
        "  outage: all three unlocked {:.1} s after the key server came back (cap {cap} s)",
        took.as_secs_f64()
    );
    assert!(took <= Duration::from_secs(cap + 2), "{took:?}");
    daemon.stop();
}

/// Two servers, the first down: unlocked through the second. A first server that accepts
/// and never answers: the timeout applies, then the next server is asked.
fn failover_past_a_dead_and_a_silent_server(env: &Env) {
    let dead = format!("127.0.0.1:{}", free_port());
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap().to_string();
    let good = format!("127.0.0.1:{}", env.kms_port);
    for (label, first) in [("dead", &dead), ("silent", &silent_addr)] {
        let case = Case::new(env, &format!("failover-{label}"));
        let kmip = kms_kmip(env, Some(&[first.clone(), good.clone()]), 2);
        one_volume(&case, &kms_kmip(env, None, 10), "v", 300, 5);
        // The daemon's configuration names both servers (the volume was made with one).
        let text = std::fs::read_to_string(&case.conf).unwrap();
        let rest = text.split_once("[serve]").unwrap().1;
        std::fs::write(&case.conf, format!("{kmip}\n[serve]{rest}")).unwrap();
        let mut daemon = Daemon::start(&case);
        daemon.ready(Duration::from_secs(30));
        let v = daemon.wait_state("v", "unlocked", Duration::from_secs(15));
        assert_eq!(v["server"], good.as_str(), "{label}: {v}");
        daemon.stop();
        let requests: Vec<Value> = case
            .audit_lines()
            .into_iter()
            .filter(|l| l["latency_ms"].is_number())
            .collect();
        assert!(
            requests.iter().any(|l| l["operation"] == "get"
                && l["result"] == "ok"
                && l["server"] == good.as_str()),
            "{label}: {requests:?}"
        );
        if label == "silent" {
            // The first request (the key's state) waited out the silent server.
            let ms = requests[0]["latency_ms"].as_f64().unwrap();
            assert!(
                (1900.0..6000.0).contains(&ms),
                "the 2 s timeout did not apply: {ms} ms"
            );
        }
    }
    drop(silent);
}

/// A FUSE export held open by a loop device cannot be unmounted. A lock must still cut
/// it off: the loop device gets I/O errors, not plaintext, the volume is reported locked
/// (not while it still serves), and it unlocks again later with its data intact.
fn a_lock_cuts_off_a_fuse_export_held_open(env: &Env) {
    let case = Case::new(env, "fuse-held");
    let kmip = kms_kmip(env, None, 5);
    let kconf = case.dir.join("kmip.toml");
    std::fs::write(&kconf, &kmip).unwrap();
    format_volume(&kconf, &case.dir.join("f.img"), 8, &[]);
    let mnt = case.dir.join("mnt");
    case.write(
        &kmip,
        300,
        5,
        &[format!(
            "[[volume]]\nname = \"f\"\npath = \"f.img\"\nfuse = \"{}\"\n",
            mnt.display()
        )],
    );
    let mut daemon = Daemon::start(&case);
    daemon.ready(Duration::from_secs(30));
    let file = PathBuf::from(daemon.export("f", "fuse"));
    let data = random(1 << 20);
    {
        let f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
        f.write_all_at(&data, 4096).unwrap();
        f.sync_all().unwrap();
    }
    let lo = Loop::attach(&file);
    let read_loop = || {
        Command::new("dd")
            .args([
                &format!("if={}", lo.0),
                "of=/dev/null",
                "bs=64k",
                "count=16",
                "iflag=direct",
            ])
            .output()
            .unwrap()
    };
    let before = read_loop();
    assert!(
        before.status.success(),
        "{}",
        String::from_utf8_lossy(&before.stderr)
    );
    let ctl = |action: &str| {
        Command::new(atrest_bin())
            .args([
                "ctl",
                "--socket",
                case.socket().to_str().unwrap(),
                action,
                "f",
            ])
            .output()
            .unwrap()
    };
    let out = ctl("lock");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = daemon.wait_state("f", "locked", Duration::from_secs(10));
    assert!(v["exports"].as_array().unwrap().is_empty(), "{v}");
    let after = read_loop();
    assert!(
        !after.status.success(),
        "the loop device still reads the plaintext after the lock"
    );
    assert!(case
        .audit_lines()
        .iter()
        .any(|l| l["volume"] == "f" && l["operation"] == "locked"));
    drop(lo);
    // Unlocked again: the aborted session let go of the device and of the key.
    let out = ctl("unlock");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let file = PathBuf::from(daemon.export("f", "fuse"));
    let mut back = vec![0u8; data.len()];
    std::fs::File::open(&file)
        .unwrap()
        .read_exact_at(&mut back, 4096)
        .unwrap();
    assert!(back == data, "the data changed across the forced lock");
    daemon.stop();
}

/// A revoked key locks its volume within one check interval: the export closes, the other
/// volumes keep serving, the audit log says so. Re-activation is refused by KMIP, so the
/// volume comes back through a rekey (which the daemon runs as a job).
fn revoking_a_key_locks_only_that_volume_until_a_rekey(env: &Env) {
    let case = Case::new(env, "revoke");
    let kmip = kms_kmip(env, None, 5);
    let kconf = case.dir.join("kmip.toml");
    std::fs::write(&kconf, &kmip).unwrap();
    let mut volumes = Vec::new();
    for n in ["keep", "gone"] {
        format_volume(&kconf, &case.dir.join(format!("{n}.img")), 8, &[]);
        volumes.push(format!(
            "[[volume]]\nname = \"{n}\"\npath = \"{n}.img\"\nnbd = \"unix:run/{n}.sock\"\n"
        ));
    }
    case.write(&kmip, 1, 5, &volumes);
    let mut daemon = Daemon::start(&case);
    daemon.ready(Duration::from_secs(30));
    let keep = daemon.export("keep", "nbd");
    let gone = daemon.export("gone", "nbd");
    assert!(qemu_io(&gone, "write -P 0x77 0 1M").status.success());
    assert!(qemu_io(&keep, "write -P 0x66 0 1M").status.success());
    let uid = daemon.volume("gone")["key_uid"]
        .as_str()
        .unwrap()
        .to_owned();
    remember_key(env, &kconf, &uid);
    let revoked = Instant::now();
    atrest_ok(&["kmip", "revoke", "--config", kconf.to_str().unwrap(), &uid]);
    let v = daemon.wait_state("gone", "locked", Duration::from_secs(4));
    println!(
        "  revoke: locked {:.1} s after the revocation (check interval 1 s)",
        revoked.elapsed().as_secs_f64()
    );
    assert!(v["reason"].as_str().unwrap().contains("Deactivated"), "{v}");
    assert!(v["exports"].as_array().unwrap().is_empty());
    assert!(
        !qemu_io(&gone, "read 0 4k").status.success(),
        "the locked volume still serves"
    );
    assert!(
        qemu_io(&keep, "read -P 0x66 0 1M").status.success(),
        "the other volume stopped serving"
    );
    assert!(case.audit_lines().iter().any(|l| l["volume"] == "gone"
        && l["operation"] == "locked"
        && l["key_uid"] == uid.as_str()));
    // Monitoring sees it: `ctl status --check` fails and names the volume and why.
    let check = Command::new(atrest_bin())
        .args([
            "ctl",
            "--socket",
            case.socket().to_str().unwrap(),
            "status",
            "--check",
        ])
        .output()
        .unwrap();
    assert_eq!(check.status.code(), Some(1));
    let said = String::from_utf8_lossy(&check.stderr);
    assert!(
        said.contains("not every volume is unlocked: gone is locked (") && !said.contains("keep"),
        "{said}"
    );
    // Unlock through the API: refused by the key's state.
    let (code, _) = daemon.call("POST", "/v1/volumes/gone/unlock", None);
    assert_eq!(code, 202);
    let v = daemon.wait_state("gone", "locked", Duration::from_secs(5));
    assert!(
        v["reason"]
            .as_str()
            .unwrap()
            .contains("only an Active key unlocks"),
        "{v}"
    );
    // A rekey (rewrap under a new key, the revoked one still fetchable) brings it back.
    let out = succeed(Command::new(atrest_bin()).args([
        "ctl",
        "--socket",
        case.socket().to_str().unwrap(),
        "rekey",
        "gone",
    ]));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("rekeyed"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // The revoked key is not revoked a second time (that would replace its reason).
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("already and is left as it is"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let v = daemon.wait_state("gone", "unlocked", Duration::from_secs(10));
    assert_ne!(v["key_uid"], uid.as_str());
    succeed(Command::new(atrest_bin()).args([
        "ctl",
        "--socket",
        case.socket().to_str().unwrap(),
        "status",
        "--check",
    ]));
    remember_key(env, &kconf, v["key_uid"].as_str().unwrap());
    assert!(qemu_io(&daemon.export("gone", "nbd"), "read -P 0x77 0 1M")
        .status
        .success());
    daemon.stop();
}

/// Issue 22: a rewrap (`ctl rekey` without `--deep`) no longer touches the exports. One NBD
/// client holds its connection and reads and writes through three rewraps; the volume never
/// leaves "unlocked", the data written during them reads back, and the served key is the
/// newest one, with which stock cryptsetup opens the header.
fn a_rewrap_keeps_the_exports_serving(env: &Env) {
    use std::io::Write;
    let case = Case::new(env, "online-rewrap");
    let kmip = kms_kmip(env, None, 10);
    let kconf = case.dir.join("kmip.toml");
    std::fs::write(&kconf, &kmip).unwrap();
    format_volume(&kconf, &case.dir.join("v.img"), 32, &[]);
    case.write(
        &kmip,
        300,
        5,
        &["[[volume]]\nname = \"v\"\npath = \"v.img\"\nnbd = \"unix:run/v.sock\"\n".to_owned()],
    );
    let mut daemon = Daemon::start(&case);
    daemon.ready(Duration::from_secs(30));
    let uri = daemon.export("v", "nbd");
    let first_key = daemon.volume("v")["key_uid"].as_str().unwrap().to_owned();
    remember_key(env, &kconf, &first_key);
    let from = daemon.feed_position();
    // One connection for the whole run: 6 000 commands, writes of a pattern per MiB and
    // reads of what was written, several seconds of I/O.
    let mut args = vec!["-f".to_owned(), "raw".to_owned(), uri.clone()];
    for round in 0..200 {
        for mib in 0..15u32 {
            let pattern = 0x10 + (mib as u8);
            args.extend([
                "-c".into(),
                format!("write -P {pattern} {}M 1M", mib * 2 + (round % 2)),
                "-c".into(),
                format!("read -P {pattern} {}M 1M", mib * 2 + (round % 2)),
            ]);
        }
    }
    // Its output to a file: a pipe nobody reads would stall it once full.
    let said = case.dir.join("qemu-io.out");
    let client = Command::new("qemu-io")
        .args(&args)
        .stdout(std::fs::File::create(&said).unwrap())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut keys = vec![first_key.clone()];
    for _ in 0..3 {
        let out = succeed(Command::new(atrest_bin()).args([
            "ctl",
            "--socket",
            case.socket().to_str().unwrap(),
            "rekey",
            "v",
            "--keep-old",
        ]));
        assert!(String::from_utf8_lossy(&out.stdout).contains("rekeyed in"));
        let uid = daemon.volume("v")["key_uid"].as_str().unwrap().to_owned();
        assert!(!keys.contains(&uid), "the served key did not change");
        remember_key(env, &kconf, &uid);
        keys.push(uid);
    }
    let mut client = client;
    assert!(
        client.try_wait().unwrap().is_none(),
        "the NBD client ended before the third rewrap: the test proves nothing"
    );
    let out = client.wait_with_output().unwrap();
    let text = std::fs::read_to_string(&said).unwrap();
    assert!(
        out.status.success(),
        "the NBD client failed during the rewraps: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !text.contains("Pattern verification failed") && !text.contains("failed:"),
        "{text}"
    );
    let reads = text.matches("read 1048576/1048576 bytes").count();
    assert_eq!(reads, 3000, "{}", &text[text.len().saturating_sub(2000)..]);
    // The volume never left "unlocked", and its export never closed.
    let (_, feed) = daemon.call("GET", &format!("/v1/events?after={from}&wait=0"), None);
    let events = feed["events"].as_array().cloned().unwrap_or_default();
    assert!(
        !events.iter().any(|e| e["event"] == "state"),
        "a rewrap changed the volume's state: {events:?}"
    );
    assert_eq!(
        events
            .iter()
            .filter(|e| e["event"] == "job"
                && e["operation"] == "rekey"
                && e["result"] == "finished")
            .count(),
        3
    );
    assert!(!case
        .audit_lines()
        .iter()
        .any(|l| l["volume"] == "v" && l["operation"] == "locked"));
    // Written during the rewraps, read back after them; and cryptsetup opens the header with
    // the newest KMIP key only.
    assert!(qemu_io(&uri, "read -P 0x1e 28M 2M").status.success());
    daemon.stop();
    let newest = env.keys.borrow()[keys.last().unwrap()].clone();
    let oldest = env.keys.borrow()[&first_key].clone();
    assert_eq!(
        harness::cryptsetup_volume_key(&case.dir.join("v.img"), &newest).len(),
        32
    );
    let mut c = Command::new("cryptsetup")
        .args(["open", "--test-passphrase", "--key-file=-"])
        .arg(case.dir.join("v.img"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(&oldest).unwrap();
    assert!(
        !c.wait().unwrap().success(),
        "the first key still opens the header"
    );
}

/// Issue 22's centrepiece: a deep rekey (every sector re-encrypted under a new volume key)
/// while the volume is served over NBD and FUSE. One NBD client writes and reads back
/// patterns, one FUSE reader checks data written before, both for the whole rekey; the
/// volume never leaves "unlocked". Then the daemon is SIGKILLed in the middle of a second
/// deep rekey under readers; started again, it finishes the rekey before exporting, and
/// every byte reads back.
fn a_deep_rekey_keeps_the_exports_serving_and_survives_a_kill(env: &Env) {
    let case = Case::new(env, "online-deep");
    let kmip = kms_kmip(env, None, 10);
    let kconf = case.dir.join("kmip.toml");
    std::fs::write(&kconf, &kmip).unwrap();
    format_volume(&kconf, &case.dir.join("v.img"), 64, &[]);
    let fuse_dir = case.dir.join("run/fuse-v");
    case.write(
        &kmip,
        300,
        5,
        &[format!(
            "[[volume]]\nname = \"v\"\npath = \"v.img\"\nnbd = \"unix:run/v.sock\"\nfuse = \"{}\"\n",
            fuse_dir.display()
        )],
    );
    // 64 MiB at 16 MiB/s: four seconds of rekey to work through.
    case.serve_extra("convert_max_mib_per_sec = 16\n");
    let mut daemon = Daemon::start(&case);
    daemon.ready(Duration::from_secs(30));
    let uri = daemon.export("v", "nbd");
    let file = PathBuf::from(daemon.export("v", "fuse"));
    assert!(qemu_io(&uri, "write -P 0x33 0 32M").status.success());
    let first = daemon.volume("v")["key_uid"].as_str().unwrap().to_owned();
    remember_key(env, &kconf, &first);
    let from = daemon.feed_position();
    let (code, r) = daemon.call(
        "POST",
        "/v1/volumes/v/rekey",
        Some(&serde_json::json!({"deep": true, "step": 1048576})),
    );
    assert_eq!(code, 202, "{r}");
    daemon.events_from(from, 1, Duration::from_secs(10), |e| {
        e["event"] == "job" && e["result"] == "started"
    });
    // The writer: one NBD connection, patterns written and read back in the second half.
    let said = case.dir.join("qemu-io.out");
    let mut args = vec!["-f".to_owned(), "raw".to_owned(), uri.clone()];
    for round in 0..40u32 {
        for mib in 32..62u32 {
            let p = 0x40 + ((mib + round) % 64) as u8;
            args.extend([
                "-c".into(),
                format!("write -P {p} {mib}M 1M"),
                "-c".into(),
                format!("read -P {p} {mib}M 1M"),
            ]);
        }
    }
    let writer = Command::new("qemu-io")
        .args(&args)
        .stdout(std::fs::File::create(&said).unwrap())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The reader: FUSE, the first half as written before the rekey, again and again.
    let reading = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let reader = {
        let (file, reading) = (file.clone(), reading.clone());
        std::thread::spawn(move || {
            use std::os::unix::fs::FileExt;
            let f = std::fs::File::open(&file).unwrap();
            let mut buf = vec![0u8; 1 << 20];
            let mut passes = 0;
            while reading.load(std::sync::atomic::Ordering::SeqCst) {
                for mib in 0..32u64 {
                    f.read_exact_at(&mut buf, mib << 20).unwrap();
                    assert!(
                        buf.iter().all(|&b| b == 0x33),
                        "FUSE read of MiB {mib} during the rekey"
                    );
                }
                passes += 1;
            }
            passes
        })
    };
    let done = daemon.events_from(from, 1, Duration::from_secs(120), |e| {
        e["event"] == "job" && e["operation"] == "rekey" && e["result"] != "started"
    });
    assert_eq!(done["result"], "finished", "{done}");
    assert!(
        done["message"].as_str().unwrap().contains("while serving"),
        "{done}"
    );
    let mut writer = writer;
    let overlapped = writer.try_wait().unwrap().is_none();
    reading.store(false, std::sync::atomic::Ordering::SeqCst);
    let passes = reader.join().unwrap();
    let out = writer.wait_with_output().unwrap();
    let text = std::fs::read_to_string(&said).unwrap();
    assert!(
        out.status.success() && !text.contains("Pattern verification failed"),
        "the NBD writer failed during the deep rekey: {}{}",
        &text[text.len().saturating_sub(2000)..],
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(text.matches("read 1048576/1048576 bytes").count(), 1200);
    assert!(passes >= 1, "the FUSE reader made no pass");
    println!(
        "  online deep rekey: {passes} FUSE passes over 32 MiB, the NBD writer {} the end",
        if overlapped {
            "outlived"
        } else {
            "ended before"
        }
    );
    let (_, feed) = daemon.call("GET", &format!("/v1/events?after={from}&wait=0"), None);
    let events = feed["events"].as_array().cloned().unwrap_or_default();
    assert!(
        !events.iter().any(|e| e["event"] == "state"),
        "the volume left \"unlocked\" during the rekey: {events:?}"
    );
    let second = daemon.volume("v")["key_uid"].as_str().unwrap().to_owned();
    assert_ne!(second, first);
    remember_key(env, &kconf, &second);
    // Everything reads back, through the export and through cryptsetup's view of the header.
    let img_check = |uri: &str| {
        assert!(qemu_io(uri, "read -P 0x33 0 32M").status.success());
        for mib in 32..62u32 {
            let p = 0x40 + ((mib + 39) % 64) as u8;
            let r = qemu_io(uri, &format!("read -P {p} {mib}M 1M"));
            assert!(
                r.status.success() && !String::from_utf8_lossy(&r.stdout).contains("failed"),
                "MiB {mib}"
            );
        }
    };
    img_check(&uri);
    let newest = env.keys.borrow()[&second].clone();
    assert_eq!(
        harness::cryptsetup_volume_key(&case.dir.join("v.img"), &newest).len(),
        32
    );

    // A second deep rekey, the daemon killed half-way under readers.
    let from = daemon.feed_position();
    let (code, _) = daemon.call(
        "POST",
        "/v1/volumes/v/rekey",
        Some(&serde_json::json!({"deep": true, "step": 1048576})),
    );
    assert_eq!(code, 202);
    daemon.events_from(from, 3, Duration::from_secs(30), |e| {
        e["event"] == "progress" && e["done"].as_u64().unwrap_or(0) > 0
    });
    let t = std::thread::spawn({
        let uri = uri.clone();
        move || qemu_io(&uri, "read -P 0x33 0 32M")
    });
    std::thread::sleep(Duration::from_millis(300));
    daemon.kill9();
    let _ = t.join();
    let mut daemon = Daemon::start(&case);
    daemon.ready(Duration::from_secs(60));
    let v = daemon.wait_state("v", "unlocked", Duration::from_secs(60));
    let third = v["key_uid"].as_str().unwrap().to_owned();
    assert_ne!(
        third, second,
        "the interrupted rekey was not finished at start"
    );
    remember_key(env, &kconf, &third);
    img_check(&daemon.export("v", "nbd"));
    daemon.stop();
}

/// Issue 22: with a detached header, a served plaintext volume (`serve_plaintext`) is
/// encrypted and decrypted under its exports: a FUSE reader checks the first half against
/// the original data and an NBD writer writes and reads back the second half for the whole
/// conversion; afterwards no 4 KiB block of the image is plaintext, everything reads back,
/// and the volume never left its served state until the end. Then a decryption and an
/// encryption are each killed half-way: the encryption is finished at the next start, the
/// decryption waits for the operator's word (as it always has) and then finishes.
fn an_encrypt_and_a_decrypt_keep_a_detached_volume_serving_and_survive_kills(env: &Env) {
    let case = Case::new(env, "online-detached");
    let kmip = kms_kmip(env, None, 10);
    let data = random(64 << 20);
    let img = case.dir.join("v.img");
    std::fs::write(&img, &data).unwrap();
    let fuse_dir = case.dir.join("run/fuse-v");
    case.write(
        &kmip,
        300,
        5,
        &[format!(
            "[[volume]]\nname = \"v\"\npath = \"v.img\"\nheader = \"v.hdr\"\nserve_plaintext = true\nnbd = \"unix:run/v.sock\"\nfuse = \"{}\"\n",
            fuse_dir.display()
        )],
    );
    // 64 MiB at 16 MiB/s: four seconds of conversion to work through.
    case.serve_extra("convert_max_mib_per_sec = 16\n");
    let mut daemon = Daemon::start(&case);
    daemon.ready(Duration::from_secs(30));
    let v = daemon.wait_state("v", "plaintext", Duration::from_secs(10));
    assert!(v["key_uid"].is_null(), "{v}");
    let uri = daemon.export("v", "nbd");
    let file = PathBuf::from(daemon.export("v", "fuse"));
    assert!(
        case.audit_lines()
            .iter()
            .any(|l| l["operation"] == "serving_plaintext"),
        "serving plaintext is not in the audit log"
    );

    // Runs `job` under a FUSE reader of the first half and an NBD writer of the second.
    let under_load = |daemon: &Daemon, job: &str, round: u32| {
        let from = daemon.feed_position();
        let (code, r) = daemon.call(
            "POST",
            &format!("/v1/volumes/v/{job}"),
            Some(&serde_json::json!({"step": 1048576})),
        );
        assert_eq!(code, 202, "{r}");
        daemon.events_from(from, 1, Duration::from_secs(10), |e| {
            e["event"] == "job" && e["result"] == "started"
        });
        let said = case.dir.join(format!("qemu-io-{job}.out"));
        let mut args = vec!["-f".to_owned(), "raw".to_owned(), uri.clone()];
        for pass in 0..20u32 {
            for mib in 32..64u32 {
                let p = 0x40 + ((mib + pass + round) % 64) as u8;
                args.extend([
                    "-c".into(),
                    format!("write -P {p} {mib}M 1M"),
                    "-c".into(),
                    format!("read -P {p} {mib}M 1M"),
                ]);
            }
        }
        let writer = Command::new("qemu-io")
            .args(&args)
            .stdout(std::fs::File::create(&said).unwrap())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let reading = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let reader = {
            let (file, reading) = (file.clone(), reading.clone());
            let first = data[..32 << 20].to_vec();
            let job = job.to_owned();
            std::thread::spawn(move || {
                let f = std::fs::File::open(&file).unwrap();
                let mut buf = vec![0u8; 1 << 20];
                let mut passes = 0;
                while reading.load(std::sync::atomic::Ordering::SeqCst) {
                    for mib in 0..32usize {
                        f.read_exact_at(&mut buf, (mib as u64) << 20).unwrap();
                        assert!(
                            buf[..] == first[mib << 20..(mib + 1) << 20],
                            "FUSE read of MiB {mib} during the {job}"
                        );
                    }
                    passes += 1;
                }
                passes
            })
        };
        let done = daemon.events_from(from, 1, Duration::from_secs(120), |e| {
            e["event"] == "job" && e["result"] != "started"
        });
        assert_eq!(done["result"], "finished", "{done}");
        assert!(
            done["message"].as_str().unwrap().contains("while serving"),
            "{done}"
        );
        reading.store(false, std::sync::atomic::Ordering::SeqCst);
        let passes = reader.join().unwrap();
        let out = writer.wait_with_output().unwrap();
        let text = std::fs::read_to_string(&said).unwrap();
        assert!(
            out.status.success() && !text.contains("Pattern verification failed"),
            "the NBD writer failed during the {job}: {}{}",
            &text[text.len().saturating_sub(2000)..],
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(text.matches("read 1048576/1048576 bytes").count(), 640);
        assert!(passes >= 1, "the FUSE reader made no pass during the {job}");
        let (_, feed) = daemon.call("GET", &format!("/v1/events?after={from}&wait=0"), None);
        let states: Vec<Value> = feed["events"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["event"] == "state")
            .map(|e| e["state"].clone())
            .collect();
        println!("  online {job}: {passes} FUSE passes over 32 MiB; states {states:?}");
        states
    };
    // What the second half holds after round `round`'s last pass.
    let expect = |round: u32| {
        let mut want = data.clone();
        for mib in 32..64usize {
            let p = 0x40 + ((mib as u32 + 19 + round) % 64) as u8;
            want[mib << 20..(mib + 1) << 20].fill(p);
        }
        want
    };
    let served = |daemon: &Daemon, want: &[u8], what: &str| {
        let out = case.dir.join("read.raw");
        let _ = std::fs::remove_file(&out);
        qemu_img_read(&daemon.export("v", "nbd"), &out);
        assert!(
            std::fs::read(&out).unwrap() == want,
            "{what}: the export serves other data"
        );
    };

    // Encrypt, online.
    let states = under_load(&daemon, "encrypt", 0);
    assert_eq!(
        states,
        vec![Value::from("unlocked")],
        "the encrypt left the served state"
    );
    let v = daemon.volume("v");
    assert_eq!(v["state"], "unlocked", "{v}");
    let uid = v["key_uid"].as_str().unwrap().to_owned();
    remember_key(env, &case.conf, &uid);
    harness::succeed(
        Command::new("cryptsetup")
            .args(["isLuks"])
            .arg(case.dir.join("v.hdr")),
    );
    let want = expect(0);
    let raw = std::fs::read(&img).unwrap();
    assert_eq!(raw.len(), data.len(), "the data device changed size");
    for (b, (r, w)) in raw.chunks(4096).zip(want.chunks(4096)).enumerate() {
        assert!(r != w, "4 KiB block {b} of the image is plaintext");
    }
    served(&daemon, &want, "after the online encrypt");

    // serve_plaintext turned off once encrypted (as the log asks): a reload tells the
    // volume in place, and the export does not blink; on again for the decrypt.
    let reloads = || {
        case.audit_lines()
            .into_iter()
            .filter(|l| l["operation"] == "reload")
            .collect::<Vec<_>>()
    };
    let set_plain = |daemon: &Daemon, on: bool| {
        let n = reloads().len();
        let conf = std::fs::read_to_string(&case.conf).unwrap();
        std::fs::write(
            &case.conf,
            conf.replace(
                &format!("serve_plaintext = {}", !on),
                &format!("serve_plaintext = {on}"),
            ),
        )
        .unwrap();
        daemon.signal("HUP");
        let t = Instant::now();
        while reloads().len() == n {
            assert!(t.elapsed() < Duration::from_secs(10), "no reload");
            std::thread::sleep(Duration::from_millis(50));
        }
        let said = reloads().pop().unwrap();
        assert!(
            said["result"]
                .as_str()
                .unwrap_or_default()
                .contains("1 volume(s) kept, 0 stopped, 0 started"),
            "{said}"
        );
    };
    let since = daemon.volume("v")["since"].clone();
    set_plain(&daemon, false);
    std::thread::sleep(Duration::from_millis(300));
    let v = daemon.volume("v");
    assert_eq!(
        (&v["state"], &v["since"]),
        (&Value::from("unlocked"), &since),
        "{v}"
    );
    assert!(
        v["cipher"]
            .as_str()
            .unwrap_or_default()
            .contains("XTS-AES-128"),
        "{v}"
    );
    assert_eq!(v["key_mode"], "wrapped", "{v}");
    set_plain(&daemon, true);

    // The header file lost while serve_plaintext is on: the daemon saw the volume
    // encrypted, so it does not serve the ciphertext as plaintext, and writes nothing.
    let lock = |what: &str| {
        let (code, r) = daemon.call("POST", &format!("/v1/volumes/v/{what}"), None);
        assert!(code == 200 || code == 202, "{what}: {r}");
    };
    lock("lock");
    daemon.wait_state("v", "locked", Duration::from_secs(10));
    let hdr = case.dir.join("v.hdr");
    let away = case.dir.join("v.hdr.away");
    std::fs::rename(&hdr, &away).unwrap();
    let before = std::fs::read(&img).unwrap();
    lock("unlock");
    let v = daemon.wait_state("v", "failed", Duration::from_secs(10));
    assert!(
        v["reason"]
            .as_str()
            .unwrap()
            .contains("was encrypted when atrest last looked"),
        "{v}"
    );
    assert!(v["exports"].as_array().is_none_or(|e| e.is_empty()), "{v}");
    assert!(std::fs::read(&img).unwrap() == before, "the image changed");
    std::fs::rename(&away, &hdr).unwrap();
    lock("unlock");
    daemon.wait_state("v", "unlocked", Duration::from_secs(10));
    served(&daemon, &want, "after the header came back");

    // Decrypt, online.
    let states = under_load(&daemon, "decrypt", 1);
    assert_eq!(
        states,
        vec![Value::from("plaintext")],
        "the decrypt left the served state"
    );
    let want = expect(1);
    let v = daemon.volume("v");
    assert!(v["key_uid"].is_null() && v["cipher"].is_null(), "{v}");
    assert!(
        std::fs::read(&img).unwrap() == want,
        "the image is not the plaintext after decrypt"
    );
    assert!(
        !case.dir.join("v.hdr").exists(),
        "the wiped header file is still there"
    );
    served(&daemon, &want, "after the online decrypt");

    // Encrypt again, the daemon killed half-way: finished at the next start.
    let kill_midway = |daemon: Daemon, job: &str| {
        let from = daemon.feed_position();
        let (code, _) = daemon.call(
            "POST",
            &format!("/v1/volumes/v/{job}"),
            Some(&serde_json::json!({"step": 1048576})),
        );
        assert_eq!(code, 202);
        daemon.events_from(from, 3, Duration::from_secs(30), |e| {
            e["event"] == "progress" && e["done"].as_u64().unwrap_or(0) > 0
        });
        let t = std::thread::spawn({
            let uri = uri.clone();
            let first = data[..32 << 20].to_vec();
            let scratch = case.dir.join(format!("kill-{job}.raw"));
            let job = job.to_owned();
            move || {
                // A reader through the kill: what it got before it failed is right.
                let out = Command::new("qemu-img")
                    .args(["convert", "-f", "raw", "-O", "raw", &uri])
                    .arg(&scratch)
                    .output()
                    .unwrap();
                if out.status.success() {
                    let got = std::fs::read(&scratch).unwrap();
                    assert!(got[..32 << 20] == first[..], "read during the {job}");
                }
            }
        });
        std::thread::sleep(Duration::from_millis(300));
        daemon.kill9();
        t.join().unwrap();
    };
    kill_midway(daemon, "encrypt");
    let mut daemon = Daemon::start(&case);
    daemon.ready(Duration::from_secs(60));
    let v = daemon.wait_state("v", "unlocked", Duration::from_secs(60));
    remember_key(env, &case.conf, v["key_uid"].as_str().unwrap());
    let (_, feed) = daemon.call("GET", "/v1/events?after=0&wait=0", None);
    assert!(
        feed["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["event"] == "job" && e["result"] == "resuming"),
        "the killed encrypt was not resumed at start (was it killed half-way?)"
    );
    served(&daemon, &want, "after the killed encrypt");

    // Decrypt, killed half-way: the operator finishes it.
    kill_midway(daemon, "decrypt");
    let mut daemon = Daemon::start(&case);
    daemon.ready(Duration::from_secs(60));
    let v = daemon.wait_state("v", "failed", Duration::from_secs(30));
    assert!(
        v["reason"]
            .as_str()
            .unwrap()
            .contains("interrupted decryption"),
        "{v}"
    );
    let from = daemon.feed_position();
    let (code, r) = daemon.call(
        "POST",
        "/v1/volumes/v/decrypt",
        Some(&serde_json::json!({})),
    );
    assert_eq!(code, 202, "{r}");
    let done = daemon.events_from(from, 1, Duration::from_secs(120), |e| {
        e["event"] == "job" && (e["result"] == "finished" || e["result"] == "failed")
    });
    assert_eq!(done["result"], "finished", "{done}");
    daemon.wait_state("v", "plaintext", Duration::from_secs(30));
    assert!(
        std::fs::read(&img).unwrap() == want,
        "the image after the finished decrypt"
    );
    served(&daemon, &want, "after the killed decrypt");
    // serve_plaintext off while the plaintext is served: the export closes, nothing else.
    set_plain(&daemon, false);
    let t = Instant::now();
    while !daemon.volume("v")["exports"]
        .as_array()
        .is_some_and(|e| e.is_empty())
    {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the plaintext is still exported"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(daemon.volume("v")["state"], "plaintext");
    assert!(
        std::fs::read(&img).unwrap() == want,
        "the image after serve_plaintext went off"
    );
    daemon.stop();
}

/// A direct-mode volume has no keyslot: a rewrap asked of the daemon is refused before any
/// key is made on the server (an operations run found the daemon creating and discarding a
/// key at every attempt, and with `rotate_days` at every key check).
fn a_direct_volume_is_refused_a_rewrap_before_any_key_is_made(env: &Env) {
    let case = Case::new(env, "direct-rewrap");
    let kmip = kms_kmip(env, None, 10);
    let kconf = case.dir.join("kmip.toml");
    std::fs::write(&kconf, &kmip).unwrap();
    format_volume(&kconf, &case.dir.join("v.img"), 8, &["--direct"]);
    case.write(
        &kmip,
        300,
        5,
        &["[[volume]]\nname = \"v\"\npath = \"v.img\"\nnbd = \"unix:run/v.sock\"\n".to_owned()],
    );
    let mut daemon = Daemon::start(&case);
    daemon.ready(Duration::from_secs(30));
    let v = daemon.volume("v");
    assert_eq!(v["key_mode"], "direct", "{v}");
    remember_key(env, &kconf, v["key_uid"].as_str().unwrap());
    let out = Command::new(atrest_bin())
        .args([
            "ctl",
            "--socket",
            case.socket().to_str().unwrap(),
            "rekey",
            "v",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("deep"), "{said}");
    assert!(
        !case
            .audit_lines()
            .iter()
            .any(|l| l["operation"] == "create" && l["volume"] == "v"),
        "a key was made for a rewrap that cannot happen"
    );
    assert_eq!(daemon.volume("v")["state"], "unlocked");
    daemon.stop();
}

/// Issue 22: `rotate_days` rotates a served volume's key once the key server's Activation
/// Date is that old (here 0.0001 days, 8.6 s), as a rewrap that leaves the export serving;
/// the audit log says why.
fn a_key_older_than_rotate_days_is_rotated_while_serving(env: &Env) {
    let case = Case::new(env, "rotate-days");
    let kmip = kms_kmip(env, None, 10);
    let kconf = case.dir.join("kmip.toml");
    std::fs::write(&kconf, &kmip).unwrap();
    format_volume(&kconf, &case.dir.join("v.img"), 8, &[]);
    case.write(
        &kmip,
        1,
        5,
        &["[[volume]]\nname = \"v\"\npath = \"v.img\"\nnbd = \"unix:run/v.sock\"\n".to_owned()],
    );
    case.serve_extra("rotate_days = 0.0001\n");
    let mut daemon = Daemon::start(&case);
    daemon.ready(Duration::from_secs(30));
    let uri = daemon.export("v", "nbd");
    assert!(qemu_io(&uri, "write -P 0x5a 0 1M").status.success());
    let first = daemon.volume("v")["key_uid"].as_str().unwrap().to_owned();
    remember_key(env, &kconf, &first);
    let from = daemon.feed_position();
    let done = daemon.events_from(from, 1, Duration::from_secs(40), |e| {
        e["event"] == "job" && e["operation"] == "rekey" && e["result"] == "finished"
    });
    assert!(
        done["message"].as_str().unwrap().contains("rekeyed in"),
        "{done}"
    );
    let v = daemon.volume("v");
    assert_eq!(v["state"], "unlocked");
    let second = v["key_uid"].as_str().unwrap().to_owned();
    assert_ne!(second, first);
    remember_key(env, &kconf, &second);
    assert!(qemu_io(&uri, "read -P 0x5a 0 1M").status.success());
    let audit = case.audit_lines();
    assert!(
        audit.iter().any(|l| l["operation"] == "scheduled_rotation"
            && l["key_uid"] == first.as_str()
            && l["result"]
                .as_str()
                .unwrap()
                .contains("rotate_days = 0.0001")),
        "{audit:?}"
    );
    daemon.stop();
}

/// Issue 22: `syslog = "tls://…"` sends every audit entry as an RFC 5424 message to a
/// collector over TLS (RFC 5425 framing), its certificate checked against `syslog_ca`.
fn audit_entries_reach_a_tls_syslog_collector(env: &Env) {
    use std::io::Read;
    let case = Case::new(env, "syslog");
    let kmip = kms_kmip(env, None, 10);
    let kconf = case.dir.join("kmip.toml");
    std::fs::write(&kconf, &kmip).unwrap();
    format_volume(&kconf, &case.dir.join("v.img"), 8, &[]);
    // The collector: TLS with a certificate for localhost from the test CA.
    let mut b =
        openssl::ssl::SslAcceptor::mozilla_intermediate_v5(openssl::ssl::SslMethod::tls()).unwrap();
    b.set_certificate_chain_file(env.pki.path("ec-server.crt"))
        .unwrap();
    b.set_private_key_file(
        env.pki.path("ec-server.key"),
        openssl::ssl::SslFiletype::PEM,
    )
    .unwrap();
    let acceptor = b.build();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let collector = std::thread::spawn(move || {
        let (tcp, _) = listener.accept().unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut tls = acceptor.accept(tcp).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        // Until the daemon has said the volume is unlocked.
        while !String::from_utf8_lossy(&got).contains(" unlocked [") {
            match tls.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        // The connection stays open (returned) until the test ends: a collector that hung
        // up would turn the status's syslog health to failing.
        (String::from_utf8(got).unwrap(), tls)
    });
    case.write(
        &kmip,
        300,
        5,
        &["[[volume]]\nname = \"v\"\npath = \"v.img\"\nnbd = \"unix:run/v.sock\"\n".to_owned()],
    );
    case.serve_extra(&format!(
        "syslog = \"tls://localhost:{port}\"\nsyslog_ca = \"{}\"\n",
        env.pki.path("ec-ca.crt")
    ));
    let mut daemon = Daemon::start(&case);
    daemon.ready(Duration::from_secs(30));
    let (got, _open) = collector.join().unwrap();
    // Octet-counted frames, each an RFC 5424 message of atrest's.
    let mut rest = got.as_str();
    let mut messages = Vec::new();
    while !rest.is_empty() {
        let (len, after) = rest.split_once(' ').unwrap();
        let len: usize = len
            .parse()
            .unwrap_or_else(|_| panic!("not a frame: {rest:?}"));
        if len > after.len() {
            // The last frame, cut by the end of what was read.
            break;
        }
        let (m, next) = after.split_at(len);
        messages.push(m.to_owned());
        rest = next;
    }
    for m in &messages {
        let f: Vec<&str> = m.splitn(7, ' ').collect();
        assert!(f[0] == "<109>1" || f[0] == "<108>1", "{m}");
        assert!(f[1].ends_with('Z') && f[1].contains('T'), "{m}");
        assert_eq!(f[3], "atrest", "{m}");
        assert_eq!(f[4], daemon.child.id().to_string(), "{m}");
        assert!(f[6].starts_with("[atrest@32473"), "{m}");
    }
    let unlocked = messages
        .iter()
        .find(|m| m.contains(" unlocked [") && m.contains("volume=\"v\""))
        .unwrap_or_else(|| panic!("{messages:?}"));
    let uid = daemon.volume("v")["key_uid"].as_str().unwrap().to_owned();
    assert!(
        unlocked.contains(&format!("key_uid=\"{uid}\"")),
        "{unlocked}"
    );
    let (_, status) = daemon.call("GET", "/v1/status", None);
    assert_eq!(status["daemon"]["syslog"]["ok"], true, "{status}");
    assert_eq!(
        status["daemon"]["syslog"]["target"],
        format!("tls://localhost:{port}")
    );
    daemon.stop();
}

/// An encryption started through the API; the daemon killed half-way; started again, it
/// finishes the conversion before exporting, and the volume serves the original data.
fn a_crash_during_an_api_encrypt_is_finished_at_start(env: &Env) {
    let case = Case::new(env, "crash");
    let kmip = kms_kmip(env, None, 10);
    let data = random(96 << 20);
    std::fs::write(case.dir.join("plain.img"), &data).unwrap();
    case.write(
        &kmip,
        300,
        5,
        &[
            "[[volume]]\nname = \"plain\"\npath = \"plain.img\"\nnbd = \"unix:run/plain.sock\"\n"
                .to_owned(),
        ],
    );
    let mut daemon = Daemon::start(&case);
    daemon.ready(Duration::from_secs(30));
    daemon.wait_state("plain", "plaintext", Duration::from_secs(5));
    let (code, r) = daemon.call(
        "POST",
        "/v1/volumes/plain/encrypt",
        Some(&serde_json::json!({"step": 1048576})),
    );
    assert_eq!(code, 202, "{r}");
    let t = Instant::now();
    loop {
        let v = daemon.volume("plain");
        if v["progress"]["done"].as_u64().unwrap_or(0) > 8 << 20 {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(60), "no progress: {v}");
        std::thread::sleep(Duration::from_millis(20));
    }
    daemon.kill9();
    let mut daemon = Daemon::start(&case);
    daemon.ready(Duration::from_secs(120));
    let v = daemon.wait_state("plain", "unlocked", Duration::from_secs(5));
    remember_key(env, &case.conf, v["key_uid"].as_str().unwrap());
    // The interrupted encryption was resumed at start, before anything was exported.
    let (_, feed) = daemon.call("GET", "/v1/events?after=0&wait=0", None);
    let events = feed["events"].as_array().unwrap();
    let resumed = events
        .iter()
        .position(|e| e["event"] == "job" && e["result"] == "resuming")
        .expect("no resumed job");
    let finished = events
        .iter()
        .position(|e| e["event"] == "job" && e["result"] == "finished")
        .expect("no finished job");
    let unlocked = events
        .iter()
        .position(|e| e["event"] == "state" && e["state"] == "unlocked")
        .unwrap();
    assert!(resumed < finished && finished < unlocked, "{events:?}");
    let out = case.dir.join("read.raw");
    qemu_img_read(&daemon.export("plain", "nbd"), &out);
    assert!(
        std::fs::read(&out).unwrap() == data,
        "the volume does not serve the original data"
    );
    assert!(case
        .audit_lines()
        .iter()
        .any(|l| l["volume"] == "plain" && l["operation"] == "encrypt" && l["result"] == "ok"));
    daemon.stop();
}

/// A lock asked for while a conversion runs is obeyed when it ends: the volume is never
/// exported in between; a second conversion asked for meanwhile is refused; a lock of a
/// volume locked already is answered at once.
fn a_lock_asked_during_a_conversion_wins(env: &Env) {
    let case = Case::new(env, "lock-during-job");
    let kmip = kms_kmip(env, None, 10);
    std::fs::write(case.dir.join("v.img"), random(32 << 20)).unwrap();
    case.write(
        &kmip,
        300,
        5,
        &["[[volume]]\nname = \"v\"\npath = \"v.img\"\nnbd = \"unix:run/v.sock\"\n".to_owned()],
    );
    let mut daemon = Daemon::start(&case);
    daemon.ready(Duration::from_secs(30));
    daemon.wait_state("v", "plaintext", Duration::from_secs(5));
    let (_, feed) = daemon.call("GET", "/v1/events?after=0&wait=0", None);
    let from = feed["last"].as_u64().unwrap();
    let (code, r) = daemon.call(
        "POST",
        "/v1/volumes/v/encrypt",
        // Small steps: the conversion outlasts the two commands sent while it runs.
        Some(&serde_json::json!({"step": 131072})),
    );
    assert_eq!(code, 202, "{r}");
    daemon.wait_state("v", "converting", Duration::from_secs(10));
    assert_eq!(daemon.call("POST", "/v1/volumes/v/lock", None).0, 202);
    assert_eq!(daemon.call("POST", "/v1/volumes/v/rekey", None).0, 202);
    let v = daemon.wait_state("v", "locked", Duration::from_secs(60));
    assert!(v["exports"].as_array().unwrap().is_empty(), "{v}");
    remember_key(env, &case.conf, v["key_uid"].as_str().unwrap());
    let (_, feed) = daemon.call("GET", &format!("/v1/events?after={from}&wait=0"), None);
    let events = feed["events"].as_array().unwrap();
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "job" && e["result"] == "finished"),
        "{events:?}"
    );
    assert!(
        !events
            .iter()
            .any(|e| e["event"] == "state" && e["state"] == "unlocked"),
        "exported between the conversion and the lock: {events:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "job" && e["operation"] == "rekey" && e["result"] == "refused"),
        "{events:?}"
    );
    let t = Instant::now();
    let out = succeed(Command::new(atrest_bin()).args([
        "ctl",
        "--socket",
        case.socket().to_str().unwrap(),
        "lock",
        "v",
    ]));
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("v: locked"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    daemon.stop();
}

/// With `require_active_key = false` a revoked key keeps its volume serving (the
/// operator's choice, for backups made under a superseded key); a destroyed one locks it.
fn without_require_active_key_only_a_destroyed_key_locks(env: &Env) {
    let case = Case::new(env, "not-active");
    let kmip = kms_kmip(env, None, 5);
    one_volume(&case, &kmip, "v", 1, 5);
    let text = std::fs::read_to_string(&case.conf).unwrap();
    std::fs::write(
        &case.conf,
        text.replace("[serve]\n", "[serve]\nrequire_active_key = false\n"),
    )
    .unwrap();
    let kconf = case.dir.join("kmip.toml");
    let mut daemon = Daemon::start(&case);
    daemon.ready(Duration::from_secs(30));
    let v = daemon.wait_state("v", "unlocked", Duration::from_secs(5));
    let uid = v["key_uid"].as_str().unwrap().to_owned();
    remember_key(env, &kconf, &uid);
    atrest_ok(&["kmip", "revoke", "--config", kconf.to_str().unwrap(), &uid]);
    // Two key checks that saw the revocation.
    daemon.events(2, Duration::from_secs(10), |e| {
        e["event"] == "key_check"
            && e["volume"] == "v"
            && e["result"].as_str().unwrap_or("").contains("Deactivated")
    });
    let v = daemon.volume("v");
    assert_eq!(v["state"], "unlocked", "{v}");
    assert!(
        v["last_key_check"]["result"]
            .as_str()
            .unwrap()
            .contains("Deactivated"),
        "{v}"
    );
    assert!(qemu_io(&daemon.export("v", "nbd"), "read 0 4k")
        .status
        .success());
    atrest_ok(&["kmip", "destroy", "--config", kconf.to_str().unwrap(), &uid]);
    let v = daemon.wait_state("v", "locked", Duration::from_secs(4));
    assert!(v["exports"].as_array().unwrap().is_empty(), "{v}");
    daemon.stop();
}

/// Every byte of a process's memory that can be read, as root reads it through
/// /proc/PID/mem: also the pages left out of core dumps, where the key schedules live.
fn memory_of(pid: u32) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let mem = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
    let mut all = Vec::new();
    for line in maps.lines() {
        let mut f = line.split_whitespace();
        let (range, perms) = (f.next().unwrap(), f.next().unwrap());
        if !perms.starts_with('r') || line.ends_with("[vvar]") || line.ends_with("[vsyscall]") {
            continue;
        }
        let (a, b) = range.split_once('-').unwrap();
        let (a, b) = (
            u64::from_str_radix(a, 16).unwrap(),
            u64::from_str_radix(b, 16).unwrap(),
        );
        let mut buf = vec![0u8; (b - a) as usize];
        if mem.read_exact_at(&mut buf, a).is_ok() {
            all.extend_from_slice(&buf);
        }
    }
    all
}

/// A lock forgets the keys: while the volume serves, its volume key is in the daemon's
/// memory (the XTS key schedules begin with it: the control that the scan can find it)
/// and the KMIP secret is not (dropped and wiped once the volume is unlocked); after a
/// lock, neither is anywhere in the daemon's readable memory, locked pages included.
fn a_lock_wipes_the_keys_from_the_daemons_memory(env: &Env) {
    let case = Case::new(env, "mem-lock");
    let kmip = kms_kmip(env, None, 5);
    one_volume(&case, &kmip, "v", 300, 5);
    let kconf = case.dir.join("kmip.toml");
    // The keys, before the daemon holds the image (cryptsetup would wait for its lock).
    let img = case.dir.join("v.img");
    let status: Value =
        serde_json::from_slice(&atrest_ok(&["status", "--json", img.to_str().unwrap()]).stdout)
            .unwrap();
    let uid = status["key_uid"].as_str().unwrap().to_owned();
    remember_key(env, &kconf, &uid);
    let secret = env.keys.borrow()[&uid].clone();
    let volume_key = harness::cryptsetup_volume_key(&img, &secret);
    let mut daemon = Daemon::start(&case);
    daemon.ready(Duration::from_secs(30));
    daemon.wait_state("v", "unlocked", Duration::from_secs(5));
    assert!(qemu_io(&daemon.export("v", "nbd"), "write -P 0x5c 0 1M")
        .status
        .success());
    let find = |m: &[u8], k: &[u8]| k.chunks(16).any(|c| memchr::memmem::find(m, c).is_some());
    let pid = daemon.child.id();
    let before = memory_of(pid);
    assert!(before.len() > 1 << 20, "{} bytes read", before.len());
    assert!(
        find(&before, &volume_key),
        "control: the serving daemon's volume key was not found by the scan"
    );
    assert!(
        !find(&before, &secret),
        "the KMIP secret stayed in memory after the unlock"
    );
    assert_eq!(daemon.call("POST", "/v1/volumes/v/lock", None).0, 202);
    daemon.wait_state("v", "locked", Duration::from_secs(10));
    let after = memory_of(pid);
    for (name, key) in [("volume key", &volume_key), ("KMIP secret", &secret)] {
        assert!(!find(&after, key), "the {name} is in memory after the lock");
        assert!(
            memchr::memmem::find(&after, hex::encode(key).as_bytes()).is_none(),
            "the {name} in hex"
        );
    }
    daemon.stop();
}

/// SIGHUP adds and removes volumes; `ctl` reports and tests; SIGTERM exits 0.
fn sighup_adds_and_removes_volumes(env: &Env) {
    let case = Case::new(env, "sighup");
    // A password file of the case's own, to rotate.
    let kms_dir = env.kms.borrow().dir.clone();
    let password = std::fs::read(kms_dir.join("kmip.pass")).unwrap();
    let pass_file = case.dir.join("kmip.pass");
    let write_password = |p: &[u8]| {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&pass_file)
            .unwrap();
        std::io::Write::write_all(&mut f, p).unwrap();
    };
    write_password(&password);
    let kmip = kms_kmip(env, None, 10).replace(
        &format!("{}/kmip.pass", kms_dir.display()),
        pass_file.to_str().unwrap(),
    );
    let first = one_volume(&case, &kmip, "first", 300, 5);
    let kconf = case.dir.join("kmip.toml");
    format_volume(&kconf, &case.dir.join("second.img"), 8, &[]);
    let second =
        "[[volume]]\nname = \"second\"\npath = \"second.img\"\nnbd = \"unix:run/second.sock\"\n"
            .to_owned();
    let mut daemon = Daemon::start(&case);
    daemon.ready(Duration::from_secs(30));
    case.write(&kmip, 300, 5, &[first.clone(), second.clone()]);
    daemon.signal("HUP");
    daemon.wait_state("second", "unlocked", Duration::from_secs(10));
    daemon.wait_state("first", "unlocked", Duration::from_secs(1));
    case.write(&kmip, 300, 5, std::slice::from_ref(&second));
    daemon.signal("HUP");
    let t = Instant::now();
    while daemon.status()["volumes"].as_array().unwrap().len() != 1 {
        assert!(t.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !case.dir.join("run/first.sock").exists(),
        "the removed volume's export is still there"
    );
    let s = case.socket();
    let status = succeed(Command::new(atrest_bin()).args([
        "ctl",
        "--socket",
        s.to_str().unwrap(),
        "status",
    ]));
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains("second  UNLOCKED") && !text.contains("first"),
        "{text}"
    );
    let test = succeed(Command::new(atrest_bin()).args([
        "ctl",
        "--socket",
        s.to_str().unwrap(),
        "--json",
        "test",
        "--probe-key",
    ]));
    let j: Value = serde_json::from_slice(&test.stdout).unwrap();
    assert_eq!(j["ok"], true, "{j}");
    // Without --json, words (an operations run found JSON printed either way).
    let words =
        succeed(Command::new(atrest_bin()).args(["ctl", "--socket", s.to_str().unwrap(), "test"]));
    let words = String::from_utf8_lossy(&words.stdout);
    assert!(
        words.starts_with("KMIP connection test passed\n")
            && words.contains("  connection    TLS")
            && words.contains("server certificate: CN=")
            && !words.contains('{'),
        "{words}"
    );
    // The throwaway key was made and destroyed on the server: on the record.
    let ops: Vec<String> = case
        .audit_lines()
        .iter()
        .filter_map(|l| l["operation"].as_str().map(str::to_owned))
        .collect();
    assert!(
        ["probe_create", "probe_get", "probe_destroy"]
            .iter()
            .all(|o| ops.iter().any(|x| x == o)),
        "{ops:?}"
    );
    // A rotated password (same file, new content) takes effect only once it reaches every
    // served key (issue 19, item 6): a wrong one is refused with the reason, the old
    // settings keep serving "second", and "third", added by the same reload, unlocks with
    // them. Valid new settings (another timeout) are taken without taking a volume down.
    let third = one_volume(&case, &kmip, "third", 300, 5);
    case.write(&kmip, 300, 5, &[second.clone(), third.clone()]);
    write_password(b"not the password\n");
    daemon.signal("HUP");
    let t = Instant::now();
    loop {
        let log = std::fs::read_to_string(case.dir.join("serve.log")).unwrap_or_default();
        if let Some(line) = log
            .lines()
            .find(|l| l.contains("the new KMIP settings are not used"))
        {
            assert!(
                line.contains("volume second") && line.contains("uthenticat"),
                "{line}"
            );
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "no refusal: {log}");
        std::thread::sleep(Duration::from_millis(50));
    }
    daemon.wait_state("third", "unlocked", Duration::from_secs(10));
    let from = daemon.feed_position();
    assert_eq!(daemon.call("POST", "/v1/volumes/second/check", None).0, 202);
    let checked = daemon.events_from(from, 1, Duration::from_secs(10), |e| {
        e["event"] == "key_check" && e["volume"] == "second"
    });
    assert_eq!(checked["result"], "Active", "{checked}");
    let v = daemon.volume("second");
    assert_eq!(v["state"], "unlocked", "{v}");
    assert!(
        v["server_error"].is_null(),
        "the old settings stopped working: {v}"
    );
    assert!(
        qemu_io(&daemon.export("second", "nbd"), "read 0 4k")
            .status
            .success(),
        "the export stopped serving over a refused credential change"
    );
    write_password(&password);
    let kmip11 = kmip.replace("timeout_secs = 10", "timeout_secs = 11");
    assert_ne!(kmip11, kmip);
    case.write(&kmip11, 300, 5, &[second, third]);
    daemon.signal("HUP");
    let t = Instant::now();
    while !std::fs::read_to_string(case.dir.join("serve.log"))
        .unwrap_or_default()
        .contains("new KMIP settings in use")
    {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "valid settings not taken"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for name in ["second", "third"] {
        assert_eq!(daemon.volume(name)["state"], "unlocked");
    }
    // logrotate: the log renamed away, SIGHUP, a fresh file gets the new lines.
    let rotated = case.dir.join("log/audit.jsonl.1");
    std::fs::rename(case.audit(), &rotated).unwrap();
    daemon.signal("HUP");
    let t = Instant::now();
    while !case
        .audit_lines()
        .iter()
        .any(|l| l["operation"] == "reload")
    {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "nothing written to the reopened audit log"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mode = std::fs::metadata(case.audit()).unwrap().permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );
    daemon.stop();
}

/// After every case: no key, raw or in hex, anywhere in the volumes, headers,
/// configuration folders, logs and audit logs the daemon and the commands wrote.
fn no_key_reached_a_disk(env: &Env) {
    let keys = env.keys.borrow();
    assert!(
        keys.len() >= 8,
        "too few keys collected ({}) to mean anything",
        keys.len()
    );
    let mut scanned = 0u64;
    let mut files = vec![env.dir.clone()];
    while let Some(p) = files.pop() {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        // The key servers' own storage holds keys by design (sealed in ours, clear in
        // PyKMIP's database); everything else must not.
        if name == "kms" || name == "pki" || name == "open" || name.ends_with(".sock") {
            continue;
        }
        let m = match std::fs::symlink_metadata(&p) {
            Ok(m) => m,
            Err(_) => continue,
        };
        if m.is_dir() {
            files.extend(std::fs::read_dir(&p).unwrap().flatten().map(|e| e.path()));
            continue;
        }
        if !m.is_file() {
            continue;
        }
        let bytes = std::fs::read(&p).unwrap();
        scanned += bytes.len() as u64;
        for (uid, key) in keys.iter() {
            for part in key.chunks(16) {
                assert!(
                    memchr::memmem::find(&bytes, part).is_none(),
                    "key {uid} in {}",
                    p.display()
                );
            }
            let hex = hex::encode(key);
            assert!(
                memchr::memmem::find(&bytes, hex.as_bytes()).is_none(),
                "key {uid} (hex) in {}",
                p.display()
            );
        }
    }
    println!(
        "  scanned {} MiB for {} keys: none found",
        scanned >> 20,
        keys.len()
    );
}

// ---------------------------------------------------------------------------------------
// Issue 19: what an attacker with the disk, a local account or a mistaken reload did.

/// Longest run of `byte` in `hay`.
fn longest_run(hay: &[u8], byte: u8) -> usize {
    let (mut best, mut cur) = (0, 0);
    for &b in hay {
        cur = if b == byte { cur + 1 } else { 0 };
        best = best.max(cur);
    }
    best
}

/// Item 1, the attack as written: with the daemon stopped, someone who can write the disk
/// but holds no key makes the header say "decrypt in progress" (checksums valid) and grows
/// the image to match. The operator's `atrest decrypt` refuses it (the record's tag does
/// not verify); the daemon finishes no decryption on its own, with the key Active or
/// revoked as Compromised. Nothing on disk changes.
fn r19_1_a_forged_decrypt_record_decrypts_nothing_at_start(env: &Env) {
    let case = Case::new(env, "forged");
    let kmip = kms_kmip(env, None, 5);
    one_volume(&case, &kmip, "vol", 300, 5);
    let img = case.dir.join("vol.img");
    let mut daemon = Daemon::start(&case);
    daemon.ready(Duration::from_secs(30));
    let uri = daemon.export("vol", "nbd");
    assert!(qemu_io(&uri, "write -P 0x5a 0 2M").status.success());
    let uid = daemon.volume("vol")["key_uid"].as_str().unwrap().to_owned();
    daemon.stop();
    // The forgery, as a disk writer with a copy of atrest's code would make it.
    let size = 8u64 << 20;
    let park = size.min(1 << 20);
    let dev = volume::backend::FileBackend::new(
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&img)
            .unwrap(),
    );
    let mut h = volume::luks2::header::read(&dev).unwrap().header;
    h.metadata.segments.get_mut("0").unwrap().size = size.to_string();
    h.metadata
        .config
        .requirements
        .get_or_insert_with(Default::default)
        .mandatory = vec!["atrest-conversion-v1".into()];
    h.metadata.tokens.get_mut("0").unwrap().extra.insert(
        "conversion".into(),
        serde_json::json!({"kind": "decrypt", "size": size.to_string(), "done": "0",
            "park": {"offset": ((16u64 << 20) + size).to_string(), "len": park.to_string()}}),
    );
    volume::luks2::header::write(&dev, &mut h).unwrap();
    drop(dev);
    let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
    f.set_len((16 << 20) + size + park + 4096).unwrap();
    drop(f);
    let forged = std::fs::read(&img).unwrap();
    let kconf = case.dir.join("kmip.toml");
    // The operator's own `atrest decrypt` refuses the forged record, nothing changed.
    let out = Command::new(atrest_bin())
        .args(["decrypt", "--config", kconf.to_str().unwrap()])
        .arg(&img)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("does not verify"), "{err}");
    assert!(
        std::fs::read(&img).unwrap() == forged,
        "a refused decrypt wrote"
    );
    // The daemon does not finish a decryption on its own, whatever the key's state.
    for (round, expect) in [
        (0, "does not finish a decryption on its own"),
        (1, "does not finish a decryption on its own"),
    ] {
        if round == 1 {
            atrest_ok(&[
                "kmip",
                "revoke",
                "--reason",
                "key-compromise",
                "--config",
                kconf.to_str().unwrap(),
                &uid,
            ]);
        }
        let mut daemon = Daemon::start(&case);
        daemon.ready(Duration::from_secs(30));
        let v = daemon.wait_state("vol", "failed", Duration::from_secs(30));
        assert!(v["reason"].as_str().unwrap().contains(expect), "{v}");
        daemon.stop();
        let after = std::fs::read(&img).unwrap();
        assert!(
            after == forged,
            "round {round}: the forged record changed the image"
        );
        assert!(
            longest_run(&after, 0x5a) < 64,
            "round {round}: plaintext reached the disk"
        );
    }
}

/// Item 4: runtime paths in a folder other users can write, a FIFO at the audit path, a
/// symlink for the FUSE mount point. Each is refused at once with the reason; nothing is
/// written to what they point at.
/// Found by the outside run after the fix above: the tag binds the key and the header, so
/// an authentic interrupted decryption of one copy of a volume (a backup, a clone) planted
/// on another copy verifies. The daemon must not finish it: the copy's own data stays
/// encrypted.
fn r19_1_another_copys_interrupted_decryption_is_not_finished(env: &Env) {
    let case = Case::new(env, "replay");
    let kmip = kms_kmip(env, None, 5);
    one_volume(&case, &kmip, "vol", 300, 5);
    let img = case.dir.join("vol.img");
    let mut daemon = Daemon::start(&case);
    daemon.ready(Duration::from_secs(30));
    let uid = daemon.volume("vol")["key_uid"].as_str().unwrap().to_owned();
    daemon.stop();
    // Copy A: a decryption stopped after its first step, run with the real key.
    let copy = case.dir.join("copy.img");
    std::fs::copy(&img, &copy).unwrap();
    let kconf = case.dir.join("kmip.toml");
    let secret = atrest_ok(&[
        "kmip",
        "get",
        "--raw",
        "--config",
        kconf.to_str().unwrap(),
        &uid,
    ])
    .stdout;
    let dev = volume::backend::FileBackend::new(
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&copy)
            .unwrap(),
    );
    let d = volume::convert::Devices::attached(&dev);
    volume::convert::begin_decrypt(d, &secret).unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let out = volume::convert::run(
        d,
        volume::convert::Keys {
            current: Some(&secret),
            new: None,
        },
        volume::convert::Options { chunk: 1 << 20 },
        &stop,
        &mut |p| {
            if p.done > 0 {
                stop.store(true, std::sync::atomic::Ordering::SeqCst)
            }
        },
    )
    .unwrap();
    assert!(matches!(out, volume::convert::Outcome::Stopped(_)));
    drop(dev);
    // Copy B (the served image) gets A's header area and tail, as a disk writer can do.
    let a = std::fs::read(&copy).unwrap();
    let mut b = std::fs::read(&img).unwrap();
    let header_area = 16usize << 20;
    b[..header_area].copy_from_slice(&a[..header_area]);
    b.extend_from_slice(&a[b.len()..]);
    std::fs::write(&img, &b).unwrap();
    let planted = std::fs::read(&img).unwrap();
    let mut daemon = Daemon::start(&case);
    daemon.ready(Duration::from_secs(30));
    let v = daemon.wait_state("vol", "failed", Duration::from_secs(30));
    assert!(
        v["reason"]
            .as_str()
            .unwrap()
            .contains("does not finish a decryption on its own"),
        "{v}"
    );
    daemon.stop();
    assert!(
        std::fs::read(&img).unwrap() == planted,
        "the daemon wrote to the planted copy"
    );
}

fn r19_4_runtime_paths_are_opened_safely(env: &Env) {
    use std::os::unix::fs::PermissionsExt;
    let case = Case::new(env, "paths");
    let kmip = kms_kmip(env, None, 5);
    let v = one_volume(&case, &kmip, "vol", 300, 5);
    let open_dir = case.dir.join("world");
    std::fs::create_dir_all(&open_dir).unwrap();
    std::fs::set_permissions(&open_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let planted = open_dir.join("audit.jsonl");
    std::fs::write(&planted, b"").unwrap();
    std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o666)).unwrap();
    let run = |conf_text: String, expect: &str| {
        std::fs::write(&case.conf, conf_text).unwrap();
        let t = Instant::now();
        let out = Command::new(atrest_bin())
            .args(["serve", "--config"])
            .arg(&case.conf)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "started anyway: {err}");
        assert!(err.contains(expect), "expected {expect:?}: {err}");
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "took {:?}",
            t.elapsed()
        );
    };
    let base = |audit: &str, api: &str| {
        format!("{kmip}\n[serve]\napi_socket = \"{api}\"\naudit_log = \"{audit}\"\n\n{v}")
    };
    run(
        base("world/audit.jsonl", "run/api.sock"),
        "writable by everyone",
    );
    assert_eq!(
        std::fs::read(&planted).unwrap(),
        b"",
        "the planted file got lines"
    );
    run(
        base("log/audit.jsonl", "world/api.sock"),
        "writable by everyone",
    );
    let fifo = case.dir.join("fifo");
    std::fs::create_dir_all(&fifo).unwrap();
    assert!(Command::new("mkfifo")
        .arg(fifo.join("audit.jsonl"))
        .status()
        .unwrap()
        .success());
    run(base("fifo/audit.jsonl", "run/api.sock"), "FIFO");
    // A FUSE mount point that is a symlink to a directory of root's: the volume fails with
    // the reason, nothing is mounted there.
    let target = case.dir.join("roots-dir");
    std::fs::create_dir_all(&target).unwrap();
    std::os::unix::fs::symlink(&target, case.dir.join("mnt")).unwrap();
    let fused = format!("{v}fuse = \"mnt\"\n");
    case.write(&kmip, 300, 5, &[fused]);
    let mut daemon = Daemon::start(&case);
    daemon.ready(Duration::from_secs(30));
    let st = daemon.volume("vol");
    assert_eq!(st["state"], "failed", "{st}");
    assert!(
        st["reason"].as_str().unwrap().contains("symbolic link"),
        "{st}"
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(target.to_str().unwrap()),
        "mounted on the symlink's target"
    );
    daemon.stop();
}

/// Item 6: a SIGHUP onto a client identity that cannot see the served keys (here another
/// key server's PKI and identity) keeps the old settings: the volume keeps serving through
/// key checks, and the refusal names the volume.
fn r19_6_a_reload_that_cannot_see_the_keys_keeps_the_old_settings(env: &Env) {
    let case = Case::new(env, "reload-identity");
    let kmip = kms_kmip(env, None, 5);
    let v = one_volume(&case, &kmip, "vol", 1, 5);
    let mut daemon = Daemon::start(&case);
    daemon.ready(Duration::from_secs(30));
    let uri = daemon.export("vol", "nbd");
    assert!(qemu_io(&uri, "write -P 0x42 0 1M").status.success());
    case.write(&pykmip_kmip(env), 1, 5, std::slice::from_ref(&v));
    daemon.signal("HUP");
    let t = Instant::now();
    loop {
        let log = std::fs::read_to_string(case.dir.join("serve.log")).unwrap_or_default();
        if log.contains("the new KMIP settings are not used") {
            assert!(log.contains("volume vol"), "{log}");
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "no refusal: {log}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Three key checks later (1 s apart) it still serves, with the old settings.
    daemon.events(3, Duration::from_secs(10), |e| {
        e["event"] == "key_check" && e["volume"] == "vol" && e["result"] == "Active"
    });
    let st = daemon.volume("vol");
    assert_eq!(st["state"], "unlocked", "{st}");
    assert!(qemu_io(&uri, "read -P 0x42 0 1M").status.success());
    assert!(case
        .audit_lines()
        .iter()
        .any(|l| l["operation"] == "reload_refused"));
    daemon.stop();
}

/// Item 9: the image deleted while served is reported within seconds (status, audit),
/// with the way to get the still-open image back.
fn r19_9_an_image_deleted_while_served_is_reported(env: &Env) {
    let case = Case::new(env, "deleted");
    let kmip = kms_kmip(env, None, 5);
    one_volume(&case, &kmip, "vol", 300, 5);
    let mut daemon = Daemon::start(&case);
    daemon.ready(Duration::from_secs(30));
    std::fs::remove_file(case.dir.join("vol.img")).unwrap();
    let t = Instant::now();
    let st = loop {
        let st = daemon.volume("vol");
        if st["device_error"].is_string() {
            break st;
        }
        assert!(t.elapsed() < Duration::from_secs(6), "not reported: {st}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let why = st["device_error"].as_str().unwrap();
    assert!(why.contains("deleted") && why.contains("/proc/"), "{why}");
    assert!(case
        .audit_lines()
        .iter()
        .any(|l| l["operation"] == "device_deleted"));
    // `ctl status` shows it, and a reader that stops early (`| head`, here `| true`) ends it quietly
    // (found by the outside run: a panic with a backtrace on the broken pipe).
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            // `true` has exited long before ctl writes (ctl first asks the daemon).
            "'{}' ctl --socket '{}' status | true; echo \"${{PIPESTATUS[0]}}\" >&2",
            atrest_bin(),
            case.socket().display()
        ))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(err.trim(), "0", "ctl status under head: {err}");
    let full = succeed(Command::new(atrest_bin()).args([
        "ctl",
        "--socket",
        case.socket().to_str().unwrap(),
        "status",
    ]));
    assert!(String::from_utf8_lossy(&full.stdout).contains("DEVICE "));
    daemon.stop();
}

fn main() {
    let scratch = harness::scratch("atrest-serve-");
    let dir = scratch.path().to_owned();
    let venv = harness::pykmip::venv();
    let pki = Pki::create(&dir.join("pki"));
    let mut pykmip = PyKmip::start("serve", &venv, &dir.join("pki"), &pki, "ec", "ec-server");
    pykmip.wait_ready();
    let kms_port = free_port();
    let env = Env {
        kms: std::cell::RefCell::new(Kms::start(&dir.join("kms"), kms_port)),
        kms_port,
        pykmip_port: pykmip.port,
        dir: dir.clone(),
        pki,
        _pykmip: pykmip,
        keys: Default::default(),
    };
    let cases: &[harness::Case<Env>] = &[
        (
            "reboot_against_the_development_kms",
            reboot_against_the_development_kms,
        ),
        ("reboot_against_pykmip", reboot_against_pykmip),
        (
            "an_outage_at_start_ends_within_the_backoff_cap",
            an_outage_at_start_ends_within_the_backoff_cap,
        ),
        (
            "failover_past_a_dead_and_a_silent_server",
            failover_past_a_dead_and_a_silent_server,
        ),
        (
            "a_lock_cuts_off_a_fuse_export_held_open",
            a_lock_cuts_off_a_fuse_export_held_open,
        ),
        (
            "revoking_a_key_locks_only_that_volume_until_a_rekey",
            revoking_a_key_locks_only_that_volume_until_a_rekey,
        ),
        (
            "a_rewrap_keeps_the_exports_serving",
            a_rewrap_keeps_the_exports_serving,
        ),
        (
            "a_deep_rekey_keeps_the_exports_serving_and_survives_a_kill",
            a_deep_rekey_keeps_the_exports_serving_and_survives_a_kill,
        ),
        (
            "an_encrypt_and_a_decrypt_keep_a_detached_volume_serving_and_survive_kills",
            an_encrypt_and_a_decrypt_keep_a_detached_volume_serving_and_survive_kills,
        ),
        (
            "a_direct_volume_is_refused_a_rewrap_before_any_key_is_made",
            a_direct_volume_is_refused_a_rewrap_before_any_key_is_made,
        ),
        (
            "a_key_older_than_rotate_days_is_rotated_while_serving",
            a_key_older_than_rotate_days_is_rotated_while_serving,
        ),
        (
            "audit_entries_reach_a_tls_syslog_collector",
            audit_entries_reach_a_tls_syslog_collector,
        ),
        (
            "a_crash_during_an_api_encrypt_is_finished_at_start",
            a_crash_during_an_api_encrypt_is_finished_at_start,
        ),
        (
            "a_lock_asked_during_a_conversion_wins",
            a_lock_asked_during_a_conversion_wins,
        ),
        (
            "without_require_active_key_only_a_destroyed_key_locks",
            without_require_active_key_only_a_destroyed_key_locks,
        ),
        (
            "a_lock_wipes_the_keys_from_the_daemons_memory",
            a_lock_wipes_the_keys_from_the_daemons_memory,
        ),
        (
            "sighup_adds_and_removes_volumes",
            sighup_adds_and_removes_volumes,
        ),
        (
            "r19_1_a_forged_decrypt_record_decrypts_nothing_at_start",
            r19_1_a_forged_decrypt_record_decrypts_nothing_at_start,
        ),
        (
            "r19_1_another_copys_interrupted_decryption_is_not_finished",
            r19_1_another_copys_interrupted_decryption_is_not_finished,
        ),
        (
            "r19_4_runtime_paths_are_opened_safely",
            r19_4_runtime_paths_are_opened_safely,
        ),
        (
            "r19_6_a_reload_that_cannot_see_the_keys_keeps_the_old_settings",
            r19_6_a_reload_that_cannot_see_the_keys_keeps_the_old_settings,
        ),
        (
            "r19_9_an_image_deleted_while_served_is_reported",
            r19_9_an_image_deleted_while_served_is_reported,
        ),
        ("no_key_reached_a_disk", no_key_reached_a_disk),
    ];
    let (conclusion, env) = harness::run(cases, env);
    harness::finish(conclusion, env, scratch);
}
