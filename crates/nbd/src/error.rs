//! Errors, one type per layer, each variant naming the exact failure.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

use crate::wire::{Command, OptionType};

/// A malformed fixed structure on the wire.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    /// Fewer bytes than the structure needs.
    #[error("truncated message")]
    Truncated,
    /// The server greeting does not start with `NBDMAGIC` `IHAVEOPT`.
    #[error("not an NBD newstyle greeting (magic {magic:#x}, {opt:#x})")]
    BadGreeting {
        /// First 8 bytes.
        magic: u64,
        /// Second 8 bytes.
        opt: u64,
    },
    /// An option does not start with `IHAVEOPT`.
    #[error("option magic {0:#x} is not IHAVEOPT")]
    BadOptionMagic(u64),
    /// An option reply has the wrong magic.
    #[error("option reply magic {0:#x} is wrong")]
    BadOptionReplyMagic(u64),
    /// A request does not start with `NBD_REQUEST_MAGIC`.
    #[error("request magic {0:#x} is not NBD_REQUEST_MAGIC")]
    BadRequestMagic(u32),
    /// A reply does not start with `NBD_SIMPLE_REPLY_MAGIC`.
    #[error("reply magic {0:#x} is not NBD_SIMPLE_REPLY_MAGIC")]
    BadReplyMagic(u32),
    /// A string longer than the protocol's 4096 bytes.
    #[error("string of {0} bytes exceeds 4096")]
    StringTooLong(usize),
    /// A string that is not UTF-8.
    #[error("string is not UTF-8")]
    StringNotUtf8,
    /// A string containing NUL.
    #[error("string contains NUL")]
    StringHasNul,
    /// `NBD_OPT_INFO`/`NBD_OPT_GO` whose request count does not match its data.
    #[error("{count} information requests but {bytes} bytes left for them")]
    InfoCountMismatch {
        /// The count the client sent.
        count: u16,
        /// The bytes that followed it.
        bytes: usize,
    },
}

/// Why a connection ended before reaching transmission.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// Reading or writing the socket failed (includes the client going away and the
    /// handshake deadline, which shuts the socket down).
    #[error("handshake I/O: {0}")]
    Io(#[from] io::Error),
    /// The client did not set `NBD_FLAG_C_FIXED_NEWSTYLE`: an oldstyle or plain-newstyle
    /// client, which this server does not serve.
    #[error(
        "client flags {0:#x} lack NBD_FLAG_C_FIXED_NEWSTYLE (non-fixed newstyle client refused)"
    )]
    NotFixedNewstyle(u32),
    /// The client set flags we did not offer; the specification requires dropping it.
    #[error("client flags {0:#x} include bits the server did not offer")]
    UnknownClientFlags(u32),
    /// The option stream lost sync (wrong magic).
    #[error("bad option header: {0}")]
    Wire(#[from] WireError),
    /// An option's data is too large to skip (see `limits::MAX_OPTION_SKIP`).
    #[error("{option} with {len} bytes of data exceeds the limit")]
    OptionTooLarge {
        /// The option.
        option: OptionType,
        /// Its announced length.
        len: u32,
    },
    /// More options than `limits::MAX_OPTIONS` on one connection.
    #[error("more than {0} options on one connection")]
    TooManyOptions(u32),
    /// `NBD_OPT_EXPORT_NAME` for an export that does not exist (or is closed); that option
    /// has no error reply, so the specification requires dropping the connection.
    #[error("NBD_OPT_EXPORT_NAME for unknown export {0:?}")]
    UnknownExportName(String),
    /// `NBD_OPT_EXPORT_NAME` whose name is not a valid protocol string.
    #[error("NBD_OPT_EXPORT_NAME with an invalid name: {0}")]
    BadExportName(WireError),
    /// `NBD_OPT_EXPORT_NAME` while the server is stopping (that option has no error reply).
    #[error("NBD_OPT_EXPORT_NAME while the server is stopping")]
    Stopping,
    /// The client ended the handshake with `NBD_OPT_ABORT` (not a failure).
    #[error("client aborted the handshake")]
    Aborted,
}

/// Why a connection in transmission ended other than by `NBD_CMD_DISC` or end of file.
#[derive(Debug, thiserror::Error)]
pub enum TransmissionError {
    /// Reading the socket failed.
    #[error("reading requests: {0}")]
    Read(io::Error),
    /// Writing a reply failed (the client went away or stopped reading).
    #[error("writing a reply: {0}")]
    Write(io::Error),
    /// A request header with the wrong magic: the stream is out of sync.
    #[error("request stream out of sync: {0}")]
    Wire(WireError),
    /// A write whose payload is larger than any we accept: skipping it would mean reading
    /// an attacker-chosen amount, so the stream cannot be trusted further.
    #[error("{command} with a payload of {len} bytes (maximum {max})")]
    PayloadTooLarge {
        /// The command.
        command: Command,
        /// Its announced length.
        len: u32,
        /// The limit.
        max: u32,
    },
}

/// Why binding a listener failed.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// TCP on an address other than loopback: this server has no TLS, so it must not be
    /// reachable from the network.
    #[error("refusing to listen on {0}: not a loopback address (NBD here has no TLS; use a Unix socket or 127.0.0.1/::1)")]
    NotLoopback(SocketAddr),
    /// A server is already accepting on this Unix socket.
    #[error("{0}: another server is listening on this socket")]
    SocketInUse(PathBuf),
    /// The path exists and is not a socket; it is never replaced.
    #[error("{0}: exists and is not a socket")]
    NotASocket(PathBuf),
    /// The path has no parent directory or file name.
    #[error("{0}: not a usable socket path")]
    BadPath(PathBuf),
    /// No address was given.
    #[error("no address to listen on")]
    NoAddress,
    /// Binding or preparing the Unix socket failed.
    #[error("{path}: {source}")]
    Unix {
        /// The socket path.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// Binding the TCP socket failed.
    #[error("{addr}: {source}")]
    Tcp {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: io::Error,
    },
}

/// Why an export could not be added.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ExportError {
    /// The empty name is reserved for "the default export".
    #[error("an export name must not be empty (\"\" selects the default export)")]
    EmptyName,
    /// The name is not a valid protocol string.
    #[error("export name: {0}")]
    BadName(WireError),
    /// The description is not a valid protocol string.
    #[error("export description: {0}")]
    BadDescription(WireError),
    /// An export of that name is already served.
    #[error("export {0:?} already exists")]
    Duplicate(String),
    /// Another export is already the default.
    #[error("export {0:?} is already the default export")]
    DuplicateDefault(String),
    /// The block sizes break the specification's rules.
    #[error("block size {minimum}/{preferred}/{maximum}: {why}")]
    BadBlockSize {
        /// Minimum.
        minimum: u32,
        /// Preferred.
        preferred: u32,
        /// Maximum.
        maximum: u32,
        /// The rule broken.
        why: &'static str,
    },
    /// The server has been stopped.
    #[error("the server is stopping")]
    Stopping,
}

/// Why [`crate::Server::run`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// `run` was called a second time (the listeners are consumed by the first call).
    #[error("the server has already run")]
    AlreadyRan,
    /// Waiting for connections failed.
    #[error("poll: {0}")]
    Poll(io::Error),
}
