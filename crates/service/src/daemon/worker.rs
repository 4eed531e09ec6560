//! One volume's life in the daemon, on a thread of its own so that one volume's trouble
//! (a key server that does not answer, a damaged header, a long conversion) never holds
//! the others:
//!
//! ```text
//! start ─▶ header? ─ plaintext ──────────────────────────▶ idle (plaintext)
//!            │      conversion interrupted ─▶ finish it ─▶ start again
//!            │      atrest volume ─▶ fetch key ─▶ key Active? ─▶ unlock ─▶ exports ─▶ serving
//!            │                         │ no server answers: wait (backoff), retry
//!            │                         └ key gone / not Active ─────────────────▶ idle (locked)
//! serving ─▶ every key_check_secs: key still Active? ─ no ─▶ exports closed, keys zeroized ─▶ idle (locked)
//!            server down: keep serving (the key is in memory), say so in the status
//! commands (API): lock, unlock, a conversion job, stop
//! ```

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kmip::client::{ClientConfig, ClientError};
use kmip::enums::{ResultReason, State as KeyState};
use volume::backend::BlockBackend;
use volume::convert::{self, Found, Kind};
use volume::text::shown;
use volume::volume::KeyMode;
use volume::volume::Unlocked;

use super::feed::{Event as FeedEvent, JobResult};
use super::status::{Events, Export, KeyCheck, Progress, State, VolumeStatus};
use crate::audit::Audit;
use crate::config::{ServeConfig, VolumeConfig};
use crate::device::{Device, Location};
use crate::error::ServiceError;
use crate::exports::{dm, Exporter, RunningExport};
use crate::keys::{state_name, KeyManager, KeySource};
use crate::ops::convert::{
    decrypt, encrypt, rekey, DecryptRequest, EncryptRequest, KeySpec, RekeyRequest,
};
use crate::progress::{Event, Stop};

/// A conversion the API asked for.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Job {
    /// Encrypt a plaintext volume in place.
    Encrypt {
        /// How to key it (defaults: wrapped, XTS-AES-128, 512-byte sectors).
        #[serde(default)]
        key: Option<KeySpec>,
        /// Bytes per committed step (tests and tuning).
        #[serde(default)]
        step: Option<u64>,
    },
    /// Decrypt it back to plaintext.
    Decrypt {
        /// Leave the key Active.
        #[serde(default)]
        keep_old: bool,
        /// Bytes per committed step.
        #[serde(default)]
        step: Option<u64>,
    },
    /// Put it under a new key.
    Rekey {
        /// Re-encrypt every sector.
        #[serde(default)]
        deep: bool,
        /// Leave the old key Active.
        #[serde(default)]
        keep_old: bool,
        /// Bytes per committed step.
        #[serde(default)]
        step: Option<u64>,
    },
}

impl Job {
    fn kind(&self) -> Kind {
        match self {
            Self::Encrypt { .. } => Kind::Encrypt,
            Self::Decrypt { .. } => Kind::Decrypt,
            Self::Rekey { .. } => Kind::Rekey,
        }
    }
}

/// What the daemon tells a worker.
#[derive(Debug)]
pub enum Command {
    /// Close the exports and forget the keys.
    Lock,
    /// Try to unlock now (after a lock, or to retry at once).
    Unlock,
    /// Check the key's state now.
    CheckNow,
    /// Run a conversion.
    Job(Job),
    /// Take the volume down and end.
    Stop,
    /// The volume's `serve_plaintext` changed (a reload): a plaintext volume is served,
    /// or no longer, accordingly; an encrypted one goes on as it is.
    ServePlaintext(bool),
}

/// Everything a worker needs.
pub struct Ctx {
    /// Its `[[volume]]` table.
    pub cfg: VolumeConfig,
    /// The key servers; replaced in place by a reload, so that serving volumes keep their
    /// exports while the certificate or password is rotated.
    pub kmip: Arc<Mutex<ClientConfig>>,
    /// `[serve]`.
    pub serve: ServeConfig,
    /// The audit log.
    pub audit: Arc<Audit>,
    /// What the API shows.
    pub status: Arc<Mutex<VolumeStatus>>,
    /// The event feed.
    pub events: Arc<Events>,
    /// Set when the daemon stops (a conversion then stops at a safe point).
    pub stop: Stop,
    /// Where the volume's keys come from ([`crate::keys::kmip_source`] in the daemon).
    pub keys: crate::keys::KeySourceFactory,
    /// What starts its NBD and FUSE exports ([`crate::exports::Exports`] in the daemon).
    pub exporter: Arc<dyn Exporter>,
}

/// An unlocked volume and its exports.
struct Serving {
    /// The served key; none while a plaintext volume is served (`serve_plaintext`).
    key_uid: Option<String>,
    /// The volume behind NBD and FUSE; none for dm-crypt, where the kernel holds the key.
    volume: Option<Arc<Unlocked>>,
    /// NBD and FUSE, closed in this order.
    exports: Vec<Box<dyn RunningExport>>,
    dm: Option<dm::DmMapping>,
    // Held for its locks, dropped after the exports.
    _device: Option<Device>,
    next_check: Instant,
    /// When the data device is next looked at (deleted while served?).
    next_device_check: Instant,
    /// Said once: the image was deleted while served.
    device_gone_said: bool,
}

/// How often a serving volume's image file is looked at: a deleted image keeps taking
/// writes that vanish at stop, so the operator must hear of it within seconds.
const DEVICE_CHECK: Duration = Duration::from_secs(2);

enum Phase {
    Start,
    Serving(Box<Serving>),
    Idle,
    Job(Job),
    Exit,
}

/// Why no key came.
enum KeyProblem {
    /// Try again later.
    Retry(String),
    /// Keep the volume locked, with this reason.
    Lock(String),
    /// Cannot be served, with this reason.
    Fail(String),
}

/// Why bringing a volume up did not end in serving.
enum Halt {
    /// Try again after a wait (no key server answered; the device was busy).
    Retry(String),
    /// Stay down until told otherwise; the status says why.
    Idle,
    /// The daemon is stopping.
    Exit,
}

