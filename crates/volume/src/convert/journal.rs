//! The hot-zone journal of the in-place loop (deep rekey; encrypt and decrypt with a
//! detached header): before a hot zone is rewritten, a self-checking, tagged record and
//! what a redo needs are made durable in the unused part of the keyslot area. After a
//! crash, a record that matches the committed position says the hot zone may be
//! half-written.
//!
//! What a redo needs is a checksum of every 512-byte block of the zone's old content
//! (cryptsetup's "checksum" resilience): 16 bytes per 512, so the data is written once and
//! the journal takes 3 % of it. 512 bytes is the unit a write is atomic in (the media
//! assumption of `docs/journal.md`), so after a crash each block is whole: either still
//! old, and its checksum matches, or already new, and then undoing the step's transform
//! gives back a block whose checksum matches. A block that is neither stops the resume
//! before anything is written. The checksums are salted by a key derived from the record
//! key, and the list is covered by the record's tag: a disk writer can neither compute
//! them nor change them, so cannot make a resume treat a block that still holds its old
//! content (plaintext, in an encryption) as done.
//!
//! Records written before checksums (format 1 without `checksums`) hold the zone's old
//! content itself; a resume still reads them.

use serde::{Deserialize, Serialize};

use super::auth::{RecordKey, RecordKind};
use super::ConvertError;
use crate::backend::BlockBackend;
pub use crate::layout::MAX_HOTZONE;
use crate::layout::{JOURNAL_OFFSET as OFFSET, JOURNAL_RECORD_OFFSET as RECORD_OFFSET};

const MAGIC: &[u8; 16] = b"ATREST-JRNL-V1\0\0";

/// The block each checksum covers: the unit of an atomic write.
pub const CHECKSUM_BLOCK: usize = 512;

/// Bytes kept of each block's salted SHA-256.
pub const CHECKSUM_LEN: usize = 16;

/// What the record says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Which run (the new key's identifier, or the kind and volume): a stale record of
    /// another run never matches.
    pub run: String,
    /// Logical position of the hot zone.
    pub pos: u64,
    /// Its length.
    pub len: u64,
    /// SHA-256 of what the journal holds (the checksums, or the old content), hex.
    pub sha256: String,
    /// The block size of the checksums the journal holds; absent in a record that holds
    /// the old content itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksums: Option<u32>,
    /// HMAC-SHA256 tag over the other fields ([`super::auth`]): a forged record would have
    /// the run write bytes of the forger's choosing through the key.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
}

/// What a valid record for the zone gives a resume.
#[derive(Debug)]
pub enum Saved {
    /// The zone's old content.
    Old(Vec<u8>),
    /// The checksums of the zone's old content, [`CHECKSUM_LEN`] bytes per block.
    Checksums(Vec<u8>),
}

/// Makes `saved` (the checksums of the hot zone's old content, or that content) durable in
/// the journal, the record tagged under `rk`.
pub fn save(
    dev: &dyn BlockBackend,
    rec: &Record,
    saved: &[u8],
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
    dev.write_at(saved, OFFSET).map_err(io)?;
    dev.write_at(&block, RECORD_OFFSET).map_err(io)?;
    dev.sync().map_err(io)
}

/// What the journal holds for the hot zone at `pos` of run `run`, if it holds a whole,
/// valid record and copy for it. A whole record for this run and position whose tag does
/// not verify under `rk` is an error: it was forged, and nothing may be written.
pub fn load(
    dev: &dyn BlockBackend,
    run: &str,
    pos: u64,
    rk: &RecordKey,
) -> Result<Option<(Record, Saved)>, ConvertError> {
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
    let saved_len = match rec.checksums {
        None => rec.len as usize,
        // A tagged record is atrest's own, so a block size other than the one written
        // means a newer format this build does not know.
        Some(block) if block as usize == CHECKSUM_BLOCK => {
            if !rec.len.is_multiple_of(CHECKSUM_BLOCK as u64) {
                return Ok(None);
            }
            rec.len as usize / CHECKSUM_BLOCK * CHECKSUM_LEN
        }
        Some(_) => return Ok(None),
    };
    let mut saved = vec![0u8; saved_len];
    dev.read_at(&mut saved, OFFSET).map_err(io)?;
    if super::park::sha256_hex(&saved) != rec.sha256 {
        return Ok(None);
    }
    let saved = match rec.checksums {
        None => Saved::Old(saved),
        Some(_) => Saved::Checksums(saved),
    };
    Ok(Some((rec, saved)))
}

/// Salted block checksums of a run (see the module's documentation).
#[derive(Clone)]
pub struct Checksums {
    /// A SHA-256 that has absorbed the salt; each block's hash starts from a copy.
    salted: openssl::sha::Sha256,
}

impl std::fmt::Debug for Checksums {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Checksums(<salted>)")
    }
}

impl Checksums {
    /// The checksums of runs tagged under `rk`.
    pub fn new(rk: &RecordKey) -> Result<Self, ConvertError> {
        let mut salted = openssl::sha::Sha256::new();
        salted.update(&rk.checksum_salt()?);
        Ok(Self { salted })
    }

    fn one(&self, block: &[u8]) -> [u8; CHECKSUM_LEN] {
        let mut h = self.salted.clone();
        h.update(block);
        let full = h.finish();
        let mut out = [0u8; CHECKSUM_LEN];
        out.copy_from_slice(&full[..CHECKSUM_LEN]);
        out
    }

    /// The checksums of `zone` (a whole number of blocks), in order.
    pub fn of(&self, zone: &[u8]) -> Vec<u8> {
        debug_assert!(zone.len().is_multiple_of(CHECKSUM_BLOCK));
        let mut out = Vec::with_capacity(zone.len() / CHECKSUM_BLOCK * CHECKSUM_LEN);
        for block in zone.chunks(CHECKSUM_BLOCK) {
            out.extend_from_slice(&self.one(block));
        }
        out
    }

    /// The old content of a hot zone that a crash interrupted, from what the disk holds
    /// (`disk`) and the same bytes with the step's transform undone (`undone`): each block
    /// is whichever of the two its checksum in `sums` matches. `at` is where the zone lies
    /// on the data device, for the error. Neither matching is an error: the disk changed
    /// beyond what a crash can do.
    pub fn recover(
        &self,
        disk: &[u8],
        undone: &[u8],
        sums: &[u8],
        at: u64,
    ) -> Result<Vec<u8>, ConvertError> {
        if disk.len() != undone.len() || sums.len() != disk.len() / CHECKSUM_BLOCK * CHECKSUM_LEN {
            return Err(ConvertError::ZoneDamaged {
                offset: at,
                len: disk.len() as u64,
            });
        }
        let mut old = Vec::with_capacity(disk.len());
        for (i, ((d, u), want)) in disk
            .chunks(CHECKSUM_BLOCK)
            .zip(undone.chunks(CHECKSUM_BLOCK))
            .zip(sums.chunks(CHECKSUM_LEN))
            .enumerate()
        {
            if self.one(d) == want {
                old.extend_from_slice(d);
            } else if self.one(u) == want {
                old.extend_from_slice(u);
            } else {
                return Err(ConvertError::ZoneDamaged {
                    offset: at + (i * CHECKSUM_BLOCK) as u64,
                    len: CHECKSUM_BLOCK as u64,
                });
            }
        }
        Ok(old)
    }
}
