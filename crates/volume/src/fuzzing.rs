//! Properties checked by the cargo-fuzz target `luks2_header` and, on fixed inputs, by the
//! test suite: a device image of any content must never make header parsing panic.

use crate::backend::MemBackend;
use crate::luks2::header;

/// Reads `data` as a device: parse the header, and if it parses, derive the status and
/// re-read it. Errors are fine; panics are not.
pub fn luks2_header(data: &[u8]) {
    let dev = MemBackend::from_bytes(data.to_vec());
    if header::read(&dev).is_ok() {
        let _ = crate::volume::status(&dev);
    }
}
