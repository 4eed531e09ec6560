//! Protocol abuse from a raw client over a real Unix socket: bad options, bad requests,
//! clients that vanish, floods of idle sockets. Each test checks the error the client
//! gets, that the connection survives when the specification says it should, and that
//! other connections are unaffected.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Duration;

use common::{tool, wait_for, Client, FaultExport, TestServer, FAULT_SECTOR};
use nbd::limits::MAX_PAYLOAD;
use nbd::wire::{
    Command, CommandFlags, ErrorCode, InfoRequest, InfoType, OptionType, ReplyType, Request,
    TransmissionFlags, FLAG_C_FIXED_NEWSTYLE,
};
use nbd::{ExportConfig, MemExport, ServerOptions};

const SIZE: u64 = 1 << 20;

#[test]
fn options_answered_with_the_right_errors() {
    let (s, _) = TestServer::mem(SIZE as usize, 512);
    let mut c = Client::new(&s);
    for (opt, data, want) in [
        (OptionType::STARTTLS, &[][..], ReplyType::ERR_POLICY),
        (OptionType::STRUCTURED_REPLY, &[][..], ReplyType::ERR_UNSUP),
        (
            OptionType::LIST_META_CONTEXT,
            &[0u8; 8][..],
            ReplyType::ERR_UNSUP,
        ),
        (
            OptionType::SET_META_CONTEXT,
            &[0u8; 8][..],
            ReplyType::ERR_UNSUP,
        ),
        (OptionType::EXTENDED_HEADERS, &[][..], ReplyType::ERR_UNSUP),
        (OptionType(0x7777), &b"junk"[..], ReplyType::ERR_UNSUP),
        (OptionType::LIST, &b"x"[..], ReplyType::ERR_INVALID),
        (
            OptionType::GO,
            &[0, 0, 0, 9, b'a'][..],
            ReplyType::ERR_INVALID,
        ),
        (
            OptionType::INFO,
            &[0, 0, 0, 0, 0, 2, 0, 3][..],
            ReplyType::ERR_INVALID,
        ),
    ] {
        let r = c.option(opt, data);
        assert_eq!(r.len(), 1, "{opt:?}: {r:?}");
        assert_eq!(r[0].0, want, "{opt:?}");
    }
    // Unknown export: ERR_UNKNOWN, with a message, and the handshake goes on.
    let go = InfoRequest {
        name: "nope",
        requests: vec![],
    }
    .encode();
    let r = c.option(OptionType::GO, &go);
    assert_eq!(r.last().unwrap().0, ReplyType::ERR_UNKNOWN);
    assert!(String::from_utf8_lossy(&r[0].1).contains("nope"));
    // LIST: one server reply, then ACK.
    let r = c.option(OptionType::LIST, &[]);
    assert_eq!(r.len(), 2);
    assert_eq!(r[0].0, ReplyType::SERVER);
    assert_eq!(&r[0].1[..7], &[0, 0, 0, 3, b'm', b'e', b'm']);
    // INFO with NAME: export, block size and name, then ACK; not in transmission yet.
    let info = InfoRequest {
        name: "",
        requests: vec![InfoType::NAME, InfoType::DESCRIPTION],
    }
    .encode();
    let r = c.option(OptionType::INFO, &info);
    let types: Vec<u16> = r
        .iter()
        .filter(|(t, _)| *t == ReplyType::INFO)
        .map(|(_, d)| u16::from_be_bytes([d[0], d[1]]))
        .collect();
    assert_eq!(types, vec![0, 3, 1]);
    assert_eq!(r.last().unwrap().0, ReplyType::ACK);
    assert_eq!(&r[2].1[2..], b"mem");
    // GO enters transmission; the connection works.
    let (size, flags) = c.go("");
    assert_eq!(size, SIZE);
    assert!(flags.contains(TransmissionFlags::CAN_MULTI_CONN | TransmissionFlags::SEND_FUA));
    assert!(!flags.contains(TransmissionFlags::SEND_TRIM));
    assert_eq!(c.simple(Command::FLUSH, 0, 0, 0), ErrorCode::OK);
}

