//! Discover Versions (KMIP 1.1+): the client lists the versions it speaks, the server answers
//! with those it also speaks, in its order of preference. An empty request list asks for all.

use crate::error::MessageError;
use crate::message::fields::Fields;
use crate::message::header::ProtocolVersion;
use crate::message::payload::Payload;
use crate::ttlv::{Item, Tag};

/// Discover Versions request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiscoverVersionsRequest {
    /// Versions the client offers, most preferred first.
    pub versions: Vec<ProtocolVersion>,
}

/// Discover Versions response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiscoverVersionsResponse {
    /// Versions the server accepts, most preferred first.
    pub versions: Vec<ProtocolVersion>,
}

fn write_versions(versions: &[ProtocolVersion], out: &mut Vec<Item>) {
    out.extend(versions.iter().map(|v| v.to_item()));
}

fn read_versions(f: &mut Fields<'_>) -> Result<Vec<ProtocolVersion>, MessageError> {
    f.take_all(Tag::PROTOCOL_VERSION)
        .into_iter()
        .map(ProtocolVersion::from_item)
        .collect()
}

impl Payload for DiscoverVersionsRequest {
    fn write(&self, _: ProtocolVersion, out: &mut Vec<Item>) {
        write_versions(&self.versions, out)
    }
    fn read(f: &mut Fields<'_>, _: ProtocolVersion) -> Result<Self, MessageError> {
        Ok(Self {
            versions: read_versions(f)?,
        })
    }
}

impl Payload for DiscoverVersionsResponse {
    fn write(&self, _: ProtocolVersion, out: &mut Vec<Item>) {
        write_versions(&self.versions, out)
    }
    fn read(f: &mut Fields<'_>, _: ProtocolVersion) -> Result<Self, MessageError> {
        Ok(Self {
            versions: read_versions(f)?,
        })
    }
}
