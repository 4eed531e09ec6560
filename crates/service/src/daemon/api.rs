//! The control API: JSON over HTTP on a Unix socket (`tiny_http`), for `atrest ctl` and
//! the coming web page. The socket is made mode 0600 in a folder of mode 0700: only root
//! (or the user the daemon runs as) talks to it, so the API itself has no login.
//!
//! | request | answer |
//! |---|---|
//! | `GET /v1/status` | the daemon and every volume ([`super::status::VolumeStatus`]) |
//! | `POST /v1/test` (`{"probe_key": bool}`) | "Save and Test" with the daemon's configuration |
//! | `POST /v1/volumes/NAME/lock`, `.../unlock` | 202; the state changes follow in the feed |
//! | `POST /v1/volumes/NAME/encrypt`, `.../decrypt`, `.../rekey` (options as JSON) | 202; a background job, progress in the feed |
//! | `GET /v1/events?after=N&wait=S` | the feed's events numbered above N, waiting up to S (10) s for one |

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

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
}

/// Requests handled at once (a long poll holds one for up to 30 s).
const MAX_HANDLERS: usize = 32;
/// Long polls that may wait at once; more are answered at once, so that a command always
/// finds a free handler.
const MAX_POLLS: usize = 24;
/// Largest request body.
const MAX_BODY: u64 = 64 << 10;

/// The running API.
pub struct Api {
    server: Arc<tiny_http::Server>,
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
                return Err(ServiceError::Refused(format!(
                    "{} is in use: another atrest serve is running",
                    path.display()
                )));
            }
            std::fs::remove_file(path).map_err(|e| io("removing the stale API socket", e))?;
        }
        let server = tiny_http::Server::http_unix(path).map_err(|e| {
            io(
                "listening on the API socket",
                std::io::Error::other(e.to_string()),
            )
        })?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| io("restricting the API socket", e))?;
        let server = Arc::new(server);
        let s = server.clone();
        let thread = std::thread::Builder::new()
            .name("api".into())
            .spawn(move || accept(&s, &shared))
            .map_err(|e| io("starting the API thread", e))?;
        Ok(Self {
            server,
            thread: Some(thread),
            path: path.to_owned(),
        })
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

fn accept(server: &tiny_http::Server, shared: &Arc<Shared>) {
    let busy = Arc::new(AtomicUsize::new(0));
    for req in server.incoming_requests() {
        if busy.load(Ordering::SeqCst) >= MAX_HANDLERS {
            let _ = req.respond(reply(503, &json!({"error": "too many requests at once"})));
            continue;
        }
        let (shared, slot) = (shared.clone(), Slot::take(&busy));
        std::thread::spawn(move || {
            let _slot = slot;
            handle(req, &shared);
        });
    }
}

/// One of a bounded number of places, given back when dropped (also when a handler
/// panics, so the count cannot leak up to the bound).
struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn take(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Self(count.clone())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
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

fn reply(code: u16, body: &Value) -> tiny_http::Response<std::io::Cursor<Vec<u8>>> {
    let mut b = serde_json::to_vec(body).unwrap_or_default();
    b.push(b'\n');
    tiny_http::Response::from_data(b)
        .with_status_code(code)
        .with_header(
            tiny_http::Header::from_bytes(&b"Content-Type"[..], &b"application/json"[..])
                .unwrap_or_else(|_| unreachable!("a valid header")),
        )
}

fn handle(mut req: tiny_http::Request, shared: &Shared) {
    let method = req.method().clone();
    let url = req.url().to_owned();
    let mut body = Vec::new();
    let read = req.as_reader().take(MAX_BODY + 1).read_to_end(&mut body);
    let (code, answer) = if read.is_err() || body.len() as u64 > MAX_BODY {
        (
            413,
            json!({"error": "request body too large or unreadable"}),
        )
    } else {
        route(&method, &url, &body, shared)
    };
    let _ = req.respond(reply(code, &answer));
}

fn route(method: &tiny_http::Method, url: &str, body: &[u8], shared: &Shared) -> (u16, Value) {
    use tiny_http::Method::{Get, Post};
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method, parts.as_slice()) {
        (Get, ["v1", "status"]) => (200, status(shared)),
        (Post, ["v1", "test"]) => {
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
                if r.ok { 200 } else { 502 },
                serde_json::to_value(r).unwrap_or_default(),
            )
        }
        (Get, ["v1", "events"]) => {
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
            (200, json!({"events": events, "last": last}))
        }
        (Post, ["v1", "volumes", name, action]) => volume_command(shared, name, action, body),
        (_, ["v1", ..]) => (
            404,
            json!({"error": format!("no such request: {method} {path}")}),
        ),
        _ => (404, json!({"error": "the API lives under /v1/"})),
    }
}

fn status(shared: &Shared) -> Value {
    let volumes: Vec<Value> = shared
        .volumes
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .values()
        .map(|(_, s)| {
            serde_json::to_value(&*s.lock().unwrap_or_else(|p| p.into_inner())).unwrap_or_default()
        })
        .collect();
    json!({
        "daemon": {
            "pid": std::process::id(),
            "config": shared.config_path,
            "started": shared.started,
            "ready": shared.ready.load(Ordering::SeqCst),
            "hardening": {"dumpable": secmem::is_dumpable()},
        },
        "volumes": volumes,
    })
}

fn volume_command(shared: &Shared, name: &str, action: &str, body: &[u8]) -> (u16, Value) {
    let volumes = shared.volumes.lock().unwrap_or_else(|p| p.into_inner());
    let Some((tx, _)) = volumes.get(name) else {
        return (
            404,
            json!({"error": format!("no volume named {name:?} in the configuration")}),
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
                            400,
                            json!({"error": format!("the options are not JSON: {e}")}),
                        )
                    }
                }
            };
            if let Value::Object(m) = &mut opts {
                m.insert("kind".into(), action.into());
            }
            match serde_json::from_value::<Job>(opts) {
                Ok(j) => Command::Job(j),
                Err(e) => return (400, json!({"error": format!("options of {action}: {e}")})),
            }
        }
        other => {
            return (
                404,
                json!({"error": format!("no action {other:?} (lock, unlock, check, encrypt, decrypt, rekey)")}),
            )
        }
    };
    match tx.send(cmd) {
        Ok(()) => (202, json!({"accepted": action, "volume": name})),
        Err(_) => (
            409,
            json!({"error": format!("the volume {name} is stopping")}),
        ),
    }
}
