//! The bytes on the wire: magic numbers, the numbered types of options, replies, commands
//! and errors, and the fixed-size headers of both phases.
//!
//! Every value a peer chooses (option, reply type, command, error, flags) is a newtype over
//! its wire integer rather than an enum, because the protocol requires us to receive values
//! we do not know and answer them (`NBD_REP_ERR_UNSUP`, `NBD_EINVAL`) instead of failing to
//! parse. Decoders take fixed arrays or bounded slices and return errors, never panic: the
//! fuzz target feeds them arbitrary bytes. Both directions are here (the server only needs
//! half of them) so that tests and the fuzz checker can play the client with the same code;
//! the client's half is built only for them (feature `test-support`).

use std::fmt;

use crate::error::WireError;
use crate::limits::MAX_STRING;

/// `NBDMAGIC`, first 8 bytes the server sends.
pub const NBD_MAGIC: u64 = 0x4e42_444d_4147_4943;
/// `IHAVEOPT`: second 8 bytes of a newstyle greeting, and the start of every option.
pub const IHAVEOPT: u64 = 0x4948_4156_454F_5054;
/// The magic opening every option reply.
pub const OPTION_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
/// `NBD_REQUEST_MAGIC`: opens every transmission request.
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
/// `NBD_EXTENDED_REQUEST_MAGIC`, only legal after `NBD_OPT_EXTENDED_HEADERS`, which this
/// server refuses; recognised so the log can name the client's mistake.
pub const EXTENDED_REQUEST_MAGIC: u32 = 0x21e4_1c71;
/// `NBD_SIMPLE_REPLY_MAGIC`: opens every reply this server sends in transmission.
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;

/// Handshake flag `NBD_FLAG_FIXED_NEWSTYLE`.
pub const FLAG_FIXED_NEWSTYLE: u16 = 1 << 0;
/// Handshake flag `NBD_FLAG_NO_ZEROES`.
pub const FLAG_NO_ZEROES: u16 = 1 << 1;
/// Client flag `NBD_FLAG_C_FIXED_NEWSTYLE`.
pub const FLAG_C_FIXED_NEWSTYLE: u32 = 1 << 0;
/// Client flag `NBD_FLAG_C_NO_ZEROES`.
pub const FLAG_C_NO_ZEROES: u32 = 1 << 1;

/// Size of the server greeting: magic, `IHAVEOPT`, handshake flags.
pub const GREETING_LEN: usize = 18;
/// Size of an option header: `IHAVEOPT`, option, length.
pub const OPTION_HEADER_LEN: usize = 16;
/// Size of an option reply header: magic, option, reply type, length.
pub const OPTION_REPLY_HEADER_LEN: usize = 20;
/// Size of a request header.
pub const REQUEST_LEN: usize = 28;
/// Size of a simple reply header.
pub const SIMPLE_REPLY_LEN: usize = 16;
/// The reserved zeroes after the `NBD_OPT_EXPORT_NAME` reply, unless the client negotiated
/// `NBD_FLAG_C_NO_ZEROES`.
pub const EXPORT_NAME_ZEROES: usize = 124;

