//! The fixed newstyle handshake, one consuming type per state:
//! [`Start`] → [`ExpectClientFlags`] → [`ExpectOption`] (repeated) → [`Transmission`].
//!
//! A state can only be left through its method, so the server cannot answer an option
//! before the client flags or read requests before an export is selected. Every reply is
//! written with one `write_all` (header and data together): a client never sees half a
//! reply from us, and the fuzz checker can check replies one write at a time.

use std::io::{self, Read, Write};
use std::sync::Arc;

use crate::error::HandshakeError;
use crate::export::{BlockExport, BlockSize};
use crate::limits::{MAX_OPTIONS, MAX_OPTION_DATA, MAX_OPTION_SKIP};
use crate::registry::{ConnGuard, ExportSlot, Registry};
use crate::wire::{
    decode_string, encode_export_name_reply, encode_greeting, encode_info_block_size,
    encode_info_export, encode_info_string, encode_rep_server, InfoRequest, InfoType, OptionHeader,
    OptionReplyHeader, OptionType, ReplyType, TransmissionFlags, FLAG_C_FIXED_NEWSTYLE,
    FLAG_C_NO_ZEROES, FLAG_FIXED_NEWSTYLE, FLAG_NO_ZEROES, OPTION_HEADER_LEN,
};

/// What the handshake consults: the exports, and this connection's registration.
pub(crate) struct Ctx<'r, 'g> {
    pub(crate) registry: &'r Registry,
    pub(crate) conn: &'g ConnGuard<'r>,
}

/// Nothing sent yet.
pub(crate) struct Start;

impl Start {
    /// Sends the greeting, offering fixed newstyle and no-zeroes (and nothing else: TLS is
    /// not offered on this road).
    pub(crate) fn greet<W: Write>(self, w: &mut W) -> io::Result<ExpectClientFlags> {
        w.write_all(&encode_greeting(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES))?;
        w.flush()?;
        Ok(ExpectClientFlags)
    }
}

/// Greeting sent; the client's 32-bit flags come next.
pub(crate) struct ExpectClientFlags;

impl ExpectClientFlags {
    /// Reads and checks the client flags. Clients that are not fixed newstyle are refused:
    /// they cannot receive error replies, so every mistake would end in a hard disconnect.
    pub(crate) fn receive<R: Read>(self, r: &mut R) -> Result<ExpectOption, HandshakeError> {
        let mut b = [0u8; 4];
        r.read_exact(&mut b)?;
        let flags = u32::from_be_bytes(b);
        if flags & !(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES) != 0 {
            return Err(HandshakeError::UnknownClientFlags(flags));
        }
        if flags & FLAG_C_FIXED_NEWSTYLE == 0 {
            return Err(HandshakeError::NotFixedNewstyle(flags));
        }
        Ok(ExpectOption {
            no_zeroes: flags & FLAG_C_NO_ZEROES != 0,
            options: 0,
        })
    }
}

/// Option haggling: the client sends options until one selects an export.
pub(crate) struct ExpectOption {
    no_zeroes: bool,
    options: u32,
}

/// Where an option leads.
pub(crate) enum Next {
    /// Another option may follow.
    Option(ExpectOption),
    /// An export was selected: transmission starts.
    Transmission(Transmission),
}

/// The outcome of the handshake: the export selected and what was advertised for it.
pub(crate) struct Transmission {
    pub(crate) slot: Arc<ExportSlot>,
    pub(crate) export: Arc<dyn BlockExport>,
    pub(crate) size: u64,
    pub(crate) flags: TransmissionFlags,
    pub(crate) block_size: BlockSize,
    /// Whether the client asked for `NBD_INFO_BLOCK_SIZE` in its `NBD_OPT_GO`, and so
    /// promised to honour the minimum block size (we then refuse unaligned requests).
    pub(crate) constraints_agreed: bool,
}

