//! The control API: JSON over HTTP/1.1 on a Unix socket, for `atrest ctl` and the coming
//! web page. The socket is made mode 0600 in a folder of mode 0700: only root (or the user
//! the daemon runs as) talks to it, so the API itself has no login.
//!
//! | request | answer |
//! |---|---|
//! | `GET /v1/status` | the daemon and every volume ([`super::status::VolumeStatus`]) |
//! | `POST /v1/test` (`{"probe_key": bool}`) | "Save and Test" with the daemon's configuration; 503 while [`MAX_TESTS`] run |
//! | `POST /v1/volumes/NAME/lock`, `.../unlock`, `.../check` | 202; the state changes follow in the feed |
//! | `POST /v1/volumes/NAME/encrypt`, `.../decrypt`, `.../rekey` (options as JSON) | 202; a background job, progress in the feed |
//! | `GET /v1/events?after=N&wait=S` | the feed's events numbered above N, waiting up to S (10, at most 30) s for one |
//! | a body over [`MAX_BODY`] | 413, before a byte of it is read when it says its length |
//! | a head over [`MAX_HEADER`] or [`MAX_HEADER_FIELDS`] | 431 and the connection closed |
//! | a head not in within [`HEADER_DEADLINE`] | the connection closed |
//! | a body not in within [`BODY_DEADLINE`] | 408 and the connection closed |
//!
//! Why hyper 1 (with hyper-util's tokio glue) and no web framework: the API is a handful of
//! routes that read best as one `match` on the method and the path ([`route`]), and what
//! must be right here (bounded heads and bodies, deadlines, which connection goes when they
//! are too many) lives below any router, in how connections are accepted and driven. axum
//! would add tower's layers and a second way to express the same few routes without
//! helping with either; the coming web page (HTTPS) reuses [`respond`] (a request to its
//! response, with the body bounds) and [`route`] as they are, behind its own TLS acceptor.
//!
//! Why a tokio runtime of its own, on the API's thread only: the rest of the daemon is
//! plain threads, and stays so. The runtime is current-thread: every connection is a task
//! on that one thread, so a slow client costs a few hundred bytes of task, not a thread,
//! and the connection table below is only ever changed between two polls (no race between
//! dropping a connection and that connection starting to be handled). The routes block
//! (Save and Test talks to KMIP servers, a long poll waits on the feed), so they run on the
//! runtime's blocking pool of [`MAX_HANDLERS`] threads, never on the I/O thread.
//!
//! The connection policy (see [`Connections::make_room`]): at most [`MAX_CONNECTIONS`]
//! open; when full, a new connection is still accepted and the *oldest connection that is
//! waiting for its client* (request head or body not yet in, or an idle keep-alive) is
//! dropped. A connection whose request is in and being handled is never dropped; of those,
//! the ones that can last (long polls, Save and Tests) are bounded below [`MAX_HANDLERS`],
//! itself below [`MAX_CONNECTIONS`], and the rest are answered in microseconds, so the
//! table always has a connection to give up (if not, the newcomer gets a 503). After each
//! accept the acceptor lets every ready connection run before it accepts again, so a
//! client that writes its whole request as it connects (`atrest ctl` does) has it read and
//! in hand before any later connection can push it out. Refusing new connections when full
//! would instead let a few dozen silent clients lock `atrest ctl status` and `atrest ctl
//! lock` out for as long as they cared to renew them.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body, Bytes};
use hyper::header::{HeaderValue, CONNECTION, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{json, Value};

use super::feed::{Accepted, ApiAnswer, DaemonStatus, Feed, Hardening, StatusReport};
use super::status::{Events, VolumeStatus};
use super::worker::{Command, Job};
use crate::error::ServiceError;

/// A running volume as the API reaches it: where to send commands, what to report.
pub type VolumeHandle = (Sender<Command>, Arc<Mutex<VolumeStatus>>);

/// What the API reaches: the volumes' command channels and statuses, the feed.
pub struct Shared {
    /// By name.
    pub volumes: Mutex<BTreeMap<String, VolumeHandle>>,
    /// The feed.
    pub events: Arc<Events>,
    /// The configuration file (for Save and Test).
    pub config_path: PathBuf,
    /// When the daemon started.
    pub started: String,
    /// Every volume unlocked or with its reason.
    pub ready: AtomicBool,
    /// The audit log (Save and Test's probe key is recorded there).
    pub audit: Arc<crate::audit::Audit>,
    /// Long polls of the feed waiting now.
    pub polls: AtomicUsize,
    /// Set to have the daemon reread its configuration (as SIGHUP does): the web page,
    /// after it saved new KMIP settings.
    pub reload: Arc<AtomicBool>,
    /// The KMIP certificates' expiry, as last looked at.
    pub certificates: Mutex<Vec<super::expiry::CertExpiry>>,
}

impl Shared {
    /// Whether `new` (a configuration not yet in use) still reaches the key of every volume
    /// served now, as a reload demands before it takes new KMIP settings; the first
    /// failure in words.
    pub fn new_settings_reach_served_keys(
        &self,
        new: &crate::config::Config,
    ) -> Result<(), String> {
        super::reload::check_settings(new, &super::served_keys(self))
    }

    /// Every volume's status as it is now, in name order.
    pub fn statuses(&self) -> Vec<VolumeStatus> {
        self.volumes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|(_, s)| s.lock().unwrap_or_else(|p| p.into_inner()).clone())
            .collect()
    }
}

