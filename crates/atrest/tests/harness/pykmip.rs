//! PyKMIP 0.11's real server for the test binaries that need one, and the PKI it and the
//! tests share: RSA and ECDSA CAs, server certificates (valid, expired, for another name),
//! client identities as PKCS#12 and encrypted PEM, a foreign CA. Servers run from the
//! virtualenv `scripts/setup-peers.sh` installs and are stopped (their whole process group)
//! on drop, also when a test fails.
#![allow(dead_code)]

use std::net::TcpStream;

use super::kms::free_port;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kms::pki::{Issued, KeyKind, Role};
use openssl::pkcs12::Pkcs12;
use openssl::symm::Cipher;

pub fn write(path: &Path, bytes: &[u8], mode: u32) {
    std::fs::write(path, bytes).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

pub struct Pki {
    pub dir: PathBuf,
}

impl Pki {
    pub fn create(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let save = |name: &str, i: &Issued| {
            write(
                &dir.join(format!("{name}.crt")),
                &i.cert.to_pem().unwrap(),
                0o644,
            );
            write(
                &dir.join(format!("{name}.key")),
                &i.key.private_key_to_pem_pkcs8().unwrap(),
                0o600,
            );
        };
        let servers = &["localhost", "127.0.0.1"][..];
        for (alg, kind) in [("ec", KeyKind::EcP256), ("rsa", KeyKind::Rsa2048)] {
            // A certificate of this algorithm, valid from `from` to `until` days from now.
            let issue = |cn: &str, role: Role<'_>, issuer: Option<&Issued>, from, until| {
                kms::pki::issue(cn, role, kind, issuer, from, until).unwrap()
            };
            let ca = issue(&format!("atrest test CA ({alg})"), Role::Ca, None, -1, 3650);
            save(&format!("{alg}-ca"), &ca);
            let srv = issue("localhost", Role::Server(servers), Some(&ca), -1, 825);
            save(&format!("{alg}-server"), &srv);
            let cli = issue("kmip-client", Role::Client, Some(&ca), -1, 825);
            save(&format!("{alg}-client"), &cli);
            if kind == KeyKind::EcP256 {
                // Expired a day ago; and valid but for another host.
                let old = issue("localhost", Role::Server(servers), Some(&ca), -30, -1);
                save("ec-server-expired", &old);
                let other = issue(
                    "other.example",
                    Role::Server(&["other.example"]),
                    Some(&ca),
                    -1,
                    825,
                );
                save("ec-server-other-name", &other);
                // The client identity in every form Save and Test must open.
                let pass = b"client passphrase";
                write(
                    &dir.join("ec-client.pkcs8.key"),
                    &cli.key
                        .private_key_to_pem_pkcs8_passphrase(Cipher::aes_256_cbc(), pass)
                        .unwrap(),
                    0o600,
                );
                let legacy = cli.key.ec_key().unwrap();
                write(
                    &dir.join("ec-client.legacy.key"),
                    &legacy
                        .private_key_to_pem_passphrase(Cipher::aes_128_cbc(), pass)
                        .unwrap(),
                    0o600,
                );
                let p12 = Pkcs12::builder()
                    .name("kmip-client")
                    .pkey(&cli.key)
                    .cert(&cli.cert)
                    .build2("client passphrase")
                    .unwrap();
                write(&dir.join("ec-client.p12"), &p12.to_der().unwrap(), 0o600);
                write(&dir.join("client.pass"), b"client passphrase\n", 0o600);
                write(&dir.join("wrong.pass"), b"not the passphrase\n", 0o600);
                write(&dir.join("kmip.pass"), b"s3cret\n", 0o600);
            }
        }
        let ec = KeyKind::EcP256;
        let foreign = kms::pki::issue("some other CA", Role::Ca, ec, None, -1, 3650).unwrap();
        save("foreign-ca", &foreign);
        let stranger =
            kms::pki::issue("kmip-client", Role::Client, ec, Some(&foreign), -1, 825).unwrap();
        save("foreign-client", &stranger);
        Self {
            dir: dir.to_owned(),
        }
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
}

pub struct PyKmip {
    pub name: &'static str,
    pub port: u16,
    child: Child,
    pub log: PathBuf,
}

impl PyKmip {
    pub fn start(
        name: &'static str,
        venv: &Path,
        dir: &Path,
        pki: &Pki,
        alg: &str,
        cert: &str,
    ) -> Self {
        let port = free_port();
        let d = dir.join(name);
        std::fs::create_dir_all(d.join("policies")).unwrap();
        let conf = format!(
            "[server]\nhostname=127.0.0.1\nport={port}\ncertificate_path={}\nkey_path={}\nca_path={}\n\
             auth_suite=TLS1.2\npolicy_path={}\nenable_tls_client_auth=True\nlogging_level=INFO\n\
             database_path={}\n",
            pki.path(&format!("{cert}.crt")),
            pki.path(&format!("{cert}.key")),
            pki.path(&format!("{alg}-ca.crt")),
            d.join("policies").display(),
            d.join("pykmip.db").display(),
        );
        std::fs::write(d.join("server.conf"), conf).unwrap();
        let log = d.join("server.log");
        let child = Command::new(venv.join("bin/pykmip-server"))
            .arg("-f")
            .arg(d.join("server.conf"))
            .arg("-l")
            .arg(&log)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("stderr.log")).unwrap())
            // Its own process group, so the helpers it forks stop with it.
            .process_group(0)
            // Python's multiprocessing makes a pymp-* folder per process in $TMPDIR and
            // leaves it when the server is stopped: inside the scratch space, it goes too.
            .env("TMPDIR", &d)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {}: {e}",
                    venv.join("bin/pykmip-server").display()
                )
            });
        Self {
            name,
            port,
            child,
            log,
        }
    }

    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "PyKMIP {} exited with {status}; see {}",
                    self.name,
                    self.log.display()
                );
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "PyKMIP {} did not listen on {} within 60 s",
            self.name, self.port
        );
    }
}

impl Drop for PyKmip {
    fn drop(&mut self) {
        let pgid = self.child.id() as i32;
        let _ = Command::new("kill")
            .args(["-TERM", "--", &format!("-{pgid}")])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pgid}")])
            .status();
        let _ = self.child.wait();
    }
}

/// The virtualenv `scripts/setup-peers.sh` made (`$ATREST_PYKMIP_VENV`, default `.venv` at
/// the repository's root), with PyKMIP's server in it; a panic naming the fix otherwise.
pub fn venv() -> PathBuf {
    let venv = std::env::var_os("ATREST_PYKMIP_VENV").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv"),
        PathBuf::from,
    );
    assert!(
        venv.join("bin/python").exists() && venv.join("bin/pykmip-server").exists(),
        "PyKMIP is not installed in {}: run scripts/setup-peers.sh",
        venv.display()
    );
    venv
}
