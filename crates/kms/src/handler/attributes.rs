//! Get Attributes, Get Attribute List, and Add, Modify and Delete Attribute.
//!
//! The rules of which attributes a client may write live here with the operations that
//! enforce them, and Create checks its template against the same lists (server-managed,
//! multi-valued), so the two cannot disagree about which attributes the server owns. This is
//! also where 1.x and 2.x differ most: an attribute is chosen by index or by value, and a
//! refusal is Permission Denied or one of 2.x's attribute reasons.

use kmip::enums::{ResultReason, State};
use kmip::message::op::{
    AttributeResponse, DeleteAttributeRequest, GetAttributeListResponse, GetAttributesRequest,
    GetAttributesResponse, ModifyAttributeRequest,
};
use kmip::message::{Attribute, AttributeName, Attributes, ProtocolVersion};
use kmip::ttlv::{Tag, Value};

use super::{fail, owned, update, wrong_state, OpError};
use crate::store::{Record, Store};

/// Attributes only the server sets.
pub(super) fn server_managed(t: Tag) -> bool {
    [
        Tag::UNIQUE_IDENTIFIER,
        Tag::OBJECT_TYPE,
        Tag::STATE,
        Tag::INITIAL_DATE,
        Tag::LAST_CHANGE_DATE,
        Tag::DESTROY_DATE,
        Tag::COMPROMISE_DATE,
        Tag::DIGEST,
    ]
    .contains(&t)
}

/// Attributes that may appear more than once.
pub(super) fn multi_valued(name: &AttributeName) -> bool {
    match name {
        AttributeName::Vendor { .. } => true,
        AttributeName::Standard(t) => [
            Tag::NAME,
            Tag::LINK,
            Tag::APPLICATION_SPECIFIC_INFORMATION,
            Tag::OBJECT_GROUP,
            Tag::ALTERNATIVE_NAME,
        ]
        .contains(t),
    }
}

/// Get Attributes: the named attributes of object `id` of `who`, or all of them.
pub(super) fn get_attributes(
    store: &Store,
    who: &str,
    v: ProtocolVersion,
    id: &str,
    g: &GetAttributesRequest,
) -> Result<GetAttributesResponse, OpError> {
    let rec = owned(store, who, id)?;
    let names: Vec<AttributeName> = g.names.iter().map(AttributeName::canonical).collect();
    let list = rec
        .attributes
        .list
        .iter()
        .filter(|a| names.is_empty() || names.contains(&a.name))
        .map(|a| for_version(a, v))
        .collect();
    Ok(GetAttributesResponse {
        unique_identifier: id.to_owned(),
        attributes: Attributes::new(list),
    })
}

/// Get Attribute List: the names object `id` of `who` carries, each once.
pub(super) fn get_attribute_list(
    store: &Store,
    who: &str,
    id: &str,
) -> Result<GetAttributeListResponse, OpError> {
    let rec = owned(store, who, id)?;
    let mut names: Vec<AttributeName> = Vec::new();
    for a in &rec.attributes.list {
        if !names.contains(&a.name) {
            names.push(a.name.clone());
        }
    }
    Ok(GetAttributeListResponse {
        unique_identifier: id.to_owned(),
        names,
    })
}

/// Add Attribute.
pub(super) fn add(
    store: &mut Store,
    who: &str,
    v: ProtocolVersion,
    id: &str,
    a: &Attribute,
) -> Result<AttributeResponse, OpError> {
    change_attribute(store, who, v, id, |rec| add_attribute(rec, v, a))
}

/// Modify Attribute.
pub(super) fn modify(
    store: &mut Store,
    who: &str,
    v: ProtocolVersion,
    id: &str,
    m: &ModifyAttributeRequest,
) -> Result<AttributeResponse, OpError> {
    change_attribute(store, who, v, id, |rec| modify_attribute(rec, v, m))
}

/// Delete Attribute.
pub(super) fn delete(
    store: &mut Store,
    who: &str,
    v: ProtocolVersion,
    id: &str,
    d: &DeleteAttributeRequest,
) -> Result<AttributeResponse, OpError> {
    change_attribute(store, who, v, id, |rec| delete_attribute(rec, v, d))
}