/// Largest request body: the largest real one is a job's options, a few hundred bytes. A
/// larger declared length is refused before reading; a body without one (chunked) is cut
/// when it passes this.
pub const MAX_BODY: usize = 64 << 10;
/// Largest request head (request line and header fields): `atrest ctl` sends about 150
/// bytes, a browser a few KiB.
pub const MAX_HEADER: usize = 16 << 10;
/// Most header fields in a request head.
pub const MAX_HEADER_FIELDS: usize = 64;
/// Time a client has for its request head, from the moment the connection can carry one
/// (accepted, or the previous answer sent on a kept-alive connection): a client that
/// trickles its head, or never sends one, is cut.
pub const HEADER_DEADLINE: Duration = Duration::from_secs(5);
/// Time a client has for the body once its head is in.
pub const BODY_DEADLINE: Duration = Duration::from_secs(10);
/// Connections open at once; each costs a task, a socket and a read buffer of at most 24
/// KiB. Past this the oldest connection waiting for its client is dropped.
pub const MAX_CONNECTIONS: usize = 64;
/// Largest read buffer of one connection (hyper's minimum is 8 KiB): a whole head fits, so
/// [`MAX_HEADER`] is what refuses a long one (431), not a full buffer.
const READ_BUFFER: usize = MAX_HEADER + (8 << 10);
/// Requests handled at once: the threads of the blocking pool the routes run on (a long
/// poll holds one for up to 30 s, a Save and Test for the KMIP timeouts). More wait for a
/// thread; the limits below keep some free for the quick requests.
pub const MAX_HANDLERS: usize = 32;
/// Long polls that may wait at once; more are answered at once, so that a command always
/// finds a free handler.
pub const MAX_POLLS: usize = 24;
/// Save and Tests that may run at once; more are answered 503 at once, for the same reason.
pub const MAX_TESTS: usize = 4;

// What the connection policy's guarantee rests on: handlers that may hold a thread for long
// cannot take them all, and handled connections cannot fill the table.
const _: () = assert!(MAX_POLLS + MAX_TESTS < MAX_HANDLERS && MAX_HANDLERS < MAX_CONNECTIONS);

/// Save and Tests running now (all of a process's APIs share the KMIP servers they load).
static TESTS: AtomicUsize = AtomicUsize::new(0);

/// The running API.
pub struct Api {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    path: PathBuf,
}

