//! Protocol Version, Credential, and the request and response headers.

use std::fmt;

use zeroize::Zeroizing;

use super::fields::{Fields, PushOpt};
use super::frame;
use crate::enums::{BatchErrorContinuationOption, CredentialType};
use crate::error::MessageError;
use crate::ttlv::{Item, Tag};

/// A KMIP protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProtocolVersion {
    /// Major number: 1 or 2.
    pub major: i32,
    /// Minor number.
    pub minor: i32,
}

impl ProtocolVersion {
    /// KMIP 1.0: no Discover Versions.
    pub const V1_0: Self = Self::new(1, 0);
    /// KMIP 1.1.
    pub const V1_1: Self = Self::new(1, 1);
    /// KMIP 1.2.
    pub const V1_2: Self = Self::new(1, 2);
    /// KMIP 1.3.
    pub const V1_3: Self = Self::new(1, 3);
    /// KMIP 1.4.
    pub const V1_4: Self = Self::new(1, 4);
    /// KMIP 2.0: attributes move from Template-Attribute to Attributes.
    pub const V2_0: Self = Self::new(2, 0);
    /// KMIP 2.1.
    pub const V2_1: Self = Self::new(2, 1);
    /// Every version this crate speaks, newest first (the order Discover Versions offers).
    pub const SUPPORTED: [Self; 7] = [
        Self::V2_1,
        Self::V2_0,
        Self::V1_4,
        Self::V1_3,
        Self::V1_2,
        Self::V1_1,
        Self::V1_0,
    ];

    /// The version `major.minor`.
    pub const fn new(major: i32, minor: i32) -> Self {
        Self { major, minor }
    }

    /// True from 2.0 on, where attributes use the 2.x encoding.
    pub fn uses_v2_attributes(self) -> bool {
        self.major >= 2
    }

    pub(crate) fn to_item(self) -> Item {
        Item::structure(
            Tag::PROTOCOL_VERSION,
            vec![
                Item::integer(Tag::PROTOCOL_VERSION_MAJOR, self.major),
                Item::integer(Tag::PROTOCOL_VERSION_MINOR, self.minor),
            ],
        )
    }

    pub(crate) fn from_item(item: &Item) -> Result<Self, MessageError> {
        let mut f = Fields::of(item)?;
        Ok(Self::new(
            f.int(Tag::PROTOCOL_VERSION_MAJOR)?,
            f.int(Tag::PROTOCOL_VERSION_MINOR)?,
        ))
    }
}

impl fmt::Display for ProtocolVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

impl std::str::FromStr for ProtocolVersion {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (a, b) = s
            .split_once('.')
            .ok_or_else(|| format!("{s:?} is not a KMIP version such as 1.4"))?;
        let major = a.parse().map_err(|_| format!("{s:?}: bad major number"))?;
        let minor = b.parse().map_err(|_| format!("{s:?}: bad minor number"))?;
        Ok(Self::new(major, minor))
    }
}

/// A KMIP Credential. The password is zeroized when dropped and never printed.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// Credential Type Username and Password.
    UsernamePassword {
        /// The account.
        username: String,
        /// The password, if any.
        password: Option<Zeroizing<String>>,
    },
    /// Any other credential type, kept as sent.
    Other {
        /// Its type.
        credential_type: CredentialType,
        /// The Credential Value item.
        value: Item,
    },
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UsernamePassword { username, password } => f
                .debug_struct("UsernamePassword")
                .field("username", username)
                .field("password", &password.as_ref().map(|_| "<redacted>"))
                .finish(),
            Self::Other {
                credential_type, ..
            } => f
                .debug_struct("Other")
                .field("credential_type", credential_type)
                .finish_non_exhaustive(),
        }
    }
}

impl Credential {
    pub(crate) fn to_item(&self) -> Item {
        let (kind, value) = match self {
            Self::UsernamePassword { username, password } => {
                let mut v = vec![Item::text(Tag::USERNAME, username.as_str())];
                v.push_opt(password.as_ref(), |p| Item::text(Tag::PASSWORD, p.as_str()));
                (
                    CredentialType::USERNAME_AND_PASSWORD,
                    Item::structure(Tag::CREDENTIAL_VALUE, v),
                )
            }
            Self::Other {
                credential_type,
                value,
            } => (*credential_type, value.clone()),
        };
        Item::structure(
            Tag::CREDENTIAL,
            vec![Item::enumeration(Tag::CREDENTIAL_TYPE, kind.0), value],
        )
    }

