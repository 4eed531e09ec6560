//! The conversion's progress as the header records it: a `conversion` object in atrest's
//! token, and atrest's mandatory requirement in `config.requirements`, which makes stock
//! cryptsetup refuse to open (or change) a half-converted volume.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::luks2::metadata::{string_u64, Metadata, Requirements};
use crate::volume::atrest_token;

/// The requirement written while a conversion runs. Unknown to cryptsetup, so it refuses
/// activation and metadata changes ("Unmet LUKS2 requirements detected").
pub const REQUIREMENT: &str = "atrest-conversion-v1";

/// Which conversion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Plaintext → volume, data moved up by the header area.
    Encrypt,
    /// Volume → plaintext, data moved down.
    Decrypt,
    /// Every sector re-encrypted under a new volume key, in place.
    Rekey,
}

impl Kind {
    /// The command that runs (and resumes) it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Encrypt => "encrypt",
            Self::Decrypt => "decrypt",
            Self::Rekey => "rekey",
        }
    }
}

/// Where the first bytes of the plaintext wait while the header occupies their place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Park {
    /// Byte offset of the parked copy.
    #[serde(with = "string_u64")]
    pub offset: u64,
    /// Its length.
    #[serde(with = "string_u64")]
    pub len: u64,
    /// SHA-256 of the parked plaintext, hex; empty until it is written (decrypt).
    #[serde(default)]
    pub sha256: String,
}

/// The committed progress of a conversion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// What runs.
    pub kind: Kind,
    /// Plaintext bytes (the volume's logical size).
    #[serde(with = "string_u64")]
    pub size: u64,
    /// Bytes converted and durable. Encrypt converts from the end down (the converted part
    /// is `[size - done, size)`); decrypt and rekey from the start up (`[0, done)`).
    #[serde(with = "string_u64")]
    pub done: u64,
    /// Encrypt and decrypt: the parked first bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub park: Option<Park>,
    /// Rekey: the new KMIP key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_key_uid: Option<String>,
    /// Rekey: the digest of the new volume key (segment 0 stays with the old one until the end).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_digest: Option<String>,
    /// The data is converted where it is, each hot zone journaled (a rekey; an encrypt or
    /// decrypt with a detached header), instead of moved by the header area.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub in_place: bool,
}

impl State {
    /// A conversion of `size` bytes at its start, with nothing parked and no new key.
    pub fn start(kind: Kind, size: u64, in_place: bool) -> Self {
        Self {
            kind,
            size,
            done: 0,
            park: None,
            new_key_uid: None,
            new_digest: None,
            in_place,
        }
    }
}

/// The state recorded in `m`, if a conversion runs.
pub fn read(m: &Metadata) -> Result<Option<State>, String> {
    let Some(v) = atrest_token(m).and_then(|t| t.extra.get("conversion")) else {
        return Ok(None);
    };
    serde_json::from_value(v.clone())
        .map(Some)
        .map_err(|e| format!("the token's conversion record is unreadable: {e}"))
}

/// The kind of conversion in progress, for refusing ordinary use of the volume.
pub fn in_progress(m: &Metadata) -> Option<String> {
    let fenced = m
        .config
        .requirements
        .as_ref()
        .is_some_and(|r| r.mandatory.iter().any(|x| x == REQUIREMENT));
    match read(m) {
        Ok(Some(s)) => Some(s.kind.as_str().to_owned()),
        Ok(None) if fenced => Some("conversion".to_owned()),
        Err(_) => Some("conversion".to_owned()),
        Ok(None) => None,
    }
}

/// Records `state` (and the requirement) in `m`; `None` removes both.
pub fn set(m: &mut Metadata, state: Option<&State>) {
    if let Some(t) = m
        .tokens
        .values_mut()
        .find(|t| t.kind == crate::luks2::TOKEN_TYPE)
    {
        match state {
            Some(s) => {
                let v = serde_json::to_value(s).unwrap_or(Value::Null);
                t.extra.insert("conversion".into(), v);
            }
            None => {
                t.extra.remove("conversion");
            }
        }
    }
    let req = m
        .config
        .requirements
        .get_or_insert_with(Requirements::default);
    req.mandatory.retain(|r| r != REQUIREMENT);
    if state.is_some() {
        req.mandatory.push(REQUIREMENT.to_owned());
    }
    if req.mandatory.is_empty() && req.extra.is_empty() {
        m.config.requirements = None;
    }
}
