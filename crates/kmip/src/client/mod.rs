//! A blocking KMIP client over mutual TLS, with version negotiation, the KMIP Credential,
//! timeouts, one retry on an idle-closed connection, failover across servers, and rounds
//! of retries with backoff and jitter while every server is busy.
//!
//! ```text
//! Client::call ─▶ current connection? ─ok─▶ answer
//!                  │ closed while idle: reconnect to the same server, retry once
//!                  ▼ unreachable: next server in order (connect, negotiate, send)
//!                  ▼ all busy (refused, reset, closed): wait, another round, up to
//!                    ClientConfig::busy_retry
//! ```
//! Only failures to reach or understand a server move on to the next one. A server that
//! answers "Operation Failed" has spoken: its answer is returned, not retried elsewhere
//! (another server would hold the same keys, so its answer would be the same).

mod busy;
mod config;
mod connection;
mod error;
mod tls;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

pub use busy::Backoff;
pub use config::{ClientConfig, Identity, ServerAddr, VersionChoice, DEFAULT_PORT};
pub use connection::TlsInfo;
pub use error::{ClientError, IdentityError};
pub use tls::{expiry as certificate_expiry, subject as certificate_subject};

use crate::enums::{
    usage_mask, CryptographicAlgorithm, NameType, ObjectType, Operation, QueryFunction,
    ResultReason, ResultStatus, RevocationReasonCode, State,
};
use crate::message::op::*;
use crate::message::{
    Attribute, AttributeName, Attributes, Credential, ManagedObject, ProtocolVersion,
    RequestBatchItem, RequestHeader, RequestMessage, RequestPayload, ResponseMessage,
    ResponsePayload,
};
use crate::ttlv::{self, Item, Limits, Tag, Value};
use connection::Connection;

/// What the client knows about the server it is talking to.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    /// The server that answered.
    pub server: ServerAddr,
    /// The negotiated KMIP version.
    pub version: ProtocolVersion,
    /// The TLS session.
    pub tls: TlsInfo,
}

/// A KMIP client.
pub struct Client {
    config: ClientConfig,
    tls: tls::TlsContext,
    conn: Option<Connection>,
    /// Negotiated version per server, so negotiation happens once per server.
    versions: HashMap<String, ProtocolVersion>,
    limits: Limits,
}

impl Client {
    /// A client for `config`. Loads the CA and the client identity now, so a wrong
    /// passphrase is reported before any connection is tried.
    pub fn new(config: ClientConfig) -> Result<Self, IdentityError> {
        if config.servers.is_empty() {
            return Err(IdentityError::NoServers);
        }
        let tls = tls::context(&config)?;
        Ok(Self {
            config,
            tls,
            conn: None,
            versions: HashMap::new(),
            limits: Limits::default(),
        })
    }

    /// The client certificate's expiry: (notAfter, days left).
    pub fn client_certificate_expiry(&self) -> (&str, i32) {
        (&self.tls.client_not_after, self.tls.client_days_left)
    }

    /// The server of the current connection, once one is open.
    pub fn server_info(&self) -> Option<ServerInfo> {
        let c = self.conn.as_ref()?;
        Some(ServerInfo {
            server: c.server.clone(),
            version: *self.versions.get(&c.server.to_string())?,
            tls: c.tls.clone(),
        })
    }

    /// Closes the current connection, if any. Called after a key was fetched: the TLS
    /// library's buffers held the key in the clear, and freeing them now (rather than
    /// when the next request overwrites them) keeps that copy's life short.
    pub fn disconnect(&mut self) {
        self.conn = None;
    }

    /// Sends one operation and returns its payload, failing over across servers, and
    /// trying again in rounds while they are busy (see [`ClientConfig::busy_retry`]).
    pub fn call(&mut self, payload: RequestPayload) -> Result<ResponsePayload, ClientError> {
        let deadline = Instant::now() + self.config.busy_retry;
        let mut backoff = busy::Backoff::default();
        loop {
            match self.call_once(&payload) {
                Err(e) if busy::passes(&e, payload.operation()) => {
                    let wait = backoff.wait();
                    if Instant::now() + wait >= deadline {
                        return Err(e);
                    }
                    log::info!("KMIP servers busy ({e}); trying again in {wait:?}");
                    std::thread::sleep(wait);
                }
                r => return r,
            }
        }
    }

