//! The server's shared state: which exports exist, which connections are live and which
//! export each one serves, so that closing an export or stopping the server can reach
//! every connection concerned, and waiting for them to end is possible.

use std::collections::BTreeMap;
use std::net::Shutdown;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::error::ExportError;
use crate::export::BlockExport;
use crate::limits::{CUT_WAIT, MAX_CUT_CONNECTIONS};
use crate::wire::decode_string;

/// What `add_export` needs besides the export itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExportConfig {
    /// The name clients select (not empty, at most 4096 bytes of UTF-8 without NUL).
    pub name: String,
    /// Shown by `nbdinfo` and `NBD_OPT_LIST` (same rules as the name).
    pub description: Option<String>,
    /// Whether the empty name selects this export (at most one export is the default;
    /// without one, the empty name selects nothing, so a client can never land on another
    /// volume than the one it was pointed at, e.g. after the default was closed).
    pub default: bool,
}

impl ExportConfig {
    /// An export called `name`, no description, not the default.
    pub fn new(name: impl Into<String>) -> Self {
        ExportConfig {
            name: name.into(),
            ..ExportConfig::default()
        }
    }

    /// The same, with a description.
    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.description = Some(description.into());
        self
    }

    /// The same, as the default export.
    pub fn default_export(mut self) -> Self {
        self.default = true;
        self
    }
}

/// One export as the server holds it.
pub(crate) struct ExportSlot {
    pub(crate) name: String,
    pub(crate) description: Option<String>,
    is_default: bool,
    // Taken out on close, so that once the last connection has ended the server holds no
    // reference to the export (and to the key material behind it).
    export: Mutex<Option<Arc<dyn BlockExport>>>,
    closed: AtomicBool,
}

impl ExportSlot {
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// The export, unless it has been closed.
    pub(crate) fn export(&self) -> Option<Arc<dyn BlockExport>> {
        if self.is_closed() {
            return None;
        }
        self.export
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Called to shut a connection's socket down (wakes a thread blocked reading it).
pub(crate) type ShutdownFn = Box<dyn Fn(Shutdown) + Send + Sync>;

/// The part of a connection that others act on.
pub(crate) struct ConnCtl {
    pub(crate) id: u64,
    closing: AtomicBool,
    shutdown: Option<ShutdownFn>,
    /// Requests read and not yet answered.
    in_flight: std::sync::atomic::AtomicUsize,
    /// When a request last came in or a reply went out, in nanoseconds after [`epoch`].
    last_active_ns: std::sync::atomic::AtomicU64,
}

/// The instant activity times count from (one for the process).
fn epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ns() -> u64 {
    u64::try_from(epoch().elapsed().as_nanos()).unwrap_or(u64::MAX)
}

impl ConnCtl {
    /// Whether the connection must stop taking requests (export closed, server stopping).
    pub(crate) fn closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// Asks the connection to end: it stops reading, finishes what is in flight, and
    /// leaves. Shutting the read side down wakes its reader; the write side stays open for
    /// the replies still due, unless `how` says otherwise.
    pub(crate) fn close(&self, how: Shutdown) {
        self.closing.store(true, Ordering::Release);
        self.shutdown(how);
    }

    pub(crate) fn shutdown(&self, how: Shutdown) {
        if let Some(f) = &self.shutdown {
            f(how);
        }
    }

    /// A request came in.
    pub(crate) fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.last_active_ns.store(now_ns(), Ordering::Release);
    }

    /// A request was answered (or given up).
    pub(crate) fn request_ended(&self) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.last_active_ns.store(now_ns(), Ordering::Release);
    }

    /// Nothing in flight: a client that is only holding its connection open.
    fn idle(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
    }
}

/// Where a connection is in its life, as far as its slot is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Not yet in transmission: evictable, and cut at the deadline (if any) by the accept
    /// loop.
    Handshake { deadline: Option<Instant> },
    /// Serving an export: evicted only when the table is full of them, and then the one
    /// with nothing in flight that was active least recently.
    Transmission,
    /// Evicted or past its deadline, its socket shut down, its thread not yet ended: it
    /// no longer holds a slot (see [`MAX_CUT_CONNECTIONS`]).
    Cut,
}

struct ConnEntry {
    ctl: Arc<ConnCtl>,
    phase: Phase,
    export: Option<Arc<ExportSlot>>,
}

impl ConnEntry {
    fn cut(&mut self) {
        self.phase = Phase::Cut;
        self.ctl.close(Shutdown::Both);
    }
}

#[derive(Default)]
struct State {
    exports: Vec<Arc<ExportSlot>>,
    // By id, which grows with each accept: iteration goes from the oldest connection.
    conns: BTreeMap<u64, ConnEntry>,
    next_id: u64,
    stopping: bool,
}

impl State {
    fn count(&self, pred: impl Fn(&Phase) -> bool) -> usize {
        self.conns.values().filter(|e| pred(&e.phase)).count()
    }
}

/// Exports and connections of one server.
pub(crate) struct Registry {
    state: Mutex<State>,
    // Signalled whenever a connection ends.
    ended: Condvar,
    max_connections: usize,
}

