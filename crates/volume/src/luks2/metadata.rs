//! The LUKS2 JSON metadata (on-disk format §3), as serde types that keep every key they do
//! not model, so a header written by cryptsetup (or a later atrest) survives our rewrite.
//! 64-bit numbers are JSON strings in LUKS2; binary values are base64.
//!
//! A header cryptsetup reads may hold objects these types do not model (a reencryption
//! keyslot, a digest of another kind, a keyslot whose fields cryptsetup never looks at
//! until it opens it): [`super::conform`] decides whether the header is LUKS2 at all, and
//! an object that does not fit its type here is kept as it is, in [`Opaque`], with why.
//! Reading such a header works (`atrest status` describes it); `validate` refuses to open
//! it, naming the object.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

/// A `"string-uint64"`.
pub mod string_u64 {
    use super::*;

    /// Writes as a decimal string.
    pub fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }

    /// Reads a decimal string.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The whole JSON object.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(from = "RawMetadata", into = "RawMetadata")]
pub struct Metadata {
    /// Keyslots by id.
    pub keyslots: BTreeMap<String, Keyslot>,
    /// Tokens by id.
    pub tokens: BTreeMap<String, Token>,
    /// Segments by id.
    pub segments: BTreeMap<String, Segment>,
    /// Digests by id.
    pub digests: BTreeMap<String, Digest>,
    /// Config.
    pub config: Config,
    /// Keys this model does not know.
    pub extra: Map<String, Value>,
    /// Objects that do not fit their type here, kept as they are.
    pub opaque: Opaque,
}

