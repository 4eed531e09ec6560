//! What encrypt, decrypt and rekey share: the device opened and locked, keys fetched from
//! KMIP, the stop flag wired to Ctrl-C and SIGTERM, and progress shown the way the reader
//! wants it (a bar on a terminal, a line log otherwise, JSON events with --json).

use std::fs::{File, OpenOptions};
use std::io::IsTerminal;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use indicatif::{HumanBytes, ProgressBar, ProgressStyle};
use kmip::client::Client;
use kmip::enums::RevocationReasonCode;
use serde_json::json;
use volume::backend::{Access, FileBackend};
use volume::convert::{Devices, Keys, Options, Outcome, Progress};
use zeroize::Zeroizing;

use crate::cli::args::ConvertArgs;

/// The device (and a detached header file), locked against a second atrest (or anything
/// else taking the lock) for as long as this lives.
pub struct Device {
    pub backend: FileBackend,
    pub header: Option<FileBackend>,
    pub name: String,
}

impl Device {
    /// Opens `path`, and `header` if given, each locked exclusively; `create_header` makes
    /// a missing header file (16 MiB, mode 0600) for `encrypt`.
    pub fn open(path: &Path, header: Option<&Path>, create_header: bool) -> anyhow::Result<Self> {
        let backend = FileBackend::open(path, Access::Exclusive)?;
        let header = match header {
            None => None,
            Some(h) => Some(open_header(h, create_header)?),
        };
        Ok(Self {
            backend,
            header,
            name: path
                .file_name()
                .map_or_else(|| "volume".into(), |n| n.to_string_lossy().into_owned()),
        })
    }

    /// The devices as the conversion sees them.
    pub fn devices(&self) -> Devices<'_> {
        match &self.header {
            Some(h) => Devices::detached(h, &self.backend),
            None => Devices::attached(&self.backend),
        }
    }
}

fn open_header(path: &Path, create: bool) -> anyhow::Result<FileBackend> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut o = OpenOptions::new();
    o.read(true).write(true);
    if create {
        o.create(true).mode(0o600);
    }
    let file = o
        .open(path)
        .with_context(|| format!("opening the header file {}", path.display()))?;
    let b = FileBackend::lock(file, path, Access::Exclusive)?;
    let size = volume::layout::DATA_OFFSET;
    if volume::backend::BlockBackend::len(&b)? < size {
        if !create {
            bail!(
                "{} is not an atrest header file (smaller than {size} bytes)",
                path.display()
            );
        }
        volume::backend::BlockBackend::set_len(&b, size)
            .with_context(|| format!("making the header file {}", path.display()))?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .with_context(|| format!("syncing {}", dir.display()))?;
        }
    }
    Ok(b)
}

/// A KMIP session for one command.
pub struct Kms {
    pub client: Client,
}

impl Kms {
    pub fn connect(config: &Path) -> anyhow::Result<Self> {
        let config = service::config::Config::load(config)?;
        Ok(Self {
            client: Client::new(config.kmip)?,
        })
    }

    /// The secret of `uid`.
    pub fn fetch(&mut self, uid: &str) -> anyhow::Result<Zeroizing<Vec<u8>>> {
        self.client
            .get_symmetric_key(uid)
            .with_context(|| format!("fetching the volume's key {uid} from the KMIP server"))
    }

    /// A new active AES-256 key: its identifier, its secret and the server it is on.
    pub fn create(
        &mut self,
        name: &str,
    ) -> anyhow::Result<(String, Zeroizing<Vec<u8>>, Option<String>)> {
        let uid = self
            .client
            .create_aes_key(256, Some(name))
            .context("creating the key on the KMIP server")?;
        let got = self
            .client
            .activate(&uid)
            .context("activating the new key")
            .and_then(|()| self.fetch(&uid));
        match got {
            Ok(secret) => {
                let server = self.client.server_info().map(|s| s.server.to_string());
                Ok((uid, secret, server))
            }
            Err(e) => Err(self.discard(&uid, e)),
        }
    }

    /// Revokes and destroys a key that protects nothing, and says so in `e`.
    pub fn discard(&mut self, uid: &str, e: anyhow::Error) -> anyhow::Error {
        let cleanup = self
            .client
            .revoke(
                uid,
                RevocationReasonCode::CESSATION_OF_OPERATION,
                Some("atrest: the conversion it was made for did not start"),
            )
            .and_then(|()| self.client.destroy(uid));
        match cleanup {
            Ok(()) => e.context(format!("the unused key {uid} was revoked and destroyed")),
            Err(c) => e.context(format!(
                "the unused key {uid} could not be removed from the server: {c}"
            )),
        }
    }

    /// Revokes a key the volume no longer uses (it can still be fetched, for backups).
    pub fn revoke_unused(
        &mut self,
        uid: &str,
        reason: RevocationReasonCode,
        message: &str,
    ) -> anyhow::Result<()> {
        self.client
            .revoke(uid, reason, Some(message))
            .with_context(|| format!("revoking the old key {uid}"))
    }
}

