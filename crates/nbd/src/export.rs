//! What the server serves: the [`BlockExport`] trait, its block sizes, and an in-memory
//! export for tests and the fuzz target.

use std::io;

use crate::limits::{MAX_PAYLOAD, WRITE_ZEROES_CHUNK};

/// The size constraints an export advertises (`NBD_INFO_BLOCK_SIZE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockSize {
    /// Smallest addressable unit and alignment: the volume's sector size (512 or 4096).
    /// A power of two, at most 65536.
    pub minimum: u32,
    /// Size (and alignment) below which I/O costs a read-modify-write. A power of two, at
    /// least `max(minimum, 512)`.
    pub preferred: u32,
    /// Largest payload per request. Clamped to [`MAX_PAYLOAD`] (32 MiB) when advertised;
    /// at least `preferred`.
    pub maximum: u32,
}

impl BlockSize {
    /// Sector-sized minimum, preferred `max(sector, 4096)`, maximum 32 MiB.
    pub fn for_sector(sector: u32) -> Self {
        BlockSize {
            minimum: sector,
            preferred: sector.max(4096),
            maximum: MAX_PAYLOAD,
        }
    }

    /// Checks the specification's rules; returns the broken one.
    pub(crate) fn check(&self) -> Result<(), &'static str> {
        if !self.minimum.is_power_of_two() || self.minimum > 65536 {
            return Err("minimum must be a power of two, at most 65536");
        }
        if !self.preferred.is_power_of_two() || self.preferred < self.minimum.max(512) {
            return Err("preferred must be a power of two, at least max(minimum, 512)");
        }
        if self.maximum.min(MAX_PAYLOAD) < self.preferred {
            return Err("maximum (clamped to 32 MiB) must be at least preferred");
        }
        Ok(())
    }

    /// The maximum payload actually advertised and enforced.
    pub(crate) fn effective_maximum(&self) -> u32 {
        self.maximum.min(MAX_PAYLOAD)
    }
}

/// A byte range the server exports: implemented by atrest's unlocked volume (decrypting
/// reads, encrypting writes), by a plain file in the benchmark, and by [`MemExport`].
///
/// The server checks every request before calling these methods: ranges lie inside
/// `[0, size())`, lengths are at most the advertised maximum for `read` and `write`,
/// writes never reach a read-only export and `trim` only one whose `can_trim` is true.
/// Offsets are aligned to `block_size().minimum` for clients that asked for the block
/// sizes (all of qemu, libnbd and the kernel do); a client that did not (a bare
/// `NBD_OPT_EXPORT_NAME`) may send unaligned requests, which the export must then serve
/// (read-modify-write) or refuse with [`io::ErrorKind::InvalidInput`].
///
/// Requests from one or several connections run concurrently from several threads: two
/// may overlap (NBD gives no ordering between requests in flight), and keeping overlapping
/// partial-sector writes correct is the export's business.
///
/// Errors map to NBD errors: `ENOSPC`, `EDQUOT`, `EFBIG` → `NBD_ENOSPC`; `EPERM`, `EROFS` →
/// `NBD_EPERM`; [`io::ErrorKind::InvalidInput`] → `NBD_EINVAL`; `ESHUTDOWN` (raw OS error
/// 108, e.g. the volume's key was revoked) → `NBD_ESHUTDOWN`, after which clients
/// disconnect; anything else → `NBD_EIO`. An error is sent to the client as the request's
/// reply and never ends the connection.
pub trait BlockExport: Send + Sync + 'static {
    /// Size in bytes (should be a multiple of `block_size().minimum`). Read when a client
    /// selects the export; it must not change while the export is served.
    fn size(&self) -> u64;

    /// The advertised size constraints.
    fn block_size(&self) -> BlockSize;

    /// Whether writes are refused (advertised as `NBD_FLAG_READ_ONLY`).
    fn read_only(&self) -> bool {
        false
    }

    /// Fills all of `buf` from `offset`. On `Ok` every byte of `buf` must have been
    /// written: the buffer is reused between requests of the same connection.
    fn read(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;

    /// Writes all of `buf` at `offset`; with `fua`, the data is durable before returning.
    fn write(&self, offset: u64, buf: &[u8], fua: bool) -> io::Result<()>;

    /// Makes every write that has completed (on any connection) durable, e.g. `fdatasync`
    /// of the backing store.
    fn flush(&self) -> io::Result<()>;

    /// Writes `len` zero bytes at `offset` (`len` is not bounded by the maximum payload).
    /// The default writes a zero buffer of at most 1 MiB repeatedly.
    fn write_zeroes(&self, offset: u64, len: u64, fua: bool) -> io::Result<()> {
        let chunk = WRITE_ZEROES_CHUNK.min(usize::try_from(len).unwrap_or(usize::MAX));
        let zeroes = vec![0u8; chunk];
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(chunk as u64) as usize;
            let at = offset
                .checked_add(done)
                .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
            self.write(at, &zeroes[..n], false)?;
            done += n as u64;
        }
        if fua {
            self.flush()?;
        }
        Ok(())
    }

    /// Whether `NBD_CMD_TRIM` is advertised. An encrypted volume answers true only when the
    /// operator asked for it: discarded blocks show which parts of the disk are free.
    fn can_trim(&self) -> bool {
        false
    }

    /// Discards `len` bytes at `offset` (a hint: the contents become unspecified). Only
    /// called when `can_trim` is true.
    fn trim(&self, offset: u64, len: u64) -> io::Result<()> {
        let _ = (offset, len);
        Err(io::Error::from(io::ErrorKind::Unsupported))
    }
}

