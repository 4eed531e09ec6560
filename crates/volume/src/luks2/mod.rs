//! The LUKS2 format, as far as atrest writes and reads it (see `docs/format.md`).

pub mod af;
pub mod binary;
pub mod conform;
pub mod conversion;
pub mod header;
pub mod keys;
pub mod metadata;
pub mod token;
pub mod validate;

/// The type of atrest's token, which records the KMIP key's Unique Identifier.
pub const TOKEN_TYPE: &str = "atrest-kmip";

/// What can be wrong with a header.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Luks2Error {
    /// No LUKS2 magic.
    #[error("no LUKS2 header at byte {offset}")]
    NotLuks {
        /// Where it was looked for.
        offset: u64,
    },
    /// A field with a value the format or the device does not allow.
    #[error("LUKS2 header: {field} = {value}: {why}")]
    Corrupt {
        /// The field, as a JSON path (`segments.0.size`) or a binary header field.
        field: String,
        /// Its value, escaped for a terminal and cut short.
        value: String,
        /// What is wrong with it.
        why: String,
    },
    /// The device is shorter than the header says its data is.
    #[error("the device holds {have} bytes, but the header's data segment ends at byte {need}: {} bytes are missing (a truncated image, or the wrong device); nothing was written", need - have)]
    DeviceTooShort {
        /// Where the data ends.
        need: u64,
        /// The device's length.
        have: u64,
    },
    /// The checksum does not match.
    #[error(
        "LUKS2 header at byte {offset}: checksum mismatch (the header or its JSON area is damaged)"
    )]
    Checksum {
        /// The copy's offset.
        offset: u64,
    },
    /// The JSON does not parse as LUKS2 metadata.
    #[error("LUKS2 header at byte {offset}: JSON metadata: {message}")]
    Json {
        /// The copy's offset.
        offset: u64,
        /// The parser's words.
        message: String,
    },
    /// Both copies are unusable.
    #[error("both LUKS2 header copies are damaged (primary: {primary}; secondary: {secondary})")]
    BothCopiesDamaged {
        /// Why the primary is.
        primary: String,
        /// Why the secondary is.
        secondary: String,
    },
    /// A feature atrest does not implement (argon2 keyslots, other ciphers).
    #[error("unsupported {what}: {value} (atrest refuses what it cannot handle correctly; nothing was written)")]
    Unsupported {
        /// What.
        what: &'static str,
        /// Which.
        value: String,
    },
    /// No random bytes for a salt or key.
    #[error(transparent)]
    Random(#[from] crate::random::RandomError),
    /// Reading or writing failed.
    #[error("I/O at byte {offset}: {source}")]
    Io {
        /// Where.
        offset: u64,
        /// The OS error.
        source: std::io::Error,
    },
}

impl Luks2Error {
    /// A [`Luks2Error::Corrupt`]; `value` is escaped and shortened for printing.
    pub fn corrupt(field: &str, value: impl ToString, why: impl ToString) -> Self {
        Self::Corrupt {
            field: crate::text::shown(field).into_owned(),
            value: crate::text::shown(&value.to_string()).into_owned(),
            why: why.to_string(),
        }
    }
}
