//! The audit log: one JSON line for every key operation and every state change of a
//! volume (time, volume, server, operation, key identifier, result, latency), never a key
//! byte. The file is created mode 0600 (its folder 0700) and appended to; each line is
//! written whole with one write, so a crash loses at most the line being written, and a
//! write the file system refuses is never silent (see [`Audit`]).

use std::fs::File;
use std::io::Write;
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
    /// Who asked, for what came through the web page: `user@address`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<&'a str>,
}

/// Opens `path` for appending with the checks of [`crate::runtime_path::open_append`]: a
/// trusted folder (made 0700 if missing), no symlink, no FIFO, a file of the daemon's own.
fn append_to(path: &Path) -> Result<File, ServiceError> {
    Ok(crate::runtime_path::open_append(path, "audit log")?)
}

/// Now, as the audit log writes times.
pub fn now() -> String {
    let t = time::OffsetDateTime::now_utc();
    let fmt = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    t.format(&fmt).unwrap_or_default()
}

/// Lines kept in memory while the file cannot be written, at most (then counted as lost,
/// and the count is written once the file takes lines again).
const MAX_PENDING_LINES: usize = 10_000;
/// Bytes kept in memory while the file cannot be written, at most.
const MAX_PENDING_BYTES: usize = 4 << 20;
/// How often a failing audit log is reported at ERROR (the first failure always is).
const ERROR_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// Whether the audit log takes lines, as the status reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct AuditHealth {
    /// Every line so far is in the file.
    pub ok: bool,
    /// Writes that failed since the daemon started.
    pub failed_writes: u64,
    /// Lines waiting in memory for the file to take them.
    pub pending: usize,
    /// Lines lost because too many were waiting (their count is written when the file
    /// works again).
    pub lost: u64,
    /// The last error, while failing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Since when it fails (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failing_since: Option<String>,
}

#[derive(Debug)]
struct Sink {
    file: File,
    /// Lines not yet in the file, oldest first.
    pending: std::collections::VecDeque<Vec<u8>>,
    pending_bytes: usize,
    /// The file may end in a torn line (a write cut short that could not be undone): cut
    /// back to the last newline before the next write.
    torn: bool,
    health: AuditHealth,
    last_error_log: Option<std::time::Instant>,
}

/// The audit log (or nothing, when none is configured).
///
/// Records stay whole: a line is written with one `write` at the end of the file (one
/// writer, under a mutex); a short or failed write is undone by cutting the file back to
/// its length before it, and if even that fails the torn tail is cut at the next write. A
/// line that cannot be written waits in memory (bounded) and is retried before every new
/// line and by [`Audit::retry`]; failures are counted in [`Audit::health`] (the daemon's
/// status) and logged at ERROR.
#[derive(Debug)]
pub struct Audit {
    sink: Option<Mutex<Sink>>,
    path: Option<PathBuf>,
    /// The same entries to a syslog collector, when one is configured.
    syslog: Option<crate::syslog::Syslog>,
}

impl Audit {
    /// No log: entries are dropped (commands run outside the daemon).
    pub fn none() -> Self {
        Self {
            sink: None,
            path: None,
            syslog: None,
        }
    }

    /// Appends to `path`, creating it (0600) and its folder (0700) if missing.
    pub fn open(path: &Path) -> Result<Self, ServiceError> {
        let file = append_to(path)?;
        let mut sink = Sink {
            file,
            pending: Default::default(),
            pending_bytes: 0,
            // A crash mid-line (or an earlier daemon that could not undo a short write)
            // may have left a torn last line.
            torn: true,
            health: AuditHealth {
                ok: true,
                ..Default::default()
            },
            last_error_log: None,
        };
        sink.repair();
        Ok(Self {
            sink: Some(Mutex::new(sink)),
            path: Some(path.to_owned()),
            syslog: None,
        })
    }

    /// Sends every entry from now on to `syslog` as well.
    pub fn forward_to(&mut self, syslog: crate::syslog::Syslog) {
        self.syslog = Some(syslog);
    }

    /// How syslog forwarding stands, when configured.
    pub fn syslog_health(&self) -> Option<crate::syslog::SyslogHealth> {
        self.syslog.as_ref().map(crate::syslog::Syslog::health)
    }