/// A live connection's registration; deregisters when dropped, even on a panic.
pub(crate) struct ConnGuard<'a> {
    registry: &'a Registry,
    pub(crate) ctl: Arc<ConnCtl>,
}

impl Drop for ConnGuard<'_> {
    fn drop(&mut self) {
        let mut st = self.registry.lock();
        st.conns.remove(&self.ctl.id);
        drop(st);
        self.registry.ended.notify_all();
    }
}

/// A connection registered by [`Registry::register`].
pub(crate) struct Admitted<'a> {
    pub(crate) guard: ConnGuard<'a>,
    /// The connection evicted to make room for this one, if the table was full.
    pub(crate) evicted: Option<u64>,
}

/// Why a connection could not be registered.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Every slot serves a client in transmission; none may be evicted.
    AtCapacity,
    /// [`MAX_CUT_CONNECTIONS`] cut connections have not ended yet.
    TooManyCut,
    Stopping,
}

impl Registry {
    pub(crate) fn new(max_connections: usize) -> Self {
        Registry {
            state: Mutex::new(State::default()),
            ended: Condvar::new(),
            max_connections,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing is left half-updated across a panic in these short sections.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn add_export(
        &self,
        config: ExportConfig,
        export: Arc<dyn BlockExport>,
    ) -> Result<Arc<ExportSlot>, ExportError> {
        if config.name.is_empty() {
            return Err(ExportError::EmptyName);
        }
        decode_string(config.name.as_bytes()).map_err(ExportError::BadName)?;
        if let Some(d) = &config.description {
            decode_string(d.as_bytes()).map_err(ExportError::BadDescription)?;
        }
        let bs = export.block_size();
        bs.check().map_err(|why| ExportError::BadBlockSize {
            minimum: bs.minimum,
            preferred: bs.preferred,
            maximum: bs.maximum,
            why,
        })?;
        if !export.size().is_multiple_of(u64::from(bs.minimum)) {
            log::warn!(
                "export {:?}: size {} is not a multiple of the minimum block size {}; its tail is unreachable for clients that honour it",
                config.name,
                export.size(),
                bs.minimum
            );
        }
        let mut st = self.lock();
        if st.stopping {
            return Err(ExportError::Stopping);
        }
        if st.exports.iter().any(|s| s.name == config.name) {
            return Err(ExportError::Duplicate(config.name));
        }
        if config.default {
            if let Some(d) = st.exports.iter().find(|s| s.is_default) {
                return Err(ExportError::DuplicateDefault(d.name.clone()));
            }
        }
        let slot = Arc::new(ExportSlot {
            name: config.name,
            description: config.description,
            is_default: config.default,
            export: Mutex::new(Some(export)),
            closed: AtomicBool::new(false),
        });
        st.exports.push(slot.clone());
        Ok(slot)
    }

    /// The export a client's name selects: an exact name, or for "" the default export.
    pub(crate) fn lookup(&self, name: &str) -> Option<Arc<ExportSlot>> {
        let st = self.lock();
        if name.is_empty() {
            return st.exports.iter().find(|s| s.is_default).cloned();
        }
        st.exports.iter().find(|s| s.name == name).cloned()
    }

    /// Names and descriptions of the open exports, for `NBD_OPT_LIST`.
    pub(crate) fn list(&self) -> Vec<(String, Option<String>)> {
        self.lock()
            .exports
            .iter()
            .map(|s| (s.name.clone(), s.description.clone()))
            .collect()
    }

    pub(crate) fn stopping(&self) -> bool {
        self.lock().stopping
    }

    /// Registers a new connection. When every slot is taken, the oldest connection still
    /// in its handshake is cut to make room: it is either stalled (a real client's
    /// handshake takes milliseconds) or will be cut at its deadline anyway, whereas the
    /// newcomer may be the export's owner. When every slot serves a client, the one with
    /// nothing in flight that was active least recently goes: otherwise 64 connections
    /// that finish the handshake and then sit silent (any local account can make them on
    /// a TCP export) locked the owner out for good (found by an outside run). A client in
    /// the middle of a request is never cut. Refused only when every slot has a request in
    /// flight, when too many cut connections have not ended yet, or when the server is
    /// stopping.
    pub(crate) fn register(
        &self,
        shutdown: Option<ShutdownFn>,
        handshake_deadline: Option<Instant>,
    ) -> Result<Admitted<'_>, Refused> {
        let mut st = self.lock();
        if st.stopping {
            return Err(Refused::Stopping);
        }
        // Cut connections end within microseconds; under a flood the accept loop can
        // still outrun them, and waiting for them here slows the flood down to the pace
        // at which they end, rather than turning the owner away.
        let give_up = Instant::now() + CUT_WAIT;
        while st.count(|p| *p == Phase::Cut) >= MAX_CUT_CONNECTIONS {
            let left = give_up.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Refused::TooManyCut);
            }
            st = self
                .ended
                .wait_timeout(st, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        if st.stopping {
            return Err(Refused::Stopping);
        }
        let mut evicted = None;
        if st.count(|p| *p != Phase::Cut) >= self.max_connections {
            let handshaking = st
                .conns
                .values()
                .find(|e| matches!(e.phase, Phase::Handshake { .. }))
                .map(|e| e.ctl.id);
            let quiet = || {
                st.conns
                    .values()
                    .filter(|e| e.phase == Phase::Transmission && e.ctl.idle())
                    .min_by_key(|e| e.ctl.last_active_ns.load(Ordering::Acquire))
                    .map(|e| e.ctl.id)
            };
            let id = handshaking.or_else(quiet).ok_or(Refused::AtCapacity)?;
            if let Some(e) = st.conns.get_mut(&id) {
                e.cut();
            }
            evicted = Some(id);
        }
        st.next_id += 1;
        let ctl = Arc::new(ConnCtl {
            id: st.next_id,
            closing: AtomicBool::new(false),
            shutdown,
            in_flight: Default::default(),
            last_active_ns: now_ns().into(),
        });
        st.conns.insert(
            ctl.id,
            ConnEntry {
                ctl: ctl.clone(),
                phase: Phase::Handshake {
                    deadline: handshake_deadline,
                },
                export: None,
            },
        );
        Ok(Admitted {
            guard: ConnGuard {
                registry: self,
                ctl,
            },
            evicted,
        })
    }

    /// Binds a connection to the export it selected and ends its handshake deadline.
    /// Fails if the export has been closed (or the server is stopping, or the connection
    /// was cut) meanwhile: checked under the same lock `close_export`, `register` and
    /// `reap` take, so no connection slips past a close, an eviction or its deadline.
    pub(crate) fn attach(
        &self,
        conn: &ConnGuard<'_>,
        slot: &Arc<ExportSlot>,
    ) -> Option<Arc<dyn BlockExport>> {
        let mut st = self.lock();
        if st.stopping || slot.is_closed() {
            return None;
        }
        let export = slot
            .export
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()?;
        let entry = st.conns.get_mut(&conn.ctl.id)?;
        if entry.phase == Phase::Cut {
            return None;
        }
        entry.phase = Phase::Transmission;
        entry.export = Some(slot.clone());
        Some(export)
    }

    /// Closes an export: it leaves the list, new connections cannot select it, and every
    /// connection serving it stops reading, finishes its requests in flight and ends.
    pub(crate) fn close_export(&self, slot: &Arc<ExportSlot>) {
        let mut st = self.lock();
        slot.closed.store(true, Ordering::Release);
        st.exports.retain(|s| !Arc::ptr_eq(s, slot));
        slot.export.lock().unwrap_or_else(|e| e.into_inner()).take();
        for entry in st.conns.values() {
            if entry.export.as_ref().is_some_and(|e| Arc::ptr_eq(e, slot)) {
                entry.ctl.close(Shutdown::Read);
            }
        }
    }

    /// Connections serving `slot`.
    pub(crate) fn connections_of(&self, slot: &Arc<ExportSlot>) -> usize {
        self.lock()
            .conns
            .values()
            .filter(|e| e.export.as_ref().is_some_and(|e| Arc::ptr_eq(e, slot)))
            .count()
    }

    /// Waits until no connection serves `slot` (or any connection at all, for `None`).
    /// Returns false if `timeout` passed first.
    pub(crate) fn wait_idle(
        &self,
        slot: Option<&Arc<ExportSlot>>,
        timeout: Option<Duration>,
    ) -> bool {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut st = self.lock();
        loop {
            let busy = match slot {
                Some(slot) => st
                    .conns
                    .values()
                    .any(|e| e.export.as_ref().is_some_and(|e| Arc::ptr_eq(e, slot))),
                None => !st.conns.is_empty(),
            };
            if !busy {
                return true;
            }
            st = match deadline {
                None => self.ended.wait(st).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return false;
                    }
                    self.ended
                        .wait_timeout(st, d - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
    }

    /// Stops the server's connections: those in transmission finish their requests in
    /// flight, those still in the handshake are cut. Idempotent.
    pub(crate) fn stop(&self) {
        let mut st = self.lock();
        st.stopping = true;
        for entry in st.conns.values() {
            entry.ctl.close(if entry.export.is_some() {
                Shutdown::Read
            } else {
                Shutdown::Both
            });
        }
    }

    /// Cuts the connections whose handshake deadline has passed; returns how many, and
    /// the next deadline.
    pub(crate) fn reap(&self, now: Instant) -> (u64, Option<Instant>) {
        let mut st = self.lock();
        let mut next: Option<Instant> = None;
        let mut cut = 0;
        for entry in st.conns.values_mut() {
            match entry.phase {
                Phase::Handshake { deadline: Some(d) } if d <= now => {
                    log::debug!("connection {}: handshake deadline passed", entry.ctl.id);
                    entry.cut();
                    cut += 1;
                }
                Phase::Handshake { deadline: Some(d) } => {
                    next = Some(next.map_or(d, |n| n.min(d)));
                }
                _ => {}
            }
        }
        (cut, next)
    }

    pub(crate) fn connection_count(&self) -> usize {
        self.lock().conns.len()
    }
}