/// An export held in memory: for tests and the fuzz target (feature `test-support`).
#[cfg(any(test, feature = "test-support"))]
#[derive(Debug)]
pub struct MemExport {
    data: std::sync::RwLock<Vec<u8>>,
    block_size: BlockSize,
    read_only: bool,
    can_trim: bool,
}

#[cfg(any(test, feature = "test-support"))]
impl MemExport {
    /// A zero-filled export of `size` bytes with `sector`-sized minimum blocks.
    pub fn new(size: usize, sector: u32) -> Self {
        MemExport {
            data: std::sync::RwLock::new(vec![0; size]),
            block_size: BlockSize::for_sector(sector),
            read_only: false,
            can_trim: false,
        }
    }

    /// The same export, read-only.
    pub fn read_only(mut self) -> Self {
        self.read_only = true;
        self
    }

    /// The same export, advertising trim (which zeroes).
    pub fn with_trim(mut self) -> Self {
        self.can_trim = true;
        self
    }

    /// The same export with other block sizes.
    pub fn with_block_size(mut self, block_size: BlockSize) -> Self {
        self.block_size = block_size;
        self
    }

    /// A copy of the contents.
    pub fn contents(&self) -> Vec<u8> {
        self.data.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the contents at `offset` (for test setup).
    pub fn fill(&self, offset: usize, bytes: &[u8]) {
        let mut d = self.data.write().unwrap_or_else(|e| e.into_inner());
        d[offset..offset + bytes.len()].copy_from_slice(bytes);
    }

    fn range(&self, offset: u64, len: usize) -> io::Result<std::ops::Range<usize>> {
        let size = self.data.read().unwrap_or_else(|e| e.into_inner()).len();
        let start = usize::try_from(offset).map_err(|_| io::ErrorKind::InvalidInput)?;
        match start.checked_add(len) {
            Some(end) if end <= size => Ok(start..end),
            _ => Err(io::ErrorKind::InvalidInput.into()),
        }
    }
}

#[cfg(any(test, feature = "test-support"))]
impl BlockExport for MemExport {
    fn size(&self) -> u64 {
        self.data.read().unwrap_or_else(|e| e.into_inner()).len() as u64
    }

    fn block_size(&self) -> BlockSize {
        self.block_size
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn read(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let r = self.range(offset, buf.len())?;
        buf.copy_from_slice(&self.data.read().unwrap_or_else(|e| e.into_inner())[r]);
        Ok(())
    }

    fn write(&self, offset: u64, buf: &[u8], _fua: bool) -> io::Result<()> {
        let r = self.range(offset, buf.len())?;
        self.data.write().unwrap_or_else(|e| e.into_inner())[r].copy_from_slice(buf);
        Ok(())
    }

    fn flush(&self) -> io::Result<()> {
        Ok(())
    }

    fn write_zeroes(&self, offset: u64, len: u64, _fua: bool) -> io::Result<()> {
        let len = usize::try_from(len).map_err(|_| io::ErrorKind::InvalidInput)?;
        let r = self.range(offset, len)?;
        self.data.write().unwrap_or_else(|e| e.into_inner())[r].fill(0);
        Ok(())
    }

    fn can_trim(&self) -> bool {
        self.can_trim
    }

    fn trim(&self, offset: u64, len: u64) -> io::Result<()> {
        self.write_zeroes(offset, len, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_size_rules() {
        assert!(BlockSize::for_sector(512).check().is_ok());
        assert!(BlockSize::for_sector(4096).check().is_ok());
        let bs = |minimum, preferred, maximum| BlockSize {
            minimum,
            preferred,
            maximum,
        };
        assert!(bs(1, 512, 1 << 20).check().is_ok());
        assert!(bs(3, 4096, 1 << 20).check().is_err());
        assert!(bs(1 << 17, 1 << 17, 1 << 20).check().is_err());
        assert!(bs(4096, 2048, 1 << 20).check().is_err());
        assert!(bs(1, 256, 1 << 20).check().is_err());
        assert!(bs(512, 4096, 4095).check().is_err());
        assert_eq!(bs(512, 4096, u32::MAX).effective_maximum(), MAX_PAYLOAD);
    }

    struct Plain(MemExport);

    impl BlockExport for Plain {
        fn size(&self) -> u64 {
            self.0.size()
        }
        fn block_size(&self) -> BlockSize {
            self.0.block_size()
        }
        fn read(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
            self.0.read(offset, buf)
        }
        fn write(&self, offset: u64, buf: &[u8], fua: bool) -> io::Result<()> {
            self.0.write(offset, buf, fua)
        }
        fn flush(&self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn default_write_zeroes_chunks() {
        let size = 3 * WRITE_ZEROES_CHUNK + 512;
        let e = Plain(MemExport::new(size, 512));
        e.0.fill(0, &vec![0xaa; size]);
        e.write_zeroes(512, (2 * WRITE_ZEROES_CHUNK + 512) as u64, true)
            .unwrap();
        let c = e.0.contents();
        assert!(c[..512].iter().all(|&b| b == 0xaa));
        assert!(c[512..2 * WRITE_ZEROES_CHUNK + 1024]
            .iter()
            .all(|&b| b == 0));
        assert!(c[2 * WRITE_ZEROES_CHUNK + 1024..]
            .iter()
            .all(|&b| b == 0xaa));
        assert!(e.write_zeroes(size as u64 - 512, 1024, false).is_err());
        assert!(!e.can_trim());
        assert!(e.trim(0, 512).is_err());
    }
}