    /// One round: the current connection, then every server in order.
    fn call_once(&mut self, payload: &RequestPayload) -> Result<ResponsePayload, ClientError> {
        let mut errors = Vec::new();
        if let Some(mut conn) = self.conn.take() {
            let reused = conn.answered > 0;
            match self.exchange(&mut conn, payload) {
                Ok(r) => {
                    self.conn = Some(conn);
                    return Ok(r);
                }
                // Servers close idle connections (some after 30 s): reconnect once to the
                // same server before calling it down.
                Err(ClientError::Closed { .. } | ClientError::Io { .. }) if reused => {
                    let server = conn.server.clone();
                    drop(conn);
                    match self.connect_and_call(&server, payload) {
                        Ok(r) => return Ok(r),
                        Err(e) if e.is_connection_failure() => errors.push(e),
                        Err(e) => return Err(e),
                    }
                }
                Err(e) if e.is_connection_failure() => errors.push(e),
                Err(e) => {
                    self.conn = Some(conn);
                    return Err(e);
                }
            }
        }
        for server in self.config.servers.clone() {
            if errors.iter().any(|e| names_server(e, &server)) {
                continue;
            }
            match self.connect_and_call(&server, payload) {
                Ok(r) => return Ok(r),
                Err(e) if e.is_connection_failure() => errors.push(e),
                Err(e) => return Err(e),
            }
        }
        Err(match errors.len() {
            1 => errors.pop().unwrap_or_else(|| unreachable!()),
            _ => ClientError::AllServersFailed(errors),
        })
    }

    fn connect_and_call(
        &mut self,
        server: &ServerAddr,
        payload: &RequestPayload,
    ) -> Result<ResponsePayload, ClientError> {
        let mut conn = Connection::open(&self.tls.context, server, self.config.connect_timeout)?;
        self.negotiate(&mut conn)?;
        let r = self.exchange(&mut conn, payload);
        if r.is_ok() || !matches!(&r, Err(e) if e.is_connection_failure()) {
            self.conn = Some(conn);
        }
        r
    }

