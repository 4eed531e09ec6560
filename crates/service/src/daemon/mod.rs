//! `atrest serve`: the daemon. At every start, for each configured volume and
//! independently of the others, it reads the key's identifier from the header, fetches
//! the key (servers in order, bounded backoff while none answers), checks it against the
//! header and its state on the server, finishes an interrupted conversion, and exports
//! the volume; then it watches the key's state and locks the volume when the key is no
//! longer Active. An audit log records every key operation and state change; a control
//! API on a Unix socket reports and takes commands. SIGTERM stops (exports flushed and
//! closed, keys zeroized); SIGHUP rereads the configuration and adds, removes or restarts
//! volumes. Keys never touch the disk.
//!
//! Parts: [`worker`] (one volume's life, one thread each), [`status`] (what the API
//! shows, the event feed), [`api`], [`notify`] (systemd), [`client`] (the API
//! from the other side, for `atrest ctl`).

pub mod api;
pub mod client;
pub mod expiry;
pub mod feed;
pub mod notify;
mod reload;
pub mod status;
pub mod worker;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::audit::Audit;
use crate::config::{Config, VolumeConfig};
use crate::error::ServiceError;
use crate::progress::Stop;
use status::{Events, State, VolumeStatus};
use worker::Command;

struct Running {
    cfg: VolumeConfig,
    tx: Sender<Command>,
    /// The worker's own stop: a conversion it runs stops at its next safe point.
    stop: Stop,
    thread: JoinHandle<()>,
}

impl Running {
    /// Stops the worker (a conversion at a safe point: it resumes at the next start) and
    /// waits for it.
    fn end(self) {
        self.stop.request();
        let _ = self.tx.send(Command::Stop);
        let _ = self.thread.join();
    }
}

/// What the operator sees of a run, for the CLI's log lines.
pub trait Reporter {
    /// A line worth printing.
    fn line(&mut self, text: &str);
    /// A line that needs the operator's attention soon (a volume waiting for its key
    /// server, locked).
    fn warn(&mut self, text: &str) {
        self.line(text);
    }
    /// A line that needs the operator now (a volume failed).
    fn error(&mut self, text: &str) {
        self.line(text);
    }
}

/// A front end started beside the control API (the admin web page, from the `admin`
/// crate, which depends on this one): given the daemon's shared state and its
/// configuration, it returns what keeps it running (dropped when the daemon stops), or
/// why it could not start. The daemon serves its volumes either way.
pub type FrontEnd<'a> = &'a dyn Fn(
    Arc<api::Shared>,
    &Config,
    &mut dyn Reporter,
) -> Result<Option<Box<dyn std::any::Any>>, String>;