    fn sink(&self) -> Option<std::sync::MutexGuard<'_, Sink>> {
        self.sink
            .as_ref()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Opens the file at the same path again, so that a log rotated away (renamed by
    /// logrotate, then SIGHUP) is not written to any more; lines waiting go to the new one.
    pub fn reopen(&self) -> Result<(), ServiceError> {
        if let (Some(mut s), Some(path)) = (self.sink(), &self.path) {
            s.file = append_to(path)?;
            s.torn = true;
            s.repair();
            s.flush();
        }
        Ok(())
    }

    /// Where it writes.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Whether every line is in the file (none configured counts as healthy).
    pub fn health(&self) -> AuditHealth {
        match self.sink() {
            Some(s) => s.health.clone(),
            None => AuditHealth {
                ok: true,
                ..Default::default()
            },
        }
    }

    /// Tries again to write the lines waiting (the daemon calls this periodically).
    pub fn retry(&self) {
        if let Some(mut s) = self.sink() {
            if !s.pending.is_empty() {
                s.flush();
            }
        }
    }

    /// Writes one entry; a line the file does not take waits in memory and is retried. The
    /// daemon keeps serving either way: the failure is in the status and the log.
    pub fn record(&self, e: &Entry<'_>) {
        if let Some(f) = &self.syslog {
            f.send(e);
        }
        let Some(mut s) = self.sink() else { return };
        let mut line = serde_json::to_vec(e).unwrap_or_default();
        line.push(b'\n');
        s.push(line);
        s.flush();
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
            source: None,
        });
    }

    /// Something done (or refused) on the web page: a login, a failed login, a change,
    /// an action on a volume; `source` names who and from where.
    pub fn admin(
        &self,
        source: &str,
        volume: Option<&str>,
        operation: &str,
        result: impl Into<String>,
    ) {
        self.record(&Entry {
            time: now(),
            volume,
            server: None,
            operation,
            key_uid: None,
            result: result.into(),
            latency_ms: None,
            source: Some(source),
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
            source: None,
        });
    }
}

impl Sink {
    fn push(&mut self, line: Vec<u8>) {
        if self.pending.len() >= MAX_PENDING_LINES
            || self.pending_bytes + line.len() > MAX_PENDING_BYTES
        {
            self.health.lost += 1;
            return;
        }
        self.pending_bytes += line.len();
        self.pending.push_back(line);
    }

    /// Cuts a torn tail back to the last newline. The log is open write-only (append), so
    /// its tail is read through a second descriptor of the same file; an audit line is far
    /// shorter than the 1 MiB looked at, and a tail with no newline in it is cut whole.
    fn repair(&mut self) {
        use std::os::unix::fs::FileExt;
        if !self.torn {
            return;
        }
        let Ok(len) = self.file.metadata().map(|m| m.len()) else {
            return;
        };
        let fd = std::os::fd::AsRawFd::as_raw_fd(&self.file);
        let Ok(reader) = File::open(format!("/proc/self/fd/{fd}")) else {
            return;
        };
        let from = len.saturating_sub(1 << 20);
        let mut tail = vec![0u8; (len - from) as usize];
        if reader.read_exact_at(&mut tail, from).is_err() {
            return;
        }
        let keep = match tail.iter().rposition(|&b| b == b'\n') {
            Some(i) => from + i as u64 + 1,
            None => from,
        };
        if keep == len || self.file.set_len(keep).is_ok() {
            if keep != len {
                log::warn!("audit log: cut a torn last line ({} bytes)", len - keep);
            }
            self.torn = false;
        }
    }

    /// Writes the waiting lines, oldest first, each whole or not at all.
    fn flush(&mut self) {
        self.repair();
        if self.torn {
            return self.failed("a torn last line could not be cut".into());
        }
        while let Some(line) = self.pending.pop_front() {
            match self.write_whole(&line) {
                Ok(()) => self.pending_bytes -= line.len(),
                Err(e) => {
                    self.pending.push_front(line);
                    return self.failed(e.to_string());
                }
            }
        }
        self.health.pending = 0;
        if !self.health.ok {
            let lost = self.health.lost;
            log::warn!(
                "audit log: writing again after {} failed write(s){}",
                self.health.failed_writes,
                if lost > 0 {
                    format!("; {lost} line(s) were lost")
                } else {
                    String::new()
                }
            );
            if lost > 0 {
                let e = Entry {
                    time: now(),
                    volume: None,
                    server: None,
                    operation: "audit_lost",
                    key_uid: None,
                    result: format!("{lost} audit line(s) could not be written and were lost"),
                    latency_ms: None,
                    source: None,
                };
                let mut line = serde_json::to_vec(&e).unwrap_or_default();
                line.push(b'\n');
                if self.write_whole(&line).is_ok() {
                    self.health.lost = 0;
                }
            }
            self.health.ok = true;
            self.health.error = None;
            self.health.failing_since = None;
        }
    }

    /// One write of `line` at the end; a short write is undone.
    fn write_whole(&mut self, line: &[u8]) -> std::io::Result<()> {
        let before = self.file.metadata()?.len();
        let r = self.file.write(line);
        match r {
            Ok(n) if n == line.len() => Ok(()),
            Ok(n) => {
                self.undo(before);
                Err(std::io::Error::new(
                    std::io::ErrorKind::WriteZero,
                    format!(
                        "only {n} of {} bytes written (file system full?)",
                        line.len()
                    ),
                ))
            }
            Err(e) => {
                self.undo(before);
                Err(e)
            }
        }
    }

