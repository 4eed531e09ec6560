//! What a peer that has not proven itself may hold, and for how long.
//!
//! Anyone who can reach the port can open connections, and a connection proves itself
//! only by a KMIP request that authenticates (a client certificate from our CA, then the
//! Credential when the users file asks for one). Until then it is *unauthenticated*,
//! whether its TLS handshake is still running or it finished TLS and has sent nothing.
//!
//! - Unauthenticated connections are closed at a deadline: [`Limits::handshake_timeout`]
//!   from the accept for the TLS handshake, then [`Limits::authentication_timeout`] from
//!   the end of the handshake for an authenticated request. The reaper cuts them however
//!   slowly they trickle bytes.
//! - The limits (all connections, one address's share, unauthenticated ones) never turn a
//!   newcomer away while a *stalled* unauthenticated connection holds a place: the oldest
//!   such connection (of that address, for its share) is evicted instead (issue 19: 64 idle
//!   sockets from 127.0.0.1 used to lock the daemon, on the same address, out at start).
//! - Stalled is judged by progress, not age (issue 25: when 120 clients behind one address
//!   start at once, as after a site-wide power cut, evicting the oldest cut real clients in
//!   the middle of their handshake, and under load a handshake and a password check take
//!   longer than any age a flood of silent sockets should be allowed). A connection whose
//!   peer has sent nothing for [`Limits::silent`] is stalled, before its TLS handshake (no
//!   ClientHello) or after it (no request); one whose handshake has run longer than
//!   [`Limits::slow`] is stalled too (a peer trickling its handshake). One that is doing
//!   TLS work or carrying a request never is.
//! - A newcomer that finds no stalled connection to take the place of *waits*, up to
//!   [`Limits::queue_wait`], for a place to free (a client done) or a connection to stall;
//!   meanwhile the accept loop waits too, so later arrivals queue in the listen backlog
//!   instead of being reset. When the wait runs out it takes the place of the oldest
//!   unauthenticated connection, or is refused if every place is an authenticated client's.
//! - An authenticated connection gives way only when it waits for its next request, has
//!   waited [`Limits::silent`] or longer, and no stalled unauthenticated connection is left
//!   to take instead: the longest-waiting goes, and its client reconnects when it next
//!   needs the server (atrest's client does so on its own). One carrying a request never
//!   goes. Issue 25: 50 `atrest serve` daemons with three volumes each, behind one
//!   address, held its 64 places with idle connections kept for their key checks, and 86
//!   of 150 volumes still waited after two minutes. Otherwise they end at the idle timeout.
//!
//! Evicted and timed-out connections have their socket shut down at once, so they free
//! their place at once; the threads serving them end within milliseconds, and at most
//! [`Limits::max_unauthenticated`] of them may still be ending before admissions wait.

use std::collections::BTreeMap;
use std::net::{IpAddr, Shutdown, TcpStream};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::notice::RateLimitedLog;

/// The bounds admission enforces (from [`crate::server::Options`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Connections held at once, authenticated or not.
    pub(crate) max_connections: usize,
    /// Connections one peer address may hold.
    pub(crate) max_per_peer: usize,
    /// Unauthenticated connections held at once, over all addresses.
    pub(crate) max_unauthenticated: usize,
    /// From the accept to the end of the TLS handshake.
    pub(crate) handshake_timeout: Duration,
    /// From the end of the TLS handshake to the first request that authenticates.
    pub(crate) authentication_timeout: Duration,
    /// How long a newcomer waits for a place before it takes a connection's place that is
    /// not stalled, or is refused.
    pub(crate) queue_wait: Duration,
    /// A peer that has sent nothing for this long (no ClientHello, or no request after the
    /// handshake) is stalled.
    pub(crate) silent: Duration,
    /// A TLS handshake that has run this long is stalled.
    pub(crate) slow: Duration,
}

/// Longest an admission waits for evicted connections to end when too many have not, before
/// it refuses the newcomer. Only reached if their threads cannot run at all.
const CUT_WAIT: Duration = Duration::from_secs(1);

/// Why a connection was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Refused {
    /// Every place is held by an authenticated client.
    #[error("all {0} connections belong to authenticated clients")]
    Full(usize),
    /// The peer's share is held by its authenticated connections.
    #[error("{peer} already holds {max} authenticated connections")]
    PeerFull {
        /// The address.
        peer: IpAddr,
        /// Its share.
        max: usize,
    },
    /// Too many evicted connections have not ended yet.
    #[error("{0} evicted connections have not ended yet")]
    TooManyCut(usize),
    /// The server is stopping.
    #[error("the server is stopping")]
    Stopping,
    /// The socket could not be duplicated for the reaper.
    #[error("cannot keep a handle on the socket: {0}")]
    Socket(std::io::Error),
}

