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

/// One table of the typed operations, so that an operation is typed in both directions or
/// in neither: each row is the variant, its request and response payloads, the operation.
macro_rules! payloads {
    ($($variant:ident($req:ty, $resp:ty) = $op:ident,)*) => {
        payload_enum! {
            /// The payload of a request batch item.
            RequestPayload { $($variant($req) = $op,)* }
        }
        payload_enum! {
            /// The payload of a successful response batch item.
            ResponsePayload { $($variant($resp) = $op,)* }
        }
    };
}

payloads! {
    DiscoverVersions(DiscoverVersionsRequest, DiscoverVersionsResponse) = DISCOVER_VERSIONS,
    Query(QueryRequest, QueryResponse) = QUERY,
    Create(CreateRequest, CreateResponse) = CREATE,
    Register(RegisterRequest, RegisterResponse) = REGISTER,
    Get(GetRequest, GetResponse) = GET,
    GetAttributes(GetAttributesRequest, GetAttributesResponse) = GET_ATTRIBUTES,
    GetAttributeList(IdRequest, GetAttributeListResponse) = GET_ATTRIBUTE_LIST,
    AddAttribute(AddAttributeRequest, AttributeResponse) = ADD_ATTRIBUTE,
    ModifyAttribute(ModifyAttributeRequest, AttributeResponse) = MODIFY_ATTRIBUTE,
    DeleteAttribute(DeleteAttributeRequest, AttributeResponse) = DELETE_ATTRIBUTE,
    Activate(IdRequest, IdResponse) = ACTIVATE,
    Revoke(RevokeRequest, IdResponse) = REVOKE,
    Destroy(IdRequest, IdResponse) = DESTROY,
    Locate(LocateRequest, LocateResponse) = LOCATE,
    Check(CheckPayload, CheckPayload) = CHECK,
}
