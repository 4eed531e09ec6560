//! What the client needs to know, already read into memory.
//!
//! The `kmip` crate never touches disks: the caller (the `service` crate's configuration
//! loader) reads the CA, the client identity and the secrets from files, checks their
//! permissions, and hands them over here.

use std::fmt;
use std::time::Duration;

use zeroize::Zeroizing;

use crate::message::ProtocolVersion;

/// The default KMIP port (KMIP 1.4 §10.1, IANA "kmip").
pub const DEFAULT_PORT: u16 = 5696;

/// One KMIP server: a host name (or address) and a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerAddr {
    /// Host name or IP address, also the name its certificate must carry.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl ServerAddr {
    /// Parses `host`, `host:port`, `[v6]` or `[v6]:port`; the port defaults to 5696.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("empty server address".into());
        }
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (h, after) = rest
                .split_once(']')
                .ok_or_else(|| format!("{s:?}: missing ']' after an IPv6 address"))?;
            match after.strip_prefix(':') {
                Some(p) => (h, Some(p)),
                None if after.is_empty() => (h, None),
                None => return Err(format!("{s:?}: unexpected text after ']'")),
            }
        } else if s.matches(':').count() == 1 {
            let (h, p) = s.split_once(':').unwrap_or((s, ""));
            (h, Some(p))
        } else {
            (s, None)
        };
        let port = match port {
            None => DEFAULT_PORT,
            Some(p) => p
                .parse()
                .map_err(|_| format!("{s:?}: port {p:?} is not a number from 1 to 65535"))?,
        };
        if host.is_empty() || port == 0 {
            return Err(format!(
                "{s:?}: needs a host name and a port from 1 to 65535"
            ));
        }
        Ok(Self {
            host: host.to_owned(),
            port,
        })
    }
}

impl fmt::Display for ServerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// The client's TLS identity, as read from its files. (Equality compares the bytes: the
/// daemon reconnects when a certificate, key or passphrase was replaced.)
#[derive(Clone, PartialEq, Eq)]
pub enum Identity {
    /// A PKCS#12 file (certificate, chain and key), opened with the passphrase.
    Pkcs12 {
        /// The file's bytes.
        der: Vec<u8>,
        /// Its passphrase.
        passphrase: Zeroizing<String>,
    },
    /// A PEM certificate (optionally followed by its chain) and a PEM private key, which may
    /// be encrypted (PKCS#8 `ENCRYPTED PRIVATE KEY` or legacy `Proc-Type: 4,ENCRYPTED`).
    Pem {
        /// The certificate chain, leaf first.
        cert_pem: Vec<u8>,
        /// The private key.
        key_pem: Zeroizing<Vec<u8>>,
        /// The passphrase for an encrypted key.
        passphrase: Option<Zeroizing<String>>,
    },
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Pkcs12 { der, .. } => {
                write!(f, "Pkcs12({} bytes, passphrase redacted)", der.len())
            }
            Self::Pem { passphrase, .. } => write!(
                f,
                "Pem(key redacted, {})",
                if passphrase.is_some() {
                    "passphrase redacted"
                } else {
                    "no passphrase"
                }
            ),
        }
    }
}

/// Which protocol version to speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionChoice {
    /// Discover Versions, falling back to 1.0 for servers that do not know it.
    Auto,
    /// Always this version, with no negotiation (for servers that mishandle it).
    Fixed(ProtocolVersion),
}

/// Everything the client needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// Servers in order of preference; the next is tried when one cannot be reached.
    pub servers: Vec<ServerAddr>,
    /// PEM of the root CA (or CAs) that signed the servers' certificates.
    pub ca_pem: Vec<u8>,
    /// The client certificate and key.
    pub identity: Identity,
    /// KMIP Username and Password Credential, sent on every request when set.
    pub username: Option<String>,
    /// The password for `username`.
    pub password: Option<Zeroizing<String>>,
    /// Protocol version policy.
    pub version: VersionChoice,
    /// Time allowed for TCP connect plus the TLS handshake, per address.
    pub connect_timeout: Duration,
    /// Time allowed for one request to be answered.
    pub request_timeout: Duration,
    /// How long a request keeps being retried while no server can take it for a reason
    /// that passes (connection refused or reset, closed without an answer, no answer in
    /// time, connect timed out: a server restarting, or crowded after a site-wide power
    /// cut), waiting 100 ms,
    /// 200 ms ... up to 2 s between rounds, each wait drawn between half and all of that
    /// so that many clients do not come back in step. Only what cannot take effect twice
    /// is retried after it was sent (Get, Locate, attributes, Query); anything else only
    /// when the connection failed before the request went out. Zero: one round.
    pub busy_retry: Duration,
}
