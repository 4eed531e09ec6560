//! `open`: a volume unlocked for use while it stays encrypted. The key is fetched by the
//! identifier in the header, proven against the header's digest, and kept only as a key
//! schedule in locked, never-dumped memory; the devices stay locked exclusively while the
//! volume is open, so no format, conversion or second open can touch them.

use std::sync::Arc;

use volume::backend::BlockBackend;
use volume::convert::{self, Found};
use volume::volume::{KeyMode, Status, Unlocked};

use crate::device::{Device, Location};
use crate::error::ServiceError;
use crate::keys::KeyManager;
use crate::refusal::{ForeignAction, Refusal};

/// An unlocked volume and the locked devices under it.
pub struct OpenVolume {
    /// Reads and writes plaintext.
    pub volume: Arc<Unlocked>,
    /// The header's facts.
    pub status: Status,
    /// The KMIP key's identifier, as the header records it.
    pub key_uid: String,
    /// Wrapped or direct.
    pub key_mode: KeyMode,
    /// What unlocking repaired (a damaged header copy), if anything.
    pub repaired: Option<String>,
    // Held for the locks; dropped last.
    _device: Device,
}

impl std::fmt::Debug for OpenVolume {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OpenVolume({}, key {})", self.status.uuid, self.key_uid)
    }
}

/// The key identifier of the finished atrest volume at `dev`, or why it cannot be opened.
pub fn key_of(dev: &Device) -> Result<(String, KeyMode), ServiceError> {
    let loc = &dev.location;
    match convert::inspect(dev.devices())? {
        Found::Volume { key_uid, key_mode } => Ok((key_uid, key_mode)),
        // The daemon finishes these itself; `open` sends the operator to do it.
        Found::InProgress(p) => Err(Refusal::ConversionInProgress {
            path: loc.path.clone(),
            kind: p.kind,
        }
        .into()),
        Found::Plain => Err(Refusal::NotAVolume {
            path: loc.path.clone(),
            in_header_file: loc.header.is_some(),
            action: "open",
        }
        .into()),
        Found::OtherLuks => Err(Refusal::ForeignLuks {
            path: loc.path.clone(),
            action: ForeignAction::Open,
        }
        .into()),
    }
}

/// Opens the volume at `loc` with its key from the configured KMIP servers.
pub fn open(kms: &mut KeyManager, loc: &Location) -> Result<OpenVolume, ServiceError> {
    let dev = Device::open(loc, false)?;
    let (key_uid, key_mode) = key_of(&dev)?;
    let secret = kms.fetch_usable(&key_uid)?;
    let volume = unlock(&dev, &secret)?;
    drop(secret);
    // Key setup left copies of round keys in the stack frames it used; write over them.
    secmem::wipe_stack();
    Ok(OpenVolume {
        repaired: volume.repaired().map(str::to_owned),
        volume: Arc::new(volume),
        status: dev.status()?,
        key_uid,
        key_mode,
        _device: dev,
    })
}

/// Unlocks `dev` with `secret` (checked against the header's digest first).
pub fn unlock(dev: &Device, secret: &[u8]) -> Result<Unlocked, ServiceError> {
    let data: Arc<dyn BlockBackend> = dev.data.clone();
    Ok(match &dev.header {
        Some(h) => volume::volume::unlock_detached(h, data, secret)?,
        None => volume::volume::unlock(data, secret)?,
    })
}
