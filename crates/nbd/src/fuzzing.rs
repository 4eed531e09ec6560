//! Properties checked by the cargo-fuzz target `nbd_requests` and, on fixed inputs, by the
//! test suite: any bytes, taken as the client's side of a whole session (handshake, then
//! requests), against in-memory exports.
//!
//! - the server never panics;
//! - no request buffer exceeds one maximum payload plus a reply header, and the buffers in
//!   flight never exceed the connection's bound (or one such request);
//! - everything the server writes is a well-formed message of the phase it is in: the
//!   greeting, option replies with the option-reply magic and consistent lengths (an
//!   `NBD_INFO_EXPORT` before every successful `NBD_OPT_INFO`/`NBD_OPT_GO`), the
//!   `NBD_OPT_EXPORT_NAME` reply, then simple replies with the simple-reply magic, a
//!   defined error value, the cookie of the oldest unanswered request, and data exactly
//!   when a read succeeded, as long as it asked.
//!
//! Requests run on one thread (no turns taken) so replies come in request order and a
//! run is deterministic; several threads are exercised by the integration tests.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::{Arc, Mutex};

use crate::conn::{self, ConnConfig, Outcome};
use crate::export::{BlockExport, BlockSize, MemExport};
use crate::limits::MAX_PAYLOAD;
use crate::registry::{ExportConfig, Registry};
use crate::wire::{
    decode_greeting, Command, CommandFlags, ErrorCode, InfoRequest, InfoType, OptionHeader,
    OptionReplyHeader, OptionType, ReplyType, Request, SimpleReply, FLAG_C_FIXED_NEWSTYLE,
    FLAG_C_NO_ZEROES, FLAG_FIXED_NEWSTYLE, FLAG_NO_ZEROES, GREETING_LEN, OPTION_REPLY_HEADER_LEN,
    OPTION_REPLY_MAGIC, REQUEST_LEN, SIMPLE_REPLY_LEN,
};

/// Size of the default fuzzed export (writable, trim, 512-byte sectors).
pub const EXPORT_SIZE: usize = 1 << 20;
/// Size of the second export, "ro" (read-only, 4096-byte sectors).
pub const RO_EXPORT_SIZE: usize = 64 << 10;
/// The bound on buffer bytes in flight used for the fuzzed connection.
const MAX_IN_FLIGHT_BYTES: usize = 256 << 10;

#[derive(Debug, PartialEq, Eq)]
enum Phase {
    Greeting,
    Options,
    Transmission,
}

/// Checks the server's output, one message per write (the server writes each message
/// whole with one `write_all`, which a `Vec`-like sink takes in one call).
struct Checker<'a> {
    phase: Phase,
    pending: &'a Mutex<VecDeque<(u64, Command, u32)>>,
    // For the option being answered: whether NBD_INFO_EXPORT was sent.
    info_export_seen: Option<OptionType>,
    written: usize,
}

