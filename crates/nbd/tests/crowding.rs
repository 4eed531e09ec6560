//! Issue 19, "bounded peers everywhere": a local account crowding the loopback TCP export
//! with sockets that never finish their handshake must not lock the export's owner out.
//! Each test attacks the real server over real sockets on 127.0.0.1 and checks who is
//! served and who is cut.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{pattern, wait_for, Client, GateExport, TestServer};
use nbd::limits::{DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_MAX_CONNECTIONS};
use nbd::wire::{Command, ErrorCode, OptionHeader, OptionType, Request};
use nbd::{BlockExport, ExportConfig, ListenAddr, MemExport, ServerOptions};
use testkit::net::{closed_now, wait_closed};

const SIZE: usize = 1 << 20;

fn tcp_any() -> ListenAddr {
    ListenAddr::Tcp(SocketAddr::from(([127, 0, 0, 1], 0)))
}

/// A server with one default export "mem" holding `pattern(SIZE, 19)`, on a Unix socket
/// and loopback TCP.
fn serve(options: ServerOptions) -> TestServer {
    let e = Arc::new(MemExport::new(SIZE, 512));
    e.write(0, &pattern(SIZE, 19), false).unwrap();
    TestServer::start_with(
        vec![(ExportConfig::new("mem").default_export(), e)],
        options,
        &[tcp_any()],
    )
}

/// A raw socket to the TCP export that will never say a word.
fn idle_socket(s: &TestServer) -> Option<TcpStream> {
    let addr = SocketAddr::from(([127, 0, 0, 1], s.tcp_port()));
    TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()
}

/// The attack of issue 19: 300 silent sockets on the TCP export, far more than its 64
/// slots. Before the fix the first 64 held every slot until their 10 s deadline and the
/// owner was closed on accept; now the owner's connection evicts the oldest silent one,
/// and the owner completes the handshake and reads, well before any deadline could have
/// freed a slot.
#[test]
fn three_hundred_idle_tcp_sockets_cannot_lock_the_owner_out() {
    let s = serve(ServerOptions::default());
    let attack = Instant::now();
    let idle: Vec<TcpStream> = (0..300).filter_map(|_| idle_socket(&s)).collect();
    assert!(
        idle.len() >= 250,
        "only {} connections could be opened",
        idle.len()
    );

    let mut owner = Client::tcp(&s);
    owner.go("mem");
    assert_eq!(owner.read_at(0, 4096), pattern(SIZE, 19)[..4096]);
    let served = attack.elapsed();
    assert!(
        served < Duration::from_secs(5) && served < DEFAULT_HANDSHAKE_TIMEOUT / 2,
        "the owner was served only after {served:?}, when deadlines may have freed slots"
    );

    // The silent sockets were evicted oldest first: all but the newest 63 (the owner
    // holds the 64th slot) are closed, long before their deadline.
    let mut idle = idle;
    let evicted = idle.len() - (DEFAULT_MAX_CONNECTIONS - 1);
    for (n, i) in idle[..evicted].iter_mut().enumerate() {
        assert!(
            wait_closed(i, Duration::from_secs(2)).is_some(),
            "silent socket {n} of {} still holds a slot",
            idle.len()
        );
    }
    assert!(
        !idle[evicted..].iter().any(closed_now),
        "a newer silent socket was evicted before an older one"
    );
    assert!(attack.elapsed() < DEFAULT_HANDSHAKE_TIMEOUT);
    // The owner keeps working while the attacker still holds its sockets.
    assert_eq!(owner.simple(Command::FLUSH, 0, 0, 0), ErrorCode::OK);
    drop(idle);
}