/// An attribute as version `v` writes it: KMIP 1.0's Digest has no Key Format Type.
fn for_version(a: &Attribute, v: ProtocolVersion) -> Attribute {
    match &a.value {
        Value::Structure(c) if v == ProtocolVersion::V1_0 && a.tag() == Some(Tag::DIGEST) => {
            let mut a = a.clone();
            a.value = Value::Structure(
                c.iter()
                    .filter(|i| i.tag != Tag::KEY_FORMAT_TYPE)
                    .cloned()
                    .collect(),
            );
            a
        }
        _ => a.clone(),
    }
}

/// Add, Modify or Delete Attribute on object `id`; 1.x answers with the attribute, 2.x
/// with the identifier only.
fn change_attribute(
    store: &mut Store,
    who: &str,
    v: ProtocolVersion,
    id: &str,
    change: impl FnOnce(&mut Record) -> Result<Attribute, OpError>,
) -> Result<AttributeResponse, OpError> {
    let attr = update(store, who, id, change)?;
    Ok(AttributeResponse {
        unique_identifier: id.to_owned(),
        attribute: (!v.uses_v2_attributes()).then_some(attr),
    })
}

fn read_only(v: ProtocolVersion, t: Tag) -> OpError {
    let reason = if v.uses_v2_attributes() {
        ResultReason::ATTRIBUTE_READ_ONLY
    } else {
        ResultReason::PERMISSION_DENIED
    };
    fail(reason, format!("{t} is read-only"))
}

/// Whether `a` may be changed on `rec`: never the server's own attributes; the
/// Activation Date only while the object is Pre-Active (KMIP 1.4 §3.24).
fn check_writable(rec: &Record, v: ProtocolVersion, a: &Attribute) -> Result<(), OpError> {
    match a.tag() {
        Some(t) if server_managed(t) => Err(read_only(v, t)),
        Some(t) if t == Tag::ACTIVATION_DATE && rec.state() != State::PRE_ACTIVE => {
            Err(wrong_state(
                v,
                format!(
                    "the Activation Date of a {} object cannot change",
                    rec.state()
                ),
            ))
        }
        _ => Ok(()),
    }
}

fn add_attribute(
    rec: &mut Record,
    v: ProtocolVersion,
    a: &Attribute,
) -> Result<Attribute, OpError> {
    check_writable(rec, v, a)?;
    let count = rec
        .attributes
        .list
        .iter()
        .filter(|b| b.name == a.name)
        .count();
    if count > 0 && !multi_valued(&a.name) {
        let reason = if v.uses_v2_attributes() {
            ResultReason::ATTRIBUTE_SINGLE_VALUED
        } else {
            ResultReason::PERMISSION_DENIED
        };
        return Err(fail(
            reason,
            "the attribute is single-valued and already set",
        ));
    }
    let mut a = a.clone();
    a.index = None;
    rec.attributes.list.push(a.clone());
    if !v.uses_v2_attributes() && count > 0 {
        a.index = Some(count as i32);
    }
    Ok(a)
}

fn not_found(v: ProtocolVersion) -> OpError {
    let reason = if v.uses_v2_attributes() {
        ResultReason::ATTRIBUTE_NOT_FOUND
    } else {
        ResultReason::ITEM_NOT_FOUND
    };
    fail(reason, "no such attribute on the object")
}

/// Position in the object's list of the attribute chosen by name and index (1.x) or by
/// current value (2.x).
fn find(
    rec: &Record,
    name: &AttributeName,
    index: Option<i32>,
    current: Option<&Value>,
) -> Option<usize> {
    let mut seen = 0;
    for (i, a) in rec.attributes.list.iter().enumerate() {
        if &a.name != name {
            continue;
        }
        let hit = match (current, index) {
            (Some(c), _) => &a.value == c,
            (None, Some(n)) => seen == n,
            (None, None) => true,
        };
        if hit {
            return Some(i);
        }
        seen += 1;
    }
    None
}