/// Where an unauthenticated connection is, since `Progress`'s instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    /// Accepted; its peer has sent nothing yet.
    Accepted,
    /// Its peer sent a ClientHello: the TLS handshake runs.
    Handshaking,
    /// The handshake is over; no request yet.
    AwaitingRequest,
    /// A request is being read or handled.
    Working,
}

enum Phase {
    /// Evictable when stalled, and cut at `deadline`; `socket` shuts it down.
    Unauthenticated {
        deadline: Instant,
        socket: TcpStream,
        stage: Stage,
        since: Instant,
    },
    /// A client's. `idle_since`: waiting for its next request since then (`None`: a
    /// request is being read or handled).
    Authenticated {
        socket: TcpStream,
        idle_since: Option<Instant>,
    },
    /// Evicted or timed out, its thread not yet ended: it no longer holds a place.
    Cut,
}

struct Conn {
    peer: IpAddr,
    phase: Phase,
}

impl Conn {
    fn unauthenticated(&self) -> bool {
        matches!(self.phase, Phase::Unauthenticated { .. })
    }

    /// When it counts as stalled under `l` (`None`: it is working, never).
    fn stalls_at(&self, l: &Limits) -> Option<Instant> {
        match self.phase {
            Phase::Unauthenticated { stage, since, .. } => match stage {
                Stage::Accepted | Stage::AwaitingRequest => Some(since + l.silent),
                Stage::Handshaking => Some(since + l.slow),
                Stage::Working => None,
            },
            _ => None,
        }
    }

    fn live(&self) -> bool {
        !matches!(self.phase, Phase::Cut)
    }

    fn cut(&mut self) {
        if let Phase::Unauthenticated { socket, .. } | Phase::Authenticated { socket, .. } =
            &self.phase
        {
            // Wakes the connection's thread wherever it blocks (TLS accept, a read).
            let _ = socket.shutdown(Shutdown::Both);
        }
        self.phase = Phase::Cut;
    }

    /// Since when an authenticated connection has waited for its next request.
    fn idle_client_since(&self) -> Option<Instant> {
        match self.phase {
            Phase::Authenticated { idle_since, .. } => idle_since,
            _ => None,
        }
    }
}

#[derive(Default)]
struct Table {
    /// By id, which grows with each accept: iteration goes from the oldest.
    conns: BTreeMap<u64, Conn>,
    next_id: u64,
    stopping: bool,
    /// Newcomers waiting for a place: a client going idle is worth waking them for (and
    /// only then: a notification is a system call, and this happens on every request).
    queued: usize,
}

impl Table {
    fn count(&self, pred: impl Fn(&Conn) -> bool) -> usize {
        self.conns.values().filter(|c| pred(c)).count()
    }

    /// Cuts the oldest unauthenticated connection `which` selects that is stalled at `now`
    /// (any, when `any`); returns its peer. Otherwise, when the first of them will stall.
    fn evict_stalled(
        &mut self,
        l: &Limits,
        now: Instant,
        any: bool,
        which: impl Fn(&Conn) -> bool,
    ) -> Result<IpAddr, Option<Instant>> {
        let mut next: Option<Instant> = None;
        for c in self.conns.values_mut() {
            if !c.unauthenticated() || !which(c) {
                continue;
            }
            match c.stalls_at(l) {
                _ if any => {}
                Some(at) if at <= now => {}
                Some(at) => {
                    next = Some(next.map_or(at, |n| n.min(at)));
                    continue;
                }
                None => continue,
            }
            c.cut();
            return Ok(c.peer);
        }
        Err(next)
    }