struct Worker {
    ctx: Ctx,
    rx: Receiver<Command>,
    /// The device lock of a volume whose exports could not be closed: kept, so that no
    /// conversion writes under a mapping or mount that may still be live, until the
    /// operator asks for an unlock.
    held: Option<Device>,
    /// This volume's own KMIP connection, and the settings it was made with (a reload
    /// that changes them makes the next request connect anew). Its own, so that one
    /// volume's request to a server that does not answer never holds another volume's
    /// key check or fetch for the whole timeout (a mutex shared by the volumes did).
    kms: Option<(ClientConfig, Box<dyn KeySource>)>,
    /// The volume was seen encrypted in this run (and not decrypted since): found
    /// plaintext later, its header was wiped or lost, and it is not served as plaintext
    /// whatever `serve_plaintext` says.
    seen_encrypted: bool,
}

/// Runs the volume until told to stop.
pub fn run(ctx: Ctx, rx: Receiver<Command>) {
    let mut w = Worker {
        ctx,
        rx,
        held: None,
        kms: None,
        seen_encrypted: false,
    };
    let mut phase = Phase::Start;
    loop {
        phase = match phase {
            Phase::Start => w.bring_up(),
            Phase::Serving(s) => w.serve(*s),
            Phase::Idle => w.idle(),
            Phase::Job(j) => w.job(j),
            Phase::Exit => break,
        };
    }
    w.set(State::Stopped, None);
    w.ctx
        .audit
        .event(Some(&w.ctx.cfg.name), "stopped", None, "ok");
}

fn is_unreachable(e: &ServiceError) -> bool {
    match e {
        ServiceError::Kmip { error, .. } => match error {
            ClientError::AllServersFailed(_) => true,
            ClientError::Rejected { .. } => false,
            e => e.is_connection_failure(),
        },
        ServiceError::KeyDiscarded { error, .. } => is_unreachable(error),
        _ => false,
    }
}

/// The server answered Item Not Found: for this client identity the key does not exist
/// (destroyed and removed, or owned by another identity).
pub(crate) fn is_gone(e: &ServiceError) -> bool {
    matches!(e, ServiceError::Kmip { error: ClientError::Rejected { reason, .. }, .. } if *reason == ResultReason::ITEM_NOT_FOUND)
}

impl Worker {
    fn name(&self) -> &str {
        &self.ctx.cfg.name
    }

    fn status(&self) -> std::sync::MutexGuard<'_, VolumeStatus> {
        self.ctx.status.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Moves to `state`, with `reason`, telling the event feed.
    fn set(&self, state: State, reason: Option<String>) {
        let mut s = self.status();
        let changed = s.state != state || s.reason != reason;
        s.state = state;
        s.reason = reason.clone();
        if changed {
            s.since = crate::audit::now();
        }
        if state != State::Converting {
            s.progress = None;
        }
        if state != State::Waiting {
            s.next_retry_secs = None;
            s.attempts = 0;
        }
        // Served states keep their exports (a plaintext volume may be served as it is).
        if !matches!(state, State::Unlocked | State::Plaintext) {
            s.exports.clear();
        }
        drop(s);
        if changed {
            self.ctx.events.push(FeedEvent::State {
                volume: self.name().into(),
                state,
                reason,
            });
        }
    }

    fn location(&self) -> Location {
        Location {
            path: self.ctx.cfg.path.clone(),
            header: self.ctx.cfg.header.clone(),
        }
    }

    /// The key servers as the configuration says now.
    /// The KMIP settings, with no busy retry inside a request: the worker retries
    /// unreachable servers itself, with its own backoff and jitter (1 s up to
    /// `retry_max_secs`), and
    /// reports "waiting" meanwhile instead of blocking in one call.
    fn kmip(&self) -> ClientConfig {
        ClientConfig {
            busy_retry: std::time::Duration::ZERO,
            ..self
                .ctx
                .kmip
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
        }
    }

    /// This volume's key source (made on first use, and again when the KMIP settings
    /// changed).
    fn kms(&mut self) -> Result<&mut dyn KeySource, ServiceError> {
        let now = self.kmip();
        if self.kms.as_ref().is_none_or(|(made, _)| *made != now) {
            let k = (self.ctx.keys)(&now)?;
            self.kms = Some((now, k));
        }
        match self.kms.as_mut() {
            Some((_, k)) => Ok(k.as_mut()),
            None => unreachable!("made just above"),
        }
    }

