//! Create and Register: how a new object comes to be.
//!
//! Both end in the same record (the client's attributes checked, the server's own added,
//! the object sealed), so they share [`new_object`]; they differ only in where the key
//! comes from. Create makes only AES and HMAC keys because a symmetric key is all atrest
//! asks for; anything else may still be registered and kept as sent.

use kmip::enums::{CryptographicAlgorithm, KeyFormatType, ObjectType, ResultReason, State};
use kmip::message::op::{CreateRequest, CreateResponse, RegisterRequest, RegisterResponse};
use kmip::message::{Attribute, Attributes, KeyBlock, KeyMaterial, KeyValue, ManagedObject};
use kmip::ttlv::{Item, Tag, Value};
use zeroize::Zeroizing;

use super::attributes::{multi_valued, server_managed};
use super::{fail, now, store_failed, OpError};
use crate::store::{Record, Store};

/// Create: a new random key of `who`, stored before the answer.
pub(super) fn create(
    store: &mut Store,
    who: &str,
    c: &CreateRequest,
) -> Result<CreateResponse, OpError> {
    let rec = new_key(store, who, c)?;
    let id = rec.uid.clone();
    store.put(rec).map_err(store_failed)?;
    Ok(CreateResponse {
        object_type: c.object_type,
        unique_identifier: id,
        attributes: None,
    })
}

/// Register: the client's object, kept for `who`, stored before the answer.
pub(super) fn register(
    store: &mut Store,
    who: &str,
    r: &RegisterRequest,
) -> Result<RegisterResponse, OpError> {
    let rec = registered(store, who, r)?;
    let id = rec.uid.clone();
    store.put(rec).map_err(store_failed)?;
    Ok(RegisterResponse {
        unique_identifier: id,
        attributes: None,
    })
}

/// The attributes a client may set at creation, plus the ones the server sets.
fn initial_attributes(
    requested: &Attributes,
    object_type: ObjectType,
) -> Result<Attributes, OpError> {
    let mut list = Vec::new();
    for a in &requested.list {
        if let Some(t) = a.tag() {
            if server_managed(t) {
                return Err(fail(
                    ResultReason::INVALID_FIELD,
                    format!("{t} is set by the server"),
                ));
            }
            if !multi_valued(&a.name) && list.iter().any(|b: &Attribute| b.name == a.name) {
                return Err(fail(
                    ResultReason::INVALID_FIELD,
                    format!("{t} given twice"),
                ));
            }
        }
        let mut a = a.clone();
        a.index = None;
        list.push(a);
    }
    let t = now();
    let active = requested
        .get(Tag::ACTIVATION_DATE)
        .is_some_and(|a| matches!(a.value, Value::DateTime(d) if d <= t));
    let state = if active {
        State::ACTIVE
    } else {
        State::PRE_ACTIVE
    };
    list.push(Attribute::new(
        Tag::OBJECT_TYPE,
        Value::Enumeration(object_type.0),
    ));
    list.push(Attribute::new(Tag::STATE, Value::Enumeration(state.0)));
    list.push(Attribute::new(Tag::INITIAL_DATE, Value::DateTime(t)));
    list.push(Attribute::new(Tag::LAST_CHANGE_DATE, Value::DateTime(t)));
    Ok(Attributes::new(list))
}

/// The record of a new object: the requested attributes plus the server's (identifier,
/// type, state, dates, and a Digest for a symmetric key), the object sealed.
fn new_object(
    store: &Store,
    who: &str,
    object_type: ObjectType,
    requested: &Attributes,
    object: &ManagedObject,
) -> Result<Record, OpError> {
    let mut attributes = initial_attributes(requested, object_type)?;
    if let ManagedObject::SymmetricKey(kb) = object {
        if let Ok(k) = kb.symmetric_key() {
            attributes.list.push(digest(k));
        }
    }
    let mut rec = store
        .new_record(who, object_type, Attributes::default(), &object.to_item())
        .map_err(store_failed)?;
    attributes.list.insert(
        0,
        Attribute::new(
            Tag::UNIQUE_IDENTIFIER,
            Value::TextString(rec.uid.clone().into()),
        ),
    );
    rec.attributes = attributes;
    Ok(rec)
}

