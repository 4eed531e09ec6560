//! The audit log's entries, also as RFC 5424 syslog messages for a SIEM: to the local
//! syslog socket, or to a remote collector over TCP (RFC 6587 octet counting) or TLS (RFC
//! 5425). Beside the JSON lines, never instead of them: the file stays the record.
//!
//! A message is `<PRI>1 TIME HOST atrest PID OPERATION [atrest@32473 volume=… key_uid=…
//! server=… source=… latency_ms=…] RESULT`, facility 13 (log audit), severity notice for a
//! result `ok` and warning otherwise. 32473 is the enterprise number RFC 5612 reserves for
//! examples: atrest has none of its own. No key or secret is ever in an entry.
//!
//! Sending never blocks the daemon: entries go to a bounded queue that one thread drains;
//! while the collector is away the thread reconnects with backoff, the queue holds up to
//! [`QUEUE`] messages, and what does not fit is counted as dropped. [`SyslogHealth`] is in
//! the daemon's status. Hand-written rather than a crate's: the crates found speak RFC 3164
//! or lack TLS with certificate checks, and the format is a few lines.

use std::io::Write;
use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openssl::ssl::{SslConnector, SslMethod, SslStream, SslVersion};
use serde::{Deserialize, Serialize};

use crate::audit::Entry;

/// Messages waiting for the collector, at most.
pub const QUEUE: usize = 10_000;
/// How long a connection attempt or a write may take.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest wait between attempts while the collector is away.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// The documentation enterprise number (RFC 5612).
const SD_ID: &str = "atrest@32473";

/// Where the messages go (`[serve] syslog`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A local datagram socket (`local` is `/dev/log`).
    Unix(PathBuf),
    /// A collector over TCP.
    Tcp(String, u16),
    /// A collector over TLS, its certificate checked against `syslog_ca` and its name.
    Tls(String, u16),
}

impl Target {
    /// `local`, `unix:PATH`, `tcp://HOST:PORT` or `tls://HOST:PORT` (ports 514 and 6514
    /// when not given).
    pub fn parse(s: &str) -> Result<Self, String> {
        let host_port = |rest: &str, default: u16| -> Result<(String, u16), String> {
            let port = |p: &str| p.parse::<u16>().map_err(|_| format!("{p:?} is not a port"));
            let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
                // [v6] or [v6]:port
                let (h, after) = v6.split_once(']').ok_or("an unclosed [")?;
                match after.strip_prefix(':') {
                    Some(p) => (h, port(p)?),
                    None if after.is_empty() => (h, default),
                    None => return Err(format!("{after:?} after the address")),
                }
            } else {
                match rest.split_once(':') {
                    Some((h, p)) if !p.contains(':') => (h, port(p)?),
                    // A bare IPv6 address.
                    Some(_) => (rest, default),
                    None => (rest, default),
                }
            };
            if host.is_empty() {
                return Err("no host".into());
            }
            Ok((host.to_owned(), port))
        };
        if s == "local" {
            Ok(Self::Unix("/dev/log".into()))
        } else if let Some(p) = s.strip_prefix("unix:") {
            Ok(Self::Unix(p.into()))
        } else if let Some(r) = s.strip_prefix("tcp://") {
            let (h, p) = host_port(r, 514)?;
            Ok(Self::Tcp(h, p))
        } else if let Some(r) = s.strip_prefix("tls://") {
            let (h, p) = host_port(r, 6514)?;
            Ok(Self::Tls(h, p))
        } else {
            Err("write local, unix:PATH, tcp://HOST:PORT or tls://HOST:PORT".into())
        }
    }

    fn describe(&self) -> String {
        match self {
            Self::Unix(p) => format!("unix:{}", p.display()),
            Self::Tcp(h, p) => format!("tcp://{h}:{p}"),
            Self::Tls(h, p) => format!("tls://{h}:{p}"),
        }
    }
}

/// How forwarding stands, as the status shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyslogHealth {
    /// Where to.
    pub target: String,
    /// The last message went out (or none failed yet).
    pub ok: bool,
    /// Messages delivered.
    pub sent: u64,
    /// Messages dropped because the queue was full.
    pub dropped: u64,
    /// The last error, while failing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

enum Conn {
    Unix(UnixDatagram, PathBuf),
    Tcp(TcpStream),
    Tls(Box<SslStream<TcpStream>>),
}