    pub(crate) fn from_item(item: &Item) -> Result<Self, MessageError> {
        let mut f = Fields::of(item)?;
        let kind = CredentialType(f.enumeration(Tag::CREDENTIAL_TYPE)?);
        let value = f.required(Tag::CREDENTIAL_VALUE)?;
        if kind == CredentialType::USERNAME_AND_PASSWORD {
            let mut v = Fields::of(value)?;
            Ok(Self::UsernamePassword {
                username: v.text(Tag::USERNAME)?,
                password: v.opt_text(Tag::PASSWORD)?.map(Zeroizing::new),
            })
        } else {
            Ok(Self::Other {
                credential_type: kind,
                value: value.clone(),
            })
        }
    }
}

/// Request Header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHeader {
    /// The version the request is encoded in.
    pub protocol_version: ProtocolVersion,
    /// Maximum Response Size the client accepts.
    pub maximum_response_size: Option<i32>,
    /// Client Correlation Value (1.4+).
    pub client_correlation_value: Option<String>,
    /// Server Correlation Value (1.4+).
    pub server_correlation_value: Option<String>,
    /// Asynchronous Indicator.
    pub asynchronous_indicator: Option<bool>,
    /// Authentication: one Credential in 1.0–1.1, one or more from 1.2.
    pub authentication: Vec<Credential>,
    /// Batch Error Continuation Option.
    pub batch_error_continuation_option: Option<BatchErrorContinuationOption>,
    /// Batch Order Option.
    pub batch_order_option: Option<bool>,
    /// Time Stamp (seconds since the epoch).
    pub time_stamp: Option<i64>,
    /// Batch Count as sent; on encode, the number of batch items is written instead.
    pub batch_count: i32,
    /// Fields this model does not name (attestation, vendor extensions), kept in order.
    pub extra: Vec<Item>,
}

impl RequestHeader {
    /// A minimal header for `version`.
    pub fn new(version: ProtocolVersion) -> Self {
        Self {
            protocol_version: version,
            maximum_response_size: None,
            client_correlation_value: None,
            server_correlation_value: None,
            asynchronous_indicator: None,
            authentication: Vec::new(),
            batch_error_continuation_option: None,
            batch_order_option: None,
            time_stamp: None,
            batch_count: 0,
            extra: Vec::new(),
        }
    }
}

impl frame::Header for RequestHeader {
    const MESSAGE: Tag = Tag::REQUEST_MESSAGE;
    const TAG: Tag = Tag::REQUEST_HEADER;

    fn version(&self) -> ProtocolVersion {
        self.protocol_version
    }

    fn batch_count(&self) -> i32 {
        self.batch_count
    }

    fn to_item(&self, batch_count: i32) -> Item {
        let mut v = vec![self.protocol_version.to_item()];
        v.push_opt(self.maximum_response_size, |x| {
            Item::integer(Tag::MAXIMUM_RESPONSE_SIZE, x)
        });
        v.push_opt(self.client_correlation_value.clone(), |x| {
            Item::text(Tag::CLIENT_CORRELATION_VALUE, x)
        });
        v.push_opt(self.server_correlation_value.clone(), |x| {
            Item::text(Tag::SERVER_CORRELATION_VALUE, x)
        });
        v.push_opt(self.asynchronous_indicator, |x| {
            Item::boolean(Tag::ASYNCHRONOUS_INDICATOR, x)
        });
        v.extend(self.extra.iter().cloned());
        if !self.authentication.is_empty() {
            v.push(Item::structure(
                Tag::AUTHENTICATION,
                self.authentication
                    .iter()
                    .map(Credential::to_item)
                    .collect(),
            ));
        }
        v.push_opt(self.batch_error_continuation_option, |x| {
            Item::enumeration(Tag::BATCH_ERROR_CONTINUATION_OPTION, x.0)
        });
        v.push_opt(self.batch_order_option, |x| {
            Item::boolean(Tag::BATCH_ORDER_OPTION, x)
        });
        v.push_opt(self.time_stamp, |x| Item::date_time(Tag::TIME_STAMP, x));
        v.push(Item::integer(Tag::BATCH_COUNT, batch_count));
        Item::structure(Tag::REQUEST_HEADER, v)
    }

