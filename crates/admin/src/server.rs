//! The HTTPS transport: a TCP listener on its own thread and current-thread tokio runtime
//! (as the control API), TLS through OpenSSL, HTTP/1.1 through hyper, and the bounds that
//! keep a client from stalling or filling the daemon:
//!
//! | what | bound |
//! |---|---|
//! | TLS handshake | [`HANDSHAKE_DEADLINE`], then the connection is closed |
//! | a request head | [`HEADER_DEADLINE`], [`MAX_HEADER`] bytes |
//! | a body | [`MAX_BODY`] bytes (413), [`BODY_DEADLINE`] (408) |
//! | connections | [`MAX_CONNECTIONS`]; when full, the oldest one not being answered is dropped |
//! | handlers | [`MAX_HANDLERS`] threads of the blocking pool |

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, CACHE_CONTROL, CONNECTION, CONTENT_TYPE, LOCATION, SET_COOKIE};
use hyper::{Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use openssl::ssl::{Ssl, SslAcceptor};
use zeroize::Zeroizing;

use crate::app::App;
use crate::error::AdminError;
use crate::request::{cookies, Answer, Form, Request};
use crate::settings::Upload;

/// Largest request body: certificate uploads are a few KiB.
pub const MAX_BODY: usize = 1 << 20;
/// Largest request head.
pub const MAX_HEADER: usize = 16 << 10;
/// Time for the TLS handshake.
pub const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(5);
/// Time for a request head (also how long an idle kept-alive connection lives).
pub const HEADER_DEADLINE: Duration = Duration::from_secs(10);
/// Time for a body.
pub const BODY_DEADLINE: Duration = Duration::from_secs(20);
/// Open connections at most.
pub const MAX_CONNECTIONS: usize = 64;
/// Handler threads at most.
pub const MAX_HANDLERS: usize = 16;

/// The running page; dropping it stops the listener.
pub struct Server {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Conn {
    started: Instant,
    peer: std::net::IpAddr,
    busy: Arc<AtomicBool>,
    abort: tokio::task::AbortHandle,
}

type Table = Arc<Mutex<BTreeMap<u64, Conn>>>;

/// Listens on `addr` and serves `app` with `acceptor`'s TLS.
pub fn start(addr: SocketAddr, acceptor: SslAcceptor, app: Arc<App>) -> Result<Server, AdminError> {
    let io = |error| AdminError::Listen { addr, error };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .max_blocking_threads(MAX_HANDLERS)
        .thread_name("web-handler")
        .build()
        .map_err(io)?;
    let listener = {
        let _in = runtime.enter();
        let std = std::net::TcpListener::bind(addr).map_err(io)?;
        std.set_nonblocking(true).map_err(io)?;
        tokio::net::TcpListener::from_std(std).map_err(io)?
    };
    let bound = listener.local_addr().map_err(io)?;
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let acceptor = Arc::new(acceptor);
    let thread = std::thread::Builder::new()
        .name("web".into())
        .spawn(move || {
            runtime.block_on(accept(listener, acceptor, app, stopped));
            runtime.shutdown_background();
        })
        .map_err(io)?;
    Ok(Server {
        stop: Some(stop),
        thread: Some(thread),
        addr: bound,
    })
}

async fn accept(
    listener: tokio::net::TcpListener,
    acceptor: Arc<SslAcceptor>,
    app: Arc<App>,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let table: Table = Arc::default();
    let next = AtomicU64::new(0);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut stopped => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of descriptors, for instance: wait rather than spin.
                    log::warn!("web page: accepting a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let id = next.fetch_add(1, Ordering::Relaxed);
        let busy = Arc::new(AtomicBool::new(false));
        let mut t = table.lock().unwrap_or_else(|p| p.into_inner());
        if t.len() >= MAX_CONNECTIONS {
            // Room is made by the oldest connection not being answered of the address
            // (IPv4, or IPv6 /64) that holds the most: one flooding client evicts its own
            // connections, not a real one's. Requests in hand are never cut.
            let mut per: std::collections::HashMap<std::net::IpAddr, usize> = Default::default();
            for c in t.values() {
                *per.entry(crate::throttle::class(c.peer)).or_default() += 1;
            }
            let oldest = t
                .iter()
                .filter(|(_, c)| !c.busy.load(Ordering::SeqCst))
                .min_by_key(|(_, c)| {
                    (
                        std::cmp::Reverse(per[&crate::throttle::class(c.peer)]),
                        c.started,
                    )
                })
                .map(|(k, _)| *k);
            match oldest.and_then(|k| t.remove(&k)) {
                Some(c) => c.abort.abort(),
                None => continue,
            }
        }
        let task = tokio::spawn(connection(
            tcp,
            peer,
            acceptor.clone(),
            app.clone(),
            busy.clone(),
            Leave(table.clone(), id),
        ));
        t.insert(
            id,
            Conn {
                started: Instant::now(),
                peer: peer.ip(),
                busy,
                abort: task.abort_handle(),
            },
        );
    }
}

/// Takes a connection out of the table when its task ends (or is aborted).
struct Leave(Table, u64);

impl Drop for Leave {
    fn drop(&mut self) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.1);
    }
}

