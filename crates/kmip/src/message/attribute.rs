//! Attributes in one model for both encodings.
//!
//! KMIP 1.x wraps each attribute as `Attribute { Attribute Name "Cryptographic Length",
//! [Attribute Index], Attribute Value }`, usually inside a `Template-Attribute`. KMIP 2.x
//! writes each under its own tag inside `Attributes`, refers to one by `Attribute Reference`
//! (an Enumeration holding the tag), and turns custom `x-`/`y-` attributes into Vendor
//! Attributes. [`Attribute`] and [`AttributeName`] hold either form; the encoder picks by
//! protocol version, so the rest of atrest never sees the difference.

use super::fields::{as_enum, as_int, as_text, Fields, PushOpt};
use crate::error::MessageError;
use crate::registry;
use crate::ttlv::{Item, Tag, Value};

use super::header::ProtocolVersion;

/// Which attribute: a standard one (by its tag) or a custom/vendor one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttributeName {
    /// A standard attribute, named by its tag (`Tag::CRYPTOGRAPHIC_LENGTH`).
    Standard(Tag),
    /// A vendor attribute: in 1.x the name `x-Name` (client) or `y-Name` (server) maps to
    /// vendor `x`/`y`; other vendors exist only in 2.x.
    Vendor {
        /// Vendor Identification.
        vendor: String,
        /// Attribute Name.
        name: String,
    },
}

impl AttributeName {
    /// The name for a 1.x Attribute Name text.
    pub fn from_v1_text(text: &str) -> Self {
        if let Some(tag) = registry::tag_for_attribute_name(text).and_then(Tag::new) {
            if registry::attribute_name(tag.value()) == Some(text) {
                return Self::Standard(tag);
            }
        }
        match text.split_once('-') {
            Some((vendor @ ("x" | "y"), name)) => Self::Vendor {
                vendor: vendor.to_owned(),
                name: name.to_owned(),
            },
            _ => Self::Vendor {
                vendor: String::new(),
                name: text.to_owned(),
            },
        }
    }

    /// The same name with the whitespace of a 1.x Attribute Name collapsed
    /// (`"Cryptographic   Usage Mask"`, as some KMIP 1.0 documents and clients write it),
    /// so a server can recognise it. Decoding keeps the text as sent, for exact re-encoding;
    /// comparisons use this.
    pub fn canonical(&self) -> Self {
        match self {
            Self::Vendor { vendor, name } if vendor.is_empty() => {
                Self::from_v1_text(&name.split_whitespace().collect::<Vec<_>>().join(" "))
            }
            other => other.clone(),
        }
    }

    /// The 1.x Attribute Name text.
    pub fn v1_text(&self) -> String {
        match self {
            Self::Standard(tag) => registry::attribute_name(tag.value())
                .map(str::to_owned)
                .unwrap_or_else(|| format!("{tag}")),
            Self::Vendor { vendor, name } if vendor.is_empty() => name.clone(),
            Self::Vendor { vendor, name } => format!("{vendor}-{name}"),
        }
    }

    /// As written in a Get Attributes request: Attribute Name (1.x) or Attribute Reference (2.x).
    pub(crate) fn to_reference(&self, v: ProtocolVersion) -> Item {
        match self {
            _ if !v.uses_v2_attributes() => Item::text(Tag::ATTRIBUTE_NAME, self.v1_text()),
            Self::Standard(tag) => Item::enumeration(Tag::ATTRIBUTE_REFERENCE, tag.value()),
            Self::Vendor { vendor, name } => Item::structure(
                Tag::ATTRIBUTE_REFERENCE,
                vec![
                    Item::text(Tag::VENDOR_IDENTIFICATION, vendor.as_str()),
                    Item::text(Tag::ATTRIBUTE_NAME, name.as_str()),
                ],
            ),
        }
    }

    /// Reads an Attribute Name (1.x) or Attribute Reference (2.x) item.
    pub(crate) fn from_reference(item: &Item) -> Result<Self, MessageError> {
        if item.tag == Tag::ATTRIBUTE_NAME {
            return Ok(Self::from_v1_text(&as_text(item)?));
        }
        match &item.value {
            Value::Enumeration(t) => {
                Tag::new(*t)
                    .map(Self::Standard)
                    .ok_or(MessageError::Invalid {
                        field: item.tag,
                        value: format!("{t:#x} is not a tag"),
                    })
            }
            _ => {
                let mut f = Fields::of(item)?;
                Ok(Self::Vendor {
                    vendor: f.text(Tag::VENDOR_IDENTIFICATION)?,
                    name: f.text(Tag::ATTRIBUTE_NAME)?,
                })
            }
        }
    }
}

/// One attribute and its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    /// Which attribute.
    pub name: AttributeName,
    /// Attribute Index (1.x only; 2.x identifies multi-valued attributes by value).
    pub index: Option<i32>,
    /// The value: a leaf, or a Structure's children (e.g. Name Value and Name Type).
    pub value: Value,
}

impl Attribute {
    /// A standard attribute.
    pub fn new(tag: Tag, value: Value) -> Self {
        Self {
            name: AttributeName::Standard(tag),
            index: None,
            value,
        }
    }

    /// The standard attribute's tag, if it is one.
    pub fn tag(&self) -> Option<Tag> {
        match self.name {
            AttributeName::Standard(t) => Some(t),
            AttributeName::Vendor { .. } => None,
        }
    }

