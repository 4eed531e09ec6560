//! Request Message: a header and one or more batch items.

use super::fields::{as_bytes, Fields, PushOpt};
use super::frame;
use super::header::{ProtocolVersion, RequestHeader};
use super::payload::RequestPayload;
use crate::enums::Operation;
use crate::error::MessageError;
use crate::ttlv::{self, Item, Tag};

/// A Request Message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestMessage {
    /// The header.
    pub header: RequestHeader,
    /// The batch items, in order.
    pub items: Vec<RequestBatchItem>,
}

/// One operation of a request batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestBatchItem {
    /// Unique Batch Item ID: required when the batch has more than one item.
    pub unique_batch_item_id: Option<Vec<u8>>,
    /// The payload, which also names the operation.
    pub payload: RequestPayload,
    /// Payload fields this model does not name, kept in order after the known ones.
    pub extra: Vec<Item>,
    /// Message Extension, if any.
    pub message_extension: Option<Item>,
}

impl RequestBatchItem {
    /// A batch item carrying `payload`.
    pub fn new(payload: RequestPayload) -> Self {
        Self {
            unique_batch_item_id: None,
            payload,
            extra: Vec::new(),
            message_extension: None,
        }
    }

    /// The operation.
    pub fn operation(&self) -> Operation {
        self.payload.operation()
    }
}

impl RequestBatchItem {
    fn to_fields(&self, v: ProtocolVersion) -> Vec<Item> {
        let mut b = vec![Item::enumeration(Tag::OPERATION, self.operation().0)];
        b.push_opt(self.unique_batch_item_id.clone(), |id| {
            Item::bytes(Tag::UNIQUE_BATCH_ITEM_ID, id)
        });
        let mut p = Vec::new();
        self.payload.write(v, &mut p);
        p.extend(self.extra.iter().cloned());
        b.push(Item::structure(Tag::REQUEST_PAYLOAD, p));
        b.push_opt(self.message_extension.clone(), |m| m);
        b
    }

    fn read(b: &mut Fields<'_>, v: ProtocolVersion) -> Result<Self, MessageError> {
        let op = Operation(b.enumeration(Tag::OPERATION)?);
        let unique_batch_item_id = b
            .take(Tag::UNIQUE_BATCH_ITEM_ID)
            .map(as_bytes)
            .transpose()?;
        let (payload, extra) = match b.take(Tag::REQUEST_PAYLOAD) {
            Some(p) => {
                let mut pf = Fields::of(p)?;
                let payload = RequestPayload::read(op, &mut pf, v)?;
                (payload, pf.extra()?)
            }
            None => (
                RequestPayload::read(
                    op,
                    &mut Fields::of(&Item::structure(Tag::REQUEST_PAYLOAD, vec![]))?,
                    v,
                )?,
                Vec::new(),
            ),
        };
        Ok(Self {
            unique_batch_item_id,
            payload,
            extra,
            message_extension: b.take(Tag::MESSAGE_EXTENSION).cloned(),
        })
    }
}

impl RequestMessage {
    /// The message as a TTLV item tree.
    pub fn to_item(&self) -> Item {
        frame::to_item(&self.header, &self.items, RequestBatchItem::to_fields)
    }

    /// The message encoded as TTLV.
    pub fn encode(&self) -> Vec<u8> {
        ttlv::encode(&self.to_item())
    }

    /// Reads a Request Message from its item tree.
    pub fn from_item(item: &Item) -> Result<Self, MessageError> {
        let (header, items) = frame::from_item(item, RequestBatchItem::read)?;
        Ok(Self { header, items })
    }
}