async fn connection(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    acceptor: Arc<SslAcceptor>,
    app: Arc<App>,
    busy: Arc<AtomicBool>,
    _leave: Leave,
) {
    let Ok(ssl) = Ssl::new(acceptor.context()) else {
        return;
    };
    let Ok(mut tls) = tokio_openssl::SslStream::new(ssl, tcp) else {
        return;
    };
    match tokio::time::timeout(HANDSHAKE_DEADLINE, Pin::new(&mut tls).accept()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            log::debug!("web page: TLS handshake with {peer}: {e}");
            return;
        }
        Err(_) => return,
    }
    let service = hyper::service::service_fn(move |req| {
        let (app, busy) = (app.clone(), busy.clone());
        async move { Ok::<_, Infallible>(respond(req, peer, app, busy).await) }
    });
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_DEADLINE)
        .max_buf_size(MAX_HEADER + (8 << 10))
        .serve_connection(TokioIo::new(tls), service)
        .await;
    if let Err(e) = served {
        log::debug!("web page connection from {peer}: {e}");
    }
}

fn refused(code: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let mut r = finish(Answer {
        status: code,
        content_type: "text/plain; charset=utf-8",
        body: text.as_bytes().to_vec(),
        set_cookies: Vec::new(),
        location: None,
        cacheable: false,
    });
    r.headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    r
}

async fn respond(
    req: hyper::Request<Incoming>,
    peer: SocketAddr,
    app: Arc<App>,
    busy: Arc<AtomicBool>,
) -> Response<Full<Bytes>> {
    let (head, body) = req.into_parts();
    if hyper::body::Body::size_hint(&body).lower() > MAX_BODY as u64 {
        return refused(
            StatusCode::PAYLOAD_TOO_LARGE,
            "the request body is larger than 1 MiB",
        );
    }
    let bytes = match tokio::time::timeout(BODY_DEADLINE, Limited::new(body, MAX_BODY).collect())
        .await
    {
        Err(_) => {
            return refused(
                StatusCode::REQUEST_TIMEOUT,
                "the request body did not arrive in time",
            )
        }
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            return refused(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the request body is larger than 1 MiB",
            )
        }
        Ok(Err(_)) => return refused(StatusCode::BAD_REQUEST, "the request body is unreadable"),
        Ok(Ok(c)) => Zeroizing::new(c.to_bytes().to_vec()),
    };
    busy.store(true, Ordering::SeqCst);
    let header = |name: hyper::header::HeaderName| {
        head.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let content_type = header(CONTENT_TYPE).unwrap_or_default();
    let form = if head.method != hyper::Method::POST {
        Form::default()
    } else if content_type.starts_with("multipart/form-data") {
        match multipart(&content_type, &bytes).await {
            Ok(f) => f,
            Err(e) => {
                busy.store(false, Ordering::SeqCst);
                return refused(
                    StatusCode::BAD_REQUEST,
                    &format!("the form is malformed: {e}"),
                );
            }
        }
    } else {
        Form::urlencoded(&bytes)
    };
    drop(bytes);
    let request = Request {
        method: head.method.clone(),
        path: head.uri.path().to_owned(),
        query: head.uri.query().unwrap_or_default().to_owned(),
        cookies: header(hyper::header::COOKIE)
            .map(|c| cookies(&c))
            .unwrap_or_default(),
        origin: header(hyper::header::ORIGIN),
        host: header(hyper::header::HOST),
        peer: peer.ip(),
        form,
    };
    let answer = tokio::task::spawn_blocking(move || app.handle(&request)).await;
    busy.store(false, Ordering::SeqCst);
    match answer {
        Ok(a) => finish(a),
        Err(e) => {
            log::error!("web page: a request's handler failed: {e}");
            refused(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the request's handler failed; see the daemon's log",
            )
        }
    }
}