impl Conn {
    fn open(target: &Target, tls: Option<&SslConnector>) -> Result<Self, String> {
        let tcp = |h: &str, p: u16| -> Result<TcpStream, String> {
            use std::net::ToSocketAddrs;
            let addrs = (h, p)
                .to_socket_addrs()
                .map_err(|e| format!("resolving {h}: {e}"))?;
            let mut last = format!("{h}:{p} has no address");
            for a in addrs {
                match TcpStream::connect_timeout(&a, IO_TIMEOUT) {
                    Ok(s) => {
                        s.set_write_timeout(Some(IO_TIMEOUT)).ok();
                        s.set_read_timeout(Some(IO_TIMEOUT)).ok();
                        return Ok(s);
                    }
                    Err(e) => last = format!("connecting to {a}: {e}"),
                }
            }
            Err(last)
        };
        match target {
            Target::Unix(p) => {
                let s = UnixDatagram::unbound().map_err(|e| e.to_string())?;
                s.set_write_timeout(Some(IO_TIMEOUT)).ok();
                Ok(Self::Unix(s, p.clone()))
            }
            Target::Tcp(h, p) => Ok(Self::Tcp(tcp(h, *p)?)),
            Target::Tls(h, p) => {
                let c = tls.ok_or("no TLS context")?;
                let s = c
                    .connect(h, tcp(h, *p)?)
                    .map_err(|e| format!("TLS with {h}:{p}: {e}"))?;
                Ok(Self::Tls(Box::new(s)))
            }
        }
    }

    fn send(&mut self, msg: &[u8]) -> std::io::Result<()> {
        // Octet counting (RFC 6587 3.4.1, RFC 5425 4.3): a message may hold newlines.
        let framed = |m: &[u8]| [format!("{} ", m.len()).as_bytes(), m].concat();
        match self {
            Self::Unix(s, p) => s.send_to(msg, p).map(|_| ()),
            Self::Tcp(s) => s.write_all(&framed(msg)),
            Self::Tls(s) => s.write_all(&framed(msg)),
        }
    }
}

/// The forwarder.
pub struct Syslog {
    tx: Option<SyncSender<Vec<u8>>>,
    health: Arc<Mutex<SyslogHealth>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    host: String,
}

impl Syslog {
    /// Starts forwarding to `target`; `ca_pem` checks a TLS collector's certificate.
    pub fn start(target: Target, ca_pem: Option<&[u8]>) -> Result<Self, String> {
        let tls = match (&target, ca_pem) {
            (Target::Tls(..), None) => {
                return Err(
                    "a tls:// collector needs syslog_ca (the CA that signed its certificate)"
                        .into(),
                )
            }
            (Target::Tls(..), Some(pem)) => {
                let mut b =
                    SslConnector::builder(SslMethod::tls_client()).map_err(|e| e.to_string())?;
                b.set_min_proto_version(Some(SslVersion::TLS1_2))
                    .map_err(|e| e.to_string())?;
                let store = b.cert_store_mut();
                let certs = openssl::x509::X509::stack_from_pem(pem)
                    .map_err(|e| format!("syslog_ca is not PEM: {e}"))?;
                if certs.is_empty() {
                    return Err("syslog_ca holds no certificate".into());
                }
                for c in certs {
                    store.add_cert(c).map_err(|e| e.to_string())?;
                }
                Some(b.build())
            }
            _ => None,
        };
        let health = Arc::new(Mutex::new(SyslogHealth {
            target: target.describe(),
            ok: true,
            ..SyslogHealth::default()
        }));
        let (tx, rx) = sync_channel(QUEUE);
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (health, stop) = (health.clone(), stop.clone());
            std::thread::Builder::new()
                .name("syslog".into())
                .spawn(move || drain(&target, tls.as_ref(), &rx, &health, &stop))
                .map_err(|e| e.to_string())?
        };
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .ok()
            .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic()))
            .unwrap_or_else(|| "-".into());
        Ok(Self {
            tx: Some(tx),
            health,
            stop,
            thread: Some(thread),
            host,
        })
    }

    /// Queues `e` (dropped and counted when the queue is full: the daemon never waits).
    pub fn send(&self, e: &Entry<'_>) {
        let Some(tx) = &self.tx else { return };
        let msg = format(e, &self.host, std::process::id());
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = tx.try_send(msg) {
            self.health
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .dropped += 1;
        }
    }

    /// How it stands.
    pub fn health(&self) -> SyslogHealth {
        self.health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl std::fmt::Debug for Syslog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Syslog")
            .field("health", &self.health())
            .finish_non_exhaustive()
    }
}

impl Drop for Syslog {
    /// What is queued gets a last chance of a few seconds; then the thread ends.
    fn drop(&mut self) {
        self.tx = None;
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        if let Some(t) = self.thread.take() {
            while !t.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            self.stop.store(true, Ordering::SeqCst);
            if t.is_finished() {
                let _ = t.join();
            }
        }
    }
}