/// The transmission flags of an export.
pub(crate) fn transmission_flags(export: &dyn BlockExport) -> TransmissionFlags {
    // CAN_MULTI_CONN: every connection calls the same export object, whose flush is an
    // fdatasync of the shared backing store (there is no per-connection cache), so a flush
    // or FUA on one connection covers the writes completed on all of them.
    let mut f = TransmissionFlags::HAS_FLAGS
        | TransmissionFlags::SEND_FLUSH
        | TransmissionFlags::SEND_FUA
        | TransmissionFlags::CAN_MULTI_CONN;
    if export.read_only() {
        f |= TransmissionFlags::READ_ONLY;
    } else {
        f |= TransmissionFlags::SEND_WRITE_ZEROES;
        if export.can_trim() {
            f |= TransmissionFlags::SEND_TRIM;
        }
    }
    TransmissionFlags(f)
}

fn reply<W: Write>(w: &mut W, option: OptionType, reply: ReplyType, data: &[u8]) -> io::Result<()> {
    let header = OptionReplyHeader {
        option,
        reply,
        len: data.len() as u32,
    };
    let mut msg = Vec::with_capacity(header.encode().len() + data.len());
    msg.extend_from_slice(&header.encode());
    msg.extend_from_slice(data);
    w.write_all(&msg)?;
    w.flush()
}

/// Reads and drops `len` bytes in small pieces, so skipping allocates nothing.
fn skip<R: Read>(r: &mut R, mut len: u64) -> io::Result<()> {
    let mut sink = [0u8; 4096];
    while len > 0 {
        let n = len.min(sink.len() as u64) as usize;
        r.read_exact(&mut sink[..n])?;
        len -= n as u64;
    }
    Ok(())
}

impl ExpectOption {
    /// Reads one option and answers it.
    pub(crate) fn receive<R: Read, W: Write>(
        mut self,
        r: &mut R,
        w: &mut W,
        ctx: &Ctx<'_, '_>,
    ) -> Result<Next, HandshakeError> {
        let mut hb = [0u8; OPTION_HEADER_LEN];
        r.read_exact(&mut hb)?;
        let h = OptionHeader::decode(&hb)?;
        self.options += 1;
        if self.options > MAX_OPTIONS {
            return Err(HandshakeError::TooManyOptions(MAX_OPTIONS));
        }
        log::debug!(
            "connection {}: {} ({} bytes)",
            ctx.conn.ctl.id,
            h.option,
            h.len
        );
        if h.len > MAX_OPTION_DATA {
            // No option we act on is this large. Skipping keeps the stream in sync (the
            // specification wants unknown options answered, not fatal), but only up to a
            // bound, and never for EXPORT_NAME, which has no error reply.
            if h.option == OptionType::EXPORT_NAME || h.len > MAX_OPTION_SKIP {
                return Err(HandshakeError::OptionTooLarge {
                    option: h.option,
                    len: h.len,
                });
            }
            skip(r, u64::from(h.len))?;
            reply(
                w,
                h.option,
                ReplyType::ERR_TOO_BIG,
                b"option data too large",
            )?;
            return Ok(Next::Option(self));
        }
        let mut data = vec![0u8; h.len as usize];
        r.read_exact(&mut data)?;

        if ctx.registry.stopping() && h.option != OptionType::ABORT {
            if h.option == OptionType::EXPORT_NAME {
                return Err(HandshakeError::Stopping);
            }
            reply(
                w,
                h.option,
                ReplyType::ERR_SHUTDOWN,
                b"server is shutting down",
            )?;
            return Ok(Next::Option(self));
        }

        match h.option {
            OptionType::EXPORT_NAME => self.export_name(&data, w, ctx),
            OptionType::ABORT => {
                // The client may already have closed its end: failing to say goodbye is
                // not an error.
                let _ = reply(w, h.option, ReplyType::ACK, &[]);
                Err(HandshakeError::Aborted)
            }
            OptionType::LIST => {
                if !data.is_empty() {
                    reply(
                        w,
                        h.option,
                        ReplyType::ERR_INVALID,
                        b"NBD_OPT_LIST takes no data",
                    )?;
                } else {
                    for (name, desc) in ctx.registry.list() {
                        reply(
                            w,
                            h.option,
                            ReplyType::SERVER,
                            &encode_rep_server(&name, desc.as_deref()),
                        )?;
                    }
                    reply(w, h.option, ReplyType::ACK, &[])?;
                }
                Ok(Next::Option(self))
            }
            OptionType::INFO | OptionType::GO => self.info_or_go(h.option, &data, w, ctx),
            OptionType::STARTTLS => {
                reply(
                    w,
                    h.option,
                    ReplyType::ERR_POLICY,
                    b"TLS is not offered: this server listens on loopback and Unix sockets only",
                )?;
                Ok(Next::Option(self))
            }
            // Structured replies, metadata contexts and extended headers are not
            // implemented; ERR_UNSUP makes clients fall back to simple replies.
            _ => {
                reply(w, h.option, ReplyType::ERR_UNSUP, &[])?;
                Ok(Next::Option(self))
            }
        }
    }

