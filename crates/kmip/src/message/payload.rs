//! The request and response payloads of every operation atrest models, and the dispatch
//! from an Operation code to its payload type.

use super::fields::Fields;
use super::header::ProtocolVersion;
use super::op::*;
use crate::enums::Operation;
use crate::error::MessageError;
use crate::ttlv::Item;

/// One operation's payload: written field by field in specification order, read leniently.
pub(crate) trait Payload: Sized {
    /// Appends the payload's fields for version `v`.
    fn write(&self, v: ProtocolVersion, out: &mut Vec<Item>);
    /// Reads the payload's fields, consuming those it knows from `f`.
    fn read(f: &mut Fields<'_>, v: ProtocolVersion) -> Result<Self, MessageError>;
}

macro_rules! payload_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident($ty:ty) = $op:ident,)* }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        #[non_exhaustive]
        pub enum $name {
            $(
                #[allow(missing_docs)]
                $variant($ty),
            )*
            /// An operation this model does not type: its fields, kept as sent.
            Other(Operation, Vec<Item>),
        }

        impl $name {
            /// The operation this payload belongs to.
            pub fn operation(&self) -> Operation {
                match self {
                    $(Self::$variant(_) => Operation::$op,)*
                    Self::Other(op, _) => *op,
                }
            }

            pub(crate) fn write(&self, v: ProtocolVersion, out: &mut Vec<Item>) {
                match self {
                    $(Self::$variant(p) => p.write(v, out),)*
                    Self::Other(_, items) => out.extend(items.iter().cloned()),
                }
            }

            pub(crate) fn read(
                op: Operation,
                f: &mut Fields<'_>,
                v: ProtocolVersion,
            ) -> Result<Self, MessageError> {
                Ok(match op {
                    $(Operation::$op => Self::$variant(<$ty>::read(f, v)?),)*
                    _ => Self::Other(op, f.rest_and_consume()),
                })
            }
        }
    };
}

payload_enum! {
    /// The payload of a request batch item.
    RequestPayload {
        DiscoverVersions(DiscoverVersionsRequest) = DISCOVER_VERSIONS,
        Query(QueryRequest) = QUERY,
        Create(CreateRequest) = CREATE,
        Register(RegisterRequest) = REGISTER,
        Get(GetRequest) = GET,
        GetAttributes(GetAttributesRequest) = GET_ATTRIBUTES,
        GetAttributeList(IdRequest) = GET_ATTRIBUTE_LIST,
        AddAttribute(AddAttributeRequest) = ADD_ATTRIBUTE,
        ModifyAttribute(ModifyAttributeRequest) = MODIFY_ATTRIBUTE,
        DeleteAttribute(DeleteAttributeRequest) = DELETE_ATTRIBUTE,
        Activate(IdRequest) = ACTIVATE,
        Revoke(RevokeRequest) = REVOKE,
        Destroy(IdRequest) = DESTROY,
        Locate(LocateRequest) = LOCATE,
        Check(CheckPayload) = CHECK,
    }
}

payload_enum! {
    /// The payload of a successful response batch item.
    ResponsePayload {
        DiscoverVersions(DiscoverVersionsResponse) = DISCOVER_VERSIONS,
        Query(QueryResponse) = QUERY,
        Create(CreateResponse) = CREATE,
        Register(RegisterResponse) = REGISTER,
        Get(GetResponse) = GET,
        GetAttributes(GetAttributesResponse) = GET_ATTRIBUTES,
        GetAttributeList(GetAttributeListResponse) = GET_ATTRIBUTE_LIST,
        AddAttribute(AttributeResponse) = ADD_ATTRIBUTE,
        ModifyAttribute(AttributeResponse) = MODIFY_ATTRIBUTE,
        DeleteAttribute(AttributeResponse) = DELETE_ATTRIBUTE,
        Activate(IdResponse) = ACTIVATE,
        Revoke(IdResponse) = REVOKE,
        Destroy(IdResponse) = DESTROY,
        Locate(LocateResponse) = LOCATE,
        Check(CheckPayload) = CHECK,
    }
}
