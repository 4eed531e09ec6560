//! Log lines about unauthenticated peers (refused, evicted, timed out, failed handshakes):
//! at most one per [`REFUSAL_LOG_INTERVAL`] per kind, each saying how many more there were
//! since the last, so a flood of connections cannot fill the disk with log lines.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Refusals, evictions and failed handshakes are logged at most this often, with a count.
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Shared by the accept loop, the connection threads and the reaper.
#[derive(Default)]
pub(crate) struct RateLimitedLog {
    kinds: Mutex<HashMap<&'static str, (Option<Instant>, u64)>>,
}

impl RateLimitedLog {
    /// Logs one event of `kind`, or counts it if a line of this kind went out less than
    /// [`REFUSAL_LOG_INTERVAL`] ago.
    pub(crate) fn warn(&self, kind: &'static str, detail: impl FnOnce() -> String) {
        self.warn_n(kind, 1, detail);
    }

    /// The same for `count` events at once (a reap may close several connections).
    pub(crate) fn warn_n(&self, kind: &'static str, count: u64, detail: impl FnOnce() -> String) {
        let mut k = self.kinds.lock().unwrap_or_else(|p| p.into_inner());
        let (last, suppressed) = k.entry(kind).or_insert((None, 0));
        if last.is_some_and(|t| t.elapsed() < REFUSAL_LOG_INTERVAL) {
            *suppressed += count;
            return;
        }
        let more = match *suppressed {
            0 => String::new(),
            n => format!(
                " ({n} more like it in the last {} s)",
                REFUSAL_LOG_INTERVAL.as_secs()
            ),
        };
        log::warn!("{kind}: {}{more}", detail());
        *last = Some(Instant::now());
        *suppressed = 0;
    }
}