macro_rules! wire_newtype {
    ($(#[$doc:meta])* $name:ident($int:ty) { $($(#[$cdoc:meta])* $konst:ident = $val:expr => $wire:literal,)* }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash)]
        pub struct $name(pub $int);

        impl $name {
            $($(#[$cdoc])* pub const $konst: $name = $name($val);)*

            /// The specification's name for this value, if it has one we know.
            pub fn name(self) -> Option<&'static str> {
                match self.0 {
                    $(v if v == $val => Some($wire),)*
                    _ => None,
                }
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self.name() {
                    Some(n) => f.write_str(n),
                    None => write!(f, "{}({:#x})", stringify!($name), self.0),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(self, f)
            }
        }
    };
}

wire_newtype! {
    /// An option a client sends during the handshake (`NBD_OPT_*`).
    OptionType(u32) {
        /// Select an export and enter transmission; no way to report an error.
        EXPORT_NAME = 1 => "NBD_OPT_EXPORT_NAME",
        /// End the handshake (soft disconnect).
        ABORT = 2 => "NBD_OPT_ABORT",
        /// List the exports.
        LIST = 3 => "NBD_OPT_LIST",
        /// Withdrawn extension.
        PEEK_EXPORT = 4 => "NBD_OPT_PEEK_EXPORT",
        /// Upgrade to TLS.
        STARTTLS = 5 => "NBD_OPT_STARTTLS",
        /// Describe an export without selecting it.
        INFO = 6 => "NBD_OPT_INFO",
        /// Describe and select an export, then enter transmission.
        GO = 7 => "NBD_OPT_GO",
        /// Ask for structured replies.
        STRUCTURED_REPLY = 8 => "NBD_OPT_STRUCTURED_REPLY",
        /// List metadata contexts.
        LIST_META_CONTEXT = 9 => "NBD_OPT_LIST_META_CONTEXT",
        /// Select metadata contexts.
        SET_META_CONTEXT = 10 => "NBD_OPT_SET_META_CONTEXT",
        /// Ask for 64-bit headers.
        EXTENDED_HEADERS = 11 => "NBD_OPT_EXTENDED_HEADERS",
    }
}

wire_newtype! {
    /// The type of an option reply (`NBD_REP_*`); errors have bit 31 set.
    ReplyType(u32) {
        /// Success, no more data.
        ACK = 1 => "NBD_REP_ACK",
        /// One export of an `NBD_OPT_LIST`.
        SERVER = 2 => "NBD_REP_SERVER",
        /// One item of information for `NBD_OPT_INFO`/`NBD_OPT_GO`.
        INFO = 3 => "NBD_REP_INFO",
        /// One metadata context.
        META_CONTEXT = 4 => "NBD_REP_META_CONTEXT",
        /// The option is unknown to this server.
        ERR_UNSUP = (1 << 31) + 1 => "NBD_REP_ERR_UNSUP",
        /// Known and valid, but refused by policy.
        ERR_POLICY = (1 << 31) + 2 => "NBD_REP_ERR_POLICY",
        /// Known, but syntactically or semantically invalid.
        ERR_INVALID = (1 << 31) + 3 => "NBD_REP_ERR_INVALID",
        /// Not supported on this platform or build.
        ERR_PLATFORM = (1 << 31) + 4 => "NBD_REP_ERR_PLATFORM",
        /// TLS required first.
        ERR_TLS_REQD = (1 << 31) + 5 => "NBD_REP_ERR_TLS_REQD",
        /// No such export.
        ERR_UNKNOWN = (1 << 31) + 6 => "NBD_REP_ERR_UNKNOWN",
        /// The server is shutting down.
        ERR_SHUTDOWN = (1 << 31) + 7 => "NBD_REP_ERR_SHUTDOWN",
        /// The client must request `NBD_INFO_BLOCK_SIZE`.
        ERR_BLOCK_SIZE_REQD = (1 << 31) + 8 => "NBD_REP_ERR_BLOCK_SIZE_REQD",
        /// The request or its reply is too large.
        ERR_TOO_BIG = (1 << 31) + 9 => "NBD_REP_ERR_TOO_BIG",
        /// Extended headers required first.
        ERR_EXT_HEADER_REQD = (1 << 31) + 10 => "NBD_REP_ERR_EXT_HEADER_REQD",
    }
}

impl ReplyType {
    /// Whether this reply type is an error (bit 31).
    pub fn is_error(self) -> bool {
        self.0 & (1 << 31) != 0
    }
}

wire_newtype! {
    /// An information item of `NBD_OPT_INFO`/`NBD_OPT_GO` (`NBD_INFO_*`).
    InfoType(u16) {
        /// Size and transmission flags (mandatory).
        EXPORT = 0 => "NBD_INFO_EXPORT",
        /// Canonical name.
        NAME = 1 => "NBD_INFO_NAME",
        /// Human-readable description.
        DESCRIPTION = 2 => "NBD_INFO_DESCRIPTION",
        /// Minimum, preferred and maximum block sizes.
        BLOCK_SIZE = 3 => "NBD_INFO_BLOCK_SIZE",
    }
}

wire_newtype! {
    /// A transmission command (`NBD_CMD_*`).
    Command(u16) {
        /// Read.
        READ = 0 => "NBD_CMD_READ",
        /// Write (payload follows the header).
        WRITE = 1 => "NBD_CMD_WRITE",
        /// Disconnect (no reply).
        DISC = 2 => "NBD_CMD_DISC",
        /// Make completed writes durable.
        FLUSH = 3 => "NBD_CMD_FLUSH",
        /// Discard hint.
        TRIM = 4 => "NBD_CMD_TRIM",
        /// Prefetch hint.
        CACHE = 5 => "NBD_CMD_CACHE",
        /// Write zeroes without a payload.
        WRITE_ZEROES = 6 => "NBD_CMD_WRITE_ZEROES",
        /// Metadata query (needs structured replies).
        BLOCK_STATUS = 7 => "NBD_CMD_BLOCK_STATUS",
        /// Experimental resize.
        RESIZE = 8 => "NBD_CMD_RESIZE",
    }
}

wire_newtype! {
    /// The error field of a reply (`NBD_E*`); zero is success.
    ErrorCode(u32) {
        /// Success.
        OK = 0 => "OK",
        /// Operation not permitted (write to a read-only export).
        EPERM = 1 => "NBD_EPERM",
        /// Input/output error.
        EIO = 5 => "NBD_EIO",
        /// Cannot allocate memory.
        ENOMEM = 12 => "NBD_ENOMEM",
        /// Invalid argument.
        EINVAL = 22 => "NBD_EINVAL",
        /// No space left (write past the end).
        ENOSPC = 28 => "NBD_ENOSPC",
        /// Value too large.
        EOVERFLOW = 75 => "NBD_EOVERFLOW",
        /// Operation not supported.
        ENOTSUP = 95 => "NBD_ENOTSUP",
        /// The server is shutting down: the client must disconnect.
        ESHUTDOWN = 108 => "NBD_ESHUTDOWN",
    }
}

/// The 16-bit transmission flags sent with an export's size (`NBD_FLAG_*`).
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct TransmissionFlags(pub u16);

impl TransmissionFlags {
    /// Must always be set.
    pub const HAS_FLAGS: u16 = 1 << 0;
    /// The export is read-only.
    pub const READ_ONLY: u16 = 1 << 1;
    /// `NBD_CMD_FLUSH` is supported.
    pub const SEND_FLUSH: u16 = 1 << 2;
    /// `NBD_CMD_FLAG_FUA` is supported.
    pub const SEND_FUA: u16 = 1 << 3;
    /// Rotational medium hint.
    pub const ROTATIONAL: u16 = 1 << 4;
    /// `NBD_CMD_TRIM` is supported.
    pub const SEND_TRIM: u16 = 1 << 5;
    /// `NBD_CMD_WRITE_ZEROES` (and `NBD_CMD_FLAG_NO_HOLE`) are supported.
    pub const SEND_WRITE_ZEROES: u16 = 1 << 6;
    /// `NBD_CMD_FLAG_DF` is supported (structured replies only).
    pub const SEND_DF: u16 = 1 << 7;
    /// Flush and FUA on one connection cover every connection to the export.
    pub const CAN_MULTI_CONN: u16 = 1 << 8;
    /// Experimental resize.
    pub const SEND_RESIZE: u16 = 1 << 9;
    /// `NBD_CMD_CACHE` is supported.
    pub const SEND_CACHE: u16 = 1 << 10;
    /// `NBD_CMD_FLAG_FAST_ZERO` is supported.
    pub const SEND_FAST_ZERO: u16 = 1 << 11;

    /// Whether every bit of `flag` is set.
    pub fn contains(self, flag: u16) -> bool {
        self.0 & flag == flag
    }
}

impl fmt::Debug for TransmissionFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const NAMES: [&str; 12] = [
            "HAS_FLAGS",
            "READ_ONLY",
            "SEND_FLUSH",
            "SEND_FUA",
            "ROTATIONAL",
            "SEND_TRIM",
            "SEND_WRITE_ZEROES",
            "SEND_DF",
            "CAN_MULTI_CONN",
            "SEND_RESIZE",
            "SEND_CACHE",
            "SEND_FAST_ZERO",
        ];
        let mut first = true;
        for bit in 0..16 {
            if self.0 & (1 << bit) == 0 {
                continue;
            }
            if !first {
                f.write_str("|")?;
            }
            first = false;
            match NAMES.get(bit) {
                Some(n) => f.write_str(n)?,
                None => write!(f, "bit{bit}")?,
            }
        }
        if first {
            f.write_str("0")?;
        }
        Ok(())
    }
}

/// The 16-bit command flags of a request (`NBD_CMD_FLAG_*`).
#[derive(Clone, Copy, PartialEq, Eq, Default, Debug)]
pub struct CommandFlags(pub u16);

impl CommandFlags {
    /// Force unit access: durable before the reply.
    pub const FUA: u16 = 1 << 0;
    /// `NBD_CMD_WRITE_ZEROES` must not punch a hole.
    pub const NO_HOLE: u16 = 1 << 1;
    /// Do not fragment a structured read reply.
    pub const DF: u16 = 1 << 2;
    /// One extent per context in a block status reply.
    pub const REQ_ONE: u16 = 1 << 3;
    /// Fail write zeroes at once if it would not be fast.
    pub const FAST_ZERO: u16 = 1 << 4;
    /// Extended headers: the length is a payload length.
    pub const PAYLOAD_LEN: u16 = 1 << 5;

    /// Whether every bit of `flag` is set.
    pub fn contains(self, flag: u16) -> bool {
        self.0 & flag == flag
    }
}

/// A never-panicking big-endian reader over a byte slice.
#[derive(Debug)]
pub struct Cursor<'a> {
    buf: &'a [u8],
}

