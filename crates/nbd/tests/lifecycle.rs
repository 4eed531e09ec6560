//! Concurrency and lifecycle: replies out of order with their cookies, closing an export
//! under load, stopping the server, several connections and exports.

mod common;

use std::io::Write;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{run_ok, tool, Client, GateExport, TestServer};
use nbd::wire::{Command, ErrorCode, InfoRequest, OptionType, ReplyType, Request};
use nbd::{ExportConfig, ExportError, MemExport, ServerOptions};

#[test]
fn replies_complete_out_of_order_with_their_cookies() {
    let e = Arc::new(GateExport::new(1 << 20, 0));
    e.inner.fill(4096, &[0x33; 4096]);
    let s = TestServer::start(vec![(ExportConfig::new("g").default_export(), e.clone())]);
    let mut c = Client::connect_go(&s, "g");
    // Both requests in one write, so the first is not alone and goes to a worker.
    let a = Request {
        flags: Default::default(),
        command: Command::READ,
        cookie: 0xaaaa_0000_0000_0001,
        offset: 0,
        len: 4096,
    };
    let b = Request {
        cookie: 0xbbbb_0000_0000_0002,
        offset: 4096,
        ..a
    };
    c.s.write_all(&[a.encode(), b.encode()].concat()).unwrap();
    e.wait_entered();
    // The second request overtakes the first, which is blocked in the export.
    let (r, d) = c.reply(4096);
    assert_eq!((r.cookie, r.error), (b.cookie, ErrorCode::OK));
    assert_eq!(d, vec![0x33; 4096]);
    // More requests keep flowing while the first is still blocked.
    for i in 0..50u64 {
        c.write(i, 8192 + i * 512, &[i as u8; 512]);
        let (r, _) = c.reply(0);
        assert_eq!((r.cookie, r.error), (i, ErrorCode::OK));
    }
    e.open();
    let (r, d) = c.reply(4096);
    assert_eq!((r.cookie, r.error), (a.cookie, ErrorCode::OK));
    assert_eq!(d, vec![0; 4096]);
}

#[test]
fn many_requests_in_flight_all_answered_once() {
    let (s, e) = TestServer::mem(4 << 20, 512);
    let data = common::pattern(4 << 20, 5);
    e.fill(0, &data);
    let mut c = Client::connect_go(&s, "mem");
    // 500 reads of various sizes, all sent before any reply is read (a writer thread, so
    // neither side's socket buffer can deadlock the test).
    let mut w = c.s.try_clone().unwrap();
    let reqs: Vec<(u64, u64, u32)> = (0..500u64)
        .map(|i| {
            (
                i * 7919 + 1,
                (i * 4096 * 3) % ((4 << 20) - 65536),
                512 * (1 + (i % 128) as u32),
            )
        })
        .collect();
    let sent = reqs.clone();
    let writer = std::thread::spawn(move || {
        for (cookie, offset, len) in sent {
            let r = Request {
                flags: Default::default(),
                command: Command::READ,
                cookie,
                offset,
                len,
            };
            w.write_all(&r.encode()).unwrap();
        }
    });
    let mut seen = std::collections::HashMap::new();
    for _ in 0..reqs.len() {
        let mut h = [0u8; 16];
        std::io::Read::read_exact(&mut c.s, &mut h).unwrap();
        let r = nbd::wire::SimpleReply::decode(&h).unwrap();
        let &(_, offset, len) = reqs.iter().find(|q| q.0 == r.cookie).expect("known cookie");
        assert_eq!(r.error, ErrorCode::OK);
        let mut d = vec![0u8; len as usize];
        std::io::Read::read_exact(&mut c.s, &mut d).unwrap();
        assert!(
            d == data[offset as usize..offset as usize + len as usize],
            "cookie {}",
            r.cookie
        );
        assert!(
            seen.insert(r.cookie, ()).is_none(),
            "cookie {} answered twice",
            r.cookie
        );
    }
    writer.join().unwrap();
}

