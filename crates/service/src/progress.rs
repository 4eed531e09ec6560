//! How a long operation reports and how it is stopped: the caller passes an [`Observer`]
//! (the CLI draws a bar or prints JSON lines; the daemon keeps the latest for its status
//! API) and a [`Stop`] (Ctrl-C, SIGTERM, or an API request). Stopping happens at the next
//! committed step of a conversion, never in between.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use volume::convert::Kind;
pub use volume::convert::Progress;

/// Something an operation says while it runs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// An interrupted conversion is being finished.
    Resuming {
        /// What.
        kind: Kind,
        /// Bytes already done.
        done: u64,
        /// Bytes in all.
        total: u64,
        /// The key the data is under.
        key_uid: String,
        /// A rekey's new key.
        new_key_uid: Option<String>,
    },
    /// A committed step.
    Progress {
        /// What.
        kind: Kind,
        /// Bytes done.
        done: u64,
        /// Bytes in all.
        total: u64,
    },
}

/// Hears an operation's events.
pub trait Observer {
    /// One event.
    fn event(&mut self, e: &Event);
}

/// An observer that ignores everything.
pub struct Quiet;

impl Observer for Quiet {
    fn event(&mut self, _: &Event) {}
}

impl<F: FnMut(&Event)> Observer for F {
    fn event(&mut self, e: &Event) {
        self(e)
    }
}

/// A stop request, shared between whoever asks (a signal handler, the API) and the
/// operation.
#[derive(Debug, Clone, Default)]
pub struct Stop(Arc<AtomicBool>);

impl Stop {
    /// A fresh, unset request.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the operation to stop at its next safe point.
    pub fn request(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// True once asked.
    pub fn requested(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// The flag itself (for signal handlers and the conversion loop).
    pub fn flag(&self) -> &Arc<AtomicBool> {
        &self.0
    }
}
