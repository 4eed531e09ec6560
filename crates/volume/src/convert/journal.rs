//! The hot-zone journal of an in-place rekey: before a hot zone is rewritten, its old
//! ciphertext and a self-checking record are made durable in the unused part of the
//! keyslot area. After a crash, a record that matches the committed position says the hot
//! zone may be half-written, and its old content is taken from here instead.

use serde::{Deserialize, Serialize};

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
}

/// Makes `old` (the hot zone's current ciphertext) durable in the journal.
pub fn save(dev: &dyn BlockBackend, rec: &Record, old: &[u8]) -> std::io::Result<()> {
    let block = super::record::seal(MAGIC, rec)?;
    dev.write_at(old, OFFSET)?;
    dev.write_at(&block, RECORD_OFFSET)?;
    dev.sync()
}

/// The saved old ciphertext of the hot zone at `pos`, if the journal holds a whole, valid
/// copy of it for run `run`.
pub fn load(dev: &dyn BlockBackend, run: &str, pos: u64) -> std::io::Result<Option<Vec<u8>>> {
    let mut b = vec![0u8; super::record::LEN];
    dev.read_at(&mut b, RECORD_OFFSET)?;
    let Some(rec) = super::record::open::<Record>(MAGIC, &b) else {
        return Ok(None);
    };
    if rec.run != run || rec.pos != pos || rec.len > MAX_HOTZONE {
        return Ok(None);
    }
    let mut data = vec![0u8; rec.len as usize];
    dev.read_at(&mut data, OFFSET)?;
    Ok((super::park::sha256_hex(&data) == rec.sha256).then_some(data))
}