impl Api {
    /// Listens on `path` (its folder made 0700 if missing; a stale socket replaced).
    pub fn start(path: &Path, shared: Arc<Shared>) -> Result<Self, ServiceError> {
        let io = |what, error| ServiceError::Io {
            what,
            path: path.to_owned(),
            error,
        };
        crate::private_dir::create_parent(path, "creating the folder of the API socket")?;
        if path.exists() {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(crate::refusal::Refusal::ApiInUse {
                    path: path.to_owned(),
                }
                .into());
            }
            std::fs::remove_file(path).map_err(|e| io("removing the stale API socket", e))?;
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .max_blocking_threads(MAX_HANDLERS)
            .thread_name("api-handler")
            .build()
            .map_err(|e| io("starting the API's runtime for", e))?;
        let listener = {
            let _in = runtime.enter();
            tokio::net::UnixListener::bind(path)
                .map_err(|e| io("listening on the API socket", e))?
        };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| io("restricting the API socket", e))?;
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("api".into())
            .spawn(move || {
                runtime.block_on(accept(listener, shared, stopped));
                // A long poll or a Save and Test still running is left to end on its own
                // (its answer has nowhere to go): stopping never waits for a client.
                runtime.shutdown_background();
            })
            .map_err(|e| io("starting the API thread", e))?;
        Ok(Self {
            stop: Some(stop),
            thread: Some(thread),
            path: path.to_owned(),
        })
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// An open connection as the table sees it.
struct Open {
    /// Its request is in and being handled: not to be dropped.
    busy: Arc<AtomicBool>,
    /// Drops the connection (its task, and with it the socket).
    abort: tokio::task::AbortHandle,
}

/// The open connections, by number in the order they came.
#[derive(Default)]
struct Connections {
    next: u64,
    open: BTreeMap<u64, Open>,
}

impl Connections {
    /// Makes room for one more connection: when the table is full, the oldest connection
    /// waiting for its client is taken out, to be dropped by the caller. `None` when every
    /// connection is being handled (cannot happen with the bounds above, but the answer
    /// is then a 503, not a wait).
    fn make_room(&mut self) -> Option<Room> {
        if self.open.len() < MAX_CONNECTIONS {
            return Some(Room::Free);
        }
        let oldest_waiting = self
            .open
            .iter()
            .find(|(_, o)| !o.busy.load(Ordering::SeqCst))
            .map(|(n, _)| *n)?;
        self.open
            .remove(&oldest_waiting)
            .map(|o| Room::Made(o.abort))
    }
}

/// How a place in the table was found.
enum Room {
    /// There was one.
    Free,
    /// This connection gives up its place; dropping it is left to the caller, once the
    /// table is unlocked (its task takes the lock as it ends).
    Made(tokio::task::AbortHandle),
}

/// Takes a connection out of the table when its task ends, however it ends (done,
/// dropped from the table, the runtime stopping).
struct Leave(Arc<Mutex<Connections>>, u64);

impl Drop for Leave {
    fn drop(&mut self) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .open
            .remove(&self.1);
    }
}

/// Marks a connection handled while it lives (also when the handler panics or the
/// connection's task is dropped).
struct Busy(Arc<AtomicBool>);

