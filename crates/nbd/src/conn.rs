//! One connection: the handshake, then transmission, by a few threads that take turns.
//!
//! During transmission each of a few threads in turn holds the reading side: it reads and
//! checks the next request (and its write payload), gives the turn to the next thread,
//! runs the request against the export and writes the reply under a lock on the write
//! half, header and data in one write. So the thread that read a request serves it (no
//! handoff to a worker and back, nbdkit's model); replies leave in completion order,
//! never interleaved. Invalid requests are answered by the thread holding the turn, and
//! so is a short request that arrives alone while the export is fast, without giving the
//! turn away (see [`Shared::serve_turns`]). Threads start on demand, when the one giving
//! up the turn finds nobody waiting for it. What one connection may hold is bounded:
//! requests in flight and their buffer bytes (reading waits until replies go out), and
//! buffers kept for reuse. When the reading stops (`NBD_CMD_DISC`, end of file, a broken
//! stream, or a close of the export), the requests in flight are still run and answered
//! before the connection ends. With an idle timeout set, a connection with nothing in
//! flight and no byte of a new request for that long is closed (see
//! [`crate::limits::DEFAULT_IDLE_TIMEOUT`]).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::Shutdown;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::thread::{self, Scope};
use std::time::{Duration, Instant};

use crate::dispatch::{self, Op, Rules};
use crate::error::{HandshakeError, TransmissionError};
use crate::export::BlockExport;
use crate::handshake::{Ctx, Next, Start, Transmission};
use crate::limits::{MAX_PAYLOAD, POOLED_BUFFERS, READ_BUFFER};
use crate::registry::{ConnCtl, ConnGuard, Registry};
use crate::wire::{Command, ErrorCode, Request, SimpleReply, REQUEST_LEN, SIMPLE_REPLY_LEN};

/// Per-connection concurrency and memory bounds.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConnConfig {
    /// Threads that take turns reading and serving requests; 0 or 1 runs every request
    /// on the connection's own thread, one at a time.
    pub(crate) workers: usize,
    pub(crate) max_in_flight_requests: usize,
    pub(crate) max_in_flight_bytes: usize,
    /// Transmission idle time before the connection is closed; `None` never closes it.
    pub(crate) idle_timeout: Option<Duration>,
}

/// A request stream whose reads can be given a time limit, for the idle timeout.
pub(crate) trait ReadTimeout {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()>;
}

impl ReadTimeout for &[u8] {
    /// A slice never blocks: nothing to limit.
    fn set_read_timeout(&self, _: Option<Duration>) -> io::Result<()> {
        Ok(())
    }
}

/// Sees each request header as it is parsed (the fuzz checker pairs replies with them).
pub(crate) type Observer<'a> = Option<&'a (dyn Fn(&Request) + Sync)>;

/// What a connection used, for tests and the fuzz checker (a shipped build only counts).
#[derive(Clone, Copy, Debug, Default)]
#[cfg_attr(not(any(test, feature = "test-support")), allow(dead_code))]
pub(crate) struct ConnStats {
    pub(crate) requests: u64,
    /// Largest single request buffer.
    pub(crate) peak_buffer: usize,
    /// Most buffer bytes in flight at once.
    pub(crate) peak_in_flight_bytes: usize,
}

/// How transmission ended.
#[derive(Debug)]
pub(crate) enum Ended {
    /// `NBD_CMD_DISC`.
    Disconnect,
    /// End of file between requests (the client closed, or a close/stop shut us down).
    Eof,
    /// Nothing in flight and no new request for the idle timeout.
    Idle(Duration),
    /// Anything else.
    Error(TransmissionError),
}

/// How a connection ended (the fuzz checker and the tests read the details; a shipped
/// build logs at the point of failure).
#[derive(Debug)]
#[cfg_attr(not(any(test, feature = "test-support")), allow(dead_code))]
pub(crate) enum Outcome {
    Handshake(HandshakeError),
    Transmission(Ended, ConnStats),
}

