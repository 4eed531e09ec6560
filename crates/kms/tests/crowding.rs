//! Issue 19, "bounded peers everywhere": a local account crowding the development KMS with
//! connections from 127.0.0.1 (raw sockets that never start TLS, TLS sessions that never
//! ask anything) must not lock out a client on the same address, as the daemon is. Each
//! test runs the real server and attacks it over real sockets on 127.0.0.1; the client is
//! OpenSSL with the directory's client certificate, sending a KMIP Query.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kmip::ttlv::{self, xml, Item, Tag, Value};
use kms::server::{Options, Server, Stopper};
use openssl::ssl::SslStream;
use testkit::kms::{query_request, tls_session};
use testkit::net::{closed_now, wait_closed};

/// A development KMS on a free loopback port, stopped on drop.
struct Kms {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    addr: SocketAddr,
    stopper: Stopper,
    thread: Option<JoinHandle<()>>,
}

impl Kms {
    fn start(tune: impl FnOnce(&mut Options)) -> Kms {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("kms");
        let mut options = Options::new(SocketAddr::from(([127, 0, 0, 1], 0)));
        tune(&mut options);
        kms::setup::ensure(&dir, options.listen).unwrap();
        let server = Server::bind(&dir, options).unwrap();
        let addr = server.local_addr();
        let stopper = server.stopper();
        let thread = Some(std::thread::spawn(move || server.run()));
        Kms {
            _dir: root,
            dir,
            addr,
            stopper,
            thread,
        }
    }

    /// A raw socket that will never start TLS.
    fn raw(&self) -> Option<TcpStream> {
        TcpStream::connect_timeout(&self.addr, Duration::from_secs(2)).ok()
    }

    /// A TLS session with the client certificate, as the daemon opens it.
    fn tls(&self) -> SslStream<TcpStream> {
        tls_session(&self.dir, self.addr)
    }
}

