//! What the daemon knows about each volume, as the control API reports it, and the event
//! feed (state changes and conversion progress) that `atrest ctl` and the web page follow.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::feed::{Event, Logged};
use volume::convert::Kind;

/// Where a volume stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Reading the header.
    Starting,
    /// No key server answered yet; retrying (see `reason`, `next_retry_secs`).
    Waiting,
    /// A conversion runs (resumed at start, or a job from the API).
    Converting,
    /// Unlocked and exported.
    Unlocked,
    /// Kept locked: the key is not Active on the server, or an operator locked it.
    Locked,
    /// Plaintext (not an atrest volume): nothing to unlock; `encrypt` through the API.
    Plaintext,
    /// Cannot be served: see `reason` (a damaged header, an export that cannot start).
    Failed,
    /// The daemon stopped serving it.
    Stopped,
}

impl State {
    /// The name the API and the logs use (as serialised).
    pub fn name(self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Waiting => "waiting",
            State::Converting => "converting",
            State::Unlocked => "unlocked",
            State::Locked => "locked",
            State::Plaintext => "plaintext",
            State::Failed => "failed",
            State::Stopped => "stopped",
        }
    }
}

/// A conversion's progress.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// What runs.
    pub kind: Kind,
    /// Bytes done.
    pub done: u64,
    /// Bytes in all.
    pub total: u64,
    /// Bytes a second since this run of the job started (none in its first second).
    #[serde(default)]
    pub bytes_per_sec: Option<f64>,
    /// Seconds left at that rate.
    #[serde(default)]
    pub eta_secs: Option<f64>,
}

impl Progress {
    /// Progress at `done` of `total`, `done_at_start` bytes having been done when this run
    /// of the job began `elapsed` ago (a resumed job's earlier bytes are not counted in
    /// its rate).
    pub fn measured(
        kind: Kind,
        done: u64,
        total: u64,
        done_at_start: u64,
        elapsed: Duration,
    ) -> Self {
        let secs = elapsed.as_secs_f64();
        let rate =
            (secs >= 1.0 && done > done_at_start).then(|| (done - done_at_start) as f64 / secs);
        Self {
            kind,
            done,
            total,
            bytes_per_sec: rate,
            eta_secs: rate.map(|r| total.saturating_sub(done) as f64 / r),
        }
    }

    /// Percent done, 0 to 100.
    pub fn percent(&self) -> f64 {
        if self.total == 0 {
            100.0
        } else {
            self.done as f64 * 100.0 / self.total as f64
        }
    }
}

/// The newest conversion job of a volume and how it stands (a failure stays visible after
/// the volume went back to its earlier state).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastJob {
    /// Which conversion.
    pub operation: Kind,
    /// How it stands.
    pub result: super::feed::JobResult,
    /// The outcome in words.
    pub message: Option<String>,
    /// When it got there (RFC 3339).
    pub time: String,
}

/// One export of an unlocked volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Export {
    /// nbd, fuse or dm.
    pub kind: String,
    /// Where: an NBD URI, the FUSE file, the mapped device.
    pub at: String,
}

/// The last key-state check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyCheck {
    /// When (RFC 3339).
    pub time: String,
    /// The key's state as the server reported it, or why no answer came.
    pub result: String,
    /// The server that answered.
    pub server: Option<String>,
}

/// A volume, as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VolumeStatus {
    /// Its name in the configuration.
    pub name: String,
    /// The data device.
    pub path: String,
    /// The state.
    pub state: State,
    /// Why it is waiting, locked or failed.
    pub reason: Option<String>,
    /// Since when (RFC 3339).
    pub since: String,
    /// The KMIP key's identifier, once read from the header.
    pub key_uid: Option<String>,
    /// The cipher by its standard name (`XTS-AES-128`), once read from the header.
    #[serde(default)]
    pub cipher: Option<String>,
    /// `wrapped` (the KMIP key opens a keyslot: a rewrap rotates it) or `direct` (the KMIP
    /// key is the volume key: only a deep rekey rotates it).
    #[serde(default)]
    pub key_mode: Option<String>,
    /// A conversion's progress.
    pub progress: Option<Progress>,
    /// The exports while unlocked.
    pub exports: Vec<Export>,
    /// The last key-state check.
    pub last_key_check: Option<KeyCheck>,
    /// The key server that last answered.
    pub server: Option<String>,
    /// The last failure to reach a key server while serving (the volume keeps serving).
    pub server_error: Option<String>,
    /// A problem with the data device while serving (the image was deleted).
    pub device_error: Option<String>,
    /// Seconds until the next attempt, while waiting.
    pub next_retry_secs: Option<f64>,
    /// Attempts made while waiting.
    pub attempts: u32,
    /// The newest conversion job.
    #[serde(default)]
    pub last_job: Option<LastJob>,
}

impl VolumeStatus {
    /// A volume about to start.
    pub fn new(name: &str, path: &str) -> Self {
        Self {
            name: name.into(),
            path: path.into(),
            state: State::Starting,
            reason: None,
            since: crate::audit::now(),
            key_uid: None,
            cipher: None,
            key_mode: None,
            progress: None,
            exports: Vec::new(),
            last_key_check: None,
            server: None,
            server_error: None,
            device_error: None,
            next_retry_secs: None,
            attempts: 0,
            last_job: None,
        }
    }

    /// True once the volume is past its first attempt: unlocked, or saying why not
    /// (waiting for a key server, locked, failed), or converting with its progress shown
    /// (`sd_notify` READY). A conversion resumed at boot may run for hours; holding READY
    /// back for it would have systemd kill the daemon at its start timeout.
    pub fn settled(&self) -> bool {
        self.state != State::Starting
    }
}

/// The feed of events, numbered, the newest kept (bounded: a client that falls behind
/// misses the oldest, and says so by the gap in the numbers).
pub struct Events {
    inner: Mutex<(u64, VecDeque<Logged>)>,
    more: Condvar,
}

/// Events kept for clients that follow the feed.
const KEPT: usize = 1000;

impl Default for Events {
    fn default() -> Self {
        Self {
            inner: Mutex::new((1, VecDeque::new())),
            more: Condvar::new(),
        }
    }
}

impl Events {
    /// Adds an event, numbered and timed.
    pub fn push(&self, event: Event) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let seq = g.0;
        g.0 += 1;
        g.1.push_back(Logged {
            seq,
            time: crate::audit::now(),
            event,
        });
        while g.1.len() > KEPT {
            g.1.pop_front();
        }
        drop(g);
        self.more.notify_all();
    }

    /// The events numbered above `after`, waiting up to `wait` for one to arrive; and the
    /// number to ask after next time.
    pub fn after(&self, after: u64, wait: Duration) -> (Vec<Logged>, u64) {
        let deadline = Instant::now() + wait;
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let out: Vec<Logged> = g.1.iter().filter(|e| e.seq > after).cloned().collect();
            let left = deadline.saturating_duration_since(Instant::now());
            if !out.is_empty() || left.is_zero() {
                return (out, g.0 - 1);
            }
            g = self
                .more
                .wait_timeout(g, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::State;

    #[test]
    fn state_names_are_the_serialised_ones() {
        for s in [
            State::Starting,
            State::Waiting,
            State::Converting,
            State::Unlocked,
            State::Locked,
            State::Plaintext,
            State::Failed,
            State::Stopped,
        ] {
            assert_eq!(serde_json::to_value(s).unwrap(), s.name());
        }
    }
}
