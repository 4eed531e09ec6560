//! The park: a copy of the plaintext's first bytes at the end of the device, with a
//! self-checking record after it. It exists because in the final layout the header sits
//! where those bytes were. The record is what lets a conversion resume when there is no
//! header to ask: before encrypt has written one, and after decrypt has overwritten it.
//!
//! The record is one [`super::record`] block, the device's last.

use serde::{Deserialize, Serialize};

use super::state::Kind;
use crate::backend::BlockBackend;

pub(crate) const MAGIC: &[u8; 16] = b"ATREST-PARK-V1\0\0";
/// The record's size.
pub const RECORD_LEN: u64 = super::record::LEN as u64;
/// How many plaintext bytes are parked at most (1 MiB, more than the header and two
/// keyslots occupy, so nothing but the final step ever writes over parked-from bytes).
pub const PARK_LEN: u64 = 1 << 20;

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
}

/// The facts a new header needs (no secret: the key comes from KMIP by its identifier).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeaderPlan {
    /// The KMIP key.
    pub key_uid: String,
    /// `wrapped` or `direct`.
    pub key_mode: String,
    /// 32 or 64.
    pub volume_key_len: usize,
    /// 512 or 4096.
    pub sector_size: u32,
    /// Where the key came from (a hint).
    pub server_hint: Option<String>,
}

/// Where the park starts on a device of `dev_len` bytes.
pub fn park_offset(dev_len: u64, park_len: u64) -> u64 {
    dev_len - RECORD_LEN - park_len
}

/// Serialises the record block.
pub fn encode(r: &Record) -> std::io::Result<Vec<u8>> {
    super::record::seal(MAGIC, r)
}

/// Parses a record block; `None` for anything that is not a whole, valid record.
pub fn decode(b: &[u8]) -> Option<Record> {
    super::record::open(MAGIC, b)
}

/// The record at the end of `dev`, if there is a valid one.
pub fn read(dev: &dyn BlockBackend) -> std::io::Result<Option<Record>> {
    let len = dev.len()?;
    if len < RECORD_LEN {
        return Ok(None);
    }
    let mut b = vec![0u8; RECORD_LEN as usize];
    dev.read_at(&mut b, len - RECORD_LEN)?;
    Ok(decode(&b).filter(|r| {
        r.park_len <= PARK_LEN && r.park_len <= r.size && r.park_len + RECORD_LEN <= len
    }))
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
                key_mode: "wrapped".into(),
                volume_key_len: 32,
                sector_size: 4096,
                server_hint: None,
            }),
        }
    }

    #[test]
    fn record_round_trips() {
        assert_eq!(decode(&encode(&sample()).unwrap()), Some(sample()));
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