fn modify_attribute(
    rec: &mut Record,
    v: ProtocolVersion,
    m: &ModifyAttributeRequest,
) -> Result<Attribute, OpError> {
    check_writable(rec, v, &m.new)?;
    let i = find(
        rec,
        &m.new.name,
        m.new.index,
        m.current.as_ref().map(|c| &c.value),
    )
    .ok_or_else(|| not_found(v))?;
    rec.attributes.list[i].value = m.new.value.clone();
    Ok(m.new.clone())
}

fn delete_attribute(
    rec: &mut Record,
    v: ProtocolVersion,
    d: &DeleteAttributeRequest,
) -> Result<Attribute, OpError> {
    let name = d
        .current
        .as_ref()
        .map(|c| c.name.clone())
        .or_else(|| d.name.clone())
        .ok_or_else(|| fail(ResultReason::MISSING_DATA, "which attribute?"))?;
    if let AttributeName::Standard(t) = &name {
        if server_managed(*t)
            || [Tag::CRYPTOGRAPHIC_ALGORITHM, Tag::CRYPTOGRAPHIC_LENGTH].contains(t)
        {
            return Err(read_only(v, *t));
        }
    }
    let i = find(rec, &name, d.index, d.current.as_ref().map(|c| &c.value))
        .ok_or_else(|| not_found(v))?;
    let mut a = rec.attributes.list.remove(i);
    a.index = d.index;
    Ok(a)
}

#[cfg(test)]
mod tests {
    use kmip::enums::{ResultReason, State};
    use kmip::message::op::{DeleteAttributeRequest, GetAttributesRequest, ModifyAttributeRequest};
    use kmip::message::{Attribute, AttributeName, ProtocolVersion};
    use kmip::ttlv::{Tag, Value};

    use super::super::lifecycle;
    use super::super::testing::{failure, name, new_key, reason, record, store, ALICE, V1, V2};
    use super::*;

    fn names(s: &Store, id: &str) -> Vec<Value> {
        record(s, id)
            .attributes
            .list
            .iter()
            .filter(|a| a.tag() == Some(Tag::NAME))
            .map(|a| a.value.clone())
            .collect()
    }

    fn modify_req(current: Option<Attribute>, new: Attribute) -> ModifyAttributeRequest {
        ModifyAttributeRequest {
            unique_identifier: None,
            current,
            new,
        }
    }

    fn delete_req(
        current: Option<Attribute>,
        name: Option<AttributeName>,
        index: Option<i32>,
    ) -> DeleteAttributeRequest {
        DeleteAttributeRequest {
            unique_identifier: None,
            current,
            name,
            index,
        }
    }

    fn refuses_the_servers_attributes(v: ProtocolVersion, read_only: ResultReason) {
        let (_t, mut s) = store();
        let id = new_key(&mut s, ALICE, "k");
        let before = record(&s, &id).attributes.clone();
        let state = Attribute::new(Tag::STATE, Value::Enumeration(State::ACTIVE.0));
        let e = failure(add(&mut s, ALICE, v, &id, &state));
        assert_eq!(e.reason, read_only);
        assert_eq!(e.message, "State is read-only");
        let changed = Attribute::new(Tag::LAST_CHANGE_DATE, Value::DateTime(0));
        let e = failure(modify(&mut s, ALICE, v, &id, &modify_req(None, changed)));
        assert_eq!(e.reason, read_only);
        assert_eq!(e.message, "LastChangeDate is read-only");
        for t in [
            Tag::DIGEST,
            Tag::UNIQUE_IDENTIFIER,
            Tag::CRYPTOGRAPHIC_ALGORITHM,
        ] {
            let d = delete_req(None, Some(AttributeName::Standard(t)), None);
            let e = failure(delete(&mut s, ALICE, v, &id, &d));
            assert_eq!(e.reason, read_only, "{t}");
            assert_eq!(e.message, format!("{t} is read-only"));
        }
        assert_eq!(
            record(&s, &id).attributes,
            before,
            "a refusal changed the object"
        );
    }

