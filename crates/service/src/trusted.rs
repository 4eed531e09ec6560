//! Reading the configuration and the files it names, as a root daemon must.
//!
//! The configuration decides which key server atrest talks to and which files it sends
//! there (the KMIP password, the client key). If a local user could change it, or swap a
//! file it names, they could have root send a root-only file to a server of their choice.
//! So before a byte is used:
//! - the file is opened without blocking (a FIFO cannot stall the daemon) and checked on
//!   the open descriptor, so what is checked is what is read: a regular file, at most
//!   [`MAX_FILE_LEN`] bytes, owned by root or by the user atrest runs as, not writable by
//!   group or others;
//! - secrets (passphrase, password, private key, PKCS#12) must not be readable by group or
//!   others either;
//! - the configuration's folder (against which relative paths resolve) must be owned by
//!   root or that user and not writable by others, unless it is sticky (as `/tmp`), where
//!   others cannot replace what is ours;
//! - the read runs under a deadline ([`READ_DEADLINE`]), so a hung network filesystem is
//!   an error, not a daemon that never starts.

use std::fs::{File, Metadata, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::time::Duration;

use zeroize::Zeroizing;

use crate::config::ConfigError;

/// Largest file read (a configuration, a certificate chain, a PKCS#12 bundle are all far
/// smaller; `/dev/zero` or a log named by mistake is not read into memory).
pub const MAX_FILE_LEN: u64 = 1 << 20;
/// How long reading one file may take.
pub const READ_DEADLINE: Duration = Duration::from_secs(5);

/// What a file is trusted for, which decides the checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The configuration itself, or a public file it names (CA, certificate): nobody but
    /// its owner may change it.
    Trusted,
    /// A secret: nobody but its owner may read it either.
    Secret,
}

fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

fn egid() -> u32 {
    rustix::process::getegid().as_raw()
}

fn owner_ok(uid: u32) -> bool {
    uid == 0 || uid == euid()
}

fn kind_of(m: &Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = m.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

/// The first folder on the way to `dir` (itself included) that a user other than root or
/// the one atrest runs as could change: owned by another user, or writable by group or
/// others without the sticky bit. Every ancestor counts, not only the last folder: whoever
/// can rename a folder anywhere above can put a tree of their own in its place (found by an
/// outside run: a 0700 folder inside a 0777 one was accepted). Both the path as written and
/// the one its symbolic links lead to are checked.
pub fn untrusted_folder_on_path(dir: &Path) -> Option<(std::path::PathBuf, String)> {
    let abs = if dir.is_absolute() {
        dir.to_owned()
    } else {
        std::env::current_dir().ok()?.join(dir)
    };
    let mut folders: Vec<std::path::PathBuf> = abs.ancestors().map(Path::to_owned).collect();
    if let Ok(real) = std::fs::canonicalize(&abs) {
        folders.extend(real.ancestors().map(Path::to_owned));
    }
    for f in folders {
        let Ok(m) = std::fs::metadata(&f) else {
            continue;
        };
        if !owner_ok(m.uid()) {
            return Some((f, format!("owned by user {}", m.uid())));
        }
        let mode = m.mode();
        if mode & 0o022 != 0 && mode & 0o1000 == 0 {
            let who = if mode & 0o002 != 0 {
                "everyone"
            } else {
                "its group"
            };
            return Some((f, format!("writable by {who} (mode {:o})", mode & 0o7777)));
        }
    }
    None
}

/// Checks the folder relative paths of a configuration at `path` resolve against.
pub fn check_folder(path: &Path) -> Result<(), ConfigError> {
    let dir = match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(d) => d.to_owned(),
        None => std::env::current_dir().map_err(|source| ConfigError::Read {
            what: "configuration folder",
            path: path.to_owned(),
            error: source,
        })?,
    };
    let m = std::fs::metadata(&dir).map_err(|source| ConfigError::Read {
        what: "configuration folder",
        path: dir.clone(),
        error: source,
    })?;
    let untrusted = |why: String| ConfigError::Untrusted {
        what: "configuration folder",
        path: dir.clone(),
        why,
    };
    if !owner_ok(m.uid()) {
        return Err(untrusted(format!(
            "it belongs to user {}, not to root or the user atrest runs as ({}): its owner could replace the files the configuration names",
            m.uid(),
            euid()
        )));
    }
    let sticky = m.mode() & 0o1000 != 0;
    if m.mode() & 0o022 != 0 && !sticky {
        return Err(untrusted(format!(
            "it is writable by group or others (mode {:03o}): they could replace the files the configuration names; keep the configuration in a folder only its owner can change",
            m.mode() & 0o777
        )));
    }
    if let Some((above, why)) = untrusted_folder_on_path(&dir) {
        return Err(untrusted(format!(
            "the folder {} above it is {why}: whoever can change it could replace this whole folder and the files the configuration names",
            above.display()
        )));
    }
    Ok(())
}

