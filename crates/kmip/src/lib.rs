//! The KMIP wire protocol for atrest.
//!
//! atrest keeps volume keys on the organisation's key manager and speaks to it in KMIP
//! (OASIS Key Management Interoperability Protocol, versions 1.0 to 2.1). This crate owns
//! everything about that protocol that is not a socket: the TTLV binary codec and the OASIS
//! XML test-case form ([`ttlv`]), the names of tags and enumerations ([`registry`]), and the
//! typed request and response messages a data-at-rest client and a small server exchange
//! ([`message`]). It never touches disks; the TLS client that carries these messages lives
//! beside it in [`client`], and the development server in the `kms` crate.
//!
//! Decoding is strict about framing (lengths, padding, types) so that a hostile peer cannot
//! make us misread or over-allocate, and lenient about content (unknown tags in a response
//! are kept), because key managers in the field add vendor fields freely.

#![forbid(unsafe_code)]

pub mod client;
pub mod enums;
pub mod error;
/// The fuzz targets' properties, for `fuzz/` and the tests; not in a shipped build.
#[cfg(feature = "test-support")]
pub mod fuzzing;
pub mod message;
pub mod registry;
pub mod ttlv;

pub use error::{DecodeError, MessageError, XmlError};
