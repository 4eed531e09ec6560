//! Activate, Revoke and Destroy: the transitions of the specification's State attribute.
//!
//! Pre-Active → Active → Deactivated or Compromised → Destroyed (or Destroyed Compromised).
//! These are the transitions atrest's key handling relies on (an Active key must be revoked
//! before it can be destroyed; a destroyed key's material is gone for good), so they live
//! together where each rule can be checked against the specification's diagram.

use kmip::enums::{ResultReason, RevocationReasonCode, State};
use kmip::message::op::{IdResponse, RevokeRequest};
use kmip::message::ProtocolVersion;
use kmip::ttlv::{Item, Tag, Value};

use super::{fail, now, update, wrong_state, OpError};
use crate::store::{Record, Store};

/// Activate: a Pre-Active object of `who` becomes Active.
pub(super) fn activate(
    store: &mut Store,
    who: &str,
    v: ProtocolVersion,
    id: &str,
) -> Result<IdResponse, OpError> {
    update(store, who, id, |rec| make_active(rec, v))?;
    Ok(IdResponse {
        unique_identifier: id.to_owned(),
    })
}

/// Revoke: Deactivated, or Compromised for a compromise reason.
pub(super) fn revoke(
    store: &mut Store,
    who: &str,
    v: ProtocolVersion,
    id: &str,
    r: &RevokeRequest,
) -> Result<IdResponse, OpError> {
    update(store, who, id, |rec| make_revoked(rec, v, r))?;
    Ok(IdResponse {
        unique_identifier: id.to_owned(),
    })
}

/// Destroy: the key material is dropped; the record stays, so Locate can still report it.
pub(super) fn destroy(
    store: &mut Store,
    who: &str,
    v: ProtocolVersion,
    id: &str,
) -> Result<IdResponse, OpError> {
    update(store, who, id, |rec| make_destroyed(rec, v))?;
    Ok(IdResponse {
        unique_identifier: id.to_owned(),
    })
}

fn make_active(rec: &mut Record, v: ProtocolVersion) -> Result<(), OpError> {
    if rec.state() != State::PRE_ACTIVE {
        return Err(wrong_state(
            v,
            format!(
                "object {} is {}, only a Pre-Active object can be activated",
                rec.uid,
                rec.state()
            ),
        ));
    }
    rec.set(Tag::STATE, Value::Enumeration(State::ACTIVE.0));
    rec.set(Tag::ACTIVATION_DATE, Value::DateTime(now()));
    Ok(())
}

fn make_revoked(rec: &mut Record, v: ProtocolVersion, r: &RevokeRequest) -> Result<(), OpError> {
    let state = rec.state();
    if matches!(state, State::DESTROYED | State::DESTROYED_COMPROMISED) {
        return Err(wrong_state(
            v,
            format!("object {} has been destroyed", rec.uid),
        ));
    }
    let t = now();
    if matches!(
        r.reason,
        RevocationReasonCode::KEY_COMPROMISE | RevocationReasonCode::CA_COMPROMISE
    ) {
        rec.set(Tag::STATE, Value::Enumeration(State::COMPROMISED.0));
        rec.set(Tag::COMPROMISE_DATE, Value::DateTime(t));
        rec.set(
            Tag::COMPROMISE_OCCURRENCE_DATE,
            Value::DateTime(r.compromise_occurrence_date.unwrap_or(t)),
        );
    } else if state != State::COMPROMISED {
        rec.set(Tag::STATE, Value::Enumeration(State::DEACTIVATED.0));
        rec.set(Tag::DEACTIVATION_DATE, Value::DateTime(t));
    }
    let mut reason = vec![Item::enumeration(Tag::REVOCATION_REASON_CODE, r.reason.0)];
    if let Some(m) = &r.message {
        reason.push(Item::text(Tag::REVOCATION_MESSAGE, m.as_str()));
    }
    rec.set(Tag::REVOCATION_REASON, Value::Structure(reason));
    Ok(())
}

fn make_destroyed(rec: &mut Record, v: ProtocolVersion) -> Result<(), OpError> {
    let next = match rec.state() {
        State::ACTIVE => {
            return Err(wrong_state(
                v,
                format!(
                    "object {} is Active: revoke it before destroying it",
                    rec.uid
                ),
            ))
        }
        State::COMPROMISED => State::DESTROYED_COMPROMISED,
        State::DESTROYED | State::DESTROYED_COMPROMISED => {
            return Err(fail(
                ResultReason::ITEM_NOT_FOUND,
                format!("object {} has been destroyed", rec.uid),
            ))
        }
        _ => State::DESTROYED,
    };
    rec.set(Tag::STATE, Value::Enumeration(next.0));
    rec.set(Tag::DESTROY_DATE, Value::DateTime(now()));
    rec.destroy_material();
    Ok(())
}

#[cfg(test)]
mod tests {
    use kmip::enums::{ResultReason, RevocationReasonCode, State};
    use kmip::message::op::{GetRequest, RevokeRequest};
    use kmip::message::{ManagedObject, ProtocolVersion};
    use kmip::ttlv::{Tag, Value};

    use super::super::get;
    use super::super::testing::{failure, new_key, reason, record, state, store, ALICE, V1, V2};
    use super::*;

    fn revocation(reason: RevocationReasonCode) -> RevokeRequest {
        RevokeRequest {
            unique_identifier: None,
            reason,
            message: Some("rotated".into()),
            compromise_occurrence_date: None,
        }
    }

    fn has(store: &Store, id: &str, tag: Tag) -> bool {
        record(store, id).attributes.get(tag).is_some()
    }