#[test]
fn close_export_finishes_in_flight_then_disconnects() {
    let gate = Arc::new(GateExport::new(1 << 20, 0));
    let other = Arc::new(MemExport::new(1 << 20, 512));
    let s = TestServer::start(vec![
        (
            ExportConfig::new("gated"),
            gate.clone() as Arc<dyn nbd::BlockExport>,
        ),
        (ExportConfig::new("other"), other),
    ]);
    let handle = s.exports[0].clone();
    let mut c = Client::connect_go(&s, "gated");
    let mut o = Client::connect_go(&s, "other");
    // A read is in flight (blocked in the export) when the export is closed.
    let a = Request {
        flags: Default::default(),
        command: Command::READ,
        cookie: 1,
        offset: 0,
        len: 512,
    };
    let b = Request {
        cookie: 2,
        offset: 512,
        ..a
    };
    c.s.write_all(&[a.encode(), b.encode()].concat()).unwrap();
    gate.wait_entered();
    let (r, _) = c.reply(512);
    assert_eq!(r.cookie, 2);
    assert_eq!(handle.connections(), 1);
    handle.close();
    assert!(handle.is_closed());
    // Not idle while the request runs.
    assert!(!handle.wait_idle(Some(Duration::from_millis(200))));
    // New connections cannot select it; it is gone from the list.
    let mut n = Client::new(&s);
    let go = InfoRequest {
        name: "gated",
        requests: vec![],
    }
    .encode();
    assert_eq!(
        n.option(OptionType::GO, &go).last().unwrap().0,
        ReplyType::ERR_UNKNOWN
    );
    let list = n.option(OptionType::LIST, &[]);
    assert_eq!(list.len(), 2, "only 'other' is listed: {list:?}");
    // The request in flight completes and is answered; then the connection closes.
    gate.open();
    let (r, _) = c.reply(512);
    assert_eq!((r.cookie, r.error), (1, ErrorCode::OK));
    assert!(c.closed_by_server());
    assert!(handle.wait_idle(Some(Duration::from_secs(10))));
    assert_eq!(handle.connections(), 0);
    // The server no longer holds the export.
    assert_eq!(Arc::strong_count(&gate), 1);
    // The other export is untouched.
    assert_eq!(o.read_at(0, 512), vec![0; 512]);
    // Its name can be served again by a new export.
    s.server
        .add_export(
            ExportConfig::new("gated"),
            Arc::new(MemExport::new(4096, 512)),
        )
        .unwrap();
    let mut again = Client::new(&s);
    assert_eq!(again.go("gated").0, 4096);
}

#[test]
fn close_export_under_fio_load() {
    let e = Arc::new(MemExport::new(64 << 20, 512));
    let s = TestServer::start(vec![(
        ExportConfig::new("busy").default_export(),
        e.clone(),
    )]);
    let handle = s.exports[0].clone();
    let fio = tool("fio")
        .args([
            "--name=load",
            "--ioengine=nbd",
            &format!("--uri={}", s.uri()),
            "--rw=randrw",
            "--bs=64k",
            "--iodepth=32",
            "--time_based",
            "--runtime=60",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(20);
    while handle.connections() == 0 {
        assert!(Instant::now() < until, "fio never connected");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));
    let closed_at = Instant::now();
    handle.close();
    assert!(
        handle.wait_idle(Some(Duration::from_secs(10))),
        "connections did not end"
    );
    // fio notices (an error, not a hang) long before its 60 s.
    let out = fio.wait_with_output().unwrap();
    assert!(closed_at.elapsed() < Duration::from_secs(30));
    assert!(!out.status.success(), "fio should report the lost export");
    drop(e);
}

#[test]
fn stop_waits_for_in_flight_and_removes_the_socket() {
    let gate = Arc::new(GateExport::new(1 << 20, 0));
    let mut s = TestServer::start(vec![(
        ExportConfig::new("g").default_export(),
        gate.clone(),
    )]);
    let mut c = Client::connect_go(&s, "g");
    let idle = Client::new(&s); // still in the handshake
    c.request(Command::READ, 0, 5, 0, 512);
    gate.wait_entered();
    let stop = s.stop.clone();
    stop.stop();
    stop.stop(); // idempotent
    assert!(s
        .server
        .add_export(
            ExportConfig::new("late"),
            Arc::new(MemExport::new(512, 512))
        )
        .is_err_and(|e| e == ExportError::Stopping));
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        s.server.connections() >= 1,
        "the busy connection waits for its request"
    );
    gate.open();
    let (r, _) = c.reply(512);
    assert_eq!((r.cookie, r.error), (5, ErrorCode::OK));
    s.shutdown();
    assert_eq!(s.server.connections(), 0);
    assert!(!s.sock.exists(), "socket file removed");
    let mut idle = idle;
    assert!(idle.closed_by_server());
    assert!(s.server.run().is_err(), "run works once");
}

