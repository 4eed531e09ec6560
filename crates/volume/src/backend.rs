//! The only road to storage: [`BlockBackend`], with a file (or block device) behind it and
//! an in-memory one for tests. Nothing else in the crate opens files.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Positioned reads and writes, durability on request.
pub trait BlockBackend: Send + Sync {
    /// Size in bytes.
    fn len(&self) -> io::Result<u64>;
    /// Reads exactly `buf.len()` bytes at `offset`.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes all of `buf` at `offset`.
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Makes every write so far durable.
    fn sync(&self) -> io::Result<()>;
    /// True when the backend holds no bytes.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
    /// True for a regular file, whose size [`BlockBackend::set_len`] can change; false for a
    /// block device, whose size is fixed.
    fn resizable(&self) -> bool {
        false
    }
    /// Gives the bytes `[offset, offset + len)` back to the storage (a hole in a file).
    /// What they read afterwards is unspecified (zeros, for a file). Unsupported by
    /// default.
    fn discard(&self, _offset: u64, _len: u64) -> io::Result<()> {
        Err(io::ErrorKind::Unsupported.into())
    }
    /// Grows (with the space reserved, so a full disk shows now and not half-way through a
    /// conversion) or truncates the file.
    fn set_len(&self, _len: u64) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "a block device cannot change its size",
        ))
    }
}

/// A file or block device.
pub struct FileBackend {
    file: File,
}

/// How a device is held while atrest works on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Format and the conversions: nobody else may have it open through atrest.
    Exclusive,
    /// Serving an unlocked volume: several readers of the header may share it (`status`),
    /// but no conversion or format can start meanwhile.
    Shared,
}

/// Opening a device failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The OS refused to open it.
    #[error("cannot open {}: {source}", path.display())]
    Open {
        /// The device.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Another process holds it.
    #[error("{} is in use by another atrest process ({what}); wait for it to finish or stop it", path.display())]
    Busy {
        /// The device.
        path: PathBuf,
        /// Who is likely to hold it.
        what: &'static str,
    },
    /// Locking failed for another reason.
    #[error("cannot lock {}: {source}", path.display())]
    Lock {
        /// The device.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

impl FileBackend {
    /// Wraps an open file (no lock: the caller holds one, or needs none, as in tests).
    pub fn new(file: File) -> Self {
        Self { file }
    }

    /// Opens `path` for reading and writing and takes its lock (`flock`, advisory: every
    /// atrest process takes it, so a format, a conversion and an export of one device
    /// never run at once). The lock goes with the file.
    pub fn open(path: &Path, access: Access) -> Result<Self, OpenError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|source| OpenError::Open {
                path: path.to_owned(),
                source,
            })?;
        Self::lock(file, path, access)
    }

    /// Takes `path`'s lock on an open `file`.
    pub fn lock(file: File, path: &Path, access: Access) -> Result<Self, OpenError> {
        let r = match access {
            Access::Exclusive => file.try_lock(),
            Access::Shared => file.try_lock_shared(),
        };
        match r {
            Ok(()) => Ok(Self { file }),
            Err(std::fs::TryLockError::WouldBlock) => Err(OpenError::Busy {
                path: path.to_owned(),
                what: match access {
                    Access::Exclusive => "a format, a conversion or an export",
                    Access::Shared => "a format or a conversion",
                },
            }),
            Err(std::fs::TryLockError::Error(source)) => Err(OpenError::Lock {
                path: path.to_owned(),
                source,
            }),
        }
    }
}

impl BlockBackend for FileBackend {
    fn len(&self) -> io::Result<u64> {
        let meta = self.file.metadata()?;
        if meta.file_type().is_file() {
            return Ok(meta.len());
        }
        // A block device reports size 0 in its metadata: seek to its end instead.
        use std::io::Seek;
        let mut f = &self.file;
        let end = f.seek(io::SeekFrom::End(0))?;
        Ok(end)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(buf, offset)
    }

    fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn resizable(&self) -> bool {
        self.file.metadata().is_ok_and(|m| m.file_type().is_file())
    }

    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        if !self.resizable() {
            // A block device would need BLKDISCARD; not offered.
            return Err(io::ErrorKind::Unsupported.into());
        }
        rustix::fs::fallocate(
            &self.file,
            rustix::fs::FallocateFlags::PUNCH_HOLE | rustix::fs::FallocateFlags::KEEP_SIZE,
            offset,
            len,
        )
        .map_err(io::Error::from)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        if !self.resizable() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "a block device cannot change its size",
            ));
        }
        let old = self.file.metadata()?.len();
        if len > old {
            // Reserve the blocks: a plain set_len would make a sparse tail whose first
            // write could fail with ENOSPC in the middle of a conversion.
            rustix::fs::fallocate(
                &self.file,
                rustix::fs::FallocateFlags::empty(),
                old,
                len - old,
            )
            .map_err(io::Error::from)?;
        }
        self.file.set_len(len)?;
        // The new size must be durable before anything relies on it.
        self.file.sync_all()
    }
}

/// Bytes in memory, for tests.
#[derive(Default)]
pub struct MemBackend {
    data: Mutex<Vec<u8>>,
    /// Calls that changed the contents (writes and resizes), so a test can assert "nothing
    /// written" without keeping a copy of the device.
    changes: std::sync::atomic::AtomicU64,
}

impl MemBackend {
    /// `len` zero bytes.
    pub fn new(len: usize) -> Self {
        Self::from_bytes(vec![0; len])
    }

    /// A device holding `bytes`.
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Self {
            data: Mutex::new(bytes),
            changes: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// A copy of the contents.
    pub fn contents(&self) -> Vec<u8> {
        self.data.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The contents, without a copy.
    pub fn into_bytes(self) -> Vec<u8> {
        self.data.into_inner().unwrap_or_else(|p| p.into_inner())
    }

    /// How many writes and resizes have been made (each counted even when it changed no
    /// byte).
    pub fn changes(&self) -> u64 {
        self.changes.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl BlockBackend for MemBackend {
    fn len(&self) -> io::Result<u64> {
        Ok(self.data.lock().unwrap_or_else(|p| p.into_inner()).len() as u64)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let d = self.data.lock().unwrap_or_else(|p| p.into_inner());
        let start = usize::try_from(offset).map_err(|_| io::ErrorKind::UnexpectedEof)?;
        let src = d
            .get(start..start + buf.len())
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(src);
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut d = self.data.lock().unwrap_or_else(|p| p.into_inner());
        let start = usize::try_from(offset).map_err(|_| io::ErrorKind::InvalidInput)?;
        if d.len() < start + buf.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "past the end of the device",
            ));
        }
        self.changes
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        d[start..start + buf.len()].copy_from_slice(buf);
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        Ok(())
    }

    fn resizable(&self) -> bool {
        true
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let len = usize::try_from(len).map_err(|_| io::ErrorKind::InvalidInput)?;
        self.changes
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.data
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .resize(len, 0);
        Ok(())
    }
}
