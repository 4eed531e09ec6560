//! From one request message to one response message: version check, authentication, then
//! each batch item in order against the store, with the object lifecycle of the KMIP
//! specification (Pre-Active → Active → Deactivated/Compromised → Destroyed).
//!
//! This file holds what every operation goes through (message checks, batch order, the ID
//! Placeholder, ownership, durable updates, errors that depend on the protocol version) so
//! the per-operation modules hold only what differs: `create`, `get`, `attributes`,
//! `lifecycle`, `locate` and `query`. Tags without a constant in the kmip crate are looked
//! up once, in `tags`.

mod attributes;
mod create;
mod get;
mod lifecycle;
mod locate;
mod query;
#[cfg(test)]
mod testing;

use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use kmip::enums::{BatchErrorContinuationOption, Operation, ResultReason, ResultStatus};
use kmip::message::{
    ProtocolVersion, RequestMessage, RequestPayload, ResponseBatchItem, ResponseHeader,
    ResponseMessage, ResponsePayload,
};
use kmip::ttlv::{self, Limits, Tag, Value};

use crate::auth::Users;
use crate::store::{Record, Store};

pub use query::VENDOR;

/// Batch items one request may carry. Every item may cost a store write with an fsync, so
/// a 1 MiB message of tiny items would otherwise buy tens of thousands of them; atrest
/// sends one or two, and the largest batch in the OASIS test cases has four.
pub const MAX_BATCH_ITEMS: usize = 64;
/// What one operation's failure says on the wire.
#[derive(Debug)]
pub struct OpError {
    /// Result Reason.
    pub reason: ResultReason,
    /// Result Message.
    pub message: String,
}

fn fail(reason: ResultReason, message: impl Into<String>) -> OpError {
    OpError {
        reason,
        message: message.into(),
    }
}

/// The server's state shared by every connection.
pub struct Kms {
    store: Mutex<Store>,
    users: Users,
    limits: Limits,
}

/// One line for the operation log: who did what to which object, and how it ended.
#[derive(Debug, Clone)]
pub struct LogEntry {
    /// Operation.
    pub operation: Option<Operation>,
    /// Object, when there is one.
    pub uid: Option<String>,
    /// "Success" or the Result Reason.
    pub result: String,
}

/// Operations this server implements, in the order Query lists them.
pub const OPERATIONS: [Operation; 15] = [
    Operation::CREATE,
    Operation::REGISTER,
    Operation::LOCATE,
    Operation::CHECK,
    Operation::GET,
    Operation::GET_ATTRIBUTES,
    Operation::GET_ATTRIBUTE_LIST,
    Operation::ADD_ATTRIBUTE,
    Operation::MODIFY_ATTRIBUTE,
    Operation::DELETE_ATTRIBUTE,
    Operation::ACTIVATE,
    Operation::REVOKE,
    Operation::DESTROY,
    Operation::QUERY,
    Operation::DISCOVER_VERSIONS,
];

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Wrong lifecycle state: 1.x test cases answer Permission Denied, 2.x has its own reason.
fn wrong_state(v: ProtocolVersion, what: String) -> OpError {
    let reason = if v.uses_v2_attributes() {
        ResultReason::WRONG_KEY_LIFECYCLE_STATE
    } else {
        ResultReason::PERMISSION_DENIED
    };
    fail(reason, what)
}

impl Kms {
    /// A server over `store`, checking credentials against `users`.
    pub fn new(store: Store, users: Users) -> Self {
        Self {
            store: Mutex::new(store),
            users,
            limits: Limits::default(),
        }
    }

