//! Operations on one object by identifier: Activate, Revoke, Destroy (and Get Attribute
//! List's request), whose payloads are a Unique Identifier and, for Revoke, a reason.

use crate::enums::RevocationReasonCode;
use crate::error::MessageError;
use crate::message::fields::{Fields, PushOpt};
use crate::message::header::ProtocolVersion;
use crate::message::payload::Payload;
use crate::ttlv::{Item, Tag};

/// A request that names one object (absent: the batch's ID Placeholder).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdRequest {
    /// The object.
    pub unique_identifier: Option<String>,
}

/// A response that names the object acted on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdResponse {
    /// The object.
    pub unique_identifier: String,
}

impl Payload for IdRequest {
    fn write(&self, _: ProtocolVersion, out: &mut Vec<Item>) {
        out.push_opt(self.unique_identifier.clone(), |u| {
            Item::text(Tag::UNIQUE_IDENTIFIER, u)
        });
    }
    fn read(f: &mut Fields<'_>, _: ProtocolVersion) -> Result<Self, MessageError> {
        Ok(Self {
            unique_identifier: f.opt_text(Tag::UNIQUE_IDENTIFIER)?,
        })
    }
}

impl Payload for IdResponse {
    fn write(&self, _: ProtocolVersion, out: &mut Vec<Item>) {
        out.push(Item::text(
            Tag::UNIQUE_IDENTIFIER,
            self.unique_identifier.as_str(),
        ));
    }
    fn read(f: &mut Fields<'_>, _: ProtocolVersion) -> Result<Self, MessageError> {
        Ok(Self {
            unique_identifier: f.text(Tag::UNIQUE_IDENTIFIER)?,
        })
    }
}

/// Revoke request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokeRequest {
    /// The object.
    pub unique_identifier: Option<String>,
    /// Why.
    pub reason: RevocationReasonCode,
    /// Revocation Message.
    pub message: Option<String>,
    /// Compromise Occurrence Date, for the compromise reasons.
    pub compromise_occurrence_date: Option<i64>,
}

impl Payload for RevokeRequest {
    fn write(&self, _: ProtocolVersion, out: &mut Vec<Item>) {
        out.push_opt(self.unique_identifier.clone(), |u| {
            Item::text(Tag::UNIQUE_IDENTIFIER, u)
        });
        let mut r = vec![Item::enumeration(
            Tag::REVOCATION_REASON_CODE,
            self.reason.0,
        )];
        r.push_opt(self.message.clone(), |m| {
            Item::text(Tag::REVOCATION_MESSAGE, m)
        });
        out.push(Item::structure(Tag::REVOCATION_REASON, r));
        out.push_opt(self.compromise_occurrence_date, |d| {
            Item::date_time(Tag::COMPROMISE_OCCURRENCE_DATE, d)
        });
    }
    fn read(f: &mut Fields<'_>, _: ProtocolVersion) -> Result<Self, MessageError> {
        let unique_identifier = f.opt_text(Tag::UNIQUE_IDENTIFIER)?;
        let mut r = Fields::of(f.required(Tag::REVOCATION_REASON)?)?;
        Ok(Self {
            unique_identifier,
            reason: RevocationReasonCode(r.enumeration(Tag::REVOCATION_REASON_CODE)?),
            message: r.opt_text(Tag::REVOCATION_MESSAGE)?,
            compromise_occurrence_date: f.opt_date_time(Tag::COMPROMISE_OCCURRENCE_DATE)?,
        })
    }
}
