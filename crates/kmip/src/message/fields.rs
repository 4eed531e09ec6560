//! Reading typed fields out of a Structure's children, and writing them back.
//!
//! Decoding is lenient in the way KMIP needs: fields are found by tag wherever they stand,
//! and children the message model does not know are handed back by [`Fields::rest`] so a
//! payload can keep them. A known field of the wrong type is still an error: that is a
//! peer speaking a different protocol, not an extension.

use crate::error::MessageError;
use crate::ttlv::{Item, ItemType, Tag, Value};

/// The children of one Structure, with the tags already consumed marked.
pub(crate) struct Fields<'a> {
    parent: Tag,
    items: &'a [Item],
    used: Vec<bool>,
}

impl<'a> Fields<'a> {
    /// The fields of `item`, which must be a Structure.
    pub(crate) fn of(item: &'a Item) -> Result<Self, MessageError> {
        match &item.value {
            Value::Structure(children) => Ok(Self {
                parent: item.tag,
                items: children,
                used: vec![false; children.len()],
            }),
            other => Err(MessageError::WrongType {
                field: item.tag,
                expected: ItemType::Structure,
                found: other.item_type(),
            }),
        }
    }

    pub(crate) fn parent(&self) -> Tag {
        self.parent
    }

    /// The first unconsumed child with `tag`, marking it consumed.
    pub(crate) fn take(&mut self, tag: Tag) -> Option<&'a Item> {
        let i = self
            .items
            .iter()
            .enumerate()
            .position(|(i, it)| it.tag == tag && !self.used[i])?;
        self.used[i] = true;
        Some(&self.items[i])
    }

    /// Every unconsumed child with `tag`, in order, marking them consumed.
    pub(crate) fn take_all(&mut self, tag: Tag) -> Vec<&'a Item> {
        let mut out = Vec::new();
        while let Some(it) = self.take(tag) {
            out.push(it);
        }
        out
    }

    pub(crate) fn required(&mut self, tag: Tag) -> Result<&'a Item, MessageError> {
        let parent = self.parent;
        self.take(tag)
            .ok_or(MessageError::Missing { parent, field: tag })
    }

    /// The children nobody consumed, as a message keeps them (vendor fields, fields of
    /// later versions); a second copy of a field already read is an error rather than an
    /// extension, since writing it back would put it beside, or before, the first.
    pub(crate) fn extra(&self) -> Result<Vec<Item>, MessageError> {
        let read = |tag: Tag| {
            self.items
                .iter()
                .zip(&self.used)
                .any(|(it, used)| *used && it.tag == tag)
        };
        if let Some(again) = self
            .items
            .iter()
            .zip(&self.used)
            .find(|(it, used)| !**used && read(it.tag))
        {
            return Err(MessageError::Duplicate {
                parent: self.parent,
                field: again.0.tag,
            });
        }
        Ok(self.rest())
    }

    /// The children nobody consumed, in order: vendor fields and fields of later versions.
    pub(crate) fn rest(&self) -> Vec<Item> {
        self.items
            .iter()
            .zip(&self.used)
            .filter(|(_, used)| !**used)
            .map(|(it, _)| it.clone())
            .collect()
    }

    pub(crate) fn opt_text(&mut self, tag: Tag) -> Result<Option<String>, MessageError> {
        self.take(tag).map(as_text).transpose()
    }

    pub(crate) fn text(&mut self, tag: Tag) -> Result<String, MessageError> {
        as_text(self.required(tag)?)
    }

    pub(crate) fn opt_int(&mut self, tag: Tag) -> Result<Option<i32>, MessageError> {
        self.take(tag).map(as_int).transpose()
    }

    pub(crate) fn int(&mut self, tag: Tag) -> Result<i32, MessageError> {
        as_int(self.required(tag)?)
    }

    pub(crate) fn opt_enum(&mut self, tag: Tag) -> Result<Option<u32>, MessageError> {
        self.take(tag).map(as_enum).transpose()
    }

    pub(crate) fn enumeration(&mut self, tag: Tag) -> Result<u32, MessageError> {
        as_enum(self.required(tag)?)
    }

    pub(crate) fn opt_bool(&mut self, tag: Tag) -> Result<Option<bool>, MessageError> {
        self.take(tag)
            .map(|it| match it.value {
                Value::Boolean(b) => Ok(b),
                _ => Err(wrong(it, ItemType::Boolean)),
            })
            .transpose()
    }

    pub(crate) fn opt_date_time(&mut self, tag: Tag) -> Result<Option<i64>, MessageError> {
        self.take(tag)
            .map(|it| match it.value {
                Value::DateTime(t) => Ok(t),
                _ => Err(wrong(it, ItemType::DateTime)),
            })
            .transpose()
    }

    pub(crate) fn opt_interval(&mut self, tag: Tag) -> Result<Option<u32>, MessageError> {
        self.take(tag)
            .map(|it| match it.value {
                Value::Interval(t) => Ok(t),
                _ => Err(wrong(it, ItemType::Interval)),
            })
            .transpose()
    }
}

pub(crate) fn wrong(it: &Item, expected: ItemType) -> MessageError {
    MessageError::WrongType {
        field: it.tag,
        expected,
        found: it.value.item_type(),
    }
}

pub(crate) fn as_text(it: &Item) -> Result<String, MessageError> {
    match &it.value {
        Value::TextString(s) => Ok(s.as_str().to_owned()),
        _ => Err(wrong(it, ItemType::TextString)),
    }
}

pub(crate) fn as_int(it: &Item) -> Result<i32, MessageError> {
    match it.value {
        Value::Integer(v) => Ok(v),
        _ => Err(wrong(it, ItemType::Integer)),
    }
}

pub(crate) fn as_enum(it: &Item) -> Result<u32, MessageError> {
    match it.value {
        Value::Enumeration(v) => Ok(v),
        _ => Err(wrong(it, ItemType::Enumeration)),
    }
}

pub(crate) fn as_bytes(it: &Item) -> Result<Vec<u8>, MessageError> {
    match &it.value {
        Value::ByteString(v) => Ok(v.to_vec()),
        _ => Err(wrong(it, ItemType::ByteString)),
    }
}

/// Appends optional fields to a Structure being built.
pub(crate) trait PushOpt {
    fn push_opt<T>(&mut self, v: Option<T>, f: impl FnOnce(T) -> Item);
}

impl PushOpt for Vec<Item> {
    fn push_opt<T>(&mut self, v: Option<T>, f: impl FnOnce(T) -> Item) {
        if let Some(v) = v {
            self.push(f(v));
        }
    }
}

impl Fields<'_> {
    /// Every unconsumed child, now marked consumed.
    pub(crate) fn rest_and_consume(&mut self) -> Vec<Item> {
        let rest = self.rest();
        self.used.iter_mut().for_each(|u| *u = true);
        rest
    }
}
