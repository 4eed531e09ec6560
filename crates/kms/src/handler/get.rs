//! Get: the only operation that hands key material out.
//!
//! Kept apart because it is the one place the sealed object is opened and converted, so
//! what leaves the server (formats offered, wrapping and compression refused) can be read
//! in one screen.

use kmip::enums::{KeyFormatType, ObjectType, ResultReason};
use kmip::message::op::{GetRequest, GetResponse};
use kmip::message::{KeyMaterial, KeyValue, ManagedObject};
use kmip::ttlv::Item;

use super::{fail, owned, store_failed, OpError};
use crate::store::Store;

/// Get: object `id` of `who`, unless it has been destroyed, in the format asked for.
pub(super) fn get(
    store: &Store,
    who: &str,
    id: &str,
    g: &GetRequest,
) -> Result<GetResponse, OpError> {
    let rec = owned(store, who, id)?;
    let object = store.object(rec).map_err(store_failed)?.ok_or_else(|| {
        fail(
            ResultReason::ITEM_NOT_FOUND,
            format!("object {id} has been destroyed"),
        )
    })?;
    let object = convert_format(rec.object_type, object, g)?;
    Ok(GetResponse {
        object_type: rec.object_type,
        unique_identifier: id.to_owned(),
        object,
    })
}

/// Returns the object in the format the Get asked for (Raw or Transparent Symmetric Key).
fn convert_format(
    object_type: ObjectType,
    object: Item,
    g: &GetRequest,
) -> Result<ManagedObject, OpError> {
    if g.key_wrapping_specification.is_some() || g.key_wrap_type.is_some() {
        return Err(fail(
            ResultReason::FEATURE_NOT_SUPPORTED,
            "this server does not wrap keys on Get",
        ));
    }
    if g.key_compression_type.is_some() {
        return Err(fail(
            ResultReason::KEY_COMPRESSION_TYPE_NOT_SUPPORTED,
            "keys are not compressed",
        ));
    }
    let mut m = ManagedObject::from_item(object_type, &object)
        .map_err(|e| fail(ResultReason::GENERAL_FAILURE, e.to_string()))?;
    if let (Some(want), ManagedObject::SymmetricKey(kb)) = (g.key_format_type, &mut m) {
        let bytes = kb
            .symmetric_key()
            .map_err(|e| fail(ResultReason::GENERAL_FAILURE, e.to_string()))?
            .clone();
        kb.value = match want {
            KeyFormatType::RAW => KeyValue::Plain {
                material: KeyMaterial::Bytes(bytes),
                attributes: Vec::new(),
            },
            KeyFormatType::TRANSPARENT_SYMMETRIC_KEY => KeyValue::Plain {
                material: KeyMaterial::TransparentSymmetric(bytes),
                attributes: Vec::new(),
            },
            other => {
                return Err(fail(
                    ResultReason::KEY_FORMAT_TYPE_NOT_SUPPORTED,
                    format!(
                    "symmetric keys are returned as Raw or TransparentSymmetricKey, not {other}"
                ),
                ))
            }
        };
        kb.format = want;
    } else if g.key_format_type.is_some() {
        return Err(fail(
            ResultReason::KEY_FORMAT_TYPE_NOT_SUPPORTED,
            "only symmetric keys can be converted",
        ));
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use kmip::enums::{KeyFormatType, ObjectType, ResultReason};
    use kmip::message::op::{GetRequest, RegisterRequest};
    use kmip::message::{Attributes, KeyMaterial, KeyValue, ManagedObject};
    use kmip::ttlv::{Item, Tag};

    use super::super::create;
    use super::super::testing::{failure, new_key, store, ALICE};
    use super::*;

    fn ask(id: &str) -> GetRequest {
        GetRequest {
            unique_identifier: Some(id.to_owned()),
            ..Default::default()
        }
    }

    fn material(r: GetResponse) -> (KeyFormatType, KeyMaterial) {
        match r.object {
            ManagedObject::SymmetricKey(kb) => match kb.value {
                KeyValue::Plain { material, .. } => (kb.format, material),
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_key_comes_out_raw_or_transparent_with_the_same_bytes() {
        let (_t, mut s) = store();
        let id = new_key(&mut s, ALICE, "k");
        let plain = get(&s, ALICE, &id, &ask(&id)).unwrap();
        assert_eq!(plain.unique_identifier, id);
        assert_eq!(plain.object_type, ObjectType::SYMMETRIC_KEY);
        let (format, raw) = material(plain);
        assert_eq!(format, KeyFormatType::RAW);
        let KeyMaterial::Bytes(bytes) = raw else {
            panic!("{raw:?}")
        };

        let mut g = ask(&id);
        g.key_format_type = Some(KeyFormatType::TRANSPARENT_SYMMETRIC_KEY);
        let (format, t) = material(get(&s, ALICE, &id, &g).unwrap());
        assert_eq!(format, KeyFormatType::TRANSPARENT_SYMMETRIC_KEY);
        assert_eq!(t, KeyMaterial::TransparentSymmetric(bytes.clone()));
        g.key_format_type = Some(KeyFormatType::RAW);
        assert_eq!(
            material(get(&s, ALICE, &id, &g).unwrap()).1,
            KeyMaterial::Bytes(bytes)
        );
    }

    #[test]
    fn wrapping_compression_and_other_formats_are_refused_with_their_reasons() {
        let (_t, mut s) = store();
        let id = new_key(&mut s, ALICE, "k");
        let refused = |g: GetRequest| {
            let e = failure(get(&s, ALICE, &id, &g));
            (e.reason, e.message)
        };
        let mut g = ask(&id);
        g.key_format_type = Some(KeyFormatType::PKCS8);
        assert_eq!(
            refused(g),
            (
                ResultReason::KEY_FORMAT_TYPE_NOT_SUPPORTED,
                "symmetric keys are returned as Raw or TransparentSymmetricKey, not PKCS_8".into()
            )
        );
        let mut g = ask(&id);
        g.key_wrap_type = Some(1);
        assert_eq!(
            refused(g),
            (
                ResultReason::FEATURE_NOT_SUPPORTED,
                "this server does not wrap keys on Get".into()
            )
        );
        let mut g = ask(&id);
        g.key_wrapping_specification =
            Some(Item::structure(Tag::KEY_WRAPPING_SPECIFICATION, vec![]));
        assert_eq!(refused(g).0, ResultReason::FEATURE_NOT_SUPPORTED);
        let mut g = ask(&id);
        g.key_compression_type = Some(1);
        assert_eq!(
            refused(g),
            (
                ResultReason::KEY_COMPRESSION_TYPE_NOT_SUPPORTED,
                "keys are not compressed".into()
            )
        );
    }

    #[test]
    fn only_symmetric_keys_are_converted() {
        let (_t, mut s) = store();
        let secret = Item::structure(Tag::SECRET_DATA, vec![]);
        let r = RegisterRequest {
            object_type: ObjectType::SECRET_DATA,
            attributes: Attributes::default(),
            object: ManagedObject::Other(secret.clone()),
        };
        let id = create::register(&mut s, ALICE, &r)
            .unwrap()
            .unique_identifier;
        assert_eq!(
            get(&s, ALICE, &id, &ask(&id)).unwrap().object,
            ManagedObject::Other(secret)
        );
        let mut g = ask(&id);
        g.key_format_type = Some(KeyFormatType::RAW);
        let e = failure(get(&s, ALICE, &id, &g));
        assert_eq!(e.reason, ResultReason::KEY_FORMAT_TYPE_NOT_SUPPORTED);
        assert_eq!(e.message, "only symmetric keys can be converted");
    }
}
