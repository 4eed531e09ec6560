//! Issue 10: what an attacker with the network port, the disk or a local account tried,
//! against the real binary (`atrest kms serve`, `atrest status`, `atrest kmip test`).
//!
//! - Defect 6: the development KMS could be starved by peers that never start TLS. Here
//!   300 idle connections from ten loopback addresses, a slow trickle, 100 connections from
//!   one address and an oversized batch; "Save and Test" must keep working throughout,
//!   the idle sockets must be closed at the handshake deadline, and the log must not grow
//!   with every refusal.
//! - Defect 8: strings from a header reach the terminal escaped.
//! - Issue 19, item 5: idle connections from the daemon's own address (127.0.0.1) must not
//!   lock it out: a newcomer evicts the oldest unauthenticated connection.

mod harness;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;

use std::time::{Duration, Instant};

use harness::atrest;
use harness::kms::{free_port, Kms, RawKmip};
use kmip::ttlv::{xml, Item, Tag, Value};

struct Env {
    _root: tempfile::TempDir,
    kms: Kms,
}

fn save_and_test(kms: &Kms) -> Result<Duration, String> {
    let started = Instant::now();
    let out = atrest(&[
        "kmip",
        "test",
        "--config",
        kms.client_toml().to_str().unwrap(),
    ]);
    if out.status.success() {
        Ok(started.elapsed())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// A TCP connection to the KMS from loopback address `from` (127.0.0.0/8 is all local).
fn connect_from(from: [u8; 4], port: u16) -> std::io::Result<TcpStream> {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    sock.bind(&SocketAddr::from((from, 0)).into())?;
    sock.connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)).into(),
        Duration::from_secs(2),
    )?;
    Ok(sock.into())
}

/// True when the server has closed `s` (a read returns end of file or a reset) within
/// `within`.
fn closed_by_server(s: &TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let mut b = [0u8; 64];
    let mut r = s;
    loop {
        match r.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return false
            }
            Err(_) => return true,
        }
    }
}

fn log_lines(kms: &Kms) -> usize {
    std::fs::read_to_string(kms.dir.with_extension("log")).map_or(0, |s| s.lines().count())
}

fn r10_6_idle_connections_cannot_starve_the_kms(env: &Env) {
    let before = log_lines(&env.kms);
    // 300 raw connections from ten addresses that never say a word: more than the 256
    // connection slots the server had, which this attack used to fill.
    let mut idle: Vec<TcpStream> = Vec::new();

    for i in 0..300u32 {
        let from = [127, 0, 0, 2 + (i % 10) as u8];
        if let Ok(s) = connect_from(from, env.kms.port) {
            idle.push(s);
        }
    }
    assert!(
        idle.len() >= 250,
        "only {} connections could be opened",
        idle.len()
    );
    // Meanwhile "Save and Test" works, every time, at once.
    for round in 0..3 {
        let t = save_and_test(&env.kms)
            .unwrap_or_else(|e| panic!("round {round}, under 300 idle connections: {e}"));
        assert!(t < Duration::from_secs(5), "round {round} took {t:?}");
    }
    // The server closes them at the handshake deadline (5 s), not after minutes.
    std::thread::sleep(Duration::from_secs(6));
    let open = idle
        .iter()
        .filter(|s| !closed_by_server(s, Duration::from_millis(100)))
        .count();
    assert_eq!(
        open, 0,
        "{open} idle connections outlived the handshake deadline"
    );
    // And the flood cost a few log lines, not one per connection.
    let added = log_lines(&env.kms) - before;
    assert!(added < 30, "300 idle connections wrote {added} log lines");
}

