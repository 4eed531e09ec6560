//! The park: a copy of the plaintext's first bytes at the end of the device, with a
//! self-checking record after it. It exists because in the final layout the header sits
//! where those bytes were. The record is what lets a conversion resume when there is no
//! header to ask: before encrypt has written one, and after decrypt has overwritten it.
//!
//! The record is one [`super::record`] block, the device's last.

use serde::{Deserialize, Serialize};

use super::auth::{RecordKey, RecordKind};
use super::state::Kind;
use super::ConvertError;
use crate::backend::BlockBackend;
use crate::layout::{park_len, DATA_OFFSET};
pub use crate::layout::{PARK_LEN, RECORD_LEN};
use crate::luks2::token::{check_uid, KeyMode};
use crate::luks2::Luks2Error;

pub(crate) const MAGIC: &[u8; 16] = b"ATREST-PARK-V1\0\0";

/// What the record says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Encrypt or decrypt.
    pub kind: Kind,
    /// Plaintext size.
    pub size: u64,
    /// Where the data area starts in the volume layout.
    pub data_offset: u64,
    /// Parked bytes (`min(PARK_LEN, size)`), stored right before the record.
    pub park_len: u64,
    /// SHA-256 of the parked bytes, hex.
    pub sha256: String,
    /// Encrypt: what the header will say, so it can be written again after a crash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<HeaderPlan>,
    /// Decrypt: the key the volume was under, so it can still be revoked when the run
    /// that finishes has no header left to read it from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_uid: Option<String>,
    /// HMAC-SHA256 tag over the other fields ([`super::auth`]): the record restores bytes
    /// and writes headers with no header to ask, so only the key's holder may write one.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
}

impl Record {
    /// This record with its tag under `rk`.
    pub fn sealed(self, rk: &RecordKey) -> Result<Self, ConvertError> {
        let mac = rk.tag(RecordKind::Park, &self.untagged())?;
        Ok(Self { mac, ..self })
    }

    /// Checks the tag under `rk`.
    pub fn verify(&self, rk: &RecordKey) -> Result<(), ConvertError> {
        rk.verify(RecordKind::Park, &self.untagged(), &self.mac)
    }

    fn untagged(&self) -> Self {
        Self {
            mac: String::new(),
            ..self.clone()
        }
    }
}

/// The facts a new header needs (no secret: the key comes from KMIP by its identifier).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeaderPlan {
    /// The KMIP key.
    pub key_uid: String,
    /// Wrapped or direct.
    pub key_mode: KeyMode,
    /// 32 or 64.
    pub volume_key_len: usize,
    /// 512 or 4096.
    pub sector_size: u32,
    /// Where the key came from (a hint).
    pub server_hint: Option<String>,
}

/// Serialises the record block.
pub fn encode(r: &Record) -> std::io::Result<Vec<u8>> {
    super::record::seal(MAGIC, r)
}

/// Parses a record block; `None` for anything that is not a whole, valid record.
pub fn decode(b: &[u8]) -> Option<Record> {
    super::record::open(MAGIC, b)
}

fn corrupt(field: &str, value: impl ToString, why: impl ToString) -> ConvertError {
    Luks2Error::corrupt(&format!("park record {field}"), value, why).into()
}

