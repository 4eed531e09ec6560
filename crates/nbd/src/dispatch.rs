//! Requests onto the export: which requests are valid for the export negotiated (with the
//! error the specification names when not), running them, and the mapping of the
//! export's `io::Error`s to NBD errors.

use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::export::BlockExport;
use crate::handshake::Transmission;
use crate::wire::{Command, CommandFlags, ErrorCode, Request, TransmissionFlags};

/// What a request may do, from what was negotiated for its connection.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Rules {
    size: u64,
    read_only: bool,
    can_trim: bool,
    /// The minimum block size if the client agreed to it, else 1.
    align: u64,
    max_payload: u32,
}

impl Rules {
    pub(crate) fn new(t: &Transmission) -> Self {
        Rules {
            size: t.size,
            read_only: t.flags.contains(TransmissionFlags::READ_ONLY),
            can_trim: t.flags.contains(TransmissionFlags::SEND_TRIM),
            align: if t.constraints_agreed {
                u64::from(t.block_size.minimum)
            } else {
                1
            },
            max_payload: t.block_size.effective_maximum(),
        }
    }

    #[cfg(test)]
    fn for_tests(size: u64, read_only: bool, can_trim: bool, align: u64) -> Self {
        Rules {
            size,
            read_only,
            can_trim,
            align,
            max_payload: 1 << 20,
        }
    }
}

/// A request that passed the checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Read { offset: u64, len: u32 },
    Write { offset: u64, len: u32, fua: bool },
    Flush,
    Trim { offset: u64, len: u32, fua: bool },
    WriteZeroes { offset: u64, len: u32, fua: bool },
}

impl Op {
    /// Whether the request is short enough to run on the reading thread when it is alone:
    /// a read or write of at most 128 KiB without FUA.
    pub(crate) fn is_quick(&self) -> bool {
        const QUICK: u32 = 128 << 10;
        match *self {
            Op::Read { len, .. } => len <= QUICK,
            Op::Write { len, fua, .. } => len <= QUICK && !fua,
            _ => false,
        }
    }

    /// Bytes of buffer the request needs while in flight (read replies carry their header
    /// in front of the data).
    pub(crate) fn buffer_len(&self) -> usize {
        match *self {
            Op::Read { len, .. } => crate::wire::SIMPLE_REPLY_LEN + len as usize,
            Op::Write { len, .. } => len as usize,
            _ => 0,
        }
    }
}

/// Flags valid on each command. FUA is accepted on every command (the specification
/// requires it once `NBD_FLAG_SEND_FUA` is advertised, even where it means nothing).
fn allowed_flags(command: Command) -> u16 {
    match command {
        Command::WRITE_ZEROES => CommandFlags::FUA | CommandFlags::NO_HOLE,
        _ => CommandFlags::FUA,
    }
}

/// Whether `[offset, offset + len)` lies inside the export (overflow is outside).
fn in_range(rules: &Rules, offset: u64, len: u32) -> bool {
    offset
        .checked_add(u64::from(len))
        .is_some_and(|end| end <= rules.size)
}

fn aligned(rules: &Rules, offset: u64, len: u32) -> bool {
    offset.is_multiple_of(rules.align) && u64::from(len).is_multiple_of(rules.align)
}

