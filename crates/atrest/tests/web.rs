//! The admin web page (issue 21) in a real browser: Debian's Chromium, driven by Playwright
//! from npm (tests/web/admin.mjs), against `atrest serve` with `[web]` and the development
//! KMS. The script does what an operator does and checks what the page shows; this side
//! prepares the servers and files, restarts the daemon between the script's two phases, and
//! checks what the page must have done or not done on disk: the image encrypted (its
//! plaintext gone), the settings saved as files 0600 and no secret in the TOML, every
//! response free of every secret, the audit log naming each login, failure and change with
//! its source. Screenshots of each step are kept in target/tmp/web-artifacts/.

#[allow(dead_code)]
mod harness;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use harness::kms::{atrest_bin, free_port, Kms};
use harness::{kill_if_running, signal, succeed, wait_for};

/// A line the plaintext image carries many times, searched for in the encrypted one.
const MARKER: &[u8] = b"ATREST-WEB-TEST-PLAINTEXT-RECORDING-";
const ADMIN_PASSWORD: &str = "correct horse battery staple 21";
/// What `atrest admin set-password` changes it to half-way.
const NEW_ADMIN_PASSWORD: &str = "another admin password 22";

struct Serve {
    child: Child,
    log: PathBuf,
}

impl Serve {
    fn start(config: &Path, log: &Path) -> Self {
        let err = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = Command::new(atrest_bin())
            .args(["serve", "--config", config.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .unwrap();
        Self {
            child,
            log: log.to_owned(),
        }
    }

    /// Waits until the log has `n` lines containing `text`.
    fn until_logged(&mut self, text: &str, n: usize, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            if log.matches(text).count() >= n {
                return;
            }
            if let Ok(Some(s)) = self.child.try_wait() {
                panic!("atrest serve exited ({s}) before logging {text:?}:\n{log}");
            }
            assert!(
                Instant::now() < deadline,
                "atrest serve did not log {text:?} within {limit:?}:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn stop(&mut self) {
        signal(self.child.id(), "TERM");
        assert!(wait_for(&mut self.child, Duration::from_secs(30)).success());
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        kill_if_running(&mut self.child);
    }
}

fn web_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/web")
}

/// Runs one phase of the browser script; its output is shown whether it passes or not.
fn browser_phase(phase: &str, vars: &[(&str, String)], logs: &[PathBuf]) {
    let script = web_dir().join("admin.mjs");
    assert!(
        web_dir().join("node_modules/playwright-core").is_dir(),
        "Playwright is not installed in tests/web/node_modules: run scripts/setup-peers.sh"
    );
    let out = Command::new("node")
        .arg(&script)
        .env("PHASE", phase)
        .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap_or_else(|e| panic!("running node (scripts/setup-peers.sh installs it): {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("--- browser phase {phase}\n{text}");
    if !out.status.success() {
        for l in logs {
            let t = std::fs::read_to_string(l).unwrap_or_default();
            let tail: Vec<&str> = t.lines().rev().take(40).collect();
            println!("--- {} (last lines)", l.display());
            for line in tail.iter().rev() {
                println!("{line}");
            }
        }
        panic!("browser phase {phase} failed:\n{text}");
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// A self-signed CA that signed nothing the KMS presents (made as the KMS makes its own).
fn wrong_ca(path: &Path) {
    let ca = kms::pki::issue(
        "Some Other CA",
        kms::pki::Role::Ca,
        kms::pki::KeyKind::EcP256,
        None,
        0,
        30,
    )
    .unwrap();
    std::fs::write(path, ca.cert.to_pem().unwrap()).unwrap();
}

fn read_secret(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap().trim_end().to_owned()
}

/// A TLS session with the page (its self-signed certificate not checked), or why not.
fn tls_to(
    port: u16,
) -> Result<
    openssl::ssl::SslStream<std::net::TcpStream>,
    openssl::ssl::HandshakeError<std::net::TcpStream>,
> {
    let mut b = openssl::ssl::SslConnector::builder(openssl::ssl::SslMethod::tls_client()).unwrap();
    b.set_verify(openssl::ssl::SslVerifyMode::NONE);
    let tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    b.build().connect("localhost", tcp)
}

/// One HTTPS request written raw (`request` whole), the status line of its answer and how
/// long it took.
fn raw_https(port: u16, request: &[u8]) -> (String, Duration) {
    use std::io::Read;
    let t = Instant::now();
    let mut tls = tls_to(port).unwrap();
    tls.write_all(request).unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !answer.windows(2).any(|w| w == b"\r\n") {
        match tls.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&answer);
    (
        text.lines().next().unwrap_or_default().to_owned(),
        t.elapsed(),
    )
}

/// One HTTPS request (`request` whole); the whole answer as text.
fn https_exchange(port: u16, request: &[u8]) -> String {
    use std::io::Read;
    let mut tls = tls_to(port).unwrap();
    tls.write_all(request).unwrap();
    let mut answer = Vec::new();
    let _ = tls.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

fn cookie_of(answer: &str, name: &str) -> String {
    answer
        .lines()
        .filter_map(|l| l.strip_prefix("set-cookie: "))
        .find_map(|c| c.strip_prefix(&format!("{name}=")))
        .map(|c| c.split(';').next().unwrap().to_owned())
        .unwrap_or_else(|| panic!("no cookie {name} in {answer}"))
}

/// A session opened with raw requests: its cookie.
fn raw_login(port: u16, password: &str) -> String {
    let form = https_exchange(
        port,
        b"GET /login HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    let token = cookie_of(&form, "__Host-atrest-login");
    let body = format!(
        "login_token={token}&user=admin&password={}",
        password.replace(' ', "+")
    );
    let answer = https_exchange(
        port,
        format!(
            "POST /login HTTP/1.1\r\nHost: x\r\nConnection: close\r\nCookie: __Host-atrest-login={token}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    assert!(answer.starts_with("HTTP/1.1 303"), "{answer}");
    cookie_of(&answer, "__Host-atrest")
}

/// What a stranger writes into the audit log is bounded (found by an outside run: 20 MB in
/// 1.4 s through the login form's user field), and `atrest admin set-password` ends every
/// session of the old password.
fn strangers_and_an_old_password(port: u16, config: &Path, audit: &Path) {
    let before = std::fs::metadata(audit).unwrap().len();
    let user = "A".repeat(500_000);
    for _ in 0..60 {
        let body = format!("user={user}&password=x");
        let answer = https_exchange(
            port,
            format!(
                "POST /login HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
        assert!(
            answer.starts_with("HTTP/1.1 403"),
            "{}",
            &answer[..200.min(answer.len())]
        );
    }
    let grown = std::fs::metadata(audit).unwrap().len() - before;
    assert!(
        grown < 20 * 1024,
        "60 forged logins with a 500 kB user name grew the audit log by {grown} bytes"
    );
    let session = raw_login(port, ADMIN_PASSWORD);
    let get = |cookie: &str| {
        https_exchange(
            port,
            format!("GET /volumes HTTP/1.1\r\nHost: x\r\nConnection: close\r\nCookie: __Host-atrest={cookie}\r\n\r\n").as_bytes(),
        )
    };
    assert!(get(&session).starts_with("HTTP/1.1 200"));
    let mut set = Command::new(atrest_bin())
        .args(["admin", "set-password", "--password-stdin", "--config"])
        .arg(config)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    writeln!(set.stdin.take().unwrap(), "{NEW_ADMIN_PASSWORD}").unwrap();
    assert!(set.wait().unwrap().success());
    let after = get(&session);
    assert!(
        after.starts_with("HTTP/1.1 303") && after.contains("location: /login"),
        "a session of the old password still works: {}",
        &after[..200.min(after.len())]
    );
    raw_login(port, NEW_ADMIN_PASSWORD);
}

/// What an attacker on the network port can do to the page costs the daemon nothing: 300
/// silent TCP connections and 20 silent TLS sessions held open, a body declared at 100 GB;
/// meanwhile a real request is answered at once.
fn transport_abuse(port: u16) {
    let idle: Vec<std::net::TcpStream> = (0..300)
        .filter_map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).ok())
        .collect();
    assert!(idle.len() >= 250, "only {} connections opened", idle.len());
    let mut silent_tls = Vec::new();
    for _ in 0..20 {
        if let Ok(s) = tls_to(port) {
            silent_tls.push(s);
        }
    }
    let (line, took) = raw_https(
        port,
        b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n",
    );
    assert!(line.contains(" 413 "), "a 100 GB body: {line}");
    let (line, took2) = raw_https(port, b"GET /login HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(
        line.contains(" 200 "),
        "the login page while flooded: {line}"
    );
    assert!(
        took < Duration::from_secs(3) && took2 < Duration::from_secs(3),
        "answers took {took:?} and {took2:?} with {} idle connections open",
        idle.len() + silent_tls.len()
    );
    let (line, _) = raw_https(port, b"GET /status.json HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(
        line.contains(" 401 "),
        "the status feed without a session: {line}"
    );
    let (line, _) = raw_https(
        port,
        b"POST /volumes/recordings/lock HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 11\r\n\r\nconfirm=yes",
    );
    assert!(line.contains(" 403 "), "a lock without a session: {line}");
    drop(idle);
    drop(silent_tls);
    println!("transport abuse: 413 in {took:?}, the login page in {took2:?}");
}

#[test]
fn the_admin_page_in_a_real_browser() {
    let scratch = harness::scratch("atrest-web");
    let dir = scratch.path();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let kms_port = free_port();
    let _kms = Kms::start(&dir.join("kms"), kms_port);
    let kms_dir = dir.join("kms");
    let app = dir.join("app");
    std::fs::create_dir(&app).unwrap();
    std::fs::set_permissions(&app, std::fs::Permissions::from_mode(0o700)).unwrap();

    // The appliance's recordings: 384 MiB of text, large enough that the conversion's
    // progress is seen on the page.
    let img = app.join("recordings.img");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&img).unwrap());
        // 64-byte lines: a whole number of sectors.
        let line = [MARKER, b"0123456789abcdefghijklmnopq\n"].concat();
        assert_eq!(line.len(), 64);
        for _ in 0..(384 << 20) / 64 {
            f.write_all(&line).unwrap();
        }
    }
    let not_cert = dir.join("notes.txt");
    std::fs::write(&not_cert, "these are meeting notes, not a certificate\n").unwrap();
    let wrong = dir.join("other-ca.pem");
    wrong_ca(&wrong);

    // Before the operator visits the page the KMIP settings name a server that is not
    // there yet; the certificate files are the KMS's.
    let web_port = free_port();
    let config = app.join("atrest.toml");
    std::fs::write(
        &config,
        format!(
            r#"# The appliance's encryption settings.
[kmip]
servers = ["127.0.0.1:1"]
ca_cert = "{kms}/pki/ca.crt"
client_cert = "{kms}/pki/client.p12"
passphrase_file = "{kms}/client.pass"
username = "appliance"
password_file = "{kms}/kmip.pass"
timeout_secs = 5

[serve]
api_socket = "run/api.sock"
audit_log = "audit.jsonl"
key_check_secs = 3600
# 384 MiB in about six seconds: long enough to watch.
convert_max_mib_per_sec = 64

[[volume]]
name = "recordings"
path = "recordings.img"
nbd = "unix:run/recordings.sock"

[web]
listen = "127.0.0.1:{web_port}"
"#,
            kms = kms_dir.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut set = Command::new(atrest_bin())
        .args(["admin", "set-password", "--password-stdin", "--config"])
        .arg(&config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(set.stdin.take().unwrap(), "{ADMIN_PASSWORD}").unwrap();
    assert!(set.wait().unwrap().success());

    let log = dir.join("serve.log");
    let mut serve = Serve::start(&config, &log);
    serve.until_logged("web page at https://", 1, Duration::from_secs(30));
    serve.until_logged("recordings: plaintext", 1, Duration::from_secs(30));

    let passphrase = read_secret(&kms_dir.join("client.pass"));
    let kmip_password = read_secret(&kms_dir.join("kmip.pass"));
    let artifacts = Path::new(env!("CARGO_TARGET_TMPDIR")).join("web-artifacts");
    let _ = std::fs::remove_dir_all(&artifacts);
    let common = vec![
        ("ATREST_WEB_URL", format!("https://127.0.0.1:{web_port}")),
        ("ATREST_ADMIN_PASSWORD", ADMIN_PASSWORD.to_owned()),
        ("ATREST_ARTIFACTS", artifacts.display().to_string()),
    ];
    let mut first = common.clone();
    first.extend([
        (
            "ATREST_CA",
            kms_dir.join("pki/ca.crt").display().to_string(),
        ),
        ("ATREST_WRONG_CA", wrong.display().to_string()),
        ("ATREST_NOT_CERT", not_cert.display().to_string()),
        (
            "ATREST_CLIENT_P12",
            kms_dir.join("pki/client.p12").display().to_string(),
        ),
        ("ATREST_PASSPHRASE", passphrase.clone()),
        ("ATREST_KMIP_USER", "appliance".to_owned()),
        ("ATREST_KMIP_PASSWORD", kmip_password.clone()),
        ("ATREST_KMIP_SERVER", format!("127.0.0.1:{kms_port}")),
    ]);
    let logs = [log.clone(), app.join("audit.jsonl")];
    browser_phase("1", &first, &logs);

    // What the page did on disk: the volume encrypted in place, its plaintext gone.
    let image = std::fs::read(&img).unwrap();
    assert!(
        !contains(&image, MARKER),
        "the encrypted image still holds the plaintext"
    );
    let status = succeed(
        Command::new(atrest_bin())
            .args(["status", "--json"])
            .arg(&img),
    );
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["cipher_name"], "XTS-AES-128", "{status}");
    // The settings saved: the new server in force, secrets in files of their own (0600 in a
    // 0700 folder), none in the TOML, which keeps its comment.
    let toml = std::fs::read_to_string(&config).unwrap();
    assert!(
        toml.starts_with("# The appliance's encryption settings."),
        "{toml}"
    );
    assert!(
        toml.contains(&format!("\"127.0.0.1:{kms_port}\"")),
        "{toml}"
    );
    assert!(toml.contains("web-kmip/"), "{toml}");
    for secret in [passphrase.as_str(), kmip_password.as_str(), ADMIN_PASSWORD] {
        assert!(!toml.contains(secret), "a secret is in the TOML");
    }
    let saved = app.join("web-kmip");
    assert_eq!(
        std::fs::metadata(&saved).unwrap().permissions().mode() & 0o777,
        0o700
    );
    let generations: Vec<_> = std::fs::read_dir(&saved).unwrap().flatten().collect();
    assert_eq!(
        generations.len(),
        1,
        "the failed attempts left nothing behind"
    );
    for f in std::fs::read_dir(generations[0].path()).unwrap().flatten() {
        let mode = f.metadata().unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", f.path().display());
    }

    // Before phase 2 rate-limits this address: the stranger's entries, and a new password.
    strangers_and_an_old_password(web_port, &config, &app.join("audit.jsonl"));
    let mut common = common;
    common[1].1 = NEW_ADMIN_PASSWORD.to_owned();

    // A restart: the page must show the volume unlocked again.
    serve.stop();
    let mut serve = Serve::start(&config, &log);
    serve.until_logged("recordings: unlocked", 1, Duration::from_secs(60));
    browser_phase("2", &common, &logs);
    let t = Instant::now();
    transport_abuse(web_port);
    println!("transport abuse took {:?}", t.elapsed());
    let t = Instant::now();
    serve.stop();
    println!("stop took {:?}", t.elapsed());

    // No response of either phase carried a secret (nor the admin password's hash).
    let hash = service::config::WebConfig::load(&config)
        .unwrap()
        .admin_password_hash
        .unwrap();
    for phase in ["1", "2"] {
        let dump = std::fs::read(artifacts.join(format!("responses-phase{phase}.txt"))).unwrap();
        assert!(dump.len() > 10_000, "phase {phase} recorded its responses");
        for (what, secret) in [
            ("the client certificate's passphrase", passphrase.as_str()),
            ("the KMIP password", kmip_password.as_str()),
            ("the admin password", ADMIN_PASSWORD),
            ("the new admin password", NEW_ADMIN_PASSWORD),
            ("the admin password's hash", hash.as_str()),
        ] {
            assert!(
                !contains(&dump, secret.as_bytes()),
                "{what} appears in a response of phase {phase}"
            );
        }
    }

    // The audit log names every login, failure and change with its source.
    let audit = std::fs::read_to_string(app.join("audit.jsonl")).unwrap();
    let entries: Vec<serde_json::Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let has = |op: &str, source: &str| {
        entries
            .iter()
            .any(|e| e["operation"] == op && e["source"].as_str() == Some(source))
    };
    for op in [
        "login",
        "login_failed",
        "logout",
        "kmip_settings_refused",
        "kmip_settings_test_failed",
        "kmip_settings_saved",
        "encrypt_requested",
        "rewrap_requested",
        "lock_requested",
        "unlock_requested",
        "web_refused",
    ] {
        assert!(
            has(op, "admin@127.0.0.1"),
            "no audit entry {op:?} from admin@127.0.0.1:\n{audit}"
        );
    }
    assert!(
        has("web_refused", "-@127.0.0.1"),
        "the POST without a session is not in the audit log"
    );
    for secret in [
        passphrase.as_str(),
        kmip_password.as_str(),
        ADMIN_PASSWORD,
        NEW_ADMIN_PASSWORD,
    ] {
        assert!(!audit.contains(secret), "a secret is in the audit log");
    }
    let shots = std::fs::read_dir(&artifacts)
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "png"))
        .count();
    assert!(
        shots >= 15,
        "{shots} screenshots in {}",
        artifacts.display()
    );
}
