//! The `conversion` object of atrest's token, typed: one variant per kind of conversion,
//! each holding exactly the facts its steps read and write. On the disk it stays the flat
//! JSON object the first release wrote (`docs/format.md`, "Volumes made by conversion"),
//! every field optional to serde; [`State::parse`] is the one place that object becomes a
//! [`Conversion`], and refuses there every combination no conversion writes, so the steps
//! never meet one. What needs the device to judge (sizes, offsets, the journal's room, the
//! digests) is [`super::validate`]'s.
//!
//! Serialising a [`State`] gives back the very JSON it was parsed from (less unknown keys):
//! the conversion state's tag ([`crate::convert::auth`]) is computed over that JSON, so the
//! field names, their order and which are left out when empty are part of the format.

use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

use super::metadata::string_u64;
use super::token::{check_uid, Kind};
use super::Luks2Error;

/// Where the first bytes of the plaintext wait while the header occupies their place
/// (`park.offset`, `park.len`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Park {
    /// Byte offset of the parked copy on the data device.
    pub offset: u64,
    /// Its length.
    pub len: u64,
}

/// A decryption's park once its first step has filled it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parked {
    /// Bytes converted and durable: at least the park's length, since the step that parks
    /// also converts those bytes.
    pub done: u64,
    /// SHA-256 of the parked plaintext, hex.
    pub sha256: String,
}

/// What is running and how far it got. `size` is the plaintext's bytes (the volume's logical
/// size), `done` the bytes converted and durable: encrypt converts from the end down (the
/// converted part is `[size - done, size)`), everything else from the start up
/// (`[0, done)`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conversion {
    /// `atrest encrypt`: the data moves up by the header area. The first bytes were
    /// parked (and their checksum recorded) before the header existed.
    Encrypt {
        /// Plaintext bytes.
        size: u64,
        /// Bytes encrypted, counted from the end.
        done: u64,
        /// The parked first bytes.
        park: Park,
        /// Their SHA-256, hex.
        sha256: String,
    },
    /// `atrest decrypt`: the data moves down by the header area. The park's place is
    /// fixed when the decryption starts; its bytes, their checksum and the first `done`
    /// are committed together by the first step.
    Decrypt {
        /// Plaintext bytes.
        size: u64,
        /// Where the first bytes go.
        park: Park,
        /// `None` until the first step: nothing is converted yet.
        parked: Option<Parked>,
    },
    /// `atrest encrypt --header FILE`: the data stays where it is, each hot zone
    /// journaled in the header file.
    EncryptInPlace {
        /// Plaintext bytes.
        size: u64,
        /// Bytes encrypted, from the start.
        done: u64,
    },
    /// `atrest decrypt --header FILE`: as [`Self::EncryptInPlace`], the other way.
    DecryptInPlace {
        /// Plaintext bytes.
        size: u64,
        /// Bytes decrypted, from the start.
        done: u64,
    },
    /// `atrest rekey --deep`: every sector re-encrypted in place under a new volume key.
    Rekey {
        /// Plaintext bytes.
        size: u64,
        /// Bytes under the new key, from the start.
        done: u64,
        /// The new KMIP key.
        new_key_uid: String,
        /// The digest of the new volume key (segment 0 stays with the old one until the
        /// end).
        new_digest: String,
    },
}

impl Conversion {
    /// Which command runs it.
    pub fn kind(&self) -> Kind {
        match self {
            Self::Encrypt { .. } | Self::EncryptInPlace { .. } => Kind::Encrypt,
            Self::Decrypt { .. } | Self::DecryptInPlace { .. } => Kind::Decrypt,
            Self::Rekey { .. } => Kind::Rekey,
        }
    }

    /// Plaintext bytes.
    pub fn size(&self) -> u64 {
        match self {
            Self::Encrypt { size, .. }
            | Self::Decrypt { size, .. }
            | Self::EncryptInPlace { size, .. }
            | Self::DecryptInPlace { size, .. }
            | Self::Rekey { size, .. } => *size,
        }
    }

    /// Bytes converted and durable.
    pub fn done(&self) -> u64 {
        match self {
            Self::Decrypt { parked, .. } => parked.as_ref().map_or(0, |p| p.done),
            Self::Encrypt { done, .. }
            | Self::EncryptInPlace { done, .. }
            | Self::DecryptInPlace { done, .. }
            | Self::Rekey { done, .. } => *done,
        }
    }

    /// The park, for the conversions that move the data.
    pub fn park(&self) -> Option<Park> {
        match self {
            Self::Encrypt { park, .. } | Self::Decrypt { park, .. } => Some(*park),
            _ => None,
        }
    }

    /// True when the data is converted where it is, each hot zone journaled, instead of
    /// moved by the header area.
    pub fn in_place(&self) -> bool {
        self.park().is_none()
    }
}