    fn undo(&mut self, len: u64) {
        if self.file.metadata().is_ok_and(|m| m.len() == len) {
            return;
        }
        if self.file.set_len(len).is_err() {
            self.torn = true;
        }
    }

    fn failed(&mut self, error: String) {
        self.health.failed_writes += 1;
        if self.health.ok {
            self.health.ok = false;
            self.health.failing_since = Some(now());
        }
        let log_now = self
            .last_error_log
            .is_none_or(|t| t.elapsed() >= ERROR_LOG_INTERVAL);
        if log_now {
            self.last_error_log = Some(std::time::Instant::now());
            log::error!(
                "audit log: cannot write ({error}); {} line(s) wait in memory, {} lost; the daemon keeps serving and retries",
                self.pending.len(),
                self.health.lost
            );
        }
        self.health.error = Some(error);
        self.health.pending = self.pending.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real full file system: a 64 KiB tmpfs (the tests run as root, as CI does).
    struct Tmpfs(tempfile::TempDir);

    impl Tmpfs {
        fn new() -> Self {
            let d = tempfile::tempdir().unwrap();
            let ok = std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs"])
                .arg(d.path())
                .status()
                .unwrap();
            assert!(ok.success(), "mounting a tmpfs (needs root, as CI has)");
            Self(d)
        }
    }

    impl Tmpfs {
        /// Fills the file system to the last KiB; the filler's path, to free it again.
        fn fill(&self) -> PathBuf {
            let filler = self.0.path().join("filler");
            let mut f = File::create(&filler).unwrap();
            while f.write_all(&[b'x'; 1024]).is_ok() {}
            filler
        }
    }

    impl Drop for Tmpfs {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg(self.0.path())
                .status();
        }
    }

    fn lines_parse(path: &Path) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(path).unwrap();
        assert!(text.is_empty() || text.ends_with('\n'), "a torn last line");
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
            .collect()
    }

    /// Issue 19, item 3: on a full file system no line is torn, the failure shows in the
    /// health, and once there is room again the waiting lines (the "locked" event of the
    /// outside run) are written, in order.
    #[test]
    fn a_full_file_system_tears_no_line_and_loses_none_silently() {
        let fs = Tmpfs::new();
        let path = fs.0.path().join("audit.jsonl");
        let audit = Audit::open(&path).unwrap();
        let filler = fs.fill();
        let long = "r".repeat(3000);
        for i in 0..5 {
            audit.event(
                Some("vol"),
                "locked",
                Some(&format!("key-{i}")),
                long.clone(),
            );
        }
        let h = audit.health();
        assert!(!h.ok && h.failed_writes > 0 && h.pending > 0, "{h:?}");
        assert!(h.error.as_deref().unwrap_or("").contains("space") || h.error.is_some());
        let written = lines_parse(&path);
        std::fs::remove_file(&filler).unwrap();
        audit.retry();
        let h = audit.health();
        assert!(h.ok && h.pending == 0, "{h:?}");
        let all = lines_parse(&path);
        assert_eq!(all.len(), 5, "{} before the retry", written.len());
        for (i, l) in all.iter().enumerate() {
            assert_eq!(l["key_uid"], format!("key-{i}"), "in order");
        }
    }

    /// A torn last line left by a crash (or an older atrest) is cut when the log opens.
    #[test]
    fn a_torn_last_line_is_cut_on_open() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("audit.jsonl");
        std::fs::write(&path, b"{\"operation\":\"a\"}\n{\"operation\":\"lock").unwrap();
        let audit = Audit::open(&path).unwrap();
        audit.event(None, "started", None, "ok");
        let all = lines_parse(&path);
        assert_eq!(all.len(), 2);
        assert_eq!(all[1]["operation"], "started");
    }

    /// Lines beyond the memory bound are counted, and the count is written when the file
    /// takes lines again.
    #[test]
    fn lines_lost_beyond_the_bound_are_counted_and_reported() {
        let fs = Tmpfs::new();
        let path = fs.0.path().join("audit.jsonl");
        let audit = Audit::open(&path).unwrap();
        let filler = fs.fill();
        for _ in 0..MAX_PENDING_LINES + 7 {
            audit.event(None, "x", None, "ok");
        }
        let h = audit.health();
        assert_eq!(h.lost, 7, "{h:?}");
        std::fs::remove_file(&filler).unwrap();
        // The tmpfs is too small for every waiting line: retry until all are out, moving
        // them aside as a log rotation would.
        for _ in 0..10_000 {
            audit.retry();
            if audit.health().ok {
                break;
            }
            std::fs::remove_file(&path).unwrap();
            audit.reopen().unwrap();
        }
        assert!(audit.health().ok);
        let last = lines_parse(&path).pop().unwrap();
        assert_eq!(last["operation"], "audit_lost");
        assert!(last["result"].as_str().unwrap().starts_with("7 "));
    }
}