/// The handshake deadline holds from the accept, whatever the peer sends: a silent socket
/// and one trickling valid option bytes (a `NBD_OPT_LIST` over and over, one byte at a
/// time) are both cut when it passes.
#[test]
fn silent_and_trickling_handshakes_are_cut_at_the_deadline() {
    let deadline = Duration::from_millis(1000);
    let s = serve(ServerOptions {
        handshake_timeout: deadline,
        ..ServerOptions::default()
    });
    let started = Instant::now();
    let mut silent = idle_socket(&s).unwrap();
    let mut trickler = idle_socket(&s).unwrap();

    let list = [
        &(nbd::wire::FLAG_C_FIXED_NEWSTYLE | nbd::wire::FLAG_C_NO_ZEROES).to_be_bytes()[..],
        &OptionHeader {
            option: OptionType::LIST,
            len: 0,
        }
        .encode()[..],
    ]
    .concat();
    let option = &list[4..];
    let bytes = list[..4].iter().chain(option.iter().cycle());
    let mut cut = None;
    // Bounded: at most 200 bytes, one every 50 ms (10 s), far past the deadline.
    for b in bytes.take(200) {
        if trickler.write_all(&[*b]).is_err() {
            cut = Some(Instant::now());
            break;
        }
        if let Some(t) = wait_closed(&mut trickler, Duration::from_millis(50)) {
            cut = Some(t);
            break;
        }
    }
    let cut = cut.expect("a trickling handshake outlived its deadline by 9 s") - started;
    assert!(
        cut >= deadline - Duration::from_millis(100) && cut < deadline * 3,
        "the trickler was cut after {cut:?} (deadline {deadline:?})"
    );
    let silent_cut = wait_closed(&mut silent, Duration::from_secs(5))
        .expect("a silent socket outlived its deadline")
        - started;
    assert!(
        silent_cut < deadline * 3,
        "the silent socket was cut after {silent_cut:?}"
    );
    // The slots are free again.
    wait_for("the cut connections to end", || s.server.connections() == 0);
}

/// Eviction takes only connections still in their handshake, oldest first: a full table
/// of clients in transmission refuses a newcomer and keeps serving every client.
#[test]
fn a_full_table_evicts_handshakes_never_clients_being_served() {
    let s = serve(ServerOptions {
        max_connections: 4,
        ..ServerOptions::default()
    });
    let mut served: Vec<Client<TcpStream>> = (0..4)
        .map(|_| {
            let mut c = Client::tcp(&s);
            c.go("mem");
            c
        })
        .collect();
    // Every slot serves a client, all idle: the newcomer takes the slot of the one that
    // was active least recently (the first: the others read just now). Before, a table of
    // idle clients (64 silent ones made by any local account) refused the owner for good.
    for c in &mut served[1..] {
        assert_eq!(c.read_at(512, 512), pattern(SIZE, 19)[512..1024]);
    }
    let mut newcomer = Client::tcp(&s);
    newcomer.go("mem");
    let mut first = served.remove(0);
    assert!(
        first.closed_by_server(),
        "the least recently active client kept its slot"
    );
    served.push(newcomer);
    for c in &mut served {
        assert_eq!(c.read_at(512, 512), pattern(SIZE, 19)[512..1024]);
    }

    // One client leaves; silent sockets now take turns in the free slot, each evicting
    // the one before it (a handshake is cut before any client in transmission).
    served.pop();
    wait_for("the client's connection to end", || {
        s.server.connections() == 3
    });
    let mut idle: Vec<TcpStream> = (0..10).filter_map(|_| idle_socket(&s)).collect();
    let newest = idle.pop().unwrap();
    for i in &mut idle {
        assert!(
            wait_closed(i, Duration::from_secs(5)).is_some(),
            "an older silent socket kept the slot"
        );
    }
    // The owner evicts the newest silent socket, and everyone in transmission is served.
    let mut owner = Client::tcp(&s);
    owner.go("mem");
    let mut newest = newest;
    assert!(wait_closed(&mut newest, Duration::from_secs(5)).is_some());
    for c in served.iter_mut().chain(std::iter::once(&mut owner)) {
        assert_eq!(c.read_at(0, 512), pattern(SIZE, 19)[..512]);
    }
}