/// The `conversion` object as committed: the state and its tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    /// What runs and how far it got.
    pub conversion: Conversion,
    /// HMAC-SHA256 tag (hex) over this state and the header facts it steers, under a key
    /// derived from the KMIP secret the conversion needs ([`crate::convert::auth`]). Empty
    /// only while a state is being built; a committed state without one is refused.
    pub mac: String,
}

/// The JSON as written, every combination of fields representable. Field order and the
/// `skip_serializing_if`s are the format: the tag is computed over this serialisation.
#[derive(Serialize, Deserialize)]
struct Raw {
    kind: Kind,
    #[serde(with = "string_u64")]
    size: u64,
    #[serde(with = "string_u64")]
    done: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    park: Option<RawPark>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    new_key_uid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    new_digest: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    in_place: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    mac: String,
}

#[derive(Serialize, Deserialize)]
struct RawPark {
    #[serde(with = "string_u64")]
    offset: u64,
    #[serde(with = "string_u64")]
    len: u64,
    // Written even when empty (a decryption before its first step): the first release
    // did, and the tag covers it.
    #[serde(default)]
    sha256: String,
}

fn corrupt(field: &str, value: impl ToString, why: impl ToString) -> Luks2Error {
    Luks2Error::corrupt(&format!("conversion.{field}"), value, why)
}

fn check_sha256(sha256: &str) -> Result<(), Luks2Error> {
    if sha256.len() == 64 && sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(corrupt("park.sha256", sha256, "not a SHA-256 in hex"))
    }
}

impl State {
    /// A state about to be committed: its tag is computed at the commit.
    pub fn untagged(conversion: Conversion) -> Self {
        Self {
            conversion,
            mac: String::new(),
        }
    }

    /// Parses the token's `conversion` object. `field` names it for a value serde cannot
    /// read; a combination of fields that no conversion writes is refused by the field at
    /// fault, as `conversion.<field>`.
    pub fn parse(field: &str, v: Value) -> Result<Self, Luks2Error> {
        let raw: Raw =
            serde_json::from_value(v).map_err(|e| Luks2Error::corrupt(field, "(record)", e))?;
        let (size, done) = (raw.size, raw.done);
        let encrypt = match raw.kind {
            Kind::Rekey => {
                if !raw.in_place {
                    return Err(corrupt("in_place", false, "a rekey works in place"));
                }
                if raw.park.is_some() {
                    return Err(corrupt("park", "(present)", "a rekey parks nothing"));
                }
                let new_key_uid = raw.new_key_uid.ok_or_else(|| {
                    corrupt("new_key_uid", "(missing)", "a rekey records its new key")
                })?;
                check_uid("conversion.new_key_uid", &new_key_uid)?;
                let new_digest = raw.new_digest.ok_or_else(|| {
                    corrupt("new_digest", "(missing)", "a rekey records its new digest")
                })?;
                let conversion = Conversion::Rekey {
                    size,
                    done,
                    new_key_uid,
                    new_digest,
                };
                return Ok(Self {
                    conversion,
                    mac: raw.mac,
                });
            }
            Kind::Encrypt => true,
            Kind::Decrypt => false,
        };
        if raw.new_key_uid.is_some() || raw.new_digest.is_some() {
            return Err(corrupt(
                "new_key_uid",
                "(present)",
                "only a rekey has a new key",
            ));
        }
        let conversion = match (raw.park, raw.in_place) {
            (None, true) if encrypt => Conversion::EncryptInPlace { size, done },
            (None, true) => Conversion::DecryptInPlace { size, done },
            (None, false) => {
                return Err(corrupt(
                    "park",
                    "(missing)",
                    "an encrypt or decrypt that moves the data needs its park",
                ))
            }
            (Some(_), true) => {
                return Err(corrupt(
                    "in_place",
                    true,
                    "a conversion in place parks nothing; one with a park moves the data",
                ))
            }
            (Some(p), false) => {
                let park = Park {
                    offset: p.offset,
                    len: p.len,
                };
                if encrypt {
                    check_sha256(&p.sha256)?;
                    Conversion::Encrypt {
                        size,
                        done,
                        park,
                        sha256: p.sha256,
                    }
                } else {
                    // Nothing is converted before the park is filled, and the step that
                    // fills it commits the checksum and the first `done` together.
                    let parked = match (done, p.sha256.is_empty()) {
                        (0, true) => None,
                        (0, false) => {
                            return Err(corrupt(
                                "park.sha256",
                                &p.sha256,
                                "a decryption records its park's checksum with its first step, not before",
                            ))
                        }
                        _ => {
                            check_sha256(&p.sha256)?;
                            Some(Parked {
                                done,
                                sha256: p.sha256,
                            })
                        }
                    };
                    Conversion::Decrypt { size, park, parked }
                }
            }
        };
        Ok(Self {
            conversion,
            mac: raw.mac,
        })
    }