impl Drop for Kms {
    fn drop(&mut self) {
        self.stopper.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Sends a Query with the directory's Credential on `s`; true when it succeeded.
fn query(dir: &Path, s: &mut SslStream<TcpStream>) -> bool {
    let password = std::fs::read_to_string(dir.join("kmip.pass")).unwrap();
    let text = query_request(kms::setup::USERNAME, password.trim(), 1);
    if s.write_all(&ttlv::encode(&xml::from_xml(&text).unwrap()))
        .is_err()
    {
        return false;
    }
    let mut h = [0u8; 8];
    if s.read_exact(&mut h).is_err() {
        return false;
    }
    let len = ttlv::message_len(&h, &ttlv::Limits::default()).unwrap();
    let mut buf = vec![0u8; len];
    buf[..8].copy_from_slice(&h);
    s.read_exact(&mut buf[8..]).unwrap();
    let response: Item = ttlv::decode(&buf).unwrap();
    let status = response
        .child(Tag::BATCH_ITEM)
        .and_then(|i| i.child(Tag::RESULT_STATUS))
        .map(|s| s.value.clone());
    status == Some(Value::Enumeration(0))
}

/// The attack of issue 19: twenty TLS sessions that never ask anything, then 300 raw
/// sockets that never start TLS, all from 127.0.0.1, which may hold 64 connections. Before
/// the fix the first 64 held the address's share until their deadline and the client
/// (the daemon, on the same address) was refused; now it evicts the oldest unauthenticated
/// connection and its Query is answered well before any deadline could have freed a place.
#[test]
fn idle_connections_from_the_clients_address_cannot_lock_it_out() {
    let kms = Kms::start(|_| {});
    let defaults = Options::new(kms.addr);
    let attack = Instant::now();
    let mut silent_tls: Vec<SslStream<TcpStream>> = (0..20).map(|_| kms.tls()).collect();
    let mut raw: Vec<TcpStream> = (0..300).filter_map(|_| kms.raw()).collect();
    assert!(raw.len() >= 250, "only {} connections opened", raw.len());

    let mut client = kms.tls();
    assert!(query(&kms.dir, &mut client), "the client's Query failed");
    let served = attack.elapsed();
    println!("  the client was served {served:?} after the attack began");
    let first_deadline = defaults
        .handshake_timeout
        .min(defaults.authentication_timeout);
    assert!(
        served < Duration::from_secs(4) && served < first_deadline,
        "the client was served after {served:?}, when deadlines may have freed places"
    );

    // The places were taken from the oldest unauthenticated connections: every silent TLS
    // session, and all raw sockets but the newest 63 (the client holds the 64th place).
    for s in &mut silent_tls {
        assert!(
            wait_closed(s.get_mut(), Duration::from_millis(500)).is_some(),
            "a silent TLS session kept its place"
        );
    }
    let evicted = raw.len() - (defaults.max_per_peer - 1);
    for (n, s) in raw[..evicted].iter_mut().enumerate() {
        assert!(
            wait_closed(s, Duration::from_millis(500)).is_some(),
            "raw socket {n} kept its place"
        );
    }
    assert!(
        !raw[evicted..].iter().any(closed_now),
        "a newer raw socket was evicted before an older one"
    );
    assert!(
        attack.elapsed() < first_deadline,
        "too slow to tell eviction from the deadline"
    );
    // The client is authenticated now: newcomers take the raw sockets' places, not its.
    let more: Vec<TcpStream> = (0..100).filter_map(|_| kms.raw()).collect();
    assert!(
        query(&kms.dir, &mut client),
        "the client lost its connection"
    );
    drop((more, raw));
}

/// An unauthenticated peer is closed at its deadline: a TLS session that asks nothing
/// after the authentication timeout, a raw socket after the handshake timeout. A client
/// whose request authenticated is not, however long it stays quiet after.
#[test]
fn unauthenticated_peers_are_closed_at_their_deadline() {
    let kms = Kms::start(|o| {
        o.handshake_timeout = Duration::from_millis(1500);
        o.authentication_timeout = Duration::from_millis(800);
    });
    let mut client = kms.tls();
    assert!(query(&kms.dir, &mut client));

    let started = Instant::now();
    let mut raw = kms.raw().unwrap();
    let mut silent = kms.tls();
    let tls_done = Instant::now();
    let silent_cut = wait_closed(silent.get_mut(), Duration::from_secs(5))
        .expect("a silent TLS session outlived its deadline")
        - tls_done;
    assert!(
        silent_cut >= Duration::from_millis(700) && silent_cut < Duration::from_secs(3),
        "the silent TLS session was closed after {silent_cut:?}"
    );
    let raw_cut = wait_closed(&mut raw, Duration::from_secs(5))
        .expect("a raw socket outlived its deadline")
        - started;
    assert!(
        raw_cut >= Duration::from_millis(1400) && raw_cut < Duration::from_secs(4),
        "the raw socket was closed after {raw_cut:?}"
    );
    // Past both deadlines, the authenticated client is still served.
    assert!(
        started.elapsed() > Duration::from_millis(1500),
        "the deadlines have not passed yet"
    );
    assert!(
        query(&kms.dir, &mut client),
        "an authenticated client was cut"
    );
}

/// Eviction takes only unauthenticated connections: with the address's share held by
/// authenticated clients, a newcomer from it waits its `queue_wait`, is refused, and every
/// client keeps its place.
/// Issue 25: clients that keep their connection between requests (the daemon does, for
/// its key checks) must not hold an address's share against newcomers: one that has
/// waited `silent` for its next request gives way, the longest-waiting first, and only
/// after every stalled unauthenticated connection. A client in the middle of a request
/// never does: its request is answered.
#[test]
fn idle_clients_give_way_and_working_ones_never() {
    let kms = Kms::start(|o| {
        o.max_per_peer = 4;
        o.queue_wait = Duration::from_millis(400);
    });
    // Past the server's 500 ms of silence.
    let silent = Duration::from_millis(500);
    let mut idle: Vec<SslStream<TcpStream>> = (0..3).map(|_| kms.tls()).collect();
    for c in &mut idle {
        assert!(query(&kms.dir, c));
    }
    // The fourth place: a client that has sent the first 8 bytes of a request.
    let mut working = kms.tls();
    assert!(query(&kms.dir, &mut working));
    let password = std::fs::read_to_string(kms.dir.join("kmip.pass")).unwrap();
    let request = ttlv::encode(
        &xml::from_xml(&query_request(kms::setup::USERNAME, password.trim(), 1)).unwrap(),
    );
    working.write_all(&request[..8]).unwrap();
    working.flush().unwrap();
    std::thread::sleep(silent + Duration::from_millis(200));
    // Three newcomers take the three idle clients' places; a fourth finds only the working
    // client and the newcomers (unauthenticated, not yet silent): it waits its queue_wait,
    // then, stalled by then, the oldest newcomer gives way.
    let mut newcomers: Vec<TcpStream> = (0..3).filter_map(|_| kms.raw()).collect();
    assert_eq!(newcomers.len(), 3);
    for c in &mut idle {
        let mut b = [0u8; 1];
        let closed = matches!(c.read(&mut b), Ok(0) | Err(_));
        assert!(closed, "an idle client kept its place against a newcomer");
    }
    let fourth = kms.raw().unwrap();
    // (All three kept open: one that closed would free its place.)
    assert!(wait_closed(&mut newcomers[0], Duration::from_secs(3)).is_some());
    assert!(!closed_now(&newcomers[1]) && !closed_now(&newcomers[2]));
    assert!(!closed_now(&fourth), "the fourth newcomer was refused");
    // The working client's request completes and is answered.
    working.write_all(&request[8..]).unwrap();
    let mut h = [0u8; 8];
    working.read_exact(&mut h).unwrap();
    let mut rest = vec![0u8; ttlv::message_len(&h, &ttlv::Limits::default()).unwrap() - 8];
    working.read_exact(&mut rest).unwrap();
    assert!(
        query(&kms.dir, &mut working),
        "the working client lost its place"
    );
    // An evicted client reconnects, as atrest's client does on its next request.
    drop(fourth.shutdown(std::net::Shutdown::Both));
    let mut back = kms.tls();
    assert!(query(&kms.dir, &mut back));
}

/// Issue 25, the unlock storm: 120 clients behind one address (a test rig, a NAT) start at
/// once, each connecting, asking and leaving, where the address may hold 16 connections.
/// Evicting the oldest cut real clients in the middle of their handshake (reset by peer),
/// and refusing turned them away; now a newcomer waits for a place, evicting only a
/// stalled connection, and every client is served.
#[test]
fn a_storm_of_clients_behind_one_address_queues_instead_of_being_reset() {
    let kms = Kms::start(|o| o.max_per_peer = 16);
    let connector = testkit::kms::client_connector(&kms.dir);
    let started = Instant::now();
    let failures: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..120)
            .map(|_| {
                let (connector, dir, addr) = (connector.clone(), kms.dir.clone(), kms.addr);
                s.spawn(move || -> Result<(), String> {
                    let tcp = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
                    tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                    let mut tls = connector
                        .connect("localhost", tcp)
                        .map_err(|e| format!("TLS: {e}"))?;
                    if query(&dir, &mut tls) {
                        Ok(())
                    } else {
                        Err("the Query failed (the connection was cut)".into())
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .filter_map(|h| h.join().unwrap().err())
            .collect()
    });
    assert!(
        failures.is_empty(),
        "{} of 120 clients failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    println!(
        "  120 clients through a 16-connection share in {:?}",
        started.elapsed()
    );
}
