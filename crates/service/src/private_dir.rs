//! The folders atrest makes for what it writes (the audit log, the API socket): created
//! with mode 0700 from the start, so there is no moment when another user could open
//! them or put something inside.

use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use crate::error::ServiceError;

/// Makes the folder of `path` (and its missing parents) 0700 when it does not exist; an
/// existing folder is left as its owner set it. `what` names the folder in the error.
pub(crate) fn create_parent(path: &Path, what: &'static str) -> Result<(), ServiceError> {
    let Some(dir) = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty() && !d.exists())
    else {
        return Ok(());
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|error| ServiceError::Io {
            what,
            path: dir.to_owned(),
            error,
        })
}
