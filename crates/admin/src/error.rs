//! What can stop the page from starting, or a settings change from being saved.

use std::path::PathBuf;

/// A failure of the admin page, naming what to fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// `[web] listen` is set but no admin password is.
    #[error("no admin password is set: run `atrest admin set-password --config {}`", config.display())]
    NoPassword {
        /// The configuration file.
        config: PathBuf,
    },
    /// The address cannot be listened on.
    #[error("cannot listen on {addr}: {error}")]
    Listen {
        /// `[web] listen`.
        addr: std::net::SocketAddr,
        /// Why.
        error: std::io::Error,
    },
    /// A file of the page's own (its certificate, a saved setting) cannot be read or
    /// written.
    #[error("{what} {}: {error}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The certificate or key is not usable.
    #[error("the web page's {what}: {why}")]
    Certificate {
        /// Which part.
        what: &'static str,
        /// Why.
        why: String,
    },
    /// A configuration file problem (trust, syntax).
    #[error(transparent)]
    Config(#[from] service::config::ConfigError),
    /// The password could not be hashed.
    #[error("hashing the password: {0}")]
    Hash(String),
}

impl From<openssl::error::ErrorStack> for AdminError {
    fn from(e: openssl::error::ErrorStack) -> Self {
        Self::Certificate {
            what: "TLS setup",
            why: e.to_string(),
        }
    }
}
