//! The conversion's progress as the header records it: a `conversion` object in atrest's
//! token, and atrest's mandatory requirement in `config.requirements`, which makes stock
//! cryptsetup refuse to open (or change) a half-converted volume. The types are part of
//! the on-disk token and live with it in [`crate::luks2::token`]; validation checks them
//! against the device ([`crate::luks2::validate`]).

pub use crate::luks2::token::{Kind, Park, State, REQUIREMENT};

/// Records `state` (and the requirement) in `m`; `None` removes both.
pub(crate) use crate::luks2::token::set_conversion as set;
