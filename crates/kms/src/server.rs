//! Accepting KMIP clients: TLS with client certificates required, one thread per
//! connection (bounded), idle timeouts, a bound on message size, and a clean stop.
//!
//! Threads rather than an async runtime: a development server serves tens of clients, each
//! connection is a strict request/response loop, and the store serialises writes anyway.
//!
//! Anyone who can reach the port can open connections without a certificate, so what an
//! unauthenticated peer can hold is bounded (issues 10 and 19, see `admission`): a TLS
//! handshake must finish within [`Options::handshake_timeout`] and an authenticated request
//! follow within [`Options::authentication_timeout`] (a reaper closes the connection
//! otherwise, however slowly it trickles bytes); when [`Options::max_connections`],
//! [`Options::max_per_peer`] or [`Options::max_unauthenticated`] is reached, a newcomer
//! evicts the oldest unauthenticated connection instead of being refused, so idle sockets
//! cannot lock a client out (a real client authenticates in milliseconds, so only stalled
//! peers are evicted), then a client that has waited for its next request 500 ms or more
//! (it reconnects; one carrying a request never goes); and refusals and
//! evictions are logged at most once per [`REFUSAL_LOG_INTERVAL`], with a count, so a
//! flood cannot fill the disk with log lines.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kmip::enums::ResultReason;
use kmip::message::{ProtocolVersion, ResponseBatchItem, ResponseHeader, ResponseMessage};
use kmip::ttlv;
use openssl::nid::Nid;
use openssl::ssl::{SslAcceptor, SslFiletype, SslMethod, SslStream, SslVerifyMode, SslVersion};
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::X509;
use zeroize::Zeroizing;

use crate::admission::{self, Admission, Ticket};
use crate::auth::Users;
use crate::handler::Kms;
pub use crate::notice::REFUSAL_LOG_INTERVAL;
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
    /// An authenticated connection with no request for this long is closed.
    pub idle_timeout: Duration,
    /// Time allowed for the rest of a request once it started, and for a response to be
    /// taken.
    pub io_timeout: Duration,
    /// Connections served at once. When all are taken, a newcomer evicts the oldest stalled
    /// unauthenticated one, else the client that has waited longest (500 ms or more) for
    /// its next request; it is refused only if none of those frees up within `queue_wait`.
    pub max_connections: usize,
    /// Time a peer has from connecting to the end of the TLS handshake (and so to show a
    /// client certificate).
    pub handshake_timeout: Duration,
    /// Time a peer has from the end of the TLS handshake to a KMIP request that
    /// authenticates; a connected client sends its first request at once.
    pub authentication_timeout: Duration,
    /// Unauthenticated connections (TLS handshake running, or done with no authenticated
    /// request yet) at once; beyond this a newcomer evicts the oldest of them.
    pub max_unauthenticated: usize,
    /// Connections one peer address may hold. When its share is taken, a newcomer from it
    /// evicts as for `max_connections`, among the address's connections.
    pub max_per_peer: usize,
    /// How long a newcomer waits for a place when none can be freed from a stalled or idle
    /// connection (see `admission`) before it takes an unauthenticated one's anyway, or is
    /// refused when every place is a busy client's; meanwhile later arrivals queue in the
    /// listen backlog instead of being reset.
    pub queue_wait: Duration,
}

/// A peer that has sent nothing for this long is stalled. A real client sends its
/// ClientHello, and its first request after the handshake, at once, but in a storm of
/// hundreds on two cores its process may not run for a few hundred milliseconds (at 100 ms,
/// 1 client in 120 was cut); a flood of silent sockets costs a real client this long per
/// 64 of them.
const SILENT: Duration = Duration::from_millis(500);
/// A TLS handshake that has run this long is stalled (one takes milliseconds of CPU; even
/// a storm of hundreds on two cores does not queue one this long).
const SLOW: Duration = Duration::from_secs(2);

