//! What the handler's unit tests share: a store in a scratch folder, and requests built
//! the way a client would send them, so each test reads as the exchange it checks.

use kmip::enums::{CryptographicAlgorithm, NameType, ResultReason, State};
use kmip::message::op::CreateRequest;
use kmip::message::{Attribute, Attributes, ProtocolVersion};
use kmip::ttlv::{Item, Tag, Value};

use super::OpError;
use crate::store::{Record, Store};

/// A 1.x version (attributes by index, Permission Denied for refusals).
pub const V1: ProtocolVersion = ProtocolVersion::V1_4;
/// A 2.x version (attributes by value, the 2.x Result Reasons).
pub const V2: ProtocolVersion = ProtocolVersion::V2_1;
/// The client that owns the objects.
pub const ALICE: &str = "alice";
/// Another client, who must not see them.
pub const BOB: &str = "bob";

/// An empty store in a scratch folder that is removed when the guard drops.
pub fn store() -> (tempfile::TempDir, Store) {
    let t = tempfile::Builder::new()
        .prefix("atrest-handler-")
        .tempdir()
        .unwrap();
    let s = Store::open(&t.path().join("store")).unwrap();
    (t, s)
}

/// A Name attribute as clients send it.
pub fn name(text: &str) -> Attribute {
    Attribute::new(
        Tag::NAME,
        Value::Structure(vec![
            Item::text(Tag::NAME_VALUE, text),
            Item::enumeration(Tag::NAME_TYPE, NameType::UNINTERPRETED_TEXT_STRING.0),
        ]),
    )
}

/// A Create for an AES key of `bits`, with `extra` attributes.
pub fn create_aes(bits: i32, extra: Vec<Attribute>) -> CreateRequest {
    let mut list = vec![
        Attribute::new(
            Tag::CRYPTOGRAPHIC_ALGORITHM,
            Value::Enumeration(CryptographicAlgorithm::AES.0),
        ),
        Attribute::new(Tag::CRYPTOGRAPHIC_LENGTH, Value::Integer(bits)),
    ];
    list.extend(extra);
    CreateRequest {
        object_type: kmip::enums::ObjectType::SYMMETRIC_KEY,
        attributes: Attributes::new(list),
    }
}

/// A new AES-256 key of `who` named `label`; its identifier.
pub fn new_key(store: &mut Store, who: &str, label: &str) -> String {
    super::create::create(store, who, &create_aes(256, vec![name(label)]))
        .unwrap()
        .unique_identifier
}

/// The stored record `id`.
pub fn record<'a>(store: &'a Store, id: &str) -> &'a Record {
    store.get(id).unwrap()
}

/// The State of `id` as stored.
pub fn state(store: &Store, id: &str) -> State {
    record(store, id).state()
}

/// The failure of `r`, which must have failed.
pub fn failure<T: std::fmt::Debug>(r: Result<T, OpError>) -> OpError {
    r.expect_err("the operation should have been refused")
}

/// The Result Reason of `r`, which must have failed.
pub fn reason<T: std::fmt::Debug>(r: Result<T, OpError>) -> ResultReason {
    failure(r).reason
}
