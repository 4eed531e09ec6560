//! Every bound the server puts on what a peer can make it read, allocate or wait for, and
//! why each value was chosen. Peers are untrusted until the handshake ends (and a buggy or
//! hostile client stays so after it): no length, count or name the client sends is used
//! before it is checked against one of these.

use std::time::Duration;

/// Largest payload of one request or reply (`NBD_CMD_WRITE` data, `NBD_CMD_READ` length):
/// 32 MiB. The specification says a payload up to 2^25 bytes SHOULD NOT be treated as a
/// denial of service, so this is the smallest value every client may assume; it is what we
/// advertise as the maximum block size (or less, if the export asks for less). A write
/// announcing more cannot be skipped safely and ends the connection.
pub const MAX_PAYLOAD: u32 = 32 << 20;

/// Longest string (export name, description) the protocol allows: 4096 bytes.
pub const MAX_STRING: usize = 4096;

/// Largest option data read into memory: 8 KiB. The largest option this server acts on is
/// `NBD_OPT_GO`/`NBD_OPT_INFO` with a name of [`MAX_STRING`] bytes (4 + 4096 + 2 bytes) and
/// a list of information requests (we know four; a few dozen duplicates still fit).
pub const MAX_OPTION_DATA: u32 = 8 << 10;

/// Largest option data skipped without reading it into memory (in small chunks), answered
/// with `NBD_REP_ERR_TOO_BIG` so the client can carry on: 64 KiB. Beyond that the option
/// is treated as a denial of service and the connection is dropped, as the specification
/// permits; no option we know of comes near.
pub const MAX_OPTION_SKIP: u32 = 64 << 10;

/// Options accepted on one connection before the server drops it: 256. A well-behaved
/// client needs a handful (libnbd: about five; `nbdinfo --list`: two per export), so this
/// only stops a client that would keep a handshake slot forever by looping on options;
/// the handshake deadline stops a slow one.
pub const MAX_OPTIONS: u32 = 256;

/// Connections (in handshake or transmission) served at once, by default: 64. Each costs
/// a thread, a read buffer and up to [`DEFAULT_MAX_IN_FLIGHT_BYTES`] of request buffers.
/// When the table is full, a new connection evicts the oldest one that has not finished
/// its handshake (issue 19: on loopback TCP any local account can connect, and 64 silent
/// sockets used to lock the export's owner out until their deadline). A client's
/// handshake takes a few milliseconds, so only stalled ones are evicted first. When every
/// slot serves a client, the idle one active least recently goes; the newcomer is closed
/// only when every slot has a request in flight.
pub const DEFAULT_MAX_CONNECTIONS: usize = 64;

/// Connections the server has cut (evicted, or past their handshake deadline) whose
/// threads have not ended yet, at most: 64. They do not count against the connection cap,
/// so an eviction frees its slot at once; their sockets are shut down both ways, so each
/// thread ends within microseconds, and this bound only matters if those threads are
/// starved of CPU. At the bound, the accept loop waits for one of them to end (at most
/// [`CUT_WAIT`]), which slows a flood down to the pace at which they end.
pub const MAX_CUT_CONNECTIONS: usize = 64;

/// Longest the accept loop waits for a cut connection to end when [`MAX_CUT_CONNECTIONS`]
/// have not, before it closes the newcomer: 1 s. Only reached if the threads of cut
/// connections cannot run at all.
pub const CUT_WAIT: Duration = Duration::from_secs(1);

/// Time a client has from connecting to entering transmission, by default: 10 s. An idle
/// or slow unauthenticated socket holds a connection slot; the deadline gives it back. It
/// runs from the accept, whatever the peer sends (a silent socket and one trickling a
/// byte at a time are cut at the same moment): the accept loop wakes at each deadline and
/// shuts the socket down, which ends any read or write the connection is blocked in.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Time a connection in transmission may stay idle (no request in flight and no byte of a
/// new one received) before the server closes it, by default: none (off). Off because the
/// clients this serves hold idle connections on purpose: the kernel's NBD client keeps
/// one per mapped device for as long as the device is mapped, and qemu one per open disk;
/// cutting them surfaces as I/O errors in a mounted file system. Nor would it be a
/// boundary: whoever can finish the handshake can read the export. Operators who serve
/// short-lived tools only may set [`crate::ServerOptions::idle_timeout`]. It is only ever
/// checked between requests: once the first byte of a request has arrived, the request
/// takes as long as the client needs, and a request running on the export is never cut.
pub const DEFAULT_IDLE_TIMEOUT: Option<Duration> = None;

/// Log lines about connections refused or cut are written at most this often per kind,
/// each with how many happened since the last: 10 s. A flood of sockets must not become
/// a flood of log lines.
pub const NOTICE_INTERVAL: Duration = Duration::from_secs(10);

/// How long a reply may wait for the client to read, by default: 60 s. A client that stops
/// reading its replies would otherwise hold the connection's threads (and the export's
/// close) forever.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(60);

/// Threads per connection that take turns reading requests and serve what they read, by
/// default: 4 (so at most 4 requests of a connection are in flight at once; the rest wait
/// in the socket, as with nbdkit's threads). A client that sends large writes without
/// reading the replies to its reads can therefore fill both directions of the socket
/// sooner than when a reader thread took in up to [`DEFAULT_MAX_IN_FLIGHT_BYTES`]; the
/// write timeout ([`DEFAULT_WRITE_TIMEOUT`]) ends such a connection. Four keep both cores
/// of the benchmark machine busy when the export spends CPU (decryption) and leave
/// requests running while others wait on a disk.
/// Threads start on demand, and a lone quick request is served by the thread that read
/// it without waking another, so a queue-depth-1 client costs no thread switch.
pub const DEFAULT_WORKERS: usize = 4;

/// Requests parsed but not yet answered on one connection, by default: 128. Each thread
/// of a connection holds at most one request, so with the default threads this bound is
/// not reached; it matters when `workers_per_connection` is set higher. Past it, reading
/// stops until a reply has gone out.
pub const DEFAULT_MAX_IN_FLIGHT_REQUESTS: usize = 128;

/// Bytes of request buffers (write payloads, read replies) held by one connection at once,
/// by default: 64 MiB, two maximum-size requests. One request is always admitted when
/// none is in flight, so a [`MAX_PAYLOAD`] request can never stall.
pub const DEFAULT_MAX_IN_FLIGHT_BYTES: usize = 64 << 20;

/// Read buffer in front of the socket: 256 KiB. Queue-depth-32 clients send many 28-byte
/// headers (and small write payloads) back to back; one system call takes in all that has
/// arrived instead of one or two per request. (On the 2-vCPU benchmark machine the gain
/// was inside the run-to-run noise; it costs 256 KiB per connection.) Payloads larger
/// than the buffer are read straight into their request buffer.
pub const READ_BUFFER: usize = 256 << 10;

/// Zero buffer used by the default `write_zeroes`: 1 MiB. Bounds the memory of a request
/// whose length (up to 4 GiB - 1, with no payload) the client chooses freely.
pub const WRITE_ZEROES_CHUNK: usize = 1 << 20;

/// Buffers kept for reuse per connection: 32. Reuse saves a page-faulting allocation per
/// large request; the pool holds no more than this many, nor more than the in-flight byte
/// bound.
pub const POOLED_BUFFERS: usize = 32;