/// Reads `path` (what it is for: `what`) after the checks its `role` needs.
pub fn read(
    what: &'static str,
    path: &Path,
    role: Role,
) -> Result<Zeroizing<Vec<u8>>, ConfigError> {
    let err = |source| ConfigError::Read {
        what,
        path: path.to_owned(),
        error: source,
    };
    // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer forever.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)
        .map_err(err)?;
    let m = file.metadata().map_err(err)?;
    if !m.file_type().is_file() {
        return Err(ConfigError::NotRegular {
            what,
            path: path.to_owned(),
            kind: kind_of(&m),
        });
    }
    if m.len() > MAX_FILE_LEN {
        return Err(ConfigError::TooLarge {
            what,
            path: path.to_owned(),
            len: m.len(),
            max: MAX_FILE_LEN,
        });
    }
    let untrusted = |why: String| ConfigError::Untrusted {
        what,
        path: path.to_owned(),
        why,
    };
    if !owner_ok(m.uid()) {
        return Err(untrusted(format!(
            "it belongs to user {}, not to root or the user atrest runs as ({}): that user could change it",
            m.uid(),
            euid()
        )));
    }
    let mode = m.mode() & 0o777;
    if mode & 0o022 != 0 {
        return Err(untrusted(format!(
            "it is writable by group or others (mode {mode:03o}): whoever can change it could point atrest at another key server or at another file"
        )));
    }
    if role == Role::Secret && mode & 0o077 != 0 {
        // Suggest the chmod only for a file that is plainly atrest's own: ours, and not
        // shared with a group of its own (as /etc/shadow is with group shadow).
        let own_group = m.gid() == egid() || m.gid() == 0;
        let hint = if m.uid() == euid() && own_group {
            format!("run: chmod 600 {}", path.display())
        } else {
            format!(
                "it is shared with group {}: if it is not a file made for atrest, the configuration names the wrong file; give atrest a file of its own that only its owner can read",
                m.gid()
            )
        };
        return Err(ConfigError::SecretTooOpen {
            what,
            path: path.to_owned(),
            mode,
            hint,
        });
    }
    read_with_deadline(what, path, file, m.len())
}

fn read_with_deadline(
    what: &'static str,
    path: &Path,
    file: File,
    len: u64,
) -> Result<Zeroizing<Vec<u8>>, ConfigError> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Zeroizing::new(Vec::with_capacity(len as usize));
        // One byte past the limit tells a file that grew since the check.
        let r = (&file)
            .take(MAX_FILE_LEN + 1)
            .read_to_end(&mut buf)
            .map(|_| buf);
        let _ = tx.send(r);
    });
    match rx.recv_timeout(READ_DEADLINE) {
        Ok(Ok(buf)) if buf.len() as u64 > MAX_FILE_LEN => Err(ConfigError::TooLarge {
            what,
            path: path.to_owned(),
            len: buf.len() as u64,
            max: MAX_FILE_LEN,
        }),
        Ok(Ok(buf)) => Ok(buf),
        Ok(Err(error)) => Err(ConfigError::Read {
            what,
            path: path.to_owned(),
            error,
        }),
        Err(_) => Err(ConfigError::Read {
            what,
            path: path.to_owned(),
            error: std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no data within {} s", READ_DEADLINE.as_secs()),
            ),
        }),
    }
}
