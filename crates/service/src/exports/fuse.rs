//! The decrypted volume as the single file `DIR/volume`, through FUSE (the `fuser` crate).
//! FUSE and loop devices work where neither the nbd module nor device-mapper does
//! (containers, development machines): `losetup` on `DIR/volume` then carries a real
//! filesystem. Reads and writes go straight to the volume, which encrypts and decrypts
//! sector by sector; `fsync` makes everything written durable (fdatasync of the device).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, INodeNo, KernelConfig,
    LockOwner, MountOption, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyWrite, Request, WriteFlags,
};
use volume::volume::Unlocked;

use crate::error::ServiceError;

/// The file's name in the mount.
pub const FILE_NAME: &str = "volume";
const FILE: INodeNo = INodeNo(2);
/// Attributes do not change while mounted (the volume has a fixed size).
const TTL: Duration = Duration::from_secs(60);
/// Largest write the kernel sends at once.
const MAX_WRITE: u32 = 1 << 20;
/// Background (asynchronous) requests the kernel keeps outstanding: above the queue depths
/// fio and qemu use.
const MAX_BACKGROUND: u16 = 64;

struct VolumeFs {
    vol: Arc<Unlocked>,
    uid: u32,
    gid: u32,
    mounted: SystemTime,
}

impl VolumeFs {
    fn attr(&self, ino: INodeNo) -> FileAttr {
        let file = ino == FILE;
        FileAttr {
            ino,
            size: if file { self.vol.size() } else { 0 },
            blocks: if file { self.vol.size() / 512 } else { 0 },
            atime: self.mounted,
            mtime: self.mounted,
            ctime: self.mounted,
            crtime: self.mounted,
            kind: if file {
                FileType::RegularFile
            } else {
                FileType::Directory
            },
            // The plaintext: its owner only (the mount also refuses other users).
            perm: if file { 0o600 } else { 0o700 },
            nlink: if file { 1 } else { 2 },
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            flags: 0,
            blksize: self.vol.sector_size(),
        }
    }

    /// The length a request at `offset` may cover.
    fn clamp(&self, offset: u64, len: u64) -> u64 {
        self.vol.size().saturating_sub(offset).min(len)
    }
}

fn errno(e: &volume::volume::VolumeError) -> Errno {
    match e {
        volume::volume::VolumeError::OutOfRange { .. } => Errno::EINVAL,
        _ => Errno::EIO,
    }
}

