//! The only road to storage: [`BlockBackend`], with a file (or block device) behind it and
//! an in-memory one for tests. Nothing else in the crate opens files.
//!
//! Two locks, for two different neighbours:
//!
//! - **atrest's own device lock** ([`Access`]), held for as long as a format, a conversion
//!   or an export has the device: an open-file-description lock (`F_OFD_SETLK`), which
//!   stock cryptsetup neither takes nor sees.
//! - **cryptsetup's metadata lock** ([`MetadataLock`]), held only while a header is read
//!   (shared) or written (exclusive), following cryptsetup's protocol
//!   (`lib/utils_device_locking.c`): `flock` on the file itself for a regular file, on
//!   `/run/cryptsetup/L_<major>:<minor>` for a block device. So `cryptsetup luksDump` of a
//!   served image answers at once, and neither tool reads a header the other is halfway
//!   through writing. (Before, the device lock was a `flock` held while serving, and
//!   cryptsetup's blocking `flock` hung without a word for the whole serving time.)

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
    /// Takes cryptsetup's metadata lock: shared to read a header, exclusive (`write`) to
    /// write one. None by default (no other tool reaches the device).
    fn metadata_lock(&self, _write: bool) -> io::Result<MetadataLock> {
        Ok(MetadataLock::none())
    }
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

/// How long a header read or write waits for cryptsetup's metadata lock before it gives up
/// (cryptsetup holds it for the duration of one command's metadata access).
pub const METADATA_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Where cryptsetup keeps the lock files of block devices.
const CRYPTSETUP_LOCK_DIR: &str = "/run/cryptsetup";

/// cryptsetup's metadata lock on a device, held until dropped.
#[derive(Debug)]
#[must_use = "the lock is released when this is dropped"]
pub struct MetadataLock(Option<File>);

impl MetadataLock {
    /// No lock (a device no other tool can reach: memory, a test double).
    pub fn none() -> Self {
        Self(None)
    }
}

impl Drop for MetadataLock {
    fn drop(&mut self) {
        if let Some(f) = &self.0 {
            let _ = rustix::fs::flock(f, rustix::fs::FlockOperation::Unlock);
        }
    }
}

/// A file or block device.
pub struct FileBackend {
    file: File,
    /// How long to wait for cryptsetup's metadata lock.
    metadata_wait: std::time::Duration,
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
    /// Wraps an open file (no device lock: the caller holds one, or needs none, as in
    /// tests; header reads and writes still take cryptsetup's metadata lock).
    pub fn new(file: File) -> Self {
        Self {
            file,
            metadata_wait: METADATA_LOCK_WAIT,
        }
    }

    /// Waits at most `d` for cryptsetup's metadata lock (tests).
    pub fn with_metadata_wait(mut self, d: std::time::Duration) -> Self {
        self.metadata_wait = d;
        self
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
        match ofd_lock(&file, access) {
            Ok(()) => Ok(Self::new(file)),
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

/// Takes atrest's device lock on the whole file: an open-file-description lock, owned by
/// this open file (not by the process, so opening and closing the same file elsewhere in
/// the process keeps it, and two opens in one process exclude each other).
fn ofd_lock(file: &File, access: Access) -> Result<(), std::fs::TryLockError> {
    use nix::fcntl::{fcntl, FcntlArg};
    let kind = match access {
        Access::Exclusive => libc::F_WRLCK,
        Access::Shared => libc::F_RDLCK,
    };
    let range = libc::flock {
        l_type: kind as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    };
    match fcntl(file, FcntlArg::F_OFD_SETLK(&range)) {
        Ok(_) => Ok(()),
        Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EACCES) => {
            Err(std::fs::TryLockError::WouldBlock)
        }
        Err(e) => Err(std::fs::TryLockError::Error(io::Error::from(e))),
    }
}

impl FileBackend {
    /// True when the file has been deleted (no name left in any folder) while open: writes
    /// still succeed, into a file that vanishes when the last descriptor closes.
    pub fn unlinked(&self) -> io::Result<bool> {
        use std::os::unix::fs::MetadataExt;
        let m = self.file.metadata()?;
        Ok(m.file_type().is_file() && m.nlink() == 0)
    }

    /// The descriptor's path under `/proc/self/fd`, through which a deleted file can still
    /// be copied out.
    pub fn proc_path(&self) -> PathBuf {
        use std::os::fd::AsRawFd;
        PathBuf::from(format!(
            "/proc/{}/fd/{}",
            std::process::id(),
            self.file.as_raw_fd()
        ))
    }

    /// The file cryptsetup flocks for this device: the file itself through a new open
    /// file description (a flock belongs to one; two threads of one process must exclude
    /// each other as two processes do), or a block device's lock file.
    fn metadata_lock_file(&self) -> io::Result<File> {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt};
        let meta = self.file.metadata()?;
        if !meta.file_type().is_block_device() {
            return File::open(format!("/proc/self/fd/{}", self.file.as_raw_fd()));
        }
        let rdev = meta.rdev();
        let (major, minor) = (libc::major(rdev), libc::minor(rdev));
        match std::fs::DirBuilder::new()
            .mode(0o700)
            .create(CRYPTSETUP_LOCK_DIR)
        {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
            _ => {}
        }
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(format!("{CRYPTSETUP_LOCK_DIR}/L_{major}:{minor}"))
    }
}

impl BlockBackend for FileBackend {
    fn metadata_lock(&self, write: bool) -> io::Result<MetadataLock> {
        use rustix::fs::{flock, FlockOperation};
        let f = self.metadata_lock_file()?;
        let op = if write {
            FlockOperation::NonBlockingLockExclusive
        } else {
            FlockOperation::NonBlockingLockShared
        };
        let deadline = std::time::Instant::now() + self.metadata_wait;
        loop {
            match flock(&f, op) {
                Ok(()) => return Ok(MetadataLock(Some(f))),
                Err(rustix::io::Errno::WOULDBLOCK) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(rustix::io::Errno::WOULDBLOCK) => {
                    return Err(io::Error::new(
                        io::ErrorKind::WouldBlock,
                        format!(
                            "another process (cryptsetup?) has held this device's LUKS2 metadata lock for over {} s; nothing was {}. Retry when it has finished",
                            self.metadata_wait.as_secs_f32(),
                            if write { "written" } else { "read" }
                        ),
                    ))
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

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
