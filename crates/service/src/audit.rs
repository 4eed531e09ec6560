//! The audit log: one JSON line for every key operation and every state change of a
//! volume (time, volume, server, operation, key identifier, result, latency), never a key
//! byte. The file is created mode 0600 (its folder 0700) and appended to; each line is
//! written whole with one write, so a crash loses at most the line being written.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;

use crate::error::ServiceError;

/// One line.
#[derive(Debug, Clone, Serialize)]
pub struct Entry<'a> {
    /// RFC 3339, UTC, to the millisecond.
    pub time: String,
    /// The volume's name (none for daemon-wide events).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volume: Option<&'a str>,
    /// The KMIP server that answered, when a server was asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// What happened: get, get_attributes, create, activate, revoke, destroy; unlocked,
    /// locked, exported, converted, started, stopped ...
    pub operation: &'a str,
    /// The KMIP key concerned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_uid: Option<&'a str>,
    /// `ok`, or what went wrong.
    pub result: String,
    /// How long it took, for requests.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
}

/// Opens `path` for appending, creating it (0600) and its folder (0700) if missing; a
/// symlink in its place is refused.
fn append_to(path: &Path) -> Result<File, ServiceError> {
    crate::private_dir::create_parent(path, "creating the folder of the audit log")?;
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
        .map_err(|error| ServiceError::Io {
            what: "opening the audit log",
            path: path.to_owned(),
            error,
        })
}

/// Now, as the audit log writes times.
pub fn now() -> String {
    let t = time::OffsetDateTime::now_utc();
    let fmt = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    t.format(&fmt).unwrap_or_default()
}

/// The audit log (or nothing, when none is configured).
#[derive(Debug)]
pub struct Audit {
    file: Option<Mutex<File>>,
    path: Option<PathBuf>,
}

impl Audit {
    /// No log: entries are dropped (commands run outside the daemon).
    pub fn none() -> Self {
        Self {
            file: None,
            path: None,
        }
    }

    /// Appends to `path`, creating it (0600) and its folder (0700) if missing.
    pub fn open(path: &Path) -> Result<Self, ServiceError> {
        Ok(Self {
            file: Some(Mutex::new(append_to(path)?)),
            path: Some(path.to_owned()),
        })
    }

    /// Opens the file at the same path again, so that a log rotated away (renamed by
    /// logrotate, then SIGHUP) is not written to any more.
    pub fn reopen(&self) -> Result<(), ServiceError> {
        if let (Some(f), Some(path)) = (&self.file, &self.path) {
            let new = append_to(path)?;
            *f.lock().unwrap_or_else(|p| p.into_inner()) = new;
        }
        Ok(())
    }

    /// Where it writes.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Writes one entry; a failed write is logged, not fatal (the daemon keeps serving).
    pub fn record(&self, e: &Entry<'_>) {
        let Some(f) = &self.file else { return };
        let mut line = serde_json::to_vec(e).unwrap_or_default();
        line.push(b'\n');
        let mut f = f.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(err) = f.write_all(&line) {
            log::error!("audit log: {err}");
        }
    }

    /// A state change of `volume`.
    pub fn event(
        &self,
        volume: Option<&str>,
        operation: &str,
        key_uid: Option<&str>,
        result: impl Into<String>,
    ) {
        self.record(&Entry {
            time: now(),
            volume,
            server: None,
            operation,
            key_uid,
            result: result.into(),
            latency_ms: None,
        });
    }

    /// A request to a key server.
    pub fn request(
        &self,
        volume: Option<&str>,
        server: Option<String>,
        operation: &str,
        key_uid: Option<&str>,
        result: impl Into<String>,
        latency: Duration,
    ) {
        self.record(&Entry {
            time: now(),
            volume,
            server,
            operation,
            key_uid,
            result: result.into(),
            latency_ms: Some((latency.as_secs_f64() * 10_000.0).round() / 10.0),
        });
    }
}