/// Set by Ctrl-C or SIGTERM; the conversion stops at its next committed step.
pub fn stop_flag() -> anyhow::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .context("installing signal handlers")?;
    }
    Ok(stop)
}

pub fn options(a: &ConvertArgs) -> Options {
    let mut o = Options::default();
    if let Some(s) = a.step {
        o.chunk = s;
    }
    o
}

/// One JSON event on stdout. A reader that has gone away (a daemon restarting) must not
/// stop a conversion half-way, so a failed write is ignored.
fn event(v: serde_json::Value) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout().lock(), "{v}");
}

/// Shows progress: JSON lines, a bar on a terminal, or a line every few seconds.
pub struct Reporter {
    json: bool,
    bar: Option<ProgressBar>,
    device: String,
    started: Instant,
    first: Option<u64>,
    last_line: Instant,
}

impl Reporter {
    pub fn new(json: bool, device: &Path) -> Self {
        let bar = (!json && std::io::stderr().is_terminal()).then(|| {
            let b = ProgressBar::new(0);
            b.set_style(
                ProgressStyle::with_template(
                    "{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec}, {eta} left",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            b
        });
        Self {
            json,
            bar,
            device: device.display().to_string(),
            started: Instant::now(),
            first: None,
            last_line: Instant::now() - Duration::from_secs(60),
        }
    }

    fn rate(&self, done: u64) -> f64 {
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        done.saturating_sub(self.first.unwrap_or(0)) as f64 / secs
    }

    pub fn progress(&mut self, p: Progress) {
        let first = *self.first.get_or_insert(p.done);
        let rate = self.rate(p.done);
        let left = if rate > 0.0 {
            (p.total - p.done) as f64 / rate
        } else {
            f64::NAN
        };
        if self.json {
            event(
                json!({"event": "progress", "operation": p.kind.as_str(), "device": self.device,
                       "done": p.done, "total": p.total, "bytes_per_second": rate.round(),
                       "seconds_left": if left.is_finite() { Some(left.round()) } else { None }}),
            );
        } else if let Some(b) = &self.bar {
            b.set_message(p.kind.as_str());
            b.set_length(p.total);
            if p.done == first {
                b.reset_eta();
            }
            b.set_position(p.done);
        } else if self.last_line.elapsed() >= Duration::from_secs(5) || p.done == p.total {
            self.last_line = Instant::now();
            eprintln!(
                "{}: {} {} of {} ({:.0}%), {}/s{}",
                self.device,
                p.kind.as_str(),
                HumanBytes(p.done),
                HumanBytes(p.total),
                100.0 * p.done as f64 / p.total.max(1) as f64,
                HumanBytes(rate as u64),
                if left.is_finite() && p.done < p.total {
                    format!(", {left:.0} s left")
                } else {
                    String::new()
                }
            );
        }
    }

    /// Reports how the run ended; `Ok(true)` when finished.
    pub fn outcome(&mut self, o: Outcome, what: &str) -> anyhow::Result<bool> {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
        let secs = self.started.elapsed().as_secs_f64();
        match o {
            Outcome::Finished => {
                if self.json {
                    event(
                        json!({"event": "finished", "operation": what, "device": self.device, "seconds": secs}),
                    );
                }
                Ok(true)
            }
            Outcome::Stopped(p) => {
                if self.json {
                    event(
                        json!({"event": "stopped", "operation": what, "device": self.device,
                               "done": p.done, "total": p.total}),
                    );
                } else {
                    eprintln!(
                        "{}: {what} stopped at a safe point, {} of {} done; run `atrest {what}` again to continue",
                        self.device,
                        HumanBytes(p.done),
                        HumanBytes(p.total)
                    );
                }
                Ok(false)
            }
        }
    }
}

/// Runs the conversion in progress to its end, or to a requested stop (then the error is
/// [`crate::cli::Stopped`]).
pub fn drive(dev: &Device, keys: Keys<'_>, a: &ConvertArgs, what: &str) -> anyhow::Result<()> {
    let stop = stop_flag()?;
    let mut rep = Reporter::new(a.json, &a.device);
    let out = volume::convert::run(dev.devices(), keys, options(a), &stop, &mut |p| {
        rep.progress(p)
    })
    .with_context(|| format!("{what} of {}", a.device.display()))?;
    if rep.outcome(out, what)? {
        Ok(())
    } else {
        Err(crate::cli::Stopped.into())
    }
}

impl Device {
    /// The header's facts.
    pub fn status(&self) -> Result<volume::volume::Status, volume::volume::VolumeError> {
        match &self.header {
            Some(h) => volume::volume::status_detached(h, &self.backend),
            None => volume::volume::status(&self.backend),
        }
    }
}

/// Prints the volume's status after a finished conversion.
pub fn print_done(a: &ConvertArgs, dev: &Device, text: &str) -> anyhow::Result<()> {
    if a.json {
        let s = dev.status().ok();
        event(json!({"event": "result", "device": a.device, "message": text, "status": s}));
    } else {
        println!("{}: {text}", a.device.display());
    }
    Ok(())
}