/// Parses a multipart form held whole in memory (already bounded by [`MAX_BODY`]).
async fn multipart(content_type: &str, body: &[u8]) -> Result<Form, multer::Error> {
    let boundary = multer::parse_boundary(content_type)?;
    let chunk = Bytes::copy_from_slice(body);
    let stream = futures_util::stream::once(async move { Ok::<_, Infallible>(chunk) });
    let mut parts = multer::Multipart::with_constraints(
        stream,
        boundary,
        multer::Constraints::new()
            .size_limit(multer::SizeLimit::new().whole_stream(MAX_BODY as u64)),
    );
    let mut form = Form::default();
    let mut count = 0;
    while let Some(field) = parts.next_field().await? {
        count += 1;
        if count > 32 {
            break;
        }
        let name = field.name().unwrap_or_default().to_owned();
        match field.file_name().map(str::to_owned) {
            Some(filename) => {
                let bytes = Zeroizing::new(field.bytes().await?.to_vec());
                form.push_file(name, Upload { filename, bytes });
            }
            None => {
                let bytes = Zeroizing::new(field.bytes().await?.to_vec());
                let text = Zeroizing::new(String::from_utf8_lossy(&bytes).into_owned());
                form.push_field(name, text);
            }
        }
    }
    Ok(form)
}

/// The answer with the headers every response carries.
fn finish(a: Answer) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(a.body)));
    *r.status_mut() = a.status;
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(a.content_type) {
        h.insert(CONTENT_TYPE, v);
    }
    if let Some(l) = a
        .location
        .as_deref()
        .and_then(|l| HeaderValue::from_str(l).ok())
    {
        h.insert(LOCATION, l);
    }
    for c in &a.set_cookies {
        if let Ok(v) = HeaderValue::from_str(c) {
            h.append(SET_COOKIE, v);
        }
    }
    h.insert(
        CACHE_CONTROL,
        HeaderValue::from_static(if a.cacheable {
            "private, max-age=300"
        } else {
            "no-store"
        }),
    );
    for (k, v) in SECURITY_HEADERS {
        h.insert(*k, HeaderValue::from_static(v));
    }
    r
}

/// On every answer: no inline script or style, nothing from elsewhere, no framing, no
/// sniffing, no referrer to other sites, HTTPS only from now on.
const SECURITY_HEADERS: &[(&str, &str)] = &[
    (
        "content-security-policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    ("x-frame-options", "DENY"),
    ("x-content-type-options", "nosniff"),
    // Not no-referrer: with it Chromium sends `Origin: null` on form posts, and the
    // same-origin check of every POST needs the real one.
    ("referrer-policy", "same-origin"),
    ("strict-transport-security", "max-age=31536000"),
    ("cross-origin-opener-policy", "same-origin"),
    ("cross-origin-resource-policy", "same-origin"),
];
