//! The worker's state machine, driven in milliseconds without a key server: a real volume
//! image (formatted in a temporary folder, unlocked for real), a key source double that
//! plays the server (states, silence, Item Not Found), and an export double that records
//! its closing or refuses it. The doubles are what let "the server is silent" and "a client
//! holds the export" cost no timeout; the real peers are `tests/serve.rs`'s.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kmip::client::{ClientConfig, ClientError, Identity, VersionChoice};
use kmip::enums::{Operation, ResultReason, State as KeyState};
use zeroize::Zeroizing;

use super::{run, Command, Ctx};
use crate::audit::Audit;
use crate::config::{ServeConfig, VolumeConfig};
use crate::daemon::status::{Events, State, VolumeStatus};
use crate::error::ServiceError;
use crate::exports::{Exporter, RunningExport};
use crate::keys::KeySource;
use crate::progress::Stop;

const SECRET: [u8; 32] = *b"worker-test-kmip-secret-32-bytes";

/// What the pretend server answers.
#[derive(Clone, Copy)]
enum Answer {
    State(KeyState),
    Silent,
    NotFound,
}

struct Server {
    answer: Answer,
    /// Key sources made (one per set of KMIP settings).
    made: usize,
    /// Secrets handed out.
    fetches: usize,
}

struct Double(Arc<Mutex<Server>>);

fn fault(answer: Answer, op: Operation) -> ServiceError {
    let error = match answer {
        Answer::NotFound => ClientError::Rejected {
            server: "kms.test:5696".into(),
            operation: op,
            reason: ResultReason::ITEM_NOT_FOUND,
            message: None,
        },
        _ => ClientError::AllServersFailed(vec![ClientError::Refused {
            server: "kms.test:5696".into(),
        }]),
    };
    ServiceError::kmip("asking the key server", error)
}

impl KeySource for Double {
    fn state(&mut self, _uid: &str) -> Result<KeyState, ServiceError> {
        match self.0.lock().unwrap().answer {
            Answer::State(s) => Ok(s),
            a => Err(fault(a, Operation::GET_ATTRIBUTES)),
        }
    }

    fn fetch(&mut self, _uid: &str) -> Result<Zeroizing<Vec<u8>>, ServiceError> {
        let mut s = self.0.lock().unwrap();
        match s.answer {
            Answer::State(_) => {
                s.fetches += 1;
                Ok(Zeroizing::new(SECRET.to_vec()))
            }
            a => Err(fault(a, Operation::GET)),
        }
    }

    fn server(&self) -> Option<String> {
        Some("kms.test:5696".into())
    }
}

/// Exports that count their closing, or refuse it while `stuck`.
#[derive(Clone, Default)]
struct Exports {
    stuck: Arc<AtomicBool>,
    closed: Arc<AtomicUsize>,
}

impl Exporter for Exports {
    fn start(
        &self,
        _vol: Arc<volume::volume::Unlocked>,
        _cfg: &VolumeConfig,
    ) -> Result<Vec<Box<dyn RunningExport>>, ServiceError> {
        Ok(vec![Box::new(self.clone())])
    }
}