    /// The message size and depth limits applied to requests.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Answers one request from the client whose certificate says `identity`. Returns the
    /// response bytes, the log entries, and whether the connection must be closed (after a
    /// framing error the stream can no longer be trusted).
    pub fn handle(
        &self,
        identity: &str,
        request: &[u8],
        session: &mut crate::auth::Session,
    ) -> (Vec<u8>, Vec<LogEntry>, bool) {
        let item = match ttlv::decode_with(request, self.limits) {
            Ok(i) => i,
            Err(e) => {
                return self.refuse(
                    ProtocolVersion::V1_0,
                    ResultReason::INVALID_MESSAGE,
                    &e.to_string(),
                    true,
                )
            }
        };
        let req = match RequestMessage::from_item(&item) {
            Ok(r) => r,
            Err(e) => {
                return self.refuse(
                    ProtocolVersion::V1_0,
                    ResultReason::INVALID_MESSAGE,
                    &e.to_string(),
                    false,
                )
            }
        };
        let v = req.header.protocol_version;
        if req.items.len() > MAX_BATCH_ITEMS {
            // Checked before authentication: an unauthenticated peer must not make the
            // server parse, hash or store more than a bounded amount per request.
            return self.refuse(
                if ProtocolVersion::SUPPORTED.contains(&v) {
                    v
                } else {
                    ProtocolVersion::V1_0
                },
                ResultReason::INVALID_MESSAGE,
                &format!(
                    "a batch of {} items; this server takes at most {MAX_BATCH_ITEMS} per request",
                    req.items.len()
                ),
                false,
            );
        }
        if !ProtocolVersion::SUPPORTED.contains(&v) {
            let (answer, reason) = match v.major {
                2.. => (
                    ProtocolVersion::V2_1,
                    ResultReason::UNSUPPORTED_PROTOCOL_VERSION,
                ),
                _ => (ProtocolVersion::V1_0, ResultReason::INVALID_MESSAGE),
            };
            return self.refuse(answer, reason, &format!("KMIP {v} is not supported"), false);
        }
        if let Err(why) = self.users.check(&req.header.authentication, session) {
            log::warn!("authentication failed for {identity}: {why}");
            return self.refuse(
                v,
                ResultReason::AUTHENTICATION_NOT_SUCCESSFUL,
                "authentication not successful",
                false,
            );
        }
        let stop_on_error = req.header.batch_error_continuation_option
            != Some(BatchErrorContinuationOption::CONTINUE);
        let mut items = Vec::new();
        let mut log = Vec::new();
        let mut placeholder: Option<String> = None;
        for bi in &req.items {
            let op = bi.operation();
            let result = if !bi.extra.is_empty() {
                Err(fail(
                    ResultReason::INVALID_FIELD,
                    format!("unexpected field {} in {op}", bi.extra[0].tag),
                ))
            } else {
                self.operation(identity, v, &bi.payload, &mut placeholder)
            };
            let (mut out, entry) = match result {
                Ok((payload, uid)) => (
                    ResponseBatchItem::success(payload),
                    LogEntry {
                        operation: Some(op),
                        uid,
                        result: "Success".into(),
                    },
                ),
                Err(e) => (
                    ResponseBatchItem::failure(Some(op), e.reason, e.message),
                    LogEntry {
                        operation: Some(op),
                        uid: placeholder.clone(),
                        result: e.reason.to_string(),
                    },
                ),
            };
            out.unique_batch_item_id = bi.unique_batch_item_id.clone();
            let failed = out.result_status != ResultStatus::SUCCESS;
            items.push(out);
            log.push(entry);
            if failed && stop_on_error {
                break;
            }
        }
        let header = ResponseHeader::new(v, now());
        let response = ResponseMessage { header, items };
        (response.encode(), log, false)
    }

    fn refuse(
        &self,
        v: ProtocolVersion,
        reason: ResultReason,
        message: &str,
        close: bool,
    ) -> (Vec<u8>, Vec<LogEntry>, bool) {
        let response = ResponseMessage {
            header: ResponseHeader::new(v, now()),
            items: vec![ResponseBatchItem::failure(None, reason, message)],
        };
        let entry = LogEntry {
            operation: None,
            uid: None,
            result: reason.to_string(),
        };
        (response.encode(), vec![entry], close)
    }