/// The Digest attribute of a key: SHA-256 over the Raw key bytes.
fn digest(key: &[u8]) -> Attribute {
    let d = openssl::sha::sha256(key);
    Attribute::new(
        Tag::DIGEST,
        Value::Structure(vec![
            Item::enumeration(Tag::HASHING_ALGORITHM, 6), // SHA-256
            Item::bytes(Tag::DIGEST_VALUE, d.to_vec()),
            Item::enumeration(Tag::KEY_FORMAT_TYPE, KeyFormatType::RAW.0),
        ]),
    )
}

fn new_key(store: &Store, who: &str, c: &CreateRequest) -> Result<Record, OpError> {
    if c.object_type != ObjectType::SYMMETRIC_KEY {
        return Err(fail(
            ResultReason::INVALID_FIELD,
            format!("Create makes symmetric keys, not {}", c.object_type),
        ));
    }
    let alg = c
        .attributes
        .get(Tag::CRYPTOGRAPHIC_ALGORITHM)
        .and_then(Attribute::as_enumeration)
        .map(CryptographicAlgorithm)
        .ok_or_else(|| {
            fail(
                ResultReason::MISSING_DATA,
                "Cryptographic Algorithm is required",
            )
        })?;
    let bits = match c
        .attributes
        .get(Tag::CRYPTOGRAPHIC_LENGTH)
        .map(|a| &a.value)
    {
        Some(Value::Integer(b)) => *b,
        _ => {
            return Err(fail(
                ResultReason::MISSING_DATA,
                "Cryptographic Length is required",
            ))
        }
    };
    let ok_len = match alg {
        CryptographicAlgorithm::AES => [128, 192, 256].contains(&bits),
        a if a.name().is_some_and(|n| n.starts_with("HMAC")) => {
            (8..=4096).contains(&bits) && bits % 8 == 0
        }
        _ => {
            return Err(fail(
                ResultReason::INVALID_FIELD,
                format!("this server creates AES and HMAC keys, not {alg}"),
            ))
        }
    };
    if !ok_len {
        return Err(fail(
            ResultReason::INVALID_FIELD,
            format!("{bits} bits is not a valid length for {alg}"),
        ));
    }
    let mut key = Zeroizing::new(vec![0u8; (bits / 8) as usize]);
    openssl::rand::rand_bytes(&mut key)
        .map_err(|_| fail(ResultReason::CRYPTOGRAPHIC_FAILURE, "no randomness"))?;
    let kb = KeyBlock {
        format: KeyFormatType::RAW,
        compression: None,
        value: KeyValue::Plain {
            material: KeyMaterial::Bytes(key),
            attributes: Vec::new(),
        },
        algorithm: Some(alg),
        length: Some(bits),
        wrapping_data: None,
    };
    new_object(
        store,
        who,
        c.object_type,
        &c.attributes,
        &ManagedObject::SymmetricKey(kb),
    )
}

fn registered(store: &Store, who: &str, r: &RegisterRequest) -> Result<Record, OpError> {
    let mut requested = r.attributes.clone();
    if let ManagedObject::SymmetricKey(kb) = &r.object {
        if kb.symmetric_key().is_err() {
            return Err(fail(ResultReason::INVALID_FIELD, "a registered symmetric key must be in Raw or Transparent Symmetric Key format, unwrapped"));
        }
        for (t, v) in [
            (
                Tag::CRYPTOGRAPHIC_ALGORITHM,
                kb.algorithm.map(|a| Value::Enumeration(a.0)),
            ),
            (Tag::CRYPTOGRAPHIC_LENGTH, kb.length.map(Value::Integer)),
        ] {
            if let (Some(v), None) = (v, requested.get(t)) {
                requested.list.push(Attribute::new(t, v));
            }
        }
    }
    new_object(store, who, r.object_type, &requested, &r.object)
}

#[cfg(test)]
mod tests {
    use kmip::enums::{CryptographicAlgorithm, ObjectType, ResultReason, State};
    use kmip::message::op::{CreateRequest, GetRequest, RegisterRequest};
    use kmip::message::{Attribute, Attributes, KeyBlock, KeyValue, ManagedObject};
    use kmip::ttlv::{Item, Tag, Value};
    use zeroize::Zeroizing;