fn r10_6_a_slow_handshake_is_cut_at_the_deadline(env: &Env) {
    // A peer that trickles a ClientHello one byte a second never finishes; the deadline
    // holds for the whole handshake, not for each read.
    let mut s = connect_from([127, 0, 0, 20], env.kms.port).unwrap();
    let started = Instant::now();
    let hello = [
        0x16u8, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
    ];
    let mut cut = None;
    for b in hello.iter().cycle() {
        if s.write_all(&[*b]).is_err() || closed_by_server(&s, Duration::from_secs(1)) {
            cut = Some(started.elapsed());
            break;
        }
        if started.elapsed() > Duration::from_secs(20) {
            break;
        }
    }
    let cut = cut.expect("a trickling handshake was still open after 20 s");
    assert!(cut < Duration::from_secs(8), "cut after {cut:?}");
}

fn r10_6_one_address_holds_at_most_its_share(env: &Env) {
    let held: Vec<TcpStream> = (0..100)
        .filter_map(|_| connect_from([127, 0, 0, 30], env.kms.port).ok())
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let refused = held
        .iter()
        .filter(|s| closed_by_server(s, Duration::from_millis(50)))
        .count();
    assert!(
        refused >= 36,
        "one address kept {} of 100 connections",
        100 - refused
    );
    save_and_test(&env.kms).unwrap();
}

fn r10_6_a_batch_over_the_cap_is_refused(env: &Env) {
    let mut s = RawKmip::connect(&env.kms);
    let password = std::fs::read_to_string(env.kms.dir.join("kmip.pass")).unwrap();
    let call = |s: &mut RawKmip, n: usize| -> Item {
        let text = testkit::kms::query_request("appliance", password.trim(), n);
        s.call(&xml::from_xml(&text).unwrap())
    };
    let ok = call(&mut s, 64);
    let items: Vec<&Item> = ok.children_with(Tag::BATCH_ITEM).collect();
    assert_eq!(items.len(), 64, "{}", xml::to_xml(&ok));
    assert!(items
        .iter()
        .all(|i| i.child(Tag::RESULT_STATUS).unwrap().value == Value::Enumeration(0)));
    let refused = call(&mut s, 5000);
    let items: Vec<&Item> = refused.children_with(Tag::BATCH_ITEM).collect();
    assert_eq!(items.len(), 1, "{}", xml::to_xml(&refused));
    assert_ne!(
        items[0].child(Tag::RESULT_STATUS).unwrap().value,
        Value::Enumeration(0)
    );
    let msg = xml::to_xml(items[0]);
    assert!(msg.contains("at most 64"), "{msg}");
}

/// Ten TLS sessions that never ask anything, then 300 raw sockets that never start TLS,
/// all from 127.0.0.1, which may hold 64 connections and is where the daemon connects
/// from. "Save and Test" from that address works at once: it evicts the oldest
/// unauthenticated connection instead of being refused (before, the first 64 held the
/// address's share until their 5 s deadline), and the evicted ones are closed long
/// before any deadline.
fn r19_5_idle_connections_cannot_lock_out_the_daemons_address(env: &Env) {
    let before = log_lines(&env.kms);
    let attack = Instant::now();
    let silent: Vec<RawKmip> = (0..10).map(|_| RawKmip::connect(&env.kms)).collect();
    let idle: Vec<TcpStream> = (0..300)
        .filter_map(|_| connect_from([127, 0, 0, 1], env.kms.port).ok())
        .collect();
    assert!(
        idle.len() >= 250,
        "only {} connections could be opened",
        idle.len()
    );
    let t = save_and_test(&env.kms)
        .unwrap_or_else(|e| panic!("under 300 idle connections from 127.0.0.1: {e}"));
    assert!(t < Duration::from_secs(3), "Save and Test took {t:?}");
    assert!(
        attack.elapsed() < Duration::from_secs(5),
        "served only after {:?}, when the handshake deadline may have freed places",
        attack.elapsed()
    );
    // The oldest were evicted: every silent TLS session, and all but the newest raw
    // sockets, are closed already.
    for s in &silent {
        assert!(
            closed_by_server(s.stream.get_ref(), Duration::from_millis(500)),
            "a silent TLS session kept its place"
        );
    }
    let open = idle
        .iter()
        .filter(|s| !closed_by_server(s, Duration::from_millis(10)))
        .count();
    assert!(
        open < 64,
        "{open} raw sockets from 127.0.0.1 still held a place"
    );
    let added = log_lines(&env.kms) - before;
    assert!(added < 30, "the attack wrote {added} log lines");
}

