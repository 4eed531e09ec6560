//! The roads to an unlocked volume's plaintext: NBD (any NBD client, anywhere), FUSE (the
//! volume as one file, for loop devices where neither the nbd module nor device-mapper
//! exists), and dm-crypt through stock `cryptsetup` (the kernel's own mapping, at full
//! speed, where device-mapper exists). Each can be closed, after which I/O fails instead
//! of silently serving.

pub mod dm;
pub mod fuse;
pub mod nbd;

use std::sync::Arc;

use volume::volume::Unlocked;

use crate::config::VolumeConfig;
use crate::error::ServiceError;

/// A running export of an unlocked volume: what it is, where, and how to take it back.
pub trait RunningExport: Send {
    /// `nbd`, `fuse`.
    fn kind(&self) -> &'static str;
    /// Where clients reach it.
    fn at(&self) -> String;
    /// Closes it; its users' I/O fails from then on. Called once.
    fn close(&mut self) -> Result<(), ServiceError>;
}

/// Starts the exports a volume's table asks for over its unlocked volume (dm-crypt is not
/// one of them: the kernel opens it with the key, before any unlock here). The daemon's
/// worker starts its exports through this, so that its state machine can be tested with a
/// double (exports that will not close, or not start).
pub trait Exporter: Send + Sync {
    /// The exports of `cfg` over `vol`, in the order they are to be closed.
    fn start(
        &self,
        vol: Arc<Unlocked>,
        cfg: &VolumeConfig,
    ) -> Result<Vec<Box<dyn RunningExport>>, ServiceError>;
}

/// NBD and FUSE, as the configuration asks.
pub struct Exports;

impl Exporter for Exports {
    fn start(
        &self,
        vol: Arc<Unlocked>,
        cfg: &VolumeConfig,
    ) -> Result<Vec<Box<dyn RunningExport>>, ServiceError> {
        let mut out: Vec<Box<dyn RunningExport>> = Vec::new();
        if let Some(addr) = &cfg.nbd {
            out.push(Box::new(nbd::Running(Some(nbd::serve(
                vol.clone(),
                addr,
                &cfg.name,
                cfg.discard,
            )?))));
        }
        if let Some(dir) = &cfg.fuse {
            // Those started so far are dropped (closed) if this one fails.
            out.push(Box::new(fuse::mount(vol, dir, &cfg.name)?));
        }
        Ok(out)
    }
}

/// Why an export could not be made or closed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// A command (cryptsetup, dmsetup) failed; its own words.
    #[error("{command}: {why}")]
    Command {
        /// The command line (no secret is ever on it: the key goes on a pipe).
        command: String,
        /// Its standard error.
        why: String,
    },
    /// This machine has no device-mapper.
    #[error("device-mapper is not available on this machine ({0}); use --nbd or --fuse instead")]
    NoDeviceMapper(String),
    /// A busy dm-crypt mapping was forced (its users' I/O now fails).
    #[error("{busy}: forced instead (I/O through /dev/mapper/{name} now fails; the key is out of the kernel)")]
    DmForced {
        /// Why the plain close failed.
        busy: String,
        /// The mapping.
        name: String,
    },
    /// A busy dm-crypt mapping could not even be forced.
    #[error("{busy}; forcing it failed too: {forced}; the mapping and its key stay in the kernel")]
    DmStuck {
        /// Why the plain close failed.
        busy: String,
        /// Why forcing failed.
        forced: String,
    },
    /// Not a device-mapper name.
    #[error("{0:?} is not a device-mapper name (1 to 127 characters, no '/')")]
    DmName(String),
    /// `unix:` without a path.
    #[error("unix: needs a socket path (unix:/run/atrest/vol.sock)")]
    NbdNoSocketPath,
    /// Not an NBD address.
    #[error("{0:?} is not an NBD address: give unix:PATH or a loopback address with a port (127.0.0.1:10809)")]
    NbdAddress(String),
    /// Not a loopback address.
    #[error("{0} is not a loopback address: NBD carries the plaintext without TLS, so atrest serves it only on a Unix socket or on loopback")]
    NbdNotLoopback(std::net::SocketAddr),
    /// The NBD server could not listen.
    #[error("NBD: {0}")]
    NbdListen(String),
    /// The export could not be added.
    #[error("NBD export {name:?}: {why}")]
    NbdExport {
        /// The export's name.
        name: String,
        /// Why.
        why: String,
    },
}
