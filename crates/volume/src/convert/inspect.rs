//! What a device holds, as far as conversion is concerned: plaintext, a finished volume,
//! another LUKS2 volume, or an unfinished conversion ([`Found`], [`Pending`]). Read only.
//! The answer comes from the validated header, or, when there is none, from the park
//! record at the device's end (encrypt before its header is written, decrypt after its
//! header is overwritten).

use super::disk::{io, read};
use super::state::{Conversion, Kind};
use super::{park, ConvertError, Devices, Found, Pending};
use crate::layout::DATA_OFFSET;
use crate::luks2::header::{self, Header};
use crate::luks2::validate::Layout;
use crate::luks2::Luks2Error;
use crate::volume::{read_valid, VolumeError};

/// The header of `d`, validated against its devices.
pub(crate) fn read_layout(d: Devices<'_>) -> Result<(Header, Layout), ConvertError> {
    let (r, l) = read_valid(d.header, d.data, d.is_detached())?;
    Ok((r.header, l))
}

/// Refuses to start anything on a volume that a conversion fences.
pub(crate) fn refuse_running(l: &Layout) -> Result<(), ConvertError> {
    match l.in_progress() {
        Some(Some(kind)) => Err(ConvertError::OtherInProgress { running: kind }),
        Some(None) => Err(VolumeError::ConversionInProgress { kind: None }.into()),
        None => Ok(()),
    }
}

/// What a validated header says.
fn found_in(l: &Layout) -> Found {
    let Some(t) = &l.token else {
        return Found::OtherLuks;
    };
    match t.conversion.as_ref().map(|s| &s.conversion) {
        None => Found::Volume {
            key_uid: t.key_uid.clone(),
            key_mode: t.key_mode,
        },
        Some(c) => Found::InProgress(Pending {
            kind: c.kind(),
            key_uid: t.key_uid.clone(),
            // The state's tag is verified under the volume's key (the new key's for a
            // rekey) before anything is written. A rekey whose every sector is under the
            // new key is proven by that key alone.
            needs_current: c.kind() != Kind::Rekey || c.done() < c.size(),
            new_key_uid: match c {
                Conversion::Rekey { new_key_uid, .. } => Some(new_key_uid.clone()),
                _ => None,
            },
            done: c.done(),
            size: c.size(),
        }),
    }
}

/// Reports what the devices hold.
pub fn inspect(d: Devices<'_>) -> Result<Found, ConvertError> {
    if d.is_detached() {
        // A detached header file with no valid copy: the data device was never touched
        // (data changes only after a header commit is durable), so it is plaintext. That
        // conclusion is drawn only from bytes actually read: an I/O error is an error, not
        // "no header", or a new encryption could overwrite a live header file.
        let len = d.header.len().map_err(io(0))?.min(DATA_OFFSET);
        let bytes = read(d.header, len, 0)?;
        let copy = crate::backend::MemBackend::from_bytes(bytes.to_vec());
        return match header::read(&copy) {
            Ok(_) => Ok(found_in(&read_layout(d)?.1)),
            Err(_) => Ok(Found::Plain),
        };
    }
    match header::read(d.header) {
        Ok(_) => Ok(found_in(&read_layout(d)?.1)),
        Err(e) => match park::read(d.data)? {
            Some(rec) => Ok(Found::InProgress(Pending {
                kind: rec.kind,
                key_uid: rec
                    .header
                    .as_ref()
                    .map(|p| p.key_uid.clone())
                    .or_else(|| rec.key_uid.clone())
                    .unwrap_or_default(),
                // The record's tag is verified under the key before anything is written
                // (and before encrypt's header exists the key is needed to write it).
                needs_current: true,
                new_key_uid: None,
                done: if rec.kind == Kind::Encrypt {
                    0
                } else {
                    rec.size
                },
                size: rec.size,
            })),
            None if matches!(e, Luks2Error::NotLuks { .. }) => Ok(Found::Plain),
            None => Err(e.into()),
        },
    }
}
