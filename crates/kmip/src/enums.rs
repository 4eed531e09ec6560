//! KMIP enumerations used by the message model, as newtypes over the wire number.
//!
//! As rustls does for TLS code points, each is `Name(pub u32)` with a named constant per
//! value atrest uses: a value the peer sends that we have no constant for is still a valid
//! value (it round-trips, and prints by its registry name or in hex), never a decode error.

use std::fmt;

use crate::registry;

macro_rules! kmip_enum {
    ($(#[$doc:meta])* $ty:ident ($table:literal) { $($name:ident = $v:literal,)* }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $ty(pub u32);

        impl $ty {
            $(
                #[allow(missing_docs)]
                pub const $name: $ty = $ty($v);
            )*

            /// The registry name of this value (`"SymmetricKey"`), if it has one.
            pub fn name(self) -> Option<&'static str> {
                registry::enumeration_by_name($table).and_then(|e| e.value_name(self.0))
            }
        }

        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self.name() {
                    Some(n) => f.write_str(n),
                    None => write!(f, "{}({:#010x})", stringify!($ty), self.0),
                }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(self, f)
            }
        }

        #[cfg(test)]
        impl $ty {
            pub(crate) const ALL_NAMED: &'static [($ty, &'static str)] =
                &[$(($ty::$name, stringify!($name)),)*];
        }
    };
}

kmip_enum! {
    /// Operation (KMIP 1.4 §9.1.3.2.27, 2.1 §11.36).
    Operation ("Operation") {
        CREATE = 0x01, CREATE_KEY_PAIR = 0x02, REGISTER = 0x03, REKEY = 0x04,
        LOCATE = 0x08, CHECK = 0x09, GET = 0x0A, GET_ATTRIBUTES = 0x0B,
        GET_ATTRIBUTE_LIST = 0x0C, ADD_ATTRIBUTE = 0x0D, MODIFY_ATTRIBUTE = 0x0E,
        DELETE_ATTRIBUTE = 0x0F, ACTIVATE = 0x12, REVOKE = 0x13, DESTROY = 0x14,
        QUERY = 0x18, DISCOVER_VERSIONS = 0x1E,
    }
}

kmip_enum! {
    /// Object Type.
    ObjectType ("ObjectType") {
        CERTIFICATE = 0x01, SYMMETRIC_KEY = 0x02, PUBLIC_KEY = 0x03, PRIVATE_KEY = 0x04,
        SPLIT_KEY = 0x05, SECRET_DATA = 0x07, OPAQUE_OBJECT = 0x08,
    }
}

kmip_enum! {
    /// Result Status of a batch item.
    ResultStatus ("ResultStatus") {
        SUCCESS = 0, OPERATION_FAILED = 1, OPERATION_PENDING = 2, OPERATION_UNDONE = 3,
    }
}

kmip_enum! {
    /// Result Reason of a failed batch item.
    ResultReason ("ResultReason") {
        ITEM_NOT_FOUND = 0x01, RESPONSE_TOO_LARGE = 0x02, AUTHENTICATION_NOT_SUCCESSFUL = 0x03,
        INVALID_MESSAGE = 0x04, OPERATION_NOT_SUPPORTED = 0x05, MISSING_DATA = 0x06,
        INVALID_FIELD = 0x07, FEATURE_NOT_SUPPORTED = 0x08,
        OPERATION_CANCELED_BY_REQUESTER = 0x09, CRYPTOGRAPHIC_FAILURE = 0x0A,
        ILLEGAL_OPERATION = 0x0B, PERMISSION_DENIED = 0x0C, OBJECT_ARCHIVED = 0x0D,
        INDEX_OUT_OF_BOUNDS = 0x0E, APPLICATION_NAMESPACE_NOT_SUPPORTED = 0x0F,
        KEY_FORMAT_TYPE_NOT_SUPPORTED = 0x10, KEY_COMPRESSION_TYPE_NOT_SUPPORTED = 0x11,
        ENCODING_OPTION_ERROR = 0x12, KEY_VALUE_NOT_PRESENT = 0x13, ATTESTATION_REQUIRED = 0x14,
        ATTESTATION_FAILED = 0x15, SENSITIVE = 0x16, NOT_EXTRACTABLE = 0x17,
        OBJECT_ALREADY_EXISTS = 0x18, ATTRIBUTE_NOT_FOUND = 0x21, ATTRIBUTE_READ_ONLY = 0x22,
        ATTRIBUTE_SINGLE_VALUED = 0x23, CODEC_ERROR = 0x26,
        INCOMPATIBLE_CRYPTOGRAPHIC_USAGE_MASK = 0x29, OBJECT_NOT_FOUND = 0x37,
        UNSUPPORTED_PROTOCOL_VERSION = 0x3F, WRONG_KEY_LIFECYCLE_STATE = 0x43,
        GENERAL_FAILURE = 0x100,
    }
}