impl<'a> Cursor<'a> {
    /// Reads from the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Cursor { buf }
    }

    /// The bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// The next `n` bytes, or `None` (consuming nothing) if fewer are left.
    pub fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.buf.len() {
            return None;
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Some(head)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, tail) = self.buf.split_first_chunk::<N>()?;
        self.buf = tail;
        Some(*head)
    }

    /// A big-endian `u16`.
    pub fn u16(&mut self) -> Option<u16> {
        self.array().map(u16::from_be_bytes)
    }

    /// A big-endian `u32`.
    pub fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_be_bytes)
    }

    /// A big-endian `u64`.
    pub fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_be_bytes)
    }
}

/// The server's newstyle greeting.
pub fn encode_greeting(handshake_flags: u16) -> [u8; GREETING_LEN] {
    let mut b = [0u8; GREETING_LEN];
    b[0..8].copy_from_slice(&NBD_MAGIC.to_be_bytes());
    b[8..16].copy_from_slice(&IHAVEOPT.to_be_bytes());
    b[16..18].copy_from_slice(&handshake_flags.to_be_bytes());
    b
}

/// Decodes a server greeting (client side), returning the handshake flags.
#[cfg(any(test, feature = "test-support"))]
pub fn decode_greeting(b: &[u8; GREETING_LEN]) -> Result<u16, WireError> {
    let mut c = Cursor::new(b);
    let magic = c.u64().ok_or(WireError::Truncated)?;
    let opt = c.u64().ok_or(WireError::Truncated)?;
    if magic != NBD_MAGIC || opt != IHAVEOPT {
        return Err(WireError::BadGreeting { magic, opt });
    }
    c.u16().ok_or(WireError::Truncated)
}

