//! Certificates for the development server's first start (and for tests): a CA, a server
//! certificate for the names it listens on, client certificates with the clientAuth usage.
//! Written with OpenSSL's builder rather than by shelling out, so validity periods (even
//! expired ones, for tests) and names are exact.

use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::error::ErrorStack;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::extension::{
    BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
};
use openssl::x509::{X509NameBuilder, X509};

/// The key algorithm of a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// ECDSA P-256: small, fast, and the only kind with AEAD suites on stock PyKMIP.
    EcP256,
    /// RSA 2048: the kind older key managers expect.
    Rsa2048,
}

/// What a certificate is for.
#[derive(Debug, Clone, Copy)]
pub enum Role<'a> {
    /// A certificate authority.
    Ca,
    /// A TLS server answering to these DNS names and IP addresses.
    Server(&'a [&'a str]),
    /// A TLS client.
    Client,
}

/// A certificate and its private key.
pub struct Issued {
    /// The certificate.
    pub cert: X509,
    /// Its private key.
    pub key: PKey<Private>,
}

/// Issues a certificate for `cn`, valid from `from_days` to `until_days` relative to now,
/// signed by `issuer` (self-signed when `None`).
pub fn issue(
    cn: &str,
    role: Role<'_>,
    kind: KeyKind,
    issuer: Option<&Issued>,
    from_days: i64,
    until_days: i64,
) -> Result<Issued, ErrorStack> {
    let key = match kind {
        KeyKind::EcP256 => {
            let g = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
            PKey::from_ec_key(EcKey::generate(&g)?)?
        }
        KeyKind::Rsa2048 => PKey::from_rsa(Rsa::generate(2048)?)?,
    };
    let mut name = X509NameBuilder::new()?;
    name.append_entry_by_nid(Nid::COMMONNAME, cn)?;
    let name = name.build();
    let mut b = X509::builder()?;
    b.set_version(2)?;
    let mut serial = BigNum::new()?;
    serial.rand(64, MsbOption::MAYBE_ZERO, false)?;
    let serial = serial.to_asn1_integer()?;
    b.set_serial_number(&serial)?;
    b.set_subject_name(&name)?;
    b.set_issuer_name(issuer.map_or(&name, |i| i.cert.subject_name()))?;
    b.set_pubkey(&key)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let not_before = Asn1Time::from_unix(now + from_days * 86_400)?;
    let not_after = Asn1Time::from_unix(now + until_days * 86_400)?;
    b.set_not_before(&not_before)?;
    b.set_not_after(&not_after)?;
    let leaf_usage = || {
        let mut ku = KeyUsage::new();
        ku.critical().digital_signature();
        if kind == KeyKind::Rsa2048 {
            ku.key_encipherment();
        }
        ku.build()
    };
    match role {
        Role::Ca => {
            b.append_extension(BasicConstraints::new().critical().ca().build()?)?;
            b.append_extension(
                KeyUsage::new()
                    .critical()
                    .key_cert_sign()
                    .crl_sign()
                    .build()?,
            )?;
        }
        Role::Server(names) => {
            b.append_extension(BasicConstraints::new().critical().build()?)?;
            b.append_extension(leaf_usage()?)?;
            b.append_extension(ExtendedKeyUsage::new().server_auth().build()?)?;
            let mut san = SubjectAlternativeName::new();
            for n in names {
                if n.parse::<std::net::IpAddr>().is_ok() {
                    san.ip(n);
                } else {
                    san.dns(n);
                }
            }
            let san = san.build(&b.x509v3_context(issuer.map(|i| i.cert.as_ref()), None))?;
            b.append_extension(san)?;
        }
        Role::Client => {
            b.append_extension(BasicConstraints::new().critical().build()?)?;
            b.append_extension(leaf_usage()?)?;
            b.append_extension(ExtendedKeyUsage::new().client_auth().build()?)?;
        }
    }
    b.sign(issuer.map_or(&key, |i| &i.key), MessageDigest::sha256())?;
    Ok(Issued {
        cert: b.build(),
        key,
    })
}
