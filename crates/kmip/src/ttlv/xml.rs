//! The OASIS XML form of TTLV, as used by the KMIP profile test cases.
//!
//! ```xml
//! <Operation type="Enumeration" value="Create"/>
//! <CryptographicUsageMask type="Integer" value="Encrypt Decrypt"/>
//! <TTLV tag="0x540001" type="TextString" value="vendor data"/>
//! ```
//! Conventions (KMIP Profiles, XML encoding): an element per item named by its tag; a
//! Structure is an element without `type`; Enumerations by name, or `0x` and 8 hex digits
//! when the registry has no name; bit masks as space-separated names; Byte Strings and Big
//! Integers in hex; Date-Times in ISO 8601 with an offset; a tag outside the registry as a
//! `TTLV` element with a `tag` attribute. In KMIP 1.x an `AttributeValue` takes its names
//! from the sibling `AttributeName` ("Cryptographic Algorithm" → `AES`), and in 2.x an
//! `AttributeReference` Enumeration is written as the name of the tag it refers to.
//!
//! Writing then reading gives back the same items; reading then writing gives back the
//! same document up to insignificant differences (whitespace, hex case, mask name order).

use std::fmt::Write as _;

use quick_xml::events::{BytesStart, Event};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::item::{Item, ItemType, Value};
use super::limits::MAX_DEPTH;
use super::tag::Tag;
use crate::error::XmlError;
use crate::registry;

/// The element name used for a tag that the registry does not know.
const UNKNOWN_TAG_ELEMENT: &str = "TTLV";
/// Wrapper elements of the OASIS test-case files; their children are the messages.
const WRAPPERS: [&str; 2] = ["KMIP", "KmipTestCase"];

/// How the names of a leaf's value are looked up.
enum Names {
    Enumeration(registry::Enumeration),
    Mask(&'static [(u32, &'static str)]),
    /// Values are tag numbers written as tag names (2.x Attribute Reference).
    Tags,
}

/// Where the names for an item's value come from: its own tag, or for a 1.x
/// `AttributeValue` the tag its sibling `AttributeName` denotes.
fn names_for(tag: Tag, siblings: &[Item]) -> Option<Names> {
    let tag = if tag == Tag::ATTRIBUTE_VALUE {
        let name = siblings.iter().rev().find_map(|s| match &s.value {
            Value::TextString(n) if s.tag == Tag::ATTRIBUTE_NAME => Some(n.as_str()),
            _ => None,
        })?;
        Tag::new(registry::tag_for_attribute_name(name)?)?
    } else {
        tag
    };
    if tag == Tag::ATTRIBUTE_REFERENCE {
        return Some(Names::Tags);
    }
    if let Some(m) = registry::mask_for_tag(tag.value()) {
        return Some(Names::Mask(m));
    }
    registry::enumeration_for_tag(tag.value()).map(Names::Enumeration)
}

// ---------------------------------------------------------------------------------------
// Writing

/// What a redacted secret prints as. It is not valid hex or a valid anything else, so a
/// redacted document cannot be encoded back by mistake into a message with a wrong key.
pub const REDACTED: &str = "$REDACTED";

/// Whether secrets (key material, passwords) are printed or replaced by [`REDACTED`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Secrets {
    /// Print every value.
    Reveal,
    /// Replace the values under Key Material, Key Value and Password.
    Redact,
}

/// The XML form of `item`, indented by two spaces per level, ending in a newline.
pub fn to_xml(item: &Item) -> String {
    to_xml_with(item, Secrets::Reveal)
}

/// The XML form of `item`, secrets revealed or redacted.
pub fn to_xml_with(item: &Item, secrets: Secrets) -> String {
    let mut out = String::new();
    write_item(item, &[], 0, secrets, &mut out);
    out
}

/// The XML form of several items (a test case's message sequence) inside `<KMIP>`.
pub fn to_xml_document(items: &[Item], secrets: Secrets) -> String {
    let mut out = String::from("<KMIP>\n");
    for item in items {
        write_item(item, &[], 1, secrets, &mut out);
    }
    out.push_str("</KMIP>\n");
    out
}

/// True for the items whose whole subtree is secret.
fn is_secret(tag: Tag) -> bool {
    tag == Tag::KEY_MATERIAL || tag == Tag::KEY_VALUE || tag == Tag::PASSWORD || tag == Tag::KEY
}