    #[test]
    fn the_servers_own_attributes_are_read_only_in_1x() {
        refuses_the_servers_attributes(V1, ResultReason::PERMISSION_DENIED);
    }

    #[test]
    fn the_servers_own_attributes_are_read_only_in_2x() {
        refuses_the_servers_attributes(V2, ResultReason::ATTRIBUTE_READ_ONLY);
    }

    #[test]
    fn a_single_valued_attribute_is_added_once_a_multi_valued_one_again_and_again() {
        let (_t, mut s) = store();
        let id = new_key(&mut s, ALICE, "first");
        let mask = Attribute::new(Tag::CRYPTOGRAPHIC_USAGE_MASK, Value::Integer(12));
        let r = add(&mut s, ALICE, V1, &id, &mask).unwrap();
        assert_eq!(
            r.attribute,
            Some(mask.clone()),
            "1.x answers with the attribute"
        );
        assert_eq!(
            reason(add(&mut s, ALICE, V1, &id, &mask)),
            ResultReason::PERMISSION_DENIED
        );
        let e = failure(add(&mut s, ALICE, V2, &id, &mask));
        assert_eq!(e.reason, ResultReason::ATTRIBUTE_SINGLE_VALUED);
        assert_eq!(e.message, "the attribute is single-valued and already set");

        // A second Name: 1.x says which index it got, 2.x answers with the identifier only.
        let r = add(&mut s, ALICE, V1, &id, &name("second")).unwrap();
        assert_eq!(r.attribute.and_then(|a| a.index), Some(1));
        let r = add(&mut s, ALICE, V2, &id, &name("third")).unwrap();
        assert_eq!(
            (r.unique_identifier.as_str(), r.attribute),
            (id.as_str(), None)
        );
        assert_eq!(
            names(&s, &id),
            vec![
                name("first").value,
                name("second").value,
                name("third").value
            ]
        );
        // Custom attributes are the client's and may repeat.
        let custom = Attribute {
            name: AttributeName::from_v1_text("x-purpose"),
            index: None,
            value: Value::TextString(String::from("audit").into()),
        };
        add(&mut s, ALICE, V1, &id, &custom).unwrap();
        add(&mut s, ALICE, V1, &id, &custom).unwrap();
    }

    #[test]
    fn modify_and_delete_choose_by_index_in_1x_and_by_value_in_2x() {
        let (_t, mut s) = store();
        let id = new_key(&mut s, ALICE, "a");
        add(&mut s, ALICE, V1, &id, &name("b")).unwrap();

        let mut by_index = name("c");
        by_index.index = Some(1);
        modify(&mut s, ALICE, V1, &id, &modify_req(None, by_index)).unwrap();
        assert_eq!(names(&s, &id), vec![name("a").value, name("c").value]);
        modify(
            &mut s,
            ALICE,
            V2,
            &id,
            &modify_req(Some(name("a")), name("z")),
        )
        .unwrap();
        assert_eq!(names(&s, &id), vec![name("z").value, name("c").value]);

        let missing = modify_req(Some(name("nope")), name("y"));
        let e = failure(modify(&mut s, ALICE, V2, &id, &missing));
        assert_eq!(e.reason, ResultReason::ATTRIBUTE_NOT_FOUND);
        assert_eq!(e.message, "no such attribute on the object");
        let mut far = name("y");
        far.index = Some(5);
        assert_eq!(
            reason(modify(&mut s, ALICE, V1, &id, &modify_req(None, far))),
            ResultReason::ITEM_NOT_FOUND
        );

        let d = delete_req(None, Some(AttributeName::Standard(Tag::NAME)), Some(1));
        let r = delete(&mut s, ALICE, V1, &id, &d).unwrap();
        let gone = r.attribute.unwrap();
        assert_eq!((gone.value, gone.index), (name("c").value, Some(1)));
        assert_eq!(names(&s, &id), vec![name("z").value]);
        delete(
            &mut s,
            ALICE,
            V2,
            &id,
            &delete_req(Some(name("z")), None, None),
        )
        .unwrap();
        assert!(names(&s, &id).is_empty());
        assert_eq!(
            reason(delete(
                &mut s,
                ALICE,
                V2,
                &id,
                &delete_req(Some(name("z")), None, None)
            )),
            ResultReason::ATTRIBUTE_NOT_FOUND
        );
        let e = failure(delete(
            &mut s,
            ALICE,
            V2,
            &id,
            &delete_req(None, None, None),
        ));
        assert_eq!(
            (e.reason, e.message.as_str()),
            (ResultReason::MISSING_DATA, "which attribute?")
        );
    }