    /// Waits up to `d` for a command; `None` when the wait ran out.
    fn wait(&self, d: Duration) -> Option<Command> {
        let deadline = Instant::now() + d;
        loop {
            if self.ctx.stop.requested() {
                return Some(Command::Stop);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            match self.rx.recv_timeout(left.min(Duration::from_millis(200))) {
                Ok(c) => return Some(c),
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return Some(Command::Stop),
            }
        }
    }

    /// Tells the event feed the state again, unchanged (a command that changed nothing
    /// still gets an answer).
    fn restate(&self) {
        let (state, reason) = {
            let s = self.status();
            (s.state, s.reason.clone())
        };
        self.ctx.events.push(FeedEvent::State {
            volume: self.name().into(),
            state,
            reason,
        });
    }

    /// Commands that arrived while the worker could not read them (a conversion, a slow
    /// key server): a lock or a stop is obeyed before anything is exported; a conversion
    /// asked for meanwhile is refused. Every queued command is read, so that a job queued
    /// behind a lock cannot run once the lock is obeyed; a stop outranks a lock.
    fn pending(&mut self) -> Option<Halt> {
        let mut halt = None;
        while let Ok(c) = self.rx.try_recv() {
            match c {
                Command::Stop => halt = Some(Halt::Exit),
                Command::Lock => {
                    if halt.is_none() {
                        halt = Some(Halt::Idle);
                    }
                }
                Command::Job(j) => self.refuse_job(&j, "another operation was running"),
                Command::Unlock | Command::CheckNow => {}
                Command::ServePlaintext(on) => self.ctx.cfg.serve_plaintext = on,
            }
        }
        if matches!(halt, Some(Halt::Idle)) {
            self.set(State::Locked, Some("locked through the API".into()));
        }
        halt
    }

    // --------------------------------------------------------------------------------

    fn bring_up(&mut self) -> Phase {
        // An unlock is the operator's word that a stuck export has let go.
        self.held = None;
        self.set(State::Starting, None);
        let mut backoff = kmip::client::Backoff::new(
            Duration::from_secs(1),
            Duration::from_secs(self.ctx.serve.retry_max_secs),
        );
        loop {
            match self.try_bring_up() {
                Ok(s) => return Phase::Serving(Box::new(s)),
                Err(Halt::Idle) => return Phase::Idle,
                Err(Halt::Exit) => return Phase::Exit,
                Err(Halt::Retry(reason)) => {
                    let d = backoff.wait();
                    {
                        let mut s = self.status();
                        s.attempts += 1;
                        s.next_retry_secs = Some((d.as_secs_f64() * 10.0).round() / 10.0);
                    }
                    self.set(State::Waiting, Some(reason));
                    let (attempts, next) = {
                        let mut s = self.status();
                        s.next_retry_secs = Some((d.as_secs_f64() * 10.0).round() / 10.0);
                        (s.attempts, s.next_retry_secs)
                    };
                    // Each retry is an event, so a client (ctl, the web page, a test)
                    // follows the backoff without polling the status.
                    self.ctx.events.push(FeedEvent::Retry {
                        volume: self.name().into(),
                        attempts,
                        next_retry_secs: next,
                    });
                    match self.wait(d) {
                        None | Some(Command::Unlock | Command::CheckNow) => {}
                        Some(Command::ServePlaintext(on)) => self.ctx.cfg.serve_plaintext = on,
                        Some(Command::Stop) => return Phase::Exit,
                        Some(Command::Lock) => {
                            self.set(State::Locked, Some("locked through the API".into()));
                            return Phase::Idle;
                        }
                        Some(Command::Job(j)) => {
                            self.refuse_job(&j, "the volume is waiting for a key server")
                        }
                    }
                }
            }
        }
    }

    fn fail(&self, state: State, reason: String) -> Halt {
        self.ctx
            .audit
            .event(Some(self.name()), "unlock", None, reason.clone());
        self.set(state, Some(reason));
        Halt::Idle
    }

    /// One attempt: header, conversion, key, state, unlock, exports.
    fn try_bring_up(&mut self) -> Result<Serving, Halt> {
        if self.ctx.stop.requested() {
            return Err(Halt::Exit);
        }
        let loc = self.location();
        let dev = match Device::open_for_serving(&loc, self.ctx.cfg.serve_plaintext) {
            Ok(d) => d,
            Err(ServiceError::Device(e @ volume::backend::OpenError::Busy { .. })) => {
                return Err(Halt::Retry(e.to_string()))
            }
            Err(e) => return Err(self.fail(State::Failed, e.to_string())),
        };
        let found = match convert::inspect(dev.devices()) {
            Ok(f) => f,
            Err(e) => return Err(self.fail(State::Failed, e.to_string())),
        };
        // A header file that does not exist (only tolerated with serve_plaintext) is a
        // plaintext volume before its encrypt, or nothing atrest may touch.
        if let (Some(h), None, false) = (&loc.header, &dev.header, found == Found::Plain) {
            return Err(self.fail(
                State::Failed,
                format!(
                    "the header file {} does not exist, and the data device is not plaintext: restore the header file (docs/operations.md, 4.5)",
                    h.display()
                ),
            ));
        }
        let (uid, mode) = match found {
            Found::Plain if self.seen_encrypted => {
                return Err(self.fail(
                    State::Failed,
                    format!(
                        "the volume was encrypted when atrest last looked (in this run), and now has no header{}: it is not served as plaintext. Restore the header (docs/operations.md, 4.5)",
                        match &loc.header {
                            Some(h) => format!(" ({} is gone or blank)", h.display()),
                            None => String::new(),
                        }
                    ),
                ))
            }
            Found::Plain => {
                {
                    let mut s = self.status();
                    s.key_uid = None;
                    s.cipher = None;
                    s.key_mode = None;
                }
                if !self.ctx.cfg.serve_plaintext || self.ctx.cfg.dm.is_some() {
                    self.set(State::Plaintext, None);
                    return Err(Halt::Idle);
                }
                // A lock (or serve_plaintext turned off) asked for meanwhile wins.
                if let Some(h) = self.pending() {
                    return Err(h);
                }
                if !self.ctx.cfg.serve_plaintext {
                    self.set(State::Plaintext, None);
                    return Err(Halt::Idle);
                }
                return self.serve_plaintext(dev);
            }
            Found::OtherLuks => {
                return Err(self.fail(
                    State::Failed,
                    "a LUKS volume that atrest did not make (no atrest token naming its key)"
                        .into(),
                ))
            }
            Found::InProgress(p) if p.kind == Kind::Decrypt => {
                // A decryption writes plaintext, and the disk alone cannot prove that it was
                // started for this volume: the record's tag binds the key and the header, and
                // a copy of the same volume (a backup, a clone) has both, so another copy's
                // interrupted decryption planted here verifies (found by an outside run). An
                // encryption or a rekey writes only ciphertext and is finished at start; a
                // decryption waits for the operator's word.
                self.status().key_uid = Some(p.key_uid.clone());
                return Err(self.fail(
                    State::Failed,
                    format!(
                        "an interrupted decryption was found ({} of {} bytes done); atrest serve does not finish a decryption on its own, since the disk alone cannot prove it was started for this volume. If you started it, finish it with `atrest ctl decrypt {}` (or `atrest decrypt`); if not, someone who can write the disk planted it: restore the device from a backup",
                        p.done,
                        p.size,
                        self.name()
                    ),
                ));
            }
            Found::InProgress(p) => {
                // Finished here, before anything is exported; then the volume starts again.
                drop(dev);
                self.status().key_uid = Some(p.key_uid.clone());
                let job = match p.kind {
                    Kind::Encrypt => Job::Encrypt {
                        key: None,
                        step: None,
                    },
                    // Not reached (above); were it, keeping the key is the choice that can
                    // be undone.
                    Kind::Decrypt => Job::Decrypt {
                        keep_old: true,
                        step: None,
                    },
                    // Whether the operator asked to keep the old key is not recorded on the
                    // volume: keeping it is the choice that can be undone (`atrest kmip
                    // revoke`).
                    Kind::Rekey => Job::Rekey {
                        deep: true,
                        keep_old: true,
                        step: None,
                    },
                };
                return match self.convert(&job, true) {
                    Ok(()) => self.try_bring_up(),
                    Err(e) if is_unreachable(&e) => Err(Halt::Retry(e.to_string())),
                    Err(_) if self.ctx.stop.requested() => Err(Halt::Exit),
                    Err(e) => Err(self.fail(State::Failed, e.to_string())),
                };
            }
            Found::Volume { key_uid, key_mode } => (key_uid, key_mode),
        };
        self.seen_encrypted = true;
        let cipher = dev.status().ok().map(|s| s.cipher_name);
        {
            let mut s = self.status();
            s.key_uid = Some(uid.clone());
            s.cipher = cipher;
            s.key_mode = Some(
                match mode {
                    KeyMode::Direct => "direct",
                    KeyMode::Wrapped => "wrapped",
                }
                .into(),
            );
        }
        // A lock asked for during a conversion (or before this attempt) wins.
        if let Some(h) = self.pending() {
            return Err(h);
        }
        let (secret, server) = match self.key_for(&uid) {
            Ok(k) => k,
            Err(KeyProblem::Retry(why)) => return Err(Halt::Retry(why)),
            Err(KeyProblem::Lock(why)) => return Err(self.fail(State::Locked, why)),
            Err(KeyProblem::Fail(why)) => return Err(self.fail(State::Failed, why)),
        };
        // A lock asked for while the key was on its way wins.
        if let Some(h) = self.pending() {
            return Err(h);
        }
        let next_check = Instant::now() + Duration::from_secs(self.ctx.serve.key_check_secs);
        let uid = Some(uid);
        let serving = if let Some(name) = &self.ctx.cfg.dm {
            let opened = dm::open_proven(dev, name, mode, &secret);
            drop(secret);
            secmem::wipe_stack();
            let (mapping, held) = match opened {
                Ok(o) => o,
                Err(e) => return Err(self.fail(State::Failed, format!("dm-crypt: {e}"))),
            };
            Serving {
                key_uid: uid.clone(),
                volume: None,
                exports: Vec::new(),
                dm: Some(mapping),
                _device: Some(held),
                next_check,
                next_device_check: Instant::now() + DEVICE_CHECK,
                device_gone_said: false,
            }
        } else {
            let unlocked = match crate::ops::open::unlock(&dev, &secret) {
                Ok(u) => u,
                Err(e) => return Err(self.fail(State::Failed, e.to_string())),
            };
            drop(secret);
            secmem::wipe_stack();
            Serving {
                key_uid: uid.clone(),
                volume: Some(Arc::new(unlocked)),
                exports: Vec::new(),
                dm: None,
                _device: Some(dev),
                next_check,
                next_device_check: Instant::now() + DEVICE_CHECK,
                device_gone_said: false,
            }
        };
        let serving = self.exported(serving)?;
        {
            let mut s = self.status();
            s.server = server.clone();
            s.server_error = None;
            s.last_key_check = Some(KeyCheck {
                time: crate::audit::now(),
                result: "Active".into(),
                server,
            });
        }
        self.ctx
            .audit
            .event(Some(self.name()), "unlocked", uid.as_deref(), "ok");
        self.set(State::Unlocked, None);
        Ok(serving)
    }

    /// Serves the plaintext on `dev` as it is (`serve_plaintext`): no key, the exports
    /// over the data device, state "plaintext". An encrypt then runs under the exports
    /// when the header is detached.
    fn serve_plaintext(&mut self, dev: Device) -> Result<Serving, Halt> {
        let size = match dev.data.len() {
            Ok(n) => n,
            Err(e) => return Err(self.fail(State::Failed, format!("reading its size: {e}"))),
        };
        if size == 0 || size % 512 != 0 {
            return Err(self.fail(
                State::Failed,
                format!("its size, {size} bytes, is not a whole number of 512-byte sectors: it can be neither served nor encrypted so; grow the image to the next sector"),
            ));
        }
        let data: Arc<dyn BlockBackend> = dev.data.clone();
        let serving = Serving {
            key_uid: None,
            volume: Some(Arc::new(Unlocked::plaintext(data, size))),
            exports: Vec::new(),
            dm: None,
            _device: Some(dev),
            next_check: Instant::now() + Duration::from_secs(self.ctx.serve.key_check_secs),
            next_device_check: Instant::now() + DEVICE_CHECK,
            device_gone_said: false,
        };
        let serving = self.exported(serving)?;
        log::warn!(
            "{}: serving PLAINTEXT (serve_plaintext = true): encrypt it, then turn serve_plaintext off",
            self.name()
        );
        self.ctx.audit.event(
            Some(self.name()),
            "serving_plaintext",
            None,
            "the volume holds plaintext and is served as it is (serve_plaintext)",
        );
        self.set(
            State::Plaintext,
            Some("served as plaintext (serve_plaintext)".into()),
        );
        Ok(serving)
    }

    /// The volume's key, and the server that gave it, once the server says it is Active
    /// (unless `require_active_key` is off).
    fn key_for(
        &mut self,
        uid: &str,
    ) -> Result<(zeroize::Zeroizing<Vec<u8>>, Option<String>), KeyProblem> {
        let require_active = self.ctx.serve.require_active_key;
        let kms = self.kms().map_err(|e| KeyProblem::Fail(e.to_string()))?;
        let gone = |uid: &str| {
            KeyProblem::Lock(format!(
                "the key {} is not found on the key server for this client identity (destroyed and removed, or owned by another identity): nothing was unlocked",
                shown(uid)
            ))
        };
        // The state first: a key that may not unlock is not brought into memory at all.
        if require_active {
            match kms.state(uid) {
                Ok(KeyState::ACTIVE) => {}
                Ok(s) => {
                    return Err(KeyProblem::Lock(format!(
                        "the key {} is {} on the key server; only an Active key unlocks (rekey the volume, or see require_active_key)",
                        shown(uid),
                        state_name(s)
                    )))
                }
                Err(e) if is_gone(&e) => return Err(gone(uid)),
                // Unreachable, or refused for a reason the server's operator may fix: retry.
                Err(e) => return Err(KeyProblem::Retry(e.to_string())),
            }
        }
        let server = kms.server();
        let secret = match kms.fetch(uid) {
            Ok(s) => s,
            Err(e) if is_gone(&e) => return Err(gone(uid)),
            Err(e) => return Err(KeyProblem::Retry(e.to_string())),
        };
        Ok((secret, server.or_else(|| kms.server())))
    }

    /// [`Self::start_exports`]; when they do not start, what did is taken down again and
    /// the volume is failed, with why.
    fn exported(&mut self, mut serving: Serving) -> Result<Serving, Halt> {
        if let Err(e) = self.start_exports(&mut serving) {
            let mut why = format!("starting the exports: {e}");
            if let Err(more) = self.take_down(serving) {
                why = format!("{why}; then {more}");
            }
            return Err(self.fail(State::Failed, why));
        }
        Ok(serving)
    }

    /// Starts NBD and FUSE over the unlocked volume (dm-crypt is open already) and
    /// records every export.
    fn start_exports(&self, s: &mut Serving) -> Result<(), ServiceError> {
        let mut exports = Vec::new();
        if let Some(vol) = s.volume.clone() {
            s.exports = self.ctx.exporter.start(vol, &self.ctx.cfg)?;
            for e in &s.exports {
                exports.push(Export {
                    kind: e.kind().into(),
                    at: e.at(),
                });
            }
        }
        if let Some(m) = &s.dm {
            exports.push(Export {
                kind: "dm".into(),
                at: m.device().display().to_string(),
            });
        }
        for e in &exports {
            self.ctx.audit.event(
                Some(self.name()),
                "exported",
                s.key_uid.as_deref(),
                format!("{} at {}", e.kind, e.at),
            );
        }
        self.status().exports = exports;
        Ok(())
    }

    /// Closes the exports (clients' I/O fails from here), flushes, and drops the volume:
    /// its key schedule is zeroed when the last export lets go of it. An export that
    /// cannot be closed is named in the error; the device lock is then kept (`held`).
    fn take_down(&mut self, mut s: Serving) -> Result<(), String> {
        let mut problems = Vec::new();
        for mut e in s.exports.drain(..) {
            if let Err(why) = e.close() {
                let kind = match e.kind() {
                    "nbd" => "NBD",
                    "fuse" => "FUSE",
                    other => other,
                };
                problems.push(format!("{kind}: {why}"));
            }
        }
        if let Some(mut m) = s.dm.take() {
            if let Err(e) = m.close() {
                problems.push(format!("dm-crypt: {e}"));
            }
        }
        if let Some(v) = &s.volume {
            if let Err(e) = v.flush() {
                problems.push(format!("flushing the volume: {e}"));
            }
        }
        self.status().exports.clear();
        if problems.is_empty() {
            return Ok(());
        }
        for p in &problems {
            log::error!("{}: {p}", self.name());
        }
        self.held = s._device.take();
        Err(problems.join("; "))
    }

    /// Closes the exports, forgets the keys, and says why in the audit log and the status.
    /// When an export would not close, the volume is not reported locked: it is Failed,
    /// with what is still open.
    fn lock(&mut self, s: Serving, reason: String) -> Phase {
        let uid = s.key_uid.clone();
        let uid = uid.as_deref();
        match self.take_down(s) {
            Ok(()) => {
                self.ctx
                    .audit
                    .event(Some(self.name()), "locked", uid, reason.clone());
                self.set(State::Locked, Some(reason));
            }
            Err(e) => {
                let why = format!(
                    "{reason}, but not every export closed ({e}); `atrest ctl unlock` once its users let go"
                );
                self.ctx
                    .audit
                    .event(Some(self.name()), "lock_failed", uid, why.clone());
                self.set(State::Failed, Some(why));
            }
        }
        Phase::Idle
    }

    // --------------------------------------------------------------------------------

    fn serve(&mut self, mut s: Serving) -> Phase {
        loop {
            let wait = s
                .next_check
                .min(s.next_device_check)
                .saturating_duration_since(Instant::now());
            match self.wait(wait) {
                None if Instant::now() < s.next_check => {
                    s.next_device_check = Instant::now() + DEVICE_CHECK;
                    self.check_device(&mut s);
                }
                None | Some(Command::CheckNow) => {
                    s.next_check =
                        Instant::now() + Duration::from_secs(self.ctx.serve.key_check_secs);
                    // A plaintext volume served as it is has no key to check.
                    let Some(uid) = s.key_uid.clone() else {
                        continue;
                    };
                    if let Some(reason) = self.check_key(&uid) {
                        return self.lock(s, reason);
                    }
                    if let Some(age) = self.rotation_due(&uid) {
                        // Direct mode has no keyslot to rewrap: only a deep rekey rotates it.
                        let deep = self.ctx.serve.rotate_deep
                            || self.status().key_mode.as_deref() == Some("direct");
                        self.ctx.audit.event(
                            Some(self.name()),
                            "scheduled_rotation",
                            Some(&uid),
                            format!(
                                "the key has been active {age:.1} days (rotate_days = {}): {}",
                                self.ctx.serve.rotate_days,
                                if deep { "deep rekey" } else { "rewrap" }
                            ),
                        );
                        let job = Job::Rekey {
                            deep,
                            keep_old: false,
                            step: None,
                        };
                        s = match self.job_while_serving(s, job) {
                            Ok(back) => back,
                            Err(phase) => return phase,
                        };
                    }
                }
                Some(Command::Unlock) => self.restate(),
                Some(Command::ServePlaintext(on)) => {
                    self.ctx.cfg.serve_plaintext = on;
                    if !on && s.key_uid.is_none() {
                        let why = "serve_plaintext was turned off: the plaintext volume is no longer served";
                        log::warn!("{}: {why}", self.name());
                        if let Err(e) = self.take_down(s) {
                            self.set(
                                State::Failed,
                                Some(format!("{why}, but not every export closed ({e})")),
                            );
                            return Phase::Idle;
                        }
                        self.ctx.audit.event(Some(self.name()), "locked", None, why);
                        self.set(State::Plaintext, None);
                        return Phase::Idle;
                    }
                }
                Some(Command::Lock) => return self.lock(s, "locked through the API".into()),
                Some(Command::Job(j)) => {
                    s = match self.job_while_serving(s, j) {
                        Ok(back) => back,
                        Err(phase) => return phase,
                    };
                }
                Some(Command::Stop) => {
                    // Stopping anyway: the errors are in the log.
                    let _ = self.take_down(s);
                    return Phase::Exit;
                }
            }
        }
    }

    /// A conversion asked of a served volume (through the API, or by `rotate_days`): a
    /// rewrap, and a deep rekey of a volume atrest exports itself, run under the exports,
    /// which keep serving (the volume comes back); anything else takes the exports down and
    /// runs as a job (the phase to go to).
    fn job_while_serving(&mut self, mut s: Serving, j: Job) -> Result<Serving, Phase> {
        let plaintext = s.key_uid.is_none();
        let in_place = s._device.as_ref().is_some_and(|d| d.has_detached_header());
        let ours = s.dm.is_none() && s.volume.is_some();
        match &j {
            Job::Encrypt { .. } if !plaintext => {
                self.refuse_job(&j, "the volume is encrypted already");
                return Ok(s);
            }
            Job::Decrypt { .. } | Job::Rekey { .. } if plaintext => {
                self.refuse_job(&j, "the volume holds plaintext: encrypt it first");
                return Ok(s);
            }
            // A rewrap writes only the header: the exports keep serving through it.
            Job::Rekey {
                deep: false,
                keep_old,
                ..
            } => {
                self.rewrap_online(&mut s, *keep_old);
                return Ok(s);
            }
            // These convert under the exports, which keep serving: a deep rekey, and an
            // encrypt or decrypt whose data stays in place (a detached header). A decrypt
            // online ends with plaintext served, so only where that is allowed.
            Job::Rekey { deep: true, .. } | Job::Encrypt { .. } | Job::Decrypt { .. }
                if ours
                    && (matches!(j, Job::Rekey { .. })
                        || in_place && (plaintext || self.ctx.cfg.serve_plaintext)) =>
            {
                return self.convert_online(s, &j);
            }
            _ => {}
        }
        // Encrypt or decrypt with the header on the volume moves the data by the header's
        // size, which an export cannot follow: the exports close for its duration.
        log::info!(
            "{}: the exports close for the {}: {}",
            self.name(),
            j.kind().noun(),
            if s.dm.is_some() {
                "dm-crypt's kernel mapping cannot follow a conversion"
            } else if !in_place {
                "with the header on the volume, the data moves by the header's size"
            } else {
                "the volume would end as plaintext, and serve_plaintext is off"
            }
        );
        let uid = s.key_uid.clone();
        if let Err(e) = self.take_down(s) {
            let why = format!("not every export closed ({e})");
            self.refuse_job(&j, &why);
            self.ctx.audit.event(
                Some(self.name()),
                "lock_failed",
                uid.as_deref(),
                why.clone(),
            );
            self.set(State::Failed, Some(why));
            return Err(Phase::Idle);
        }
        Err(Phase::Job(j))
    }

    /// Reports (status, log at ERROR, audit, feed) an image file deleted while served: the
    /// exports keep working, but what is written goes to a file that is gone at stop.
    fn check_device(&mut self, s: &mut Serving) {
        let Some(dev) = &s._device else { return };
        let gone = dev.data.unlinked().unwrap_or(false);
        if !gone || s.device_gone_said {
            return;
        }
        s.device_gone_said = true;
        let why = format!(
            "the image file {} was deleted while served: writes still succeed but go to a file that disappears when atrest stops. Do not stop or lock the volume: copy the still-open encrypted image back first (cp {} {}), then restart",
            dev.location.path.display(),
            dev.data.proc_path().display(),
            dev.location.path.display()
        );
        log::error!("{}: {why}", self.name());
        self.ctx.audit.event(
            Some(self.name()),
            "device_deleted",
            s.key_uid.as_deref(),
            why.clone(),
        );
        self.ctx.events.push(FeedEvent::DeviceDeleted {
            volume: self.name().into(),
            error: why.clone(),
        });
        self.status().device_error = Some(why);
    }

    /// Asks the key's state; `Some(reason)` when the volume must be locked: the key is
    /// not Active (with `require_active_key`), or its material is gone (always).
    fn check_key(&mut self, uid: &str) -> Option<String> {
        let r = match self.kms() {
            Ok(k) => {
                let r = k.state(uid);
                (r, k.server())
            }
            Err(e) => (Err(e), None),
        };
        let (result, server) = r;
        let text = match &result {
            Ok(s) => state_name(*s),
            Err(e) => e.to_string(),
        };
        self.ctx.events.push(FeedEvent::KeyCheck {
            volume: self.name().into(),
            result: text.clone(),
        });
        {
            let mut st = self.status();
            st.last_key_check = Some(KeyCheck {
                time: crate::audit::now(),
                result: text.clone(),
                server: server.clone(),
            });
            match &result {
                // Unreachable, or refused (the account's rights withdrawn, say): shown, and
                // said at WARN when it begins (not at every check).
                Err(e) if !is_gone(e) => {
                    if st.server_error.is_none() {
                        log::warn!(
                            "{}: the key check got no answer ({e}); the volume keeps serving with the key in memory, but would not unlock after a restart",
                            st.name
                        );
                    }
                    st.server_error = Some(e.to_string());
                }
                _ => {
                    st.server_error = None;
                    st.server = server;
                }
            }
        }
        let policy = crate::keys::KeyPolicy {
            require_active: self.ctx.serve.require_active_key,
        };
        match result {
            Ok(s) if !policy.allows(s) => Some(format!(
                "the key {} became {} on the key server",
                shown(uid),
                state_name(s)
            )),
            Ok(_) => None,
            Err(e) if is_gone(&e) => Some(format!(
                "the key {} is no longer found on the key server for this client identity (destroyed and removed, or access withdrawn)",
                shown(uid)
            )),
            // No answer, or a refusal the server's operator may lift, is no reason to lock:
            // the key is in memory. It is in the status and the feed.
            Err(e) => {
                self.ctx.events.push(FeedEvent::KeyCheckFailed { volume: self.name().into(), error: e.to_string() });
                None
            }
        }
    }

    fn idle(&mut self) -> Phase {
        loop {
            match self.wait(Duration::from_secs(3600)) {
                None | Some(Command::CheckNow) => {}
                Some(Command::ServePlaintext(on)) => {
                    self.ctx.cfg.serve_plaintext = on;
                    // A plaintext volume not served until now is served from here.
                    if on && self.status().state == State::Plaintext {
                        return Phase::Start;
                    }
                }
                Some(Command::Lock) => self.restate(),
                Some(Command::Unlock) => return Phase::Start,
                Some(Command::Job(j)) => return Phase::Job(j),
                Some(Command::Stop) => return Phase::Exit,
            }
        }
    }

    /// With `rotate_days` set: the days the served key has been active, when that is at
    /// least `rotate_days` (the key server's Activation Date decides, not the disk, whose
    /// header anyone who can write it could date). A server that does not answer or keeps no
    /// date postpones the rotation to the next check.
    fn rotation_due(&mut self, uid: &str) -> Option<f64> {
        let days = self.ctx.serve.rotate_days;
        if days <= 0.0 {
            return None;
        }
        let since = self.kms().ok()?.activated(uid).ok()??;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let age = (now - since) as f64 / 86_400.0;
        (age >= days).then_some(age)
    }

    /// Rewraps the served volume under a new KMIP key without closing its exports: the
    /// header on the device the worker holds gets the new keyslot; the volume key the
    /// exports use is unchanged. The served key is the new one from then on.
    fn rewrap_online(&mut self, s: &mut Serving, keep_old: bool) {
        let (Some(dev), Some(uid)) = (s._device.as_ref(), s.key_uid.clone()) else {
            self.refuse_job(
                &Job::Rekey {
                    deep: false,
                    keep_old,
                    step: None,
                },
                "the volume's device is not held",
            );
            return;
        };
        self.job_event(Kind::Rekey, JobResult::Started, None);
        let result = KeyManager::for_servers(self.kmip()).and_then(|kms| {
            let kms = &mut kms.with_audit(self.ctx.audit.clone(), Some(&self.ctx.cfg.name));
            crate::ops::convert::rewrap_held(kms, dev, &uid, keep_old, None)
        });
        match result {
            Ok(report) => {
                if let Some(st) = &report.status {
                    s.key_uid = Some(st.key_uid.clone());
                    self.status().key_uid = Some(st.key_uid.clone());
                }
                self.ctx.audit.event(
                    Some(self.name()),
                    Kind::Rekey.as_str(),
                    s.key_uid.as_deref(),
                    "ok",
                );
                self.job_event(Kind::Rekey, JobResult::Finished, Some(report.message));
            }
            Err(e) => {
                self.ctx.audit.event(
                    Some(self.name()),
                    Kind::Rekey.as_str(),
                    s.key_uid.as_deref(),
                    e.to_string(),
                );
                self.job_event(Kind::Rekey, JobResult::Failed, Some(e.to_string()));
            }
        }
    }

    fn refuse_job(&self, j: &Job, why: &str) {
        self.job_event(j.kind(), JobResult::Refused, Some(why.into()));
    }

    /// A job's news: on the feed, and in the status as its newest job.
    fn job_event(&self, operation: Kind, result: JobResult, message: Option<String>) {
        self.status().last_job = Some(super::status::LastJob {
            operation,
            result,
            message: message.clone(),
            time: crate::audit::now(),
        });
        self.ctx.events.push(FeedEvent::Job {
            volume: self.name().into(),
            operation,
            result,
            message,
        });
    }

    fn job(&mut self, j: Job) -> Phase {
        match self.convert(&j, false) {
            Ok(()) => {
                // Plaintext from here on, as the operator asked.
                if matches!(j, Job::Decrypt { .. }) {
                    self.seen_encrypted = false;
                }
                Phase::Start
            }
            Err(_) if self.ctx.stop.requested() => Phase::Exit,
            Err(e) => {
                self.job_event(j.kind(), JobResult::Failed, Some(e.to_string()));
                self.ctx
                    .audit
                    .event(Some(self.name()), j.kind().as_str(), None, e.to_string());
                Phase::Start
            }
        }
    }

    /// Runs (or, `resuming`, finishes) a conversion with progress in the status and the
    /// feed. Stopped by the daemon's stop at a safe point.
    fn convert(&mut self, j: &Job, resuming: bool) -> Result<(), ServiceError> {
        self.convert_with(j, resuming, None).map(|_| ())
    }

    /// [`Self::convert`]; with `held` (the served volume's device, its unlocked volume and
    /// key), the conversion runs while the exports keep serving: the volume keeps its
    /// state, with its progress shown. The volume's key afterwards (none: plaintext).
    fn convert_with(
        &mut self,
        j: &Job,
        resuming: bool,
        held: Option<(&mut Device, &Unlocked, Option<&str>)>,
    ) -> Result<Option<String>, ServiceError> {
        if held.is_none() {
            self.set(State::Converting, None);
        }
        let kind = j.kind();
        self.job_event(
            kind,
            if resuming {
                JobResult::Resuming
            } else {
                JobResult::Started
            },
            None,
        );
        let loc = self.location();
        let status = self.ctx.status.clone();
        let events = self.ctx.events.clone();
        let name = self.ctx.cfg.name.clone();
        let mut last_event = Instant::now() - Duration::from_secs(10);
        let began = Instant::now();
        let mut done_at_start = None;
        let rate = self.ctx.serve.convert_max_mib_per_sec;
        let pace_stop = self.ctx.stop.clone();
        let mut observer = |e: &Event| {
            if let Event::Progress { kind, done, total } = e {
                let from = *done_at_start.get_or_insert(*done);
                status.lock().unwrap_or_else(|p| p.into_inner()).progress = Some(
                    Progress::measured(*kind, *done, *total, from, began.elapsed()),
                );
                pace(rate, done - from, began, &pace_stop);
                if last_event.elapsed() >= Duration::from_millis(500) || done == total {
                    last_event = Instant::now();
                    events.push(FeedEvent::Progress {
                        volume: name.clone(),
                        operation: *kind,
                        done: *done,
                        total: *total,
                    });
                }
            }
        };
        let stop = self.ctx.stop.clone();
        // A conversion may run for hours: it gets a key manager (a connection) of its own,
        // so the other volumes' key checks do not wait for it.
        let kms = &mut KeyManager::for_servers(self.kmip())?
            .with_audit(self.ctx.audit.clone(), Some(&self.ctx.cfg.name));
        let online = held.is_some();
        let report = match (j, held) {
            (Job::Encrypt { key, step }, Some((dev, vol, _))) => crate::ops::convert::encrypt_held(
                kms,
                dev,
                vol,
                &key.clone().unwrap_or_default(),
                *step,
                &mut observer,
                &stop,
            ),
            (Job::Decrypt { keep_old, step }, Some((dev, vol, Some(uid)))) => {
                crate::ops::convert::decrypt_held(
                    kms,
                    dev,
                    vol,
                    uid,
                    *keep_old,
                    *step,
                    &mut observer,
                    &stop,
                )
            }
            (
                Job::Rekey {
                    deep: true,
                    keep_old,
                    step,
                },
                Some((dev, vol, Some(uid))),
            ) => crate::ops::convert::deep_rekey_held(
                kms,
                dev,
                vol,
                uid,
                *keep_old,
                *step,
                &mut observer,
                &stop,
            ),
            // Not routed here (`job_while_serving` sends only these three online).
            (_, Some(_)) => Err(convert::ConvertError::NotOnline(kind).into()),
            (Job::Encrypt { key, step }, None) => encrypt(
                kms,
                &EncryptRequest {
                    location: loc,
                    key: key.clone().unwrap_or_default(),
                    reduce_device_size: None,
                    step: *step,
                },
                &mut observer,
                &stop,
            ),
            (Job::Decrypt { keep_old, step }, None) => decrypt(
                kms,
                &DecryptRequest {
                    location: loc,
                    keep_old: *keep_old,
                    step: *step,
                },
                &mut observer,
                &stop,
            ),
            (
                Job::Rekey {
                    deep,
                    keep_old,
                    step,
                },
                None,
            ) => rekey(
                kms,
                &RekeyRequest {
                    location: loc,
                    deep: *deep,
                    keep_old: *keep_old,
                    key_name: None,
                    step: *step,
                },
                &mut observer,
                &stop,
            ),
        }?;
        if report.stopped.is_some() {
            return Err(crate::refusal::Refusal::DaemonStopping.into());
        }
        self.ctx.audit.event(
            Some(self.name()),
            kind.as_str(),
            report.status.as_ref().map(|s| s.key_uid.as_str()),
            "ok",
        );
        let key = report.status.as_ref().map(|s| s.key_uid.clone());
        if online {
            let mut st = self.status();
            st.progress = None;
            st.key_uid = key.clone();
            st.cipher = report.status.as_ref().map(|s| s.cipher_name.clone());
            st.key_mode = report.status.as_ref().map(|s| s.key_mode.to_string());
        }
        self.job_event(kind, JobResult::Finished, Some(report.message));
        Ok(key)
    }

    /// A conversion of the served volume while its exports keep serving (NBD and FUSE;
    /// dm-crypt's kernel mapping cannot follow one): a deep rekey, or an encrypt or decrypt
    /// with a detached header. The volume comes back, encrypted or plaintext as the
    /// conversion left it; when a step failed part-way, the volume has stopped taking I/O
    /// (its hot zone is as a crash leaves it) and is brought up again, which finishes the
    /// conversion from its journal before anything is exported.
    fn convert_online(&mut self, mut s: Serving, j: &Job) -> Result<Serving, Phase> {
        let (Some(vol), Some(dev)) = (s.volume.clone(), s._device.as_mut()) else {
            self.refuse_job(j, "the volume is not served by atrest itself");
            return Ok(s);
        };
        let uid = s.key_uid.clone();
        let result = self.convert_with(j, false, Some((dev, &vol, uid.as_deref())));
        match result {
            Ok(new) => {
                let was_plain = s.key_uid.is_none();
                s.key_uid = new;
                match (was_plain, &s.key_uid) {
                    (true, Some(_)) => {
                        self.seen_encrypted = true;
                        self.set(State::Unlocked, None);
                        log::warn!(
                            "{}: encrypted while serving; serve_plaintext is still on for it: turn it off, so that a wiped header cannot make atrest serve the disk as plaintext",
                            self.name()
                        );
                    }
                    (false, None) => {
                        self.seen_encrypted = false;
                        self.set(
                            State::Plaintext,
                            Some("served as plaintext (serve_plaintext)".into()),
                        )
                    }
                    _ => {}
                }
                Ok(s)
            }
            Err(_) if self.ctx.stop.requested() => {
                let _ = self.take_down(s);
                Err(Phase::Exit)
            }
            Err(e) => {
                self.status().progress = None;
                self.job_event(j.kind(), JobResult::Failed, Some(e.to_string()));
                self.ctx.audit.event(
                    Some(self.name()),
                    j.kind().as_str(),
                    uid.as_deref(),
                    e.to_string(),
                );
                // Untouched: the served volume never began to follow the conversion, and
                // is on the side its status says. Then it keeps serving; otherwise (a
                // halted step, or a failure after the data was converted) what the disk
                // holds decides: the volume is brought up again, which finishes an encrypt
                // or a rekey from its record before exporting, and shows a finished
                // decrypt as plaintext, or waiting for the operator.
                let untouched = vol.halted().is_none()
                    && !vol.converting()
                    && vol.is_plaintext() == s.key_uid.is_none();
                if untouched {
                    return Ok(s);
                }
                let why = vol.halted().unwrap_or_else(|| {
                    format!("the {} ended with an error ({e})", j.kind().noun())
                });
                log::error!(
                    "{}: {why}; taking the volume down to bring it up as its disk says",
                    self.name()
                );
                if let Err(more) = self.take_down(s) {
                    self.set(State::Failed, Some(format!("{why}; then {more}")));
                    return Err(Phase::Idle);
                }
                Err(Phase::Start)
            }
        }
    }
}

/// Holds a conversion back after a committed step until `moved` bytes since `began` are
/// within `mib_per_sec` (`[serve] convert_max_mib_per_sec`; 0: no limit). Waits in short
/// slices, so that a stop is not delayed by more than one of them.
fn pace(mib_per_sec: u64, moved: u64, began: Instant, stop: &Stop) {
    if mib_per_sec == 0 {
        return;
    }
    let due = Duration::from_secs_f64(moved as f64 / (mib_per_sec as f64 * 1048576.0));
    while began.elapsed() < due && !stop.requested() {
        std::thread::sleep((due - began.elapsed()).min(Duration::from_millis(50)));
    }
}

#[cfg(test)]
mod tests;
