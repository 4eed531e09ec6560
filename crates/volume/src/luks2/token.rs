//! atrest's token in the LUKS2 JSON (`"type": "atrest-kmip"`): the KMIP key's Unique
//! Identifier, the key mode, a hint of the server it came from, and while a conversion
//! runs, its committed progress (typed in [`super::conversion`]). These are the on-disk
//! types; [`super::validate`] checks their values against the device before anything uses
//! them.
//!
//! ```json
//! {"type":"atrest-kmip","keyslots":[],"key_uid":"…","key_mode":"wrapped",
//!  "kmip_server_hint":"kms1:5696","conversion":{"kind":"encrypt","size":"…","done":"…",…}}
//! ```

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub use super::conversion::{Conversion, Park, Parked, State};
use super::metadata::{Metadata, Requirements, Token};
use super::{Luks2Error, TOKEN_TYPE};

/// The requirement written while a conversion runs. Unknown to cryptsetup, so it refuses
/// activation and metadata changes ("Unmet LUKS2 requirements detected").
pub const REQUIREMENT: &str = "atrest-conversion-v1";

/// Longest key identifier atrest accepts (KMIP Unique Identifiers are short texts; a
/// longer one in a header is an attack on memory or on a terminal).
pub const MAX_UID_LEN: usize = 1024;

/// How the KMIP key relates to the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyMode {
    /// The KMIP secret opens a keyslot holding a random volume key (rotation = rewrap).
    Wrapped,
    /// The KMIP key is the volume key; the header has no keyslot.
    Direct,
}

impl KeyMode {
    /// As written in the token.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Wrapped => "wrapped",
            Self::Direct => "direct",
        }
    }
}

impl std::fmt::Display for KeyMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

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

    /// The noun, for sentences ("an encryption of this volume was interrupted").
    pub fn noun(self) -> &'static str {
        match self {
            Self::Encrypt => "encryption",
            Self::Decrypt => "decryption",
            Self::Rekey => "re-encryption under a new key",
        }
    }

    /// The command line that finishes it.
    pub fn command(self) -> &'static str {
        match self {
            Self::Encrypt => "atrest encrypt",
            Self::Decrypt => "atrest decrypt",
            Self::Rekey => "atrest rekey --deep",
        }
    }
}

/// What atrest's token says, typed (not yet checked against the device: see
/// [`super::validate`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AtrestToken {
    /// The KMIP key's Unique Identifier.
    pub key_uid: String,
    /// Wrapped or direct.
    pub key_mode: KeyMode,
    /// The server the key was created on: a hint for operators, never dialled.
    pub server_hint: Option<String>,
    /// A conversion in progress.
    pub conversion: Option<State>,
}

#[derive(Deserialize)]
struct Raw {
    key_uid: String,
    key_mode: String,
    #[serde(default)]
    kmip_server_hint: Option<String>,
    #[serde(default)]
    conversion: Option<Value>,
}

fn corrupt(field: &str, value: impl ToString, why: impl ToString) -> Luks2Error {
    Luks2Error::corrupt(field, value, why)
}

/// Checks a key identifier read from a header: not empty, bounded, printable.
pub fn check_uid(field: &str, uid: &str) -> Result<(), Luks2Error> {
    if uid.is_empty() {
        return Err(corrupt(field, "\"\"", "the KMIP key identifier is empty"));
    }
    if uid.len() > MAX_UID_LEN {
        return Err(corrupt(
            field,
            uid,
            format!("longer than {MAX_UID_LEN} bytes; no KMIP server issues such identifiers"),
        ));
    }
    if crate::text::has_control(uid) {
        return Err(corrupt(
            field,
            uid,
            "holds control characters; no KMIP server issues such identifiers",
        ));
    }
    Ok(())
}

/// Atrest's token in `m`, typed; `None` for a LUKS2 volume without one.
pub fn read(m: &Metadata) -> Result<Option<AtrestToken>, Luks2Error> {
    let mut ours = m.tokens.iter().filter(|(_, t)| t.kind == TOKEN_TYPE);
    let Some((id, t)) = ours.next() else {
        return Ok(None);
    };
    if let Some((other, _)) = ours.next() {
        return Err(corrupt(
            "tokens",
            format!("{id} and {other}"),
            "two atrest tokens: which one names the key is ambiguous",
        ));
    }
    let field = |f: &str| format!("tokens.{id}.{f}");
    let raw: Raw = serde_json::from_value(Value::Object(t.extra.clone()))
        .map_err(|e| corrupt(&format!("tokens.{id}"), "(atrest token)", e))?;
    check_uid(&field("key_uid"), &raw.key_uid)?;
    let key_mode = match raw.key_mode.as_str() {
        "wrapped" => KeyMode::Wrapped,
        "direct" => KeyMode::Direct,
        other => {
            return Err(Luks2Error::Unsupported {
                what: "key mode",
                value: crate::text::shown(other).into_owned(),
            })
        }
    };
    if let Some(h) = &raw.kmip_server_hint {
        if h.len() > MAX_UID_LEN {
            return Err(corrupt(&field("kmip_server_hint"), h, "implausibly long"));
        }
    }
    let conversion = raw
        .conversion
        .map(|v| State::parse(&field("conversion"), v))
        .transpose()?;
    Ok(Some(AtrestToken {
        key_uid: raw.key_uid,
        key_mode,
        server_hint: raw.kmip_server_hint,
        conversion,
    }))
}

/// A new atrest token.
pub fn new(key_uid: &str, mode: KeyMode, server_hint: Option<&str>) -> Token {
    let mut extra = serde_json::Map::new();
    extra.insert("key_uid".into(), json!(key_uid));
    extra.insert("key_mode".into(), json!(mode.as_str()));
    if let Some(h) = server_hint {
        extra.insert("kmip_server_hint".into(), json!(h));
    }
    Token {
        kind: TOKEN_TYPE.into(),
        keyslots: Vec::new(),
        extra,
    }
}

fn ours_mut(m: &mut Metadata) -> Option<&mut Token> {
    m.tokens.values_mut().find(|t| t.kind == TOKEN_TYPE)
}

/// Binds atrest's token to `keyslots`: the keyslots its KMIP secret opens, which is what
/// cryptsetup's token plugins (and `cryptsetup open --token-only`) try it on.
pub fn set_keyslots(m: &mut Metadata, keyslots: &[String]) {
    if let Some(t) = ours_mut(m) {
        t.keyslots = keyslots.to_vec();
    }
}

/// Records `uid` as the volume's key.
pub fn set_uid(m: &mut Metadata, uid: &str) {
    if let Some(t) = ours_mut(m) {
        t.extra.insert("key_uid".into(), json!(uid));
    }
}

/// Records `state` (and the requirement that fences the volume off from cryptsetup) in
/// `m`; `None` removes both.
pub fn set_conversion(m: &mut Metadata, state: Option<&State>) {
    if let Some(t) = ours_mut(m) {
        match state.map(serde_json::to_value) {
            Some(Ok(v)) => {
                t.extra.insert("conversion".into(), v);
            }
            // Serialising plain data cannot fail; were it to, the requirement below still
            // fences the volume.
            Some(Err(_)) => {}
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
