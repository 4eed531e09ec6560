//! The conversion's progress as the header records it: a `conversion` object in atrest's
//! token, and atrest's mandatory requirement in `config.requirements`, which makes stock
//! cryptsetup refuse to open (or change) a half-converted volume. The types are part of
//! the on-disk token and live with it in [`crate::luks2::conversion`]; validation checks
//! them against the device ([`crate::luks2::validate`]). What is here is how a step
//! commits one.

use super::auth::RecordKey;
use super::ConvertError;
use crate::backend::BlockBackend;
use crate::luks2::header::{self, Header};
pub use crate::luks2::token::{Conversion, Kind, Park, Parked, State, REQUIREMENT};

/// Records `state` (and the requirement) in `m`; `None` removes both.
pub(crate) use crate::luks2::token::set_conversion as set;

/// Commits `c` (tagged under `rk`, bound to this header) or, with `None`, the end of the
/// conversion: one header write, which syncs the device first, so everything the new
/// state counts is durable before the state is.
pub(crate) fn commit(
    dev: &dyn BlockBackend,
    h: &mut Header,
    c: Option<&Conversion>,
    rk: &RecordKey,
) -> Result<(), ConvertError> {
    match c {
        Some(c) => {
            // The tag is computed over the header as a reader will find it, this state in
            // place with its `mac` empty.
            let mut s = State::untagged(c.clone());
            set(&mut h.metadata, Some(&s));
            s.mac = rk.tag_state(h, c)?;
            set(&mut h.metadata, Some(&s));
        }
        None => set(&mut h.metadata, None),
    }
    header::write(dev, h)?;
    Ok(())
}
