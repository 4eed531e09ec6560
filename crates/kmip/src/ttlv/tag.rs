//! [`Tag`]: the 3-byte name of a TTLV item.
//!
//! A newtype over the number, in the manner of rustls's `enum_builder!`: unknown and vendor
//! tags (0x54xxxx) are ordinary values that survive a round trip, and the names the message
//! layer needs are associated constants. Every other name comes from the registry generated
//! from the specification (see [`crate::registry`]).

use std::fmt;

use crate::registry;

/// A TTLV tag: a 24-bit number, `0x42xxxx` for the specification, `0x54xxxx` for extensions.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(u32);

impl Tag {
    /// The tag `v`, if it fits in 3 bytes.
    pub const fn new(v: u32) -> Option<Self> {
        if v <= 0xFF_FFFF {
            Some(Self(v))
        } else {
            None
        }
    }

    /// The tag from its 3 wire bytes.
    pub const fn from_bytes(b: [u8; 3]) -> Self {
        Self(((b[0] as u32) << 16) | ((b[1] as u32) << 8) | b[2] as u32)
    }

    /// The numeric value.
    pub const fn value(self) -> u32 {
        self.0
    }

    /// True for the extension range `0x54xxxx` that vendors use.
    pub const fn is_extension(self) -> bool {
        self.0 >> 16 == 0x54
    }

    /// The name of the OASIS XML form (`CryptographicAlgorithm`), if the specification
    /// defines this tag.
    pub fn name(self) -> Option<&'static str> {
        registry::tag_name(self.0)
    }

    /// A tag of the specification, for the constants `registry/generated.rs` defines (one
    /// for every tag, `Tag::ACTIVATION_DATE`); a value wider than 3 bytes stops the build.
    pub(crate) const fn spec(v: u32) -> Self {
        match Self::new(v) {
            Some(t) => t,
            None => panic!("a tag wider than 3 bytes"),
        }
    }

    /// The tag called `name` in the OASIS XML form.
    pub fn from_name(name: &str) -> Option<Self> {
        registry::tag_by_name(name).map(Self)
    }
}

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "{:#08x}", self.0),
        }
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generated_constants_name_the_registrys_tags() {
        for (tag, name) in [
            (Tag::ACTIVATION_DATE, "ActivationDate"),
            (Tag::CRT_COEFFICIENT, "CRTCoefficient"),
            (
                Tag::X_509_CERTIFICATE_IDENTIFIER,
                "X_509CertificateIdentifier",
            ),
            (Tag::USERNAME, "Username"),
            (Tag::LAST_CHANGE_DATE, "LastChangeDate"),
        ] {
            assert_eq!(tag.name(), Some(name));
            assert_eq!(Tag::from_name(name), Some(tag));
        }
    }

    #[test]
    fn tags_wider_than_three_bytes_are_refused() {
        assert!(Tag::new(0x0100_0000).is_none());
        assert_eq!(Tag::from_bytes([0x54, 0, 1]).value(), 0x540001);
        assert!(Tag::from_bytes([0x54, 0, 1]).is_extension());
        assert_eq!(format!("{:?}", Tag::from_bytes([0x54, 0, 1])), "0x540001");
    }
}