/// An option header, as the client sends it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OptionHeader {
    /// The option.
    pub option: OptionType,
    /// Length of the data that follows.
    pub len: u32,
}

impl OptionHeader {
    /// Decodes a header; a wrong magic means the stream cannot be followed any more.
    pub fn decode(b: &[u8; OPTION_HEADER_LEN]) -> Result<Self, WireError> {
        let mut c = Cursor::new(b);
        let magic = c.u64().ok_or(WireError::Truncated)?;
        if magic != IHAVEOPT {
            return Err(WireError::BadOptionMagic(magic));
        }
        let option = OptionType(c.u32().ok_or(WireError::Truncated)?);
        let len = c.u32().ok_or(WireError::Truncated)?;
        Ok(OptionHeader { option, len })
    }

    /// Encodes the header (client side).
    #[cfg(any(test, feature = "test-support"))]
    pub fn encode(&self) -> [u8; OPTION_HEADER_LEN] {
        let mut b = [0u8; OPTION_HEADER_LEN];
        b[0..8].copy_from_slice(&IHAVEOPT.to_be_bytes());
        b[8..12].copy_from_slice(&self.option.0.to_be_bytes());
        b[12..16].copy_from_slice(&self.len.to_be_bytes());
        b
    }
}

/// An option reply header, as the server sends it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OptionReplyHeader {
    /// The option answered.
    pub option: OptionType,
    /// The reply type.
    pub reply: ReplyType,
    /// Length of the data that follows.
    pub len: u32,
}

