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
    // O_NOFOLLOW: a symlink planted where a secret goes would send it elsewhere.
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
        .map_err(|e| err(path, e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| err(path, e))
}

fn random_secret() -> Result<String, SetupError> {
    let mut b = [0u8; 18];
    openssl::rand::rand_bytes(&mut b).map_err(|e| err(Path::new("random number generator"), e))?;
    Ok(hex::encode(b))
}

/// Makes sure `path` is a directory of ours that nobody else can enter, creating it (mode
/// 0700) if it does not exist. The server keeps its master key and every client secret
/// here, so a directory someone else made (or a symlink someone planted, pointing at a
/// directory they can read) is refused, not used.
pub fn private_dir(path: &Path) -> Result<(), SetupError> {
    use std::os::unix::fs::MetadataExt;
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                fs::create_dir_all(parent).map_err(|e| err(parent, e))?;
            }
            fs::DirBuilder::new()
                .mode(0o700)
                .create(path)
                .map_err(|e| err(path, e))?;
            // The mode given to mkdir is cut by the umask; say it again.
            fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o700))
                .map_err(|e| err(path, e))
        }
        Err(e) => Err(err(path, e)),
        Ok(m) if m.file_type().is_symlink() => Err(err(
            path,
            "is a symbolic link; the development KMS keeps its keys only in a real directory of its own",
        )),
        Ok(m) if !m.is_dir() => Err(err(path, "exists and is not a directory")),
        Ok(m) if m.uid() != rustix::process::geteuid().as_raw() => Err(err(
            path,
            format!(
                "belongs to user {}, not to the user the server runs as ({}): its owner could read every key; give the server a directory of its own",
                m.uid(),
                rustix::process::geteuid().as_raw()
            ),
        )),
        Ok(m) if m.mode() & 0o077 != 0 => Err(err(
            path,
            format!(
                "is open to group or others (mode {:03o}); the development KMS keeps its master key there: run chmod 700 {}",
                m.mode() & 0o777,
                path.display()
            ),
        )),
        Ok(_) => Ok(()),
    }
}

/// Creates the directory on first start; returns true when it did.
pub fn ensure(dir: &Path, listen: SocketAddr) -> Result<bool, SetupError> {
    private_dir(dir)?;
    if dir.join("pki/ca.crt").exists() {
        private_dir(&dir.join("pki"))?;
        write_client_toml(dir, listen)?;
        return Ok(false);
    }
    private_dir(&dir.join("pki"))?;
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
    let passphrase = random_secret()?;
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
    let password = random_secret()?;
    write(
        &dir.join("kmip.pass"),
        format!("{password}\n").as_bytes(),
        0o600,
    )?;
    let mut users = Users::default();
    users
        .add(USERNAME, &password)
        .map_err(|e| err(&dir.join("users.json"), e))?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn any() -> SocketAddr {
        "127.0.0.1:0".parse().unwrap()
    }

    #[test]
    fn r10_lays_out_private_folders_and_refuses_ones_it_does_not_own() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("kms");
        assert!(ensure(&dir, any()).unwrap());
        crate::store::Store::open(&dir).unwrap();
        for d in ["", "pki", "objects"] {
            let m = fs::metadata(dir.join(d)).unwrap();
            assert_eq!(m.mode() & 0o777, 0o700, "{d}");
        }
        assert!(
            !ensure(&dir, any()).unwrap(),
            "a second start lays out nothing"
        );

        // A folder someone else made (or can read) is not used.
        let theirs = t.path().join("theirs");
        fs::create_dir(&theirs).unwrap();
        fs::set_permissions(&theirs, fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::chown(&theirs, Some(4242), None).unwrap();
        let e = ensure(&theirs, any()).unwrap_err().to_string();
        assert!(e.contains("belongs to user 4242"), "{e}");
        let open = t.path().join("open");
        fs::create_dir(&open).unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o755)).unwrap();
        let e = ensure(&open, any()).unwrap_err().to_string();
        assert!(e.contains("mode 755"), "{e}");
        // Nor a symlink to one.
        let link = t.path().join("link");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        let e = ensure(&link, any()).unwrap_err().to_string();
        assert!(e.contains("symbolic link"), "{e}");
        let e = ensure(&dir.join("pki/ca.crt"), any())
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a directory"), "{e}");
    }
}
