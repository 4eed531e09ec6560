//! Files the page writes: its own certificate and the KMIP settings an operator saves.
//! Each is written whole under a new name (created, never opened through a link that an
//! attacker placed) and put in place by a rename, so a crash leaves the old file or the new
//! one, never half of either.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::error::AdminError;

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> AdminError + 'a {
    move |error| AdminError::Io {
        what,
        path: path.to_owned(),
        error,
    }
}

/// Creates `path` (which must not exist: `O_EXCL` refuses a planted link too) with `mode`,
/// writes `bytes` and syncs it.
pub fn create(path: &Path, bytes: &[u8], mode: u32) -> Result<(), AdminError> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io("creating", path))?;
    // The umask may have taken bits off; never added any.
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(io("restricting", path))?;
    f.write_all(bytes).map_err(io("writing", path))?;
    f.sync_all().map_err(io("syncing", path))
}

/// Replaces `path` by a file holding `bytes`, with the old file's mode (or `mode` when
/// there was none), through a temporary beside it and a rename; the folder is synced so
/// the rename survives a power cut.
pub fn replace(path: &Path, bytes: &[u8], mode: u32) -> Result<(), AdminError> {
    let mode = std::fs::symlink_metadata(path)
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or(mode);
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(
        ".{name}.{}.new",
        crate::sessions::token()[..12].to_owned()
    ));
    create(&tmp, bytes, mode)?;
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(io("replacing", path)(e));
    }
    sync_dir(dir)
}

/// Makes the folder `path` (0700, whatever the umask); an existing one is accepted when
/// `existing` and made 0700 too.
pub fn private_folder(path: &Path, existing: bool) -> Result<(), AdminError> {
    if !(existing && path.exists()) {
        std::fs::create_dir(path).map_err(io("creating", path))?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
        .map_err(io("restricting", path))
}

/// Syncs a folder (its entries: a rename or a new file in it).
pub fn sync_dir(dir: &Path) -> Result<(), AdminError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("syncing the folder", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_refuses_an_existing_name_and_a_planted_link() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        create(&p, b"one", 0o600).unwrap();
        assert!(create(&p, b"two", 0o600).is_err());
        assert_eq!(std::fs::read(&p).unwrap(), b"one");
        let target = d.path().join("target");
        std::fs::write(&target, b"keep").unwrap();
        let link = d.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(create(&link, b"evil", 0o600).is_err());
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
        let m = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(m, 0o600);
    }

    #[test]
    fn replace_keeps_the_mode_and_leaves_no_temporary() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("atrest.toml");
        create(&p, b"old", 0o640).unwrap();
        replace(&p, b"new", 0o600).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o640
        );
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }
}