    /// One batch item: the payload, the object it concerns (for the log), or the failure.
    fn operation(
        &self,
        who: &str,
        v: ProtocolVersion,
        payload: &RequestPayload,
        placeholder: &mut Option<String>,
    ) -> Result<(ResponsePayload, Option<String>), OpError> {
        // The ID Placeholder: an omitted identifier means the object of the batch's last
        // Create or Register (or Locate of one object).
        let uid = |u: &Option<String>| -> Result<String, OpError> {
            u.clone().or_else(|| placeholder.clone()).ok_or_else(|| {
                fail(
                    ResultReason::MISSING_DATA,
                    "no Unique Identifier and no ID Placeholder",
                )
            })
        };
        let mut store = self.store.lock().unwrap_or_else(|p| p.into_inner());
        let r = match payload {
            RequestPayload::DiscoverVersions(d) => (
                ResponsePayload::DiscoverVersions(query::discover_versions(v, d)?),
                None,
            ),
            RequestPayload::Query(q) => (ResponsePayload::Query(query::query(q)), None),
            RequestPayload::Create(c) => {
                let resp = create::create(&mut store, who, c)?;
                let id = resp.unique_identifier.clone();
                *placeholder = Some(id.clone());
                (ResponsePayload::Create(resp), Some(id))
            }
            RequestPayload::Register(reg) => {
                let resp = create::register(&mut store, who, reg)?;
                let id = resp.unique_identifier.clone();
                *placeholder = Some(id.clone());
                (ResponsePayload::Register(resp), Some(id))
            }
            RequestPayload::Get(g) => {
                let id = uid(&g.unique_identifier)?;
                let resp = get::get(&store, who, &id, g)?;
                (ResponsePayload::Get(resp), Some(id))
            }
            RequestPayload::GetAttributes(g) => {
                let id = uid(&g.unique_identifier)?;
                let resp = attributes::get_attributes(&store, who, v, &id, g)?;
                (ResponsePayload::GetAttributes(resp), Some(id))
            }
            RequestPayload::GetAttributeList(g) => {
                let id = uid(&g.unique_identifier)?;
                let resp = attributes::get_attribute_list(&store, who, &id)?;
                (ResponsePayload::GetAttributeList(resp), Some(id))
            }
            RequestPayload::AddAttribute(a) => {
                let id = uid(&a.unique_identifier)?;
                let resp = attributes::add(&mut store, who, v, &id, &a.attribute)?;
                (ResponsePayload::AddAttribute(resp), Some(id))
            }
            RequestPayload::ModifyAttribute(m) => {
                let id = uid(&m.unique_identifier)?;
                let resp = attributes::modify(&mut store, who, v, &id, m)?;
                (ResponsePayload::ModifyAttribute(resp), Some(id))
            }
            RequestPayload::DeleteAttribute(d) => {
                let id = uid(&d.unique_identifier)?;
                let resp = attributes::delete(&mut store, who, v, &id, d)?;
                (ResponsePayload::DeleteAttribute(resp), Some(id))
            }
            RequestPayload::Activate(a) => {
                let id = uid(&a.unique_identifier)?;
                let resp = lifecycle::activate(&mut store, who, v, &id)?;
                (ResponsePayload::Activate(resp), Some(id))
            }
            RequestPayload::Revoke(r) => {
                let id = uid(&r.unique_identifier)?;
                let resp = lifecycle::revoke(&mut store, who, v, &id, r)?;
                (ResponsePayload::Revoke(resp), Some(id))
            }
            RequestPayload::Destroy(d) => {
                let id = uid(&d.unique_identifier)?;
                let resp = lifecycle::destroy(&mut store, who, v, &id)?;
                (ResponsePayload::Destroy(resp), Some(id))
            }
            RequestPayload::Locate(l) => {
                let (resp, only) = locate::locate(&store, who, v, l);
                if only.is_some() {
                    *placeholder = only;
                }
                (ResponsePayload::Locate(resp), None)
            }
            RequestPayload::Check(c) => {
                let id = uid(&c.unique_identifier)?;
                let resp = locate::check(&store, who, v, &id, c)?;
                (ResponsePayload::Check(resp), Some(id))
            }
            // Interop (2.1) brackets a conformance test case; there is nothing to set up.
            RequestPayload::Other(op, _) if op.name() == Some("Interop") => {
                (ResponsePayload::Other(*op, Vec::new()), None)
            }
            _ => {
                return Err(fail(
                    ResultReason::OPERATION_NOT_SUPPORTED,
                    format!("{} is not supported by this server", payload.operation()),
                ))
            }
        };
        Ok(r)
    }
}