    #[test]
    fn the_activation_date_may_change_only_while_the_key_is_pre_active() {
        let (_t, mut s) = store();
        let id = new_key(&mut s, ALICE, "k");
        let later = Attribute::new(Tag::ACTIVATION_DATE, Value::DateTime(4_000_000_000));
        add(&mut s, ALICE, V2, &id, &later).unwrap();
        let sooner = Attribute::new(Tag::ACTIVATION_DATE, Value::DateTime(3_000_000_000));
        modify(&mut s, ALICE, V2, &id, &modify_req(None, sooner.clone())).unwrap();
        assert_eq!(
            record(&s, &id).attributes.get(Tag::ACTIVATION_DATE),
            Some(&sooner)
        );
        lifecycle::activate(&mut s, ALICE, V2, &id).unwrap();
        let e = failure(modify(
            &mut s,
            ALICE,
            V2,
            &id,
            &modify_req(None, later.clone()),
        ));
        assert_eq!(e.reason, ResultReason::WRONG_KEY_LIFECYCLE_STATE);
        assert_eq!(
            e.message,
            "the Activation Date of a Active object cannot change"
        );
        assert_eq!(
            reason(modify(&mut s, ALICE, V1, &id, &modify_req(None, later))),
            ResultReason::PERMISSION_DENIED
        );
    }

    #[test]
    fn get_attributes_filters_by_name_and_writes_the_digest_as_the_version_knows_it() {
        let (_t, mut s) = store();
        let id = new_key(&mut s, ALICE, "k");
        add(&mut s, ALICE, V1, &id, &name("k2")).unwrap();
        let only = |names: Vec<AttributeName>| GetAttributesRequest {
            unique_identifier: None,
            names,
        };
        let all = get_attributes(&s, ALICE, V2, &id, &only(vec![])).unwrap();
        assert_eq!(all.attributes, record(&s, &id).attributes);

        // A 1.0 client may pad the name with spaces; it still matches.
        let spaced = AttributeName::from_v1_text("Cryptographic   Length");
        let r = get_attributes(&s, ALICE, V1, &id, &only(vec![spaced])).unwrap();
        assert_eq!(
            r.attributes.list,
            vec![Attribute::new(
                Tag::CRYPTOGRAPHIC_LENGTH,
                Value::Integer(256)
            )]
        );

        let digest_fields = |v: ProtocolVersion| {
            let r = get_attributes(
                &s,
                ALICE,
                v,
                &id,
                &only(vec![AttributeName::Standard(Tag::DIGEST)]),
            )
            .unwrap();
            match &r.attributes.list[..] {
                [a] => match &a.value {
                    Value::Structure(c) => c.iter().map(|i| i.tag).collect::<Vec<_>>(),
                    other => panic!("{other:?}"),
                },
                other => panic!("{other:?}"),
            }
        };
        assert!(digest_fields(ProtocolVersion::V1_1).contains(&Tag::KEY_FORMAT_TYPE));
        assert!(!digest_fields(ProtocolVersion::V1_0).contains(&Tag::KEY_FORMAT_TYPE));
        assert_eq!(digest_fields(ProtocolVersion::V1_0).len(), 2);

        let list = get_attribute_list(&s, ALICE, &id).unwrap().names;
        let named = list
            .iter()
            .filter(|n| **n == AttributeName::Standard(Tag::NAME))
            .count();
        assert_eq!(named, 1, "each name once: {list:?}");
        assert!(list.contains(&AttributeName::Standard(Tag::INITIAL_DATE)));
    }
}