    fn export_name<W: Write>(
        self,
        data: &[u8],
        w: &mut W,
        ctx: &Ctx<'_, '_>,
    ) -> Result<Next, HandshakeError> {
        let name = decode_string(data).map_err(HandshakeError::BadExportName)?;
        // No error reply exists for this option: an unknown name ends the connection.
        let slot = ctx
            .registry
            .lookup(name)
            .ok_or_else(|| HandshakeError::UnknownExportName(name.to_owned()))?;
        let export = ctx
            .registry
            .attach(ctx.conn, &slot)
            .ok_or_else(|| HandshakeError::UnknownExportName(name.to_owned()))?;
        let size = export.size();
        let flags = transmission_flags(export.as_ref());
        let (b, n) = encode_export_name_reply(size, flags, self.no_zeroes);
        w.write_all(&b[..n])?;
        w.flush()?;
        Ok(Next::Transmission(Transmission {
            block_size: export.block_size(),
            slot,
            export,
            size,
            flags,
            constraints_agreed: false,
        }))
    }

    fn info_or_go<W: Write>(
        self,
        option: OptionType,
        data: &[u8],
        w: &mut W,
        ctx: &Ctx<'_, '_>,
    ) -> Result<Next, HandshakeError> {
        let req = match InfoRequest::decode(data) {
            Ok(req) => req,
            Err(e) => {
                let msg = format!("malformed {option}: {e}");
                reply(w, option, ReplyType::ERR_INVALID, msg.as_bytes())?;
                return Ok(Next::Option(self));
            }
        };
        // GO attaches before answering, so a close racing with it either refuses it here or
        // finds the connection attached and ends it.
        let export = ctx.registry.lookup(req.name).and_then(|slot| {
            let export = if option == OptionType::GO {
                ctx.registry.attach(ctx.conn, &slot)
            } else {
                slot.export()
            };
            export.map(|e| (slot, e))
        });
        let Some((slot, export)) = export else {
            let msg = if req.name.is_empty() {
                "no default export".to_owned()
            } else {
                format!("no export named {:?}", req.name)
            };
            reply(w, option, ReplyType::ERR_UNKNOWN, msg.as_bytes())?;
            return Ok(Next::Option(self));
        };
        let size = export.size();
        let flags = transmission_flags(export.as_ref());
        let bs = export.block_size();
        reply(w, option, ReplyType::INFO, &encode_info_export(size, flags))?;
        // Sent even when not asked for (the specification allows it, qemu-nbd does the
        // same): a client that did not ask still learns the sector size it should use.
        reply(
            w,
            option,
            ReplyType::INFO,
            &encode_info_block_size(bs.minimum, bs.preferred, bs.effective_maximum()),
        )?;
        if req.requests.contains(&InfoType::NAME) {
            reply(
                w,
                option,
                ReplyType::INFO,
                &encode_info_string(InfoType::NAME, &slot.name),
            )?;
        }
        if req.requests.contains(&InfoType::DESCRIPTION) {
            if let Some(d) = &slot.description {
                reply(
                    w,
                    option,
                    ReplyType::INFO,
                    &encode_info_string(InfoType::DESCRIPTION, d),
                )?;
            }
        }
        reply(w, option, ReplyType::ACK, &[])?;
        if option == OptionType::INFO {
            return Ok(Next::Option(self));
        }
        Ok(Next::Transmission(Transmission {
            constraints_agreed: req.requests.contains(&InfoType::BLOCK_SIZE),
            slot,
            export,
            size,
            flags,
            block_size: bs,
        }))
    }
}
