//! Binary TTLV: encoding an [`Item`] tree and decoding one from bytes.
//!
//! Decoding is total and strict, in the manner of rustls's `Codec`: every length is checked
//! against the bytes that remain in the enclosing Structure before anything is read or
//! allocated, padding must be zero, a Boolean must be 0 or 1, fixed-size types must carry
//! their fixed length. Being strict is what makes decode-then-encode reproduce the input
//! byte for byte, and it means a malformed message is rejected whole rather than half-read.
//! Unknown tags are not an error here: the tree keeps them, and the message layer decides.

use super::item::{padded, Item, ItemType, Value};
use super::limits::Limits;
use super::tag::Tag;
use crate::error::DecodeError;

/// Appends the TTLV encoding of `item` to `out`.
///
/// Encoding cannot fail: every [`Value`] has a valid encoding, except a Big Integer whose
/// byte length is not a multiple of 8, which is sign-extended here to the next multiple.
pub fn encode_into(item: &Item, out: &mut Vec<u8>) {
    let tag = item.tag.value().to_be_bytes();
    out.extend_from_slice(&tag[1..]);
    out.push(item.value.item_type().code());
    match &item.value {
        Value::Structure(children) => {
            // Reserve the length and patch it once the children are written, so each
            // child's size is computed once, not once per enclosing level.
            let len_at = out.len();
            out.extend_from_slice(&[0xFF; 4]);
            let start = out.len();
            for child in children {
                encode_into(child, out);
            }
            let len = u32::try_from(out.len() - start).unwrap_or(u32::MAX);
            out[len_at..len_at + 4].copy_from_slice(&len.to_be_bytes());
        }
        Value::Integer(v) => put_padded(out, &v.to_be_bytes()),
        Value::Enumeration(v) => put_padded(out, &v.to_be_bytes()),
        Value::Interval(v) => put_padded(out, &v.to_be_bytes()),
        Value::LongInteger(v) | Value::DateTime(v) | Value::DateTimeExtended(v) => {
            put_padded(out, &v.to_be_bytes())
        }
        Value::Boolean(v) => put_padded(out, &u64::from(*v).to_be_bytes()),
        Value::TextString(s) => put_padded(out, s.as_bytes()),
        Value::ByteString(b) => put_padded(out, b),
        Value::BigInteger(b) => {
            if b.len() % 8 == 0 && !b.is_empty() {
                put_padded(out, b)
            } else {
                let fill = if b.first().is_some_and(|f| f & 0x80 != 0) {
                    0xFF
                } else {
                    0
                };
                let mut ext = vec![fill; padded(b.len().max(1)) - b.len()];
                ext.extend_from_slice(b);
                put_padded(out, &ext)
            }
        }
    }
}

/// The TTLV encoding of `item`.
pub fn encode(item: &Item) -> Vec<u8> {
    let mut out = Vec::with_capacity(item.encoded_len());
    encode_into(item, &mut out);
    out
}