impl RunningExport for Exports {
    fn kind(&self) -> &'static str {
        "nbd"
    }

    fn at(&self) -> String {
        "nbd+unix:///v?socket=/run/test.sock".into()
    }

    fn close(&mut self) -> Result<(), ServiceError> {
        if self.stuck.load(Ordering::SeqCst) {
            return Err(ServiceError::Io {
                what: "closing",
                path: "/run/test.sock".into(),
                error: std::io::Error::other("a client holds it"),
            });
        }
        self.closed.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

fn settings(username: &str) -> ClientConfig {
    ClientConfig {
        servers: Vec::new(),
        ca_pem: Vec::new(),
        identity: Identity::Pem {
            cert_pem: Vec::new(),
            key_pem: Zeroizing::new(Vec::new()),
            passphrase: None,
        },
        username: Some(username.into()),
        password: None,
        version: VersionChoice::Auto,
        connect_timeout: Duration::from_secs(1),
        request_timeout: Duration::from_secs(1),
        busy_retry: Duration::ZERO,
    }
}

/// One worker on a fresh volume, with the pretend server answering `answer`.
struct Rig {
    tx: Sender<Command>,
    status: Arc<Mutex<VolumeStatus>>,
    events: Arc<Events>,
    server: Arc<Mutex<Server>>,
    kmip: Arc<Mutex<ClientConfig>>,
    exports: Exports,
    thread: Option<JoinHandle<()>>,
    stop: Stop,
    _dir: tempfile::TempDir,
}

impl Rig {
    fn new(answer: Answer) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.img");
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        f.set_len(17 << 20).unwrap();
        let opts = volume::volume::FormatOptions {
            mode: volume::volume::KeyMode::Wrapped,
            volume_key_len: 32,
            sector_size: 512,
            key_uid: "k-1".into(),
            server_hint: None,
            data_size: None,
            detached: false,
        };
        volume::volume::format(&volume::backend::FileBackend::new(f), &SECRET, &opts).unwrap();
        let server = Arc::new(Mutex::new(Server {
            answer,
            made: 0,
            fetches: 0,
        }));
        let made_by = server.clone();
        let status = Arc::new(Mutex::new(VolumeStatus::new("v", "v.img")));
        let events = Arc::new(Events::default());
        let kmip = Arc::new(Mutex::new(settings("appliance")));
        let stop = Stop::new();
        let exports = Exports::default();
        let ctx = Ctx {
            cfg: VolumeConfig {
                name: "v".into(),
                path,
                header: None,
                nbd: None,
                fuse: None,
                dm: None,
                discard: false,
                serve_plaintext: false,
            },
            kmip: kmip.clone(),
            serve: ServeConfig {
                key_check_secs: 3600,
                retry_max_secs: 3600,
                ..ServeConfig::default()
            },
            audit: Arc::new(Audit::none()),
            status: status.clone(),
            events: events.clone(),
            stop: stop.clone(),
            exporter: Arc::new(exports.clone()),
            keys: Arc::new(move |_cfg: &ClientConfig| {
                made_by.lock().unwrap().made += 1;
                Ok(Box::new(Double(made_by.clone())) as Box<dyn KeySource>)
            }),
        };
        let (tx, rx) = channel();
        let thread = std::thread::spawn(move || run(ctx, rx));
        Self {
            tx,
            status,
            events,
            server,
            kmip,
            exports,
            thread: Some(thread),
            stop,
            _dir: dir,
        }
    }

    fn answer(&self, a: Answer) {
        self.server.lock().unwrap().answer = a;
    }

    fn status(&self) -> VolumeStatus {
        self.status.lock().unwrap().clone()
    }

    /// Waits (on the event feed, not by sleeping) until `done` holds of the status.
    fn until(&self, what: &str, done: impl Fn(&VolumeStatus) -> bool) -> VolumeStatus {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut seen = 0;
        loop {
            let s = self.status();
            if done(&s) {
                return s;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "not {what}: {s:?}");
            seen = self
                .events
                .after(seen, left.min(Duration::from_millis(200)))
                .1;
        }
    }

    fn state(&self, want: State) -> VolumeStatus {
        self.until(want.name(), |s| s.state == want)
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.stop.request();
        let _ = self.tx.send(Command::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn a_key_that_arrives_unlocks_the_waiting_volume() {
    let rig = Rig::new(Answer::Silent);
    let s = rig.state(State::Waiting);
    assert!(s.reason.unwrap().contains("no KMIP server"));
    rig.answer(Answer::State(KeyState::ACTIVE));
    rig.tx.send(Command::Unlock).unwrap();
    let s = rig.state(State::Unlocked);
    assert_eq!(s.key_uid.as_deref(), Some("k-1"));
    assert_eq!(rig.server.lock().unwrap().fetches, 1);
}

#[test]
fn a_revoked_key_locks_the_volume_at_the_next_check() {
    let rig = Rig::new(Answer::State(KeyState::ACTIVE));
    rig.state(State::Unlocked);
    rig.answer(Answer::State(KeyState::DEACTIVATED));
    rig.tx.send(Command::CheckNow).unwrap();
    let s = rig.state(State::Locked);
    assert!(s.reason.unwrap().contains("Deactivated"));
    // An unlock is refused by the key's state, without the key being fetched again.
    rig.tx.send(Command::Unlock).unwrap();
    let s = rig.until("refused again", |s| {
        s.state == State::Locked
            && s.reason
                .as_deref()
                .is_some_and(|r| r.contains("only an Active key"))
    });
    assert_eq!(s.state, State::Locked);
    assert_eq!(rig.server.lock().unwrap().fetches, 1);
}

#[test]
fn a_silent_server_while_serving_is_reported_not_a_reason_to_lock() {
    let rig = Rig::new(Answer::State(KeyState::ACTIVE));
    rig.state(State::Unlocked);
    rig.answer(Answer::Silent);
    rig.tx.send(Command::CheckNow).unwrap();
    let s = rig.until("reporting the outage", |s| s.server_error.is_some());
    assert_eq!(s.state, State::Unlocked);
    // The server back: the next check clears the report.
    rig.answer(Answer::State(KeyState::ACTIVE));
    rig.tx.send(Command::CheckNow).unwrap();
    let s = rig.until("clearing the outage", |s| s.server_error.is_none());
    assert_eq!(s.state, State::Unlocked);
}

#[test]
fn a_key_no_longer_found_locks_and_says_for_which_identity() {
    let rig = Rig::new(Answer::State(KeyState::ACTIVE));
    rig.state(State::Unlocked);
    rig.answer(Answer::NotFound);
    rig.tx.send(Command::CheckNow).unwrap();
    let s = rig.state(State::Locked);
    let why = s.reason.unwrap();
    assert!(
        why.contains("no longer found") && why.contains("identity"),
        "{why}"
    );
}

#[test]
fn a_key_the_policy_refuses_is_never_fetched() {
    let rig = Rig::new(Answer::State(KeyState::COMPROMISED));
    let s = rig.state(State::Locked);
    assert!(s.reason.unwrap().contains("Compromised"));
    assert_eq!(rig.server.lock().unwrap().fetches, 0);
}

#[test]
fn new_kmip_settings_are_used_from_the_next_request() {
    let rig = Rig::new(Answer::State(KeyState::ACTIVE));
    rig.state(State::Unlocked);
    assert_eq!(rig.server.lock().unwrap().made, 1);
    // The same settings: the source stays.
    rig.tx.send(Command::CheckNow).unwrap();
    rig.until("checked", |s| s.last_key_check.is_some());
    assert_eq!(rig.server.lock().unwrap().made, 1);
    *rig.kmip.lock().unwrap() = settings("rotated");
    rig.tx.send(Command::CheckNow).unwrap();
    rig.until("a new source for the new settings", |_| {
        rig.server.lock().unwrap().made == 2
    });
    assert_eq!(rig.status().state, State::Unlocked);
}

#[test]
fn a_lock_closes_the_exports_before_it_reports_locked() {
    let rig = Rig::new(Answer::State(KeyState::ACTIVE));
    let s = rig.state(State::Unlocked);
    assert_eq!(s.exports.len(), 1);
    rig.tx.send(Command::Lock).unwrap();
    let s = rig.state(State::Locked);
    assert_eq!(rig.exports.closed.load(Ordering::SeqCst), 1);
    assert!(s.exports.is_empty());
}

#[test]
fn an_export_that_will_not_close_makes_the_volume_failed_not_locked() {
    let rig = Rig::new(Answer::State(KeyState::ACTIVE));
    rig.state(State::Unlocked);
    rig.exports.stuck.store(true, Ordering::SeqCst);
    rig.answer(Answer::State(KeyState::DEACTIVATED));
    rig.tx.send(Command::CheckNow).unwrap();
    let s = rig.state(State::Failed);
    let why = s.reason.unwrap();
    assert!(
        why.contains("Deactivated") && why.contains("not every export closed"),
        "{why}"
    );
    assert_eq!(rig.exports.closed.load(Ordering::SeqCst), 0);
}
