//! The hot-zone journal of an in-place rekey: before a hot zone is rewritten, its old
//! ciphertext and a self-checking record are made durable in the unused part of the
//! keyslot area. After a crash, a record that matches the committed position says the hot
//! zone may be half-written, and its old content is taken from here instead.

use serde::{Deserialize, Serialize};

use crate::backend::BlockBackend;

const MAGIC: &[u8; 16] = b"ATREST-JRNL-V1\0\0";
const RECORD_LEN: usize = 4096;
/// Start of the journal: past the header copies and two keyslot areas.
pub const OFFSET: u64 = 1 << 20;
/// Largest hot zone (the journal area runs to the data offset; its last block is the record).
pub const MAX_HOTZONE: u64 = 8 << 20;
/// The record's place.
pub const RECORD_OFFSET: u64 = OFFSET + MAX_HOTZONE;

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
}

/// Makes `old` (the hot zone's current ciphertext) durable in the journal.
pub fn save(dev: &dyn BlockBackend, rec: &Record, old: &[u8]) -> std::io::Result<()> {
    dev.write_at(old, OFFSET)?;
    let json = serde_json::to_vec(rec).unwrap_or_default();
    let mut b = vec![0u8; RECORD_LEN];
    b[..16].copy_from_slice(MAGIC);
    b[16..20].copy_from_slice(&(json.len() as u32).to_be_bytes());
    b[20..20 + json.len()].copy_from_slice(&json);
    let sum = openssl::sha::sha256(&b[..RECORD_LEN - 32]);
    b[RECORD_LEN - 32..].copy_from_slice(&sum);
    dev.write_at(&b, RECORD_OFFSET)?;
    dev.sync()
}

/// The saved old ciphertext of the hot zone at `pos`, if the journal holds a whole, valid
/// copy of it for run `run`.
pub fn load(dev: &dyn BlockBackend, run: &str, pos: u64) -> std::io::Result<Option<Vec<u8>>> {
    let mut b = vec![0u8; RECORD_LEN];
    dev.read_at(&mut b, RECORD_OFFSET)?;
    if &b[..16] != MAGIC || openssl::sha::sha256(&b[..RECORD_LEN - 32]) != b[RECORD_LEN - 32..] {
        return Ok(None);
    }
    let n = u32::from_be_bytes([b[16], b[17], b[18], b[19]]) as usize;
    let Some(rec) = b
        .get(20..20 + n)
        .and_then(|j| serde_json::from_slice::<Record>(j).ok())
    else {
        return Ok(None);
    };
    if rec.run != run || rec.pos != pos || rec.len > MAX_HOTZONE {
        return Ok(None);
    }
    let mut data = vec![0u8; rec.len as usize];
    dev.read_at(&mut data, OFFSET)?;
    Ok((super::park::sha256_hex(&data) == rec.sha256).then_some(data))
}
