//! The page's TLS: the operator's certificate and key when `[web] cert`/`key` are given,
//! otherwise a self-signed ECDSA P-256 pair made at the first start and kept beside the
//! configuration (both files 0600). TLS 1.2 and 1.3 only, with Mozilla's "intermediate"
//! suites (forward secrecy, AEAD): a browser's connection, not a KMIP appliance's.

use std::path::{Path, PathBuf};

use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::ssl::{SslAcceptor, SslMethod, SslVersion};
use openssl::x509::extension::{
    BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
};
use openssl::x509::{X509NameBuilder, X509};
use service::config::WebConfig;
use service::trusted::{self, Role};

use crate::error::AdminError;

/// The generated certificate, beside the configuration.
pub const GENERATED_CERT: &str = "web-cert.pem";
/// Its key.
pub const GENERATED_KEY: &str = "web-key.pem";
/// How long a generated certificate is valid.
const GENERATED_DAYS: u32 = 825;

/// The server's TLS identity, ready to accept.
pub struct Identity {
    /// The acceptor.
    pub acceptor: SslAcceptor,
    /// The certificate's SHA-256 fingerprint (colon-separated hex), for the operator to
    /// compare with what the browser shows.
    pub fingerprint: String,
    /// When it expires.
    pub not_after: String,
    /// Where the certificate is.
    pub cert_path: PathBuf,
    /// Whether it was made just now.
    pub generated: bool,
}

/// Loads the configured pair, or the generated one (making it if missing).
pub fn identity(web: &WebConfig, config_dir: &Path) -> Result<Identity, AdminError> {
    let (cert_path, key_path, generated) = match (&web.cert, &web.key) {
        (Some(c), Some(k)) => (c.clone(), k.clone(), false),
        _ => {
            let c = config_dir.join(GENERATED_CERT);
            let k = config_dir.join(GENERATED_KEY);
            let made = if c.exists() || k.exists() {
                false
            } else {
                generate(&c, &k, web.listen)?;
                true
            };
            (c, k, made)
        }
    };
    let cert_pem = trusted::read("web certificate", &cert_path, Role::Trusted)?;
    let key_pem = trusted::read("web certificate key", &key_path, Role::Secret)?;
    let chain = X509::stack_from_pem(&cert_pem).map_err(|e| AdminError::Certificate {
        what: "certificate",
        why: format!("{}: not a PEM certificate ({e})", cert_path.display()),
    })?;
    let Some(leaf) = chain.first() else {
        return Err(AdminError::Certificate {
            what: "certificate",
            why: format!("{} holds no certificate", cert_path.display()),
        });
    };
    let key = PKey::private_key_from_pem(&key_pem).map_err(|e| AdminError::Certificate {
        what: "key",
        why: format!(
            "{}: not an unencrypted PEM private key ({e})",
            key_path.display()
        ),
    })?;
    if !leaf.public_key()?.public_eq(&key) {
        return Err(AdminError::Certificate {
            what: "key",
            why: format!(
                "{} is not the key of the certificate {}",
                key_path.display(),
                cert_path.display()
            ),
        });
    }
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())?;
    b.set_min_proto_version(Some(SslVersion::TLS1_2))?;
    b.set_certificate(leaf)?;
    for extra in chain.iter().skip(1) {
        b.add_extra_chain_cert(extra.clone())?;
    }
    b.set_private_key(&key)?;
    b.check_private_key()?;
    let fingerprint = leaf
        .digest(MessageDigest::sha256())?
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":");
    Ok(Identity {
        acceptor: b.build(),
        fingerprint,
        not_after: leaf.not_after().to_string(),
        cert_path,
        generated,
    })
}

