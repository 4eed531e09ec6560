//! `format`: a new, empty volume keyed from KMIP, on a device that holds nothing worth
//! keeping (or `force`). The key is created only after the device and its geometry are
//! checked, and removed again if writing the header fails.

use volume::volume::{FormatOptions, Status};

use super::convert::KeySpec;
use crate::device::{Device, Location};
use crate::error::ServiceError;
use crate::keys::KeyManager;
use crate::refusal::Refusal;

/// `format`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct FormatRequest {
    /// The device (a detached header is not offered by `format`).
    pub location: Location,
    /// How to key it.
    pub key: KeySpec,
    /// Destroy what the device holds.
    pub force: bool,
}

/// What `format` made.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FormatReport {
    /// The device.
    pub device: std::path::PathBuf,
    /// The new header's facts.
    pub status: Status,
}

/// Formats the device of `req`.
pub fn format(kms: &mut KeyManager, req: &FormatRequest) -> Result<FormatReport, ServiceError> {
    req.key.check()?;
    let loc = &req.location;
    // The same lock as the conversions take: a format must never race one.
    let dev = Device::open(loc, false)?;
    let io = |error| ServiceError::Io {
        what: "reading",
        path: loc.path.clone(),
        error,
    };
    if let Some(what) = volume::probe::existing_content(dev.data.as_ref()).map_err(io)? {
        if !req.force {
            return Err(Refusal::WouldDestroyData {
                path: loc.path.clone(),
                what: what.to_string(),
            }
            .into());
        }
    }
    // The geometry is checked before a key is created for it.
    let len = volume::backend::BlockBackend::len(dev.data.as_ref()).map_err(io)?;
    let d = volume::layout::DATA_OFFSET;
    if len <= d || !(len - d).is_multiple_of(u64::from(req.key.sector_size)) {
        return Err(Refusal::TooSmall {
            path: loc.path.clone(),
            len,
            header_area: d,
            sector: req.key.sector_size,
        }
        .into());
    }
    let key = kms.create(&req.key.name_for(&dev))?;
    let opts = FormatOptions {
        mode: req.key.mode,
        volume_key_len: req.key.cipher.key_len(),
        sector_size: req.key.sector_size,
        key_uid: key.uid.clone(),
        server_hint: key.server.clone(),
        data_size: None,
        detached: false,
    };
    if let Err(e) = volume::volume::format(dev.data.as_ref(), &key.secret, &opts) {
        return Err(kms.discard(&key.uid, e.into()));
    }
    Ok(FormatReport {
        device: loc.path.clone(),
        status: dev.status()?,
    })
}
