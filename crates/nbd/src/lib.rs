//! atrest's NBD server: exports an unlocked volume as a block device to `qemu-img`,
//! `qemu-io`, `nbdcopy`, `nbdinfo` and `fio` (all tested against it) and other NBD
//! clients.
//!
//! The crate speaks the server side of the NBD protocol (the fixed newstyle handshake and
//! simple replies, after the NetworkBlockDevice `doc/proto.md` specification) and nothing
//! else: what it serves is any [`BlockExport`] (a byte range with read, write, flush,
//! write-zeroes and optional trim), so it knows nothing of KMIP, keys or LUKS; the daemon
//! passes it an unlocked volume, and closes the export ([`ExportHandle::close`]) to lock
//! the volume again. It listens on a Unix socket (mode 0600) or on loopback TCP only, as
//! there is no TLS on this road. It is written here rather than taken from crates.io
//! because the `nbd` crate (0.3) is an early synchronous sketch, and `tokio-nbd` is
//! licensed GPL-2.0-or-later, which this Apache-2.0 project cannot include.
//!
//! Layout, one concept per module: [`wire`] (magic numbers, numbered types, fixed headers),
//! `handshake` (one type per handshake state), `conn` (a connection: reading apart from
//! writing, threads taking turns), `dispatch` (requests onto the export, errors back),
//! [`limits`] (every bound and why), `listen` (Unix and loopback TCP listeners), `registry`
//! (exports and connection slots, eviction), `notice` (rate-limited log lines about refused
//! and cut connections), `server` (the accept loop and the handles), [`error`].
//!
//! Concurrency: a few threads per connection take turns reading; the thread that read a
//! request gives up the turn, runs the request on the export and writes its reply (header
//! and data in one write) under a lock, so no request is handed from thread to thread;
//! replies may leave out of order, each with its request's cookie. A short request that
//! arrives alone is served without giving up the turn while the export answers fast. See
//! [`ServerOptions`] and [`limits`] for the bounds.
//!
//! Untrusted peers: on loopback TCP any local account can connect, so a connection that
//! has not finished its handshake holds its slot only until its deadline
//! ([`ServerOptions::handshake_timeout`]), and when every slot is taken a newcomer evicts
//! the oldest such connection rather than being refused; when every slot serves a client,
//! the one with nothing in flight that was active least recently goes (silent clients past
//! the handshake held the owner out otherwise). A request in flight is never cut.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod conn;
mod dispatch;
pub mod error;
mod export;
/// The fuzz target's checker, for `fuzz/` and the tests; not in a shipped build.
#[cfg(feature = "test-support")]
pub mod fuzzing;
mod handshake;
pub mod limits;
mod listen;
mod notice;
mod registry;
mod server;
pub mod wire;

pub use error::{
    ExportError, HandshakeError, ListenError, ServerError, TransmissionError, WireError,
};
#[cfg(any(test, feature = "test-support"))]
pub use export::MemExport;
pub use export::{BlockExport, BlockSize};
pub use listen::ListenAddr;
pub use registry::ExportConfig;
pub use server::{ExportHandle, Server, ServerOptions, StopHandle};