    fn from_item(item: &Item) -> Result<Self, MessageError> {
        let mut f = Fields::of(item)?;
        let protocol_version = ProtocolVersion::from_item(f.required(Tag::PROTOCOL_VERSION)?)?;
        let authentication = match f.take(Tag::AUTHENTICATION) {
            Some(a) => Fields::of(a)?
                .take_all(Tag::CREDENTIAL)
                .into_iter()
                .map(Credential::from_item)
                .collect::<Result<_, _>>()?,
            None => Vec::new(),
        };
        Ok(Self {
            protocol_version,
            maximum_response_size: f.opt_int(Tag::MAXIMUM_RESPONSE_SIZE)?,
            client_correlation_value: f.opt_text(Tag::CLIENT_CORRELATION_VALUE)?,
            server_correlation_value: f.opt_text(Tag::SERVER_CORRELATION_VALUE)?,
            asynchronous_indicator: f.opt_bool(Tag::ASYNCHRONOUS_INDICATOR)?,
            authentication,
            batch_error_continuation_option: f
                .opt_enum(Tag::BATCH_ERROR_CONTINUATION_OPTION)?
                .map(BatchErrorContinuationOption),
            batch_order_option: f.opt_bool(Tag::BATCH_ORDER_OPTION)?,
            time_stamp: f.opt_date_time(Tag::TIME_STAMP)?,
            batch_count: f.int(Tag::BATCH_COUNT)?,
            extra: f.extra()?,
        })
    }
}

/// Response Header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHeader {
    /// The version the response is encoded in.
    pub protocol_version: ProtocolVersion,
    /// Time Stamp (required by the specification; some servers omit it).
    pub time_stamp: Option<i64>,
    /// Client Correlation Value (1.4+).
    pub client_correlation_value: Option<String>,
    /// Server Correlation Value (1.4+).
    pub server_correlation_value: Option<String>,
    /// Batch Count as sent; on encode, the number of batch items is written instead.
    pub batch_count: i32,
    /// Fields this model does not name (Nonce, attestation, vendor extensions).
    pub extra: Vec<Item>,
}

impl ResponseHeader {
    /// A header for `version` stamped with `time_stamp`.
    pub fn new(version: ProtocolVersion, time_stamp: i64) -> Self {
        Self {
            protocol_version: version,
            time_stamp: Some(time_stamp),
            client_correlation_value: None,
            server_correlation_value: None,
            batch_count: 0,
            extra: Vec::new(),
        }
    }
}

impl frame::Header for ResponseHeader {
    const MESSAGE: Tag = Tag::RESPONSE_MESSAGE;
    const TAG: Tag = Tag::RESPONSE_HEADER;

    fn version(&self) -> ProtocolVersion {
        self.protocol_version
    }

    fn batch_count(&self) -> i32 {
        self.batch_count
    }

    fn to_item(&self, batch_count: i32) -> Item {
        let mut v = vec![self.protocol_version.to_item()];
        v.push_opt(self.time_stamp, |x| Item::date_time(Tag::TIME_STAMP, x));
        v.extend(self.extra.iter().cloned());
        v.push_opt(self.client_correlation_value.clone(), |x| {
            Item::text(Tag::CLIENT_CORRELATION_VALUE, x)
        });
        v.push_opt(self.server_correlation_value.clone(), |x| {
            Item::text(Tag::SERVER_CORRELATION_VALUE, x)
        });
        v.push(Item::integer(Tag::BATCH_COUNT, batch_count));
        Item::structure(Tag::RESPONSE_HEADER, v)
    }

    fn from_item(item: &Item) -> Result<Self, MessageError> {
        let mut f = Fields::of(item)?;
        Ok(Self {
            protocol_version: ProtocolVersion::from_item(f.required(Tag::PROTOCOL_VERSION)?)?,
            time_stamp: f.opt_date_time(Tag::TIME_STAMP)?,
            client_correlation_value: f.opt_text(Tag::CLIENT_CORRELATION_VALUE)?,
            server_correlation_value: f.opt_text(Tag::SERVER_CORRELATION_VALUE)?,
            batch_count: f.int(Tag::BATCH_COUNT)?,
            extra: f.extra()?,
        })
    }
}
