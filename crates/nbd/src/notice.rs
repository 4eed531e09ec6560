//! Log lines about connections the server refuses or cuts: at most one per
//! [`NOTICE_INTERVAL`] per kind, each saying how many more there were since the last, so
//! that a flood of sockets costs a few log lines rather than one per socket.

use std::collections::HashMap;
use std::time::Instant;

use crate::limits::NOTICE_INTERVAL;

/// Owned by the accept loop (one thread), which is where connections are refused, evicted
/// and cut at their deadline.
#[derive(Default)]
pub(crate) struct Notices {
    kinds: HashMap<&'static str, Kind>,
}

#[derive(Default)]
struct Kind {
    last: Option<Instant>,
    suppressed: u64,
}

impl Notices {
    /// Logs `kind: detail` unless a line of this kind went out less than
    /// [`NOTICE_INTERVAL`] ago; then only counts it. `count` is how many events this line
    /// stands for (a reap may cut several connections at once).
    pub(crate) fn warn(&mut self, kind: &'static str, count: u64, detail: impl FnOnce() -> String) {
        let k = self.kinds.entry(kind).or_default();
        let now = Instant::now();
        if k.last
            .is_some_and(|t| now.duration_since(t) < NOTICE_INTERVAL)
        {
            k.suppressed += count;
            return;
        }
        let more = match k.suppressed {
            0 => String::new(),
            n => format!(
                " ({n} more like it in the last {} s)",
                NOTICE_INTERVAL.as_secs()
            ),
        };
        log::warn!("{kind}: {}{more}", detail());
        k.last = Some(now);
        k.suppressed = 0;
    }
}