fn put_padded(out: &mut Vec<u8>, value: &[u8]) {
    let len = u32::try_from(value.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(value);
    out.resize(out.len() + padded(value.len()) - value.len(), 0);
}

/// Decodes exactly one item that fills all of `bytes`, under the default [`Limits`].
pub fn decode(bytes: &[u8]) -> Result<Item, DecodeError> {
    decode_with(bytes, Limits::default())
}

/// Decodes exactly one item that fills all of `bytes`, under `limits`.
pub fn decode_with(bytes: &[u8], limits: Limits) -> Result<Item, DecodeError> {
    if bytes.len() > limits.max_message_len {
        return Err(DecodeError::MessageTooLong {
            len: bytes.len() as u64,
            max: limits.max_message_len,
        });
    }
    let mut reader = Reader::new(bytes, 0);
    let item = read_item(&mut reader, &limits, 1)?;
    if !reader.is_empty() {
        return Err(DecodeError::TrailingData {
            offset: reader.offset(),
            len: reader.rest().len(),
        });
    }
    Ok(item)
}

/// The total length of the message whose first 8 bytes are `header`, for framing a stream:
/// read 8 bytes, call this, read the rest, then [`decode_with`].
pub fn message_len(header: &[u8; 8], limits: &Limits) -> Result<usize, DecodeError> {
    let code = header[3];
    if code != ItemType::Structure.code() {
        return Err(DecodeError::NotAStructure {
            tag: Tag::from_bytes([header[0], header[1], header[2]]),
            found: code,
        });
    }
    let len = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
    let total = 8 + u64::from(len);
    if total > limits.max_message_len as u64 {
        return Err(DecodeError::MessageTooLong {
            len: total,
            max: limits.max_message_len,
        });
    }
    Ok(total as usize)
}

/// A cursor over a borrowed slice that remembers its absolute offset for error messages.
/// `sub` cuts a bounded child reader, so a Structure's length can never let a child item
/// read past its parent.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    base: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], base: usize) -> Self {
        Self { buf, pos: 0, base }
    }

    fn offset(&self) -> usize {
        self.base + self.pos
    }

    fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    fn is_empty(&self) -> bool {
        self.pos == self.buf.len()
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let rest = self.rest();
        if rest.len() < n {
            return Err(DecodeError::Truncated {
                what,
                offset: self.offset(),
                needed: n,
                available: rest.len(),
            });
        }
        self.pos += n;
        Ok(&rest[..n])
    }

    fn take_array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn sub(&mut self, n: usize, what: &'static str) -> Result<Reader<'a>, DecodeError> {
        let base = self.offset();
        Ok(Reader::new(self.take(n, what)?, base))
    }
}

fn read_item(r: &mut Reader<'_>, limits: &Limits, depth: usize) -> Result<Item, DecodeError> {
    let start = r.offset();
    let tag_bytes = r.take_array::<3>("tag")?;
    let tag = Tag::from_bytes(tag_bytes);
    let [code] = r.take_array::<1>("type")?;
    let item_type = ItemType::from_code(code).ok_or(DecodeError::UnknownType {
        tag,
        code,
        offset: start + 3,
    })?;
    let len = u32::from_be_bytes(r.take_array::<4>("length")?) as usize;
    let fixed = match item_type {
        ItemType::Integer | ItemType::Enumeration | ItemType::Interval => Some(4),
        ItemType::LongInteger
        | ItemType::Boolean
        | ItemType::DateTime
        | ItemType::DateTimeExtended => Some(8),
        _ => None,
    };
    if let Some(want) = fixed {
        if len != want {
            return Err(DecodeError::BadLength {
                tag,
                item_type,
                len,
                offset: start + 4,
            });
        }
    }
    if item_type == ItemType::BigInteger && (len == 0 || !len.is_multiple_of(8)) {
        return Err(DecodeError::BadLength {
            tag,
            item_type,
            len,
            offset: start + 4,
        });
    }
    if item_type == ItemType::Structure && !len.is_multiple_of(8) {
        return Err(DecodeError::BadLength {
            tag,
            item_type,
            len,
            offset: start + 4,
        });
    }
    // Checked against the remaining input before any allocation: a length can claim at
    // most what the sender actually sent.
    let padded_len = padded(len);
    let mut body = r.sub(padded_len.max(len), "value")?;
    let value_offset = body.offset();
    let value = body.take(len, "value")?;
    let padding = body.rest();
    if let Some(i) = padding.iter().position(|&b| b != 0) {
        return Err(DecodeError::NonZeroPadding {
            tag,
            offset: value_offset + len + i,
        });
    }
    let value = match item_type {
        ItemType::Structure => {
            if depth >= limits.max_depth {
                return Err(DecodeError::TooDeep {
                    tag,
                    max: limits.max_depth,
                });
            }
            let mut children = Vec::new();
            let mut inner = Reader::new(value, value_offset);
            while !inner.is_empty() {
                children.push(read_item(&mut inner, limits, depth + 1)?);
            }
            Value::Structure(children)
        }
        ItemType::Integer => Value::Integer(i32::from_be_bytes(arr(value))),
        ItemType::Enumeration => Value::Enumeration(u32::from_be_bytes(arr(value))),
        ItemType::Interval => Value::Interval(u32::from_be_bytes(arr(value))),
        ItemType::LongInteger => Value::LongInteger(i64::from_be_bytes(arr(value))),
        ItemType::DateTime => Value::DateTime(i64::from_be_bytes(arr(value))),
        ItemType::DateTimeExtended => Value::DateTimeExtended(i64::from_be_bytes(arr(value))),
        ItemType::Boolean => match u64::from_be_bytes(arr(value)) {
            0 => Value::Boolean(false),
            1 => Value::Boolean(true),
            other => {
                return Err(DecodeError::BadBoolean {
                    tag,
                    value: other,
                    offset: value_offset,
                })
            }
        },
        ItemType::TextString => match std::str::from_utf8(value) {
            Ok(s) => Value::TextString(s.to_owned().into()),
            Err(e) => {
                return Err(DecodeError::BadUtf8 {
                    tag,
                    offset: value_offset + e.valid_up_to(),
                })
            }
        },
        ItemType::ByteString => Value::ByteString(value.to_vec().into()),
        ItemType::BigInteger => Value::BigInteger(value.to_vec()),
    };
    Ok(Item { tag, value })
}