/// Objects of a header that the typed model does not hold: by kind (`keyslots`, ...) and
/// id, the JSON and why it did not fit.
pub type Opaque = BTreeMap<(&'static str, String), (Value, String)>;

/// The JSON as it is, before each object is typed.
#[derive(Serialize, Deserialize)]
struct RawMetadata {
    keyslots: Map<String, Value>,
    tokens: Map<String, Value>,
    segments: Map<String, Value>,
    digests: Map<String, Value>,
    config: Config,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

/// Types each object of `raw`, or keeps it in `opaque`.
fn typed<T: serde::de::DeserializeOwned>(
    kind: &'static str,
    raw: Map<String, Value>,
    opaque: &mut Opaque,
) -> BTreeMap<String, T> {
    let mut out = BTreeMap::new();
    for (id, v) in raw {
        match T::deserialize(&v) {
            Ok(t) => {
                out.insert(id, t);
            }
            Err(e) => {
                opaque.insert((kind, id), (v, e.to_string()));
            }
        }
    }
    out
}

impl From<RawMetadata> for Metadata {
    fn from(r: RawMetadata) -> Self {
        let mut opaque = Opaque::new();
        // Keyslots and digests of another kind are not ours to type, whatever fields
        // they happen to share.
        let (keyslots, mut others): (Map<String, Value>, Map<String, Value>) = r
            .keyslots
            .into_iter()
            .partition(|(_, v)| v["type"] == "luks2");
        for (id, v) in std::mem::take(&mut others) {
            let why = format!("a keyslot of type {}", v["type"]);
            opaque.insert(("keyslots", id), (v, why));
        }
        let (digests, others): (Map<String, Value>, Map<String, Value>) = r
            .digests
            .into_iter()
            .partition(|(_, v)| v["type"] == "pbkdf2");
        for (id, v) in others {
            let why = format!("a digest of type {}", v["type"]);
            opaque.insert(("digests", id), (v, why));
        }
        Self {
            keyslots: typed("keyslots", keyslots, &mut opaque),
            tokens: typed("tokens", r.tokens, &mut opaque),
            segments: typed("segments", r.segments, &mut opaque),
            digests: typed("digests", digests, &mut opaque),
            config: r.config,
            extra: r.extra,
            opaque,
        }
    }
}

impl From<Metadata> for RawMetadata {
    fn from(m: Metadata) -> Self {
        fn raw<T: Serialize>(m: BTreeMap<String, T>) -> Map<String, Value> {
            m.into_iter()
                .map(|(id, t)| {
                    let v = serde_json::to_value(t).unwrap_or(Value::Null);
                    (id, v)
                })
                .collect()
        }
        let mut r = RawMetadata {
            keyslots: raw(m.keyslots),
            tokens: raw(m.tokens),
            segments: raw(m.segments),
            digests: raw(m.digests),
            config: m.config,
            extra: m.extra,
        };
        for ((kind, id), (v, _)) in m.opaque {
            let map = match kind {
                "keyslots" => &mut r.keyslots,
                "tokens" => &mut r.tokens,
                "segments" => &mut r.segments,
                _ => &mut r.digests,
            };
            map.insert(id, v);
        }
        r
    }
}

/// `config`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Config {
    /// Size of the JSON area.
    #[serde(with = "string_u64")]
    pub json_size: u64,
    /// Size of the keyslots area.
    #[serde(with = "string_u64")]
    pub keyslots_size: u64,
    /// Activation flags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flags: Vec<String>,
    /// Requirements; an unknown mandatory one makes cryptsetup refuse the volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requirements: Option<Requirements>,
    /// Keys this model does not know.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `config.requirements`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Requirements {
    /// Features a reader must implement to use the volume.
    #[serde(default)]
    pub mandatory: Vec<String>,
    /// Keys this model does not know.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A segment: for atrest, one `crypt` segment.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Segment {
    /// `crypt` (or `linear` during conversion).
    #[serde(rename = "type")]
    pub kind: String,
    /// Byte offset of the data.
    #[serde(with = "string_u64")]
    pub offset: u64,
    /// `"dynamic"` (to the end of the device) or a byte count.
    pub size: String,
    /// IV offset in 512-byte sectors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iv_tweak: Option<String>,
    /// dm-crypt cipher spec (`aes-xts-plain64`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<String>,
    /// 512 or 4096.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sector_size: Option<u32>,
    /// Keys this model does not know.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A pbkdf2 digest of the volume key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Digest {
    /// `pbkdf2`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Keyslots holding the key.
    pub keyslots: Vec<String>,
    /// Segments the key encrypts.
    pub segments: Vec<String>,
    /// HMAC hash.
    pub hash: String,
    /// Iterations.
    pub iterations: u32,
    /// Salt, base64.
    pub salt: String,
    /// Digest, base64.
    pub digest: String,
    /// Keys this model does not know.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A keyslot.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Keyslot {
    /// `luks2`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Size of the key it holds.
    pub key_size: u32,
    /// Anti-forensic splitter.
    pub af: Af,
    /// Where the encrypted split key lives.
    pub area: Area,
    /// How the passphrase becomes the area key.
    pub kdf: Kdf,
    /// Keys this model does not know.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `af`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Af {
    /// `luks1`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Stripes (4000).
    pub stripes: u32,
    /// Diffusion hash.
    pub hash: String,
    /// Keys this model does not know (kept through a rewrite).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `area`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Area {
    /// `raw`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Byte offset in the device.
    #[serde(with = "string_u64")]
    pub offset: u64,
    /// Bytes.
    #[serde(with = "string_u64")]
    pub size: u64,
    /// Cipher of the area.
    pub encryption: String,
    /// Its key size.
    pub key_size: u32,
    /// Keys this model does not know (kept through a rewrite).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `kdf`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Kdf {
    /// `pbkdf2` (atrest writes only this; argon2 is read as unsupported).
    #[serde(rename = "type")]
    pub kind: String,
    /// HMAC hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    /// Iterations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iterations: Option<u32>,
    /// Salt, base64.
    pub salt: String,
    /// Keys this model does not know (argon2 time, memory, cpus).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A token; atrest's records the KMIP key's identifier.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Token {
    /// Type; atrest's is [`super::TOKEN_TYPE`].
    #[serde(rename = "type")]
    pub kind: String,
    /// Keyslots it unlocks.
    pub keyslots: Vec<String>,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}