/// Serves the volumes of the configuration at `config_path` until `stop` is requested;
/// `reload` set (SIGHUP) rereads the configuration. `front` starts the web page.
pub fn run(
    config_path: &Path,
    stop: Stop,
    reload: Arc<AtomicBool>,
    out: &mut dyn Reporter,
    front: Option<FrontEnd<'_>>,
) -> Result<(), ServiceError> {
    let mut config = Config::load(config_path)?;
    let mut audit = Audit::open(&config.serve.audit_log)?;
    if let Some(target) = &config.serve.syslog {
        // Checked by Config::load; the CA is read here, with the same trust rules.
        let target = crate::syslog::Target::parse(target).map_err(|why| {
            crate::config::ConfigError::Invalid {
                path: config_path.to_owned(),
                key: "syslog",
                value: target.clone(),
                why,
            }
        })?;
        let ca = match &config.serve.syslog_ca {
            Some(p) => Some(crate::trusted::read(
                "syslog_ca",
                p,
                crate::trusted::Role::Trusted,
            )?),
            None => None,
        };
        let forwarder = crate::syslog::Syslog::start(target, ca.as_deref().map(|c| &c[..]))
            .map_err(|why| crate::config::ConfigError::Invalid {
                path: config_path.to_owned(),
                key: "syslog",
                value: config.serve.syslog.clone().unwrap_or_default(),
                why,
            })?;
        audit.forward_to(forwarder);
    }
    let audit = Arc::new(audit);
    let events = Arc::new(Events::default());
    let kmip = Arc::new(Mutex::new(config.kmip.clone()));
    let shared = Arc::new(api::Shared {
        volumes: Mutex::new(BTreeMap::new()),
        events: events.clone(),
        config_path: config_path.to_owned(),
        started: crate::audit::now(),
        ready: AtomicBool::new(false),
        audit: audit.clone(),
        polls: Default::default(),
        reload: reload.clone(),
        certificates: Default::default(),
    });
    crate::runtime_path::check_socket(&config.serve.api_socket, "API socket")?;
    let _api = api::Api::start(&config.serve.api_socket, shared.clone())?;
    // The page is a convenience beside the volumes: one that cannot start is said loudly
    // (log, audit) and the volumes are served all the same.
    let _front = match front.map(|f| f(shared.clone(), &config, out)) {
        None | Some(Ok(None)) => None,
        Some(Ok(Some(running))) => Some(running),
        Some(Err(why)) => {
            let text = format!("the web page is not served: {why}");
            log::error!("{text}");
            audit.event(None, "web_failed", None, text);
            None
        }
    };
    audit.event(
        None,
        "started",
        None,
        format!(
            "{} volume(s), API at {}",
            config.volumes.len(),
            config.serve.api_socket.display()
        ),
    );
    out.line(&format!(
        "serving {} volume(s) from {}; API at {}; audit log {}",
        config.volumes.len(),
        config_path.display(),
        config.serve.api_socket.display(),
        config.serve.audit_log.display()
    ));
    let mut running: BTreeMap<String, Running> = BTreeMap::new();
    let start = |cfg: &VolumeConfig, config: &Config, running: &mut BTreeMap<String, Running>| {
        let status = Arc::new(Mutex::new(VolumeStatus::new(
            &cfg.name,
            &cfg.path.display().to_string(),
        )));
        let (tx, rx) = channel();
        let vstop = Stop::new();
        let ctx = worker::Ctx {
            cfg: cfg.clone(),
            kmip: kmip.clone(),
            serve: config.serve.clone(),
            audit: audit.clone(),
            status: status.clone(),
            events: events.clone(),
            stop: vstop.clone(),
            exporter: Arc::new(crate::exports::Exports),
            keys: crate::keys::kmip_source(
                audit.clone(),
                &cfg.name,
                crate::keys::KeyPolicy {
                    require_active: config.serve.require_active_key,
                },
            ),
        };
        let thread = std::thread::Builder::new()
            .name(format!("vol-{}", cfg.name))
            .spawn(move || worker::run(ctx, rx))
            .expect("spawning a volume thread");
        shared
            .volumes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(cfg.name.clone(), (tx.clone(), status));
        running.insert(
            cfg.name.clone(),
            Running {
                cfg: cfg.clone(),
                tx,
                stop: vstop,
                thread,
            },
        );
    };
    for v in &config.volumes {
        start(v, &config, &mut running);
    }
    let expiry_reported = Arc::new(Mutex::new(expiry::Reported::default()));
    let mut expiry_due = std::time::Instant::now();
    let expiry_running = Arc::new(AtomicBool::new(false));
    let mut told_ready = false;
    let mut last_states: Vec<(String, State)> = Vec::new();
    let mut seen = 0;
    let mut audit_retry = std::time::Instant::now();
    while !stop.requested() {
        // Woken by any event (a volume changing state), or after 50 ms to look at signals.
        seen = events.after(seen, Duration::from_millis(50)).1;
        if audit_retry.elapsed() >= AUDIT_RETRY {
            audit_retry = std::time::Instant::now();
            audit.retry();
        }
        if std::time::Instant::now() >= expiry_due {
            expiry_due = std::time::Instant::now() + EXPIRY_CHECK;
            check_expiry(&kmip, &shared, &audit, &expiry_reported, &expiry_running);
        }
        if reload.swap(false, Ordering::SeqCst) {
            // Also what logrotate's postrotate sends: write to a fresh file.
            if let Err(e) = audit.reopen() {
                out.line(&format!("SIGHUP: the audit log is not reopened: {e}"));
            }
            match Config::load(config_path) {
                Err(e) => {
                    out.line(&format!("SIGHUP: the configuration is not reloaded: {e}"));
                    audit.event(None, "reload", None, e.to_string());
                }
                Ok(mut new) => {
                    let started: BTreeMap<String, VolumeConfig> = running
                        .iter()
                        .map(|(n, r)| (n.clone(), r.cfg.clone()))
                        .collect();
                    let plan = reload::plan(&config.serve, &new.serve, &new.volumes, &started);
                    for line in &plan.notices {
                        out.line(line);
                    }
                    // Compared by content: a replaced certificate, key or password counts.
                    // New KMIP settings do not restart a volume (`reload::plan`); its next
                    // request uses them.
                    let mut kmip_changed = new.kmip != config.kmip;
                    if kmip_changed {
                        // Before new KMIP settings take effect they must still see every
                        // kept volume's served key (another client identity locked everything
                        // at its next key check). If not, the old settings stay.
                        let keys: Vec<(String, String)> = served_keys(&shared)
                            .into_iter()
                            .filter(|(name, _)| plan.keep.contains(name))
                            .collect();
                        if let Err(why) = reload::check_settings(&new, &keys) {
                            let text = format!("SIGHUP: the new KMIP settings are not used, the old ones stay: {why}");
                            out.error(&text);
                            audit.event(None, "reload_refused", None, text);
                            new.kmip = config.kmip.clone();
                            kmip_changed = false;
                        }
                    }
                    for name in &plan.stop {
                        if let Some(r) = running.remove(name) {
                            r.end();
                        }
                        shared
                            .volumes
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .remove(name);
                    }
                    if kmip_changed {
                        // Each volume's connection was made with the old settings: its next
                        // request connects anew with these.
                        *kmip.lock().unwrap_or_else(|p| p.into_inner()) = new.kmip.clone();
                        // New certificates: their expiry is looked at now.
                        expiry_due = std::time::Instant::now();
                        // A volume waiting for a key server tries again now, with them.
                        for name in &plan.keep {
                            let waiting = shared
                                .volumes
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .get(name)
                                .is_some_and(|(_, s)| {
                                    s.lock().unwrap_or_else(|p| p.into_inner()).state
                                        == State::Waiting
                                });
                            if let (true, Some(r)) = (waiting, running.get(name)) {
                                let _ = r.tx.send(Command::Unlock);
                            }
                        }
                    }
                    for (name, on) in &plan.serve_plaintext {
                        if let Some(r) = running.get_mut(name) {
                            r.cfg.serve_plaintext = *on;
                            let _ = r.tx.send(Command::ServePlaintext(*on));
                        }
                    }
                    for v in &plan.start {
                        start(v, &new, &mut running);
                    }
                    let text = format!(
                        "SIGHUP: configuration reloaded; {} volume(s) kept, {} stopped, {} started{}",
                        plan.keep.len(),
                        plan.stop.len(),
                        plan.start.len(),
                        if kmip_changed {
                            "; new KMIP settings in use from the next request"
                        } else {
                            ""
                        }
                    );
                    out.line(&text);
                    audit.event(None, "reload", None, text);
                    config = new;
                }
            }
        }
        // READY once every volume is unlocked or has its reason; STATUS as it changes.
        let statuses = shared.statuses();
        let settled = statuses.iter().all(VolumeStatus::settled);
        let states: Vec<(String, State)> =
            statuses.iter().map(|s| (s.name.clone(), s.state)).collect();
        if states != last_states {
            for s in &statuses {
                if !last_states.contains(&(s.name.clone(), s.state)) {
                    let reason = s.reason.as_deref().map(|r| format!(" ({r})"));
                    let text = format!(
                        "{}: {}{}",
                        s.name,
                        s.state.name(),
                        reason.unwrap_or_default()
                    );
                    match s.state {
                        State::Failed => out.error(&text),
                        State::Waiting | State::Locked => out.warn(&text),
                        _ => out.line(&text),
                    }
                }
            }
            let summary: Vec<String> = states
                .iter()
                .map(|(name, state)| format!("{name} {}", state.name()))
                .collect();
            notify::notify(&format!("STATUS={}", summary.join(", ")));
            last_states = states;
        }
        if settled && !told_ready {
            told_ready = true;
            shared.ready.store(true, Ordering::SeqCst);
            notify::notify("READY=1");
            let not: Vec<String> = statuses
                .iter()
                .filter(|s| !matches!(s.state, State::Unlocked | State::Plaintext))
                .map(|s| {
                    format!(
                        "{} {}{}",
                        s.name,
                        s.state.name(),
                        s.reason
                            .as_deref()
                            .map(|r| format!(" ({r})"))
                            .unwrap_or_default()
                    )
                })
                .collect();
            if !not.is_empty() {
                out.warn(&format!(
                    "ready: {} of {} volume(s) unlocked or plaintext; not: {}",
                    statuses.len() - not.len(),
                    statuses.len(),
                    not.join("; ")
                ));
            } else {
                out.line("ready: every volume is unlocked (or plaintext)");
            }
        }
    }
    notify::notify("STOPPING=1");
    out.line("stopping: closing exports, flushing, zeroizing keys");
    // Every worker told first, then waited for: they take their volumes down together.
    for r in running.values() {
        r.stop.request();
        let _ = r.tx.send(Command::Stop);
    }
    for (_, r) in running {
        let _ = r.thread.join();
    }
    drop(_front);
    audit.event(None, "stopped", None, "ok");
    Ok(())
}