fn arr<const N: usize>(s: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(s);
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(v: u32) -> Tag {
        Tag::new(v).unwrap()
    }

    fn unhex(s: &str) -> Vec<u8> {
        hex::decode(s.split_whitespace().collect::<String>()).unwrap()
    }

    // The encoding examples of KMIP 1.4 §9.1.2, tag 0x420020.
    #[test]
    fn encodes_the_spec_examples() {
        let tag = t(0x420020);
        let cases: Vec<(Value, &str)> = vec![
            (Value::Integer(8), "420020 02 00000004 00000008 00000000"),
            (
                Value::LongInteger(123456789000000000),
                "420020 03 00000008 01B69B4BA5749200",
            ),
            (
                Value::BigInteger(unhex("0000000003FD35EB6BC2DF4618080000")),
                "420020 04 00000010 0000000003FD35EB6BC2DF4618080000",
            ),
            (
                Value::Enumeration(255),
                "420020 05 00000004 000000FF 00000000",
            ),
            (Value::Boolean(true), "420020 06 00000008 0000000000000001"),
            (
                Value::TextString(String::from("Hello World").into()),
                "420020 07 0000000B 48656C6C6F20576F726C64 0000000000",
            ),
            (
                Value::ByteString(vec![1, 2, 3].into()),
                "420020 08 00000003 010203 0000000000",
            ),
            (
                Value::DateTime(0x47DA67F8),
                "420020 09 00000008 0000000047DA67F8",
            ),
            (
                Value::Interval(864000),
                "420020 0A 00000004 000D2F00 00000000",
            ),
        ];
        for (value, want) in cases {
            let item = Item::new(tag, value);
            let bytes = encode(&item);
            assert_eq!(hex::encode_upper(&bytes), want.replace(' ', ""), "{item:?}");
            assert_eq!(bytes.len(), item.encoded_len());
            assert_eq!(decode(&bytes).unwrap(), item);
        }
        let s = Item::structure(
            tag,
            vec![
                Item::enumeration(t(0x420004), 254),
                Item::integer(t(0x420005), 255),
            ],
        );
        assert_eq!(
            hex::encode_upper(encode(&s)),
            "42002001000000204200040500000004000000FE000000004200050200000004000000FF00000000"
        );
    }

    #[test]
    fn rejects_non_zero_padding() {
        let mut b = encode(&Item::integer(t(0x420020), 8));
        b[15] = 1;
        assert!(matches!(
            decode(&b),
            Err(DecodeError::NonZeroPadding { offset: 15, .. })
        ));
    }

    #[test]
    fn rejects_boolean_other_than_zero_or_one() {
        let mut b = encode(&Item::boolean(t(0x420020), true));
        b[15] = 2;
        assert!(matches!(
            decode(&b),
            Err(DecodeError::BadBoolean { value: 2, .. })
        ));
    }

    #[test]
    fn rejects_wrong_fixed_length() {
        let b = unhex("420020 02 00000008 0000000800000000");
        assert!(matches!(
            decode(&b),
            Err(DecodeError::BadLength { len: 8, .. })
        ));
        let b = unhex("420020 04 00000004 0000000800000000");
        assert!(matches!(decode(&b), Err(DecodeError::BadLength { .. })));
    }

    #[test]
    fn rejects_a_child_longer_than_its_parent() {
        // A Structure of length 16 whose child claims 32 bytes of value.
        let b = unhex("420020 01 00000010 420021 08 00000020 0000000000000000");
        assert!(matches!(decode(&b), Err(DecodeError::Truncated { .. })));
    }

    #[test]
    fn rejects_a_huge_length_without_allocating() {
        let b = unhex("420020 08 FFFFFFF0 00");
        assert!(matches!(
            decode(&b),
            Err(DecodeError::Truncated {
                needed: 0xFFFF_FFF0,
                ..
            })
        ));
    }

    #[test]
    fn rejects_trailing_bytes_and_unknown_types_and_bad_utf8() {
        let mut b = encode(&Item::integer(t(0x420020), 8));
        b.extend_from_slice(&[0; 8]);
        assert!(matches!(
            decode(&b),
            Err(DecodeError::TrailingData { offset: 16, len: 8 })
        ));
        let b = unhex("420020 0C 00000004 0000000800000000");
        assert!(matches!(
            decode(&b),
            Err(DecodeError::UnknownType { code: 0x0C, .. })
        ));
        let b = unhex("420020 07 00000002 C328000000000000");
        assert!(matches!(
            decode(&b),
            Err(DecodeError::BadUtf8 { offset: 8, .. })
        ));
    }

    #[test]
    fn rejects_nesting_deeper_than_the_limit() {
        let mut item = Item::integer(t(0x420020), 1);
        for _ in 0..40 {
            item = Item::structure(t(0x420020), vec![item]);
        }
        let b = encode(&item);
        assert!(matches!(
            decode(&b),
            Err(DecodeError::TooDeep { max: 32, .. })
        ));
        let deep = Limits {
            max_depth: 64,
            ..Limits::default()
        };
        assert_eq!(decode_with(&b, deep).unwrap(), item);
    }

    #[test]
    fn rejects_messages_over_the_size_limit() {
        let item = Item::bytes(t(0x420020), vec![0u8; 100]);
        let b = encode(&item);
        let small = Limits {
            max_message_len: 64,
            ..Limits::default()
        };
        assert!(matches!(
            decode_with(&b, small),
            Err(DecodeError::MessageTooLong { len: 112, max: 64 })
        ));
        let header: [u8; 8] = unhex("42007801 7FFFFFFF").try_into().unwrap();
        assert!(message_len(&header, &Limits::default()).is_err());
        let header: [u8; 8] = unhex("42007801 00000010").try_into().unwrap();
        assert_eq!(message_len(&header, &Limits::default()).unwrap(), 24);
    }

    #[test]
    fn unknown_tags_and_vendor_tags_are_kept() {
        let item = Item::structure(
            t(0x540001),
            vec![
                Item::text(t(0x123456), "x"),
                Item::date_time(t(0x54FFFF), -1),
            ],
        );
        assert_eq!(decode(&encode(&item)).unwrap(), item);
    }

    #[test]
    fn a_short_big_integer_is_sign_extended_on_encode() {
        let item = Item::new(t(0x420020), Value::BigInteger(vec![0x80, 1]));
        let b = encode(&item);
        assert_eq!(hex::encode(&b[8..]), "ffffffffffff8001");
    }
}