    use super::super::get;
    use super::super::testing::{create_aes, failure, name, record, state, store, ALICE};
    use super::*;

    fn key_bytes(s: &Store, id: &str) -> Vec<u8> {
        match get::get(s, ALICE, id, &GetRequest::default())
            .unwrap()
            .object
        {
            ManagedObject::SymmetricKey(kb) => kb.symmetric_key().unwrap().to_vec(),
            other => panic!("not a key: {other:?}"),
        }
    }

    fn value(s: &Store, id: &str, t: Tag) -> Option<Value> {
        record(s, id).attributes.get(t).map(|a| a.value.clone())
    }

    #[test]
    fn create_makes_a_fresh_pre_active_key_with_the_servers_attributes() {
        let (_t, mut s) = store();
        let a = create(&mut s, ALICE, &create_aes(256, vec![name("a")])).unwrap();
        let b = create(&mut s, ALICE, &create_aes(128, vec![name("b")])).unwrap();
        assert_eq!(a.object_type, ObjectType::SYMMETRIC_KEY);
        let (a, b) = (a.unique_identifier, b.unique_identifier);
        assert_ne!(a, b);
        assert_eq!(state(&s, &a), State::PRE_ACTIVE);
        assert_eq!(record(&s, &a).owner, ALICE);
        let first = &record(&s, &a).attributes.list[0];
        assert_eq!(
            first,
            &Attribute::new(Tag::UNIQUE_IDENTIFIER, Value::TextString(a.clone().into()))
        );
        assert_eq!(
            value(&s, &a, Tag::OBJECT_TYPE),
            Some(Value::Enumeration(ObjectType::SYMMETRIC_KEY.0))
        );
        assert!(value(&s, &a, Tag::INITIAL_DATE).is_some());
        assert!(value(&s, &a, Tag::LAST_CHANGE_DATE).is_some());

        let (ka, kb) = (key_bytes(&s, &a), key_bytes(&s, &b));
        assert_eq!((ka.len(), kb.len()), (32, 16));
        assert_ne!(ka[..16], kb[..], "two keys share their bytes");
        let Some(Value::Structure(digest)) = value(&s, &a, Tag::DIGEST) else {
            panic!("no Digest");
        };
        let d = digest.iter().find(|i| i.tag == Tag::DIGEST_VALUE).unwrap();
        assert_eq!(
            d.value,
            Value::ByteString(openssl::sha::sha256(&ka).to_vec().into())
        );
    }

    #[test]
    fn an_activation_date_already_past_makes_the_key_active_at_once() {
        let (_t, mut s) = store();
        let past = Attribute::new(Tag::ACTIVATION_DATE, Value::DateTime(now() - 60));
        let future = Attribute::new(Tag::ACTIVATION_DATE, Value::DateTime(now() + 3600));
        let a = create(&mut s, ALICE, &create_aes(128, vec![past])).unwrap();
        let f = create(&mut s, ALICE, &create_aes(128, vec![future])).unwrap();
        assert_eq!(state(&s, &a.unique_identifier), State::ACTIVE);
        assert_eq!(state(&s, &f.unique_identifier), State::PRE_ACTIVE);
    }