/// `redacting` is true inside a secret subtree when secrets are redacted.
fn write_item(item: &Item, siblings: &[Item], depth: usize, secrets: Secrets, out: &mut String) {
    write_nested(item, siblings, depth, secrets, false, out)
}

fn write_nested(
    item: &Item,
    siblings: &[Item],
    depth: usize,
    secrets: Secrets,
    redacting: bool,
    out: &mut String,
) {
    let redacting = redacting || (secrets == Secrets::Redact && is_secret(item.tag));
    for _ in 0..depth {
        out.push_str("  ");
    }
    out.push('<');
    let name = item.tag.name();
    out.push_str(name.unwrap_or(UNKNOWN_TAG_ELEMENT));
    if name.is_none() {
        let _ = write!(out, " tag=\"0x{:06x}\"", item.tag.value());
    }
    match &item.value {
        Value::Structure(children) if children.is_empty() => out.push_str("/>\n"),
        Value::Structure(children) => {
            out.push_str(">\n");
            for (i, child) in children.iter().enumerate() {
                write_nested(child, &children[..i], depth + 1, secrets, redacting, out);
            }
            for _ in 0..depth {
                out.push_str("  ");
            }
            out.push_str("</");
            out.push_str(name.unwrap_or(UNKNOWN_TAG_ELEMENT));
            out.push_str(">\n");
        }
        value => {
            let text = match redacting {
                true => REDACTED.to_owned(),
                false => value_text(item.tag, value, siblings),
            };
            let _ = writeln!(
                out,
                " type=\"{}\" value=\"{}\"/>",
                value.item_type().xml_name(),
                escape_attribute(&text)
            );
        }
    }
}