impl Filesystem for VolumeFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_write(MAX_WRITE);
        // Without it the kernel runs an asynchronous direct read or write (libaio,
        // io_uring, qemu's aio=native) synchronously inside the submission, one at a time:
        // a queue-depth-32 client got the concurrency of queue depth 1 (the machine was
        // 60 % idle; bench/RESULTS.md, issue 25).
        if let Err(missing) = config.add_capabilities(fuser::InitFlags::FUSE_ASYNC_DIO) {
            log::info!("FUSE: the kernel lacks {missing:?}; asynchronous I/O runs one at a time");
        }
        // The kernel sends asynchronous direct I/O as background requests, 12 at a time
        // by default: a queue-depth-32 reader was held to 12 (bench/RESULTS.md, issue 25).
        let _ = config.set_max_background(MAX_BACKGROUND);
        let _ = config.set_congestion_threshold(MAX_BACKGROUND * 3 / 4);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        if parent == INodeNo::ROOT && name == FILE_NAME {
            reply.entry(&TTL, &self.attr(FILE), fuser::Generation(0));
        } else {
            reply.error(Errno::ENOENT);
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match ino {
            INodeNo::ROOT | FILE => reply.attr(&TTL, &self.attr(ino)),
            _ => reply.error(Errno::ENOENT),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<fuser::TimeOrNow>,
        _mtime: Option<fuser::TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        // A volume keeps its size; opening with O_TRUNC or truncating is refused.
        match size {
            Some(s) if s != self.vol.size() => reply.error(Errno::EPERM),
            _ => reply.attr(&TTL, &self.attr(ino)),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if ino == FILE {
            // No page cache for the plaintext: what the kernel caches, a lock cannot take
            // back (an aborted connection would leave it readable through a loop device).
            // Concurrent writes are safe: the volume locks the sectors it rewrites.
            reply.opened(
                FileHandle(0),
                FopenFlags::FOPEN_DIRECT_IO | FopenFlags::FOPEN_PARALLEL_DIRECT_WRITES,
            );
        } else {
            reply.error(Errno::EISDIR);
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        if ino != FILE {
            return reply.error(Errno::EISDIR);
        }
        let mut buf = vec![0u8; self.clamp(offset, u64::from(size)) as usize];
        match self.vol.read_at(&mut buf, offset) {
            Ok(()) => reply.data(&buf),
            Err(e) => {
                log::warn!("FUSE read of {} bytes at {offset}: {e}", buf.len());
                reply.error(errno(&e))
            }
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        if ino != FILE {
            return reply.error(Errno::EISDIR);
        }
        if self.clamp(offset, data.len() as u64) < data.len() as u64 {
            // Past the end: the volume cannot grow.
            return reply.error(Errno::ENOSPC);
        }
        match self.vol.write_at(data, offset) {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => {
                log::warn!("FUSE write of {} bytes at {offset}: {e}", data.len());
                reply.error(errno(&e))
            }
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.vol.flush() {
            Ok(()) => reply.ok(),
            Err(e) => {
                log::warn!("FUSE fsync: {e}");
                reply.error(Errno::EIO)
            }
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        if ino != INodeNo::ROOT {
            return reply.error(Errno::ENOTDIR);
        }
        let entries = [
            (INodeNo::ROOT, FileType::Directory, "."),
            (INodeNo::ROOT, FileType::Directory, ".."),
            (FILE, FileType::RegularFile, FILE_NAME),
        ];
        for (i, (ino, kind, name)) in entries.into_iter().enumerate().skip(offset as usize) {
            if reply.add(ino, (i + 1) as u64, kind, name) {
                break;
            }
        }
        reply.ok();
    }
}

/// A mounted FUSE export; unmounted (and the volume flushed) when closed or dropped.
pub struct FuseExport {
    session: Option<fuser::BackgroundSession>,
    dir: PathBuf,
    vol: Arc<Unlocked>,
}

/// Where the kernel lists FUSE connections (the `fusectl` filesystem).
const FUSE_CONNECTIONS: &str = "/sys/fs/fuse/connections";

impl FuseExport {
    /// The file that holds the plaintext.
    pub fn file(&self) -> PathBuf {
        self.dir.join(FILE_NAME)
    }

    /// Unmounts (I/O through the mount fails from here) and flushes the volume.
    ///
    /// A mount held open (a loop device on the file, a process reading it) cannot be
    /// unmounted, and a lazy unmount alone would let its users go on reading and writing
    /// plaintext, the key still in this process. So the connection is aborted first:
    /// every request on it fails from then on (the loop device sees I/O errors), the
    /// session ends and lets go of the volume, and the mount point is detached.
    pub fn close(&mut self) -> Result<(), ServiceError> {
        let io = |what, error| ServiceError::Io {
            what,
            path: self.dir.clone(),
            error,
        };
        let Some(session) = self.session.take() else {
            return Ok(self.vol.flush()?);
        };
        match rustix::mount::unmount(&self.dir, rustix::mount::UnmountFlags::empty()) {
            Ok(()) => {}
            Err(rustix::io::Errno::BUSY) => {
                let aborted = self.abort();
                let _ = rustix::mount::unmount(&self.dir, rustix::mount::UnmountFlags::DETACH);
                if let Err(e) = aborted {
                    // Joining would wait for the users to let go; the session stays.
                    drop(session);
                    return Err(io(
                        "the FUSE export is held open and its connection could not be aborted \
                         (the key stays in memory until its users close it) at",
                        e,
                    ));
                }
                log::warn!(
                    "{}: held open (a loop device?): its FUSE connection was aborted, its users get I/O errors",
                    self.dir.display()
                );
            }
            // Not root: fuser unmounts through the setuid fusermount.
            Err(_) => {
                session
                    .umount_and_join()
                    .map_err(|e| io("unmounting the FUSE export", e))?;
                return Ok(self.vol.flush()?);
            }
        }
        session
            .join()
            .map_err(|e| io("ending the FUSE session of", e))?;
        Ok(self.vol.flush()?)
    }

    /// Aborts the FUSE connection (mounting `fusectl` first if nothing has).
    fn abort(&self) -> std::io::Result<()> {
        let n = connection_of(&self.dir).ok_or_else(|| {
            std::io::Error::other("the mount's FUSE connection is not in /proc/self/mountinfo")
        })?;
        let file = Path::new(FUSE_CONNECTIONS)
            .join(n.to_string())
            .join("abort");
        if !file.exists() {
            rustix::mount::mount(
                "fusectl",
                FUSE_CONNECTIONS,
                "fusectl",
                rustix::mount::MountFlags::empty(),
                None,
            )?;
        }
        std::fs::write(&file, b"1")
    }
}

/// The kernel's number for the FUSE connection mounted at `dir`: the minor number of the
/// mount's (anonymous) device, read from /proc/self/mountinfo. Not from `stat(dir)`: that
/// is a FUSE request of its own (measured: ~30 ms at start, waiting for the session's
/// first replies), and a mount that is being cut off should not be asked anything.
fn connection_of(dir: &Path) -> Option<u32> {
    let want = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_owned());
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    // The last mount at that point is the one on top.
    info.lines().rev().find_map(|line| {
        let mut f = line.split(' ');
        let (_, _, dev, _, point) = (f.next()?, f.next()?, f.next()?, f.next()?, f.next()?);
        if Path::new(&unescape_mountinfo(point)) != want {
            return None;
        }
        let (major, minor) = dev.split_once(':')?;
        (major == "0").then(|| minor.parse().ok()).flatten()
    })
}

/// Undoes mountinfo's octal escapes (`\040` for a space, and tab, newline, backslash).
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d[0] <= b'3' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl super::RunningExport for FuseExport {
    fn kind(&self) -> &'static str {
        "fuse"
    }

    fn at(&self) -> String {
        self.file().display().to_string()
    }

    fn close(&mut self) -> Result<(), ServiceError> {
        FuseExport::close(self)
    }
}

impl Drop for FuseExport {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

/// Mounts `vol` at `dir` (created if missing) as the single file `dir/volume`.
pub fn mount(vol: Arc<Unlocked>, dir: &Path, name: &str) -> Result<FuseExport, ServiceError> {
    let io = |what, error| ServiceError::Io {
        what,
        path: dir.to_owned(),
        error,
    };
    // A mount left by an atrest that was killed: the kernel answers "not connected".
    if std::fs::metadata(dir).is_err_and(|e| e.raw_os_error() == Some(107)) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(dir)
            .status();
    }
    // A trusted folder, and a real directory of ours: never a local user's symlink to a
    // directory of root's (the mount would land there).
    crate::runtime_path::check_mount_point(dir)?;
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        MountOption::FSName(format!("atrest:{name}")),
        MountOption::Subtype("atrest".into()),
        MountOption::DefaultPermissions,
        MountOption::NoSuid,
        MountOption::NoDev,
        MountOption::NoExec,
        MountOption::NoAtime,
    ];
    config.n_threads = Some(4);
    // Each thread reads requests from its own clone of /dev/fuse, instead of all four
    // queueing on one file's lock.
    config.clone_fd = true;
    let fs = VolumeFs {
        vol: vol.clone(),
        uid: rustix::process::geteuid().as_raw(),
        gid: rustix::process::getegid().as_raw(),
        mounted: SystemTime::now(),
    };
    let session = fuser::spawn_mount(fs, dir, &config).map_err(|e| {
        io(
            "mounting FUSE (is /dev/fuse there, and fuse3 installed?) at",
            e,
        )
    })?;
    Ok(FuseExport {
        session: Some(session),
        dir: dir.to_owned(),
        vol,
    })
}

#[cfg(test)]
mod tests {
    use super::unescape_mountinfo;

    #[test]
    fn mountinfo_escapes_are_undone_and_odd_ones_kept() {
        assert_eq!(
            unescape_mountinfo(r"/run/a\040b\011c\134d"),
            "/run/a b\tc\\d"
        );
        assert_eq!(unescape_mountinfo(r"/x\777\04"), r"/x\777\04");
    }
}