#[test]
fn abort_and_refused_clients_are_closed() {
    let (s, _) = TestServer::mem(SIZE as usize, 512);
    // ABORT: ACK, then the server closes.
    let mut c = Client::new(&s);
    let r = c.option(OptionType::ABORT, &[]);
    assert_eq!(r[0].0, ReplyType::ACK);
    assert!(c.closed_by_server());
    // Non-fixed newstyle (flags 0) and unknown client flags: closed after the greeting.
    for flags in [0u32, FLAG_C_FIXED_NEWSTYLE | 0x100] {
        let mut raw = s.connect();
        let mut g = [0u8; 18];
        raw.read_exact(&mut g).unwrap();
        raw.write_all(&flags.to_be_bytes()).unwrap();
        let mut b = [0u8; 1];
        assert!(
            matches!(raw.read(&mut b), Ok(0) | Err(_)),
            "flags {flags:#x} not refused"
        );
    }
    // EXPORT_NAME of an unknown export: no error reply exists, the connection is closed.
    let mut c = Client::new(&s);
    c.send_option(OptionType::EXPORT_NAME, b"missing");
    assert!(c.closed_by_server());
    // A bad option magic: closed.
    let mut c = Client::new(&s);
    c.s.write_all(&[0u8; 16]).unwrap();
    assert!(c.closed_by_server());
    // An option too large to skip: closed; one that can be skipped: ERR_TOO_BIG.
    let mut c = Client::new(&s);
    c.send_option(OptionType(99), &vec![0u8; 20 << 10]);
    let mut h = [0u8; 20];
    c.s.read_exact(&mut h).unwrap();
    assert_eq!(&h[12..16], &ReplyType::ERR_TOO_BIG.0.to_be_bytes());
    c.s.write_all(
        &nbd::wire::OptionHeader {
            option: OptionType(99),
            len: u32::MAX,
        }
        .encode(),
    )
    .unwrap();
    // (drain the message of the ERR_TOO_BIG reply first)
    let len = u32::from_be_bytes(h[16..20].try_into().unwrap()) as usize;
    let mut msg = vec![0u8; len];
    c.s.read_exact(&mut msg).unwrap();
    assert!(c.closed_by_server());
    // The server still serves.
    let mut ok = Client::connect_go(&s, "mem");
    assert_eq!(ok.simple(Command::FLUSH, 0, 0, 0), ErrorCode::OK);
}

#[test]
fn export_name_enters_transmission_with_zeroes() {
    let (s, e) = TestServer::mem(SIZE as usize, 512);
    let mut raw = s.connect();
    let mut g = [0u8; 18];
    raw.read_exact(&mut g).unwrap();
    raw.write_all(&FLAG_C_FIXED_NEWSTYLE.to_be_bytes()).unwrap();
    let h = nbd::wire::OptionHeader {
        option: OptionType::EXPORT_NAME,
        len: 3,
    };
    raw.write_all(&[&h.encode()[..], b"mem"].concat()).unwrap();
    let mut reply = [0u8; 134];
    raw.read_exact(&mut reply).unwrap();
    assert_eq!(u64::from_be_bytes(reply[..8].try_into().unwrap()), SIZE);
    assert!(reply[10..].iter().all(|&b| b == 0));
    // Without a block-size agreement, unaligned requests reach the export.
    e.fill(0, &[1, 2, 3, 4, 5, 6, 7, 8]);
    let mut c = Client { s: raw };
    assert_eq!(c.read_at(3, 4), vec![4, 5, 6, 7]);
}