impl OptionReplyHeader {
    /// Encodes the header.
    pub fn encode(&self) -> [u8; OPTION_REPLY_HEADER_LEN] {
        let mut b = [0u8; OPTION_REPLY_HEADER_LEN];
        b[0..8].copy_from_slice(&OPTION_REPLY_MAGIC.to_be_bytes());
        b[8..12].copy_from_slice(&self.option.0.to_be_bytes());
        b[12..16].copy_from_slice(&self.reply.0.to_be_bytes());
        b[16..20].copy_from_slice(&self.len.to_be_bytes());
        b
    }

    /// Decodes a header (client side).
    #[cfg(any(test, feature = "test-support"))]
    pub fn decode(b: &[u8; OPTION_REPLY_HEADER_LEN]) -> Result<Self, WireError> {
        let mut c = Cursor::new(b);
        let magic = c.u64().ok_or(WireError::Truncated)?;
        if magic != OPTION_REPLY_MAGIC {
            return Err(WireError::BadOptionReplyMagic(magic));
        }
        Ok(OptionReplyHeader {
            option: OptionType(c.u32().ok_or(WireError::Truncated)?),
            reply: ReplyType(c.u32().ok_or(WireError::Truncated)?),
            len: c.u32().ok_or(WireError::Truncated)?,
        })
    }
}

/// The reply to `NBD_OPT_EXPORT_NAME`: size, transmission flags, and the 124 reserved
/// zeroes unless `no_zeroes`. Returns the buffer and how many of its bytes to send.
pub fn encode_export_name_reply(
    size: u64,
    flags: TransmissionFlags,
    no_zeroes: bool,
) -> ([u8; 10 + EXPORT_NAME_ZEROES], usize) {
    let mut b = [0u8; 10 + EXPORT_NAME_ZEROES];
    b[0..8].copy_from_slice(&size.to_be_bytes());
    b[8..10].copy_from_slice(&flags.0.to_be_bytes());
    let len = if no_zeroes {
        10
    } else {
        10 + EXPORT_NAME_ZEROES
    };
    (b, len)
}

/// The payload of `NBD_REP_INFO` / `NBD_INFO_EXPORT`.
pub fn encode_info_export(size: u64, flags: TransmissionFlags) -> [u8; 12] {
    let mut b = [0u8; 12];
    b[0..2].copy_from_slice(&InfoType::EXPORT.0.to_be_bytes());
    b[2..10].copy_from_slice(&size.to_be_bytes());
    b[10..12].copy_from_slice(&flags.0.to_be_bytes());
    b
}

/// The payload of `NBD_REP_INFO` / `NBD_INFO_BLOCK_SIZE`.
pub fn encode_info_block_size(minimum: u32, preferred: u32, maximum: u32) -> [u8; 14] {
    let mut b = [0u8; 14];
    b[0..2].copy_from_slice(&InfoType::BLOCK_SIZE.0.to_be_bytes());
    b[2..6].copy_from_slice(&minimum.to_be_bytes());
    b[6..10].copy_from_slice(&preferred.to_be_bytes());
    b[10..14].copy_from_slice(&maximum.to_be_bytes());
    b
}

/// The payload of an `NBD_REP_INFO` carrying a string (`NBD_INFO_NAME`,
/// `NBD_INFO_DESCRIPTION`).
pub fn encode_info_string(info: InfoType, s: &str) -> Vec<u8> {
    let mut b = Vec::with_capacity(2 + s.len());
    b.extend_from_slice(&info.0.to_be_bytes());
    b.extend_from_slice(s.as_bytes());
    b
}

/// The payload of `NBD_REP_SERVER`: the name's length, the name, then a description for
/// humans (the rest of the reply, which the specification leaves free-form).
pub fn encode_rep_server(name: &str, description: Option<&str>) -> Vec<u8> {
    let desc = description.unwrap_or("");
    let mut b = Vec::with_capacity(4 + name.len() + desc.len());
    b.extend_from_slice(&(name.len() as u32).to_be_bytes());
    b.extend_from_slice(name.as_bytes());
    b.extend_from_slice(desc.as_bytes());
    b
}

/// Checks a protocol string: UTF-8, no NUL, at most [`MAX_STRING`] bytes.
pub fn decode_string(b: &[u8]) -> Result<&str, WireError> {
    if b.len() > MAX_STRING {
        return Err(WireError::StringTooLong(b.len()));
    }
    let s = std::str::from_utf8(b).map_err(|_| WireError::StringNotUtf8)?;
    if s.contains('\0') {
        return Err(WireError::StringHasNul);
    }
    Ok(s)
}

