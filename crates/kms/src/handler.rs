//! From one request message to one response message: version check, authentication, then
//! each batch item in order against the store, with the object lifecycle of the KMIP
//! specification (Pre-Active → Active → Deactivated/Compromised → Destroyed).

use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use kmip::enums::{
    BatchErrorContinuationOption, CryptographicAlgorithm, KeyFormatType, NameType, ObjectType,
    Operation, QueryFunction, ResultReason, ResultStatus, RevocationReasonCode, State,
};
use kmip::message::op::*;
use kmip::message::{
    Attribute, AttributeName, Attributes, KeyBlock, KeyMaterial, KeyValue, ManagedObject,
    ProtocolVersion, RequestMessage, RequestPayload, ResponseBatchItem, ResponseHeader,
    ResponseMessage, ResponsePayload,
};
use kmip::ttlv::{self, Item, Limits, Tag, Value};
use zeroize::Zeroizing;

use crate::auth::Users;
use crate::store::{Record, Store};

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

/// What Query says the server is.
pub const VENDOR: &str = "atrest development KMS";

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Attributes only the server sets.
fn server_managed(t: Tag) -> bool {
    const NAMES: [&str; 8] = [
        "UniqueIdentifier",
        "ObjectType",
        "State",
        "InitialDate",
        "LastChangeDate",
        "DestroyDate",
        "CompromiseDate",
        "Digest",
    ];
    t.name().is_some_and(|n| NAMES.contains(&n))
}

fn tag(name: &str) -> Tag {
    Tag::from_name(name).unwrap_or_else(|| panic!("registry lacks {name}"))
}