    /// Create → Get → Activate → Revoke → Destroy, with every out-of-order step on the way
    /// refused with `wrong` (the version's reason) and leaving the object as it was.
    fn whole_life(v: ProtocolVersion, wrong: ResultReason) {
        let (t, mut s) = store();
        let id = new_key(&mut s, ALICE, "life");
        assert_eq!(state(&s, &id), State::PRE_ACTIVE);
        let key = match get::get(&s, ALICE, &id, &GetRequest::default())
            .unwrap()
            .object
        {
            ManagedObject::SymmetricKey(kb) => kb.symmetric_key().unwrap().clone(),
            other => panic!("not a key: {other:?}"),
        };
        assert_eq!(key.len(), 32);

        assert_eq!(
            activate(&mut s, ALICE, v, &id).unwrap().unique_identifier,
            id
        );
        assert_eq!(state(&s, &id), State::ACTIVE);
        assert!(has(&s, &id, Tag::ACTIVATION_DATE));

        let before = record(&s, &id).attributes.clone();
        let e = failure(activate(&mut s, ALICE, v, &id));
        assert_eq!(e.reason, wrong);
        assert_eq!(
            e.message,
            format!("object {id} is Active, only a Pre-Active object can be activated")
        );
        let e = failure(destroy(&mut s, ALICE, v, &id));
        assert_eq!(e.reason, wrong);
        assert_eq!(
            e.message,
            format!("object {id} is Active: revoke it before destroying it")
        );
        assert_eq!(
            record(&s, &id).attributes,
            before,
            "a refusal changed the object"
        );
        assert!(record(&s, &id).has_material());

        let r = revocation(RevocationReasonCode::CESSATION_OF_OPERATION);
        revoke(&mut s, ALICE, v, &id, &r).unwrap();
        assert_eq!(state(&s, &id), State::DEACTIVATED);
        assert!(has(&s, &id, Tag::DEACTIVATION_DATE));
        assert!(!has(&s, &id, Tag::COMPROMISE_DATE));
        assert_eq!(reason(activate(&mut s, ALICE, v, &id)), wrong);

        destroy(&mut s, ALICE, v, &id).unwrap();
        assert_eq!(state(&s, &id), State::DESTROYED);
        assert!(has(&s, &id, Tag::DESTROY_DATE));
        assert!(!record(&s, &id).has_material());

        let e = failure(get::get(&s, ALICE, &id, &GetRequest::default()));
        assert_eq!(e.reason, ResultReason::ITEM_NOT_FOUND);
        assert_eq!(e.message, format!("object {id} has been destroyed"));
        let e = failure(destroy(&mut s, ALICE, v, &id));
        assert_eq!(e.reason, ResultReason::ITEM_NOT_FOUND);
        assert_eq!(e.message, format!("object {id} has been destroyed"));
        let e = failure(revoke(&mut s, ALICE, v, &id, &r));
        assert_eq!(e.reason, wrong);
        assert_eq!(e.message, format!("object {id} has been destroyed"));
        assert_eq!(reason(activate(&mut s, ALICE, v, &id)), wrong);

        // Every acknowledged step was on disk before the answer.
        drop(s);
        let s = Store::open(&t.path().join("store")).unwrap();
        assert_eq!(state(&s, &id), State::DESTROYED);
        assert!(!record(&s, &id).has_material());
    }

    #[test]
    fn a_key_lives_its_whole_life_and_1x_refuses_wrong_steps_with_permission_denied() {
        whole_life(V1, ResultReason::PERMISSION_DENIED);
    }

    #[test]
    fn a_key_lives_its_whole_life_and_2x_refuses_wrong_steps_with_wrong_lifecycle_state() {
        whole_life(V2, ResultReason::WRONG_KEY_LIFECYCLE_STATE);
    }

    #[test]
    fn a_compromised_key_stays_compromised_and_is_destroyed_as_such() {
        let (_t, mut s) = store();
        let id = new_key(&mut s, ALICE, "leaked");
        activate(&mut s, ALICE, V2, &id).unwrap();
        let mut r = revocation(RevocationReasonCode::KEY_COMPROMISE);
        r.compromise_occurrence_date = Some(1_000_000);
        revoke(&mut s, ALICE, V2, &id, &r).unwrap();
        assert_eq!(state(&s, &id), State::COMPROMISED);
        assert!(has(&s, &id, Tag::COMPROMISE_DATE));
        assert_eq!(
            record(&s, &id)
                .attributes
                .get(Tag::COMPROMISE_OCCURRENCE_DATE)
                .map(|a| &a.value),
            Some(&Value::DateTime(1_000_000))
        );
        // A later, milder reason does not launder the compromise.
        revoke(
            &mut s,
            ALICE,
            V2,
            &id,
            &revocation(RevocationReasonCode::SUPERSEDED),
        )
        .unwrap();
        assert_eq!(state(&s, &id), State::COMPROMISED);
        assert!(!has(&s, &id, Tag::DEACTIVATION_DATE));
        destroy(&mut s, ALICE, V2, &id).unwrap();
        assert_eq!(state(&s, &id), State::DESTROYED_COMPROMISED);
    }

    #[test]
    fn a_pre_active_key_may_be_destroyed_without_ever_being_active() {
        let (_t, mut s) = store();
        let id = new_key(&mut s, ALICE, "unused");
        destroy(&mut s, ALICE, V1, &id).unwrap();
        assert_eq!(state(&s, &id), State::DESTROYED);
        assert!(!has(&s, &id, Tag::ACTIVATION_DATE));
    }
}