/// Escapes for a double-quoted attribute. Beyond `& < > " '`, control characters become
/// character references: an XML reader must turn a literal tab or newline in an attribute
/// into a space, which would change a Text String.
fn escape_attribute(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "&#x{:x};", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

fn value_text(tag: Tag, value: &Value, siblings: &[Item]) -> String {
    match value {
        Value::Structure(_) => String::new(),
        Value::Integer(v) => match names_for(tag, siblings) {
            Some(Names::Mask(bits)) if *v != 0 => mask_text(*v as u32, bits),
            _ => v.to_string(),
        },
        Value::Enumeration(v) => {
            let name = match names_for(tag, siblings) {
                Some(Names::Enumeration(e)) => e.value_name(*v),
                Some(Names::Tags) => Tag::new(*v).and_then(Tag::name),
                _ => None,
            };
            name.map_or_else(|| format!("0x{v:08x}"), str::to_owned)
        }
        Value::LongInteger(v) => v.to_string(),
        Value::BigInteger(b) => hex::encode(b),
        Value::ByteString(b) => hex::encode(b.as_slice()),
        Value::Boolean(v) => v.to_string(),
        Value::TextString(s) => s.as_str().to_owned(),
        Value::DateTime(secs) => date_time_text(i128::from(*secs) * 1_000_000_000, false)
            .unwrap_or_else(|| secs.to_string()),
        Value::DateTimeExtended(micros) => {
            date_time_text(i128::from(*micros) * 1_000, true).unwrap_or_else(|| micros.to_string())
        }
        Value::Interval(v) => v.to_string(),
    }
}

fn mask_text(v: u32, bits: &[(u32, &str)]) -> String {
    let mut words = Vec::new();
    let mut rest = v;
    for &(bit, name) in bits {
        if bit != 0 && v & bit == bit && rest & bit != 0 {
            words.push(name.to_owned());
            rest &= !bit;
        }
    }
    if rest != 0 {
        words.push(format!("0x{rest:08x}"));
    }
    words.join(" ")
}

fn date_time_text(nanos: i128, micros: bool) -> Option<String> {
    let t = OffsetDateTime::from_unix_timestamp_nanos(nanos).ok()?;
    // RFC 3339 with an explicit +00:00, as the OASIS files write it.
    let mut s = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    if !(0..=9999).contains(&t.year()) {
        return None;
    }
    if micros {
        let _ = write!(s, ".{:06}", t.microsecond());
    }
    s.push_str("+00:00");
    Some(s)
}

// ---------------------------------------------------------------------------------------
// Reading

/// Replaces a `$PLACEHOLDER` value (`$NOW`, `$UNIQUE_IDENTIFIER_0`) before it is parsed:
/// given the declared type and the text, it returns the text to parse, or `None` to keep it.
pub type Substitute<'a> = &'a dyn Fn(ItemType, &str) -> Option<String>;

/// Reads exactly one item from `text`.
pub fn from_xml(text: &str) -> Result<Item, XmlError> {
    let mut items = from_xml_document(text, None)?;
    match items.len() {
        1 => Ok(items.pop().unwrap_or_else(|| unreachable!())),
        _ => Err(XmlError::Shape {
            element: "document".into(),
            problem: "expected exactly one top-level item",
        }),
    }
}

/// Reads every top-level item of `text`, looking through a `<KMIP>` or `<KmipTestCase>`
/// wrapper; `substitute` may replace placeholder values first.
pub fn from_xml_document(
    text: &str,
    substitute: Option<Substitute<'_>>,
) -> Result<Vec<Item>, XmlError> {
    let mut reader = quick_xml::Reader::from_str(text);
    reader.config_mut().trim_text(true);
    // Each open Structure: its tag, its element name (to report errors) and its children.
    let mut stack: Vec<(Tag, String, Vec<Item>)> = Vec::new();
    let mut top: Vec<Item> = Vec::new();
    loop {
        let event = reader.read_event().map_err(|e| XmlError::Syntax {
            offset: reader.error_position(),
            message: e.to_string(),
        })?;
        match event {
            Event::Start(e) | Event::Empty(e)
                if stack.is_empty()
                    && WRAPPERS.contains(&element_name(&e).as_str())
                    && attr(&e, "type")?.is_none() =>
            {
                // A wrapper is not an item: its children become top-level items.
            }
            Event::Start(e) => {
                let (tag, name, item_type) = element_head(&e)?;
                if item_type != ItemType::Structure {
                    return Err(XmlError::Shape {
                        element: name,
                        problem: "a leaf item must be an empty element with a value attribute",
                    });
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(XmlError::TooDeep { max: MAX_DEPTH });
                }
                stack.push((tag, name, Vec::new()));
            }
            Event::Empty(e) => {
                let (tag, name, item_type) = element_head(&e)?;
                let item = if item_type == ItemType::Structure {
                    Item::structure(tag, Vec::new())
                } else {
                    let siblings = stack.last().map_or(&[][..], |(_, _, c)| c.as_slice());
                    let raw = attr(&e, "value")?.ok_or_else(|| XmlError::Shape {
                        element: name.clone(),
                        problem: "missing the value attribute",
                    })?;
                    let raw = match substitute {
                        Some(f) if raw.starts_with('$') => f(item_type, &raw).unwrap_or(raw),
                        _ => raw,
                    };
                    let value = parse_value(tag, item_type, &raw, siblings).map_err(|problem| {
                        XmlError::BadValue {
                            element: name.clone(),
                            item_type,
                            value: raw.clone(),
                            problem,
                        }
                    })?;
                    Item::new(tag, value)
                };
                push(&mut stack, &mut top, item);
            }
            Event::End(_) => {
                // With no open Structure, this is the end of a wrapper.
                if let Some((tag, _, children)) = stack.pop() {
                    push(&mut stack, &mut top, Item::structure(tag, children))
                }
            }
            Event::Text(t) => {
                let t = t.unescape().map_err(|e| XmlError::Syntax {
                    offset: reader.buffer_position(),
                    message: e.to_string(),
                })?;
                if !t.trim().is_empty() {
                    return Err(XmlError::Shape {
                        element: stack.last().map_or("document".into(), |s| s.1.clone()),
                        problem: "text content is not part of the KMIP XML form",
                    });
                }
            }
            Event::Eof => break,
            // Comments, declarations, processing instructions, CDATA: not items.
            _ => {}
        }
    }
    if let Some((_, name, _)) = stack.pop() {
        return Err(XmlError::Shape {
            element: name,
            problem: "element is not closed",
        });
    }
    Ok(top)
}

fn push(stack: &mut [(Tag, String, Vec<Item>)], top: &mut Vec<Item>, item: Item) {
    match stack.last_mut() {
        Some((_, _, children)) => children.push(item),
        None => top.push(item),
    }
}

fn element_name(e: &BytesStart<'_>) -> String {
    String::from_utf8_lossy(e.name().as_ref()).into_owned()
}

fn attr(e: &BytesStart<'_>, key: &str) -> Result<Option<String>, XmlError> {
    for a in e.attributes() {
        let a = a.map_err(|err| XmlError::Syntax {
            offset: 0,
            message: format!("<{}>: {err}", element_name(e)),
        })?;
        if a.key.as_ref() == key.as_bytes() {
            let v = a.unescape_value().map_err(|err| XmlError::Syntax {
                offset: 0,
                message: format!("<{}>: {err}", element_name(e)),
            })?;
            return Ok(Some(v.into_owned()));
        }
    }
    Ok(None)
}

fn element_head(e: &BytesStart<'_>) -> Result<(Tag, String, ItemType), XmlError> {
    let name = element_name(e);
    let tag = match attr(e, "tag")? {
        Some(t) => parse_tag_attribute(&t).ok_or_else(|| XmlError::BadTagAttribute {
            element: name.clone(),
            value: t,
        })?,
        None => Tag::from_name(&name).ok_or_else(|| XmlError::UnknownTag { name: name.clone() })?,
    };
    let item_type = match attr(e, "type")? {
        None => ItemType::Structure,
        Some(t) => ItemType::from_xml_name(&t).ok_or_else(|| XmlError::UnknownType {
            element: name.clone(),
            value: t,
        })?,
    };
    Ok((tag, name, item_type))
}

fn parse_tag_attribute(s: &str) -> Option<Tag> {
    let hex = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X"))?;
    if hex.is_empty() || hex.len() > 6 {
        return None;
    }
    Tag::new(u32::from_str_radix(hex, 16).ok()?)
}

fn parse_value(tag: Tag, t: ItemType, raw: &str, siblings: &[Item]) -> Result<Value, String> {
    // Text keeps its spaces; every other type tolerates them around the value.
    let s = raw.trim();
    Ok(match t {
        ItemType::Structure => Value::Structure(Vec::new()),
        ItemType::Integer => {
            let mask = match names_for(tag, siblings) {
                Some(Names::Mask(bits)) => bits,
                _ => &[],
            };
            Value::Integer(parse_integer(s, mask)?)
        }
        ItemType::LongInteger => Value::LongInteger(parse_number::<i64>(s)?),
        ItemType::BigInteger => {
            let digits = s.strip_prefix("0x").unwrap_or(s);
            let mut b = hex_bytes(digits)?;
            if b.is_empty() || b.len() % 8 != 0 {
                let fill = if b.first().is_some_and(|f| f & 0x80 != 0) {
                    0xFF
                } else {
                    0
                };
                let mut ext = vec![fill; (b.len().max(1)).div_ceil(8) * 8 - b.len()];
                ext.append(&mut b);
                b = ext;
            }
            Value::BigInteger(b)
        }
        ItemType::Enumeration => {
            if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
                Value::Enumeration(u32::from_str_radix(hex, 16).map_err(|e| e.to_string())?)
            } else if let Ok(n) = s.parse::<u32>() {
                Value::Enumeration(n)
            } else {
                let found = match names_for(tag, siblings) {
                    Some(Names::Enumeration(e)) => e.value_by_name(s),
                    Some(Names::Tags) => Tag::from_name(s).map(Tag::value),
                    _ => None,
                };
                Value::Enumeration(found.ok_or_else(|| {
                    "not a name of this enumeration, nor 0x followed by hex digits".to_owned()
                })?)
            }
        }
        ItemType::Boolean => match s {
            "true" | "1" => Value::Boolean(true),
            "false" | "0" => Value::Boolean(false),
            _ => return Err("expected true or false".into()),
        },
        ItemType::TextString => Value::TextString(raw.to_owned().into()),
        ItemType::ByteString => Value::ByteString(hex_bytes(s)?.into()),
        ItemType::DateTime => Value::DateTime(parse_date_time(s, false)?),
        ItemType::DateTimeExtended => Value::DateTimeExtended(parse_date_time(s, true)?),
        ItemType::Interval => Value::Interval(parse_number::<u32>(s)?),
    })
}