/// Checks a record's numbers against a device of `len` bytes. Its checksum proves only
/// that it was written whole: like a header, it is validated before anything trusts it.
fn check(r: &Record, len: u64) -> Result<(), ConvertError> {
    if r.size == 0 || r.park_len != park_len(r.size) {
        return Err(corrupt(
            "park_len",
            r.park_len,
            format!("must be {} for {} bytes of data", park_len(r.size), r.size),
        ));
    }
    if r.sha256.len() != 64 || !r.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(corrupt("sha256", &r.sha256, "not a SHA-256 in hex"));
    }
    // What precedes the park: the data (decrypt: plaintext from byte 0; encrypt: the
    // plaintext, which will move up by the data offset).
    let before = match r.kind {
        Kind::Encrypt => {
            let plan = r.header.as_ref().ok_or_else(|| {
                corrupt("header", "(missing)", "an encrypt record plans its header")
            })?;
            check_uid("park record key_uid", &plan.key_uid)?;
            if r.data_offset != DATA_OFFSET {
                return Err(corrupt(
                    "data_offset",
                    r.data_offset,
                    "atrest encrypts with a 16 MiB data offset",
                ));
            }
            if !r.size.is_multiple_of(u64::from(plan.sector_size.max(1))) {
                return Err(corrupt("size", r.size, "not a whole number of sectors"));
            }
            r.size.checked_add(DATA_OFFSET)
        }
        Kind::Decrypt => {
            if let Some(uid) = &r.key_uid {
                check_uid("park record key_uid", uid)?;
            }
            Some(r.size)
        }
        Kind::Rekey => return Err(corrupt("kind", "rekey", "a rekey parks nothing")),
    };
    let need = before
        .and_then(|b| b.checked_add(r.park_len))
        .and_then(|b| b.checked_add(RECORD_LEN));
    match need {
        Some(n) if n <= len => Ok(()),
        _ => Err(corrupt(
            "size",
            r.size,
            format!("the data, park and record do not fit in the device's {len} bytes"),
        )),
    }
}

/// The record at the end of `dev`, if there is one; an error for a record that is whole
/// but whose numbers do not fit the device.
pub fn read(dev: &dyn BlockBackend) -> Result<Option<Record>, ConvertError> {
    let io = |source| ConvertError::Io { offset: 0, source };
    let len = dev.len().map_err(io)?;
    if len < RECORD_LEN {
        return Ok(None);
    }
    let mut b = vec![0u8; RECORD_LEN as usize];
    dev.read_at(&mut b, len - RECORD_LEN)
        .map_err(|source| ConvertError::Io {
            offset: len - RECORD_LEN,
            source,
        })?;
    match decode(&b) {
        Some(r) => check(&r, len).map(|()| Some(r)),
        None => Ok(None),
    }
}

/// Where `rec`'s park starts on a device of `len` bytes.
pub fn park_at(len: u64, rec: &Record) -> Result<u64, ConvertError> {
    check(rec, len)?;
    crate::layout::park_offset(len, rec.park_len)
        .ok_or_else(|| corrupt("park_len", rec.park_len, "larger than the device"))
}

/// SHA-256 in hex.
pub fn sha256_hex(b: &[u8]) -> String {
    openssl::sha::sha256(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Record {
        Record {
            kind: Kind::Encrypt,
            size: 1 << 30,
            data_offset: 16 << 20,
            park_len: PARK_LEN,
            sha256: "ab".repeat(32),
            header: Some(HeaderPlan {
                key_uid: "k-1".into(),
                key_mode: KeyMode::Wrapped,
                volume_key_len: 32,
                sector_size: 4096,
                server_hint: None,
            }),
            key_uid: None,
            mac: String::new(),
        }
    }

    #[test]
    fn record_round_trips() {
        assert_eq!(decode(&encode(&sample()).unwrap()), Some(sample()));
    }

    #[test]
    fn a_sealed_record_verifies_and_any_changed_field_does_not() {
        let rk = RecordKey::derive(&[1; 32]).unwrap();
        let r = sample().sealed(&rk).unwrap();
        r.verify(&rk).unwrap();
        assert!(sample().verify(&rk).is_err(), "an untagged record");
        let forged = [
            Record {
                kind: Kind::Decrypt,
                ..r.clone()
            },
            Record {
                size: r.size - 512,
                ..r.clone()
            },
            Record {
                park_len: 512,
                ..r.clone()
            },
            Record {
                sha256: "cd".repeat(32),
                ..r.clone()
            },
            Record {
                key_uid: Some("k-2".into()),
                ..r.clone()
            },
            Record {
                header: None,
                ..r.clone()
            },
        ];
        for f in forged {
            assert!(f.verify(&rk).is_err(), "{f:?}");
        }
        assert!(r.verify(&RecordKey::derive(&[2; 32]).unwrap()).is_err());
    }

    #[test]
    fn rejects_a_record_with_any_byte_changed() {
        let good = encode(&sample()).unwrap();
        for i in [0, 17, 40, 2000, 4095] {
            let mut b = good.clone();
            b[i] ^= 1;
            assert_eq!(decode(&b), None, "byte {i}");
        }
    }
}