    /// Cuts the authenticated connection `which` selects that has waited longest for its
    /// next request, if it has waited [`Limits::silent`] by `now`; returns its peer.
    /// Otherwise, when the first of them will have.
    fn evict_idle_client(
        &mut self,
        l: &Limits,
        now: Instant,
        which: impl Fn(&Conn) -> bool,
    ) -> Result<IpAddr, Option<Instant>> {
        let longest = self
            .conns
            .values_mut()
            .filter(|c| which(c))
            .filter_map(|c| c.idle_client_since().map(|since| (since, c)))
            .min_by_key(|(since, _)| *since);
        match longest {
            Some((since, c)) if since + l.silent <= now => {
                c.cut();
                Ok(c.peer)
            }
            Some((since, _)) => Err(Some(since + l.silent)),
            None => Err(None),
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.conns
            .values()
            .filter_map(|c| match c.phase {
                Phase::Unauthenticated { deadline, .. } => Some(deadline),
                _ => None,
            })
            .min()
    }
}

/// The places connections hold, shared by the accept loop, the connection threads (through
/// their [`Ticket`]) and the reaper.
pub(crate) struct Admission {
    table: Mutex<Table>,
    /// Signalled when a connection ends (an admission may wait for evicted ones), when a
    /// deadline is set, and on stop (the reaper sleeps until the next deadline).
    changed: Condvar,
    limits: Limits,
    pub(crate) log: RateLimitedLog,
}

/// A connection's place; given back on drop.
pub(crate) struct Ticket {
    adm: Arc<Admission>,
    id: u64,
}

impl Admission {
    pub(crate) fn new(limits: Limits) -> Self {
        Self {
            table: Mutex::new(Table::default()),
            changed: Condvar::new(),
            limits,
            log: RateLimitedLog::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        // Every section leaves the table consistent: a panic elsewhere cannot tear it.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn evicted(&self, victim: IpAddr, newcomer: IpAddr, full: &str) {
        self.log.warn("evicted an unauthenticated connection", || {
            format!("the oldest from {victim}, to admit {newcomer}: {full} full")
        });
    }

    /// Gives `tcp`, from `peer`, a place: unauthenticated, with the handshake deadline.
    /// Each limit that is full gives up its oldest unauthenticated connection; only a
    /// limit held entirely by authenticated clients refuses the newcomer.
    pub(crate) fn admit(
        self: &Arc<Self>,
        tcp: &TcpStream,
        peer: IpAddr,
    ) -> Result<Ticket, Refused> {
        let socket = tcp.try_clone().map_err(Refused::Socket)?;
        let l = self.limits;
        let mut t = self.lock();
        let give_up = Instant::now() + CUT_WAIT;
        let max_cut = l.max_unauthenticated.max(1);
        while t.count(|c| !c.live()) >= max_cut {
            let left = give_up.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Refused::TooManyCut(max_cut));
            }
            t = self
                .changed
                .wait_timeout(t, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        if t.stopping {
            return Err(Refused::Stopping);
        }
        let queue_until = Instant::now() + l.queue_wait;
        // One eviction or one bounded wait per round; the table is finite.
        loop {
            if t.stopping {
                return Err(Refused::Stopping);
            }
            let now = Instant::now();
            let patient = now < queue_until;
            let (full, refusal, mine) = if t.count(Conn::live) >= l.max_connections {
                (
                    "the server's connections are",
                    Some(Refused::Full(l.max_connections)),
                    false,
                )
            } else if t.count(|c| c.live() && c.peer == peer) >= l.max_per_peer {
                let r = Refused::PeerFull {
                    peer,
                    max: l.max_per_peer,
                };
                ("its address's share is", Some(r), true)
            } else if t.count(Conn::unauthenticated) >= l.max_unauthenticated {
                ("the unauthenticated places are", None, false)
            } else {
                break;
            };
            let which = |c: &Conn| !mine || c.peer == peer;
            let stalled = match t.evict_stalled(&l, now, !patient, which) {
                Ok(victim) => {
                    self.evicted(victim, peer, full);
                    continue;
                }
                Err(next) => next,
            };
            // An unauthenticated limit is not a client's to give up.
            let idle = if refusal.is_some() {
                match t.evict_idle_client(&l, now, which) {
                    Ok(victim) => {
                        self.log.warn("closed an idle client connection", || {
                            format!("the longest idle from {victim}, to admit {peer}: {full} full")
                        });
                        continue;
                    }
                    Err(next) => next,
                }
            } else {
                None
            };
            if !patient {
                match refusal {
                    Some(r) => return Err(r),
                    None => break,
                }
            }
            // Until a connection will have stalled or idled long enough, or patience ends.
            let wake = [stalled, idle]
                .into_iter()
                .flatten()
                .fold(queue_until, Instant::min);
            // Woken early when a connection ends or moves on.
            t.queued += 1;
            t = self
                .changed
                .wait_timeout(t, wake.saturating_duration_since(now))
                .unwrap_or_else(|p| p.into_inner())
                .0;
            t.queued -= 1;
        }
        let id = t.next_id;
        t.next_id += 1;
        t.conns.insert(
            id,
            Conn {
                peer,
                phase: Phase::Unauthenticated {
                    deadline: Instant::now() + l.handshake_timeout,
                    socket,
                    stage: Stage::Accepted,
                    since: Instant::now(),
                },
            },
        );
        drop(t);
        self.changed.notify_all();
        Ok(Ticket {
            adm: self.clone(),
            id,
        })
    }

    /// Cuts unauthenticated connections at their deadlines until [`Admission::stop`], then
    /// cuts all that are left and returns. Sleeps until the next deadline in between.
    pub(crate) fn reap_until_stopped(&self) {
        let l = self.limits;
        let mut t = self.lock();
        loop {
            let now = Instant::now();
            let stopping = t.stopping;
            let mut cut = 0u64;
            for c in t.conns.values_mut() {
                let due = match c.phase {
                    Phase::Unauthenticated { deadline, .. } => stopping || deadline <= now,
                    _ => false,
                };
                if due {
                    c.cut();
                    cut += 1;
                }
            }
            if stopping {
                return;
            }
            if cut > 0 {
                self.log
                    .warn_n("closed unauthenticated connections", cut, || {
                        format!(
                            "{cut} without a TLS handshake within {} s or an authenticated request within {} s after it",
                            l.handshake_timeout.as_secs_f32(),
                            l.authentication_timeout.as_secs_f32()
                        )
                    });
            }
            t = match t.next_deadline() {
                Some(d) => {
                    self.changed
                        .wait_timeout(t, d.saturating_duration_since(now))
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
                None => self.changed.wait(t).unwrap_or_else(|p| p.into_inner()),
            };
        }
    }

    /// Refuses new connections and makes the reaper cut every unauthenticated one.
    pub(crate) fn stop(&self) {
        self.lock().stopping = true;
        self.changed.notify_all();
    }
}

impl Ticket {
    /// The connection moved on to `stage` (its peer sent a ClientHello, or a request, or
    /// it waits for the next request).
    pub(crate) fn stage(&self, stage: Stage) {
        let mut t = self.adm.lock();
        let Some(c) = t.conns.get_mut(&self.id) else {
            return;
        };
        match &mut c.phase {
            Phase::Unauthenticated {
                stage: s, since, ..
            } => {
                *s = stage;
                *since = Instant::now();
            }
            Phase::Authenticated { idle_since, .. } => {
                *idle_since = (stage == Stage::AwaitingRequest).then(Instant::now);
                if idle_since.is_some() && t.queued > 0 {
                    drop(t);
                    // A newcomer waiting for a place may take this one in `silent`.
                    self.adm.changed.notify_all();
                }
            }
            Phase::Cut => {}
        }
    }

    /// The TLS handshake is over: the peer now has the authentication timeout to send a
    /// request that authenticates. False if the connection was cut meanwhile.
    pub(crate) fn tls_done(&self) -> bool {
        let mut t = self.adm.lock();
        let Some(c) = t.conns.get_mut(&self.id) else {
            return false;
        };
        match &mut c.phase {
            Phase::Unauthenticated {
                deadline,
                stage,
                since,
                ..
            } => {
                *deadline = Instant::now() + self.adm.limits.authentication_timeout;
                *stage = Stage::AwaitingRequest;
                *since = Instant::now();
            }
            Phase::Authenticated { .. } => {}
            Phase::Cut => return false,
        }
        drop(t);
        self.adm.changed.notify_all();
        true
    }

    /// A request authenticated: from now on the connection is a client's, and no deadline
    /// takes its place (a newcomer only while it sits idle). False if it was cut before
    /// (its answer must not go out on a socket the server has given up).
    pub(crate) fn authenticated(&self) -> bool {
        let mut t = self.adm.lock();
        match t.conns.get_mut(&self.id) {
            Some(c) => match std::mem::replace(&mut c.phase, Phase::Cut) {
                Phase::Unauthenticated { socket, .. } => {
                    c.phase = Phase::Authenticated {
                        socket,
                        idle_since: None,
                    };
                    true
                }
                other => {
                    let live = !matches!(other, Phase::Cut);
                    c.phase = other;
                    live
                }
            },
            None => false,
        }
        // (No signal: a place is taken either way.)
    }

    /// Where to log about this peer while it is unauthenticated.
    pub(crate) fn log(&self) -> &RateLimitedLog {
        &self.adm.log
    }

    /// Whether the server cut this connection (evicted, or past its deadline); that was
    /// logged where it happened.
    pub(crate) fn was_cut(&self) -> bool {
        let t = self.adm.lock();
        t.conns.get(&self.id).is_none_or(|c| !c.live())
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.adm.lock().conns.remove(&self.id);
        self.adm.changed.notify_all();
    }
}