/// The data of `NBD_OPT_INFO` and `NBD_OPT_GO`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InfoRequest<'a> {
    /// The export name ("" for the default export).
    pub name: &'a str,
    /// The information items asked for, in the client's order.
    pub requests: Vec<InfoType>,
}

impl<'a> InfoRequest<'a> {
    /// Parses the option data. The count of information requests must account for the
    /// data exactly: anything else is `NBD_REP_ERR_INVALID`.
    pub fn decode(data: &'a [u8]) -> Result<Self, WireError> {
        let mut c = Cursor::new(data);
        let name_len = c.u32().ok_or(WireError::Truncated)?;
        // Checked against what is there before use, so a hostile length allocates nothing.
        let name_len = usize::try_from(name_len).map_err(|_| WireError::Truncated)?;
        let name = c.bytes(name_len).ok_or(WireError::Truncated)?;
        let name = decode_string(name)?;
        let count = c.u16().ok_or(WireError::Truncated)?;
        if c.remaining() != usize::from(count) * 2 {
            return Err(WireError::InfoCountMismatch {
                count,
                bytes: c.remaining(),
            });
        }
        let mut requests = Vec::with_capacity(usize::from(count));
        for _ in 0..count {
            requests.push(InfoType(c.u16().ok_or(WireError::Truncated)?));
        }
        Ok(InfoRequest { name, requests })
    }

    /// Encodes the option data (client side).
    #[cfg(any(test, feature = "test-support"))]
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(6 + self.name.len() + 2 * self.requests.len());
        b.extend_from_slice(&(self.name.len() as u32).to_be_bytes());
        b.extend_from_slice(self.name.as_bytes());
        b.extend_from_slice(&(self.requests.len() as u16).to_be_bytes());
        for r in &self.requests {
            b.extend_from_slice(&r.0.to_be_bytes());
        }
        b
    }
}

/// A transmission request header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    /// Command flags.
    pub flags: CommandFlags,
    /// The command.
    pub command: Command,
    /// Opaque to the server, echoed in the reply.
    pub cookie: u64,
    /// Byte offset into the export.
    pub offset: u64,
    /// Length in bytes (of the payload, for `NBD_CMD_WRITE`).
    pub len: u32,
}

impl Request {
    /// Decodes a request header; a wrong magic means the stream cannot be followed any more.
    pub fn decode(b: &[u8; REQUEST_LEN]) -> Result<Self, WireError> {
        let mut c = Cursor::new(b);
        let magic = c.u32().ok_or(WireError::Truncated)?;
        if magic != REQUEST_MAGIC {
            return Err(WireError::BadRequestMagic(magic));
        }
        Ok(Request {
            flags: CommandFlags(c.u16().ok_or(WireError::Truncated)?),
            command: Command(c.u16().ok_or(WireError::Truncated)?),
            cookie: c.u64().ok_or(WireError::Truncated)?,
            offset: c.u64().ok_or(WireError::Truncated)?,
            len: c.u32().ok_or(WireError::Truncated)?,
        })
    }

    /// Encodes the header (client side).
    #[cfg(any(test, feature = "test-support"))]
    pub fn encode(&self) -> [u8; REQUEST_LEN] {
        let mut b = [0u8; REQUEST_LEN];
        b[0..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
        b[4..6].copy_from_slice(&self.flags.0.to_be_bytes());
        b[6..8].copy_from_slice(&self.command.0.to_be_bytes());
        b[8..16].copy_from_slice(&self.cookie.to_be_bytes());
        b[16..24].copy_from_slice(&self.offset.to_be_bytes());
        b[24..28].copy_from_slice(&self.len.to_be_bytes());
        b
    }
}

/// A simple reply header; for a successful read, the data follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SimpleReply {
    /// Zero for success.
    pub error: ErrorCode,
    /// The request's cookie.
    pub cookie: u64,
}

impl SimpleReply {
    /// Encodes the header into the first [`SIMPLE_REPLY_LEN`] bytes of `out`, which is
    /// where a read reply keeps it so header and data leave in one write. Returns `false`
    /// (writing nothing) if `out` is too short.
    pub fn encode_into(&self, out: &mut [u8]) -> bool {
        let Some(b) = out.first_chunk_mut::<SIMPLE_REPLY_LEN>() else {
            return false;
        };
        b[0..4].copy_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
        b[4..8].copy_from_slice(&self.error.0.to_be_bytes());
        b[8..16].copy_from_slice(&self.cookie.to_be_bytes());
        true
    }

