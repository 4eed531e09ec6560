//! Managed objects as carried in Get responses and Register requests.
//!
//! atrest handles symmetric keys, so only those are modelled field by field; any other
//! object (certificates, key pairs, secret data) stays an [`Item`] and round-trips intact.
//! Key bytes live in [`Zeroizing`] buffers from the moment they leave the TTLV tree.

use std::fmt;

use zeroize::Zeroizing;

use super::fields::{Fields, PushOpt};
use crate::enums::{CryptographicAlgorithm, KeyFormatType, ObjectType};
use crate::error::MessageError;
use crate::ttlv::{Item, Tag, Value};

/// A managed object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManagedObject {
    /// A Symmetric Key.
    SymmetricKey(KeyBlock),
    /// Any other object, kept as sent (its tag says which).
    Other(Item),
}

impl ManagedObject {
    /// The object's item.
    pub fn to_item(&self) -> Item {
        match self {
            Self::SymmetricKey(kb) => Item::structure(Tag::SYMMETRIC_KEY, vec![kb.to_item()]),
            Self::Other(item) => item.clone(),
        }
    }

    /// Reads the object that follows Object Type `object_type` in a payload.
    pub fn from_item(object_type: ObjectType, item: &Item) -> Result<Self, MessageError> {
        if object_type == ObjectType::SYMMETRIC_KEY && item.tag == Tag::SYMMETRIC_KEY {
            // A Key Block this model cannot hold exactly stays an Item rather than failing
            // the whole message: the caller then reports an unexpected object.
            let mut f = Fields::of(item)?;
            if let Some(Ok(kb)) = f.take(Tag::KEY_BLOCK).map(KeyBlock::from_item) {
                if f.rest().is_empty() {
                    return Ok(Self::SymmetricKey(kb));
                }
            }
        }
        Ok(Self::Other(item.clone()))
    }

    /// The tags that can carry an object in a payload (1.4 §2.2; 2.1 §3). Looked up by
    /// name so the numbers come from the specification, not from memory.
    pub(crate) fn is_object_tag(tag: Tag) -> bool {
        matches!(
            tag.name(),
            Some(
                "Certificate"
                    | "CertificateRequest"
                    | "OpaqueObject"
                    | "PGPKey"
                    | "PrivateKey"
                    | "PublicKey"
                    | "SecretData"
                    | "SplitKey"
                    | "SymmetricKey"
                    | "Template"
            )
        )
    }
}

/// The Key Material of a Key Value.
#[derive(Clone, PartialEq, Eq)]
pub enum KeyMaterial {
    /// A Byte String: the key itself in Raw format (and other byte formats).
    Bytes(Zeroizing<Vec<u8>>),
    /// Transparent Symmetric Key: a Structure holding `Key`.
    TransparentSymmetric(Zeroizing<Vec<u8>>),
    /// Any other structure (transparent asymmetric formats), kept as sent.
    Structure(Item),
}

impl fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bytes(b) => write!(f, "Bytes(<{} bytes redacted>)", b.len()),
            Self::TransparentSymmetric(b) => {
                write!(f, "TransparentSymmetric(<{} bytes redacted>)", b.len())
            }
            Self::Structure(i) => write!(f, "Structure({})", i.tag),
        }
    }
}

/// The Key Value of a Key Block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyValue {
    /// In the clear: material plus the attributes some 1.x servers put beside it.
    Plain {
        /// The key material.
        material: KeyMaterial,
        /// What follows the material inside the Key Value: 1.x Attribute items or a 2.x
        /// Attributes structure, kept as sent.
        attributes: Vec<Item>,
    },
    /// Wrapped: the Key Value is a Byte String that only the wrapping key opens.
    Wrapped(Zeroizing<Vec<u8>>),
}

/// A Key Block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyBlock {
    /// Key Format Type.
    pub format: KeyFormatType,
    /// Key Compression Type.
    pub compression: Option<u32>,
    /// Key Value.
    pub value: KeyValue,
    /// Cryptographic Algorithm.
    pub algorithm: Option<CryptographicAlgorithm>,
    /// Cryptographic Length, in bits.
    pub length: Option<i32>,
    /// Key Wrapping Data, when the value is wrapped.
    pub wrapping_data: Option<Item>,
}

impl KeyBlock {
    /// A Raw AES key.
    pub fn raw_aes(key: Zeroizing<Vec<u8>>) -> Self {
        let bits = (key.len() * 8) as i32;
        Self {
            format: KeyFormatType::RAW,
            compression: None,
            value: KeyValue::Plain {
                material: KeyMaterial::Bytes(key),
                attributes: Vec::new(),
            },
            algorithm: Some(CryptographicAlgorithm::AES),
            length: Some(bits),
            wrapping_data: None,
        }
    }

