//! Check: would the server allow this use of the object? Request and response carry the
//! same fields.

use crate::error::MessageError;
use crate::message::fields::{Fields, PushOpt};
use crate::message::header::ProtocolVersion;
use crate::message::payload::Payload;
use crate::ttlv::{Item, Tag, Value};

/// Check request or response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckPayload {
    /// The object.
    pub unique_identifier: Option<String>,
    /// Usage Limits Count.
    pub usage_limits_count: Option<i64>,
    /// Cryptographic Usage Mask.
    pub cryptographic_usage_mask: Option<i32>,
    /// Lease Time.
    pub lease_time: Option<u32>,
}

impl Payload for CheckPayload {
    fn write(&self, _: ProtocolVersion, out: &mut Vec<Item>) {
        out.push_opt(self.unique_identifier.clone(), |u| {
            Item::text(Tag::UNIQUE_IDENTIFIER, u)
        });
        out.push_opt(self.usage_limits_count, |c| {
            Item::long_integer(Tag::USAGE_LIMITS_COUNT, c)
        });
        out.push_opt(self.cryptographic_usage_mask, |m| {
            Item::integer(Tag::CRYPTOGRAPHIC_USAGE_MASK, m)
        });
        out.push_opt(self.lease_time, |l| Item::interval(Tag::LEASE_TIME, l));
    }
    fn read(f: &mut Fields<'_>, _: ProtocolVersion) -> Result<Self, MessageError> {
        let usage_limits_count = match f.take(Tag::USAGE_LIMITS_COUNT) {
            None => None,
            Some(Item {
                value: Value::LongInteger(c),
                ..
            }) => Some(*c),
            Some(other) => {
                return Err(crate::message::fields::wrong(
                    other,
                    crate::ttlv::ItemType::LongInteger,
                ))
            }
        };
        Ok(Self {
            unique_identifier: f.opt_text(Tag::UNIQUE_IDENTIFIER)?,
            usage_limits_count,
            cryptographic_usage_mask: f.opt_int(Tag::CRYPTOGRAPHIC_USAGE_MASK)?,
            lease_time: f.opt_interval(Tag::LEASE_TIME)?,
        })
    }
}
