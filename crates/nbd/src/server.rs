//! The server: listeners, the accept loop, and the handles that stop it or close one
//! export.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rustix::event::{poll, PollFd, PollFlags, Timespec};

use crate::conn::{self, ConnConfig};
use crate::error::{ExportError, ListenError, ServerError};
use crate::export::BlockExport;
use crate::limits::{
    DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_IN_FLIGHT_BYTES, DEFAULT_MAX_IN_FLIGHT_REQUESTS, DEFAULT_WORKERS,
    DEFAULT_WRITE_TIMEOUT, MAX_CUT_CONNECTIONS,
};
use crate::listen::{ListenAddr, Listener, Stream};
use crate::notice::Notices;
use crate::registry::{Admitted, ExportConfig, ExportSlot, Refused, Registry};

/// Tunables of a [`Server`]; the defaults (see [`crate::limits`]) suit one client at
/// queue depth 32 per export on a small machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerOptions {
    /// Connections served at once (handshake or transmission). When all are taken, a new
    /// connection evicts the oldest one still in its handshake; if every one is in
    /// transmission, the new one is closed on accept.
    pub max_connections: usize,
    /// Time from accept to the end of the handshake before the connection is cut.
    pub handshake_timeout: Duration,
    /// Time a connection in transmission may sit idle (nothing in flight, no new request)
    /// before it is closed; `None` (the default) never closes it. See
    /// [`crate::limits::DEFAULT_IDLE_TIMEOUT`] for why it is off.
    pub idle_timeout: Option<Duration>,
    /// How long one reply may wait for a client that does not read; `None` waits forever.
    pub write_timeout: Option<Duration>,
    /// Threads per connection that take turns reading and serving requests (started on
    /// demand); 0 or 1 runs requests one at a time on the connection's own thread.
    pub workers_per_connection: usize,
    /// Requests in flight per connection before the reader waits.
    pub max_in_flight_requests: usize,
    /// Buffer bytes in flight per connection before the reader waits (one request is always
    /// admitted).
    pub max_in_flight_bytes: usize,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            write_timeout: Some(DEFAULT_WRITE_TIMEOUT),
            workers_per_connection: DEFAULT_WORKERS,
            max_in_flight_requests: DEFAULT_MAX_IN_FLIGHT_REQUESTS,
            max_in_flight_bytes: DEFAULT_MAX_IN_FLIGHT_BYTES,
        }
    }
}

impl ServerOptions {
    fn conn_config(&self) -> ConnConfig {
        ConnConfig {
            workers: self.workers_per_connection,
            max_in_flight_requests: self.max_in_flight_requests.max(1),
            max_in_flight_bytes: self.max_in_flight_bytes,
            idle_timeout: self.idle_timeout,
        }
    }
}

/// Wakes the accept loop out of `poll` when the server is stopped.
struct Waker {
    tx: UnixStream,
    rx: UnixStream,
}

/// An NBD server: bound listeners, a set of exports, and (while [`Server::run`] blocks)
/// a few threads per connection, taking turns.
///
/// ```no_run
/// # use std::sync::Arc;
/// # use nbd::{Server, ServerOptions, ListenAddr, ExportConfig, MemExport};
/// let server = Server::bind(&[ListenAddr::Unix("/run/atrest/vol0.sock".into())], ServerOptions::default())?;
/// let vol0 = server.add_export(ExportConfig::new("vol0"), Arc::new(MemExport::new(1 << 20, 512)))?;
/// let stop = server.stop_handle();
/// let t = std::thread::spawn(move || server.run());
/// // ... the key is revoked:
/// vol0.close();
/// vol0.wait_idle(None);
/// // ... shutting down:
/// stop.stop();
/// t.join().unwrap()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Server {
    registry: Arc<Registry>,
    options: ServerOptions,
    listeners: Mutex<Option<Vec<Listener>>>,
    addrs: Vec<ListenAddr>,
    waker: Arc<Waker>,
}

/// Stops a [`Server`]: it accepts no more connections, cuts those still in the
/// handshake, lets those in transmission finish their requests in flight, and then
/// [`Server::run`] returns. Cloneable, usable from any thread (or a signal-handling one).
#[derive(Clone)]
pub struct StopHandle {
    registry: Arc<Registry>,
    waker: Arc<Waker>,
}

impl StopHandle {
    /// Starts stopping the server; returns at once. Idempotent.
    pub fn stop(&self) {
        self.registry.stop();
        let _ = (&self.waker.tx).write(&[1]);
    }
}

