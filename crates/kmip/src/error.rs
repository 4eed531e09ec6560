//! Errors of the `kmip` crate, sorted by cause as rustls does.
//!
//! - [`DecodeError`]: the bytes are not well-formed TTLV. The peer can no longer be trusted
//!   to frame its messages, so the connection should be dropped.
//! - [`XmlError`]: the OASIS XML text could not be read.
//! - [`MessageError`]: well-formed TTLV that is not the KMIP message we expected (a required
//!   field missing, a field of the wrong type).
//!
//! Every variant names the field or offset at fault; none carries a value that could be
//! secret (key material, passwords).

use crate::ttlv::{ItemType, Tag};

/// Malformed TTLV bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Fewer bytes remain than a field needs.
    #[error(
        "TTLV truncated at byte {offset}: the {what} needs {needed} bytes, {available} remain"
    )]
    Truncated {
        /// Which part of an item ran short.
        what: &'static str,
        /// Absolute offset where the part starts.
        offset: usize,
        /// Bytes the part needs.
        needed: usize,
        /// Bytes that remained.
        available: usize,
    },
    /// Bytes follow the single top-level item.
    #[error("{len} trailing bytes after the TTLV message at byte {offset}")]
    TrailingData {
        /// Where the extra bytes begin.
        offset: usize,
        /// How many there are.
        len: usize,
    },
    /// A type byte KMIP does not define.
    #[error("item {tag} at byte {offset} has unknown type code {code:#04x}")]
    UnknownType {
        /// Tag of the item.
        tag: Tag,
        /// The type byte.
        code: u8,
        /// Offset of the type byte.
        offset: usize,
    },
    /// A length that the item's type does not allow.
    #[error(
        "item {tag} of type {item_type} has invalid length {len} (length field at byte {offset})"
    )]
    BadLength {
        /// Tag of the item.
        tag: Tag,
        /// Its type.
        item_type: ItemType,
        /// The length it claimed.
        len: usize,
        /// Offset of the length field.
        offset: usize,
    },
    /// Padding bytes that are not zero.
    #[error("item {tag} has a non-zero padding byte at byte {offset}")]
    NonZeroPadding {
        /// Tag of the item.
        tag: Tag,
        /// Offset of the first non-zero padding byte.
        offset: usize,
    },
    /// A Boolean other than 0 or 1.
    #[error("Boolean {tag} at byte {offset} holds {value}, not 0 or 1")]
    BadBoolean {
        /// Tag of the item.
        tag: Tag,
        /// The value found.
        value: u64,
        /// Offset of the value.
        offset: usize,
    },
    /// A Text String that is not UTF-8.
    #[error("Text String {tag} is not valid UTF-8 at byte {offset}")]
    BadUtf8 {
        /// Tag of the item.
        tag: Tag,
        /// Offset of the first invalid byte.
        offset: usize,
    },
    /// Structures nested deeper than the limit.
    #[error("item {tag} is nested deeper than the limit of {max} levels")]
    TooDeep {
        /// Tag of the Structure that went too deep.
        tag: Tag,
        /// The limit.
        max: usize,
    },
    /// A message longer than the limit.
    #[error("TTLV message of {len} bytes exceeds the limit of {max} bytes")]
    MessageTooLong {
        /// Its length.
        len: u64,
        /// The limit.
        max: usize,
    },
    /// A message whose outer item is not a Structure.
    #[error("a KMIP message must be a Structure, but {tag} has type code {found:#04x}")]
    NotAStructure {
        /// Tag of the outer item.
        tag: Tag,
        /// Its type byte.
        found: u8,
    },
}

/// OASIS XML text that could not be turned into TTLV items.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum XmlError {
    /// The text is not well-formed XML.
    #[error("XML syntax error at byte {offset}: {message}")]
    Syntax {
        /// Byte offset in the input.
        offset: u64,
        /// The parser's description.
        message: String,
    },
    /// An element name that is neither a known tag nor `TTLV` with a `tag` attribute.
    #[error(
        "unknown tag name <{name}> (use <TTLV tag=\"0x54xxxx\" ...> for tags outside the registry)"
    )]
    UnknownTag {
        /// The element name.
        name: String,
    },
    /// A `tag="..."` attribute that is not a 3-byte hex number.
    #[error("invalid tag attribute {value:?} on <{element}>: expected hex such as 0x540001")]
    BadTagAttribute {
        /// The element.
        element: String,
        /// The attribute text.
        value: String,
    },
    /// A `type="..."` that names no TTLV type.
    #[error("<{element}> has unknown type {value:?}")]
    UnknownType {
        /// The element.
        element: String,
        /// The attribute text.
        value: String,
    },
    /// A leaf element without a `value` attribute, or a Structure with one.
    #[error("<{element}>: {problem}")]
    Shape {
        /// The element.
        element: String,
        /// What is wrong.
        problem: &'static str,
    },
    /// A value that cannot be read as its type.
    #[error("<{element} type=\"{item_type}\"> has invalid value {value:?}: {problem}")]
    BadValue {
        /// The element.
        element: String,
        /// The declared type.
        item_type: ItemType,
        /// The value text (never secret: XML is a debugging form).
        value: String,
        /// Why it was refused.
        problem: String,
    },
    /// Structures nested deeper than [`crate::ttlv::limits::MAX_DEPTH`].
    #[error("XML nested deeper than {max} levels")]
    TooDeep {
        /// The limit.
        max: usize,
    },
}

/// Well-formed TTLV that is not the KMIP message expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MessageError {
    /// A required field is absent.
    #[error("{parent} is missing its required {field}")]
    Missing {
        /// The structure.
        parent: Tag,
        /// The absent field.
        field: Tag,
    },
    /// A field has another type than the specification gives it.
    #[error("{field} has type {found}, expected {expected}")]
    WrongType {
        /// The field.
        field: Tag,
        /// Type required.
        expected: ItemType,
        /// Type found.
        found: ItemType,
    },
    /// The outer item is not the expected message.
    #[error("expected {expected}, got {found}")]
    WrongMessage {
        /// Tag expected.
        expected: Tag,
        /// Tag found.
        found: Tag,
    },
    /// A field's value is outside what the specification allows.
    #[error("{field} has invalid value {value}")]
    Invalid {
        /// The field.
        field: Tag,
        /// A description of the value (never secret).
        value: String,
    },
    /// A field the model reads once appears again in the same structure: which one a peer
    /// would honour is ambiguous (two Batch Counts, two Credentials), so neither is.
    #[error("{parent} holds {field} more than once")]
    Duplicate {
        /// The structure.
        parent: Tag,
        /// The repeated field.
        field: Tag,
    },
    /// Batch Count does not match the number of batch items.
    #[error("Batch Count says {declared} but the message holds {actual} batch items")]
    BatchCountMismatch {
        /// Declared count.
        declared: i32,
        /// Items present.
        actual: usize,
    },
}