/// Attributes that may appear more than once.
fn multi_valued(name: &AttributeName) -> bool {
    match name {
        AttributeName::Vendor { .. } => true,
        AttributeName::Standard(t) => [
            "Name",
            "Link",
            "ApplicationSpecificInformation",
            "ObjectGroup",
            "AlternativeName",
        ]
        .iter()
        .any(|n| Tag::from_name(n) == Some(*t)),
    }
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
            RequestPayload::DiscoverVersions(d) => {
                if v == ProtocolVersion::V1_0 {
                    return Err(fail(
                        ResultReason::OPERATION_NOT_SUPPORTED,
                        "Discover Versions is not part of KMIP 1.0",
                    ));
                }
                let versions = ProtocolVersion::SUPPORTED
                    .into_iter()
                    .filter(|s| d.versions.is_empty() || d.versions.contains(s))
                    .collect();
                (
                    ResponsePayload::DiscoverVersions(DiscoverVersionsResponse { versions }),
                    None,
                )
            }
            RequestPayload::Query(q) => (ResponsePayload::Query(query(q)), None),
            RequestPayload::Create(c) => {
                let rec = create(&store, who, c)?;
                let id = rec.uid.clone();
                store.put(rec).map_err(store_failed)?;
                *placeholder = Some(id.clone());
                let resp = CreateResponse {
                    object_type: c.object_type,
                    unique_identifier: id.clone(),
                    attributes: None,
                };
                (ResponsePayload::Create(resp), Some(id))
            }
            RequestPayload::Register(reg) => {
                let rec = register(&store, who, reg)?;
                let id = rec.uid.clone();
                store.put(rec).map_err(store_failed)?;
                *placeholder = Some(id.clone());
                let resp = RegisterResponse {
                    unique_identifier: id.clone(),
                    attributes: None,
                };
                (ResponsePayload::Register(resp), Some(id))
            }
            RequestPayload::Get(g) => {
                let id = uid(&g.unique_identifier)?;
                let rec = owned(&store, who, &id)?;
                let object = store.object(rec).map_err(store_failed)?.ok_or_else(|| {
                    fail(
                        ResultReason::ITEM_NOT_FOUND,
                        format!("object {id} has been destroyed"),
                    )
                })?;
                let object = convert_format(rec.object_type, object, g)?;
                let resp = GetResponse {
                    object_type: rec.object_type,
                    unique_identifier: id.clone(),
                    object,
                };
                (ResponsePayload::Get(resp), Some(id))
            }
            RequestPayload::GetAttributes(g) => {
                let id = uid(&g.unique_identifier)?;
                let rec = owned(&store, who, &id)?;
                let names: Vec<AttributeName> =
                    g.names.iter().map(AttributeName::canonical).collect();
                let list = rec
                    .attributes
                    .list
                    .iter()
                    .filter(|a| names.is_empty() || names.contains(&a.name))
                    .map(|a| for_version(a, v))
                    .collect();
                let resp = GetAttributesResponse {
                    unique_identifier: id.clone(),
                    attributes: Attributes::new(list),
                };
                (ResponsePayload::GetAttributes(resp), Some(id))
            }
            RequestPayload::GetAttributeList(g) => {
                let id = uid(&g.unique_identifier)?;
                let rec = owned(&store, who, &id)?;
                let mut names: Vec<AttributeName> = Vec::new();
                for a in &rec.attributes.list {
                    if !names.contains(&a.name) {
                        names.push(a.name.clone());
                    }
                }
                let resp = GetAttributeListResponse {
                    unique_identifier: id.clone(),
                    names,
                };
                (ResponsePayload::GetAttributeList(resp), Some(id))
            }
            RequestPayload::AddAttribute(a) => {
                let (id, resp) =
                    change_attribute(&mut store, who, v, uid(&a.unique_identifier)?, |rec| {
                        add_attribute(rec, v, &a.attribute)
                    })?;
                (ResponsePayload::AddAttribute(resp), Some(id))
            }
            RequestPayload::ModifyAttribute(m) => {
                let (id, resp) =
                    change_attribute(&mut store, who, v, uid(&m.unique_identifier)?, |rec| {
                        modify_attribute(rec, v, m)
                    })?;
                (ResponsePayload::ModifyAttribute(resp), Some(id))
            }
            RequestPayload::DeleteAttribute(d) => {
                let (id, resp) =
                    change_attribute(&mut store, who, v, uid(&d.unique_identifier)?, |rec| {
                        delete_attribute(rec, v, d)
                    })?;
                (ResponsePayload::DeleteAttribute(resp), Some(id))
            }
            RequestPayload::Activate(a) => {
                let id = uid(&a.unique_identifier)?;
                update(&mut store, who, &id, |rec| activate(rec, v))?;
                let resp = IdResponse {
                    unique_identifier: id.clone(),
                };
                (ResponsePayload::Activate(resp), Some(id))
            }
            RequestPayload::Revoke(r) => {
                let id = uid(&r.unique_identifier)?;
                update(&mut store, who, &id, |rec| revoke(rec, v, r))?;
                let resp = IdResponse {
                    unique_identifier: id.clone(),
                };
                (ResponsePayload::Revoke(resp), Some(id))
            }
            RequestPayload::Destroy(d) => {
                let id = uid(&d.unique_identifier)?;
                update(&mut store, who, &id, |rec| destroy(rec, v))?;
                let resp = IdResponse {
                    unique_identifier: id.clone(),
                };
                (ResponsePayload::Destroy(resp), Some(id))
            }
            RequestPayload::Locate(l) => {
                let found = locate(&store, who, l);
                if found.len() == 1 {
                    *placeholder = Some(found[0].clone());
                }
                let total = found.len() as i32;
                let skip = l.offset_items.unwrap_or(0).max(0) as usize;
                let take = l
                    .maximum_items
                    .filter(|m| *m > 0)
                    .map_or(usize::MAX, |m| m as usize);
                let uids: Vec<String> = found.into_iter().skip(skip).take(take).collect();
                let located =
                    (v >= ProtocolVersion::V1_3 && l.offset_items.is_some()).then_some(total);
                (
                    ResponsePayload::Locate(LocateResponse {
                        located_items: located,
                        unique_identifiers: uids,
                    }),
                    None,
                )
            }
            RequestPayload::Check(c) => {
                let id = uid(&c.unique_identifier)?;
                let rec = owned(&store, who, &id)?;
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
                let resp = CheckPayload {
                    unique_identifier: Some(id.clone()),
                    ..Default::default()
                };
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

/// An attribute as version `v` writes it: KMIP 1.0's Digest has no Key Format Type.
fn for_version(a: &Attribute, v: ProtocolVersion) -> Attribute {
    match &a.value {
        Value::Structure(c)
            if v == ProtocolVersion::V1_0 && a.tag() == Tag::from_name("Digest") =>
        {
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

/// The Digest attribute of a key: SHA-256 over the Raw key bytes.
fn digest(key: &[u8]) -> Attribute {
    let d = openssl::sha::sha256(key);
    Attribute::new(
        tag("Digest"),
        Value::Structure(vec![
            Item::enumeration(tag("HashingAlgorithm"), 6), // SHA-256
            Item::bytes(tag("DigestValue"), d.to_vec()),
            Item::enumeration(Tag::KEY_FORMAT_TYPE, KeyFormatType::RAW.0),
        ]),
    )
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

/// Add, Modify or Delete Attribute on object `id`; 1.x answers with the attribute, 2.x
/// with the identifier only.
fn change_attribute(
    store: &mut Store,
    who: &str,
    v: ProtocolVersion,
    id: String,
    change: impl FnOnce(&mut Record) -> Result<Attribute, OpError>,
) -> Result<(String, AttributeResponse), OpError> {
    let attr = update(store, who, &id, change)?;
    let resp = AttributeResponse {
        unique_identifier: id.clone(),
        attribute: (!v.uses_v2_attributes()).then_some(attr),
    };
    Ok((id, resp))
}

fn activate(rec: &mut Record, v: ProtocolVersion) -> Result<(), OpError> {
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
    rec.set(tag("ActivationDate"), Value::DateTime(now()));
    Ok(())
}

fn destroy(rec: &mut Record, v: ProtocolVersion) -> Result<(), OpError> {
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
    rec.set(tag("DestroyDate"), Value::DateTime(now()));
    rec.destroy_material();
    Ok(())
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
    rec.set(tag("LastChangeDate"), Value::DateTime(now()));
}

fn query(q: &QueryRequest) -> QueryResponse {
    let mut r = QueryResponse::default();
    for f in &q.functions {
        match *f {
            QueryFunction::QUERY_OPERATIONS => r.operations = OPERATIONS.to_vec(),
            QueryFunction::QUERY_OBJECTS => {
                r.object_types = vec![
                    ObjectType::SYMMETRIC_KEY,
                    ObjectType::SECRET_DATA,
                    ObjectType::OPAQUE_OBJECT,
                ]
            }
            QueryFunction::QUERY_SERVER_INFORMATION => {
                r.vendor_identification = Some(VENDOR.into());
                r.server_information = Some(Item::structure(
                    Tag::SERVER_INFORMATION,
                    vec![Item::text(
                        Tag::VENDOR_IDENTIFICATION,
                        format!(
                            "atrest {} (development and test use only)",
                            env!("CARGO_PKG_VERSION")
                        ),
                    )],
                ));
            }
            _ => {}
        }
    }
    r
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
        .get(tag("ActivationDate"))
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
    list.push(Attribute::new(tag("InitialDate"), Value::DateTime(t)));
    list.push(Attribute::new(tag("LastChangeDate"), Value::DateTime(t)));
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

fn create(store: &Store, who: &str, c: &CreateRequest) -> Result<Record, OpError> {
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

fn register(store: &Store, who: &str, r: &RegisterRequest) -> Result<Record, OpError> {
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
        Some(t)
            if Some(t) == Tag::from_name("ActivationDate") && rec.state() != State::PRE_ACTIVE =>
        {
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

fn revoke(rec: &mut Record, v: ProtocolVersion, r: &RevokeRequest) -> Result<(), OpError> {
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
        rec.set(tag("CompromiseDate"), Value::DateTime(t));
        rec.set(
            Tag::COMPROMISE_OCCURRENCE_DATE,
            Value::DateTime(r.compromise_occurrence_date.unwrap_or(t)),
        );
    } else if state != State::COMPROMISED {
        rec.set(Tag::STATE, Value::Enumeration(State::DEACTIVATED.0));
        rec.set(tag("DeactivationDate"), Value::DateTime(t));
    }
    let mut reason = vec![Item::enumeration(Tag::REVOCATION_REASON_CODE, r.reason.0)];
    if let Some(m) = &r.message {
        reason.push(Item::text(Tag::REVOCATION_MESSAGE, m.as_str()));
    }
    rec.set(Tag::REVOCATION_REASON, Value::Structure(reason));
    Ok(())
}

/// Objects of `who` that carry every requested attribute, newest last.
fn locate(store: &Store, who: &str, l: &LocateRequest) -> Vec<String> {
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