/// Changes object `id` of `who`: `change` edits a copy, which is stored durably (with a
/// new Last Change Date) before the answer; on error nothing changes.
fn update<T>(
    store: &mut Store,
    who: &str,
    id: &str,
    change: impl FnOnce(&mut Record) -> Result<T, OpError>,
) -> Result<T, OpError> {
    let mut rec = owned(store, who, id)?.clone();
    let out = change(&mut rec)?;
    touch(&mut rec);
    store.put(rec).map_err(store_failed)?;
    Ok(out)
}

fn store_failed(e: crate::store::StoreError) -> OpError {
    log::error!("store: {e}");
    fail(
        ResultReason::GENERAL_FAILURE,
        "the server could not store the object",
    )
}

/// The object `uid` if it exists and belongs to `who`. Another identity's object answers
/// Item Not Found, not Permission Denied, so identifiers cannot be probed for existence.
fn owned<'a>(store: &'a Store, who: &str, uid: &str) -> Result<&'a Record, OpError> {
    match store.get(uid) {
        Some(r) if r.owner == who => Ok(r),
        _ => Err(fail(
            ResultReason::ITEM_NOT_FOUND,
            format!("no object {uid}"),
        )),
    }
}

fn touch(rec: &mut Record) {
    rec.set(Tag::LAST_CHANGE_DATE, Value::DateTime(now()));
}

#[cfg(test)]
mod tests {
    use kmip::enums::{
        BatchErrorContinuationOption, ObjectType, Operation, QueryFunction, ResultReason,
        ResultStatus, RevocationReasonCode, State,
    };
    use kmip::message::op::*;
    use kmip::message::{
        Attribute, Attributes, KeyBlock, ManagedObject, ProtocolVersion, RequestBatchItem,
        RequestHeader, RequestMessage, RequestPayload, ResponseMessage,
    };
    use kmip::ttlv;
    use zeroize::Zeroizing;

    use super::testing::{create_aes, name, new_key, state, store, ALICE, BOB, V2};
    use super::*;
    use crate::auth::{Session, Users};

    fn kms() -> (tempfile::TempDir, Kms) {
        let (t, s) = store();
        (t, Kms::new(s, Users::default()))
    }

    /// A request for `op` that succeeds on a fresh Pre-Active key `id` of the caller when
    /// the requests are sent in the order of [`OPERATIONS`].
    fn request(op: Operation, id: &str) -> RequestPayload {
        let id = Some(id.to_owned());
        match op {
            Operation::CREATE => RequestPayload::Create(create_aes(128, vec![])),
            Operation::REGISTER => RequestPayload::Register(RegisterRequest {
                object_type: ObjectType::SYMMETRIC_KEY,
                attributes: Attributes::default(),
                object: ManagedObject::SymmetricKey(KeyBlock::raw_aes(Zeroizing::new(vec![7; 16]))),
            }),
            Operation::LOCATE => RequestPayload::Locate(LocateRequest::default()),
            Operation::CHECK => RequestPayload::Check(CheckPayload {
                unique_identifier: id,
                ..Default::default()
            }),
            Operation::GET => RequestPayload::Get(GetRequest {
                unique_identifier: id,
                ..Default::default()
            }),
            Operation::GET_ATTRIBUTES => RequestPayload::GetAttributes(GetAttributesRequest {
                unique_identifier: id,
                names: vec![],
            }),
            Operation::GET_ATTRIBUTE_LIST => RequestPayload::GetAttributeList(IdRequest {
                unique_identifier: id,
            }),
            Operation::ADD_ATTRIBUTE => RequestPayload::AddAttribute(AddAttributeRequest {
                unique_identifier: id,
                attribute: name("x"),
            }),
            Operation::MODIFY_ATTRIBUTE => {
                RequestPayload::ModifyAttribute(ModifyAttributeRequest {
                    unique_identifier: id,
                    current: Some(name("x")),
                    new: name("y"),
                })
            }
            Operation::DELETE_ATTRIBUTE => {
                RequestPayload::DeleteAttribute(DeleteAttributeRequest {
                    unique_identifier: id,
                    current: Some(name("y")),
                    name: None,
                    index: None,
                })
            }
            Operation::ACTIVATE => RequestPayload::Activate(IdRequest {
                unique_identifier: id,
            }),
            Operation::REVOKE => RequestPayload::Revoke(RevokeRequest {
                unique_identifier: id,
                reason: RevocationReasonCode::UNSPECIFIED,
                message: None,
                compromise_occurrence_date: None,
            }),
            Operation::DESTROY => RequestPayload::Destroy(IdRequest {
                unique_identifier: id,
            }),
            Operation::QUERY => RequestPayload::Query(QueryRequest {
                functions: vec![QueryFunction::QUERY_OPERATIONS],
            }),
            Operation::DISCOVER_VERSIONS => {
                RequestPayload::DiscoverVersions(DiscoverVersionsRequest::default())
            }
            other => panic!("no request for {other}"),
        }
    }

