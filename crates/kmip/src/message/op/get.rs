//! Get: fetch a managed object (for atrest, the volume's key at every start).

use crate::enums::{KeyFormatType, ObjectType};
use crate::error::MessageError;
use crate::message::fields::{Fields, PushOpt};
use crate::message::header::ProtocolVersion;
use crate::message::object::ManagedObject;
use crate::message::payload::Payload;
use crate::ttlv::{Item, Tag};

use super::create::take_object;

/// Get request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GetRequest {
    /// The object; absent means the ID Placeholder of the batch.
    pub unique_identifier: Option<String>,
    /// The format wanted (Raw, Transparent Symmetric Key, ...).
    pub key_format_type: Option<KeyFormatType>,
    /// Key Wrap Type (1.4+).
    pub key_wrap_type: Option<u32>,
    /// Key Compression Type.
    pub key_compression_type: Option<u32>,
    /// Key Wrapping Specification, if the key should come wrapped.
    pub key_wrapping_specification: Option<Item>,
}

/// Get response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetResponse {
    /// The kind of object.
    pub object_type: ObjectType,
    /// Its Unique Identifier.
    pub unique_identifier: String,
    /// The object.
    pub object: ManagedObject,
}

impl Payload for GetRequest {
    fn write(&self, _: ProtocolVersion, out: &mut Vec<Item>) {
        out.push_opt(self.unique_identifier.clone(), |u| {
            Item::text(Tag::UNIQUE_IDENTIFIER, u)
        });
        out.push_opt(self.key_format_type, |k| {
            Item::enumeration(Tag::KEY_FORMAT_TYPE, k.0)
        });
        out.push_opt(self.key_wrap_type, |k| {
            Item::enumeration(Tag::KEY_WRAP_TYPE, k)
        });
        out.push_opt(self.key_compression_type, |k| {
            Item::enumeration(Tag::KEY_COMPRESSION_TYPE, k)
        });
        out.push_opt(self.key_wrapping_specification.clone(), |k| k);
    }
    fn read(f: &mut Fields<'_>, _: ProtocolVersion) -> Result<Self, MessageError> {
        Ok(Self {
            unique_identifier: f.opt_text(Tag::UNIQUE_IDENTIFIER)?,
            key_format_type: f.opt_enum(Tag::KEY_FORMAT_TYPE)?.map(KeyFormatType),
            key_wrap_type: f.opt_enum(Tag::KEY_WRAP_TYPE)?,
            key_compression_type: f.opt_enum(Tag::KEY_COMPRESSION_TYPE)?,
            key_wrapping_specification: f.take(Tag::KEY_WRAPPING_SPECIFICATION).cloned(),
        })
    }
}

impl Payload for GetResponse {
    fn write(&self, _: ProtocolVersion, out: &mut Vec<Item>) {
        out.push(Item::enumeration(Tag::OBJECT_TYPE, self.object_type.0));
        out.push(Item::text(
            Tag::UNIQUE_IDENTIFIER,
            self.unique_identifier.as_str(),
        ));
        out.push(self.object.to_item());
    }
    fn read(f: &mut Fields<'_>, _: ProtocolVersion) -> Result<Self, MessageError> {
        let object_type = ObjectType(f.enumeration(Tag::OBJECT_TYPE)?);
        let unique_identifier = f.text(Tag::UNIQUE_IDENTIFIER)?;
        let object = take_object(f, object_type)?;
        Ok(Self {
            object_type,
            unique_identifier,
            object,
        })
    }
}
