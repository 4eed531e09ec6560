//! atrest's encrypted volumes.
//!
//! This crate owns what is on the disk: the LUKS2-compatible header (so stock `cryptsetup`
//! can read, check and open atrest volumes), the XTS-AES sector cipher of the data path,
//! and random-access reads and writes through it. It never talks to the network: the key
//! comes from the caller (who fetched it from KMIP), and is checked against the header's
//! digest before any sector is read or written.

#![deny(unsafe_code)]

pub mod backend;
pub mod bind;
pub mod convert;
pub mod describe;
/// The fuzz targets' properties, for `fuzz/` and the tests; not in a shipped build.
#[cfg(feature = "test-support")]
pub mod fuzzing;
pub mod layout;
pub mod luks2;
pub mod probe;
pub mod random;
pub mod range_lock;
mod rewrap;
pub mod text;
pub mod volume;
pub mod xts;
