//! A volume's devices, opened and locked: the data (an image file or block device) and,
//! for a volume whose header lives apart (cryptsetup's `--header`), the header file. Every
//! operation that writes takes the exclusive lock (`volume::backend`), so a format, a
//! conversion and an export of one device never run at once; `status` takes none.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use volume::backend::{Access, BlockBackend, FileBackend};
use volume::convert::Devices;
use volume::volume::{Status, VolumeError};

use crate::error::ServiceError;

/// Where a volume is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Location {
    /// The image file or block device.
    pub path: PathBuf,
    /// The detached header file, if the volume has one.
    pub header: Option<PathBuf>,
}

/// The devices, locked for as long as this lives.
pub struct Device {
    /// The data device (shared with an unlocked volume while it is open).
    pub data: Arc<FileBackend>,
    /// The detached header, if any.
    pub header: Option<FileBackend>,
    /// Where they are.
    pub location: Location,
}

impl Device {
    /// Opens and locks the devices of `loc`; with `create_header`, a missing header file
    /// is made (16 MiB, mode 0600), for `encrypt --header`.
    pub fn open(loc: &Location, create_header: bool) -> Result<Self, ServiceError> {
        let data = Arc::new(FileBackend::open(&loc.path, Access::Exclusive)?);
        let header = match &loc.header {
            None => None,
            Some(h) => Some(open_header(h, create_header)?),
        };
        Ok(Self {
            data,
            header,
            location: loc.clone(),
        })
    }

    /// [`Self::open`]; with `plaintext_ok` (`serve_plaintext`), a detached header file
    /// that does not exist (yet) is left unopened: a plaintext volume served before its
    /// encrypt. Without it, a missing header file is the error it always was: the disk
    /// alone cannot tell "not encrypted yet" from "header lost".
    pub fn open_for_serving(loc: &Location, plaintext_ok: bool) -> Result<Self, ServiceError> {
        match &loc.header {
            Some(h) if plaintext_ok && !h.exists() => Ok(Self {
                data: Arc::new(FileBackend::open(&loc.path, Access::Exclusive)?),
                header: None,
                location: loc.clone(),
            }),
            _ => Self::open(loc, false),
        }
    }

    /// Opens (creating it, 16 MiB, 0600) the detached header file that
    /// [`Self::open_for_serving`] left unopened. No-op without one or when open.
    pub fn open_header(&mut self) -> Result<(), ServiceError> {
        if let (Some(h), None) = (&self.location.header, &self.header) {
            self.header = Some(open_header(h, true)?);
        }
        Ok(())
    }

    /// True when the configuration names a detached header, whether or not it is open.
    pub fn has_detached_header(&self) -> bool {
        self.location.header.is_some()
    }

    /// The devices as a conversion sees them.
    pub fn devices(&self) -> Devices<'_> {
        match &self.header {
            Some(h) => Devices::detached(h, self.data.as_ref()),
            None => Devices::attached(self.data.as_ref()),
        }
    }

    /// The header's facts.
    pub fn status(&self) -> Result<Status, VolumeError> {
        match &self.header {
            Some(h) => volume::volume::status_detached(h, self.data.as_ref()),
            None => volume::volume::status(self.data.as_ref()),
        }
    }

    /// The data device's file name, for naming keys.
    pub fn name(&self) -> String {
        self.location
            .path
            .file_name()
            .map_or_else(|| "volume".into(), |n| n.to_string_lossy().into_owned())
    }
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> ServiceError + 'a {
    move |error| ServiceError::Io {
        what,
        path: path.to_owned(),
        error,
    }
}

fn open_header(path: &Path, create: bool) -> Result<FileBackend, ServiceError> {
    let mut o = OpenOptions::new();
    o.read(true).write(true);
    if create {
        o.create(true).mode(0o600);
    }
    let file = o.open(path).map_err(io("opening the header file", path))?;
    let b = FileBackend::lock(file, path, Access::Exclusive)?;
    let size = volume::layout::DATA_OFFSET;
    if b.len().map_err(io("reading the header file", path))? < size {
        if !create {
            return Err(crate::refusal::Refusal::NotAHeaderFile {
                path: path.to_owned(),
                size,
            }
            .into());
        }
        b.set_len(size)
            .map_err(io("making the header file", path))?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io("syncing the folder", dir))?;
        }
    }
    Ok(b)
}

/// The devices of `loc` opened read-only without a lock (for `status`, which must work
/// while a volume is served).
pub fn open_for_reading(
    loc: &Location,
) -> Result<(FileBackend, Option<FileBackend>), ServiceError> {
    let data = File::open(&loc.path).map_err(io("opening", &loc.path))?;
    let header = match &loc.header {
        Some(h) => Some(FileBackend::new(
            File::open(h).map_err(io("opening the header file", h))?,
        )),
        None => None,
    };
    Ok((FileBackend::new(data), header))
}