/// An attacker with the disk writes a header whose strings carry terminal escapes; atrest
/// prints them escaped (or refuses them), never raw.
fn r10_8_header_strings_reach_the_terminal_escaped(env: &Env) {
    use volume::backend::{BlockBackend, FileBackend};
    use volume::luks2::header;
    let img = env.kms.dir.with_extension("inject.img");
    std::fs::write(&img, vec![0u8; 17 << 20]).unwrap();
    let dev = FileBackend::new(
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&img)
            .unwrap(),
    );
    let opts = volume::volume::FormatOptions {
        mode: volume::volume::KeyMode::Wrapped,
        volume_key_len: 32,
        sector_size: 512,
        key_uid: "uid".into(),
        server_hint: Some("kms\x1b]0;pwned\x07\x1b[2J".into()),
        data_size: None,
        detached: false,
    };
    volume::volume::format(&dev, b"0123456789abcdef0123456789ABCDEF", &opts).unwrap();
    let mut h = header::read(&dev).unwrap().header;
    h.binary.uuid = "\x1b[31mred\x1b[0m".into();
    header::write(&dev, &mut h).unwrap();
    dev.sync().unwrap();
    let out = atrest(&["status", img.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = [out.stdout, out.stderr].concat();
    assert!(
        !text.contains(&0x1b) && !text.contains(&0x07),
        "raw escape printed: {}",
        String::from_utf8_lossy(&text)
    );
    assert!(String::from_utf8_lossy(&text).contains("\\u{1b}]0;pwned"));
    // A key identifier with escapes is refused, and the refusal prints it escaped.
    let mut h = header::read(&dev).unwrap().header;
    h.metadata
        .tokens
        .get_mut("0")
        .unwrap()
        .extra
        .insert("key_uid".into(), "k\x1b]52;c;cHduZWQ=\x07".into());
    header::write(&dev, &mut h).unwrap();
    for args in [
        vec!["status", img.to_str().unwrap()],
        vec![
            "decrypt",
            "--config",
            env.kms.client_toml().to_str().unwrap(),
            img.to_str().unwrap(),
        ],
    ] {
        let out = atrest(&args);
        assert!(!out.status.success());
        let text = [out.stdout, out.stderr].concat();
        assert!(
            !text.contains(&0x1b),
            "{args:?} printed a raw escape: {}",
            String::from_utf8_lossy(&text)
        );
        assert!(
            String::from_utf8_lossy(&text).contains("key_uid"),
            "{}",
            String::from_utf8_lossy(&text)
        );
    }
    let _ = std::fs::remove_file(&img);
}

fn main() {
    let root = tempfile::tempdir().unwrap();
    let kms = Kms::start(&root.path().join("kms"), free_port());
    let env = Env { _root: root, kms };
    assert!(Path::new(&env.kms.client_toml()).exists());
    let cases: &[harness::Case<Env>] = &[
        (
            "r10_6_idle_connections_cannot_starve_the_kms",
            r10_6_idle_connections_cannot_starve_the_kms,
        ),
        (
            "r10_6_a_slow_handshake_is_cut_at_the_deadline",
            r10_6_a_slow_handshake_is_cut_at_the_deadline,
        ),
        (
            "r10_6_one_address_holds_at_most_its_share",
            r10_6_one_address_holds_at_most_its_share,
        ),
        (
            "r10_6_a_batch_over_the_cap_is_refused",
            r10_6_a_batch_over_the_cap_is_refused,
        ),
        (
            "r19_5_idle_connections_cannot_lock_out_the_daemons_address",
            r19_5_idle_connections_cannot_lock_out_the_daemons_address,
        ),
        (
            "r10_8_header_strings_reach_the_terminal_escaped",
            r10_8_header_strings_reach_the_terminal_escaped,
        ),
    ];
    let (conclusion, env) = harness::run(cases, env);
    drop(env);
    conclusion.exit();
}
