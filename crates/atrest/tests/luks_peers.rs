//! Issue 23: the LUKS2 volumes and boot paths people already use. `atrest bind` and
//! `unbind` on volumes cryptsetup made (argon2id and pbkdf2 keyslots, 4096-byte sectors,
//! data written by cryptsetup's own encryption), checked with stock cryptsetup and
//! through atrest's NBD export; and the Clevis pin (`contrib/clevis`) with Debian's
//! clevis and jose, alone, inside Shamir's sss with a real tang server, and through
//! `clevis luks bind`/`pass`. Against the development KMS and PyKMIP's server. One set of
//! servers for every case (harness = false); every tool missing is a failure.

mod harness;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use harness::kms::{atrest_bin, free_port, Kms};
use harness::pykmip::{Pki, PyKmip};
use harness::{atrest, kill_if_running, qemu_img_read, random, signal, text, wait_for};

struct Env {
    dir: PathBuf,
    kms: Kms,
    /// A configuration for PyKMIP's server.
    pykmip_conf: PathBuf,
    _pykmip: PyKmip,
    /// Where the Clevis pin scripts are, first on PATH for clevis.
    path: String,
}

fn ok(what: &str, o: Output) -> Output {
    assert!(o.status.success(), "{what}: {}", text(&o));
    o
}

fn cryptsetup(args: &[&str]) -> Output {
    Command::new("cryptsetup").args(args).output().unwrap()
}

/// A secret file, 0600 (atrest refuses a key file others can read).
fn secret_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

/// `cryptsetup open --test-passphrase` with `key_file` (`-` reads `stdin_bytes`).
fn opens(img: &Path, key_file: &str, stdin_bytes: Option<&[u8]>, extra: &[&str]) -> bool {
    let mut c = Command::new("cryptsetup");
    c.args(["open", "--test-passphrase", "--key-file", key_file])
        .args(extra)
        .arg(img)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        if let Some(b) = stdin_bytes {
            stdin.write_all(b).unwrap();
        }
    }
    child.wait_with_output().unwrap().status.success()
}

/// What `atrest open` serves over NBD, read whole with qemu-img.
fn served_bytes(config: &Path, img: &Path, dir: &Path) -> Vec<u8> {
    let sock = dir.join(format!(
        "{}.sock",
        img.file_name().unwrap().to_string_lossy()
    ));
    let mut child: Child = Command::new(atrest_bin())
        .args(["open", "--json", "--config"])
        .arg(config)
        .arg("--nbd")
        .arg(format!("unix:{}", sock.display()))
        .arg(img)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    if line.is_empty() {
        let mut err = String::new();
        let _ = child.stderr.take().unwrap().read_to_string(&mut err);
        kill_if_running(&mut child);
        panic!("atrest open did not start: {err}");
    }
    let j: serde_json::Value = serde_json::from_str(&line).unwrap();
    let at = j["at"].as_str().unwrap().to_owned();
    let copy = dir.join("served.raw");
    let _ = std::fs::remove_file(&copy);
    qemu_img_read(&at, &copy);
    signal(child.id(), "TERM");
    wait_for(&mut child, Duration::from_secs(30));
    std::fs::read(&copy).unwrap()
}

/// A volume cryptsetup made from `plain` (encrypted in place with a data shift, as an
/// operator would encrypt an existing disk): argon2id keyslot opened by `pass`,
/// 4096-byte sectors.
fn cryptsetup_volume(dir: &Path, name: &str, plain: &[u8], pass: &Path) -> PathBuf {
    let img = dir.join(name);
    std::fs::write(&img, [plain, &vec![0u8; 32 << 20]].concat()).unwrap();
    ok(
        "cryptsetup reencrypt --encrypt",
        cryptsetup(&[
            "reencrypt",
            "--encrypt",
            "--type",
            "luks2",
            "--force-offline-reencrypt",
            "--reduce-device-size",
            "32M",
            "--sector-size",
            "4096",
            "--pbkdf",
            "argon2id",
            "--pbkdf-memory",
            "65536",
            "--pbkdf-force-iterations",
            "4",
            "-q",
            "--key-file",
            pass.to_str().unwrap(),
            img.to_str().unwrap(),
        ]),
    );
    img
}