kmip_enum! {
    /// Credential Type.
    CredentialType ("CredentialType") {
        USERNAME_AND_PASSWORD = 1, DEVICE = 2, ATTESTATION = 3,
    }
}

kmip_enum! {
    /// Cryptographic Algorithm.
    CryptographicAlgorithm ("CryptographicAlgorithm") {
        DES = 0x01, DES3 = 0x02, AES = 0x03, RSA = 0x04, HMAC_SHA256 = 0x09,
    }
}

kmip_enum! {
    /// Key Format Type.
    KeyFormatType ("KeyFormatType") {
        RAW = 0x01, OPAQUE = 0x02, PKCS1 = 0x03, PKCS8 = 0x04, X509 = 0x05,
        TRANSPARENT_SYMMETRIC_KEY = 0x07,
    }
}

kmip_enum! {
    /// Name Type.
    NameType ("NameType") {
        UNINTERPRETED_TEXT_STRING = 1, URI = 2,
    }
}

kmip_enum! {
    /// State of a managed object.
    State ("State") {
        PRE_ACTIVE = 1, ACTIVE = 2, DEACTIVATED = 3, COMPROMISED = 4, DESTROYED = 5,
        DESTROYED_COMPROMISED = 6,
    }
}

kmip_enum! {
    /// Query Function.
    QueryFunction ("QueryFunction") {
        QUERY_OPERATIONS = 1, QUERY_OBJECTS = 2, QUERY_SERVER_INFORMATION = 3,
        QUERY_APPLICATION_NAMESPACES = 4, QUERY_EXTENSION_LIST = 5, QUERY_EXTENSION_MAP = 6,
        QUERY_ATTESTATION_TYPES = 7, QUERY_RNGS = 8, QUERY_VALIDATIONS = 9,
        QUERY_PROFILES = 0x0A, QUERY_CAPABILITIES = 0x0B, QUERY_CLIENT_REGISTRATION_METHODS = 0x0C,
    }
}

kmip_enum! {
    /// Revocation Reason Code.
    RevocationReasonCode ("RevocationReasonCode") {
        UNSPECIFIED = 1, KEY_COMPROMISE = 2, CA_COMPROMISE = 3, AFFILIATION_CHANGED = 4,
        SUPERSEDED = 5, CESSATION_OF_OPERATION = 6, PRIVILEGE_WITHDRAWN = 7,
    }
}

kmip_enum! {
    /// Batch Error Continuation Option.
    BatchErrorContinuationOption ("BatchErrorContinuationOption") {
        CONTINUE = 1, STOP = 2, UNDO = 3,
    }
}

/// Cryptographic Usage Mask bits (an Integer, not an enumeration).
pub mod usage_mask {
    /// Sign.
    pub const SIGN: i32 = 0x0001;
    /// Verify.
    pub const VERIFY: i32 = 0x0002;
    /// Encrypt.
    pub const ENCRYPT: i32 = 0x0004;
    /// Decrypt.
    pub const DECRYPT: i32 = 0x0008;
    /// Wrap Key.
    pub const WRAP_KEY: i32 = 0x0010;
    /// Unwrap Key.
    pub const UNWRAP_KEY: i32 = 0x0020;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check<T: Copy + fmt::Debug>(all: &[(T, &str)], name: impl Fn(T) -> Option<&'static str>) {
        for &(v, constant) in all {
            let got = name(v).unwrap_or_else(|| panic!("{constant} has no registry name"));
            let squashed: String = constant.split('_').collect();
            let got_squashed: String = got.split('_').collect();
            assert!(
                squashed.eq_ignore_ascii_case(&got_squashed),
                "{constant} is {got} in the registry"
            );
        }
    }

    #[test]
    fn constants_agree_with_the_registry() {
        check(Operation::ALL_NAMED, Operation::name);
        check(ObjectType::ALL_NAMED, ObjectType::name);
        check(ResultStatus::ALL_NAMED, ResultStatus::name);
        check(ResultReason::ALL_NAMED, ResultReason::name);
        check(CredentialType::ALL_NAMED, CredentialType::name);
        check(
            CryptographicAlgorithm::ALL_NAMED,
            CryptographicAlgorithm::name,
        );
        check(KeyFormatType::ALL_NAMED, KeyFormatType::name);
        check(NameType::ALL_NAMED, NameType::name);
        check(State::ALL_NAMED, State::name);
        check(QueryFunction::ALL_NAMED, QueryFunction::name);
        check(RevocationReasonCode::ALL_NAMED, RevocationReasonCode::name);
        check(
            BatchErrorContinuationOption::ALL_NAMED,
            BatchErrorContinuationOption::name,
        );
    }
}
