//! Accepting KMIP clients: TLS with client certificates required, one thread per
//! connection (bounded), idle timeouts, a bound on message size, and a clean stop.
//!
//! Threads rather than an async runtime: a development server serves tens of clients, each
//! connection is a strict request/response loop, and the store serialises writes anyway.
//!
//! Anyone who can reach the port can open connections without a certificate, so what an
//! unauthenticated peer can hold is bounded (issue 10): a TLS handshake must finish within
//! [`Options::handshake_timeout`] (a reaper closes it otherwise, however slowly it
//! trickles bytes); at most [`Options::max_handshakes`] handshakes run at once, and a new
//! one evicts the oldest when they are all taken (a real client's handshake takes
//! milliseconds, so only stalled ones are ever evicted); one peer address may hold at most
//! [`Options::max_per_peer`] connections; and refusals are logged at most once per
//! [`REFUSAL_LOG_INTERVAL`], with a count, so a flood cannot fill the disk with log lines.

use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use kmip::enums::ResultReason;
use kmip::message::{ProtocolVersion, ResponseBatchItem, ResponseHeader, ResponseMessage};
use kmip::ttlv;
use openssl::nid::Nid;
use openssl::ssl::{SslAcceptor, SslFiletype, SslMethod, SslStream, SslVerifyMode, SslVersion};
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::X509;
use zeroize::Zeroizing;

use crate::auth::Users;
use crate::handler::Kms;
use crate::store::Store;

/// TLS 1.2 suites: AEAD first, then the CBC suites the KMIP profiles mandate. TLS 1.3 is on.
const TLS12_CIPHERS: &str = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:\
ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:\
ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:\
ECDHE-ECDSA-AES128-SHA256:ECDHE-RSA-AES128-SHA256:ECDHE-ECDSA-AES256-SHA384:ECDHE-RSA-AES256-SHA384:\
AES128-GCM-SHA256:AES256-GCM-SHA384:AES128-SHA256:AES256-SHA256";

/// How the server runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// A connection with no request for this long is closed.
    pub idle_timeout: Duration,
    /// Time allowed for the TLS handshake and for the rest of a request once it started.
    pub io_timeout: Duration,
    /// Connections served at once; more are refused until one ends.
    pub max_connections: usize,
    /// Time a peer has to complete the TLS handshake (and so show a client certificate).
    pub handshake_timeout: Duration,
    /// TLS handshakes in progress at once; a new one evicts the oldest beyond this.
    pub max_handshakes: usize,
    /// Connections one peer address may hold (handshaking or served).
    pub max_per_peer: usize,
}

impl Options {
    /// Defaults for `listen`.
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            listen,
            idle_timeout: Duration::from_secs(300),
            io_timeout: Duration::from_secs(30),
            max_connections: 256,
            handshake_timeout: Duration::from_secs(5),
            max_handshakes: 64,
            max_per_peer: 64,
        }
    }
}

/// Refusals and failed handshakes are logged at most this often, with a count.
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Log lines about unauthenticated peers, at most one per [`REFUSAL_LOG_INTERVAL`] per
/// kind, each saying how many were suppressed since the last.
#[derive(Default)]
struct RateLimitedLog {
    kinds: Mutex<HashMap<&'static str, (Option<Instant>, u64)>>,
}

impl RateLimitedLog {
    fn warn(&self, kind: &'static str, detail: impl FnOnce() -> String) {
        let mut k = self.kinds.lock().unwrap_or_else(|p| p.into_inner());
        let (last, suppressed) = k.entry(kind).or_insert((None, 0));
        if last.is_some_and(|t| t.elapsed() < REFUSAL_LOG_INTERVAL) {
            *suppressed += 1;
            return;
        }
        let more = match *suppressed {
            0 => String::new(),
            n => format!(
                " ({n} more like it in the last {} s)",
                REFUSAL_LOG_INTERVAL.as_secs()
            ),
        };
        log::warn!("{kind}: {}{more}", detail());
        *last = Some(Instant::now());
        *suppressed = 0;
    }
}