fn drain(
    target: &Target,
    tls: Option<&SslConnector>,
    rx: &Receiver<Vec<u8>>,
    health: &Mutex<SyslogHealth>,
    stop: &AtomicBool,
) {
    let mut conn: Option<Conn> = None;
    let mut backoff = Duration::from_millis(500);
    let set =
        |f: &dyn Fn(&mut SyslogHealth)| f(&mut health.lock().unwrap_or_else(|p| p.into_inner()));
    loop {
        let msg = match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(m) => m,
            Err(RecvTimeoutError::Timeout) if stop.load(Ordering::SeqCst) => return,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        // This message is sent before the next is taken: order is kept.
        loop {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            let result = match conn.as_mut() {
                Some(c) => c.send(&msg).map_err(|e| e.to_string()),
                None => match Conn::open(target, tls) {
                    Ok(mut c) => {
                        let r = c.send(&msg).map_err(|e| e.to_string());
                        conn = Some(c);
                        r
                    }
                    Err(e) => Err(e),
                },
            };
            match result {
                Ok(()) => {
                    backoff = Duration::from_millis(500);
                    set(&|h| {
                        h.sent += 1;
                        h.ok = true;
                        h.error = None;
                    });
                    break;
                }
                Err(e) => {
                    conn = None;
                    let said = health.lock().unwrap_or_else(|p| p.into_inner()).ok;
                    if said {
                        log::error!("syslog {}: {e}; audit entries wait (up to {QUEUE}) and are sent when it is back", target.describe());
                    }
                    set(&|h| {
                        h.ok = false;
                        h.error = Some(e.clone());
                    });
                    let mut slept = Duration::ZERO;
                    while slept < backoff && !stop.load(Ordering::SeqCst) {
                        std::thread::sleep(Duration::from_millis(100));
                        slept += Duration::from_millis(100);
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}

/// Control characters (and the Unicode line and paragraph separators) as `\uXXXX`: a
/// collector that writes messages as lines must not be handed a forged line by whoever
/// chose a user name.
fn no_controls(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') {
            out.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// An SD-PARAM value: `"`, `\` and `]` escaped (RFC 5424 6.3.3), controls as `\uXXXX`.
fn sd_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in no_controls(s).chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// One entry as an RFC 5424 message.
pub fn format(e: &Entry<'_>, host: &str, pid: u32) -> Vec<u8> {
    let severity = if e.result == "ok" { 5 } else { 4 };
    let pri = 13 * 8 + severity;
    let msgid: String = e
        .operation
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(32)
        .collect();
    let mut sd = format!("[{SD_ID}");
    let mut param = |k: &str, v: Option<&str>| {
        if let Some(v) = v {
            sd.push_str(&format!(" {k}=\"{}\"", sd_escape(v)));
        }
    };
    param("volume", e.volume);
    param("key_uid", e.key_uid);
    param("server", e.server.as_deref());
    param("source", e.source);
    let latency = e.latency_ms.map(|l| l.to_string());
    param("latency_ms", latency.as_deref());
    sd.push(']');
    let msg = no_controls(&e.result);
    format!(
        "<{pri}>1 {} {host} atrest {pid} {} {sd} {msg}",
        e.time,
        if msgid.is_empty() { "-" } else { &msgid }
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry<'a>(operation: &'a str, result: &str, volume: Option<&'a str>) -> Entry<'a> {
        Entry {
            time: "2026-12-05T02:00:00.123Z".into(),
            volume,
            server: Some("kms:5696".into()),
            operation,
            key_uid: Some("k-1"),
            result: result.into(),
            latency_ms: Some(1.5),
            source: None,
        }
    }

    #[test]
    fn an_entry_is_one_rfc5424_message() {
        let m =
            String::from_utf8(format(&entry("unlocked", "ok", Some("rec")), "host1", 42)).unwrap();
        assert_eq!(
            m,
            "<109>1 2026-12-05T02:00:00.123Z host1 atrest 42 unlocked [atrest@32473 volume=\"rec\" key_uid=\"k-1\" server=\"kms:5696\" latency_ms=\"1.5\"] ok"
        );
        let m = String::from_utf8(format(
            &entry("login failed", "a \"quoted\" ] \\ x\nnext", None),
            "h",
            1,
        ))
        .unwrap();
        assert!(m.starts_with("<108>1 "), "{m}");
        assert!(
            m.contains(" atrest 1 loginfailed [atrest@32473 key_uid="),
            "{m}"
        );
        assert!(m.ends_with("] a \"quoted\" ] \\ x\\u000anext"), "{m}");
        let m = String::from_utf8(format(
            &Entry {
                source: Some("admin\u{2028}<13>1 forged"),
                ..entry("x", "ok\r\n<13>1 forged", None)
            },
            "h",
            1,
        ))
        .unwrap();
        assert!(
            !m.contains('\n') && !m.contains('\r') && !m.contains('\u{2028}'),
            "{m}"
        );
        assert!(m.contains("source=\"admin\\\\u2028<13>1 forged\""), "{m}");
        let m = String::from_utf8(format(
            &Entry {
                source: Some("admin@1.2.3.4\"]"),
                ..entry("x", "ok", None)
            },
            "h",
            1,
        ))
        .unwrap();
        assert!(m.contains("source=\"admin@1.2.3.4\\\"\\]\""), "{m}");
    }

    #[test]
    fn targets_parse_with_their_default_ports() {
        assert_eq!(Target::parse("local"), Ok(Target::Unix("/dev/log".into())));
        assert_eq!(
            Target::parse("unix:/run/x"),
            Ok(Target::Unix("/run/x".into()))
        );
        assert_eq!(
            Target::parse("tcp://siem"),
            Ok(Target::Tcp("siem".into(), 514))
        );
        assert_eq!(
            Target::parse("tls://siem:7000"),
            Ok(Target::Tls("siem".into(), 7000))
        );
        assert_eq!(
            Target::parse("tls://[::1]"),
            Ok(Target::Tls("::1".into(), 6514))
        );
        assert!(Target::parse("udp://siem").is_err());
        assert!(Target::parse("tcp://siem:http").is_err());
        assert!(Target::parse("tcp://:514").is_err());
    }

    #[test]
    fn messages_reach_a_tcp_collector_in_order_and_wait_while_it_is_away() {
        use std::io::Read;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let s = Syslog::start(Target::Tcp("127.0.0.1".into(), port), None).unwrap();
        for i in 0..3 {
            s.send(&entry(format!("op{i}").leak(), "ok", Some("v")));
        }
        let (mut c, _) = listener.accept().unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut got = String::new();
        let mut buf = [0u8; 4096];
        while got.matches(" atrest ").count() < 3 {
            let n = c.read(&mut buf).unwrap();
            assert!(n > 0);
            got.push_str(std::str::from_utf8(&buf[..n]).unwrap());
        }
        // Octet counting: LEN SP MSG, three times, in order.
        let mut rest = got.as_str();
        for i in 0..3 {
            let (len, after) = rest.split_once(' ').unwrap();
            let len: usize = len.parse().unwrap();
            let (msg, next) = after.split_at(len);
            assert!(msg.contains(&format!(" op{i} ")), "{msg}");
            rest = next;
        }
        assert!(rest.is_empty());
        // The sender counts a message once its write returned, which may be a moment after
        // the collector read it (a fresh-clone CI run under load saw 2 here).
        let counted = std::time::Instant::now();
        let h = loop {
            let h = s.health();
            if h.sent >= 3 || counted.elapsed() > Duration::from_secs(5) {
                break h;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        assert_eq!((h.ok, h.sent, h.dropped), (true, 3, 0));
        // The collector goes away: the next message fails, is kept, and arrives once a
        // collector listens again.
        drop(c);
        drop(listener);
        s.send(&entry("after", "ok", None));
        std::thread::sleep(Duration::from_millis(300));
        s.send(&entry("after2", "ok", None));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while s.health().ok && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(!s.health().ok, "the failure is in the health");
        let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        let (mut c, _) = listener.accept().unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut got = String::new();
        while !got.contains(" after2 ") {
            let n = c.read(&mut buf).unwrap();
            assert!(n > 0);
            got.push_str(std::str::from_utf8(&buf[..n]).unwrap());
        }
        // The health is set once the write has returned, which may be just after the
        // collector has the bytes.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !s.health().ok && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(s.health().ok, "{:?}", s.health());
    }

    #[test]
    fn a_local_socket_gets_one_datagram_per_entry() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("log");
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let s = Syslog::start(Target::Unix(path), None).unwrap();
        s.send(&entry("locked", "the key was revoked", Some("rec")));
        let mut buf = [0u8; 2048];
        let n = sock.recv(&mut buf).unwrap();
        let m = std::str::from_utf8(&buf[..n]).unwrap();
        assert!(m.starts_with("<108>1 2026-12-05T02:00:00.123Z "), "{m}");
        assert!(m.ends_with("] the key was revoked"), "{m}");
        drop(s);
    }

    #[test]
    fn a_tls_collector_needs_a_ca() {
        assert!(Syslog::start(Target::Tls("siem".into(), 6514), None).is_err());
        assert!(Syslog::start(Target::Tls("siem".into(), 6514), Some(b"not pem")).is_err());
    }
}