/// One export of a [`Server`]; closing it is how the daemon locks a volume (for instance
/// when its key was revoked).
#[derive(Clone)]
pub struct ExportHandle {
    registry: Arc<Registry>,
    slot: Arc<ExportSlot>,
}

impl ExportHandle {
    /// The export's name.
    pub fn name(&self) -> &str {
        &self.slot.name
    }

    /// Closes the export; returns at once. It disappears from `NBD_OPT_LIST`, new
    /// connections cannot select it, and every connection serving it stops reading
    /// requests (those already read but not started are answered `NBD_ESHUTDOWN`, which
    /// tells clients to disconnect), finishes the requests already running, and closes.
    /// The server drops its reference to the export at once; the connections drop theirs
    /// as they end. A client that has stopped reading its replies delays its end by up to
    /// [`ServerOptions::write_timeout`]. Idempotent.
    pub fn close(&self) {
        self.registry.close_export(&self.slot);
    }

    /// Whether [`ExportHandle::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.slot.is_closed()
    }

    /// Connections currently serving this export.
    pub fn connections(&self) -> usize {
        self.registry.connections_of(&self.slot)
    }

    /// Waits until no connection serves this export (after [`ExportHandle::close`]: until
    /// the server no longer holds the export at all). False if `timeout` passed first.
    pub fn wait_idle(&self, timeout: Option<Duration>) -> bool {
        self.registry.wait_idle(Some(&self.slot), timeout)
    }
}

impl std::fmt::Debug for ExportHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExportHandle")
            .field("name", &self.slot.name)
            .field("closed", &self.slot.is_closed())
            .finish()
    }
}

impl Server {
    /// Binds every address (a Unix socket path, or TCP on loopback; a non-loopback TCP
    /// address is refused). Nothing is accepted until [`Server::run`].
    pub fn bind(addrs: &[ListenAddr], options: ServerOptions) -> Result<Server, ListenError> {
        if addrs.is_empty() {
            return Err(ListenError::NoAddress);
        }
        let listeners = addrs
            .iter()
            .map(Listener::bind)
            .collect::<Result<Vec<_>, _>>()?;
        let bound = listeners.iter().filter_map(Listener::local_addr).collect();
        let waker = UnixStream::pair()
            .and_then(|(tx, rx)| {
                tx.set_nonblocking(true)?;
                rx.set_nonblocking(true)?;
                Ok(Waker { tx, rx })
            })
            .map_err(|source| ListenError::Unix {
                path: "(socketpair)".into(),
                source,
            })?;
        Ok(Server {
            registry: Arc::new(Registry::new(options.max_connections)),
            options,
            listeners: Mutex::new(Some(listeners)),
            addrs: bound,
            waker: Arc::new(waker),
        })
    }

    /// The addresses bound (with the port chosen for TCP port 0).
    pub fn local_addrs(&self) -> &[ListenAddr] {
        &self.addrs
    }

    /// Adds an export; possible before or while the server runs.
    pub fn add_export(
        &self,
        config: ExportConfig,
        export: Arc<dyn BlockExport>,
    ) -> Result<ExportHandle, ExportError> {
        let slot = self.registry.add_export(config, export)?;
        log::info!("export {:?} added", slot.name);
        Ok(ExportHandle {
            registry: self.registry.clone(),
            slot,
        })
    }

