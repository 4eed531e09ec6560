//! What can go wrong in a service operation, by cause, each naming what failed and (through
//! [`ServiceError::hint`]) what the operator can do about it. The causes' own messages are
//! part of each variant's text, so callers print one line and lose nothing.

use std::path::PathBuf;

use kmip::client::{ClientError, IdentityError};
use volume::backend::OpenError;
use volume::convert::ConvertError;
use volume::volume::VolumeError;

use crate::config::ConfigError;

/// A failed service operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// The configuration or a file it names.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The client certificate or key could not be loaded.
    #[error("loading the client certificate: {0}")]
    Identity(IdentityError),
    /// A KMIP request failed.
    #[error("{doing}: {error}")]
    Kmip {
        /// What atrest was doing ("fetching the volume's key 42").
        doing: String,
        /// The client's error (in the text above, so not a `source`).
        error: ClientError,
    },
    /// A key was created for an operation that then failed; it was cleaned up (or not).
    #[error("{error}; {cleanup}")]
    KeyDiscarded {
        /// Why the operation failed.
        error: Box<ServiceError>,
        /// What became of the unused key.
        cleanup: String,
    },
    /// The device could not be opened or locked.
    #[error(transparent)]
    Device(#[from] OpenError),
    /// The volume (its header or the key).
    #[error(transparent)]
    Volume(#[from] VolumeError),
    /// A conversion.
    #[error(transparent)]
    Convert(#[from] ConvertError),
    /// The key's state on the server is one the key policy does not use.
    #[error(
        "the KMIP key {uid} is {state} on the key server, and {why}: nothing was read or written"
    )]
    KeyNotUsable {
        /// The key (shown safely).
        uid: String,
        /// Its state, in words.
        state: String,
        /// Why that state is refused.
        why: &'static str,
    },
    /// The operation does not apply to what it was given; nothing was touched.
    #[error(transparent)]
    Refused(#[from] crate::refusal::Refusal),
    /// An export could not be made or closed.
    #[error(transparent)]
    Export(#[from] crate::exports::ExportError),
    /// A runtime path (audit log, socket, mount point) is not one the daemon may use.
    #[error(transparent)]
    RuntimePath(#[from] crate::runtime_path::RuntimePathError),
    /// A file or device atrest had to read or write.
    #[error("{what} {}: {error}", path.display())]
    Io {
        /// What it is.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
}

impl ServiceError {
    /// A KMIP error while `doing` something.
    pub fn kmip(doing: impl Into<String>, error: ClientError) -> Self {
        Self::Kmip {
            doing: doing.into(),
            error,
        }
    }

    /// What the operator can do, when the message does not already say it.
    pub fn hint(&self) -> Option<String> {
        match self {
            Self::Config(e) => e.hint().map(str::to_owned),
            Self::Identity(e) => Some(ClientError::Identity(e.clone()).hint()),
            Self::Kmip { error, .. } => Some(error.hint()),
            Self::KeyDiscarded { error, .. } => error.hint(),
            _ => None,
        }
    }
}

impl From<IdentityError> for ServiceError {
    fn from(e: IdentityError) -> Self {
        Self::Identity(e)
    }
}