fn sha(b: &[u8]) -> Vec<u8> {
    openssl::sha::sha256(b).to_vec()
}

fn key_uid_of(img: &Path) -> String {
    let o = ok(
        "atrest status --json",
        atrest(&["status", "--json", img.to_str().unwrap()]),
    );
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    j["key_uid"].as_str().unwrap().to_owned()
}

fn bind_and_unbind_against(env: &Env, config: &Path, tag: &str) {
    let d = env.dir.join(format!("bind-{tag}"));
    std::fs::create_dir_all(&d).unwrap();
    let plain = random(8 << 20);
    let pass = secret_file(&d, "pass", b"correct horse battery staple");
    let img = cryptsetup_volume(&d, "cs.img", &plain, &pass);
    let cfg = config.to_str().unwrap();
    let img_s = img.to_str().unwrap();

    // Before: cryptsetup's, described, not atrest's.
    let o = ok("status", atrest(&["status", img_s]));
    let said = text(&o);
    assert!(
        said.contains("managed by    not atrest") && said.contains("argon2id"),
        "{said}"
    );

    // A wrong passphrase binds nothing, and makes no key.
    let before = sha(&std::fs::read(&img).unwrap());
    let wrong = secret_file(&d, "wrong", b"not the passphrase");
    let o = atrest(&[
        "bind",
        "--config",
        cfg,
        "--key-file",
        wrong.to_str().unwrap(),
        img_s,
    ]);
    assert!(!o.status.success());
    assert!(text(&o).contains("opens no keyslot"), "{}", text(&o));
    assert_eq!(
        sha(&std::fs::read(&img).unwrap()),
        before,
        "a refused bind wrote"
    );
    // A key file others can read is refused before anything happens.
    let loose = d.join("loose");
    std::fs::write(&loose, b"correct horse battery staple").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let o = atrest(&[
        "bind",
        "--config",
        cfg,
        "--key-file",
        loose.to_str().unwrap(),
        img_s,
    ]);
    assert!(!o.status.success(), "{}", text(&o));

    // Bind with the passphrase.
    let o = ok(
        "bind",
        atrest(&[
            "bind",
            "--config",
            cfg,
            "--key-file",
            pass.to_str().unwrap(),
            img_s,
        ]),
    );
    assert!(text(&o).contains("bound: keyslot"), "{}", text(&o));
    let uid = key_uid_of(&img);
    // A second bind is refused.
    let o = atrest(&[
        "bind",
        "--config",
        cfg,
        "--key-file",
        pass.to_str().unwrap(),
        img_s,
    ]);
    assert!(
        text(&o).contains("managed by atrest already"),
        "{}",
        text(&o)
    );

    // The passphrase still opens it; so does the KMIP secret, in stock cryptsetup; and
    // the token names the keyslot it opens.
    assert!(
        opens(&img, pass.to_str().unwrap(), None, &[]),
        "the passphrase no longer opens it"
    );
    let secret = ok(
        "kmip get",
        atrest(&["kmip", "get", "--config", cfg, "--raw", &uid]),
    )
    .stdout;
    assert!(
        opens(&img, "-", Some(&secret), &[]),
        "the KMIP secret does not open it"
    );
    let dump = text(&ok("luksDump", cryptsetup(&["luksDump", img_s])));
    assert!(dump.contains("atrest-kmip"), "{dump}");
    // atrest serves exactly what cryptsetup encrypted.
    // (cryptsetup's data segment runs to the device's end: the plaintext, then the 16 MiB
    // that --reduce-device-size left unused, whose content is undefined.)
    let served = served_bytes(config, &img, &d);
    assert_eq!(served.len(), plain.len() + (16 << 20));
    assert!(
        served[..plain.len()] == plain[..],
        "atrest serves other bytes than cryptsetup encrypted"
    );

    // Unbind: the slot and token go, the key is revoked, the passphrase still opens it.
    let o = ok("unbind", atrest(&["unbind", "--config", cfg, img_s]));
    assert!(text(&o).contains("unbound"), "{}", text(&o));
    assert!(
        !opens(&img, "-", Some(&secret), &[]),
        "the KMIP secret still opens it"
    );
    assert!(
        opens(&img, pass.to_str().unwrap(), None, &[]),
        "unbind lost the passphrase"
    );
    let said = text(&ok("status", atrest(&["status", img_s])));
    assert!(said.contains("managed by    not atrest"), "{said}");
    let attrs = text(&ok(
        "kmip attributes",
        atrest(&["kmip", "attributes", "--config", cfg, &uid]),
    ));
    assert!(
        attrs.contains("Deactivated"),
        "the key was not revoked: {attrs}"
    );

    // A volume atrest made has no other way in: unbind is refused and changes nothing.
    let own = d.join("own.img");
    harness::format_volume(config, &own, 4, &[]);
    let before = sha(&std::fs::read(&own).unwrap());
    let o = atrest(&["unbind", "--config", cfg, own.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("only way into this volume"),
        "{}",
        text(&o)
    );
    assert_eq!(sha(&std::fs::read(&own).unwrap()), before);
    println!("  bind/unbind against {tag}: data identical, passphrase kept, key {uid} revoked");
}

fn bind_and_unbind_a_cryptsetup_volume_against_the_development_kms(env: &Env) {
    bind_and_unbind_against(env, &env.kms.client_toml(), "kms");
}

fn bind_and_unbind_a_cryptsetup_volume_against_pykmip(env: &Env) {
    bind_and_unbind_against(env, &env.pykmip_conf, "pykmip");
}

fn clevis(env: &Env, args: &[&str], input: &[u8]) -> Output {
    use std::io::Write;
    let mut child = Command::new("clevis")
        .args(args)
        .env("PATH", &env.path)
        .env("ATREST", atrest_bin())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

/// A tang server (tangd behind socat, as systemd's socket would run it), on a free port.
struct Tang {
    child: Child,
    url: String,
}

impl Tang {
    fn start(dir: &Path) -> Self {
        let db = dir.join("tang-db");
        std::fs::create_dir_all(&db).unwrap();
        ok(
            "tangd-keygen",
            Command::new("/usr/libexec/tangd-keygen")
                .arg(&db)
                .output()
                .unwrap(),
        );
        let port = free_port();
        let child = Command::new("socat")
            .arg(format!("TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork"))
            .arg(format!("EXEC:/usr/libexec/tangd {}", db.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let url = format!("http://127.0.0.1:{port}");
        // Held in a Tang from here, so that every path (a panic included) reaps it.
        let tang = Self { child, url };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return tang;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("tang did not listen");
    }
}

impl Drop for Tang {
    fn drop(&mut self) {
        kill_if_running(&mut self.child);
    }
}

fn the_clevis_pin_alone_in_sss_and_in_a_luks_header(env: &Env) {
    let d = env.dir.join("clevis");
    std::fs::create_dir_all(&d).unwrap();
    let cfg = env.kms.client_toml();
    let pin = serde_json::json!({"config": cfg, "name": "clevis-test"}).to_string();
    let secret = random(64);

    // Alone: the JWE holds no key, and decrypts by fetching it again.
    let jwe = ok(
        "clevis encrypt kmip",
        clevis(env, &["encrypt", "kmip", &pin], &secret),
    )
    .stdout;
    assert!(!jwe.windows(secret.len()).any(|w| w == secret.as_slice()));
    let back = ok("clevis decrypt", clevis(env, &["decrypt"], &jwe)).stdout;
    assert_eq!(back, secret, "clevis decrypt gave other bytes");
    // The key it made, revoked: decryption fails, saying so.
    let hdr = String::from_utf8_lossy(&jwe);
    let hdr = hdr.split('.').next().unwrap();
    let j: serde_json::Value = serde_json::from_slice(&base64_url(hdr)).unwrap();
    let uid = j["clevis"]["kmip"]["uid"].as_str().unwrap().to_owned();
    assert_eq!(j["clevis"]["pin"], "kmip");
    // The PyKMIP server through the same pin.
    let py = serde_json::json!({"config": env.pykmip_conf}).to_string();
    let jwe2 = ok(
        "clevis encrypt kmip (PyKMIP)",
        clevis(env, &["encrypt", "kmip", &py], &secret),
    )
    .stdout;
    assert_eq!(
        ok("clevis decrypt (PyKMIP)", clevis(env, &["decrypt"], &jwe2)).stdout,
        secret
    );

    // Inside Shamir's secret sharing, with a real tang server: any one of two.
    let tang = Tang::start(&d);
    let sss = serde_json::json!({
        "t": 1,
        "pins": {"kmip": [{"config": cfg}], "tang": [{"url": tang.url}]}
    })
    .to_string();
    let jwe3 = ok(
        "clevis encrypt sss",
        clevis(env, &["encrypt", "sss", &sss, "-y"], &secret),
    )
    .stdout;
    assert_eq!(
        ok("clevis decrypt sss", clevis(env, &["decrypt"], &jwe3)).stdout,
        secret
    );
    // Both needed (t = 2): with tang gone, it fails; kmip alone is not enough.
    let sss2 = serde_json::json!({
        "t": 2,
        "pins": {"kmip": [{"config": cfg}], "tang": [{"url": tang.url}]}
    })
    .to_string();
    let jwe4 = ok(
        "clevis encrypt sss t=2",
        clevis(env, &["encrypt", "sss", &sss2, "-y"], &secret),
    )
    .stdout;
    assert_eq!(
        ok("clevis decrypt sss t=2", clevis(env, &["decrypt"], &jwe4)).stdout,
        secret
    );
    drop(tang);
    assert!(
        !clevis(env, &["decrypt"], &jwe4).status.success(),
        "t=2 decrypted without tang"
    );
    // ... while t=1 still decrypts through the KMIP share alone.
    assert_eq!(
        ok(
            "clevis decrypt sss, tang gone",
            clevis(env, &["decrypt"], &jwe3)
        )
        .stdout,
        secret
    );

    // A revoked key no longer decrypts (only an Active key unlocks, as everywhere in
    // atrest), nor a destroyed one.
    let cfg_s = cfg.to_str().unwrap();
    ok(
        "kmip revoke",
        atrest(&["kmip", "revoke", "--config", cfg_s, &uid]),
    );
    let o = clevis(env, &["decrypt"], &jwe);
    assert!(!o.status.success(), "a revoked key still decrypts");
    ok(
        "kmip destroy",
        atrest(&["kmip", "destroy", "--config", cfg_s, &uid]),
    );
    let o = clevis(env, &["decrypt"], &jwe);
    assert!(!o.status.success(), "a destroyed key still decrypts");
    // A JWE whose header names another file as the configuration (a disk writer can
    // change the token): refused, and no line of that file is printed.
    let planted = d.join("not-a-config");
    std::fs::write(&planted, "root:$6$secret-hash-line:19000:0:99999:7:::\n").unwrap();
    let o = Command::new(atrest_bin())
        .args(["kmip", "get", "--usable", "--config"])
        .arg(&planted)
        .args(["--raw", "--", &uid])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        !text(&o).contains("secret-hash-line"),
        "a line of the planted file was printed: {}",
        text(&o)
    );

    // clevis luks bind on a cryptsetup volume, then the passphrase clevis keeps in its
    // token (`clevis luks pass`; `clevis luks unlock` needs device-mapper) opens it.
    let pass = secret_file(&d, "pass", b"an existing passphrase");
    let img = cryptsetup_volume(&d, "clevis.img", &random(4 << 20), &pass);
    ok(
        "clevis luks bind",
        Command::new("clevis")
            .args(["luks", "bind", "-y", "-d"])
            .arg(&img)
            .args(["-k"])
            .arg(&pass)
            .args(["kmip", &pin])
            .env("PATH", &env.path)
            .env("ATREST", atrest_bin())
            .output()
            .unwrap(),
    );
    let list = text(&ok(
        "clevis luks list",
        Command::new("clevis")
            .args(["luks", "list", "-d"])
            .arg(&img)
            .env("PATH", &env.path)
            .output()
            .unwrap(),
    ));
    assert!(list.contains("kmip"), "{list}");
    let slot = list.split(':').next().unwrap().trim().to_owned();
    let passphrase = ok(
        "clevis luks pass",
        Command::new("clevis")
            .args(["luks", "pass", "-d"])
            .arg(&img)
            .args(["-s", &slot])
            .env("PATH", &env.path)
            .env("ATREST", atrest_bin())
            .output()
            .unwrap(),
    )
    .stdout;
    assert!(
        opens(&img, "-", Some(&passphrase), &["--key-slot", &slot]),
        "the passphrase clevis recovered does not open keyslot {slot}"
    );
    println!("  clevis kmip pin: alone (KMS and PyKMIP), sss t=1 and t=2 with tang, luks bind + pass on keyslot {slot}");
}

/// Where cryptsetup 2.6 loads token plugins from (compiled in; `cryptsetup --help` says).
const TOKEN_DIR: &str = "/lib/x86_64-linux-gnu/cryptsetup";

/// The plugin installed where cryptsetup looks for it, for as long as this lives (what was
/// there before is put back). cryptsetup 2.6.1 has no option to look elsewhere.
struct Plugin {
    at: PathBuf,
    before: Option<Vec<u8>>,
}

impl Plugin {
    fn install() -> Self {
        let built = std::env::current_exe()
            .unwrap()
            .parent()
            .unwrap()
            .join("libcryptsetup_token_atrest_kmip.so");
        assert!(
            built.exists(),
            "the token plugin was not built: {}",
            built.display()
        );
        let at = Path::new(TOKEN_DIR).join("libcryptsetup-token-atrest-kmip.so");
        let before = std::fs::read(&at).ok();
        std::fs::create_dir_all(TOKEN_DIR).unwrap();
        std::fs::copy(&built, &at).unwrap();
        Self { at, before }
    }

    /// No plugin at all (until dropped, when what was there before comes back).
    fn remove(&self) {
        std::fs::remove_file(&self.at).unwrap();
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        match &self.before {
            Some(b) => {
                let _ = std::fs::write(&self.at, b);
            }
            None => {
                let _ = std::fs::remove_file(&self.at);
            }
        }
    }
}

/// `cryptsetup open --test-passphrase --token-only` with the plugin reading `config`.
fn token_opens(img: &Path, config: &Path) -> Output {
    Command::new("cryptsetup")
        .args([
            "open",
            "--test-passphrase",
            "--token-only",
            "--token-type",
            "atrest-kmip",
        ])
        .arg(img)
        .env("ATREST_TOKEN_CONFIG", config)
        .output()
        .unwrap()
}

/// The libcryptsetup token plugin: stock cryptsetup opens a volume atrest made, and one
/// bound with `atrest bind`, by fetching the key over KMIP (the development KMS and
/// PyKMIP's server); a revoked key, a configuration others can write, and no plugin at
/// all each fail.
fn the_token_plugin_lets_stock_cryptsetup_unlock_by_kmip(env: &Env) {
    let d = env.dir.join("token");
    std::fs::create_dir_all(&d).unwrap();
    let plugin = Plugin::install();
    for (tag, config) in [
        ("kms", env.kms.client_toml()),
        ("pykmip", env.pykmip_conf.clone()),
    ] {
        let cfg = config.to_str().unwrap();
        // A volume atrest made.
        let own = d.join(format!("own-{tag}.img"));
        harness::format_volume(&config, &own, 4, &[]);
        let o = token_opens(&own, &config);
        assert!(
            o.status.success(),
            "{tag}: token-only open of an atrest volume: {}",
            text(&o)
        );
        // One cryptsetup made, then bound.
        let pass = secret_file(&d, &format!("pass-{tag}"), b"a passphrase");
        let img = cryptsetup_volume(&d, &format!("cs-{tag}.img"), &random(1 << 20), &pass);
        ok(
            "bind",
            atrest(&[
                "bind",
                "--config",
                cfg,
                "--key-file",
                pass.to_str().unwrap(),
                img.to_str().unwrap(),
            ]),
        );
        let o = token_opens(&img, &config);
        assert!(
            o.status.success(),
            "{tag}: token-only open of a bound volume: {}",
            text(&o)
        );
        // The key revoked: the plugin refuses (only an Active key unlocks), and says why.
        let uid = key_uid_of(&own);
        ok("revoke", atrest(&["kmip", "revoke", "--config", cfg, &uid]));
        let o = token_opens(&own, &config);
        assert!(!o.status.success(), "{tag}: a revoked key still unlocks");
        assert!(text(&o).contains("atrest token:"), "{}", text(&o));
    }
    // A configuration that others may write is not trusted.
    let loose = d.join("loose.toml");
    std::fs::copy(env.kms.client_toml(), &loose).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o666)).unwrap();
    }
    let own = d.join("own-kms.img");
    let o = token_opens(&own, &loose);
    assert!(
        !o.status.success(),
        "a world-writable configuration was used"
    );
    // Without the plugin, cryptsetup cannot use the token.
    plugin.remove();
    let own2 = d.join("own-plain.img");
    harness::format_volume(&env.kms.client_toml(), &own2, 4, &[]);
    assert!(!token_opens(&own2, &env.kms.client_toml()).status.success());
    drop(plugin);
    println!("  token plugin: atrest-made and bound volumes opened by stock cryptsetup (KMS, PyKMIP); revoked key and loose configuration refused");
}