    #[test]
    fn create_refuses_what_it_cannot_make_and_stores_nothing() {
        let (_t, mut s) = store();
        let refused = |s: &mut Store, c: CreateRequest| {
            let e = failure(create(s, ALICE, &c));
            (e.reason, e.message)
        };
        let mut secret = create_aes(128, vec![]);
        secret.object_type = ObjectType::SECRET_DATA;
        assert_eq!(
            refused(&mut s, secret),
            (
                ResultReason::INVALID_FIELD,
                "Create makes symmetric keys, not SecretData".into()
            )
        );
        let mut no_alg = create_aes(128, vec![]);
        no_alg.attributes.list.remove(0);
        assert_eq!(
            refused(&mut s, no_alg),
            (
                ResultReason::MISSING_DATA,
                "Cryptographic Algorithm is required".into()
            )
        );
        let mut no_len = create_aes(128, vec![]);
        no_len.attributes.list.remove(1);
        assert_eq!(
            refused(&mut s, no_len),
            (
                ResultReason::MISSING_DATA,
                "Cryptographic Length is required".into()
            )
        );
        assert_eq!(
            refused(&mut s, create_aes(100, vec![])),
            (
                ResultReason::INVALID_FIELD,
                "100 bits is not a valid length for AES".into()
            )
        );
        let mut des = create_aes(64, vec![]);
        des.attributes.list[0].value = Value::Enumeration(CryptographicAlgorithm::DES.0);
        assert_eq!(
            refused(&mut s, des),
            (
                ResultReason::INVALID_FIELD,
                "this server creates AES and HMAC keys, not DES".into()
            )
        );
        let state = Attribute::new(Tag::STATE, Value::Enumeration(State::ACTIVE.0));
        assert_eq!(
            refused(&mut s, create_aes(128, vec![state])),
            (
                ResultReason::INVALID_FIELD,
                "State is set by the server".into()
            )
        );
        let twice = Attribute::new(Tag::CRYPTOGRAPHIC_LENGTH, Value::Integer(128));
        assert_eq!(
            refused(&mut s, create_aes(128, vec![twice])),
            (
                ResultReason::INVALID_FIELD,
                "CryptographicLength given twice".into()
            )
        );
        assert_eq!(s.all().count(), 0);

        // HMAC keys: any whole number of bytes up to 4096 bits; two Names are fine.
        let mut hmac = create_aes(264, vec![name("m1"), name("m2")]);
        hmac.attributes.list[0].value = Value::Enumeration(CryptographicAlgorithm::HMAC_SHA256.0);
        let id = create(&mut s, ALICE, &hmac).unwrap().unique_identifier;
        assert_eq!(key_bytes(&s, &id).len(), 33);
        hmac.attributes.list[1].value = Value::Integer(12);
        assert_eq!(
            failure(create(&mut s, ALICE, &hmac)).reason,
            ResultReason::INVALID_FIELD
        );
        assert_eq!(s.all().count(), 1);
    }

    #[test]
    fn register_keeps_the_clients_key_and_takes_its_algorithm_and_length_from_the_block() {
        let (_t, mut s) = store();
        let bytes = vec![0x42u8; 16];
        let r = RegisterRequest {
            object_type: ObjectType::SYMMETRIC_KEY,
            attributes: Attributes::new(vec![name("mine")]),
            object: ManagedObject::SymmetricKey(KeyBlock::raw_aes(Zeroizing::new(bytes.clone()))),
        };
        let id = register(&mut s, ALICE, &r).unwrap().unique_identifier;
        assert_eq!(key_bytes(&s, &id), bytes);
        assert_eq!(state(&s, &id), State::PRE_ACTIVE);
        assert_eq!(
            value(&s, &id, Tag::CRYPTOGRAPHIC_ALGORITHM),
            Some(Value::Enumeration(CryptographicAlgorithm::AES.0))
        );
        assert_eq!(
            value(&s, &id, Tag::CRYPTOGRAPHIC_LENGTH),
            Some(Value::Integer(128))
        );

        let mut wrapped = KeyBlock::raw_aes(Zeroizing::new(bytes));
        wrapped.value = KeyValue::Wrapped(Zeroizing::new(vec![1; 24]));
        let r = RegisterRequest {
            object: ManagedObject::SymmetricKey(wrapped),
            ..r
        };
        let e = failure(register(&mut s, ALICE, &r));
        assert_eq!(e.reason, ResultReason::INVALID_FIELD);
        assert!(
            e.message.starts_with("a registered symmetric key must be"),
            "{}",
            e.message
        );

        // Other objects are kept as sent, without a Digest.
        let secret = Item::structure(Tag::SECRET_DATA, vec![]);
        let r = RegisterRequest {
            object_type: ObjectType::SECRET_DATA,
            attributes: Attributes::default(),
            object: ManagedObject::Other(secret.clone()),
        };
        let id = register(&mut s, ALICE, &r).unwrap().unique_identifier;
        assert_eq!(s.object(record(&s, &id)).unwrap(), Some(secret));
        assert!(value(&s, &id, Tag::DIGEST).is_none());
    }
}
