//! Why a KMIP exchange failed, one variant per cause an operator can act on.
//!
//! "Save and Test" turns each into a step and a likely fix ([`ClientError::step`],
//! [`ClientError::hint`]); none carries a secret.

use std::time::Duration;

use crate::enums::{Operation, ResultReason};
use crate::error::{DecodeError, MessageError};
use crate::message::ProtocolVersion;

/// A failure of the client's configuration, found before any connection is made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The CA file holds no usable certificate.
    #[error("the CA certificate file holds no PEM certificate: {detail}")]
    BadCaCertificate {
        /// OpenSSL's words.
        detail: String,
    },
    /// The PKCS#12 file could not be opened with the passphrase.
    #[error("the PKCS#12 client certificate could not be opened with the configured passphrase (wrong passphrase, or not a PKCS#12 file)")]
    Pkcs12WrongPassphrase,
    /// The PKCS#12 file lacks a certificate or key.
    #[error("the PKCS#12 file has no {missing}")]
    Pkcs12Incomplete {
        /// What is missing.
        missing: &'static str,
    },
    /// The PEM certificate could not be read.
    #[error("the client certificate is not a PEM certificate: {detail}")]
    BadClientCertificate {
        /// OpenSSL's words.
        detail: String,
    },
    /// The private key is encrypted and no passphrase was configured.
    #[error("the client key is encrypted but no passphrase is configured")]
    KeyNeedsPassphrase,
    /// The private key could not be decrypted or read.
    #[error("the client key could not be opened with the configured passphrase (wrong passphrase, or not a PEM private key)")]
    KeyWrongPassphrase,
    /// The key does not belong to the certificate.
    #[error("the client key does not match the client certificate")]
    KeyMismatch,
    /// No server configured.
    #[error("no KMIP server is configured")]
    NoServers,
    /// OpenSSL refused the TLS settings.
    #[error("TLS setup failed: {detail}")]
    Tls {
        /// OpenSSL's words.
        detail: String,
    },
}

/// A failure talking to one server, or to all of them.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The client's own certificate, key or CA could not be loaded.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The host name does not resolve.
    #[error("{server}: the host name does not resolve: {source}")]
    Resolve {
        /// `host:port`.
        server: String,
        /// The resolver's error.
        source: std::io::Error,
    },
    /// Nothing accepts connections there.
    #[error("{server}: connection refused (nothing listens on that port)")]
    Refused {
        /// `host:port`.
        server: String,
    },
    /// No TCP connection within the connect timeout.
    #[error(
        "{server}: no TCP connection within {after:?} (host down, or a firewall drops the packets)"
    )]
    ConnectTimeout {
        /// `host:port`.
        server: String,
        /// The timeout.
        after: Duration,
    },
    /// Another socket error.
    #[error("{server}: {source}")]
    Io {
        /// `host:port`.
        server: String,
        /// The error.
        source: std::io::Error,
    },
    /// The server's certificate does not chain to the configured CA.
    #[error("{server}: the server's certificate is not trusted: {detail}")]
    ServerCertificateUntrusted {
        /// `host:port`.
        server: String,
        /// OpenSSL's verification result.
        detail: String,
    },
    /// The server's certificate has expired (or is not yet valid).
    #[error("{server}: the server's certificate is outside its validity period: {detail}")]
    ServerCertificateExpired {
        /// `host:port`.
        server: String,
        /// OpenSSL's verification result.
        detail: String,
    },
    /// The server's certificate is for another name.
    #[error("{server}: the server's certificate does not name {host}")]
    HostnameMismatch {
        /// `host:port`.
        server: String,
        /// The name we dialled.
        host: String,
    },
    /// The server refused our client certificate.
    #[error("{server}: the server rejected the client certificate (TLS alert: {alert})")]
    ClientCertificateRejected {
        /// `host:port`.
        server: String,
        /// The alert text.
        alert: String,
    },
    /// Another TLS failure (no common protocol version or cipher suite, garbage).
    #[error("{server}: TLS handshake failed: {detail}")]
    Tls {
        /// `host:port`.
        server: String,
        /// OpenSSL's words.
        detail: String,
    },
    /// The server accepted the connection but did not answer in time.
    #[error("{server}: no answer within {after:?} (the server accepted the connection but never replied: is it a KMIP server, and is it overloaded?)")]
    Timeout {
        /// `host:port`.
        server: String,
        /// The timeout.
        after: Duration,
    },
    /// The server closed the connection instead of answering.
    #[error("{server}: the server closed the connection without answering")]
    Closed {
        /// `host:port`.
        server: String,
    },
    /// The server's answer was not valid TTLV.
    #[error("{server}: the server's answer is not valid KMIP TTLV: {source}")]
    Decode {
        /// `host:port`.
        server: String,
        /// What was wrong.
        source: DecodeError,
    },
    /// The server's answer was TTLV but not the expected response.
    #[error("{server}: the server's answer is not a valid KMIP response: {source}")]
    Message {
        /// `host:port`.
        server: String,
        /// What was wrong.
        source: MessageError,
    },
    /// Well-formed but wrong: a batch of the wrong size, an answer to another operation.
    #[error("{server}: the server misbehaved: {detail}")]
    Misbehaved {
        /// `host:port`.
        server: String,
        /// What it did.
        detail: String,
    },
    /// The server speaks no version this client knows.
    #[error("{server}: the server speaks no KMIP version atrest knows (it offered {offered:?})")]
    NoCommonVersion {
        /// `host:port`.
        server: String,
        /// What it offered.
        offered: Vec<ProtocolVersion>,
    },
    /// The server answered the operation with a failure.
    #[error("{server}: {operation} failed: {reason}{}", message.as_deref().map(|m| format!(" ({m})")).unwrap_or_default())]
    Rejected {
        /// `host:port`.
        server: String,
        /// The operation.
        operation: Operation,
        /// Result Reason.
        reason: ResultReason,
        /// Result Message, the server's words.
        message: Option<String>,
    },
    /// Every configured server failed; each one's failure in order.
    #[error("no KMIP server could be used:{}", .0.iter().map(|e| format!("\n  - {e}")).collect::<String>())]
    AllServersFailed(Vec<ClientError>),
}