/// How often the certificates' expiry is looked at (one KMIP request, for the server's).
const EXPIRY_CHECK: Duration = Duration::from_secs(6 * 3600);

/// Looks at the certificates' expiry on a thread of its own (the server's needs a request):
/// the status gets them all, and each that reached a new threshold is said once, at WARN
/// and in the audit log. One look at a time.
fn check_expiry(
    kmip: &Arc<Mutex<kmip::client::ClientConfig>>,
    shared: &Arc<api::Shared>,
    audit: &Arc<Audit>,
    reported: &Arc<Mutex<expiry::Reported>>,
    running: &Arc<AtomicBool>,
) {
    if running.swap(true, Ordering::SeqCst) {
        return;
    }
    let settings = kmip.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let (shared, audit, reported, done) = (
        shared.clone(),
        audit.clone(),
        reported.clone(),
        running.clone(),
    );
    let spawned = std::thread::Builder::new()
        .name("cert-expiry".into())
        .spawn(move || {
            let mut found = expiry::local(&settings);
            match expiry::server(&settings) {
                Ok(c) => found.push(c),
                // An outage is reported by the volumes; the server's certificate waits for
                // the next look.
                Err(e) => log::debug!(
                    "certificate expiry: the KMIP server's certificate was not seen: {e}"
                ),
            }
            for c in reported
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .news(&found)
            {
                let text = c.warning.clone().unwrap_or_default();
                log::warn!("{text}");
                audit.event(None, "certificate_expiry", None, text);
            }
            *shared
                .certificates
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = found;
            done.store(false, Ordering::SeqCst);
        });
    if spawned.is_err() {
        running.store(false, Ordering::SeqCst);
    }
}

/// How often lines the audit log did not take are tried again.
const AUDIT_RETRY: Duration = Duration::from_secs(5);

/// The key of every volume that has one in memory now (unlocked, serving), by volume.
pub(crate) fn served_keys(shared: &api::Shared) -> Vec<(String, String)> {
    shared
        .statuses()
        .into_iter()
        .filter_map(|s| match (s.key_uid, s.state) {
            (Some(uid), State::Unlocked) => Some((s.name, uid)),
            _ => None,
        })
        .collect()
}

/// Where `atrest ctl` finds the API of the configuration at `config` (or the default).
pub fn api_socket(config: Option<&Path>) -> Result<PathBuf, ServiceError> {
    match config {
        Some(c) => Ok(Config::load(c)?.serve.api_socket),
        None => Ok(crate::config::ServeConfig::default().api_socket),
    }
}