    /// The key bytes of an unwrapped symmetric key in Raw or Transparent Symmetric Key
    /// format; otherwise why not.
    pub fn symmetric_key(&self) -> Result<&Zeroizing<Vec<u8>>, KeyUnavailable> {
        match &self.value {
            KeyValue::Wrapped(_) => Err(KeyUnavailable::Wrapped),
            KeyValue::Plain {
                material: KeyMaterial::Bytes(b),
                ..
            } if self.format == KeyFormatType::RAW => Ok(b),
            KeyValue::Plain {
                material: KeyMaterial::TransparentSymmetric(b),
                ..
            } => Ok(b),
            _ => Err(KeyUnavailable::Format(self.format)),
        }
    }

    pub(crate) fn to_item(&self) -> Item {
        let mut c = vec![Item::enumeration(Tag::KEY_FORMAT_TYPE, self.format.0)];
        c.push_opt(self.compression, |x| {
            Item::enumeration(Tag::KEY_COMPRESSION_TYPE, x)
        });
        c.push(match &self.value {
            KeyValue::Wrapped(b) => Item::bytes(Tag::KEY_VALUE, b.to_vec()),
            KeyValue::Plain {
                material,
                attributes,
            } => {
                let m = match material {
                    KeyMaterial::Bytes(b) => Item::bytes(Tag::KEY_MATERIAL, b.to_vec()),
                    KeyMaterial::TransparentSymmetric(b) => {
                        Item::structure(Tag::KEY_MATERIAL, vec![Item::bytes(Tag::KEY, b.to_vec())])
                    }
                    KeyMaterial::Structure(i) => i.clone(),
                };
                let mut v = vec![m];
                v.extend(attributes.iter().cloned());
                Item::structure(Tag::KEY_VALUE, v)
            }
        });
        c.push_opt(self.algorithm, |x| {
            Item::enumeration(Tag::CRYPTOGRAPHIC_ALGORITHM, x.0)
        });
        c.push_opt(self.length, |x| Item::integer(Tag::CRYPTOGRAPHIC_LENGTH, x));
        c.push_opt(self.wrapping_data.clone(), |x| x);
        Item::structure(Tag::KEY_BLOCK, c)
    }

    pub(crate) fn from_item(item: &Item) -> Result<Self, MessageError> {
        let mut f = Fields::of(item)?;
        let format = KeyFormatType(f.enumeration(Tag::KEY_FORMAT_TYPE)?);
        let compression = f.opt_enum(Tag::KEY_COMPRESSION_TYPE)?;
        let kv = f.take(Tag::KEY_VALUE);
        let algorithm = f
            .opt_enum(Tag::CRYPTOGRAPHIC_ALGORITHM)?
            .map(CryptographicAlgorithm);
        let length = f.opt_int(Tag::CRYPTOGRAPHIC_LENGTH)?;
        let wrapping_data = f.take(Tag::KEY_WRAPPING_DATA).cloned();
        let value = match kv.map(|k| &k.value) {
            // A Key Value is absent only when the server withholds it (2.x Sensitive keys).
            None => {
                return Err(MessageError::Missing {
                    parent: Tag::KEY_BLOCK,
                    field: Tag::KEY_VALUE,
                })
            }
            Some(Value::ByteString(b)) => KeyValue::Wrapped(Zeroizing::new(b.to_vec())),
            Some(_) => {
                let kv = kv.unwrap_or_else(|| unreachable!());
                let mut g = Fields::of(kv)?;
                let m = g.required(Tag::KEY_MATERIAL)?;
                let material = match &m.value {
                    Value::ByteString(b) => KeyMaterial::Bytes(Zeroizing::new(b.to_vec())),
                    Value::Structure(children)
                        if format == KeyFormatType::TRANSPARENT_SYMMETRIC_KEY
                            && children.len() == 1
                            && children[0].tag == Tag::KEY =>
                    {
                        match &children[0].value {
                            Value::ByteString(b) => {
                                KeyMaterial::TransparentSymmetric(Zeroizing::new(b.to_vec()))
                            }
                            _ => KeyMaterial::Structure(m.clone()),
                        }
                    }
                    _ => KeyMaterial::Structure(m.clone()),
                };
                let attributes = g.rest();
                KeyValue::Plain {
                    material,
                    attributes,
                }
            }
        };
        let rest = f.rest();
        if let Some(extra) = rest.first() {
            return Err(MessageError::Invalid {
                field: Tag::KEY_BLOCK,
                value: format!("unexpected field {}", extra.tag),
            });
        }
        Ok(Self {
            format,
            compression,
            value,
            algorithm,
            length,
            wrapping_data,
        })
    }
}

/// Why a Key Block's bytes cannot be used as a symmetric key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyUnavailable {
    /// The server returned the key wrapped under another key.
    #[error("the server returned the key wrapped; atrest needs it in Raw or Transparent Symmetric Key format")]
    Wrapped,
    /// A format that does not carry plain symmetric key bytes.
    #[error("the server returned the key in format {0}, not Raw or Transparent Symmetric Key")]
    Format(KeyFormatType),
}
