//! The hot-zone journal of an in-place rekey: before a hot zone is rewritten, its old
//! ciphertext and a self-checking record are made durable in the unused part of the
//! keyslot area. After a crash, a record that matches the committed position says the hot
//! zone may be half-written, and its old content is taken from here instead.

use serde::{Deserialize, Serialize};

use super::auth::{RecordKey, RecordKind};
use super::ConvertError;
use crate::backend::BlockBackend;
pub use crate::layout::MAX_HOTZONE;
use crate::layout::{JOURNAL_OFFSET as OFFSET, JOURNAL_RECORD_OFFSET as RECORD_OFFSET};

const MAGIC: &[u8; 16] = b"ATREST-JRNL-V1\0\0";

/// What the record says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Which rekey (the new key's identifier): a stale record of another run never matches.
    pub run: String,
    /// Logical position of the hot zone.
    pub pos: u64,
    /// Its length.
    pub len: u64,
    /// SHA-256 of the saved old ciphertext, hex.
    pub sha256: String,
    /// HMAC-SHA256 tag over the other fields ([`super::auth`]): a forged record would have
    /// the run write bytes of the forger's choosing through the key.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
}

/// Makes `old` (the hot zone's current ciphertext) durable in the journal, the record
/// tagged under `rk`.
pub fn save(
    dev: &dyn BlockBackend,
    rec: &Record,
    old: &[u8],
    rk: &RecordKey,
) -> Result<(), ConvertError> {
    let io = |source| ConvertError::Io {
        offset: OFFSET,
        source,
    };
    let untagged = Record {
        mac: String::new(),
        ..rec.clone()
    };
    let mac = rk.tag(RecordKind::Journal, &untagged)?;
    let block = super::record::seal(MAGIC, &Record { mac, ..untagged }).map_err(io)?;
    dev.write_at(old, OFFSET).map_err(io)?;
    dev.write_at(&block, RECORD_OFFSET).map_err(io)?;
    dev.sync().map_err(io)
}

/// The saved old ciphertext of the hot zone at `pos`, if the journal holds a whole, valid
/// copy of it for run `run`. A whole record for this run and position whose tag does not
/// verify under `rk` is an error: it was forged, and nothing may be written.
pub fn load(
    dev: &dyn BlockBackend,
    run: &str,
    pos: u64,
    rk: &RecordKey,
) -> Result<Option<Vec<u8>>, ConvertError> {
    let io = |source| ConvertError::Io {
        offset: OFFSET,
        source,
    };
    let mut b = vec![0u8; super::record::LEN];
    dev.read_at(&mut b, RECORD_OFFSET).map_err(io)?;
    let Some(rec) = super::record::open::<Record>(MAGIC, &b) else {
        return Ok(None);
    };
    if rec.run != run || rec.pos != pos || rec.len > MAX_HOTZONE {
        return Ok(None);
    }
    let untagged = Record {
        mac: String::new(),
        ..rec.clone()
    };
    rk.verify(RecordKind::Journal, &untagged, &rec.mac)?;
    let mut data = vec![0u8; rec.len as usize];
    dev.read_at(&mut data, OFFSET).map_err(io)?;
    Ok((super::park::sha256_hex(&data) == rec.sha256).then_some(data))
}