/// A client in the middle of a request is never cut to make room: with the only slot
/// held by a read the export has not answered yet, a newcomer is closed instead, and the
/// read is answered once the export lets it through.
#[test]
fn a_client_with_a_request_in_flight_is_never_evicted() {
    let gate = Arc::new(GateExport::new(SIZE, 4096));
    let s = TestServer::start_with(
        vec![(ExportConfig::new("mem").default_export(), gate.clone())],
        ServerOptions {
            max_connections: 1,
            ..ServerOptions::default()
        },
        &[tcp_any()],
    );
    let mut busy = Client::tcp(&s);
    busy.go("mem");
    busy.request(Command::READ, 0, 9, 4096, 512);
    gate.wait_entered();
    let mut refused = idle_socket(&s).unwrap();
    assert!(wait_closed(&mut refused, Duration::from_secs(5)).is_some());
    gate.open();
    let (r, _) = busy.reply(512);
    assert_eq!((r.cookie, r.error), (9, ErrorCode::OK));
}

/// The optional transmission idle timeout closes a connection that has nothing in flight
/// and sends nothing, and never one in the middle of a request: not one whose header
/// arrives slowly, nor one whose request runs longer than the timeout on the export.
#[test]
fn the_idle_timeout_spares_slow_requests() {
    let idle = Duration::from_millis(300);
    let gate = Arc::new(GateExport::new(SIZE, 4096));
    let s = TestServer::start_with(
        vec![(ExportConfig::new("mem").default_export(), gate.clone())],
        ServerOptions {
            idle_timeout: Some(idle),
            ..ServerOptions::default()
        },
        &[tcp_any()],
    );

    // A client that goes quiet is closed after the timeout, not before.
    let mut quiet = Client::tcp(&s);
    quiet.go("mem");
    let since = Instant::now();
    let closed = wait_closed(&mut quiet.s, Duration::from_secs(5))
        .expect("an idle client was never closed")
        - since;
    assert!(
        // (`since` is taken a moment after the server started counting.)
        closed >= idle - Duration::from_millis(50) && closed < idle * 10,
        "closed after {closed:?}"
    );

    // A header that arrives in two halves, twice the timeout apart, is answered.
    let mut slow = Client::tcp(&s);
    slow.go("mem");
    let header = Request {
        flags: nbd::wire::CommandFlags(0),
        command: Command::READ,
        cookie: 7,
        offset: 0,
        len: 512,
    }
    .encode();
    slow.s.write_all(&header[..10]).unwrap();
    std::thread::sleep(idle * 2);
    slow.s.write_all(&header[10..]).unwrap();
    let (reply, data) = slow.reply(512);
    assert_eq!((reply.error, reply.cookie), (ErrorCode::OK, 7));
    assert_eq!(data, vec![0u8; 512]);

    // A read held on the export for twice the timeout is answered, and the connection
    // stays usable after it.
    slow.request(Command::READ, 0, 8, 4096, 512);
    gate.wait_entered();
    std::thread::sleep(idle * 2);
    gate.open();
    let (reply, _) = slow.reply(512);
    assert_eq!((reply.error, reply.cookie), (ErrorCode::OK, 8));
    assert_eq!(slow.simple(Command::FLUSH, 0, 0, 0), ErrorCode::OK);
}

/// The outside run's attack on the first fix: 100 connections that finish the handshake
/// and then sit silent (no credential is needed on a TCP export) held all 64 slots, and
/// the owner was closed on accept for as long as they stayed. Now each newcomer takes the
/// slot of the least recently active idle client, and the owner reads.
#[test]
fn silent_clients_past_the_handshake_cannot_lock_the_owner_out() {
    let s = serve(ServerOptions::default());
    let squatters: Vec<Client<TcpStream>> = (0..DEFAULT_MAX_CONNECTIONS + 36)
        .map(|_| {
            let mut c = Client::tcp(&s);
            c.go("mem");
            c
        })
        .collect();
    let mut owner = Client::tcp(&s);
    owner.go("mem");
    assert_eq!(owner.read_at(0, 512), pattern(SIZE, 19)[..512]);
    assert!(s.server.connections() <= DEFAULT_MAX_CONNECTIONS);
    drop(squatters);
}
