//! Query: what the server is and what it can do. "Save and Test" uses it as the harmless
//! request that proves the connection, and to check the server supports the operations
//! Encrypt will need.

use crate::enums::{ObjectType, Operation, QueryFunction};
use crate::error::MessageError;
use crate::message::fields::{as_enum, Fields, PushOpt};
use crate::message::header::ProtocolVersion;
use crate::message::payload::Payload;
use crate::ttlv::{Item, Tag};

/// Query request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryRequest {
    /// What to ask.
    pub functions: Vec<QueryFunction>,
}

/// Query response. Fields beyond these (namespaces, profiles, capabilities) are kept by the
/// batch item as extra fields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryResponse {
    /// Operations the server supports.
    pub operations: Vec<Operation>,
    /// Object types the server supports.
    pub object_types: Vec<ObjectType>,
    /// Vendor Identification.
    pub vendor_identification: Option<String>,
    /// Server Information, a vendor-defined structure.
    pub server_information: Option<Item>,
}

impl Payload for QueryRequest {
    fn write(&self, _: ProtocolVersion, out: &mut Vec<Item>) {
        out.extend(
            self.functions
                .iter()
                .map(|q| Item::enumeration(Tag::QUERY_FUNCTION, q.0)),
        );
    }
    fn read(f: &mut Fields<'_>, _: ProtocolVersion) -> Result<Self, MessageError> {
        let functions = f
            .take_all(Tag::QUERY_FUNCTION)
            .into_iter()
            .map(|i| as_enum(i).map(QueryFunction))
            .collect::<Result<_, _>>()?;
        Ok(Self { functions })
    }
}

impl Payload for QueryResponse {
    fn write(&self, _: ProtocolVersion, out: &mut Vec<Item>) {
        out.extend(
            self.operations
                .iter()
                .map(|o| Item::enumeration(Tag::OPERATION, o.0)),
        );
        out.extend(
            self.object_types
                .iter()
                .map(|o| Item::enumeration(Tag::OBJECT_TYPE, o.0)),
        );
        out.push_opt(self.vendor_identification.clone(), |v| {
            Item::text(Tag::VENDOR_IDENTIFICATION, v)
        });
        out.push_opt(self.server_information.clone(), |v| v);
    }
    fn read(f: &mut Fields<'_>, _: ProtocolVersion) -> Result<Self, MessageError> {
        let operations = f
            .take_all(Tag::OPERATION)
            .into_iter()
            .map(|i| as_enum(i).map(Operation))
            .collect::<Result<_, _>>()?;
        let object_types = f
            .take_all(Tag::OBJECT_TYPE)
            .into_iter()
            .map(|i| as_enum(i).map(ObjectType))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            operations,
            object_types,
            vendor_identification: f.opt_text(Tag::VENDOR_IDENTIFICATION)?,
            server_information: f.take(Tag::SERVER_INFORMATION).cloned(),
        })
    }
}