    /// The item for `v`: an `Attribute` structure (1.x, and 2.x vendor attributes) or the
    /// attribute under its own tag (2.x).
    pub fn to_item(&self, v: ProtocolVersion) -> Item {
        match &self.name {
            AttributeName::Standard(tag) if v.uses_v2_attributes() => {
                Item::new(*tag, self.value.clone())
            }
            AttributeName::Vendor { vendor, name } if v.uses_v2_attributes() => Item::structure(
                Tag::ATTRIBUTE,
                vec![
                    Item::text(Tag::VENDOR_IDENTIFICATION, vendor.as_str()),
                    Item::text(Tag::ATTRIBUTE_NAME, name.as_str()),
                    Item::new(Tag::ATTRIBUTE_VALUE, self.value.clone()),
                ],
            ),
            _ => {
                let mut c = vec![Item::text(Tag::ATTRIBUTE_NAME, self.name.v1_text())];
                c.push_opt(self.index, |i| Item::integer(Tag::ATTRIBUTE_INDEX, i));
                c.push(Item::new(Tag::ATTRIBUTE_VALUE, self.value.clone()));
                Item::structure(Tag::ATTRIBUTE, c)
            }
        }
    }

    /// Reads either form.
    pub fn from_item(item: &Item) -> Result<Self, MessageError> {
        if item.tag != Tag::ATTRIBUTE {
            return Ok(Self::new(item.tag, item.value.clone()));
        }
        let mut f = Fields::of(item)?;
        let vendor = f.opt_text(Tag::VENDOR_IDENTIFICATION)?;
        let name = f.text(Tag::ATTRIBUTE_NAME)?;
        let index = f.take(Tag::ATTRIBUTE_INDEX).map(as_int).transpose()?;
        // Attribute Value is optional in 1.x Delete Attribute responses and Locate.
        let value = f
            .take(Tag::ATTRIBUTE_VALUE)
            .map_or(Value::Structure(Vec::new()), |it| it.value.clone());
        let name = match vendor {
            Some(vendor) => AttributeName::Vendor { vendor, name },
            None => AttributeName::from_v1_text(&name),
        };
        Ok(Self { name, index, value })
    }

    /// The value as an Enumeration, if it is one.
    pub fn as_enumeration(&self) -> Option<u32> {
        as_enum(&Item::new(Tag::ATTRIBUTE_VALUE, self.value.clone())).ok()
    }
}

/// A list of attributes, encoded as `Template-Attribute` (1.x) or `Attributes` (2.x) in
/// Create and Register, and as bare items elsewhere.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attributes {
    /// The attributes, in order.
    pub list: Vec<Attribute>,
    /// Other children of a 1.x Template-Attribute: the Names of server-side templates
    /// (deprecated in 1.3, gone in 2.0). Kept so such a request re-encodes unchanged.
    pub template_names: Vec<Item>,
}

impl Attributes {
    /// A list of attributes.
    pub fn new(list: Vec<Attribute>) -> Self {
        Self {
            list,
            template_names: Vec::new(),
        }
    }

    /// The first attribute with standard tag `tag`.
    pub fn get(&self, tag: Tag) -> Option<&Attribute> {
        self.list.iter().find(|a| a.tag() == Some(tag))
    }

    /// The container item for `v`: `v1_tag` (e.g. Template-Attribute) in 1.x, `Attributes`
    /// in 2.x.
    pub(crate) fn to_container(&self, v: ProtocolVersion, v1_tag: Tag) -> Item {
        let tag = if v.uses_v2_attributes() {
            Tag::ATTRIBUTES
        } else {
            v1_tag
        };
        let mut c = self.template_names.clone();
        c.extend(self.list.iter().map(|a| a.to_item(v)));
        Item::structure(tag, c)
    }

    /// Reads a Template-Attribute, Attributes or similar container.
    pub(crate) fn from_container(item: &Item) -> Result<Self, MessageError> {
        let mut out = Self::default();
        for child in Fields::of(item)?.rest() {
            if item.tag != Tag::ATTRIBUTES && child.tag != Tag::ATTRIBUTE {
                out.template_names.push(child);
            } else {
                out.list.push(Attribute::from_item(&child)?);
            }
        }
        Ok(out)
    }

    /// Writes the attributes where a payload lists them loose: bare `Attribute` items in
    /// 1.x (Locate, Get Attributes response), one `Attributes` structure in 2.x.
    pub(crate) fn write_loose(&self, v: ProtocolVersion, out: &mut Vec<Item>) {
        if v.uses_v2_attributes() {
            out.push(self.to_container(v, Tag::ATTRIBUTES));
        } else {
            out.extend(self.list.iter().map(|a| a.to_item(v)));
        }
    }

    /// Reads what [`Attributes::write_loose`] writes, in either version.
    pub(crate) fn read_loose(f: &mut super::fields::Fields<'_>) -> Result<Self, MessageError> {
        match f.take(Tag::ATTRIBUTES) {
            Some(a) => Self::from_container(a),
            None => f
                .take_all(Tag::ATTRIBUTE)
                .into_iter()
                .map(Attribute::from_item)
                .collect::<Result<_, _>>()
                .map(Self::new),
        }
    }
}