impl Options {
    /// Defaults for `listen`.
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            listen,
            idle_timeout: Duration::from_secs(300),
            io_timeout: Duration::from_secs(30),
            max_connections: 256,
            handshake_timeout: Duration::from_secs(5),
            authentication_timeout: Duration::from_secs(5),
            max_unauthenticated: 64,
            max_per_peer: 64,
            queue_wait: Duration::from_secs(10),
        }
    }

    fn admission_limits(&self) -> admission::Limits {
        admission::Limits {
            max_connections: self.max_connections,
            max_per_peer: self.max_per_peer,
            max_unauthenticated: self.max_unauthenticated,
            handshake_timeout: self.handshake_timeout,
            authentication_timeout: self.authentication_timeout,
            queue_wait: self.queue_wait,
            silent: SILENT,
            slow: SLOW,
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
        let adm = Arc::new(Admission::new(self.options.admission_limits()));
        let mut handles = Vec::new();
        let reaper = {
            let adm = adm.clone();
            std::thread::spawn(move || adm.reap_until_stopped())
        };
        for conn in self.listener.incoming() {
            if self.stop.load(Ordering::SeqCst) {
                break;
            }
            let Ok(tcp) = conn else { continue };
            let Ok(peer) = tcp.peer_addr() else { continue };
            let ticket = match adm.admit(&tcp, peer.ip()) {
                Ok(t) => t,
                Err(why) => {
                    adm.log
                        .warn("refused a connection", || format!("{peer}: {why}"));
                    continue;
                }
            };
            let (acceptor, kms, stop, opts) = (
                self.acceptor.clone(),
                self.kms.clone(),
                self.stop.clone(),
                self.options.clone(),
            );
            handles.push(std::thread::spawn(move || {
                serve_connection(tcp, peer, ticket, &acceptor, &kms, &stop, &opts);
            }));
            handles.retain(|h| !h.is_finished());
        }
        log::info!("stopping: waiting for {} open connection(s)", handles.len());
        adm.stop();
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
    ticket: Ticket,
    acceptor: &SslAcceptor,
    kms: &Kms,
    stop: &AtomicBool,
    opts: &Options,
) {
    let _ = tcp.set_nodelay(true);
    let _ = tcp.set_read_timeout(Some(opts.handshake_timeout));
    let _ = tcp.set_write_timeout(Some(opts.handshake_timeout));
    let started = Instant::now();
    // The ClientHello first: until it comes the peer is silent, and may give its place up.
    match tcp.peek(&mut [0u8; 1]) {
        Ok(n) if n > 0 => ticket.stage(admission::Stage::Handshaking),
        _ => return,
    }
    let mut s = match acceptor.accept(tcp) {
        Ok(s) => s,
        Err(e) => {
            // A connection the server cut (evicted, or at its deadline) was logged then.
            if !stop.load(Ordering::SeqCst) && !ticket.was_cut() {
                let late = started.elapsed() >= opts.handshake_timeout;
                ticket.log().warn("TLS handshake failed", || {
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
    if !ticket.tls_done() {
        return;
    }
    let _ = s.get_ref().set_read_timeout(Some(opts.io_timeout));
    let _ = s.get_ref().set_write_timeout(Some(opts.io_timeout));
    let Some(who) = identity_of(&s) else {
        log::warn!("{peer}: client certificate without a common name; closing");
        return;
    };
    let limits = kms.limits();
    let mut session = crate::auth::Session::default();
    let mut authenticated = false;
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
        ticket.stage(admission::Stage::Working);
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
        let (response, entries, close) = kms.handle(&who, &buf, &mut session);
        if session.authenticated() && !authenticated {
            // From here on no newcomer may take this connection's place; if one already
            // has, the answer must not go out on a socket the server gave up.
            if !ticket.authenticated() {
                return;
            }
            authenticated = true;
        }
        for e in &entries {
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
        // Waiting on the peer again (a client waiting long enough may give its place up).
        ticket.stage(admission::Stage::AwaitingRequest);
    }
}