/// Serves one connection from greeting to close.
pub(crate) fn run<R: Read + ReadTimeout + Send, W: Write + Send>(
    registry: &Registry,
    conn: &ConnGuard<'_>,
    reader: R,
    mut writer: W,
    config: &ConnConfig,
    observer: Observer<'_>,
) -> Outcome {
    let id = conn.ctl.id;
    let mut r = BufReader::with_capacity(READ_BUFFER, reader);
    let ctx = Ctx { registry, conn };
    let t = match handshake(&mut r, &mut writer, &ctx) {
        Ok(t) => t,
        Err(HandshakeError::Aborted) => {
            log::debug!("connection {id}: client aborted the handshake");
            return Outcome::Handshake(HandshakeError::Aborted);
        }
        // Evicted or past its deadline: the accept loop has logged it (rate-limited).
        Err(e) if conn.ctl.closing() => {
            log::debug!("connection {id}: cut during the handshake: {e}");
            return Outcome::Handshake(e);
        }
        Err(e) => {
            log::info!("connection {id}: handshake failed: {e}");
            return Outcome::Handshake(e);
        }
    };
    log::info!(
        "connection {id}: serving export {:?} ({} bytes, {:?}{})",
        t.slot.name,
        t.size,
        t.flags,
        if t.constraints_agreed {
            ", block sizes agreed"
        } else {
            ""
        }
    );
    let (ended, stats) = transmission(&mut r, writer, &t, &conn.ctl, config, observer);
    match &ended {
        Ended::Disconnect | Ended::Eof => log::info!(
            "connection {id}: closed after {} requests{}",
            stats.requests,
            if conn.ctl.closing() {
                " (export closed or server stopping)"
            } else {
                ""
            }
        ),
        Ended::Idle(t) => log::info!(
            "connection {id}: closed after {} requests, idle for {} s",
            stats.requests,
            t.as_secs()
        ),
        Ended::Error(e) => log::warn!(
            "connection {id}: ended after {} requests: {e}",
            stats.requests
        ),
    }
    Outcome::Transmission(ended, stats)
}

