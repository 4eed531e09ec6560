//! TTLV, the KMIP wire encoding, and its OASIS XML form.
//!
//! [`codec`] turns bytes into an [`Item`] tree and back; [`xml`] does the same for the XML
//! form of the test cases; [`limits`] bounds what a peer can make the decoder allocate.

pub mod codec;
mod item;
pub mod limits;
mod tag;
pub mod xml;

pub use codec::{decode, decode_with, encode, encode_into, message_len};
pub use item::{Item, ItemType, Value};
pub use limits::Limits;
pub use tag::Tag;