/// Checks a request (other than `NBD_CMD_DISC`) against the rules. The error is the one
/// the specification recommends: `NBD_EINVAL` for unknown commands and flags, reads or
/// trims past the end and misalignment, `NBD_ENOSPC` for writes past the end, `NBD_EPERM`
/// for writes to a read-only export.
pub(crate) fn check(req: &Request, rules: &Rules) -> Result<Op, ErrorCode> {
    if req.flags.0 & !allowed_flags(req.command) != 0 {
        return Err(ErrorCode::EINVAL);
    }
    let fua = req.flags.contains(CommandFlags::FUA);
    let (offset, len) = (req.offset, req.len);
    match req.command {
        Command::READ => {
            if len > rules.max_payload
                || !in_range(rules, offset, len)
                || !aligned(rules, offset, len)
            {
                return Err(ErrorCode::EINVAL);
            }
            Ok(Op::Read { offset, len })
        }
        Command::WRITE => {
            if rules.read_only {
                return Err(ErrorCode::EPERM);
            }
            if len > rules.max_payload || !aligned(rules, offset, len) {
                return Err(ErrorCode::EINVAL);
            }
            if !in_range(rules, offset, len) {
                return Err(ErrorCode::ENOSPC);
            }
            Ok(Op::Write { offset, len, fua })
        }
        Command::WRITE_ZEROES => {
            if rules.read_only {
                return Err(ErrorCode::EPERM);
            }
            if !aligned(rules, offset, len) {
                return Err(ErrorCode::EINVAL);
            }
            if !in_range(rules, offset, len) {
                return Err(ErrorCode::ENOSPC);
            }
            Ok(Op::WriteZeroes { offset, len, fua })
        }
        Command::TRIM => {
            if rules.read_only {
                return Err(ErrorCode::EPERM);
            }
            if !rules.can_trim {
                return Err(ErrorCode::EINVAL);
            }
            if !in_range(rules, offset, len) || !aligned(rules, offset, len) {
                return Err(ErrorCode::EINVAL);
            }
            Ok(Op::Trim { offset, len, fua })
        }
        Command::FLUSH => {
            // Offset and length are reserved and must be zero.
            if offset != 0 || len != 0 {
                return Err(ErrorCode::EINVAL);
            }
            Ok(Op::Flush)
        }
        // CACHE, BLOCK_STATUS (needs structured replies), RESIZE and unknown commands.
        _ => Err(ErrorCode::EINVAL),
    }
}

/// Maps an export's error to the NBD error sent to the client.
pub(crate) fn error_code(e: &io::Error) -> ErrorCode {
    const EPERM: i32 = 1;
    const EFBIG: i32 = 27;
    const ENOSPC: i32 = 28;
    const EROFS: i32 = 30;
    const ESHUTDOWN: i32 = 108;
    const EDQUOT: i32 = 122;
    match e.raw_os_error() {
        Some(ENOSPC | EDQUOT | EFBIG) => return ErrorCode::ENOSPC,
        Some(EPERM | EROFS) => return ErrorCode::EPERM,
        Some(ESHUTDOWN) => return ErrorCode::ESHUTDOWN,
        _ => {}
    }
    match e.kind() {
        io::ErrorKind::InvalidInput => ErrorCode::EINVAL,
        io::ErrorKind::StorageFull | io::ErrorKind::FileTooLarge | io::ErrorKind::QuotaExceeded => {
            ErrorCode::ENOSPC
        }
        io::ErrorKind::ReadOnlyFilesystem => ErrorCode::EPERM,
        _ => ErrorCode::EIO,
    }
}