fn handshake<R: Read, W: Write>(
    r: &mut R,
    w: &mut W,
    ctx: &Ctx<'_, '_>,
) -> Result<Transmission, HandshakeError> {
    let mut state = Start.greet(w)?.receive(r)?;
    loop {
        match state.receive(r, w, ctx)? {
            Next::Option(s) => state = s,
            Next::Transmission(t) => return Ok(t),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The sections under these locks leave no state half-updated if a thread panics.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Request buffers kept for reuse: a fresh large allocation costs page faults (and
/// zeroing) on every request.
struct Pool {
    free: Mutex<(Vec<Vec<u8>>, usize)>,
    retain_bytes: usize,
    peak_buffer: AtomicUsize,
}

impl Pool {
    fn get(&self, len: usize) -> Vec<u8> {
        // The property the fuzz target checks: no request makes us allocate more than one
        // maximum payload plus its reply header, whatever the client sent.
        assert!(
            len <= MAX_PAYLOAD as usize + SIMPLE_REPLY_LEN,
            "request buffer of {len} bytes exceeds the payload limit"
        );
        if len == 0 {
            return Vec::new();
        }
        self.peak_buffer.fetch_max(len, Ordering::Relaxed);
        let mut free = lock(&self.free);
        let fit = free
            .0
            .iter()
            .enumerate()
            .filter(|(_, b)| b.len() >= len)
            .min_by_key(|(_, b)| b.len())
            .map(|(i, _)| i);
        if let Some(i) = fit {
            let b = free.0.swap_remove(i);
            free.1 -= b.len();
            return b;
        }
        drop(free);
        // Zeroed by the allocator (fresh pages), not by a memset.
        vec![0u8; len]
    }

    fn put(&self, b: Vec<u8>) {
        if b.is_empty() {
            return;
        }
        let mut free = lock(&self.free);
        if free.0.len() < POOLED_BUFFERS && free.1 + b.len() <= self.retain_bytes {
            free.1 += b.len();
            free.0.push(b);
        }
    }
}

struct Job {
    cookie: u64,
    op: Op,
    buf: Vec<u8>,
    cost: usize,
}

/// What the requests in flight hold, and who waits for what. Notifying a `Condvar` is a
/// system call even when nobody waits, so the waits are counted and the notifications
/// made only for a waiter.
#[derive(Default)]
struct Queue {
    in_flight: usize,
    bytes: usize,
    peak_bytes: usize,
    /// The thread holding the turn waits for room (a reply to go out).
    waiting_for_room: bool,
    /// Threads serving this connection.
    threads: usize,
}

/// The reading side, held by whichever thread has the turn.
struct Input<'r, R> {
    r: &'r mut BufReader<R>,
    /// Why reading stopped, once it has: the threads that get the turn after leave.
    ended: Option<Ended>,
    requests: u64,
}

struct Out<W> {
    w: W,
    failed: bool,
}

struct Shared<'a, 'r, R, W> {
    export: &'a dyn BlockExport,
    ctl: &'a ConnCtl,
    config: ConnConfig,
    rules: Rules,
    observer: Observer<'a>,
    input: Mutex<Input<'r, R>>,
    /// Threads blocked waiting for the turn (so the one giving it up knows whether a new
    /// thread is needed to read the next request while it serves its own).
    waiting_for_turn: AtomicUsize,
    out: Mutex<Out<W>>,
    broken: AtomicBool,
    q: Mutex<Queue>,
    // The thread holding the turn waits here for room (a reply sent) or a broken
    // connection.
    room: Condvar,
    pool: Pool,
    // Average time the export took on recent quick requests, in nanoseconds.
    quick_ns: AtomicU64,
    // When the last reply went out, in nanoseconds after `started`: a client that is
    // receiving replies is not idle.
    started: Instant,
    last_reply_ns: AtomicU64,
}

/// A lone quick request is served without giving up the turn while quick requests take
/// less than this on average: about the cost of waking another thread to read.
const INLINE_BELOW_NS: u64 = 30_000;

impl<'a, 'r, R: Read + ReadTimeout + Send, W: Write + Send> Shared<'a, 'r, R, W> {
    fn broken(&self) -> bool {
        self.broken.load(Ordering::Acquire)
    }

    /// Sends one whole reply. After a failed write nothing more is sent (a partial reply
    /// has already desynchronised the stream) and the socket is shut down, which wakes the
    /// thread reading so the connection ends.
    fn send(&self, msg: &[u8]) {
        let mut out = lock(&self.out);
        if out.failed {
            return;
        }
        let res = out.w.write_all(msg).and_then(|()| out.w.flush());
        let since_start = self.started.elapsed().as_nanos();
        self.last_reply_ns.fetch_max(
            u64::try_from(since_start).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        if let Err(e) = res {
            out.failed = true;
            drop(out);
            log::info!("connection {}: writing a reply failed: {e}", self.ctl.id);
            self.broken.store(true, Ordering::Release);
            self.ctl.shutdown(Shutdown::Both);
            // Under the queue lock, so a thread about to wait for room cannot miss it.
            let _q = lock(&self.q);
            self.room.notify_all();
        }
    }

    /// Reserves room for a request costing `cost` buffer bytes, waiting for replies to go
    /// out if the connection is at its bound. One request is always admitted when none is
    /// in flight, so the largest legal request cannot stall. Returns the requests in flight
    /// including this one, or `None` if the connection broke.
    fn admit(&self, cost: usize) -> Option<usize> {
        let mut q = lock(&self.q);
        loop {
            if self.broken() {
                return None;
            }
            if q.in_flight == 0
                || (q.in_flight < self.config.max_in_flight_requests
                    && q.bytes + cost <= self.config.max_in_flight_bytes)
            {
                q.in_flight += 1;
                q.bytes += cost;
                q.peak_bytes = q.peak_bytes.max(q.bytes);
                self.ctl.request_started();
                return Some(q.in_flight);
            }
            q.waiting_for_room = true;
            q = self.room.wait(q).unwrap_or_else(|e| e.into_inner());
            q.waiting_for_room = false;
        }
    }

    /// Gives back what `admit` reserved.
    fn release(&self, buf: Vec<u8>, cost: usize) {
        self.pool.put(buf);
        let mut q = lock(&self.q);
        q.in_flight -= 1;
        q.bytes -= cost;
        let wake = q.waiting_for_room;
        drop(q);
        self.ctl.request_ended();
        if wake {
            self.room.notify_one();
        }
    }

    /// Runs a job against the export and answers it.
    fn complete(&self, mut job: Job) {
        let started = Instant::now();
        let code = dispatch::execute(self.export, &job.op, &mut job.buf);
        if job.op.is_quick() {
            // Exponential average over about eight requests.
            let took = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
            let avg = self.quick_ns.load(Ordering::Relaxed);
            let avg = avg - avg / 8 + took / 8;
            self.quick_ns.store(avg, Ordering::Relaxed);
        }
        let reply = SimpleReply {
            error: code,
            cookie: job.cookie,
        };
        match job.op {
            Op::Read { len, .. } if code == ErrorCode::OK => {
                // The header goes in the room left in front of the data: one write.
                let n = SIMPLE_REPLY_LEN + len as usize;
                if len == 0 {
                    self.send(&reply.encode());
                } else if reply.encode_into(&mut job.buf) {
                    self.send(&job.buf[..n]);
                }
            }
            _ => self.send(&reply.encode()),
        }
        self.release(job.buf, job.cost);
    }

    /// One thread's life: take the turn, read the next request, give the turn up and serve
    /// the request; again, until reading has stopped. A short request that arrived alone
    /// (nothing in flight, nothing more received) is served without giving up the turn:
    /// waking another thread to read would put a thread switch on the critical path of a
    /// queue-depth-1 client, which waits for this reply before sending anything. Only
    /// while such requests are fast (page-cache hits): meanwhile nobody reads, so a
    /// request arriving behind a slow one would wait for it. Flush, FUA and large requests
    /// always give the turn up first.
    fn serve_turns<'s>(&'s self, scope: &'s Scope<'s, '_>)
    where
        'a: 's,
        'r: 's,
    {
        loop {
            self.waiting_for_turn.fetch_add(1, Ordering::AcqRel);
            let mut input = lock(&self.input);
            self.waiting_for_turn.fetch_sub(1, Ordering::AcqRel);
            if input.ended.is_some() {
                return;
            }
            let (job, in_flight) = match self.next_request(&mut input) {
                Ok(next) => next,
                Err(ended) => {
                    input.ended = Some(ended);
                    return;
                }
            };
            let alone = in_flight == 1
                && input.r.buffer().is_empty()
                && job.op.is_quick()
                && self.quick_ns.load(Ordering::Relaxed) < INLINE_BELOW_NS;
            if alone || self.config.workers <= 1 {
                self.complete(job);
                continue;
            }
            if self.waiting_for_turn.load(Ordering::Acquire) == 0 {
                self.start_thread(scope);
            }
            drop(input);
            self.complete(job);
        }
    }

    /// Starts one more thread to take turns, if the connection may have one more. When it
    /// cannot start, this one comes back for the turn after serving its request, so
    /// nothing waits for a thread that never came.
    fn start_thread<'s>(&'s self, scope: &'s Scope<'s, '_>)
    where
        'a: 's,
        'r: 's,
    {
        let mut q = lock(&self.q);
        if q.threads >= self.config.workers {
            return;
        }
        q.threads += 1;
        let n = q.threads;
        drop(q);
        let started = thread::Builder::new()
            .name(format!("nbd-{}-t{n}", self.ctl.id))
            .spawn_scoped(scope, move || self.serve_turns(scope));
        if let Err(e) = started {
            log::warn!("connection {}: cannot start a thread: {e}", self.ctl.id);
            lock(&self.q).threads -= 1;
        }
    }

    /// Reads requests until one is to be run on the export, answering invalid ones; it is
    /// returned admitted, its write payload read, with the requests now in flight. `Err`
    /// says why reading stopped.
    fn next_request(&self, input: &mut Input<'r, R>) -> Result<(Job, usize), Ended> {
        let mut hb = [0u8; REQUEST_LEN];
        loop {
            if let Some(idle) = self.config.idle_timeout {
                match self.wait_for_request(input.r, idle) {
                    Ok(false) => {}
                    Ok(true) => return Err(Ended::Idle(idle)),
                    Err(e) => return Err(Ended::Error(TransmissionError::Read(e))),
                }
            }
            match read_header(input.r, &mut hb) {
                Ok(true) => {}
                Ok(false) => return Err(Ended::Eof),
                Err(e) => return Err(Ended::Error(TransmissionError::Read(e))),
            }
            let req = match Request::decode(&hb) {
                Ok(req) => req,
                Err(e) => return Err(Ended::Error(TransmissionError::Wire(e))),
            };
            input.requests += 1;
            if let Some(observe) = self.observer {
                observe(&req);
            }
            if req.command == Command::DISC {
                return Err(Ended::Disconnect);
            }
            let payload = if req.command == Command::WRITE {
                req.len
            } else {
                0
            };
            if payload > MAX_PAYLOAD {
                return Err(Ended::Error(TransmissionError::PayloadTooLarge {
                    command: req.command,
                    len: payload,
                    max: MAX_PAYLOAD,
                }));
            }
            if self.broken() {
                return Err(Ended::Error(TransmissionError::Write(
                    io::ErrorKind::BrokenPipe.into(),
                )));
            }
            // Once the export is closing, what is still buffered is refused with
            // ESHUTDOWN, which tells the client to disconnect.
            let checked = if self.ctl.closing() {
                Err(ErrorCode::ESHUTDOWN)
            } else {
                dispatch::check(&req, &self.rules)
            };
            let op = match checked {
                Ok(op) => op,
                Err(code) => {
                    log::debug!("connection {}: {req:?} refused: {code}", self.ctl.id);
                    // The payload of a refused write is read and dropped, so the next
                    // header is where the client put it.
                    if let Err(e) = skip(input.r, payload) {
                        return Err(Ended::Error(TransmissionError::Read(e)));
                    }
                    self.send(
                        &SimpleReply {
                            error: code,
                            cookie: req.cookie,
                        }
                        .encode(),
                    );
                    continue;
                }
            };
            let cost = op.buffer_len();
            let Some(in_flight) = self.admit(cost) else {
                return Err(Ended::Error(TransmissionError::Write(
                    io::ErrorKind::BrokenPipe.into(),
                )));
            };
            let mut buf = self.pool.get(cost);
            if let Op::Write { len, .. } = op {
                if let Err(e) = input.r.read_exact(&mut buf[..len as usize]) {
                    self.release(buf, cost);
                    return Err(Ended::Error(TransmissionError::Read(e)));
                }
            }
            let job = Job {
                cookie: req.cookie,
                op,
                buf,
                cost,
            };
            return Ok((job, in_flight));
        }
    }

    /// Waits for the first byte of the next request, at most until the connection has been
    /// idle for `idle`: nothing in flight, no reply sent and nothing received for that
    /// long. Returns true when it was. The time limit is lifted once a byte has arrived,
    /// so a request that has begun is never cut, however slowly it arrives.
    fn wait_for_request(&self, r: &mut BufReader<R>, idle: Duration) -> io::Result<bool> {
        if !r.buffer().is_empty() {
            return Ok(false);
        }
        let waiting_since = Instant::now();
        let idle_now = loop {
            let last_reply =
                self.started + Duration::from_nanos(self.last_reply_ns.load(Ordering::Relaxed));
            let last = waiting_since.max(last_reply);
            let quiet = last.elapsed();
            let in_flight = lock(&self.q).in_flight;
            if in_flight == 0 && quiet >= idle {
                break true;
            }
            // While requests run, look again after a whole period: their replies restart
            // the count.
            let wait = match idle.checked_sub(quiet) {
                Some(left) if in_flight == 0 => left,
                _ => idle,
            };
            r.get_ref()
                .set_read_timeout(Some(wait.max(Duration::from_millis(1))))?;
            match r.fill_buf() {
                // Data, or end of file: the caller reads either.
                Ok(_) => break false,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(e),
            }
        };
        r.get_ref().set_read_timeout(None)?;
        Ok(idle_now)
    }
}

/// Reads one request header. `Ok(false)` is a clean end of file between requests.
fn read_header<R: Read>(r: &mut R, b: &mut [u8; REQUEST_LEN]) -> io::Result<bool> {
    let mut got = 0;
    while got < b.len() {
        match r.read(&mut b[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Reads and drops `len` payload bytes without buffering them.
fn skip<R: Read>(r: &mut R, len: u32) -> io::Result<()> {
    let n = io::copy(&mut r.take(u64::from(len)), &mut io::sink())?;
    if n < u64::from(len) {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

fn transmission<R: Read + ReadTimeout + Send, W: Write + Send>(
    r: &mut BufReader<R>,
    w: W,
    t: &Transmission,
    ctl: &ConnCtl,
    config: &ConnConfig,
    observer: Observer<'_>,
) -> (Ended, ConnStats) {
    let shared = Shared {
        export: t.export.as_ref(),
        ctl,
        config: *config,
        rules: Rules::new(t),
        observer,
        input: Mutex::new(Input {
            r,
            ended: None,
            requests: 0,
        }),
        waiting_for_turn: AtomicUsize::new(0),
        out: Mutex::new(Out { w, failed: false }),
        broken: AtomicBool::new(false),
        q: Mutex::new(Queue {
            threads: 1,
            ..Queue::default()
        }),
        room: Condvar::new(),
        pool: Pool {
            free: Mutex::new((Vec::new(), 0)),
            retain_bytes: config.max_in_flight_bytes,
            peak_buffer: AtomicUsize::new(0),
        },
        quick_ns: AtomicU64::new(0),
        started: Instant::now(),
        last_reply_ns: AtomicU64::new(0),
    };
    // This thread takes the first turn; the scope waits for every thread it started, so
    // every request read has been answered (or found the client gone) before we return.
    thread::scope(|scope| shared.serve_turns(scope));
    let input = shared.input.into_inner().unwrap_or_else(|e| e.into_inner());
    let q = lock(&shared.q);
    let stats = ConnStats {
        requests: input.requests,
        peak_buffer: shared.pool.peak_buffer.load(Ordering::Relaxed),
        peak_in_flight_bytes: q.peak_bytes,
    };
    let ended = input.ended.unwrap_or(Ended::Eof);
    (ended, stats)
}