    fn raw(&self) -> Raw {
        let c = &self.conversion;
        let park = |p: &Park, sha256: &str| RawPark {
            offset: p.offset,
            len: p.len,
            sha256: sha256.to_owned(),
        };
        let (park, new_key_uid, new_digest) = match c {
            Conversion::Encrypt {
                park: p, sha256, ..
            } => (Some(park(p, sha256)), None, None),
            Conversion::Decrypt {
                park: p, parked, ..
            } => (
                Some(park(p, parked.as_ref().map_or("", |x| x.sha256.as_str()))),
                None,
                None,
            ),
            Conversion::EncryptInPlace { .. } | Conversion::DecryptInPlace { .. } => {
                (None, None, None)
            }
            Conversion::Rekey {
                new_key_uid,
                new_digest,
                ..
            } => (None, Some(new_key_uid.clone()), Some(new_digest.clone())),
        };
        Raw {
            kind: c.kind(),
            size: c.size(),
            done: c.done(),
            park,
            new_key_uid,
            new_digest,
            in_place: c.in_place(),
            mac: self.mac.clone(),
        }
    }
}

impl Serialize for State {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.raw().serialize(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<State, Luks2Error> {
        State::parse("tokens.0.conversion", v)
    }

    fn field(e: Luks2Error) -> String {
        match e {
            Luks2Error::Corrupt { field, .. } => field,
            e => panic!("not a corrupt field: {e}"),
        }
    }

    #[test]
    fn every_state_a_conversion_writes_serialises_back_to_its_json() {
        let sha = "ab".repeat(32);
        for v in [
            json!({"kind":"encrypt","size":"4096","done":"512","park":{"offset":"20480","len":"4096","sha256":sha},"mac":"00"}),
            json!({"kind":"decrypt","size":"4096","done":"0","park":{"offset":"20480","len":"4096","sha256":""}}),
            json!({"kind":"decrypt","size":"4096","done":"4096","park":{"offset":"20480","len":"4096","sha256":sha}}),
            json!({"kind":"encrypt","size":"4096","done":"0","in_place":true}),
            json!({"kind":"decrypt","size":"4096","done":"512","in_place":true,"mac":"ff"}),
            json!({"kind":"rekey","size":"4096","done":"0","new_key_uid":"k","new_digest":"1","in_place":true}),
        ] {
            let s = parse(v.clone()).unwrap();
            assert_eq!(serde_json::to_value(&s).unwrap(), v);
            // Byte for byte, in the field order the tag is computed over.
            assert_eq!(
                serde_json::to_string(&s).unwrap(),
                serde_json::to_string(&serde_json::from_value::<Raw>(v).unwrap()).unwrap()
            );
        }
    }

    #[test]
    fn a_combination_no_conversion_writes_is_refused_by_its_field() {
        let sha = "ab".repeat(32);
        for (v, want) in [
            (
                json!({"kind":"rekey","size":"1","done":"0","new_key_uid":"k","new_digest":"1"}),
                "conversion.in_place",
            ),
            (
                json!({"kind":"rekey","size":"1","done":"0","in_place":true,"new_digest":"1"}),
                "conversion.new_key_uid",
            ),
            (
                json!({"kind":"rekey","size":"1","done":"0","in_place":true,"new_key_uid":"k"}),
                "conversion.new_digest",
            ),
            (
                json!({"kind":"rekey","size":"1","done":"0","in_place":true,"new_key_uid":"k","new_digest":"1","park":{"offset":"1","len":"1"}}),
                "conversion.park",
            ),
            (
                json!({"kind":"encrypt","size":"1","done":"0"}),
                "conversion.park",
            ),
            (
                json!({"kind":"decrypt","size":"1","done":"0","in_place":true,"new_key_uid":"k"}),
                "conversion.new_key_uid",
            ),
            (
                json!({"kind":"encrypt","size":"1","done":"0","in_place":true,"park":{"offset":"1","len":"1","sha256":sha}}),
                "conversion.in_place",
            ),
            (
                json!({"kind":"encrypt","size":"1","done":"0","park":{"offset":"1","len":"1"}}),
                "conversion.park.sha256",
            ),
            (
                json!({"kind":"decrypt","size":"1","done":"512","park":{"offset":"1","len":"1"}}),
                "conversion.park.sha256",
            ),
            (
                json!({"kind":"decrypt","size":"1","done":"0","park":{"offset":"1","len":"1","sha256":sha}}),
                "conversion.park.sha256",
            ),
            (json!({"kind":"decrypt","size":"1"}), "tokens.0.conversion"),
        ] {
            assert_eq!(field(parse(v.clone()).unwrap_err()), want, "{v}");
        }
    }
}
