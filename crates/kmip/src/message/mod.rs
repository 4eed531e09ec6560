//! Typed KMIP request and response messages.
//!
//! A message is read from a fully decoded [`Item`](crate::ttlv::Item) tree and written back
//! to one. Reading is lenient: fields are found by tag, unknown fields in a payload are
//! kept in [`RequestBatchItem::extra`] / [`ResponseBatchItem::extra`], an operation this
//! model does not type keeps its payload as items. Writing is strict: fields in the order
//! the specification gives, Batch Count computed from the batch, attributes in the
//! encoding of the header's protocol version (1.x Template-Attribute or 2.x Attributes).

mod attribute;
pub(crate) mod fields;
mod frame;
mod header;
mod object;
pub mod op;
mod payload;
mod request;
mod response;

pub use attribute::{Attribute, AttributeName, Attributes};
pub use header::{Credential, ProtocolVersion, RequestHeader, ResponseHeader};
pub use object::{KeyBlock, KeyMaterial, KeyUnavailable, KeyValue, ManagedObject};
pub use payload::{RequestPayload, ResponsePayload};
pub use request::{RequestBatchItem, RequestMessage};
pub use response::{ResponseBatchItem, ResponseMessage};
