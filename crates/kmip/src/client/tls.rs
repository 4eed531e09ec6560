//! TLS through OpenSSL: the client context, and the translation of OpenSSL's failures into
//! [`ClientError`]s an operator can act on.
//!
//! OpenSSL rather than rustls (docs/design.md): the KMIP 1.x profiles mandate suites such as
//! TLS_RSA_WITH_AES_128_CBC_SHA256 that rustls will never offer, PyKMIP's stock server offers
//! nothing else with RSA certificates, and OpenSSL opens PKCS#12 files and both kinds of
//! encrypted PEM keys.

use openssl::asn1::Asn1TimeRef;
use openssl::pkcs12::Pkcs12;
use openssl::pkey::{PKey, Private};
use openssl::ssl::{SslContext, SslMethod, SslMode, SslOptions, SslVerifyMode, SslVersion};
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::{X509VerifyResult, X509};

use super::config::{ClientConfig, Identity};
use super::error::{ClientError, IdentityError};

/// TLS 1.2 suites offered, strongest first. The AEAD ECDHE suites come first; the CBC and
/// RSA-key-exchange suites after them are the ones the KMIP profiles make mandatory
/// (TLS_RSA_WITH_AES_128/256_CBC_SHA256, and the _SHA suites of the 1.0–1.2 "Basic"
/// profile), without which older key managers cannot be reached. TLS 1.3 suites are
/// OpenSSL's defaults.
const TLS12_CIPHERS: &str = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:\
ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:\
ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:\
ECDHE-ECDSA-AES128-SHA256:ECDHE-RSA-AES128-SHA256:ECDHE-ECDSA-AES256-SHA384:ECDHE-RSA-AES256-SHA384:\
AES128-GCM-SHA256:AES256-GCM-SHA384:AES128-SHA256:AES256-SHA256:AES128-SHA:AES256-SHA";

/// The client's TLS context and what "Save and Test" reports about its certificate.
pub(crate) struct TlsContext {
    pub context: SslContext,
    /// The client certificate's notAfter, as "Mon DD HH:MM:SS YYYY GMT".
    pub client_not_after: String,
    /// Days until the client certificate expires (negative when it has).
    pub client_days_left: i32,
}

pub(crate) fn context(config: &ClientConfig) -> Result<TlsContext, IdentityError> {
    let tls = |e: openssl::error::ErrorStack| IdentityError::Tls {
        detail: e.to_string(),
    };
    // A bare context rather than `SslConnector::builder`, which reads the system's whole CA
    // bundle (~85 ms here, at every daemon start) only for the store to be replaced below.
    // Options and modes are the ones `SslConnector` would set.
    let mut b = SslContext::builder(SslMethod::tls_client()).map_err(tls)?;
    b.set_options(
        (SslOptions::ALL
            | SslOptions::NO_COMPRESSION
            | SslOptions::NO_SSLV2
            | SslOptions::NO_SSLV3)
            - SslOptions::DONT_INSERT_EMPTY_FRAGMENTS,
    );
    b.set_mode(
        SslMode::AUTO_RETRY | SslMode::ACCEPT_MOVING_WRITE_BUFFER | SslMode::ENABLE_PARTIAL_WRITE,
    );
    b.set_min_proto_version(Some(SslVersion::TLS1_2))
        .map_err(tls)?;
    b.set_cipher_list(TLS12_CIPHERS).map_err(tls)?;
    b.set_verify(SslVerifyMode::PEER);
    // A Get response carries the key in the clear once decrypted, in OpenSSL's record
    // buffer. Released as soon as each record has been read (and wiped by the allocator in
    // a hardened process), it does not wait there for the next response to overwrite it,
    // so a connection can stay open after a key was fetched.
    b.set_mode(SslMode::RELEASE_BUFFERS);

    // Trust exactly the configured CA: a fresh store, not the system's, so a certificate
    // from some public CA for the server's name is not enough.
    let cas =
        X509::stack_from_pem(&config.ca_pem).map_err(|e| IdentityError::BadCaCertificate {
            detail: e.to_string(),
        })?;
    if cas.is_empty() {
        return Err(IdentityError::BadCaCertificate {
            detail: "no BEGIN CERTIFICATE block".into(),
        });
    }
    let mut store = X509StoreBuilder::new().map_err(tls)?;
    for ca in cas {
        store.add_cert(ca).map_err(tls)?;
    }
    b.set_cert_store(store.build());

    let (leaf, chain, key) = load_identity(&config.identity)?;
    b.set_certificate(&leaf).map_err(tls)?;
    for c in chain {
        b.add_extra_chain_cert(c).map_err(tls)?;
    }
    b.set_private_key(&key).map_err(tls)?;
    b.check_private_key()
        .map_err(|_| IdentityError::KeyMismatch)?;
    let (client_not_after, client_days_left) = expiry(leaf.not_after());
    Ok(TlsContext {
        context: b.build(),
        client_not_after,
        client_days_left,
    })
}

type Loaded = (X509, Vec<X509>, PKey<Private>);

