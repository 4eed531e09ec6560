//! The control API cannot be crashed or stalled (issue 19, item 2): one `atrest serve` with
//! a volume exported over NBD, keys from the development KMS, and raw clients on its API
//! socket that lie about their body's length, send 100 KiB of headers, hold hundreds of
//! connections with a body that never comes, or trickle. Throughout, `atrest ctl status`
//! and `atrest ctl lock` answer within seconds and the export keeps serving.
//!
//! One daemon for every case, in order (the shared runner of `harness`, inside a single
//! libtest test). Every socket has a read timeout and every loop a bound: the test ends by
//! itself.

mod harness;

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use harness::kms::{atrest_bin, free_port, Kms};
use harness::{assert_success, atrest_ok, qemu_io};
use serde_json::Value;
use service::daemon::api;

/// The volume's name in the daemon's configuration.
const VOLUME: &str = "v";
/// What `atrest ctl` must answer within while the API is abused.
const PROMPT: Duration = Duration::from_secs(5);

struct Env {
    socket: PathBuf,
    daemon: std::cell::RefCell<Option<Child>>,
    _kms: Kms,
}

impl Env {
    fn pid(&self) -> u32 {
        self.daemon.borrow().as_ref().expect("the daemon").id()
    }

    /// Panics unless the daemon is still running.
    fn alive(&self) {
        let mut d = self.daemon.borrow_mut();
        let child = d.as_mut().expect("the daemon");
        if let Ok(Some(s)) = child.try_wait() {
            panic!("atrest serve died: {s}");
        }
    }

