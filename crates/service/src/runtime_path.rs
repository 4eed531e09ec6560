//! The places the daemon writes at run time (the audit log, the API socket, NBD sockets,
//! FUSE mount points), checked and opened as a root process must.
//!
//! An outside run found each of these: with the audit log configured in a world-writable
//! folder, a local user's pre-created 0666 file received the audit lines, a FIFO at the
//! audit path hung the daemon at start (SIGTERM ignored), and a symlink made the FUSE mount
//! land on a root-owned directory. So:
//! - a runtime folder must be owned by root (or the user atrest runs as) and not writable by
//!   group or others, unless it is sticky (as `/tmp`: others cannot replace what is ours
//!   there): the configuration's own rule ([`crate::trusted`]). Folders atrest makes are
//!   made 0700. With the folder trusted, nobody else can swap a name inside it between
//!   the check and the use;
//! - the last component is opened with `O_NOFOLLOW` relative to that folder (`openat`),
//!   never blocking (`O_NONBLOCK`: a FIFO fails or is refused, it cannot stall the open),
//!   and checked on the open descriptor: a regular file owned by the daemon's user, not
//!   writable by group or others;
//! - a mount point must be a directory owned by the daemon's user, not a symlink.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};

/// Why a runtime path is refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimePathError {
    /// The folder can be changed by other users.
    #[error("the folder {} of the {what} is {why}: another local user could replace or pre-create the {what} there. Use a folder owned by root with mode 0755 or stricter (the default under /run/atrest or /var/log/atrest)", dir.display())]
    UntrustedFolder {
        /// What lives there.
        what: &'static str,
        /// The folder.
        dir: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// The file itself is not one atrest may use.
    #[error("the {what} {} is {why}; atrest does not use it. Remove it (atrest creates it itself, readable by its own user only) or fix its owner and mode", path.display())]
    UntrustedFile {
        /// What it is.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// The OS refused.
    #[error("{doing} {}: {source}", path.display())]
    Io {
        /// What atrest was doing.
        doing: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

fn owner_ok(uid: u32) -> bool {
    uid == 0 || uid == euid()
}

fn owner_name(uid: u32) -> String {
    format!("owned by uid {uid}")
}

fn split(path: &Path) -> (PathBuf, &std::ffi::OsStr) {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_owned);
    (dir, path.file_name().unwrap_or(path.as_os_str()))
}

/// Makes the folder of `path` (0700, with its missing parents) if it is missing, then checks
/// it; returns it opened (`O_DIRECTORY`, `O_NOFOLLOW` on its last component).
pub fn trusted_folder(path: &Path, what: &'static str) -> Result<OwnedFd, RuntimePathError> {
    let (dir, _) = split(path);
    if !dir.exists() {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|source| RuntimePathError::Io {
                doing: "creating the folder",
                path: dir.clone(),
                source,
            })?;
    }
    let fd = rustix::fs::open(
        &dir,
        OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::RDONLY,
        Mode::empty(),
    )
    .map_err(|e| RuntimePathError::Io {
        doing: "opening the folder (a symlink is refused)",
        path: dir.clone(),
        source: e.into(),
    })?;
    let st = rustix::fs::fstat(&fd).map_err(|e| RuntimePathError::Io {
        doing: "reading the folder's owner and mode",
        path: dir.clone(),
        source: e.into(),
    })?;
    let mode = st.st_mode;
    let bad = |why: String| RuntimePathError::UntrustedFolder {
        what,
        dir: dir.clone(),
        why,
    };
    if !owner_ok(st.st_uid) {
        return Err(bad(owner_name(st.st_uid)));
    }
    let sticky = mode & 0o1000 != 0;
    if mode & 0o022 != 0 && !sticky {
        return Err(bad(format!(
            "writable by {} (mode {:o})",
            if mode & 0o002 != 0 {
                "everyone"
            } else {
                "its group"
            },
            mode & 0o7777
        )));
    }
    // Every folder above counts too: whoever can rename one can swap the whole tree.
    if let Some((above, why)) = crate::trusted::untrusted_folder_on_path(&dir) {
        return Err(RuntimePathError::UntrustedFolder {
            what,
            dir: above,
            why,
        });
    }
    Ok(fd)
}

/// Opens `path` for appending (the audit log): created 0600 if missing, otherwise it must be
/// a regular file owned by the daemon's user and not writable by group or others.
pub fn open_append(path: &Path, what: &'static str) -> Result<File, RuntimePathError> {
    let dir = trusted_folder(path, what)?;
    let (_, name) = split(path);
    let fd = rustix::fs::openat(
        &dir,
        name,
        OFlags::WRONLY
            | OFlags::APPEND
            | OFlags::CREATE
            | OFlags::NOFOLLOW
            | OFlags::NONBLOCK
            | OFlags::CLOEXEC
            | OFlags::NOCTTY,
        Mode::from_raw_mode(0o600),
    )
    .map_err(|e| match e {
        // A symlink another user planted in a sticky folder: the kernel's
        // protected_symlinks answers "permission denied" before O_NOFOLLOW is looked at.
        rustix::io::Errno::ACCESS
            if rustix::fs::statat(&dir, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW).is_ok_and(
                |st| {
                    rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Symlink
                },
            ) =>
        {
            RuntimePathError::UntrustedFile {
                what,
                path: path.to_owned(),
                why: "a symbolic link".into(),
            }
        }
        rustix::io::Errno::LOOP => RuntimePathError::UntrustedFile {
            what,
            path: path.to_owned(),
            why: "a symbolic link".into(),
        },
        rustix::io::Errno::NXIO => RuntimePathError::UntrustedFile {
            what,
            path: path.to_owned(),
            why: "a FIFO".into(),
        },
        e => RuntimePathError::Io {
            doing: "opening",
            path: path.to_owned(),
            source: e.into(),
        },
    })?;
    let file = File::from(fd);
    let m = file.metadata().map_err(|source| RuntimePathError::Io {
        doing: "reading the owner and mode of",
        path: path.to_owned(),
        source,
    })?;
    let bad = |why: String| RuntimePathError::UntrustedFile {
        what,
        path: path.to_owned(),
        why,
    };
    if !m.file_type().is_file() {
        return Err(bad("not a regular file".into()));
    }
    if m.uid() != euid() {
        return Err(bad(owner_name(m.uid())));
    }
    if m.mode() & 0o022 != 0 {
        return Err(bad(format!(
            "writable by others (mode {:o})",
            m.mode() & 0o7777
        )));
    }
    Ok(file)
}

/// Checks the folder a Unix socket will be made in (the API's, an NBD export's).
pub fn check_socket(path: &Path, what: &'static str) -> Result<(), RuntimePathError> {
    trusted_folder(path, what).map(drop)
}

/// Checks a FUSE mount point: its folder is trusted, and the mount point is a directory
/// (not a symlink) owned by the daemon's user, made 0700 if missing.
pub fn check_mount_point(dir: &Path) -> Result<(), RuntimePathError> {
    let what = "FUSE mount point";
    let parent = trusted_folder(dir, what)?;
    let (_, name) = split(dir);
    match rustix::fs::mkdirat(&parent, name, Mode::from_raw_mode(0o700)) {
        Ok(()) | Err(rustix::io::Errno::EXIST) => {}
        Err(e) => {
            return Err(RuntimePathError::Io {
                doing: "creating the mount point",
                path: dir.to_owned(),
                source: e.into(),
            })
        }
    }
    let st = rustix::fs::statat(&parent, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW);
    let st = match st {
        Ok(st) => st,
        // A mount left behind by a killed atrest ("not connected"): the caller unmounts it.
        Err(rustix::io::Errno::NOTCONN) => return Ok(()),
        Err(e) => {
            return Err(RuntimePathError::Io {
                doing: "reading the mount point",
                path: dir.to_owned(),
                source: e.into(),
            })
        }
    };
    let kind = rustix::fs::FileType::from_raw_mode(st.st_mode);
    let bad = |why: String| RuntimePathError::UntrustedFile {
        what,
        path: dir.to_owned(),
        why,
    };
    if kind == rustix::fs::FileType::Symlink {
        return Err(bad("a symbolic link".into()));
    }
    if kind != rustix::fs::FileType::Directory {
        return Err(bad("not a directory".into()));
    }
    // A mounted atrest FUSE file system reports the daemon's user as well.
    if st.st_uid != euid() {
        return Err(bad(owner_name(st.st_uid)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn dir(mode: u32) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(mode)).unwrap();
        d
    }

    #[test]
    fn a_world_writable_folder_is_refused_and_a_sticky_one_is_not() {
        let d = dir(0o777);
        let e = open_append(&d.path().join("audit.jsonl"), "audit log").unwrap_err();
        assert!(e.to_string().contains("writable by everyone"), "{e}");
        assert!(!d.path().join("audit.jsonl").exists(), "nothing is created");
        let d = dir(0o1777);
        open_append(&d.path().join("audit.jsonl"), "audit log").unwrap();
        let d = dir(0o775);
        assert!(check_socket(&d.path().join("api.sock"), "API socket").is_err());
    }

    #[test]
    fn symlinks_fifos_and_open_files_are_refused_without_blocking() {
        let d = dir(0o1777);
        let target = d.path().join("target");
        std::fs::write(&target, b"root's file\n").unwrap();
        let link = d.path().join("audit.jsonl");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = open_append(&link, "audit log").unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert_eq!(std::fs::read(&target).unwrap(), b"root's file\n");
        let fifo = d.path().join("fifo.jsonl");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let t = std::time::Instant::now();
        let e = open_append(&fifo, "audit log").unwrap_err();
        assert!(e.to_string().contains("FIFO"), "{e}");
        assert!(t.elapsed() < std::time::Duration::from_secs(1));
        let loose = d.path().join("loose.jsonl");
        std::fs::write(&loose, b"").unwrap();
        std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o666)).unwrap();
        let e = open_append(&loose, "audit log").unwrap_err();
        assert!(e.to_string().contains("writable by others"), "{e}");
    }

    #[test]
    fn a_trusted_folder_inside_a_world_writable_one_is_refused() {
        // The outside run's setup: a 0700 folder of root's inside a 0777 one, where any
        // user can rename the inner folder away and put their own in its place.
        let open = dir(0o777);
        let inner = open.path().join("sub");
        std::fs::create_dir(&inner).unwrap();
        std::fs::set_permissions(&inner, std::fs::Permissions::from_mode(0o700)).unwrap();
        let e = check_socket(&inner.join("n.sock"), "NBD socket").unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains(open.path().to_str().unwrap()) && text.contains("writable by everyone"),
            "{text}"
        );
        let e = open_append(&inner.join("audit.jsonl"), "audit log").unwrap_err();
        assert!(e.to_string().contains("writable by everyone"), "{e}");
        assert!(!inner.join("audit.jsonl").exists());
        // Sticky above (as /tmp is) is fine: others cannot rename what is ours there.
        let sticky = dir(0o1777);
        let inner = sticky.path().join("sub");
        std::fs::create_dir(&inner).unwrap();
        check_socket(&inner.join("n.sock"), "NBD socket").unwrap();
    }

    #[test]
    fn a_mount_point_must_be_a_real_directory() {
        let d = dir(0o755);
        let target = dir(0o755);
        let link = d.path().join("mnt");
        std::os::unix::fs::symlink(target.path(), &link).unwrap();
        let e = check_mount_point(&link).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        let fresh = d.path().join("fresh");
        check_mount_point(&fresh).unwrap();
        assert!(fresh.is_dir());
    }
}