    fn key_of(kms: &Kms, who: &str) -> String {
        new_key(&mut kms.store.lock().unwrap(), who, "k")
    }

    #[test]
    fn every_operation_query_lists_is_dispatched_and_no_other() {
        let (_t, kms) = kms();
        let id = key_of(&kms, ALICE);
        for op in OPERATIONS {
            let mut placeholder = None;
            let r = kms.operation(ALICE, V2, &request(op, &id), &mut placeholder);
            match r {
                Ok((payload, _)) => assert_eq!(payload.operation(), op),
                Err(e) => panic!("{op}: {:?} {}", e.reason, e.message),
            }
        }
        assert_eq!(state(&kms.store.lock().unwrap(), &id), State::DESTROYED);
        for op in [Operation::REKEY, Operation::CREATE_KEY_PAIR] {
            let e = kms
                .operation(ALICE, V2, &RequestPayload::Other(op, vec![]), &mut None)
                .unwrap_err();
            assert_eq!(e.reason, ResultReason::OPERATION_NOT_SUPPORTED);
            assert_eq!(e.message, format!("{op} is not supported by this server"));
        }
    }

    #[test]
    fn another_identity_gets_item_not_found_exactly_as_for_an_unknown_identifier() {
        let (_t, kms) = kms();
        let id = key_of(&kms, ALICE);
        let before = kms
            .store
            .lock()
            .unwrap()
            .get(&id)
            .unwrap()
            .attributes
            .clone();
        let owned_ops = OPERATIONS.into_iter().filter(|op| {
            ![
                Operation::CREATE,
                Operation::REGISTER,
                Operation::LOCATE,
                Operation::QUERY,
            ]
            .contains(op)
                && *op != Operation::DISCOVER_VERSIONS
        });
        let mut checked = 0;
        for op in owned_ops {
            for (who, uid) in [(BOB, id.as_str()), (ALICE, "no-such-object")] {
                let e = kms
                    .operation(who, V2, &request(op, uid), &mut None)
                    .expect_err(&format!("{op} by {who} on {uid} succeeded"));
                assert_eq!(e.reason, ResultReason::ITEM_NOT_FOUND, "{op}");
                assert_eq!(e.message, format!("no object {uid}"), "{op}");
            }
            checked += 1;
        }
        assert_eq!(checked, 10);
        let (found, _) = kms
            .operation(BOB, V2, &request(Operation::LOCATE, &id), &mut None)
            .unwrap();
        assert_eq!(
            found,
            ResponsePayload::Locate(LocateResponse::default()),
            "Locate shows another identity's objects"
        );
        let store = kms.store.lock().unwrap();
        assert_eq!(store.get(&id).unwrap().attributes, before);
        assert_eq!(store.all().count(), 1);
    }

