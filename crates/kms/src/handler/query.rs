//! Query and Discover Versions: what the server says about itself.
//!
//! They touch no object and are the first thing "Save and Test" sends, so they stay small
//! and separate from the object operations; the list of operations Query reports is the
//! dispatch table in the parent module, so the two cannot drift apart unnoticed.

use kmip::enums::{ObjectType, QueryFunction, ResultReason};
use kmip::message::op::{
    DiscoverVersionsRequest, DiscoverVersionsResponse, QueryRequest, QueryResponse,
};
use kmip::message::ProtocolVersion;
use kmip::ttlv::{Item, Tag};

use super::{fail, OpError, OPERATIONS};

/// What Query says the server is.
pub const VENDOR: &str = "atrest development KMS";

/// Query: the operations, object types and server information asked for.
pub(super) fn query(q: &QueryRequest) -> QueryResponse {
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

/// Discover Versions: the supported versions the client also offered, newest first.
pub(super) fn discover_versions(
    v: ProtocolVersion,
    d: &DiscoverVersionsRequest,
) -> Result<DiscoverVersionsResponse, OpError> {
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
    Ok(DiscoverVersionsResponse { versions })
}

#[cfg(test)]
mod tests {
    use kmip::enums::{ObjectType, Operation, QueryFunction, ResultReason};
    use kmip::message::op::{DiscoverVersionsRequest, QueryRequest};
    use kmip::message::ProtocolVersion;
    use kmip::ttlv::{Tag, Value};

    use super::super::testing::failure;
    use super::*;

    fn asking(functions: Vec<QueryFunction>) -> QueryResponse {
        query(&QueryRequest { functions })
    }

    #[test]
    fn query_lists_the_operations_objects_and_server_asked_for() {
        let r = asking(vec![QueryFunction::QUERY_OPERATIONS]);
        assert_eq!(r.operations, OPERATIONS.to_vec());
        for op in [
            Operation::CREATE,
            Operation::GET,
            Operation::ACTIVATE,
            Operation::REVOKE,
            Operation::DESTROY,
            Operation::LOCATE,
        ] {
            assert!(r.operations.contains(&op), "{op} missing");
        }
        assert!(!r.operations.contains(&Operation::REKEY));
        assert!(r.object_types.is_empty() && r.vendor_identification.is_none());

        let r = asking(vec![
            QueryFunction::QUERY_OBJECTS,
            QueryFunction::QUERY_SERVER_INFORMATION,
        ]);
        assert!(r.operations.is_empty());
        assert_eq!(r.object_types[0], ObjectType::SYMMETRIC_KEY);
        assert_eq!(r.vendor_identification.as_deref(), Some(VENDOR));
        let info = r.server_information.unwrap();
        let text = &info.child(Tag::VENDOR_IDENTIFICATION).unwrap().value;
        assert!(
            matches!(text, Value::TextString(t) if t.ends_with("(development and test use only)")),
            "{text:?}"
        );
        assert_eq!(
            asking(vec![QueryFunction::QUERY_PROFILES]),
            QueryResponse::default()
        );
    }

    #[test]
    fn discover_versions_offers_the_common_versions_newest_first_but_not_to_1_0() {
        let all = discover_versions(ProtocolVersion::V1_1, &DiscoverVersionsRequest::default());
        assert_eq!(all.unwrap().versions, ProtocolVersion::SUPPORTED.to_vec());
        let offered = DiscoverVersionsRequest {
            versions: vec![
                ProtocolVersion::V1_2,
                ProtocolVersion::new(3, 0),
                ProtocolVersion::V2_0,
            ],
        };
        let common = discover_versions(ProtocolVersion::V2_1, &offered).unwrap();
        assert_eq!(
            common.versions,
            vec![ProtocolVersion::V2_0, ProtocolVersion::V1_2]
        );
        let e = failure(discover_versions(ProtocolVersion::V1_0, &offered));
        assert_eq!(e.reason, ResultReason::OPERATION_NOT_SUPPORTED);
        assert_eq!(e.message, "Discover Versions is not part of KMIP 1.0");
    }
}
