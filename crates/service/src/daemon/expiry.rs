//! Certificates that will stop the next unlock: the KMIP CA, the client certificate and the
//! certificate the KMIP server presents. Once any of them has expired, atrest can no longer
//! fetch a key, so the volumes stay locked after the next restart: the daemon warns 30, 7 and
//! 1 days ahead (a WARN line and an audit entry each time a threshold is crossed, and the
//! status all along), naming the certificate.

use std::collections::BTreeMap;

use kmip::client::{certificate_expiry, certificate_subject, Client, ClientConfig};
use openssl::x509::X509;
use serde::{Deserialize, Serialize};

/// Days before expiry at which the daemon warns.
pub const THRESHOLDS: [i32; 3] = [30, 7, 1];

/// One certificate's expiry, as the status shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertExpiry {
    /// Which certificate, in words ("the KMIP client certificate").
    pub which: String,
    /// Its subject, when known.
    pub subject: Option<String>,
    /// Its notAfter.
    pub not_after: String,
    /// Whole days left (negative: expired).
    pub days_left: i32,
    /// The warning, within [`THRESHOLDS`]'s reach.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

impl CertExpiry {
    fn new(which: String, subject: Option<String>, not_after: String, days_left: i32) -> Self {
        let mut c = Self {
            which,
            subject,
            not_after,
            days_left,
            warning: None,
        };
        c.warning = c.level().map(|_| c.sentence());
        c
    }

    /// The smallest threshold reached (1, 7 or 30), or 0 once expired.
    pub fn level(&self) -> Option<i32> {
        if self.days_left <= 0 {
            return Some(0);
        }
        THRESHOLDS
            .iter()
            .rev()
            .find(|t| self.days_left <= **t)
            .copied()
    }

    fn sentence(&self) -> String {
        let subject = self
            .subject
            .as_deref()
            .map(|s| format!(" ({s})"))
            .unwrap_or_default();
        let when = if self.days_left <= 0 {
            format!("expired on {}", self.not_after)
        } else {
            format!(
                "expires in {} day{} ({})",
                self.days_left,
                if self.days_left == 1 { "" } else { "s" },
                self.not_after
            )
        };
        format!(
            "{}{subject} {when}: after that atrest cannot fetch keys, and the volumes stay locked after the next restart; renew it and put the new one in the configuration (or on the web page)",
            self.which
        )
    }
}

/// The certificates known without a connection: every CA certificate in `ca_pem`, and the
/// client certificate.
pub fn local(kmip: &ClientConfig) -> Vec<CertExpiry> {
    let mut out: Vec<CertExpiry> = X509::stack_from_pem(&kmip.ca_pem)
        .unwrap_or_default()
        .iter()
        .map(|c| {
            let (not_after, days) = certificate_expiry(c.not_after());
            CertExpiry::new(
                "the KMIP CA certificate".into(),
                Some(certificate_subject(c)),
                not_after,
                days,
            )
        })
        .collect();
    if let Ok(client) = Client::new(kmip.clone()) {
        let (not_after, days) = client.client_certificate_expiry();
        out.push(CertExpiry::new(
            "the KMIP client certificate".into(),
            None,
            not_after.to_owned(),
            days,
        ));
    }
    out
}

/// The certificate the first answering KMIP server presents (one request: Query).
pub fn server(kmip: &ClientConfig) -> Result<CertExpiry, String> {
    let mut client = Client::new(kmip.clone()).map_err(|e| e.to_string())?;
    client.ping().map_err(|e| e.to_string())?;
    let info = client
        .server_info()
        .ok_or("no server information after a request")?;
    Ok(CertExpiry::new(
        format!("the KMIP server {}'s certificate", info.server),
        Some(info.tls.server_subject.clone()),
        info.tls.server_not_after.clone(),
        info.tls.server_days_left,
    ))
}

/// Remembers which threshold each certificate was last reported at, so that each is
/// reported once (and again after a restart, when the log is read anew).
#[derive(Debug, Default)]
pub struct Reported(BTreeMap<(String, String), i32>);

