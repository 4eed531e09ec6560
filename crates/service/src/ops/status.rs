//! `status`: the header's facts, no key needed and no lock taken (it works while a volume
//! is served). A device with no header but a conversion's park record says what to run.

use volume::convert::{Devices, Found};
use volume::volume::Status;

use crate::device::{open_for_reading, Location};
use crate::error::ServiceError;
use crate::refusal::Refusal;

/// Any LUKS2 header at `loc` described, atrest's or not (`volume::describe`): for a
/// volume that [`status`] does not take.
pub fn describe(loc: &Location) -> Result<volume::describe::Luks2View, ServiceError> {
    let (data, header) = open_for_reading(loc)?;
    let view = match &header {
        Some(h) => volume::describe::describe(h, &data, true),
        None => volume::describe::describe(&data, &data, false),
    };
    Ok(view?)
}

/// The facts of the volume at `loc`.
pub fn status(loc: &Location) -> Result<Status, ServiceError> {
    let (data, header) = open_for_reading(loc)?;
    let result = match &header {
        Some(h) => volume::volume::status_detached(h, &data),
        None => volume::volume::status(&data),
    };
    result.map_err(|e| {
        // No header, but maybe a conversion's park record: say what to run.
        if header.is_none() {
            if let Ok(Found::InProgress(p)) = volume::convert::inspect(Devices::attached(&data)) {
                return Refusal::InterruptedWithoutHeader {
                    path: loc.path.clone(),
                    kind: p.kind,
                    key_uid: p.key_uid,
                }
                .into();
            }
        }
        e.into()
    })
}
