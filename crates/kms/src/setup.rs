//! The server directory, laid out on first start:
//!
//! ```text
//! DIR/                 mode 0700
//!   pki/ca.crt         the CA clients must trust (ca_cert)
//!   pki/ca.key         0600, signs the server and client certificates
//!   pki/server.{crt,key}  for localhost, 127.0.0.1, ::1 and the listen address
//!   pki/client.p12     0600, the client identity, opened with client.pass
//!   pki/client.{crt,key}  the same identity in PEM (key 0600, unencrypted, for tools)
//!   client.pass        0600, the PKCS#12 passphrase
//!   kmip.pass          0600, the password of user "appliance"
//!   users.json         0600, password hashes the server checks the Credential against
//!   master.key         0600, seals key material in objects/
//!   objects/           one file per managed object
//!   client.toml        a ready atrest configuration for this server (rewritten at each start)
//! ```

use std::fs;
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use openssl::pkcs12::Pkcs12;

use crate::auth::Users;
use crate::pki::{issue, KeyKind, Role};

/// The user the first start creates.
pub const USERNAME: &str = "appliance";
/// The client certificate's subject CN, which is also the client's identity.
pub const CLIENT_CN: &str = "atrest-appliance";

/// A failure laying out the directory.
#[derive(Debug, thiserror::Error)]
#[error("{}: {why}", path.display())]
pub struct SetupError {
    /// The file or directory.
    pub path: PathBuf,
    /// What went wrong.
    pub why: String,
}

fn err(path: &Path, why: impl ToString) -> SetupError {
    SetupError {
        path: path.to_owned(),
        why: why.to_string(),
    }
}

fn write(path: &Path, bytes: &[u8], mode: u32) -> Result<(), SetupError> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(|e| err(path, e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| err(path, e))
}

fn random_secret() -> String {
    let mut b = [0u8; 18];
    openssl::rand::rand_bytes(&mut b).expect("system random number generator");
    hex::encode(b)
}

/// Creates the directory on first start; returns true when it did.
pub fn ensure(dir: &Path, listen: SocketAddr) -> Result<bool, SetupError> {
    if dir.join("pki/ca.crt").exists() {
        write_client_toml(dir, listen)?;
        return Ok(false);
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir.join("pki"))
        .map_err(|e| err(dir, e))?;
    let pki = dir.join("pki");
    let ossl = |e: openssl::error::ErrorStack| err(&pki, e);
    let ca = issue(
        "atrest development KMS CA",
        Role::Ca,
        KeyKind::EcP256,
        None,
        -1,
        3650,
    )
    .map_err(ossl)?;
    let mut names: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    if !listen.ip().is_unspecified() && !listen.ip().is_loopback() {
        names.push(listen.ip().to_string());
    }
    if let Ok(h) = fs::read_to_string("/etc/hostname") {
        let h = h.trim();
        if !h.is_empty() && !names.iter().any(|n| n == h) {
            names.push(h.to_owned());
        }
    }
    let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let server = issue(
        "localhost",
        Role::Server(&name_refs),
        KeyKind::EcP256,
        Some(&ca),
        -1,
        825,
    )
    .map_err(ossl)?;
    let client =
        issue(CLIENT_CN, Role::Client, KeyKind::EcP256, Some(&ca), -1, 825).map_err(ossl)?;
    let pem = |x: &openssl::x509::X509| x.to_pem().map_err(ossl);
    let key = |k: &openssl::pkey::PKey<openssl::pkey::Private>| {
        k.private_key_to_pem_pkcs8().map_err(ossl)
    };
    write(&pki.join("ca.crt"), &pem(&ca.cert)?, 0o644)?;
    write(&pki.join("ca.key"), &key(&ca.key)?, 0o600)?;
    write(&pki.join("server.crt"), &pem(&server.cert)?, 0o644)?;
    write(&pki.join("server.key"), &key(&server.key)?, 0o600)?;
    write(&pki.join("client.crt"), &pem(&client.cert)?, 0o644)?;
    write(&pki.join("client.key"), &key(&client.key)?, 0o600)?;
    let passphrase = random_secret();
    let p12 = Pkcs12::builder()
        .name(CLIENT_CN)
        .pkey(&client.key)
        .cert(&client.cert)
        .build2(&passphrase)
        .map_err(ossl)?;
    write(&pki.join("client.p12"), &p12.to_der().map_err(ossl)?, 0o600)?;
    write(
        &dir.join("client.pass"),
        format!("{passphrase}\n").as_bytes(),
        0o600,
    )?;
    let password = random_secret();
    write(
        &dir.join("kmip.pass"),
        format!("{password}\n").as_bytes(),
        0o600,
    )?;
    let mut users = Users::default();
    users.add(USERNAME, &password);
    write(&dir.join("users.json"), users.to_json().as_bytes(), 0o600)?;
    write_client_toml(dir, listen)?;
    Ok(true)
}

/// The address clients should dial for `listen`.
pub fn client_address(listen: SocketAddr) -> String {
    let ip = listen.ip();
    let host = if ip.is_unspecified() || ip.is_loopback() {
        "127.0.0.1".to_owned()
    } else if ip.is_ipv6() {
        format!("[{ip}]")
    } else {
        ip.to_string()
    };
    format!("{host}:{}", listen.port())
}

fn write_client_toml(dir: &Path, listen: SocketAddr) -> Result<(), SetupError> {
    let text = format!(
        "# Written by `atrest kms serve` at every start: a ready configuration for this\n\
         # development KMIP server. Try it with: atrest kmip test --config {}\n\
         [kmip]\n\
         servers = [\"{}\"]\n\
         ca_cert = \"pki/ca.crt\"\n\
         client_cert = \"pki/client.p12\"\n\
         passphrase_file = \"client.pass\"\n\
         username = \"{USERNAME}\"\n\
         password_file = \"kmip.pass\"\n\
         version = \"auto\"\n\
         timeout_secs = 10\n",
        dir.join("client.toml").display(),
        client_address(listen)
    );
    write(&dir.join("client.toml"), text.as_bytes(), 0o644)
}
