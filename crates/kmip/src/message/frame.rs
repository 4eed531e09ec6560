//! The frame both messages share: the message's tag, its header, then its batch items.
//! Batch Count is computed from the batch on writing and checked against it on reading.

use super::fields::Fields;
use super::header::ProtocolVersion;
use crate::error::MessageError;
use crate::ttlv::{Item, Tag};

/// What the frame needs of a message's header.
pub(super) trait Header: Sized {
    /// The tag of the message this header opens.
    const MESSAGE: Tag;
    /// The header's own tag.
    const TAG: Tag;
    /// The version the message is encoded in.
    fn version(&self) -> ProtocolVersion;
    /// Batch Count as sent.
    fn batch_count(&self) -> i32;
    /// The header, with `batch_count` written as its Batch Count.
    fn to_item(&self, batch_count: i32) -> Item;
    /// Reads the header.
    fn from_item(item: &Item) -> Result<Self, MessageError>;
}

/// The message of `header` and `items`; `write` gives a batch item's fields.
pub(super) fn to_item<H: Header, B>(
    header: &H,
    items: &[B],
    write: impl Fn(&B, ProtocolVersion) -> Vec<Item>,
) -> Item {
    let v = header.version();
    let mut c = vec![header.to_item(items.len() as i32)];
    c.extend(
        items
            .iter()
            .map(|b| Item::structure(Tag::BATCH_ITEM, write(b, v))),
    );
    Item::structure(H::MESSAGE, c)
}

/// Reads a message's header and its batch items; `read` reads one batch item's fields.
pub(super) fn from_item<H: Header, B>(
    item: &Item,
    read: impl Fn(&mut Fields<'_>, ProtocolVersion) -> Result<B, MessageError>,
) -> Result<(H, Vec<B>), MessageError> {
    if item.tag != H::MESSAGE {
        return Err(MessageError::WrongMessage {
            expected: H::MESSAGE,
            found: item.tag,
        });
    }
    let mut f = Fields::of(item)?;
    let header = H::from_item(f.required(H::TAG)?)?;
    let v = header.version();
    let items = f
        .take_all(Tag::BATCH_ITEM)
        .into_iter()
        .map(|bi| read(&mut Fields::of(bi)?, v))
        .collect::<Result<Vec<_>, _>>()?;
    if header.batch_count() as usize != items.len() {
        return Err(MessageError::BatchCountMismatch {
            declared: header.batch_count(),
            actual: items.len(),
        });
    }
    Ok((header, items))
}
