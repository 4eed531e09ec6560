//! Locate: find objects by attribute (atrest: by Name, to recover a lost identifier).

use crate::error::MessageError;
use crate::message::attribute::Attributes;
use crate::message::fields::{as_text, Fields, PushOpt};
use crate::message::header::ProtocolVersion;
use crate::message::payload::Payload;
use crate::ttlv::{Item, Tag};

/// Locate request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocateRequest {
    /// Maximum Items to return.
    pub maximum_items: Option<i32>,
    /// Offset Items (1.3+): how many matches to skip.
    pub offset_items: Option<i32>,
    /// Storage Status Mask (on-line, archived, destroyed).
    pub storage_status_mask: Option<i32>,
    /// Object Group Member (1.1+).
    pub object_group_member: Option<u32>,
    /// Attributes every match must have.
    pub attributes: Attributes,
}

/// Locate response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocateResponse {
    /// Located Items (1.3+): the number of matches in all.
    pub located_items: Option<i32>,
    /// The identifiers found.
    pub unique_identifiers: Vec<String>,
}

impl Payload for LocateRequest {
    fn write(&self, v: ProtocolVersion, out: &mut Vec<Item>) {
        out.push_opt(self.maximum_items, |x| Item::integer(Tag::MAXIMUM_ITEMS, x));
        out.push_opt(self.offset_items, |x| Item::integer(Tag::OFFSET_ITEMS, x));
        out.push_opt(self.storage_status_mask, |x| {
            Item::integer(Tag::STORAGE_STATUS_MASK, x)
        });
        out.push_opt(self.object_group_member, |x| {
            Item::enumeration(Tag::OBJECT_GROUP_MEMBER, x)
        });
        self.attributes.write_loose(v, out);
    }
    fn read(f: &mut Fields<'_>, _: ProtocolVersion) -> Result<Self, MessageError> {
        let maximum_items = f.opt_int(Tag::MAXIMUM_ITEMS)?;
        let offset_items = f.opt_int(Tag::OFFSET_ITEMS)?;
        let storage_status_mask = f.opt_int(Tag::STORAGE_STATUS_MASK)?;
        let object_group_member = f.opt_enum(Tag::OBJECT_GROUP_MEMBER)?;
        let attributes = Attributes::read_loose(f)?;
        Ok(Self {
            maximum_items,
            offset_items,
            storage_status_mask,
            object_group_member,
            attributes,
        })
    }
}

impl Payload for LocateResponse {
    fn write(&self, _: ProtocolVersion, out: &mut Vec<Item>) {
        out.push_opt(self.located_items, |x| Item::integer(Tag::LOCATED_ITEMS, x));
        out.extend(
            self.unique_identifiers
                .iter()
                .map(|u| Item::text(Tag::UNIQUE_IDENTIFIER, u.as_str())),
        );
    }
    fn read(f: &mut Fields<'_>, _: ProtocolVersion) -> Result<Self, MessageError> {
        Ok(Self {
            located_items: f.opt_int(Tag::LOCATED_ITEMS)?,
            unique_identifiers: f
                .take_all(Tag::UNIQUE_IDENTIFIER)
                .into_iter()
                .map(as_text)
                .collect::<Result<_, _>>()?,
        })
    }
}