    /// Encodes the header.
    pub fn encode(&self) -> [u8; SIMPLE_REPLY_LEN] {
        let mut b = [0u8; SIMPLE_REPLY_LEN];
        self.encode_into(&mut b);
        b
    }

    /// Decodes a header (client side).
    #[cfg(any(test, feature = "test-support"))]
    pub fn decode(b: &[u8; SIMPLE_REPLY_LEN]) -> Result<Self, WireError> {
        let mut c = Cursor::new(b);
        let magic = c.u32().ok_or(WireError::Truncated)?;
        if magic != SIMPLE_REPLY_MAGIC {
            return Err(WireError::BadReplyMagic(magic));
        }
        Ok(SimpleReply {
            error: ErrorCode(c.u32().ok_or(WireError::Truncated)?),
            cookie: c.u64().ok_or(WireError::Truncated)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greeting_round_trip() {
        let b = encode_greeting(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES);
        assert_eq!(&b[..8], b"NBDMAGIC");
        assert_eq!(&b[8..16], b"IHAVEOPT");
        assert_eq!(decode_greeting(&b).unwrap(), 3);
        let mut bad = b;
        bad[0] ^= 1;
        assert!(matches!(
            decode_greeting(&bad),
            Err(WireError::BadGreeting { .. })
        ));
    }

    #[test]
    fn option_header_round_trip() {
        for option in [0, 1, 7, 11, 0xffff_ffff] {
            for len in [0, 1, 4096, u32::MAX] {
                let h = OptionHeader {
                    option: OptionType(option),
                    len,
                };
                assert_eq!(OptionHeader::decode(&h.encode()).unwrap(), h);
            }
        }
        let mut b = OptionHeader {
            option: OptionType::GO,
            len: 0,
        }
        .encode();
        b[7] = 0;
        assert!(matches!(
            OptionHeader::decode(&b),
            Err(WireError::BadOptionMagic(_))
        ));
    }

    #[test]
    fn option_reply_round_trip() {
        let h = OptionReplyHeader {
            option: OptionType::LIST,
            reply: ReplyType::ERR_UNKNOWN,
            len: 17,
        };
        let b = h.encode();
        assert_eq!(&b[..8], &[0, 0x03, 0xe8, 0x89, 0x04, 0x55, 0x65, 0xa9]);
        assert_eq!(OptionReplyHeader::decode(&b).unwrap(), h);
        assert!(h.reply.is_error());
        assert!(!ReplyType::ACK.is_error());
        assert_eq!(ReplyType::ERR_UNSUP.0, 0x8000_0001);
        assert_eq!(ReplyType::ERR_TOO_BIG.0, 0x8000_0009);
    }

    #[test]
    fn request_round_trip_and_hostile_values() {
        for (flags, cmd, cookie, offset, len) in [
            (0u16, 0u16, 0u64, 0u64, 0u32),
            (0xffff, 0xffff, u64::MAX, u64::MAX, u32::MAX),
            (1, 1, 0x0102_0304_0506_0708, 1 << 63, 1 << 25),
        ] {
            let r = Request {
                flags: CommandFlags(flags),
                command: Command(cmd),
                cookie,
                offset,
                len,
            };
            let b = r.encode();
            assert_eq!(&b[..4], &[0x25, 0x60, 0x95, 0x13]);
            assert_eq!(Request::decode(&b).unwrap(), r);
        }
        let mut b = [0u8; REQUEST_LEN];
        b[..4].copy_from_slice(&EXTENDED_REQUEST_MAGIC.to_be_bytes());
        assert_eq!(
            Request::decode(&b),
            Err(WireError::BadRequestMagic(EXTENDED_REQUEST_MAGIC))
        );
    }

    #[test]
    fn simple_reply_round_trip() {
        let r = SimpleReply {
            error: ErrorCode::ENOSPC,
            cookie: 0xdead_beef_0000_0001,
        };
        let b = r.encode();
        assert_eq!(&b[..4], &[0x67, 0x44, 0x66, 0x98]);
        assert_eq!(SimpleReply::decode(&b).unwrap(), r);
        let mut short = [0u8; 15];
        assert!(!r.encode_into(&mut short));
        assert_eq!(short, [0u8; 15]);
    }

    #[test]
    fn info_request_round_trip() {
        let r = InfoRequest {
            name: "vol0",
            requests: vec![InfoType::BLOCK_SIZE, InfoType::NAME, InfoType(999)],
        };
        assert_eq!(InfoRequest::decode(&r.encode()).unwrap(), r);
        let empty = InfoRequest {
            name: "",
            requests: vec![],
        };
        assert_eq!(empty.encode(), vec![0, 0, 0, 0, 0, 0]);
        assert_eq!(InfoRequest::decode(&empty.encode()).unwrap(), empty);
    }

    #[test]
    fn info_request_hostile() {
        // Name length past the data: no allocation, an error.
        let mut b = vec![0xff, 0xff, 0xff, 0xff];
        b.extend_from_slice(b"abc");
        assert_eq!(InfoRequest::decode(&b), Err(WireError::Truncated));
        // Count claiming more items than there are bytes.
        let b = [0, 0, 0, 0, 0xff, 0xff, 0, 3];
        assert!(matches!(
            InfoRequest::decode(&b),
            Err(WireError::InfoCountMismatch { count: 0xffff, .. })
        ));
        // Trailing garbage after the items.
        let b = [0, 0, 0, 0, 0, 1, 0, 3, 9];
        assert!(matches!(
            InfoRequest::decode(&b),
            Err(WireError::InfoCountMismatch { .. })
        ));
        // Missing count.
        assert_eq!(
            InfoRequest::decode(&[0, 0, 0, 1, b'a']),
            Err(WireError::Truncated)
        );
        // NUL and invalid UTF-8 in the name.
        assert_eq!(
            InfoRequest::decode(&[0, 0, 0, 1, 0, 0, 0]),
            Err(WireError::StringHasNul)
        );
        assert_eq!(
            InfoRequest::decode(&[0, 0, 0, 1, 0xff, 0, 0]),
            Err(WireError::StringNotUtf8)
        );
        // A name one byte over the limit.
        let long = vec![b'a'; MAX_STRING + 1];
        let mut b = (long.len() as u32).to_be_bytes().to_vec();
        b.extend_from_slice(&long);
        b.extend_from_slice(&[0, 0]);
        assert_eq!(
            InfoRequest::decode(&b),
            Err(WireError::StringTooLong(MAX_STRING + 1))
        );
        for n in 0..b.len() {
            let _ = InfoRequest::decode(&b[..n]);
        }
    }

    #[test]
    fn fixed_payloads() {
        let flags = TransmissionFlags(TransmissionFlags::HAS_FLAGS | TransmissionFlags::SEND_FLUSH);
        assert_eq!(
            encode_info_export(0x0102, flags),
            [0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 0, 5]
        );
        assert_eq!(
            encode_info_block_size(512, 4096, 1 << 25),
            [0, 3, 0, 0, 2, 0, 0, 0, 0x10, 0, 0x02, 0, 0, 0]
        );
        let (b, n) = encode_export_name_reply(1 << 20, flags, true);
        assert_eq!(n, 10);
        assert_eq!(&b[..10], &[0, 0, 0, 0, 0, 0x10, 0, 0, 0, 5]);
        let (b, n) = encode_export_name_reply(1, flags, false);
        assert_eq!(n, 134);
        assert!(b[10..].iter().all(|&z| z == 0));
        assert_eq!(
            encode_rep_server("ab", Some("x")),
            vec![0, 0, 0, 2, b'a', b'b', b'x']
        );
        assert_eq!(encode_info_string(InfoType::NAME, "n"), vec![0, 1, b'n']);
        assert_eq!(format!("{flags:?}"), "HAS_FLAGS|SEND_FLUSH");
        assert_eq!(format!("{:?}", OptionType(77)), "OptionType(0x4d)");
        assert_eq!(format!("{}", Command::WRITE_ZEROES), "NBD_CMD_WRITE_ZEROES");
    }

    #[test]
    fn cursor_never_overreads() {
        let mut c = Cursor::new(&[1, 2, 3]);
        assert_eq!(c.u32(), None);
        assert_eq!(c.remaining(), 3);
        assert_eq!(c.u16(), Some(0x0102));
        assert_eq!(c.bytes(2), None);
        assert_eq!(c.bytes(1), Some(&[3][..]));
        assert_eq!(c.u64(), None);
        assert_eq!(c.bytes(0), Some(&[][..]));
    }
}