/// Makes a self-signed ECDSA P-256 certificate for this host's name, `localhost` and the
/// listening address, and its key; both 0600.
fn generate(
    cert: &Path,
    key: &Path,
    listen: Option<std::net::SocketAddr>,
) -> Result<(), AdminError> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
    let pkey: PKey<Private> = PKey::from_ec_key(EcKey::generate(&group)?)?;
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    let mut name = X509NameBuilder::new()?;
    name.append_entry_by_nid(Nid::COMMONNAME, &host)?;
    name.append_entry_by_nid(Nid::ORGANIZATIONNAME, "atrest admin page (self-signed)")?;
    let name = name.build();
    let mut x = X509::builder()?;
    x.set_version(2)?;
    let mut serial = BigNum::new()?;
    serial.rand(127, MsbOption::MAYBE_ZERO, false)?;
    let serial = serial.to_asn1_integer()?;
    x.set_serial_number(&serial)?;
    x.set_subject_name(&name)?;
    x.set_issuer_name(&name)?;
    x.set_pubkey(&pkey)?;
    let (from, until) = (
        Asn1Time::days_from_now(0)?,
        Asn1Time::days_from_now(GENERATED_DAYS)?,
    );
    x.set_not_before(&from)?;
    x.set_not_after(&until)?;
    x.append_extension(BasicConstraints::new().critical().build()?)?;
    x.append_extension(KeyUsage::new().critical().digital_signature().build()?)?;
    x.append_extension(ExtendedKeyUsage::new().server_auth().build()?)?;
    let mut san = SubjectAlternativeName::new();
    san.dns(&host).dns("localhost").ip("127.0.0.1").ip("::1");
    if let Some(a) = listen.filter(|a| !a.ip().is_unspecified() && !a.ip().is_loopback()) {
        san.ip(&a.ip().to_string());
    }
    let san = san.build(&x.x509v3_context(None, None))?;
    x.append_extension(san)?;
    x.sign(&pkey, MessageDigest::sha256())?;
    let key_pem = zeroize::Zeroizing::new(pkey.private_key_to_pem_pkcs8()?);
    crate::files::create(key, &key_pem, 0o600)?;
    crate::files::create(cert, &x.build().to_pem()?, 0o600)?;
    if let Some(dir) = cert.parent() {
        crate::files::sync_dir(dir)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_pair_is_p256_private_and_reused() {
        let d = tempfile::tempdir().unwrap();
        std::fs::set_permissions(
            d.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        let web = WebConfig {
            listen: Some("127.0.0.1:0".parse().unwrap()),
            ..WebConfig::default()
        };
        let first = identity(&web, d.path()).unwrap();
        assert!(first.generated);
        for f in [GENERATED_CERT, GENERATED_KEY] {
            let m = std::fs::metadata(d.path().join(f)).unwrap();
            assert_eq!(
                std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777,
                0o600
            );
        }
        let cert = X509::from_pem(&std::fs::read(d.path().join(GENERATED_CERT)).unwrap()).unwrap();
        let ec = cert.public_key().unwrap().ec_key().unwrap();
        assert_eq!(ec.group().curve_name(), Some(Nid::X9_62_PRIME256V1));
        let again = identity(&web, d.path()).unwrap();
        assert!(!again.generated);
        assert_eq!(first.fingerprint, again.fingerprint);
    }

    #[test]
    fn a_key_of_another_certificate_is_named() {
        let d = tempfile::tempdir().unwrap();
        std::fs::set_permissions(
            d.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        let a = d.path().join("a");
        let b = d.path().join("b");
        std::fs::create_dir(&a).unwrap();
        std::fs::create_dir(&b).unwrap();
        generate(&a.join("c.pem"), &a.join("k.pem"), None).unwrap();
        generate(&b.join("c.pem"), &b.join("k.pem"), None).unwrap();
        let web = WebConfig {
            cert: Some(a.join("c.pem")),
            key: Some(b.join("k.pem")),
            ..WebConfig::default()
        };
        let Err(e) = identity(&web, d.path()) else {
            panic!("a mismatched pair was accepted")
        };
        assert!(
            e.to_string().contains("is not the key of the certificate"),
            "{e}"
        );
    }
}