fn parse_number<T: TryFrom<i128>>(s: &str) -> Result<T, String> {
    let v: i128 = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => i128::from_str_radix(hex, 16).map_err(|e| e.to_string())?,
        None => s
            .parse()
            .map_err(|e: std::num::ParseIntError| e.to_string())?,
    };
    T::try_from(v).map_err(|_| "out of range for this type".to_owned())
}

/// An Integer: a number, or mask names and numbers joined by spaces or `|`.
fn parse_integer(s: &str, mask: &[(u32, &str)]) -> Result<i32, String> {
    if let Ok(v) = parse_number::<i64>(s) {
        // Hex masks such as 0x80000000 are written unsigned.
        return i32::try_from(v)
            .or_else(|_| u32::try_from(v).map(|u| u as i32))
            .map_err(|_| "out of range for a 32-bit Integer".to_owned());
    }
    let mut v = 0u32;
    for word in s
        .split(|c: char| c.is_whitespace() || c == '|')
        .filter(|w| !w.is_empty())
    {
        v |= match mask.iter().find(|&&(_, n)| n == word) {
            Some(&(bit, _)) => bit,
            None => parse_number::<u32>(word).map_err(|_| {
                format!("{word:?} is neither a number nor a mask name of this field")
            })?,
        };
    }
    Ok(v as i32)
}