#[test]
fn several_connections_and_exports() {
    let a = Arc::new(MemExport::new(1 << 20, 512));
    let b = Arc::new(MemExport::new(2 << 20, 4096));
    let s = TestServer::start(vec![
        (
            ExportConfig::new("a"),
            a.clone() as Arc<dyn nbd::BlockExport>,
        ),
        (ExportConfig::new("b").default_export(), b.clone()),
    ]);
    // "" selects the default export, b.
    assert_eq!(Client::new(&s).go("").0, 2 << 20);
    // A write on one connection is visible to a read on another after its reply (one
    // shared export, which is what CAN_MULTI_CONN promises).
    let mut clients: Vec<Client> = (0..8).map(|_| Client::connect_go(&s, "a")).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        c.write(i as u64, i as u64 * 4096, &[i as u8 + 1; 4096]);
        assert_eq!(c.reply(0).0.error, ErrorCode::OK);
    }
    for (i, c) in clients.iter_mut().enumerate() {
        let j = (i + 1) % 8;
        assert_eq!(c.read_at(j as u64 * 4096, 4096), vec![j as u8 + 1; 4096]);
    }
    assert_eq!(s.exports[0].connections(), 8);
    // Configuration errors.
    for (cfg, want) in [
        (ExportConfig::new(""), ExportError::EmptyName),
        (ExportConfig::new("a"), ExportError::Duplicate("a".into())),
        (
            ExportConfig::new("c").default_export(),
            ExportError::DuplicateDefault("b".into()),
        ),
    ] {
        assert_eq!(
            s.server
                .add_export(cfg, Arc::new(MemExport::new(512, 512)))
                .unwrap_err(),
            want
        );
    }
    assert!(matches!(
        s.server
            .add_export(
                ExportConfig::new("x".repeat(4097)),
                Arc::new(MemExport::new(512, 512))
            )
            .unwrap_err(),
        ExportError::BadName(_)
    ));
    // qemu-img reads one export while nbdcopy writes the other.
    let data = common::pattern(2 << 20, 11);
    let input = s.dir.path().join("b.raw");
    common::write_file(&input, &data);
    let uri_b = s.uri_of("b");
    let copier = std::thread::spawn(move || {
        run_ok(tool("nbdcopy").arg(&input).arg(&uri_b));
    });
    let out = s.dir.path().join("a.raw");
    run_ok(
        tool("qemu-img")
            .args(["convert", "-f", "raw", "-O", "raw", &s.uri_of("a")])
            .arg(&out),
    );
    copier.join().unwrap();
    assert!(std::fs::read(&out).unwrap() == a.contents());
    assert!(b.contents() == data);
    // Once the default export is closed, "" selects nothing (not the export left).
    s.exports[1].close();
    let mut c = Client::new(&s);
    let go = InfoRequest {
        name: "",
        requests: vec![],
    }
    .encode();
    assert_eq!(
        c.option(OptionType::GO, &go).last().unwrap().0,
        ReplyType::ERR_UNKNOWN
    );
    assert_eq!(c.go("a").0, 1 << 20);
}

#[test]
fn single_worker_and_inline_only_configurations_serve_correctly() {
    for workers in [0, 1] {
        let e = Arc::new(MemExport::new(16 << 20, 512));
        let s = TestServer::start_with(
            vec![(ExportConfig::new("w").default_export(), e.clone())],
            ServerOptions {
                workers_per_connection: workers,
                max_in_flight_requests: 4,
                max_in_flight_bytes: 1 << 20,
                ..ServerOptions::default()
            },
            &[],
        );
        let data = common::pattern(16 << 20, 21);
        let input = s.dir.path().join("in.raw");
        common::write_file(&input, &data);
        run_ok(tool("nbdcopy").arg(&input).arg(s.uri()));
        assert!(e.contents() == data, "workers={workers}");
        run_ok(tool("fio").args([
            "--name=small",
            "--ioengine=nbd",
            &format!("--uri={}", s.uri()),
            "--rw=randrw",
            "--bs=4k",
            "--iodepth=16",
            "--size=16M",
            "--verify=crc32c",
            "--verify_fatal=1",
            "--verify_state_save=0",
        ]));
    }
}