impl Reported {
    /// The certificates among `now` that reached a new threshold since last time.
    pub fn news<'a>(&mut self, now: &'a [CertExpiry]) -> Vec<&'a CertExpiry> {
        let mut out = Vec::new();
        for c in now {
            let Some(level) = c.level() else { continue };
            let key = (c.which.clone(), c.not_after.clone());
            if self.0.get(&key).is_none_or(|l| level < *l) {
                self.0.insert(key, level);
                out.push(c);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(days: u32) -> (Vec<u8>, Vec<u8>) {
        use openssl::asn1::Asn1Time;
        use openssl::ec::{EcGroup, EcKey};
        use openssl::nid::Nid;
        let key = openssl::pkey::PKey::from_ec_key(
            EcKey::generate(&EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap()).unwrap(),
        )
        .unwrap();
        let mut name = openssl::x509::X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", &format!("in {days} days"))
            .unwrap();
        let name = name.build();
        let mut b = X509::builder().unwrap();
        b.set_version(2).unwrap();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(&name).unwrap();
        b.set_pubkey(&key).unwrap();
        b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        // A few minutes past the day, so that "days left" is exactly `days`.
        let until = Asn1Time::from_unix(
            (std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
                + u64::from(days) * 86_400
                + 600) as i64,
        )
        .unwrap();
        b.set_not_after(&until).unwrap();
        b.sign(&key, openssl::hash::MessageDigest::sha256())
            .unwrap();
        (
            b.build().to_pem().unwrap(),
            key.private_key_to_pem_pkcs8().unwrap(),
        )
    }

    #[test]
    fn thresholds_are_30_7_1_and_expired() {
        let c = |d| CertExpiry::new("x".into(), None, "t".into(), d);
        assert_eq!(c(31).level(), None);
        assert_eq!(c(30).level(), Some(30));
        assert_eq!(c(8).level(), Some(30));
        assert_eq!(c(7).level(), Some(7));
        assert_eq!(c(2).level(), Some(7));
        assert_eq!(c(1).level(), Some(1));
        assert_eq!(c(0).level(), Some(0));
        assert_eq!(c(-3).level(), Some(0));
        assert!(c(31).warning.is_none());
        assert!(c(1).warning.unwrap().contains("expires in 1 day ("));
        assert!(c(-3).warning.unwrap().contains("expired on t"));
    }

    #[test]
    fn the_ca_and_the_client_certificate_are_named_with_their_days() {
        let (ca, _) = cert(5);
        let (client, key) = cert(20);
        let kmip = ClientConfig {
            servers: vec![kmip::client::ServerAddr::parse("127.0.0.1:1").unwrap()],
            ca_pem: ca,
            identity: kmip::client::Identity::Pem {
                cert_pem: client,
                key_pem: zeroize::Zeroizing::new(key),
                passphrase: None,
            },
            username: None,
            password: None,
            version: kmip::client::VersionChoice::Auto,
            connect_timeout: std::time::Duration::from_secs(1),
            request_timeout: std::time::Duration::from_secs(1),
            busy_retry: std::time::Duration::ZERO,
        };
        let found = local(&kmip);
        assert_eq!(found.len(), 2, "{found:?}");
        let ca = &found[0];
        assert_eq!(ca.which, "the KMIP CA certificate");
        assert_eq!(ca.subject.as_deref(), Some("CN=in 5 days"));
        assert_eq!((ca.days_left, ca.level()), (5, Some(7)));
        assert!(ca
            .warning
            .as_deref()
            .unwrap()
            .starts_with("the KMIP CA certificate (CN=in 5 days) expires in 5 days"));
        let cl = &found[1];
        assert_eq!(cl.which, "the KMIP client certificate");
        assert_eq!((cl.days_left, cl.level()), (20, Some(30)));
        // Reported once per threshold.
        let mut r = Reported::default();
        assert_eq!(r.news(&found).len(), 2);
        assert!(r.news(&found).is_empty());
        let later = [CertExpiry::new(
            ca.which.clone(),
            None,
            ca.not_after.clone(),
            1,
        )];
        assert_eq!(r.news(&later).len(), 1);
        assert!(r.news(&later).is_empty());
        // The server's, without a server: an error, not a warning.
        assert!(server(&kmip).is_err());
    }
}