#[test]
fn requests_out_of_range_or_malformed_get_errors() {
    let e = Arc::new(MemExport::new(SIZE as usize, 512));
    let s = TestServer::start(vec![(ExportConfig::new("mem").default_export(), e.clone())]);
    let mut c = Client::connect_go(&s, "");
    let mut other = Client::connect_go(&s, "mem");
    use Command as C;
    for (cmd, flags, offset, len, want) in [
        (C::READ, 0, SIZE, 512, ErrorCode::EINVAL),
        (C::READ, 0, SIZE - 512, 1024, ErrorCode::EINVAL),
        (C::READ, 0, u64::MAX - 511, 1024, ErrorCode::EINVAL),
        (C::READ, 0, 0, MAX_PAYLOAD + 1, ErrorCode::EINVAL),
        (C::READ, 0, 0, u32::MAX, ErrorCode::EINVAL),
        (C::READ, 0, 1, 512, ErrorCode::EINVAL),
        (C::READ, CommandFlags::DF, 0, 512, ErrorCode::EINVAL),
        (C::READ, 0x8000, 0, 512, ErrorCode::EINVAL),
        (C::WRITE_ZEROES, 0, SIZE, 512, ErrorCode::ENOSPC),
        (C::WRITE_ZEROES, 0, u64::MAX - 511, 512, ErrorCode::ENOSPC),
        (
            C::WRITE_ZEROES,
            CommandFlags::FAST_ZERO,
            0,
            512,
            ErrorCode::EINVAL,
        ),
        (C::TRIM, 0, 0, 512, ErrorCode::EINVAL),
        (C::FLUSH, 0, 512, 0, ErrorCode::EINVAL),
        (C::CACHE, 0, 0, 512, ErrorCode::EINVAL),
        (C::BLOCK_STATUS, 0, 0, 512, ErrorCode::EINVAL),
        (C(0x1234), 0, 0, 0, ErrorCode::EINVAL),
        (C::READ, 0, SIZE, 0, ErrorCode::OK),
        (
            C::WRITE_ZEROES,
            CommandFlags::NO_HOLE | CommandFlags::FUA,
            0,
            512,
            ErrorCode::OK,
        ),
        (C::WRITE_ZEROES, 0, 0, u32::MAX - 511, ErrorCode::ENOSPC),
    ] {
        assert_eq!(
            c.simple(cmd, flags, offset, len),
            want,
            "{cmd:?} {flags:#x} {offset} {len}"
        );
    }
    // Writes refused after their payload was consumed: the stream stays in sync.
    for (offset, len, want) in [
        (SIZE - 512, 1024, ErrorCode::ENOSPC),
        (u64::MAX - 511, 1024, ErrorCode::ENOSPC),
        (513, 512, ErrorCode::EINVAL),
        (0, MAX_PAYLOAD, ErrorCode::ENOSPC),
    ] {
        c.write(9, offset, &vec![0xee; len as usize]);
        let (r, _) = c.reply(0);
        assert_eq!((r.cookie, r.error), (9, want), "write at {offset} of {len}");
    }
    assert!(
        e.contents().iter().all(|&b| b == 0),
        "no refused write reached the export"
    );
    c.write(10, 4096, &[0x77; 4096]);
    assert_eq!(c.reply(0).0.error, ErrorCode::OK);
    assert_eq!(other.read_at(4096, 4096), vec![0x77; 4096]);
    // A write whose payload exceeds 32 MiB cannot be skipped: the connection is closed,
    // the other one is not.
    c.request(C::WRITE, 0, 11, 0, MAX_PAYLOAD + 1);
    assert!(c.closed_by_server());
    assert_eq!(other.read_at(4096, 512), vec![0x77; 512]);
    // A request with a bad magic: closed.
    let mut d = Client::connect_go(&s, "mem");
    d.s.write_all(&[0xffu8; 28]).unwrap();
    assert!(d.closed_by_server());
    assert_eq!(other.simple(C::FLUSH, 0, 0, 0), ErrorCode::OK);
}

#[test]
fn export_errors_become_replies_not_disconnects() {
    let e = Arc::new(FaultExport {
        inner: MemExport::new(SIZE as usize, 512),
    });
    let s = TestServer::start(vec![(ExportConfig::new("f").default_export(), e)]);
    let mut c = Client::connect_go(&s, "f");
    for (sector, want) in [
        (1, ErrorCode::ENOSPC),
        (2, ErrorCode::EPERM),
        (3, ErrorCode::ESHUTDOWN),
        (4, ErrorCode::EINVAL),
        (5, ErrorCode::EIO),
        (6, ErrorCode::EIO), // the export panicked
        (7, ErrorCode::OK),
    ] {
        assert_eq!(
            c.simple(Command::READ, 0, sector * FAULT_SECTOR, 512),
            want,
            "sector {sector}"
        );
    }
    c.write(1, FAULT_SECTOR, &[1; 512]);
    assert_eq!(c.reply(0).0.error, ErrorCode::EPERM);
    assert_eq!(c.simple(Command::FLUSH, 0, 0, 0), ErrorCode::EIO);
    assert_eq!(c.read_at(0, 512), vec![0; 512]);
}

#[test]
fn read_only_export_refuses_writes() {
    let e = Arc::new(MemExport::new(SIZE as usize, 512).read_only().with_trim());
    let s = TestServer::start(vec![(ExportConfig::new("ro").default_export(), e)]);
    let mut c = Client::new(&s);
    let (_, flags) = c.go("ro");
    assert!(flags.contains(TransmissionFlags::READ_ONLY));
    assert!(!flags.contains(TransmissionFlags::SEND_WRITE_ZEROES));
    c.write(1, 0, &[1; 512]);
    assert_eq!(c.reply(0).0.error, ErrorCode::EPERM);
    assert_eq!(c.simple(Command::WRITE_ZEROES, 0, 0, 512), ErrorCode::EPERM);
    assert_eq!(c.simple(Command::TRIM, 0, 0, 512), ErrorCode::EPERM);
    assert_eq!(c.read_at(0, 512), vec![0; 512]);
}

