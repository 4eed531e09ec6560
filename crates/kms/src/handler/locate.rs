//! Locate and Check: questions about the objects a client owns, which change nothing.
//!
//! Locate answers `atrest kmip locate NAME` (keys by Name) and Check asks about one object;
//! both only read, and both see only the caller's own objects. Locate's matching is looser
//! than equality (a Name matches whatever its type), which is worth its own file.

use kmip::enums::{NameType, ResultReason};
use kmip::message::op::{CheckPayload, LocateRequest, LocateResponse};
use kmip::message::ProtocolVersion;
use kmip::ttlv::{Tag, Value};

use super::{fail, owned, OpError};
use crate::store::Store;

/// Locate: the page of `who`'s matching objects the request asked for, and the one
/// object found when exactly one matched (the batch's ID Placeholder then).
pub(super) fn locate(
    store: &Store,
    who: &str,
    v: ProtocolVersion,
    l: &LocateRequest,
) -> (LocateResponse, Option<String>) {
    let found = matching(store, who, l);
    let only = (found.len() == 1).then(|| found[0].clone());
    let total = found.len() as i32;
    let skip = l.offset_items.unwrap_or(0).max(0) as usize;
    let take = l
        .maximum_items
        .filter(|m| *m > 0)
        .map_or(usize::MAX, |m| m as usize);
    let uids: Vec<String> = found.into_iter().skip(skip).take(take).collect();
    let located = (v >= ProtocolVersion::V1_3 && l.offset_items.is_some()).then_some(total);
    (
        LocateResponse {
            located_items: located,
            unique_identifiers: uids,
        },
        only,
    )
}

/// Check: whether object `id` of `who` allows the usage asked about.
pub(super) fn check(
    store: &Store,
    who: &str,
    v: ProtocolVersion,
    id: &str,
    c: &CheckPayload,
) -> Result<CheckPayload, OpError> {
    let rec = owned(store, who, id)?;
    if let Some(mask) = c.cryptographic_usage_mask {
        let has = rec
            .attributes
            .get(Tag::CRYPTOGRAPHIC_USAGE_MASK)
            .and_then(|a| match a.value {
                Value::Integer(m) => Some(m),
                _ => None,
            })
            .unwrap_or(0);
        if mask & !has != 0 {
            let reason = match v.uses_v2_attributes() {
                true => ResultReason::INCOMPATIBLE_CRYPTOGRAPHIC_USAGE_MASK,
                false => ResultReason::INVALID_FIELD,
            };
            return Err(fail(
                reason,
                "the object's usage mask does not allow that use",
            ));
        }
    }
    Ok(CheckPayload {
        unique_identifier: Some(id.to_owned()),
        ..Default::default()
    })
}

/// Objects of `who` that carry every requested attribute, newest last.
fn matching(store: &Store, who: &str, l: &LocateRequest) -> Vec<String> {
    let want_destroyed = l.storage_status_mask.is_some_and(|m| m & 0x4 != 0);
    store
        .all()
        .filter(|r| r.owner == who)
        .filter(|r| want_destroyed || r.has_material())
        .filter(|r| {
            l.attributes.list.iter().all(|want| {
                r.attributes
                    .list
                    .iter()
                    .any(|have| have.name == want.name && same_value(&have.value, &want.value))
            })
        })
        .map(|r| r.uid.clone())
        .collect()
}

/// Equality for Locate: a Name matches on its value whatever its type says.
fn same_value(have: &Value, want: &Value) -> bool {
    match (have, want) {
        (Value::Structure(h), Value::Structure(w)) => w.iter().all(|wi| {
            wi.tag == Tag::NAME_TYPE
                && wi.value == Value::Enumeration(NameType::UNINTERPRETED_TEXT_STRING.0)
                || h.iter().any(|hi| hi == wi)
        }),
        _ => have == want,
    }
}

#[cfg(test)]
mod tests {
    use kmip::enums::{NameType, ResultReason};
    use kmip::message::op::{CheckPayload, LocateRequest};
    use kmip::message::{Attribute, Attributes, ProtocolVersion};
    use kmip::ttlv::{Item, Tag, Value};

    use super::super::testing::{failure, name, new_key, store, ALICE, BOB, V1, V2};
    use super::super::{attributes, lifecycle};
    use super::*;

    fn by(attrs: Vec<Attribute>) -> LocateRequest {
        LocateRequest {
            attributes: Attributes::new(attrs),
            ..Default::default()
        }
    }

