//! The kernel's own mapping: stock `cryptsetup open` makes `/dev/mapper/NAME` with
//! dm-crypt, at full kernel speed, where device-mapper exists. atrest hands cryptsetup the
//! secret from KMIP on a pipe (never a file): in wrapped mode the KMIP secret is the
//! keyslot passphrase (`--key-file -`); in direct mode it is the volume key itself
//! (`--volume-key-file /dev/stdin`). The kernel then holds the key, as for any dm-crypt
//! volume.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use volume::volume::KeyMode;

use super::ExportError;
use crate::device::{Device, Location};
use crate::error::ServiceError;

/// An open mapping; closed (`cryptsetup close`) by [`DmMapping::close`] or on drop.
#[derive(Debug)]
pub struct DmMapping {
    name: String,
    open: bool,
}

impl DmMapping {
    /// `/dev/mapper/NAME`.
    pub fn device(&self) -> PathBuf {
        PathBuf::from("/dev/mapper").join(&self.name)
    }

    /// Removes the mapping (the kernel flushes it first). A mapping still in use (mounted,
    /// held open) cannot be closed; it is then forced: its table is replaced by one that
    /// fails every I/O, which takes the key out of the kernel at once, and the mapping goes
    /// when its last user lets go. The error then says so: the data was cut off, not
    /// flushed by its users.
    pub fn close(&mut self) -> Result<(), ServiceError> {
        if !self.open {
            return Ok(());
        }
        let closed = run(&close_arguments(&self.name, false));
        match closed {
            Ok(()) => {
                self.open = false;
                Ok(())
            }
            Err(busy) => {
                run(&close_arguments(&self.name, true)).map_err(|forced| ExportError::DmStuck {
                    busy: busy.to_string(),
                    forced: forced.to_string(),
                })?;
                self.open = false;
                Err(ExportError::DmForced {
                    busy: busy.to_string(),
                    name: self.name.clone(),
                }
                .into())
            }
        }
    }
}

impl Drop for DmMapping {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

/// The `cryptsetup` arguments that open `loc` as `name` with the secret on standard input
/// (`test`: only check that the secret opens it, `--test-passphrase`).
pub fn arguments(loc: &Location, name: &str, mode: KeyMode, test: bool) -> Vec<String> {
    let mut a: Vec<String> = vec!["open".into(), "--type".into(), "luks2".into()];
    if let Some(h) = &loc.header {
        a.extend(["--header".into(), h.display().to_string()]);
    }
    match mode {
        KeyMode::Wrapped => a.extend(["--key-file".into(), "-".into()]),
        KeyMode::Direct => a.extend([
            "--volume-key-file".into(),
            "/dev/stdin".into(),
            "--key-size".into(),
            "256".into(),
        ]),
    }
    if test {
        a.push("--test-passphrase".into());
    }
    a.push(loc.path.display().to_string());
    if !test {
        a.push(name.into());
    }
    a
}

/// The command that removes mapping `name`: `cryptsetup close`, or, `forced`, `dmsetup
/// remove --force` (an error table first, so the key leaves the kernel even while the
/// mapping is held open).
fn close_arguments(name: &str, forced: bool) -> Vec<String> {
    let command: &[&str] = if forced {
        &["dmsetup", "remove", "--force"]
    } else {
        &["cryptsetup", "close"]
    };
    command
        .iter()
        .chain([&name])
        .map(|w| w.to_string())
        .collect()
}

/// Runs a command with no input; its stderr in the error.
fn run(cmd: &[String]) -> Result<(), ServiceError> {
    let out = Command::new(&cmd[0])
        .args(&cmd[1..])
        .output()
        .map_err(|error| ServiceError::Io {
            what: "running",
            path: cmd[0].clone().into(),
            error,
        })?;
    if out.status.success() {
        return Ok(());
    }
    Err(ExportError::Command {
        command: cmd.join(" "),
        why: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
    }
    .into())
}

/// Runs cryptsetup with `secret` piped to it.
fn cryptsetup(args: &[String], secret: &[u8]) -> Result<(), ServiceError> {
    let io = |error| ServiceError::Io {
        what: "running",
        path: "cryptsetup".into(),
        error,
    };
    let mut child = Command::new("cryptsetup")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io)?;
    if let Some(mut stdin) = child.stdin.take() {
        // A cryptsetup that already failed may have closed the pipe; its exit says why.
        let _ = stdin.write_all(secret);
    }
    let out = child.wait_with_output().map_err(io)?;
    if out.status.success() {
        return Ok(());
    }
    let why = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    if why.contains("device-mapper") || why.contains("dm_mod") {
        return Err(ExportError::NoDeviceMapper(why).into());
    }
    Err(ExportError::Command {
        command: format!("cryptsetup {}", args[0]),
        why,
    }
    .into())
}

/// Opens the volume on `dev` as `/dev/mapper/NAME` with the KMIP `secret`: the secret is
/// proven against the header first (a wrong key never reaches cryptsetup), atrest's lock
/// on the device is released while cryptsetup takes its own, then taken again, so that no
/// conversion can start under the kernel's mapping. Returns the mapping and the device
/// that holds the lock.
pub fn open_proven(
    dev: Device,
    name: &str,
    mode: KeyMode,
    secret: &[u8],
) -> Result<(DmMapping, Device), ServiceError> {
    drop(crate::ops::open::unlock(&dev, secret)?);
    let loc = dev.location.clone();
    drop(dev);
    let mut mapping = open(&loc, name, mode, secret)?;
    match Device::open(&loc, false) {
        Ok(held) => Ok((mapping, held)),
        Err(e) => {
            // Someone took the device in between: the mapping must not outlive our lock.
            let _ = mapping.close();
            Err(e)
        }
    }
}

/// Opens `loc` as `/dev/mapper/NAME` with the KMIP `secret`.
pub fn open(
    loc: &Location,
    name: &str,
    mode: KeyMode,
    secret: &[u8],
) -> Result<DmMapping, ServiceError> {
    if name.is_empty() || name.contains('/') || name.len() > 127 {
        return Err(ExportError::DmName(name.to_owned()).into());
    }
    cryptsetup(&arguments(loc, name, mode, false), secret)?;
    Ok(DmMapping {
        name: name.into(),
        open: true,
    })
}

/// Checks, as `cryptsetup open` would with the same arguments, that `secret` opens `loc`.
pub fn test(loc: &Location, mode: KeyMode, secret: &[u8]) -> Result<(), ServiceError> {
    cryptsetup(&arguments(loc, "", mode, true), secret)
}

#[cfg(test)]
mod tests {
    use super::close_arguments;

    #[test]
    fn a_busy_mapping_is_forced_with_an_error_table() {
        assert_eq!(close_arguments("v", false), ["cryptsetup", "close", "v"]);
        assert_eq!(
            close_arguments("v", true),
            ["dmsetup", "remove", "--force", "v"]
        );
    }
}
