//! Response Message: a header and one batch item per request item, each with a result.

use super::fields::{as_bytes, Fields, PushOpt};
use super::frame;
use super::header::{ProtocolVersion, ResponseHeader};
use super::payload::ResponsePayload;
use crate::enums::{Operation, ResultReason, ResultStatus};
use crate::error::MessageError;
use crate::ttlv::{self, Item, Tag};

/// A Response Message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseMessage {
    /// The header.
    pub header: ResponseHeader,
    /// The batch items, in order.
    pub items: Vec<ResponseBatchItem>,
}

/// The result of one operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseBatchItem {
    /// The operation, when the request named one (always, in practice).
    pub operation: Option<Operation>,
    /// Echo of the request item's Unique Batch Item ID.
    pub unique_batch_item_id: Option<Vec<u8>>,
    /// Result Status.
    pub result_status: ResultStatus,
    /// Result Reason: required on failure.
    pub result_reason: Option<ResultReason>,
    /// Result Message: the server's own words.
    pub result_message: Option<String>,
    /// Asynchronous Correlation Value, for pending operations.
    pub asynchronous_correlation_value: Option<Vec<u8>>,
    /// The payload, on success.
    pub payload: Option<ResponsePayload>,
    /// Payload fields this model does not name, kept in order after the known ones.
    pub extra: Vec<Item>,
    /// Message Extension, if any.
    pub message_extension: Option<Item>,
}

impl ResponseBatchItem {
    /// A successful result with `payload`.
    pub fn success(payload: ResponsePayload) -> Self {
        Self {
            operation: Some(payload.operation()),
            unique_batch_item_id: None,
            result_status: ResultStatus::SUCCESS,
            result_reason: None,
            result_message: None,
            asynchronous_correlation_value: None,
            payload: Some(payload),
            extra: Vec::new(),
            message_extension: None,
        }
    }

    /// A failed result.
    pub fn failure(
        operation: Option<Operation>,
        reason: ResultReason,
        message: impl Into<String>,
    ) -> Self {
        Self {
            operation,
            unique_batch_item_id: None,
            result_status: ResultStatus::OPERATION_FAILED,
            result_reason: Some(reason),
            result_message: Some(message.into()),
            asynchronous_correlation_value: None,
            payload: None,
            extra: Vec::new(),
            message_extension: None,
        }
    }
}

impl ResponseBatchItem {
    fn to_fields(&self, v: ProtocolVersion) -> Vec<Item> {
        let mut b = Vec::new();
        b.push_opt(self.operation, |o| Item::enumeration(Tag::OPERATION, o.0));
        b.push_opt(self.unique_batch_item_id.clone(), |id| {
            Item::bytes(Tag::UNIQUE_BATCH_ITEM_ID, id)
        });
        b.push(Item::enumeration(Tag::RESULT_STATUS, self.result_status.0));
        b.push_opt(self.result_reason, |r| {
            Item::enumeration(Tag::RESULT_REASON, r.0)
        });
        b.push_opt(self.result_message.clone(), |m| {
            Item::text(Tag::RESULT_MESSAGE, m)
        });
        b.push_opt(self.asynchronous_correlation_value.clone(), |a| {
            Item::bytes(Tag::ASYNCHRONOUS_CORRELATION_VALUE, a)
        });
        if self.payload.is_some() || !self.extra.is_empty() {
            let mut p = Vec::new();
            if let Some(payload) = &self.payload {
                payload.write(v, &mut p);
            }
            p.extend(self.extra.iter().cloned());
            b.push(Item::structure(Tag::RESPONSE_PAYLOAD, p));
        }
        b.push_opt(self.message_extension.clone(), |m| m);
        b
    }

    fn read(b: &mut Fields<'_>, v: ProtocolVersion) -> Result<Self, MessageError> {
        let operation = b.opt_enum(Tag::OPERATION)?.map(Operation);
        let unique_batch_item_id = b
            .take(Tag::UNIQUE_BATCH_ITEM_ID)
            .map(as_bytes)
            .transpose()?;
        let result_status = ResultStatus(b.enumeration(Tag::RESULT_STATUS)?);
        let result_reason = b.opt_enum(Tag::RESULT_REASON)?.map(ResultReason);
        let result_message = b.opt_text(Tag::RESULT_MESSAGE)?;
        let asynchronous_correlation_value = b
            .take(Tag::ASYNCHRONOUS_CORRELATION_VALUE)
            .map(as_bytes)
            .transpose()?;
        let (payload, extra) = match (b.take(Tag::RESPONSE_PAYLOAD), operation) {
            (Some(p), Some(op)) if result_status == ResultStatus::SUCCESS => {
                let mut pf = Fields::of(p)?;
                let payload = ResponsePayload::read(op, &mut pf, v)?;
                (Some(payload), pf.extra()?)
            }
            // Without an operation (or on failure) the payload cannot be typed: keep it.
            (Some(p), _) => (None, p.children().to_vec()),
            (None, _) => (None, Vec::new()),
        };
        Ok(Self {
            operation,
            unique_batch_item_id,
            result_status,
            result_reason,
            result_message,
            asynchronous_correlation_value,
            payload,
            extra,
            message_extension: b.take(Tag::MESSAGE_EXTENSION).cloned(),
        })
    }
}

impl ResponseMessage {
    /// The message as a TTLV item tree.
    pub fn to_item(&self) -> Item {
        frame::to_item(&self.header, &self.items, ResponseBatchItem::to_fields)
    }

    /// The message encoded as TTLV.
    pub fn encode(&self) -> Vec<u8> {
        ttlv::encode(&self.to_item())
    }

    /// Reads a Response Message from its item tree.
    pub fn from_item(item: &Item) -> Result<Self, MessageError> {
        let (header, items) = frame::from_item(item, ResponseBatchItem::read)?;
        Ok(Self { header, items })
    }
}