    /// A handle that stops [`Server::run`].
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle {
            registry: self.registry.clone(),
            waker: self.waker.clone(),
        }
    }

    /// Connections currently open (in handshake or transmission).
    pub fn connections(&self) -> usize {
        self.registry.connection_count()
    }

    /// Accepts and serves connections until stopped through a [`StopHandle`], then waits
    /// for every connection to end and returns (removing the Unix socket files). Can run
    /// only once. The wait has no time limit: an export call that never returns keeps its
    /// connection, and so `run`, from returning; a client that stops reading its replies
    /// is cut after [`ServerOptions::write_timeout`].
    pub fn run(&self) -> Result<(), ServerError> {
        let listeners = self
            .listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .ok_or(ServerError::AlreadyRan)?;
        for a in &self.addrs {
            log::info!("listening on {a}");
        }
        let config = self.options.conn_config();
        let result = thread::scope(|scope| {
            let r = self.accept_loop(&listeners, scope, &config);
            // Whatever ended the loop, the connections must end before the scope can.
            self.registry.stop();
            r
        });
        drop(listeners);
        let addrs: Vec<String> = self.addrs.iter().map(ToString::to_string).collect();
        log::info!("stopped listening on {}", addrs.join(", "));
        result
    }

    fn accept_loop<'s>(
        &'s self,
        listeners: &[Listener],
        scope: &'s thread::Scope<'s, '_>,
        config: &'s ConnConfig,
    ) -> Result<(), ServerError> {
        let mut notices = Notices::default();
        loop {
            if self.registry.stopping() {
                return Ok(());
            }
            let now = Instant::now();
            let (cut, next) = self.registry.reap(now);
            if cut > 0 {
                notices.warn("handshake deadline passed", cut, || {
                    format!(
                        "disconnected {cut} connection(s) still in the handshake after {} ms",
                        self.options.handshake_timeout.as_millis()
                    )
                });
            }
            // Sleep until a connection arrives, the server is stopped, or the next
            // handshake deadline passes.
            let timeout = next
                .map(|d| d.saturating_duration_since(now) + Duration::from_millis(1))
                .and_then(|d| Timespec::try_from(d).ok());
            let mut fds: Vec<PollFd<'_>> = listeners
                .iter()
                .map(|l| PollFd::new(l, PollFlags::IN))
                .chain(std::iter::once(PollFd::new(&self.waker.rx, PollFlags::IN)))
                .collect();
            match poll(&mut fds, timeout.as_ref()) {
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(ServerError::Poll(e.into())),
            }
            let ready: Vec<bool> = fds.iter().map(|f| !f.revents().is_empty()).collect();
            drop(fds);
            if ready.last() == Some(&true) {
                let mut sink = [0u8; 64];
                while matches!((&self.waker.rx).read(&mut sink), Ok(n) if n > 0) {}
            }
            for (l, _) in listeners.iter().zip(&ready).filter(|(_, r)| **r) {
                loop {
                    match l.accept() {
                        Ok((stream, from)) => self.start(stream, from, scope, config, &mut notices),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            // Out of descriptors, or a connection reset before accept:
                            // nothing to do for that one; try again on the next wake-up
                            // after a pause, so a persistent error cannot spin.
                            log::warn!("accept: {e}");
                            thread::sleep(Duration::from_millis(50));
                            break;
                        }
                    }
                }
            }
        }
    }

    fn start<'s>(
        &'s self,
        stream: Stream,
        from: String,
        scope: &'s thread::Scope<'s, '_>,
        config: &'s ConnConfig,
        notices: &mut Notices,
    ) {
        let prepared = stream.prepare(self.options.write_timeout).and_then(|()| {
            let ctl = stream.try_clone()?;
            let reader = stream.try_clone()?;
            Ok((ctl, reader))
        });
        let (ctl, reader) = match prepared {
            Ok(p) => p,
            Err(e) => {
                log::warn!("{from}: cannot set up the connection: {e}");
                return;
            }
        };
        let shutdown = Box::new(move |how: Shutdown| {
            let _ = ctl.shutdown(how);
        });
        let deadline = Instant::now() + self.options.handshake_timeout;
        let guard = match self.registry.register(Some(shutdown), Some(deadline)) {
            Ok(Admitted { guard, evicted }) => {
                if let Some(old) = evicted {
                    notices.warn("evicted a connection in its handshake", 1, || {
                        format!(
                            "connection {old}, the oldest still in its handshake, to admit {from}: {} connections open",
                            self.options.max_connections
                        )
                    });
                }
                guard
            }
            Err(Refused::AtCapacity) => {
                notices.warn("refused a connection", 1, || {
                    format!(
                        "{from}: all {} connections are serving clients",
                        self.options.max_connections
                    )
                });
                return;
            }
            Err(Refused::TooManyCut) => {
                notices.warn("refused a connection", 1, || {
                    format!("{from}: {MAX_CUT_CONNECTIONS} cut connections have not ended yet")
                });
                return;
            }
            Err(Refused::Stopping) => return,
        };
        let id = guard.ctl.id;
        log::debug!("connection {id}: accepted from {from}");
        let registry: &'s Registry = &self.registry;
        let spawned = thread::Builder::new()
            .name(format!("nbd-{id}"))
            .spawn_scoped(scope, move || {
                conn::run(registry, &guard, reader, stream, config, None);
            });
        if let Err(e) = spawned {
            // The closure (and with it the guard and the sockets) was dropped: the
            // connection is deregistered and closed.
            log::warn!("connection {id}: cannot start its thread: {e}");
        }
    }
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("addrs", &self.addrs)
            .field("options", &self.options)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_are_send_and_sync() {
        fn is<T: Send + Sync>() {}
        is::<Server>();
        is::<StopHandle>();
        is::<ExportHandle>();
    }
}
