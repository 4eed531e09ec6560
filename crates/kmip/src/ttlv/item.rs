//! The generic TTLV tree: an [`Item`] is a tag and a typed [`Value`].
//!
//! Decoding produces this tree completely before anything interprets it ("full recognition
//! before processing"); the typed messages in [`crate::message`] are read from it and
//! written to it. Values keep their exact wire form (a Big Integer keeps its sign-extension
//! bytes) so that decode-then-encode reproduces the input byte for byte.

use std::fmt;

use zeroize::Zeroizing;

use super::tag::Tag;

/// The type byte of a TTLV item (KMIP 1.4 §9.1.1.2, 2.1 §10.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum ItemType {
    /// 0x01: a sequence of items.
    Structure = 0x01,
    /// 0x02: signed 32-bit.
    Integer = 0x02,
    /// 0x03: signed 64-bit.
    LongInteger = 0x03,
    /// 0x04: two's complement, big-endian, sign-extended to a multiple of 8 bytes.
    BigInteger = 0x04,
    /// 0x05: unsigned 32-bit code from an enumeration table.
    Enumeration = 0x05,
    /// 0x06: 0 or 1 in 8 bytes.
    Boolean = 0x06,
    /// 0x07: UTF-8 text without terminator.
    TextString = 0x07,
    /// 0x08: opaque bytes.
    ByteString = 0x08,
    /// 0x09: seconds since the POSIX epoch, signed 64-bit.
    DateTime = 0x09,
    /// 0x0A: unsigned 32-bit number of seconds.
    Interval = 0x0A,
    /// 0x0B (KMIP 2.0+): microseconds since the POSIX epoch, signed 64-bit.
    DateTimeExtended = 0x0B,
}

impl ItemType {
    /// Every type, in code order.
    pub const ALL: [ItemType; 11] = [
        Self::Structure,
        Self::Integer,
        Self::LongInteger,
        Self::BigInteger,
        Self::Enumeration,
        Self::Boolean,
        Self::TextString,
        Self::ByteString,
        Self::DateTime,
        Self::Interval,
        Self::DateTimeExtended,
    ];

    /// The type for a wire code, if it is one KMIP defines.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.get(usize::from(code).wrapping_sub(1)).copied()
    }

    /// The wire code.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The name used by the OASIS XML form (`type="LongInteger"`).
    pub fn xml_name(self) -> &'static str {
        match self {
            Self::Structure => "Structure",
            Self::Integer => "Integer",
            Self::LongInteger => "LongInteger",
            Self::BigInteger => "BigInteger",
            Self::Enumeration => "Enumeration",
            Self::Boolean => "Boolean",
            Self::TextString => "TextString",
            Self::ByteString => "ByteString",
            Self::DateTime => "DateTime",
            Self::Interval => "Interval",
            Self::DateTimeExtended => "DateTimeExtended",
        }
    }

    /// The type named `name` in the XML form.
    pub fn from_xml_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.xml_name() == name)
    }
}

impl fmt::Display for ItemType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.xml_name())
    }
}

/// A typed TTLV value.
#[derive(Clone, PartialEq, Eq)]
pub enum Value {
    /// Child items in wire order.
    Structure(Vec<Item>),
    /// Signed 32-bit integer (also bit masks).
    Integer(i32),
    /// Signed 64-bit integer.
    LongInteger(i64),
    /// Two's complement big-endian bytes, length a non-zero multiple of 8, kept as sent.
    BigInteger(Vec<u8>),
    /// Enumeration code.
    Enumeration(u32),
    /// Boolean.
    Boolean(bool),
    /// UTF-8 text; zeroized on drop, since a Password is one.
    TextString(Zeroizing<String>),
    /// Opaque bytes; zeroized on drop, since key material is one.
    ByteString(Zeroizing<Vec<u8>>),
    /// Seconds since the POSIX epoch.
    DateTime(i64),
    /// Seconds.
    Interval(u32),
    /// Microseconds since the POSIX epoch.
    DateTimeExtended(i64),
}

impl Value {
    /// The item type this value is encoded as.
    pub fn item_type(&self) -> ItemType {
        match self {
            Self::Structure(_) => ItemType::Structure,
            Self::Integer(_) => ItemType::Integer,
            Self::LongInteger(_) => ItemType::LongInteger,
            Self::BigInteger(_) => ItemType::BigInteger,
            Self::Enumeration(_) => ItemType::Enumeration,
            Self::Boolean(_) => ItemType::Boolean,
            Self::TextString(_) => ItemType::TextString,
            Self::ByteString(_) => ItemType::ByteString,
            Self::DateTime(_) => ItemType::DateTime,
            Self::Interval(_) => ItemType::Interval,
            Self::DateTimeExtended(_) => ItemType::DateTimeExtended,
        }
    }