impl Busy {
    fn start(flag: &Arc<AtomicBool>) -> Self {
        flag.store(true, Ordering::SeqCst);
        Self(flag.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

/// What a connection turned away for lack of room is told, in one write.
const FULL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: 38\r\nConnection: close\r\n\r\n{\"error\":\"too many requests at once\"}\n";

async fn accept(
    listener: tokio::net::UnixListener,
    shared: Arc<Shared>,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let table = Arc::new(Mutex::new(Connections::default()));
    loop {
        let stream = tokio::select! {
            _ = &mut stopped => return,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    // Out of descriptors, most likely: accepting again at once would spin.
                    log::warn!("API: accepting a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        admit(&table, stream, &shared);
        // Every connection ready to run does so (the driver polled first) before the next
        // accept: a whole request already sent is read and in hand before another
        // connection can make room by dropping this one.
        tokio::task::yield_now().await;
    }
}

/// Gives `stream` a place in the table and a task, or (every place taken by a connection
/// being handled) a 503.
fn admit(table: &Arc<Mutex<Connections>>, stream: tokio::net::UnixStream, shared: &Arc<Shared>) {
    let mut t = table.lock().unwrap_or_else(|p| p.into_inner());
    let Some(room) = t.make_room() else {
        // A fresh socket's send buffer is empty: this write does not wait.
        let _ = stream.try_write(FULL);
        return;
    };
    let (n, busy) = (t.next, Arc::new(AtomicBool::new(false)));
    t.next += 1;
    // The task cannot run before this function returns (one thread): it is in the table
    // before it can leave it.
    let leave = Leave(table.clone(), n);
    let task = tokio::spawn(connection(stream, shared.clone(), busy.clone(), leave));
    t.open.insert(
        n,
        Open {
            busy,
            abort: task.abort_handle(),
        },
    );
    drop(t);
    if let Room::Made(oldest) = room {
        oldest.abort();
        log::debug!(
            "API: {MAX_CONNECTIONS} connections open; the oldest waiting for its client dropped"
        );
    }
}

/// Serves one connection with the bounds on heads; [`respond`] has those on bodies.
async fn connection(
    stream: tokio::net::UnixStream,
    shared: Arc<Shared>,
    busy: Arc<AtomicBool>,
    _leave: Leave,
) {
    let service = hyper::service::service_fn(move |req| {
        let (shared, busy) = (shared.clone(), busy.clone());
        async move { Ok::<_, Infallible>(respond(req, &shared, &busy).await) }
    });
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_DEADLINE)
        .max_header_size(MAX_HEADER)
        .max_headers(MAX_HEADER_FIELDS)
        .max_buf_size(READ_BUFFER)
        .serve_connection(TokioIo::new(stream), service)
        .await;
    if let Err(e) = served {
        log::debug!("API connection: {e}");
    }
}

/// Why a request was answered without being routed.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// Its body says, or turned out, to be larger than [`MAX_BODY`].
    #[error("the request body is larger than {MAX_BODY} bytes")]
    TooLarge,
    /// Its body was not in within [`BODY_DEADLINE`].
    #[error("the request body did not arrive within {BODY_DEADLINE:?}")]
    TooSlow,
    /// Its body could not be read (the connection broke, bad chunked coding).
    #[error("the request body is unreadable: {0}")]
    Unreadable(String),
}

impl Refusal {
    fn status(&self) -> StatusCode {
        match self {
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::TooSlow => StatusCode::REQUEST_TIMEOUT,
            Self::Unreadable(_) => StatusCode::BAD_REQUEST,
        }
    }
}

/// Reads a whole request body within [`MAX_BODY`] and [`BODY_DEADLINE`].
pub async fn read_body<B>(body: B) -> Result<Bytes, Refusal>
where
    B: Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    // A declared length is known before any byte is read: refused without reading, so a
    // huge one costs nothing.
    if body.size_hint().lower() > MAX_BODY as u64 {
        return Err(Refusal::TooLarge);
    }
    match tokio::time::timeout(BODY_DEADLINE, Limited::new(body, MAX_BODY).collect()).await {
        Err(_) => Err(Refusal::TooSlow),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(Refusal::TooLarge),
        Ok(Err(e)) => Err(Refusal::Unreadable(e.to_string())),
    }
}

/// One request to its response: the body read within its bounds, then [`route`] on the
/// runtime's blocking pool. `busy` is set while the request is in hand (read whole, being
/// handled): the connection policy leaves such a connection alone. Generic over the body,
/// for the web page's server as well as this one.
pub async fn respond<B>(
    req: Request<B>,
    shared: &Arc<Shared>,
    busy: &Arc<AtomicBool>,
) -> Response<Full<Bytes>>
where
    B: Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (head, body) = req.into_parts();
    let body = match read_body(body).await {
        Ok(b) => b,
        Err(r) => {
            let mut answer = reply(r.status(), &json!({"error": r.to_string()}));
            // The rest of the body is never read: the connection cannot carry another
            // request.
            answer
                .headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
            return answer;
        }
    };
    let _busy = Busy::start(busy);
    let shared = shared.clone();
    match tokio::task::spawn_blocking(move || route(&shared, &head.method, &head.uri, &body)).await
    {
        Ok((code, answer)) => reply(code, &serde_json::to_value(answer).unwrap_or_default()),
        Err(e) => {
            log::error!("API: a request's handler failed: {e}");
            reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                &json!({"error": "the request's handler failed; see the daemon's log"}),
            )
        }
    }
}

/// A JSON answer.
pub fn reply(code: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut b = serde_json::to_vec(body).unwrap_or_default();
    b.push(b'\n');
    let mut r = Response::new(Full::new(Bytes::from(b)));
    *r.status_mut() = code;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// A Save and Test allowed to run, counted while it lives; `None` past [`MAX_TESTS`].
struct Testing;

impl Testing {
    fn start() -> Option<Self> {
        if TESTS.fetch_add(1, Ordering::SeqCst) >= MAX_TESTS {
            TESTS.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        Some(Self)
    }
}

impl Drop for Testing {
    fn drop(&mut self) {
        TESTS.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A long poll allowed to wait, counted while it lives; `None` past [`MAX_POLLS`].
struct Poll<'a>(&'a AtomicUsize);

impl<'a> Poll<'a> {
    fn start(count: &'a AtomicUsize) -> Option<Self> {
        if count.fetch_add(1, Ordering::SeqCst) >= MAX_POLLS {
            count.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        Some(Self(count))
    }
}

impl Drop for Poll<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The routes: the answer to `method uri` with the whole `body`. Blocks (Save and Test
/// talks to the KMIP servers, a long poll waits on the feed): run it where blocking is
/// allowed, as [`respond`] does.
pub fn route(shared: &Shared, method: &Method, uri: &Uri, body: &[u8]) -> (StatusCode, ApiAnswer) {
    let (path, query) = (uri.path(), uri.query().unwrap_or(""));
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method.as_str(), parts.as_slice()) {
        ("GET", ["v1", "status"]) => (StatusCode::OK, status(shared)),
        ("POST", ["v1", "test"]) => {
            let Some(_testing) = Testing::start() else {
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    ApiAnswer::error(format!("{MAX_TESTS} connection tests are running already")),
                );
            };
            let probe = serde_json::from_slice::<Value>(body)
                .ok()
                .and_then(|v| v["probe_key"].as_bool())
                .unwrap_or(false);
            let r = crate::ops::test::save_and_test(&shared.config_path, probe);
            // The probe creates and destroys a key on the server: on the record.
            if let Some(p) = &r.probe_key {
                for step in &p.steps {
                    shared.audit.request(
                        None,
                        r.server.clone(),
                        &format!("probe_{}", step.step),
                        None,
                        "ok",
                        Duration::from_secs_f64(step.ms / 1000.0),
                    );
                }
                if let Some(f) = &p.error {
                    shared.audit.request(
                        None,
                        r.server.clone(),
                        &format!("probe_{}", f.step),
                        None,
                        f.error.clone(),
                        Duration::ZERO,
                    );
                }
            }
            (
                if r.ok {
                    StatusCode::OK
                } else {
                    StatusCode::BAD_GATEWAY
                },
                ApiAnswer::Test(Box::new(r)),
            )
        }
        ("GET", ["v1", "events"]) => {
            let param = |k: &str| {
                query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix(k).and_then(|v| v.strip_prefix('=')))
                    .and_then(|v| v.parse::<u64>().ok())
            };
            let after = param("after").unwrap_or(0);
            let poll = Poll::start(&shared.polls);
            let wait = if poll.is_some() {
                param("wait").unwrap_or(10).min(30)
            } else {
                0
            };
            let (events, last) = shared.events.after(after, Duration::from_secs(wait));
            drop(poll);
            (StatusCode::OK, ApiAnswer::Feed(Feed { events, last }))
        }
        ("POST", ["v1", "volumes", name, action]) => volume_command(shared, name, action, body),
        (_, ["v1", ..]) => (
            StatusCode::NOT_FOUND,
            ApiAnswer::error(format!("no such request: {method} {path}")),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            ApiAnswer::error("the API lives under /v1/"),
        ),
    }
}

fn status(shared: &Shared) -> ApiAnswer {
    let volumes = shared.statuses();
    let report = StatusReport {
        daemon: DaemonStatus {
            pid: std::process::id(),
            config: shared.config_path.clone(),
            started: shared.started.clone(),
            ready: shared.ready.load(Ordering::SeqCst),
            hardening: Hardening {
                dumpable: secmem::is_dumpable(),
            },
            audit: shared.audit.health(),
            syslog: shared.audit.syslog_health(),
            certificates: shared
                .certificates
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        },
        volumes,
    };
    ApiAnswer::Status(Box::new(report))
}

fn volume_command(
    shared: &Shared,
    name: &str,
    action: &str,
    body: &[u8],
) -> (StatusCode, ApiAnswer) {
    let volumes = shared.volumes.lock().unwrap_or_else(|p| p.into_inner());
    let Some((tx, _)) = volumes.get(name) else {
        return (
            StatusCode::NOT_FOUND,
            ApiAnswer::error(format!("no volume named {name:?} in the configuration")),
        );
    };
    let cmd = match action {
        "lock" => Command::Lock,
        "unlock" => Command::Unlock,
        "check" => Command::CheckNow,
        "encrypt" | "decrypt" | "rekey" => {
            let mut opts: Value = if body.is_empty() {
                json!({})
            } else {
                match serde_json::from_slice(body) {
                    Ok(v) => v,
                    Err(e) => {
                        return (
                            StatusCode::BAD_REQUEST,
                            ApiAnswer::error(format!("the options are not JSON: {e}")),
                        )
                    }
                }
            };
            if let Value::Object(m) = &mut opts {
                m.insert("kind".into(), action.into());
            }
            match serde_json::from_value::<Job>(opts) {
                Ok(j) => Command::Job(j),
                Err(e) => {
                    return (
                        StatusCode::BAD_REQUEST,
                        ApiAnswer::error(format!("options of {action}: {e}")),
                    )
                }
            }
        }
        other => {
            return (
                StatusCode::NOT_FOUND,
                ApiAnswer::error(format!(
                    "no action {other:?} (lock, unlock, check, encrypt, decrypt, rekey)"
                )),
            )
        }
    };
    match tx.send(cmd) {
        Ok(()) => (
            StatusCode::ACCEPTED,
            ApiAnswer::Accepted(Accepted {
                accepted: action.into(),
                volume: name.into(),
            }),
        ),
        Err(_) => (
            StatusCode::CONFLICT,
            ApiAnswer::error(format!("the volume {name} is stopping")),
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    use std::sync::mpsc::{channel, Receiver};
    use std::time::Instant;

    use super::*;
    use crate::daemon::client::call;

    /// An API on a fresh socket with one volume, `v`, whose commands arrive on the
    /// receiver.
    fn api() -> (tempfile::TempDir, PathBuf, Api, Receiver<Command>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/api.sock");
        let (tx, rx) = channel();
        let shared = Arc::new(Shared {
            volumes: Mutex::new(BTreeMap::from([(
                "v".to_owned(),
                (tx, Arc::new(Mutex::new(VolumeStatus::new("v", "v.img")))),
            )])),
            events: Arc::new(Events::default()),
            config_path: dir.path().join("atrest.toml"),
            started: crate::audit::now(),
            ready: AtomicBool::new(true),
            audit: Arc::new(crate::audit::Audit::none()),
            polls: AtomicUsize::new(0),
            reload: Arc::new(AtomicBool::new(false)),
            certificates: Default::default(),
        });
        let api = Api::start(&path, shared).unwrap();
        (dir, path, api, rx)
    }

    fn raw(path: &Path) -> UnixStream {
        let s = UnixStream::connect(path).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s
    }

    fn answer(s: &mut UnixStream) -> String {
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    #[test]
    fn the_canned_503_says_its_length() {
        let text = std::str::from_utf8(FULL).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
        serde_json::from_str::<Value>(body).unwrap();
    }

    #[test]
    fn socket_and_folder_are_private_and_the_socket_goes_with_the_api() {
        let (_dir, path, api, _rx) = api();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        drop(api);
        assert!(!path.exists());
    }

    #[test]
    fn routes_answer_as_before() {
        let (_dir, path, _api, rx) = api();
        let (code, s) = call(&path, "GET", "/v1/status", None).unwrap();
        assert_eq!((code, s["volumes"][0]["name"].as_str()), (200, Some("v")));
        assert_eq!(s["daemon"]["pid"], std::process::id());
        let (code, r) = call(&path, "POST", "/v1/volumes/v/lock", None).unwrap();
        assert_eq!(
            (code, &r),
            (202, &json!({"accepted": "lock", "volume": "v"}))
        );
        assert!(matches!(rx.try_recv(), Ok(Command::Lock)));
        let (code, _) = call(&path, "POST", "/v1/volumes/w/lock", None).unwrap();
        assert_eq!(code, 404);
        let (code, _) = call(&path, "POST", "/v1/volumes/v/fly", None).unwrap();
        assert_eq!(code, 404);
        let (code, r) = call(&path, "GET", "/v1/events?after=0&wait=0", None).unwrap();
        assert_eq!((code, r["last"].as_u64()), (200, Some(0)));
        let (code, _) = call(&path, "GET", "/elsewhere", None).unwrap();
        assert_eq!(code, 404);
    }

    #[test]
    fn a_huge_declared_body_is_refused_before_it_is_read() {
        let (_dir, path, _api, rx) = api();
        let mut s = raw(&path);
        s.write_all(b"POST /v1/volumes/v/lock HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n")
            .unwrap();
        let a = answer(&mut s);
        assert!(a.starts_with("HTTP/1.1 413 "), "{a}");
        assert!(rx.try_recv().is_err(), "the command went through");
        assert_eq!(call(&path, "GET", "/v1/status", None).unwrap().0, 200);
    }

    #[test]
    fn a_long_head_gets_431() {
        let (_dir, path, _api, _rx) = api();
        let mut s = raw(&path);
        let bomb = format!(
            "GET /v1/status HTTP/1.1\r\nX: {}\r\n\r\n",
            "a".repeat(MAX_HEADER)
        );
        let _ = s.write_all(bomb.as_bytes());
        let a = answer(&mut s);
        assert!(a.starts_with("HTTP/1.1 431 "), "{a}");
    }

    #[test]
    fn a_full_table_drops_its_oldest_silent_connection_for_a_newcomer() {
        let (_dir, path, _api, rx) = api();
        let held: Vec<UnixStream> = (0..MAX_CONNECTIONS + 20)
            .map(|_| {
                let mut s = raw(&path);
                s.write_all(b"POST /v1/volumes/v/lock HTTP/1.1\r\nContent-Length: 10\r\n\r\n")
                    .unwrap();
                s
            })
            .collect();
        let started = Instant::now();
        assert_eq!(call(&path, "GET", "/v1/status", None).unwrap().0, 200);
        assert_eq!(
            call(&path, "POST", "/v1/volumes/v/lock", None).unwrap().0,
            202
        );
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(matches!(rx.try_recv(), Ok(Command::Lock)));
        assert!(
            rx.try_recv().is_err(),
            "a silent connection's command went through"
        );
        let closed = |mut s: &UnixStream| {
            s.set_nonblocking(true).unwrap();
            !matches!(s.read(&mut [0u8; 1]), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
        };
        assert!(closed(&held[0]), "the oldest is still open");
        assert!(!closed(&held[held.len() - 1]), "the newest was dropped");
        let open = held.iter().filter(|s| !closed(s)).count();
        assert!(open < MAX_CONNECTIONS, "{open} open");
    }

    #[test]
    fn dropping_the_api_does_not_wait_for_a_long_poll() {
        let (_dir, path, api, _rx) = api();
        let mut s = raw(&path);
        s.write_all(b"GET /v1/events?after=5&wait=30 HTTP/1.1\r\n\r\n")
            .unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let started = Instant::now();
        drop(api);
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(answer(&mut s), "");
    }
}
