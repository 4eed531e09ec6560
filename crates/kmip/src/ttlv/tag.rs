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

macro_rules! tags {
    ($($name:ident = $v:literal,)*) => {
        impl Tag {
            $(
                #[allow(missing_docs)]
                pub const $name: Tag = Tag($v);
            )*
        }
        #[cfg(test)]
        pub(crate) const NAMED: &[(Tag, &str)] = &[$((Tag::$name, stringify!($name)),)*];
    };
}

tags! {
    ACTIVATION_DATE = 0x420001,
    ASYNCHRONOUS_INDICATOR = 0x420007,
    ATTRIBUTE = 0x420008,
    ATTRIBUTE_INDEX = 0x420009,
    ATTRIBUTE_NAME = 0x42000A,
    ATTRIBUTE_VALUE = 0x42000B,
    AUTHENTICATION = 0x42000C,
    BATCH_COUNT = 0x42000D,
    BATCH_ERROR_CONTINUATION_OPTION = 0x42000E,
    BATCH_ITEM = 0x42000F,
    BATCH_ORDER_OPTION = 0x420010,
    COMPROMISE_OCCURRENCE_DATE = 0x420021,
    CREDENTIAL = 0x420023,
    CREDENTIAL_TYPE = 0x420024,
    CREDENTIAL_VALUE = 0x420025,
    CRYPTOGRAPHIC_ALGORITHM = 0x420028,
    CRYPTOGRAPHIC_LENGTH = 0x42002A,
    CRYPTOGRAPHIC_USAGE_MASK = 0x42002C,
    KEY = 0x42003F,
    KEY_BLOCK = 0x420040,
    KEY_COMPRESSION_TYPE = 0x420041,
    KEY_FORMAT_TYPE = 0x420042,
    KEY_MATERIAL = 0x420043,
    KEY_VALUE = 0x420045,
    KEY_WRAPPING_DATA = 0x420046,
    MAXIMUM_ITEMS = 0x42004F,
    MAXIMUM_RESPONSE_SIZE = 0x420050,
    NAME = 0x420053,
    NAME_TYPE = 0x420054,
    NAME_VALUE = 0x420055,
    OBJECT_GROUP = 0x420056,
    OBJECT_TYPE = 0x420057,
    OPERATION = 0x42005C,
    PROTOCOL_VERSION = 0x420069,
    PROTOCOL_VERSION_MAJOR = 0x42006A,
    PROTOCOL_VERSION_MINOR = 0x42006B,
    QUERY_FUNCTION = 0x420074,
    REQUEST_HEADER = 0x420077,
    REQUEST_MESSAGE = 0x420078,
    REQUEST_PAYLOAD = 0x420079,
    RESPONSE_HEADER = 0x42007A,
    RESPONSE_MESSAGE = 0x42007B,
    RESPONSE_PAYLOAD = 0x42007C,
    RESULT_MESSAGE = 0x42007D,
    RESULT_REASON = 0x42007E,
    RESULT_STATUS = 0x42007F,
    REVOCATION_MESSAGE = 0x420080,
    REVOCATION_REASON = 0x420081,
    REVOCATION_REASON_CODE = 0x420082,
    SERVER_INFORMATION = 0x420088,
    STATE = 0x42008D,
    SYMMETRIC_KEY = 0x42008F,
    TEMPLATE_ATTRIBUTE = 0x420091,
    TIME_STAMP = 0x420092,
    UNIQUE_BATCH_ITEM_ID = 0x420093,
    UNIQUE_IDENTIFIER = 0x420094,
    USERNAME = 0x420099,
    VENDOR_IDENTIFICATION = 0x42009D,
    PASSWORD = 0x4200A1,
    ATTRIBUTES = 0x420125,
    ATTRIBUTE_REFERENCE = 0x42013B,
    STORAGE_STATUS_MASK = 0x42008E,
    OFFSET_ITEMS = 0x4200D4,
    LOCATED_ITEMS = 0x4200D5,
    CLIENT_CORRELATION_VALUE = 0x420105,
    SERVER_CORRELATION_VALUE = 0x420106,
    CURRENT_ATTRIBUTE = 0x42013C,
    NEW_ATTRIBUTE = 0x42013D,
    KEY_WRAP_TYPE = 0x4200F8,
    KEY_WRAPPING_SPECIFICATION = 0x420047,
    USAGE_LIMITS_COUNT = 0x420096,
    LEASE_TIME = 0x420049,
    OBJECT_GROUP_MEMBER = 0x4200AC,
    ASYNCHRONOUS_CORRELATION_VALUE = 0x420006,
    MESSAGE_EXTENSION = 0x420051,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_constants_agree_with_the_generated_registry() {
        for (tag, constant) in NAMED {
            let registry_name = tag.name().unwrap_or_else(|| panic!("{constant} unknown"));
            let squashed: String = constant.split('_').collect::<String>();
            assert!(
                squashed.eq_ignore_ascii_case(registry_name),
                "{constant} = {:#x} but the registry names it {registry_name}",
                tag.value()
            );
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