fn base64_url(s: &str) -> Vec<u8> {
    let o = Command::new("jose")
        .args(["b64", "dec", "-i-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(s.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    o.stdout
}

fn main() {
    let scratch = harness::scratch("atrest-luks-peers-");
    let dir = scratch.path().to_owned();
    let venv = harness::pykmip::venv();
    let pki = Pki::create(&dir.join("pki"));
    let mut pykmip = PyKmip::start("luks", &venv, &dir, &pki, "ec", "ec-server");
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
    // The pin scripts from the repository, first on PATH (clevis runs `clevis-*-PIN`).
    let pins = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../contrib/clevis");
    let path = format!(
        "{}:{}",
        pins.canonicalize().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let env = Env {
        kms: Kms::start(&dir.join("kms"), free_port()),
        dir: dir.clone(),
        pykmip_conf,
        _pykmip: pykmip,
        path,
    };
    let cases: &[harness::Case<Env>] = &[
        (
            "bind_and_unbind_a_cryptsetup_volume_against_the_development_kms",
            bind_and_unbind_a_cryptsetup_volume_against_the_development_kms,
        ),
        (
            "bind_and_unbind_a_cryptsetup_volume_against_pykmip",
            bind_and_unbind_a_cryptsetup_volume_against_pykmip,
        ),
        (
            "the_token_plugin_lets_stock_cryptsetup_unlock_by_kmip",
            the_token_plugin_lets_stock_cryptsetup_unlock_by_kmip,
        ),
        (
            "the_clevis_pin_alone_in_sss_and_in_a_luks_header",
            the_clevis_pin_alone_in_sss_and_in_a_luks_header,
        ),
    ];
    let (conclusion, env) = harness::run(cases, env);
    drop(env);
    harness::finish(conclusion, (), scratch);
}