    /// Sign-extends `v` to the 8-byte-multiple Big Integer wire form.
    pub fn big_integer_from_i128(v: i128) -> Self {
        let bytes = v.to_be_bytes();
        let fill = if v < 0 { 0xFF } else { 0x00 };
        // Drop redundant leading sign bytes 8 at a time, keeping the sign bit correct.
        let mut start = 0;
        while start + 8 < bytes.len()
            && bytes[start..start + 8].iter().all(|&b| b == fill)
            && (bytes[start + 8] & 0x80 == fill & 0x80)
        {
            start += 8;
        }
        Self::BigInteger(bytes[start..].to_vec())
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Structure(items) => f.debug_list().entries(items).finish(),
            Self::Integer(v) => write!(f, "Integer({v})"),
            Self::LongInteger(v) => write!(f, "LongInteger({v})"),
            Self::BigInteger(v) => write!(f, "BigInteger({})", hex::encode(v)),
            Self::Enumeration(v) => write!(f, "Enumeration({v:#010x})"),
            Self::Boolean(v) => write!(f, "Boolean({v})"),
            Self::TextString(v) => write!(f, "TextString({:?})", v.as_str()),
            // Byte Strings may hold key material: Debug shows only their length.
            Self::ByteString(v) => write!(f, "ByteString({} bytes)", v.len()),
            Self::DateTime(v) => write!(f, "DateTime({v})"),
            Self::Interval(v) => write!(f, "Interval({v})"),
            Self::DateTimeExtended(v) => write!(f, "DateTimeExtended({v})"),
        }
    }
}

/// One TTLV item.
#[derive(Clone, PartialEq, Eq)]
pub struct Item {
    /// The 3-byte tag.
    pub tag: Tag,
    /// The typed value.
    pub value: Value,
}

impl fmt::Debug for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {:?}", self.tag, self.value)
    }
}

impl Item {
    /// An item from its parts.
    pub fn new(tag: Tag, value: Value) -> Self {
        Self { tag, value }
    }

    /// A Structure item.
    pub fn structure(tag: Tag, children: Vec<Item>) -> Self {
        Self::new(tag, Value::Structure(children))
    }

    /// An Integer item.
    pub fn integer(tag: Tag, v: i32) -> Self {
        Self::new(tag, Value::Integer(v))
    }

    /// A Long Integer item.
    pub fn long_integer(tag: Tag, v: i64) -> Self {
        Self::new(tag, Value::LongInteger(v))
    }

    /// An Enumeration item.
    pub fn enumeration(tag: Tag, v: u32) -> Self {
        Self::new(tag, Value::Enumeration(v))
    }

    /// A Boolean item.
    pub fn boolean(tag: Tag, v: bool) -> Self {
        Self::new(tag, Value::Boolean(v))
    }

    /// A Text String item.
    pub fn text(tag: Tag, v: impl Into<String>) -> Self {
        Self::new(tag, Value::TextString(Zeroizing::new(v.into())))
    }

    /// A Byte String item.
    pub fn bytes(tag: Tag, v: impl Into<Vec<u8>>) -> Self {
        Self::new(tag, Value::ByteString(Zeroizing::new(v.into())))
    }

    /// A Date-Time item (seconds since the epoch).
    pub fn date_time(tag: Tag, v: i64) -> Self {
        Self::new(tag, Value::DateTime(v))
    }

    /// An Interval item (seconds).
    pub fn interval(tag: Tag, v: u32) -> Self {
        Self::new(tag, Value::Interval(v))
    }

    /// The children if this is a Structure, else an empty slice.
    pub fn children(&self) -> &[Item] {
        match &self.value {
            Value::Structure(c) => c,
            _ => &[],
        }
    }

    /// The first child with `tag`.
    pub fn child(&self, tag: Tag) -> Option<&Item> {
        self.children().iter().find(|c| c.tag == tag)
    }

    /// Every child with `tag`, in order.
    pub fn children_with(&self, tag: Tag) -> impl Iterator<Item = &Item> {
        self.children().iter().filter(move |c| c.tag == tag)
    }

    /// Total encoded length of this item, header and padding included.
    pub fn encoded_len(&self) -> usize {
        8 + padded(self.value_len())
    }

    /// Length of the value as written in the length field (before padding).
    pub fn value_len(&self) -> usize {
        match &self.value {
            Value::Structure(c) => c.iter().map(Item::encoded_len).sum(),
            Value::Integer(_) | Value::Enumeration(_) | Value::Interval(_) => 4,
            Value::LongInteger(_)
            | Value::Boolean(_)
            | Value::DateTime(_)
            | Value::DateTimeExtended(_) => 8,
            Value::BigInteger(b) => b.len(),
            Value::ByteString(b) => b.len(),
            Value::TextString(s) => s.len(),
        }
    }
}

/// `len` rounded up to the 8-byte alignment every TTLV value is padded to.
pub(crate) fn padded(len: usize) -> usize {
    len.div_ceil(8) * 8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_codes_round_trip_and_unknown_codes_are_none() {
        for t in ItemType::ALL {
            assert_eq!(ItemType::from_code(t.code()), Some(t));
            assert_eq!(ItemType::from_xml_name(t.xml_name()), Some(t));
        }
        assert_eq!(ItemType::from_code(0), None);
        assert_eq!(ItemType::from_code(0x0C), None);
        assert_eq!(ItemType::from_code(0xFF), None);
    }

    #[test]
    fn big_integer_from_i128_is_minimal_and_sign_extended() {
        assert_eq!(
            Value::big_integer_from_i128(1),
            Value::BigInteger(vec![0, 0, 0, 0, 0, 0, 0, 1])
        );
        assert_eq!(
            Value::big_integer_from_i128(-1),
            Value::BigInteger(vec![0xFF; 8])
        );
        // 2^63 needs a ninth byte to stay positive, so 16 bytes.
        let Value::BigInteger(b) = Value::big_integer_from_i128(1 << 63) else {
            unreachable!()
        };
        assert_eq!(b.len(), 16);
        assert_eq!(b[8], 0x80);
    }
}
