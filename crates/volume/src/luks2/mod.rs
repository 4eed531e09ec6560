//! The LUKS2 format, as far as atrest writes and reads it (see `docs/format.md`).

pub mod af;
pub mod binary;
pub mod header;
pub mod keys;
pub mod metadata;

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
    /// A field with an impossible value.
    #[error("LUKS2 header at byte {offset}: invalid {field} {value}")]
    Corrupt {
        /// The copy's offset.
        offset: u64,
        /// The field.
        field: &'static str,
        /// Its value.
        value: String,
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
    #[error("unsupported {what}: {value}")]
    Unsupported {
        /// What.
        what: &'static str,
        /// Which.
        value: String,
    },
    /// Reading or writing failed.
    #[error("I/O at byte {offset}: {source}")]
    Io {
        /// Where.
        offset: u64,
        /// The OS error.
        source: std::io::Error,
    },
}