impl Checker<'_> {
    fn message(&mut self, m: &[u8]) {
        self.written += m.len();
        match self.phase {
            Phase::Greeting => {
                let b: &[u8; GREETING_LEN] = m.try_into().expect("greeting is one 18-byte write");
                assert_eq!(decode_greeting(b), Ok(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES));
                self.phase = Phase::Options;
            }
            Phase::Options => self.option_reply(m),
            Phase::Transmission => self.simple_reply(m),
        }
    }

    fn option_reply(&mut self, m: &[u8]) {
        let magic = m.first_chunk::<8>().map(|b| u64::from_be_bytes(*b));
        if magic != Some(OPTION_REPLY_MAGIC) {
            // Only the NBD_OPT_EXPORT_NAME reply has no magic: size, flags, maybe zeroes.
            assert!(
                m.len() == 10 || m.len() == 134,
                "bad handshake message {m:x?}"
            );
            let size = u64::from_be_bytes(*m.first_chunk::<8>().expect("length checked"));
            assert!(size == EXPORT_SIZE as u64 || size == RO_EXPORT_SIZE as u64);
            assert!(m[10..].iter().all(|&z| z == 0));
            self.phase = Phase::Transmission;
            return;
        }
        let h: &[u8; OPTION_REPLY_HEADER_LEN] = m
            .first_chunk()
            .expect("option reply shorter than its header");
        let h = OptionReplyHeader::decode(h).expect("magic checked");
        assert_eq!(
            h.len as usize,
            m.len() - OPTION_REPLY_HEADER_LEN,
            "option reply length"
        );
        assert!(
            h.reply.name().is_some(),
            "undefined reply type {:?}",
            h.reply
        );
        let data = &m[OPTION_REPLY_HEADER_LEN..];
        match h.reply {
            ReplyType::INFO => {
                assert!(matches!(h.option, OptionType::INFO | OptionType::GO));
                let info = InfoType(u16::from_be_bytes(*data.first_chunk().expect("info type")));
                match info {
                    InfoType::EXPORT => {
                        assert_eq!(data.len(), 12);
                        self.info_export_seen = Some(h.option);
                    }
                    InfoType::BLOCK_SIZE => assert_eq!(data.len(), 14),
                    InfoType::NAME | InfoType::DESCRIPTION => {}
                    other => panic!("unexpected {other:?}"),
                }
            }
            ReplyType::SERVER => {
                assert_eq!(h.option, OptionType::LIST);
                let n = u32::from_be_bytes(*data.first_chunk().expect("name length"));
                assert!(n as usize <= data.len() - 4);
            }
            ReplyType::ACK => {
                if matches!(h.option, OptionType::INFO | OptionType::GO) {
                    assert_eq!(
                        self.info_export_seen,
                        Some(h.option),
                        "ACK without NBD_INFO_EXPORT"
                    );
                }
                self.info_export_seen = None;
                if h.option == OptionType::GO {
                    self.phase = Phase::Transmission;
                }
            }
            r => {
                assert!(r.is_error(), "unexpected reply {r:?}");
                self.info_export_seen = None;
            }
        }
    }

    fn simple_reply(&mut self, m: &[u8]) {
        let h: &[u8; SIMPLE_REPLY_LEN] = m.first_chunk().expect("reply shorter than its header");
        let r = SimpleReply::decode(h).expect("simple reply magic");
        assert!(
            matches!(
                r.error,
                ErrorCode::OK
                    | ErrorCode::EPERM
                    | ErrorCode::EIO
                    | ErrorCode::EINVAL
                    | ErrorCode::ENOSPC
                    | ErrorCode::ESHUTDOWN
            ),
            "error value {:?}",
            r.error
        );
        let (cookie, command, len) = self
            .pending
            .lock()
            .unwrap()
            .pop_front()
            .expect("a reply with no request outstanding");
        assert_eq!(
            r.cookie, cookie,
            "replies come in request order on one thread"
        );
        let data = m.len() - SIMPLE_REPLY_LEN;
        if command == Command::READ && r.error == ErrorCode::OK {
            assert_eq!(data, len as usize, "read reply carries the data asked for");
        } else {
            assert_eq!(data, 0, "only a successful read carries data");
        }
    }
}