    #[test]
    fn locate_by_name_finds_only_the_callers_objects_of_that_name() {
        let (_t, mut s) = store();
        let a = new_key(&mut s, ALICE, "volume-1");
        let _other_name = new_key(&mut s, ALICE, "volume-2");
        let _bobs = new_key(&mut s, BOB, "volume-1");
        let (r, only) = locate(&s, ALICE, V2, &by(vec![name("volume-1")]));
        assert_eq!(r.unique_identifiers, vec![a.clone()]);
        assert_eq!(
            only,
            Some(a.clone()),
            "one match becomes the ID Placeholder"
        );
        assert_eq!(r.located_items, None);
        assert!(locate(&s, ALICE, V2, &by(vec![name("volume-3")]))
            .0
            .unique_identifiers
            .is_empty());
        assert_eq!(
            locate(&s, ALICE, V2, &by(vec![]))
                .0
                .unique_identifiers
                .len(),
            2
        );

        // A Name given as uninterpreted text matches whatever type the object's Name has.
        let uri = Attribute::new(
            Tag::NAME,
            Value::Structure(vec![
                Item::text(Tag::NAME_VALUE, "https://example.com/k"),
                Item::enumeration(Tag::NAME_TYPE, NameType::URI.0),
            ]),
        );
        let u = new_key(&mut s, ALICE, "u");
        attributes::add(&mut s, ALICE, V2, &u, &uri).unwrap();
        for want in [name("https://example.com/k"), uri] {
            assert_eq!(
                locate(&s, ALICE, V2, &by(vec![want])).0.unique_identifiers,
                vec![u.clone()]
            );
        }
    }

    #[test]
    fn destroyed_objects_are_found_only_when_asked_for_and_pages_are_counted() {
        let (_t, mut s) = store();
        let ids: Vec<String> = (0..3).map(|_| new_key(&mut s, ALICE, "same")).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        let (all, only) = locate(&s, ALICE, V1, &by(vec![name("same")]));
        assert_eq!(all.unique_identifiers, sorted);
        assert_eq!(only, None, "several matches set no ID Placeholder");

        let mut page = by(vec![name("same")]);
        page.maximum_items = Some(1);
        page.offset_items = Some(1);
        let r = locate(&s, ALICE, ProtocolVersion::V1_3, &page).0;
        assert_eq!(
            (r.unique_identifiers, r.located_items),
            (vec![sorted[1].clone()], Some(3))
        );
        let r = locate(&s, ALICE, ProtocolVersion::V1_2, &page).0;
        assert_eq!(r.located_items, None, "Located Items is 1.3 and later");

        lifecycle::destroy(&mut s, ALICE, V1, &sorted[0]).unwrap();
        let live = locate(&s, ALICE, V1, &by(vec![name("same")])).0;
        assert_eq!(live.unique_identifiers, sorted[1..].to_vec());
        let mut with_destroyed = by(vec![name("same")]);
        with_destroyed.storage_status_mask = Some(0x4);
        let r = locate(&s, ALICE, V1, &with_destroyed).0;
        assert_eq!(r.unique_identifiers, sorted);
    }

    #[test]
    fn check_refuses_a_use_the_usage_mask_does_not_allow() {
        let (_t, mut s) = store();
        let id = new_key(&mut s, ALICE, "k");
        let mask = Attribute::new(Tag::CRYPTOGRAPHIC_USAGE_MASK, Value::Integer(0x4 | 0x8));
        attributes::add(&mut s, ALICE, V2, &id, &mask).unwrap();
        let asking = |m: i32| CheckPayload {
            unique_identifier: Some(id.clone()),
            cryptographic_usage_mask: Some(m),
            ..Default::default()
        };
        let ok = check(&s, ALICE, V2, &id, &asking(0x4)).unwrap();
        assert_eq!(ok.unique_identifier, Some(id.clone()));
        assert_eq!(ok.cryptographic_usage_mask, None);
        let e = failure(check(&s, ALICE, V2, &id, &asking(0x4 | 0x1)));
        assert_eq!(
            e.reason,
            ResultReason::INCOMPATIBLE_CRYPTOGRAPHIC_USAGE_MASK
        );
        assert_eq!(e.message, "the object's usage mask does not allow that use");
        let e = failure(check(&s, ALICE, V1, &id, &asking(0x1)));
        assert_eq!(e.reason, ResultReason::INVALID_FIELD);
    }
}