fn hex_bytes(s: &str) -> Result<Vec<u8>, String> {
    hex::decode(s).map_err(|e| format!("not hex: {e}"))
}

fn parse_date_time(s: &str, micros: bool) -> Result<i64, String> {
    if let Ok(n) = s.parse::<i64>() {
        return Ok(n);
    }
    let t = OffsetDateTime::parse(s, &Rfc3339)
        .map_err(|e| format!("not an ISO 8601 date-time: {e}"))?;
    if micros {
        i64::try_from(t.unix_timestamp_nanos() / 1000).map_err(|e| e.to_string())
    } else if t.nanosecond() != 0 {
        Err("a DateTime has whole seconds; use DateTimeExtended for fractions".into())
    } else {
        Ok(t.unix_timestamp())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CREATE: &str = r#"<RequestMessage>
  <RequestHeader>
    <ProtocolVersion>
      <ProtocolVersionMajor type="Integer" value="1"/>
      <ProtocolVersionMinor type="Integer" value="4"/>
    </ProtocolVersion>
    <BatchCount type="Integer" value="1"/>
  </RequestHeader>
  <BatchItem>
    <Operation type="Enumeration" value="Create"/>
    <RequestPayload>
      <ObjectType type="Enumeration" value="SymmetricKey"/>
      <TemplateAttribute>
        <Attribute>
          <AttributeName type="TextString" value="Cryptographic Algorithm"/>
          <AttributeValue type="Enumeration" value="AES"/>
        </Attribute>
        <Attribute>
          <AttributeName type="TextString" value="Cryptographic Usage Mask"/>
          <AttributeValue type="Integer" value="Encrypt Decrypt"/>
        </Attribute>
      </TemplateAttribute>
    </RequestPayload>
  </BatchItem>
</RequestMessage>
"#;

    #[test]
    fn reads_and_writes_a_create_request_unchanged() {
        let item = from_xml(CREATE).unwrap();
        assert_eq!(to_xml(&item), CREATE);
        let batch = item.child(Tag::BATCH_ITEM).unwrap();
        assert_eq!(
            batch.child(Tag::OPERATION).unwrap().value,
            Value::Enumeration(1)
        );
        let attr = &batch.child(Tag::REQUEST_PAYLOAD).unwrap().children()[1].children()[1];
        assert_eq!(attr.children()[1].value, Value::Integer(12));
    }

    #[test]
    fn unknown_tags_and_enumeration_values_are_written_in_hex() {
        let item = Item::structure(
            Tag::new(0x540001).unwrap(),
            vec![
                Item::enumeration(Tag::OPERATION, 0x8000_0001),
                Item::integer(Tag::CRYPTOGRAPHIC_USAGE_MASK, 0x4 | 0x4000_0000),
            ],
        );
        let xml = to_xml(&item);
        assert!(xml.starts_with("<TTLV tag=\"0x540001\">"), "{xml}");
        assert!(xml.contains(r#"<Operation type="Enumeration" value="0x80000001"/>"#));
        assert!(xml.contains(r#"value="Encrypt 0x40000000""#), "{xml}");
        assert_eq!(from_xml(&xml).unwrap(), item);
    }

    #[test]
    fn date_times_and_every_leaf_type_round_trip() {
        let t = Tag::new(0x540002).unwrap();
        let leaves = vec![
            Item::date_time(Tag::TIME_STAMP, 1_335_514_479),
            Item::new(t, Value::DateTimeExtended(1_335_514_479_000_001)),
            Item::new(t, Value::LongInteger(-5)),
            Item::new(t, Value::big_integer_from_i128(-3)),
            Item::boolean(t, false),
            Item::text(t, "a <b> & \"c\""),
            Item::bytes(t, vec![0xde, 0xad]),
            Item::interval(t, 3600),
            Item::date_time(t, i64::MAX),
        ];
        let item = Item::structure(Tag::new(0x540003).unwrap(), leaves);
        let xml = to_xml(&item);
        assert!(xml.contains(r#"<TimeStamp type="DateTime" value="2012-04-27T08:14:39+00:00"/>"#));
        assert!(
            xml.contains(r#"value="2012-04-27T08:14:39.000001+00:00""#),
            "{xml}"
        );
        assert_eq!(from_xml(&xml).unwrap(), item);
    }

    #[test]
    fn redaction_hides_key_material_and_passwords_and_cannot_be_encoded_back() {
        let item = Item::structure(
            Tag::KEY_BLOCK,
            vec![
                Item::enumeration(Tag::KEY_FORMAT_TYPE, 1),
                Item::structure(
                    Tag::KEY_VALUE,
                    vec![Item::bytes(Tag::KEY_MATERIAL, vec![0xAB; 32])],
                ),
                Item::text(Tag::PASSWORD, "hunter2"),
                Item::integer(Tag::CRYPTOGRAPHIC_LENGTH, 256),
            ],
        );
        let xml = to_xml_with(&item, Secrets::Redact);
        assert!(!xml.contains("abab") && !xml.contains("hunter2"), "{xml}");
        assert!(xml.contains(r#"<KeyFormatType type="Enumeration" value="Raw"/>"#));
        assert!(xml.contains(r#"<CryptographicLength type="Integer" value="256"/>"#));
        assert_eq!(xml.matches(REDACTED).count(), 2);
        let err = from_xml(&xml).unwrap_err().to_string();
        assert!(err.contains("KeyMaterial"), "{err}");
        assert!(to_xml(&item).contains(&"ab".repeat(32)));
    }

    #[test]
    fn placeholders_are_substituted_before_parsing() {
        let xml = r#"<KMIP><TimeStamp type="DateTime" value="$NOW"/></KMIP>"#;
        let sub =
            |t: ItemType, v: &str| (t == ItemType::DateTime && v == "$NOW").then(|| "0".to_owned());
        let items = from_xml_document(xml, Some(&sub)).unwrap();
        assert_eq!(items, vec![Item::date_time(Tag::TIME_STAMP, 0)]);
    }

    #[test]
    fn rejects_malformed_documents_with_the_element_named() {
        let cases = [
            (
                r#"<NoSuchTag type="Integer" value="1"/>"#,
                "unknown tag name <NoSuchTag>",
            ),
            (
                r#"<Operation type="Enumeration" value="Fly"/>"#,
                "not a name of this enumeration",
            ),
            (r#"<Operation type="Float" value="1"/>"#, "unknown type"),
            (
                r#"<BatchCount type="Integer"/>"#,
                "missing the value attribute",
            ),
            (
                r#"<BatchCount type="Integer" value="1x"/>"#,
                "neither a number nor a mask name",
            ),
            (
                r#"<TTLV tag="0x1000000" type="Integer" value="1"/>"#,
                "invalid tag attribute",
            ),
            (r#"<RequestHeader>"#, "not closed"),
            (r#"<RequestHeader>text</RequestHeader>"#, "text content"),
            (
                r#"<TimeStamp type="DateTime" value="yesterday"/>"#,
                "ISO 8601",
            ),
        ];
        for (xml, want) in cases {
            let err = from_xml(xml).unwrap_err().to_string();
            assert!(err.contains(want), "{xml}: {err}");
        }
    }
}