impl Write for Checker<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.message(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What a fuzzed session came to.
#[derive(Debug)]
pub struct Summary {
    /// Bytes the server wrote.
    pub written: usize,
    /// How the connection ended (the `Debug` form of the internal outcome).
    pub outcome: String,
}

/// Plays `data` as the client's bytes of a whole session and checks the properties above;
/// panics if one fails.
pub fn session(data: &[u8]) -> Summary {
    let registry = Registry::new(1);
    let rw: Arc<dyn BlockExport> = Arc::new(MemExport::new(EXPORT_SIZE, 512).with_trim());
    let ro: Arc<dyn BlockExport> = Arc::new(
        MemExport::new(RO_EXPORT_SIZE, 4096)
            .read_only()
            .with_block_size(BlockSize {
                minimum: 4096,
                preferred: 4096,
                maximum: 32 << 10,
            }),
    );
    registry
        .add_export(
            ExportConfig::new("fuzz")
                .description("fuzzed")
                .default_export(),
            rw,
        )
        .expect("valid export");
    registry
        .add_export(ExportConfig::new("ro"), ro)
        .expect("valid export");
    let conn = registry
        .register(None, None)
        .expect("first connection")
        .guard;
    let pending = Mutex::new(VecDeque::new());
    let observe = |r: &crate::wire::Request| {
        if r.command != Command::DISC {
            pending
                .lock()
                .unwrap()
                .push_back((r.cookie, r.command, r.len));
        }
    };
    let mut checker = Checker {
        phase: Phase::Greeting,
        pending: &pending,
        info_export_seen: None,
        written: 0,
    };
    let config = ConnConfig {
        workers: 0,
        max_in_flight_requests: 8,
        max_in_flight_bytes: MAX_IN_FLIGHT_BYTES,
        idle_timeout: None,
    };
    let outcome = conn::run(
        &registry,
        &conn,
        data,
        &mut checker,
        &config,
        Some(&observe),
    );
    let outcome = match &outcome {
        Outcome::Handshake(e) => format!("Handshake({e:?})"),
        Outcome::Transmission(ended, stats) => {
            assert!(stats.peak_buffer <= MAX_PAYLOAD as usize + SIMPLE_REPLY_LEN);
            assert!(stats.peak_in_flight_bytes <= MAX_IN_FLIGHT_BYTES.max(stats.peak_buffer));
            // At most the last request (cut short, or one that ended the connection) is
            // unanswered.
            assert!(pending.lock().unwrap().len() <= 1);
            assert!(stats.requests as usize <= data.len() / REQUEST_LEN);
            format!("Transmission({ended:?})")
        }
    };
    Summary {
        written: checker.written,
        outcome,
    }
}

fn option(out: &mut Vec<u8>, option: OptionType, data: &[u8]) {
    out.extend_from_slice(
        &OptionHeader {
            option,
            len: data.len() as u32,
        }
        .encode(),
    );
    out.extend_from_slice(data);
}

fn request(out: &mut Vec<u8>, command: Command, flags: u16, cookie: u64, offset: u64, len: u32) {
    out.extend_from_slice(
        &Request {
            flags: CommandFlags(flags),
            command,
            cookie,
            offset,
            len,
        }
        .encode(),
    );
}

fn go(name: &str, requests: Vec<InfoType>) -> Vec<u8> {
    InfoRequest { name, requests }.encode()
}

/// A session touching every path a well-behaved client uses, plus refused requests.
fn go_session() -> Vec<u8> {
    let mut s = (FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES)
        .to_be_bytes()
        .to_vec();
    option(&mut s, OptionType::STRUCTURED_REPLY, &[]);
    option(&mut s, OptionType::STARTTLS, &[]);
    option(&mut s, OptionType::LIST, &[]);
    option(&mut s, OptionType(0x4242), b"whatever");
    option(&mut s, OptionType::INFO, &go("ro", vec![InfoType::NAME]));
    option(&mut s, OptionType::GO, &go("nope", vec![]));
    option(
        &mut s,
        OptionType::GO,
        &go(
            "",
            vec![InfoType::BLOCK_SIZE, InfoType::NAME, InfoType::DESCRIPTION],
        ),
    );
    request(&mut s, Command::WRITE, CommandFlags::FUA, 1, 512, 1024);
    s.extend(std::iter::repeat_n(0xab, 1024));
    request(&mut s, Command::READ, 0, 2, 0, 2048);
    request(
        &mut s,
        Command::WRITE_ZEROES,
        CommandFlags::NO_HOLE,
        3,
        0,
        512,
    );
    request(&mut s, Command::TRIM, 0, 4, 1024, 512);
    request(&mut s, Command::FLUSH, 0, 5, 0, 0);
    request(&mut s, Command::READ, 0, 6, EXPORT_SIZE as u64, 512);
    request(&mut s, Command::WRITE, 0, 7, EXPORT_SIZE as u64 - 512, 1024);
    s.extend(std::iter::repeat_n(0xcd, 1024));
    request(&mut s, Command::WRITE, 0, 8, 1, 512);
    s.extend(std::iter::repeat_n(0xcd, 512));
    request(&mut s, Command(99), 0, 9, 0, 0);
    request(&mut s, Command::CACHE, 0, 10, 0, 512);
    request(&mut s, Command::READ, CommandFlags::DF, 11, 0, 512);
    request(&mut s, Command::READ, 0, 12, u64::MAX - 100, 512);
    request(&mut s, Command::DISC, 0, 13, 0, 0);
    s
}

/// Valid sessions to start fuzzing from (the fuzzer finds its way past the handshake much
/// sooner from these): `NBD_FUZZ_SEEDS_DIR=DIR cargo test -p nbd --lib fuzzing` writes
/// them as files into DIR.
pub fn seeds() -> Vec<Vec<u8>> {
    let mut old = FLAG_C_FIXED_NEWSTYLE.to_be_bytes().to_vec();
    option(&mut old, OptionType::EXPORT_NAME, b"ro");
    request(&mut old, Command::READ, 0, 1, 4096, 4096);
    request(&mut old, Command::WRITE, 0, 2, 0, 4096);
    old.extend(std::iter::repeat_n(1, 4096));
    request(&mut old, Command::FLUSH, CommandFlags::FUA, 3, 0, 0);
    request(&mut old, Command::DISC, 0, 4, 0, 0);
    vec![go_session(), old]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_pass_and_can_be_written() {
        let s = session(&go_session());
        assert!(s.written > 2048, "the reads were answered ({s:?})");
        assert!(s.outcome.starts_with("Transmission(Disconnect"), "{s:?}");
        for (i, seed) in seeds().iter().enumerate() {
            let s = session(seed);
            assert!(
                s.outcome.starts_with("Transmission(Disconnect"),
                "seed {i}: {s:?}"
            );
            if let Some(dir) = std::env::var_os("NBD_FUZZ_SEEDS_DIR") {
                let dir = std::path::Path::new(&dir);
                std::fs::create_dir_all(dir).unwrap();
                std::fs::write(dir.join(format!("seed{i}")), seed).unwrap();
            }
        }
    }

    #[test]
    fn export_name_and_read_only() {
        let mut s = FLAG_C_FIXED_NEWSTYLE.to_be_bytes().to_vec();
        option(&mut s, OptionType::EXPORT_NAME, b"ro");
        request(&mut s, Command::READ, 0, 1, 4096, 4096);
        request(&mut s, Command::READ, 0, 2, 1, 3);
        request(&mut s, Command::WRITE, 0, 3, 0, 4096);
        s.extend(std::iter::repeat_n(1, 4096));
        request(&mut s, Command::READ, 0, 4, 0, 64 << 10);
        session(&s);
        // Unknown name: the connection is dropped (no error reply exists).
        let mut s = FLAG_C_FIXED_NEWSTYLE.to_be_bytes().to_vec();
        option(&mut s, OptionType::EXPORT_NAME, b"missing");
        request(&mut s, Command::READ, 0, 1, 0, 512);
        session(&s);
    }

    #[test]
    fn hostile_inputs() {
        let fixed = FLAG_C_FIXED_NEWSTYLE.to_be_bytes();
        // (client bytes, expected outcome)
        let mut cases: Vec<(Vec<u8>, &str)> = vec![
            (vec![], "Io"),
            (vec![0; 4], "NotFixedNewstyle"),
            (vec![0xff; 4], "UnknownClientFlags"),
            (fixed.to_vec(), "Io"),
            ([&fixed[..], &[0xff; 4096]].concat(), "BadOptionMagic"),
        ];
        // Huge option lengths: skipped up to the bound (then the next option is read),
        // fatal beyond, never allocated.
        for (len, expect) in [
            (8193, "Aborted"),
            (64 << 10, "Aborted"),
            ((64 << 10) + 1, "OptionTooLarge"),
            (MAX_PAYLOAD, "OptionTooLarge"),
            (u32::MAX, "OptionTooLarge"),
        ] {
            let mut s = fixed.to_vec();
            s.extend_from_slice(
                &OptionHeader {
                    option: OptionType::LIST,
                    len,
                }
                .encode(),
            );
            s.extend(std::iter::repeat_n(0, len.min(70 << 10) as usize));
            option(&mut s, OptionType::ABORT, &[]);
            cases.push((s, expect));
        }
        // GO with a name length past the data, a huge info count, LIST with data: each an
        // error reply, and the handshake goes on.
        let mut s = fixed.to_vec();
        option(&mut s, OptionType::GO, &[0xff, 0xff, 0xff, 0xff, 0, 0]);
        option(&mut s, OptionType::GO, &[0, 0, 0, 0, 0xff, 0xff]);
        option(&mut s, OptionType::LIST, b"x");
        option(&mut s, OptionType::EXPORT_NAME, &[0xff]);
        cases.push((s, "BadExportName"));
        // Too many options.
        let mut s = fixed.to_vec();
        for _ in 0..300 {
            option(&mut s, OptionType::STRUCTURED_REPLY, &[]);
        }
        cases.push((s, "TooManyOptions"));
        // Transmission abuse after a valid GO.
        let mut base = fixed.to_vec();
        option(
            &mut base,
            OptionType::GO,
            &go("fuzz", vec![InfoType::BLOCK_SIZE]),
        );
        for (cmd, offset, len, expect) in [
            (Command::WRITE, 0, MAX_PAYLOAD + 1, "PayloadTooLarge"),
            (Command::WRITE, 0, u32::MAX, "PayloadTooLarge"),
            // Refused (ENOSPC), its payload skipped: then the stream ends mid-payload.
            (Command::WRITE, u64::MAX, MAX_PAYLOAD, "UnexpectedEof"),
            (Command::READ, 0, u32::MAX, "Eof"),
            (Command::READ, 0, MAX_PAYLOAD, "Eof"),
            (Command::WRITE_ZEROES, 0, u32::MAX, "Eof"),
            (Command::TRIM, u64::MAX - 511, 512, "Eof"),
            // Admitted: the payload is cut short.
            (Command::WRITE, 0, EXPORT_SIZE as u32, "UnexpectedEof"),
        ] {
            let mut s = base.clone();
            request(&mut s, cmd, 0, 1, offset, len);
            if cmd != Command::WRITE {
                request(&mut s, Command::FLUSH, 0, 2, 0, 0);
            }
            s.extend(std::iter::repeat_n(0x5a, 4096));
            // After a non-write, the 4096 bytes are garbage where a header should be.
            let expect = if cmd == Command::WRITE {
                expect
            } else {
                "BadRequestMagic"
            };
            cases.push((s, expect));
        }
        // The extended-header magic mid-stream.
        let mut s = base.clone();
        request(&mut s, Command::FLUSH, 0, 1, 0, 0);
        s.extend_from_slice(&[0x21, 0xe4, 0x1c, 0x71]);
        s.extend_from_slice(&[0; 24]);
        cases.push((s, "BadRequestMagic(568597617)"));
        for (c, expect) in &cases {
            let summary = session(c);
            assert!(
                summary.outcome.contains(expect),
                "expected {expect}: {summary:?}"
            );
        }
    }

    #[test]
    fn truncations_and_bit_flips() {
        let valid = go_session();
        for n in 0..valid.len() {
            session(&valid[..n]);
        }
        for i in 0..valid.len() {
            for bit in [0, 3, 7] {
                let mut s = valid.clone();
                s[i] ^= 1 << bit;
                session(&s);
            }
        }
    }
}