impl ClientError {
    /// True when another server might do better (the failure is about reaching this one).
    pub fn is_connection_failure(&self) -> bool {
        !matches!(
            self,
            Self::Identity(_) | Self::Rejected { .. } | Self::AllServersFailed(_)
        )
    }

    /// The step of "Save and Test" that failed.
    pub fn step(&self) -> &'static str {
        match self {
            Self::Identity(_) => "load client certificate",
            Self::Resolve { .. } => "resolve host name",
            Self::Refused { .. } | Self::ConnectTimeout { .. } | Self::Io { .. } => "TCP connect",
            Self::ServerCertificateUntrusted { .. }
            | Self::ServerCertificateExpired { .. }
            | Self::HostnameMismatch { .. } => "verify server certificate",
            Self::ClientCertificateRejected { .. } => "present client certificate",
            Self::Tls { .. } => "TLS handshake",
            Self::Timeout { .. } | Self::Closed { .. } => "KMIP request",
            Self::Decode { .. } | Self::Message { .. } | Self::Misbehaved { .. } => "KMIP response",
            Self::NoCommonVersion { .. } => "KMIP version negotiation",
            Self::Rejected { reason, .. }
                if *reason == ResultReason::AUTHENTICATION_NOT_SUCCESSFUL =>
            {
                "KMIP authentication"
            }
            Self::Rejected { .. } => "KMIP operation",
            Self::AllServersFailed(_) => "reach any server",
        }
    }

    /// The likely fix, in the operator's terms.
    pub fn hint(&self) -> String {
        match self {
            Self::Identity(IdentityError::Pkcs12WrongPassphrase | IdentityError::KeyWrongPassphrase) => {
                "check passphrase_file: it must hold the passphrase of the client certificate or key".into()
            }
            Self::Identity(IdentityError::KeyNeedsPassphrase) => {
                "set passphrase_file to the file holding the key's passphrase".into()
            }
            Self::Identity(IdentityError::KeyMismatch) => {
                "client_key must be the private key of client_cert".into()
            }
            Self::Identity(_) => "check the ca_cert, client_cert and client_key files".into(),
            Self::Resolve { .. } => "check the server name for typos and the appliance's DNS settings".into(),
            Self::Refused { .. } => "check the port (KMIP uses 5696) and that the KMIP service is running".into(),
            Self::ConnectTimeout { .. } => "check the address, routing and firewalls between the appliance and the server".into(),
            Self::Io { .. } => "check the network path to the server".into(),
            Self::ServerCertificateUntrusted { .. } => {
                "set ca_cert to the root CA certificate that signed the KMIP server's certificate".into()
            }
            Self::ServerCertificateExpired { .. } => {
                "the KMIP server's certificate must be renewed (or the appliance's clock is wrong)".into()
            }
            Self::HostnameMismatch { host, .. } => format!(
                "connect with a name the server's certificate carries, or have the certificate reissued with {host} in its subjectAltName"
            ),
            Self::ClientCertificateRejected { .. } => {
                "the server does not accept this client certificate: have it issued by a CA the KMIP server trusts, and registered there".into()
            }
            Self::Tls { .. } => "the server and atrest share no TLS version or cipher suite, or this is not a TLS service".into(),
            Self::Timeout { .. } => "check that the port is the KMIP server's, not another service's; raise timeout_secs if the server is slow".into(),
            Self::Closed { .. } => "the server dropped the request: look at its log for why (often an unknown client or a malformed request)".into(),
            Self::Decode { .. } | Self::Message { .. } | Self::Misbehaved { .. } => {
                "the server's reply is not KMIP as atrest understands it: check it is a KMIP server, or pin version in the configuration".into()
            }
            Self::NoCommonVersion { .. } => "set version = \"1.0\" (or another version the server lists) in the configuration".into(),
            Self::Rejected { reason, .. } if *reason == ResultReason::AUTHENTICATION_NOT_SUCCESSFUL => {
                "check username and password_file, and that the client certificate is registered on the server".into()
            }
            Self::Rejected { reason, .. } if *reason == ResultReason::PERMISSION_DENIED => {
                "the account may not do this: grant it on the KMIP server".into()
            }
            Self::Rejected { reason, .. } if *reason == ResultReason::ITEM_NOT_FOUND => {
                "the key does not exist on this server (wrong identifier, destroyed, or created on another server)".into()
            }
            Self::Rejected { .. } => "see the server's message".into(),
            Self::AllServersFailed(errors) => errors
                .first()
                .map(ClientError::hint)
                .unwrap_or_else(|| "configure at least one server".into()),
        }
    }
}