#[test]
fn trim_when_the_export_allows_it() {
    let e = Arc::new(MemExport::new(SIZE as usize, 512).with_trim());
    e.fill(0, &[0xff; 4096]);
    let s = TestServer::start(vec![(ExportConfig::new("t").default_export(), e.clone())]);
    let mut c = Client::new(&s);
    let (_, flags) = c.go("t");
    assert!(flags.contains(TransmissionFlags::SEND_TRIM));
    assert_eq!(
        c.simple(Command::TRIM, CommandFlags::FUA, 1024, 1024),
        ErrorCode::OK
    );
    assert_eq!(
        c.simple(Command::TRIM, 0, SIZE - 512, 1024),
        ErrorCode::EINVAL
    );
    let d = e.contents();
    assert!(d[1024..2048].iter().all(|&b| b == 0) && d[..1024].iter().all(|&b| b == 0xff));
}

#[test]
fn vanishing_clients_do_not_disturb_others() {
    let (s, _) = TestServer::mem(8 << 20, 512);
    let mut steady = Client::connect_go(&s, "mem");
    steady.write(1, 0, &[0x42; 4096]);
    assert_eq!(steady.reply(0).0.error, ErrorCode::OK);
    let base = s.server.connections();
    // Mid-payload: a 1 MiB write with 1000 bytes of it.
    let mut c = Client::connect_go(&s, "mem");
    c.request(Command::WRITE, 0, 1, 0, 1 << 20);
    c.s.write_all(&[0u8; 1000]).unwrap();
    drop(c);
    // Mid-header.
    let mut c = Client::connect_go(&s, "mem");
    c.s.write_all(
        &Request {
            flags: CommandFlags(0),
            command: Command::READ,
            cookie: 1,
            offset: 0,
            len: 512,
        }
        .encode()[..10],
    )
    .unwrap();
    drop(c);
    // With many large reads in flight and their replies never read.
    let mut c = Client::connect_go(&s, "mem");
    for i in 0..64 {
        c.request(Command::READ, 0, i, 0, 1 << 20);
    }
    drop(c);
    // Mid-handshake.
    let mut c = Client::new(&s);
    c.send_option(OptionType::GO, &[0, 0, 0]);
    drop(c);
    wait_for("vanished connections to be reaped", || {
        s.server.connections() == base
    });
    assert_eq!(steady.read_at(0, 4096), vec![0x42; 4096]);
    // And a real tool still gets through.
    common::run_ok(tool("nbdinfo").arg(s.uri()));
}

#[test]
fn idle_sockets_cannot_starve_real_clients() {
    let (s, _) = {
        let e = Arc::new(MemExport::new(SIZE as usize, 512));
        let opts = ServerOptions {
            max_connections: 16,
            handshake_timeout: Duration::from_millis(700),
            ..ServerOptions::default()
        };
        (
            TestServer::start_with(
                vec![(ExportConfig::new("mem").default_export(), e.clone())],
                opts,
                &[],
            ),
            e,
        )
    };
    // 200 sockets that never say a word.
    let idle: Vec<UnixStream> = (0..200)
        .map(|_| UnixStream::connect(&s.sock).unwrap())
        .collect();
    wait_for("the cap to be reached", || s.server.connections() == 16);
    // The deadline cuts the 16 that hold a slot (each newcomer evicted the oldest).
    wait_for("the handshake deadline", || s.server.connections() == 0);
    for mut i in idle.iter().take(20) {
        i.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut b = [0u8; 64];
        // The greeting (if it got a slot), then end of file; never a hang.
        while let Ok(n) = i.read(&mut b) {
            if n == 0 {
                break;
            }
        }
    }
    // With the idle sockets still open on our side, real clients are served.
    let info = common::run_ok(tool("nbdinfo").arg(s.uri()));
    assert!(info.contains("export-size: 1048576"), "{info}");
    let mut c = Client::connect_go(&s, "mem");
    assert_eq!(c.simple(Command::FLUSH, 0, 0, 0), ErrorCode::OK);
    // A slow client that handshakes within the deadline keeps its connection after it.
    std::thread::sleep(Duration::from_millis(900));
    assert_eq!(c.simple(Command::FLUSH, 0, 0, 0), ErrorCode::OK);
    drop(idle);
}