    /// Settles the version for `conn`'s server, once.
    fn negotiate(&mut self, conn: &mut Connection) -> Result<(), ClientError> {
        let key = conn.server.to_string();
        if self.versions.contains_key(&key) {
            return Ok(());
        }
        let version = match self.config.version {
            VersionChoice::Fixed(v) => v,
            VersionChoice::Auto => {
                // Header 1.1, the first version that has Discover Versions: servers reject
                // a header newer than they know rather than answering in their own.
                let ask = RequestPayload::DiscoverVersions(DiscoverVersionsRequest {
                    versions: ProtocolVersion::SUPPORTED.to_vec(),
                });
                match self.send(conn, ProtocolVersion::V1_1, &ask) {
                    Ok(ResponsePayload::DiscoverVersions(d)) => *d
                        .versions
                        .iter()
                        .find(|v| ProtocolVersion::SUPPORTED.contains(v))
                        .ok_or_else(|| ClientError::NoCommonVersion {
                            server: key.clone(),
                            offered: d.versions.clone(),
                        })?,
                    Ok(_) => unreachable!("send checks the operation"),
                    // A 1.0 server does not know the operation, or the 1.1 header.
                    Err(ClientError::Rejected { .. }) => ProtocolVersion::V1_0,
                    Err(ClientError::Closed { .. }) => {
                        *conn = Connection::open(
                            &self.tls.context,
                            &conn.server.clone(),
                            self.config.connect_timeout,
                        )?;
                        ProtocolVersion::V1_0
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        self.versions.insert(key, version);
        Ok(())
    }

    fn exchange(
        &mut self,
        conn: &mut Connection,
        payload: &RequestPayload,
    ) -> Result<ResponsePayload, ClientError> {
        let v = self.versions[&conn.server.to_string()];
        self.send(conn, v, payload)
    }

    fn send(
        &self,
        conn: &mut Connection,
        version: ProtocolVersion,
        payload: &RequestPayload,
    ) -> Result<ResponsePayload, ClientError> {
        let server = conn.server.to_string();
        let mut header = RequestHeader::new(version);
        if let Some(username) = &self.config.username {
            header.authentication.push(Credential::UsernamePassword {
                username: username.clone(),
                password: self.config.password.clone(),
            });
        }
        let request = RequestMessage {
            header,
            items: vec![RequestBatchItem::new(payload.clone())],
        };
        let bytes = Zeroizing::new(request.encode());
        let answer = conn.round_trip(&bytes, self.config.request_timeout, &self.limits)?;
        let item =
            ttlv::decode_with(&answer, self.limits).map_err(|source| ClientError::Decode {
                server: server.clone(),
                source,
            })?;
        let response =
            ResponseMessage::from_item(&item).map_err(|source| ClientError::Message {
                server: server.clone(),
                source,
            })?;
        let op = payload.operation();
        let [bi] = <[_; 1]>::try_from(response.items).map_err(|items: Vec<_>| {
            ClientError::Misbehaved {
                server: server.clone(),
                detail: format!("{} batch items in the answer to one request", items.len()),
            }
        })?;
        if bi.operation.is_some_and(|o| o != op) {
            return Err(ClientError::Misbehaved {
                server,
                detail: format!("answered {:?} to {op}", bi.operation),
            });
        }
        match bi.result_status {
            ResultStatus::SUCCESS => bi.payload.ok_or_else(|| ClientError::Misbehaved {
                server,
                detail: format!("{op} succeeded without a payload"),
            }),
            ResultStatus::OPERATION_FAILED => Err(ClientError::Rejected {
                server,
                operation: op,
                reason: bi.result_reason.unwrap_or(ResultReason::GENERAL_FAILURE),
                message: bi.result_message,
            }),
            other => Err(ClientError::Misbehaved {
                server,
                detail: format!(
                    "result status {other} (asynchronous operations are not used by atrest)"
                ),
            }),
        }
    }

    // ---------------------------------------------------------------------------------
    // Operations

    /// Discover Versions: what the server speaks, in its order of preference.
    pub fn discover_versions(&mut self) -> Result<Vec<ProtocolVersion>, ClientError> {
        match self.call(RequestPayload::DiscoverVersions(Default::default()))? {
            ResponsePayload::DiscoverVersions(d) => Ok(d.versions),
            _ => unreachable!("send checks the operation"),
        }
    }

    /// Query: operations, object types, vendor and server information.
    pub fn query(&mut self) -> Result<QueryResponse, ClientError> {
        let q = QueryRequest {
            functions: vec![
                QueryFunction::QUERY_OPERATIONS,
                QueryFunction::QUERY_OBJECTS,
                QueryFunction::QUERY_SERVER_INFORMATION,
            ],
        };
        match self.call(RequestPayload::Query(q))? {
            ResponsePayload::Query(r) => Ok(r),
            _ => unreachable!("send checks the operation"),
        }
    }

    /// Creates an AES key of `bits` bits for encryption and decryption, named `name`.
    /// Returns its Unique Identifier. The key is Pre-Active until [`Client::activate`].
    pub fn create_aes_key(&mut self, bits: i32, name: Option<&str>) -> Result<String, ClientError> {
        let mut list = vec![
            Attribute::new(
                Tag::CRYPTOGRAPHIC_ALGORITHM,
                Value::Enumeration(CryptographicAlgorithm::AES.0),
            ),
            Attribute::new(Tag::CRYPTOGRAPHIC_LENGTH, Value::Integer(bits)),
            Attribute::new(
                Tag::CRYPTOGRAPHIC_USAGE_MASK,
                Value::Integer(usage_mask::ENCRYPT | usage_mask::DECRYPT),
            ),
        ];
        if let Some(n) = name {
            list.push(Attribute::new(
                Tag::NAME,
                Value::Structure(vec![
                    Item::text(Tag::NAME_VALUE, n),
                    Item::enumeration(Tag::NAME_TYPE, NameType::UNINTERPRETED_TEXT_STRING.0),
                ]),
            ));
        }
        let req = CreateRequest {
            object_type: ObjectType::SYMMETRIC_KEY,
            attributes: Attributes::new(list),
        };
        match self.call(RequestPayload::Create(req))? {
            ResponsePayload::Create(r) => Ok(r.unique_identifier),
            _ => unreachable!("send checks the operation"),
        }
    }

    /// Activate.
    pub fn activate(&mut self, uid: &str) -> Result<(), ClientError> {
        self.call(RequestPayload::Activate(id(uid))).map(drop)
    }

    /// Get: the object as the server returns it.
    pub fn get(&mut self, uid: &str) -> Result<GetResponse, ClientError> {
        let req = GetRequest {
            unique_identifier: Some(uid.to_owned()),
            ..Default::default()
        };
        match self.call(RequestPayload::Get(req))? {
            ResponsePayload::Get(r) => Ok(r),
            _ => unreachable!("send checks the operation"),
        }
    }

    /// Get, for a symmetric key: its bytes, from a Raw or Transparent Symmetric Key block.
    pub fn get_symmetric_key(&mut self, uid: &str) -> Result<Zeroizing<Vec<u8>>, ClientError> {
        let server = self.config.servers[0].to_string();
        let r = self.get(uid)?;
        let server = self.server_info().map_or(server, |s| s.server.to_string());
        match r.object {
            ManagedObject::SymmetricKey(kb) => {
                kb.symmetric_key()
                    .cloned()
                    .map_err(|e| ClientError::Misbehaved {
                        server,
                        detail: e.to_string(),
                    })
            }
            ManagedObject::Other(item) => Err(ClientError::Misbehaved {
                server,
                detail: format!(
                    "object {uid} is a {} (object type {}), not a symmetric key",
                    item.tag, r.object_type
                ),
            }),
        }
    }

    /// Get Attributes: the named attributes, or all when `names` is empty.
    pub fn get_attributes(&mut self, uid: &str, names: &[Tag]) -> Result<Attributes, ClientError> {
        let req = GetAttributesRequest {
            unique_identifier: Some(uid.to_owned()),
            names: names.iter().map(|t| AttributeName::Standard(*t)).collect(),
        };
        match self.call(RequestPayload::GetAttributes(req))? {
            ResponsePayload::GetAttributes(r) => Ok(r.attributes),
            _ => unreachable!("send checks the operation"),
        }
    }

    /// The object's lifecycle State.
    pub fn state(&mut self, uid: &str) -> Result<State, ClientError> {
        let attrs = self.get_attributes(uid, &[Tag::STATE])?;
        let server = self
            .server_info()
            .map(|s| s.server.to_string())
            .unwrap_or_default();
        attrs
            .get(Tag::STATE)
            .and_then(Attribute::as_enumeration)
            .map(State)
            .ok_or(ClientError::Misbehaved {
                server,
                detail: format!("no State attribute for {uid}"),
            })
    }

    /// Locate: the identifiers of objects named `name`.
    pub fn locate_by_name(&mut self, name: &str) -> Result<Vec<String>, ClientError> {
        let req = LocateRequest {
            attributes: Attributes::new(vec![Attribute::new(
                Tag::NAME,
                Value::Structure(vec![
                    Item::text(Tag::NAME_VALUE, name),
                    Item::enumeration(Tag::NAME_TYPE, NameType::UNINTERPRETED_TEXT_STRING.0),
                ]),
            )]),
            ..Default::default()
        };
        match self.call(RequestPayload::Locate(req))? {
            ResponsePayload::Locate(r) => Ok(r.unique_identifiers),
            _ => unreachable!("send checks the operation"),
        }
    }

    /// Revoke, with a reason.
    pub fn revoke(
        &mut self,
        uid: &str,
        reason: RevocationReasonCode,
        message: Option<&str>,
    ) -> Result<(), ClientError> {
        let req = RevokeRequest {
            unique_identifier: Some(uid.to_owned()),
            reason,
            message: message.map(str::to_owned),
            compromise_occurrence_date: None,
        };
        self.call(RequestPayload::Revoke(req)).map(drop)
    }

    /// Destroy (servers refuse it for an Active key: revoke first).
    pub fn destroy(&mut self, uid: &str) -> Result<(), ClientError> {
        self.call(RequestPayload::Destroy(id(uid))).map(drop)
    }

    /// Times one Query round trip on the current (or a new) connection.
    pub fn ping(&mut self) -> Result<(QueryResponse, Duration), ClientError> {
        let started = Instant::now();
        let q = self.query()?;
        Ok((q, started.elapsed()))
    }
}

fn id(uid: &str) -> IdRequest {
    IdRequest {
        unique_identifier: Some(uid.to_owned()),
    }
}

fn names_server(e: &ClientError, server: &ServerAddr) -> bool {
    e.to_string().starts_with(&format!("{server}:"))
}

/// The operations Encrypt and every start need, for "Save and Test" to check.
pub const NEEDED_OPERATIONS: [Operation; 7] = [
    Operation::CREATE,
    Operation::ACTIVATE,
    Operation::GET,
    Operation::GET_ATTRIBUTES,
    Operation::LOCATE,
    Operation::REVOKE,
    Operation::DESTROY,
];