/// What unauthenticated peers hold, shared by the accept loop, the connection threads and
/// the reaper.
#[derive(Default)]
struct Admission {
    per_peer: Mutex<HashMap<IpAddr, usize>>,
    /// Handshakes in progress: id, start, a handle to close the socket.
    handshakes: Mutex<VecDeque<(u64, Instant, TcpStream)>>,
    next_id: AtomicU64,
    log: RateLimitedLog,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A connection's claim on the limits; released on drop.
struct Ticket {
    adm: Arc<Admission>,
    peer: IpAddr,
    handshake: Option<u64>,
}

impl Ticket {
    /// The handshake is over: the connection no longer counts as one.
    fn handshake_done(&mut self) {
        if let Some(id) = self.handshake.take() {
            locked(&self.adm.handshakes).retain(|(i, _, _)| *i != id);
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.handshake_done();
        let mut p = locked(&self.adm.per_peer);
        if let Some(n) = p.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                p.remove(&self.peer);
            }
        }
    }
}

impl Admission {
    /// Admits a new connection from `peer`, or says why not. Evicts the oldest handshake
    /// when all handshake places are taken.
    fn admit(
        self: &Arc<Self>,
        tcp: &TcpStream,
        peer: IpAddr,
        o: &Options,
    ) -> Result<Ticket, String> {
        {
            let mut p = locked(&self.per_peer);
            let n = p.entry(peer).or_insert(0);
            if *n >= o.max_per_peer {
                return Err(format!(
                    "{peer} already holds {} connections",
                    o.max_per_peer
                ));
            }
            *n += 1;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let handle = tcp.try_clone().map_err(|e| e.to_string());
        let ticket = Ticket {
            adm: self.clone(),
            peer,
            handshake: Some(id),
        };
        let handle = handle?;
        let mut h = locked(&self.handshakes);
        while h.len() >= o.max_handshakes {
            if let Some((_, _, old)) = h.pop_front() {
                let _ = old.shutdown(Shutdown::Both);
                self.log.warn("evicted a stalled TLS handshake", || {
                    format!("{} handshakes in progress", o.max_handshakes)
                });
            }
        }
        h.push_back((id, Instant::now(), handle));
        Ok(ticket)
    }

    /// Closes every handshake older than `limit`.
    fn reap(&self, limit: Duration) {
        let mut h = locked(&self.handshakes);
        while h.front().is_some_and(|(_, t, _)| t.elapsed() >= limit) {
            if let Some((_, _, s)) = h.pop_front() {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
    }
}

/// Starting the server failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The users file is unreadable.
    #[error("users file: {0}")]
    Users(String),
    /// The TLS certificate or key could not be loaded.
    #[error("TLS setup from {dir}/pki: {detail}")]
    Tls {
        /// The server directory.
        dir: String,
        /// OpenSSL's words.
        detail: String,
    },
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

/// A bound, ready server.
pub struct Server {
    listener: TcpListener,
    acceptor: Arc<SslAcceptor>,
    kms: Arc<Kms>,
    options: Options,
    stop: Arc<AtomicBool>,
}

fn acceptor(dir: &Path) -> Result<SslAcceptor, ServeError> {
    let tls = |e: openssl::error::ErrorStack| ServeError::Tls {
        dir: dir.display().to_string(),
        detail: e.to_string(),
    };
    let pki = dir.join("pki");
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server()).map_err(tls)?;
    b.set_min_proto_version(Some(SslVersion::TLS1_2))
        .map_err(tls)?;
    b.set_cipher_list(TLS12_CIPHERS).map_err(tls)?;
    b.set_certificate_chain_file(pki.join("server.crt"))
        .map_err(tls)?;
    b.set_private_key_file(pki.join("server.key"), SslFiletype::PEM)
        .map_err(tls)?;
    b.check_private_key().map_err(tls)?;
    let ca_pem = std::fs::read(pki.join("ca.crt")).map_err(|e| ServeError::Tls {
        dir: dir.display().to_string(),
        detail: e.to_string(),
    })?;
    let mut store = X509StoreBuilder::new().map_err(tls)?;
    for ca in X509::stack_from_pem(&ca_pem).map_err(tls)? {
        store.add_cert(ca).map_err(tls)?;
    }
    b.set_verify_cert_store(store.build()).map_err(tls)?;
    // Client certificates are required, and must chain to our CA.
    b.set_verify(SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT);
    Ok(b.build())
}

impl Server {
    /// Opens `dir` (laid out by [`crate::setup::ensure`]) and binds `options.listen`.
    pub fn bind(dir: &Path, options: Options) -> Result<Self, ServeError> {
        let store = Store::open(dir)?;
        let users = Users::load(&dir.join("users.json")).map_err(ServeError::Users)?;
        let acceptor = acceptor(dir)?;
        let listener = TcpListener::bind(options.listen).map_err(|source| ServeError::Bind {
            addr: options.listen,
            source,
        })?;
        Ok(Self {
            listener,
            acceptor: Arc::new(acceptor),
            kms: Arc::new(Kms::new(store, users)),
            options,
            stop: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or(self.options.listen)
    }

    /// A handle that stops the server: set it, then wake the accept loop.
    pub fn stopper(&self) -> Stopper {
        Stopper {
            stop: self.stop.clone(),
            addr: self.local_addr(),
        }
    }

    /// Serves until stopped; then lets open connections finish their current request.
    pub fn run(self) {
        let active = Arc::new(AtomicUsize::new(0));
        let adm = Arc::new(Admission::default());
        let mut handles = Vec::new();
        let reaper = {
            let (adm, stop, limit) = (
                adm.clone(),
                self.stop.clone(),
                self.options.handshake_timeout,
            );
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    adm.reap(limit);
                    std::thread::sleep(Duration::from_millis(250));
                }
                adm.reap(Duration::ZERO);
            })
        };
        for conn in self.listener.incoming() {
            if self.stop.load(Ordering::SeqCst) {
                break;
            }
            let Ok(tcp) = conn else { continue };
            let Ok(peer) = tcp.peer_addr() else { continue };
            if active.load(Ordering::SeqCst) >= self.options.max_connections {
                adm.log.warn("refused a connection", || {
                    format!("{} connections already open", self.options.max_connections)
                });
                continue;
            }
            let ticket = match adm.admit(&tcp, peer.ip(), &self.options) {
                Ok(t) => t,
                Err(why) => {
                    adm.log.warn("refused a connection", || why);
                    continue;
                }
            };
            active.fetch_add(1, Ordering::SeqCst);
            let (acceptor, kms, stop, active, opts) = (
                self.acceptor.clone(),
                self.kms.clone(),
                self.stop.clone(),
                active.clone(),
                self.options.clone(),
            );
            handles.push(std::thread::spawn(move || {
                serve_connection(tcp, peer, ticket, &acceptor, &kms, &stop, &opts);
                active.fetch_sub(1, Ordering::SeqCst);
            }));
            handles.retain(|h| !h.is_finished());
        }
        log::info!("stopping: waiting for {} open connection(s)", handles.len());
        let _ = reaper.join();
        for h in handles {
            let _ = h.join();
        }
        log::info!("stopped");
    }
}

/// Stops a running [`Server`].
#[derive(Clone)]
pub struct Stopper {
    stop: Arc<AtomicBool>,
    addr: SocketAddr,
}

impl Stopper {
    /// Asks the server to stop and wakes its accept loop.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let mut wake = self.addr;
        if wake.ip().is_unspecified() {
            wake.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        let _ = TcpStream::connect_timeout(&wake, Duration::from_secs(1));
    }
}

fn identity_of(s: &SslStream<TcpStream>) -> Option<String> {
    let cert = s.ssl().peer_certificate()?;
    let cn = cert.subject_name().entries_by_nid(Nid::COMMONNAME).next()?;
    Some(String::from_utf8_lossy(cn.data().as_slice()).into_owned())
}

fn serve_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    mut ticket: Ticket,
    acceptor: &SslAcceptor,
    kms: &Kms,
    stop: &AtomicBool,
    opts: &Options,
) {
    let _ = tcp.set_nodelay(true);
    let _ = tcp.set_read_timeout(Some(opts.handshake_timeout));
    let _ = tcp.set_write_timeout(Some(opts.handshake_timeout));
    let started = Instant::now();
    let mut s = match acceptor.accept(tcp) {
        Ok(s) => s,
        Err(e) => {
            if !stop.load(Ordering::SeqCst) {
                let late = started.elapsed() >= opts.handshake_timeout;
                ticket.adm.log.warn("TLS handshake failed", || {
                    if late {
                        format!(
                            "{peer}: not completed within {} s",
                            opts.handshake_timeout.as_secs()
                        )
                    } else {
                        format!("{peer}: {e}")
                    }
                });
            }
            return;
        }
    };
    ticket.handshake_done();
    let _ = s.get_ref().set_read_timeout(Some(opts.io_timeout));
    let _ = s.get_ref().set_write_timeout(Some(opts.io_timeout));
    let Some(who) = identity_of(&s) else {
        log::warn!("{peer}: client certificate without a common name; closing");
        return;
    };
    let limits = kms.limits();
    let mut session = crate::auth::Session::default();
    loop {
        // Wait for the next request in one-second steps, so a stop or the idle timeout is
        // noticed; TLS data already buffered counts as a request arriving.
        let idle_since = Instant::now();
        loop {
            if s.ssl().pending() > 0 {
                break;
            }
            if stop.load(Ordering::SeqCst) || idle_since.elapsed() >= opts.idle_timeout {
                let _ = s.shutdown();
                return;
            }
            let tcp = s.get_ref();
            let _ = tcp.set_read_timeout(Some(Duration::from_secs(1)));
            match tcp.peek(&mut [0u8; 1]) {
                Ok(0) => return,
                Ok(_) => break,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue
                }
                Err(_) => return,
            }
        }
        let _ = s.get_ref().set_read_timeout(Some(opts.io_timeout));
        let mut header = [0u8; 8];
        if s.read_exact(&mut header).is_err() {
            return;
        }
        let len = match ttlv::message_len(&header, &limits) {
            Ok(l) => l,
            Err(e) => {
                // The stream cannot be re-synchronised: answer once and close.
                log::warn!("{peer} {who}: {e}; closing");
                let reason = if e.to_string().contains("exceeds") {
                    ResultReason::RESPONSE_TOO_LARGE
                } else {
                    ResultReason::INVALID_MESSAGE
                };
                let r = ResponseMessage {
                    header: ResponseHeader::new(ProtocolVersion::V1_0, 0),
                    items: vec![ResponseBatchItem::failure(None, reason, e.to_string())],
                };
                let _ = s.write_all(&r.encode());
                return;
            }
        };
        let mut buf = Zeroizing::new(vec![0u8; len]);
        buf[..8].copy_from_slice(&header);
        if s.read_exact(&mut buf[8..]).is_err() {
            return;
        }
        let (response, log, close) = kms.handle(&who, &buf, &mut session);
        for e in &log {
            log::info!(
                "{peer} who={who} op={} uid={} result={}",
                e.operation.map_or_else(|| "-".into(), |o| o.to_string()),
                e.uid.as_deref().unwrap_or("-"),
                e.result
            );
        }
        let response = Zeroizing::new(response);
        if s.write_all(&response).and_then(|()| s.flush()).is_err() || close {
            return;
        }
    }
}