    fn call(&self, method: &str, path: &str) -> (u16, Value) {
        service::daemon::client::call(&self.socket, method, path, None)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    fn volume(&self) -> Value {
        let (code, s) = self.call("GET", "/v1/status");
        assert_eq!(code, 200, "{s}");
        s["volumes"][0].clone()
    }

    fn wait_state(&self, state: &str, limit: Duration) -> Value {
        let t = Instant::now();
        loop {
            let v = self.volume();
            if v["state"] == state {
                return v;
            }
            assert!(t.elapsed() < limit, "not {state} within {limit:?}: {v}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn export(&self) -> String {
        let v = self.volume();
        v["exports"][0]["at"]
            .as_str()
            .unwrap_or_else(|| panic!("no export: {v}"))
            .to_owned()
    }

    /// `atrest ctl --socket S ARGS`, which must succeed within `limit`; the time it took.
    fn ctl(&self, args: &[&str], limit: Duration) -> Duration {
        let started = Instant::now();
        let mut c = Command::new(atrest_bin())
            .arg("ctl")
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        while c.try_wait().unwrap().is_none() {
            if started.elapsed() > limit {
                let _ = c.kill();
                let out = c.wait_with_output().unwrap();
                panic!(
                    "atrest ctl {args:?} still running after {limit:?}: {}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let took = started.elapsed();
        let out = c.wait_with_output().unwrap();
        assert_success(format_args!("atrest ctl {args:?}"), &out);
        took
    }
}

/// A raw connection to the API, with a read timeout so that no case can hang on it.
fn raw(env: &Env) -> UnixStream {
    let s = UnixStream::connect(&env.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// Reads what the server sends until it closes (or the read timeout); a reset counts as
/// the end.
fn read_all(s: &mut UnixStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// The status code of a raw answer, if it has one.
fn status_code(answer: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(answer.get(..12)?).ok()?;
    text.strip_prefix("HTTP/1.1 ")?.parse().ok()
}

/// True when the server has closed `s` (EOF or reset), false while it is open and silent.
fn closed_by_server(mut s: &UnixStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let mut b = [0u8; 1];
    let r = match s.read(&mut b) {
        Ok(0) => true,
        Ok(_) => true, // an answer (408) means the server is done with it too
        Err(e) if e.kind() == ErrorKind::WouldBlock => false,
        Err(_) => true,
    };
    s.set_nonblocking(false).unwrap();
    r
}

/// A request head that promises a body it never sends.
const SILENT: &[u8] =
    b"POST /v1/volumes/v/lock HTTP/1.1\r\nHost: atrest\r\nContent-Length: 100\r\n\r\n";

// ---------------------------------------------------------------------------------------

/// (a) A body length of 99999999999 bytes is answered 413 without reading (the old server
/// tried to allocate it and aborted); a chunked body past the limit is cut with 413 too.
fn a_huge_content_length_is_refused_before_reading(env: &Env) {
    let started = Instant::now();
    let mut s = raw(env);
    s.write_all(
        b"POST /v1/volumes/x/lock HTTP/1.1\r\nHost: atrest\r\nContent-Type: application/json\r\nContent-Length: 99999999999\r\n\r\n",
    )
    .unwrap();
    let answer = read_all(&mut s);
    assert_eq!(
        status_code(&answer),
        Some(413),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert!(started.elapsed() < Duration::from_secs(2), "413 came late");
    // The same on the real volume: refused before the command could be sent.
    let mut s = raw(env);
    s.write_all(b"POST /v1/volumes/v/lock HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n{}")
        .unwrap();
    assert_eq!(status_code(&read_all(&mut s)), Some(413));
    // No length: chunks until the limit, then 413 and the connection closed.
    let mut s = raw(env);
    s.write_all(b"POST /v1/volumes/x/lock HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
        .unwrap();
    let chunk = [b"4000\r\n".as_slice(), &[b'{'; 0x4000], b"\r\n"].concat();
    for _ in 0..(api::MAX_BODY / 0x4000) + 4 {
        if s.write_all(&chunk).is_err() {
            break;
        }
    }
    assert_eq!(status_code(&read_all(&mut s)), Some(413));
    env.alive();
    assert_eq!(env.volume()["state"], "unlocked");
}

/// 100 KiB of headers, or a thousand small ones: 431 or a closed connection, never a
/// crash.
fn a_header_bomb_gets_431_or_a_closed_connection(env: &Env) {
    let long = format!(
        "GET /v1/status HTTP/1.1\r\nHost: atrest\r\nX-Bomb: {}\r\n\r\n",
        "a".repeat(100 << 10)
    );
    let many = format!(
        "GET /v1/status HTTP/1.1\r\nHost: atrest\r\n{}\r\n",
        (0..1000)
            .map(|i| format!("X-{i}: b\r\n"))
            .collect::<String>()
    );
    for bomb in [long, many] {
        let mut s = raw(env);
        // The server may close before it has read it all: the write then fails.
        let _ = s.write_all(bomb.as_bytes());
        let answer = read_all(&mut s);
        let code = status_code(&answer);
        println!(
            "  {} KiB of headers: {}",
            bomb.len() >> 10,
            code.map_or("connection closed".into(), |c| c.to_string())
        );
        assert!(
            code == Some(431) || answer.is_empty(),
            "{}",
            String::from_utf8_lossy(&answer)
        );
    }
    env.alive();
    assert_eq!(env.call("GET", "/v1/status").0, 200);
}

/// (b) 40, then 200 connections that send a head with a Content-Length and never the body:
/// `atrest ctl status` and `atrest ctl lock` (then `unlock`) still answer within seconds,
/// long before the body deadline could have freed anything. With 40 (under the table's
/// size) every silent connection is still open afterwards: they were not cut to make
/// room. With 200, the oldest went to make room and the newest are still held.
fn silent_bodies_do_not_stall_status_or_lock(env: &Env) {
    for n in [40, 200] {
        let opened = Instant::now();
        let held: Vec<UnixStream> = (0..n)
            .map(|_| {
                let mut s = raw(env);
                s.write_all(SILENT).unwrap();
                s
            })
            .collect();
        // Let the daemon take them all in.
        std::thread::sleep(Duration::from_millis(300));
        let status = env.ctl(&["status"], PROMPT);
        let lock = env.ctl(&["lock", VOLUME], PROMPT);
        assert_eq!(env.volume()["state"], "locked");
        let all = opened.elapsed();
        assert!(
            all < api::BODY_DEADLINE,
            "took {all:?}: the body deadline may have freed the connections"
        );
        let open = held.iter().filter(|s| !closed_by_server(s)).count();
        println!(
            "  {n} silent connections held: ctl status {:.0} ms, ctl lock {:.0} ms; {open} still open",
            status.as_secs_f64() * 1000.0,
            lock.as_secs_f64() * 1000.0,
        );
        if n < api::MAX_CONNECTIONS {
            assert_eq!(open, n, "silent connections were cut though there was room");
        } else {
            assert!(
                (api::MAX_CONNECTIONS / 2..api::MAX_CONNECTIONS).contains(&open),
                "{open} of {n} still open"
            );
            assert!(closed_by_server(&held[0]), "the oldest is still open");
            assert!(
                !closed_by_server(&held[n - 1]),
                "the newest was cut, not the oldest"
            );
        }
        // What the silent connections asked for never happened: their body never came.
        drop(held);
        env.ctl(&["unlock", VOLUME], Duration::from_secs(30));
        env.wait_state("unlocked", Duration::from_secs(30));
        env.alive();
    }
}

/// A head or a body trickled a byte at a time is cut at its deadline.
fn trickling_clients_are_cut_at_the_deadlines(env: &Env) {
    let socket = env.socket.clone();
    let head = std::thread::spawn(move || {
        let mut s = UnixStream::connect(&socket).unwrap();
        let started = Instant::now();
        let request = b"GET /v1/status HTTP/1.1\r\nHost: atrest\r\nX-Slow: ";
        for i in 0..200 {
            let byte = request.get(i).copied().unwrap_or(b'a');
            if s.write_all(&[byte]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
            if started.elapsed() > Duration::from_secs(15) {
                break;
            }
        }
        started.elapsed()
    });
    let socket = env.socket.clone();
    let body = std::thread::spawn(move || {
        let mut s = UnixStream::connect(&socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let started = Instant::now();
        s.write_all(b"POST /v1/volumes/x/lock HTTP/1.1\r\nContent-Length: 1000\r\n\r\n")
            .unwrap();
        for _ in 0..200 {
            if s.write_all(b" ").is_err() || started.elapsed() > Duration::from_secs(20) {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let answer = read_all(&mut s);
        (started.elapsed(), status_code(&answer))
    });
    let head = head.join().unwrap();
    let (body, code) = body.join().unwrap();
    println!(
        "  a trickled head cut after {:.1} s, a trickled body after {:.1} s ({code:?})",
        head.as_secs_f64(),
        body.as_secs_f64()
    );
    let margin = Duration::from_secs(2);
    assert!(
        head >= api::HEADER_DEADLINE - margin && head < api::HEADER_DEADLINE + margin,
        "{head:?}"
    );
    assert!(
        body >= api::BODY_DEADLINE - margin && body < api::BODY_DEADLINE + margin,
        "{body:?}"
    );
    assert_eq!(code, Some(408));
    env.alive();
}

/// (c) After all that, the same daemon (same process) still serves the volume: the
/// pattern written at the start reads back through the NBD export.
fn the_export_still_serves_afterwards(env: &Env) {
    env.alive();
    let (_, s) = env.call("GET", "/v1/status");
    assert_eq!(s["daemon"]["pid"], env.pid(), "another daemon answers");
    let export = env.export();
    let r = qemu_io(&export, "read -P 0x5a 0 1M");
    assert!(
        r.status.success()
            && !String::from_utf8_lossy(&r.stdout).contains("Pattern verification failed"),
        "{}{}",
        String::from_utf8_lossy(&r.stdout),
        String::from_utf8_lossy(&r.stderr)
    );
    let r = qemu_io(&export, "write -P 0x6b 1M 1M");
    assert!(r.status.success());
    let r = qemu_io(&export, "read -P 0x6b 1M 1M");
    assert!(
        r.status.success()
            && !String::from_utf8_lossy(&r.stdout).contains("Pattern verification failed")
    );
}

/// SIGTERM with silent connections and a long poll held: the daemon still stops at once
/// and cleanly (nothing waits for a client).
fn sigterm_does_not_wait_for_clients(env: &Env) {
    let held: Vec<UnixStream> = (0..20)
        .map(|_| {
            let mut s = raw(env);
            s.write_all(SILENT).unwrap();
            s
        })
        .collect();
    let mut poll = raw(env);
    poll.write_all(b"GET /v1/events?after=999999&wait=30 HTTP/1.1\r\nHost: atrest\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let mut child = env.daemon.borrow_mut().take().expect("the daemon");
    let started = Instant::now();
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("atrest serve still running 20 s after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    println!(
        "  stopped in {:.0} ms",
        started.elapsed().as_secs_f64() * 1000.0
    );
    assert!(status.success(), "{status}");
    assert!(!env.socket.exists(), "the API socket outlived the daemon");
    drop(held);
}

fn kmip_table(kms: &Kms) -> String {
    format!(
        "[kmip]\nservers = [\"127.0.0.1:{1}\"]\nca_cert = \"{0}/pki/ca.crt\"\nclient_cert = \"{0}/pki/client.p12\"\npassphrase_file = \"{0}/client.pass\"\nusername = \"appliance\"\npassword_file = \"{0}/kmip.pass\"\ntimeout_secs = 10\n",
        kms.dir.display(),
        kms.port
    )
}

/// The daemon of the cases: one 8 MiB volume exported over NBD on a Unix socket, the
/// pattern 0x5a written in its first MiB.
fn start(dir: &Path, kms: Kms) -> Env {
    let kmip = kmip_table(&kms);
    let kconf = dir.join("kmip.toml");
    std::fs::write(&kconf, &kmip).unwrap();
    let img = dir.join("v.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(24 << 20)
        .unwrap();
    atrest_ok(&[
        "format",
        "--config",
        kconf.to_str().unwrap(),
        img.to_str().unwrap(),
    ]);
    let conf = dir.join("atrest.toml");
    std::fs::write(
        &conf,
        format!(
            "{kmip}\n[serve]\napi_socket = \"run/api.sock\"\naudit_log = \"log/audit.jsonl\"\nkey_check_secs = 300\nretry_max_secs = 5\n\n[[volume]]\nname = \"{VOLUME}\"\npath = \"v.img\"\nnbd = \"unix:run/v.sock\"\n"
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.join("serve.log")).unwrap();
    let child = Command::new(atrest_bin())
        .args(["serve", "--config"])
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(log)
        .process_group(0)
        .spawn()
        .unwrap();
    let env = Env {
        socket: dir.join("run/api.sock"),
        daemon: std::cell::RefCell::new(Some(child)),
        _kms: kms,
    };
    let t = Instant::now();
    loop {
        env.alive();
        if let Ok((200, s)) = service::daemon::client::call(&env.socket, "GET", "/v1/status", None)
        {
            if s["volumes"][0]["state"] == "unlocked" {
                break;
            }
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "not unlocked in 60 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let r = qemu_io(&env.export(), "write -P 0x5a 0 1M");
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    env
}

fn main() {
    let scratch = harness::scratch("atrest-api-abuse-");
    let dir = scratch.path().to_owned();
    let kms = Kms::start(&dir.join("kms"), free_port());
    let env = start(&dir, kms);
    let cases: &[harness::Case<Env>] = &[
        (
            "a_huge_content_length_is_refused_before_reading",
            a_huge_content_length_is_refused_before_reading,
        ),
        (
            "a_header_bomb_gets_431_or_a_closed_connection",
            a_header_bomb_gets_431_or_a_closed_connection,
        ),
        (
            "silent_bodies_do_not_stall_status_or_lock",
            silent_bodies_do_not_stall_status_or_lock,
        ),
        (
            "trickling_clients_are_cut_at_the_deadlines",
            trickling_clients_are_cut_at_the_deadlines,
        ),
        (
            "the_export_still_serves_afterwards",
            the_export_still_serves_afterwards,
        ),
        (
            "sigterm_does_not_wait_for_clients",
            sigterm_does_not_wait_for_clients,
        ),
    ];
    let (conclusion, env) = harness::run(cases, env);
    if let Some(mut c) = env.daemon.borrow_mut().take() {
        let _ = c.kill();
        let _ = c.wait();
    }
    harness::finish(conclusion, env, scratch);
}