fn load_identity(identity: &Identity) -> Result<Loaded, IdentityError> {
    match identity {
        Identity::Pkcs12 { der, passphrase } => {
            let p = Pkcs12::from_der(der)
                .and_then(|p| p.parse2(passphrase))
                .map_err(|_| IdentityError::Pkcs12WrongPassphrase)?;
            let cert = p.cert.ok_or(IdentityError::Pkcs12Incomplete {
                missing: "certificate",
            })?;
            let key = p.pkey.ok_or(IdentityError::Pkcs12Incomplete {
                missing: "private key",
            })?;
            let chain = p.ca.map(|s| s.into_iter().collect()).unwrap_or_default();
            Ok((cert, chain, key))
        }
        Identity::Pem {
            cert_pem,
            key_pem,
            passphrase,
        } => {
            let mut certs = X509::stack_from_pem(cert_pem)
                .map_err(|e| IdentityError::BadClientCertificate {
                    detail: e.to_string(),
                })?
                .into_iter();
            let leaf = certs.next().ok_or(IdentityError::BadClientCertificate {
                detail: "no BEGIN CERTIFICATE block".into(),
            })?;
            let encrypted = key_pem.windows(9).any(|w| w == b"ENCRYPTED");
            let key = match (encrypted, passphrase) {
                (true, None) => return Err(IdentityError::KeyNeedsPassphrase),
                (_, Some(p)) => PKey::private_key_from_pem_passphrase(key_pem, p.as_bytes()),
                // A callback that refuses: OpenSSL must never prompt on a terminal.
                (false, None) => PKey::private_key_from_pem_callback(key_pem, |_| Ok(0)),
            }
            .map_err(|_| IdentityError::KeyWrongPassphrase)?;
            Ok((leaf, certs.collect(), key))
        }
    }
}

/// A certificate's subject on one line, `CN=…, O=…` (as Save and Test shows the server's,
/// and the daemon's expiry warnings and the web page show the others).
pub fn subject(c: &openssl::x509::X509Ref) -> String {
    c.subject_name()
        .entries()
        .map(|e| {
            format!(
                "{}={}",
                e.object().nid().short_name().unwrap_or("?"),
                String::from_utf8_lossy(e.data().as_slice())
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// (notAfter as text, whole days left).
pub fn expiry(not_after: &Asn1TimeRef) -> (String, i32) {
    let days = openssl::asn1::Asn1Time::days_from_now(0)
        .ok()
        .and_then(|now| now.diff(not_after).ok())
        .map_or(0, |d| d.days);
    (not_after.to_string(), days)
}

/// Turns a failed handshake into the operator's terms.
pub(crate) fn handshake_error(
    server: &str,
    host: &str,
    verify: X509VerifyResult,
    err: &openssl::ssl::Error,
) -> ClientError {
    if verify != X509VerifyResult::OK {
        let detail = verify.error_string().to_owned();
        // X509_V_ERR_* codes from OpenSSL's x509_vfy.h.
        return match verify.as_raw() {
            // Hostname and IP address mismatch.
            62 | 64 => ClientError::HostnameMismatch {
                server: server.into(),
                host: host.into(),
            },
            9 | 10 => ClientError::ServerCertificateExpired {
                server: server.into(),
                detail,
            },
            _ => ClientError::ServerCertificateUntrusted {
                server: server.into(),
                detail,
            },
        };
    }
    classify(server, err)
}

/// Classifies an OpenSSL error outside certificate verification: an alert about our
/// certificate, a timeout, a closed connection, or something else.
pub(crate) fn classify(server: &str, err: &openssl::ssl::Error) -> ClientError {
    if let Some(io) = err.io_error() {
        return match io.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => ClientError::Timeout {
                server: server.into(),
                after: std::time::Duration::ZERO,
            },
            _ => ClientError::Io {
                server: server.into(),
                source: std::io::Error::new(io.kind(), io.to_string()),
            },
        };
    }
    let text = err
        .ssl_error()
        .map(|s| s.to_string())
        .unwrap_or_else(|| err.to_string());
    if let Some(alert) = client_certificate_alert(&text) {
        return ClientError::ClientCertificateRejected {
            server: server.into(),
            alert,
        };
    }
    if err.code() == openssl::ssl::ErrorCode::SYSCALL
        || err.code() == openssl::ssl::ErrorCode::ZERO_RETURN
    {
        return ClientError::Closed {
            server: server.into(),
        };
    }
    ClientError::Tls {
        server: server.into(),
        detail: text,
    }
}

/// The alerts a server sends when it does not accept the client's certificate.
fn client_certificate_alert(text: &str) -> Option<String> {
    const ALERTS: [&str; 7] = [
        "alert certificate required",
        "alert unknown ca",
        "alert bad certificate",
        "alert certificate unknown",
        "alert certificate expired",
        "alert unsupported certificate",
        "alert certificate revoked",
    ];
    ALERTS
        .iter()
        .find(|a| text.contains(*a))
        .map(|a| a.trim_start_matches("alert ").to_owned())
}