    #[test]
    fn an_omitted_identifier_means_the_batchs_last_new_or_located_object() {
        let (_t, kms) = kms();
        let mut placeholder = None;
        let e = kms
            .operation(
                ALICE,
                V2,
                &RequestPayload::Get(GetRequest::default()),
                &mut placeholder,
            )
            .unwrap_err();
        assert_eq!(e.reason, ResultReason::MISSING_DATA);
        assert_eq!(e.message, "no Unique Identifier and no ID Placeholder");

        let (_, created) = kms
            .operation(ALICE, V2, &request(Operation::CREATE, ""), &mut placeholder)
            .unwrap();
        assert_eq!(placeholder, created);
        let activate = RequestPayload::Activate(IdRequest::default());
        let (_, activated) = kms
            .operation(ALICE, V2, &activate, &mut placeholder)
            .unwrap();
        assert_eq!(activated, created);
        let created = created.unwrap();
        assert_eq!(state(&kms.store.lock().unwrap(), &created), State::ACTIVE);

        let mut placeholder = None;
        let other = key_of(&kms, ALICE);
        let only_other = RequestPayload::Locate(LocateRequest {
            attributes: Attributes::new(vec![Attribute::new(
                kmip::ttlv::Tag::UNIQUE_IDENTIFIER,
                Value::TextString(other.clone().into()),
            )]),
            ..Default::default()
        });
        kms.operation(ALICE, V2, &only_other, &mut placeholder)
            .unwrap();
        assert_eq!(placeholder.as_deref(), Some(other.as_str()));
        kms.operation(ALICE, V2, &request(Operation::LOCATE, ""), &mut placeholder)
            .unwrap();
        assert_eq!(
            placeholder.as_deref(),
            Some(other.as_str()),
            "two found: kept"
        );
    }

    fn send(
        kms: &Kms,
        items: Vec<RequestPayload>,
        carry_on: bool,
    ) -> (ResponseMessage, Vec<LogEntry>) {
        let mut header = RequestHeader::new(ProtocolVersion::V1_4);
        if carry_on {
            header.batch_error_continuation_option = Some(BatchErrorContinuationOption::CONTINUE);
        }
        let req = RequestMessage {
            header,
            items: items.into_iter().map(RequestBatchItem::new).collect(),
        };
        let (bytes, log, close) = kms.handle(ALICE, &req.encode(), &mut Session::default());
        assert!(!close);
        let item = ttlv::decode(&bytes).unwrap();
        (ResponseMessage::from_item(&item).unwrap(), log)
    }

    #[test]
    fn a_batch_runs_in_order_and_stops_at_a_failure_unless_told_to_continue() {
        let (_t, kms) = kms();
        let activate = || RequestPayload::Activate(IdRequest::default());
        let get = || RequestPayload::Get(GetRequest::default());
        let (r, log) = send(
            &kms,
            vec![request(Operation::CREATE, ""), activate(), get()],
            false,
        );
        assert!(r
            .items
            .iter()
            .all(|i| i.result_status == ResultStatus::SUCCESS));
        let id = log[0].uid.clone().unwrap();
        assert!(log
            .iter()
            .all(|e| e.uid.as_deref() == Some(id.as_str()) && e.result == "Success"));

        let again = RequestPayload::Activate(IdRequest {
            unique_identifier: Some(id.clone()),
        });
        let (r, log) = send(&kms, vec![again.clone(), get()], false);
        assert_eq!(r.items.len(), 1, "the batch went on after a failure");
        assert_eq!(
            r.items[0].result_reason,
            Some(ResultReason::PERMISSION_DENIED)
        );
        assert_eq!(log[0].result, ResultReason::PERMISSION_DENIED.to_string());
        let (r, _) = send(&kms, vec![again, request(Operation::QUERY, "")], true);
        assert_eq!(r.items.len(), 2);
        assert_eq!(r.items[1].result_status, ResultStatus::SUCCESS);

        let (r, log) = send(
            &kms,
            vec![request(Operation::QUERY, ""); MAX_BATCH_ITEMS + 1],
            false,
        );
        assert_eq!(r.items.len(), 1);
        assert_eq!(
            r.items[0].result_reason,
            Some(ResultReason::INVALID_MESSAGE)
        );
        assert_eq!(log[0].operation, None);
    }
}