/// Runs a checked request. `buf` holds the write payload, or receives the read data after
/// the reply header's room. A panicking export is an `NBD_EIO` for that request, not the
/// end of the connection (or of the server).
pub(crate) fn execute(export: &dyn BlockExport, op: &Op, buf: &mut [u8]) -> ErrorCode {
    let run = || -> io::Result<()> {
        match *op {
            // Zero-length requests are legal but meaningless: nothing to ask the export.
            Op::Read { len: 0, .. }
            | Op::Write { len: 0, .. }
            | Op::Trim { len: 0, .. }
            | Op::WriteZeroes { len: 0, .. } => Ok(()),
            Op::Read { offset, len } => {
                let data = buf
                    .get_mut(
                        crate::wire::SIMPLE_REPLY_LEN..crate::wire::SIMPLE_REPLY_LEN + len as usize,
                    )
                    .ok_or(io::ErrorKind::InvalidInput)?;
                export.read(offset, data)
            }
            Op::Write { offset, len, fua } => {
                let data = buf.get(..len as usize).ok_or(io::ErrorKind::InvalidInput)?;
                export.write(offset, data, fua)
            }
            Op::Flush => export.flush(),
            Op::Trim { offset, len, fua } => {
                export.trim(offset, u64::from(len))?;
                if fua {
                    export.flush()?;
                }
                Ok(())
            }
            Op::WriteZeroes { offset, len, fua } => {
                export.write_zeroes(offset, u64::from(len), fua)
            }
        }
    };
    match catch_unwind(AssertUnwindSafe(run)) {
        Ok(Ok(())) => ErrorCode::OK,
        Ok(Err(e)) => {
            let code = error_code(&e);
            // EIO is news for the operator; the others are the client's doing or expected
            // (a closed volume answers every request with ESHUTDOWN) and would flood the log.
            if code == ErrorCode::EIO {
                log::warn!("export error on {op:?}: {e}");
            } else {
                log::debug!("export error on {op:?}: {e}");
            }
            code
        }
        Err(_) => {
            log::error!("export panicked on {op:?}");
            ErrorCode::EIO
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(command: Command, flags: u16, offset: u64, len: u32) -> Request {
        Request {
            flags: CommandFlags(flags),
            command,
            cookie: 7,
            offset,
            len,
        }
    }

    #[test]
    fn ranges_and_errors() {
        let r = Rules::for_tests(1 << 20, false, false, 512);
        assert_eq!(
            check(&req(Command::READ, 0, 0, 4096), &r),
            Ok(Op::Read {
                offset: 0,
                len: 4096
            })
        );
        assert_eq!(
            check(&req(Command::READ, 0, (1 << 20) - 512, 1024), &r),
            Err(ErrorCode::EINVAL)
        );
        assert_eq!(
            check(&req(Command::READ, 0, u64::MAX - 511, 1024), &r),
            Err(ErrorCode::EINVAL)
        );
        assert_eq!(
            check(&req(Command::READ, 0, 0, (1 << 20) + 512), &r),
            Err(ErrorCode::EINVAL)
        );
        assert_eq!(
            check(&req(Command::WRITE, 0, 1 << 20, 512), &r),
            Err(ErrorCode::ENOSPC)
        );
        assert_eq!(
            check(&req(Command::WRITE, 0, u64::MAX - 511, 512), &r),
            Err(ErrorCode::ENOSPC)
        );
        assert_eq!(
            check(&req(Command::WRITE_ZEROES, 0, 1 << 20, 512), &r),
            Err(ErrorCode::ENOSPC)
        );
        assert_eq!(
            check(&req(Command::WRITE, 0, 1, 512), &r),
            Err(ErrorCode::EINVAL)
        );
        assert_eq!(
            check(&req(Command::READ, 0, 0, 100), &r),
            Err(ErrorCode::EINVAL)
        );
        assert_eq!(
            check(&req(Command::WRITE, CommandFlags::FUA, 512, 512), &r),
            Ok(Op::Write {
                offset: 512,
                len: 512,
                fua: true
            })
        );
        assert_eq!(
            check(&req(Command::TRIM, 0, 0, 512), &r),
            Err(ErrorCode::EINVAL)
        );
        assert_eq!(check(&req(Command::FLUSH, 0, 0, 0), &r), Ok(Op::Flush));
        assert_eq!(
            check(&req(Command::FLUSH, 0, 1, 0), &r),
            Err(ErrorCode::EINVAL)
        );
        assert_eq!(
            check(&req(Command::FLUSH, CommandFlags::FUA, 0, 0), &r),
            Ok(Op::Flush)
        );
        assert_eq!(
            check(&req(Command::CACHE, 0, 0, 512), &r),
            Err(ErrorCode::EINVAL)
        );
        assert_eq!(
            check(&req(Command::BLOCK_STATUS, 0, 0, 512), &r),
            Err(ErrorCode::EINVAL)
        );
        assert_eq!(
            check(&req(Command(0xffff), 0, 0, 0), &r),
            Err(ErrorCode::EINVAL)
        );
        // Flags: NO_HOLE only on WRITE_ZEROES, FAST_ZERO and DF never (not advertised).
        assert_eq!(
            check(&req(Command::WRITE, CommandFlags::NO_HOLE, 0, 512), &r),
            Err(ErrorCode::EINVAL)
        );
        assert_eq!(
            check(
                &req(
                    Command::WRITE_ZEROES,
                    CommandFlags::NO_HOLE | CommandFlags::FUA,
                    0,
                    512
                ),
                &r
            ),
            Ok(Op::WriteZeroes {
                offset: 0,
                len: 512,
                fua: true
            })
        );
        assert_eq!(
            check(
                &req(Command::WRITE_ZEROES, CommandFlags::FAST_ZERO, 0, 512),
                &r
            ),
            Err(ErrorCode::EINVAL)
        );
        assert_eq!(
            check(&req(Command::READ, CommandFlags::DF, 0, 512), &r),
            Err(ErrorCode::EINVAL)
        );
        assert_eq!(
            check(&req(Command::READ, 0x8000, 0, 512), &r),
            Err(ErrorCode::EINVAL)
        );
        // Zero lengths are accepted (and do nothing).
        assert_eq!(
            check(&req(Command::READ, 0, 1 << 20, 0), &r),
            Ok(Op::Read {
                offset: 1 << 20,
                len: 0
            })
        );
    }

    #[test]
    fn read_only_and_trim() {
        let ro = Rules::for_tests(1 << 20, true, true, 1);
        assert_eq!(
            check(&req(Command::WRITE, 0, 0, 512), &ro),
            Err(ErrorCode::EPERM)
        );
        assert_eq!(
            check(&req(Command::WRITE_ZEROES, 0, 0, 512), &ro),
            Err(ErrorCode::EPERM)
        );
        assert_eq!(
            check(&req(Command::TRIM, 0, 0, 512), &ro),
            Err(ErrorCode::EPERM)
        );
        assert!(check(&req(Command::READ, 0, 3, 5), &ro).is_ok());
        let rw = Rules::for_tests(1 << 20, false, true, 1);
        assert_eq!(
            check(&req(Command::TRIM, CommandFlags::FUA, 0, 512), &rw),
            Ok(Op::Trim {
                offset: 0,
                len: 512,
                fua: true
            })
        );
        assert_eq!(
            check(&req(Command::TRIM, 0, 1 << 20, 1), &rw),
            Err(ErrorCode::EINVAL)
        );
    }

    #[test]
    fn error_mapping() {
        let os = io::Error::from_raw_os_error;
        assert_eq!(error_code(&os(28)), ErrorCode::ENOSPC);
        assert_eq!(error_code(&os(122)), ErrorCode::ENOSPC);
        assert_eq!(error_code(&os(27)), ErrorCode::ENOSPC);
        assert_eq!(error_code(&os(1)), ErrorCode::EPERM);
        assert_eq!(error_code(&os(30)), ErrorCode::EPERM);
        assert_eq!(error_code(&os(108)), ErrorCode::ESHUTDOWN);
        assert_eq!(error_code(&os(5)), ErrorCode::EIO);
        assert_eq!(error_code(&os(22)), ErrorCode::EINVAL);
        assert_eq!(error_code(&os(13)), ErrorCode::EIO);
        assert_eq!(
            error_code(&io::ErrorKind::InvalidInput.into()),
            ErrorCode::EINVAL
        );
        assert_eq!(error_code(&io::Error::other("x")), ErrorCode::EIO);
        assert_eq!(
            error_code(&io::ErrorKind::StorageFull.into()),
            ErrorCode::ENOSPC
        );
        assert_eq!(
            error_code(&io::ErrorKind::ReadOnlyFilesystem.into()),
            ErrorCode::EPERM
        );
    }
}
